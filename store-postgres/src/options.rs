//! How a [`PostgresStore`](crate::PostgresStore) connects, where it keeps its tables,
//! and where it reads the time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use conversation_core::{Clock, Error, Limits, Result, SystemClock};

/// The schema used when none is chosen.
pub const DEFAULT_SCHEMA: &str = "public";

/// How [`PostgresStore`](crate::PostgresStore) connects and where it keeps its tables.
#[derive(Clone)]
pub struct PostgresOptions {
    pub(crate) schema: String,
    pub(crate) max_connections: u32,
    pub(crate) acquire_timeout: Duration,
    pub(crate) limits: Limits,
    pub(crate) run_migrations: bool,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: DEFAULT_SCHEMA.to_owned(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            limits: Limits::default(),
            run_migrations: true,
            clock: Arc::new(SystemClock),
        }
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("limits", &self.limits)
            .field("run_migrations", &self.run_migrations)
            .field("clock", &self.clock)
            .finish()
    }
}

impl PostgresOptions {
    /// The defaults: schema `public`, at most 10 connections, a 5 second acquire
    /// timeout, the default [`Limits`], migrations run on connect, the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// The schema holding the store's tables and its migrations table; created if
    /// missing. See the [crate docs](crate#the-schema) for the names accepted.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most connections the store's own pool opens (ignored by
    /// [`PostgresStore::from_pool_with`](crate::PostgresStore::from_pool_with), whose
    /// pool is the host's).
    pub fn max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// How long a call waits for a free connection of the store's own pool before it
    /// fails with [`Error::Unavailable`] (ignored by
    /// [`PostgresStore::from_pool_with`](crate::PostgresStore::from_pool_with)).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The size limits the store enforces (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether connecting runs the embedded migrations (default `true`). A host that
    /// turns this off runs [`PostgresStore::migrate`](crate::PostgresStore::migrate)
    /// itself, e.g. from a deploy step with a role that may create tables.
    pub fn run_migrations(mut self, run: bool) -> Self {
        self.run_migrations = run;
        self
    }

    /// Where the store reads the time of its writes (default [`SystemClock`]); a test
    /// or a host replaying data sets its own. The store never lets a conversation's
    /// timestamps move backwards, whatever the clock says.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The schema name, checked: 1 to 63 ASCII letters, digits or underscores, not
    /// starting with a digit or `pg_`.
    pub(crate) fn checked_schema(&self) -> Result<&str> {
        let name = self.schema.as_str();
        let bad = |reason: &str| Err(Error::invalid("schema", reason));
        if name.is_empty() || name.len() > 63 {
            return bad("must be 1 to 63 characters long");
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return bad("only ASCII letters, digits and underscores are accepted");
        }
        if name.as_bytes()[0].is_ascii_digit() {
            return bad("must not start with a digit");
        }
        if name.to_ascii_lowercase().starts_with("pg_") {
            return bad("names starting with pg_ are reserved by PostgreSQL");
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        for good in ["public", "conv", "Conv_2", "_x", &"a".repeat(63)] {
            assert!(
                PostgresOptions::new().schema(good).checked_schema().is_ok(),
                "{good}"
            );
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "a\"b",
            "pg_catalog",
            "PG_x",
            "é",
            &"a".repeat(64),
        ] {
            let err = PostgresOptions::new()
                .schema(bad)
                .checked_schema()
                .unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput { field, .. } if field == "schema"),
                "{bad:?}: {err:?}"
            );
        }
    }
}
