//! # conversation-store-sqlite
//!
//! [`SqliteStore`]: the durable embedded [`Store`] for `conversation-core`, one SQLite
//! file and no server. It is the store most hosts run.
//!
//! ```no_run
//! use std::sync::Arc;
//! use conversation_core::{Conversations, NewConversation, Scope};
//! use conversation_store_sqlite::SqliteStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> conversation_core::Result<()> {
//! let store = SqliteStore::open("data/conversations.db").await?;
//! let service = Conversations::new(Arc::new(store));
//! let scope = Scope::new("tenant-1")?;
//! let chat = service.create(&scope, NewConversation::new()).await?;
//! service.append_user(&scope, chat.id, "hello").await?;
//! # Ok(()) }
//! ```
//!
//! ## Durability
//!
//! The database runs in WAL mode with `synchronous=FULL` unless the host opts into
//! [`Synchronous::Normal`]: a write is acknowledged only after its transaction is
//! committed to disk, so an acknowledged append survives `kill -9` and power loss.
//! Foreign keys are on and a busy timeout is set on every connection the store opens.
//!
//! ## Connections and group commit
//!
//! One writer connection, owned by a background task, carries out every write; a small
//! pool of read-only connections (opened at start and kept, handed out behind a fair
//! semaphore) serves reads, which WAL lets run beside the writer without ever
//! blocking it. Writers queue their requests; the task takes everything queued
//! (up to [`SqliteOptions::max_group_size`]) and runs it in one `BEGIN IMMEDIATE`
//! transaction, each request inside its own `SAVEPOINT`, so that one request's error
//! (`NotFound`, `Conflict`) rolls back only that request. It commits once, and only
//! then answers each request: concurrent appends, to one conversation or many, share
//! one fsync instead of each paying for its own, and nothing is acknowledged before it
//! is durable. A failed commit fails every request of its group. Input is validated
//! with [`Limits`] before a request is queued. Because there is one writer, no caller
//! ever sees `SQLITE_BUSY` from the store's own concurrency; a lock held by another
//! process is waited for up to the busy timeout, then reported as
//! [`Error::Unavailable`].
//!
//! A caller that stops waiting (its future dropped) does not disturb the writer; a
//! write already queued is still carried out. [`SqliteStore::close`] finishes the
//! queued writes and closes the connections; dropping the store does the same in the
//! background.
//!
//! ## Schema
//!
//! Embedded migrations (`sqlx::migrate!`) run when the store opens, recorded in the
//! table `conversation_store_migrations`, so a host running its own sqlx migrations in
//! the same database (in `_sqlx_migrations`) collides with nothing. Ids are 16-byte
//! BLOBs, timestamps INTEGER milliseconds since the epoch (UTC), metadata and tool
//! calls JSON text. Every hot read is an index seek:
//!
//! | read | index |
//! |---|---|
//! | a conversation | primary key `id` (the scope is checked on the row) |
//! | a list page | `(scope, archived, updated_at, id)`, or `(scope, archived, pinned, updated_at, id)` for pinned-first lists |
//! | a window, a message page | `messages` is a `WITHOUT ROWID` table clustered on `(conversation_id, seq)` |
//! | an idempotent retry | unique `(conversation_id, id)` |
//!
//! A list of archived and unarchived conversations together merges the two index
//! ranges. A title filter reads the scope's rows in list order until the page is
//! full, so its cost grows with the rows it skips.

mod error;
mod options;
mod readers;
mod rows;
#[doc(hidden)]
pub mod sql;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use conversation_core::{
    Appended, Conversation, ConversationId, ConversationPatch, ConversationQuery, Error, Limits,
    Message, MessagePage, MessageQuery, NewConversation, NewMessage, Page, Result, Scope, Store,
    TitleOutcome, TitleSource,
};
use sqlx::AssertSqlSafe;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Connection as _, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

pub use options::{SqliteOptions, Synchronous};

use crate::error::{closed, convert};
use crate::readers::{ReaderSet, Readers};
use crate::rows::{ConversationRow, conversations_from_page, messages_from_page, millis, to_i64};
use crate::writer::{Command, Counters, Outcome, WriteOp};

/// The name of the table recording this crate's migrations.
pub const MIGRATIONS_TABLE: &str = "conversation_store_migrations";

/// A durable [`Store`] in one SQLite file; see the [crate docs](crate).
#[derive(Debug)]
pub struct SqliteStore {
    readers: Readers,
    writer: mpsc::Sender<Command>,
    limits: Limits,
    closed: AtomicBool,
    counters: Arc<Counters>,
}

/// What the writer has done since the store opened, for metrics: with group commit,
/// `writes / transactions` is how many writes shared each commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WriteStats {
    /// Transactions committed.
    pub transactions: u64,
    /// Write requests (creates, updates, deletes, appends, titles) answered from those
    /// transactions; one that failed alone in its transaction is not counted.
    pub writes: u64,
}

impl SqliteStore {
    /// Opens (creating it and its parent folders if needed) the database file at
    /// `path` with the default [`SqliteOptions`], and brings its schema up to date.
    ///
    /// Must be called within a Tokio runtime: it starts the writer task.
    ///
    /// # Errors
    /// [`Error::Backend`] when the file is not a SQLite database or is corrupt (the file
    /// is left as it is), or the schema cannot be migrated; [`Error::Unavailable`] when
    /// the file cannot be opened or created.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// [`SqliteStore::open`] with options.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let path = path.as_ref();
        let context = format!("opening the SQLite database {}", path.display());
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::unavailable(format!("creating the folder {}", parent.display()), e)
            })?;
        }
        let writer_options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match options.synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        let writer = writer_options
            .connect()
            .await
            .map_err(|e| convert(&context, e))?;
        let writer = migrate(writer).await?;
        let reader_options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        let readers = open_readers(&reader_options, options.readers, &context).await?;
        Ok(Self::start(writer, readers, options))
    }

    /// An in-memory store with the default options: nothing is persisted, everything
    /// is gone when the store is dropped. For tests.
    ///
    /// It is a private SQLite database in memory (the `memdb` VFS), shared by the
    /// store's writer and readers and kept alive by the writer connection for the whole
    /// life of the store, so it never vanishes while the store lives, whatever happens
    /// to the read connections.
    /// Without WAL, readers and the writer take turns at commit; the behaviour is the
    /// same as a file's.
    ///
    /// # Errors
    /// [`Error::Backend`] if the schema cannot be created.
    pub async fn open_in_memory() -> Result<Self> {
        Self::open_in_memory_with(SqliteOptions::default()).await
    }

    /// [`SqliteStore::open_in_memory`] with options (`synchronous` does not apply).
    ///
    /// # Errors
    /// As [`SqliteStore::open_in_memory`].
    pub async fn open_in_memory_with(options: SqliteOptions) -> Result<Self> {
        let context = "opening an in-memory SQLite database";
        let name = format!("/conversation-store-{}", uuid::Uuid::now_v7().simple());
        let base = SqliteConnectOptions::new()
            .filename(&name)
            .vfs("memdb")
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        let writer = base
            .clone()
            .create_if_missing(true)
            .connect()
            .await
            .map_err(|e| convert(context, e))?;
        let writer = migrate(writer).await?;
        let reader_options = base.pragma("query_only", "ON");
        let readers = open_readers(&reader_options, options.readers, context).await?;
        Ok(Self::start(writer, readers, options))
    }

    /// A store on a pool the host owns, with the default options.
    ///
    /// The pool serves the reads. The store takes one connection out of it for good
    /// (detached, so the pool may open another) as its writer, sets on it WAL mode,
    /// `synchronous`, foreign keys and the busy timeout, and runs the migrations. The
    /// pool must reach a database file (or a shared in-memory database): a private
    /// `:memory:` database is a different database on every connection. The pool's
    /// own connections keep the settings the host gave them; [`SqliteStore::close`]
    /// leaves the pool open.
    ///
    /// # Errors
    /// As [`SqliteStore::open`], and [`Error::Unavailable`] when no connection can be
    /// acquired from the pool.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self> {
        Self::from_pool_with(pool, SqliteOptions::default()).await
    }

    /// [`SqliteStore::from_pool`] with options (`readers` does not apply).
    ///
    /// # Errors
    /// As [`SqliteStore::from_pool`].
    pub async fn from_pool_with(pool: SqlitePool, options: SqliteOptions) -> Result<Self> {
        let context = "taking the writer connection from the pool";
        let mut writer = pool
            .acquire()
            .await
            .map_err(|e| convert(context, e))?
            .detach();
        let pragmas = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; \
             PRAGMA busy_timeout = {};",
            options.synchronous.pragma_value(),
            options.busy_timeout.as_millis()
        );
        sqlx::raw_sql(AssertSqlSafe(pragmas))
            .execute(&mut writer)
            .await
            .map_err(|e| convert(context, e))?;
        let writer = migrate(writer).await?;
        Ok(Self::start(writer, Readers::Host(pool), options))
    }

    fn start(writer: SqliteConnection, readers: Readers, options: SqliteOptions) -> Self {
        let (sender, receiver) = mpsc::channel(options.queue_capacity);
        let counters = Arc::new(Counters::default());
        tokio::spawn(writer::run(
            writer,
            receiver,
            options.max_group,
            Arc::clone(&counters),
        ));
        Self {
            readers,
            writer: sender,
            limits: options.limits,
            closed: AtomicBool::new(false),
            counters,
        }
    }

    /// The limits this store enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The writer's counters.
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
        }
    }

    /// Closes the store: writes queued before the call are carried out and answered,
    /// the writer connection is closed, and so is the reader pool unless it is the
    /// host's ([`SqliteStore::from_pool`]). Later calls of any method are
    /// [`Error::Unavailable`]. Calling it again does nothing.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        // Readers first: the connection that closes last checkpoints the WAL into the
        // database and removes it, and only the writer may.
        if let Readers::Own(set) = &self.readers {
            set.close().await;
        }
        let (ack, done) = oneshot::channel();
        if self.writer.send(Command::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(closed());
        }
        Ok(())
    }

    async fn write(&self, op: WriteOp) -> Result<Outcome> {
        self.check_open()?;
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Command::Write { op, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Runs a page statement of [`sql`], which returns one row holding a JSON array.
    async fn read_page(
        &self,
        select: sqlx::query::QueryAs<'_, sqlx::Sqlite, (String,), sqlx::sqlite::SqliteArguments>,
    ) -> Result<String, sqlx::Error> {
        Ok(self
            .readers
            .fetch_optional(select)
            .await?
            .map_or_else(|| "[]".to_owned(), |(page,)| page))
    }

    /// `NotFound` unless the conversation exists in the scope.
    async fn ensure_exists(&self, scope: &Scope, id: ConversationId) -> Result<()> {
        let query = sqlx::query_as::<_, (i64,)>(sql::CONVERSATION_EXISTS)
            .bind(&id.as_bytes()[..])
            .bind(scope.as_str());
        let found = self
            .readers
            .fetch_optional(query)
            .await
            .map_err(|e| convert("reading a conversation", e))?;
        found.map(|_| ()).ok_or_else(Error::conversation_not_found)
    }
}

/// Opens the store's own read connections.
async fn open_readers(
    options: &SqliteConnectOptions,
    count: u32,
    context: &str,
) -> Result<Readers> {
    let mut connections = Vec::with_capacity(count as usize);
    for _ in 0..count.max(1) {
        connections.push(options.connect().await.map_err(|e| convert(context, e))?);
    }
    Ok(Readers::Own(ReaderSet::new(connections)))
}

/// Brings the schema up to date, in one `BEGIN IMMEDIATE` transaction so that two
/// processes opening a new file at once do not both try to create it.
async fn migrate(mut conn: SqliteConnection) -> Result<SqliteConnection> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| convert("starting the schema migrations", e))?;
    migrator.run(&mut *tx).await.map_err(error::migration)?;
    tx.commit()
        .await
        .map_err(|e| convert("committing the schema migrations", e))?;
    Ok(conn)
}

fn unexpected(outcome: &Outcome) -> Error {
    Error::Backend {
        message: format!("the writer answered with the wrong outcome: {outcome:?}"),
        source: None,
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_conversation(
        &self,
        scope: &Scope,
        new: NewConversation,
    ) -> Result<Conversation> {
        self.limits.check_new_conversation(&new)?;
        let scope = scope.clone();
        match self.write(WriteOp::Create { scope, new }).await? {
            Outcome::Conversation(conversation) => Ok(conversation),
            other => Err(unexpected(&other)),
        }
    }

    async fn get_conversation(&self, scope: &Scope, id: ConversationId) -> Result<Conversation> {
        self.check_open()?;
        let query = sqlx::query_as(sql::GET_CONVERSATION)
            .bind(&id.as_bytes()[..])
            .bind(scope.as_str());
        let row: Option<ConversationRow> = self
            .readers
            .fetch_optional(query)
            .await
            .map_err(|e| convert("reading a conversation", e))?;
        row.ok_or_else(Error::conversation_not_found)?
            .into_conversation(scope)
    }

    async fn list_conversations(
        &self,
        scope: &Scope,
        query: &ConversationQuery,
    ) -> Result<Page<Conversation>> {
        let limit = query.page_size()?;
        let position = query.position()?;
        let needle = query.title_filter()?;
        self.check_open()?;
        let statement = sql::list_conversations(
            query.archived,
            query.pinned_first,
            position.is_some(),
            needle.is_some(),
            limit + 1,
        );
        let select = sqlx::query_as(AssertSqlSafe(statement))
            .bind(scope.as_str())
            .bind(position.map(|p| p.pinned))
            .bind(position.map(|p| millis(p.updated_at)))
            .bind(position.map(|p| p.id.as_bytes().to_vec()))
            .bind(needle);
        let page = self
            .read_page(select)
            .await
            .map_err(|e| convert("listing conversations", e))?;
        let mut items = conversations_from_page(&page, scope)?;
        // In list order whatever order SQLite fed its aggregate.
        items.sort_unstable_by(|a, b| query.list_order(a, b));
        Ok(query.page_from(items, limit))
    }

    async fn update_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        patch: ConversationPatch,
    ) -> Result<Conversation> {
        self.limits.check_patch(&patch)?;
        let scope = scope.clone();
        match self.write(WriteOp::Update { scope, id, patch }).await? {
            Outcome::Conversation(conversation) => Ok(conversation),
            other => Err(unexpected(&other)),
        }
    }

    async fn delete_conversation(&self, scope: &Scope, id: ConversationId) -> Result<()> {
        let scope = scope.clone();
        match self.write(WriteOp::Delete { scope, id }).await? {
            Outcome::Deleted => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn append_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        messages: Vec<NewMessage>,
        expected_version: Option<u64>,
    ) -> Result<Appended> {
        self.limits.check_messages(&messages)?;
        let op = WriteOp::Append {
            scope: scope.clone(),
            id,
            messages,
            expected_version,
        };
        match self.write(op).await? {
            Outcome::Appended(appended) => Ok(appended),
            other => Err(unexpected(&other)),
        }
    }

    async fn list_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &MessageQuery,
    ) -> Result<MessagePage> {
        let range = query.range()?;
        self.check_open()?;
        let statement = sql::messages(range.newest_first, range.limit + 1);
        let select = sqlx::query_as(AssertSqlSafe(statement))
            .bind(&id.as_bytes()[..])
            .bind(scope.as_str())
            .bind(to_i64(range.after))
            .bind(range.before.map_or(i64::MAX, to_i64));
        let page = self
            .read_page(select)
            .await
            .map_err(|e| convert("reading messages", e))?;
        let mut items = messages_from_page(&page, id)?;
        if items.is_empty() {
            self.ensure_exists(scope, id).await?;
        }
        // `items` is ascending; the row beyond the page is at the end it was read from.
        let has_more = items.len() > range.limit;
        if has_more {
            if range.newest_first {
                items.remove(0);
            } else {
                items.truncate(range.limit);
            }
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
        self.check_open()?;
        if n == 0 {
            self.ensure_exists(scope, id).await?;
            return Ok(Vec::new());
        }
        let select = sqlx::query_as(AssertSqlSafe(sql::recent_messages(n)))
            .bind(&id.as_bytes()[..])
            .bind(scope.as_str());
        let page = self
            .read_page(select)
            .await
            .map_err(|e| convert("reading messages", e))?;
        let messages = messages_from_page(&page, id)?;
        if messages.is_empty() {
            self.ensure_exists(scope, id).await?;
        }
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
        let op = WriteOp::SetTitle {
            scope: scope.clone(),
            id,
            title,
            source,
        };
        match self.write(op).await? {
            Outcome::Title(outcome) => Ok(outcome),
            other => Err(unexpected(&other)),
        }
    }

    async fn close(&self) {
        SqliteStore::close(self).await;
    }
}
