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

/// Reads one HTTP/1.1 response with a `Content-Length` from `tcp`, and nothing after it.
async fn read_one_response(tcp: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().expect("content-length"))
                .expect("a content-length");
            if buf.len() >= end + 4 + length {
                return String::from_utf8_lossy(&buf).into_owned();
            }
        }
        let n = within("a response", tcp.read(&mut chunk))
            .await
            .expect("read");
        assert!(n > 0, "closed before a whole response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An upstream that answers every request at once and reads its body afterwards, as it
/// arrives: `answered PATH` for each.
async fn answer_first_upstream() -> std::net::SocketAddr {
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: hyper::Request<Incoming>| async move {
                        let path = req.uri().path().to_owned();
                        let body = req.into_body();
                        tokio::spawn(async move {
                            let _ = body.collect().await;
                        });
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(format!("answered {path}\n")),
                        )))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// A request whose response is done before its body (the upstream answered first and reads
/// the body as it comes) leaves the connection unparked until its next request: parking would
/// end the body early, and the rest of it would be read as a request of its own.
#[tokio::test]
async fn a_connection_whose_request_body_is_unfinished_is_never_parked() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = answer_first_upstream().await;
    let gw = Gateway::builder()
        .upstream(&format!("http://{upstream}"))
        .extra_toml(RELEASE_AT_ONCE)
        .start()
        .await;
    let mut tcp = TcpStream::connect(gw.addr()).await.expect("connect");
    // The rest of the body reads like a request.
    let rest = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\nabc",
        3 + rest.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let first = read_one_response(&mut tcp).await;
    assert!(first.contains("answered /upload"), "{first}");

    // Another connection goes quiet and is parked meanwhile; this one must not be.
    let (mut other, _other_connection) =
        keep_alive_client(TcpStream::connect(gw.addr()).await.expect("connect")).await;
    assert_eq!(keep_alive_get(&mut other, "/other").await.0, 200);
    parked(&gw, 1).await;

    tcp.write_all(rest)
        .await
        .expect("write the rest of the body");
    tcp.write_all(b"GET /after HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    within("the end of the connection", tcp.read_to_end(&mut answer))
        .await
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("/smuggled"), "{answer}");
    assert!(answer.contains("answered /after"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
}
