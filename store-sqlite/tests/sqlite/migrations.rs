//! Migrations: a database written by the sqlx-based release (schema 0001, recorded
//! by sqlx's own migrator) opens, becomes a tree of linear paths, and takes appends;
//! a database of a newer release, or with a migration of another checksum, is
//! refused and left untouched.

use conversation_core::{
    Append, ConversationId, Error, MessageId, MessageQuery, MessageView, NewMessage, Parent,
    RecentQuery, Scope, Store,
};
use conversation_store_sqlite::{MIGRATIONS_TABLE, SqliteStore};
use rusqlite::params;
use sqlx::ConnectOptions as _;
use sqlx::sqlite::SqliteConnectOptions;

use super::fresh_path;

/// Migrates a new database at `path` with the migration files `names` of this crate,
/// as an earlier release did: sqlx's migrator (in `BEGIN IMMEDIATE`) records them in
/// our table, with the same checksums.
pub(super) async fn migrated_by_sqlx(path: &std::path::Path, names: &[&str]) {
    let folder = tempfile::tempdir().unwrap();
    for name in names {
        let sql =
            std::fs::read_to_string(format!("{}/migrations/{name}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        std::fs::write(folder.path().join(name), sql).unwrap();
    }
    let mut migrator = sqlx::migrate::Migrator::new(folder.path()).await.unwrap();
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap();
    migrator.run(&mut conn).await.unwrap();
    sqlx::Connection::close(conn).await.unwrap();
}

/// Builds a database as the sqlx-based release left it: schema 0001, then rows as its
/// writer wrote them. Returns the conversations and their message ids.
async fn released_database(path: &std::path::Path) -> Vec<(ConversationId, Vec<MessageId>)> {
    migrated_by_sqlx(path, &["0001_conversations.sql"]).await;
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut made = Vec::new();
    for (n, count) in [(0, 3_i64), (1, 0), (2, 7)] {
        let id = ConversationId::new();
        conn.execute(
            "INSERT INTO conversations (id, scope, title, title_source, created_at, updated_at, \
             message_count, pinned, archived, metadata, version) \
             VALUES (?1, 'old', ?2, 'user', ?3, ?4, ?5, 0, 0, '{}', ?6)",
            params![
                &id.as_bytes()[..],
                format!("chat {n}"),
                1_700_000_000_000_i64,
                1_700_000_000_000_i64 + count,
                count,
                1 + count.min(1)
            ],
        )
        .unwrap();
        let mut messages = Vec::new();
        for seq in 1..=count {
            let message = MessageId::new();
            conn.execute(
                "INSERT INTO messages (conversation_id, seq, id, role, content, tool_calls, \
                 tool_call_id, metadata, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, '{}', ?6)",
                params![
                    &id.as_bytes()[..],
                    seq,
                    &message.as_bytes()[..],
                    if seq % 2 == 1 { "user" } else { "assistant" },
                    format!("message {seq}"),
                    1_700_000_000_000_i64 + seq
                ],
            )
            .unwrap();
            messages.push(message);
        }
        made.push((id, messages));
    }
    made
}

/// `(version, description, checksum, success)` of every row of our migrations table.
fn recorded(path: &std::path::Path) -> Vec<(i64, String, Vec<u8>, bool)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut statement = conn
        .prepare(&format!(
            "SELECT version, description, checksum, success FROM {MIGRATIONS_TABLE} ORDER BY version"
        ))
        .unwrap();
    statement
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_sqlx_release_becomes_a_tree_of_linear_paths() {
    let path = fresh_path();
    let made = released_database(&path).await;
    let before = recorded(&path);
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].1, "conversations");

    let store = SqliteStore::open(&path).await.unwrap();
    let after = recorded(&path);
    assert_eq!(after[0], before[0], "the released record is kept as it was");
    assert_eq!(
        (after[1].0, after[1].1.as_str(), after[1].3),
        (2, "message tree", true)
    );

    let scope = Scope::new("old").unwrap();
    for (id, messages) in &made {
        let conversation = store.get_conversation(&scope, *id).await.unwrap();
        assert_eq!(conversation.message_count, messages.len() as u64);
        assert_eq!(conversation.last_seq, messages.len() as u64);
        assert_eq!(conversation.head_id, messages.last().copied());
        for view in [MessageView::Path, MessageView::All] {
            let page = store
                .list_messages(&scope, *id, &MessageQuery::after(0).view(view))
                .await
                .unwrap();
            let ids: Vec<MessageId> = page.items.iter().map(|m| m.id).collect();
            assert_eq!(&ids, messages, "{view:?}");
            for (k, message) in page.items.iter().enumerate() {
                assert_eq!(message.parent_id, k.checked_sub(1).map(|p| messages[p]));
                assert_eq!(message.siblings.count, 1);
            }
        }
        let window = store
            .recent_messages(&scope, *id, &RecentQuery::new(2))
            .await
            .unwrap();
        let tail = &messages[messages.len().saturating_sub(2)..];
        assert_eq!(window.iter().map(|m| m.id).collect::<Vec<_>>(), tail);
    }

    // Appends go on after the head, and a branch opens at an old message.
    let (id, messages) = &made[2];
    let appended = store
        .append_messages(&scope, *id, Append::one(NewMessage::user("after")))
        .await
        .unwrap();
    assert_eq!(appended.messages[0].seq, 8);
    assert_eq!(appended.messages[0].parent_id, messages.last().copied());
    let branch = store
        .append_messages(
            &scope,
            *id,
            Append::one(NewMessage::user("edited")).parent(Parent::Message(messages[1])),
        )
        .await
        .unwrap();
    assert_eq!(branch.messages[0].seq, 9);
    assert_eq!(
        (
            branch.messages[0].siblings.count,
            branch.messages[0].siblings.index
        ),
        (2, 1)
    );
    let active = store
        .list_messages(&scope, *id, &MessageQuery::after(0))
        .await
        .unwrap();
    let seqs: Vec<u64> = active.items.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 9]);
    let (empty, _) = &made[1];
    let first = store
        .append_messages(&scope, *empty, Append::one(NewMessage::user("first")))
        .await
        .unwrap();
    assert_eq!(
        (first.messages[0].seq, first.messages[0].parent_id),
        (1, None)
    );
    store.close().await;

    // Opening again migrates nothing.
    SqliteStore::open(&path).await.unwrap().close().await;
    assert_eq!(recorded(&path), after);
}

async fn assert_refused(path: &std::path::Path, expected: &str) {
    let before = std::fs::read(path).unwrap();
    match SqliteStore::open(path).await {
        Err(Error::Backend { message, .. }) => {
            assert!(message.contains(expected), "{message}");
        }
        Err(other) => panic!("expected a Backend error, got {other:?}"),
        Ok(_) => panic!("the database was opened"),
    }
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "the file is untouched"
    );
}

/// Closes a database through SQLite so that its log is folded into the file.
fn settle(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
}

/// A database made by the store, then changed by `tamper` (SQL run on its migrations
/// table) and folded into one file.
async fn tampered(tamper: &str) -> std::path::PathBuf {
    let path = fresh_path();
    SqliteStore::open(&path).await.unwrap().close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&tamper.replace("{table}", MIGRATIONS_TABLE))
        .unwrap();
    drop(conn);
    settle(&path);
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_or_different_schema_is_refused_and_left_untouched() {
    for (tamper, expected) in [
        (
            "INSERT INTO {table} (version, description, success, checksum, execution_time) \
             VALUES (4, 'from the future', TRUE, x'00', 1)",
            "newer release",
        ),
        (
            "UPDATE {table} SET checksum = x'0102' WHERE version = 1",
            "another checksum",
        ),
        (
            "UPDATE {table} SET success = FALSE WHERE version = 2",
            "never finished",
        ),
    ] {
        assert_refused(&tampered(tamper).await, expected).await;
    }
}
