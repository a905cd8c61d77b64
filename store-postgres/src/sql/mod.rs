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
//! [`SIBLING_WINDOW`](conversation_core::SIBLING_WINDOW) sibling ids before it, nearest first, `NULL` when it is the first
//! sibling), `after_ids` (up to [`SIBLING_WINDOW`](conversation_core::SIBLING_WINDOW) after it, nearest first, `NULL`
//! when it is the last) and `last_index` (the `sibling_index` of the last sibling,
//! `NULL` when it is the last). Each is a bounded index read, made only when the
//! message's own row says it has siblings on that side: a message with 10,000
//! versions costs what a message with 2 does, and one with none costs nothing more.

mod conversations;
mod import;
mod messages;
mod retention;
mod runs;
mod search;
mod tree;

use std::sync::Arc;

/// Columns of a conversation row, read by name.
pub const CONVERSATION_COLUMNS: &str = "id, scope, title, title_source, created_at, updated_at, message_count, last_seq, head_id, pinned, archived, metadata, version, archived_at, active_run_id, prompt_tokens, completion_tokens, total_tokens";

/// Columns of a run row, read by name.
pub const RUN_COLUMNS: &str = "id, conversation_id, status, started_at, finished_at, lease_until, cancel_requested, steps, prompt_tokens, completion_tokens, total_tokens, error, pending_tool_calls";

/// Columns a message is inserted with.
const MESSAGE_INSERT_COLUMNS: &str = "conversation_id, seq, id, parent_id, depth, sibling_index, last_sibling, on_path, role, content, tool_calls, tool_call_id, metadata, created_at, words";

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

impl Statements {
    /// The statements for the tables of `quoted_schema`.
    pub fn new(quoted_schema: &str) -> Self {
        let s = quoted_schema;
        Self {
            get: conversations::get(s),
            lock: conversations::lock(s),
            insert_conversation: conversations::insert_conversation(s),
            update_conversation: conversations::update_conversation(s),
            set_title: conversations::set_title(s),
            delete_conversation: conversations::delete_conversation(s),
            delete_locked: conversations::delete_locked(s),
            scope_of: conversations::scope_of(s),
            run: runs::run(s),
            scoped_run: runs::scoped_run(s),
            upsert_run: runs::upsert_run(s),
            set_run_columns: runs::set_run_columns(s),
            import_messages: import::import_messages(s),
            import_head: import::import_head(s),
            stored_messages: tree::stored_messages(s),
            resolve: tree::resolve(s),
            roots: tree::roots(s),
            append: tree::append(s),
            move_path: tree::move_path(s),
            newest_under: tree::newest_under(s),
            newest_outside: tree::newest_outside(s),
            delete_subtree: tree::delete_subtree(s, "parent_id = $3"),
            delete_root_subtree: tree::delete_subtree(s, "parent_id IS NULL AND $3::uuid IS NULL"),
            fork: tree::fork(s),
            window_from: messages::window_from(s),
            get_message: messages::get_message(s),
            messages_by_seq: messages::messages_by_seq(s),
            path_newest: messages::page(s, " AND on_path", "DESC"),
            path_oldest: messages::page(s, " AND on_path", "ASC"),
            all_newest: messages::page(s, "", "DESC"),
            all_oldest: messages::page(s, "", "ASC"),
            schema: s.to_owned(),
        }
    }
}

/// Quotes an identifier for PostgreSQL.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use conversation_core::ArchivedFilter;

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
