//! The SQL text of the store's reads, public (but hidden from the docs) so that the
//! benchmark's raw-SQLite baseline and the query-plan test run exactly the statements
//! the store runs. Not a stable API.
//!
//! Parameters are numbered: `?1` is always the conversation id or the scope, as each
//! statement says.

use conversation_core::ArchivedFilter;

macro_rules! conversation_columns {
    () => {
        "id, title, title_source, created_at, updated_at, message_count, pinned, archived, metadata, version"
    };
}

macro_rules! message_columns {
    () => {
        "id, seq, role, content, tool_calls, tool_call_id, metadata, created_at"
    };
}

/// One conversation: `?1` id, `?2` scope.
pub const GET_CONVERSATION: &str = concat!(
    "SELECT ",
    conversation_columns!(),
    " FROM conversations WHERE id = ?1 AND scope = ?2"
);

/// Whether a conversation exists in a scope: `?1` id, `?2` scope.
pub const CONVERSATION_EXISTS: &str = "SELECT 1 FROM conversations WHERE id = ?1 AND scope = ?2";

macro_rules! joined_message_columns {
    () => {
        "m.id, m.seq, m.role, m.content, m.tool_calls, m.tool_call_id, m.metadata, m.created_at"
    };
}

// The message reads check the conversation's scope in the same statement: `CROSS
// JOIN` makes the conversation (one row by its primary key) the outer loop, so it is
// looked up once, and the messages are one range of their primary key, already in
// order.

/// The newest messages, newest first: `?1` conversation id, `?2` scope, `?3` how many.
/// Returns no row for a conversation that is not in the scope.
pub const RECENT_MESSAGES: &str = concat!(
    "SELECT ",
    joined_message_columns!(),
    " FROM conversations AS c CROSS JOIN messages AS m",
    " WHERE c.id = ?1 AND c.scope = ?2 AND m.conversation_id = ?1",
    " ORDER BY m.seq DESC LIMIT ?3"
);

/// Messages with `?3 < seq < ?4`, newest first: `?1` conversation id, `?2` scope,
/// `?5` how many.
pub const MESSAGES_NEWEST_FIRST: &str = concat!(
    "SELECT ",
    joined_message_columns!(),
    " FROM conversations AS c CROSS JOIN messages AS m",
    " WHERE c.id = ?1 AND c.scope = ?2 AND m.conversation_id = ?1 AND m.seq > ?3 AND m.seq < ?4",
    " ORDER BY m.seq DESC LIMIT ?5"
);

/// Messages with `?3 < seq < ?4`, oldest first: `?1` conversation id, `?2` scope,
/// `?5` how many.
pub const MESSAGES_OLDEST_FIRST: &str = concat!(
    "SELECT ",
    joined_message_columns!(),
    " FROM conversations AS c CROSS JOIN messages AS m",
    " WHERE c.id = ?1 AND c.scope = ?2 AND m.conversation_id = ?1 AND m.seq > ?3 AND m.seq < ?4",
    " ORDER BY m.seq ASC LIMIT ?5"
);

/// A stored message by its id: `?1` conversation id, `?2` message id.
pub const MESSAGE_BY_ID: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_id = ?1 AND id = ?2"
);

/// One page of a list, in list order.
///
/// Parameters: `?1` scope, `?2` the cursor's `pinned`, `?3` its `updated_at`, `?4` its
/// id (used when `after_cursor`), `?5` the lowercased title needle (used when
/// `title_filter`), `?6` how many rows. Each archive state is read from its own
/// index range; [`ArchivedFilter::Include`] merges the two ranges, each read lazily
/// in index order, so no statement ever sorts or scans the scope.
pub fn list_conversations(
    archived: ArchivedFilter,
    pinned_first: bool,
    after_cursor: bool,
    title_filter: bool,
) -> String {
    let order = if pinned_first {
        "pinned DESC, updated_at DESC, id DESC"
    } else {
        "updated_at DESC, id DESC"
    };
    let arm = |archived: u8, ordered: bool| {
        let index = if pinned_first {
            "conversations_by_pin"
        } else {
            "conversations_by_activity"
        };
        let mut sql = format!(
            concat!(
                "SELECT ",
                conversation_columns!(),
                " FROM conversations INDEXED BY {} WHERE scope = ?1 AND archived = {}"
            ),
            index, archived
        );
        if after_cursor {
            sql.push_str(if pinned_first {
                " AND (pinned, updated_at, id) < (?2, ?3, ?4)"
            } else {
                " AND (updated_at, id) < (?3, ?4)"
            });
        }
        if title_filter {
            sql.push_str(" AND instr(lower(title), ?5) > 0");
        }
        if ordered {
            sql.push_str(" ORDER BY ");
            sql.push_str(order);
            sql.push_str(" LIMIT ?6");
        }
        sql
    };
    match archived {
        ArchivedFilter::Exclude => arm(0, true),
        ArchivedFilter::Only => arm(1, true),
        // A compound ORDER BY merges its arms, each read lazily in index order.
        ArchivedFilter::Include => format!(
            "{} UNION ALL {} ORDER BY {order} LIMIT ?6",
            arm(0, false),
            arm(1, false)
        ),
    }
}
