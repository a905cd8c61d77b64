//! Section E: the HTTP adapter (`conversation-adapter-http`) served in process on
//! loopback, on the run's store, measured through keep-alive `reqwest` clients.
//!
//! The router is mounted as a host would mount it (`/api/v1/connections`), with the
//! default [`ApiState`] (open access, default limits), and served by `axum::serve` on
//! the same two-worker runtime as the client: on a two-core machine the client's work
//! and the server's share the cores, as they would on a host that calls itself.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use conversation_adapter_http::{ApiState, router};
use conversation_core::{ConversationId, Conversations, Scope};
use tokio::sync::{Barrier, oneshot};
use tokio::task::JoinSet;

use crate::stats::Samples;
use crate::target::Target;
use crate::workload::{Runner, expect};
use crate::{Error, Result, body};

/// Concurrent connections of the throughput measurement.
const CONNECTIONS: usize = 32;

fn checked(response: reqwest::Response, want: reqwest::StatusCode) -> Result<reqwest::Response> {
    if response.status() == want {
        Ok(response)
    } else {
        Err(Error::harness(format!(
            "HTTP {} from {}, expected {want}",
            response.status(),
            response.url()
        )))
    }
}

fn new_client() -> Result<reqwest::Client> {
    // In a workspace build, conversation-llm-openai's default TLS feature gives reqwest
    // a rustls backend without a crypto provider of its own (`rustls-no-provider`):
    // building a client then panics unless the process has a default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .build()
        .map_err(|e| Error::harness(format!("building the HTTP client: {e}")))
}

fn http_error(e: reqwest::Error) -> Error {
    Error::harness(format!("HTTP request: {e}"))
}

/// Serves the store over HTTP and measures `GET context` and `POST message` one at a
/// time on one keep-alive connection, then `GET context` from 32 connections at once.
pub(crate) fn section_e(
    runner: &mut Runner<'_>,
    target: &Target,
    chats: &[(Scope, ConversationId)],
) -> Result<()> {
    let rt = runner.rt;
    let Some((scope, chat)) = chats.first().cloned() else {
        return Err(Error::harness("E: no conversation to read"));
    };
    let service = Conversations::new(target.store()?);
    let app: Router = Router::new().nest("/api/v1/connections", router(ApiState::new(service)));
    let (stop, stopped) = oneshot::channel::<()>();
    let (base, server) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok::<_, Error>((format!("http://{address}/api/v1/connections"), server))
    })?;
    let measured = measure(runner, &base, &scope, chat);
    let _ = stop.send(());
    let served = rt
        .block_on(server)
        .map_err(|e| Error::harness(format!("the HTTP server task failed: {e}")))?;
    measured?;
    served.map_err(Error::from)
}

fn measure(runner: &mut Runner<'_>, base: &str, scope: &Scope, chat: ConversationId) -> Result<()> {
    let rt = runner.rt;
    let context_url = format!("{base}/{}/conversations/{chat}/context", scope.as_str());
    let messages_url = format!("{base}/{}/conversations/{chat}/messages", scope.as_str());
    let client = new_client()?;
    // Once, untimed: the window really is 20 messages.
    let window: serde_json::Value = rt.block_on(async {
        checked(
            client.get(&context_url).send().await.map_err(http_error)?,
            reqwest::StatusCode::OK,
        )?
        .json()
        .await
        .map_err(http_error)
    })?;
    let items = window
        .get("items")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    expect("GET context items", items, 20)?;

    let (rw, reads, ww, writes) = (
        runner.scale.read_warmup,
        runner.scale.reads,
        runner.scale.write_warmup,
        runner.scale.writes,
    );
    let (c, url) = (&client, &context_url);
    runner.measure(
        "E",
        "http_get_context",
        rw,
        reads,
        async |_| {
            let response = c.get(url).send().await.map_err(http_error)?;
            checked(response, reqwest::StatusCode::OK)?
                .bytes()
                .await
                .map_err(http_error)?;
            Ok(())
        },
        None::<fn(usize) -> Result<()>>,
    )?;
    let url = &messages_url;
    runner.measure(
        "E",
        "http_post_message",
        ww,
        writes,
        async |i| {
            let message = body::message(i as u64);
            let response = c
                .post(url)
                .json(&message)
                .send()
                .await
                .map_err(http_error)?;
            checked(response, reqwest::StatusCode::CREATED)?
                .bytes()
                .await
                .map_err(http_error)?;
            Ok(())
        },
        None::<fn(usize) -> Result<()>>,
    )?;

    // 32 connections (a client each), released together.
    let per_connection = (reads / CONNECTIONS).max(50);
    let samples = rt.block_on(async {
        let barrier = Arc::new(Barrier::new(CONNECTIONS + 1));
        let mut tasks = JoinSet::new();
        for _ in 0..CONNECTIONS {
            let client = new_client()?;
            let url = context_url.clone();
            let barrier = Arc::clone(&barrier);
            tasks.spawn(async move {
                for _ in 0..10 {
                    let response = client.get(&url).send().await.map_err(http_error)?;
                    checked(response, reqwest::StatusCode::OK)?
                        .bytes()
                        .await
                        .map_err(http_error)?;
                }
                barrier.wait().await;
                let mut samples = Samples::with_capacity(per_connection);
                for _ in 0..per_connection {
                    let started = Instant::now();
                    let response = client.get(&url).send().await.map_err(http_error)?;
                    checked(response, reqwest::StatusCode::OK)?
                        .bytes()
                        .await
                        .map_err(http_error)?;
                    samples.record(started.elapsed());
                }
                Ok::<_, Error>(samples)
            });
        }
        barrier.wait().await;
        let started = Instant::now();
        let mut all = Samples::with_capacity(CONNECTIONS * per_connection);
        while let Some(joined) = tasks.join_next().await {
            let samples = joined
                .map_err(|e| Error::harness(format!("an HTTP client task failed: {e}")))??;
            all.extend(&samples);
        }
        all.set_wall(started.elapsed());
        Ok::<_, Error>(all)
    })?;
    runner.push(
        "E",
        "http_get_context_c32",
        &samples,
        1,
        &Samples::default(),
        1,
    )
}
