//! A store wrapper that lets a test slow down or fail chosen calls.

use std::fmt::Debug;

use async_trait::async_trait;

use std::time::Duration;

use crate::{
    Append, Appended, Conversation, ConversationId, ConversationPatch, ConversationQuery,
    ExpiredConversation, ImportOutcome, ImportedConversation, Message, MessageId, MessagePage,
    MessageQuery, NewConversation, NewRun, Page, RecentQuery, Result, RetentionQuery, Run, RunId,
    RunOutcome, Scope, SearchHit, SearchQuery, Store, TitleOutcome, TitleSource,
};

/// A call to a [`Store`] method, as an [`Interceptor`] sees it before the call is
/// passed on.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Call<'a> {
    /// [`Store::create_conversation`].
    CreateConversation(&'a NewConversation),
    /// [`Store::get_conversation`].
    GetConversation(ConversationId),
    /// [`Store::list_conversations`].
    ListConversations(&'a ConversationQuery),
    /// [`Store::update_conversation`].
    UpdateConversation(ConversationId, &'a ConversationPatch),
    /// [`Store::delete_conversation`].
    DeleteConversation(ConversationId),
    /// [`Store::append_messages`].
    AppendMessages(ConversationId, &'a Append),
    /// [`Store::get_message`].
    GetMessage(ConversationId, MessageId),
    /// [`Store::list_messages`].
    ListMessages(ConversationId, &'a MessageQuery),
    /// [`Store::recent_messages`].
    RecentMessages(ConversationId, &'a RecentQuery),
    /// [`Store::delete_message`].
    DeleteMessage(ConversationId, MessageId),
    /// [`Store::fork_conversation`].
    ForkConversation(ConversationId, MessageId),
    /// [`Store::set_title_unless_user`].
    SetTitle(ConversationId, &'a str, TitleSource),
    /// [`Store::start_run`].
    StartRun(ConversationId, &'a NewRun),
    /// [`Store::renew_run`].
    RenewRun(ConversationId, RunId),
    /// [`Store::cancel_run`].
    CancelRun(ConversationId, RunId),
    /// [`Store::finish_run`].
    FinishRun(ConversationId, RunId, &'a RunOutcome),
    /// [`Store::get_run`].
    GetRun(ConversationId, RunId),
    /// [`Store::search`].
    Search(&'a SearchQuery),
    /// [`Store::import_conversation`].
    ImportConversation(&'a ImportedConversation),
    /// [`Store::list_expired`].
    ListExpired(&'a RetentionQuery),
    /// [`Store::health`].
    Health,
    /// [`Store::close`] (its answer is ignored: close cannot fail).
    Close,
}

/// Decides, before each call, whether an [`Intercepted`] store passes it on: wait
/// (a slow store), fail (a store fault), or go on.
#[async_trait]
pub trait Interceptor: Send + Sync + Debug + 'static {
    /// `Ok` passes the call on; an error is returned instead of calling the store.
    async fn before(&self, scope: Option<&Scope>, call: Call<'_>) -> Result<()>;
}

/// A [`Store`] that asks an [`Interceptor`] before passing each call on to `inner`:
/// the one way the tests of this workspace force faults or delays into a real store,
/// instead of each writing a wrapper that forwards every method.
///
/// ```
/// # use std::sync::Arc;
/// use async_trait::async_trait;
/// use conversation_core::testkit::{Call, Intercepted, Interceptor};
/// use conversation_core::{Error, Result, Role, Scope};
///
/// /// Fails every append that holds an assistant message.
/// #[derive(Debug)]
/// struct FailReplies;
///
/// #[async_trait]
/// impl Interceptor for FailReplies {
///     async fn before(&self, _: Option<&Scope>, call: Call<'_>) -> Result<()> {
///         match call {
///             Call::AppendMessages(_, append)
///                 if append.messages.iter().any(|m| m.role == Role::Assistant) =>
///             {
///                 Err(Error::Unavailable { message: "disk full".into(), source: None })
///             }
///             _ => Ok(()),
///         }
///     }
/// }
/// # fn demo(store: impl conversation_core::Store) {
/// let faulty = Intercepted::new(store, FailReplies);
/// # }
/// ```
#[derive(Debug)]
pub struct Intercepted<S, I> {
    inner: S,
    interceptor: I,
}

impl<S: Store, I: Interceptor> Intercepted<S, I> {
    /// `inner`, with `interceptor` asked before every call.
    pub fn new(inner: S, interceptor: I) -> Self {
        Self { inner, interceptor }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The interceptor.
    pub fn interceptor(&self) -> &I {
        &self.interceptor
    }
}

#[async_trait]
impl<S: Store, I: Interceptor> Store for Intercepted<S, I> {
    async fn create_conversation(
        &self,
        scope: &Scope,
        new: NewConversation,
    ) -> Result<Conversation> {
        self.interceptor
            .before(Some(scope), Call::CreateConversation(&new))
            .await?;
        self.inner.create_conversation(scope, new).await
    }

    async fn get_conversation(&self, scope: &Scope, id: ConversationId) -> Result<Conversation> {
        self.interceptor
            .before(Some(scope), Call::GetConversation(id))
            .await?;
        self.inner.get_conversation(scope, id).await
    }

    async fn list_conversations(
        &self,
        scope: &Scope,
        query: &ConversationQuery,
    ) -> Result<Page<Conversation>> {
        self.interceptor
            .before(Some(scope), Call::ListConversations(query))
            .await?;
        self.inner.list_conversations(scope, query).await
    }

    async fn update_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        patch: ConversationPatch,
    ) -> Result<Conversation> {
        self.interceptor
            .before(Some(scope), Call::UpdateConversation(id, &patch))
            .await?;
        self.inner.update_conversation(scope, id, patch).await
    }

    async fn delete_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        expected_version: Option<u64>,
    ) -> Result<()> {
        self.interceptor
            .before(Some(scope), Call::DeleteConversation(id))
            .await?;
        self.inner
            .delete_conversation(scope, id, expected_version)
            .await
    }

    async fn append_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        append: Append,
    ) -> Result<Appended> {
        self.interceptor
            .before(Some(scope), Call::AppendMessages(id, &append))
            .await?;
        self.inner.append_messages(scope, id, append).await
    }

    async fn get_message(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Message> {
        self.interceptor
            .before(Some(scope), Call::GetMessage(id, message))
            .await?;
        self.inner.get_message(scope, id, message).await
    }

    async fn list_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &MessageQuery,
    ) -> Result<MessagePage> {
        self.interceptor
            .before(Some(scope), Call::ListMessages(id, query))
            .await?;
        self.inner.list_messages(scope, id, query).await
    }

    async fn recent_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &RecentQuery,
    ) -> Result<Vec<Message>> {
        self.interceptor
            .before(Some(scope), Call::RecentMessages(id, query))
            .await?;
        self.inner.recent_messages(scope, id, query).await
    }

    async fn delete_message(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
        expected_version: Option<u64>,
    ) -> Result<Conversation> {
        self.interceptor
            .before(Some(scope), Call::DeleteMessage(id, message))
            .await?;
        self.inner
            .delete_message(scope, id, message, expected_version)
            .await
    }

    async fn fork_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Conversation> {
        self.interceptor
            .before(Some(scope), Call::ForkConversation(id, message))
            .await?;
        self.inner.fork_conversation(scope, id, message).await
    }

    async fn set_title_unless_user(
        &self,
        scope: &Scope,
        id: ConversationId,
        title: String,
        source: TitleSource,
    ) -> Result<TitleOutcome> {
        self.interceptor
            .before(Some(scope), Call::SetTitle(id, &title, source))
            .await?;
        self.inner
            .set_title_unless_user(scope, id, title, source)
            .await
    }

    async fn start_run(&self, scope: &Scope, id: ConversationId, run: NewRun) -> Result<Run> {
        self.interceptor
            .before(Some(scope), Call::StartRun(id, &run))
            .await?;
        self.inner.start_run(scope, id, run).await
    }

    async fn renew_run(
        &self,
        scope: &Scope,
        id: ConversationId,
        run: RunId,
        lease: Duration,
    ) -> Result<Run> {
        self.interceptor
            .before(Some(scope), Call::RenewRun(id, run))
            .await?;
        self.inner.renew_run(scope, id, run, lease).await
    }

    async fn cancel_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
        self.interceptor
            .before(Some(scope), Call::CancelRun(id, run))
            .await?;
        self.inner.cancel_run(scope, id, run).await
    }

    async fn finish_run(
        &self,
        scope: &Scope,
        id: ConversationId,
        run: RunId,
        outcome: RunOutcome,
    ) -> Result<Run> {
        self.interceptor
            .before(Some(scope), Call::FinishRun(id, run, &outcome))
            .await?;
        self.inner.finish_run(scope, id, run, outcome).await
    }

    async fn get_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
        self.interceptor
            .before(Some(scope), Call::GetRun(id, run))
            .await?;
        self.inner.get_run(scope, id, run).await
    }

    async fn search(&self, scope: &Scope, query: &SearchQuery) -> Result<Page<SearchHit>> {
        self.interceptor
            .before(Some(scope), Call::Search(query))
            .await?;
        self.inner.search(scope, query).await
    }

    async fn import_conversation(
        &self,
        scope: &Scope,
        conversation: ImportedConversation,
    ) -> Result<ImportOutcome> {
        self.interceptor
            .before(Some(scope), Call::ImportConversation(&conversation))
            .await?;
        self.inner.import_conversation(scope, conversation).await
    }

    async fn list_expired(&self, query: &RetentionQuery) -> Result<Vec<ExpiredConversation>> {
        self.interceptor
            .before(query.scope.as_ref(), Call::ListExpired(query))
            .await?;
        self.inner.list_expired(query).await
    }

    async fn health(&self) -> Result<()> {
        self.interceptor.before(None, Call::Health).await?;
        self.inner.health().await
    }

    async fn close(&self) {
        let _ = self.interceptor.before(None, Call::Close).await;
        self.inner.close().await;
    }
}
