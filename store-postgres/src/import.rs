//! Importing a whole conversation in one transaction: its row, its messages with
//! their tree columns derived from the parents, their words.

use std::collections::HashMap;

use conversation_core::backend::truncate_to_millis;
use conversation_core::{
    Conversation, Error, ImportOutcome, ImportedConversation, Message, MessageId, Result, Scope,
};
use serde_json::Value;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use crate::PostgresStore;
use crate::error::{db, message_not_found};
use crate::plans::Param;
use crate::rows::{get, to_i64};
use crate::search;
use crate::tree::Head;
use crate::write::insert_params;

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
