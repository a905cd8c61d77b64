//! Transient failures are `Unavailable`, and an append retried after one stores
//! nothing twice.

use std::str::FromStr;
use std::time::{Duration, Instant};

use conversation_core::{Append, Error, MessageId, NewConversation, NewMessage, Scope, Store};
use conversation_store_postgres::{
    PgConnectOptions, PgPoolOptions, PostgresOptions, PostgresStore,
};
use sqlx::{AssertSqlSafe, Connection as _, Executor as _};

use crate::support::{self, TestStore};

#[track_caller]
fn assert_unavailable<T: std::fmt::Debug>(result: conversation_core::Result<T>, what: &str) {
    match result {
        Err(err @ Error::Unavailable { .. }) => assert!(err.is_transient()),
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

/// A server nobody listens on: connecting is `Unavailable`, and neither the error
/// nor its `Debug` shows the password of the URL.
#[tokio::test]
async fn unreachable_server_is_unavailable_and_the_password_stays_secret() {
    let result = PostgresStore::connect_with(
        "postgres://someone:hunter2-secret@127.0.0.1:1/test",
        PostgresOptions::new().acquire_timeout(Duration::from_secs(2)),
    )
    .await;
    let err = result.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");

    let bad = PostgresStore::connect("mysql://localhost/x")
        .await
        .unwrap_err();
    assert!(
        matches!(&bad, Error::InvalidInput { field, .. } if field == "url"),
        "{bad:?}"
    );
}

/// The store's `Debug` shows where its tables are, never the connect options.
#[tokio::test]
async fn debug_hides_the_password() {
    let schema = support::fresh_schema_name();
    let _guard = support::SchemaGuard(schema.clone());
    // Trust authentication ignores the password, so the pool connects.
    let options = PgConnectOptions::from_str(support::url())
        .unwrap()
        .password("hunter2-secret")
        .application_name(&schema);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let store = PostgresStore::from_pool_with(pool, PostgresOptions::new().schema(schema.clone()))
        .await
        .unwrap();
    let debug = format!("{store:?}");
    assert!(debug.contains(&schema), "{debug}");
    assert!(!debug.contains("hunter2"), "{debug}");
    store.pool().close().await;
}

/// Every connection busy past the acquire timeout: `Unavailable`, and the next call
/// after one is freed succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_timeout_is_unavailable() {
    let store = TestStore::with_pool(
        PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(300)),
    )
    .await;
    let scope = Scope::new("pool").unwrap();
    let chat = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    let held = store.pool().acquire().await.unwrap();
    let started = Instant::now();
    assert_unavailable(
        store.get_conversation(&scope, chat.id).await,
        "get with the pool exhausted",
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_unavailable(
        store
            .append_messages(&scope, chat.id, Append::one(NewMessage::user("x")))
            .await,
        "append with the pool exhausted",
    );
    drop(held);
    assert_eq!(
        store
            .get_conversation(&scope, chat.id)
            .await
            .unwrap()
            .message_count,
        0,
        "the failed append wrote nothing"
    );
}

/// The connection of an append dies while the append waits for the row lock (the
/// server ends it: SQLSTATE 57P01, or a closed socket): `Unavailable`, nothing is
/// stored, and the retry with the same ids stores the batch once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_cut_off_mid_transaction_is_unavailable_and_the_retry_stores_once() {
    let store = TestStore::with_pool(
        PgPoolOptions::new()
            .max_connections(2)
            // Hand out the connection without a ping, so the call meets the failure.
            .test_before_acquire(false),
    )
    .await;
    let scope = Scope::new("cut-off").unwrap();
    let chat = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    let batch: Vec<NewMessage> = (0..3)
        .map(|i| NewMessage::user(format!("m{i}")).with_id(MessageId::new()))
        .collect();

    // Another session holds the conversation's row lock.
    let mut blocker = support::admin().await;
    blocker.execute("BEGIN").await.unwrap();
    blocker
        .execute(AssertSqlSafe(format!(
            "SELECT 1 FROM {}.conversations WHERE id = '{}' FOR UPDATE",
            store.quoted_schema(),
            chat.id
        )))
        .await
        .unwrap();

    let append = {
        let store = store.handle();
        let scope = scope.clone();
        let batch = batch.clone();
        tokio::spawn(async move {
            store
                .append_messages(&scope, chat.id, Append::new(batch))
                .await
        })
    };
    // Find the append's session waiting on the lock, and end it. The wait is generous:
    // on a cold, loaded CI machine the other tests' schema migrations queue up first.
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid: i32 = loop {
        let waiting: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(store.schema_name())
        .fetch_optional(&mut blocker)
        .await
        .unwrap();
        if let Some(pid) = waiting {
            break pid;
        }
        if Instant::now() >= deadline {
            let sessions: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT state, wait_event_type, left(query, 120) FROM pg_stat_activity \
                 WHERE application_name = $1",
            )
            .bind(store.schema_name())
            .fetch_all(&mut blocker)
            .await
            .unwrap();
            panic!("the append never waited for the lock; its sessions: {sessions:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut blocker)
        .await
        .unwrap();
    assert!(ended);
    assert_unavailable(append.await.unwrap(), "append whose connection was ended");
    blocker.execute("ROLLBACK").await.unwrap();
    blocker.close().await.unwrap();

    let unchanged = store.get_conversation(&scope, chat.id).await.unwrap();
    assert_eq!(unchanged, chat, "nothing of the cut-off append was stored");

    let retried = store
        .append_messages(&scope, chat.id, Append::new(batch.clone()))
        .await
        .unwrap();
    assert_eq!(
        retried.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // The acknowledgement of that retry is "lost": the caller retries once more.
    let again = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(batch).expect_version(chat.version),
        )
        .await
        .unwrap();
    assert_eq!(again.messages, retried.messages);
    assert_eq!(
        again.conversation, retried.conversation,
        "nothing written twice"
    );
    assert_eq!(
        support::all_messages(&*store, &scope, chat.id).await,
        retried.messages
    );
}

/// `health` answers while the server does; `close` closes only a pool the store
/// opened (twice is once), after which its calls are `Unavailable`; a host's pool is
/// left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_closes_only_the_stores_own_pool() {
    let guard = support::SchemaGuard(support::fresh_schema_name());
    let options = || {
        PostgresOptions::new()
            .schema(guard.0.clone())
            .max_connections(2)
    };
    let own = PostgresStore::connect_with(support::url(), options())
        .await
        .unwrap();
    own.health().await.unwrap();
    let scope = Scope::new("close").unwrap();
    let chat = own
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    Store::close(&own).await;
    Store::close(&own).await;
    assert_unavailable(
        own.get_conversation(&scope, chat.id).await,
        "get after close",
    );
    assert_unavailable(own.health().await, "health after close");

    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(support::connect_options(&guard.0))
        .await
        .unwrap();
    let hosted = PostgresStore::from_pool_with(pool.clone(), options())
        .await
        .unwrap();
    Store::close(&hosted).await;
    assert!(!pool.is_closed(), "the host's pool is the host's to close");
    assert_eq!(
        hosted.get_conversation(&scope, chat.id).await.unwrap(),
        chat
    );
    pool.close().await;
}
