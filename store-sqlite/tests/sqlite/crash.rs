//! `kill -9` in the middle of appends loses no acknowledged message and leaves a
//! sound database.
//!
//! The parent test re-executes this test binary (`std::env::current_exe()`) with
//! `CRASH_CHILD_DB=<path>`, running only `crash::child_process`. With the variable set,
//! that test opens the store and appends from several tasks, printing one line per
//! acknowledged message; without it, it returns at once. The parent kills the child
//! at a random moment after its first acknowledgement, then checks the file.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use conversation_core::{Append, MessageId, NewConversation, NewMessage, Scope, Store};
use conversation_store_sqlite::SqliteStore;

use super::fresh_path;

const CHILD_ENV: &str = "CRASH_CHILD_DB";
const ROUNDS: usize = 4;

fn emit(line: &str) {
    let mut stdout = std::io::stdout().lock();
    // The parent kills us at any moment: a failed write just ends the line.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// The child: appends until killed (or for 20 s at most). Does nothing unless
/// `CRASH_CHILD_DB` is set.
#[test]
fn child_process() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    emit(""); // end the line libtest started with the test's name
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = Arc::new(SqliteStore::open(&path).await.unwrap());
        let scope = Scope::new("crash").unwrap();
        let shared = store
            .create_conversation(&scope, NewConversation::new())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut tasks = Vec::new();
        for task in 0..4 {
            let store = Arc::clone(&store);
            let scope = scope.clone();
            tasks.push(tokio::spawn(async move {
                let own = store
                    .create_conversation(&scope, NewConversation::new())
                    .await
                    .unwrap();
                let mut round = 0usize;
                while Instant::now() < deadline {
                    round += 1;
                    let target = if round.is_multiple_of(2) {
                        own.id
                    } else {
                        shared.id
                    };
                    let batch: Vec<NewMessage> = (0..1 + (round + task) % 3)
                        .map(|k| {
                            NewMessage::user(format!("task {task} round {round} #{k}"))
                                .with_id(MessageId::new())
                        })
                        .collect();
                    let appended = store
                        .append_messages(&scope, target, Append::new(batch))
                        .await
                        .unwrap();
                    for message in appended.messages {
                        emit(&format!(
                            "ack {} {} {}",
                            message.conversation_id, message.id, message.seq
                        ));
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// One acknowledged message: conversation id, message id, seq.
type Ack = (uuid::Uuid, uuid::Uuid, i64);

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ack ")?.split(' ');
    let conversation = uuid::Uuid::parse_str(parts.next()?).ok()?;
    let message = uuid::Uuid::parse_str(parts.next()?).ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some((conversation, message, seq))
}

/// Runs the child once, kills it with SIGKILL at a random moment after its first
/// acknowledgement, and returns what it acknowledged.
fn run_and_kill(path: &std::path::Path) -> Vec<Ack> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash::child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (first_ack, first_ack_seen) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        // A line cut by the kill is not an acknowledgement: `lines` yields it
        // without its newline only at EOF, and `parse_ack` refuses a short one.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(ack) = parse_ack(&line) {
                if acks.is_empty() {
                    let _ = first_ack.send(());
                }
                acks.push(ack);
            }
        }
        acks
    });
    first_ack_seen
        .recv_timeout(Duration::from_secs(60))
        .expect("the child acknowledged an append");
    let delay = 20 + RandomState::new().hash_one(Instant::now()) % 400;
    std::thread::sleep(Duration::from_millis(delay));
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    reader.join().unwrap()
}

/// Checks the file with SQLite itself (not through the store).
fn check_file(path: &std::path::Path, acknowledged: &[Ack]) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let mut find = conn
        .prepare("SELECT seq FROM messages WHERE conversation_id = ?1 AND id = ?2")
        .unwrap();
    for (conversation, message, seq) in acknowledged {
        let stored: i64 = find
            .query_row(
                rusqlite::params![&conversation.as_bytes()[..], &message.as_bytes()[..]],
                |row| row.get(0),
            )
            .unwrap_or_else(|e| panic!("acknowledged {message} of {conversation} is lost: {e}"));
        assert_eq!(stored, *seq, "{message} moved");
    }
    let mut counts = conn
        .prepare(
            "SELECT c.message_count, c.last_seq, c.head_seq, c.path_len, \
             (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id), \
             (SELECT coalesce(min(seq), 0) FROM messages m WHERE m.conversation_id = c.id), \
             (SELECT coalesce(max(seq), 0) FROM messages m WHERE m.conversation_id = c.id), \
             (SELECT count(*) FROM message_path p WHERE p.conversation_id = c.id), \
             (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id \
                 AND m.parent_seq <> m.seq - 1) \
             FROM conversations c",
        )
        .unwrap();
    let rows: Vec<[i64; 9]> = counts
        .query_map([], |row| {
            let mut values = [0; 9];
            for (i, value) in values.iter_mut().enumerate() {
                *value = row.get(i)?;
            }
            Ok(values)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for [
        message_count,
        last_seq,
        head_seq,
        path_len,
        count,
        min,
        max,
        path_rows,
        unchained,
    ] in rows
    {
        assert_eq!(count, message_count, "message_count matches the rows");
        assert_eq!(max, count, "no gap in seq");
        assert!(count == 0 || min == 1, "seqs start at 1");
        assert_eq!(
            (last_seq, head_seq),
            (max, max),
            "the head is the newest message"
        );
        assert_eq!(
            (path_len, path_rows),
            (count, count),
            "the path is every message"
        );
        assert_eq!(unchained, 0, "every message follows the one before it");
    }
}

#[test]
fn kill_9_loses_no_acknowledged_append() {
    let path = fresh_path();
    let mut acknowledged = Vec::new();
    for _ in 0..ROUNDS {
        let acks = run_and_kill(&path);
        assert!(!acks.is_empty());
        acknowledged.extend(acks);
        check_file(&path, &acknowledged);
    }
    // The store itself reopens the file and reads every acknowledged message.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&path).await.unwrap();
        let scope = Scope::new("crash").unwrap();
        let mut by_conversation: HashMap<uuid::Uuid, Vec<(uuid::Uuid, i64)>> = HashMap::new();
        for (conversation, message, seq) in &acknowledged {
            by_conversation
                .entry(*conversation)
                .or_default()
                .push((*message, *seq));
        }
        for (conversation, messages) in by_conversation {
            let id = conversation_core::ConversationId::from_uuid(conversation);
            let mut stored = Vec::new();
            loop {
                let after = stored
                    .last()
                    .map_or(0, |m: &conversation_core::Message| m.seq);
                let page = store
                    .list_messages(
                        &scope,
                        id,
                        &conversation_core::MessageQuery::after(after).limit(200),
                    )
                    .await
                    .unwrap();
                stored.extend(page.items);
                if !page.has_more {
                    break;
                }
            }
            for (message, seq) in messages {
                let found = stored
                    .iter()
                    .find(|m| *m.id.as_uuid() == message)
                    .unwrap_or_else(|| panic!("{message} is not read back"));
                assert_eq!(found.seq as i64, seq);
            }
        }
        store.close().await;
    });
}
