//! `EchoUpstream`: the web app that integration tests put behind the gateway.
//!
//! Paths with a special behaviour (everything else is the JSON echo):
//!
//! | path | behaviour |
//! | --- | --- |
//! | any other | 200, JSON `{"method","path","authority","version","headers":[[name,value],..],"body_len","body_sha256"}`; header `x-echo-path` |
//! | `/__download?bytes=N[&chunked=1]` | N bytes of the [`pattern_byte`] pattern in 64 KiB chunks, with `Content-Length` unless `chunked=1` |
//! | `/__hold` | waits until [`EchoUpstream::release_held`], then echoes as above |
//! | `/__hop` | 200 with hop-by-hop response headers a proxy must strip (see [`hop_response`]) |
//! | `/__ws` | WebSocket echo of text and binary messages (HTTP/1.1 upgrade) |
//! | `/__status?code=N[&location=URL]` | status N, with `Location` when given, small text body |
//!
//! The request body is hashed as it streams in (constant memory), so huge uploads are fine.
//! Everything stops when the handle is dropped: the listener closes and every connection,
//! held request and WebSocket is cut.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, LOCATION,
    SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, SET_COOKIE, TRANSFER_ENCODING,
    UPGRADE,
};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::ca::TestCa;

type EchoBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Period of the download pattern: prime, so it never lines up with chunk boundaries and a
/// reordered, dropped or repeated chunk changes the hash.
const PATTERN_PERIOD: u64 = 251;
/// Chunk size used by `/__download` and [`pattern_chunks`].
pub const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// Byte `i` of the deterministic pattern served by `/__download`.
pub fn pattern_byte(i: u64) -> u8 {
    (i % PATTERN_PERIOD) as u8
}

/// The pattern's first `n` bytes as 64 KiB `Bytes` chunks, produced lazily (slices of one
/// shared buffer): usable as a streamed upload body, e.g.
/// `reqwest::Body::wrap_stream(futures_util::stream::iter(pattern_chunks(n).map(Ok::<_, std::io::Error>)))`.
pub fn pattern_chunks(n: u64) -> PatternChunks {
    let buffer: Vec<u8> = (0..DOWNLOAD_CHUNK as u64 + PATTERN_PERIOD)
        .map(pattern_byte)
        .collect();
    PatternChunks {
        buffer: Bytes::from(buffer),
        offset: 0,
        total: n,
    }
}

/// Iterator returned by [`pattern_chunks`].
pub struct PatternChunks {
    buffer: Bytes,
    offset: u64,
    total: u64,
}

impl Iterator for PatternChunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.offset >= self.total {
            return None;
        }
        let len = (self.total - self.offset).min(DOWNLOAD_CHUNK as u64) as usize;
        let start = (self.offset % PATTERN_PERIOD) as usize;
        self.offset += len as u64;
        Some(self.buffer.slice(start..start + len))
    }
}

/// Lowercase hex SHA-256 of the first `n` bytes of the download pattern.
pub fn download_pattern_sha256(n: u64) -> String {
    let mut hasher = Sha256::new();
    for chunk in pattern_chunks(n) {
        hasher.update(&chunk);
    }
    hex(&hasher.finalize())
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// What the upstream saw of one request, recorded when its head arrived.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    pub method: String,
    /// Path and query exactly as received.
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub version: String,
    /// Every header, names lowercase, values lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
}

impl ReceivedRequest {
    /// The first value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// Every value of `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

struct State {
    requests: AtomicUsize,
    /// Connections accepted so far.
    connections: AtomicUsize,
    received: Mutex<Vec<ReceivedRequest>>,
    /// Number of `/__hold` requests currently waiting.
    held: watch::Sender<usize>,
    /// Bumped by `release_held`; a held request waits for a value above the one it saw.
    release: watch::Sender<u64>,
    /// Never sent on: dropping the sender (with the handle) ends every task.
    stop: watch::Receiver<()>,
}

/// A running echo upstream on 127.0.0.1 (plain HTTP/1.1 + h2c, or TLS with ALPN h2/http1.1).
pub struct EchoUpstream {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<State>,
    accept_task: JoinHandle<()>,
    _stop: watch::Sender<()>,
}

impl EchoUpstream {
    /// Start a plain-HTTP echo upstream (HTTP/1.1 and HTTP/2 prior knowledge).
    pub async fn start() -> EchoUpstream {
        Self::start_inner(None).await
    }

    /// Start an HTTPS echo upstream presenting `ca`'s leaf (valid for localhost, 127.0.0.1, ::1).
    pub async fn start_tls(ca: &TestCa) -> EchoUpstream {
        Self::start_inner(Some(TlsAcceptor::from(Arc::new(ca.server_config())))).await
    }

    async fn start_inner(tls: Option<TlsAcceptor>) -> EchoUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo upstream");
        let addr = listener.local_addr().expect("local addr");
        let (stop_tx, stop_rx) = watch::channel(());
        let state = Arc::new(State {
            requests: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
            held: watch::Sender::new(0),
            release: watch::Sender::new(0),
            stop: stop_rx,
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let accept_task = tokio::spawn(accept_loop(listener, tls, state.clone()));
        EchoUpstream {
            addr,
            scheme,
            state,
            accept_task,
            _stop: stop_tx,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// `url()` followed by `path_and_query` (which should start with `/`).
    pub fn url_for(&self, path_and_query: &str) -> String {
        format!("{}{}", self.url(), path_and_query)
    }

    /// Number of requests received so far (every path, counted when the head arrives).
    /// Connections accepted so far (keep-alive reuse shows as fewer connections than requests).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.state
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// The most recent request received.
    pub fn last_request(&self) -> Option<ReceivedRequest> {
        self.received().pop()
    }

    /// Number of `/__hold` requests waiting right now.
    pub fn held(&self) -> usize {
        *self.state.held.borrow()
    }

    /// Returns once at least one `/__hold` request is waiting.
    pub async fn wait_held(&self) {
        self.wait_held_count(1).await;
    }

    /// Returns once at least `n` `/__hold` requests are waiting.
    pub async fn wait_held_count(&self, n: usize) {
        let mut rx = self.state.held.subscribe();
        rx.wait_for(|held| *held >= n)
            .await
            .expect("echo upstream state lives as long as the handle");
    }

    /// Returns once no `/__hold` request is waiting (released, or dropped because the client
    /// went away: e.g. a proxy that gave up after its upstream timeout).
    pub async fn wait_none_held(&self) {
        let mut rx = self.state.held.subscribe();
        rx.wait_for(|held| *held == 0)
            .await
            .expect("echo upstream state lives as long as the handle");
    }

    /// Let every `/__hold` request waiting now proceed; later ones wait for the next call.
    pub fn release_held(&self) {
        self.state
            .release
            .send_modify(|generation| *generation += 1);
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, state: Arc<State>) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            continue;
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        let tls = tls.clone();
        let mut stop = state.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = serve_connection(tcp, tls, state) => {}
                _ = stop.changed() => {}
            }
        });
    }
}

async fn serve_connection(tcp: TcpStream, tls: Option<TlsAcceptor>, state: Arc<State>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(req, state).await) }
    });
    // Connection errors (client gone, bad TLS) are part of what tests provoke: ignore them.
    let _ = match tls {
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(stream) => {
                builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await
            }
            Err(_) => return,
        },
        None => {
            builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await
        }
    };
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Response<EchoBody> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let record = ReceivedRequest {
        method: req.method().to_string(),
        path: path_and_query(&req),
        version: format!("{:?}", req.version()),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    if let Ok(mut received) = state.received.lock() {
        received.push(record);
    }

    match req.uri().path() {
        "/__download" => download(&req),
        "/__hold" => hold(req, &state).await,
        "/__hop" => hop_response(req.version()),
        "/__ws" => websocket(req, &state),
        "/__status" => status(&req),
        _ => echo(req).await,
    }
}

fn path_and_query<B>(req: &Request<B>) -> String {
    req.uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned())
}

fn query_param<B>(req: &Request<B>, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<EchoBody> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn bad_request(reason: &'static str) -> Response<EchoBody> {
    full(StatusCode::BAD_REQUEST, "text/plain", reason)
}

/// The default behaviour: describe the request as JSON, hashing the body as it streams.
async fn echo(req: Request<Incoming>) -> Response<EchoBody> {
    let (parts, mut body) = req.into_parts();
    let mut hasher = Sha256::new();
    let mut body_len: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    body_len += data.len() as u64;
                }
            }
            Err(_) => return bad_request("request body failed\n"),
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.path().to_owned());
    let headers: Vec<[String; 2]> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            [
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ]
        })
        .collect();
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": path,
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
        "body_sha256": hex(&hasher.finalize()),
    });
    let mut response = full(StatusCode::OK, "application/json", json.to_string());
    if let Ok(value) = HeaderValue::from_str(&path) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-echo-path"), value);
    }
    response
}

fn download<B>(req: &Request<B>) -> Response<EchoBody> {
    let Some(n) = query_param(req, "bytes").and_then(|b| b.parse::<u64>().ok()) else {
        return bad_request("usage: /__download?bytes=N\n");
    };
    let chunked = query_param(req, "chunked").is_some_and(|c| c == "1");
    let frames = futures_util::stream::iter(
        pattern_chunks(n).map(|chunk| Ok::<_, std::io::Error>(Frame::data(chunk))),
    );
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if !chunked {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    response
}

/// Decrements the held count when the held request finishes or is dropped (client gone).
struct HeldGuard<'a>(&'a watch::Sender<usize>);

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|held| *held = held.saturating_sub(1));
    }
}

async fn hold(req: Request<Incoming>, state: &State) -> Response<EchoBody> {
    let mut release = state.release.subscribe();
    let seen = *release.borrow_and_update();
    state.held.send_modify(|held| *held += 1);
    let guard = HeldGuard(&state.held);
    if release
        .wait_for(|generation| *generation > seen)
        .await
        .is_err()
    {
        return full(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "stopping\n");
    }
    drop(guard);
    echo(req).await
}

/// 200 with response headers a proxy must not forward: `Connection: close, x-hop-secret`,
/// `X-Hop-Secret: 1` (named in Connection), `Keep-Alive`, `Proxy-Connection`,
/// `Transfer-Encoding: chunked` and `Upgrade: foo`, next to an ordinary `X-Kept: yes`; and
/// `Set-Cookie` for the gateway's own session cookies (both names) beside the app's `app=1`.
/// HTTP/2 forbids connection-specific fields, so over h2 only `X-Hop-Secret` and `X-Kept` are sent.
pub fn hop_response(version: Version) -> Response<EchoBody> {
    let frames = futures_util::stream::iter([Ok::<_, std::io::Error>(Frame::data(
        Bytes::from_static(b"hop\n"),
    ))]);
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert("x-hop-secret", HeaderValue::from_static("1"));
    headers.insert("x-kept", HeaderValue::from_static("yes"));
    for cookie in [
        "__Host-stepgate_session=planted; Path=/; Secure",
        "app=1; Path=/",
        "stepgate_session=planted; Path=/",
    ] {
        headers.append(SET_COOKIE, HeaderValue::from_static(cookie));
    }
    if version < Version::HTTP_2 {
        headers.insert(CONNECTION, HeaderValue::from_static("close, x-hop-secret"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(UPGRADE, HeaderValue::from_static("foo"));
    }
    response
}

fn status<B>(req: &Request<B>) -> Response<EchoBody> {
    let Some(code) = query_param(req, "code")
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
    else {
        return bad_request("usage: /__status?code=N[&location=URL][&sts=VALUE]\n");
    };
    let mut response = full(code, "text/plain", format!("status {}\n", code.as_u16()));
    if let Some(location) = query_param(req, "location") {
        match HeaderValue::from_str(&location) {
            Ok(value) => {
                response.headers_mut().insert(LOCATION, value);
            }
            Err(_) => return bad_request("location is not a valid header value\n"),
        }
    }
    if let Some(sts) = query_param(req, "sts") {
        match HeaderValue::from_str(&sts) {
            Ok(value) => {
                response
                    .headers_mut()
                    .insert(http::header::STRICT_TRANSPORT_SECURITY, value);
            }
            Err(_) => return bad_request("sts is not a valid header value\n"),
        }
    }
    response
}

fn header_has_token<B>(req: &Request<B>, name: HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// WebSocket echo over an HTTP/1.1 upgrade.
fn websocket(mut req: Request<Incoming>, state: &State) -> Response<EchoBody> {
    let valid = req.version() == Version::HTTP_11
        && header_has_token(&req, CONNECTION, "upgrade")
        && header_has_token(&req, UPGRADE, "websocket")
        && req
            .headers()
            .get(SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).filter(|_| valid) else {
        return bad_request("expected a WebSocket upgrade\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return bad_request("bad key\n");
    };

    let upgrade = hyper::upgrade::on(&mut req);
    let mut stop = state.stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = echo_websocket(upgrade) => {}
            _ = stop.changed() => {}
        }
    });

    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    response
}

async fn echo_websocket(upgrade: hyper::upgrade::OnUpgrade) {
    let Ok(upgraded) = upgrade.await else {
        return;
    };
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    // Pings are answered and a Close is acknowledged by tungstenite itself while reading.
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            break;
        }
    }
}
