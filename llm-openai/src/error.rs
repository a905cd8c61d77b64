//! This crate's errors, and how they map onto `conversation_core::Error`.

use std::fmt;
use std::time::Duration;

use conversation_core::{BoxError, Error, ModelErrorKind};

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Establishing the connection.
    Connect,
    /// Waiting for the whole answer (non-streamed) or for the response headers
    /// (streamed).
    Response,
    /// Waiting for the next chunk of a streamed reply.
    Idle,
    /// The whole streamed reply took too long.
    Total,
    /// The request's start deadline
    /// ([`ChatRequest::start_deadline`](conversation_core::ChatRequest::start_deadline))
    /// passed before the reply started.
    StartDeadline,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connecting",
            TimeoutPhase::Response => "waiting for the response",
            TimeoutPhase::Idle => "waiting for the next chunk of the reply",
            TimeoutPhase::Total => "streaming the reply (total time)",
            TimeoutPhase::StartDeadline => "before the start deadline",
        })
    }
}

/// What went wrong talking to an OpenAI-compatible endpoint.
///
/// The model and title generator return [`conversation_core::Error::Model`] with a
/// [`ModelErrorKind`], a message safe to show to a person (what happened and what to
/// check; never a URL, query string, header or key) and the server's `retry_after`,
/// carrying this error as the source for logs (redacted too; downcast it to read the
/// status and code). The mapping ([`OpenAiError::kind`]):
///
/// | this error | kind | what the message says to check |
/// |---|---|---|
/// | `Api` 401 | `Unauthorized` | the API key |
/// | `Api` 403 | `Forbidden` | that the key may use the model (organisation, project, region) |
/// | `Api` 404 | `NotFound` | the base URL (it usually ends in `/v1`) and the model name |
/// | `RateLimited` (429) | `RateLimited`, with the server's `retry_after` | when to retry |
/// | `Api` with code `insufficient_quota` (any status) | `QuotaExceeded` | the plan and billing |
/// | `Api` 408, 409, 5xx; `Connection`; `Truncated` | `Unavailable` (with `Retry-After` when sent) | retry later |
/// | `Timeout` | `Timeout` | — |
/// | `Api` 400 and other 4xx, incl. `context_length_exceeded` and a server refusing `stream_options` | `InvalidRequest` | shorten the conversation; turn stream usage off |
/// | `Api` with code `content_filter`; `ContentFiltered` | `ContentFiltered` | — |
/// | `Decode`, `NoTitle`, `Api` 200 (an error inside a success) | `BadResponse` | — |
/// | `Stream` (an error event mid-stream) | by its code: `server_error` and the like → `Unavailable`, `rate_limit…` → `RateLimited`, `insufficient_quota` → `QuotaExceeded`, `content_filter` → `ContentFiltered`, else `BadResponse` | |
/// | `Config` | not a provider failure: `Error::InvalidInput` on `config` | |
///
/// A stream that ends cleanly before the model said why it stopped (`Truncated`) is
/// `Unavailable` rather than `BadResponse`: a proxy or load balancer closing an idle
/// connection ends a stream exactly so, and asking again usually works. A streamed
/// reply that the content filter stopped is not an error: it finishes with
/// [`FinishReason::ContentFilter`](conversation_core::FinishReason::ContentFilter)
/// and keeps the text sent before.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenAiError {
    /// The configuration cannot be used (bad URL or header).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// HTTP 429 other than an exhausted quota, after the retries ran out (or with a
    /// `Retry-After` past the start deadline).
    #[error("rate limited{}: {message}", retry_hint(*.retry_after))]
    RateLimited {
        /// How long the server asked to wait (`retry-after-ms` or `Retry-After`),
        /// uncapped, when it said.
        retry_after: Option<Duration>,
        /// The server's message.
        message: String,
    },

    /// The server refused the request with an HTTP error status.
    #[error("the server answered HTTP {status}{}: {message}", code_hint(code.as_deref()))]
    Api {
        /// The HTTP status.
        status: u16,
        /// The provider's error code (`code`, else `type`), e.g.
        /// `insufficient_quota`, `context_length_exceeded`, `invalid_api_key`.
        code: Option<String>,
        /// The server's message, or a short excerpt of a non-JSON body.
        message: String,
    },

    /// A wait ran out.
    #[error("timed out {phase}")]
    Timeout {
        /// Which wait.
        phase: TimeoutPhase,
    },

    /// The connection could not be made or broke.
    #[error("connection failed: {}", chain(source.as_ref()))]
    Connection {
        /// The transport's error (with no URL).
        #[source]
        source: BoxError,
    },

    /// The server's answer is not what the chat-completions format says.
    #[error("could not decode the server's answer: {message}")]
    Decode {
        /// What was wrong.
        message: String,
    },

    /// The server sent an error event in the middle of a streamed reply.
    #[error("the server reported an error during the reply{}: {message}", code_hint(code.as_deref()))]
    Stream {
        /// The provider's error code, if any.
        code: Option<String>,
        /// The server's message.
        message: String,
    },

    /// The stream ended before the model said why it stopped.
    #[error("the reply stream ended before the model finished")]
    Truncated,

    /// The provider's content filter stopped a non-streamed answer (a title).
    #[error("the provider's content filter stopped the answer")]
    ContentFiltered,

    /// The model answered, but with no usable title.
    #[error("no usable title: {reason}")]
    NoTitle {
        /// Why the answer was refused.
        reason: String,
    },
}

fn retry_hint(retry_after: Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |wait| {
        format!(" (retry after {} ms)", wait.as_millis())
    })
}

/// An error and its sources, joined: transports put the useful part (reset, refused,
/// closed early) in the source.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let part = source.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = source.source();
    }
    text
}

fn code_hint(code: Option<&str>) -> String {
    code.map_or_else(String::new, |code| format!(" ({code})"))
}

impl OpenAiError {
    /// Whether the same request may succeed if sent again: rate limits (but not an
    /// exhausted quota), HTTP 408, 409 and 5xx, timeouts and connection failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            OpenAiError::RateLimited { .. }
            | OpenAiError::Timeout { .. }
            | OpenAiError::Connection { .. } => true,
            OpenAiError::Api { status, code, .. } => {
                matches!(status, 408 | 409 | 429 | 500..=599) && !is_quota_code(code.as_deref())
            }
            _ => false,
        }
    }

    /// Whether the server said the context is longer than the model accepts.
    pub fn is_context_length_exceeded(&self) -> bool {
        match self {
            OpenAiError::Api {
                status: 400,
                code,
                message,
            } => {
                code.as_deref() == Some("context_length_exceeded")
                    || message.contains("maximum context length")
            }
            _ => false,
        }
    }

    /// Whether the server refused the `stream_options` parameter (older vLLM, Azure
    /// API versions and gateways do).
    pub(crate) fn refuses_stream_options(&self) -> bool {
        matches!(self, OpenAiError::Api { status: 400 | 422, message, .. } if message.contains("stream_options"))
    }

    /// The kind of [`conversation_core::Error::Model`] this becomes (see the table
    /// above); `None` for [`OpenAiError::Config`], which is not a provider failure.
    pub fn kind(&self) -> Option<ModelErrorKind> {
        Some(match self {
            OpenAiError::Config(_) => return None,
            OpenAiError::RateLimited { .. } => ModelErrorKind::RateLimited,
            OpenAiError::Api { status, code, .. } => match (status, code_kind(code.as_deref())) {
                (
                    _,
                    Some(kind @ (ModelErrorKind::QuotaExceeded | ModelErrorKind::ContentFiltered)),
                ) => kind,
                (401, _) => ModelErrorKind::Unauthorized,
                (403, _) => ModelErrorKind::Forbidden,
                (404, _) => ModelErrorKind::NotFound,
                (429, _) => ModelErrorKind::RateLimited,
                (408 | 409 | 500..=599, _) => ModelErrorKind::Unavailable,
                (400..=499, _) => ModelErrorKind::InvalidRequest,
                _ => ModelErrorKind::BadResponse,
            },
            OpenAiError::Timeout { .. } => ModelErrorKind::Timeout,
            OpenAiError::Connection { .. } | OpenAiError::Truncated => ModelErrorKind::Unavailable,
            OpenAiError::Stream { code, .. } => {
                code_kind(code.as_deref()).unwrap_or(ModelErrorKind::BadResponse)
            }
            OpenAiError::ContentFiltered => ModelErrorKind::ContentFiltered,
            OpenAiError::Decode { .. } | OpenAiError::NoTitle { .. } => ModelErrorKind::BadResponse,
        })
    }

    /// What happened and what to check, for a person: the server's own message is
    /// kept (with secrets and URLs removed), the request's URL never appears.
    fn summary(&self, kind: ModelErrorKind) -> String {
        let said = |message: &str| {
            let message = remove_urls(message);
            let message = message.trim().trim_end_matches('.');
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        };
        let status = |status: &u16, code: &Option<String>| match code {
            Some(code) => format!("HTTP {status}, {code}"),
            None => format!("HTTP {status}"),
        };
        match self {
            OpenAiError::Api {
                status: http,
                code,
                message,
            } => {
                let (what, check) = match kind {
                    ModelErrorKind::Unauthorized => {
                        ("the provider refused the credentials", "Check the API key.")
                    }
                    ModelErrorKind::Forbidden => (
                        "the provider refused access",
                        "Check that the API key may use this model (organisation, project, region).",
                    ),
                    ModelErrorKind::NotFound => (
                        "the provider does not know the endpoint or the model",
                        "Check the base URL (it usually ends in /v1) and the model name.",
                    ),
                    ModelErrorKind::QuotaExceeded => (
                        "the provider account's quota is used up",
                        "Check the plan and billing of the account.",
                    ),
                    ModelErrorKind::ContentFiltered => {
                        ("the provider's content filter refused the request", "")
                    }
                    ModelErrorKind::Unavailable | ModelErrorKind::RateLimited => {
                        ("the provider is unavailable", "Retry later.")
                    }
                    _ if self.is_context_length_exceeded() => (
                        "the conversation is longer than the model's context",
                        "Shorten the conversation or use a model with a longer context.",
                    ),
                    _ if self.refuses_stream_options() => (
                        "the server does not accept stream_options",
                        "Turn stream usage off (OpenAiConfig::with_stream_usage(false)).",
                    ),
                    ModelErrorKind::InvalidRequest => ("the provider refused the request", ""),
                    _ => ("the provider answered with an error", ""),
                };
                let check = if check.is_empty() {
                    String::new()
                } else {
                    format!(". {check}")
                };
                format!("{what} ({}){}{check}", status(http, code), said(message))
            }
            OpenAiError::RateLimited {
                retry_after,
                message,
            } => {
                let when = match retry_after {
                    Some(wait) => format!(". Retry after {} s.", wait.as_secs_f64().ceil()),
                    None => ". Retry later.".to_owned(),
                };
                format!(
                    "the provider is rate limiting requests (HTTP 429){}{when}",
                    said(message)
                )
            }
            OpenAiError::Timeout { phase } => match phase {
                TimeoutPhase::Connect => "could not connect to the provider in time".to_owned(),
                TimeoutPhase::Response => "the provider did not answer in time".to_owned(),
                TimeoutPhase::Idle => {
                    "the provider's reply stream went silent for too long".to_owned()
                }
                TimeoutPhase::Total => "the provider's reply took longer than allowed".to_owned(),
                TimeoutPhase::StartDeadline => {
                    "the time allowed to start the reply ran out before the provider answered"
                        .to_owned()
                }
            },
            OpenAiError::Connection { source } => format!(
                "could not reach the provider{}",
                said(&chain(source.as_ref()))
            ),
            OpenAiError::Stream { code, message } => format!(
                "the provider reported an error during the reply{}{}",
                code.as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default(),
                said(message)
            ),
            OpenAiError::Decode { message } => {
                format!("the provider's answer could not be read{}", said(message))
            }
            OpenAiError::Truncated => {
                "the provider's reply stream ended before the model finished".to_owned()
            }
            OpenAiError::ContentFiltered => {
                "the provider's content filter stopped the answer".to_owned()
            }
            OpenAiError::NoTitle { reason } => format!("no usable title{}", said(reason)),
            OpenAiError::Config(reason) => format!("invalid configuration{}", said(reason)),
        }
    }

    /// The core error, with `retry_after` (the server's wait, for any status) when
    /// this error does not carry its own.
    pub(crate) fn into_core(self, retry_after: Option<Duration>) -> Error {
        let Some(kind) = self.kind() else {
            let reason = match self {
                OpenAiError::Config(reason) => reason,
                other => other.to_string(),
            };
            return Error::invalid("config", reason);
        };
        let retry_after = match &self {
            OpenAiError::RateLimited {
                retry_after: own, ..
            } => own.or(retry_after),
            _ => retry_after,
        };
        Error::Model {
            kind,
            message: self.summary(kind),
            retry_after,
            source: Some(Box::new(self)),
        }
    }
}
pub(crate) fn is_quota_code(code: Option<&str>) -> bool {
    code == Some("insufficient_quota")
}

/// The kind a provider's error code names, when it names one: the codes of OpenAI,
/// Azure and the gateways that copy them.
fn code_kind(code: Option<&str>) -> Option<ModelErrorKind> {
    let code = code?;
    Some(match code {
        "insufficient_quota" => ModelErrorKind::QuotaExceeded,
        "content_filter" | "content_policy_violation" => ModelErrorKind::ContentFiltered,
        _ if code.contains("rate_limit") => ModelErrorKind::RateLimited,
        "server_error"
        | "internal_error"
        | "internal_server_error"
        | "api_error"
        | "service_unavailable"
        | "overloaded"
        | "overloaded_error"
        | "timeout" => ModelErrorKind::Unavailable,
        _ => return None,
    })
}

impl From<OpenAiError> for Error {
    fn from(error: OpenAiError) -> Self {
        error.into_core(None)
    }
}

/// `text` with every `http://` or `https://` URL replaced by `[url]`: a gateway's
/// message may echo the upstream URL it called, and a URL is never shown to a client.
pub(crate) fn remove_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["http://", "https://"]
        .iter()
        .filter_map(|scheme| rest.find(scheme))
        .min()
    {
        out.push_str(&rest[..at]);
        out.push_str("[url]");
        let url = &rest[at..];
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(url.len());
        // A sentence's closing punctuation is not part of the URL.
        let url = url[..end].trim_end_matches(['.', ',', ';', ':', ')', ']']);
        rest = &rest[at + url.len()..];
    }
    out.push_str(rest);
    out
}

/// The parts of an error body that matter, from any of the shapes servers use:
/// `{"error": {"message", "code", "type"}}` (OpenAI, vLLM), `{"error": "text"}`
/// (Ollama), `{"message": …}` or `{"detail": …}` (gateways, FastAPI).
pub(crate) fn error_parts(value: &serde_json::Value) -> Option<(Option<String>, String)> {
    let text = |v: Option<&serde_json::Value>| -> Option<String> {
        match v? {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
        if let Some(message) = error.as_str() {
            return Some((None, message.to_owned()));
        }
        let code = text(error.get("code")).or_else(|| text(error.get("type")));
        let message = text(error.get("message")).unwrap_or_else(|| error.to_string());
        return Some((code, message));
    }
    let message = text(value.get("message")).or_else(|| {
        value
            .get("detail")
            .filter(|d| !d.is_null())
            .map(|d| d.as_str().map_or_else(|| d.to_string(), ToOwned::to_owned))
    })?;
    Some((text(value.get("code")), message))
}

/// At most `max` characters of `text`, on one line.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one_line = one_line.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut cut: String = one_line.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

/// Replaces every secret in `text` with `[redacted]`, so that a server echoing the
/// key in an error message cannot leak it into logs.
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret.as_str(), "[redacted]")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind_and_message(error: OpenAiError) -> (ModelErrorKind, String) {
        match Error::from(error) {
            Error::Model { kind, message, .. } => (kind, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn core_kinds_follow_the_documented_table() {
        use ModelErrorKind::*;
        let api = |status, code: Option<&str>, message: &str| OpenAiError::Api {
            status,
            code: code.map(ToOwned::to_owned),
            message: message.into(),
        };
        let stream = |code: Option<&str>| OpenAiError::Stream {
            code: code.map(ToOwned::to_owned),
            message: "m".into(),
        };
        let cases = [
            (
                api(401, Some("invalid_api_key"), "Incorrect API key provided"),
                Unauthorized,
                "Check the API key",
            ),
            (
                api(
                    403,
                    Some("unsupported_country_region_territory"),
                    "Country not supported",
                ),
                Forbidden,
                "may use this model",
            ),
            (
                api(404, Some("model_not_found"), "The model `x` does not exist"),
                NotFound,
                "Check the base URL (it usually ends in /v1) and the model name",
            ),
            (
                api(404, None, "Invalid URL (POST /chat/completions)"),
                NotFound,
                "it usually ends in /v1",
            ),
            (
                OpenAiError::RateLimited {
                    retry_after: None,
                    message: "slow down".into(),
                },
                RateLimited,
                "Retry later",
            ),
            (
                api(
                    429,
                    Some("insufficient_quota"),
                    "You exceeded your current quota",
                ),
                QuotaExceeded,
                "billing",
            ),
            (
                api(408, None, "Request timed out"),
                Unavailable,
                "Retry later",
            ),
            (api(409, None, "Conflict"), Unavailable, "HTTP 409"),
            (
                api(500, Some("server_error"), "The server had an error"),
                Unavailable,
                "HTTP 500, server_error",
            ),
            (api(503, None, "Overloaded"), Unavailable, "Overloaded"),
            (
                OpenAiError::Connection {
                    source: "connection refused".into(),
                },
                Unavailable,
                "connection refused",
            ),
            (
                OpenAiError::Truncated,
                Unavailable,
                "ended before the model finished",
            ),
            (
                OpenAiError::Timeout {
                    phase: TimeoutPhase::Response,
                },
                Timeout,
                "did not answer in time",
            ),
            (
                OpenAiError::Timeout {
                    phase: TimeoutPhase::StartDeadline,
                },
                Timeout,
                "time allowed to start the reply ran out",
            ),
            (
                OpenAiError::Timeout {
                    phase: TimeoutPhase::Idle,
                },
                Timeout,
                "went silent",
            ),
            (
                api(
                    400,
                    Some("invalid_request_error"),
                    "Invalid value for 'tools'",
                ),
                InvalidRequest,
                "refused the request",
            ),
            (api(422, None, "unprocessable"), InvalidRequest, "HTTP 422"),
            (
                api(
                    400,
                    Some("context_length_exceeded"),
                    "This model's maximum context length is 128000 tokens",
                ),
                InvalidRequest,
                "longer than the model's context",
            ),
            (
                api(
                    400,
                    None,
                    "Unrecognized request argument supplied: stream_options",
                ),
                InvalidRequest,
                "with_stream_usage(false)",
            ),
            (
                api(400, Some("content_filter"), "The response was filtered"),
                ContentFiltered,
                "content filter",
            ),
            (
                OpenAiError::ContentFiltered,
                ContentFiltered,
                "content filter",
            ),
            (
                api(200, Some("weird"), "error inside a 200"),
                BadResponse,
                "HTTP 200",
            ),
            (
                OpenAiError::Decode {
                    message: "bad".into(),
                },
                BadResponse,
                "could not be read: bad",
            ),
            (
                OpenAiError::NoTitle {
                    reason: "empty".into(),
                },
                BadResponse,
                "no usable title",
            ),
            (
                stream(Some("server_error")),
                Unavailable,
                "during the reply",
            ),
            (
                stream(Some("rate_limit_exceeded")),
                RateLimited,
                "during the reply",
            ),
            (
                stream(Some("insufficient_quota")),
                QuotaExceeded,
                "during the reply",
            ),
            (
                stream(Some("content_filter")),
                ContentFiltered,
                "during the reply",
            ),
            (stream(None), BadResponse, "during the reply"),
        ];
        for (error, kind, says) in cases {
            let printed = error.to_string();
            let (got, message) = kind_and_message(error);
            assert_eq!(got, kind, "{printed}");
            assert!(message.contains(says), "{printed}: {message}");
        }
        let config = Error::from(OpenAiError::Config("bad url".into()));
        assert!(matches!(config, Error::InvalidInput { field, .. } if field == "config"));
    }

    #[test]
    fn the_source_can_be_downcast_and_retry_after_is_carried() {
        let core = Error::from(OpenAiError::RateLimited {
            retry_after: Some(Duration::from_secs(3)),
            message: "slow down".into(),
        });
        assert_eq!(core.retry_after(), Some(Duration::from_secs(3)));
        assert!(core.is_transient());
        let source = std::error::Error::source(&core).unwrap();
        let ours = source.downcast_ref::<OpenAiError>().unwrap();
        assert!(matches!(
            ours,
            OpenAiError::RateLimited { retry_after: Some(wait), .. } if *wait == Duration::from_secs(3)
        ));
        assert!(core.to_string().contains("Retry after 3 s"), "{core}");
        // A 503's Retry-After travels with it.
        let unavailable = OpenAiError::Api {
            status: 503,
            code: None,
            message: "busy".into(),
        }
        .into_core(Some(Duration::from_secs(7)));
        assert_eq!(unavailable.code(), "upstream_unavailable");
        assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn urls_are_removed_from_what_servers_say() {
        assert_eq!(
            remove_urls(
                "Incorrect API key. You can find your API key at https://platform.openai.com/account/api-keys."
            ),
            "Incorrect API key. You can find your API key at [url]."
        );
        assert_eq!(
            remove_urls("litellm: api_base=http://u:p@10.0.0.5:8000/v1?api_key=s (retry)"),
            "litellm: api_base=[url] (retry)"
        );
        assert_eq!(remove_urls("no link here"), "no link here");
    }

    #[test]
    fn error_bodies_of_every_shape_are_read() {
        let openai =
            json!({"error": {"message": "Quota", "type": "insufficient_quota", "code": null}});
        assert_eq!(
            error_parts(&openai),
            Some((Some("insufficient_quota".into()), "Quota".into()))
        );
        let coded = json!({"error": {"message": "Too long", "type": "invalid_request_error", "code": "context_length_exceeded"}});
        assert_eq!(
            error_parts(&coded),
            Some((Some("context_length_exceeded".into()), "Too long".into()))
        );
        let ollama = json!({"error": "model \"x\" not found"});
        assert_eq!(
            error_parts(&ollama),
            Some((None, "model \"x\" not found".into()))
        );
        let fastapi = json!({"detail": "Not Found"});
        assert_eq!(error_parts(&fastapi), Some((None, "Not Found".into())));
        assert_eq!(error_parts(&json!({"choices": []})), None);
    }

    #[test]
    fn excerpts_are_one_bounded_line_and_secrets_are_redacted() {
        assert_eq!(excerpt("a\n\tb  c", 10), "a b c");
        assert_eq!(excerpt(&"x".repeat(50), 10), format!("{}…", "x".repeat(10)));
        let secrets = vec!["sk-secret".to_owned()];
        assert_eq!(
            redact("Incorrect API key provided: sk-secret.", &secrets),
            "Incorrect API key provided: [redacted]."
        );
    }
}
