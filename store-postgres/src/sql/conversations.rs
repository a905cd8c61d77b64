//! The statements of conversation rows: read, lock, insert, update, delete, a list page.

use std::fmt::Write as _;
use std::sync::Arc;

use conversation_core::ArchivedFilter;

use super::{CONVERSATION_COLUMNS, Statements};

/// ASCII-only case folding: PostgreSQL's `lower()` folds every letter, and the
/// contract folds only `A`–`Z`, the same in every store.
const ASCII_FOLD: &str =
    "translate(title, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')";

pub(super) fn get(s: &str) -> Arc<str> {
    let c = CONVERSATION_COLUMNS;
    format!("SELECT {c} FROM {s}.conversations WHERE id = $1 AND scope = $2").into()
}

pub(super) fn lock(s: &str) -> Arc<str> {
    let c = CONVERSATION_COLUMNS;
    format!(
        "SELECT {c}, head_seq, head_depth FROM {s}.conversations \
         WHERE id = $1 AND scope = $2 FOR NO KEY UPDATE"
    )
    .into()
}

pub(super) fn insert_conversation(s: &str) -> Arc<str> {
    let c = CONVERSATION_COLUMNS;
    format!(
        "INSERT INTO {s}.conversations ({c}, title_words) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                 $17, $18, $19::tsvector) \
         ON CONFLICT (id) DO NOTHING RETURNING 1 AS inserted"
    )
    .into()
}

pub(super) fn update_conversation(s: &str) -> Arc<str> {
    format!(
        "UPDATE {s}.conversations SET title = $2, title_source = $3, updated_at = $4, \
         pinned = $5, archived = $6, metadata = $7, version = $8, head_id = $9, \
         head_seq = $10, head_depth = $11, archived_at = $12, title_words = $13::tsvector \
         WHERE id = $1"
    )
    .into()
}

pub(super) fn set_title(s: &str) -> Arc<str> {
    format!(
        "UPDATE {s}.conversations SET title = $2, title_source = $3, version = $4, \
         title_words = $5::tsvector WHERE id = $1"
    )
    .into()
}

pub(super) fn delete_conversation(s: &str) -> Arc<str> {
    format!("DELETE FROM {s}.conversations WHERE id = $1 AND scope = $2").into()
}

pub(super) fn delete_locked(s: &str) -> Arc<str> {
    format!("DELETE FROM {s}.conversations WHERE id = $1").into()
}

pub(super) fn scope_of(s: &str) -> Arc<str> {
    format!("SELECT scope FROM {s}.conversations WHERE id = $1").into()
}

impl Statements {
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
