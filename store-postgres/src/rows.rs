//! Rows to the core model, and the model's numbers to SQL's.

use chrono::{DateTime, Utc};
use conversation_core::{
    Conversation, ConversationId, Message, MessageId, Metadata, Result, Role, Run, RunFailure,
    RunId, RunStatus, Scope, Siblings, TitleSource, ToolCall, Usage,
};
use serde_json::Value;
use sqlx::Row as _;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::{bad_row, db};

pub(crate) fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(db("read a row"))
}

/// A count or seq read from a `bigint` column.
pub(crate) fn count(value: i64, column: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| bad_row(format!("{column} is {value}")))
}

/// A count or seq for a `bigint` parameter.
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| conversation_core::Error::Backend {
        message: format!("{what} {value} does not fit in a bigint"),
        source: None,
    })
}

fn object(value: Value, column: &str) -> Result<Metadata> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(bad_row(format!("{column} is not an object: {other}"))),
    }
}

/// A conversation row, selected as [`crate::sql::CONVERSATION_COLUMNS`].
pub(crate) fn conversation(row: &PgRow) -> Result<Conversation> {
    let scope: String = get(row, "scope")?;
    let title_source: String = get(row, "title_source")?;
    Ok(Conversation {
        id: ConversationId::from_uuid(get(row, "id")?),
        scope: Scope::new(scope).map_err(|e| bad_row(format!("scope: {e}")))?,
        title: get(row, "title")?,
        title_source: TitleSource::parse(&title_source)
            .ok_or_else(|| bad_row(format!("title_source is {title_source:?}")))?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        message_count: count(get(row, "message_count")?, "message_count")?,
        last_seq: count(get(row, "last_seq")?, "last_seq")?,
        head_id: get::<Option<Uuid>>(row, "head_id")?.map(MessageId::from_uuid),
        pinned: get(row, "pinned")?,
        archived: get(row, "archived")?,
        metadata: object(get(row, "metadata")?, "metadata")?,
        version: count(get(row, "version")?, "version")?,
        archived_at: get(row, "archived_at")?,
        active_run_id: get::<Option<Uuid>>(row, "active_run_id")?.map(RunId::from_uuid),
        usage: usage(row)?,
    })
}

/// The usage columns of a conversation or run row.
fn usage(row: &PgRow) -> Result<Usage> {
    Ok(Usage {
        prompt_tokens: count(get(row, "prompt_tokens")?, "prompt_tokens")?,
        completion_tokens: count(get(row, "completion_tokens")?, "completion_tokens")?,
        total_tokens: count(get(row, "total_tokens")?, "total_tokens")?,
    })
}

/// A run row, selected as [`crate::sql::RUN_COLUMNS`], or `None` for an all-`NULL`
/// row (a conversation without the run asked for).
pub(crate) fn run(row: &PgRow) -> Result<Option<Run>> {
    let Some(id) = get::<Option<Uuid>>(row, "id")? else {
        return Ok(None);
    };
    let status: String = get(row, "status")?;
    let error: Option<Value> = get(row, "error")?;
    let error: Option<RunFailure> = error
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| bad_row(format!("run error: {e}")))?;
    let pending_tool_calls: Vec<ToolCall> = serde_json::from_value(get(row, "pending_tool_calls")?)
        .map_err(|e| bad_row(format!("pending_tool_calls: {e}")))?;
    let steps: i64 = get(row, "steps")?;
    Ok(Some(Run {
        id: RunId::from_uuid(id),
        conversation_id: ConversationId::from_uuid(get(row, "conversation_id")?),
        status: RunStatus::parse(&status)
            .ok_or_else(|| bad_row(format!("run status is {status:?}")))?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        lease_until: get(row, "lease_until")?,
        cancel_requested: get(row, "cancel_requested")?,
        steps: u32::try_from(steps).map_err(|_| bad_row(format!("steps is {steps}")))?,
        usage: usage(row)?,
        error,
        pending_tool_calls,
    }))
}

/// A message row without its siblings (set to the message alone), or `None` for the
/// all-`NULL` row a lateral join gives a conversation without the messages asked for.
pub(crate) fn stored_message(row: &PgRow) -> Result<Option<Message>> {
    let Some(seq) = get::<Option<i64>>(row, "seq")? else {
        return Ok(None);
    };
    let id = MessageId::from_uuid(get(row, "id")?);
    let role: String = get(row, "role")?;
    let tool_calls: Vec<ToolCall> = serde_json::from_value(get(row, "tool_calls")?)
        .map_err(|e| bad_row(format!("tool_calls: {e}")))?;
    let created_at: DateTime<Utc> = get(row, "created_at")?;
    Ok(Some(Message {
        id,
        conversation_id: ConversationId::from_uuid(get(row, "conversation_id")?),
        seq: count(seq, "seq")?,
        parent_id: get::<Option<Uuid>>(row, "parent_id")?.map(MessageId::from_uuid),
        siblings: Siblings::only(id),
        role: Role::parse(&role).ok_or_else(|| bad_row(format!("role is {role:?}")))?,
        content: get(row, "content")?,
        tool_calls,
        tool_call_id: get(row, "tool_call_id")?,
        metadata: object(get(row, "metadata")?, "metadata")?,
        created_at,
    }))
}

/// A message row with its siblings, as the message reads of [`crate::sql`] select
/// them, or `None` for an all-`NULL` row.
pub(crate) fn message(row: &PgRow) -> Result<Option<Message>> {
    let Some(mut message) = stored_message(row)? else {
        return Ok(None);
    };
    let index = count(get(row, "sibling_index")?, "sibling_index")?;
    let ids = |column: &str| -> Result<Vec<MessageId>> {
        let ids: Option<Vec<Uuid>> = get(row, column)?;
        Ok(ids
            .unwrap_or_default()
            .into_iter()
            .map(MessageId::from_uuid)
            .collect())
    };
    let before = ids("before_ids")?;
    let after = ids("after_ids")?;
    let count = match get::<Option<i64>>(row, "last_index")? {
        Some(last) => count(last, "sibling_index")? + 1,
        None => index + 1 + after.len() as u64,
    };
    let mut window = Vec::with_capacity(before.len() + 1 + after.len());
    window.extend(before.into_iter().rev());
    window.push(message.id);
    window.extend(after);
    message.siblings = Siblings {
        ids: window,
        count,
        index,
    };
    Ok(Some(message))
}
