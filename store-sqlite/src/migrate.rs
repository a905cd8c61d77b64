//! The schema migrations, embedded in the crate and run when a store opens.
//!
//! They are recorded in the table [`MIGRATIONS_TABLE`](crate::MIGRATIONS_TABLE) in the
//! format sqlx's migrator uses (`version, description, installed_on, success,
//! checksum, execution_time`, the checksum being the SHA-384 of the SQL text), because
//! releases of this crate before it moved to rusqlite ran them with `sqlx::migrate!`:
//! a database they wrote opens and migrates, and a host's own sqlx migrations, in
//! sqlx's default table `_sqlx_migrations`, never collide with ours. No maintained
//! crate runs migrations recorded in sqlx's format over a rusqlite connection, so
//! this small runner is written by hand.
//!
//! The runner reads what is recorded first; when everything is applied (every open
//! after the first) it writes nothing. Otherwise it applies the missing versions,
//! with their records, in one `BEGIN IMMEDIATE` transaction, so that two processes
//! opening a new file at once do not both migrate it. It refuses, leaving the file
//! untouched, a database that records a version it does not know (written by a newer
//! release), a migration whose recorded checksum differs from its own, or one that
//! sqlx left unfinished.

use std::time::Instant;

use conversation_core::Result;
use rusqlite::{Connection, OptionalExtension as _, params};
use sha2::{Digest as _, Sha384};

use crate::MIGRATIONS_TABLE;
use crate::error::{StoreError, db};
use crate::search;

/// One migration, as sqlx names it from its file `<version>_<description>.sql`.
#[derive(Debug)]
struct Migration {
    version: i64,
    /// The file name's description with `_` read as spaces.
    description: &'static str,
    sql: &'static str,
}

/// Every migration, in order. A file, once released, never changes: its checksum is
/// recorded in every database it migrated.
const MIGRATIONS: [Migration; 3] = [
    Migration {
        version: 1,
        description: "conversations",
        sql: include_str!("../migrations/0001_conversations.sql"),
    },
    Migration {
        version: 2,
        description: "message tree",
        sql: include_str!("../migrations/0002_message_tree.sql"),
    },
    Migration {
        version: 3,
        description: "runs search lifecycle",
        sql: include_str!("../migrations/0003_runs_search_lifecycle.sql"),
    },
];

impl Migration {
    fn checksum(&self) -> Vec<u8> {
        Sha384::digest(self.sql.as_bytes()).to_vec()
    }
}

/// A row of the migrations table.
#[derive(Debug)]
struct Applied {
    version: i64,
    checksum: Vec<u8>,
    success: bool,
}

fn refuse(message: String) -> conversation_core::Error {
    StoreError::Migration(message).into()
}

/// What is recorded, or nothing when the table does not exist yet.
fn applied(conn: &Connection) -> Result<Vec<Applied>> {
    let exists = conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [MIGRATIONS_TABLE],
            |_| Ok(()),
        )
        .optional()
        .map_err(db("reading the schema"))?
        .is_some();
    if !exists {
        return Ok(Vec::new());
    }
    let mut statement = conn
        .prepare(&format!(
            "SELECT version, checksum, success FROM {MIGRATIONS_TABLE} ORDER BY version"
        ))
        .map_err(db("reading the applied migrations"))?;
    let rows = statement
        .query_map([], |row| {
            Ok(Applied {
                version: row.get("version")?,
                checksum: row.get("checksum")?,
                success: row.get("success")?,
            })
        })
        .map_err(db("reading the applied migrations"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db("reading the applied migrations"))
}

/// Checks what is recorded against what this release knows; returns the migrations
/// still to apply.
fn missing(applied: &[Applied]) -> Result<Vec<&'static Migration>> {
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    for row in applied {
        if !row.success {
            return Err(refuse(format!(
                "migration {} was started but never finished (recorded as failed in \
                 {MIGRATIONS_TABLE}); restore the database from a backup",
                row.version
            )));
        }
        let Some(ours) = MIGRATIONS.iter().find(|m| m.version == row.version) else {
            return Err(refuse(format!(
                "the database records schema version {} in {MIGRATIONS_TABLE}, but this \
                 release of conversation-store-sqlite knows versions up to {known}: it was \
                 written by a newer release; open it with that release or a later one",
                row.version
            )));
        };
        if row.checksum != ours.checksum() {
            return Err(refuse(format!(
                "migration {} ({}) recorded in {MIGRATIONS_TABLE} has another checksum than \
                 this release's: the database was migrated by a different build of the schema",
                ours.version, ours.description
            )));
        }
    }
    Ok(MIGRATIONS
        .iter()
        .filter(|m| !applied.iter().any(|row| row.version == m.version))
        .collect())
}

/// Brings the schema of the writer's database up to date, and its search index
/// (built by this build's rule for words; see [`crate::search`]).
pub(crate) fn run(conn: &Connection) -> Result<()> {
    if missing(&applied(conn)?)?.is_empty() && search::is_current(conn)? {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(db("starting the schema migrations"))?;
    let result = apply_missing(conn).and_then(|()| {
        conn.execute_batch("COMMIT")
            .map_err(db("committing the schema migrations"))
    });
    if result.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

fn apply_missing(conn: &Connection) -> Result<()> {
    // As sqlx creates it, so that sqlx (and older releases) read it as theirs.
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
);"
    ))
    .map_err(db("creating the migrations table"))?;
    // Read again under the write lock: another process may have migrated meanwhile.
    for migration in missing(&applied(conn)?)? {
        let started = Instant::now();
        conn.execute_batch(migration.sql)
            .map_err(db("running a schema migration"))?;
        let nanos = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
        conn.execute(
            &format!(
                "INSERT INTO {MIGRATIONS_TABLE} (version, description, success, checksum, \
                 execution_time) VALUES (?1, ?2, TRUE, ?3, ?4)"
            ),
            params![
                migration.version,
                migration.description,
                migration.checksum(),
                nanos
            ],
        )
        .map_err(db("recording a schema migration"))?;
        tracing::info!(
            version = migration.version,
            description = migration.description,
            "applied a schema migration"
        );
    }
    // The index is filled by the store's own rule for words, which SQL cannot run:
    // after the migration that creates it, and whenever that rule changed.
    if !search::is_current(conn)? {
        search::rebuild(conn)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_descriptions_follow_the_file_names() {
        let names = [
            "0001_conversations.sql",
            "0002_message_tree.sql",
            "0003_runs_search_lifecycle.sql",
        ];
        assert_eq!(names.len(), MIGRATIONS.len());
        for (name, migration) in names.iter().zip(&MIGRATIONS) {
            let (version, rest) = name.split_once('_').unwrap();
            assert_eq!(version.parse::<i64>().unwrap(), migration.version);
            assert_eq!(
                rest.trim_end_matches(".sql").replace('_', " "),
                migration.description
            );
            let on_disk = std::fs::read_to_string(format!(
                "{}/migrations/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            assert_eq!(on_disk, migration.sql);
        }
    }

    #[test]
    fn the_first_migration_keeps_its_released_checksum() {
        // Recorded in every database the sqlx-based releases created.
        let released = "519d316ccbb59d06b8a265f226a6141f20e710b2483a42fcfcd0d42b18c1bd74511d386c40b9c850638dc70594291b49";
        let hex: String = MIGRATIONS[0]
            .checksum()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(hex, released);
    }

    #[test]
    fn refusals_name_the_problem() {
        let ok = |version: i64| Applied {
            version,
            checksum: MIGRATIONS[(version - 1) as usize].checksum(),
            success: true,
        };
        assert_eq!(missing(&[]).unwrap().len(), 3);
        assert_eq!(missing(&[ok(1)]).unwrap()[0].version, 2);
        assert!(missing(&[ok(1), ok(2), ok(3)]).unwrap().is_empty());
        let newer = Applied {
            version: 4,
            checksum: Vec::new(),
            success: true,
        };
        let err = missing(&[ok(1), ok(2), ok(3), newer])
            .unwrap_err()
            .to_string();
        assert!(err.contains("newer release"), "{err}");
        let changed = Applied {
            checksum: vec![0; 48],
            ..ok(1)
        };
        let err = missing(&[changed]).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
        let dirty = Applied {
            success: false,
            ..ok(1)
        };
        let err = missing(&[dirty]).unwrap_err().to_string();
        assert!(err.contains("never finished"), "{err}");
    }
}
