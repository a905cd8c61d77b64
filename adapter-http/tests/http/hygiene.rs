//! Error hygiene and input rules: causes stay in the log, every problem carries the
//! request id, body-less writes need the JSON content type, malformed escapes and
//! empty messages are refused; and the probes.

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode};
use conversation_adapter_http::probes;
use conversation_core::testkit::{Call, Intercepted, Interceptor};
use conversation_core::{Conversations, Error};
use conversation_store_memory::MemoryStore;
use serde_json::json;
use tower::ServiceExt as _;

use crate::support::{Options, Script, Step, TestApp, TestRequest, Unhealthy};

const DRIVER_TEXT: &str =
    "reading the window: error returned from database: (code: 5) database is locked";

fn assert_no_driver_text(text: &str) {
    for leak in [
        "database is locked",
        "code: 5",
        "sqlx",
        "reading the window",
    ] {
        assert!(!text.contains(leak), "{leak} leaked: {text}");
    }
}

/// A store whose reads of conversations fail with a driver's words.
#[derive(Debug)]
struct Locked;

#[conversation_adapter_http::async_trait]
impl Interceptor for Locked {
    async fn before(
        &self,
        _: Option<&conversation_core::Scope>,
        call: Call<'_>,
    ) -> conversation_core::Result<()> {
        match call {
            Call::GetConversation(_) => {
                Err(Error::unavailable(DRIVER_TEXT, "sqlx::Error::Database"))
            }
            _ => Ok(()),
        }
    }
}

#[tokio::test]
async fn a_503_says_a_stable_sentence_and_keeps_the_driver_text_in_the_log() {
    let app = TestApp::with(Options {
        store: Some(Arc::new(Intercepted::new(MemoryStore::new(), Locked))),
        ..Options::default()
    });
    let id = app.conversation("db").await.id;
    let response = app
        .send(TestRequest::get(format!("/db/conversations/{id}")))
        .await;
    let problem = response.expect_problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_no_driver_text(&problem.to_string());

    // A run that fails on the same words says a stable sentence too.
    let app = TestApp::new();
    let id = app.conversation("db").await.id;
    app.model.push(Script::Refuse(Error::unavailable(
        DRIVER_TEXT,
        "sqlx::Error::Database",
    )));
    let events = app
        .send(TestRequest::post(
            format!("/db/conversations/{id}/reply"),
            json!({"content": "hello"}),
        ))
        .await
        .events();
    let done = &events.last().unwrap().data;
    assert_eq!(done["run"]["status"], "failed", "{done}");
    assert_eq!(done["run"]["error"]["code"], "unavailable");
    assert_no_driver_text(&done.to_string());
}

#[tokio::test]
async fn every_problem_carries_the_request_id_of_its_response() {
    let app = TestApp::new();
    let requests = [
        TestRequest::get("/no/such/route"),
        TestRequest::new(Method::PUT, "/db/conversations"),
        TestRequest::get("/db/conversations?limit=abc"),
        TestRequest::get("/db/conversations/0190a1b2-0000-7000-8000-000000000000"),
        TestRequest::post("/db/conversations", json!({"title": ""})),
    ];
    for request in requests {
        let response = app.send(request).await;
        let problem = response.json();
        let id = response
            .header("x-request-id")
            .expect("an id on every response");
        assert_eq!(problem["requestId"], id, "{problem}");
        uuid_like(id);
    }
    // A client's own id is kept.
    let response = app
        .send(TestRequest::get("/no/such/route").header("x-request-id", "client-chosen-42"))
        .await;
    assert_eq!(response.header("x-request-id"), Some("client-chosen-42"));
    assert_eq!(response.json()["requestId"], "client-chosen-42");
}

#[tokio::test]
async fn a_failed_run_says_why_with_a_stable_code_and_the_response_its_request_id() {
    let app = TestApp::new();
    let id = app.conversation("db").await.id;
    app.model.push(Script::steps(vec![Step::Fail(Error::backend(
        "the provider answered garbage",
        "detail",
    ))]));
    let response = app
        .send(TestRequest::post(
            format!("/db/conversations/{id}/reply"),
            json!({"content": "hello"}),
        ))
        .await;
    uuid_like(response.header("x-request-id").unwrap());
    let events = response.events();
    let done = &events.last().unwrap().data;
    assert_eq!(done["run"]["error"]["code"], "backend", "{done}");
    assert!(!done.to_string().contains("garbage"), "{done}");
}

fn uuid_like(id: &str) {
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.matches('-').count(), 4, "{id}");
}

#[tokio::test]
async fn a_body_less_post_needs_the_json_content_type() {
    let app = TestApp::new();
    let id = app.conversation("db").await.id;
    app.service
        .append_user(&crate::support::scope_of("db"), id, "Which tables?")
        .await
        .unwrap();
    let title = format!("/db/conversations/{id}/title");
    // What a cross-site HTML form can send.
    for content_type in [
        None,
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let mut request = TestRequest::new(Method::POST, &title).raw_body("");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        app.send(request)
            .await
            .expect_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    assert_eq!(*app.titles.calls.lock().unwrap(), 0);
    for body in ["", "{}", " { } "] {
        app.send(
            TestRequest::new(Method::POST, &title)
                .header("content-type", "application/json")
                .raw_body(body),
        )
        .await
        .expect(StatusCode::OK);
    }
    for (body, code) in [
        ("{\"x\":1}", "invalid_body"),
        ("[]", "invalid_body"),
        ("{", "invalid_json"),
    ] {
        app.send(
            TestRequest::new(Method::POST, &title)
                .header("content-type", "application/json")
                .raw_body(body),
        )
        .await
        .expect_problem(StatusCode::BAD_REQUEST, code);
    }
}

#[tokio::test]
async fn a_scope_with_a_malformed_escape_is_refused_and_a_good_escape_decoded() {
    let app = TestApp::new();
    for path in [
        "/%ZZ/conversations",
        "/a%2/conversations",
        "/50%/conversations",
    ] {
        let problem = app
            .send(TestRequest::get(path))
            .await
            .expect_problem(StatusCode::BAD_REQUEST, "invalid_parameter");
        assert_eq!(problem["field"], "scope", "{path}");
    }
    let created = app
        .send(TestRequest::post("/my%20db%25/conversations", json!({})))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(created["scope"], "my db%");
}

#[tokio::test]
async fn a_user_message_without_content_is_refused() {
    let app = TestApp::new();
    let id = app.conversation("db").await.id;
    for body in [
        json!({"role": "user"}),
        json!({"role": "user", "content": ""}),
        json!({"role": "system", "content": "  \n "}),
        json!([{"role": "user", "content": "fine"}, {"role": "user"}]),
    ] {
        let problem = app
            .send(TestRequest::post(
                format!("/db/conversations/{id}/messages"),
                body.clone(),
            ))
            .await
            .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
        let field = problem["field"].as_str().unwrap();
        assert!(
            field.starts_with("messages[") && field.ends_with("].content"),
            "{body}: {problem}"
        );
    }
    assert!(app.messages("db", id).await.is_empty(), "nothing stored");
}

#[tokio::test]
async fn a_reply_to_an_empty_question_is_refused() {
    let app = TestApp::new();
    let id = app.conversation("db").await.id;
    for content in ["", "   "] {
        app.send(TestRequest::post(
            format!("/db/conversations/{id}/reply"),
            json!({"content": content}),
        ))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    }
    assert!(app.model.requests().is_empty(), "the model was never asked");
    assert!(app.messages("db", id).await.is_empty());
}

async fn probe(router: &Router, path: &str) -> (StatusCode, serde_json::Value) {
    let response = router
        .clone()
        .oneshot(
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn the_probes_say_alive_and_whether_the_store_is_ready() {
    let healthy: Router = probes(Conversations::new(Arc::new(MemoryStore::new())));
    assert_eq!(
        probe(&healthy, "/healthz").await,
        (StatusCode::OK, json!({"status": "alive"}))
    );
    assert_eq!(
        probe(&healthy, "/readyz").await,
        (
            StatusCode::OK,
            json!({"status": "ready", "store": "ok", "chatModel": false})
        )
    );

    let store = Intercepted::new(
        MemoryStore::new(),
        Unhealthy("the database file was deleted or replaced"),
    );
    let failing = TestApp::with(Options {
        store: Some(Arc::new(store)),
        ..Options::default()
    });
    let unready: Router = probes(failing.service.clone());
    assert_eq!(probe(&unready, "/healthz").await.0, StatusCode::OK);
    let (status, problem) = probe(&unready, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem["code"], "not_ready");
    assert_eq!(
        problem["detail"],
        "not ready: the database file was deleted or replaced"
    );
    assert!(!problem.to_string().contains("disk I/O"), "{problem}");
}
