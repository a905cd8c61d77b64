//! Agent runs: one turn of the model with its tool loop, detached from whoever
//! started it, with events that can be replayed and a stop that keeps what was said.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, warn};

use super::{Conversations, ReplyRequest};
use crate::{
    Append, ChatRequest, Conversation, ConversationId, Error, Message, MessageId, Metadata,
    NewMessage, NewRun, Parent, ReplyCollector, ReplyEvent, Result, Role, Run, RunFailure, RunId,
    RunOutcome, RunStatus, Scope, ToolCall, ToolDefinition, Usage,
};

/// Tools the host runs for the model: the database agent's SQL tools, say.
///
/// When the service has a toolbox ([`ConversationsBuilder::toolbox`](super::ConversationsBuilder::toolbox)),
/// a run offers its tools to the model, calls the ones the model asks for (each
/// under [`RunLimits::tool_timeout`], those of one step at once), stores their
/// results and calls the model again, up to [`RunLimits::max_steps`]. A tool that
/// fails or times out gives the model a result saying so; it never fails the run.
#[async_trait]
pub trait Toolbox: Send + Sync + Debug + 'static {
    /// The tools offered to the model.
    fn tools(&self) -> Vec<ToolDefinition>;

    /// Runs `call` for a conversation of `scope`.
    async fn call(&self, scope: &Scope, call: &ToolCall) -> ToolOutput;
}

/// What a tool returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    /// The text the model reads.
    pub content: String,
    /// Whether it is an error message (stored with `metadata.isError = true`).
    pub is_error: bool,
}

impl ToolOutput {
    /// A result.
    pub fn ok(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: false,
        }
    }

    /// An error the model should read.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            content: message.into(),
            is_error: true,
        }
    }
}

/// The bounds of runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunLimits {
    /// Model calls in one run at most. Default 8.
    pub max_steps: u32,
    /// How long one tool call may take. Default 30 s.
    pub tool_timeout: Duration,
    /// How long a model call may take to start (all its attempts and waits). Default
    /// 120 s.
    pub start_timeout: Duration,
    /// How long a run's runner vouches for it before renewing (it renews every third
    /// of it). A run whose process died is taken for abandoned after it. Default 30 s.
    pub lease: Duration,
    /// How long the events of a finished run stay replayable. Default 10 minutes.
    pub replay_for: Duration,
    /// The most bytes of one tool result stored; longer ones are cut with a note.
    /// Default 64 KiB.
    pub max_tool_output_bytes: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_steps: 8,
            tool_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(120),
            lease: Duration::from_secs(30),
            replay_for: Duration::from_secs(600),
            max_tool_output_bytes: 64 * 1024,
        }
    }
}

/// One event of a run, in order. Every run's events start with
/// [`RunEvent::Started`], then the question as stored ([`RunEvent::Message`]), and
/// end with exactly one [`RunEvent::Finished`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
#[non_exhaustive]
pub enum RunEvent {
    /// The run started (sent at once, before the model answers).
    Started {
        /// The run.
        run: Run,
    },
    /// A message stored by the run: the question, an assistant message (with tool
    /// calls, or the answer), a tool result, or a stopped answer's partial text.
    Message {
        /// The conversation after it was stored.
        conversation: Conversation,
        /// The message.
        message: Message,
    },
    /// More text of the model's answer.
    Delta {
        /// The text to add.
        text: String,
    },
    /// The model asks for a tool (stored with its assistant message when the model
    /// finishes).
    ToolCall {
        /// The call.
        call: ToolCall,
    },
    /// The run ended: its final status, usage and error, and the conversation.
    Finished {
        /// The run as it ended.
        run: Run,
        /// The conversation after it.
        conversation: Conversation,
    },
}

/// An event with its position in the run: ids are 1, 2, 3…, for SSE `id` and
/// `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEventRecord {
    /// Its position, from 1.
    pub id: u64,
    /// The event.
    pub event: RunEvent,
}

/// A started run: what it is and its events from the first.
pub struct RunHandle {
    /// The run as started.
    pub run: Run,
    /// Its events, from [`RunEvent::Started`] to [`RunEvent::Finished`]. For a run
    /// started by [`Conversations::reply`], dropping this stream stops the run;
    /// for one started by [`Conversations::start_run`], the run goes on.
    pub events: BoxStream<'static, RunEventRecord>,
}

impl Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

/// A run of this process: its event log, for replay and live subscribers.
#[derive(Debug)]
pub(super) struct LiveRun {
    scope: Scope,
    conversation: ConversationId,
    log: Mutex<Vec<RunEventRecord>>,
    /// The number of events logged; subscribers wait on it.
    logged: watch::Sender<u64>,
    cancel: CancellationToken,
    finished_at: Mutex<Option<tokio::time::Instant>>,
    /// Set when the run ended without a `Finished` event it could send (its end
    /// could not be read back): subscribers end after the log instead of waiting.
    closed: std::sync::atomic::AtomicBool,
}

impl LiveRun {
    /// Ends the subscribers' streams after what is logged.
    fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        *self
            .finished_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(tokio::time::Instant::now());
        self.logged.send_modify(|_| {});
    }

    fn push(&self, event: RunEvent) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let id = log.len() as u64 + 1;
        let finished = matches!(event, RunEvent::Finished { .. });
        log.push(RunEventRecord { id, event });
        drop(log);
        if finished {
            *self
                .finished_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(tokio::time::Instant::now());
        }
        self.logged.send_replace(id);
    }

    /// Events after `after`, then live ones, until the run's `Finished`.
    fn subscribe(self: &Arc<Self>, after: u64) -> BoxStream<'static, RunEventRecord> {
        let live = Arc::clone(self);
        let receiver = self.logged.subscribe();
        stream::unfold(
            (live, receiver, after, false),
            |(live, mut receiver, mut cursor, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let next = {
                        let log = live.log.lock().unwrap_or_else(PoisonError::into_inner);
                        log.get(cursor as usize).cloned()
                    };
                    if let Some(record) = next {
                        cursor = record.id;
                        let done = matches!(record.event, RunEvent::Finished { .. });
                        return Some((record, (live, receiver, cursor, done)));
                    }
                    if live.closed.load(std::sync::atomic::Ordering::SeqCst) {
                        return None;
                    }
                    if receiver.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
        .boxed()
    }
}

/// Why a step ended without an answer.
enum Stop {
    Cancelled,
    Failed(Error),
}

impl Conversations {
    /// Starts a run, detached: it goes on, stores its messages and ends on its own
    /// whoever listens. `request` asks a question (the first event after `Started` is
    /// the stored question), edits or regenerates one ([`ReplyRequest`]), or, with
    /// neither message nor parent message, **continues** from the head: after the
    /// client stored tool results (a run that ended in `requires_action`), or to
    /// answer a question stored without a run.
    ///
    /// # Errors
    /// [`Error::RunInProgress`] when the conversation has a live run (nothing is
    /// stored); [`Error::InvalidInput`] for a request that is not a question, a
    /// regenerate of a non-question (field `parentId`), or a continue when the head is
    /// not a question or a tool result (field `content`); [`Error::Backend`] without a
    /// chat model; the store's errors.
    pub async fn start_run(
        &self,
        scope: &Scope,
        id: ConversationId,
        request: ReplyRequest,
    ) -> Result<RunHandle> {
        let (live, run) = self.launch(scope, id, request).await?;
        Ok(RunHandle {
            events: live.subscribe(0),
            run,
        })
    }

    /// Answers with the configured chat model and its tool loop, like
    /// [`Self::start_run`], but tied to its stream: dropping
    /// [`RunHandle::events`] before the run ends stops it (keeping what the model
    /// had said, marked `cancelled`).
    ///
    /// # Errors
    /// As [`Self::start_run`].
    pub async fn reply(
        &self,
        scope: &Scope,
        id: ConversationId,
        request: ReplyRequest,
    ) -> Result<RunHandle> {
        let (live, run) = self.launch(scope, id, request).await?;
        let guard = live.cancel.clone().drop_guard();
        let events = live
            .subscribe(0)
            .map(move |record| {
                let _keep = &guard;
                record
            })
            .boxed();
        Ok(RunHandle { run, events })
    }

    /// The events of a run after event `after` (0 for all), then live ones until it
    /// ends: a client reattaches with its `Last-Event-ID`. For a run this process
    /// does not hold (another server instance runs it, or it ended long ago), the
    /// stream says what the store knows: a `Started` event, then `Finished` once it
    /// has ended (polled), with the conversation whose messages speak for it.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a run not of this conversation and scope.
    pub async fn run_events(
        &self,
        scope: &Scope,
        id: ConversationId,
        run: RunId,
        after: u64,
    ) -> Result<BoxStream<'static, RunEventRecord>> {
        if let Some(live) = self.live_run(scope, id, run) {
            return Ok(live.subscribe(after));
        }
        let stored = self.inner.store.get_run(scope, id, run).await?;
        let service = self.clone();
        let scope = scope.clone();
        let started = RunEventRecord {
            id: 1,
            event: RunEvent::Started {
                run: stored.clone(),
            },
        };
        let finished = stream::unfold(Some(stored), move |state| {
            let service = service.clone();
            let scope = scope.clone();
            async move {
                let mut run = state?;
                while !run.status.is_terminal() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    run = service.inner.store.get_run(&scope, id, run.id).await.ok()?;
                }
                let conversation = service.get(&scope, id).await.ok()?;
                Some((
                    RunEventRecord {
                        id: 2,
                        event: RunEvent::Finished { run, conversation },
                    },
                    None,
                ))
            }
        });
        Ok(stream::iter([started])
            .chain(finished)
            .filter(move |record| std::future::ready(record.id > after))
            .boxed())
    }

    /// Reads a run.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a run not of this conversation and scope.
    pub async fn get_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
        self.inner.store.get_run(scope, id, run).await
    }

    /// Stops a run: at once when this process runs it (the model's request is
    /// dropped, its text so far stored marked `cancelled`), else at its runner's next
    /// lease renewal. Returns the run as it is now (it may still read `running` for
    /// an instant).
    ///
    /// # Errors
    /// [`Error::NotFound`] for a run not of this conversation and scope;
    /// [`Error::InvalidInput`] naming `runId` for a run that has ended.
    pub async fn cancel_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
        let stored = self.inner.store.cancel_run(scope, id, run).await?;
        if stored.status.is_terminal() {
            return Err(Error::invalid(
                "runId",
                format!("the run has ended ({})", stored.status.as_str()),
            ));
        }
        if let Some(live) = self.live_run(scope, id, run) {
            live.cancel.cancel();
        }
        Ok(stored)
    }

    fn live_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Option<Arc<LiveRun>> {
        let mut runs = self
            .inner
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let replay_for = self.inner.run_limits.replay_for;
        runs.retain(|_, live| {
            live.finished_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none_or(|at| at.elapsed() < replay_for)
        });
        runs.get(&run)
            .filter(|live| live.scope == *scope && live.conversation == id)
            .cloned()
    }

    /// Stops every run of this process (their partial answers are stored) and waits
    /// for them to end.
    pub(super) async fn stop_runs(&self) {
        let live: Vec<Arc<LiveRun>> = self
            .inner
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for run in live {
            run.cancel.cancel();
        }
        self.inner.run_tasks.close();
        self.inner.run_tasks.wait().await;
        self.inner.run_tasks.reopen();
    }

    /// Records the run, stores or finds the question, and spawns the loop.
    async fn launch(
        &self,
        scope: &Scope,
        id: ConversationId,
        request: ReplyRequest,
    ) -> Result<(Arc<LiveRun>, Run)> {
        let Some(model) = self.inner.model.clone() else {
            return Err(Error::Backend {
                message: "no chat model is configured: build the service with \
                          `Conversations::builder(store).chat_model(model)`"
                    .to_owned(),
                source: None,
            });
        };
        let ReplyRequest {
            message,
            parent,
            tools,
        } = request;
        if let Some(message) = &message
            && message.role != Role::User
        {
            return Err(Error::invalid(
                "message.role",
                "a reply answers a user message",
            ));
        }
        // What the run answers: a question to store, or one stored already (checked
        // before the run is recorded, so a bad request leaves nothing behind).
        let question = match (message, parent) {
            // A retried question (its caller id is stored already) is answered only
            // if nothing answered it yet: a retry never asks the model twice.
            (Some(message), parent) => match message.id {
                Some(asked) => match self.inner.store.get_message(scope, id, asked).await {
                    Ok(stored) => {
                        let head = self.get(scope, id).await?.head_id;
                        if head != Some(stored.id) {
                            return Err(Error::invalid(
                                "id",
                                "this question was stored and answered already; \
                                 regenerate to have it answered again",
                            ));
                        }
                        Question::Stored(stored)
                    }
                    Err(Error::NotFound { .. }) => Question::New(message, parent),
                    Err(error) => return Err(error),
                },
                None => Question::New(message, parent),
            },
            (None, Parent::Message(question)) => {
                let question = self.inner.store.get_message(scope, id, question).await?;
                if question.role != Role::User {
                    return Err(Error::invalid(
                        "parentId",
                        "a regenerated reply answers a user message",
                    ));
                }
                Question::Stored(question)
            }
            (None, Parent::Head | Parent::Root) => {
                let conversation = self.get(scope, id).await?;
                let head = match conversation.head_id {
                    Some(head) => Some(self.inner.store.get_message(scope, id, head).await?),
                    None => None,
                };
                match head {
                    Some(head) if matches!(head.role, Role::User | Role::Tool) => {
                        Question::Stored(head)
                    }
                    _ => {
                        return Err(Error::invalid(
                            "content",
                            "nothing to answer: send a question, or continue after a \
                             question or tool results",
                        ));
                    }
                }
            }
        };
        let limits = &self.inner.run_limits;
        let run = self
            .inner
            .store
            .start_run(scope, id, NewRun::new(limits.lease))
            .await?;
        let stored = match question {
            Question::New(message, parent) => self
                .append_with(scope, id, Append::one(message).parent(parent))
                .await
                .and_then(|appended| {
                    let conversation = appended.conversation;
                    appended
                        .messages
                        .into_iter()
                        .next()
                        .map(|question| (question, conversation))
                        .ok_or_else(|| Error::Backend {
                            message: "the store answered an append with no message".to_owned(),
                            source: None,
                        })
                }),
            Question::Stored(question) => self
                .get(scope, id)
                .await
                .map(|conversation| (question, conversation)),
        };
        let (question, conversation) = match stored {
            Ok(stored) => stored,
            Err(error) => {
                self.abort_start(scope, id, run.id, &error).await;
                return Err(error);
            }
        };
        let (logged, _) = watch::channel(0);
        let live = Arc::new(LiveRun {
            scope: scope.clone(),
            conversation: id,
            log: Mutex::new(Vec::new()),
            logged,
            cancel: CancellationToken::new(),
            finished_at: Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        live.push(RunEvent::Started { run: run.clone() });
        live.push(RunEvent::Message {
            conversation,
            message: question.clone(),
        });
        self.inner
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(run.id, Arc::clone(&live));
        let mut offered = self
            .inner
            .toolbox
            .as_ref()
            .map(|toolbox| toolbox.tools())
            .unwrap_or_default();
        offered.extend(tools);
        let service = self.clone();
        let span = tracing::info_span!("run", %scope, conversation = %id, run = %run.id);
        let driven = Arc::clone(&live);
        let run_id = run.id;
        self.inner.run_tasks.spawn(
            async move {
                let driving = std::panic::AssertUnwindSafe(service.drive(
                    &driven,
                    run_id,
                    model,
                    question.id,
                    offered,
                ));
                if futures::FutureExt::catch_unwind(driving).await.is_err() {
                    // A panicking model or toolbox: the run still ends, failed.
                    service.end_after_panic(&driven, run_id).await;
                }
            }
            .instrument(span),
        );
        Ok((live, run))
    }

    /// Ends a run whose task panicked (a model or tool that panics), so that it does
    /// not stay `running` until its lease passes, and tells its subscribers.
    async fn end_after_panic(&self, live: &Arc<LiveRun>, run: RunId) {
        tracing::error!("a run panicked; it ends failed");
        let (scope, id) = (&live.scope, live.conversation);
        let mut outcome = RunOutcome::new(RunStatus::Failed);
        outcome.error = Some(RunFailure::new(
            "internal_error",
            "the run failed; the cause is in the server's log",
        ));
        let finished = self.inner.store.finish_run(scope, id, run, outcome).await;
        let conversation = self.get(scope, id).await;
        if let (Ok(run), Ok(conversation)) = (finished, conversation) {
            live.push(RunEvent::Finished { run, conversation });
        } else {
            live.close();
        }
    }

    /// Ends a run whose question could not be stored.
    async fn abort_start(&self, scope: &Scope, id: ConversationId, run: RunId, error: &Error) {
        let mut outcome = RunOutcome::new(RunStatus::Failed);
        outcome.error = Some(failure_of(error));
        if let Err(error) = self.inner.store.finish_run(scope, id, run, outcome).await {
            warn!(%error, "could not end a run whose question was refused");
        }
    }

    /// The tool loop of one run, from its question to its end.
    async fn drive(
        &self,
        live: &Arc<LiveRun>,
        run: RunId,
        model: Arc<dyn crate::ChatModel>,
        question: MessageId,
        offered: Vec<ToolDefinition>,
    ) {
        let limits = self.inner.run_limits.clone();
        let (scope, id) = (live.scope.clone(), live.conversation);
        let mut leaf = question;
        let mut outcome = RunOutcome::new(RunStatus::Completed);
        let mut renewals = tokio::time::interval(limits.lease / 3);
        renewals.tick().await;
        loop {
            outcome.steps += 1;
            let step = self
                .step(
                    live,
                    run,
                    &model,
                    leaf,
                    &offered,
                    &mut renewals,
                    &mut outcome.usage,
                )
                .await;
            let assistant = match step {
                Ok(assistant) => assistant,
                Err(Stop::Cancelled) => {
                    outcome.status = RunStatus::Cancelled;
                    break;
                }
                Err(Stop::Failed(error)) => {
                    outcome.status = RunStatus::Failed;
                    outcome.error = Some(failure_of(&error));
                    break;
                }
            };
            leaf = assistant.id;
            if assistant.tool_calls.is_empty() {
                break;
            }
            let toolbox = self.inner.toolbox.clone();
            let (ours, theirs): (Vec<ToolCall>, Vec<ToolCall>) =
                assistant.tool_calls.iter().cloned().partition(|call| {
                    toolbox.as_ref().is_some_and(|toolbox| {
                        toolbox.tools().iter().any(|tool| tool.name == call.name)
                    })
                });
            if let Some(toolbox) = toolbox.filter(|_| !ours.is_empty()) {
                let results = tokio::select! {
                    results = run_tools(&*toolbox, &scope, &ours, &limits) => results,
                    () = live.cancel.cancelled() => {
                        outcome.status = RunStatus::Cancelled;
                        break;
                    }
                };
                match self
                    .append_with(
                        &scope,
                        id,
                        Append::new(results).parent(Parent::Message(leaf)),
                    )
                    .await
                {
                    Ok(appended) => {
                        for message in appended.messages {
                            leaf = message.id;
                            live.push(RunEvent::Message {
                                conversation: appended.conversation.clone(),
                                message,
                            });
                        }
                    }
                    Err(error) => {
                        outcome.status = RunStatus::Failed;
                        outcome.error = Some(failure_of(&error));
                        break;
                    }
                }
            }
            if !theirs.is_empty() {
                outcome.status = RunStatus::RequiresAction;
                outcome.pending_tool_calls = theirs;
                break;
            }
            if outcome.steps >= limits.max_steps {
                outcome.status = RunStatus::Failed;
                outcome.error = Some(RunFailure::new(
                    RunFailure::STEP_LIMIT,
                    format!(
                        "the model still asked for tools after {} steps",
                        limits.max_steps
                    ),
                ));
                break;
            }
        }
        debug!(
            status = outcome.status.as_str(),
            steps = outcome.steps,
            "run ended"
        );
        let finished = self.inner.store.finish_run(&scope, id, run, outcome).await;
        let conversation = self.get(&scope, id).await;
        match (finished, conversation) {
            (Ok(run), Ok(conversation)) => live.push(RunEvent::Finished { run, conversation }),
            (Err(error), _) | (_, Err(error)) => {
                warn!(%error, "could not record the end of a run");
                // Subscribers still learn it ended, from what is known here.
                if let (Ok(run), Ok(conversation)) = (
                    self.inner.store.get_run(&scope, id, run).await,
                    self.get(&scope, id).await,
                ) {
                    live.push(RunEvent::Finished { run, conversation });
                } else {
                    live.close();
                }
            }
        }
    }

    /// One model call: streams it, relays its events, stores its message after
    /// `leaf`. A stop or failure keeps the text received so far, stored marked
    /// `cancelled` or `error`.
    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        live: &Arc<LiveRun>,
        run: RunId,
        model: &Arc<dyn crate::ChatModel>,
        leaf: MessageId,
        offered: &[ToolDefinition],
        renewals: &mut tokio::time::Interval,
        usage: &mut Usage,
    ) -> std::result::Result<Message, Stop> {
        let (scope, id) = (&live.scope, live.conversation);
        let limits = &self.inner.run_limits;
        let context = self
            .context_ending_at(scope, id, Some(leaf))
            .await
            .map_err(Stop::Failed)?;
        let request = ChatRequest::new(context)
            .with_tools(offered.to_vec())
            .with_start_deadline(tokio::time::Instant::now() + limits.start_timeout);
        // The model is held to the start budget even if it ignores the deadline; a
        // little grace lets one that honours it report its own error first.
        let budget = limits.start_timeout + Duration::from_secs(1);
        let mut events = tokio::select! {
            started = tokio::time::timeout(budget, model.stream_reply(request)) => match started {
                Ok(started) => started.map_err(Stop::Failed)?,
                Err(_) => {
                    return Err(Stop::Failed(Error::model(
                        crate::ModelErrorKind::Timeout,
                        format!(
                            "the model did not start answering within {} s",
                            limits.start_timeout.as_secs()
                        ),
                    )));
                }
            },
            () = live.cancel.cancelled() => return Err(Stop::Cancelled),
        };
        let mut collector = ReplyCollector::new();
        let stop = loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        if let Err(error) = collector.push(&event) {
                            break Some(Stop::Failed(error));
                        }
                        match event {
                            ReplyEvent::Delta { text } => live.push(RunEvent::Delta { text }),
                            ReplyEvent::ToolCall { call } => live.push(RunEvent::ToolCall { call }),
                            _ => {}
                        }
                    }
                    Some(Err(error)) => break Some(Stop::Failed(error)),
                    None => break None,
                },
                () = live.cancel.cancelled() => break Some(Stop::Cancelled),
                _ = renewals.tick() => {
                    match self.inner.store.renew_run(scope, id, run, limits.lease).await {
                        Ok(renewed) if renewed.cancel_requested => live.cancel.cancel(),
                        Ok(_) => {}
                        Err(error) => warn!(%error, "could not renew a run's lease"),
                    }
                }
            }
        };
        // The request upstream is dropped here, on a stop or failure, at once.
        drop(events);
        let reply = match stop {
            None => collector.finish(),
            Some(stop) => {
                let reason = match &stop {
                    Stop::Cancelled => "cancelled",
                    Stop::Failed(_) => "error",
                };
                if let Some(partial) = collector.into_partial(reason) {
                    self.store_step(live, leaf, partial)
                        .await
                        .map_err(Stop::Failed)?;
                }
                return Err(stop);
            }
        };
        let reply = reply.map_err(Stop::Failed)?;
        if let Some(reported) = reply.usage {
            *usage += reported;
        }
        self.store_step(live, leaf, reply.into_message())
            .await
            .map_err(Stop::Failed)
    }

    /// Stores a message of the run after `leaf` and tells the subscribers.
    async fn store_step(
        &self,
        live: &Arc<LiveRun>,
        leaf: MessageId,
        message: NewMessage,
    ) -> Result<Message> {
        let appended = self
            .append_with(
                &live.scope,
                live.conversation,
                Append::one(message).parent(Parent::Message(leaf)),
            )
            .await?;
        let message = appended
            .messages
            .into_iter()
            .next()
            .ok_or_else(|| Error::Backend {
                message: "the store answered an append with no message".to_owned(),
                source: None,
            })?;
        live.push(RunEvent::Message {
            conversation: appended.conversation,
            message: message.clone(),
        });
        Ok(message)
    }
}

/// What a run answers.
enum Question {
    /// A question to store at a parent.
    New(NewMessage, Parent),
    /// A message stored already: a question to answer again, or the head to continue
    /// from.
    Stored(Message),
}

/// Runs the calls of one step at once, each under the tool timeout; every call gets a
/// result message.
async fn run_tools(
    toolbox: &dyn Toolbox,
    scope: &Scope,
    calls: &[ToolCall],
    limits: &RunLimits,
) -> Vec<NewMessage> {
    let outputs = futures::future::join_all(calls.iter().map(|call| async move {
        match tokio::time::timeout(limits.tool_timeout, toolbox.call(scope, call)).await {
            Ok(output) => output,
            Err(_) => ToolOutput::error(format!(
                "the tool {} did not answer within {} s",
                call.name,
                limits.tool_timeout.as_secs()
            )),
        }
    }))
    .await;
    calls
        .iter()
        .zip(outputs)
        .map(|(call, output)| {
            let mut metadata = Metadata::new();
            if output.is_error {
                metadata.insert("isError".to_owned(), true.into());
            }
            NewMessage::tool(
                call.id.clone(),
                cut(output.content, limits.max_tool_output_bytes),
            )
            .with_metadata(metadata)
        })
        .collect()
}

/// `text` cut to at most `max` bytes at a character boundary, with a note.
fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text.replace('\0', "\u{FFFD}");
    }
    let mut end = max.saturating_sub(40);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("\n… (cut: the result was too long)");
    text.replace('\0', "\u{FFFD}")
}

/// A run failure from an error: its code, and a message safe to show.
fn failure_of(error: &Error) -> RunFailure {
    // Only messages written for people travel; a store's or driver's words (file
    // paths, SQL, driver codes) stay in the log.
    let message = match error {
        Error::Model { message, .. } => message.clone(),
        Error::InvalidInput { .. } | Error::NotFound { .. } | Error::RunInProgress { .. } => {
            error.to_string()
        }
        Error::Unavailable { .. } => {
            "the service was temporarily unavailable; try again".to_owned()
        }
        _ => "the run failed; the cause is in the server's log".to_owned(),
    };
    if matches!(error, Error::Backend { .. } | Error::Unavailable { .. }) {
        warn!(%error, "a run failed");
    }
    let mut failure = RunFailure::new(error.code(), message);
    failure.retry_after_secs = error
        .retry_after()
        .map(|wait| wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
    failure
}

/// The live runs of a service, by id.
pub(super) type LiveRuns = Mutex<HashMap<RunId, Arc<LiveRun>>>;
