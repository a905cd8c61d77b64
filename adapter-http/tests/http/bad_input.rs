//! Bad input is a 4xx problem naming what is wrong, never a 500; hostile strings
//! round-trip byte for byte as JSON data.

use axum::http::{Method, StatusCode};
use conversation_adapter_http::HttpLimits;
use serde_json::{Value, json};

use crate::support::{Options, TestApp, TestRequest, url_encode};

const LIMIT: usize = 64 * 1024;

fn app() -> TestApp {
    TestApp::with(Options {
        limits: Some(HttpLimits::default().with_max_body_bytes(LIMIT)),
        ..Options::default()
    })
}

struct Case {
    name: &'static str,
    request: TestRequest,
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
}

fn case(
    name: &'static str,
    request: TestRequest,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        name,
        request,
        status: StatusCode::from_u16(status).unwrap(),
        code,
        field,
    }
}

fn raw_post(
    path: &str,
    content_type: Option<&str>,
    body: impl Into<axum::body::Body>,
) -> TestRequest {
    let request = TestRequest::new(Method::POST, path).raw_body(body);
    match content_type {
        Some(content_type) => request.header("content-type", content_type),
        None => request,
    }
}

#[tokio::test]
async fn bad_input_is_a_problem_naming_the_fault_and_changes_nothing() {
    let app = app();
    let id = app.conversation("s").await.id;
    let conv = format!("/s/conversations/{id}");
    let messages = format!("{conv}/messages");
    let json_type = Some("application/json");
    let too_big = vec![b' '; LIMIT + 1];
    // A cursor of a list (of another scope, so that nothing is added here).
    app.conversation("t").await;
    app.conversation("t").await;
    let list_cursor = app
        .send(TestRequest::get("/t/conversations?limit=1"))
        .await
        .expect(StatusCode::OK)["nextCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let cases = vec![
        // Bodies that are not JSON, or not JSON of the right shape: 400.
        case(
            "truncated JSON",
            raw_post("/s/conversations", json_type, "{\"title\":"),
            400,
            "invalid_json",
            None,
        ),
        case(
            "JSON syntax",
            raw_post("/s/conversations", json_type, "{title: 'x'}"),
            400,
            "invalid_json",
            None,
        ),
        case(
            "trailing text",
            raw_post("/s/conversations", json_type, "{} {}"),
            400,
            "invalid_json",
            None,
        ),
        case(
            "empty body",
            raw_post("/s/conversations", json_type, ""),
            400,
            "invalid_json",
            None,
        ),
        case(
            "not an object",
            raw_post("/s/conversations", json_type, "[]"),
            400,
            "invalid_body",
            None,
        ),
        case(
            "scalar messages body",
            raw_post(&messages, json_type, "\"hi\""),
            400,
            "invalid_body",
            None,
        ),
        case(
            "unknown field",
            TestRequest::post("/s/conversations", json!({"titel": "x"})),
            400,
            "invalid_body",
            None,
        ),
        case(
            "wrong type",
            TestRequest::patch(&conv, json!({"pinned": "yes"})),
            400,
            "invalid_body",
            Some("pinned"),
        ),
        case(
            "negative version",
            TestRequest::patch(&conv, json!({"expectedVersion": -1})),
            400,
            "invalid_body",
            Some("expectedVersion"),
        ),
        case(
            "unknown role",
            TestRequest::post(&messages, json!({"role": "wizard", "content": "x"})),
            400,
            "invalid_body",
            Some("role"),
        ),
        case(
            "bad message id",
            TestRequest::post(&messages, json!({"id": "nope", "role": "user"})),
            400,
            "invalid_body",
            Some("id"),
        ),
        case(
            "bad id in batch",
            TestRequest::post(
                &messages,
                json!([{"role": "user"}, {"id": 7, "role": "user"}]),
            ),
            400,
            "invalid_body",
            Some("[1].id"),
        ),
        case(
            "unknown reply field",
            TestRequest::post(
                format!("{conv}/reply"),
                json!({"content": "x", "model": "gpt"}),
            ),
            400,
            "invalid_body",
            None,
        ),
        // Wrong or missing content type: 415.
        case(
            "text/plain",
            raw_post("/s/conversations", Some("text/plain"), "{}"),
            415,
            "unsupported_media_type",
            None,
        ),
        case(
            "form",
            raw_post(
                &messages,
                Some("application/x-www-form-urlencoded"),
                "role=user",
            ),
            415,
            "unsupported_media_type",
            None,
        ),
        case(
            "no content type",
            raw_post("/s/conversations", None, "{}"),
            415,
            "unsupported_media_type",
            None,
        ),
        // Oversized bodies: 413, with and without a Content-Length.
        case(
            "oversized, streamed",
            raw_post("/s/conversations", json_type, too_big.clone()),
            413,
            "payload_too_large",
            None,
        ),
        case(
            "oversized, announced",
            raw_post("/s/conversations", json_type, too_big)
                .header("content-length", &(LIMIT + 1).to_string()),
            413,
            "payload_too_large",
            None,
        ),
        // Path and query values that do not parse: 400 naming the parameter.
        case(
            "bad conversation id",
            TestRequest::get("/s/conversations/not-a-uuid"),
            400,
            "invalid_parameter",
            Some("id"),
        ),
        case(
            "bad id on a write",
            TestRequest::patch("/s/conversations/123", json!({})),
            400,
            "invalid_parameter",
            Some("id"),
        ),
        case(
            "control character scope",
            TestRequest::get("/a%0Ab/conversations"),
            400,
            "invalid_parameter",
            Some("scope"),
        ),
        case(
            "NUL scope",
            TestRequest::get("/a%00b/conversations"),
            400,
            "invalid_parameter",
            Some("scope"),
        ),
        case(
            "long scope",
            TestRequest::get(format!("/{}/conversations", "x".repeat(257))),
            400,
            "invalid_parameter",
            Some("scope"),
        ),
        case(
            "invalid UTF-8 scope",
            TestRequest::get("/%FF/conversations"),
            400,
            "invalid_parameter",
            None,
        ),
        case(
            "limit=abc",
            TestRequest::get("/s/conversations?limit=abc"),
            400,
            "invalid_parameter",
            Some("limit"),
        ),
        case(
            "limit=-1",
            TestRequest::get("/s/conversations?limit=-1"),
            400,
            "invalid_parameter",
            Some("limit"),
        ),
        case(
            "limit=0",
            TestRequest::get("/s/conversations?limit=0"),
            400,
            "invalid_parameter",
            Some("limit"),
        ),
        case(
            "limit=1.5",
            TestRequest::get("/s/conversations?limit=1.5"),
            400,
            "invalid_parameter",
            Some("limit"),
        ),
        case(
            "limit=",
            TestRequest::get("/s/conversations?limit="),
            400,
            "invalid_parameter",
            Some("limit"),
        ),
        case(
            "duplicate limit",
            TestRequest::get("/s/conversations?limit=1&limit=2"),
            400,
            "invalid_parameter",
            Some("query"),
        ),
        case(
            "bad cursor",
            TestRequest::get("/s/conversations?cursor=bm90LWEtY3Vyc29y"),
            400,
            "invalid_parameter",
            Some("cursor"),
        ),
        case(
            "garbage cursor",
            TestRequest::get("/s/conversations?cursor=%3Cscript%3E"),
            400,
            "invalid_parameter",
            Some("cursor"),
        ),
        case(
            "bad archived",
            TestRequest::get("/s/conversations?archived=maybe"),
            400,
            "invalid_parameter",
            Some("archived"),
        ),
        case(
            "bad pinned",
            TestRequest::get("/s/conversations?pinned=1"),
            400,
            "invalid_parameter",
            Some("pinned"),
        ),
        case(
            "q with pinned=true",
            TestRequest::get("/s/conversations?q=orders&pinned=true"),
            400,
            "invalid_parameter",
            Some("pinned"),
        ),
        case(
            "q with a metadata filter",
            TestRequest::get("/s/conversations?q=orders&metadata.tag=x"),
            400,
            "invalid_parameter",
            Some("metadata.tag"),
        ),
        case(
            "a list cursor given to a search",
            TestRequest::get(format!("/s/conversations?q=orders&cursor={list_cursor}")),
            400,
            "invalid_parameter",
            Some("cursor"),
        ),
        case(
            "before=-3",
            TestRequest::get(format!("{messages}?before=-3")),
            400,
            "invalid_parameter",
            Some("before"),
        ),
        case(
            "after=x",
            TestRequest::get(format!("{messages}?after=x")),
            400,
            "invalid_parameter",
            Some("after"),
        ),
        case(
            "message limit=0",
            TestRequest::get(format!("{messages}?limit=0")),
            400,
            "invalid_parameter",
            Some("limit"),
        ),
        case(
            "bad If-Match",
            TestRequest::patch(&conv, json!({})).header("if-match", "7"),
            400,
            "invalid_header",
            Some("If-Match"),
        ),
        // Well-formed input that breaks a rule: 422 naming the field.
        case(
            "control character q",
            TestRequest::get("/s/conversations?q=a%01b"),
            422,
            "invalid_input",
            Some("q"),
        ),
        case(
            "long q",
            TestRequest::get(format!("/s/conversations?q={}", "x".repeat(513))),
            422,
            "invalid_input",
            Some("q"),
        ),
        case(
            "q without a word",
            TestRequest::get("/s/conversations?q=%22*%22"),
            422,
            "invalid_input",
            Some("q"),
        ),
        case(
            "title too long",
            TestRequest::post("/s/conversations", json!({"title": "x".repeat(201)})),
            422,
            "invalid_input",
            Some("title"),
        ),
        case(
            "blank title",
            TestRequest::patch(&conv, json!({"title": "   "})),
            422,
            "invalid_input",
            Some("title"),
        ),
        case(
            "newline in title",
            TestRequest::patch(&conv, json!({"title": "a\nb"})),
            422,
            "invalid_input",
            Some("title"),
        ),
        case(
            "NUL in title",
            TestRequest::post("/s/conversations", json!({"title": "a\u{0}b"})),
            422,
            "invalid_input",
            Some("title"),
        ),
        case(
            "NUL in metadata",
            TestRequest::patch(&conv, json!({"metadata": {"k": "a\u{0}b"}})),
            422,
            "invalid_input",
            Some("metadata"),
        ),
        case(
            "NUL in content",
            TestRequest::post(&messages, json!({"role": "user", "content": "a\u{0}b"})),
            422,
            "invalid_input",
            Some("messages[0].content"),
        ),
        case(
            "NUL in reply",
            TestRequest::post(format!("{conv}/reply"), json!({"content": "\u{0}"})),
            422,
            "invalid_input",
            Some("messages[0].content"),
        ),
        case(
            "empty batch",
            TestRequest::post(&messages, json!([])),
            422,
            "invalid_input",
            Some("messages"),
        ),
        case(
            "tool result without call id",
            TestRequest::post(&messages, json!({"role": "tool", "content": "1 row"})),
            422,
            "invalid_input",
            Some("messages[0].toolCallId"),
        ),
        case(
            "tool calls on a user message",
            TestRequest::post(
                &messages,
                json!({"role": "user", "content": "q", "toolCalls": [{"id": "c", "name": "f", "arguments": {}}]}),
            ),
            422,
            "invalid_input",
            Some("messages[0].toolCalls"),
        ),
        // No such route or method.
        case(
            "unknown route",
            TestRequest::get("/s/conversations/x/y/z"),
            404,
            "route_not_found",
            None,
        ),
        case(
            "unknown method",
            TestRequest::new(Method::PUT, &conv),
            405,
            "method_not_allowed",
            None,
        ),
    ];
    for Case {
        name,
        request,
        status,
        code,
        field,
    } in cases
    {
        let response = app.send(request).await;
        assert_eq!(response.status, status, "{name}: {}", response.text);
        let problem = response.json();
        assert_eq!(problem["code"], code, "{name}: {problem}");
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{name}: {problem}");
        }
    }
    let stored = app.stored("s", id).await;
    assert_eq!(
        (stored.version, stored.message_count),
        (1, 0),
        "nothing changed"
    );
    let page = app
        .send(TestRequest::get("/s/conversations"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        1,
        "nothing created"
    );
}

#[tokio::test]
async fn a_405_names_the_allowed_methods() {
    let app = app();
    let response = app
        .send(TestRequest::new(Method::PUT, "/s/conversations"))
        .await;
    response.expect_problem(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let allow = response.header("allow").unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

#[tokio::test]
async fn hostile_strings_round_trip_byte_for_byte() {
    let app = TestApp::new();
    let long = "é<\"\\".repeat(10_000);
    let hostile = [
        "<script>alert(1)</script>",
        "</title><img src=x onerror=alert(1)>",
        "\"quoted\" and 'single' and `back`",
        "back\\slash \\u0000 \\n not escapes",
        "{\"json\": \"inside\"}",
        "line\nbreak\ttab\r\u{7f}",
        "\u{2028}\u{2029}\u{feff}\u{200b}",
        "emoji 🦀👩‍💻 and RTL \u{202e}txet",
        "'; DROP TABLE conversations; --",
        "%00 %2e%2e/ ../../etc/passwd",
        long.as_str(),
    ];
    let id = app.conversation("s").await.id;
    let messages = format!("/s/conversations/{id}/messages");
    for text in hostile {
        // Metadata is limited to 16 KiB: the long string goes in content only.
        let metadata = if text.len() < 1000 {
            json!({ text: text, "nested": [text, {"k": text}] })
        } else {
            json!({"k": "short"})
        };
        // As a message: content and metadata.
        let appended = app
            .send(TestRequest::post(
                &messages,
                json!({"role": "user", "content": text, "metadata": metadata}),
            ))
            .await
            .expect(StatusCode::CREATED);
        let seq = appended["messages"][0]["seq"].as_u64().unwrap();
        let page = app
            .send(TestRequest::get(format!(
                "{messages}?after={}&limit=1",
                seq - 1
            )))
            .await
            .expect(StatusCode::OK);
        let stored = &page["items"][0];
        assert_eq!(stored["content"], Value::String(text.to_owned()));
        assert_eq!(stored["metadata"], metadata);

        // As a user title, where a title may hold it (one line, at most 200 chars).
        let title_ok = text.chars().count() <= 200 && !text.chars().any(char::is_control);
        let response = app
            .send(TestRequest::post(
                "/s/conversations",
                json!({"title": text, "metadata": metadata}),
            ))
            .await;
        if !title_ok {
            response.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
            continue;
        }
        let created = response.expect(StatusCode::CREATED);
        let got = app
            .send(TestRequest::get(format!(
                "/s/conversations/{}",
                created["id"].as_str().unwrap()
            )))
            .await
            .expect(StatusCode::OK);
        assert_eq!(got["title"], Value::String(text.to_owned()));
        assert_eq!(got["metadata"], metadata);
        // And found by searching for its words, when it has any (else the search
        // says it has none).
        let query: String = url_encode(text);
        let found = app
            .send(TestRequest::get(format!("/s/conversations?q={query}")))
            .await;
        if !text.chars().any(char::is_alphanumeric) {
            found.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
            continue;
        }
        assert!(
            found.expect(StatusCode::OK)["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["title"] == text),
            "{text:?} not found"
        );
    }
}
