//! One accepted connection: optional TLS handshake (with a deadline), then HTTP/1.1 or HTTP/2
//! with header-read and idle timeouts, and a graceful close when the server shuts down.
//!
//! HTTP/1.1 keep-alive connections are *parked* when quiet: after `limits.idle_release_after`
//! without traffic, between two requests, the HTTP session (hyper's read and write buffers,
//! about 24 KiB) is dropped and only the socket is kept; the next request starts a new session
//! on it. The client sees one ordinary keep-alive connection.
//!
//! A connection that switches protocols (WebSocket) becomes a tunnel to the upstream, run here
//! once its HTTP session has ended: it stays this connection, holding its place under
//! `limits.max_connections`, counted as open, closed after `limits.tunnel_idle_timeout`
//! without traffic, and waited for by a graceful shutdown like any other connection.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::activity::{Activity, ActivityIo, InFlight};
use crate::app::App;
use crate::config::Limits;
use crate::http::body::Body;
use crate::http::{self, ConnInfo};
use crate::proxy::upgrade::Tunnel;

/// The HTTP/2 connection preface a client sends first ("prior knowledge" h2c).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// When a quiet connection cannot be parked (a request is in flight), look again this often.
const PARK_RECHECK: Duration = Duration::from_millis(100);

pub async fn serve(
    app: Arc<App>,
    stream: TcpStream,
    conn: ConnInfo,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = app.config.limits.clone();
    let activity = Activity::new();
    match tls {
        None => {
            // A connection that never sends a request is closed like a slow request head.
            let first_request = limits.header_read_timeout.min(limits.idle_timeout);
            let deadline = activity.last() + first_request;
            if !wait_for_client(&stream, deadline, &mut shutdown).await {
                return;
            }
            // Readiness can be spurious: the peek waits for real bytes, up to the same deadline.
            let Ok(h2) =
                tokio::time::timeout_at(deadline, might_be_h2_prior_knowledge(&stream)).await
            else {
                return;
            };
            if h2 {
                let io = ActivityIo::new(stream, activity.clone());
                Box::pin(serve_any_version(app, io, activity, conn, shutdown)).await;
            } else {
                serve_http1(app, stream, activity, conn, shutdown).await;
            }
        }
        Some(acceptor) => {
            // Boxed, like every large state below: an idle connection's task keeps only what
            // its current step needs.
            let handshake =
                tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream));
            match Box::pin(handshake).await {
                Ok(Ok(tls_stream)) => {
                    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    if h2 {
                        let io = ActivityIo::new(tls_stream, activity.clone());
                        Box::pin(serve_any_version(app, io, activity, conn, shutdown)).await;
                    } else {
                        Box::pin(serve_http1(app, tls_stream, activity, conn, shutdown)).await;
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed")
                }
                Err(_) => tracing::debug!(peer = %conn.peer, "TLS handshake timed out"),
            }
        }
    }
}

/// A socket that can say when the client has sent something, without reading it.
trait Parkable: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

impl Parkable for TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        TcpStream::readable(self)
    }
}

impl Parkable for TlsStream<TcpStream> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        // Parking happens only after a read found nothing, so no decrypted data is left behind
        // in the TLS layer: the next request shows up as readable bytes on the socket.
        self.get_ref().0.readable()
    }
}

/// Waits, holding nothing but the socket, until the client sends something. False when the
/// connection should close instead: nothing came before `deadline`, the server is shutting
/// down, or an error.
async fn wait_for_client<S: Parkable>(
    io: &S,
    deadline: Instant,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        ready = io.readable() => ready.is_ok(),
        _ = tokio::time::sleep_until(deadline) => false,
        _ = shutdown.changed() => false,
    }
}

/// True when the first bytes are (or may still become) the HTTP/2 preface; such connections go
/// to the version-detecting server, which serves either version. An HTTP/1 request differs
/// from the preface by its third byte at the latest (`PROPFIND`, `PRI` is not a method).
async fn might_be_h2_prior_knowledge(stream: &TcpStream) -> bool {
    let mut first = [0u8; H2_PREFACE.len()];
    match stream.peek(&mut first).await {
        Ok(n) if n > 0 => H2_PREFACE.starts_with(&first[..n]),
        _ => false,
    }
}

/// Serves HTTP/1.1 on `io`, parking the connection whenever it goes quiet between requests.
async fn serve_http1<S: Parkable>(
    app: Arc<App>,
    mut io: S,
    activity: Activity,
    conn: ConnInfo,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = app.config.limits.clone();
    let stats = app.connection_stats.clone();
    let _open = stats.opened();
    let tunnel = TunnelSlot::default();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size((limits.max_header_bytes * 2).max(8192))
        // Each message leaves in one buffer and one send (a body is copied behind its head),
        // not as pieces through writev: less CPU per request (BENCHMARKS.md, seventh session).
        .writev(false)
        .keep_alive(true);
    loop {
        activity.reset_mark();
        let service = service(app.clone(), activity.clone(), conn, tunnel.clone());
        // On the heap: a parked connection does not keep room for it.
        let mut session = Box::new(
            builder
                .serve_connection(TokioIo::new(ActivityIo::new(io, activity.clone())), service)
                .with_upgrades(),
        );
        let session_ref = Pin::new(&mut *session);
        let drive = drive(session_ref, &activity, &limits, &mut shutdown, conn, true);
        let parked = Box::pin(drive).await;
        if let Some(tunnel) = tunnel.take() {
            // The session handed the socket to the tunnel: nothing else of it is needed.
            drop(session);
            Box::pin(run_tunnel(tunnel, &activity, &limits)).await;
            return;
        }
        if !parked {
            return;
        }
        // Ended by a park: take the socket back, and drop the rest of the session (its buffers
        // and its service) here, not at the end of this iteration, after the wait.
        io = match session.into_parts() {
            Some(parts) if parts.read_buf.is_empty() => parts.io.into_inner().into_inner(),
            _ => return,
        };
        let parked = stats.parked_one();
        let idle_until = activity.last() + limits.idle_timeout;
        if !wait_for_client(&io, idle_until, &mut shutdown).await {
            return;
        }
        drop(parked);
    }
}

/// HTTP/2 (or a connection whose version is still unknown): hyper-util's auto-detecting server.
async fn serve_any_version<I>(
    app: Arc<App>,
    io: I,
    activity: Activity,
    conn: ConnInfo,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = app.config.limits.clone();
    let _open = app.connection_stats.opened();
    // hyper's HTTP/2 server has no deadline for a request's headers, and a PING is a byte
    // read: only requests keep such a connection from being idle, so one that trickles a
    // header block it never finishes, or only pings, closes after `limits.idle_timeout`.
    activity.count_requests_only();
    let tunnel = TunnelSlot::default();
    let service = service(app.clone(), activity.clone(), conn, tunnel.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size((limits.max_header_bytes * 2).max(8192))
        .writev(false)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes * 2).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    {
        let session = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(session);
        drive(session, &activity, &limits, &mut shutdown, conn, false).await;
    }
    // The session is gone; a tunnel it handed its socket to runs in its place.
    if let Some(tunnel) = tunnel.take() {
        Box::pin(run_tunnel(tunnel, &activity, &limits)).await;
    }
}

/// Splices an upgraded connection to its upstream, until either side closes or no byte moved
/// for `limits.tunnel_idle_timeout`.
async fn run_tunnel(tunnel: Tunnel, activity: &Activity, limits: &Limits) {
    tunnel
        .run(|| activity.last(), limits.tunnel_idle_timeout)
        .await;
}

/// Where a request that switched protocols leaves its [`Tunnel`] for its connection to run.
/// Only requests that ask for an upgrade are given a handle to it.
#[derive(Clone, Default)]
struct TunnelSlot(Arc<Mutex<Option<Tunnel>>>);

impl TunnelSlot {
    fn put(&self, tunnel: Tunnel) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(tunnel);
    }

    fn take(&self) -> Option<Tunnel> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The gateway's service for one connection: every request counts as in flight until its
/// response body has been handed over completely.
fn service(
    app: Arc<App>,
    activity: Activity,
    conn: ConnInfo,
    tunnel: TunnelSlot,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<TrackedBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<TrackedBody>, Infallible>> + Send,
> + Send
+ 'static {
    service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        // A body may outlast its response (an upstream that answers before reading it).
        let in_flight = activity.request(!hyper::body::Body::is_end_stream(req.body()));
        // hyper gives only a request that asks to switch protocols an upgrade; any other has
        // no extensions at all, and this look costs it nothing.
        let tunnel = req
            .extensions()
            .get::<OnUpgrade>()
            .is_some()
            .then(|| tunnel.clone());
        Tracked {
            handling: http::handle(app.clone(), req, conn),
            in_flight: Some(in_flight),
            tunnel,
        }
    })
}

pin_project_lite::pin_project! {
    /// A request's future whose response body keeps the request counted as in flight. A
    /// future of its own rather than an async block or `map`, which would copy the request's
    /// future once more (an async block holds a captured future twice, `map` moves itself out
    /// when it completes); hyper moves this future into place, copying all of it.
    struct Tracked<F> {
        #[pin]
        handling: F,
        in_flight: Option<InFlight>,
        // Set only for a request that asked to switch protocols.
        tunnel: Option<TunnelSlot>,
    }
}

impl<F: Future<Output = hyper::Response<Body>>> Future for Tracked<F> {
    type Output = Result<hyper::Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.handling.poll(cx));
        // Taken once: a future that is ready is not polled again.
        let in_flight = this.in_flight.take();
        if let Some(slot) = this.tunnel.take()
            && let Some(tunnel) = resp.extensions_mut().remove::<Tunnel>()
        {
            slot.put(tunnel);
        }
        Poll::Ready(Ok(resp.map(|body| TrackedBody {
            body,
            _in_flight: in_flight,
        })))
    }
}

/// An HTTP session on one connection that can be asked to finish its exchange and close.
trait Session: Future<Output = Result<(), Self::Error>> {
    type Error: std::fmt::Display;
    fn close_gracefully(self: Pin<&mut Self>);
}

impl<I, S> Session for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = TrackedBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Error = hyper::Error;
    fn close_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> Session for auto::UpgradeableConnection<'_, I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<TrackedBody>,
        >,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Error = Box<dyn std::error::Error + Send + Sync>;
    fn close_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Polls an HTTP session until it ends, closing it gracefully on shutdown or when idle, and (when
/// `may_park`) asking it to end once quiet between requests. Returns true when it ended because
/// of such a park request, false when the connection is finished.
async fn drive<C: Session>(
    mut session: Pin<&mut C>,
    activity: &Activity,
    limits: &Limits,
    shutdown: &mut watch::Receiver<bool>,
    conn: ConnInfo,
    may_park: bool,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    let mut closing = false;
    // Set when an idle connection was asked to close gracefully: an HTTP/2 client that never
    // acknowledges the close (its PING) would otherwise keep it open for ever.
    let mut idle_close_by: Option<Instant> = None;
    let mut next_idle_check = activity.quiet_since() + limits.idle_timeout;
    // A session starts because the client sent something: give it time to be read.
    let mut next_park_check = Instant::now() + limits.idle_release_after;
    // One timer for both checks, kept from one wake to the next and moved only when a check is
    // due at another time: this loop runs at every wake of the connection (each request wakes it
    // at least twice), and a new timer each time was registered and removed each time.
    let check = tokio::time::sleep_until(next_idle_check);
    tokio::pin!(check);
    loop {
        let next_check = if may_park {
            next_idle_check.min(next_park_check)
        } else {
            next_idle_check
        };
        if check.deadline() != next_check {
            check.as_mut().reset(next_check);
        }
        // The session is polled first: only it is busy.
        tokio::select! {
            biased;
            res = session.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
                    return false;
                }
                return may_park && activity.park_requested();
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = true;
                    session.as_mut().close_gracefully();
                }
            }
            () = &mut check => {
                let now = Instant::now();
                // A request that came meanwhile (before the close took effect) is served.
                if idle_close_by.is_some_and(|by| by <= now) && activity.in_flight() == 0 {
                    tracing::debug!(peer = %conn.peer, "closing an idle connection that did not finish closing gracefully");
                    return false;
                }
                if next_idle_check <= now {
                    // A client that has not taken a byte of its response for the idle limit
                    // is gone or holding the connection on purpose: closed at once, since a
                    // graceful close would wait for that response.
                    let write_waiting_until = activity
                        .write_waiting_since()
                        .map(|since| since + limits.idle_timeout);
                    if write_waiting_until.is_some_and(|until| until <= now) {
                        tracing::debug!(peer = %conn.peer, "closing a connection whose client stopped reading");
                        return false;
                    }
                    let idle_until = activity.quiet_since() + limits.idle_timeout;
                    if !closing && idle_until <= now && activity.in_flight() == 0 {
                        tracing::trace!(peer = %conn.peer, "closing idle connection");
                        closing = true;
                        idle_close_by = Some(now + limits.idle_timeout);
                        session.as_mut().close_gracefully();
                        continue;
                    }
                    let due = write_waiting_until.map_or(idle_until, |until| until.min(idle_until));
                    next_idle_check = due.max(now + PARK_RECHECK);
                }
                if !closing && may_park && next_park_check <= now {
                    let quiet_until = activity.last() + limits.idle_release_after;
                    if quiet_until <= now && activity.between_requests() {
                        // The session sees end of stream at its next read and ends cleanly,
                        // unless the client speaks first (which cancels the request): look
                        // again later.
                        activity.request_park();
                        next_park_check = now + PARK_RECHECK;
                    } else {
                        next_park_check = quiet_until.max(now + PARK_RECHECK);
                    }
                }
            }
        }
    }
}

/// A response body that keeps its request counted as in flight until it is dropped, i.e. until
/// the connection has taken all of it (or gave up on it).
pub struct TrackedBody {
    body: Body,
    _in_flight: Option<InFlight>,
}

impl HttpBody for TrackedBody {
    type Data = bytes::Bytes;
    type Error = crate::http::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
