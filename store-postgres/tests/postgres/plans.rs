//! Promise 9 and §8: every hot read is an index seek, checked on the plans the
//! server chooses for the store's own statements over a few thousand analysed rows;
//! and the statements of tree writes reach what they touch through indexes too.

use conversation_core::{MessageQuery, MessageView, NewConversation, RecentQuery, Scope, Store};
use conversation_store_postgres::QueryPlan;

use crate::support::{self, TestStore};

/// The scan nodes of a plan that read `conversations` or `messages`.
fn scans_of_our_tables(plan: &str) -> Vec<String> {
    plan.lines()
        .map(|line| line.trim_start().trim_start_matches("->").trim())
        .filter(|node| node.contains(" on conversations") || node.contains(" on messages"))
        // The write itself (`Update on messages`…) is no scan: what it writes is
        // found by the nodes below it.
        .filter(|node| {
            !["Update on", "Delete on", "Insert on"]
                .iter()
                .any(|w| node.starts_with(w))
        })
        .map(str::to_owned)
        .collect()
}

fn is_index_seek(node: &str) -> bool {
    node.starts_with("Index Scan") || node.starts_with("Index Only Scan")
}

/// Asserts that `plan` reads our tables only by index seeks and sorts nothing. A
/// write may also reach its rows through a bitmap of an index (the rows it touches,
/// in no order, which a write does not need).
#[track_caller]
#[allow(clippy::print_stderr)] // `SHOW_PLANS=1` shows every plan to a reader
fn assert_seeks(plan: &QueryPlan, write: bool) {
    let context = format!("{}:\n{}", plan.read, plan.plan);
    if std::env::var_os("SHOW_PLANS").is_some() {
        eprintln!("{context}\n");
    }
    assert!(
        !plan.plan.contains("Seq Scan"),
        "a sequential scan in {context}"
    );
    let scans = scans_of_our_tables(&plan.plan);
    assert!(!scans.is_empty(), "no scan of our tables in {context}");
    for scan in &scans {
        assert!(
            is_index_seek(scan) || (write && scan.starts_with("Bitmap ")),
            "not an index seek: {scan}\nin {context}"
        );
    }
    assert!(
        !plan.plan.lines().any(|line| {
            let node = line.trim_start().trim_start_matches("->").trim();
            node.starts_with("Sort  (") || node.starts_with("Incremental Sort")
        }),
        "the order does not come from the index in {context}"
    );
}

/// The uuid of message `seq` of the seeded tree.
const MESSAGE_ID: &str = "('00000000-0000-0000-0000-' || lpad(to_hex({seq}), 12, '0'))::uuid";

fn message_id(seq: &str) -> String {
    MESSAGE_ID.replace("{seq}", seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reads_and_tree_writes_use_indexes_not_scans_or_sorts() {
    let store = TestStore::new().await;
    let s = store.quoted_schema();
    let scope = Scope::new("big").unwrap();
    let target = store
        .create_conversation(&scope, NewConversation::new().with_title("target"))
        .await
        .unwrap();
    let t = target.id;
    let columns = "conversation_id, seq, id, parent_id, depth, sibling_index, last_sibling, on_path, role, \
                   content, tool_calls, tool_call_id, metadata, created_at";
    let id = message_id;

    // The target: a branch of 5,000 messages (the active path); 200 branches of 10
    // hanging off it; a message answered 300 times; a first question edited 60 times.
    let [last_children, last_roots] = support::last_siblings(&s, &t.to_string());
    let seed = [
        format!(
            "INSERT INTO {s}.messages ({columns}) \
             SELECT '{t}', i, {}, CASE WHEN i > 1 THEN {} END, i, 0, true, true, 'user', \
                    'message ' || i, '[]', NULL, '{{}}', now() \
             FROM generate_series(1, 5000) AS i",
            id("i"),
            id("i - 1")
        ),
        format!(
            "INSERT INTO {s}.messages ({columns}) \
             SELECT '{t}', 5000 + (k - 1) * 10 + j, {}, \
                    CASE WHEN j = 1 THEN {} ELSE {} END, \
                    (k * 23) % 4999 + 1 + j, CASE WHEN j = 1 THEN 1 ELSE 0 END, true, false, \
                    'assistant', 'branch ' || k, '[]', NULL, '{{}}', now() \
             FROM generate_series(1, 200) AS k, generate_series(1, 10) AS j",
            id("5000 + (k - 1) * 10 + j"),
            id("(k * 23) % 4999 + 1"),
            id("5000 + (k - 1) * 10 + j - 1")
        ),
        format!(
            "INSERT INTO {s}.messages ({columns}) \
             SELECT '{t}', 7000 + k, {}, {}, 4991, k, true, false, 'assistant', 'again ' || k, \
                    '[]', NULL, '{{}}', now() \
             FROM generate_series(1, 299) AS k",
            id("7000 + k"),
            id("4990")
        ),
        format!(
            "INSERT INTO {s}.messages ({columns}) \
             SELECT '{t}', 7300 + k, {}, NULL, 1, k, true, false, 'user', 'edited ' || k, \
                    '[]', NULL, '{{}}', now() \
             FROM generate_series(1, 59) AS k",
            id("7300 + k")
        ),
        last_children,
        last_roots,
        format!(
            "UPDATE {s}.conversations SET message_count = 7358, last_seq = 7359, \
             head_id = {}, head_seq = 5000, head_depth = 5000 WHERE id = '{t}'",
            id("5000")
        ),
        // 3,000 conversations in the scope read, 3,000 more over 30 other scopes; a
        // quarter archived, a tenth pinned; activity spread over the last hours.
        format!(
            "INSERT INTO {s}.conversations (id, scope, title, title_source, created_at, \
             updated_at, message_count, last_seq, head_id, pinned, archived, metadata, version) \
             SELECT gen_random_uuid(), CASE WHEN i <= 3000 THEN 'big' ELSE 'other-' || (i % 30) END, \
                    'Chat ' || i, 'user', now() - interval '1 day', \
                    now() - make_interval(secs => i), 0, 0, NULL, i % 10 = 0, i % 4 = 0, '{{}}', 1 \
             FROM generate_series(1, 6000) AS i"
        ),
        // 10 messages in each of 500 others.
        format!(
            "WITH chosen AS (SELECT id FROM {s}.conversations WHERE scope <> 'big' LIMIT 500) \
             INSERT INTO {s}.messages ({columns}) \
             SELECT chosen.id, i, {}, CASE WHEN i > 1 THEN {} END, i, 0, true, true, 'user', 'm', \
                    '[]', NULL, '{{}}', now() \
             FROM chosen, generate_series(1, 10) AS i",
            id("i"),
            id("i - 1")
        ),
        format!(
            "UPDATE {s}.conversations c SET message_count = 10, last_seq = 10, head_id = {}, \
             head_seq = 10, head_depth = 10 \
             WHERE EXISTS (SELECT 1 FROM {s}.messages m WHERE m.conversation_id = c.id) \
               AND c.id <> '{t}'",
            id("10")
        ),
        format!("ANALYZE {s}.conversations"),
        format!("ANALYZE {s}.messages"),
    ];
    store.execute_all(seed).await;

    let reads = store.explain_reads(&scope, t).await.unwrap();
    assert_eq!(reads.len(), 17, "every hot read is explained");
    for plan in &reads {
        assert_seeks(plan, false);
        if !plan.read.starts_with("list") && plan.read != "get conversation" {
            assert!(
                scans_of_our_tables(&plan.plan)
                    .iter()
                    .any(|scan| scan.contains(" on messages")),
                "messages not read by index in {}:\n{}",
                plan.read,
                plan.plan
            );
        }
        if plan.read.starts_with("path") || plan.read.starts_with("window of 20") {
            assert!(
                plan.plan.contains("messages_on_path") || plan.read.contains("from a message"),
                "the path is not read through messages_on_path in {}:\n{}",
                plan.read,
                plan.plan
            );
        }
    }
    let writes = store.explain_tree_writes(&scope, t).await.unwrap();
    assert_eq!(writes.len(), 8, "every tree write is explained");
    for plan in &writes {
        assert_seeks(plan, true);
    }

    // And the reads give what the plans promise.
    let window = store
        .recent_messages(&scope, t, &RecentQuery::new(20))
        .await
        .unwrap();
    let seqs: Vec<u64> = window.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (4981..=5000).collect::<Vec<_>>());
    // The message answered 300 times, and the first question, read their windows.
    let answered = &window[10];
    assert_eq!(answered.seq, 4991);
    assert_eq!((answered.siblings.count, answered.siblings.index), (300, 0));
    assert_eq!(answered.siblings.ids.len(), 51);
    let first = store
        .list_messages(&scope, t, &MessageQuery::after(0).limit(1))
        .await
        .unwrap();
    assert_eq!(first.items[0].siblings.count, 60);
    let tree = store
        .list_messages(
            &scope,
            t,
            &MessageQuery::latest().view(MessageView::All).limit(3),
        )
        .await
        .unwrap();
    let last = &tree.items[2];
    assert_eq!(
        (last.seq, last.siblings.count, last.siblings.index),
        (7359, 60, 59)
    );
    assert_eq!(last.siblings.ids.len(), 51);
}

/// Promises 14 and 16 on 1,000 scopes: a search reads the GIN indexes of its
/// scope's words (never a scan of every message), a metadata filter the GIN index of
/// metadata, and every retention query one index range in order (never a scan of
/// every conversation, never a sort).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_and_retention_use_indexes_on_a_thousand_scopes() {
    let store = TestStore::new().await;
    let s = store.quoted_schema();
    let columns = "conversation_id, seq, id, parent_id, depth, sibling_index, last_sibling, on_path, role, \
                   content, tool_calls, tool_call_id, metadata, created_at, words";
    // 10,000 conversations over 1,000 scopes, a quarter archived, a tenth pinned,
    // each with 5 messages whose words are those of their own scope (keys unlike the
    // store's, as another scope's are): the same words as the searched scope's.
    let seed = [
        format!(
            "INSERT INTO {s}.conversations (id, scope, title, title_source, created_at, \
             updated_at, message_count, last_seq, head_id, pinned, archived, archived_at, \
             metadata, version, title_words) \
             SELECT gen_random_uuid(), 'scope-' || (i % 1000), 'Order ' || i, 'user', \
                    now() - interval '30 days', now() - make_interval(mins => i), 0, 0, NULL, \
                    i % 10 = 0, i % 4 = 0, \
                    CASE WHEN i % 4 = 0 THEN now() - make_interval(mins => i) END, \
                    jsonb_build_object('tag', 'tag' || (i % 50)), 1, \
                    array_to_tsvector(ARRAY['k' || (i % 1000) || '_order', 'k' || (i % 1000) || '_' || i]) \
             FROM generate_series(1, 10000) AS i"
        ),
        format!(
            "INSERT INTO {s}.messages ({columns}) \
             SELECT c.id, j, gen_random_uuid(), NULL, 1, j - 1, j = 5, j = 5, 'user', \
                    'where is my order of widgets', '[]', NULL, '{{}}', now(), \
                    array_to_tsvector(ARRAY['k' || substr(c.scope, 7) || '_where', \
                        'k' || substr(c.scope, 7) || '_order', \
                        'k' || substr(c.scope, 7) || '_widgets']) \
             FROM {s}.conversations c, generate_series(1, 5) AS j"
        ),
        format!(
            "UPDATE {s}.conversations c SET message_count = 5, last_seq = 5, \
             head_id = (SELECT id FROM {s}.messages m WHERE m.conversation_id = c.id AND m.seq = 5), \
             head_seq = 5, head_depth = 1"
        ),
    ];
    store.execute_all(seed).await;
    // The searched scope, written through the store: its words carry its own key.
    let scope = Scope::new("scope-7").unwrap();
    let mut ours = Vec::new();
    for i in 0..12 {
        let chat = store
            .create_conversation(
                &scope,
                NewConversation::new().with_title(format!("Widgets {i}")),
            )
            .await
            .unwrap();
        store
            .append_messages(
                &scope,
                chat.id,
                conversation_core::Append::one(conversation_core::NewMessage::user(
                    "where is my order of widgets",
                )),
            )
            .await
            .unwrap();
        ours.push(chat.id);
    }
    store
        .execute_all([
            format!("ANALYZE {s}.conversations"),
            format!("ANALYZE {s}.messages"),
        ])
        .await;

    let plans = store
        .explain_search_and_retention(&scope, "order widg")
        .await
        .unwrap();
    let names: Vec<&str> = plans.iter().map(|p| p.read).collect();
    assert_eq!(names.len(), 9, "{names:?}");
    for plan in &plans {
        let context = format!("{}:\n{}", plan.read, plan.plan);
        assert!(
            !plan.plan.contains("Seq Scan"),
            "a sequential scan in {context}"
        );
        if plan.read.starts_with("search") {
            // GIN indexes are read as bitmaps; the hits are ranked, so sorted. The
            // titles are read through their GIN index, or (the planner's choice for a
            // small scope) through the scope's own index: either way, not every row.
            assert!(plan.plan.contains("messages_by_words"), "{context}");
            assert!(
                [
                    "conversations_by_title_words",
                    "conversations_by_pin",
                    "conversations_by_activity"
                ]
                .iter()
                .any(|index| plan.plan.contains(index)),
                "{context}"
            );
        } else if plan.read.starts_with("list page, metadata") {
            assert!(
                [
                    "conversations_by_metadata",
                    "conversations_by_activity",
                    "conversations_by_pin"
                ]
                .iter()
                .any(|index| plan.plan.contains(index)),
                "{context}"
            );
        } else {
            // Across scopes: one index range in order, no sort. In one scope (22
            // rows here) the planner may rather read the scope's rows through one of
            // its indexes and sort them: bounded by the scope, never every row.
            let indexes: &[&str] = if plan.read.contains("archive age in a scope") {
                &["conversations_by_scope_archive_age"]
            } else if plan.read.contains("in a scope") {
                &["conversations_by_activity", "conversations_by_pin"]
            } else if plan.read.contains("archive age") {
                assert_seeks(plan, false);
                &["conversations_by_archive_age"]
            } else {
                assert_seeks(plan, false);
                &["conversations_by_inactivity"]
            };
            assert!(
                indexes.iter().any(|index| plan.plan.contains(index)),
                "not read through {indexes:?}: {context}"
            );
        }
    }

    // And the reads find what the plans promise: the scope's 12, no other scope's.
    let found = store
        .search(
            &scope,
            &conversation_core::SearchQuery::new("order widg").limit(200),
        )
        .await
        .unwrap();
    let mut found: Vec<_> = found.items.iter().map(|hit| hit.conversation.id).collect();
    found.sort();
    ours.sort();
    assert_eq!(found, ours);
    let expired = store
        .list_expired(&conversation_core::RetentionQuery::new(
            conversation_core::Expiry::InactiveBefore(chrono::Utc::now()),
            3,
        ))
        .await
        .unwrap();
    assert_eq!(expired.len(), 3);
    assert!(
        expired
            .windows(2)
            .all(|w| (w[0].at, w[0].id) <= (w[1].at, w[1].id))
    );
    assert!(expired.iter().all(|e| !e.pinned));
}
