//! Listeners: plain HTTP and HTTPS, a cap on concurrent connections (all clients together and
//! each client network), and graceful shutdown that stops accepting, lets in-flight requests
//! finish up to a deadline, then flushes storage.

pub(crate) mod accept;
mod activity;
mod client_cap;
mod connection;
mod descriptors;
pub mod tls;
pub mod workers;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::http::ConnInfo;
use client_cap::{Admission, ClientConnections};
use workers::Workers;

/// Live connection counts (diagnostics and tests). Cheap to clone; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct ConnectionStats {
    inner: Arc<ConnectionCounts>,
}

#[derive(Debug, Default)]
struct ConnectionCounts {
    open: AtomicUsize,
    parked: AtomicUsize,
    /// Woken at every change of a count.
    changed: tokio::sync::Notify,
}

/// Counts one connection (or one parked connection) for as long as it lives.
pub(crate) struct Counted<'a> {
    count: &'a AtomicUsize,
    changed: &'a tokio::sync::Notify,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

impl ConnectionStats {
    /// HTTP connections being served (after any TLS handshake).
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// HTTP/1.1 connections parked between requests: only their socket is held.
    pub fn parked(&self) -> usize {
        self.inner.parked.load(Ordering::SeqCst)
    }

    /// Waits until `ready` holds for the counts; woken by their changes, not by a timer.
    pub async fn wait_until(&self, ready: impl Fn(&ConnectionStats) -> bool) {
        loop {
            let changed = self.inner.changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before looking, so a change between the look and the wait is not missed.
            changed.as_mut().enable();
            if ready(self) {
                return;
            }
            changed.await;
        }
    }

    pub(crate) fn opened(&self) -> Counted<'_> {
        self.count(&self.inner.open)
    }

    pub(crate) fn parked_one(&self) -> Counted<'_> {
        self.count(&self.inner.parked)
    }

    fn count<'a>(&'a self, count: &'a AtomicUsize) -> Counted<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        self.inner.changed.notify_waiters();
        Counted {
            count,
            changed: &self.inner.changed,
        }
    }
}

/// The places connections take: one of `limits.max_connections`, all listeners together, and
/// one of its network's `limits.max_connections_per_client`. Shared by the accept loops.
#[derive(Clone)]
struct Places {
    total: Arc<Semaphore>,
    per_client: Arc<ClientConnections>,
}

/// A gateway that is accepting connections.
pub struct RunningGateway {
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    app: Arc<App>,
    shutdown: watch::Sender<bool>,
    accept_loops: Vec<JoinHandle<()>>,
    connections: TaskTracker,
    control: crate::admin::socket::ControlSocket,
    /// The threads serving connections; stopped when the gateway is dropped or shut down.
    workers: Arc<Workers>,
}

/// Binds the configured listeners and starts serving.
pub async fn start(app: Arc<App>) -> io::Result<RunningGateway> {
    let server = &app.config.server;
    let tls = match &server.tls {
        Some(files) => Some(tls::acceptor(files).map_err(io::Error::other)?),
        None => None,
    };
    let (shutdown, _) = watch::channel(false);
    let connections = TaskTracker::new();
    let limits = &app.config.limits;
    descriptors::warn_if_too_low(limits.max_connections);
    let places = Places {
        total: Arc::new(Semaphore::new(limits.max_connections)),
        per_client: Arc::new(ClientConnections::new(
            limits.max_connections_per_client,
            server.trusted_proxies.clone(),
        )),
    };
    let workers = Arc::new(Workers::start(server.workers)?);
    let mut accept_loops = Vec::new();
    let mut http_addr = None;
    let mut https_addr = None;

    if let Some(addr) = server.listen {
        let listener = bind(addr).await?;
        http_addr = Some(listener.local_addr()?);
        tracing::info!(address = %listener.local_addr()?, "listening for HTTP");
        accept_loops.push(tokio::spawn(accept_loop(
            app.clone(),
            listener,
            None,
            places.clone(),
            shutdown.subscribe(),
            connections.clone(),
            workers.clone(),
        )));
    }
    if let (Some(addr), Some(acceptor)) = (server.tls_listen, tls) {
        let listener = bind(addr).await?;
        https_addr = Some(listener.local_addr()?);
        let _ = app.https_addr.set(listener.local_addr()?);
        tracing::info!(address = %listener.local_addr()?, "listening for HTTPS");
        accept_loops.push(tokio::spawn(accept_loop(
            app.clone(),
            listener,
            Some(acceptor),
            places.clone(),
            shutdown.subscribe(),
            connections.clone(),
            workers.clone(),
        )));
    }
    accept_loops.push(tokio::spawn(housekeeping(
        app.clone(),
        shutdown.subscribe(),
    )));
    if app.config.upstreams.is_empty() {
        tracing::info!(
            "no [[upstreams]] configured: serving the portal and the forward-auth endpoints only"
        );
    }
    // Bound last: if a listener above failed, no socket file is left behind.
    let control = crate::admin::socket::start(app.clone()).await?;
    Ok(RunningGateway {
        http_addr,
        https_addr,
        app,
        shutdown,
        accept_loops,
        connections,
        control,
        workers,
    })
}

async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    places: Places,
    mut shutdown: watch::Receiver<bool>,
    connections: TaskTracker,
    workers: Arc<Workers>,
) {
    let name = if tls.is_some() { "https" } else { "http" };
    while let Some((permit, (stream, peer))) =
        accept::next_connection(name, &places.total, &mut shutdown, || listener.accept()).await
    {
        let client_place = match places.per_client.admit(peer.ip()) {
            Admission::Admitted(place) => Some(place),
            Admission::Exempt => None,
            Admission::Refused => {
                // Closed before a byte is read, with a reset: the gateway keeps no state for
                // it (no TIME_WAIT), however many such connections a client opens.
                let _ = stream.set_zero_linger();
                drop((stream, permit));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The socket moves to the worker's event loop: taken off this one here, registered
        // with the worker's when its task starts.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand an accepted connection to a worker");
                continue;
            }
        };
        let conn = ConnInfo {
            peer,
            tls: tls.is_some(),
        };
        let app = app.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        let (_, worker) = workers.assign();
        connections.spawn_on(
            async move {
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => connection::serve(app, stream, conn, tls, shutdown).await,
                    Err(e) => tracing::warn!(error = %e, "a worker cannot take a connection"),
                }
                // Held for the connection's whole life, whichever way it ended. Its network's
                // place goes first: the accept loop, woken by the permit, counts the next
                // connection of that network at once.
                drop(client_place);
                drop(permit);
            },
            worker,
        );
    }
}

/// How often expired sessions and stale failure counters are removed from the store.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(600);

/// How often password-hashing memory unused since the previous check is given back, and idle
/// upstream connections past their timeout are closed.
const HASH_MEMORY_INTERVAL: Duration = Duration::from_secs(30);

/// Removes expired sessions and stale regulation records, off the async workers, and gives back
/// the password-hashing memory once logins stop.
async fn housekeeping(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    let mut memory_tick = tokio::time::interval(HASH_MEMORY_INTERVAL);
    tick.tick().await;
    memory_tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = memory_tick.tick() => {
                let freed = app.hasher.release_idle_memory();
                if freed > 0 {
                    tracing::debug!(buffers = freed, "released idle password-hashing memory");
                }
                let closed = app.upstreams.close_expired();
                if closed > 0 {
                    tracing::debug!(connections = closed, "closed idle upstream connections");
                }
                continue;
            }
            _ = shutdown.changed() => return,
        }
        let app = app.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || remove_expired_records(&app)).await {
            tracing::warn!(error = %e, "housekeeping task failed");
        }
    }
}

/// Removes expired sessions, stale failure counters, expired second-factor state and the audit
/// events beyond `storage.audit_max_events`. Each is done on its own: a failure in one is
/// reported and leaves the others to run.
fn remove_expired_records(app: &App) {
    match app.sessions.purge_expired() {
        Ok(sessions) => tracing::debug!(sessions, "housekeeping removed expired sessions"),
        Err(e) => tracing::warn!(error = %e, "housekeeping of sessions failed"),
    }
    match app.regulator.prune() {
        Ok(counters) => tracing::debug!(counters, "housekeeping removed stale failure counters"),
        Err(e) => tracing::warn!(error = %e, "housekeeping of failure counters failed"),
    }
    match app.factors.prune() {
        Ok(records) => tracing::debug!(records, "housekeeping removed expired second-factor state"),
        Err(e) => tracing::warn!(error = %e, "housekeeping of second factors failed"),
    }
    match app.store.trim_audit(app.config.storage.audit_max_events) {
        Ok(events) => tracing::debug!(events, "housekeeping removed the oldest audit events"),
        Err(e) => tracing::warn!(error = %e, "housekeeping of the audit trail failed"),
    }
}

impl RunningGateway {
    /// Stops accepting, asks every connection to finish its in-flight requests, waits up to
    /// `limits.shutdown_timeout`, then flushes storage. Returns whether every connection drained.
    /// An upgraded connection (WebSocket) is waited for like a request in flight, and closed
    /// with whatever else is left at the deadline.
    pub async fn shutdown(self) -> io::Result<bool> {
        let _ = self.shutdown.send(true);
        for handle in self.accept_loops {
            let _ = handle.await;
        }
        self.control.shutdown().await;
        self.connections.close();
        let deadline = self.app.config.limits.shutdown_timeout;
        let drained = tokio::time::timeout(deadline, self.connections.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                remaining = self.connections.len(),
                "shutdown deadline reached with connections still open"
            );
        }
        // Whatever did not drain is cancelled with the workers' event loops.
        let workers = self.workers;
        tokio::task::spawn_blocking(move || drop(workers))
            .await
            .map_err(io::Error::other)?;
        self.app.flush().map_err(io::Error::other)?;
        tracing::info!("stopped");
        Ok(drained)
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }
}

/// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn serve_until_signal(app: Arc<App>) -> io::Result<()> {
    let signal = shutdown_signal()?;
    let running = start(app).await?;
    signal.await;
    tracing::info!("shutdown requested: draining in-flight requests");
    running.shutdown().await?;
    Ok(())
}

/// Installs the SIGTERM and Ctrl-C handlers now, and returns a future that resolves on either.
/// Installing before announcing readiness means a signal can never hit the default action.
pub fn shutdown_signal() -> io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_for_the_counts_wakes_on_each_change() {
        let stats = ConnectionStats::default();
        let watched = stats.clone();
        let waiter = tokio::spawn(async move {
            watched
                .wait_until(|s| s.open() == 2 && s.parked() == 1)
                .await;
        });
        // Let the waiter look once and start waiting.
        tokio::task::yield_now().await;
        let first = stats.opened();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one connection is not enough");
        let second = stats.opened();
        let parked = stats.parked_one();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken by the changes")
            .expect("waiter");
        drop((first, second, parked));
        // Already true: returns without waiting.
        stats.wait_until(|s| s.open() == 0 && s.parked() == 0).await;
    }

    /// The housekeeping loop removes expired sessions at its interval (and not before), off
    /// the async workers; it stops at shutdown.
    #[tokio::test(start_paused = true)]
    async fn housekeeping_removes_expired_sessions_at_its_interval() {
        use crate::auth::directory::NewUser;
        use crate::auth::password::PasswordHash;
        use crate::auth::session::AuthLevel;
        use crate::auth::user::Username;
        use crate::clock::{ManualClock, Timestamp};
        use figment::providers::{Format, Toml};

        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "[storage]\npath = {:?}\n[[upstreams]]\nurl = \"http://127.0.0.1:3000\"\n",
            dir.path().join("data").display().to_string()
        );
        let config =
            crate::config::from_figment(&figment::Figment::from(Toml::string(&toml))).unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
        let app = App::new(config, clock.clone()).unwrap();
        let alice = app
            .users
            .create(NewUser {
                username: Username::parse("alice").unwrap(),
                display_name: None,
                email: None,
                groups: Vec::new(),
                password_hash: PasswordHash::new_unchecked("$argon2id$x".into()),
            })
            .unwrap();
        app.users
            .open_session(&alice, AuthLevel::OneFactor, false)
            .unwrap()
            .expect("opened");
        // Past the session's absolute lifetime (12 h by default).
        clock.advance(Duration::from_secs(13 * 3600));
        let stored = || app.store.sessions_of_user(&alice.username).unwrap().len();

        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(housekeeping(app.clone(), stopped));
        // Let it start its clocks now.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        tokio::time::advance(HOUSEKEEPING_INTERVAL - Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        assert_eq!(stored(), 1, "not before the interval");
        tokio::time::advance(Duration::from_secs(2)).await;
        // The removal runs on a blocking thread, in real time: wait for it, within bounds.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while stored() != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "expired session still stored"
            );
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("housekeeping stops at shutdown")
            .unwrap();
    }
}
