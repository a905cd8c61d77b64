//! Opening a store: on a pool of its own or the host's, migrated or not.

use std::str::FromStr;
use std::sync::Arc;

use conversation_core::{Error, Result};

use crate::error::db;
use crate::sql::{Statements, quote_identifier};
use crate::{PgConnectOptions, PgPool, PgPoolOptions, PostgresOptions, PostgresStore, migrate};

impl PostgresStore {
    /// Connects with [`PostgresOptions::default`]: a pool of its own, tables in
    /// `public`, migrations run.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `url`) for a URL that is not a PostgreSQL one;
    /// [`Error::Unavailable`] when the server cannot be reached;
    /// [`Error::Backend`] when it refuses (credentials, missing database,
    /// privileges) or a migration fails.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects with `options`.
    ///
    /// # Errors
    /// As [`PostgresStore::connect`], and [`Error::InvalidInput`] (field `schema`)
    /// for a schema name that is not accepted.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self> {
        options.checked_schema()?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::invalid(
                "url",
                "not a PostgreSQL URL: it starts with postgres:// or postgresql://",
            ));
        }
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("url", format!("not a PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(db("connect to PostgreSQL"))?;
        let mut store = Self::from_pool_with(pool, options).await?;
        store.owns_pool = true;
        Ok(store)
    }

    /// Uses the host's pool, with tables in `public`, migrations run.
    ///
    /// # Errors
    /// As [`PostgresStore::migrate`].
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        Self::from_pool_with(pool, PostgresOptions::default()).await
    }

    /// Uses the host's pool with `options` (their pool size and acquire timeout are
    /// ignored: the pool is configured already).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `schema`) for a schema name that is not
    /// accepted, and those of [`PostgresStore::migrate`] when migrations run.
    pub async fn from_pool_with(pool: PgPool, options: PostgresOptions) -> Result<Self> {
        let schema = options.checked_schema()?.to_owned();
        let store = Self {
            sql: Arc::new(Statements::new(&quote_identifier(&schema))),
            schema: schema.into(),
            pool,
            owns_pool: false,
            limits: options.limits,
            clock: options.clock,
        };
        if options.run_migrations {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Applies the embedded migrations that are not applied yet: creates the schema
    /// if needed, then the tables, recording each step in [`MIGRATIONS_TABLE`](crate::MIGRATIONS_TABLE) inside
    /// the schema. Safe to run from many instances at once, and a no-op when
    /// everything is applied.
    ///
    /// The migrations run on a connection of their own, opened with the pool's
    /// connect options, whose `search_path` is the store's schema; the pool's
    /// connections are left as they are.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached; [`Error::Backend`]
    /// when a migration fails or an applied one differs from the embedded one.
    pub async fn migrate(&self) -> Result<()> {
        migrate::run(&self.pool, &self.schema, i64::MAX).await
    }

    /// Applies the embedded migrations up to version `last` only: for tests of a
    /// migration on data written by the versions before it. Not a stable API.
    ///
    /// # Errors
    /// As [`PostgresStore::migrate`].
    #[doc(hidden)]
    pub async fn migrate_up_to(&self, last: i64) -> Result<()> {
        migrate::run(&self.pool, &self.schema, last).await
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }
}
