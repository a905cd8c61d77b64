//! An in-process fake of an OpenAI-compatible server, **for tests** (cargo feature
//! `fake`, off by default).
//!
//! [`FakeOpenAi`] listens on `127.0.0.1:0` and speaks the real wire format over real
//! HTTP: chat completions as JSON or SSE (text streamed in deltas, tool calls as
//! real tool-call deltas with their arguments split), OpenAI's error bodies and
//! statuses, `Retry-After` / `retry-after-ms`, and the model list. It answers from a
//! script of [`Reply`]s, records every request, and notices a client that goes away
//! before its reply is complete. It can enforce OpenAI's message-pairing rules
//! ([`FakeOpenAi::enforce_tool_pairing`]), so that a test of a tool loop fails the
//! way OpenAI would fail it.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use conversation_core::ToolCall;
//! use conversation_llm_openai::fake::{FakeOpenAi, Reply};
//! use conversation_llm_openai::OpenAiChatModel;
//!
//! let server = FakeOpenAi::start().await?;
//! server.enforce_tool_pairing(true);
//! server.push(Reply::tool_calls(vec![ToolCall {
//!     id: "call_1".into(),
//!     name: "run_sql".into(),
//!     arguments: serde_json::json!({"sql": "select 1"}),
//! }]));
//! server.push(Reply::text("One row."));
//! let model = OpenAiChatModel::new(server.config()).expect("a valid configuration");
//! // … run the tool loop against `model` …
//! assert_eq!(server.requests(), 2);
//! assert_eq!(server.abandoned(), 0);
//! # Ok(()) }
//! ```
//!
//! Routes: `POST /v1/chat/completions` and Azure's
//! `POST /openai/deployments/{deployment}/chat/completions` answer from the script;
//! `GET /v1/models` lists [`FakeOpenAi::set_models`]; anything else is OpenAI's 404
//! (`Invalid URL (POST /chat/completions)`), which is what a base URL without `/v1`
//! meets. A chat request beyond the script gets HTTP 418, which no client retries.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use conversation_core::ToolCall;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::OpenAiConfig;

/// How a scripted SSE body ends after its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// The body ends normally.
    Close,
    /// The connection is torn down in the middle of the body (a cut-off stream).
    Drop,
    /// Nothing more is sent, and the connection stays open (a stalled stream).
    Stall,
}

#[derive(Debug, Clone)]
enum Payload {
    Text(String),
    Sse {
        events: Vec<String>,
        ending: Ending,
        /// A whole completion: the usage chunk (when the request asked for it) and
        /// `[DONE]` follow the events.
        complete: bool,
    },
    Hang,
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    payload: Payload,
    delay: Duration,
    chunk_delay: Duration,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, payload: Payload) -> Self {
        Self {
            status: status_code(status),
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static(content_type))],
            payload,
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
        }
    }

    /// A streamed completion whose text comes in deltas of one word each, then
    /// `finish_reason: "stop"`.
    pub fn text(content: &str) -> Self {
        Self::text_and_tool_calls(content, Vec::new())
    }

    /// A streamed completion that calls tools: each call's id, type and name in a
    /// first delta, its arguments (as JSON text) split across the next three, as
    /// OpenAI streams them; then `finish_reason: "tool_calls"`.
    pub fn tool_calls(calls: Vec<ToolCall>) -> Self {
        Self::text_and_tool_calls("", calls)
    }

    /// A streamed completion with some text before its tool calls (no calls: a
    /// plain text reply).
    pub fn text_and_tool_calls(content: &str, calls: Vec<ToolCall>) -> Self {
        let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        events.extend(
            words(content)
                .into_iter()
                .map(|word| chunk(json!({ "content": word }), None)),
        );
        for (index, call) in calls.iter().enumerate() {
            events.push(chunk(
                json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": ""}}]}),
                None,
            ));
            let arguments = match &call.arguments {
                Value::String(raw) => raw.clone(),
                other => other.to_string(),
            };
            for piece in thirds(&arguments) {
                events.push(chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                    None,
                ));
            }
        }
        let finish = if calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        events.push(chunk(json!({}), Some(finish)));
        Self::new(
            200,
            "text/event-stream",
            Payload::Sse {
                events,
                ending: Ending::Close,
                complete: true,
            },
        )
        .header("cache-control", "no-cache")
    }

    /// Text deltas, then an error event (OpenAI's `server_error`), then the end of
    /// the body: a reply that fails part way.
    pub fn mid_stream_error(content: &str) -> Self {
        let mut events = streamed_words(content);
        events.push(data(&json!({"error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error", "param": null, "code": null}})));
        Self::sse(events, Ending::Close)
    }

    /// Text deltas, then the connection is torn down.
    pub fn cut_off(content: &str) -> Self {
        Self::sse(streamed_words(content), Ending::Drop)
    }

    /// Text deltas, then silence with the connection open.
    pub fn stall(content: &str) -> Self {
        Self::sse(streamed_words(content), Ending::Stall)
    }

    /// An SSE body of raw event blocks (each ending in a blank line; see [`chunk`],
    /// [`data`], [`done`]), sent as they are.
    pub fn sse(events: Vec<String>, ending: Ending) -> Self {
        Self::new(
            200,
            "text/event-stream",
            Payload::Sse {
                events,
                ending,
                complete: false,
            },
        )
        .header("cache-control", "no-cache")
    }

    /// A non-streamed completion whose message is `content` (what a title request
    /// gets).
    pub fn completion(content: &str, finish_reason: &str) -> Self {
        Self::json(
            200,
            json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": FakeOpenAi::MODEL,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason
                }],
                "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}
            }),
        )
    }

    /// A JSON body with `status`.
    ///
    /// # Panics
    /// When `status` is not a valid HTTP status (a mistake in the test).
    pub fn json(status: u16, body: Value) -> Self {
        Self::new(status, "application/json", Payload::Text(body.to_string()))
    }

    /// Any body with `status` and `content_type`.
    ///
    /// # Panics
    /// When `status` is not a valid HTTP status or `content_type` not a valid
    /// header value (a mistake in the test).
    pub fn raw(status: u16, content_type: &str, body: &str) -> Self {
        Self::new(status, "text/plain", Payload::Text(body.to_owned()))
            .header(CONTENT_TYPE.as_str(), content_type)
    }

    /// OpenAI's error body: `{"error": {"message", "type", "param": null, "code"}}`.
    ///
    /// # Panics
    /// When `status` is not a valid HTTP status (a mistake in the test).
    pub fn error(status: u16, kind: &str, code: Option<&str>, message: &str) -> Self {
        Self::json(
            status,
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
        )
    }

    /// OpenAI's 401 for a wrong key.
    pub fn invalid_api_key() -> Self {
        Self::error(
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided: sk-fake***************1234. You can find your API \
             key at https://platform.openai.com/account/api-keys.",
        )
    }

    /// OpenAI's 429 for a rate limit (add `Retry-After` with [`Self::header`]).
    pub fn rate_limited() -> Self {
        Self::error(
            429,
            "requests",
            Some("rate_limit_exceeded"),
            "Rate limit reached for test-model in organization org-fake on requests per min \
             (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.",
        )
    }

    /// OpenAI's 429 for an exhausted quota (never retried).
    pub fn insufficient_quota() -> Self {
        Self::error(
            429,
            "insufficient_quota",
            Some("insufficient_quota"),
            "You exceeded your current quota, please check your plan and billing details.",
        )
    }

    /// OpenAI's 500.
    pub fn server_error() -> Self {
        Self::error(
            500,
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        )
    }

    /// OpenAI's 404 for an unknown model.
    pub fn model_not_found(model: &str) -> Self {
        Self::error(
            404,
            "invalid_request_error",
            Some("model_not_found"),
            &format!("The model `{model}` does not exist or you do not have access to it."),
        )
    }

    /// OpenAI's 400 for a context longer than the model takes.
    pub fn context_length_exceeded() -> Self {
        Self::error(
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
            "This model's maximum context length is 128000 tokens. However, your messages \
             resulted in 130000 tokens. Please reduce the length of the messages.",
        )
    }

    /// No answer at all: the request is held open until the client gives up.
    pub fn hang() -> Self {
        Self::new(200, "application/json", Payload::Hang)
    }

    /// Adds (or replaces) a response header, e.g. `retry-after` or
    /// `retry-after-ms`.
    ///
    /// # Panics
    /// When `name` or `value` is not a valid header (a mistake in the test).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::try_from(name)
            .unwrap_or_else(|_| panic!("{name:?} is not a valid header name"));
        let value = HeaderValue::try_from(value)
            .unwrap_or_else(|_| panic!("{value:?} is not a valid header value"));
        self.headers.retain(|(existing, _)| *existing != name);
        self.headers.push((name, value));
        self
    }

    /// Waits `delay` before the response (status and headers) is sent.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Waits `delay` before each SSE event after the first: a slow stream.
    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or_else(|_| panic!("{status} is not an HTTP status"))
}

/// `content` cut after each space: the deltas a model streams.
fn words(content: &str) -> Vec<&str> {
    content.split_inclusive(' ').collect()
}

fn streamed_words(content: &str) -> Vec<String> {
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    events.extend(
        words(content)
            .into_iter()
            .map(|word| chunk(json!({ "content": word }), None)),
    );
    events
}

/// `text` in three pieces of about the same length (on character boundaries).
fn thirds(text: &str) -> Vec<&str> {
    let chars = text.chars().count();
    let cuts: Vec<usize> = [chars / 3, 2 * chars / 3]
        .iter()
        .map(|&n| text.char_indices().nth(n).map_or(text.len(), |(at, _)| at))
        .collect();
    vec![&text[..cuts[0]], &text[cuts[0]..cuts[1]], &text[cuts[1]..]]
}

/// `data: <chat.completion.chunk>\n\n` with one choice carrying `delta`.
pub fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    data(&json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": FakeOpenAi::MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    }))
}

/// `data: <value>\n\n`.
pub fn data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// `data: [DONE]\n\n`.
pub fn done() -> String {
    "data: [DONE]\n\n".to_owned()
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Seen {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The body as JSON (`null` when it was not JSON).
    pub body: Value,
    headers: HeaderMap,
}

impl Seen {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    seen: Vec<Seen>,
    models: Vec<String>,
    api_key: Option<String>,
    pairing: bool,
    refuse_stream_options: bool,
    title: Option<String>,
}

struct Shared {
    script: Mutex<Script>,
    abandoned: watch::Sender<usize>,
}

impl Shared {
    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running fake server; it stops when dropped.
pub struct FakeOpenAi {
    addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    server: AbortHandle,
}

impl std::fmt::Debug for FakeOpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOpenAi")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeOpenAi {
    /// The model the server lists by default, and [`Self::config`] asks for.
    pub const MODEL: &'static str = "test-model";

    /// Starts a server on `127.0.0.1:0` with an empty script, listing
    /// [`Self::MODEL`], requiring no key and enforcing nothing.
    ///
    /// # Errors
    /// When no local port can be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::serve_on(TcpListener::bind("127.0.0.1:0").await?, "http")
    }

    /// Like [`Self::start`], but serving on a listener of the caller's, whose
    /// addresses are reached with `scheme`: a listener that completes a TLS handshake
    /// before handing a connection on makes an HTTPS fake (`"https"`).
    ///
    /// # Errors
    /// When the listener has no local address.
    ///
    /// # Panics
    /// Outside a Tokio runtime, as `tokio::spawn` does.
    pub fn serve_on<L>(listener: L, scheme: &'static str) -> std::io::Result<Self>
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let (abandoned, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            script: Mutex::new(Script {
                models: vec![Self::MODEL.to_owned()],
                ..Script::default()
            }),
            abandoned,
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(%error, "the fake OpenAI server stopped");
            }
        })
        .abort_handle();
        Ok(Self {
            addr,
            scheme,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:PORT/v1` (`https://` when served on a TLS listener).
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.origin())
    }

    /// `http://127.0.0.1:PORT` (`https://` when served on a TLS listener).
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// A configuration for this server: [`Self::MODEL`], no key, and quick retries
    /// (10 to 40 ms of backoff, `Retry-After` waited up to 2 s) so that tests do
    /// not wait.
    pub fn config(&self) -> OpenAiConfig {
        OpenAiConfig::local(self.base_url(), Self::MODEL)
            .with_backoff(Duration::from_millis(10), Duration::from_millis(40))
            .with_retry_after_max(Duration::from_secs(2))
    }

    /// Queues the answer to the next chat request.
    pub fn push(&self, reply: Reply) -> &Self {
        self.shared.script().replies.push_back(reply);
        self
    }

    /// Queues several answers, in order.
    pub fn push_all(&self, replies: impl IntoIterator<Item = Reply>) -> &Self {
        self.shared.script().replies.extend(replies);
        self
    }

    /// How many queued answers are still unused.
    pub fn pending(&self) -> usize {
        self.shared.script().replies.len()
    }

    /// Whether chat requests must follow OpenAI's message-pairing rules: an
    /// assistant message with `tool_calls` is followed at once by one `tool`
    /// message per call id, and a `tool` message answers a call of the assistant
    /// message just before its run of tool messages. A request that breaks them gets
    /// OpenAI's 400 (and uses no scripted answer):
    ///
    /// - `An assistant message with 'tool_calls' must be followed by tool messages
    ///   responding to each 'tool_call_id'. The following tool_call_ids did not have
    ///   response messages: call_x` (`param`: the message where a tool message was
    ///   due, `messages.[N].role`, or `messages` at the end of the list);
    /// - `Invalid parameter: messages with role 'tool' must be a response to a
    ///   preceeding message with 'tool_calls'.` (`param`: `messages.[N].role`, the
    ///   tool message; OpenAI's spelling);
    /// - `Invalid parameter: 'tool_call_id' of 'call_x' not found in 'tool_calls' of
    ///   previous message.` (`param`: `messages.[N].tool_call_id`, our reading).
    pub fn enforce_tool_pairing(&self, on: bool) -> &Self {
        self.shared.script().pairing = on;
        self
    }

    /// Whether chat requests carrying `stream_options` are refused with a 400, as
    /// older servers do (`Unrecognized request argument supplied: stream_options`).
    pub fn refuse_stream_options(&self, on: bool) -> &Self {
        self.shared.script().refuse_stream_options = on;
        self
    }

    /// Requires `Authorization: Bearer <key>` on every request, answering OpenAI's
    /// 401 otherwise.
    pub fn require_api_key(&self, key: &str) -> &Self {
        self.shared.script().api_key = Some(key.to_owned());
        self
    }

    /// The models `GET /v1/models` lists (default: [`Self::MODEL`]).
    pub fn set_models<I, S>(&self, models: I) -> &Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.shared.script().models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Answers every non-streamed chat request (a title request) with a completion
    /// of `title`, outside the script, so that titles asked in the background do
    /// not take the answers scripted for replies. `None` (the default) puts them
    /// back on the script.
    pub fn answer_titles_with(&self, title: Option<&str>) -> &Self {
        self.shared.script().title = title.map(ToOwned::to_owned);
        self
    }

    /// How many requests arrived (every route).
    pub fn requests(&self) -> usize {
        self.shared.script().seen.len()
    }

    /// The requests, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.script().seen.clone()
    }

    /// The JSON bodies of the chat-completion requests, in arrival order.
    pub fn chat_bodies(&self) -> Vec<Value> {
        self.shared
            .script()
            .seen
            .iter()
            .filter(|seen| seen.uri.contains("/chat/completions"))
            .map(|seen| seen.body.clone())
            .collect()
    }

    /// How many requests the client gave up before their answer was complete
    /// (closed the connection during a hang, a delay, or a stream).
    pub fn abandoned(&self) -> usize {
        *self.shared.abandoned.borrow()
    }

    /// Waits until at least `count` requests were abandoned; `false` when `within`
    /// passed first.
    pub async fn wait_abandoned(&self, count: usize, within: Duration) -> bool {
        let mut abandoned = self.shared.abandoned.subscribe();
        tokio::time::timeout(within, abandoned.wait_for(|seen| *seen >= count))
            .await
            .is_ok_and(|outcome| outcome.is_ok())
    }
}

/// One request in flight: counted as abandoned if dropped before it is finished.
struct Exchange {
    shared: Arc<Shared>,
    finished: bool,
}

impl Exchange {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.abandoned.send_modify(|count| *count += 1);
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut exchange = Exchange {
        shared: shared.clone(),
        finished: false,
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_owned();
    let reply = {
        let mut script = shared.script();
        script.seen.push(Seen {
            method: method.to_string(),
            uri: uri.to_string(),
            body: body.clone(),
            headers: headers.clone(),
        });
        answer(&mut script, &method, &path, &headers, &body)
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let include_usage = body["stream_options"]["include_usage"] == json!(true);
    let body = match reply.payload {
        Payload::Text(text) => {
            exchange.finish();
            Body::from(text)
        }
        Payload::Hang => {
            std::future::pending::<()>().await;
            Body::empty()
        }
        Payload::Sse {
            mut events,
            ending,
            complete,
        } => {
            if complete {
                if include_usage {
                    events.push(data(&json!({"id": "chatcmpl-fake",
                        "object": "chat.completion.chunk", "choices": [],
                        "usage": {"prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59}})));
                }
                events.push(done());
            }
            sse_body(events, ending, reply.chunk_delay, exchange)
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value);
    }
    response
}

/// What the script says to `method path`: the chat answer, the model list, or the
/// errors OpenAI would give.
fn answer(
    script: &mut Script,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Reply {
    if let Some(key) = &script.api_key {
        let sent = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if sent != Some(key.as_str()) {
            return Reply::invalid_api_key();
        }
    }
    let chat = path == "/v1/chat/completions"
        || (path.starts_with("/openai/deployments/") && path.ends_with("/chat/completions"));
    match (method, path) {
        (&Method::GET, "/v1/models") => {
            let data: Vec<Value> = script
                .models
                .iter()
                .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}))
                .collect();
            Reply::json(200, json!({"object": "list", "data": data}))
        }
        (&Method::POST, _) if chat => {
            if body.is_null() {
                return Reply::error(
                    400,
                    "invalid_request_error",
                    None,
                    "We could not parse the JSON body of your request.",
                );
            }
            if script.refuse_stream_options && body.get("stream_options").is_some() {
                return Reply::error(
                    400,
                    "invalid_request_error",
                    None,
                    "Unrecognized request argument supplied: stream_options",
                );
            }
            if script.pairing
                && let Some(error) = pairing_error(body["messages"].as_array())
            {
                return Reply::json(400, error);
            }
            if let Some(title) = &script.title
                && body["stream"] != json!(true)
            {
                return Reply::completion(title, "stop");
            }
            script.replies.pop_front().unwrap_or_else(|| {
                Reply::error(
                    418,
                    "fake_script_exhausted",
                    None,
                    "the fake OpenAI server has no scripted reply left",
                )
            })
        }
        _ => Reply::error(
            404,
            "invalid_request_error",
            None,
            &format!("Invalid URL ({method} {path})"),
        ),
    }
}

/// The SSE body: `events`, paced by `chunk_delay`, then `ending`. `exchange` is
/// finished when the body ends as scripted; dropped earlier, it counts as abandoned.
fn sse_body(
    events: Vec<String>,
    ending: Ending,
    chunk_delay: Duration,
    exchange: Exchange,
) -> Body {
    let state = (events.into_iter(), exchange, true);
    let stream = futures::stream::unfold(Some(state), move |state| async move {
        let (mut events, mut exchange, first) = state?;
        if !first && !chunk_delay.is_zero() {
            tokio::time::sleep(chunk_delay).await;
        }
        if let Some(event) = events.next() {
            return Some((Ok(Bytes::from(event)), Some((events, exchange, false))));
        }
        match ending {
            Ending::Close => {
                exchange.finish();
                None
            }
            Ending::Drop => {
                // Let the events before reach the client before tearing down.
                tokio::time::sleep(Duration::from_millis(50)).await;
                exchange.finish();
                Some((
                    Err(std::io::Error::other("the fake server cut the stream off")),
                    None,
                ))
            }
            Ending::Stall => {
                std::future::pending::<()>().await;
                None
            }
        }
    });
    Body::from_stream(stream.boxed())
}

/// OpenAI's 400 body for the first pairing rule `messages` break, if any.
fn pairing_error(messages: Option<&Vec<Value>>) -> Option<Value> {
    let messages = messages?;
    let role = |i: usize| messages.get(i).and_then(|m| m["role"].as_str());
    let refuse = |message: String, param: String| json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}});
    let mut i = 0;
    while i < messages.len() {
        let calls: Vec<&str> = messages[i]["tool_calls"]
            .as_array()
            .map(|calls| calls.iter().filter_map(|c| c["id"].as_str()).collect())
            .unwrap_or_default();
        if role(i) == Some("assistant") && !calls.is_empty() {
            let mut unanswered: Vec<&str> = calls.clone();
            let mut answered = HashSet::new();
            let mut j = i + 1;
            while role(j) == Some("tool") {
                let id = messages[j]["tool_call_id"].as_str().unwrap_or_default();
                if !calls.contains(&id) {
                    return Some(refuse(
                        format!(
                            "Invalid parameter: 'tool_call_id' of '{id}' not found in \
                             'tool_calls' of previous message."
                        ),
                        format!("messages.[{j}].tool_call_id"),
                    ));
                }
                answered.insert(id);
                j += 1;
            }
            unanswered.retain(|id| !answered.contains(id));
            if !unanswered.is_empty() {
                let param = if j < messages.len() {
                    format!("messages.[{j}].role")
                } else {
                    "messages".to_owned()
                };
                return Some(refuse(
                    format!(
                        "An assistant message with 'tool_calls' must be followed by tool \
                         messages responding to each 'tool_call_id'. The following \
                         tool_call_ids did not have response messages: {}",
                        unanswered.join(", ")
                    ),
                    param,
                ));
            }
            i = j;
        } else if role(i) == Some("tool") {
            return Some(refuse(
                "Invalid parameter: messages with role 'tool' must be a response to a \
                 preceeding message with 'tool_calls'."
                    .to_owned(),
                format!("messages.[{i}].role"),
            ));
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(messages: Value) -> Option<(String, String)> {
        let messages = messages.as_array().cloned();
        pairing_error(messages.as_ref()).map(|body| {
            (
                body["error"]["message"].as_str().unwrap().to_owned(),
                body["error"]["param"].as_str().unwrap().to_owned(),
            )
        })
    }

    fn call(id: &str) -> Value {
        json!({"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}})
    }

    #[test]
    fn pairing_follows_openai() {
        let user = json!({"role": "user", "content": "hi"});
        let asks = |ids: &[&str]| {
            json!({"role": "assistant", "content": null,
                "tool_calls": ids.iter().map(|id| call(id)).collect::<Vec<_>>()})
        };
        let result = |id: &str| json!({"role": "tool", "tool_call_id": id, "content": "ok"});

        assert_eq!(
            error_of(json!([
                user,
                asks(&["call_a", "call_b"]),
                result("call_b"),
                result("call_a"),
                user
            ])),
            None
        );
        let (message, param) = error_of(json!([
            user,
            asks(&["call_a", "call_x"]),
            result("call_a"),
            user
        ]))
        .unwrap();
        assert_eq!(
            message,
            "An assistant message with 'tool_calls' must be followed by tool messages \
             responding to each 'tool_call_id'. The following tool_call_ids did not have \
             response messages: call_x"
        );
        assert_eq!(param, "messages.[3].role");
        let (_, param) = error_of(json!([user, asks(&["call_a"])])).unwrap();
        assert_eq!(param, "messages");
        let (message, param) = error_of(json!([user, result("call_a")])).unwrap();
        assert_eq!(
            message,
            "Invalid parameter: messages with role 'tool' must be a response to a preceeding \
             message with 'tool_calls'."
        );
        assert_eq!(param, "messages.[1].role");
        let (message, param) =
            error_of(json!([user, asks(&["call_a"]), result("call_z")])).unwrap();
        assert!(message.contains("'call_z' not found"), "{message}");
        assert_eq!(param, "messages.[2].tool_call_id");
    }

    #[test]
    fn arguments_are_split_in_three_on_char_boundaries() {
        assert_eq!(thirds("{\"a\":1}"), vec!["{\"", "a\"", ":1}"]);
        assert_eq!(thirds("éé"), vec!["", "é", "é"]);
        assert_eq!(thirds(""), vec!["", "", ""]);
        assert_eq!(words("Hello big world"), vec!["Hello ", "big ", "world"]);
    }
}
