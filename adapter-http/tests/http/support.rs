//! Shared test fixtures: the app under test, a request helper, a scripted chat model
//! and title generator, a loopback server and an SSE reader.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use conversation_adapter_http::{
    AllowedHosts, ApiState, HttpLimits, ReplyStreamEvent, ServeConfig, async_trait, router,
};
use conversation_core::testkit::{Call, Interceptor};
use conversation_core::{
    ChatModel, ChatRequest, ContextPolicy, Conversation, ConversationId, Conversations, Error,
    FinishReason, Message, MessageQuery, NewConversation, ReplyEvent, ReplyStream, Result, Scope,
    Store, TitleGenerator,
};
use conversation_store_memory::MemoryStore;
use futures::StreamExt as _;
use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use tower::ServiceExt as _;

/// Where the tests mount the router, as a host would.
pub(crate) const PREFIX: &str = "/api/v1/connections";

/// One step of a scripted reply.
pub(crate) enum Step {
    /// Yield this event.
    Event(ReplyEvent),
    /// Yield this error (the stream ends).
    Fail(Error),
    /// Wait until notified, then go on.
    WaitFor(Arc<Notify>),
    /// Never yield again.
    Hang,
}

/// A delta step.
pub(crate) fn delta(text: &str) -> Step {
    Step::Event(ReplyEvent::Delta {
        text: text.to_owned(),
    })
}

/// A finished step.
pub(crate) fn finished() -> Step {
    Step::Event(ReplyEvent::Finished {
        reason: FinishReason::Stop,
        usage: None,
    })
}

/// What the scripted model does on one call.
pub(crate) enum Script {
    /// Stream these steps; `dropped` fires (its sender is dropped) when the server drops
    /// the stream.
    Stream {
        steps: Vec<Step>,
        dropped: Option<oneshot::Sender<()>>,
    },
    /// Refuse to start.
    Refuse(Error),
    /// Never start (the call hangs).
    Stall,
    /// Panic in the call.
    Panic,
}

impl Script {
    /// Stream `steps`.
    pub(crate) fn steps(steps: Vec<Step>) -> Self {
        Script::Stream {
            steps,
            dropped: None,
        }
    }
}

/// A chat model that plays scripts in order and records the requests it got.
#[derive(Default)]
pub(crate) struct ScriptedModel {
    scripts: Mutex<VecDeque<Script>>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl fmt::Debug for ScriptedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedModel").finish_non_exhaustive()
    }
}

impl ScriptedModel {
    /// Queues a script for the next call.
    pub(crate) fn push(&self, script: Script) {
        self.scripts.lock().unwrap().push_back(script);
    }

    /// Takes back the scripts no call used.
    pub(crate) fn take_unused(&self) {
        self.scripts.lock().unwrap().clear();
    }

    /// The requests received so far.
    pub(crate) fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait]
impl ChatModel for ScriptedModel {
    async fn stream_reply(&self, request: ChatRequest) -> Result<ReplyStream> {
        self.requests.lock().unwrap().push(request);
        let script = self
            .scripts
            .lock()
            .unwrap()
            .pop_front()
            .expect("the test queued no script for this call");
        let (steps, dropped) = match script {
            Script::Refuse(error) => return Err(error),
            Script::Stall => futures::future::pending().await,
            Script::Panic => panic!("the scripted model panics"),
            Script::Stream { steps, dropped } => (steps, dropped),
        };
        let state = (VecDeque::from(steps), dropped);
        Ok(
            futures::stream::unfold(state, |(mut steps, dropped)| async move {
                loop {
                    match steps.pop_front()? {
                        Step::Event(event) => return Some((Ok(event), (steps, dropped))),
                        Step::Fail(error) => return Some((Err(error), (VecDeque::new(), dropped))),
                        Step::WaitFor(notify) => notify.notified().await,
                        Step::Hang => futures::future::pending::<()>().await,
                    }
                }
            })
            .boxed(),
        )
    }
}

/// A title generator that answers a fixed title and counts its calls.
#[derive(Debug, Default)]
pub(crate) struct FixedTitles {
    pub(crate) calls: Mutex<u32>,
}

pub(crate) const GENERATED_TITLE: &str = "Largest tables by size";

#[async_trait]
impl TitleGenerator for FixedTitles {
    async fn generate_title(&self, _messages: &[Message]) -> Result<String> {
        *self.calls.lock().unwrap() += 1;
        Ok(GENERATED_TITLE.to_owned())
    }
}

/// The app under test: the router nested under [`PREFIX`] over a memory store.
pub(crate) struct TestApp {
    pub(crate) router: Router,
    pub(crate) service: Conversations,
    pub(crate) model: Arc<ScriptedModel>,
    pub(crate) titles: Arc<FixedTitles>,
}

/// Options of [`TestApp`].
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) limits: Option<HttpLimits>,
    pub(crate) policy: Option<ContextPolicy>,
    pub(crate) no_model: bool,
    pub(crate) authorizer: Option<Arc<dyn conversation_adapter_http::ScopeAuthorizer>>,
    pub(crate) store: Option<Arc<dyn Store>>,
    pub(crate) allowed_hosts: Option<AllowedHosts>,
    pub(crate) run_limits: Option<conversation_core::RunLimits>,
    pub(crate) toolbox: Option<Arc<dyn conversation_core::Toolbox>>,
    /// A real model instead of the scripted one (the fake OpenAI server's client).
    pub(crate) chat_model: Option<Arc<dyn ChatModel>>,
}

impl TestApp {
    pub(crate) fn new() -> Self {
        Self::with(Options::default())
    }

    pub(crate) fn with(options: Options) -> Self {
        let store = options
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::new()) as Arc<dyn Store>);
        let titles = Arc::new(FixedTitles::default());
        let model = Arc::new(ScriptedModel::default());
        let mut builder = Conversations::builder(store).title_generator(titles.clone());
        if let Some(policy) = options.policy {
            builder = builder.context_policy(policy);
        }
        if let Some(chat_model) = options.chat_model {
            builder = builder.chat_model(chat_model);
        } else if !options.no_model {
            builder = builder.chat_model(model.clone());
        }
        if let Some(limits) = options.run_limits {
            builder = builder.run_limits(limits);
        }
        if let Some(toolbox) = options.toolbox {
            builder = builder.toolbox(toolbox);
        }
        let service = builder.build();
        let mut state = ApiState::new(service.clone());
        if let Some(limits) = options.limits {
            state = state.with_limits(limits);
        }
        if let Some(authorizer) = options.authorizer {
            state = state.with_authorizer(authorizer);
        }
        if let Some(hosts) = options.allowed_hosts {
            state = state.with_allowed_hosts(hosts);
        }
        let router = Router::new().nest(PREFIX, router(state));
        Self {
            router,
            service,
            model,
            titles,
        }
    }

    /// Sends a request through the router (no network).
    pub(crate) async fn send(&self, request: TestRequest) -> TestResponse {
        TestResponse::read(self.open(request).await).await
    }

    /// Sends a request without the `Host` header [`TestRequest`] adds by default.
    pub(crate) async fn send_without_host(&self, request: TestRequest) -> TestResponse {
        let mut request = request.build();
        request.headers_mut().remove(header::HOST);
        let response = self.router.clone().oneshot(request).await.unwrap();
        TestResponse::read(response).await
    }

    /// Sends a request and returns the response with its body unread (a reply stream
    /// stays open until the response is dropped).
    pub(crate) async fn open(&self, request: TestRequest) -> axum::response::Response {
        self.router
            .clone()
            .oneshot(request.build())
            .await
            .expect("the router is infallible")
    }

    /// Creates a conversation through the service.
    pub(crate) async fn conversation(&self, scope: &str) -> Conversation {
        self.service
            .create(&scope_of(scope), NewConversation::new())
            .await
            .unwrap()
    }

    /// The stored messages of a conversation, oldest first.
    pub(crate) async fn messages(&self, scope: &str, id: ConversationId) -> Vec<Message> {
        self.service
            .messages(&scope_of(scope), id, &MessageQuery::after(0).limit(200))
            .await
            .unwrap()
            .items
    }

    /// The stored conversation.
    pub(crate) async fn stored(&self, scope: &str, id: ConversationId) -> Conversation {
        self.service.get(&scope_of(scope), id).await.unwrap()
    }

    /// Serves the router on a loopback port until the test ends.
    ///
    /// It also gives rustls a process-wide crypto provider, which the tests' reqwest
    /// clients need in a workspace build (see the comment inside).
    pub(crate) async fn serve(&self) -> SocketAddr {
        self.serve_with(ServeConfig::default(), std::future::pending())
            .await
            .0
    }

    /// Serves the router with `config` until `stop` completes; the address and the
    /// task that ends when the server has stopped.
    pub(crate) async fn serve_with(
        &self,
        config: ServeConfig,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        // In a workspace build, conversation-llm-openai's default TLS feature gives
        // reqwest a rustls backend without a crypto provider of its own
        // (`rustls-no-provider`): building any reqwest client then panics unless the
        // process has a default one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let served = tokio::spawn(conversation_adapter_http::serve(
            listener,
            self.router.clone(),
            config,
            stop,
        ));
        (address, served)
    }
}

pub(crate) fn scope_of(text: &str) -> Scope {
    Scope::new(text).unwrap()
}

/// Percent-encodes every byte but unreserved characters, for a query value.
pub(crate) fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A request to the app; paths are given without [`PREFIX`].
pub(crate) struct TestRequest {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Body,
}

impl TestRequest {
    pub(crate) fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: Body::empty(),
        }
    }

    pub(crate) fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    pub(crate) fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }

    pub(crate) fn post(path: impl Into<String>, json: Value) -> Self {
        Self::new(Method::POST, path).json(json)
    }

    pub(crate) fn patch(path: impl Into<String>, json: Value) -> Self {
        Self::new(Method::PATCH, path).json(json)
    }

    /// A JSON body with its content type.
    pub(crate) fn json(self, json: Value) -> Self {
        self.header("content-type", "application/json")
            .raw_body(serde_json::to_vec(&json).unwrap())
    }

    pub(crate) fn raw_body(mut self, body: impl Into<Body>) -> Self {
        self.body = body.into();
        self
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn method(&self) -> &Method {
        &self.method
    }

    fn build(self) -> Request<Body> {
        let mut builder = Request::builder()
            .method(self.method)
            .uri(format!("{PREFIX}{}", self.path));
        // As a client on this machine would send it, unless the test sends its own.
        if !self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            builder = builder.header("host", "localhost:3000");
        }
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder.body(self.body).unwrap()
    }
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct TestResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) text: String,
}

impl TestResponse {
    pub(crate) async fn read(response: axum::response::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let response = Self {
            status,
            headers,
            text: String::from_utf8(bytes.to_vec()).unwrap(),
        };
        response.check_invariants();
        response
    }

    /// What every response promises: `nosniff`, and a problem document for every
    /// error.
    fn check_invariants(&self) {
        assert_eq!(
            self.headers
                .get("x-content-type-options")
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{self:?}"
        );
        if self.status.is_client_error() || self.status.is_server_error() {
            assert_eq!(self.content_type(), "application/problem+json", "{self:?}");
            let problem = self.json();
            assert_eq!(problem["status"], self.status.as_u16(), "{self:?}");
            for key in ["type", "title", "detail", "code"] {
                assert!(problem[key].is_string(), "{key} missing in {problem}");
            }
        }
    }

    pub(crate) fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_default()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub(crate) fn expect(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        if self.text.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts the status and returns the body as text.
    #[track_caller]
    pub(crate) fn expect_text(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        self.text.clone()
    }

    /// Asserts a problem with `status` and `code`, returning it.
    #[track_caller]
    pub(crate) fn expect_problem(&self, status: StatusCode, code: &str) -> Value {
        let problem = self.expect(status);
        assert_eq!(problem["code"], code, "{problem}");
        problem
    }

    /// The SSE events of a complete `text/event-stream` body.
    pub(crate) fn events(&self) -> Vec<SseEvent> {
        assert_eq!(self.content_type(), "text/event-stream", "{}", self.text);
        let mut reader = SseReader::default();
        let mut events = reader.push(&self.text);
        events.extend(reader.push("\n\n"));
        events
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SseEvent {
    pub(crate) event: String,
    pub(crate) data: Value,
    /// The SSE `id`, when the event has one.
    pub(crate) id: Option<u64>,
}

/// Splits a text/event-stream into events as chunks arrive.
#[derive(Default)]
pub(crate) struct SseReader {
    buffer: String,
}

impl SseReader {
    /// Adds a chunk; returns the events it completed (keep-alive comments skipped).
    pub(crate) fn push(&mut self, chunk: &str) -> Vec<SseEvent> {
        self.buffer.push_str(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let frame: String = self.buffer.drain(..end + 2).collect();
            let mut event = String::from("message");
            let mut data = Vec::new();
            let mut id = None;
            for line in frame.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    id = Some(value.trim().parse().expect("event ids are numbers"));
                } else if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim_start().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            if data.is_empty() {
                continue;
            }
            let data = data.join("\n");
            // Every event the server sends is one the documented protocol describes.
            let parsed = ReplyStreamEvent::parse(&event, &data)
                .unwrap_or_else(|e| panic!("undocumented event {event:?} {data:?}: {e}"));
            assert_eq!(parsed.name(), event);
            events.push(SseEvent {
                event,
                data: serde_json::from_str(&data).unwrap(),
                id,
            });
        }
        events
    }
}

/// The names of `events`, in order.
pub(crate) fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

/// Delays every append by the given time: a window in which a write is in flight.
#[derive(Debug)]
pub(crate) struct SlowAppends(pub(crate) std::time::Duration);

#[async_trait]
impl Interceptor for SlowAppends {
    async fn before(&self, _: Option<&Scope>, call: Call<'_>) -> Result<()> {
        if let Call::AppendMessages(..) = call {
            tokio::time::sleep(self.0).await;
        }
        Ok(())
    }
}

/// Fails the store's health check, as a store whose file went away does.
#[derive(Debug)]
pub(crate) struct Unhealthy(pub(crate) &'static str);

#[async_trait]
impl Interceptor for Unhealthy {
    async fn before(&self, _: Option<&Scope>, call: Call<'_>) -> Result<()> {
        match call {
            Call::Health => Err(Error::unavailable(self.0, "disk I/O error (code 10)")),
            _ => Ok(()),
        }
    }
}
