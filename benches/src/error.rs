//! The harness's one error type.

/// What can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A store call failed.
    #[error("store: {0}")]
    Store(#[from] conversation_core::Error),
    /// The raw SQLite baseline or the SQLite seeding failed.
    #[error("raw SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL seeding or clean-up failed.
    #[cfg(feature = "postgres")]
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
    /// A file or the runtime failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Writing the JSON report failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Anything else: a check of the harness itself (a page of the wrong size, a
    /// task that panicked, a bad argument).
    #[error("{0}")]
    Harness(String),
}

impl Error {
    /// A failed check of the harness, with a message saying what was seen.
    pub fn harness(message: impl Into<String>) -> Self {
        Self::Harness(message.into())
    }
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
