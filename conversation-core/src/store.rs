//! The storage contract every backend implements.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use std::time::Duration;

use crate::{
    Conversation, ConversationId, ConversationPatch, ConversationQuery, ExpiredConversation,
    ImportOutcome, ImportedConversation, Message, MessageId, MessagePage, MessageQuery,
    NewConversation, NewMessage, NewRun, Page, RecentQuery, Result, RetentionQuery, Run, RunId,
    RunOutcome, Scope, SearchHit, SearchQuery, TitleSource,
};

/// Where an append attaches its first message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Parent {
    /// After the conversation's head (its first root when it is empty): a linear chat.
    #[default]
    Head,
    /// As a new root, a sibling of the conversation's first message (editing the
    /// first question).
    Root,
    /// After this message of the same conversation, opening a branch there when it
    /// already has children (edit, regenerate).
    Message(MessageId),
}

/// An append: messages, where they attach, and the conditions it runs under.
///
/// The messages form a chain: the first follows [`Append::parent`], each next one
/// follows the one before it, and the last becomes the conversation's head.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Append {
    /// The messages, in order.
    pub messages: Vec<NewMessage>,
    /// Where the first one attaches.
    pub parent: Parent,
    /// When set, the append applies only at this version (unless it is a pure retry,
    /// see [`Store::append_messages`]).
    pub expected_version: Option<u64>,
    /// A heuristic title to store in the same transaction when the conversation has
    /// no title yet and the append writes something: a new conversation's first
    /// question titles it in one commit. Checked like an automatic title.
    pub title_hint: Option<String>,
}

impl Append {
    /// An append of `messages` after the head.
    pub fn new(messages: Vec<NewMessage>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// An append of one message after the head.
    pub fn one(message: NewMessage) -> Self {
        Self::new(vec![message])
    }

    /// Attaches the first message at `parent`.
    pub fn parent(mut self, parent: Parent) -> Self {
        self.parent = parent;
        self
    }

    /// Applies only at `version`.
    pub fn expect_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Sets [`Append::title_hint`].
    pub fn title_hint(mut self, title: impl Into<String>) -> Self {
        self.title_hint = Some(title.into());
        self
    }
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The conversation after the append (new head, `message_count`, `last_seq`,
    /// `updated_at`, `version`, and the title when a hint applied).
    pub conversation: Conversation,
    /// One stored message per message given, in the order given. A message whose
    /// caller id was already stored is the stored one, unchanged.
    pub messages: Vec<Message>,
}

/// The result of [`Store::set_title_unless_user`].
#[derive(Debug, Clone, PartialEq)]
pub struct TitleOutcome {
    /// The conversation as it is now.
    pub conversation: Conversation,
    /// Whether the title given was stored; `false` when the stored title has equal
    /// or higher authority (a user title, or a generated one when a heuristic was given).
    pub applied: bool,
}

/// Where conversations and messages live.
///
/// One small trait, usable as `Arc<dyn Store>`. Every implementation keeps the
/// promises below; the conformance suite (`store_conformance_tests!`, feature
/// `testkit`) checks each one and is the contract a third-party backend must pass.
/// The rules every store shares are written once, in
/// [`conversation_core::backend`](crate::backend): a backend computes appends with
/// [`AppendPlan`](crate::backend::AppendPlan), pages with
/// [`MessageRange`](crate::backend::MessageRange) and
/// [`ConversationQuery::page_from`], patches with [`ConversationPatch::apply_to`]
/// and automatic titles with
/// [`apply_automatic_title`](crate::backend::apply_automatic_title).
///
/// ## The message tree
///
/// Every message has a parent (`None` for a root); a conversation has a **head**,
/// the leaf of its active branch. The **active path** runs from a root to the head;
/// message pages ([`MessageView::Path`](crate::MessageView::Path), the default), the
/// window ([`Store::recent_messages`]) and [`Conversations::open`](crate::Conversations::open)
/// read it. A linear chat is the tree's common case: every append follows the head.
///
/// ## Promises
///
/// 1. **Isolation**: every method is keyed by scope; a conversation of another scope is
///    [`Error::NotFound`](crate::Error::NotFound), lists never include another
///    scope's rows, and a parent, head or message of another conversation is
///    `NotFound` and links nothing across.
/// 2. **Ordering**: `seq` is assigned at append time in the order messages are given,
///    strictly increasing per conversation over the whole tree and never reused (the
///    next one is `last_seq + 1`, also after the newest message was deleted). Seqs are
///    gap-free unless messages were deleted, also under many concurrent appenders.
/// 3. **Atomicity**: an append stores all of its messages or none, and moves the head,
///    `updated_at`, `message_count`, `last_seq`, `version` (and the title, for a
///    [`Append::title_hint`]) in the same transaction.
/// 4. **Idempotency**: a message whose caller-supplied id is already stored in the
///    conversation is returned as stored and not written again.
/// 5. **Optimistic concurrency**: a patch, append or message deletion carrying an
///    expected version that does not match is
///    [`Error::Conflict`](crate::Error::Conflict) and changes nothing.
/// 6. **Titles**: an automatic title never replaces a user title.
/// 7. **Deletion**: deleting a conversation, or a message with its descendants,
///    removes it at once: nothing of it can be read or listed afterwards.
/// 8. **Listing**: keyset pages in the order of [`ConversationQuery`], never repeating a
///    row, archived rows excluded unless asked for; a bad cursor is
///    [`Error::InvalidInput`](crate::Error::InvalidInput).
/// 9. **Windows and pages**: the last N messages of a path in chronological order,
///    read through an index, at a cost that does not grow with the conversation or
///    its tree; message pages stop at [`Limits::max_page_bytes`](crate::Limits::max_page_bytes).
/// 10. **Tree**: the head always names a stored message of the conversation (`None`
///     only when it is empty), and it is always a leaf (every operation that moves it
///     moves it to a leaf: an append, a switch to the newest leaf under a message, a
///     delete to the newest remaining leaf); a parent is always in the same conversation;
///     concurrent appends, branching, switching and deleting never lose an
///     acknowledged message that was not deleted, never leave a message whose parent
///     is gone, and never leave the head on a deleted message.
/// 11. **Validation**: every input is checked with [`Limits`](crate::Limits) before
///     anything is written.
/// 12. **Time**: timestamps come from the store's [`Clock`](crate::Clock), in UTC
///     truncated to milliseconds, and never move backwards within a conversation,
///     even when the clock steps back.
/// 13. **Runs**: at most one live run per conversation; a start while one is live is
///     [`Error::RunInProgress`](crate::Error::RunInProgress) and writes nothing. A
///     run is live while `running` and within its lease (up to its last millisecond);
///     every run a store returns is [`Run::settled`](crate::Run::settled), so one
///     whose lease passed reads as failed (`abandoned`) and a new start takes its
///     place. A run ends once
///     ([`RunOutcome::apply_to`](crate::RunOutcome::apply_to)); its usage is added to
///     the conversation's totals and `active_run_id` is cleared in the same
///     transaction. A write that finds a run's lease passed (a start, renewal, cancel
///     or finish) stores its end as failed (`abandoned`, adding no usage) and clears
///     `active_run_id` when it names it; until such a write, `active_run_id` still
///     names the abandoned run (reads do not change it), so read the run to know
///     whether it is live. Starting and ending runs change neither `version` nor
///     `updated_at` (the messages a run appends do). Run status lives in the store,
///     so every server instance reads the same.
/// 14. **Search**: what is acknowledged is found by [`Store::search`], what is deleted
///     never is; a search never crosses scopes; the user's text is only ever words
///     ([`SearchTerms`](crate::backend::SearchTerms)), never query syntax; every store finds
///     the same conversations for the same text (ranking may differ).
/// 15. **Import**: a conversation is imported whole, as given, or not at all.
/// 16. **Retention**: [`Store::list_expired`] reads an index, oldest first, never a
///     scan of every conversation.
///
/// Every [`Message`] a store returns carries its [`Siblings`](crate::Siblings) as they
/// are at the time of the read.
///
/// ## Which error first
///
/// A call that breaks several rules gets the first error in this order, in every
/// store, and nothing is written: [`Error::InvalidInput`](crate::Error::InvalidInput)
/// for the input (checked before anything is read);
/// [`Error::NotFound`](crate::Error::NotFound) for the conversation (also one of
/// another scope), then for a message the call names (an append's parent, a switch's
/// head, the message to read, delete or fork at, a window's leaf); then
/// [`Error::Conflict`](crate::Error::Conflict) for the expected version. An append
/// whose messages are all stored already (a pure retry) succeeds once its parent is
/// found, without the version check. (A fork whose metadata, with `forkedFrom`
/// added, would exceed the limit is `InvalidInput` after the lookups: it depends on
/// the stored source, not on the input.)
#[async_trait]
pub trait Store: Send + Sync + Debug + 'static {
    /// Creates a conversation in `scope`. A title given is a user title.
    async fn create_conversation(
        &self,
        scope: &Scope,
        new: NewConversation,
    ) -> Result<Conversation>;

    /// Reads one conversation.
    async fn get_conversation(&self, scope: &Scope, id: ConversationId) -> Result<Conversation>;

    /// Reads one page of the scope's conversations.
    async fn list_conversations(
        &self,
        scope: &Scope,
        query: &ConversationQuery,
    ) -> Result<Page<Conversation>>;

    /// Applies a patch with [`ConversationPatch::apply_to`]: a rename makes the title a
    /// user title; `head_id` switches branch (the head moves to the newest leaf under
    /// that message, `NotFound` when it is not a message of this conversation, before
    /// `expected_version` is checked); any change bumps `version`; an empty patch
    /// changes nothing but still checks `expected_version`.
    async fn update_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        patch: ConversationPatch,
    ) -> Result<Conversation>;

    /// Deletes a conversation and all its messages (and runs), at `expected_version`
    /// when given ([`Error::Conflict`](crate::Error::Conflict) otherwise, nothing
    /// deleted). The SQL stores leave no recoverable bytes of it in their files.
    async fn delete_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        expected_version: Option<u64>,
    ) -> Result<()>;

    /// Appends a chain of messages atomically at [`Append::parent`], assigning the
    /// next seqs in the order given; the last new message becomes the head. The plan
    /// is [`AppendPlan`](crate::backend::AppendPlan)'s.
    ///
    /// Messages whose caller id is already stored in the conversation are returned as
    /// stored and take no part in the chain; when nothing new remains, nothing changes
    /// (not even the version) and `expected_version` is not checked, so a retried
    /// append succeeds. Otherwise, a given `expected_version` must match. A parent that
    /// is not a message of this conversation is
    /// [`Error::NotFound`](crate::Error::NotFound) and nothing is written.
    async fn append_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        append: Append,
    ) -> Result<Appended>;

    /// Reads one message of the conversation.
    async fn get_message(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Message>;

    /// Reads a page of messages by seq: of the active path
    /// ([`MessageView::Path`](crate::MessageView::Path)) or of every message of the
    /// tree ([`MessageView::All`](crate::MessageView::All)), as planned by
    /// [`MessageQuery::range`].
    async fn list_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &MessageQuery,
    ) -> Result<MessagePage>;

    /// The last `query.n` messages of the active path (or of the path ending at
    /// `query.leaf`) in chronological order, fewer if the path is shorter.
    async fn recent_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &RecentQuery,
    ) -> Result<Vec<Message>>;

    /// Deletes `message` and all its descendants. When the head was among them, it
    /// moves to the newest leaf left under the deleted message's parent (for a root,
    /// under any remaining root), or to the parent itself, or to nothing when the
    /// conversation is left empty. Moves `updated_at`, bumps `version`, lowers
    /// `message_count`; `last_seq` stays. A message that is not in the conversation
    /// (also one deleted before) is [`Error::NotFound`](crate::Error::NotFound).
    async fn delete_message(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
        expected_version: Option<u64>,
    ) -> Result<Conversation>;

    /// Creates a new conversation in the same scope holding a copy of the path from
    /// the root to `message`: the same ids, roles, contents, tool calls, metadata and
    /// timestamps, new seqs from 1, the last copied message as its head. Its row is
    /// [`fork_of`](crate::backend::fork_of)'s: the source's title marked
    /// heuristic, the source's metadata with `forkedFrom = {conversationId,
    /// messageId}`, not pinned or archived, created at the clock's time but not
    /// before the source's last activity (so it never predates its copies). The
    /// source is unchanged.
    async fn fork_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Conversation>;

    /// Stores an automatic title (`source` is [`TitleSource::Heuristic`] or
    /// [`TitleSource::Generated`]) unless the stored title has higher authority
    /// ([`apply_automatic_title`](crate::backend::apply_automatic_title)). Applying
    /// bumps `version` but not `updated_at`: a title is not activity.
    async fn set_title_unless_user(
        &self,
        scope: &Scope,
        id: ConversationId,
        title: String,
        source: TitleSource,
    ) -> Result<TitleOutcome>;

    /// Starts a run in the conversation and makes it its `active_run_id` (promise
    /// 13). A live run there already is
    /// [`Error::RunInProgress`](crate::Error::RunInProgress); an abandoned one is
    /// ended as failed (`abandoned`) first. A start whose id names a run the
    /// conversation has already (a retry after a lost answer) returns that run as it
    /// is and writes nothing: an ended run is never started again.
    async fn start_run(&self, scope: &Scope, id: ConversationId, run: NewRun) -> Result<Run>;

    /// Extends a running run's lease to `lease` from now and returns it (with
    /// `cancel_requested`, for a runner in another process than the canceller). A run
    /// that has ended is returned unchanged; one whose lease has passed is ended
    /// (promise 13) and returned so.
    async fn renew_run(
        &self,
        scope: &Scope,
        id: ConversationId,
        run: RunId,
        lease: Duration,
    ) -> Result<Run>;

    /// Asks a running run to stop (`cancel_requested`); its runner stops it. A run
    /// that has ended is returned unchanged; one whose lease has passed is ended
    /// (promise 13) and returned so.
    async fn cancel_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run>;

    /// Ends a run with `outcome` ([`RunOutcome::apply_to`](crate::RunOutcome::apply_to)),
    /// adds its usage to the conversation and clears `active_run_id`. A run that has
    /// ended is returned unchanged; one whose lease has passed ends abandoned, not
    /// with `outcome`, and adds no usage.
    async fn finish_run(
        &self,
        scope: &Scope,
        id: ConversationId,
        run: RunId,
        outcome: RunOutcome,
    ) -> Result<Run>;

    /// Reads a run of the conversation.
    async fn get_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run>;

    /// Finds the scope's conversations whose title or messages hold the words of
    /// `query` (promise 14): ranked by relevance (the best-matching title or message
    /// of each), ties by newest activity, then by id
    /// ([`rank_order`](crate::backend::rank_order)); each hit with one match per row
    /// that holds every word (its title, each message of any branch, whatever its
    /// role), up to [`MAX_MATCHES_PER_HIT`](crate::MAX_MATCHES_PER_HIT), built with
    /// [`SearchMatch`](crate::SearchMatch) from the stored text; pages by
    /// [`SearchQuery::page_from`](crate::SearchQuery::page_from). A message's text is
    /// its content: tool-call arguments and metadata are not searched.
    async fn search(&self, scope: &Scope, query: &SearchQuery) -> Result<Page<SearchHit>>;

    /// Imports a whole conversation into `scope`, as given (ids, seqs, parents, head,
    /// timestamps, counters, version), after
    /// [`ImportedConversation::check`](crate::ImportedConversation::check); atomically.
    /// Its own `scope` field is not read; its timestamps are kept to the millisecond,
    /// as every timestamp (promise 12); siblings are derived from the parents.
    /// [`ImportOutcome::AlreadyPresent`] when its id is in the scope already,
    /// [`ImportOutcome::IdTaken`] when another scope has it; nothing is written then.
    async fn import_conversation(
        &self,
        scope: &Scope,
        conversation: ImportedConversation,
    ) -> Result<ImportOutcome>;

    /// The conversations that expire by `query`, oldest (by the time that counts)
    /// first, then by id, at most `query.limit` (promise 16). Across scopes when
    /// `query.scope` is `None`: an operator's function, never exposed per scope. The
    /// cutoff is compared as given ([`RetentionQuery::expired_at`](crate::RetentionQuery::expired_at)),
    /// never rounded to the milliseconds times are stored with.
    async fn list_expired(&self, query: &RetentionQuery) -> Result<Vec<ExpiredConversation>>;

    /// Whether the store can serve now: its server reachable, its file still the file
    /// it opened. [`Error::Unavailable`](crate::Error::Unavailable) says what is
    /// wrong. For readiness probes; the default answers `Ok`.
    async fn health(&self) -> Result<()> {
        Ok(())
    }

    /// Closes the store: writes already accepted are carried out and made durable,
    /// connections are closed, and later calls fail with
    /// [`Error::Unavailable`](crate::Error::Unavailable). Calling it again does
    /// nothing. The default does nothing, for stores with nothing to close.
    async fn close(&self) {}
}

macro_rules! forward_pointer {
    ($($pointer:ident),*) => {$(
        #[async_trait]
        impl<T: Store + ?Sized> Store for $pointer<T> {
            async fn create_conversation(&self, scope: &Scope, new: NewConversation) -> Result<Conversation> {
                (**self).create_conversation(scope, new).await
            }
            async fn get_conversation(&self, scope: &Scope, id: ConversationId) -> Result<Conversation> {
                (**self).get_conversation(scope, id).await
            }
            async fn list_conversations(&self, scope: &Scope, query: &ConversationQuery) -> Result<Page<Conversation>> {
                (**self).list_conversations(scope, query).await
            }
            async fn update_conversation(&self, scope: &Scope, id: ConversationId, patch: ConversationPatch) -> Result<Conversation> {
                (**self).update_conversation(scope, id, patch).await
            }
            async fn delete_conversation(&self, scope: &Scope, id: ConversationId, expected_version: Option<u64>) -> Result<()> {
                (**self).delete_conversation(scope, id, expected_version).await
            }
            async fn append_messages(&self, scope: &Scope, id: ConversationId, append: Append) -> Result<Appended> {
                (**self).append_messages(scope, id, append).await
            }
            async fn get_message(&self, scope: &Scope, id: ConversationId, message: MessageId) -> Result<Message> {
                (**self).get_message(scope, id, message).await
            }
            async fn list_messages(&self, scope: &Scope, id: ConversationId, query: &MessageQuery) -> Result<MessagePage> {
                (**self).list_messages(scope, id, query).await
            }
            async fn recent_messages(&self, scope: &Scope, id: ConversationId, query: &RecentQuery) -> Result<Vec<Message>> {
                (**self).recent_messages(scope, id, query).await
            }
            async fn delete_message(&self, scope: &Scope, id: ConversationId, message: MessageId, expected_version: Option<u64>) -> Result<Conversation> {
                (**self).delete_message(scope, id, message, expected_version).await
            }
            async fn fork_conversation(&self, scope: &Scope, id: ConversationId, message: MessageId) -> Result<Conversation> {
                (**self).fork_conversation(scope, id, message).await
            }
            async fn set_title_unless_user(&self, scope: &Scope, id: ConversationId, title: String, source: TitleSource) -> Result<TitleOutcome> {
                (**self).set_title_unless_user(scope, id, title, source).await
            }
            async fn start_run(&self, scope: &Scope, id: ConversationId, run: NewRun) -> Result<Run> {
                (**self).start_run(scope, id, run).await
            }
            async fn renew_run(&self, scope: &Scope, id: ConversationId, run: RunId, lease: Duration) -> Result<Run> {
                (**self).renew_run(scope, id, run, lease).await
            }
            async fn cancel_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
                (**self).cancel_run(scope, id, run).await
            }
            async fn finish_run(&self, scope: &Scope, id: ConversationId, run: RunId, outcome: RunOutcome) -> Result<Run> {
                (**self).finish_run(scope, id, run, outcome).await
            }
            async fn get_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
                (**self).get_run(scope, id, run).await
            }
            async fn search(&self, scope: &Scope, query: &SearchQuery) -> Result<Page<SearchHit>> {
                (**self).search(scope, query).await
            }
            async fn import_conversation(&self, scope: &Scope, conversation: ImportedConversation) -> Result<ImportOutcome> {
                (**self).import_conversation(scope, conversation).await
            }
            async fn list_expired(&self, query: &RetentionQuery) -> Result<Vec<ExpiredConversation>> {
                (**self).list_expired(query).await
            }
            async fn health(&self) -> Result<()> {
                (**self).health().await
            }
            async fn close(&self) {
                (**self).close().await
            }
        }
    )*};
}

forward_pointer!(Arc, Box);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_object_safe() {
        fn takes(_: Option<Arc<dyn Store>>) {}
        takes(None);
    }
}
