//! Agent runs through the service: the tool loop, requires_action and continue,
//! cancel that keeps the partial answer, replay, one run at a time, shutdown.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use conversation_core::{
    Limits, ModelErrorKind, RunEvent, RunEventRecord, RunHandle, RunLimits, RunStatus,
    ToolDefinition, ToolOutput, Toolbox, Usage,
};
use futures::stream::BoxStream;
use tokio::sync::Notify;

use super::*;

/// One step of a scripted model call.
enum Step {
    Event(ReplyEvent),
    Fail(Error),
    WaitFor(Arc<Notify>),
    Hang,
}

/// A model that answers each call with the next script and keeps every request.
#[derive(Default)]
struct SequenceModel {
    scripts: Mutex<VecDeque<Vec<Step>>>,
    requests: Mutex<Vec<ChatRequest>>,
    /// Set when the stream of a call is dropped.
    dropped: Arc<AtomicBool>,
    refuse: Mutex<Option<Error>>,
}

impl std::fmt::Debug for SequenceModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SequenceModel")
    }
}

impl SequenceModel {
    fn new(scripts: Vec<Vec<Step>>) -> Arc<Self> {
        Arc::new(Self {
            scripts: Mutex::new(scripts.into()),
            ..Self::default()
        })
    }

    fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().unwrap().clone()
    }
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl ChatModel for SequenceModel {
    async fn stream_reply(&self, request: ChatRequest) -> Result<ReplyStream> {
        self.requests.lock().unwrap().push(request);
        if let Some(error) = self.refuse.lock().unwrap().take() {
            return Err(error);
        }
        let steps: VecDeque<Step> = self
            .scripts
            .lock()
            .unwrap()
            .pop_front()
            .expect("the test scripted this call")
            .into();
        let flag = DropFlag(Arc::clone(&self.dropped));
        Ok(
            stream::unfold((steps, flag), |(mut steps, flag)| async move {
                loop {
                    match steps.pop_front()? {
                        Step::Event(event) => return Some((Ok(event), (steps, flag))),
                        Step::Fail(error) => return Some((Err(error), (VecDeque::new(), flag))),
                        Step::WaitFor(notify) => notify.notified().await,
                        Step::Hang => std::future::pending::<()>().await,
                    }
                }
            })
            .boxed(),
        )
    }
}

fn text(t: &str) -> Step {
    Step::Event(ReplyEvent::Delta { text: t.into() })
}

fn done() -> Step {
    Step::Event(ReplyEvent::Finished {
        reason: FinishReason::Stop,
        usage: Some(Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
        }),
    })
}

fn call(id: &str, name: &str) -> Vec<Step> {
    vec![
        Step::Event(ReplyEvent::ToolCall {
            call: ToolCall {
                id: id.into(),
                name: name.into(),
                arguments: json!({"sql": "select 1"}),
            },
        }),
        Step::Event(ReplyEvent::Finished {
            reason: FinishReason::ToolCalls,
            usage: None,
        }),
    ]
}

/// Tools: `run_sql` answers, `broken` fails, `slow` never answers.
#[derive(Debug)]
struct Tools;

#[async_trait]
impl Toolbox for Tools {
    fn tools(&self) -> Vec<ToolDefinition> {
        ["run_sql", "broken", "slow"]
            .into_iter()
            .map(|name| ToolDefinition {
                name: name.into(),
                description: format!("the {name} tool"),
                parameters: json!({"type": "object"}),
            })
            .collect()
    }

    async fn call(&self, scope: &Scope, call: &ToolCall) -> ToolOutput {
        match call.name.as_str() {
            "run_sql" => ToolOutput::ok(format!("1 row in {scope}")),
            "broken" => ToolOutput::error("no such table: nope"),
            _ => std::future::pending().await,
        }
    }
}

fn service_with(model: Arc<SequenceModel>, toolbox: bool, limits: RunLimits) -> Conversations {
    let mut builder = Conversations::builder(memory())
        .chat_model(model)
        .run_limits(limits);
    if toolbox {
        builder = builder.toolbox(Arc::new(Tools));
    }
    builder.build()
}

async fn all(handle: RunHandle) -> Vec<RunEventRecord> {
    handle.events.collect().await
}

fn names(events: &[RunEventRecord]) -> Vec<&'static str> {
    events
        .iter()
        .map(|record| match &record.event {
            RunEvent::Started { .. } => "started",
            RunEvent::Message { message, .. } => match message.role {
                Role::User => "user",
                Role::Tool => "tool",
                _ if message.tool_calls.is_empty() => "assistant",
                _ => "calls",
            },
            RunEvent::Delta { .. } => "delta",
            RunEvent::ToolCall { .. } => "toolCall",
            RunEvent::Finished { .. } => "finished",
            _ => "other",
        })
        .collect()
}

fn finished_run(events: &[RunEventRecord]) -> (conversation_core::Run, Conversation) {
    match &events.last().expect("events").event {
        RunEvent::Finished { run, conversation } => (run.clone(), conversation.clone()),
        other => panic!("the last event is not Finished: {other:?}"),
    }
}

async fn stored(service: &Conversations, id: ConversationId) -> Vec<Message> {
    service
        .messages(&scope(), id, &MessageQuery::after(0).limit(200))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn a_run_streams_stores_its_answer_and_sums_usage() {
    let model = SequenceModel::new(vec![vec![text("Orders "), text("is largest."), done()]]);
    let service = service_with(model, false, RunLimits::default());
    let chat = new_chat(&service).await;
    let handle = service
        .start_run(
            &scope(),
            chat.id,
            ReplyRequest::ask(NewMessage::user("Largest table?")),
        )
        .await
        .unwrap();
    assert_eq!(handle.run.status, RunStatus::Running);
    let events = all(handle).await;
    assert_eq!(
        names(&events),
        ["started", "user", "delta", "delta", "assistant", "finished"]
    );
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=6).collect::<Vec<_>>());
    let (run, conversation) = finished_run(&events);
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.steps, 1);
    assert_eq!(run.usage.total_tokens, 15);
    assert_eq!(conversation.usage.total_tokens, 15);
    assert_eq!(conversation.active_run_id, None);
    assert_eq!(conversation.title.as_deref(), Some("Largest table?"));
    let messages = stored(&service, chat.id).await;
    assert_eq!(messages[1].content, "Orders is largest.");
    assert_eq!(messages[1].parent_id, Some(messages[0].id));
}

#[tokio::test]
async fn the_tool_loop_runs_tools_and_asks_the_model_again() {
    let model = SequenceModel::new(vec![
        call("call_1", "run_sql"),
        vec![text("There is 1 row."), done()],
    ]);
    let service = service_with(model.clone(), true, RunLimits::default());
    let chat = new_chat(&service).await;
    let events = all(service
        .start_run(
            &scope(),
            chat.id,
            ReplyRequest::ask(NewMessage::user("Count?")),
        )
        .await
        .unwrap())
    .await;
    assert_eq!(
        names(&events),
        [
            "started",
            "user",
            "toolCall",
            "calls",
            "tool",
            "delta",
            "assistant",
            "finished"
        ]
    );
    let (run, _) = finished_run(&events);
    assert_eq!((run.status, run.steps), (RunStatus::Completed, 2));
    let requests = model.requests();
    assert_eq!(
        requests[0].tools.len(),
        3,
        "the toolbox's tools are offered"
    );
    let second: Vec<Role> = requests[1].messages.iter().map(|m| m.role).collect();
    assert_eq!(second, [Role::User, Role::Assistant, Role::Tool]);
    assert_eq!(requests[1].messages[2].content, "1 row in connection-1");
    assert!(
        requests[1].start_deadline.is_some(),
        "every call has a budget"
    );
}

#[tokio::test]
async fn a_failing_or_hanging_tool_gives_the_model_an_error_to_read() {
    let model = SequenceModel::new(vec![
        vec![
            Step::Event(ReplyEvent::ToolCall {
                call: ToolCall {
                    id: "a".into(),
                    name: "broken".into(),
                    arguments: json!({}),
                },
            }),
            Step::Event(ReplyEvent::ToolCall {
                call: ToolCall {
                    id: "b".into(),
                    name: "slow".into(),
                    arguments: json!({}),
                },
            }),
            done(),
        ],
        vec![text("Both tools failed."), done()],
    ]);
    let mut limits = RunLimits::default();
    limits.tool_timeout = Duration::from_millis(50);
    let service = service_with(model, true, limits);
    let chat = new_chat(&service).await;
    let events = all(service
        .start_run(
            &scope(),
            chat.id,
            ReplyRequest::ask(NewMessage::user("Try")),
        )
        .await
        .unwrap())
    .await;
    assert_eq!(finished_run(&events).0.status, RunStatus::Completed);
    let results: Vec<Message> = stored(&service, chat.id)
        .await
        .into_iter()
        .filter(|m| m.role == Role::Tool)
        .collect();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|m| m.metadata["isError"] == json!(true)));
    assert!(results[0].content.contains("no such table"));
    assert!(results[1].content.contains("did not answer"));
}

#[tokio::test]
async fn the_step_limit_ends_a_run_that_keeps_calling_tools() {
    let model = SequenceModel::new(vec![call("c1", "run_sql"), call("c2", "run_sql")]);
    let mut limits = RunLimits::default();
    limits.max_steps = 2;
    let service = service_with(model, true, limits);
    let chat = new_chat(&service).await;
    let events = all(service
        .start_run(
            &scope(),
            chat.id,
            ReplyRequest::ask(NewMessage::user("Loop")),
        )
        .await
        .unwrap())
    .await;
    let (run, _) = finished_run(&events);
    assert_eq!((run.status, run.steps), (RunStatus::Failed, 2));
    assert_eq!(run.error.unwrap().code, "step_limit");
}

#[tokio::test]
async fn a_client_tool_requires_action_and_continue_answers_after_its_result() {
    let model = SequenceModel::new(vec![
        call("call_7", "client_tool"),
        vec![text("Thanks, done."), done()],
    ]);
    let service = service_with(model.clone(), false, RunLimits::default());
    let chat = new_chat(&service).await;
    let request =
        ReplyRequest::ask(NewMessage::user("Use your tool")).with_tools(vec![ToolDefinition {
            name: "client_tool".into(),
            description: "runs in the browser".into(),
            parameters: json!({"type": "object"}),
        }]);
    let events = all(service.start_run(&scope(), chat.id, request).await.unwrap()).await;
    let (run, conversation) = finished_run(&events);
    assert_eq!(run.status, RunStatus::RequiresAction);
    assert_eq!(run.pending_tool_calls[0].id, "call_7");
    assert_eq!(conversation.active_run_id, None, "the next run may start");

    // Continue with nothing while the head is the call: refused, nothing started.
    let refused = service
        .start_run(&scope(), chat.id, ReplyRequest::default())
        .await;
    assert!(
        matches!(&refused, Err(Error::InvalidInput { field, .. }) if field == "content"),
        "{refused:?}"
    );
    // The client stores the result and continues.
    service
        .append_tool_result(&scope(), chat.id, "call_7", "ok")
        .await
        .unwrap();
    let events = all(service
        .start_run(&scope(), chat.id, ReplyRequest::default())
        .await
        .unwrap())
    .await;
    assert_eq!(
        names(&events)[1],
        "tool",
        "the run answers from the stored result"
    );
    assert_eq!(finished_run(&events).0.status, RunStatus::Completed);
    let context: Vec<Role> = model.requests()[1]
        .messages
        .iter()
        .map(|m| m.role)
        .collect();
    assert_eq!(context, [Role::User, Role::Assistant, Role::Tool]);
}

#[tokio::test]
async fn a_call_left_unanswered_is_never_sent_again() {
    let model = SequenceModel::new(vec![
        call("call_1", "client_tool"),
        vec![text("Fine."), done()],
    ]);
    let service = service_with(model.clone(), false, RunLimits::default());
    let chat = new_chat(&service).await;
    all(service
        .start_run(
            &scope(),
            chat.id,
            ReplyRequest::ask(NewMessage::user("First")),
        )
        .await
        .unwrap())
    .await;
    // The user asks something else instead of answering the call.
    all(service
        .start_run(
            &scope(),
            chat.id,
            ReplyRequest::ask(NewMessage::user("Never mind")),
        )
        .await
        .unwrap())
    .await;
    let context = &model.requests()[1].messages;
    assert!(
        context.iter().all(|m| m.tool_calls.is_empty()),
        "the dangling call is left out: {context:?}"
    );
    assert_eq!(context.last().unwrap().content, "Never mind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_starts_at_once_one_wins_and_the_other_stores_nothing() {
    let gate = Arc::new(Notify::new());
    let model = SequenceModel::new(vec![vec![Step::WaitFor(gate.clone()), text("a"), done()]]);
    let service = service_with(model, false, RunLimits::default());
    let chat = new_chat(&service).await;
    let start = |question: &'static str| {
        let service = service.clone();
        async move {
            service
                .start_run(
                    &scope(),
                    chat.id,
                    ReplyRequest::ask(NewMessage::user(question)),
                )
                .await
        }
    };
    let (a, b) = tokio::join!(start("one"), start("two"));
    let (winner, loser) = match (a, b) {
        (Ok(handle), Err(error)) | (Err(error), Ok(handle)) => (handle, error),
        (a, b) => panic!("exactly one start wins: {a:?} {b:?}"),
    };
    assert!(matches!(loser, Error::RunInProgress { run_id } if run_id == winner.run.id));
    assert_eq!(loser.code(), "run_in_progress");
    assert_eq!(
        stored(&service, chat.id).await.len(),
        1,
        "the loser stored nothing"
    );
    gate.notify_one();
    assert_eq!(
        finished_run(&all(winner).await).0.status,
        RunStatus::Completed
    );
}

#[tokio::test]
async fn cancel_stops_the_model_at_once_and_keeps_the_partial_answer() {
    let model = SequenceModel::new(vec![vec![text("Hello wor"), Step::Hang]]);
    let service = service_with(model.clone(), false, RunLimits::default());
    let chat = new_chat(&service).await;
    let handle = service
        .start_run(&scope(), chat.id, ReplyRequest::ask(NewMessage::user("Hi")))
        .await
        .unwrap();
    let run = handle.run.id;
    let mut events = handle.events;
    while let Some(record) = events.next().await {
        if matches!(record.event, RunEvent::Delta { .. }) {
            break;
        }
    }
    service.cancel_run(&scope(), chat.id, run).await.unwrap();
    let rest: Vec<RunEventRecord> = events.collect().await;
    assert_eq!(names(&rest), ["assistant", "finished"]);
    assert_eq!(finished_run(&rest).0.status, RunStatus::Cancelled);
    assert!(
        model.dropped.load(Ordering::SeqCst),
        "the upstream stream was dropped"
    );
    let answer = &stored(&service, chat.id).await[1];
    assert_eq!(answer.content, "Hello wor");
    assert_eq!(answer.metadata["finishReason"], json!("cancelled"));
    // Cancelling a run that has ended is refused, and changes nothing.
    let again = service.cancel_run(&scope(), chat.id, run).await;
    assert!(matches!(&again, Err(Error::InvalidInput { field, .. }) if field == "runId"));
    // A run id of another scope is not found.
    let elsewhere = Scope::new("elsewhere").unwrap();
    assert!(matches!(
        service.cancel_run(&elsewhere, chat.id, run).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_stream_that_fails_keeps_its_partial_answer_marked_error() {
    let model = SequenceModel::new(vec![vec![
        text("Partial"),
        Step::Fail(Error::model(
            ModelErrorKind::Unavailable,
            "the provider is down",
        )),
    ]]);
    let service = service_with(model, false, RunLimits::default());
    let chat = new_chat(&service).await;
    let events = all(service
        .start_run(&scope(), chat.id, ReplyRequest::ask(NewMessage::user("Hi")))
        .await
        .unwrap())
    .await;
    let (run, _) = finished_run(&events);
    assert_eq!(run.status, RunStatus::Failed);
    let failure = run.error.unwrap();
    assert_eq!(failure.code, "upstream_unavailable");
    assert_eq!(failure.message, "the provider is down");
    let answer = &stored(&service, chat.id).await[1];
    assert_eq!(
        (answer.content.as_str(), &answer.metadata["finishReason"]),
        ("Partial", &json!("error"))
    );
}

#[tokio::test]
async fn a_model_refusing_to_start_fails_the_run_and_keeps_the_question() {
    let model = SequenceModel::new(vec![]);
    *model.refuse.lock().unwrap() = Some(Error::model(
        ModelErrorKind::Unauthorized,
        "check the API key",
    ));
    let service = service_with(model, false, RunLimits::default());
    let chat = new_chat(&service).await;
    let events = all(service
        .start_run(&scope(), chat.id, ReplyRequest::ask(NewMessage::user("Hi")))
        .await
        .unwrap())
    .await;
    assert_eq!(names(&events), ["started", "user", "finished"]);
    assert_eq!(
        finished_run(&events).0.error.unwrap().code,
        "upstream_unauthorized"
    );
    assert_eq!(stored_roles(&service, chat.id).await, [Role::User]);
}

#[tokio::test]
async fn a_store_refusing_the_answer_fails_the_run_and_keeps_the_question() {
    let model = SequenceModel::new(vec![vec![text(&"x".repeat(64)), done()]]);
    let store = Arc::new(MemoryStore::with_limits(Limits {
        max_content_bytes: 32,
        ..Limits::default()
    }));
    let service = Conversations::builder(store).chat_model(model).build();
    let chat = new_chat(&service).await;
    let events = all(service
        .start_run(&scope(), chat.id, ReplyRequest::ask(NewMessage::user("Hi")))
        .await
        .unwrap())
    .await;
    let (run, conversation) = finished_run(&events);
    assert_eq!(
        (run.status, run.error.unwrap().code.as_str()),
        (RunStatus::Failed, "invalid_input")
    );
    assert_eq!(conversation.active_run_id, None);
    assert_eq!(stored_roles(&service, chat.id).await, [Role::User]);
}

#[tokio::test]
async fn dropping_a_reply_stream_stops_its_run() {
    let model = SequenceModel::new(vec![vec![text("thinking"), Step::Hang]]);
    let service = service_with(model, false, RunLimits::default());
    let chat = new_chat(&service).await;
    let mut handle = service
        .reply(&scope(), chat.id, ReplyRequest::ask(NewMessage::user("q")))
        .await
        .unwrap();
    let run = handle.run.id;
    while let Some(record) = handle.events.next().await {
        if matches!(record.event, RunEvent::Delta { .. }) {
            break;
        }
    }
    drop(handle);
    let mut status = RunStatus::Running;
    for _ in 0..100 {
        status = service
            .get_run(&scope(), chat.id, run)
            .await
            .unwrap()
            .status;
        if status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, RunStatus::Cancelled);
    assert_eq!(stored(&service, chat.id).await[1].content, "thinking");
}

#[tokio::test]
async fn events_replay_from_any_id_while_the_run_is_remembered() {
    let model = SequenceModel::new(vec![vec![text("a"), text("b"), done()]]);
    let service = service_with(model, false, RunLimits::default());
    let chat = new_chat(&service).await;
    let handle = service
        .start_run(&scope(), chat.id, ReplyRequest::ask(NewMessage::user("q")))
        .await
        .unwrap();
    let run = handle.run.id;
    let everything = all(handle).await;
    let replayed: Vec<RunEventRecord> = service
        .run_events(&scope(), chat.id, run, 3)
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(
        replayed,
        everything[3..].to_vec(),
        "exactly the events after 3"
    );
    let other = new_chat(&service).await;
    assert!(matches!(
        service.run_events(&scope(), other.id, run, 0).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn shutdown_stops_runs_and_keeps_their_partial_answers() {
    let model = SequenceModel::new(vec![vec![text("half an answer"), Step::Hang]]);
    let service = service_with(model, false, RunLimits::default());
    let chat = new_chat(&service).await;
    let handle = service
        .start_run(&scope(), chat.id, ReplyRequest::ask(NewMessage::user("q")))
        .await
        .unwrap();
    let mut events: BoxStream<'static, RunEventRecord> = handle.events;
    while let Some(record) = events.next().await {
        if matches!(record.event, RunEvent::Delta { .. }) {
            break;
        }
    }
    service.shutdown().await;
    let run = service
        .get_run(&scope(), chat.id, handle.run.id)
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(stored(&service, chat.id).await[1].content, "half an answer");
    assert_eq!(
        service.get(&scope(), chat.id).await.unwrap().active_run_id,
        None
    );
}

#[tokio::test]
async fn edit_switch_fork_and_regenerate_through_the_service() {
    let model = SequenceModel::new(vec![vec![text("again"), done()]]);
    let service = service_with(model.clone(), false, RunLimits::default());
    let chat = new_chat(&service).await;
    let q = service
        .append_user(&scope(), chat.id, "first")
        .await
        .unwrap()
        .messages[0]
        .clone();
    let a = service
        .append_assistant(&scope(), chat.id, "answer")
        .await
        .unwrap()
        .messages[0]
        .clone();

    // Edit: a new version of the question, now the head; the old one is a sibling.
    let edited = service
        .edit(&scope(), chat.id, q.id, NewMessage::user("first, edited"))
        .await
        .unwrap();
    let q2 = &edited.messages[0];
    assert_eq!(q2.parent_id, None);
    assert_eq!(q2.siblings.ids, vec![q.id, q2.id]);

    // Switch back: the head goes to the newest leaf under the old question.
    let switched = service
        .switch_branch(&scope(), chat.id, q.id)
        .await
        .unwrap();
    assert_eq!(switched.head_id, Some(a.id));

    // Regenerate: the model sees the path to the question only; the new answer is a
    // sibling of the old one.
    let events = all(service
        .reply(&scope(), chat.id, ReplyRequest::regenerate(q.id))
        .await
        .unwrap())
    .await;
    let RunEvent::Message { message: first, .. } = &events[1].event else {
        panic!("{events:?}");
    };
    assert_eq!(first.id, q.id, "the question is not stored again");
    let a2 = stored(&service, chat.id)
        .await
        .into_iter()
        .find(|m| m.content == "again")
        .unwrap();
    assert_eq!(a2.parent_id, Some(q.id));
    assert_eq!(a2.siblings.count, 2);
    let seen: Vec<MessageId> = model.requests()[0].messages.iter().map(|m| m.id).collect();
    assert_eq!(seen, vec![q.id]);

    // Fork at the first answer: a new conversation with the path up to it.
    let fork = service.fork(&scope(), chat.id, a.id).await.unwrap();
    let copied = service.context(&scope(), fork.id).await.unwrap();
    assert_eq!(
        copied.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![q.id, a.id]
    );

    // Delete the regenerated answer: the head goes back to the first one.
    let after = service
        .delete_message(&scope(), chat.id, a2.id, None)
        .await
        .unwrap();
    assert_eq!(after.head_id, Some(a.id));

    // Regenerating an answer (not a question) is refused.
    let refused = service
        .reply(&scope(), chat.id, ReplyRequest::regenerate(a.id))
        .await;
    assert!(matches!(&refused, Err(Error::InvalidInput { field, .. }) if field == "parentId"));
}

#[tokio::test]
async fn a_reply_without_a_configured_model_is_refused_and_stores_nothing() {
    let service = Conversations::new(memory());
    let chat = new_chat(&service).await;
    let refused = service
        .reply(
            &scope(),
            chat.id,
            ReplyRequest::ask(NewMessage::user("hello")),
        )
        .await;
    assert!(
        matches!(&refused, Err(Error::Backend { message, .. }) if message.contains("chat_model")),
        "{refused:?}"
    );
    assert!(stored_roles(&service, chat.id).await.is_empty());
}
