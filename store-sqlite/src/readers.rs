//! The read connections: the store's own small set, or the host's pool.
//!
//! The store's own readers are plain connections behind a fair semaphore: a read
//! takes a permit, then a free connection, and gives both back when it ends, with
//! nothing spawned. (A `sqlx` pool spawns a task to take back every connection,
//! which costs a point read about a fifth of its time.) The connections are opened
//! at start and kept for the life of the store.

use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{FromRow, Sqlite, SqliteConnection, SqlitePool};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Mutex, MutexGuard, Semaphore};

type QueryAs<'q, O> = sqlx::query::QueryAs<'q, Sqlite, O, SqliteArguments>;

/// Where reads run.
#[derive(Debug)]
pub(crate) enum Readers {
    /// Connections the store opened and owns.
    Own(ReaderSet),
    /// The host's pool ([`SqliteStore::from_pool`](crate::SqliteStore::from_pool)).
    Host(SqlitePool),
}

/// A fixed set of read connections.
#[derive(Debug)]
pub(crate) struct ReaderSet {
    permits: Semaphore,
    connections: Vec<Mutex<Option<SqliteConnection>>>,
    next: AtomicUsize,
}

impl ReaderSet {
    pub(crate) fn new(connections: Vec<SqliteConnection>) -> Self {
        Self {
            permits: Semaphore::new(connections.len()),
            connections: connections
                .into_iter()
                .map(|c| Mutex::new(Some(c)))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A free connection; `PoolClosed` once the set is closed.
    async fn acquire(&self) -> Result<MutexGuard<'_, Option<SqliteConnection>>, sqlx::Error> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let count = self.connections.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // Holding a permit, at least one connection is free: the scan finds it unless
        // a reader is just releasing its lock; then wait for the first one.
        let mut guard = None;
        for offset in 0..count {
            if let Ok(found) = self.connections[(start + offset) % count].try_lock() {
                guard = Some(found);
                break;
            }
        }
        let guard = match guard {
            Some(guard) => guard,
            None => self.connections[start % count].lock().await,
        };
        if guard.is_none() {
            return Err(sqlx::Error::PoolClosed);
        }
        Ok(guard)
    }

    /// Refuses new reads, waits for the running ones, closes every connection.
    pub(crate) async fn close(&self) {
        self.permits.close();
        for slot in &self.connections {
            if let Some(connection) = slot.lock().await.take()
                && let Err(err) = sqlx::Connection::close(connection).await
            {
                tracing::warn!(error = %err, "closing a SQLite reader connection failed");
            }
        }
    }
}

impl Readers {
    pub(crate) async fn fetch_optional<'q, O>(
        &self,
        query: QueryAs<'q, O>,
    ) -> Result<Option<O>, sqlx::Error>
    where
        O: Send + Unpin + for<'r> FromRow<'r, SqliteRow> + 'q,
    {
        match self {
            Readers::Own(set) => {
                let mut guard = set.acquire().await?;
                let connection = guard.as_mut().ok_or(sqlx::Error::PoolClosed)?;
                query.fetch_optional(connection).await
            }
            Readers::Host(pool) => query.fetch_optional(pool).await,
        }
    }
}
