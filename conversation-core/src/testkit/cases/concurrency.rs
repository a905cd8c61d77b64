//! Many writers on one message tree at once.

use std::collections::HashMap;

use proptest::prelude::RngExt as _;
use proptest::test_runner::{RngAlgorithm, TestRng};

use super::*;

/// Checks a conversation's tree after concurrent writes, against what the writers
/// were told: `acknowledged` holds every message an append returned (as returned),
/// `deleted` every message a deletion reported deleted.
///
/// A message is stored exactly when neither it nor any of its ancestors was deleted
/// (an append under a message deleted before it fails, so an acknowledged message
/// under a deleted one was deleted with it); no stored message lacks its parent; seqs
/// are those assigned, each once; the head is a stored leaf and the path leads to it.
async fn assert_tree_whole<S: Store>(
    store: &S,
    scope: &Scope,
    chat: ConversationId,
    acknowledged: &[Message],
    deleted: &HashSet<MessageId>,
) {
    let conversation = store.get_conversation(scope, chat).await.unwrap();
    let all = read_view(store, scope, chat, MessageView::All).await;
    let stored: HashMap<MessageId, &Message> = all.iter().map(|m| (m.id, m)).collect();
    assert_eq!(stored.len(), all.len(), "a message is listed twice");
    assert_eq!(conversation.message_count, all.len() as u64);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "seqs increase");

    let mut assigned: Vec<u64> = seqs(acknowledged);
    assigned.sort_unstable();
    assert!(
        assigned.windows(2).all(|w| w[0] < w[1]),
        "a seq was given to two messages"
    );
    assert_eq!(
        assigned,
        (1..=conversation.last_seq).collect::<Vec<_>>(),
        "every seq up to last_seq was assigned once"
    );

    let parents: HashMap<MessageId, Option<MessageId>> =
        acknowledged.iter().map(|m| (m.id, m.parent_id)).collect();
    for message in acknowledged {
        let mut gone = false;
        let mut at = Some(message.id);
        while let Some(id) = at {
            gone |= deleted.contains(&id);
            at = parents[&id];
        }
        match stored.get(&message.id) {
            Some(read) => {
                assert!(
                    !gone,
                    "{} outlived the deletion of an ancestor",
                    read.content
                );
                assert_eq!(
                    (read.seq, read.parent_id, &read.content),
                    (message.seq, message.parent_id, &message.content)
                );
            }
            None => assert!(gone, "acknowledged message {} was lost", message.content),
        }
    }
    for message in &all {
        if let Some(parent) = message.parent_id {
            let parent = stored
                .get(&parent)
                .unwrap_or_else(|| panic!("{} lost its parent", message.content));
            assert!(parent.seq < message.seq);
        }
        let siblings: Vec<MessageId> = all
            .iter()
            .filter(|m| m.parent_id == message.parent_id)
            .map(|m| m.id)
            .collect();
        assert_eq!(message.siblings.count, siblings.len() as u64);
        assert_eq!(
            siblings.get(message.siblings.index as usize),
            Some(&message.id)
        );
    }
    match conversation.head_id {
        None => assert!(all.is_empty(), "a conversation with messages has a head"),
        Some(head) => {
            assert!(stored.contains_key(&head), "the head is a stored message");
            assert!(
                !all.iter().any(|m| m.parent_id == Some(head)),
                "the head is a leaf"
            );
        }
    }
    path_of(store, scope, chat).await;
}

/// Picks a random message of the tree among the newest 200, sparing seqs up to
/// `spare`.
async fn pick<S: Store>(
    store: &S,
    scope: &Scope,
    chat: ConversationId,
    rng: &mut TestRng,
    spare: u64,
) -> Option<MessageId> {
    let page = store
        .list_messages(
            scope,
            chat,
            &MessageQuery::latest().limit(200).view(MessageView::All),
        )
        .await
        .unwrap();
    let candidates: Vec<&Message> = page.items.iter().filter(|m| m.seq > spare).collect();
    (!candidates.is_empty()).then(|| candidates[rng.random_range(0..candidates.len())].id)
}

#[derive(Debug, Clone, Copy)]
enum Writer {
    /// Appends one or two messages after the head.
    Appender,
    /// Appends under a random message.
    Brancher,
    /// Switches to a random message.
    Switcher,
    /// Deletes a random message (not one of the first five).
    Deleter,
}

/// Promises 2, 3 and 10 under concurrency: tasks appending at the head, branching at
/// random messages, switching and deleting on one conversation at once never lose
/// an acknowledged message that was not deleted, never leave an orphan, never reuse a
/// seq, and leave the head on a stored leaf.
pub async fn concurrent_tree_writes_keep_the_tree_whole<S: Store>(store: Arc<S>) {
    const ROUNDS: usize = 30;
    let scope = fresh_scope("tree-concurrent");
    let chat = chat_with_messages(&*store, &scope, 10).await;
    let seed = read_view(&*store, &scope, chat.id, MessageView::All).await;
    let writers = [
        Writer::Appender,
        Writer::Appender,
        Writer::Brancher,
        Writer::Brancher,
        Writer::Switcher,
        Writer::Deleter,
    ];
    let mut tasks = Vec::new();
    for (task, writer) in writers.into_iter().enumerate() {
        let store = Arc::clone(&store);
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[task as u8 + 1; 32]);
            let mut appended: Vec<Message> = Vec::new();
            let mut deleted: Vec<MessageId> = Vec::new();
            let rounds = if matches!(writer, Writer::Deleter) {
                ROUNDS / 3
            } else {
                ROUNDS
            };
            for round in 0..rounds {
                tokio::task::yield_now().await;
                let text = format!("w{task}-{round}");
                match writer {
                    Writer::Appender => {
                        let batch = (0..rng.random_range(1..=2usize))
                            .map(|k| NewMessage::user(format!("{text}-{k}")))
                            .collect();
                        let done = store
                            .append_messages(&scope, chat.id, Append::new(batch))
                            .await
                            .unwrap();
                        appended.extend(done.messages);
                    }
                    Writer::Brancher => {
                        let Some(parent) = pick(&*store, &scope, chat.id, &mut rng, 0).await else {
                            continue;
                        };
                        let append =
                            Append::one(NewMessage::user(text)).parent(Parent::Message(parent));
                        match store.append_messages(&scope, chat.id, append).await {
                            Ok(done) => appended.extend(done.messages),
                            Err(Error::NotFound { .. }) => {} // deleted meanwhile
                            Err(other) => panic!("branch: {other:?}"),
                        }
                    }
                    Writer::Switcher => {
                        let Some(target) = pick(&*store, &scope, chat.id, &mut rng, 0).await else {
                            continue;
                        };
                        let patch = ConversationPatch::new().head(target);
                        match store.update_conversation(&scope, chat.id, patch).await {
                            Ok(_) | Err(Error::NotFound { .. }) => {}
                            Err(other) => panic!("switch: {other:?}"),
                        }
                    }
                    Writer::Deleter => {
                        // Seqs 6 to 10 are there from the start: never nothing to delete.
                        let Some(target) = pick(&*store, &scope, chat.id, &mut rng, 5).await else {
                            continue;
                        };
                        match store.delete_message(&scope, chat.id, target, None).await {
                            Ok(_) => deleted.push(target),
                            Err(Error::NotFound { .. }) => {}
                            Err(other) => panic!("delete: {other:?}"),
                        }
                    }
                }
            }
            (appended, deleted)
        }));
    }
    let mut acknowledged = seed;
    let mut deleted = HashSet::new();
    for task in tasks {
        let (appended, gone) = task.await.unwrap();
        acknowledged.extend(appended);
        deleted.extend(gone);
    }
    // Only the deleter deletes, so its first pick was there to delete.
    assert!(!deleted.is_empty(), "the deleter deleted something");
    assert_tree_whole(&*store, &scope, chat.id, &acknowledged, &deleted).await;
}

/// Promise 10: a deletion racing an append under the deleted message never leaves an
/// orphan: the append lands first and goes with the subtree, or fails `NotFound`.
pub async fn delete_racing_an_append_under_it<S: Store>(store: Arc<S>) {
    const ROUNDS: usize = 25;
    let scope = fresh_scope("delete-race");
    let chat = chat_with_messages(&*store, &scope, 2).await;
    let mut acknowledged = read_view(&*store, &scope, chat.id, MessageView::All).await;
    let mut deleted = HashSet::new();
    for round in 0..ROUNDS {
        let pair = store
            .append_messages(
                &scope,
                chat.id,
                Append::new(vec![
                    NewMessage::user(format!("q{round}")),
                    NewMessage::assistant(format!("a{round}")),
                ]),
            )
            .await
            .unwrap()
            .messages;
        let (question, answer) = (pair[0].id, pair[1].id);
        acknowledged.extend(pair);
        let deletion = {
            let store = Arc::clone(&store);
            let scope = scope.clone();
            tokio::spawn(async move { store.delete_message(&scope, chat.id, question, None).await })
        };
        let [under, at_head] = [Parent::Message(answer), Parent::Head].map(|parent| {
            let store = Arc::clone(&store);
            let scope = scope.clone();
            let append = Append::one(NewMessage::user(format!("r{round}"))).parent(parent);
            tokio::spawn(async move { store.append_messages(&scope, chat.id, append).await })
        });
        deletion.await.unwrap().unwrap();
        deleted.insert(question);
        match under.await.unwrap() {
            Ok(done) => acknowledged.extend(done.messages),
            Err(Error::NotFound { .. }) => {}
            Err(other) => panic!("append under the deleted message: {other:?}"),
        }
        // The head always exists (or the conversation is empty): this one never fails.
        acknowledged.extend(at_head.await.unwrap().unwrap().messages);
        for landed in acknowledged.iter().filter(|m| m.parent_id == Some(answer)) {
            assert_not_found(
                store.get_message(&scope, chat.id, landed.id).await,
                "an append under a deleted message",
            );
        }
    }
    assert_tree_whole(&*store, &scope, chat.id, &acknowledged, &deleted).await;
}
