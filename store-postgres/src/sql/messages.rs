//! The statements of message reads, each message with its siblings.

use std::sync::Arc;

use conversation_core::SIBLING_WINDOW;

/// Columns of a message read through the alias `m`; [`siblings`] follow them.
const MESSAGE_COLUMNS: &str = "m.id, m.conversation_id, m.seq, m.parent_id, m.sibling_index, m.role, m.content, m.tool_calls, m.tool_call_id, m.metadata, m.created_at";

/// [`MESSAGE_COLUMNS`] and the [`siblings`] columns.
fn columns(s: &str) -> String {
    format!("{MESSAGE_COLUMNS}, {}", siblings(s))
}

/// `CASE` over the two index reads of a message `m`'s siblings: its roots' through
/// `messages_roots`, its parent's children through `messages_by_parent`. `read` gets
/// the condition that picks the siblings among the rows `s`.
fn by_parent(read: impl Fn(&str) -> String) -> String {
    format!(
        "CASE WHEN m.parent_id IS NULL THEN {} ELSE {} END",
        read("s.parent_id IS NULL"),
        read("s.parent_id = m.parent_id")
    )
}

/// The columns of the siblings of the message `m`: three `CASE`s over its own row,
/// each reading an index only when that side has siblings.
fn siblings(s: &str) -> String {
    let w = SIBLING_WINDOW;
    let ids = |direction: &'static str, order: &'static str| {
        move |same: &str| {
            format!(
                "ARRAY(SELECT s.id FROM {s}.messages s WHERE s.conversation_id = m.conversation_id \
                 AND {same} AND s.seq {direction} m.seq ORDER BY s.seq {order} LIMIT {w})"
            )
        }
    };
    let last = |same: &str| {
        format!(
            "(SELECT s.sibling_index FROM {s}.messages s WHERE s.conversation_id = m.conversation_id \
             AND {same} ORDER BY s.seq DESC LIMIT 1)"
        )
    };
    format!(
        "CASE WHEN m.sibling_index = 0 THEN NULL ELSE {before} END AS before_ids, \
         CASE WHEN m.last_sibling THEN NULL ELSE {after} END AS after_ids, \
         CASE WHEN m.last_sibling THEN NULL ELSE {last} END AS last_index",
        before = by_parent(ids("<", "DESC")),
        after = by_parent(ids(">", "ASC")),
        last = by_parent(last),
    )
}

/// A page: the conversation row, then (lateral) its messages in read order through
/// one index range, then each one's siblings. The nested loops keep the messages'
/// order, so no outer ORDER BY (and no sort) is needed.
pub(super) fn page(s: &str, filter: &str, order: &str) -> Arc<str> {
    let m = columns(s);
    format!(
        "SELECT {m} FROM {s}.conversations c \
         LEFT JOIN LATERAL (SELECT * FROM {s}.messages \
           WHERE conversation_id = c.id{filter} AND seq > $3 AND seq < $4 \
           ORDER BY seq {order} LIMIT $5) m ON true \
         WHERE c.id = $1 AND c.scope = $2"
    )
    .into()
}

pub(super) fn window_from(s: &str) -> Arc<str> {
    let m = columns(s);
    format!(
        "WITH RECURSIVE up AS ( \
           SELECT *, 1 AS k FROM {s}.messages WHERE conversation_id = $1 AND id = $3 \
           UNION ALL SELECT m.*, up.k + 1 FROM up JOIN {s}.messages m \
             ON m.conversation_id = $1 AND m.id = up.parent_id WHERE up.k < $4) \
         SELECT {m}, m.k FROM {s}.conversations c \
         LEFT JOIN up m ON true \
         WHERE c.id = $1 AND c.scope = $2"
    )
    .into()
}

pub(super) fn get_message(s: &str) -> Arc<str> {
    let m = columns(s);
    format!(
        "SELECT {m} FROM {s}.conversations c \
         LEFT JOIN {s}.messages m ON m.conversation_id = c.id AND m.id = $3 \
         WHERE c.id = $1 AND c.scope = $2"
    )
    .into()
}

pub(super) fn messages_by_seq(s: &str) -> Arc<str> {
    let m = columns(s);
    format!(
        "SELECT {m} FROM {s}.messages m \
         WHERE m.conversation_id = $1 AND m.seq = ANY($2)"
    )
    .into()
}
