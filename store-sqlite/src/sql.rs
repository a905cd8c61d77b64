//! The SQL text of the store, public (but hidden from the docs) so that the benchmark's
//! raw-SQLite baseline and the query-plan tests run exactly the statements the store
//! runs. Not a stable API.
//!
//! Parameters are numbered, and each statement says what they are. A lookup of a
//! conversation by id writes its scope test as `+scope`, which keeps the planner from
//! reading the scope's index instead of the unique id: with statistics of a real
//! database it may otherwise think that cheaper, and then sort.
//!
//! A page's `LIMIT` is written into the text, not bound: SQLite re-plans a statement
//! whose bound `LIMIT` changes, which doubled the cost of a 20-message window. Page
//! sizes are few (the window, the page sizes a host uses), so the texts stay in each
//! connection's statement cache.
//!
//! The columns of a row are listed once, here, beside the position of each
//! ([`conversation_column`], [`message_column`]); rows are decoded through those
//! names, and a test checks every statement's columns against them.

use conversation_core::ArchivedFilter;

macro_rules! conversation_columns {
    () => {
        "id, title, title_source, created_at, updated_at, message_count, last_seq, head_seq, \
         head_id, path_len, pinned, archived, metadata, version, archived_at, active_run_id, \
         prompt_tokens, completion_tokens, total_tokens, search_key, scope_key"
    };
}

/// The position of each column of a conversation row, in the order of every statement
/// that reads one (`GET_CONVERSATION`, the list pages).
pub mod conversation_column {
    #![allow(missing_docs)]
    pub const ID: usize = 0;
    pub const TITLE: usize = 1;
    pub const TITLE_SOURCE: usize = 2;
    pub const CREATED_AT: usize = 3;
    pub const UPDATED_AT: usize = 4;
    pub const MESSAGE_COUNT: usize = 5;
    pub const LAST_SEQ: usize = 6;
    pub const HEAD_SEQ: usize = 7;
    pub const HEAD_ID: usize = 8;
    pub const PATH_LEN: usize = 9;
    pub const PINNED: usize = 10;
    pub const ARCHIVED: usize = 11;
    pub const METADATA: usize = 12;
    pub const VERSION: usize = 13;
    pub const ARCHIVED_AT: usize = 14;
    pub const ACTIVE_RUN_ID: usize = 15;
    pub const PROMPT_TOKENS: usize = 16;
    pub const COMPLETION_TOKENS: usize = 17;
    pub const TOTAL_TOKENS: usize = 18;
    pub const SEARCH_KEY: usize = 19;
    pub const SCOPE_KEY: usize = 20;
    /// The names, in order.
    pub const NAMES: [&str; 21] = [
        "id",
        "title",
        "title_source",
        "created_at",
        "updated_at",
        "message_count",
        "last_seq",
        "head_seq",
        "head_id",
        "path_len",
        "pinned",
        "archived",
        "metadata",
        "version",
        "archived_at",
        "active_run_id",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "search_key",
        "scope_key",
    ];
}

/// The position of each column of a message row, in the order of every statement that
/// reads messages. `siblings` is how many messages share the message's parent (itself
/// included).
pub mod message_column {
    #![allow(missing_docs)]
    pub const ID: usize = 0;
    pub const SEQ: usize = 1;
    pub const PARENT_SEQ: usize = 2;
    pub const PARENT_ID: usize = 3;
    pub const ROLE: usize = 4;
    pub const CONTENT: usize = 5;
    pub const TOOL_CALLS: usize = 6;
    pub const TOOL_CALL_ID: usize = 7;
    pub const METADATA: usize = 8;
    pub const CREATED_AT: usize = 9;
    pub const SIBLINGS: usize = 10;
    /// The names, in order.
    pub const NAMES: [&str; 11] = [
        "id",
        "seq",
        "parent_seq",
        "parent_id",
        "role",
        "content",
        "tool_calls",
        "tool_call_id",
        "metadata",
        "created_at",
        "siblings",
    ];
}

/// The message columns but `seq` and `siblings`, each statement adding those two.
macro_rules! message_columns_of_m {
    () => {
        "m.parent_seq, m.parent_id, m.role, m.content, m.tool_calls, m.tool_call_id, \
         m.metadata, m.created_at"
    };
}

/// How many messages share `m`'s parent: a count over the `messages_by_parent` index.
macro_rules! sibling_count_of_m {
    () => {
        "(SELECT count(*) FROM messages AS s \
          WHERE s.conversation_id = m.conversation_id AND s.parent_seq = m.parent_seq)"
    };
}

/// One conversation: `?1` id, `?2` scope.
pub const GET_CONVERSATION: &str = concat!(
    "SELECT ",
    conversation_columns!(),
    " FROM conversations WHERE id = ?1 AND +scope = ?2"
);

/// The scope of a conversation, in any scope: `?1` id. Only import reads it, to tell
/// an id in the scope from an id taken by another scope.
pub const CONVERSATION_SCOPE: &str = "SELECT scope FROM conversations WHERE id = ?1";

/// Whether a conversation exists in a scope: `?1` id, `?2` scope.
pub const CONVERSATION_EXISTS: &str = "SELECT 1 FROM conversations WHERE id = ?1 AND +scope = ?2";

/// At most `limit` messages of the active path with `?3 < seq < ?4`, newest first when
/// `newest_first`, else oldest first: `?1` conversation id, `?2` scope. No row for a
/// conversation that is not in the scope.
///
/// Two arms, of which one returns rows. While every message of the conversation is on
/// its path (`path_len = message_count`: the tree is one chain, the common case), the
/// path is a range of the messages' own primary key and every message is its parent's
/// only child. Otherwise the range is read from `message_path` (the path's seqs, with
/// each one's sibling count) and each message is looked up by its primary key. `CROSS
/// JOIN` makes the conversation (one row by its primary key) the outer loop of each
/// arm, so the arm that does not apply stops after that one lookup; `UNION ALL` with
/// `ORDER BY` merges the arms, each already in order, without sorting.
pub fn path_messages(newest_first: bool, limit: usize) -> String {
    let order = if newest_first { "DESC" } else { "ASC" };
    format!(
        concat!(
            "SELECT m.id, m.seq, ",
            message_columns_of_m!(),
            ", 1 AS siblings",
            " FROM conversations AS c CROSS JOIN messages AS m",
            " WHERE c.id = ?1 AND +c.scope = ?2 AND c.path_len = c.message_count",
            " AND m.conversation_id = ?1 AND m.seq > ?3 AND m.seq < ?4",
            " UNION ALL",
            " SELECT m.id, p.seq, ",
            message_columns_of_m!(),
            ", p.siblings",
            " FROM conversations AS c CROSS JOIN message_path AS p CROSS JOIN messages AS m",
            " WHERE c.id = ?1 AND +c.scope = ?2 AND c.path_len <> c.message_count",
            " AND p.conversation_id = ?1 AND p.seq > ?3 AND p.seq < ?4",
            " AND m.conversation_id = ?1 AND m.seq = p.seq",
            " ORDER BY 2 {order} LIMIT {limit}"
        ),
        order = order,
        limit = limit
    )
}

/// At most `limit` messages of the whole tree with `?3 < seq < ?4`, in the order of
/// [`path_messages`]: `?1` conversation id, `?2` scope. A message's sibling count is
/// 1 in a conversation that is one chain, else counted.
pub fn all_messages(newest_first: bool, limit: usize) -> String {
    format!(
        concat!(
            "SELECT m.id, m.seq, ",
            message_columns_of_m!(),
            ", CASE WHEN c.path_len = c.message_count THEN 1 ELSE ",
            sibling_count_of_m!(),
            " END AS siblings FROM conversations AS c CROSS JOIN messages AS m",
            " WHERE c.id = ?1 AND +c.scope = ?2",
            " AND m.conversation_id = ?1 AND m.seq > ?3 AND m.seq < ?4",
            " ORDER BY m.seq {} LIMIT {}"
        ),
        if newest_first { "DESC" } else { "ASC" },
        limit
    )
}

/// One message by its id, with its sibling count and whether it is on the active path
/// (an eleventh column, `on_path`): `?1` conversation id, `?2` scope, `?3` message id.
pub const MESSAGE_BY_ID: &str = concat!(
    "SELECT m.id, m.seq, ",
    message_columns_of_m!(),
    ", ",
    sibling_count_of_m!(),
    " AS siblings, EXISTS (SELECT 1 FROM message_path AS p WHERE p.conversation_id = ?1 AND p.seq = m.seq)",
    " AS on_path",
    " FROM conversations AS c CROSS JOIN messages AS m",
    " WHERE c.id = ?1 AND +c.scope = ?2 AND m.conversation_id = ?1 AND m.id = ?3"
);

/// The seq of a message by its id (the writer's lookup of caller ids and parents,
/// inside a transaction that read the conversation already): `?1` conversation id,
/// `?2` message id. Covered by the `messages_by_id` index.
pub const MESSAGE_SEQ: &str = "SELECT seq FROM messages WHERE conversation_id = ?1 AND id = ?2";

/// One message by its seq, with its sibling count: `?1` conversation id, `?2` seq.
pub const MESSAGE_BY_SEQ: &str = concat!(
    "SELECT m.id, m.seq, ",
    message_columns_of_m!(),
    ", ",
    sibling_count_of_m!(),
    " AS siblings FROM messages AS m WHERE m.conversation_id = ?1 AND m.seq = ?2"
);

/// The path ending at a message that is not on the active path, leaf first, at most
/// `?3` messages: `?1` conversation id, `?2` the leaf's seq. One primary-key lookup
/// per message.
pub const ANCESTORS: &str = concat!(
    "WITH RECURSIVE up(seq, depth) AS (",
    " SELECT ?2, 1",
    " UNION ALL",
    " SELECT m.parent_seq, up.depth + 1 FROM up CROSS JOIN messages AS m",
    " ON m.conversation_id = ?1 AND m.seq = up.seq",
    " WHERE m.parent_seq > 0 AND up.depth < ?3)",
    " SELECT m.id, m.seq, ",
    message_columns_of_m!(),
    ", ",
    sibling_count_of_m!(),
    " AS siblings FROM up CROSS JOIN messages AS m WHERE m.conversation_id = ?1 AND m.seq = up.seq"
);

/// The siblings before a message, nearest first, at most one more than
/// [`SIBLING_WINDOW`](conversation_core::SIBLING_WINDOW): `?1` conversation id, `?2`
/// the parent's seq (0 for roots), `?3` the message's seq. Covered by
/// `messages_by_parent`.
pub const SIBLINGS_BEFORE: &str = "SELECT id FROM messages \
     WHERE conversation_id = ?1 AND parent_seq = ?2 AND seq < ?3 ORDER BY seq DESC LIMIT 51";

/// The siblings after a message, nearest first, at most
/// [`SIBLING_WINDOW`](conversation_core::SIBLING_WINDOW): parameters as
/// [`SIBLINGS_BEFORE`].
pub const SIBLINGS_AFTER: &str = "SELECT id FROM messages \
     WHERE conversation_id = ?1 AND parent_seq = ?2 AND seq > ?3 ORDER BY seq ASC LIMIT 50";

/// How many siblings come before a message (when more than the window): parameters
/// as [`SIBLINGS_BEFORE`].
pub const SIBLINGS_BEFORE_COUNT: &str = "SELECT count(*) FROM messages \
     WHERE conversation_id = ?1 AND parent_seq = ?2 AND seq < ?3";

/// At most `limit` rows of a list, in list order.
///
/// Parameters: `?1` scope, `?2` the cursor's `pinned`, `?3` its `updated_at`, `?4` its
/// id (used when `after_cursor`), `?5` the lowercased title needle (used when
/// `title_filter`). Each archive state is read from its own index range;
/// [`ArchivedFilter::Include`] merges the two ranges, each read lazily in index
/// order, so no statement ever sorts or scans the scope.
pub fn list_conversations(
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

// ---------------------------------------------------------------------------------
// The writer's statements, each run inside the writer's transaction.
// ---------------------------------------------------------------------------------

/// A new conversation, every column: `?1` id, `?2` scope, `?3` title, `?4`
/// title_source, `?5` created_at, `?6` updated_at, `?7` message_count, `?8` last_seq,
/// `?9` head_seq, `?10` head_id, `?11` path_len, `?12` pinned, `?13` archived, `?14`
/// metadata, `?15` version, `?16` archived_at, `?17` active_run_id, `?18`
/// prompt_tokens, `?19` completion_tokens, `?20` total_tokens, `?21` search_key,
/// `?22` scope_key.
pub const INSERT_CONVERSATION: &str = "INSERT INTO conversations (id, scope, title, \
     title_source, created_at, updated_at, message_count, last_seq, head_seq, head_id, \
     path_len, pinned, archived, metadata, version, archived_at, active_run_id, \
     prompt_tokens, completion_tokens, total_tokens, search_key, scope_key) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
     ?18, ?19, ?20, ?21, ?22)";

/// Every mutable column of a conversation: parameters as [`INSERT_CONVERSATION`]
/// without the scope and `created_at` (`?2` and `?5` unused; the search keys never
/// change).
pub const UPDATE_CONVERSATION: &str = "UPDATE conversations SET title = ?3, \
     title_source = ?4, updated_at = ?6, message_count = ?7, last_seq = ?8, head_seq = ?9, \
     head_id = ?10, path_len = ?11, pinned = ?12, archived = ?13, metadata = ?14, \
     version = ?15, archived_at = ?16, active_run_id = ?17, prompt_tokens = ?18, \
     completion_tokens = ?19, total_tokens = ?20 WHERE id = ?1 AND search_key = ?21 \
     AND scope_key = ?22";

/// Deletes a conversation: `?1` id, `?2` scope. `ON DELETE CASCADE` removes its
/// messages; [`DELETE_MESSAGES_OF`] and [`DELETE_PATH_OF`] follow it anyway.
pub const DELETE_CONVERSATION: &str = "DELETE FROM conversations WHERE id = ?1 AND +scope = ?2";

/// Deletes a conversation's messages: `?1` conversation id.
pub const DELETE_MESSAGES_OF: &str = "DELETE FROM messages WHERE conversation_id = ?1";

/// Deletes a conversation's path: `?1` conversation id.
pub const DELETE_PATH_OF: &str = "DELETE FROM message_path WHERE conversation_id = ?1";

/// A new message: `?1` conversation id, `?2` seq, `?3` id, `?4` parent_seq (0 for a
/// root), `?5` parent_id, `?6` role, `?7` content, `?8` tool_calls, `?9`
/// tool_call_id, `?10` metadata, `?11` created_at.
pub const INSERT_MESSAGE: &str = "INSERT INTO messages (conversation_id, seq, id, \
     parent_seq, parent_id, role, content, tool_calls, tool_call_id, metadata, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// A message joins the active path: `?1` conversation id, `?2` seq, `?3` its sibling
/// count.
pub const INSERT_PATH: &str =
    "INSERT INTO message_path (conversation_id, seq, siblings) VALUES (?1, ?2, ?3)";

/// Cuts the active path after a seq: `?1` conversation id, `?2` the last seq kept
/// (0 to empty it).
pub const CUT_PATH: &str = "DELETE FROM message_path WHERE conversation_id = ?1 AND seq > ?2";

/// The first message of the active path after a seq (the child of that message on
/// the path, or the path's root for 0): `?1` conversation id, `?2` seq.
pub const PATH_AFTER: &str = "SELECT seq FROM message_path \
     WHERE conversation_id = ?1 AND seq > ?2 ORDER BY seq LIMIT 1";

/// Whether a seq is on the active path: `?1` conversation id, `?2` seq.
pub const ON_PATH: &str = "SELECT 1 FROM message_path WHERE conversation_id = ?1 AND seq = ?2";

/// Adds to the sibling count of a message on the path: `?1` conversation id, `?2`
/// seq, `?3` the change.
pub const ADD_PATH_SIBLINGS: &str = "UPDATE message_path SET siblings = siblings + ?3 \
     WHERE conversation_id = ?1 AND seq = ?2";

/// A step up the tree: a message's parent seq and whether the message is on the
/// active path: `?1` conversation id, `?2` seq.
pub const PARENT_STEP: &str = "SELECT m.parent_seq, EXISTS (SELECT 1 FROM message_path AS p \
     WHERE p.conversation_id = ?1 AND p.seq = m.seq) FROM messages AS m \
     WHERE m.conversation_id = ?1 AND m.seq = ?2";

/// How many children a message has (roots for 0): `?1` conversation id, `?2` seq.
pub const CHILD_COUNT: &str =
    "SELECT count(*) FROM messages WHERE conversation_id = ?1 AND parent_seq = ?2";

/// The id of a message by its seq: `?1` conversation id, `?2` seq.
pub const MESSAGE_ID: &str = "SELECT id FROM messages WHERE conversation_id = ?1 AND seq = ?2";

/// The newest message of a conversation (the largest seq, always a leaf): `?1`
/// conversation id.
pub const NEWEST_MESSAGE: &str = "SELECT seq FROM messages WHERE conversation_id = ?1 \
     ORDER BY seq DESC LIMIT 1";

/// The newest message under a message (itself included): the largest seq of its
/// subtree, always a leaf since a child's seq exceeds its parent's. `?1`
/// conversation id, `?2` the message's seq. Walks the subtree through
/// `messages_by_parent`: its cost is the subtree's size.
pub const NEWEST_UNDER: &str = "WITH RECURSIVE sub(seq) AS (SELECT ?2 UNION ALL \
     SELECT m.seq FROM sub CROSS JOIN messages AS m ON m.conversation_id = ?1 AND m.parent_seq = sub.seq) \
     SELECT max(seq) FROM sub";

/// Deletes a message and its descendants: `?1` conversation id, `?2` the message's
/// seq. Walks the subtree through `messages_by_parent`.
pub const DELETE_SUBTREE: &str = "WITH RECURSIVE sub(seq) AS (SELECT ?2 UNION ALL \
     SELECT m.seq FROM sub CROSS JOIN messages AS m ON m.conversation_id = ?1 AND m.parent_seq = sub.seq) \
     DELETE FROM messages WHERE conversation_id = ?1 AND seq IN sub";

/// Moves the write-ahead log into the database file and empties it, so that deleted
/// rows leave no copy in the log.
pub const CHECKPOINT_TRUNCATE: &str = "PRAGMA wal_checkpoint(TRUNCATE)";

/// Deletes a conversation's runs: `?1` conversation id.
pub const DELETE_RUNS_OF: &str = "DELETE FROM runs WHERE conversation_id = ?1";

// ---------------------------------------------------------------------------------
// Runs.
// ---------------------------------------------------------------------------------

macro_rules! run_columns {
    () => {
        "id, status, started_at, finished_at, lease_until, cancel_requested, steps, \
         prompt_tokens, completion_tokens, total_tokens, error, pending_tool_calls"
    };
}

/// The position of each column of a run row ([`GET_RUN`]).
pub mod run_column {
    #![allow(missing_docs)]
    pub const ID: usize = 0;
    pub const STATUS: usize = 1;
    pub const STARTED_AT: usize = 2;
    pub const FINISHED_AT: usize = 3;
    pub const LEASE_UNTIL: usize = 4;
    pub const CANCEL_REQUESTED: usize = 5;
    pub const STEPS: usize = 6;
    pub const PROMPT_TOKENS: usize = 7;
    pub const COMPLETION_TOKENS: usize = 8;
    pub const TOTAL_TOKENS: usize = 9;
    pub const ERROR: usize = 10;
    pub const PENDING_TOOL_CALLS: usize = 11;
    /// The names, in order.
    pub const NAMES: [&str; 12] = [
        "id",
        "status",
        "started_at",
        "finished_at",
        "lease_until",
        "cancel_requested",
        "steps",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "error",
        "pending_tool_calls",
    ];
}

/// One run of a conversation: `?1` conversation id, `?2` run id. The caller has
/// checked the conversation's scope, or checks it in the same statement's caller.
pub const GET_RUN: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM runs WHERE conversation_id = ?1 AND id = ?2"
);

/// Writes a run, every column: `?1` conversation id, then the columns of
/// [`run_column`] from `?2` on, in their order.
pub const UPSERT_RUN: &str = concat!(
    "INSERT OR REPLACE INTO runs (conversation_id, ",
    run_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
);

// ---------------------------------------------------------------------------------
// Metadata filters.
// ---------------------------------------------------------------------------------

/// Deletes the indexed metadata values of a conversation: `?1` conversation id.
pub const DELETE_METADATA_OF: &str = "DELETE FROM conversation_metadata WHERE conversation_id = ?1";

/// Indexes one top-level scalar metadata value: `?1` conversation id, `?2` key, `?3`
/// scope, `?4` kind (`s`, `n`, `b`), `?5` value.
pub const INSERT_METADATA: &str = "INSERT INTO conversation_metadata \
     (conversation_id, key, scope, kind, value) VALUES (?1, ?2, ?3, ?4, ?5)";

macro_rules! conversation_columns_of_c {
    () => {
        "c.id, c.title, c.title_source, c.created_at, c.updated_at, c.message_count, \
         c.last_seq, c.head_seq, c.head_id, c.path_len, c.pinned, c.archived, c.metadata, \
         c.version, c.archived_at, c.active_run_id, c.prompt_tokens, c.completion_tokens, \
         c.total_tokens, c.search_key, c.scope_key"
    };
}

/// At most `limit` rows of a list with a metadata filter of `filters` keys, in list
/// order: parameters as [`list_conversations`], then `(key, kind, value)` of each
/// filter from `?6` on. The first filter is read from the index
/// `conversation_metadata_by_value` (one range: the scope's conversations with that
/// value), each conversation by its primary key, each further filter by the primary
/// key of `conversation_metadata`; the matches are sorted, so the cost grows with
/// the conversations the first filter matches, not with the scope.
pub fn list_conversations_by_metadata(
    archived: ArchivedFilter,
    pinned_first: bool,
    after_cursor: bool,
    title_filter: bool,
    filters: usize,
    limit: usize,
) -> String {
    let mut sql = concat!(
        "SELECT ",
        conversation_columns_of_c!(),
        " FROM conversation_metadata AS f CROSS JOIN conversations AS c",
        " WHERE f.scope = ?1 AND f.key = ?6 AND f.kind = ?7 AND f.value = ?8",
        " AND c.id = f.conversation_id"
    )
    .to_owned();
    match archived {
        ArchivedFilter::Exclude => sql.push_str(" AND c.archived = 0"),
        ArchivedFilter::Only => sql.push_str(" AND c.archived = 1"),
        ArchivedFilter::Include => {}
    }
    if after_cursor {
        sql.push_str(if pinned_first {
            " AND (c.pinned, c.updated_at, c.id) < (?2, ?3, ?4)"
        } else {
            " AND (c.updated_at, c.id) < (?3, ?4)"
        });
    }
    if title_filter {
        sql.push_str(" AND instr(lower(c.title), ?5) > 0");
    }
    for filter in 1..filters {
        let first = 6 + 3 * filter;
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM conversation_metadata AS g WHERE g.conversation_id = c.id \
             AND g.key = ?{} AND g.kind = ?{} AND g.value = ?{})",
            first,
            first + 1,
            first + 2
        ));
    }
    let order = if pinned_first {
        "c.pinned DESC, c.updated_at DESC, c.id DESC"
    } else {
        "c.updated_at DESC, c.id DESC"
    };
    sql.push_str(&format!(" ORDER BY {order} LIMIT {limit}"));
    sql
}

// ---------------------------------------------------------------------------------
// Search.
// ---------------------------------------------------------------------------------

/// The key of a scope in the search index: `?1` scope.
pub const SEARCH_SCOPE_KEY: &str = "SELECT key FROM search_scopes WHERE scope = ?1";

/// Gives a scope a key in the search index, unless it has one: `?1` scope.
pub const INSERT_SEARCH_SCOPE: &str = "INSERT OR IGNORE INTO search_scopes (scope) VALUES (?1)";

/// Takes the next conversation key of the search index.
pub const NEXT_SEARCH_KEY: &str =
    "UPDATE search_state SET next_key = next_key + 1 WHERE id = 1 RETURNING next_key - 1";

/// Adds a row of words to the search index: `?1` rowid, `?2` words.
pub const INSERT_SEARCH_ROW: &str = "INSERT INTO search (rowid, words) VALUES (?1, ?2)";

/// Removes a row of words from the search index, given the words it was added with:
/// `?1` rowid, `?2` words.
pub const DELETE_SEARCH_ROW: &str =
    "INSERT INTO search (search, rowid, words) VALUES ('delete', ?1, ?2)";

/// The contents of a message and its subtree (itself included), for the deletion of
/// their words: `?1` conversation id, `?2` the message's seq.
pub const SUBTREE_CONTENTS: &str = "WITH RECURSIVE sub(seq) AS (SELECT ?2 UNION ALL \
     SELECT m.seq FROM sub CROSS JOIN messages AS m ON m.conversation_id = ?1 AND m.parent_seq = sub.seq) \
     SELECT m.seq, m.content FROM sub CROSS JOIN messages AS m WHERE m.conversation_id = ?1 AND m.seq = sub.seq";

/// The seq and content of every message of a conversation: `?1` conversation id.
pub const CONTENTS_OF: &str = "SELECT seq, content FROM messages WHERE conversation_id = ?1";

/// At most `limit` conversations of a search, in rank order, each with its score and
/// the seqs of its best rows (0 for the title) as text, best first: `?1` the `MATCH`
/// expression (the scope's words, see `search::match_expression`), `?2` the scope,
/// and when `after_cursor` the cursor's `?3` score, `?4` updated_at and `?5` id.
///
/// The words of the expression carry the scope's key, so the index yields only the
/// scope's rows (the scope test on the conversation is a second guard, never a
/// filter). Each matching row is scored once with `bm25` (negated: higher is
/// better) and the rows are ranked per conversation in one pass (best first, then
/// title first, then by seq); a conversation takes its best row's score and keeps its
/// best [`MAX_MATCHES_PER_HIT`](conversation_core::MAX_MATCHES_PER_HIT) rows as
/// matches; conversations rank by score, then newest activity, then id. The scored
/// rows are materialized: `bm25` may not run inside the window or aggregate a
/// flattened subquery would make of it.
pub fn search_hits(archived: ArchivedFilter, after_cursor: bool, limit: usize) -> String {
    let mut sql = concat!(
        "WITH scored AS MATERIALIZED (",
        "SELECT rowid, -bm25(search) AS score FROM search WHERE search MATCH ?1),",
        " ranked AS MATERIALIZED (SELECT * FROM (SELECT rowid >> 32 AS search_key,",
        " rowid & 4294967295 AS seq, score, row_number() OVER",
        " (PARTITION BY rowid >> 32 ORDER BY score DESC, rowid) AS place FROM scored)",
        " WHERE place <= 3)",
        " SELECT ",
        conversation_columns_of_c!(),
        ", found.score, (SELECT group_concat(m.seq ORDER BY m.place) FROM ranked AS m",
        " WHERE m.search_key = found.search_key) AS matches",
        " FROM ranked AS found CROSS JOIN conversations AS c",
        " WHERE found.place = 1 AND c.search_key = found.search_key AND +c.scope = ?2"
    )
    .to_owned();
    match archived {
        ArchivedFilter::Exclude => sql.push_str(" AND c.archived = 0"),
        ArchivedFilter::Only => sql.push_str(" AND c.archived = 1"),
        ArchivedFilter::Include => {}
    }
    if after_cursor {
        sql.push_str(" AND (found.score, c.updated_at, c.id) < (?3, ?4, ?5)");
    }
    sql.push_str(&format!(
        " ORDER BY found.score DESC, c.updated_at DESC, c.id DESC LIMIT {limit}"
    ));
    sql
}

/// A message a search matched: `?1` conversation id, `?2` seq.
pub const MATCHED_MESSAGE: &str =
    "SELECT id, role, content FROM messages WHERE conversation_id = ?1 AND seq = ?2";

// ---------------------------------------------------------------------------------
// Retention.
// ---------------------------------------------------------------------------------

/// The columns retention reads.
macro_rules! expired_columns {
    () => {
        "scope, id, title, pinned"
    };
}

/// Conversations that expire, oldest first, then by id, at most `?4`: `?1` the
/// cutoff (exclusive, milliseconds), `?2` and `?3` the `(at, id)` to continue after
/// (when `after`), `?5` the scope (when `in_scope`). Each row is `scope, id, title,
/// pinned, at`. `by_archive` reads `archived_at` of archived conversations, else
/// `updated_at`. Every variant reads one index range (two merged for inactivity in one
/// scope, one per archive state) and never sorts.
pub fn expired(by_archive: bool, in_scope: bool, after: bool, include_pinned: bool) -> String {
    let at = if by_archive {
        "archived_at"
    } else {
        "updated_at"
    };
    let arm = |index: &str, extra: &str| {
        let mut sql = format!(
            concat!(
                "SELECT ",
                expired_columns!(),
                ", {at} AS at FROM conversations INDEXED BY {index} WHERE {extra}{at} < ?1"
            ),
            at = at,
            index = index,
            extra = extra
        );
        if by_archive {
            sql.push_str(" AND archived_at IS NOT NULL AND archived");
        }
        if after {
            sql.push_str(&format!(" AND ({at}, id) > (?2, ?3)"));
        }
        if !include_pinned {
            sql.push_str(" AND NOT pinned");
        }
        sql
    };
    let order = " ORDER BY at, id LIMIT ?4";
    match (by_archive, in_scope) {
        (false, false) => arm("conversations_by_inactivity", "") + order,
        (true, false) => arm("conversations_by_archive_age", "") + order,
        (true, true) => arm("conversations_by_scope_archive_age", "scope = ?5 AND ") + order,
        // One range per archive state of `conversations_by_activity`, merged.
        (false, true) => format!(
            "{} UNION ALL {}{order}",
            arm(
                "conversations_by_activity",
                "scope = ?5 AND archived = 0 AND "
            ),
            arm(
                "conversations_by_activity",
                "scope = ?5 AND archived = 1 AND "
            )
        ),
    }
}

// ---------------------------------------------------------------------------------
// Statistics.
// ---------------------------------------------------------------------------------

/// How many conversations, messages and runs the database holds.
pub const COUNTS: &str = "SELECT (SELECT count(*) FROM conversations), \
     (SELECT coalesce(sum(message_count), 0) FROM conversations), (SELECT count(*) FROM runs)";

/// The bytes of the database file (its pages, as SQLite counts them).
pub const DATABASE_BYTES: &str =
    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()";

/// The bytes the search index takes: the pages of its tables.
pub const SEARCH_INDEX_BYTES: &str =
    "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE 'search\\_%' ESCAPE '\\'";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement that returns rows decoded by position returns the columns
    /// named for those positions, in order.
    #[test]
    fn columns_are_where_the_decoders_read_them() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::migrate::run(&conn).unwrap();
        let names = |statement: &str| -> Vec<String> {
            let prepared = conn.prepare(statement).unwrap();
            prepared
                .column_names()
                .into_iter()
                .map(str::to_owned)
                .collect()
        };
        let mut conversations = vec![GET_CONVERSATION.to_owned()];
        for archived in [
            ArchivedFilter::Exclude,
            ArchivedFilter::Include,
            ArchivedFilter::Only,
        ] {
            for pinned_first in [false, true] {
                conversations.push(list_conversations(archived, pinned_first, true, true, 51));
            }
        }
        for statement in &conversations {
            assert_eq!(names(statement), conversation_column::NAMES, "{statement}");
        }
        let mut messages = vec![
            MESSAGE_BY_SEQ.to_owned(),
            ANCESTORS.to_owned(),
            MESSAGE_BY_ID.to_owned(),
        ];
        for newest_first in [false, true] {
            messages.push(path_messages(newest_first, 21));
            messages.push(all_messages(newest_first, 21));
        }
        for statement in &messages {
            let names = names(statement);
            assert_eq!(
                names[..message_column::NAMES.len()],
                message_column::NAMES,
                "{statement}"
            );
        }
        assert_eq!(names(MESSAGE_BY_ID)[message_column::NAMES.len()], "on_path");
    }

    /// The sibling reads take the window of the model: as many before and after.
    #[test]
    fn sibling_reads_are_as_wide_as_the_window() {
        let window = conversation_core::SIBLING_WINDOW;
        assert!(SIBLINGS_BEFORE.ends_with(&format!("LIMIT {}", window + 1)));
        assert!(SIBLINGS_AFTER.ends_with(&format!("LIMIT {window}")));
    }
}
