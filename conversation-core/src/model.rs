//! The data model: conversations, messages and what callers send to create them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[cfg(test)]
use crate::clock::truncate_to_millis;
use crate::{ConversationId, MessageId, Scope};

/// Free-form JSON object attached to a conversation or a message.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// Serde for timestamps as RFC 3339 text with exactly three fraction digits and `Z`,
/// e.g. `2026-11-26T13:25:51.120Z`, on every output.
pub(crate) mod millis_format {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d).map(crate::clock::truncate_to_millis)
    }
}

/// [`millis_format`] for optional timestamps (`null` when absent).
pub(crate) mod millis_format_option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        at: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => super::millis_format::serialize(at, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<DateTime<Utc>>::deserialize(d)?.map(crate::clock::truncate_to_millis))
    }
}

/// Where a conversation's title came from. Ordered by authority: an automatic title
/// replaces only titles of lower authority, and nothing automatic replaces `User`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TitleSource {
    /// No title yet.
    #[default]
    None,
    /// Taken from the first user message, at once.
    Heuristic,
    /// Written by the [`TitleGenerator`](crate::TitleGenerator).
    Generated,
    /// Set by the user; final for every automatic title.
    User,
}

impl TitleSource {
    /// The lowercase name used in storage and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TitleSource::None => "none",
            TitleSource::Heuristic => "heuristic",
            TitleSource::Generated => "generated",
            TitleSource::User => "user",
        }
    }

    /// Parses [`TitleSource::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => TitleSource::None,
            "heuristic" => TitleSource::Heuristic,
            "generated" => TitleSource::Generated,
            "user" => TitleSource::User,
            _ => return None,
        })
    }
}

/// A conversation as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Conversation {
    /// Its identifier.
    pub id: ConversationId,
    /// The scope it belongs to.
    pub scope: Scope,
    /// The title shown in the sidebar, if any.
    pub title: Option<String>,
    /// Where the title came from.
    pub title_source: TitleSource,
    /// When it was created (UTC, milliseconds).
    #[serde(with = "millis_format")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, format = DateTime, example = "2026-11-26T13:25:51.120Z")
    )]
    pub created_at: DateTime<Utc>,
    /// Last activity: creation, any append, any edit by the caller (UTC, milliseconds).
    /// Automatic titles do not count as activity.
    #[serde(with = "millis_format")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, format = DateTime, example = "2026-11-26T13:25:51.120Z")
    )]
    pub updated_at: DateTime<Utc>,
    /// How many messages it holds now, on every branch.
    pub message_count: u64,
    /// The highest `seq` ever assigned in it: the next message gets `last_seq + 1`.
    /// Seqs are never reused, also after the newest message was deleted.
    pub last_seq: u64,
    /// The leaf of the active branch: what an append without a parent follows, and
    /// the end of the path that pages, `open` and the context window read. `None`
    /// when the conversation has no message.
    pub head_id: Option<MessageId>,
    /// Pinned conversations can be listed first.
    pub pinned: bool,
    /// Archived conversations are left out of lists unless asked for.
    pub archived: bool,
    /// When it was archived (UTC, milliseconds); `None` when it is not. Retention
    /// counts the age of an archived conversation from it.
    #[serde(with = "millis_format_option", default)]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<String>, format = DateTime, example = "2026-11-26T13:25:51.120Z")
    )]
    pub archived_at: Option<DateTime<Utc>>,
    /// The host's own data.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Metadata,
    /// Bumped by every change; the token of optimistic concurrency.
    pub version: u64,
    /// The agent run in progress, if any (one at a time per conversation).
    #[serde(default)]
    pub active_run_id: Option<crate::RunId>,
    /// Tokens used by every run of the conversation so far, summed: what a host shows
    /// as the cost of a chat.
    #[serde(default)]
    pub usage: crate::Usage,
}

/// What a caller gives to create a conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewConversation {
    /// A title typed by the user (stored with [`TitleSource::User`]), or none to let
    /// the title lifecycle name it. One line, not blank, at most 200 characters by
    /// default.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 200,
            pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x1F\x7F-\x9F\s][^\x00-\x1F\x7F-\x9F]*$"
        )
    )]
    pub title: Option<String>,
    /// The host's own data.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Metadata,
}

impl NewConversation {
    /// A conversation with no title yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a user title.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets the metadata object.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// The conversation this creates in `scope` at `at`, as every store stores it: a
    /// new UUIDv7, version 1, no messages, a given title as a user title.
    pub fn into_conversation(self, scope: Scope, at: DateTime<Utc>) -> Conversation {
        let title_source = if self.title.is_some() {
            TitleSource::User
        } else {
            TitleSource::None
        };
        Conversation {
            id: ConversationId::new(),
            scope,
            title: self.title,
            title_source,
            created_at: at,
            updated_at: at,
            message_count: 0,
            last_seq: 0,
            head_id: None,
            pinned: false,
            archived: false,
            archived_at: None,
            metadata: self.metadata,
            version: 1,
            active_run_id: None,
            usage: crate::Usage::default(),
        }
    }
}

/// A change to a conversation. Fields left `None` stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationPatch {
    /// Rename: stored exactly as given, with [`TitleSource::User`]. One line, not
    /// blank, at most 200 characters by default.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 200,
            pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x1F\x7F-\x9F\s][^\x00-\x1F\x7F-\x9F]*$"
        )
    )]
    pub title: Option<String>,
    /// Pin or unpin.
    #[serde(default)]
    pub pinned: Option<bool>,
    /// Archive or restore.
    #[serde(default)]
    pub archived: Option<bool>,
    /// Changes the metadata as a JSON Merge Patch (RFC 7396): `{"tag": "billing",
    /// "draft": null}` sets `tag`, removes `draft` and keeps every other key, so two
    /// clients editing different keys lose nothing.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
    /// Switches branch: the head moves to the newest leaf under this message (the
    /// message itself when it has no children), so the branch reads as it was last
    /// written. A message of another conversation is
    /// [`Error::NotFound`](crate::Error::NotFound). Navigation, not activity: it bumps
    /// `version` but does not move `updated_at`.
    #[serde(default)]
    pub head_id: Option<MessageId>,
    /// When set, the update applies only if the stored version is this one;
    /// otherwise [`Error::Conflict`](crate::Error::Conflict) and nothing changes.
    #[serde(default)]
    pub expected_version: Option<u64>,
}

impl ConversationPatch {
    /// An empty patch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Renames.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Pins or unpins.
    pub fn pinned(mut self, pinned: bool) -> Self {
        self.pinned = Some(pinned);
        self
    }

    /// Archives or restores.
    pub fn archived(mut self, archived: bool) -> Self {
        self.archived = Some(archived);
        self
    }

    /// Merges `metadata` into the stored metadata (see [`ConversationPatch::metadata`]).
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Switches to the branch of `message` (see [`ConversationPatch::head_id`]).
    pub fn head(mut self, message: MessageId) -> Self {
        self.head_id = Some(message);
        self
    }

    /// Applies only at this version.
    pub fn expect_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Whether the patch changes nothing (an empty patch still checks the version).
    pub fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.pinned.is_none()
            && self.archived.is_none()
            && self.metadata.is_none()
            && self.head_id.is_none()
    }

    /// Whether the patch changes more than the head: such a change is activity and
    /// moves `updated_at`.
    fn is_activity(&self) -> bool {
        self.title.is_some()
            || self.pinned.is_some()
            || self.archived.is_some()
            || self.metadata.is_some()
    }

    /// Applies the patch to `conversation` in memory, the rule every store shares:
    /// bumps `version` once; moves `updated_at` to `at` (never backwards) unless the
    /// patch only switches branch; sets `head_id` to `new_head`, the newest leaf under
    /// [`ConversationPatch::head_id`] as the store found it (`None` when the patch
    /// does not switch); stamps `archived_at` when archiving (clears it when
    /// restoring; archiving an archived conversation keeps it, so its retention age
    /// does not restart); merges `metadata` as a JSON Merge Patch (RFC 7396: a `null` member
    /// removes the key, an object member merges into an object, anything else
    /// replaces). An empty patch changes nothing, not even the version.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) naming `metadata` when the
    /// merged metadata exceeds `limits`; the conversation is then unchanged.
    pub fn apply_to(
        &self,
        conversation: &mut Conversation,
        new_head: Option<MessageId>,
        at: DateTime<Utc>,
        limits: &crate::Limits,
    ) -> crate::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let metadata = match &self.metadata {
            Some(patch) => {
                let mut merged = conversation.metadata.clone();
                merge_patch(&mut merged, patch);
                limits.check_metadata("metadata", &merged)?;
                Some(merged)
            }
            None => None,
        };
        let at = at.max(conversation.updated_at);
        if let Some(head) = new_head {
            conversation.head_id = Some(head);
        }
        if let Some(title) = &self.title {
            conversation.title = Some(title.clone());
            conversation.title_source = TitleSource::User;
        }
        if let Some(pinned) = self.pinned {
            conversation.pinned = pinned;
        }
        if let Some(archived) = self.archived
            && archived != conversation.archived
        {
            conversation.archived = archived;
            conversation.archived_at = archived.then_some(at);
        }
        if let Some(metadata) = metadata {
            conversation.metadata = metadata;
        }
        conversation.version += 1;
        if self.is_activity() {
            conversation.updated_at = at;
        }
        Ok(())
    }
}

/// Merges `patch` into `target` as RFC 7396 says for objects: each `null` member
/// removes the key, each object member merges into the object there (replacing
/// whatever else was there), any other member replaces.
pub(crate) fn merge_patch(target: &mut Metadata, patch: &Metadata) {
    for (key, value) in patch {
        match value {
            serde_json::Value::Null => {
                target.remove(key);
            }
            serde_json::Value::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| serde_json::Value::Object(Metadata::new()));
                if !slot.is_object() {
                    *slot = serde_json::Value::Object(Metadata::new());
                }
                if let serde_json::Value::Object(nested) = slot {
                    merge_patch(nested, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// Who wrote a message, as in the OpenAI chat format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The person.
    User,
    /// The model; may carry [`ToolCall`]s.
    Assistant,
    /// A tool's result, answering one tool call by its id.
    Tool,
}

impl Role {
    /// The lowercase name used in storage and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// Parses [`Role::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        })
    }
}

/// A tool call made by the assistant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolCall {
    /// The provider's id; the tool result answers it with `tool_call_id`. At most
    /// 256 bytes, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\x00-\x1F\x7F-\x9F]+$"
        )
    )]
    pub id: String,
    /// The function's name. At most 256 bytes, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\x00-\x1F\x7F-\x9F]+$"
        )
    )]
    pub name: String,
    /// The arguments as JSON. A model that produced unparsable arguments has them
    /// kept as a JSON string, never dropped.
    pub arguments: serde_json::Value,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    /// Its identifier (caller-supplied or UUIDv7), unique within the conversation.
    pub id: MessageId,
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// The order in which the conversation's messages were stored, over the whole
    /// tree: 1, 2, 3… assigned by the store, never reused; gaps only where messages
    /// were deleted. A message's seq is larger than its parent's.
    pub seq: u64,
    /// The message it follows; `None` for a root (a first message).
    pub parent_id: Option<MessageId>,
    /// Where it stands among the messages with the same parent (its versions), as
    /// the store knew it when the message was read.
    #[serde(flatten)]
    pub siblings: Siblings,
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// Tool calls of an assistant message.
    pub tool_calls: Vec<ToolCall>,
    /// On a tool result, the id of the call it answers.
    pub tool_call_id: Option<String>,
    /// The host's own data.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Metadata,
    /// When it was stored (UTC, milliseconds).
    #[serde(with = "millis_format")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, format = DateTime, example = "2026-11-26T13:25:51.120Z")
    )]
    pub created_at: DateTime<Utc>,
}

impl Message {
    /// The bytes this message weighs in a page: its content, tool-call arguments and
    /// metadata as JSON, plus a fixed 256 for ids, numbers and field names. Pages stop
    /// at [`Limits::max_page_bytes`](crate::Limits::max_page_bytes) of it.
    pub fn page_weight(&self) -> usize {
        let arguments: usize = self
            .tool_calls
            .iter()
            .map(|call| call.id.len() + call.name.len() + json_len(&call.arguments))
            .sum();
        let metadata = if self.metadata.is_empty() {
            0
        } else {
            serde_json::to_vec(&self.metadata).map_or(0, |bytes| bytes.len())
        };
        256 + self.content.len() + arguments + metadata
    }
}

fn json_len(value: &serde_json::Value) -> usize {
    serde_json::to_vec(value).map_or(0, |bytes| bytes.len())
}

/// How many siblings on each side of a message [`Siblings::ids`] holds at most.
pub const SIBLING_WINDOW: usize = 50;

/// A message's place among its siblings: the messages with the same parent (for
/// roots, the other roots), the message itself included, ordered by `seq`. A client
/// draws "< 2/3 >" from it and switches with the ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Siblings {
    /// Ids of the siblings by seq, the message itself included: at most
    /// [`SIBLING_WINDOW`] before it and as many after it, so a message with
    /// thousands of versions keeps a bounded size.
    #[serde(rename = "siblingIds")]
    pub ids: Vec<MessageId>,
    /// How many siblings there are in all, the message itself included (at least 1).
    #[serde(rename = "siblingCount")]
    pub count: u64,
    /// The message's position among all of them, from 0.
    #[serde(rename = "siblingIndex")]
    pub index: u64,
}

impl Siblings {
    /// A message with no sibling but itself.
    pub fn only(id: MessageId) -> Self {
        Self {
            ids: vec![id],
            count: 1,
            index: 0,
        }
    }

    /// The siblings of the message at `index` of `all` (every sibling, by seq),
    /// windowed by [`SIBLING_WINDOW`]. For stores that hold the whole list; SQL stores
    /// read the window with two bounded range reads and the count.
    pub fn around(all: &[MessageId], index: usize) -> Self {
        Self {
            ids: all[Self::window(all.len(), index)].to_vec(),
            count: all.len() as u64,
            index: index as u64,
        }
    }

    /// The positions [`Siblings::ids`] covers for the message at `index` of `count`
    /// siblings.
    pub fn window(count: usize, index: usize) -> std::ops::Range<usize> {
        index.saturating_sub(SIBLING_WINDOW)..count.min(index + SIBLING_WINDOW + 1)
    }
}

/// A message to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewMessage {
    /// A caller-chosen id: appending a message whose id is already stored in the
    /// conversation returns the stored message and writes nothing, so a retry after
    /// a lost acknowledgement is safe. `None` lets the store assign a UUIDv7.
    #[serde(default)]
    pub id: Option<MessageId>,
    /// Who wrote it.
    pub role: Role,
    /// Its text (may be empty on an assistant message that only calls tools). At most
    /// 1 MiB by default; no NUL character (nor anywhere in metadata).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[^\x00]*$"))]
    pub content: String,
    /// Tool calls; only on assistant messages.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool result answers; required on, and only on, tool messages.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\x00-\x1F\x7F-\x9F]+$"
        )
    )]
    pub tool_call_id: Option<String>,
    /// The host's own data.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Metadata,
}

impl NewMessage {
    /// A message of `role` with `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            id: None,
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            metadata: Metadata::new(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A tool result answering the call `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        let mut message = Self::new(Role::Tool, content);
        message.tool_call_id = Some(tool_call_id.into());
        message
    }

    /// Sets the caller-chosen id.
    pub fn with_id(mut self, id: MessageId) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the tool calls.
    pub fn with_tool_calls(mut self, tool_calls: Vec<ToolCall>) -> Self {
        self.tool_calls = tool_calls;
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// The stored form of this message, with no sibling yet (a store fills
    /// [`Message::siblings`] when it reads the message back).
    pub fn into_message(
        self,
        conversation_id: ConversationId,
        seq: u64,
        parent_id: Option<MessageId>,
        created_at: DateTime<Utc>,
    ) -> Message {
        let id = self.id.unwrap_or_default();
        Message {
            id,
            conversation_id,
            seq,
            parent_id,
            siblings: Siblings::only(id),
            role: self.role,
            content: self.content,
            tool_calls: self.tool_calls,
            tool_call_id: self.tool_call_id,
            metadata: self.metadata,
            created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_are_millisecond_precise_on_the_wire() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T13:25:51.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = truncate_to_millis(at);
        assert_eq!(at.timestamp_subsec_nanos(), 123_000_000);
        let message = NewMessage::user("hi").into_message(ConversationId::new(), 1, None, at);
        let value = serde_json::to_value(&message).unwrap();
        assert_eq!(value["createdAt"], json!("2026-11-26T13:25:51.123Z"));
        let whole = truncate_to_millis(
            DateTime::parse_from_rfc3339("2026-11-26T13:25:51Z")
                .unwrap()
                .with_timezone(&Utc),
        );
        let message = NewMessage::user("hi").into_message(ConversationId::new(), 1, None, whole);
        assert_eq!(
            serde_json::to_value(&message).unwrap()["createdAt"],
            json!("2026-11-26T13:25:51.000Z")
        );
        let back: Message = serde_json::from_value(value).unwrap();
        assert_eq!(back.created_at, at);
    }

    #[test]
    fn wire_format_is_camel_case_and_input_refuses_unknown_fields() {
        let new: NewMessage = serde_json::from_value(json!({
            "role": "tool", "content": "3 rows", "toolCallId": "call_1"
        }))
        .unwrap();
        assert_eq!(new.tool_call_id.as_deref(), Some("call_1"));
        assert!(
            serde_json::from_value::<NewMessage>(json!({"role": "user", "contnet": "x"})).is_err()
        );
        assert!(serde_json::from_value::<ConversationPatch>(json!({"titel": "x"})).is_err());
        let patch: ConversationPatch =
            serde_json::from_value(json!({"pinned": true, "expectedVersion": 3})).unwrap();
        assert_eq!(
            patch,
            ConversationPatch::new().pinned(true).expect_version(3)
        );
    }

    #[cfg(feature = "openapi")]
    #[test]
    fn openapi_schemas_describe_the_wire_format() {
        use utoipa::PartialSchema as _;
        let conversation = serde_json::to_value(Conversation::schema()).unwrap();
        let properties = &conversation["properties"];
        assert_eq!(properties["createdAt"]["type"], json!("string"));
        assert_eq!(properties["createdAt"]["format"], json!("date-time"));
        assert_eq!(properties["metadata"]["type"], json!("object"));
        assert_eq!(
            properties["titleSource"]["$ref"],
            json!("#/components/schemas/TitleSource")
        );
        let id = serde_json::to_value(ConversationId::schema()).unwrap();
        assert_eq!(
            (&id["type"], &id["format"]),
            (&json!("string"), &json!("uuid"))
        );
        let scope = serde_json::to_value(Scope::schema()).unwrap();
        assert_eq!(scope["type"], json!("string"));
        assert_eq!(scope["maxLength"], json!(256));
        assert_eq!(scope["pattern"], json!(r"^[^\x00-\x1F\x7F-\x9F]+$"));
        let new = serde_json::to_value(NewMessage::schema()).unwrap();
        assert_eq!(new["additionalProperties"], json!(false));
        assert_eq!(new["required"], json!(["role"]));
        let patch = serde_json::to_value(ConversationPatch::schema()).unwrap();
        assert_eq!(patch["additionalProperties"], json!(false));
        assert!(patch.get("required").is_none(), "{patch}");
    }

    #[test]
    fn roles_and_title_sources_round_trip_as_text() {
        for role in [Role::System, Role::User, Role::Assistant, Role::Tool] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        for source in [
            TitleSource::None,
            TitleSource::Heuristic,
            TitleSource::Generated,
            TitleSource::User,
        ] {
            assert_eq!(TitleSource::parse(source.as_str()), Some(source));
        }
        assert!(TitleSource::Generated > TitleSource::Heuristic);
        assert!(TitleSource::User > TitleSource::Generated);
    }
}
