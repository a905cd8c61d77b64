//! Criterion benches of the PostgreSQL store's hot paths, against the server of
//! `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), in a
//! schema of their own that is dropped at the end:
//!
//! ```sh
//! cargo bench -p conversation-store-postgres
//! ```
//!
//! Figures are latencies of one call from one client over loopback; the scale
//! harness (`benches/`, `--store postgres`) measures throughput and scale.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // a bench binary

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use conversation_core::{
    Append, ConversationId, ConversationQuery, NewConversation, NewMessage, RecentQuery, Scope,
    Store,
};
use conversation_store_postgres::{PgConnectOptions, PostgresOptions, PostgresStore};
use criterion::{BatchSize, Criterion};
use sqlx::{AssertSqlSafe, Connection as _, Executor as _, PgConnection};
use tokio::runtime::Runtime;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

struct Fixture {
    store: PostgresStore,
    scope: Scope,
    /// 1,000 messages, for get and the window.
    long: ConversationId,
    /// Grows with the append benches.
    growing: ConversationId,
    /// Holds 1,000 conversations, for list pages.
    list_scope: Scope,
}

async fn fixture(url: &str, schema: &str) -> Fixture {
    let store = PostgresStore::connect_with(
        url,
        PostgresOptions::new().schema(schema).max_connections(4),
    )
    .await
    .expect("connect and migrate");
    let scope = Scope::new("bench").unwrap();
    let long = store
        .create_conversation(&scope, NewConversation::new().with_title("long"))
        .await
        .unwrap()
        .id;
    for round in 0..10 {
        let batch = (0..100)
            .map(|i| NewMessage::user(format!("message {} of the long one", round * 100 + i)))
            .collect();
        store
            .append_messages(&scope, long, Append::new(batch))
            .await
            .unwrap();
    }
    let growing = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap()
        .id;
    let list_scope = Scope::new("bench-list").unwrap();
    for i in 0..1_000 {
        store
            .create_conversation(
                &list_scope,
                NewConversation::new().with_title(format!("chat {i}")),
            )
            .await
            .unwrap();
    }
    store
        .pool()
        .execute(AssertSqlSafe(format!("ANALYZE \"{schema}\".conversations")))
        .await
        .unwrap();
    store
        .pool()
        .execute(AssertSqlSafe(format!("ANALYZE \"{schema}\".messages")))
        .await
        .unwrap();
    Fixture {
        store,
        scope,
        long,
        growing,
        list_scope,
    }
}

fn benches(c: &mut Criterion, runtime: &Runtime, f: &Fixture) {
    let mut group = c.benchmark_group("postgres");
    group.bench_function("create", |b| {
        b.to_async(runtime).iter(|| async {
            f.store
                .create_conversation(&f.scope, NewConversation::new())
                .await
                .unwrap()
        });
    });
    group.bench_function("append 1", |b| {
        b.to_async(runtime).iter(|| async {
            f.store
                .append_messages(&f.scope, f.growing, Append::one(NewMessage::user("hello")))
                .await
                .unwrap()
        });
    });
    group.bench_function("append batch of 10", |b| {
        b.to_async(runtime).iter_batched(
            || {
                (0..10)
                    .map(|i| NewMessage::user(format!("batch message {i}")))
                    .collect::<Vec<_>>()
            },
            |batch| async {
                f.store
                    .append_messages(&f.scope, f.growing, Append::new(batch))
                    .await
                    .unwrap()
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("get", |b| {
        b.to_async(runtime)
            .iter(|| async { f.store.get_conversation(&f.scope, f.long).await.unwrap() });
    });
    let window = RecentQuery::new(20);
    group.bench_function("window of 20 (of 1,000)", |b| {
        b.to_async(runtime).iter(|| async {
            f.store
                .recent_messages(&f.scope, f.long, &window)
                .await
                .unwrap()
        });
    });
    group.bench_function("list 50 (of 1,000)", |b| {
        let query = ConversationQuery::new().limit(50);
        b.to_async(runtime).iter(|| async {
            f.store
                .list_conversations(&f.list_scope, &query)
                .await
                .unwrap()
        });
    });
    group.finish();
}

fn main() {
    let url = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = PgConnectOptions::from_str(&url).expect("TEST_DATABASE_URL is a PostgreSQL URL");
    let reachable = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&options))
            .await
            .ok()
            .and_then(Result::ok)
    });
    let Some(mut admin) = reachable else {
        eprintln!(
            "SKIPPED: conversation-store-postgres benches: no PostgreSQL server reachable at {}:{}",
            options.get_host(),
            options.get_port()
        );
        return;
    };
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let schema = format!("conv_bench_{seconds}_{}", std::process::id());
    let fixture = runtime.block_on(fixture(&url, &schema));
    let mut criterion = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    benches(&mut criterion, &runtime, &fixture);
    criterion.final_summary();
    runtime.block_on(async {
        fixture.store.pool().close().await;
        admin
            .execute(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
            .await
            .unwrap();
        admin.close().await.unwrap();
    });
}
