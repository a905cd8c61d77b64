//! The SQL of the store, with every table name qualified by the store's schema.
//!
//! Statements are built once per store (the schema is part of their text, which is
//! also the key of sqlx's per-connection prepared-statement cache). The schema name
//! is validated by [`crate::PostgresOptions`] and always double-quoted, so it cannot
//! change the meaning of a statement; every value is a bind parameter.

use std::fmt::Write as _;
use std::sync::Arc;

use conversation_core::ArchivedFilter;

/// Columns of a conversation row, in the order the decoder reads them by name.
pub(crate) const CONVERSATION_COLUMNS: &str = "id, scope, title, title_source, created_at, updated_at, message_count, pinned, archived, metadata, version";

/// Columns of a message row.
const MESSAGE_COLUMNS: &str =
    "id, conversation_id, seq, role, content, tool_calls, tool_call_id, metadata, created_at";

/// Message columns read through the `m` alias of a lateral join.
const LATERAL_MESSAGE_COLUMNS: &str = "m.id, m.conversation_id, m.seq, m.role, m.content, m.tool_calls, m.tool_call_id, m.metadata, m.created_at";

/// ASCII-only case folding: PostgreSQL's `lower()` folds every letter, and the
/// contract folds only `A`–`Z`, the same in every store.
const ASCII_FOLD: &str =
    "translate(title, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')";

/// The fixed statements of one store.
#[derive(Debug)]
pub(crate) struct Statements {
    /// `$1` id, `$2` scope.
    pub(crate) get: Arc<str>,
    /// `$1` id, `$2` scope; locks the row until the transaction ends.
    pub(crate) lock: Arc<str>,
    /// The eleven columns, in [`CONVERSATION_COLUMNS`] order.
    pub(crate) insert_conversation: Arc<str>,
    /// `$1` id, then title, title_source, updated_at, pinned, archived, metadata, version.
    pub(crate) update_conversation: Arc<str>,
    /// `$1` id, `$2` title, `$3` title_source, `$4` version.
    pub(crate) set_title: Arc<str>,
    /// `$1` id, `$2` scope.
    pub(crate) delete: Arc<str>,
    /// `$1` conversation id, `$2` message ids.
    pub(crate) stored_messages: Arc<str>,
    /// Inserts the new messages and moves the counters, in one statement:
    /// `$1` conversation id, `$2`..`$8` arrays (seq, id, role, content, tool_calls,
    /// tool_call_id, metadata), `$9` created_at and updated_at, `$10` message_count,
    /// `$11` version.
    pub(crate) append: Arc<str>,
    /// `$1` id, `$2` scope, `$3` n. One row per message, newest first, or one row of
    /// NULLs when the conversation has none; no row when it does not exist.
    pub(crate) window: Arc<str>,
    /// `$1` id, `$2` scope, `$3` after, `$4` before, `$5` limit; newest first.
    pub(crate) page_newest: Arc<str>,
    /// As `page_newest`, oldest first.
    pub(crate) page_oldest: Arc<str>,
    /// `"schema"`, quoted.
    schema: String,
}

impl Statements {
    pub(crate) fn new(quoted_schema: &str) -> Self {
        let s = quoted_schema;
        let c = CONVERSATION_COLUMNS;
        let m = MESSAGE_COLUMNS;
        let lm = LATERAL_MESSAGE_COLUMNS;
        let page = |order: &str| -> Arc<str> {
            format!(
                "SELECT {lm} FROM {s}.conversations c \
                 LEFT JOIN LATERAL (SELECT {m} FROM {s}.messages \
                   WHERE conversation_id = c.id AND seq > $3 AND seq < $4 \
                   ORDER BY seq {order} LIMIT $5) m ON true \
                 WHERE c.id = $1 AND c.scope = $2"
            )
            .into()
        };
        Self {
            get: format!("SELECT {c} FROM {s}.conversations WHERE id = $1 AND scope = $2").into(),
            lock: format!(
                "SELECT {c} FROM {s}.conversations WHERE id = $1 AND scope = $2 FOR NO KEY UPDATE"
            )
            .into(),
            insert_conversation: format!(
                "INSERT INTO {s}.conversations ({c}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            )
            .into(),
            update_conversation: format!(
                "UPDATE {s}.conversations SET title = $2, title_source = $3, updated_at = $4, \
                 pinned = $5, archived = $6, metadata = $7, version = $8 WHERE id = $1"
            )
            .into(),
            set_title: format!(
                "UPDATE {s}.conversations SET title = $2, title_source = $3, version = $4 \
                 WHERE id = $1"
            )
            .into(),
            delete: format!("DELETE FROM {s}.conversations WHERE id = $1 AND scope = $2").into(),
            stored_messages: format!(
                "SELECT {m} FROM {s}.messages WHERE conversation_id = $1 AND id = ANY($2)"
            )
            .into(),
            append: format!(
                "WITH inserted AS ( \
                   INSERT INTO {s}.messages ({m}) \
                   SELECT n.id, $1, n.seq, n.role, n.content, n.tool_calls, n.tool_call_id, \
                          n.metadata, $9 \
                   FROM UNNEST($2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::jsonb[], \
                               $7::text[], $8::jsonb[]) \
                     AS n(seq, id, role, content, tool_calls, tool_call_id, metadata) \
                 ) \
                 UPDATE {s}.conversations SET message_count = $10, version = $11, updated_at = $9 \
                 WHERE id = $1"
            )
            .into(),
            window: format!(
                "SELECT {lm} FROM {s}.conversations c \
                 LEFT JOIN LATERAL (SELECT {m} FROM {s}.messages \
                   WHERE conversation_id = c.id ORDER BY seq DESC LIMIT $3) m ON true \
                 WHERE c.id = $1 AND c.scope = $2"
            )
            .into(),
            page_newest: page("DESC"),
            page_oldest: page("ASC"),
            schema: s.to_owned(),
        }
    }

    /// One page of a list: `$1` scope, `$2` limit (rows to read), then the cursor's
    /// fields when `with_cursor` (`pinned` only when `pinned_first`, `updated_at`,
    /// `id`), then the title needle when `with_filter`.
    ///
    /// Each archive partition is read backwards along its index
    /// (`conversations_list` or `conversations_list_pinned`), starting strictly after
    /// the cursor by row comparison in index order; "archived included" merges the two
    /// partitions' ordered reads, so a page costs its size, not the scope's.
    pub(crate) fn list(
        &self,
        archived: ArchivedFilter,
        pinned_first: bool,
        with_cursor: bool,
        with_filter: bool,
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

/// Quotes an identifier for PostgreSQL.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_numbers_its_parameters_in_bind_order() {
        let statements = Statements::new("\"s\"");
        let sql = statements.list(ArchivedFilter::Exclude, true, true, true);
        assert!(
            sql.contains("(pinned, updated_at, id) < ($3, $4, $5)"),
            "{sql}"
        );
        assert!(
            sql.contains("'abcdefghijklmnopqrstuvwxyz'), $6) > 0"),
            "{sql}"
        );
        let sql = statements.list(ArchivedFilter::Only, false, true, false);
        assert!(sql.contains("(updated_at, id) < ($3, $4)"), "{sql}");
        assert!(sql.contains("archived = true"), "{sql}");
        let sql = statements.list(ArchivedFilter::Include, false, false, true);
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
