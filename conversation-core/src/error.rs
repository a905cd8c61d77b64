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
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::Conversation => "conversation",
            Entity::Message => "message",
        })
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

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// A stable, machine-readable name of the variant (`not_found`, `conflict`,
    /// `invalid_input`, `unavailable`, `backend`), for logs and wire formats.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::Conflict { .. } => "conflict",
            Error::InvalidInput { .. } => "invalid_input",
            Error::Unavailable { .. } => "unavailable",
            Error::Backend { .. } => "backend",
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
