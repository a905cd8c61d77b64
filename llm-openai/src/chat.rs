//! [`OpenAiChatModel`]: streamed chat completions as a [`ChatModel`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conversation_core::{ChatModel, ChatRequest, Error, ModelErrorKind, ReplyStream, Result};
use reqwest::header::CONTENT_TYPE;
use tokio::time::Instant;
use tracing::debug;

use crate::http::{Failure, Http, MODELS_TIMEOUT};
use crate::stream::reply_stream;
use crate::wire::{ChatBody, StreamOptions, WireMessage, WireTool};
use crate::{ModelCheck, OpenAiConfig, OpenAiError, OpenAiTitleGenerator, TimeoutPhase};

/// A [`ChatModel`] that streams replies from an OpenAI-compatible
/// `/chat/completions` endpoint.
///
/// Text deltas are passed on as they arrive; tool-call deltas are assembled and
/// passed on as complete [`ToolCall`](conversation_core::ToolCall)s just before the
/// single [`ReplyEvent::Finished`](conversation_core::ReplyEvent::Finished), which
/// carries the finish reason and, when the server reports it, the token usage.
///
/// Failures before the first event (refusals, rate limits, timeouts, connection
/// errors) are retried as [`OpenAiConfig`] says, within the request's
/// [`start_deadline`](ChatRequest::start_deadline) (no attempt starts after it, each
/// is cut to the time left, no backoff crosses it, and a `Retry-After` past it fails
/// at once with that `retry_after`), and then returned by
/// [`ChatModel::stream_reply`]. Once the stream has started nothing is retried: an
/// error event from the server, a broken connection, a stall longer than the idle
/// timeout or a body that ends before the model finished yields one `Err` item and
/// ends the stream, so a partial reply is never passed off as complete. Dropping the
/// future or the stream closes the connection at once and stops the retries.
///
/// Errors are [`Error::Model`](conversation_core::Error::Model): see
/// [`OpenAiError`] for the kinds. A server that refuses `stream_options` is asked
/// again without it, once, and never again by this model (its replies then carry no
/// token usage). With no model configured, the first one the server lists is used
/// (see [`Self::check`]). Text is made storable: NUL becomes U+FFFD and surrogate
/// pairs split across chunks are joined.
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

    /// The model asked: the configured one, or the one chosen from the server's
    /// list; `None` while neither is known (before [`Self::check`] or the first
    /// request).
    pub fn model(&self) -> Option<&str> {
        self.http.known_model()
    }

    /// How long [`Self::check`] waits for the model list.
    pub const CHECK_TIMEOUT: Duration = MODELS_TIMEOUT;

    /// Checks the setup once, e.g. at start: one `GET {base}/models` (a second,
    /// `GET {base}/v1/models`, only when the first is 404), within
    /// [`Self::CHECK_TIMEOUT`], never retried. When no model is configured, the
    /// first one listed is chosen here and used by every request from then on.
    ///
    /// Log the outcome as one line: `Ok` says whether the model is listed
    /// ([`ModelCheck`]'s `Display`); `Err` is the [`Error::Model`](conversation_core::Error::Model)
    /// a reply would get, with what to check: `Unauthorized` (the key), `NotFound`
    /// (the base URL; when the server answers at `{base}/v1/models`, the message
    /// says the base URL probably lacks `/v1`), `Unavailable` or `Timeout` (the
    /// server is unreachable). Some servers list no models at all (an Azure
    /// deployment URL is one): `NotFound` from them does not mean replies will fail.
    ///
    /// # Errors
    /// [`Error::Model`](conversation_core::Error::Model) as above; also `NotFound`
    /// when no model is configured and the server lists none.
    pub async fn check(&self) -> Result<ModelCheck> {
        let http = &self.http;
        let phase = TimeoutPhase::Response;
        let listed = match http
            .list_models(http.models_url(), Self::CHECK_TIMEOUT, phase)
            .await
        {
            Ok(listed) => listed,
            Err(failure) => {
                let not_found = matches!(failure.error, OpenAiError::Api { status: 404, .. });
                if not_found
                    && let Some(v1) = http.v1_models_url()
                    && http
                        .list_models(v1, Self::CHECK_TIMEOUT, phase)
                        .await
                        .is_ok()
                {
                    return Err(Error::Model {
                        kind: ModelErrorKind::NotFound,
                        message: "the base URL probably lacks /v1: the server lists its \
                                  models at <base URL>/v1/models, not at <base URL>/models. \
                                  Add /v1 to the base URL."
                            .to_owned(),
                        retry_after: None,
                        source: Some(Box::new(failure.error)),
                    });
                }
                return Err(failure.into_error());
            }
        };
        let configured = http.known_model().map(ToOwned::to_owned);
        match configured {
            Some(model) if listed.contains(&model) => Ok(ModelCheck::Listed { model }),
            Some(model) => Ok(ModelCheck::NotListed { model, listed }),
            None => match http.choose_model(&listed) {
                Some(model) => Ok(ModelCheck::Chosen {
                    model: model.to_owned(),
                    listed,
                }),
                None => Err(Error::model(
                    ModelErrorKind::NotFound,
                    "no model is configured and the server lists none. Set the model name \
                     (OPENAI_MODEL).",
                )),
            },
        }
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
        let deadline = request.start_deadline;
        let model = self.http.model(deadline).await?;
        let body = |include_usage: bool| ChatBody {
            model,
            messages: request
                .messages
                .iter()
                .map(WireMessage::from_message)
                .collect(),
            stream: true,
            stream_options: include_usage.then_some(StreamOptions {
                include_usage: true,
            }),
            tools: request.tools.iter().map(WireTool::from).collect(),
            temperature: None,
            max_tokens: None,
        };
        let include_usage = self.http.stream_usage();
        debug!(
            model,
            messages = request.messages.len(),
            tools = request.tools.len(),
            "starting a streamed reply"
        );
        let response = match self.http.open_stream(&body(include_usage), deadline).await {
            Err(failure) if include_usage && failure.error.refuses_stream_options() => {
                self.http.refuse_stream_usage();
                self.http.open_stream(&body(false), deadline).await
            }
            other => other,
        }
        .map_err(Failure::into_error)?;
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
