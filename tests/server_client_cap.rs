//! One client network cannot take every connection: `limits.max_connections_per_client` caps the
//! connections it holds open, a connection over it is closed at once without an answer, and a
//! place comes back when a connection ends, however it ends. Trusted proxies are not counted.
//! Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use common::websocket::{self, within};
use common::{EchoUpstream, Gateway, keep_alive_client, keep_alive_get};

const HEALTHZ: &[u8] =
    b"GET /.stepgate/healthz HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";

/// A gateway in front of a fresh echo upstream with `toml` merged over its configuration.
async fn gateway(toml: &str) -> (EchoUpstream, Gateway) {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml(toml)
        .start()
        .await;
    (upstream, gw)
}

/// A keep-alive connection from 127.0.0.1 that has been served one request and stays open.
struct OpenConnection {
    _sender: SendRequest<Empty<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        // Closes the socket, whatever state the client connection is in.
        self.task.abort();
    }
}

async fn open_connection(addr: SocketAddr) -> OpenConnection {
    let tcp = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let (mut sender, task) = keep_alive_client(tcp).await;
    let (status, body) = keep_alive_get(&mut sender, "/.stepgate/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], br#"{"status":"ok"}"#);
    OpenConnection {
        _sender: sender,
        task,
    }
}

/// A keep-alive connection from 127.0.0.1, opened as soon as its network has a place (a
/// connection that just ended gives its place back a moment after the client sees it closed).
async fn open_connection_once_placed(addr: SocketAddr) -> OpenConnection {
    within("a place for a new connection", async {
        loop {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let (mut sender, task) = keep_alive_client(tcp).await;
            let req = http::Request::get("/.stepgate/healthz")
                .header("host", "app.test")
                .body(Empty::<Bytes>::new())
                .expect("request");
            let served = match sender.ready().await {
                Ok(()) => sender
                    .send_request(req)
                    .await
                    .is_ok_and(|r| r.status() == 200),
                Err(_) => false,
            };
            if served {
                return OpenConnection {
                    _sender: sender,
                    task,
                };
            }
            task.abort();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A request on a new connection from `from` (127.0.0.1 unless given): everything the gateway
/// sent before closing it, empty for a connection closed unanswered (a reset included).
async fn answer_from(addr: SocketAddr, from: Option<&str>) -> Vec<u8> {
    within("an answer or a close", async {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(from) = from {
            let local: SocketAddr = format!("{from}:0").parse().expect("address");
            socket.bind(local).expect("bind");
        }
        let mut tcp = socket.connect(addr).await.expect("connect");
        // The gateway may have closed it already: then writing fails, and nothing is read.
        let _ = tcp.write_all(HEALTHZ).await;
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        answer
    })
    .await
}

async fn answer(addr: SocketAddr) -> Vec<u8> {
    answer_from(addr, None).await
}

fn is_ok(answer: &[u8]) -> bool {
    answer.starts_with(b"HTTP/1.1 200")
}

/// A new connection is served once the gateway has seen an earlier one end (it notices the end
/// of a connection a moment after the client sees it closed).
async fn served_again(addr: SocketAddr) {
    within("a new connection to be served", async {
        loop {
            if is_ok(&answer(addr).await) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn one_client_cannot_take_every_connection_slot() {
    let (_upstream, gw) = gateway("[limits]\nmax_connections_per_client = 3").await;
    let addr = gw.addr();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(open_connection(addr).await);
    }

    let fourth = answer(addr).await;
    assert!(
        fourth.is_empty(),
        "a fourth connection from one client was answered: {:?}",
        String::from_utf8_lossy(&fourth)
    );
    // Other clients are served meanwhile (127.0.0.2 is another loopback address on Linux).
    let other = answer_from(addr, Some("127.0.0.2")).await;
    assert!(is_ok(&other), "{:?}", String::from_utf8_lossy(&other));

    // One of the three ends: its place comes back.
    drop(open.pop());
    served_again(addr).await;
    // The two left still hold theirs (once the one just served has given its place back).
    let _third = open_connection_once_placed(addr).await;
    assert!(answer(addr).await.is_empty(), "above the cap again");
}

#[tokio::test]
async fn a_trusted_proxy_is_not_held_to_the_per_client_cap() {
    let (_upstream, gw) = gateway(
        "[limits]\nmax_connections_per_client = 2\n[server]\ntrusted_proxies = [\"127.0.0.1\"]",
    )
    .await;
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(open_connection(gw.addr()).await);
    }
    assert!(is_ok(&answer(gw.addr()).await));
    // The five stay open (the sixth, `Connection: close`, ends a moment after its answer).
    let stats = &gw.app().connection_stats;
    within(
        "the sixth connection to end",
        stats.wait_until(|s| s.open() == 5),
    )
    .await;
}

#[tokio::test]
async fn an_open_websocket_holds_its_clients_place_until_it_closes() {
    let (_upstream, gw) = gateway("[limits]\nmax_connections_per_client = 1").await;
    let mut ws = websocket::open(&gw, None).await;
    assert!(
        answer(gw.addr()).await.is_empty(),
        "a tunnel holds its place like any connection"
    );
    websocket::round_trip(&mut ws, "still open").await;
    drop(ws);
    served_again(gw.addr()).await;
}

#[tokio::test]
async fn a_failed_tls_handshake_gives_its_clients_place_back() {
    let ca = common::TestCa::new();
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .tls(&ca)
        .without_http()
        .extra_toml("[limits]\nmax_connections_per_client = 1")
        .start()
        .await;
    let https = ca.reqwest_client();
    let url = gw.https_url_for("/.stepgate/healthz");
    // Plain HTTP to the HTTPS listener: the handshake fails.
    let garbage = answer(gw.https_addr()).await;
    assert!(!garbage.starts_with(b"HTTP/1.1"), "{garbage:?}");
    within("an HTTPS request to be served", async {
        loop {
            if let Ok(resp) = https.get(&url).send().await {
                assert_eq!(resp.status(), 200);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
