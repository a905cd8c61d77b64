//! The data lifecycle: the export format, what an import hands a store, and the
//! queries of retention.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{millis_format, millis_format_option};
use crate::{
    Conversation, ConversationId, Error, Limits, Message, MessageId, Metadata, NewMessage, Result,
    Role, Scope, Siblings, TitleSource, ToolCall, Usage,
};

/// The name of the export format, in the header line.
pub const EXPORT_FORMAT: &str = "conversation-export";
/// The version of the export format this library writes and reads.
pub const EXPORT_VERSION: u32 = 1;

/// One line of an export (JSON Lines, `application/x-ndjson`): a header, then each
/// conversation followed by every message of its tree, by seq.
///
/// ```text
/// {"type":"header","format":"conversation-export","version":1,"scope":"analytics-db"}
/// {"type":"conversation","id":"…","title":"…","titleSource":"generated",…,"headId":"…"}
/// {"type":"message","id":"…","parentId":null,"seq":1,"role":"user","content":"…",…}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ExportLine {
    /// The first line: what this file is.
    Header {
        /// [`EXPORT_FORMAT`].
        format: String,
        /// [`EXPORT_VERSION`].
        version: u32,
        /// The scope it was exported from.
        scope: Scope,
    },
    /// A conversation; its messages follow.
    Conversation(ExportedConversation),
    /// A message of the conversation above.
    Message(ExportedMessage),
}

impl ExportLine {
    /// The header of an export of `scope`.
    pub fn header(scope: Scope) -> Self {
        ExportLine::Header {
            format: EXPORT_FORMAT.to_owned(),
            version: EXPORT_VERSION,
            scope,
        }
    }

    /// The line as JSON text with its newline.
    ///
    /// # Errors
    /// [`Error::Backend`] if it cannot be serialised (it always can).
    pub fn to_line(&self) -> Result<String> {
        let mut text = serde_json::to_string(self)
            .map_err(|e| Error::backend("serialising an export line", e))?;
        text.push('\n');
        Ok(text)
    }
}

/// A conversation in an export: every stored field but its scope and the run in
/// progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[allow(missing_docs)] // the fields are those of `Conversation`
pub struct ExportedConversation {
    pub id: ConversationId,
    pub title: Option<String>,
    pub title_source: TitleSource,
    #[serde(with = "millis_format")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: DateTime<Utc>,
    #[serde(with = "millis_format")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: DateTime<Utc>,
    pub message_count: u64,
    pub last_seq: u64,
    pub head_id: Option<MessageId>,
    pub pinned: bool,
    pub archived: bool,
    #[serde(with = "millis_format_option", default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub archived_at: Option<DateTime<Utc>>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Metadata,
    pub version: u64,
    #[serde(default)]
    pub usage: Usage,
}

impl From<Conversation> for ExportedConversation {
    fn from(c: Conversation) -> Self {
        Self {
            id: c.id,
            title: c.title,
            title_source: c.title_source,
            created_at: c.created_at,
            updated_at: c.updated_at,
            message_count: c.message_count,
            last_seq: c.last_seq,
            head_id: c.head_id,
            pinned: c.pinned,
            archived: c.archived,
            archived_at: c.archived_at,
            metadata: c.metadata,
            version: c.version,
            usage: c.usage,
        }
    }
}

impl ExportedConversation {
    /// The conversation it describes, in `scope`.
    pub fn into_conversation(self, scope: Scope) -> Conversation {
        Conversation {
            id: self.id,
            scope,
            title: self.title,
            title_source: self.title_source,
            created_at: self.created_at,
            updated_at: self.updated_at,
            message_count: self.message_count,
            last_seq: self.last_seq,
            head_id: self.head_id,
            pinned: self.pinned,
            archived: self.archived,
            archived_at: self.archived_at,
            metadata: self.metadata,
            version: self.version,
            active_run_id: None,
            usage: self.usage,
        }
    }
}

/// A message in an export: every stored field but its conversation id (the
/// conversation above it) and its siblings (derived from the parents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[allow(missing_docs)] // the fields are those of `Message`
pub struct ExportedMessage {
    pub id: MessageId,
    pub parent_id: Option<MessageId>,
    pub seq: u64,
    pub role: Role,
    pub content: String,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Metadata,
    #[serde(with = "millis_format")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: DateTime<Utc>,
}

impl From<Message> for ExportedMessage {
    fn from(m: Message) -> Self {
        Self {
            id: m.id,
            parent_id: m.parent_id,
            seq: m.seq,
            role: m.role,
            content: m.content,
            tool_calls: m.tool_calls,
            tool_call_id: m.tool_call_id,
            metadata: m.metadata,
            created_at: m.created_at,
        }
    }
}

impl ExportedMessage {
    /// The message it describes, in `conversation` (siblings are filled in when a
    /// store reads it).
    pub fn into_message(self, conversation: ConversationId) -> Message {
        Message {
            id: self.id,
            conversation_id: conversation,
            seq: self.seq,
            parent_id: self.parent_id,
            siblings: Siblings::only(self.id),
            role: self.role,
            content: self.content,
            tool_calls: self.tool_calls,
            tool_call_id: self.tool_call_id,
            metadata: self.metadata,
            created_at: self.created_at,
        }
    }
}

/// A whole conversation to import: [`Store::import_conversation`](crate::Store::import_conversation).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedConversation {
    /// The conversation, stored as given (its `active_run_id` must be `None`).
    pub conversation: Conversation,
    /// Every message of its tree, ascending by seq.
    pub messages: Vec<Message>,
}

impl ImportedConversation {
    /// Checks that the conversation is whole and within `limits`, the rule every
    /// store applies before importing: messages strictly ascending by seq, none above
    /// `last_seq`, unique ids, each parent an earlier message of the conversation,
    /// `head_id` one of them and a leaf (`None` only when there is none), `message_count` their
    /// number, every message, title and metadata valid as an append would check them.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the field at fault (`messages[i].parentId`,
    /// `headId`, `messageCount`, …).
    pub fn check(&self, limits: &Limits) -> Result<()> {
        let c = &self.conversation;
        if let Some(title) = &c.title {
            limits.check_user_title(title)?;
        }
        limits.check_metadata("metadata", &c.metadata)?;
        if c.active_run_id.is_some() {
            return Err(Error::invalid("activeRunId", "an import holds no run"));
        }
        if c.message_count != self.messages.len() as u64 {
            return Err(Error::invalid(
                "messageCount",
                format!(
                    "says {} but {} messages follow",
                    c.message_count,
                    self.messages.len()
                ),
            ));
        }
        let mut seen: HashSet<MessageId> = HashSet::with_capacity(self.messages.len());
        let mut previous = 0;
        for (i, message) in self.messages.iter().enumerate() {
            let field = |name: &str| format!("messages[{i}].{name}");
            if message.conversation_id != c.id {
                return Err(Error::invalid(
                    field("conversationId"),
                    "not this conversation",
                ));
            }
            if message.seq <= previous || message.seq > c.last_seq {
                return Err(Error::invalid(
                    field("seq"),
                    format!(
                        "{} does not follow {previous} up to lastSeq {}",
                        message.seq, c.last_seq
                    ),
                ));
            }
            previous = message.seq;
            if let Some(parent) = message.parent_id
                && !seen.contains(&parent)
            {
                return Err(Error::invalid(
                    field("parentId"),
                    "not an earlier message of this conversation",
                ));
            }
            if !seen.insert(message.id) {
                return Err(Error::invalid(field("id"), "appears twice"));
            }
            let new = NewMessage {
                id: Some(message.id),
                role: message.role,
                content: message.content.clone(),
                tool_calls: message.tool_calls.clone(),
                tool_call_id: message.tool_call_id.clone(),
                metadata: message.metadata.clone(),
            };
            limits.check_message(&format!("messages[{i}]"), &new)?;
        }
        match c.head_id {
            Some(head) if !seen.contains(&head) => Err(Error::invalid(
                "headId",
                "not a message of this conversation",
            )),
            Some(head) if self.messages.iter().any(|m| m.parent_id == Some(head)) => Err(
                Error::invalid("headId", "not a leaf: the head is the end of a branch"),
            ),
            None if !self.messages.is_empty() => {
                Err(Error::invalid("headId", "missing while messages follow"))
            }
            _ => Ok(()),
        }
    }
}

/// What [`Store::import_conversation`](crate::Store::import_conversation) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportOutcome {
    /// Stored, whole.
    Imported,
    /// A conversation with this id is in the scope already: nothing was written (an
    /// import run twice stores nothing twice).
    AlreadyPresent,
    /// The id belongs to a conversation of another scope: nothing was written; import
    /// it under a new id.
    IdTaken,
}

/// Which conversations retention finds: [`Store::list_expired`](crate::Store::list_expired).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionQuery {
    /// Only this scope, or every scope.
    pub scope: Option<Scope>,
    /// What makes a conversation expire.
    pub expiry: Expiry,
    /// Pinned conversations too (default: never).
    pub include_pinned: bool,
    /// At most this many, oldest first.
    pub limit: usize,
    /// Continue after this one (the `at` and `id` of the last of the previous call).
    pub after: Option<(DateTime<Utc>, ConversationId)>,
}

impl RetentionQuery {
    /// The first `limit` conversations of every scope expiring by `expiry`, pinned
    /// ones left out.
    pub fn new(expiry: Expiry, limit: usize) -> Self {
        Self {
            scope: None,
            expiry,
            include_pinned: false,
            limit,
            after: None,
        }
    }

    /// Only in `scope`.
    pub fn in_scope(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }

    /// Pinned conversations too.
    pub fn include_pinned(mut self, include: bool) -> Self {
        self.include_pinned = include;
        self
    }

    /// After `at`, `id` (the last of a previous page).
    pub fn after(mut self, at: DateTime<Utc>, id: ConversationId) -> Self {
        self.after = Some((at, id));
        self
    }

    /// Whether `conversation` expires by this query (the rule every store shares;
    /// `after` and `limit` aside), and the time that counts.
    pub fn expired_at(&self, conversation: &Conversation) -> Option<DateTime<Utc>> {
        if self
            .scope
            .as_ref()
            .is_some_and(|scope| *scope != conversation.scope)
            || (conversation.pinned && !self.include_pinned)
        {
            return None;
        }
        match self.expiry {
            Expiry::InactiveBefore(cutoff) => {
                (conversation.updated_at < cutoff).then_some(conversation.updated_at)
            }
            Expiry::ArchivedBefore(cutoff) => conversation
                .archived_at
                .filter(|at| conversation.archived && *at < cutoff),
        }
    }
}

/// What makes a conversation expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No activity (`updated_at`) since this time.
    InactiveBefore(DateTime<Utc>),
    /// Archived (`archived_at`) before this time.
    ArchivedBefore(DateTime<Utc>),
}

/// A conversation retention found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredConversation {
    /// Its scope.
    pub scope: Scope,
    /// Its id.
    pub id: ConversationId,
    /// Its title.
    pub title: Option<String>,
    /// The time that made it expire (`updated_at` or `archived_at`).
    pub at: DateTime<Utc>,
    /// Whether it is pinned.
    pub pinned: bool,
}
