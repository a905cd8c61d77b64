//! # conversation-llm-openai
//!
//! Titles and streamed replies for [`conversation_core`] from any OpenAI-compatible
//! chat-completions endpoint: OpenAI itself, Azure OpenAI, vLLM, Ollama, a llama.cpp
//! server, LiteLLM and other gateways.
//!
//! - [`OpenAiChatModel`] implements [`ChatModel`](conversation_core::ChatModel):
//!   streamed replies (SSE), tool-call deltas assembled into whole calls, finish
//!   reason and token usage.
//! - [`OpenAiTitleGenerator`] implements
//!   [`TitleGenerator`](conversation_core::TitleGenerator): a short, sanitised title
//!   from the first user message and reply.
//! - [`OpenAiConfig`] says where the endpoint is and how long to wait and retry;
//!   [`OpenAiChatModel::check`] checks it once at start ([`ModelCheck`]).
//! - Failures are [`conversation_core::Error::Model`] with a
//!   [`ModelErrorKind`](conversation_core::ModelErrorKind) and a message that says
//!   what to check; [`OpenAiError`], their source, has the mapping table.
//! - With the cargo feature `fake` (for tests only), the module `fake` is an in-process fake
//!   OpenAI server that other crates' tests can script.
//!
//! ## OpenAI
//!
//! ```no_run
//! use std::sync::Arc;
//! use conversation_core::{Conversations, Store};
//! use conversation_llm_openai::{OpenAiChatModel, OpenAiConfig};
//!
//! # fn demo(store: Arc<dyn Store>) -> Result<(), Box<dyn std::error::Error>> {
//! // OPENAI_API_KEY, and optionally OPENAI_MODEL and OPENAI_BASE_URL.
//! let config = OpenAiConfig::from_env()?;
//! // Or explicitly: OpenAiConfig::openai(key, "gpt-4o").
//! let model = OpenAiChatModel::new(config)?;
//! let titles = model.title_generator().with_model("gpt-4o-mini");
//! let service = Conversations::builder(store)
//!     .title_generator(Arc::new(titles))
//!     .chat_model(Arc::new(model))
//!     .build();
//! // service.reply(&scope, id, NewMessage::user("…"), tools).await? streams the
//! // reply and stores it once complete.
//! # let _ = service;
//! # Ok(()) }
//! ```
//!
//! ## A local server (Ollama, vLLM, llama.cpp)
//!
//! No key is needed; the base URL ends in `/v1`. Local models can be slow to load,
//! so the wait for the first byte is raised here. An empty model name means "the
//! first model the server lists" (what [`OpenAiConfig::from_env`] leaves for any
//! server but OpenAI's when `OPENAI_MODEL` is unset).
//!
//! ```no_run
//! use std::time::Duration;
//! use conversation_llm_openai::{OpenAiChatModel, OpenAiConfig, OpenAiTitleGenerator};
//!
//! # fn demo() -> Result<(), conversation_llm_openai::OpenAiError> {
//! let config = OpenAiConfig::local("http://localhost:11434/v1", "llama3.2")
//!     .with_request_timeout(Duration::from_secs(120))
//!     .with_max_retries(1);
//! let model = OpenAiChatModel::new(config.clone())?;
//! let titles = OpenAiTitleGenerator::new(config)?;
//! # let _ = (model, titles);
//! # Ok(()) }
//! ```
//!
//! ## Checking the setup at start
//!
//! One `GET {base}/models`, and one log line whatever comes back:
//!
//! ```no_run
//! # async fn demo(model: conversation_llm_openai::OpenAiChatModel) {
//! match model.check().await {
//!     // "model \"llama3.2\" found on the server", "no model configured: using …",
//!     // "model \"gpt-4o-mini\" not found among the 3 the server lists (…)"
//!     Ok(check) if check.is_listed() => tracing::info!(%check, "model provider"),
//!     Ok(check) => tracing::warn!(%check, "model provider"),
//!     // upstream_unauthorized, upstream_not_found ("the base URL probably lacks
//!     // /v1"), upstream_unavailable, upstream_timeout…
//!     Err(error) => tracing::warn!(code = error.code(), %error, "model provider"),
//! }
//! # }
//! ```
//!
//! ## Azure OpenAI and gateways
//!
//! Only the base URL and headers differ: a query string on the base URL is kept,
//! and extra headers (treated as secrets) go with every request.
//!
//! ```no_run
//! # use conversation_llm_openai::OpenAiConfig;
//! let config = OpenAiConfig::new(
//!     "https://my-resource.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-10-21",
//!     "gpt-4o",
//! )
//! .with_header("api-key", "…");
//! ```
//!
//! ## Timeouts and retries
//!
//! Connecting is bounded by [`OpenAiConfig::DEFAULT_CONNECT_TIMEOUT`]; a title (not
//! streamed) by [`OpenAiConfig::DEFAULT_REQUEST_TIMEOUT`] per attempt. A streamed
//! reply is bounded by the same timeout until its headers arrive, then by
//! [`OpenAiConfig::DEFAULT_STREAM_IDLE_TIMEOUT`] between chunks and by the generous
//! [`OpenAiConfig::DEFAULT_STREAM_TOTAL_TIMEOUT`] overall: a total timeout short
//! enough to catch a dead server would cut long, healthy replies.
//!
//! A reply's retries and timeouts are one budget when the request carries a
//! [`start_deadline`](conversation_core::ChatRequest::start_deadline): no attempt
//! starts after it, each attempt's timeout is cut to the time left, no backoff
//! sleeps past it, and a server asking (`Retry-After`) to wait past it fails the
//! request at once with `RateLimited` (or `Unavailable` for a 503) carrying the
//! server's `retry_after`. An attempt cut by the deadline fails with `Timeout`; when
//! no retry fits, the last failure is returned as it is. With the defaults, two whole
//! attempts fit a 120 s deadline. Dropping the future or the stream closes the
//! connection at once and no retry follows.
//!
//! HTTP 408, 409, 429 and 5xx, timeouts and connection errors are retried up to
//! [`OpenAiConfig::DEFAULT_MAX_RETRIES`] times, with exponential backoff from
//! [`OpenAiConfig::DEFAULT_BACKOFF_BASE`] capped at
//! [`OpenAiConfig::DEFAULT_BACKOFF_MAX`] and jittered, or after the server's
//! `retry-after-ms` / `Retry-After` when it sends one, waited up to
//! [`OpenAiConfig::DEFAULT_RETRY_AFTER_MAX`]. 400, 401, 403, 404, an exhausted quota
//! (`insufficient_quota`) and `context_length_exceeded` are never retried. A
//! streamed reply is retried only until its first byte: after that, a failure ends
//! the stream with an error.
//!
//! ## Model output
//!
//! Text is made storable before it is passed on: NUL (U+0000), which PostgreSQL and
//! therefore core refuse, becomes U+FFFD in content and tool-call arguments (strings
//! and keys); a UTF-16 surrogate pair a server split across two chunks (`"\ud83d"`,
//! then `"\ude00"`) is joined into its character, and a half that never finds its
//! pair becomes U+FFFD. Neither fails a reply.
//!
//! ## TLS
//!
//! How HTTPS is done is the host's choice, as a cargo feature:
//!
//! | feature | TLS by |
//! |---|---|
//! | `tls-rustls-ring` (default) | rustls with the *ring* crypto provider: a small C and assembly build |
//! | `tls-rustls-aws-lc-rs` | rustls with aws-lc-rs (FIPS-capable; builds aws-lc-sys, a large C library) |
//! | `tls-native-tls` | the platform's library: OpenSSL on Linux, Security.framework, SChannel |
//!
//! Every backend checks the server's certificate against the platform's roots plus
//! those given to [`OpenAiConfig::with_root_certificate`] (a private CA). With
//! rustls, a crypto provider the host installed for the whole process
//! (`rustls::crypto::CryptoProvider::install_default`) is used instead of the
//! feature's; none is installed by this crate. To choose another backend than the
//! default, turn default features off (`default-features = false, features =
//! ["tls-native-tls"]`); when several are on, native-tls wins over rustls, and
//! aws-lc-rs over *ring*. With none, the client speaks plain HTTP only (a local
//! server): an `https` base URL or a root certificate is then refused with
//! [`OpenAiError::Config`] when the client is built.
//!
//! The rustls features build reqwest with `rustls-no-provider` (reqwest's own
//! `rustls` feature would bring aws-lc-rs), so reqwest itself has no crypto provider:
//! in a program whose own reqwest has no TLS feature, a reqwest client built there
//! without one (`reqwest::Client::new()`) panics unless a process-wide provider is
//! installed first, e.g. `rustls::crypto::ring::default_provider().install_default()`
//! at start-up. A program whose reqwest keeps its default features, or uses
//! native-tls, is not affected; this crate's own client never depends on it.
//!
//! ## Secrets
//!
//! The API key and extra header values never appear in `Debug` output, are sent as
//! headers marked sensitive, are never logged, and are replaced by `[redacted]` in
//! any error message a server sends back. So are the base URL's user name, password
//! and query values (`?api_key=…`): [`OpenAiConfig`]'s `Debug` and `Display` redact
//! them, and no error, log line or message carries the request's URL (transport
//! errors are stripped of it, URLs a server echoes become `[url]`).
//!
//! The crate emits `tracing` events (`warn` on each retry and failed stream,
//! `info` when it chooses a model, `debug` per request) and never installs a
//! subscriber.

mod chat;
mod check;
mod config;
mod error;
mod http;
mod stream;
mod text;
mod title;
mod tls;
mod wire;

#[cfg(feature = "fake")]
pub mod fake;

pub use chat::OpenAiChatModel;
pub use check::ModelCheck;
pub use config::OpenAiConfig;
pub use error::{OpenAiError, TimeoutPhase};
pub use title::OpenAiTitleGenerator;
