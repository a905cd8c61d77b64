//! `serve` over real loopback TCP: slow and silent clients are cut off, idle
//! connections close, the connection cap makes newcomers wait, and a shutdown has a
//! deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conversation_adapter_http::ServeConfig;
use conversation_core::ConversationId;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};

use crate::support::{PREFIX, Script, Step, TestApp, delta, finished};

const HEADER_TIMEOUT: Duration = Duration::from_millis(500);

fn quick() -> ServeConfig {
    ServeConfig::default()
        .with_header_read_timeout(HEADER_TIMEOUT)
        .with_idle_timeout(HEADER_TIMEOUT)
}

/// Reads until the server closes the connection; what it sent, and when it closed.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Instant) {
    let mut received = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .ok();
    (received, Instant::now())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The status of a list of scope `db` from the server at `address`.
async fn list(address: SocketAddr) -> reqwest::StatusCode {
    client()
        .get(format!("http://{address}{PREFIX}/db/conversations"))
        .send()
        .await
        .unwrap()
        .status()
}

/// Asks the server at `address` for a reply to `content` in conversation `id` of
/// scope `db`; the response, its stream unread.
async fn reply(address: SocketAddr, id: ConversationId, content: &str) -> reqwest::Response {
    client()
        .post(format!(
            "http://{address}{PREFIX}/db/conversations/{id}/reply"
        ))
        .json(&json!({ "content": content }))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_off_by_the_header_timeout_while_others_are_served() {
    let app = TestApp::new();
    let (address, _) = app.serve_with(quick(), std::future::pending()).await;
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: a")
            .await
            .unwrap();
        slow.push(stream);
    }
    // A normal client is served at once meanwhile.
    assert_eq!(list(address).await, 200);
    assert!(
        started.elapsed() < HEADER_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    // The trickling ones keep sending, and are cut off all the same.
    for stream in &mut slow {
        stream.write_all(b"a").await.unwrap();
    }
    for mut stream in slow {
        let (_, closed) = until_closed(&mut stream, Duration::from_secs(5)).await;
        let after = closed - started;
        assert!(
            after >= HEADER_TIMEOUT && after < HEADER_TIMEOUT * 4,
            "closed after {after:?}"
        );
    }
}

#[tokio::test]
async fn a_client_that_never_sends_a_byte_is_disconnected() {
    let app = TestApp::new();
    let (address, _) = app.serve_with(quick(), std::future::pending()).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(address).await.unwrap();
    let (received, closed) = until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(received.is_empty());
    assert!(closed - started >= HEADER_TIMEOUT, "{:?}", closed - started);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_response() {
    let app = TestApp::new();
    let (address, _) = app.serve_with(quick(), std::future::pending()).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {PREFIX}/db/conversations HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let answered = Instant::now();
    let (received, closed) = until_closed(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        closed - answered >= HEADER_TIMEOUT,
        "{:?}",
        closed - answered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_streaming_longer_than_the_timeouts_is_not_cut() {
    let app = TestApp::new();
    let id = app.conversation("db").await.id;
    let (address, _) = app.serve_with(quick(), std::future::pending()).await;
    let go_on = Arc::new(Notify::new());
    app.model.push(Script::steps(vec![
        delta("thinking"),
        Step::WaitFor(go_on.clone()),
        delta(" done"),
        finished(),
    ]));
    let notify = go_on.clone();
    tokio::spawn(async move {
        tokio::time::sleep(HEADER_TIMEOUT * 4).await;
        notify.notify_one();
    });
    let stream = reply(address, id, "take your time")
        .await
        .text()
        .await
        .unwrap();
    assert!(stream.contains("event: done"), "{stream}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_their_turn() {
    let app = TestApp::new();
    let config = quick().with_max_connections(2);
    let (address, _) = app.serve_with(config, std::future::pending()).await;
    let _first = TcpStream::connect(address).await.unwrap();
    let _second = TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    // Waits in the backlog until the silent ones are cut off, then is served.
    assert_eq!(list(address).await, 200);
    let waited = started.elapsed();
    assert!(waited >= HEADER_TIMEOUT / 2, "served at once: {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_waits_for_requests_in_flight_until_its_deadline() {
    let app = TestApp::new();
    let id = app.conversation("db").await.id;
    let deadline = Duration::from_millis(700);
    let (stop, stopped) = oneshot::channel::<()>();
    let config = ServeConfig::default().with_shutdown_deadline(deadline);
    let (address, served) = app
        .serve_with(config, async move {
            let _ = stopped.await;
        })
        .await;
    // A stalled client (half a request) and a reply that never ends.
    let mut stalled = TcpStream::connect(address).await.unwrap();
    stalled.write_all(b"POST / HTTP/1.1\r\n").await.unwrap();
    app.model
        .push(Script::steps(vec![delta("forever"), Step::Hang]));
    let reply = reply(address, id, "hello").await;
    assert_eq!(reply.status(), 200);

    let started = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve returns after the deadline")
        .unwrap();
    let took = started.elapsed();
    assert!(took >= deadline / 2 && took < deadline * 3, "{took:?}");
    let cut = tokio::time::timeout(Duration::from_secs(2), reply.text())
        .await
        .expect("the reply's body ends");
    assert!(cut.is_err(), "the endless reply was cut off: {cut:?}");
    let (_, _) = until_closed(&mut stalled, Duration::from_secs(1)).await;
    assert!(
        TcpStream::connect(address).await.is_err(),
        "no new connections after the shutdown"
    );
}
