//! The message tree beyond the conformance suite: the tree's invariants read back
//! after every kind of write, the columns the store keeps for it, siblings past the
//! window, random operations against `MemoryStore` (the reference implementation)
//! op by op, and concurrent writers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::TimeDelta;
use conversation_core::testkit::ManualClock;
use conversation_core::{
    Append, Conversation, ConversationId, ConversationPatch, Error, Message, MessageId,
    MessageQuery, MessageView, NewConversation, NewMessage, Parent, RecentQuery, Role, Scope,
    Siblings, Store,
};
use conversation_store_memory::MemoryStore;

use crate::support::{self, TestStore};

/// A small deterministic generator (xorshift64*), so a failing run can be replayed.
pub(crate) struct Dice(u64);

impl Dice {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// Checks every rule of the tree of conversation `id` on what the store reads back:
/// counts and seqs, no orphan, each message's siblings, the head a leaf, the path
/// from a root to the head, and the window and pages of that path. Returns every
/// message.
pub(crate) async fn check_tree<S: Store + ?Sized>(
    store: &S,
    scope: &Scope,
    id: ConversationId,
) -> Vec<Message> {
    let conversation = store.get_conversation(scope, id).await.unwrap();
    let all = support::every_message(store, scope, id, MessageView::All).await;
    assert_eq!(
        all.len() as u64,
        conversation.message_count,
        "message_count"
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "seqs ascend");
    assert!(all.last().is_none_or(|m| m.seq <= conversation.last_seq));
    let by_id: HashMap<MessageId, &Message> = all.iter().map(|m| (m.id, m)).collect();
    assert_eq!(by_id.len(), all.len(), "ids are unique");
    let mut children: HashMap<Option<MessageId>, Vec<MessageId>> = HashMap::new();
    for message in &all {
        assert_eq!(message.conversation_id, id);
        if let Some(parent) = message.parent_id {
            let parent = by_id
                .get(&parent)
                .unwrap_or_else(|| panic!("orphan: {message:?}"));
            assert!(parent.seq < message.seq, "a child is newer than its parent");
        }
        children
            .entry(message.parent_id)
            .or_default()
            .push(message.id);
    }
    for message in &all {
        let siblings = &children[&message.parent_id];
        let index = siblings.iter().position(|s| *s == message.id).unwrap();
        assert_eq!(
            message.siblings,
            Siblings::around(siblings, index),
            "siblings of {}",
            message.seq
        );
    }
    let mut path = Vec::new();
    match conversation.head_id {
        None => assert!(all.is_empty(), "no head, yet messages"),
        Some(head) => {
            assert!(by_id.contains_key(&head), "the head is a stored message");
            assert!(!children.contains_key(&Some(head)), "the head is a leaf");
            let mut at = Some(head);
            while let Some(id) = at {
                path.push(by_id[&id].clone());
                at = by_id[&id].parent_id;
            }
            path.reverse();
        }
    }
    let read_path = support::every_message(store, scope, id, MessageView::Path).await;
    assert_eq!(read_path, path, "the path from a root to the head");
    let window = store
        .recent_messages(scope, id, &RecentQuery::new(7))
        .await
        .unwrap();
    assert_eq!(window, path[path.len().saturating_sub(7)..], "the window");
    let newest = store
        .list_messages(scope, id, &MessageQuery::latest().limit(5))
        .await
        .unwrap();
    assert_eq!(newest.items, path[path.len().saturating_sub(5)..]);
    assert_eq!(newest.has_more, path.len() > 5);
    if let Some(middle) = path.get(path.len() / 2) {
        let before = store
            .list_messages(scope, id, &MessageQuery::before(middle.seq).limit(3))
            .await
            .unwrap();
        let at = path.len() / 2;
        assert_eq!(before.items, path[at.saturating_sub(3)..at]);
        let from = store
            .recent_messages(scope, id, &RecentQuery::new(4).ending_at(middle.id))
            .await
            .unwrap();
        assert_eq!(from, path[(at + 1).saturating_sub(4)..=at]);
    }
    all
}

async fn append(
    store: &TestStore,
    scope: &Scope,
    id: ConversationId,
    parent: Parent,
    contents: &[&str],
) -> Vec<Message> {
    let messages = contents
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let role = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            NewMessage::new(role, *c)
        })
        .collect();
    store
        .append_messages(scope, id, Append::new(messages).parent(parent))
        .await
        .unwrap()
        .messages
}

/// Siblings past the window: a question answered 130 times and a first question
/// edited 60 times read their windows, counts and indexes exactly, before and after
/// siblings are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_siblings_read_in_windows() {
    let store = TestStore::new().await;
    let scope = Scope::new("siblings").unwrap();
    let chat = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    let question = append(&store, &scope, chat.id, Parent::Head, &["q"]).await[0].clone();
    let mut answers = Vec::new();
    for i in 0..130 {
        let answer = NewMessage::assistant(format!("answer {i}"));
        let appended = store
            .append_messages(
                &scope,
                chat.id,
                Append::one(answer).parent(Parent::Message(question.id)),
            )
            .await
            .unwrap();
        assert_eq!(appended.messages[0].siblings.count, i + 1);
        assert_eq!(appended.messages[0].siblings.index, i);
        answers.push(appended.messages[0].id);
    }
    for _ in 0..59 {
        append(&store, &scope, chat.id, Parent::Root, &["edited"]).await;
    }
    check_tree(&*store, &scope, chat.id).await;
    store.assert_tree_columns(chat.id).await;
    for (i, answer) in [(0, answers[0]), (70, answers[70]), (129, answers[129])] {
        let read = store.get_message(&scope, chat.id, answer).await.unwrap();
        assert_eq!(read.siblings, Siblings::around(&answers, i));
    }
    for gone in [answers[2], answers[129], answers[60]] {
        store
            .delete_message(&scope, chat.id, gone, None)
            .await
            .unwrap();
        answers.retain(|a| *a != gone);
        check_tree(&*store, &scope, chat.id).await;
        store.assert_tree_columns(chat.id).await;
    }
    let conversation = store
        .update_conversation(&scope, chat.id, ConversationPatch::new().head(answers[0]))
        .await
        .unwrap();
    assert_eq!(conversation.head_id, Some(answers[0]));
    check_tree(&*store, &scope, chat.id).await;
    store.assert_tree_columns(chat.id).await;
}

/// A conversation pair: the same conversation in both stores.
struct Twin {
    memory: ConversationId,
    postgres: ConversationId,
}

/// `message`'s fields as the memory store would read them: the conversation ids
/// swapped.
fn as_memory(mut message: Message, twin: &Twin) -> Message {
    message.conversation_id = twin.memory;
    message
}

fn conversation_as_memory(mut conversation: Conversation, twins: &[Twin]) -> Conversation {
    let memory = |id: ConversationId| {
        twins
            .iter()
            .find(|t| t.postgres == id)
            .map_or(id, |t| t.memory)
    };
    conversation.id = memory(conversation.id);
    if let Some(from) = conversation.metadata.get_mut("forkedFrom")
        && let Some(source) = from.get("conversationId").cloned()
    {
        let source: ConversationId = serde_json::from_value(source).unwrap();
        from["conversationId"] = serde_json::json!(memory(source));
    }
    conversation
}

async fn same_state(memory: &MemoryStore, postgres: &TestStore, scope: &Scope, twins: &[Twin]) {
    for twin in twins {
        let expected = memory.get_conversation(scope, twin.memory).await.unwrap();
        let got = postgres
            .get_conversation(scope, twin.postgres)
            .await
            .unwrap();
        assert_eq!(conversation_as_memory(got, twins), expected);
        for view in [MessageView::All, MessageView::Path] {
            let expected = support::every_message(memory, scope, twin.memory, view).await;
            let got = support::every_message(&**postgres, scope, twin.postgres, view).await;
            let got: Vec<Message> = got.into_iter().map(|m| as_memory(m, twin)).collect();
            assert_eq!(got, expected, "{view:?}");
        }
        check_tree(&**postgres, scope, twin.postgres).await;
        postgres.assert_tree_columns(twin.postgres).await;
    }
}

/// Random appends (after the head, at a root, at any message, retried), switches,
/// deletions and forks, done on `MemoryStore` and on PostgreSQL with the same ids and
/// the same clock: both answer the same, error for error, and read the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_tree_operations_match_the_memory_store() {
    let clock = Arc::new(ManualClock::default());
    let memory = MemoryStore::new().with_clock(clock.clone());
    let postgres = TestStore::with_clock(clock.clone()).await;
    let scope = Scope::new("twins").unwrap();
    let mut twins = Vec::new();
    let mut dice = Dice::new(7);
    let mut sent: Vec<NewMessage> = Vec::new();
    for step in 0..220 {
        clock.advance(TimeDelta::milliseconds(if step % 17 == 0 {
            -5_000
        } else {
            3
        }));
        if twins.is_empty() || dice.below(40) == 0 {
            let new = NewConversation::new();
            let m = memory
                .create_conversation(&scope, new.clone())
                .await
                .unwrap();
            let p = postgres.create_conversation(&scope, new).await.unwrap();
            twins.push(Twin {
                memory: m.id,
                postgres: p.id,
            });
            continue;
        }
        let twin = &twins[dice.below(twins.len())];
        let known = support::every_message(&memory, &scope, twin.memory, MessageView::All).await;
        // Now and then a message that is not (or no longer) there.
        let pick = |dice: &mut Dice| {
            if known.is_empty() || dice.below(12) == 0 {
                MessageId::new()
            } else {
                known[dice.below(known.len())].id
            }
        };
        match dice.below(10) {
            0..=4 => {
                let parent = match dice.below(5) {
                    0 => Parent::Root,
                    1 | 2 => Parent::Message(pick(&mut dice)),
                    _ => Parent::Head,
                };
                let mut messages: Vec<NewMessage> = (0..=dice.below(3))
                    .map(|k| NewMessage::user(format!("s{step}-{k}")).with_id(MessageId::new()))
                    .collect();
                if !sent.is_empty() && dice.below(6) == 0 {
                    messages.insert(0, sent[dice.below(sent.len())].clone());
                }
                sent.extend(messages.iter().cloned());
                let mut append = Append::new(messages).parent(parent);
                if dice.below(4) == 0 {
                    append = append.title_hint(format!("Title {step}"));
                }
                let m = memory
                    .append_messages(&scope, twin.memory, append.clone())
                    .await;
                let p = postgres
                    .append_messages(&scope, twin.postgres, append)
                    .await;
                match (m, p) {
                    (Ok(m), Ok(p)) => {
                        let got: Vec<Message> =
                            p.messages.into_iter().map(|x| as_memory(x, twin)).collect();
                        assert_eq!(got, m.messages, "step {step}: appended");
                        assert_eq!(
                            conversation_as_memory(p.conversation, &twins),
                            m.conversation
                        );
                    }
                    (m, p) => assert_eq!(
                        format!("{:?}", p.map(drop)),
                        format!("{:?}", m.map(drop)),
                        "step {step}"
                    ),
                }
            }
            5 | 6 => {
                let patch = ConversationPatch::new().head(pick(&mut dice));
                let m = memory
                    .update_conversation(&scope, twin.memory, patch.clone())
                    .await;
                let p = postgres
                    .update_conversation(&scope, twin.postgres, patch)
                    .await;
                assert_eq!(
                    p.map(|c| conversation_as_memory(c, &twins))
                        .map_err(|e| e.to_string()),
                    m.map_err(|e| e.to_string()),
                    "step {step}: switch"
                );
            }
            7 | 8 => {
                let target = pick(&mut dice);
                let m = memory
                    .delete_message(&scope, twin.memory, target, None)
                    .await;
                let p = postgres
                    .delete_message(&scope, twin.postgres, target, None)
                    .await;
                assert_eq!(
                    p.map(|c| conversation_as_memory(c, &twins))
                        .map_err(|e| e.to_string()),
                    m.map_err(|e| e.to_string()),
                    "step {step}: delete"
                );
            }
            _ => {
                let target = pick(&mut dice);
                let m = memory.fork_conversation(&scope, twin.memory, target).await;
                let p = postgres
                    .fork_conversation(&scope, twin.postgres, target)
                    .await;
                match (m, p) {
                    (Ok(m), Ok(p)) => twins.push(Twin {
                        memory: m.id,
                        postgres: p.id,
                    }),
                    (m, p) => assert_eq!(
                        p.map(drop).map_err(|e| e.to_string()),
                        m.map(drop).map_err(|e| e.to_string()),
                        "step {step}: fork"
                    ),
                }
            }
        }
        if step % 10 == 9 {
            same_state(&memory, &postgres, &scope, &twins).await;
        }
    }
    same_state(&memory, &postgres, &scope, &twins).await;
}

/// What a writer of [`tree_workload`] did and had acknowledged.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    /// Appended messages and their parents.
    pub(crate) appended: Vec<(MessageId, Option<MessageId>)>,
    /// Messages whose deletion was acknowledged.
    pub(crate) deleted: Vec<MessageId>,
    /// Forks made.
    pub(crate) forks: Vec<ConversationId>,
}

/// `ops` random tree writes on conversation `id`: appends after the head, branches
/// at a message, switches, deletions (rarer) and forks (rarer still), each at a
/// message read back just before, which another writer may have deleted meanwhile
/// (then `NotFound`, and nothing happens).
pub(crate) async fn tree_workload<S: Store + ?Sized>(
    store: &S,
    scope: &Scope,
    id: ConversationId,
    seed: u64,
    ops: usize,
) -> Journal {
    let mut dice = Dice::new(seed);
    let mut journal = Journal::default();
    for op in 0..ops {
        let known = store
            .list_messages(scope, id, &MessageQuery::latest().view(MessageView::All))
            .await
            .unwrap()
            .items;
        let target = (!known.is_empty()).then(|| known[dice.below(known.len())].id);
        let outcome = match (dice.below(12), target) {
            (0..=4, _) | (_, None) => {
                let parent = match (dice.below(2), target) {
                    (0, Some(target)) => Parent::Message(target),
                    _ => Parent::Head,
                };
                let messages = (0..=dice.below(2))
                    .map(|k| NewMessage::user(format!("w{seed}-{op}-{k}")))
                    .collect();
                store
                    .append_messages(scope, id, Append::new(messages).parent(parent))
                    .await
                    .map(|appended| {
                        for message in appended.messages {
                            journal.appended.push((message.id, message.parent_id));
                        }
                    })
            }
            (5..=8, Some(target)) => store
                .update_conversation(scope, id, ConversationPatch::new().head(target))
                .await
                .map(drop),
            (9 | 10, Some(target)) => store
                .delete_message(scope, id, target, None)
                .await
                .map(|_| journal.deleted.push(target)),
            (_, Some(target)) => store
                .fork_conversation(scope, id, target)
                .await
                .map(|fork| journal.forks.push(fork.id)),
        };
        match outcome {
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(err) => panic!("op {op} of writer {seed}: {err}"),
        }
    }
    journal
}

/// After [`tree_workload`]s: the tree is whole ([`check_tree`]), no acknowledged
/// deletion left its message, and every acknowledged message is stored unless it
/// or an ancestor was deleted. `initial` are the messages there before.
pub(crate) async fn check_workload<S: Store + ?Sized>(
    store: &S,
    scope: &Scope,
    id: ConversationId,
    initial: &[Message],
    journals: &[Journal],
) {
    let stored: HashSet<MessageId> = check_tree(store, scope, id)
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    let mut parents: HashMap<MessageId, Option<MessageId>> =
        initial.iter().map(|m| (m.id, m.parent_id)).collect();
    let deleted: HashSet<MessageId> = journals
        .iter()
        .flat_map(|j| j.deleted.iter().copied())
        .collect();
    for journal in journals {
        parents.extend(journal.appended.iter().copied());
    }
    for gone in &deleted {
        assert!(!stored.contains(gone), "a deleted message is still there");
    }
    let mut lost = Vec::new();
    for journal in journals {
        for (message, _) in &journal.appended {
            if stored.contains(message) {
                continue;
            }
            let mut at = Some(*message);
            let mut explained = false;
            while let Some(id) = at {
                if deleted.contains(&id) {
                    explained = true;
                    break;
                }
                at = parents.get(&id).copied().flatten();
            }
            if !explained {
                lost.push(*message);
            }
        }
    }
    assert!(lost.is_empty(), "lost messages: {lost:?}");
    for fork in journals.iter().flat_map(|j| &j.forks) {
        check_tree(store, scope, *fork).await;
    }
}

/// Promise 10 across tasks: six writers branch, switch, delete and fork in one
/// conversation at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tree_writers_lose_nothing_and_leave_no_orphan() {
    let store = Arc::new(TestStore::new().await);
    let scope = Scope::new("tree-tasks").unwrap();
    let chat = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    append(
        &store,
        &scope,
        chat.id,
        Parent::Head,
        &["q", "a", "q2", "a2"],
    )
    .await;
    let initial = check_tree(&**store, &scope, chat.id).await;
    let mut writers = Vec::new();
    for seed in 1..=6 {
        let store = Arc::clone(&store);
        let scope = scope.clone();
        writers.push(tokio::spawn(async move {
            tree_workload(&**store, &scope, chat.id, seed, 40).await
        }));
    }
    let mut journals = Vec::new();
    for writer in writers {
        journals.push(writer.await.unwrap());
    }
    assert!(journals.iter().map(|j| j.appended.len()).sum::<usize>() > 50);
    check_workload(&**store, &scope, chat.id, &initial, &journals).await;
    store.assert_tree_columns(chat.id).await;
}
