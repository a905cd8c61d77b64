//! Section G: search (issue 14). Scopes of 100 and 10,000 conversations of 20
//! messages (200,000 messages), and, without `--quick`, 1,000 scopes of 10
//! conversations of 100 messages (1,000,000 messages). A rare word (in 5
//! conversations of each of the two scopes, in one of the 1,000) and a common one (in
//! most messages) are searched, a page of 20, against the same statements through
//! rusqlite; the title filter of today's list (a walk of the scope) is timed beside
//! them, and what the index costs a durable append and the file.

use std::time::Instant;

use conversation_core::{
    Append, ConversationId, ConversationQuery, NewMessage, Scope, SearchQuery,
};

use crate::target::Target;
use crate::workload::{Runner, expect};
use crate::{Error, Result, body};

/// The rare word, in no message of [`body`]'s vocabulary.
pub(crate) const RARE: &str = "kumquat";

/// A common word of [`body`]'s vocabulary.
pub(crate) const COMMON: &str = "orders";

/// Conversations of each of the two scopes that hold the rare word.
const RARE_CONVERSATIONS: usize = 5;

/// The page of a search.
const PAGE: usize = 20;

/// Counts of section G.
#[derive(Debug, Clone)]
pub(crate) struct SearchScale {
    large: (&'static str, usize),
    small: (&'static str, usize),
    per_conversation: usize,
    /// (scopes, conversations per scope, messages per conversation).
    many: Option<(usize, usize, usize)>,
    searches: usize,
    /// Searches of the common word, which ranks every message of the scope.
    common_searches: usize,
    warmup: usize,
}

impl SearchScale {
    pub(crate) fn new(quick: bool) -> Self {
        Self {
            large: if quick {
                ("1k", 1_000)
            } else {
                ("10k", 10_000)
            },
            small: ("100", 100),
            per_conversation: 20,
            many: (!quick).then_some((1_000, 10, 100)),
            searches: if quick { 200 } else { 1_000 },
            common_searches: if quick { 10 } else { 20 },
            warmup: 20,
        }
    }
}

/// Message `i` of a conversation, with the rare word added to message 7 when `rare`.
fn message(rare: bool) -> impl Fn(u64) -> NewMessage {
    move |i| {
        let mut message = body::message(i);
        if rare && i == 7 {
            message.content.push(' ');
            message.content.push_str(RARE);
        }
        message
    }
}

/// Seeds `scope` with `count` conversations of `messages` messages, the rare word in
/// `rare` of them (spread evenly); their ids.
fn seed_scope(
    runner: &mut Runner<'_>,
    target: &mut Target,
    scopes: &[(Scope, usize)],
    messages: usize,
    rare: usize,
) -> Result<Vec<Vec<ConversationId>>> {
    let ids = target.seed_conversations(runner.rt, scopes)?;
    for ((scope, count), ids) in scopes.iter().zip(&ids) {
        let every = (count / rare.max(1)).max(1);
        for (k, id) in ids.iter().enumerate() {
            let with = message(k % every == 0 && k / every < rare);
            target.seed_messages_with(runner.rt, scope, *id, messages, &with)?;
        }
    }
    Ok(ids)
}

/// Section G.
pub(crate) fn section_g(runner: &mut Runner<'_>, target: &mut Target) -> Result<()> {
    let scale = runner.scale.search.clone();
    let started = Instant::now();
    let (small, large) = (
        Scope::new(format!("g-{}", scale.small.0))?,
        Scope::new(format!("g-{}", scale.large.0))?,
    );
    let ids = seed_scope(
        runner,
        target,
        &[
            (small.clone(), scale.small.1),
            (large.clone(), scale.large.1),
        ],
        scale.per_conversation,
        RARE_CONVERSATIONS,
    )?;
    let many = match scale.many {
        Some((scopes, per_scope, messages)) => {
            let scopes = (0..scopes)
                .map(|k| Ok((Scope::new(format!("g-s-{k:04}"))?, per_scope)))
                .collect::<Result<Vec<_>>>()?;
            seed_scope(runner, target, &scopes, messages, 1)?;
            scopes.get(scopes.len() / 2).map(|(scope, _)| scope.clone())
        }
        None => None,
    };
    target.settle(runner.rt)?;
    let mut what = format!(
        "scopes of {} and {} conversations of {} messages",
        scale.small.1, scale.large.1, scale.per_conversation
    );
    if let Some((scopes, per_scope, messages)) = scale.many {
        what.push_str(&format!(
            ", {scopes} scopes of {per_scope} conversations of {messages} messages"
        ));
    }
    runner.seeded("G", what, started);
    if let Some((database, index, messages)) = target.sizes()? {
        let mib = |bytes: i64| bytes as f64 / 1_048_576.0;
        runner.notes.push(format!(
            "G: the search index takes {:.1} MiB of the {:.1} MiB database file ({:.1} %); \
             the file holds {messages} messages, all indexed except those of section B's \
             long conversations (seeded without index rows)",
            mib(index),
            mib(database),
            100.0 * index as f64 / database.max(1) as f64,
        ));
    }

    let mut searches = vec![
        (small.clone(), scale.small.0, RARE, RARE_CONVERSATIONS),
        (large.clone(), scale.large.0, RARE, RARE_CONVERSATIONS),
        (small.clone(), scale.small.0, COMMON, PAGE),
        (large.clone(), scale.large.0, COMMON, PAGE),
    ];
    if let Some(scope) = &many {
        searches.push((scope.clone(), "1M", RARE, 1));
        searches.push((scope.clone(), "1M", COMMON, 10));
    }
    let store = target.store()?;
    let raw = target.raw();
    for (scope, label, word, hits) in &searches {
        let (kind, warmup, n) = if *word == RARE {
            ("rare", scale.warmup, scale.searches)
        } else {
            ("common", 2, scale.common_searches)
        };
        let query = SearchQuery::new(*word).limit(PAGE as u32);
        let (st, s, q) = (&store, scope, &query);
        runner.measure(
            "G",
            &format!("search_{kind}@{label}"),
            warmup,
            n,
            async |_| {
                let page = st.search(s, q).await?;
                expect("search hits", page.items.len(), *hits)
            },
            raw.map(|raw| {
                move |_: usize| expect("raw search hits", raw.search(s, word, PAGE)?, *hits)
            }),
        )?;
    }
    // Today's title filter: no title has the word, so the walk reads the whole scope.
    let filter = ConversationQuery::new().title_contains(RARE);
    let (st, s, f) = (&store, &large, &filter);
    runner.measure(
        "G",
        &format!("title_filter@{}", scale.large.0),
        scale.warmup,
        scale.searches,
        async |_| {
            let page = st.list_conversations(s, f).await?;
            expect("title filter", page.items.len(), 0)
        },
        raw.map(|raw| {
            move |_: usize| expect("raw title filter", raw.title_filter(s, RARE, 50)?, 0)
        }),
    )?;

    // What the index costs a durable append: in a conversation of the large scope.
    let chat = ids
        .get(1)
        .and_then(|ids| ids.get(1))
        .copied()
        .ok_or_else(|| Error::harness("G: the large scope was not seeded"))?;
    let (ww, writes) = (runner.scale.write_warmup, runner.scale.writes);
    runner.measure(
        "G",
        &format!("append@g{}", scale.large.0),
        ww,
        writes,
        async |i| {
            let message = vec![body::message(2 * i as u64)];
            st.append_messages(s, chat, Append::new(message)).await?;
            Ok(())
        },
        raw.map(|raw| move |i: usize| raw.append(s, chat, &[body::message(2 * i as u64 + 1)])),
    )?;
    if let Some(raw) = raw {
        // Both sides raw: the append with its words indexed, and without.
        runner.measure(
            "G",
            "raw_append_indexed_vs_unindexed",
            ww,
            writes,
            async |i| raw.append(s, chat, &[body::message(2 * i as u64)]),
            Some(|i: usize| raw.append_unindexed(s, chat, &[body::message(2 * i as u64 + 1)])),
        )?;
    }
    Ok(())
}
