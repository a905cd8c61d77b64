//! The data lifecycle: import (promise 15), retention (promise 16) and deletion at a
//! version.

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::testkit::ManualClock;
use crate::{
    ExpiredConversation, Expiry, ImportOutcome, ImportedConversation, RetentionQuery, RunId,
    SearchQuery, Siblings, Usage,
};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// A whole conversation to import: two roots, a branch, a tool call and its result,
/// metadata, seqs with gaps, a `last_seq` above them, timestamps before 1970, on a
/// leap day and out of order, siblings that are wrong (a store derives them), and a
/// scope that is not the one it is imported into.
///
/// ```text
/// seq 2  m0 user ─┬─ seq 3 m1 assistant (tool call) ── seq 5 m2 tool ── seq 6 m3 (head)
///                 └─ seq 9 m4 assistant
/// seq 12 m5 user
/// ```
fn tree_to_import() -> ImportedConversation {
    let id = ConversationId::new();
    let ids: Vec<MessageId> = (0..6).map(|_| MessageId::new()).collect();
    let call = ToolCall {
        id: "call_a".into(),
        name: "run_sql".into(),
        arguments: json!({"sql": "SELECT * FROM invoices", "limit": 5}),
    };
    let plan: [(u64, Option<usize>, NewMessage, &str); 6] = [
        (
            2,
            None,
            NewMessage::user("Import me: which tables hold invoices?"),
            "1969-07-20T20:17:40.000Z",
        ),
        (
            3,
            Some(0),
            NewMessage::assistant("")
                .with_tool_calls(vec![call])
                .with_metadata(metadata(json!({"model": "gpt-x", "latency": 1.5}))),
            "2024-02-29T23:59:59.999Z",
        ),
        (
            5,
            Some(1),
            NewMessage::tool("call_a", "[{\"id\": 7}]"),
            "2001-01-01T00:00:00.000Z",
        ),
        (
            6,
            Some(2),
            NewMessage::assistant("Invoices live in billing.invoices."),
            "2024-03-01T00:00:00.001Z",
        ),
        (
            9,
            Some(0),
            NewMessage::assistant("A second answer, on another branch"),
            "2024-03-02T10:00:00.500Z",
        ),
        (
            12,
            None,
            NewMessage::user("Another root question"),
            "2024-03-03T11:59:59.999Z",
        ),
    ];
    let messages = plan
        .into_iter()
        .enumerate()
        .map(|(i, (seq, parent, new, created))| Message {
            siblings: Siblings {
                ids: Vec::new(),
                count: 99,
                index: 7,
            },
            ..new
                .with_id(ids[i])
                .into_message(id, seq, parent.map(|p| ids[p]), at(created))
        })
        .collect();
    ImportedConversation {
        conversation: Conversation {
            id,
            scope: Scope::new("exported-from-elsewhere").unwrap(),
            title: Some("Imported: invoices ✓ Ünïcode".into()),
            title_source: TitleSource::Generated,
            created_at: at("1969-07-20T20:17:40.000Z"),
            updated_at: at("2024-03-03T12:00:00.000Z"),
            message_count: 6,
            last_seq: 14,
            head_id: Some(ids[3]),
            pinned: true,
            archived: true,
            archived_at: Some(at("2024-03-04T00:00:00.000Z")),
            metadata: metadata(json!({
                "source": {"app": "chatgpt", "ids": [1, 2, 3]},
                "empty": {},
                "nothing": null
            })),
            version: 42,
            active_run_id: None,
            usage: Usage {
                prompt_tokens: 11,
                completion_tokens: 22,
                total_tokens: 33,
            },
        },
        messages,
    }
}

/// The messages of an import as a store must read them back: in `conversation`, with
/// their siblings derived from the parents.
fn as_read(imported: &ImportedConversation) -> Vec<Message> {
    imported
        .messages
        .iter()
        .map(|message| {
            let siblings: Vec<MessageId> = imported
                .messages
                .iter()
                .filter(|m| m.parent_id == message.parent_id)
                .map(|m| m.id)
                .collect();
            let index = siblings.iter().position(|&s| s == message.id).unwrap();
            Message {
                siblings: Siblings::around(&siblings, index),
                ..message.clone()
            }
        })
        .collect()
}

async fn import<S: Store>(
    store: &S,
    scope: &Scope,
    imported: &ImportedConversation,
) -> ImportOutcome {
    store
        .import_conversation(scope, imported.clone())
        .await
        .unwrap()
}

/// The conversations of `scope` a search for `text` finds, archived or not.
async fn found_anywhere<S: Store>(store: &S, scope: &Scope, text: &str) -> HashSet<ConversationId> {
    let query = SearchQuery::new(text).archived(ArchivedFilter::Include);
    let page = store.search(scope, &query).await.unwrap();
    page.items.into_iter().map(|h| h.conversation.id).collect()
}

/// What a scope holds, for "nothing was written".
async fn contents_of<S: Store>(store: &S, scope: &Scope) -> Vec<(Conversation, Vec<Message>)> {
    let query = ConversationQuery::new().archived(ArchivedFilter::Include);
    let mut contents = Vec::new();
    for conversation in list_all(store, scope, query).await.concat() {
        let messages = read_view(store, scope, conversation.id, MessageView::All).await;
        contents.push((conversation, messages));
    }
    contents
}

/// Promise 15: an imported conversation reads back exactly as given (ids, seqs with
/// gaps, parents, head, counters, version, times, usage, `archived_at`, metadata),
/// in the scope it was imported into, with siblings derived from the tree; lists,
/// search and retention see it; timestamps are kept to the millisecond.
pub async fn import_round_trips_exactly<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("import");
    let imported = tree_to_import();
    assert_eq!(
        import(&*store, &scope, &imported).await,
        ImportOutcome::Imported
    );
    let id = imported.conversation.id;
    let expected = Conversation {
        scope: scope.clone(),
        ..imported.conversation.clone()
    };
    assert_eq!(store.get_conversation(&scope, id).await.unwrap(), expected);
    let messages = as_read(&imported);
    assert_eq!(
        read_view(&*store, &scope, id, MessageView::All).await,
        messages
    );
    assert_eq!(
        path_of(&*store, &scope, id).await,
        messages[..4].to_vec(),
        "the path leads to the imported head"
    );
    for message in &messages {
        assert_eq!(
            &store.get_message(&scope, id, message.id).await.unwrap(),
            message
        );
    }
    assert_eq!(
        store
            .recent_messages(&scope, id, &RecentQuery::new(5).ending_at(messages[4].id))
            .await
            .unwrap(),
        vec![messages[0].clone(), messages[4].clone()]
    );
    let listed = list_all(
        &*store,
        &scope,
        ConversationQuery::new()
            .archived(ArchivedFilter::Only)
            .pinned_first(true),
    )
    .await
    .concat();
    assert_eq!(listed, vec![expected.clone()]);
    assert_eq!(
        found_anywhere(&*store, &scope, "invoices").await,
        HashSet::from([id])
    );
    let archived_at = expected.archived_at.unwrap();
    let by_archive = |include_pinned: bool| {
        RetentionQuery::new(
            Expiry::ArchivedBefore(archived_at + TimeDelta::milliseconds(1)),
            10,
        )
        .in_scope(scope.clone())
        .include_pinned(include_pinned)
    };
    assert_eq!(
        store.list_expired(&by_archive(false)).await.unwrap(),
        vec![]
    );
    let expired = ExpiredConversation {
        scope: scope.clone(),
        id,
        title: expected.title.clone(),
        at: archived_at,
        pinned: true,
    };
    assert_eq!(
        store.list_expired(&by_archive(true)).await.unwrap(),
        vec![expired.clone()]
    );
    let inactive = RetentionQuery::new(
        Expiry::InactiveBefore(expected.updated_at + TimeDelta::milliseconds(1)),
        10,
    )
    .in_scope(scope.clone())
    .include_pinned(true);
    assert_eq!(
        store.list_expired(&inactive).await.unwrap(),
        vec![ExpiredConversation {
            at: expected.updated_at,
            ..expired
        }]
    );

    // An empty conversation, its timestamps finer than milliseconds: kept to the
    // millisecond, as every timestamp.
    let empty = ImportedConversation {
        conversation: Conversation {
            id: ConversationId::new(),
            title: None,
            title_source: TitleSource::None,
            created_at: at("2020-01-01T00:00:00.123456789Z"),
            updated_at: at("2020-01-02T00:00:00.999999Z"),
            message_count: 0,
            last_seq: 5,
            head_id: None,
            pinned: false,
            archived: false,
            archived_at: None,
            metadata: Metadata::new(),
            version: 1,
            usage: Usage::default(),
            ..imported.conversation.clone()
        },
        messages: Vec::new(),
    };
    assert_eq!(
        import(&*store, &scope, &empty).await,
        ImportOutcome::Imported
    );
    let read = store
        .get_conversation(&scope, empty.conversation.id)
        .await
        .unwrap();
    assert_eq!(
        read,
        Conversation {
            scope: scope.clone(),
            created_at: at("2020-01-01T00:00:00.123Z"),
            updated_at: at("2020-01-02T00:00:00.999Z"),
            ..empty.conversation.clone()
        }
    );
    let next = add(
        &*store,
        &scope,
        read.id,
        Parent::Head,
        "after an empty import",
    )
    .await;
    assert_eq!((next.seq, next.parent_id), (6, None));
}

/// Promise 15: an import whose id is in the scope already is `AlreadyPresent`, one
/// whose id another scope has is `IdTaken`; neither writes anything. The input is
/// checked first.
pub async fn import_never_overwrites<S: Store>(store: Arc<S>) {
    let a = fresh_scope("import-a");
    let b = fresh_scope("import-b");
    let imported = tree_to_import();
    let id = imported.conversation.id;
    assert_eq!(
        import(&*store, &a, &imported).await,
        ImportOutcome::Imported
    );
    let before_a = contents_of(&*store, &a).await;

    let mut changed = imported.clone();
    changed.conversation.title = Some("Changed".into());
    changed.conversation.version = 1;
    changed.messages[0].content = "changed".into();
    assert_eq!(
        import(&*store, &a, &changed).await,
        ImportOutcome::AlreadyPresent
    );
    assert_eq!(import(&*store, &b, &changed).await, ImportOutcome::IdTaken);
    assert_eq!(contents_of(&*store, &a).await, before_a);
    assert!(contents_of(&*store, &b).await.is_empty());
    assert_not_found(store.get_conversation(&b, id).await, "an id taken");

    // A conversation the store made, exported and imported again, is present.
    let own = chat_with_messages(&*store, &a, 2).await;
    let again = ImportedConversation {
        conversation: own.clone(),
        messages: read_view(&*store, &a, own.id, MessageView::All).await,
    };
    assert_eq!(
        import(&*store, &a, &again).await,
        ImportOutcome::AlreadyPresent
    );
    let before_a = contents_of(&*store, &a).await;

    let mut invalid = imported.clone();
    invalid.conversation.message_count = 1;
    assert_invalid(store.import_conversation(&a, invalid).await, "messageCount");
    assert_eq!(contents_of(&*store, &a).await, before_a);

    // Once deleted, the id is free for any scope.
    store.delete_conversation(&a, id, None).await.unwrap();
    assert_eq!(
        import(&*store, &b, &imported).await,
        ImportOutcome::Imported
    );
    assert_not_found(store.get_conversation(&a, id).await, "moved to b");
    assert_eq!(
        store.get_conversation(&b, id).await.unwrap().scope,
        b,
        "imported into b"
    );
}

/// Promise 15 with promise 11: each rule of
/// [`ImportedConversation::check`] is `InvalidInput` naming the field at fault, and
/// nothing of the conversation is written.
pub async fn import_refuses_what_check_refuses<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("import-invalid");
    let base = tree_to_import();
    let ids: Vec<MessageId> = base.messages.iter().map(|m| m.id).collect();
    let big = metadata(json!({"k": "x".repeat(crate::Limits::default().max_metadata_bytes)}));
    type Change = Box<dyn Fn(&mut ImportedConversation) + Send + Sync>;
    fn change(f: impl Fn(&mut ImportedConversation) + Send + Sync + 'static) -> Change {
        Box::new(f)
    }
    let cases: Vec<(Change, &str)> = vec![
        (
            change(|i| i.conversation.title = Some(String::new())),
            "title",
        ),
        (
            change(|i| i.conversation.title = Some("two\nlines".into())),
            "title",
        ),
        (
            change(|i| i.conversation.title = Some("t".repeat(201))),
            "title",
        ),
        (
            change({
                let big = big.clone();
                move |i| i.conversation.metadata = big.clone()
            }),
            "metadata",
        ),
        (
            change(|i| i.conversation.metadata = metadata(json!({"k": "a\u{0}b"}))),
            "metadata",
        ),
        (
            change(|i| i.conversation.active_run_id = Some(RunId::new())),
            "activeRunId",
        ),
        (change(|i| i.conversation.message_count = 5), "messageCount"),
        (change(|i| i.conversation.message_count = 7), "messageCount"),
        (
            change(|i| i.messages[1].conversation_id = ConversationId::new()),
            "messages[1].conversationId",
        ),
        (change(|i| i.messages[1].seq = 2), "messages[1].seq"),
        (change(|i| i.messages[0].seq = 0), "messages[0].seq"),
        (change(|i| i.messages[5].seq = 15), "messages[5].seq"),
        (change(|i| i.messages[2].seq = 10), "messages[3].seq"),
        (
            change(|i| i.messages[1].parent_id = Some(MessageId::new())),
            "messages[1].parentId",
        ),
        (
            change({
                let later = ids[3];
                move |i| i.messages[1].parent_id = Some(later)
            }),
            "messages[1].parentId",
        ),
        (
            change({
                let itself = ids[1];
                move |i| i.messages[1].parent_id = Some(itself)
            }),
            "messages[1].parentId",
        ),
        (
            change({
                let twin = ids[2];
                move |i| i.messages[4].id = twin
            }),
            "messages[4].id",
        ),
        (
            change(|i| i.messages[0].content = "a\u{0}b".into()),
            "messages[0].content",
        ),
        (
            change(|i| i.messages[5].content = "   ".into()),
            "messages[5].content",
        ),
        (
            change(|i| {
                i.messages[3].content = "x".repeat(crate::Limits::default().max_content_bytes + 1)
            }),
            "messages[3].content",
        ),
        (
            change(|i| i.messages[2].tool_call_id = None),
            "messages[2].toolCallId",
        ),
        (
            change(|i| i.messages[0].tool_calls = i.messages[1].tool_calls.clone()),
            "messages[0].toolCalls",
        ),
        (
            change(|i| i.messages[1].tool_calls[0].id = String::new()),
            "messages[1].toolCalls[0].id",
        ),
        (
            change(move |i| i.messages[3].metadata = big.clone()),
            "messages[3].metadata",
        ),
        (
            change(|i| i.conversation.head_id = Some(MessageId::new())),
            "headId",
        ),
        (change(|i| i.conversation.head_id = None), "headId"),
        (
            change(|i| {
                i.messages.clear();
                i.conversation.message_count = 0;
            }),
            "headId",
        ),
    ];
    for (apply, field) in cases {
        let mut invalid = base.clone();
        apply(&mut invalid);
        assert_eq!(
            invalid
                .check(&crate::Limits::default())
                .err()
                .map(|e| match e {
                    Error::InvalidInput { field, .. } => field,
                    other => other.to_string(),
                }),
            Some(field.to_owned()),
            "the rule itself"
        );
        assert_invalid(store.import_conversation(&scope, invalid).await, field);
        assert_not_found(
            store.get_conversation(&scope, base.conversation.id).await,
            "a refused import",
        );
    }
    assert!(contents_of(&*store, &scope).await.is_empty());
    assert!(
        found_anywhere(&*store, &scope, "invoices").await.is_empty(),
        "nothing of it is found"
    );
    assert_eq!(
        import(&*store, &scope, &base).await,
        ImportOutcome::Imported
    );
}

/// Promise 15: an imported conversation takes writes like any other: appends follow
/// its head at `last_seq + 1`, branches switch, messages delete with their subtree,
/// forks copy it, runs start, and search finds old and new text.
pub async fn import_then_writes_continue<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("import-writes");
    let imported = tree_to_import();
    let id = imported.conversation.id;
    let ids: Vec<MessageId> = imported.messages.iter().map(|m| m.id).collect();
    import(&*store, &scope, &imported).await;
    let before = crate::backend::now();
    let appended = store
        .append_messages(
            &scope,
            id,
            Append::one(NewMessage::user("Continue the kiwano talk")),
        )
        .await
        .unwrap();
    let next = &appended.messages[0];
    assert_eq!((next.seq, next.parent_id), (15, Some(ids[3])));
    let conversation = &appended.conversation;
    assert_eq!(
        (
            conversation.message_count,
            conversation.last_seq,
            conversation.version,
            conversation.head_id
        ),
        (7, 15, 43, Some(next.id))
    );
    assert!(conversation.updated_at >= before, "the clock's time, later");
    assert_eq!(conversation.usage, imported.conversation.usage);
    let path = path_of(&*store, &scope, id).await;
    assert_eq!(
        message_ids(&path),
        vec![ids[0], ids[1], ids[2], ids[3], next.id]
    );

    let switched = store
        .update_conversation(&scope, id, ConversationPatch::new().head(ids[4]))
        .await
        .unwrap();
    assert_eq!(switched.head_id, Some(ids[4]));
    assert_eq!(
        message_ids(&path_of(&*store, &scope, id).await),
        vec![ids[0], ids[4]]
    );
    let root = add(&*store, &scope, id, Parent::Root, "A third root").await;
    assert_eq!(root.seq, 16);
    assert_eq!((root.siblings.count, root.siblings.index), (3, 2));

    let after = store
        .delete_message(&scope, id, ids[1], None)
        .await
        .unwrap();
    assert_eq!((after.message_count, after.last_seq), (4, 16));
    for gone in [ids[1], ids[2], ids[3], next.id] {
        assert_not_found(store.get_message(&scope, id, gone).await, "deleted subtree");
    }
    let fork = store.fork_conversation(&scope, id, ids[4]).await.unwrap();
    assert_eq!(
        message_ids(&path_of(&*store, &scope, fork.id).await),
        vec![ids[0], ids[4]]
    );
    assert_eq!(
        found_anywhere(&*store, &scope, "second answer").await,
        HashSet::from([id, fork.id])
    );
    assert!(
        found_anywhere(&*store, &scope, "kiwano").await.is_empty(),
        "deleted with its subtree"
    );
    let run = store
        .start_run(&scope, id, crate::NewRun::new(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_conversation(&scope, id)
            .await
            .unwrap()
            .active_run_id,
        Some(run.id)
    );
}

/// The conversations of a retention query, read in pages of `page` with `after`:
/// each page at most `page` long, no conversation twice.
async fn expired_in_pages<S: Store>(
    store: &S,
    query: RetentionQuery,
    page: usize,
) -> Vec<ExpiredConversation> {
    let mut all: Vec<ExpiredConversation> = Vec::new();
    loop {
        let mut next = query.clone();
        next.limit = page;
        if let Some(last) = all.last() {
            next = next.after(last.at, last.id);
        }
        let got = store.list_expired(&next).await.unwrap();
        assert!(got.len() <= page);
        for expired in &got {
            assert!(
                !all.iter().any(|e| e.id == expired.id),
                "{} listed twice",
                expired.id
            );
        }
        let done = got.len() < page;
        all.extend(got);
        if done {
            return all;
        }
        assert!(all.len() < 100_000, "the pages never end");
    }
}

fn expired(conversation: &Conversation, at: DateTime<Utc>) -> ExpiredConversation {
    ExpiredConversation {
        scope: conversation.scope.clone(),
        id: conversation.id,
        title: conversation.title.clone(),
        at,
        pinned: conversation.pinned,
    }
}

/// Oldest first, then by id: the order of retention.
fn oldest_first(mut rows: Vec<ExpiredConversation>) -> Vec<ExpiredConversation> {
    rows.sort_by_key(|e| (e.at, e.id));
    rows
}

/// Promise 16: `list_expired` by inactivity finds the conversations last active
/// strictly before the cutoff, oldest first then by id, pinned ones only when asked,
/// in one scope or in all; `limit` and `after` page through them without repeats;
/// activity and deletion take a conversation out.
pub async fn retention_by_inactivity<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
    let a = fresh_scope("retain-a");
    let b = fresh_scope("retain-b");
    let base = at("1991-02-03T04:05:06.789Z");
    let minutes = |m: i64| base + TimeDelta::minutes(m);
    let make = |scope: Scope, at: DateTime<Utc>, title: &'static str| {
        let store = Arc::clone(&store);
        let clock = Arc::clone(&clock);
        async move {
            clock.set(at);
            store
                .create_conversation(&scope, NewConversation::new().with_title(title))
                .await
                .unwrap()
        }
    };
    let c0 = make(a.clone(), minutes(0), "zero").await;
    let b0 = make(b.clone(), minutes(30), "b zero").await;
    let c1 = make(a.clone(), minutes(60), "pinned").await;
    let c1 = store
        .update_conversation(&a, c1.id, ConversationPatch::new().pinned(true))
        .await
        .unwrap();
    assert_eq!(c1.updated_at, minutes(60));
    let c2 = make(a.clone(), minutes(120), "two").await;
    let c3 = make(a.clone(), minutes(120), "three").await;
    let b1 = make(b.clone(), minutes(180), "b one").await;
    let c4 = make(a.clone(), minutes(300), "four").await;
    clock.set(minutes(360));

    let inactive = |cutoff: DateTime<Utc>| RetentionQuery::new(Expiry::InactiveBefore(cutoff), 100);
    let list = |query: RetentionQuery| {
        let store = Arc::clone(&store);
        async move { store.list_expired(&query).await.unwrap() }
    };
    let of = |c: &Conversation| expired(c, c.updated_at);
    assert_eq!(
        list(inactive(minutes(120)).in_scope(a.clone())).await,
        vec![of(&c0)],
        "strictly before the cutoff; pinned left out"
    );
    let just_after = minutes(120) + TimeDelta::milliseconds(1);
    assert_eq!(
        list(inactive(just_after).in_scope(a.clone())).await,
        oldest_first(vec![of(&c0), of(&c2), of(&c3)])
    );
    assert_eq!(
        list(inactive(minutes(120) + TimeDelta::microseconds(500)).in_scope(a.clone())).await,
        oldest_first(vec![of(&c0), of(&c2), of(&c3)]),
        "a cutoff finer than the stored milliseconds is compared as given"
    );
    let with_pinned = oldest_first(vec![of(&c0), of(&c1), of(&c2), of(&c3)]);
    assert_eq!(
        list(
            inactive(just_after)
                .in_scope(a.clone())
                .include_pinned(true)
        )
        .await,
        with_pinned
    );
    let everywhere = oldest_first(vec![of(&c0), of(&b0), of(&c1), of(&c2), of(&c3), of(&b1)]);
    let all_scopes = inactive(minutes(240)).include_pinned(true);
    assert_eq!(list(all_scopes.clone()).await, everywhere);
    for page in [1, 2, 4] {
        assert_eq!(
            expired_in_pages(&*store, all_scopes.clone(), page).await,
            everywhere,
            "pages of {page}"
        );
    }
    let mut none = all_scopes.clone();
    none.limit = 0;
    assert_eq!(list(none).await, vec![]);
    assert_eq!(
        list(inactive(minutes(240)).in_scope(b.clone())).await,
        vec![of(&b0), of(&b1)]
    );
    assert_eq!(
        list(inactive(base).include_pinned(true)).await,
        vec![],
        "nothing is older than the oldest"
    );

    // Activity takes a conversation out; so does deletion.
    clock.set(minutes(600));
    store
        .append_messages(&a, c0.id, Append::one(NewMessage::user("back")))
        .await
        .unwrap();
    store.delete_conversation(&a, c2.id, None).await.unwrap();
    assert_eq!(
        list(
            inactive(just_after)
                .in_scope(a.clone())
                .include_pinned(true)
        )
        .await,
        oldest_first(vec![of(&c1), of(&c3)])
    );
    let c0 = store.get_conversation(&a, c0.id).await.unwrap();
    assert_eq!(
        list(inactive(minutes(601)).in_scope(a.clone())).await,
        oldest_first(vec![of(&c3), of(&c4), of(&c0)])
    );
}

/// Promise 16 with `archived_at`: archiving stamps `archived_at` (the write's time,
/// never before the last activity), restoring clears it, archiving an archived
/// conversation or another patch keeps it; `list_expired` by archive age finds the
/// conversations archived strictly before the cutoff, oldest first, pinned ones
/// only when asked, in one scope or in all.
pub async fn retention_by_archive_age<S: Store>(store: Arc<S>, clock: Arc<ManualClock>) {
    let scope = fresh_scope("retain-archive");
    let other = fresh_scope("retain-archive-other");
    let base = at("1992-05-06T07:08:09.010Z");
    let hours = |h: i64| base + TimeDelta::hours(h);
    clock.set(base);
    let mut rows = Vec::new();
    for title in ["never", "b", "c", "d", "e"] {
        rows.push(
            store
                .create_conversation(&scope, NewConversation::new().with_title(title))
                .await
                .unwrap(),
        );
    }
    let elsewhere = store
        .create_conversation(&other, NewConversation::new().with_title("elsewhere"))
        .await
        .unwrap();
    let patch = |scope: Scope, id: ConversationId, at: DateTime<Utc>, patch: ConversationPatch| {
        let store = Arc::clone(&store);
        let clock = Arc::clone(&clock);
        async move {
            clock.set(at);
            store.update_conversation(&scope, id, patch).await.unwrap()
        }
    };
    let archive = ConversationPatch::new().archived(true);
    let b = patch(scope.clone(), rows[1].id, hours(1), archive.clone()).await;
    assert_eq!((b.archived, b.archived_at), (true, Some(hours(1))));
    let _ = patch(scope.clone(), rows[2].id, hours(2), archive.clone()).await;
    let c = patch(
        scope.clone(),
        rows[2].id,
        hours(2),
        ConversationPatch::new().pinned(true),
    )
    .await;
    assert_eq!(c.archived_at, Some(hours(2)));
    patch(scope.clone(), rows[3].id, hours(3), archive.clone()).await;
    let restored = patch(
        scope.clone(),
        rows[3].id,
        hours(4),
        ConversationPatch::new().archived(false),
    )
    .await;
    assert_eq!((restored.archived, restored.archived_at), (false, None));
    let d = patch(scope.clone(), rows[3].id, hours(5), archive.clone()).await;
    assert_eq!(d.archived_at, Some(hours(5)));
    let b = patch(scope.clone(), rows[1].id, hours(6), archive.clone()).await;
    assert_eq!(
        b.archived_at,
        Some(hours(1)),
        "archiving again keeps the time"
    );
    assert_eq!(b.updated_at, hours(6));
    let b = patch(
        scope.clone(),
        rows[1].id,
        hours(6),
        ConversationPatch::new().title("b renamed"),
    )
    .await;
    assert_eq!(b.archived_at, Some(hours(1)));
    // The clock behind the last activity: archived at that activity, not before.
    let e = patch(scope.clone(), rows[4].id, hours(-1), archive.clone()).await;
    assert_eq!(e.archived_at, Some(base));
    assert_eq!(e.updated_at, base);
    let far = patch(
        other.clone(),
        elsewhere.id,
        hours(0) + TimeDelta::minutes(30),
        archive.clone(),
    )
    .await;
    clock.set(hours(7));

    let by_archive =
        |cutoff: DateTime<Utc>| RetentionQuery::new(Expiry::ArchivedBefore(cutoff), 100);
    let list = |query: RetentionQuery| {
        let store = Arc::clone(&store);
        async move { store.list_expired(&query).await.unwrap() }
    };
    let of = |c: &Conversation| expired(c, c.archived_at.unwrap());
    let ms = TimeDelta::milliseconds(1);
    assert_eq!(
        list(by_archive(hours(1)).in_scope(scope.clone())).await,
        vec![of(&e)]
    );
    assert_eq!(
        list(by_archive(hours(1) + TimeDelta::nanoseconds(1)).in_scope(scope.clone())).await,
        vec![of(&e), of(&b)],
        "a cutoff finer than the stored milliseconds is compared as given"
    );
    assert_eq!(
        list(by_archive(hours(1) + ms).in_scope(scope.clone())).await,
        vec![of(&e), of(&b)]
    );
    assert_eq!(
        list(by_archive(hours(5) + ms).in_scope(scope.clone())).await,
        vec![of(&e), of(&b), of(&d)],
        "pinned left out, never archived never found"
    );
    let with_pinned = vec![of(&e), of(&b), of(&c), of(&d)];
    let query = by_archive(hours(5) + ms)
        .in_scope(scope.clone())
        .include_pinned(true);
    assert_eq!(list(query.clone()).await, with_pinned);
    assert_eq!(expired_in_pages(&*store, query, 1).await, with_pinned);
    let all_scopes = by_archive(hours(5) + ms).include_pinned(true);
    let everywhere = vec![of(&e), of(&far), of(&b), of(&c), of(&d)];
    assert_eq!(list(all_scopes.clone()).await, everywhere);
    assert_eq!(expired_in_pages(&*store, all_scopes, 2).await, everywhere);

    // Restored, it no longer expires by archive age.
    patch(
        scope.clone(),
        rows[1].id,
        hours(7),
        ConversationPatch::new().archived(false),
    )
    .await;
    assert_eq!(
        list(by_archive(hours(5) + ms).in_scope(scope.clone())).await,
        vec![of(&e), of(&d)]
    );
}

/// Promise 5 for deletion: a stale expected version is `Conflict` and deletes
/// nothing; the current one deletes; an unknown conversation is `NotFound` first.
pub async fn delete_at_a_version<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("delete-version");
    let chat = chat_with_messages(&*store, &scope, 2).await;
    let changed = store
        .update_conversation(&scope, chat.id, ConversationPatch::new().title("Moved on"))
        .await
        .unwrap();
    match store
        .delete_conversation(&scope, chat.id, Some(chat.version))
        .await
    {
        Err(Error::Conflict { expected, actual }) => {
            assert_eq!((expected, actual), (chat.version, changed.version));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        changed
    );
    assert_eq!(
        read_view(&*store, &scope, chat.id, MessageView::All)
            .await
            .len(),
        2,
        "nothing deleted"
    );
    assert_eq!(
        store
            .search(&scope, &SearchQuery::new("moved"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_not_found(
        store
            .delete_conversation(&scope, ConversationId::new(), Some(changed.version))
            .await,
        "an unknown conversation at a version",
    );
    let elsewhere = fresh_scope("delete-version-elsewhere");
    assert_not_found(
        store
            .delete_conversation(&elsewhere, chat.id, Some(changed.version))
            .await,
        "through another scope",
    );
    store
        .delete_conversation(&scope, chat.id, Some(changed.version))
        .await
        .unwrap();
    assert_not_found(store.get_conversation(&scope, chat.id).await, "deleted");
    assert_not_found(
        store
            .delete_conversation(&scope, chat.id, Some(changed.version))
            .await,
        "deleted before",
    );
}
