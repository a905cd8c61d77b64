//! The statements of the tree's writes: the look-ups an append makes, the append
//! itself, moving the path, the newest leaf, deleting a subtree, a fork. Each runs in
//! a transaction holding the conversation's row lock.

use std::sync::Arc;

use super::{CONVERSATION_COLUMNS, MESSAGE_INSERT_COLUMNS};

/// The subtree of message `$2` as `sub(seq, id)`, walked down `messages_by_parent`.
/// Statements reach its rows with `seq = ANY (ARRAY(…))`, a list of primary-key
/// probes: a join with it may be planned as a scan of the conversation.
fn subtree(s: &str) -> String {
    format!(
        "sub AS (SELECT seq, id FROM {s}.messages WHERE conversation_id = $1 AND id = $2 \
         UNION ALL SELECT m.seq, m.id FROM sub JOIN {s}.messages m \
           ON m.conversation_id = $1 AND m.parent_id = sub.id)"
    )
}

pub(super) fn stored_messages(s: &str) -> Arc<str> {
    format!(
        "SELECT id, conversation_id, seq, parent_id, role, content, tool_calls, \
         tool_call_id, metadata, created_at \
         FROM {s}.messages WHERE conversation_id = $1 AND id = ANY($2)"
    )
    .into()
}

pub(super) fn resolve(s: &str) -> Arc<str> {
    format!(
        "SELECT m.seq, m.parent_id, m.depth, m.on_path, \
           coalesce(k.sibling_index + 1, 0) AS children, k.seq AS last_child \
         FROM {s}.messages m \
         LEFT JOIN LATERAL (SELECT sibling_index, seq FROM {s}.messages \
           WHERE conversation_id = m.conversation_id AND parent_id = m.id \
           ORDER BY seq DESC LIMIT 1) k ON true \
         WHERE m.conversation_id = $1 AND m.id = $2"
    )
    .into()
}

pub(super) fn roots(s: &str) -> Arc<str> {
    format!(
        "SELECT sibling_index + 1 AS children, seq AS last_child FROM {s}.messages \
         WHERE conversation_id = $1 AND parent_id IS NULL ORDER BY seq DESC LIMIT 1"
    )
    .into()
}

pub(super) fn append(s: &str) -> Arc<str> {
    format!(
        "WITH inserted AS ( \
           INSERT INTO {s}.messages ({MESSAGE_INSERT_COLUMNS}) \
           SELECT $1, n.seq, n.id, n.parent_id, n.depth, n.sibling_index, true, true, \
                  n.role, n.content, n.tool_calls, n.tool_call_id, n.metadata, n.created_at, \
                  n.words::tsvector \
           FROM UNNEST($2::bigint[], $3::uuid[], $4::uuid[], $5::bigint[], $6::bigint[], \
                       $7::text[], $8::text[], $9::jsonb[], $10::text[], $11::jsonb[], \
                       $12::timestamptz[], $23::text[]) \
             AS n(seq, id, parent_id, depth, sibling_index, role, content, tool_calls, \
                  tool_call_id, metadata, created_at, words) \
         ), \
         demoted AS (UPDATE {s}.messages SET last_sibling = false \
           WHERE conversation_id = $1 AND seq = $20) \
         UPDATE {s}.conversations SET updated_at = $13, message_count = $14, \
           last_seq = $15, head_id = $16, version = $17, title = $18, title_source = $19, \
           head_seq = $21, head_depth = $22, title_words = $24::tsvector \
         WHERE id = $1"
    )
    .into()
}

pub(super) fn move_path(s: &str) -> Arc<str> {
    format!(
        "WITH RECURSIVE up AS ( \
           SELECT seq, parent_id, on_path FROM {s}.messages \
           WHERE conversation_id = $1 AND seq = $2 \
           UNION ALL SELECT m.seq, m.parent_id, m.on_path FROM up JOIN {s}.messages m \
             ON m.conversation_id = $1 AND m.id = up.parent_id WHERE NOT up.on_path), \
         joint AS (SELECT coalesce(max(seq) FILTER (WHERE on_path), 0) AS seq FROM up), \
         leaving AS (UPDATE {s}.messages SET on_path = false \
           WHERE conversation_id = $1 AND on_path AND seq > (SELECT seq FROM joint) \
           RETURNING 1), \
         joining AS (UPDATE {s}.messages SET on_path = true \
           WHERE conversation_id = $1 \
             AND seq = ANY (ARRAY(SELECT seq FROM up WHERE NOT on_path)) \
           RETURNING 1) \
         SELECT (SELECT count(*) FROM leaving) + (SELECT count(*) FROM joining)"
    )
    .into()
}

pub(super) fn newest_under(s: &str) -> Arc<str> {
    format!(
        "WITH RECURSIVE down AS ( \
           SELECT seq, id FROM {s}.messages WHERE conversation_id = $1 AND id = $2 \
           UNION ALL SELECT m.seq, m.id FROM down JOIN {s}.messages m \
             ON m.conversation_id = $1 AND m.parent_id = down.id \
           WHERE $3::uuid IS NULL OR m.id <> $3) \
         SELECT id, seq, depth FROM {s}.messages \
         WHERE conversation_id = $1 AND seq = (SELECT max(seq) FROM down)"
    )
    .into()
}

pub(super) fn newest_outside(s: &str) -> Arc<str> {
    format!(
        "WITH RECURSIVE {sub} \
         SELECT id, seq, depth FROM {s}.messages \
         WHERE conversation_id = $1 AND seq NOT IN (SELECT seq FROM sub) \
         ORDER BY seq DESC LIMIT 1",
        sub = subtree(s)
    )
    .into()
}

pub(super) fn fork(s: &str) -> Arc<str> {
    let c = CONVERSATION_COLUMNS;
    format!(
        "WITH RECURSIVE up AS ( \
           SELECT * FROM {s}.messages WHERE conversation_id = $1 AND seq = $2 \
           UNION ALL SELECT m.* FROM up JOIN {s}.messages m \
             ON m.conversation_id = $1 AND m.id = up.parent_id), \
         fork AS (INSERT INTO {s}.conversations ({c}, title_words, head_seq, head_depth) \
           VALUES ($3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
                   $19, $20, $21::tsvector, $10, $10)) \
         INSERT INTO {s}.messages ({MESSAGE_INSERT_COLUMNS}) \
         SELECT $3, depth, id, parent_id, depth, 0, true, true, role, content, tool_calls, \
                tool_call_id, metadata, created_at, words FROM up"
    )
    .into()
}

pub(super) fn delete_subtree(s: &str, same_parent: &str) -> Arc<str> {
    format!(
        "WITH RECURSIVE {sub}, \
         gone AS (DELETE FROM {s}.messages \
           WHERE conversation_id = $1 AND seq = ANY (ARRAY(SELECT seq FROM sub)) \
           RETURNING 1), \
         shifted AS (UPDATE {s}.messages SET sibling_index = sibling_index - 1 \
           WHERE conversation_id = $1 AND {same_parent} AND seq > $4 RETURNING 1), \
         relast AS (UPDATE {s}.messages SET last_sibling = true \
           WHERE conversation_id = $1 AND seq = (SELECT seq FROM {s}.messages \
               WHERE conversation_id = $1 AND {same_parent} AND seq < $4 \
               ORDER BY seq DESC LIMIT 1) \
             AND NOT EXISTS (SELECT 1 FROM {s}.messages \
               WHERE conversation_id = $1 AND {same_parent} AND seq > $4)) \
         UPDATE {s}.conversations SET message_count = message_count - (SELECT count(*) FROM gone), \
           head_id = $5, version = $6, updated_at = $7, head_seq = $8, head_depth = $9 \
         WHERE id = $1 RETURNING message_count",
        sub = subtree(s)
    )
    .into()
}
