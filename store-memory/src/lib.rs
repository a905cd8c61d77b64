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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::iter::Peekable;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use conversation_core::backend::{
    AppendPlan, ResolvedParent, SearchTerms, apply_automatic_title, check_expected_version,
    fork_messages, fork_of, lease_end, rank_order, stamp, tokenize, truncate_to_millis,
};
use conversation_core::{
    Append, Appended, ArchivedFilter, Clock, Conversation, ConversationId, ConversationPatch,
    ConversationQuery, Entity, Error, ExpiredConversation, Expiry, ImportOutcome,
    ImportedConversation, Limits, MAX_MATCHES_PER_HIT, Message, MessageId, MessagePage,
    MessageQuery, MessageView, NewConversation, NewRun, Page, Parent, RecentQuery, Result,
    RetentionQuery, Run, RunId, RunOutcome, RunStatus, Scope, SearchHit, SearchMatch, SearchQuery,
    Siblings, Store, SystemClock, TitleOutcome, TitleSource,
};

/// An in-process [`Store`]; see the [crate docs](crate).
#[derive(Debug)]
pub struct MemoryStore {
    state: RwLock<State>,
    limits: Limits,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    conversations: HashMap<ConversationId, Entry>,
    scopes: HashMap<Scope, ScopeIndex>,
    /// `(updated_at, id)` of every conversation: retention by inactivity.
    by_activity: BTreeSet<(DateTime<Utc>, ConversationId)>,
    /// `(archived_at, id)` of every archived conversation: retention by archive age.
    by_archive: BTreeSet<(DateTime<Utc>, ConversationId)>,
}

/// A conversation and its message tree.
#[derive(Debug)]
struct Entry {
    conversation: Conversation,
    /// Every message, by seq.
    nodes: BTreeMap<u64, Node>,
    /// Message ids to seqs.
    ids: HashMap<MessageId, u64>,
    /// The roots' seqs, ascending.
    roots: Vec<u64>,
    /// Its runs.
    runs: HashMap<RunId, Run>,
    /// The active path's seqs, root first; ascending, because a child's seq is
    /// larger than its parent's. A page of the path is a slice of it.
    path: Vec<u64>,
}

#[derive(Debug)]
struct Node {
    /// As stored; its `siblings` are filled in when it is read.
    message: Message,
    parent: Option<u64>,
    /// The children's seqs, ascending.
    children: Vec<u64>,
}

impl Entry {
    fn new(conversation: Conversation) -> Self {
        Self {
            conversation,
            nodes: BTreeMap::new(),
            ids: HashMap::new(),
            roots: Vec::new(),
            runs: HashMap::new(),
            path: Vec::new(),
        }
    }

    /// An entry holding an imported conversation and its messages (checked already).
    fn imported(imported: ImportedConversation) -> Result<Self> {
        let head = imported.conversation.head_id;
        let mut entry = Entry::new(imported.conversation);
        for message in imported.messages {
            let seq = message.seq;
            let parent = match message.parent_id {
                Some(parent) => {
                    let parent = entry.seq_of(parent)?;
                    if let Some(node) = entry.nodes.get_mut(&parent) {
                        node.children.push(seq);
                    }
                    Some(parent)
                }
                None => {
                    entry.roots.push(seq);
                    None
                }
            };
            entry.ids.insert(message.id, seq);
            entry.nodes.insert(
                seq,
                Node {
                    message,
                    parent,
                    children: Vec::new(),
                },
            );
        }
        if let Some(head) = head {
            entry.path = entry.ancestry(entry.seq_of(head)?)?;
        }
        Ok(entry)
    }

    /// Every message's words, for the search index.
    fn texts(&self) -> impl Iterator<Item = (u64, &str)> {
        self.nodes
            .iter()
            .map(|(&seq, node)| (seq, node.message.content.as_str()))
    }

    fn seq_of(&self, id: MessageId) -> Result<u64> {
        self.ids.get(&id).copied().ok_or(Error::NotFound {
            entity: Entity::Message,
        })
    }

    fn node(&self, seq: u64) -> Result<&Node> {
        self.nodes.get(&seq).ok_or_else(|| Error::Backend {
            message: format!("message {seq} is missing from its tree"),
            source: None,
        })
    }

    fn siblings_of(&self, seq: u64) -> &[u64] {
        match self.nodes.get(&seq).and_then(|node| node.parent) {
            Some(parent) => self
                .nodes
                .get(&parent)
                .map_or(&[][..], |p| p.children.as_slice()),
            None => &self.roots,
        }
    }

    /// The message at `seq` as read now, with its siblings.
    fn read(&self, seq: u64) -> Result<Message> {
        let mut message = self.node(seq)?.message.clone();
        let siblings = self.siblings_of(seq);
        let index = siblings.binary_search(&seq).unwrap_or(0);
        message.siblings = Siblings {
            ids: siblings[Siblings::window(siblings.len(), index)]
                .iter()
                .map(|&s| self.node(s).map(|n| n.message.id))
                .collect::<Result<_>>()?,
            count: siblings.len() as u64,
            index: index as u64,
        };
        Ok(message)
    }

    fn on_path(&self, seq: u64) -> bool {
        self.path.binary_search(&seq).is_ok()
    }

    /// The seqs from a root to `seq`, root first.
    fn ancestry(&self, seq: u64) -> Result<Vec<u64>> {
        let mut chain = vec![seq];
        let mut at = self.node(seq)?.parent;
        while let Some(parent) = at {
            chain.push(parent);
            at = self.node(parent)?.parent;
        }
        chain.reverse();
        Ok(chain)
    }

    /// The newest message under `seq` (itself included): the largest seq of its
    /// subtree, which is always a leaf since a child's seq exceeds its parent's.
    fn newest_leaf_under(&self, seq: u64) -> Result<u64> {
        let mut newest = seq;
        let mut stack = vec![seq];
        while let Some(at) = stack.pop() {
            newest = newest.max(at);
            stack.extend_from_slice(&self.node(at)?.children);
        }
        Ok(newest)
    }

    /// Makes `head` the head and the path end at it: walks up from it to the first
    /// message on the current path, cuts the path there and adds the walk.
    fn set_head(&mut self, head: Option<u64>) -> Result<()> {
        let Some(head) = head else {
            self.path.clear();
            self.conversation.head_id = None;
            return Ok(());
        };
        let mut tail = Vec::new();
        let mut at = Some(head);
        while let Some(seq) = at {
            if self.on_path(seq) {
                break;
            }
            tail.push(seq);
            at = self.node(seq)?.parent;
        }
        let keep = match at {
            Some(joint) => self.path.partition_point(|&s| s <= joint),
            None => 0,
        };
        self.path.truncate(keep);
        self.path.extend(tail.into_iter().rev());
        self.conversation.head_id = Some(self.node(head)?.message.id);
        Ok(())
    }

    fn resolve(&self, parent: Parent) -> Result<ResolvedParent> {
        let message = |seq: u64| -> Result<ResolvedParent> {
            Ok(ResolvedParent::Message {
                id: self.node(seq)?.message.id,
                seq,
            })
        };
        match parent {
            Parent::Root => Ok(ResolvedParent::Root),
            Parent::Head => self
                .path
                .last()
                .map_or(Ok(ResolvedParent::Root), |&s| message(s)),
            Parent::Message(id) => message(self.seq_of(id)?),
        }
    }

    /// Writes a planned append into the tree.
    fn insert(&mut self, plan: &AppendPlan) -> Result<()> {
        let mut parent = plan.parent().seq();
        for message in plan.new_messages() {
            let seq = message.seq;
            match parent {
                Some(p) => self
                    .nodes
                    .get_mut(&p)
                    .ok_or(Error::NotFound {
                        entity: Entity::Message,
                    })?
                    .children
                    .push(seq),
                None => self.roots.push(seq),
            }
            self.ids.insert(message.id, seq);
            self.nodes.insert(
                seq,
                Node {
                    message: message.clone(),
                    parent,
                    children: Vec::new(),
                },
            );
            parent = Some(seq);
        }
        self.set_head(plan.head_seq())
    }

    /// The seqs and contents of `seq`'s subtree, itself included.
    fn subtree_texts(&self, seq: u64) -> Result<Vec<(u64, String)>> {
        let mut texts = Vec::new();
        let mut stack = vec![seq];
        while let Some(at) = stack.pop() {
            let node = self.node(at)?;
            texts.push((at, node.message.content.clone()));
            stack.extend_from_slice(&node.children);
        }
        Ok(texts)
    }

    /// Removes `seq` and its subtree; returns how many messages went.
    fn remove_subtree(&mut self, seq: u64) -> Result<u64> {
        let parent = self.node(seq)?.parent;
        match parent.and_then(|p| self.nodes.get_mut(&p)) {
            Some(parent) => parent.children.retain(|&c| c != seq),
            None => self.roots.retain(|&r| r != seq),
        }
        let mut removed = 0;
        let mut stack = vec![seq];
        while let Some(at) = stack.pop() {
            if let Some(node) = self.nodes.remove(&at) {
                self.ids.remove(&node.message.id);
                stack.extend(node.children);
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A position in list order. `Ord` is ascending; lists read it backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ListKey {
    pinned: bool,
    updated_at: DateTime<Utc>,
    id: ConversationId,
}

/// Per scope, four ordered indexes: `[archived][pinned_first]`, and the search index.
#[derive(Debug, Default)]
struct ScopeIndex {
    keys: [[BTreeSet<ListKey>; 2]; 2],
    words: WordIndex,
}

/// A row of the search index: a conversation's title (`seq` 0) or one of its
/// messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Row {
    conversation: ConversationId,
    seq: u64,
}

/// An inverted index of a scope's titles and messages: word → rows, with core's
/// tokenizer, so a search reads the postings of its words, never every message.
#[derive(Debug, Default)]
struct WordIndex {
    postings: BTreeMap<String, HashSet<Row>>,
    rows: usize,
}

impl WordIndex {
    fn distinct_words(text: &str) -> HashSet<String> {
        tokenize(text).into_iter().map(|token| token.word).collect()
    }

    fn add(&mut self, row: Row, text: &str) {
        let words = Self::distinct_words(text);
        if words.is_empty() {
            return;
        }
        self.rows += 1;
        for word in words {
            self.postings.entry(word).or_default().insert(row);
        }
    }

    fn remove(&mut self, row: Row, text: &str) {
        let words = Self::distinct_words(text);
        if words.is_empty() {
            return;
        }
        self.rows = self.rows.saturating_sub(1);
        for word in words {
            if let Some(rows) = self.postings.get_mut(&word) {
                rows.remove(&row);
                if rows.is_empty() {
                    self.postings.remove(&word);
                }
            }
        }
    }

    /// The rows holding every word of `terms` (the last as a prefix when asked), each
    /// scored by the rarity of the words it matched (a sum of inverse document
    /// frequencies).
    fn find(&self, terms: &SearchTerms) -> HashMap<Row, f64> {
        let rows = self.rows.max(1) as f64;
        let words = terms.words();
        let mut found: Option<HashMap<Row, f64>> = None;
        for (i, word) in words.iter().enumerate() {
            let mut matching: HashSet<Row> = HashSet::new();
            if terms.prefix() && i + 1 == words.len() {
                for (_, postings) in self
                    .postings
                    .range(word.clone()..)
                    .take_while(|(key, _)| key.starts_with(word.as_str()))
                {
                    matching.extend(postings.iter().copied());
                }
            } else if let Some(postings) = self.postings.get(word) {
                matching.extend(postings.iter().copied());
            }
            let weight = (1.0 + rows / matching.len().max(1) as f64).ln();
            found = Some(match found {
                None => matching.into_iter().map(|row| (row, weight)).collect(),
                Some(previous) => previous
                    .into_iter()
                    .filter(|(row, _)| matching.contains(row))
                    .map(|(row, score)| (row, score + weight))
                    .collect(),
            });
        }
        found.unwrap_or_default()
    }
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
        self.keys.iter().all(|by_archive| by_archive[0].is_empty()) && self.words.rows == 0
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
            limits,
            ..Self::default()
        }
    }

    /// Reads the time from `clock` instead of the system clock (for tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    // A panic while holding the lock cannot leave a half-applied change: every write
    // validates and plans first and mutates last, so the state behind a poisoned
    // lock is whole.
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

    /// Adds a conversation (new, forked or imported) with every index.
    fn insert(&mut self, entry: Entry) {
        let conversation = &entry.conversation;
        let index = self.scopes.entry(conversation.scope.clone()).or_default();
        index.insert(conversation);
        if let Some(title) = &conversation.title {
            index.words.add(title_row(conversation.id), title);
        }
        for (seq, text) in entry.texts() {
            index.words.add(
                Row {
                    conversation: conversation.id,
                    seq,
                },
                text,
            );
        }
        index_retention(
            &mut self.by_activity,
            &mut self.by_archive,
            None,
            Some(conversation),
        );
        self.conversations.insert(conversation.id, entry);
    }

    /// Changes a conversation, keeping the scope's list, search and retention indexes
    /// in step; the change gets the scope's word index for the messages it adds or
    /// removes. Returns the change's result and the conversation after it.
    fn change<R>(
        &mut self,
        scope: &Scope,
        id: ConversationId,
        change: impl FnOnce(&mut Entry, &mut WordIndex) -> Result<R>,
    ) -> Result<(R, Conversation)> {
        let entry = self
            .conversations
            .get_mut(&id)
            .filter(|entry| entry.conversation.scope == *scope)
            .ok_or_else(Error::conversation_not_found)?;
        let index = self.scopes.entry(scope.clone()).or_default();
        let before = entry.conversation.clone();
        let result = change(entry, &mut index.words)?;
        let after = &entry.conversation;
        index.remove(&before);
        index.insert(after);
        if before.title != after.title {
            if let Some(title) = &before.title {
                index.words.remove(title_row(id), title);
            }
            if let Some(title) = &after.title {
                index.words.add(title_row(id), title);
            }
        }
        index_retention(
            &mut self.by_activity,
            &mut self.by_archive,
            Some(&before),
            Some(after),
        );
        Ok((result, after.clone()))
    }
}

fn title_row(conversation: ConversationId) -> Row {
    Row {
        conversation,
        seq: 0,
    }
}

/// Moves a conversation's entries in the retention indexes from `before` to `after`.
fn index_retention(
    by_activity: &mut BTreeSet<(DateTime<Utc>, ConversationId)>,
    by_archive: &mut BTreeSet<(DateTime<Utc>, ConversationId)>,
    before: Option<&Conversation>,
    after: Option<&Conversation>,
) {
    if let Some(before) = before {
        by_activity.remove(&(before.updated_at, before.id));
        if let Some(at) = before.archived_at {
            by_archive.remove(&(at, before.id));
        }
    }
    if let Some(after) = after {
        by_activity.insert((after.updated_at, after.id));
        if let (true, Some(at)) = (after.archived, after.archived_at) {
            by_archive.insert((at, after.id));
        }
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
        let conversation =
            new.into_conversation(scope.clone(), truncate_to_millis(self.clock.now()));
        self.write().insert(Entry::new(conversation.clone()));
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
        query.check_metadata_filter()?;
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
        let rows = index
            .ordered(query.archived, query.pinned_first, from)
            .filter_map(|key| state.conversations.get(&key.id))
            .map(|entry| &entry.conversation)
            .filter(|c| query.admits(c, title_filter.as_deref()))
            .take(limit + 1)
            .cloned()
            .collect();
        Ok(query.page_from(rows, limit))
    }

    async fn update_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        patch: ConversationPatch,
    ) -> Result<Conversation> {
        self.limits.check_patch(&patch)?;
        let mut state = self.write();
        let ((), conversation) = state.change(scope, id, |entry, _| {
            let head = match patch.head_id {
                Some(target) => Some(entry.newest_leaf_under(entry.seq_of(target)?)?),
                None => None,
            };
            check_expected_version(patch.expected_version, entry.conversation.version)?;
            let at = stamp(&*self.clock, entry.conversation.updated_at);
            let new_head = head
                .map(|seq| entry.node(seq).map(|n| n.message.id))
                .transpose()?;
            let mut changed = entry.conversation.clone();
            patch.apply_to(&mut changed, new_head, at, &self.limits)?;
            if head.is_some() {
                entry.set_head(head)?;
            }
            entry.conversation = changed;
            Ok(())
        })?;
        Ok(conversation)
    }

    async fn delete_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        expected_version: Option<u64>,
    ) -> Result<()> {
        let mut state = self.write();
        let entry = state.entry(scope, id)?;
        check_expected_version(expected_version, entry.conversation.version)?;
        let Some(entry) = state.conversations.remove(&id) else {
            return Err(Error::conversation_not_found());
        };
        let State {
            scopes,
            by_activity,
            by_archive,
            ..
        } = &mut *state;
        index_retention(by_activity, by_archive, Some(&entry.conversation), None);
        if let Some(index) = scopes.get_mut(scope) {
            index.remove(&entry.conversation);
            if let Some(title) = &entry.conversation.title {
                index.words.remove(title_row(id), title);
            }
            for (seq, text) in entry.texts() {
                index.words.remove(
                    Row {
                        conversation: id,
                        seq,
                    },
                    text,
                );
            }
            if index.is_empty() {
                scopes.remove(scope);
            }
        }
        Ok(())
    }

    async fn append_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        append: Append,
    ) -> Result<Appended> {
        self.limits.check_append(&append)?;
        let now = self.clock.now();
        let mut state = self.write();
        let (plan, _) = state.change(scope, id, |entry, words| {
            let parent = entry.resolve(append.parent)?;
            let existing = append
                .messages
                .iter()
                .map(|m| {
                    m.id.and_then(|id| entry.ids.get(&id))
                        .map(|&seq| entry.node(seq).map(|n| n.message.clone()))
                        .transpose()
                })
                .collect::<Result<Vec<_>>>()?;
            let plan = AppendPlan::new(entry.conversation.clone(), parent, append, existing, now)?;
            if plan.writes() {
                entry.insert(&plan)?;
                entry.conversation = plan.conversation().clone();
                for message in plan.new_messages() {
                    words.add(
                        Row {
                            conversation: id,
                            seq: message.seq,
                        },
                        &message.content,
                    );
                }
            }
            Ok(plan)
        })?;
        let entry = state.entry(scope, id)?;
        plan.into_appended(|message| match entry.ids.get(&message.id) {
            Some(&seq) => entry.read(seq).map(|m| m.siblings),
            None => Ok(Siblings::only(message.id)),
        })
    }

    async fn get_message(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Message> {
        let state = self.read();
        let entry = state.entry(scope, id)?;
        entry.read(entry.seq_of(message)?)
    }

    async fn list_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &MessageQuery,
    ) -> Result<MessagePage> {
        let range = query.range()?;
        let state = self.read();
        let entry = state.entry(scope, id)?;
        let upper = range.before.unwrap_or(u64::MAX);
        // Read one more than the page so the builder learns whether more follow.
        let seqs: Vec<u64> = match range.view {
            MessageView::Path => {
                let low = entry.path.partition_point(|&s| s <= range.after);
                let high = entry.path.partition_point(|&s| s < upper);
                let slice = entry.path.get(low..high).unwrap_or(&[]);
                if range.newest_first {
                    slice.iter().rev().take(range.limit + 1).copied().collect()
                } else {
                    slice.iter().take(range.limit + 1).copied().collect()
                }
            }
            _ => {
                // `BTreeMap::range` panics on a range that ends before it starts.
                let lower = range.after.saturating_add(1).min(upper);
                let keys = entry.nodes.range(lower..upper).map(|(&s, _)| s);
                if range.newest_first {
                    keys.rev().take(range.limit + 1).collect()
                } else {
                    keys.take(range.limit + 1).collect()
                }
            }
        };
        let mut page = range.page_builder(self.limits.max_page_bytes);
        for seq in seqs {
            if !page.push(entry.read(seq)?) {
                break;
            }
        }
        Ok(page.finish())
    }

    async fn recent_messages(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &RecentQuery,
    ) -> Result<Vec<Message>> {
        self.limits.check_recent(query)?;
        let state = self.read();
        let entry = state.entry(scope, id)?;
        let seqs: Vec<u64> = match query.leaf {
            None => entry.path[entry.path.len().saturating_sub(query.n)..].to_vec(),
            Some(leaf) => {
                let mut seqs = Vec::with_capacity(query.n);
                let mut at = Some(entry.seq_of(leaf)?);
                while let Some(seq) = at.filter(|_| seqs.len() < query.n) {
                    seqs.push(seq);
                    at = entry.node(seq)?.parent;
                }
                seqs.reverse();
                seqs
            }
        };
        seqs.into_iter().map(|seq| entry.read(seq)).collect()
    }

    async fn delete_message(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
        expected_version: Option<u64>,
    ) -> Result<Conversation> {
        let mut state = self.write();
        let ((), conversation) = state.change(scope, id, |entry, words| {
            let seq = entry.seq_of(message)?;
            check_expected_version(expected_version, entry.conversation.version)?;
            let parent = entry.node(seq)?.parent;
            let head_deleted = entry.on_path(seq);
            for (removed_seq, text) in entry.subtree_texts(seq)? {
                words.remove(
                    Row {
                        conversation: id,
                        seq: removed_seq,
                    },
                    &text,
                );
            }
            let removed = entry.remove_subtree(seq)?;
            if head_deleted {
                let head = match parent {
                    Some(parent) => Some(entry.newest_leaf_under(parent)?),
                    None => entry.nodes.keys().next_back().copied(),
                };
                // The path's tail from `seq` on is gone: cut it before walking.
                let keep = entry.path.partition_point(|&s| s < seq);
                entry.path.truncate(keep);
                entry.set_head(head)?;
            }
            let at = stamp(&*self.clock, entry.conversation.updated_at);
            let conversation = &mut entry.conversation;
            conversation.message_count -= removed;
            conversation.version += 1;
            conversation.updated_at = at;
            Ok(())
        })?;
        Ok(conversation)
    }

    async fn fork_conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Conversation> {
        let mut state = self.write();
        let source = state.entry(scope, id)?;
        let path = source
            .ancestry(source.seq_of(message)?)?
            .into_iter()
            .map(|seq| source.node(seq).map(|n| n.message.clone()))
            .collect::<Result<Vec<_>>>()?;
        let fork = fork_of(
            &source.conversation,
            message,
            path.len() as u64,
            message,
            &self.limits,
            self.clock.now(),
        )?;
        let messages = fork_messages(fork.id, path);
        state.insert(Entry::imported(ImportedConversation {
            conversation: fork.clone(),
            messages,
        })?);
        Ok(fork)
    }

    async fn set_title_unless_user(
        &self,
        scope: &Scope,
        id: ConversationId,
        title: String,
        source: TitleSource,
    ) -> Result<TitleOutcome> {
        self.limits.check_automatic_title(&title, source)?;
        let mut state = self.write();
        let (applied, conversation) = state.change(scope, id, |entry, _| {
            Ok(apply_automatic_title(
                &mut entry.conversation,
                title,
                source,
            ))
        })?;
        Ok(TitleOutcome {
            conversation,
            applied,
        })
    }

    async fn start_run(&self, scope: &Scope, id: ConversationId, run: NewRun) -> Result<Run> {
        let now = truncate_to_millis(self.clock.now());
        let mut state = self.write();
        let (run, _) = state.change(scope, id, |entry, _| {
            if let Some(stored) = entry.runs.get(&run.id) {
                // A retried start: answered from storage, never restarted.
                return Ok(stored.clone().settled(now));
            }
            if let Some(active) = entry.conversation.active_run_id
                && let Some(stored) = entry.runs.get_mut(&active)
            {
                if stored.is_live(now) {
                    return Err(Error::RunInProgress { run_id: active });
                }
                // Abandoned: it stays failed from now on.
                *stored = stored.clone().settled(now);
            }
            let run = run.into_run(id, now);
            entry.runs.insert(run.id, run.clone());
            entry.conversation.active_run_id = Some(run.id);
            Ok(run)
        })?;
        Ok(run)
    }

    async fn renew_run(
        &self,
        scope: &Scope,
        id: ConversationId,
        run: RunId,
        lease: Duration,
    ) -> Result<Run> {
        let now = truncate_to_millis(self.clock.now());
        self.change_run(scope, id, run, |stored, _| {
            *stored = stored.clone().settled(now);
            if stored.status == RunStatus::Running {
                stored.lease_until = lease_end(now, lease);
            }
        })
    }

    async fn cancel_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
        let now = truncate_to_millis(self.clock.now());
        self.change_run(scope, id, run, |stored, _| {
            *stored = stored.clone().settled(now);
            if stored.status == RunStatus::Running {
                stored.cancel_requested = true;
            }
        })
    }

    async fn finish_run(
        &self,
        scope: &Scope,
        id: ConversationId,
        run: RunId,
        outcome: RunOutcome,
    ) -> Result<Run> {
        let now = truncate_to_millis(self.clock.now());
        self.change_run(scope, id, run, |stored, conversation| {
            if outcome.apply_to(stored, now) {
                conversation.usage += stored.usage;
            }
        })
    }

    async fn get_run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
        let now = truncate_to_millis(self.clock.now());
        let state = self.read();
        let entry = state.entry(scope, id)?;
        entry
            .runs
            .get(&run)
            .map(|run| run.clone().settled(now))
            .ok_or(Error::NotFound {
                entity: Entity::Run,
            })
    }

    async fn search(&self, scope: &Scope, query: &SearchQuery) -> Result<Page<SearchHit>> {
        let terms = query.terms()?;
        let limit = query.page_size()?;
        let position = query.position()?;
        let state = self.read();
        let Some(index) = state.scopes.get(scope) else {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        };
        let mut by_conversation: HashMap<ConversationId, Vec<(f64, u64)>> = HashMap::new();
        for (row, score) in index.words.find(&terms) {
            by_conversation
                .entry(row.conversation)
                .or_default()
                .push((score, row.seq));
        }
        let mut hits = Vec::with_capacity(by_conversation.len());
        for (conversation_id, mut rows) in by_conversation {
            let Some(entry) = state.conversations.get(&conversation_id) else {
                continue;
            };
            let conversation = &entry.conversation;
            if !query.archived.admits(conversation.archived) {
                continue;
            }
            rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let matches = rows
                .iter()
                .take(MAX_MATCHES_PER_HIT)
                .map(|&(_, seq)| match seq {
                    0 => Ok(SearchMatch::in_title(
                        &terms,
                        conversation.title.as_deref().unwrap_or_default(),
                    )),
                    seq => entry.node(seq).map(|node| {
                        let m = &node.message;
                        SearchMatch::in_message(&terms, m.id, m.seq, m.role, &m.content)
                    }),
                })
                .collect::<Result<Vec<_>>>()?;
            let hit = SearchHit {
                conversation: conversation.clone(),
                score: rows.first().map_or(0.0, |r| r.0),
                matches,
            };
            if position.is_none_or(|cursor| cursor.precedes(&hit)) {
                hits.push(hit);
            }
        }
        hits.sort_by(rank_order);
        hits.truncate(limit + 1);
        Ok(query.page_from(hits, limit))
    }

    async fn import_conversation(
        &self,
        scope: &Scope,
        imported: ImportedConversation,
    ) -> Result<ImportOutcome> {
        imported.check(&self.limits)?;
        let mut state = self.write();
        if let Some(existing) = state.conversations.get(&imported.conversation.id) {
            return Ok(if existing.conversation.scope == *scope {
                ImportOutcome::AlreadyPresent
            } else {
                ImportOutcome::IdTaken
            });
        }
        let mut imported = imported;
        let conversation = &mut imported.conversation;
        conversation.scope = scope.clone();
        conversation.created_at = truncate_to_millis(conversation.created_at);
        conversation.updated_at = truncate_to_millis(conversation.updated_at);
        conversation.archived_at = conversation.archived_at.map(truncate_to_millis);
        for message in &mut imported.messages {
            message.created_at = truncate_to_millis(message.created_at);
        }
        state.insert(Entry::imported(imported)?);
        Ok(ImportOutcome::Imported)
    }

    async fn list_expired(&self, query: &RetentionQuery) -> Result<Vec<ExpiredConversation>> {
        let state = self.read();
        let (set, cutoff) = match query.expiry {
            Expiry::InactiveBefore(at) => (&state.by_activity, at),
            Expiry::ArchivedBefore(at) => (&state.by_archive, at),
        };
        let from = match query.after {
            Some(after) => std::ops::Bound::Excluded(after),
            None => std::ops::Bound::Unbounded,
        };
        let mut expired = Vec::new();
        for &(at, id) in set.range((from, std::ops::Bound::Unbounded)) {
            if at >= cutoff || expired.len() >= query.limit {
                break;
            }
            let Some(entry) = state.conversations.get(&id) else {
                continue;
            };
            let conversation = &entry.conversation;
            if let Some(at) = query.expired_at(conversation) {
                expired.push(ExpiredConversation {
                    scope: conversation.scope.clone(),
                    id,
                    title: conversation.title.clone(),
                    at,
                    pinned: conversation.pinned,
                });
            }
        }
        Ok(expired)
    }
}

impl MemoryStore {
    /// Changes one run of a conversation (and the conversation, e.g. its usage). A
    /// run the change leaves ended (finished, or found abandoned) is no longer the
    /// conversation's `active_run_id`.
    fn change_run(
        &self,
        scope: &Scope,
        id: ConversationId,
        run: RunId,
        change: impl FnOnce(&mut Run, &mut Conversation),
    ) -> Result<Run> {
        let mut state = self.write();
        let (run, _) = state.change(scope, id, |entry, _| {
            let stored = entry.runs.get_mut(&run).ok_or(Error::NotFound {
                entity: Entity::Run,
            })?;
            change(stored, &mut entry.conversation);
            if stored.status.is_terminal() && entry.conversation.active_run_id == Some(run) {
                entry.conversation.active_run_id = None;
            }
            Ok(stored.clone())
        })?;
        Ok(run)
    }
}
