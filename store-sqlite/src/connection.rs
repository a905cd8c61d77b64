//! Opening the store's connections, with the settings every one of them gets, and
//! keeping watch on the database file's identity.

use std::path::{Path, PathBuf};
use std::time::Duration;

use conversation_core::{Error, Result};
use rusqlite::{Connection, MAIN_DB, OpenFlags};

use crate::error::{StoreError, db};
use crate::options::Synchronous;

/// How many prepared statements each connection keeps: every statement of
/// [`crate::sql`], with the page sizes a host uses.
const STATEMENT_CACHE: usize = 128;

/// Where the database is.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// A file.
    File(PathBuf),
    /// A private in-memory database of the `memdb` VFS, shared by name between the
    /// store's connections.
    Memory(String),
}

/// Opens the store's connections.
#[derive(Debug, Clone)]
pub(crate) struct Opener {
    pub(crate) location: Location,
    pub(crate) busy_timeout: Duration,
    pub(crate) synchronous: Synchronous,
}

impl Opener {
    /// What an error while opening says the store was doing.
    pub(crate) fn describe(&self) -> String {
        match &self.location {
            Location::File(path) => format!("the SQLite database {}", path.display()),
            Location::Memory(_) => "an in-memory SQLite database".to_owned(),
        }
    }

    fn open(&self, flags: OpenFlags) -> Result<Connection> {
        let base = OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match &self.location {
            Location::File(path) => Connection::open_with_flags(path, base | flags),
            Location::Memory(name) => Connection::open_with_flags(
                format!("file:{name}?vfs=memdb"),
                base | flags | OpenFlags::SQLITE_OPEN_URI,
            ),
        }
        .map_err(|e| self.cannot_open(e))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.busy_timeout(self.busy_timeout)
            .map_err(db("setting the busy timeout"))?;
        Ok(conn)
    }

    fn cannot_open(&self, err: rusqlite::Error) -> Error {
        let what = self.describe();
        match &err {
            rusqlite::Error::SqliteFailure(failure, _)
                if failure.code == rusqlite::ErrorCode::CannotOpen =>
            {
                Error::unavailable(
                    format!(
                        "cannot open {what} ({err}): the path must be a file (or not exist yet) \
                         in a folder the store may write to"
                    ),
                    err,
                )
            }
            _ => db("opening the SQLite database")(err),
        }
    }

    /// The writer connection: read-write, created if missing, in WAL mode (for a
    /// file), with `synchronous`, foreign keys and secure delete on.
    ///
    /// # Errors
    /// A file that is not a database is a [`Error::Backend`] and is left as it is; a
    /// file or folder the store cannot write is [`Error::Unavailable`].
    pub(crate) fn open_writer(&self) -> Result<Connection> {
        let conn = self.open(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        if let Location::File(path) = &self.location {
            // SQLite opens a file it may not write read-only, silently.
            if conn.is_readonly(MAIN_DB).map_err(db("opening"))? {
                return Err(StoreError::read_only(path).into());
            }
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
                .map_err(|e| self.setting_up(e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::read_only(path).into());
            }
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;",
            self.synchronous.pragma_value()
        ))
        .map_err(|e| self.setting_up(e))?;
        Ok(conn)
    }

    fn setting_up(&self, err: rusqlite::Error) -> Error {
        let read_only = matches!(
            &err,
            rusqlite::Error::SqliteFailure(failure, _)
                if matches!(failure.code, rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
        );
        match &self.location {
            Location::File(path) if read_only => StoreError::read_only(path).into(),
            _ => db("setting up the database connection")(err),
        }
    }

    /// A read connection: read-only, foreign keys on.
    pub(crate) fn open_reader(&self) -> Result<Connection> {
        let conn = match self.location {
            Location::File(_) => self.open(OpenFlags::SQLITE_OPEN_READ_ONLY)?,
            // A memdb database is opened read-write by every connection; this one only
            // reads.
            Location::Memory(_) => {
                let conn = self.open(OpenFlags::SQLITE_OPEN_READ_WRITE)?;
                conn.execute_batch("PRAGMA query_only = ON;")
                    .map_err(db("setting up a read connection"))?;
                conn
            }
        };
        conn.execute_batch("PRAGMA foreign_keys = ON;")
            .map_err(db("setting up a read connection"))?;
        Ok(conn)
    }
}

/// The identity of a file: device and inode, on Unix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
}

#[cfg(unix)]
fn identity(path: &Path) -> std::io::Result<Option<FileIdentity>> {
    use std::os::unix::fs::MetadataExt as _;
    let metadata = std::fs::metadata(path)?;
    Ok(Some(FileIdentity {
        device: metadata.dev(),
        inode: metadata.ino(),
    }))
}

#[cfg(not(unix))]
fn identity(_path: &Path) -> std::io::Result<Option<FileIdentity>> {
    Ok(None)
}

/// The database file as the store opened it: a write is acknowledged only while the
/// path still names that file. SQLite keeps writing to the file it opened, so a
/// file deleted or replaced under a running store would take every later write with
/// it.
#[derive(Debug)]
pub(crate) struct FileWatch {
    path: Option<PathBuf>,
    identity: Option<FileIdentity>,
}

impl FileWatch {
    /// Takes the identity of the file at `location` (opened already); nothing to
    /// watch in memory or where the platform has no file identity.
    pub(crate) fn new(location: &Location) -> Result<Self> {
        match location {
            Location::Memory(_) => Ok(Self {
                path: None,
                identity: None,
            }),
            Location::File(path) => {
                let identity = identity(path).map_err(|e| {
                    Error::unavailable(format!("reading the identity of {}", path.display()), e)
                })?;
                Ok(Self {
                    path: Some(path.clone()),
                    identity,
                })
            }
        }
    }

    /// `Err` with the reason when the path no longer names the file opened.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        let (Some(path), Some(opened)) = (&self.path, self.identity) else {
            return Ok(());
        };
        match identity(path) {
            Ok(Some(now)) if now == opened => Ok(()),
            Ok(_) => Err(format!(
                "the SQLite database file {} was replaced by another file while the store had \
                 it open; the store refuses writes, which would go to the replaced file",
                path.display()
            )),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "the SQLite database file {} was deleted while the store had it open; the \
                 store refuses writes, which would be lost with it",
                path.display()
            )),
            Err(err) => Err(format!(
                "the SQLite database file {} cannot be checked ({err}); the store refuses \
                 writes until it is reopened",
                path.display()
            )),
        }
    }
}
