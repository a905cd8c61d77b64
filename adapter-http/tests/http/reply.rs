//! `POST …/reply` and the run routes: the SSE stream of a run against a scripted
//! model, through the router and over loopback HTTP; runs that outlive their
//! connection, reattaching, stopping, one run at a time.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use conversation_core::{
    Error, ModelErrorKind, ReplyEvent, Role, RunLimits, TitleSource, ToolCall,
};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

use conversation_adapter_http::HttpLimits;

use crate::support::{
    GENERATED_TITLE, Options, PREFIX, Script, SseEvent, SseReader, Step, TestApp, TestRequest,
    delta, finished, names,
};

fn reply_path(scope: &str, id: impl std::fmt::Display) -> String {
    format!("/{scope}/conversations/{id}/reply")
}

fn run_path(scope: &str, id: impl std::fmt::Display, run: impl std::fmt::Display) -> String {
    format!("/{scope}/conversations/{id}/runs/{run}")
}

/// Asks `content` and reads the whole event stream.
async fn reply_events(
    app: &TestApp,
    scope: &str,
    id: impl std::fmt::Display,
    body: Value,
) -> Vec<SseEvent> {
    app.send(TestRequest::post(reply_path(scope, id), body))
        .await
        .events()
}

fn done(events: &[SseEvent]) -> &Value {
    let last = events.last().expect("events");
    assert_eq!(last.event, "done", "the stream ends with done: {events:?}");
    &last.data
}

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events.iter().map(|e| e.id.expect("an event id")).collect()
}

#[tokio::test]
async fn a_run_streams_its_events_with_ids_stores_question_and_answer_and_titles() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    app.model.push(Script::steps(vec![
        delta("Orders "),
        delta("is largest."),
        finished(),
    ]));
    let events = reply_events(
        &app,
        "db-1",
        id,
        json!({"id": "0190a1b2-0000-7000-8000-0000000000aa", "content": "Which tables are largest?"}),
    )
    .await;
    assert_eq!(
        names(&events),
        ["run", "message", "delta", "delta", "message", "done"]
    );
    assert_eq!(ids(&events), [1, 2, 3, 4, 5, 6]);
    assert_eq!(events[0].data["status"], "running");
    let question = &events[1].data;
    assert_eq!(
        question["message"]["id"],
        "0190a1b2-0000-7000-8000-0000000000aa"
    );
    assert_eq!(question["message"]["role"], "user");
    assert_eq!(
        question["conversation"]["title"],
        "Which tables are largest?"
    );
    assert_eq!(
        question["conversation"]["activeRunId"],
        events[0].data["id"]
    );
    assert_eq!(events[4].data["message"]["content"], "Orders is largest.");
    let ended = done(&events);
    assert_eq!(ended["run"]["status"], "completed");
    assert_eq!(ended["conversation"]["activeRunId"], Value::Null);
    app.service.wait_for_titles().await;
    let conversation = app.stored("db-1", id).await;
    assert_eq!(conversation.title.as_deref(), Some(GENERATED_TITLE));
    assert_eq!(conversation.title_source, TitleSource::Generated);
    // The run reads back as it ended.
    let run = app
        .send(TestRequest::get(run_path(
            "db-1",
            id,
            events[0].data["id"].as_str().unwrap(),
        )))
        .await
        .expect(StatusCode::OK);
    assert_eq!(run["status"], "completed");
}

#[tokio::test]
async fn a_user_title_is_not_regenerated_after_a_reply() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    app.service
        .rename(&crate::support::scope_of("db-1"), id, "Mine")
        .await
        .unwrap();
    app.model.push(Script::steps(vec![delta("ok"), finished()]));
    reply_events(&app, "db-1", id, json!({"content": "hello"})).await;
    app.service.wait_for_titles().await;
    assert_eq!(app.stored("db-1", id).await.title.as_deref(), Some("Mine"));
    assert_eq!(*app.titles.calls.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_client_tool_call_requires_action_and_continue_answers_after_its_result() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    let call = ToolCall {
        id: "call_1".into(),
        name: "run_sql".into(),
        arguments: json!({"sql": "select 1"}),
    };
    app.model.push(Script::steps(vec![
        delta("Let me check."),
        Step::Event(ReplyEvent::ToolCall { call: call.clone() }),
        finished(),
    ]));
    let events = reply_events(
        &app,
        "db-1",
        id,
        json!({
            "content": "Count rows",
            "tools": [{"name": "run_sql", "description": "Runs SQL", "parameters": {"type": "object"}}],
        }),
    )
    .await;
    assert_eq!(
        names(&events),
        ["run", "message", "delta", "toolCall", "message", "done"]
    );
    assert_eq!(events[3].data["name"], "run_sql");
    let ended = done(&events);
    assert_eq!(ended["run"]["status"], "requires_action");
    assert_eq!(ended["run"]["pendingToolCalls"][0]["id"], "call_1");

    // Continuing while the head is the call is refused; after the result it answers.
    app.send(TestRequest::post(reply_path("db-1", id), json!({})))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    app.send(TestRequest::post(
        format!("/db-1/conversations/{id}/messages"),
        json!({"role": "tool", "toolCallId": "call_1", "content": "1"}),
    ))
    .await
    .expect(StatusCode::CREATED);
    app.model
        .push(Script::steps(vec![delta("One row."), finished()]));
    let events = reply_events(&app, "db-1", id, json!({})).await;
    assert_eq!(
        events[1].data["message"]["role"], "tool",
        "it continues from the result"
    );
    assert_eq!(done(&events)["run"]["status"], "completed");
    let roles: Vec<Role> = app.model.requests()[1]
        .messages
        .iter()
        .map(|m| m.role)
        .collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool]);
}

#[tokio::test]
async fn a_model_failing_mid_stream_fails_the_run_and_keeps_the_partial_answer() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    app.model.push(Script::steps(vec![
        delta("partial"),
        Step::Fail(Error::model(
            ModelErrorKind::RateLimited,
            "Rate limited by the provider. Retry after 30 s.",
        )),
    ]));
    let events = reply_events(&app, "db-1", id, json!({"content": "hello"})).await;
    assert_eq!(
        names(&events),
        ["run", "message", "delta", "message", "done"]
    );
    let ended = done(&events);
    assert_eq!(ended["run"]["status"], "failed");
    assert_eq!(ended["run"]["error"]["code"], "upstream_rate_limited");
    let stored = app.messages("db-1", id).await;
    assert_eq!(stored[1].content, "partial");
    assert_eq!(stored[1].metadata["finishReason"], json!("error"));
}

#[tokio::test]
async fn a_model_refusing_to_start_fails_the_run_and_a_retry_stores_the_question_once() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    let body = json!({"id": "0190a1b2-0000-7000-8000-0000000000bb", "content": "hello"});
    app.model.push(Script::Refuse(Error::model(
        ModelErrorKind::Unauthorized,
        "The provider refused the API key. Check the API key.",
    )));
    let events = reply_events(&app, "db-1", id, body.clone()).await;
    let ended = done(&events);
    assert_eq!(ended["run"]["error"]["code"], "upstream_unauthorized");
    assert_eq!(
        ended["run"]["error"]["message"],
        "The provider refused the API key. Check the API key."
    );
    // The retry answers the stored question; it is not stored twice.
    app.model.push(Script::steps(vec![delta("hi"), finished()]));
    let events = reply_events(&app, "db-1", id, body.clone()).await;
    assert_eq!(done(&events)["run"]["status"], "completed");
    assert_eq!(app.messages("db-1", id).await.len(), 2);
    // A third retry of a question answered already is refused: never asked twice.
    app.send(TestRequest::post(reply_path("db-1", id), body))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_eq!(app.model.requests().len(), 2);
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
    for (body, status, code) in [
        (
            json!({"content": "x", "role": "user"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"content": 5}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"content": "a\u{0}b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            json!({"content": "   "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
    ] {
        app.send(TestRequest::post(reply_path("db-1", id), body.clone()))
            .await
            .expect_problem(status, code);
    }
    app.send(TestRequest::post(
        reply_path("db-1", conversation_core::ConversationId::new()),
        json!({"content": "hello"}),
    ))
    .await
    .expect_problem(StatusCode::NOT_FOUND, "not_found");
    assert!(app.messages("db-1", id).await.is_empty());
    assert!(app.model.requests().is_empty());
}

#[tokio::test]
async fn two_starts_at_once_exactly_one_wins() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    let go_on = Arc::new(Notify::new());
    app.model.push(Script::steps(vec![
        Step::WaitFor(go_on.clone()),
        delta("a"),
        finished(),
    ]));
    let (a, b) = tokio::join!(
        app.open(TestRequest::post(
            reply_path("db-1", id),
            json!({"content": "one"})
        )),
        app.open(TestRequest::post(
            reply_path("db-1", id),
            json!({"content": "two"})
        )),
    );
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let refused = if a.status() == StatusCode::CONFLICT {
        a
    } else {
        b
    };
    let problem = crate::support::TestResponse::read(refused).await;
    problem.expect_problem(StatusCode::CONFLICT, "run_in_progress");
    assert_eq!(
        app.messages("db-1", id).await.len(),
        1,
        "the loser stored nothing"
    );
    go_on.notify_one();
}

#[tokio::test]
async fn runs_of_another_conversation_or_scope_are_not_found() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    let other = app.conversation("db-1").await.id;
    app.model.push(Script::steps(vec![delta("ok"), finished()]));
    let events = reply_events(&app, "db-1", id, json!({"content": "hello"})).await;
    let run = events[0].data["id"].as_str().unwrap().to_owned();
    for path in [run_path("db-1", other, &run), run_path("db-2", id, &run)] {
        app.send(TestRequest::get(path.clone()))
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not_found");
        app.send(TestRequest::get(format!("{path}/events")))
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not_found");
        app.send(TestRequest::post(format!("{path}/cancel"), json!({})))
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not_found");
    }
    app.send(TestRequest::get(run_path("db-1", id, "not-a-run")))
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid_parameter");
    // Cancelling a run that has ended is refused.
    let problem = app
        .send(TestRequest::post(
            format!("{}/cancel", run_path("db-1", id, &run)),
            json!({}),
        ))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_eq!(problem["field"], "runId");
}

#[tokio::test]
async fn a_finished_run_replays_exactly_the_events_after_last_event_id() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    app.model
        .push(Script::steps(vec![delta("a"), delta("b"), finished()]));
    let events = reply_events(&app, "db-1", id, json!({"content": "hello"})).await;
    let run = events[0].data["id"].as_str().unwrap().to_owned();
    let replayed = app
        .send(
            TestRequest::get(format!("{}/events", run_path("db-1", id, &run)))
                .header("last-event-id", "3"),
        )
        .await
        .events();
    assert_eq!(ids(&replayed), ids(&events[3..]));
    assert_eq!(names(&replayed), names(&events[3..]));
    let by_query = app
        .send(TestRequest::get(format!(
            "{}/events?after=5",
            run_path("db-1", id, &run)
        )))
        .await
        .events();
    assert_eq!(names(&by_query), ["done"]);
    app.send(
        TestRequest::get(format!("{}/events", run_path("db-1", id, &run)))
            .header("last-event-id", "x"),
    )
    .await
    .expect_problem(StatusCode::BAD_REQUEST, "invalid_header");
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

async fn post_reply(
    address: std::net::SocketAddr,
    id: impl std::fmt::Display,
    body: Value,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!(
            "http://{address}{PREFIX}{}",
            reply_path("db-1", id)
        ))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
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
    let mut response = post_reply(address, id, json!({"content": "hello"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let mut reader = SseReader::default();
    let mut events = Vec::new();
    // The run and the question arrive at once, the first delta while the model waits.
    read_events(&mut response, &mut reader, &mut events, |e| e.len() >= 3).await;
    assert_eq!(names(&events), ["run", "message", "delta"]);
    assert_eq!(
        app.messages("db-1", id).await.len(),
        1,
        "no answer stored yet"
    );
    go_on.notify_one();
    read_events(&mut response, &mut reader, &mut events, |e| {
        e.last().is_some_and(|e| e.event == "done")
    })
    .await;
    assert_eq!(
        names(&events),
        ["run", "message", "delta", "delta", "message", "done"]
    );
    assert_eq!(events[4].data["message"]["content"], "first second");
    assert!(
        response.chunk().await.unwrap().is_none(),
        "the stream ends after done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_run_leaves_it_to_finish_and_reattaches_with_last_event_id() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    let address = app.serve().await;
    let go_on = Arc::new(Notify::new());
    app.model.push(Script::steps(vec![
        delta("before "),
        Step::WaitFor(go_on.clone()),
        delta("after"),
        finished(),
    ]));
    let mut response = post_reply(address, id, json!({"content": "hello"})).await;
    let mut reader = SseReader::default();
    let mut events = Vec::new();
    read_events(&mut response, &mut reader, &mut events, |e| e.len() >= 3).await;
    let run = events[0].data["id"].as_str().unwrap().to_owned();
    let last_seen = events.last().unwrap().id.unwrap();
    // The tab closes: the connection goes, the run goes on and stores its answer.
    drop(response);
    go_on.notify_one();
    let mut answered = false;
    for _ in 0..200 {
        if app.messages("db-1", id).await.len() == 2 {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(answered, "the run finished without its client");
    let stored = app.messages("db-1", id).await;
    assert_eq!(stored[1].content, "before after");
    // Reattaching gets exactly the events it missed.
    let mut response = reqwest::Client::new()
        .get(format!(
            "http://{address}{PREFIX}{}/events",
            run_path("db-1", id, &run)
        ))
        .header("last-event-id", last_seen.to_string())
        .send()
        .await
        .unwrap();
    let mut missed = Vec::new();
    read_events(&mut response, &mut SseReader::default(), &mut missed, |e| {
        e.last().is_some_and(|e| e.event == "done")
    })
    .await;
    assert_eq!(names(&missed), ["delta", "message", "done"]);
    assert_eq!(missed[0].id, Some(last_seen + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_model_at_once_and_keeps_the_partial_answer() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    let address = app.serve().await;
    let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
    app.model.push(Script::Stream {
        steps: vec![delta("Hello wor"), Step::Hang],
        dropped: Some(dropped_tx),
    });
    let mut response = post_reply(address, id, json!({"content": "hello"})).await;
    let mut reader = SseReader::default();
    let mut events = Vec::new();
    read_events(&mut response, &mut reader, &mut events, |e| e.len() >= 3).await;
    let run = events[0].data["id"].as_str().unwrap().to_owned();
    // Another client (another tab) stops it.
    let stopped = reqwest::Client::new()
        .post(format!(
            "http://{address}{PREFIX}{}/cancel",
            run_path("db-1", id, &run)
        ))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 202);
    tokio::time::timeout(Duration::from_millis(100), dropped_rx)
        .await
        .expect("the model's stream was dropped within 100 ms")
        .ok();
    read_events(&mut response, &mut reader, &mut events, |e| {
        e.last().is_some_and(|e| e.event == "done")
    })
    .await;
    assert_eq!(events[events.len() - 1].data["run"]["status"], "cancelled");
    let stored = app.messages("db-1", id).await;
    assert_eq!(stored.len(), 2, "the partial answer is stored once");
    assert_eq!(stored[1].content, "Hello wor");
    assert_eq!(stored[1].metadata["finishReason"], json!("cancelled"));
}

#[tokio::test]
async fn a_model_that_never_starts_ends_the_run_by_its_budget() {
    let mut limits = RunLimits::default();
    limits.start_timeout = Duration::ZERO;
    let app = TestApp::with(Options {
        run_limits: Some(limits),
        ..Options::default()
    });
    let id = app.conversation("db-1").await.id;
    app.model.push(Script::Stall);
    let events = reply_events(&app, "db-1", id, json!({"content": "hello"})).await;
    let ended = done(&events);
    assert_eq!(ended["run"]["status"], "failed");
    assert_eq!(ended["run"]["error"]["code"], "upstream_timeout");
    let stored = app.messages("db-1", id).await;
    assert_eq!((stored.len(), stored[0].role), (1, Role::User));
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
    assert_eq!(
        names(&events),
        ["run", "message", "delta", "delta", "message", "done"]
    );
    assert!(
        response.text.contains(":\n"),
        "keep-alive comments flowed: {}",
        response.text
    );
}

#[tokio::test]
async fn a_panicking_model_fails_its_run_and_says_nothing_of_it() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    app.model.push(Script::Panic);
    let response = app
        .send(TestRequest::post(
            reply_path("db-1", id),
            json!({"content": "hello"}),
        ))
        .await;
    let events = response.events();
    let ended = done(&events);
    assert_eq!(ended["run"]["status"], "failed");
    assert_eq!(ended["run"]["error"]["code"], "internal_error");
    assert!(!response.text.contains("scripted"), "{}", response.text);
    // The conversation is free for the next run.
    app.model.push(Script::steps(vec![delta("ok"), finished()]));
    let events = reply_events(&app, "db-1", id, json!({"content": "again"})).await;
    assert_eq!(done(&events)["run"]["status"], "completed");
}
