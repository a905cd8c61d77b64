//! The reads: each one statement (or one per page of a stream), through the indexes
//! the [crate docs](crate#the-schema) list, built as [`Read`]s so that
//! [`PostgresStore::explain_reads`] explains the very statements sent.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::TimeDelta;
use conversation_core::backend::{MessageRange, SearchTerms, truncate_to_millis};
use conversation_core::{
    Conversation, ConversationId, ConversationQuery, Entity, Error, ExpiredConversation, Expiry,
    MAX_MATCHES_PER_HIT, Message, MessageId, MessagePage, MessageQuery, MessageView, Page,
    RecentQuery, Result, RetentionQuery, Role, Run, RunId, Scope, SearchHit, SearchMatch,
    SearchQuery,
};
use futures::TryStreamExt as _;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::PostgresStore;
use crate::error::{bad_row, db, message_not_found};
use crate::plans::{Param, Read};
use crate::rows::{self, count, get, to_i64};
use crate::search;

/// `u64` or `usize` bounds beyond `i64` mean "no bound": no seq reaches them.
fn bound(value: impl TryInto<i64>) -> Param {
    Param::Int(value.try_into().unwrap_or(i64::MAX))
}

/// Rows of a page come in the order of their index; a row out of it would cut the
/// page wrongly, so it fails loudly instead.
fn out_of_order(what: &str) -> Error {
    Error::Backend {
        message: format!("{what}: rows came out of seq order"),
        source: None,
    }
}

impl PostgresStore {
    /// `$1` id, `$2` scope: the first two parameters of every scoped read.
    fn scoped(&self, sql: &Arc<str>, scope: &Scope, id: ConversationId) -> Read {
        Read::new(Arc::clone(sql))
            .param(Param::Id(*id.as_uuid()))
            .param(Param::Text(scope.as_str().to_owned()))
    }

    pub(crate) fn get_read(&self, scope: &Scope, id: ConversationId) -> Read {
        self.scoped(&self.sql.get, scope, id)
    }

    /// The window: the newest page of the path, `n` long.
    pub(crate) fn window_read(&self, scope: &Scope, id: ConversationId, n: usize) -> Read {
        self.scoped(&self.sql.path_newest, scope, id)
            .param(Param::Int(0))
            .param(Param::Int(i64::MAX))
            .param(bound(n))
    }

    pub(crate) fn window_from_read(
        &self,
        scope: &Scope,
        id: ConversationId,
        leaf: MessageId,
        n: usize,
    ) -> Read {
        self.scoped(&self.sql.window_from, scope, id)
            .param(Param::Id(*leaf.as_uuid()))
            .param(bound(n))
    }

    pub(crate) fn message_read(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Read {
        self.scoped(&self.sql.get_message, scope, id)
            .param(Param::Id(*message.as_uuid()))
    }

    /// A page of messages; it reads one row more than the page, to tell whether more
    /// lie beyond it.
    pub(crate) fn page_read(
        &self,
        scope: &Scope,
        id: ConversationId,
        range: &MessageRange,
    ) -> Read {
        let statement = match (range.view, range.newest_first) {
            (MessageView::Path, true) => &self.sql.path_newest,
            (MessageView::Path, false) => &self.sql.path_oldest,
            (MessageView::All, true) => &self.sql.all_newest,
            (MessageView::All, false) => &self.sql.all_oldest,
        };
        self.scoped(statement, scope, id)
            .param(bound(range.after))
            .param(range.before.map_or(Param::Int(i64::MAX), bound))
            .param(bound(range.limit + 1))
    }

    /// The read of one list page and the page size; it reads one row more than the
    /// page to know whether another page follows.
    pub(crate) fn list_read(
        &self,
        scope: &Scope,
        query: &ConversationQuery,
    ) -> Result<(Read, usize)> {
        let limit = query.page_size()?;
        let position = query.position()?;
        let needle = query.title_filter()?;
        query.check_metadata_filter()?;
        let metadata = (!query.metadata_equals.is_empty())
            .then(|| serde_json::Value::Object(query.metadata_equals.clone()));
        let sql = self.sql.list(
            query.archived,
            query.pinned_first,
            position.is_some(),
            needle.is_some(),
            metadata.is_some(),
        );
        let mut read = Read::new(sql)
            .param(Param::Text(scope.as_str().to_owned()))
            .param(Param::Int(to_i64(limit as u64 + 1, "limit")?));
        if let Some(position) = position {
            if query.pinned_first {
                read = read.param(Param::Bool(position.pinned));
            }
            read = read
                .param(Param::Time(position.updated_at))
                .param(Param::Id(*position.id.as_uuid()));
        }
        if let Some(needle) = needle {
            read = read.param(Param::Text(needle));
        }
        if let Some(metadata) = metadata {
            read = read.param(Param::Json(metadata));
        }
        Ok((read, limit))
    }

    /// Runs a read of messages whose rows come in read order, feeding them to
    /// `accept` until it answers `false`; `NotFound` when the conversation is not in
    /// the scope (no row at all).
    async fn read_messages(
        &self,
        read: Read,
        what: &'static str,
        mut accept: impl FnMut(&PgRow, Message) -> Result<bool>,
    ) -> Result<()> {
        let query = read.query(false);
        let mut rows = query.fetch(&self.pool);
        let mut found = false;
        while let Some(row) = rows.try_next().await.map_err(db(what))? {
            found = true;
            // An all-NULL row: the conversation, without the messages asked for.
            if let Some(message) = rows::message(&row)?
                && !accept(&row, message)?
            {
                break;
            }
        }
        if found {
            Ok(())
        } else {
            Err(Error::conversation_not_found())
        }
    }

    /// One conversation.
    pub(crate) async fn conversation(
        &self,
        scope: &Scope,
        id: ConversationId,
    ) -> Result<Conversation> {
        let row: Option<PgRow> = self
            .get_read(scope, id)
            .query(false)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("get conversation"))?;
        row.as_ref()
            .map(rows::conversation)
            .transpose()?
            .ok_or_else(Error::conversation_not_found)
    }

    /// A page of the scope's conversations.
    pub(crate) async fn list(
        &self,
        scope: &Scope,
        query: &ConversationQuery,
    ) -> Result<Page<Conversation>> {
        let (read, limit) = self.list_read(scope, query)?;
        let found = read
            .query(false)
            .fetch_all(&self.pool)
            .await
            .map_err(db("list conversations"))?;
        let items = found
            .iter()
            .map(rows::conversation)
            .collect::<Result<Vec<_>>>()?;
        Ok(query.page_from(items, limit))
    }

    /// One message, with its siblings.
    pub(crate) async fn message_by_id(
        &self,
        scope: &Scope,
        id: ConversationId,
        message: MessageId,
    ) -> Result<Message> {
        let mut found = None;
        self.read_messages(
            self.message_read(scope, id, message),
            "get a message",
            |_, m| {
                found = Some(m);
                Ok(false)
            },
        )
        .await?;
        found.ok_or_else(message_not_found)
    }

    /// A page of messages, fed to the page builder as the rows stream in.
    pub(crate) async fn page(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &MessageQuery,
    ) -> Result<MessagePage> {
        const WHAT: &str = "list messages";
        let range = query.range()?;
        let mut page = range.page_builder(self.limits.max_page_bytes);
        let mut last: Option<u64> = None;
        self.read_messages(self.page_read(scope, id, &range), WHAT, |_, message| {
            let seq = message.seq;
            if last.is_some_and(|last| (seq < last) != range.newest_first) {
                return Err(out_of_order(WHAT));
            }
            last = Some(seq);
            Ok(page.push(message))
        })
        .await?;
        Ok(page.finish())
    }

    /// The last `n` messages of a path, oldest first.
    pub(crate) async fn recent(
        &self,
        scope: &Scope,
        id: ConversationId,
        query: &RecentQuery,
    ) -> Result<Vec<Message>> {
        const WHAT: &str = "read recent messages";
        self.limits.check_recent(query)?;
        let mut messages = Vec::with_capacity(query.n.min(64));
        match query.leaf {
            None => {
                let read = self.window_read(scope, id, query.n);
                self.read_messages(read, WHAT, |_, message| {
                    messages.push(message);
                    Ok(true)
                })
                .await?;
            }
            Some(leaf) => {
                let mut leaf_found = false;
                let read = self.window_from_read(scope, id, leaf, query.n);
                self.read_messages(read, WHAT, |row, message| {
                    leaf_found = true;
                    let k: i32 = get(row, "k")?;
                    if usize::try_from(k).is_ok_and(|k| k <= query.n) {
                        messages.push(message);
                    }
                    Ok(true)
                })
                .await?;
                if !leaf_found {
                    return Err(message_not_found());
                }
            }
        }
        messages.sort_unstable_by_key(|m| m.seq);
        Ok(messages)
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

    /// The read of a page of a search, its words and its page size; it reads one hit
    /// more than the page to know whether another page follows.
    pub(crate) fn search_read(
        &self,
        scope: &Scope,
        query: &SearchQuery,
    ) -> Result<(Read, SearchTerms, usize)> {
        let terms = query.terms()?;
        let limit = query.page_size()?;
        let position = query.position()?;
        let mut read = Read::new(self.sql.search(query.archived, position.is_some()))
            .param(Param::Text(search::query(scope.as_str(), &terms)))
            .param(Param::Text(scope.as_str().to_owned()))
            .param(Param::Int(to_i64(limit as u64 + 1, "limit")?));
        if let Some(position) = position {
            read = read
                .param(Param::Float(position.score))
                .param(Param::Time(position.updated_at))
                .param(Param::Id(*position.id.as_uuid()));
        }
        Ok((read, terms, limit))
    }

    /// A page of a search: the hits in rank order, then their matches, built by core
    /// from the stored text read by primary key.
    pub(crate) async fn search_page(
        &self,
        scope: &Scope,
        query: &SearchQuery,
    ) -> Result<Page<SearchHit>> {
        const WHAT: &str = "search";
        let (read, terms, limit) = self.search_read(scope, query)?;
        let found = read
            .query(false)
            .fetch_all(&self.pool)
            .await
            .map_err(db(WHAT))?;
        let mut hits = Vec::with_capacity(found.len());
        let mut seqs_of = Vec::with_capacity(found.len());
        for row in &found {
            let conversation = rows::conversation(row)?;
            let score: f64 = get(row, "score")?;
            let seqs: Vec<i64> = get(row, "seqs")?;
            seqs_of.push(seqs);
            hits.push(SearchHit {
                conversation,
                score,
                matches: Vec::new(),
            });
        }
        // The page's hits only (the extra one tells whether more follow).
        let (mut keys, mut seqs) = (Vec::new(), Vec::new());
        for (hit, hit_seqs) in hits.iter().zip(&seqs_of).take(limit) {
            for &seq in hit_seqs.iter().filter(|&&seq| seq > 0) {
                keys.push(*hit.conversation.id.as_uuid());
                seqs.push(seq);
            }
        }
        let mut texts: HashMap<(Uuid, i64), (MessageId, Role, String)> = HashMap::new();
        if !keys.is_empty() {
            let rows = sqlx::query(AssertSqlSafe(self.sql.matched_messages()))
                .bind(keys)
                .bind(seqs)
                .fetch_all(&self.pool)
                .await
                .map_err(db(WHAT))?;
            for row in &rows {
                let role: String = get(row, "role")?;
                let role = Role::parse(&role).ok_or_else(|| bad_row(format!("role {role:?}")))?;
                texts.insert(
                    (get(row, "conversation_id")?, get(row, "seq")?),
                    (
                        MessageId::from_uuid(get(row, "id")?),
                        role,
                        get(row, "content")?,
                    ),
                );
            }
        }
        for (hit, hit_seqs) in hits.iter_mut().zip(seqs_of).take(limit) {
            for seq in hit_seqs.into_iter().take(MAX_MATCHES_PER_HIT) {
                if seq == 0 {
                    let title = hit.conversation.title.as_deref().unwrap_or_default();
                    hit.matches.push(SearchMatch::in_title(&terms, title));
                    continue;
                }
                // A message deleted since the search read it is not found: skipped.
                if let Some((id, role, content)) = texts.get(&(*hit.conversation.id.as_uuid(), seq))
                {
                    hit.matches.push(SearchMatch::in_message(
                        &terms,
                        *id,
                        count(seq, "seq")?,
                        *role,
                        content,
                    ));
                }
            }
        }
        Ok(query.page_from(hits, limit))
    }

    /// The read of the conversations retention finds.
    pub(crate) fn expired_read(&self, query: &RetentionQuery) -> Result<Read> {
        let (by_archive, cutoff) = match query.expiry {
            Expiry::InactiveBefore(at) => (false, at),
            Expiry::ArchivedBefore(at) => (true, at),
        };
        // Times are stored in whole milliseconds, so `at < cutoff` is
        // `at < cutoff rounded up to a millisecond`; PostgreSQL keeps microseconds and
        // would round a cutoff with nanoseconds down.
        let floor = truncate_to_millis(cutoff);
        let cutoff = if floor < cutoff {
            floor
                .checked_add_signed(TimeDelta::milliseconds(1))
                .unwrap_or(floor)
        } else {
            floor
        };
        let sql = self.sql.expired(
            by_archive,
            query.scope.is_some(),
            query.after.is_some(),
            query.include_pinned,
        );
        let mut read = Read::new(sql)
            .param(Param::Time(cutoff))
            .param(bound(query.limit));
        if let Some(scope) = &query.scope {
            read = read.param(Param::Text(scope.as_str().to_owned()));
        }
        if let Some((at, id)) = query.after {
            read = read.param(Param::Time(at)).param(Param::Id(*id.as_uuid()));
        }
        Ok(read)
    }

    /// The conversations retention finds, oldest first.
    pub(crate) async fn expired(&self, query: &RetentionQuery) -> Result<Vec<ExpiredConversation>> {
        const WHAT: &str = "list expired conversations";
        let found = self
            .expired_read(query)?
            .query(false)
            .fetch_all(&self.pool)
            .await
            .map_err(db(WHAT))?;
        found
            .iter()
            .map(|row| {
                let scope: String = get(row, "scope")?;
                Ok(ExpiredConversation {
                    scope: Scope::new(scope).map_err(|e| bad_row(format!("scope: {e}")))?,
                    id: ConversationId::from_uuid(get(row, "id")?),
                    title: get(row, "title")?,
                    pinned: get(row, "pinned")?,
                    at: get(row, "at")?,
                })
            })
            .collect()
    }
}
