//! The workload, sections A to D (E, HTTP, is in `http.rs`), and the run that
//! measures it.
//!
//! Every operation is timed call by call with [`Instant`] after a warm-up whose calls
//! are not recorded. Where there is a raw baseline (SQLite), each store call is
//! paired with one baseline call, alternating which goes first, so that both see
//! the same machine at the same moment. Seeding is bulk and untimed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use conversation_core::backend::ListCursor;
use conversation_core::{
    Append, ConversationId, ConversationQuery, Conversations, MessageQuery, NewConversation,
    RecentQuery, Scope, Store,
};
use tokio::runtime::Runtime;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::probe::{self, Machine};
use crate::report::{Report, Row, RssMark, Seeding, check_targets};
use crate::stats::{Samples, Summary};
use crate::target::{StoreKind, Target};
use crate::{Error, Result, body};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The store to measure.
    pub store: StoreKind,
    /// Smaller counts and no 1,000,000-message conversation nor 100,000-conversation
    /// scope: about a minute for SQLite.
    pub quick: bool,
    /// Where the SQLite file (and the fsync probe) go: a new temporary folder inside
    /// this one, removed at the end. Default: the system's temporary folder.
    pub dir: Option<PathBuf>,
    /// The PostgreSQL server, for `--store postgres`.
    pub postgres_url: String,
    /// The command line, recorded in the report.
    pub command: String,
    /// The sections to run, as letters (`"ABCDEFG"` for all). A subset is for
    /// profiling and quick looks, not for the figures of record.
    pub sections: String,
    /// The seed stack's API (`http://127.0.0.1:8090/api/v1/connections`), which
    /// section E then compares with.
    pub seed_url: Option<String>,
}

/// Counts of one run.
#[derive(Debug, Clone)]
pub(crate) struct Scale {
    pub(crate) quick: bool,
    pub(crate) reads: usize,
    pub(crate) read_warmup: usize,
    pub(crate) writes: usize,
    pub(crate) write_warmup: usize,
    creates: usize,
    appends: usize,
    batches: usize,
    concurrent_per_task: usize,
    long: Vec<(&'static str, usize)>,
    scopes: Vec<(&'static str, usize)>,
    d_scopes: usize,
    d_per_scope: usize,
    d_messages: usize,
    reopens: usize,
    pub(crate) tree: crate::tree::TreeScale,
    pub(crate) search: crate::search::SearchScale,
}

impl Scale {
    fn new(quick: bool) -> Self {
        let mut long = vec![("500", 500), ("20k", 20_000)];
        let mut scopes = vec![("100", 100), ("10k", 10_000)];
        if !quick {
            long.push(("1M", 1_000_000));
            scopes.push(("100k", 100_000));
        }
        Self {
            quick,
            reads: if quick { 2_000 } else { 10_000 },
            read_warmup: if quick { 100 } else { 500 },
            writes: if quick { 500 } else { 1_000 },
            write_warmup: 20,
            creates: 1_000,
            appends: 1_000,
            batches: 50,
            concurrent_per_task: if quick { 100 } else { 250 },
            long,
            scopes,
            d_scopes: 1_000,
            d_per_scope: 100,
            d_messages: 30,
            reopens: if quick { 5 } else { 20 },
            tree: crate::tree::TreeScale::new(quick),
            search: crate::search::SearchScale::new(quick),
        }
    }
}

/// Checks a count the harness relies on (a page of the expected size).
pub(crate) fn expect(what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::harness(format!(
            "{what}: expected {want}, got {got}"
        )))
    }
}

/// Runs the workload against a new store and reports what it measured.
///
/// # Errors
/// When the store cannot be opened or seeded, or a call fails; the PostgreSQL schema
/// is dropped and the SQLite folder removed in every case.
pub fn run(config: &Config) -> Result<Report> {
    let started = Instant::now();
    let machine = Machine::probe();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut folder = tempfile::Builder::new();
    folder.prefix("conversation-scale-");
    let dir = match &config.dir {
        Some(parent) => folder.tempdir_in(parent)?,
        None => folder.tempdir()?,
    };
    let fsync = probe::fsync_probe(dir.path(), 100)?;
    let mut target = Target::open(config.store, dir.path(), &config.postgres_url, &rt)?;
    let mut runner = Runner::new(&rt, Scale::new(config.quick));
    let outcome = runner.all(&mut target, &config.sections, config.seed_url.as_deref());
    let shutdown = target.shutdown(&rt);
    outcome?;
    shutdown?;
    let baseline = match config.store {
        StoreKind::Sqlite => format!(
            "raw SQLite {} through rusqlite 0.39 on libsqlite3-sys 0.37 (the copy the store links): \
             the same file, the same statements, the same pragmas, prepared and cached, \
             interleaved call by call with the store",
            machine.sqlite_version
        ),
        StoreKind::Memory => "none: an in-process store has no lower layer to compare with".into(),
        StoreKind::Postgres => {
            "none: the PostgreSQL store's SQL is private; ratios are shown as —".into()
        }
    };
    let targets = check_targets(config.store, &runner.rows);
    Ok(Report {
        store: config.store.name().to_owned(),
        quick: config.quick,
        command: config.command.clone(),
        machine,
        fsync,
        baseline,
        load_at_end: probe::load_average(),
        elapsed_s: started.elapsed().as_secs_f64(),
        seeding: runner.seeding,
        operations: runner.rows,
        peak_rss: runner.rss,
        notes: runner.notes,
        targets,
    })
}

/// Measures and collects rows.
pub(crate) struct Runner<'a> {
    pub(crate) rt: &'a Runtime,
    pub(crate) scale: Scale,
    pub(crate) rows: Vec<Row>,
    seeding: Vec<Seeding>,
    rss: Vec<RssMark>,
    pub(crate) notes: Vec<String>,
}

impl<'a> Runner<'a> {
    fn new(rt: &'a Runtime, scale: Scale) -> Self {
        Self {
            rt,
            scale,
            rows: Vec::new(),
            seeding: Vec::new(),
            rss: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn all(&mut self, target: &mut Target, sections: &str, seed_url: Option<&str>) -> Result<()> {
        let wanted = |letter: char| sections.contains(letter);
        if let Some(other) = sections.chars().find(|c| !"ABCDEFG".contains(*c)) {
            return Err(Error::harness(format!("no section {other:?}: A to G")));
        }
        if wanted('A') {
            self.section_a(target)?;
            self.mark("A");
        }
        if wanted('B') {
            self.section_b(target)?;
            self.mark("B");
        }
        if wanted('C') {
            self.section_c(target)?;
            self.mark("C");
        }
        if wanted('D') {
            self.section_d(target)?;
            self.mark("D");
        }
        if wanted('E') {
            crate::http::section_e(self, target, seed_url)?;
            self.mark("E");
        }
        if wanted('F') {
            crate::tree::section_f(self, target)?;
            self.mark("F");
        }
        if wanted('G') {
            crate::search::section_g(self, target)?;
            self.mark("G");
        }
        Ok(())
    }

    fn mark(&mut self, after: &'static str) {
        self.rss.push(RssMark {
            after,
            peak_rss_bytes: probe::peak_rss_bytes(),
        });
    }

    pub(crate) fn seeded(&mut self, section: &'static str, what: String, started: Instant) {
        self.seeding.push(Seeding {
            section,
            what,
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    /// Times `warmup + n` calls of `store_op` (and of `raw_op`, interleaved), records
    /// the last `n` of each and adds the row. The operation's index is passed to both.
    pub(crate) fn measure<S, R>(
        &mut self,
        section: &'static str,
        operation: &str,
        warmup: usize,
        n: usize,
        mut store_op: S,
        mut raw_op: Option<R>,
    ) -> Result<()>
    where
        S: AsyncFnMut(usize) -> Result<()>,
        R: FnMut(usize) -> Result<()>,
    {
        let (store, raw) = self.rt.block_on(async {
            let mut store = Samples::with_capacity(n);
            let mut raw = Samples::with_capacity(n);
            let mut time_raw = |i: usize, raw: &mut Samples| -> Result<()> {
                if let Some(op) = raw_op.as_mut() {
                    let started = Instant::now();
                    op(i)?;
                    let took = started.elapsed();
                    if i >= warmup {
                        raw.record(took);
                    }
                }
                Ok(())
            };
            for i in 0..warmup + n {
                let raw_first = i % 2 == 1;
                if raw_first {
                    time_raw(i, &mut raw)?;
                }
                let started = Instant::now();
                store_op(i).await?;
                let took = started.elapsed();
                if i >= warmup {
                    store.record(took);
                }
                if !raw_first {
                    time_raw(i, &mut raw)?;
                }
            }
            Ok::<_, Error>((store, raw))
        })?;
        self.push(section, operation, &store, 1, &raw, 1)
    }

    pub(crate) fn push(
        &mut self,
        section: &'static str,
        operation: &str,
        store: &Samples,
        store_units: usize,
        raw: &Samples,
        raw_units: usize,
    ) -> Result<()> {
        let summary: Summary = store
            .summary(store_units)
            .ok_or_else(|| Error::harness(format!("{operation}: nothing measured")))?;
        self.rows.push(Row::new(
            section,
            operation,
            summary,
            raw.summary(raw_units),
        ));
        Ok(())
    }

    /// A: a near-empty store: creates, durable appends, batches, 8 concurrent writers.
    fn section_a(&mut self, target: &Target) -> Result<()> {
        let store = target.store()?;
        let raw = target.raw();
        let scope = Scope::new("a")?;
        let s = &scope;
        let (ww, creates, appends, batches) = (
            self.scale.write_warmup,
            self.scale.creates,
            self.scale.appends,
            self.scale.batches,
        );
        self.measure(
            "A",
            "create",
            ww,
            creates,
            async |_| {
                store.create_conversation(s, NewConversation::new()).await?;
                Ok(())
            },
            raw.map(|raw| move |_: usize| raw.create(s).map(drop)),
        )?;

        // The store's appends are user turns, the baseline's the assistant's answers,
        // into the same conversation.
        let chat = self
            .rt
            .block_on(store.create_conversation(s, NewConversation::new()))?
            .id;
        self.measure(
            "A",
            "append",
            ww,
            appends,
            async |i| {
                let message = body::message(2 * i as u64);
                store
                    .append_messages(s, chat, Append::new(vec![message]))
                    .await?;
                Ok(())
            },
            raw.map(|raw| move |i: usize| raw.append(s, chat, &[body::message(2 * i as u64 + 1)])),
        )?;

        let batch = self
            .rt
            .block_on(store.create_conversation(s, NewConversation::new()))?
            .id;
        self.measure(
            "A",
            "append_batch100",
            5,
            batches,
            async |i| {
                let messages = body::messages(200 * i as u64, 100);
                store
                    .append_messages(s, batch, Append::new(messages))
                    .await?;
                Ok(())
            },
            raw.map(|raw| {
                move |i: usize| raw.append(s, batch, &body::messages(200 * i as u64 + 100, 100))
            }),
        )?;

        self.concurrent8(target, &store, s)
    }

    /// 8 tasks, each appending to its own conversation, released together; the
    /// baseline is one connection committing one message to each of the 8 per
    /// transaction: group commit at its best.
    fn concurrent8(
        &mut self,
        target: &Target,
        store: &Arc<dyn Store>,
        scope: &Scope,
    ) -> Result<()> {
        const WRITERS: usize = 8;
        const WARMUP: usize = 10;
        let per_task = self.scale.concurrent_per_task;
        let before = target.write_stats();
        let samples = self.rt.block_on(async {
            let mut ids = Vec::with_capacity(WRITERS);
            for _ in 0..WRITERS {
                ids.push(
                    store
                        .create_conversation(scope, NewConversation::new())
                        .await?
                        .id,
                );
            }
            let barrier = Arc::new(Barrier::new(WRITERS + 1));
            let mut tasks = JoinSet::new();
            for id in ids.iter().copied() {
                let store = Arc::clone(store);
                let scope = scope.clone();
                let barrier = Arc::clone(&barrier);
                tasks.spawn(async move {
                    for j in 0..WARMUP {
                        let message = vec![body::message(j as u64)];
                        store
                            .append_messages(&scope, id, Append::new(message))
                            .await?;
                    }
                    barrier.wait().await;
                    let mut samples = Samples::with_capacity(per_task);
                    for j in WARMUP..WARMUP + per_task {
                        let message = vec![body::message(j as u64)];
                        let started = Instant::now();
                        store
                            .append_messages(&scope, id, Append::new(message))
                            .await?;
                        samples.record(started.elapsed());
                    }
                    Ok::<_, Error>(samples)
                });
            }
            barrier.wait().await;
            let started = Instant::now();
            let mut all = Samples::with_capacity(WRITERS * per_task);
            while let Some(joined) = tasks.join_next().await {
                let samples = joined
                    .map_err(|e| Error::harness(format!("an appender task failed: {e}")))??;
                all.extend(&samples);
            }
            all.set_wall(started.elapsed());
            Ok::<_, Error>((all, ids))
        })?;
        let (store_samples, ids) = samples;
        if let (Some((t0, w0)), Some((t1, w1))) = (before, target.write_stats()) {
            let (transactions, writes) = (t1 - t0, w1 - w0);
            self.notes.push(format!(
                "append_concurrent8: the SQLite writer committed {writes} writes in \
                 {transactions} transactions, {:.1} per commit (warm-up included)",
                writes as f64 / transactions.max(1) as f64
            ));
        }
        let mut raw_samples = Samples::default();
        if let Some(raw) = target.raw() {
            for i in 0..WARMUP + per_task {
                let started = Instant::now();
                raw.append_group(scope, &ids, |k| body::message((i * WRITERS + k) as u64))?;
                if i >= WARMUP {
                    raw_samples.record(started.elapsed());
                }
            }
        }
        self.push(
            "A",
            "append_concurrent8",
            &store_samples,
            1,
            &raw_samples,
            WRITERS,
        )
    }

    /// B: long conversations: windows, a switch, the oldest page, appends.
    fn section_b(&mut self, target: &mut Target) -> Result<()> {
        let scope = Scope::new("b")?;
        let sizes = self.scale.long.clone();
        let started = Instant::now();
        let ids = target
            .seed_conversations(self.rt, &[(scope.clone(), sizes.len())])?
            .pop()
            .unwrap_or_default();
        for (id, (_, count)) in ids.iter().zip(&sizes) {
            target.seed_long_messages(self.rt, &scope, *id, *count)?;
        }
        target.settle(self.rt)?;
        let what = sizes
            .iter()
            .map(|(_, count)| count.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        self.seeded("B", format!("conversations of {what} messages"), started);

        let store = target.store()?;
        let raw = target.raw();
        let s = &scope;
        let (rw, reads) = (self.scale.read_warmup, self.scale.reads);
        for (id, (label, _)) in ids.iter().copied().zip(&sizes) {
            self.measure(
                "B",
                &format!("load20@{label}"),
                rw,
                reads,
                async |_| {
                    expect(
                        "load20",
                        store
                            .recent_messages(s, id, &RecentQuery::new(20))
                            .await?
                            .len(),
                        20,
                    )
                },
                raw.map(|raw| move |_: usize| raw.recent(s, id, 20)),
            )?;
        }
        let (short, long) = match ids.as_slice() {
            [short, long, ..] => (*short, *long),
            _ => return Err(Error::harness("B: the conversations were not seeded")),
        };
        let service = Conversations::builder(Arc::clone(&store))
            .open_page_size(20)
            .build();
        self.measure(
            "B",
            "switch@500",
            rw,
            reads,
            async |_| {
                expect(
                    "switch",
                    service.open(s, short).await?.messages.items.len(),
                    20,
                )
            },
            raw.map(|raw| move |_: usize| raw.switch(s, short, 20)),
        )?;
        let oldest = MessageQuery::after(0).limit(50);
        self.measure(
            "B",
            "page50_oldest@20k",
            rw,
            reads,
            async |_| {
                let page = store.list_messages(s, long, &oldest).await?;
                expect("page50_oldest", page.items.len(), 50)
            },
            raw.map(|raw| move |_: usize| raw.page(s, long, false, 50)),
        )?;
        let (ww, writes) = (self.scale.write_warmup, self.scale.writes);
        self.measure(
            "B",
            "append@20k",
            ww,
            writes,
            async |i| {
                let message = body::message(2 * i as u64);
                store
                    .append_messages(s, long, Append::new(vec![message]))
                    .await?;
                Ok(())
            },
            raw.map(|raw| move |i: usize| raw.append(s, long, &[body::message(2 * i as u64 + 1)])),
        )
    }

    /// C: large scopes: the first page of each, and the fourth page of 10,000.
    fn section_c(&mut self, target: &mut Target) -> Result<()> {
        let sizes = self.scale.scopes.clone();
        let scopes = sizes
            .iter()
            .map(|(label, count)| Ok((Scope::new(format!("c-{label}"))?, *count)))
            .collect::<Result<Vec<_>>>()?;
        let started = Instant::now();
        target.seed_conversations(self.rt, &scopes)?;
        target.settle(self.rt)?;
        let what = sizes
            .iter()
            .map(|(_, count)| count.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        self.seeded("C", format!("scopes of {what} conversations"), started);

        let store = target.store()?;
        let raw = target.raw();
        let (rw, reads) = (self.scale.read_warmup, self.scale.reads);
        let first = ConversationQuery::new();
        for ((scope, _), (label, _)) in scopes.iter().zip(&sizes) {
            self.measure(
                "C",
                &format!("list50@{label}"),
                rw,
                reads,
                async |_| {
                    let page = store.list_conversations(scope, &first).await?;
                    expect("list50", page.items.len(), 50)
                },
                raw.map(|raw| move |_: usize| raw.list(scope, None, 50)),
            )?;
        }
        let Some((scope, _)) = scopes.get(1) else {
            return Err(Error::harness("C: no scope of 10,000"));
        };
        let mut query = ConversationQuery::new();
        for _ in 0..3 {
            let page = self.rt.block_on(store.list_conversations(scope, &query))?;
            let next = page
                .next_cursor
                .ok_or_else(|| Error::harness("C: the scope of 10,000 ended early"))?;
            query = ConversationQuery::new().cursor(next);
        }
        let cursor = ListCursor::decode(query.cursor.as_deref().unwrap_or_default())?;
        self.measure(
            "C",
            "list50_page4@10k",
            rw,
            reads,
            async |_| {
                let page = store.list_conversations(scope, &query).await?;
                expect("list50_page4", page.items.len(), 50)
            },
            raw.map(|raw| move |_: usize| raw.list(scope, Some(&cursor), 50)),
        )
    }

    /// D: 100,000 conversations across 1,000 scopes. Operations named `…@D` repeat
    /// one scope or conversation, as C and B do, so they compare like for like; those
    /// named `…@D-rot` rotate over the 1,000 scopes (and their conversations), as a
    /// server with many users sees them, caches colder.
    fn section_d(&mut self, target: &mut Target) -> Result<()> {
        let (d_scopes, per_scope, d_messages) = (
            self.scale.d_scopes,
            self.scale.d_per_scope,
            self.scale.d_messages,
        );
        let scopes = (0..d_scopes)
            .map(|k| Ok((Scope::new(format!("d-{k:04}"))?, per_scope)))
            .collect::<Result<Vec<_>>>()?;
        let started = Instant::now();
        let ids = target.seed_conversations(self.rt, &scopes)?;
        let mut chats = Vec::with_capacity(d_scopes);
        for ((scope, _), ids) in scopes.iter().zip(&ids) {
            let id = ids
                .get(per_scope / 2)
                .copied()
                .ok_or_else(|| Error::harness("D: a scope was not seeded"))?;
            target.seed_messages(self.rt, scope, id, d_messages)?;
            chats.push((scope.clone(), id));
        }
        target.settle(self.rt)?;
        self.seeded(
            "D",
            format!(
                "{} conversations in {d_scopes} scopes, one of {d_messages} messages per scope",
                d_scopes * per_scope
            ),
            started,
        );

        let store = target.store()?;
        let raw = target.raw();
        let (rw, reads, ww, writes) = (
            self.scale.read_warmup,
            self.scale.reads,
            self.scale.write_warmup,
            self.scale.writes,
        );
        // A stride coprime with 1,000 visits every scope, far from the previous one.
        let pick = |i: usize| (i * 389) % d_scopes;
        let scope_of = |i: usize| &scopes[pick(i)].0;
        let chat_of = |i: usize| &chats[pick(i)];
        let any_of = |i: usize| {
            let k = (i * 7919) % (d_scopes * per_scope);
            (&scopes[k / per_scope].0, ids[k / per_scope][k % per_scope])
        };
        let first = ConversationQuery::new();
        let (hot_scope, hot_chat) = (scope_of(0), chat_of(0).1);
        self.measure(
            "D",
            "list50@D",
            rw,
            reads,
            async |_| {
                let page = store.list_conversations(hot_scope, &first).await?;
                expect("list50@D", page.items.len(), 50)
            },
            raw.map(|raw| move |_: usize| raw.list(hot_scope, None, 50)),
        )?;
        self.measure(
            "D",
            "list50@D-rot",
            rw,
            reads,
            async |i| {
                let page = store.list_conversations(scope_of(i), &first).await?;
                expect("list50@D-rot", page.items.len(), 50)
            },
            raw.map(|raw| move |i: usize| raw.list(scope_of(i), None, 50)),
        )?;
        self.measure(
            "D",
            "get@D-rot",
            rw,
            reads,
            async |i| {
                let (scope, id) = any_of(i);
                store.get_conversation(scope, id).await.map(drop)?;
                Ok(())
            },
            raw.map(|raw| {
                move |i: usize| {
                    let (scope, id) = any_of(i);
                    raw.get(scope, id)
                }
            }),
        )?;
        let service = Conversations::builder(Arc::clone(&store))
            .open_page_size(20)
            .build();
        self.measure(
            "D",
            "switch@D",
            rw,
            reads,
            async |_| {
                let open = service.open(hot_scope, hot_chat).await?;
                expect("switch@D", open.messages.items.len(), 20)
            },
            raw.map(|raw| move |_: usize| raw.switch(hot_scope, hot_chat, 20)),
        )?;
        self.measure(
            "D",
            "switch@D-rot",
            rw,
            reads,
            async |i| {
                let (scope, id) = chat_of(i);
                let open = service.open(scope, *id).await?;
                expect("switch@D-rot", open.messages.items.len(), 20)
            },
            raw.map(|raw| {
                move |i: usize| {
                    let (scope, id) = chat_of(i);
                    raw.switch(scope, *id, 20)
                }
            }),
        )?;
        self.measure(
            "D",
            "create@D-rot",
            ww,
            writes,
            async |i| {
                store
                    .create_conversation(scope_of(i), NewConversation::new())
                    .await?;
                Ok(())
            },
            raw.map(|raw| move |i: usize| raw.create(scope_of(i)).map(drop)),
        )?;
        self.measure(
            "D",
            "append@D-rot",
            ww,
            writes,
            async |i| {
                let (scope, id) = chat_of(i);
                let message = vec![body::message(2 * i as u64)];
                store
                    .append_messages(scope, *id, Append::new(message))
                    .await?;
                Ok(())
            },
            raw.map(|raw| {
                move |i: usize| {
                    let (scope, id) = chat_of(i);
                    raw.append(scope, *id, &[body::message(2 * i as u64 + 1)])
                }
            }),
        )?;
        drop(service);
        drop(store);
        if target.reopens() {
            self.reopen_switch(target, &chats)?;
        }
        Ok(())
    }

    /// Closes the store (untimed), then times opening it and one switch; the
    /// baseline opens one read connection and runs the switch's two statements.
    fn reopen_switch(
        &mut self,
        target: &mut Target,
        chats: &[(Scope, ConversationId)],
    ) -> Result<()> {
        let n = self.scale.reopens;
        let mut store_samples = Samples::with_capacity(n);
        let mut raw_samples = Samples::with_capacity(n);
        for i in 0..n + 1 {
            let (scope, id) = &chats[(i * 389) % chats.len()];
            target.close(self.rt);
            let started = Instant::now();
            self.rt.block_on(async {
                let store = target.reopen().await?;
                let open = Conversations::builder(store)
                    .open_page_size(20)
                    .build()
                    .open(scope, *id)
                    .await?;
                expect("reopen+switch", open.messages.items.len(), 20)
            })?;
            let took = started.elapsed();
            if let Some(raw) = target.raw() {
                let started = Instant::now();
                raw.reopen_switch(scope, *id, 20)?;
                if i > 0 {
                    raw_samples.record(started.elapsed());
                }
            }
            if i > 0 {
                store_samples.record(took);
            }
        }
        self.push("D", "reopen+switch", &store_samples, 1, &raw_samples, 1)
    }
}
