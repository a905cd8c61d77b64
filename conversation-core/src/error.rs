//! The one error type every store, model and the service return.

use std::error::Error as StdError;

/// A boxed error carried as the `source` of [`Error::Unavailable`] and [`Error::Backend`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Shorthand for `Result<T, conversation_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of thing was not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Entity {
    /// A conversation (also reported for a conversation of another scope).
    Conversation,
    /// A message.
    Message,
    /// An agent run.
    Run,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::Conversation => "conversation",
            Entity::Message => "message",
            Entity::Run => "run",
        })
    }
}

/// What went wrong with the model provider, for [`Error::Model`]: what a person can
/// check, and whether retrying later may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ModelErrorKind {
    /// The provider refused the credentials (HTTP 401): check the API key.
    Unauthorized,
    /// The provider refused this caller or model (HTTP 403).
    Forbidden,
    /// The endpoint or the model does not exist (HTTP 404): check the base URL (does
    /// it end in `/v1`?) and the model name.
    NotFound,
    /// Too many requests (HTTP 429); transient.
    RateLimited,
    /// The account's quota is used up (`insufficient_quota`): retrying will not help.
    QuotaExceeded,
    /// The provider is down or overloaded (5xx, connection failures); transient.
    Unavailable,
    /// The provider did not answer in time, or the run's time budget ran out;
    /// transient.
    Timeout,
    /// The provider refused the request itself (HTTP 400): an unsupported parameter,
    /// a context too long, a message sequence it does not accept.
    InvalidRequest,
    /// The provider's answer broke its own protocol (unparsable, cut off).
    BadResponse,
    /// The provider's content filter stopped the reply.
    ContentFiltered,
}

impl ModelErrorKind {
    /// The stable code of this kind, as problem documents carry it
    /// (`upstream_unauthorized`, `upstream_rate_limited`, …).
    pub fn code(self) -> &'static str {
        match self {
            ModelErrorKind::Unauthorized => "upstream_unauthorized",
            ModelErrorKind::Forbidden => "upstream_forbidden",
            ModelErrorKind::NotFound => "upstream_not_found",
            ModelErrorKind::RateLimited => "upstream_rate_limited",
            ModelErrorKind::QuotaExceeded => "upstream_quota_exceeded",
            ModelErrorKind::Unavailable => "upstream_unavailable",
            ModelErrorKind::Timeout => "upstream_timeout",
            ModelErrorKind::InvalidRequest => "upstream_invalid_request",
            ModelErrorKind::BadResponse => "upstream_bad_response",
            ModelErrorKind::ContentFiltered => "upstream_content_filtered",
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ModelErrorKind::RateLimited | ModelErrorKind::Unavailable | ModelErrorKind::Timeout
        )
    }
}

/// Errors of the conversation library.
///
/// Backends keep their own error types private and convert into this one, so no
/// `sqlx`, `reqwest` or other backend type ever appears in a caller's signature.
/// The variants say what a caller can do about the failure: retry
/// ([`Error::is_transient`]), re-read and merge ([`Error::Conflict`]), fix the input
/// ([`Error::InvalidInput`]) or give up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The thing does not exist in this scope. A conversation of another scope is
    /// reported exactly like one that does not exist, so existence never leaks.
    #[error("{entity} not found")]
    NotFound {
        /// What was looked for.
        entity: Entity,
    },

    /// The caller's expected version does not match the stored one; nothing changed.
    #[error("version conflict: expected version {expected}, stored version is {actual}")]
    Conflict {
        /// The version the caller expected.
        expected: u64,
        /// The version currently stored.
        actual: u64,
    },

    /// The conversation has a run in progress, and it allows one at a time; nothing
    /// was started. Wait for it ([`RunId`](crate::RunId) `run_id`), or cancel it.
    #[error("run {run_id} is in progress in this conversation")]
    RunInProgress {
        /// The run in progress.
        run_id: crate::RunId,
    },

    /// The input breaks a documented rule; `field` names the offending field.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field at fault, e.g. `"title"`, `"messages[3].content"`, `"cursor"`.
        field: String,
        /// Why the value was refused, readable by a person.
        reason: String,
    },

    /// A transient failure (connection lost, pool exhausted, busy, rate limited,
    /// timed out). Retrying the same call later may succeed; appends with
    /// caller-supplied message ids are safe to retry.
    #[error("unavailable: {message}")]
    Unavailable {
        /// What failed, readable by a person.
        message: String,
        /// The backend's own error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The model provider failed: [`ModelErrorKind`] says how. `message` is safe to
    /// show to a person (it names no URL, key or query string); the provider's raw
    /// error is the `source`, for logs.
    #[error("model provider: {message}")]
    Model {
        /// What kind of failure.
        kind: ModelErrorKind,
        /// What happened and what to check, readable by a person.
        message: String,
        /// How long the provider asked to wait before retrying, when it said.
        retry_after: Option<std::time::Duration>,
        /// The provider's own error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A permanent failure of the backend (corrupt data, rejected credentials, a
    /// bug). Retrying will not help.
    #[error("backend error: {message}")]
    Backend {
        /// What failed, readable by a person.
        message: String,
        /// The backend's own error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// A conversation that does not exist in the scope asked for.
    pub fn conversation_not_found() -> Self {
        Error::NotFound {
            entity: Entity::Conversation,
        }
    }

    /// An [`Error::InvalidInput`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Unavailable`] wrapping a backend error.
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// An [`Error::Backend`] wrapping a backend error.
    pub fn backend(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// An [`Error::Model`] with no source.
    pub fn model(kind: ModelErrorKind, message: impl Into<String>) -> Self {
        Error::Model {
            kind,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable { .. } => true,
            Error::Model { kind, .. } => kind.is_transient(),
            _ => false,
        }
    }

    /// A stable, machine-readable name of the error (`not_found`, `conflict`,
    /// `run_in_progress`, `invalid_input`, `unavailable`, `backend`, and for
    /// [`Error::Model`] its
    /// [`ModelErrorKind::code`]), for logs and wire formats.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::Conflict { .. } => "conflict",
            Error::RunInProgress { .. } => "run_in_progress",
            Error::InvalidInput { .. } => "invalid_input",
            Error::Unavailable { .. } => "unavailable",
            Error::Model { kind, .. } => kind.code(),
            Error::Backend { .. } => "backend",
        }
    }

    /// How long to wait before retrying, when the failure said
    /// ([`Error::Model`]'s `retry_after`).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Model { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_transient() {
        assert!(Error::unavailable("pool timed out", "timeout").is_transient());
        assert!(!Error::backend("corrupt", "bad page").is_transient());
        assert!(!Error::conversation_not_found().is_transient());
        assert!(!Error::invalid("title", "too long").is_transient());
        assert!(
            !Error::Conflict {
                expected: 1,
                actual: 2
            }
            .is_transient()
        );
    }

    #[test]
    fn messages_name_the_field_and_keep_the_source() {
        let err = Error::invalid("messages[2].content", "longer than 10 bytes");
        assert_eq!(
            err.to_string(),
            "invalid messages[2].content: longer than 10 bytes"
        );
        let err = Error::unavailable("connection reset", "peer closed");
        assert_eq!(
            std::error::Error::source(&err).map(ToString::to_string),
            Some("peer closed".to_owned())
        );
        assert_eq!(err.code(), "unavailable");
    }
}
