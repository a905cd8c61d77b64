//! The statements of retention.

use std::fmt::Write as _;

use super::Statements;

impl Statements {
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
