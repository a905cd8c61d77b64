//! Reads, shared by the read connections and the writer (which reads inside its
//! transactions): conversations, pages of messages, windows, and the siblings of a
//! message.

use chrono::{DateTime, Utc};
use conversation_core::backend::{MessageRange, SearchTerms, truncate_to_millis};
use conversation_core::{
    Conversation, ConversationId, ConversationQuery, Entity, Error, ExpiredConversation, Expiry,
    MAX_MATCHES_PER_HIT, Message, MessageId, MessagePage, MessageView, Page, RecentQuery, Result,
    RetentionQuery, Role, Run, RunId, SIBLING_WINDOW, Scope, SearchHit, SearchMatch, SearchQuery,
    Siblings,
};
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::error::{bad_row, db};
use crate::readers::pace;
use crate::rows::{
    MessageRow, StoredConversation, count_at, get, metadata_value, millis, run_at, time_at, to_i64,
    uuid_at,
};
use crate::search;
use crate::sql;

/// A conversation, `NotFound` unless it is in the scope.
pub(crate) fn conversation(
    conn: &Connection,
    scope: &Scope,
    id: ConversationId,
) -> Result<StoredConversation> {
    let mut statement = conn
        .prepare_cached(sql::GET_CONVERSATION)
        .map_err(db("reading a conversation"))?;
    let mut rows = statement
        .query(params![&id.as_bytes()[..], scope.as_str()])
        .map_err(db("reading a conversation"))?;
    match rows.next().map_err(db("reading a conversation"))? {
        Some(row) => StoredConversation::read(row, scope),
        None => Err(Error::conversation_not_found()),
    }
}

/// `NotFound` unless the conversation exists in the scope.
pub(crate) fn ensure_exists(conn: &Connection, scope: &Scope, id: ConversationId) -> Result<()> {
    conn.prepare_cached(sql::CONVERSATION_EXISTS)
        .and_then(|mut s| {
            s.query_row(params![&id.as_bytes()[..], scope.as_str()], |_| Ok(()))
                .optional()
        })
        .map_err(db("reading a conversation"))?
        .ok_or_else(Error::conversation_not_found)
}

fn message_not_found() -> Error {
    Error::NotFound {
        entity: Entity::Message,
    }
}

/// The message of a row, with its siblings.
pub(crate) fn finish(
    conn: &Connection,
    conversation: ConversationId,
    row: MessageRow,
) -> Result<Message> {
    let mut message = row.message;
    message.siblings = siblings(
        conn,
        conversation,
        row.parent_seq,
        message.seq,
        message.id,
        row.siblings,
    )?;
    Ok(message)
}

/// The siblings of message `id` (`seq`, child of `parent_seq`), of which there are
/// `count`: only itself when it is its parent's only child (nothing is read, the
/// common case), else two bounded range reads of `messages_by_parent`, and a count
/// only when more than the window lie before it.
pub(crate) fn siblings(
    conn: &Connection,
    conversation: ConversationId,
    parent_seq: u64,
    seq: u64,
    id: MessageId,
    count: u64,
) -> Result<Siblings> {
    if count <= 1 {
        return Ok(Siblings::only(id));
    }
    let key = params![
        &conversation.as_bytes()[..],
        to_i64(parent_seq),
        to_i64(seq)
    ];
    let ids = |statement: &str| -> Result<Vec<MessageId>> {
        let mut statement = conn
            .prepare_cached(statement)
            .map_err(db("reading siblings"))?;
        let rows = statement
            .query_map(key, |row| row.get::<_, [u8; 16]>(0))
            .map_err(db("reading siblings"))?;
        rows.map(|bytes| {
            bytes
                .map(|bytes| MessageId::from_uuid(uuid::Uuid::from_bytes(bytes)))
                .map_err(db("reading siblings"))
        })
        .collect()
    };
    let before = ids(sql::SIBLINGS_BEFORE)?;
    let index = if before.len() <= SIBLING_WINDOW {
        before.len() as u64
    } else {
        let mut statement = conn
            .prepare_cached(sql::SIBLINGS_BEFORE_COUNT)
            .map_err(db("counting siblings"))?;
        statement
            .query_row(key, |row| row.get::<_, i64>(0))
            .map_err(db("counting siblings"))? as u64
    };
    let after = ids(sql::SIBLINGS_AFTER)?;
    // Never fewer than seen, whatever the stored count says.
    let seen = index + 1 + after.len() as u64;
    let mut window: Vec<MessageId> = before.into_iter().take(SIBLING_WINDOW).rev().collect();
    window.push(id);
    window.extend(after);
    Ok(Siblings {
        ids: window,
        count: count.max(seen),
        index,
    })
}

/// A message of the conversation by its id, with its siblings and whether it is on
/// the active path; `NotFound` for the conversation or the message.
pub(crate) fn message_by_id(
    conn: &Connection,
    scope: &Scope,
    conversation: ConversationId,
    message: MessageId,
) -> Result<(MessageRow, bool)> {
    let found = conn
        .prepare_cached(sql::MESSAGE_BY_ID)
        .and_then(|mut s| {
            s.query_row(
                params![
                    &conversation.as_bytes()[..],
                    scope.as_str(),
                    &message.as_bytes()[..]
                ],
                |row| {
                    let on_path: bool = row.get(crate::sql::message_column::NAMES.len())?;
                    Ok((MessageRow::read(row, conversation), on_path))
                },
            )
            .optional()
        })
        .map_err(db("reading a message"))?;
    match found {
        Some((row, on_path)) => Ok((row?, on_path)),
        None => {
            ensure_exists(conn, scope, conversation)?;
            Err(message_not_found())
        }
    }
}

/// Runs a message statement and offers each row, with its siblings, to `take`
/// until it answers `false`. Rows are finished (siblings read) while the statement
/// is still running, so that they see the same snapshot. Returns whether any row
/// came.
fn each_message(
    conn: &Connection,
    conversation: ConversationId,
    statement: &str,
    params: &[&dyn rusqlite::ToSql],
    mut take: impl FnMut(Message) -> bool,
) -> Result<bool> {
    let mut statement = conn
        .prepare_cached(statement)
        .map_err(db("reading messages"))?;
    let mut rows = statement.query(params).map_err(db("reading messages"))?;
    let mut any = false;
    pace(|bytes| {
        let Some(row) = rows.next().map_err(db("reading messages"))? else {
            return Ok(false);
        };
        any = true;
        let message = finish(conn, conversation, MessageRow::read(row, conversation)?)?;
        *bytes += message.content.len() + 256;
        Ok(take(message))
    })?;
    Ok(any)
}

/// A page of messages, stopping as [`MessageRange::page_builder`] decides.
pub(crate) fn page(
    conn: &Connection,
    scope: &Scope,
    id: ConversationId,
    range: &MessageRange,
    max_page_bytes: usize,
) -> Result<MessagePage> {
    // One row more than the page, so the builder learns whether more follow.
    let statement = match range.view {
        MessageView::Path => sql::path_messages(range.newest_first, range.limit + 1),
        MessageView::All => sql::all_messages(range.newest_first, range.limit + 1),
    };
    let mut page = range.page_builder(max_page_bytes);
    let any = each_message(
        conn,
        id,
        &statement,
        params![
            &id.as_bytes()[..],
            scope.as_str(),
            to_i64(range.after),
            range.before.map_or(i64::MAX, to_i64)
        ],
        |message| page.push(message),
    )?;
    if !any {
        ensure_exists(conn, scope, id)?;
    }
    Ok(page.finish())
}

/// The last `query.n` messages of the path ending at the head or at `query.leaf`,
/// ascending.
pub(crate) fn recent(
    conn: &Connection,
    scope: &Scope,
    id: ConversationId,
    query: &RecentQuery,
) -> Result<Vec<Message>> {
    if query.n == 0 {
        // Still `NotFound` for a conversation or a leaf that is not there.
        match query.leaf {
            Some(leaf) => drop(message_by_id(conn, scope, id, leaf)?),
            None => ensure_exists(conn, scope, id)?,
        }
        return Ok(Vec::new());
    }
    let before = match query.leaf {
        None => i64::MAX,
        Some(leaf) => {
            return snapshot(conn, |conn| {
                let (row, on_path) = message_by_id(conn, scope, id, leaf)?;
                if on_path {
                    path_window(conn, scope, id, query.n, to_i64(row.message.seq) + 1)
                } else {
                    ancestors(conn, id, row.message.seq, query.n)
                }
            });
        }
    };
    path_window(conn, scope, id, query.n, before)
}

/// The last `n` messages of the active path before seq `before`, ascending.
fn path_window(
    conn: &Connection,
    scope: &Scope,
    id: ConversationId,
    n: usize,
    before: i64,
) -> Result<Vec<Message>> {
    let mut messages = Vec::with_capacity(n.min(64));
    let any = each_message(
        conn,
        id,
        &sql::path_messages(true, n),
        params![&id.as_bytes()[..], scope.as_str(), 0_i64, before],
        |message| {
            messages.push(message);
            true
        },
    )?;
    if !any {
        ensure_exists(conn, scope, id)?;
    }
    messages.reverse();
    Ok(messages)
}

/// The path ending at `leaf` (not on the active path), at most `n` messages,
/// ascending: one lookup per message.
pub(crate) fn ancestors(
    conn: &Connection,
    id: ConversationId,
    leaf: u64,
    n: usize,
) -> Result<Vec<Message>> {
    let mut messages = Vec::with_capacity(n.min(64));
    each_message(
        conn,
        id,
        sql::ANCESTORS,
        params![
            &id.as_bytes()[..],
            to_i64(leaf),
            i64::try_from(n).unwrap_or(i64::MAX)
        ],
        |message| {
            messages.push(message);
            true
        },
    )?;
    messages.sort_unstable_by_key(|m| m.seq);
    Ok(messages)
}

/// One page of the scope's conversations.
pub(crate) fn list(
    conn: &Connection,
    scope: &Scope,
    query: &ConversationQuery,
) -> Result<Page<Conversation>> {
    use rusqlite::types::Value;
    let limit = query.page_size()?;
    let position = query.position()?;
    let needle = query.title_filter()?;
    query.check_metadata_filter()?;
    let mut parameters = vec![
        Value::Text(scope.as_str().to_owned()),
        position.map_or(Value::Null, |p| Value::Integer(i64::from(p.pinned))),
        position.map_or(Value::Null, |p| Value::Integer(millis(p.updated_at))),
        position.map_or(Value::Null, |p| Value::Blob(p.id.as_bytes().to_vec())),
        needle.clone().map_or(Value::Null, Value::Text),
    ];
    let mut filters = 0;
    for (key, value) in &query.metadata_equals {
        let Some((kind, value)) = metadata_value(value) else {
            // `check_metadata_filter` takes scalars only.
            return Err(Error::invalid(format!("metadata.{key}"), "not a scalar"));
        };
        parameters.extend([
            Value::Text(key.clone()),
            Value::Text(kind.to_owned()),
            value,
        ]);
        filters += 1;
    }
    let statement = if filters == 0 {
        sql::list_conversations(
            query.archived,
            query.pinned_first,
            position.is_some(),
            needle.is_some(),
            limit + 1,
        )
    } else {
        sql::list_conversations_by_metadata(
            query.archived,
            query.pinned_first,
            position.is_some(),
            needle.is_some(),
            filters,
            limit + 1,
        )
    };
    let mut statement = conn
        .prepare_cached(&statement)
        .map_err(db("listing conversations"))?;
    // Bind only the parameters the statement has: a list without a cursor or a
    // filter uses only the scope.
    let used = statement.parameter_count().min(parameters.len());
    let mut rows = statement
        .query(rusqlite::params_from_iter(&parameters[..used]))
        .map_err(db("listing conversations"))?;
    let mut items = Vec::with_capacity(limit + 1);
    while let Some(row) = rows.next().map_err(db("listing conversations"))? {
        items.push(StoredConversation::read(row, scope)?.conversation);
    }
    Ok(query.page_from(items, limit))
}

/// A run of the conversation, as stored (not settled).
pub(crate) fn run(
    conn: &Connection,
    conversation: ConversationId,
    run: RunId,
) -> Result<Option<Run>> {
    conn.prepare_cached(sql::GET_RUN)
        .and_then(|mut s| {
            s.query_row(
                params![&conversation.as_bytes()[..], &run.as_bytes()[..]],
                |row| Ok(run_at(row, conversation)),
            )
            .optional()
        })
        .map_err(db("reading a run"))?
        .transpose()
}

/// A run of the conversation in the scope, settled at `now`.
pub(crate) fn settled_run(
    conn: &Connection,
    scope: &Scope,
    id: ConversationId,
    run_id: RunId,
    now: DateTime<Utc>,
) -> Result<Run> {
    snapshot(conn, |conn| {
        ensure_exists(conn, scope, id)?;
        run(conn, id, run_id)?
            .map(|run| run.settled(now))
            .ok_or(Error::NotFound {
                entity: Entity::Run,
            })
    })
}

/// A page of a search of the scope.
pub(crate) fn search(
    conn: &Connection,
    scope: &Scope,
    query: &SearchQuery,
) -> Result<Page<SearchHit>> {
    let terms = query.terms()?;
    let limit = query.page_size()?;
    let position = query.position()?;
    snapshot(conn, |conn| {
        let Some(scope_key) = search::scope_key(conn, scope)? else {
            return Ok(query.page_from(Vec::new(), limit));
        };
        let expression = search::match_expression(scope_key, &terms);
        let statement = sql::search_hits(query.archived, position.is_some(), limit + 1);
        let mut found = Vec::with_capacity(limit + 1);
        {
            let mut statement = conn.prepare_cached(&statement).map_err(db("searching"))?;
            let parameters = params![
                expression,
                scope.as_str(),
                position.map(|p| p.score),
                position.map(|p| millis(p.updated_at)),
                position.map(|p| p.id.as_bytes().to_vec()),
            ];
            let used = statement.parameter_count().min(parameters.len());
            let mut rows = statement
                .query(&parameters[..used])
                .map_err(db("searching"))?;
            while let Some(row) = rows.next().map_err(db("searching"))? {
                let stored = StoredConversation::read(row, scope)?;
                let columns = sql::conversation_column::NAMES.len();
                let score: f64 = row.get(columns).map_err(db("searching"))?;
                let seqs: String = row.get(columns + 1).map_err(db("searching"))?;
                let seqs = seqs
                    .split(',')
                    .map(|seq| {
                        seq.parse::<i64>()
                            .map_err(|_| bad_row(format!("search matches {seqs:?}")))
                    })
                    .collect::<Result<Vec<i64>>>()?;
                found.push((stored, score, seqs));
            }
        }
        let mut hits = Vec::with_capacity(found.len());
        // The page's hits only (the extra row tells whether more follow).
        for (index, (stored, score, seqs)) in found.into_iter().enumerate() {
            let matches = if index < limit {
                matches(conn, &terms, &stored, seqs)?
            } else {
                Vec::new()
            };
            hits.push(SearchHit {
                conversation: stored.conversation,
                score,
                matches,
            });
        }
        Ok(query.page_from(hits, limit))
    })
}

/// The best rows of a conversation a search found (their seqs, best first; 0 for the
/// title), as matches built from the stored text.
fn matches(
    conn: &Connection,
    terms: &SearchTerms,
    stored: &StoredConversation,
    seqs: Vec<i64>,
) -> Result<Vec<SearchMatch>> {
    let conversation = &stored.conversation;
    let mut matches = Vec::with_capacity(seqs.len());
    for seq in seqs.into_iter().take(MAX_MATCHES_PER_HIT) {
        if seq == 0 {
            let title = conversation.title.as_deref().unwrap_or_default();
            matches.push(SearchMatch::in_title(terms, title));
            continue;
        }
        let found = conn
            .prepare_cached(sql::MATCHED_MESSAGE)
            .and_then(|mut s| {
                s.query_row(params![&conversation.id.as_bytes()[..], seq], |row| {
                    Ok((
                        row.get::<_, [u8; 16]>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })
                .optional()
            })
            .map_err(db("searching"))?;
        let Some((id, role, content)) = found else {
            return Err(bad_row(format!(
                "the search index names message {seq}, which is not stored"
            )));
        };
        let role = Role::parse(&role).ok_or_else(|| bad_row(format!("role {role:?}")))?;
        matches.push(SearchMatch::in_message(
            terms,
            MessageId::from_uuid(uuid::Uuid::from_bytes(id)),
            seq as u64,
            role,
            &content,
        ));
    }
    Ok(matches)
}

/// The conversations retention finds.
pub(crate) fn expired(
    conn: &Connection,
    query: &RetentionQuery,
) -> Result<Vec<ExpiredConversation>> {
    let (by_archive, cutoff) = match query.expiry {
        Expiry::InactiveBefore(at) => (false, at),
        Expiry::ArchivedBefore(at) => (true, at),
    };
    // Times are stored in whole milliseconds: `at < cutoff` is `at < ceil(cutoff)`.
    let floor = millis(cutoff);
    let cutoff_millis = if truncate_to_millis(cutoff) < cutoff {
        floor.saturating_add(1)
    } else {
        floor
    };
    let statement = sql::expired(
        by_archive,
        query.scope.is_some(),
        query.after.is_some(),
        query.include_pinned,
    );
    let mut statement = conn
        .prepare_cached(&statement)
        .map_err(db("listing expired conversations"))?;
    let parameters = params![
        cutoff_millis,
        query.after.map(|(at, _)| millis(at)),
        query.after.map(|(_, id)| id.as_bytes().to_vec()),
        i64::try_from(query.limit).unwrap_or(i64::MAX),
        query.scope.as_ref().map(Scope::as_str),
    ];
    let used = statement.parameter_count().min(parameters.len());
    let mut rows = statement
        .query(&parameters[..used])
        .map_err(db("listing expired conversations"))?;
    let mut expired = Vec::new();
    while let Some(row) = rows.next().map_err(db("listing expired conversations"))? {
        let scope: String = get(row, 0)?;
        expired.push(ExpiredConversation {
            scope: Scope::new(scope).map_err(|e| bad_row(format!("scope: {e}")))?,
            id: ConversationId::from_uuid(uuid_at(row, 1)?),
            title: get(row, 2)?,
            pinned: get(row, 3)?,
            at: time_at(row, 4)?,
        });
    }
    Ok(expired)
}

/// Runs the statements of `read` in one read transaction, so that they see one
/// state of the database.
pub(crate) fn snapshot<T>(
    conn: &Connection,
    read: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    let statement = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(db("reading in a transaction"))
    };
    if !conn.is_autocommit() {
        return read(conn); // already in one (the writer's)
    }
    statement("BEGIN")?;
    let result = read(conn);
    statement("COMMIT")?;
    result
}

/// A count of one row and column.
pub(crate) fn count(
    conn: &Connection,
    statement: &str,
    params: impl rusqlite::Params,
) -> Result<u64> {
    conn.prepare_cached(statement)
        .and_then(|mut s| s.query_row(params, |row| Ok(count_at(row, 0))))
        .map_err(db("reading the tree"))?
}
