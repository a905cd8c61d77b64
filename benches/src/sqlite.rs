//! The raw SQLite baseline and the bulk seeding of a SQLite store's file, both through
//! `rusqlite` on the very SQLite library sqlx links (`libsqlite3-sys` 0.37, bundled:
//! the lock file holds one copy, shared by both).
//!
//! [`RawSqlite`] is the physical limit a [`SqliteStore`](conversation_store_sqlite::SqliteStore)
//! is held against: the same statements (reads from [`conversation_store_sqlite::sql`],
//! writes copied from the store's writer), prepared once and cached, on the same file,
//! with the same settings as the store's connections (WAL, `synchronous=FULL`,
//! foreign keys on, a 5 s busy timeout; reads on a read-only connection). It reads
//! every column of every row into owned values, as the store must, and does nothing
//! more: no JSON parsing, no model types, no async hand-off.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use conversation_core::{ArchivedFilter, ConversationId, ListCursor, NewMessage, Scope};
use conversation_store_sqlite::sql;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, ToSql, params};

use crate::{Error, Result, body};

/// The busy timeout of the store's connections by default, used by the baseline too.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The store's insert of a conversation (`writer.rs`, `create`).
const INSERT_CONVERSATION: &str = "INSERT INTO conversations (id, scope, title, title_source, created_at, updated_at, \
     message_count, pinned, archived, metadata, version) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?5, 0, 0, 0, ?6, 1)";

/// The store's insert of a message (`writer.rs`, `insert_message`).
const INSERT_MESSAGE: &str = "INSERT INTO messages (conversation_id, seq, id, role, content, tool_calls, \
     tool_call_id, metadata, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// The store's counter update of an append (`writer.rs`, `append`).
const UPDATE_COUNTERS: &str =
    "UPDATE conversations SET message_count = ?2, version = ?3, updated_at = ?4 WHERE id = ?1";

/// Milliseconds since the epoch, now.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Opens a read connection as the store opens its readers.
fn open_reader(path: &Path) -> Result<Connection> {
    let reader = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    reader.busy_timeout(BUSY_TIMEOUT)?;
    reader.pragma_update(None, "foreign_keys", "ON")?;
    Ok(reader)
}

/// Runs `statement` and reads every column of every row into owned values; returns
/// the row count.
fn read_all(conn: &Connection, statement: &str, params: &[&dyn ToSql]) -> Result<usize> {
    let mut prepared = conn.prepare_cached(statement)?;
    let columns = prepared.column_count();
    // Like sqlx, bind only the parameters the statement has: a list page without a
    // cursor or a title filter uses only the scope.
    let used = &params[..prepared.parameter_count().min(params.len())];
    let mut rows = prepared.query(used)?;
    let mut count = 0;
    while let Some(row) = rows.next()? {
        for column in 0..columns {
            let value: Value = row.get(column)?;
            black_box(value);
        }
        count += 1;
    }
    Ok(count)
}

/// Like [`read_all`] for a statement of exactly one row; its first value.
fn read_one(conn: &Connection, statement: &str, params: &[&dyn ToSql]) -> Result<Vec<Value>> {
    let mut prepared = conn.prepare_cached(statement)?;
    let columns = prepared.column_count();
    let mut rows = prepared.query(params)?;
    let Some(row) = rows.next()? else {
        return Err(Error::harness("raw: the statement returned no row"));
    };
    (0..columns)
        .map(|column| row.get::<_, Value>(column).map_err(Error::from))
        .collect()
}

fn integer(values: &[Value], column: usize) -> Result<i64> {
    match values.get(column) {
        Some(Value::Integer(value)) => Ok(*value),
        other => Err(Error::harness(format!(
            "raw: column {column} is {other:?}, not an integer"
        ))),
    }
}

/// The raw baseline: a read-only connection and a writer connection on the store's
/// file. Used from one thread.
#[derive(Debug)]
pub struct RawSqlite {
    path: PathBuf,
    reader: Connection,
    writer: Connection,
}

impl RawSqlite {
    /// Opens both connections on `path` (whose schema the store created).
    ///
    /// # Errors
    /// When SQLite cannot open the file.
    pub fn open(path: &Path) -> Result<Self> {
        let reader = open_reader(path)?;
        let writer = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        writer.busy_timeout(BUSY_TIMEOUT)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(None, "synchronous", "FULL")?;
        writer.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Self {
            path: path.to_owned(),
            reader,
            writer,
        })
    }

    /// [`sql::GET_CONVERSATION`].
    ///
    /// # Errors
    /// SQLite's, or none found.
    pub fn get(&self, scope: &Scope, id: ConversationId) -> Result<()> {
        get_on(&self.reader, scope, id)
    }

    /// [`sql::recent_messages`]: the newest `n`, as one JSON row.
    ///
    /// # Errors
    /// SQLite's.
    pub fn recent(&self, scope: &Scope, id: ConversationId, n: usize) -> Result<()> {
        let rows = read_all(
            &self.reader,
            &sql::recent_messages(n),
            &[&&id.as_bytes()[..], &scope.as_str()],
        )?;
        expect_one(rows)
    }

    /// A page of messages as the store reads it ([`sql::messages`]); the store asks
    /// for one more row than the page to learn whether there are more.
    ///
    /// # Errors
    /// SQLite's.
    pub fn page(
        &self,
        scope: &Scope,
        id: ConversationId,
        newest_first: bool,
        limit: usize,
    ) -> Result<()> {
        page_on(&self.reader, scope, id, newest_first, limit)
    }

    /// A switch as [`Conversations::open`](conversation_core::Conversations::open)
    /// does it: the conversation, then its newest page of `page` messages.
    ///
    /// # Errors
    /// SQLite's.
    pub fn switch(&self, scope: &Scope, id: ConversationId, page: usize) -> Result<()> {
        get_on(&self.reader, scope, id)?;
        page_on(&self.reader, scope, id, true, page)
    }

    /// Opens a new read connection, as a reopened store does, and switches once.
    ///
    /// # Errors
    /// SQLite's.
    pub fn reopen_switch(&self, scope: &Scope, id: ConversationId, page: usize) -> Result<()> {
        let reader = open_reader(&self.path)?;
        get_on(&reader, scope, id)?;
        page_on(&reader, scope, id, true, page)
    }

    /// A list page (newest activity first, archived excluded), after `cursor` if
    /// given, as [`sql::list_conversations`].
    ///
    /// # Errors
    /// SQLite's.
    pub fn list(&self, scope: &Scope, cursor: Option<&ListCursor>, limit: usize) -> Result<()> {
        let statement = sql::list_conversations(
            ArchivedFilter::Exclude,
            false,
            cursor.is_some(),
            false,
            limit + 1,
        );
        let rows = read_all(
            &self.reader,
            &statement,
            &[
                &scope.as_str(),
                &cursor.map(|c| c.pinned),
                &cursor.map(|c| c.updated_at.timestamp_millis()),
                &cursor.map(|c| c.id.as_bytes().to_vec()),
                &None::<String>,
            ],
        )?;
        expect_one(rows)
    }

    /// A durable create: `BEGIN IMMEDIATE`, the store's insert, `COMMIT`.
    ///
    /// # Errors
    /// SQLite's.
    pub fn create(&self, scope: &Scope) -> Result<ConversationId> {
        let id = ConversationId::new();
        self.transaction(|conn| {
            conn.prepare_cached(INSERT_CONVERSATION)?.execute(params![
                &id.as_bytes()[..],
                scope.as_str(),
                None::<String>,
                "none",
                now_millis(),
                "{}",
            ])?;
            Ok(())
        })?;
        Ok(id)
    }

    /// A durable append of `messages` to one conversation, as the store's writer does
    /// it for a request alone in its group: `BEGIN IMMEDIATE`, read the conversation,
    /// insert each message, move the counters, `COMMIT`.
    ///
    /// # Errors
    /// SQLite's.
    pub fn append(&self, scope: &Scope, id: ConversationId, messages: &[NewMessage]) -> Result<()> {
        self.transaction(|conn| append_on(conn, scope, id, messages))
    }

    /// One transaction appending `message(k)` to each conversation `k` of `ids`: what
    /// group commit does at best, without the savepoints the store puts around each
    /// request.
    ///
    /// # Errors
    /// SQLite's.
    pub fn append_group(
        &self,
        scope: &Scope,
        ids: &[ConversationId],
        message: impl Fn(usize) -> NewMessage,
    ) -> Result<()> {
        self.transaction(|conn| {
            for (k, id) in ids.iter().enumerate() {
                append_on(conn, scope, *id, &[message(k)])?;
            }
            Ok(())
        })
    }

    fn transaction(&self, work: impl FnOnce(&Connection) -> Result<()>) -> Result<()> {
        let conn = &self.writer;
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let done = work(conn).and_then(|()| {
            conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(())
        });
        if done.is_err() && !conn.is_autocommit() {
            conn.execute_batch("ROLLBACK")?;
        }
        done
    }
}

fn expect_one(rows: usize) -> Result<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(Error::harness(format!("raw: expected one row, got {rows}")))
    }
}

fn get_on(conn: &Connection, scope: &Scope, id: ConversationId) -> Result<()> {
    let rows = read_all(
        conn,
        sql::GET_CONVERSATION,
        &[&&id.as_bytes()[..], &scope.as_str()],
    )?;
    expect_one(rows)
}

fn page_on(
    conn: &Connection,
    scope: &Scope,
    id: ConversationId,
    newest_first: bool,
    limit: usize,
) -> Result<()> {
    let rows = read_all(
        conn,
        &sql::messages(newest_first, limit + 1),
        &[&&id.as_bytes()[..], &scope.as_str(), &0_i64, &i64::MAX],
    )?;
    expect_one(rows)
}

fn append_on(
    conn: &Connection,
    scope: &Scope,
    id: ConversationId,
    messages: &[NewMessage],
) -> Result<()> {
    let row = read_one(
        conn,
        sql::GET_CONVERSATION,
        &[&&id.as_bytes()[..], &scope.as_str()],
    )?;
    let count = integer(&row, 5)?;
    let version = integer(&row, 9)?;
    let updated_at = integer(&row, 4)?;
    let at = now_millis();
    let mut insert = conn.prepare_cached(INSERT_MESSAGE)?;
    for (k, message) in messages.iter().enumerate() {
        insert.execute(params![
            &id.as_bytes()[..],
            count + 1 + k as i64,
            &uuid::Uuid::now_v7().as_bytes()[..],
            message.role.as_str(),
            message.content.as_str(),
            None::<String>,
            None::<String>,
            "{}",
            at,
        ])?;
    }
    conn.prepare_cached(UPDATE_COUNTERS)?.execute(params![
        &id.as_bytes()[..],
        count + messages.len() as i64,
        version + 1,
        at.max(updated_at),
    ])?;
    Ok(())
}

/// Bulk seeding of a store's file: big transactions with `synchronous=OFF` on a
/// connection of its own, rows written as the store writes them (same columns, same
/// encodings: 16-byte ids, millisecond timestamps, `{}` metadata, `NULL` tool calls).
/// Not timed.
#[derive(Debug)]
pub struct Seeder {
    path: PathBuf,
    conn: Connection,
    clock: i64,
}

/// Rows per seeding transaction.
const SEED_CHUNK: usize = 50_000;

impl Seeder {
    /// Opens the seeding connection on `path`, whose schema the store created.
    /// Timestamps start 30 days in the past and grow by 1 ms per row, so that
    /// anything the store writes later is newer.
    ///
    /// # Errors
    /// When SQLite cannot open the file.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA foreign_keys = ON;")?;
        Ok(Self {
            path: path.to_owned(),
            conn,
            clock: now_millis() - 30 * 24 * 3_600_000,
        })
    }

    fn tick(&mut self) -> i64 {
        self.clock += 1;
        self.clock
    }

    /// Creates `count` conversations in each scope, each with a user title; returns
    /// their ids per scope, oldest (least recent activity) first.
    ///
    /// # Errors
    /// SQLite's.
    pub fn conversations(&mut self, scopes: &[(Scope, usize)]) -> Result<Vec<Vec<ConversationId>>> {
        let mut all = Vec::with_capacity(scopes.len());
        let mut pending = 0;
        self.conn.execute_batch("BEGIN")?;
        for (scope, count) in scopes {
            let mut ids = Vec::with_capacity(*count);
            for i in 0..*count {
                let id = ConversationId::new();
                let at = self.tick();
                self.conn
                    .prepare_cached(INSERT_CONVERSATION)?
                    .execute(params![
                        &id.as_bytes()[..],
                        scope.as_str(),
                        format!("Conversation {i} about the orders table"),
                        "user",
                        at,
                        "{}",
                    ])?;
                ids.push(id);
                pending += 1;
                if pending == SEED_CHUNK {
                    self.conn.execute_batch("COMMIT; BEGIN")?;
                    pending = 0;
                }
            }
            all.push(ids);
        }
        self.conn.execute_batch("COMMIT")?;
        Ok(all)
    }

    /// Gives conversation `id`, which holds no message yet, `count` messages
    /// alternating user and assistant ([`body::message`]), and its counters.
    ///
    /// # Errors
    /// SQLite's.
    pub fn messages(&mut self, id: ConversationId, count: usize) -> Result<()> {
        let mut seq = 0_i64;
        while (seq as usize) < count {
            let end = (seq as usize + SEED_CHUNK).min(count) as i64;
            self.conn.execute_batch("BEGIN")?;
            {
                let mut insert = self.conn.prepare_cached(INSERT_MESSAGE)?;
                while seq < end {
                    let message = body::message(seq as u64);
                    seq += 1;
                    self.clock += 1;
                    insert.execute(params![
                        &id.as_bytes()[..],
                        seq,
                        &uuid::Uuid::now_v7().as_bytes()[..],
                        message.role.as_str(),
                        message.content.as_str(),
                        None::<String>,
                        None::<String>,
                        "{}",
                        self.clock,
                    ])?;
                }
            }
            self.conn.execute_batch("COMMIT")?;
        }
        let at = self.tick();
        self.conn.execute(
            "UPDATE conversations SET message_count = ?2, version = 2, updated_at = ?3 WHERE id = ?1",
            params![&id.as_bytes()[..], count as i64, at],
        )?;
        Ok(())
    }

    /// Moves the WAL into the database file and empties it, then syncs the file, so
    /// that measuring starts from a file as a long-running store would have it and
    /// not while the kernel is still writing the seeded pages back.
    ///
    /// # Errors
    /// SQLite's, or the sync's.
    pub fn checkpoint(&self) -> Result<()> {
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        std::fs::File::open(&self.path)?.sync_all()?;
        Ok(())
    }
}
