//! The raw SQLite baseline and the bulk seeding of a SQLite store's file, both through
//! `rusqlite` on the very SQLite library the store links (`libsqlite3-sys` 0.37,
//! bundled: the lock file holds one copy).
//!
//! [`RawSqlite`] is the physical limit a [`SqliteStore`](conversation_store_sqlite::SqliteStore)
//! is held against: the same statements (every one from
//! [`conversation_store_sqlite::sql`], reads and the writer's), prepared once and
//! cached, on the same file, with the same settings as the store's connections (WAL,
//! `synchronous=FULL`, foreign keys and secure delete on, a 5 s busy timeout; reads on
//! a read-only connection). It reads every column of every row into owned values, as
//! the store must, and does nothing more: no model types, no async hand-off.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use conversation_core::backend::{ListCursor, SearchTerms, tokenize};
use conversation_core::{ArchivedFilter, ConversationId, NewMessage, Scope};
use conversation_store_sqlite::sql::{self, conversation_column as cc};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, ToSql, params};

use crate::{Error, Result, body};

/// The busy timeout of the store's connections by default, used by the baseline too.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
    reader.set_prepared_statement_cache_capacity(128);
    reader.busy_timeout(BUSY_TIMEOUT)?;
    reader.pragma_update(None, "foreign_keys", "ON")?;
    Ok(reader)
}

/// Runs `statement` and reads every column of every row into owned values; returns
/// the row count.
fn read_all(conn: &Connection, statement: &str, params: &[&dyn ToSql]) -> Result<usize> {
    let mut prepared = conn.prepare_cached(statement)?;
    let columns = prepared.column_count();
    // Like the store, bind only the parameters the statement has: a list page without
    // a cursor or a title filter uses only the scope.
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

/// Like [`read_all`] for a statement of exactly one row; its values.
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

fn expect_rows(what: &str, rows: usize, want: usize) -> Result<()> {
    if rows == want {
        Ok(())
    } else {
        Err(Error::harness(format!(
            "raw {what}: expected {want} rows, got {rows}"
        )))
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
        writer.set_prepared_statement_cache_capacity(128);
        writer.busy_timeout(BUSY_TIMEOUT)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;",
        )?;
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

    /// The window of the newest `n` messages of the active path, as the store reads
    /// it ([`sql::path_messages`], newest first, `n` rows).
    ///
    /// # Errors
    /// SQLite's.
    pub fn recent(&self, scope: &Scope, id: ConversationId, n: usize) -> Result<()> {
        let rows = read_all(
            &self.reader,
            &sql::path_messages(true, n),
            &[&&id.as_bytes()[..], &scope.as_str(), &0_i64, &i64::MAX],
        )?;
        expect_rows("recent", rows, n)
    }

    /// A page of the active path as the store reads it ([`sql::path_messages`]); the
    /// store asks for one more row than the page to learn whether there are more.
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
        if rows == 0 {
            return Err(Error::harness("raw list: no row"));
        }
        Ok(())
    }

    /// A search page of `limit` conversations as the store runs it: the scope's key,
    /// [`sql::search_hits`] (one row more than the page), then
    /// [`sql::MATCHED_MESSAGE`] for each matched message of the page's hits. Returns
    /// how many conversations the page holds.
    ///
    /// # Errors
    /// SQLite's.
    pub fn search(&self, scope: &Scope, text: &str, limit: usize) -> Result<usize> {
        let conn = &self.reader;
        let key: i64 = conn
            .prepare_cached(sql::SEARCH_SCOPE_KEY)?
            .query_row([scope.as_str()], |row| row.get(0))?;
        let terms = SearchTerms::parse(text)?;
        let words = terms.words();
        let expression = words
            .iter()
            .enumerate()
            .map(|(i, word)| {
                let star = if terms.prefix() && i + 1 == words.len() {
                    "*"
                } else {
                    ""
                };
                format!("\"{key}_{}\"{star}", word.replace('"', "\"\""))
            })
            .collect::<Vec<_>>()
            .join(" ");
        let statement = sql::search_hits(ArchivedFilter::Exclude, false, limit + 1);
        let mut prepared = conn.prepare_cached(&statement)?;
        let columns = prepared.column_count();
        let mut rows = prepared.query(params![expression, scope.as_str()])?;
        let mut hits = Vec::with_capacity(limit + 1);
        while let Some(row) = rows.next()? {
            for column in 0..columns - 1 {
                black_box(row.get::<_, Value>(column)?);
            }
            let id: Vec<u8> = row.get(cc::ID)?;
            let seqs: String = row.get(columns - 1)?;
            hits.push((id, seqs));
        }
        drop(rows);
        drop(prepared);
        let found = hits.len().min(limit);
        for (id, seqs) in hits.into_iter().take(limit) {
            for seq in seqs.split(',').filter_map(|seq| seq.parse::<i64>().ok()) {
                if seq > 0 {
                    read_one(conn, sql::MATCHED_MESSAGE, &[&id, &seq])?;
                }
            }
        }
        Ok(found)
    }

    /// A list page filtered by a title substring, as the list's title filter runs it
    /// ([`sql::list_conversations`] with `instr(lower(title), ?)`): a walk of the
    /// scope's conversations in list order until the page is full. Returns the rows.
    ///
    /// # Errors
    /// SQLite's.
    pub fn title_filter(&self, scope: &Scope, needle: &str, limit: usize) -> Result<usize> {
        let statement =
            sql::list_conversations(ArchivedFilter::Exclude, false, false, true, limit + 1);
        read_all(
            &self.reader,
            &statement,
            &[
                &scope.as_str(),
                &None::<bool>,
                &None::<i64>,
                &None::<Vec<u8>>,
                &needle.to_lowercase(),
            ],
        )
    }

    /// A durable create: `BEGIN IMMEDIATE`, the scope's search key, the next
    /// conversation key, the store's insert, `COMMIT`.
    ///
    /// # Errors
    /// SQLite's.
    pub fn create(&self, scope: &Scope) -> Result<ConversationId> {
        let id = ConversationId::new();
        self.transaction(|conn| {
            insert_conversation(conn, scope, id, None, now_millis()).map(drop)
        })?;
        Ok(id)
    }

    /// A durable append of `messages` to one conversation after its head, as the
    /// store's writer does it for a request alone in its group: `BEGIN IMMEDIATE`,
    /// read the conversation, insert each message and its words in the search index,
    /// add each to the active path, write the conversation, `COMMIT`.
    ///
    /// # Errors
    /// SQLite's.
    pub fn append(&self, scope: &Scope, id: ConversationId, messages: &[NewMessage]) -> Result<()> {
        self.transaction(|conn| append_on(conn, scope, id, messages, true))
    }

    /// [`RawSqlite::append`] without the search index: what a durable append cost
    /// before there was one.
    ///
    /// # Errors
    /// SQLite's.
    pub fn append_unindexed(
        &self,
        scope: &Scope,
        id: ConversationId,
        messages: &[NewMessage],
    ) -> Result<()> {
        self.transaction(|conn| append_on(conn, scope, id, messages, false))
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
                append_on(conn, scope, *id, &[message(k)], true)?;
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

fn get_on(conn: &Connection, scope: &Scope, id: ConversationId) -> Result<()> {
    let rows = read_all(
        conn,
        sql::GET_CONVERSATION,
        &[&&id.as_bytes()[..], &scope.as_str()],
    )?;
    expect_rows("get", rows, 1)
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
        &sql::path_messages(newest_first, limit + 1),
        &[&&id.as_bytes()[..], &scope.as_str(), &0_i64, &i64::MAX],
    )?;
    if rows < limit {
        return Err(Error::harness(format!("raw page: {rows} rows")));
    }
    Ok(())
}

/// The key of `scope` in the search index, given one first when it has none, as the
/// store's create does it ([`sql::SEARCH_SCOPE_KEY`], [`sql::INSERT_SEARCH_SCOPE`]).
fn scope_key(conn: &Connection, scope: &Scope) -> Result<i64> {
    let read = |conn: &Connection| -> Result<Option<i64>> {
        let mut statement = conn.prepare_cached(sql::SEARCH_SCOPE_KEY)?;
        let mut rows = statement.query([scope.as_str()])?;
        Ok(match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        })
    };
    if let Some(key) = read(conn)? {
        return Ok(key);
    }
    conn.prepare_cached(sql::INSERT_SEARCH_SCOPE)?
        .execute([scope.as_str()])?;
    read(conn)?.ok_or_else(|| Error::harness("raw: no search key for the scope"))
}

/// The search index's line of words for `text` in the scope of `scope_key`: core's
/// words (the store's rule), each prefixed with the key.
pub fn search_words(scope_key: i64, text: &str) -> String {
    tokenize(text)
        .into_iter()
        .map(|token| format!("{scope_key}_{}", token.word))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Adds `text` to the search index as message `seq` (0: the title) of the
/// conversation whose keys are given ([`sql::INSERT_SEARCH_ROW`]).
fn index_row(conn: &Connection, keys: (i64, i64), seq: i64, text: &str) -> Result<()> {
    let (search_key, scope_key) = keys;
    let words = search_words(scope_key, text);
    if !words.is_empty() {
        conn.prepare_cached(sql::INSERT_SEARCH_ROW)?
            .execute(params![(search_key << 32) | seq, words])?;
    }
    Ok(())
}

/// [`sql::INSERT_CONVERSATION`] of a new conversation without messages, with its keys
/// in the search index and its title indexed, as the store's create writes it.
/// Returns its keys (search key, scope key).
fn insert_conversation(
    conn: &Connection,
    scope: &Scope,
    id: ConversationId,
    title: Option<String>,
    at: i64,
) -> Result<(i64, i64)> {
    let scope_key = scope_key(conn, scope)?;
    let search_key: i64 = conn
        .prepare_cached(sql::NEXT_SEARCH_KEY)?
        .query_row([], |row| row.get(0))?;
    conn.prepare_cached(sql::INSERT_CONVERSATION)?
        .execute(params![
            &id.as_bytes()[..],
            scope.as_str(),
            title.as_deref(),
            if title.is_some() { "user" } else { "none" },
            at,
            at,
            0_i64,
            0_i64,
            0_i64,
            None::<Vec<u8>>,
            0_i64,
            false,
            false,
            "{}",
            1_i64,
            None::<i64>,
            None::<Vec<u8>>,
            0_i64,
            0_i64,
            0_i64,
            search_key,
            scope_key,
        ])?;
    if let Some(title) = &title {
        index_row(conn, (search_key, scope_key), 0, title)?;
    }
    Ok((search_key, scope_key))
}

/// [`sql::INSERT_MESSAGE`] of message `seq` after `parent_seq`.
#[allow(clippy::too_many_arguments)]
fn insert_message(
    conn: &Connection,
    id: ConversationId,
    seq: i64,
    message_id: &[u8],
    parent_seq: i64,
    parent_id: Option<&[u8]>,
    message: &NewMessage,
    at: i64,
) -> Result<()> {
    conn.prepare_cached(sql::INSERT_MESSAGE)?.execute(params![
        &id.as_bytes()[..],
        seq,
        message_id,
        parent_seq,
        parent_id,
        message.role.as_str(),
        message.content.as_str(),
        None::<String>,
        None::<String>,
        "{}",
        at,
    ])?;
    Ok(())
}

/// The store's append after the head, statement by statement: read the conversation,
/// insert each message (and, when `indexed`, its words into the search index), add
/// each to the active path, write the conversation.
fn append_on(
    conn: &Connection,
    scope: &Scope,
    id: ConversationId,
    messages: &[NewMessage],
    indexed: bool,
) -> Result<()> {
    let row = read_one(
        conn,
        sql::GET_CONVERSATION,
        &[&&id.as_bytes()[..], &scope.as_str()],
    )?;
    let count = integer(&row, cc::MESSAGE_COUNT)?;
    let last_seq = integer(&row, cc::LAST_SEQ)?;
    let head_seq = integer(&row, cc::HEAD_SEQ)?;
    let path_len = integer(&row, cc::PATH_LEN)?;
    let version = integer(&row, cc::VERSION)?;
    let updated_at = integer(&row, cc::UPDATED_AT)?;
    let keys = (
        integer(&row, cc::SEARCH_KEY)?,
        integer(&row, cc::SCOPE_KEY)?,
    );
    let mut parent_id = match row.get(cc::HEAD_ID) {
        Some(Value::Blob(head)) => Some(head.clone()),
        _ => None,
    };
    let at = now_millis().max(updated_at);
    let mut parent_seq = head_seq;
    for (k, message) in messages.iter().enumerate() {
        let seq = last_seq + 1 + k as i64;
        let message_id = uuid::Uuid::now_v7().as_bytes().to_vec();
        insert_message(
            conn,
            id,
            seq,
            &message_id,
            parent_seq,
            parent_id.as_deref(),
            message,
            at,
        )?;
        if indexed {
            index_row(conn, keys, seq, &message.content)?;
        }
        parent_seq = seq;
        parent_id = Some(message_id);
    }
    for k in 0..messages.len() {
        conn.prepare_cached(sql::INSERT_PATH)?.execute(params![
            &id.as_bytes()[..],
            last_seq + 1 + k as i64,
            1_i64
        ])?;
    }
    let added = messages.len() as i64;
    conn.prepare_cached(sql::UPDATE_CONVERSATION)?
        .execute(params![
            &id.as_bytes()[..],
            scope.as_str(),
            row.get(cc::TITLE),
            row.get(cc::TITLE_SOURCE),
            row.get(cc::CREATED_AT),
            at,
            count + added,
            last_seq + added,
            last_seq + added,
            parent_id,
            path_len + added,
            row.get(cc::PINNED),
            row.get(cc::ARCHIVED),
            row.get(cc::METADATA),
            version + 1,
            row.get(cc::ARCHIVED_AT),
            row.get(cc::ACTIVE_RUN_ID),
            row.get(cc::PROMPT_TOKENS),
            row.get(cc::COMPLETION_TOKENS),
            row.get(cc::TOTAL_TOKENS),
            keys.0,
            keys.1,
        ])?;
    Ok(())
}

/// Bulk seeding of a store's file: big transactions with `synchronous=OFF` on a
/// connection of its own, rows written as the store writes them (same columns, same
/// encodings: 16-byte ids, millisecond timestamps, `{}` metadata, `NULL` tool calls,
/// each message after the one before it and on the active path).
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
                insert_conversation(
                    &self.conn,
                    scope,
                    id,
                    Some(format!("Conversation {i} about the orders table")),
                    at,
                )?;
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
    /// alternating user and assistant ([`body::message`]), each after the one before
    /// it, and its head and counters.
    ///
    /// # Errors
    /// SQLite's.
    pub fn messages(&mut self, id: ConversationId, count: usize) -> Result<()> {
        self.messages_with(id, count, body::message, true)
    }

    /// Like [`Seeder::messages`] with message `i` (from 0) given by `message`. When
    /// `indexed`, every message's words go into the search index, as the store's
    /// append puts them; otherwise the conversation is one a search cannot find (and
    /// must not be deleted, whose words the store would remove from the index).
    ///
    /// # Errors
    /// SQLite's.
    pub fn messages_with(
        &mut self,
        id: ConversationId,
        count: usize,
        message: impl Fn(u64) -> NewMessage,
        indexed: bool,
    ) -> Result<()> {
        let keys: (i64, i64) = self.conn.query_row(
            "SELECT search_key, scope_key FROM conversations WHERE id = ?1",
            [&id.as_bytes()[..]],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let mut seq = 0_i64;
        let mut parent: Option<Vec<u8>> = None;
        while (seq as usize) < count {
            let end = (seq as usize + SEED_CHUNK).min(count) as i64;
            self.conn.execute_batch("BEGIN")?;
            while seq < end {
                let message = message(seq as u64);
                let message_id = uuid::Uuid::now_v7().as_bytes().to_vec();
                self.clock += 1;
                insert_message(
                    &self.conn,
                    id,
                    seq + 1,
                    &message_id,
                    seq,
                    parent.as_deref(),
                    &message,
                    self.clock,
                )?;
                if indexed {
                    index_row(&self.conn, keys, seq + 1, &message.content)?;
                }
                self.conn
                    .prepare_cached(sql::INSERT_PATH)?
                    .execute(params![&id.as_bytes()[..], seq + 1, 1_i64])?;
                seq += 1;
                parent = Some(message_id);
            }
            self.conn.execute_batch("COMMIT")?;
        }
        let at = self.tick();
        self.conn.execute(
            "UPDATE conversations SET message_count = ?2, last_seq = ?2, head_seq = ?2, \
             head_id = ?3, path_len = ?2, version = 2, updated_at = ?4 WHERE id = ?1",
            params![&id.as_bytes()[..], count as i64, parent, at],
        )?;
        Ok(())
    }

    /// The bytes of the database file and of its search index
    /// ([`sql::DATABASE_BYTES`], [`sql::SEARCH_INDEX_BYTES`]), after a checkpoint,
    /// and the messages stored.
    ///
    /// # Errors
    /// SQLite's.
    pub fn sizes(&self) -> Result<(i64, i64, i64)> {
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        let database = self
            .conn
            .query_row(sql::DATABASE_BYTES, [], |row| row.get(0))?;
        let index = self
            .conn
            .query_row(sql::SEARCH_INDEX_BYTES, [], |row| row.get(0))?;
        let messages = self
            .conn
            .query_row("SELECT count(*) FROM messages", [], |row| row.get(0))?;
        Ok((database, index, messages))
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
