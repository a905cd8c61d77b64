//! The `Conversations` service: what a host calls.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt as _};
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, warn};

use crate::{
    Appended, ChatModel, ChatRequest, ContextPolicy, Conversation, ConversationId,
    ConversationPatch, ConversationQuery, Error, HeuristicTitles, MAX_RECENT_MESSAGES, Message,
    MessagePage, MessageQuery, NewConversation, NewMessage, Page, ReplyCollector, ReplyEvent,
    Result, Role, Scope, Store, TitleGenerator, TitleOutcome, TitleSource, ToolDefinition,
    sanitize_title,
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

/// Progress of a [`Conversations::reply`] after the user's message is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyProgress {
    /// An event from the model, passed on as it arrives.
    Model(ReplyEvent),
    /// The complete assistant message, stored; always the last item of a successful
    /// reply.
    Stored(Appended),
}

/// A reply in progress, returned by [`Conversations::reply`].
pub struct StreamingReply {
    /// The user's message as stored, with the conversation (carrying its heuristic
    /// title when this was the first message).
    pub user: Appended,
    /// The model's events, then [`ReplyProgress::Stored`]. An `Err` item ends the
    /// stream and means nothing of the reply was stored. Dropping the stream cancels
    /// the reply and stores nothing of it.
    pub events: BoxStream<'static, Result<ReplyProgress>>,
}

impl std::fmt::Debug for StreamingReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingReply")
            .field("user", &self.user)
            .finish_non_exhaustive()
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

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    /// `None`: heuristic titles only.
    titles: Option<Arc<dyn TitleGenerator>>,
    /// `None`: [`Conversations::reply`] is refused.
    model: Option<Arc<dyn ChatModel>>,
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
    titles: Option<Arc<dyn TitleGenerator>>,
    model: Option<Arc<dyn ChatModel>>,
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

    /// Chooses the context window with `policy` (default: the newest 20 messages).
    pub fn context_policy(mut self, policy: ContextPolicy) -> Self {
        self.policy = policy;
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
                titles: self.titles,
                model: self.model,
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
            titles: None,
            model: None,
            policy: ContextPolicy::default(),
            title_timeout: Self::DEFAULT_TITLE_TIMEOUT,
            open_page_size: crate::DEFAULT_PAGE_SIZE as u32,
        }
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

    /// Appends messages and runs the title lifecycle.
    ///
    /// # Errors
    /// The store's errors. Title problems never fail an append.
    pub async fn append(
        &self,
        scope: &Scope,
        id: ConversationId,
        messages: Vec<NewMessage>,
    ) -> Result<Appended> {
        self.append_checked(scope, id, messages, None).await
    }

    /// Like [`Self::append`], but only if the conversation is at `expected_version`.
    ///
    /// # Errors
    /// [`Error::Conflict`] when it is not (and nothing is stored).
    pub async fn append_at_version(
        &self,
        scope: &Scope,
        id: ConversationId,
        messages: Vec<NewMessage>,
        expected_version: u64,
    ) -> Result<Appended> {
        self.append_checked(scope, id, messages, Some(expected_version))
            .await
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

    async fn append_checked(
        &self,
        scope: &Scope,
        id: ConversationId,
        messages: Vec<NewMessage>,
        expected_version: Option<u64>,
    ) -> Result<Appended> {
        let mut appended = self
            .inner
            .store
            .append_messages(scope, id, messages, expected_version)
            .await?;
        if appended.conversation.title_source == TitleSource::None
            && let Some(title) = HeuristicTitles::title_for(&appended.messages)
        {
            match self
                .inner
                .store
                .set_title_unless_user(scope, id, title, TitleSource::Heuristic)
                .await
            {
                Ok(outcome) => appended.conversation = outcome.conversation,
                Err(error) => {
                    warn!(%scope, conversation = %id, %error, "could not store the heuristic title")
                }
            }
        }
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

    /// The context window the model would get now, chronological.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the conversation is not in `scope`.
    pub async fn context(&self, scope: &Scope, id: ConversationId) -> Result<Vec<Message>> {
        let policy = &self.inner.policy;
        let mut recent = self
            .inner
            .store
            .recent_messages(scope, id, policy.max_messages())
            .await?;
        if let Some(window) = policy.select(&recent) {
            let start = recent.len() - window.len();
            return Ok(recent.split_off(start));
        }
        // The newest turn reaches further back than the window: read more of it.
        let recent = self
            .inner
            .store
            .recent_messages(scope, id, MAX_RECENT_MESSAGES)
            .await?;
        Ok(policy
            .select(&recent)
            .map(<[Message]>::to_vec)
            .unwrap_or_default())
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
        self.inner.store.delete_conversation(scope, id).await
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

    /// Stops the service for good: waits for background title generations (each is
    /// bounded by the title timeout), then closes the store ([`Store::close`]), so
    /// that what was acknowledged is on disk and connections are closed. Afterwards,
    /// calls on this service or its clones get what the closed store answers
    /// ([`Error::Unavailable`] from the SQL stores). Calling it again does nothing
    /// more.
    pub async fn shutdown(&self) {
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
                match tokio::time::timeout(inner.title_timeout, inner.generate_title(&scope, id))
                    .await
                {
                    Ok(Ok(outcome)) => debug!(applied = outcome.applied, "title generated"),
                    Ok(Err(error)) => warn!(%error, "title generation failed; heuristic title kept"),
                    Err(_) => warn!(timeout = ?inner.title_timeout, "title generation timed out; heuristic title kept"),
                }
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

    /// Appends the user's message, then streams the model's reply to the context
    /// window and stores it as one assistant message once the model has finished.
    ///
    /// The user's message is stored before the model is called, and stays stored
    /// whatever happens to the reply. The reply is stored only when complete: a model
    /// error, a stream cut off before the model finished, or dropping the stream
    /// stores nothing of it. Storing the reply runs the title lifecycle.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `message` is not a user message;
    /// [`Error::Backend`] when the service has no chat model
    /// ([`ConversationsBuilder::chat_model`]); the store's errors; the model's error
    /// when it refuses to start.
    pub async fn reply(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: NewMessage,
        tools: Vec<ToolDefinition>,
    ) -> Result<StreamingReply> {
        let Some(model) = self.inner.model.clone() else {
            return Err(Error::Backend {
                message: "no chat model is configured: build the service with \
                          `Conversations::builder(store).chat_model(model)`"
                    .to_owned(),
                source: None,
            });
        };
        if message.role != Role::User {
            return Err(Error::invalid(
                "message.role",
                "a reply answers a user message",
            ));
        }
        let user = self.append(scope, id, vec![message]).await?;
        let context = self.context(scope, id).await?;
        let model_events = model
            .stream_reply(ChatRequest::new(context).with_tools(tools))
            .await?;
        Ok(StreamingReply {
            user,
            events: self.relay_reply(scope.clone(), id, model_events),
        })
    }

    fn relay_reply(
        &self,
        scope: Scope,
        id: ConversationId,
        model_events: crate::ReplyStream,
    ) -> BoxStream<'static, Result<ReplyProgress>> {
        enum State {
            Streaming(crate::ReplyStream, ReplyCollector),
            Finished(ReplyCollector),
            Done,
        }
        let service = self.clone();
        stream::unfold(
            State::Streaming(model_events, ReplyCollector::new()),
            move |state| {
                let service = service.clone();
                let scope = scope.clone();
                async move {
                    match state {
                        State::Streaming(mut events, mut collector) => {
                            let item = match events.next().await {
                                Some(Ok(event)) => collector.push(&event).map(|()| event),
                                Some(Err(error)) => Err(error),
                                // Ended before `Finished`: `finish` reports the cut.
                                None => {
                                    return Some((
                                        service.store_reply(&scope, id, collector).await,
                                        State::Done,
                                    ));
                                }
                            };
                            match item {
                                Ok(event) => {
                                    let next = if matches!(event, ReplyEvent::Finished { .. }) {
                                        State::Finished(collector)
                                    } else {
                                        State::Streaming(events, collector)
                                    };
                                    Some((Ok(ReplyProgress::Model(event)), next))
                                }
                                Err(error) => Some((Err(error), State::Done)),
                            }
                        }
                        State::Finished(collector) => Some((
                            service.store_reply(&scope, id, collector).await,
                            State::Done,
                        )),
                        State::Done => None,
                    }
                }
            },
        )
        .boxed()
    }

    /// Stores a complete reply; an incomplete one is refused by `finish`.
    async fn store_reply(
        &self,
        scope: &Scope,
        id: ConversationId,
        collector: ReplyCollector,
    ) -> Result<ReplyProgress> {
        let reply = collector.finish()?;
        self.append(scope, id, vec![reply.into_message()])
            .await
            .map(ReplyProgress::Stored)
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
