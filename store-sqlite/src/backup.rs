//! The online backup: a consistent copy of the database while the store serves.

use std::path::{Path, PathBuf};

use conversation_core::{Error, Result};
use rusqlite::Connection;
use rusqlite::backup::{Backup, StepResult};

use crate::error::db;

/// The rollback journal SQLite may leave beside a copy it was writing.
pub(crate) fn journal_of(path: &Path) -> PathBuf {
    let mut journal = path.as_os_str().to_owned();
    journal.push("-journal");
    PathBuf::from(journal)
}

/// Copies the database of `source` (a read connection) into the new, empty file at
/// `path`, in one step: one read transaction of `source` sees one state of the
/// database, and in WAL mode it blocks no writer. (A copy in several steps would
/// start again whenever the writer commits meanwhile.)
pub(crate) fn copy(source: &Connection, path: &Path) -> Result<()> {
    let mut target = Connection::open(path).map_err(|e| {
        Error::unavailable(format!("opening the backup file {}", path.display()), e)
    })?;
    {
        let backup = Backup::new(source, &mut target).map_err(db("starting a backup"))?;
        match backup.step(-1).map_err(db("copying the database"))? {
            StepResult::Done => {}
            other => {
                return Err(Error::unavailable(
                    format!("the backup did not finish ({other:?}); try again"),
                    std::io::Error::other("backup step"),
                ));
            }
        }
    }
    target
        .close()
        .map_err(|(_, e)| db("closing the backup file")(e))
}
