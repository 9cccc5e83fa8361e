//! Connection lifecycle: graceful shutdown, idle keep-alive, header-read timeout, connection cap.
//! Some tests wait for a real (sub-second) server timeout; every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{EchoUpstream, Gateway, http_client};

/// Bounds every wait in this file; a passing run never comes near it.
const DEADLINE: Duration = Duration::from_secs(20);

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A gateway in front of `upstream` with `limits` (TOML lines) as its `[limits]` section.
async fn with_limits(upstream: &EchoUpstream, limits: &str) -> Gateway {
    Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml(&format!("[limits]\n{limits}"))
        .start()
        .await
}

/// Reads one HTTP/1.1 response with a `Content-Length` from `tcp` and returns its head and body.
/// Test-only framing for the gateway's own answers (healthz), which always carry a length.
async fn read_response(tcp: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.expect("read response");
        assert!(
            n > 0,
            "connection closed before a full response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(body.len(), length, "nothing after the body was asked for");
    (head, body)
}

const HEALTHZ: &[u8] = b"GET /.stepgate/healthz HTTP/1.1\r\nHost: app.test\r\n\r\n";

/// A keep-alive connection that has been served one request.
async fn served_connection(addr: SocketAddr) -> TcpStream {
    let mut tcp = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    tcp.write_all(HEALTHZ).await.expect("write");
    let (head, _) = within("first response", read_response(&mut tcp)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tcp
}

/// Is the listener at `addr` gone? True when a connection is refused, or accepted but closed
/// without an answer; false when a request on it is answered.
async fn listener_is_closed(addr: SocketAddr) -> bool {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return true;
    };
    if tcp
        .write_all(
            b"GET /.stepgate/healthz HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .is_err()
    {
        return true;
    }
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    answer.is_empty()
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_request_and_refuses_new_connections() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    let addr = gw.addr();
    let in_flight = tokio::spawn(http_client().get(gw.url_for("/__hold?n=1")).send());
    within("request held at the upstream", upstream.wait_held()).await;

    let shutdown = tokio::spawn(gw.shutdown());
    // The listener closes right away; poll for it (a connection accepted just before the
    // signal may still be answered).
    within("listener to close", async {
        while !listener_is_closed(addr).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        !shutdown.is_finished(),
        "shutdown returned while a request was in flight"
    );
    assert!(!in_flight.is_finished(), "held request ended early");

    upstream.release_held();
    let resp = within("held request", in_flight)
        .await
        .expect("join")
        .expect("the in-flight request completes");
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["path"], "/__hold?n=1");

    let drained = within("shutdown", shutdown).await.expect("join");
    assert!(drained, "shutdown must report a full drain");
    assert!(listener_is_closed(addr).await);
}

#[tokio::test]
async fn graceful_shutdown_reports_undrained_connections_after_deadline() {
    let upstream = EchoUpstream::start().await;
    let gw = with_limits(&upstream, "shutdown_timeout = \"300ms\"").await;
    let _in_flight = tokio::spawn(http_client().get(gw.url_for("/__hold")).send());
    within("request held at the upstream", upstream.wait_held()).await;
    // Never released: the drain deadline is what ends the shutdown.
    let drained = within("shutdown", gw.shutdown()).await;
    assert!(!drained, "a request still held cannot count as drained");
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let upstream = EchoUpstream::start().await;
    let gw = with_limits(&upstream, "idle_timeout = \"1s\"").await;
    let mut tcp = served_connection(gw.addr()).await;
    // Keep-alive works: a second request on the same connection is answered.
    tcp.write_all(HEALTHZ).await.expect("write");
    let (head, _) = within("second response", read_response(&mut tcp)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let idle_since = Instant::now();

    let mut byte = [0u8; 1];
    let read = within("idle connection to close", tcp.read(&mut byte)).await;
    // A close (0) or a reset both end the connection.
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the gateway to close the idle connection, read {read:?}"
    );
    // The client starts its watch after the gateway's clock: a margin for that.
    assert!(
        idle_since.elapsed() >= Duration::from_millis(750),
        "closed after {:?}, before the idle timeout",
        idle_since.elapsed()
    );
}

/// HTTP/2 bytes that are no request do not keep a connection open: one that only pings closes
/// `idle_timeout` after its last request (its start, when none came), even though it never
/// acknowledges the server's own PING of a graceful close. (A header block trickled in small
/// CONTINUATION frames is cut by h2 itself after a few frames.)
#[tokio::test]
async fn an_http2_connection_that_sends_no_request_closes_after_the_idle_limit() {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    // PING, eight bytes of opaque data, on stream 0.
    const PING: [u8; 17] = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let upstream = EchoUpstream::start().await;
    let gw = with_limits(&upstream, "idle_timeout = \"1s\"").await;
    let mut tcp = within("connect", TcpStream::connect(gw.addr()))
        .await
        .expect("connect");
    let opened = Instant::now();
    tcp.write_all(&[PREFACE, &SETTINGS].concat())
        .await
        .expect("write");
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            opened.elapsed() < Duration::from_secs(5),
            "still open after 5 s of pings"
        );
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                // The server's SETTINGS, its acknowledgements, and a GOAWAY before closing.
                Ok(_) => {}
            },
            _ = ticks.tick() => {
                if tcp.write_all(&PING).await.is_err() {
                    break;
                }
            }
        }
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(750),
        "closed after {:?}, before the idle limit",
        opened.elapsed()
    );
    assert_eq!(upstream.requests(), 0);
}

/// A client that stops taking its response does not hold the connection (and its upstream
/// connection) for ever: once no byte of it has gone out for the idle limit, it is closed.
#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_idle_limit() {
    let upstream = EchoUpstream::start().await;
    let gw = with_limits(&upstream, "idle_timeout = \"300ms\"").await;
    let stats = &gw.app().connection_stats;
    let mut tcp = within("connect", TcpStream::connect(gw.addr()))
        .await
        .expect("connect");
    // 256 MiB, far more than the sockets on both sides buffer; the client never reads.
    tcp.write_all(b"GET /__download?bytes=268435456 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("write");
    within(
        "the connection to open",
        stats.wait_until(|s| s.open() == 1),
    )
    .await;
    within(
        "the stalled connection to be closed",
        stats.wait_until(|s| s.open() == 0),
    )
    .await;
    // What the client then reads ends early: the response was cut, not completed.
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = within("read", tcp.read(&mut buf)).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        received += n;
    }
    assert!(received < 268_435_456, "{received} bytes");
}

/// A login form whose body is announced and never sent: answered 400 once the header-read
/// limit has passed, and the connection closed, not held for ever.
#[tokio::test]
async fn a_portal_form_body_that_never_arrives_is_refused_in_time() {
    let upstream = EchoUpstream::start().await;
    let gw = with_limits(&upstream, "header_read_timeout = \"300ms\"").await;
    let mut tcp = within("connect", TcpStream::connect(gw.addr()))
        .await
        .expect("connect");
    tcp.write_all(
        b"POST /.stepgate/login HTTP/1.1\r\nHost: app.test\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nu",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    within("slow body to be refused", tcp.read_to_end(&mut answer))
        .await
        .expect("read");
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn closes_slowloris_connection_after_header_read_timeout() {
    let upstream = EchoUpstream::start().await;
    let gw = with_limits(&upstream, "header_read_timeout = \"300ms\"").await;
    let mut tcp = within("connect", TcpStream::connect(gw.addr()))
        .await
        .expect("connect");
    // Half a request head, never finished.
    tcp.write_all(b"GET /app HTTP/1.1\r\nHost: app.test\r\nX-Slow: ")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = within("slow connection to close", tcp.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 2"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn closes_a_connection_that_never_sends_a_request_after_header_read_timeout() {
    let upstream = EchoUpstream::start().await;
    let gw = with_limits(
        &upstream,
        "header_read_timeout = \"300ms\"\nidle_timeout = \"60s\"",
    )
    .await;
    let mut tcp = within("connect", TcpStream::connect(gw.addr()))
        .await
        .expect("connect");
    let mut answer = Vec::new();
    // Well before the 60 s idle timeout: only the header-read timeout can close it by then.
    let closed = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut answer)).await;
    assert!(
        closed.is_ok(),
        "closed by the header-read timeout, not the idle timeout"
    );
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
}

#[tokio::test]
async fn connection_cap_holds_a_third_connection_until_one_closes() {
    let upstream = EchoUpstream::start().await;
    let gw = with_limits(&upstream, "max_connections = 2").await;
    let first = served_connection(gw.addr()).await;
    let _second = served_connection(gw.addr()).await;

    // The kernel completes the handshake, but the gateway does not serve it yet.
    let mut third = within("connect", TcpStream::connect(gw.addr()))
        .await
        .expect("connect");
    third.write_all(HEALTHZ).await.expect("write");
    let mut byte = [0u8; 1];
    // Waiting for something that must not happen: a bounded, short window.
    let early = tokio::time::timeout(Duration::from_millis(500), third.peek(&mut byte)).await;
    assert!(
        early.is_err(),
        "a third connection was served above max_connections: {early:?}"
    );

    drop(first);
    let (head, body) = within("third connection served", read_response(&mut third)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, br#"{"status":"ok"}"#);
}

#[tokio::test]
async fn closes_tls_connection_that_never_finishes_the_handshake() {
    let ca = common::TestCa::new();
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .tls(&ca)
        .extra_toml("[limits]\ntls_handshake_timeout = \"1s\"")
        .start()
        .await;
    let mut tcp = within("connect", TcpStream::connect(gw.https_addr()))
        .await
        .expect("connect");
    let started = Instant::now();
    // Not a single byte of a ClientHello: the gateway gives up at the handshake deadline.
    let mut answer = Vec::new();
    let _ = within("stalled handshake to close", tcp.read_to_end(&mut answer)).await;
    assert!(answer.is_empty());
    // The client starts its watch after the gateway accepted: a margin for that.
    assert!(
        started.elapsed() >= Duration::from_millis(750),
        "closed after {:?}, before the handshake timeout",
        started.elapsed()
    );
    // The listener still serves proper clients.
    let resp = ca
        .reqwest_client()
        .get(gw.https_url_for("/after"))
        .send()
        .await
        .expect("https request");
    assert_eq!(resp.status(), 200);
}

/// A gateway process limited to a few file descriptors: when they run out, `accept` fails
/// (EMFILE). The server must log it and keep going, serving again once descriptors free up.
#[tokio::test]
async fn failed_accept_never_stops_the_server() {
    let upstream = EchoUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::ports::reserve();
    let config = dir.path().join("stepgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = {store:?}\n\
             [access]\ndefault_policy = \"bypass\"\n[password]\nargon2_memory_kib = 256\n\
             argon2_iterations = 1\n[[upstreams]]\nurl = \"{url}\"\n",
            store = dir.path().join("store").display().to_string(),
            url = upstream.url(),
        ),
    )
    .expect("write config");
    let bin = env!("CARGO_BIN_EXE_stepgate");
    let mut child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec {bin} serve --config {}",
            config.display()
        ))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn gateway");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    within("gateway to listen", async {
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Exhaust the gateway's descriptors with idle connections.
    let mut held = Vec::new();
    for _ in 0..120 {
        match TcpStream::connect(addr).await {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    assert!(
        held.len() > 64,
        "expected more connections than descriptors"
    );
    drop(held);
    // Once descriptors are free again, requests are served: the accept loop survived.
    let resp = within("request after accept failures", async {
        loop {
            match http_client().get(format!("http://{addr}/ok")).send().await {
                Ok(r) => break r,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the gateway exited"
    );
    let _ = child.kill().await;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr).await;
    }
    assert!(
        stderr.contains("accept failed"),
        "no accept failure logged:\n{stderr}"
    );
}
