//! Every integration test of `conversation-store-sqlite`, in one test binary.
//!
//! - `direct`, `dyn_store`, `in_memory`: the store conformance suite, on a fresh
//!   temporary database file per case (directly and as `Arc<dyn Store>`), and on the
//!   in-memory mode.
//! - `files`: reopening, migrations beside a host's own, bad files, in-memory stores.
//! - `migrations`: a database of the sqlx-based release migrates; newer or different
//!   schemas are refused.
//! - `plans`: `EXPLAIN QUERY PLAN` of every hot read and of the tree's writes, of
//!   retention, the metadata filter and search.
//! - `purge`: deleted text is in no file of the database's folder.
//! - `round2`: a database of the `tree` release migrates and becomes searchable; FTS5
//!   syntax in user text; the online backup during writes; statistics.
//! - `tree`: the message tree against the reference store, operation by operation.
//! - `concurrency`: group commit, no `SQLITE_BUSY`, dropped callers, `close`.
//! - `crash`: `kill -9` of a child process in the middle of appends. The child is
//!   this very test binary, re-executed with `CRASH_CHILD_DB` set, which makes the
//!   test `crash::child_process` act as the appender (it does nothing otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use conversation_core::{Clock, Store};
use conversation_store_sqlite::{SqliteOptions, SqliteStore};

/// A folder of this process under the target's temporary folder. Stores made for the
/// conformance suite outlive the test function (the macro owns them), so their files
/// are kept here; folders of earlier runs older than an hour are removed on start.
fn temp_root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("store-sqlite-tests");
        std::fs::create_dir_all(&base).unwrap();
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        for entry in std::fs::read_dir(&base).unwrap().flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified < hour_ago);
            if old {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&base)
            .unwrap()
            .keep()
    })
}

/// A path for a new database file, unique to this call.
fn fresh_path() -> PathBuf {
    temp_root().join(format!("{}.db", uuid::Uuid::now_v7().simple()))
}

async fn file_store() -> SqliteStore {
    SqliteStore::open(fresh_path()).await.unwrap()
}

/// A store on a new file reading the time from `clock`.
async fn file_store_with(clock: Arc<dyn Clock>) -> SqliteStore {
    SqliteStore::open_with(fresh_path(), SqliteOptions::new().clock(clock))
        .await
        .unwrap()
}

mod direct {
    use super::*;
    conversation_core::store_conformance_tests!(|clock: Arc<dyn Clock>| async move {
        file_store_with(clock).await
    });
}

mod dyn_store {
    use super::*;
    conversation_core::store_conformance_tests!(|clock: Arc<dyn Clock>| async move {
        Arc::new(file_store_with(clock).await) as Arc<dyn Store>
    });
}

mod in_memory {
    use super::*;
    conversation_core::store_conformance_tests!(|clock: Arc<dyn Clock>| async move {
        SqliteStore::open_in_memory_with(SqliteOptions::new().clock(clock))
            .await
            .unwrap()
    });
}

#[path = "sqlite/concurrency.rs"]
mod concurrency;
#[path = "sqlite/crash.rs"]
mod crash;
#[path = "sqlite/files.rs"]
mod files;
#[path = "sqlite/migrations.rs"]
mod migrations;
#[path = "sqlite/plans.rs"]
mod plans;
#[path = "sqlite/purge.rs"]
mod purge;
#[path = "sqlite/round2.rs"]
mod round2;
#[path = "sqlite/tree.rs"]
mod tree;
