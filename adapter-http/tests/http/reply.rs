//! `POST …/reply`: the SSE stream against a scripted model, through the router and
//! over loopback HTTP.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use conversation_core::{Error, ReplyEvent, Role, TitleSource, ToolCall};
use serde_json::json;
use tokio::sync::{Notify, oneshot};

use conversation_adapter_http::HttpLimits;

use crate::support::{
    GENERATED_TITLE, Options, Script, SseEvent, SseReader, Step, TestApp, TestRequest, delta,
    finished, names,
};

fn reply_path(scope: &str, id: impl std::fmt::Display) -> String {
    format!("/{scope}/conversations/{id}/reply")
}

/// Asks for a reply to `content` and reads the whole event stream.
async fn reply_events(
    app: &TestApp,
    scope: &str,
    id: impl std::fmt::Display,
    content: &str,
) -> Vec<SseEvent> {
    app.send(TestRequest::post(
        reply_path(scope, id),
        json!({ "content": content }),
    ))
    .await
    .events()
}

#[tokio::test]
async fn a_reply_streams_deltas_and_tool_calls_then_is_stored_and_titled() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    let call = ToolCall {
        id: "call_1".into(),
        name: "run_sql".into(),
        arguments: json!({"sql": "select pg_size_pretty(1)"}),
    };
    app.model.push(Script::steps(vec![
        delta("Let me "),
        delta("check."),
        Step::Event(ReplyEvent::ToolCall { call: call.clone() }),
        finished(),
    ]));
    let response = app
        .send(TestRequest::post(
            reply_path("db-1", id),
            json!({
                "id": "0190a1b2-0000-7000-8000-0000000000aa",
                "content": "Which tables are largest?",
                "tools": [{"name": "run_sql", "description": "Runs SQL", "parameters": {"type": "object"}}],
            }),
        ))
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("cache-control"), Some("no-cache"));
    let events = response.events();
    assert_eq!(
        names(&events),
        ["message", "delta", "delta", "toolCall", "done"]
    );

    let user = &events[0].data;
    assert_eq!(
        user["message"]["id"],
        "0190a1b2-0000-7000-8000-0000000000aa"
    );
    assert_eq!(user["message"]["role"], "user");
    assert_eq!(user["message"]["seq"], 1);
    assert_eq!(user["conversation"]["title"], "Which tables are largest?");
    assert_eq!(events[1].data, json!({"text": "Let me "}));
    assert_eq!(events[3].data, serde_json::to_value(&call).unwrap());
    let done = &events[4].data;
    assert_eq!(done["message"]["role"], "assistant");
    assert_eq!(done["message"]["seq"], 2);
    assert_eq!(done["message"]["content"], "Let me check.");
    assert_eq!(
        done["message"]["toolCalls"][0],
        serde_json::to_value(&call).unwrap()
    );
    assert_eq!(done["message"]["metadata"]["finishReason"], "stop");
    assert_eq!(done["conversation"]["messageCount"], 2);

    // The model got the window with the user's message and the tools.
    let requests = app.model.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].messages.last().unwrap().content,
        "Which tables are largest?"
    );
    assert_eq!(requests[0].tools[0].name, "run_sql");

    let stored = app.messages("db-1", id).await;
    assert_eq!(
        stored.iter().map(|m| (m.seq, m.role)).collect::<Vec<_>>(),
        [(1, Role::User), (2, Role::Assistant)]
    );
    // Storing the reply started title generation in the background.
    app.service.wait_for_titles().await;
    let conversation = app.stored("db-1", id).await;
    assert_eq!(conversation.title.as_deref(), Some(GENERATED_TITLE));
    assert_eq!(conversation.title_source, TitleSource::Generated);
    assert_eq!(*app.titles.calls.lock().unwrap(), 1);
}

#[tokio::test]
async fn a_user_title_is_not_regenerated_after_a_reply() {
    let app = TestApp::new();
    let scope = crate::support::scope_of("db-1");
    let id = app.conversation("db-1").await.id;
    app.service.rename(&scope, id, "Mine").await.unwrap();
    app.model.push(Script::steps(vec![delta("Hi"), finished()]));
    let events = reply_events(&app, "db-1", id, "hello").await;
    assert_eq!(names(&events), ["message", "delta", "done"]);
    app.service.wait_for_titles().await;
    assert_eq!(*app.titles.calls.lock().unwrap(), 0);
    assert_eq!(app.stored("db-1", id).await.title.as_deref(), Some("Mine"));
}

#[tokio::test]
async fn a_model_failing_mid_stream_gives_an_error_event_and_stores_no_reply() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    app.model.push(Script::steps(vec![
        delta("partial"),
        Step::Fail(Error::unavailable(
            "stream",
            "connection reset by the provider",
        )),
    ]));
    let events = reply_events(&app, "db-1", id, "hello").await;
    assert_eq!(names(&events), ["message", "delta", "error"]);
    let problem = &events[2].data;
    assert_eq!(problem["status"], 503);
    assert_eq!(problem["code"], "unavailable");
    assert!(
        !problem["detail"]
            .as_str()
            .unwrap()
            .contains("connection reset"),
        "the source is not sent: {problem}"
    );
    let stored = app.messages("db-1", id).await;
    assert_eq!(stored.len(), 1, "only the user's message: {stored:?}");
    assert_eq!(stored[0].role, Role::User);
    app.service.wait_for_titles().await;
    assert_eq!(*app.titles.calls.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_backend_fault_mid_stream_is_an_opaque_500_event() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    app.model.push(Script::steps(vec![Step::Fail(Error::backend(
        "provider answered garbage",
        "secret internal detail",
    ))]));
    let events = reply_events(&app, "db-1", id, "hello").await;
    assert_eq!(names(&events), ["message", "error"]);
    assert_eq!(events[1].data["status"], 500);
    assert_eq!(events[1].data["code"], "internal_error");
    let text = events[1].data.to_string();
    assert!(
        !text.contains("secret") && !text.contains("garbage"),
        "{text}"
    );
    assert_eq!(app.messages("db-1", id).await.len(), 1);
}

#[tokio::test]
async fn a_stream_cut_off_before_finishing_is_an_error_and_stores_no_reply() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    app.model.push(Script::steps(vec![delta("half a thou")]));
    let events = reply_events(&app, "db-1", id, "hello").await;
    assert_eq!(names(&events), ["message", "delta", "error"]);
    assert_eq!(events[2].data["code"], "unavailable");
    assert_eq!(app.messages("db-1", id).await.len(), 1);
}

#[tokio::test]
async fn a_model_refusing_to_start_is_a_problem_and_a_retry_stores_the_user_message_once() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    let body = json!({"id": "0190a1b2-0000-7000-8000-0000000000bb", "content": "hello"});
    app.model
        .push(Script::Refuse(Error::unavailable("rate limited", "429")));
    let response = app
        .send(TestRequest::post(reply_path("db-1", id), body.clone()))
        .await;
    response.expect_problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(app.messages("db-1", id).await.len(), 1);

    app.model.push(Script::steps(vec![delta("Hi"), finished()]));
    let events = app
        .send(TestRequest::post(reply_path("db-1", id), body))
        .await
        .events();
    assert_eq!(names(&events), ["message", "delta", "done"]);
    let stored = app.messages("db-1", id).await;
    assert_eq!(
        stored.iter().map(|m| (m.seq, m.role)).collect::<Vec<_>>(),
        [(1, Role::User), (2, Role::Assistant)]
    );
}

#[tokio::test]
async fn without_a_model_reply_is_501_and_stores_nothing() {
    let app = TestApp::with(Options {
        no_model: true,
        ..Options::default()
    });
    let id = app.conversation("db-1").await.id;
    app.send(TestRequest::post(
        reply_path("db-1", id),
        json!({"content": "hello"}),
    ))
    .await
    .expect_problem(StatusCode::NOT_IMPLEMENTED, "model_not_configured");
    assert!(app.messages("db-1", id).await.is_empty());
}

#[tokio::test]
async fn reply_input_errors_are_problems_before_any_stream() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    app.send(TestRequest::post(
        reply_path("db-1", id),
        json!({"content": "a\u{0}b"}),
    ))
    .await
    .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    app.send(TestRequest::post(
        reply_path("db-1", id),
        json!({"text": "hello"}),
    ))
    .await
    .expect_problem(StatusCode::BAD_REQUEST, "invalid_body");
    app.send(TestRequest::post(
        reply_path("db-1", conversation_core::ConversationId::new()),
        json!({"content": "hello"}),
    ))
    .await
    .expect_problem(StatusCode::NOT_FOUND, "not_found");
    assert!(app.model.requests().is_empty());
    assert!(app.messages("db-1", id).await.is_empty());
}

/// Reads SSE events from a loopback response until `until` says stop.
async fn read_events(
    response: &mut reqwest::Response,
    reader: &mut SseReader,
    events: &mut Vec<SseEvent>,
    until: impl Fn(&[SseEvent]) -> bool,
) {
    while !until(events) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("the stream stalled")
            .unwrap()
            .expect("the stream ended early");
        events.extend(reader.push(std::str::from_utf8(&chunk).unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_loopback_events_arrive_while_the_model_is_still_replying() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    let address = app.serve().await;
    let go_on = Arc::new(Notify::new());
    app.model.push(Script::steps(vec![
        delta("first "),
        Step::WaitFor(go_on.clone()),
        delta("second"),
        finished(),
    ]));
    let mut response = reqwest::Client::new()
        .post(format!(
            "http://{address}{}{}",
            crate::support::PREFIX,
            reply_path("db-1", id)
        ))
        .header("content-type", "application/json")
        .body(json!({"content": "hello"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let mut reader = SseReader::default();
    let mut events = Vec::new();
    // The first delta arrives while the model is held back.
    read_events(&mut response, &mut reader, &mut events, |e| e.len() >= 2).await;
    assert_eq!(names(&events), ["message", "delta"]);
    assert_eq!(
        app.messages("db-1", id).await.len(),
        1,
        "no reply stored yet"
    );
    go_on.notify_one();
    read_events(&mut response, &mut reader, &mut events, |e| {
        e.last().is_some_and(|e| e.event == "done")
    })
    .await;
    assert_eq!(names(&events), ["message", "delta", "delta", "done"]);
    assert_eq!(events[3].data["message"]["content"], "first second");
    assert!(
        response.chunk().await.unwrap().is_none(),
        "the stream ends after done"
    );
    assert_eq!(app.messages("db-1", id).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnecting_mid_stream_leaves_the_user_message_and_no_reply() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    let address = app.serve().await;
    let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
    app.model.push(Script::Stream {
        steps: vec![delta("I will never finish"), Step::Hang],
        dropped: Some(dropped_tx),
    });
    let url = format!(
        "http://{address}{}{}",
        crate::support::PREFIX,
        reply_path("db-1", id)
    );
    let client = reqwest::Client::new();
    let mut response = client
        .post(&url)
        .header("content-type", "application/json")
        .body(json!({"content": "hello"}).to_string())
        .send()
        .await
        .unwrap();
    let mut reader = SseReader::default();
    let mut events = Vec::new();
    read_events(&mut response, &mut reader, &mut events, |e| {
        e.iter().any(|e| e.event == "delta")
    })
    .await;
    drop(response);
    drop(client);
    // The server drops the model's stream once the connection is gone.
    let dropped = tokio::time::timeout(Duration::from_secs(10), dropped_rx).await;
    assert!(
        matches!(dropped, Ok(Err(_))),
        "the model's stream was not dropped after the client left"
    );
    let stored = app.messages("db-1", id).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].role, Role::User);
    assert_eq!(app.stored("db-1", id).await.message_count, 1);

    // The conversation stays usable: the next reply streams and stores with no gap.
    app.model
        .push(Script::steps(vec![delta("Now I finish"), finished()]));
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(json!({"content": "again"}).to_string())
        .send()
        .await
        .unwrap();
    let mut reader = SseReader::default();
    let mut events = reader.push(&response.text().await.unwrap());
    events.extend(reader.push("\n\n"));
    assert_eq!(names(&events), ["message", "delta", "done"]);
    let stored = app.messages("db-1", id).await;
    assert_eq!(
        stored
            .iter()
            .map(|m| (m.seq, m.role, m.content.as_str()))
            .collect::<Vec<_>>(),
        [
            (1, Role::User, "hello"),
            (2, Role::User, "again"),
            (3, Role::Assistant, "Now I finish"),
        ]
    );
}

#[tokio::test]
async fn a_model_that_never_starts_is_a_503_timeout_and_the_user_message_stays() {
    let app = TestApp::with(Options {
        limits: Some(HttpLimits::default().with_reply_start_timeout(Duration::from_millis(200))),
        ..Options::default()
    });
    let id = app.conversation("db-1").await.id;
    app.model.push(Script::Stall);
    let response = app
        .send(TestRequest::post(
            reply_path("db-1", id),
            json!({"content": "hello"}),
        ))
        .await;
    response.expect_problem(StatusCode::SERVICE_UNAVAILABLE, "timeout");
    assert_eq!(response.header("retry-after"), Some("1"));
    let stored = app.messages("db-1", id).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].role, Role::User);
}

#[tokio::test]
async fn a_stream_outlives_the_request_timeouts() {
    let app = TestApp::with(Options {
        limits: Some(
            HttpLimits::default()
                .with_request_timeout(Duration::from_millis(100))
                .with_reply_start_timeout(Duration::from_millis(100))
                .with_keep_alive(Duration::from_millis(50)),
        ),
        ..Options::default()
    });
    let id = app.conversation("db-1").await.id;
    let go_on = Arc::new(Notify::new());
    app.model.push(Script::steps(vec![
        delta("slow "),
        Step::WaitFor(go_on.clone()),
        delta("reply"),
        finished(),
    ]));
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        go_on.notify_one();
    });
    let response = app
        .send(TestRequest::post(
            reply_path("db-1", id),
            json!({"content": "hello"}),
        ))
        .await;
    release.await.unwrap();
    let events = response.events();
    assert_eq!(names(&events), ["message", "delta", "delta", "done"]);
    assert!(
        response.text.contains(":\n"),
        "keep-alive comments flowed: {}",
        response.text
    );
    assert_eq!(app.messages("db-1", id).await.len(), 2);
}

#[tokio::test]
async fn a_panicking_model_is_an_opaque_500() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    app.model.push(Script::Panic);
    let response = app
        .send(TestRequest::post(
            reply_path("db-1", id),
            json!({"content": "hello"}),
        ))
        .await;
    response.expect_problem(StatusCode::INTERNAL_SERVER_ERROR, "internal_error");
    assert!(!response.text.contains("scripted"), "{}", response.text);
}
