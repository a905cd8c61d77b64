//! The handlers, each documented for OpenAPI next to its code.

use axum::Json;
use axum::extract::{FromRequestParts, OriginalUri, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use conversation_core::{
    ArchivedFilter, Conversation, ConversationId, ConversationPatch, ConversationQuery, Error,
    Message, MessageId, MessagePage, MessageQuery, MessageView, Metadata, NewConversation, Page,
    Scope, SearchQuery,
};
use serde::Deserialize;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument as _;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::HttpLimits;
use crate::docs::{ApiDoc, BodyErrors, ScopeErrors};
use crate::extract::{
    ConversationParam, EmptyJsonBody, IfMatch, JsonBody, JsonValue, MessageParam, ScopeAccess,
    etag, parse_bool, parse_limit, parse_seq,
};
use crate::problem::{ApiError, Problem};
use crate::respond::items_response;
use crate::telemetry::timed;
use crate::wire::{
    AppendRequest, AppendResult, ContextWindow, ConversationList, ForkRequest, SearchResults,
    TitleResult,
};

/// Every route, documented; `limits` sets the timeouts.
pub(crate) fn api(limits: &HttpLimits) -> OpenApiRouter<AppState> {
    use utoipa::OpenApi as _;
    let timeout =
        |duration| TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, duration);
    let body_limit = || RequestBodyLimitLayer::new(limits.max_body_bytes);
    let plain = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_conversations, create_conversation))
        .routes(routes!(
            get_conversation,
            update_conversation,
            delete_conversation
        ))
        .routes(routes!(list_messages, append_messages))
        .routes(routes!(get_message, delete_message))
        .routes(routes!(fork_conversation))
        .routes(routes!(get_context))
        .routes(routes!(generate_title))
        .routes(routes!(search_conversations))
        .routes(routes!(crate::lifecycle::bulk))
        .routes(routes!(crate::lifecycle::export_conversation))
        .routes(routes!(crate::lifecycle::export_scope))
        .routes(routes!(crate::runs::get_run))
        .routes(routes!(crate::runs::cancel_run))
        .routes(routes!(openapi_document))
        .route_layer(timeout(limits.request_timeout))
        .route_layer(body_limit());
    let streaming = OpenApiRouter::new()
        .routes(routes!(crate::runs::reply))
        .routes(routes!(crate::runs::run_events))
        .route_layer(timeout(limits.reply_start_timeout))
        .route_layer(body_limit());
    // An import reads its body itself, within its own limits (`HttpLimits::max_import_*`).
    let import = OpenApiRouter::new()
        .routes(routes!(crate::lifecycle::import))
        .route_layer(timeout(limits.import_timeout));
    plain.merge(streaming).merge(import)
}

/// The query of a list, read as text so that every bad value is a problem naming it.
fn query_params<T: for<'de> Deserialize<'de>>(uri: &Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(params)| params)
        .map_err(|rejection| ApiError::parameter("query", rejection.body_text()))
}

/// A core `InvalidInput` about a query parameter, reported as that parameter.
fn parameter_error(name: &str, error: Error) -> ApiError {
    match error {
        Error::InvalidInput { reason, .. } => ApiError::parameter(name, reason),
        other => other.into(),
    }
}

/// Query of `GET /{scope}/conversations`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Page size, at least 1; default 50; values above 200 are lowered to 200.
    #[param(value_type = Option<u64>, minimum = 1)]
    limit: Option<String>,
    /// The `nextCursor` of the previous page of the same query (opaque; any other
    /// value is 400); empty means the first page.
    #[param(pattern = r"^[A-Za-z0-9_-]*$")]
    cursor: Option<String>,
    /// `exclude` (default: the sidebar), `include` or `only` (the archive).
    #[param(value_type = Option<ArchivedFilter>)]
    archived: Option<String>,
    /// `true` lists pinned conversations before the others (not with `q`).
    #[param(value_type = Option<bool>)]
    pinned: Option<String>,
    /// Only the conversations a search for this text finds (`GET /{scope}/search`:
    /// every word in the title or in one message, the last word as a prefix), read
    /// from the search index and listed in its order, best match first; `nextCursor`
    /// then continues the search. Empty: no filter. At most 512 characters, no
    /// control characters, at least one word (422 otherwise). Not with
    /// `pinned=true` or `metadata.*` filters (400).
    #[param(max_length = 512, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    q: Option<String>,
}

/// The `metadata.<key>=<value>` filters of a list's query: string values.
fn metadata_filters(uri: &Uri) -> Result<Metadata, ApiError> {
    let pairs = query_params::<Vec<(String, String)>>(uri)?;
    let mut filters = Metadata::new();
    for (name, value) in pairs {
        if let Some(key) = name.strip_prefix("metadata.") {
            filters.insert(key.to_owned(), value.into());
        }
    }
    Ok(filters)
}

/// The `archived` parameter of a list or a search.
fn parse_archived(raw: Option<&str>) -> Result<ArchivedFilter, ApiError> {
    match raw {
        None | Some("exclude") => Ok(ArchivedFilter::Exclude),
        Some("include") => Ok(ArchivedFilter::Include),
        Some("only") => Ok(ArchivedFilter::Only),
        Some(other) => Err(ApiError::parameter(
            "archived",
            format!("{other:?} is not one of exclude, include, only"),
        )),
    }
}

/// A search of `text`, checked before the store is asked: a text with no word, too
/// long or with a control character is 422 naming `q` (core's rule); a cursor that
/// is not one of this search's is 400, as a list's is.
fn search_query(
    text: String,
    limit: Option<&str>,
    cursor: Option<String>,
    archived: ArchivedFilter,
) -> Result<SearchQuery, ApiError> {
    let mut query = SearchQuery::new(text).archived(archived);
    query.limit = parse_limit(limit)?;
    query.cursor = cursor.filter(|cursor| !cursor.is_empty());
    query.terms()?;
    query
        .position()
        .map_err(|error| parameter_error("cursor", error))?;
    Ok(query)
}

/// What a list request asks for.
enum ListRequest {
    /// A page of the list.
    List(ConversationQuery),
    /// A page of a search (`q`), as conversations.
    Search(SearchQuery),
}

impl ListParams {
    fn into_request(self, metadata_equals: Metadata) -> Result<ListRequest, ApiError> {
        let archived = parse_archived(self.archived.as_deref())?;
        let pinned_first = parse_bool("pinned", self.pinned.as_deref())?.unwrap_or(false);
        if let Some(text) = self.q.filter(|q| !q.is_empty()) {
            if pinned_first {
                return Err(ApiError::parameter(
                    "pinned",
                    "a list with q is in the search's order, best match first; leave out pinned=true",
                ));
            }
            if let Some(key) = metadata_equals.keys().next() {
                return Err(ApiError::parameter(
                    &format!("metadata.{key}"),
                    "a list with q takes no metadata filter",
                ));
            }
            return search_query(text, self.limit.as_deref(), self.cursor, archived)
                .map(ListRequest::Search);
        }
        let query = ConversationQuery {
            limit: parse_limit(self.limit.as_deref())?,
            cursor: self.cursor.filter(|cursor| !cursor.is_empty()),
            archived,
            pinned_first,
            title_contains: None,
            metadata_equals,
        };
        query.check_metadata_filter().map_err(|error| match error {
            Error::InvalidInput { field, reason } => ApiError::parameter(&field, reason),
            other => other.into(),
        })?;
        query
            .position()
            .map_err(|error| parameter_error("cursor", error))?;
        Ok(ListRequest::List(query))
    }
}

/// List conversations
///
/// One page of the scope's conversations, newest activity first, keyset-paginated:
/// pass `nextCursor` as `cursor` to read on. Archived conversations are left out
/// unless `archived` asks for them. `metadata.<key>=<value>` (repeatable) keeps only
/// conversations whose metadata has that top-level key with that string value, e.g.
/// `?metadata.tag=billing`.
///
/// With `q`, the page is the conversations of a search for `q` (as
/// `GET /{scope}/search` finds them, without the matches), read from the search
/// index in relevance order, best first (ties: newest activity first), and
/// `nextCursor` continues that search: a filter that costs an index lookup however
/// many conversations it skips. `q` takes the search's words, not a substring:
/// `ELTA` does not find `Delta`, `del` does.
#[utoipa::path(
    get,
    path = "/{scope}/conversations",
    tag = "conversations",
    operation_id = "listConversations",
    params(("scope" = Scope, Path, description = "The scope (e.g. a database connection id)."), ListParams),
    responses(
        (status = 200, description = "A page of conversations.", body = ConversationList),
        (status = 422, description = "`q` has no word, is longer than 512 characters or holds a control character (`invalid_input`, field `q`).", body = Problem, content_type = "application/problem+json"),
        ScopeErrors,
    )
)]
async fn list_conversations(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    uri: Uri,
) -> Result<Json<ConversationList>, ApiError> {
    let request = query_params::<ListParams>(&uri)?.into_request(metadata_filters(&uri)?)?;
    let page = match request {
        ListRequest::List(query) => timed("list", app.api.service.list(&scope, &query)).await?,
        ListRequest::Search(query) => {
            let page = timed("search", app.api.service.search(&scope, &query)).await?;
            Page {
                items: page.items.into_iter().map(|hit| hit.conversation).collect(),
                next_cursor: page.next_cursor,
            }
        }
    };
    Ok(Json(page.into()))
}

/// Query of `GET /{scope}/search`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// What to find: its words (runs of letters and digits, compared lowercased and
    /// without diacritics), every one of them in the title or in one message, the
    /// last as a prefix unless the text ends with a separator such as a space (so
    /// results follow the user as they type). Quotes, `*`, `-`, `AND`,
    /// `NEAR`, `column:` and parentheses are words or separators, never syntax. At
    /// most 512 characters and 16 words, no control characters (422 otherwise).
    #[param(
        required = true,
        min_length = 1,
        max_length = 512,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    )]
    q: Option<String>,
    /// Page size, at least 1; default 50; values above 200 are lowered to 200.
    #[param(value_type = Option<u64>, minimum = 1)]
    limit: Option<String>,
    /// The `nextCursor` of the previous page of the same search (same `q` and
    /// `archived`; any other value is 400); empty means the first page.
    #[param(pattern = r"^[A-Za-z0-9_-]*$")]
    cursor: Option<String>,
    /// `exclude` (default), `include` or `only` (the archive).
    #[param(value_type = Option<ArchivedFilter>)]
    archived: Option<String>,
}

/// Search conversations
///
/// The scope's conversations holding every word of `q` in their title or in one of
/// their messages (any role, any branch still stored; tool-call arguments and
/// metadata are not searched), best match first, ties by newest activity. Each hit
/// has up to 3 matches, best first: the message (`messageId`, `seq`, `role`) or the
/// title (those three `null`), a `snippet` of about 160 characters around the match,
/// and `highlights`, the matched words in the snippet as `[start, end)` offsets in
/// characters (Unicode scalar values, as `Array.from(snippet)` counts them; never
/// markup: the client marks them up). What is stored is found at once; what is
/// deleted never is. Pass `nextCursor` as `cursor` with the same `q` to read on.
#[utoipa::path(
    get,
    path = "/{scope}/search",
    tag = "conversations",
    operation_id = "searchConversations",
    params(("scope" = Scope, Path, description = "The scope."), SearchParams),
    responses(
        (status = 200, description = "A page of hits.", body = SearchResults),
        (status = 422, description = "`q` is missing, has no word, is longer than 512 characters, has more than 16 words or holds a control character (`invalid_input`, field `q`).", body = Problem, content_type = "application/problem+json"),
        ScopeErrors,
    )
)]
async fn search_conversations(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    uri: Uri,
) -> Result<Json<SearchResults>, ApiError> {
    let params = query_params::<SearchParams>(&uri)?;
    let query = search_query(
        params.q.unwrap_or_default(),
        params.limit.as_deref(),
        params.cursor,
        parse_archived(params.archived.as_deref())?,
    )?;
    let page = timed("search", app.api.service.search(&scope, &query)).await?;
    Ok(Json(page.into()))
}

/// Create a conversation
///
/// A `title` given is the user's and final; without one, the first user message
/// gives a title at once and the title generator a better one after the first reply.
#[utoipa::path(
    post,
    path = "/{scope}/conversations",
    tag = "conversations",
    operation_id = "createConversation",
    params(("scope" = Scope, Path, description = "The scope.")),
    request_body(content = NewConversation, content_type = "application/json"),
    responses(
        (status = 201, description = "Created.", body = Conversation, headers(
            ("Location" = String, description = "The conversation's URL."),
            ("ETag" = String, description = "The conversation's version, e.g. `\"1\"`."),
        )),
        ScopeErrors,
        BodyErrors,
    )
)]
async fn create_conversation(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    OriginalUri(uri): OriginalUri,
    JsonBody(new): JsonBody<NewConversation>,
) -> Result<Response, ApiError> {
    let service = app.api.service.clone();
    let conversation =
        to_completion("create", async move { service.create(&scope, new).await }).await?;
    let location = format!("{}/{}", uri.path().trim_end_matches('/'), conversation.id);
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, header_value(&location)?),
            (header::ETAG, header_value(&etag(conversation.version))?),
        ],
        Json(conversation),
    )
        .into_response())
}

fn header_value(text: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(text).map_err(|error| {
        tracing::error!(%error, "could not build a response header");
        Problem::internal().into()
    })
}

fn with_etag(conversation: Conversation) -> Result<Response, ApiError> {
    Ok((
        [(header::ETAG, header_value(&etag(conversation.version))?)],
        Json(conversation),
    )
        .into_response())
}

/// Get a conversation
#[utoipa::path(
    get,
    path = "/{scope}/conversations/{id}",
    tag = "conversations",
    operation_id = "getConversation",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
    ),
    responses(
        (status = 200, description = "The conversation.", body = Conversation, headers(
            ("ETag" = String, description = "The conversation's version, e.g. `\"3\"`; send it as `If-Match` to update only this version."),
        )),
        ScopeErrors,
    )
)]
async fn get_conversation(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
) -> Result<Response, ApiError> {
    with_etag(timed("get", app.api.service.get(&scope, id)).await?)
}

/// The `If-Match` header of a request, parsed.
pub(crate) struct IfMatchHeader(Option<IfMatch>);

impl FromRequestParts<AppState> for IfMatchHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        IfMatch::from_headers(&parts.headers).map(Self)
    }
}

/// Documentation of the `If-Match` header, which [`IfMatchHeader`] reads.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(
    dead_code,
    reason = "documentation only: IfMatchHeader reads the header"
)]
pub(crate) struct IfMatchParam {
    /// Write only if the conversation's `ETag` is one of these strong entity tags
    /// (`"7"`, `"7", "8"`), or exists at all (`*`); 412 otherwise. A weak tag never
    /// matches.
    #[param(
        rename = "If-Match",
        value_type = String,
        required = false,
        pattern = r#"^(\*|(W/)?"[\x21\x23-\x7E]*"([ \t]*,[ \t]*(W/)?"[\x21\x23-\x7E]*")*)$"#
    )]
    if_match: Option<String>,
}

fn precondition_failed() -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        "If-Match does not match the conversation's current version; nothing changed",
    )
}

/// The version an `If-Match` of versions pins the write to, or 412.
async fn pinned_version(
    app: &AppState,
    scope: &Scope,
    id: ConversationId,
    versions: &[u64],
) -> Result<u64, ApiError> {
    let stored = timed("get", app.api.service.get(scope, id)).await?.version;
    if versions.contains(&stored) {
        Ok(stored)
    } else {
        Err(precondition_failed())
    }
}

/// Maps a conflict of a write pinned by `If-Match` to 412.
fn conflict_is_precondition(error: ApiError) -> ApiError {
    if error.problem.code == "conflict" {
        precondition_failed()
    } else {
        error
    }
}

/// Runs a write to completion even if the client disconnects meanwhile. A handler's
/// future is dropped with its connection, and a write cut between its steps (say, the
/// append and the heuristic title that follows it) would be left half done. Timed as
/// `operation`.
pub(crate) async fn to_completion<T, W>(operation: &'static str, write: W) -> Result<T, ApiError>
where
    W: Future<Output = conversation_core::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(timed(operation, write).in_current_span()).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(error) => {
            tracing::error!(%error, "a write task failed");
            Err(Problem::internal().into())
        }
    }
}

/// Update a conversation
///
/// Rename (the title becomes the user's, final for automatic titles), pin, archive
/// or replace the metadata. Optimistic concurrency two ways: `If-Match` with the
/// `ETag` (412 on mismatch) or `expectedVersion` in the body (409 on mismatch);
/// either way nothing changes on a mismatch.
#[utoipa::path(
    patch,
    path = "/{scope}/conversations/{id}",
    tag = "conversations",
    operation_id = "updateConversation",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
        IfMatchParam,
    ),
    request_body(content = ConversationPatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The updated conversation.", body = Conversation, headers(
            ("ETag" = String, description = "The new version."),
        )),
        (status = 409, description = "`expectedVersion` is not the stored version (`conflict`); nothing changed.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` does not match (`precondition_failed`); nothing changed.", body = Problem, content_type = "application/problem+json"),
        ScopeErrors,
        BodyErrors,
    )
)]
async fn update_conversation(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
    IfMatchHeader(if_match): IfMatchHeader,
    JsonBody(mut patch): JsonBody<ConversationPatch>,
) -> Result<Response, ApiError> {
    let service = app.api.service.clone();
    let updated = match if_match {
        None | Some(IfMatch::Any) => {
            to_completion(
                "update",
                async move { service.update(&scope, id, patch).await },
            )
            .await?
        }
        Some(IfMatch::Versions(versions)) => {
            let stored = pinned_version(&app, &scope, id, &versions).await?;
            if let Some(expected) = patch.expected_version
                && expected != stored
            {
                return Err(Error::Conflict {
                    expected,
                    actual: stored,
                }
                .into());
            }
            patch.expected_version = Some(stored);
            to_completion(
                "update",
                async move { service.update(&scope, id, patch).await },
            )
            .await
            .map_err(conflict_is_precondition)?
        }
    };
    with_etag(updated)
}

/// Delete a conversation
///
/// Removes it, all its messages and runs at once; the SQL stores leave none of its
/// text recoverable in their files. `If-Match` deletes only at that version (412
/// otherwise, nothing deleted).
#[utoipa::path(
    delete,
    path = "/{scope}/conversations/{id}",
    tag = "conversations",
    operation_id = "deleteConversation",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
        IfMatchParam,
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 412, description = "`If-Match` does not match (`precondition_failed`); nothing deleted.", body = Problem, content_type = "application/problem+json"),
        ScopeErrors,
    )
)]
async fn delete_conversation(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
    IfMatchHeader(if_match): IfMatchHeader,
) -> Result<StatusCode, ApiError> {
    let service = app.api.service.clone();
    match if_match {
        None | Some(IfMatch::Any) => {
            to_completion("delete", async move { service.delete(&scope, id).await }).await?;
        }
        Some(IfMatch::Versions(versions)) => {
            let version = pinned_version(&app, &scope, id, &versions).await?;
            to_completion("delete", async move {
                service.delete_at_version(&scope, id, version).await
            })
            .await
            .map_err(conflict_is_precondition)?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /{scope}/conversations/{id}/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct MessageParams {
    /// Page size, at least 1; default 50; values above 200 are lowered to 200.
    #[param(value_type = Option<u64>, minimum = 1)]
    limit: Option<String>,
    /// Only messages with a smaller `seq` (read backwards from there).
    #[param(value_type = Option<u64>, minimum = 0)]
    before: Option<String>,
    /// Only messages with a larger `seq` (read forwards from there).
    #[param(value_type = Option<u64>, minimum = 0)]
    after: Option<String>,
    /// `path` (default): the active branch, root to head, as a chat shows it; `all`:
    /// every message of every branch, by `seq` (for export and sync).
    #[param(value_type = Option<MessageView>)]
    view: Option<String>,
}

/// List messages
///
/// A page of messages, always chronological (ascending `seq`): of the active branch
/// (`view=path`, the default: root to head, each message with its `siblingIds`,
/// `siblingCount` and `siblingIndex` to draw "< 2/3 >") or of every branch
/// (`view=all`). Without bounds: the newest `limit`; with `before`: the newest `limit`
/// before it (page backwards with `before` = the first `seq` of the page); with
/// `after`: the oldest `limit` after it (page forwards with `after` = the last
/// `seq`). `hasMore` says whether more lie beyond the page in the direction read; a
/// page also stops early, with `hasMore`, at about 4 MiB of messages.
#[utoipa::path(
    get,
    path = "/{scope}/conversations/{id}/messages",
    tag = "messages",
    operation_id = "listMessages",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
        MessageParams,
    ),
    responses(
        (status = 200, description = "A page of messages.", body = MessagePage),
        ScopeErrors,
    )
)]
async fn list_messages(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params = query_params::<MessageParams>(&uri)?;
    let view = match params.view.as_deref() {
        None | Some("path") => MessageView::Path,
        Some("all") => MessageView::All,
        Some(other) => {
            return Err(ApiError::parameter(
                "view",
                format!("{other:?} is not one of path, all"),
            ));
        }
    };
    let query = MessageQuery {
        limit: parse_limit(params.limit.as_deref())?,
        before: parse_seq("before", params.before.as_deref())?,
        after: parse_seq("after", params.after.as_deref())?,
        view,
    };
    let _turn = app.api.admission.heavy_read().await?;
    let page = timed("messages", app.api.service.messages(&scope, id, &query)).await?;
    items_response(page, |page| &mut page.items)
}

/// Append messages
///
/// One message or an array of them, stored atomically in the order given with the
/// next `seq`s. A message whose `id` is already stored in the conversation is
/// returned as stored and not written again, so a retried POST stores nothing twice.
/// `If-Match` appends only at that version (412 otherwise).
#[utoipa::path(
    post,
    path = "/{scope}/conversations/{id}/messages",
    tag = "messages",
    operation_id = "appendMessages",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
        IfMatchParam,
    ),
    request_body(content = AppendRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored (or, for ids already stored, found).", body = AppendResult),
        (status = 412, description = "`If-Match` does not match (`precondition_failed`); nothing stored.", body = Problem, content_type = "application/problem+json"),
        ScopeErrors,
        BodyErrors,
    )
)]
async fn append_messages(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
    IfMatchHeader(if_match): IfMatchHeader,
    JsonValue(body): JsonValue,
) -> Result<Response, ApiError> {
    let mut append = AppendRequest::parse(body)?.into_append();
    let service = app.api.service.clone();
    let appended = match if_match {
        None | Some(IfMatch::Any) => {
            to_completion("append", async move {
                service.append_with(&scope, id, append).await
            })
            .await?
        }
        Some(IfMatch::Versions(versions)) => {
            append.expected_version = Some(pinned_version(&app, &scope, id, &versions).await?);
            to_completion("append", async move {
                service.append_with(&scope, id, append).await
            })
            .await
            .map_err(conflict_is_precondition)?
        }
    };
    Ok((StatusCode::CREATED, Json(AppendResult::from(appended))).into_response())
}

/// Get a message
///
/// One message of the conversation, on any branch, with its siblings.
#[utoipa::path(
    get,
    path = "/{scope}/conversations/{id}/messages/{message}",
    tag = "messages",
    operation_id = "getMessage",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
        ("message" = MessageId, Path, description = "The message's id."),
    ),
    responses(
        (status = 200, description = "The message.", body = Message),
        ScopeErrors,
    )
)]
async fn get_message(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
    MessageParam(message): MessageParam,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(
        app.api
            .service
            .store()
            .get_message(&scope, id, message)
            .await?,
    ))
}

/// Delete a message
///
/// Removes the message and everything that follows it on any branch, at once. When
/// the head was among them, it moves to the newest message left under the deleted
/// message's parent (or to the parent). `If-Match` deletes only at that version
/// (412 otherwise). A message that is not in the conversation, also one deleted
/// before, is 404.
#[utoipa::path(
    delete,
    path = "/{scope}/conversations/{id}/messages/{message}",
    tag = "messages",
    operation_id = "deleteMessage",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
        ("message" = MessageId, Path, description = "The message's id."),
        IfMatchParam,
    ),
    responses(
        (status = 204, description = "Deleted, with its descendants.", headers(
            ("ETag" = String, description = "The conversation's new version."),
        )),
        (status = 412, description = "`If-Match` does not match (`precondition_failed`); nothing deleted.", body = Problem, content_type = "application/problem+json"),
        ScopeErrors,
    )
)]
async fn delete_message(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
    MessageParam(message): MessageParam,
    IfMatchHeader(if_match): IfMatchHeader,
) -> Result<Response, ApiError> {
    let expected = match if_match {
        None | Some(IfMatch::Any) => None,
        Some(IfMatch::Versions(versions)) => {
            Some(pinned_version(&app, &scope, id, &versions).await?)
        }
    };
    let service = app.api.service.clone();
    let conversation = to_completion("delete_message", async move {
        service.delete_message(&scope, id, message, expected).await
    })
    .await
    .map_err(conflict_is_precondition)?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::ETAG, header_value(&etag(conversation.version))?)],
    )
        .into_response())
}

/// Fork a conversation
///
/// A new conversation in the same scope holding a copy of the path from the root to
/// `messageId` (same ids and contents, new `seq`s from 1), titled like its source and
/// marked in `metadata.forkedFrom`. The source is unchanged.
#[utoipa::path(
    post,
    path = "/{scope}/conversations/{id}/fork",
    tag = "conversations",
    operation_id = "forkConversation",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
    ),
    request_body(content = ForkRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The new conversation.", body = Conversation, headers(
            ("Location" = String, description = "The new conversation's URL."),
            ("ETag" = String, description = "Its version."),
        )),
        ScopeErrors,
        BodyErrors,
    )
)]
async fn fork_conversation(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
    OriginalUri(uri): OriginalUri,
    JsonBody(request): JsonBody<ForkRequest>,
) -> Result<Response, ApiError> {
    let service = app.api.service.clone();
    let fork = to_completion("fork", async move {
        service.fork(&scope, id, request.message_id).await
    })
    .await?;
    // `…/conversations/{id}/fork` → `…/conversations/{fork}`.
    let source = uri.path().trim_end_matches('/');
    let base = source
        .strip_suffix("/fork")
        .and_then(|path| path.rsplit_once('/'))
        .map_or(source, |(base, _)| base);
    let location = format!("{base}/{}", fork.id);
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, header_value(&location)?),
            (header::ETAG, header_value(&etag(fork.version))?),
        ],
        Json(fork),
    )
        .into_response())
}

/// Get the context window
///
/// The messages the model would get now: the most recent ones (20 by default),
/// never starting with a tool result cut off from its call.
#[utoipa::path(
    get,
    path = "/{scope}/conversations/{id}/context",
    tag = "messages",
    operation_id = "getContext",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
    ),
    responses(
        (status = 200, description = "The context window, chronological.", body = ContextWindow),
        ScopeErrors,
    )
)]
async fn get_context(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
) -> Result<Response, ApiError> {
    let _turn = app.api.admission.heavy_read().await?;
    let items = timed("context", app.api.service.context(&scope, id)).await?;
    items_response(ContextWindow { items }, |window| &mut window.items)
}

/// Generate the title now
///
/// Asks the title generator now and waits for it (a "regenerate title" button). A
/// title the user set is kept (`applied` is `false`).
#[utoipa::path(
    post,
    path = "/{scope}/conversations/{id}/title",
    tag = "conversations",
    operation_id = "generateTitle",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
    ),
    request_body(content = Option<EmptyObject>, content_type = "application/json",
        description = "Nothing, or `{}`; sent as `application/json` all the same, so that no cross-site form can trigger it."),
    responses(
        (status = 200, description = "The conversation with its title.", body = TitleResult),
        (status = 413, description = "The body exceeds the size limit (`payload_too_large`).", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not sent as `application/json` (`unsupported_media_type`).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The conversation has no messages to title from (`invalid_input`).", body = Problem, content_type = "application/problem+json"),
        ScopeErrors,
    )
)]
async fn generate_title(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
    _: EmptyJsonBody,
) -> Result<Json<TitleResult>, ApiError> {
    let service = app.api.service.clone();
    let outcome = to_completion(
        "title",
        async move { service.generate_title(&scope, id).await },
    )
    .await?;
    Ok(Json(outcome.into()))
}

/// The body `{}`, documented for the routes that take no data.
#[derive(utoipa::ToSchema)]
#[schema(max_properties = 0)]
pub(crate) struct EmptyObject {}

/// Refuses with 501 when the service has no chat model.
pub(crate) struct RequireModel;

impl FromRequestParts<AppState> for RequireModel {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        match app.api.service.chat_model() {
            Some(_) => Ok(Self),
            None => Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "model_not_configured",
                "this server has no chat model configured",
            )),
        }
    }
}

/// This document
///
/// The OpenAPI 3.1 document of this API. When the router is nested under a prefix,
/// `servers` names that prefix.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "getOpenApi",
    responses(
        (status = 200, description = "The OpenAPI document.", body = serde_json::Value, content_type = "application/json"),
    )
)]
async fn openapi_document(
    State(app): State<AppState>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
) -> Result<Response, ApiError> {
    let Some(members) = app.openapi.strip_prefix(b"{") else {
        return Err(Problem::internal().into());
    };
    let prefix = original
        .path()
        .strip_suffix(uri.path())
        .filter(|prefix| !prefix.is_empty());
    let body = match prefix {
        None => app.openapi.clone(),
        // The document is serialised once without `servers`; the mount point is
        // added as its first member.
        Some(prefix) => {
            let servers = serde_json::to_vec(&serde_json::json!([{ "url": prefix }]))
                .map_err(|_| ApiError::from(Problem::internal()))?;
            let mut document = Vec::with_capacity(app.openapi.len() + servers.len() + 16);
            document.extend_from_slice(b"{\"servers\":");
            document.extend_from_slice(&servers);
            document.push(b',');
            document.extend_from_slice(members);
            document.into()
        }
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}
