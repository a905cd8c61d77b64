//! Export, import and bulk actions over HTTP: round trips byte for byte, imports
//! that are idempotent and refuse only what is bad, size limits, exports streamed
//! as they are read and cut off when the store fails midway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use conversation_adapter_http::{HttpLimits, async_trait};
use conversation_core::testkit::{Call, Intercepted, Interceptor};
use conversation_core::{
    Append, ConversationId, ConversationPatch, Error, NewConversation, NewMessage, Parent, Result,
    Scope, ToolCall,
};
use conversation_store_memory::MemoryStore;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Notify;

use crate::support::{Options, PREFIX, TestApp, TestRequest, scope_of};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Lets the clock move, so that every conversation of a fixture has its own
/// `updatedAt` and exports list them in one order whatever their ids.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

/// Four conversations in `scope`, in this order of activity: one with branches, a
/// tool call and metadata, pinned; one titled by the generator; one archived; one
/// empty. Their ids, newest activity first (the export's order).
async fn fixture(app: &TestApp, scope: &str) -> Vec<ConversationId> {
    let s = scope_of(scope);
    let service = &app.service;
    let mut metadata = conversation_core::Metadata::new();
    metadata.insert("tag".into(), json!("ops"));
    let branched = service
        .create(
            &s,
            NewConversation::new()
                .with_title("Vacuum \"notes\" é ☕")
                .with_metadata(metadata),
        )
        .await
        .unwrap()
        .id;
    let question = service
        .append_user(&s, branched, "How do I vacuum?\nSafely.")
        .await
        .unwrap()
        .messages[0]
        .id;
    service
        .append(
            &s,
            branched,
            vec![
                NewMessage::assistant("Let me check.").with_tool_calls(vec![ToolCall {
                    id: "call-1".into(),
                    name: "run_sql".into(),
                    arguments: json!({"sql": "VACUUM (VERBOSE) orders;"}),
                }]),
                NewMessage::tool("call-1", "done: 3 MB"),
                NewMessage::assistant("Done: 3 MB back."),
            ],
        )
        .await
        .unwrap();
    service
        .edit(&s, branched, question, NewMessage::user("And VACUUM FULL?"))
        .await
        .unwrap();
    service
        .update(&s, branched, ConversationPatch::new().pinned(true))
        .await
        .unwrap();
    tick().await;
    let generated = service.create(&s, NewConversation::new()).await.unwrap().id;
    service.append_user(&s, generated, "hello").await.unwrap();
    service
        .append_assistant(&s, generated, "hi there")
        .await
        .unwrap();
    service.wait_for_titles().await;
    tick().await;
    let archived = service.create(&s, NewConversation::new()).await.unwrap().id;
    service
        .append_with(
            &s,
            archived,
            Append::one(NewMessage::user("old question")).parent(Parent::Head),
        )
        .await
        .unwrap();
    service
        .update(&s, archived, ConversationPatch::new().archived(true))
        .await
        .unwrap();
    tick().await;
    let empty = service.create(&s, NewConversation::new()).await.unwrap().id;
    vec![empty, archived, generated, branched]
}

/// A request carrying `body` as `content_type`.
fn post_as(path: &str, content_type: &str, body: impl Into<Body>) -> TestRequest {
    TestRequest::new(Method::POST, path)
        .header("content-type", content_type)
        .raw_body(body)
}

fn import(scope: &str, ndjson: impl Into<Body>) -> TestRequest {
    post_as(&format!("/{scope}/import"), "application/x-ndjson", ndjson)
}

/// `export` with its header naming `scope` and each conversation line's id mapped
/// by `ids` (old → new); nothing else changes.
fn as_imported(export: &str, scope: &str, ids: &[(String, String)]) -> String {
    let mut lines: Vec<String> = export.lines().map(str::to_owned).collect();
    let header: Value = serde_json::from_str(&lines[0]).unwrap();
    let from = header["scope"].as_str().unwrap();
    lines[0] = lines[0].replace(
        &format!("\"scope\":{}", json!(from)),
        &format!("\"scope\":{}", json!(scope)),
    );
    for line in &mut lines[1..] {
        for (old, new) in ids {
            let prefix = format!("{{\"type\":\"conversation\",\"id\":\"{old}\"");
            if line.starts_with(&prefix) {
                *line = line.replacen(old, new, 1);
            }
        }
    }
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// The `(line, id, renamedFrom)` of a report's list `key`.
fn entries(report: &Value, key: &str) -> Vec<(u64, String, Option<String>)> {
    report[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["line"].as_u64().unwrap(),
                item["id"].as_str().unwrap().to_owned(),
                item["renamedFrom"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn export_import_export_round_trips_byte_for_byte_over_http() {
    let app = TestApp::new();
    let ids = fixture(&app, "source").await;
    let address = app.serve().await;
    let url = |path: &str| format!("http://{address}{PREFIX}{path}");

    let response = client().get(url("/source/export")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"conversations-source.jsonl\""
    );
    assert_eq!(headers["transfer-encoding"], "chunked");
    assert!(headers.get("content-length").is_none());
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let exported = response.text().await.unwrap();
    let lines: Vec<Value> = exported
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        lines[0],
        json!({"type": "header", "format": "conversation-export", "version": 1, "scope": "source"})
    );
    let conversations: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "conversation")
        .collect();
    let order: Vec<String> = conversations
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        order,
        ids.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    // Every message of every branch, the tool call and the metadata included.
    assert_eq!(
        lines.iter().filter(|l| l["type"] == "message").count(),
        5 + 2 + 1
    );
    assert!(exported.contains("\"toolCalls\":[{\"id\":\"call-1\""));
    assert!(exported.ends_with('\n'));

    // One conversation: the header, its line and its messages, as in the scope's.
    let branched = ids[3];
    let response = client()
        .get(url(&format!("/source/conversations/{branched}/export")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-disposition"],
        format!("attachment; filename=\"conversation-{branched}.jsonl\"").as_str()
    );
    let one = response.text().await.unwrap();
    let start = exported
        .find(&format!(
            "{{\"type\":\"conversation\",\"id\":\"{branched}\""
        ))
        .unwrap();
    assert_eq!(
        one,
        format!(
            "{}\n{}",
            exported.lines().next().unwrap(),
            &exported[start..]
        )
    );

    // Into another scope of the same store: the ids are the other scope's, so each
    // conversation gets a new one (the same on every import), named in the report.
    let response = client()
        .post(url("/copy/import"))
        .header("content-type", "application/x-ndjson")
        .body(exported.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["refused"], json!([]), "{report}");
    assert_eq!(report["skipped"], json!([]));
    let imported = entries(&report, "imported");
    assert_eq!(imported.len(), 4);
    let mapping: Vec<(String, String)> = imported
        .iter()
        .map(|(_, id, from)| (from.clone().expect("renamed"), id.clone()))
        .collect();
    let again = client()
        .get(url("/copy/export"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(again, as_imported(&exported, "copy", &mapping));

    // Into another server: the ids are free and kept; only the scope differs.
    let other = TestApp::new();
    let report = other
        .send(import("elsewhere", exported.clone()))
        .await
        .expect(StatusCode::OK);
    assert!(
        entries(&report, "imported")
            .iter()
            .all(|(_, _, from)| from.is_none())
    );
    let copied = other
        .send(TestRequest::get("/elsewhere/export"))
        .await
        .expect_text(StatusCode::OK);
    assert_eq!(copied, as_imported(&exported, "elsewhere", &[]));
    // The copy is a live conversation: its branch, head and siblings as they were.
    let source = app.stored("source", branched).await;
    let copy = other.stored("elsewhere", branched).await;
    assert_eq!(copy.head_id, source.head_id);
    assert_eq!(
        other.messages("elsewhere", branched).await,
        app.messages("source", branched).await
    );
}

#[tokio::test]
async fn the_same_import_twice_stores_nothing_twice() {
    let source = TestApp::new();
    fixture(&source, "s").await;
    let export = source
        .send(TestRequest::get("/s/export"))
        .await
        .expect_text(StatusCode::OK);
    let app = TestApp::new();
    let first = app
        .send(import("s", export.clone()))
        .await
        .expect(StatusCode::OK);
    assert_eq!(entries(&first, "imported").len(), 4);
    let before = app
        .send(TestRequest::get("/s/export"))
        .await
        .expect_text(StatusCode::OK);
    let second = app
        .send(import("s", export.clone()))
        .await
        .expect(StatusCode::OK);
    assert_eq!(second["imported"], json!([]));
    assert_eq!(second["refused"], json!([]));
    assert_eq!(
        entries(&second, "skipped"),
        entries(&first, "imported"),
        "each conversation skipped, named by its line"
    );
    let after = app
        .send(TestRequest::get("/s/export"))
        .await
        .expect_text(StatusCode::OK);
    assert_eq!(after, before);
    assert_eq!(before, export);
}

#[tokio::test]
async fn a_bad_line_refuses_its_conversation_and_the_others_are_stored() {
    let source = TestApp::new();
    let ids = fixture(&source, "s").await;
    let export = source
        .send(TestRequest::get("/s/export"))
        .await
        .expect_text(StatusCode::OK);
    let mut lines: Vec<String> = export.lines().map(str::to_owned).collect();
    // The generated title's conversation (third in the file): its first message
    // line is cut in half.
    let generated = ids[2].to_string();
    let conversation_line = lines
        .iter()
        .position(|l| l.contains(&format!("\"id\":\"{generated}\"")))
        .unwrap();
    let bad = conversation_line + 1;
    let half = lines[bad].len() / 2;
    lines[bad].truncate(half);
    // The archived one (second): a message whose parent is not in the file.
    let archived = ids[1].to_string();
    let archived_line = lines
        .iter()
        .position(|l| l.contains(&format!("\"id\":\"{archived}\"")))
        .unwrap();
    let orphan: Value = serde_json::from_str(&lines[archived_line + 1]).unwrap();
    let mut orphan = orphan.as_object().unwrap().clone();
    orphan.insert(
        "parentId".into(),
        json!(conversation_core::MessageId::new()),
    );
    lines[archived_line + 1] = Value::Object(orphan).to_string();
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();

    let app = TestApp::new();
    let report = app.send(import("s", body)).await.expect(StatusCode::OK);
    let imported: Vec<String> = entries(&report, "imported")
        .into_iter()
        .map(|(_, id, _)| id)
        .collect();
    assert_eq!(imported, [ids[0].to_string(), ids[3].to_string()]);
    let refused = report["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 2, "{report}");
    // The archived one breaks a rule of the tree: named by its conversation's line.
    assert_eq!(refused[0]["line"], archived_line as u64 + 1);
    assert_eq!(refused[0]["id"], archived);
    assert_eq!(refused[0]["code"], "invalid_input");
    assert!(
        refused[0]["message"].as_str().unwrap().contains("parentId"),
        "{report}"
    );
    // The cut line is not JSON: named by its own line (from 1).
    assert_eq!(refused[1]["line"], bad as u64 + 1);
    assert_eq!(refused[1]["id"], generated);
    assert_eq!(refused[1]["code"], "invalid_json");
    // Nothing of the refused ones is stored; the others are whole.
    for id in [&ids[1], &ids[2]] {
        app.send(TestRequest::get(format!("/s/conversations/{id}")))
            .await
            .expect_problem(StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(
        app.messages("s", ids[3]).await,
        source.messages("s", ids[3]).await
    );

    // Lines that are not lines of the format, or a file without its header.
    let header = &lines[0];
    let report = app
        .send(import(
            "t",
            format!("{header}\n{{\"type\":\"folder\"}}\n\n{}\n", lines[1]),
        ))
        .await
        .expect(StatusCode::OK);
    assert_eq!(report["refused"][0]["line"], 2);
    assert_eq!(report["refused"][0]["code"], "invalid_line");
    assert_eq!(entries(&report, "imported").len(), 1, "{report}");
    let report = app
        .send(import("u", format!("{}\n", lines[1])))
        .await
        .expect(StatusCode::OK);
    assert_eq!(report["refused"][0]["code"], "header");
    assert_eq!(report["imported"], json!([]));
    let report = app
        .send(import(
            "u",
            "{\"type\":\"header\",\"format\":\"conversation-export\",\"version\":99,\"scope\":\"s\"}\n",
        ))
        .await
        .expect(StatusCode::OK);
    assert_eq!(report["refused"][0]["code"], "header");
    // An empty body imports nothing.
    let report = app.send(import("u", "")).await.expect(StatusCode::OK);
    assert_eq!(
        report,
        json!({"imported": [], "skipped": [], "refused": []})
    );
    // A line that is not UTF-8 stops the import: 400 naming its line.
    let problem = app
        .send(import(
            "v",
            [header.as_bytes(), b"\n\xff\xfe{}\n".as_slice()].concat(),
        ))
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid_body");
    assert_eq!(problem["field"], "body");
    assert!(
        problem["detail"].as_str().unwrap().contains("line 2"),
        "{problem}"
    );
}

#[tokio::test]
async fn an_import_must_say_what_it_is() {
    let app = TestApp::new();
    let export =
        "{\"type\":\"header\",\"format\":\"conversation-export\",\"version\":1,\"scope\":\"s\"}\n";
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonl+json"),
        None,
    ] {
        let request = TestRequest::new(Method::POST, "/s/import").raw_body(export);
        let request = match content_type {
            Some(content_type) => request.header("content-type", content_type),
            None => request,
        };
        app.send(request)
            .await
            .expect_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    // Parameters of the media type are fine.
    app.send(post_as(
        "/s/import",
        "application/x-ndjson; charset=utf-8",
        export,
    ))
    .await
    .expect(StatusCode::OK);
}

/// `n` conversations of one message of about `size` bytes each, exported.
async fn export_of(n: usize, size: usize) -> String {
    let source = TestApp::new();
    let s = scope_of("s");
    for i in 0..n {
        let id = source.conversation("s").await.id;
        source
            .service
            .append_user(&s, id, format!("{i} {}", "x".repeat(size)))
            .await
            .unwrap();
        tick().await;
    }
    source
        .send(TestRequest::get("/s/export"))
        .await
        .expect_text(StatusCode::OK)
}

fn small_imports(total: usize, line: usize) -> TestApp {
    TestApp::with(Options {
        limits: Some(
            HttpLimits::default()
                .with_max_import_bytes(total)
                .with_max_import_line_bytes(line)
                .with_max_chatgpt_import_bytes(total),
        ),
        ..Options::default()
    })
}

async fn count(app: &TestApp, scope: &str) -> usize {
    app.send(TestRequest::get(format!(
        "/{scope}/conversations?archived=include&limit=200"
    )))
    .await
    .expect(StatusCode::OK)["items"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn an_import_over_its_limits_is_413() {
    let export = export_of(10, 400).await;
    assert!(export.len() > 8 * 1024, "{}", export.len());
    let app = small_imports(4 * 1024, 1024);

    // A Content-Length over the limit: refused before anything is read, over real
    // HTTP as a client sends a file.
    let address = app.serve().await;
    let response = client()
        .post(format!("http://{address}{PREFIX}/s/import"))
        .header("content-type", "application/x-ndjson")
        .body(export.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "payload_too_large");
    assert_eq!(problem["field"], "body");
    assert_eq!(count(&app, "s").await, 0, "nothing stored");

    // A body without a length (chunked) is read until the limit: the conversations
    // stored before it stay, whole; the rest is not read.
    let chunks: Vec<std::io::Result<Vec<u8>>> = export
        .as_bytes()
        .chunks(100)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let problem = app
        .send(import(
            "s",
            Body::from_stream(futures::stream::iter(chunks)),
        ))
        .await
        .expect_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(problem["field"], "body");
    let stored = count(&app, "s").await;
    assert!(stored > 0 && stored < 10, "{stored}");
    let page = app
        .send(TestRequest::get("/s/conversations?limit=200"))
        .await
        .expect(StatusCode::OK);
    for conversation in page["items"].as_array().unwrap() {
        let id: ConversationId = conversation["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(app.messages("s", id).await.len(), 1, "whole");
    }
    // Importing the file again, within a larger limit, completes it: nothing twice.
    let larger = TestApp::with(Options {
        store: Some(app.service.store().clone()),
        ..Options::default()
    });
    let report = larger
        .send(import("s", export.clone()))
        .await
        .expect(StatusCode::OK);
    assert_eq!(entries(&report, "skipped").len(), stored);
    assert_eq!(entries(&report, "imported").len(), 10 - stored);

    // A line over the line limit: 413 naming it, what came before stays.
    let long = export_of(3, 2000).await;
    let lines: Vec<&str> = long.lines().collect();
    assert!(lines[2].len() > 1024);
    let problem = small_imports(1 << 20, 1024)
        .send(import("t", long.clone()))
        .await
        .expect_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(
        problem["detail"].as_str().unwrap().contains("line 3 "),
        "{problem}"
    );

    // ChatGPT's file has its own limit.
    let problem = app
        .send(post_as(
            "/c/import",
            "application/json",
            format!("[{}]", " ".repeat(5 * 1024)),
        ))
        .await
        .expect_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(problem["field"], "body");
    assert_eq!(count(&app, "c").await, 0);
}

#[tokio::test]
async fn a_stalled_import_ends_at_its_timeout_keeping_what_was_stored() {
    let export = export_of(3, 10).await;
    let lines: Vec<&str> = export.lines().collect();
    // The header, the first conversation whole, the second's line; then nothing more
    // ever comes.
    let sent: Vec<std::io::Result<String>> =
        lines[..4].iter().map(|l| Ok(format!("{l}\n"))).collect();
    let stalled = futures::stream::iter(sent).chain(futures::stream::pending());
    let app = TestApp::with(Options {
        limits: Some(HttpLimits::default().with_import_timeout(Duration::from_millis(300))),
        ..Options::default()
    });
    app.send(import("s", Body::from_stream(stalled)))
        .await
        .expect_problem(StatusCode::SERVICE_UNAVAILABLE, "timeout");
    let first: Value = serde_json::from_str(lines[1]).unwrap();
    let stored = app
        .send(TestRequest::get("/s/conversations"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(ids_of(&stored), [first["id"].as_str().unwrap()]);
}

fn ids_of(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect()
}

/// A ChatGPT `conversations.json` of one conversation, as the data export writes it:
/// a hidden system node, a question, an answer and its regenerated version (the one
/// shown, `current_node`).
fn chatgpt_export() -> (Value, [&'static str; 4]) {
    let conversation = "67f0a1b2-0000-8000-9000-00000000c0de";
    let [user, first, second, system] = [
        "aaaaaaaa-1111-4111-8111-111111111111",
        "bbbbbbbb-2222-4222-8222-222222222222",
        "cccccccc-3333-4333-8333-333333333333",
        "dddddddd-4444-4444-8444-444444444444",
    ];
    let node = |id: &str, role: &str, text: &str, at: f64, parent: &str, children: Vec<&str>| {
        json!({
            "id": id,
            "message": {
                "id": id,
                "author": {"role": role, "name": null, "metadata": {}},
                "create_time": at,
                "update_time": null,
                "content": {"content_type": "text", "parts": [text]},
                "status": "finished_successfully",
                "end_turn": true,
                "weight": 1.0,
                "metadata": {"model_slug": "gpt-4o"},
                "recipient": "all",
                "channel": null
            },
            "parent": parent,
            "children": children
        })
    };
    let file = json!([{
        "title": "Postgres vacuum",
        "create_time": 1_700_000_000.123,
        "update_time": 1_700_000_500.5,
        "mapping": {
            "client-created-root": {"id": "client-created-root", "message": null, "parent": null, "children": [system]},
            system: node(system, "system", "", 1_700_000_000.2, "client-created-root", vec![user]),
            user: node(user, "user", "How do I vacuum a table?", 1_700_000_001.0, system, vec![first, second]),
            first: node(first, "assistant", "Run VACUUM.", 1_700_000_002.0, user, vec![]),
            second: node(second, "assistant", "Run VACUUM (VERBOSE) on it.", 1_700_000_003.0, user, vec![]),
        },
        "moderation_results": [],
        "current_node": second,
        "plugin_ids": null,
        "conversation_id": conversation,
        "conversation_template_id": null,
        "gizmo_id": null,
        "is_archived": false,
        "safe_urls": [],
        "default_model_slug": "gpt-4o",
        "id": conversation
    }]);
    (file, [conversation, user, first, second])
}

#[tokio::test]
async fn chatgpts_conversations_json_is_imported_as_json() {
    let app = TestApp::new();
    let (file, [conversation, user, first, second]) = chatgpt_export();
    let report = app
        .send(TestRequest::post("/s/import", file.clone()))
        .await
        .expect(StatusCode::OK);
    assert_eq!(report["refused"], json!([]), "{report}");
    assert_eq!(report["imported"][0]["line"], 1);
    assert_eq!(report["imported"][0]["id"], conversation);
    assert_eq!(report["imported"][0]["messages"], 3);
    let stored = app
        .send(TestRequest::get(format!("/s/conversations/{conversation}")))
        .await
        .expect(StatusCode::OK);
    assert_eq!(stored["title"], "Postgres vacuum");
    assert_eq!(stored["headId"], second);
    let all = app
        .send(TestRequest::get(format!(
            "/s/conversations/{conversation}/messages?view=all"
        )))
        .await
        .expect(StatusCode::OK);
    let tree: Vec<(Value, Value, Value)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].clone(), m["parentId"].clone(), m["role"].clone()))
        .collect();
    assert_eq!(
        tree,
        [
            (json!(user), Value::Null, json!("user")),
            (json!(first), json!(user), json!("assistant")),
            (json!(second), json!(user), json!("assistant")),
        ]
    );
    // Twice: skipped.
    let again = app
        .send(TestRequest::post("/s/import", file))
        .await
        .expect(StatusCode::OK);
    assert_eq!(again["imported"], json!([]));
    assert_eq!(again["skipped"][0]["id"], conversation);
    // Not ChatGPT's file: 422 naming the body; a conversation without an id is
    // refused by its position.
    let problem = app
        .send(TestRequest::post("/s/import", json!({"mapping": {}})))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_eq!(problem["field"], "body");
    let report = app
        .send(TestRequest::post("/s/import", json!([{"title": "no id"}])))
        .await
        .expect(StatusCode::OK);
    assert_eq!(report["refused"][0]["line"], 1);
}

#[tokio::test]
async fn bulk_actions_report_each_id_and_never_touch_another_scope() {
    let app = TestApp::new();
    let a1 = app.conversation("a").await;
    let a2 = app.conversation("a").await;
    let b1 = app.conversation("b").await;
    let unknown = ConversationId::new();
    let bulk = |action: &str, ids: Vec<ConversationId>| {
        TestRequest::post(
            "/a/conversations/bulk",
            json!({"action": action, "ids": ids}),
        )
    };
    let statuses = |result: &Value| -> Vec<(String, String)> {
        result["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let result = app
        .send(bulk("archive", vec![a1.id, b1.id, unknown, a2.id]))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        statuses(&result),
        [
            (a1.id.to_string(), "ok".to_owned()),
            (b1.id.to_string(), "not_found".to_owned()),
            (unknown.to_string(), "not_found".to_owned()),
            (a2.id.to_string(), "ok".to_owned()),
        ]
    );
    assert!(app.stored("a", a1.id).await.archived);
    assert!(app.stored("a", a2.id).await.archived);
    for action in ["unarchive", "pin", "unpin"] {
        let result = app
            .send(bulk(action, vec![a1.id, b1.id]))
            .await
            .expect(StatusCode::OK);
        assert_eq!(statuses(&result)[1].1, "not_found", "{action}");
    }
    let a1_now = app.stored("a", a1.id).await;
    assert!(!a1_now.archived && !a1_now.pinned);
    let result = app
        .send(bulk("delete", vec![a1.id, b1.id]))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        statuses(&result),
        [
            (a1.id.to_string(), "ok".to_owned()),
            (b1.id.to_string(), "not_found".to_owned()),
        ]
    );
    app.send(TestRequest::get(format!("/a/conversations/{}", a1.id)))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not_found");
    // The other scope's conversation was never touched.
    assert_eq!(app.stored("b", b1.id).await, b1);

    // Too many ids, or none: 422 naming `ids`, nothing touched.
    let many: Vec<ConversationId> = std::iter::once(a2.id)
        .chain((0..100).map(|_| ConversationId::new()))
        .collect();
    for ids in [many, vec![]] {
        let problem = app
            .send(bulk("pin", ids))
            .await
            .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
        assert_eq!(problem["field"], "ids");
    }
    assert!(!app.stored("a", a2.id).await.pinned);
    // An action that is not one, or a body of another shape: 400.
    for body in [
        json!({"action": "explode", "ids": [a2.id]}),
        json!({"action": "pin", "ids": ["not-a-uuid"]}),
        json!({"action": "pin", "ids": [a2.id], "force": true}),
    ] {
        app.send(TestRequest::post("/a/conversations/bulk", body))
            .await
            .expect_problem(StatusCode::BAD_REQUEST, "invalid_body");
    }
}

#[tokio::test]
async fn an_export_of_a_conversation_not_in_the_scope_is_404_before_any_byte() {
    let app = TestApp::new();
    let theirs = app.conversation("a").await.id;
    app.service
        .append_user(&scope_of("a"), theirs, "secret plan")
        .await
        .unwrap();
    for path in [
        format!("/b/conversations/{theirs}/export"),
        format!("/a/conversations/{}/export", ConversationId::new()),
    ] {
        let response = app.send(TestRequest::get(&path)).await;
        response.expect_problem(StatusCode::NOT_FOUND, "not_found");
        assert!(!response.text.contains("secret"));
        assert!(response.header("content-disposition").is_none());
    }
    // A scope with nothing in it exports its header alone.
    let empty = app
        .send(TestRequest::get("/nobody/export"))
        .await
        .expect_text(StatusCode::OK);
    assert_eq!(
        empty,
        "{\"type\":\"header\",\"format\":\"conversation-export\",\"version\":1,\"scope\":\"nobody\"}\n"
    );
}

/// Fails the store's reads of one conversation's messages (each once the test lets
/// it, so that the response's head has reached the client first), or of the scope's
/// list.
#[derive(Debug)]
enum FailReads {
    MessagesOf(ConversationId, Arc<tokio::sync::Semaphore>),
    Lists,
}

#[async_trait]
impl Interceptor for FailReads {
    async fn before(&self, _: Option<&Scope>, call: Call<'_>) -> Result<()> {
        match (self, call) {
            (FailReads::MessagesOf(failing, go), Call::ListMessages(id, _)) if *failing == id => {
                go.acquire().await.unwrap().forget();
                Err(Error::backend(
                    "reading messages",
                    "disk I/O error at /var/db",
                ))
            }
            (FailReads::Lists, Call::ListConversations(_)) => {
                Err(Error::unavailable("reading the list", "pool timed out"))
            }
            _ => Ok(()),
        }
    }
}

/// GETs `path` over a raw HTTP/1.1 connection; reads until what came holds
/// `until`, lets the store fail once (`go`), and reads until the server closes the
/// connection.
async fn raw_get(
    address: SocketAddr,
    path: &str,
    until: &str,
    go: &tokio::sync::Semaphore,
) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {PREFIX}{path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while find(&received, until.as_bytes()).is_none() {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer))
            .await
            .expect("the export sends what it has read")
            .unwrap();
        assert!(
            n > 0,
            "closed early: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..n]);
    }
    go.add_permits(1);
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .ok();
    received
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A raw chunked response: its head, its body decoded, and whether the body ended
/// with the terminating chunk.
fn dechunk(raw: &[u8]) -> (String, Vec<u8>, bool) {
    let split = find(raw, b"\r\n\r\n").unwrap_or_else(|| panic!("no head in {raw:?}")) + 4;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = &raw[split..];
    let mut body = Vec::new();
    loop {
        let Some(end) = find(rest, b"\r\n") else {
            return (head, body, false);
        };
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap(), 16).unwrap();
        rest = &rest[end + 2..];
        if size == 0 {
            return (head, body, rest == b"\r\n");
        }
        if rest.len() < size + 2 {
            body.extend_from_slice(&rest[..size.min(rest.len())]);
            return (head, body, false);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[tokio::test]
async fn a_store_failure_midway_cuts_the_export_off_without_its_last_chunk() {
    // Four conversations; the second of the export fails when its messages are read.
    let probe = TestApp::new();
    let ids = fixture(&probe, "s").await;
    let failing = ids[1];
    let go = Arc::new(tokio::sync::Semaphore::new(0));
    let store = Arc::new(Intercepted::new(
        MemoryStore::new(),
        FailReads::MessagesOf(failing, go.clone()),
    ));
    let app = TestApp::with(Options {
        store: Some(store),
        ..Options::default()
    });
    let export = probe
        .send(TestRequest::get("/s/export"))
        .await
        .expect_text(StatusCode::OK);
    app.send(import("s", export.clone()))
        .await
        .expect(StatusCode::OK);
    let address = app.serve().await;
    let failing_line = format!("{{\"type\":\"conversation\",\"id\":\"{failing}\"");

    let raw = raw_get(address, "/s/export", &failing_line, &go).await;
    let (head, body, terminated) = dechunk(&raw);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert!(!terminated, "a cut export must not end like a complete one");
    // What was sent are whole lines, up to the failing conversation's own line.
    let body = String::from_utf8(body).unwrap();
    let at = export.find(&failing_line).unwrap();
    let line_end = at + export[at..].find('\n').unwrap() + 1;
    assert_eq!(body, export[..line_end]);
    assert!(!body.contains("disk"), "the cause stays in the log");

    // A client library sees a failed download, never a short complete file.
    let response = client()
        .get(format!("http://{address}{PREFIX}/s/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    go.add_permits(1);
    assert!(response.bytes().await.is_err());
    // The failing conversation alone fails the same way, after its own line.
    let raw = raw_get(
        address,
        &format!("/s/conversations/{failing}/export"),
        &failing_line,
        &go,
    )
    .await;
    let (_, body, terminated) = dechunk(&raw);
    assert!(!terminated);
    assert!(String::from_utf8(body).unwrap().ends_with('\n'));
    // Another conversation exports whole, and ends with the terminating chunk.
    let whole = client()
        .get(format!(
            "http://{address}{PREFIX}/s/conversations/{}/export",
            ids[3]
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(whole.ends_with('\n') && whole.lines().count() == 1 + 1 + 5);

    // A store that fails before the first conversation is read: a problem document.
    let app = TestApp::with(Options {
        store: Some(Arc::new(Intercepted::new(
            MemoryStore::new(),
            FailReads::Lists,
        ))),
        ..Options::default()
    });
    app.send(TestRequest::get("/s/export"))
        .await
        .expect_problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
}

/// Holds the store's read of the second page of a list until released.
#[derive(Debug, Default)]
struct HoldSecondPage {
    held: AtomicBool,
    reached: Notify,
    release: Notify,
}

#[derive(Debug)]
struct Hold(Arc<HoldSecondPage>);

#[async_trait]
impl Interceptor for Hold {
    async fn before(&self, _: Option<&Scope>, call: Call<'_>) -> Result<()> {
        if let Call::ListConversations(query) = call
            && query.cursor.is_some()
            && !self.0.held.swap(true, Ordering::SeqCst)
        {
            self.0.reached.notify_one();
            self.0.release.notified().await;
        }
        Ok(())
    }
}

fn conversation_lines(received: &[u8]) -> usize {
    received
        .windows(b"{\"type\":\"conversation\"".len())
        .filter(|w| *w == b"{\"type\":\"conversation\"")
        .count()
}

#[tokio::test]
async fn a_large_export_is_sent_while_it_is_read_not_gathered_first() {
    let hold = Arc::new(HoldSecondPage::default());
    let app = TestApp::with(Options {
        store: Some(Arc::new(Intercepted::new(
            MemoryStore::new(),
            Hold(hold.clone()),
        ))),
        ..Options::default()
    });
    // Three pages of the store's list (200 a page).
    let s = scope_of("big");
    for i in 0..450 {
        let id = app.conversation("big").await.id;
        app.service
            .append_user(&s, id, format!("question {i}: {}", "words ".repeat(40)))
            .await
            .unwrap();
    }
    let address = app.serve().await;
    let mut response = client()
        .get(format!("http://{address}{PREFIX}/big/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert!(response.headers().get("content-length").is_none());

    // The first page's 200 conversations arrive while the server waits for the
    // store's second page: what it sends is what it has read, not all of it.
    let mut received = Vec::new();
    while conversation_lines(&received) < 200 {
        let chunk = tokio::time::timeout(Duration::from_secs(30), response.chunk())
            .await
            .expect("the first page arrives without the second")
            .unwrap()
            .expect("more of the body");
        received.extend_from_slice(&chunk);
    }
    tokio::time::timeout(Duration::from_secs(30), hold.reached.notified())
        .await
        .expect("the server asks for the second page");
    assert_eq!(conversation_lines(&received), 200);
    hold.release.notify_one();
    while let Some(chunk) = response.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(received).unwrap();
    assert_eq!(conversation_lines(text.as_bytes()), 450);
    assert_eq!(text.lines().count(), 1 + 450 + 450);
    assert!(
        text.lines()
            .all(|line| serde_json::from_str::<Value>(line).is_ok())
    );
}
