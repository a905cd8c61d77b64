//! Concurrency bounds: reply streams per scope and in total (429), heavy reads (503),
//! and large pages written as they are sent.

use std::time::Duration;

use axum::http::StatusCode;
use conversation_adapter_http::HttpLimits;
use conversation_core::{ConversationId, NewMessage};
use serde_json::{Value, json};

use crate::support::{Options, Script, Step, TestApp, TestRequest, delta, scope_of};

fn app(limits: HttpLimits) -> TestApp {
    TestApp::with(Options {
        limits: Some(limits),
        ..Options::default()
    })
}

fn reply(scope: &str, id: impl std::fmt::Display) -> TestRequest {
    TestRequest::post(
        format!("/{scope}/conversations/{id}/reply"),
        json!({"content": "hello"}),
    )
}

/// Waits until the model has been called `n` times: the runs started have taken
/// their scripts.
async fn wait_for_calls(app: &TestApp, n: usize) {
    for _ in 0..500 {
        if app.model.requests().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!(
        "the model was called {} times, not {n}",
        app.model.requests().len()
    );
}

/// Cancels the run of conversation `id` and waits until a new reply to `next` is
/// admitted again: the slot belongs to the run, and is free once it has ended.
async fn cancel_and_retry(
    app: &TestApp,
    (scope, id): (&str, ConversationId),
    (next_scope, next): (&str, ConversationId),
) {
    let run = app.stored(scope, id).await.active_run_id.expect("a run");
    app.send(TestRequest::post(
        format!("/{scope}/conversations/{id}/runs/{run}/cancel"),
        json!({}),
    ))
    .await
    .expect(StatusCode::ACCEPTED);
    for _ in 0..100 {
        app.model.push(Script::steps(vec![delta("hi"), Step::Hang]));
        let response = app.open(reply(next_scope, next)).await;
        if response.status() == StatusCode::OK {
            return;
        }
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        app.model.take_unused();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the slot of a cancelled run was never freed");
}

#[tokio::test]
async fn replies_beyond_the_bound_of_a_scope_are_429_until_one_ends() {
    let app = app(HttpLimits::default().with_max_concurrent_replies_per_scope(2));
    let mut running = Vec::new();
    for _ in 0..2 {
        let id = app.conversation("db-1").await.id;
        app.model
            .push(Script::steps(vec![delta("thinking"), Step::Hang]));
        let response = app.open(reply("db-1", id)).await;
        assert_eq!(response.status(), StatusCode::OK);
        running.push(id);
    }
    wait_for_calls(&app, 2).await;
    let id = app.conversation("db-1").await.id;
    let refused = app.send(reply("db-1", id)).await;
    refused.expect_problem(StatusCode::TOO_MANY_REQUESTS, "too_many_replies");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        app.messages("db-1", id).await.is_empty(),
        "a refused reply stores nothing"
    );

    // Another scope has its own bound.
    let other = app.conversation("db-2").await.id;
    app.model.push(Script::steps(vec![delta("hi"), Step::Hang]));
    let elsewhere = app.open(reply("db-2", other)).await;
    assert_eq!(elsewhere.status(), StatusCode::OK);
    wait_for_calls(&app, 3).await;

    // A client that leaves does not free the slot (its run goes on); a run that ends
    // does.
    cancel_and_retry(&app, ("db-1", running[0]), ("db-1", id)).await;
}

#[tokio::test]
async fn replies_beyond_the_bound_of_the_server_are_429() {
    let app = app(HttpLimits::default().with_max_concurrent_replies(1));
    let first = app.conversation("db-1").await.id;
    app.model.push(Script::steps(vec![delta("hi"), Step::Hang]));
    let open = app.open(reply("db-1", first)).await;
    assert_eq!(open.status(), StatusCode::OK);
    drop(open);
    wait_for_calls(&app, 1).await;
    let second = app.conversation("db-2").await.id;
    app.send(reply("db-2", second))
        .await
        .expect_problem(StatusCode::TOO_MANY_REQUESTS, "too_many_replies");
    cancel_and_retry(&app, ("db-1", first), ("db-2", second)).await;
}

#[tokio::test]
async fn heavy_reads_wait_briefly_for_their_turn_then_are_503() {
    // No turn is ever free: every heavy read waits, then is refused.
    let app = app(HttpLimits::default()
        .with_max_concurrent_heavy_reads(0)
        .with_heavy_read_wait(Duration::from_millis(50)));
    let id = app.conversation("db").await.id;
    for path in ["messages?limit=200", "context"] {
        let response = app
            .send(TestRequest::get(format!("/db/conversations/{id}/{path}")))
            .await;
        response.expect_problem(StatusCode::SERVICE_UNAVAILABLE, "busy");
        assert_eq!(response.header("retry-after"), Some("1"));
    }
    // The light routes are not bound.
    app.send(TestRequest::get(format!("/db/conversations/{id}")))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn a_streamed_page_and_window_are_exactly_the_stored_messages() {
    let app = TestApp::new();
    let scope = scope_of("db");
    let id = app.conversation("db").await.id;
    let big = "quote \" backslash \\ newline \n emoji 🦀 ".repeat(4_000);
    // 24 messages of about 160 KB: one page, under `Limits::max_page_bytes`.
    let messages: Vec<NewMessage> = (0..24)
        .map(|i| NewMessage::user(format!("{i}: {big}")))
        .collect();
    app.service.append(&scope, id, messages).await.unwrap();
    let stored = serde_json::to_value(app.messages("db", id).await).unwrap();

    let page = app
        .send(TestRequest::get(format!(
            "/db/conversations/{id}/messages?limit=200"
        )))
        .await;
    assert_eq!(page.content_type(), "application/json");
    assert_eq!(
        page.expect(StatusCode::OK),
        json!({"items": stored, "hasMore": false})
    );
    let window = app
        .send(TestRequest::get(format!("/db/conversations/{id}/context")))
        .await
        .expect(StatusCode::OK);
    let items = window["items"].as_array().unwrap();
    assert_eq!(items.len(), 20);
    assert_eq!(
        Value::Array(items.clone()),
        json!(stored.as_array().unwrap()[4..])
    );
}
