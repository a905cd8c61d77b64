//! Turning `sqlx` errors into `conversation_core::Error`.
//!
//! The rule callers rely on: whatever a retry can cure is
//! [`Error::Unavailable`](conversation_core::Error::Unavailable), everything else is
//! [`Error::Backend`](conversation_core::Error::Backend). No `sqlx` type leaves this
//! crate except as the boxed `source` of those two variants.

use conversation_core::Error;
use sqlx::migrate::MigrateError;

/// SQLSTATE codes after which the same call may succeed when tried again.
///
/// Class `08` (connection exception) is matched as a class in [`is_transient_code`].
const TRANSIENT_CODES: &[(&str, &str)] = &[
    ("40001", "serialization failure"),
    ("40P01", "deadlock detected"),
    ("53300", "too many connections"),
    ("55P03", "lock not available"),
    ("57014", "statement cancelled (statement_timeout)"),
    ("57P01", "server shutting down (admin shutdown)"),
    ("57P02", "server crashed (crash shutdown)"),
    ("57P03", "server not accepting connections yet"),
];

/// Whether a SQLSTATE says "try again later".
pub(crate) fn is_transient_code(code: &str) -> bool {
    code.starts_with("08") || TRANSIENT_CODES.iter().any(|(c, _)| *c == code)
}

/// Converts a `sqlx` error met while doing `what` (e.g. `"append messages"`).
///
/// The message names the operation and the failure; it never holds a connection URL
/// or password (sqlx's own messages do not either, and the URL is never formatted).
pub(crate) fn convert(what: &str, err: sqlx::Error) -> Error {
    if matches!(err, sqlx::Error::PoolClosed) {
        return closed();
    }
    let transient = match &err {
        // A failed TLS handshake (a certificate from an untrusted authority or for
        // another host, an alert from the server) reaches sqlx as an I/O error of kind
        // `InvalidData`: trying again cannot cure it.
        sqlx::Error::Io(io) => io.kind() != std::io::ErrorKind::InvalidData,
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_code(&code)),
        _ => false,
    };
    let message = match err.as_database_error().and_then(|db| db.code()) {
        Some(code) => format!(
            "{what}: PostgreSQL error {code}: {}",
            database_message(&err)
        ),
        None => format!("{what}: {err}"),
    };
    if transient {
        tracing::debug!(target: "conversation_store_postgres", %message, "transient failure");
        Error::unavailable(message, err)
    } else {
        tracing::warn!(target: "conversation_store_postgres", %message, "backend failure");
        Error::backend(message, err)
    }
}

fn database_message(err: &sqlx::Error) -> String {
    err.as_database_error()
        .map_or_else(|| err.to_string(), |db| db.message().to_owned())
}

/// A `map_err` adapter: `.map_err(db("get conversation"))`.
pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |err| convert(what, err)
}

/// Converts a migration failure.
pub(crate) fn migration(err: MigrateError) -> Error {
    match err {
        MigrateError::Execute(err) => convert("run migrations", err),
        MigrateError::ExecuteMigration(err, version) => {
            convert(&format!("run migration {version}"), err)
        }
        other => Error::backend(format!("run migrations: {other}"), other),
    }
}

/// The error of a call on a store whose pool was closed ([`Store::close`]).
///
/// [`Store::close`]: conversation_core::Store::close
pub(crate) fn closed() -> Error {
    Error::Unavailable {
        message: "the PostgreSQL store is closed".to_owned(),
        source: None,
    }
}

/// A message that is not in the conversation asked for.
pub(crate) fn message_not_found() -> Error {
    Error::NotFound {
        entity: conversation_core::Entity::Message,
    }
}

/// A stored value that cannot be read back as the model: a row that breaks the
/// schema's own rules (a bad role, a negative count), or a foreign write.
pub(crate) fn bad_row(what: impl std::fmt::Display) -> Error {
    Error::Backend {
        message: format!("a stored row is not valid: {what}"),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::error::Error as StdError;
    use std::fmt;

    /// A database error with a chosen SQLSTATE, as the server would send it.
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "server said {}", self.0)
        }
    }

    impl StdError for Sqlstate {}

    impl sqlx::error::DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            "server message"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn db(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Sqlstate(code)))
    }

    #[test]
    fn retryable_failures_are_unavailable() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        for err in [
            sqlx::Error::Io(io),
            sqlx::Error::PoolTimedOut,
            db("40001"),
            db("40P01"),
            db("57P01"),
            db("53300"),
            db("08006"),
            db("08001"),
        ] {
            let converted = convert("append messages", err);
            assert!(converted.is_transient(), "{converted:?}");
        }
    }

    #[test]
    fn other_failures_are_backend_errors_naming_the_operation() {
        for err in [
            db("23505"),
            db("42P01"),
            db("28P01"),
            sqlx::Error::Protocol("garbled".into()),
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "invalid peer certificate: UnknownIssuer",
            )),
        ] {
            let converted = convert("list conversations", err);
            assert!(
                matches!(&converted, Error::Backend { message, .. } if message.starts_with("list conversations: ")),
                "{converted:?}"
            );
        }
        let converted = convert("get conversation", db("42P01"));
        assert_eq!(
            converted.to_string(),
            "backend error: get conversation: PostgreSQL error 42P01: server message"
        );
        assert!(StdError::source(&converted).is_some(), "keeps the source");
    }

    #[test]
    fn a_closed_pool_is_the_closed_store() {
        let converted = convert("get conversation", sqlx::Error::PoolClosed);
        assert!(converted.is_transient(), "{converted:?}");
        assert_eq!(converted.to_string(), closed().to_string());
        assert!(matches!(bad_row("seq is -1"), Error::Backend { .. }));
    }
}
