//! Quiet HTTP/1.1 keep-alive connections are parked (only the socket is kept, the HTTP session and
//! its buffers are dropped) and serve their next request as if nothing happened. Tests set
//! `limits.idle_release_after` to 1 ms so that parking happens as soon as a connection is quiet;
//! they wait for the gateway's own connection counts (which wake waiters when they change) or
//! for the client connection's end, never for time to pass.

mod common;

use std::time::Duration;

use tokio::net::TcpStream;

use common::{
    EchoUpstream, Gateway, TestCa, download_pattern_sha256, keep_alive_client, keep_alive_get,
    sha256_hex,
};

/// Bounds every wait in this file; a passing run never comes near it.
const DEADLINE: Duration = Duration::from_secs(20);

const RELEASE_AT_ONCE: &str = "[limits]\nidle_release_after = \"1ms\"\n";

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Waits until the gateway reports `n` parked connections (woken by each change of its counts).
async fn parked(gw: &Gateway, n: usize) {
    let stats = &gw.app().connection_stats;
    within(
        &format!("{n} parked connection(s)"),
        stats.wait_until(|s| s.parked() == n),
    )
    .await
}

async fn gateway(echo: &EchoUpstream, tls: Option<&TestCa>) -> Gateway {
    let mut builder = Gateway::builder()
        .upstream(&echo.url())
        .extra_toml(RELEASE_AT_ONCE);
    if let Some(ca) = tls {
        builder = builder.tls(ca);
    }
    builder.start().await
}

/// A parked connection keeps its socket and its own state, nothing of the HTTP session it
/// ended: the session's service, which holds a reference to the gateway's state, is dropped
/// with the session's buffers when the connection parks, not when its next request comes.
#[tokio::test]
async fn a_parked_connection_holds_nothing_of_its_session() {
    let echo = EchoUpstream::start().await;
    let gw = gateway(&echo, None).await;
    let app = gw.app();
    let before = std::sync::Arc::strong_count(app);

    let mut clients = Vec::new();
    for i in 0..3 {
        let (mut sender, connection) =
            keep_alive_client(TcpStream::connect(gw.addr()).await.expect("connect")).await;
        let (status, _) = keep_alive_get(&mut sender, &format!("/c/{i}")).await;
        assert_eq!(status, 200);
        clients.push((sender, connection));
    }
    parked(&gw, 3).await;
    // One reference per connection: its own task's. A session's service held another.
    assert_eq!(std::sync::Arc::strong_count(app), before + 3);

    // Each parked connection still serves its next request.
    for (i, (sender, _)) in clients.iter_mut().enumerate() {
        let (status, body) = keep_alive_get(sender, &format!("/again/{i}")).await;
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains(&format!("/again/{i}")));
    }
    assert_eq!(echo.requests(), 6);
}

#[tokio::test]
async fn a_quiet_connection_is_parked_and_serves_its_next_request() {
    let echo = EchoUpstream::start().await;
    let gw = gateway(&echo, None).await;
    let (mut sender, connection) =
        keep_alive_client(TcpStream::connect(gw.addr()).await.expect("connect")).await;

    for round in 1..=3 {
        let (status, body) = keep_alive_get(&mut sender, &format!("/round/{round}")).await;
        assert_eq!(status, 200);
        assert!(
            String::from_utf8_lossy(&body).contains(&format!("/round/{round}")),
            "the echo of this request"
        );
        parked(&gw, 1).await;
        assert_eq!(
            gw.app().connection_stats.open(),
            1,
            "one connection all along"
        );
    }
    assert_eq!(echo.requests(), 3);

    // A parked connection does not hold up shutdown, and is closed by it.
    assert!(within("shutdown", gw.shutdown()).await, "drained");
    within("the client sees the close", connection)
        .await
        .expect("client connection task");
    assert!(sender.is_closed());
}

#[tokio::test]
async fn a_parked_tls_connection_serves_its_next_request() {
    let ca = TestCa::new();
    let echo = EchoUpstream::start().await;
    let gw = gateway(&echo, Some(&ca)).await;
    let tls = ca.tls_connect(gw.https_addr(), "localhost").await;
    let (mut sender, _connection) = keep_alive_client(tls).await;

    for round in 1..=3 {
        let (status, body) = keep_alive_get(&mut sender, &format!("/tls/{round}")).await;
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains(&format!("/tls/{round}")));
        parked(&gw, 1).await;
    }
    assert_eq!(gw.app().connection_stats.open(), 1);
}

#[tokio::test]
async fn a_request_waiting_for_its_upstream_is_never_parked() {
    let echo = EchoUpstream::start().await;
    let gw = gateway(&echo, None).await;
    let (mut held, _held_connection) =
        keep_alive_client(TcpStream::connect(gw.addr()).await.expect("connect")).await;
    // The task hands the client back: dropping it would close the connection.
    let waiting = tokio::spawn(async move {
        let answer = keep_alive_get(&mut held, "/__hold").await;
        (answer, held)
    });
    within("the upstream holds the request", echo.wait_held()).await;

    // Another connection goes quiet and is parked meanwhile; the held one is not.
    let (mut other, _other_connection) =
        keep_alive_client(TcpStream::connect(gw.addr()).await.expect("connect")).await;
    assert_eq!(keep_alive_get(&mut other, "/other").await.0, 200);
    parked(&gw, 1).await;

    echo.release_held();
    let ((status, body), mut held) = within("the held answer", waiting).await.expect("task");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("/__hold"));
    parked(&gw, 2).await;
    assert_eq!(keep_alive_get(&mut held, "/after").await.0, 200);
}

#[tokio::test]
async fn a_long_download_is_never_cut_short_by_parking() {
    const BYTES: u64 = 32 * 1024 * 1024;
    let echo = EchoUpstream::start().await;
    let gw = gateway(&echo, None).await;
    let (mut sender, _connection) =
        keep_alive_client(TcpStream::connect(gw.addr()).await.expect("connect")).await;

    for _ in 0..2 {
        let (status, body) =
            keep_alive_get(&mut sender, &format!("/__download?bytes={BYTES}")).await;
        assert_eq!(status, 200);
        assert_eq!(body.len() as u64, BYTES);
        assert_eq!(sha256_hex(&body), download_pattern_sha256(BYTES));
        parked(&gw, 1).await;
    }
}
