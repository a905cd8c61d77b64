//! Scopes are isolated: every route called for scope B with a conversation of scope A
//! answers 404 and changes nothing; lists of B never show A's rows. And the host's
//! authorizer decides who may use a scope.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use conversation_adapter_http::{Denial, ScopeAuthorizer, async_trait};
use conversation_core::{NewMessage, Scope};
use serde_json::json;

use crate::support::{Options, Script, TestApp, TestRequest, delta, finished, scope_of};

#[tokio::test]
async fn every_route_of_another_scope_is_404_and_changes_nothing() {
    let app = TestApp::new();
    let a = scope_of("tenant-a");
    let conversation = app.conversation("tenant-a").await;
    let id = conversation.id;
    app.service
        .append(
            &a,
            id,
            vec![
                NewMessage::user("secret question"),
                NewMessage::assistant("secret answer"),
            ],
        )
        .await
        .unwrap();
    app.service.wait_for_titles().await;
    let before = app.stored("tenant-a", id).await;
    let messages_before = app.messages("tenant-a", id).await;
    // B has rows of its own.
    let own = app.conversation("tenant-b").await;
    app.model
        .push(Script::steps(vec![delta("leak"), finished()]));

    let base = format!("/tenant-b/conversations/{id}");
    let requests = [
        TestRequest::get(&base),
        TestRequest::patch(&base, json!({"title": "hijacked", "pinned": true})),
        TestRequest::patch(&base, json!({"archived": true})).header("if-match", "*"),
        TestRequest::patch(&base, json!({"archived": true})).header("if-match", "\"3\""),
        TestRequest::delete(&base),
        TestRequest::get(format!("{base}/messages")),
        TestRequest::get(format!("{base}/messages?after=0")),
        TestRequest::post(
            format!("{base}/messages"),
            json!({"role": "user", "content": "x"}),
        ),
        TestRequest::post(
            format!("{base}/messages"),
            json!({"role": "user", "content": "x"}),
        )
        .header("if-match", "\"3\""),
        TestRequest::get(format!("{base}/context")),
        TestRequest::post(format!("{base}/title"), json!({})),
        TestRequest::post(format!("{base}/reply"), json!({"content": "tell me"})),
    ];
    for request in requests {
        let response = app.send(request).await;
        let problem = response.expect_problem(StatusCode::NOT_FOUND, "not_found");
        assert!(!response.text.contains("secret"), "{problem}");
    }
    assert!(app.model.requests().is_empty(), "the model was never asked");

    let after = app.stored("tenant-a", id).await;
    assert_eq!(after, before);
    assert_eq!(app.messages("tenant-a", id).await, messages_before);

    // Lists of B show only B's rows, in every filter; A's list shows A's.
    for query in [
        "",
        "?archived=include",
        "?archived=only",
        "?pinned=true",
        "?q=secret",
    ] {
        let page = app
            .send(TestRequest::get(format!("/tenant-b/conversations{query}")))
            .await
            .expect(StatusCode::OK);
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["scope"], "tenant-b", "{query}: {item}");
            assert_eq!(item["id"], own.id.to_string());
        }
    }
    let page = app
        .send(TestRequest::get("/tenant-a/conversations"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], id.to_string());
}

/// The crate documentation's example: each bearer token opens exactly one scope.
#[derive(Debug)]
struct BearerPerScope {
    scope_of_token: HashMap<String, String>,
}

#[async_trait]
impl ScopeAuthorizer for BearerPerScope {
    async fn authorize(&self, request: &Parts, scope: &Scope) -> Result<(), Denial> {
        let token = request
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Denial::unauthenticated(r#"Bearer realm="conversations""#))?;
        match self.scope_of_token.get(token) {
            Some(allowed) if allowed == scope.as_str() => Ok(()),
            Some(_) => Err(Denial::NotFound),
            None => Err(Denial::unauthenticated(r#"Bearer error="invalid_token""#)),
        }
    }
}

#[tokio::test]
async fn a_host_authorizer_decides_who_may_use_a_scope() {
    let app = TestApp::with(Options {
        authorizer: Some(Arc::new(BearerPerScope {
            scope_of_token: HashMap::from([
                ("token-a".to_owned(), "tenant-a".to_owned()),
                ("token-b".to_owned(), "tenant-b".to_owned()),
            ]),
        })),
        ..Options::default()
    });
    let id = app.conversation("tenant-a").await.id;
    let path = format!("/tenant-a/conversations/{id}");

    let response = app.send(TestRequest::get(&path)).await;
    response.expect_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer realm="conversations""#)
    );
    app.send(TestRequest::get(&path).header("authorization", "Bearer nope"))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    // B's valid token on A's scope: nothing there, as far as B can tell.
    app.send(TestRequest::get(&path).header("authorization", "Bearer token-b"))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not_found");
    let conversation = app
        .send(TestRequest::get(&path).header("authorization", "Bearer token-a"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(conversation["id"], id.to_string());

    // The authorizer runs before ids, query and body are read: no token, no detail.
    app.send(TestRequest::get("/tenant-a/conversations/not-a-uuid"))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    app.send(TestRequest::get("/tenant-a/conversations?limit=abc"))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    app.send(
        TestRequest::new(Method::POST, "/tenant-a/conversations")
            .header("content-type", "application/json")
            .raw_body("{not json"),
    )
    .await
    .expect_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    // Refused writes change nothing.
    app.send(
        TestRequest::patch(&path, json!({"title": "hijacked"}))
            .header("authorization", "Bearer token-b"),
    )
    .await
    .expect_problem(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(app.stored("tenant-a", id).await.version, 1);
    // The document describes the API, not data: never authorised.
    app.send(TestRequest::get("/openapi.json"))
        .await
        .expect(StatusCode::OK);
}

#[derive(Debug)]
struct NobodyMayWrite;

#[async_trait]
impl ScopeAuthorizer for NobodyMayWrite {
    async fn authorize(&self, request: &Parts, _scope: &Scope) -> Result<(), Denial> {
        if request.method == Method::GET {
            Ok(())
        } else {
            Err(Denial::Forbidden)
        }
    }
}

#[tokio::test]
async fn a_forbidden_caller_gets_403() {
    let app = TestApp::with(Options {
        authorizer: Some(Arc::new(NobodyMayWrite)),
        ..Options::default()
    });
    app.send(TestRequest::get("/s/conversations"))
        .await
        .expect(StatusCode::OK);
    app.send(TestRequest::post("/s/conversations", json!({})))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    let page = app
        .send(TestRequest::get("/s/conversations"))
        .await
        .expect(StatusCode::OK);
    assert!(page["items"].as_array().unwrap().is_empty());
}
