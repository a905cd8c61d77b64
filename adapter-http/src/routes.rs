//! The handlers, each documented for OpenAPI next to its code.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, OriginalUri, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Json, http::HeaderName};
use conversation_core::{
    ArchivedFilter, Conversation, ConversationId, ConversationPatch, ConversationQuery, Error,
    MessagePage, MessageQuery, NewConversation, NewMessage, ReplyEvent, ReplyProgress, Scope,
    StreamingReply,
};
use futures::{StreamExt as _, stream};
use serde::Deserialize;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument as _;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::docs::{ApiDoc, BodyErrors, ScopeErrors};
use crate::extract::{
    ConversationParam, IfMatch, JsonBody, JsonValue, ScopeAccess, etag, from_json, parse_bool,
    parse_limit, parse_seq,
};
use crate::problem::{ApiError, Problem};
use crate::wire::{
    AppendRequest, AppendResult, ContextWindow, ConversationList, ReplyDelta, ReplyRequest,
    StoredMessage, TitleResult,
};
use crate::{HttpLimits, ReplyStreamEvent};

/// Every route, documented; `limits` sets the timeouts.
pub(crate) fn api(limits: &HttpLimits) -> OpenApiRouter<AppState> {
    use utoipa::OpenApi as _;
    let timeout =
        |duration| TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, duration);
    let plain = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_conversations, create_conversation))
        .routes(routes!(
            get_conversation,
            update_conversation,
            delete_conversation
        ))
        .routes(routes!(list_messages, append_messages))
        .routes(routes!(get_context))
        .routes(routes!(generate_title))
        .routes(routes!(openapi_document))
        .route_layer(timeout(limits.request_timeout));
    let streaming = OpenApiRouter::new()
        .routes(routes!(reply))
        .route_layer(timeout(limits.reply_start_timeout));
    plain.merge(streaming)
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
    /// `true` lists pinned conversations before the others.
    #[param(value_type = Option<bool>)]
    pinned: Option<String>,
    /// Only conversations whose title contains this text, ignoring ASCII case; at most
    /// 256 characters, no control characters.
    #[param(max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    q: Option<String>,
}

impl ListParams {
    fn into_query(self) -> Result<ConversationQuery, ApiError> {
        let archived = match self.archived.as_deref() {
            None | Some("exclude") => ArchivedFilter::Exclude,
            Some("include") => ArchivedFilter::Include,
            Some("only") => ArchivedFilter::Only,
            Some(other) => {
                return Err(ApiError::parameter(
                    "archived",
                    format!("{other:?} is not one of exclude, include, only"),
                ));
            }
        };
        let query = ConversationQuery {
            limit: parse_limit(self.limit.as_deref())?,
            cursor: self.cursor.filter(|cursor| !cursor.is_empty()),
            archived,
            pinned_first: parse_bool("pinned", self.pinned.as_deref())?.unwrap_or(false),
            title_contains: self.q,
        };
        query
            .title_filter()
            .map_err(|error| parameter_error("q", error))?;
        query
            .position()
            .map_err(|error| parameter_error("cursor", error))?;
        Ok(query)
    }
}

/// List conversations
///
/// One page of the scope's conversations, newest activity first, keyset-paginated:
/// pass `nextCursor` as `cursor` to read on. Archived conversations are left out
/// unless `archived` asks for them.
#[utoipa::path(
    get,
    path = "/{scope}/conversations",
    tag = "conversations",
    operation_id = "listConversations",
    params(("scope" = Scope, Path, description = "The scope (e.g. a database connection id)."), ListParams),
    responses(
        (status = 200, description = "A page of conversations.", body = ConversationList),
        ScopeErrors,
    )
)]
async fn list_conversations(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    uri: Uri,
) -> Result<Json<ConversationList>, ApiError> {
    let query = query_params::<ListParams>(&uri)?.into_query()?;
    let page = app.api.service.list(&scope, &query).await?;
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
    let conversation = to_completion(async move { service.create(&scope, new).await }).await?;
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
    with_etag(app.api.service.get(&scope, id).await?)
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
    let stored = app.api.service.get(scope, id).await?.version;
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
/// append and the heuristic title that follows it) would be left half done.
async fn to_completion<T, W>(write: W) -> Result<T, ApiError>
where
    W: Future<Output = conversation_core::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(write.in_current_span()).await {
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
            to_completion(async move { service.update(&scope, id, patch).await }).await?
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
            to_completion(async move { service.update(&scope, id, patch).await })
                .await
                .map_err(conflict_is_precondition)?
        }
    };
    with_etag(updated)
}

/// Delete a conversation
///
/// Removes it and all its messages at once.
#[utoipa::path(
    delete,
    path = "/{scope}/conversations/{id}",
    tag = "conversations",
    operation_id = "deleteConversation",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
    ),
    responses(
        (status = 204, description = "Deleted."),
        ScopeErrors,
    )
)]
async fn delete_conversation(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
) -> Result<StatusCode, ApiError> {
    let service = app.api.service.clone();
    to_completion(async move { service.delete(&scope, id).await }).await?;
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
}

/// List messages
///
/// A page of messages, always chronological (ascending `seq`). Without bounds: the
/// newest `limit`; with `before`: the newest `limit` before it (page backwards with
/// `before` = the first `seq` of the page); with `after`: the oldest `limit` after it
/// (page forwards with `after` = the last `seq`). `hasMore` says whether more lie
/// beyond the page in the direction read.
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
) -> Result<Json<MessagePage>, ApiError> {
    let params = query_params::<MessageParams>(&uri)?;
    let query = MessageQuery {
        limit: parse_limit(params.limit.as_deref())?,
        before: parse_seq("before", params.before.as_deref())?,
        after: parse_seq("after", params.after.as_deref())?,
    };
    Ok(Json(app.api.service.messages(&scope, id, &query).await?))
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
    let messages = parse_append(body)?;
    let service = app.api.service.clone();
    let appended = match if_match {
        None | Some(IfMatch::Any) => {
            to_completion(async move { service.append(&scope, id, messages).await }).await?
        }
        Some(IfMatch::Versions(versions)) => {
            let stored = pinned_version(&app, &scope, id, &versions).await?;
            to_completion(async move {
                service
                    .append_at_version(&scope, id, messages, stored)
                    .await
            })
            .await
            .map_err(conflict_is_precondition)?
        }
    };
    Ok((StatusCode::CREATED, Json(AppendResult::from(appended))).into_response())
}

/// One message (an object) or a batch (an array), with the offending field named.
fn parse_append(body: serde_json::Value) -> Result<Vec<NewMessage>, ApiError> {
    match body {
        serde_json::Value::Array(_) => from_json(body).map(AppendRequest::Batch),
        serde_json::Value::Object(_) => from_json(body).map(AppendRequest::One),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body must be a message object or an array of them",
        )),
    }
    .map(AppendRequest::into_messages)
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
) -> Result<Json<ContextWindow>, ApiError> {
    let items = app.api.service.context(&scope, id).await?;
    Ok(Json(ContextWindow { items }))
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
    responses(
        (status = 200, description = "The conversation with its title.", body = TitleResult),
        (status = 422, description = "The conversation has no messages to title from (`invalid_input`).", body = Problem, content_type = "application/problem+json"),
        ScopeErrors,
    )
)]
async fn generate_title(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
) -> Result<Json<TitleResult>, ApiError> {
    let service = app.api.service.clone();
    let outcome = to_completion(async move { service.generate_title(&scope, id).await }).await?;
    Ok(Json(outcome.into()))
}

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

/// Reply with the model, streamed
///
/// Stores the user's message, sends the context window to the model and streams its
/// reply as Server-Sent Events. Each event's `data` is one JSON document
/// (`ReplyStreamEvent` describes them by event name):
///
/// - `message`: first, the user's message as stored, with the conversation;
/// - `delta`: more text (`{"text": …}`);
/// - `toolCall`: a complete tool call (`{"id", "name", "arguments"}`);
/// - `done`: last on success, the assistant's reply as stored, with the conversation;
/// - `error`: last on failure, a problem document.
///
/// The reply is stored only once the model has finished: after `error`, or if the
/// client disconnects, nothing of the reply is stored, while the user's message
/// stays. Storing the reply starts title generation when the conversation has no
/// user or generated title. An error before the stream starts (404, 422, 501, 503…)
/// is an ordinary problem response; if the model refused to start, the user's message
/// is already stored, and a retry with the same `id` does not store it twice.
#[utoipa::path(
    post,
    path = "/{scope}/conversations/{id}/reply",
    tag = "messages",
    operation_id = "reply",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
    ),
    request_body(content = ReplyRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The reply as Server-Sent Events, each described by `ReplyStreamEvent`: `message`, then `delta` and `toolCall`, then `done` or `error`.",
            content_type = "text/event-stream", body = ReplyStreamEvent),
        (status = 501, description = "No chat model is configured (`model_not_configured`).", body = Problem, content_type = "application/problem+json"),
        ScopeErrors,
        BodyErrors,
    )
)]
async fn reply(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
    _: RequireModel,
    JsonBody(request): JsonBody<ReplyRequest>,
) -> Result<Response, ApiError> {
    let (message, tools) = request.into_parts();
    let service = app.api.service.clone();
    let StreamingReply { user, events } =
        to_completion(async move { service.reply(&scope, id, message, tools).await }).await?;
    let first = match StoredMessage::from_appended(user) {
        Some(stored) => ReplyStreamEvent::Message(stored),
        None => ReplyStreamEvent::Error(Problem::internal()),
    };
    let rest = events.filter_map(|progress| async move {
        Some(match progress {
            Ok(ReplyProgress::Model(ReplyEvent::Delta { text })) => {
                ReplyStreamEvent::Delta(ReplyDelta { text })
            }
            Ok(ReplyProgress::Model(ReplyEvent::ToolCall { call })) => {
                ReplyStreamEvent::ToolCall(call)
            }
            // The reason and usage are stored on the message `done` carries.
            Ok(ReplyProgress::Model(ReplyEvent::Finished { .. })) => return None,
            Ok(ReplyProgress::Stored(appended)) => match StoredMessage::from_appended(appended) {
                Some(stored) => ReplyStreamEvent::Done(stored),
                None => ReplyStreamEvent::Error(Problem::internal()),
            },
            Err(error) => ReplyStreamEvent::Error(Problem::from_error(&error)),
        })
    });
    let events = stream::once(async move { first })
        .chain(rest)
        .map(|event| Ok::<Event, Infallible>(sse_event(&event)));
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(app.api.limits.keep_alive))
        .into_response();
    // Ask proxies (nginx) not to buffer the stream.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

fn sse_event(event: &ReplyStreamEvent) -> Event {
    let data = event.data().unwrap_or_else(|error| {
        tracing::error!(%error, event = event.name(), "could not serialise an SSE event");
        Problem::internal().to_body()
    });
    Event::default().event(event.name()).data(data)
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
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut document = app.openapi.as_ref().clone();
    if !document.is_object() {
        return Err(Problem::internal().into());
    }
    if let Some(prefix) = original
        .path()
        .strip_suffix(uri.path())
        .filter(|prefix| !prefix.is_empty())
    {
        document["servers"] = serde_json::json!([{ "url": prefix }]);
    }
    Ok(Json(document))
}
