//! Shared kit for Stepgate's integration tests: an echo upstream, a throwaway CA and HTTP
//! clients. Everything listens on 127.0.0.1 ephemeral ports, starts inside the test and stops
//! when its handle is dropped. Use it with `mod common;` at the top of a test file.
#![allow(dead_code, unused_imports)]

pub mod answers;
pub mod auth;
pub mod browser;
pub mod ca;
pub mod cli;
pub mod demo;
pub mod echo;
pub mod gateway;
pub mod mfa;
pub mod ports;
pub mod proxies;
pub mod sms_sink;
pub mod smtp;
pub mod stepup;
pub mod stepup_users;
pub mod websocket;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use ca::TestCa;
pub use echo::{
    DOWNLOAD_CHUNK, EchoUpstream, PatternChunks, ReceivedRequest, download_pattern_sha256,
    pattern_byte, pattern_chunks, sha256_hex,
};
pub use gateway::{Gateway, GatewayBuilder, OutputLines, sigterm, stepgate_command, toml_string};
pub use sms_sink::{SmsRequest, SmsSink};
pub use smtp::{AuthAttempt, ReceivedMail, SmtpServer};

/// A loopback address where nothing listens: connecting to it is refused. Its port is one of
/// [`ports::reserve`]'s, which nothing else in the test process binds.
pub fn refused_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ports::reserve()))
}

/// A reqwest builder that never follows redirects and never uses a proxy from the
/// environment; add `.cookie_store(true)` etc. as needed.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
}

/// A plain reqwest client: no redirects followed, no proxy.
pub fn http_client() -> reqwest::Client {
    client_builder().build().expect("reqwest client")
}

/// Safety net for the raw helpers below, so a server that never answers fails the test
/// instead of hanging it. Nothing waits for this to elapse in a passing test.
const RAW_DEADLINE: Duration = Duration::from_secs(30);

/// Send one HTTP/1.1 request over a fresh plain connection with `path_and_query` put on the
/// request line exactly as given: unlike reqwest (which normalises URLs, e.g. `%2e%2e` to `..`),
/// nothing is decoded or resolved. `Host` defaults to `addr` unless `headers` sets it.
/// The path must still be something `http::Uri` accepts; for anything rawer use [`raw_exchange`].
pub async fn send_raw_path(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> http::Response<Bytes> {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("http/1.1 handshake");
        tokio::spawn(conn);
        let mut builder = http::Request::builder().method(method).uri(path_and_query);
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            builder = builder.header("host", addr.to_string());
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Empty::<Bytes>::new()).expect("request");
        let response = sender.send_request(request).await.expect("response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        http::Response::from_parts(parts, body)
    };
    tokio::time::timeout(RAW_DEADLINE, exchange)
        .await
        .expect("raw request timed out")
}

/// One client keep-alive HTTP/1.1 connection over `io` (plain or TLS): every request goes over
/// the same socket, and using it after the server closed it fails. The returned task ends when
/// the connection closes.
pub async fn keep_alive_client<T>(
    io: T,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<()>,
)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("http/1.1 handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

/// One `GET path` (`Host: app.test`) on a [`keep_alive_client`] connection, its body read to
/// the end: the status and the body.
pub async fn keep_alive_get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (u16, Bytes) {
    let exchange = async {
        sender.ready().await.expect("connection still usable");
        let req = http::Request::get(path)
            .header("host", "app.test")
            .body(Empty::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    };
    tokio::time::timeout(RAW_DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("timed out: GET {path}"))
}

/// Write `request` byte for byte to a fresh plain connection to `addr` and return every byte
/// the server sends until it closes the connection. Include `Connection: close` in `request`
/// (or send something the server must reject) so the server ends the exchange.
/// Check the answer with e.g. `starts_with(b"HTTP/1.1 400")`.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(request).await.expect("write request");
        let mut answer = Vec::new();
        // A reset after the server's answer still leaves what was read in `answer`.
        let _ = tcp.read_to_end(&mut answer).await;
        answer
    };
    tokio::time::timeout(RAW_DEADLINE, exchange)
        .await
        .expect("raw exchange timed out")
}
