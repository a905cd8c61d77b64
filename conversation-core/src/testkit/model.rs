//! The property test: random operation sequences against a store and a plain model.

use std::collections::HashMap;
use std::future::Future;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::{
    ArchivedFilter, Conversation, ConversationId, ConversationPatch, ConversationQuery, Error,
    Message, MessageId, MessageQuery, NewConversation, NewMessage, Role, Scope, Store, TitleSource,
    automatic_title_applies,
};

/// One operation of a generated sequence. Conversation indexes pick among the ids
/// created so far (deleted ones included), modulo their number.
#[derive(Debug, Clone)]
enum Op {
    Create {
        scope: usize,
        title: Option<String>,
    },
    Append {
        chat: usize,
        roles: Vec<Role>,
        retry_last: bool,
        with_ids: bool,
    },
    Update {
        chat: usize,
        title: Option<String>,
        pinned: Option<bool>,
        archived: Option<bool>,
        stale: bool,
    },
    AutoTitle {
        chat: usize,
        title: String,
        generated: bool,
    },
    Delete {
        chat: usize,
    },
    Get {
        chat: usize,
        wrong_scope: bool,
    },
    List {
        scope: usize,
        pinned_first: bool,
        archived: usize,
        limit: u32,
        filter: Option<String>,
    },
    Messages {
        chat: usize,
        after: Option<u64>,
        before: Option<u64>,
        limit: u32,
    },
    Recent {
        chat: usize,
        n: usize,
    },
}

fn title_text() -> impl Strategy<Value = String> {
    // ASCII case pairs, a non-ASCII letter and SQL wildcards, to test the filter.
    proptest::string::string_regex("[aAbB é%_]{1,6}")
        .expect("valid regex")
        .prop_filter("not blank", |t| !t.trim().is_empty())
}

fn op() -> impl Strategy<Value = Op> {
    let chat = 0usize..64;
    prop_oneof![
        3 => (0usize..2, proptest::option::of(title_text()))
            .prop_map(|(scope, title)| Op::Create { scope, title }),
        5 => (
            chat.clone(),
            proptest::collection::vec(
                prop_oneof![Just(Role::User), Just(Role::Assistant), Just(Role::System)],
                1..4
            ),
            proptest::bool::weighted(0.2),
            any::<bool>()
        )
            .prop_map(|(chat, roles, retry_last, with_ids)| Op::Append {
                chat,
                roles,
                retry_last,
                with_ids
            }),
        2 => (
            chat.clone(),
            proptest::option::of(title_text()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::bool::weighted(0.2)
        )
            .prop_map(|(chat, title, pinned, archived, stale)| Op::Update {
                chat,
                title,
                pinned,
                archived,
                stale
            }),
        1 => (chat.clone(), title_text(), any::<bool>())
            .prop_map(|(chat, title, generated)| Op::AutoTitle { chat, title, generated }),
        1 => chat.clone().prop_map(|chat| Op::Delete { chat }),
        1 => (chat.clone(), any::<bool>())
            .prop_map(|(chat, wrong_scope)| Op::Get { chat, wrong_scope }),
        3 => (
            0usize..2,
            any::<bool>(),
            0usize..3,
            1u32..5,
            proptest::option::of(prop_oneof![
                Just("a".to_owned()),
                Just("B".to_owned()),
                Just("%".to_owned()),
                Just("_".to_owned()),
                Just("é".to_owned())
            ])
        )
            .prop_map(|(scope, pinned_first, archived, limit, filter)| Op::List {
                scope,
                pinned_first,
                archived,
                limit,
                filter
            }),
        2 => (
            chat.clone(),
            proptest::option::of(0u64..12),
            proptest::option::of(0u64..14),
            1u32..6
        )
            .prop_map(|(chat, after, before, limit)| Op::Messages { chat, after, before, limit }),
        1 => (chat, 0usize..8).prop_map(|(chat, n)| Op::Recent { chat, n }),
    ]
}

/// What the model knows of one conversation.
#[derive(Debug, Clone)]
struct ModelChat {
    conversation: Conversation,
    messages: Vec<Message>,
    last_batch: Vec<NewMessage>,
    deleted: bool,
}

#[derive(Debug, Default)]
struct Model {
    chats: HashMap<ConversationId, ModelChat>,
    order: Vec<ConversationId>,
}

impl Model {
    fn pick(&self, index: usize) -> Option<ConversationId> {
        (!self.order.is_empty()).then(|| self.order[index % self.order.len()])
    }

    fn live(&self, id: ConversationId) -> Option<&ModelChat> {
        self.chats.get(&id).filter(|c| !c.deleted)
    }
}

fn expect_not_found<T: std::fmt::Debug>(result: crate::Result<T>, op: &Op) {
    assert!(
        matches!(result, Err(Error::NotFound { .. })),
        "{op:?}: expected NotFound, got {result:?}"
    );
}

async fn run<S: Store>(store: S, ops: Vec<Op>) {
    let scopes = [
        Scope::new(format!("model-a-{}", uuid::Uuid::now_v7())).unwrap(),
        Scope::new(format!("model-b-{}", uuid::Uuid::now_v7())).unwrap(),
    ];
    let mut model = Model::default();
    for op in ops {
        match &op {
            Op::Create { scope, title } => {
                let mut new = NewConversation::new();
                new.title = title.clone();
                let created = store
                    .create_conversation(&scopes[*scope], new)
                    .await
                    .unwrap();
                assert_eq!(created.title, *title);
                assert_eq!(created.message_count, 0);
                assert_eq!(created.version, 1);
                model.order.push(created.id);
                model.chats.insert(
                    created.id,
                    ModelChat {
                        conversation: created,
                        messages: Vec::new(),
                        last_batch: Vec::new(),
                        deleted: false,
                    },
                );
            }
            Op::Append {
                chat,
                roles,
                retry_last,
                with_ids,
            } => {
                let Some(id) = model.pick(*chat) else {
                    continue;
                };
                let entry = &model.chats[&id];
                let scope = entry.conversation.scope.clone();
                let retry = *retry_last && !entry.last_batch.is_empty();
                let batch: Vec<NewMessage> = if retry {
                    entry.last_batch.clone()
                } else {
                    roles
                        .iter()
                        .enumerate()
                        .map(|(i, role)| {
                            let message =
                                NewMessage::new(*role, format!("{} #{i}", entry.messages.len()));
                            if *with_ids {
                                message.with_id(MessageId::new())
                            } else {
                                message
                            }
                        })
                        .collect()
                };
                let result = store.append_messages(&scope, id, batch.clone(), None).await;
                if entry.deleted {
                    expect_not_found(result, &op);
                    continue;
                }
                let appended = result.unwrap();
                let entry = model.chats.get_mut(&id).unwrap();
                let all_known = batch.iter().all(|m| {
                    m.id.is_some_and(|mid| entry.messages.iter().any(|s| s.id == mid))
                });
                if all_known {
                    assert_eq!(
                        appended.conversation, entry.conversation,
                        "{op:?}: retry wrote"
                    );
                    for (stored, sent) in appended.messages.iter().zip(&batch) {
                        assert_eq!(Some(stored.id), sent.id);
                    }
                    continue;
                }
                let before = entry.conversation.clone();
                for (stored, sent) in appended.messages.iter().zip(&batch) {
                    let known = sent
                        .id
                        .and_then(|mid| entry.messages.iter().find(|s| s.id == mid).cloned());
                    match known {
                        Some(existing) => assert_eq!(*stored, existing),
                        None => {
                            assert_eq!(stored.seq, entry.messages.len() as u64 + 1, "{op:?}");
                            assert_eq!(stored.content, sent.content);
                            assert_eq!(stored.role, sent.role);
                            if let Some(mid) = sent.id {
                                assert_eq!(stored.id, mid);
                            }
                            entry.messages.push(stored.clone());
                        }
                    }
                }
                let after = &appended.conversation;
                assert_eq!(after.message_count, entry.messages.len() as u64);
                assert_eq!(after.version, before.version + 1);
                assert!(after.updated_at >= before.updated_at);
                let mut expected = before;
                expected.message_count = after.message_count;
                expected.version = after.version;
                expected.updated_at = after.updated_at;
                assert_eq!(*after, expected, "{op:?}: append changed other fields");
                entry.conversation = after.clone();
                entry.last_batch = batch;
            }
            Op::Update {
                chat,
                title,
                pinned,
                archived,
                stale,
            } => {
                let Some(id) = model.pick(*chat) else {
                    continue;
                };
                let entry = &model.chats[&id];
                let scope = entry.conversation.scope.clone();
                let mut patch = ConversationPatch {
                    title: title.clone(),
                    pinned: *pinned,
                    archived: *archived,
                    ..ConversationPatch::default()
                };
                if *stale {
                    patch.expected_version = Some(entry.conversation.version + 3);
                }
                let result = store.update_conversation(&scope, id, patch.clone()).await;
                if entry.deleted {
                    expect_not_found(result, &op);
                    continue;
                }
                let entry = model.chats.get_mut(&id).unwrap();
                if *stale {
                    match result {
                        Err(Error::Conflict { actual, .. }) => {
                            assert_eq!(actual, entry.conversation.version);
                        }
                        other => panic!("{op:?}: expected Conflict, got {other:?}"),
                    }
                    continue;
                }
                let updated = result.unwrap();
                let mut expected = entry.conversation.clone();
                patch.apply_to(&mut expected, updated.updated_at);
                assert_eq!(updated, expected, "{op:?}");
                assert!(updated.updated_at >= entry.conversation.updated_at);
                entry.conversation = updated;
            }
            Op::AutoTitle {
                chat,
                title,
                generated,
            } => {
                let Some(id) = model.pick(*chat) else {
                    continue;
                };
                let entry = &model.chats[&id];
                let scope = entry.conversation.scope.clone();
                let source = if *generated {
                    TitleSource::Generated
                } else {
                    TitleSource::Heuristic
                };
                let result = store
                    .set_title_unless_user(&scope, id, title.clone(), source)
                    .await;
                if entry.deleted {
                    expect_not_found(result, &op);
                    continue;
                }
                let outcome = result.unwrap();
                let entry = model.chats.get_mut(&id).unwrap();
                let applies = automatic_title_applies(entry.conversation.title_source, source);
                assert_eq!(outcome.applied, applies, "{op:?}");
                if applies {
                    entry.conversation.title = Some(title.clone());
                    entry.conversation.title_source = source;
                    entry.conversation.version += 1;
                }
                assert_eq!(outcome.conversation, entry.conversation, "{op:?}");
            }
            Op::Delete { chat } => {
                let Some(id) = model.pick(*chat) else {
                    continue;
                };
                let entry = model.chats.get_mut(&id).unwrap();
                let result = store
                    .delete_conversation(&entry.conversation.scope, id)
                    .await;
                if entry.deleted {
                    expect_not_found(result, &op);
                } else {
                    result.unwrap();
                    entry.deleted = true;
                }
            }
            Op::Get { chat, wrong_scope } => {
                let Some(id) = model.pick(*chat) else {
                    continue;
                };
                let entry = &model.chats[&id];
                let scope = if *wrong_scope {
                    scopes
                        .iter()
                        .find(|s| **s != entry.conversation.scope)
                        .unwrap()
                } else {
                    &entry.conversation.scope
                };
                let result = store.get_conversation(scope, id).await;
                if entry.deleted || *wrong_scope {
                    expect_not_found(result, &op);
                } else {
                    assert_eq!(result.unwrap(), entry.conversation);
                }
            }
            Op::List {
                scope,
                pinned_first,
                archived,
                limit,
                filter,
            } => {
                let archived = [
                    ArchivedFilter::Exclude,
                    ArchivedFilter::Include,
                    ArchivedFilter::Only,
                ][*archived];
                let mut query = ConversationQuery::new()
                    .pinned_first(*pinned_first)
                    .archived(archived)
                    .limit(*limit);
                query.title_contains = filter.clone();
                let needle = query.title_filter().unwrap();
                let mut expected: Vec<Conversation> = model
                    .order
                    .iter()
                    .filter_map(|id| model.live(*id))
                    .map(|c| c.conversation.clone())
                    .filter(|c| c.scope == scopes[*scope] && query.admits(c, needle.as_deref()))
                    .collect();
                expected.sort_by(|a, b| query.list_order(a, b));
                let mut listed = Vec::new();
                loop {
                    let page = store
                        .list_conversations(&scopes[*scope], &query)
                        .await
                        .unwrap();
                    assert!(page.items.len() <= *limit as usize);
                    listed.extend(page.items);
                    match page.next_cursor {
                        Some(cursor) => query.cursor = Some(cursor),
                        None => break,
                    }
                }
                assert_eq!(listed, expected, "{op:?}");
            }
            Op::Messages {
                chat,
                after,
                before,
                limit,
            } => {
                let Some(id) = model.pick(*chat) else {
                    continue;
                };
                let entry = &model.chats[&id];
                let query = MessageQuery {
                    after: *after,
                    before: *before,
                    limit: Some(*limit),
                };
                let result = store
                    .list_messages(&entry.conversation.scope, id, &query)
                    .await;
                if entry.deleted {
                    expect_not_found(result, &op);
                    continue;
                }
                let page = result.unwrap();
                let range = query.range().unwrap();
                let inside: Vec<&Message> = entry
                    .messages
                    .iter()
                    .filter(|m| range.contains(m.seq))
                    .collect();
                let take = inside.len().min(range.limit);
                let expected: Vec<Message> = if range.newest_first {
                    inside[inside.len() - take..]
                        .iter()
                        .map(|m| (*m).clone())
                        .collect()
                } else {
                    inside[..take].iter().map(|m| (*m).clone()).collect()
                };
                assert_eq!(page.items, expected, "{op:?}");
                assert_eq!(page.has_more, inside.len() > take, "{op:?}");
            }
            Op::Recent { chat, n } => {
                let Some(id) = model.pick(*chat) else {
                    continue;
                };
                let entry = &model.chats[&id];
                let result = store
                    .recent_messages(&entry.conversation.scope, id, *n)
                    .await;
                if entry.deleted {
                    expect_not_found(result, &op);
                    continue;
                }
                let start = entry.messages.len().saturating_sub(*n);
                assert_eq!(result.unwrap(), entry.messages[start..], "{op:?}");
            }
        }
    }
}

/// Runs random operation sequences (up to 40 operations, 32 sequences unless
/// `PROPTEST_CASES` is set) against fresh stores from `factory` and a reference
/// model, comparing every result; panics with the shortest failing sequence.
pub fn check_against_model<F, Fut, S>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
    S: Store,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(op(), 1..40);
    let result = runner.run(&strategy, |ops| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime");
        runtime.block_on(async {
            let store = factory().await;
            run(store, ops).await;
        });
        Ok(())
    });
    if let Err(failure) = result {
        panic!("the store disagrees with the model: {failure}");
    }
}
