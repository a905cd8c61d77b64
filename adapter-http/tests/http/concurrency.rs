//! Many parallel POSTs to one conversation, over real loopback HTTP.

use std::collections::HashSet;

use std::sync::Arc;
use std::time::Duration;

use conversation_core::{MessageId, TitleSource};
use conversation_store_memory::MemoryStore;
use serde_json::{Value, json};

use crate::support::{Options, PREFIX, SlowAppends, TestApp};
use conversation_core::testkit::Intercepted;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_posts_store_every_message_once_with_gap_free_seq() {
    const MESSAGES: usize = 48;
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    let address = app.serve().await;
    let url = format!("http://{address}{PREFIX}/db-1/conversations/{id}/messages");
    let client = reqwest::Client::new();
    let ids: Vec<MessageId> = (0..MESSAGES).map(|_| MessageId::new()).collect();

    // Every message is sent twice, concurrently (a client retrying after a lost
    // acknowledgement); half of them as one-element batches.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, message_id) in ids.iter().copied().enumerate() {
        for attempt in 0..2 {
            let client = client.clone();
            let url = url.clone();
            tasks.spawn(async move {
                let message =
                    json!({"id": message_id, "role": "user", "content": format!("message {i}")});
                let body = if (i + attempt) % 2 == 0 {
                    message
                } else {
                    json!([message])
                };
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
                let result: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
                assert_eq!(result["messages"][0]["id"], message_id.to_string());
                assert_eq!(result["messages"][0]["content"], format!("message {i}"));
                result["messages"][0]["seq"].as_u64().unwrap()
            });
        }
    }
    let mut answered = Vec::new();
    while let Some(seq) = tasks.join_next().await {
        answered.push(seq.unwrap());
    }
    assert_eq!(answered.len(), 2 * MESSAGES);

    let stored = app.messages("db-1", id).await;
    assert_eq!(stored.len(), MESSAGES, "each message stored once");
    let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=MESSAGES as u64).collect::<Vec<_>>(),
        "gap-free seq"
    );
    let stored_ids: HashSet<MessageId> = stored.iter().map(|m| m.id).collect();
    assert_eq!(stored_ids, ids.iter().copied().collect());
    // Both attempts of a message were answered with the same stored seq.
    let answered: HashSet<u64> = answered.into_iter().collect();
    assert_eq!(answered, seqs.iter().copied().collect());
    let conversation = app.stored("db-1", id).await;
    assert_eq!(conversation.message_count, MESSAGES as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_write_does_not_leave_it_half_done() {
    let store = Arc::new(Intercepted::new(
        MemoryStore::new(),
        SlowAppends(Duration::from_millis(300)),
    ));
    let app = TestApp::with(Options {
        store: Some(store),
        ..Options::default()
    });
    let id = app.conversation("db-1").await.id;
    let address = app.serve().await;
    // The client gives up while the append (with the heuristic title that belongs
    // to it) is in flight.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let sent = client
        .post(format!(
            "http://{address}{PREFIX}/db-1/conversations/{id}/messages"
        ))
        .header("content-type", "application/json")
        .body(json!({"role": "user", "content": "Which tables are largest?"}).to_string())
        .send()
        .await;
    assert!(sent.is_err(), "the client was meant to give up first");
    drop(client);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let conversation = app.stored("db-1", id).await;
    assert_eq!(conversation.message_count, 1);
    assert_eq!(
        conversation.title.as_deref(),
        Some("Which tables are largest?")
    );
    assert_eq!(conversation.title_source, TitleSource::Heuristic);
}
