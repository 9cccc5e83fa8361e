//! Connections are served by `server.workers` threads, each with its own event loop and its own
//! upstream connections: a client connection stays on one worker, and the upstream connection
//! its requests use is kept alive and reused by that worker only.

mod common;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;

use common::{EchoUpstream, Gateway, keep_alive_client, keep_alive_get};

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
