//! Files: reopening, migrations beside a host's own, bad files, in-memory stores, a
//! database file deleted or replaced under a running store, read-only files and
//! folders.

use std::fs::Permissions;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::time::Duration;

use conversation_core::{
    Append, Conversation, ConversationQuery, Error, MessageQuery, NewConversation, NewMessage,
    Scope, Store,
};
use conversation_store_sqlite::{MIGRATIONS_TABLE, SqliteOptions, SqliteStore};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::fresh_path;

fn scope() -> Scope {
    Scope::new(format!("files-{}", uuid::Uuid::now_v7())).unwrap()
}

/// `(version, checksum, installed_on)` of every row of our migrations table.
fn applied_migrations(path: &std::path::Path) -> Vec<(i64, Vec<u8>, String)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut statement = conn
        .prepare(&format!(
            "SELECT version, checksum, installed_on FROM {MIGRATIONS_TABLE} ORDER BY version"
        ))
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Reopening keeps every row and runs no migration a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_data_and_migrates_once() {
    let path = fresh_path()
        .with_extension("")
        .join("nested/folders/reopen.db");
    let scope = scope();
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(path.exists(), "open creates the file and its folders");
    let chat = store
        .create_conversation(&scope, NewConversation::new().with_title("Kept"))
        .await
        .unwrap();
    let appended = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![NewMessage::user("one"), NewMessage::assistant("two")]),
        )
        .await
        .unwrap();
    store.close().await;
    let first = applied_migrations(&path);
    assert!(!first.is_empty());

    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1100)).await; // installed_on has 1 s precision
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(
            store.get_conversation(&scope, chat.id).await.unwrap(),
            appended.conversation
        );
        let messages = store
            .list_messages(&scope, chat.id, &MessageQuery::after(0))
            .await
            .unwrap();
        assert_eq!(messages.items, appended.messages);
        store.close().await;
        assert_eq!(applied_migrations(&path), first, "no migration ran again");
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// A host running its own sqlx migrations (default table `_sqlx_migrations`) in the
/// same file, before and after the store, collides with nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_migrations_in_the_same_file_do_not_collide() {
    let path = fresh_path();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("1_host_things.sql"),
        "CREATE TABLE host_things (id INTEGER PRIMARY KEY, name TEXT NOT NULL);",
    )
    .unwrap();
    let host = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
    host.run(&pool).await.unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
    let scope = scope();
    store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    store.close().await;
    // The host's migrator runs again after ours, and ours again after the host's.
    host.run(&pool).await.unwrap();
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        store
            .list_conversations(&scope, &ConversationQuery::new())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    store.close().await;
    pool.close().await;

    let conn = rusqlite::Connection::open(&path).unwrap();
    let host_versions: Vec<i64> = conn
        .prepare("SELECT version FROM _sqlx_migrations")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        host_versions,
        vec![1],
        "only the host's migration in its table"
    );
    let ours = applied_migrations(&path);
    assert_eq!(ours.len(), 3, "only ours in ours: {ours:?}");
    let things: i64 = conn
        .query_row("SELECT count(*) FROM host_things", [], |row| row.get(0))
        .unwrap();
    assert_eq!(things, 0);
}

async fn assert_refused(path: &std::path::Path) -> String {
    let before = std::fs::read(path).unwrap();
    let result = SqliteStore::open(path).await;
    let message = match result {
        Err(Error::Backend { message, .. }) => message,
        Err(other) => panic!("expected a Backend error, got {other:?}"),
        Ok(_) => panic!("a bad file was opened"),
    };
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "the file was not touched"
    );
    message
}

/// A file that is not a SQLite database, or whose header is corrupt, is a clear
/// `Backend` error and stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_refused_and_left_alone() {
    let text = fresh_path();
    std::fs::write(&text, "name,amount\nalice,3\nbob,4\n".repeat(400)).unwrap();
    let message = assert_refused(&text).await;
    assert!(message.contains("not a SQLite database"), "{message}");
    assert!(
        !text.with_extension("db-wal").exists(),
        "no WAL was created beside it"
    );

    let corrupt = fresh_path();
    let store = SqliteStore::open(&corrupt).await.unwrap();
    store
        .create_conversation(&scope(), NewConversation::new())
        .await
        .unwrap();
    store.close().await;
    let mut bytes = std::fs::read(&corrupt).unwrap();
    bytes[..16].copy_from_slice(b"garbage garbage!");
    std::fs::write(&corrupt, &bytes).unwrap();
    let message = assert_refused(&corrupt).await;
    assert!(message.contains("not a SQLite database"), "{message}");

    let folder = tempfile::tempdir().unwrap();
    match SqliteStore::open(folder.path()).await {
        Err(err) => assert!(!err.to_string().is_empty()),
        Ok(_) => panic!("a folder was opened as a database"),
    }
}

/// The in-memory mode keeps its data for the life of the store, whatever the pool
/// does with its reader connections, and two in-memory stores share nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_stores_persist_for_their_life_and_are_separate() {
    let one = SqliteStore::open_in_memory_with(SqliteOptions::new().readers(2))
        .await
        .unwrap();
    let two = SqliteStore::open_in_memory().await.unwrap();
    let scope = scope();
    let chat = one
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    // Many concurrent reads make the pool open every reader it may.
    let one = std::sync::Arc::new(one);
    let mut reads = Vec::new();
    for _ in 0..16 {
        let one = std::sync::Arc::clone(&one);
        let scope = scope.clone();
        reads.push(tokio::spawn(async move {
            one.get_conversation(&scope, chat.id).await.unwrap()
        }));
    }
    for read in reads {
        assert_eq!(read.await.unwrap().id, chat.id);
    }
    assert!(matches!(
        two.get_conversation(&scope, chat.id).await,
        Err(Error::NotFound { .. })
    ));
}

/// A store on a new file, with one conversation.
async fn store_with_a_conversation() -> (std::path::PathBuf, SqliteStore, Scope, Conversation) {
    let path = fresh_path();
    let store = SqliteStore::open(&path).await.unwrap();
    let scope = scope();
    let chat = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    (path, store, scope, chat)
}

/// The database file deleted under a running store: writes fail with a clear
/// `Unavailable` (they would go to a file nobody opens again), `health` says why,
/// and so does every later write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_database_file_fails_writes_and_health() {
    let (path, store, scope, chat) = store_with_a_conversation().await;
    store.health().await.unwrap();
    std::fs::remove_file(&path).unwrap();

    let health = store.health().await.unwrap_err();
    assert!(health.is_transient(), "{health:?}");
    assert!(health.to_string().contains("was deleted"), "{health}");
    for _ in 0..2 {
        let err = store
            .append_messages(&scope, chat.id, Append::one(NewMessage::user("lost?")))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Unavailable { message, .. } if message.contains("was deleted")),
            "{err:?}"
        );
    }
    store.close().await;
}

/// The database file replaced by another one: the first write after it is refused
/// (not acknowledged into the replaced file), and so is every later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_database_file_fails_writes_and_health() {
    let (path, store, scope, chat) = store_with_a_conversation().await;
    let other = fresh_path();
    SqliteStore::open(&other).await.unwrap().close().await;
    std::fs::rename(&other, &path).unwrap();

    let err = store
        .append_messages(&scope, chat.id, Append::one(NewMessage::user("lost?")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable { message, .. } if message.contains("was replaced")),
        "{err:?}"
    );
    let health = store.health().await.unwrap_err();
    assert!(health.to_string().contains("was replaced"), "{health}");
    let err = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    store.close().await;
    // The file now at the path never saw the write, nor the old file's log (SQLite
    // would replay a log left beside it onto it).
    let conn = rusqlite::Connection::open(&path).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    drop(conn);
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert!(matches!(
        reopened.get_conversation(&scope, chat.id).await,
        Err(Error::NotFound { .. })
    ));
    reopened.close().await;
}

const READ_ONLY_CHILD: &str = "READ_ONLY_CHILD_DB";

/// The child of [`read_only_files_and_folders_are_refused_at_open`]: opens the store
/// at `READ_ONLY_CHILD_DB` and prints what came of it. Does nothing otherwise.
#[test]
fn read_only_child() {
    let Ok(path) = std::env::var(READ_ONLY_CHILD) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let outcome = runtime.block_on(open_outcome(Path::new(&path)));
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "\n{outcome}");
}

/// What opening a store at `path` came to: `OK`, or `ERR <code> <message>`.
async fn open_outcome(path: &Path) -> String {
    match SqliteStore::open(path).await {
        Ok(store) => {
            store.close().await;
            "OK".to_owned()
        }
        Err(err) => format!("ERR {} {err}", err.code()),
    }
}

/// Whether this process writes files it has no permission to (root): then the
/// permissions of a test only bite in a process of another user.
fn privileged() -> bool {
    let probe = fresh_path();
    std::fs::write(&probe, b"x").unwrap();
    std::fs::set_permissions(&probe, Permissions::from_mode(0o444)).unwrap();
    let writes = std::fs::OpenOptions::new().write(true).open(&probe).is_ok();
    std::fs::remove_file(&probe).unwrap();
    writes
}

/// Opens a store at `path` as a user without special rights: in this process, or,
/// when it is privileged, in this test binary re-run as `nobody`.
async fn open_unprivileged(path: &Path) -> String {
    if !privileged() {
        return open_outcome(path).await;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "files::read_only_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(READ_ONLY_CHILD, path)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find(|line| line.starts_with("OK") || line.starts_with("ERR "))
        .unwrap_or_else(|| panic!("the child said nothing: {stdout}"))
        .to_owned()
}

/// A folder for the read-only cases: outside the target folder, which a user
/// without rights may not enter, and open to everyone.
fn shared_folder() -> tempfile::TempDir {
    let folder = tempfile::Builder::new()
        .prefix("store-sqlite-ro-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    std::fs::set_permissions(folder.path(), Permissions::from_mode(0o777)).unwrap();
    folder
}

/// A read-only database file, a read-only folder (a new file in it, or a database
/// whose `-wal` and `-shm` cannot be created beside it) fail at open with a clear
/// message, not later at every write; the file is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_files_and_folders_are_refused_at_open() {
    // A database file that may be read but not written.
    let folder = shared_folder();
    let file = folder.path().join("read-only.db");
    let store = SqliteStore::open(&file).await.unwrap();
    store
        .create_conversation(&scope(), NewConversation::new())
        .await
        .unwrap();
    store.close().await;
    std::fs::set_permissions(&file, Permissions::from_mode(0o444)).unwrap();
    let before = std::fs::read(&file).unwrap();
    let outcome = open_unprivileged(&file).await;
    assert!(
        outcome.starts_with("ERR unavailable") && outcome.contains("is read-only"),
        "{outcome}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the file is untouched"
    );

    // A new database in a folder that may not be written.
    let folder = shared_folder();
    std::fs::set_permissions(folder.path(), Permissions::from_mode(0o555)).unwrap();
    let outcome = open_unprivileged(&folder.path().join("new.db")).await;
    assert!(
        outcome.starts_with("ERR unavailable") && outcome.contains("cannot open"),
        "{outcome}"
    );

    // A writable database in a folder where its -wal and -shm cannot be created.
    let folder = shared_folder();
    let file = folder.path().join("stuck.db");
    SqliteStore::open(&file).await.unwrap().close().await;
    std::fs::set_permissions(&file, Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(folder.path(), Permissions::from_mode(0o555)).unwrap();
    let before = std::fs::read(&file).unwrap();
    let outcome = open_unprivileged(&file).await;
    assert!(
        outcome.starts_with("ERR unavailable")
            && (outcome.contains("read-only") || outcome.contains("cannot open")),
        "{outcome}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the file is untouched"
    );
    std::fs::set_permissions(folder.path(), Permissions::from_mode(0o755)).unwrap();
}
