//! # conversation-store-sqlite
//!
//! [`SqliteStore`]: the durable embedded [`Store`] for `conversation-core`, one SQLite
//! file and no server. It is the store most hosts run. It runs on
//! [rusqlite](https://docs.rs/rusqlite) with SQLite bundled.
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
//! ## Threads: reads in place, one writer with group commit
//!
//! **Reads** run on the caller's thread, in place, on a connection of a small pool
//! (opened when reads first need them, up to [`SqliteOptions::readers`], and kept):
//! the hot reads cost SQLite 2–50 µs, and every hand-off to another thread costs as
//! much again. Measured on the 2-core VM of the benches, for one `get` of 2.7 µs in
//! place: `tokio::task::block_in_place` on a worker adds 9 µs, `spawn_blocking` 25 µs,
//! a dedicated reader thread behind a channel 7 µs (the way sqlx runs SQLite, which
//! made the previous releases of this store 2–4× slower than SQLite on reads). A read
//! that turns out long (past 256 KiB read, say a page of large messages) carries on
//! inside `block_in_place` when the runtime is multi-threaded, so that the worker's
//! other tasks move to another thread meanwhile; on a current-thread runtime it
//! carries on in place. WAL lets reads run beside the writer without blocking it.
//!
//! **Writes** go to one thread that owns the only writer connection. Writers queue
//! their requests; the thread takes everything queued (up to
//! [`SqliteOptions::max_group_size`]) and runs it in one `BEGIN IMMEDIATE`
//! transaction, each request inside its own `SAVEPOINT` when there is more than one,
//! so that one request's error (`NotFound`, `Conflict`) rolls back only that request.
//! It commits once, and only then answers each request: concurrent appends, to one
//! conversation or many, share one fsync instead of each paying for its own, and
//! nothing is acknowledged before it is durable. A failed commit fails every request
//! of its group. After a group of several requests, the thread lingers for as many
//! before it starts the next one (at most half the previous commit's time, never
//! more than 2 ms; a lone writer never waits): callers answered by a commit need a
//! moment to send their next request, and without the wait 8 concurrent appenders
//! shared commits 5 by 5 instead of 7.5 by 7.5. The thread runs the whole
//! transaction on its own connection, so an append costs SQLite's work, the fsync and
//! two thread hand-offs (about 7 µs on the bench VM). Input is validated with
//! [`Limits`] before a request is queued. Because there is one writer, no caller
//! ever sees `SQLITE_BUSY` from the store's own concurrency; a lock held by another
//! process is waited for up to the busy timeout, then reported as
//! [`Error::Unavailable`].
//!
//! A caller that stops waiting (its future dropped) does not disturb the writer; a
//! write already queued is still carried out. [`SqliteStore::close`] finishes the
//! queued writes, closes the readers, then the writer, whose close checkpoints the
//! write-ahead log into the database and removes it; dropping the store does the same
//! in the background.
//!
//! ## Schema
//!
//! Embedded migrations run when the store opens, recorded in the table
//! [`MIGRATIONS_TABLE`] in sqlx's format (earlier releases ran them with sqlx; see
//! below), so a host running its own sqlx migrations in the same database (in
//! `_sqlx_migrations`) collides with nothing. Ids are 16-byte BLOBs, timestamps
//! INTEGER milliseconds since the epoch (UTC), metadata and tool calls JSON text.
//!
//! - `conversations`: one row each, with its head (`head_seq`, `head_id`), the highest
//!   seq it assigned (`last_seq`) and the length of its active path (`path_len`).
//! - `messages`: a `WITHOUT ROWID` table clustered on `(conversation_id, seq)`; each
//!   message names its parent by seq (`parent_seq`, 0 for a root) and by id.
//! - `message_path`: the active path of each conversation, `(conversation_id, seq)`
//!   with the sibling count of each message on it.
//! - `runs`: `(conversation_id, id)`, each run's status, times, lease, cancel flag,
//!   steps and usage, its error and pending tool calls as JSON.
//! - `conversation_metadata`: each conversation's top-level scalar metadata values,
//!   `(conversation_id, key)` with its scope, kind and value, for `metadata_equals`.
//! - `search` (FTS5) with `search_scopes` and `search_state`: the search index (see
//!   below).
//!
//! Every hot read is an index seek:
//!
//! | read | index |
//! |---|---|
//! | a conversation | primary key `id` (the scope is checked on the row) |
//! | a list page | `(scope, archived, updated_at, id)`, or `(scope, archived, pinned, updated_at, id)` for pinned-first lists |
//! | a list with `metadata_equals` | `conversation_metadata_by_value (scope, key, kind, value, conversation_id)` for the first key (the conversations holding that value, sorted: the cost grows with them, not with the scope), the primary key of `conversation_metadata` for each further key |
//! | a search | the FTS5 index's terms of the scope, then `conversations_by_search_key` per conversation found |
//! | a run | primary key `(conversation_id, id)` |
//! | retention by inactivity | `conversations_by_inactivity (updated_at, id)` across scopes; in one scope `(scope, archived, updated_at, id)`, both archive states merged |
//! | retention by archive age | `(archived_at, id)` across scopes, `(scope, archived_at, id)` in one, both partial (archived rows only) |
//! | a window, a page of the path | one range of `messages`' primary key while the conversation is one chain; else one range of `message_path` and a primary-key lookup per message |
//! | a page of the whole tree | one range of `messages`' primary key |
//! | a message by id, an idempotent retry | unique `(conversation_id, id)` |
//! | siblings, subtrees | `messages_by_parent (conversation_id, parent_seq, seq, id)` |
//!
//! A list of archived and unarchived conversations together merges the two index
//! ranges. A title filter reads the scope's rows in list order until the page is
//! full, so its cost grows with the rows it skips.
//!
//! ## The message tree
//!
//! The active path (root to head) is kept as rows of `message_path`, so that a page
//! of it and the window are one bounded range read whatever the tree: never a walk
//! of the path. While a conversation is one chain (`path_len = message_count`, which
//! a linear chat always is), the path is every message and the reads skip
//! `message_path` altogether: one range of the messages' own primary key, as fast as
//! a log. Measured for a window of 20 in a 20,000-message conversation: 8.2 µs
//! through the primary key, 13.4 µs through `message_path`, 9.1 µs for the statement
//! that chooses between the two. Through the store, a window of 20 took 11 µs on a
//! conversation of 500 or 20,000 messages on one branch, and 19 µs on a tree of
//! 20,400 messages and 200 branches (its path read through `message_path`).
//!
//! Why a table of its own: an on-path flag on each message (with a partial index)
//! would make every change of the path rewrite whole message rows, content included
//! (SQLite rewrites the record to change one column), where a row of `message_path`
//! is 20 bytes; and reading ranges of messages speculatively, checked against their
//! parent links, works back from the head but cannot tell which messages are on the
//! path when a page is read forwards from the root.
//!
//! Changing the head changes only the rows where the old path and the new one
//! differ: an append after the head adds its rows; an edit, a regenerate, a switch or
//! a deletion that took the head walks up from the new head to the first message
//! still on the path (one primary-key lookup per step), cuts the path there (one range
//! delete) and adds the walk. A switch finds the newest leaf under the chosen message
//! by walking its subtree through `messages_by_parent` (no walk when the message is on
//! the path and the head is the newest message); a subtree deletion and a fork cost
//! what they touch (a fork of a 500-message path: about 5 ms of SQLite's work, then
//! one commit).
//!
//! Each message read comes with its siblings: the stored count on the path says
//! when a message is its parent's only child (the common case: nothing more is read);
//! otherwise two bounded range reads of `messages_by_parent` give the window of ids
//! and, when more than the window lie before the message, a count its index.
//!
//! ## Search
//!
//! Titles and message contents (every branch, every role) are indexed in an FTS5
//! table maintained in the transaction of the write that changes them (create,
//! rename, automatic titles, append, deletion of a subtree or a conversation, fork,
//! import): what is acknowledged is found, what is deleted is not.
//!
//! - **Words are core's.** The store cuts text with core's rule (runs of letters and
//!   digits, lowercased, without diacritics; the rule of
//!   [`tokenize`](conversation_core::backend::tokenize), which follows FTS5's
//!   `unicode61 remove_diacritics 2`) and gives FTS5 the words, which its `ascii`
//!   tokenizer only splits at spaces. The index so holds exactly the words every
//!   store matches, with Rust's Unicode tables rather than the Unicode 6.1 tables of
//!   `unicode61` (which cuts scripts added since, e.g. Adlam, where core does not).
//! - **Scripts without spaces.** A run of Chinese or Japanese characters is one word,
//!   as in core: it is found by its first characters (the last word of a search is a
//!   prefix), not by characters inside it (`数据` finds `数据库的表`, `表` does not). A
//!   trigram index would find those too; it is not built.
//! - **Scopes are exact and cheap.** Each word is stored as `<scope key>_<word>`
//!   (`search_scopes` gives each scope a number), so a scope's words are terms of
//!   their own: a search, prefixes included, reads only its scope's postings, however
//!   many other scopes the file holds (an FTS5 prefix query merges the postings of
//!   every term it matches, so a scope column in the `MATCH` would still read every
//!   scope's postings of a prefix). The search then checks the scope on each
//!   conversation as a second guard.
//! - **User text is never syntax.** The query is built from
//!   [`SearchTerms`](conversation_core::backend::SearchTerms) only: each word (letters
//!   and digits) quoted as a term of the scope, the last followed by `*` when it is a
//!   prefix.
//! - **Ranking.** Each matching row is scored with `bm25` (negated: higher is better);
//!   a conversation takes its best row's score, ties go by newest activity, then id;
//!   pages continue after a [`SearchCursor`](conversation_core::backend::SearchCursor).
//!   Its best three rows (best first, title first, then by seq) become the matches,
//!   built by core from the stored text. Ranking reads every matching row of the scope,
//!   so a word that most messages of a big scope hold costs more than a rare one.
//! - **Rows.** The index is contentless (the text is stored once, in `conversations`
//!   and `messages`) with `detail=none` (no positions: core builds snippets), keyed
//!   `search_key << 32 | seq` (the title is seq 0; a conversation's `search_key` never
//!   changes). A row is removed with FTS5's `delete` command and the words it was
//!   added with, recomputed from the stored text; the table's `secure-delete` option
//!   removes them from the index's pages at once, so deleted words are in no file
//!   either (below). Because removing needs the very words added, the rule they were
//!   cut with is recorded, and a build whose rule differs (a Rust release with newer
//!   Unicode tables) rebuilds the index when it opens the database.
//!
//! ## Runs
//!
//! A run is a row of `runs`; the conversation carries `active_run_id` and the usage
//! totals. Every run write (start, renew, cancel, finish) is one writer transaction
//! that reads the run and settles it at the clock's time first
//! ([`Run::settled`](conversation_core::Run::settled)): a run whose lease passed is
//! stored failed (`abandoned`), adds no usage and stops being the active run. A start
//! while a live run is active is `RunInProgress`; a start retried with the id of a
//! stored run returns that run and writes nothing. Finishing adds the usage and clears
//! `active_run_id` in the same transaction. Reads settle the run they return. Runs go
//! with their conversation.
//!
//! ## Backup and statistics
//!
//! [`SqliteStore::backup_to`] copies the database with SQLite's online backup, in one
//! step on a read connection: one read transaction, so the copy is one consistent
//! state and writers go on meanwhile (in WAL mode a reader blocks no writer; the log
//! is not checkpointed past it until it ends). It never overwrites a file. Restoring is
//! opening the copy. [`SqliteStore::stats`] counts conversations, messages and runs
//! and weighs the database, its log and the search index, for an admin command.
//!
//! ## Deletion leaves nothing behind
//!
//! The writer runs with `secure_delete`, so deleted rows are overwritten with zeros in
//! the database file; the search index's `secure-delete` option removes a deleted
//! row's words from the index pages (FTS5 would otherwise leave them in its segments
//! until a merge, which `secure_delete` does not cover); after a transaction that deleted anything (a conversation, a
//! message subtree), and before it answers, it checkpoints the write-ahead log into
//! the database and truncates it, so that the deleted text is in neither file. When
//! readers keep the log from being truncated (for more than 50 ms), it tries again
//! after its next transaction, and at the latest when the store closes.
//!
//! ## The database file going away
//!
//! SQLite keeps writing to the file it opened. If that file is deleted or replaced
//! while the store runs, writes would go to a file nobody will open again; so the
//! writer compares the path's device and inode with those of the file it opened
//! (taken at open) before it acknowledges a group, and treats `SQLITE_IOERR_VNODE`
//! and `SQLITE_READONLY_DBMOVED` the same way. From then on writes fail with
//! [`Error::Unavailable`] saying why, [`Store::health`] reports it, and it is logged
//! once with `tracing::error!`. The writer then empties its write-ahead log into the
//! file it opened: SQLite leaves the log of a moved file in place when it closes, and
//! would replay it onto whatever file is put at the path. (Off Unix there is no file
//! identity to compare; the SQLite errors still count.)
//!
//! A database file the store may not write (SQLite would open it read-only, silently)
//! and a folder where the file or its `-wal` and `-shm` cannot be created are refused
//! at [`SqliteStore::open`], with [`Error::Unavailable`] saying so.
//!
//! ## Migrations, by hand
//!
//! Earlier releases of this crate ran on sqlx and applied the schema with
//! `sqlx::migrate!`. The table and its format are kept (`version`, `description`,
//! `installed_on`, `success`, `checksum`, `execution_time`, the checksum the SHA-384
//! of the SQL text), so a database they wrote opens and migrates. No maintained crate runs migrations recorded in sqlx's format over
//! rusqlite, so the runner is written by hand: it applies the missing versions in
//! one `BEGIN IMMEDIATE` transaction and refuses, leaving the file untouched, a
//! database with a version it does not know (written by a newer release) or with a
//! recorded checksum that differs from its own.

mod backup;
mod connection;
mod error;
mod migrate;
mod options;
mod read;
mod readers;
mod rows;
mod search;
#[doc(hidden)]
pub mod sql;
mod write;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use async_trait::async_trait;
use conversation_core::backend::truncate_to_millis;
use conversation_core::{
    Append, Appended, Clock, Conversation, ConversationId, ConversationPatch, ConversationQuery,
    Error, ExpiredConversation, ImportOutcome, ImportedConversation, Limits, Message, MessageId,
    MessagePage, MessageQuery, NewConversation, NewRun, Page, RecentQuery, Result, RetentionQuery,
    Run, RunId, RunOutcome, Scope, SearchHit, SearchQuery, Store, TitleOutcome, TitleSource,
};
use tokio::sync::{mpsc, oneshot};

pub use options::{SqliteOptions, Synchronous};

use crate::connection::{FileWatch, Location, Opener};
use crate::error::{StoreError, closed};
use crate::readers::Readers;
use crate::writer::{Command, Shared, WriteContext, Writer};

/// The name of the table recording this crate's migrations.
pub const MIGRATIONS_TABLE: &str = "conversation_store_migrations";

/// A durable [`Store`] in one SQLite file; see the [crate docs](crate).
#[derive(Debug)]
pub struct SqliteStore {
    readers: Readers,
    writer: mpsc::Sender<Command>,
    limits: Limits,
    closed: AtomicBool,
    shared: Arc<Shared>,
    watch: FileWatch,
    clock: Arc<dyn Clock>,
    location: Location,
}

/// What the database holds and weighs, for an admin command: [`SqliteStore::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StoreStats {
    /// Conversations, in every scope.
    pub conversations: u64,
    /// Messages, in every conversation (every branch).
    pub messages: u64,
    /// Runs, ended or not.
    pub runs: u64,
    /// Bytes of the database file's pages (what SQLite counts; 0 in memory is the
    /// memory it uses).
    pub database_bytes: u64,
    /// Bytes of the write-ahead log file (0 in memory, or once checkpointed).
    pub wal_bytes: u64,
    /// Bytes of the pages of the search index (part of `database_bytes`).
    pub search_index_bytes: u64,
}

/// What the writer has done since the store opened, for metrics: with group commit,
/// `writes / transactions` is how many writes shared each commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WriteStats {
    /// Transactions committed.
    pub transactions: u64,
    /// Write requests (creates, updates, deletes, appends, titles, forks) answered from
    /// those transactions; one that failed alone in its transaction is not counted.
    pub writes: u64,
}

impl SqliteStore {
    /// Opens (creating it and its parent folders if needed) the database file at
    /// `path` with the default [`SqliteOptions`], and brings its schema up to date.
    ///
    /// # Errors
    /// [`Error::Backend`] when the file is not a SQLite database or is corrupt, or its
    /// schema was written by a newer release or differs from this release's (the
    /// file is left as it is); [`Error::Unavailable`] when the file cannot be opened
    /// or created, or the file or its folder is read-only.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// [`SqliteStore::open`] with options.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let path = path.as_ref();
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::unavailable(format!("creating the folder {}", parent.display()), e)
            })?;
        }
        let location = Location::File(path.to_owned());
        readers::blocking(|| Self::start(location, options))
    }

    /// An in-memory store with the default options: nothing is persisted, everything
    /// is gone when the store is dropped. For tests.
    ///
    /// It is a private SQLite database in memory (the `memdb` VFS), shared by the
    /// store's writer and readers and kept alive by the writer connection for the whole
    /// life of the store, so it never vanishes while the store lives, whatever happens
    /// to the read connections. Without WAL, readers and the writer take turns at
    /// commit; the behaviour is the same as a file's.
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
        let name = format!("/conversation-store-{}", uuid::Uuid::now_v7().simple());
        readers::blocking(|| Self::start(Location::Memory(name), options))
    }

    /// Opens the writer connection, migrates, and starts the writer thread. Blocking:
    /// a migration may take a while.
    fn start(location: Location, options: SqliteOptions) -> Result<Self> {
        let opener = Opener {
            location,
            busy_timeout: options.busy_timeout,
            synchronous: options.synchronous,
        };
        let conn = opener.open_writer()?;
        migrate::run(&conn)?;
        let watch = FileWatch::new(&opener.location)?;
        let shared = Arc::new(Shared::default());
        let (sender, receiver) = mpsc::channel(options.queue_capacity);
        let location = opener.location.clone();
        let writer = Writer {
            conn,
            clock: Arc::clone(&options.clock),
            limits: options.limits.clone(),
            shared: Arc::clone(&shared),
            watch: FileWatch::new(&opener.location)?,
            max_group: options.max_group,
            busy_timeout: options.busy_timeout,
            purge_pending: false,
            log_released: false,
            last_group: 1,
            last_commit: std::time::Duration::ZERO,
        };
        std::thread::Builder::new()
            .name("conversation-sqlite-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(StoreError::Thread)?;
        Ok(Self {
            readers: Readers::new(opener, options.readers),
            writer: sender,
            limits: options.limits,
            closed: AtomicBool::new(false),
            shared,
            watch,
            clock: options.clock,
            location,
        })
    }

    /// The limits this store enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The writer's counters.
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            transactions: self.shared.transactions.load(Ordering::Relaxed),
            writes: self.shared.writes.load(Ordering::Relaxed),
        }
    }

    /// Closes the store: writes queued before the call are carried out and answered,
    /// the read connections are closed, then the writer's, which checkpoints the
    /// write-ahead log into the database and removes it. Later calls of any method are
    /// [`Error::Unavailable`]. Calling it again does nothing.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        // Readers first: the connection that closes last checkpoints the log into the
        // database and removes it, and only the writer may.
        self.readers.close().await;
        let (ack, done) = oneshot::channel();
        if self.writer.send(Command::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// [`Store::health`]: `Unavailable` once closed or once the file is gone.
    pub async fn health(&self) -> Result<()> {
        self.check_open()?;
        if let Err(reason) = self.watch.check() {
            self.shared.mark_gone(reason);
        }
        match self.shared.gone() {
            Some(reason) => Err(StoreError::FileGone(reason.to_owned()).into()),
            None if self.writer.is_closed() => Err(closed()),
            None => Ok(()),
        }
    }

    /// Writes a consistent copy of the database, as it is when the copy starts, to
    /// `path`, while the store goes on serving: the copy is read on a read connection
    /// (SQLite's online backup, in one step, inside one read transaction), so writers
    /// are not blocked; what they commit meanwhile is not in the copy. To restore,
    /// open the copy with [`SqliteStore::open`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `path` when a file is there already (it is never
    /// overwritten); [`Error::Unavailable`] when the file cannot be created or written
    /// (a partial copy is removed).
    pub async fn backup_to(&self, path: impl AsRef<Path>) -> Result<()> {
        self.check_open()?;
        let path = path.as_ref();
        // Created here, empty and new, so that an existing file is never touched.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::invalid(
                    "path",
                    format!(
                        "{} exists already; a backup never overwrites a file",
                        path.display()
                    ),
                ));
            }
            Err(err) => {
                return Err(Error::unavailable(
                    format!("creating the backup file {}", path.display()),
                    err,
                ));
            }
        }
        let result = self
            .read(|source| readers::blocking(|| backup::copy(source, path)))
            .await;
        if result.is_err() {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(backup::journal_of(path));
        }
        result
    }

    /// What the database holds and weighs (counts read from the tables, sizes from
    /// SQLite and the file system): for an admin command, not a hot path (the counts
    /// read an index of every conversation, the index size every page of the index).
    ///
    /// # Errors
    /// As any read.
    pub async fn stats(&self) -> Result<StoreStats> {
        let wal_bytes = match &self.location {
            Location::File(path) => {
                let mut wal = path.clone().into_os_string();
                wal.push("-wal");
                std::fs::metadata(wal).map_or(0, |m| m.len())
            }
            Location::Memory(_) => 0,
        };
        self.read(|conn| {
            read::snapshot(conn, |conn| {
                let one = |statement: &str| -> Result<u64> {
                    conn.query_row(statement, [], |row| row.get::<_, i64>(0))
                        .map(|n| u64::try_from(n).unwrap_or(0))
                        .map_err(error::db("reading statistics"))
                };
                let (conversations, messages, runs) = conn
                    .query_row(sql::COUNTS, [], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, i64>(2)?,
                        ))
                    })
                    .map_err(error::db("reading statistics"))?;
                Ok(StoreStats {
                    conversations: u64::try_from(conversations).unwrap_or(0),
                    messages: u64::try_from(messages).unwrap_or(0),
                    runs: u64::try_from(runs).unwrap_or(0),
                    database_bytes: one(sql::DATABASE_BYTES)?,
                    wal_bytes,
                    search_index_bytes: one(sql::SEARCH_INDEX_BYTES)?,
                })
            })
        })
        .await
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(closed());
        }
        Ok(())
    }

    /// Queues `write` for the writer and waits for its answer.
    async fn write<T, F>(&self, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteContext<'_>) -> Result<T> + Send + 'static,
    {
        self.check_open()?;
        if let Some(reason) = self.shared.gone() {
            return Err(StoreError::FileGone(reason.to_owned()).into());
        }
        let (command, answer) = Command::write(write);
        self.writer.send(command).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Runs `read` on a read connection, in place.
    async fn read<T>(&self, read: impl FnOnce(&rusqlite::Connection) -> Result<T>) -> Result<T> {
        self.check_open()?;
        self.readers.read(read).await
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
        self.write(move |cx| write::create(cx, scope, new)).await
    }

    async fn get_conversation(&self, scope: &Scope, id: ConversationId) -> Result<Conversation> {
        self.read(|conn| read::conversation(conn, scope, id).map(|stored| stored.conversation))
            .await
    }

    async fn list_conversations(
        &self,
        scope: &Scope,
        query: &ConversationQuery,
    ) -> Result<Page<Conversation>> {
        self.read(|conn| read::list(conn, scope, query)).await
    }

    async fn update_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        patch: ConversationPatch,
    ) -> Result<Conversation> {
        self.limits.check_patch(&patch)?;
        let scope = scope.clone();
        self.write(move |cx| write::update(cx, &scope, id, patch))
            .await
    }

    async fn delete_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        expected_version: Option<u64>,
    ) -> Result<()> {
        let scope = scope.clone();
        self.write(move |cx| write::delete(cx, &scope, id, expected_version))
            .await
    }

    async fn append_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        append: Append,
    ) -> Result<Appended> {
        self.limits.check_append(&append)?;
        let scope = scope.clone();
        self.write(move |cx| write::append(cx, &scope, id, append))
            .await
    }

    async fn get_message(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Message> {
        self.read(|conn| {
            read::snapshot(conn, |conn| {
                let (row, _) = read::message_by_id(conn, scope, id, message)?;
                read::finish(conn, id, row)
            })
        })
        .await
    }

    async fn list_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &MessageQuery,
    ) -> Result<MessagePage> {
        let range = query.range()?;
        let max_page_bytes = self.limits.max_page_bytes;
        self.read(|conn| read::page(conn, scope, id, &range, max_page_bytes))
            .await
    }

    async fn recent_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &RecentQuery,
    ) -> Result<Vec<Message>> {
        self.limits.check_recent(query)?;
        self.read(|conn| read::recent(conn, scope, id, query)).await
    }

    async fn delete_message(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
        expected_version: Option<u64>,
    ) -> Result<Conversation> {
        let scope = scope.clone();
        self.write(move |cx| write::delete_message(cx, &scope, id, message, expected_version))
            .await
    }

    async fn fork_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Conversation> {
        let scope = scope.clone();
        self.write(move |cx| write::fork(cx, &scope, id, message))
            .await
    }

    async fn set_title_unless_user(
        &self,
        scope: &Scope,
        id: ConversationId,
        title: String,
        source: TitleSource,
    ) -> Result<TitleOutcome> {
        self.limits.check_automatic_title(&title, source)?;
        let scope = scope.clone();
        self.write(move |cx| write::set_title(cx, &scope, id, title, source))
            .await
    }

    async fn start_run(&self, scope: &Scope, id: ConversationId, run: NewRun) -> Result<Run> {
        let scope = scope.clone();
        self.write(move |cx| write::start_run(cx, &scope, id, run))
            .await
    }

    async fn renew_run(
        &self,
        scope: &Scope,
        id: ConversationId,
        run: RunId,
        lease: Duration,
    ) -> Result<Run> {
        let scope = scope.clone();
        self.write(move |cx| write::renew_run(cx, &scope, id, run, lease))
            .await
    }

    async fn cancel_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
        let scope = scope.clone();
        self.write(move |cx| write::cancel_run(cx, &scope, id, run))
            .await
    }

    async fn finish_run(
        &self,
        scope: &Scope,
        id: ConversationId,
        run: RunId,
        outcome: RunOutcome,
    ) -> Result<Run> {
        let scope = scope.clone();
        self.write(move |cx| write::finish_run(cx, &scope, id, run, outcome))
            .await
    }

    async fn get_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
        let now = truncate_to_millis(self.clock.now());
        self.read(|conn| read::settled_run(conn, scope, id, run, now))
            .await
    }

    async fn search(&self, scope: &Scope, query: &SearchQuery) -> Result<Page<SearchHit>> {
        // Checked before a connection is taken: a bad query is the caller's error.
        query.terms()?;
        query.page_size()?;
        query.position()?;
        self.read(|conn| read::search(conn, scope, query)).await
    }

    async fn import_conversation(
        &self,
        scope: &Scope,
        conversation: ImportedConversation,
    ) -> Result<ImportOutcome> {
        conversation.check(&self.limits)?;
        let scope = scope.clone();
        self.write(move |cx| write::import(cx, &scope, conversation))
            .await
    }

    async fn list_expired(&self, query: &RetentionQuery) -> Result<Vec<ExpiredConversation>> {
        self.read(|conn| read::expired(conn, query)).await
    }

    async fn health(&self) -> Result<()> {
        SqliteStore::health(self).await
    }

    async fn close(&self) {
        SqliteStore::close(self).await;
    }
}
