//! Promises 2 and 10 across processes: three processes (this test binary,
//! re-executed) append concurrently to the same two conversations through the store
//! API; one is killed with SIGKILL mid-run. Every acknowledged message is stored
//! exactly once, `seq` is gap-free, batches stay whole, and only unacknowledged
//! messages of the killed process can be missing. Then three processes branch,
//! switch, delete and fork in one conversation at once, and lose nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conversation_core::{
    Append, Appended, ConversationId, MessageId, NewConversation, NewMessage, Scope, Store,
};
use conversation_store_postgres::{
    PgConnectOptions, PgPoolOptions, PostgresOptions, PostgresStore,
};

use crate::support::{self, TestStore};
use crate::tree;

const CHILD: &str = "CONV_PG_CHILD";
const CHILD_URL: &str = "CONV_PG_CHILD_URL";
const CHILD_SCHEMA: &str = "CONV_PG_CHILD_SCHEMA";
const CHILD_SCOPE: &str = "CONV_PG_CHILD_SCOPE";
const CHILD_CONVERSATIONS: &str = "CONV_PG_CHILD_CONVERSATIONS";
/// How many batches the child appends; 0 means until it is killed.
const CHILD_BATCHES: &str = "CONV_PG_CHILD_BATCHES";

/// Batches of the children that run to the end.
const BATCHES: usize = 80;
/// The killed child is killed once it has acknowledged this many messages.
const KILL_AFTER_ACKS: usize = 40;

/// Messages in batch `b`: 1, 2, 3, 1, 2, 3…
fn batch_size(b: usize) -> usize {
    1 + b % 3
}

async fn append_retrying(
    store: &PostgresStore,
    scope: &Scope,
    id: ConversationId,
    batch: &[NewMessage],
) -> Appended {
    for _ in 0..100 {
        match store
            .append_messages(scope, id, Append::new(batch.to_vec()))
            .await
        {
            Ok(appended) => return appended,
            Err(err) if err.is_transient() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("append failed: {err}"),
        }
    }
    panic!("append still unavailable after 100 tries");
}

/// A variable the parent test set for a child process.
fn child_env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| {
        panic!("{key} is not set: this runs only as a child of a multi-process test")
    })
}

/// Runs `work` in a child process on a store of the parent's schema, in the parent's
/// scope.
fn in_child<T>(work: impl AsyncFnOnce(PostgresStore, Scope) -> T) -> T {
    let url = child_env(CHILD_URL);
    let schema = child_env(CHILD_SCHEMA);
    let scope = Scope::new(child_env(CHILD_SCOPE)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = PgConnectOptions::from_str(&url)
            .unwrap()
            .application_name(&schema);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        let store = PostgresStore::from_pool_with(pool, PostgresOptions::new().schema(schema))
            .await
            .unwrap();
        work(store, scope).await
    })
}

/// Starts this test binary again as child `child` running the ignored test `test`
/// on `conversations` of `store`'s schema, `count` times (batches or operations).
fn spawn_child(
    test: &str,
    child: usize,
    store: &TestStore,
    scope: &Scope,
    conversations: &[ConversationId],
    count: usize,
) -> Running {
    let ids: Vec<String> = conversations.iter().map(ToString::to_string).collect();
    let mut process = Command::new(std::env::current_exe().unwrap())
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, child.to_string())
        .env(CHILD_URL, support::url())
        .env(CHILD_SCHEMA, store.schema_name())
        .env(CHILD_SCOPE, scope.as_str())
        .env(CHILD_CONVERSATIONS, ids.join(","))
        .env(CHILD_BATCHES, count.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, out_reader) = collect_lines(process.stdout.take().unwrap());
    let (stderr, err_reader) = collect_lines(process.stderr.take().unwrap());
    Running {
        child: process,
        stdout,
        stderr,
        readers: vec![out_reader, err_reader],
    }
}

/// The child process: started by
/// `processes_appending_at_once_keep_seq_gap_free_and_lose_only_unacknowledged`,
/// never by a plain run (it is ignored). It appends batches with caller ids
/// alternately to the two conversations and prints `ACK <child> <conversation>
/// <batch> <message id> <seq>` for each message once the append is acknowledged.
#[test]
#[ignore = "the child process of the multi-process test, which starts it"]
fn child_appender() {
    let child: usize = child_env(CHILD).parse().unwrap();
    let conversations: Vec<ConversationId> = child_env(CHILD_CONVERSATIONS)
        .split(',')
        .map(|id| id.parse().unwrap())
        .collect();
    let batches: usize = child_env(CHILD_BATCHES).parse().unwrap();
    in_child(async |store, scope| {
        let mut stdout = std::io::stdout();
        for b in (0..).take_while(|b| batches == 0 || *b < batches) {
            let id = conversations[(b + child) % conversations.len()];
            let batch: Vec<NewMessage> = (0..batch_size(b))
                .map(|k| NewMessage::user(format!("p{child}-b{b}-{k}")).with_id(MessageId::new()))
                .collect();
            let appended = append_retrying(&store, &scope, id, &batch).await;
            let mut lines = String::new();
            for message in &appended.messages {
                lines.push_str(&format!(
                    "ACK {child} {id} {b} {} {}\n",
                    message.id, message.seq
                ));
            }
            // One write per batch: the parent sees a batch's acknowledgements whole.
            stdout.write_all(lines.as_bytes()).unwrap();
            stdout.flush().unwrap();
            if b % 7 == 3 {
                // As after a lost acknowledgement: the same batch again.
                let again = append_retrying(&store, &scope, id, &batch).await;
                assert_eq!(again.messages, appended.messages, "a retry wrote again");
            }
        }
    });
}

/// Collects a child's output lines as they come.
fn collect_lines(
    stream: impl Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (lines, reader)
}

struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    fn acks(&self) -> usize {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter(|l| parse_ack(l).is_some())
            .count()
    }

    fn finish(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        let status = self.child.wait().unwrap();
        for reader in self.readers {
            reader.join().unwrap();
        }
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = self.stderr.lock().unwrap().join("\n");
        (status, stdout, stderr)
    }
}

#[derive(Debug)]
struct Ack {
    child: usize,
    conversation: ConversationId,
    batch: usize,
    id: MessageId,
    seq: u64,
}

/// Reads an `ACK` line. The first may follow the harness's `test … ... ` on the same
/// line: the child runs with `--nocapture`.
fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.split_once("ACK ")?.1.split(' ');
    Some(Ack {
        child: parts.next()?.parse().ok()?,
        conversation: parts.next()?.parse().ok()?,
        batch: parts.next()?.parse().ok()?,
        id: parts.next()?.parse().ok()?,
        seq: parts.next()?.parse().ok()?,
    })
}

/// `p{child}-b{batch}-{k}` → (child, batch, k).
fn origin(content: &str) -> (usize, usize, usize) {
    let mut parts = content.split('-');
    let mut number = |prefix: &str| -> usize {
        parts
            .next()
            .and_then(|p| p.strip_prefix(prefix))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a child's message: {content:?}"))
    };
    (number("p"), number("b"), number(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_appending_at_once_keep_seq_gap_free_and_lose_only_unacknowledged() {
    let store = TestStore::new().await;
    let scope = Scope::new("multi-process").unwrap();
    let mut chats = Vec::new();
    for _ in 0..2 {
        chats.push(
            store
                .create_conversation(&scope, NewConversation::new())
                .await
                .unwrap()
                .id,
        );
    }
    let spawn = |child: usize, batches: usize| {
        let test = "multi_process::child_appender";
        spawn_child(test, child, &store, &scope, &chats, batches)
    };
    let mut victim = spawn(0, 0);
    let finishers = [spawn(1, BATCHES), spawn(2, BATCHES)];

    // Kill the endless child mid-run, while the others still append.
    let deadline = Instant::now() + Duration::from_secs(60);
    while victim.acks() < KILL_AFTER_ACKS {
        if let Some(status) = victim.child.try_wait().unwrap() {
            let (_, _, stderr) = victim.finish();
            panic!("the child to kill exited by itself ({status}):\n{stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "the child to kill never got going"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    victim.child.kill().unwrap(); // SIGKILL on Unix: no cleanup, no goodbye
    let (status, victim_out, _) = victim.finish();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL, not finished");

    let mut lines = victim_out;
    for running in finishers {
        let (status, out, stderr) = running.finish();
        assert!(status.success(), "a child failed ({status}):\n{stderr}");
        lines.extend(out);
    }
    let acks: Vec<Ack> = lines.iter().filter_map(|l| parse_ack(l)).collect();
    let expected_each: usize = (0..BATCHES).map(batch_size).sum();
    for child in [1, 2] {
        assert_eq!(
            acks.iter().filter(|a| a.child == child).count(),
            expected_each,
            "child {child} acknowledged every message it sent"
        );
    }
    let victim_last_batch = acks
        .iter()
        .filter(|a| a.child == 0)
        .map(|a| a.batch)
        .max()
        .unwrap();

    let acked: HashMap<MessageId, &Ack> = acks.iter().map(|a| (a.id, a)).collect();
    assert_eq!(acked.len(), acks.len(), "no id acknowledged twice");
    let mut unacknowledged = Vec::new();
    for chat in &chats {
        let conversation = store.get_conversation(&scope, *chat).await.unwrap();
        let stored = support::all_messages(&*store, &scope, *chat).await;
        let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=conversation.message_count).collect::<Vec<_>>(),
            "seq is gap-free and matches message_count"
        );
        let unique: HashSet<MessageId> = stored.iter().map(|m| m.id).collect();
        assert_eq!(unique.len(), stored.len(), "no message stored twice");

        // Every acknowledged message is there, at the seq acknowledged.
        let by_id: HashMap<MessageId, u64> = stored.iter().map(|m| (m.id, m.seq)).collect();
        for ack in acks.iter().filter(|a| a.conversation == *chat) {
            assert_eq!(by_id.get(&ack.id), Some(&ack.seq), "lost or moved: {ack:?}");
        }

        // Batches are whole and contiguous, and each child's batches are in order.
        let mut batches: BTreeMap<(usize, usize), Vec<(u64, usize)>> = BTreeMap::new();
        for message in &stored {
            let (child, batch, k) = origin(&message.content);
            batches
                .entry((child, batch))
                .or_default()
                .push((message.seq, k));
            if !acked.contains_key(&message.id) {
                unacknowledged.push((child, batch));
            }
        }
        for ((child, batch), members) in &batches {
            let ks: Vec<usize> = members.iter().map(|(_, k)| *k).collect();
            assert_eq!(
                ks,
                (0..batch_size(*batch)).collect::<Vec<_>>(),
                "batch {child}/{batch} whole, in order"
            );
            assert!(
                members.windows(2).all(|w| w[1].0 == w[0].0 + 1),
                "batch {child}/{batch} is contiguous: {members:?}"
            );
        }
        for child in 0..3 {
            let firsts: Vec<(u64, usize)> = batches
                .iter()
                .filter(|((c, _), _)| *c == child)
                .map(|((_, b), members)| (members[0].0, *b))
                .collect();
            assert!(
                firsts.windows(2).all(|w| w[0].0 < w[1].0),
                "child {child}'s batches in the order sent"
            );
        }
    }
    // Only the killed child's last batch, in flight when it died, may be stored
    // without an acknowledgement.
    unacknowledged.sort_unstable();
    unacknowledged.dedup();
    assert!(
        unacknowledged
            .iter()
            .all(|&(child, batch)| child == 0 && batch == victim_last_batch + 1),
        "stored but never acknowledged: {unacknowledged:?} (last acknowledged batch of the killed child: {victim_last_batch})"
    );

    // Nothing the killed process held is left locked.
    for chat in &chats {
        let appended = tokio::time::timeout(
            Duration::from_secs(10),
            store.append_messages(&scope, *chat, Append::one(NewMessage::user("after"))),
        )
        .await
        .expect("an append after the kill does not wait on a dead process's lock")
        .unwrap();
        assert_eq!(
            appended.messages[0].seq,
            appended.conversation.message_count
        );
    }
}

/// The child process of `processes_branching_and_deleting_at_once_lose_nothing`:
/// runs [`tree::tree_workload`] on one conversation and prints its journal, one
/// `APPENDED <id> <parent or ->`, `DELETED <id>` or `FORKED <id>` line each.
#[test]
#[ignore = "the child process of the multi-process tree test, which starts it"]
fn child_tree_writer() {
    let seed: u64 = child_env(CHILD).parse().unwrap();
    let id: ConversationId = child_env(CHILD_CONVERSATIONS).parse().unwrap();
    let ops: usize = child_env(CHILD_BATCHES).parse().unwrap();
    let journal =
        in_child(async |store, scope| tree::tree_workload(&store, &scope, id, seed, ops).await);
    let mut lines = String::new();
    for (message, parent) in &journal.appended {
        let parent = parent.map_or_else(|| "-".to_owned(), |p| p.to_string());
        lines.push_str(&format!("APPENDED {message} {parent}\n"));
    }
    for message in &journal.deleted {
        lines.push_str(&format!("DELETED {message}\n"));
    }
    for fork in &journal.forks {
        lines.push_str(&format!("FORKED {fork}\n"));
    }
    std::io::stdout().write_all(lines.as_bytes()).unwrap();
}

/// A child's journal read back from its output lines.
fn parse_journal(lines: &[String]) -> tree::Journal {
    let mut journal = tree::Journal::default();
    for line in lines {
        let Some((kind, rest)) = ["APPENDED ", "DELETED ", "FORKED "]
            .iter()
            .find_map(|kind| line.split_once(kind).map(|(_, rest)| (*kind, rest)))
        else {
            continue;
        };
        let mut parts = rest.split(' ');
        let first = parts.next().unwrap();
        match kind {
            "APPENDED " => {
                let parent = parts.next().unwrap();
                journal.appended.push((
                    first.parse().unwrap(),
                    (parent != "-").then(|| parent.parse().unwrap()),
                ));
            }
            "DELETED " => journal.deleted.push(first.parse().unwrap()),
            _ => journal.forks.push(first.parse().unwrap()),
        }
    }
    journal
}

/// Promise 10 across processes: three processes (this test binary, re-executed)
/// append, branch, switch, delete and fork in one conversation at once. No
/// acknowledged message is lost unless it or an ancestor was deleted, no message is
/// left without its parent, the head is a stored leaf, and every path, window and
/// sibling list reads right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_branching_and_deleting_at_once_lose_nothing() {
    let store = TestStore::new().await;
    let scope = Scope::new("multi-process-tree").unwrap();
    let chat = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    let seed: Vec<NewMessage> = ["q", "a", "q2", "a2"]
        .into_iter()
        .map(NewMessage::user)
        .collect();
    store
        .append_messages(&scope, chat.id, Append::new(seed))
        .await
        .unwrap();
    let initial = tree::check_tree(&*store, &scope, chat.id).await;
    let children: Vec<Running> = (1..=3)
        .map(|child| {
            let test = "multi_process::child_tree_writer";
            spawn_child(test, child, &store, &scope, &[chat.id], 60)
        })
        .collect();
    let mut journals = Vec::new();
    for running in children {
        let (status, out, stderr) = running.finish();
        assert!(status.success(), "a child failed ({status}):\n{stderr}");
        journals.push(parse_journal(&out));
    }
    let appended: usize = journals.iter().map(|j| j.appended.len()).sum();
    let deleted: usize = journals.iter().map(|j| j.deleted.len()).sum();
    assert!(
        appended > 60 && deleted > 3,
        "the children wrote little: {appended} appended, {deleted} deleted"
    );
    tree::check_workload(&*store, &scope, chat.id, &initial, &journals).await;
    store.assert_tree_columns(chat.id).await;
}

/// Promise 13 across instances: a run's status lives in the store. One instance (its
/// own pool, its own connections) starts a run; another sees it live, is refused a
/// second start, and asks it to stop; the runner learns of the request from its next
/// renewal, ends it, and the other instance reads the end and the usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_by_one_instance_is_seen_and_cancelled_by_another() {
    use conversation_core::{NewRun, RunOutcome, RunStatus, Usage};

    let runner = support::TestStore::new().await;
    let other = PostgresStore::connect_with(
        support::url(),
        PostgresOptions::new().schema(runner.schema_name()),
    )
    .await
    .unwrap();
    let scope = Scope::new("runs").unwrap();
    let chat = runner
        .create_conversation(&scope, conversation_core::NewConversation::new())
        .await
        .unwrap();
    let run = runner
        .start_run(&scope, chat.id, NewRun::new(Duration::from_secs(60)))
        .await
        .unwrap();

    let seen = other.get_run(&scope, chat.id, run.id).await.unwrap();
    assert_eq!(seen.status, RunStatus::Running);
    let conversation = other.get_conversation(&scope, chat.id).await.unwrap();
    assert_eq!(conversation.active_run_id, Some(run.id));
    let refused = other
        .start_run(&scope, chat.id, NewRun::new(Duration::from_secs(60)))
        .await;
    assert!(
        matches!(refused, Err(conversation_core::Error::RunInProgress { run_id }) if run_id == run.id),
        "{refused:?}"
    );

    let cancelled = other.cancel_run(&scope, chat.id, run.id).await.unwrap();
    assert!(cancelled.cancel_requested);
    let renewed = runner
        .renew_run(&scope, chat.id, run.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(renewed.cancel_requested, "the runner reads the request");
    let mut outcome = RunOutcome::new(RunStatus::Cancelled);
    outcome.usage = Usage {
        prompt_tokens: 10,
        completion_tokens: 2,
        total_tokens: 12,
    };
    runner
        .finish_run(&scope, chat.id, run.id, outcome)
        .await
        .unwrap();

    let ended = other.get_run(&scope, chat.id, run.id).await.unwrap();
    assert_eq!(ended.status, RunStatus::Cancelled);
    let conversation = other.get_conversation(&scope, chat.id).await.unwrap();
    assert_eq!(conversation.active_run_id, None);
    assert_eq!(conversation.usage.total_tokens, 12);
    assert_eq!(
        conversation.version, chat.version,
        "runs are no change of the row"
    );
    other.close().await;
}
