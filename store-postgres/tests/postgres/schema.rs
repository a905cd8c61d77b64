//! Schemas and migrations: where the tables go and how they live beside a host's own.

use conversation_core::{Error, NewConversation, Scope, Store};
use conversation_store_postgres::{
    MIGRATIONS_TABLE, PgPoolOptions, PostgresOptions, PostgresStore,
};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, Executor as _, SqlSafeStr as _};

use crate::support::{self, SchemaGuard, TestStore};

async fn tables_in(schema: &str) -> Vec<String> {
    let mut conn = support::admin().await;
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = $1 ORDER BY table_name COLLATE \"C\"",
    )
    .bind(schema)
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

async fn applied(schema: &str, table: &str) -> Vec<i64> {
    let mut conn = support::admin().await;
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT version FROM \"{schema}\".\"{table}\" WHERE success ORDER BY version"
    )))
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// Connecting creates the chosen schema with our tables and our own migrations
/// table inside it; connecting again (a second instance, a restart) applies nothing
/// twice and keeps the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_create_the_schema_once_with_their_own_table() {
    let guard = SchemaGuard(support::fresh_schema_name());
    let schema = guard.0.clone();
    let options = || {
        PostgresOptions::new()
            .schema(schema.clone())
            .max_connections(2)
    };
    let first = PostgresStore::connect_with(support::url(), options())
        .await
        .unwrap();
    assert_eq!(first.schema(), schema);
    assert_eq!(
        tables_in(&schema).await,
        vec![MIGRATIONS_TABLE, "conversations", "messages"]
    );
    assert_eq!(applied(&schema, MIGRATIONS_TABLE).await, vec![1]);

    let scope = Scope::new("restart").unwrap();
    let chat = first
        .create_conversation(&scope, NewConversation::new().with_title("kept"))
        .await
        .unwrap();
    first.pool().close().await;

    // Two more instances starting at once: both migrate, neither applies anything.
    let (second, third) = tokio::join!(
        PostgresStore::connect_with(support::url(), options()),
        PostgresStore::connect_with(support::url(), options()),
    );
    let (second, third) = (second.unwrap(), third.unwrap());
    assert_eq!(applied(&schema, MIGRATIONS_TABLE).await, vec![1]);
    assert_eq!(
        second.get_conversation(&scope, chat.id).await.unwrap(),
        chat
    );
    assert_eq!(third.get_conversation(&scope, chat.id).await.unwrap(), chat);
    second.pool().close().await;
    third.pool().close().await;
}

/// A host's own sqlx migrations, in the same schema and with the same version
/// numbers, and ours never see each other's history, in either order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_migrations_in_the_same_schema_do_not_collide() {
    let guard = SchemaGuard(support::fresh_schema_name());
    let schema = guard.0.clone();
    let host_migrator = || {
        let mut migrator = Migrator::with_migrations(vec![Migration::new(
            1,
            "host table".into(),
            MigrationType::Simple,
            "CREATE TABLE host_things (id bigint PRIMARY KEY)".into_sql_str(),
            false,
        )]);
        migrator.create_schema(format!("\"{schema}\""));
        migrator
    };
    let run_host = || async {
        let mut conn = support::admin().await;
        conn.execute(AssertSqlSafe(format!("SET search_path TO \"{schema}\"")))
            .await
            .unwrap();
        host_migrator().run(&mut conn).await
    };

    run_host().await.expect("the host migrates first");
    let store = PostgresStore::connect_with(
        support::url(),
        PostgresOptions::new().schema(schema.clone()),
    )
    .await
    .expect("ours migrate after the host's");
    run_host()
        .await
        .expect("the host's migrator still finds only its own history");
    store.migrate().await.expect("ours still find only ours");

    assert_eq!(applied(&schema, "_sqlx_migrations").await, vec![1]);
    assert_eq!(applied(&schema, MIGRATIONS_TABLE).await, vec![1]);
    assert_eq!(
        tables_in(&schema).await,
        vec![
            "_sqlx_migrations",
            MIGRATIONS_TABLE,
            "conversations",
            "host_things",
            "messages"
        ]
    );
    store.pool().close().await;
}

/// A login role that exists only for one test, dropped (with what it owns) when
/// dropped; declare it before the schema guard so that the schema goes first.
struct RoleGuard(String);

impl Drop for RoleGuard {
    fn drop(&mut self) {
        let role = &self.0;
        support::cleanup(
            "drop a test role",
            vec![
                format!("DROP OWNED BY \"{role}\" CASCADE"),
                format!("DROP ROLE IF EXISTS \"{role}\""),
            ],
        );
    }
}

/// A host role that may work in an existing schema but not create schemas (no
/// CREATE on the database, as for any new role) can still connect and migrate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_create_on_the_database_migrates_an_existing_schema() {
    let role = RoleGuard(format!("{}_role", support::fresh_schema_name()));
    let guard = SchemaGuard(support::fresh_schema_name());
    let (role_name, schema) = (role.0.clone(), guard.0.clone());
    let mut admin = support::admin().await;
    for statement in [
        format!("CREATE ROLE \"{role_name}\" LOGIN"),
        format!("CREATE SCHEMA \"{schema}\""),
        format!("GRANT USAGE, CREATE ON SCHEMA \"{schema}\" TO \"{role_name}\""),
    ] {
        admin.execute(AssertSqlSafe(statement)).await.unwrap();
    }
    let options = support::connect_options(&schema).username(&role_name);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let store = PostgresStore::from_pool_with(pool, PostgresOptions::new().schema(schema.clone()))
        .await
        .expect("migrating needs no CREATE on the database when the schema exists");
    let scope = Scope::new("host-role").unwrap();
    let chat = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    assert_eq!(store.get_conversation(&scope, chat.id).await.unwrap(), chat);
    store.pool().close().await;
}

/// Two stores in two schemas of one database share nothing, even with equal scopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_in_two_schemas_are_separate() {
    let a = TestStore::new().await;
    let b = TestStore::new().await;
    let scope = Scope::new("same-scope").unwrap();
    let chat = a
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    assert!(matches!(
        b.get_conversation(&scope, chat.id).await,
        Err(Error::NotFound { .. })
    ));
    let listed = b
        .list_conversations(&scope, &Default::default())
        .await
        .unwrap();
    assert!(listed.items.is_empty());
}

/// A schema name that is not accepted is refused before anything is sent.
#[tokio::test]
async fn bad_schema_names_are_invalid_input() {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(support::connect_options("bad_schema_names"));
    for bad in [
        "",
        "has space",
        "x\"; DROP TABLE y; --",
        "pg_mine",
        "9lives",
    ] {
        let err = PostgresStore::from_pool_with(pool.clone(), PostgresOptions::new().schema(bad))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field, .. } if field == "schema"),
            "{bad:?}: {err:?}"
        );
    }
    assert_eq!(pool.size(), 0, "nothing was sent");
}
