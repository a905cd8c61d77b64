//! Runs over HTTP: `POST …/reply` starts one and streams its events, `GET …/runs/{run}`
//! reads it, `GET …/runs/{run}/events` replays and follows them from `Last-Event-ID`,
//! `POST …/runs/{run}/cancel` stops it.
//!
//! A run is detached from the connection that started it: a client that leaves (a
//! closed tab, a phone changing network, a proxy cutting the stream) leaves the run
//! to finish and store its messages; it reattaches with its last event id. That is
//! why this layer uses [`Conversations::start_run`](conversation_core::Conversations::start_run)
//! and not the stream-bound `reply`.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use conversation_core::{ConversationId, Run, RunEventRecord, RunId, Scope};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::docs::{BodyErrors, ScopeErrors};
use crate::extract::{
    ConversationParam, EmptyJsonBody, JsonBody, RequestIdHeader, ScopeAccess, raw_path_param,
};
use crate::problem::{ApiError, Problem};
use crate::routes::{RequireModel, to_completion};
use crate::telemetry;
use crate::wire::{ReplyRequest, ReplyStreamEvent};

/// The run id of the path (`{run}`).
pub(crate) struct RunParam(RunId);

impl FromRequestParts<AppState> for RunParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let raw = raw_path_param(parts, state, "run").await?;
        raw.parse()
            .map(Self)
            .map_err(|_| ApiError::parameter("run", "not a UUID"))
    }
}

/// Reply: start a run, stream its events
///
/// Starts a run of the agent (the model, and the host's tools when it has any) and
/// streams its events as Server-Sent Events, each with an `id`: `run` at once, the
/// question as stored (`message`), then `delta`, `toolCall` and `message` events, and
/// last `done` with how the run ended (`completed`, `requires_action` with the tool
/// calls the client must answer, `cancelled`, or `failed` with a stable error code
/// such as `upstream_rate_limited`). A stopped or failed answer keeps what the model
/// had said, stored with `metadata.finishReason` `cancelled` or `error`.
///
/// The run does not depend on this connection: when the client leaves, it goes on
/// and stores its messages; `GET …/runs/{run}/events` with `Last-Event-ID` picks the
/// stream up where it broke. One run at a time per conversation: a second start is
/// 409 `run_in_progress`.
///
/// | `content` | `parentId` | does |
/// |---|---|---|
/// | given | absent | asks a new question after the head |
/// | given | an id, or `null` | edits: the question becomes a new version of the one under that parent |
/// | absent | a user message's id | regenerates the answer to that question |
/// | absent | absent | continues from the head, a question or tool results (after `requires_action`) |
#[utoipa::path(
    post,
    path = "/{scope}/conversations/{id}/reply",
    tag = "runs",
    operation_id = "reply",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
    ),
    request_body(content = ReplyRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The run's events as Server-Sent Events, each described by `ReplyStreamEvent`.",
            content_type = "text/event-stream", body = ReplyStreamEvent),
        (status = 409, description = "A run is in progress in this conversation (`run_in_progress`); nothing was stored.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "As many replies run as allowed (`too_many_replies`); retry after `Retry-After` seconds.", body = Problem, content_type = "application/problem+json"),
        (status = 501, description = "No chat model is configured (`model_not_configured`).", body = Problem, content_type = "application/problem+json"),
        ScopeErrors,
        BodyErrors,
    )
)]
pub(crate) async fn reply(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
    _: RequireModel,
    RequestIdHeader(request_id): RequestIdHeader,
    JsonBody(request): JsonBody<ReplyRequest>,
) -> Result<Response, ApiError> {
    let request = request.into_request();
    let slot = app.api.admission.reply(&scope)?;
    let service = app.api.service.clone();
    let started_scope = scope.clone();
    let handle = to_completion("reply", async move {
        service.start_run(&started_scope, id, request).await
    })
    .await
    .inspect_err(|error| telemetry::reply_error("start", &error.problem.code))?;
    let run = handle.run.id;
    // The slot belongs to the run, not to this connection: a follower holds it until
    // the run ends, whoever listens.
    let follower = app.api.service.run_events(&scope, id, run, 0).await;
    telemetry::replies_active(1.0);
    tokio::spawn(async move {
        let _slot = slot;
        if let Ok(events) = follower {
            events
                .for_each(|record| {
                    if let conversation_core::RunEvent::Finished { run, .. } = &record.event
                        && let Some(error) = &run.error
                    {
                        telemetry::reply_error("run", &error.code);
                    }
                    std::future::ready(())
                })
                .await;
        }
        telemetry::replies_active(-1.0);
    });
    Ok(sse(app.api.limits.keep_alive, handle.events, request_id))
}

/// Where `GET …/events` starts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsParams {
    /// Send the events after this id (as `Last-Event-ID` says; the header wins).
    #[param(value_type = Option<u64>, minimum = 0)]
    after: Option<String>,
}

/// Read a run
#[utoipa::path(
    get,
    path = "/{scope}/conversations/{id}/runs/{run}",
    tag = "runs",
    operation_id = "getRun",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
        ("run" = RunId, Path, description = "The run's id."),
    ),
    responses(
        (status = 200, description = "The run: its status, usage, error and pending tool calls.", body = Run),
        ScopeErrors,
    )
)]
pub(crate) async fn get_run(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
    RunParam(run): RunParam,
) -> Result<Json<Run>, ApiError> {
    Ok(Json(app.api.service.get_run(&scope, id, run).await?))
}

/// Follow a run's events
///
/// The run's events after `Last-Event-ID` (or `after`), then live ones until it
/// ends, as Server-Sent Events: a client that lost its stream (a reload, another
/// tab, another server instance) reattaches here and gets exactly what it missed.
/// Events stay replayable for ten minutes after the run ends; after that, and for a
/// run another server instance runs, the stream holds `run` and, once it has ended,
/// `done`: the stored messages speak for the rest.
#[utoipa::path(
    get,
    path = "/{scope}/conversations/{id}/runs/{run}/events",
    tag = "runs",
    operation_id = "runEvents",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
        ("run" = RunId, Path, description = "The run's id."),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received."),
        EventsParams,
    ),
    responses(
        (status = 200, description = "The events, each described by `ReplyStreamEvent`.",
            content_type = "text/event-stream", body = ReplyStreamEvent),
        ScopeErrors,
    )
)]
pub(crate) async fn run_events(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
    RunParam(run): RunParam,
    RequestIdHeader(request_id): RequestIdHeader,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let after = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_header",
                        "Last-Event-ID must be the id of an event of this run",
                    )
                })?,
        ),
        None => {
            let Query(params) = Query::<EventsParams>::try_from_uri(&uri)
                .map_err(|rejection| ApiError::parameter("query", rejection.body_text()))?;
            params
                .after
                .map(|text| {
                    text.parse::<u64>()
                        .map_err(|_| ApiError::parameter("after", "not an event id"))
                })
                .transpose()?
        }
    };
    let events = app
        .api
        .service
        .run_events(&scope, id, run, after.unwrap_or(0))
        .await?;
    Ok(sse(app.api.limits.keep_alive, events, request_id))
}

/// Stop a run
///
/// Stops the run at once: the model's request is dropped, what it had said is stored
/// marked `cancelled`, and the run ends `cancelled` (its `done` event follows on its
/// stream). A run another server instance runs stops at its next lease renewal.
/// Takes no data; send `{}` or nothing, as `application/json`.
#[utoipa::path(
    post,
    path = "/{scope}/conversations/{id}/runs/{run}/cancel",
    tag = "runs",
    operation_id = "cancelRun",
    params(
        ("scope" = Scope, Path, description = "The scope."),
        ("id" = ConversationId, Path, description = "The conversation's id."),
        ("run" = RunId, Path, description = "The run's id."),
    ),
    responses(
        (status = 202, description = "Stopping: the run as it is now.", body = Run),
        (status = 422, description = "The run has ended already (`invalid_input`, field `runId`).", body = Problem, content_type = "application/problem+json"),
        ScopeErrors,
        BodyErrors,
    )
)]
pub(crate) async fn cancel_run(
    State(app): State<AppState>,
    ScopeAccess(scope): ScopeAccess,
    ConversationParam(id): ConversationParam,
    RunParam(run): RunParam,
    _: EmptyJsonBody,
) -> Result<Response, ApiError> {
    let service = app.api.service.clone();
    let run = to_completion("cancel_run", async move {
        service.cancel_run(&scope, id, run).await
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(run)).into_response())
}

/// A run's events as an SSE response, ids included. A stream that ends without
/// `done` lost the run's events inside this server: it ends with `error` (a problem
/// with the request id) rather than silently; the run itself may still finish.
fn sse(
    keep_alive: std::time::Duration,
    events: BoxStream<'static, RunEventRecord>,
    request_id: Option<String>,
) -> Response {
    let mut finished = false;
    let events = events
        .filter_map(|record| async move {
            ReplyStreamEvent::of(record.event).map(|event| (Some(record.id), event))
        })
        .map(Some)
        .chain(futures::stream::once(async { None }))
        .filter_map(move |item| {
            let item = match item {
                Some((id, event)) => {
                    finished |= matches!(event, ReplyStreamEvent::Done(_));
                    Some((id, event))
                }
                None if finished => None,
                None => {
                    let mut problem = Problem::internal();
                    problem.request_id.clone_from(&request_id);
                    Some((None, ReplyStreamEvent::Error(problem)))
                }
            };
            std::future::ready(item)
        })
        .map(|(id, event)| {
            let mut sse = sse_event(&event);
            if let Some(id) = id {
                sse = sse.id(id.to_string());
            }
            Ok::<Event, Infallible>(sse)
        });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response();
    // Ask proxies (nginx) not to buffer the stream.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}

pub(crate) fn sse_event(event: &ReplyStreamEvent) -> Event {
    let data = event.data().unwrap_or_else(|error| {
        tracing::error!(%error, event = event.name(), "could not serialise an SSE event");
        Problem::internal().to_body()
    });
    Event::default().event(event.name()).data(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conversation_core::{ConversationId, NewRun, RunEvent};

    #[tokio::test]
    async fn a_stream_cut_before_done_ends_with_an_error_naming_the_request() {
        let run = NewRun::new(std::time::Duration::from_secs(30))
            .into_run(ConversationId::new(), conversation_core::backend::now());
        let events = futures::stream::iter([RunEventRecord {
            id: 1,
            event: RunEvent::Started { run },
        }])
        .boxed();
        let response = sse(
            std::time::Duration::from_secs(15),
            events,
            Some("req-7".to_owned()),
        );
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.starts_with("event: run\n"), "{text}");
        assert!(text.contains("id: 1\n"), "{text}");
        let last = text.trim_end().rsplit("\n\n").next().unwrap();
        assert!(last.starts_with("event: error\n"), "{text}");
        assert!(last.contains("\"requestId\":\"req-7\""), "{last}");
        assert!(last.contains("\"code\":\"internal_error\""), "{last}");
    }
}
