//! The embedded migrations and the migrator that applies them in the store's schema.

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection as _, Executor as _, PgPool, SqlSafeStr as _};

use conversation_core::Result;

use crate::error::{db, migration};
use crate::sql::quote_identifier;

/// The name of the table, inside the store's schema, that records which of the
/// store's migrations were applied.
pub const MIGRATIONS_TABLE: &str = "conversation_store_migrations";

/// The embedded migrations, in order. Never edit one that has shipped: add another.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "conversations and messages",
        include_str!("../migrations/0001_conversations_and_messages.sql"),
    ),
    (
        2,
        "message tree",
        include_str!("../migrations/0002_message_tree.sql"),
    ),
    (
        3,
        "runs, search, lifecycle",
        include_str!("../migrations/0003_runs_search_lifecycle.sql"),
    ),
];

/// Applies the embedded migrations up to version `last` (all of them for
/// `i64::MAX`) to `schema` (unquoted, already checked), on a connection of its own
/// opened with the pool's connect options, whose `search_path` is the schema.
pub(crate) async fn run(pool: &PgPool, schema: &str, last: i64) -> Result<()> {
    let quoted = quote_identifier(schema);
    let mut migrator = Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .filter(|(version, _, _)| *version <= last)
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    );
    migrator.dangerous_set_table_name(format!("{quoted}.{MIGRATIONS_TABLE}"));

    let options = pool.connect_options();
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(db("connect to migrate"))?;
    // `CREATE SCHEMA IF NOT EXISTS` needs CREATE on the database even when the
    // schema exists, which a host's role for an existing schema may lack: ask only
    // when it is missing (the migrator creates it under its lock).
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut conn)
            .await
            .map_err(db("look up the schema"))?;
    if !exists {
        migrator.create_schema(quoted.clone());
    }
    conn.execute(AssertSqlSafe(format!("SET search_path TO {quoted}")))
        .await
        .map_err(db("set the search path to migrate"))?;
    let outcome = migrator.run(&mut conn).await;
    let outcome = match outcome.map_err(migration) {
        // The search columns of rows written before 0003 are filled here, in Rust:
        // their words are cut by core's rule.
        Ok(()) if last >= 3 => crate::search::reindex(&mut conn, &quoted).await,
        other => other,
    };
    if let Err(err) = conn.close().await {
        tracing::debug!(target: "conversation_store_postgres", %err, "closing the migration connection");
    }
    outcome?;
    tracing::debug!(target: "conversation_store_postgres", %schema, "migrations applied");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|(v, _, _)| *v).collect();
        let expected: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
        assert_eq!(versions, expected);
    }
}
