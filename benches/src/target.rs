//! The store under test: opened, seeded in bulk, reopened, shut down.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
#[cfg(feature = "postgres")]
use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(feature = "postgres")]
use chrono::{DateTime, Utc};
use conversation_core::{Append, ConversationId, NewConversation, NewMessage, Scope, Store};
use conversation_store_memory::MemoryStore;
#[cfg(feature = "postgres")]
use conversation_store_postgres::{PostgresOptions, PostgresStore};
use conversation_store_sqlite::SqliteStore;
#[cfg(feature = "postgres")]
use sqlx::{AssertSqlSafe, Executor as _};
use tokio::runtime::Runtime;
#[cfg(feature = "postgres")]
use uuid::Uuid;

#[cfg(feature = "postgres")]
use crate::sqlite::now_millis;
use crate::sqlite::{RawSqlite, Seeder};
use crate::{Error, Result, body};

/// Which store a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// `conversation-store-memory`.
    Memory,
    /// `conversation-store-sqlite`, on a file, with the default options (durable).
    Sqlite,
    /// `conversation-store-postgres`, in a schema of its own, dropped at the end.
    Postgres,
}

impl StoreKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StoreKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "memory" => Ok(StoreKind::Memory),
            "sqlite" => Ok(StoreKind::Sqlite),
            "postgres" => Ok(StoreKind::Postgres),
            other => Err(Error::harness(format!(
                "unknown store {other:?}: one of sqlite, memory, postgres"
            ))),
        }
    }
}

/// Messages per batch when seeding through a store's append (its largest batch).
const SEED_BATCH: usize = 256;

/// Rows per statement when seeding PostgreSQL.
#[cfg(feature = "postgres")]
const PG_CHUNK: usize = 5_000;

/// The store under test and what it takes to seed and reopen it.
#[derive(Debug)]
pub(crate) enum Target {
    Memory(Arc<MemoryStore>),
    Sqlite {
        store: Option<Arc<SqliteStore>>,
        path: PathBuf,
        raw: Box<RawSqlite>,
        seeder: Box<Seeder>,
    },
    #[cfg(feature = "postgres")]
    Postgres {
        store: Option<PostgresStore>,
        url: String,
        schema: String,
        clock: i64,
    },
}

impl Target {
    /// Opens a new, empty store: for SQLite a file `scale.db` in `dir`; for
    /// PostgreSQL a new schema.
    pub(crate) fn open(kind: StoreKind, dir: &Path, url: &str, rt: &Runtime) -> Result<Self> {
        match kind {
            StoreKind::Memory => Ok(Target::Memory(Arc::new(MemoryStore::new()))),
            StoreKind::Sqlite => {
                let path = dir.join("scale.db");
                let store = rt.block_on(SqliteStore::open(&path))?;
                Ok(Target::Sqlite {
                    store: Some(Arc::new(store)),
                    raw: Box::new(RawSqlite::open(&path)?),
                    seeder: Box::new(Seeder::open(&path)?),
                    path,
                })
            }
            #[cfg(not(feature = "postgres"))]
            StoreKind::Postgres => {
                let _ = url;
                Err(Error::harness(
                    "this harness was built without PostgreSQL (the `postgres` feature)",
                ))
            }
            #[cfg(feature = "postgres")]
            StoreKind::Postgres => {
                let seconds = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let schema = format!("conv_scale_{seconds}_{}", std::process::id());
                let store = rt.block_on(connect_postgres(url, &schema))?;
                Ok(Target::Postgres {
                    store: Some(store),
                    url: url.to_owned(),
                    schema,
                    clock: now_millis() - 30 * 24 * 3_600_000,
                })
            }
        }
    }

    /// The store, as a host holds it.
    pub(crate) fn store(&self) -> Result<Arc<dyn Store>> {
        let closed = || Error::harness("the store is closed");
        Ok(match self {
            Target::Memory(store) => Arc::clone(store) as Arc<dyn Store>,
            Target::Sqlite { store, .. } => {
                Arc::clone(store.as_ref().ok_or_else(closed)?) as Arc<dyn Store>
            }
            #[cfg(feature = "postgres")]
            Target::Postgres { store, .. } => {
                Arc::new(store.as_ref().ok_or_else(closed)?.clone()) as Arc<dyn Store>
            }
        })
    }

    /// The raw SQLite baseline, for a SQLite store.
    pub(crate) fn raw(&self) -> Option<&RawSqlite> {
        match self {
            Target::Sqlite { raw, .. } => Some(raw),
            _ => None,
        }
    }

    /// For SQLite, the writer's counters: (transactions committed, writes in them).
    pub(crate) fn write_stats(&self) -> Option<(u64, u64)> {
        match self {
            Target::Sqlite {
                store: Some(store), ..
            } => {
                let stats = store.write_stats();
                Some((stats.transactions, stats.writes))
            }
            _ => None,
        }
    }

    /// Whether the store persists, so that closing and reopening it means something.
    pub(crate) fn reopens(&self) -> bool {
        !matches!(self, Target::Memory(_))
    }

    /// Creates `count` conversations in each scope, untimed; their ids per scope,
    /// least recent activity first. SQLite: raw bulk inserts; PostgreSQL: multi-row
    /// inserts from arrays; memory: the store's own create.
    pub(crate) fn seed_conversations(
        &mut self,
        rt: &Runtime,
        scopes: &[(Scope, usize)],
    ) -> Result<Vec<Vec<ConversationId>>> {
        match self {
            Target::Memory(store) => rt.block_on(async {
                let mut all = Vec::with_capacity(scopes.len());
                for (scope, count) in scopes {
                    let mut ids = Vec::with_capacity(*count);
                    for i in 0..*count {
                        let new = NewConversation::new()
                            .with_title(format!("Conversation {i} about the orders table"));
                        ids.push(store.create_conversation(scope, new).await?.id);
                    }
                    all.push(ids);
                }
                Ok(all)
            }),
            Target::Sqlite { seeder, .. } => seeder.conversations(scopes),
            #[cfg(feature = "postgres")]
            Target::Postgres {
                store,
                schema,
                clock,
                ..
            } => {
                let store = store
                    .as_ref()
                    .ok_or_else(|| Error::harness("the store is closed"))?;
                rt.block_on(pg_seed_conversations(store, schema, clock, scopes))
            }
        }
    }

    /// Gives conversation `id` (of `scope`, with no message yet) `count` messages,
    /// untimed. SQLite: raw bulk inserts; PostgreSQL: multi-row inserts; memory: the
    /// store's append in batches of 256.
    pub(crate) fn seed_messages(
        &mut self,
        rt: &Runtime,
        scope: &Scope,
        id: ConversationId,
        count: usize,
    ) -> Result<()> {
        self.seed_messages_with(rt, scope, id, count, &body::message)
    }

    /// Like [`Target::seed_messages`] for the long conversations of section B: on
    /// SQLite, their words are not put in the search index (indexing 1,000,000
    /// messages would take minutes of seeding, and B searches nothing).
    pub(crate) fn seed_long_messages(
        &mut self,
        rt: &Runtime,
        scope: &Scope,
        id: ConversationId,
        count: usize,
    ) -> Result<()> {
        match self {
            Target::Sqlite { seeder, .. } => seeder.messages_with(id, count, body::message, false),
            _ => self.seed_messages(rt, scope, id, count),
        }
    }

    /// Like [`Target::seed_messages`], message `i` (from 0) being `message(i)`.
    pub(crate) fn seed_messages_with(
        &mut self,
        rt: &Runtime,
        scope: &Scope,
        id: ConversationId,
        count: usize,
        message: &(dyn Fn(u64) -> NewMessage + Sync),
    ) -> Result<()> {
        match self {
            Target::Memory(store) => rt.block_on(async {
                let mut next = 0;
                while next < count {
                    let size = SEED_BATCH.min(count - next);
                    let batch = (next..next + size).map(|i| message(i as u64)).collect();
                    store.append_messages(scope, id, Append::new(batch)).await?;
                    next += size;
                }
                Ok(())
            }),
            Target::Sqlite { seeder, .. } => seeder.messages_with(id, count, message, true),
            #[cfg(feature = "postgres")]
            Target::Postgres {
                store,
                schema,
                clock,
                ..
            } => {
                let store = store
                    .as_ref()
                    .ok_or_else(|| Error::harness("the store is closed"))?;
                rt.block_on(pg_seed_messages(store, schema, clock, id, count, message))
            }
        }
    }

    /// Which store this is.
    pub(crate) fn kind(&self) -> StoreKind {
        match self {
            Target::Memory(_) => StoreKind::Memory,
            Target::Sqlite { .. } => StoreKind::Sqlite,
            #[cfg(feature = "postgres")]
            Target::Postgres { .. } => StoreKind::Postgres,
        }
    }

    /// For SQLite, the bytes of the database file and of its search index, and the
    /// messages stored.
    pub(crate) fn sizes(&self) -> Result<Option<(i64, i64, i64)>> {
        match self {
            Target::Sqlite { seeder, .. } => seeder.sizes().map(Some),
            _ => Ok(None),
        }
    }

    /// Ends a seeding step: SQLite checkpoints the WAL into the file; PostgreSQL
    /// refreshes the planner's statistics, as autovacuum would soon after a bulk load.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub(crate) fn settle(&mut self, rt: &Runtime) -> Result<()> {
        match self {
            Target::Memory(_) => Ok(()),
            Target::Sqlite { seeder, .. } => seeder.checkpoint(),
            #[cfg(feature = "postgres")]
            Target::Postgres { store, schema, .. } => {
                let store = store
                    .as_ref()
                    .ok_or_else(|| Error::harness("the store is closed"))?;
                rt.block_on(async {
                    for table in ["conversations", "messages"] {
                        store
                            .pool()
                            .execute(AssertSqlSafe(format!("ANALYZE \"{schema}\".{table}")))
                            .await?;
                    }
                    Ok(())
                })
            }
        }
    }

    /// Closes the store (finishing its queued writes, closing its connections).
    pub(crate) fn close(&mut self, rt: &Runtime) {
        match self {
            Target::Memory(_) => {}
            Target::Sqlite { store, .. } => {
                if let Some(store) = store.take() {
                    rt.block_on(store.close());
                }
            }
            #[cfg(feature = "postgres")]
            Target::Postgres { store, .. } => {
                if let Some(store) = store.take() {
                    rt.block_on(store.pool().close());
                }
            }
        }
    }

    /// Opens the store again after [`Target::close`], as a restarted host does:
    /// SQLite opens its file (checking the migrations, opening its writer and
    /// readers), PostgreSQL connects a new pool (checking the migrations). Meant to
    /// be timed.
    pub(crate) async fn reopen(&mut self) -> Result<Arc<dyn Store>> {
        match self {
            Target::Memory(store) => Ok(Arc::clone(store) as Arc<dyn Store>),
            Target::Sqlite { store, path, .. } => {
                let opened = Arc::new(SqliteStore::open(&*path).await?);
                *store = Some(Arc::clone(&opened));
                Ok(opened as Arc<dyn Store>)
            }
            #[cfg(feature = "postgres")]
            Target::Postgres {
                store, url, schema, ..
            } => {
                let opened = connect_postgres(url, schema).await?;
                *store = Some(opened.clone());
                Ok(Arc::new(opened) as Arc<dyn Store>)
            }
        }
    }

    /// Closes the store; for PostgreSQL, drops the run's schema first.
    pub(crate) fn shutdown(mut self, rt: &Runtime) -> Result<()> {
        let dropped = match &self {
            #[cfg(feature = "postgres")]
            Target::Postgres {
                store: Some(store),
                schema,
                ..
            } => rt
                .block_on(
                    store
                        .pool()
                        .execute(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE"))),
                )
                .map(drop)
                .map_err(Error::from),
            #[cfg(feature = "postgres")]
            Target::Postgres {
                store: None,
                url,
                schema,
                ..
            } => rt.block_on(async {
                let store = connect_postgres(url, schema).await?;
                store
                    .pool()
                    .execute(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
                    .await?;
                store.pool().close().await;
                Ok(())
            }),
            _ => Ok(()),
        };
        self.close(rt);
        dropped
    }
}

#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str, schema: &str) -> Result<PostgresStore> {
    Ok(PostgresStore::connect_with(url, PostgresOptions::new().schema(schema)).await?)
}

#[cfg(feature = "postgres")]
fn timestamp(millis: i64) -> Result<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(millis)
        .ok_or_else(|| Error::harness(format!("{millis} ms is no timestamp")))
}

#[cfg(feature = "postgres")]
async fn pg_seed_conversations(
    store: &PostgresStore,
    schema: &str,
    clock: &mut i64,
    scopes: &[(Scope, usize)],
) -> Result<Vec<Vec<ConversationId>>> {
    let statement = format!(
        "INSERT INTO \"{schema}\".conversations (id, scope, title, title_source, created_at, \
         updated_at, message_count, last_seq, head_id, pinned, archived, metadata, version) \
         SELECT id, scope, title, 'user', at, at, 0, 0, NULL, false, false, '{{}}'::jsonb, 1 \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) AS t(id, scope, title, at)"
    );
    let mut all = Vec::with_capacity(scopes.len());
    let mut rows: Vec<(Uuid, String, String, DateTime<Utc>)> = Vec::with_capacity(PG_CHUNK);
    for (scope, count) in scopes {
        let mut ids = Vec::with_capacity(*count);
        for i in 0..*count {
            let id = ConversationId::new();
            *clock += 1;
            rows.push((
                *id.as_uuid(),
                scope.as_str().to_owned(),
                format!("Conversation {i} about the orders table"),
                timestamp(*clock)?,
            ));
            ids.push(id);
            if rows.len() == PG_CHUNK {
                pg_insert_conversations(store, &statement, &mut rows).await?;
            }
        }
        all.push(ids);
    }
    pg_insert_conversations(store, &statement, &mut rows).await?;
    Ok(all)
}

#[cfg(feature = "postgres")]
async fn pg_insert_conversations(
    store: &PostgresStore,
    statement: &str,
    rows: &mut Vec<(Uuid, String, String, DateTime<Utc>)>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (mut ids, mut scopes, mut titles, mut ats) = (vec![], vec![], vec![], vec![]);
    for (id, scope, title, at) in rows.drain(..) {
        ids.push(id);
        scopes.push(scope);
        titles.push(title);
        ats.push(at);
    }
    sqlx::query(AssertSqlSafe(statement))
        .bind(ids)
        .bind(scopes)
        .bind(titles)
        .bind(ats)
        .execute(store.pool())
        .await?;
    Ok(())
}

#[cfg(feature = "postgres")]
async fn pg_seed_messages(
    store: &PostgresStore,
    schema: &str,
    clock: &mut i64,
    id: ConversationId,
    count: usize,
    message: &(dyn Fn(u64) -> NewMessage + Sync),
) -> Result<()> {
    let statement = format!(
        "INSERT INTO \"{schema}\".messages (conversation_id, seq, id, parent_id, depth, \
         sibling_index, last_sibling, on_path, role, content, tool_calls, tool_call_id, metadata, \
         created_at) \
         SELECT $1, seq, id, parent_id, seq, 0, true, true, role, content, '[]'::jsonb, NULL, \
                '{{}}'::jsonb, at \
         FROM unnest($2::bigint[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], \
                     $7::timestamptz[]) \
         AS t(seq, id, parent_id, role, content, at)"
    );
    // One linear branch: each message follows the one before it.
    let mut previous: Option<Uuid> = None;
    let mut next = 0;
    while next < count {
        let size = PG_CHUNK.min(count - next);
        let (mut seqs, mut ids, mut parents, mut roles, mut contents, mut ats) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for i in next..next + size {
            let message = message(i as u64);
            *clock += 1;
            let id = Uuid::now_v7();
            seqs.push(i as i64 + 1);
            parents.push(previous.replace(id));
            ids.push(id);
            roles.push(message.role.as_str());
            contents.push(message.content);
            ats.push(timestamp(*clock)?);
        }
        sqlx::query(AssertSqlSafe(statement.as_str()))
            .bind(*id.as_uuid())
            .bind(seqs)
            .bind(ids)
            .bind(parents)
            .bind(roles)
            .bind(contents)
            .bind(ats)
            .execute(store.pool())
            .await?;
        next += size;
    }
    *clock += 1;
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE \"{schema}\".conversations SET message_count = $2, last_seq = $2, head_id = $4, \
         head_seq = CASE WHEN $2 > 0 THEN $2 END, head_depth = CASE WHEN $2 > 0 THEN $2 END, \
         version = 2, updated_at = $3 WHERE id = $1"
    )))
    .bind(*id.as_uuid())
    .bind(count as i64)
    .bind(timestamp(*clock)?)
    .bind(previous)
    .execute(store.pool())
    .await?;
    Ok(())
}
