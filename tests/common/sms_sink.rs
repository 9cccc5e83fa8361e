//! An HTTP server standing in for an SMS provider's webhook: it records every request (method,
//! path, headers, body) and answers with a configurable status. Stops when dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const WAIT_DEADLINE: Duration = Duration::from_secs(30);

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct SmsRequest {
    pub method: String,
    pub path: String,
    /// Header names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl SmsRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (panics if it is not JSON: tests want to know).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("SMS webhook body is JSON")
    }
}

struct State {
    status: AtomicU16,
    /// Record requests but never answer them (a provider that hangs).
    hang: std::sync::atomic::AtomicBool,
    received: Mutex<Vec<SmsRequest>>,
    count: watch::Sender<usize>,
    stop: watch::Receiver<()>,
}

/// A running webhook sink on 127.0.0.1 (plain HTTP/1.1).
pub struct SmsSink {
    addr: SocketAddr,
    state: Arc<State>,
    accept_task: JoinHandle<()>,
    _stop: watch::Sender<()>,
}

impl SmsSink {
    /// A sink answering `200 OK`.
    pub async fn start() -> SmsSink {
        Self::start_with_status(200).await
    }

    /// A sink answering `status` to every request.
    pub async fn start_with_status(status: u16) -> SmsSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind SMS sink");
        let addr = listener.local_addr().expect("local addr");
        let (stop_tx, stop_rx) = watch::channel(());
        let state = Arc::new(State {
            status: AtomicU16::new(status),
            hang: std::sync::atomic::AtomicBool::new(false),
            received: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            stop: stop_rx,
        });
        let accept_task = tokio::spawn(accept_loop(listener, state.clone()));
        SmsSink {
            addr,
            state,
            accept_task,
            _stop: stop_tx,
        }
    }

    /// From now on, record each request and never answer it.
    pub fn set_hang(&self, hang: bool) {
        self.state.hang.store(hang, Ordering::SeqCst);
    }

    /// Change the status answered from now on.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/send`: the URL to configure as `sms.webhook_url`.
    pub fn url(&self) -> String {
        format!("http://{}/send", self.addr)
    }

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<SmsRequest> {
        self.state
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Returns the first `n` requests once at least `n` arrived.
    pub async fn wait_for_requests(&self, n: usize) -> Vec<SmsRequest> {
        let mut rx = self.state.count.subscribe();
        tokio::time::timeout(WAIT_DEADLINE, rx.wait_for(|count| *count >= n))
            .await
            .expect("SMS sink: timed out waiting for a request")
            .expect("SMS sink state lives as long as the handle");
        self.received().into_iter().take(n).collect()
    }
}

impl Drop for SmsSink {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let mut stop = state.stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, &state).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            tokio::select! {
                _ = builder.serve_connection(TokioIo::new(tcp), service) => {}
                _ = stop.changed() => {}
            }
        });
    }
}

async fn handle(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let record = SmsRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    if let Ok(mut received) = state.received.lock() {
        received.push(record);
    }
    state.count.send_modify(|n| *n += 1);
    if state.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let status = StatusCode::from_u16(state.status.load(Ordering::SeqCst))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = status;
    response
}
