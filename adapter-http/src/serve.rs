//! Serving an app over TCP with the timeouts and bounds `axum::serve` leaves out.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

/// File descriptors [`ServeConfig::default`] leaves to the rest of the process (the
/// store's files and connections, logs) when it sizes the connection cap.
const RESERVED_FILES: u64 = 64;

/// How long the accept loop pauses after an error that is not one connection's (out
/// of file descriptors, out of memory) before accepting again.
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// The settings of [`serve`]. The defaults suit a server facing browsers and scripts
/// directly.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeConfig {
    /// How long a client has to send a request's head (line and headers), counted
    /// from the connection's start or the end of the previous response. A client
    /// that sends nothing, or trickles its headers (slowloris), is disconnected; for
    /// HTTP/1.1 this is also how long an idle keep-alive connection stays open.
    /// Default 10 s.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight after its first
    /// request (an HTTP/2 connection, which has no header timeout between
    /// requests). Default 60 s.
    pub idle_timeout: Duration,
    /// Most connections open at once. Beyond it the server stops accepting: new
    /// connections wait in the listen backlog (and are refused by the kernel when it
    /// is full) until one closes. Default: 1024, or fewer when the process's
    /// open-file limit would not leave 64 descriptors for the rest of the process.
    pub max_connections: usize,
    /// Largest request head (line and headers) in bytes; a larger one is answered
    /// `431` (HTTP/1.1) or refused (HTTP/2). At least 8 KiB. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Most header fields in one HTTP/1.1 request. Default 100.
    pub max_headers: usize,
    /// Most concurrent streams (requests) on one HTTP/2 connection. Default 100.
    pub max_http2_streams: u32,
    /// How long a graceful shutdown waits for requests in flight (a streamed reply,
    /// a slow client) before closing their connections. Default 10 s.
    pub shutdown_deadline: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: connections_within_file_limit(1024),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_http2_streams: 100,
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

impl ServeConfig {
    /// Sets [`ServeConfig::header_read_timeout`].
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets [`ServeConfig::idle_timeout`].
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`ServeConfig::max_connections`] (at least 1).
    pub fn with_max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// Sets [`ServeConfig::max_header_bytes`] (at least 8 KiB).
    pub fn with_max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Sets [`ServeConfig::max_headers`].
    pub fn with_max_headers(mut self, headers: usize) -> Self {
        self.max_headers = headers;
        self
    }

    /// Sets [`ServeConfig::max_http2_streams`].
    pub fn with_max_http2_streams(mut self, streams: u32) -> Self {
        self.max_http2_streams = streams;
        self
    }

    /// Sets [`ServeConfig::shutdown_deadline`].
    pub fn with_shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    fn connection_builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(self.max_header_bytes.max(8 * 1024))
            .max_headers(self.max_headers);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_http2_streams)
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        builder
    }
}

/// The open-file limit of the process (soft), when the platform tells.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// `wanted` connections, or fewer if the open-file limit would not leave
/// [`RESERVED_FILES`] descriptors (and at least half) to the rest of the process.
fn connections_within_file_limit(wanted: usize) -> usize {
    let Some(limit) = open_file_limit() else {
        return wanted;
    };
    let room = limit.saturating_sub(RESERVED_FILES).max(limit / 2).max(1);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Serves `app` on `listener` until `shutdown` completes, then shuts down gracefully:
/// no new connections, requests in flight finish, idle connections close, and when
/// [`ServeConfig::shutdown_deadline`] passes the connections still open are closed.
/// Returns once every connection is closed.
///
/// Unlike `axum::serve` it enforces [`ServeConfig`]: a header-read timeout (slowloris
/// clients are cut off), an idle timeout, a cap on open connections, a bound on
/// header size and HTTP/2 streams, and the shutdown deadline. It speaks HTTP/1.1 and
/// HTTP/2 (prior knowledge), and puts the peer's address in each request as
/// [`ConnectInfo<SocketAddr>`]. An accept error of one connection is skipped; any
/// other (out of file descriptors) pauses accepting for a second, logged, and never
/// stops the server.
///
/// ```no_run
/// use axum::Router;
/// use conversation_adapter_http::{ServeConfig, serve};
///
/// # async fn run(app: Router, stopped: tokio::sync::oneshot::Receiver<()>) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// // Usually Ctrl-C or SIGTERM (`tokio::signal`).
/// let stop = async {
///     let _ = stopped.await;
/// };
/// serve(listener, app, ServeConfig::default(), stop).await;
/// # Ok(()) }
/// ```
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    if let Some(limit) = open_file_limit()
        && config.max_connections as u64 + RESERVED_FILES > limit
    {
        warn!(
            max_connections = config.max_connections,
            open_file_limit = limit,
            "the connection cap leaves little room under the open-file limit: accepting may pause"
        );
    }
    let builder = config.connection_builder();
    let slots = std::sync::Arc::new(Semaphore::new(config.max_connections));
    let stop = CancellationToken::new();
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => {
                debug!(%error, "a connection failed while it was accepted");
                continue;
            }
            Err(error) => {
                warn!(%error, pause = ?ACCEPT_PAUSE, "cannot accept connections; pausing");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                }
            }
        };
        let connection = Connection {
            builder: builder.clone(),
            app: app.clone(),
            stop: stop.clone(),
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
        };
        connections.spawn(async move {
            connection.run(stream, peer).await;
            drop(slot);
        });
    }
    drop(listener);
    info!(
        open = connections.len(),
        deadline = ?config.shutdown_deadline,
        "shutting down: no new connections; waiting for requests in flight"
    );
    stop.cancel();
    let drained = tokio::time::timeout(config.shutdown_deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            open = connections.len(),
            "the shutdown deadline passed: closing the connections still open"
        );
        connections.shutdown().await;
    }
}

/// Errors of one connection (the peer gave up before it was accepted), after which
/// accepting goes on at once.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection and what it needs to serve it.
struct Connection {
    builder: auto::Builder<TokioExecutor>,
    app: Router,
    stop: CancellationToken,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: SocketAddr) {
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%error, "cannot set TCP_NODELAY");
        }
        let (in_flight, activity) = watch::channel(0_usize);
        let app = self.app;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let request_in_flight = InFlight::start(&in_flight);
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            let answer = app.clone().oneshot(request);
            async move {
                let response = answer.await?;
                // The request counts as in flight until its body is sent or dropped.
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _ = &request_in_flight;
                        frame
                    }))
                }))
            }
        });
        let mut served = pin!(
            self.builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
        );
        let mut idle = pin!(idle(activity, self.header_read_timeout, self.idle_timeout));
        let mut closing = false;
        loop {
            tokio::select! {
                result = served.as_mut() => {
                    if let Err(error) = result {
                        debug!(%peer, %error, "connection closed with an error");
                    }
                    return;
                }
                () = self.stop.cancelled(), if !closing => {
                    served.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = &mut idle, if !closing => {
                    debug!(%peer, "closing an idle connection");
                    served.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// One request of a connection, counted in its `watch` until dropped.
struct InFlight(watch::Sender<usize>);

impl InFlight {
    fn start(count: &watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Completes once the connection has had no request in flight for `first` (before its
/// first request) or `later` (after it).
async fn idle(mut in_flight: watch::Receiver<usize>, first: Duration, later: Duration) {
    let mut timeout = first;
    loop {
        if *in_flight.borrow_and_update() == 0 {
            tokio::select! {
                () = tokio::time::sleep(timeout) => return,
                changed = in_flight.changed() => if changed.is_err() { return },
            }
        } else if in_flight.changed().await.is_err() {
            return;
        }
        timeout = later;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_room_under_the_file_limit() {
        let cap = ServeConfig::default().max_connections;
        assert!((1..=1024).contains(&cap));
        if let Some(limit) = open_file_limit() {
            assert!(cap as u64 <= limit.max(2));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_no_request_in_flight() {
        let (count, activity) = watch::channel(0_usize);
        let started = tokio::time::Instant::now();
        let waiting = tokio::spawn(idle(
            activity,
            Duration::from_secs(10),
            Duration::from_secs(60),
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let request = InFlight::start(&count);
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!waiting.is_finished(), "a request is in flight");
        drop(request);
        waiting.await.unwrap();
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(165),
            "60 s after the request"
        );
    }
}
