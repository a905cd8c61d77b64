//! The `Conversations` service: what a host calls.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, warn};

use crate::{
    Append, Appended, ChatModel, ContextPolicy, Conversation, ConversationId, ConversationPatch,
    ConversationQuery, Error, HeuristicTitles, MAX_RECENT_MESSAGES, Message, MessageId,
    MessagePage, MessageQuery, NewConversation, NewMessage, Page, Parent, RecentQuery, Result,
    Role, Scope, Store, TitleGenerator, TitleOutcome, TitleSource, ToolDefinition, sanitize_title,
};

/// How many of a conversation's first messages the title generator sees.
const TITLE_CONTEXT_MESSAGES: u32 = 6;

/// A conversation with its newest page of messages: what a sidebar click shows.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenConversation {
    /// The conversation.
    pub conversation: Conversation,
    /// Its newest messages, chronological; `has_more` when older ones exist.
    pub messages: MessagePage,
}

/// What [`Conversations::reply`] answers: a new question, an edited one, or a
/// question answered again.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ReplyRequest {
    /// A new user message to store and answer; `None` to answer again the user
    /// message that [`ReplyRequest::parent`] names (regenerate).
    pub message: Option<NewMessage>,
    /// With a message: where it attaches ([`Parent::Head`] to ask, the edited
    /// question's parent to edit). Without: the user message to answer again.
    pub parent: Parent,
    /// Tools the model may call.
    pub tools: Vec<ToolDefinition>,
}

impl ReplyRequest {
    /// Asks `message` (a user message) after the head.
    pub fn ask(message: NewMessage) -> Self {
        Self {
            message: Some(message),
            ..Self::default()
        }
    }

    /// Asks `message` at `parent` instead: the parent of the question it replaces
    /// ([`Parent::Root`] for a first question), so it becomes a new version of it.
    pub fn edit(parent: Parent, message: NewMessage) -> Self {
        Self {
            message: Some(message),
            parent,
            ..Self::default()
        }
    }

    /// Answers the stored user message `question` again: the new answer becomes a
    /// sibling of the earlier ones.
    pub fn regenerate(question: MessageId) -> Self {
        Self {
            message: None,
            parent: Parent::Message(question),
            ..Self::default()
        }
    }

    /// Offers `tools` to the model.
    pub fn with_tools(mut self, tools: Vec<ToolDefinition>) -> Self {
        self.tools = tools;
        self
    }
}

/// The conversation service a host embeds: a store, a title generator and a
/// context policy, composed.
///
/// Cheap to clone (one `Arc`); clones share background work.
///
/// # Title lifecycle
/// The first user message gives a *heuristic* title at once (so the sidebar never
/// shows an empty "New chat"). When a [`TitleGenerator`] is configured
/// ([`ConversationsBuilder::title_generator`]), an append that holds an assistant message, while
/// the title is still missing or heuristic, starts it in the background under a
/// timeout; its answer, sanitised, replaces the heuristic title (*generated*). A title
/// the user set is final. A failing, hanging or useless generator is logged with
/// `tracing` and leaves the heuristic title; it never fails the append. Without a
/// generator the heuristic title stays, labelled as such.
///
/// ```
/// # use std::sync::Arc;
/// # use conversation_core::{Conversations, NewConversation, Scope, Store};
/// # async fn demo(store: Arc<dyn Store>) -> conversation_core::Result<()> {
/// let service = Conversations::new(store);
/// let scope = Scope::new("connection-42")?;
/// let chat = service.create(&scope, NewConversation::new()).await?;
/// let appended = service.append_user(&scope, chat.id, "Which tables are largest?").await?;
/// assert_eq!(appended.conversation.title.as_deref(), Some("Which tables are largest?"));
/// let context = service.context(&scope, chat.id).await?;
/// assert_eq!(context.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Conversations {
    inner: Arc<Inner>,
}

mod lifecycle;
mod runs;

pub use runs::{RunEvent, RunEventRecord, RunHandle, RunLimits, ToolOutput, Toolbox};

pub use lifecycle::{
    BulkAction, BulkResult, ExportSelection, ImportReport, ImportedItem, MAX_BULK_IDS, PurgeReport,
    RefusedItem, RetentionPolicy,
};

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn crate::Clock>,
    /// `None`: heuristic titles only.
    titles: Option<Arc<dyn TitleGenerator>>,
    /// `None`: [`Conversations::reply`] is refused.
    model: Option<Arc<dyn ChatModel>>,
    /// `None`: runs end in `requires_action` when the model asks for a tool.
    toolbox: Option<Arc<dyn Toolbox>>,
    run_limits: RunLimits,
    runs: runs::LiveRuns,
    run_tasks: TaskTracker,
    policy: ContextPolicy,
    title_timeout: Duration,
    open_page_size: u32,
    tasks: TaskTracker,
    titling: Mutex<HashSet<ConversationId>>,
}

/// Builds a [`Conversations`] service: [`Conversations::builder`].
///
/// ```
/// # use std::sync::Arc;
/// # use conversation_core::{ContextPolicy, Conversations, Store, TitleGenerator};
/// # fn demo(store: Arc<dyn Store>, titles: Arc<dyn TitleGenerator>) -> conversation_core::Result<()> {
/// let service = Conversations::builder(store)
///     .title_generator(titles)
///     .context_policy(ContextPolicy::new(40)?)
///     .build();
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ConversationsBuilder {
    store: Arc<dyn Store>,
    clock: Arc<dyn crate::Clock>,
    titles: Option<Arc<dyn TitleGenerator>>,
    model: Option<Arc<dyn ChatModel>>,
    toolbox: Option<Arc<dyn Toolbox>>,
    run_limits: RunLimits,
    policy: ContextPolicy,
    title_timeout: Duration,
    open_page_size: u32,
}

impl ConversationsBuilder {
    /// Writes titles with `titles` after the first reply (default: heuristic titles
    /// only).
    pub fn title_generator(mut self, titles: Arc<dyn TitleGenerator>) -> Self {
        self.titles = Some(titles);
        self
    }

    /// Answers [`Conversations::reply`] with `model` (default: none, and `reply` is
    /// refused).
    pub fn chat_model(mut self, model: Arc<dyn ChatModel>) -> Self {
        self.model = Some(model);
        self
    }

    /// Runs the tools of `toolbox` for the model in every run: the tool loop. Without
    /// one, a run ends in `requires_action` when the model asks for a tool, and the
    /// client runs it.
    pub fn toolbox(mut self, toolbox: Arc<dyn Toolbox>) -> Self {
        self.toolbox = Some(toolbox);
        self
    }

    /// Bounds runs: steps, tool and start timeouts, lease, replay time
    /// (default [`RunLimits::default`]).
    pub fn run_limits(mut self, limits: RunLimits) -> Self {
        self.run_limits = limits;
        self
    }

    /// Chooses the context window with `policy` (default: the newest 20 messages).
    pub fn context_policy(mut self, policy: ContextPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Reads the time from `clock` (default the system clock): retention's cutoffs.
    /// Stores read their own clocks.
    pub fn clock(mut self, clock: Arc<dyn crate::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Bounds each title generation (default [`Conversations::DEFAULT_TITLE_TIMEOUT`]).
    pub fn title_timeout(mut self, timeout: Duration) -> Self {
        self.title_timeout = timeout;
        self
    }

    /// How many messages [`Conversations::open`] returns (default 50, at most 200).
    pub fn open_page_size(mut self, size: u32) -> Self {
        self.open_page_size = size.clamp(1, crate::MAX_PAGE_SIZE as u32);
        self
    }

    /// The service.
    pub fn build(self) -> Conversations {
        Conversations {
            inner: Arc::new(Inner {
                store: self.store,
                clock: self.clock,
                titles: self.titles,
                model: self.model,
                toolbox: self.toolbox,
                run_limits: self.run_limits,
                runs: runs::LiveRuns::default(),
                run_tasks: TaskTracker::new(),
                policy: self.policy,
                title_timeout: self.title_timeout,
                open_page_size: self.open_page_size,
                tasks: TaskTracker::new(),
                titling: Mutex::new(HashSet::new()),
            }),
        }
    }
}

impl Conversations {
    /// How long a background title generation may take unless configured otherwise.
    pub const DEFAULT_TITLE_TIMEOUT: Duration = Duration::from_secs(30);

    /// A service over `store` with heuristic titles only, no chat model and the
    /// default context policy: `Conversations::builder(store).build()`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::builder(store).build()
    }

    /// Starts building a service over `store`.
    pub fn builder(store: Arc<dyn Store>) -> ConversationsBuilder {
        ConversationsBuilder {
            store,
            clock: Arc::new(crate::SystemClock),
            titles: None,
            model: None,
            toolbox: None,
            run_limits: RunLimits::default(),
            policy: ContextPolicy::default(),
            title_timeout: Self::DEFAULT_TITLE_TIMEOUT,
            open_page_size: crate::DEFAULT_PAGE_SIZE as u32,
        }
    }

    /// The time by the service's clock, in milliseconds.
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        crate::backend::truncate_to_millis(self.inner.clock.now())
    }

    /// The chat model [`Self::reply`] uses, if one was configured.
    pub fn chat_model(&self) -> Option<&Arc<dyn ChatModel>> {
        self.inner.model.as_ref()
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The context policy.
    pub fn context_policy(&self) -> &ContextPolicy {
        &self.inner.policy
    }

    /// Creates a conversation.
    ///
    /// # Errors
    /// The store's errors; [`Error::InvalidInput`] for a bad title or metadata.
    pub async fn create(&self, scope: &Scope, new: NewConversation) -> Result<Conversation> {
        self.inner.store.create_conversation(scope, new).await
    }

    /// Reads one conversation.
    ///
    /// # Errors
    /// [`Error::NotFound`] when it is not in `scope`.
    pub async fn get(&self, scope: &Scope, id: ConversationId) -> Result<Conversation> {
        self.inner.store.get_conversation(scope, id).await
    }

    /// One page of the scope's conversations.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad cursor or limit.
    pub async fn list(
        &self,
        scope: &Scope,
        query: &ConversationQuery,
    ) -> Result<Page<Conversation>> {
        self.inner.store.list_conversations(scope, query).await
    }

    /// Opens (switches to) a conversation: it and its newest page of messages.
    ///
    /// # Errors
    /// [`Error::NotFound`] when it is not in `scope`.
    pub async fn open(&self, scope: &Scope, id: ConversationId) -> Result<OpenConversation> {
        let conversation = self.inner.store.get_conversation(scope, id).await?;
        let messages = self
            .inner
            .store
            .list_messages(
                scope,
                id,
                &MessageQuery::latest().limit(self.inner.open_page_size),
            )
            .await?;
        Ok(OpenConversation {
            conversation,
            messages,
        })
    }

    /// A page of messages.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the conversation is not in `scope`.
    pub async fn messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &MessageQuery,
    ) -> Result<MessagePage> {
        self.inner.store.list_messages(scope, id, query).await
    }

    /// Appends messages after the head and runs the title lifecycle.
    ///
    /// # Errors
    /// The store's errors. Title problems never fail an append.
    pub async fn append(
        &self,
        scope: &Scope,
        id: ConversationId,
        messages: Vec<NewMessage>,
    ) -> Result<Appended> {
        self.append_with(scope, id, Append::new(messages)).await
    }

    /// Appends with every option ([`Append`]: a parent to branch at, an expected
    /// version) and runs the title lifecycle: the first user message titles the
    /// conversation in the same transaction (a heuristic title), and an assistant
    /// message starts title generation in the background.
    ///
    /// # Errors
    /// The store's errors: [`Error::NotFound`] for a parent that is not in the
    /// conversation, [`Error::Conflict`] on a version mismatch (nothing stored).
    pub async fn append_with(
        &self,
        scope: &Scope,
        id: ConversationId,
        mut append: Append,
    ) -> Result<Appended> {
        if append.title_hint.is_none() {
            append.title_hint = HeuristicTitles::title_for_new(&append.messages);
        }
        let appended = self.inner.store.append_messages(scope, id, append).await?;
        let has_reply = appended.messages.iter().any(|m| m.role == Role::Assistant);
        if has_reply
            && self.inner.titles.is_some()
            && matches!(
                appended.conversation.title_source,
                TitleSource::None | TitleSource::Heuristic
            )
        {
            self.spawn_title_generation(scope.clone(), id);
        }
        Ok(appended)
    }

    /// Appends a user message.
    ///
    /// # Errors
    /// As [`Self::append`].
    pub async fn append_user(
        &self,
        scope: &Scope,
        id: ConversationId,
        content: impl Into<String>,
    ) -> Result<Appended> {
        self.append(scope, id, vec![NewMessage::user(content)])
            .await
    }

    /// Appends an assistant message.
    ///
    /// # Errors
    /// As [`Self::append`].
    pub async fn append_assistant(
        &self,
        scope: &Scope,
        id: ConversationId,
        content: impl Into<String>,
    ) -> Result<Appended> {
        self.append(scope, id, vec![NewMessage::assistant(content)])
            .await
    }

    /// Appends a tool result answering `tool_call_id`.
    ///
    /// # Errors
    /// As [`Self::append`].
    pub async fn append_tool_result(
        &self,
        scope: &Scope,
        id: ConversationId,
        tool_call_id: impl Into<String>,
        content: impl Into<String>,
    ) -> Result<Appended> {
        self.append(scope, id, vec![NewMessage::tool(tool_call_id, content)])
            .await
    }

    /// Edits a message: stores `replacement` as a new version of `message` (a sibling
    /// with the same parent) and makes it the head. The earlier version and what
    /// followed it stay, one branch switch away. To have the model answer the edited
    /// question too, use [`Self::reply`] with [`ReplyRequest::edit`].
    ///
    /// # Errors
    /// [`Error::NotFound`] when `message` is not in the conversation; as
    /// [`Self::append_with`].
    pub async fn edit(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
        replacement: NewMessage,
    ) -> Result<Appended> {
        let edited = self.inner.store.get_message(scope, id, message).await?;
        let parent = edited.parent_id.map_or(Parent::Root, Parent::Message);
        self.append_with(scope, id, Append::one(replacement).parent(parent))
            .await
    }

    /// Switches branch: the head moves to the newest leaf under `message`, and pages,
    /// `open` and the context read that branch.
    ///
    /// # Errors
    /// [`Error::NotFound`] when `message` is not in the conversation.
    pub async fn switch_branch(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Conversation> {
        self.update(scope, id, ConversationPatch::new().head(message))
            .await
    }

    /// Forks: a new conversation in the same scope holding a copy of the path up to
    /// `message` ([`Store::fork_conversation`]); the source is unchanged.
    ///
    /// # Errors
    /// [`Error::NotFound`] when `message` is not in the conversation.
    pub async fn fork(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Conversation> {
        self.inner.store.fork_conversation(scope, id, message).await
    }

    /// Deletes `message` and everything that follows it on any branch
    /// ([`Store::delete_message`]), at `expected_version` when given.
    ///
    /// # Errors
    /// [`Error::NotFound`] when `message` is not in the conversation (also when it was
    /// deleted before); [`Error::Conflict`] on a version mismatch.
    pub async fn delete_message(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
        expected_version: Option<u64>,
    ) -> Result<Conversation> {
        self.inner
            .store
            .delete_message(scope, id, message, expected_version)
            .await
    }

    /// The context window the model would get now, chronological: the newest
    /// messages of the active path, chosen by the [`ContextPolicy`].
    ///
    /// # Errors
    /// [`Error::NotFound`] when the conversation is not in `scope`.
    pub async fn context(&self, scope: &Scope, id: ConversationId) -> Result<Vec<Message>> {
        self.context_ending_at(scope, id, None).await
    }

    /// The context window of the path ending at `leaf` (the head when `None`).
    async fn context_ending_at(
        &self,
        scope: &Scope,
        id: ConversationId,
        leaf: Option<MessageId>,
    ) -> Result<Vec<Message>> {
        let policy = &self.inner.policy;
        let query = |n| RecentQuery { n, leaf };
        let mut recent = self
            .inner
            .store
            .recent_messages(scope, id, &query(policy.max_messages()))
            .await?;
        if let Some(window) = policy.window(&recent) {
            return Ok(window);
        }
        // The newest turn reaches further back than the window: read more of it.
        recent = self
            .inner
            .store
            .recent_messages(scope, id, &query(MAX_RECENT_MESSAGES))
            .await?;
        Ok(policy.window(&recent).unwrap_or_default())
    }

    /// Applies a patch (rename, pin, archive, metadata, expected version).
    ///
    /// # Errors
    /// [`Error::Conflict`] on a version mismatch, [`Error::InvalidInput`] for a bad
    /// title or metadata, [`Error::NotFound`].
    pub async fn update(
        &self,
        scope: &Scope,
        id: ConversationId,
        patch: ConversationPatch,
    ) -> Result<Conversation> {
        self.inner.store.update_conversation(scope, id, patch).await
    }

    /// Renames; the title is stored exactly as given and is final for automatic titles.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty, too long or control-character title.
    pub async fn rename(
        &self,
        scope: &Scope,
        id: ConversationId,
        title: impl Into<String>,
    ) -> Result<Conversation> {
        self.update(scope, id, ConversationPatch::new().title(title))
            .await
    }

    /// Pins or unpins.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn set_pinned(
        &self,
        scope: &Scope,
        id: ConversationId,
        pinned: bool,
    ) -> Result<Conversation> {
        self.update(scope, id, ConversationPatch::new().pinned(pinned))
            .await
    }

    /// Archives or restores.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn set_archived(
        &self,
        scope: &Scope,
        id: ConversationId,
        archived: bool,
    ) -> Result<Conversation> {
        self.update(scope, id, ConversationPatch::new().archived(archived))
            .await
    }

    /// Deletes a conversation and its messages.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn delete(&self, scope: &Scope, id: ConversationId) -> Result<()> {
        self.inner.store.delete_conversation(scope, id, None).await
    }

    /// Deletes a conversation only at `expected_version`.
    ///
    /// # Errors
    /// [`Error::Conflict`] when it is at another version (nothing deleted);
    /// [`Error::NotFound`].
    pub async fn delete_at_version(
        &self,
        scope: &Scope,
        id: ConversationId,
        expected_version: u64,
    ) -> Result<()> {
        self.inner
            .store
            .delete_conversation(scope, id, Some(expected_version))
            .await
    }

    /// Searches the scope's conversations ([`Store::search`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty or oversized text (field `q`), a bad
    /// cursor or limit.
    pub async fn search(
        &self,
        scope: &Scope,
        query: &crate::SearchQuery,
    ) -> Result<Page<crate::SearchHit>> {
        self.inner.store.search(scope, query).await
    }

    /// Generates the title now and waits for it (e.g. a "regenerate title" button).
    /// A user title is kept (`applied` is `false`). Without a generator, the
    /// heuristic title is set if the conversation has none.
    ///
    /// # Errors
    /// Unlike the background generation, failures are returned: the generator's
    /// error, [`Error::Unavailable`] on timeout, [`Error::Backend`] when it returned
    /// nothing usable, [`Error::InvalidInput`] when the conversation has no messages
    /// (or, without a generator, no user message with text).
    pub async fn generate_title(&self, scope: &Scope, id: ConversationId) -> Result<TitleOutcome> {
        match tokio::time::timeout(
            self.inner.title_timeout,
            self.inner.generate_title(scope, id),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(Error::Unavailable {
                message: format!(
                    "title generation took longer than {:?}",
                    self.inner.title_timeout
                ),
                source: None,
            }),
        }
    }

    /// Waits until every background title generation started so far has finished
    /// (for tests, and hosts that must know a title is written).
    pub async fn wait_for_titles(&self) {
        let tasks = &self.inner.tasks;
        tasks.close();
        tasks.wait().await;
        tasks.reopen();
    }

    /// Stops the service for good: stops the runs of this process (each stores what
    /// its model had said, marked `cancelled`, and ends), waits for background title
    /// generations (each is bounded by the title timeout), then closes the store
    /// ([`Store::close`]), so
    /// that what was acknowledged is on disk and connections are closed. Afterwards,
    /// calls on this service or its clones get what the closed store answers
    /// ([`Error::Unavailable`] from the SQL stores). Calling it again does nothing
    /// more.
    pub async fn shutdown(&self) {
        self.stop_runs().await;
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.store.close().await;
    }

    fn spawn_title_generation(&self, scope: Scope, id: ConversationId) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!(%scope, conversation = %id, "no Tokio runtime: title not generated");
            return;
        };
        if !self
            .inner
            .titling
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
        {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let span = tracing::info_span!("generate_title", %scope, conversation = %id);
        self.inner.tasks.spawn_on(
            async move {
                let generated =
                    tokio::time::timeout(inner.title_timeout, inner.generate_title(&scope, id));
                let outcome = match generated.await {
                    Ok(Ok(outcome)) => {
                        debug!(applied = outcome.applied, "title generated");
                        "generated"
                    }
                    Ok(Err(error)) => {
                        warn!(%error, "title generation failed; heuristic title kept");
                        "failed"
                    }
                    Err(_) => {
                        warn!(timeout = ?inner.title_timeout, "title generation timed out; heuristic title kept");
                        "timed_out"
                    }
                };
                metrics::counter!("conversation_titles_total", "outcome" => outcome).increment(1);
                inner
                    .titling
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            }
            .instrument(span),
            &runtime,
        );
    }
}

impl Inner {
    async fn generate_title(&self, scope: &Scope, id: ConversationId) -> Result<TitleOutcome> {
        let opening = self
            .store
            .list_messages(
                scope,
                id,
                &MessageQuery::after(0).limit(TITLE_CONTEXT_MESSAGES),
            )
            .await?
            .items;
        if opening.is_empty() {
            return Err(Error::invalid(
                "conversation",
                "has no messages to title from",
            ));
        }
        let Some(titles) = &self.titles else {
            let title = HeuristicTitles::title_for(&opening).ok_or_else(|| {
                Error::invalid(
                    "conversation",
                    "has no user message with text to title from",
                )
            })?;
            return self
                .store
                .set_title_unless_user(scope, id, title, TitleSource::Heuristic)
                .await;
        };
        let raw = titles.generate_title(&opening).await?;
        let title = sanitize_title(&raw).ok_or_else(|| Error::Backend {
            message: "the title generator returned no usable text".to_owned(),
            source: None,
        })?;
        self.store
            .set_title_unless_user(scope, id, title, TitleSource::Generated)
            .await
    }
}
