//! The message tree: parents, branches, siblings, switching, deleting and forking.

use chrono::TimeDelta;

use super::*;
use crate::testkit::ManualClock;
use crate::{Clock, SIBLING_WINDOW, Siblings};

/// The siblings a message at `index` of `all` (every sibling, by seq) must name: the
/// ids at most [`SIBLING_WINDOW`] positions away, the count and the index.
fn expected_siblings(all: &[MessageId], index: usize) -> Siblings {
    Siblings {
        ids: all
            .iter()
            .enumerate()
            .filter(|(i, _)| i.abs_diff(index) <= SIBLING_WINDOW)
            .map(|(_, id)| *id)
            .collect(),
        count: all.len() as u64,
        index: index as u64,
    }
}

async fn message<S: Store>(
    store: &S,
    scope: &Scope,
    chat: ConversationId,
    id: MessageId,
) -> Message {
    store.get_message(scope, chat, id).await.unwrap()
}

// ---------------------------------------------------------------------------
// Appends and branches

/// Promises 2, 3 and 10: an append without a parent chains after the head and its
/// last message becomes the head; `message_count` and `last_seq` follow.
pub async fn append_follows_the_head<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("follow-head");
    let chat = new_chat(&*store, &scope).await;
    assert_eq!((chat.head_id, chat.last_seq), (None, 0));
    let first = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![NewMessage::user("q1"), NewMessage::assistant("a1")]),
        )
        .await
        .unwrap();
    let (q1, a1) = (&first.messages[0], &first.messages[1]);
    assert_eq!(
        q1.parent_id, None,
        "the first message of a conversation is a root"
    );
    assert_eq!(a1.parent_id, Some(q1.id), "a batch is a chain");
    assert_eq!(first.conversation.head_id, Some(a1.id));
    assert_eq!(
        (
            first.conversation.message_count,
            first.conversation.last_seq
        ),
        (2, 2)
    );

    let q2 = add(&*store, &scope, chat.id, Parent::Head, "q2").await;
    assert_eq!((q2.seq, q2.parent_id), (3, Some(a1.id)));
    let a2 = store
        .append_messages(&scope, chat.id, Append::one(NewMessage::assistant("a2")))
        .await
        .unwrap();
    assert_eq!(a2.messages[0].parent_id, Some(q2.id));
    let conversation = store.get_conversation(&scope, chat.id).await.unwrap();
    assert_eq!(conversation, a2.conversation);
    assert_eq!(conversation.head_id, Some(a2.messages[0].id));
    assert_eq!((conversation.message_count, conversation.last_seq), (4, 4));
    assert_eq!(
        conversation.version,
        chat.version + 3,
        "one version per append"
    );

    let path = path_of(&*store, &scope, chat.id).await;
    assert_eq!(contents(&path), vec!["q1", "a1", "q2", "a2"]);
    for message in &path {
        assert_eq!(
            message.siblings,
            Siblings::only(message.id),
            "a chat has no versions"
        );
    }
    assert_eq!(
        read_view(&*store, &scope, chat.id, MessageView::All).await,
        path,
        "a linear chat is its whole tree"
    );
}

/// Promises 3 and 10: an append at a message opens a branch there and becomes the
/// head; the path, the window and every message's siblings show it; the whole tree
/// stays readable with `MessageView::All`.
pub async fn append_at_a_message_opens_a_branch<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("branch");
    let chat = chat_with_messages(&*store, &scope, 4).await; // m1 m2 m3 m4
    let old = path_of(&*store, &scope, chat.id).await;
    let (m2, m3) = (&old[1], &old[2]);
    let edited = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![NewMessage::user("m3b"), NewMessage::assistant("m4b")])
                .parent(Parent::Message(m2.id)),
        )
        .await
        .unwrap();
    let (m3b, m4b) = (&edited.messages[0], &edited.messages[1]);
    assert_eq!((m3b.seq, m4b.seq), (5, 6));
    assert_eq!(m3b.parent_id, Some(m2.id));
    assert_eq!(m4b.parent_id, Some(m3b.id));
    assert_eq!(
        m3b.siblings,
        Siblings {
            ids: vec![m3.id, m3b.id],
            count: 2,
            index: 1
        },
        "the answer of an append names its siblings"
    );
    let conversation = &edited.conversation;
    assert_eq!(conversation.head_id, Some(m4b.id), "the branch is the head");
    assert_eq!((conversation.message_count, conversation.last_seq), (6, 6));

    let path = path_of(&*store, &scope, chat.id).await;
    assert_eq!(contents(&path), vec!["m1", "m2", "m3b", "m4b"]);
    assert_eq!(seqs(&path), vec![1, 2, 5, 6]);
    assert_eq!(path[2].siblings, m3b.siblings);
    for at in [0, 1, 3] {
        assert_eq!(path[at].siblings, Siblings::only(path[at].id));
    }
    let window = store
        .recent_messages(&scope, chat.id, &RecentQuery::new(3))
        .await
        .unwrap();
    assert_eq!(contents(&window), vec!["m2", "m3b", "m4b"]);
    let older = store
        .list_messages(&scope, chat.id, &MessageQuery::before(6).limit(2))
        .await
        .unwrap();
    assert_eq!(
        seqs(&older.items),
        vec![2, 5],
        "bounds are seqs of the path"
    );
    assert!(older.has_more);

    let all = read_view(&*store, &scope, chat.id, MessageView::All).await;
    assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5, 6], "every branch, by seq");
    assert_eq!(
        all[2].siblings,
        Siblings {
            ids: vec![m3.id, m3b.id],
            count: 2,
            index: 0
        }
    );
    assert_eq!(
        contents(&all[2..4]),
        vec!["m3", "m4"],
        "the old branch is kept"
    );
    let newest_all = store
        .list_messages(
            &scope,
            chat.id,
            &MessageQuery::latest().limit(4).view(MessageView::All),
        )
        .await
        .unwrap();
    assert_eq!(seqs(&newest_all.items), vec![3, 4, 5, 6]);
    assert!(newest_all.has_more);
    assert_eq!(message(&*store, &scope, chat.id, m3.id).await, all[2]);
}

/// Promise 10: `Parent::Root` adds a new root, a sibling of the first message, and
/// makes it the head; `Parent::Head` then follows it.
pub async fn append_at_root_adds_a_root_sibling<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("root");
    let chat = chat_with_messages(&*store, &scope, 2).await;
    let first = path_of(&*store, &scope, chat.id).await[0].clone();
    let root = add(&*store, &scope, chat.id, Parent::Root, "again").await;
    assert_eq!((root.seq, root.parent_id), (3, None));
    let roots = vec![first.id, root.id];
    assert_eq!(root.siblings, expected_siblings(&roots, 1));
    let path = path_of(&*store, &scope, chat.id).await;
    assert_eq!(path, vec![root.clone()]);
    assert_eq!(
        message(&*store, &scope, chat.id, first.id).await.siblings,
        expected_siblings(&roots, 0)
    );
    let next = add(&*store, &scope, chat.id, Parent::Head, "after").await;
    assert_eq!(next.parent_id, Some(root.id));
    assert_eq!(
        contents(&path_of(&*store, &scope, chat.id).await),
        vec!["again", "after"]
    );
    let conversation = store.get_conversation(&scope, chat.id).await.unwrap();
    assert_eq!((conversation.message_count, conversation.last_seq), (4, 4));
    // On an empty conversation, a root is simply its first message.
    let empty = new_chat(&*store, &scope).await;
    let only = add(&*store, &scope, empty.id, Parent::Root, "first").await;
    assert_eq!((only.seq, only.parent_id), (1, None));
    assert_eq!(only.siblings, Siblings::only(only.id));
}

// ---------------------------------------------------------------------------
// Siblings

/// Every message names its siblings (same parent, itself included) by seq, with
/// their count and its index, as they are at the time of the read.
pub async fn siblings_are_ordered_by_seq<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("siblings");
    let chat = new_chat(&*store, &scope).await;
    let q = add(&*store, &scope, chat.id, Parent::Head, "q").await;
    let a = add(&*store, &scope, chat.id, Parent::Head, "a").await;
    let follow_up = add(&*store, &scope, chat.id, Parent::Head, "follow-up").await;
    let b = add(&*store, &scope, chat.id, Parent::Message(q.id), "b").await;
    let c = add(&*store, &scope, chat.id, Parent::Message(q.id), "c").await;
    let answers = vec![a.id, b.id, c.id];
    for (index, id) in answers.iter().enumerate() {
        assert_eq!(
            message(&*store, &scope, chat.id, *id).await.siblings,
            expected_siblings(&answers, index)
        );
    }
    assert_eq!(c.siblings, expected_siblings(&answers, 2));
    assert_eq!(
        message(&*store, &scope, chat.id, follow_up.id)
            .await
            .siblings,
        Siblings::only(follow_up.id),
        "a child of a version has its own siblings"
    );
    let all = read_view(&*store, &scope, chat.id, MessageView::All).await;
    for read in &all {
        assert_eq!(read, &message(&*store, &scope, chat.id, read.id).await);
    }
    store
        .update_conversation(&scope, chat.id, ConversationPatch::new().head(a.id))
        .await
        .unwrap();
    let path = path_of(&*store, &scope, chat.id).await;
    assert_eq!(contents(&path), vec!["q", "a", "follow-up"]);
    assert_eq!(path[1].siblings, expected_siblings(&answers, 0));
    store
        .delete_message(&scope, chat.id, b.id, None)
        .await
        .unwrap();
    let left = vec![a.id, c.id];
    assert_eq!(
        message(&*store, &scope, chat.id, c.id).await.siblings,
        expected_siblings(&left, 1),
        "siblings as they are now"
    );
}

/// Siblings name at most `SIBLING_WINDOW` ids on each side, while their count and
/// the message's index stay exact: a message regenerated 120 times.
pub async fn sibling_ids_are_windowed<S: Store>(store: Arc<S>) {
    const VERSIONS: usize = 120;
    let scope = fresh_scope("sibling-window");
    let chat = new_chat(&*store, &scope).await;
    let question = add(&*store, &scope, chat.id, Parent::Head, "q").await;
    let mut versions = Vec::new();
    for i in 0..VERSIONS {
        let answer = add(
            &*store,
            &scope,
            chat.id,
            Parent::Message(question.id),
            &format!("a{i}"),
        )
        .await;
        versions.push(answer);
    }
    let all: Vec<MessageId> = message_ids(&versions);
    let newest = versions.last().unwrap();
    assert_eq!(newest.siblings, expected_siblings(&all, VERSIONS - 1));
    assert_eq!(newest.siblings.ids.len(), SIBLING_WINDOW + 1);
    for index in [0, 1, 49, 50, 51, 60, 69, 70, 118, 119] {
        let read = message(&*store, &scope, chat.id, all[index]).await;
        assert_eq!(
            read.siblings,
            expected_siblings(&all, index),
            "version {index}"
        );
        assert!(read.siblings.ids.len() <= 2 * SIBLING_WINDOW + 1);
    }
    let tree = read_view(&*store, &scope, chat.id, MessageView::All).await;
    assert_eq!(tree.len(), VERSIONS + 1);
    for (index, read) in tree[1..].iter().enumerate() {
        assert_eq!(read.siblings, expected_siblings(&all, index));
    }
    let path = path_of(&*store, &scope, chat.id).await;
    assert_eq!(path[1].siblings, expected_siblings(&all, VERSIONS - 1));
    store
        .update_conversation(&scope, chat.id, ConversationPatch::new().head(all[60]))
        .await
        .unwrap();
    let path = path_of(&*store, &scope, chat.id).await;
    assert_eq!(path[1].siblings, expected_siblings(&all, 60));
}

// ---------------------------------------------------------------------------
// Switching branch

/// Promises 5 and 10: a patch with `head_id` moves the head to the newest leaf under
/// that message (not to the message when it has children), bumps the version, does
/// not move `updated_at`, honours `expected_version`; a message of another
/// conversation or scope is `NotFound` and changes nothing.
pub async fn switch_moves_the_head_to_the_newest_leaf<S: Store>(
    store: Arc<S>,
    clock: Arc<ManualClock>,
) {
    let scope = fresh_scope("switch");
    let chat = chat_with_messages(&*store, &scope, 4).await; // m1 m2 m3 m4
    let linear = path_of(&*store, &scope, chat.id).await;
    let (m1, m2, m3, m4) = (&linear[0], &linear[1], &linear[2], &linear[3]);
    let m3b = add(&*store, &scope, chat.id, Parent::Message(m2.id), "m3b").await; // 5
    let m4b = add(&*store, &scope, chat.id, Parent::Head, "m4b").await; // 6
    let m4c = add(&*store, &scope, chat.id, Parent::Message(m3.id), "m4c").await; // 7
    clock.advance(TimeDelta::seconds(5));

    let switch = |target: MessageId| {
        let store = Arc::clone(&store);
        let scope = scope.clone();
        async move {
            store
                .update_conversation(&scope, chat.id, ConversationPatch::new().head(target))
                .await
        }
    };
    let before = store.get_conversation(&scope, chat.id).await.unwrap();
    assert_eq!(before.head_id, Some(m4c.id));
    let mut version = before.version;
    for (target, head, path) in [
        (m3b.id, &m4b, vec!["m1", "m2", "m3b", "m4b"]),
        (m3.id, &m4c, vec!["m1", "m2", "m3", "m4c"]),
        (m4.id, m4, vec!["m1", "m2", "m3", "m4"]),
        (m1.id, &m4c, vec!["m1", "m2", "m3", "m4c"]),
        (m4c.id, &m4c, vec!["m1", "m2", "m3", "m4c"]),
    ] {
        let switched = switch(target).await.unwrap();
        version += 1;
        assert_eq!(switched.head_id, Some(head.id), "switch to {target}");
        assert_eq!(switched.version, version, "a switch is a change");
        assert_eq!(
            switched.updated_at, before.updated_at,
            "a switch is navigation, not activity"
        );
        assert_eq!(
            (switched.message_count, switched.last_seq),
            (before.message_count, before.last_seq)
        );
        assert_eq!(
            store.get_conversation(&scope, chat.id).await.unwrap(),
            switched
        );
        assert_eq!(contents(&path_of(&*store, &scope, chat.id).await), path);
    }

    // An append after a switch follows the new head.
    switch(m4.id).await.unwrap();
    let next = add(&*store, &scope, chat.id, Parent::Head, "m5").await;
    assert_eq!(next.parent_id, Some(m4.id));
    let current = store.get_conversation(&scope, chat.id).await.unwrap();

    // A stale version is a conflict; the current one applies.
    let stale = store
        .update_conversation(
            &scope,
            chat.id,
            ConversationPatch::new()
                .head(m3b.id)
                .expect_version(current.version - 1),
        )
        .await;
    match stale {
        Err(Error::Conflict { expected, actual }) => {
            assert_eq!((expected, actual), (current.version - 1, current.version));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        current
    );

    // Messages that are not this conversation's are NotFound and change nothing.
    let other = chat_with_messages(&*store, &scope, 1).await;
    let foreign = path_of(&*store, &scope, other.id).await[0].id;
    let elsewhere = fresh_scope("switch-elsewhere");
    let far = chat_with_messages(&*store, &elsewhere, 1).await;
    let far_message = path_of(&*store, &elsewhere, far.id).await[0].id;
    for target in [foreign, far_message, MessageId::new()] {
        assert_not_found(switch(target).await, "a head of another conversation");
    }
    assert_not_found(
        store
            .update_conversation(&elsewhere, chat.id, ConversationPatch::new().head(m3b.id))
            .await,
        "a switch through another scope",
    );
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        current
    );
    assert_eq!(
        store
            .get_conversation(&scope, other.id)
            .await
            .unwrap()
            .head_id,
        Some(foreign)
    );

    let switched = store
        .update_conversation(
            &scope,
            chat.id,
            ConversationPatch::new()
                .head(m3b.id)
                .expect_version(current.version),
        )
        .await
        .unwrap();
    assert_eq!(switched.head_id, Some(m4b.id));

    // With a rename, the patch is activity and moves `updated_at`.
    let renamed = store
        .update_conversation(
            &scope,
            chat.id,
            ConversationPatch::new().head(m4.id).title("Renamed"),
        )
        .await
        .unwrap();
    assert_eq!(renamed.head_id, Some(next.id));
    assert_eq!(renamed.version, switched.version + 1, "one change");
    assert_eq!(
        renamed.updated_at,
        crate::backend::truncate_to_millis(clock.now())
    );
}

// ---------------------------------------------------------------------------
// Deleting messages

/// Promises 7 and 10: deleting a message removes it and its descendants from every
/// read; the rest of the tree, and the head when it was elsewhere, stay.
pub async fn delete_message_removes_its_subtree<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("delete-subtree");
    let chat = chat_with_messages(&*store, &scope, 4).await; // m1 m2 m3 m4
    let linear = path_of(&*store, &scope, chat.id).await;
    let (m2, m3, m4) = (&linear[1], &linear[2], &linear[3]);
    let m3b = add(&*store, &scope, chat.id, Parent::Message(m2.id), "m3b").await; // 5
    let m4b = add(&*store, &scope, chat.id, Parent::Head, "m4b").await; // 6
    let before = store.get_conversation(&scope, chat.id).await.unwrap();

    let after = store
        .delete_message(&scope, chat.id, m3.id, None)
        .await
        .unwrap();
    assert_eq!(
        after.head_id,
        Some(m4b.id),
        "the head was on another branch"
    );
    assert_eq!(after.message_count, 4);
    assert_eq!(after.last_seq, 6);
    assert_eq!(after.version, before.version + 1);
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        after
    );
    for gone in [m3.id, m4.id] {
        assert_not_found(
            store.get_message(&scope, chat.id, gone).await,
            "a deleted message",
        );
        assert_not_found(
            store.delete_message(&scope, chat.id, gone, None).await,
            "deleting twice",
        );
    }
    let all = read_view(&*store, &scope, chat.id, MessageView::All).await;
    assert_eq!(seqs(&all), vec![1, 2, 5, 6]);
    assert_eq!(
        all[2].siblings,
        Siblings::only(m3b.id),
        "m3 is no sibling now"
    );
    let bounded = store
        .list_messages(
            &scope,
            chat.id,
            &MessageQuery {
                after: Some(2),
                before: Some(6),
                limit: None,
                view: MessageView::All,
            },
        )
        .await
        .unwrap();
    assert_eq!(seqs(&bounded.items), vec![5]);
    assert_eq!(
        contents(&path_of(&*store, &scope, chat.id).await),
        vec!["m1", "m2", "m3b", "m4b"]
    );
    assert_not_found(
        store
            .recent_messages(&scope, chat.id, &RecentQuery::new(5).ending_at(m4.id))
            .await,
        "a window ending at a deleted message",
    );
    assert_not_found(
        store
            .update_conversation(&scope, chat.id, ConversationPatch::new().head(m4.id))
            .await,
        "a switch to a deleted message",
    );
    assert_not_found(
        store
            .append_messages(
                &scope,
                chat.id,
                Append::one(NewMessage::user("late")).parent(Parent::Message(m4.id)),
            )
            .await,
        "an append under a deleted message",
    );
    assert_not_found(
        store.fork_conversation(&scope, chat.id, m3.id).await,
        "a fork at a deleted message",
    );
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        after
    );
}

/// Promise 10: when the head is deleted, it moves to the newest leaf left under the
/// deleted message's parent (for a root, under any remaining root), else to the
/// parent itself.
pub async fn delete_message_moves_the_head<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("delete-head");
    let chat = new_chat(&*store, &scope).await;
    let r = add(&*store, &scope, chat.id, Parent::Head, "r").await; // 1
    let x = add(&*store, &scope, chat.id, Parent::Head, "x").await; // 2
    let y = add(&*store, &scope, chat.id, Parent::Message(r.id), "y").await; // 3
    let x1 = add(&*store, &scope, chat.id, Parent::Message(x.id), "x1").await; // 4
    let z = add(&*store, &scope, chat.id, Parent::Message(r.id), "z").await; // 5, head
    let z1 = add(&*store, &scope, chat.id, Parent::Head, "z1").await; // 6, head

    // The newest leaf under r is x1 (4): not z's sibling y (3), the newest child.
    let after = store
        .delete_message(&scope, chat.id, z.id, None)
        .await
        .unwrap();
    assert_eq!(after.head_id, Some(x1.id));
    assert_eq!(
        contents(&path_of(&*store, &scope, chat.id).await),
        vec!["r", "x", "x1"]
    );
    assert_not_found(store.get_message(&scope, chat.id, z1.id).await, "z1");

    // The head's own parent has no other child: the head moves to the parent.
    let after = store
        .delete_message(&scope, chat.id, x1.id, None)
        .await
        .unwrap();
    assert_eq!(after.head_id, Some(x.id));
    assert_eq!(
        contents(&path_of(&*store, &scope, chat.id).await),
        vec!["r", "x"]
    );

    // Deleting a message off the path leaves the head.
    let after = store
        .delete_message(&scope, chat.id, y.id, None)
        .await
        .unwrap();
    assert_eq!(after.head_id, Some(x.id));

    // A deleted root: the head moves to the newest leaf of the remaining roots.
    let r2 = add(&*store, &scope, chat.id, Parent::Root, "r2").await; // 7
    let r2a = add(&*store, &scope, chat.id, Parent::Head, "r2a").await; // 8
    let r3 = add(&*store, &scope, chat.id, Parent::Root, "r3").await; // 9
    let r3a = add(&*store, &scope, chat.id, Parent::Head, "r3a").await; // 10
    assert_eq!(
        store
            .get_conversation(&scope, chat.id)
            .await
            .unwrap()
            .head_id,
        Some(r3a.id)
    );
    let after = store
        .delete_message(&scope, chat.id, r3.id, None)
        .await
        .unwrap();
    assert_eq!(after.head_id, Some(r2a.id));
    assert_eq!(
        contents(&path_of(&*store, &scope, chat.id).await),
        vec!["r2", "r2a"]
    );
    let after = store
        .delete_message(&scope, chat.id, r2.id, None)
        .await
        .unwrap();
    assert_eq!(
        after.head_id,
        Some(x.id),
        "the last root left, r, leads to x"
    );
    assert_eq!(after.message_count, 2);
    let roots = read_view(&*store, &scope, chat.id, MessageView::All).await;
    assert_eq!(contents(&roots), vec!["r", "x"]);
    assert_eq!(roots[0].siblings, Siblings::only(r.id));
    assert_not_found(store.get_message(&scope, chat.id, r3a.id).await, "r3a");
}

/// Promise 2: seqs are never reused, also after the newest message was deleted: the
/// next append gets `last_seq + 1`.
pub async fn delete_message_never_reuses_seqs<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("delete-seq");
    let chat = chat_with_messages(&*store, &scope, 3).await;
    let path = path_of(&*store, &scope, chat.id).await;
    let after = store
        .delete_message(&scope, chat.id, path[2].id, None)
        .await
        .unwrap();
    assert_eq!((after.message_count, after.last_seq), (2, 3));
    assert_eq!(after.head_id, Some(path[1].id));
    let next = add(&*store, &scope, chat.id, Parent::Head, "next").await;
    assert_eq!(next.seq, 4, "seq 3 is not reused");
    assert_eq!(next.parent_id, Some(path[1].id));
    store
        .delete_message(&scope, chat.id, next.id, None)
        .await
        .unwrap();
    store
        .delete_message(&scope, chat.id, path[1].id, None)
        .await
        .unwrap();
    let batch = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![NewMessage::user("a"), NewMessage::assistant("b")]),
        )
        .await
        .unwrap();
    assert_eq!(seqs(&batch.messages), vec![5, 6]);
    assert_eq!(
        (
            batch.conversation.message_count,
            batch.conversation.last_seq
        ),
        (3, 6)
    );
    assert_eq!(
        seqs(&read_view(&*store, &scope, chat.id, MessageView::All).await),
        vec![1, 5, 6]
    );
}

/// Promise 10: deleting the root of the only branch leaves an empty conversation
/// (no head, no messages) that keeps its `last_seq` and takes new messages.
pub async fn deleting_the_only_root_empties_the_conversation<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("delete-root");
    let chat = chat_with_messages(&*store, &scope, 5).await;
    let root = path_of(&*store, &scope, chat.id).await[0].clone();
    let empty = store
        .delete_message(&scope, chat.id, root.id, None)
        .await
        .unwrap();
    assert_eq!(empty.head_id, None);
    assert_eq!((empty.message_count, empty.last_seq), (0, 5));
    assert_eq!(empty.version, chat.version + 1);
    assert!(path_of(&*store, &scope, chat.id).await.is_empty());
    assert!(
        read_view(&*store, &scope, chat.id, MessageView::All)
            .await
            .is_empty()
    );
    let page = store
        .list_messages(&scope, chat.id, &MessageQuery::latest())
        .await
        .unwrap();
    assert!(page.items.is_empty() && !page.has_more);
    let again = add(&*store, &scope, chat.id, Parent::Head, "again").await;
    assert_eq!((again.seq, again.parent_id), (6, None));
    assert_eq!(again.siblings, Siblings::only(again.id));
    let conversation = store.get_conversation(&scope, chat.id).await.unwrap();
    assert_eq!(conversation.head_id, Some(again.id));
    assert_eq!((conversation.message_count, conversation.last_seq), (1, 6));
}

/// Promises 5 and 7: deleting a message is activity (version and `updated_at` move),
/// honours `expected_version`, and a message not in the conversation is `NotFound`.
pub async fn delete_message_is_a_versioned_change<S: Store>(
    store: Arc<S>,
    clock: Arc<ManualClock>,
) {
    let scope = fresh_scope("delete-version");
    let chat = chat_with_messages(&*store, &scope, 3).await;
    let path = path_of(&*store, &scope, chat.id).await;
    clock.advance(TimeDelta::milliseconds(1500));
    let stale = store
        .delete_message(&scope, chat.id, path[1].id, Some(chat.version - 1))
        .await;
    match stale {
        Err(Error::Conflict { expected, actual }) => {
            assert_eq!((expected, actual), (chat.version - 1, chat.version));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get_conversation(&scope, chat.id).await.unwrap(), chat);
    assert_eq!(
        path_of(&*store, &scope, chat.id).await,
        path,
        "nothing deleted"
    );

    let after = store
        .delete_message(&scope, chat.id, path[1].id, Some(chat.version))
        .await
        .unwrap();
    assert_eq!(after.version, chat.version + 1);
    assert_eq!(
        after.updated_at,
        crate::backend::truncate_to_millis(clock.now()),
        "a deletion is activity"
    );
    assert_eq!(after.created_at, chat.created_at);
    assert_eq!((after.message_count, after.head_id), (1, Some(path[0].id)));
    for (id, what) in [
        (path[1].id, "deleted before"),
        (path[2].id, "deleted with its parent"),
        (MessageId::new(), "never stored"),
    ] {
        assert_not_found(store.delete_message(&scope, chat.id, id, None).await, what);
    }
    assert_eq!(
        store.get_conversation(&scope, chat.id).await.unwrap(),
        after
    );
}

// ---------------------------------------------------------------------------
// Forks, windows of a leaf, reads of one message

/// A fork is a new conversation in the same scope holding a copy of the path to the
/// message (same ids, roles, contents, tool calls, metadata and timestamps; seqs
/// 1..k), headed at its copy, marked `forkedFrom`, its title heuristic; the source
/// is unchanged. Any message can be forked at, on the active path or not.
pub async fn fork_copies_the_path<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("fork");
    let source = store
        .create_conversation(
            &scope,
            NewConversation::new()
                .with_title("Source")
                .with_metadata(metadata(json!({"connection": 7}))),
        )
        .await
        .unwrap();
    let source = store
        .update_conversation(&scope, source.id, ConversationPatch::new().pinned(true))
        .await
        .unwrap();
    let call = ToolCall {
        id: "call_1".into(),
        name: "run_sql".into(),
        arguments: json!({"sql": "SELECT 1"}),
    };
    store
        .append_messages(
            &scope,
            source.id,
            Append::new(vec![
                NewMessage::user("q1").with_metadata(metadata(json!({"client": "web"}))),
                NewMessage::assistant("").with_tool_calls(vec![call]),
                NewMessage::tool("call_1", "1"),
                NewMessage::assistant("a1"),
                NewMessage::user("q2"),
                NewMessage::assistant("a2"),
            ]),
        )
        .await
        .unwrap();
    let original = path_of(&*store, &scope, source.id).await;
    let q2 = &original[4];
    add(&*store, &scope, source.id, Parent::Message(q2.id), "a2b").await;
    let source = store.get_conversation(&scope, source.id).await.unwrap();
    let source_tree = read_view(&*store, &scope, source.id, MessageView::All).await;

    // At a2, which is off the active path (a2b is the head).
    let at = &original[5];
    let before = crate::backend::now();
    let fork = store
        .fork_conversation(&scope, source.id, at.id)
        .await
        .unwrap();
    let after = crate::backend::now();
    assert_ne!(fork.id, source.id);
    assert_eq!(fork.scope, scope);
    assert_eq!(fork.title.as_deref(), Some("Source"));
    assert_eq!(
        fork.title_source,
        TitleSource::Heuristic,
        "a generated title may replace it"
    );
    assert_eq!((fork.message_count, fork.last_seq), (6, 6));
    assert_eq!(
        fork.head_id,
        Some(at.id),
        "the head is the copy of the message"
    );
    assert!(!fork.pinned && !fork.archived);
    assert_eq!(fork.version, 1);
    assert_eq!(fork.created_at, fork.updated_at);
    assert!(fork.created_at >= before && fork.created_at <= after);
    assert_eq!(
        fork.metadata,
        metadata(json!({
            "connection": 7,
            "forkedFrom": {"conversationId": source.id, "messageId": at.id},
        }))
    );
    assert_eq!(store.get_conversation(&scope, fork.id).await.unwrap(), fork);

    let copied = path_of(&*store, &scope, fork.id).await;
    assert_eq!(
        read_view(&*store, &scope, fork.id, MessageView::All).await,
        copied,
        "the fork holds the path only"
    );
    assert_eq!(seqs(&copied), vec![1, 2, 3, 4, 5, 6]);
    for (copy, original) in copied.iter().zip(&original) {
        assert_eq!(copy.id, original.id);
        assert_eq!(copy.conversation_id, fork.id);
        assert_eq!(copy.role, original.role);
        assert_eq!(copy.content, original.content);
        assert_eq!(copy.tool_calls, original.tool_calls);
        assert_eq!(copy.tool_call_id, original.tool_call_id);
        assert_eq!(copy.metadata, original.metadata);
        assert_eq!(copy.created_at, original.created_at);
        assert_eq!(copy.siblings, Siblings::only(copy.id));
    }
    let next = add(&*store, &scope, fork.id, Parent::Head, "go on").await;
    assert_eq!((next.seq, next.parent_id), (7, Some(at.id)));

    // The source is unchanged.
    assert_eq!(
        store.get_conversation(&scope, source.id).await.unwrap(),
        source
    );
    assert_eq!(
        read_view(&*store, &scope, source.id, MessageView::All).await,
        source_tree
    );

    // At the head a2b (seq 7), whose path skips seq 6: the copies are renumbered.
    let head = source.head_id.unwrap();
    let short = store
        .fork_conversation(&scope, source.id, head)
        .await
        .unwrap();
    let copied = path_of(&*store, &scope, short.id).await;
    assert_eq!(contents(&copied), vec!["q1", "", "1", "a1", "q2", "a2b"]);
    assert_eq!(
        seqs(&copied),
        vec![1, 2, 3, 4, 5, 6],
        "seqs from 1, without gaps"
    );
    assert_eq!((short.last_seq, short.head_id), (6, Some(head)));
    assert_eq!(
        add(&*store, &scope, short.id, Parent::Head, "next")
            .await
            .seq,
        7
    );
    let untitled = chat_with_messages(&*store, &scope, 2).await;
    let first = path_of(&*store, &scope, untitled.id).await[0].id;
    let bare = store
        .fork_conversation(&scope, untitled.id, first)
        .await
        .unwrap();
    assert_eq!((bare.title, bare.title_source), (None, TitleSource::None));
    assert_eq!(bare.head_id, Some(first));
    let listed = list_all(&*store, &scope, ConversationQuery::new())
        .await
        .concat();
    for id in [fork.id, short.id, bare.id] {
        assert!(
            listed.iter().any(|c| c.id == id),
            "a fork is listed in its scope"
        );
    }
}

/// The window of a path that ends at an older message (`RecentQuery::leaf`), and
/// windows longer than their path.
pub async fn recent_messages_ending_at_a_leaf<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("recent-leaf");
    let chat = chat_with_messages(&*store, &scope, 6).await; // m1..m6
    let linear = path_of(&*store, &scope, chat.id).await;
    let m7 = add(
        &*store,
        &scope,
        chat.id,
        Parent::Message(linear[2].id),
        "m7",
    )
    .await;
    add(&*store, &scope, chat.id, Parent::Head, "m8").await;
    let window = |query: RecentQuery| {
        let store = Arc::clone(&store);
        let scope = scope.clone();
        async move {
            store
                .recent_messages(&scope, chat.id, &query)
                .await
                .unwrap()
        }
    };
    let at = |i: usize| linear[i].id;
    assert_eq!(
        contents(&window(RecentQuery::new(3).ending_at(at(4))).await),
        vec!["m3", "m4", "m5"]
    );
    assert_eq!(
        contents(&window(RecentQuery::new(50).ending_at(at(4))).await),
        vec!["m1", "m2", "m3", "m4", "m5"],
        "n larger than the path"
    );
    assert_eq!(
        contents(&window(RecentQuery::new(3).ending_at(at(5))).await),
        vec!["m4", "m5", "m6"],
        "a leaf off the active path"
    );
    assert_eq!(
        contents(&window(RecentQuery::new(50)).await),
        vec!["m1", "m2", "m3", "m7", "m8"]
    );
    assert_eq!(
        contents(&window(RecentQuery::new(2).ending_at(m7.id)).await),
        vec!["m3", "m7"],
        "a leaf that is not a leaf of the tree"
    );
    assert!(
        window(RecentQuery::new(0).ending_at(at(4)))
            .await
            .is_empty()
    );
    let siblings = window(RecentQuery::new(1).ending_at(at(3))).await;
    assert_eq!(siblings[0].siblings.ids, vec![at(3), m7.id]);
    assert_eq!(
        window(RecentQuery::new(1).ending_at(at(0))).await,
        vec![message(&*store, &scope, chat.id, at(0)).await]
    );
    let other = chat_with_messages(&*store, &scope, 1).await;
    let foreign = path_of(&*store, &scope, other.id).await[0].id;
    for leaf in [foreign, MessageId::new()] {
        assert_not_found(
            store
                .recent_messages(&scope, chat.id, &RecentQuery::new(5).ending_at(leaf))
                .await,
            "a leaf of another conversation",
        );
    }
}

/// `get_message` returns the message as stored, with its siblings, and only in its
/// own conversation and scope.
pub async fn get_message_round_trip<S: Store>(store: Arc<S>) {
    let scope = fresh_scope("get-message");
    let chat = new_chat(&*store, &scope).await;
    let call = ToolCall {
        id: "c1".into(),
        name: "lookup".into(),
        arguments: json!({"q": ["a", 1]}),
    };
    let appended = store
        .append_messages(
            &scope,
            chat.id,
            Append::new(vec![
                NewMessage::user("question").with_metadata(metadata(json!({"n": 1}))),
                NewMessage::assistant("calling").with_tool_calls(vec![call]),
                NewMessage::tool("c1", "result"),
            ]),
        )
        .await
        .unwrap();
    for stored in &appended.messages {
        assert_eq!(&message(&*store, &scope, chat.id, stored.id).await, stored);
    }
    let regenerated = add(
        &*store,
        &scope,
        chat.id,
        Parent::Message(appended.messages[0].id),
        "again",
    )
    .await;
    let read = message(&*store, &scope, chat.id, appended.messages[1].id).await;
    assert_eq!(
        read.siblings,
        Siblings {
            ids: vec![appended.messages[1].id, regenerated.id],
            count: 2,
            index: 0
        }
    );
    assert_eq!(
        Message {
            siblings: appended.messages[1].siblings.clone(),
            ..read
        },
        appended.messages[1],
        "only the siblings changed"
    );
    assert_eq!(
        message(&*store, &scope, chat.id, regenerated.id).await,
        regenerated
    );
    let other = new_chat(&*store, &scope).await;
    assert_not_found(
        store.get_message(&scope, other.id, regenerated.id).await,
        "a message of another conversation",
    );
    assert_not_found(
        store.get_message(&scope, chat.id, MessageId::new()).await,
        "an unknown message",
    );
    store
        .delete_conversation(&scope, chat.id, None)
        .await
        .unwrap();
    assert_not_found(
        store.get_message(&scope, chat.id, regenerated.id).await,
        "a message of a deleted conversation",
    );
}

// ---------------------------------------------------------------------------
// Isolation of the tree

/// Promises 1 and 10: a parent, head or message of another conversation or another
/// scope is `NotFound` for every method and writes nothing; message ids are unique
/// per conversation, so another conversation may hold the same id.
pub async fn tree_links_never_cross_conversations<S: Store>(store: Arc<S>) {
    let a = fresh_scope("tree-a");
    let b = fresh_scope("tree-b");
    let x = chat_with_messages(&*store, &a, 2).await;
    let y = chat_with_messages(&*store, &a, 1).await;
    let z = chat_with_messages(&*store, &b, 1).await;
    let x1 = path_of(&*store, &a, x.id).await[0].clone();
    let z1 = path_of(&*store, &b, z.id).await[0].clone();
    let snapshot = |scope: Scope, id: ConversationId| {
        let store = Arc::clone(&store);
        async move {
            (
                store.get_conversation(&scope, id).await.unwrap(),
                read_view(&*store, &scope, id, MessageView::All).await,
            )
        }
    };
    let before = [
        snapshot(a.clone(), x.id).await,
        snapshot(a.clone(), y.id).await,
        snapshot(b.clone(), z.id).await,
    ];

    for (foreign, what) in [(x1.id, "another conversation"), (z1.id, "another scope")] {
        assert_not_found(
            store
                .append_messages(
                    &a,
                    y.id,
                    Append::one(NewMessage::user("linked")).parent(Parent::Message(foreign)),
                )
                .await,
            &format!("a parent of {what}"),
        );
        assert_not_found(
            store
                .update_conversation(&a, y.id, ConversationPatch::new().head(foreign))
                .await,
            &format!("a head of {what}"),
        );
        assert_not_found(
            store.get_message(&a, y.id, foreign).await,
            &format!("get a message of {what}"),
        );
        assert_not_found(
            store.delete_message(&a, y.id, foreign, None).await,
            &format!("delete a message of {what}"),
        );
        assert_not_found(
            store.fork_conversation(&a, y.id, foreign).await,
            &format!("fork at a message of {what}"),
        );
        assert_not_found(
            store
                .recent_messages(&a, y.id, &RecentQuery::new(5).ending_at(foreign))
                .await,
            &format!("a window ending in {what}"),
        );
    }
    // The right conversation through the wrong scope.
    assert_not_found(store.get_message(&b, x.id, x1.id).await, "get via scope b");
    assert_not_found(
        store.delete_message(&b, x.id, x1.id, None).await,
        "delete via scope b",
    );
    assert_not_found(
        store.fork_conversation(&b, x.id, x1.id).await,
        "fork via scope b",
    );
    assert_not_found(
        store
            .update_conversation(&b, x.id, ConversationPatch::new().head(x1.id))
            .await,
        "switch via scope b",
    );
    assert_not_found(
        store
            .append_messages(
                &b,
                x.id,
                Append::one(NewMessage::user("in")).parent(Parent::Message(x1.id)),
            )
            .await,
        "append via scope b",
    );
    let after = [
        snapshot(a.clone(), x.id).await,
        snapshot(a.clone(), y.id).await,
        snapshot(b.clone(), z.id).await,
    ];
    assert_eq!(after, before, "nothing was written");
    for scope in [&a, &b] {
        let listed = list_all(
            &*store,
            scope,
            ConversationQuery::new().archived(ArchivedFilter::Include),
        )
        .await
        .concat();
        assert_eq!(
            listed.len(),
            if scope == &a { 2 } else { 1 },
            "no fork was made"
        );
    }

    // The same id in two conversations: each conversation resolves its own.
    let twin = store
        .append_messages(
            &a,
            y.id,
            Append::one(NewMessage::user("twin").with_id(x1.id)),
        )
        .await
        .unwrap()
        .messages
        .remove(0);
    assert_eq!((twin.id, twin.conversation_id), (x1.id, y.id));
    let child = add(&*store, &a, y.id, Parent::Message(x1.id), "under the twin").await;
    assert_eq!(child.conversation_id, y.id);
    assert_eq!(message(&*store, &a, y.id, x1.id).await.content, "twin");
    store.delete_message(&a, y.id, x1.id, None).await.unwrap();
    assert_not_found(
        store.get_message(&a, y.id, child.id).await,
        "the twin's child",
    );
    assert_eq!(
        snapshot(a.clone(), x.id).await,
        before[0],
        "x keeps its own"
    );
}
