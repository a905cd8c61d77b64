//! Deleting leaves nothing behind: a marker written in a title, metadata, a question
//! and a (long) reply is in no file of the database's folder once the deletion is
//! acknowledged, nor after the store closes; nor is its word (lowercased) in the pages
//! of the search index.

use conversation_core::{Append, NewConversation, NewMessage, Scope, Store, ToolCall};
use conversation_store_sqlite::SqliteStore;

use super::fresh_path;

/// The files of `folder` that hold `marker`, with how many times.
fn files_holding(folder: &std::path::Path, marker: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap();
        let hits = bytes
            .windows(marker.len())
            .filter(|window| *window == marker.as_bytes())
            .count();
        if hits > 0 {
            found.push((entry.file_name().to_string_lossy().into_owned(), hits));
        }
    }
    found
}

fn metadata(marker: &str) -> conversation_core::Metadata {
    let mut metadata = conversation_core::Metadata::new();
    metadata.insert("note".to_owned(), serde_json::json!(marker));
    metadata
}

/// The messages carrying `marker`: a question, and a reply long enough to spill
/// into overflow pages, with a tool call.
fn marked(marker: &str) -> Vec<NewMessage> {
    vec![
        NewMessage::user(format!("what is {marker}?")).with_metadata(metadata(marker)),
        NewMessage::assistant(format!("{marker} is this. ").repeat(2_000)).with_tool_calls(vec![
            ToolCall {
                id: "call_1".to_owned(),
                name: "lookup".to_owned(),
                arguments: serde_json::json!({ "q": marker }),
            },
        ]),
    ]
}

/// Runs `delete` (a deletion of everything holding `marker`) and checks that no file
/// of `folder` holds it once the deletion is acknowledged, nor after `store` closes.
async fn assert_purged(
    folder: &std::path::Path,
    store: &SqliteStore,
    marker: &str,
    delete: impl std::future::Future<Output = conversation_core::Result<()>>,
) {
    // The search index holds words lowercased: the marker's word is looked for too.
    let word = marker.to_lowercase();
    let flush = async {
        // Committed pages of the index reach the database file at a checkpoint.
        let conn = rusqlite::Connection::open(folder.join("chats.db")).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
            .unwrap();
    };
    flush.await;
    assert!(
        !files_holding(folder, marker).is_empty(),
        "the marker was written"
    );
    assert!(
        !files_holding(folder, &word).is_empty(),
        "the marker's word is in the search index"
    );
    delete.await.unwrap();
    assert_eq!(files_holding(folder, marker), vec![], "once acknowledged");
    assert_eq!(
        files_holding(folder, &word),
        vec![],
        "no word of it in the search index once acknowledged"
    );
    store.close().await;
    assert_eq!(files_holding(folder, marker), vec![], "after close");
    assert_eq!(files_holding(folder, &word), vec![], "after close");
}

/// A store in a folder of its own, with other data around the marked rows.
async fn store_in_own_folder() -> (std::path::PathBuf, SqliteStore, Scope) {
    let folder = fresh_path().with_extension("");
    let store = SqliteStore::open(folder.join("chats.db")).await.unwrap();
    let scope = Scope::new("purge").unwrap();
    for i in 0..3 {
        let other = store
            .create_conversation(
                &scope,
                NewConversation::new().with_title(format!("other {i}")),
            )
            .await
            .unwrap();
        store
            .append_messages(
                &scope,
                other.id,
                Append::new(vec![
                    NewMessage::user("kept"),
                    NewMessage::assistant("kept too"),
                ]),
            )
            .await
            .unwrap();
    }
    (folder, store, scope)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_conversation_leaves_no_bytes_in_any_file() {
    let (folder, store, scope) = store_in_own_folder().await;
    let marker = format!("MARKER{}", uuid::Uuid::now_v7().simple());
    let chat = store
        .create_conversation(
            &scope,
            NewConversation::new()
                .with_title(format!("about {marker}"))
                .with_metadata(metadata(&marker)),
        )
        .await
        .unwrap();
    store
        .append_messages(&scope, chat.id, Append::new(marked(&marker)))
        .await
        .unwrap();
    let delete = store.delete_conversation(&scope, chat.id, None);
    assert_purged(&folder, &store, &marker, delete).await;
    let reopened = SqliteStore::open(folder.join("chats.db")).await.unwrap();
    let left = reopened
        .list_conversations(&scope, &conversation_core::ConversationQuery::new())
        .await
        .unwrap();
    assert_eq!(left.items.len(), 3, "the other conversations are kept");
    reopened.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_subtree_leaves_no_bytes_in_any_file() {
    let (folder, store, scope) = store_in_own_folder().await;
    let marker = format!("MARKER{}", uuid::Uuid::now_v7().simple());
    let chat = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![
                NewMessage::user("first"),
                NewMessage::assistant("answer"),
            ]),
        )
        .await
        .unwrap();
    let branch = store
        .append_messages(&scope, chat.id, Append::new(marked(&marker)))
        .await
        .unwrap();
    let delete = async {
        store
            .delete_message(&scope, chat.id, branch.messages[0].id, None)
            .await
            .map(drop)
    };
    assert_purged(&folder, &store, &marker, delete).await;
    let reopened = SqliteStore::open(folder.join("chats.db")).await.unwrap();
    let kept = reopened
        .recent_messages(&scope, chat.id, &conversation_core::RecentQuery::new(10))
        .await
        .unwrap();
    let texts: Vec<&str> = kept.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["first", "answer"]);
    reopened.close().await;
}
