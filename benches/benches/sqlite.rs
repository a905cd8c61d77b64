//! Criterion micro-benches of `SqliteStore`, each beside its raw-SQLite baseline
//! (`conversation_benches::sqlite::RawSqlite`: the same statements on the same file):
//! get, the last-20 window, a list page of 50, a durable append, a create.
//! `store` − `raw` is what the store adds to SQLite.
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
use conversation_core::{Append, ConversationQuery, NewConversation, RecentQuery, Scope, Store};
use conversation_store_sqlite::SqliteStore;
use criterion::{Criterion, criterion_group, criterion_main};

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
    let mut group = c.benchmark_group("get");
    group.bench_function("store", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(store.get_conversation(&lists, middle).await.unwrap()) });
    });
    group.bench_function("raw", |b| b.iter(|| raw.get(&lists, middle).unwrap()));
    group.finish();

    let mut group = c.benchmark_group("window20");
    let window = RecentQuery::new(20);
    group.bench_function("store", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(store.recent_messages(&chats, chat, &window).await.unwrap())
        });
    });
    group.bench_function("raw", |b| b.iter(|| raw.recent(&chats, chat, 20).unwrap()));
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
            let message = Append::one(body::message(0));
            black_box(
                store
                    .append_messages(&writes, target, message)
                    .await
                    .unwrap(),
            )
        });
    });
    group.bench_function("raw", |b| {
        b.iter(|| raw.append(&writes, target, &[body::message(1)]).unwrap());
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
