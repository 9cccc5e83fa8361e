//! One accepted connection: optional TLS handshake (with a deadline), then HTTP/1.1 or HTTP/2
//! with header-read and idle timeouts, and a graceful close when the server shuts down.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::activity::{Activity, ActivityIo};
use crate::app::App;
use crate::http::{self, ConnInfo};

pub async fn serve(
    app: Arc<App>,
    stream: TcpStream,
    conn: ConnInfo,
    tls: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    let limits = &app.config.limits;
    let activity = Activity::new();
    match tls {
        None => {
            serve_http(
                app,
                ActivityIo::new(stream, activity.clone()),
                activity,
                conn,
                shutdown,
            )
            .await
        }
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(tls_stream)) => {
                    serve_http(
                        app,
                        ActivityIo::new(tls_stream, activity.clone()),
                        activity,
                        conn,
                        shutdown,
                    )
                    .await
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed")
                }
                Err(_) => tracing::debug!(peer = %conn.peer, "TLS handshake timed out"),
            }
        }
    }
}

/// Decrements the in-flight count when a request's handler finishes (or is dropped).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve_http<I>(
    app: Arc<App>,
    io: I,
    activity: Activity,
    conn: ConnInfo,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = app.config.limits.clone();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let counter = in_flight.clone();
    let service = service_fn(move |req| {
        let app = app.clone();
        let guard = InFlight::enter(&counter);
        async move {
            let resp = http::handle(app, req, conn).await;
            drop(guard);
            Ok::<_, std::convert::Infallible>(resp)
        }
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size((limits.max_header_bytes * 2).max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes * 2).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);

    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let idle_deadline = activity.last() + limits.idle_timeout;
        tokio::select! {
            res = connection.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
                }
                return;
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep_until(idle_deadline), if !closing => {
                let idle = activity.last().elapsed() >= limits.idle_timeout;
                if idle && in_flight.load(Ordering::SeqCst) == 0 {
                    tracing::trace!(peer = %conn.peer, "closing idle connection");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
