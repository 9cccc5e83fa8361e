//! Keep-alive HTTP/1.1 connections to one upstream, used by one worker thread.
//!
//! A request takes the most recently used idle connection (or opens one), and the connection
//! comes back to the pool when the response body has been read to its end: a response still
//! streaming keeps its connection to itself. A connection whose answer was dropped half-read,
//! that switched protocols (WebSocket), or that the upstream closed, is never reused.
//!
//! A request that could not even be written on a reused connection (the upstream closed it at
//! that moment) is sent again on another one: it never reached the upstream.
//!
//! An upstream may answer before it has read the whole request body (a 200 or a 413 at once).
//! Such a connection is never reused: the upstream may still read the rest of that body as a
//! request of its own (a body the client wrote), whose answer would then go to the next
//! request sent on the connection, someone else's. Whether it may be reused is decided once,
//! when the first byte of the answer arrives (seen on the socket, before hyper parses it): a
//! body that had not been handed whole to the connection by then leaves it unusable for good,
//! even if the rest goes out before the answer ends. It closes once hyper is done with it, or
//! is cut if it still runs `abandon_after` (`upstreams[].timeout`) after the answer ended (an
//! upstream that neither reads the rest nor closes). An idle connection thrown away is cut too:
//! it may still hold request bytes a silent upstream never read. A request never waits for a
//! busy connection either: it takes one that is ready, or opens one. (A body sent whole before
//! the answer came cannot be told apart from one the upstream read: an upstream that leaves it
//! unread must close the connection itself. An interim `100 Continue` counts as an answer: a
//! connection that got one before its body went out is not reused. The gateway does not
//! forward `Expect` (`headers::HOP_BY_HOP`), so only an upstream that sends one unasked loses
//! its connection this way.)
//!
//! A pool opens at most `max_open` connections at once (idle, in use or closing; the worker's
//! share of `upstreams[].max_connections`): without a bound, one HTTP/2 client could make the
//! gateway open a connection per stream, hundreds per client connection, until it ran out of
//! file descriptors. A request that finds none idle and no room for another waits for one to
//! come back or close, up to `queue_timeout`, then fails with [`PoolError::Busy`]. Requests
//! that reuse an idle connection never touch the bound.
//!
//! Nor may one client hold them all (a few HTTP/2 connections of slow uploads or unread
//! answers would do): every request counts in its client network's share ([`NetworkShares`])
//! while it is in flight, and a request that would open a connection (or wait for one) while
//! half of `max_open` or more are open fails with [`PoolError::ClientBusy`] at once when its
//! network has more than an eighth of `max_open` in flight (at least 16; with `max_open` at 16
//! or less, no network is refused). One network then holds at most half of the connections,
//! or its eighth.

use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use crate::http::body::{Body, BoxError};
use crate::http::network_shares::{NetworkKey, NetworkShares};

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot connect: {0}")]
    Connect(BoxError),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("every connection this worker may open to the upstream stayed busy")]
    Busy,
    #[error("the client's network has its share of connections to the upstream busy")]
    ClientBusy,
}

/// The connections of one upstream on one worker: the idle ones, and the bounds on all of them.
pub struct ConnectionPool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/`: where new connections go.
    target: Uri,
    idle: Arc<IdleConnections>,
    /// One permit per connection open, held by the task that runs it until it ends.
    open: Arc<Semaphore>,
    max_open: usize,
    /// How long a request waits for a connection when `open` has no permit left.
    queue_timeout: Duration,
    clients: Arc<ClientShares>,
}

/// Requests in flight from each client network, and how many one network may have before a
/// crowded pool refuses it another connection.
struct ClientShares {
    in_flight: NetworkShares,
    /// `None`: no network is refused (the bound is small enough for one client's needs).
    max: Option<u32>,
}

/// A request counted in its network's share until it is dropped (with the answer's body).
struct ClientClaim {
    shares: Arc<ClientShares>,
    network: NetworkKey,
    /// The network's requests in flight when this one was counted, itself included.
    count: u32,
}

impl ClientShares {
    fn claim(self: &Arc<Self>, client: IpAddr) -> ClientClaim {
        // Always counted: the cap applies only when a crowded pool would open a connection.
        let (network, count) = self.in_flight.add(client, 1);
        ClientClaim {
            shares: self.clone(),
            network,
            count,
        }
    }

    /// Whether `claim`'s network has more than its share in flight.
    fn over_share(&self, claim: &ClientClaim) -> bool {
        self.max.is_some_and(|max| claim.count > max)
    }
}

impl Drop for ClientClaim {
    fn drop(&mut self) {
        self.shares.in_flight.give_back(self.network, 1);
    }
}

/// How many connections a pool may have open at once, and how long a request waits for one
/// when they are all busy.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    pub max_idle: usize,
    pub idle_timeout: Duration,
    pub max_open: usize,
    pub queue_timeout: Duration,
    /// How long a connection answered before its request's body was sent may take to send
    /// the rest ([`IdleConnections::abandon`]).
    pub abandon_after: Duration,
}

struct IdleConnections {
    /// Oldest first; requests take from the back, the sweep removes from the front.
    list: Mutex<VecDeque<IdleConnection>>,
    max: usize,
    timeout: Duration,
    /// How long an abandoned connection may take to send the rest of its request's body.
    abandon_after: Duration,
    /// Connections given back so far: a request that waits for one knows whether one came
    /// back since it last looked.
    returns: AtomicU64,
    /// Requests waiting for a connection; nobody is woken when there are none.
    waiting: AtomicUsize,
    returned: Notify,
}

struct IdleConnection {
    connection: Connection,
    since: Instant,
}

/// A connection to the upstream: where requests are sent, and the task that runs it.
struct Connection {
    sender: SendRequest<Body>,
    /// Aborted when an idle or abandoned connection is thrown away: dropping the sender alone
    /// leaves a connection with request bytes still buffered waiting for a socket the upstream
    /// does not read. (Dropping the handle leaves the task running: after a switch of
    /// protocols it hands its socket to the tunnel.)
    task: tokio::task::JoinHandle<()>,
    /// The body of the request whose answer is awaited, told when the answer arrives.
    answer: Arc<AnswerWatch>,
}

impl IdleConnection {
    /// Closes the connection now, whatever it was still writing.
    fn discard(self) {
        self.connection.task.abort();
    }
}

impl ConnectionPool {
    /// A pool for `target` (`scheme://authority`) within `limits`.
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        target: Uri,
        limits: PoolLimits,
    ) -> ConnectionPool {
        let max_open = limits.max_open.clamp(1, Semaphore::MAX_PERMITS);
        let per_client = (max_open / 8).max(16);
        ConnectionPool {
            connector,
            target,
            idle: Arc::new(IdleConnections {
                list: Mutex::new(VecDeque::new()),
                max: limits.max_idle,
                timeout: limits.idle_timeout,
                abandon_after: limits.abandon_after,
                returns: AtomicU64::new(0),
                waiting: AtomicUsize::new(0),
                returned: Notify::new(),
            }),
            open: Arc::new(Semaphore::new(max_open)),
            max_open,
            queue_timeout: limits.queue_timeout,
            clients: Arc::new(ClientShares {
                in_flight: NetworkShares::default(),
                max: (per_client < max_open).then(|| u32::try_from(per_client).unwrap_or(u32::MAX)),
            }),
        }
    }

    /// Sends `req` (its URI in origin form: path and query) for `client` and returns the
    /// response head; the body streams from the connection, and counts in the client network's
    /// share until it ends.
    ///
    /// Not an `async fn`, which would keep a second copy of the request in its future: the
    /// block below holds the one it was given (and gets back a request no connection took).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps a copy of its arguments apart from its body's state"
    )]
    pub fn send(
        &self,
        mut req: Request<Body>,
        client: IpAddr,
    ) -> impl Future<Output = Result<Response<PooledBody>, PoolError>> + Send + '_ {
        async move {
            let claim = self.clients.claim(client);
            let body_sent = BodySent::track(&mut req);
            let mut deadline = None;
            let permit = loop {
                let returns = self.idle.returns.load(Ordering::SeqCst);
                while let Some(mut connection) = self.idle.take() {
                    connection.answer.expect(body_sent.as_ref());
                    match connection.sender.try_send_request(req).await {
                        Ok(response) => {
                            return Ok(self.idle.attach(response, connection, body_sent, claim));
                        }
                        Err(mut e) => match e.take_message() {
                            // Never written: the connection closed under it. Try the next one.
                            Some(unsent) => req = unsent,
                            None => return Err(PoolError::Http(e.into_error())),
                        },
                    }
                }
                // Another connection, or a wait for one: not for a network over its share
                // when half or more are open.
                if self.crowded() && self.clients.over_share(&claim) {
                    return Err(PoolError::ClientBusy);
                }
                if let Ok(permit) = self.open.clone().try_acquire_owned() {
                    break permit;
                }
                // Every connection allowed is open and busy: the rare path, boxed.
                let deadline = *deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + self.queue_timeout);
                if let Some(permit) = Box::pin(self.wait_for_room(returns, deadline)).await? {
                    break permit;
                }
            };
            // Boxed: opening a connection is the rare path, and its future is large.
            let mut connection = Box::pin(self.connect(permit)).await?;
            connection.answer.expect(body_sent.as_ref());
            match connection.sender.try_send_request(req).await {
                Ok(response) => Ok(self.idle.attach(response, connection, body_sent, claim)),
                Err(e) => Err(PoolError::Http(e.into_error())),
            }
        }
    }

    /// Waits until a connection came back to the pool since `returns` was read (`None`: take
    /// it) or one closed, leaving room to open another (its permit); [`PoolError::Busy`] at
    /// `deadline`.
    async fn wait_for_room(
        &self,
        returns: u64,
        deadline: tokio::time::Instant,
    ) -> Result<Option<OwnedSemaphorePermit>, PoolError> {
        let _waiting = Waiting::register(&self.idle);
        let returned = self.idle.returned.notified();
        tokio::pin!(returned);
        // Registered before looking: a connection given back after this wakes it.
        returned.as_mut().enable();
        if self.idle.returns.load(Ordering::SeqCst) != returns {
            return Ok(None);
        }
        tokio::select! {
            permit = self.open.clone().acquire_owned() => {
                permit.map(Some).map_err(|_| PoolError::Busy)
            }
            () = &mut returned => Ok(None),
            () = tokio::time::sleep_until(deadline) => Err(PoolError::Busy),
        }
    }

    /// Opens a connection, which holds `permit` for as long as it lives.
    async fn connect(&self, permit: OwnedSemaphorePermit) -> Result<Connection, PoolError> {
        let mut connector = self.connector.clone();
        let io = connector
            .call(self.target.clone())
            .await
            .map_err(PoolError::Connect)?;
        let answer = Arc::new(AnswerWatch::default());
        let io = TokioIo::new(Watched {
            io: TokioIo::new(io),
            answer: answer.clone(),
        });
        // One send per request, as on the gateway's own connections (`server::connection`).
        let (sender, connection) = http1::Builder::new().writev(false).handshake(io).await?;
        // The connection runs on this worker for as long as it lives; upgrades (WebSocket) take
        // its socket over when the upstream switches protocols.
        // (A tunnel's socket leaves it, and the permit: a tunnel holds a client connection of
        // its own, which `limits.max_connections` bounds.)
        let task = tokio::spawn(async move {
            let _open = permit;
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Connection {
            sender,
            task,
            answer,
        })
    }

    /// Half of the connections this pool may open are open, or more: a network over its share
    /// gets no other.
    fn crowded(&self) -> bool {
        self.open.available_permits() * 2 <= self.max_open
    }

    /// Requests waiting for a connection right now.
    pub fn waiting_count(&self) -> usize {
        self.idle.waiting.load(Ordering::SeqCst)
    }

    /// Connections open right now (idle, in use or closing).
    pub fn open_count(&self) -> usize {
        self.max_open - self.open.available_permits()
    }

    /// Closes idle connections unused for longer than the idle timeout.
    pub fn close_expired(&self) -> usize {
        self.idle.close_expired(Instant::now())
    }

    /// Idle connections held right now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().len()
    }
}

impl IdleConnections {
    fn lock(&self) -> MutexGuard<'_, VecDeque<IdleConnection>> {
        // The list stays consistent whatever panicked while holding it.
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection that is open, fresh, and ready for a request now.
    /// One still sending an earlier request's body is left where it is, without waiting for it;
    /// closed and expired ones are dropped on the way.
    fn take(&self) -> Option<Connection> {
        let now = Instant::now();
        let mut list = self.lock();
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let idle = &mut list[i];
            let sender = &mut idle.connection.sender;
            if sender.is_closed() || now.duration_since(idle.since) >= self.timeout {
                if let Some(idle) = list.remove(i) {
                    idle.discard();
                }
                continue;
            }
            // Asked once, not awaited: nothing needs waking when it becomes ready, the next
            // request will ask again.
            match sender.poll_ready(&mut Context::from_waker(Waker::noop())) {
                // Usually the last one: taking it is `pop_back`.
                Poll::Ready(Ok(())) => return list.remove(i).map(|idle| idle.connection),
                Poll::Ready(Err(_)) => {
                    if let Some(idle) = list.remove(i) {
                        idle.discard();
                    }
                }
                Poll::Pending => {}
            }
        }
        None
    }

    fn put(&self, connection: Connection) {
        if connection.sender.is_closed() || self.max == 0 {
            return;
        }
        {
            let mut list = self.lock();
            if list.len() >= self.max
                && let Some(oldest) = list.pop_front()
            {
                oldest.discard();
            }
            list.push_back(IdleConnection {
                connection,
                since: Instant::now(),
            });
        }
        // Counted before looking for waiters, who look at the count after registering: either
        // a waiter sees this return, or this sees the waiter and wakes it. One waiter per
        // connection given back (a waiter that leaves without it passes the wake-up on).
        self.returns.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.returned.notify_one();
        }
    }

    /// A connection answered before its request's body was sent: it is not reused, and it
    /// runs on only while the rest of the body goes out. An upstream that neither reads that
    /// rest nor closes would hold it (and its place in the bound) for ever: it is cut if it is
    /// still running `abandon_after` from now. (Whether the body was taken to its end says
    /// nothing: hyper buffers what the socket does not take.)
    fn abandon(&self, connection: Connection) {
        let Connection {
            sender, mut task, ..
        } = connection;
        drop(sender);
        let grace = self.abandon_after;
        tokio::spawn(async move {
            tokio::select! {
                _ = &mut task => {}
                () = tokio::time::sleep(grace) => task.abort(),
            }
        });
    }

    fn close_expired(&self, now: Instant) -> usize {
        let mut list = self.lock();
        let before = list.len();
        let (kept, expired) = std::mem::take(&mut *list).into_iter().partition(|idle| {
            !idle.connection.sender.is_closed() && now.duration_since(idle.since) < self.timeout
        });
        *list = kept;
        expired.into_iter().for_each(IdleConnection::discard);
        before - list.len()
    }

    /// Gives the response a body that hands the connection back once read to its end, or
    /// abandons it then if the answer came before the request's body was sent whole.
    fn attach(
        self: &Arc<Self>,
        response: Response<Incoming>,
        connection: Connection,
        body_sent: Option<BodySent>,
        claim: ClientClaim,
    ) -> Response<PooledBody> {
        // Decided now, for good (if the socket did not already decide it when the answer's
        // first byte came): the rest of the body going out later changes nothing.
        let at_end = match body_sent.as_ref().map(BodySent::answer_arrives) {
            None | Some(BodyProgress::Sent) => AtTheEnd::GiveBack,
            Some(BodyProgress::Sending | BodyProgress::AnsweredBefore) => AtTheEnd::Abandon,
        };
        connection.answer.expect(None);
        // After 101 the connection belongs to the upgraded protocol.
        let reusable = response.status() != StatusCode::SWITCHING_PROTOCOLS;
        response.map(|incoming| {
            let mut body = PooledBody {
                incoming,
                _claim: claim,
                keep: reusable.then(|| KeepAlive {
                    connection,
                    pool: self.clone(),
                    at_end,
                }),
            };
            if body.incoming.is_end_stream() {
                body.release();
            }
            body
        })
    }
}

/// A request waiting for a connection, counted in [`IdleConnections::waiting`] while it lives.
struct Waiting<'a>(&'a IdleConnections);

impl<'a> Waiting<'a> {
    fn register(idle: &'a IdleConnections) -> Waiting<'a> {
        idle.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(idle)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An upstream response body; at its end the connection goes back to the pool.
pub struct PooledBody {
    incoming: Incoming,
    /// The request counts in its client network's share until the answer is dropped.
    _claim: ClientClaim,
    keep: Option<KeepAlive>,
}

struct KeepAlive {
    connection: Connection,
    pool: Arc<IdleConnections>,
    /// Decided when the answer arrived.
    at_end: AtTheEnd,
}

/// What becomes of a connection once its answer has been read to its end.
#[derive(Clone, Copy)]
enum AtTheEnd {
    /// Back to the pool: the request's body (if any) was sent whole before the answer came.
    GiveBack,
    /// Never reused: answered before its request's body was sent ([`IdleConnections::abandon`]).
    Abandon,
}

impl PooledBody {
    fn release(&mut self) {
        let Some(keep) = self.keep.take() else {
            return;
        };
        match keep.at_end {
            AtTheEnd::GiveBack => keep.pool.put(keep.connection),
            AtTheEnd::Abandon => keep.pool.abandon(keep.connection),
        }
    }
}

/// Which came first, the end of a request's body or the first byte of its answer: an answer
/// that came first was an early one (see the module's comment). Whichever comes first settles
/// it for good.
#[derive(Clone)]
struct BodySent(Arc<AtomicU8>);

/// How a request's body stood when its answer arrived ([`BodySent`]).
#[derive(Clone, Copy)]
#[repr(u8)]
enum BodyProgress {
    /// Still going out; no answer yet.
    Sending = 0,
    /// Handed whole to the connection before any answer came.
    Sent = 1,
    /// An answer came before the body was handed whole to the connection.
    AnsweredBefore = 2,
}

impl BodySent {
    /// Wraps the body of `req`, unless it has none (nearly every `GET`).
    fn track(req: &mut Request<Body>) -> Option<BodySent> {
        if req.body().is_end_stream() {
            return None;
        }
        let sent = BodySent(Arc::new(AtomicU8::new(BodyProgress::Sending as u8)));
        let inner = std::mem::replace(req.body_mut(), crate::http::body::empty());
        *req.body_mut() = crate::http::body::stream(TrackedBody {
            inner,
            sent: sent.clone(),
        });
        Some(sent)
    }

    /// The body has given its last frame: sent, unless an answer came first.
    fn finish(&self) {
        self.settle(BodyProgress::Sent);
    }

    /// An answer is arriving: the body was sent whole before it, or the answer came first.
    fn answer_arrives(&self) -> BodyProgress {
        self.settle(BodyProgress::AnsweredBefore)
    }

    /// Moves from `Sending` to `to` unless already settled; returns where it settled.
    fn settle(&self, to: BodyProgress) -> BodyProgress {
        let sending = BodyProgress::Sending as u8;
        match self
            .0
            .compare_exchange(sending, to as u8, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => to,
            Err(settled) if settled == BodyProgress::Sent as u8 => BodyProgress::Sent,
            Err(_) => BodyProgress::AnsweredBefore,
        }
    }
}

/// The body of the request a connection awaits the answer to, if it has one; the connection's
/// socket tells it when the upstream sends a byte ([`Watched`]). `watching` spares the lock on
/// every read while no body is watched (nearly every request has none).
#[derive(Default)]
struct AnswerWatch {
    watching: AtomicBool,
    body: Mutex<Option<BodySent>>,
}

impl AnswerWatch {
    fn lock(&self) -> MutexGuard<'_, Option<BodySent>> {
        self.body.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The request sent next on the connection has `body` (`None`: none, or nothing to watch).
    /// Nothing to do when it has none and none is watched.
    fn expect(&self, body: Option<&BodySent>) {
        if body.is_none() && !self.watching.load(Ordering::Acquire) {
            return;
        }
        let mut watched = self.lock();
        *watched = body.cloned();
        self.watching.store(watched.is_some(), Ordering::Release);
    }

    fn bytes_arrived(&self) {
        if !self.watching.load(Ordering::Acquire) {
            return;
        }
        if let Some(body) = &*self.lock() {
            body.answer_arrives();
        }
    }
}

/// A connection's socket, telling its [`AnswerWatch`] the moment the upstream sends anything:
/// hyper reads an answer's head and goes on to send the request's body in the same turn, so a
/// body ending just after the head was read would look sent whole before the answer by the
/// time the request is handed it.
struct Watched<I> {
    io: I,
    answer: Arc<AnswerWatch>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.answer.bytes_arrived();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A request body that marks its [`BodySent`] when it has given its last frame.
struct TrackedBody {
    inner: Body,
    sent: BodySent,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let finished = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if finished {
            self.sent.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.incoming).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.incoming.is_end_stream() => self.release(),
            // An error leaves the connection in an unknown state: it is not reused.
            Poll::Ready(Some(Err(_))) => self.keep = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::StreamExt;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;
    use crate::http::body;

    /// A loopback upstream counting the connections it accepted. `/big` streams 64 chunks of
    /// 16 KiB, `/upgrade` answers 101, `/early` answers a short text at once while it goes on
    /// reading the request body, anything else a short text.
    struct Upstream {
        addr: std::net::SocketAddr,
        accepted: Arc<AtomicUsize>,
    }

    async fn upstream() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|req: Request<Incoming>| async move {
                        if req.uri().path() == "/early" {
                            // Answers at once and keeps reading the body meanwhile.
                            tokio::spawn(req.into_body().collect());
                            let body = Full::new(Bytes::from("hello")).boxed_unsync();
                            return Ok::<_, Infallible>(Response::new(body));
                        }
                        let response = match req.uri().path() {
                            "/big" => {
                                let chunks = (0..64).map(|_| {
                                    Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 16384])))
                                });
                                let stream = futures_util::stream::iter(chunks);
                                Response::new(StreamBody::new(stream).boxed_unsync())
                            }
                            "/upgrade" => Response::builder()
                                .status(StatusCode::SWITCHING_PROTOCOLS)
                                .header("connection", "upgrade")
                                .header("upgrade", "test")
                                .body(Full::new(Bytes::new()).boxed_unsync())
                                .unwrap(),
                            _ => Response::new(Full::new(Bytes::from("hello")).boxed_unsync()),
                        };
                        Ok::<_, Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream { addr, accepted }
    }

    /// With the pool's two connections opened (one left unusable), a form whose body went out
    /// whole before its answer leaves its connection in the pool, and the next request uses it.
    async fn a_form_sent_whole_before_its_answer_is_reused(pool: &ConnectionPool, up: &Upstream) {
        let form = Request::builder()
            .method("POST")
            .uri("/")
            .header("host", "upstream.test")
            .body(body::full(Bytes::from_static(b"a=1")))
            .unwrap();
        assert_eq!(read_all(pool.send(form, CLIENT).await.unwrap()).await, 5);
        assert_eq!(pool.idle_count(), 1, "back in the pool");
        read_all(pool.send(get("/"), CLIENT).await.unwrap()).await;
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2, "reused");
    }

    fn pool_for(up: &Upstream, max_idle: usize) -> ConnectionPool {
        pool_within(
            up,
            PoolLimits {
                max_idle,
                idle_timeout: Duration::from_secs(60),
                max_open: 64,
                queue_timeout: Duration::from_secs(5),
                abandon_after: Duration::from_secs(60),
            },
        )
    }

    /// A pool that may open `max_open` connections and waits up to `queue_timeout` for one.
    fn bounded_pool(up: &Upstream, max_open: usize, queue_timeout: Duration) -> ConnectionPool {
        pool_within(
            up,
            PoolLimits {
                max_idle: 8,
                idle_timeout: Duration::from_secs(60),
                max_open,
                queue_timeout,
                abandon_after: Duration::from_secs(60),
            },
        )
    }

    fn pool_within(up: &Upstream, limits: PoolLimits) -> ConnectionPool {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )
            .https_or_http()
            .enable_http1()
            .wrap_connector(HttpConnector::new());
        let target: Uri = format!("http://{}/", up.addr).parse().unwrap();
        ConnectionPool::new(connector, target, limits)
    }

    /// The client most tests send for, and another one.
    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 9));

    fn get(path: &str) -> Request<Body> {
        Request::builder()
            .uri(path)
            .header("host", "upstream.test")
            .body(body::empty())
            .unwrap()
    }

    async fn read_all(response: Response<PooledBody>) -> usize {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .len()
    }

    #[tokio::test]
    async fn requests_one_after_another_share_one_connection() {
        let up = upstream().await;
        let pool = pool_for(&up, 8);
        for _ in 0..3 {
            let response = pool.send(get("/"), CLIENT).await.unwrap();
            assert_eq!(read_all(response).await, 5);
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_streaming_answer_keeps_its_connection_until_read_to_the_end() {
        let up = upstream().await;
        let pool = pool_for(&up, 8);
        let streaming = pool.send(get("/big"), CLIENT).await.unwrap();
        assert_eq!(pool.idle_count(), 0, "still streaming: not idle");
        // A second request meanwhile needs a connection of its own.
        read_all(pool.send(get("/"), CLIENT).await.unwrap()).await;
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(read_all(streaming).await, 64 * 16384);
        assert_eq!(pool.idle_count(), 2);
    }

    #[tokio::test]
    async fn an_answer_dropped_half_read_does_not_give_its_connection_back() {
        let up = upstream().await;
        let pool = pool_for(&up, 8);
        let mut body = pool.send(get("/big"), CLIENT).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(body);
        assert_eq!(pool.idle_count(), 0);
        read_all(pool.send(get("/"), CLIENT).await.unwrap()).await;
        assert_eq!(
            up.accepted.load(Ordering::SeqCst),
            2,
            "a new connection was opened"
        );
    }

    #[tokio::test]
    async fn idle_connections_are_bounded_by_max_idle() {
        let up = upstream().await;
        let pool = pool_for(&up, 1);
        let a = pool.send(get("/big"), CLIENT).await.unwrap();
        let b = pool.send(get("/big"), CLIENT).await.unwrap();
        read_all(a).await;
        read_all(b).await;
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle_count(), 1);

        let none = pool_for(&up, 0);
        read_all(none.send(get("/"), CLIENT).await.unwrap()).await;
        assert_eq!(
            none.idle_count(),
            0,
            "max_idle_connections = 0 keeps nothing"
        );
    }

    #[tokio::test]
    async fn a_switched_connection_is_never_reused() {
        let up = upstream().await;
        let pool = pool_for(&up, 8);
        let response = pool.send(get("/upgrade"), CLIENT).await.unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(pool.idle_count(), 0);
        drop(response);
        read_all(pool.send(get("/"), CLIENT).await.unwrap()).await;
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    /// An upstream that answers before reading the whole body may read the rest as a request
    /// of its own (bytes the client wrote), and its answer would go to the next request on the
    /// connection: such a connection is never reused, and the next request does not wait.
    #[tokio::test]
    async fn a_connection_answered_before_its_body_was_sent_is_never_reused() {
        let up = upstream().await;
        let pool = pool_for(&up, 8);
        // The upstream answers without reading the body; the body sends a chunk, then never
        // ends.
        let stalled = futures_util::stream::once(async {
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"x")))
        })
        .chain(futures_util::stream::pending());
        let upload = Request::builder()
            .method("POST")
            .uri("/early")
            .header("host", "upstream.test")
            .body(StreamBody::new(stalled).boxed_unsync())
            .unwrap();
        let answered = pool.send(upload, CLIENT).await.unwrap();
        assert_eq!(read_all(answered).await, 5);
        assert_eq!(pool.idle_count(), 0, "never back in the pool");

        let next = tokio::time::timeout(Duration::from_secs(5), pool.send(get("/"), CLIENT))
            .await
            .expect("the next request waited for the busy connection")
            .unwrap();
        assert_eq!(read_all(next).await, 5);
        assert_eq!(
            up.accepted.load(Ordering::SeqCst),
            2,
            "a connection of its own"
        );

        a_form_sent_whole_before_its_answer_is_reused(&pool, &up).await;
    }

    /// The client sends `POST` with its body held back; the upstream answers at once and the
    /// answer streams while the rest of the body goes out (bytes that could read as
    /// `GET /admin` with an identity header). The body ends before the answer does, yet the
    /// connection was answered first: it is never reused, whatever happens after the answer
    /// came. A body sent whole before the answer still leaves its connection reusable.
    #[tokio::test(start_paused = true)]
    async fn a_body_ending_after_the_answer_came_never_makes_its_connection_reusable() {
        let up = upstream().await;
        let pool = pool_for(&up, 8);
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let (ended, body_ended) = tokio::sync::oneshot::channel::<()>();
        let mut ended = Some(ended);
        let held = futures_util::stream::once(async {
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"x")))
        })
        .chain(futures_util::stream::once(async move {
            let _ = finished.await;
            Ok(Frame::data(Bytes::from_static(
                b"GET /admin HTTP/1.1\r\nHost: upstream.test\r\nRemote-User: admin\r\n\r\n",
            )))
        }))
        .chain(futures_util::stream::poll_fn(move |_| {
            // Told just before the body gives its end, in the same poll.
            if let Some(ended) = ended.take() {
                let _ = ended.send(());
            }
            Poll::Ready(None)
        }));
        let upload = Request::builder()
            .method("POST")
            .uri("/early")
            .header("host", "upstream.test")
            .body(StreamBody::new(held).boxed_unsync())
            .unwrap();
        let answered = pool.send(upload, CLIENT).await.unwrap();
        finish.send(()).unwrap();
        body_ended.await.unwrap();
        assert_eq!(
            read_all(answered).await,
            5,
            "the body ended before the answer"
        );
        assert_eq!(
            pool.idle_count(),
            0,
            "answered before its body ended: never reused"
        );
        read_all(pool.send(get("/"), CLIENT).await.unwrap()).await;
        assert_eq!(
            up.accepted.load(Ordering::SeqCst),
            2,
            "the next request opened a connection of its own"
        );

        a_form_sent_whole_before_its_answer_is_reused(&pool, &up).await;
    }

    /// The end of the body becomes ready at the very moment the answer's head arrives: hyper
    /// reads the head, then sends the rest of the body in the same turn, before the request
    /// is handed the answer. The upstream still answered first: the connection is not reused.
    #[tokio::test]
    async fn a_body_ending_as_the_answer_arrives_counts_as_answered_first() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // The end of the body waits for a byte on a socket of its own, which the upstream
        // writes right after its answer: the gateway sees both in one go.
        let side = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut side_in = tokio::net::TcpStream::connect(side.local_addr().unwrap())
            .await
            .unwrap();
        let (mut side_out, _) = side.accept().await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            if !read_head(&mut tcp).await {
                return;
            }
            let mut buf = [0u8; 1024];
            let _ = tcp
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            let _ = side_out.write_all(b"!").await;
            // Reads whatever comes next and keeps the connection open.
            while !matches!(tcp.read(&mut buf).await, Ok(0) | Err(_)) {}
        });
        let up = Upstream { addr, accepted };
        let pool = pool_for(&up, 8);
        let held = futures_util::stream::once(async {
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"x")))
        })
        .chain(futures_util::stream::once(async move {
            let mut byte = [0u8; 1];
            let _ = side_in.read(&mut byte).await;
            Ok(Frame::data(Bytes::from_static(b"y")))
        }));
        let upload = Request::builder()
            .method("POST")
            .uri("/upload")
            .header("host", "upstream.test")
            .body(StreamBody::new(held).boxed_unsync())
            .unwrap();
        let answered = pool.send(upload, CLIENT).await.unwrap();
        assert_eq!(read_all(answered).await, 2);
        assert_eq!(pool.idle_count(), 0, "answered first: never reused");
    }

    #[tokio::test]
    async fn expired_idle_connections_are_closed_and_not_used() {
        let up = upstream().await;
        let pool = pool_for(&up, 8);
        read_all(pool.send(get("/"), CLIENT).await.unwrap()).await;
        assert_eq!(pool.idle_count(), 1);
        let now = Instant::now();
        assert_eq!(pool.idle.close_expired(now + Duration::from_secs(59)), 0);
        assert_eq!(pool.idle.close_expired(now + Duration::from_secs(61)), 1);
        assert_eq!(pool.idle_count(), 0);
        read_all(pool.send(get("/"), CLIENT).await.unwrap()).await;
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    /// What [`answering_upstream`] does with a connection once it has answered.
    #[derive(Clone, Copy)]
    enum AfterAnswer {
        /// Closes it without saying so (no `Connection: close`), as servers with a short
        /// keep-alive timeout do.
        Close,
        /// Neither reads from it again nor closes it.
        GoDeaf,
    }

    /// Reads a request head up to its blank line; false if the connection ended first.
    async fn read_head(tcp: &mut tokio::net::TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    }

    /// An upstream that answers one request per connection as soon as its head has arrived,
    /// then does `after`.
    async fn answering_upstream(after: AfterAnswer) -> Upstream {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if !read_head(&mut tcp).await {
                        return;
                    }
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    match after {
                        AfterAnswer::Close => {
                            let _ = tcp.shutdown().await;
                        }
                        AfterAnswer::GoDeaf => std::future::pending::<()>().await,
                    }
                });
            }
        });
        Upstream { addr, accepted }
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced_without_failing_a_request() {
        let up = answering_upstream(AfterAnswer::Close).await;
        let pool = pool_for(&up, 8);
        for i in 1..=5 {
            let response = pool.send(get("/"), CLIENT).await.unwrap_or_else(|e| {
                panic!("request {i} failed: {e}");
            });
            assert_eq!(read_all(response).await, 2);
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 5);
    }

    /// With every connection it may open busy, a request waits for one to come back and takes
    /// it: the upstream never sees more connections than the bound.
    #[tokio::test]
    async fn a_request_beyond_the_bound_waits_for_a_connection_to_come_back() {
        let up = upstream().await;
        let pool = Arc::new(bounded_pool(&up, 2, Duration::from_secs(20)));
        let first = pool.send(get("/big"), CLIENT).await.unwrap();
        let second = pool.send(get("/big"), CLIENT).await.unwrap();
        assert_eq!(pool.open_count(), 2);

        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { read_all(pool.send(get("/"), OTHER).await.unwrap()).await }
        });
        while pool.waiting_count() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished());
        assert_eq!(read_all(first).await, 64 * 16384);
        assert_eq!(
            waiting.await.unwrap(),
            5,
            "served on the connection given back"
        );
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2, "never a third one");
        assert_eq!(pool.waiting_count(), 0);
        read_all(second).await;
        assert_eq!(pool.open_count(), 2);
    }

    /// A connection that closes makes room for another: a pool bounded to one connection
    /// serves an upstream that closes every connection after one answer.
    #[tokio::test]
    async fn a_closed_connection_makes_room_for_a_new_one() {
        let up = answering_upstream(AfterAnswer::Close).await;
        let pool = bounded_pool(&up, 1, Duration::from_secs(60));
        for i in 1..=4 {
            let response = pool.send(get("/"), CLIENT).await.unwrap_or_else(|e| {
                panic!("request {i} failed: {e}");
            });
            assert_eq!(read_all(response).await, 2);
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 4);
    }

    /// A request that finds no room within the queue timeout fails as busy, without opening
    /// a connection; the one in use is untouched.
    #[tokio::test(start_paused = true)]
    async fn a_request_finding_no_room_in_time_is_busy() {
        let up = upstream().await;
        let pool = bounded_pool(&up, 1, Duration::from_secs(5));
        let streaming = pool.send(get("/big"), CLIENT).await.unwrap();
        let started = tokio::time::Instant::now();
        let Err(err) = pool.send(get("/"), OTHER).await else {
            panic!("no connection was free");
        };
        assert!(matches!(err, PoolError::Busy), "{err}");
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "waited the whole timeout"
        );
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.waiting_count(), 0);
        assert_eq!(read_all(streaming).await, 64 * 16384);
        read_all(pool.send(get("/"), CLIENT).await.unwrap()).await;
        assert_eq!(
            up.accepted.load(Ordering::SeqCst),
            1,
            "the same connection, reused"
        );
    }

    /// Every request counts in its client network's share; once half of the connections are
    /// open, a network with more than an eighth in flight (here 64 / 8, raised to 16) gets no
    /// other connection: its next request fails at once, another network's is served, and an
    /// idle connection still serves it.
    #[tokio::test]
    async fn one_client_network_cannot_hold_every_connection() {
        let up = upstream().await;
        let pool = bounded_pool(&up, 64, Duration::from_secs(60));
        let mut held = Vec::new();
        for _ in 0..32 {
            held.push(pool.send(get("/big"), CLIENT).await.unwrap());
        }
        let same_network = "::ffff:127.0.0.1".parse().unwrap();
        let Err(err) = pool.send(get("/"), same_network).await else {
            panic!("the network has more than its share, and half are open");
        };
        assert!(matches!(err, PoolError::ClientBusy), "{err}");
        assert_eq!(read_all(pool.send(get("/"), OTHER).await.unwrap()).await, 5);
        assert_eq!(up.accepted.load(Ordering::SeqCst), 33);
        // A connection comes back: the network takes it, over its share or not.
        read_all(held.pop().unwrap()).await;
        assert_eq!(
            read_all(pool.send(get("/"), CLIENT).await.unwrap()).await,
            5
        );
        assert_eq!(up.accepted.load(Ordering::SeqCst), 33, "no new connection");
        drop(held);
        assert!(pool.clients.in_flight.is_empty(), "no count left behind");
    }

    /// With a bound of 16 connections or fewer, no network is refused: its requests wait like
    /// any other.
    #[tokio::test]
    async fn a_small_bound_refuses_no_network() {
        let up = upstream().await;
        let pool = Arc::new(bounded_pool(&up, 2, Duration::from_secs(20)));
        let first = pool.send(get("/big"), CLIENT).await.unwrap();
        let second = pool.send(get("/big"), CLIENT).await.unwrap();
        let third = tokio::spawn({
            let pool = pool.clone();
            async move { read_all(pool.send(get("/"), CLIENT).await.unwrap()).await }
        });
        while pool.waiting_count() == 0 {
            tokio::task::yield_now().await;
        }
        read_all(first).await;
        assert_eq!(third.await.unwrap(), 5);
        read_all(second).await;
    }

    /// A connection answered before its request's body went out, whose upstream then neither
    /// reads the rest nor closes, is cut `abandon_after` later: it gives back its place in the
    /// bound instead of holding it for ever.
    #[tokio::test(start_paused = true)]
    async fn an_abandoned_connection_that_cannot_finish_its_body_is_cut() {
        let up = answering_upstream(AfterAnswer::GoDeaf).await;
        let pool = bounded_pool(&up, 1, Duration::from_secs(5));
        let endless = futures_util::stream::repeat_with(|| {
            Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'x'; 65536])))
        });
        let upload = Request::builder()
            .method("POST")
            .uri("/upload")
            .header("host", "upstream.test")
            .body(StreamBody::new(endless).boxed_unsync())
            .unwrap();
        let answered = pool.send(upload, CLIENT).await.unwrap();
        assert_eq!(read_all(answered).await, 2);
        assert_eq!(pool.open_count(), 1, "still sending the body");

        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(pool.open_count(), 1, "not cut before abandon_after");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(pool.open_count(), 0, "cut, its place given back");
        assert_eq!(
            read_all(pool.send(get("/"), CLIENT).await.unwrap()).await,
            2
        );
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_connect_error() {
        // Bound but never listening: the port stays reserved for this test (no other test
        // can take it meanwhile) and a connection to it is refused.
        let reserved = tokio::net::TcpSocket::new_v4().unwrap();
        reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = reserved.local_addr().unwrap();
        let up = Upstream {
            addr,
            accepted: Arc::new(AtomicUsize::new(0)),
        };
        let Err(err) = pool_for(&up, 8).send(get("/"), CLIENT).await else {
            panic!("nothing listens there");
        };
        assert!(matches!(err, PoolError::Connect(_)), "{err}");
    }
}
