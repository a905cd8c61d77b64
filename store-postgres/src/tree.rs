//! The steps of the tree that the write transactions ([`crate::write`]) share: finding
//! a message, moving the active path, the newest leaf under a message, reading
//! siblings back, the fork statement. Each runs inside a transaction that holds the
//! conversation's row lock.

use std::collections::HashMap;
use std::sync::Arc;

use conversation_core::{Conversation, ConversationId, MessageId, Result, Siblings};
use serde_json::Value;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use crate::PostgresStore;
use crate::error::{db, message_not_found};
use crate::plans::{Param, Read};
use crate::rows::{self, count, get, to_i64};

/// A message of the locked conversation, as a tree write needs it.
pub(crate) struct Node {
    pub(crate) seq: u64,
    pub(crate) parent_id: Option<MessageId>,
    pub(crate) depth: u64,
    pub(crate) on_path: bool,
    /// Its children.
    pub(crate) children: Children,
}

/// The children of a message, or the roots, as an append needs them: a new one
/// takes the place after the last.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Children {
    /// How many there are.
    pub(crate) count: u64,
    /// The seq of the newest one, which stops being the last.
    pub(crate) last: Option<u64>,
}

impl Children {
    fn read(row: &sqlx::postgres::PgRow) -> Result<Self> {
        Ok(Self {
            count: count(get(row, "children")?, "children")?,
            last: get::<Option<i64>>(row, "last_child")?
                .map(|seq| count(seq, "seq"))
                .transpose()?,
        })
    }
}

/// The head of a conversation, or the message that is to be it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) id: MessageId,
    pub(crate) seq: u64,
    pub(crate) depth: u64,
}

impl Head {
    /// The head's three columns as parameters: `head_id`, `head_seq`, `head_depth`.
    pub(crate) fn params(head: Option<Head>) -> Result<[Param; 3]> {
        let number = |n: Option<u64>, what| n.map(|n| to_i64(n, what)).transpose();
        Ok([
            id_param(head.map(|h| h.id)),
            Param::OptInt(number(head.map(|h| h.seq), "seq")?),
            Param::OptInt(number(head.map(|h| h.depth), "depth")?),
        ])
    }
}

pub(crate) fn id_param(id: Option<MessageId>) -> Param {
    Param::OptId(id.map(Uuid::from))
}

pub(crate) fn id_param_run(id: Option<conversation_core::RunId>) -> Param {
    Param::OptId(id.map(Uuid::from))
}

impl PostgresStore {
    /// A message of the locked conversation `id`; `NotFound` when it is not one.
    pub(crate) async fn resolve(
        &self,
        conn: &mut PgConnection,
        id: ConversationId,
        message: MessageId,
        what: &'static str,
    ) -> Result<Node> {
        let row = Read::new(self.sql.resolve.clone())
            .param(Param::Id(*id.as_uuid()))
            .param(Param::Id(*message.as_uuid()))
            .query(false)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db(what))?
            .ok_or_else(message_not_found)?;
        Ok(Node {
            seq: count(get(&row, "seq")?, "seq")?,
            parent_id: get::<Option<Uuid>>(&row, "parent_id")?.map(MessageId::from_uuid),
            depth: count(get(&row, "depth")?, "depth")?,
            on_path: get(&row, "on_path")?,
            children: Children::read(&row)?,
        })
    }

    /// The roots of the locked conversation `id`.
    pub(crate) async fn roots(
        &self,
        conn: &mut PgConnection,
        id: ConversationId,
        what: &'static str,
    ) -> Result<Children> {
        let row = Self::statement(&self.sql.roots, vec![Param::Id(*id.as_uuid())])
            .query(false)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db(what))?;
        row.as_ref().map_or(Ok(Children::default()), Children::read)
    }

    /// Runs a statement of the locked conversation whose parameters are `params`.
    pub(crate) fn statement(sql: &Arc<str>, params: Vec<Param>) -> Read {
        params.into_iter().fold(Read::new(sql.clone()), Read::param)
    }

    /// Makes the message at `head` (none: no message) the end of the active path.
    pub(crate) async fn move_path(
        &self,
        conn: &mut PgConnection,
        id: ConversationId,
        head: Option<u64>,
        what: &'static str,
    ) -> Result<()> {
        let head = head.map(|seq| to_i64(seq, "seq")).transpose()?;
        Self::statement(
            &self.sql.move_path,
            vec![Param::Id(*id.as_uuid()), Param::OptInt(head)],
        )
        .query(false)
        .execute(&mut *conn)
        .await
        .map_err(db(what))?;
        Ok(())
    }

    /// The newest leaf under `under`, not entering the subtree of `excluding`.
    pub(crate) async fn newest_under(
        &self,
        conn: &mut PgConnection,
        id: ConversationId,
        under: MessageId,
        excluding: Option<MessageId>,
        what: &'static str,
    ) -> Result<Option<Head>> {
        let params = vec![
            Param::Id(*id.as_uuid()),
            Param::Id(*under.as_uuid()),
            id_param(excluding),
        ];
        self.message_at(conn, Self::statement(&self.sql.newest_under, params), what)
            .await
    }

    /// The `id`, `seq` and `depth` a statement returns, if it returns a row.
    pub(crate) async fn message_at(
        &self,
        conn: &mut PgConnection,
        read: Read,
        what: &'static str,
    ) -> Result<Option<Head>> {
        let row = read
            .query(false)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db(what))?;
        row.map(|row| {
            Ok(Head {
                id: MessageId::from_uuid(get(&row, "id")?),
                seq: count(get(&row, "seq")?, "seq")?,
                depth: count(get(&row, "depth")?, "depth")?,
            })
        })
        .transpose()
    }

    /// The siblings of the messages at `seqs`, read in the transaction.
    pub(crate) async fn siblings_of(
        &self,
        conn: &mut PgConnection,
        id: ConversationId,
        seqs: Vec<i64>,
        what: &'static str,
    ) -> Result<HashMap<MessageId, Siblings>> {
        if seqs.is_empty() {
            return Ok(HashMap::new());
        }
        let found = sqlx::query(AssertSqlSafe(self.sql.messages_by_seq.clone()))
            .bind(id.as_uuid())
            .bind(seqs)
            .fetch_all(&mut *conn)
            .await
            .map_err(db(what))?;
        let mut siblings = HashMap::with_capacity(found.len());
        for row in &found {
            if let Some(message) = rows::message(row)? {
                siblings.insert(message.id, message.siblings);
            }
        }
        Ok(siblings)
    }

    /// The fork statement copying the path to the message at `seq` of `source` into
    /// `fork`.
    pub(crate) fn fork_read(
        &self,
        source: ConversationId,
        seq: u64,
        fork: &Conversation,
    ) -> Result<Read> {
        Ok(Self::statement(
            &self.sql.fork,
            vec![
                Param::Id(*source.as_uuid()),
                Param::Int(to_i64(seq, "seq")?),
                Param::Id(*fork.id.as_uuid()),
                Param::Text(fork.scope.as_str().to_owned()),
                Param::OptText(fork.title.clone()),
                Param::Text(fork.title_source.as_str().to_owned()),
                Param::Time(fork.created_at),
                Param::Time(fork.updated_at),
                Param::Int(to_i64(fork.message_count, "message_count")?),
                Param::Int(to_i64(fork.last_seq, "last_seq")?),
                id_param(fork.head_id),
                Param::Bool(fork.pinned),
                Param::Bool(fork.archived),
                Param::Json(Value::Object(fork.metadata.clone())),
                Param::Int(to_i64(fork.version, "version")?),
                Param::OptTime(fork.archived_at),
                id_param_run(fork.active_run_id),
                Param::Int(to_i64(fork.usage.prompt_tokens, "prompt_tokens")?),
                Param::Int(to_i64(fork.usage.completion_tokens, "completion_tokens")?),
                Param::Int(to_i64(fork.usage.total_tokens, "total_tokens")?),
                Param::Text(crate::write::title_words(fork)),
            ],
        ))
    }
}
