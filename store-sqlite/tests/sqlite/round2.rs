//! What round two adds that is SQLite's own: a database of the `tree` release
//! (schema 0002) migrates and its titles and messages become searchable; user text is
//! never FTS5 syntax; the online backup is consistent while writers write; the
//! statistics add up.

use std::sync::Arc;
use std::time::Duration;

use conversation_core::{
    Append, ArchivedFilter, ConversationId, ConversationQuery, Error, Expiry, MessageQuery,
    NewConversation, NewMessage, RetentionQuery, Scope, SearchQuery, Store,
};
use conversation_store_sqlite::SqliteStore;
use rusqlite::params;

use super::{file_store, fresh_path};

fn scope(name: &str) -> Scope {
    Scope::new(format!("{name}-{}", uuid::Uuid::now_v7())).unwrap()
}

/// Builds a database as the `tree` release left it: its migrator's records of 0001
/// and 0002 (sqlx's format, the same checksums), then rows as its writer wrote them.
/// Returns `(conversation, title, contents)` of what it wrote, in scope `old`.
async fn tree_release_database(
    path: &std::path::Path,
) -> Vec<(ConversationId, String, Vec<String>)> {
    super::migrations::migrated_by_sqlx(path, &["0001_conversations.sql", "0002_message_tree.sql"])
        .await;
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut made = Vec::new();
    for (n, (title, archived, metadata, contents)) in [
        (
            "Quarterly revenue",
            false,
            r#"{"tag":"billing","n":1}"#,
            vec!["Which region grew?", "EMEA grew the most"],
        ),
        (
            "Café menu",
            true,
            r#"{"tag":"food"}"#,
            vec!["naïve question about crème"],
        ),
        ("Empty", false, "{}", vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let id = ConversationId::new();
        let count = contents.len() as i64;
        let mut head = None;
        conn.execute(
            "INSERT INTO conversations (id, scope, title, title_source, created_at, updated_at, \
             message_count, pinned, archived, metadata, version, last_seq, head_seq, head_id, \
             path_len) VALUES (?1, 'old', ?2, 'user', ?3, ?4, ?5, 0, ?6, ?7, 1, ?5, ?5, NULL, ?5)",
            params![
                &id.as_bytes()[..],
                title,
                1_700_000_000_000_i64 + n as i64,
                1_700_000_000_000_i64 + 10 * n as i64,
                count,
                archived,
                metadata
            ],
        )
        .unwrap();
        for (i, content) in contents.iter().enumerate() {
            let seq = i as i64 + 1;
            let message = uuid::Uuid::now_v7();
            conn.execute(
                "INSERT INTO messages (conversation_id, seq, id, role, content, tool_calls, \
                 tool_call_id, metadata, created_at, parent_seq, parent_id) \
                 VALUES (?1, ?2, ?3, 'user', ?4, NULL, NULL, '{}', ?5, ?6, ?7)",
                params![
                    &id.as_bytes()[..],
                    seq,
                    &message.as_bytes()[..],
                    content,
                    1_700_000_000_000_i64 + seq,
                    seq - 1,
                    head.map(|h: uuid::Uuid| h.as_bytes().to_vec())
                ],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO message_path (conversation_id, seq, siblings) VALUES (?1, ?2, 1)",
                params![&id.as_bytes()[..], seq],
            )
            .unwrap();
            head = Some(message);
        }
        conn.execute(
            "UPDATE conversations SET head_id = ?2 WHERE id = ?1",
            params![&id.as_bytes()[..], head.map(|h| h.as_bytes().to_vec())],
        )
        .unwrap();
        made.push((
            id,
            title.to_owned(),
            contents.into_iter().map(str::to_owned).collect(),
        ));
    }
    made
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_tree_release_migrates_and_becomes_searchable() {
    let path = fresh_path();
    let made = tree_release_database(&path).await;
    let store = SqliteStore::open(&path).await.unwrap();
    let old = Scope::new("old").unwrap();
    let [revenue, cafe, empty] = [made[0].0, made[1].0, made[2].0];
    let found = |text: &'static str, archived: ArchivedFilter| {
        let store = &store;
        let old = old.clone();
        async move {
            let page = store
                .search(&old, &SearchQuery::new(text).archived(archived))
                .await
                .unwrap();
            page.items
                .iter()
                .map(|hit| hit.conversation.id)
                .collect::<Vec<_>>()
        }
    };
    // Titles and messages written before the index existed are found.
    assert_eq!(found("revenue", ArchivedFilter::Exclude).await, [revenue]);
    assert_eq!(found("emea", ArchivedFilter::Exclude).await, [revenue]);
    assert_eq!(found("creme naive", ArchivedFilter::Only).await, [cafe]);
    assert_eq!(
        found("cafe", ArchivedFilter::Exclude).await,
        Vec::<ConversationId>::new()
    );
    assert_eq!(found("empty", ArchivedFilter::Exclude).await, [empty]);
    // The metadata filter reads the values the migration indexed.
    let billing = store
        .list_conversations(
            &old,
            &ConversationQuery::new().metadata_equals("tag", "billing"),
        )
        .await
        .unwrap();
    assert_eq!(billing.items.len(), 1);
    assert_eq!(billing.items[0].id, revenue);
    let by_number = store
        .list_conversations(&old, &ConversationQuery::new().metadata_equals("n", 1.0))
        .await
        .unwrap();
    assert_eq!(by_number.items.len(), 1, "1 equals 1.0");
    // An archived conversation counts as archived at its last activity.
    let archived = store.get_conversation(&old, cafe).await.unwrap();
    assert_eq!(archived.archived_at, Some(archived.updated_at));
    let expired = store
        .list_expired(&RetentionQuery::new(
            Expiry::ArchivedBefore(archived.updated_at + chrono::TimeDelta::milliseconds(1)),
            10,
        ))
        .await
        .unwrap();
    assert_eq!(expired.iter().map(|e| e.id).collect::<Vec<_>>(), [cafe]);
    // New writes are indexed alongside, under new keys.
    let new = store
        .create_conversation(&old, NewConversation::new().with_title("Revenue again"))
        .await
        .unwrap();
    let both = found("revenue", ArchivedFilter::Exclude).await;
    assert_eq!(both.len(), 2);
    assert!(both.contains(&new.id) && both.contains(&revenue));
    store
        .delete_conversation(&old, revenue, None)
        .await
        .unwrap();
    assert_eq!(
        found("emea", ArchivedFilter::Exclude).await,
        Vec::<ConversationId>::new()
    );
    store.close().await;
    // Opening again rebuilds nothing and finds the same.
    let store = SqliteStore::open(&path).await.unwrap();
    let page = store
        .search(&old, &SearchQuery::new("revenue"))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].conversation.id, new.id);
    store.close().await;
}

/// User text is only words: FTS5's syntax typed by a user is searched for as the
/// words it holds, and a text of 10 kB is refused as too long, never a store error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fts5_syntax_in_user_text_is_only_words() {
    let store = file_store().await;
    let scope = scope("syntax");
    let chat = store
        .create_conversation(&scope, NewConversation::new().with_title("near and or not"))
        .await
        .unwrap();
    store
        .append_messages(
            &scope,
            chat.id,
            Append::one(NewMessage::user("orders: col x \"quoted\" (paren) star*")),
        )
        .await
        .unwrap();
    for (text, hits) in [
        ("\"orders", 1),
        ("orders\"", 1),
        ("ord*", 0),
        ("*", 0),
        ("NEAR(orders col)", 0),
        ("orders NEAR col", 0),
        ("near AND or", 1),
        ("NOT near", 1),
        ("col:x", 1),
        ("words:orders", 0),
        ("{words}: orders", 0),
        ("(orders OR missing)", 0),
        ("(paren)", 1),
        ("\"\"\"", 0),
        ("^orders", 1),
        ("orders -quoted", 1),
        ("x ", 1),
    ] {
        let result = store.search(&scope, &SearchQuery::new(text)).await;
        match result {
            Ok(page) => assert_eq!(page.items.len(), hits, "{text:?}"),
            Err(Error::InvalidInput { field, .. }) => {
                assert_eq!((field.as_str(), hits), ("q", 0), "{text:?}")
            }
            Err(other) => panic!("{text:?}: {other:?}"),
        }
    }
    let long = "orders ".repeat(1_500);
    assert!(matches!(
        store.search(&scope, &SearchQuery::new(long)).await,
        Err(Error::InvalidInput { field, .. }) if field == "q"
    ));
    store.close().await;
}

/// A backup taken while writers write opens as a store holding every message
/// acknowledged before the backup started; the store kept serving meanwhile; an
/// existing file is never overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_writes_holds_everything_acknowledged_before_it() {
    let store = Arc::new(file_store().await);
    let scope = scope("backup");
    let chat = store
        .create_conversation(&scope, NewConversation::new().with_title("Backed up"))
        .await
        .unwrap();
    for i in 0..200 {
        store
            .append_messages(
                &scope,
                chat.id,
                Append::one(NewMessage::user(format!("before {i}"))),
            )
            .await
            .unwrap();
    }
    let acknowledged = store.get_conversation(&scope, chat.id).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, scope, stop) = (Arc::clone(&store), scope.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut written = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store
                    .append_messages(&scope, chat.id, Append::one(NewMessage::user("during")))
                    .await
                    .unwrap();
                written += 1;
            }
            written
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let copy = fresh_path();
    store.backup_to(&copy).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 0, "writes went on during the backup");
    // Never over an existing file.
    assert!(matches!(
        store.backup_to(&copy).await,
        Err(Error::InvalidInput { field, .. }) if field == "path"
    ));

    let restored = SqliteStore::open(&copy).await.unwrap();
    let conversation = restored.get_conversation(&scope, chat.id).await.unwrap();
    assert!(conversation.message_count >= acknowledged.message_count);
    let page = restored
        .list_messages(&scope, chat.id, &MessageQuery::after(0).limit(200))
        .await
        .unwrap();
    let texts: Vec<String> = page.items.iter().map(|m| m.content.clone()).collect();
    let expected: Vec<String> = (0..200).map(|i| format!("before {i}")).collect();
    assert_eq!(texts, expected);
    let hits = restored
        .search(&scope, &SearchQuery::new("backed"))
        .await
        .unwrap();
    assert_eq!(hits.items.len(), 1, "the search index is in the copy");
    restored.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_rows_and_weigh_the_files() {
    let store = file_store().await;
    let empty = store.stats().await.unwrap();
    assert_eq!((empty.conversations, empty.messages, empty.runs), (0, 0, 0));
    let scope = scope("stats");
    for _ in 0..3 {
        let chat = store
            .create_conversation(&scope, NewConversation::new().with_title("Counted words"))
            .await
            .unwrap();
        store
            .append_messages(
                &scope,
                chat.id,
                Append::new(vec![
                    NewMessage::user("one two"),
                    NewMessage::assistant("three"),
                ]),
            )
            .await
            .unwrap();
        store
            .start_run(
                &scope,
                chat.id,
                conversation_core::NewRun::new(Duration::from_secs(30)),
            )
            .await
            .unwrap();
    }
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.conversations, stats.messages, stats.runs), (3, 6, 3));
    assert!(stats.database_bytes > 0 && stats.search_index_bytes > 0);
    assert!(stats.search_index_bytes < stats.database_bytes);
    assert!(
        stats.wal_bytes > 0,
        "writes since the last checkpoint are in the log"
    );
    store.close().await;
}
