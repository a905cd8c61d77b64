//! # conversation-adapter-http
//!
//! The axum router a host mounts to serve [`conversation_core`] over HTTP: REST routes
//! for conversations and messages, a reply streamed as Server-Sent Events, an OpenAPI
//! 3.1 document generated from the code, and RFC 9457 `application/problem+json`
//! errors with a stable `code`.
//!
//! ## Mounting
//!
//! [`router`] returns an [`axum::Router<S>`] for any outer state `S`, so a host can
//! `nest` it under any prefix. Paths are relative to that prefix:
//!
//! ```
//! use std::sync::Arc;
//!
//! use axum::Router;
//! use conversation_adapter_http::{ApiState, router};
//! use conversation_core::Conversations;
//! use conversation_store_memory::MemoryStore;
//!
//! let service = Conversations::new(Arc::new(MemoryStore::new()));
//! let app: Router = Router::new().nest("/api/v1/connections", router(ApiState::new(service)));
//! // GET /api/v1/connections/{scope}/conversations, … and /api/v1/connections/openapi.json
//! # let _ = app;
//! ```
//!
//! | method and path | success | errors besides 400, 401, 403, 404, 500, 503 |
//! |---|---|---|
//! | `GET /{scope}/conversations` (`limit`, `cursor`, `archived`, `pinned`, `q`) | 200 `{items, nextCursor}` | |
//! | `POST /{scope}/conversations` | 201 + `Location`, `ETag` | 413, 415, 422 |
//! | `GET /{scope}/conversations/{id}` | 200 + `ETag` | |
//! | `PATCH /{scope}/conversations/{id}` (`If-Match`) | 200 + `ETag` | 409, 412, 413, 415, 422 |
//! | `DELETE /{scope}/conversations/{id}` | 204 | |
//! | `GET /{scope}/conversations/{id}/messages` (`limit`, `before`, `after`) | 200 `{items, hasMore}` | |
//! | `POST /{scope}/conversations/{id}/messages` (`If-Match`) | 201 `{conversation, messages}` | 412, 413, 415, 422 |
//! | `GET /{scope}/conversations/{id}/context` | 200 `{items}` | |
//! | `POST /{scope}/conversations/{id}/title` | 200 `{conversation, applied}` | 422 |
//! | `POST /{scope}/conversations/{id}/reply` | 200 `text/event-stream` | 413, 415, 422, 501 |
//! | `GET /openapi.json` | 200 | |
//!
//! ## Authorisation: open by default
//!
//! **By default every caller may read and write every scope.** That is right for a
//! single-user tool on localhost (the original host) or behind a gateway that already
//! authorises, and wrong for anything else. Who may use a scope is the host's
//! decision: implement [`ScopeAuthorizer`] (it sees the request's parts and the scope
//! and answers 401, 403 or 404 through [`Denial`]) and pass it to
//! [`ApiState::with_authorizer`]. Its documentation has a complete example binding a
//! bearer token to one scope. `GET /openapi.json` is never authorised: it describes
//! the API, not data.
//!
//! ## Errors
//!
//! Every error is a [`Problem`] document. The rule: **400** when the request cannot be
//! parsed into what the route takes (JSON syntax, a body of the wrong shape including
//! unknown fields, a bad UUID, scope, cursor or query value such as `limit=abc`,
//! `limit=-1` or `limit=0`); **422** when it parses but breaks a rule of the data
//! (core's [`Error::InvalidInput`](conversation_core::Error::InvalidInput): too long,
//! NUL characters, empty title…). `limit` above 200 is lowered to 200. Core's
//! `NotFound` is 404 (also for a conversation of another scope), `Conflict` 409,
//! `Unavailable` 503 with `Retry-After`, `Backend` 500 with the cause logged through
//! `tracing` and not sent. Bodies over [`HttpLimits::max_body_bytes`] are 413, bodies
//! that are not `application/json` 415. Every response carries
//! `X-Content-Type-Options: nosniff`.
//!
//! ## Streamed replies
//!
//! `POST /{scope}/conversations/{id}/reply` stores the user's message and streams the
//! model's reply as SSE events `message` (the stored user message), `delta`,
//! `toolCall`, then `done` (the stored assistant message) or `error` (a problem
//! document). The reply is stored only once the model has finished
//! ([`Conversations::reply`](conversation_core::Conversations::reply)): a model
//! failure or a client that disconnects leaves the user's message and nothing of the
//! reply. No timeout cuts a running stream; [`HttpLimits::reply_start_timeout`] bounds
//! only the time until it starts. Without a model
//! ([`ConversationsBuilder::chat_model`](conversation_core::ConversationsBuilder::chat_model)) the route
//! answers 501.
//!
//! The crate emits `tracing` spans and events (tower-http's request tracing included)
//! and never installs a subscriber.

mod auth;
mod docs;
mod extract;
mod problem;
mod routes;
mod state;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

pub use async_trait::async_trait;
pub use auth::{Denial, OpenAccess, ScopeAuthorizer};
pub use problem::{PROBLEM_JSON, Problem, RETRY_AFTER_SECONDS};
pub use state::{ApiState, HttpLimits};
pub use wire::{
    AppendRequest, AppendResult, ContextWindow, ConversationList, ReplyDelta, ReplyRequest,
    ReplyStreamEvent, StoredMessage, TitleResult,
};

/// The state every handler sees: the host's [`ApiState`] and the OpenAPI document.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) api: ApiState,
    pub(crate) openapi: Arc<serde_json::Value>,
}

/// The router serving every route of the API, to be nested (or merged) into the
/// host's router. See the [crate documentation](crate) for the routes.
pub fn router<S>(state: ApiState) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let limits = state.limits.clone();
    let (routes, document) = routes::api(&limits).split_for_parts();
    let openapi = serde_json::to_value(&document).unwrap_or_else(|error| {
        tracing::error!(%error, "could not serialise the OpenAPI document");
        serde_json::Value::Null
    });
    let app = AppState {
        api: state,
        openapi: Arc::new(openapi),
    };
    routes
        .fallback(problem::route_not_found)
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(CatchPanicLayer::custom(problem::panic_response))
        .layer(axum::middleware::map_response(problem::ensure_problem))
        .layer(TraceLayer::new_for_http())
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(app)
}

/// The OpenAPI 3.1 document of [`router`]'s routes (the one served at
/// `/openapi.json`, without `servers`), e.g. to merge into a host's own document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::api(&HttpLimits::default()).into_openapi()
}
