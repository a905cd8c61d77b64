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
    Appended, ChatModel, ChatRequest, ContextPolicy, Conversation, ConversationId,
    ConversationPatch, ConversationQuery, Conversations, Error, FinishReason, Message, MessagePage,
    MessageQuery, NewConversation, NewMessage, Page, ReplyEvent, ReplyProgress, ReplyStream,
    Result, Role, Scope, Store, TitleGenerator, TitleOutcome, TitleSource, ToolCall,
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
        async fn delete_conversation(&self, scope: &Scope, id: ConversationId) -> Result<()>;
        async fn append_messages(&self, scope: &Scope, id: ConversationId, messages: Vec<NewMessage>, expected_version: Option<u64>) -> Result<Appended>;
        async fn list_messages(&self, scope: &Scope, id: ConversationId, query: &MessageQuery) -> Result<MessagePage>;
        async fn recent_messages(&self, scope: &Scope, id: ConversationId, n: usize) -> Result<Vec<Message>>;
        async fn set_title_unless_user(&self, scope: &Scope, id: ConversationId, title: String, source: TitleSource) -> Result<TitleOutcome>;
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

/// A model that plays back a script, optionally never ending after it.
#[derive(Debug)]
struct ScriptedModel {
    script: Vec<Result<ReplyEvent>>,
    hang_after: bool,
    requests: AtomicUsize,
    last_context: std::sync::Mutex<Vec<Message>>,
}

impl ScriptedModel {
    fn new(script: Vec<Result<ReplyEvent>>) -> Arc<Self> {
        Arc::new(Self {
            script,
            hang_after: false,
            requests: AtomicUsize::new(0),
            last_context: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn hanging(script: Vec<Result<ReplyEvent>>) -> Arc<Self> {
        Arc::new(Self {
            hang_after: true,
            ..Arc::into_inner(Self::new(script)).unwrap()
        })
    }
}

#[async_trait]
impl ChatModel for ScriptedModel {
    async fn stream_reply(&self, request: ChatRequest) -> Result<ReplyStream> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        *self.last_context.lock().unwrap() = request.messages;
        let events = self
            .script
            .iter()
            .map(|event| match event {
                Ok(event) => Ok(event.clone()),
                Err(error) => Err(Error::unavailable(error.to_string(), "scripted")),
            })
            .collect::<Vec<_>>();
        let played = stream::iter(events);
        Ok(if self.hang_after {
            played.chain(stream::pending()).boxed()
        } else {
            played.boxed()
        })
    }
}

fn delta(text: &str) -> Result<ReplyEvent> {
    Ok(ReplyEvent::Delta { text: text.into() })
}

fn finished() -> Result<ReplyEvent> {
    Ok(ReplyEvent::Finished {
        reason: FinishReason::Stop,
        usage: None,
    })
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
        .returning(|_, _, _, _| Err(unavailable()));
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
async fn a_failing_title_write_does_not_fail_the_append() {
    let chat = Conversation {
        id: ConversationId::new(),
        scope: scope(),
        title: None,
        title_source: TitleSource::None,
        created_at: conversation_core::now(),
        updated_at: conversation_core::now(),
        message_count: 1,
        pinned: false,
        archived: false,
        metadata: Default::default(),
        version: 2,
    };
    let stored = NewMessage::user("first question").into_message(chat.id, 1, chat.updated_at);
    let appended = Appended {
        conversation: chat.clone(),
        messages: vec![stored],
    };
    let mut store = MockFaultyStore::new();
    store
        .expect_append_messages()
        .times(1)
        .returning(move |_, _, _, _| Ok(appended.clone()));
    store
        .expect_set_title_unless_user()
        .times(1)
        .withf(|_, _, title, source| title == "first question" && *source == TitleSource::Heuristic)
        .returning(|_, _, _, _| Err(unavailable()));
    let service = Conversations::new(Arc::new(store));
    let result = service
        .append_user(&scope(), chat.id, "first question")
        .await
        .expect("the message is stored; the title is best effort");
    assert_eq!(result.messages[0].content, "first question");
    assert_eq!(result.conversation.title, None);
}

#[tokio::test]
async fn a_store_failing_on_the_reply_write_reports_it_and_keeps_the_user_message() {
    #[derive(Debug)]
    struct FailAssistantAppends(MemoryStore);
    // Delegates to a real store, failing only assistant appends: the fault is forced
    // into the reply's final write.
    #[async_trait]
    impl Store for FailAssistantAppends {
        async fn create_conversation(&self, s: &Scope, n: NewConversation) -> Result<Conversation> {
            self.0.create_conversation(s, n).await
        }
        async fn get_conversation(&self, s: &Scope, id: ConversationId) -> Result<Conversation> {
            self.0.get_conversation(s, id).await
        }
        async fn list_conversations(
            &self,
            s: &Scope,
            q: &ConversationQuery,
        ) -> Result<Page<Conversation>> {
            self.0.list_conversations(s, q).await
        }
        async fn update_conversation(
            &self,
            s: &Scope,
            id: ConversationId,
            p: ConversationPatch,
        ) -> Result<Conversation> {
            self.0.update_conversation(s, id, p).await
        }
        async fn delete_conversation(&self, s: &Scope, id: ConversationId) -> Result<()> {
            self.0.delete_conversation(s, id).await
        }
        async fn append_messages(
            &self,
            s: &Scope,
            id: ConversationId,
            m: Vec<NewMessage>,
            v: Option<u64>,
        ) -> Result<Appended> {
            if m.iter().any(|m| m.role == Role::Assistant) {
                return Err(unavailable());
            }
            self.0.append_messages(s, id, m, v).await
        }
        async fn list_messages(
            &self,
            s: &Scope,
            id: ConversationId,
            q: &MessageQuery,
        ) -> Result<MessagePage> {
            self.0.list_messages(s, id, q).await
        }
        async fn recent_messages(
            &self,
            s: &Scope,
            id: ConversationId,
            n: usize,
        ) -> Result<Vec<Message>> {
            self.0.recent_messages(s, id, n).await
        }
        async fn set_title_unless_user(
            &self,
            s: &Scope,
            id: ConversationId,
            t: String,
            src: TitleSource,
        ) -> Result<TitleOutcome> {
            self.0.set_title_unless_user(s, id, t, src).await
        }
    }
    let model: Arc<dyn ChatModel> = ScriptedModel::new(vec![delta("fine"), finished()]);
    let service = Conversations::builder(Arc::new(FailAssistantAppends(MemoryStore::new())))
        .chat_model(model)
        .build();
    let chat = new_chat(&service).await;
    let reply = service
        .reply(&scope(), chat.id, NewMessage::user("q"), vec![])
        .await
        .unwrap();
    let items: Vec<_> = reply.events.collect().await;
    assert!(
        matches!(items.last(), Some(Err(e)) if e.is_transient()),
        "{items:?}"
    );
    assert_eq!(stored_roles(&service, chat.id).await, vec![Role::User]);
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
async fn a_reply_streams_then_stores_the_assistant_message_and_titles() {
    let mut titles = MockTitles::new();
    titles
        .expect_generate_title()
        .times(1)
        .returning(|_| Ok("Largest tables".to_owned()));
    let call = ToolCall {
        id: "call_1".into(),
        name: "run_sql".into(),
        arguments: json!({"sql": "select 1"}),
    };
    let scripted = ScriptedModel::new(vec![
        delta("Checking"),
        delta("…"),
        Ok(ReplyEvent::ToolCall { call: call.clone() }),
        Ok(ReplyEvent::Finished {
            reason: FinishReason::ToolCalls,
            usage: None,
        }),
    ]);
    let model: Arc<dyn ChatModel> = scripted.clone();
    let service = Conversations::builder(memory())
        .title_generator(Arc::new(titles))
        .chat_model(model)
        .build();
    let chat = new_chat(&service).await;
    service
        .append(
            &scope(),
            chat.id,
            vec![NewMessage::system("You are terse.")],
        )
        .await
        .unwrap();
    let reply = service
        .reply(
            &scope(),
            chat.id,
            NewMessage::user("Largest tables?"),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(reply.user.messages[0].seq, 2);
    assert_eq!(
        reply.user.conversation.title.as_deref(),
        Some("Largest tables?")
    );
    let items: Vec<ReplyProgress> = reply.events.map(|item| item.unwrap()).collect().await;
    assert_eq!(items.len(), 5);
    assert!(
        matches!(&items[0], ReplyProgress::Model(ReplyEvent::Delta { text }) if text == "Checking")
    );
    let ReplyProgress::Stored(stored) = &items[4] else {
        panic!("the last item is the stored reply: {items:?}");
    };
    let assistant = &stored.messages[0];
    assert_eq!(assistant.seq, 3);
    assert_eq!(assistant.content, "Checking…");
    assert_eq!(assistant.tool_calls, vec![call]);
    assert_eq!(assistant.metadata["finishReason"], json!("tool_calls"));
    let context = scripted.last_context.lock().unwrap().clone();
    assert_eq!(
        context.iter().map(|m| m.role).collect::<Vec<_>>(),
        vec![Role::System, Role::User],
        "the model saw the window, user message included"
    );
    service.wait_for_titles().await;
    assert_eq!(
        service
            .get(&scope(), chat.id)
            .await
            .unwrap()
            .title
            .as_deref(),
        Some("Largest tables")
    );
}

#[tokio::test]
async fn a_failed_or_cut_off_reply_stores_nothing_of_it() {
    let cases: Vec<(&str, Arc<ScriptedModel>)> = vec![
        (
            "error mid-stream",
            ScriptedModel::new(vec![
                delta("partial"),
                Err(Error::unavailable("upstream reset", "x")),
                delta("never"),
                finished(),
            ]),
        ),
        ("stream cut off", ScriptedModel::new(vec![delta("partial")])),
    ];
    for (case, scripted) in cases {
        let service = Conversations::builder(memory())
            .chat_model(scripted)
            .build();
        let chat = new_chat(&service).await;
        let reply = service
            .reply(&scope(), chat.id, NewMessage::user("q"), vec![])
            .await
            .unwrap();
        let items: Vec<_> = reply.events.collect().await;
        assert!(
            matches!(items.last(), Some(Err(e)) if e.is_transient()),
            "{case}: {items:?}"
        );
        assert!(
            !items
                .iter()
                .any(|i| matches!(i, Ok(ReplyProgress::Stored(_)))),
            "{case}"
        );
        assert_eq!(
            stored_roles(&service, chat.id).await,
            vec![Role::User],
            "{case}"
        );
    }
}

#[tokio::test]
async fn dropping_the_reply_stream_cancels_it_and_stores_nothing() {
    let store = memory();
    let service = Conversations::builder(store.clone())
        .chat_model(ScriptedModel::hanging(vec![delta("thinking")]))
        .build();
    let chat = new_chat(&service).await;
    let mut reply = service
        .reply(&scope(), chat.id, NewMessage::user("q"), vec![])
        .await
        .unwrap();
    let first = reply.events.next().await.unwrap().unwrap();
    assert!(matches!(
        first,
        ReplyProgress::Model(ReplyEvent::Delta { .. })
    ));
    drop(reply);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(stored_roles(&service, chat.id).await, vec![Role::User]);
    // The conversation stays usable.
    let service = Conversations::builder(store)
        .chat_model(ScriptedModel::new(vec![delta("ok"), finished()]))
        .build();
    let reply = service
        .reply(&scope(), chat.id, NewMessage::user("again"), vec![])
        .await
        .unwrap();
    let items: Vec<_> = reply.events.collect().await;
    assert!(matches!(items.last(), Some(Ok(ReplyProgress::Stored(_)))));
    assert_eq!(
        stored_roles(&service, chat.id).await,
        vec![Role::User, Role::User, Role::Assistant]
    );
}

#[tokio::test]
async fn a_model_that_refuses_to_start_leaves_the_user_message_stored() {
    #[derive(Debug)]
    struct Refusing;
    #[async_trait]
    impl ChatModel for Refusing {
        async fn stream_reply(&self, _: ChatRequest) -> Result<ReplyStream> {
            Err(Error::Backend {
                message: "invalid API key".into(),
                source: None,
            })
        }
    }
    let service = Conversations::builder(memory())
        .chat_model(Arc::new(Refusing))
        .build();
    let chat = new_chat(&service).await;
    let result = service
        .reply(&scope(), chat.id, NewMessage::user("hello"), vec![])
        .await;
    assert!(matches!(result, Err(Error::Backend { .. })));
    assert_eq!(stored_roles(&service, chat.id).await, vec![Role::User]);
    assert!(matches!(
        service
            .reply(&scope(), chat.id, NewMessage::assistant("x"), vec![])
            .await,
        Err(Error::InvalidInput { .. })
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
async fn a_reply_without_a_configured_model_is_refused_and_stores_nothing() {
    let service = Conversations::new(memory());
    let chat = new_chat(&service).await;
    let refused = service
        .reply(&scope(), chat.id, NewMessage::user("hello"), vec![])
        .await;
    assert!(
        matches!(&refused, Err(Error::Backend { message, .. }) if message.contains("chat_model")),
        "{refused:?}"
    );
    assert!(stored_roles(&service, chat.id).await.is_empty());
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
