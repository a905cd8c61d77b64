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
//!   [`OpenAiError`] says what went wrong and converts into
//!   [`conversation_core::Error`] (see its table).
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
//! so the wait for the first byte is raised here.
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
//! ## Secrets
//!
//! The API key and extra header values never appear in `Debug` output, are sent as
//! headers marked sensitive, are never logged, and are replaced by `[redacted]` in
//! any error message a server sends back.
//!
//! The crate emits `tracing` events (`warn` on each retry and failed stream,
//! `debug` per request) and never installs a subscriber.

mod chat;
mod config;
mod error;
mod http;
mod stream;
mod title;
mod wire;

pub use chat::OpenAiChatModel;
pub use config::OpenAiConfig;
pub use error::{OpenAiError, TimeoutPhase};
pub use title::OpenAiTitleGenerator;
