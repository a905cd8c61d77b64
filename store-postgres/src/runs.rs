//! Runs: the run writes, each behind the conversation's row lock, settling the run at
//! the clock's time first, and the run read.

use std::time::Duration;

use chrono::{DateTime, Utc};
use conversation_core::backend::{lease_end, truncate_to_millis};
use conversation_core::{
    Conversation, ConversationId, Entity, Error, NewRun, Result, Run, RunId, RunOutcome, RunStatus,
    Scope,
};
use sqlx::postgres::PgConnection;

use crate::PostgresStore;
use crate::error::db;
use crate::plans::Param;
use crate::rows::{self, to_i64};

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

impl PostgresStore {
    /// A run of the conversation in the scope, settled at the clock's time.
    pub(crate) async fn run(&self, scope: &Scope, id: ConversationId, run: RunId) -> Result<Run> {
        let now = truncate_to_millis(self.clock.now());
        let row = self
            .scoped(&self.sql.scoped_run, scope, id)
            .param(Param::Id(*run.as_uuid()))
            .query(false)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("get a run"))?
            .ok_or_else(Error::conversation_not_found)?;
        rows::run(&row)?
            .map(|run| run.settled(now))
            .ok_or(Error::NotFound {
                entity: Entity::Run,
            })
    }
}
