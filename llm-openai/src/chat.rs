//! [`OpenAiChatModel`]: streamed chat completions as a [`ChatModel`].

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use conversation_core::{ChatModel, ChatRequest, ReplyStream, Result};
use reqwest::header::CONTENT_TYPE;
use tokio::time::Instant;
use tracing::debug;

use crate::http::Http;
use crate::stream::reply_stream;
use crate::wire::{ChatBody, StreamOptions, WireMessage, WireTool};
use crate::{OpenAiConfig, OpenAiError, OpenAiTitleGenerator};

/// A [`ChatModel`] that streams replies from an OpenAI-compatible
/// `/chat/completions` endpoint.
///
/// Text deltas are passed on as they arrive; tool-call deltas are assembled and
/// passed on as complete [`ToolCall`](conversation_core::ToolCall)s just before the
/// single [`ReplyEvent::Finished`](conversation_core::ReplyEvent::Finished), which
/// carries the finish reason and, when the server reports it, the token usage.
///
/// Failures before the first event (refusals, rate limits, timeouts, connection
/// errors) are retried as [`OpenAiConfig`] says and then returned by
/// [`ChatModel::stream_reply`]. Once the stream has started nothing is retried: an
/// error event from the server, a broken connection, a stall longer than the idle
/// timeout or a body that ends before the model finished yields one `Err` item and
/// ends the stream, so a partial reply is never passed off as complete.
///
/// Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct OpenAiChatModel {
    http: Arc<Http>,
}

impl OpenAiChatModel {
    /// A chat model for `config`.
    ///
    /// # Errors
    /// [`OpenAiError::Config`] for an unusable base URL, header, key or empty model
    /// name.
    pub fn new(config: OpenAiConfig) -> std::result::Result<Self, OpenAiError> {
        Ok(Self {
            http: Arc::new(Http::new(config)?),
        })
    }

    /// A title generator for the same endpoint and model, sharing this model's
    /// connection pool.
    pub fn title_generator(&self) -> OpenAiTitleGenerator {
        OpenAiTitleGenerator::from_http(self.http.clone())
    }

    /// The configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.http.config
    }
}

impl fmt::Debug for OpenAiChatModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiChatModel")
            .field("config", &self.http.config)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ChatModel for OpenAiChatModel {
    async fn stream_reply(&self, request: ChatRequest) -> Result<ReplyStream> {
        let started = Instant::now();
        let config = &self.http.config;
        let body = ChatBody {
            model: &config.model,
            messages: request
                .messages
                .iter()
                .map(WireMessage::from_message)
                .collect(),
            stream: true,
            stream_options: config.stream_usage.then_some(StreamOptions {
                include_usage: true,
            }),
            tools: request.tools.iter().map(WireTool::from).collect(),
            temperature: None,
            max_tokens: None,
        };
        debug!(
            model = %config.model,
            messages = body.messages.len(),
            tools = body.tools.len(),
            "starting a streamed reply"
        );
        let response = self.http.open_stream(&body).await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if content_type.starts_with("application/json") {
            return Err(OpenAiError::Decode {
                message: "asked for a stream, the server answered with plain JSON".to_owned(),
            }
            .into());
        }
        Ok(reply_stream(response, self.http.clone(), started))
    }
}
