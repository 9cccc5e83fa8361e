//! Upgraded connections (WebSocket tunnels) stay under the connection limits: they hold their
//! place under `limits.max_connections`, close after `limits.tunnel_idle_timeout` without
//! traffic, and a graceful shutdown waits for them up to its deadline, then closes them.
//! And a pooled upstream connection still sending a request body never makes the next request
//! wait. Timeout tests configure sub-second limits; every wait is bounded.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::websocket::{self, Ws, round_trip, within};
use common::{EchoUpstream, Gateway, http_client};

/// A WebSocket to the echo upstream through the gateway, checked with one round trip.
async fn websocket(gw: &Gateway) -> Ws {
    websocket::open(gw, None).await
}

/// Waits until the gateway closes `ws` (a close frame, the end of the stream or an error).
async fn closed_by_gateway(ws: &mut Ws) {
    match within("tunnel to close", ws.next()).await {
        None | Some(Err(_)) => {}
        Some(Ok(m)) => assert!(m.is_close(), "unexpected {m:?}"),
    }
}

const HEALTHZ: &[u8] =
    b"GET /.stepgate/healthz HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";

/// Is the listener at `addr` gone? True when a connection is refused, or accepted but closed
/// without an answer.
async fn listener_is_closed(addr: SocketAddr) -> bool {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return true;
    };
    if tcp.write_all(HEALTHZ).await.is_err() {
        return true;
    }
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    answer.is_empty()
}

#[tokio::test]
async fn open_websockets_count_against_max_connections() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml("[limits]\nmax_connections = 2")
        .start()
        .await;
    let first = websocket(&gw).await;
    let mut second = websocket(&gw).await;
    assert_eq!(
        gw.app().connection_stats.open(),
        2,
        "an open tunnel is an open connection"
    );

    // As for any connection at the cap, the gateway stops accepting: the kernel completes the
    // handshake, but the third connection is not served until a place frees up.
    let mut third = within("connect", TcpStream::connect(gw.addr()))
        .await
        .expect("connect");
    third.write_all(HEALTHZ).await.expect("write");
    let mut byte = [0u8; 1];
    // Waiting for something that must not happen: a bounded, short window.
    let early = tokio::time::timeout(Duration::from_millis(500), third.peek(&mut byte)).await;
    assert!(
        early.is_err(),
        "a third connection was served while two tunnels were open: {early:?}"
    );
    round_trip(&mut second, "still open").await;

    drop(first);
    let mut answer = Vec::new();
    within("third connection served", third.read_to_end(&mut answer))
        .await
        .expect("read");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn idle_tunnel_is_closed_after_tunnel_idle_timeout() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml("[limits]\nidle_timeout = \"60s\"\ntunnel_idle_timeout = \"1s\"")
        .start()
        .await;
    let mut ws = websocket(&gw).await;
    // Traffic keeps it open past the idle limit: a message every 100 ms for 1.5 s. (Each gap
    // may stretch by most of a second on a busy machine before the limit is reached.)
    for i in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        round_trip(&mut ws, &format!("message {i}")).await;
    }
    let quiet_since = Instant::now();
    closed_by_gateway(&mut ws).await;
    // The client starts its watch after the gateway saw the last message: a margin for that.
    assert!(
        quiet_since.elapsed() >= Duration::from_millis(750),
        "closed after {:?}, before the idle limit",
        quiet_since.elapsed()
    );
    within(
        "the connection to be counted as closed",
        gw.app().connection_stats.wait_until(|s| s.open() == 0),
    )
    .await;
}

#[tokio::test]
async fn graceful_shutdown_waits_for_an_open_tunnel() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml("[limits]\nshutdown_timeout = \"20s\"")
        .start()
        .await;
    let addr = gw.addr();
    let mut ws = websocket(&gw).await;

    let shutdown = tokio::spawn(gw.shutdown());
    within("listener to close", async {
        while !listener_is_closed(addr).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // Draining: the tunnel still carries traffic, and the shutdown waits for it.
    round_trip(&mut ws, "during the drain").await;
    assert!(
        !shutdown.is_finished(),
        "shutdown returned while a tunnel was open"
    );

    within("close", ws.close(None)).await.expect("close");
    closed_by_gateway(&mut ws).await;
    drop(ws);
    let drained = within("shutdown", shutdown).await.expect("join");
    assert!(drained, "the tunnel closed by its client counts as drained");
}

#[tokio::test]
async fn graceful_shutdown_closes_an_open_tunnel_at_the_deadline() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml("[limits]\nshutdown_timeout = \"300ms\"")
        .start()
        .await;
    let mut ws = websocket(&gw).await;
    let started = Instant::now();
    let drained = within("shutdown", gw.shutdown()).await;
    assert!(!drained, "a tunnel still open cannot count as drained");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "shutdown returned after {:?}, before its deadline",
        started.elapsed()
    );
    closed_by_gateway(&mut ws).await;
}

/// An upstream that answers every request at once with its path, and meanwhile goes on reading
/// the request body (as an application that answers early while it consumes an upload does);
/// counts the connections it accepted.
struct EarlyAnswerUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl EarlyAnswerUpstream {
    async fn start() -> EarlyAnswerUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|req: Request<Incoming>| async move {
                        let path = req.uri().path().to_owned();
                        tokio::spawn(req.into_body().collect());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(path))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        EarlyAnswerUpstream { addr, connections }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[tokio::test]
async fn a_request_after_an_upload_the_upstream_answered_early_is_not_held_up() {
    let upstream = EarlyAnswerUpstream::start().await;
    // One worker: both requests use the same pool of upstream connections. The uploading
    // client connection is not parked (which would end its upload) while the test runs.
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .upstream_extra("timeout = \"10s\"")
        .extra_toml("[server]\nworkers = 1\n[limits]\nidle_release_after = \"60s\"")
        .start()
        .await;
    // The body sends a chunk and then never ends: the upstream connection is still sending it
    // when the answer is complete.
    let stalled = futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("x")) })
        .chain(futures_util::stream::pending());
    // Kept to the end of the test: it goes on sending the body.
    let uploader = http_client();
    let uploading = uploader
        .post(gw.url_for("/upload"))
        .body(reqwest::Body::wrap_stream(stalled))
        .send();
    let resp = within("early answer", uploading).await.expect("post");
    assert_eq!(resp.status(), 200);
    let body = within("early answer's body", resp.bytes())
        .await
        .expect("body");
    assert_eq!(&body[..], b"/upload");

    let started = Instant::now();
    let next = tokio::time::timeout(
        Duration::from_secs(3),
        http_client().get(gw.url_for("/next")).send(),
    )
    .await
    .unwrap_or_else(|_| panic!("the next request waited for the busy upstream connection"))
    .expect("get");
    assert_eq!(next.status(), 200, "answered after {:?}", started.elapsed());
    let body = within("next body", next.bytes()).await.expect("body");
    assert_eq!(
        &body[..],
        b"/next",
        "the answer to this request, not another's"
    );
    assert_eq!(
        upstream.connections.load(Ordering::SeqCst),
        2,
        "the busy connection was left alone"
    );
    drop(uploader);
}
