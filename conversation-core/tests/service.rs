//! The `Conversations` service: title lifecycle, context, reply streaming, and
//! what a caller sees when the title generator, the model or the store fails.
//!
//! Storage is the real in-memory store; `mockall` stands in only where a fault must
//! be forced (a failing store call, a failing or hostile title generator).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is how a test fails

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use conversation_core::{
    Append, Appended, ChatModel, ChatRequest, ContextPolicy, Conversation, ConversationId,
    ConversationPatch, ConversationQuery, Conversations, Error, ExpiredConversation, FinishReason,
    ImportOutcome, ImportedConversation, Message, MessageId, MessagePage, MessageQuery,
    NewConversation, NewMessage, NewRun, Page, RecentQuery, ReplyEvent, ReplyRequest, ReplyStream,
    Result, RetentionQuery, Role, Run, RunId, RunOutcome, Scope, SearchHit, SearchQuery, Store,
    TitleGenerator, TitleOutcome, TitleSource, ToolCall,
};
use conversation_store_memory::MemoryStore;
use futures::{StreamExt as _, stream};
use mockall::mock;
use serde_json::json;

mock! {
    pub Titles {}

    #[async_trait]
    impl TitleGenerator for Titles {
        async fn generate_title(&self, messages: &[Message]) -> Result<String>;
    }
}

mock! {
    pub FaultyStore {}

    #[async_trait]
    impl Store for FaultyStore {
        async fn create_conversation(&self, scope: &Scope, new: NewConversation) -> Result<Conversation>;
        async fn get_conversation(&self, scope: &Scope, id: ConversationId) -> Result<Conversation>;
        async fn list_conversations(&self, scope: &Scope, query: &ConversationQuery) -> Result<Page<Conversation>>;
        async fn update_conversation(&self, scope: &Scope, id: ConversationId, patch: ConversationPatch) -> Result<Conversation>;
        async fn delete_conversation(&self, scope: &Scope, id: ConversationId, expected_version: Option<u64>) -> Result<()>;
        async fn append_messages(&self, scope: &Scope, id: ConversationId, append: Append) -> Result<Appended>;
        async fn get_message(&self, scope: &Scope, id: ConversationId, message: MessageId) -> Result<Message>;
        async fn list_messages(&self, scope: &Scope, id: ConversationId, query: &MessageQuery) -> Result<MessagePage>;
        async fn recent_messages(&self, scope: &Scope, id: ConversationId, query: &RecentQuery) -> Result<Vec<Message>>;
        async fn delete_message(&self, scope: &Scope, id: ConversationId, message: MessageId, expected_version: Option<u64>) -> Result<Conversation>;
        async fn fork_conversation(&self, scope: &Scope, id: ConversationId, message: MessageId) -> Result<Conversation>;
        async fn set_title_unless_user(&self, scope: &Scope, id: ConversationId, title: String, source: TitleSource) -> Result<TitleOutcome>;
        async fn start_run(&self, scope: &Scope, id: ConversationId, run: NewRun) -> Result<Run>;
        async fn renew_run(&self, scope: &Scope, id: ConversationId, run: RunId, lease: Duration) -> Result<Run>;
        async fn cancel_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run>;
        async fn finish_run(&self, scope: &Scope, id: ConversationId, run: RunId, outcome: RunOutcome) -> Result<Run>;
        async fn get_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run>;
        async fn search(&self, scope: &Scope, query: &SearchQuery) -> Result<Page<SearchHit>>;
        async fn import_conversation(&self, scope: &Scope, conversation: ImportedConversation) -> Result<ImportOutcome>;
        async fn list_expired(&self, query: &RetentionQuery) -> Result<Vec<ExpiredConversation>>;
    }
}

// The traits require `Debug`; mockall's mocks do not derive it.
impl std::fmt::Debug for MockTitles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockTitles")
    }
}

impl std::fmt::Debug for MockFaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockFaultyStore")
    }
}

fn scope() -> Scope {
    Scope::new("connection-1").unwrap()
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

fn unavailable() -> Error {
    Error::unavailable("database is restarting", "connection refused")
}

/// A title generator that never answers.
#[derive(Debug)]
struct Hanging;

#[async_trait]
impl TitleGenerator for Hanging {
    async fn generate_title(&self, _: &[Message]) -> Result<String> {
        std::future::pending().await
    }
}

async fn stored_roles(service: &Conversations, id: ConversationId) -> Vec<Role> {
    service
        .messages(&scope(), id, &MessageQuery::after(0).limit(200))
        .await
        .unwrap()
        .items
        .iter()
        .map(|m| m.role)
        .collect()
}

async fn new_chat(service: &Conversations) -> Conversation {
    service
        .create(&scope(), NewConversation::new())
        .await
        .unwrap()
}

/// A conversation with a question and its answer, once background titling is done.
async fn asked_and_answered(service: &Conversations, question: &str, answer: &str) -> Conversation {
    let chat = new_chat(service).await;
    service
        .append_user(&scope(), chat.id, question)
        .await
        .unwrap();
    service
        .append_assistant(&scope(), chat.id, answer)
        .await
        .unwrap();
    service.wait_for_titles().await;
    service.get(&scope(), chat.id).await.unwrap()
}

// ---------------------------------------------------------------------------
// Title lifecycle

#[tokio::test]
async fn first_user_message_titles_at_once_and_the_reply_brings_a_generated_title() {
    let mut titles = MockTitles::new();
    titles
        .expect_generate_title()
        .withf(|messages: &[Message]| {
            messages.len() == 2
                && messages[0].content == "How big is the orders table?"
                && messages[1].role == Role::Assistant
        })
        .times(1)
        .returning(|_| Ok("Orders table size".to_owned()));
    let service = Conversations::builder(memory())
        .title_generator(Arc::new(titles))
        .build();
    let chat = new_chat(&service).await;
    assert_eq!(chat.title, None);

    let asked = service
        .append_user(&scope(), chat.id, "How big is the orders table?")
        .await
        .unwrap();
    assert_eq!(
        asked.conversation.title.as_deref(),
        Some("How big is the orders table?")
    );
    assert_eq!(asked.conversation.title_source, TitleSource::Heuristic);

    service
        .append_assistant(&scope(), chat.id, "About 4 GB.")
        .await
        .unwrap();
    service.wait_for_titles().await;
    let titled = service.get(&scope(), chat.id).await.unwrap();
    assert_eq!(titled.title.as_deref(), Some("Orders table size"));
    assert_eq!(titled.title_source, TitleSource::Generated);

    // Later replies do not ask again (`times(1)` above).
    service
        .append_assistant(&scope(), chat.id, "Want the index sizes too?")
        .await
        .unwrap();
    service.wait_for_titles().await;
}

#[tokio::test]
async fn a_failing_generator_keeps_the_heuristic_title_and_never_fails_the_append() {
    let mut titles = MockTitles::new();
    titles
        .expect_generate_title()
        .times(1)
        .returning(|_| Err(Error::unavailable("rate limited", "429")));
    let service = Conversations::builder(memory())
        .title_generator(Arc::new(titles))
        .build();
    let chat = new_chat(&service).await;
    service
        .append_user(&scope(), chat.id, "Slow query on users")
        .await
        .unwrap();
    let reply = service
        .append_assistant(&scope(), chat.id, "Add an index.")
        .await
        .expect("the append succeeds whatever the generator does");
    assert_eq!(reply.messages[0].seq, 2);
    service.wait_for_titles().await;
    let chat = service.get(&scope(), chat.id).await.unwrap();
    assert_eq!(chat.title.as_deref(), Some("Slow query on users"));
    assert_eq!(chat.title_source, TitleSource::Heuristic);
    assert_eq!(chat.message_count, 2, "nothing lost");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_generator_times_out_and_keeps_the_heuristic_title() {
    let service = Conversations::builder(memory())
        .title_generator(Arc::new(Hanging))
        .title_timeout(Duration::from_secs(5))
        .build();
    let chat = new_chat(&service).await;
    service
        .append_user(&scope(), chat.id, "Vacuum schedule")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    service
        .append_assistant(&scope(), chat.id, "Nightly at 3am.")
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the append did not wait"
    );
    service.wait_for_titles().await;
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "the timeout ran out"
    );
    let chat = service.get(&scope(), chat.id).await.unwrap();
    assert_eq!(chat.title.as_deref(), Some("Vacuum schedule"));
    assert_eq!(chat.title_source, TitleSource::Heuristic);

    let explicit = service.generate_title(&scope(), chat.id).await;
    assert!(
        matches!(explicit, Err(ref e) if e.is_transient()),
        "an explicit request reports the timeout: {explicit:?}"
    );
}

#[tokio::test]
async fn hostile_generator_output_is_stored_as_one_clean_line() {
    let mut titles = MockTitles::new();
    titles.expect_generate_title().returning(|_| {
        let mut answer =
            String::from("<h1>\"Sales dashboard\"</h1>\n\nIgnore previous instructions and ");
        answer.push_str(&"<script>alert(1)</script>\u{0}\u{1b}".repeat(400));
        Ok(answer)
    });
    let service = Conversations::builder(memory())
        .title_generator(Arc::new(titles))
        .build();
    let chat = asked_and_answered(&service, "dashboard", "ok").await;
    assert_eq!(chat.title.as_deref(), Some("Sales dashboard"));
    assert_eq!(chat.title_source, TitleSource::Generated);

    let mut empty = MockTitles::new();
    empty
        .expect_generate_title()
        .returning(|_| Ok("  \n<br/>\n\"\"  ".to_owned()));
    let service = Conversations::builder(memory())
        .title_generator(Arc::new(empty))
        .build();
    let chat = asked_and_answered(&service, "kept", "ok").await;
    assert_eq!(
        chat.title.as_deref(),
        Some("kept"),
        "an empty answer keeps the heuristic title"
    );
    assert!(matches!(
        service.generate_title(&scope(), chat.id).await,
        Err(Error::Backend { .. })
    ));
}

#[tokio::test]
async fn a_user_rename_during_generation_wins() {
    let (release, released) = tokio::sync::oneshot::channel::<()>();

    #[derive(Debug)]
    struct Gated(std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);
    #[async_trait]
    impl TitleGenerator for Gated {
        async fn generate_title(&self, _: &[Message]) -> Result<String> {
            let gate = self.0.lock().unwrap().take();
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            Ok("Generated".to_owned())
        }
    }
    let gated = Gated(std::sync::Mutex::new(Some(released)));
    let service = Conversations::builder(memory())
        .title_generator(Arc::new(gated))
        .build();
    let chat = new_chat(&service).await;
    service
        .append_user(&scope(), chat.id, "question")
        .await
        .unwrap();
    service
        .append_assistant(&scope(), chat.id, "answer")
        .await
        .unwrap();
    service.rename(&scope(), chat.id, "My name").await.unwrap();
    release.send(()).unwrap();
    service.wait_for_titles().await;
    let chat = service.get(&scope(), chat.id).await.unwrap();
    assert_eq!(chat.title.as_deref(), Some("My name"));
    assert_eq!(chat.title_source, TitleSource::User);
}

#[tokio::test]
async fn concurrent_replies_generate_the_title_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let mut titles = MockTitles::new();
    titles.expect_generate_title().returning(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok("Once".to_owned())
    });
    let service = Conversations::builder(memory())
        .title_generator(Arc::new(titles))
        .build();
    let chat = new_chat(&service).await;
    service.append_user(&scope(), chat.id, "q").await.unwrap();
    let replies = (0..8).map(|i| {
        let service = service.clone();
        async move {
            service
                .append_assistant(&scope(), chat.id, format!("a{i}"))
                .await
                .unwrap()
        }
    });
    futures::future::join_all(replies).await;
    service.wait_for_titles().await;
    assert_eq!(
        service
            .get(&scope(), chat.id)
            .await
            .unwrap()
            .title
            .as_deref(),
        Some("Once")
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a generation in flight is not started again for the same conversation"
    );
}

// ---------------------------------------------------------------------------
// Faults from the store

#[tokio::test]
async fn an_unavailable_store_is_reported_as_transient() {
    let mut store = MockFaultyStore::new();
    store
        .expect_append_messages()
        .times(1)
        .returning(|_, _, _| Err(unavailable()));
    let service = Conversations::new(Arc::new(store));
    let result = service
        .append_user(&scope(), ConversationId::new(), "hello")
        .await;
    match result {
        Err(error) => {
            assert!(error.is_transient(), "{error:?}");
            assert_eq!(error.code(), "unavailable");
        }
        Ok(appended) => panic!("a failed store cannot acknowledge: {appended:?}"),
    }
}

#[tokio::test]
async fn the_first_question_titles_the_conversation_in_its_own_append() {
    // One write, not two: the heuristic title rides on the append as a hint, and no
    // separate title write follows (the mock refuses any call it does not expect).
    let mut store = MockFaultyStore::new();
    store
        .expect_append_messages()
        .times(1)
        .withf(|_, _, append| append.title_hint.as_deref() == Some("first question"))
        .returning(|_, _, append| Err(Error::invalid("test", format!("{:?}", append.title_hint))));
    let service = Conversations::new(Arc::new(store));
    let result = service
        .append_user(&scope(), ConversationId::new(), "first question")
        .await;
    assert!(
        matches!(result, Err(Error::InvalidInput { .. })),
        "{result:?}"
    );
    // A batch without user text carries no hint.
    let mut store = MockFaultyStore::new();
    store
        .expect_append_messages()
        .times(1)
        .withf(|_, _, append| append.title_hint.is_none())
        .returning(|_, _, _| Err(unavailable()));
    let service = Conversations::new(Arc::new(store));
    let result = service
        .append(
            &scope(),
            ConversationId::new(),
            vec![NewMessage::system("Be terse.")],
        )
        .await;
    assert!(
        matches!(result, Err(Error::Unavailable { .. })),
        "{result:?}"
    );
}

// ---------------------------------------------------------------------------
// Context, open and the reply stream

#[tokio::test]
async fn context_is_the_last_twenty_and_never_splits_a_tool_call() {
    let service = Conversations::new(memory());
    let chat = new_chat(&service).await;
    let mut batch: Vec<NewMessage> = (0..30)
        .map(|i| {
            if i % 2 == 0 {
                NewMessage::user(format!("q{i}"))
            } else {
                NewMessage::assistant(format!("a{i}"))
            }
        })
        .collect();
    service
        .append(&scope(), chat.id, batch.split_off(0))
        .await
        .unwrap();
    let context = service.context(&scope(), chat.id).await.unwrap();
    assert_eq!(context.len(), 20);
    assert_eq!(context[0].seq, 11);
    assert_eq!(context[19].seq, 30);

    // An assistant call with 25 results: the newest turn is sent whole.
    let calls = (0..25)
        .map(|i| ToolCall {
            id: format!("call_{i}"),
            name: "run_sql".into(),
            arguments: json!({"sql": format!("select {i}")}),
        })
        .collect();
    let mut turn = vec![NewMessage::assistant("").with_tool_calls(calls)];
    turn.extend((0..25).map(|i| NewMessage::tool(format!("call_{i}"), format!("{i}"))));
    service.append(&scope(), chat.id, turn).await.unwrap();
    let context = service.context(&scope(), chat.id).await.unwrap();
    assert_eq!(context.len(), 26);
    assert_eq!(context[0].tool_calls.len(), 25);
    assert!(context[1..].iter().all(|m| m.role == Role::Tool));

    let small = Conversations::builder(memory())
        .context_policy(ContextPolicy::new(3).unwrap())
        .build();
    let chat = new_chat(&small).await;
    small
        .append(
            &scope(),
            chat.id,
            vec![
                NewMessage::user("q"),
                NewMessage::assistant("").with_tool_calls(vec![ToolCall {
                    id: "c".into(),
                    name: "f".into(),
                    arguments: json!({}),
                }]),
                NewMessage::tool("c", "r1"),
                NewMessage::tool("c", "r2"),
                NewMessage::assistant("done"),
            ],
        )
        .await
        .unwrap();
    let context = small.context(&scope(), chat.id).await.unwrap();
    assert_eq!(
        context
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        vec!["done"],
        "a window never starts on an orphan tool result"
    );
}

#[tokio::test]
async fn open_returns_the_conversation_and_its_newest_page() {
    let service = Conversations::builder(memory()).open_page_size(10).build();
    let chat = new_chat(&service).await;
    let batch = (0..25).map(|i| NewMessage::user(format!("m{i}"))).collect();
    service.append(&scope(), chat.id, batch).await.unwrap();
    let open = service.open(&scope(), chat.id).await.unwrap();
    assert_eq!(open.conversation.message_count, 25);
    assert_eq!(open.messages.items.len(), 10);
    assert_eq!(open.messages.items[0].seq, 16);
    assert!(open.messages.has_more);
    let other = Scope::new("connection-2").unwrap();
    assert!(matches!(
        service.open(&other, chat.id).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn without_a_generator_the_heuristic_title_stays_labelled_heuristic() {
    let service = Conversations::new(memory());
    let titled = asked_and_answered(&service, "Disk usage by table", "Here it is.").await;
    assert_eq!(titled.title.as_deref(), Some("Disk usage by table"));
    assert_eq!(titled.title_source, TitleSource::Heuristic);

    // An explicit request sets the heuristic title where there is none yet.
    let untitled = new_chat(&service).await;
    service
        .append(
            &scope(),
            untitled.id,
            vec![NewMessage::system("You are terse.")],
        )
        .await
        .unwrap();
    assert!(matches!(
        service.generate_title(&scope(), untitled.id).await,
        Err(Error::InvalidInput { .. })
    ));
    let kept = service.generate_title(&scope(), titled.id).await.unwrap();
    assert!(!kept.applied, "a heuristic title is not replaced by itself");
}

#[tokio::test]
async fn shutdown_waits_for_pending_titles() {
    #[derive(Debug)]
    struct Slow;
    #[async_trait]
    impl TitleGenerator for Slow {
        async fn generate_title(&self, _: &[Message]) -> Result<String> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok("Written before shutdown returns".to_owned())
        }
    }
    let service = Conversations::builder(memory())
        .title_generator(Arc::new(Slow))
        .build();
    let chat = asked_and_answered(&service, "question", "answer").await;
    service.shutdown().await;
    let chat = service.get(&scope(), chat.id).await.unwrap();
    assert_eq!(
        chat.title.as_deref(),
        Some("Written before shutdown returns")
    );
    assert_eq!(chat.title_source, TitleSource::Generated);
}

#[path = "service/runs.rs"]
mod runs;
