//! The data model: conversations, messages and what callers send to create them.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::{ConversationId, MessageId, Scope};

/// Free-form JSON object attached to a conversation or a message.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// The current UTC time truncated to whole milliseconds, the precision every store
/// keeps, so that a value written and read back compares equal.
pub fn now() -> DateTime<Utc> {
    truncate_to_millis(Utc::now())
}

/// Truncates a timestamp to whole milliseconds.
pub fn truncate_to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    // Truncation fails only for dates beyond year 262,000; keep those as they are.
    at.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(at)
}

/// Serde for timestamps as RFC 3339 text with exactly three fraction digits and `Z`,
/// e.g. `2026-11-26T13:25:51.120Z`, on every output.
pub(crate) mod millis_format {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d).map(super::truncate_to_millis)
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
    /// How many messages it holds; also the `seq` of its newest message.
    pub message_count: u64,
    /// Pinned conversations can be listed first.
    pub pinned: bool,
    /// Archived conversations are left out of lists unless asked for.
    pub archived: bool,
    /// The host's own data.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Metadata,
    /// Bumped by every change; the token of optimistic concurrency.
    pub version: u64,
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
            pinned: false,
            archived: false,
            metadata: self.metadata,
            version: 1,
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
    /// Replaces the whole metadata object.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
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

    /// Replaces the metadata.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
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
    }

    /// Applies the patch's fields to `conversation` in memory, bumping its version and
    /// moving `updated_at` to `at` (never backwards). An empty patch changes nothing,
    /// not even the version. Stores that keep rows in memory share this rule so that
    /// every store changes the same fields the same way.
    pub fn apply_to(&self, conversation: &mut Conversation, at: DateTime<Utc>) {
        if self.is_empty() {
            return;
        }
        if let Some(title) = &self.title {
            conversation.title = Some(title.clone());
            conversation.title_source = TitleSource::User;
        }
        if let Some(pinned) = self.pinned {
            conversation.pinned = pinned;
        }
        if let Some(archived) = self.archived {
            conversation.archived = archived;
        }
        if let Some(metadata) = &self.metadata {
            conversation.metadata = metadata.clone();
        }
        conversation.version += 1;
        conversation.updated_at = at.max(conversation.updated_at);
    }
}

/// Who wrote a message, as in the OpenAI chat format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Position in the conversation: 1, 2, 3… with no gaps, assigned by the store.
    pub seq: u64,
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

    /// The stored form of this message, as a store that keeps rows in memory builds it.
    pub fn into_message(
        self,
        conversation_id: ConversationId,
        seq: u64,
        created_at: DateTime<Utc>,
    ) -> Message {
        Message {
            id: self.id.unwrap_or_default(),
            conversation_id,
            seq,
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
        let message = NewMessage::user("hi").into_message(ConversationId::new(), 1, at);
        let value = serde_json::to_value(&message).unwrap();
        assert_eq!(value["createdAt"], json!("2026-11-26T13:25:51.123Z"));
        let whole = truncate_to_millis(
            DateTime::parse_from_rfc3339("2026-11-26T13:25:51Z")
                .unwrap()
                .with_timezone(&Utc),
        );
        let message = NewMessage::user("hi").into_message(ConversationId::new(), 1, whole);
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
