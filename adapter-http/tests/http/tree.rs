//! The message tree over HTTP: edit, regenerate, versions, switch, fork, delete, and
//! what each bad input gets.

use axum::http::StatusCode;
use conversation_core::{Conversation, Message, Role, SIBLING_WINDOW};
use serde_json::{Value, json};

use crate::support::{Script, SseEvent, TestApp, TestRequest, delta, finished, names};

fn chat_path(scope: &str, id: impl std::fmt::Display) -> String {
    format!("/{scope}/conversations/{id}")
}

/// Sends a reply request with `body` and reads its events, answered by `answer`.
async fn reply(
    app: &TestApp,
    scope: &str,
    id: impl std::fmt::Display,
    body: Value,
    answer: &str,
) -> Vec<SseEvent> {
    app.model
        .push(Script::steps(vec![delta(answer), finished()]));
    let events = app
        .send(TestRequest::post(
            format!("{}/reply", chat_path(scope, &id)),
            body,
        ))
        .await
        .events();
    assert_eq!(names(&events).last(), Some(&"done"), "{events:?}");
    events
}

/// The messages a run stored, in order: the question first, the answer last.
fn stored(events: &[SseEvent]) -> Vec<Message> {
    events
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| serde_json::from_value(e.data["message"].clone()).unwrap())
        .collect()
}

fn question(events: &[SseEvent]) -> Message {
    stored(events).remove(0)
}

fn answer(events: &[SseEvent]) -> Message {
    stored(events).pop().unwrap()
}

/// The messages of the active path, as the wire shows them.
async fn path(app: &TestApp, scope: &str, id: impl std::fmt::Display) -> Vec<Value> {
    let page = app
        .send(TestRequest::get(format!(
            "{}/messages",
            chat_path(scope, id)
        )))
        .await
        .expect(StatusCode::OK);
    page["items"].as_array().unwrap().clone()
}

fn contents(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn edit_regenerate_and_switch_versions_over_http() {
    let app = TestApp::new();
    let id = app.conversation("db").await.id;
    let asked = reply(&app, "db", id, json!({"content": "q1"}), "a1").await;
    let q1 = question(&asked);
    let a1 = answer(&asked);
    assert_eq!(a1.parent_id, Some(q1.id));

    // Regenerate: no content, the question as parent; the model sees the path to it.
    let regenerated = reply(&app, "db", id, json!({"parentId": q1.id}), "a2").await;
    assert_eq!(
        question(&regenerated).id,
        q1.id,
        "the question is not stored again"
    );
    let a2 = answer(&regenerated);
    assert_eq!(a2.parent_id, Some(q1.id));
    let context = &app.model.requests()[1].messages;
    assert_eq!(
        context
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        vec!["q1"],
        "a regenerated answer never sees the answer it replaces"
    );
    let shown = path(&app, "db", id).await;
    assert_eq!(contents(&shown), vec!["q1", "a2"]);
    assert_eq!(shown[1]["siblingIds"], json!([a1.id, a2.id]));
    assert_eq!(shown[1]["siblingCount"], json!(2));
    assert_eq!(shown[1]["siblingIndex"], json!(1));
    assert_eq!(shown[1]["parentId"], json!(q1.id));
    assert_eq!(shown[0]["parentId"], Value::Null);
    let conversation = app.stored("db", id).await;
    assert_eq!(conversation.head_id, Some(a2.id));

    // Switch back to the first answer ("< 1/2 >"), versioned like every patch.
    let switched = app
        .send(
            TestRequest::patch(chat_path("db", id), json!({"headId": a1.id}))
                .header("if-match", &format!("\"{}\"", conversation.version)),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(switched["headId"], json!(a1.id));
    assert_eq!(contents(&path(&app, "db", id).await), vec!["q1", "a1"]);
    let stale = app
        .send(
            TestRequest::patch(chat_path("db", id), json!({"headId": a2.id}))
                .header("if-match", &format!("\"{}\"", conversation.version)),
        )
        .await;
    stale.expect_problem(StatusCode::PRECONDITION_FAILED, "precondition_failed");

    // Edit the first question: a new root, answered on its own branch.
    let edited = reply(
        &app,
        "db",
        id,
        json!({"content": "q1, better", "parentId": null}),
        "a3",
    )
    .await;
    let q1b = question(&edited);
    assert_eq!(q1b.parent_id, None);
    assert_eq!(q1b.siblings.ids, vec![q1.id, q1b.id]);
    let shown = path(&app, "db", id).await;
    assert_eq!(contents(&shown), vec!["q1, better", "a3"]);
    assert_eq!(shown[0]["siblingCount"], json!(2));
    let context = &app.model.requests()[2].messages;
    assert_eq!(
        context.len(),
        1,
        "the edited question starts its own branch"
    );

    // Every message of every branch, by seq.
    let all = app
        .send(TestRequest::get(format!(
            "{}/messages?view=all",
            chat_path("db", id)
        )))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        contents(all["items"].as_array().unwrap()),
        vec!["q1", "a1", "a2", "q1, better", "a3"]
    );
    app.send(TestRequest::get(format!(
        "{}/messages?view=some",
        chat_path("db", id)
    )))
    .await
    .expect_problem(StatusCode::BAD_REQUEST, "invalid_parameter");
}

#[tokio::test]
async fn messages_take_a_parent_id_on_the_first_message_only() {
    let app = TestApp::new();
    let id = app.conversation("db").await.id;
    let other = app.conversation("db").await.id;
    let messages = format!("{}/messages", chat_path("db", id));
    let first = app
        .send(TestRequest::post(
            &messages,
            json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]),
        ))
        .await
        .expect(StatusCode::CREATED);
    let q = first["messages"][0]["id"].clone();
    let a = first["messages"][1]["id"].clone();
    assert_eq!(first["messages"][1]["parentId"], q);
    assert_eq!(first["conversation"]["headId"], a);

    // A branch at the question, one message, then a batch whose first message has it.
    let branched = app
        .send(TestRequest::post(
            &messages,
            json!({"role": "assistant", "content": "a'", "parentId": q}),
        ))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(branched["messages"][0]["parentId"], q);
    assert_eq!(branched["messages"][0]["siblingCount"], json!(2));
    assert_eq!(
        branched["conversation"]["headId"],
        branched["messages"][0]["id"]
    );
    let batch = app
        .send(TestRequest::post(
            &messages,
            json!([
                {"role": "assistant", "content": "a''", "parentId": q},
                {"role": "user", "content": "next"}
            ]),
        ))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(batch["messages"][1]["parentId"], batch["messages"][0]["id"]);

    // What each bad parent gets; nothing is stored by any of them.
    let before = app.stored("db", id).await;
    let foreign = app
        .service
        .append_user(&crate::support::scope_of("db"), other, "elsewhere")
        .await
        .unwrap();
    let cases = [
        (
            json!([{"role": "user", "content": "x"}, {"role": "user", "content": "y", "parentId": q}]),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            Some("[1].parentId"),
        ),
        (
            json!({"role": "user", "content": "x", "parentId": "not-a-uuid"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            Some("parentId"),
        ),
        (
            json!({"role": "user", "content": "x", "parentId": conversation_core::MessageId::new()}),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            json!({"role": "user", "content": "x", "parentId": foreign.messages[0].id}),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
    ];
    for (body, status, code, field) in cases {
        let problem = app
            .send(TestRequest::post(&messages, body.clone()))
            .await
            .expect_problem(status, code);
        assert_eq!(problem["field"].as_str(), field, "{body}");
    }
    assert_eq!(app.stored("db", id).await, before, "nothing stored");
}

#[tokio::test]
async fn fork_copies_the_path_into_a_new_conversation() {
    let app = TestApp::new();
    let source = app.conversation("db").await;
    let asked = reply(
        &app,
        "db",
        source.id,
        json!({"content": "How big is orders?"}),
        "12 GB",
    )
    .await;
    let answer = answer(&asked);
    reply(
        &app,
        "db",
        source.id,
        json!({"content": "And events?"}),
        "3 GB",
    )
    .await;

    let response = app
        .send(TestRequest::post(
            format!("{}/fork", chat_path("db", source.id)),
            json!({"messageId": answer.id}),
        ))
        .await;
    let fork: Conversation = serde_json::from_value(response.expect(StatusCode::CREATED)).unwrap();
    let location = response.header("location").unwrap().to_owned();
    assert_eq!(
        location,
        format!("/api/v1/connections/db/conversations/{}", fork.id)
    );
    assert_eq!(response.header("etag"), Some("\"1\""));
    assert_eq!(fork.message_count, 2);
    assert_eq!(fork.head_id, Some(answer.id));
    assert_eq!(
        fork.metadata["forkedFrom"]["conversationId"],
        json!(source.id)
    );
    let copied = path(&app, "db", fork.id).await;
    assert_eq!(contents(&copied), vec!["How big is orders?", "12 GB"]);
    assert_eq!(copied[1]["id"], json!(answer.id), "ids are kept");
    assert_eq!(copied[1]["seq"], json!(2));
    assert_eq!(
        contents(&path(&app, "db", source.id).await).len(),
        4,
        "the source is unchanged"
    );
    // The fork is a conversation of the scope like any other.
    app.send(TestRequest::get(
        location.trim_start_matches("/api/v1/connections"),
    ))
    .await
    .expect(StatusCode::OK);

    // Bad forks: a message of another conversation, another scope, an unknown field.
    let other = app.conversation("db").await.id;
    let fork_of_other = TestRequest::post(
        format!("{}/fork", chat_path("db", other)),
        json!({"messageId": answer.id}),
    );
    app.send(fork_of_other)
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not_found");
    app.send(TestRequest::post(
        format!("{}/fork", chat_path("elsewhere", source.id)),
        json!({"messageId": answer.id}),
    ))
    .await
    .expect_problem(StatusCode::NOT_FOUND, "not_found");
    app.send(TestRequest::post(
        format!("{}/fork", chat_path("db", source.id)),
        json!({"messageId": answer.id, "title": "x"}),
    ))
    .await
    .expect_problem(StatusCode::BAD_REQUEST, "invalid_body");
}

#[tokio::test]
async fn deleting_a_message_removes_what_follows_it() {
    let app = TestApp::new();
    let id = app.conversation("db").await.id;
    let asked = reply(&app, "db", id, json!({"content": "q"}), "a1").await;
    let q = question(&asked);
    let a1 = answer(&asked);
    let again = reply(&app, "db", id, json!({"parentId": q.id}), "a2").await;
    let a2 = answer(&again);
    let follow = reply(&app, "db", id, json!({"content": "more?"}), "yes").await;
    let version = app.stored("db", id).await.version;
    let target = format!("{}/messages/{}", chat_path("db", id), a2.id);

    app.send(TestRequest::delete(&target).header("if-match", "\"1\""))
        .await
        .expect_problem(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    let deleted = app
        .send(TestRequest::delete(&target).header("if-match", &format!("\"{version}\"")))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    assert_eq!(
        deleted.header("etag"),
        Some(format!("\"{}\"", version + 1).as_str())
    );
    // a2, the follow-up question and its answer are gone; the head is back on a1.
    let conversation = app.stored("db", id).await;
    assert_eq!(conversation.head_id, Some(a1.id));
    assert_eq!(conversation.message_count, 2);
    assert_eq!(contents(&path(&app, "db", id).await), vec!["q", "a1"]);
    for gone in [a2.id, question(&follow).id] {
        app.send(TestRequest::get(format!(
            "{}/messages/{gone}",
            chat_path("db", id)
        )))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not_found");
    }
    app.send(TestRequest::delete(&target))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not_found");
    let kept = app
        .send(TestRequest::get(format!(
            "{}/messages/{}",
            chat_path("db", id),
            a1.id
        )))
        .await
        .expect(StatusCode::OK);
    assert_eq!(kept["siblingCount"], json!(1));
    // Another scope cannot delete it, and a malformed id is a bad parameter.
    app.send(TestRequest::delete(format!(
        "{}/messages/{}",
        chat_path("other", id),
        a1.id
    )))
    .await
    .expect_problem(StatusCode::NOT_FOUND, "not_found");
    app.send(TestRequest::delete(format!(
        "{}/messages/nope",
        chat_path("db", id)
    )))
    .await
    .expect_problem(StatusCode::BAD_REQUEST, "invalid_parameter");
}

#[tokio::test]
async fn bad_replies_and_switches_get_a_clear_error_and_store_nothing() {
    let app = TestApp::new();
    let id = app.conversation("db").await.id;
    let asked = reply(&app, "db", id, json!({"content": "q"}), "a").await;
    let answer = answer(&asked);
    app.service.wait_for_titles().await;
    let before = app.stored("db", id).await;
    let reply_path = format!("{}/reply", chat_path("db", id));
    let problem = app
        .send(TestRequest::post(
            &reply_path,
            json!({"parentId": answer.id}),
        ))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_eq!(problem["field"], json!("parentId"));
    app.send(TestRequest::post(&reply_path, json!({})))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    app.send(TestRequest::post(
        &reply_path,
        json!({"parentId": conversation_core::MessageId::new()}),
    ))
    .await
    .expect_problem(StatusCode::NOT_FOUND, "not_found");
    let other = app.conversation("db").await.id;
    app.send(TestRequest::patch(
        chat_path("db", other),
        json!({"headId": answer.id}),
    ))
    .await
    .expect_problem(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(app.stored("db", id).await, before);
    assert!(
        app.model.requests().len() == 1,
        "no bad request reached the model"
    );
}

#[tokio::test]
async fn a_message_with_many_versions_stays_bounded_on_the_wire() {
    let app = TestApp::new();
    let id = app.conversation("db").await.id;
    let question = app
        .service
        .append_user(&crate::support::scope_of("db"), id, "q")
        .await
        .unwrap()
        .messages[0]
        .id;
    let versions = 2 * SIBLING_WINDOW + 20;
    let mut last = Value::Null;
    for i in 0..versions {
        last = app
            .send(TestRequest::post(
                format!("{}/messages", chat_path("db", id)),
                json!({"role": "assistant", "content": format!("a{i}"), "parentId": question}),
            ))
            .await
            .expect(StatusCode::CREATED);
    }
    let newest = &last["messages"][0];
    assert_eq!(newest["siblingCount"], json!(versions));
    assert_eq!(newest["siblingIndex"], json!(versions - 1));
    assert_eq!(
        newest["siblingIds"].as_array().unwrap().len(),
        SIBLING_WINDOW + 1
    );
    let shown = path(&app, "db", id).await;
    assert_eq!(shown.len(), 2);
    assert_eq!(shown[1]["role"], json!(Role::Assistant.as_str()));
    assert!(shown[1]["siblingIds"].as_array().unwrap().len() <= 2 * SIBLING_WINDOW + 1);
}
