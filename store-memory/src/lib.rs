//! # conversation-store-memory
//!
//! [`MemoryStore`]: an in-process [`Store`] for `conversation-core`. Nothing is
//! persisted; everything is lost when the process ends. It is the store for tests and
//! for hosts that keep conversations only for a session, and it is built to stay fast
//! with many rows: a list page and a window cost O(page + log n), read from ordered
//! indexes kept per scope, never a sort or a scan of the scope.
//!
//! ```
//! use std::sync::Arc;
//! use conversation_core::{Conversations, NewConversation, Scope};
//! use conversation_store_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> conversation_core::Result<()> {
//! let service = Conversations::new(Arc::new(MemoryStore::new()));
//! let scope = Scope::new("tenant-1")?;
//! let chat = service.create(&scope, NewConversation::new()).await?;
//! service.append_user(&scope, chat.id, "hello").await?;
//! assert_eq!(service.context(&scope, chat.id).await?.len(), 1);
//! # Ok(()) }
//! ```

use std::collections::{BTreeSet, HashMap};
use std::iter::Peekable;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use conversation_core::{
    Appended, ArchivedFilter, Conversation, ConversationId, ConversationPatch, ConversationQuery,
    Error, Limits, Message, MessageId, MessagePage, MessageQuery, NewConversation, NewMessage,
    Page, Result, Scope, Store, TitleOutcome, TitleSource, automatic_title_applies,
    check_expected_version, now,
};

/// An in-process [`Store`]; see the [crate docs](crate).
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: RwLock<State>,
    limits: Limits,
}

#[derive(Debug, Default)]
struct State {
    conversations: HashMap<ConversationId, Entry>,
    scopes: HashMap<Scope, ScopeIndex>,
}

#[derive(Debug)]
struct Entry {
    conversation: Conversation,
    /// `messages[i].seq == i + 1`.
    messages: Vec<Message>,
    /// Caller-supplied (and assigned) ids, to the index in `messages`.
    ids: HashMap<MessageId, usize>,
}

/// A position in list order. `Ord` is ascending; lists read it backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ListKey {
    pinned: bool,
    updated_at: DateTime<Utc>,
    id: ConversationId,
}

/// Per scope, four ordered indexes: `[archived][pinned_first]`.
#[derive(Debug, Default)]
struct ScopeIndex {
    keys: [[BTreeSet<ListKey>; 2]; 2],
}

fn list_key(conversation: &Conversation, pinned_first: bool) -> ListKey {
    ListKey {
        pinned: pinned_first && conversation.pinned,
        updated_at: conversation.updated_at,
        id: conversation.id,
    }
}

impl ScopeIndex {
    fn insert(&mut self, conversation: &Conversation) {
        let by_archive = &mut self.keys[usize::from(conversation.archived)];
        by_archive[0].insert(list_key(conversation, false));
        by_archive[1].insert(list_key(conversation, true));
    }

    fn remove(&mut self, conversation: &Conversation) {
        let by_archive = &mut self.keys[usize::from(conversation.archived)];
        by_archive[0].remove(&list_key(conversation, false));
        by_archive[1].remove(&list_key(conversation, true));
    }

    fn is_empty(&self) -> bool {
        self.keys.iter().all(|by_archive| by_archive[0].is_empty())
    }

    /// Keys strictly after `from` in list order (descending), for one partition.
    fn partition(
        &self,
        archived: bool,
        pinned_first: bool,
        from: Option<ListKey>,
    ) -> Box<dyn Iterator<Item = ListKey> + '_> {
        let set = &self.keys[usize::from(archived)][usize::from(pinned_first)];
        match from {
            Some(from) => Box::new(set.range(..from).rev().copied()),
            None => Box::new(set.iter().rev().copied()),
        }
    }

    fn ordered(
        &self,
        filter: ArchivedFilter,
        pinned_first: bool,
        from: Option<ListKey>,
    ) -> Box<dyn Iterator<Item = ListKey> + '_> {
        match filter {
            ArchivedFilter::Exclude => self.partition(false, pinned_first, from),
            ArchivedFilter::Only => self.partition(true, pinned_first, from),
            ArchivedFilter::Include => Box::new(MergeDescending {
                left: self.partition(false, pinned_first, from).peekable(),
                right: self.partition(true, pinned_first, from).peekable(),
            }),
        }
    }
}

/// Merges two descending key iterators into one descending iterator.
struct MergeDescending<I: Iterator<Item = ListKey>> {
    left: Peekable<I>,
    right: Peekable<I>,
}

impl<I: Iterator<Item = ListKey>> Iterator for MergeDescending<I> {
    type Item = ListKey;

    fn next(&mut self) -> Option<ListKey> {
        match (self.left.peek(), self.right.peek()) {
            (Some(l), Some(r)) if r > l => self.right.next(),
            (Some(_), _) => self.left.next(),
            (None, _) => self.right.next(),
        }
    }
}

impl MemoryStore {
    /// An empty store with the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store enforcing `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            state: RwLock::default(),
            limits,
        }
    }

    // A panic while holding the lock cannot leave a half-applied change: every write
    // validates first and mutates last, so the state behind a poisoned lock is whole.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn entry(&self, scope: &Scope, id: ConversationId) -> Result<&Entry> {
        self.conversations
            .get(&id)
            .filter(|entry| entry.conversation.scope == *scope)
            .ok_or_else(Error::conversation_not_found)
    }

    /// Changes a conversation row, keeping the scope's indexes in step.
    fn change(
        &mut self,
        scope: &Scope,
        id: ConversationId,
        change: impl FnOnce(&mut Entry) -> Result<()>,
    ) -> Result<&Entry> {
        let entry = self
            .conversations
            .get_mut(&id)
            .filter(|entry| entry.conversation.scope == *scope)
            .ok_or_else(Error::conversation_not_found)?;
        let before = entry.conversation.clone();
        change(entry)?;
        if let Some(index) = self.scopes.get_mut(scope) {
            index.remove(&before);
            index.insert(&entry.conversation);
        }
        Ok(entry)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_conversation(
        &self,
        scope: &Scope,
        new: NewConversation,
    ) -> Result<Conversation> {
        self.limits.check_new_conversation(&new)?;
        let conversation = new.into_conversation(scope.clone(), now());
        let mut state = self.write();
        state
            .scopes
            .entry(scope.clone())
            .or_default()
            .insert(&conversation);
        state.conversations.insert(
            conversation.id,
            Entry {
                conversation: conversation.clone(),
                messages: Vec::new(),
                ids: HashMap::new(),
            },
        );
        Ok(conversation)
    }

    async fn get_conversation(&self, scope: &Scope, id: ConversationId) -> Result<Conversation> {
        Ok(self.read().entry(scope, id)?.conversation.clone())
    }

    async fn list_conversations(
        &self,
        scope: &Scope,
        query: &ConversationQuery,
    ) -> Result<Page<Conversation>> {
        let limit = query.page_size()?;
        let position = query.position()?;
        let title_filter = query.title_filter()?;
        let state = self.read();
        let Some(index) = state.scopes.get(scope) else {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        };
        let from = position.map(|cursor| ListKey {
            pinned: cursor.pinned_first && cursor.pinned,
            updated_at: cursor.updated_at,
            id: cursor.id,
        });
        let mut rows = index
            .ordered(query.archived, query.pinned_first, from)
            .filter_map(|key| state.conversations.get(&key.id))
            .map(|entry| &entry.conversation)
            .filter(|c| query.admits(c, title_filter.as_deref()));
        let items: Vec<Conversation> = rows.by_ref().take(limit).cloned().collect();
        let next_cursor = match (items.last(), rows.next()) {
            (Some(last), Some(_)) => Some(query.cursor_after(last)),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }

    async fn update_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        patch: ConversationPatch,
    ) -> Result<Conversation> {
        self.limits.check_patch(&patch)?;
        let at = now();
        let mut state = self.write();
        let entry = state.change(scope, id, |entry| {
            check_expected_version(patch.expected_version, entry.conversation.version)?;
            patch.apply_to(&mut entry.conversation, at);
            Ok(())
        })?;
        Ok(entry.conversation.clone())
    }

    async fn delete_conversation(&self, scope: &Scope, id: ConversationId) -> Result<()> {
        let mut state = self.write();
        let conversation = state.entry(scope, id)?.conversation.clone();
        if let Some(index) = state.scopes.get_mut(scope) {
            index.remove(&conversation);
            if index.is_empty() {
                state.scopes.remove(scope);
            }
        }
        state.conversations.remove(&id);
        Ok(())
    }

    async fn append_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        messages: Vec<NewMessage>,
        expected_version: Option<u64>,
    ) -> Result<Appended> {
        self.limits.check_messages(&messages)?;
        let at = now();
        let mut stored = Vec::with_capacity(messages.len());
        let mut state = self.write();
        let entry = state.change(scope, id, |entry| {
            let is_new = |m: &NewMessage| m.id.is_none_or(|id| !entry.ids.contains_key(&id));
            if messages.iter().any(is_new) {
                check_expected_version(expected_version, entry.conversation.version)?;
            }
            let mut wrote = false;
            for message in messages {
                if let Some(&index) = message.id.as_ref().and_then(|id| entry.ids.get(id)) {
                    stored.push(entry.messages[index].clone());
                    continue;
                }
                let seq = entry.messages.len() as u64 + 1;
                let message = message.into_message(id, seq, at);
                entry.ids.insert(message.id, entry.messages.len());
                stored.push(message.clone());
                entry.messages.push(message);
                wrote = true;
            }
            if wrote {
                let conversation = &mut entry.conversation;
                conversation.message_count = entry.messages.len() as u64;
                conversation.version += 1;
                conversation.updated_at = at.max(conversation.updated_at);
            }
            Ok(())
        })?;
        Ok(Appended {
            conversation: entry.conversation.clone(),
            messages: stored,
        })
    }

    async fn list_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &MessageQuery,
    ) -> Result<MessagePage> {
        let range = query.range()?;
        let state = self.read();
        let messages = &state.entry(scope, id)?.messages;
        // seq n lives at index n - 1: the range is a slice, found in O(1).
        let count = messages.len() as u64;
        let low = range.after.min(count) as usize;
        let high = range
            .before
            .map_or(count, |before| before.saturating_sub(1).min(count))
            as usize;
        let slice = if low < high {
            &messages[low..high]
        } else {
            &[]
        };
        let (page, has_more) = if range.newest_first {
            let start = slice.len().saturating_sub(range.limit);
            (&slice[start..], start > 0)
        } else {
            let end = slice.len().min(range.limit);
            (&slice[..end], end < slice.len())
        };
        Ok(MessagePage {
            items: page.to_vec(),
            has_more,
        })
    }

    async fn recent_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        n: usize,
    ) -> Result<Vec<Message>> {
        self.limits.check_recent_count(n)?;
        let state = self.read();
        let messages = &state.entry(scope, id)?.messages;
        Ok(messages[messages.len().saturating_sub(n)..].to_vec())
    }

    async fn set_title_unless_user(
        &self,
        scope: &Scope,
        id: ConversationId,
        title: String,
        source: TitleSource,
    ) -> Result<TitleOutcome> {
        self.limits.check_automatic_title(&title, source)?;
        let mut applied = false;
        let mut state = self.write();
        let entry = state.change(scope, id, |entry| {
            let conversation = &mut entry.conversation;
            if automatic_title_applies(conversation.title_source, source) {
                conversation.title = Some(title);
                conversation.title_source = source;
                conversation.version += 1;
                applied = true;
            }
            Ok(())
        })?;
        Ok(TitleOutcome {
            conversation: entry.conversation.clone(),
            applied,
        })
    }
}
