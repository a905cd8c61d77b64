//! The writes, each run by the writer inside its transaction, and the upkeep of the
//! active path they share.
//!
//! The active path is kept in `message_path`: the seqs from the root to the head,
//! each with how many siblings its message has. Every change of the head changes
//! only what differs between the old path and the new one: an append after the head
//! adds its messages; an append elsewhere, a switch or a deletion that took the head
//! walks up from the new head to the first message still on the path (one primary
//! key lookup per step), cuts the path there (one range delete) and adds the walk.

use std::collections::HashMap;

use std::time::Duration;

use conversation_core::backend::{
    AppendPlan, ResolvedParent, apply_automatic_title, check_expected_version, fork_messages,
    fork_of, lease_end, stamp, truncate_to_millis,
};
use conversation_core::{
    Append, Appended, Conversation, ConversationId, ConversationPatch, Entity, Error,
    ImportOutcome, ImportedConversation, Message, MessageId, NewConversation, NewRun, Parent,
    Result, Run, RunId, RunOutcome, RunStatus, Scope, Siblings, TitleOutcome, TitleSource,
};
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::error::{bad_row, db};
use crate::read;
use crate::rows::{
    StoredConversation, json_to_text, metadata_to_text, metadata_value, millis, to_i64,
    tool_calls_to_text,
};
use crate::search;
use crate::sql;
use crate::writer::WriteContext;

fn message_not_found() -> Error {
    Error::NotFound {
        entity: Entity::Message,
    }
}

fn key(id: ConversationId) -> [u8; 16] {
    *id.as_bytes()
}

/// Runs a cached statement that changes rows; returns how many.
fn execute(
    conn: &Connection,
    context: &'static str,
    statement: &str,
    params: impl rusqlite::Params,
) -> Result<u64> {
    conn.prepare_cached(statement)
        .and_then(|mut s| s.execute(params))
        .map(|changed| changed as u64)
        .map_err(db(context))
}

fn insert_conversation(conn: &Connection, stored: &StoredConversation) -> Result<()> {
    write_row(
        conn,
        sql::INSERT_CONVERSATION,
        stored,
        "creating a conversation",
    )
}

fn write_conversation(conn: &Connection, stored: &StoredConversation) -> Result<()> {
    write_row(
        conn,
        sql::UPDATE_CONVERSATION,
        stored,
        "updating a conversation",
    )
}

fn write_row(
    conn: &Connection,
    statement: &str,
    stored: &StoredConversation,
    context: &'static str,
) -> Result<()> {
    let c = &stored.conversation;
    // Both statements number their parameters alike; the update leaves ?2 and ?5
    // (scope, created_at) unused.
    execute(
        conn,
        context,
        statement,
        params![
            key(c.id),
            c.scope.as_str(),
            c.title.as_deref(),
            c.title_source.as_str(),
            millis(c.created_at),
            millis(c.updated_at),
            to_i64(c.message_count),
            to_i64(c.last_seq),
            to_i64(stored.head_seq),
            c.head_id.map(|id| *id.as_bytes()),
            to_i64(stored.path_len),
            c.pinned,
            c.archived,
            metadata_to_text(&c.metadata)?,
            to_i64(c.version),
            c.archived_at.map(millis),
            c.active_run_id.map(|id| *id.as_bytes()),
            to_i64(c.usage.prompt_tokens),
            to_i64(c.usage.completion_tokens),
            to_i64(c.usage.total_tokens),
            stored.search_key,
            stored.scope_key,
        ],
    )
    .map(drop)
}

/// Keeps the search index's title row in step after the title changed from `old`.
fn retitle(conn: &Connection, stored: &StoredConversation, old: Option<&str>) -> Result<()> {
    let new = stored.conversation.title.as_deref();
    if old == new {
        return Ok(());
    }
    let row = search::rowid(stored.search_key, 0)?;
    if let Some(old) = old {
        search::remove(conn, stored.scope_key, row, old)?;
    }
    if let Some(new) = new {
        search::add(conn, stored.scope_key, row, new)?;
    }
    Ok(())
}

/// Indexes the conversation's top-level scalar metadata values for the list's
/// metadata filter, replacing what was indexed.
fn index_metadata(conn: &Connection, stored: &StoredConversation, replace: bool) -> Result<()> {
    let c = &stored.conversation;
    if replace {
        execute(
            conn,
            "indexing metadata",
            sql::DELETE_METADATA_OF,
            [key(c.id)],
        )?;
    }
    for (name, value) in &c.metadata {
        if let Some((kind, value)) = metadata_value(value) {
            execute(
                conn,
                "indexing metadata",
                sql::INSERT_METADATA,
                params![key(c.id), name, c.scope.as_str(), kind, value],
            )?;
        }
    }
    Ok(())
}

/// Stores a new conversation row with its title and metadata indexed; gives it its
/// keys in the search index.
fn insert_new(
    conn: &Connection,
    conversation: Conversation,
    head_seq: u64,
    path_len: u64,
) -> Result<StoredConversation> {
    let stored = StoredConversation {
        scope_key: search::ensure_scope_key(conn, &conversation.scope)?,
        search_key: search::next_key(conn)?,
        conversation,
        head_seq,
        path_len,
    };
    insert_conversation(conn, &stored)?;
    retitle(conn, &stored, None)?;
    index_metadata(conn, &stored, false)?;
    Ok(stored)
}

/// Adds a stored message's words to the search index.
fn index_message(conn: &Connection, stored: &StoredConversation, message: &Message) -> Result<()> {
    search::add(
        conn,
        stored.scope_key,
        search::rowid(stored.search_key, message.seq)?,
        &message.content,
    )
}

/// Removes the words of the messages `(seq, content)` from the search index.
fn unindex_messages(
    conn: &Connection,
    stored: &StoredConversation,
    statement: &str,
    params: impl rusqlite::Params,
) -> Result<()> {
    let mut rows = Vec::new();
    {
        let mut statement = conn
            .prepare_cached(statement)
            .map_err(db("reading messages to delete"))?;
        let mut cursor = statement
            .query(params)
            .map_err(db("reading messages to delete"))?;
        while let Some(row) = cursor.next().map_err(db("reading messages to delete"))? {
            let seq: i64 = row.get(0).map_err(db("reading messages to delete"))?;
            let content: String = row.get(1).map_err(db("reading messages to delete"))?;
            rows.push((seq, content));
        }
    }
    for (seq, content) in rows {
        search::remove(
            conn,
            stored.scope_key,
            search::rowid(stored.search_key, seq as u64)?,
            &content,
        )?;
    }
    Ok(())
}

fn insert_message(conn: &Connection, message: &Message, parent_seq: u64) -> Result<()> {
    execute(
        conn,
        "storing a message",
        sql::INSERT_MESSAGE,
        params![
            key(message.conversation_id),
            to_i64(message.seq),
            message.id.as_bytes(),
            to_i64(parent_seq),
            message.parent_id.map(|id| *id.as_bytes()),
            message.role.as_str(),
            message.content.as_str(),
            tool_calls_to_text(&message.tool_calls)?,
            message.tool_call_id.as_deref(),
            metadata_to_text(&message.metadata)?,
            millis(message.created_at),
        ],
    )
    .map(drop)
}

/// The seq of message `id` in the conversation, if it is stored there.
fn seq_of(conn: &Connection, conversation: ConversationId, id: MessageId) -> Result<Option<u64>> {
    conn.prepare_cached(sql::MESSAGE_SEQ)
        .and_then(|mut s| {
            s.query_row(params![key(conversation), id.as_bytes()], |row| {
                row.get::<_, i64>(0)
            })
            .optional()
        })
        .map_err(db("looking up a message"))
        .map(|seq| seq.map(|seq| seq as u64))
}

/// A message's parent seq and whether the message is on the active path.
fn parent_step(conn: &Connection, conversation: ConversationId, seq: u64) -> Result<(u64, bool)> {
    conn.prepare_cached(sql::PARENT_STEP)
        .and_then(|mut s| {
            s.query_row(params![key(conversation), to_i64(seq)], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, bool>(1)?))
            })
            .optional()
        })
        .map_err(db("walking the message tree"))?
        .map(|(parent, on_path)| (parent as u64, on_path))
        .ok_or_else(|| bad_row(format!("message {seq} is missing from its tree")))
}

fn child_count(conn: &Connection, conversation: ConversationId, seq: u64) -> Result<u64> {
    read::count(
        conn,
        sql::CHILD_COUNT,
        params![key(conversation), to_i64(seq)],
    )
}

fn message_id(conn: &Connection, conversation: ConversationId, seq: u64) -> Result<MessageId> {
    conn.prepare_cached(sql::MESSAGE_ID)
        .and_then(|mut s| {
            s.query_row(params![key(conversation), to_i64(seq)], |row| {
                row.get::<_, [u8; 16]>(0)
            })
        })
        .map(|bytes| MessageId::from_uuid(uuid::Uuid::from_bytes(bytes)))
        .map_err(db("reading a message id"))
}

fn first_seq(
    conn: &Connection,
    statement: &str,
    params: impl rusqlite::Params,
) -> Result<Option<u64>> {
    conn.prepare_cached(statement)
        .and_then(|mut s| {
            s.query_row(params, |row| row.get::<_, Option<i64>>(0))
                .optional()
        })
        .map_err(db("reading the message tree"))
        .map(|seq| seq.flatten().map(|seq| seq as u64))
}

fn cut_path(conn: &Connection, conversation: ConversationId, keep_through: u64) -> Result<u64> {
    execute(
        conn,
        "updating the active path",
        sql::CUT_PATH,
        params![key(conversation), to_i64(keep_through)],
    )
}

fn join_path(
    conn: &Connection,
    conversation: ConversationId,
    seq: u64,
    siblings: u64,
) -> Result<()> {
    execute(
        conn,
        "updating the active path",
        sql::INSERT_PATH,
        params![key(conversation), to_i64(seq), to_i64(siblings)],
    )
    .map(drop)
}

/// Makes the active path end at `head` (a stored message, or none): walks up from it
/// to the first message on the path, cuts the path after that one and adds the walk.
/// Sets `path_len` and `head_seq`, not `head_id`.
fn move_path(conn: &Connection, stored: &mut StoredConversation, head: Option<u64>) -> Result<()> {
    let id = stored.conversation.id;
    let Some(head) = head else {
        cut_path(conn, id, 0)?;
        stored.path_len = 0;
        stored.head_seq = 0;
        return Ok(());
    };
    let mut walk = Vec::new();
    let mut at = head;
    let joint = loop {
        let (parent, on_path) = parent_step(conn, id, at)?;
        if on_path {
            break at;
        }
        walk.push((at, parent));
        if parent == 0 {
            break 0;
        }
        at = parent;
    };
    let cut = cut_path(conn, id, joint)?;
    for &(seq, parent) in walk.iter().rev() {
        join_path(conn, id, seq, child_count(conn, id, parent)?)?;
    }
    stored.path_len = (stored.path_len + walk.len() as u64).saturating_sub(cut);
    stored.head_seq = head;
    Ok(())
}

/// The newest message under `seq` (itself included).
fn newest_under(conn: &Connection, stored: &StoredConversation, seq: u64) -> Result<u64> {
    let id = stored.conversation.id;
    // On the path, the head is under it; when the head is also the newest message of
    // the conversation, it is the newest under it, with no walk of the subtree.
    if first_seq(conn, sql::ON_PATH, params![key(id), to_i64(seq)])?.is_some()
        && first_seq(conn, sql::NEWEST_MESSAGE, params![key(id)])? == Some(stored.head_seq)
    {
        return Ok(stored.head_seq);
    }
    Ok(first_seq(conn, sql::NEWEST_UNDER, params![key(id), to_i64(seq)])?.unwrap_or(seq))
}

pub(crate) fn create(
    cx: &mut WriteContext<'_>,
    scope: Scope,
    new: NewConversation,
) -> Result<Conversation> {
    let conversation = new.into_conversation(scope, truncate_to_millis(cx.clock.now()));
    Ok(insert_new(cx.conn, conversation, 0, 0)?.conversation)
}

pub(crate) fn update(
    cx: &mut WriteContext<'_>,
    scope: &Scope,
    id: ConversationId,
    patch: ConversationPatch,
) -> Result<Conversation> {
    let conn = cx.conn;
    let mut stored = read::conversation(conn, scope, id)?;
    let head = match patch.head_id {
        Some(target) => {
            let seq = seq_of(conn, id, target)?.ok_or_else(message_not_found)?;
            Some(newest_under(conn, &stored, seq)?)
        }
        None => None,
    };
    check_expected_version(patch.expected_version, stored.conversation.version)?;
    if patch.is_empty() {
        return Ok(stored.conversation);
    }
    let head_id = match head {
        Some(seq) => Some(message_id(conn, id, seq)?),
        None => None,
    };
    let at = stamp(cx.clock, stored.conversation.updated_at);
    let before = stored.conversation.clone();
    patch.apply_to(&mut stored.conversation, head_id, at, cx.limits)?;
    if let Some(head) = head
        && head != stored.head_seq
    {
        move_path(conn, &mut stored, Some(head))?;
    }
    write_conversation(conn, &stored)?;
    retitle(conn, &stored, before.title.as_deref())?;
    if before.metadata != stored.conversation.metadata {
        index_metadata(conn, &stored, true)?;
    }
    Ok(stored.conversation)
}

pub(crate) fn delete(
    cx: &mut WriteContext<'_>,
    scope: &Scope,
    id: ConversationId,
    expected_version: Option<u64>,
) -> Result<()> {
    let conn = cx.conn;
    let stored = read::conversation(conn, scope, id)?;
    check_expected_version(expected_version, stored.conversation.version)?;
    // Its words leave the index first: removing them needs the text.
    retitle(
        conn,
        &StoredConversation {
            conversation: Conversation {
                title: None,
                ..stored.conversation.clone()
            },
            ..stored.clone()
        },
        stored.conversation.title.as_deref(),
    )?;
    unindex_messages(conn, &stored, sql::CONTENTS_OF, [key(id)])?;
    let deleted = execute(
        conn,
        "deleting a conversation",
        sql::DELETE_CONVERSATION,
        params![key(id), scope.as_str()],
    )?;
    if deleted == 0 {
        return Err(Error::conversation_not_found());
    }
    // `ON DELETE CASCADE` has removed the messages already; this makes the deletion
    // complete even on a connection where a host turned foreign keys off.
    execute(
        conn,
        "deleting messages",
        sql::DELETE_MESSAGES_OF,
        [key(id)],
    )?;
    execute(conn, "deleting messages", sql::DELETE_PATH_OF, [key(id)])?;
    execute(conn, "deleting runs", sql::DELETE_RUNS_OF, [key(id)])?;
    execute(
        conn,
        "deleting metadata",
        sql::DELETE_METADATA_OF,
        [key(id)],
    )?;
    cx.deleted = true;
    Ok(())
}

pub(crate) fn append(
    cx: &mut WriteContext<'_>,
    scope: &Scope,
    id: ConversationId,
    append: Append,
) -> Result<Appended> {
    let conn = cx.conn;
    let mut stored = read::conversation(conn, scope, id)?;
    let parent = match append.parent {
        Parent::Head => match stored.conversation.head_id {
            Some(head) if stored.head_seq > 0 => ResolvedParent::Message {
                id: head,
                seq: stored.head_seq,
            },
            _ => ResolvedParent::Root,
        },
        Parent::Root => ResolvedParent::Root,
        Parent::Message(message) => ResolvedParent::Message {
            id: message,
            seq: seq_of(conn, id, message)?.ok_or_else(message_not_found)?,
        },
    };
    // The messages already stored under the caller's ids: (id, parent seq, seq).
    let mut retried = Vec::new();
    let mut existing = Vec::with_capacity(append.messages.len());
    for message in &append.messages {
        let found = match message.id {
            Some(message_id) if seq_of(conn, id, message_id)?.is_some() => {
                let (row, _) = read::message_by_id(conn, scope, id, message_id)?;
                retried.push((message_id, row.parent_seq, row.message.seq));
                Some(row.message)
            }
            _ => None,
        };
        existing.push(found);
    }
    let plan = AppendPlan::new(
        stored.conversation.clone(),
        parent,
        append,
        existing,
        cx.clock.now(),
    )?;
    let parent_seq = parent.seq().unwrap_or(0);
    let mut siblings: HashMap<MessageId, Siblings> = HashMap::new();
    if plan.writes() {
        // The path becomes the path to the parent, then the new messages. After the
        // head, a leaf, it only grows, and the first new message is an only child.
        let after_head = parent_seq > 0 && parent_seq == stored.head_seq;
        if !after_head {
            move_path(conn, &mut stored, parent.seq())?;
        }
        let mut previous = parent_seq;
        for message in plan.new_messages() {
            insert_message(conn, message, previous)?;
            index_message(conn, &stored, message)?;
            previous = message.seq;
        }
        // After the head the first new message is an only child, unless the head was
        // imported with children (promise 10 keeps the head a leaf otherwise).
        let first_siblings = if after_head && stored.conversation.message_count == stored.path_len {
            1
        } else {
            child_count(conn, id, parent_seq)?
        };
        let mut added = 0;
        for message in plan.new_messages() {
            let count = if added == 0 { first_siblings } else { 1 };
            join_path(conn, id, message.seq, count)?;
            if added == 0 {
                siblings.insert(
                    message.id,
                    read::siblings(conn, id, parent_seq, message.seq, message.id, count)?,
                );
            }
            added += 1;
        }
        let old_title = stored.conversation.title.clone();
        stored.conversation = plan.conversation().clone();
        stored.head_seq = plan.head_seq().unwrap_or(stored.head_seq);
        stored.path_len += added;
        write_conversation(conn, &stored)?;
        retitle(conn, &stored, old_title.as_deref())?;
    }
    // Retried messages keep their own place, read after the write.
    for (message, parent_seq, seq) in retried {
        let count = child_count(conn, id, parent_seq)?;
        siblings.insert(
            message,
            read::siblings(conn, id, parent_seq, seq, message, count)?,
        );
    }
    plan.into_appended(|message| {
        Ok(siblings
            .remove(&message.id)
            .unwrap_or_else(|| Siblings::only(message.id)))
    })
}

pub(crate) fn delete_message(
    cx: &mut WriteContext<'_>,
    scope: &Scope,
    id: ConversationId,
    message: MessageId,
    expected_version: Option<u64>,
) -> Result<Conversation> {
    let conn = cx.conn;
    let mut stored = read::conversation(conn, scope, id)?;
    let seq = seq_of(conn, id, message)?.ok_or_else(message_not_found)?;
    check_expected_version(expected_version, stored.conversation.version)?;
    let (parent_seq, on_path) = parent_step(conn, id, seq)?;
    unindex_messages(
        conn,
        &stored,
        sql::SUBTREE_CONTENTS,
        params![key(id), to_i64(seq)],
    )?;
    let removed = execute(
        conn,
        "deleting messages",
        sql::DELETE_SUBTREE,
        params![key(id), to_i64(seq)],
    )?;
    cx.deleted = true;
    if on_path {
        // The head was under it: the path keeps what leads to the parent, and the
        // head moves to the newest leaf left under the parent (under any root, for a
        // root), or to the parent itself.
        let cut = cut_path(conn, id, parent_seq)?;
        stored.path_len = stored.path_len.saturating_sub(cut);
        let head = if parent_seq > 0 {
            Some(
                first_seq(
                    conn,
                    sql::NEWEST_UNDER,
                    params![key(id), to_i64(parent_seq)],
                )?
                .unwrap_or(parent_seq),
            )
        } else {
            first_seq(conn, sql::NEWEST_MESSAGE, params![key(id)])?
        };
        move_path(conn, &mut stored, head)?;
        stored.conversation.head_id = match head {
            Some(head) => Some(message_id(conn, id, head)?),
            None => None,
        };
    } else {
        // Its sibling on the path, if any, has one sibling fewer.
        let parent_on_path = parent_seq == 0
            || first_seq(conn, sql::ON_PATH, params![key(id), to_i64(parent_seq)])?.is_some();
        if parent_on_path
            && let Some(sibling) =
                first_seq(conn, sql::PATH_AFTER, params![key(id), to_i64(parent_seq)])?
        {
            execute(
                conn,
                "updating the active path",
                sql::ADD_PATH_SIBLINGS,
                params![key(id), to_i64(sibling), -1_i64],
            )?;
        }
    }
    let conversation = &mut stored.conversation;
    conversation.message_count = conversation.message_count.saturating_sub(removed);
    conversation.version += 1;
    conversation.updated_at = stamp(cx.clock, conversation.updated_at);
    write_conversation(conn, &stored)?;
    Ok(stored.conversation)
}

pub(crate) fn fork(
    cx: &mut WriteContext<'_>,
    scope: &Scope,
    id: ConversationId,
    message: MessageId,
) -> Result<Conversation> {
    let conn = cx.conn;
    let source = read::conversation(conn, scope, id)?;
    let seq = seq_of(conn, id, message)?.ok_or_else(message_not_found)?;
    let path = read::ancestors(conn, id, seq, usize::MAX)?;
    let copied = path.len() as u64;
    let conversation = fork_of(
        &source.conversation,
        message,
        copied,
        message,
        cx.limits,
        cx.clock.now(),
    )?;
    let stored = insert_new(conn, conversation, copied, copied)?;
    for copy in fork_messages(stored.conversation.id, path) {
        insert_message(conn, &copy, copy.seq - 1)?;
        index_message(conn, &stored, &copy)?;
        join_path(conn, stored.conversation.id, copy.seq, 1)?;
    }
    Ok(stored.conversation)
}

pub(crate) fn set_title(
    cx: &mut WriteContext<'_>,
    scope: &Scope,
    id: ConversationId,
    title: String,
    source: TitleSource,
) -> Result<TitleOutcome> {
    let mut stored = read::conversation(cx.conn, scope, id)?;
    let old_title = stored.conversation.title.clone();
    let applied = apply_automatic_title(&mut stored.conversation, title, source);
    if applied {
        write_conversation(cx.conn, &stored)?;
        retitle(cx.conn, &stored, old_title.as_deref())?;
    }
    Ok(TitleOutcome {
        conversation: stored.conversation,
        applied,
    })
}

fn run_not_found() -> Error {
    Error::NotFound {
        entity: Entity::Run,
    }
}

/// Writes a run, every column.
fn write_run(conn: &Connection, run: &Run) -> Result<()> {
    execute(
        conn,
        "storing a run",
        sql::UPSERT_RUN,
        params![
            key(run.conversation_id),
            run.id.as_bytes(),
            run.status.as_str(),
            millis(run.started_at),
            run.finished_at.map(millis),
            millis(run.lease_until),
            run.cancel_requested,
            run.steps,
            to_i64(run.usage.prompt_tokens),
            to_i64(run.usage.completion_tokens),
            to_i64(run.usage.total_tokens),
            json_to_text(run.error.as_ref())?,
            json_to_text(Some(&run.pending_tool_calls).filter(|calls| !calls.is_empty()))?,
        ],
    )
    .map(drop)
}

/// The time of a run write: the clock's, in milliseconds.
fn run_now(cx: &WriteContext<'_>) -> chrono::DateTime<chrono::Utc> {
    truncate_to_millis(cx.clock.now())
}

pub(crate) fn start_run(
    cx: &mut WriteContext<'_>,
    scope: &Scope,
    id: ConversationId,
    new: NewRun,
) -> Result<Run> {
    let conn = cx.conn;
    let now = run_now(cx);
    let mut stored = read::conversation(conn, scope, id)?;
    if let Some(existing) = read::run(conn, id, new.id)? {
        // A retried start: answered from storage, never started again.
        return Ok(existing.settled(now));
    }
    if let Some(active) = stored.conversation.active_run_id
        && let Some(run) = read::run(conn, id, active)?
    {
        if run.is_live(now) {
            return Err(Error::RunInProgress { run_id: active });
        }
        // Abandoned: it stays failed from now on.
        let settled = run.clone().settled(now);
        if settled != run {
            write_run(conn, &settled)?;
        }
    }
    let mut run = new.into_run(id, now);
    run.lease_until = truncate_to_millis(run.lease_until);
    write_run(conn, &run)?;
    stored.conversation.active_run_id = Some(run.id);
    write_conversation(conn, &stored)?;
    Ok(run)
}

/// Changes one run of the conversation with `change` (given the run settled at the
/// time of the write, and the conversation, e.g. for its usage) and stores what
/// changed. A run the change leaves ended is no longer the conversation's
/// `active_run_id`.
fn change_run(
    cx: &mut WriteContext<'_>,
    scope: &Scope,
    id: ConversationId,
    run: RunId,
    change: impl FnOnce(&mut Run, &mut Conversation, chrono::DateTime<chrono::Utc>),
) -> Result<Run> {
    let conn = cx.conn;
    let now = run_now(cx);
    let mut stored = read::conversation(conn, scope, id)?;
    let before = read::run(conn, id, run)?.ok_or_else(run_not_found)?;
    let conversation_before = stored.conversation.clone();
    let mut changed = before.clone().settled(now);
    change(&mut changed, &mut stored.conversation, now);
    if changed.status.is_terminal() && stored.conversation.active_run_id == Some(run) {
        stored.conversation.active_run_id = None;
    }
    if changed != before {
        write_run(conn, &changed)?;
    }
    if stored.conversation != conversation_before {
        write_conversation(conn, &stored)?;
    }
    Ok(changed)
}

pub(crate) fn renew_run(
    cx: &mut WriteContext<'_>,
    scope: &Scope,
    id: ConversationId,
    run: RunId,
    lease: Duration,
) -> Result<Run> {
    change_run(cx, scope, id, run, |run, _, now| {
        if run.status == RunStatus::Running {
            run.lease_until = truncate_to_millis(lease_end(now, lease));
        }
    })
}

pub(crate) fn cancel_run(
    cx: &mut WriteContext<'_>,
    scope: &Scope,
    id: ConversationId,
    run: RunId,
) -> Result<Run> {
    change_run(cx, scope, id, run, |run, _, _| {
        if run.status == RunStatus::Running {
            run.cancel_requested = true;
        }
    })
}

pub(crate) fn finish_run(
    cx: &mut WriteContext<'_>,
    scope: &Scope,
    id: ConversationId,
    run: RunId,
    outcome: RunOutcome,
) -> Result<Run> {
    change_run(cx, scope, id, run, |run, conversation, now| {
        if outcome.apply_to(run, now) {
            conversation.usage += run.usage;
        }
    })
}

/// Imports a whole conversation, checked already with
/// [`ImportedConversation::check`]: its row, its messages with their parents as
/// seqs, its active path from the head, its words and metadata values.
pub(crate) fn import(
    cx: &mut WriteContext<'_>,
    scope: &Scope,
    imported: ImportedConversation,
) -> Result<ImportOutcome> {
    let conn = cx.conn;
    let ImportedConversation {
        mut conversation,
        mut messages,
    } = imported;
    let existing: Option<String> = conn
        .prepare_cached(sql::CONVERSATION_SCOPE)
        .and_then(|mut s| {
            s.query_row([key(conversation.id)], |row| row.get(0))
                .optional()
        })
        .map_err(db("reading a conversation"))?;
    match existing {
        Some(stored) if stored == scope.as_str() => return Ok(ImportOutcome::AlreadyPresent),
        Some(_) => return Ok(ImportOutcome::IdTaken),
        None => {}
    }
    conversation.scope = scope.clone();
    conversation.created_at = truncate_to_millis(conversation.created_at);
    conversation.updated_at = truncate_to_millis(conversation.updated_at);
    conversation.archived_at = conversation.archived_at.map(truncate_to_millis);
    let mut seqs: HashMap<MessageId, u64> = HashMap::with_capacity(messages.len());
    let mut parents: HashMap<u64, u64> = HashMap::with_capacity(messages.len());
    let mut children: HashMap<u64, u64> = HashMap::new();
    for message in &mut messages {
        message.created_at = truncate_to_millis(message.created_at);
        let parent = match message.parent_id {
            Some(parent) => *seqs.get(&parent).ok_or_else(message_not_found)?,
            None => 0,
        };
        seqs.insert(message.id, message.seq);
        parents.insert(message.seq, parent);
        *children.entry(parent).or_default() += 1;
    }
    // The active path, root first: the head and its ancestors.
    let mut path = Vec::new();
    let mut at = match conversation.head_id {
        Some(head) => *seqs.get(&head).ok_or_else(message_not_found)?,
        None => 0,
    };
    while at > 0 {
        path.push(at);
        at = parents.get(&at).copied().unwrap_or(0);
    }
    path.reverse();
    let stored = insert_new(
        conn,
        conversation,
        path.last().copied().unwrap_or(0),
        path.len() as u64,
    )?;
    for message in &messages {
        let parent = parents.get(&message.seq).copied().unwrap_or(0);
        insert_message(conn, message, parent)?;
        index_message(conn, &stored, message)?;
    }
    for seq in path {
        let parent = parents.get(&seq).copied().unwrap_or(0);
        join_path(
            conn,
            stored.conversation.id,
            seq,
            children.get(&parent).copied().unwrap_or(1),
        )?;
    }
    Ok(ImportOutcome::Imported)
}
