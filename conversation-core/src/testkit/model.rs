//! The property test: random operation sequences against a store and a plain model.
//!
//! The model keeps, per conversation, the row it expects, a map from seq to
//! message and parent seq, and its runs as stored. Everything else is computed the
//! slow, obvious way: the path by walking up from the head, siblings by filtering on
//! the parent, the newest leaf by scanning a subtree, merge patches by RFC 7396's
//! pseudocode, search hits by testing every title and message with the shared
//! words ([`SearchTerms`]), expired conversations by filtering and sorting them all.
//! Timestamps and leases are predicted exactly, because the store reads a
//! [`ManualClock`] that only the sequence moves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::ManualClock;
use crate::backend::{SearchTerms, rank_order};
use crate::{
    Append, ArchivedFilter, Clock, Conversation, ConversationId, ConversationPatch,
    ConversationQuery, Entity, Error, ExpiredConversation, Expiry, MAX_MATCHES_PER_HIT, Message,
    MessageId, MessageQuery, MessageView, Metadata, NewConversation, NewMessage, NewRun, Parent,
    RecentQuery, Result, RetentionQuery, Role, Run, RunFailure, RunId, RunOutcome, RunStatus,
    SIBLING_WINDOW, Scope, SearchHit, SearchMatch, SearchQuery, Siblings, Store, TitleSource,
    Usage,
};

/// A message an operation names, by index (modulo) among the messages of `among`.
/// With none to pick from, an id never stored.
#[derive(Debug, Clone, Copy)]
struct Pick {
    index: usize,
    among: Among,
}

#[derive(Debug, Clone, Copy)]
enum Among {
    /// The conversation's messages now.
    Live,
    /// Every message stored in the conversation at some point, deleted ones included.
    Ever,
    /// Every message of every conversation.
    Foreign,
}

/// Where an append attaches.
#[derive(Debug, Clone, Copy)]
enum Target {
    Head,
    Root,
    Message(Pick),
}

/// The expected version an operation carries.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Nothing,
    Current,
    Stale,
}

/// A conversation an operation works on, by index (modulo) among those created so
/// far, deleted ones included: from the first or, `from_end`, from the newest
/// (forks are made last).
#[derive(Debug, Clone, Copy)]
struct Chat {
    index: usize,
    from_end: bool,
}

/// A run an operation names, by index (modulo) among the conversation's runs, or
/// among every other conversation's (`foreign`). With none to pick from, an id
/// never stored.
#[derive(Debug, Clone, Copy)]
struct RunPick {
    index: usize,
    foreign: bool,
}

/// The words of message contents: a few that share prefixes, with case and a
/// diacritic, so that searches find some conversations and not others.
const WORDS: [&str; 8] = [
    "alpha", "Beta", "gamma", "délta", "alphabet", "tab", "table", "Tables",
];

/// What [`Op::Search`] looks for: whole words, prefixes, several words, title
/// words (titles are made of `a`, `b`, `é`), a word never written.
const SEARCHES: [&str; 15] = [
    "alpha",
    "alph",
    "beta ",
    "gamma delta",
    "delta",
    "tab",
    "table ",
    "tables",
    "a",
    "b",
    "e ",
    "ab",
    "é",
    "alphabet beta",
    "zeta",
];

/// One operation of a generated sequence.
#[derive(Debug, Clone)]
enum Op {
    Create {
        scope: usize,
        title: Option<String>,
        metadata: Option<u8>,
    },
    Append {
        chat: Chat,
        roles: Vec<Role>,
        /// Picks the words of the messages' contents.
        words: usize,
        retry_last: bool,
        with_ids: bool,
        at: Target,
        title_hint: Option<String>,
        expect: Expect,
    },
    Switch {
        chat: Chat,
        to: Pick,
        expect: Expect,
    },
    Update {
        chat: Chat,
        title: Option<String>,
        pinned: Option<bool>,
        archived: Option<bool>,
        metadata: Option<u8>,
        head: Option<Pick>,
        expect: Expect,
    },
    AutoTitle {
        chat: Chat,
        title: String,
        generated: bool,
    },
    Delete {
        chat: Chat,
        expect: Expect,
    },
    DeleteMessage {
        chat: Chat,
        message: Pick,
        expect: Expect,
    },
    Fork {
        chat: Chat,
        at: Pick,
    },
    /// Moves the clock by this many microseconds (backwards when negative).
    Tick {
        micros: i64,
    },
    Get {
        chat: Chat,
        wrong_scope: bool,
    },
    GetMessage {
        chat: Chat,
        message: Pick,
        wrong_scope: bool,
    },
    List {
        scope: usize,
        pinned_first: bool,
        archived: usize,
        limit: u32,
        filter: Option<String>,
        /// A metadata filter: [`metadata_filter`].
        metadata: Option<u8>,
    },
    /// Searches the scope of a conversation for one of [`SEARCHES`].
    Search {
        chat: Chat,
        text: usize,
        archived: usize,
        limit: u32,
    },
    /// Lists expired conversations (of `near`'s scope, or of all), the cutoff
    /// `offset_micros` from the time that counts of `near`, so that it falls among
    /// the conversations' times.
    Expired {
        all_scopes: bool,
        by_archive: bool,
        near: Chat,
        offset_micros: i64,
        include_pinned: bool,
        limit: usize,
    },
    StartRun {
        chat: Chat,
        lease_millis: u64,
        /// Starts again with the id of one of its runs, when it has one.
        retry: Option<usize>,
    },
    RenewRun {
        chat: Chat,
        run: RunPick,
        lease_millis: u64,
    },
    CancelRun {
        chat: Chat,
        run: RunPick,
    },
    FinishRun {
        chat: Chat,
        run: RunPick,
        status: RunStatus,
        tokens: u64,
    },
    GetRun {
        chat: Chat,
        run: RunPick,
        wrong_scope: bool,
    },
    Messages {
        chat: Chat,
        after: Option<u64>,
        before: Option<u64>,
        limit: u32,
        all: bool,
    },
    Recent {
        chat: Chat,
        n: usize,
        leaf: Option<Pick>,
    },
}

fn title_text() -> impl Strategy<Value = String> {
    // ASCII case pairs, a non-ASCII letter and SQL wildcards, to test the filter.
    proptest::string::string_regex("[aAbB é%_]{1,6}")
        .expect("valid regex")
        .prop_filter("not blank", |t| !t.trim().is_empty())
}

fn pick() -> impl Strategy<Value = Pick> {
    let among = prop_oneof![
        7 => Just(Among::Live),
        2 => Just(Among::Ever),
        1 => Just(Among::Foreign),
    ];
    (any::<usize>(), among).prop_map(|(index, among)| Pick { index, among })
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        6 => Just(Expect::Nothing),
        2 => Just(Expect::Current),
        1 => Just(Expect::Stale),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        5 => Just(Target::Head),
        1 => Just(Target::Root),
        4 => pick().prop_map(Target::Message),
    ]
}

fn run_pick() -> impl Strategy<Value = RunPick> {
    (any::<usize>(), proptest::bool::weighted(0.1))
        .prop_map(|(index, foreign)| RunPick { index, foreign })
}

fn create() -> impl Strategy<Value = Op> {
    (
        0usize..2,
        proptest::option::of(title_text()),
        proptest::option::weighted(0.3, 0u8..3),
    )
        .prop_map(|(scope, title, metadata)| Op::Create {
            scope,
            title,
            metadata,
        })
}

fn op() -> impl Strategy<Value = Op> {
    // Mostly the first or newest few conversations, so that their trees grow.
    let chat = (
        prop_oneof![4 => 0usize..3, 1 => 0usize..64],
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(index, from_end)| Chat { index, from_end });
    prop_oneof![
        2 => create(),
        10 => (
            chat.clone(),
            proptest::collection::vec(
                prop_oneof![Just(Role::User), Just(Role::Assistant), Just(Role::System)],
                1..4
            ),
            0usize..WORDS.len() * 8,
            proptest::bool::weighted(0.3),
            any::<bool>(),
            target(),
            proptest::option::weighted(0.2, title_text()),
            expect(),
        )
            .prop_map(|(chat, roles, words, retry_last, with_ids, at, title_hint, expect)| Op::Append {
                chat,
                roles,
                words,
                retry_last,
                with_ids,
                at,
                title_hint,
                expect,
            }),
        2 => (chat.clone(), pick(), expect())
            .prop_map(|(chat, to, expect)| Op::Switch { chat, to, expect }),
        2 => (
            chat.clone(),
            proptest::option::of(title_text()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::option::weighted(0.2, 0u8..3),
            proptest::option::weighted(0.2, pick()),
            expect(),
        )
            .prop_map(|(chat, title, pinned, archived, metadata, head, expect)| Op::Update {
                chat,
                title,
                pinned,
                archived,
                metadata,
                head,
                expect,
            }),
        1 => (chat.clone(), title_text(), any::<bool>())
            .prop_map(|(chat, title, generated)| Op::AutoTitle { chat, title, generated }),
        1 => (chat.clone(), expect()).prop_map(|(chat, expect)| Op::Delete { chat, expect }),
        2 => (chat.clone(), pick(), expect())
            .prop_map(|(chat, message, expect)| Op::DeleteMessage { chat, message, expect }),
        2 => (chat.clone(), pick()).prop_map(|(chat, at)| Op::Fork { chat, at }),
        6 => prop_oneof![
            3 => 0i64..3_000,
            2 => 0i64..60_000,
            1 => -2_000_000i64..2_000_000,
        ]
            .prop_map(|micros| Op::Tick { micros }),
        1 => (chat.clone(), any::<bool>())
            .prop_map(|(chat, wrong_scope)| Op::Get { chat, wrong_scope }),
        1 => (chat.clone(), pick(), proptest::bool::weighted(0.2))
            .prop_map(|(chat, message, wrong_scope)| Op::GetMessage { chat, message, wrong_scope }),
        2 => (
            0usize..2,
            any::<bool>(),
            0usize..3,
            1u32..5,
            proptest::option::of(prop_oneof![
                Just("a".to_owned()),
                Just("B".to_owned()),
                Just("%".to_owned()),
                Just("_".to_owned()),
                Just("é".to_owned())
            ]),
            proptest::option::weighted(0.3, 0u8..3),
        )
            .prop_map(|(scope, pinned_first, archived, limit, filter, metadata)| Op::List {
                scope,
                pinned_first,
                archived,
                limit,
                filter,
                metadata,
            }),
        3 => (
            chat.clone(),
            0usize..SEARCHES.len(),
            prop_oneof![2 => Just(0usize), 2 => Just(1), 1 => Just(2)],
            1u32..4,
        )
            .prop_map(|(chat, text, archived, limit)| Op::Search { chat, text, archived, limit }),
        1 => (
            any::<bool>(),
            any::<bool>(),
            chat.clone(),
            prop_oneof![
                1 => Just(0i64),
                3 => Just(1_000),
                1 => Just(-1_000),
                2 => -1_500i64..1_500
            ],
            any::<bool>(),
            1usize..4,
        )
            .prop_map(|(all_scopes, by_archive, near, offset_micros, include_pinned, limit)| {
                Op::Expired {
                    all_scopes,
                    by_archive,
                    near,
                    offset_micros,
                    include_pinned,
                    limit,
                }
            }),
        // Leases as short as the clock's usual steps, so that runs get abandoned.
        2 => (chat.clone(), 1u64..40, proptest::option::weighted(0.15, any::<usize>()))
            .prop_map(|(chat, lease_millis, retry)| Op::StartRun { chat, lease_millis, retry }),
        1 => (chat.clone(), run_pick(), 1u64..40)
            .prop_map(|(chat, run, lease_millis)| Op::RenewRun { chat, run, lease_millis }),
        1 => (chat.clone(), run_pick()).prop_map(|(chat, run)| Op::CancelRun { chat, run }),
        2 => (
            chat.clone(),
            run_pick(),
            prop_oneof![
                Just(RunStatus::Completed),
                Just(RunStatus::RequiresAction),
                Just(RunStatus::Cancelled),
                Just(RunStatus::Failed),
                Just(RunStatus::Running),
            ],
            0u64..100,
        )
            .prop_map(|(chat, run, status, tokens)| Op::FinishRun { chat, run, status, tokens }),
        1 => (chat.clone(), run_pick(), proptest::bool::weighted(0.2))
            .prop_map(|(chat, run, wrong_scope)| Op::GetRun { chat, run, wrong_scope }),
        3 => (
            chat.clone(),
            proptest::option::of(0u64..10),
            proptest::option::of(1u64..12),
            1u32..6,
            any::<bool>(),
        )
            .prop_map(|(chat, after, before, limit, all)| Op::Messages {
                chat,
                after,
                before,
                limit,
                all
            }),
        2 => (chat, 0usize..8, proptest::option::weighted(0.4, pick()))
            .prop_map(|(chat, n, leaf)| Op::Recent { chat, n, leaf }),
    ]
}

fn millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).expect("a time in range")
}

/// The content of the `i`th message of an append: two of [`WORDS`] and the seq it
/// follows.
fn content(words: usize, i: usize, last_seq: u64) -> String {
    let first = WORDS[(words + i) % WORDS.len()];
    let second = WORDS[(words / WORDS.len() + 2 * i + 1) % WORDS.len()];
    format!("{first} {second} #{last_seq}")
}

/// The metadata patches [`Op::Update`] sends: a key set and removed, nested objects
/// merged, a nested member removed, a nested object replaced by a scalar and back.
fn metadata_patch(n: u8) -> Metadata {
    let patch = match n {
        0 => serde_json::json!({"n": 1}),
        1 => serde_json::json!({"n": null}),
        2 => serde_json::json!({"tag": "x", "nested": {"a": 1}}),
        3 => serde_json::json!({"nested": {"a": null, "b": true}}),
        4 => serde_json::json!({"nested": null, "tag": "y"}),
        _ => serde_json::json!({"nested": 5, "n": 2.0}),
    };
    patch.as_object().cloned().unwrap_or_default()
}

/// The metadata filters [`Op::List`] uses.
fn metadata_filter(n: u8) -> (&'static str, serde_json::Value) {
    match n {
        0 => ("tag", serde_json::json!("x")),
        1 => ("n", serde_json::json!(1)),
        _ => ("n", serde_json::json!(2)),
    }
}

/// RFC 7396, the slow obvious way: `patch` merged into `target`.
fn merged(target: &serde_json::Value, patch: &serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut result = match target {
        serde_json::Value::Object(target) => target.clone(),
        _ => Metadata::new(),
    };
    for (key, value) in patch {
        if value.is_null() {
            result.remove(key);
        } else {
            let current = result.get(key).cloned().unwrap_or_default();
            result.insert(key.clone(), merged(&current, value));
        }
    }
    serde_json::Value::Object(result)
}

/// Whether a metadata filter's value matches a stored one: numbers by value.
fn same_value(stored: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    match (stored.as_f64(), wanted.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => stored == wanted,
    }
}

/// A run as a reader sees it at `now`: failed (abandoned) at its lease's end once
/// that has passed. The model leaves the message empty; [`assert_run`] takes the
/// store's.
fn settled(run: &Run, now: DateTime<Utc>) -> Run {
    if run.status == RunStatus::Running && run.lease_until < now {
        Run {
            status: RunStatus::Failed,
            finished_at: Some(run.lease_until),
            error: Some(RunFailure::new(RunFailure::ABANDONED, "")),
            ..run.clone()
        }
    } else {
        run.clone()
    }
}

#[track_caller]
fn assert_run(result: Result<Run>, expected: &Run, op: &Op) {
    let mut got = result.unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
    if let (Some(error), Some(wanted)) = (&mut got.error, &expected.error)
        && wanted.message.is_empty()
    {
        assert!(!error.message.is_empty(), "{op:?}: an error says why");
        error.message.clear();
    }
    assert_eq!(got, *expected, "{op:?}");
}

fn small_metadata(n: u8) -> Metadata {
    let mut metadata = Metadata::new();
    metadata.insert("n".to_owned(), serde_json::json!(n));
    metadata
}

/// A stored message and the seq of its parent.
#[derive(Debug, Clone)]
struct Node {
    /// As stored; its siblings are computed at each read.
    message: Message,
    parent: Option<u64>,
}

/// What the model knows of one conversation.
#[derive(Debug, Clone)]
struct ModelChat {
    conversation: Conversation,
    nodes: BTreeMap<u64, Node>,
    /// Every id stored in it at some point, deleted ones included.
    ever: Vec<MessageId>,
    /// The last append's messages and parent, for retries.
    last_append: Option<(Vec<NewMessage>, Parent)>,
    /// Its runs as stored (a read settles them).
    runs: Vec<Run>,
    deleted: bool,
}

impl ModelChat {
    fn new(conversation: Conversation) -> Self {
        Self {
            conversation,
            nodes: BTreeMap::new(),
            ever: Vec::new(),
            last_append: None,
            runs: Vec::new(),
            deleted: false,
        }
    }

    fn seq_of(&self, id: MessageId) -> Option<u64> {
        self.nodes
            .iter()
            .find(|(_, node)| node.message.id == id)
            .map(|(seq, _)| *seq)
    }

    fn children(&self, parent: Option<u64>) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.parent == parent)
            .map(|(seq, _)| *seq)
            .collect()
    }

    /// Whether `seq` is `ancestor` or below it.
    fn is_under(&self, seq: u64, ancestor: u64) -> bool {
        let mut at = Some(seq);
        while let Some(s) = at {
            if s == ancestor {
                return true;
            }
            at = self.nodes[&s].parent;
        }
        false
    }

    /// The leaf with the largest seq among `seqs`.
    fn newest_leaf(&self, seqs: impl Iterator<Item = u64>) -> Option<u64> {
        seqs.filter(|&s| self.children(Some(s)).is_empty()).max()
    }

    fn newest_leaf_under(&self, seq: u64) -> u64 {
        let under: Vec<u64> = self
            .nodes
            .keys()
            .copied()
            .filter(|&s| self.is_under(s, seq))
            .collect();
        self.newest_leaf(under.into_iter())
            .expect("a subtree has a leaf")
    }

    /// The seqs from a root to `seq`.
    fn path_to(&self, seq: u64) -> Vec<u64> {
        let mut path = vec![seq];
        while let Some(parent) = self.nodes[&path[path.len() - 1]].parent {
            path.push(parent);
        }
        path.reverse();
        path
    }

    fn head_seq(&self) -> Option<u64> {
        self.conversation
            .head_id
            .map(|id| self.seq_of(id).expect("the model's head is stored"))
    }

    fn path(&self) -> Vec<u64> {
        self.head_seq()
            .map(|head| self.path_to(head))
            .unwrap_or_default()
    }

    /// The message at `seq` as a read returns it now.
    fn read(&self, seq: u64) -> Message {
        let node = &self.nodes[&seq];
        let all = self.children(node.parent);
        let index = all
            .iter()
            .position(|&s| s == seq)
            .expect("among its siblings");
        let ids = all
            .iter()
            .enumerate()
            .filter(|(i, _)| i.abs_diff(index) <= SIBLING_WINDOW)
            .map(|(_, s)| self.nodes[s].message.id)
            .collect();
        Message {
            siblings: Siblings {
                ids,
                count: all.len() as u64,
                index: index as u64,
            },
            ..node.message.clone()
        }
    }

    /// How many of its rows (title, messages) hold every word of `terms`.
    fn matching_rows(&self, terms: &SearchTerms) -> usize {
        let title = self
            .conversation
            .title
            .as_deref()
            .is_some_and(|t| terms.matches(t));
        usize::from(title)
            + self
                .nodes
                .values()
                .filter(|n| terms.matches(&n.message.content))
                .count()
    }

    /// A hit's matches: as many as rows match (up to the cap), each a real row,
    /// built from its text.
    fn check_matches(&self, op: &Op, terms: &SearchTerms, hit: &SearchHit) {
        assert_eq!(
            hit.matches.len(),
            self.matching_rows(terms).min(MAX_MATCHES_PER_HIT),
            "{op:?}: {hit:?}"
        );
        let mut seen = Vec::new();
        for found in &hit.matches {
            assert!(!seen.contains(&found.message_id), "{op:?}: a row twice");
            seen.push(found.message_id);
            let expected = match found.message_id {
                None => {
                    let title = self.conversation.title.as_deref().unwrap_or_default();
                    assert!(terms.matches(title), "{op:?}: {title:?}");
                    SearchMatch::in_title(terms, title)
                }
                Some(id) => {
                    let seq = self
                        .seq_of(id)
                        .unwrap_or_else(|| panic!("{op:?}: a match of no stored message"));
                    let message = &self.nodes[&seq].message;
                    assert!(terms.matches(&message.content), "{op:?}: {message:?}");
                    SearchMatch::in_message(terms, id, seq, message.role, &message.content)
                }
            };
            assert_eq!(*found, expected, "{op:?}");
        }
    }

    fn reads(&self, seqs: &[u64]) -> Vec<Message> {
        seqs.iter().map(|&s| self.read(s)).collect()
    }

    /// The time of a write now: the clock's, never before the last activity.
    fn stamp(&self, clock: DateTime<Utc>) -> DateTime<Utc> {
        millis(clock).max(self.conversation.updated_at)
    }

    /// The error a write carrying `expected` gets, if any.
    fn conflict(&self, expected: Option<u64>) -> Option<(u64, u64)> {
        let actual = self.conversation.version;
        expected
            .filter(|&e| e != actual)
            .map(|expected| (expected, actual))
    }

    fn expected_version(&self, expect: Expect) -> Option<u64> {
        match expect {
            Expect::Nothing => None,
            Expect::Current => Some(self.conversation.version),
            Expect::Stale => Some(self.conversation.version + 3),
        }
    }
}

#[derive(Debug)]
struct Model {
    chats: HashMap<ConversationId, ModelChat>,
    order: Vec<ConversationId>,
    /// Every message id stored anywhere, for foreign picks.
    all_ids: Vec<MessageId>,
    clock: DateTime<Utc>,
}

impl Model {
    fn pick_chat(&self, chat: Chat) -> Option<ConversationId> {
        let count = self.order.len();
        let index = chat.index % count.max(1);
        let index = if chat.from_end {
            count.checked_sub(index + 1)?
        } else {
            index
        };
        self.order.get(index).copied()
    }

    fn pick_message(&self, chat: ConversationId, pick: Pick) -> MessageId {
        let entry = &self.chats[&chat];
        let live: Vec<MessageId>;
        let ids = match pick.among {
            Among::Live => {
                live = entry.nodes.values().map(|n| n.message.id).collect();
                &live
            }
            Among::Ever => &entry.ever,
            Among::Foreign => &self.all_ids,
        };
        if ids.is_empty() {
            MessageId::new()
        } else {
            ids[pick.index % ids.len()]
        }
    }

    fn pick_run(&self, chat: ConversationId, pick: RunPick) -> RunId {
        let ids: Vec<RunId> = if pick.foreign {
            self.order
                .iter()
                .filter(|id| **id != chat)
                .flat_map(|id| self.chats[id].runs.iter().map(|r| r.id))
                .collect()
        } else {
            self.chats[&chat].runs.iter().map(|r| r.id).collect()
        };
        if ids.is_empty() {
            RunId::new()
        } else {
            ids[pick.index % ids.len()]
        }
    }

    fn live(&self, id: ConversationId) -> Option<&ModelChat> {
        self.chats.get(&id).filter(|c| !c.deleted)
    }
}

const ARCHIVED: [ArchivedFilter; 3] = [
    ArchivedFilter::Exclude,
    ArchivedFilter::Include,
    ArchivedFilter::Only,
];

#[track_caller]
fn expect_run_not_found<T: std::fmt::Debug>(result: Result<T>, op: &Op) {
    assert!(
        matches!(
            result,
            Err(Error::NotFound {
                entity: Entity::Run
            })
        ),
        "{op:?}: expected NotFound(run), got {result:?}"
    );
}

#[track_caller]
fn expect_not_found<T: std::fmt::Debug>(result: Result<T>, op: &Op) {
    assert!(
        matches!(result, Err(Error::NotFound { .. })),
        "{op:?}: expected NotFound, got {result:?}"
    );
}

#[track_caller]
fn expect_conflict<T: std::fmt::Debug>(result: Result<T>, (expected, actual): (u64, u64), op: &Op) {
    match result {
        Err(Error::Conflict {
            expected: e,
            actual: a,
        }) if (e, a) == (expected, actual) => {}
        other => panic!("{op:?}: expected Conflict({expected}, {actual}), got {other:?}"),
    }
}

/// Drives one sequence against `store`, which reads `clock`.
struct Sequence<S> {
    store: S,
    clock: Arc<ManualClock>,
    scopes: [Scope; 2],
    model: Model,
}

impl<S: Store> Sequence<S> {
    fn new(store: S, clock: Arc<ManualClock>) -> Self {
        let now = clock.now();
        Self {
            store,
            clock,
            scopes: [
                Scope::new(format!("model-a-{}", uuid::Uuid::now_v7())).expect("a scope"),
                Scope::new(format!("model-b-{}", uuid::Uuid::now_v7())).expect("a scope"),
            ],
            model: Model {
                chats: HashMap::new(),
                order: Vec::new(),
                all_ids: Vec::new(),
                clock: now,
            },
        }
    }

    /// `scope`, or the other one when a read goes through the wrong scope.
    fn scope_to_read<'a>(&'a self, scope: &'a Scope, wrong: bool) -> &'a Scope {
        if wrong {
            self.scopes
                .iter()
                .find(|s| *s != scope)
                .expect("two scopes")
        } else {
            scope
        }
    }

    async fn apply(&mut self, op: &Op) {
        match op {
            Op::Create {
                scope,
                title,
                metadata,
            } => {
                self.create(op, &self.scopes[*scope].clone(), title, *metadata)
                    .await
            }
            Op::Append {
                chat,
                roles,
                words,
                retry_last,
                with_ids,
                at,
                title_hint,
                expect,
            } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let entry = &self.model.chats[&id];
                let (messages, parent) = match &entry.last_append {
                    Some(last) if *retry_last => last.clone(),
                    _ => {
                        let messages = roles
                            .iter()
                            .enumerate()
                            .map(|(i, role)| {
                                let message = NewMessage::new(
                                    *role,
                                    content(*words, i, entry.conversation.last_seq),
                                );
                                if *with_ids {
                                    message.with_id(MessageId::new())
                                } else {
                                    message
                                }
                            })
                            .collect();
                        let parent = match at {
                            Target::Head => Parent::Head,
                            Target::Root => Parent::Root,
                            Target::Message(pick) => {
                                Parent::Message(self.model.pick_message(id, *pick))
                            }
                        };
                        (messages, parent)
                    }
                };
                let mut append = Append::new(messages).parent(parent);
                append.expected_version = entry.expected_version(*expect);
                append.title_hint = title_hint.clone();
                self.append(op, id, append).await;
            }
            Op::Switch { chat, to, expect } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let mut patch = ConversationPatch::new().head(self.model.pick_message(id, *to));
                patch.expected_version = self.model.chats[&id].expected_version(*expect);
                self.update(op, id, patch).await;
            }
            Op::Update {
                chat,
                title,
                pinned,
                archived,
                metadata,
                head,
                expect,
            } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let patch = ConversationPatch {
                    title: title.clone(),
                    pinned: *pinned,
                    archived: *archived,
                    metadata: metadata.map(metadata_patch),
                    head_id: head.map(|pick| self.model.pick_message(id, pick)),
                    expected_version: self.model.chats[&id].expected_version(*expect),
                };
                self.update(op, id, patch).await;
            }
            Op::AutoTitle {
                chat,
                title,
                generated,
            } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let source = if *generated {
                    TitleSource::Generated
                } else {
                    TitleSource::Heuristic
                };
                self.auto_title(op, id, title, source).await;
            }
            Op::Delete { chat, expect } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let entry = self.model.chats.get_mut(&id).expect("picked");
                let expected_version = entry.expected_version(*expect);
                let result = self
                    .store
                    .delete_conversation(&entry.conversation.scope, id, expected_version)
                    .await;
                if entry.deleted {
                    expect_not_found(result, op);
                } else if let Some(conflict) = entry.conflict(expected_version) {
                    expect_conflict(result, conflict, op);
                } else {
                    result.unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
                    entry.deleted = true;
                }
            }
            Op::DeleteMessage {
                chat,
                message,
                expect,
            } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let message = self.model.pick_message(id, *message);
                let expected = self.model.chats[&id].expected_version(*expect);
                self.delete_message(op, id, message, expected).await;
            }
            Op::Fork { chat, at } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let message = self.model.pick_message(id, *at);
                self.fork(op, id, message).await;
            }
            Op::Tick { micros } => {
                self.model.clock += TimeDelta::microseconds(*micros);
                self.clock.set(self.model.clock);
            }
            Op::Get { chat, wrong_scope } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let entry = &self.model.chats[&id];
                let scope = self.scope_to_read(&entry.conversation.scope, *wrong_scope);
                let result = self.store.get_conversation(scope, id).await;
                if entry.deleted || *wrong_scope {
                    expect_not_found(result, op);
                } else {
                    assert_eq!(result.unwrap(), entry.conversation, "{op:?}");
                }
            }
            Op::GetMessage {
                chat,
                message,
                wrong_scope,
            } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let message = self.model.pick_message(id, *message);
                let entry = &self.model.chats[&id];
                let scope = self.scope_to_read(&entry.conversation.scope, *wrong_scope);
                let result = self.store.get_message(scope, id, message).await;
                match entry.seq_of(message) {
                    Some(seq) if !entry.deleted && !*wrong_scope => {
                        assert_eq!(result.unwrap(), entry.read(seq), "{op:?}");
                    }
                    _ => expect_not_found(result, op),
                }
            }
            Op::List {
                scope,
                pinned_first,
                archived,
                limit,
                filter,
                metadata,
            } => {
                let mut query = ConversationQuery::new()
                    .pinned_first(*pinned_first)
                    .archived(ARCHIVED[*archived])
                    .limit(*limit);
                query.title_contains = filter.clone();
                if let Some(n) = metadata {
                    let (key, value) = metadata_filter(*n);
                    query = query.metadata_equals(key, value);
                }
                self.list(op, *scope, query).await
            }
            Op::Search {
                chat,
                text,
                archived,
                limit,
            } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let scope = self.model.chats[&id].conversation.scope.clone();
                self.search(op, &scope, SEARCHES[*text], ARCHIVED[*archived], *limit)
                    .await
            }
            Op::Expired {
                all_scopes,
                by_archive,
                near,
                offset_micros,
                include_pinned,
                limit,
            } => {
                let Some(near) = self.model.pick_chat(*near) else {
                    return;
                };
                let near = &self.model.chats[&near].conversation;
                let time = match near.archived_at {
                    Some(at) if *by_archive => at,
                    _ => near.updated_at,
                };
                let cutoff = time + TimeDelta::microseconds(*offset_micros);
                let expiry = if *by_archive {
                    Expiry::ArchivedBefore(cutoff)
                } else {
                    Expiry::InactiveBefore(cutoff)
                };
                let mut query = RetentionQuery::new(expiry, *limit).include_pinned(*include_pinned);
                query.scope = (!all_scopes).then(|| near.scope.clone());
                self.expired(op, query).await
            }
            Op::StartRun {
                chat,
                lease_millis,
                retry,
            } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                self.start_run(op, id, *lease_millis, *retry).await
            }
            Op::RenewRun {
                chat,
                run,
                lease_millis,
            } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let run = self.model.pick_run(id, *run);
                let scope = self.model.chats[&id].conversation.scope.clone();
                let lease = Duration::from_millis(*lease_millis);
                let result = self.store.renew_run(&scope, id, run, lease).await;
                let lease = TimeDelta::milliseconds(*lease_millis as i64);
                self.run_written(op, id, run, result, |run, _, now| {
                    if run.status == RunStatus::Running {
                        run.lease_until = now + lease;
                    }
                });
            }
            Op::CancelRun { chat, run } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let run = self.model.pick_run(id, *run);
                let scope = self.model.chats[&id].conversation.scope.clone();
                let result = self.store.cancel_run(&scope, id, run).await;
                self.run_written(op, id, run, result, |run, _, _| {
                    if run.status == RunStatus::Running {
                        run.cancel_requested = true;
                    }
                });
            }
            Op::FinishRun {
                chat,
                run,
                status,
                tokens,
            } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let run = self.model.pick_run(id, *run);
                let scope = self.model.chats[&id].conversation.scope.clone();
                let used = Usage {
                    prompt_tokens: *tokens,
                    completion_tokens: 2 * tokens,
                    total_tokens: 3 * tokens,
                };
                let mut outcome = RunOutcome::new(*status);
                outcome.steps = 1;
                outcome.usage = used;
                let result = self.store.finish_run(&scope, id, run, outcome).await;
                let status = *status;
                self.run_written(op, id, run, result, |run, conversation, now| {
                    if run.status == RunStatus::Running {
                        run.status = if status == RunStatus::Running {
                            RunStatus::Failed
                        } else {
                            status
                        };
                        run.finished_at = Some(now.max(run.started_at));
                        run.steps = 1;
                        run.usage = used;
                        let total = &mut conversation.usage;
                        total.prompt_tokens += used.prompt_tokens;
                        total.completion_tokens += used.completion_tokens;
                        total.total_tokens += used.total_tokens;
                    }
                });
            }
            Op::GetRun {
                chat,
                run,
                wrong_scope,
            } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let run = self.model.pick_run(id, *run);
                let entry = &self.model.chats[&id];
                let scope = self.scope_to_read(&entry.conversation.scope, *wrong_scope);
                let result = self.store.get_run(scope, id, run).await;
                if entry.deleted || *wrong_scope {
                    return expect_not_found(result, op);
                }
                match entry.runs.iter().find(|r| r.id == run) {
                    Some(stored) => {
                        assert_run(result, &settled(stored, millis(self.model.clock)), op)
                    }
                    None => expect_run_not_found(result, op),
                }
            }
            Op::Messages {
                chat,
                after,
                before,
                limit,
                all,
            } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let query = MessageQuery {
                    after: *after,
                    before: *before,
                    limit: Some(*limit),
                    view: if *all {
                        MessageView::All
                    } else {
                        MessageView::Path
                    },
                };
                let entry = &self.model.chats[&id];
                let result = self
                    .store
                    .list_messages(&entry.conversation.scope, id, &query)
                    .await;
                if entry.deleted {
                    expect_not_found(result, op);
                    return;
                }
                let page = result.unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
                let seqs = if *all {
                    entry.nodes.keys().copied().collect()
                } else {
                    entry.path()
                };
                let inside: Vec<u64> = seqs
                    .into_iter()
                    .filter(|&s| s > after.unwrap_or(0) && before.is_none_or(|b| s < b))
                    .collect();
                let take = inside.len().min(*limit as usize);
                let chosen = if after.is_none() {
                    &inside[inside.len() - take..]
                } else {
                    &inside[..take]
                };
                assert_eq!(page.items, entry.reads(chosen), "{op:?}");
                assert_eq!(page.has_more, inside.len() > take, "{op:?}");
            }
            Op::Recent { chat, n, leaf } => {
                let Some(id) = self.model.pick_chat(*chat) else {
                    return;
                };
                let mut query = RecentQuery::new(*n);
                query.leaf = leaf.map(|pick| self.model.pick_message(id, pick));
                let entry = &self.model.chats[&id];
                let result = self
                    .store
                    .recent_messages(&entry.conversation.scope, id, &query)
                    .await;
                let path = match query.leaf {
                    _ if entry.deleted => None,
                    None => Some(entry.path()),
                    Some(leaf) => entry.seq_of(leaf).map(|seq| entry.path_to(seq)),
                };
                match path {
                    None => expect_not_found(result, op),
                    Some(path) => {
                        let start = path.len().saturating_sub(*n);
                        assert_eq!(result.unwrap(), entry.reads(&path[start..]), "{op:?}");
                    }
                }
            }
        }
    }

    async fn create(
        &mut self,
        op: &Op,
        scope: &Scope,
        title: &Option<String>,
        metadata: Option<u8>,
    ) {
        let mut new = NewConversation::new();
        new.title = title.clone();
        new.metadata = metadata.map(small_metadata).unwrap_or_default();
        let created = self
            .store
            .create_conversation(scope, new.clone())
            .await
            .unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
        let at = millis(self.model.clock);
        let expected = Conversation {
            id: created.id,
            scope: scope.clone(),
            title: new.title,
            title_source: if title.is_some() {
                TitleSource::User
            } else {
                TitleSource::None
            },
            created_at: at,
            updated_at: at,
            message_count: 0,
            last_seq: 0,
            head_id: None,
            pinned: false,
            archived: false,
            archived_at: None,
            metadata: new.metadata,
            version: 1,
            active_run_id: None,
            usage: crate::Usage::default(),
        };
        assert_eq!(created, expected, "{op:?}");
        assert!(
            !self.model.chats.contains_key(&created.id),
            "{op:?}: a reused id"
        );
        self.model.order.push(created.id);
        self.model.chats.insert(created.id, ModelChat::new(created));
    }

    async fn append(&mut self, op: &Op, id: ConversationId, append: Append) {
        let entry = &self.model.chats[&id];
        let result = self
            .store
            .append_messages(&entry.conversation.scope, id, append.clone())
            .await;
        if entry.deleted {
            return expect_not_found(result, op);
        }
        // The conversation, then the parent, then a pure retry, then the version.
        let parent = match append.parent {
            Parent::Head => entry.head_seq(),
            Parent::Root => None,
            Parent::Message(message) => match entry.seq_of(message) {
                Some(seq) => Some(seq),
                None => return expect_not_found(result, op),
            },
        };
        let existing: Vec<Option<u64>> = append
            .messages
            .iter()
            .map(|m| m.id.and_then(|mid| entry.seq_of(mid)))
            .collect();
        if existing.iter().all(Option::is_some) {
            let appended = result.unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
            assert_eq!(
                appended.conversation, entry.conversation,
                "{op:?}: a retry wrote"
            );
            let seqs: Vec<u64> = existing.into_iter().flatten().collect();
            assert_eq!(appended.messages, entry.reads(&seqs), "{op:?}");
            return;
        }
        if let Some(conflict) = entry.conflict(append.expected_version) {
            return expect_conflict(result, conflict, op);
        }
        let appended = result.unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
        assert_eq!(appended.messages.len(), append.messages.len(), "{op:?}");
        let at = entry.stamp(self.model.clock);
        let entry = self.model.chats.get_mut(&id).expect("picked");
        let mut previous = parent;
        let mut seqs = Vec::new();
        for ((sent, seq), returned) in append.messages.iter().zip(existing).zip(&appended.messages)
        {
            if let Some(seq) = seq {
                seqs.push(seq);
                continue;
            }
            // Ids the store assigns are new UUIDv7s; the model cannot know them first.
            let id = sent.id.unwrap_or(returned.id);
            assert!(
                sent.id.is_some() || id.as_uuid().get_version_num() == 7,
                "{op:?}"
            );
            assert!(entry.seq_of(id).is_none(), "{op:?}: a reused id");
            entry.conversation.last_seq += 1;
            let seq = entry.conversation.last_seq;
            let message = Message {
                id,
                conversation_id: entry.conversation.id,
                seq,
                parent_id: previous.map(|p| entry.nodes[&p].message.id),
                siblings: Siblings::default(),
                role: sent.role,
                content: sent.content.clone(),
                tool_calls: sent.tool_calls.clone(),
                tool_call_id: sent.tool_call_id.clone(),
                metadata: sent.metadata.clone(),
                created_at: at,
            };
            entry.nodes.insert(
                seq,
                Node {
                    message,
                    parent: previous,
                },
            );
            entry.ever.push(id);
            self.model.all_ids.push(id);
            previous = Some(seq);
            seqs.push(seq);
        }
        let conversation = &mut entry.conversation;
        conversation.message_count = entry.nodes.len() as u64;
        conversation.head_id = previous.map(|p| entry.nodes[&p].message.id);
        conversation.updated_at = at;
        conversation.version += 1;
        if let Some(hint) = &append.title_hint
            && conversation.title_source == TitleSource::None
        {
            conversation.title = Some(hint.clone());
            conversation.title_source = TitleSource::Heuristic;
        }
        assert_eq!(appended.conversation, entry.conversation, "{op:?}");
        assert_eq!(appended.messages, entry.reads(&seqs), "{op:?}");
        entry.last_append = Some((append.messages, append.parent));
    }

    async fn update(&mut self, op: &Op, id: ConversationId, patch: ConversationPatch) {
        let entry = &self.model.chats[&id];
        let result = self
            .store
            .update_conversation(&entry.conversation.scope, id, patch.clone())
            .await;
        if entry.deleted {
            return expect_not_found(result, op);
        }
        // The conversation, then the message the patch names, then the version.
        let head = match patch.head_id {
            None => None,
            Some(message) => match entry.seq_of(message) {
                Some(seq) => Some(entry.newest_leaf_under(seq)),
                None => return expect_not_found(result, op),
            },
        };
        if let Some(conflict) = entry.conflict(patch.expected_version) {
            return expect_conflict(result, conflict, op);
        }
        let at = entry.stamp(self.model.clock);
        let entry = self.model.chats.get_mut(&id).expect("picked");
        let mut expected = entry.conversation.clone();
        let activity = patch.title.is_some()
            || patch.pinned.is_some()
            || patch.archived.is_some()
            || patch.metadata.is_some();
        if activity || head.is_some() {
            if let Some(head) = head {
                expected.head_id = Some(entry.nodes[&head].message.id);
            }
            if let Some(title) = &patch.title {
                expected.title = Some(title.clone());
                expected.title_source = TitleSource::User;
            }
            expected.pinned = patch.pinned.unwrap_or(expected.pinned);
            if let Some(archived) = patch.archived
                && archived != expected.archived
            {
                expected.archived = archived;
                expected.archived_at = archived.then_some(at);
            }
            if let Some(patch) = &patch.metadata {
                let target = serde_json::Value::Object(expected.metadata.clone());
                let result = merged(&target, &serde_json::Value::Object(patch.clone()));
                expected.metadata = result.as_object().cloned().unwrap_or_default();
            }
            expected.version += 1;
            if activity {
                expected.updated_at = at;
            }
        }
        assert_eq!(
            result.unwrap_or_else(|e| panic!("{op:?}: {e:?}")),
            expected,
            "{op:?}"
        );
        entry.conversation = expected;
    }

    async fn auto_title(&mut self, op: &Op, id: ConversationId, title: &str, source: TitleSource) {
        let entry = self.model.chats.get_mut(&id).expect("picked");
        let result = self
            .store
            .set_title_unless_user(&entry.conversation.scope, id, title.to_owned(), source)
            .await;
        if entry.deleted {
            return expect_not_found(result, op);
        }
        let outcome = result.unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
        // A heuristic title fills only no title; a generated one replaces anything
        // but a user title.
        let applies = match entry.conversation.title_source {
            TitleSource::None => true,
            TitleSource::Heuristic | TitleSource::Generated => source == TitleSource::Generated,
            TitleSource::User => false,
        };
        if applies {
            let conversation = &mut entry.conversation;
            conversation.title = Some(title.to_owned());
            conversation.title_source = source;
            conversation.version += 1;
        }
        assert_eq!(outcome.applied, applies, "{op:?}");
        assert_eq!(outcome.conversation, entry.conversation, "{op:?}");
    }

    async fn delete_message(
        &mut self,
        op: &Op,
        id: ConversationId,
        message: MessageId,
        expected_version: Option<u64>,
    ) {
        let entry = &self.model.chats[&id];
        let result = self
            .store
            .delete_message(&entry.conversation.scope, id, message, expected_version)
            .await;
        if entry.deleted {
            return expect_not_found(result, op);
        }
        let Some(seq) = entry.seq_of(message) else {
            return expect_not_found(result, op);
        };
        if let Some(conflict) = entry.conflict(expected_version) {
            return expect_conflict(result, conflict, op);
        }
        let at = entry.stamp(self.model.clock);
        let entry = self.model.chats.get_mut(&id).expect("picked");
        let parent = entry.nodes[&seq].parent;
        let head_deleted = entry
            .head_seq()
            .is_some_and(|head| entry.is_under(head, seq));
        let doomed: Vec<u64> = entry
            .nodes
            .keys()
            .copied()
            .filter(|&s| entry.is_under(s, seq))
            .collect();
        for s in doomed {
            entry.nodes.remove(&s);
        }
        if head_deleted {
            let head = match parent {
                Some(parent) => Some(entry.newest_leaf_under(parent)),
                None => entry.newest_leaf(entry.nodes.keys().copied()),
            };
            entry.conversation.head_id = head.map(|h| entry.nodes[&h].message.id);
        }
        let conversation = &mut entry.conversation;
        conversation.message_count = entry.nodes.len() as u64;
        conversation.version += 1;
        conversation.updated_at = at;
        assert_eq!(
            result.unwrap_or_else(|e| panic!("{op:?}: {e:?}")),
            entry.conversation,
            "{op:?}"
        );
    }

    async fn fork(&mut self, op: &Op, id: ConversationId, message: MessageId) {
        let source = &self.model.chats[&id];
        let scope = source.conversation.scope.clone();
        let result = self.store.fork_conversation(&scope, id, message).await;
        let seq = match source.seq_of(message) {
            Some(seq) if !source.deleted => seq,
            _ => return expect_not_found(result, op),
        };
        let fork = result.unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
        assert!(
            !self.model.chats.contains_key(&fork.id),
            "{op:?}: a reused id"
        );
        let path = source.path_to(seq);
        let mut metadata = source.conversation.metadata.clone();
        metadata.insert(
            "forkedFrom".to_owned(),
            serde_json::json!({"conversationId": id, "messageId": message}),
        );
        // The clock's time, but never before what it copies.
        let at = source.stamp(self.model.clock);
        let expected = Conversation {
            id: fork.id,
            scope,
            title: source.conversation.title.clone(),
            title_source: if source.conversation.title.is_some() {
                TitleSource::Heuristic
            } else {
                TitleSource::None
            },
            created_at: at,
            updated_at: at,
            message_count: path.len() as u64,
            last_seq: path.len() as u64,
            head_id: Some(message),
            pinned: false,
            archived: false,
            archived_at: None,
            metadata,
            version: 1,
            active_run_id: None,
            usage: crate::Usage::default(),
        };
        assert_eq!(fork, expected, "{op:?}");
        let mut copy = ModelChat::new(fork);
        let mut previous: Option<u64> = None;
        for (original, seq) in path.iter().zip(1..) {
            let message = Message {
                conversation_id: copy.conversation.id,
                seq,
                parent_id: previous.map(|p| copy.nodes[&p].message.id),
                ..source.nodes[original].message.clone()
            };
            copy.ever.push(message.id);
            copy.nodes.insert(
                seq,
                Node {
                    message,
                    parent: previous,
                },
            );
            previous = Some(seq);
        }
        // The fork's answer is its row; its messages are what it made: read them.
        let page = self
            .store
            .list_messages(
                &copy.conversation.scope,
                copy.conversation.id,
                &MessageQuery::after(0).limit(200).view(MessageView::All),
            )
            .await
            .unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
        let seqs: Vec<u64> = copy.nodes.keys().copied().collect();
        assert_eq!(page.items, copy.reads(&seqs), "{op:?}: the copies");
        self.model.order.push(copy.conversation.id);
        self.model.chats.insert(copy.conversation.id, copy);
    }

    /// Searches every page: the hits are exactly the live conversations of the scope
    /// (by the archive filter) with a row holding every word, each once, in rank
    /// order, each the conversation as the model has it with real matches.
    async fn search(
        &self,
        op: &Op,
        scope: &Scope,
        text: &str,
        archived: ArchivedFilter,
        limit: u32,
    ) {
        let terms = SearchTerms::parse(text).expect("searches have words");
        let mut expected: BTreeSet<ConversationId> = self
            .model
            .order
            .iter()
            .filter_map(|id| self.model.live(*id))
            .filter(|c| c.conversation.scope == *scope)
            .filter(|c| archived.admits(c.conversation.archived))
            .filter(|c| c.matching_rows(&terms) > 0)
            .map(|c| c.conversation.id)
            .collect();
        let mut query = SearchQuery::new(text).archived(archived).limit(limit);
        let mut last: Option<SearchHit> = None;
        loop {
            let page = self
                .store
                .search(scope, &query)
                .await
                .unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
            assert!(page.items.len() <= limit as usize, "{op:?}");
            for hit in page.items {
                let id = hit.conversation.id;
                assert!(
                    expected.remove(&id),
                    "{op:?}: {id} found, but it is not a match or was found before"
                );
                if let Some(last) = &last {
                    assert!(rank_order(last, &hit).is_lt(), "{op:?}: out of rank order");
                }
                let entry = self.model.live(id).expect("an expected hit is live");
                assert_eq!(hit.conversation, entry.conversation, "{op:?}");
                entry.check_matches(op, &terms, &hit);
                last = Some(hit);
            }
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        assert!(expected.is_empty(), "{op:?}: not found: {expected:?}");
    }

    /// Retention: the first page of `query` and the one after it.
    async fn expired(&self, op: &Op, query: RetentionQuery) {
        let mut expected: Vec<ExpiredConversation> = self
            .model
            .order
            .iter()
            .filter_map(|id| self.model.live(*id))
            .map(|c| &c.conversation)
            .filter(|c| query.scope.as_ref().is_none_or(|scope| c.scope == *scope))
            .filter(|c| query.include_pinned || !c.pinned)
            .filter_map(|c| {
                let at = match query.expiry {
                    Expiry::InactiveBefore(cutoff) => Some(c.updated_at).filter(|at| *at < cutoff),
                    Expiry::ArchivedBefore(cutoff) => {
                        c.archived_at.filter(|at| c.archived && *at < cutoff)
                    }
                }?;
                Some(ExpiredConversation {
                    scope: c.scope.clone(),
                    id: c.id,
                    title: c.title.clone(),
                    at,
                    pinned: c.pinned,
                })
            })
            .collect();
        expected.sort_by_key(|e| (e.at, e.id));
        let limit = query.limit;
        let first = self
            .store
            .list_expired(&query)
            .await
            .unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
        assert_eq!(first, expected[..limit.min(expected.len())], "{op:?}");
        if let Some(last) = first.last().filter(|_| first.len() == limit) {
            let next = self
                .store
                .list_expired(&query.clone().after(last.at, last.id))
                .await
                .unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
            let rest = &expected[limit..];
            assert_eq!(next, rest[..limit.min(rest.len())], "{op:?}: the next page");
        }
    }

    /// Starts a run (a new one, or again one of the conversation's): refused while
    /// one is live, answered from storage for a stored id, else running, leased from
    /// now, and the conversation's `active_run_id`, an abandoned one ended first.
    async fn start_run(
        &mut self,
        op: &Op,
        id: ConversationId,
        lease_millis: u64,
        retry: Option<usize>,
    ) {
        let entry = &self.model.chats[&id];
        let mut new = NewRun::new(Duration::from_millis(lease_millis));
        if let Some(i) = retry.filter(|_| !entry.runs.is_empty()) {
            new.id = entry.runs[i % entry.runs.len()].id;
        }
        let result = self
            .store
            .start_run(&entry.conversation.scope, id, new.clone())
            .await;
        if entry.deleted {
            return expect_not_found(result, op);
        }
        let now = millis(self.model.clock);
        let entry = self.model.chats.get_mut(&id).expect("picked");
        if let Some(stored) = entry.runs.iter().find(|r| r.id == new.id) {
            return assert_run(result, &settled(stored, now), op);
        }
        if let Some(active) = entry.conversation.active_run_id {
            let stored = entry
                .runs
                .iter_mut()
                .find(|r| r.id == active)
                .expect("the active run is stored");
            if stored.status == RunStatus::Running && stored.lease_until >= now {
                match result {
                    Err(Error::RunInProgress { run_id }) if run_id == active => return,
                    other => panic!("{op:?}: expected RunInProgress({active}), got {other:?}"),
                }
            }
            *stored = settled(stored, now);
        }
        let run = Run {
            id: new.id,
            conversation_id: id,
            status: RunStatus::Running,
            started_at: now,
            finished_at: None,
            lease_until: now + TimeDelta::milliseconds(lease_millis as i64),
            cancel_requested: false,
            steps: 0,
            usage: Usage::default(),
            error: None,
            pending_tool_calls: Vec::new(),
        };
        assert_run(result, &run, op);
        entry.runs.push(run);
        entry.conversation.active_run_id = Some(new.id);
    }

    /// A renewal, cancel or finish of `run` answered `result`: the run is settled at
    /// now, then `change`d (with the conversation, for usage); one that ends is no
    /// longer the active run.
    fn run_written(
        &mut self,
        op: &Op,
        id: ConversationId,
        run: RunId,
        result: Result<Run>,
        change: impl FnOnce(&mut Run, &mut Conversation, DateTime<Utc>),
    ) {
        let now = millis(self.model.clock);
        let entry = self.model.chats.get_mut(&id).expect("picked");
        if entry.deleted {
            return expect_not_found(result, op);
        }
        let Some(index) = entry.runs.iter().position(|r| r.id == run) else {
            return expect_run_not_found(result, op);
        };
        let mut stored = settled(&entry.runs[index], now);
        change(&mut stored, &mut entry.conversation, now);
        if stored.status.is_terminal() && entry.conversation.active_run_id == Some(run) {
            entry.conversation.active_run_id = None;
        }
        assert_run(result, &stored, op);
        entry.runs[index] = stored;
    }

    async fn list(&self, op: &Op, scope: usize, query: ConversationQuery) {
        let mut query = query;
        let (archived, pinned_first) = (query.archived, query.pinned_first);
        let limit = query.limit.unwrap_or_default();
        let needle = query.title_contains.as_deref().map(str::to_ascii_lowercase);
        let mut expected: Vec<Conversation> = self
            .model
            .order
            .iter()
            .filter_map(|id| self.model.live(*id))
            .map(|c| c.conversation.clone())
            .filter(|c| c.scope == self.scopes[scope])
            .filter(|c| match archived {
                ArchivedFilter::Exclude => !c.archived,
                ArchivedFilter::Include => true,
                ArchivedFilter::Only => c.archived,
            })
            .filter(|c| match needle.as_deref() {
                None | Some("") => true,
                Some(needle) => c
                    .title
                    .as_deref()
                    .is_some_and(|t| t.to_ascii_lowercase().contains(needle)),
            })
            .filter(|c| {
                query.metadata_equals.iter().all(|(key, wanted)| {
                    c.metadata
                        .get(key)
                        .is_some_and(|stored| same_value(stored, wanted))
                })
            })
            .collect();
        // Pinned first when asked, then newest activity, then the larger id.
        expected.sort_by_key(|c| std::cmp::Reverse((pinned_first && c.pinned, c.updated_at, c.id)));
        let mut listed = Vec::new();
        loop {
            let page = self
                .store
                .list_conversations(&self.scopes[scope], &query)
                .await
                .unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
            assert!(page.items.len() <= limit as usize);
            listed.extend(page.items);
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        assert_eq!(listed, expected, "{op:?}");
    }
}

/// Runs random operation sequences (up to 60 operations, 32 sequences unless
/// `PROPTEST_CASES` is set) against fresh stores from `factory`, each reading a
/// [`ManualClock`] that the sequence moves, and against a reference model, comparing
/// every result in full; panics with the shortest failing sequence.
///
/// The operations: create, update (with a branch switch or not, archiving with its
/// `archived_at`, metadata merge patches with nested objects and nulls), automatic
/// titles, delete (at an expected version or not) and get conversations, list them
/// (with title and metadata filters); append at the head, at any message (a branch)
/// or as a root, with or without caller ids, retried, with a title hint or an
/// expected version; switch branch; delete a message; fork at a message; move the
/// clock forwards or backwards; read a message, pages of the path and of the whole
/// tree, and windows of the active path or ending at a message; search a scope
/// (the set of conversations found, each once and in rank order, each hit's
/// matches real; not the ranking); list expired conversations by inactivity or
/// archive age around a conversation's time, and the page after; start runs (new
/// or retried), renew, cancel, finish and read them with leases short enough to be
/// abandoned. Messages and runs are named among the conversation's own (deleted
/// ones included) and sometimes among every conversation's, so `NotFound` is
/// exercised too.
pub fn check_against_model<F, Fut, S>(factory: F)
where
    F: Fn(Arc<dyn Clock>) -> Fut,
    Fut: Future<Output = S>,
    S: Store,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let start = DateTime::parse_from_rfc3339("2030-01-01T00:00:00.000777Z")
        .expect("a time")
        .with_timezone(&Utc);
    // Every sequence starts with a conversation to work on.
    let strategy = (create(), proptest::collection::vec(op(), 1..60))
        .prop_map(|(first, rest)| std::iter::once(first).chain(rest).collect::<Vec<_>>());
    let result = runner.run(&strategy, |ops| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime");
        runtime.block_on(async {
            let clock = Arc::new(ManualClock::new(start));
            let store = factory(clock.clone()).await;
            let mut run = Sequence::new(store, clock);
            for op in &ops {
                run.apply(op).await;
            }
        });
        Ok(())
    });
    if let Err(failure) = result {
        panic!("the store disagrees with the model: {failure}");
    }
}
