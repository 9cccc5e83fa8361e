//! A real SMTP server inside the test process, on 127.0.0.1, capturing every message it accepts.
//!
//! The SMTP dialogue (commands, replies, DATA, STARTTLS and AUTH state) is the `mailin` crate's
//! state machine; this file only moves lines between it and a tokio socket, upgrading to TLS
//! (with a [`TestCa`] certificate) when the session asks. Everything stops when the
//! [`SmtpServer`] is dropped.
//!
//! ```ignore
//! let server = SmtpServer::start().await;                     // plaintext
//! let server = SmtpServer::builder().starttls(&ca).auth("u", "p").start().await;
//! let server = SmtpServer::builder().implicit_tls(&ca).start().await;  // smtps
//! let server = SmtpServer::builder().refuse_recipients().start().await; // 550 on RCPT
//! server.wait_for_message(1).await;
//! let mail = &server.messages()[0];
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailin::response::{AUTH_OK, INVALID_CREDENTIALS, NO_MAILBOX, OK, TRANSACTION_FAILED};
use mailin::{Action, AuthMechanism, Handler, Response, Session, SessionBuilder};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::TestCa;

/// Safety net so a client that never sends what a test waits for fails the test instead of
/// hanging it. A passing test never waits for this.
const WAIT_DEADLINE: Duration = Duration::from_secs(30);

/// One accepted message.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// EHLO/HELO name the client gave.
    pub helo: String,
    /// Envelope sender (MAIL FROM).
    pub from: String,
    /// Envelope recipients (RCPT TO).
    pub to: Vec<String>,
    /// The message as transmitted after DATA (headers and body).
    pub data: Vec<u8>,
    /// Whether the session was encrypted (implicit TLS or after STARTTLS).
    pub tls: bool,
    /// The user name the client authenticated as, if it did.
    pub authenticated_as: Option<String>,
}

impl ReceivedMail {
    pub fn data_str(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// One AUTH attempt: who, and whether the credentials matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    pub username: String,
    pub accepted: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    None,
    StartTls,
    Implicit,
}

#[derive(Default)]
pub struct SmtpServerBuilder {
    tls: Option<(TlsAcceptor, bool)>,
    credentials: Option<(String, String)>,
    refuse_recipients: bool,
    refuse_data: bool,
}

impl SmtpServerBuilder {
    /// Offer STARTTLS with `ca`'s leaf certificate (valid for localhost, 127.0.0.1, ::1).
    pub fn starttls(mut self, ca: &TestCa) -> Self {
        self.tls = Some((acceptor(ca), false));
        self
    }

    /// Speak TLS from the first byte (`smtps://`).
    pub fn implicit_tls(mut self, ca: &TestCa) -> Self {
        self.tls = Some((acceptor(ca), true));
        self
    }

    /// Require AUTH (PLAIN or LOGIN, only once encrypted) with these credentials before MAIL.
    pub fn auth(mut self, username: &str, password: &str) -> Self {
        self.credentials = Some((username.to_owned(), password.to_owned()));
        self
    }

    /// Answer every RCPT TO with `550 Mailbox unavailable`.
    pub fn refuse_recipients(mut self) -> Self {
        self.refuse_recipients = true;
        self
    }

    /// Answer every DATA with `554 Transaction failed`.
    pub fn refuse_data(mut self) -> Self {
        self.refuse_data = true;
        self
    }

    pub async fn start(self) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind SMTP server");
        let addr = listener.local_addr().expect("local addr");
        let (tls_mode, acceptor) = match self.tls {
            None => (TlsMode::None, None),
            Some((acceptor, false)) => (TlsMode::StartTls, Some(acceptor)),
            Some((acceptor, true)) => (TlsMode::Implicit, Some(acceptor)),
        };
        let mut session_builder = SessionBuilder::new("localhost");
        if tls_mode == TlsMode::StartTls {
            session_builder.enable_start_tls();
        }
        if self.credentials.is_some() {
            session_builder.enable_auth(AuthMechanism::Plain);
            session_builder.enable_auth(AuthMechanism::Login);
        }
        let (stop_tx, stop_rx) = watch::channel(());
        let shared = Arc::new(Shared {
            messages: Mutex::new(Vec::new()),
            auth_attempts: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            connections: watch::Sender::new(0),
            credentials: self.credentials,
            refuse_recipients: self.refuse_recipients,
            refuse_data: self.refuse_data,
        });
        let config = Arc::new(ServerConfig {
            session_builder,
            tls_mode,
            acceptor,
            shared: shared.clone(),
            stop: stop_rx,
        });
        let accept_task = tokio::spawn(accept_loop(listener, config));
        SmtpServer {
            addr,
            shared,
            accept_task,
            _stop: stop_tx,
        }
    }
}

fn acceptor(ca: &TestCa) -> TlsAcceptor {
    let mut config = ca.server_config();
    config.alpn_protocols.clear();
    TlsAcceptor::from(Arc::new(config))
}

struct Shared {
    messages: Mutex<Vec<ReceivedMail>>,
    auth_attempts: Mutex<Vec<AuthAttempt>>,
    count: watch::Sender<usize>,
    connections: watch::Sender<usize>,
    credentials: Option<(String, String)>,
    refuse_recipients: bool,
    refuse_data: bool,
}

struct ServerConfig {
    session_builder: SessionBuilder,
    tls_mode: TlsMode,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    /// Never sent on: dropping the sender (with the server) ends every connection.
    stop: watch::Receiver<()>,
}

/// A running SMTP server. Dropping it stops it.
pub struct SmtpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
    _stop: watch::Sender<()>,
}

impl SmtpServer {
    /// A plaintext server that accepts every message, without AUTH.
    pub async fn start() -> SmtpServer {
        Self::builder().start().await
    }

    /// A server offering STARTTLS with `ca`'s certificate, accepting every message.
    pub async fn start_starttls(ca: &TestCa) -> SmtpServer {
        Self::builder().starttls(ca).start().await
    }

    pub fn builder() -> SmtpServerBuilder {
        SmtpServerBuilder::default()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.shared
            .messages
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Every AUTH attempt so far.
    pub fn auth_attempts(&self) -> Vec<AuthAttempt> {
        self.shared
            .auth_attempts
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Number of connections accepted so far.
    pub fn connections(&self) -> usize {
        *self.shared.connections.borrow()
    }

    /// Returns the first `n` messages once at least `n` were accepted.
    pub async fn wait_for_message(&self, n: usize) -> Vec<ReceivedMail> {
        let mut rx = self.shared.count.subscribe();
        tokio::time::timeout(WAIT_DEADLINE, rx.wait_for(|count| *count >= n))
            .await
            .expect("SMTP server: timed out waiting for a message")
            .expect("SMTP server state lives as long as the handle");
        self.messages().into_iter().take(n).collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, config: Arc<ServerConfig>) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        config.shared.connections.send_modify(|n| *n += 1);
        let config = config.clone();
        let mut stop = config.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = serve_connection(tcp, peer.ip(), &config) => {}
                _ = stop.changed() => {}
            }
        });
    }
}

/// Per-connection handler: decides on each command and records what it accepts.
struct Capture {
    shared: Arc<Shared>,
    tls: Arc<AtomicBool>,
    helo: String,
    authenticated_as: Option<String>,
    current: Option<ReceivedMail>,
}

impl Capture {
    fn check_credentials(&mut self, username: &str, password: &str) -> Response {
        let accepted = self
            .shared
            .credentials
            .as_ref()
            .is_some_and(|(u, p)| u == username && p == password);
        if let Ok(mut attempts) = self.shared.auth_attempts.lock() {
            attempts.push(AuthAttempt {
                username: username.to_owned(),
                accepted,
            });
        }
        if accepted {
            self.authenticated_as = Some(username.to_owned());
            AUTH_OK
        } else {
            INVALID_CREDENTIALS
        }
    }
}

impl Handler for Capture {
    fn helo(&mut self, _ip: IpAddr, domain: &str) -> Response {
        self.helo = domain.to_owned();
        OK
    }

    fn rcpt(&mut self, _to: &str) -> Response {
        if self.shared.refuse_recipients {
            NO_MAILBOX
        } else {
            OK
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        if self.shared.refuse_data {
            return TRANSACTION_FAILED;
        }
        self.current = Some(ReceivedMail {
            helo: self.helo.clone(),
            from: from.to_owned(),
            to: to.to_vec(),
            data: Vec::new(),
            tls: self.tls.load(Ordering::SeqCst),
            authenticated_as: self.authenticated_as.clone(),
        });
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(mail) = &mut self.current {
            mail.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if let Some(mail) = self.current.take() {
            if let Ok(mut messages) = self.shared.messages.lock() {
                messages.push(mail);
            }
            self.shared.count.send_modify(|n| *n += 1);
        }
        OK
    }

    fn auth_plain(
        &mut self,
        _authorization_id: &str,
        authentication_id: &str,
        password: &str,
    ) -> Response {
        self.check_credentials(authentication_id, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        self.check_credentials(username, password)
    }
}

enum Outcome {
    Closed,
    UpgradeTls,
}

async fn serve_connection(tcp: TcpStream, peer: IpAddr, config: &ServerConfig) {
    let tls = Arc::new(AtomicBool::new(false));
    let handler = Capture {
        shared: config.shared.clone(),
        tls: tls.clone(),
        helo: String::new(),
        authenticated_as: None,
        current: None,
    };
    let mut session = config.session_builder.build(peer, handler);
    // Connection errors (client gone, bad TLS) are part of what tests provoke: ignore them.
    match (config.tls_mode, &config.acceptor) {
        (TlsMode::Implicit, Some(acceptor)) => {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            tls.store(true, Ordering::SeqCst);
            session.tls_active();
            let mut stream = BufReader::new(stream);
            if write(&mut stream, &session.greeting()).await.is_ok() {
                let _ = run(&mut session, &mut stream).await;
            }
        }
        _ => {
            let mut stream = BufReader::new(tcp);
            if write(&mut stream, &session.greeting()).await.is_err() {
                return;
            }
            let Ok(Outcome::UpgradeTls) = run(&mut session, &mut stream).await else {
                return;
            };
            let Some(acceptor) = &config.acceptor else {
                return;
            };
            let Ok(stream) = acceptor.accept(stream.into_inner()).await else {
                return;
            };
            tls.store(true, Ordering::SeqCst);
            session.tls_active();
            let _ = run(&mut session, &mut BufReader::new(stream)).await;
        }
    }
}

/// Feeds the client's lines to the session and writes its replies, until the session closes
/// or asks for TLS.
async fn run<S, H>(session: &mut Session<H>, stream: &mut BufReader<S>) -> std::io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        if stream.read_until(b'\n', &mut line).await? == 0 {
            return Ok(Outcome::Closed);
        }
        let response = session.process(&line);
        match response.action {
            Action::NoReply => {}
            Action::Reply => write(stream, &response).await?,
            Action::Close => {
                write(stream, &response).await?;
                return Ok(Outcome::Closed);
            }
            Action::UpgradeTls => {
                write(stream, &response).await?;
                return Ok(Outcome::UpgradeTls);
            }
        }
    }
}

async fn write<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    response: &Response,
) -> std::io::Result<()> {
    let bytes = response.buffer()?;
    let inner = stream.get_mut();
    inner.write_all(&bytes).await?;
    inner.flush().await
}
