//! Rows as SQLite returns them, decoded by the column positions named in
//! [`crate::sql`], and the encodings the store writes.

use chrono::{DateTime, Utc};
use conversation_core::{
    Conversation, ConversationId, Message, MessageId, Metadata, Result, Role, Run, RunFailure,
    RunId, RunStatus, Scope, Siblings, TitleSource, ToolCall, Usage,
};
use rusqlite::Row;
use rusqlite::types::ValueRef;
use uuid::Uuid;

use crate::error::bad_row;
use crate::sql::{conversation_column as cc, message_column as mc, run_column as rc};

/// A conversation as the writer keeps it: the model, plus the seq of its head, the
/// length of its active path and its keys in the search index, which the model does
/// not carry.
#[derive(Debug, Clone)]
pub(crate) struct StoredConversation {
    pub(crate) conversation: Conversation,
    pub(crate) head_seq: u64,
    pub(crate) path_len: u64,
    /// Its rows in the search index are `search_key << 32 | seq`.
    pub(crate) search_key: i64,
    /// The key of its scope in the search index.
    pub(crate) scope_key: i64,
}

impl StoredConversation {
    /// Reads a row of [`crate::sql::GET_CONVERSATION`] or a list page. The scope is not
    /// read back: every query is keyed by it, so the caller's scope is it.
    pub(crate) fn read(row: &Row<'_>, scope: &Scope) -> Result<Self> {
        let title_source: String = get(row, cc::TITLE_SOURCE)?;
        let conversation = Conversation {
            id: ConversationId::from_uuid(uuid_at(row, cc::ID)?),
            scope: scope.clone(),
            title: get(row, cc::TITLE)?,
            title_source: TitleSource::parse(&title_source)
                .ok_or_else(|| bad_row(format!("title source {title_source:?}")))?,
            created_at: time_at(row, cc::CREATED_AT)?,
            updated_at: time_at(row, cc::UPDATED_AT)?,
            message_count: count_at(row, cc::MESSAGE_COUNT)?,
            last_seq: count_at(row, cc::LAST_SEQ)?,
            head_id: optional_uuid_at(row, cc::HEAD_ID)?.map(MessageId::from_uuid),
            pinned: get(row, cc::PINNED)?,
            archived: get(row, cc::ARCHIVED)?,
            metadata: metadata_at(row, cc::METADATA)?,
            version: count_at(row, cc::VERSION)?,
            archived_at: optional_time_at(row, cc::ARCHIVED_AT)?,
            active_run_id: optional_uuid_at(row, cc::ACTIVE_RUN_ID)?.map(RunId::from_uuid),
            usage: Usage {
                prompt_tokens: count_at(row, cc::PROMPT_TOKENS)?,
                completion_tokens: count_at(row, cc::COMPLETION_TOKENS)?,
                total_tokens: count_at(row, cc::TOTAL_TOKENS)?,
            },
        };
        Ok(Self {
            conversation,
            head_seq: count_at(row, cc::HEAD_SEQ)?,
            path_len: count_at(row, cc::PATH_LEN)?,
            search_key: get(row, cc::SEARCH_KEY)?,
            scope_key: get(row, cc::SCOPE_KEY)?,
        })
    }
}

/// Reads a row of [`crate::sql::GET_RUN`], of a run of `conversation_id`.
pub(crate) fn run_at(row: &Row<'_>, conversation_id: ConversationId) -> Result<Run> {
    let status: String = get(row, rc::STATUS)?;
    let error: Option<String> = get(row, rc::ERROR)?;
    let error: Option<RunFailure> = match error {
        Some(text) => {
            Some(serde_json::from_str(&text).map_err(|e| bad_row(format!("run error: {e}")))?)
        }
        None => None,
    };
    let pending_tool_calls: Vec<ToolCall> =
        match row.get_ref(rc::PENDING_TOOL_CALLS).map_err(column)? {
            ValueRef::Null => Vec::new(),
            value => serde_json::from_slice(value.as_bytes().map_err(bad_row)?)
                .map_err(|e| bad_row(format!("pending tool calls: {e}")))?,
        };
    Ok(Run {
        id: RunId::from_uuid(uuid_at(row, rc::ID)?),
        conversation_id,
        status: RunStatus::parse(&status)
            .ok_or_else(|| bad_row(format!("run status {status:?}")))?,
        started_at: time_at(row, rc::STARTED_AT)?,
        finished_at: optional_time_at(row, rc::FINISHED_AT)?,
        lease_until: time_at(row, rc::LEASE_UNTIL)?,
        cancel_requested: get(row, rc::CANCEL_REQUESTED)?,
        steps: u32::try_from(count_at(row, rc::STEPS)?)
            .map_err(|_| bad_row("run steps out of range"))?,
        usage: Usage {
            prompt_tokens: count_at(row, rc::PROMPT_TOKENS)?,
            completion_tokens: count_at(row, rc::COMPLETION_TOKENS)?,
            total_tokens: count_at(row, rc::TOTAL_TOKENS)?,
        },
        error,
        pending_tool_calls,
    })
}

/// A message as read, with what the model does not carry: its parent's seq and how
/// many siblings it has. [`MessageRow::message`] has [`Siblings::only`] until the
/// store fills in the window.
#[derive(Debug, Clone)]
pub(crate) struct MessageRow {
    pub(crate) message: Message,
    pub(crate) parent_seq: u64,
    pub(crate) siblings: u64,
}

impl MessageRow {
    /// Reads the message columns of any message statement of [`crate::sql`].
    pub(crate) fn read(row: &Row<'_>, conversation_id: ConversationId) -> Result<Self> {
        let role: String = get(row, mc::ROLE)?;
        let tool_calls: Vec<ToolCall> = match row.get_ref(mc::TOOL_CALLS).map_err(column)? {
            ValueRef::Null => Vec::new(),
            value => serde_json::from_slice(value.as_bytes().map_err(bad_row)?)
                .map_err(|e| bad_row(format!("tool calls: {e}")))?,
        };
        let id = MessageId::from_uuid(uuid_at(row, mc::ID)?);
        let message = Message {
            id,
            conversation_id,
            seq: count_at(row, mc::SEQ)?,
            parent_id: optional_uuid_at(row, mc::PARENT_ID)?.map(MessageId::from_uuid),
            siblings: Siblings::only(id),
            role: Role::parse(&role).ok_or_else(|| bad_row(format!("role {role:?}")))?,
            content: get(row, mc::CONTENT)?,
            tool_calls,
            tool_call_id: get(row, mc::TOOL_CALL_ID)?,
            metadata: metadata_at(row, mc::METADATA)?,
            created_at: time_at(row, mc::CREATED_AT)?,
        };
        Ok(Self {
            message,
            parent_seq: count_at(row, mc::PARENT_SEQ)?,
            siblings: count_at(row, mc::SIBLINGS)?,
        })
    }
}

fn column(err: rusqlite::Error) -> conversation_core::Error {
    bad_row(err)
}

/// The value of column `index`.
pub(crate) fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, index: usize) -> Result<T> {
    row.get(index).map_err(column)
}

/// A non-negative integer column (a seq, a count, a version).
pub(crate) fn count_at(row: &Row<'_>, index: usize) -> Result<u64> {
    let value: i64 = get(row, index)?;
    u64::try_from(value).map_err(|_| bad_row(format!("column {index} = {value}")))
}

pub(crate) fn uuid_at(row: &Row<'_>, index: usize) -> Result<Uuid> {
    optional_uuid_at(row, index)?.ok_or_else(|| bad_row(format!("column {index} is NULL")))
}

fn optional_uuid_at(row: &Row<'_>, index: usize) -> Result<Option<Uuid>> {
    match row.get_ref(index).map_err(column)? {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(bytes) => Uuid::from_slice(bytes)
            .map(Some)
            .map_err(|_| bad_row(format!("an id of {} bytes", bytes.len()))),
        other => Err(bad_row(format!("an id of type {:?}", other.data_type()))),
    }
}

fn optional_time_at(row: &Row<'_>, index: usize) -> Result<Option<DateTime<Utc>>> {
    let value: Option<i64> = get(row, index)?;
    value
        .map(|value| {
            DateTime::<Utc>::from_timestamp_millis(value)
                .ok_or_else(|| bad_row(format!("timestamp {value}")))
        })
        .transpose()
}

pub(crate) fn time_at(row: &Row<'_>, index: usize) -> Result<DateTime<Utc>> {
    let value: i64 = get(row, index)?;
    DateTime::<Utc>::from_timestamp_millis(value)
        .ok_or_else(|| bad_row(format!("timestamp {value}")))
}

fn metadata_at(row: &Row<'_>, index: usize) -> Result<Metadata> {
    let text = row
        .get_ref(index)
        .map_err(column)?
        .as_bytes()
        .map_err(bad_row)?;
    if text == b"{}" {
        return Ok(Metadata::new());
    }
    serde_json::from_slice(text).map_err(|e| bad_row(format!("metadata: {e}")))
}

/// A seq, count or version as SQLite stores it (a signed 64-bit integer).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A timestamp as stored: milliseconds since the epoch.
pub(crate) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// Metadata as stored: a JSON object.
pub(crate) fn metadata_to_text(metadata: &Metadata) -> Result<String> {
    serde_json::to_string(metadata).map_err(|e| bad_row(format!("metadata: {e}")))
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

/// A JSON value as stored (`NULL` for none).
pub(crate) fn json_to_text<T: serde::Serialize>(value: Option<&T>) -> Result<Option<String>> {
    value
        .map(|value| serde_json::to_string(value).map_err(|e| bad_row(format!("json: {e}"))))
        .transpose()
}

/// A top-level metadata value as the metadata filter indexes and compares it: its
/// kind (`s` string, `n` number, `b` boolean) and its SQLite value; `None` for what
/// the filter does not take (null, arrays, objects). Numbers compare by value (an
/// integer stored as INTEGER equals the same number stored as REAL); integers beyond
/// `i64` are kept as REAL.
pub(crate) fn metadata_value(
    value: &serde_json::Value,
) -> Option<(&'static str, rusqlite::types::Value)> {
    use rusqlite::types::Value;
    match value {
        serde_json::Value::String(text) => Some(("s", Value::Text(text.clone()))),
        serde_json::Value::Bool(flag) => Some(("b", Value::Integer(i64::from(*flag)))),
        serde_json::Value::Number(number) => Some((
            "n",
            match number.as_i64() {
                Some(integer) => Value::Integer(integer),
                None => Value::Real(number.as_f64()?),
            },
        )),
        _ => None,
    }
}
