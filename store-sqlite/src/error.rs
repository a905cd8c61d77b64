//! The store's own failures, converted into [`conversation_core::Error`] at its edge.
//!
//! SQLite reports an extended result code; its low byte is the primary code that says
//! what kind of failure it is. Transient ones (busy, locked, I/O, full disk, a closed
//! store) become [`Error::Unavailable`]; permanent ones (corruption, not a database, a
//! bug) become [`Error::Backend`], with a message a person can act on. No rusqlite
//! type leaves the crate except as the boxed `source` of an error.

use std::path::Path;

use conversation_core::Error;
use rusqlite::ffi;

/// A failure of the store, before it becomes a [`conversation_core::Error`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// SQLite refused or failed a statement.
    #[error("{context}: {source}")]
    Sqlite {
        /// What the store was doing ("reading a conversation").
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The store was closed.
    #[error("the SQLite store is closed")]
    Closed,
    /// The database file is no longer the file the store opened.
    #[error("{0}")]
    FileGone(String),
    /// The file cannot be written (permissions, a read-only mount).
    #[error(
        "the SQLite database {path} is read-only: the store needs to write the file and create \
         files beside it (-wal, -shm), so the file and its folder must be writable"
    )]
    ReadOnly {
        /// The database file.
        path: String,
    },
    /// A stored value cannot be read back as the model (corruption or a foreign write).
    #[error("a stored row is not valid: {0}")]
    BadRow(String),
    /// The schema of the file cannot be brought up to date.
    #[error("the schema migrations cannot be applied: {0}")]
    Migration(String),
    /// The writer thread could not be started.
    #[error("starting the SQLite writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl StoreError {
    /// A [`StoreError::ReadOnly`] for `path`.
    pub(crate) fn read_only(path: &Path) -> Self {
        StoreError::ReadOnly {
            path: path.display().to_string(),
        }
    }

    /// Whether the failure means the database file is gone from under the store
    /// (deleted, moved or replaced): every later write would be lost.
    pub(crate) fn file_is_gone(&self) -> bool {
        match self {
            StoreError::FileGone(_) => true,
            StoreError::Sqlite { source, .. } => matches!(
                extended_code(source),
                Some(ffi::SQLITE_IOERR_VNODE | ffi::SQLITE_READONLY_DBMOVED)
            ),
            _ => false,
        }
    }
}

/// The extended SQLite result code of an error, if it is one.
fn extended_code(err: &rusqlite::Error) -> Option<i32> {
    match err {
        rusqlite::Error::SqliteFailure(failure, _) => Some(failure.extended_code),
        _ => None,
    }
}

/// A converter for `map_err`: a rusqlite error met while doing `context`.
pub(crate) fn db(context: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |source| StoreError::Sqlite { context, source }.into()
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        let message = err.to_string();
        match &err {
            StoreError::Closed | StoreError::FileGone(_) | StoreError::ReadOnly { .. } => {
                Error::Unavailable {
                    message,
                    source: None,
                }
            }
            StoreError::BadRow(_) | StoreError::Migration(_) => Error::Backend {
                message,
                source: None,
            },
            StoreError::Thread(_) => Error::unavailable(message, err),
            StoreError::Sqlite { context, source } => {
                let code = extended_code(source).map(|code| code & 0xff);
                match code {
                    Some(ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED | ffi::SQLITE_PROTOCOL) => {
                        Error::unavailable(format!("{context}: the database is busy"), err)
                    }
                    Some(
                        ffi::SQLITE_IOERR
                        | ffi::SQLITE_FULL
                        | ffi::SQLITE_NOMEM
                        | ffi::SQLITE_CANTOPEN
                        | ffi::SQLITE_READONLY,
                    ) => Error::unavailable(message, err),
                    Some(ffi::SQLITE_CORRUPT) => Error::backend(
                        format!("{context}: the SQLite database is corrupt ({source})"),
                        err,
                    ),
                    Some(ffi::SQLITE_NOTADB) => Error::backend(
                        format!(
                            "{context}: the file is not a SQLite database, or it is corrupt \
                             ({source})"
                        ),
                        err,
                    ),
                    _ => Error::backend(message, err),
                }
            }
        }
    }
}

/// The error of a store that was closed.
pub(crate) fn closed() -> Error {
    StoreError::Closed.into()
}

/// A stored value that cannot be read back as the model.
pub(crate) fn bad_row(what: impl std::fmt::Display) -> Error {
    StoreError::BadRow(what.to_string()).into()
}

/// A copy of `err` for each request of a failed group: same variant and message.
pub(crate) fn copy(err: &Error) -> Error {
    match err {
        Error::Backend { message, .. } => Error::Backend {
            message: message.clone(),
            source: None,
        },
        Error::NotFound { entity } => Error::NotFound { entity: *entity },
        Error::Conflict { expected, actual } => Error::Conflict {
            expected: *expected,
            actual: *actual,
        },
        Error::RunInProgress { run_id } => Error::RunInProgress { run_id: *run_id },
        Error::InvalidInput { field, reason } => Error::InvalidInput {
            field: field.clone(),
            reason: reason.clone(),
        },
        other => Error::Unavailable {
            message: match other {
                Error::Unavailable { message, .. } => message.clone(),
                other => other.to_string(),
            },
            source: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None)
    }

    #[test]
    fn codes_map_to_what_a_caller_can_do() {
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_FULL,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_IOERR_VNODE,
        ] {
            assert!(db("x")(sqlite(code)).is_transient(), "{code}");
        }
        for code in [
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_NOTADB,
            ffi::SQLITE_MISMATCH,
        ] {
            assert!(
                matches!(db("x")(sqlite(code)), Error::Backend { .. }),
                "{code}"
            );
        }
        let not_a_database = db("opening")(sqlite(ffi::SQLITE_NOTADB)).to_string();
        assert!(
            not_a_database.contains("not a SQLite database"),
            "{not_a_database}"
        );
        assert!(closed().is_transient());
        assert!(matches!(bad_row("id"), Error::Backend { .. }));
        assert!(matches!(
            Error::from(StoreError::Migration("x".into())),
            Error::Backend { .. }
        ));
    }

    #[test]
    fn a_moved_or_unlinked_file_is_recognised() {
        for code in [ffi::SQLITE_IOERR_VNODE, ffi::SQLITE_READONLY_DBMOVED] {
            let err = StoreError::Sqlite {
                context: "committing",
                source: sqlite(code),
            };
            assert!(err.file_is_gone(), "{code}");
        }
        let busy = StoreError::Sqlite {
            context: "committing",
            source: sqlite(ffi::SQLITE_BUSY),
        };
        assert!(!busy.file_is_gone());
    }

    #[test]
    fn copies_keep_variant_and_message() {
        let original = db("committing")(sqlite(ffi::SQLITE_FULL));
        let copied = copy(&original);
        assert!(copied.is_transient());
        assert_eq!(copied.to_string(), original.to_string());
        assert!(matches!(
            copy(&Error::conversation_not_found()),
            Error::NotFound { .. }
        ));
    }
}
