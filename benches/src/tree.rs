//! Section F: the message tree (issue 12). A conversation of 20,000 messages: a trunk
//! of 10,000 and 200 branches of 50 off it, spread along it, seeded through the
//! store's own appends (every store keeps its tree its own way). On it: the window
//! and the switch of the active path (against the raw path read), the LLM context,
//! an append on the head, moving the head to a sibling answer ("< 1/2 >") and to a
//! branch 5,000 messages away, regenerating an answer, forking at a message 500 deep,
//! and deleting a subtree of 1,000 messages.

use std::sync::Arc;
use std::time::Instant;

use conversation_core::{
    Append, ConversationId, ConversationPatch, Conversations, MessageId, NewConversation,
    NewMessage, Parent, RecentQuery, Role, Scope, Store,
};
use tokio::runtime::Runtime;

use crate::stats::Samples;
use crate::target::Target;
use crate::workload::{Runner, expect};
use crate::{Error, Result, body};

/// Messages per append while seeding (the store's largest batch).
const BATCH: usize = 256;

/// Counts of section F.
#[derive(Debug, Clone)]
pub(crate) struct TreeScale {
    trunk: usize,
    branches: usize,
    branch_len: usize,
    fork_depth: usize,
    forks: usize,
    far_switches: usize,
    subtree: usize,
    deletes: usize,
}

impl TreeScale {
    pub(crate) fn new(quick: bool) -> Self {
        Self {
            trunk: 10_000,
            branches: 200,
            branch_len: 50,
            fork_depth: 500,
            forks: if quick { 10 } else { 30 },
            far_switches: if quick { 20 } else { 100 },
            subtree: 1_000,
            // Seconds each on SQLite: few.
            deletes: if quick { 1 } else { 3 },
        }
    }
}

/// Appends `count` messages (from message `first` of [`body::message`]) as one chain
/// at `parent`, in batches; the ids stored, in order.
async fn chain(
    store: &Arc<dyn Store>,
    scope: &Scope,
    id: ConversationId,
    mut parent: Parent,
    first: u64,
    count: usize,
) -> Result<Vec<MessageId>> {
    let mut ids = Vec::with_capacity(count);
    let mut next = 0;
    while next < count {
        let size = BATCH.min(count - next);
        let messages = body::messages(first + next as u64, size);
        let appended = store
            .append_messages(scope, id, Append::new(messages).parent(parent))
            .await?;
        ids.extend(appended.messages.iter().map(|m| m.id));
        if let Some(last) = ids.last() {
            parent = Parent::Message(*last);
        }
        next += size;
    }
    Ok(ids)
}

/// The tree: its conversation, the trunk's ids and each branch's first id.
struct Tree {
    id: ConversationId,
    trunk: Vec<MessageId>,
    branches: Vec<MessageId>,
}

fn seed(rt: &Runtime, store: &Arc<dyn Store>, scope: &Scope, scale: &TreeScale) -> Result<Tree> {
    rt.block_on(async {
        let id = store
            .create_conversation(scope, NewConversation::new().with_title("A tree"))
            .await?
            .id;
        let trunk = chain(store, scope, id, Parent::Head, 0, scale.trunk).await?;
        let mut branches = Vec::with_capacity(scale.branches);
        for k in 0..scale.branches {
            // Spread along the trunk, the last one near its end, each at an assistant
            // answer (odd positions), so that a branch starts with a new question.
            let at = (k + 1) * scale.trunk / scale.branches - 1;
            let at = at - usize::from(at.is_multiple_of(2));
            let ids = chain(
                store,
                scope,
                id,
                Parent::Message(trunk[at]),
                (scale.trunk + k * scale.branch_len) as u64,
                scale.branch_len,
            )
            .await?;
            branches.push(ids[0]);
        }
        Ok::<_, Error>(Tree {
            id,
            trunk,
            branches,
        })
    })
}

/// Section F.
pub(crate) fn section_f(runner: &mut Runner<'_>, target: &mut Target) -> Result<()> {
    let scale = runner.scale.tree.clone();
    let scope = Scope::new("f")?;
    let store = target.store()?;
    let started = Instant::now();
    let tree = seed(runner.rt, &store, &scope, &scale)?;
    target.settle(runner.rt)?;
    runner.seeded(
        "F",
        format!(
            "a tree of {} messages: a trunk of {} and {} branches of {}",
            scale.trunk + scale.branches * scale.branch_len,
            scale.trunk,
            scale.branches,
            scale.branch_len
        ),
        started,
    );
    let raw = target.raw();
    let (rw, reads, ww, writes) = (
        runner.scale.read_warmup,
        runner.scale.reads,
        runner.scale.write_warmup,
        runner.scale.writes,
    );
    let (s, id) = (&scope, tree.id);
    let st = &store;
    let window = RecentQuery::new(20);
    runner.measure(
        "F",
        "load20@tree",
        rw,
        reads,
        async |_| {
            let got = st.recent_messages(s, id, &window).await?.len();
            expect("load20@tree", got, 20)
        },
        raw.map(|raw| move |_: usize| raw.recent(s, id, 20)),
    )?;
    let service = Conversations::builder(Arc::clone(&store))
        .open_page_size(20)
        .build();
    let sv = &service;
    runner.measure(
        "F",
        "switch@tree",
        rw,
        reads,
        async |_| {
            let open = sv.open(s, id).await?;
            expect("switch@tree", open.messages.items.len(), 20)
        },
        raw.map(|raw| move |_: usize| raw.switch(s, id, 20)),
    )?;
    runner.measure(
        "F",
        "context@tree",
        rw,
        reads,
        async |_| {
            let context = sv.context(s, id).await?;
            expect("context@tree", context.len(), 20)
        },
        raw.map(|raw| move |_: usize| raw.recent(s, id, 20)),
    )?;
    runner.measure(
        "F",
        "append@tree",
        ww,
        writes,
        async |i| {
            let message = body::message(2 * i as u64);
            st.append_messages(s, id, Append::one(message)).await?;
            Ok(())
        },
        raw.map(|raw| move |i: usize| raw.append(s, id, &[body::message(2 * i as u64 + 1)])),
    )?;
    // A question on the head and two answers to it (untimed): the "< 1/2 >" a client
    // draws, and what regenerating adds to.
    let (question, answers) = runner.rt.block_on(async {
        let question = st
            .append_messages(
                s,
                id,
                Append::one(NewMessage::new(Role::User, body::body(7))),
            )
            .await?
            .messages
            .first()
            .map(|m| m.id)
            .ok_or_else(|| Error::harness("F: the question was not stored"))?;
        let mut answers = Vec::with_capacity(2);
        for k in 0..2 {
            let answer = NewMessage::new(Role::Assistant, body::body(9 + k));
            let stored = st
                .append_messages(s, id, Append::one(answer).parent(Parent::Message(question)))
                .await?;
            answers.extend(stored.messages.first().map(|m| m.id));
        }
        Ok::<_, Error>((question, answers))
    })?;
    let [first, second] = answers[..] else {
        return Err(Error::harness("F: the answers were not stored"));
    };
    // Switching between two versions of an answer: the head moves to a sibling.
    runner.measure(
        "F",
        "set_head_sibling@tree",
        ww,
        writes,
        async |i| {
            let to = if i.is_multiple_of(2) { first } else { second };
            st.update_conversation(s, id, ConversationPatch::new().head(to))
                .await?;
            Ok(())
        },
        None::<fn(usize) -> Result<()>>,
    )?;
    runner.measure(
        "F",
        "regenerate@tree",
        ww,
        writes,
        async |i| {
            let answer = NewMessage::new(Role::Assistant, body::body(2 * i as u64 + 1));
            st.append_messages(s, id, Append::one(answer).parent(Parent::Message(question)))
                .await?;
            Ok(())
        },
        None::<fn(usize) -> Result<()>>,
    )?;
    // Switching between branches far apart: the head goes to the newest leaf under
    // the first message of the branch near the trunk's start, then of the one in its
    // middle, 5,000 messages further down, and back.
    let (early, middle) = (tree.branches[0], tree.branches[tree.branches.len() / 2]);
    runner.measure(
        "F",
        "set_head_far@tree",
        ww.min(5),
        scale.far_switches,
        async |i| {
            let to = if i.is_multiple_of(2) { early } else { middle };
            st.update_conversation(s, id, ConversationPatch::new().head(to))
                .await?;
            Ok(())
        },
        None::<fn(usize) -> Result<()>>,
    )?;
    let at = tree.trunk[scale.fork_depth - 1];
    runner.measure(
        "F",
        "fork500@tree",
        2,
        scale.forks,
        async |_| {
            let fork = st.fork_conversation(s, id, at).await?;
            expect(
                "fork500@tree",
                fork.message_count as usize,
                scale.fork_depth,
            )
        },
        None::<fn(usize) -> Result<()>>,
    )?;
    delete_subtrees(runner, &store, s, &tree, &scale)
}

/// Times deleting a subtree of `scale.subtree` messages, each grown (untimed) just
/// before under a trunk message of its own.
fn delete_subtrees(
    runner: &mut Runner<'_>,
    store: &Arc<dyn Store>,
    scope: &Scope,
    tree: &Tree,
    scale: &TreeScale,
) -> Result<()> {
    let samples = runner.rt.block_on(async {
        let mut samples = Samples::with_capacity(scale.deletes);
        for k in 0..scale.deletes {
            let under = tree.trunk[(k * 37 + 101) % tree.trunk.len()];
            let grown = chain(
                store,
                scope,
                tree.id,
                Parent::Message(under),
                k as u64,
                scale.subtree,
            )
            .await?;
            let before = store.get_conversation(scope, tree.id).await?.message_count;
            let started = Instant::now();
            let after = store.delete_message(scope, tree.id, grown[0], None).await?;
            let took = started.elapsed();
            expect(
                "delete1000@tree",
                (before - after.message_count) as usize,
                scale.subtree,
            )?;
            // No warm-up: each delete takes long enough that one more would not
            // change what is seen.
            samples.record(took);
        }
        Ok::<_, Error>(samples)
    })?;
    runner.push("F", "delete1000@tree", &samples, 1, &Samples::default(), 1)
}
