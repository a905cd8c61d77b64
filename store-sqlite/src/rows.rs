//! Rows as SQLite returns them, and their conversion to and from the model.

use chrono::{DateTime, Utc};
use conversation_core::{
    Conversation, ConversationId, Message, MessageId, Metadata, Result, Role, Scope, TitleSource,
    ToolCall,
};
use uuid::Uuid;

use crate::error::bad_row;

/// A `conversations` row, in the column order of [`crate::sql::GET_CONVERSATION`]. The
/// scope is not read back: every query is keyed by it, so the caller's scope is it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ConversationRow {
    id: Vec<u8>,
    title: Option<String>,
    title_source: String,
    created_at: i64,
    updated_at: i64,
    message_count: i64,
    pinned: bool,
    archived: bool,
    metadata: String,
    version: i64,
}

impl ConversationRow {
    pub(crate) fn into_conversation(self, scope: &Scope) -> Result<Conversation> {
        Ok(Conversation {
            id: ConversationId::from_uuid(uuid(&self.id)?),
            scope: scope.clone(),
            title: self.title,
            title_source: TitleSource::parse(&self.title_source)
                .ok_or_else(|| bad_row(format!("title source {:?}", self.title_source)))?,
            created_at: from_millis(self.created_at)?,
            updated_at: from_millis(self.updated_at)?,
            message_count: to_u64(self.message_count, "message_count")?,
            pinned: self.pinned,
            archived: self.archived,
            metadata: metadata_from_text(&self.metadata)?,
            version: to_u64(self.version, "version")?,
        })
    }
}

/// A `messages` row, in the column order of [`crate::sql::recent_messages`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct MessageRow {
    id: Vec<u8>,
    seq: i64,
    role: String,
    content: String,
    tool_calls: Option<String>,
    tool_call_id: Option<String>,
    metadata: String,
    created_at: i64,
}

impl MessageRow {
    pub(crate) fn into_message(self, conversation_id: ConversationId) -> Result<Message> {
        let tool_calls: Vec<ToolCall> = match self.tool_calls.as_deref() {
            None => Vec::new(),
            Some(text) => {
                serde_json::from_str(text).map_err(|e| bad_row(format!("tool calls: {e}")))?
            }
        };
        Ok(Message {
            id: MessageId::from_uuid(uuid(&self.id)?),
            conversation_id,
            seq: to_u64(self.seq, "seq")?,
            role: Role::parse(&self.role)
                .ok_or_else(|| bad_row(format!("role {:?}", self.role)))?,
            content: self.content,
            tool_calls,
            tool_call_id: self.tool_call_id,
            metadata: metadata_from_text(&self.metadata)?,
            created_at: from_millis(self.created_at)?,
        })
    }
}

/// One conversation of a JSON page ([`crate::sql::list_conversations`]).
#[derive(Debug, serde::Deserialize)]
struct PageConversation(
    String,
    Option<String>,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    String,
    i64,
);

/// The conversations of a JSON page, as the model, in the order SQLite gave them.
pub(crate) fn conversations_from_page(page: &str, scope: &Scope) -> Result<Vec<Conversation>> {
    let rows: Vec<PageConversation> =
        serde_json::from_str(page).map_err(|e| bad_row(format!("a page of conversations: {e}")))?;
    rows.into_iter()
        .map(|row| {
            ConversationRow {
                id: hex_id(&row.0)?,
                title: row.1,
                title_source: row.2,
                created_at: row.3,
                updated_at: row.4,
                message_count: row.5,
                pinned: row.6 != 0,
                archived: row.7 != 0,
                metadata: row.8,
                version: row.9,
            }
            .into_conversation(scope)
        })
        .collect()
}

/// One message of a JSON page ([`crate::sql::recent_messages`]).
#[derive(Debug, serde::Deserialize)]
struct PageMessage(
    String,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    i64,
);

/// The messages of a JSON page, as the model, ascending by seq.
pub(crate) fn messages_from_page(
    page: &str,
    conversation_id: ConversationId,
) -> Result<Vec<Message>> {
    let rows: Vec<PageMessage> =
        serde_json::from_str(page).map_err(|e| bad_row(format!("a page of messages: {e}")))?;
    let mut messages = rows
        .into_iter()
        .map(|row| {
            MessageRow {
                id: hex_id(&row.0)?,
                seq: row.1,
                role: row.2,
                content: row.3,
                tool_calls: row.4,
                tool_call_id: row.5,
                metadata: row.6,
                created_at: row.7,
            }
            .into_message(conversation_id)
        })
        .collect::<Result<Vec<_>>>()?;
    // Already ascending or descending; sorting makes the order independent of how
    // SQLite fed the aggregate.
    messages.sort_unstable_by_key(|m| m.seq);
    Ok(messages)
}

/// The 16 bytes of an id given as `hex(id)`.
fn hex_id(text: &str) -> Result<Vec<u8>> {
    Uuid::try_parse(text)
        .map(|id| id.as_bytes().to_vec())
        .map_err(|_| bad_row(format!("id {text:?}")))
}

fn uuid(bytes: &[u8]) -> Result<Uuid> {
    Uuid::from_slice(bytes).map_err(|_| bad_row(format!("an id of {} bytes", bytes.len())))
}

fn to_u64(value: i64, column: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| bad_row(format!("{column} = {value}")))
}

/// A count or version as SQLite stores it (a signed 64-bit integer).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_millis(value: i64) -> Result<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(value)
        .ok_or_else(|| bad_row(format!("timestamp {value}")))
}

pub(crate) fn metadata_to_text(metadata: &Metadata) -> Result<String> {
    serde_json::to_string(metadata).map_err(|e| bad_row(format!("metadata: {e}")))
}

fn metadata_from_text(text: &str) -> Result<Metadata> {
    serde_json::from_str(text).map_err(|e| bad_row(format!("metadata: {e}")))
}

/// Tool calls as stored: `NULL` for none, else a JSON array.
pub(crate) fn tool_calls_to_text(tool_calls: &[ToolCall]) -> Result<Option<String>> {
    if tool_calls.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(tool_calls)
        .map(Some)
        .map_err(|e| bad_row(format!("tool calls: {e}")))
}
