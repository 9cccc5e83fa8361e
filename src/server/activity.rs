//! What one connection is doing: when it last moved a byte (so idle keep-alive connections can be
//! closed), how many requests are in flight, and whether it may release its HTTP/1.1 buffers
//! (see `connection`: an idle keep-alive connection keeps only its socket).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Shared state of one connection; cheap to clone.
#[derive(Clone)]
pub struct Activity {
    start: Instant,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Last read or write, in milliseconds since the connection was accepted.
    last_ms: AtomicU64,
    /// Bytes read from the client so far.
    bytes_read: AtomicU64,
    /// `bytes_read` when the last in-flight request finished.
    read_mark: AtomicU64,
    /// Requests whose response has not been completely handed to the connection yet.
    in_flight: AtomicUsize,
    /// The last request came with a body, which may still be arriving after its response is
    /// done (an upstream that answered without reading it all). HTTP/1.1 reads one request
    /// after another, so the next request's arrival means this body was read to its end.
    body_pending: AtomicBool,
    /// Set by the connection loop: the next read that would wait ends the HTTP/1.1 session
    /// instead, so that the connection can be parked without hyper's buffers.
    park: AtomicBool,
    /// Only requests keep the connection from being idle, not bytes (see
    /// [`Activity::quiet_since`]).
    requests_only: AtomicBool,
    /// When a request last started or ended, in milliseconds since the connection was
    /// accepted; kept only with `requests_only`.
    last_request_ms: AtomicU64,
    /// When a write to the client last had to wait (the client's receive window full), in
    /// milliseconds since the connection was accepted, plus one; 0 once a write went through.
    write_waiting_since: AtomicU64,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            start: Instant::now(),
            shared: Arc::new(Shared::default()),
        }
    }

    fn touch(&self) {
        self.shared
            .last_ms
            .store(self.elapsed_ms(), Ordering::Relaxed);
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A write went through: the client is reading.
    fn record_write(&self) {
        self.touch();
        // Most writes find nothing to clear: a load, not a store, on the hot path.
        if self.shared.write_waiting_since.load(Ordering::Relaxed) != 0 {
            self.shared.write_waiting_since.store(0, Ordering::Relaxed);
        }
    }

    /// A write had to wait for the client to read; the first of a run of them is remembered.
    fn record_write_waiting(&self) {
        if self.shared.write_waiting_since.load(Ordering::Relaxed) == 0 {
            let since = self.elapsed_ms().saturating_add(1);
            self.shared
                .write_waiting_since
                .store(since, Ordering::Relaxed);
        }
    }

    /// Since when the connection has been waiting for the client to read what it wrote, if it
    /// is (a response held up by a client that stopped reading).
    pub fn write_waiting_since(&self) -> Option<Instant> {
        match self.shared.write_waiting_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(self.start + std::time::Duration::from_millis(since - 1)),
        }
    }

    fn record_read(&self, bytes: usize) {
        self.touch();
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.shared.bytes_read.fetch_add(bytes, Ordering::SeqCst);
        // Someone is talking: whatever the connection loop asked, this is no time to park.
        self.shared.park.store(false, Ordering::SeqCst);
    }

    /// From now on, only requests keep the connection from being idle: an HTTP/2 client can
    /// send bytes that are no request (a PING, or a header block it never finishes) for ever.
    pub fn count_requests_only(&self) {
        self.shared.requests_only.store(true, Ordering::Relaxed);
    }

    fn touch_request(shared: &Shared, start: Instant) {
        if shared.requests_only.load(Ordering::Relaxed) {
            let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            // Streams of one HTTP/2 connection end on other threads' time too: never back.
            shared.last_request_ms.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// Since when the connection has been quiet, for its idle limit: the last read or write,
    /// or with [`Activity::count_requests_only`] the last start or end of a request (the
    /// connection's start if none came yet). Requests in flight are the caller's to check.
    pub fn quiet_since(&self) -> Instant {
        if self.shared.requests_only.load(Ordering::Relaxed) {
            let ms = self.shared.last_request_ms.load(Ordering::Relaxed);
            self.start + std::time::Duration::from_millis(ms)
        } else {
            self.last()
        }
    }

    /// The instant of the last read or write.
    pub fn last(&self) -> Instant {
        self.start + std::time::Duration::from_millis(self.shared.last_ms.load(Ordering::Relaxed))
    }

    /// Marks a request as in flight until the returned guard is dropped (which should be when
    /// its response body has been written, not when the handler returns). `with_body`: the
    /// request may still be sending a body; the connection is then not between requests until
    /// the next one arrives, whenever its response is done.
    pub fn request(&self, with_body: bool) -> InFlight {
        self.shared.body_pending.store(with_body, Ordering::SeqCst);
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        Activity::touch_request(&self.shared, self.start);
        InFlight(self.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// No request in flight, no request body that may still be arriving, and not a byte read
    /// since the last one finished: the HTTP/1.1 session is between requests, with nothing
    /// half-received. (Parking in the middle of a body would end it early, and its remaining
    /// bytes would be read as a new request.)
    pub fn between_requests(&self) -> bool {
        let shared = &self.shared;
        shared.in_flight.load(Ordering::SeqCst) == 0
            && !shared.body_pending.load(Ordering::SeqCst)
            && shared.bytes_read.load(Ordering::SeqCst) == shared.read_mark.load(Ordering::SeqCst)
    }

    /// Starts counting from here: bytes already read belong to nothing in flight.
    pub fn reset_mark(&self) {
        let read = self.shared.bytes_read.load(Ordering::SeqCst);
        self.shared.read_mark.store(read, Ordering::SeqCst);
        self.shared.park.store(false, Ordering::SeqCst);
    }

    /// Asks the I/O wrapper to end the HTTP/1.1 session at its next read that would wait.
    pub fn request_park(&self) {
        self.shared.park.store(true, Ordering::SeqCst);
    }

    pub fn park_requested(&self) -> bool {
        self.shared.park.load(Ordering::SeqCst)
    }
}

/// One request in flight; see [`Activity::request`].
pub struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        let shared = &self.0.shared;
        Activity::touch_request(shared, self.0.start);
        if shared.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let read = shared.bytes_read.load(Ordering::SeqCst);
            shared.read_mark.store(read, Ordering::SeqCst);
        }
    }
}

pin_project_lite::pin_project! {
    /// An I/O stream that records [`Activity`] on every successful read or write and, once the
    /// connection loop asks to park, reports end of stream instead of waiting for the client
    /// (and leaves the socket open when the HTTP session then shuts down).
    pub struct ActivityIo<T> {
        #[pin]
        inner: T,
        activity: Activity,
    }
}

impl<T> ActivityIo<T> {
    pub fn new(inner: T, activity: Activity) -> Self {
        ActivityIo { inner, activity }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead> AsyncRead for ActivityIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.activity.record_read(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            // Nothing to read now and the connection is to be parked: end the session cleanly.
            Poll::Pending if this.activity.park_requested() => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        match res {
            Poll::Ready(Ok(n)) if n > 0 => this.activity.record_write(),
            Poll::Pending => this.activity.record_write_waiting(),
            _ => {}
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.activity.park_requested() {
            // The session ended because we parked it: the socket stays open for the next request.
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        match res {
            Poll::Ready(Ok(n)) if n > 0 => this.activity.record_write(),
            Poll::Pending => this.activity.record_write_waiting(),
            _ => {}
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn between_requests_only_when_nothing_is_in_flight_or_half_read() {
        let activity = Activity::new();
        assert!(activity.between_requests());
        let first = activity.request(false);
        assert!(!activity.between_requests(), "a request is in flight");
        activity.record_read(10);
        drop(first);
        assert!(activity.between_requests(), "its bytes belong to it");
        activity.record_read(3);
        assert!(
            !activity.between_requests(),
            "part of the next request arrived"
        );
        activity.reset_mark();
        assert!(activity.between_requests());

        let a = activity.request(false);
        let b = activity.request(false);
        drop(a);
        assert!(!activity.between_requests(), "one of two still in flight");
        drop(b);
        assert!(activity.between_requests());
    }

    #[test]
    fn a_body_that_may_still_be_arriving_keeps_the_session_busy_until_the_next_request() {
        let activity = Activity::new();
        let upload = activity.request(true);
        activity.record_read(100);
        // Its response is done; the body may not be.
        drop(upload);
        assert!(!activity.between_requests());
        // The next request arrived: the body was read to its end.
        let next = activity.request(false);
        drop(next);
        assert!(activity.between_requests());
    }

    #[test]
    fn a_read_cancels_a_park_request() {
        let activity = Activity::new();
        activity.request_park();
        assert!(activity.park_requested());
        activity.record_read(1);
        assert!(!activity.park_requested());
    }

    #[tokio::test]
    async fn a_parked_stream_ends_reads_that_would_wait_and_keeps_the_socket_open() {
        let (client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut io = ActivityIo::new(server, activity.clone());
        let mut client = client;

        client.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 8];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"abc");

        activity.request_park();
        assert_eq!(
            io.read(&mut buf).await.unwrap(),
            0,
            "ends instead of waiting"
        );
        io.shutdown().await.unwrap();
        let mut server = io.into_inner();
        server.write_all(b"still open").await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"still op");

        // Data waiting to be read is always delivered, park or not.
        client.write_all(b"xyz").await.unwrap();
        let mut io = ActivityIo::new(server, activity.clone());
        activity.request_park();
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"xyz");
        assert!(!activity.park_requested());
    }
}
