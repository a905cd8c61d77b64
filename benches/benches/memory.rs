//! Criterion micro-benches of `MemoryStore`: get, the last-20 window, a switch
//! (conversation and newest 20 through the service), a list page of 50, an append.
//! There is no lower layer to compare with; the scale harness (`scale --store
//! memory`) measures the same at scale.
//!
//! Run: `cargo bench -p conversation-benches --bench memory`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a bench binary

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use conversation_benches::body;
use conversation_core::{
    Append, ConversationQuery, Conversations, NewConversation, RecentQuery, Scope, Store,
};
use conversation_store_memory::MemoryStore;
use criterion::{Criterion, criterion_group, criterion_main};

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let scope = Scope::new("bench").unwrap();
    let (middle, chat) = runtime.block_on(async {
        let mut middle = None;
        for i in 0..10_000 {
            let id = store
                .create_conversation(&scope, NewConversation::new())
                .await
                .unwrap()
                .id;
            if i == 5_000 {
                middle = Some(id);
            }
        }
        let chat = store
            .create_conversation(&scope, NewConversation::new())
            .await
            .unwrap()
            .id;
        for first in (0..20_000).step_by(250) {
            store
                .append_messages(&scope, chat, Append::new(body::messages(first, 250)))
                .await
                .unwrap();
        }
        (middle.unwrap(), chat)
    });
    let service = Conversations::builder(Arc::clone(&store) as Arc<dyn Store>)
        .open_page_size(20)
        .build();
    let first = ConversationQuery::new();

    let mut group = c.benchmark_group("memory");
    group.bench_function("get", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(store.get_conversation(&scope, middle).await.unwrap()) });
    });
    let window = RecentQuery::new(20);
    group.bench_function("window20", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(store.recent_messages(&scope, chat, &window).await.unwrap())
        });
    });
    group.bench_function("switch", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(service.open(&scope, chat).await.unwrap()) });
    });
    group.bench_function("list50", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(store.list_conversations(&scope, &first).await.unwrap()) });
    });
    group.bench_function("append", |b| {
        b.to_async(&runtime).iter(|| async {
            let message = vec![body::message(0)];
            black_box(
                store
                    .append_messages(&scope, chat, Append::new(message))
                    .await
                    .unwrap(),
            )
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = memory;
    config = config();
    targets = benches
}
criterion_main!(memory);
