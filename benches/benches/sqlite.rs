//! Criterion micro-benches of `SqliteStore`, each beside its raw-SQLite baseline
//! (`conversation_benches::sqlite::RawSqlite`: the same statement on the same file):
//! get, the last-20 window, a list page of 50, a durable append, a create.
//!
//! For get, the window and the append there is a third figure, `sqlx`: the same
//! statements through one bare sqlx `SqliteConnection` (no store, no model types, no
//! writer queue), the floor of any store built on sqlx. `store` − `sqlx` is what the
//! store adds; `sqlx` − `raw` is what sqlx's connection thread costs.
//!
//! A quick loop for developers; the figures of record, at scale (1,000,000 messages,
//! 100,000 conversations), come from the `scale` binary. The data (a scope of 10,000
//! conversations, a conversation of 20,000 messages) is seeded untimed, in bulk.
//!
//! Run: `cargo bench -p conversation-benches --bench sqlite`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a bench binary

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use conversation_benches::body;
use conversation_benches::sqlite::{RawSqlite, Seeder};
use conversation_core::{ConversationQuery, NewConversation, Scope, Store};
use conversation_store_sqlite::{SqliteStore, sql};
use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions as _, SqliteConnection};
use tokio::sync::Mutex;

/// The columns of `sql::GET_CONVERSATION`.
type ConversationRow = (
    Vec<u8>,
    Option<String>,
    String,
    i64,
    i64,
    i64,
    bool,
    bool,
    String,
    i64,
);

/// The durable append of the store's writer, statement by statement, on a bare
/// sqlx connection.
async fn sqlx_append(
    conn: &Mutex<SqliteConnection>,
    scope: &Scope,
    id: conversation_core::ConversationId,
) {
    let conn = &mut *conn.lock().await;
    let at = conversation_benches::sqlite::now_millis();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .unwrap();
    let (count, version): (i64, i64) = sqlx::query_as(
        "SELECT message_count, version FROM conversations WHERE id = ?1 AND +scope = ?2",
    )
    .bind(&id.as_bytes()[..])
    .bind(scope.as_str())
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let message = body::message(2);
    sqlx::query(
        "INSERT INTO messages (conversation_id, seq, id, role, content, tool_calls, \
         tool_call_id, metadata, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .bind(&id.as_bytes()[..])
    .bind(count + 1)
    .bind(&uuid::Uuid::now_v7().as_bytes()[..])
    .bind(message.role.as_str())
    .bind(message.content.as_str())
    .bind(None::<String>)
    .bind(None::<String>)
    .bind("{}")
    .bind(at)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE conversations SET message_count = ?2, version = ?3, updated_at = ?4 WHERE id = ?1",
    )
    .bind(&id.as_bytes()[..])
    .bind(count + 1)
    .bind(version + 1)
    .bind(at)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(runtime.block_on(SqliteStore::open(&path)).unwrap());
    let raw = RawSqlite::open(&path).unwrap();
    let lists = Scope::new("bench-list").unwrap();
    let chats = Scope::new("bench-chat").unwrap();
    let mut seeder = Seeder::open(&path).unwrap();
    let seeded = seeder
        .conversations(&[(lists.clone(), 10_000), (chats.clone(), 1)])
        .unwrap();
    let middle = seeded[0][5_000];
    let chat = seeded[1][0];
    seeder.messages(chat, 20_000).unwrap();
    seeder.checkpoint().unwrap();
    let (reader, writer) = runtime.block_on(async {
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .foreign_keys(true)
            .busy_timeout(conversation_benches::sqlite::BUSY_TIMEOUT);
        let reader = base.clone().read_only(true).connect().await.unwrap();
        let writer = base
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
            .connect()
            .await
            .unwrap();
        (Mutex::new(reader), Mutex::new(writer))
    });

    let mut group = c.benchmark_group("get");
    group.bench_function("store", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(store.get_conversation(&lists, middle).await.unwrap()) });
    });
    group.bench_function("raw", |b| b.iter(|| raw.get(&lists, middle).unwrap()));
    group.bench_function("sqlx", |b| {
        b.to_async(&runtime).iter(|| async {
            let conn = &mut *reader.lock().await;
            let row: ConversationRow = sqlx::query_as(sql::GET_CONVERSATION)
                .bind(&middle.as_bytes()[..])
                .bind(lists.as_str())
                .fetch_one(conn)
                .await
                .unwrap();
            black_box(row)
        });
    });
    group.finish();

    let window = sql::recent_messages(20);
    let mut group = c.benchmark_group("window20");
    group.bench_function("store", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(store.recent_messages(&chats, chat, 20).await.unwrap()) });
    });
    group.bench_function("raw", |b| b.iter(|| raw.recent(&chats, chat, 20).unwrap()));
    group.bench_function("sqlx", |b| {
        b.to_async(&runtime).iter(|| async {
            let conn = &mut *reader.lock().await;
            let (page,): (String,) = sqlx::query_as(sqlx::AssertSqlSafe(window.as_str()))
                .bind(&chat.as_bytes()[..])
                .bind(chats.as_str())
                .fetch_one(conn)
                .await
                .unwrap();
            black_box(page)
        });
    });
    group.finish();

    let mut group = c.benchmark_group("list50");
    let first = ConversationQuery::new();
    group.bench_function("store", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(store.list_conversations(&lists, &first).await.unwrap()) });
    });
    group.bench_function("raw", |b| b.iter(|| raw.list(&lists, None, 50).unwrap()));
    group.finish();

    let writes = Scope::new("bench-writes").unwrap();
    let target = runtime
        .block_on(store.create_conversation(&writes, NewConversation::new()))
        .unwrap()
        .id;
    let mut group = c.benchmark_group("append_durable");
    group.bench_function("store", |b| {
        b.to_async(&runtime).iter(|| async {
            let message = vec![body::message(0)];
            black_box(
                store
                    .append_messages(&writes, target, message, None)
                    .await
                    .unwrap(),
            )
        });
    });
    group.bench_function("raw", |b| {
        b.iter(|| raw.append(&writes, target, &[body::message(1)]).unwrap());
    });
    group.bench_function("sqlx", |b| {
        b.to_async(&runtime)
            .iter(|| sqlx_append(&writer, &writes, target));
    });
    group.finish();

    let mut group = c.benchmark_group("create");
    group.bench_function("store", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(
                store
                    .create_conversation(&writes, NewConversation::new())
                    .await
                    .unwrap(),
            )
        });
    });
    group.bench_function("raw", |b| b.iter(|| raw.create(&writes).unwrap()));
    group.finish();
    runtime.block_on(store.close());
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = sqlite;
    config = config();
    targets = benches
}
criterion_main!(sqlite);
