//! `stepgate demo` as a real process: it announces its URL, serves the demo console through
//! the gateway, and exits 0 on SIGTERM.

mod common;

use common::demo::{DemoProcess, within};
use common::http_client;

#[tokio::test]
async fn demo_serves_the_console_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("demo-data");
    let demo = DemoProcess::start(&data_dir).await;

    let url = demo.url.clone();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );
    assert!(
        !url.ends_with(":0/"),
        "the announced URL has the real port: {url}"
    );
    assert!(data_dir.is_dir(), "the data directory is created");
    // Only its owner may read it: the outbox holds login codes, the store session ids.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&data_dir)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "data directory mode {mode:o}");

    let client = http_client();
    // The console itself needs a login (tests/auth_demo.rs signs in and reads it).
    let resp = within("GET /", client.get(&url).send())
        .await
        .expect("request");
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["login_url"], "/.stepgate/login?rd=%2F");

    let resp = within("GET /public", client.get(format!("{url}public")).send())
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .expect("body")
            .contains("Anyone can see this page")
    );

    let resp = within(
        "healthz",
        client.get(format!("{url}.stepgate/healthz")).send(),
    )
    .await
    .expect("request");
    assert_eq!(resp.status(), 200);

    demo.stop().await;
}
