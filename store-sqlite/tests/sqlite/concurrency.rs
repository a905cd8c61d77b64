//! Concurrency: group commit, no `SQLITE_BUSY`, dropped callers, errors inside a
//! group, `close`.

use std::sync::Arc;
use std::time::Duration;

use conversation_core::{
    Append, ConversationId, ConversationQuery, Error, MessageQuery, NewConversation, NewMessage,
    RecentQuery, Scope, Store,
};
use conversation_store_sqlite::SqliteStore;

use super::{file_store, fresh_path};

fn scope() -> Scope {
    Scope::new(format!("concurrency-{}", uuid::Uuid::now_v7())).unwrap()
}

/// Seqs 1..=n with no gap, read back through the store.
/// `n` tasks appending one message each to `id`, all started at once.
fn spawn_appends(
    store: &Arc<SqliteStore>,
    scope: &Scope,
    id: ConversationId,
    n: usize,
) -> Vec<tokio::task::JoinHandle<conversation_core::Result<conversation_core::Appended>>> {
    (0..n)
        .map(|i| {
            let store = Arc::clone(store);
            let scope = scope.clone();
            tokio::spawn(async move {
                store
                    .append_messages(&scope, id, Append::one(NewMessage::user(format!("{i}"))))
                    .await
            })
        })
        .collect()
}

async fn assert_gap_free(store: &SqliteStore, scope: &Scope, id: ConversationId) -> u64 {
    let conversation = store.get_conversation(scope, id).await.unwrap();
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .list_messages(scope, id, &MessageQuery::after(after).limit(200))
            .await
            .unwrap();
        seqs.extend(page.items.iter().map(|m| m.seq));
        match page.items.last() {
            Some(last) if page.has_more => after = last.seq,
            _ => break,
        }
    }
    assert_eq!(
        seqs,
        (1..=conversation.message_count).collect::<Vec<_>>(),
        "seqs of {id}"
    );
    conversation.message_count
}

/// Concurrent appends, to one conversation and to many, share commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    const TASKS: usize = 32;
    const EACH: usize = 4;
    let store = Arc::new(file_store().await);
    let scope = scope();
    let shared = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    let before = store.write_stats();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            let own = store
                .create_conversation(&scope, NewConversation::new())
                .await
                .unwrap();
            for i in 0..EACH {
                let target = if i % 2 == 0 { own.id } else { shared.id };
                store
                    .append_messages(
                        &scope,
                        target,
                        Append::one(NewMessage::user(format!("t{task}-{i}"))),
                    )
                    .await
                    .unwrap();
            }
            own.id
        }));
    }
    let mut own = Vec::new();
    for task in tasks {
        own.push(task.await.unwrap());
    }
    let stats = store.write_stats();
    let writes = stats.writes - before.writes;
    let transactions = stats.transactions - before.transactions;
    assert_eq!(writes, (TASKS * (EACH + 1)) as u64);
    assert!(
        transactions * 2 <= writes,
        "{writes} writes took {transactions} commits: no grouping"
    );
    assert_eq!(
        assert_gap_free(&store, &scope, shared.id).await,
        (TASKS * EACH / 2) as u64
    );
    for id in own {
        assert_eq!(assert_gap_free(&store, &scope, id).await, (EACH / 2) as u64);
    }
}

/// Errors inside a group (`NotFound`, `Conflict`) fail only their own request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_in_a_group_fails_only_its_request() {
    let store = Arc::new(file_store().await);
    let scope = scope();
    let chat = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..48 {
        let store = Arc::clone(&store);
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            let (target, expected_version) = match i % 3 {
                0 => (chat.id, None),
                1 => (ConversationId::new(), None),
                _ => (chat.id, Some(0)),
            };
            let mut append = Append::new(vec![
                NewMessage::user(format!("m{i}")),
                NewMessage::assistant("a"),
            ]);
            if let Some(version) = expected_version {
                append = append.expect_version(version);
            }
            let result = store.append_messages(&scope, target, append).await;
            (i % 3, result)
        }));
    }
    for task in tasks {
        match task.await.unwrap() {
            (0, result) => assert!(result.is_ok(), "{result:?}"),
            (1, result) => assert!(matches!(result, Err(Error::NotFound { .. })), "{result:?}"),
            (_, result) => assert!(matches!(result, Err(Error::Conflict { .. })), "{result:?}"),
        }
    }
    assert_eq!(assert_gap_free(&store, &scope, chat.id).await, 32);
}

/// Two stores on one file (two writer connections), with readers: nobody sees
/// `SQLITE_BUSY` or any other error, and seqs stay gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_busy_error_reaches_a_caller() {
    let path = fresh_path();
    let first = Arc::new(SqliteStore::open(&path).await.unwrap());
    let second = Arc::new(SqliteStore::open(&path).await.unwrap());
    let scope = scope();
    let chat = first
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..12 {
        let store = Arc::clone(if task % 2 == 0 { &first } else { &second });
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                if task % 3 == 0 {
                    store.get_conversation(&scope, chat.id).await?;
                    store
                        .recent_messages(&scope, chat.id, &RecentQuery::new(20))
                        .await?;
                    store
                        .list_conversations(&scope, &ConversationQuery::new())
                        .await?;
                } else {
                    store
                        .append_messages(
                            &scope,
                            chat.id,
                            Append::one(NewMessage::user(format!("{task}-{i}"))),
                        )
                        .await?;
                    store
                        .create_conversation(&scope, NewConversation::new())
                        .await?;
                }
            }
            Ok::<(), Error>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(assert_gap_free(&first, &scope, chat.id).await, 8 * 15);
    assert_eq!(assert_gap_free(&second, &scope, chat.id).await, 8 * 15);
}

/// Callers that stop waiting (aborted tasks, timeouts) do not wedge the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_callers_do_not_wedge_the_writer() {
    let store = Arc::new(file_store().await);
    let scope = scope();
    let chat = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    let tasks = spawn_appends(&store, &scope, chat.id, 40);
    for task in &tasks {
        task.abort();
    }
    for i in 0..20 {
        let _ = tokio::time::timeout(
            Duration::from_micros(50),
            store.append_messages(
                &scope,
                chat.id,
                Append::one(NewMessage::user(format!("t{i}"))),
            ),
        )
        .await;
    }
    let appended = tokio::time::timeout(
        Duration::from_secs(10),
        store.append_messages(&scope, chat.id, Append::one(NewMessage::user("after"))),
    )
    .await
    .expect("the writer answers again")
    .unwrap();
    let count = assert_gap_free(&store, &scope, chat.id).await;
    assert_eq!(
        appended.messages[0].seq, count,
        "the last append is the newest"
    );
}

/// `close` carries out what was queued before it; afterwards every call is
/// `Unavailable`, and the file holds every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_finishes_queued_writes_then_refuses() {
    let path = fresh_path();
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let scope = scope();
    let chat = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    let tasks = spawn_appends(&store, &scope, chat.id, 20);
    tokio::task::yield_now().await;
    store.close().await;
    store.close().await; // twice is fine
    let mut acknowledged = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(appended) => acknowledged.push(appended.messages[0].clone()),
            Err(err) => assert!(err.is_transient(), "{err:?}"),
        }
    }
    for result in [
        store.get_conversation(&scope, chat.id).await.map(|_| ()),
        store
            .append_messages(&scope, chat.id, Append::one(NewMessage::user("late")))
            .await
            .map(|_| ()),
        store
            .create_conversation(&scope, NewConversation::new())
            .await
            .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(Error::Unavailable { .. })),
            "{result:?}"
        );
    }
    let reopened = SqliteStore::open(&path).await.unwrap();
    let stored = reopened
        .recent_messages(&scope, chat.id, &RecentQuery::new(100))
        .await
        .unwrap();
    for message in &acknowledged {
        assert!(stored.contains(message), "{message:?} was acknowledged");
    }
    assert_eq!(
        assert_gap_free(&reopened, &scope, chat.id).await as usize,
        stored.len()
    );
}

/// A new conversation's first question and the heuristic title it gives are one
/// write in one transaction: one commit, one fsync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_question_and_its_title_are_one_transaction() {
    let store = Arc::new(file_store().await);
    let scope = scope();
    let service = conversation_core::Conversations::new(Arc::clone(&store) as Arc<dyn Store>);
    let chat = service
        .create(&scope, NewConversation::new())
        .await
        .unwrap();
    let before = store.write_stats();
    let appended = service
        .append_user(&scope, chat.id, "How do I join two tables?")
        .await
        .unwrap();
    let after = store.write_stats();
    assert_eq!(
        (
            after.transactions - before.transactions,
            after.writes - before.writes
        ),
        (1, 1)
    );
    assert_eq!(
        appended.conversation.title.as_deref(),
        Some("How do I join two tables?")
    );
    assert_eq!(
        appended.conversation.title_source,
        conversation_core::TitleSource::Heuristic
    );
    assert_eq!(appended.conversation.version, chat.version + 1);
    let stored = store.get_conversation(&scope, chat.id).await.unwrap();
    assert_eq!(stored, appended.conversation);
}

/// A long read (past the 256 KiB a read takes in place) hands its worker's tasks
/// over on a multi-threaded runtime and carries on in place on a current-thread one,
/// where handing over is impossible: both return the whole page.
#[test]
fn long_reads_work_on_either_runtime() {
    for multi_thread in [false, true] {
        let runtime = if multi_thread {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        };
        runtime.block_on(async {
            let store = file_store().await;
            let scope = scope();
            let chat = store
                .create_conversation(&scope, NewConversation::new())
                .await
                .unwrap();
            let big: Vec<NewMessage> = (0..12)
                .map(|i| NewMessage::user(format!("{i} {}", "x".repeat(100_000))))
                .collect();
            store
                .append_messages(&scope, chat.id, Append::new(big))
                .await
                .unwrap();
            let page = store
                .list_messages(&scope, chat.id, &MessageQuery::after(0))
                .await
                .unwrap();
            assert_eq!(page.items.len(), 12, "multi_thread {multi_thread}");
            let window = store
                .recent_messages(&scope, chat.id, &RecentQuery::new(12))
                .await
                .unwrap();
            assert_eq!(window.len(), 12);
            store.close().await;
        });
    }
}
