//! The write transactions. Each one is `READ COMMITTED` and takes the conversation's
//! row lock first (`SELECT … FOR NO KEY UPDATE`), so that appends, branches, switches,
//! deletions, forks and titles of one conversation run one after the other, across
//! processes; every transaction takes that one row lock before any other, so there is
//! no lock cycle to deadlock on.

use conversation_core::{Conversation, ConversationId, Error, Result, Scope};
use sqlx::postgres::PgConnection;
use sqlx::{Postgres, Transaction};

use crate::PostgresStore;
use crate::error::db;
use crate::plans::{Param, Read};
use crate::rows::{self, count, get};
use crate::tree::Head;

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
    pub(crate) async fn lock(
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
}
