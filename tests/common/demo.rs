//! `stepgate demo` as a real process: started on an ephemeral port with its data in a given
//! directory, its announced URL read from its output, the demo account's sign-in requests, and
//! a stop with SIGTERM that must end in a clean exit.
//!
//! ```ignore
//! let demo = DemoProcess::start(&data_dir).await;          // demo.url ends with '/'
//! let base = demo.url.trim_end_matches('/');
//! let resp = post_demo_login(base).await;                   // the emailed code is owed next
//! let code = emailed_code(&data_dir.join("outbox"));
//! let resp = post_email_code(base, &pending, &code).await;
//! demo.stop().await;
//! ```

use std::path::Path;
use std::time::Duration;

use tokio::process::Child;

use super::auth::send;
use super::{OutputLines, http_client, sigterm, stepgate_command};

/// Bound on each step that waits for the demo process.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How the demo's line with its URL starts.
pub const ANNOUNCEMENT: &str = "Stepgate demo running at ";

/// The demo account's credentials.
pub const DEMO_USER: &str = "demo";
pub const DEMO_PASSWORD: &str = "demo-password";

/// `fut`, failing the test with "timed out: `what`" after [`DEADLINE`].
pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A running `stepgate demo` child (killed if dropped before [`DemoProcess::stop`]).
pub struct DemoProcess {
    child: Child,
    pid: u32,
    /// Keeps reading the child's stdout, so it never blocks on a full pipe.
    stdout: OutputLines,
    /// The URL the demo announced, as printed (trimmed; it ends with `/`).
    pub url: String,
}

impl DemoProcess {
    /// Spawns `stepgate demo --listen 127.0.0.1:0 --data-dir DATA_DIR` (stderr discarded) and
    /// waits for the line announcing its URL.
    pub async fn start(data_dir: &Path) -> DemoProcess {
        let mut child = stepgate_command()
            .args([
                "demo",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data_dir.to_str().expect("utf-8"),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn stepgate demo");
        let pid = child.id().expect("pid");
        let mut stdout = OutputLines::new(child.stdout.take().expect("stdout"));
        let line = within(
            "the demo URL",
            stdout.wait_for(|l| l.starts_with(ANNOUNCEMENT)),
        )
        .await;
        let url = line[ANNOUNCEMENT.len()..].trim().to_owned();
        DemoProcess {
            child,
            pid,
            stdout,
            url,
        }
    }

    /// Sends SIGTERM and asserts the demo exits with success.
    pub async fn stop(mut self) {
        sigterm(self.pid);
        let status = within("the demo to exit", self.child.wait())
            .await
            .expect("wait");
        assert!(status.success(), "exit {status:?}");
    }
}

/// The 6-digit code in the newest message of the demo's outbox.
pub fn emailed_code(outbox: &Path) -> String {
    let newest = std::fs::read_dir(outbox)
        .expect("the demo writes an outbox")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .expect("an email in the outbox");
    let mail = std::fs::read_to_string(newest.path()).expect("read email");
    let re = regex::Regex::new(r"\b(\d{6})\b").expect("regex");
    re.captures(&mail)
        .map(|c| c[1].to_string())
        .expect("a 6-digit code in the email")
}

/// `POST {base}/.stepgate/login` as an API client (JSON answer) with the demo account's
/// username and password as a form.
pub async fn post_demo_login(base: &str) -> reqwest::Response {
    send(
        http_client()
            .post(format!("{base}/.stepgate/login"))
            .header("accept", "application/json")
            .form(&[("username", DEMO_USER), ("password", DEMO_PASSWORD)]),
    )
    .await
}

/// `POST {base}/.stepgate/verify` as an API client: the emailed `code` for the session behind
/// the `pending` cookie (`name=value`).
pub async fn post_email_code(base: &str, pending: &str, code: &str) -> reqwest::Response {
    send(
        http_client()
            .post(format!("{base}/.stepgate/verify"))
            .header("accept", "application/json")
            .header("cookie", pending)
            .form(&[("method", "email"), ("code", code)]),
    )
    .await
}
