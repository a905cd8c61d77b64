//! The storage contract every backend implements.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    Conversation, ConversationId, ConversationPatch, ConversationQuery, Message, MessagePage,
    MessageQuery, NewConversation, NewMessage, Page, Result, Scope, TitleSource,
};

/// The result of an append.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The conversation after the append (new `message_count`, `updated_at`, `version`).
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
/// One small trait with a few required methods, usable as `Arc<dyn Store>`. Every
/// implementation keeps the promises below; the conformance suite
/// (`store_conformance_tests!`, feature `testkit`)
/// checks each one and is the contract a third-party backend must pass.
///
/// 1. **Isolation**: every method is keyed by scope; a conversation of another scope is
///    [`Error::NotFound`](crate::Error::NotFound), and lists never include another
///    scope's rows.
/// 2. **Ordering**: `seq` is 1, 2, 3… per conversation with no gap, also under many
///    concurrent appenders.
/// 3. **Atomicity**: an append stores all of its messages or none, and moves
///    `updated_at`, `message_count` and `version` in the same transaction.
/// 4. **Idempotency**: a message whose caller-supplied id is already stored in the
///    conversation is returned as stored and not written again.
/// 5. **Optimistic concurrency**: a patch or append carrying an expected version that
///    does not match is [`Error::Conflict`](crate::Error::Conflict) and changes nothing.
/// 6. **Titles**: an automatic title never replaces a user title.
/// 7. **Deletion**: deleting a conversation removes its messages at once.
/// 8. **Listing**: keyset pages in the order of [`ConversationQuery`], never repeating a
///    row, archived rows excluded unless asked for; a bad cursor is
///    [`Error::InvalidInput`](crate::Error::InvalidInput).
/// 9. **Windows**: the last N messages in chronological order, read through an index.
/// 10. **Validation**: every input is checked with [`Limits`](crate::Limits) before
///     anything is written.
///
/// Timestamps are set by the store, in UTC truncated to milliseconds
/// ([`now`](crate::now)), never moving backwards for one conversation.
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

    /// Applies a patch: a rename makes the title a user title; any change bumps
    /// `version` and moves `updated_at`; an empty patch changes nothing but still
    /// checks `expected_version`.
    async fn update_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        patch: ConversationPatch,
    ) -> Result<Conversation>;

    /// Deletes a conversation and all its messages.
    async fn delete_conversation(&self, scope: &Scope, id: ConversationId) -> Result<()>;

    /// Appends messages atomically, assigning the next seqs in the order given.
    ///
    /// Messages whose caller id is already stored in the conversation are returned as
    /// stored and not written; when nothing new remains, nothing changes (not even
    /// the version) and `expected_version` is not checked, so a retried append
    /// succeeds. Otherwise, a given `expected_version` must match.
    async fn append_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        messages: Vec<NewMessage>,
        expected_version: Option<u64>,
    ) -> Result<Appended>;

    /// Reads a page of messages by seq.
    async fn list_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &MessageQuery,
    ) -> Result<MessagePage>;

    /// The last `n` messages in chronological order (fewer if the conversation is
    /// shorter). `n` above [`MAX_RECENT_MESSAGES`](crate::MAX_RECENT_MESSAGES) is
    /// [`Error::InvalidInput`](crate::Error::InvalidInput).
    async fn recent_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        n: usize,
    ) -> Result<Vec<Message>>;

    /// Stores an automatic title (`source` is [`TitleSource::Heuristic`] or
    /// [`TitleSource::Generated`]) unless the stored title has higher authority:
    /// a heuristic title only replaces no title; a generated one replaces no title, a
    /// heuristic or a generated one; nothing automatic replaces a user title. Applying
    /// bumps `version` but not `updated_at`: a title is not activity.
    async fn set_title_unless_user(
        &self,
        scope: &Scope,
        id: ConversationId,
        title: String,
        source: TitleSource,
    ) -> Result<TitleOutcome>;

    /// Whether the store can serve now: its server reachable, its file still the file
    /// it opened. [`Error::Unavailable`] says what is wrong. For readiness probes; the
    /// default answers `Ok`.
    async fn health(&self) -> Result<()> {
        Ok(())
    }

    /// Closes the store: writes already accepted are carried out and made durable,
    /// connections are closed, and later calls fail with
    /// [`Error::Unavailable`](crate::Error::Unavailable). Calling it again does
    /// nothing. The default does nothing, for stores with nothing to close.
    async fn close(&self) {}
}

/// Whether an automatic title from `source` may replace a title from `stored`; the
/// rule of [`Store::set_title_unless_user`], shared by every store.
pub fn automatic_title_applies(stored: TitleSource, source: TitleSource) -> bool {
    match source {
        TitleSource::Heuristic => stored == TitleSource::None,
        TitleSource::Generated => stored != TitleSource::User,
        TitleSource::None | TitleSource::User => false,
    }
}

/// Checks an expected version against the stored one; the rule of promise 5, shared
/// by every store.
///
/// # Errors
/// [`Error::Conflict`](crate::Error::Conflict) when `expected` is given and differs.
pub fn check_expected_version(expected: Option<u64>, actual: u64) -> Result<()> {
    match expected {
        Some(expected) if expected != actual => Err(crate::Error::Conflict { expected, actual }),
        _ => Ok(()),
    }
}

macro_rules! forward_store {
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
            async fn delete_conversation(&self, scope: &Scope, id: ConversationId) -> Result<()> {
                (**self).delete_conversation(scope, id).await
            }
            async fn append_messages(&self, scope: &Scope, id: ConversationId, messages: Vec<NewMessage>, expected_version: Option<u64>) -> Result<Appended> {
                (**self).append_messages(scope, id, messages, expected_version).await
            }
            async fn list_messages(&self, scope: &Scope, id: ConversationId, query: &MessageQuery) -> Result<MessagePage> {
                (**self).list_messages(scope, id, query).await
            }
            async fn recent_messages(&self, scope: &Scope, id: ConversationId, n: usize) -> Result<Vec<Message>> {
                (**self).recent_messages(scope, id, n).await
            }
            async fn set_title_unless_user(&self, scope: &Scope, id: ConversationId, title: String, source: TitleSource) -> Result<TitleOutcome> {
                (**self).set_title_unless_user(scope, id, title, source).await
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

forward_store!(Arc, Box);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_authority() {
        use TitleSource::*;
        assert!(automatic_title_applies(None, Heuristic));
        assert!(!automatic_title_applies(Heuristic, Heuristic));
        assert!(!automatic_title_applies(Generated, Heuristic));
        assert!(automatic_title_applies(Heuristic, Generated));
        assert!(automatic_title_applies(Generated, Generated));
        assert!(!automatic_title_applies(User, Generated));
        assert!(!automatic_title_applies(User, Heuristic));
        assert!(!automatic_title_applies(None, User));
    }

    #[test]
    fn store_is_object_safe() {
        fn takes(_: Option<Arc<dyn Store>>) {}
        takes(None);
    }
}
