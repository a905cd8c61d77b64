//! Files: reopening, migrations beside a host's own, bad files, a host's pool.

use std::time::Duration;

use conversation_core::{
    ConversationQuery, Error, MessageQuery, NewConversation, NewMessage, Scope, Store,
};
use conversation_store_sqlite::{MIGRATIONS_TABLE, SqliteOptions, SqliteStore, Synchronous};
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
            vec![NewMessage::user("one"), NewMessage::assistant("two")],
            None,
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
    assert_eq!(ours.len(), 1, "only ours in ours: {ours:?}");
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

/// `from_pool` runs on the host's pool and leaves it open on close; NORMAL is honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_pool_uses_the_hosts_pool() {
    let path = fresh_path();
    let pool = SqlitePoolOptions::new()
        .max_connections(3)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
    let store = SqliteStore::from_pool_with(
        pool.clone(),
        SqliteOptions::new().synchronous(Synchronous::Normal),
    )
    .await
    .unwrap();
    let scope = scope();
    let chat = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    store
        .append_messages(&scope, chat.id, vec![NewMessage::user("hi")], None)
        .await
        .unwrap();
    assert_eq!(
        store
            .recent_messages(&scope, chat.id, 5)
            .await
            .unwrap()
            .len(),
        1
    );
    store.close().await;
    assert!(
        store
            .get_conversation(&scope, chat.id)
            .await
            .unwrap_err()
            .is_transient()
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "the host's pool is still open and sees the data");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    pool.close().await;
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
