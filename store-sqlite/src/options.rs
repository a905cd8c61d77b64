//! How a [`SqliteStore`](crate::SqliteStore) is opened.

use std::sync::Arc;
use std::time::Duration;

use conversation_core::{Clock, Limits, SystemClock};

/// When SQLite waits for the disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// Every commit is on disk before it is acknowledged: an acknowledged write survives
    /// `kill -9` and power loss. The default.
    #[default]
    Full,
    /// Commits are on disk at the next checkpoint: an acknowledged write survives
    /// `kill -9` but the last ones may be lost to a power cut. Faster; opt-in only.
    Normal,
}

impl Synchronous {
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Settings of a [`SqliteStore`](crate::SqliteStore); [`SqliteOptions::default`] is
/// what [`SqliteStore::open`](crate::SqliteStore::open) uses.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) synchronous: Synchronous,
    pub(crate) busy_timeout: Duration,
    pub(crate) readers: u32,
    pub(crate) limits: Limits,
    pub(crate) max_group: usize,
    pub(crate) queue_capacity: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            readers: 4,
            limits: Limits::default(),
            max_group: 64,
            queue_capacity: 1024,
        }
    }
}

impl SqliteOptions {
    /// The defaults: the system clock, `synchronous=FULL`, a 5 s busy timeout, up to 4
    /// readers, default [`Limits`], groups of at most 64 writes, a queue of 1024 writes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the store reads the time for its timestamps. Default [`SystemClock`]; a
    /// test (or a host replaying data) may set its own. The store, not the clock,
    /// keeps timestamps from moving backwards within a conversation.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets `PRAGMA synchronous` of the writer connection.
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How long a connection waits for a lock held by another connection (another
    /// process, or the writer during a checkpoint) before giving up with
    /// [`Error::Unavailable`](conversation_core::Error::Unavailable). Set on every
    /// connection the store opens. Default 5 s.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How many read connections the store may open (at least 1). Default 4. They are
    /// opened when reads first need them and kept; reads beyond this many at once
    /// wait for a free one.
    pub fn readers(mut self, readers: u32) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// The input limits checked before anything is written. Default [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The most writes committed together in one transaction (at least 1). Default 64.
    pub fn max_group_size(mut self, writes: usize) -> Self {
        self.max_group = writes.max(1);
        self
    }

    /// How many writes may wait for the writer before callers wait to queue theirs
    /// (at least 1). Default 1024.
    pub fn queue_capacity(mut self, writes: usize) -> Self {
        self.queue_capacity = writes.max(1);
        self
    }
}
