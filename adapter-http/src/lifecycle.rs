//! The data lifecycle over HTTP: export a conversation or a scope as JSON Lines,
//! import such a file (or ChatGPT's `conversations.json`), act on many conversations
//! at once.

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use conversation_core::{ConversationId, ExportLine, ExportSelection, ImportReport, Scope};
use futures::{Stream, StreamExt as _, TryStreamExt as _, stream};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;

use crate::docs::ScopeErrors;
use crate::extract::{ConversationParam, JsonBody, ScopeAccess, media_type};
use crate::problem::{ApiError, Problem};
use crate::respond::{NDJSON, ndjson_response};
use crate::routes::to_completion;
use crate::telemetry::{timed, timed_stream};
use crate::wire::{BulkRequest, BulkResults, ChatGptExport};
use crate::{AppState, HttpLimits};

/// Export a conversation
///
/// The conversation as JSON Lines (the format `POST /{scope}/import` reads): a
/// header line, the conversation, then every message of its tree by `seq`, each
/// line an `ExportLine`. A conversation that is not in this scope is 404 before
/// anything is sent.
///
/// The body is streamed (chunked, no `Content-Length`). When the store fails after
/// the head was sent, the body is cut off: the connection closes without the
/// terminating chunk (HTTP/2: the stream is reset), so a client sees a failed
/// download, never a short file that looks complete.
#[utoipa::path(
    get,
    path = "/{scope}/conversations/{id}/export",
    tag = "lifecycle",
    operation_id = "exportConversation",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
    ),
    responses(
        (status = 200, description = "JSON Lines: one `ExportLine` per line.",
            content_type = "application/x-ndjson", body = ExportLine, headers(
            ("Content-Disposition" = String, description = "`attachment; filename=\"conversation-<id>.jsonl\"`."),
        )),
        ScopeErrors,
    )
)]
pub(crate) async fn export_conversation(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
) -> Result<Response, ApiError> {
    let filename = format!("conversation-{id}.jsonl");
    export(&app, &scope, ExportSelection::Conversation(id), &filename).await
}

/// Export a scope
///
/// Every conversation of the scope, archived ones included, newest activity first,
/// as JSON Lines: a header line, then each conversation followed by every message of
/// its tree by `seq`, each line an `ExportLine`. Streamed page by page as the client
/// reads it: a scope of any size is never held whole, by the server or in this
/// response. An empty scope is the header line alone.
///
/// When the store fails before the first conversation is read, the answer is a
/// problem document; after the head was sent, the body is cut off: the connection
/// closes without the terminating chunk (HTTP/2: the stream is reset), so a client
/// sees a failed download, never a short file that looks complete. No timeout cuts
/// the stream.
#[utoipa::path(
    get,
    path = "/{scope}/export",
    tag = "lifecycle",
    operation_id = "exportScope",
    params(("scope" = Scope, Path, description = "The scope.")),
    responses(
        (status = 200, description = "JSON Lines: one `ExportLine` per line.",
            content_type = "application/x-ndjson", body = ExportLine, headers(
            ("Content-Disposition" = String, description = "`attachment; filename=\"conversations-<scope>.jsonl\"`, the scope's letters, digits, `-`, `_` and `.` kept, others as `_`."),
        )),
        ScopeErrors,
    )
)]
pub(crate) async fn export_scope(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
) -> Result<Response, ApiError> {
    let filename = format!("conversations-{}.jsonl", filename_part(scope.as_str()));
    export(&app, &scope, ExportSelection::Scope, &filename).await
}

/// The longest part of a file name taken from a scope.
const FILENAME_PART_CHARS: usize = 100;

/// `text` as a part of a file name that needs no quoting or escaping anywhere: ASCII
/// letters, digits, `-`, `_` and `.` kept, anything else `_`.
fn filename_part(text: &str) -> String {
    text.chars()
        .take(FILENAME_PART_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The export response: the header and the first conversation's line are read
/// before the head is sent, so that a conversation that is not there, or a store
/// that fails at once, is a problem document; the rest streams.
async fn export(
    app: &AppState,
    scope: &Scope,
    selection: ExportSelection,
    filename: &str,
) -> Result<Response, ApiError> {
    // Fused: the lines may have ended among the two read here.
    let mut lines = timed_stream("export", app.api.service.export(scope, selection)).fuse();
    let mut head = Vec::with_capacity(2);
    while head.len() < 2 {
        match lines.next().await {
            Some(line) => head.push(line?),
            None => break,
        }
    }
    ndjson_response(
        stream::iter(head.into_iter().map(Ok)).chain(lines).boxed(),
        filename,
    )
}

/// Import conversations
///
/// Stores the conversations of a file into this scope and reports, for each, what
/// happened. Two formats, told apart by `Content-Type`:
///
/// - `application/x-ndjson`: JSON Lines as the export routes write them (a header
///   line, then each conversation followed by its messages). Read line by line as it
///   arrives, never held whole: at most 256 MiB
///   ([`HttpLimits::max_import_bytes`](crate::HttpLimits::max_import_bytes)) and
///   8 MiB per line
///   ([`HttpLimits::max_import_line_bytes`](crate::HttpLimits::max_import_line_bytes))
///   by default. Each conversation is checked whole and stored whole, with its ids,
///   seqs, tree and timestamps, or not at all. A bad line (not JSON, not a line of
///   the format, breaking a rule) refuses its conversation, named by line in
///   `refused`, and the import goes on with the next conversation.
/// - `application/json`: ChatGPT's data export `conversations.json`, one JSON
///   document read whole, at most 64 MiB
///   ([`HttpLimits::max_chatgpt_import_bytes`](crate::HttpLimits::max_chatgpt_import_bytes))
///   by default; `line` in the report is the conversation's position in its array.
///
/// Importing the same file twice stores nothing twice: a conversation already in
/// the scope is `skipped`. A conversation whose id another scope holds is stored
/// under a new id derived from the old one and the scope (`renamedFrom`), the same
/// on every import.
///
/// A JSON Lines body over the limit is 413: before anything is stored when its
/// `Content-Length` says so, else where the limit is reached; a line over its limit
/// is 413 too, and a line that is not UTF-8 400. Then the report is not sent: the
/// conversations stored before that point stay (each whole), the one being read is
/// not stored; import the file again, fixed or split, and what is stored is skipped.
/// The same holds for a client that leaves midway, and for the import timeout
/// ([`HttpLimits::import_timeout`](crate::HttpLimits::import_timeout), 10 minutes by
/// default: 503 `timeout`).
#[utoipa::path(
    post,
    path = "/{scope}/import",
    tag = "lifecycle",
    operation_id = "importConversations",
    params(("scope" = Scope, Path, description = "The scope to import into.")),
    request_body(
        description = "An export of this API as JSON Lines (each line an `ExportLine`), or ChatGPT's `conversations.json`.",
        content(
            (ExportLine = "application/x-ndjson"),
            (ChatGptExport = "application/json"),
        ),
    ),
    responses(
        (status = 200, description = "What was imported, skipped (already there) and refused (with the line and a code), whatever the file held.", body = ImportReport),
        (status = 413, description = "The body, or one of its lines, exceeds its size limit (`payload_too_large`, field `body`); what was stored before stays.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither `application/x-ndjson` nor `application/json` (`unsupported_media_type`).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The ChatGPT file is not a JSON array of conversations (`invalid_input`, field `body`).", body = Problem, content_type = "application/problem+json"),
        ScopeErrors,
    )
)]
pub(crate) async fn import(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    request: Request,
) -> Result<Json<ImportReport>, ApiError> {
    let limits = &app.api.limits;
    let service = &app.api.service;
    match media_type(request.headers()).as_deref() {
        Some(NDJSON) => {
            within_limit(request.headers(), limits.max_import_bytes)?;
            let failure = Arc::new(OnceLock::new());
            let lines = body_lines(request.into_body(), limits, failure.clone());
            match timed("import", service.import(&scope, lines)).await {
                Ok(report) => Ok(Json(report)),
                Err(error) => Err(match failure.get() {
                    Some(failure) => failure.problem(limits),
                    None => error.into(),
                }),
            }
        }
        Some("application/json") => {
            let limit = limits.max_chatgpt_import_bytes;
            within_limit(request.headers(), limit)?;
            let failure = Arc::new(OnceLock::new());
            let json: Vec<u8> = body_chunks(request.into_body(), limit, failure.clone())
                .try_fold(Vec::new(), |mut json, chunk| async move {
                    json.extend_from_slice(&chunk);
                    Ok(json)
                })
                .await
                .map_err(|_| match failure.get() {
                    Some(BodyFailure::TooLarge) => too_large(limit),
                    _ => unreadable(),
                })?;
            Ok(Json(
                timed("import_chatgpt", service.import_chatgpt(&scope, json)).await?,
            ))
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send an export of this API as Content-Type: application/x-ndjson, or ChatGPT's \
             conversations.json as Content-Type: application/json",
        )),
    }
}

/// Why reading an import's body stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFailure {
    /// More bytes than the limit.
    TooLarge,
    /// Line `line` is longer than the line limit.
    LineTooLong { line: u64 },
    /// Line `line` is not UTF-8.
    NotUtf8 { line: u64 },
    /// The connection failed (the client left).
    Unreadable,
}

impl BodyFailure {
    fn problem(self, limits: &HttpLimits) -> ApiError {
        match self {
            BodyFailure::TooLarge => too_large(limits.max_import_bytes),
            BodyFailure::LineTooLong { line } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "line {line} is longer than {} bytes; the conversations stored before it \
                     stay, and importing the file again skips them",
                    limits.max_import_line_bytes
                ),
            )
            .with_field("body")
            .into(),
            BodyFailure::NotUtf8 { line } => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!(
                    "line {line} is not UTF-8 text; the conversations stored before it stay, \
                     and importing the file again skips them"
                ),
            )
            .with_field("body")
            .into(),
            BodyFailure::Unreadable => unreadable(),
        }
    }
}

fn too_large(limit: usize) -> ApiError {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the body is larger than {limit} bytes; the conversations stored before the limit \
             stay, and importing again skips them: split the file"
        ),
    )
    .with_field("body")
    .into()
}

fn unreadable() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_body",
        "the request body could not be read",
    )
}

/// 413 at once when the body's `Content-Length` is over `limit`.
fn within_limit(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match length {
        Some(length) if length > limit as u64 => Err(too_large(limit)),
        _ => Ok(()),
    }
}

/// The body's chunks, failing (and recording why in `failure`) once more than
/// `limit` bytes came, or when the connection fails.
fn body_chunks(
    body: Body,
    limit: usize,
    failure: Arc<OnceLock<BodyFailure>>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static {
    let mut total = 0usize;
    body.into_data_stream().map(move |chunk| {
        let fail = |why: BodyFailure| {
            let _ = failure.set(why);
            std::io::Error::other(format!("{why:?}"))
        };
        let chunk = chunk.map_err(|_| fail(BodyFailure::Unreadable))?;
        total = total.saturating_add(chunk.len());
        if total > limit {
            return Err(fail(BodyFailure::TooLarge));
        }
        Ok(chunk)
    })
}

/// The lines of a JSON Lines body, one at a time, within the import limits; the
/// first failure is recorded in `failure` and ends the lines.
fn body_lines(
    body: Body,
    limits: &HttpLimits,
    failure: Arc<OnceLock<BodyFailure>>,
) -> impl Stream<Item = std::io::Result<String>> + Send + 'static {
    let chunks = body_chunks(body, limits.max_import_bytes, failure.clone());
    let lines = FramedRead::new(
        StreamReader::new(chunks),
        LinesCodec::new_with_max_length(limits.max_import_line_bytes),
    );
    let mut line = 0u64;
    lines.map(move |read| {
        line += 1;
        read.map_err(|error| {
            let why = match &error {
                LinesCodecError::MaxLineLengthExceeded => BodyFailure::LineTooLong { line },
                // A failure of the body was recorded where it happened; what the
                // codec adds is text that is not UTF-8.
                LinesCodecError::Io(_) => BodyFailure::NotUtf8 { line },
            };
            let _ = failure.set(why);
            std::io::Error::other(error)
        })
    })
}

/// Act on many conversations
///
/// Archives, unarchives, pins, unpins or deletes each of `ids` (1 to 100), each by
/// itself, in the order given, and says per id what happened: `ok`; `not_found` when
/// it is not a conversation of this scope (one of another scope is reported alike
/// and left untouched); `conflict` or `run_in_progress`. One failing id does not stop
/// the others. More than 100 ids, or none, is 422 and touches nothing.
#[utoipa::path(
    post,
    path = "/{scope}/conversations/bulk",
    tag = "lifecycle",
    operation_id = "bulkConversations",
    params(("scope" = Scope, Path, description = "The scope.")),
    request_body(content = BulkRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One result per id, in the order sent.", body = BulkResults),
        ScopeErrors,
        crate::docs::BodyErrors,
    )
)]
pub(crate) async fn bulk(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    JsonBody(request): JsonBody<BulkRequest>,
) -> Result<Json<BulkResults>, ApiError> {
    let service = app.api.service.clone();
    let items = to_completion("bulk", async move {
        service.bulk(&scope, request.action, &request.ids).await
    })
    .await?;
    Ok(Json(BulkResults { items }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_becomes_a_file_name_that_needs_no_quoting() {
        assert_eq!(filename_part("analytics-db_1.x"), "analytics-db_1.x");
        assert_eq!(filename_part("a\"b/c\\d é;"), "a_b_c_d___");
        assert_eq!(filename_part(&"x".repeat(300)).len(), FILENAME_PART_CHARS);
    }
}
