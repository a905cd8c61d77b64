//! The OpenAPI document parses, every reference in it resolves, and it names exactly
//! the routes the router serves.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::support::{TestApp, TestRequest};

/// The routes the router serves, written down independently of the document.
const SERVED: &[(&str, &str)] = &[
    ("GET", "/{scope}/conversations"),
    ("POST", "/{scope}/conversations"),
    ("GET", "/{scope}/conversations/{id}"),
    ("PATCH", "/{scope}/conversations/{id}"),
    ("DELETE", "/{scope}/conversations/{id}"),
    ("GET", "/{scope}/conversations/{id}/messages"),
    ("POST", "/{scope}/conversations/{id}/messages"),
    ("GET", "/{scope}/conversations/{id}/messages/{message}"),
    ("DELETE", "/{scope}/conversations/{id}/messages/{message}"),
    ("POST", "/{scope}/conversations/{id}/fork"),
    ("GET", "/{scope}/conversations/{id}/context"),
    ("POST", "/{scope}/conversations/{id}/title"),
    ("POST", "/{scope}/conversations/{id}/reply"),
    ("GET", "/{scope}/conversations/{id}/runs/{run}"),
    ("GET", "/{scope}/conversations/{id}/runs/{run}/events"),
    ("POST", "/{scope}/conversations/{id}/runs/{run}/cancel"),
    ("GET", "/{scope}/search"),
    ("POST", "/{scope}/conversations/bulk"),
    ("GET", "/{scope}/conversations/{id}/export"),
    ("GET", "/{scope}/export"),
    ("POST", "/{scope}/import"),
    ("GET", "/openapi.json"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(app: &TestApp) -> Value {
    app.send(TestRequest::get("/openapi.json"))
        .await
        .expect(StatusCode::OK)
}

fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(operation) = item.get(*method) {
                operations.push((method.to_uppercase(), path.clone(), operation.clone()));
            }
        }
    }
    operations
}

fn collect_refs(value: &Value, refs: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "$ref" {
                    refs.insert(value.as_str().unwrap().to_owned());
                } else {
                    collect_refs(value, refs);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, refs)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_reference_resolves() {
    let app = TestApp::new();
    let document = document(&app).await;
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["info"]["title"].is_string());
    // The structure a client generator relies on: unique operation ids, every path
    // parameter declared, every parameter and body with a schema, responses.
    let mut operation_ids = BTreeSet::new();
    for (method, path, operation) in operations(&document) {
        let id = operation["operationId"].as_str().unwrap().to_owned();
        assert!(
            operation_ids.insert(id),
            "{method} {path}: duplicate operationId"
        );
        assert!(!operation["responses"].as_object().unwrap().is_empty());
        let parameters = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for parameter in &parameters {
            assert!(
                parameter["name"].is_string() && parameter["schema"].is_object(),
                "{parameter}"
            );
            assert!(["path", "query", "header"].contains(&parameter["in"].as_str().unwrap()));
        }
        for segment in path.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_matches(|c| c == '{' || c == '}');
            assert!(
                parameters
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true),
                "{method} {path}: {name} undeclared"
            );
        }
        if let Some(body) = operation.get("requestBody") {
            assert!(
                body["content"]["application/json"]["schema"].is_object(),
                "{method} {path}"
            );
            // Only the title route takes an optional body (`{}` or nothing).
            let optional = path.ends_with("/title");
            let required = body["required"].as_bool().unwrap_or(false);
            assert_eq!(required, !optional, "{method} {path}");
        }
    }
    assert_eq!(operation_ids.len(), SERVED.len());

    let mut refs = BTreeSet::new();
    collect_refs(&document, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {reference}"));
        assert!(
            document["components"]["schemas"].get(name).is_some(),
            "{reference} does not resolve"
        );
    }
    // The SSE payloads are described.
    for schema in [
        "ReplyStreamEvent",
        "StoredMessage",
        "ReplyDelta",
        "ToolCall",
        "Problem",
    ] {
        assert!(
            document["components"]["schemas"].get(schema).is_some(),
            "{schema}"
        );
    }
}

#[tokio::test]
async fn the_document_names_exactly_the_served_routes() {
    let app = TestApp::new();
    let document = document(&app).await;
    let documented: BTreeSet<(String, String)> = operations(&document)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let served: BTreeSet<(String, String)> = SERVED
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(documented, served);

    // Every documented operation is answered by its handler: never the router's
    // 404 or 405. Each runs against a fresh conversation.
    app.model.push(crate::support::Script::steps(vec![
        crate::support::delta("hi"),
        crate::support::finished(),
    ]));
    for (method, path) in &documented {
        let id = app.conversation("s").await.id;
        let message = app
            .service
            .append_user(&crate::support::scope_of("s"), id, "hello")
            .await
            .unwrap()
            .messages[0]
            .id;
        // A run to read (ended) or to cancel (still running).
        let run = if path.contains("{run}") {
            let cancelling = method == "POST";
            app.model.push(crate::support::Script::steps(if cancelling {
                vec![crate::support::Step::Hang]
            } else {
                vec![crate::support::delta("ok"), crate::support::finished()]
            }));
            let handle = app
                .service
                .start_run(
                    &crate::support::scope_of("s"),
                    id,
                    conversation_core::ReplyRequest::default(),
                )
                .await
                .unwrap();
            if !cancelling {
                handle.events.for_each(|_| async {}).await;
            }
            handle.run.id.to_string()
        } else {
            String::new()
        };
        let path = path
            .replace("{scope}", "s")
            .replace("{id}", &id.to_string())
            .replace("{message}", &message.to_string())
            .replace("{run}", &run);
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = match path.rsplit('/').next() {
            Some("messages") => json!({"role": "user", "content": "hi"}),
            Some("reply") => json!({"content": "hi"}),
            Some("fork") => json!({"messageId": message}),
            Some("bulk") => json!({"action": "pin", "ids": [id]}),
            // ChatGPT's format: an array of conversations.
            Some("import") => json!([]),
            _ => json!({}),
        };
        let path = if path.ends_with("/search") {
            format!("{path}?q=hello")
        } else {
            path
        };
        let request = if method == Method::POST || method == Method::PATCH {
            TestRequest::new(method.clone(), &path).json(body)
        } else {
            TestRequest::new(method.clone(), &path)
        };
        let response = app.send(request).await;
        assert!(
            response.status.is_success(),
            "{method} {path}: {} {}",
            response.status,
            response.text
        );
    }

    // Methods the document does not name are 405 on every documented path.
    for (path, item) in document["paths"].as_object().unwrap() {
        let path = path
            .replace("{scope}", "s")
            .replace(
                "{id}",
                &conversation_core::ConversationId::new().to_string(),
            )
            .replace(
                "{message}",
                &conversation_core::MessageId::new().to_string(),
            )
            .replace("{run}", &conversation_core::RunId::new().to_string());
        for method in ["put", "post", "delete", "patch"] {
            if item.get(method).is_none() {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                app.send(TestRequest::new(method, &path))
                    .await
                    .expect_problem(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
            }
        }
    }
}

#[tokio::test]
async fn every_error_response_is_documented_as_a_problem() {
    let app = TestApp::new();
    let document = document(&app).await;
    for (method, path, operation) in operations(&document) {
        let responses = operation["responses"].as_object().unwrap();
        for (status, response) in responses {
            let code: u16 = status.parse().unwrap();
            if code < 400 {
                continue;
            }
            assert_eq!(
                response["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{method} {path} {status}"
            );
        }
        if path != "/openapi.json" {
            for status in ["400", "401", "403", "404", "500", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
            assert!(
                responses["503"]["headers"].get("Retry-After").is_some(),
                "{method} {path}"
            );
        }
        if operation.get("requestBody").is_some() {
            for status in ["413", "415", "422"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
        }
    }
    // The routes with their own failures document them.
    let paths = &document["paths"];
    let patch = &paths["/{scope}/conversations/{id}"]["patch"]["responses"];
    assert!(patch.get("409").is_some() && patch.get("412").is_some());
    assert!(
        paths["/{scope}/conversations/{id}/messages"]["post"]["responses"]
            .get("412")
            .is_some()
    );
    let reply = &paths["/{scope}/conversations/{id}/reply"]["post"]["responses"];
    assert!(reply.get("501").is_some());
    assert_eq!(
        reply["200"]["content"]["text/event-stream"]["schema"]["$ref"],
        "#/components/schemas/ReplyStreamEvent"
    );
    let events: Vec<(Value, Value)> =
        document["components"]["schemas"]["ReplyStreamEvent"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| {
                (
                    event["properties"]["event"]["enum"][0].clone(),
                    event["properties"]["data"]["contentSchema"]["$ref"].clone(),
                )
            })
            .collect();
    let schema = |name: &str| json!(format!("#/components/schemas/{name}"));
    assert_eq!(
        events,
        [
            (json!("run"), schema("Run")),
            (json!("message"), schema("StoredMessage")),
            (json!("delta"), schema("ReplyDelta")),
            (json!("toolCall"), schema("ToolCall")),
            (json!("done"), schema("RunFinished")),
            (json!("error"), schema("Problem")),
        ]
    );
    assert!(
        paths["/{scope}/conversations"]["post"]["responses"]["201"]["headers"]
            .get("Location")
            .is_some()
    );
    assert!(
        paths["/{scope}/conversations/{id}"]["get"]["responses"]["200"]["headers"]
            .get("ETag")
            .is_some()
    );
    // Search, export, import and bulk name their schemas and media types.
    assert_eq!(
        paths["/{scope}/search"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/SearchResults"
    );
    assert!(
        paths["/{scope}/search"]["get"]["responses"]
            .get("422")
            .is_some()
    );
    for export in ["/{scope}/export", "/{scope}/conversations/{id}/export"] {
        let ok = &paths[export]["get"]["responses"]["200"];
        assert_eq!(
            ok["content"]["application/x-ndjson"]["schema"]["$ref"],
            "#/components/schemas/ExportLine",
            "{export}"
        );
        assert!(
            ok["headers"].get("Content-Disposition").is_some(),
            "{export}"
        );
    }
    let import = &paths["/{scope}/import"]["post"];
    assert_eq!(
        import["requestBody"]["content"]["application/x-ndjson"]["schema"]["$ref"],
        "#/components/schemas/ExportLine"
    );
    assert_eq!(
        import["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ChatGptExport"
    );
    assert_eq!(
        import["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ImportReport"
    );
    assert_eq!(
        paths["/{scope}/conversations/bulk"]["post"]["responses"]["200"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/BulkResults"
    );
}
