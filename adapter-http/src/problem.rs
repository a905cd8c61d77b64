//! RFC 9457 problem documents: every error this router answers is one.

use std::error::Error as _;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use conversation_core::Error;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client is told to wait (`Retry-After`) after a `429` or `503`.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// An RFC 9457 problem document, the body of every error response
/// (`Content-Type: application/problem+json`).
///
/// `code` is the stable, machine-readable name of the problem; `title` and `detail`
/// are for people and may change. `field` names the offending input when one is known
/// (`"limit"`, `"scope"`, `"messages[2].content"`, `"title"`).
///
/// | status | `code` | when |
/// |---|---|---|
/// | 400 | `invalid_json` | the body is not JSON (syntax error, truncated, trailing text) |
/// | 400 | `invalid_body` | the JSON does not have the documented shape: unknown or missing field, wrong type, a malformed UUID; a line of an import that is not UTF-8 |
/// | 400 | `invalid_parameter` | a path or query parameter does not parse: bad scope, bad UUID, `limit=abc`, `limit=0`, a cursor this list did not return |
/// | 400 | `invalid_header` | a malformed `If-Match` |
/// | 401 | `unauthorized` | the host's authorizer wants credentials |
/// | 403 | `forbidden` | the host's authorizer refuses this caller |
/// | 404 | `not_found` | no such conversation in this scope (a conversation of another scope is reported alike) |
/// | 404 | `route_not_found` | no such route |
/// | 405 | `method_not_allowed` | the route does not take this method (see `Allow`) |
/// | 409 | `conflict` | `expectedVersion` in the body is not the stored version; nothing changed |
/// | 412 | `precondition_failed` | `If-Match` does not match the stored version; nothing changed |
/// | 403 | `host_not_allowed` | the `Host` is not one the server answers to ([`AllowedHosts`](crate::AllowedHosts), against DNS rebinding) |
/// | 403 | `cross_origin_refused` | a write sent by a page of another site (`Sec-Fetch-Site`, `Origin`) |
/// | 413 | `payload_too_large` | the body exceeds `HttpLimits::max_body_bytes`; an import's, or one of its lines, its own limit (`HttpLimits::max_import_bytes`, `max_import_line_bytes`, `max_chatgpt_import_bytes`) |
/// | 415 | `unsupported_media_type` | a body (or a body-less `POST`) not sent as `application/json` (or `application/*+json`); an import neither `application/x-ndjson` nor `application/json` |
/// | 422 | `invalid_input` | well-formed input that breaks a rule: too long, NUL character, empty title, a tool message without `toolCallId`, a search text with no word, too many ids for a bulk action … |
/// | 409 | `run_in_progress` | the conversation has a run going; wait for it or cancel it |
/// | 429 | `too_many_replies` | the server or the scope streams as many replies as allowed; retry after `Retry-After` seconds |
/// | 500 | `internal_error` | a fault of the store; the cause is logged, never sent |
/// | 502 | `upstream_unauthorized`, `upstream_forbidden`, `upstream_not_found`, `upstream_quota_exceeded`, `upstream_invalid_request`, `upstream_bad_response`, `upstream_content_filtered` | the model provider refused or failed; `detail` says what to check (key, base URL, model) and names no URL or key |
/// | 503 | `upstream_rate_limited`, `upstream_unavailable`, `upstream_timeout` | the model provider is busy or down; `Retry-After` is the provider's own when it gave one |
/// | 501 | `model_not_configured` | `reply` on a router with no chat model |
/// | 503 | `unavailable` | a transient failure (the cause is logged, never sent); retry after `Retry-After` seconds |
/// | 503 | `timeout` | the request took longer than the configured timeout; retry after `Retry-After` seconds |
/// | 503 | `busy` | as many large reads run as allowed; retry after `Retry-After` seconds |
/// | 503 | `not_ready` | `/readyz`: the store cannot serve now |
///
/// When the request went through [`harden`](crate::harden) (as every request of
/// [`router`](crate::router) does), `requestId` is the request's `X-Request-Id`, also
/// found in the server's log line of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI naming the problem type: `urn:conversation:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the problem type, for people.
    pub title: String,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong with this request, for people.
    pub detail: String,
    /// The stable machine-readable name of the problem (snake_case).
    pub code: String,
    /// The offending input, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The id of the request (its `X-Request-Id`), to find it in the server's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Problem {
    /// A problem with `status`, stable `code` and `detail`.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            problem_type: format!("urn:conversation:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            field: None,
            request_id: None,
        }
    }

    /// Names the offending input.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The status as a [`StatusCode`] (500 if the document holds an invalid one).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The problem reported for a core [`Error`], with the cause of a backend fault
    /// logged (with `tracing`) and left out of the document.
    pub fn from_error(error: &Error) -> Self {
        match error {
            Error::NotFound { entity } => Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{entity} not found"),
            ),
            Error::RunInProgress { run_id } => Problem::new(
                StatusCode::CONFLICT,
                "run_in_progress",
                format!(
                    "run {run_id} is in progress in this conversation; wait for it or cancel it"
                ),
            ),
            Error::Conflict { expected, actual } => Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "expected version {expected}, but the stored version is {actual}; nothing changed"
                ),
            ),
            Error::InvalidInput { field, reason } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                format!("invalid {field}: {reason}"),
            )
            .with_field(field.clone()),
            Error::Model { kind, message, .. } => {
                tracing::warn!(code = kind.code(), error = %error, "request failed: the model provider failed");
                let status = if kind.is_transient() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::BAD_GATEWAY
                };
                Problem::new(status, kind.code(), message.clone())
            }
            // The message and its source are the backend's words (driver errors, file
            // paths): they go to the log, the client gets a stable sentence.
            Error::Unavailable { message, source } => {
                tracing::warn!(
                    error = %message,
                    source = source.as_ref().map(|s| s.to_string()),
                    "request failed: temporarily unavailable"
                );
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store or the model is temporarily unavailable; retry later",
                )
            }
            other => {
                tracing::error!(
                    error = %other,
                    source = other.source().map(|s| s.to_string()),
                    "request failed: backend fault"
                );
                Problem::internal()
            }
        }
    }

    /// The `500` problem, saying nothing of the cause.
    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server failed to complete the request; the cause is logged",
        )
    }

    /// The problem for a bare error status produced by a layer (timeout, body limit,
    /// method routing) rather than by a handler.
    pub(crate) fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Problem::new(status, "route_not_found", "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => Problem::new(
                status,
                "method_not_allowed",
                "this route does not take this method; see the Allow header",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
                status,
                "payload_too_large",
                "the request body exceeds the size limit",
            ),
            StatusCode::SERVICE_UNAVAILABLE => Problem::new(
                status,
                "timeout",
                "the request took longer than the server allows; retry later",
            ),
            StatusCode::INTERNAL_SERVER_ERROR => Problem::internal(),
            other => Problem::new(
                other,
                &other
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase()
                    .replace([' ', '-'], "_"),
                other.canonical_reason().unwrap_or("error"),
            ),
        }
    }

    /// Serialises the document (never fails for this type; falls back to a minimal
    /// document if it somehow did).
    pub(crate) fn to_body(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                r#"{{"type":"about:blank","title":"Error","status":{},"detail":"","code":"internal_error"}}"#,
                self.status
            )
        })
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// What a handler or extractor fails with: a problem document plus the headers that
/// go with it.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) problem: Box<Problem>,
    pub(crate) challenge: Option<HeaderValue>,
    /// `Retry-After` of a 503, when the cause said how long (else
    /// [`RETRY_AFTER_SECONDS`]).
    pub(crate) retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Problem::new(status, code, detail).into()
    }

    /// Names the offending input.
    pub(crate) fn with_field(mut self, field: impl Into<String>) -> Self {
        self.problem.field = Some(field.into());
        self
    }

    pub(crate) fn parameter(field: &str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "invalid_parameter", detail)
            .with_field(field)
            .into()
    }
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        Self {
            problem: Box::new(problem),
            challenge: None,
            retry_after: None,
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let mut api = ApiError::from(Problem::from_error(&error));
        api.retry_after = error.retry_after();
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.problem.render();
        if let Some(challenge) = self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        // The provider's own wait, when it gave one, instead of the default.
        if let Some(wait) = self.retry_after
            && response.headers().contains_key(header::RETRY_AFTER)
        {
            let seconds = (wait.as_secs_f64().ceil() as u64).max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl Problem {
    /// The response carrying this document: its status, `Content-Type`, `Retry-After`
    /// for `429` and `503`, and the document itself in the response's extensions so
    /// that [`finish_problems`] can add the request id without parsing the body.
    fn render(self) -> Response {
        let status = self.status_code();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        let mut response = (status, headers, self.to_body()).into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Whether a response already carries a problem document.
fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(PROBLEM_JSON))
}

/// Middleware making every error response a problem document with the request's id:
/// a bare error (a `404` of a host's router, `405` from method routing, `413` from the
/// body limit, `503` from the timeout) becomes one, keeping its status and headers
/// such as `Allow`; a document of ours gets `requestId`. A problem document of
/// someone else's is left as it is.
pub(crate) async fn finish_problems(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let mut problem = match response.extensions_mut().remove::<Problem>() {
        Some(problem) => problem,
        None if is_problem(&response) => return response,
        None => Problem::for_status(status),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut finished = Problem {
        request_id: request_id.or(problem.request_id.take()),
        ..problem
    }
    .render();
    let headers = finished.headers_mut();
    for (name, value) in &parts.headers {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    finished
}

/// The request id header, set by [`harden`](crate::harden).
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// The response for a panicking handler: a `500` problem; the panic is logged.
pub(crate) fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a non-text panic payload");
    tracing::error!(panic = message, "a request handler panicked");
    Problem::internal().into_response()
}

/// The fallback of the router: `404 route_not_found`.
pub(crate) async fn route_not_found() -> ApiError {
    Problem::for_status(StatusCode::NOT_FOUND).into()
}
