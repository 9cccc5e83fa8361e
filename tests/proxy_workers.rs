//! Connections are served by `server.workers` threads, each with its own event loop and its own
//! upstream connections: a client connection stays on one worker, and the upstream connection
//! its requests use is kept alive and reused by that worker only. Password hashing runs beside
//! the workers, never on them.

mod common;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;

use common::auth::{Client, PREFIX, create_user, post_login_to};
use common::{EchoUpstream, Gateway, http_client, keep_alive_client, keep_alive_get};

async fn gateway(echo: &EchoUpstream, workers: usize) -> Gateway {
    Gateway::builder()
        .upstream(&echo.url())
        .extra_toml(&format!("[server]\nworkers = {workers}\n"))
        .start()
        .await
}

async fn connect(gw: &Gateway) -> SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(gw.addr()).await.expect("connect");
    keep_alive_client(tcp).await.0
}

/// One GET on the client connection, read to its end; returns the status and the echo.
async fn get(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> (u16, String) {
    let (status, body) = keep_alive_get(sender, path).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn requests_on_one_client_connection_share_one_upstream_connection() {
    let echo = EchoUpstream::start().await;
    let gw = gateway(&echo, 2).await;
    let mut client = connect(&gw).await;
    for i in 0..5 {
        let (status, body) = get(&mut client, &format!("/page/{i}")).await;
        assert_eq!(status, 200);
        assert!(body.contains(&format!("/page/{i}")), "{body}");
    }
    assert_eq!(echo.requests(), 5);
    assert_eq!(
        echo.connections(),
        1,
        "the upstream connection was kept alive"
    );
    let upstream = gw
        .app()
        .upstreams
        .select(Some("app.test"))
        .expect("upstream");
    assert_eq!(upstream.idle_connections(), 1);
}

#[tokio::test]
async fn each_worker_keeps_its_own_upstream_connections() {
    for workers in [1, 2, 3] {
        let echo = EchoUpstream::start().await;
        let gw = gateway(&echo, workers).await;
        // Client connections go to the workers in turn; one request at a time, so each
        // worker needs exactly one upstream connection and reuses it.
        let mut clients = Vec::new();
        for _ in 0..2 * workers {
            clients.push(connect(&gw).await);
        }
        for (i, client) in clients.iter_mut().enumerate() {
            let (status, _) = get(client, &format!("/c/{i}")).await;
            assert_eq!(status, 200);
        }
        assert_eq!(echo.requests(), 2 * workers);
        assert_eq!(
            echo.connections(),
            workers,
            "one upstream connection per worker ({workers} workers)"
        );
        assert!(gw.shutdown().await, "drained");
    }
}

/// A login's argon2id runs beside the workers, not on them: with a single worker and a single
/// hashing thread, requests keep being proxied while a login's password check is running.
#[tokio::test]
async fn proxied_requests_are_answered_while_a_login_hashes() {
    let echo = EchoUpstream::start().await;
    // A costly hash (in the unoptimised test build, long enough to outlast a few proxied
    // requests by far): 16 MiB, two passes.
    let gw = Gateway::builder()
        .upstream(&echo.url())
        .extra_toml(
            "[server]\nworkers = 1\n[password]\nargon2_memory_kib = 16384\n\
             argon2_iterations = 2\nmax_concurrent_hashes = 1\n",
        )
        .start()
        .await;
    create_user(&gw, "alice", "password123", &[]).await;
    let hasher = gw.app().hasher.clone();
    let started = hasher.stats().started;

    let url = gw.url_for(&format!("{PREFIX}/login"));
    let login = tokio::spawn(async move {
        let fields = [("username", "alice"), ("password", "password123")];
        post_login_to(&http_client(), &url, &fields, Client::Api, &[]).await
    });
    // Wait (for an event, not for time) until the login's hash is running.
    while hasher.stats().in_flight == 0 {
        assert!(
            !login.is_finished(),
            "the login ended before its hash was seen"
        );
        tokio::task::yield_now().await;
    }

    let mut client = connect(&gw).await;
    for i in 0..3 {
        let (status, body) = get(&mut client, &format!("/during/{i}")).await;
        assert_eq!(status, 200);
        assert!(body.contains(&format!("/during/{i}")), "{body}");
    }
    assert_eq!(
        hasher.stats().in_flight,
        1,
        "the login's hash was still running while the requests were answered"
    );

    let resp = login.await.expect("login task");
    assert_eq!(resp.status(), 200, "the login itself succeeds");
    assert_eq!(hasher.stats().started, started + 1, "one hash: the login's");
}
