//! The read connections, and where reads run.
//!
//! A read takes a connection from a small pool and runs on the caller's own thread,
//! in place: a point read or a window costs SQLite 2–50 µs, and handing it to another
//! thread costs more than that (measured on the 2-core VM of the benches, per call:
//! `block_in_place` on a Tokio worker +9 µs, `spawn_blocking` +25 µs, a dedicated
//! reader thread +7 µs, against 2.7 µs for a whole `get` in place). A read that turns
//! out long (it has read [`LONG_READ_BYTES`], say a page of big messages) goes on
//! inside [`tokio::task::block_in_place`] when the runtime is multi-threaded, so that
//! the worker's other tasks move to another thread instead of waiting; on a
//! current-thread runtime, which cannot do that, it goes on in place.
//!
//! The pool opens connections when reads first need them, up to the configured
//! number, and keeps them; a read beyond that many at once waits (asynchronously)
//! for a free one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use conversation_core::Result;
use rusqlite::Connection;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;

use crate::connection::Opener;
use crate::error::closed;

/// How many bytes a read takes in place before it hands its worker's tasks over.
pub(crate) const LONG_READ_BYTES: usize = 256 * 1024;

/// The store's read connections.
#[derive(Debug)]
pub(crate) struct Readers {
    opener: Opener,
    /// Free connections.
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection the pool may have.
    permits: Semaphore,
    size: u32,
    closed: AtomicBool,
}

impl Readers {
    pub(crate) fn new(opener: Opener, size: u32) -> Self {
        let size = size.max(1);
        Self {
            opener,
            idle: Mutex::new(Vec::with_capacity(size as usize)),
            permits: Semaphore::new(size as usize),
            size,
            closed: AtomicBool::new(false),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A connection is pushed or popped whole: a poisoned lock holds a sound list.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `read` on a connection of the pool, in place.
    pub(crate) async fn read<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let _permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => self.permits.acquire().await.map_err(|_| closed())?,
        };
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let conn = match self.idle().pop() {
            Some(conn) => conn,
            None => self.opener.open_reader()?,
        };
        // Given back even when `read` panics: the connection holds no state of it.
        let lease = Lease {
            readers: self,
            conn: Some(conn),
        };
        match &lease.conn {
            Some(conn) => read(conn),
            None => Err(closed()),
        }
    }

    /// Refuses new reads, waits for the running ones, closes every connection.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Ok(all) = self.permits.acquire_many(self.size).await {
            let connections = std::mem::take(&mut *self.idle());
            for conn in connections {
                if let Err((_, err)) = conn.close() {
                    tracing::warn!(error = %err, "closing a SQLite read connection failed");
                }
            }
            all.forget();
        }
        self.permits.close();
    }
}

/// A connection taken from the pool, given back when dropped.
struct Lease<'a> {
    readers: &'a Readers,
    conn: Option<Connection>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // A read that stopped halfway (a panic) must not leave a transaction open:
            // it would hold its snapshot, and keep the log from being checkpointed.
            if !conn.is_autocommit()
                && let Err(err) = conn.execute_batch("ROLLBACK")
            {
                tracing::warn!(error = %err, "ending a read transaction failed");
                return;
            }
            self.readers.idle().push(conn);
        }
    }
}

/// Runs `step` until it returns `Ok(false)`; each call reads one row and adds its size
/// to the count it is given. The first [`LONG_READ_BYTES`] are read in place, the rest
/// inside `block_in_place` when the runtime allows it.
pub(crate) fn pace(mut step: impl FnMut(&mut usize) -> Result<bool>) -> Result<()> {
    let mut bytes = 0;
    while bytes < LONG_READ_BYTES {
        if !step(&mut bytes)? {
            return Ok(());
        }
    }
    blocking(|| {
        while step(&mut bytes)? {}
        Ok(())
    })
}

/// Runs `work`, which may block for a while, on this thread: inside `block_in_place`
/// on a multi-threaded runtime, so that the worker's other tasks move elsewhere
/// meanwhile; as it is elsewhere (a current-thread runtime cannot do that).
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    let multi_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}
