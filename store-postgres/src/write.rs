//! The write transactions. Each one is `READ COMMITTED` and takes the conversation's
//! row lock first (`SELECT … FOR NO KEY UPDATE`), so that appends, branches, switches,
//! deletions, forks and titles of one conversation run one after the other, across
//! processes; every transaction takes that one row lock before any other, so there is
//! no lock cycle to deadlock on. The rules are core's
//! ([`conversation_core::backend`]); these functions read what they need, let the
//! rules decide, and write what was decided.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use conversation_core::backend::{
    AppendPlan, ResolvedParent, apply_automatic_title, check_expected_version, fork_of, lease_end,
    stamp, truncate_to_millis,
};
use conversation_core::{
    Append, Appended, Conversation, ConversationId, ConversationPatch, Entity, Error,
    ImportOutcome, ImportedConversation, Message, MessageId, NewRun, Parent, Result, Run, RunId,
    RunOutcome, RunStatus, Scope, Siblings, TitleOutcome, TitleSource,
};
use serde_json::Value;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Postgres, Transaction};
use uuid::Uuid;

use crate::PostgresStore;
use crate::error::{db, message_not_found};
use crate::plans::{Param, Read};
use crate::rows::{self, count, get, to_i64};
use crate::search;
use crate::tree::{Children, Head, id_param};

impl PostgresStore {
    pub(crate) async fn begin(&self, what: &'static str) -> Result<Transaction<'static, Postgres>> {
        // Explicit, whatever the server's default_transaction_isolation: the row lock
        // plus a fresh snapshot per statement is what keeps seq gap-free and the tree
        // whole without serialization failures.
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(db(what))
    }

    /// Commits on success, rolls back (at once, releasing the row lock) on failure.
    pub(crate) async fn finish<T>(
        tx: Transaction<'static, Postgres>,
        outcome: Result<T>,
        what: &'static str,
    ) -> Result<T> {
        match outcome {
            Ok(value) => {
                tx.commit().await.map_err(db(what))?;
                Ok(value)
            }
            Err(err) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(target: "conversation_store_postgres", %rollback, "rollback failed; the connection is discarded");
                }
                Err(err)
            }
        }
    }

    /// Locks and reads a conversation row, with its head's place, for the rest of the
    /// transaction.
    async fn lock(
        &self,
        conn: &mut PgConnection,
        scope: &Scope,
        id: ConversationId,
        what: &'static str,
    ) -> Result<(Conversation, Option<Head>)> {
        let row = Read::new(self.sql.lock.clone())
            .param(Param::Id(*id.as_uuid()))
            .param(Param::Text(scope.as_str().to_owned()))
            .query(false)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db(what))?
            .ok_or_else(Error::conversation_not_found)?;
        let conversation = rows::conversation(&row)?;
        let seq: Option<i64> = get(&row, "head_seq")?;
        let depth: Option<i64> = get(&row, "head_depth")?;
        let head = match (conversation.head_id, seq, depth) {
            (Some(id), Some(seq), Some(depth)) => Some(Head {
                id,
                seq: count(seq, "head_seq")?,
                depth: count(depth, "head_depth")?,
            }),
            _ => None,
        };
        Ok((conversation, head))
    }

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

fn run_not_found() -> Error {
    Error::NotFound {
        entity: Entity::Run,
    }
}

/// A run of the locked conversation, as stored (not settled).
async fn stored_run(
    store: &PostgresStore,
    conn: &mut PgConnection,
    id: ConversationId,
    run: RunId,
    what: &'static str,
) -> Result<Option<Run>> {
    let row = PostgresStore::statement(
        &store.sql.run,
        vec![Param::Id(*id.as_uuid()), Param::Id(*run.as_uuid())],
    )
    .query(false)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db(what))?;
    match row {
        Some(row) => rows::run(&row),
        None => Ok(None),
    }
}

/// Writes a run, every column.
async fn write_run(
    store: &PostgresStore,
    conn: &mut PgConnection,
    run: &Run,
    what: &'static str,
) -> Result<()> {
    let error = run
        .error
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| Error::backend(format!("{what}: encode the run's error"), e))?;
    let pending = serde_json::to_value(&run.pending_tool_calls)
        .map_err(|e| Error::backend(format!("{what}: encode the pending tool calls"), e))?;
    let params = vec![
        Param::Id(*run.id.as_uuid()),
        Param::Id(*run.conversation_id.as_uuid()),
        Param::Text(run.status.as_str().to_owned()),
        Param::Time(run.started_at),
        Param::OptTime(run.finished_at),
        Param::Time(run.lease_until),
        Param::Bool(run.cancel_requested),
        Param::Int(i64::from(run.steps)),
        Param::Int(to_i64(run.usage.prompt_tokens, "prompt_tokens")?),
        Param::Int(to_i64(run.usage.completion_tokens, "completion_tokens")?),
        Param::Int(to_i64(run.usage.total_tokens, "total_tokens")?),
        Param::OptJson(error),
        Param::Json(pending),
    ];
    PostgresStore::statement(&store.sql.upsert_run, params)
        .query(false)
        .execute(&mut *conn)
        .await
        .map_err(db(what))?;
    Ok(())
}

/// Writes the run columns of the locked conversation: `active_run_id` and the usage.
async fn write_run_columns(
    store: &PostgresStore,
    conn: &mut PgConnection,
    c: &Conversation,
    what: &'static str,
) -> Result<()> {
    let params = vec![
        Param::Id(*c.id.as_uuid()),
        crate::tree::id_param_run(c.active_run_id),
        Param::Int(to_i64(c.usage.prompt_tokens, "prompt_tokens")?),
        Param::Int(to_i64(c.usage.completion_tokens, "completion_tokens")?),
        Param::Int(to_i64(c.usage.total_tokens, "total_tokens")?),
    ];
    PostgresStore::statement(&store.sql.set_run_columns, params)
        .query(false)
        .execute(&mut *conn)
        .await
        .map_err(db(what))?;
    Ok(())
}

pub(crate) async fn start_run(
    store: &PostgresStore,
    conn: &mut PgConnection,
    scope: &Scope,
    id: ConversationId,
    new: NewRun,
) -> Result<Run> {
    const WHAT: &str = "start a run";
    let (mut conversation, _) = store.lock(conn, scope, id, WHAT).await?;
    // Read after the lock: the time of a write that follows every earlier one.
    let now = truncate_to_millis(store.clock.now());
    if let Some(existing) = stored_run(store, conn, id, new.id, WHAT).await? {
        // A retried start: answered from storage, never started again.
        return Ok(existing.settled(now));
    }
    if let Some(active) = conversation.active_run_id
        && let Some(run) = stored_run(store, conn, id, active, WHAT).await?
    {
        if run.is_live(now) {
            return Err(Error::RunInProgress { run_id: active });
        }
        // Abandoned: it stays failed from now on.
        let settled = run.clone().settled(now);
        if settled != run {
            write_run(store, conn, &settled, WHAT).await?;
        }
    }
    let mut run = new.into_run(id, now);
    run.lease_until = truncate_to_millis(run.lease_until);
    write_run(store, conn, &run, WHAT).await?;
    conversation.active_run_id = Some(run.id);
    write_run_columns(store, conn, &conversation, WHAT).await?;
    Ok(run)
}

/// Changes one run of the locked conversation with `change` (given the run settled at
/// the time of the write, and the conversation, for its usage) and stores what
/// changed. A run the change leaves ended is no longer the conversation's
/// `active_run_id`.
pub(crate) async fn change_run(
    store: &PostgresStore,
    conn: &mut PgConnection,
    scope: &Scope,
    id: ConversationId,
    run: RunId,
    what: &'static str,
    change: impl FnOnce(&mut Run, &mut Conversation, DateTime<Utc>),
) -> Result<Run> {
    let (mut conversation, _) = store.lock(conn, scope, id, what).await?;
    let now = truncate_to_millis(store.clock.now());
    let before = stored_run(store, conn, id, run, what)
        .await?
        .ok_or_else(run_not_found)?;
    let conversation_before = conversation.clone();
    let mut changed = before.clone().settled(now);
    change(&mut changed, &mut conversation, now);
    if changed.status.is_terminal() && conversation.active_run_id == Some(run) {
        conversation.active_run_id = None;
    }
    if changed != before {
        write_run(store, conn, &changed, what).await?;
    }
    if conversation != conversation_before {
        write_run_columns(store, conn, &conversation, what).await?;
    }
    Ok(changed)
}

/// A renewal: a running run's lease runs `lease` from now.
pub(crate) fn renew(lease: Duration) -> impl FnOnce(&mut Run, &mut Conversation, DateTime<Utc>) {
    move |run, _, now| {
        if run.status == RunStatus::Running {
            run.lease_until = truncate_to_millis(lease_end(now, lease));
        }
    }
}

/// A cancel request: a running run is asked to stop.
pub(crate) fn cancel(run: &mut Run, _: &mut Conversation, _: DateTime<Utc>) {
    if run.status == RunStatus::Running {
        run.cancel_requested = true;
    }
}

/// An end: the outcome applies once, and its usage adds to the conversation's.
pub(crate) fn finish(
    outcome: RunOutcome,
) -> impl FnOnce(&mut Run, &mut Conversation, DateTime<Utc>) {
    move |run, conversation, now| {
        if outcome.apply_to(run, now) {
            conversation.usage += run.usage;
        }
    }
}

/// The tree columns of an imported message, derived from the parents.
struct ImportedNode {
    depth: u64,
    sibling_index: u64,
    last_sibling: bool,
    on_path: bool,
}

/// Imports a whole conversation, checked already with
/// [`ImportedConversation::check`](conversation_core::ImportedConversation::check):
/// its row (with no message and no head, then the tree columns once the messages
/// are in: the row and its head reference each other), its messages with their tree
/// columns, their words.
pub(crate) async fn import(
    store: &PostgresStore,
    conn: &mut PgConnection,
    scope: &Scope,
    imported: ImportedConversation,
) -> Result<ImportOutcome> {
    const WHAT: &str = "import a conversation";
    let ImportedConversation {
        mut conversation,
        mut messages,
    } = imported;
    conversation.scope = scope.clone();
    conversation.created_at = truncate_to_millis(conversation.created_at);
    conversation.updated_at = truncate_to_millis(conversation.updated_at);
    // An archive time belongs to an archived conversation only (the table's rule).
    conversation.archived_at = conversation
        .archived_at
        .filter(|_| conversation.archived)
        .map(truncate_to_millis);
    // The tree columns, from the parents (each parent precedes its children).
    let mut nodes: HashMap<MessageId, ImportedNode> = HashMap::with_capacity(messages.len());
    let mut children: HashMap<Option<MessageId>, Vec<MessageId>> = HashMap::new();
    for message in &mut messages {
        message.created_at = truncate_to_millis(message.created_at);
        let depth = match message.parent_id {
            Some(parent) => nodes.get(&parent).ok_or_else(message_not_found)?.depth + 1,
            None => 1,
        };
        let siblings = children.entry(message.parent_id).or_default();
        if let Some(previous) = siblings.last().and_then(|last| nodes.get_mut(last)) {
            previous.last_sibling = false;
        }
        nodes.insert(
            message.id,
            ImportedNode {
                depth,
                sibling_index: siblings.len() as u64,
                last_sibling: true,
                on_path: false,
            },
        );
        siblings.push(message.id);
    }
    let parents: HashMap<MessageId, Option<MessageId>> =
        messages.iter().map(|m| (m.id, m.parent_id)).collect();
    let mut at = conversation.head_id;
    while let Some(message) = at {
        let node = nodes.get_mut(&message).ok_or_else(message_not_found)?;
        node.on_path = true;
        at = parents.get(&message).copied().flatten();
    }
    let head = match conversation.head_id {
        Some(head) => {
            let node = nodes.get(&head).ok_or_else(message_not_found)?;
            let seq = messages
                .iter()
                .find(|m| m.id == head)
                .map(|m| m.seq)
                .ok_or_else(message_not_found)?;
            Some(Head {
                id: head,
                seq,
                depth: node.depth,
            })
        }
        None => None,
    };
    // The row first, empty: the head references a message, which references the row.
    let empty = Conversation {
        message_count: 0,
        head_id: None,
        ..conversation.clone()
    };
    let inserted = PostgresStore::statement(&store.sql.insert_conversation, insert_params(&empty)?)
        .query(false)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db(WHAT))?;
    if inserted.is_none() {
        let stored: Option<String> = PostgresStore::statement(
            &store.sql.scope_of,
            vec![Param::Id(*conversation.id.as_uuid())],
        )
        .query(false)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db(WHAT))?
        .map(|row| get(&row, "scope"))
        .transpose()?;
        return Ok(match stored {
            Some(stored) if stored == scope.as_str() => ImportOutcome::AlreadyPresent,
            _ => ImportOutcome::IdTaken,
        });
    }
    if !messages.is_empty() {
        let node = |m: &Message| nodes.get(&m.id).ok_or_else(message_not_found);
        let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut flags = (Vec::new(), Vec::new());
        for message in &messages {
            let n = node(message)?;
            columns.0.push(to_i64(message.seq, "seq")?);
            columns.1.push(*message.id.as_uuid());
            columns.2.push(message.parent_id.map(Uuid::from));
            columns.3.push(to_i64(n.depth, "depth")?);
            columns.4.push(to_i64(n.sibling_index, "sibling index")?);
            flags.0.push(n.last_sibling);
            flags.1.push(n.on_path);
        }
        let tool_calls = messages
            .iter()
            .map(|m| serde_json::to_value(&m.tool_calls))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::backend("import a conversation: encode tool calls", e))?;
        sqlx::query(AssertSqlSafe(store.sql.import_messages.clone()))
            .bind(conversation.id.as_uuid())
            .bind(columns.0)
            .bind(columns.1)
            .bind(columns.2)
            .bind(columns.3)
            .bind(columns.4)
            .bind(flags.0)
            .bind(flags.1)
            .bind(messages.iter().map(|m| m.role.as_str()).collect::<Vec<_>>())
            .bind(
                messages
                    .iter()
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(tool_calls)
            .bind(
                messages
                    .iter()
                    .map(|m| m.tool_call_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                messages
                    .iter()
                    .map(|m| Value::Object(m.metadata.clone()))
                    .collect::<Vec<_>>(),
            )
            .bind(messages.iter().map(|m| m.created_at).collect::<Vec<_>>())
            .bind(
                messages
                    .iter()
                    .map(|m| search::words(scope.as_str(), &m.content))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *conn)
            .await
            .map_err(db(WHAT))?;
        let [head_id, head_seq, head_depth] = Head::params(head)?;
        PostgresStore::statement(
            &store.sql.import_head,
            vec![
                Param::Id(*conversation.id.as_uuid()),
                Param::Int(to_i64(conversation.message_count, "message_count")?),
                head_id,
                head_seq,
                head_depth,
            ],
        )
        .query(false)
        .execute(&mut *conn)
        .await
        .map_err(db(WHAT))?;
    }
    Ok(ImportOutcome::Imported)
}
