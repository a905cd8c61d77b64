//! Search (promise 14): what is stored is found by its words, in every store alike.

use std::collections::BTreeSet;

use super::*;
use crate::backend::{SearchTerms, rank_order, tokenize};
use crate::{Highlight, MAX_MATCHES_PER_HIT, SearchHit, SearchMatch, SearchQuery};

/// Every hit of `query`, page after page: no page longer than its limit, a page with
/// a cursor after it full, no conversation twice, every hit after the one before in
/// rank order (what the cursors rely on).
async fn search_all<S: Store>(store: &S, scope: &Scope, query: SearchQuery) -> Vec<SearchHit> {
    let mut query = query;
    let limit = query.page_size().unwrap();
    let mut hits: Vec<SearchHit> = Vec::new();
    loop {
        let page = store
            .search(scope, &query)
            .await
            .unwrap_or_else(|e| panic!("search {:?}: {e:?}", query.text));
        assert!(
            page.items.len() <= limit,
            "{:?}: a page over its limit",
            query.text
        );
        if page.next_cursor.is_some() {
            assert_eq!(
                page.items.len(),
                limit,
                "{:?}: a short page with a cursor",
                query.text
            );
        }
        for hit in &page.items {
            assert!(
                !hits
                    .iter()
                    .any(|h| h.conversation.id == hit.conversation.id),
                "{:?}: {} found twice",
                query.text,
                hit.conversation.id
            );
            assert!(
                hit.score.is_finite(),
                "{:?}: score {}",
                query.text,
                hit.score
            );
            if let Some(last) = hits.last() {
                assert!(
                    rank_order(last, hit).is_lt(),
                    "{:?}: hits out of rank order",
                    query.text
                );
            }
            assert_eq!(hit.conversation.scope, *scope, "a hit of another scope");
            hits.push(hit.clone());
        }
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return hits,
        }
        assert!(hits.len() < 100_000, "the pages never end");
    }
}

/// How many rows of `conversation` (its title, each of its stored messages on any
/// branch) hold every word of `terms`, and its messages as stored.
async fn matching_rows<S: Store>(
    store: &S,
    scope: &Scope,
    terms: &SearchTerms,
    conversation: &Conversation,
) -> (usize, Vec<Message>) {
    let messages = read_view(store, scope, conversation.id, MessageView::All).await;
    let title = conversation
        .title
        .as_deref()
        .is_some_and(|t| terms.matches(t));
    let rows = usize::from(title)
        + messages
            .iter()
            .filter(|m| terms.matches(&m.content))
            .count();
    (rows, messages)
}

/// The conversations of `scope` that the words of `text` find by the shared rule:
/// those whose title or one stored message holds every word, read back from the
/// store as they are now.
async fn expected_finds<S: Store>(
    store: &S,
    scope: &Scope,
    text: &str,
    archived: ArchivedFilter,
) -> BTreeSet<ConversationId> {
    let terms = SearchTerms::parse(text).unwrap();
    let mut found = BTreeSet::new();
    let query = ConversationQuery::new().archived(archived).limit(200);
    for conversation in list_all(store, scope, query).await.concat() {
        if matching_rows(store, scope, &terms, &conversation).await.0 > 0 {
            found.insert(conversation.id);
        }
    }
    found
}

/// The highlights of a snippet are exactly its words that match: each range one
/// whole word of `terms` (the last as a prefix when the search says so), none left
/// out, in order, in characters.
#[track_caller]
fn assert_highlights_cover_matched_words(
    terms: &SearchTerms,
    snippet: &str,
    highlights: &[Highlight],
) {
    let words = terms.words();
    let matched = |word: &str| {
        words.iter().enumerate().any(|(i, wanted)| {
            if terms.prefix() && i + 1 == words.len() {
                word.starts_with(wanted.as_str())
            } else {
                word == wanted
            }
        })
    };
    let expected: Vec<(u32, u32)> = tokenize(snippet)
        .into_iter()
        .filter(|token| matched(&token.word))
        .map(|token| (token.chars.start as u32, token.chars.end as u32))
        .collect();
    let got: Vec<(u32, u32)> = highlights.iter().map(|h| (h.start, h.end)).collect();
    assert_eq!(got, expected, "highlights of {snippet:?}");
    assert!(!got.is_empty(), "a snippet shows a match: {snippet:?}");
}

/// A hit is the conversation as stored, with as many matches as it has matching rows
/// (up to [`MAX_MATCHES_PER_HIT`]), each a real row that holds every word, built
/// with [`SearchMatch`] from the stored text, its highlights on the matched words.
async fn assert_hit_is_real<S: Store>(
    store: &S,
    scope: &Scope,
    terms: &SearchTerms,
    hit: &SearchHit,
) {
    let conversation = store
        .get_conversation(scope, hit.conversation.id)
        .await
        .unwrap();
    assert_eq!(hit.conversation, conversation, "a hit is the stored row");
    let (rows, messages) = matching_rows(store, scope, terms, &conversation).await;
    assert_eq!(
        hit.matches.len(),
        rows.min(MAX_MATCHES_PER_HIT),
        "as many matches as rows match, up to {MAX_MATCHES_PER_HIT}: {hit:?}"
    );
    let mut seen = HashSet::new();
    for found in &hit.matches {
        assert!(
            seen.insert(found.message_id),
            "a row matched twice: {hit:?}"
        );
        let expected = match found.message_id {
            None => {
                let title = conversation
                    .title
                    .as_deref()
                    .expect("a title match has a title");
                assert!(terms.matches(title), "{title:?} does not match");
                SearchMatch::in_title(terms, title)
            }
            Some(id) => {
                let message = messages
                    .iter()
                    .find(|m| m.id == id)
                    .expect("a match names a stored message");
                assert!(terms.matches(&message.content), "{:?}", message.content);
                SearchMatch::in_message(terms, id, message.seq, message.role, &message.content)
            }
        };
        assert_eq!(found, &expected);
        assert_highlights_cover_matched_words(terms, &found.snippet, &found.highlights);
    }
}

/// Searches `query` through every page and checks that it finds exactly `expected`,
/// each hit real.
async fn assert_finds<S: Store>(
    store: &S,
    scope: &Scope,
    query: SearchQuery,
    expected: &[ConversationId],
) -> Vec<SearchHit> {
    let terms = query.terms().unwrap();
    let hits = search_all(store, scope, query.clone()).await;
    let found: BTreeSet<ConversationId> = hits.iter().map(|h| h.conversation.id).collect();
    let expected: BTreeSet<ConversationId> = expected.iter().copied().collect();
    assert_eq!(found, expected, "search {:?}", query.text);
    for hit in &hits {
        assert_hit_is_real(store, scope, &terms, hit).await;
    }
    hits
}

/// Searches `text` (small pages) and checks it finds what the shared rule says.
async fn assert_finds_by_the_rule<S: Store>(
    store: &S,
    scope: &Scope,
    text: &str,
) -> BTreeSet<ConversationId> {
    let expected = expected_finds(store, scope, text, ArchivedFilter::Exclude).await;
    let expected_ids: Vec<ConversationId> = expected.iter().copied().collect();
    assert_finds(store, scope, SearchQuery::new(text).limit(2), &expected_ids).await;
    expected
}

async fn titled<S: Store>(store: &S, scope: &Scope, title: Option<&str>) -> Conversation {
    let mut new = NewConversation::new();
    new.title = title.map(str::to_owned);
    store.create_conversation(scope, new).await.unwrap()
}

/// A conversation titled `title` holding `texts` as a chain of user and assistant
/// messages.
async fn chat_saying<S: Store>(
    store: &S,
    scope: &Scope,
    title: Option<&str>,
    texts: &[&str],
) -> Conversation {
    let chat = titled(store, scope, title).await;
    if texts.is_empty() {
        return chat;
    }
    let messages = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            if i % 2 == 0 {
                NewMessage::user(*text)
            } else {
                NewMessage::assistant(*text)
            }
        })
        .collect();
    store
        .append_messages(scope, chat.id, Append::new(messages))
        .await
        .unwrap()
        .conversation
}

/// Appends one message of `role` with `content` at `parent`.
async fn say<S: Store>(
    store: &S,
    scope: &Scope,
    chat: ConversationId,
    parent: Parent,
    message: NewMessage,
) -> Message {
    store
        .append_messages(scope, chat, Append::one(message).parent(parent))
        .await
        .unwrap()
        .messages
        .remove(0)
}

/// An ASCII corpus, with its titles and its messages of every role on several
/// branches, with words that query languages, stemmers and URL parsers treat
/// specially.
async fn ascii_corpus<S: Store>(store: &S, scope: &Scope) -> [ConversationId; 6] {
    let orders = titled(store, scope, Some("Orders report")).await;
    let call = ToolCall {
        id: "call_1".into(),
        name: "run_sql".into(),
        arguments: json!({"sql": "SELECT zyzzyva FROM order_items"}),
    };
    let chain = vec![
        NewMessage::system("You are a careful SQL analyst."),
        NewMessage::user("How many orders per customer? Use the order_items table."),
        NewMessage::assistant("")
            .with_tool_calls(vec![call])
            .with_metadata(metadata(json!({"note": "zyzzyva"}))),
        NewMessage::tool("call_1", "42 rows; e-mail column empty"),
        NewMessage::assistant("Customers place 3.14 orders on average, don't they?"),
    ];
    let system = store
        .append_messages(scope, orders.id, Append::new(chain))
        .await
        .unwrap()
        .messages
        .remove(0);
    // An edited question opens a second branch under the system message.
    let edited = vec![
        NewMessage::user("Which tables are NOT near the title: page?"),
        NewMessage::assistant("The tables near it: customers AND orders OR invoices."),
    ];
    store
        .append_messages(
            scope,
            orders.id,
            Append::new(edited).parent(Parent::Message(system.id)),
        )
        .await
        .unwrap();

    let web = chat_saying(
        store,
        scope,
        Some("Web logs (v2)"),
        &["Visits from https://db.example.com/a_b?c=d and foo@example.com"],
    )
    .await;
    // Regenerated: the first answer stays on a branch that is not active.
    for answer in [
        "Obsolete answer about the tablespace",
        "node.js and C++ clients, 1999 vs 2024",
    ] {
        let visit = web.head_id.unwrap();
        say(
            store,
            scope,
            web.id,
            Parent::Message(visit),
            NewMessage::assistant(answer),
        )
        .await;
    }

    let untitled = chat_saying(
        store,
        scope,
        None,
        &["the THE The", "Table tab tabs tabulate"],
    )
    .await;
    let split = chat_saying(store, scope, Some("Revenue"), &["by region"]).await;
    let empty = titled(store, scope, Some("Empty chat")).await;
    let cleanup = chat_saying(store, scope, Some("Cleanup"), &["kept line"]).await;
    let removed = say(
        store,
        scope,
        cleanup.id,
        Parent::Head,
        NewMessage::user("removed kumquat line"),
    )
    .await;
    store
        .delete_message(scope, cleanup.id, removed.id, None)
        .await
        .unwrap();
    [
        orders.id,
        web.id,
        untitled.id,
        split.id,
        empty.id,
        cleanup.id,
    ]
}

/// Promise 14: on an ASCII corpus (titles, messages of every role, several branches)
/// every store finds exactly the conversations whose title or one message holds
/// every word, the last as a prefix unless the text ends with a separator; words of
/// tool-call arguments and metadata are not searched; nothing is stemmed and no word
/// is a stop word.
pub async fn search_finds_what_the_words_say<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("search-corpus");
    let [orders, web, untitled, ..] = ascii_corpus(&*store, &scope).await;
    // The same texts in another scope never show.
    ascii_corpus(&*store, &fresh_scope("search-corpus-other")).await;

    for (text, expected) in [
        ("orders", vec![orders]),
        ("tab", vec![orders, web, untitled]),
        ("table ", vec![orders, untitled]),
        ("the ", vec![orders, web, untitled]),
        ("zyzzyva", vec![]),
        ("revenue region", vec![]),
        ("kumquat", vec![]),
        ("obsolete", vec![web]),
        ("careful", vec![orders]),
    ] {
        assert_finds(&*store, &scope, SearchQuery::new(text), &expected).await;
    }
    for text in [
        "orders",
        "order",
        "order ",
        "ord",
        "orders ",
        "table ",
        "tables",
        "tab",
        "tab ",
        "the",
        "THE ",
        "not",
        "near",
        "and",
        "or",
        "title",
        "page",
        "e-mail",
        "mail",
        "e",
        "example com",
        "foo@example.com",
        "https",
        "db example",
        "a_b",
        "c=d",
        "3.14",
        "14",
        "3",
        "don't",
        "don",
        "t",
        "c++",
        "c ",
        "node.js",
        "js",
        "v2",
        "v",
        "1999",
        "99",
        "2024 1999",
        "zyzzyva",
        "careful",
        "analyst sql",
        "revenue region",
        "revenue",
        "region",
        "kumquat",
        "kept",
        "empty",
        "obsolete",
        "tablespace",
        "customers near",
        "near customers",
        "rows",
        "42",
        "invoices orders customers",
        "report orders",
        "web logs",
        "logs v",
        "sql",
        "run_sql",
        "call_1",
    ] {
        assert_finds_by_the_rule(&*store, &scope, text).await;
    }
}

/// Promise 14: a conversation is found when one of its rows (its title, or one
/// message) holds every word; words spread over two rows are no match. Only the
/// last word is a prefix, and only when the text does not end with a separator.
pub async fn search_needs_every_word_in_one_row<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("search-and");
    let tables = chat_saying(&*store, &scope, Some("Largest tables"), &[]).await;
    let index = chat_saying(&*store, &scope, None, &["The largest index"]).await;
    let key = chat_saying(&*store, &scope, None, &["a tab key"]).await;
    let split = chat_saying(&*store, &scope, Some("Revenue"), &["by region"]).await;
    let apart = chat_saying(&*store, &scope, None, &["alpha", "beta"]).await;
    for (text, expected) in [
        ("largest tab", vec![tables.id]),
        ("largest tab ", vec![]),
        ("largest ind", vec![index.id]),
        ("largest", vec![tables.id, index.id]),
        ("tab ", vec![key.id]),
        ("tab", vec![tables.id, key.id]),
        ("tab tab", vec![tables.id, key.id]),
        ("tables largest", vec![tables.id]),
        ("larg tables", vec![]),
        ("revenue region", vec![]),
        ("region by", vec![split.id]),
        ("revenue", vec![split.id]),
        ("alpha beta", vec![]),
        ("beta", vec![apart.id]),
        ("TAB KEY", vec![key.id]),
    ] {
        assert_finds(&*store, &scope, SearchQuery::new(text), &expected).await;
    }
}

/// Promise 14: words are compared lowercased and without diacritics (`Café` finds
/// `cafe` and back); a run of characters of a script written without spaces is one
/// word, found from its start.
pub async fn search_folds_case_and_diacritics<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("search-fold");
    let cafe = chat_saying(&*store, &scope, Some("Café Crème"), &[]).await;
    let naive = chat_saying(&*store, &scope, None, &["NAÏVE Bayes über Ålesund"]).await;
    let plain = chat_saying(&*store, &scope, None, &["plain cafe"]).await;
    let cjk = chat_saying(&*store, &scope, None, &["数据库的表 and 東京"]).await;
    let marks = chat_saying(&*store, &scope, Some("Ünïcödé"), &[]).await;
    for (text, expected) in [
        ("cafe", vec![cafe.id, plain.id]),
        ("CAFÉ", vec![cafe.id, plain.id]),
        ("café ", vec![cafe.id, plain.id]),
        ("caf", vec![cafe.id, plain.id]),
        ("cafés", vec![]),
        ("creme", vec![cafe.id]),
        ("CRÈME", vec![cafe.id]),
        ("naive bayes", vec![naive.id]),
        ("naïve", vec![naive.id]),
        ("uber", vec![naive.id]),
        ("alesund", vec![naive.id]),
        ("unicode", vec![marks.id]),
        ("ÜNÏCÖDÉ ", vec![marks.id]),
        ("数据", vec![cjk.id]),
        ("数据库的表", vec![cjk.id]),
        ("表", vec![]),
        ("東京", vec![cjk.id]),
    ] {
        assert_finds(&*store, &scope, SearchQuery::new(text), &expected).await;
    }
}

/// Promises 7 and 14: every acknowledged write shows in the next search: appended
/// messages (on any branch) are found, deleted ones (with their subtree) and deleted
/// conversations are not, a renamed or automatically titled conversation is found
/// by its new title only, a fork by its copies.
pub async fn search_follows_every_write<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("search-writes");
    let chat = chat_saying(&*store, &scope, None, &["start"]).await;
    let start = chat.head_id.unwrap();
    let find = |text: &'static str, expected: Vec<ConversationId>| {
        let store = Arc::clone(&store);
        let scope = scope.clone();
        async move { assert_finds(&*store, &scope, SearchQuery::new(text), &expected).await }
    };
    find("kumquat", vec![]).await;
    let jam = say(
        &*store,
        &scope,
        chat.id,
        Parent::Head,
        NewMessage::assistant("kumquat jam"),
    )
    .await;
    find("kumquat", vec![chat.id]).await;
    say(
        &*store,
        &scope,
        chat.id,
        Parent::Head,
        NewMessage::user("more kumquat talk"),
    )
    .await;
    let pie = say(
        &*store,
        &scope,
        chat.id,
        Parent::Message(start),
        NewMessage::assistant("kumquat pie"),
    )
    .await;
    let hits = find("kumquat", vec![chat.id]).await;
    assert_eq!(hits[0].matches.len(), 3, "every branch is searched");

    store
        .delete_message(&scope, chat.id, jam.id, None)
        .await
        .unwrap();
    let hits = find("kumquat", vec![chat.id]).await;
    assert_eq!(hits[0].matches.len(), 1);
    assert_eq!(hits[0].matches[0].message_id, Some(pie.id));
    find("jam", vec![]).await;
    find("talk", vec![]).await;
    store
        .delete_message(&scope, chat.id, pie.id, None)
        .await
        .unwrap();
    find("kumquat", vec![]).await;

    store
        .update_conversation(
            &scope,
            chat.id,
            ConversationPatch::new().title("Persimmon notes"),
        )
        .await
        .unwrap();
    let hits = find("persimmon", vec![chat.id]).await;
    assert_eq!(hits[0].matches[0].message_id, None, "a title match");
    store
        .update_conversation(&scope, chat.id, ConversationPatch::new().title("Other"))
        .await
        .unwrap();
    find("persimmon", vec![]).await;
    find("other", vec![chat.id]).await;

    let untitled = chat_saying(&*store, &scope, None, &["nothing here"]).await;
    store
        .set_title_unless_user(
            &scope,
            untitled.id,
            "Generated fig title".into(),
            TitleSource::Generated,
        )
        .await
        .unwrap();
    find("fig", vec![untitled.id]).await;
    let hinted = store
        .create_conversation(&scope, NewConversation::new())
        .await
        .unwrap();
    store
        .append_messages(
            &scope,
            hinted.id,
            Append::one(NewMessage::user("a question")).title_hint("Hinted guava"),
        )
        .await
        .unwrap();
    find("guava", vec![hinted.id]).await;

    let source = chat_saying(&*store, &scope, None, &["quince paste", "more"]).await;
    let fork = store
        .fork_conversation(&scope, source.id, source.head_id.unwrap())
        .await
        .unwrap();
    find("quince", vec![source.id, fork.id]).await;
    store
        .delete_conversation(&scope, source.id, None)
        .await
        .unwrap();
    find("quince", vec![fork.id]).await;
    store
        .delete_conversation(&scope, fork.id, None)
        .await
        .unwrap();
    find("quince", vec![]).await;
    find("paste", vec![]).await;
}

/// Promises 1 and 14: a search finds only its own scope's conversations, also
/// between scopes whose names differ only by characters SQL patterns treat
/// specially; a scope with nothing finds nothing.
pub async fn search_never_crosses_scopes<S: Store>(store: Arc<S>) {
    let base = format!("search-iso-{}-", uuid::Uuid::now_v7());
    let scopes: Vec<Scope> = ["X1", "_1", "%", "x1"]
        .iter()
        .map(|suffix| Scope::new(format!("{base}{suffix}")).unwrap())
        .collect();
    let mut own = Vec::new();
    for (i, scope) in scopes.iter().enumerate() {
        let chat = chat_saying(
            &*store,
            scope,
            Some(&format!("Tamarind {i}")),
            &[&format!("tamarind chutney only{i}")],
        )
        .await;
        own.push(chat.id);
    }
    for (i, scope) in scopes.iter().enumerate() {
        assert_finds(&*store, scope, SearchQuery::new("tamarind"), &[own[i]]).await;
        assert_finds(&*store, scope, SearchQuery::new("chutney"), &[own[i]]).await;
        for (j, _) in scopes.iter().enumerate().filter(|(j, _)| *j != i) {
            assert_finds(&*store, scope, SearchQuery::new(format!("only{j}")), &[]).await;
        }
        for archived in [ArchivedFilter::Include, ArchivedFilter::Only] {
            let hits = search_all(
                &*store,
                scope,
                SearchQuery::new("tamarind").archived(archived),
            )
            .await;
            assert!(hits.iter().all(|h| own[i] == h.conversation.id));
        }
    }
    let nobody = fresh_scope("search-nobody");
    let page = store
        .search(&nobody, &SearchQuery::new("tamarind"))
        .await
        .unwrap();
    assert!(page.items.is_empty() && page.next_cursor.is_none());
}

/// Promise 14: the archive filter works as for lists: archived conversations are
/// left out unless asked for, and found again once restored.
pub async fn search_archived_filter<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("search-archived");
    let mut all = Vec::new();
    for i in 0..5 {
        let chat = chat_saying(&*store, &scope, None, &[&format!("lychee number {i}")]).await;
        all.push(chat.id);
    }
    for id in &all[..3] {
        store
            .update_conversation(&scope, *id, ConversationPatch::new().archived(true))
            .await
            .unwrap();
    }
    let query = SearchQuery::new("lychee").limit(2);
    assert_finds(&*store, &scope, query.clone(), &all[3..]).await;
    assert_finds(
        &*store,
        &scope,
        query.clone().archived(ArchivedFilter::Exclude),
        &all[3..],
    )
    .await;
    assert_finds(
        &*store,
        &scope,
        query.clone().archived(ArchivedFilter::Only),
        &all[..3],
    )
    .await;
    assert_finds(
        &*store,
        &scope,
        query.clone().archived(ArchivedFilter::Include),
        &all,
    )
    .await;
    store
        .update_conversation(&scope, all[0], ConversationPatch::new().archived(false))
        .await
        .unwrap();
    assert_finds(&*store, &scope, query.clone(), &[all[0], all[3], all[4]]).await;
    assert_finds(
        &*store,
        &scope,
        query.archived(ArchivedFilter::Only),
        &all[1..3],
    )
    .await;
}

/// Promise 14: hits that rank equal come by newest activity, then by id, as lists
/// do; pages by cursor cover every hit once; the page size defaults to 50, is
/// capped, and 0 is `InvalidInput` naming `limit`.
pub async fn search_pages_cover_every_hit_once<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("search-pages");
    let mut rows = Vec::new();
    for _ in 0..25 {
        rows.push(chat_saying(&*store, &scope, None, &["gazpacho recipe"]).await);
    }
    tick().await;
    // Renaming (without the word) moves some of them up by activity.
    for i in [3, 17, 8] {
        rows[i] = store
            .update_conversation(&scope, rows[i].id, ConversationPatch::new().title("Soup"))
            .await
            .unwrap();
        tick().await;
    }
    sort_like_list(&mut rows, false);
    for limit in [1, 4, 25, 200] {
        let hits = search_all(&*store, &scope, SearchQuery::new("gazpacho").limit(limit)).await;
        assert_eq!(
            hits.iter().map(|h| h.conversation.id).collect::<Vec<_>>(),
            ids(&rows),
            "equal hits by activity, then id (limit {limit})"
        );
    }
    let page = store
        .search(&scope, &SearchQuery::new("recipe"))
        .await
        .unwrap();
    assert_eq!((page.items.len(), page.next_cursor), (25, None));
    let capped = store
        .search(&scope, &SearchQuery::new("recipe").limit(100_000))
        .await
        .unwrap();
    assert_eq!(capped.items.len(), 25);
    assert_invalid(
        store
            .search(&scope, &SearchQuery::new("recipe").limit(0))
            .await,
        "limit",
    );
    for i in 0..55 {
        chat_saying(&*store, &scope, None, &[&format!("broth {i}")]).await;
    }
    let page = store
        .search(&scope, &SearchQuery::new("broth"))
        .await
        .unwrap();
    assert_eq!(page.items.len(), crate::DEFAULT_PAGE_SIZE);
    assert!(page.next_cursor.is_some());
}

/// Promise 14: a hit carries as many matches as it has matching rows, up to
/// [`MAX_MATCHES_PER_HIT`]; a title match names no message; a message match names
/// its id, seq and role; snippets are cut around the match and highlight, in
/// characters, exactly the words that match.
pub async fn search_hits_carry_snippets<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("search-snippets");
    let many = chat_saying(
        &*store,
        &scope,
        Some("Mango lassi"),
        &[
            "mango one",
            "mango two",
            "mango three",
            "mango four",
            "mango five",
        ],
    )
    .await;
    let hits = assert_finds(&*store, &scope, SearchQuery::new("mango"), &[many.id]).await;
    assert_eq!(hits[0].matches.len(), MAX_MATCHES_PER_HIT);

    let title_only = chat_saying(&*store, &scope, Some("Papaya plans"), &["nothing"]).await;
    let hits = assert_finds(
        &*store,
        &scope,
        SearchQuery::new("papaya"),
        &[title_only.id],
    )
    .await;
    let title_match = &hits[0].matches[0];
    assert_eq!(
        (title_match.message_id, title_match.seq, title_match.role),
        (None, None, None)
    );
    assert_eq!(title_match.snippet, "Papaya plans");
    assert_eq!(title_match.highlights, vec![Highlight { start: 0, end: 6 }]);

    let two = chat_saying(&*store, &scope, None, &["guava here", "and guava there"]).await;
    let hits = assert_finds(&*store, &scope, SearchQuery::new("guava"), &[two.id]).await;
    assert_eq!(hits[0].matches.len(), 2);
    let messages = read_view(&*store, &scope, two.id, MessageView::All).await;
    for found in &hits[0].matches {
        let message = messages
            .iter()
            .find(|m| Some(m.id) == found.message_id)
            .unwrap();
        assert_eq!(
            (found.seq, found.role),
            (Some(message.seq), Some(message.role))
        );
    }

    let long = format!(
        "{} durian in the middle {}",
        "filler words ".repeat(150),
        "more words ".repeat(150)
    );
    let unicode = "🧪🧪 naïve ☃ — Durian! DURIAN, durians";
    let chat = chat_saying(&*store, &scope, None, &[&long, unicode]).await;
    let tool = say(
        &*store,
        &scope,
        chat.id,
        Parent::Head,
        NewMessage::tool("call_9", "durian stock: 3"),
    )
    .await;
    let hits = assert_finds(&*store, &scope, SearchQuery::new("durian"), &[chat.id]).await;
    for found in &hits[0].matches {
        let length = found.snippet.chars().count();
        assert!(
            length <= crate::backend::SNIPPET_CHARS + 2,
            "a snippet of {length} characters"
        );
        if found.message_id == Some(tool.id) {
            assert_eq!(found.role, Some(Role::Tool));
        }
        if found.snippet.contains("middle") {
            assert!(found.snippet.starts_with('…') && found.snippet.ends_with('…'));
        }
        if found.snippet.contains('🧪') {
            let chars: Vec<char> = found.snippet.chars().collect();
            let marked: Vec<String> = found
                .highlights
                .iter()
                .map(|h| chars[h.start as usize..h.end as usize].iter().collect())
                .collect();
            assert_eq!(marked, ["Durian", "DURIAN", "durians"]);
        }
    }
    let exact = assert_finds(&*store, &scope, SearchQuery::new("durian "), &[chat.id]).await;
    for found in &exact[0].matches {
        assert!(found.snippet.contains("durian") || found.snippet.contains("Durian"));
    }
}

/// Promise 14: what the user types is only ever words: query syntax of every store
/// (quotes, `*`, `-`, `NEAR`, `AND`/`OR`/`NOT`, columns, parentheses, `^`, `:*`,
/// `&`, `|`, `!`, `<->`) is searched for as words or refused as `InvalidInput`
/// naming `q` (no word, too long, too many words, control characters), exactly as
/// core's rule says, and never a store error.
pub async fn search_text_is_never_syntax<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("search-syntax");
    chat_saying(
        &*store,
        &scope,
        Some("x y z"),
        &["orders and customers are not near the title page"],
    )
    .await;
    chat_saying(&*store, &scope, None, &["orders only"]).await;
    chat_saying(&*store, &scope, None, &["drop table conversations"]).await;
    chat_saying(&*store, &scope, Some("content"), &["c 1 2 or"]).await;
    let sixteen: Vec<String> = (0..16).map(|i| format!("w{i}")).collect();
    let seventeen: Vec<String> = (0..17).map(|i| format!("w{i}")).collect();
    let texts: Vec<String> = [
        "\"orders",
        "orders\"",
        "\"orders customers\"",
        "ord*",
        "*",
        "-orders",
        "orders -customers",
        "NEAR(orders customers)",
        "orders NEAR customers",
        "NEAR/2",
        "orders AND customers",
        "orders OR customers",
        "NOT orders",
        "orders NOT",
        "title:orders",
        "content:orders",
        "{title content}: orders",
        "(orders",
        "orders)",
        "((",
        ")",
        "^orders",
        "orders^2",
        "🧪",
        "🧪 orders",
        "orders 🧪",
        "[orders]",
        "orders:",
        ":",
        "'",
        "'; DROP TABLE conversations; --",
        "\\",
        "%",
        "_",
        "a & b | !c",
        "orders <-> customers",
        "orders:*",
        "!orders",
        "@@ orders",
        "$1",
        "?",
        "+orders",
        "~orders",
        "orders~",
        "orders*",
        "AND",
        "OR NOT",
        "",
        "   ",
        "a\u{0}b",
        "tab\tsep",
        "line\nbreak",
    ]
    .iter()
    .map(|t| (*t).to_owned())
    .chain([
        "x".repeat(10_000),
        "orders ".repeat(1_500),
        "é".repeat(5_000),
        "x".repeat(crate::MAX_SEARCH_CHARS),
        sixteen.join(" "),
        seventeen.join(" "),
    ])
    .collect();
    for text in texts {
        let result = store.search(&scope, &SearchQuery::new(text.clone())).await;
        let shown: String = text.chars().take(40).collect();
        match SearchTerms::parse(&text) {
            Err(Error::InvalidInput { field, .. }) => {
                assert_eq!(field, "q");
                match result {
                    Err(Error::InvalidInput { field, .. }) if field == "q" => {}
                    other => panic!("{shown:?}: expected InvalidInput naming q, got {other:?}"),
                }
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => {
                assert!(result.is_ok(), "{shown:?}: {result:?}");
                assert_finds_by_the_rule(&*store, &scope, &text).await;
            }
        }
    }
}

/// Promise 14: a cursor that is not one, or belongs to a search of another text or
/// archive filter, or to a list, is `InvalidInput` naming `cursor`.
pub async fn search_bad_cursor<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("search-cursor");
    for _ in 0..3 {
        chat_saying(&*store, &scope, None, &["okra stew"]).await;
    }
    let first = store
        .search(&scope, &SearchQuery::new("okra").limit(1))
        .await
        .unwrap();
    let cursor = first.next_cursor.unwrap();
    let list_cursor = store
        .list_conversations(&scope, &ConversationQuery::new().limit(1))
        .await
        .unwrap()
        .next_cursor
        .unwrap();
    for query in [
        SearchQuery::new("okra").cursor("garbage"),
        SearchQuery::new("okra").cursor("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        SearchQuery::new("okra").cursor("%%%"),
        SearchQuery::new("okra").cursor(list_cursor),
        SearchQuery::new("stew").cursor(cursor.clone()),
        SearchQuery::new("okra ").cursor(cursor.clone()),
        SearchQuery::new("okra")
            .archived(ArchivedFilter::Include)
            .cursor(cursor.clone()),
    ] {
        assert_invalid(store.search(&scope, &query).await, "cursor");
    }
    let next = store
        .search(&scope, &SearchQuery::new("okra").limit(1).cursor(cursor))
        .await
        .unwrap();
    assert_eq!(next.items.len(), 1);
    assert_ne!(
        next.items[0].conversation.id,
        first.items[0].conversation.id
    );
}
