//! Converting sqlx and SQLite failures into [`conversation_core::Error`].
//!
//! SQLite reports an extended result code; its low byte is the primary code that says
//! what kind of failure it is. Transient ones (busy, locked, I/O, a closed or exhausted
//! pool) become [`Error::Unavailable`]; permanent ones (corruption, not a database, a
//! failed migration) become [`Error::Backend`] with a message a person can act on.

use conversation_core::Error;

/// SQLite primary result codes (`sqlite3.h`).
mod code {
    pub(super) const BUSY: i64 = 5;
    pub(super) const LOCKED: i64 = 6;
    pub(super) const NOMEM: i64 = 7;
    pub(super) const READONLY: i64 = 8;
    pub(super) const IOERR: i64 = 10;
    pub(super) const CORRUPT: i64 = 11;
    pub(super) const FULL: i64 = 13;
    pub(super) const CANTOPEN: i64 = 14;
    pub(super) const PROTOCOL: i64 = 15;
    pub(super) const NOTADB: i64 = 26;
}

/// The primary SQLite result code of a database error, if it is one.
fn primary_code(err: &sqlx::Error) -> Option<i64> {
    match err {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i64>().ok())
            .map(|code| code & 0xff),
        _ => None,
    }
}

/// Converts a sqlx error; `context` says what was being done ("reading a conversation").
pub(crate) fn convert(context: &str, err: sqlx::Error) -> Error {
    match primary_code(&err) {
        Some(code::BUSY | code::LOCKED | code::PROTOCOL) => {
            Error::unavailable(format!("{context}: the database is busy"), err)
        }
        Some(code::IOERR | code::FULL | code::NOMEM | code::CANTOPEN | code::READONLY) => {
            Error::unavailable(format!("{context}: {err}"), err)
        }
        Some(code::CORRUPT) => Error::backend(
            format!("{context}: the SQLite database is corrupt ({err})"),
            err,
        ),
        Some(code::NOTADB) => Error::backend(
            format!("{context}: the file is not a SQLite database, or it is corrupt ({err})"),
            err,
        ),
        Some(_) => Error::backend(format!("{context}: {err}"), err),
        None => match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed => Error::unavailable(format!("{context}: {err}"), err),
            other => Error::backend(format!("{context}: {other}"), other),
        },
    }
}

/// Converts a migration failure.
pub(crate) fn migration(err: sqlx::migrate::MigrateError) -> Error {
    match err {
        sqlx::migrate::MigrateError::Execute(inner)
        | sqlx::migrate::MigrateError::ExecuteMigration(inner, _) => {
            convert("running the schema migrations", inner)
        }
        other => Error::backend(
            format!("the schema migrations cannot be applied: {other}"),
            other,
        ),
    }
}

/// The error of a store that was closed.
pub(crate) fn closed() -> Error {
    Error::Unavailable {
        message: "the SQLite store is closed".to_owned(),
        source: None,
    }
}

/// A stored value that cannot be read back as the model (corruption or a foreign write).
pub(crate) fn bad_row(what: impl std::fmt::Display) -> Error {
    Error::Backend {
        message: format!("a stored row is not valid: {what}"),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_io_failures_are_transient() {
        assert!(convert("x", sqlx::Error::PoolTimedOut).is_transient());
        assert!(convert("x", sqlx::Error::PoolClosed).is_transient());
        assert!(convert("x", sqlx::Error::Io(std::io::Error::other("gone"))).is_transient());
        assert!(!convert("x", sqlx::Error::RowNotFound).is_transient());
        assert!(closed().is_transient());
        assert!(matches!(bad_row("id"), Error::Backend { .. }));
    }
}
