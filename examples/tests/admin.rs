//! The `conversations` admin command and the server's retention task, run as real
//! processes on real SQLite files: export and import round trips, a bad line, the
//! same import twice, purge with mixed ages, a backup while the server serves, the
//! errors and exit codes, and the memory an HTTP export of 10k conversations takes.
//!
//! Old data is made by importing JSON Lines with old timestamps: the processes read
//! the system clock, and an import keeps the timestamps it is given.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // a panic is how a test fails

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

/// Runs the admin command on the SQLite file `db` with `args`; its output.
fn admin(db: &Path, args: &[&str]) -> Output {
    admin_command(db, args).output().unwrap()
}

fn admin_command(db: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_conversations"));
    command
        .args(args)
        .env("DATABASE_URL", db)
        .env_remove("DATABASE_SCHEMA")
        .env("RUST_LOG", "off")
        .stdin(Stdio::null());
    command
}

/// Runs the admin command and parses its `--json` stdout.
fn admin_json(db: &Path, args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let output = admin(db, &all);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stdout is not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap(), value)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One conversation of a generated export.
#[derive(Clone)]
struct Generated {
    id: Uuid,
    title: String,
    updated: DateTime<Utc>,
    pinned: bool,
    archived_at: Option<DateTime<Utc>>,
    /// Messages, linear but for one regenerated answer (a branch) when 4 or more.
    messages: usize,
    content: String,
}

impl Generated {
    fn new(title: &str, age_days: i64, messages: usize) -> Self {
        Self {
            id: Uuid::now_v7(),
            title: title.to_owned(),
            updated: Utc::now() - TimeDelta::days(age_days),
            pinned: false,
            archived_at: None,
            messages,
            content: String::new(),
        }
    }

    fn pinned(mut self) -> Self {
        self.pinned = true;
        self
    }

    fn archived_days_ago(mut self, days: i64) -> Self {
        self.archived_at = Some(Utc::now() - TimeDelta::days(days));
        self
    }

    fn content(mut self, content: String) -> Self {
        self.content = content;
        self
    }

    /// Its lines: the conversation, then its messages by seq (the last one a second
    /// answer to the first question when there are 4 or more: a branch).
    fn lines(&self) -> Vec<String> {
        let millis = |at: DateTime<Utc>| at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let created = self.updated - TimeDelta::hours(1);
        let ids: Vec<Uuid> = (0..self.messages).map(|_| Uuid::now_v7()).collect();
        let branch = self.messages >= 4;
        let mut messages = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let (parent, role) = if branch && i == self.messages - 1 {
                (Some(ids[0]), "assistant")
            } else {
                (
                    i.checked_sub(1).map(|p| ids[p]),
                    if i % 2 == 0 { "user" } else { "assistant" },
                )
            };
            messages.push(json!({
                "type": "message",
                "id": id,
                "parentId": parent,
                "seq": i + 1,
                "role": role,
                "content": format!("{} message {} of {}{}", self.title, i + 1, self.messages, self.content),
                "metadata": {},
                "createdAt": millis(created + TimeDelta::seconds(i as i64)),
            }));
        }
        let conversation = json!({
            "type": "conversation",
            "id": self.id,
            "title": self.title,
            "titleSource": "user",
            "createdAt": millis(created),
            "updatedAt": millis(self.updated),
            "messageCount": self.messages,
            "lastSeq": self.messages,
            "headId": ids.last(),
            "pinned": self.pinned,
            "archived": self.archived_at.is_some(),
            "archivedAt": self.archived_at.map(millis),
            "metadata": {"tag": "generated"},
            "version": 1,
        });
        std::iter::once(conversation)
            .chain(messages)
            .map(|v| v.to_string())
            .collect()
    }
}

fn header(scope: &str) -> String {
    json!({"type": "header", "format": "conversation-export", "version": 1, "scope": scope})
        .to_string()
}

/// Writes an export of `conversations` to `path`.
fn write_export(path: &Path, scope: &str, conversations: &[Generated]) {
    let mut text = header(scope);
    text.push('\n');
    for conversation in conversations {
        for line in conversation.lines() {
            text.push_str(&line);
            text.push('\n');
        }
    }
    std::fs::write(path, text).unwrap();
}

fn import(db: &Path, scope: &str, file: &Path) -> (i32, Value) {
    admin_json(db, &["import", "--scope", scope, file.to_str().unwrap()])
}

fn listed_titles(db: &Path, scope: &str) -> Vec<String> {
    let (code, list) = admin_json(
        db,
        &[
            "list",
            "--scope",
            scope,
            "--archived",
            "include",
            "--limit",
            "0",
        ],
    );
    assert_eq!(code, 0);
    let mut titles: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap().to_owned())
        .collect();
    titles.sort();
    titles
}

#[test]
fn export_import_into_another_scope_and_export_again_round_trips_apart_from_the_scope() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.db");
    let second = dir.path().join("second.db");
    let generated: Vec<Generated> = (0..5)
        .map(|i| Generated::new(&format!("chat {i}"), i, 2 + i as usize * 2))
        .map(|g| if g.messages == 6 { g.pinned() } else { g })
        .map(|g| {
            if g.messages == 8 {
                g.archived_days_ago(1)
            } else {
                g
            }
        })
        .collect();
    let source = dir.path().join("generated.jsonl");
    write_export(&source, "elsewhere", &generated);
    let (code, report) = import(&first, "analytics-db", &source);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["imported"].as_array().unwrap().len(), 5);

    let a = dir.path().join("a.jsonl");
    let exported = admin(
        &first,
        &[
            "export",
            "--scope",
            "analytics-db",
            "--output",
            a.to_str().unwrap(),
        ],
    );
    assert!(exported.status.success(), "{}", stderr(&exported));
    assert!(
        stdout(&exported).contains("exported 5 conversations, 30 messages"),
        "{}",
        stdout(&exported)
    );
    let a_text = std::fs::read_to_string(&a).unwrap();

    // Into another scope of another file: ids kept, bytes identical but the header.
    let (code, report) = import(&second, "billing", &a);
    assert_eq!(code, 0, "{report}");
    let b = admin(&second, &["export", "--scope", "billing"]);
    assert!(b.status.success(), "{}", stderr(&b));
    assert!(
        stderr(&b).contains("exported 5 conversations"),
        "the summary goes to stderr when stdout is the data: {}",
        stderr(&b)
    );
    let b_text = stdout(&b);
    let expected = a_text.replacen(r#""scope":"analytics-db""#, r#""scope":"billing""#, 1);
    assert_eq!(b_text.lines().count(), 1 + 5 + 30);
    assert!(
        b_text == expected,
        "the second export differs from the first"
    );

    // Into another scope of the same file: the ids are the first scope's, so each
    // conversation gets a new one, and the report says so.
    let (code, report) = import(&first, "billing", &a);
    assert_eq!(code, 0, "{report}");
    let imported = report["imported"].as_array().unwrap();
    assert_eq!(imported.len(), 5);
    assert!(
        imported.iter().all(|i| i["renamedFrom"].is_string()),
        "{report}"
    );
    assert_eq!(
        listed_titles(&first, "billing"),
        listed_titles(&first, "analytics-db")
    );

    // One conversation, with every branch: 8 messages, two answers to the first question.
    let one = generated.iter().find(|g| g.messages == 8).unwrap();
    let single = admin(
        &second,
        &[
            "export",
            "--scope",
            "billing",
            "--conversation",
            &one.id.to_string(),
        ],
    );
    assert!(single.status.success(), "{}", stderr(&single));
    assert_eq!(stdout(&single).lines().count(), 1 + 1 + 8);
    let show = admin(
        &second,
        &["show", "--scope", "billing", &one.id.to_string()],
    );
    assert!(show.status.success(), "{}", stderr(&show));
    let text = stdout(&show);
    assert!(
        text.contains("chat 3") && text.contains("archived  since"),
        "{text}"
    );
    assert!(text.contains("8 (2 on the active branch)"), "{text}");
}

#[test]
fn an_import_with_a_bad_line_in_the_middle_refuses_that_conversation_names_the_line_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let conversations: Vec<Generated> = (0..3)
        .map(|i| Generated::new(&format!("chat {i}"), 0, 3))
        .collect();
    let mut lines = vec![header("s")];
    for c in &conversations {
        lines.extend(c.lines());
    }
    // Line 7 is the second conversation's second message (1 header + 4 lines each).
    lines[6] = r#"{"type":"message","id": oops"#.to_owned();
    let file = dir.path().join("bad.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let output = admin(&db, &["import", "--scope", "s", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("2 imported") && text.contains("1 refused"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "refused line 7 (conversation {}): invalid_json",
            conversations[1].id
        )),
        "{text}"
    );
    assert_eq!(listed_titles(&db, "s"), ["chat 0", "chat 2"]);

    let (code, report) = import(&db, "s", &file);
    assert_eq!(code, 3);
    assert_eq!(report["refused"][0]["line"], 7);
    assert_eq!(report["refused"][0]["code"], "invalid_json");
}

#[test]
fn the_same_import_twice_stores_nothing_the_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let file = dir.path().join("e.jsonl");
    write_export(
        &file,
        "s",
        &(0..4)
            .map(|i| Generated::new(&format!("chat {i}"), 0, 5))
            .collect::<Vec<_>>(),
    );
    let (code, first) = import(&db, "s", &file);
    assert_eq!(code, 0);
    assert_eq!(first["imported"].as_array().unwrap().len(), 4);
    let (_, before) = admin_json(&db, &["stats", "--scope", "s"]);

    let second = admin(&db, &["import", "--scope", "s", file.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        stdout(&second).contains("0 imported (0 messages), 4 skipped (already there), 0 refused"),
        "{}",
        stdout(&second)
    );
    let (_, after) = admin_json(&db, &["stats", "--scope", "s"]);
    assert_eq!(after, before);
    assert_eq!(after["store"]["conversations"], 4);
    assert_eq!(after["store"]["messages"], 20);
}

#[test]
fn purge_dry_run_lists_and_deletes_nothing_then_purge_deletes_by_age_but_never_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let file = dir.path().join("e.jsonl");
    let old = Generated::new("old", 400, 2);
    let old_pinned = Generated::new("old but pinned", 400, 2).pinned();
    let recent = Generated::new("recent", 1, 2);
    let archived = Generated::new("archived long ago", 50, 2).archived_days_ago(45);
    write_export(
        &file,
        "s",
        &[old.clone(), old_pinned, recent, archived.clone()],
    );
    assert_eq!(import(&db, "s", &file).0, 0);
    let other = dir.path().join("o.jsonl");
    let elsewhere = Generated::new("old in another scope", 400, 2);
    write_export(&other, "t", std::slice::from_ref(&elsewhere));
    assert_eq!(import(&db, "t", &other).0, 0);

    let dry = admin(
        &db,
        &[
            "purge",
            "--scope",
            "s",
            "--inactive-days",
            "100",
            "--dry-run",
        ],
    );
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    let text = stdout(&dry);
    assert!(text.contains(&format!("would delete {}", old.id)), "{text}");
    assert!(
        text.contains("dry run: would delete 1 conversation"),
        "{text}"
    );
    assert_eq!(
        listed_titles(&db, "s").len(),
        4,
        "a dry run deletes nothing"
    );

    let (code, purged) = admin_json(
        &db,
        &["purge", "--inactive-days", "100", "--archived-days", "30"],
    );
    assert_eq!(code, 0);
    assert_eq!(purged["dryRun"], false);
    let mut gone: Vec<&str> = purged["expired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    gone.sort_unstable();
    let mut expected = vec![
        old.id.to_string(),
        archived.id.to_string(),
        elsewhere.id.to_string(),
    ];
    expected.sort();
    assert_eq!(gone, expected, "every scope, by inactivity or archive age");
    assert_eq!(listed_titles(&db, "s"), ["old but pinned", "recent"]);
    assert!(listed_titles(&db, "t").is_empty());
    let shown = admin(&db, &["show", "--scope", "s", &old.id.to_string()]);
    assert_eq!(shown.status.code(), Some(4), "{}", stderr(&shown));

    let (_, with_pinned) = admin_json(
        &db,
        &[
            "purge",
            "--inactive-days",
            "30",
            "--include-pinned",
            "--dry-run",
        ],
    );
    assert_eq!(with_pinned["count"], 1, "{with_pinned}");
    assert_eq!(with_pinned["expired"][0]["pinned"], true);
}

/// A running server binary on `db`, killed when dropped.
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(db: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
            .args(["--port", "0"])
            .args(args)
            .env("DATABASE_URL", db)
            .env("OFFLINE_ECHO_DELAY_MS", "0")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("BIND")
            .env_remove("ALLOWED_HOSTS")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines, received) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        // Read the log as it comes, so that a full pipe never stalls the server.
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let collected = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = collected.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let line = received.recv_timeout(Duration::from_secs(60)).unwrap();
        let url = line.strip_prefix("listening on ").unwrap().to_owned();
        Self { child, url, log }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v1/connections{path}", self.url)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit status and stderr.
    fn terminate(mut self) -> (bool, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        let success = self.child.wait().unwrap().success();
        // The reader thread sees the end of the pipe soon after the exit.
        std::thread::sleep(Duration::from_millis(200));
        let text = self.log.lock().unwrap().clone();
        (success, text)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

#[test]
fn a_backup_taken_while_the_server_writes_opens_and_holds_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let file = dir.path().join("e.jsonl");
    write_export(
        &file,
        "s",
        &(0..50)
            .map(|i| Generated::new(&format!("chat {i}"), 0, 4))
            .collect::<Vec<_>>(),
    );
    assert_eq!(import(&db, "s", &file).0, 0);
    let server = Server::start(&db, &[]);
    let http = client();
    let url = server.api("/s/conversations");
    // Writes go on through the server while the copy is taken.
    let writer = std::thread::spawn(move || {
        let http = client();
        for i in 0..40 {
            let response = http
                .post(&url)
                .json(&json!({"title": format!("live {i}")}))
                .send()
                .unwrap();
            assert_eq!(response.status(), 201);
        }
    });
    let copy = dir.path().join("copy.db");
    let backup = admin(&db, &["backup", copy.to_str().unwrap()]);
    assert_eq!(backup.status.code(), Some(0), "{}", stderr(&backup));
    assert!(stdout(&backup).contains("restore by starting the server with --database-url"));
    writer.join().unwrap();

    let again = admin(&db, &["backup", copy.to_str().unwrap()]);
    assert_eq!(
        again.status.code(),
        Some(6),
        "an existing target: {}",
        stderr(&again)
    );
    assert!(
        stderr(&again).contains("exists already"),
        "{}",
        stderr(&again)
    );

    // The copy holds the 50 imported conversations and however many live ones were
    // committed when it started, each whole.
    let titles = listed_titles(&copy, "s");
    let imported = titles.iter().filter(|t| t.starts_with("chat ")).count();
    assert_eq!(imported, 50, "{titles:?}");
    let (_, stats) = admin_json(&copy, &["stats"]);
    assert_eq!(stats["store"]["messages"], 200);
    // Restore = start on the copy.
    let restored = Server::start(&copy, &[]);
    let page: Value = http
        .get(restored.api("/s/conversations?limit=200"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), titles.len());
    assert!(restored.terminate().0);
    let listed: Value = http
        .get(server.api("/s/conversations?limit=200"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 90);
    assert!(server.terminate().0);
}

#[test]
fn bad_arguments_unknown_scopes_and_unreadable_files_get_clear_errors_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let missing = dir.path().join("nowhere.db");
    let file = dir.path().join("e.jsonl");
    let one = Generated::new("only", 0, 2);
    write_export(&file, "s", std::slice::from_ref(&one));
    assert_eq!(import(&db, "s", &file).0, 0);
    let garbage = dir.path().join("garbage.jsonl");
    std::fs::write(&garbage, "this is not an export\n").unwrap();
    let not_chatgpt = dir.path().join("conversations.json");
    std::fs::write(&not_chatgpt, r#"{"not": "an array"}"#).unwrap();
    let unreadable = dir.path().join("unreadable.jsonl");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let no_such_dir = dir.path().join("no/such/dir/out.jsonl");

    let cases: Vec<(Vec<String>, &Path, i32, &str)> = vec![
        (vec!["frobnicate".into()], &db, 2, "unrecognized subcommand"),
        (vec!["list".into()], &db, 2, "--scope"),
        (
            vec!["list".into(), "--scope".into(), "".into()],
            &db,
            2,
            "scope: must not be empty",
        ),
        (
            vec!["list".into(), "--scope".into(), "a\u{7}b".into()],
            &db,
            2,
            "control character",
        ),
        (
            vec![
                "show".into(),
                "--scope".into(),
                "s".into(),
                "not-a-uuid".into(),
            ],
            &db,
            2,
            "not-a-uuid",
        ),
        (
            vec![
                "show".into(),
                "--scope".into(),
                "s".into(),
                Uuid::now_v7().to_string(),
            ],
            &db,
            4,
            "no conversation",
        ),
        (
            vec![
                "show".into(),
                "--scope".into(),
                "other".into(),
                one.id.to_string(),
            ],
            &db,
            4,
            "in scope \"other\"",
        ),
        (
            vec!["export".into(), "--scope".into(), "nosuch".into()],
            &db,
            4,
            "scope \"nosuch\" holds no conversations",
        ),
        (
            vec![
                "export".into(),
                "--scope".into(),
                "s".into(),
                "--output".into(),
                no_such_dir.display().to_string(),
            ],
            &db,
            6,
            "cannot write",
        ),
        (
            vec!["list".into(), "--scope".into(), "s".into()],
            &missing,
            4,
            "no database at",
        ),
        (
            vec![
                "import".into(),
                "--scope".into(),
                "s".into(),
                unreadable.display().to_string(),
            ],
            &db,
            6,
            "cannot read",
        ),
        (
            vec![
                "import".into(),
                "--scope".into(),
                "s".into(),
                garbage.display().to_string(),
            ],
            &db,
            5,
            "nothing of",
        ),
        (
            vec![
                "import".into(),
                "--scope".into(),
                "s".into(),
                empty.display().to_string(),
            ],
            &db,
            5,
            "holds nothing to import",
        ),
        (
            vec![
                "import".into(),
                "--scope".into(),
                "s".into(),
                "--chatgpt".into(),
                not_chatgpt.display().to_string(),
            ],
            &db,
            5,
            "is not a ChatGPT conversations.json",
        ),
        (
            vec!["purge".into(), "--dry-run".into()],
            &db,
            2,
            "--inactive-days",
        ),
        (
            vec!["purge".into(), "--inactive-days".into(), "0".into()],
            &db,
            2,
            "0 is not in 1..",
        ),
        (
            vec!["stats".into(), "--database-url".into(), "memory".into()],
            &db,
            8,
            "memory",
        ),
    ];
    for (args, database, code, says) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = admin(database, &args);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(*code), "{args:?}: {text}");
        assert!(
            text.contains(says),
            "{args:?}: {text:?} does not say {says:?}"
        );
    }
    assert!(!missing.exists(), "a mistyped path is not created");
    assert!(!no_such_dir.exists());
    assert_eq!(listed_titles(&db, "s"), ["only"], "nothing changed");
    let help = admin(&db, &["--help"]);
    assert!(stdout(&help).contains("3  import: some conversations stored"));
}

#[test]
fn the_servers_retention_task_deletes_an_old_conversation_soon_after_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let file = dir.path().join("e.jsonl");
    let old = Generated::new("stale", 3, 2);
    let old_pinned = Generated::new("stale but pinned", 3, 2).pinned();
    let fresh = Generated::new("fresh", 0, 2);
    write_export(
        &file,
        "s",
        &[old.clone(), old_pinned.clone(), fresh.clone()],
    );
    assert_eq!(import(&db, "s", &file).0, 0);

    let server = Server::start(&db, &["--retention-inactive-days", "1"]);
    let http = client();
    let status = |id: Uuid| {
        http.get(server.api(&format!("/s/conversations/{id}")))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(old.id) != 404 {
        assert!(
            Instant::now() < deadline,
            "the old conversation is still there"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status(old_pinned.id), 200, "pinned ones never expire");
    assert_eq!(status(fresh.id), 200);
    let (stopped, log) = server.terminate();
    assert!(stopped, "{log}");
    assert!(log.contains("retention on"), "{log}");
    assert!(
        log.contains("retention pass") && log.contains("deleted=1"),
        "{log}"
    );
}

/// The peak resident memory (`VmHWM`) of `pid`, in MiB.
fn peak_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .map(|kib| kib.trim().parse::<u64>().unwrap() / 1024)
        .unwrap()
}

/// Most the server's peak memory (`VmHWM`) may grow while it streams an export of
/// 10k conversations (about 165 MiB of JSON Lines): measured +4 MiB; an export held
/// whole would grow it by more than its size.
const EXPORT_BOUND_MIB: u64 = 48;

#[test]
fn an_http_export_of_10k_conversations_keeps_the_servers_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    let server = Server::start(&db, &[]);
    // Loaded through the server by 8 imports at once, whose transactions the SQLite
    // writer commits together: one import at a time waits for a sync per conversation.
    let padding = format!(" {}", "x".repeat(8 * 1024));
    let started = Instant::now();
    let loaders: Vec<_> = (0..8)
        .map(|part| {
            let padding = padding.clone();
            let url = server.api("/big/import");
            std::thread::spawn(move || {
                let mut body = header("big");
                body.push('\n');
                for i in 0..10_000 / 8 {
                    for line in Generated::new(&format!("chat {part}-{i}"), 0, 2)
                        .content(padding.clone())
                        .lines()
                    {
                        let _ = writeln!(body, "{line}");
                    }
                }
                let report: Value = client()
                    .post(url)
                    .header("Content-Type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .unwrap()
                    .error_for_status()
                    .unwrap()
                    .json()
                    .unwrap();
                assert_eq!(report["imported"].as_array().unwrap().len(), 10_000 / 8);
            })
        })
        .collect();
    for loader in loaders {
        loader.join().unwrap();
    }
    eprintln!("imported 10k conversations in {:?}", started.elapsed());

    std::fs::write(format!("/proc/{}/clear_refs", server.pid()), "5").unwrap();
    let before = peak_mib(server.pid());
    let mut response = client().get(server.api("/big/export")).send().unwrap();
    assert_eq!(response.status(), 200);
    let mut counter = CountingSink::default();
    response.copy_to(&mut counter).unwrap();
    let grew = peak_mib(server.pid()).saturating_sub(before);
    eprintln!(
        "HTTP export: {} MiB, {} lines; the server's peak grew by {grew} MiB from {before} MiB",
        counter.bytes / (1024 * 1024),
        counter.lines
    );
    assert_eq!(counter.lines, 1 + 10_000 * 3);
    assert!(counter.bytes > 10_000 * 2 * 8 * 1024, "{}", counter.bytes);
    assert!(
        grew <= EXPORT_BOUND_MIB,
        "the server's peak grew by {grew} MiB exporting {} MiB: more than {EXPORT_BOUND_MIB} MiB",
        counter.bytes / (1024 * 1024)
    );
    assert!(server.terminate().0);
}

#[derive(Default)]
struct CountingSink {
    bytes: u64,
    lines: u64,
}

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        self.lines += buf.iter().filter(|b| **b == b'\n').count() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
