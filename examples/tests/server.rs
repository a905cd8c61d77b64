//! The example server binary, started for real: a smoke test of start, API and clean
//! stop on a fresh directory, and the end-to-end test of its page in headless
//! Chromium (Debian's `chromium`, driven by `e2e/sidebar.mjs` with playwright-core).
//!
//! The browser test needs `node`, `chromium` and `npm ci` in `examples/e2e`; without
//! them it says so and skips, unless `REQUIRE_BROWSER=1` (set by `.ci/run`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // a panic is how a test fails

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A running server binary, stopped with SIGTERM (or killed) when dropped.
struct Server {
    child: Option<Child>,
    url: String,
}

impl Server {
    /// Starts the binary in `dir` on a free port, with `env` added; waits for its
    /// "listening on" line.
    fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
        command
            .current_dir(dir)
            .args(["--port", "0"])
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("DATABASE_URL")
            .env_remove("BIND")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the server binary starts");
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let line = received
            .recv_timeout(Duration::from_secs(60))
            .expect("the server says where it listens");
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        Self {
            child: Some(child),
            url,
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v1/connections{path}", self.url)
    }

    /// Kills the process with SIGKILL, as a crash would.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Creates a conversation in `scope` through `server`; its id.
async fn create_conversation(http: &reqwest::Client, server: &Server, scope: &str) -> String {
    let created: Value = http
        .post(server.api(&format!("/{scope}/conversations")))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn starts_in_a_fresh_directory_serves_the_api_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("OFFLINE_ECHO_DELAY_MS", "0")]);
    let http = client();

    let spec: Value = http
        .get(format!("{}/openapi.json", server.url))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "{spec}"
    );
    assert!(spec["paths"]["/{scope}/conversations"].is_object());

    let page = http.get(&server.url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<script src=\"/app.js\">")
    );

    // A conversation and a streamed offline reply, stored.
    let id = create_conversation(&http, &server, "smoke").await;
    let stream = http
        .post(server.api(&format!("/smoke/conversations/{id}/reply")))
        .json(&json!({"content": "persist me"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(stream.contains("event: done"), "{stream}");
    assert!(
        stream.contains("offline echo"),
        "the offline reply is labelled: {stream}"
    );

    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    let db = dir.path().join("data/conversations.db");
    assert!(
        db.is_file(),
        "the default SQLite file is ./data/conversations.db"
    );
    assert!(
        !dir.path().join("data/conversations.db-wal").exists(),
        "a clean stop checkpoints the WAL"
    );

    // Nothing was lost: a new process on the same directory sees it all.
    let again = Server::start(dir.path(), &[]);
    let messages: Value = http
        .get(again.api(&format!("/smoke/conversations/{id}/messages")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let contents: Vec<&str> = messages["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents.len(), 2, "{messages}");
    assert_eq!(contents[0], "persist me");
    assert!(again.terminate().success());
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "not a database").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_server"))
        .current_dir(dir.path())
        .args(["--port", "0", "--database-url"])
        .arg(&path)
        .env_remove("OPENAI_API_KEY")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a SQLite database"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a database");
}

/// Why the browser test cannot run here, if it cannot.
fn browser_missing(e2e: &Path) -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node on PATH".to_owned());
    }
    if !e2e.join("node_modules/playwright-core").is_dir() {
        return Some(format!(
            "playwright-core is not installed (npm ci in {})",
            e2e.display()
        ));
    }
    None
}

#[test]
fn the_sidebar_page_works_in_a_real_browser() {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e");
    if let Some(reason) = browser_missing(&e2e) {
        assert!(
            std::env::var("REQUIRE_BROWSER").as_deref() != Ok("1"),
            "REQUIRE_BROWSER=1 but {reason}"
        );
        eprintln!("SKIPPED the browser test: {reason}; REQUIRE_BROWSER=1 makes this a failure");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Slow enough that switching away mid-reply is tested while it streams.
    let server = Server::start(dir.path(), &[("OFFLINE_ECHO_DELAY_MS", "60")]);
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-sidebar.png");
    let status = Command::new("node")
        .current_dir(&e2e)
        .arg("sidebar.mjs")
        .arg(&server.url)
        .arg(&screenshot)
        .status()
        .unwrap();
    assert!(status.success(), "the browser test failed: {status}");
    assert!(screenshot.is_file());
    eprintln!("screenshot of the final page: {}", screenshot.display());
    assert!(server.terminate().success());
}

/// The PostgreSQL server of the tests, or `None` after saying why it is skipped;
/// with `REQUIRE_POSTGRES=1` an unreachable server fails the test instead.
async fn postgres_url() -> Option<String> {
    let url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let probe = tokio::time::timeout(Duration::from_secs(5), sqlx::PgPool::connect(&url)).await;
    match probe {
        Ok(Ok(pool)) => {
            pool.close().await;
            Some(url)
        }
        failure => {
            let reason = match failure {
                Ok(Err(error)) => error.to_string(),
                _ => "no answer in 5 s".to_owned(),
            };
            assert!(
                std::env::var("REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "REQUIRE_POSTGRES=1 but PostgreSQL is not reachable: {reason}"
            );
            eprintln!("SKIPPED the multi-server test: PostgreSQL is not reachable ({reason})");
            None
        }
    }
}

/// What an appender saw acknowledged: (conversation, message id, seq).
type Acknowledged = Vec<(String, String, u64)>;

/// Appends batches of two messages with caller ids, alternating between the
/// conversations, through one server, until `rounds` are done or a request fails.
async fn append_through(
    http: reqwest::Client,
    base: String,
    chats: Vec<String>,
    writer: String,
    rounds: usize,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Acknowledged {
    let mut acknowledged = Vec::new();
    for round in 0..rounds {
        let chat = &chats[round % chats.len()];
        let batch: Vec<Value> = (0..2)
            .map(|k| {
                json!({
                    "id": uuid::Uuid::now_v7().to_string(),
                    "role": if k == 0 { "user" } else { "assistant" },
                    "content": format!("{writer} round {round} #{k}"),
                })
            })
            .collect();
        let sent = http
            .post(format!(
                "{base}/api/v1/connections/shared/conversations/{chat}/messages"
            ))
            .json(&batch)
            .send()
            .await;
        let Ok(response) = sent else { break };
        if response.status() != 201 {
            break;
        }
        let Ok(body) = response.json::<Value>().await else {
            break;
        };
        for message in body["messages"].as_array().unwrap() {
            acknowledged.push((
                chat.clone(),
                message["id"].as_str().unwrap().to_owned(),
                message["seq"].as_u64().unwrap(),
            ));
        }
        acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_server_processes_share_one_postgres_database() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let Some(url) = postgres_url().await else {
        return;
    };
    // The store-postgres tests drop leftover `conv_test_<secs>_…` schemas after an hour.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let schema = format!(
        "conv_test_{secs}_e2e{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("DATABASE_SCHEMA", schema.as_str()),
    ];
    let first = Server::start(dir.path(), &env);
    let second = Server::start(dir.path(), &env);
    let mut victim = Server::start(dir.path(), &env);
    let http = client();

    let mut chats = Vec::new();
    for _ in 0..2 {
        chats.push(create_conversation(&http, &first, "shared").await);
    }

    let progress = Arc::new(AtomicUsize::new(0));
    let victim_progress = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for (server, name) in [(&first, "first"), (&second, "second")] {
        for task in 0..3 {
            writers.push(tokio::spawn(append_through(
                http.clone(),
                server.url.clone(),
                chats.clone(),
                format!("{name}-{task}"),
                20,
                progress.clone(),
            )));
        }
    }
    let victim_writer = tokio::spawn(append_through(
        http.clone(),
        victim.url.clone(),
        chats.clone(),
        "victim".to_owned(),
        usize::MAX,
        victim_progress.clone(),
    ));
    // Kill the third process with SIGKILL while every writer is still appending.
    let deadline = Instant::now() + Duration::from_secs(60);
    while victim_progress.load(Ordering::SeqCst) < 10 {
        assert!(Instant::now() < deadline, "the victim never made progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    victim.kill9();
    let mut acknowledged: Acknowledged = victim_writer.await.unwrap();
    let from_victim = acknowledged.len();
    assert!(from_victim >= 20);
    for writer in writers {
        let mine = writer.await.unwrap();
        assert_eq!(mine.len(), 40, "the surviving servers kept answering");
        acknowledged.extend(mine);
    }
    assert!(progress.load(Ordering::SeqCst) == 120);

    // Read everything back through the second server.
    for chat in &chats {
        let mut stored: Vec<Value> = Vec::new();
        loop {
            let after = stored.last().map_or(0, |m| m["seq"].as_u64().unwrap());
            let page: Value = http
                .get(second.api(&format!(
                    "/shared/conversations/{chat}/messages?after={after}&limit=200"
                )))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            stored.extend(page["items"].as_array().unwrap().iter().cloned());
            if !page["hasMore"].as_bool().unwrap() {
                break;
            }
        }
        let seqs: Vec<u64> = stored.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=stored.len() as u64).collect::<Vec<_>>(),
            "gap-free seq"
        );
        let by_id: std::collections::HashMap<&str, u64> = stored
            .iter()
            .map(|m| (m["id"].as_str().unwrap(), m["seq"].as_u64().unwrap()))
            .collect();
        assert_eq!(by_id.len(), stored.len(), "no message stored twice");
        let mine: Vec<_> = acknowledged.iter().filter(|(c, _, _)| c == chat).collect();
        for (_, id, seq) in &mine {
            assert_eq!(
                by_id.get(id.as_str()),
                Some(seq),
                "acknowledged {id} is stored at its seq"
            );
        }
        // Only the killed process's request in flight may have been stored unacknowledged.
        assert!(
            stored.len() <= mine.len() + 2,
            "{} stored, {} acknowledged",
            stored.len(),
            mine.len()
        );
    }

    assert!(first.terminate().success());
    assert!(second.terminate().success());
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}
