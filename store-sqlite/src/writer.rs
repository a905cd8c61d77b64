//! The writer task: one connection, group commit.
//!
//! Every write of a store goes through one task that owns the only writer connection.
//! Callers validate their input, send a [`Command`] on a bounded channel and wait for
//! the answer on a oneshot channel. The task takes whatever is queued (up to the
//! group size), runs it in one `BEGIN IMMEDIATE` transaction, each request inside its
//! own `SAVEPOINT` so that one request's error (`NotFound`, `Conflict`, …) rolls back
//! only that request, then `COMMIT`s once and only then answers every request of the
//! group. Many concurrent writers thus share one commit (one fsync) instead of each
//! paying for its own, and nobody is told "done" before the data is durable. A failed
//! `COMMIT` fails every request of its group.
//!
//! A caller that stops waiting (its future dropped) does not disturb the task: its
//! answer is discarded. A request already queued is still carried out, like a request
//! already sent to a server; appends with caller-supplied ids make retries safe.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use conversation_core::{
    Appended, Conversation, ConversationId, ConversationPatch, Error, Message, MessageId,
    NewConversation, NewMessage, Result, Scope, TitleOutcome, TitleSource, automatic_title_applies,
    check_expected_version, now,
};
use sqlx::{Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::error::convert;
use crate::rows::{
    ConversationRow, MessageRow, metadata_to_text, millis, to_i64, tool_calls_to_text,
};
use crate::sql;

/// A write to carry out.
#[derive(Debug)]
pub(crate) enum WriteOp {
    Create {
        scope: Scope,
        new: NewConversation,
    },
    Update {
        scope: Scope,
        id: ConversationId,
        patch: ConversationPatch,
    },
    Delete {
        scope: Scope,
        id: ConversationId,
    },
    Append {
        scope: Scope,
        id: ConversationId,
        messages: Vec<NewMessage>,
        expected_version: Option<u64>,
    },
    SetTitle {
        scope: Scope,
        id: ConversationId,
        title: String,
        source: TitleSource,
    },
}

/// What a write returns.
#[derive(Debug)]
pub(crate) enum Outcome {
    Conversation(Conversation),
    Deleted,
    Appended(Appended),
    Title(TitleOutcome),
}

/// A message to the writer task.
#[derive(Debug)]
pub(crate) enum Command {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<Outcome>>,
    },
    /// Finish what was queued before, close the connection, then acknowledge.
    Close(oneshot::Sender<()>),
}

type Reply = oneshot::Sender<Result<Outcome>>;

/// Counters shared by the writer task and the store.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Transactions committed.
    pub(crate) transactions: AtomicU64,
    /// Requests carried out in committed transactions.
    pub(crate) writes: AtomicU64,
}

/// The task's loop; returns when the store is closed or dropped.
pub(crate) async fn run(
    mut conn: SqliteConnection,
    mut commands: mpsc::Receiver<Command>,
    max_group: usize,
    counters: Arc<Counters>,
) {
    let mut received = Vec::with_capacity(max_group);
    let mut close = None;
    while close.is_none() {
        if commands.recv_many(&mut received, max_group).await == 0 {
            break; // every sender is gone: the store was dropped
        }
        let mut group = Vec::with_capacity(received.len());
        // Requests queued behind a `Close` are dropped with the rest of the drain:
        // their callers see a closed store.
        for command in received.drain(..) {
            match command {
                Command::Write { op, reply } => group.push((op, reply)),
                Command::Close(ack) => {
                    close = Some(ack);
                    break;
                }
            }
        }
        if !group.is_empty() {
            let span = tracing::debug_span!("sqlite_write_group", size = group.len());
            commit_group(&mut conn, group, &counters)
                .instrument(span)
                .await;
        }
    }
    commands.close();
    drop(commands);
    if let Err(err) = sqlx::Connection::close(conn).await {
        tracing::warn!(error = %err, "closing the SQLite writer connection failed");
    }
    if let Some(ack) = close {
        let _ = ack.send(());
    }
}

async fn exec(conn: &mut SqliteConnection, statement: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query(statement).execute(&mut *conn).await.map(|_| ())
}

/// Runs one group in one transaction and answers its requests after the commit.
async fn commit_group(
    conn: &mut SqliteConnection,
    group: Vec<(WriteOp, Reply)>,
    counters: &Counters,
) {
    if let Err(err) = exec(conn, "BEGIN IMMEDIATE").await {
        // A transaction left open by an earlier failure would make every later BEGIN
        // fail; end it so the next group starts clean.
        let _ = exec(conn, "ROLLBACK").await;
        let failure = convert("starting a write transaction", err);
        fail_all(group.into_iter().map(|(_, reply)| reply), &failure);
        return;
    }

    // A lone request needs no savepoint: its error rolls back the whole transaction.
    let savepoints = group.len() > 1;
    let mut answered: Vec<(Reply, Result<Outcome>)> = Vec::with_capacity(group.len());
    let mut pending = group.into_iter();
    let mut aborted = None;
    for (op, reply) in pending.by_ref() {
        if savepoints && let Err(err) = exec(conn, "SAVEPOINT request").await {
            aborted = Some((convert("opening a savepoint", err), reply));
            break;
        }
        let result = apply(conn, op).await;
        if savepoints {
            let end = if result.is_ok() {
                exec(conn, "RELEASE request").await
            } else {
                match exec(conn, "ROLLBACK TO request").await {
                    Ok(()) => exec(conn, "RELEASE request").await,
                    Err(err) => Err(err),
                }
            };
            if let Err(err) = end {
                // SQLite rolls back the whole transaction by itself after some
                // failures (disk full, I/O): nothing of the group can be committed.
                aborted = Some((convert("ending a savepoint", err), reply));
                break;
            }
        }
        answered.push((reply, result));
    }

    if let Some((failure, reply)) = aborted {
        let _ = exec(conn, "ROLLBACK").await;
        let replies = answered.into_iter().map(|(reply, _)| reply);
        let unanswered = pending.map(|(_, reply)| reply);
        fail_all(replies.chain([reply]).chain(unanswered), &failure);
        return;
    }
    if !savepoints && answered.iter().all(|(_, result)| result.is_err()) {
        if let Err(err) = exec(conn, "ROLLBACK").await {
            tracing::error!(error = %err, "rolling back a failed write failed");
        }
        answer(answered);
        return;
    }
    match exec(conn, "COMMIT").await {
        Ok(()) => {
            counters.transactions.fetch_add(1, Ordering::Relaxed);
            counters
                .writes
                .fetch_add(answered.len() as u64, Ordering::Relaxed);
            answer(answered);
        }
        Err(err) => {
            let _ = exec(conn, "ROLLBACK").await;
            let failure = convert("committing", err);
            fail_all(answered.into_iter().map(|(reply, _)| reply), &failure);
        }
    }
}

fn answer(answered: Vec<(Reply, Result<Outcome>)>) {
    for (reply, result) in answered {
        if reply.send(result).is_err() {
            tracing::debug!("a writer's caller stopped waiting; its write is done");
        }
    }
}

/// Answers every reply with a copy of `failure` (same variant and message).
fn fail_all(replies: impl Iterator<Item = Reply>, failure: &Error) {
    tracing::warn!(error = %failure, "a write group failed");
    for reply in replies {
        let copy = match failure {
            Error::Backend { message, .. } => Error::Backend {
                message: message.clone(),
                source: None,
            },
            other => Error::Unavailable {
                message: other.to_string(),
                source: None,
            },
        };
        let _ = reply.send(Err(copy));
    }
}

/// Carries out one write inside the open transaction.
async fn apply(conn: &mut SqliteConnection, op: WriteOp) -> Result<Outcome> {
    match op {
        WriteOp::Create { scope, new } => create(conn, scope, new).await.map(Outcome::Conversation),
        WriteOp::Update { scope, id, patch } => update(conn, &scope, id, patch)
            .await
            .map(Outcome::Conversation),
        WriteOp::Delete { scope, id } => delete(conn, &scope, id).await.map(|()| Outcome::Deleted),
        WriteOp::Append {
            scope,
            id,
            messages,
            expected_version,
        } => append(conn, &scope, id, messages, expected_version)
            .await
            .map(Outcome::Appended),
        WriteOp::SetTitle {
            scope,
            id,
            title,
            source,
        } => set_title(conn, &scope, id, title, source)
            .await
            .map(Outcome::Title),
    }
}

async fn read_conversation(
    conn: &mut SqliteConnection,
    scope: &Scope,
    id: ConversationId,
) -> Result<Conversation> {
    let row: Option<ConversationRow> = sqlx::query_as(sql::GET_CONVERSATION)
        .bind(&id.as_bytes()[..])
        .bind(scope.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| convert("reading a conversation", e))?;
    row.ok_or_else(Error::conversation_not_found)?
        .into_conversation(scope)
}

async fn create(
    conn: &mut SqliteConnection,
    scope: Scope,
    new: NewConversation,
) -> Result<Conversation> {
    let conversation = new.into_conversation(scope, now());
    sqlx::query(
        "INSERT INTO conversations (id, scope, title, title_source, created_at, updated_at, \
         message_count, pinned, archived, metadata, version) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, 0, 0, 0, ?6, 1)",
    )
    .bind(&conversation.id.as_bytes()[..])
    .bind(conversation.scope.as_str())
    .bind(conversation.title.as_deref())
    .bind(conversation.title_source.as_str())
    .bind(millis(conversation.created_at))
    .bind(metadata_to_text(&conversation.metadata)?)
    .execute(&mut *conn)
    .await
    .map_err(|e| convert("creating a conversation", e))?;
    Ok(conversation)
}

/// Writes every mutable column of a conversation read earlier in the transaction.
async fn write_conversation(
    conn: &mut SqliteConnection,
    conversation: &Conversation,
) -> Result<()> {
    sqlx::query(
        "UPDATE conversations SET title = ?2, title_source = ?3, updated_at = ?4, \
         message_count = ?5, pinned = ?6, archived = ?7, metadata = ?8, version = ?9 \
         WHERE id = ?1",
    )
    .bind(&conversation.id.as_bytes()[..])
    .bind(conversation.title.as_deref())
    .bind(conversation.title_source.as_str())
    .bind(millis(conversation.updated_at))
    .bind(to_i64(conversation.message_count))
    .bind(conversation.pinned)
    .bind(conversation.archived)
    .bind(metadata_to_text(&conversation.metadata)?)
    .bind(to_i64(conversation.version))
    .execute(&mut *conn)
    .await
    .map_err(|e| convert("updating a conversation", e))?;
    Ok(())
}

async fn update(
    conn: &mut SqliteConnection,
    scope: &Scope,
    id: ConversationId,
    patch: ConversationPatch,
) -> Result<Conversation> {
    let mut conversation = read_conversation(conn, scope, id).await?;
    check_expected_version(patch.expected_version, conversation.version)?;
    if patch.is_empty() {
        return Ok(conversation);
    }
    patch.apply_to(&mut conversation, now());
    write_conversation(conn, &conversation).await?;
    Ok(conversation)
}

async fn delete(conn: &mut SqliteConnection, scope: &Scope, id: ConversationId) -> Result<()> {
    let deleted = sqlx::query("DELETE FROM conversations WHERE id = ?1 AND +scope = ?2")
        .bind(&id.as_bytes()[..])
        .bind(scope.as_str())
        .execute(&mut *conn)
        .await
        .map_err(|e| convert("deleting a conversation", e))?;
    if deleted.rows_affected() == 0 {
        return Err(Error::conversation_not_found());
    }
    // `ON DELETE CASCADE` has removed the messages already; this statement makes the
    // deletion complete even on a connection where a host turned foreign keys off.
    sqlx::query("DELETE FROM messages WHERE conversation_id = ?1")
        .bind(&id.as_bytes()[..])
        .execute(&mut *conn)
        .await
        .map_err(|e| convert("deleting messages", e))?;
    Ok(())
}

async fn stored_message(
    conn: &mut SqliteConnection,
    conversation_id: ConversationId,
    id: MessageId,
) -> Result<Option<Message>> {
    let row: Option<MessageRow> = sqlx::query_as(sql::MESSAGE_BY_ID)
        .bind(&conversation_id.as_bytes()[..])
        .bind(&id.as_bytes()[..])
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| convert("reading a message", e))?;
    row.map(|row| row.into_message(conversation_id)).transpose()
}

async fn append(
    conn: &mut SqliteConnection,
    scope: &Scope,
    id: ConversationId,
    messages: Vec<NewMessage>,
    expected_version: Option<u64>,
) -> Result<Appended> {
    let mut conversation = read_conversation(conn, scope, id).await?;
    let mut stored = Vec::with_capacity(messages.len());
    for message in &messages {
        stored.push(match message.id {
            Some(message_id) => stored_message(conn, id, message_id).await?,
            None => None,
        });
    }
    if stored.iter().all(Option::is_some) {
        // A retry of messages all stored already: nothing changes, no version check.
        return Ok(Appended {
            conversation,
            messages: stored.into_iter().flatten().collect(),
        });
    }
    check_expected_version(expected_version, conversation.version)?;
    let at = now();
    let mut seq = conversation.message_count;
    let mut appended = Vec::with_capacity(messages.len());
    let mut new_at = Vec::with_capacity(messages.len());
    for (new, existing) in messages.into_iter().zip(stored) {
        if let Some(message) = existing {
            appended.push(message);
            continue;
        }
        seq += 1;
        new_at.push(appended.len());
        appended.push(new.into_message(id, seq, at));
    }
    insert_messages(conn, new_at.iter().map(|&i| &appended[i])).await?;
    conversation.message_count = seq;
    conversation.version += 1;
    conversation.updated_at = at.max(conversation.updated_at);
    sqlx::query(
        "UPDATE conversations SET message_count = ?2, version = ?3, updated_at = ?4 WHERE id = ?1",
    )
    .bind(&id.as_bytes()[..])
    .bind(to_i64(conversation.message_count))
    .bind(to_i64(conversation.version))
    .bind(millis(conversation.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(|e| convert("updating a conversation", e))?;
    Ok(Appended {
        conversation,
        messages: appended,
    })
}

/// Inserts messages with one statement: every statement costs a round trip to sqlx's
/// connection thread, which for a batch costs more than SQLite's own work. A batch is
/// at most `Limits::max_batch_messages` (default 256) rows of 9 parameters, far below
/// SQLite's 32,766 parameters.
async fn insert_messages<'m>(
    conn: &mut SqliteConnection,
    messages: impl ExactSizeIterator<Item = &'m Message>,
) -> Result<()> {
    if messages.len() == 0 {
        return Ok(());
    }
    let mut insert = sqlx::QueryBuilder::<Sqlite>::new(
        "INSERT INTO messages (conversation_id, seq, id, role, content, tool_calls, \
         tool_call_id, metadata, created_at) ",
    );
    let mut rows = Vec::with_capacity(messages.len());
    for message in messages {
        rows.push((
            message,
            tool_calls_to_text(&message.tool_calls)?,
            metadata_to_text(&message.metadata)?,
        ));
    }
    insert.push_values(rows, |mut row, (message, tool_calls, metadata)| {
        row.push_bind(&message.conversation_id.as_bytes()[..])
            .push_bind(to_i64(message.seq))
            .push_bind(&message.id.as_bytes()[..])
            .push_bind(message.role.as_str())
            .push_bind(message.content.as_str())
            .push_bind(tool_calls)
            .push_bind(message.tool_call_id.as_deref())
            .push_bind(metadata)
            .push_bind(millis(message.created_at));
    });
    insert
        .build()
        .execute(&mut *conn)
        .await
        .map_err(|e| convert("storing messages", e))?;
    Ok(())
}

async fn set_title(
    conn: &mut SqliteConnection,
    scope: &Scope,
    id: ConversationId,
    title: String,
    source: TitleSource,
) -> Result<TitleOutcome> {
    let mut conversation = read_conversation(conn, scope, id).await?;
    if !automatic_title_applies(conversation.title_source, source) {
        return Ok(TitleOutcome {
            conversation,
            applied: false,
        });
    }
    conversation.title = Some(title);
    conversation.title_source = source;
    conversation.version += 1;
    write_conversation(conn, &conversation).await?;
    Ok(TitleOutcome {
        conversation,
        applied: true,
    })
}
