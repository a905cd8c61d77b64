//! Conversation metadata: patched as a JSON Merge Patch, filtered on in lists.

use super::*;
use crate::{Limits, MAX_METADATA_FILTERS};

/// A patch's metadata merges into the stored metadata as RFC 7396 says (its
/// Appendix A cases whose target and patch are objects, and more): a `null` member
/// removes the key, an object member merges into the object there (replacing what
/// else was there), anything else (arrays too) replaces; a `null` stored as a value
/// stays until patched. One merge is one version.
pub async fn metadata_patch_merges<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("merge");
    for (target, patch, result) in [
        (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
        (
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        ),
        (json!({"a": "b"}), json!({"a": null}), json!({})),
        (
            json!({"a": "b", "b": "c"}),
            json!({"a": null}),
            json!({"b": "c"}),
        ),
        (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
        (
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        ),
        (
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        ),
        (
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        ),
        (
            json!({}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        ),
        (
            json!({"a": 1, "b": 2, "nested": {"x": 1, "y": 1}}),
            json!({"a": 1, "b": null, "nested": {"x": 2}}),
            json!({"a": 1, "nested": {"x": 2, "y": 1}}),
        ),
        (json!({"keep": true}), json!({}), json!({"keep": true})),
        (json!({"n": 1}), json!({"missing": null}), json!({"n": 1})),
        (json!({"a": {"b": 1}}), json!({"a": null}), json!({})),
        (
            json!({"a": "text"}),
            json!({"a": {"b": null, "c": 1}}),
            json!({"a": {"c": 1}}),
        ),
        (
            json!({"deep": {"a": {"b": {"c": 1, "d": 2}}}}),
            json!({"deep": {"a": {"b": {"c": null, "e": [1, {"x": null}]}}}}),
            json!({"deep": {"a": {"b": {"d": 2, "e": [1, {"x": null}]}}}}),
        ),
        (
            json!({"n": 1.5, "s": "é", "t": true}),
            json!({"n": 2, "s": "🧪", "t": false}),
            json!({"n": 2, "s": "🧪", "t": false}),
        ),
    ] {
        let chat = store
            .create_conversation(
                &scope,
                NewConversation::new().with_metadata(metadata(target.clone())),
            )
            .await
            .unwrap();
        let patched = store
            .update_conversation(
                &scope,
                chat.id,
                ConversationPatch::new().metadata(metadata(patch.clone())),
            )
            .await
            .unwrap();
        assert_eq!(
            serde_json::Value::Object(patched.metadata.clone()),
            result,
            "{target} merged with {patch}"
        );
        assert_eq!(patched.version, chat.version + 1);
        assert_eq!(
            store.get_conversation(&scope, chat.id).await.unwrap(),
            patched
        );
    }
}

/// Promise 10's spirit for metadata: patches of different keys sent at once (and
/// other patches between them) all apply; none is lost to another's
/// read-modify-write.
pub async fn concurrent_metadata_patches_lose_nothing<S: Store>(store: Arc<S>) {
    const WRITERS: usize = 4;
    const ROUNDS: u64 = 25;
    let scope = fresh_scope("merge-race");
    let chat = store
        .create_conversation(
            &scope,
            NewConversation::new().with_metadata(metadata(json!({"base": "kept"}))),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("w{writer}");
            for round in 0..ROUNDS {
                let patch = metadata(json!({ &key: round, "shared": { &key: round } }));
                let patched = store
                    .update_conversation(&scope, chat.id, ConversationPatch::new().metadata(patch))
                    .await
                    .unwrap();
                assert_eq!(patched.metadata[&key], json!(round));
                assert_eq!(patched.metadata["shared"][&key], json!(round));
                assert_eq!(patched.metadata["base"], json!("kept"));
            }
        }));
    }
    let renamer = {
        let store = Arc::clone(&store);
        let scope = scope.clone();
        tokio::spawn(async move {
            for round in 0..ROUNDS {
                store
                    .update_conversation(
                        &scope,
                        chat.id,
                        ConversationPatch::new().title(format!("Round {round}")),
                    )
                    .await
                    .unwrap();
            }
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    renamer.await.unwrap();
    let mut expected = json!({"base": "kept", "shared": {}});
    for writer in 0..WRITERS {
        expected[format!("w{writer}")] = json!(ROUNDS - 1);
        expected["shared"][format!("w{writer}")] = json!(ROUNDS - 1);
    }
    let stored = store.get_conversation(&scope, chat.id).await.unwrap();
    assert_eq!(serde_json::Value::Object(stored.metadata), expected);
    assert_eq!(
        stored.version,
        chat.version + (WRITERS as u64 + 1) * ROUNDS,
        "one version per patch"
    );
    assert_eq!(stored.title.as_deref(), Some("Round 24"));
}

/// Promise 11 for merges: a merge whose result would exceed
/// [`Limits::max_metadata_bytes`] is `InvalidInput` naming `metadata` and changes
/// nothing, though the patch alone is small; a result of exactly the limit is
/// stored.
pub async fn metadata_merge_over_the_limit_changes_nothing<S: Store>(store: Arc<S>) {
    let limit = Limits::default().max_metadata_bytes;
    let scope = fresh_scope("merge-limit");
    let size = |m: &Metadata| serde_json::to_vec(m).unwrap().len();
    let first = metadata(json!({"first": "a".repeat(limit / 2)}));
    let chat = store
        .create_conversation(&scope, NewConversation::new().with_metadata(first.clone()))
        .await
        .unwrap();
    let mut probe = first.clone();
    probe.insert("second".into(), json!(""));
    let room = limit - size(&probe);
    let over = metadata(json!({"second": "b".repeat(room + 1)}));
    assert!(size(&over) < limit, "the patch alone is within the limit");
    assert_invalid(
        store
            .update_conversation(
                &scope,
                chat.id,
                ConversationPatch::new().metadata(over).pinned(true),
            )
            .await,
        "metadata",
    );
    assert_eq!(store.get_conversation(&scope, chat.id).await.unwrap(), chat);

    let exact = store
        .update_conversation(
            &scope,
            chat.id,
            ConversationPatch::new().metadata(metadata(json!({"second": "b".repeat(room)}))),
        )
        .await
        .unwrap();
    assert_eq!(size(&exact.metadata), limit);
    assert_invalid(
        store
            .update_conversation(
                &scope,
                chat.id,
                ConversationPatch::new().metadata(metadata(json!({"third": 1}))),
            )
            .await,
        "metadata",
    );
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        exact
    );
    let smaller = store
        .update_conversation(
            &scope,
            chat.id,
            ConversationPatch::new().metadata(metadata(json!({"first": null, "third": 1}))),
        )
        .await
        .unwrap();
    assert_eq!(smaller.metadata.len(), 2);
    assert_eq!(smaller.version, exact.version + 1);
}

/// Lists with `metadata_equals`: each key must hold exactly that value (strings
/// exactly, numbers by value so `1` is `1.0`, booleans; a string, a number and a
/// boolean never equal each other; a top-level key only, whatever characters its
/// name holds); keys AND; a missing key matches nothing; the filter combines with the
/// other filters, pages by cursor and never leaks another scope's rows.
pub async fn list_metadata_filter<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("meta-filter");
    let elsewhere = fresh_scope("meta-filter-elsewhere");
    let rows = [
        json!({"tag": "billing", "n": 1, "flag": true, "a.b": "dot", "nested": {"tag": "billing"}}),
        json!({"tag": "billing", "n": 2, "flag": false}),
        json!({"tag": "support", "n": 1.0, "flag": true}),
        json!({"tag": "billing", "n": "1", "flag": "true"}),
        json!({"tag": "billing", "n": 1, "flag": 1}),
        json!({}),
        json!({"a": {"b": "dot"}, "tag": ["billing"]}),
        json!({"tag": null, "n": null}),
        json!({"we\"ird key": "q", "$.x": 1, "café": "crème", "tag": "BILLING"}),
    ];
    let mut created = Vec::new();
    for row in &rows {
        created.push(
            store
                .create_conversation(
                    &scope,
                    NewConversation::new().with_metadata(metadata(row.clone())),
                )
                .await
                .unwrap(),
        );
    }
    let foreign = store
        .create_conversation(
            &elsewhere,
            NewConversation::new().with_metadata(metadata(rows[0].clone())),
        )
        .await
        .unwrap();
    let filtered = |pairs: Vec<(&str, serde_json::Value)>| {
        let mut query = ConversationQuery::new().limit(2);
        for (key, value) in pairs {
            query = query.metadata_equals(key, value);
        }
        query
    };
    let expect = |which: &[usize]| {
        let mut rows: Vec<Conversation> = which.iter().map(|&i| created[i].clone()).collect();
        sort_like_list(&mut rows, false);
        ids(&rows)
    };
    for (pairs, which) in [
        (vec![("tag", json!("billing"))], vec![0, 1, 3, 4]),
        (vec![("n", json!(1))], vec![0, 2, 4]),
        (vec![("n", json!(1.0))], vec![0, 2, 4]),
        (vec![("n", json!("1"))], vec![3]),
        (vec![("n", json!(2))], vec![1]),
        (vec![("n", json!(1.5))], vec![]),
        (vec![("flag", json!(true))], vec![0, 2]),
        (vec![("flag", json!(false))], vec![1]),
        (vec![("flag", json!("true"))], vec![3]),
        (vec![("flag", json!(1))], vec![4]),
        (vec![("tag", json!("billing")), ("n", json!(1))], vec![0, 4]),
        (
            vec![
                ("tag", json!("billing")),
                ("n", json!(1)),
                ("flag", json!(true)),
            ],
            vec![0],
        ),
        (vec![("a.b", json!("dot"))], vec![0]),
        (vec![("nope", json!("x"))], vec![]),
        (vec![("tag", json!("BILLING"))], vec![8]),
        (vec![("tag", json!("bill"))], vec![]),
        (vec![("we\"ird key", json!("q"))], vec![8]),
        (vec![("$.x", json!(1))], vec![8]),
        (vec![("café", json!("crème"))], vec![8]),
        (vec![("café", json!("creme"))], vec![]),
    ] {
        let shown = format!("{pairs:?}");
        let listed = list_all(&*store, &scope, filtered(pairs)).await;
        assert!(listed.iter().all(|page| page.len() <= 2));
        assert_eq!(ids(&listed.concat()), expect(&which), "{shown}");
    }
    let foreign_listed = list_all(
        &*store,
        &elsewhere,
        filtered(vec![("tag", json!("billing"))]),
    )
    .await
    .concat();
    assert_eq!(ids(&foreign_listed), vec![foreign.id]);

    // With the other filters.
    store
        .update_conversation(
            &scope,
            created[1].id,
            ConversationPatch::new().archived(true),
        )
        .await
        .unwrap();
    store
        .update_conversation(
            &scope,
            created[4].id,
            ConversationPatch::new().title("Renamed"),
        )
        .await
        .unwrap();
    let created: Vec<Conversation> = {
        let mut read = Vec::new();
        for row in &created {
            read.push(store.get_conversation(&scope, row.id).await.unwrap());
        }
        read
    };
    let billing = |archived: ArchivedFilter| {
        ConversationQuery::new()
            .archived(archived)
            .metadata_equals("tag", "billing")
            .limit(1)
    };
    let listed = list_all(&*store, &scope, billing(ArchivedFilter::Exclude))
        .await
        .concat();
    let mut expected = vec![created[0].clone(), created[3].clone(), created[4].clone()];
    sort_like_list(&mut expected, false);
    assert_eq!(ids(&listed), ids(&expected));
    let archived = list_all(&*store, &scope, billing(ArchivedFilter::Only))
        .await
        .concat();
    assert_eq!(ids(&archived), vec![created[1].id]);
    let titled = list_all(
        &*store,
        &scope,
        billing(ArchivedFilter::Include).title_contains("renamed"),
    )
    .await
    .concat();
    assert_eq!(ids(&titled), vec![created[4].id]);
}

/// Promise 11 for the metadata filter: a value that is not a string (at most 1 KiB,
/// no NUL), a number or a boolean is `InvalidInput` naming `metadata.<key>`, as is an
/// unusable key; more than [`MAX_METADATA_FILTERS`] keys is `InvalidInput` naming
/// `metadata`.
pub async fn list_metadata_filter_refusals<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("meta-filter-refusals");
    store
        .create_conversation(
            &scope,
            NewConversation::new().with_metadata(metadata(json!({"k": "v"}))),
        )
        .await
        .unwrap();
    for (key, value, field) in [
        ("k", json!({"a": 1}), "metadata.k"),
        ("k", json!([1]), "metadata.k"),
        ("k", json!(null), "metadata.k"),
        ("k", json!("x".repeat(1025)), "metadata.k"),
        ("k", json!("a\u{0}b"), "metadata.k"),
        ("", json!("v"), "metadata."),
        ("a\nb", json!("v"), "metadata.a\nb"),
    ] {
        assert_invalid(
            store
                .list_conversations(
                    &scope,
                    &ConversationQuery::new().metadata_equals(key, value),
                )
                .await,
            field,
        );
    }
    let mut most = ConversationQuery::new();
    for i in 0..MAX_METADATA_FILTERS {
        most = most.metadata_equals(format!("k{i}"), "v");
    }
    assert!(
        store
            .list_conversations(&scope, &most)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let too_many = most.metadata_equals("k", "v");
    assert_invalid(
        store.list_conversations(&scope, &too_many).await,
        "metadata",
    );
    let fine = store
        .list_conversations(
            &scope,
            &ConversationQuery::new().metadata_equals("k", "x".repeat(1024)),
        )
        .await
        .unwrap();
    assert!(fine.items.is_empty());
    let found = store
        .list_conversations(&scope, &ConversationQuery::new().metadata_equals("k", "v"))
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
}
