//! The layers every response of a served app goes through: request ids, one log line
//! per request, the host guard, problem documents and `nosniff`.

use std::time::Duration;

use axum::extract::OriginalUri;
use axum::http::{HeaderValue, header};
use axum::middleware::from_fn;
use axum::{Extension, Router};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{MakeSpan, OnFailure, OnResponse, TraceLayer};
use tracing::Span;

use crate::problem::{self, REQUEST_ID};
use crate::{AllowedHosts, telemetry};

/// Wraps a whole app (a host's router with this crate's [`router`](crate::router)
/// nested in it, the example server's page) in the layers this crate's own routes get:
///
/// - an `X-Request-Id` on every request (a UUID unless the client sent one) and its
///   response;
/// - one `info` log line per request (`tracing`, target
///   `conversation_adapter_http::layers`) in a `request` span holding the id, method
///   and path, with the status and latency;
/// - the [`AllowedHosts`] guard: other host names (DNS rebinding) and cross-site writes
///   are refused with `403`;
/// - every error response a problem document (`application/problem+json`, with
///   `requestId`), whoever produced it: a `404` of an unknown path, a `405`, a panic
///   (answered `500`, the panic logged);
/// - `X-Content-Type-Options: nosniff` on every response;
/// - requests that no [`measure_routes`](crate::measure_routes) route counted are
///   counted as route `none` (see [`telemetry`](crate#metrics)).
///
/// [`router`](crate::router) applies it to its own routes; wrapping the host's whole
/// app as well is safe: the inner copy sees the id, log span and problem documents of
/// the outer one and adds nothing twice.
///
/// ```
/// use std::sync::Arc;
///
/// use axum::Router;
/// use axum::routing::get;
/// use conversation_adapter_http::{AllowedHosts, ApiState, harden, router};
/// use conversation_core::Conversations;
/// use conversation_store_memory::MemoryStore;
///
/// let hosts = AllowedHosts::loopback();
/// let api = ApiState::new(Conversations::new(Arc::new(MemoryStore::new())))
///     .with_allowed_hosts(hosts.clone());
/// let app: Router = harden(
///     Router::new()
///         .route("/", get(|| async { "the host's page" }))
///         .nest("/api/v1/connections", router(api)),
///     &hosts,
/// );
/// # let _ = app;
/// ```
pub fn harden<S>(app: Router<S>, hosts: &AllowedHosts) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    app.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(RequestLog)
                    .on_request(())
                    .on_body_chunk(())
                    .on_eos(())
                    .on_response(RequestLog)
                    .on_failure(RequestLog),
            )
            .layer(Extension(Logged))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(from_fn(telemetry::count_unrouted))
            .layer(from_fn(problem::finish_problems))
            .layer(CatchPanicLayer::custom(problem::panic_response))
            .layer(hosts.layer()),
    )
}

/// Counts the requests of `routes` in the metrics by their route template
/// (`http_requests_total`, `http_request_duration_seconds`; see
/// [the crate documentation](crate#metrics)). [`router`](crate::router) does it for its
/// own routes; a host calls it on its own routes before nesting the API router.
pub fn measure_routes<S>(routes: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes.route_layer(from_fn(telemetry::count_route))
}

/// Marks a request whose log line an outer [`harden`] writes.
#[derive(Debug, Clone, Copy)]
struct Logged;

/// The span, and the line at the end, of one request.
#[derive(Debug, Clone, Copy)]
struct RequestLog;

impl<B> MakeSpan<B> for RequestLog {
    fn make_span(&mut self, request: &axum::http::Request<B>) -> Span {
        if request.extensions().get::<Logged>().is_some() {
            return Span::none();
        }
        let id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let path = request
            .extensions()
            .get::<OriginalUri>()
            .map_or_else(|| request.uri().path(), |original| original.path());
        tracing::info_span!("request", id, method = %request.method(), path)
    }
}

impl<B> OnResponse<B> for RequestLog {
    fn on_response(self, response: &axum::http::Response<B>, latency: Duration, span: &Span) {
        if span.is_none() {
            return;
        }
        tracing::info!(
            parent: span,
            status = response.status().as_u16(),
            latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            "answered"
        );
    }
}

impl OnFailure<ServerErrorsFailureClass> for RequestLog {
    fn on_failure(&mut self, failure: ServerErrorsFailureClass, latency: Duration, span: &Span) {
        // Error statuses are in the `answered` line; this is a body that failed midway.
        if let ServerErrorsFailureClass::Error(error) = failure
            && !span.is_none()
        {
            tracing::warn!(
                parent: span,
                %error,
                latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
                "the response failed"
            );
        }
    }
}
