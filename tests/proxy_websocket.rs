//! WebSocket upgrades through the gateway, over the plain and the TLS listener.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use common::{EchoUpstream, Gateway, TestCa, raw_exchange};

const DEADLINE: Duration = Duration::from_secs(20);

/// Text and binary round trips, then a clean close.
async fn echo_round_trips<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        ws.send(Message::text("hello through the gateway"))
            .await
            .expect("send text");
        assert_eq!(
            ws.next().await.expect("frame").expect("ok"),
            Message::text("hello through the gateway")
        );
        let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        ws.send(Message::binary(binary.clone()))
            .await
            .expect("send binary");
        assert_eq!(
            ws.next().await.expect("frame").expect("ok"),
            Message::binary(binary)
        );
        ws.close(None).await.expect("close");
        while let Some(Ok(message)) = ws.next().await {
            assert!(message.is_close(), "unexpected {message:?}");
        }
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("websocket exchange timed out");
}

#[tokio::test]
async fn websocket_echo_through_plain_listener() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    let url = format!("ws://{}/__ws", gw.addr());
    let (mut ws, resp) =
        tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .expect("handshake timed out")
            .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["upgrade"], "websocket");
    echo_round_trips(&mut ws).await;

    let seen = upstream.last_request().expect("upgrade forwarded");
    assert_eq!(seen.path, "/__ws");
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
}

#[tokio::test]
async fn websocket_echo_through_tls_listener() {
    let ca = TestCa::new();
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .tls(&ca)
        .start()
        .await;
    let tls = tokio::time::timeout(DEADLINE, ca.tls_connect(gw.https_addr(), "localhost"))
        .await
        .expect("tls connect timed out");
    let url = format!("{}/__ws", gw.https_url()).replacen("https://", "wss://", 1);
    let (mut ws, resp) = tokio::time::timeout(DEADLINE, tokio_tungstenite::client_async(url, tls))
        .await
        .expect("handshake timed out")
        .expect("wss handshake");
    assert_eq!(resp.status(), 101);
    echo_round_trips(&mut ws).await;

    let seen = upstream.last_request().expect("upgrade forwarded");
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn upgrade_refused_by_upstream_is_not_spliced() {
    // The echo upstream answers a WebSocket upgrade to an ordinary path with 200 JSON: the
    // gateway must pass that answer on and not switch protocols.
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    let url = format!("ws://{}/not-a-websocket", gw.addr());
    let result = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("handshake timed out");
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 200)
        }
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

/// An upgrade to HTTP/2 in cleartext would carry every later request on the connection past
/// the access rules: the gateway forwards such a request as an ordinary one, without `Upgrade`
/// or `HTTP2-Settings`, whatever the `Connection` header lists.
#[tokio::test]
async fn h2c_upgrade_is_never_forwarded() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    for (connection, upgrade) in [
        ("Upgrade, HTTP2-Settings", "h2c"),
        ("Upgrade", "h2c"),
        ("upgrade", "H2C"),
        ("Upgrade", "websocket, h2c"),
    ] {
        let request = format!(
            "GET /public HTTP/1.1\r\nHost: app.test\r\nConnection: {connection}\r\n\
             Upgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        );
        let answer = raw_exchange(gw.addr(), request.as_bytes()).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{upgrade}: {}",
            String::from_utf8_lossy(&answer)
        );
        let seen = upstream.last_request().expect("forwarded");
        assert!(seen.header_all("upgrade").is_empty(), "{upgrade}: {seen:?}");
        assert!(seen.header_all("http2-settings").is_empty(), "{upgrade}");
    }
}

/// A WebSocket tunnel does not count against `upstreams[].max_connections`: its socket left the
/// pool when the protocol switched (the client's connection, which `limits.max_connections`
/// bounds, holds it). With a bound of one, a plain request still gets a connection while the
/// tunnel is open.
#[tokio::test]
async fn an_open_tunnel_leaves_the_upstream_connection_bound_free() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .upstream_extra("max_connections = 1\nconnect_timeout = \"20s\"")
        .extra_toml("[server]\nworkers = 1")
        .start()
        .await;
    let mut ws = common::websocket::open(&gw, None).await;
    let resp = tokio::time::timeout(
        DEADLINE,
        common::http_client().get(gw.url_for("/app")).send(),
    )
    .await
    .expect("served while the tunnel is open")
    .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.connections(), 2, "the tunnel's and the request's");
    let pools = gw
        .app()
        .upstreams
        .select(None)
        .expect("the default upstream");
    assert_eq!(pools.open_connections(), 1, "only the request's is counted");
    common::websocket::round_trip(&mut ws, "still open").await;
}
