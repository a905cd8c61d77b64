//! Full-text search over a scope's conversations: the query, how text is cut into
//! words, and the hits with snippets — one set of rules every store shares.
//!
//! # Words
//!
//! Text is cut into words the way SQLite FTS5's `unicode61` tokenizer with
//! `remove_diacritics 2` cuts it: a word is a run of letters and digits (Unicode
//! categories L and N); everything else separates words. Words are compared
//! lowercased and without diacritics (`Café` finds `cafe`). Scripts written without
//! spaces (Chinese, Japanese) form one word per run of characters, so a word inside
//! such a run is found only at its start (as a prefix); that limit is deliberate and
//! shared by every store.
//!
//! # Queries
//!
//! A query is the words of the user's text, nothing else: quotes, `*`, `-`, `AND`,
//! `NEAR`, `column:` and parentheses are separators or plain words, never syntax. A
//! conversation matches when its title or one of its messages (on any branch still
//! stored, of any role) holds every word: words spread over two of them are no
//! match. A message's text is its content; tool-call arguments and metadata are not
//! searched. The last word matches as a prefix unless the text ends with a
//! separator, so results follow the user as they type.

use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization as _;
use unicode_normalization::char::is_combining_mark;

use crate::{ArchivedFilter, Conversation, ConversationId, Error, MessageId, Result, Role};

/// The longest search text accepted, in characters.
pub const MAX_SEARCH_CHARS: usize = 512;
/// The most words a search uses; further words are refused.
pub const MAX_SEARCH_WORDS: usize = 16;
/// The most matches a hit carries.
pub const MAX_MATCHES_PER_HIT: usize = 3;
/// About how many characters a snippet holds.
pub const SNIPPET_CHARS: usize = 160;

/// A search of a scope's conversations: [`Store::search`](crate::Store::search).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// What the user typed.
    pub text: String,
    /// Page size: default [`DEFAULT_PAGE_SIZE`](crate::DEFAULT_PAGE_SIZE), lowered to
    /// [`MAX_PAGE_SIZE`](crate::MAX_PAGE_SIZE); 0 is invalid.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page of the same search.
    pub cursor: Option<String>,
    /// Archive filter, as for lists.
    pub archived: ArchivedFilter,
}

impl SearchQuery {
    /// A search for `text`, first page, default size, archived excluded.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
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

    /// The page size to use.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a limit of 0.
    pub fn page_size(&self) -> Result<usize> {
        crate::ConversationQuery::new()
            .limit(self.limit.unwrap_or(crate::DEFAULT_PAGE_SIZE as u32))
            .page_size()
    }

    /// The words to find.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `q` for a text with no word, longer than
    /// [`MAX_SEARCH_CHARS`], with more than [`MAX_SEARCH_WORDS`] words, or with a
    /// control character.
    pub fn terms(&self) -> Result<SearchTerms> {
        SearchTerms::parse(&self.text)
    }

    /// The decoded cursor, checked against this query's text and filter.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `cursor`.
    pub fn position(&self) -> Result<Option<SearchCursor>> {
        let Some(text) = self.cursor.as_deref().filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let cursor = SearchCursor::decode(text)?;
        if cursor.query != self.fingerprint() {
            return Err(Error::invalid(
                "cursor",
                "belongs to a search of another text or archive filter",
            ));
        }
        Ok(Some(cursor))
    }

    /// The cursor after `last`, the final hit of a page of this search.
    pub fn cursor_after(&self, last: &SearchHit) -> String {
        SearchCursor {
            query: self.fingerprint(),
            score: last.score,
            updated_at: last.conversation.updated_at,
            id: last.conversation.id,
        }
        .encode()
    }

    /// The page of `hits`, read in rank order with one more than the page size: the
    /// first `page_size` hits, and a cursor after the last when one was left over.
    pub fn page_from(&self, mut hits: Vec<SearchHit>, page_size: usize) -> crate::Page<SearchHit> {
        let more = hits.len() > page_size;
        hits.truncate(page_size);
        let next_cursor = match hits.last() {
            Some(last) if more => Some(self.cursor_after(last)),
            _ => None,
        };
        crate::Page {
            items: hits,
            next_cursor,
        }
    }

    /// A short fingerprint of what the cursor depends on (the words and the filter).
    fn fingerprint(&self) -> u32 {
        // FNV-1a: a cursor is bound to its query, not protected against forgery.
        let mut hash: u32 = 0x811c_9dc5;
        let words = SearchTerms::parse(&self.text)
            .map(|t| t.words.join(" ") + if t.prefix { "*" } else { "" })
            .unwrap_or_default();
        for byte in words.bytes().chain(std::iter::once(self.archived.code())) {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        hash
    }
}

/// The rank order of hits: higher score first, then newest activity, then id.
pub fn rank_order(a: &SearchHit, b: &SearchHit) -> std::cmp::Ordering {
    b.score
        .total_cmp(&a.score)
        .then_with(|| b.conversation.updated_at.cmp(&a.conversation.updated_at))
        .then_with(|| b.conversation.id.cmp(&a.conversation.id))
}

/// A decoded search cursor: the position of the last hit of the previous page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchCursor {
    query: u32,
    /// The last hit's score.
    pub score: f64,
    /// The last hit's `updated_at`.
    pub updated_at: DateTime<Utc>,
    /// The last hit's conversation id.
    pub id: ConversationId,
}

impl SearchCursor {
    const FORMAT: u8 = 1;
    const LEN: usize = 1 + 4 + 8 + 8 + 16;

    fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(Self::LEN);
        bytes.push(Self::FORMAT);
        bytes.extend_from_slice(&self.query.to_be_bytes());
        bytes.extend_from_slice(&self.score.to_bits().to_be_bytes());
        bytes.extend_from_slice(&self.updated_at.timestamp_millis().to_be_bytes());
        bytes.extend_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn decode(text: &str) -> Result<Self> {
        let bad = || Error::invalid("cursor", "not a cursor returned by this search");
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        if bytes.len() != Self::LEN || bytes[0] != Self::FORMAT {
            return Err(bad());
        }
        let word = |range: Range<usize>| bytes.get(range).ok_or_else(bad);
        let query = u32::from_be_bytes(word(1..5)?.try_into().map_err(|_| bad())?);
        let score = f64::from_bits(u64::from_be_bytes(
            word(5..13)?.try_into().map_err(|_| bad())?,
        ));
        let millis = i64::from_be_bytes(word(13..21)?.try_into().map_err(|_| bad())?);
        let updated_at = DateTime::<Utc>::from_timestamp_millis(millis).ok_or_else(bad)?;
        let id = uuid::Uuid::from_slice(word(21..37)?).map_err(|_| bad())?;
        if !score.is_finite() {
            return Err(bad());
        }
        Ok(Self {
            query,
            score,
            updated_at,
            id: ConversationId::from_uuid(id),
        })
    }

    /// Whether `hit` lies strictly after this position in rank order.
    pub fn precedes(&self, hit: &SearchHit) -> bool {
        let position = SearchHit {
            conversation: Conversation {
                updated_at: self.updated_at,
                id: self.id,
                ..hit.conversation.clone()
            },
            score: self.score,
            matches: Vec::new(),
        };
        rank_order(&position, hit).is_lt()
    }
}

/// A word of a text: where it stands (in characters) and its normalised form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The characters it spans in the text (Unicode scalar values, not bytes).
    pub chars: Range<usize>,
    /// Lowercased, without diacritics.
    pub word: String,
}

/// Cuts `text` into words: runs of letters and digits, lowercased, without
/// diacritics ([`normalize`]). Linear in the length of the text.
pub fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    // The word being read: its first character's index and its first byte.
    let mut start: Option<(usize, usize)> = None;
    let mut count = 0;
    for (i, (byte, c)) in text.char_indices().enumerate() {
        count = i + 1;
        if c.is_alphanumeric() {
            start.get_or_insert((i, byte));
        } else if let Some((from, from_byte)) = start.take() {
            tokens.push(Token {
                chars: from..i,
                word: normalize(&text[from_byte..byte]),
            });
        }
    }
    if let Some((from, from_byte)) = start {
        tokens.push(Token {
            chars: from..count,
            word: normalize(&text[from_byte..]),
        });
    }
    tokens
}

/// The version of the words rule ([`tokenize`], [`normalize`]) of this build: a
/// store that keeps words in an index records it, and rebuilds the index when a build
/// cuts or folds words differently (the Unicode tables of the standard library and of
/// `unicode-normalization` may change between releases).
pub fn words_rule() -> String {
    let (major, minor, patch) = char::UNICODE_VERSION;
    let (n_major, n_minor, n_patch) = unicode_normalization::UNICODE_VERSION;
    format!(
        "conversation-words 1; alphanumeric unicode {major}.{minor}.{patch}; \
         nfd unicode {n_major}.{n_minor}.{n_patch}"
    )
}

/// A word lowercased and without diacritics.
pub fn normalize(word: &str) -> String {
    word.nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The words of a search: [`SearchQuery::terms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerms {
    words: Vec<String>,
    prefix: bool,
}

impl SearchTerms {
    /// The words of `text`.
    ///
    /// # Errors
    /// As [`SearchQuery::terms`].
    pub fn parse(text: &str) -> Result<Self> {
        if text.chars().count() > MAX_SEARCH_CHARS {
            return Err(Error::invalid(
                "q",
                format!("longer than {MAX_SEARCH_CHARS} characters"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(Error::invalid("q", "contains a control character"));
        }
        let mut words: Vec<String> = Vec::new();
        for token in tokenize(text) {
            if !words.contains(&token.word) {
                words.push(token.word);
            }
        }
        if words.is_empty() {
            return Err(Error::invalid("q", "has no word to search for"));
        }
        if words.len() > MAX_SEARCH_WORDS {
            return Err(Error::invalid(
                "q",
                format!("more than {MAX_SEARCH_WORDS} words"),
            ));
        }
        let prefix = text.chars().last().is_some_and(char::is_alphanumeric);
        Ok(Self { words, prefix })
    }

    /// The normalised words, in the order typed, without repeats.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Whether the last word matches as a prefix.
    pub fn prefix(&self) -> bool {
        self.prefix
    }

    fn matches_word(&self, index: usize, word: &str) -> bool {
        let wanted = &self.words[index];
        if self.prefix && index + 1 == self.words.len() {
            word.starts_with(wanted.as_str())
        } else {
            word == wanted
        }
    }

    /// Whether `text` holds every word (the last as a prefix when
    /// [`SearchTerms::prefix`]).
    pub fn matches(&self, text: &str) -> bool {
        let tokens = tokenize(text);
        (0..self.words.len()).all(|i| tokens.iter().any(|t| self.matches_word(i, &t.word)))
    }

    /// How many of `text`'s words are matched, for stores that rank in memory.
    pub fn hits_in(&self, text: &str) -> usize {
        tokenize(text)
            .iter()
            .filter(|t| (0..self.words.len()).any(|i| self.matches_word(i, &t.word)))
            .count()
    }

    /// A snippet of `text` around its first matched word, with every matched word of
    /// the snippet highlighted: at most about [`SNIPPET_CHARS`] characters, cut at
    /// word boundaries, with `…` where text was left out.
    pub fn snippet(&self, text: &str) -> Snippet {
        let tokens = tokenize(text);
        let matched: Vec<&Token> = tokens
            .iter()
            .filter(|t| (0..self.words.len()).any(|i| self.matches_word(i, &t.word)))
            .collect();
        let chars: Vec<char> = text.chars().collect();
        let first = matched.first().map_or(0, |t| t.chars.start);
        // Start a little before the first match, at a word boundary.
        let lead = SNIPPET_CHARS / 4;
        let mut start = first.saturating_sub(lead);
        if start > 0 {
            start = tokens
                .iter()
                .map(|t| t.chars.start)
                .find(|&s| s >= start)
                .unwrap_or(first)
                .min(first);
        }
        let mut end = (start + SNIPPET_CHARS).min(chars.len());
        if end < chars.len() {
            end = tokens
                .iter()
                .rev()
                .map(|t| t.chars.end)
                .find(|&e| e <= end && e > first)
                .unwrap_or(end);
        }
        let mut snippet = String::new();
        let mut offset = 0;
        if start > 0 {
            snippet.push('…');
            offset = 1;
        }
        let body: String = chars[start..end].iter().collect::<String>();
        let trimmed_lead = body.len() - body.trim_start().len();
        let lead_chars = body[..trimmed_lead].chars().count();
        snippet.push_str(body.trim());
        if end < chars.len() {
            snippet.push('…');
        }
        let highlights = matched
            .iter()
            .filter(|t| t.chars.start >= start + lead_chars && t.chars.end <= end)
            .map(|t| Highlight {
                start: (t.chars.start - start - lead_chars + offset) as u32,
                end: (t.chars.end - start - lead_chars + offset) as u32,
            })
            .collect();
        Snippet {
            text: snippet,
            highlights,
        }
    }
}

/// A piece of text with the matched words marked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    /// The text.
    pub text: String,
    /// The matched words, in order.
    pub highlights: Vec<Highlight>,
}

/// A matched word in a snippet: `start..end` in characters (Unicode scalar values,
/// as `Array.from(text)` counts them in JavaScript; not bytes, not UTF-16 units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Highlight {
    /// First character.
    pub start: u32,
    /// One past the last character.
    pub end: u32,
}

/// Where a match was found: the title, or a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchMatch {
    /// The message, or `None` for the title.
    pub message_id: Option<MessageId>,
    /// The message's seq.
    pub seq: Option<u64>,
    /// The message's role.
    pub role: Option<Role>,
    /// The text around the match.
    pub snippet: String,
    /// The matched words in `snippet`.
    pub highlights: Vec<Highlight>,
}

impl SearchMatch {
    /// A match in the title.
    pub fn in_title(terms: &SearchTerms, title: &str) -> Self {
        let snippet = terms.snippet(title);
        Self {
            message_id: None,
            seq: None,
            role: None,
            snippet: snippet.text,
            highlights: snippet.highlights,
        }
    }

    /// A match in a message.
    pub fn in_message(
        terms: &SearchTerms,
        id: MessageId,
        seq: u64,
        role: Role,
        content: &str,
    ) -> Self {
        let snippet = terms.snippet(content);
        Self {
            message_id: Some(id),
            seq: Some(seq),
            role: Some(role),
            snippet: snippet.text,
            highlights: snippet.highlights,
        }
    }
}

/// A conversation found by a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchHit {
    /// The conversation.
    pub conversation: Conversation,
    /// How well it matches, higher is better; comparable only within one search of
    /// one store.
    pub score: f64,
    /// Up to [`MAX_MATCHES_PER_HIT`] matches, best first.
    pub matches: Vec<SearchMatch>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercased_without_diacritics_and_never_syntax() {
        let terms = SearchTerms::parse("Café \"NEAR\" (orders) AND title:x* -y").unwrap();
        assert_eq!(
            terms.words(),
            ["cafe", "near", "orders", "and", "title", "x", "y"]
        );
        assert!(terms.prefix());
        let typed = SearchTerms::parse("orders ").unwrap();
        assert!(!typed.prefix());
        for bad in ["", "  ", "***", "\"()\""] {
            assert!(SearchTerms::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            SearchTerms::parse(&"a ".repeat(17)).is_ok(),
            "repeats count once"
        );
        assert!(SearchTerms::parse(&"x".repeat(MAX_SEARCH_CHARS + 1)).is_err());
        assert!(SearchTerms::parse("a\nb").is_err());
    }

    #[test]
    fn matching_needs_every_word_and_the_last_as_a_prefix() {
        let terms = SearchTerms::parse("largest tab").unwrap();
        assert!(terms.matches("The LARGEST tables are orders"));
        assert!(!terms.matches("The largest index"));
        let exact = SearchTerms::parse("tab ").unwrap();
        assert!(!exact.matches("tables"));
        assert!(exact.matches("a tab key"));
        assert!(SearchTerms::parse("cafe").unwrap().matches("un café"));
    }

    #[test]
    fn snippets_mark_matches_in_characters() {
        let terms = SearchTerms::parse("émoji").unwrap();
        let snippet = terms.snippet("🧪 test: Emoji here");
        let chars: Vec<char> = snippet.text.chars().collect();
        let h = snippet.highlights[0];
        assert_eq!(
            chars[h.start as usize..h.end as usize]
                .iter()
                .collect::<String>(),
            "Emoji"
        );
        let long = format!("{} needle {}", "word ".repeat(100), "tail ".repeat(100));
        let cut = SearchTerms::parse("needle").unwrap().snippet(&long);
        assert!(cut.text.starts_with('…') && cut.text.ends_with('…'));
        assert!(cut.text.chars().count() <= SNIPPET_CHARS + 2);
        let chars: Vec<char> = cut.text.chars().collect();
        let h = cut.highlights[0];
        assert_eq!(
            chars[h.start as usize..h.end as usize]
                .iter()
                .collect::<String>(),
            "needle"
        );
    }

    #[test]
    fn cursors_are_bound_to_their_search() {
        let query = SearchQuery::new("orders");
        let hit = SearchHit {
            conversation: crate::NewConversation::new()
                .into_conversation(crate::Scope::new("s").unwrap(), crate::backend::now()),
            score: 1.5,
            matches: Vec::new(),
        };
        let cursor = query.cursor_after(&hit);
        assert!(
            query
                .clone()
                .cursor(cursor.clone())
                .position()
                .unwrap()
                .is_some()
        );
        assert!(
            SearchQuery::new("other")
                .cursor(cursor.clone())
                .position()
                .is_err()
        );
        assert!(
            SearchQuery::new("orders")
                .cursor("garbage")
                .position()
                .is_err()
        );
    }
}
