//! The store's reads as values ([`Read`]: a statement and its parameters), run as they
//! are or under `EXPLAIN`, so that the plans an operator (or the plan test) checks are
//! the plans of the statements the store sends.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use conversation_core::backend::fork_of;
use conversation_core::{
    ArchivedFilter, ConversationId, ConversationQuery, Expiry, MessageQuery, MessageView, Result,
    RetentionQuery, Scope, SearchQuery, Store as _,
};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Postgres, Row as _, SqlSafeStr as _};
use uuid::Uuid;

use crate::PostgresStore;
use crate::error::{db, message_not_found};
use crate::rows::to_i64;

/// The plan PostgreSQL chose for one of the store's statements; see
/// [`PostgresStore::explain_reads`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryPlan {
    /// Which statement, e.g. `"window of 20"`.
    pub read: &'static str,
    /// The text of `EXPLAIN` for that statement with the parameters the store binds.
    pub plan: String,
}

/// One bind parameter of a [`Read`].
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(String),
    OptText(Option<String>),
    Json(serde_json::Value),
    OptJson(Option<serde_json::Value>),
    Int(i64),
    Float(f64),
    OptInt(Option<i64>),
    Bool(bool),
    Time(DateTime<Utc>),
    OptTime(Option<DateTime<Utc>>),
    Id(Uuid),
    OptId(Option<Uuid>),
}

/// A statement with its parameters, run as is or under `EXPLAIN`.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    sql: Arc<str>,
    params: Vec<Param>,
}

impl Read {
    pub(crate) fn new(sql: impl Into<Arc<str>>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    pub(crate) fn param(mut self, param: Param) -> Self {
        self.params.push(param);
        self
    }

    pub(crate) fn query(&self, explain: bool) -> Query<'static, Postgres, PgArguments> {
        let sql = if explain {
            AssertSqlSafe(format!("EXPLAIN {}", self.sql)).into_sql_str()
        } else {
            AssertSqlSafe(Arc::clone(&self.sql)).into_sql_str()
        };
        self.params
            .iter()
            .fold(sqlx::query(sql), |query, param| match param {
                Param::Text(text) => query.bind(text.as_str()),
                Param::OptText(text) => query.bind(text.as_deref()),
                Param::Json(value) => query.bind(value),
                Param::OptJson(value) => query.bind(value),
                Param::Int(int) => query.bind(*int),
                Param::Float(float) => query.bind(*float),
                Param::OptInt(int) => query.bind(*int),
                Param::Bool(flag) => query.bind(*flag),
                Param::Time(at) => query.bind(*at),
                Param::OptTime(at) => query.bind(*at),
                Param::Id(id) => query.bind(*id),
                Param::OptId(id) => query.bind(*id),
            })
    }
}

impl PostgresStore {
    /// The `EXPLAIN` output of the store's hot reads (get, list pages in each order
    /// and archive filter, the window, the window from a message, one message, pages
    /// of the path and of the whole tree, each with its siblings), as issued for the
    /// conversation `id` of `scope`: the exact statements and parameters the store
    /// itself sends. For operators checking that every hot read is an index seek on
    /// their data.
    ///
    /// # Errors
    /// [`Error::NotFound`](conversation_core::Error::NotFound) when the conversation is not in `scope`; the errors of a
    /// read otherwise.
    pub async fn explain_reads(&self, scope: &Scope, id: ConversationId) -> Result<Vec<QueryPlan>> {
        let conversation = self.get_conversation(scope, id).await?;
        let half = conversation.last_seq / 2;
        let head = conversation.head_id.unwrap_or_default();
        let mut reads = vec![
            ("get conversation", self.get_read(scope, id)),
            ("window of 20", self.window_read(scope, id, 20)),
            (
                "window of 20 from a message",
                self.window_from_read(scope, id, head, 20),
            ),
            ("one message", self.message_read(scope, id, head)),
        ];
        for (view, newest, after, oldest, before) in [
            (
                MessageView::Path,
                "path page, newest",
                "path page, after a seq",
                "path page, oldest",
                "path page, before a seq",
            ),
            (
                MessageView::All,
                "tree page, newest",
                "tree page, after a seq",
                "tree page, oldest",
                "tree page, before a seq",
            ),
        ] {
            for (name, query) in [
                (newest, MessageQuery::latest()),
                (after, MessageQuery::after(half)),
                (oldest, MessageQuery::after(0)),
                (before, MessageQuery::before(half.max(1))),
            ] {
                reads.push((name, self.page_read(scope, id, &query.view(view).range()?)));
            }
        }
        let lists: [(&'static str, ConversationQuery); 5] = [
            ("list page, first", ConversationQuery::new()),
            ("list page, after a cursor", ConversationQuery::new()),
            (
                "list page, pinned first, after a cursor",
                ConversationQuery::new().pinned_first(true),
            ),
            (
                "list page, archived included, after a cursor",
                ConversationQuery::new().archived(ArchivedFilter::Include),
            ),
            (
                "list page, archived only, after a cursor",
                ConversationQuery::new().archived(ArchivedFilter::Only),
            ),
        ];
        for (i, (name, query)) in lists.into_iter().enumerate() {
            let query = if i == 0 {
                query
            } else {
                let cursor = query.cursor_after(&conversation);
                query.cursor(cursor)
            };
            reads.push((name, self.list_read(scope, &query)?.0));
        }
        self.explain(reads).await
    }

    /// The `EXPLAIN` output (never run: `EXPLAIN` without `ANALYZE` executes nothing)
    /// of the statements of the tree writes on the conversation `id` of `scope` at its
    /// head: finding a message, the next sibling's place, moving the active path, the
    /// newest leaf under a message, deleting a subtree (of a child and of a root) and
    /// forking. Their cost is what they touch; these plans show it is touched through
    /// indexes.
    ///
    /// # Errors
    /// [`Error::NotFound`](conversation_core::Error::NotFound) when the conversation is not in `scope` or has no message;
    /// the errors of a read otherwise.
    pub async fn explain_tree_writes(
        &self,
        scope: &Scope,
        id: ConversationId,
    ) -> Result<Vec<QueryPlan>> {
        let conversation = self.get_conversation(scope, id).await?;
        let head = conversation.head_id.ok_or_else(message_not_found)?;
        let message = self.get_message(scope, id, head).await?;
        let (seq, parent) = (
            Param::Int(to_i64(message.seq, "seq")?),
            Param::OptId(message.parent_id.map(|p| *p.as_uuid())),
        );
        let conv = Param::Id(*id.as_uuid());
        let head = Param::Id(*head.as_uuid());
        let on = |sql: &Arc<str>, params: Vec<Param>| {
            params
                .into_iter()
                .fold(Read::new(Arc::clone(sql)), Read::param)
        };
        // The parent is the head's for a child, none for a root.
        let delete = |sql: &Arc<str>, parent: Param| {
            on(
                sql,
                vec![
                    conv.clone(),
                    head.clone(),
                    parent.clone(),
                    seq.clone(),
                    parent,
                    Param::Int(2),
                    Param::Time(conversation.updated_at),
                    seq.clone(),
                    seq.clone(),
                ],
            )
        };
        let row = fork_of(
            &conversation,
            message.id,
            1,
            message.id,
            &self.limits,
            conversation.updated_at,
        )?;
        let fork = self.fork_read(id, message.seq, &row)?;
        let reads = vec![
            (
                "resolve a message",
                on(&self.sql.resolve, vec![conv.clone(), head.clone()]),
            ),
            ("count the roots", on(&self.sql.roots, vec![conv.clone()])),
            (
                "move the path",
                on(&self.sql.move_path, vec![conv.clone(), seq.clone()]),
            ),
            (
                "newest leaf under a message",
                on(
                    &self.sql.newest_under,
                    vec![conv.clone(), head.clone(), Param::OptId(None)],
                ),
            ),
            (
                "newest message outside a subtree",
                on(&self.sql.newest_outside, vec![conv.clone(), head.clone()]),
            ),
            (
                "delete a subtree",
                delete(&self.sql.delete_subtree, parent.clone()),
            ),
            (
                "delete a root's subtree",
                delete(&self.sql.delete_root_subtree, Param::OptId(None)),
            ),
            ("fork", fork),
        ];
        self.explain(reads).await
    }

    /// The `EXPLAIN` output of the store's search (a first page for `text` in `scope`,
    /// and a page after a cursor when the first page has a next one), of a list with a
    /// metadata filter (`tag` equal to `text`), and of every variant of
    /// [`Store::list_expired`](conversation_core::Store::list_expired) (by inactivity
    /// or archive age, across scopes or in `scope`, first or after a position), with
    /// the cutoff now: the exact statements the store sends. A search reads the GIN
    /// indexes of the scope's words; retention reads one index range in order, never
    /// every conversation.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](conversation_core::Error::InvalidInput) for a `text`
    /// without words; the errors of a read otherwise.
    pub async fn explain_search_and_retention(
        &self,
        scope: &Scope,
        text: &str,
    ) -> Result<Vec<QueryPlan>> {
        let search = SearchQuery::new(text);
        let mut reads = vec![("search, first page", self.search_read(scope, &search)?.0)];
        let first = self.search(scope, &search.clone().limit(1)).await?;
        if let Some(cursor) = first.next_cursor {
            let after = search.clone().limit(1).cursor(cursor);
            reads.push(("search, after a cursor", self.search_read(scope, &after)?.0));
        }
        let filtered = ConversationQuery::new().metadata_equals("tag", text);
        reads.push((
            "list page, metadata filter",
            self.list_read(scope, &filtered)?.0,
        ));
        let now = Utc::now();
        let position = (
            now - chrono::TimeDelta::days(3650),
            ConversationId::from_uuid(Uuid::nil()),
        );
        let retention: [(&'static str, RetentionQuery); 6] = [
            (
                "retention by inactivity",
                RetentionQuery::new(Expiry::InactiveBefore(now), 100),
            ),
            (
                "retention by inactivity, after a position",
                RetentionQuery::new(Expiry::InactiveBefore(now), 100).after(position.0, position.1),
            ),
            (
                "retention by inactivity in a scope",
                RetentionQuery::new(Expiry::InactiveBefore(now), 100).in_scope(scope.clone()),
            ),
            (
                "retention by archive age",
                RetentionQuery::new(Expiry::ArchivedBefore(now), 100),
            ),
            (
                "retention by archive age in a scope",
                RetentionQuery::new(Expiry::ArchivedBefore(now), 100).in_scope(scope.clone()),
            ),
            (
                "retention by archive age in a scope, pinned too",
                RetentionQuery::new(Expiry::ArchivedBefore(now), 100)
                    .in_scope(scope.clone())
                    .include_pinned(true)
                    .after(position.0, position.1),
            ),
        ];
        for (name, query) in retention {
            reads.push((name, self.expired_read(&query)?));
        }
        self.explain(reads).await
    }

    async fn explain(&self, reads: Vec<(&'static str, Read)>) -> Result<Vec<QueryPlan>> {
        let mut plans = Vec::with_capacity(reads.len());
        for (read, statement) in reads {
            let rows = statement
                .query(true)
                .fetch_all(&self.pool)
                .await
                .map_err(db("explain a statement"))?;
            let lines = rows
                .iter()
                .map(|row| row.try_get::<String, _>(0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("explain a statement"))?;
            plans.push(QueryPlan {
                read,
                plan: lines.join("\n"),
            });
        }
        Ok(plans)
    }
}
