//! # conversation-store-postgres
//!
//! [`PostgresStore`]: the [`Store`] of `conversation-core` on PostgreSQL, for hosts
//! that run several instances (processes, machines) sharing one set of conversations.
//! It keeps every promise of the store contract across processes, not only across
//! tasks: any number of instances may append to the same conversation at once and the
//! `seq`s stay gap-free, with no lost message and no deadlock.
//!
//! ## Connecting
//!
//! ```no_run
//! use std::sync::Arc;
//! use conversation_core::{Conversations, Store};
//! use conversation_store_postgres::{PostgresOptions, PostgresStore};
//!
//! # async fn run() -> conversation_core::Result<()> {
//! // A pool of its own, tables in the `public` schema:
//! let store = PostgresStore::connect("postgres://app@db.internal/app").await?;
//!
//! // Or a schema of the host's choosing and a smaller pool:
//! let store = PostgresStore::connect_with(
//!     "postgres://app@db.internal/app",
//!     PostgresOptions::new().schema("conversations").max_connections(5),
//! )
//! .await?;
//!
//! // Or the host's own pool (its size and timeouts are the host's):
//! # let pool: sqlx::PgPool = unimplemented!();
//! let store = PostgresStore::from_pool(pool).await?;
//!
//! let service = Conversations::new(Arc::new(store) as Arc<dyn Store>);
//! # Ok(()) }
//! ```
//!
//! Connecting runs the embedded migrations (unless
//! [`PostgresOptions::run_migrations`] turns that off). They create the schema if it
//! does not exist, and record what they applied in a table of their own,
//! `conversation_store_migrations` ([`MIGRATIONS_TABLE`]) inside that schema, so a
//! host's own migrations (sqlx's `_sqlx_migrations` or any other tool's) never collide
//! with ours, even with equal version numbers. Several instances starting at once
//! take turns: the migrator holds an advisory lock while it runs.
//!
//! ## The schema
//!
//! Every statement names its tables as `"<schema>".conversations` and
//! `"<schema>".messages`, so the store works in any schema without touching the
//! `search_path` of the host's connections. A schema name is 1 to 63 ASCII letters,
//! digits or underscores, not starting with a digit or `pg_`, and is case-sensitive
//! (it is always quoted).
//!
//! - `conversations`: `id uuid` primary key, `scope text`, `title`,
//!   `title_source text` (CHECKed), `created_at`/`updated_at timestamptz`,
//!   `message_count`, `pinned`, `archived`, `metadata jsonb`, `version`; indexes
//!   `(scope, archived, updated_at, id)` and `(scope, archived, pinned, updated_at, id)`
//!   for the two list orders, read backwards.
//! - `messages`: primary key `(conversation_id, seq)`, `UNIQUE (conversation_id, id)`
//!   (the idempotency key), `role text` (CHECKed), `content text`,
//!   `tool_calls jsonb`, `tool_call_id`, `metadata jsonb`, `created_at timestamptz`;
//!   `ON DELETE CASCADE` from its conversation.
//!
//! Timestamps are taken from [`conversation_core::now`] (UTC, whole milliseconds) on
//! the instance that writes, and never move backwards for one conversation even when
//! instances' clocks differ a little: an append or edit stamps
//! `max(now, updated_at)`.
//!
//! ## Appends across processes
//!
//! One append is one `READ COMMITTED` transaction: it locks the conversation row
//! (`SELECT … FOR NO KEY UPDATE`), looks up the caller-supplied ids already stored,
//! checks the expected version only if something new remains, inserts the new
//! messages with `seq = message_count + 1, …` and moves `message_count`, `version` and
//! `updated_at`, then commits. Appenders of one conversation queue on its row lock,
//! each reading the count its predecessor committed, so `seq` is gap-free without
//! serialization failures; every transaction takes exactly one row lock, so there is
//! no lock cycle to deadlock on.
//!
//! ## Transient failures
//!
//! These surface as [`Error::Unavailable`] ([`Error::is_transient`] is `true`); the
//! same call may succeed later: I/O errors (connection refused, reset or lost), a pool
//! that found no free connection within its acquire timeout, and the SQLSTATEs of
//! class `08` (connection exception), `40001` (serialization failure), `40P01`
//! (deadlock), `53300` (too many connections), `55P03` (lock not available), `57014`
//! (statement timeout), `57P01`/`57P02`/`57P03` (server shutting down, crashed or
//! starting). Anything else is [`Error::Backend`]. Retrying an append whose
//! acknowledgement was lost is safe when its messages carry caller ids
//! ([`NewMessage::with_id`](conversation_core::NewMessage::with_id)): the retry finds
//! them stored and writes nothing. Error messages name the operation and the server's
//! message, never the connection URL.
//!
//! The store emits `tracing` events (target `conversation_store_postgres`) and never
//! installs a subscriber.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use conversation_core::{
    Appended, Conversation, ConversationId, ConversationPatch, ConversationQuery, Error, Limits,
    Message, MessageId, MessagePage, MessageQuery, MessageRange, NewConversation, NewMessage, Page,
    Result, Scope, Store, TitleOutcome, TitleSource, automatic_title_applies,
    check_expected_version, now,
};
use serde_json::Value;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::postgres::{PgArguments, PgConnection, PgRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Connection as _, Executor as _, Postgres, Row as _, SqlSafeStr as _};
use uuid::Uuid;

pub use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

mod error;
mod rows;
mod sql;

use error::op;
use sql::{Statements, quote_identifier};

/// The schema used when none is chosen.
pub const DEFAULT_SCHEMA: &str = "public";

/// The name of the table, inside the store's schema, that records which of the
/// store's migrations were applied.
pub const MIGRATIONS_TABLE: &str = "conversation_store_migrations";

/// The embedded migrations, in order. Never edit one that has shipped: add another.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "conversations and messages",
    include_str!("../migrations/0001_conversations_and_messages.sql"),
)];

/// How [`PostgresStore`] connects and where it keeps its tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    schema: String,
    max_connections: u32,
    acquire_timeout: Duration,
    limits: Limits,
    run_migrations: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: DEFAULT_SCHEMA.to_owned(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            limits: Limits::default(),
            run_migrations: true,
        }
    }
}

impl PostgresOptions {
    /// The defaults: schema `public`, at most 10 connections, a 5 second acquire
    /// timeout, the default [`Limits`], migrations run on connect.
    pub fn new() -> Self {
        Self::default()
    }

    /// The schema holding the store's tables and its migrations table; created if
    /// missing. See the [crate docs](crate#the-schema) for the names accepted.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most connections the store's own pool opens (ignored by
    /// [`PostgresStore::from_pool_with`], whose pool is the host's).
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// How long a call waits for a free connection of the store's own pool before it
    /// fails with [`Error::Unavailable`] (ignored by [`PostgresStore::from_pool_with`]).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The size limits the store enforces (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether connecting runs the embedded migrations (default `true`). A host that
    /// turns this off runs [`PostgresStore::migrate`] itself, e.g. from a deploy step
    /// with a role that may create tables.
    pub fn run_migrations(mut self, run: bool) -> Self {
        self.run_migrations = run;
        self
    }

    fn checked_schema(&self) -> Result<&str> {
        let name = self.schema.as_str();
        let bad = |reason: &str| Err(Error::invalid("schema", reason));
        if name.is_empty() || name.len() > 63 {
            return bad("must be 1 to 63 characters long");
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return bad("only ASCII letters, digits and underscores are accepted");
        }
        if name.as_bytes()[0].is_ascii_digit() {
            return bad("must not start with a digit");
        }
        if name.to_ascii_lowercase().starts_with("pg_") {
            return bad("names starting with pg_ are reserved by PostgreSQL");
        }
        Ok(name)
    }
}

/// The plan PostgreSQL chose for one of the store's hot reads; see
/// [`PostgresStore::explain_reads`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryPlan {
    /// Which read, e.g. `"window of 20"`.
    pub read: &'static str,
    /// The text of `EXPLAIN` for that read's exact statement and parameters.
    pub plan: String,
}

/// A [`Store`] on PostgreSQL; see the [crate docs](crate).
///
/// Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Whether [`Store::close`] closes the pool: only a pool the store opened.
    owns_pool: bool,
    sql: Arc<Statements>,
    schema: Arc<str>,
    limits: Limits,
}

impl fmt::Debug for PostgresStore {
    /// Shows the schema and the pool's state; never the connection options, which
    /// may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool.size())
            .field("pool_idle", &self.pool.num_idle())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects with [`PostgresOptions::default`]: a pool of its own, tables in
    /// `public`, migrations run.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `url`) for a URL that is not a PostgreSQL one;
    /// [`Error::Unavailable`] when the server cannot be reached;
    /// [`Error::Backend`] when it refuses (credentials, missing database,
    /// privileges) or a migration fails.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects with `options`.
    ///
    /// # Errors
    /// As [`PostgresStore::connect`], and [`Error::InvalidInput`] (field `schema`)
    /// for a schema name that is not accepted.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self> {
        options.checked_schema()?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::invalid(
                "url",
                "not a PostgreSQL URL: it starts with postgres:// or postgresql://",
            ));
        }
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("url", format!("not a PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(op("connect to PostgreSQL"))?;
        let mut store = Self::from_pool_with(pool, options).await?;
        store.owns_pool = true;
        Ok(store)
    }

    /// Uses the host's pool, with tables in `public`, migrations run.
    ///
    /// # Errors
    /// As [`PostgresStore::migrate`].
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        Self::from_pool_with(pool, PostgresOptions::default()).await
    }

    /// Uses the host's pool with `options` (their pool size and acquire timeout are
    /// ignored: the pool is configured already).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `schema`) for a schema name that is not
    /// accepted, and those of [`PostgresStore::migrate`] when migrations run.
    pub async fn from_pool_with(pool: PgPool, options: PostgresOptions) -> Result<Self> {
        let schema = options.checked_schema()?.to_owned();
        let store = Self {
            sql: Arc::new(Statements::new(&quote_identifier(&schema))),
            schema: schema.into(),
            pool,
            owns_pool: false,
            limits: options.limits,
        };
        if options.run_migrations {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Applies the embedded migrations that are not applied yet: creates the schema
    /// if needed, then the tables, recording each step in [`MIGRATIONS_TABLE`] inside
    /// the schema. Safe to run from many instances at once, and a no-op when
    /// everything is applied.
    ///
    /// The migrations run on a connection of their own, opened with the pool's
    /// connect options, whose `search_path` is the store's schema; the pool's
    /// connections are left as they are.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached; [`Error::Backend`]
    /// when a migration fails or an applied one differs from the embedded one.
    pub async fn migrate(&self) -> Result<()> {
        let quoted = quote_identifier(&self.schema);
        let mut migrator = Migrator::with_migrations(
            MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        (*description).into(),
                        MigrationType::Simple,
                        sql.into_sql_str(),
                        false,
                    )
                })
                .collect(),
        );
        migrator.dangerous_set_table_name(format!("{quoted}.{MIGRATIONS_TABLE}"));

        let options = self.pool.connect_options();
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(op("connect to migrate"))?;
        // `CREATE SCHEMA IF NOT EXISTS` needs CREATE on the database even when the
        // schema exists, which a host's role for an existing schema may lack: ask
        // only when it is missing (the migrator creates it under its lock).
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(&*self.schema)
                .fetch_one(&mut conn)
                .await
                .map_err(op("look up the schema"))?;
        if !exists {
            migrator.create_schema(quoted.clone());
        }
        conn.execute(AssertSqlSafe(format!("SET search_path TO {quoted}")))
            .await
            .map_err(op("set the search path to migrate"))?;
        let outcome = migrator.run(&mut conn).await;
        if let Err(err) = conn.close().await {
            tracing::debug!(target: "conversation_store_postgres", %err, "closing the migration connection");
        }
        outcome.map_err(|err| match err {
            MigrateError::Execute(err) => error::convert("run migrations", err),
            MigrateError::ExecuteMigration(err, version) => {
                error::convert(&format!("run migration {version}"), err)
            }
            other => Error::backend(format!("run migrations: {other}"), other),
        })?;
        tracing::debug!(target: "conversation_store_postgres", schema = %self.schema, "migrations applied");
        Ok(())
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The `EXPLAIN` output of the store's hot reads (get, list pages in each order
    /// and archive filter, window, message pages), as issued for the conversation
    /// `id` of `scope`: the exact statements and parameters the store itself sends.
    /// For operators checking that every hot read is an index seek on their data.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the conversation is not in `scope`; the errors of a
    /// read otherwise.
    pub async fn explain_reads(&self, scope: &Scope, id: ConversationId) -> Result<Vec<QueryPlan>> {
        use conversation_core::ArchivedFilter;

        let conversation = self.get_conversation(scope, id).await?;
        let half = conversation.message_count / 2;
        let mut reads = vec![
            ("get conversation", self.get_read(scope, id)),
            ("window of 20", self.window_read(scope, id, 20)),
            (
                "message page, newest",
                self.page_read(scope, id, &MessageQuery::latest().range()?),
            ),
            (
                "message page, after a seq",
                self.page_read(scope, id, &MessageQuery::after(half).range()?),
            ),
            (
                "message page, before a seq",
                self.page_read(scope, id, &MessageQuery::before(half.max(1)).range()?),
            ),
        ];
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
        let mut plans = Vec::with_capacity(reads.len());
        for (read, statement) in reads {
            let rows = statement
                .query(true)
                .fetch_all(&self.pool)
                .await
                .map_err(op("explain a read"))?;
            let lines = rows
                .iter()
                .map(|row| row.try_get::<String, _>(0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(op("explain a read"))?;
            plans.push(QueryPlan {
                read,
                plan: lines.join("\n"),
            });
        }
        Ok(plans)
    }

    async fn begin(&self, what: &'static str) -> Result<sqlx::Transaction<'static, Postgres>> {
        // Explicit, whatever the server's default_transaction_isolation: the row lock
        // plus a fresh snapshot per statement is what keeps seq gap-free without
        // serialization failures.
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(op(what))
    }

    /// Commits on success, rolls back (at once, releasing the row lock) on failure.
    async fn finish<T>(
        tx: sqlx::Transaction<'static, Postgres>,
        outcome: Result<T>,
        what: &'static str,
    ) -> Result<T> {
        match outcome {
            Ok(value) => {
                tx.commit().await.map_err(op(what))?;
                Ok(value)
            }
            Err(err) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(target: "conversation_store_postgres", %rollback, "rollback failed; the connection is discarded");
                }
                Err(err)
            }
        }
    }

    /// Locks and reads a conversation row for the rest of the transaction.
    async fn lock(
        &self,
        conn: &mut PgConnection,
        scope: &Scope,
        id: ConversationId,
        what: &'static str,
    ) -> Result<Conversation> {
        let row = sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.lock)))
            .bind(id.as_uuid())
            .bind(scope.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(op(what))?;
        row.as_ref()
            .map(rows::conversation)
            .transpose()?
            .ok_or_else(Error::conversation_not_found)
    }

    async fn append_locked(
        &self,
        conn: &mut PgConnection,
        scope: &Scope,
        id: ConversationId,
        messages: Vec<NewMessage>,
        expected_version: Option<u64>,
    ) -> Result<Appended> {
        const WHAT: &str = "append messages";
        let mut conversation = self.lock(conn, scope, id, WHAT).await?;
        let caller_ids: Vec<Uuid> = messages
            .iter()
            .filter_map(|m| m.id.map(Uuid::from))
            .collect();
        let mut stored: HashMap<MessageId, Message> = HashMap::new();
        if !caller_ids.is_empty() {
            let found = sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.stored_messages)))
                .bind(id.as_uuid())
                .bind(&caller_ids)
                .fetch_all(&mut *conn)
                .await
                .map_err(op(WHAT))?;
            for row in &found {
                if let Some(message) = rows::message(row)? {
                    stored.insert(message.id, message);
                }
            }
        }
        let is_new = |m: &NewMessage| m.id.is_none_or(|mid| !stored.contains_key(&mid));
        if !messages.iter().any(is_new) {
            // A retry of messages all stored already: nothing changes, not even the
            // version, and the expected version is not checked.
            let messages = messages
                .iter()
                .filter_map(|m| m.id.and_then(|mid| stored.get(&mid).cloned()))
                .collect();
            return Ok(Appended {
                conversation,
                messages,
            });
        }
        check_expected_version(expected_version, conversation.version)?;

        let at = now().max(conversation.updated_at);
        let mut seq = conversation.message_count;
        let mut out = Vec::with_capacity(messages.len());
        let mut fresh = Vec::with_capacity(messages.len());
        for message in messages {
            if let Some(existing) = message.id.and_then(|mid| stored.remove(&mid)) {
                out.push(existing);
                continue;
            }
            seq += 1;
            fresh.push(out.len());
            out.push(message.into_message(id, seq, at));
        }
        let new: Vec<&Message> = fresh.iter().map(|&i| &out[i]).collect();
        let seqs = new
            .iter()
            .map(|m| to_i64(m.seq, "seq"))
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<Uuid> = new.iter().map(|m| *m.id.as_uuid()).collect();
        let roles: Vec<&str> = new.iter().map(|m| m.role.as_str()).collect();
        let contents: Vec<&str> = new.iter().map(|m| m.content.as_str()).collect();
        let tool_calls = new
            .iter()
            .map(|m| serde_json::to_value(&m.tool_calls))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::backend("append messages: encode tool calls", e))?;
        let tool_call_ids: Vec<Option<&str>> =
            new.iter().map(|m| m.tool_call_id.as_deref()).collect();
        let metadata: Vec<Value> = new
            .iter()
            .map(|m| Value::Object(m.metadata.clone()))
            .collect();
        let version = conversation.version + 1;
        sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.append)))
            .bind(id.as_uuid())
            .bind(&seqs)
            .bind(&ids)
            .bind(&roles)
            .bind(&contents)
            .bind(&tool_calls)
            .bind(&tool_call_ids)
            .bind(&metadata)
            .bind(at)
            .bind(to_i64(seq, "message_count")?)
            .bind(to_i64(version, "version")?)
            .execute(&mut *conn)
            .await
            .map_err(op(WHAT))?;
        conversation.message_count = seq;
        conversation.version = version;
        conversation.updated_at = at;
        Ok(Appended {
            conversation,
            messages: out,
        })
    }

    async fn update_locked(
        &self,
        conn: &mut PgConnection,
        scope: &Scope,
        id: ConversationId,
        patch: &ConversationPatch,
    ) -> Result<Conversation> {
        const WHAT: &str = "update conversation";
        let mut conversation = self.lock(conn, scope, id, WHAT).await?;
        check_expected_version(patch.expected_version, conversation.version)?;
        patch.apply_to(&mut conversation, now());
        sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.update_conversation)))
            .bind(conversation.id.as_uuid())
            .bind(conversation.title.as_deref())
            .bind(conversation.title_source.as_str())
            .bind(conversation.updated_at)
            .bind(conversation.pinned)
            .bind(conversation.archived)
            .bind(Value::Object(conversation.metadata.clone()))
            .bind(to_i64(conversation.version, "version")?)
            .execute(&mut *conn)
            .await
            .map_err(op(WHAT))?;
        Ok(conversation)
    }

    async fn set_title_locked(
        &self,
        conn: &mut PgConnection,
        scope: &Scope,
        id: ConversationId,
        title: String,
        source: TitleSource,
    ) -> Result<TitleOutcome> {
        const WHAT: &str = "set an automatic title";
        let mut conversation = self.lock(conn, scope, id, WHAT).await?;
        if !automatic_title_applies(conversation.title_source, source) {
            return Ok(TitleOutcome {
                conversation,
                applied: false,
            });
        }
        let version = conversation.version + 1;
        sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.set_title)))
            .bind(id.as_uuid())
            .bind(title.as_str())
            .bind(source.as_str())
            .bind(to_i64(version, "version")?)
            .execute(&mut *conn)
            .await
            .map_err(op(WHAT))?;
        conversation.title = Some(title);
        conversation.title_source = source;
        conversation.version = version;
        Ok(TitleOutcome {
            conversation,
            applied: true,
        })
    }

    fn get_read(&self, scope: &Scope, id: ConversationId) -> Read {
        Read::new(Arc::clone(&self.sql.get))
            .param(Param::Id(*id.as_uuid()))
            .param(Param::Text(scope.as_str().to_owned()))
    }

    fn window_read(&self, scope: &Scope, id: ConversationId, n: usize) -> Read {
        Read::new(Arc::clone(&self.sql.window))
            .param(Param::Id(*id.as_uuid()))
            .param(Param::Text(scope.as_str().to_owned()))
            .param(Param::Int(i64::try_from(n).unwrap_or(i64::MAX)))
    }

    fn page_read(&self, scope: &Scope, id: ConversationId, range: &MessageRange) -> Read {
        // Bounds beyond i64 mean "no bound": no seq reaches them.
        let after = i64::try_from(range.after).unwrap_or(i64::MAX);
        let before = range
            .before
            .map_or(i64::MAX, |before| i64::try_from(before).unwrap_or(i64::MAX));
        let statement = if range.newest_first {
            &self.sql.page_newest
        } else {
            &self.sql.page_oldest
        };
        Read::new(Arc::clone(statement))
            .param(Param::Id(*id.as_uuid()))
            .param(Param::Text(scope.as_str().to_owned()))
            .param(Param::Int(after))
            .param(Param::Int(before))
            // One more than the page, to tell whether more lie beyond it.
            .param(Param::Int(
                i64::try_from(range.limit + 1).unwrap_or(i64::MAX),
            ))
    }

    /// The read of one list page and the page size; it reads one row more than the
    /// page to know whether another page follows.
    fn list_read(&self, scope: &Scope, query: &ConversationQuery) -> Result<(Read, usize)> {
        let limit = query.page_size()?;
        let position = query.position()?;
        let needle = query.title_filter()?;
        let sql = self.sql.list(
            query.archived,
            query.pinned_first,
            position.is_some(),
            needle.is_some(),
        );
        let mut read = Read::new(sql.into())
            .param(Param::Text(scope.as_str().to_owned()))
            .param(Param::Int(to_i64(limit as u64 + 1, "limit")?));
        if let Some(position) = position {
            if query.pinned_first {
                read = read.param(Param::Bool(position.pinned));
            }
            read = read
                .param(Param::Time(position.updated_at))
                .param(Param::Id(*position.id.as_uuid()));
        }
        if let Some(needle) = needle {
            read = read.param(Param::Text(needle));
        }
        Ok((read, limit))
    }

    /// Runs a message read; `None` when the conversation is not in the scope.
    async fn fetch_messages(&self, read: Read, what: &'static str) -> Result<Vec<Message>> {
        let found = read
            .query(false)
            .fetch_all(&self.pool)
            .await
            .map_err(op(what))?;
        if found.is_empty() {
            return Err(Error::conversation_not_found());
        }
        let mut messages = Vec::with_capacity(found.len());
        for row in &found {
            if let Some(message) = rows::message(row)? {
                messages.push(message);
            }
        }
        Ok(messages)
    }
}

fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::Backend {
        message: format!("{what} {value} does not fit in a bigint"),
        source: None,
    })
}

/// One bind parameter of a [`Read`].
#[derive(Debug, Clone)]
enum Param {
    Text(String),
    Int(i64),
    Bool(bool),
    Time(DateTime<Utc>),
    Id(Uuid),
}

/// A read statement with its parameters, run as is or under `EXPLAIN`, so the plan
/// checked is the plan of the statement the store sends.
#[derive(Debug, Clone)]
struct Read {
    sql: Arc<str>,
    params: Vec<Param>,
}

impl Read {
    fn new(sql: Arc<str>) -> Self {
        Self {
            sql,
            params: Vec::new(),
        }
    }

    fn param(mut self, param: Param) -> Self {
        self.params.push(param);
        self
    }

    fn query(&self, explain: bool) -> Query<'static, Postgres, PgArguments> {
        let sql = if explain {
            AssertSqlSafe(format!("EXPLAIN {}", self.sql)).into_sql_str()
        } else {
            AssertSqlSafe(Arc::clone(&self.sql)).into_sql_str()
        };
        self.params
            .iter()
            .fold(sqlx::query(sql), |query, param| match param {
                Param::Text(text) => query.bind(text.as_str()),
                Param::Int(int) => query.bind(*int),
                Param::Bool(flag) => query.bind(*flag),
                Param::Time(at) => query.bind(*at),
                Param::Id(id) => query.bind(*id),
            })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_conversation(
        &self,
        scope: &Scope,
        new: NewConversation,
    ) -> Result<Conversation> {
        self.limits.check_new_conversation(&new)?;
        let conversation = new.into_conversation(scope.clone(), now());
        sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.insert_conversation)))
            .bind(conversation.id.as_uuid())
            .bind(scope.as_str())
            .bind(conversation.title.as_deref())
            .bind(conversation.title_source.as_str())
            .bind(conversation.created_at)
            .bind(conversation.updated_at)
            .bind(0_i64)
            .bind(false)
            .bind(false)
            .bind(Value::Object(conversation.metadata.clone()))
            .bind(1_i64)
            .execute(&self.pool)
            .await
            .map_err(op("create conversation"))?;
        Ok(conversation)
    }

    async fn get_conversation(&self, scope: &Scope, id: ConversationId) -> Result<Conversation> {
        let row: Option<PgRow> = self
            .get_read(scope, id)
            .query(false)
            .fetch_optional(&self.pool)
            .await
            .map_err(op("get conversation"))?;
        row.as_ref()
            .map(rows::conversation)
            .transpose()?
            .ok_or_else(Error::conversation_not_found)
    }

    async fn list_conversations(
        &self,
        scope: &Scope,
        query: &ConversationQuery,
    ) -> Result<Page<Conversation>> {
        let (read, limit) = self.list_read(scope, query)?;
        let found = read
            .query(false)
            .fetch_all(&self.pool)
            .await
            .map_err(op("list conversations"))?;
        let items = found
            .iter()
            .map(rows::conversation)
            .collect::<Result<Vec<_>>>()?;
        Ok(query.page_from(items, limit))
    }

    async fn update_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        patch: ConversationPatch,
    ) -> Result<Conversation> {
        self.limits.check_patch(&patch)?;
        if patch.is_empty() {
            let conversation = self.get_conversation(scope, id).await?;
            check_expected_version(patch.expected_version, conversation.version)?;
            return Ok(conversation);
        }
        let mut tx = self.begin("update conversation").await?;
        let outcome = self.update_locked(&mut tx, scope, id, &patch).await;
        Self::finish(tx, outcome, "update conversation").await
    }

    async fn delete_conversation(&self, scope: &Scope, id: ConversationId) -> Result<()> {
        let done = sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.delete)))
            .bind(id.as_uuid())
            .bind(scope.as_str())
            .execute(&self.pool)
            .await
            .map_err(op("delete conversation"))?;
        if done.rows_affected() == 0 {
            return Err(Error::conversation_not_found());
        }
        Ok(())
    }

    async fn append_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        messages: Vec<NewMessage>,
        expected_version: Option<u64>,
    ) -> Result<Appended> {
        self.limits.check_messages(&messages)?;
        let mut tx = self.begin("append messages").await?;
        let outcome = self
            .append_locked(&mut tx, scope, id, messages, expected_version)
            .await;
        Self::finish(tx, outcome, "append messages").await
    }

    async fn list_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &MessageQuery,
    ) -> Result<MessagePage> {
        let range = query.range()?;
        let mut items = self
            .fetch_messages(self.page_read(scope, id, &range), "list messages")
            .await?;
        let has_more = items.len() > range.limit;
        items.truncate(range.limit);
        if range.newest_first {
            items.reverse();
        }
        Ok(MessagePage { items, has_more })
    }

    async fn recent_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        n: usize,
    ) -> Result<Vec<Message>> {
        self.limits.check_recent_count(n)?;
        let mut messages = self
            .fetch_messages(self.window_read(scope, id, n), "read recent messages")
            .await?;
        messages.reverse();
        Ok(messages)
    }

    async fn set_title_unless_user(
        &self,
        scope: &Scope,
        id: ConversationId,
        title: String,
        source: TitleSource,
    ) -> Result<TitleOutcome> {
        self.limits.check_automatic_title(&title, source)?;
        let mut tx = self.begin("set an automatic title").await?;
        let outcome = self
            .set_title_locked(&mut tx, scope, id, title, source)
            .await;
        Self::finish(tx, outcome, "set an automatic title").await
    }

    async fn health(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| crate::error::convert("checking the server", e))
    }

    /// Closes the pool the store opened ([`PostgresStore::connect`]); a host's pool
    /// ([`PostgresStore::from_pool`]) is left open.
    async fn close(&self) {
        if self.owns_pool {
            self.pool.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        for good in ["public", "conv", "Conv_2", "_x", &"a".repeat(63)] {
            assert!(
                PostgresOptions::new().schema(good).checked_schema().is_ok(),
                "{good}"
            );
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "a\"b",
            "pg_catalog",
            "PG_x",
            "é",
            &"a".repeat(64),
        ] {
            let err = PostgresOptions::new()
                .schema(bad)
                .checked_schema()
                .unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput { field, .. } if field == "schema"),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|(v, _, _)| *v).collect();
        let expected: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
        assert_eq!(versions, expected);
    }
}
