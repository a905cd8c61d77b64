//! The SQL text of the store's reads, public (but hidden from the docs) so that the
//! benchmark's raw-SQLite baseline and the query-plan test run exactly the statements
//! the store runs. Not a stable API.
//!
//! Parameters are numbered: `?1` is always the conversation id or the scope, as each
//! statement says. A lookup by id writes its scope test as `+scope`, which keeps the
//! planner from reading the scope's index instead of the unique id: with statistics
//! of a real database it may otherwise think that cheaper, and then sort.
//!
//! A page's `LIMIT` is written into the text, not bound: SQLite re-prepares a
//! statement on every run in which a bound `LIMIT` changes (the limit feeds its
//! planner), which doubled the cost of a 20-message window (41 µs against 20 µs in
//! the raw baseline of `benches/`). Page sizes are few (the window, the page sizes a
//! host uses, each at most 1,000), so the texts stay in sqlx's statement cache.

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
    " FROM conversations WHERE id = ?1 AND +scope = ?2"
);

/// Whether a conversation exists in a scope: `?1` id, `?2` scope.
pub const CONVERSATION_EXISTS: &str = "SELECT 1 FROM conversations WHERE id = ?1 AND +scope = ?2";

macro_rules! joined_message_columns {
    () => {
        "m.id, m.seq, m.role, m.content, m.tool_calls, m.tool_call_id, m.metadata, m.created_at"
    };
}

/// Wraps a page of messages into one row holding a JSON array of `[hex(id), seq, role,
/// content, tool_calls, tool_call_id, metadata, created_at]` arrays.
fn message_page(rows: &str) -> String {
    format!(
        "SELECT json_group_array(json_array(hex(id), seq, role, content, tool_calls, \
         tool_call_id, metadata, created_at)) FROM ({rows}) AS page"
    )
}

// Pages (a window, a page of messages, a page of the list) come back as ONE row
// holding a JSON array: sqlx hands every row from its connection thread to the caller
// separately, which costs more per row than SQLite's own work, so one row per page
// halves the time of a page read. The `*_ROWS` statements are the same pages as plain
// rows.
//
// The message reads check the conversation's scope in the same statement: `CROSS
// JOIN` makes the conversation (one row by its primary key) the outer loop, so it is
// looked up once, and the messages are one range of their primary key, already in
// order.

/// The newest `limit` messages as rows, newest first: `?1` conversation id, `?2`
/// scope. No row for a conversation that is not in the scope.
pub fn recent_messages_rows(limit: usize) -> String {
    format!(
        concat!(
            "SELECT ",
            joined_message_columns!(),
            " FROM conversations AS c CROSS JOIN messages AS m",
            " WHERE c.id = ?1 AND +c.scope = ?2 AND m.conversation_id = ?1",
            " ORDER BY m.seq DESC LIMIT {}"
        ),
        limit
    )
}

/// [`recent_messages_rows`] as one JSON row (`[]` when there is none).
pub fn recent_messages(limit: usize) -> String {
    message_page(&recent_messages_rows(limit))
}

/// At most `limit` messages with `?3 < seq < ?4` as rows, newest first when
/// `newest_first`, else oldest first: `?1` conversation id, `?2` scope.
pub fn messages_rows(newest_first: bool, limit: usize) -> String {
    format!(
        concat!(
            "SELECT ",
            joined_message_columns!(),
            " FROM conversations AS c CROSS JOIN messages AS m",
            " WHERE c.id = ?1 AND +c.scope = ?2 AND m.conversation_id = ?1",
            " AND m.seq > ?3 AND m.seq < ?4",
            " ORDER BY m.seq {} LIMIT {}"
        ),
        if newest_first { "DESC" } else { "ASC" },
        limit
    )
}

/// [`messages_rows`] as one JSON row.
pub fn messages(newest_first: bool, limit: usize) -> String {
    message_page(&messages_rows(newest_first, limit))
}

/// A stored message by its id: `?1` conversation id, `?2` message id.
pub const MESSAGE_BY_ID: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_id = ?1 AND id = ?2"
);

/// One page of a list as one JSON row: an array of `[hex(id), title, title_source,
/// created_at, updated_at, message_count, pinned, archived, metadata, version]`
/// arrays. Parameters as [`list_conversations_rows`].
pub fn list_conversations(
    archived: ArchivedFilter,
    pinned_first: bool,
    after_cursor: bool,
    title_filter: bool,
    limit: usize,
) -> String {
    format!(
        "SELECT json_group_array(json_array(hex(id), title, title_source, created_at, \
         updated_at, message_count, pinned, archived, metadata, version)) FROM ({}) AS page",
        list_conversations_rows(archived, pinned_first, after_cursor, title_filter, limit)
    )
}

/// At most `limit` rows of a list, in list order.
///
/// Parameters: `?1` scope, `?2` the cursor's `pinned`, `?3` its `updated_at`, `?4` its
/// id (used when `after_cursor`), `?5` the lowercased title needle (used when
/// `title_filter`). Each archive state is read from its own index range;
/// [`ArchivedFilter::Include`] merges the two ranges, each read lazily in index
/// order, so no statement ever sorts or scans the scope.
pub fn list_conversations_rows(
    archived: ArchivedFilter,
    pinned_first: bool,
    after_cursor: bool,
    title_filter: bool,
    limit: usize,
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
            sql.push_str(&format!(" ORDER BY {order} LIMIT {limit}"));
        }
        sql
    };
    match archived {
        ArchivedFilter::Exclude => arm(0, true),
        ArchivedFilter::Only => arm(1, true),
        // A compound ORDER BY merges its arms, each read lazily in index order.
        ArchivedFilter::Include => format!(
            "{} UNION ALL {} ORDER BY {order} LIMIT {limit}",
            arm(0, false),
            arm(1, false)
        ),
    }
}
