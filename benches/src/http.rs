//! Section E: the HTTP path, served in process on loopback as the example server
//! composes it, held against the same routes on the memory store, against the raw
//! SQLite cost of the same reads, and (with `--seed-url`) against the seed stack.
//!
//! Each server is the adapter's router (`router(ApiState)`, nested at
//! [`API_PREFIX`]) beside the page's static asset (the example's `index.html` at
//! `/`), wrapped in [`harden`] and [`measure_routes`] with a Prometheus recorder
//! installed, and served by the adapter's [`serve`] with its default
//! [`ServeConfig`]: what `conversation-examples`' server runs. Requests are sent by a
//! bare `hyper` HTTP/1.1 client on one keep-alive connection per server, one request
//! at a time, the servers taken in turn call by call (and the raw read beside them),
//! so that every party sees the machine at the same moment. Then a `wrk`-style run:
//! `wrk` itself when it is on the `PATH` (one connection, then 32), else the
//! harness's own closed-loop generator on the same `hyper` client.
//!
//! Servers, client and store share the run's two-worker runtime (and `wrk`, or the
//! seed stack, the same two cores): on a two-core machine that is what a host that
//! serves its own page sees.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::{HeaderValue, Method, Request, StatusCode};
use axum::routing::get;
use conversation_adapter_http::{
    AllowedHosts, ApiState, ServeConfig, harden, measure_routes, router, serve,
};
use conversation_core::{
    Append, ConversationId, Conversations, NewConversation, NewMessage, Scope, Store,
};
use conversation_store_memory::MemoryStore;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Barrier, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::stats::{Samples, Summary};
use crate::target::Target;
use crate::workload::Runner;
use crate::{Error, Result, body};

/// Where the API is mounted, as in the example server.
pub(crate) const API_PREFIX: &str = "/api/v1/connections";

/// The page the example server serves at `/`: its static asset, the floor of a
/// request through the same router.
const INDEX_HTML: &str = include_str!("../../examples/web/index.html");

/// Messages of the conversation whose newest page is read.
const PAGE_CONVERSATION: usize = 500;

/// Concurrent connections of the throughput run.
const CONNECTIONS: usize = 32;

/// The name of a party's rows: the run's store has none, the others a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Party {
    Target,
    Memory,
    Seed,
}

impl Party {
    fn prefix(self) -> &'static str {
        match self {
            Party::Target => "",
            Party::Memory => "memory:",
            Party::Seed => "seed:",
        }
    }
}

/// One request of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Static,
    GetConversation,
    GetMessages,
    PostMessage,
}

impl Call {
    fn operation(self) -> &'static str {
        match self {
            Call::Static => "http_static",
            Call::GetConversation => "http_get_conversation",
            Call::GetMessages => "http_get_messages20@500",
            Call::PostMessage => "http_post_message",
        }
    }
}

fn http_error(e: impl std::fmt::Display) -> Error {
    Error::harness(format!("HTTP: {e}"))
}

/// One keep-alive HTTP/1.1 connection: `hyper`'s client connection, nothing around it.
struct Client {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Client {
    async fn connect(address: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            host: HeaderValue::from_str(&address.to_string()).map_err(http_error)?,
        })
    }

    /// Sends one request and reads the whole response; an unexpected status is an
    /// error naming the path.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
        want: StatusCode,
    ) -> Result<Bytes> {
        self.sender.ready().await.map_err(http_error)?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if json.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(json.unwrap_or_default())))
            .map_err(http_error)?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(http_error)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(http_error)?
            .to_bytes();
        if status != want {
            return Err(Error::harness(format!(
                "HTTP {status} from {path}, expected {want}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )));
        }
        Ok(bytes)
    }
}

/// A server of the comparison and what it is asked for.
struct Server {
    party: Party,
    address: SocketAddr,
    /// The API's path on that server.
    prefix: String,
    scope: Scope,
    /// The conversation of [`PAGE_CONVERSATION`] messages.
    chat: String,
    /// The conversation that appends go to.
    posts: String,
    client: Client,
    stop: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Server {
    fn path(&self, call: Call) -> String {
        let conversations = format!("{}/{}/conversations", self.prefix, self.scope.as_str());
        match call {
            Call::Static => "/".to_owned(),
            Call::GetConversation => format!("{conversations}/{}", self.chat),
            Call::GetMessages => format!("{conversations}/{}/messages?limit=20", self.chat),
            Call::PostMessage => format!("{conversations}/{}/messages", self.posts),
        }
    }

    async fn call(&mut self, call: Call, i: usize) -> Result<()> {
        let path = self.path(call);
        match call {
            Call::PostMessage => {
                let json = message_json(&body::message(2 * i as u64))?;
                self.client
                    .send(Method::POST, &path, Some(json), StatusCode::CREATED)
                    .await?;
            }
            _ => {
                self.client
                    .send(Method::GET, &path, None, StatusCode::OK)
                    .await?;
            }
        }
        Ok(())
    }

    fn url(&self, call: Call) -> String {
        format!("http://{}{}", self.address, self.path(call))
    }
}

fn message_json(message: &NewMessage) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(message)?)
}

/// The Prometheus recorder the example server installs (once per process).
fn install_recorder() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Another recorder installed first would serve as well: the cost measured is
        // the facade's calls into a recorder.
        let _ = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder();
    });
}

/// The example server's composition on `store`.
fn app(store: Arc<dyn Store>) -> Router {
    let hosts = AllowedHosts::loopback();
    let api = router(ApiState::new(Conversations::new(store)).with_allowed_hosts(hosts.clone()));
    let site = Router::new().route(
        "/",
        get(|| async {
            (
                [(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                )],
                INDEX_HTML,
            )
        }),
    );
    harden(measure_routes(site).nest(API_PREFIX, api), &hosts)
}

/// Serves `store` on a new loopback port, with a conversation of
/// [`PAGE_CONVERSATION`] messages (`chat`, seeded by `seed`) and an empty one for
/// appends.
async fn start(
    party: Party,
    store: Arc<dyn Store>,
    scope: &Scope,
    chat: ConversationId,
) -> Result<Server> {
    let posts = store
        .create_conversation(scope, NewConversation::new())
        .await?
        .id;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app(store), ServeConfig::default(), async {
        let _ = stopped.await;
    }));
    Ok(Server {
        party,
        address,
        prefix: API_PREFIX.to_owned(),
        scope: scope.clone(),
        chat: chat.to_string(),
        posts: posts.to_string(),
        client: Client::connect(address).await?,
        stop: Some((stop, task)),
    })
}

/// Connects to the seed stack at `url` (`http://host:port/api/v1/connections`) and
/// gives it the same two conversations, through its own routes (untimed).
async fn seed_stack(url: &str, scope: &Scope) -> Result<Server> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Error::harness(format!("--seed-url {url:?}: an http:// URL")))?;
    let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let address = tokio::net::lookup_host(host)
        .await?
        .next()
        .ok_or_else(|| Error::harness(format!("--seed-url {url:?}: no address")))?;
    let prefix = format!("/{}", prefix.trim_end_matches('/'));
    let mut client = Client::connect(address).await?;
    let conversations = format!("{prefix}/{}/conversations", scope.as_str());
    let mut create = async || -> Result<String> {
        let created = client
            .send(
                Method::POST,
                &conversations,
                Some(b"{}".to_vec()),
                StatusCode::CREATED,
            )
            .await?;
        let created: serde_json::Value = serde_json::from_slice(&created)?;
        created
            .get("id")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Error::harness("the seed stack's create returned no id"))
    };
    let chat = create().await?;
    let posts = create().await?;
    for first in (0..PAGE_CONVERSATION).step_by(250) {
        let batch = body::messages(first as u64, 250.min(PAGE_CONVERSATION - first));
        client
            .send(
                Method::POST,
                &format!("{conversations}/{chat}/messages"),
                Some(serde_json::to_vec(&batch)?),
                StatusCode::CREATED,
            )
            .await?;
    }
    Ok(Server {
        party: Party::Seed,
        address,
        prefix,
        scope: scope.clone(),
        chat,
        posts,
        client,
        stop: None,
    })
}

/// Section E. `seed_url`: the seed stack's API, when given.
pub(crate) fn section_e(
    runner: &mut Runner<'_>,
    target: &mut Target,
    seed_url: Option<&str>,
) -> Result<()> {
    let rt = runner.rt;
    install_recorder();
    let scope = Scope::new("e")?;
    let started = Instant::now();
    let chat = target
        .seed_conversations(rt, &[(scope.clone(), 1)])?
        .pop()
        .and_then(|ids| ids.first().copied())
        .ok_or_else(|| Error::harness("E: no conversation seeded"))?;
    target.seed_messages(rt, &scope, chat, PAGE_CONVERSATION)?;
    target.settle(rt)?;
    let store = target.store()?;
    let mut servers = rt.block_on(async {
        let mut servers = vec![start(Party::Target, Arc::clone(&store), &scope, chat).await?];
        if target.kind() != crate::StoreKind::Memory {
            // The memory twin holds the same conversation, appended by its own calls.
            let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
            let twin = memory
                .create_conversation(&scope, NewConversation::new())
                .await?
                .id;
            for first in (0..PAGE_CONVERSATION).step_by(250) {
                let batch = body::messages(first as u64, 250.min(PAGE_CONVERSATION - first));
                memory
                    .append_messages(&scope, twin, Append::new(batch))
                    .await?;
            }
            servers.push(start(Party::Memory, memory, &scope, twin).await?);
        }
        if let Some(url) = seed_url {
            servers.push(seed_stack(url, &scope).await?);
        }
        Ok::<_, Error>(servers)
    })?;
    runner.seeded(
        "E",
        format!(
            "a conversation of {PAGE_CONVERSATION} messages on each of {} servers",
            servers.len()
        ),
        started,
    );
    let measured = measure_all(runner, target, &mut servers, &scope, chat);
    rt.block_on(async {
        for server in &mut servers {
            if let Some((stop, task)) = server.stop.take() {
                let _ = stop.send(());
                let _ = task.await;
            }
        }
    });
    measured
}

fn measure_all(
    runner: &mut Runner<'_>,
    target: &Target,
    servers: &mut [Server],
    scope: &Scope,
    chat: ConversationId,
) -> Result<()> {
    let raw = target.raw();
    let (rw, reads, ww, writes) = (
        runner.scale.read_warmup,
        runner.scale.reads,
        runner.scale.write_warmup,
        runner.scale.writes,
    );
    // The static asset on the run's own server only: the router's floor.
    interleaved(
        runner,
        &mut servers[..1],
        Call::Static,
        rw,
        reads,
        None::<fn() -> Result<()>>,
    )?;
    let get = raw.map(|raw| move || raw.get(scope, chat));
    interleaved(runner, servers, Call::GetConversation, rw, reads, get)?;
    let page = raw.map(|raw| move || raw.page(scope, chat, true, 20));
    interleaved(runner, servers, Call::GetMessages, rw, reads, page)?;
    interleaved(
        runner,
        servers,
        Call::PostMessage,
        ww,
        writes,
        None::<fn() -> Result<()>>,
    )?;
    load_runs(runner, servers)
}

/// Times `warmup + n` rounds of `call`, each round one request to each server (and
/// one `raw` call), starting with a different one each round; records the last `n`.
/// The raw samples go with the run's own store.
fn interleaved<R>(
    runner: &mut Runner<'_>,
    servers: &mut [Server],
    call: Call,
    warmup: usize,
    n: usize,
    mut raw: Option<R>,
) -> Result<()>
where
    R: FnMut() -> Result<()>,
{
    let parties = servers.len() + usize::from(raw.is_some());
    let (samples, raw_samples) = runner.rt.block_on(async {
        let mut samples = vec![Samples::with_capacity(n); servers.len()];
        let mut raw_samples = Samples::with_capacity(n);
        for i in 0..warmup + n {
            for k in 0..parties {
                let which = (i + k) % parties;
                let started = Instant::now();
                if let Some(server) = servers.get_mut(which) {
                    server.call(call, i).await?;
                } else if let Some(raw) = raw.as_mut() {
                    raw()?;
                }
                let took = started.elapsed();
                if i >= warmup {
                    match samples.get_mut(which) {
                        Some(samples) => samples.record(took),
                        None => raw_samples.record(took),
                    }
                }
            }
        }
        Ok::<_, Error>((samples, raw_samples))
    })?;
    for (server, samples) in servers.iter().zip(&samples) {
        let operation = format!("{}{}", server.party.prefix(), call.operation());
        let raw = if server.party == Party::Target {
            &raw_samples
        } else {
            &Samples::default()
        };
        runner.push("E", &operation, samples, 1, raw, 1)?;
    }
    Ok(())
}

/// How long each `wrk`-style run lasts.
fn load_seconds(quick: bool) -> u64 {
    if quick { 3 } else { 8 }
}

/// The `wrk`-style runs: `GET conversation`, `GET messages?limit=20` (and the
/// static asset on the run's server) with one connection, then `GET conversation`
/// and the static asset with 32.
fn load_runs(runner: &mut Runner<'_>, servers: &[Server]) -> Result<()> {
    let seconds = load_seconds(runner.scale.quick);
    let wrk = wrk_version();
    runner.notes.push(match &wrk {
        Some(version) => format!(
            "E: the load runs (http_c1_*, http_c32_*) are {version}, {seconds} s each \
             (`wrk -t1 -c1`, `wrk -t2 -c32`, --latency)"
        ),
        None => format!(
            "E: wrk is not on the PATH: the load runs (http_c1_*, http_c32_*) are the \
             harness's closed-loop hyper client, {seconds} s each"
        ),
    });
    let mut runs = Vec::new();
    for server in servers {
        if server.party == Party::Target {
            runs.push((server, Call::Static));
        }
        runs.push((server, Call::GetConversation));
        runs.push((server, Call::GetMessages));
    }
    for connections in [1, CONNECTIONS] {
        for (server, call) in &runs {
            let what = match call {
                Call::Static => "static",
                Call::GetMessages if connections == 1 => "get_messages20@500",
                // The throughput run reads conversations only, as the table.
                Call::GetMessages => continue,
                _ => "get_conversation",
            };
            let operation = format!("{}http_c{connections}_{what}", server.party.prefix());
            let summary = match wrk {
                Some(_) => wrk_run(&server.url(*call), connections, seconds)?,
                None => runner
                    .rt
                    .block_on(closed_loop(server, *call, connections, seconds))?,
            };
            runner
                .rows
                .push(crate::report::Row::new("E", operation, summary, None));
        }
    }
    Ok(())
}

/// `wrk --version`'s first line, when `wrk` runs.
fn wrk_version() -> Option<String> {
    let output = Command::new("wrk").arg("--version").output().ok()?;
    // wrk prints its version and usage, and exits with 1.
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    text.lines()
        .find(|line| line.starts_with("wrk"))
        .map(|line| line.split(" [").next().unwrap_or(line).trim().to_owned())
}

/// Runs `wrk` against `url` and reads its summary: requests, the 50th and 99th
/// percentiles and the maximum of its latency, requests per second. Any non-2xx
/// response or socket error fails the run.
fn wrk_run(url: &str, connections: usize, seconds: u64) -> Result<Summary> {
    let threads = if connections == 1 { 1 } else { 2 };
    let output = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(Error::harness(format!("wrk failed: {text}")));
    }
    parse_wrk(&text).ok_or_else(|| Error::harness(format!("cannot read wrk's output:\n{text}")))
}

/// A duration as `wrk` prints it (`812.00us`, `1.20ms`, `2.00s`), in microseconds.
fn wrk_micros(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// Reads `wrk --latency`'s report; `None` when it is not one, or when it counts
/// errors or non-2xx responses.
fn parse_wrk(text: &str) -> Option<Summary> {
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return None;
    }
    let mut p50 = None;
    let mut p99 = None;
    let mut max = None;
    let mut requests = None;
    let mut rate = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["Latency", _avg, _stdev, m, ..] => max = wrk_micros(m),
            ["50%", v] => p50 = wrk_micros(v),
            ["99%", v] => p99 = wrk_micros(v),
            ["Requests/sec:", v] => rate = v.parse::<f64>().ok(),
            [n, "requests", "in", ..] => requests = n.parse::<usize>().ok(),
            _ => {}
        }
    }
    Some(Summary {
        n: requests?,
        p50_us: p50?,
        p99_us: p99?,
        max_us: max?,
        throughput_per_s: rate?,
    })
}

/// The harness's own load run, for a machine without `wrk`: `connections` tasks,
/// each a keep-alive connection sending `call` again as soon as the previous
/// response is read, for `seconds`.
async fn closed_loop(
    server: &Server,
    call: Call,
    connections: usize,
    seconds: u64,
) -> Result<Summary> {
    let barrier = Arc::new(Barrier::new(connections + 1));
    let mut tasks = JoinSet::new();
    let path = server.path(call);
    let duration = Duration::from_secs(seconds);
    for _ in 0..connections {
        let mut client = Client::connect(server.address).await?;
        let barrier = Arc::clone(&barrier);
        let path = path.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let mut samples = Samples::with_capacity(4096);
            while started.elapsed() < duration {
                let sent = Instant::now();
                client
                    .send(Method::GET, &path, None, StatusCode::OK)
                    .await?;
                samples.record(sent.elapsed());
            }
            Ok::<_, Error>(samples)
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut all = Samples::default();
    while let Some(joined) = tasks.join_next().await {
        let samples = joined.map_err(|e| Error::harness(format!("a load task failed: {e}")))??;
        all.extend(&samples);
    }
    all.set_wall(started.elapsed());
    all.summary(1)
        .ok_or_else(|| Error::harness("the load run sent nothing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_reports() {
        let report = "Running 3s test @ http://127.0.0.1:8090/x
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    95.12us   20.01us   1.20ms   90.00%
    Req/Sec    10.10k   300.00    10.50k    70.00%
  Latency Distribution
     50%   91.00us
     75%  100.00us
     90%  110.00us
     99%  180.00us
  30300 requests in 3.00s, 10.00MB read
Requests/sec:  10100.50
Transfer/sec:      3.33MB
";
        let summary = parse_wrk(report).unwrap();
        assert_eq!(summary.n, 30_300);
        assert!((summary.p50_us - 91.0).abs() < 1e-9);
        assert!((summary.p99_us - 180.0).abs() < 1e-9);
        assert!((summary.max_us - 1200.0).abs() < 1e-9);
        assert!((summary.throughput_per_s - 10_100.5).abs() < 1e-9);
        let failed = report.replace(
            "Requests/sec",
            "  Non-2xx or 3xx responses: 5\nRequests/sec",
        );
        assert!(parse_wrk(&failed).is_none());
        assert_eq!(wrk_micros("2.50s"), Some(2_500_000.0));
    }
}
