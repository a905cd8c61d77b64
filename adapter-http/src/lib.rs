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
//! | `GET /{scope}/conversations` (`limit`, `cursor`, `archived`, `pinned`, `metadata.<key>`, `q`) | 200 `{items, nextCursor}` | 422 (`q`) |
//! | `POST /{scope}/conversations` | 201 + `Location`, `ETag` | 413, 415, 422 |
//! | `GET /{scope}/conversations/{id}` | 200 + `ETag` | |
//! | `PATCH /{scope}/conversations/{id}` (`If-Match`; `headId` switches branch) | 200 + `ETag` | 409, 412, 413, 415, 422 |
//! | `DELETE /{scope}/conversations/{id}` (`If-Match`) | 204 | 412 |
//! | `GET /{scope}/conversations/{id}/messages` (`limit`, `before`, `after`, `view`) | 200 `{items, hasMore}` | 503 `busy` |
//! | `POST /{scope}/conversations/{id}/messages` (`If-Match`; `parentId` on the first message) | 201 `{conversation, messages}` | 412, 413, 415, 422 |
//! | `GET /{scope}/conversations/{id}/messages/{message}` | 200 | |
//! | `DELETE /{scope}/conversations/{id}/messages/{message}` (`If-Match`) | 204 + `ETag` | 412 |
//! | `POST /{scope}/conversations/{id}/fork` (`{messageId}`) | 201 + `Location`, `ETag` | 413, 415, 422 |
//! | `GET /{scope}/conversations/{id}/context` | 200 `{items}` | 503 `busy` |
//! | `POST /{scope}/conversations/{id}/title` (`{}` or nothing, as JSON) | 200 `{conversation, applied}` | 413, 415, 422 |
//! | `POST /{scope}/conversations/{id}/reply` (ask, edit with `parentId`, regenerate without `content`) | 200 `text/event-stream` | 413, 415, 422, 429, 501 |
//! | `GET /{scope}/search` (`q`, `limit`, `cursor`, `archived`) | 200 `{items: [{conversation, score, matches}], nextCursor}` | 422 (`q`) |
//! | `POST /{scope}/conversations/bulk` (`{action, ids}`) | 200 `{items: [{id, status}]}` | 413, 415, 422 |
//! | `GET /{scope}/conversations/{id}/export` | 200 `application/x-ndjson`, streamed | |
//! | `GET /{scope}/export` | 200 `application/x-ndjson`, streamed | |
//! | `POST /{scope}/import` (`application/x-ndjson`, or ChatGPT's `conversations.json` as `application/json`) | 200 `{imported, skipped, refused}` | 413, 415, 422 |
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
//! ## Serving safely
//!
//! [`router`] wraps its routes in [`harden`]; a host wraps its whole app in it too:
//!
//! - **DNS rebinding and cross-site writes**: requests whose `Host` is not one of
//!   [`AllowedHosts`] (by default only `localhost`, `*.localhost`, `127.0.0.1` and
//!   `[::1]`) are `403 host_not_allowed`; writes sent by a page of another site
//!   (`Sec-Fetch-Site`, `Origin`) are `403 cross_origin_refused`. Set the names with
//!   [`ApiState::with_allowed_hosts`] and the same value for the host's [`harden`].
//! - **Request ids and logs**: every request gets an `X-Request-Id` (kept when the
//!   client sent one) and one `info` line (status, latency) in a `request` span with
//!   the id; problem documents carry it as `requestId`.
//! - **Problem documents and `nosniff` on every response**, also on the host's own
//!   `404`s and `405`s.
//!
//! [`serve`] (feature `serve`, on by default) replaces `axum::serve` with one that
//! cuts off slow or silent clients (header-read timeout), closes idle connections,
//! caps open connections and gives a graceful shutdown a deadline ([`ServeConfig`]).
//! [`HttpLimits`] bounds the reply streams open at once (per scope and in total:
//! `429 too_many_replies`) and the large reads (message pages, context windows:
//! `503 busy`), and those pages are written to the connection as they are serialised,
//! never held whole twice. [`probes`] adds `/healthz` and `/readyz`.
//!
//! ## Metrics
//!
//! The crate records through the [`metrics`] facade (nothing is recorded until the
//! host installs a recorder; the example server exports them in the Prometheus text
//! format at `/metrics`):
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `http_requests_total` | counter | `method`, `route`, `status` | requests answered; `route` is the matched route template (`/api/v1/connections/{scope}/conversations`), `none` when no route answered (a `404`, a refusal of the host guard) |
//! | `http_request_duration_seconds` | histogram | `method`, `route`, `status` | time to the response head (a streamed reply's head comes first) |
//! | `http_requests_refused_total` | counter | `reason` (`host`, `origin`) | requests refused by the [`AllowedHosts`] guard |
//! | `conversation_operation_duration_seconds` | histogram | `operation`, `outcome` (`ok`, `error`) | the service call a route makes: store reads and writes (`list`, `get`, `create`, `update`, `delete`, `messages`, `append`, `context`, `search`, `bulk`), `title`, starting a `reply`, the store's `health`, a whole `import` or `import_chatgpt`, and a whole `export` stream (recorded when it ends or fails; not when the client leaves first) |
//! | `conversation_replies_active` | gauge | | reply streams open now |
//! | `conversation_replies_refused_total` | counter | `reason` (`total`, `scope`) | replies refused with `429` |
//! | `conversation_reply_errors_total` | counter | `stage` (`start`, `stream`), `code` | failed replies by problem `code` (`unavailable`, `timeout`, `internal_error`…): mostly the upstream model's errors |
//! | `conversation_heavy_reads_refused_total` | counter | | message pages and context windows refused with `503 busy` |
//! | `conversation_titles_total` | counter | `outcome` (`generated`, `failed`, `timed_out`) | background title generations (recorded by `conversation-core`) |
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
//! `Unavailable` 503 with `Retry-After`, `Backend` 500: for both the cause is logged
//! through `tracing` and the client gets a stable sentence. Bodies over
//! [`HttpLimits::max_body_bytes`] (an import's: its own limits) are 413, bodies that
//! are not `application/json` (an import's: see above) 415
//! (also for `POST …/title`, which takes no data: a cross-site form cannot send
//! JSON). A scope with a malformed percent-escape (`/%ZZ/…`) is 400. Every response
//! carries `X-Content-Type-Options: nosniff`.
//!
//! ## Search
//!
//! `GET /{scope}/search?q=` finds the conversations holding every word of `q` in
//! their title or in one message, from the store's search index (FTS5, `tsvector`,
//! an in-memory index), best match first. Each hit carries up to 3 matches: the
//! message (`messageId`, `seq`, `role`; `null` for the title), a snippet and the
//! matched words as `[start, end)` offsets in characters (Unicode scalar values),
//! never markup. `q` is words, never query syntax: quotes, `*`, `AND`, `NEAR`,
//! `column:` and parentheses search for the words around them. A `q` with no word,
//! over 512 characters or 16 words, or with a control character is 422 naming `q`;
//! a cursor of another search (or of a list) is 400, as a list's.
//!
//! The list's `q` is answered by the same search: `GET /{scope}/conversations?q=`
//! lists the conversations the search finds, in its order, and its `nextCursor`
//! continues the search. It costs an index lookup, not a read of the scope's rows.
//! It takes words, not a substring (`del` finds "Delta", `elta` does not), and does
//! not combine with `pinned=true` or `metadata.*` filters (400): the order is the
//! search's.
//!
//! ## Export, import, bulk actions
//!
//! `GET /{scope}/export` and `GET /{scope}/conversations/{id}/export` answer JSON
//! Lines ([`ExportLine`](conversation_core::ExportLine), `application/x-ndjson`,
//! `Content-Disposition: attachment`): a header line, then each conversation
//! followed by every message of its tree. The body is written as the store's pages
//! are read, never gathered whole; a conversation that is not in the scope (or a
//! store that fails before the first conversation) is a problem document before any
//! byte. **A store that fails after the head was sent cuts the body off**: the
//! connection closes without HTTP/1.1's terminating chunk (HTTP/2 resets the
//! stream), so a client sees a failed download (or, when nothing had reached it
//! yet, a connection closed before the response), never a short file that looks
//! complete; the cause is logged.
//!
//! `POST /{scope}/import` reads the same format as `application/x-ndjson`, line by
//! line as it arrives (never the whole body at once), up to
//! [`HttpLimits::max_import_bytes`] (256 MiB) and
//! [`HttpLimits::max_import_line_bytes`] (8 MiB a line); each conversation is checked
//! whole and stored whole or not at all, a bad line refuses its conversation only,
//! and importing the same file twice stores nothing twice. It answers the import
//! report: `imported`, `skipped` and `refused` with line numbers and codes.
//! ChatGPT's `conversations.json` is imported as `application/json`, one document
//! up to [`HttpLimits::max_chatgpt_import_bytes`] (64 MiB). Any other type is 415.
//! A body whose `Content-Length` is over the limit is 413 before anything is read;
//! a body that reaches the limit midway, a line over its limit (413), a line that
//! is not UTF-8 (400), a client that leaves or the import's timeout
//! ([`HttpLimits::import_timeout`], 10 minutes) stop the import there: the
//! conversations stored before stay, each whole, and the report is not sent; import
//! the file again (split or fixed) and what is stored is skipped.
//!
//! `POST /{scope}/conversations/bulk` with `{"action": "archive" | "unarchive" |
//! "pin" | "unpin" | "delete", "ids": [...]}` (1 to 100 ids, else 422) acts on each
//! and answers one `status` per id: `ok`, `not_found` (also for another scope's
//! conversation, which is left untouched), `conflict`, `run_in_progress`.
//!
//! ## Branches: edit, regenerate, versions, fork, delete
//!
//! A conversation's messages form a tree; `headId` names the leaf of the branch
//! shown, and `GET …/messages` pages through that branch (`view=all`: every branch).
//! Every message carries `parentId`, `siblingIds`, `siblingCount` and `siblingIndex`,
//! enough to draw "< 2/3 >" between versions.
//!
//! | to | send |
//! |---|---|
//! | edit a question and get a new answer | `POST …/reply` with `content` and `parentId` = the edited question's `parentId` (`null` for a first question) |
//! | regenerate an answer | `POST …/reply` with `parentId` = the question's id and no `content` (422 when it is not a user message) |
//! | store a message on a branch without a reply | `POST …/messages` with `parentId` on the (first) message |
//! | switch to another version | `PATCH …/{id}` with `{"headId": <a sibling's id>}`: the head moves to the newest message under it |
//! | fork into a new conversation | `POST …/fork` with `{"messageId": …}` → 201 + `Location` |
//! | delete a message and what follows it | `DELETE …/messages/{message}` → 204 |
//!
//! A parent, head or message that is not in the conversation is 404 `not_found`, also
//! when it belongs to another conversation or scope; nothing is written.
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

mod admission;
mod auth;
mod docs;
mod extract;
mod guard;
mod layers;
mod lifecycle;
mod probes;
mod problem;
mod respond;
mod routes;
mod runs;
#[cfg(feature = "serve")]
mod serve;
mod state;
mod telemetry;
mod wire;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;

pub use async_trait::async_trait;
pub use auth::{Denial, OpenAccess, ScopeAuthorizer};
pub use guard::{
    AllowedHosts, CrossOriginRejection, HostCheck, HostGuardLayer, InvalidHostPattern,
};
pub use layers::{harden, measure_routes};
pub use probes::probes;
pub use problem::{PROBLEM_JSON, Problem, RETRY_AFTER_SECONDS};
#[cfg(feature = "serve")]
pub use serve::{ServeConfig, serve};
pub use state::{ApiState, HttpLimits};
pub use wire::{
    AppendRequest, AppendResult, BulkRequest, BulkResults, ContextWindow, ConversationList,
    ForkRequest, ReplyDelta, ReplyRequest, ReplyStreamEvent, RunFinished, SearchResults,
    StoredMessage, TitleResult,
};

/// The state every handler sees: the host's [`ApiState`] and the OpenAPI document.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) api: ApiState,
    /// The OpenAPI document, serialised once, without `servers`.
    pub(crate) openapi: Bytes,
}

/// The router serving every route of the API, to be nested (or merged) into the
/// host's router. See the [crate documentation](crate) for the routes.
///
/// Its routes are wrapped in [`harden`] with the state's
/// [`AllowedHosts`](ApiState::with_allowed_hosts) (loopback names by default) and
/// counted by [`measure_routes`]. Those layers cover only these routes: a host serving
/// anything else next to them wraps its whole app in [`harden`] too.
pub fn router<S>(state: ApiState) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let limits = state.limits.clone();
    let hosts = state.allowed_hosts.clone();
    let (routes, mut document) = routes::api(&limits).split_for_parts();
    // `openapi.json` adds the mount point as `servers` to the bytes (see the handler).
    document.servers = None;
    let openapi = serde_json::to_vec(&document).unwrap_or_else(|error| {
        tracing::error!(%error, "could not serialise the OpenAPI document");
        Vec::new()
    });
    let app = AppState {
        api: state,
        openapi: Bytes::from(openapi),
    };
    // The body limits are the routes' own (`routes::api`): an import has larger ones.
    let routes = measure_routes(routes)
        .fallback(problem::route_not_found)
        .layer(DefaultBodyLimit::disable())
        .with_state(app);
    harden(routes, &hosts)
}

/// The OpenAPI 3.1 document of [`router`]'s routes (the one served at
/// `/openapi.json`, without `servers`), e.g. to merge into a host's own document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::api(&HttpLimits::default()).into_openapi()
}
