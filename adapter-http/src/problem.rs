//! RFC 9457 problem documents: every error this router answers is one.

use std::error::Error as _;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use conversation_core::Error;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client is told to wait (`Retry-After`) after a `503`.
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
/// | 400 | `invalid_body` | the JSON does not have the documented shape: unknown or missing field, wrong type, a malformed UUID |
/// | 400 | `invalid_parameter` | a path or query parameter does not parse: bad scope, bad UUID, `limit=abc`, `limit=0`, a cursor this list did not return |
/// | 400 | `invalid_header` | a malformed `If-Match` |
/// | 401 | `unauthorized` | the host's authorizer wants credentials |
/// | 403 | `forbidden` | the host's authorizer refuses this caller |
/// | 404 | `not_found` | no such conversation in this scope (a conversation of another scope is reported alike) |
/// | 404 | `route_not_found` | no such route |
/// | 405 | `method_not_allowed` | the route does not take this method (see `Allow`) |
/// | 409 | `conflict` | `expectedVersion` in the body is not the stored version; nothing changed |
/// | 412 | `precondition_failed` | `If-Match` does not match the stored version; nothing changed |
/// | 413 | `payload_too_large` | the body exceeds `HttpLimits::max_body_bytes` |
/// | 415 | `unsupported_media_type` | a body that is not `application/json` (or `application/*+json`) |
/// | 422 | `invalid_input` | well-formed input that breaks a rule: too long, NUL character, empty title, a tool message without `toolCallId` … |
/// | 500 | `internal_error` | a fault of the store or model; the cause is logged, never sent |
/// | 501 | `model_not_configured` | `reply` on a router with no chat model |
/// | 503 | `unavailable` | a transient failure; retry after `Retry-After` seconds |
/// | 503 | `timeout` | the request took longer than the configured timeout; retry after `Retry-After` seconds |
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
            Error::Unavailable { message, source } => {
                tracing::warn!(
                    error = %message,
                    source = source.as_ref().map(|s| s.to_string()),
                    "request failed: temporarily unavailable"
                );
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("temporarily unavailable ({message}); retry later"),
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
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Problem::new(status, code, detail).into()
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
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Problem::from_error(&error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.problem.status_code();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        if let Some(challenge) = self.challenge {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        (status, headers, self.problem.to_body()).into_response()
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

/// Turns every error response that is not yet a problem document (a bare `405` from
/// method routing, `413` from the body limit, `503` from the timeout) into one,
/// keeping its status and headers such as `Allow`.
pub(crate) async fn ensure_problem(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&response) {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut problem = ApiError::from(Problem::for_status(status)).into_response();
    let headers = problem.headers_mut();
    for (name, value) in &parts.headers {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    problem
}

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
