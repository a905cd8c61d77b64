//! # conversation-store-postgres
//!
//! [`PostgresStore`]: the [`Store`] of `conversation-core` on PostgreSQL, for hosts
//! that run several instances (processes, machines) sharing one set of conversations.
//! It keeps every promise of the store contract across processes, not only across
//! tasks: any number of instances may append to, branch, switch, delete in and fork
//! the same conversation at once, with gap-free `seq`s, no lost message, no orphan
//! and no deadlock.
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
//! ## Migrations
//!
//! Connecting runs the embedded migrations (unless
//! [`PostgresOptions::run_migrations`] turns that off; then the host calls
//! [`PostgresStore::migrate`]). They create the schema if it does not exist and record
//! what they applied in a table of their own, [`MIGRATIONS_TABLE`], inside that schema,
//! so a host's own migrations (sqlx's `_sqlx_migrations` or any other tool's) never
//! collide with ours, even with equal version numbers. Several instances starting at
//! once take turns: the migrator holds an advisory lock while it runs.
//!
//! - `0001`: conversations and messages.
//! - `0002`: the message tree. It turns every existing conversation into a linear
//!   tree: each message's parent is the message before it, the last message is the
//!   head, every message is on the active path, `last_seq` is the last seq. It
//!   rewrites every message row once (a one-time cost in proportion to the table).
//!   Instances of the previous release cannot write once it is applied (their
//!   inserts lack the tree's columns and fail, rather than leave messages outside
//!   the tree): stop them before migrating.
//! - `0003`: runs, search, lifecycle. Adds `archived_at` (an archived conversation
//!   counts as archived at its last activity), `active_run_id` and the usage totals to
//!   conversations, the `runs` table, the search columns with their GIN indexes, the
//!   GIN index of metadata and the retention indexes. The search columns of existing
//!   rows are filled by the migrator right after the SQL (the words are cut in Rust,
//!   see "Search"), in batches of 200 rows walking the primary keys, under an advisory
//!   lock so instances starting together fill each row once: a one-time cost in
//!   proportion to the messages. Stop instances of the previous release first: their
//!   messages would not be indexed.
//!
//! ## TLS
//!
//! The URL's `sslmode` decides: `prefer` (PostgreSQL's default) uses TLS when the
//! server offers it, `require` insists on it, `verify-ca` also checks the server's
//! certificate against the trusted roots, and `verify-full` checks the host name too;
//! `sslrootcert=/path/ca.pem` adds a root (a private CA, a cloud provider's bundle),
//! e.g. `postgres://app@db.internal/app?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem`.
//! Client certificates go in `sslcert` and `sslkey`.
//!
//! Which TLS implementation does the work is a cargo feature, forwarded to sqlx:
//!
//! | feature | TLS by | trusted roots |
//! |---|---|---|
//! | `tls-rustls-ring` (default) | rustls with *ring* (a small C and assembly build) | Mozilla's, built in (webpki-roots), and `sslrootcert` |
//! | `tls-rustls-ring-native-roots` | rustls with *ring* | the operating system's, and `sslrootcert` |
//! | `tls-rustls-aws-lc-rs` | rustls with aws-lc-rs (builds aws-lc-sys, a large C library) | Mozilla's, built in, and `sslrootcert` |
//! | `tls-native-tls` | the platform's library (OpenSSL on Linux) | the operating system's, and `sslrootcert` |
//!
//! To choose another than the default, turn default features off
//! (`default-features = false, features = ["tls-native-tls"]`): when several are on,
//! sqlx uses native-tls over rustls, and *ring* over aws-lc-rs. With none, the store
//! speaks plaintext only, and a URL asking for `sslmode=require` fails to connect. A
//! failed handshake (an untrusted certificate, a host name that does not match) is an
//! [`Error::Backend`]: trying again cannot cure it.
//!
//! ## The schema
//!
//! Every statement names its tables as `"<schema>".conversations` and
//! `"<schema>".messages`, so the store works in any schema without touching the
//! `search_path` of the host's connections. A schema name is 1 to 63 ASCII letters,
//! digits or underscores, not starting with a digit or `pg_`, and is case-sensitive
//! (it is always quoted).
//!
//! - `conversations`: the [`Conversation`] columns (`head_id`, `last_seq`,
//!   `archived_at`, `active_run_id` and the usage as `prompt_tokens`,
//!   `completion_tokens`, `total_tokens` included), and `title_words`; `(id, head_id)` references a message of the conversation, so the head
//!   is always a stored message; `head_seq` and `head_depth` keep the head's place, so
//!   that an append after it reads nothing but the row it locks.
//! - `messages`: primary key `(conversation_id, seq)`, the [`Message`] columns,
//!   `parent_id` (referencing `(conversation_id, id)`: a parent is always a message of
//!   the same conversation, and a message whose parent is gone cannot exist), and four
//!   columns of the tree kept by the store: `depth` (1 for a root), `sibling_index`
//!   (its place among its siblings), `last_sibling` and `on_path`; and `words`, its
//!   content's words. `ON DELETE CASCADE` from its conversation.
//! - `runs`: primary key `(conversation_id, id)`, the [`Run`] columns (`error` and
//!   `pending_tool_calls` as JSON). `ON DELETE CASCADE` from its conversation.
//! - `search_state`: the words rule the search columns were cut with.
//!
//! | read | index |
//! |---|---|
//! | a conversation | primary key `id` |
//! | a list page | `conversations_by_activity (scope, archived, updated_at, id)`, `conversations_by_pin (scope, archived, pinned, updated_at, id)`, read backwards |
//! | the window, a page of the path | `messages_on_path (conversation_id, seq) WHERE on_path` |
//! | a page of the whole tree | primary key `(conversation_id, seq)` |
//! | a message, an idempotent retry | `messages_by_id (conversation_id, id)` (unique) |
//! | siblings, walks down a subtree | `messages_by_parent (conversation_id, parent_id, seq)`, and `messages_roots (conversation_id, seq) WHERE parent_id IS NULL` for the roots |
//!
//! | a run | `runs` primary key `(conversation_id, id)` |
//! | a search | `messages_by_words` (GIN on `messages.words`) and `conversations_by_title_words` (GIN on `conversations.title_words`), then the primary keys |
//! | a list with `metadata_equals` | `conversations_by_metadata` (GIN, `jsonb_path_ops`, on `metadata`; `metadata @> filter`), or the list indexes of the scope when the planner finds the scope small |
//! | retention by inactivity | `conversations_by_inactivity (updated_at, id)` across scopes; in one scope both archive partitions of `conversations_by_activity`, merged |
//! | retention by archive age | `conversations_by_archive_age (archived_at, id)` across scopes, `conversations_by_scope_archive_age (scope, archived_at, id)` in one, both partial (`archived_at IS NOT NULL`: only archived conversations have one) |
//!
//! [`PostgresStore::explain_reads`], [`PostgresStore::explain_tree_writes`] and
//! [`PostgresStore::explain_search_and_retention`] show the plans PostgreSQL chooses
//! for these statements on the host's own data.
//!
//! ## The message tree
//!
//! The **active path** is stored as a flag, `on_path`, with the partial index
//! `messages_on_path`: the window is the last `n` entries of that index and a page of
//! the path is a range of it, one index range read whatever the size of the tree.
//! Walking parent links from the head instead (a recursive query, one index probe per
//! message) measured twice as slow for a window of 20 (160 µs against 82 µs a call
//! over loopback on a 1,000,000-message branch; 230 µs against 110 µs on 20,000
//! messages in 200 branches), and cannot page from an arbitrary seq without walking
//! down to it. A path table (`(conversation_id, seq)` rows joined to `messages`) reads
//! at 87 and 186 µs and costs an extra row per append. The flag costs a linear
//! append nothing; moving the head (a branch, a switch, a deletion on the path)
//! rewrites the flag of the messages that leave or join the path, found by walking up
//! from the new head to the old path and by a range of `messages_on_path`. That is
//! what a move touches, and no more: switching between two branches of 100 messages
//! rewrites about 200 rows (a few milliseconds), but editing the 10th message of a
//! branch of 1,000,000 takes 999,990 messages off the path, once.
//!
//! Each message's **siblings** come with every read. Two columns keep them cheap:
//! `sibling_index` (kept exact: a deletion moves the later siblings down) and
//! `last_sibling`. A message that is its parent's only child (most messages) reads
//! its siblings from its own row; others read the ids around them with two range
//! reads of at most [`SIBLING_WINDOW`](conversation_core::SIBLING_WINDOW) entries of
//! `messages_by_parent`, and their count from the last sibling's index (one more
//! look-up). A message regenerated 10,000 times is read at the cost of one
//! regenerated twice. An append after the head only inserts rows; a branch also
//! clears `last_sibling` on the sibling before it.
//!
//! A switch walks the subtree under the chosen message for its newest leaf; deleting
//! walks the subtree it deletes; a fork copies the path (`depth` messages) with one
//! `INSERT … SELECT` over a walk up the parent links. Each costs what it touches,
//! through `messages_by_parent` and the primary key, never a scan.
//!
//! ## Writes across processes
//!
//! Every write to a conversation is one `READ COMMITTED` transaction that first locks
//! the conversation row (`SELECT … FOR NO KEY UPDATE`): appends, branches, switches,
//! deletions, forks and titles of one conversation queue on that lock, each reading
//! what its predecessor committed, so `seq` is gap-free, the path and the head stay
//! whole, and there are no serialization failures; every transaction takes that one
//! row lock before any other, so there is no lock cycle to deadlock on. An append
//! after the head is one statement after the lock (the messages and the
//! conversation's row; a look-up first when the messages carry caller ids); a branch
//! also looks its parent up and moves the path.
//!
//! Timestamps come from the store's [`Clock`] ([`PostgresOptions::clock`], the system
//! clock by default) through [`conversation_core::backend::stamp`]: UTC, whole
//! milliseconds, never before the conversation's last activity, so they never move
//! backwards even when instances' clocks differ a little.
//!
//! ## Search
//!
//! Titles and message contents (every branch, every role) are searchable through two
//! `tsvector` columns, `conversations.title_words` and `messages.words`, each with a
//! GIN index, written in the transaction of the write that changes the text (create,
//! rename, automatic titles, append, fork, import; a deletion takes the rows and their
//! words with it): what is acknowledged is found, what is deleted is not.
//!
//! - **Words are core's.** PostgreSQL's text-search parser (any configuration,
//!   `simple` included) cuts text its own way: it keeps `a@b.com`, `3.14` and
//!   `well-known` whole beside their parts, keeps diacritics and lowercases by the
//!   database's locale. So the store cuts text with core's rule
//!   ([`tokenize`](conversation_core::backend::tokenize): runs of letters and digits,
//!   lowercased, without diacritics) and writes the column from a `tsvector` literal
//!   of finished lexemes, which PostgreSQL only unquotes: the index holds exactly the
//!   words every store matches. That is also why the columns are written by the store
//!   rather than generated by PostgreSQL: a generated column can only run SQL.
//! - **Scopes are cheap.** Each lexeme is `<scope key>_<word>`, the key 8 hex digits of
//!   a hash of the scope (FNV-1a), so a search, prefixes included, reads its scope's
//!   postings only, however many scopes share the tables; the scope is checked on each
//!   conversation found, so two scopes with the same key cost reads, never a leak.
//! - **User text is never syntax.** The `tsquery` is built from
//!   [`SearchTerms`](conversation_core::backend::SearchTerms) only: each word a quoted
//!   lexeme of the scope, all required (`&`), the last with `:*` when it is a prefix.
//! - **Ranking.** Each matching row (title or message) is scored with `ts_rank`; a
//!   conversation takes its best row's score and its best three rows become the
//!   matches (best first, title first, then by seq), built by core from the stored
//!   text; ties go by newest activity, then id. Ranking reads every matching row of
//!   the scope, so a word most messages of a big scope hold costs more than a rare
//!   one.
//! - **Limits.** A word is cut to 2,046 bytes (PostgreSQL's longest lexeme, key
//!   included), in the index and in queries alike; a text with more distinct words
//!   than a `tsvector` holds (1 MiB: over 60,000 distinct words in one message) keeps
//!   its first ones, and a warning is logged. Scripts without spaces are one word per
//!   run, found by their start, as in every store.
//! - **The rule is recorded.** `search_state.words_rule` holds
//!   [`words_rule`](conversation_core::backend::words_rule); a build whose rule
//!   differs (newer Unicode tables) refills every search column when it migrates.
//!
//! ## Runs
//!
//! A run is a row of `runs`; the conversation carries `active_run_id` and the usage
//! totals. Every run write (start, renew, cancel, finish) is one transaction behind
//! the conversation's row lock, reading the run and settling it at the clock's time
//! first ([`Run::settled`](conversation_core::Run::settled)): a run whose lease passed
//! is stored failed (`abandoned`), adds no usage and stops being the active run;
//! concurrent starts queue on the lock, so one wins and the others get
//! `RunInProgress`. Because the status lives in the table, every instance reads the
//! same: a run started by one process is live for all, and a cancel from another
//! process sets `cancel_requested`, which the runner reads from its next
//! [`Store::renew_run`]. Starting and ending runs change neither `version` nor
//! `updated_at`. Runs go with their conversation (`ON DELETE CASCADE`).
//!
//! ## Deletion and what PostgreSQL keeps
//!
//! Deleting a conversation or a message subtree removes its rows (messages, runs and
//! words with them) in one transaction: from its commit no query of any instance
//! reads, lists or finds them. What PostgreSQL promises about the bytes is less, and
//! the SQLite store's "no recoverable bytes" does not hold here:
//!
//! - A `DELETE` only marks row versions dead. Their bytes stay in the table's and the
//!   indexes' pages (the GIN pending list and posting lists included) until `VACUUM`
//!   (autovacuum, by default when about a fifth of a table has changed) prunes them;
//!   pruning makes the space reusable but does not promise to overwrite it at once,
//!   so until new rows land there the bytes may be read from the data files.
//! - `VACUUM FULL` (or `CLUSTER`, or `pg_repack`) rewrites the table into new files
//!   and drops the old ones: the dead rows are gone from the table's files, but it
//!   takes an exclusive lock for the whole rewrite, and the old files' blocks go back
//!   to the file system, not to zeros.
//! - The write-ahead log holds every inserted row (full-page images included) until
//!   its segments are recycled after checkpoints; WAL archives, replicas, base
//!   backups and `pg_dump` files keep their copies for as long as they are kept.
//!
//! A host that must erase text for good (a legal request, say) deletes it through
//! the store, runs `VACUUM FULL` on `messages` and `conversations` (or lets its
//! maintenance window do it), and expires its WAL archives and backups on its own
//! schedule; encryption at rest with key rotation is the usual way to bound what old
//! copies reveal.
//!
//! ## Transient failures
//!
//! These surface as [`Error::Unavailable`] ([`Error::is_transient`] is `true`); the
//! same call may succeed later: I/O errors (connection refused, reset or lost; not a
//! failed TLS handshake), a pool that found no free connection within its acquire
//! timeout, a closed store, and the SQLSTATEs of class `08` (connection exception),
//! `40001` (serialization failure), `40P01` (deadlock), `53300` (too many
//! connections), `55P03` (lock not available), `57014` (statement timeout),
//! `57P01`/`57P02`/`57P03` (server shutting down, crashed or starting). Anything else is [`Error::Backend`]. Retrying an append whose
//! acknowledgement was lost is safe when its messages carry caller ids
//! ([`NewMessage::with_id`](conversation_core::NewMessage::with_id)): the retry finds
//! them stored and writes nothing. Error messages name the operation and the server's
//! message, never the connection URL.
//!
//! The store emits `tracing` events (target `conversation_store_postgres`) and never
//! installs a subscriber.
//!
//! ## The same thing in the SQLite store
//!
//! | here | `conversation-store-sqlite` |
//! |---|---|
//! | `lib.rs`: [`PostgresStore`], the [`Store`] impl, these docs | `lib.rs` |
//! | `connect.rs`: [`PostgresStore::connect`], [`PostgresStore::from_pool`] | `lib.rs`: `SqliteStore::open`; `connection.rs` |
//! | `options.rs`: [`PostgresOptions`] | `options.rs`: `SqliteOptions` |
//! | `error.rs`: `db` (the `map_err` adapter), `closed`, `bad_row` | `error.rs`: the same |
//! | `rows.rs`: rows to the model, `get`, `to_i64` | `rows.rs` |
//! | `sql.rs`: the statements (doc-hidden, for the plan test and the benches) | `sql.rs` |
//! | `migrate.rs`: `run`, [`MIGRATIONS_TABLE`] | `migrate.rs`: `run`, the same table name |
//! | `read.rs`: `conversation`, `list`, `message_by_id`, `page`, `recent`, on the pool | `read.rs`: the same reads; `readers.rs`: the read connections |
//! | `write.rs`: `append`, `update`, `delete_message`, `fork`, `set_title`, each a transaction behind the conversation's row lock | `write.rs`: the same writes; `writer.rs`: the one writer |
//! | `tree.rs`: `move_path`, `newest_under` and the other steps the writes share | `write.rs`: the same steps |
//! | the active path: `on_path` and `messages_on_path` | the table `message_path` |
//! | `plans.rs`: `EXPLAIN` of the store's own statements ([`PostgresStore::explain_reads`], [`PostgresStore::explain_tree_writes`]) | the plan test's `EXPLAIN QUERY PLAN` of `sql` |
//! | indexes `conversations_by_activity`, `conversations_by_pin`, `messages_by_id`, `messages_by_parent`, `conversations_by_inactivity`, `conversations_by_archive_age`, `conversations_by_scope_archive_age` | the same names |
//! | `search.rs`: core's words as `tsvector` literals, the `tsquery`, the migrator's refill | `search.rs`: core's words in FTS5 |
//! | `runs` table; `write.rs`: `start_run`, `change_run` | `runs` table; `write.rs`: the same |
//! | `messages.words`, `conversations.title_words` with GIN | the FTS5 table `search` |
//! | `conversations_by_metadata` (GIN, `@>`) | the table `conversation_metadata` |

mod connect;
mod error;
mod migrate;
mod options;
mod plans;
mod read;
mod rows;
mod search;
#[doc(hidden)]
pub mod sql;
mod tree;
mod write;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conversation_core::backend::{check_expected_version, truncate_to_millis};
use conversation_core::{
    Append, Appended, Clock, Conversation, ConversationId, ConversationPatch, ConversationQuery,
    Error, ExpiredConversation, ImportOutcome, ImportedConversation, Limits, Message, MessageId,
    MessagePage, MessageQuery, NewConversation, NewRun, Page, RecentQuery, Result, RetentionQuery,
    Run, RunId, RunOutcome, Scope, SearchHit, SearchQuery, Store, TitleOutcome, TitleSource,
};
use sqlx::AssertSqlSafe;

pub use migrate::MIGRATIONS_TABLE;
pub use options::{DEFAULT_SCHEMA, PostgresOptions};
pub use plans::QueryPlan;
pub use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use error::db;
use sql::Statements;

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
    clock: Arc<dyn Clock>,
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
            .field("clock", &self.clock)
            .finish_non_exhaustive()
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
        let conversation =
            new.into_conversation(scope.clone(), truncate_to_millis(self.clock.now()));
        let params = write::insert_params(&conversation)?;
        let inserted = Self::statement(&self.sql.insert_conversation, params)
            .query(false)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("create conversation"))?;
        if inserted.is_none() {
            return Err(Error::Backend {
                message: "create conversation: a new id was taken already".to_owned(),
                source: None,
            });
        }
        Ok(conversation)
    }

    async fn get_conversation(&self, scope: &Scope, id: ConversationId) -> Result<Conversation> {
        self.conversation(scope, id).await
    }

    async fn list_conversations(
        &self,
        scope: &Scope,
        query: &ConversationQuery,
    ) -> Result<Page<Conversation>> {
        self.list(scope, query).await
    }

    async fn update_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        patch: ConversationPatch,
    ) -> Result<Conversation> {
        const WHAT: &str = "update conversation";
        self.limits.check_patch(&patch)?;
        if patch.is_empty() {
            let conversation = self.get_conversation(scope, id).await?;
            check_expected_version(patch.expected_version, conversation.version)?;
            return Ok(conversation);
        }
        let mut tx = self.begin(WHAT).await?;
        let outcome = write::update(self, &mut tx, scope, id, &patch).await;
        Self::finish(tx, outcome, WHAT).await
    }

    async fn delete_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        expected_version: Option<u64>,
    ) -> Result<()> {
        const WHAT: &str = "delete conversation";
        if expected_version.is_some() {
            let mut tx = self.begin(WHAT).await?;
            let outcome = write::delete(self, &mut tx, scope, id, expected_version).await;
            return Self::finish(tx, outcome, WHAT).await;
        }
        let done = sqlx::query(AssertSqlSafe(self.sql.delete_conversation.clone()))
            .bind(id.as_uuid())
            .bind(scope.as_str())
            .execute(&self.pool)
            .await
            .map_err(db("delete conversation"))?;
        if done.rows_affected() == 0 {
            return Err(Error::conversation_not_found());
        }
        Ok(())
    }

    async fn append_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        append: Append,
    ) -> Result<Appended> {
        const WHAT: &str = "append messages";
        self.limits.check_append(&append)?;
        let mut tx = self.begin(WHAT).await?;
        let outcome = write::append(self, &mut tx, scope, id, append).await;
        Self::finish(tx, outcome, WHAT).await
    }

    async fn get_message(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Message> {
        self.message_by_id(scope, id, message).await
    }

    async fn list_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &MessageQuery,
    ) -> Result<MessagePage> {
        self.page(scope, id, query).await
    }

    async fn recent_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &RecentQuery,
    ) -> Result<Vec<Message>> {
        self.recent(scope, id, query).await
    }

    async fn delete_message(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
        expected_version: Option<u64>,
    ) -> Result<Conversation> {
        const WHAT: &str = "delete a message";
        let mut tx = self.begin(WHAT).await?;
        let outcome =
            write::delete_message(self, &mut tx, scope, id, message, expected_version).await;
        Self::finish(tx, outcome, WHAT).await
    }

    async fn fork_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Conversation> {
        const WHAT: &str = "fork a conversation";
        let mut tx = self.begin(WHAT).await?;
        let outcome = write::fork(self, &mut tx, scope, id, message).await;
        Self::finish(tx, outcome, WHAT).await
    }

    async fn set_title_unless_user(
        &self,
        scope: &Scope,
        id: ConversationId,
        title: String,
        source: TitleSource,
    ) -> Result<TitleOutcome> {
        const WHAT: &str = "set an automatic title";
        self.limits.check_automatic_title(&title, source)?;
        let mut tx = self.begin(WHAT).await?;
        let outcome = write::set_title(self, &mut tx, scope, id, title, source).await;
        Self::finish(tx, outcome, WHAT).await
    }

    async fn start_run(&self, scope: &Scope, id: ConversationId, run: NewRun) -> Result<Run> {
        const WHAT: &str = "start a run";
        let mut tx = self.begin(WHAT).await?;
        let outcome = write::start_run(self, &mut tx, scope, id, run).await;
        Self::finish(tx, outcome, WHAT).await
    }

    async fn renew_run(
        &self,
        scope: &Scope,
        id: ConversationId,
        run: RunId,
        lease: Duration,
    ) -> Result<Run> {
        const WHAT: &str = "renew a run";
        let mut tx = self.begin(WHAT).await?;
        let outcome =
            write::change_run(self, &mut tx, scope, id, run, WHAT, write::renew(lease)).await;
        Self::finish(tx, outcome, WHAT).await
    }

    async fn cancel_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
        const WHAT: &str = "cancel a run";
        let mut tx = self.begin(WHAT).await?;
        let outcome = write::change_run(self, &mut tx, scope, id, run, WHAT, write::cancel).await;
        Self::finish(tx, outcome, WHAT).await
    }

    async fn finish_run(
        &self,
        scope: &Scope,
        id: ConversationId,
        run: RunId,
        outcome: RunOutcome,
    ) -> Result<Run> {
        const WHAT: &str = "finish a run";
        let mut tx = self.begin(WHAT).await?;
        let outcome =
            write::change_run(self, &mut tx, scope, id, run, WHAT, write::finish(outcome)).await;
        Self::finish(tx, outcome, WHAT).await
    }

    async fn get_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
        self.run(scope, id, run).await
    }

    async fn search(&self, scope: &Scope, query: &SearchQuery) -> Result<Page<SearchHit>> {
        self.search_page(scope, query).await
    }

    async fn import_conversation(
        &self,
        scope: &Scope,
        conversation: ImportedConversation,
    ) -> Result<ImportOutcome> {
        const WHAT: &str = "import a conversation";
        conversation.check(&self.limits)?;
        let mut tx = self.begin(WHAT).await?;
        let outcome = write::import(self, &mut tx, scope, conversation).await;
        Self::finish(tx, outcome, WHAT).await
    }

    async fn list_expired(&self, query: &RetentionQuery) -> Result<Vec<ExpiredConversation>> {
        self.expired(query).await
    }

    async fn health(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| error::convert("checking the server", e))
    }

    /// Closes the pool the store opened ([`PostgresStore::connect`]); a host's pool
    /// ([`PostgresStore::from_pool`]) is left open.
    async fn close(&self) {
        if self.owns_pool {
            self.pool.close().await;
        }
    }
}
