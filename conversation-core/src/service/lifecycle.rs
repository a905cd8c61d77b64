//! Export, import, retention and bulk actions: what an operator does to many
//! conversations at once.

use std::time::Duration;

use chrono::TimeDelta;
use futures::stream::{self, BoxStream, Stream, StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::Conversations;
use crate::{
    ArchivedFilter, ConversationId, ConversationPatch, ConversationQuery, Error,
    ExpiredConversation, Expiry, ExportLine, ExportedConversation, ExportedMessage, ImportOutcome,
    ImportedConversation, MAX_PAGE_SIZE, MessageQuery, MessageView, Result, RetentionQuery, Scope,
};

/// The most conversations one bulk action takes.
pub const MAX_BULK_IDS: usize = 100;

/// What an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportSelection {
    /// Every conversation of the scope, archived ones included.
    Scope,
    /// One conversation.
    Conversation(ConversationId),
}

/// A bulk action on many conversations: [`Conversations::bulk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum BulkAction {
    /// Archive each.
    Archive,
    /// Restore each from the archive.
    Unarchive,
    /// Pin each.
    Pin,
    /// Unpin each.
    Unpin,
    /// Delete each.
    Delete,
}

/// What a bulk action did to one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkResult {
    /// The conversation.
    pub id: ConversationId,
    /// `ok`, `not_found` (not in this scope: nothing touched), `conflict`, or another
    /// [`Error::code`].
    pub status: String,
}

/// What an import did, line by line: [`Conversations::import`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportReport {
    /// Conversations stored.
    pub imported: Vec<ImportedItem>,
    /// Conversations already in the scope: nothing stored.
    pub skipped: Vec<ImportedItem>,
    /// Lines or conversations refused, with why; nothing of a refused conversation is
    /// stored.
    pub refused: Vec<RefusedItem>,
}

/// A conversation of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportedItem {
    /// The line of its conversation (from 1).
    pub line: u64,
    /// Its id in this scope.
    pub id: ConversationId,
    /// The id it had in the file, when it was taken by another scope and a new one
    /// was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<ConversationId>,
    /// How many messages it holds.
    pub messages: u64,
}

/// A line or conversation an import refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefusedItem {
    /// The line at fault (from 1).
    pub line: u64,
    /// The conversation it belonged to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<ConversationId>,
    /// A stable code: `invalid_json`, `invalid_line`, `invalid_input`, `header`, or an
    /// [`Error::code`].
    pub code: String,
    /// What was wrong.
    pub message: String,
}

/// Which conversations retention removes: [`Conversations::purge`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionPolicy {
    /// Delete conversations with no activity for this long.
    pub inactive_for: Option<Duration>,
    /// Delete conversations archived this long ago.
    pub archived_for: Option<Duration>,
    /// Pinned conversations too (default: never).
    pub include_pinned: bool,
}

impl RetentionPolicy {
    /// A policy that deletes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Deletes conversations inactive for `days` days.
    pub fn inactive_days(mut self, days: u32) -> Self {
        self.inactive_for = Some(Duration::from_secs(u64::from(days) * 86_400));
        self
    }

    /// Deletes conversations archived `days` days ago.
    pub fn archived_days(mut self, days: u32) -> Self {
        self.archived_for = Some(Duration::from_secs(u64::from(days) * 86_400));
        self
    }

    /// Pinned conversations too.
    pub fn include_pinned(mut self, include: bool) -> Self {
        self.include_pinned = include;
        self
    }

    /// Whether it deletes anything at all.
    pub fn is_empty(&self) -> bool {
        self.inactive_for.is_none() && self.archived_for.is_none()
    }
}

/// What [`Conversations::purge`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// The conversations deleted (or that would be).
    pub expired: Vec<ExpiredConversation>,
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
}

impl Conversations {
    /// Exports as JSON Lines ([`ExportLine`]): a header, then each conversation
    /// (newest activity first, archived included) followed by every message of its
    /// tree by seq. Streamed page by page: a scope of any size is never held whole.
    /// The stream ends after an `Err` item.
    pub fn export(
        &self,
        scope: &Scope,
        selection: ExportSelection,
    ) -> BoxStream<'static, Result<String>> {
        let header = stream::once(std::future::ready(
            ExportLine::header(scope.clone()).to_line(),
        ));
        let service = self.clone();
        let scope = scope.clone();
        let conversations: BoxStream<'static, Result<crate::Conversation>> = match selection {
            ExportSelection::Conversation(id) => {
                let service = service.clone();
                let scope = scope.clone();
                stream::once(async move { service.get(&scope, id).await }).boxed()
            }
            ExportSelection::Scope => {
                let query = ConversationQuery::new()
                    .archived(ArchivedFilter::Include)
                    .limit(MAX_PAGE_SIZE as u32);
                let service = service.clone();
                let scope = scope.clone();
                stream::try_unfold(Some(query), move |query| {
                    let service = service.clone();
                    let scope = scope.clone();
                    async move {
                        let Some(query) = query else {
                            return Ok(None);
                        };
                        let page = service.list(&scope, &query).await?;
                        let next = page.next_cursor.map(|cursor| query.clone().cursor(cursor));
                        Ok(Some((stream::iter(page.items.into_iter().map(Ok)), next)))
                    }
                })
                .try_flatten()
                .boxed()
            }
        };
        let body = conversations
            .map(move |conversation| {
                let service = service.clone();
                let scope = scope.clone();
                match conversation {
                    Ok(conversation) => service.export_one(scope, conversation),
                    Err(error) => stream::once(std::future::ready(Err(error))).boxed(),
                }
            })
            .flatten();
        stop_after_error(header.chain(body))
    }

    /// The lines of one conversation: its own, then its messages page by page.
    fn export_one(
        &self,
        scope: Scope,
        conversation: crate::Conversation,
    ) -> BoxStream<'static, Result<String>> {
        let id = conversation.id;
        let head = stream::once(std::future::ready(
            ExportLine::Conversation(ExportedConversation::from(conversation)).to_line(),
        ));
        let service = self.clone();
        let messages = stream::try_unfold(Some(0u64), move |after| {
            let service = service.clone();
            let scope = scope.clone();
            async move {
                let Some(after) = after else {
                    return Ok(None);
                };
                let query = MessageQuery::after(after)
                    .limit(MAX_PAGE_SIZE as u32)
                    .view(MessageView::All);
                let page = service.messages(&scope, id, &query).await?;
                let next = match (page.has_more, page.items.last()) {
                    (true, Some(last)) => Some(last.seq),
                    _ => None,
                };
                let lines: Vec<Result<String>> = page
                    .items
                    .into_iter()
                    .map(|m| ExportLine::Message(ExportedMessage::from(m)).to_line())
                    .collect();
                Ok(Some((stream::iter(lines), next)))
            }
        })
        .try_flatten();
        head.chain(messages).boxed()
    }

    /// Imports JSON Lines of an export into `scope`, one conversation at a time: each
    /// is validated whole before anything of it is written, then stored atomically
    /// with its ids, seqs, tree and timestamps ([`Store::import_conversation`](crate::Store::import_conversation),
    /// which checks it with [`ImportedConversation::check`]).
    /// A conversation already in the scope is skipped (importing twice stores nothing
    /// twice); one whose id another scope holds gets a new id. A bad line refuses its
    /// conversation (or, outside one, itself) and the import goes on. Lines are read
    /// as they come: a file of any size is never held whole.
    ///
    /// # Errors
    /// Only the store's transient errors ([`Error::Unavailable`]) stop an import;
    /// what was imported before stays, and the report is lost with the error, so
    /// import again (it skips what is there).
    pub async fn import<S>(&self, scope: &Scope, lines: S) -> Result<ImportReport>
    where
        S: Stream<Item = std::io::Result<String>> + Send,
    {
        let mut lines = std::pin::pin!(lines);
        let mut report = ImportReport::default();
        let mut current: Option<Pending> = None;
        let mut number = 0u64;
        let mut header_seen = false;
        while let Some(line) = lines.next().await {
            number += 1;
            let line = line.map_err(|e| Error::invalid("body", format!("line {number}: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: std::result::Result<ExportLine, _> = serde_json::from_str(&line);
            match parsed {
                Err(error) => {
                    let refused = RefusedItem {
                        line: number,
                        id: current.as_ref().map(|p| p.exported.id),
                        code: if error.is_syntax() || error.is_eof() {
                            "invalid_json".to_owned()
                        } else {
                            "invalid_line".to_owned()
                        },
                        message: error.to_string(),
                    };
                    if let Some(pending) = current.as_mut() {
                        pending.refused.get_or_insert(refused);
                    } else {
                        report.refused.push(refused);
                    }
                }
                Ok(ExportLine::Header {
                    format, version, ..
                }) => {
                    if format != crate::EXPORT_FORMAT || version != crate::EXPORT_VERSION {
                        report.refused.push(RefusedItem {
                            line: number,
                            id: None,
                            code: "header".to_owned(),
                            message: format!(
                                "format {format:?} version {version} is not {:?} version {}",
                                crate::EXPORT_FORMAT,
                                crate::EXPORT_VERSION
                            ),
                        });
                        return Ok(report);
                    }
                    header_seen = true;
                }
                Ok(line) if !header_seen => {
                    let _ = line;
                    report.refused.push(RefusedItem {
                        line: number,
                        id: None,
                        code: "header".to_owned(),
                        message: "the first line must be the export's header".to_owned(),
                    });
                    return Ok(report);
                }
                Ok(ExportLine::Conversation(exported)) => {
                    if let Some(done) = current.take() {
                        self.import_pending(scope, done, &mut report).await?;
                    }
                    current = Some(Pending {
                        line: number,
                        exported,
                        messages: Vec::new(),
                        refused: None,
                    });
                }
                Ok(ExportLine::Message(message)) => match current.as_mut() {
                    Some(pending) => pending.messages.push(message),
                    None => report.refused.push(RefusedItem {
                        line: number,
                        id: None,
                        code: "invalid_line".to_owned(),
                        message: "a message before any conversation".to_owned(),
                    }),
                },
            }
        }
        if let Some(done) = current.take() {
            self.import_pending(scope, done, &mut report).await?;
        }
        info!(
            %scope,
            imported = report.imported.len(),
            skipped = report.skipped.len(),
            refused = report.refused.len(),
            "import finished"
        );
        Ok(report)
    }

    /// Stores one gathered conversation of an import, recording the outcome.
    async fn import_pending(
        &self,
        scope: &Scope,
        pending: Pending,
        report: &mut ImportReport,
    ) -> Result<()> {
        if let Some(refused) = pending.refused {
            report.refused.push(refused);
            return Ok(());
        }
        let original = pending.exported.id;
        let imported = ImportedConversation {
            messages: pending
                .messages
                .into_iter()
                .map(|m| m.into_message(original))
                .collect(),
            conversation: pending.exported.into_conversation(scope.clone()),
        };
        self.import_one(scope, pending.line, imported, report).await
    }

    /// Stores one conversation of an import (the store checks it whole first),
    /// recording the outcome; an id another scope holds is replaced once.
    async fn import_one(
        &self,
        scope: &Scope,
        line: u64,
        mut imported: ImportedConversation,
        report: &mut ImportReport,
    ) -> Result<()> {
        let original = imported.conversation.id;
        let mut renamed_from = None;
        loop {
            let refuse = |error: Error| RefusedItem {
                line,
                id: Some(original),
                code: error.code().to_owned(),
                message: error.to_string(),
            };
            let id = imported.conversation.id;
            let messages = imported.messages.len() as u64;
            match self
                .store()
                .import_conversation(scope, imported.clone())
                .await
            {
                Ok(ImportOutcome::Imported) => {
                    report.imported.push(ImportedItem {
                        line,
                        id,
                        renamed_from,
                        messages,
                    });
                    return Ok(());
                }
                Ok(ImportOutcome::AlreadyPresent) => {
                    report.skipped.push(ImportedItem {
                        line,
                        id,
                        renamed_from,
                        messages,
                    });
                    return Ok(());
                }
                Ok(ImportOutcome::IdTaken) if renamed_from.is_none() => {
                    // The id is another scope's: import it under a new one, derived
                    // from the old and the scope, so importing the same file again
                    // finds it and skips it.
                    let new_id = renamed_id(original, scope);
                    renamed_from = Some(original);
                    imported.conversation.id = new_id;
                    for message in &mut imported.messages {
                        message.conversation_id = new_id;
                    }
                }
                Ok(_) => {
                    report.refused.push(refuse(Error::invalid(
                        "id",
                        "taken in another scope, and so is the id derived from it",
                    )));
                    return Ok(());
                }
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => {
                    warn!(%scope, conversation = %id, %error, "an imported conversation was refused");
                    report.refused.push(refuse(error));
                    return Ok(());
                }
            }
        }
    }

    /// Imports the conversations of a ChatGPT data export (`conversations.json`; see
    /// the table of what is kept in [`chatgpt`](crate::chatgpt)) into `scope`, each as
    /// [`Self::import`] stores one: whole or not at all, skipped when present. The
    /// report's `line` is the conversation's position in the file's array.
    ///
    /// The file is parsed on a blocking thread (`tokio::task::spawn_blocking`), not on
    /// the caller's: a file of tens of megabytes takes a while.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `body` when the file is not a JSON array; the
    /// store's transient errors.
    pub async fn import_chatgpt(&self, scope: &Scope, json: Vec<u8>) -> Result<ImportReport> {
        let mut report = ImportReport::default();
        let reading = scope.clone();
        let converted = tokio::task::spawn_blocking(move || crate::chatgpt::read(&reading, &json))
            .await
            .map_err(|e| Error::backend("reading the ChatGPT export stopped", e))??;
        for converted in converted {
            match converted.result {
                Ok(imported) => {
                    self.import_one(scope, converted.index, imported, &mut report)
                        .await?;
                }
                Err(error) => report.refused.push(RefusedItem {
                    line: converted.index,
                    id: None,
                    code: error.code().to_owned(),
                    message: error.to_string(),
                }),
            }
        }
        Ok(report)
    }

    /// Deletes (or, in a dry run, lists) the conversations `policy` expires, across
    /// every scope or in `scope` only, oldest first, reading the store's retention
    /// indexes ([`Store::list_expired`](crate::Store::list_expired)) page by page.
    ///
    /// # Errors
    /// The store's errors; what was deleted before one stays deleted.
    pub async fn purge(
        &self,
        scope: Option<&Scope>,
        policy: &RetentionPolicy,
        dry_run: bool,
    ) -> Result<PurgeReport> {
        let now = self.now();
        let cutoff = |age: Duration| {
            TimeDelta::from_std(age)
                .ok()
                .and_then(|age| now.checked_sub_signed(age))
        };
        let mut expiries = Vec::new();
        if let Some(at) = policy.inactive_for.and_then(cutoff) {
            expiries.push(Expiry::InactiveBefore(at));
        }
        if let Some(at) = policy.archived_for.and_then(cutoff) {
            expiries.push(Expiry::ArchivedBefore(at));
        }
        let mut report = PurgeReport {
            expired: Vec::new(),
            dry_run,
        };
        let mut seen = std::collections::HashSet::new();
        for expiry in expiries {
            let mut query = RetentionQuery::new(expiry, 500).include_pinned(policy.include_pinned);
            query.scope = scope.cloned();
            loop {
                let page = self.store().list_expired(&query).await?;
                let Some(last) = page.last() else {
                    break;
                };
                query.after = Some((last.at, last.id));
                for expired in page {
                    if !seen.insert(expired.id) {
                        continue;
                    }
                    if !dry_run {
                        match self
                            .store()
                            .delete_conversation(&expired.scope, expired.id, None)
                            .await
                        {
                            Ok(()) | Err(Error::NotFound { .. }) => {}
                            Err(error) => return Err(error),
                        }
                    }
                    report.expired.push(expired);
                }
            }
        }
        if !report.expired.is_empty() {
            info!(count = report.expired.len(), dry_run, "retention pass");
        }
        Ok(report)
    }

    /// Applies `action` to each of `ids` in `scope`, each on its own, and says what
    /// happened to each: an id of another scope (or of none) is `not_found` and
    /// nothing is touched.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `ids` for an empty list or more than
    /// [`MAX_BULK_IDS`].
    pub async fn bulk(
        &self,
        scope: &Scope,
        action: BulkAction,
        ids: &[ConversationId],
    ) -> Result<Vec<BulkResult>> {
        if ids.is_empty() || ids.len() > MAX_BULK_IDS {
            return Err(Error::invalid(
                "ids",
                format!("between 1 and {MAX_BULK_IDS} ids"),
            ));
        }
        let mut results = Vec::with_capacity(ids.len());
        for &id in ids {
            let outcome = match action {
                BulkAction::Delete => self.delete(scope, id).await,
                BulkAction::Archive | BulkAction::Unarchive => self
                    .update(
                        scope,
                        id,
                        ConversationPatch::new().archived(action == BulkAction::Archive),
                    )
                    .await
                    .map(|_| ()),
                BulkAction::Pin | BulkAction::Unpin => self
                    .update(
                        scope,
                        id,
                        ConversationPatch::new().pinned(action == BulkAction::Pin),
                    )
                    .await
                    .map(|_| ()),
            };
            results.push(BulkResult {
                id,
                status: match outcome {
                    Ok(()) => "ok".to_owned(),
                    Err(error) => error.code().to_owned(),
                },
            });
        }
        Ok(results)
    }
}

/// One conversation of an import, gathered line by line.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) line: u64,
    pub(crate) exported: ExportedConversation,
    pub(crate) messages: Vec<ExportedMessage>,
    pub(crate) refused: Option<RefusedItem>,
}

/// The id a conversation whose id is taken in another scope gets in `scope`: a UUIDv8
/// of the two, the same every time.
fn renamed_id(original: ConversationId, scope: &Scope) -> ConversationId {
    let mut bytes = *original.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in scope
        .as_str()
        .bytes()
        .chain(original.as_bytes().iter().copied())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    for (slot, byte) in bytes[8..].iter_mut().zip(hash.to_be_bytes()) {
        *slot ^= byte;
    }
    ConversationId::from_uuid(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

/// Ends `lines` after its first error.
fn stop_after_error(
    lines: impl Stream<Item = Result<String>> + Send + 'static,
) -> BoxStream<'static, Result<String>> {
    lines
        .scan(false, |failed, line| {
            if *failed {
                return std::future::ready(None);
            }
            *failed = line.is_err();
            std::future::ready(Some(line))
        })
        .boxed()
}
