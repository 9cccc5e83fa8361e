//! A WebSocket opened on a session lives no longer than the session: logout, a password
//! change, an account disabled, second factors reset by an administrator and the session's
//! expiry each close the tunnels the session opened, and only those. Every wait is bounded.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use stepgate::auth::password::PasswordHash;
use stepgate::auth::session::SessionId;
use tokio_tungstenite::tungstenite::Message;

use common::auth::{create_user, login, logout, manual_clock, username};
use common::websocket::{Ws, round_trip, within};
use common::{EchoUpstream, Gateway, GatewayBuilder};

/// Every proxied request needs a login.
const PROTECTED: &str = "[access]\ndefault_policy = \"one_factor\"\n";

async fn protected_gateway(builder: GatewayBuilder) -> (EchoUpstream, Gateway) {
    let upstream = EchoUpstream::start().await;
    let gw = builder
        .upstream(&upstream.url())
        .extra_toml(PROTECTED)
        .start()
        .await;
    (upstream, gw)
}

/// A WebSocket to the echo upstream opened with `cookie` (`name=value`).
async fn websocket(gw: &Gateway, cookie: &str) -> Ws {
    common::websocket::open(gw, Some(cookie)).await
}

/// Waits until the gateway closes `ws`: the stream ends or fails, with nothing echoed first.
async fn closed_by_gateway(ws: &mut Ws) {
    // A message sent now must not come back: the tunnel is gone.
    let _ = ws.send(Message::text("after the end")).await;
    match within("tunnel to close", ws.next()).await {
        None | Some(Err(_)) => {}
        Some(Ok(m)) => assert!(m.is_close(), "the tunnel still carried {m:?}"),
    }
}

/// The session key behind a `name=value` cookie.
fn key_of(cookie: &str) -> stepgate::auth::session::SessionKey {
    let value = cookie.split_once('=').expect("name=value").1;
    SessionId::parse(value).expect("session id").key()
}

#[tokio::test]
async fn logout_closes_the_sessions_tunnels_and_no_other() {
    let (_upstream, gw) = protected_gateway(Gateway::builder()).await;
    create_user(&gw, "alice", "correct horse battery", &[]).await;
    let first = login(&gw, "alice", "correct horse battery").await;
    let second = login(&gw, "alice", "correct horse battery").await;
    let mut a = websocket(&gw, &first).await;
    let mut b = websocket(&gw, &first).await;
    let mut other = websocket(&gw, &second).await;
    assert_eq!(gw.app().sessions.end_watches(), 3);

    assert_eq!(logout(&gw, &first).await, 200);
    closed_by_gateway(&mut a).await;
    closed_by_gateway(&mut b).await;
    round_trip(&mut other, "the other session's tunnel stays open").await;
}

#[tokio::test]
async fn account_changes_close_every_tunnel_of_that_account_only() {
    let (_upstream, gw) = protected_gateway(Gateway::builder()).await;
    for name in ["alice", "bob", "carol", "dave"] {
        create_user(&gw, name, "correct horse battery", &[]).await;
    }
    let app = gw.app().clone();
    let cookie = |name: &'static str| login(&gw, name, "correct horse battery");
    let (alice, bob, carol, dave) = (
        cookie("alice").await,
        cookie("bob").await,
        cookie("carol").await,
        cookie("dave").await,
    );
    let mut alice_ws = websocket(&gw, &alice).await;
    let mut bob_ws = websocket(&gw, &bob).await;
    let mut carol_ws = websocket(&gw, &carol).await;
    let mut dave_ws = websocket(&gw, &dave).await;

    // A password change.
    let hash = PasswordHash::parse(
        "$argon2id$v=19$m=256,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    )
    .expect("hash");
    app.users
        .set_password(&username("alice"), hash)
        .expect("set password");
    closed_by_gateway(&mut alice_ws).await;
    round_trip(&mut dave_ws, "still open").await;

    // The account disabled.
    app.users
        .set_disabled(&username("bob"), true)
        .expect("disable");
    closed_by_gateway(&mut bob_ws).await;
    round_trip(&mut dave_ws, "still open").await;

    // Second factors reset by an administrator.
    app.users
        .reset_two_factor(&username("carol"))
        .expect("reset 2fa");
    closed_by_gateway(&mut carol_ws).await;
    round_trip(&mut dave_ws, "still open").await;
}

#[tokio::test]
async fn an_expired_session_closes_its_tunnel_when_housekeeping_removes_it() {
    let (clock, shared) = manual_clock();
    let (_upstream, gw) = protected_gateway(Gateway::builder().clock(shared)).await;
    create_user(&gw, "alice", "correct horse battery", &[]).await;
    let cookie = login(&gw, "alice", "correct horse battery").await;
    let mut ws = websocket(&gw, &cookie).await;

    // Still live: housekeeping leaves it alone.
    gw.app().sessions.purge_expired().expect("purge");
    round_trip(&mut ws, "still live").await;

    // Past the 12 h absolute limit (traffic in the tunnel is not a request on the session).
    clock.advance(Duration::from_secs(13 * 3600));
    assert_eq!(gw.app().sessions.purge_expired().expect("purge"), 1);
    closed_by_gateway(&mut ws).await;
}

#[tokio::test]
async fn a_tunnel_follows_its_session_to_a_fresh_id() {
    let (_upstream, gw) = protected_gateway(Gateway::builder()).await;
    create_user(&gw, "alice", "correct horse battery", &[]).await;
    let cookie = login(&gw, "alice", "correct horse battery").await;
    let mut ws = websocket(&gw, &cookie).await;

    // The session moves to a fresh id (as after a second factor); the tunnel stays open...
    let sessions = &gw.app().sessions;
    let (_, moved) = sessions
        .rotate(&key_of(&cookie))
        .expect("rotate")
        .expect("live session");
    round_trip(&mut ws, "still open after the move").await;
    // ...and ends with the session under its new id.
    assert!(sessions.revoke(&moved.key).expect("revoke"));
    closed_by_gateway(&mut ws).await;
}

#[tokio::test]
async fn a_closed_tunnel_withdraws_its_watch() {
    let (_upstream, gw) = protected_gateway(Gateway::builder()).await;
    create_user(&gw, "alice", "correct horse battery", &[]).await;
    let cookie = login(&gw, "alice", "correct horse battery").await;
    let mut ws = websocket(&gw, &cookie).await;
    assert_eq!(gw.app().sessions.end_watches(), 1);
    ws.close(None).await.expect("close");
    while let Some(Ok(_)) = within("close handshake", ws.next()).await {}
    drop(ws);
    within("watch withdrawn", async {
        while gw.app().sessions.end_watches() != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}
