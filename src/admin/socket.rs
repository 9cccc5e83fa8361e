//! The control socket a running gateway listens on, so that the CLI can change users while the
//! gateway holds the store (sled allows one process per database).
//!
//! - Path: `control.sock` inside `storage.path`. sled only ever looks at its own files there
//!   (`conf`, `db`, `blobs/`, `snap.*`), so the extra entry is harmless.
//! - Mode 0600 from the first instant: the socket is bound inside a fresh 0700 directory,
//!   restricted to 0600, then renamed into place. Connections are further checked by peer
//!   credentials: only the socket's owner (or root) is served.
//! - A stale socket file (nothing answers on it) is replaced on start; a live one makes the start
//!   fail. The file is removed on shutdown, if it is still ours.
//! - Each connection carries one request line of at most [`MAX_REQUEST_BYTES`], read within
//!   [`REQUEST_TIMEOUT`]; whatever arrives, the answer is one response line. A bad line never
//!   stops the listener.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::protocol::{self, ErrorKind, MAX_REQUEST_BYTES, Response};
use crate::app::App;
use crate::server::accept;

/// File name of the control socket inside `storage.path`.
pub const SOCKET_FILE: &str = "control.sock";
/// A client must send its whole request line within this time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Writing the response must finish within this time.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Administrative connections served at once; further ones wait to be accepted.
const MAX_CONNECTIONS: usize = 16;
/// How long shutdown waits for requests being served.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the control socket of the store at `storage_path` lives.
pub fn socket_path(storage_path: &Path) -> PathBuf {
    storage_path.join(SOCKET_FILE)
}

/// A listening control socket. Call [`ControlSocket::shutdown`] to stop it and remove its file.
pub struct ControlSocket {
    path: PathBuf,
    /// Device and inode of the socket file we created, so shutdown removes only our own.
    identity: (u64, u64),
    shutdown: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
    connections: TaskTracker,
}

/// Binds the control socket of `app`'s store and starts serving it.
pub async fn start(app: Arc<App>) -> io::Result<ControlSocket> {
    let path = socket_path(&app.config.storage.path);
    let std_listener = bind_private(&path)?;
    let meta = std::fs::symlink_metadata(&path)?;
    let identity = (meta.dev(), meta.ino());
    let owner = meta.uid();
    std_listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(std_listener)?;
    tracing::info!(path = %path.display(), "control socket listening");

    let (shutdown, shutdown_rx) = watch::channel(false);
    let connections = TaskTracker::new();
    let accept_loop = tokio::spawn(accept_loop(
        app,
        listener,
        owner,
        shutdown_rx,
        connections.clone(),
    ));
    Ok(ControlSocket {
        path,
        identity,
        shutdown,
        accept_loop,
        connections,
    })
}

impl ControlSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, lets requests being served finish (briefly), removes the socket file.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept_loop.await;
        self.connections.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("control socket: requests still running at shutdown");
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.identity => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the control socket");
                }
            }
            // Replaced by someone else, or already gone: not ours to remove.
            Ok(_) | Err(_) => {}
        }
    }
}

/// Binds a socket at `path` that nobody but its owner can use at any moment.
fn bind_private(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let context = |e: io::Error, what: &str| {
        io::Error::new(
            e.kind(),
            format!("control socket {}: {what}: {e}", path.display()),
        )
    };
    remove_stale(path).map_err(|e| context(e, "cannot replace the existing file"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let staging = dir.join(format!(".control-{:016x}", rand::random::<u64>()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|e| context(e, "cannot create a staging directory"))?;
    let staged = staging.join("s");
    let result = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&staged)
            .map_err(|e| context(e, "cannot bind (a socket path must be under 108 bytes)"))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| context(e, "cannot restrict permissions"))?;
        std::fs::rename(&staged, path).map_err(|e| context(e, "cannot move into place"))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&staging);
    result
}

/// Removes a socket file nothing answers on. A live socket or a file that is not a socket is an
/// error: the first means another gateway serves this store, the second is not ours to delete.
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; remove it",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process answers on it",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale control socket");
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

async fn accept_loop(
    app: Arc<App>,
    listener: UnixListener,
    owner: u32,
    mut shutdown: watch::Receiver<bool>,
    connections: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    while let Some((permit, (stream, _))) =
        accept::next_connection("control socket", &permits, &mut shutdown, || {
            listener.accept()
        })
        .await
    {
        if !peer_allowed(&stream, owner) {
            continue;
        }
        let app = app.clone();
        connections.spawn(async move {
            serve(app, stream).await;
            drop(permit);
        });
    }
}

/// Only the socket's owner and root are served; the 0600 mode already says so, this holds even
/// if the mode were changed by hand.
fn peer_allowed(stream: &UnixStream, owner: u32) -> bool {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == owner || cred.uid() == 0 => true,
        Ok(cred) => {
            tracing::warn!(
                uid = cred.uid(),
                "control socket: connection from another user refused"
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "control socket: cannot read peer credentials; refused");
            false
        }
    }
}

/// After an administrator's `reset-2fa`: the account's owner is told by email (in English:
/// the gateway knows no language of theirs outside a request), as when they turn it off
/// themselves. A helpdesk tricked into resetting someone's second factor does not go unnoticed.
async fn tell_of_a_reset(app: Arc<App>, name: String) {
    let Ok(username) = crate::auth::user::Username::parse(&name) else {
        return;
    };
    let user = match app.users.get(&username) {
        Ok(Some(user)) => user,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the account to tell of a reset");
            return;
        }
    };
    let (Some(to), true) = (&user.email, app.notifier.email_enabled()) else {
        return;
    };
    // Under `mfa.email_default` an address keeps emailed codes on after a reset: two-step
    // verification is then changed, not off.
    let notice = match app.users.two_factor(&user) {
        Ok(summary) if summary.state != crate::auth::factors::TwoFactorState::NotEnabled => {
            crate::notify::Notice::FactorsChanged
        }
        _ => crate::notify::Notice::TwoFactorDisabled,
    };
    if let Err(e) = app
        .notifier
        .send_notice(to, &user.display_name, crate::notify::Lang::En, notice)
        .await
    {
        tracing::warn!(error = %e, "could not send a security notice");
    }
}

/// Reads one request line, answers with one response line.
async fn serve(app: Arc<App>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let response = match read_request(read, REQUEST_TIMEOUT).await {
        Ok(line) => match protocol::parse_request(&line) {
            Ok(request) => {
                let op = request_name(&request);
                let reset_of = match &request {
                    protocol::Request::ResetTwoFactor { username } => Some(username.clone()),
                    _ => None,
                };
                let worker = app.clone();
                match tokio::task::spawn_blocking(move || protocol::execute(&worker.users, request))
                    .await
                {
                    Ok(response) => {
                        tracing::info!(
                            op,
                            ok = !matches!(response, Response::Error { .. }),
                            "control socket request"
                        );
                        if let (Some(name), Response::Done) = (reset_of, &response) {
                            tokio::spawn(tell_of_a_reset(app.clone(), name));
                        }
                        response
                    }
                    Err(e) => {
                        tracing::error!(op, error = %e, "control socket request failed");
                        Response::error(ErrorKind::Internal, "the request failed in the gateway")
                    }
                }
            }
            Err(response) => response,
        },
        Err(response) => response,
    };
    let mut out = match serde_json::to_vec(&response) {
        Ok(out) => out,
        Err(e) => {
            tracing::error!(error = %e, "control socket: cannot encode a response");
            return;
        }
    };
    out.push(b'\n');
    let written = tokio::time::timeout(RESPONSE_TIMEOUT, async {
        write.write_all(&out).await?;
        write.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::debug!("control socket: client went away before the response was sent");
    }
}

/// The first line (up to and without the newline), or an error response to send instead.
async fn read_request(
    read: impl tokio::io::AsyncRead + Unpin,
    limit: Duration,
) -> Result<Vec<u8>, Response> {
    let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES as u64);
    let mut line = Vec::new();
    match tokio::time::timeout(limit, reader.read_until(b'\n', &mut line)).await {
        Err(_) => Err(Response::error(
            ErrorKind::BadRequest,
            format!("no complete request line within {limit:?}"),
        )),
        Ok(Err(e)) => Err(Response::error(
            ErrorKind::BadRequest,
            format!("cannot read the request: {e}"),
        )),
        Ok(Ok(_)) => {
            if line.last() == Some(&b'\n') {
                line.pop();
                Ok(line)
            } else if line.len() >= MAX_REQUEST_BYTES {
                Err(Response::error(
                    ErrorKind::BadRequest,
                    format!("request line longer than {MAX_REQUEST_BYTES} bytes"),
                ))
            } else {
                // The client closed its side without a newline: take what it sent.
                Ok(line)
            }
        }
    }
}

/// The operation's name for the log (never its fields).
fn request_name(request: &protocol::Request) -> &'static str {
    use protocol::Request as R;
    match request {
        R::CreateUser { .. } => "create_user",
        R::SetPassword { .. } => "set_password",
        R::SetDisabled { .. } => "set_disabled",
        R::EditUser { .. } => "edit_user",
        R::Delete { .. } => "delete",
        R::List => "list",
        R::Get { .. } => "get",
        R::ResetTwoFactor { .. } => "reset_two_factor",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest `storage.path` the configuration accepts (79 bytes) can hold the control
    /// socket; one byte more cannot.
    #[test]
    fn the_longest_storage_path_allowed_holds_the_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().display().to_string();
        for (len, fits) in [(79, true), (80, false)] {
            let store =
                std::path::PathBuf::from(format!("{base}/{}", "s".repeat(len - base.len() - 1)));
            assert_eq!(store.as_os_str().len(), len);
            std::fs::create_dir(&store).unwrap();
            let bound = bind_private(&socket_path(&store));
            assert_eq!(bound.is_ok(), fits, "{len} bytes: {:?}", bound.err());
        }
    }

    /// The owner (and root) are served; anyone else is refused, whatever the socket's mode.
    #[tokio::test]
    async fn only_the_owner_and_root_are_served() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let me = std::fs::metadata(dir.path()).unwrap().uid();
        let (_client, server) = UnixStream::pair().unwrap();
        assert!(peer_allowed(&server, me), "the owner");
        if me != 0 {
            assert!(!peer_allowed(&server, me + 1), "uid {me} is not the owner");
            return;
        }
        // As root: a client running as another user, on a socket anyone may open.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("s");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let script = format!(
            "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); s.recv(1)",
            path.display().to_string()
        );
        let mut client = std::process::Command::new("python3")
            .args(["-c", &script])
            .uid(65534)
            .gid(65534)
            .spawn()
            .expect("python3 as uid 65534");
        let (stream, _) = listener.accept().await.unwrap();
        assert!(
            !peer_allowed(&stream, 1000),
            "uid 65534 is neither 1000 nor root"
        );
        assert!(peer_allowed(&stream, 65534), "uid 65534 owning the socket");
        drop(stream);
        assert!(client.wait().unwrap().success());
    }

    #[tokio::test]
    async fn rejects_a_slow_client_holding_the_connection() {
        let (client, server) = UnixStream::pair().unwrap();
        let mut client = client;
        client.write_all(b"{\"op\":").await.unwrap();
        // The client never finishes its line; the read gives up at the limit.
        let got = read_request(server, Duration::from_millis(20)).await;
        match got {
            Err(Response::Error {
                kind: ErrorKind::BadRequest,
                message,
            }) => assert!(message.contains("no complete request line"), "{message}"),
            other => panic!("{other:?}"),
        }
        drop(client);
    }

    #[tokio::test]
    async fn request_line_is_cut_at_the_limit() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let writer = tokio::spawn(async move {
            // More than the limit, no newline: the reader must stop at the limit.
            let _ = client.write_all(&vec![b'{'; MAX_REQUEST_BYTES * 4]).await;
            client
        });
        let got = read_request(server, Duration::from_secs(30)).await;
        assert!(matches!(
            got,
            Err(Response::Error {
                kind: ErrorKind::BadRequest,
                ..
            })
        ));
        drop(writer);
    }

    #[tokio::test]
    async fn a_line_without_newline_at_eof_is_accepted() {
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(b"{\"op\":\"list\"}").await.unwrap();
        client.shutdown().await.unwrap();
        let line = read_request(server, Duration::from_secs(30)).await.unwrap();
        assert_eq!(line, b"{\"op\":\"list\"}");
    }
}
