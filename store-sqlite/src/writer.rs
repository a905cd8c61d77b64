//! The writer thread: one connection, group commit.
//!
//! Every write of a store goes through one thread that owns the only writer
//! connection. Callers validate their input, send a request (the write, as a closure
//! over that connection, with the channel its own typed answer goes back on) on a
//! bounded queue and wait for the answer. The thread takes whatever is queued (up to
//! the group size) and runs it in one `BEGIN IMMEDIATE` transaction: a lone request
//! as it is, each request of a larger group inside its own `SAVEPOINT`, so that one
//! request's error (`NotFound`, `Conflict`, …) rolls back only that request. It
//! commits once, checks that the database file is still the one it opened, and only
//! then answers every request of the group. Many concurrent writers thus share one
//! commit (one fsync) instead of each paying for its own, and nobody is told "done"
//! before the data is durable. A failed commit fails every request of its group.
//! After a group of several requests the thread lingers briefly for as many again
//! ([`Writer::gather`]).
//!
//! A group that deleted anything (a conversation, a message subtree) is followed,
//! before it is answered, by a checkpoint that moves the write-ahead log into the
//! database and truncates it, so that the deleted text survives in neither file
//! (`secure_delete` zeroes it in the database). When readers keep the checkpoint from
//! completing, the writer tries again after its next group, and at the latest when it
//! closes.
//!
//! A caller that stops waiting (its future dropped) does not disturb the thread: its
//! answer is discarded. A request already queued is still carried out, like a request
//! already sent to a server; appends with caller-supplied ids make retries safe.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use conversation_core::{Clock, Error, Limits, Result};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::connection::FileWatch;
use crate::error::{StoreError, closed, copy, db};
use crate::sql;

/// What a write runs with: the writer's connection, inside the group's transaction.
pub(crate) struct WriteContext<'c> {
    pub(crate) conn: &'c Connection,
    pub(crate) clock: &'c dyn Clock,
    pub(crate) limits: &'c Limits,
    /// Set by a write that deleted rows: the group is followed by a checkpoint that
    /// truncates the write-ahead log.
    pub(crate) deleted: bool,
}

/// A queued write and the channel its answer goes back on.
pub(crate) trait Job: Send {
    /// Runs the write; whether it succeeded.
    fn run(&mut self, cx: &mut WriteContext<'_>) -> bool;
    /// Its error, after a failed run.
    fn error(&self) -> Option<&Error>;
    /// Answers the caller: with the write's own result, or with `failure` when its
    /// group failed as a whole.
    fn answer(self: Box<Self>, failure: Option<&Error>);
}

type Reply<T> = oneshot::Sender<Result<T>>;

struct Request<T, F> {
    write: Option<F>,
    result: Option<Result<T>>,
    reply: Reply<T>,
}

impl<T, F> Job for Request<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut WriteContext<'_>) -> Result<T> + Send + 'static,
{
    fn run(&mut self, cx: &mut WriteContext<'_>) -> bool {
        let result = match self.write.take() {
            // A panic is a bug; it fails this request, and the savepoint or the
            // transaction around it is rolled back like any failure.
            Some(write) => catch_unwind(AssertUnwindSafe(|| write(cx))).unwrap_or_else(|_| {
                Err(Error::Backend {
                    message: "the SQLite writer panicked while carrying out a write".to_owned(),
                    source: None,
                })
            }),
            None => Err(Error::Backend {
                message: "a write was run twice".to_owned(),
                source: None,
            }),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn error(&self) -> Option<&Error> {
        self.result
            .as_ref()
            .and_then(|result| result.as_ref().err())
    }

    fn answer(self: Box<Self>, failure: Option<&Error>) {
        let result = match failure {
            Some(failure) => Err(copy(failure)),
            None => self.result.unwrap_or_else(|| Err(closed())),
        };
        if self.reply.send(result).is_err() {
            tracing::debug!("a writer's caller stopped waiting; its write is done");
        }
    }
}

/// A message to the writer thread.
pub(crate) enum Command {
    Write(Box<dyn Job>),
    /// Finish what was queued before, close the connection, then acknowledge.
    Close(oneshot::Sender<()>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Write(_) => "Write",
            Command::Close(_) => "Close",
        })
    }
}

impl Command {
    /// A write and the receiver of its answer.
    pub(crate) fn write<T, F>(write: F) -> (Self, oneshot::Receiver<Result<T>>)
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteContext<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            write: Some(write),
            result: None,
            reply,
        };
        (Command::Write(Box::new(request)), answer)
    }
}

/// What the writer shares with the store.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Transactions committed.
    pub(crate) transactions: AtomicU64,
    /// Requests carried out in committed transactions.
    pub(crate) writes: AtomicU64,
    /// Why the database file is no longer the one opened, once it is not.
    gone: OnceLock<String>,
}

impl Shared {
    /// Why the store refuses writes, if it does.
    pub(crate) fn gone(&self) -> Option<&str> {
        self.gone.get().map(String::as_str)
    }

    /// Records that the file is gone; logged once.
    pub(crate) fn mark_gone(&self, reason: String) {
        if self.gone.set(reason).is_ok()
            && let Some(reason) = self.gone.get()
        {
            tracing::error!(reason = %reason, "the SQLite store lost its database file");
        }
    }
}

/// The longest the writer waits for more requests before it starts a group.
const MAX_LINGER: Duration = Duration::from_millis(2);

/// How often it looks while it waits.
const LINGER_STEP: Duration = Duration::from_micros(20);

/// The longest a checkpoint after a deletion waits for readers before it is left for
/// later: a read of the store lasts microseconds to milliseconds.
const PURGE_WAIT: Duration = Duration::from_millis(50);

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) limits: Limits,
    pub(crate) shared: Arc<Shared>,
    pub(crate) watch: FileWatch,
    pub(crate) max_group: usize,
    pub(crate) busy_timeout: Duration,
    /// A deletion was committed and the log still holds what it deleted.
    pub(crate) purge_pending: bool,
    /// The log was emptied after the file was found gone.
    pub(crate) log_released: bool,
    /// How many requests the previous group had.
    pub(crate) last_group: usize,
    /// How long the previous `COMMIT` took.
    pub(crate) last_commit: Duration,
}

impl Writer {
    /// The thread's loop; returns when the store is closed or dropped.
    pub(crate) fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut received = Vec::with_capacity(self.max_group);
        let mut close = None;
        while close.is_none() {
            let Some(first) = commands.blocking_recv() else {
                break; // every sender is gone: the store was dropped
            };
            received.push(first);
            self.gather(&mut commands, &mut received);
            let mut group = Vec::with_capacity(received.len());
            for command in received.drain(..) {
                match command {
                    Command::Write(job) if close.is_none() => group.push(job),
                    // Queued behind the close: refused like any later write.
                    Command::Write(job) => job.answer(Some(&closed())),
                    Command::Close(ack) => close = Some(ack),
                }
            }
            if !group.is_empty() {
                let _span =
                    tracing::debug_span!("sqlite_write_group", size = group.len()).entered();
                self.last_group = group.len();
                self.commit_group(group);
            }
            if self.purge_pending {
                // Left over from an earlier group that readers kept from truncating.
                self.purge(PURGE_WAIT.min(self.busy_timeout));
            }
        }
        commands.close();
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Write(job) => job.answer(Some(&closed())),
                Command::Close(ack) => {
                    let _ = ack.send(());
                }
            }
        }
        self.finish();
        if let Some(ack) = close {
            let _ = ack.send(());
        }
    }

    /// Takes what is queued behind the first request, up to the group size. When the
    /// previous group was larger (several callers are writing), lingers a little for
    /// them: a caller answered by the previous commit needs a moment to send its next
    /// request, and a commit that leaves it out costs it a whole commit more. The
    /// wait ends as soon as as many requests as last time are in, and lasts at most
    /// half the previous commit (the fsync it saves), never more than
    /// [`MAX_LINGER`]; a lone caller never waits.
    fn gather(&mut self, commands: &mut mpsc::Receiver<Command>, received: &mut Vec<Command>) {
        let take = |commands: &mut mpsc::Receiver<Command>, received: &mut Vec<Command>| {
            while received.len() < self.max_group {
                match commands.try_recv() {
                    Ok(command) => received.push(command),
                    Err(_) => break,
                }
            }
        };
        take(commands, received);
        let expected = self.last_group.min(self.max_group);
        if received.len() >= expected {
            return;
        }
        let deadline = Instant::now() + (self.last_commit / 2).min(MAX_LINGER);
        while received.len() < expected && Instant::now() < deadline {
            std::thread::sleep(LINGER_STEP);
            take(commands, received);
        }
    }

    fn exec(&self, context: &'static str, statement: &str) -> Result<()> {
        self.conn
            .prepare_cached(statement)
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(db(context))
    }

    /// Runs one group in one transaction and answers its requests after the commit.
    fn commit_group(&mut self, group: Vec<Box<dyn Job>>) {
        if let Some(reason) = self.shared.gone() {
            let failure = StoreError::FileGone(reason.to_owned()).into();
            self.release_log();
            return fail_all(group, &failure);
        }
        if let Err(failure) = self.exec("starting a write transaction", "BEGIN IMMEDIATE") {
            self.end_transaction();
            return self.fail(group, failure);
        }
        // A lone request needs no savepoint: its error rolls back the whole transaction.
        let savepoints = group.len() > 1;
        let mut done: Vec<Box<dyn Job>> = Vec::with_capacity(group.len());
        let mut succeeded = 0;
        let mut deleted = false;
        let mut pending = group.into_iter();
        let mut aborted = None;
        for mut job in pending.by_ref() {
            if savepoints && let Err(err) = self.exec("opening a savepoint", "SAVEPOINT request") {
                aborted = Some(err);
                done.push(job);
                break;
            }
            let mut cx = WriteContext {
                conn: &self.conn,
                clock: &*self.clock,
                limits: &self.limits,
                deleted: false,
            };
            let ok = job.run(&mut cx);
            let job_deleted = cx.deleted;
            if let Some(err) = job.error() {
                self.notice(err);
            }
            if savepoints {
                let end = if ok {
                    self.exec("ending a savepoint", "RELEASE request")
                } else {
                    self.exec("rolling back a savepoint", "ROLLBACK TO request")
                        .and_then(|()| self.exec("ending a savepoint", "RELEASE request"))
                };
                if let Err(err) = end {
                    // SQLite rolls back the whole transaction by itself after some
                    // failures (disk full, I/O): nothing of the group can be committed.
                    aborted = Some(err);
                    done.push(job);
                    break;
                }
            }
            if ok {
                succeeded += 1;
                deleted |= job_deleted;
            }
            done.push(job);
        }
        if let Some(failure) = aborted {
            self.end_transaction();
            done.extend(pending);
            return self.fail(done, failure);
        }
        if succeeded == 0 {
            // Nothing to keep: every request failed on its own.
            self.end_transaction();
            for job in done {
                job.answer(None);
            }
            return;
        }
        let committing = Instant::now();
        let committed = self.exec("committing", "COMMIT");
        self.last_commit = committing.elapsed();
        if let Err(failure) = committed {
            self.end_transaction();
            return self.fail(done, failure);
        }
        if let Err(reason) = self.watch.check() {
            self.shared.mark_gone(reason.clone());
            self.release_log();
            return fail_all(done, &StoreError::FileGone(reason).into());
        }
        self.shared.transactions.fetch_add(1, Ordering::Relaxed);
        self.shared.writes.fetch_add(succeeded, Ordering::Relaxed);
        if deleted {
            // Before answering: once a deletion is acknowledged, its text is gone from
            // the files too (unless readers hold the log; then it goes later).
            self.purge_pending = true;
            self.purge(PURGE_WAIT.min(self.busy_timeout));
        }
        for job in done {
            job.answer(None);
        }
    }

    /// Rolls back whatever transaction is open, so that the next group starts clean.
    fn end_transaction(&self) {
        if !self.conn.is_autocommit()
            && let Err(err) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %err, "rolling back a failed write group failed");
        }
    }

    /// Notes a failure that says the database file is gone.
    fn notice(&self, err: &Error) {
        let gone = std::error::Error::source(err)
            .and_then(|source| source.downcast_ref::<StoreError>())
            .is_some_and(StoreError::file_is_gone);
        if gone {
            self.shared.mark_gone(format!(
                "the SQLite database file was moved or deleted while the store had it open \
                 ({err}); the store refuses writes"
            ));
        }
    }

    fn fail(&self, jobs: Vec<Box<dyn Job>>, failure: Error) {
        self.notice(&failure);
        fail_all(jobs, &failure);
    }

    /// Checkpoints the write-ahead log into the database and truncates it, waiting at
    /// most `wait` for readers; sets `purge_pending` when it could not, clears it when
    /// it could.
    fn purge(&mut self, wait: Duration) {
        let result = self
            .conn
            .busy_timeout(wait)
            .and_then(|()| {
                self.conn
                    .query_row(sql::CHECKPOINT_TRUNCATE, [], |row| row.get::<_, i64>(0))
            })
            .map(|busy| busy == 0);
        if let Err(err) = self.conn.busy_timeout(self.busy_timeout) {
            tracing::warn!(error = %err, "restoring the writer's busy timeout failed");
        }
        self.purge_pending = !matches!(result, Ok(true));
        match result {
            Ok(true) => {}
            Ok(false) => tracing::debug!("readers held the write-ahead log; it is truncated later"),
            Err(err) => {
                tracing::debug!(error = %err, "truncating the write-ahead log is left for later")
            }
        }
    }

    /// Once the database file is gone from its path: moves the log into the file the
    /// store opened (wherever it is now) and empties the log, so that whatever file
    /// takes the path is not opened with this file's log, which SQLite would replay
    /// onto it. (SQLite leaves the log of a moved file in place when it closes.)
    fn release_log(&mut self) {
        if self.log_released {
            return;
        }
        self.log_released = true;
        self.purge(self.busy_timeout);
        if self.purge_pending {
            tracing::error!(
                "the write-ahead log of the lost SQLite database file could not be emptied;                  remove the -wal file beside the path before opening another database there"
            );
        }
    }

    /// Closes the connection: the last connection to close checkpoints the log into
    /// the database and removes it.
    fn finish(mut self) {
        if self.shared.gone().is_some() {
            self.release_log();
        } else if self.purge_pending {
            self.purge(self.busy_timeout);
            if self.purge_pending {
                tracing::warn!(
                    "the write-ahead log still holds deleted rows: another connection kept it \
                     from being truncated"
                );
            }
        }
        if let Err((_, err)) = self.conn.close() {
            tracing::warn!(error = %err, "closing the SQLite writer connection failed");
        }
    }
}

/// Answers every request with a copy of `failure`.
fn fail_all(jobs: Vec<Box<dyn Job>>, failure: &Error) {
    tracing::warn!(error = %failure, "a write group failed");
    for job in jobs {
        job.answer(Some(failure));
    }
}
