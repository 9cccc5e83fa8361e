//! Brute-force regulation through the running gateway: bans by account and by network, the
//! 429 answer, and the ban's end, with the clock under the test's control.

mod common;

use std::time::Duration;

use common::auth::{Client, create_user, json, manual_clock, post_login, set_session_cookie, text};
use common::{EchoUpstream, Gateway};

const REGULATION: &str = r#"
[regulation]
max_retries = 3
find_time = "2m"
ban_time = "5m"

[server]
trusted_proxies = ["127.0.0.1/32"]
"#;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

async fn gateway(upstream: &EchoUpstream, clock: stepgate::clock::SharedClock) -> Gateway {
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml(REGULATION)
        .clock(clock)
        .start()
        .await;
    create_user(&gw, "alice", "password123", &[]).await;
    create_user(&gw, "bob", "password123", &[]).await;
    gw
}

/// One login attempt from `ip` (through X-Forwarded-For from the trusted local proxy).
async fn attempt(gw: &Gateway, ip: &str, user: &str, password: &str) -> reqwest::Response {
    post_login(
        gw,
        &[("username", user), ("password", password)],
        Client::Api,
        &[("x-forwarded-for", ip)],
    )
    .await
}

async fn status(gw: &Gateway, ip: &str, user: &str, password: &str) -> u16 {
    attempt(gw, ip, user, password).await.status().as_u16()
}

/// The attempt is refused as banned: 429, `Retry-After` in whole seconds, no cookie.
async fn assert_banned(resp: reqwest::Response, retry_after: u64) {
    assert_eq!(resp.status(), 429);
    assert!(set_session_cookie(resp.headers()).is_none());
    let header = resp
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert_eq!(header, retry_after.to_string());
    let body = json(resp).await;
    assert_eq!(body["error"], "too_many_requests");
    assert_eq!(body["retry_after"], retry_after);
}

#[tokio::test]
async fn bans_account_after_three_failures_even_for_the_right_password() {
    let upstream = EchoUpstream::start().await;
    let (clock, shared) = manual_clock();
    let gw = gateway(&upstream, shared).await;
    let ip = "203.0.113.10";
    for i in 0..3 {
        assert_eq!(status(&gw, ip, "alice", "wrong").await, 401, "failure {i}");
        clock.advance(SECOND);
    }
    // The 4th attempt with the right password: refused, and no password is checked.
    let before = gw.app().hasher.stats().started;
    assert_banned(attempt(&gw, ip, "alice", "password123").await, 300 - 1).await;
    assert_eq!(
        gw.app().hasher.stats().started,
        before,
        "a banned attempt ran argon2"
    );

    clock.advance(4 * MINUTE);
    assert_banned(attempt(&gw, ip, "alice", "password123").await, 60 - 1).await;
    clock.advance(MINUTE);
    assert_eq!(
        status(&gw, ip, "alice", "password123").await,
        200,
        "ban over"
    );
}

#[tokio::test]
async fn banned_browser_gets_a_429_page_with_retry_after() {
    let upstream = EchoUpstream::start().await;
    let (_clock, shared) = manual_clock();
    let gw = gateway(&upstream, shared).await;
    for _ in 0..3 {
        assert_eq!(status(&gw, "203.0.113.10", "alice", "wrong").await, 401);
    }
    let resp = post_login(
        &gw,
        &[("username", "alice"), ("password", "password123")],
        Client::Browser,
        &[("x-forwarded-for", "203.0.113.10")],
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "300");
    let page = text(resp).await;
    assert!(page.contains("Too many attempts"), "{page}");
}

#[tokio::test]
async fn failures_outside_find_time_do_not_add_up() {
    let upstream = EchoUpstream::start().await;
    let (clock, shared) = manual_clock();
    let gw = gateway(&upstream, shared).await;
    let ip = "203.0.113.10";
    for _ in 0..2 {
        assert_eq!(status(&gw, ip, "alice", "wrong").await, 401);
    }
    clock.advance(2 * MINUTE + SECOND);
    assert_eq!(status(&gw, ip, "alice", "wrong").await, 401);
    assert_eq!(status(&gw, ip, "alice", "password123").await, 200);
}

#[tokio::test]
async fn rotating_client_addresses_still_bans_the_account() {
    let upstream = EchoUpstream::start().await;
    let (_clock, shared) = manual_clock();
    let gw = gateway(&upstream, shared).await;
    for ip in ["203.0.113.1", "203.0.113.2", "198.51.100.3"] {
        assert_eq!(status(&gw, ip, "alice", "wrong").await, 401, "{ip}");
    }
    // A fresh address, the right password: the account is banned.
    assert_banned(
        attempt(&gw, "192.0.2.44", "alice", "password123").await,
        300,
    )
    .await;
    // Case and spaces do not make it another account.
    assert_banned(
        attempt(&gw, "192.0.2.45", " ALICE ", "password123").await,
        300,
    )
    .await;
    // Another account from a fresh address is not affected.
    assert_eq!(status(&gw, "192.0.2.46", "bob", "password123").await, 200);
}

#[tokio::test]
async fn one_address_against_many_accounts_bans_the_address() {
    let upstream = EchoUpstream::start().await;
    let (_clock, shared) = manual_clock();
    let gw = gateway(&upstream, shared).await;
    let attacker = "198.51.100.7";
    for user in ["carol", "dave", "erin"] {
        assert_eq!(status(&gw, attacker, user, "guess").await, 401, "{user}");
    }
    // The address is banned, whatever account it tries, right password or not.
    assert_banned(attempt(&gw, attacker, "alice", "password123").await, 300).await;
    assert_banned(attempt(&gw, attacker, "bob", "password123").await, 300).await;
    // Those accounts are not banned for everyone else.
    assert_eq!(
        status(&gw, "198.51.100.8", "alice", "password123").await,
        200
    );
}

#[tokio::test]
async fn ipv6_clients_are_counted_per_64_network() {
    let upstream = EchoUpstream::start().await;
    let (_clock, shared) = manual_clock();
    let gw = gateway(&upstream, shared).await;
    for (ip, user) in [
        ("2001:db8:1:2::1", "carol"),
        ("2001:db8:1:2::ffff", "dave"),
        ("2001:db8:1:2:abcd::9", "erin"),
    ] {
        assert_eq!(status(&gw, ip, user, "guess").await, 401, "{ip}");
    }
    assert_banned(
        attempt(&gw, "2001:db8:1:2:ffff::1", "alice", "password123").await,
        300,
    )
    .await;
    assert_eq!(
        status(&gw, "2001:db8:1:3::1", "alice", "password123").await,
        200
    );
}

#[tokio::test]
async fn successful_login_does_not_reset_the_address_counter() {
    // Otherwise an attacker with one valid account could guess forever from one address.
    let upstream = EchoUpstream::start().await;
    let (_clock, shared) = manual_clock();
    let gw = gateway(&upstream, shared).await;
    let ip = "203.0.113.20";
    assert_eq!(status(&gw, ip, "carol", "guess").await, 401);
    assert_eq!(status(&gw, ip, "bob", "password123").await, 200);
    assert_eq!(status(&gw, ip, "dave", "guess").await, 401);
    assert_eq!(status(&gw, ip, "bob", "password123").await, 200);
    assert_eq!(status(&gw, ip, "erin", "guess").await, 401);
    assert_banned(attempt(&gw, ip, "bob", "password123").await, 300).await;
}

#[tokio::test]
async fn bans_survive_a_restart() {
    let upstream = EchoUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (_clock, shared) = manual_clock();
    let start = |clock: stepgate::clock::SharedClock| {
        Gateway::builder()
            .upstream(&upstream.url())
            .extra_toml(REGULATION)
            .storage_dir(&store)
            .clock(clock)
            .start()
    };
    let gw = start(shared.clone()).await;
    create_user(&gw, "alice", "password123", &[]).await;
    for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        assert_eq!(status(&gw, ip, "alice", "wrong").await, 401);
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(30), gw.shutdown())
            .await
            .expect("shutdown timed out")
    );
    let gw = start(shared).await;
    assert_banned(
        attempt(&gw, "203.0.113.4", "alice", "password123").await,
        300,
    )
    .await;
}
