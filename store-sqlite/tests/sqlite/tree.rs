//! The message tree against the reference implementation (`MemoryStore`): random
//! sequences of appends (after the head, as a new root, at any message), switches,
//! subtree deletions, forks and clock steps, run on a `SqliteStore` and a
//! `MemoryStore` reading the same clock; after every operation its answer and every
//! read (the conversation, every page of the path and of the tree, windows ending at
//! the head and at any message, every message by id) must be the same.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use conversation_core::testkit::ManualClock;
use conversation_core::{
    Append, Conversation, ConversationId, ConversationPatch, Error, Message, MessageId,
    MessagePage, MessageQuery, MessageView, NewConversation, NewMessage, Parent, RecentQuery,
    Result, Scope, Store,
};
use conversation_store_memory::MemoryStore;
use conversation_store_sqlite::{SqliteOptions, SqliteStore};
use proptest::prelude::*;

use super::fresh_path;

/// Where an append attaches, by index into the messages made so far.
#[derive(Debug, Clone)]
enum At {
    Head,
    Root,
    Message(usize),
}

#[derive(Debug, Clone)]
enum Op {
    Append { at: At, count: usize, retry: bool },
    Switch(usize),
    Delete(usize),
    Fork(usize),
    Clock(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let pick = 0usize..64;
    let at = prop_oneof![
        4 => Just(At::Head),
        1 => Just(At::Root),
        4 => pick.clone().prop_map(At::Message),
    ];
    prop_oneof![
        8 => (at, 1usize..4, proptest::bool::weighted(0.1))
            .prop_map(|(at, count, retry)| Op::Append { at, count, retry }),
        3 => pick.clone().prop_map(Op::Switch),
        2 => pick.clone().prop_map(Op::Delete),
        1 => pick.prop_map(Op::Fork),
        1 => (-5i64..20).prop_map(Op::Clock),
    ]
}

/// A conversation with its store-made ids blanked, for comparing across stores.
fn normal(mut conversation: Conversation) -> Conversation {
    conversation.id = ConversationId::from_uuid(uuid::Uuid::nil());
    if let Some(from) = conversation.metadata.get_mut("forkedFrom")
        && let Some(from) = from.as_object_mut()
    {
        from.remove("conversationId");
    }
    conversation
}

fn normal_message(mut message: Message) -> Message {
    message.conversation_id = ConversationId::from_uuid(uuid::Uuid::nil());
    message
}

fn normal_page(page: MessagePage) -> (Vec<Message>, bool) {
    (
        page.items.into_iter().map(normal_message).collect(),
        page.has_more,
    )
}

/// The kind of an error, for comparing failures.
fn kind<T>(result: &Result<T>) -> Option<&'static str> {
    result.as_ref().err().map(Error::code)
}

/// Every read of one conversation in one store.
async fn reads(
    store: &dyn Store,
    scope: &Scope,
    id: ConversationId,
    known: &[MessageId],
) -> Vec<String> {
    let mut seen = Vec::new();
    seen.push(format!(
        "{:?}",
        store.get_conversation(scope, id).await.map(normal)
    ));
    for view in [MessageView::Path, MessageView::All] {
        // Newest first, page by page, and oldest first.
        let mut query = MessageQuery::latest().limit(3).view(view);
        loop {
            let page = store.list_messages(scope, id, &query).await;
            let next = match &page {
                Ok(page) if page.has_more => page.items.first().map(|m| m.seq),
                _ => None,
            };
            seen.push(format!("{view:?} {:?}", page.map(normal_page)));
            match next {
                Some(seq) => query = MessageQuery::before(seq).limit(3).view(view),
                None => break,
            }
        }
        let mut query = MessageQuery::after(0).limit(4).view(view);
        loop {
            let page = store.list_messages(scope, id, &query).await;
            let next = match &page {
                Ok(page) if page.has_more => page.items.last().map(|m| m.seq),
                _ => None,
            };
            seen.push(format!("{view:?} {:?}", page.map(normal_page)));
            match next {
                Some(seq) => query = MessageQuery::after(seq).limit(4).view(view),
                None => break,
            }
        }
    }
    for n in [1, 4, 50] {
        let window = store.recent_messages(scope, id, &RecentQuery::new(n)).await;
        seen.push(format!(
            "recent {n} {:?}",
            window.map(|w| w.into_iter().map(normal_message).collect::<Vec<_>>())
        ));
    }
    for message in known {
        let window = store
            .recent_messages(scope, id, &RecentQuery::new(3).ending_at(*message))
            .await;
        seen.push(format!(
            "recent at {message} {:?}",
            window.map(|w| w.into_iter().map(normal_message).collect::<Vec<_>>())
        ));
        seen.push(format!(
            "get {message} {:?}",
            store
                .get_message(scope, id, *message)
                .await
                .map(normal_message)
        ));
    }
    seen
}

struct Pair {
    sqlite: SqliteStore,
    memory: MemoryStore,
    clock: Arc<ManualClock>,
    scope: Scope,
    ids: (ConversationId, ConversationId),
    known: Vec<MessageId>,
}

impl Pair {
    async fn new(on_file: bool) -> Self {
        let clock = Arc::new(ManualClock::new(
            DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000).unwrap(),
        ));
        let options = SqliteOptions::new().clock(clock.clone());
        let sqlite = if on_file {
            SqliteStore::open_with(fresh_path(), options).await.unwrap()
        } else {
            SqliteStore::open_in_memory_with(options).await.unwrap()
        };
        let memory = MemoryStore::new().with_clock(clock.clone());
        let scope = Scope::new("tree").unwrap();
        let a = sqlite
            .create_conversation(&scope, NewConversation::new())
            .await
            .unwrap();
        let b = memory
            .create_conversation(&scope, NewConversation::new())
            .await
            .unwrap();
        assert_eq!(normal(a.clone()), normal(b.clone()));
        Self {
            sqlite,
            memory,
            clock,
            scope,
            ids: (a.id, b.id),
            known: Vec::new(),
        }
    }

    fn pick(&self, index: usize) -> Option<MessageId> {
        (!self.known.is_empty()).then(|| self.known[index % self.known.len()])
    }

    async fn run(&mut self, op: &Op) {
        let (s, m) = (&self.sqlite, &self.memory);
        let (sid, mid) = self.ids;
        let scope = &self.scope;
        match op {
            Op::Append { at, count, retry } => {
                let parent = match at {
                    At::Head => Parent::Head,
                    At::Root => Parent::Root,
                    At::Message(i) => self.pick(*i).map_or(Parent::Head, Parent::Message),
                };
                let mut messages: Vec<NewMessage> = (0..*count)
                    .map(|k| {
                        let id = MessageId::new();
                        NewMessage::user(format!("m{} {k}", self.known.len())).with_id(id)
                    })
                    .collect();
                if *retry && let Some(old) = self.pick(self.known.len().wrapping_sub(1)) {
                    messages.insert(0, NewMessage::user("retried").with_id(old));
                }
                let append = Append::new(messages.clone()).parent(parent);
                let a = s.append_messages(scope, sid, append.clone()).await;
                let b = m.append_messages(scope, mid, append).await;
                assert_eq!(kind(&a), kind(&b), "append {op:?}: {a:?} / {b:?}");
                if let (Ok(a), Ok(b)) = (a, b) {
                    assert_eq!(normal(a.conversation), normal(b.conversation), "{op:?}");
                    let a: Vec<_> = a.messages.into_iter().map(normal_message).collect();
                    let b: Vec<_> = b.messages.into_iter().map(normal_message).collect();
                    assert_eq!(a, b, "{op:?}");
                    for message in messages {
                        if let Some(id) = message.id
                            && !self.known.contains(&id)
                        {
                            self.known.push(id);
                        }
                    }
                }
            }
            Op::Switch(i) => {
                let Some(target) = self.pick(*i) else { return };
                let patch = ConversationPatch::new().head(target);
                let a = s.update_conversation(scope, sid, patch.clone()).await;
                let b = m.update_conversation(scope, mid, patch).await;
                assert_eq!(a.map(normal).ok(), b.map(normal).ok(), "{op:?}");
            }
            Op::Delete(i) => {
                let Some(target) = self.pick(*i) else { return };
                let a = s.delete_message(scope, sid, target, None).await;
                let b = m.delete_message(scope, mid, target, None).await;
                assert_eq!(kind(&a), kind(&b), "{op:?}");
                assert_eq!(a.map(normal).ok(), b.map(normal).ok(), "{op:?}");
            }
            Op::Fork(i) => {
                let Some(target) = self.pick(*i) else { return };
                let a = s.fork_conversation(scope, sid, target).await;
                let b = m.fork_conversation(scope, mid, target).await;
                assert_eq!(kind(&a), kind(&b), "{op:?}");
                if let (Ok(a), Ok(b)) = (a, b) {
                    assert_eq!(normal(a.clone()), normal(b.clone()), "{op:?}");
                    let known = self.known.clone();
                    assert_eq!(
                        reads(s, scope, a.id, &known).await,
                        reads(m, scope, b.id, &known).await,
                        "the fork of {op:?}"
                    );
                }
            }
            Op::Clock(millis) => self.clock.advance(TimeDelta::milliseconds(*millis)),
        }
    }

    async fn compare(&self, after: &Op) {
        let a = reads(&self.sqlite, &self.scope, self.ids.0, &self.known).await;
        let b = reads(&self.memory, &self.scope, self.ids.1, &self.known).await;
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(a, b, "after {after:?}");
        }
        assert_eq!(a.len(), b.len(), "after {after:?}");
    }
}

fn check(ops: &[Op], on_file: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut pair = Pair::new(on_file).await;
        for op in ops {
            pair.run(op).await;
            pair.compare(op).await;
        }
        pair.sqlite.close().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_tree_reads_as_the_reference_store_in_memory(ops in proptest::collection::vec(op(), 1..40)) {
        check(&ops, false);
    }

    #[test]
    fn the_tree_reads_as_the_reference_store_on_a_file(ops in proptest::collection::vec(op(), 1..25)) {
        check(&ops, true);
    }
}

/// Siblings beyond the window: 120 answers to one question, switching among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_versions_keep_a_bounded_window() {
    let mut pair = Pair::new(false).await;
    pair.run(&Op::Append {
        at: At::Head,
        count: 1,
        retry: false,
    })
    .await;
    for _ in 0..120 {
        pair.run(&Op::Append {
            at: At::Message(0),
            count: 1,
            retry: false,
        })
        .await;
    }
    let last = Op::Switch(60);
    pair.run(&last).await;
    pair.compare(&last).await;
    let message = pair.known[60];
    let read = pair
        .sqlite
        .get_message(&pair.scope, pair.ids.0, message)
        .await
        .unwrap();
    assert_eq!((read.siblings.count, read.siblings.index), (120, 59));
    assert_eq!(read.siblings.ids.len(), 101);
}
