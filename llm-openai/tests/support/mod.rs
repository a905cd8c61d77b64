//! An in-process fake of an OpenAI-compatible server on 127.0.0.1, speaking the real
//! chat-completions wire format (JSON answers, SSE streams), playing a script of
//! replies and recording every request it sees.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// How a scripted SSE body ends after its chunks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending {
    /// The body ends normally.
    Close,
    /// The connection is torn down in the middle of the body.
    Drop,
    /// Nothing more is sent, and the connection stays open.
    Stall,
}

#[derive(Debug, Clone)]
enum Payload {
    Text(String),
    Sse(Vec<String>, Ending),
    Hang,
}

/// One scripted reply.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    payload: Payload,
}

impl Reply {
    /// A JSON body with `status`.
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            payload: Payload::Text(body.to_string()),
        }
    }

    /// Any body with `status` and `content_type`.
    pub(crate) fn text(status: u16, content_type: &str, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            payload: Payload::Text(body.into()),
        }
    }

    /// An OpenAI-style error body.
    pub(crate) fn error(status: u16, kind: &str, code: Option<&str>, message: &str) -> Self {
        Self::json(
            status,
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
        )
    }

    /// A successful non-streamed completion whose message is `content`.
    pub(crate) fn completion(content: &str, finish_reason: &str) -> Self {
        Self::json(
            200,
            json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "test-model",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason
                }],
                "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}
            }),
        )
    }

    /// An SSE body of raw event blocks (each already ending in a blank line).
    pub(crate) fn sse(events: Vec<String>, ending: Ending) -> Self {
        Self {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/event-stream".into()),
                ("cache-control".into(), "no-cache".into()),
            ],
            payload: Payload::Sse(events, ending),
        }
    }

    /// A short successful stream: "Hello" and a `stop`.
    pub(crate) fn hello_stream() -> Self {
        Self::sse(
            vec![
                chunk(json!({"role": "assistant", "content": ""}), None),
                chunk(json!({"content": "Hello"}), None),
                chunk(json!({}), Some("stop")),
                done(),
            ],
            Ending::Close,
        )
    }

    /// No answer at all: the request is held open.
    pub(crate) fn hang() -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            payload: Payload::Hang,
        }
    }

    /// Adds a response header.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// `data: <chat.completion.chunk>\n\n` with one choice carrying `delta`.
pub(crate) fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    data(&json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    }))
}

/// `data: <value>\n\n`.
pub(crate) fn data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// `data: [DONE]\n\n`.
pub(crate) fn done() -> String {
    "data: [DONE]\n\n".to_owned()
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// Path and query.
    pub(crate) uri: String,
    /// The request headers.
    pub(crate) headers: HeaderMap,
    /// The body as JSON (`null` when it was not JSON).
    pub(crate) body: Value,
}

impl Seen {
    /// A header's value as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
}

/// The running fake server. It lives until the test's runtime ends.
pub(crate) struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeServer {
    /// Starts a server that answers its requests with `script`, in order; a request
    /// beyond the script gets a 418, which no client retries.
    pub(crate) async fn start(script: Vec<Reply>) -> Self {
        let shared = Arc::new(Shared {
            script: Mutex::new(script.into()),
            seen: Mutex::default(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests arrived.
    pub(crate) fn requests(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }

    /// The requests, in arrival order.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.seen.lock().unwrap().push(Seen {
        uri: uri.to_string(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let next = shared.script.lock().unwrap().pop_front();
    let Some(reply) = next else {
        return Response::builder()
            .status(StatusCode::IM_A_TEAPOT)
            .body(Body::from("no scripted reply left"))
            .unwrap();
    };
    let body = match reply.payload {
        Payload::Text(text) => Body::from(text),
        Payload::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Body::empty()
        }
        Payload::Sse(events, ending) => {
            let events = futures::stream::iter(events.into_iter().map(Ok::<_, std::io::Error>));
            let tail = match ending {
                Ending::Close => futures::stream::empty().boxed(),
                Ending::Drop => futures::stream::once(async {
                    // Let the chunks before reach the client before tearing down.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(std::io::Error::other("connection dropped by the test"))
                })
                .boxed(),
                Ending::Stall => futures::stream::pending().boxed(),
            };
            Body::from_stream(events.chain(tail))
        }
    };
    let mut response = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap())
        .body(body)
        .unwrap();
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    response
}

/// A TCP listener on 127.0.0.1 that accepts connections and closes them at once,
/// counting them: a server whose connections always break.
pub(crate) struct ClosingListener {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl ClosingListener {
    /// Starts it.
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        Self { addr, accepted }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// How many connections were accepted.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}
