//! Listing and paging: what a caller asks for and the pages that come back.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Conversation, ConversationId, Error, Message, MessageId, Result};

/// Page size used when a query gives none.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest page any list returns; larger limits are lowered to it.
pub const MAX_PAGE_SIZE: usize = 200;
/// The longest title filter accepted.
pub const MAX_TITLE_FILTER_CHARS: usize = 256;
/// The most messages [`Store::recent_messages`](crate::Store::recent_messages) returns.
pub const MAX_RECENT_MESSAGES: usize = 1_000;

fn page_limit(limit: Option<u32>) -> Result<usize> {
    match limit {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(0) => Err(Error::invalid("limit", "must be at least 1")),
        Some(n) => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

/// Which conversations a list includes by archive state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ArchivedFilter {
    /// Only conversations that are not archived (the sidebar).
    #[default]
    Exclude,
    /// Archived and not archived alike.
    Include,
    /// Only archived conversations (the "archived chats" view).
    Only,
}

impl ArchivedFilter {
    /// Whether a conversation with this archive state is listed.
    pub fn admits(self, archived: bool) -> bool {
        match self {
            ArchivedFilter::Exclude => !archived,
            ArchivedFilter::Include => true,
            ArchivedFilter::Only => archived,
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            ArchivedFilter::Exclude => 0,
            ArchivedFilter::Include => 1,
            ArchivedFilter::Only => 2,
        }
    }
}

/// A request for one page of a scope's conversations.
///
/// Order: newest activity first (`updated_at` descending, then id descending), with
/// pinned conversations before all others when `pinned_first` is set. Pages are cut
/// by keyset: the cursor names a position in that order, not an offset, so a page
/// never repeats a row even while conversations are written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationQuery {
    /// Page size: default [`DEFAULT_PAGE_SIZE`], lowered to [`MAX_PAGE_SIZE`]; 0 is
    /// [`Error::InvalidInput`].
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; a cursor that is not one, or belongs to
    /// a query of another order or archive filter, is [`Error::InvalidInput`].
    pub cursor: Option<String>,
    /// Archive filter.
    pub archived: ArchivedFilter,
    /// List pinned conversations before the others.
    pub pinned_first: bool,
    /// Only conversations whose title contains this text, ignoring ASCII case (other
    /// characters match exactly, in every store). Empty means no filter. This filter
    /// reads the scope's rows in list order until the page is full, so its cost grows
    /// with the rows it skips.
    pub title_contains: Option<String>,
    /// Only conversations whose metadata has each of these top-level keys with this
    /// exact value (a string, number or boolean), e.g. `{"tag": "billing"}`: strings
    /// compare exactly, numbers by value (`1` equals `1.0`), and a string, a number
    /// and a boolean never equal each other (`"1"`, `1` and `true` are three values).
    /// A key is a top-level key whatever characters it holds (`a.b` is not a path).
    /// The SQL stores read an index for it. At most [`MAX_METADATA_FILTERS`] keys.
    pub metadata_equals: crate::Metadata,
}

/// The most keys a [`ConversationQuery::metadata_equals`] filter takes.
pub const MAX_METADATA_FILTERS: usize = 8;

impl ConversationQuery {
    /// The first page with default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the page size.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Continues after a previous page.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Sets the archive filter.
    pub fn archived(mut self, archived: ArchivedFilter) -> Self {
        self.archived = archived;
        self
    }

    /// Lists pinned conversations first.
    pub fn pinned_first(mut self, pinned_first: bool) -> Self {
        self.pinned_first = pinned_first;
        self
    }

    /// Filters by title text.
    pub fn title_contains(mut self, text: impl Into<String>) -> Self {
        self.title_contains = Some(text.into());
        self
    }

    /// The page size to use.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a limit of 0.
    pub fn page_size(&self) -> Result<usize> {
        page_limit(self.limit)
    }

    /// The title filter, if there is a non-empty one, lowercased for ASCII.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] with field `titleContains` for a filter with control
    /// characters or longer than [`MAX_TITLE_FILTER_CHARS`].
    pub fn title_filter(&self) -> Result<Option<String>> {
        match self.title_contains.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => {
                if text.chars().any(char::is_control) {
                    return Err(Error::invalid(
                        "titleContains",
                        "contains a control character",
                    ));
                }
                if text.chars().count() > MAX_TITLE_FILTER_CHARS {
                    return Err(Error::invalid(
                        "titleContains",
                        format!("longer than {MAX_TITLE_FILTER_CHARS} characters"),
                    ));
                }
                Ok(Some(text.to_ascii_lowercase()))
            }
        }
    }

    /// Filters by a top-level metadata value.
    pub fn metadata_equals(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.metadata_equals.insert(key.into(), value.into());
        self
    }

    /// Checks the metadata filter: scalar values (string, number, boolean), at most
    /// [`MAX_METADATA_FILTERS`] keys, no control characters in keys.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `metadata.<key>`.
    pub fn check_metadata_filter(&self) -> Result<()> {
        if self.metadata_equals.len() > MAX_METADATA_FILTERS {
            return Err(Error::invalid(
                "metadata",
                format!("more than {MAX_METADATA_FILTERS} filters"),
            ));
        }
        for (key, value) in &self.metadata_equals {
            let field = format!("metadata.{key}");
            if key.is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
                return Err(Error::invalid(field, "not a usable key"));
            }
            match value {
                serde_json::Value::String(text) if !text.contains('\0') && text.len() <= 1024 => {}
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {}
                _ => {
                    return Err(Error::invalid(
                        field,
                        "filters take a string (at most 1 KiB), a number or a boolean",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The decoded cursor, checked against this query's order and filter.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] with field `cursor`.
    pub fn position(&self) -> Result<Option<ListCursor>> {
        let Some(text) = self.cursor.as_deref() else {
            return Ok(None);
        };
        let cursor = ListCursor::decode(text)?;
        if cursor.pinned_first != self.pinned_first || cursor.archived != self.archived {
            return Err(Error::invalid(
                "cursor",
                "belongs to a list of another order or archive filter",
            ));
        }
        Ok(Some(cursor))
    }

    /// The page of `rows`, read in list order with one row more than the page size
    /// (as SQL stores read them, to learn whether another page follows): the first
    /// `page_size` rows, and a cursor after the last of them when a row was left over.
    pub fn page_from(&self, mut rows: Vec<Conversation>, page_size: usize) -> Page<Conversation> {
        let more = rows.len() > page_size;
        rows.truncate(page_size);
        let next_cursor = match rows.last() {
            Some(last) if more => Some(self.cursor_after(last)),
            _ => None,
        };
        Page {
            items: rows,
            next_cursor,
        }
    }

    /// The cursor that continues after `last`, the final row of a page of this query.
    pub fn cursor_after(&self, last: &Conversation) -> String {
        ListCursor {
            pinned_first: self.pinned_first,
            archived: self.archived,
            pinned: last.pinned,
            updated_at: last.updated_at,
            id: last.id,
        }
        .encode()
    }

    /// The list order of this query: `a` before `b` is `Ordering::Less`. Newest
    /// activity first, then the larger id; pinned conversations before all others
    /// when `pinned_first`.
    pub fn list_order(&self, a: &Conversation, b: &Conversation) -> std::cmp::Ordering {
        let key = |c: &Conversation| (self.pinned_first && c.pinned, c.updated_at, c.id);
        key(b).cmp(&key(a))
    }

    /// Whether `conversation` passes this query's filters (not its cursor). Shared by
    /// the stores that filter in memory; `title_filter` is [`Self::title_filter`]'s value.
    pub fn admits(&self, conversation: &Conversation, title_filter: Option<&str>) -> bool {
        self.archived.admits(conversation.archived)
            && self.metadata_equals.iter().all(|(key, value)| {
                conversation
                    .metadata
                    .get(key)
                    .is_some_and(|stored| same_value(stored, value))
            })
            && title_filter.is_none_or(|needle| {
                conversation
                    .title
                    .as_deref()
                    .is_some_and(|title| title.to_ascii_lowercase().contains(needle))
            })
    }
}

/// Whether a stored metadata value equals a filter's value: numbers by value (as
/// JSON, SQLite and PostgreSQL compare them), anything else exactly.
fn same_value(stored: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    match (stored, wanted) {
        (serde_json::Value::Number(a), serde_json::Value::Number(b))
            if a.is_f64() || b.is_f64() =>
        {
            a.as_f64() == b.as_f64()
        }
        _ => stored == wanted,
    }
}

/// A decoded list cursor: the position of the last row of the previous page.
///
/// On the wire it is opaque (URL-safe base64); stores read its fields to continue the
/// keyset scan strictly after `(pinned, updated_at, id)` in list order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    /// The order of the list it came from.
    pub pinned_first: bool,
    /// The archive filter of the list it came from.
    pub archived: ArchivedFilter,
    /// `pinned` of the last row (meaningful when `pinned_first`).
    pub pinned: bool,
    /// `updated_at` of the last row, in milliseconds.
    pub updated_at: DateTime<Utc>,
    /// `id` of the last row.
    pub id: ConversationId,
}

impl ListCursor {
    const FORMAT: u8 = 1;
    const LEN: usize = 2 + 8 + 16;

    /// The opaque text form.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(Self::LEN);
        bytes.push(Self::FORMAT);
        bytes.push(
            u8::from(self.pinned_first)
                | (u8::from(self.pinned) << 1)
                | (self.archived.code() << 2),
        );
        bytes.extend_from_slice(&self.updated_at.timestamp_millis().to_be_bytes());
        bytes.extend_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parses [`ListCursor::encode`]'s output.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] with field `cursor` for anything else.
    pub fn decode(text: &str) -> Result<Self> {
        let bad = || Error::invalid("cursor", "not a cursor returned by this list");
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        if bytes.len() != Self::LEN || bytes[0] != Self::FORMAT {
            return Err(bad());
        }
        let flags = bytes[1];
        let archived = match flags >> 2 {
            0 => ArchivedFilter::Exclude,
            1 => ArchivedFilter::Include,
            2 => ArchivedFilter::Only,
            _ => return Err(bad()),
        };
        let millis = i64::from_be_bytes(bytes[2..10].try_into().map_err(|_| bad())?);
        let updated_at = DateTime::<Utc>::from_timestamp_millis(millis).ok_or_else(bad)?;
        let id = Uuid::from_slice(&bytes[10..]).map_err(|_| bad())?;
        Ok(Self {
            pinned_first: flags & 1 == 1,
            archived,
            pinned: flags & 2 == 2,
            updated_at,
            id: ConversationId::from_uuid(id),
        })
    }

    /// Whether `conversation` lies strictly after this position in list order.
    pub fn precedes(&self, conversation: &Conversation) -> bool {
        let position = (self.pinned_first && self.pinned, self.updated_at, self.id);
        let row = (
            self.pinned_first && conversation.pinned,
            conversation.updated_at,
            conversation.id,
        );
        row < position
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The rows of this page, in list order.
    pub items: Vec<T>,
    /// Pass this as the next query's cursor to read on; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Which messages a [`MessageQuery`] pages through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MessageView {
    /// The active path, root to head: what a chat shows.
    #[default]
    Path,
    /// Every message of the tree, every branch, by seq: for export and sync.
    All,
}

/// A request for a page of one conversation's messages, by `seq`.
///
/// - neither bound: the newest `limit` messages;
/// - `after` only: the oldest `limit` messages after that seq (read forwards);
/// - `before` only: the newest `limit` messages before that seq (read backwards);
/// - both: the oldest `limit` messages strictly between the two.
///
/// Every page is returned in chronological order (ascending `seq`). On the active
/// path, seqs grow from the root to the head, so a seq range of the path is a stretch
/// of it; a bound need not be a seq of the path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageQuery {
    /// Only messages with a smaller seq.
    pub before: Option<u64>,
    /// Only messages with a larger seq.
    pub after: Option<u64>,
    /// Page size: default [`DEFAULT_PAGE_SIZE`], lowered to [`MAX_PAGE_SIZE`]; 0 is
    /// [`Error::InvalidInput`]. A page also stops early, with `has_more`, once it
    /// holds [`Limits::max_page_bytes`](crate::Limits::max_page_bytes).
    pub limit: Option<u32>,
    /// The active path (default) or every message.
    #[serde(default)]
    pub view: MessageView,
}

impl MessageQuery {
    /// The newest page.
    pub fn latest() -> Self {
        Self::default()
    }

    /// Messages after `seq`, oldest first.
    pub fn after(seq: u64) -> Self {
        Self {
            after: Some(seq),
            ..Self::default()
        }
    }

    /// Messages before `seq`, the newest of them.
    pub fn before(seq: u64) -> Self {
        Self {
            before: Some(seq),
            ..Self::default()
        }
    }

    /// Sets the page size.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Pages through `view`.
    pub fn view(mut self, view: MessageView) -> Self {
        self.view = view;
        self
    }

    /// The seq range and direction to read, shared by every store.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a limit of 0.
    pub fn range(&self) -> Result<MessageRange> {
        Ok(MessageRange {
            after: self.after.unwrap_or(0),
            before: self.before,
            newest_first: self.after.is_none(),
            limit: page_limit(self.limit)?,
            view: self.view,
        })
    }
}

/// A request for the newest messages of a path, for the context window:
/// [`Store::recent_messages`](crate::Store::recent_messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentQuery {
    /// How many, at most [`MAX_RECENT_MESSAGES`].
    pub n: usize,
    /// The end of the path to read: the head when `None`, else this message of the
    /// conversation (the question a regenerated answer replies to).
    pub leaf: Option<MessageId>,
}

impl RecentQuery {
    /// The newest `n` messages of the active path.
    pub fn new(n: usize) -> Self {
        Self { n, leaf: None }
    }

    /// Reads the path ending at `message` instead of the head.
    pub fn ending_at(mut self, message: MessageId) -> Self {
        self.leaf = Some(message);
        self
    }
}

/// The plan of a [`MessageQuery`]: read seqs in `(after, before)` of `view` from the
/// end given by `newest_first`, at most `limit` of them, then return them ascending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRange {
    /// Exclusive lower bound of seq (0 for none).
    pub after: u64,
    /// Exclusive upper bound of seq.
    pub before: Option<u64>,
    /// Read from the newest end of the range.
    pub newest_first: bool,
    /// How many to return.
    pub limit: usize,
    /// The path or every message.
    pub view: MessageView,
}

impl MessageRange {
    /// Whether `seq` is inside the range.
    pub fn contains(&self, seq: u64) -> bool {
        seq > self.after && self.before.is_none_or(|before| seq < before)
    }

    /// Collects the page from messages fed in read order (newest first when
    /// `newest_first`), the rule every store shares: at most `limit` messages, and no
    /// more once they weigh `max_page_bytes` ([`Message::page_weight`]), though
    /// always at least one. Feed [`PageBuilder::push`] until it answers `false`, then
    /// [`PageBuilder::finish`]; a store that reads `limit + 1` rows lets the builder
    /// learn whether more follow.
    pub fn page_builder(&self, max_page_bytes: usize) -> PageBuilder {
        PageBuilder {
            newest_first: self.newest_first,
            limit: self.limit,
            max_bytes: max_page_bytes,
            items: Vec::with_capacity(self.limit.min(64)),
            bytes: 0,
            has_more: false,
        }
    }

    /// [`Self::page_builder`] over messages already read.
    pub fn page_from(
        &self,
        rows: impl IntoIterator<Item = Message>,
        max_page_bytes: usize,
    ) -> MessagePage {
        let mut page = self.page_builder(max_page_bytes);
        for row in rows {
            if !page.push(row) {
                break;
            }
        }
        page.finish()
    }
}

/// Builds a page of messages one row at a time: [`MessageRange::page_builder`].
#[derive(Debug)]
pub struct PageBuilder {
    newest_first: bool,
    limit: usize,
    max_bytes: usize,
    items: Vec<Message>,
    bytes: usize,
    has_more: bool,
}

impl PageBuilder {
    /// Offers the next message in read order. `false` means the page is complete and
    /// `message` was not taken: it lies beyond the page, so `has_more` is set.
    pub fn push(&mut self, message: Message) -> bool {
        let weight = message.page_weight();
        if self.items.len() == self.limit
            || (!self.items.is_empty() && self.bytes + weight > self.max_bytes)
        {
            self.has_more = true;
            return false;
        }
        self.bytes += weight;
        self.items.push(message);
        true
    }

    /// The page, ascending by seq.
    pub fn finish(mut self) -> MessagePage {
        if self.newest_first {
            self.items.reverse();
        }
        MessagePage {
            items: self.items,
            has_more: self.has_more,
        }
    }
}

/// One page of messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessagePage {
    /// The messages, ascending by seq.
    pub items: Vec<Message>,
    /// Whether more messages lie beyond this page in the direction it was read
    /// (older ones for a newest-first read, newer ones for a read with `after`).
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(pinned_first: bool, archived: ArchivedFilter) -> ListCursor {
        ListCursor {
            pinned_first,
            archived,
            pinned: true,
            updated_at: crate::backend::now(),
            id: ConversationId::new(),
        }
    }

    #[test]
    fn cursor_round_trips() {
        for archived in [
            ArchivedFilter::Exclude,
            ArchivedFilter::Include,
            ArchivedFilter::Only,
        ] {
            for pinned_first in [false, true] {
                let c = cursor(pinned_first, archived);
                assert_eq!(ListCursor::decode(&c.encode()).unwrap(), c);
            }
        }
    }

    #[test]
    fn bad_cursors_are_invalid_input() {
        let good = cursor(false, ArchivedFilter::Exclude).encode();
        let mut tampered = good.clone().into_bytes();
        tampered[0] = b'B';
        for text in [
            String::new(),
            "!!!".to_owned(),
            "AAAA".to_owned(),
            good[..good.len() - 2].to_owned(),
            String::from_utf8(tampered).unwrap(),
            format!("{good}AA"),
        ] {
            let err = ListCursor::decode(&text).unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput { ref field, .. } if field == "cursor"),
                "{text:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn a_cursor_of_another_order_is_refused() {
        let c = cursor(true, ArchivedFilter::Exclude).encode();
        let query = ConversationQuery::new().cursor(c.clone());
        assert!(query.position().is_err());
        assert!(query.pinned_first(true).position().unwrap().is_some());
        let query = ConversationQuery::new()
            .pinned_first(true)
            .archived(ArchivedFilter::Only)
            .cursor(c);
        assert!(query.position().is_err());
    }

    #[test]
    fn limits_default_cap_and_refuse_zero() {
        assert_eq!(ConversationQuery::new().page_size().unwrap(), 50);
        assert_eq!(
            ConversationQuery::new().limit(10_000).page_size().unwrap(),
            200
        );
        assert!(ConversationQuery::new().limit(0).page_size().is_err());
        assert!(MessageQuery::latest().limit(0).range().is_err());
    }

    #[test]
    fn message_ranges() {
        let r = MessageQuery::latest().range().unwrap();
        assert!(r.newest_first && r.after == 0 && r.before.is_none() && r.limit == 50);
        assert_eq!(r.view, MessageView::Path);
        let r = MessageQuery::after(10).limit(5).range().unwrap();
        assert!(!r.newest_first && r.contains(11) && !r.contains(10));
        let r = MessageQuery::before(10).range().unwrap();
        assert!(r.newest_first && r.contains(9) && !r.contains(10) && !r.contains(0));
    }
}
