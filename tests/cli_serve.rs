//! `stepgate serve` as a real process: it serves, and on SIGTERM drains in-flight requests and
//! exits 0.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{EchoUpstream, OutputLines, http_client, sigterm, stepgate_command, toml_string};

const DEADLINE: Duration = Duration::from_secs(60);

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The structured (JSON) log line with this `message`, if `line` is one.
fn log_event(line: &str, message: &str) -> Option<serde_json::Value> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    (event["message"] == message).then_some(event)
}

/// True when a connection to `addr` is refused, or accepted and closed without an answer.
async fn listener_is_closed(addr: SocketAddr) -> bool {
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
        return true;
    };
    let request = b"GET /.stepgate/healthz HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    if tcp.write_all(request).await.is_err() {
        return true;
    }
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    answer.is_empty()
}

#[tokio::test]
async fn serve_drains_in_flight_request_on_sigterm_and_exits_zero() {
    let upstream = EchoUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("stepgate.toml");
    let store = dir.path().join("store");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"info\"\n\n\
             [access]\ndefault_policy = \"bypass\"\n\n\
             [storage]\npath = {}\n\n[[upstreams]]\nurl = {}\n",
            toml_string(&store.display().to_string()),
            toml_string(&upstream.url()),
        ),
    )
    .expect("write config");

    let mut child = stepgate_command()
        .args(["serve", "--config", config.to_str().expect("utf-8")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn stepgate serve");
    let pid = child.id().expect("pid");
    let mut log = OutputLines::new(child.stderr.take().expect("stderr"));

    let listening = within(
        "the listening log line",
        log.wait_for(|l| log_event(l, "listening for HTTP").is_some()),
    )
    .await;
    let addr: SocketAddr = log_event(&listening, "listening for HTTP")
        .and_then(|e| e["address"].as_str().map(str::to_owned))
        .expect("address field")
        .parse()
        .expect("socket address");

    let resp = within(
        "a first request",
        http_client().get(format!("http://{addr}/before")).send(),
    )
    .await
    .expect("request");
    assert_eq!(resp.status(), 200);

    let in_flight = tokio::spawn(
        http_client()
            .get(format!("http://{addr}/__hold?n=1"))
            .send(),
    );
    within("request held at the upstream", upstream.wait_held()).await;

    sigterm(pid);
    within(
        "the shutdown log line",
        log.wait_for(|l| l.contains("shutdown requested")),
    )
    .await;
    within("the listener to close", async {
        while !listener_is_closed(addr).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(!in_flight.is_finished(), "held request ended early");

    upstream.release_held();
    let resp = within("held request", in_flight)
        .await
        .expect("join")
        .expect("the in-flight request completes");
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["path"], "/__hold?n=1");

    let status = within("stepgate to exit", child.wait())
        .await
        .expect("wait");
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        log.seen().join("\n")
    );
    let rest = within("stderr to close", log.all()).await;
    assert!(
        rest.iter().any(|l| log_event(l, "stopped").is_some()),
        "{}",
        rest.join("\n")
    );
}
