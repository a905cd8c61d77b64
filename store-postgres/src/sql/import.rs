//! The statements of an import.

use std::sync::Arc;

use super::MESSAGE_INSERT_COLUMNS;

pub(super) fn import_messages(s: &str) -> Arc<str> {
    format!(
        "INSERT INTO {s}.messages ({MESSAGE_INSERT_COLUMNS}) \
         SELECT $1, n.seq, n.id, n.parent_id, n.depth, n.sibling_index, n.last_sibling, \
                n.on_path, n.role, n.content, n.tool_calls, n.tool_call_id, n.metadata, \
                n.created_at, n.words::tsvector \
         FROM UNNEST($2::bigint[], $3::uuid[], $4::uuid[], $5::bigint[], $6::bigint[], \
                     $7::boolean[], $8::boolean[], $9::text[], $10::text[], $11::jsonb[], \
                     $12::text[], $13::jsonb[], $14::timestamptz[], $15::text[]) \
           AS n(seq, id, parent_id, depth, sibling_index, last_sibling, on_path, role, \
                content, tool_calls, tool_call_id, metadata, created_at, words)"
    )
    .into()
}

pub(super) fn import_head(s: &str) -> Arc<str> {
    format!(
        "UPDATE {s}.conversations SET message_count = $2, head_id = $3, head_seq = $4, \
         head_depth = $5 WHERE id = $1"
    )
    .into()
}
