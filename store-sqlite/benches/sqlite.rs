//! Criterion bench of `SqliteStore`: create, durable append, batch append, get,
//! last-20 window, list page of 50; each read also issued directly against SQLite
//! (rusqlite, on the same file) as the baseline, at two scales: 100 and 100,000
//! conversations in the scope, 500 and 1,000,000 messages in the conversation.
//!
//! Baselines: `raw` runs the very statement the store runs (from
//! `conversation_store_sqlite::sql`; pages come back as one JSON row), `raw_rows` the
//! same page as plain rows (the `*_ROWS` statements), reading every column.
//!
//! Run: `cargo bench -p conversation-store-sqlite`. The data is seeded untimed, in
//! bulk (big transactions, `synchronous=OFF`), into a temporary folder.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conversation_core::{
    ArchivedFilter, ConversationId, ConversationQuery, NewConversation, NewMessage, Scope, Store,
};
use conversation_store_sqlite::{SqliteStore, sql};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rusqlite::types::Null;

const CONVERSATION_SCALES: [usize; 2] = [100, 100_000];
const MESSAGE_SCALES: [usize; 2] = [500, 1_000_000];

struct Data {
    /// Per conversation scale: the scope and a conversation in the middle of it.
    lists: Vec<(usize, Scope, ConversationId)>,
    /// Per message scale: the scope and the conversation holding that many messages.
    chats: Vec<(usize, Scope, ConversationId)>,
}

/// Seeds the file (whose schema the store created) in bulk, untimed.
fn seed(path: &Path) -> Data {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA synchronous = OFF").unwrap();
    let mut millis = 1_700_000_000_000i64;
    let mut lists = Vec::new();
    for &count in &CONVERSATION_SCALES {
        let scope = Scope::new(format!("bench-{count}-conversations")).unwrap();
        let tx = conn.transaction().unwrap();
        let mut middle = None;
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO conversations (id, scope, title, title_source, created_at, \
                     updated_at, message_count, pinned, archived, metadata, version) \
                     VALUES (?1, ?2, ?3, 'generated', ?4, ?4, 0, ?5, ?6, '{\"source\":\"bench\"}', 1)",
                )
                .unwrap();
            for i in 0..count {
                millis += 1;
                let id = ConversationId::new();
                if i == count / 2 {
                    middle = Some(id);
                }
                insert
                    .execute(rusqlite::params![
                        &id.as_bytes()[..],
                        scope.as_str(),
                        format!("Questions about table number {i}"),
                        millis,
                        i % 10 == 0,
                        i % 7 == 0,
                    ])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        lists.push((count, scope, middle.unwrap()));
    }
    let mut chats = Vec::new();
    for &count in &MESSAGE_SCALES {
        let scope = Scope::new(format!("bench-{count}-messages")).unwrap();
        let id = ConversationId::new();
        millis += 1;
        conn.execute(
            "INSERT INTO conversations (id, scope, title, title_source, created_at, updated_at, \
             message_count, pinned, archived, metadata, version) \
             VALUES (?1, ?2, 'Long', 'user', ?3, ?3, ?4, 0, 0, '{}', ?4)",
            rusqlite::params![&id.as_bytes()[..], scope.as_str(), millis, count as i64],
        )
        .unwrap();
        for chunk in (1..=count).collect::<Vec<_>>().chunks(200_000) {
            let tx = conn.transaction().unwrap();
            {
                let mut insert = tx
                    .prepare(
                        "INSERT INTO messages (conversation_id, seq, id, role, content, \
                         tool_calls, tool_call_id, metadata, created_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, '{}', ?6)",
                    )
                    .unwrap();
                for &seq in chunk {
                    insert
                        .execute(rusqlite::params![
                            &id.as_bytes()[..],
                            seq as i64,
                            &uuid::Uuid::now_v7().as_bytes()[..],
                            if seq % 2 == 0 { "assistant" } else { "user" },
                            format!(
                                "Message {seq}: which of the orders placed last quarter were shipped late, and by how much?"
                            ),
                            millis + seq as i64,
                        ])
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }
        chats.push((count, scope, id));
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")
        .unwrap();
    Data { lists, chats }
}

/// Runs a statement with its parameters and reads every column of every row into
/// owned values, as the store must; returns the row count.
fn raw_read(
    conn: &rusqlite::Connection,
    statement: &str,
    params: &[&dyn rusqlite::ToSql],
) -> usize {
    let mut prepared = conn.prepare_cached(statement).unwrap();
    let columns = prepared.column_count();
    let mut rows = prepared.query(params).unwrap();
    let mut count = 0;
    while let Some(row) = rows.next().unwrap() {
        for column in 0..columns {
            let value: rusqlite::types::Value = row.get(column).unwrap();
            black_box(value);
        }
        count += 1;
    }
    count
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { SqliteStore::open(&path).await.unwrap().close().await });
    let started = Instant::now();
    let data = seed(&path);
    eprintln!("seeded in {:.1?}", started.elapsed());
    let store = Arc::new(runtime.block_on(SqliteStore::open(&path)).unwrap());
    let raw =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();

    let mut group = c.benchmark_group("get");
    for (count, scope, id) in &data.lists {
        group.bench_with_input(BenchmarkId::new("store", count), count, |b, _| {
            b.to_async(&runtime)
                .iter(|| async { black_box(store.get_conversation(scope, *id).await.unwrap()) });
        });
        group.bench_with_input(BenchmarkId::new("raw", count), count, |b, _| {
            b.iter(|| {
                assert_eq!(
                    raw_read(
                        &raw,
                        sql::GET_CONVERSATION,
                        &[&&id.as_bytes()[..], &scope.as_str()]
                    ),
                    1
                );
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("list50");
    let list_sql = sql::list_conversations(ArchivedFilter::Exclude, false, false, false);
    let list_rows_sql = sql::list_conversations_rows(ArchivedFilter::Exclude, false, false, false);
    for (count, scope, _) in &data.lists {
        group.bench_with_input(BenchmarkId::new("store", count), count, |b, _| {
            b.to_async(&runtime).iter(|| async {
                let page = store
                    .list_conversations(scope, &ConversationQuery::new())
                    .await
                    .unwrap();
                assert_eq!(page.items.len(), 50);
                black_box(page)
            });
        });
        group.bench_with_input(BenchmarkId::new("raw", count), count, |b, _| {
            b.iter(|| {
                let rows = raw_read(
                    &raw,
                    &list_sql,
                    &[&scope.as_str(), &Null, &Null, &Null, &Null, &51i64],
                );
                assert_eq!(rows, 1);
            });
        });
        group.bench_with_input(BenchmarkId::new("raw_rows", count), count, |b, _| {
            b.iter(|| {
                let rows = raw_read(
                    &raw,
                    &list_rows_sql,
                    &[&scope.as_str(), &Null, &Null, &Null, &Null, &51i64],
                );
                assert_eq!(rows, 51);
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("window20");
    for (count, scope, id) in &data.chats {
        group.bench_with_input(BenchmarkId::new("store", count), count, |b, _| {
            b.to_async(&runtime).iter(|| async {
                let window = store.recent_messages(scope, *id, 20).await.unwrap();
                assert_eq!(window.len(), 20);
                black_box(window)
            });
        });
        group.bench_with_input(BenchmarkId::new("raw", count), count, |b, _| {
            b.iter(|| {
                let rows = raw_read(
                    &raw,
                    sql::RECENT_MESSAGES,
                    &[&&id.as_bytes()[..], &scope.as_str(), &20i64],
                );
                assert_eq!(rows, 1);
            });
        });
        group.bench_with_input(BenchmarkId::new("raw_rows", count), count, |b, _| {
            b.iter(|| {
                let rows = raw_read(
                    &raw,
                    sql::RECENT_MESSAGES_ROWS,
                    &[&&id.as_bytes()[..], &scope.as_str(), &20i64],
                );
                assert_eq!(rows, 20);
            });
        });
    }
    group.finish();

    let writes = Scope::new("bench-writes").unwrap();
    let target = runtime
        .block_on(store.create_conversation(&writes, NewConversation::new()))
        .unwrap();
    let mut group = c.benchmark_group("write");
    group.bench_function("create", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(
                store
                    .create_conversation(&writes, NewConversation::new())
                    .await
                    .unwrap(),
            )
        });
    });
    group.bench_function("append_durable", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(
                store
                    .append_messages(
                        &writes,
                        target.id,
                        vec![NewMessage::user("How many rows?")],
                        None,
                    )
                    .await
                    .unwrap(),
            )
        });
    });
    group.bench_function("append_batch20", |b| {
        b.to_async(&runtime).iter(|| async {
            let batch = (0..20)
                .map(|i| NewMessage::assistant(format!("Part {i} of a long answer")))
                .collect();
            black_box(
                store
                    .append_messages(&writes, target.id, batch, None)
                    .await
                    .unwrap(),
            )
        });
    });
    // 16 appenders at once, each to its own conversation: one iteration is 16 appends.
    let own: Vec<ConversationId> = (0..16)
        .map(|_| {
            runtime
                .block_on(store.create_conversation(&writes, NewConversation::new()))
                .unwrap()
                .id
        })
        .collect();
    group.bench_function("append_16_concurrent", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let store = Arc::clone(&store);
            let own = own.clone();
            let writes = writes.clone();
            async move {
                let started = Instant::now();
                for _ in 0..iters {
                    let tasks: Vec<_> = own
                        .iter()
                        .map(|id| {
                            let store = Arc::clone(&store);
                            let writes = writes.clone();
                            let id = *id;
                            tokio::spawn(async move {
                                store
                                    .append_messages(
                                        &writes,
                                        id,
                                        vec![NewMessage::user("hi")],
                                        None,
                                    )
                                    .await
                                    .unwrap();
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                }
                started.elapsed()
            }
        });
    });
    group.finish();
    let stats = store.write_stats();
    eprintln!(
        "writer: {} writes in {} transactions ({:.1} writes per commit)",
        stats.writes,
        stats.transactions,
        stats.writes as f64 / stats.transactions.max(1) as f64
    );
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
