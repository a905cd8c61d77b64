//! The SQL text of the store, public (but hidden from the docs) so that the
//! query-plan test and the benches run exactly the statements the store runs. Not a
//! stable API.
//!
//! Statements are built once per store: the schema is part of their text (which is
//! also the key of sqlx's per-connection prepared-statement cache). The schema name is
//! validated by [`crate::PostgresOptions`] and always double-quoted, so it cannot
//! change the meaning of a statement; every value is a bind parameter.
//!
//! Message reads return the message's columns and its siblings: `before_ids` (up to
//! [`SIBLING_WINDOW`] sibling ids before it, nearest first, `NULL` when it is the first
//! sibling), `after_ids` (up to [`SIBLING_WINDOW`] after it, nearest first, `NULL`
//! when it is the last) and `last_index` (the `sibling_index` of the last sibling,
//! `NULL` when it is the last). Each is a bounded index read, made only when the
//! message's own row says it has siblings on that side: a message with 10,000
//! versions costs what a message with 2 does, and one with none costs nothing more.

use std::fmt::Write as _;
use std::sync::Arc;

use conversation_core::{ArchivedFilter, SIBLING_WINDOW};

/// Columns of a conversation row, read by name.
pub const CONVERSATION_COLUMNS: &str = "id, scope, title, title_source, created_at, updated_at, message_count, last_seq, head_id, pinned, archived, metadata, version, archived_at, active_run_id, prompt_tokens, completion_tokens, total_tokens";

/// [`CONVERSATION_COLUMNS`] of the alias `c`.
const CONVERSATION_COLUMNS_OF_C: &str = "c.id, c.scope, c.title, c.title_source, c.created_at, c.updated_at, c.message_count, c.last_seq, c.head_id, c.pinned, c.archived, c.metadata, c.version, c.archived_at, c.active_run_id, c.prompt_tokens, c.completion_tokens, c.total_tokens";

/// Columns of a run row, read by name.
pub const RUN_COLUMNS: &str = "id, conversation_id, status, started_at, finished_at, lease_until, cancel_requested, steps, prompt_tokens, completion_tokens, total_tokens, error, pending_tool_calls";

/// Columns a message is inserted with.
const MESSAGE_INSERT_COLUMNS: &str = "conversation_id, seq, id, parent_id, depth, sibling_index, last_sibling, on_path, role, content, tool_calls, tool_call_id, metadata, created_at, words";

/// Columns of a message read through the alias `m`; [`siblings`] follow them.
const MESSAGE_COLUMNS: &str = "m.id, m.conversation_id, m.seq, m.parent_id, m.sibling_index, m.role, m.content, m.tool_calls, m.tool_call_id, m.metadata, m.created_at";

/// ASCII-only case folding: PostgreSQL's `lower()` folds every letter, and the
/// contract folds only `A`–`Z`, the same in every store.
const ASCII_FOLD: &str =
    "translate(title, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')";

/// The fixed statements of one store. Every tree statement takes the conversation id
/// as `$1` and runs in a transaction holding the conversation's row lock.
#[derive(Debug)]
pub struct Statements {
    /// One conversation: `$1` id, `$2` scope.
    pub get: Arc<str>,
    /// `$1` id, `$2` scope; locks the row until the transaction ends, and reads its
    /// head's `head_seq` and `head_depth`. (Nothing of another table is read with it:
    /// after waiting for the lock, a `READ COMMITTED` statement sees the locked row's
    /// new version but the other rows of its old snapshot.)
    pub lock: Arc<str>,
    /// The columns of [`CONVERSATION_COLUMNS`], in order, then `$19` the title's
    /// words (a `tsvector` literal, `search::words`). Inserts nothing when
    /// the id is taken (`ON CONFLICT DO NOTHING`); returns a row when it inserted.
    pub insert_conversation: Arc<str>,
    /// `$1` id, then title, title_source, updated_at, pinned, archived, metadata,
    /// version, head_id, head_seq, head_depth, archived_at, title words.
    pub update_conversation: Arc<str>,
    /// `$1` id, `$2` title, `$3` title_source, `$4` version, `$5` title words.
    pub set_title: Arc<str>,
    /// `$1` id, `$2` scope.
    pub delete_conversation: Arc<str>,
    /// `$1` id: deletes the (locked) conversation.
    pub delete_locked: Arc<str>,
    /// `$1` id: the conversation's scope, if the id is taken.
    pub scope_of: Arc<str>,
    /// `$1` conversation, `$2` run: the run ([`RUN_COLUMNS`]), unsettled.
    pub run: Arc<str>,
    /// `$1` id, `$2` scope, `$3` run: the run's columns, a row of `NULL`s when the
    /// conversation has no such run, no row when the conversation is not in the scope.
    pub scoped_run: Arc<str>,
    /// Writes a run, every column: [`RUN_COLUMNS`] in order from `$1`.
    pub upsert_run: Arc<str>,
    /// `$1` id, `$2` active_run_id, `$3` prompt_tokens, `$4` completion_tokens, `$5`
    /// total_tokens: the run columns of a (locked) conversation.
    pub set_run_columns: Arc<str>,
    /// Inserts the messages of an import, whole: `$1` conversation, then arrays of
    /// seq, id, parent_id, depth, sibling_index, last_sibling, on_path, role, content,
    /// tool_calls, tool_call_id, metadata, created_at, words (`$2`..`$15`).
    pub import_messages: Arc<str>,
    /// `$1` id, `$2` message_count, `$3` head_id, `$4` head_seq, `$5` head_depth: the
    /// tree columns of an imported conversation, once its messages are in.
    pub import_head: Arc<str>,
    /// `$1` conversation, `$2` message ids: the messages stored under them (without
    /// siblings).
    pub stored_messages: Arc<str>,
    /// `$1` conversation, `$2` message id: its `seq`, `parent_id`, `depth`, `on_path`,
    /// `children` (how many it has) and `last_child` (the seq of the newest).
    pub resolve: Arc<str>,
    /// `$1` conversation: `children` (how many roots it has) and `last_child` (the
    /// newest one's seq); no row when it has none.
    pub roots: Arc<str>,
    /// Inserts a chain of messages on the path and writes the conversation's row, in
    /// one statement: `$1` conversation, `$2`..`$12` arrays (seq, id, parent_id,
    /// depth, sibling_index, role, content, tool_calls, tool_call_id, metadata,
    /// created_at), then the row: `$13` updated_at, `$14` message_count, `$15`
    /// last_seq, `$16` head_id, `$17` version, `$18` title, `$19` title_source; `$20`
    /// the seq of the first message's last sibling until now (`NULL` for none); `$21`
    /// and `$22` the new head's seq and depth; `$23` the messages' words (array of
    /// `tsvector` literals); `$24` the title's words.
    pub append: Arc<str>,
    /// Makes the message at seq `$2` the end of the active path (`NULL`: no path):
    /// walks up from it to the first message on the path (the joint), takes the old
    /// path off below the joint and puts the walk on. Costs the two changed stretches.
    pub move_path: Arc<str>,
    /// The newest leaf under message `$2` (itself included), never entering the
    /// subtree of message `$3` (`NULL` for none): its `id`, `seq` and `depth`.
    pub newest_under: Arc<str>,
    /// The newest message outside the subtree of message `$2`: `id`, `seq`, `depth`.
    pub newest_outside: Arc<str>,
    /// Deletes the subtree of message `$2` (a child of `$3`, at sibling seq `$4`),
    /// moves its later siblings' `sibling_index` down (or, when it was the last,
    /// makes the one before it the last), and writes the conversation:
    /// `$5` head_id, `$6` version, `$7` updated_at, `$8` head_seq, `$9` head_depth.
    /// Returns the new `message_count`.
    pub delete_subtree: Arc<str>,
    /// As [`Statements::delete_subtree`] for a root (`$3` is unused and `NULL`).
    pub delete_root_subtree: Arc<str>,
    /// Copies the path from a root to the message at seq `$2` of conversation `$1`
    /// into the new conversation whose columns follow ([`CONVERSATION_COLUMNS`] order
    /// from `$3`, then `$21` its title's words), with seqs from 1, in one statement.
    /// The head is the last copy: its seq and depth are both `last_seq` (`$10`). The
    /// copies keep their words (same scope, same words).
    pub fork: Arc<str>,
    /// `$1` id, `$2` scope, `$3` message id, `$4` n: the path ending at that message,
    /// newest first, with `k` (1 for the message itself); a row of `NULL`s when the
    /// message is not in the conversation.
    pub window_from: Arc<str>,
    /// `$1` id, `$2` scope, `$3` message id: the message, or a row of `NULL`s.
    pub get_message: Arc<str>,
    /// `$1` conversation, `$2` seqs: those messages (no scope check: for a
    /// transaction holding the row lock).
    pub messages_by_seq: Arc<str>,
    /// Pages of the active path: `$1` id, `$2` scope, `$3` after, `$4` before, `$5`
    /// limit; newest first, or one row of `NULL`s when the conversation has none in
    /// the range; no row when it does not exist. Also the window (from 0 to the
    /// end, `n` rows): a statement with no seq range of its own gets no generic plan
    /// from PostgreSQL (its unknown `LIMIT` makes that look dear), so it would be
    /// planned anew on every call, which costs more than running it.
    pub path_newest: Arc<str>,
    /// As `path_newest`, oldest first.
    pub path_oldest: Arc<str>,
    /// As `path_newest`, over every message of the tree.
    pub all_newest: Arc<str>,
    /// As `all_newest`, oldest first.
    pub all_oldest: Arc<str>,
    /// `"schema"`, quoted.
    schema: String,
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

impl Statements {
    /// The statements for the tables of `quoted_schema`.
    pub fn new(quoted_schema: &str) -> Self {
        let s = quoted_schema;
        let c = CONVERSATION_COLUMNS;
        let m = format!("{MESSAGE_COLUMNS}, {}", siblings(s));
        // A page: the conversation row, then (lateral) its messages in read order
        // through one index range, then each one's siblings. The nested loops keep
        // the messages' order, so no outer ORDER BY (and no sort) is needed.
        let page = |filter: &str, order: &str| {
            format!(
                "SELECT {m} FROM {s}.conversations c \
                 LEFT JOIN LATERAL (SELECT * FROM {s}.messages \
                   WHERE conversation_id = c.id{filter} AND seq > $3 AND seq < $4 \
                   ORDER BY seq {order} LIMIT $5) m ON true \
                 WHERE c.id = $1 AND c.scope = $2"
            )
        };
        let delete_subtree = |same_parent: &str| {
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
        };
        Self {
            get: format!("SELECT {c} FROM {s}.conversations WHERE id = $1 AND scope = $2").into(),
            lock: format!(
                "SELECT {c}, head_seq, head_depth FROM {s}.conversations \
                 WHERE id = $1 AND scope = $2 FOR NO KEY UPDATE"
            )
            .into(),
            insert_conversation: format!(
                "INSERT INTO {s}.conversations ({c}, title_words) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                         $17, $18, $19::tsvector) \
                 ON CONFLICT (id) DO NOTHING RETURNING 1 AS inserted"
            )
            .into(),
            update_conversation: format!(
                "UPDATE {s}.conversations SET title = $2, title_source = $3, updated_at = $4, \
                 pinned = $5, archived = $6, metadata = $7, version = $8, head_id = $9, \
                 head_seq = $10, head_depth = $11, archived_at = $12, title_words = $13::tsvector \
                 WHERE id = $1"
            )
            .into(),
            set_title: format!(
                "UPDATE {s}.conversations SET title = $2, title_source = $3, version = $4, \
                 title_words = $5::tsvector WHERE id = $1"
            )
            .into(),
            delete_conversation: format!(
                "DELETE FROM {s}.conversations WHERE id = $1 AND scope = $2"
            )
            .into(),
            delete_locked: format!("DELETE FROM {s}.conversations WHERE id = $1").into(),
            scope_of: format!("SELECT scope FROM {s}.conversations WHERE id = $1").into(),
            run: format!(
                "SELECT {RUN_COLUMNS} FROM {s}.runs WHERE conversation_id = $1 AND id = $2"
            )
            .into(),
            scoped_run: format!(
                "SELECT r.* FROM {s}.conversations c \
                 LEFT JOIN {s}.runs r ON r.conversation_id = c.id AND r.id = $3 \
                 WHERE c.id = $1 AND c.scope = $2"
            )
            .into(),
            upsert_run: format!(
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
            .into(),
            set_run_columns: format!(
                "UPDATE {s}.conversations SET active_run_id = $2, prompt_tokens = $3, \
                 completion_tokens = $4, total_tokens = $5 WHERE id = $1"
            )
            .into(),
            import_messages: format!(
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
            .into(),
            import_head: format!(
                "UPDATE {s}.conversations SET message_count = $2, head_id = $3, head_seq = $4, \
                 head_depth = $5 WHERE id = $1"
            )
            .into(),
            stored_messages: format!(
                "SELECT id, conversation_id, seq, parent_id, role, content, tool_calls, \
                 tool_call_id, metadata, created_at \
                 FROM {s}.messages WHERE conversation_id = $1 AND id = ANY($2)"
            )
            .into(),
            resolve: format!(
                "SELECT m.seq, m.parent_id, m.depth, m.on_path, \
                   coalesce(k.sibling_index + 1, 0) AS children, k.seq AS last_child \
                 FROM {s}.messages m \
                 LEFT JOIN LATERAL (SELECT sibling_index, seq FROM {s}.messages \
                   WHERE conversation_id = m.conversation_id AND parent_id = m.id \
                   ORDER BY seq DESC LIMIT 1) k ON true \
                 WHERE m.conversation_id = $1 AND m.id = $2"
            )
            .into(),
            roots: format!(
                "SELECT sibling_index + 1 AS children, seq AS last_child FROM {s}.messages \
                 WHERE conversation_id = $1 AND parent_id IS NULL ORDER BY seq DESC LIMIT 1"
            )
            .into(),
            append: format!(
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
            .into(),
            move_path: format!(
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
            .into(),
            newest_under: format!(
                "WITH RECURSIVE down AS ( \
                   SELECT seq, id FROM {s}.messages WHERE conversation_id = $1 AND id = $2 \
                   UNION ALL SELECT m.seq, m.id FROM down JOIN {s}.messages m \
                     ON m.conversation_id = $1 AND m.parent_id = down.id \
                   WHERE $3::uuid IS NULL OR m.id <> $3) \
                 SELECT id, seq, depth FROM {s}.messages \
                 WHERE conversation_id = $1 AND seq = (SELECT max(seq) FROM down)"
            )
            .into(),
            newest_outside: format!(
                "WITH RECURSIVE {sub} \
                 SELECT id, seq, depth FROM {s}.messages \
                 WHERE conversation_id = $1 AND seq NOT IN (SELECT seq FROM sub) \
                 ORDER BY seq DESC LIMIT 1",
                sub = subtree(s)
            )
            .into(),
            delete_subtree: delete_subtree("parent_id = $3").into(),
            delete_root_subtree: delete_subtree("parent_id IS NULL AND $3::uuid IS NULL").into(),
            fork: format!(
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
            .into(),
            window_from: format!(
                "WITH RECURSIVE up AS ( \
                   SELECT *, 1 AS k FROM {s}.messages WHERE conversation_id = $1 AND id = $3 \
                   UNION ALL SELECT m.*, up.k + 1 FROM up JOIN {s}.messages m \
                     ON m.conversation_id = $1 AND m.id = up.parent_id WHERE up.k < $4) \
                 SELECT {m}, m.k FROM {s}.conversations c \
                 LEFT JOIN up m ON true \
                 WHERE c.id = $1 AND c.scope = $2"
            )
            .into(),
            get_message: format!(
                "SELECT {m} FROM {s}.conversations c \
                 LEFT JOIN {s}.messages m ON m.conversation_id = c.id AND m.id = $3 \
                 WHERE c.id = $1 AND c.scope = $2"
            )
            .into(),
            messages_by_seq: format!(
                "SELECT {m} FROM {s}.messages m \
                 WHERE m.conversation_id = $1 AND m.seq = ANY($2)"
            )
            .into(),
            path_newest: page(" AND on_path", "DESC").into(),
            path_oldest: page(" AND on_path", "ASC").into(),
            all_newest: page("", "DESC").into(),
            all_oldest: page("", "ASC").into(),
            schema: s.to_owned(),
        }
    }

    /// One page of a list: `$1` scope, `$2` limit (rows to read), then the cursor's
    /// fields when `with_cursor` (`pinned` only when `pinned_first`, `updated_at`,
    /// `id`), then the title needle when `with_filter`, then the metadata filter (a
    /// JSON object, matched with `@>`) when `with_metadata`.
    ///
    /// Each archive partition is read backwards along its index
    /// (`conversations_by_activity` or `conversations_by_pin`), starting strictly after
    /// the cursor by row comparison in index order; "archived included" merges the two
    /// partitions' ordered reads, so a page costs its size, not the scope's.
    pub fn list(
        &self,
        archived: ArchivedFilter,
        pinned_first: bool,
        with_cursor: bool,
        with_filter: bool,
        with_metadata: bool,
    ) -> String {
        let s = &self.schema;
        let key = if pinned_first {
            "pinned, updated_at, id"
        } else {
            "updated_at, id"
        };
        let order = if pinned_first {
            "pinned DESC, updated_at DESC, id DESC"
        } else {
            "updated_at DESC, id DESC"
        };
        let mut next = 3;
        let mut param = || {
            let p = format!("${next}");
            next += 1;
            p
        };
        let mut conditions = String::new();
        if with_cursor {
            let position: Vec<String> = key.split(", ").map(|_| param()).collect();
            let _ = write!(conditions, " AND ({key}) < ({})", position.join(", "));
        }
        if with_filter {
            let _ = write!(conditions, " AND strpos({ASCII_FOLD}, {}) > 0", param());
        }
        if with_metadata {
            // `@>` of scalars is exactly the filter's rule: strings exactly, numbers by
            // value, and no string, number or boolean equals another kind.
            let _ = write!(conditions, " AND metadata @> {}::jsonb", param());
        }
        let partition = |archived: bool| {
            format!(
                "SELECT {CONVERSATION_COLUMNS} FROM {s}.conversations \
                 WHERE scope = $1 AND archived = {archived}{conditions} \
                 ORDER BY {order} LIMIT $2"
            )
        };
        match archived {
            ArchivedFilter::Exclude => partition(false),
            ArchivedFilter::Only => partition(true),
            ArchivedFilter::Include => format!(
                "SELECT {CONVERSATION_COLUMNS} FROM (({}) UNION ALL ({})) AS both_partitions \
                 ORDER BY {order} LIMIT $2",
                partition(false),
                partition(true)
            ),
        }
    }
}

impl Statements {
    /// At most `$3` conversations of a search, in rank order, each with its `score`
    /// and `seqs`, the seqs of its best rows (0 for the title), best first: `$1` the
    /// `tsquery` literal (`search::query`), `$2` the scope, and when
    /// `with_cursor` the cursor's `$4` score, `$5` updated_at and `$6` id.
    ///
    /// The query's lexemes carry the scope's key, so the GIN indexes
    /// (`messages_by_words`, `conversations_by_title_words`) yield the scope's rows;
    /// the scope test on each conversation is the guard against a collision of keys.
    /// Each matching row is ranked with `ts_rank`; a conversation takes its best
    /// row's score and keeps its best
    /// [`MAX_MATCHES_PER_HIT`](conversation_core::MAX_MATCHES_PER_HIT) rows (best
    /// first, then title first, then by seq); conversations rank by score, then newest
    /// activity, then id.
    pub fn search(&self, archived: ArchivedFilter, with_cursor: bool) -> String {
        let s = &self.schema;
        let archived = match archived {
            ArchivedFilter::Exclude => " AND NOT c.archived",
            ArchivedFilter::Only => " AND c.archived",
            ArchivedFilter::Include => "",
        };
        let cursor = if with_cursor {
            " AND (h.score, c.updated_at, c.id) < ($4, $5, $6)"
        } else {
            ""
        };
        let matches = conversation_core::MAX_MATCHES_PER_HIT;
        format!(
            "WITH found AS ( \
               SELECT c.id AS conversation_id, 0::bigint AS seq, \
                      ts_rank(c.title_words, $1::tsquery)::float8 AS score \
               FROM {s}.conversations c \
               WHERE c.title_words @@ $1::tsquery AND c.scope = $2{archived} \
               UNION ALL \
               SELECT m.conversation_id, m.seq, ts_rank(m.words, $1::tsquery)::float8 \
               FROM {s}.messages m JOIN {s}.conversations c ON c.id = m.conversation_id \
               WHERE m.words @@ $1::tsquery AND c.scope = $2{archived}), \
             hits AS (SELECT conversation_id, max(score) AS score, \
                 (array_agg(seq ORDER BY score DESC, seq))[1:{matches}] AS seqs \
               FROM found GROUP BY conversation_id) \
             SELECT {CONVERSATION_COLUMNS_OF_C}, h.score, h.seqs \
             FROM hits h JOIN {s}.conversations c ON c.id = h.conversation_id \
             WHERE true{cursor} \
             ORDER BY h.score DESC, c.updated_at DESC, c.id DESC LIMIT $3"
        )
    }

    /// The messages a page of search hits matched: `$1` conversation ids, `$2` seqs
    /// (pairs); `conversation_id`, `id`, `seq`, `role`, `content`, each by primary key.
    pub fn matched_messages(&self) -> String {
        format!(
            "SELECT m.conversation_id, m.id, m.seq, m.role, m.content \
             FROM UNNEST($1::uuid[], $2::bigint[]) AS k(conversation_id, seq) \
             JOIN {}.messages m ON m.conversation_id = k.conversation_id AND m.seq = k.seq",
            self.schema
        )
    }

    /// Conversations that expire, oldest first, then by id, at most `$2`: `$1` the
    /// cutoff (exclusive), then `$3` the scope when `in_scope`, then the `(at, id)`
    /// to continue after when `after`. Each row is `scope, id, title, pinned, at`.
    /// `by_archive` reads `archived_at` of archived conversations, else `updated_at`.
    ///
    /// Every variant reads one index range in order and stops at the limit: across
    /// scopes `conversations_by_inactivity (updated_at, id)` or
    /// `conversations_by_archive_age (archived_at, id)`; in one scope
    /// `conversations_by_scope_archive_age (scope, archived_at, id)`, or for
    /// inactivity both archive partitions of `conversations_by_activity` merged.
    pub fn expired(
        &self,
        by_archive: bool,
        in_scope: bool,
        after: bool,
        include_pinned: bool,
    ) -> String {
        let s = &self.schema;
        let at = if by_archive {
            "archived_at"
        } else {
            "updated_at"
        };
        let mut next = 3;
        let mut param = || {
            let p = format!("${next}");
            next += 1;
            p
        };
        let scope = in_scope.then(&mut param);
        let position = after.then(|| (param(), param()));
        let arm = |extra: &str| {
            let mut sql = format!(
                "SELECT scope, id, title, pinned, {at} AS at FROM {s}.conversations \
                 WHERE {extra}{at} < $1"
            );
            if by_archive {
                // Only archived conversations have an `archived_at` (a constraint of
                // the table), so this is the partial indexes' own predicate.
                sql.push_str(" AND archived_at IS NOT NULL");
            }
            if let Some((at_param, id_param)) = &position {
                let _ = write!(sql, " AND ({at}, id) > ({at_param}, {id_param})");
            }
            if !include_pinned {
                sql.push_str(" AND NOT pinned");
            }
            let _ = write!(sql, " ORDER BY {at}, id LIMIT $2");
            sql
        };
        match (&scope, by_archive) {
            (None, _) => arm(""),
            (Some(scope), true) => arm(&format!("scope = {scope} AND ")),
            (Some(scope), false) => format!(
                "SELECT * FROM (({}) UNION ALL ({})) AS both_partitions ORDER BY at, id LIMIT $2",
                arm(&format!("scope = {scope} AND archived = false AND ")),
                arm(&format!("scope = {scope} AND archived = true AND "))
            ),
        }
    }
}

/// Quotes an identifier for PostgreSQL.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_numbers_its_parameters_in_bind_order() {
        let statements = Statements::new("\"s\"");
        let sql = statements.list(ArchivedFilter::Exclude, true, true, true, false);
        assert!(
            sql.contains("(pinned, updated_at, id) < ($3, $4, $5)"),
            "{sql}"
        );
        assert!(
            sql.contains("'abcdefghijklmnopqrstuvwxyz'), $6) > 0"),
            "{sql}"
        );
        let sql = statements.list(ArchivedFilter::Only, false, true, false, false);
        assert!(sql.contains("(updated_at, id) < ($3, $4)"), "{sql}");
        assert!(sql.contains("archived = true"), "{sql}");
        let sql = statements.list(ArchivedFilter::Include, false, false, true, true);
        assert!(sql.contains("metadata @> $4::jsonb"), "{sql}");
        assert!(
            sql.contains("strpos(") && sql.contains(", $3) > 0"),
            "{sql}"
        );
        assert!(
            sql.contains("archived = false") && sql.contains("archived = true"),
            "{sql}"
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("conv"), "\"conv\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
