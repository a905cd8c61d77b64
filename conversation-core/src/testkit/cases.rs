//! The conformance cases, one per promise of the store contract.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use serde_json::json;

use crate::testkit::ManualClock;

use crate::{
    Append, ArchivedFilter, Conversation, ConversationId, ConversationPatch, ConversationQuery,
    Error, MAX_RECENT_MESSAGES, Message, MessageId, MessageQuery, MessageView, Metadata,
    NewConversation, NewMessage, Parent, RecentQuery, Result, Role, Scope, Store, TitleSource,
    ToolCall,
};

mod concurrency;
mod lifecycle;
mod metadata;
mod runs;
mod search;
mod tree;

pub use concurrency::*;
pub use lifecycle::*;
pub use metadata::*;
pub use runs::*;
pub use search::*;
pub use tree::*;

// ---------------------------------------------------------------------------
// Helpers

/// A scope unique to this call, so cases never see each other's rows.
fn fresh_scope(name: &str) -> Scope {
    Scope::new(format!("{name}-{}", uuid::Uuid::now_v7())).unwrap()
}

fn metadata(value: serde_json::Value) -> Metadata {
    value.as_object().cloned().unwrap()
}

#[track_caller]
fn assert_not_found<T: Debug>(result: Result<T>, what: &str) {
    match result {
        Err(Error::NotFound { .. }) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid<T: Debug>(result: Result<T>, field: &str) {
    match result {
        Err(Error::InvalidInput { field: got, .. }) if got == field => {}
        other => panic!("expected InvalidInput naming {field:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_millis(at: chrono::DateTime<chrono::Utc>) {
    assert_eq!(
        at.timestamp_subsec_nanos() % 1_000_000,
        0,
        "{at} has sub-millisecond digits"
    );
}

/// Sleeps past the millisecond clock so the next write has a later `updated_at`.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

async fn new_chat<S: Store>(store: &S, scope: &Scope) -> Conversation {
    store
        .create_conversation(scope, NewConversation::new())
        .await
        .unwrap()
}

/// A conversation with `n` messages (user/assistant alternating, content `m{seq}`).
async fn chat_with_messages<S: Store>(store: &S, scope: &Scope, n: usize) -> Conversation {
    let chat = new_chat(store, scope).await;
    let mut seq = 0;
    while seq < n {
        let batch: Vec<NewMessage> = (seq..n.min(seq + 100))
            .map(|i| {
                let role = if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                };
                NewMessage::new(role, format!("m{}", i + 1))
            })
            .collect();
        seq += batch.len();
        store
            .append_messages(scope, chat.id, Append::new(batch))
            .await
            .unwrap();
    }
    store.get_conversation(scope, chat.id).await.unwrap()
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

fn contents(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.content.as_str()).collect()
}

fn message_ids(messages: &[Message]) -> Vec<MessageId> {
    messages.iter().map(|m| m.id).collect()
}

/// Appends one user message with `content` at `parent`; returns it as stored.
async fn add<S: Store>(
    store: &S,
    scope: &Scope,
    chat: ConversationId,
    parent: Parent,
    content: &str,
) -> Message {
    store
        .append_messages(
            scope,
            chat,
            Append::one(NewMessage::user(content)).parent(parent),
        )
        .await
        .unwrap()
        .messages
        .remove(0)
}

/// Every message of `view`, read forwards in small pages.
async fn read_view<S: Store>(
    store: &S,
    scope: &Scope,
    chat: ConversationId,
    view: MessageView,
) -> Vec<Message> {
    let mut messages: Vec<Message> = Vec::new();
    loop {
        let after = messages.last().map_or(0, |m| m.seq);
        let query = MessageQuery::after(after).limit(7).view(view);
        let page = store.list_messages(scope, chat, &query).await.unwrap();
        messages.extend(page.items);
        if !page.has_more {
            return messages;
        }
        assert!(messages.len() < 100_000, "the pages never end");
    }
}

/// The active path as every read gives it: forward pages, the newest page and the
/// window agree, and it is a chain from a root to the head.
async fn path_of<S: Store>(store: &S, scope: &Scope, chat: ConversationId) -> Vec<Message> {
    let forwards = read_view(store, scope, chat, MessageView::Path).await;
    let newest = store
        .list_messages(scope, chat, &MessageQuery::latest().limit(200))
        .await
        .unwrap();
    let window = store
        .recent_messages(scope, chat, &RecentQuery::new(MAX_RECENT_MESSAGES))
        .await
        .unwrap();
    if forwards.len() <= 200 {
        assert_eq!(newest.items, forwards, "the newest page is the path's end");
    }
    assert_eq!(window, forwards, "the window reads the path");
    let mut parent = None;
    for message in &forwards {
        assert_eq!(message.parent_id, parent, "the path is a chain");
        parent = Some(message.id);
    }
    let conversation = store.get_conversation(scope, chat).await.unwrap();
    assert_eq!(conversation.head_id, parent, "the path ends at the head");
    forwards
}

fn ids(conversations: &[Conversation]) -> Vec<ConversationId> {
    conversations.iter().map(|c| c.id).collect()
}

/// Reads every page of a list.
async fn list_all<S: Store>(
    store: &S,
    scope: &Scope,
    query: ConversationQuery,
) -> Vec<Vec<Conversation>> {
    let mut pages = Vec::new();
    let mut query = query;
    loop {
        let page = store.list_conversations(scope, &query).await.unwrap();
        let next = page.next_cursor.clone();
        pages.push(page.items);
        match next {
            Some(cursor) => query.cursor = Some(cursor),
            None => return pages,
        }
        assert!(pages.len() < 10_000, "the list never ends");
    }
}

/// List order: pinned first when asked, then newest activity, then id, descending.
fn sort_like_list(rows: &mut [Conversation], pinned_first: bool) {
    let query = ConversationQuery::new().pinned_first(pinned_first);
    rows.sort_by(|a, b| query.list_order(a, b));
}

// ---------------------------------------------------------------------------
// Basics

/// Creating returns the stored row, and reading it back gives the same row.
pub async fn create_and_get_round_trip<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("create");
    let plain = new_chat(&*store, &scope).await;
    assert_eq!(plain.scope, scope);
    assert_eq!(plain.title, None);
    assert_eq!(plain.title_source, TitleSource::None);
    assert_eq!(plain.message_count, 0);
    assert_eq!(plain.version, 1, "versions start at 1");
    assert!(!plain.pinned && !plain.archived);
    assert_eq!(plain.created_at, plain.updated_at);
    assert_eq!(plain.id.as_uuid().get_version_num(), 7, "ids are UUIDv7");

    let meta = metadata(json!({"connection": {"id": 42, "kind": "postgres"}, "tags": ["a", "b"]}));
    let titled = store
        .create_conversation(
            &scope,
            NewConversation::new()
                .with_title("  Quarterly numbers  ")
                .with_metadata(meta.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        titled.title.as_deref(),
        Some("  Quarterly numbers  "),
        "stored exactly as given"
    );
    assert_eq!(titled.title_source, TitleSource::User);
    assert_eq!(titled.metadata, meta);
    assert_ne!(titled.id, plain.id);

    for created in [plain, titled] {
        let read = store.get_conversation(&scope, created.id).await.unwrap();
        assert_eq!(read, created);
    }
}

/// An id that was never created is `NotFound`.
pub async fn get_unknown_is_not_found<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("unknown");
    let id = ConversationId::new();
    assert_not_found(store.get_conversation(&scope, id).await, "get");
    assert_not_found(
        store
            .list_messages(&scope, id, &MessageQuery::latest())
            .await,
        "list_messages",
    );
    assert_not_found(
        store
            .recent_messages(&scope, id, &RecentQuery::new(20))
            .await,
        "recent_messages",
    );
    assert_not_found(
        store
            .append_messages(&scope, id, Append::new(vec![NewMessage::user("hi")]))
            .await,
        "append",
    );
    assert_not_found(store.delete_conversation(&scope, id, None).await, "delete");
    let message = MessageId::new();
    assert_not_found(store.get_message(&scope, id, message).await, "get_message");
    assert_not_found(
        store.delete_message(&scope, id, message, None).await,
        "delete_message",
    );
    assert_not_found(
        store.fork_conversation(&scope, id, message).await,
        "fork_conversation",
    );
    assert_not_found(
        store
            .update_conversation(&scope, id, ConversationPatch::new().head(message))
            .await,
        "switch",
    );
}

/// Promise 1: every method called with another scope is `NotFound` and changes
/// nothing; lists of one scope never include another's rows.
pub async fn isolation_on_every_method<S: Store>(store: Arc<S>) {
    let a = fresh_scope("tenant-a");
    let b = fresh_scope("tenant-b");
    let chat = chat_with_messages(&*store, &a, 3).await;
    let own_b = new_chat(&*store, &b).await;
    let id = chat.id;

    assert_not_found(store.get_conversation(&b, id).await, "get");
    assert_not_found(
        store
            .update_conversation(
                &b,
                id,
                ConversationPatch::new().title("stolen").pinned(true),
            )
            .await,
        "update",
    );
    assert_not_found(
        store
            .append_messages(&b, id, Append::new(vec![NewMessage::user("injected")]))
            .await,
        "append",
    );
    assert_not_found(
        store.list_messages(&b, id, &MessageQuery::latest()).await,
        "list_messages",
    );
    assert_not_found(
        store.recent_messages(&b, id, &RecentQuery::new(20)).await,
        "recent_messages",
    );
    assert_not_found(
        store
            .set_title_unless_user(&b, id, "stolen".into(), TitleSource::Generated)
            .await,
        "set_title",
    );
    assert_not_found(store.delete_conversation(&b, id, None).await, "delete");
    let messages = store
        .recent_messages(&a, id, &RecentQuery::new(20))
        .await
        .unwrap();
    let first = messages[0].id;
    assert_not_found(store.get_message(&b, id, first).await, "get_message");
    assert_not_found(
        store.delete_message(&b, id, first, None).await,
        "delete_message",
    );
    assert_not_found(
        store.fork_conversation(&b, id, first).await,
        "fork_conversation",
    );
    assert_not_found(
        store
            .update_conversation(&b, id, ConversationPatch::new().head(first))
            .await,
        "switch",
    );
    assert_not_found(
        store
            .recent_messages(&b, id, &RecentQuery::new(5).ending_at(first))
            .await,
        "recent_messages ending at a message",
    );

    // Nothing of A changed.
    assert_eq!(store.get_conversation(&a, id).await.unwrap(), chat);
    assert_eq!(
        store
            .recent_messages(&a, id, &RecentQuery::new(20))
            .await
            .unwrap(),
        messages
    );
    assert_eq!(seqs(&messages), vec![1, 2, 3]);

    // Lists never mix scopes, whatever the filter.
    for archived in [
        ArchivedFilter::Exclude,
        ArchivedFilter::Include,
        ArchivedFilter::Only,
    ] {
        for pinned_first in [false, true] {
            let query = ConversationQuery::new()
                .archived(archived)
                .pinned_first(pinned_first);
            let listed: Vec<_> = list_all(&*store, &b, query.clone()).await.concat();
            assert!(listed.iter().all(|c| c.scope == b), "{query:?}");
            assert!(!listed.iter().any(|c| c.id == id), "{query:?}");
            let listed_a: Vec<_> = list_all(&*store, &a, query.clone()).await.concat();
            assert!(!listed_a.iter().any(|c| c.id == own_b.id), "{query:?}");
        }
    }
    let filtered = store
        .list_conversations(&b, &ConversationQuery::new().title_contains("m"))
        .await
        .unwrap();
    assert!(filtered.items.iter().all(|c| c.scope == b));
}

// ---------------------------------------------------------------------------
// Appends

/// Promises 2 and 3: seqs follow on from `last_seq`; the counters and the head move
/// with the append.
pub async fn append_assigns_seq_and_moves_counters<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("append");
    let chat = new_chat(&*store, &scope).await;
    tick().await;
    let first = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![NewMessage::user("one"), NewMessage::assistant("two")]),
        )
        .await
        .unwrap();
    assert_eq!(seqs(&first.messages), vec![1, 2]);
    assert_eq!(first.conversation.message_count, 2);
    assert_eq!(first.conversation.last_seq, 2);
    assert_eq!(first.conversation.head_id, Some(first.messages[1].id));
    assert_eq!(
        first.conversation.version,
        chat.version + 1,
        "one version per append"
    );
    assert!(
        first.conversation.updated_at > chat.updated_at,
        "append is activity"
    );
    assert_eq!(first.conversation.created_at, chat.created_at);
    for message in &first.messages {
        assert_eq!(message.conversation_id, chat.id);
        assert_eq!(message.id.as_uuid().get_version_num(), 7);
    }
    assert_eq!(first.messages[0].role, Role::User);
    assert_eq!(first.messages[1].content, "two");

    let second = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![NewMessage::user("three")]),
        )
        .await
        .unwrap();
    assert_eq!(seqs(&second.messages), vec![3]);
    assert_eq!(second.conversation.message_count, 3);
    assert_eq!(second.conversation.last_seq, 3);
    assert_eq!(second.conversation.head_id, Some(second.messages[0].id));
    assert_eq!(second.conversation.version, chat.version + 2);
    assert!(second.conversation.updated_at >= first.conversation.updated_at);

    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        second.conversation
    );
    let all = store
        .recent_messages(&scope, chat.id, &RecentQuery::new(10))
        .await
        .unwrap();
    let expected: Vec<Message> = first.messages.into_iter().chain(second.messages).collect();
    assert_eq!(all, expected, "what append returns is what is stored");
}

/// Promise 2: 8 concurrent appenders × 50 messages into one conversation give seqs
/// 1..=400 with no gap, no duplicate, each appender's messages in its own order,
/// and one chain: every append followed the head of its moment.
pub async fn seq_is_gap_free_under_concurrent_appenders<S: Store>(store: Arc<S>) {
    const WRITERS: usize = 8;
    const EACH: usize = 50;
    let scope = fresh_scope("concurrent");
    let chat = new_chat(&*store, &scope).await;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..EACH {
                let appended = store
                    .append_messages(
                        &scope,
                        chat.id,
                        Append::new(vec![NewMessage::user(format!("w{writer}-{i}"))]),
                    )
                    .await
                    .unwrap();
                acknowledged.push(appended.messages[0].clone());
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        let mine_seqs = seqs(&mine);
        assert!(
            mine_seqs.windows(2).all(|w| w[0] < w[1]),
            "a writer's seqs increase"
        );
        acknowledged.extend(mine);
    }
    let conversation = store.get_conversation(&scope, chat.id).await.unwrap();
    assert_eq!(conversation.message_count, (WRITERS * EACH) as u64);
    assert_eq!(conversation.version, chat.version + (WRITERS * EACH) as u64);
    let stored = store
        .recent_messages(&scope, chat.id, &RecentQuery::new(WRITERS * EACH))
        .await
        .unwrap();
    assert_eq!(
        seqs(&stored),
        (1..=(WRITERS * EACH) as u64).collect::<Vec<_>>()
    );
    acknowledged.sort_by_key(|m| m.seq);
    assert_eq!(
        acknowledged, stored,
        "every acknowledged message is stored, once"
    );
    assert_eq!(conversation.last_seq, (WRITERS * EACH) as u64);
    assert_eq!(conversation.head_id, stored.last().map(|m| m.id));
    let mut parent = None;
    for message in &stored {
        assert_eq!(
            message.parent_id, parent,
            "seq {} left the chain",
            message.seq
        );
        parent = Some(message.id);
    }
}

/// Promise 3 under concurrency: concurrent batches never interleave.
pub async fn concurrent_batches_stay_contiguous<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("batches");
    let chat = new_chat(&*store, &scope).await;
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = Arc::clone(&store);
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..5 {
                let batch = (0..3)
                    .map(|k| NewMessage::user(format!("w{writer}-r{round}-{k}")))
                    .collect();
                store
                    .append_messages(&scope, chat.id, Append::new(batch))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stored = store
        .recent_messages(&scope, chat.id, &RecentQuery::new(200))
        .await
        .unwrap();
    assert_eq!(seqs(&stored), (1..=120).collect::<Vec<_>>());
    for batch in stored.chunks(3) {
        let prefix = |m: &Message| m.content.rsplit_once('-').map(|(p, _)| p.to_owned());
        assert!(
            batch.iter().all(|m| prefix(m) == prefix(&batch[0])),
            "batch split: {:?}",
            batch.iter().map(|m| &m.content).collect::<Vec<_>>()
        );
        let suffixes: Vec<_> = batch.iter().map(|m| m.content.rsplit('-').next()).collect();
        assert_eq!(suffixes, vec![Some("0"), Some("1"), Some("2")]);
    }
}

/// Promise 3: a batch with one bad message, or a stale version, stores nothing.
pub async fn batch_is_atomic<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("atomic");
    let chat = chat_with_messages(&*store, &scope, 2).await;
    let too_long = "x".repeat(crate::Limits::default().max_content_bytes + 1);
    let bad_batch = vec![
        NewMessage::user("fine"),
        NewMessage::assistant("also fine"),
        NewMessage::user(too_long),
    ];
    assert_invalid(
        store
            .append_messages(&scope, chat.id, Append::new(bad_batch))
            .await,
        "messages[2].content",
    );
    let stale = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![NewMessage::user("a"), NewMessage::user("b")])
                .expect_version(chat.version + 7),
        )
        .await;
    assert!(matches!(stale, Err(Error::Conflict { .. })), "{stale:?}");
    assert_eq!(store.get_conversation(&scope, chat.id).await.unwrap(), chat);
    assert_eq!(
        seqs(
            &store
                .recent_messages(&scope, chat.id, &RecentQuery::new(10))
                .await
                .unwrap()
        ),
        vec![1, 2]
    );
    let ok = store
        .append_messages(&scope, chat.id, Append::new(vec![NewMessage::user("next")]))
        .await
        .unwrap();
    assert_eq!(
        seqs(&ok.messages),
        vec![3],
        "no seq was burnt by the failures"
    );
}

/// Promise 4: re-sending a caller id returns the stored message and writes nothing.
pub async fn idempotent_retry_writes_nothing<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("idempotent");
    let chat = new_chat(&*store, &scope).await;
    let id = MessageId::new();
    let first = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![NewMessage::user("only once").with_id(id)]),
        )
        .await
        .unwrap();
    assert_eq!(first.messages[0].id, id);

    // The retry, even with a stale expected version, is answered from storage.
    let retry = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![NewMessage::user("only once, changed").with_id(id)])
                .expect_version(chat.version),
        )
        .await
        .unwrap();
    assert_eq!(
        retry.messages, first.messages,
        "the stored message, unchanged"
    );
    assert_eq!(retry.conversation, first.conversation, "nothing written");

    // A batch mixing a stored id and new messages stores only the new ones.
    let fresh = MessageId::new();
    let mixed = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![
                NewMessage::user("only once").with_id(id),
                NewMessage::assistant("new").with_id(fresh),
                NewMessage::user("new, no id"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(mixed.messages[0], first.messages[0]);
    assert_eq!(seqs(&mixed.messages), vec![1, 2, 3]);
    assert_eq!(
        mixed.messages[1].parent_id,
        Some(id),
        "new messages chain after the head; a stored one takes no part"
    );
    assert_eq!(mixed.messages[2].parent_id, Some(fresh));
    assert_eq!(mixed.messages[1].id, fresh);
    assert_eq!(mixed.conversation.message_count, 3);
    assert_eq!(mixed.conversation.version, first.conversation.version + 1);

    // Ids are unique per conversation: another conversation may use the same id.
    let other = new_chat(&*store, &scope).await;
    let elsewhere = store
        .append_messages(
            &scope,
            other.id,
            Append::new(vec![NewMessage::user("same id").with_id(id)]),
        )
        .await
        .unwrap();
    assert_eq!(elsewhere.messages[0].seq, 1);
    assert_eq!(elsewhere.messages[0].content, "same id");
    assert_eq!(
        store
            .recent_messages(&scope, chat.id, &RecentQuery::new(10))
            .await
            .unwrap()
            .len(),
        3
    );
}

/// Promise 5 for appends: a stale expected version is a conflict naming both.
pub async fn append_version_conflict<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("append-version");
    let chat = new_chat(&*store, &scope).await;
    let ok = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![NewMessage::user("a")]).expect_version(chat.version),
        )
        .await
        .unwrap();
    match store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![NewMessage::user("b")]).expect_version(chat.version),
        )
        .await
    {
        Err(Error::Conflict { expected, actual }) => {
            assert_eq!(expected, chat.version);
            assert_eq!(actual, ok.conversation.version);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        ok.conversation
    );
}

// ---------------------------------------------------------------------------
// Updates and titles

/// Each patch field changes exactly itself, bumps the version and moves `updated_at`;
/// an empty patch changes nothing.
pub async fn update_changes_fields_and_version<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("update");
    let chat = new_chat(&*store, &scope).await;
    tick().await;
    let renamed = store
        .update_conversation(&scope, chat.id, ConversationPatch::new().title("Renamed"))
        .await
        .unwrap();
    assert_eq!(renamed.title.as_deref(), Some("Renamed"));
    assert_eq!(renamed.title_source, TitleSource::User);
    assert_eq!(renamed.version, chat.version + 1);
    assert!(renamed.updated_at > chat.updated_at, "an edit is activity");
    assert!(!renamed.pinned && !renamed.archived);

    let pinned = store
        .update_conversation(&scope, chat.id, ConversationPatch::new().pinned(true))
        .await
        .unwrap();
    assert!(pinned.pinned && !pinned.archived);
    assert_eq!(pinned.title, renamed.title);
    assert_eq!(pinned.version, renamed.version + 1);

    let meta = metadata(json!({"color": "teal"}));
    let all = store
        .update_conversation(
            &scope,
            chat.id,
            ConversationPatch::new()
                .archived(true)
                .pinned(false)
                .metadata(meta.clone()),
        )
        .await
        .unwrap();
    assert!(all.archived && !all.pinned);
    assert_eq!(all.metadata, meta);
    assert_eq!(all.version, pinned.version + 1, "one version per update");
    assert!(all.updated_at >= pinned.updated_at);

    let unchanged = store
        .update_conversation(&scope, chat.id, ConversationPatch::new())
        .await
        .unwrap();
    assert_eq!(unchanged, all, "an empty patch changes nothing");
    assert_eq!(store.get_conversation(&scope, chat.id).await.unwrap(), all);
}

/// Promise 5: a stale expected version is a conflict and changes nothing.
pub async fn update_version_conflict<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("update-version");
    let chat = new_chat(&*store, &scope).await;
    let first = store
        .update_conversation(
            &scope,
            chat.id,
            ConversationPatch::new()
                .title("first")
                .expect_version(chat.version),
        )
        .await
        .unwrap();
    let stale = store
        .update_conversation(
            &scope,
            chat.id,
            ConversationPatch::new()
                .title("second")
                .expect_version(chat.version),
        )
        .await;
    match stale {
        Err(Error::Conflict { expected, actual }) => {
            assert_eq!((expected, actual), (chat.version, first.version));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let empty_stale = store
        .update_conversation(&scope, chat.id, ConversationPatch::new().expect_version(0))
        .await;
    assert!(
        matches!(empty_stale, Err(Error::Conflict { .. })),
        "{empty_stale:?}"
    );
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        first
    );
}

/// Promise 6: no automatic title replaces a user title.
pub async fn user_title_is_never_overwritten<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("user-title");
    let chat = store
        .create_conversation(&scope, NewConversation::new().with_title("Mine"))
        .await
        .unwrap();
    for source in [TitleSource::Heuristic, TitleSource::Generated] {
        let outcome = store
            .set_title_unless_user(&scope, chat.id, "Automatic".into(), source)
            .await
            .unwrap();
        assert!(!outcome.applied, "{source:?} replaced a user title");
        assert_eq!(outcome.conversation, chat, "nothing changed");
    }
    // A rename after an automatic title makes it final too.
    let other = new_chat(&*store, &scope).await;
    store
        .set_title_unless_user(&scope, other.id, "Generated".into(), TitleSource::Generated)
        .await
        .unwrap();
    store
        .update_conversation(&scope, other.id, ConversationPatch::new().title("Renamed"))
        .await
        .unwrap();
    let outcome = store
        .set_title_unless_user(&scope, other.id, "Again".into(), TitleSource::Generated)
        .await
        .unwrap();
    assert!(!outcome.applied);
    assert_eq!(outcome.conversation.title.as_deref(), Some("Renamed"));
    assert_eq!(outcome.conversation.title_source, TitleSource::User);
}

/// Heuristic fills only an empty title; generated replaces heuristic and generated;
/// an applied title bumps the version but is not activity.
pub async fn automatic_title_authority<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("auto-title");
    let chat = new_chat(&*store, &scope).await;
    tick().await;
    let heuristic = store
        .set_title_unless_user(
            &scope,
            chat.id,
            "From the question".into(),
            TitleSource::Heuristic,
        )
        .await
        .unwrap();
    assert!(heuristic.applied);
    assert_eq!(
        heuristic.conversation.title.as_deref(),
        Some("From the question")
    );
    assert_eq!(heuristic.conversation.title_source, TitleSource::Heuristic);
    assert_eq!(heuristic.conversation.version, chat.version + 1);
    assert_eq!(
        heuristic.conversation.updated_at, chat.updated_at,
        "a title is not activity"
    );

    let second_heuristic = store
        .set_title_unless_user(&scope, chat.id, "Other".into(), TitleSource::Heuristic)
        .await
        .unwrap();
    assert!(!second_heuristic.applied);
    assert_eq!(second_heuristic.conversation, heuristic.conversation);

    let generated = store
        .set_title_unless_user(
            &scope,
            chat.id,
            "Written by the model".into(),
            TitleSource::Generated,
        )
        .await
        .unwrap();
    assert!(generated.applied);
    assert_eq!(generated.conversation.title_source, TitleSource::Generated);
    assert_eq!(generated.conversation.version, chat.version + 2);

    let late_heuristic = store
        .set_title_unless_user(&scope, chat.id, "Late".into(), TitleSource::Heuristic)
        .await
        .unwrap();
    assert!(
        !late_heuristic.applied,
        "a heuristic never replaces a generated title"
    );

    let regenerated = store
        .set_title_unless_user(&scope, chat.id, "Better".into(), TitleSource::Generated)
        .await
        .unwrap();
    assert!(regenerated.applied);
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        regenerated.conversation
    );
}

/// Promises 3 and 6: an append's `title_hint` titles a conversation that has none,
/// in the same change as the append (one version bump); it never replaces a title
/// (user, generated or heuristic), and a pure retry, which writes nothing, applies
/// nothing.
pub async fn title_hint_titles_with_the_append<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("title-hint");
    let chat = new_chat(&*store, &scope).await;
    let titled = store
        .append_messages(
            &scope,
            chat.id,
            Append::one(NewMessage::user("How many rows?")).title_hint("How many rows"),
        )
        .await
        .unwrap();
    let conversation = &titled.conversation;
    assert_eq!(conversation.title.as_deref(), Some("How many rows"));
    assert_eq!(conversation.title_source, TitleSource::Heuristic);
    assert_eq!(conversation.version, chat.version + 1, "one change");
    assert_eq!(conversation.message_count, 1);
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        titled.conversation
    );
    let again = store
        .append_messages(
            &scope,
            chat.id,
            Append::one(NewMessage::user("And now?")).title_hint("And now"),
        )
        .await
        .unwrap();
    assert_eq!(again.conversation.title.as_deref(), Some("How many rows"));
    assert_eq!(again.conversation.version, conversation.version + 1);

    // Never over a user or a generated title.
    let named = store
        .create_conversation(&scope, NewConversation::new().with_title("Mine"))
        .await
        .unwrap();
    let generated = new_chat(&*store, &scope).await;
    let generated = store
        .set_title_unless_user(&scope, generated.id, "Model".into(), TitleSource::Generated)
        .await
        .unwrap()
        .conversation;
    for (before, source) in [
        (named, TitleSource::User),
        (generated, TitleSource::Generated),
    ] {
        let after = store
            .append_messages(
                &scope,
                before.id,
                Append::one(NewMessage::user("q")).title_hint("Hint"),
            )
            .await
            .unwrap()
            .conversation;
        assert_eq!((&after.title, after.title_source), (&before.title, source));
        assert_eq!(after.version, before.version + 1);
    }

    // A pure retry writes nothing, the title included; a partial one writes it.
    let untitled = new_chat(&*store, &scope).await;
    let id = MessageId::new();
    store
        .append_messages(
            &scope,
            untitled.id,
            Append::one(NewMessage::user("q").with_id(id)),
        )
        .await
        .unwrap();
    let stored = store.get_conversation(&scope, untitled.id).await.unwrap();
    let retry = store
        .append_messages(
            &scope,
            untitled.id,
            Append::one(NewMessage::user("q").with_id(id)).title_hint("Late"),
        )
        .await
        .unwrap();
    assert_eq!(retry.conversation, stored, "a pure retry writes nothing");
    assert_eq!(
        store.get_conversation(&scope, untitled.id).await.unwrap(),
        stored
    );
    let partial = store
        .append_messages(
            &scope,
            untitled.id,
            Append::new(vec![
                NewMessage::user("q").with_id(id),
                NewMessage::assistant("a"),
            ])
            .title_hint("Late"),
        )
        .await
        .unwrap();
    assert_eq!(partial.conversation.title.as_deref(), Some("Late"));
    assert_eq!(partial.conversation.version, stored.version + 1);
}

/// Promise 7: a deleted conversation and its messages are gone at once; others stay.
pub async fn delete_removes_messages<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("delete");
    let doomed = chat_with_messages(&*store, &scope, 5).await;
    let kept = chat_with_messages(&*store, &scope, 3).await;
    let doomed_messages = path_of(&*store, &scope, doomed.id).await;
    store
        .delete_conversation(&scope, doomed.id, None)
        .await
        .unwrap();

    assert_not_found(store.get_conversation(&scope, doomed.id).await, "get");
    assert_not_found(
        store
            .list_messages(&scope, doomed.id, &MessageQuery::after(0))
            .await,
        "list_messages",
    );
    assert_not_found(
        store
            .recent_messages(&scope, doomed.id, &RecentQuery::new(20))
            .await,
        "recent",
    );
    assert_not_found(
        store
            .append_messages(
                &scope,
                doomed.id,
                Append::new(vec![NewMessage::user("late")]),
            )
            .await,
        "append",
    );
    assert_not_found(
        store
            .update_conversation(&scope, doomed.id, ConversationPatch::new().pinned(true))
            .await,
        "update",
    );
    assert_not_found(
        store.delete_conversation(&scope, doomed.id, None).await,
        "delete twice",
    );
    for message in &doomed_messages {
        assert_not_found(
            store.get_message(&scope, doomed.id, message.id).await,
            "get_message",
        );
        assert_not_found(
            store
                .delete_message(&scope, doomed.id, message.id, None)
                .await,
            "delete_message",
        );
        assert_not_found(
            store.fork_conversation(&scope, doomed.id, message.id).await,
            "fork_conversation",
        );
    }
    for archived in [ArchivedFilter::Exclude, ArchivedFilter::Include] {
        let listed = list_all(&*store, &scope, ConversationQuery::new().archived(archived))
            .await
            .concat();
        assert_eq!(ids(&listed), vec![kept.id]);
    }
    assert_eq!(
        seqs(
            &store
                .recent_messages(&scope, kept.id, &RecentQuery::new(20))
                .await
                .unwrap()
        ),
        vec![1, 2, 3]
    );
}

// ---------------------------------------------------------------------------
// Listing

/// Promise 8: newest activity first; an append moves a conversation to the top.
pub async fn list_newest_activity_first<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("order");
    let first = new_chat(&*store, &scope).await;
    let second = new_chat(&*store, &scope).await;
    let third = new_chat(&*store, &scope).await;
    let page = store
        .list_conversations(&scope, &ConversationQuery::new())
        .await
        .unwrap();
    assert_eq!(ids(&page.items), vec![third.id, second.id, first.id]);
    assert_eq!(page.next_cursor, None);
    tick().await;
    store
        .append_messages(
            &scope,
            first.id,
            Append::new(vec![NewMessage::user("bump")]),
        )
        .await
        .unwrap();
    let page = store
        .list_conversations(&scope, &ConversationQuery::new())
        .await
        .unwrap();
    assert_eq!(ids(&page.items), vec![first.id, third.id, second.id]);
    assert_eq!(page.items[0].message_count, 1, "rows are current");
}

/// Promise 8: pages cover every row once, in order, and the last has no cursor.
pub async fn list_paginates_without_repeats<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("pages");
    let mut created = Vec::new();
    for _ in 0..25 {
        created.push(new_chat(&*store, &scope).await);
    }
    sort_like_list(&mut created, false);
    let pages = list_all(&*store, &scope, ConversationQuery::new().limit(7)).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![7, 7, 7, 4]
    );
    let listed = pages.concat();
    assert_eq!(ids(&listed), ids(&created));
    let exact = list_all(&*store, &scope, ConversationQuery::new().limit(5)).await;
    assert_eq!(exact.len(), 5, "a full last page has no cursor after it");
}

/// Promise 8: rows moving while a client pages never appear twice.
pub async fn list_pages_never_repeat_under_writes<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("pages-writes");
    let mut created = Vec::new();
    for _ in 0..12 {
        created.push(new_chat(&*store, &scope).await);
    }
    let query = ConversationQuery::new().limit(4);
    let first = store.list_conversations(&scope, &query).await.unwrap();
    tick().await;
    // Touch one row of the first page and one not yet read: both move to the top.
    for id in [first.items[1].id, created[0].id] {
        store
            .append_messages(&scope, id, Append::new(vec![NewMessage::user("moved")]))
            .await
            .unwrap();
    }
    let mut seen: HashSet<ConversationId> = ids(&first.items).into_iter().collect();
    let mut cursor = first.next_cursor;
    while let Some(next) = cursor {
        let page = store
            .list_conversations(&scope, &query.clone().cursor(next))
            .await
            .unwrap();
        for row in &page.items {
            assert!(seen.insert(row.id), "{} listed twice", row.id);
        }
        cursor = page.next_cursor;
    }
    assert_eq!(
        seen.len(),
        11,
        "only the row moved past the cursor is missed"
    );
    assert!(!seen.contains(&created[0].id));
}

/// Promise 8: `pinned_first` lists pinned rows first, each group by activity, across
/// pages.
pub async fn list_pinned_first<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("pinned");
    let mut rows = Vec::new();
    for i in 0..9 {
        let chat = new_chat(&*store, &scope).await;
        let chat = if i % 3 == 0 {
            store
                .update_conversation(&scope, chat.id, ConversationPatch::new().pinned(true))
                .await
                .unwrap()
        } else {
            chat
        };
        rows.push(chat);
    }
    let mut expected = rows.clone();
    sort_like_list(&mut expected, true);
    let listed = list_all(
        &*store,
        &scope,
        ConversationQuery::new().pinned_first(true).limit(2),
    )
    .await
    .concat();
    assert_eq!(ids(&listed), ids(&expected));
    assert!(listed[..3].iter().all(|c| c.pinned));
    assert!(listed[3..].iter().all(|c| !c.pinned));
    let mut by_activity = rows;
    sort_like_list(&mut by_activity, false);
    let plain = list_all(&*store, &scope, ConversationQuery::new().limit(4))
        .await
        .concat();
    assert_eq!(
        ids(&plain),
        ids(&by_activity),
        "without pinned_first, pins are ignored"
    );
}

/// Promise 8: archived rows are left out unless asked for.
pub async fn list_archived_filter<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("archived");
    let mut all = Vec::new();
    for i in 0..6 {
        let chat = new_chat(&*store, &scope).await;
        let chat = if i % 2 == 1 {
            store
                .update_conversation(&scope, chat.id, ConversationPatch::new().archived(true))
                .await
                .unwrap()
        } else {
            chat
        };
        all.push(chat);
    }
    sort_like_list(&mut all, false);
    let (archived, active): (Vec<_>, Vec<_>) = all.iter().cloned().partition(|c| c.archived);
    for (filter, expected) in [
        (ArchivedFilter::Exclude, &active),
        (ArchivedFilter::Only, &archived),
        (ArchivedFilter::Include, &all),
    ] {
        let listed = list_all(
            &*store,
            &scope,
            ConversationQuery::new().archived(filter).limit(2),
        )
        .await
        .concat();
        assert_eq!(ids(&listed), ids(expected), "{filter:?}");
    }
    assert_eq!(
        ids(&store
            .list_conversations(&scope, &ConversationQuery::new())
            .await
            .unwrap()
            .items),
        ids(&active),
        "the default excludes archived rows"
    );
}

/// Promise 8: limit defaults to 50 and is capped at 200.
pub async fn list_limit_default_and_cap<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("limit");
    for _ in 0..205 {
        new_chat(&*store, &scope).await;
    }
    let page = store
        .list_conversations(&scope, &ConversationQuery::new())
        .await
        .unwrap();
    assert_eq!(page.items.len(), crate::DEFAULT_PAGE_SIZE);
    assert!(page.next_cursor.is_some());
    let page = store
        .list_conversations(&scope, &ConversationQuery::new().limit(100_000))
        .await
        .unwrap();
    assert_eq!(page.items.len(), crate::MAX_PAGE_SIZE);
    let rest = store
        .list_conversations(
            &scope,
            &ConversationQuery::new()
                .limit(100_000)
                .cursor(page.next_cursor.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 5);
    assert_eq!(rest.next_cursor, None);
}

/// Promise 8: a bad cursor or a zero limit is `InvalidInput`.
pub async fn list_bad_cursor_and_limit<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("bad-cursor");
    for _ in 0..3 {
        new_chat(&*store, &scope).await;
    }
    for cursor in [
        "",
        "garbage",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "%%%",
        "a b",
    ] {
        assert_invalid(
            store
                .list_conversations(&scope, &ConversationQuery::new().cursor(cursor))
                .await,
            "cursor",
        );
    }
    let page = store
        .list_conversations(&scope, &ConversationQuery::new().limit(1))
        .await
        .unwrap();
    let cursor = page.next_cursor.unwrap();
    assert_invalid(
        store
            .list_conversations(
                &scope,
                &ConversationQuery::new()
                    .pinned_first(true)
                    .cursor(cursor.clone()),
            )
            .await,
        "cursor",
    );
    assert_invalid(
        store
            .list_conversations(
                &scope,
                &ConversationQuery::new()
                    .archived(ArchivedFilter::Only)
                    .cursor(cursor),
            )
            .await,
        "cursor",
    );
    assert_invalid(
        store
            .list_conversations(&scope, &ConversationQuery::new().limit(0))
            .await,
        "limit",
    );
}

/// The title filter: substring, ASCII case ignored, `%` and `_` literal, pages work.
pub async fn list_title_filter<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("filter");
    let titles = [
        "Revenue by REGION",
        "region_sales 100%",
        "Élan régional",
        "Untitled",
        "regional churn",
        "RegionX",
        "Join stats",
        "Top 10 tables",
    ];
    let mut created = Vec::new();
    for title in titles {
        created.push(
            store
                .create_conversation(&scope, NewConversation::new().with_title(title))
                .await
                .unwrap(),
        );
    }
    new_chat(&*store, &scope).await; // no title: never matches
    let titles_for = |rows: &[Conversation]| -> Vec<String> {
        rows.iter().filter_map(|c| c.title.clone()).collect()
    };
    let listed = list_all(
        &*store,
        &scope,
        ConversationQuery::new().title_contains("region").limit(2),
    )
    .await
    .concat();
    assert_eq!(
        titles_for(&listed),
        vec![
            "RegionX",
            "regional churn",
            "region_sales 100%",
            "Revenue by REGION"
        ]
    );
    let percent = list_all(
        &*store,
        &scope,
        ConversationQuery::new().title_contains("0%"),
    )
    .await
    .concat();
    assert_eq!(
        titles_for(&percent),
        vec!["region_sales 100%"],
        "`%` is literal"
    );
    let underscore = list_all(
        &*store,
        &scope,
        ConversationQuery::new().title_contains("n_s"),
    )
    .await
    .concat();
    assert_eq!(
        titles_for(&underscore),
        vec!["region_sales 100%"],
        "`_` is literal"
    );
    let accented = list_all(
        &*store,
        &scope,
        ConversationQuery::new().title_contains("élan"),
    )
    .await
    .concat();
    assert!(accented.is_empty(), "only ASCII letters fold case");
    let exact = list_all(
        &*store,
        &scope,
        ConversationQuery::new().title_contains("Élan"),
    )
    .await
    .concat();
    assert_eq!(titles_for(&exact), vec!["Élan régional"]);
    let everything = list_all(&*store, &scope, ConversationQuery::new().title_contains(""))
        .await
        .concat();
    assert_eq!(everything.len(), 9, "an empty filter is no filter");
    assert_invalid(
        store
            .list_conversations(&scope, &ConversationQuery::new().title_contains("a\nb"))
            .await,
        "titleContains",
    );
}

// ---------------------------------------------------------------------------
// Messages

/// Message pages by seq, in every direction, chronological, with `has_more`.
pub async fn message_pages<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("message-pages");
    let chat = chat_with_messages(&*store, &scope, 120).await;
    let page = |query: MessageQuery| {
        let store = Arc::clone(&store);
        let scope = scope.clone();
        async move { store.list_messages(&scope, chat.id, &query).await.unwrap() }
    };
    let range = |a: u64, b: u64| (a..=b).collect::<Vec<_>>();

    let latest = page(MessageQuery::latest()).await;
    assert_eq!(seqs(&latest.items), range(71, 120));
    assert!(latest.has_more);
    assert_eq!(latest.items[0].content, "m71");
    let older = page(MessageQuery::before(71)).await;
    assert_eq!(seqs(&older.items), range(21, 70));
    assert!(older.has_more);
    let oldest = page(MessageQuery::before(21)).await;
    assert_eq!(seqs(&oldest.items), range(1, 20));
    assert!(!oldest.has_more);

    let forward = page(MessageQuery::after(0).limit(30)).await;
    assert_eq!(seqs(&forward.items), range(1, 30));
    assert!(forward.has_more);
    let tail = page(MessageQuery::after(100)).await;
    assert_eq!(seqs(&tail.items), range(101, 120));
    assert!(!tail.has_more);
    let between = page(MessageQuery {
        after: Some(10),
        before: Some(20),
        limit: Some(5),
        ..MessageQuery::default()
    })
    .await;
    assert_eq!(seqs(&between.items), range(11, 15));
    assert!(between.has_more);
    let between_all = page(MessageQuery {
        after: Some(10),
        before: Some(20),
        limit: None,
        ..MessageQuery::default()
    })
    .await;
    assert_eq!(seqs(&between_all.items), range(11, 19));
    assert!(!between_all.has_more);

    for empty in [
        MessageQuery::after(120),
        MessageQuery::after(5000),
        MessageQuery::before(1),
        MessageQuery::before(0),
        MessageQuery {
            after: Some(50),
            before: Some(40),
            limit: None,
            ..MessageQuery::default()
        },
    ] {
        for view in [MessageView::Path, MessageView::All] {
            let got = page(empty.view(view)).await;
            assert!(got.items.is_empty() && !got.has_more, "{empty:?}: {got:?}");
        }
    }
    let capped = page(MessageQuery::after(0).limit(100_000)).await;
    assert_eq!(capped.items.len(), crate::MAX_PAGE_SIZE.min(120));
    assert_invalid(
        store
            .list_messages(&scope, chat.id, &MessageQuery::latest().limit(0))
            .await,
        "limit",
    );
    for query in [
        MessageQuery::latest(),
        MessageQuery::before(71),
        MessageQuery::after(100),
    ] {
        assert_eq!(
            page(query.view(MessageView::All)).await,
            page(query).await,
            "a linear chat's tree is its path: {query:?}"
        );
    }
    let empty_chat = new_chat(&*store, &scope).await;
    let none = store
        .list_messages(&scope, empty_chat.id, &MessageQuery::latest())
        .await
        .unwrap();
    assert!(none.items.is_empty() && !none.has_more);
}

/// Promise 9: a page stops before it would weigh more than `Limits::max_page_bytes`
/// (with `has_more`), and paging on, in either direction and either view, reads
/// every message exactly once; a message heavier than a page comes alone.
pub async fn pages_stop_at_max_page_bytes<S: Store>(store: Arc<S>) {
    let limits = crate::Limits::default();
    let scope = fresh_scope("page-bytes");
    let chat = new_chat(&*store, &scope).await;
    for i in 1..=10 {
        let content = format!("{i:02}").repeat(limits.max_content_bytes / 2);
        store
            .append_messages(&scope, chat.id, Append::one(NewMessage::user(content)))
            .await
            .unwrap();
    }
    let weight = |messages: &[Message]| messages.iter().map(Message::page_weight).sum::<usize>();
    for view in [MessageView::Path, MessageView::All] {
        let newest = store
            .list_messages(
                &scope,
                chat.id,
                &MessageQuery::latest().limit(50).view(view),
            )
            .await
            .unwrap();
        assert_eq!(
            seqs(&newest.items),
            vec![8, 9, 10],
            "{view:?}: 4 MiB hold three"
        );
        assert!(newest.has_more, "{view:?}");
        for newest_first in [true, false] {
            let mut read: Vec<Message> = Vec::new();
            let mut query = if newest_first {
                MessageQuery::latest()
            } else {
                MessageQuery::after(0)
            }
            .limit(50)
            .view(view);
            loop {
                let page = store.list_messages(&scope, chat.id, &query).await.unwrap();
                assert!(
                    !page.items.is_empty(),
                    "{view:?}: an empty page with more to read"
                );
                assert!(weight(&page.items) <= limits.max_page_bytes, "{view:?}");
                if page.has_more {
                    // It stopped only because one more message would not fit.
                    assert_eq!(
                        page.items.len(),
                        3,
                        "{view:?}: a page stopped with room left"
                    );
                }
                let (first, last) = (page.items[0].seq, page.items[page.items.len() - 1].seq);
                if newest_first {
                    read.splice(0..0, page.items);
                    query.before = Some(first);
                } else {
                    read.extend(page.items);
                    query.after = Some(last);
                }
                if !page.has_more {
                    break;
                }
            }
            assert_eq!(
                seqs(&read),
                (1..=10).collect::<Vec<_>>(),
                "{view:?}, newest first: {newest_first}: each message once"
            );
        }
    }

    // Heavier than a page: 1 MiB of content and three tool calls of 1 MiB each.
    let heavy_chat = chat_with_messages(&*store, &scope, 1).await;
    let call = |i: usize| ToolCall {
        id: format!("call_{i}"),
        name: "f".into(),
        arguments: json!("a".repeat(limits.max_content_bytes - 2)),
    };
    let heavy = NewMessage::assistant("h".repeat(limits.max_content_bytes))
        .with_tool_calls((0..3).map(call).collect());
    store
        .append_messages(
            &scope,
            heavy_chat.id,
            Append::new(vec![heavy, NewMessage::user("after")]),
        )
        .await
        .unwrap();
    let page = |query: MessageQuery| {
        let store = Arc::clone(&store);
        let scope = scope.clone();
        async move {
            let page = store
                .list_messages(&scope, heavy_chat.id, &query)
                .await
                .unwrap();
            (seqs(&page.items), page.has_more)
        }
    };
    assert_eq!(page(MessageQuery::latest()).await, (vec![3], true));
    assert_eq!(
        page(MessageQuery::before(3)).await,
        (vec![2], true),
        "alone"
    );
    assert_eq!(page(MessageQuery::after(1)).await, (vec![2], true), "alone");
    assert_eq!(page(MessageQuery::before(2)).await, (vec![1], false));
}

/// Promise 9: the last N messages, chronological.
pub async fn recent_messages_window<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("window");
    let chat = chat_with_messages(&*store, &scope, 120).await;
    let window = store
        .recent_messages(&scope, chat.id, &RecentQuery::new(20))
        .await
        .unwrap();
    assert_eq!(seqs(&window), (101..=120).collect::<Vec<_>>());
    assert_eq!(window.last().unwrap().content, "m120");
    let all = store
        .recent_messages(&scope, chat.id, &RecentQuery::new(500))
        .await
        .unwrap();
    assert_eq!(all.len(), 120);
    assert!(
        store
            .recent_messages(&scope, chat.id, &RecentQuery::new(0))
            .await
            .unwrap()
            .is_empty()
    );
    assert_invalid(
        store
            .recent_messages(&scope, chat.id, &RecentQuery::new(MAX_RECENT_MESSAGES + 1))
            .await,
        "n",
    );
}

// ---------------------------------------------------------------------------
// Validation and fidelity

/// Promise 11: every limit is refused with `InvalidInput` naming the field, and
/// nothing is stored.
pub async fn validation_refuses_every_limit<S: Store>(store: Arc<S>) {
    let limits = crate::Limits::default();
    let scope = fresh_scope("validation");
    let long_title = "t".repeat(limits.max_title_chars + 1);
    let big_meta = metadata(json!({"blob": "x".repeat(limits.max_metadata_bytes)}));

    assert_invalid(
        store
            .create_conversation(
                &scope,
                NewConversation::new().with_title(long_title.clone()),
            )
            .await,
        "title",
    );
    assert_invalid(
        store
            .create_conversation(&scope, NewConversation::new().with_title("two\nlines"))
            .await,
        "title",
    );
    assert_invalid(
        store
            .create_conversation(&scope, NewConversation::new().with_title(" "))
            .await,
        "title",
    );
    assert_invalid(
        store
            .create_conversation(
                &scope,
                NewConversation::new().with_metadata(big_meta.clone()),
            )
            .await,
        "metadata",
    );
    assert!(
        store
            .list_conversations(
                &scope,
                &ConversationQuery::new().archived(ArchivedFilter::Include)
            )
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing was created"
    );

    let chat = new_chat(&*store, &scope).await;
    assert_invalid(
        store
            .update_conversation(
                &scope,
                chat.id,
                ConversationPatch::new().title(long_title.clone()),
            )
            .await,
        "title",
    );
    assert_invalid(
        store
            .update_conversation(
                &scope,
                chat.id,
                ConversationPatch::new().metadata(big_meta.clone()),
            )
            .await,
        "metadata",
    );
    assert_invalid(
        store
            .set_title_unless_user(&scope, chat.id, long_title.clone(), TitleSource::Generated)
            .await,
        "title",
    );
    assert_invalid(
        store
            .set_title_unless_user(&scope, chat.id, "x".into(), TitleSource::User)
            .await,
        "source",
    );

    let call = |id: &str, name: &str| ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: json!({}),
    };
    let cases: Vec<(Vec<NewMessage>, &str)> = vec![
        (vec![], "messages"),
        (
            vec![NewMessage::user("x"); limits.max_batch_messages + 1],
            "messages",
        ),
        (
            vec![NewMessage::user("x".repeat(limits.max_content_bytes + 1))],
            "messages[0].content",
        ),
        (vec![NewMessage::user("a\0b")], "messages[0].content"),
        (
            vec![NewMessage::user("u").with_metadata(big_meta.clone())],
            "messages[0].metadata",
        ),
        (
            vec![
                NewMessage::user("ok"),
                NewMessage::new(Role::Tool, "no call id"),
            ],
            "messages[1].toolCallId",
        ),
        (
            vec![NewMessage::user("u").with_tool_calls(vec![call("c", "f")])],
            "messages[0].toolCalls",
        ),
        (
            vec![NewMessage::assistant("").with_tool_calls(vec![call("", "f")])],
            "messages[0].toolCalls[0].id",
        ),
        (
            vec![NewMessage::assistant("").with_tool_calls(vec![call("c", "")])],
            "messages[0].toolCalls[0].name",
        ),
        (
            vec![
                NewMessage::assistant("").with_tool_calls(
                    (0..=limits.max_tool_calls)
                        .map(|i| call(&format!("c{i}"), "f"))
                        .collect(),
                ),
            ],
            "messages[0].toolCalls",
        ),
        (
            {
                let id = MessageId::new();
                vec![
                    NewMessage::user("a").with_id(id),
                    NewMessage::user("b").with_id(id),
                ]
            },
            "messages[1].id",
        ),
    ];
    for (batch, field) in cases {
        assert_invalid(
            store
                .append_messages(&scope, chat.id, Append::new(batch))
                .await,
            field,
        );
    }
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        chat,
        "nothing was stored"
    );

    // The limits themselves are allowed.
    let at_limit = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![NewMessage::user("y".repeat(limits.max_content_bytes))]),
        )
        .await
        .unwrap();
    assert_eq!(at_limit.messages[0].content.len(), limits.max_content_bytes);
    let titled = store
        .update_conversation(
            &scope,
            chat.id,
            ConversationPatch::new().title("é".repeat(limits.max_title_chars)),
        )
        .await
        .unwrap();
    assert_eq!(
        titled.title.unwrap().chars().count(),
        limits.max_title_chars
    );
}

/// Promise 11 for the inputs of the tree API: a user or system message with blank
/// content names `messages[i].content`, a bad title hint names `titleHint`, a window
/// above 1,000 names `n`; a parent that is not there is `NotFound`; nothing is
/// written.
pub async fn validation_of_tree_inputs<S: Store>(store: Arc<S>) {
    let limits = crate::Limits::default();
    let scope = fresh_scope("validation-tree");
    let chat = chat_with_messages(&*store, &scope, 1).await;
    let blank: Vec<(Vec<NewMessage>, &str)> = vec![
        (vec![NewMessage::user("")], "messages[0].content"),
        (vec![NewMessage::user("  \n\t ")], "messages[0].content"),
        (vec![NewMessage::system(" ")], "messages[0].content"),
        (
            vec![NewMessage::user("fine"), NewMessage::user("\u{3000}")],
            "messages[1].content",
        ),
    ];
    for (batch, field) in blank {
        assert_invalid(
            store
                .append_messages(&scope, chat.id, Append::new(batch))
                .await,
            field,
        );
    }
    for hint in [
        String::new(),
        "  ".to_owned(),
        "two\nlines".to_owned(),
        "h".repeat(limits.max_title_chars + 1),
    ] {
        assert_invalid(
            store
                .append_messages(
                    &scope,
                    chat.id,
                    Append::one(NewMessage::user("fine")).title_hint(hint),
                )
                .await,
            "titleHint",
        );
    }
    assert_not_found(
        store
            .append_messages(
                &scope,
                chat.id,
                Append::one(NewMessage::user("fine")).parent(Parent::Message(MessageId::new())),
            )
            .await,
        "an unknown parent",
    );
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        chat,
        "nothing was stored"
    );
    let head = chat.head_id.unwrap();
    for query in [
        RecentQuery::new(MAX_RECENT_MESSAGES + 1),
        RecentQuery::new(MAX_RECENT_MESSAGES + 1).ending_at(head),
    ] {
        assert_invalid(store.recent_messages(&scope, chat.id, &query).await, "n");
    }
    let most = store
        .recent_messages(&scope, chat.id, &RecentQuery::new(MAX_RECENT_MESSAGES))
        .await
        .unwrap();
    assert_eq!(most.len(), 1);
    // An assistant message may be empty when it only calls tools.
    let call = ToolCall {
        id: "c".into(),
        name: "f".into(),
        arguments: json!({}),
    };
    let tools_only = store
        .append_messages(
            &scope,
            chat.id,
            Append::one(NewMessage::assistant("").with_tool_calls(vec![call])),
        )
        .await
        .unwrap();
    assert_eq!(tools_only.messages[0].content, "");
}

/// Everything stored comes back byte for byte: hostile text, Unicode, tool calls,
/// tool results, nested metadata.
pub async fn content_round_trips_exactly<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("fidelity");
    let hostile_title = "<script>alert('x')</script> \"quoted\" </title> 'single' \\ ; DROP TABLE";
    let chat = store
        .create_conversation(&scope, NewConversation::new().with_title(hostile_title))
        .await
        .unwrap();
    let call = ToolCall {
        id: "call_abc123".into(),
        name: "run_sql".into(),
        arguments: json!({"sql": "SELECT * FROM \"users\" WHERE name = 'o''brien'", "limit": 10, "nested": {"a": [1, 2.5, null, true]}}),
    };
    let batch = vec![
        NewMessage::system("You answer questions about the database."),
        NewMessage::user("Emoji 🧪, RTL \u{202e}text, zero-width \u{200b}, tabs\tand\nnewlines\r\n, <b>bold</b>, \"quotes\", \\backslash")
            .with_metadata(metadata(json!({"client": {"tz": "Europe/Paris"}, "n": 1.5}))),
        NewMessage::assistant("").with_tool_calls(vec![call.clone()]),
        NewMessage::tool("call_abc123", "[{\"id\":1}]"),
        NewMessage::assistant("Unparsable arguments are kept as a string")
            .with_tool_calls(vec![ToolCall {
                id: "call_2".into(),
                name: "f".into(),
                arguments: json!("{not json"),
            }]),
        NewMessage::tool("call_2", ""),
    ];
    let appended = store
        .append_messages(&scope, chat.id, Append::new(batch.clone()))
        .await
        .unwrap();
    let read = store
        .recent_messages(&scope, chat.id, &RecentQuery::new(10))
        .await
        .unwrap();
    assert_eq!(read, appended.messages);
    for (stored, sent) in read.iter().zip(&batch) {
        assert_eq!(stored.role, sent.role);
        assert_eq!(stored.content, sent.content);
        assert_eq!(stored.tool_calls, sent.tool_calls);
        assert_eq!(stored.tool_call_id, sent.tool_call_id);
        assert_eq!(stored.metadata, sent.metadata);
    }
    assert_eq!(read[2].tool_calls[0], call);
    let fetched = store.get_conversation(&scope, chat.id).await.unwrap();
    assert_eq!(fetched.title.as_deref(), Some(hostile_title));
}

/// Timestamps are UTC with millisecond precision and compare equal after a read.
pub async fn timestamps_are_utc_milliseconds<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("time");
    let before = crate::backend::now();
    let chat = new_chat(&*store, &scope).await;
    let appended = store
        .append_messages(&scope, chat.id, Append::new(vec![NewMessage::user("t")]))
        .await
        .unwrap();
    let after = crate::backend::now();
    for at in [
        chat.created_at,
        chat.updated_at,
        appended.conversation.updated_at,
        appended.messages[0].created_at,
    ] {
        assert_millis(at);
        assert!(
            at >= before && at <= after,
            "{at} outside [{before}, {after}]"
        );
    }
    let read = store.get_conversation(&scope, chat.id).await.unwrap();
    assert_eq!(read.created_at, chat.created_at);
    assert_eq!(read.updated_at, appended.conversation.updated_at);
    let message = &store
        .recent_messages(&scope, chat.id, &RecentQuery::new(1))
        .await
        .unwrap()[0];
    assert_eq!(message.created_at, appended.messages[0].created_at);
}

/// Promise 12: timestamps are the store's clock's time truncated to milliseconds,
/// and never move backwards within a conversation when the clock steps back (append,
/// patch, message deletion, fork); a branch switch and an automatic title are not
/// activity.
pub async fn timestamps_follow_the_clock_and_never_go_back<S: Store>(
    store: Arc<S>,
    clock: Arc<ManualClock>,
) {
    let at = |text: &str| {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let scope = fresh_scope("clock");
    let start = at("2031-03-04T05:06:07.123456789Z");
    clock.set(start);
    let chat = new_chat(&*store, &scope).await;
    assert_eq!(chat.created_at, at("2031-03-04T05:06:07.123Z"));
    assert_eq!(chat.updated_at, chat.created_at);

    clock.advance(TimeDelta::microseconds(2_345)); // 07.125801789
    let first = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![NewMessage::user("q1"), NewMessage::assistant("a1")]),
        )
        .await
        .unwrap();
    let t1 = at("2031-03-04T05:06:07.125Z");
    assert_eq!(first.conversation.updated_at, t1);
    assert!(first.messages.iter().all(|m| m.created_at == t1));
    assert_eq!(first.conversation.created_at, chat.created_at);

    // The clock steps back an hour: every write keeps the conversation's time.
    clock.set(start - TimeDelta::hours(1));
    let second = store
        .append_messages(&scope, chat.id, Append::one(NewMessage::user("q2")))
        .await
        .unwrap();
    assert_eq!(
        second.messages[0].created_at, t1,
        "an append never goes back"
    );
    assert_eq!(second.conversation.updated_at, t1);
    let renamed = store
        .update_conversation(&scope, chat.id, ConversationPatch::new().title("Renamed"))
        .await
        .unwrap();
    assert_eq!(renamed.updated_at, t1, "a patch never goes back");
    let deleted = store
        .delete_message(&scope, chat.id, second.messages[0].id, None)
        .await
        .unwrap();
    assert_eq!(deleted.updated_at, t1, "a deletion never goes back");
    let other = new_chat(&*store, &scope).await;
    assert_eq!(
        other.created_at,
        at("2031-03-04T04:06:07.123Z"),
        "a new conversation takes the clock's time"
    );

    // Forwards again: the clock's time, truncated.
    clock.set(at("2031-03-05T00:00:00.999999999Z"));
    let t2 = at("2031-03-05T00:00:00.999Z");
    let switched = store
        .update_conversation(
            &scope,
            chat.id,
            ConversationPatch::new().head(first.messages[0].id),
        )
        .await
        .unwrap();
    assert_eq!(switched.updated_at, t1, "a switch is not activity");
    let titled = store
        .set_title_unless_user(&scope, other.id, "Auto".into(), TitleSource::Generated)
        .await
        .unwrap();
    assert_eq!(
        titled.conversation.updated_at, other.updated_at,
        "nor is a title"
    );
    let third = store
        .append_messages(&scope, chat.id, Append::one(NewMessage::user("q3")))
        .await
        .unwrap();
    assert_eq!(third.messages[0].created_at, t2);
    assert_eq!(third.conversation.updated_at, t2);
    let patched = store
        .update_conversation(&scope, chat.id, ConversationPatch::new().pinned(true))
        .await
        .unwrap();
    assert_eq!(patched.updated_at, t2);

    // A fork made while the clock is behind its messages starts no earlier than them.
    clock.set(start - TimeDelta::hours(2));
    let fork = store
        .fork_conversation(&scope, chat.id, third.messages[0].id)
        .await
        .unwrap();
    let copy = store
        .append_messages(&scope, fork.id, Append::one(NewMessage::user("more")))
        .await
        .unwrap();
    for (id, what) in [(chat.id, "source"), (fork.id, "fork")] {
        let conversation = store.get_conversation(&scope, id).await.unwrap();
        assert!(conversation.created_at <= conversation.updated_at, "{what}");
        let messages = read_view(&*store, &scope, id, MessageView::All).await;
        assert!(
            messages
                .windows(2)
                .all(|w| w[0].created_at <= w[1].created_at),
            "{what}: message times go back: {:?}",
            messages.iter().map(|m| m.created_at).collect::<Vec<_>>()
        );
        for message in &messages {
            assert_millis(message.created_at);
            assert!(
                message.created_at <= conversation.updated_at,
                "{what}: a message is newer than the last activity"
            );
        }
    }
    assert!(copy.messages[0].created_at >= t2);
}
