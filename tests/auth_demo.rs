//! `stepgate demo` as a user would run it: the binary starts, prints its URL, the demo account
//! logs in, the console behind the gateway sees the identity, and SIGTERM stops it cleanly.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use common::auth::{json, send, set_session_cookie};
use common::demo::{emailed_code, post_demo_login, post_email_code};
use common::http_client;

/// Bound on each step that waits for the child process.
const STEP: Duration = Duration::from_secs(60);

/// Everything the child wrote, for the failure message.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<String>>);

impl Output {
    fn push(&self, line: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.push_str(line);
            s.push('\n');
        }
    }

    fn text(&self) -> String {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Copies the child's lines into `output`; the first line containing `running at ` is sent
/// on `url_tx`. Reading until the end keeps the child from blocking on a full pipe.
fn drain(
    stream: impl AsyncRead + Unpin + Send + 'static,
    output: Output,
    url_tx: Option<tokio::sync::oneshot::Sender<String>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        let mut url_tx = url_tx;
        while let Ok(Some(line)) = lines.next_line().await {
            output.push(&line);
            if let Some((_, rest)) = line.split_once("running at ")
                && let Some(tx) = url_tx.take()
            {
                let _ = tx.send(rest.trim().trim_end_matches('/').to_owned());
            }
        }
    });
}

fn spawn_demo(data_dir: &std::path::Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stepgate"));
    cmd.arg("demo")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Overrides meant for a real gateway must not reach the demo (its account's password is
    // published): were they read, the store would be `production-store` and the emails would
    // not be in the demo's outbox.
    let elsewhere = data_dir.with_file_name("production");
    cmd.env("STEPGATE_STORAGE__PATH", elsewhere.join("store"))
        .env("STEPGATE_EMAIL__DIR", elsewhere.join("outbox"));
    cmd.spawn().expect("spawn stepgate demo")
}

#[tokio::test]
async fn demo_account_logs_in_and_sigterm_exits_cleanly() {
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().join("demo-data");
    let mut child = spawn_demo(&data_dir);
    let output = Output::default();
    let (url_tx, url_rx) = tokio::sync::oneshot::channel();
    drain(
        child.stdout.take().expect("stdout"),
        output.clone(),
        Some(url_tx),
    );
    drain(child.stderr.take().expect("stderr"), output.clone(), None);

    let base = match tokio::time::timeout(STEP, url_rx).await {
        Ok(Ok(url)) => url,
        _ => panic!("the demo printed no URL:\n{}", output.text()),
    };
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    // Anonymous: the console is protected.
    let resp = send(
        http_client()
            .get(format!("{base}/api/whoami"))
            .header("accept", "application/json"),
    )
    .await;
    assert_eq!(resp.status(), 401, "{}", output.text());

    let resp = post_demo_login(&base).await;
    assert_eq!(resp.status(), 200, "{}", output.text());
    let pending = set_session_cookie(resp.headers()).expect("session cookie");
    let body = json(resp).await;
    // The demo turns email codes on: the second step's code is in the outbox.
    assert_eq!(body["status"], "second_factor_required", "{body}");
    let code = emailed_code(&data_dir.join("outbox"));
    assert!(
        !data.path().join("production").exists(),
        "the demo followed STEPGATE_* overrides"
    );
    let resp = post_email_code(&base, &pending, &code).await;
    assert_eq!(resp.status(), 200, "{}", output.text());
    let cookie = set_session_cookie(resp.headers()).expect("rotated session cookie");
    assert_ne!(
        cookie, pending,
        "the session id is rotated after the second factor"
    );

    let resp = send(
        http_client()
            .get(format!("{base}/api/whoami"))
            .header("accept", "application/json")
            .header("cookie", &cookie)
            .header("remote-user", "intruder"),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", output.text());
    let whoami = json(resp).await;
    assert_eq!(whoami["Remote-User"], "demo", "{whoami}");
    assert_eq!(whoami["Remote-Email"], "demo@example.com", "{whoami}");
    assert_eq!(
        whoami["groups"],
        serde_json::json!(["users", "admins"]),
        "{whoami}"
    );

    // /public needs no login.
    let resp = send(http_client().get(format!("{base}/public"))).await;
    assert_eq!(resp.status(), 200, "{}", output.text());

    let pid = child.id().expect("running child has a pid");
    let killed = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = match tokio::time::timeout(STEP, child.wait()).await {
        Ok(status) => status.expect("wait for the demo"),
        Err(_) => panic!("the demo did not stop on SIGTERM:\n{}", output.text()),
    };
    assert!(status.success(), "exit {status:?}:\n{}", output.text());
}
