//! This crate's errors, and how they map onto `conversation_core::Error`.

use std::fmt;
use std::time::Duration;

use conversation_core::{BoxError, Error};

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
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connecting",
            TimeoutPhase::Response => "waiting for the response",
            TimeoutPhase::Idle => "waiting for the next chunk of the reply",
            TimeoutPhase::Total => "streaming the reply (total time)",
        })
    }
}

/// What went wrong talking to an OpenAI-compatible endpoint.
///
/// The model and title generator return [`conversation_core::Error`], carrying this
/// as the source (downcast it to read e.g. [`OpenAiError::RateLimited`]'s
/// `retry_after`). The mapping:
///
/// | this error | core error |
/// |---|---|
/// | `RateLimited`, `Timeout`, `Connection`, `Stream`, `Truncated`, `Api` with 408, 409, 429 or 5xx | `Unavailable` (transient) |
/// | `Api` 400 with `context_length_exceeded` | `InvalidInput` on `messages`: the caller can shorten the context |
/// | `Config` | `InvalidInput` on `config` |
/// | `Api` 400 otherwise, 401, 403, 404, other 4xx, 429 `insufficient_quota`; `Decode`, `NoTitle` | `Backend` (permanent) |
///
/// A plain 400 maps to `Backend`, not `InvalidInput`: it nearly always means the
/// request this crate built does not suit the server or model (an unsupported
/// parameter, a bad tool schema), which the end user cannot fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenAiError {
    /// The configuration cannot be used (bad URL, header or empty model name).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// HTTP 429 other than an exhausted quota, after the retries ran out.
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
        /// The transport's error.
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
}

pub(crate) fn is_quota_code(code: Option<&str>) -> bool {
    code == Some("insufficient_quota")
}

impl From<OpenAiError> for Error {
    fn from(error: OpenAiError) -> Self {
        if let OpenAiError::Config(reason) = &error {
            return Error::invalid("config", reason.clone());
        }
        if error.is_context_length_exceeded() {
            return Error::invalid("messages", error.to_string());
        }
        let transient = error.is_retryable()
            || matches!(error, OpenAiError::Stream { .. } | OpenAiError::Truncated);
        let message = error.to_string();
        if transient {
            Error::unavailable(message, error)
        } else {
            Error::backend(message, error)
        }
    }
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

    #[test]
    fn core_kinds_follow_the_documented_table() {
        let api = |status, code: Option<&str>| OpenAiError::Api {
            status,
            code: code.map(ToOwned::to_owned),
            message: "m".into(),
        };
        let transient = [
            api(408, None),
            api(409, None),
            api(500, None),
            api(503, None),
            OpenAiError::RateLimited {
                retry_after: None,
                message: "slow down".into(),
            },
            OpenAiError::Timeout {
                phase: TimeoutPhase::Idle,
            },
            OpenAiError::Truncated,
            OpenAiError::Stream {
                code: None,
                message: "overloaded".into(),
            },
        ];
        for error in transient {
            let core = Error::from(error);
            assert!(core.is_transient(), "{core}");
        }
        let permanent = [
            api(400, Some("invalid_request_error")),
            api(401, Some("invalid_api_key")),
            api(403, None),
            api(404, Some("model_not_found")),
            api(429, Some("insufficient_quota")),
            OpenAiError::Decode {
                message: "bad".into(),
            },
        ];
        for error in permanent {
            let core = Error::from(error);
            assert!(matches!(core, Error::Backend { .. }), "{core}");
        }
        let too_long = Error::from(api(400, Some("context_length_exceeded")));
        assert!(
            matches!(&too_long, Error::InvalidInput { field, .. } if field == "messages"),
            "{too_long}"
        );
        let config = Error::from(OpenAiError::Config("bad url".into()));
        assert!(matches!(config, Error::InvalidInput { .. }));
    }

    #[test]
    fn the_source_can_be_downcast() {
        let core = Error::from(OpenAiError::RateLimited {
            retry_after: Some(Duration::from_secs(3)),
            message: "slow down".into(),
        });
        let source = std::error::Error::source(&core).unwrap();
        let ours = source.downcast_ref::<OpenAiError>().unwrap();
        assert!(matches!(
            ours,
            OpenAiError::RateLimited { retry_after: Some(wait), .. } if *wait == Duration::from_secs(3)
        ));
        assert!(core.to_string().contains("retry after 3000 ms"), "{core}");
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
