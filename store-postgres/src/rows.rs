//! Reading rows into the core model.

use chrono::{DateTime, Utc};
use conversation_core::{
    Conversation, ConversationId, Message, MessageId, Metadata, Result, Role, Scope, TitleSource,
    ToolCall,
};
use serde_json::Value;
use sqlx::Row as _;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::{corrupt, op};

fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(op("read a row"))
}

fn count(value: i64, column: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| corrupt(format!("{column} is {value}")))
}

fn object(value: Value, column: &str) -> Result<Metadata> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(corrupt(format!("{column} is not an object: {other}"))),
    }
}

/// A conversation row, selected as [`crate::sql::CONVERSATION_COLUMNS`].
pub(crate) fn conversation(row: &PgRow) -> Result<Conversation> {
    let scope: String = get(row, "scope")?;
    let title_source: String = get(row, "title_source")?;
    Ok(Conversation {
        id: ConversationId::from_uuid(get(row, "id")?),
        scope: Scope::new(scope).map_err(|e| corrupt(format!("scope: {e}")))?,
        title: get(row, "title")?,
        title_source: TitleSource::parse(&title_source)
            .ok_or_else(|| corrupt(format!("title_source is {title_source:?}")))?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        message_count: count(get(row, "message_count")?, "message_count")?,
        pinned: get(row, "pinned")?,
        archived: get(row, "archived")?,
        metadata: object(get(row, "metadata")?, "metadata")?,
        version: count(get(row, "version")?, "version")?,
    })
}

/// A message row, or `None` for the all-NULL row a lateral join gives a conversation
/// without messages.
pub(crate) fn message(row: &PgRow) -> Result<Option<Message>> {
    let Some(seq) = get::<Option<i64>>(row, "seq")? else {
        return Ok(None);
    };
    let role: String = get(row, "role")?;
    let tool_calls: Vec<ToolCall> = serde_json::from_value(get(row, "tool_calls")?)
        .map_err(|e| corrupt(format!("tool_calls: {e}")))?;
    let created_at: DateTime<Utc> = get(row, "created_at")?;
    Ok(Some(Message {
        id: MessageId::from_uuid(get::<Uuid>(row, "id")?),
        conversation_id: ConversationId::from_uuid(get(row, "conversation_id")?),
        seq: count(seq, "seq")?,
        role: Role::parse(&role).ok_or_else(|| corrupt(format!("role is {role:?}")))?,
        content: get(row, "content")?,
        tool_calls,
        tool_call_id: get(row, "tool_call_id")?,
        metadata: object(get(row, "metadata")?, "metadata")?,
        created_at,
    }))
}
