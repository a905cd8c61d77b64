//! The success path of every route, against the memory store.

use axum::http::StatusCode;
use conversation_core::{ContextPolicy, ConversationId, NewMessage, Role};
use serde_json::{Value, json};

use crate::support::{GENERATED_TITLE, Options, PREFIX, TestApp, TestRequest, scope_of};

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn conversation_lifecycle_create_get_patch_delete() {
    let app = TestApp::new();
    let response = app
        .send(TestRequest::post(
            "/db-1/conversations",
            json!({"metadata": {"origin": "sidebar"}}),
        ))
        .await;
    let created = response.expect(StatusCode::CREATED);
    let id = id_of(&created);
    assert_eq!(
        response.header("location"),
        Some(format!("{PREFIX}/db-1/conversations/{id}").as_str())
    );
    assert_eq!(response.header("etag"), Some("\"1\""));
    assert_eq!(created["scope"], "db-1");
    assert_eq!(created["titleSource"], "none");
    assert_eq!(created["messageCount"], 0);
    assert_eq!(created["metadata"], json!({"origin": "sidebar"}));
    let created_at = created["createdAt"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.len() == "2026-11-26T13:25:51.120Z".len(),
        "{created_at}"
    );

    let response = app
        .send(TestRequest::get(format!("/db-1/conversations/{id}")))
        .await;
    assert_eq!(response.expect(StatusCode::OK), created);
    assert_eq!(response.header("etag"), Some("\"1\""));

    // Rename with the ETag: applies, new ETag.
    let response = app
        .send(
            TestRequest::patch(
                format!("/db-1/conversations/{id}"),
                json!({"title": "Sizes", "pinned": true}),
            )
            .header("if-match", "\"1\""),
        )
        .await;
    let renamed = response.expect(StatusCode::OK);
    assert_eq!(response.header("etag"), Some("\"2\""));
    assert_eq!(renamed["title"], "Sizes");
    assert_eq!(renamed["titleSource"], "user");
    assert_eq!(renamed["pinned"], true);
    assert_eq!(renamed["version"], 2);

    // A stale If-Match: 412 and nothing changes.
    app.send(
        TestRequest::patch(
            format!("/db-1/conversations/{id}"),
            json!({"title": "Lost"}),
        )
        .header("if-match", "\"1\""),
    )
    .await
    .expect_problem(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    // Several tags, one of them current: applies.
    app.send(
        TestRequest::patch(
            format!("/db-1/conversations/{id}"),
            json!({"archived": true}),
        )
        .header("if-match", "\"1\", W/\"2\", \"2\""),
    )
    .await
    .expect(StatusCode::OK);
    // A weak tag never matches.
    app.send(
        TestRequest::patch(
            format!("/db-1/conversations/{id}"),
            json!({"archived": false}),
        )
        .header("if-match", "W/\"3\""),
    )
    .await
    .expect_problem(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    // A stale version in the body: 409 and nothing changes.
    app.send(TestRequest::patch(
        format!("/db-1/conversations/{id}"),
        json!({"title": "Lost", "expectedVersion": 1}),
    ))
    .await
    .expect_problem(StatusCode::CONFLICT, "conflict");
    // If-Match current but the body's version stale: 409.
    app.send(
        TestRequest::patch(
            format!("/db-1/conversations/{id}"),
            json!({"title": "Lost", "expectedVersion": 1}),
        )
        .header("if-match", "\"3\""),
    )
    .await
    .expect_problem(StatusCode::CONFLICT, "conflict");
    let conversation_id: ConversationId = id.parse().unwrap();
    let stored = app.stored("db-1", conversation_id).await;
    assert_eq!(
        (stored.title.as_deref(), stored.version),
        (Some("Sizes"), 3)
    );
    // `*` and a matching body version apply.
    let response = app
        .send(
            TestRequest::patch(
                format!("/db-1/conversations/{id}"),
                json!({"archived": false, "expectedVersion": 3, "metadata": {"k": 1}}),
            )
            .header("if-match", "*"),
        )
        .await;
    // Metadata merges (RFC 7396): the key set at creation stays.
    assert_eq!(
        response.expect(StatusCode::OK)["metadata"],
        json!({"k": 1, "origin": "sidebar"})
    );
    assert_eq!(response.header("etag"), Some("\"4\""));
    // `null` removes a key.
    let response = app
        .send(TestRequest::patch(
            format!("/db-1/conversations/{id}"),
            json!({"metadata": {"origin": null}}),
        ))
        .await;
    assert_eq!(response.expect(StatusCode::OK)["metadata"], json!({"k": 1}));
    // A delete at a stale version is refused and deletes nothing.
    app.send(TestRequest::delete(format!("/db-1/conversations/{id}")).header("if-match", "\"4\""))
        .await
        .expect_problem(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    app.stored("db-1", conversation_id).await;

    let response = app
        .send(TestRequest::delete(format!("/db-1/conversations/{id}")))
        .await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert!(response.text.is_empty());
    app.send(TestRequest::get(format!("/db-1/conversations/{id}")))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not_found");
    app.send(TestRequest::delete(format!("/db-1/conversations/{id}")))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn list_pages_filters_and_orders() {
    let app = TestApp::new();
    let scope = scope_of("db-1");
    let mut ids = Vec::new();
    for title in ["Alpha", "Beta", "Gamma", "Delta", "Epsilon"] {
        let response = app
            .send(TestRequest::post(
                "/db-1/conversations",
                json!({"title": title}),
            ))
            .await;
        ids.push(id_of(&response.expect(StatusCode::CREATED)));
    }
    // Pin the oldest, archive the second oldest, in a later millisecond.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    app.service
        .set_pinned(&scope, ids[0].parse().unwrap(), true)
        .await
        .unwrap();
    app.service
        .set_archived(&scope, ids[1].parse().unwrap(), true)
        .await
        .unwrap();

    // Pages of 2 until the end: every non-archived row once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/db-1/conversations?limit=2".to_owned(),
            Some(c) => format!("/db-1/conversations?limit=2&cursor={c}"),
        };
        let page = app
            .send(TestRequest::get(path))
            .await
            .expect(StatusCode::OK);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|c| c["title"].as_str().unwrap().to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    // Newest activity first; pinning and archiving were activity.
    assert_eq!(seen, ["Alpha", "Epsilon", "Delta", "Gamma"]);

    let page = app
        .send(TestRequest::get("/db-1/conversations?pinned=true"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(page["items"][0]["title"], "Alpha");
    let page = app
        .send(TestRequest::get("/db-1/conversations?archived=only"))
        .await
        .expect(StatusCode::OK);
    let titles: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["title"])
        .collect();
    assert_eq!(titles, [&json!("Beta")]);
    let page = app
        .send(TestRequest::get(
            "/db-1/conversations?archived=include&limit=10",
        ))
        .await
        .expect(StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    assert_eq!(page["nextCursor"], Value::Null);
    // `q` takes the search's words (the last one as a prefix), not a substring.
    let page = app
        .send(TestRequest::get("/db-1/conversations?q=DEL"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["title"], "Delta");
    let page = app
        .send(TestRequest::get("/db-1/conversations?q=ELTA"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(page["items"], json!([]));
    // An empty cursor is the first page.
    let page = app
        .send(TestRequest::get("/db-1/conversations?cursor="))
        .await
        .expect(StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn list_limit_above_the_cap_is_lowered_to_200() {
    let app = TestApp::new();
    for _ in 0..205 {
        app.conversation("big").await;
    }
    for limit in ["201", "1000", "9223372036854775807"] {
        let page = app
            .send(TestRequest::get(format!(
                "/big/conversations?limit={limit}"
            )))
            .await
            .expect(StatusCode::OK);
        assert_eq!(
            page["items"].as_array().unwrap().len(),
            200,
            "limit={limit}"
        );
        assert!(page["nextCursor"].is_string());
    }
    let page = app
        .send(TestRequest::get("/big/conversations"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        50,
        "the default page"
    );
}

#[tokio::test]
async fn messages_append_one_or_a_batch_idempotently_and_page() {
    let app = TestApp::new();
    let id = app.conversation("db-1").await.id;
    let path = format!("/db-1/conversations/{id}/messages");

    let one = app
        .send(TestRequest::post(
            &path,
            json!({"role": "user", "content": "Which tables are largest?"}),
        ))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(one["messages"][0]["seq"], 1);
    assert_eq!(one["messages"][0]["role"], "user");
    assert_eq!(one["conversation"]["messageCount"], 1);
    assert_eq!(one["conversation"]["title"], "Which tables are largest?");
    assert_eq!(one["conversation"]["titleSource"], "heuristic");

    let call_id = "call_1";
    let batch = json!([
        {"id": "0190a1b2-0000-7000-8000-000000000001", "role": "assistant", "content": "",
         "toolCalls": [{"id": call_id, "name": "run_sql", "arguments": {"sql": "select 1"}}]},
        {"id": "0190a1b2-0000-7000-8000-000000000002", "role": "tool", "content": "1 row",
         "toolCallId": call_id, "metadata": {"rows": 1}},
    ]);
    let first = app
        .send(TestRequest::post(&path, batch.clone()))
        .await
        .expect(StatusCode::CREATED);
    let seqs: Vec<_> = first["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].clone())
        .collect();
    assert_eq!(seqs, [json!(2), json!(3)]);
    assert_eq!(
        first["messages"][0]["toolCalls"][0]["arguments"],
        json!({"sql": "select 1"})
    );
    assert_eq!(first["messages"][1]["toolCallId"], call_id);
    // The retry stores nothing twice and returns the stored messages.
    let retry = app
        .send(TestRequest::post(&path, batch))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(retry["messages"], first["messages"]);
    assert_eq!(retry["conversation"]["messageCount"], 3);
    assert_eq!(app.messages("db-1", id).await.len(), 3);

    // If-Match pins the append to a version.
    let version = app.stored("db-1", id).await.version;
    app.send(
        TestRequest::post(&path, json!({"role": "user", "content": "stale"}))
            .header("if-match", &format!("\"{}\"", version - 1)),
    )
    .await
    .expect_problem(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    app.send(
        TestRequest::post(&path, json!({"role": "user", "content": "current"}))
            .header("if-match", &format!("\"{version}\"")),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(app.messages("db-1", id).await.len(), 4);

    // Pages: newest, before, after; always chronological.
    let page = app
        .send(TestRequest::get(format!("{path}?limit=2")))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (seqs_of(&page), page["hasMore"].clone()),
        (vec![3, 4], json!(true))
    );
    let page = app
        .send(TestRequest::get(format!("{path}?before=3&limit=5")))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (seqs_of(&page), page["hasMore"].clone()),
        (vec![1, 2], json!(false))
    );
    let page = app
        .send(TestRequest::get(format!("{path}?after=1&limit=2")))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (seqs_of(&page), page["hasMore"].clone()),
        (vec![2, 3], json!(true))
    );
}

#[tokio::test]
async fn context_is_the_window_the_model_would_get() {
    let app = TestApp::with(Options {
        policy: Some(ContextPolicy::new(3).unwrap()),
        ..Options::default()
    });
    let scope = scope_of("db-1");
    let id = app.conversation("db-1").await.id;
    for i in 1..=5 {
        let role = if i % 2 == 1 {
            Role::User
        } else {
            Role::Assistant
        };
        app.service
            .append(&scope, id, vec![NewMessage::new(role, format!("m{i}"))])
            .await
            .unwrap();
    }
    let window = app
        .send(TestRequest::get(format!(
            "/db-1/conversations/{id}/context"
        )))
        .await
        .expect(StatusCode::OK);
    let contents: Vec<_> = window["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(contents, [json!("m3"), json!("m4"), json!("m5")]);
}

#[tokio::test]
async fn title_is_generated_on_request_and_a_user_title_is_kept() {
    let app = TestApp::new();
    let scope = scope_of("db-1");
    let id = app.conversation("db-1").await.id;
    let path = format!("/db-1/conversations/{id}/title");
    app.send(TestRequest::post(&path, json!({})))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    app.service
        .append_user(&scope, id, "Which tables are largest?")
        .await
        .unwrap();
    let result = app
        .send(TestRequest::post(&path, json!({})))
        .await
        .expect(StatusCode::OK);
    assert_eq!(result["applied"], true);
    assert_eq!(result["conversation"]["title"], GENERATED_TITLE);
    assert_eq!(result["conversation"]["titleSource"], "generated");

    app.service.rename(&scope, id, "Mine").await.unwrap();
    let result = app
        .send(TestRequest::post(&path, json!({})))
        .await
        .expect(StatusCode::OK);
    assert_eq!(result["applied"], false);
    assert_eq!(result["conversation"]["title"], "Mine");
}

#[tokio::test]
async fn openapi_json_is_served_with_the_mount_prefix_as_server() {
    let app = TestApp::new();
    let document = app
        .send(TestRequest::get("/openapi.json"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["servers"], json!([{"url": PREFIX}]));
    // Mounted at the root, there is no prefix to name.
    let root = conversation_adapter_http::router::<()>(conversation_adapter_http::ApiState::new(
        app.service.clone(),
    ));
    let response = tower::ServiceExt::oneshot(
        root,
        axum::http::Request::get("/openapi.json")
            .header("host", "localhost")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let document: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        document.get("servers").is_none(),
        "{:?}",
        document.get("servers")
    );
    assert_eq!(
        document["paths"],
        serde_json::to_value(conversation_adapter_http::openapi()).unwrap()["paths"]
    );
}

/// The `seq`s of a page of messages.
fn seqs_of(page: &serde_json::Value) -> Vec<u64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}
