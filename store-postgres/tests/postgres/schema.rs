//! Schemas and migrations: where the tables go and how they live beside a host's own.

use conversation_core::{
    Append, ArchivedFilter, ConversationId, ConversationQuery, Error, Expiry, NewConversation,
    NewMessage, Parent, RetentionQuery, Scope, SearchQuery, Siblings, Store,
};
use conversation_store_postgres::{
    MIGRATIONS_TABLE, PgPoolOptions, PostgresOptions, PostgresStore,
};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, Executor as _, SqlSafeStr as _};

use crate::support::{self, SchemaGuard, TestStore};
use crate::tree;

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
        vec![
            MIGRATIONS_TABLE,
            "conversations",
            "messages",
            "runs",
            "search_state"
        ]
    );
    assert_eq!(applied(&schema, MIGRATIONS_TABLE).await, vec![1, 2, 3]);

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
    assert_eq!(applied(&schema, MIGRATIONS_TABLE).await, vec![1, 2, 3]);
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
    assert_eq!(applied(&schema, MIGRATIONS_TABLE).await, vec![1, 2, 3]);
    assert_eq!(
        tables_in(&schema).await,
        vec![
            "_sqlx_migrations",
            MIGRATIONS_TABLE,
            "conversations",
            "host_things",
            "messages",
            "runs",
            "search_state"
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

/// Migration 0002 on data written under 0001 (the migration applied alone, then rows
/// as the store of that version wrote them): every conversation becomes a linear
/// tree, its path every message, its head the last one, `last_seq` its count; the
/// store then reads and writes it as any other tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_migration_makes_existing_conversations_linear_trees() {
    let guard = SchemaGuard(support::fresh_schema_name());
    let schema = guard.0.clone();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(support::connect_options(&schema))
        .await
        .unwrap();
    let store = PostgresStore::from_pool_with(
        pool,
        PostgresOptions::new()
            .schema(schema.clone())
            .run_migrations(false),
    )
    .await
    .unwrap();
    store.migrate_up_to(1).await.unwrap();
    assert_eq!(applied(&schema, MIGRATIONS_TABLE).await, vec![1]);

    let s = format!("\"{schema}\"");
    let (tools, empty, long, elsewhere) = (
        ConversationId::new(),
        ConversationId::new(),
        ConversationId::new(),
        ConversationId::new(),
    );
    let conversation = |id: ConversationId, scope: &str, count: i64| {
        format!(
            "INSERT INTO {s}.conversations (id, scope, title, title_source, created_at, \
             updated_at, message_count, pinned, archived, metadata, version) \
             VALUES ('{id}', '{scope}', 'Old {count}', 'user', now() - interval '1 hour', \
                     now(), {count}, false, false, '{{\"k\": 1}}', {})",
            count + 1
        )
    };
    let messages = |id: ConversationId, count: i64| {
        format!(
            "INSERT INTO {s}.messages (conversation_id, seq, id, role, content, tool_calls, \
             tool_call_id, metadata, created_at) \
             SELECT '{id}', i, gen_random_uuid(), CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END, \
                    'old ' || i, '[]', NULL, '{{}}', now() - make_interval(secs => {count} - i) \
             FROM generate_series(1, {count}) AS i"
        )
    };
    let statements = [
        conversation(tools, "old", 3),
        conversation(empty, "old", 0),
        conversation(long, "old", 250),
        conversation(elsewhere, "other", 1),
        format!(
            "INSERT INTO {s}.messages (conversation_id, seq, id, role, content, tool_calls, \
             tool_call_id, metadata, created_at) VALUES \
             ('{tools}', 1, gen_random_uuid(), 'user', 'how many rows?', '[]', NULL, '{{}}', now()), \
             ('{tools}', 2, gen_random_uuid(), 'assistant', '', \
              '[{{\"id\": \"call_1\", \"name\": \"count\", \"arguments\": {{\"table\": \"t\"}}}}]', \
              NULL, '{{\"model\": \"m\"}}', now()), \
             ('{tools}', 3, gen_random_uuid(), 'tool', '42', '[]', 'call_1', '{{}}', now())"
        ),
        messages(long, 250),
        messages(elsewhere, 1),
    ];
    let mut admin = support::admin().await;
    for statement in statements {
        admin.execute(AssertSqlSafe(statement)).await.unwrap();
    }

    store.migrate_up_to(2).await.unwrap();
    assert_eq!(applied(&schema, MIGRATIONS_TABLE).await, vec![1, 2]);
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 \
         ORDER BY indexname COLLATE \"C\"",
    )
    .bind(&schema)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        indexes,
        vec![
            "conversation_store_migrations_pkey",
            "conversations_by_activity",
            "conversations_by_pin",
            "conversations_pkey",
            "messages_by_id",
            "messages_by_parent",
            "messages_on_path",
            "messages_pkey",
            "messages_roots",
        ]
    );

    // Then 0003 (runs, search, lifecycle) on the same data: the search columns are
    // filled by the migrator, archived conversations count as archived at their last
    // activity, usage starts at zero.
    admin
        .execute(AssertSqlSafe(format!(
            "UPDATE {s}.conversations SET archived = true WHERE id = '{elsewhere}'"
        )))
        .await
        .unwrap();
    let unindexed: i64 =
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {s}.messages")))
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(unindexed, 254);
    store.migrate().await.unwrap();
    assert_eq!(applied(&schema, MIGRATIONS_TABLE).await, vec![1, 2, 3]);
    let left: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT (SELECT count(*) FROM {s}.messages WHERE words IS NULL) \
              + (SELECT count(*) FROM {s}.conversations WHERE title_words IS NULL)"
    )))
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(left, 0, "every row is indexed");
    let rule: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT words_rule FROM {s}.search_state"
    )))
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(rule, Some(conversation_core::backend::words_rule()));

    let old = Scope::new("old").unwrap();
    let other = Scope::new("other").unwrap();
    let found = |scope: Scope, text: &'static str| {
        let store = &store;
        async move {
            let page = store.search(&scope, &SearchQuery::new(text)).await.unwrap();
            page.items
                .into_iter()
                .map(|hit| (hit.conversation.id, hit.matches.len()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(found(old.clone(), "how many ROWS").await, vec![(tools, 1)]);
    assert_eq!(
        found(old.clone(), "old 250").await,
        vec![(long, 2)],
        "its title and its message"
    );
    let titled = found(old.clone(), "Old 0").await;
    assert_eq!(titled, vec![(empty, 1)], "titles are indexed");
    assert!(
        found(other.clone(), "rows").await.is_empty(),
        "scopes stay apart"
    );
    let archived_hits = store
        .search(
            &other,
            &SearchQuery::new("old").archived(ArchivedFilter::Include),
        )
        .await
        .unwrap();
    assert_eq!(archived_hits.items.len(), 1);
    let archived = store.get_conversation(&other, elsewhere).await.unwrap();
    assert!(archived.archived);
    assert_eq!(archived.archived_at, Some(archived.updated_at));
    assert_eq!(archived.usage, conversation_core::Usage::default());
    assert_eq!(archived.active_run_id, None);
    let by_metadata = store
        .list_conversations(&old, &ConversationQuery::new().metadata_equals("k", 1))
        .await
        .unwrap();
    assert_eq!(by_metadata.items.len(), 3);
    let expired = store
        .list_expired(&RetentionQuery::new(
            Expiry::ArchivedBefore(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
            10,
        ))
        .await
        .unwrap();
    assert_eq!(
        expired.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![elsewhere]
    );
    // A second start finds the index current and leaves it.
    store.migrate().await.unwrap();
    for (id, scope, count) in [
        (tools, &old, 3),
        (empty, &old, 0),
        (long, &old, 250),
        (elsewhere, &Scope::new("other").unwrap(), 1),
    ] {
        let conversation = store.get_conversation(scope, id).await.unwrap();
        assert_eq!(
            (conversation.message_count, conversation.last_seq),
            (count, count)
        );
        assert_eq!(conversation.version, count + 1, "the row is otherwise kept");
        let all = tree::check_tree(&store, scope, id).await;
        let path = support::all_messages(&store, scope, id).await;
        assert_eq!(path, all, "every message is on the path");
        assert_eq!(conversation.head_id, all.last().map(|m| m.id));
        support::assert_tree_columns(&store, id).await;
        for (i, message) in all.iter().enumerate() {
            assert_eq!(message.seq, i as u64 + 1);
            assert_eq!(message.parent_id, i.checked_sub(1).map(|p| all[p].id));
            assert_eq!(message.siblings, Siblings::only(message.id));
        }
    }
    let with_tools = support::all_messages(&store, &old, tools).await;
    assert_eq!(with_tools[1].tool_calls[0].name, "count");
    assert_eq!(with_tools[1].metadata["model"], "m");
    assert_eq!(with_tools[2].tool_call_id.as_deref(), Some("call_1"));

    // The store goes on with them: an append follows the old head, a regenerated
    // answer branches, the empty one takes its first message.
    let long_before = store.get_conversation(&old, long).await.unwrap();
    let next = store
        .append_messages(&old, long, Append::one(NewMessage::user("new")))
        .await
        .unwrap();
    assert_eq!(next.messages[0].seq, 251);
    assert_eq!(next.messages[0].parent_id, long_before.head_id);
    let question = with_tools[0].id;
    let again = store
        .append_messages(
            &old,
            tools,
            Append::one(NewMessage::assistant("again")).parent(Parent::Message(question)),
        )
        .await
        .unwrap();
    assert_eq!(
        (again.messages[0].seq, again.messages[0].siblings.count),
        (4, 2)
    );
    store
        .append_messages(&old, empty, Append::one(NewMessage::user("first")))
        .await
        .unwrap();
    for id in [tools, empty, long] {
        tree::check_tree(&store, &old, id).await;
        support::assert_tree_columns(&store, id).await;
    }
    store.pool().close().await;
}
