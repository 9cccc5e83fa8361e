//! WebSocket clients through the gateway to the echo upstream's `/__ws`, for the tunnel tests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::Gateway;

/// Bounds every wait of these helpers; a passing run never comes near it.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `fut`, or a panic naming `what` after [`DEADLINE`].
pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A WebSocket to the echo upstream through `gw`, with the `Cookie` header `cookie` if given,
/// checked with one round trip.
pub async fn open(gw: &Gateway, cookie: Option<&str>) -> Ws {
    let mut request = format!("ws://{}/__ws", gw.addr())
        .into_client_request()
        .expect("request");
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", cookie.parse().expect("cookie header"));
    }
    let (mut ws, resp) = within("handshake", tokio_tungstenite::connect_async(request))
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    round_trip(&mut ws, "hello").await;
    ws
}

/// Sends `text` and expects it back.
pub async fn round_trip(ws: &mut Ws, text: &str) {
    within("round trip", async {
        ws.send(Message::text(text)).await.expect("send");
        assert_eq!(
            ws.next().await.expect("frame").expect("ok"),
            Message::text(text)
        );
    })
    .await
}
