//! The writes of conversations and their messages: create's parameters, update,
//! delete, append, branch, delete a message, fork, set a title. Each runs in a
//! transaction of [`crate::writer`], behind the conversation's row lock. The rules are
//! core's ([`conversation_core::backend`]); these functions read what they need, let
//! the rules decide, and write what was decided.

use std::collections::HashMap;

use conversation_core::backend::{
    AppendPlan, ResolvedParent, apply_automatic_title, check_expected_version, fork_of, stamp,
};
use conversation_core::{
    Append, Appended, Conversation, ConversationId, ConversationPatch, Error, Message, MessageId,
    Parent, Result, Scope, Siblings, TitleOutcome, TitleSource,
};
use serde_json::Value;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use crate::PostgresStore;
use crate::error::{db, message_not_found};
use crate::plans::Param;
use crate::rows::{self, count, get, to_i64};
use crate::search;
use crate::tree::{Children, Head, id_param};

impl PostgresStore {
    /// Inserts the plan's new messages (on the path, the first `depth + 1` deep after
    /// `siblings`) and writes the conversation's row, in one statement.
    async fn insert_chain(
        &self,
        conn: &mut PgConnection,
        plan: &AppendPlan,
        depth: u64,
        siblings: Children,
    ) -> Result<()> {
        const WHAT: &str = "append messages";
        let new: Vec<&Message> = plan.new_messages().collect();
        let conversation = plan.conversation();
        let mut columns = (
            Vec::with_capacity(new.len()),
            Vec::with_capacity(new.len()),
            Vec::with_capacity(new.len()),
            Vec::with_capacity(new.len()),
            Vec::with_capacity(new.len()),
        );
        for (i, message) in (0_u64..).zip(&new) {
            columns.0.push(to_i64(message.seq, "seq")?);
            columns.1.push(*message.id.as_uuid());
            columns.2.push(message.parent_id.map(Uuid::from));
            columns.3.push(to_i64(depth + 1 + i, "depth")?);
            columns.4.push(to_i64(
                if i == 0 { siblings.count } else { 0 },
                "sibling index",
            )?);
        }
        let tool_calls = new
            .iter()
            .map(|m| serde_json::to_value(&m.tool_calls))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::backend("append messages: encode tool calls", e))?;
        sqlx::query(AssertSqlSafe(self.sql.append.clone()))
            .bind(conversation.id.as_uuid())
            .bind(columns.0)
            .bind(columns.1)
            .bind(columns.2)
            .bind(columns.3)
            .bind(columns.4)
            .bind(new.iter().map(|m| m.role.as_str()).collect::<Vec<_>>())
            .bind(new.iter().map(|m| m.content.as_str()).collect::<Vec<_>>())
            .bind(tool_calls)
            .bind(
                new.iter()
                    .map(|m| m.tool_call_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                new.iter()
                    .map(|m| Value::Object(m.metadata.clone()))
                    .collect::<Vec<_>>(),
            )
            .bind(new.iter().map(|m| m.created_at).collect::<Vec<_>>())
            .bind(conversation.updated_at)
            .bind(to_i64(conversation.message_count, "message_count")?)
            .bind(to_i64(conversation.last_seq, "last_seq")?)
            .bind(conversation.head_id.map(Uuid::from))
            .bind(to_i64(conversation.version, "version")?)
            .bind(conversation.title.as_deref())
            .bind(conversation.title_source.as_str())
            .bind(siblings.last.map(|seq| to_i64(seq, "seq")).transpose()?)
            .bind(plan.head_seq().map(|seq| to_i64(seq, "seq")).transpose()?)
            .bind(to_i64(depth + new.len() as u64, "depth")?)
            .bind(
                new.iter()
                    .map(|m| search::words(conversation.scope.as_str(), &m.content))
                    .collect::<Vec<_>>(),
            )
            .bind(title_words(conversation))
            .execute(&mut *conn)
            .await
            .map_err(db(WHAT))?;
        Ok(())
    }
}

/// The `tsvector` literal of a conversation's title (empty without one).
pub(crate) fn title_words(conversation: &Conversation) -> String {
    search::words(
        conversation.scope.as_str(),
        conversation.title.as_deref().unwrap_or_default(),
    )
}

pub(crate) async fn append(
    store: &PostgresStore,
    conn: &mut PgConnection,
    scope: &Scope,
    id: ConversationId,
    append: Append,
) -> Result<Appended> {
    const WHAT: &str = "append messages";
    let (conversation, head) = store.lock(conn, scope, id, WHAT).await?;
    // Where the first message goes: its parent, its depth below it, and its place
    // among the parent's children (the last, so their number).
    let (parent, depth, siblings) = match (append.parent, head) {
        // The head is a leaf (every write leaves it on one): no children. Its place
        // was read with the lock, so an append after it reads nothing more.
        (Parent::Head, Some(head)) => {
            let parent = ResolvedParent::Message {
                id: head.id,
                seq: head.seq,
            };
            (parent, head.depth, Children::default())
        }
        (Parent::Message(message), _) => {
            let node = store.resolve(conn, id, message, WHAT).await?;
            let parent = ResolvedParent::Message {
                id: message,
                seq: node.seq,
            };
            (parent, node.depth, node.children)
        }
        (Parent::Head, None) => (ResolvedParent::Root, 0, Children::default()),
        (Parent::Root, _) => (ResolvedParent::Root, 0, store.roots(conn, id, WHAT).await?),
    };
    let caller_ids: Vec<Uuid> = append
        .messages
        .iter()
        .filter_map(|m| m.id.map(Uuid::from))
        .collect();
    let mut stored: HashMap<MessageId, Message> = HashMap::new();
    if !caller_ids.is_empty() {
        let found = sqlx::query(AssertSqlSafe(store.sql.stored_messages.clone()))
            .bind(id.as_uuid())
            .bind(&caller_ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(db(WHAT))?;
        for row in &found {
            if let Some(message) = rows::stored_message(row)? {
                stored.insert(message.id, message);
            }
        }
    }
    let existing = append
        .messages
        .iter()
        .map(|m| m.id.and_then(|mid| stored.get(&mid).cloned()))
        .collect();
    let old_head = conversation.head_id;
    let plan = AppendPlan::new(conversation, parent, append, existing, store.clock.now())?;
    let mut reread: Vec<i64> = stored
        .values()
        .map(|m| to_i64(m.seq, "seq"))
        .collect::<Result<_>>()?;
    if plan.writes() {
        if plan.parent().id() != old_head {
            // A branch: the path becomes the path to the parent, then the chain.
            store.move_path(conn, id, plan.parent().seq(), WHAT).await?;
        }
        if siblings.count > 0
            && let Some(first) = plan.new_messages().next()
        {
            reread.push(to_i64(first.seq, "seq")?);
        }
        store.insert_chain(conn, &plan, depth, siblings).await?;
    }
    let siblings = store.siblings_of(conn, id, reread, WHAT).await?;
    plan.into_appended(|message| {
        Ok(siblings
            .get(&message.id)
            .cloned()
            .unwrap_or_else(|| Siblings::only(message.id)))
    })
}

pub(crate) async fn update(
    store: &PostgresStore,
    conn: &mut PgConnection,
    scope: &Scope,
    id: ConversationId,
    patch: &ConversationPatch,
) -> Result<Conversation> {
    const WHAT: &str = "update conversation";
    let (mut conversation, old) = store.lock(conn, scope, id, WHAT).await?;
    let new_head = match patch.head_id {
        Some(target) => Some(
            store
                .newest_under(conn, id, target, None, WHAT)
                .await?
                .ok_or_else(message_not_found)?,
        ),
        None => None,
    };
    check_expected_version(patch.expected_version, conversation.version)?;
    let old_head = conversation.head_id;
    let at = stamp(&*store.clock, conversation.updated_at);
    patch.apply_to(
        &mut conversation,
        new_head.map(|head| head.id),
        at,
        &store.limits,
    )?;
    let head = match new_head {
        Some(head) => {
            if Some(head.id) != old_head {
                store.move_path(conn, id, Some(head.seq), WHAT).await?;
            }
            Some(head)
        }
        None => old,
    };
    let [head_id, head_seq, head_depth] = Head::params(head)?;
    let params = vec![
        Param::Id(*conversation.id.as_uuid()),
        Param::OptText(conversation.title.clone()),
        Param::Text(conversation.title_source.as_str().to_owned()),
        Param::Time(conversation.updated_at),
        Param::Bool(conversation.pinned),
        Param::Bool(conversation.archived),
        Param::Json(Value::Object(conversation.metadata.clone())),
        Param::Int(to_i64(conversation.version, "version")?),
        head_id,
        head_seq,
        head_depth,
        Param::OptTime(conversation.archived_at),
        Param::Text(title_words(&conversation)),
    ];
    PostgresStore::statement(&store.sql.update_conversation, params)
        .query(false)
        .execute(&mut *conn)
        .await
        .map_err(db(WHAT))?;
    Ok(conversation)
}

pub(crate) async fn delete_message(
    store: &PostgresStore,
    conn: &mut PgConnection,
    scope: &Scope,
    id: ConversationId,
    message: MessageId,
    expected_version: Option<u64>,
) -> Result<Conversation> {
    const WHAT: &str = "delete a message";
    let (mut conversation, old) = store.lock(conn, scope, id, WHAT).await?;
    let node = store.resolve(conn, id, message, WHAT).await?;
    check_expected_version(expected_version, conversation.version)?;
    // The head is in the subtree exactly when the message is on the path. It then
    // moves to the newest leaf left under the parent (which may be the parent),
    // or for a root to the newest message left.
    let head = if node.on_path {
        let head = match node.parent_id {
            Some(parent) => {
                store
                    .newest_under(conn, id, parent, Some(message), WHAT)
                    .await?
            }
            None => {
                let params = vec![Param::Id(*id.as_uuid()), Param::Id(*message.as_uuid())];
                let read = PostgresStore::statement(&store.sql.newest_outside, params);
                store.message_at(conn, read, WHAT).await?
            }
        };
        if let Some(head) = head {
            store.move_path(conn, id, Some(head.seq), WHAT).await?;
        }
        head
    } else {
        old
    };
    let at = stamp(&*store.clock, conversation.updated_at);
    let version = conversation.version + 1;
    let statement = match node.parent_id {
        Some(_) => &store.sql.delete_subtree,
        None => &store.sql.delete_root_subtree,
    };
    let [head_id, head_seq, head_depth] = Head::params(head)?;
    let params = vec![
        Param::Id(*id.as_uuid()),
        Param::Id(*message.as_uuid()),
        id_param(node.parent_id),
        Param::Int(to_i64(node.seq, "seq")?),
        head_id,
        Param::Int(to_i64(version, "version")?),
        Param::Time(at),
        head_seq,
        head_depth,
    ];
    let row = PostgresStore::statement(statement, params)
        .query(false)
        .fetch_one(&mut *conn)
        .await
        .map_err(db(WHAT))?;
    let left: i64 = get(&row, "message_count")?;
    conversation.message_count = count(left, "message_count")?;
    conversation.head_id = head.map(|head| head.id);
    conversation.version = version;
    conversation.updated_at = at;
    Ok(conversation)
}

pub(crate) async fn fork(
    store: &PostgresStore,
    conn: &mut PgConnection,
    scope: &Scope,
    id: ConversationId,
    message: MessageId,
) -> Result<Conversation> {
    const WHAT: &str = "fork a conversation";
    let (source, _) = store.lock(conn, scope, id, WHAT).await?;
    let node = store.resolve(conn, id, message, WHAT).await?;
    // The path to a message is as long as the message is deep.
    let fork = fork_of(
        &source,
        message,
        node.depth,
        message,
        &store.limits,
        store.clock.now(),
    )?;
    store
        .fork_read(id, node.seq, &fork)?
        .query(false)
        .execute(&mut *conn)
        .await
        .map_err(db(WHAT))?;
    Ok(fork)
}

pub(crate) async fn set_title(
    store: &PostgresStore,
    conn: &mut PgConnection,
    scope: &Scope,
    id: ConversationId,
    title: String,
    source: TitleSource,
) -> Result<TitleOutcome> {
    const WHAT: &str = "set an automatic title";
    let (mut conversation, _) = store.lock(conn, scope, id, WHAT).await?;
    let applied = apply_automatic_title(&mut conversation, title, source);
    if applied {
        sqlx::query(AssertSqlSafe(store.sql.set_title.clone()))
            .bind(id.as_uuid())
            .bind(conversation.title.as_deref())
            .bind(conversation.title_source.as_str())
            .bind(to_i64(conversation.version, "version")?)
            .bind(title_words(&conversation))
            .execute(&mut *conn)
            .await
            .map_err(db(WHAT))?;
    }
    Ok(TitleOutcome {
        conversation,
        applied,
    })
}

/// The parameters of [`crate::sql::Statements::insert_conversation`]: the columns of
/// [`crate::sql::CONVERSATION_COLUMNS`] and the title's words.
pub(crate) fn insert_params(c: &Conversation) -> Result<Vec<Param>> {
    Ok(vec![
        Param::Id(*c.id.as_uuid()),
        Param::Text(c.scope.as_str().to_owned()),
        Param::OptText(c.title.clone()),
        Param::Text(c.title_source.as_str().to_owned()),
        Param::Time(c.created_at),
        Param::Time(c.updated_at),
        Param::Int(to_i64(c.message_count, "message_count")?),
        Param::Int(to_i64(c.last_seq, "last_seq")?),
        id_param(c.head_id),
        Param::Bool(c.pinned),
        Param::Bool(c.archived),
        Param::Json(Value::Object(c.metadata.clone())),
        Param::Int(to_i64(c.version, "version")?),
        Param::OptTime(c.archived_at),
        crate::tree::id_param_run(c.active_run_id),
        Param::Int(to_i64(c.usage.prompt_tokens, "prompt_tokens")?),
        Param::Int(to_i64(c.usage.completion_tokens, "completion_tokens")?),
        Param::Int(to_i64(c.usage.total_tokens, "total_tokens")?),
        Param::Text(title_words(c)),
    ])
}

pub(crate) async fn delete(
    store: &PostgresStore,
    conn: &mut PgConnection,
    scope: &Scope,
    id: ConversationId,
    expected_version: Option<u64>,
) -> Result<()> {
    const WHAT: &str = "delete conversation";
    let (conversation, _) = store.lock(conn, scope, id, WHAT).await?;
    check_expected_version(expected_version, conversation.version)?;
    PostgresStore::statement(&store.sql.delete_locked, vec![Param::Id(*id.as_uuid())])
        .query(false)
        .execute(&mut *conn)
        .await
        .map_err(db(WHAT))?;
    Ok(())
}
