//! Promise 9 and §8: every hot read is an index seek, checked on the plans the
//! server chooses for the store's own statements over a few thousand analysed rows.

use conversation_core::{NewConversation, Scope, Store};
use sqlx::{AssertSqlSafe, Executor as _};

use crate::support::TestStore;

/// The scan nodes of a plan that read `conversations` or `messages`.
fn scans_of_our_tables(plan: &str) -> Vec<String> {
    plan.lines()
        .map(|line| line.trim_start().trim_start_matches("->").trim())
        .filter(|node| node.contains(" on conversations") || node.contains(" on messages"))
        .map(str::to_owned)
        .collect()
}

fn is_index_seek(node: &str) -> bool {
    node.starts_with("Index Scan") || node.starts_with("Index Only Scan")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reads_use_indexes_not_scans_or_sorts() {
    let store = TestStore::new().await;
    let s = store.quoted_schema();
    let scope = Scope::new("big").unwrap();
    let target = store
        .create_conversation(&scope, NewConversation::new().with_title("target"))
        .await
        .unwrap();

    // 3,000 conversations in the scope read, 3,000 more over 30 other scopes; a
    // quarter archived, a tenth pinned; activity spread over the last hours.
    let seed = [
        format!(
            "INSERT INTO {s}.conversations (id, scope, title, title_source, created_at, \
             updated_at, message_count, pinned, archived, metadata, version) \
             SELECT gen_random_uuid(), CASE WHEN i <= 3000 THEN 'big' ELSE 'other-' || (i % 30) END, \
                    'Chat ' || i, 'user', now() - interval '1 day', \
                    now() - make_interval(secs => i), 0, i % 10 = 0, i % 4 = 0, '{{}}', 1 \
             FROM generate_series(1, 6000) AS i"
        ),
        // 5,000 messages in the target, 10 in each of 500 others.
        format!(
            "INSERT INTO {s}.messages (id, conversation_id, seq, role, content, tool_calls, \
             tool_call_id, metadata, created_at) \
             SELECT gen_random_uuid(), '{id}', i, 'user', 'message ' || i, '[]', NULL, '{{}}', now() \
             FROM generate_series(1, 5000) AS i",
            id = target.id
        ),
        format!(
            "UPDATE {s}.conversations SET message_count = 5000 WHERE id = '{}'",
            target.id
        ),
        format!(
            "WITH chosen AS (SELECT id FROM {s}.conversations WHERE scope <> 'big' LIMIT 500) \
             INSERT INTO {s}.messages (id, conversation_id, seq, role, content, tool_calls, \
             tool_call_id, metadata, created_at) \
             SELECT gen_random_uuid(), chosen.id, i, 'user', 'm', '[]', NULL, '{{}}', now() \
             FROM chosen, generate_series(1, 10) AS i"
        ),
        format!(
            "UPDATE {s}.conversations c SET message_count = 10 \
             WHERE EXISTS (SELECT 1 FROM {s}.messages m WHERE m.conversation_id = c.id) \
               AND c.id <> '{}'",
            target.id
        ),
        format!("ANALYZE {s}.conversations"),
        format!("ANALYZE {s}.messages"),
    ];
    for statement in seed {
        store
            .pool()
            .execute(AssertSqlSafe(statement))
            .await
            .unwrap();
    }

    let plans = store.explain_reads(&scope, target.id).await.unwrap();
    assert_eq!(plans.len(), 10, "every hot read is explained");
    for plan in &plans {
        let context = format!("{}:\n{}", plan.read, plan.plan);
        assert!(
            !plan.plan.contains("Seq Scan"),
            "a sequential scan in {context}"
        );
        let scans = scans_of_our_tables(&plan.plan);
        assert!(!scans.is_empty(), "no scan of our tables in {context}");
        for scan in &scans {
            assert!(
                is_index_seek(scan),
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
        if plan.read.starts_with("window") || plan.read.starts_with("message page") {
            assert!(
                scans.iter().any(|scan| scan.contains(" on messages")),
                "messages not read by index in {context}"
            );
        }
    }

    // And the reads give what the plans promise.
    let window = store.recent_messages(&scope, target.id, 20).await.unwrap();
    assert_eq!(window.first().unwrap().seq, 4981);
    assert_eq!(window.last().unwrap().seq, 5000);
}
