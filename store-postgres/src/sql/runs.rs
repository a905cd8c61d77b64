//! The statements of runs.

use std::sync::Arc;

use super::RUN_COLUMNS;

pub(super) fn run(s: &str) -> Arc<str> {
    format!("SELECT {RUN_COLUMNS} FROM {s}.runs WHERE conversation_id = $1 AND id = $2").into()
}

pub(super) fn scoped_run(s: &str) -> Arc<str> {
    format!(
        "SELECT r.* FROM {s}.conversations c \
         LEFT JOIN {s}.runs r ON r.conversation_id = c.id AND r.id = $3 \
         WHERE c.id = $1 AND c.scope = $2"
    )
    .into()
}

pub(super) fn upsert_run(s: &str) -> Arc<str> {
    format!(
        "INSERT INTO {s}.runs ({RUN_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (conversation_id, id) DO UPDATE SET status = excluded.status, \
           started_at = excluded.started_at, finished_at = excluded.finished_at, \
           lease_until = excluded.lease_until, \
           cancel_requested = excluded.cancel_requested, steps = excluded.steps, \
           prompt_tokens = excluded.prompt_tokens, \
           completion_tokens = excluded.completion_tokens, \
           total_tokens = excluded.total_tokens, error = excluded.error, \
           pending_tool_calls = excluded.pending_tool_calls"
    )
    .into()
}

pub(super) fn set_run_columns(s: &str) -> Arc<str> {
    format!(
        "UPDATE {s}.conversations SET active_run_id = $2, prompt_tokens = $3, \
         completion_tokens = $4, total_tokens = $5 WHERE id = $1"
    )
    .into()
}
