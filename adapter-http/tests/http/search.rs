//! `GET /{scope}/search` and the list's `q`, which the search index answers: hits
//! with snippets and character highlights, pages, filters, isolation, and what
//! hostile or bad query text gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use conversation_adapter_http::async_trait;
use conversation_core::testkit::{Call, Intercepted, Interceptor};
use conversation_core::{ConversationPatch, NewConversation, Result, Scope};
use conversation_store_memory::MemoryStore;
use serde_json::{Value, json};

use crate::support::{Options, TestApp, TestRequest, scope_of, url_encode};

/// The text a highlight marks in its snippet, counted in characters.
fn highlighted(snippet: &str, highlight: &Value) -> String {
    let start = highlight["start"].as_u64().unwrap() as usize;
    let end = highlight["end"].as_u64().unwrap() as usize;
    snippet.chars().skip(start).take(end - start).collect()
}

/// A conversation of scope `scope` titled `title`, holding a question and an answer.
async fn conversation(
    app: &TestApp,
    scope: &str,
    title: &str,
    question: &str,
    answer: &str,
) -> String {
    let scope = scope_of(scope);
    let created = app
        .service
        .create(&scope, NewConversation::new().with_title(title))
        .await
        .unwrap();
    app.service
        .append_user(&scope, created.id, question)
        .await
        .unwrap();
    app.service
        .append_assistant(&scope, created.id, answer)
        .await
        .unwrap();
    created.id.to_string()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            item.get("conversation")
                .map_or(&item["id"], |c| &c["id"])
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_word_said_only_in_a_reply_is_found_with_its_message_snippet_and_highlights() {
    let app = TestApp::new();
    let found = conversation(
        &app,
        "db",
        "Weekly report",
        "How do I reclaim space?",
        "Café ☕ first: then run VACUUM on the 🧪 table, and vacuuming again is rarely needed.",
    )
    .await;
    let other = conversation(&app, "db", "Indexes", "Which index?", "A btree one.").await;
    // Another scope says the same word: it is never found here.
    conversation(&app, "elsewhere", "Vacuum", "vacuum?", "VACUUM.").await;
    app.service.wait_for_titles().await;

    let page = app
        .send(TestRequest::get("/db/search?q=vacuum"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(ids(&page), [found.as_str()], "{page}");
    assert_eq!(page["nextCursor"], Value::Null);
    let hit = &page["items"][0];
    assert_eq!(hit["conversation"]["scope"], "db");
    assert!(hit["score"].is_number());
    let matches = hit["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 1, "{hit}");
    let answer = &app.messages("db", found.parse().unwrap()).await[1];
    assert_eq!(matches[0]["messageId"], answer.id.to_string());
    assert_eq!(matches[0]["seq"], answer.seq);
    assert_eq!(matches[0]["role"], "assistant");
    // Offsets count characters (emoji and accents are one each), never bytes, and
    // mark the word as written; the last word of a query matches as a prefix.
    let snippet = matches[0]["snippet"].as_str().unwrap();
    let marked: Vec<String> = matches[0]["highlights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| highlighted(snippet, h))
        .collect();
    assert_eq!(marked, ["VACUUM", "vacuuming"], "{snippet}");
    assert!(!snippet.contains('<'), "never markup: {snippet}");

    // A title match has no message.
    let page = app
        .send(TestRequest::get("/db/search?q=indexes%20"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(ids(&page), [other.as_str()]);
    let title_match = &page["items"][0]["matches"][0];
    assert_eq!(title_match["messageId"], Value::Null);
    assert_eq!(title_match["role"], Value::Null);
    assert_eq!(
        highlighted(
            title_match["snippet"].as_str().unwrap(),
            &title_match["highlights"][0]
        ),
        "Indexes"
    );

    // Archived conversations only when asked for; deleted ones never.
    app.service
        .update(
            &scope_of("db"),
            found.parse().unwrap(),
            ConversationPatch::new().archived(true),
        )
        .await
        .unwrap();
    for (query, expected) in [
        ("q=vacuum", vec![]),
        ("q=vacuum&archived=include", vec![found.clone()]),
        ("q=vacuum&archived=only", vec![found.clone()]),
        ("q=btree&archived=only", vec![]),
    ] {
        let page = app
            .send(TestRequest::get(format!("/db/search?{query}")))
            .await
            .expect(StatusCode::OK);
        assert_eq!(ids(&page), expected, "{query}");
    }
    app.send(TestRequest::delete(format!("/db/conversations/{found}")))
        .await
        .expect(StatusCode::NO_CONTENT);
    let page = app
        .send(TestRequest::get("/db/search?q=vacuum&archived=include"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(page["items"], json!([]));
}

#[tokio::test]
async fn search_pages_follow_the_cursor_best_first_without_repeats() {
    let app = TestApp::new();
    let mut all = Vec::new();
    for i in 0..7 {
        let answer = "replica ".repeat(i + 1);
        all.push(conversation(&app, "db", &format!("Chat {i}"), "lag?", &answer).await);
    }
    app.service.wait_for_titles().await;
    let mut seen = Vec::new();
    let mut scores = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app
            .send(TestRequest::get(format!(
                "/db/search?q=replica&limit=3&cursor={cursor}"
            )))
            .await
            .expect(StatusCode::OK);
        assert!(page["items"].as_array().unwrap().len() <= 3);
        seen.extend(ids(&page));
        scores.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|hit| hit["score"].as_f64().unwrap()),
        );
        match page["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "every hit once: {seen:?}");
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // A cursor belongs to its search: another text, or the list, refuses it.
    assert!(!cursor.is_empty());
    for path in [
        format!("/db/search?q=lag&cursor={cursor}"),
        format!("/db/search?q=replica&archived=include&cursor={cursor}"),
        format!("/db/conversations?cursor={cursor}"),
    ] {
        app.send(TestRequest::get(&path))
            .await
            .expect_problem(StatusCode::BAD_REQUEST, "invalid_parameter");
    }
}

#[tokio::test]
async fn hostile_query_text_searches_for_its_words_and_bad_text_is_a_422_naming_q() {
    let app = TestApp::new();
    let target = conversation(
        &app,
        "db",
        "Sizes",
        "Which orders tables are large?",
        "The orders table and its tables of lines.",
    )
    .await;
    conversation(&app, "db", "Other", "Nothing here", "Still nothing.").await;
    app.service.wait_for_titles().await;
    // FTS5 and tsquery syntax, SQL and markup are words or separators, never syntax:
    // each finds the conversation holding the words, and nothing errs.
    let long_words = "orders ".repeat(1_400);
    for text in [
        "orders",
        "ORDERS tab",
        "orders*",
        "\"orders tables\"",
        "\"orders",
        "NEAR(orders tables)",
        "orders AND tables",
        "orders OR nothing",
        "-orders NOT tables",
        "title:orders",
        "content:orders tables",
        "(orders",
        "orders) tables(",
        "^orders + tables",
        "orders'; DROP TABLE conversations; --",
        "<b>orders</b>",
        "%orders_ \\ tables",
        "orders\u{200b}tables",
        &long_words[..511],
    ] {
        let page = app
            .send(TestRequest::get(format!(
                "/db/search?q={}",
                url_encode(text)
            )))
            .await;
        let page = page.expect(StatusCode::OK);
        let found = ids(&page);
        // Some of them hold a word the conversation lacks (`nothing`, `drop`, `b`,
        // `content`…): then nothing is found, which is the answer for those words.
        assert!(
            found.is_empty() || found == [target.clone()],
            "{text:?}: {found:?}"
        );
        if ["orders", "ORDERS tab", "orders*", "(orders", "\"orders"].contains(&text) {
            assert_eq!(found, [target.as_str()], "{text:?}");
        }
    }
    // No word, too long (10 kB), too many words, a control character, or no `q`:
    // 422 naming `q`, on the search and on the list's `q` alike.
    let ten_kb = "x".repeat(10 * 1024);
    let many_words: String = (0..17).map(|i| format!("w{i} ")).collect();
    for text in [
        "",
        "   ",
        "***",
        "\"()\"",
        &ten_kb,
        &many_words,
        "a\u{1}b",
        "a\nb",
    ] {
        let problem = app
            .send(TestRequest::get(format!(
                "/db/search?q={}",
                url_encode(text)
            )))
            .await
            .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
        assert_eq!(problem["field"], "q", "{text:?}");
        if !text.is_empty() {
            let problem = app
                .send(TestRequest::get(format!(
                    "/db/conversations?q={}",
                    url_encode(text)
                )))
                .await
                .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
            assert_eq!(problem["field"], "q", "{text:?}");
        }
    }
    let problem = app
        .send(TestRequest::get("/db/search"))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_eq!(problem["field"], "q");
    // Parameters that do not parse: 400 naming them, as on lists.
    for (query, field) in [
        ("q=orders&cursor=garbage", "cursor"),
        ("q=orders&cursor=%3Cscript%3E", "cursor"),
        ("q=orders&limit=0", "limit"),
        ("q=orders&limit=x", "limit"),
        ("q=orders&archived=maybe", "archived"),
        ("q=orders&q=tables", "query"),
    ] {
        let problem = app
            .send(TestRequest::get(format!("/db/search?{query}")))
            .await
            .expect_problem(StatusCode::BAD_REQUEST, "invalid_parameter");
        assert_eq!(problem["field"], field, "{query}");
    }
}

/// The store's list and search calls so far.
#[derive(Debug, Default)]
struct Reads {
    lists: AtomicUsize,
    searches: AtomicUsize,
}

/// Counts the store's list and search calls in its [`Reads`].
#[derive(Debug)]
struct CountReads(Arc<Reads>);

#[async_trait]
impl Interceptor for CountReads {
    async fn before(&self, _: Option<&Scope>, call: Call<'_>) -> Result<()> {
        match call {
            Call::ListConversations(_) => self.0.lists.fetch_add(1, Ordering::SeqCst),
            Call::Search(_) => self.0.searches.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        Ok(())
    }
}

#[tokio::test]
async fn the_lists_q_is_answered_by_the_search_index_in_its_order() {
    let counts = Arc::new(Reads::default());
    let app = TestApp::with(Options {
        store: Some(Arc::new(Intercepted::new(
            MemoryStore::new(),
            CountReads(counts.clone()),
        ))),
        ..Options::default()
    });
    let mut matching = Vec::new();
    for i in 0..5 {
        let answer = "migration ".repeat(5 - i);
        matching.push(conversation(&app, "db", &format!("Chat {i}"), "plan?", &answer).await);
    }
    // Many conversations the filter skips.
    for i in 0..30 {
        conversation(&app, "db", &format!("Noise {i}"), "hello", "hi").await;
    }
    app.service.wait_for_titles().await;
    let lists = counts.lists.load(Ordering::SeqCst);
    let searches = counts.searches.load(Ordering::SeqCst);

    // Found by a word that is in no title: the list's `q` is a search, in the
    // search's order, its pages continued by the search's cursor.
    let mut seen = Vec::new();
    let mut path = "/db/conversations?q=migrat&limit=2".to_owned();
    loop {
        let page = app
            .send(TestRequest::get(&path))
            .await
            .expect(StatusCode::OK);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        // The list's items: conversations, not hits.
        assert!(
            items
                .iter()
                .all(|c| c["scope"] == "db" && c.get("matches").is_none())
        );
        seen.extend(ids(&page));
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/db/conversations?q=migrat&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        counts.lists.load(Ordering::SeqCst),
        lists,
        "the store's list (a scan for titles) was never asked"
    );
    assert_eq!(
        counts.searches.load(Ordering::SeqCst) - searches,
        3,
        "one search per page"
    );
    let mut found = seen.clone();
    found.sort();
    matching.sort();
    assert_eq!(found, matching);
    // The same order as the search route's.
    let search = app
        .send(TestRequest::get("/db/search?q=migrat&limit=200"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(ids(&search), seen);
    // An empty `q` is no filter: the plain list.
    let page = app
        .send(TestRequest::get("/db/conversations?q=&limit=200"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 35);
    // Another scope's list finds nothing of this one.
    let page = app
        .send(TestRequest::get("/other/conversations?q=migration"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(page["items"], json!([]));
}
