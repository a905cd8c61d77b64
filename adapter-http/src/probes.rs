//! Liveness and readiness probes.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Json;
use axum::routing::get;
use conversation_core::{Conversations, Error};
use serde::Serialize;

use crate::problem::ApiError;
use crate::telemetry;

/// How long the store has to answer its health check before the server is reported
/// not ready.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /healthz` and `GET /readyz`, for a host to merge at its root (the example
/// server does):
///
/// - `/healthz` answers `200 {"status":"alive"}` while the process serves HTTP;
/// - `/readyz` asks the store ([`Store::health`](conversation_core::Store::health):
///   its server reachable, its file still the file it opened) and answers
///   `200 {"status":"ready","store":"ok","chatModel":true}` (`chatModel` says whether
///   replies are configured), or `503 not_ready` with the store's reason in `detail`
///   (and in a `warn` log line) when the store fails or does not answer within 5 s.
///
/// The reason is meant for the operator; keep these routes behind the same
/// [`AllowedHosts`](crate::AllowedHosts) guard as the rest ([`harden`](crate::harden)).
pub fn probes<S>(service: Conversations) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .with_state(service)
}

/// The body of `/healthz`.
#[derive(Debug, Serialize)]
struct Alive {
    status: &'static str,
}

async fn alive() -> Json<Alive> {
    Json(Alive { status: "alive" })
}

/// The body of a `200` from `/readyz`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Ready {
    status: &'static str,
    store: &'static str,
    chat_model: bool,
}

async fn ready(State(service): State<Conversations>) -> Result<Json<Ready>, ApiError> {
    let checked = tokio::time::timeout(
        HEALTH_TIMEOUT,
        telemetry::timed("health", service.store().health()),
    )
    .await;
    let reason = match checked {
        Ok(Ok(())) => {
            return Ok(Json(Ready {
                status: "ready",
                store: "ok",
                chat_model: service.chat_model().is_some(),
            }));
        }
        Ok(Err(Error::Unavailable { message, source })) => {
            tracing::warn!(
                reason = %message,
                source = source.as_ref().map(|s| s.to_string()),
                "not ready: the store is unavailable"
            );
            message
        }
        Ok(Err(other)) => {
            tracing::warn!(error = %other, "not ready: the store failed its health check");
            "the store failed its health check; the cause is logged".to_owned()
        }
        Err(_) => {
            tracing::warn!(timeout = ?HEALTH_TIMEOUT, "not ready: the store did not answer");
            format!(
                "the store did not answer its health check within {} s",
                HEALTH_TIMEOUT.as_secs()
            )
        }
    };
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        format!("not ready: {reason}"),
    ))
}
