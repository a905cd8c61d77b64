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
        Self::spawn(Self::command(dir, env, None))
    }

    /// The command of the binary in `dir` on a free port, with `env` added and, when
    /// given, `open_files` as its open-file limit (`ulimit -n`).
    fn command(dir: &Path, env: &[(&str, &str)], open_files: Option<u32>) -> Command {
        let binary = env!("CARGO_BIN_EXE_server");
        let mut command = match open_files {
            None => Command::new(binary),
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(binary);
                shell
            }
        };
        command
            .current_dir(dir)
            .args(["--port", "0"])
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_MODEL")
            .env_remove("SAMPLE_DB")
            .env_remove("RUN_LEASE")
            .env_remove("DATABASE_URL")
            .env_remove("BIND")
            .env_remove("ALLOWED_HOSTS")
            .env_remove("ALLOWED_ORIGINS")
            .env_remove("MAX_CONNECTIONS")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        command
    }

    /// Starts the binary like [`Self::start`] with its log (stderr) read: each line
    /// comes out of the receiver, without colours.
    fn start_logged(dir: &Path, env: &[(&str, &str)]) -> (Self, mpsc::Receiver<String>) {
        let mut command = Self::command(dir, env, None);
        command.stderr(Stdio::piped());
        let mut child = command.spawn().expect("the server binary starts");
        let stderr = child.stderr.take().unwrap();
        let (lines, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        (Self::attach(child), log)
    }

    /// Spawns `command` and waits for its "listening on" line.
    fn spawn(mut command: Command) -> Self {
        Self::attach(command.spawn().expect("the server binary starts"))
    }

    /// Waits for the "listening on" line of `child`.
    fn attach(mut child: Child) -> Self {
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

    /// `host:port` of the server.
    fn address(&self) -> &str {
        self.url.strip_prefix("http://").unwrap()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Kills the process with SIGKILL, as a crash would.
    #[cfg(feature = "postgres")]
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
    // conversation-llm-openai's default TLS feature gives reqwest a rustls backend
    // without a crypto provider of its own (`rustls-no-provider`): building a client
    // that does not bring one panics unless the process has a default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
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

/// Asks `server` for a reply to `content` in conversation `id` of `scope`; the whole
/// event stream.
async fn reply(
    http: &reqwest::Client,
    server: &Server,
    scope: &str,
    id: &str,
    content: &str,
) -> String {
    http.post(server.api(&format!("/{scope}/conversations/{id}/reply")))
        .json(&json!({ "content": content }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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

    // The page's vendored scripts and styles, and their licences, are served from the
    // binary, each as what it is.
    for (path, content_type) in [
        ("/markdown.js", "text/javascript; charset=utf-8"),
        ("/vendor/marked.umd.js", "text/javascript; charset=utf-8"),
        ("/vendor/purify.min.js", "text/javascript; charset=utf-8"),
        ("/vendor/highlight.min.js", "text/javascript; charset=utf-8"),
        (
            "/vendor/highlight-github-dark.min.css",
            "text/css; charset=utf-8",
        ),
        ("/vendor/LICENSE.dompurify.txt", "text/plain; charset=utf-8"),
    ] {
        let asset = http
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(asset.headers()["content-type"], content_type, "{path}");
        assert!(!asset.text().await.unwrap().is_empty(), "{path}");
    }
    // The scopes the page offers: the default list.
    let scopes: Value = http
        .get(format!("{}/api/v1/scopes", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        scopes["items"],
        serde_json::json!(["analytics-db", "billing-db"])
    );

    // A conversation and a streamed offline reply, stored.
    let id = create_conversation(&http, &server, "smoke").await;
    let stream = reply(&http, &server, "smoke", &id, "persist me").await;
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
    let again = Server::start(dir.path(), &[("SCOPES", " sales, hr,sales")]);
    let scopes: Value = http
        .get(format!("{}/api/v1/scopes", again.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(scopes["items"], serde_json::json!(["sales", "hr"]));
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

/// The folder of the browser scripts, or `None` after saying why `test` is skipped;
/// with `REQUIRE_BROWSER=1` a missing browser fails the test instead.
fn browser_or_skip(test: &str) -> Option<PathBuf> {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e");
    let Some(reason) = browser_missing(&e2e) else {
        return Some(e2e);
    };
    assert!(
        std::env::var("REQUIRE_BROWSER").as_deref() != Ok("1"),
        "REQUIRE_BROWSER=1 but {reason}"
    );
    eprintln!("SKIPPED {test}: {reason}; REQUIRE_BROWSER=1 makes this a failure");
    None
}

#[test]
fn the_sidebar_page_works_in_a_real_browser() {
    let Some(e2e) = browser_or_skip("the browser test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Slow enough that switching away mid-reply is tested while it streams.
    let server = Server::start(dir.path(), &[("OFFLINE_ECHO_DELAY_MS", "60")]);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let status = Command::new("node")
        .current_dir(&e2e)
        .arg("sidebar.mjs")
        .arg(&server.url)
        .arg(&shots)
        .status()
        .unwrap();
    assert!(status.success(), "the browser test failed: {status}");
    // The README shows these; `UPDATE_SCREENSHOTS=1` copies them into docs/.
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    for name in ["desktop-light", "desktop-dark", "phone-light", "phone-dark"] {
        let shot = shots.join(format!("{name}.png"));
        assert!(shot.is_file(), "no screenshot {}", shot.display());
        if std::env::var("UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::copy(&shot, docs.join(format!("{name}.png"))).unwrap();
        }
    }
    eprintln!("screenshots of the page: {}", shots.display());
    assert!(server.terminate().success());
}

/// The PostgreSQL server of the tests, or `None` after saying why it is skipped;
/// with `REQUIRE_POSTGRES=1` an unreachable server fails the test instead.
#[cfg(feature = "postgres")]
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
#[cfg(feature = "postgres")]
type Acknowledged = Vec<(String, String, u64)>;

/// Appends batches of two messages with caller ids, alternating between the
/// conversations, through one server, until `rounds` are done or a request fails.
#[cfg(feature = "postgres")]
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
#[cfg(feature = "postgres")]
async fn several_server_processes_share_one_postgres_database() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let Some(url) = postgres_url().await else {
        return;
    };
    let schema = test_schema("e2e");
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
    drop_schema(&url, &schema).await;
}

// ------------------------------------------------------------------ serving safely

/// A response read off the wire: status, headers (names in lowercase), body.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// Asserts a problem document with `status` and `code`, carrying the response's
    /// request id and `nosniff`.
    #[track_caller]
    fn expect_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("x-content-type-options"),
            Some("nosniff"),
            "{self:?}"
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let problem = self.json();
        assert_eq!(problem["status"], status, "{problem}");
        assert_eq!(problem["code"], code, "{problem}");
        assert_eq!(
            problem["requestId"].as_str(),
            self.header("x-request-id"),
            "{problem}"
        );
    }
}

/// An HTTP/1.1 request as text: `host` (none when `None`), `headers`, `body`.
fn request(
    method: &str,
    path: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\n");
    if let Some(host) = host {
        text.push_str(&format!("Host: {host}\r\n"));
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    text
}

/// Sends `request` on a connection of its own (with `Connection: close`) and reads the
/// response to its end.
fn raw(address: &str, request: &str) -> Raw {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let (head, body) = request.split_once("\r\n\r\n").unwrap();
    write!(stream, "{head}\r\nConnection: close\r\n\r\n{body}").unwrap();
    let mut received = Vec::new();
    stream.read_to_end(&mut received).unwrap();
    let text = String::from_utf8(received).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value == "chunked");
    Raw {
        status,
        headers,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    }
}

/// The data of a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut data = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        data.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    data
}

/// The port of a `host:port`.
fn port_of(address: &str) -> &str {
    address.rsplit(':').next().unwrap()
}

#[test]
fn a_rebound_host_name_and_a_foreign_origin_are_refused_on_the_page_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("DATABASE_URL", "memory")]);
    let address = server.address();
    let port = port_of(address);
    let json = [("Content-Type", "application/json")];
    let list = "/api/v1/connections/analytics-db/conversations";
    let rebound = format!("rebind.attacker.test:{port}");
    for host in [
        Some(rebound.as_str()),
        Some("localhost.attacker.test"),
        Some(""),
        None,
    ] {
        for (method, path, body) in [
            ("GET", "/", ""),
            ("GET", "/app.js", ""),
            ("GET", "/openapi.json", ""),
            ("GET", "/metrics", ""),
            ("GET", "/readyz", ""),
            ("GET", list, ""),
            ("POST", list, "{}"),
            ("GET", "/no/such/page", ""),
        ] {
            raw(address, &request(method, path, host, &json, body))
                .expect_problem(403, "host_not_allowed");
        }
    }
    let loopback = format!("127.0.0.1:{port}");
    for (name, value) in [
        ("Origin", "http://attacker.test"),
        ("Origin", "null"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let headers = [json[0], (name, value)];
        raw(
            address,
            &request("POST", list, Some(&loopback), &headers, "{}"),
        )
        .expect_problem(403, "cross_origin_refused");
    }
    let stored = raw(address, &request("GET", list, Some(&loopback), &[], "")).json();
    assert_eq!(stored["items"], json!([]), "nothing was created");
    for host in [
        format!("localhost:{port}"),
        loopback.clone(),
        format!("[::1]:{port}"),
        format!("app.localhost:{port}"),
    ] {
        let page = raw(address, &request("GET", "/", Some(&host), &[], ""));
        assert_eq!(page.status, 200, "{host}: {page:?}");
    }
    let same_origin = [json[0], ("Origin", &format!("http://{loopback}") as &str)];
    let created = raw(
        address,
        &request("POST", list, Some(&loopback), &same_origin, "{}"),
    );
    assert_eq!(created.status, 201, "{created:?}");
}

#[test]
fn more_host_names_are_allowed_by_flag_and_required_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            ("DATABASE_URL", "memory"),
            ("ALLOWED_HOSTS", "chat.example.test,*.corp.test"),
        ],
    );
    let port = port_of(server.address()).to_owned();
    for (host, status) in [
        (format!("chat.example.test:{port}"), 200),
        (format!("eu.corp.test:{port}"), 200),
        (format!("localhost:{port}"), 200),
        (format!("example.test:{port}"), 403),
    ] {
        let page = raw(server.address(), &request("GET", "/", Some(&host), &[], ""));
        assert_eq!(page.status, status, "{host}");
    }

    let output = Command::new(env!("CARGO_BIN_EXE_server"))
        .current_dir(dir.path())
        .args(["--bind", "0.0.0.0:0", "--database-url", "memory"])
        .env_remove("ALLOWED_HOSTS")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs --allowed-hosts"), "{stderr}");

    // Beyond loopback with open access, it says so.
    let log = dir.path().join("server.log");
    let mut command = Server::command(dir.path(), &[("DATABASE_URL", "memory")], None);
    command
        .args([
            "--bind",
            "0.0.0.0:0",
            "--allowed-hosts",
            "chat.example.test",
        ])
        .stderr(std::fs::File::create(&log).unwrap());
    let everywhere = Server::spawn(command);
    assert!(everywhere.terminate().success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("beyond loopback with open access"),
        "{logged}"
    );
}

/// A request (method, path, headers, body) and the status and problem code it gets.
type ErrorCase<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a str,
    u16,
    &'a str,
);

#[test]
fn every_error_is_a_problem_document_and_every_response_says_nosniff() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("DATABASE_URL", "memory")]);
    let address = server.address();
    let host = Some(address);
    let json = [("Content-Type", "application/json")];
    let missing = "/api/v1/connections/x/conversations/0190a1b2-0000-7000-8000-000000000000";
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let foreign = [json[0], ("Origin", "http://evil.test")];
    let conversations = "/api/v1/connections/x/conversations";
    let title = format!("{missing}/title");
    let cases: [ErrorCase<'_>; 14] = [
        ("GET", "/nope", &[], "", 404, "route_not_found"),
        (
            "GET",
            "/api/v1/connections/x",
            &[],
            "",
            404,
            "route_not_found",
        ),
        ("POST", "/", &json, "{}", 405, "method_not_allowed"),
        ("DELETE", "/metrics", &[], "", 405, "method_not_allowed"),
        ("PUT", "/healthz", &[], "", 405, "method_not_allowed"),
        (
            "GET",
            &format!("{conversations}/nope"),
            &[],
            "",
            400,
            "invalid_parameter",
        ),
        (
            "GET",
            "/api/v1/connections/%ZZ/conversations",
            &[],
            "",
            400,
            "invalid_parameter",
        ),
        (
            "GET",
            &format!("{conversations}?limit=0"),
            &[],
            "",
            400,
            "invalid_parameter",
        ),
        ("POST", &title, &form, "a=b", 415, "unsupported_media_type"),
        ("POST", &title, &json, "{}", 404, "not_found"),
        ("GET", missing, &[], "", 404, "not_found"),
        ("POST", conversations, &json, "{", 400, "invalid_json"),
        (
            "POST",
            conversations,
            &json,
            r#"{"title":""}"#,
            422,
            "invalid_input",
        ),
        (
            "POST",
            conversations,
            &foreign,
            "{}",
            403,
            "cross_origin_refused",
        ),
    ];
    for (method, path, headers, body, status, code) in cases {
        raw(address, &request(method, path, host, headers, body)).expect_problem(status, code);
    }
    raw(address, &request("GET", "/", Some("evil.test"), &[], ""))
        .expect_problem(403, "host_not_allowed");
    // A body over the limit is refused from its Content-Length, before it is sent.
    let head = format!(
        "POST /api/v1/connections/x/conversations HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        5 * 1024 * 1024
    );
    raw(address, &head).expect_problem(413, "payload_too_large");

    for (path, status) in [
        ("/", 200),
        ("/app.js", 200),
        ("/healthz", 200),
        ("/readyz", 200),
        ("/metrics", 200),
        ("/openapi.json", 307),
        ("/api/v1/connections/openapi.json", 200),
        ("/api/v1/connections/x/conversations", 200),
    ] {
        let response = raw(address, &request("GET", path, host, &[], ""));
        assert_eq!(response.status, status, "{path}");
        assert_eq!(
            response.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert!(response.header("x-request-id").is_some(), "{path}");
    }
}

/// The samples of a Prometheus text exposition as parsed by the reference parser, the
/// one of the official Python client (`prometheus_client`): each `{family, type, name,
/// labels, value}`. `None` after saying why when the parser is not installed; with
/// `REQUIRE_PROMETHEUS_CLIENT=1` (set by `.ci/run`, which installs it) that fails.
fn parse_prometheus_text(text: &str) -> Option<Vec<Value>> {
    use std::io::Write as _;
    const PARSE: &str = "import json, sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        print(json.dumps([{'family': f.name, 'type': f.type, 'name': s.name, \
        'labels': s.labels, 'value': s.value} \
        for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]))";
    let available = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !available {
        assert!(
            std::env::var("REQUIRE_PROMETHEUS_CLIENT").as_deref() != Ok("1"),
            "REQUIRE_PROMETHEUS_CLIENT=1 but python3 cannot import prometheus_client"
        );
        eprintln!(
            "SKIPPED the metrics parse: pip install prometheus_client; \
             REQUIRE_PROMETHEUS_CLIENT=1 makes this a failure"
        );
        return None;
    }
    let mut parser = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = parser.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the parser refused the exposition:\n{text}"
    );
    Some(serde_json::from_slice(&output.stdout).unwrap())
}

#[tokio::test]
async fn the_metrics_are_scraped_and_parsed_by_a_prometheus_parser() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("OFFLINE_ECHO_DELAY_MS", "0")]);
    let http = client();
    let id = create_conversation(&http, &server, "metrics").await;
    let replied = reply(&http, &server, "metrics", &id, "count me").await;
    assert!(replied.contains("event: done"), "{replied}");
    for path in ["/metrics/conversations", "/nowhere"] {
        http.get(server.api(path)).send().await.unwrap();
    }
    assert_eq!(
        http.get(format!("{}/readyz", server.url))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
        json!({"status": "ready", "store": "ok", "chatModel": true})
    );

    let response = http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    let Some(samples) = parse_prometheus_text(&text) else {
        return;
    };
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .find(|s| {
                s["name"] == name
                    && labels
                        .iter()
                        .all(|(label, value)| s["labels"][label] == *value)
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))["value"]
            .as_f64()
            .unwrap()
    };
    let family_type = |family: &str| {
        samples
            .iter()
            .find(|s| s["family"] == family)
            .map(|s| s["type"].as_str().unwrap().to_owned())
    };
    let list = [
        ("method", "GET"),
        ("route", "/api/v1/connections/{scope}/conversations"),
        ("status", "200"),
    ];
    assert!(value("http_requests_total", &list) >= 1.0);
    let created = [
        ("method", "POST"),
        ("route", "/api/v1/connections/{scope}/conversations"),
        ("status", "201"),
    ];
    assert!(value("http_requests_total", &created) >= 1.0);
    assert!(
        value(
            "http_requests_total",
            &[("route", "none"), ("status", "404")]
        ) >= 1.0
    );
    assert!(
        value(
            "http_requests_total",
            &[("route", "/readyz"), ("status", "200")]
        ) >= 1.0
    );
    assert_eq!(family_type("http_requests").as_deref(), Some("counter"));
    assert_eq!(
        family_type("http_request_duration_seconds").as_deref(),
        Some("histogram"),
        "latencies are histograms"
    );
    let inf = [list.as_slice(), &[("le", "+Inf")]].concat();
    assert!(value("http_request_duration_seconds_bucket", &inf) >= 1.0);
    for operation in ["create", "list", "reply", "health"] {
        let labels = [("operation", operation), ("outcome", "ok")];
        assert!(
            value("conversation_operation_duration_seconds_count", &labels) >= 1.0,
            "{operation}"
        );
    }
    assert_eq!(value("conversation_replies_active", &[]), 0.0);
    assert!(server.terminate().success());
}

/// Opens `n` connections that each send half a request and then nothing more.
fn slow_clients(address: &str, n: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write as _;
    (0..n)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .unwrap();
            stream
        })
        .collect()
}

/// Waits until the server closes `stream`; how long that took from `since`.
fn closed_after(mut stream: std::net::TcpStream, since: Instant) -> Duration {
    use std::io::Read as _;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    since.elapsed()
}

#[test]
fn a_crowd_of_slow_clients_is_cut_off_and_never_exhausts_the_open_files() {
    // 200 half-sent requests against a server allowed 128 open files: with the default
    // connection cap (sized from that limit) and with a cap above it, where accepting
    // runs out of descriptors and must pause rather than spin or stop.
    for cap in [None, Some("1000")] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let mut command = Server::command(dir.path(), &[("RUST_LOG", "warn")], Some(128));
        command
            .args(["--header-read-timeout", "1"])
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(cap) = cap {
            command.args(["--max-connections", cap]);
        }
        let server = Server::spawn(command);
        let address = server.address().to_owned();
        let started = Instant::now();
        let slow = slow_clients(&address, 200);

        // A normal client is served while they wait to be cut off.
        let healthy = raw(
            &address,
            &request("GET", "/healthz", Some(&address), &[], ""),
        );
        assert_eq!(healthy.status, 200, "{cap:?}: {healthy:?}");
        let served_after = started.elapsed();
        let slowest = slow
            .into_iter()
            .map(|stream| closed_after(stream, started))
            .max()
            .unwrap();
        assert!(slowest < Duration::from_secs(30), "{cap:?}: {slowest:?}");
        let again = raw(
            &address,
            &request("GET", "/readyz", Some(&address), &[], ""),
        );
        assert_eq!(again.status, 200, "{cap:?}: the server still serves");
        let took = started.elapsed();
        assert!(server.terminate().success());

        let logged = std::fs::read_to_string(&log).unwrap();
        let pauses = logged.matches("cannot accept connections; pausing").count();
        match cap {
            None => assert_eq!(pauses, 0, "the default cap leaves room:\n{logged}"),
            Some(_) => assert!(
                pauses as u64 <= took.as_secs() + 2,
                "{pauses} pauses in {took:?}: not a hot loop\n{logged}"
            ),
        }
        eprintln!(
            "cap {cap:?}: a normal client served after {served_after:?}, 200 slow clients cut off within {slowest:?}, {pauses} accept pauses"
        );
    }
}

#[test]
fn a_stop_with_a_stalled_client_and_an_endless_reply_ends_by_its_deadline() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let mut command = Server::command(dir.path(), &[("OFFLINE_ECHO_DELAY_MS", "60000")], None);
    command.args(["--shutdown-deadline", "2"]);
    let server = Server::spawn(command);
    let address = server.address().to_owned();
    let _stalled = slow_clients(&address, 1);
    let created = raw(
        &address,
        &request(
            "POST",
            "/api/v1/connections/stop/conversations",
            Some(&address),
            &[("Content-Type", "application/json")],
            "{}",
        ),
    )
    .json();
    let mut reply = std::net::TcpStream::connect(&address).unwrap();
    let body = r#"{"content":"take a minute per word"}"#;
    write!(
        reply,
        "{}",
        request(
            "POST",
            &format!(
                "/api/v1/connections/stop/conversations/{}/reply",
                created["id"].as_str().unwrap()
            ),
            Some(&address),
            &[("Content-Type", "application/json")],
            body,
        )
    )
    .unwrap();
    let mut first = [0_u8; 64];
    assert!(reply.read(&mut first).unwrap() > 0, "the reply started");

    let started = Instant::now();
    let status = server.terminate();
    let took = started.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "stopped after {took:?} with a 2 s deadline"
    );
    eprintln!("SIGTERM with a stalled client and an endless reply: exited after {took:?}");
}

/// The peak resident memory (`VmHWM`) of `pid` in MiB.
fn peak_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .map(|kib| kib.trim().parse::<u64>().unwrap() / 1024)
        .unwrap()
}

/// Most the server's peak memory (`VmHWM`) may grow while it answers four pages of 200
/// messages of 1 MiB at once: each page stops at core's `Limits::max_page_bytes`
/// (4 MiB) and is streamed, so four pages hold a few copies of 4 MiB (the SQLite store
/// decodes each row more than once; measured +75 to +83 MiB for four 4-message pages,
/// +5 MiB on the memory store), not four copies of 200 MiB (+1072 MiB on the memory
/// store and +2372 MiB on SQLite before this bound).
const FOUR_PAGES_BOUND_MIB: u64 = 128;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_pages_of_200_one_mib_messages_stay_within_a_stated_memory_bound() {
    for database in ["memory", "data/conversations.db"] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &[("DATABASE_URL", database)]);
        let http = client();
        let id = create_conversation(&http, &server, "big").await;
        let content = "x".repeat(1024 * 1024 - 16);
        for _ in 0..200 / 2 {
            let batch = json!([
                {"role": "user", "content": content},
                {"role": "assistant", "content": content},
            ]);
            let response = http
                .post(server.api(&format!("/big/conversations/{id}/messages")))
                .json(&batch)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
        }
        // Forget the peak of the writes: measure the reads alone.
        std::fs::write(format!("/proc/{}/clear_refs", server.pid()), "5").unwrap();
        let before = peak_mib(server.pid());
        let url = server.api(&format!("/big/conversations/{id}/messages?limit=200"));
        let reads: Vec<_> = (0..4)
            .map(|_| {
                let (http, url) = (http.clone(), url.clone());
                tokio::spawn(async move {
                    let page: Value = http.get(url).send().await.unwrap().json().await.unwrap();
                    let items = page["items"].as_array().unwrap();
                    assert!(!items.is_empty());
                    assert_eq!(page["hasMore"], true, "a page stops early");
                    items.len()
                })
            })
            .collect();
        let mut sizes = Vec::new();
        for read in reads {
            sizes.push(read.await.unwrap());
        }
        let grew = peak_mib(server.pid()).saturating_sub(before);
        eprintln!(
            "{database}: 4 pages of {sizes:?} messages; peak grew by {grew} MiB from {before} MiB"
        );
        assert!(
            grew <= FOUR_PAGES_BOUND_MIB,
            "{database}: the peak grew by {grew} MiB, more than {FOUR_PAGES_BOUND_MIB} MiB"
        );
        assert!(server.terminate().success());
    }
}

#[tokio::test]
async fn the_echo_answers_a_question_of_the_largest_size() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("OFFLINE_ECHO_DELAY_MS", "0")]);
    let http = client();
    let id = create_conversation(&http, &server, "echo").await;
    let question = "word ".repeat(1024 * 1024 / 5);
    let stream = reply(&http, &server, "echo", &id, &question).await;
    assert!(
        stream.contains("event: done"),
        "{}",
        &stream[stream.len().saturating_sub(500)..]
    );
    let page: Value = http
        .get(server.api(&format!("/echo/conversations/{id}/messages")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "the question once, and its answer");
    let answer = items[1]["content"].as_str().unwrap();
    assert!(answer.len() <= 1024 * 1024, "{}", answer.len());
    assert!(answer.starts_with("[offline echo") && answer.ends_with("content limit]"));
    assert!(server.terminate().success());
}

/// Makes `file` impossible to write: `chattr +i` for root (whom permissions do not
/// stop), read-only permissions otherwise. `None` when neither is possible here.
fn make_unwritable(file: &Path) -> Option<&'static str> {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if is_root {
        let immutable = Command::new("chattr").arg("+i").arg(file).status();
        return immutable.is_ok_and(|s| s.success()).then_some("immutable");
    }
    let mut permissions = std::fs::metadata(file).unwrap().permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(file, permissions).unwrap();
    Some("read-only")
}

#[test]
fn a_database_file_the_server_cannot_write_stops_it_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/conversations.db");
    assert!(Server::start(dir.path(), &[]).terminate().success());
    assert!(db.is_file());
    let Some(how) = make_unwritable(&db) else {
        eprintln!("SKIPPED: cannot make a file unwritable here (chattr +i failed)");
        return;
    };
    let output = Command::new(env!("CARGO_BIN_EXE_server"))
        .current_dir(dir.path())
        .args(["--port", "0"])
        .env_remove("DATABASE_URL")
        .env_remove("OPENAI_API_KEY")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    if how == "immutable" {
        Command::new("chattr").arg("-i").arg(&db).status().unwrap();
    }
    assert!(!output.status.success(), "{how}: it started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("conversations.db")
            && stderr.contains("the server would lose every change"),
        "{how}: {stderr}"
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).is_empty(),
        "it never listened"
    );
}

#[test]
fn the_page_and_the_api_refuse_rebound_names_and_cross_site_writes_in_a_real_browser() {
    let Some(e2e) = browser_or_skip("the browser guard test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("DATABASE_URL", "memory")]);
    let status = Command::new("node")
        .current_dir(&e2e)
        .arg("guard.mjs")
        .arg(&server.url)
        .status()
        .unwrap();
    assert!(status.success(), "the browser guard test failed: {status}");
    assert!(server.terminate().success());
}

// ------------------------------------------------------------------ agent runs

/// The events of an SSE body: (event name, data as JSON), in order.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            Some((name?, serde_json::from_str(&data).ok()?))
        })
        .collect()
}

/// GETs `path` of `server`'s API as JSON, asserting a 200.
async fn get_json(http: &reqwest::Client, server: &Server, path: &str) -> Value {
    let response = http.get(server.api(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

const TOP_PRODUCTS: &str = "/sql select name, price from products order by price desc limit 3";

#[tokio::test]
async fn a_sql_question_runs_the_query_tool_offline_and_stores_the_whole_turn() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("OFFLINE_ECHO_DELAY_MS", "0")]);
    let sample = dir.path().join("data/sample.db");
    assert!(
        sample.is_file(),
        "the sample database is made at first start"
    );
    let http = client();
    let id = create_conversation(&http, &server, "shop").await;

    let stream = reply(&http, &server, "shop", &id, TOP_PRODUCTS).await;
    let events = sse_events(&stream);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"run"), "{stream}");
    assert_eq!(names.last(), Some(&"done"), "{stream}");
    let call = &events
        .iter()
        .find(|(name, _)| name == "toolCall")
        .unwrap()
        .1;
    assert_eq!(call["name"], "run_query");
    assert_eq!(
        call["arguments"]["sql"],
        "select name, price from products order by price desc limit 3"
    );
    let done = &events.last().unwrap().1;
    assert_eq!(done["run"]["status"], "completed", "{done}");
    assert_eq!(done["run"]["steps"], 2, "{done}");
    let run_id = done["run"]["id"].as_str().unwrap();

    // Stored: the question, the call, the tool's result, the answer.
    let page = get_json(
        &http,
        &server,
        &format!("/shop/conversations/{id}/messages"),
    )
    .await;
    let items = page["items"].as_array().unwrap();
    let roles: Vec<&str> = items.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"], "{page}");
    assert_eq!(items[0]["content"], TOP_PRODUCTS);
    assert_eq!(items[1]["toolCalls"][0], *call);
    assert_eq!(items[1]["metadata"]["finishReason"], "tool_calls");
    assert_eq!(items[2]["toolCallId"], call["id"]);
    let table = items[2]["content"].as_str().unwrap();
    assert!(
        table.starts_with("| name | price |\n|---|---|\n"),
        "{table}"
    );
    assert!(table.ends_with("\n3 rows"), "{table}");
    let first = table.lines().nth(2).unwrap();
    let first_name = first.trim_matches('|').split('|').next().unwrap().trim();
    let answer = items[3]["content"].as_str().unwrap();
    assert!(
        answer.contains("The query returned 3 rows; columns: name, price.")
            && answer.contains(&format!("First row: name = {first_name}, price = ")),
        "{answer}"
    );
    assert_eq!(items[3]["metadata"]["finishReason"], "stop");

    // The run and the conversation: done, and the usage of both steps summed.
    let run = get_json(
        &http,
        &server,
        &format!("/shop/conversations/{id}/runs/{run_id}"),
    )
    .await;
    assert_eq!(run["status"], "completed");
    let conversation = get_json(&http, &server, &format!("/shop/conversations/{id}")).await;
    assert!(conversation["activeRunId"].is_null(), "{conversation}");
    let usage = &conversation["usage"];
    let steps: u64 = [1, 3]
        .iter()
        .map(|&i| {
            items[i]["metadata"]["usage"]["totalTokens"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert!(steps > 0);
    assert_eq!(usage["totalTokens"].as_u64(), Some(steps), "{conversation}");
    assert_eq!(usage, &run["usage"]);

    // A query the tool refuses: the error goes to the model, which says it; the run
    // completes.
    let refused = reply(&http, &server, "shop", &id, "/sql delete from orders").await;
    let (_, done) = sse_events(&refused).pop().unwrap();
    assert_eq!(done["run"]["status"], "completed", "{refused}");
    let page = get_json(
        &http,
        &server,
        &format!("/shop/conversations/{id}/messages"),
    )
    .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 8);
    assert_eq!(items[6]["metadata"]["isError"], true);
    assert!(
        items[7]["content"]
            .as_str()
            .unwrap()
            .contains("The query failed:"),
        "{}",
        items[7]
    );
    assert!(server.terminate().success());

    // Turned off: no tools, and `/sql` is answered in words.
    let off = Server::start(
        dir.path(),
        &[("OFFLINE_ECHO_DELAY_MS", "0"), ("SAMPLE_DB", "off")],
    );
    let other = create_conversation(&http, &off, "shop").await;
    let stream = reply(&http, &off, "shop", &other, TOP_PRODUCTS).await;
    assert!(!stream.contains("event: toolCall"), "{stream}");
    assert!(stream.contains("offers no such tool"), "{stream}");
    assert!(off.terminate().success());
}

/// The `model_check` line of a server's start-up log (waits for it).
fn model_check_line(log: &mpsc::Receiver<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = log
            .recv_timeout(left)
            .expect("the server logs its model check");
        if line.contains("model_check") {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_start_the_model_settings_are_checked_once_and_a_local_server_gets_its_first_model() {
    use conversation_llm_openai::fake::{FakeOpenAi, Reply};

    let dir = tempfile::tempdir().unwrap();
    let fake = FakeOpenAi::start().await.unwrap();
    fake.set_models(["local-a", "local-b"]);
    fake.answer_titles_with(Some("Greetings"));
    let base = fake.base_url();
    let start = |extra: &[(&str, &str)]| {
        let mut env = vec![("RUST_LOG", "warn,model_check=info"), ("SAMPLE_DB", "off")];
        env.extend_from_slice(extra);
        Server::start_logged(dir.path(), &env)
    };

    // A loopback server and no model configured: its first listed model is used.
    let (server, log) = start(&[("OPENAI_BASE_URL", &base)]);
    let line = model_check_line(&log);
    assert!(
        line.contains(" INFO ")
            && line.contains("no model configured: using \"local-a\", the first of the 2"),
        "{line}"
    );
    assert!(!line.contains(&base), "no URL in the log: {line}");
    assert_eq!(fake.requests(), 1, "one GET /models");
    fake.push(Reply::text("Hello from local-a."));
    let http = client();
    let id = create_conversation(&http, &server, "llm").await;
    let stream = reply(&http, &server, "llm", &id, "hello").await;
    assert!(stream.contains("Hello from local-a."), "{stream}");
    let bodies = fake.chat_bodies();
    assert_eq!(bodies[0]["model"], "local-a", "{bodies:?}");
    assert!(server.terminate().success());

    // A configured model the server lists.
    let (server, log) = start(&[("OPENAI_BASE_URL", &base), ("OPENAI_MODEL", "local-b")]);
    let line = model_check_line(&log);
    assert!(
        line.contains(" INFO ") && line.contains("model \"local-b\" found"),
        "{line}"
    );
    assert!(server.terminate().success());

    // One it does not list.
    let (server, log) = start(&[("OPENAI_BASE_URL", &base), ("OPENAI_MODEL", "gpt-9")]);
    let line = model_check_line(&log);
    assert!(
        line.contains(" WARN ")
            && line.contains(
                "model \"gpt-9\" not found among the 2 the server lists (local-a, local-b)"
            ),
        "{line}"
    );
    assert!(server.terminate().success());

    // A base URL without `/v1`.
    let origin = fake.origin();
    let (server, log) = start(&[("OPENAI_BASE_URL", &origin), ("OPENAI_MODEL", "local-a")]);
    let line = model_check_line(&log);
    assert!(
        line.contains(" WARN ")
            && line.contains("code=\"upstream_not_found\"")
            && line.contains("probably lacks /v1"),
        "{line}"
    );
    assert!(!line.contains(&origin), "no URL in the log: {line}");
    assert!(server.terminate().success());

    // A wrong key: unauthorized, and the key is not logged.
    fake.require_api_key("sk-right");
    let (server, log) = start(&[
        ("OPENAI_BASE_URL", &base),
        ("OPENAI_API_KEY", "sk-wrong-key"),
    ]);
    let line = model_check_line(&log);
    assert!(
        line.contains(" WARN ") && line.contains("code=\"upstream_unauthorized\""),
        "{line}"
    );
    assert!(
        !line.contains("sk-wrong-key") && !line.contains("sk-right"),
        "{line}"
    );
    assert!(server.terminate().success());

    // Nothing listening: unreachable, said at start, and the server starts anyway.
    drop(fake);
    let (server, log) = start(&[("OPENAI_BASE_URL", &base), ("OPENAI_MODEL", "local-a")]);
    let line = model_check_line(&log);
    assert!(
        line.contains(" WARN ") && line.contains("code=\"upstream_"),
        "{line}"
    );
    assert!(server.terminate().success());
}

/// A fresh schema name for one test on the shared PostgreSQL database (the
/// store-postgres tests drop leftover `conv_test_<secs>_…` schemas after an hour).
#[cfg(feature = "postgres")]
fn test_schema(tag: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "conv_test_{secs}_{tag}{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

#[cfg(feature = "postgres")]
async fn drop_schema(url: &str, schema: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

/// Polls `path` of `server` until `done` holds for its JSON, within `limit`; the
/// JSON and how long it took.
#[cfg(feature = "postgres")]
async fn poll_until(
    http: &reqwest::Client,
    server: &Server,
    path: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let since = Instant::now();
    loop {
        let value = get_json(http, server, path).await;
        if done(&value) {
            return (value, since.elapsed());
        }
        assert!(since.elapsed() < limit, "still {value} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg(feature = "postgres")]
async fn a_run_on_one_server_is_seen_and_stopped_through_another() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let schema = test_schema("runs");
    let dir = tempfile::tempdir().unwrap();
    // A short lease: a stop asked through B reaches A's run at A's next renewal,
    // every second.
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("DATABASE_SCHEMA", schema.as_str()),
        ("RUN_LEASE", "3"),
        ("OFFLINE_ECHO_DELAY_MS", "100"),
    ];
    let a = Server::start(dir.path(), &env);
    let b = Server::start(dir.path(), &env);
    let http = client();
    let id = create_conversation(&http, &a, "shared").await;
    let chat = format!("/shared/conversations/{id}");

    // A whole `/sql` run through A: B reads it and its stored turn.
    let stream = reply(&http, &a, "shared", &id, "/sql select count(*) from orders").await;
    let (_, done) = sse_events(&stream).pop().unwrap();
    assert_eq!(done["run"]["status"], "completed", "{stream}");
    let first_run = done["run"]["id"].as_str().unwrap().to_owned();
    let run = get_json(&http, &b, &format!("{chat}/runs/{first_run}")).await;
    assert_eq!(run["status"], "completed", "{run}");
    let page = get_json(&http, &b, &format!("{chat}/messages")).await;
    let roles: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"], "{page}");
    assert!(
        page["items"][2]["content"]
            .as_str()
            .unwrap()
            .contains("| 2500 |")
    );

    // A long answer (one word every 100 ms) started through A…
    let question = "word ".repeat(150);
    let mut started = http
        .post(a.api(&format!("{chat}/reply")))
        .json(&json!({ "content": question }))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    let mut head = String::new();
    let run_id = loop {
        let chunk = started.chunk().await.unwrap().expect("the run event");
        head.push_str(std::str::from_utf8(&chunk).unwrap());
        if let Some((_, run)) = sse_events(&head)
            .into_iter()
            .find(|(name, _)| name == "run")
        {
            break run["id"].as_str().unwrap().to_owned();
        }
    };
    let rest = tokio::spawn(async move {
        let mut body = head;
        while let Some(chunk) = started.chunk().await.unwrap() {
            body.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        body
    });

    // …is seen running through B, as the conversation's active run…
    let run_path = format!("{chat}/runs/{run_id}");
    let run = get_json(&http, &b, &run_path).await;
    assert_eq!(run["status"], "running", "{run}");
    let conversation = get_json(&http, &b, &chat).await;
    assert_eq!(
        conversation["activeRunId"],
        run_id.as_str(),
        "{conversation}"
    );
    // (and a second start through B is refused while it runs)
    let second = http
        .post(b.api(&format!("{chat}/reply")))
        .json(&json!({ "content": "me too" }))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 409);
    let problem: Value = second.json().await.unwrap();
    assert_eq!(problem["code"], "run_in_progress", "{problem}");

    // …and stopped through B: A's run ends at its next renewal and keeps its text.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cancel = http
        .post(b.api(&format!("{run_path}/cancel")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let (run, took) = poll_until(&http, &b, &run_path, Duration::from_secs(5), |run| {
        run["status"] != "running"
    })
    .await;
    assert_eq!(run["status"], "cancelled", "{run}");
    // The renewal comes every lease / 3 = 1 s; the echo alone would take 15 s.
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");
    eprintln!("a stop through B reached the run on A in {took:?}");
    let body = rest.await.unwrap();
    let (_, done) = sse_events(&body).pop().unwrap();
    assert_eq!(done["run"]["status"], "cancelled", "{body}");

    let (conversation, _) = poll_until(&http, &b, &chat, Duration::from_secs(5), |c| {
        c["activeRunId"].is_null()
    })
    .await;
    let page = get_json(&http, &b, &format!("{chat}/messages")).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 6, "{page}");
    let partial = &items[5];
    assert_eq!(partial["role"], "assistant");
    assert_eq!(
        partial["metadata"]["finishReason"], "cancelled",
        "{partial}"
    );
    let text = partial["content"].as_str().unwrap();
    assert!(
        text.starts_with("[offline echo") && text.len() < question.len(),
        "{text}"
    );
    assert!(conversation["usage"]["totalTokens"].as_u64().unwrap() > 0);

    assert!(a.terminate().success());
    assert!(b.terminate().success());
    drop_schema(&url, &schema).await;
}
