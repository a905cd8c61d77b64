//! Metrics, through the [`metrics`] facade; the names and labels are listed in the
//! [crate documentation](crate#metrics).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use futures::stream::{self, BoxStream, StreamExt as _};

/// Marks a response whose request was counted by the route it matched.
#[derive(Debug, Clone, Copy)]
struct Counted;

/// The `method` label: the standard methods by name, anything else `other`, so that
/// clients cannot make new time series at will.
fn method_label(method: &Method) -> &'static str {
    [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::OPTIONS, "OPTIONS"),
    ]
    .iter()
    .find(|(known, _)| known == method)
    .map_or("other", |(_, name)| *name)
}

/// Counts one request and its latency, labelled with `route`.
fn record(method: &'static str, route: String, status: u16, started: Instant) {
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
}

/// Route middleware (for `route_layer`): counts every request of the routes it wraps
/// with their matched route template.
pub(crate) async fn count_route(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "none".to_owned(), |path| path.as_str().to_owned());
    let mut response = next.run(request).await;
    record(method, route, response.status().as_u16(), started);
    response.extensions_mut().insert(Counted);
    response
}

/// Outer middleware: counts the requests no route counted (404s, refusals), as route
/// `none`, so that every request is counted exactly once.
pub(crate) async fn count_unrouted(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let mut response = next.run(request).await;
    if response.extensions().get::<Counted>().is_none() {
        record(
            method,
            "none".to_owned(),
            response.status().as_u16(),
            started,
        );
        response.extensions_mut().insert(Counted);
    }
    response
}

/// Times a service call: `conversation_operation_duration_seconds{operation, outcome}`.
pub(crate) async fn timed<T, E>(
    operation: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    let result = call.await;
    operation_done(operation, result.is_ok(), started);
    result
}

/// Times a streamed service call (an export) the same way, from now until the stream
/// ends (`ok`) or yields its first error (`error`); a stream dropped before either
/// (the client left) is not recorded.
pub(crate) fn timed_stream<T, E>(
    operation: &'static str,
    stream: BoxStream<'static, Result<T, E>>,
) -> BoxStream<'static, Result<T, E>>
where
    T: Send + 'static,
    E: Send + 'static,
{
    let state = (stream, Some(Instant::now()));
    stream::unfold(state, move |(mut stream, started)| async move {
        match stream.next().await {
            Some(item) => {
                let started = match (&item, started) {
                    (Err(_), Some(at)) => {
                        operation_done(operation, false, at);
                        None
                    }
                    (_, started) => started,
                };
                Some((item, (stream, started)))
            }
            None => {
                if let Some(at) = started {
                    operation_done(operation, true, at);
                }
                None
            }
        }
    })
    .boxed()
}

/// Records `conversation_operation_duration_seconds{operation, outcome}`.
fn operation_done(operation: &'static str, ok: bool, started: Instant) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::histogram!(
        "conversation_operation_duration_seconds",
        "operation" => operation,
        "outcome" => outcome
    )
    .record(started.elapsed().as_secs_f64());
}

/// A request refused by the host guard, for `reason`.
pub(crate) fn refused(reason: &'static str) {
    metrics::counter!("http_requests_refused_total", "reason" => reason).increment(1);
}

/// A reply that failed at `stage` with the problem `code`.
pub(crate) fn reply_error(stage: &'static str, code: &str) {
    metrics::counter!(
        "conversation_reply_errors_total",
        "stage" => stage,
        "code" => code.to_owned()
    )
    .increment(1);
}

/// The gauge of open reply streams, moved by `delta`.
pub(crate) fn replies_active(delta: f64) {
    metrics::gauge!("conversation_replies_active").increment(delta);
}

/// A reply refused by a concurrency bound (`total` or `scope`).
pub(crate) fn reply_refused(reason: &'static str) {
    metrics::counter!("conversation_replies_refused_total", "reason" => reason).increment(1);
}

/// A heavy read refused because the bound stayed full.
pub(crate) fn heavy_read_refused() {
    metrics::counter!("conversation_heavy_reads_refused_total").increment(1);
}
