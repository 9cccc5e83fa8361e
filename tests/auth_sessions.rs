//! Sessions through the running gateway: fixation, logout and replay, restarts, expiry with an
//! injected clock, malformed cookies, the session API and account changes.

mod common;

use std::time::Duration;

use reqwest::header::{COOKIE, HeaderValue};

use common::auth::{
    BROWSER_ACCEPT, Client, PREFIX, START, all_set_cookies, create_user, create_user_full, get,
    is_logged_in, json, location, login, login_with, logout, manual_clock, post_login, send,
    session_info, set_session_cookie, username,
};
use common::{EchoUpstream, Gateway, http_client};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Every proxied request needs a login.
const PROTECTED: &str = "[access]\ndefault_policy = \"one_factor\"\n";

/// An echo upstream behind a gateway where every proxied request needs a login.
async fn protected_gateway() -> (EchoUpstream, Gateway) {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml(PROTECTED)
        .start()
        .await;
    (upstream, gw)
}

/// An echo upstream behind a gateway with no access rules of its own.
async fn open_gateway() -> (EchoUpstream, Gateway) {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    (upstream, gw)
}

/// A gateway where every proxied request needs a login, keeping its data in `store`, so that
/// starting another one on the same `store` is a restart.
async fn protected_gateway_on(upstream: &EchoUpstream, store: &std::path::Path) -> Gateway {
    Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml(PROTECTED)
        .storage_dir(store)
        .start()
        .await
}

/// An empty POST to the portal page `path` (under the prefix) with `accept`, with the session
/// cookie when given.
async fn post_portal(
    gw: &Gateway,
    path: &str,
    accept: &str,
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut builder = http_client()
        .post(gw.url_for(&format!("{PREFIX}{path}")))
        .header("accept", accept);
    if let Some(cookie) = cookie {
        builder = builder.header(COOKIE, cookie);
    }
    send(builder).await
}

/// An empty POST to the portal page `path` (under the prefix) asking for JSON, with the session
/// cookie when given.
async fn post_json(gw: &Gateway, path: &str, cookie: Option<&str>) -> reqwest::Response {
    post_portal(gw, path, "application/json", cookie).await
}

/// Logs `name` in with "remember me" ticked; the session cookie as `name=value`.
async fn login_remembered(gw: &Gateway, name: &str, password: &str) -> String {
    login_with(
        gw,
        &[
            ("username", name),
            ("password", password),
            ("remember_me", "on"),
        ],
        &[],
    )
    .await
}

/// Logs alice in while the request carries `cookie` (a live, expired or planted session).
async fn login_alice_carrying(gw: &Gateway, cookie: &str) -> String {
    login_with(
        gw,
        &[("username", "alice"), ("password", "password123")],
        &[("cookie", cookie)],
    )
    .await
}

/// A protected request with `cookie`: is it let through? A refusal must be the "not logged in"
/// answer (302 to the login page for a browser, 401 for an API client), nothing else.
async fn reaches_app(gw: &Gateway, upstream: &EchoUpstream, cookie: &str) -> bool {
    let before = upstream.requests();
    let resp = get(gw, "/app/page", Some(cookie), Client::Api).await;
    match resp.status().as_u16() {
        200 => {
            assert_eq!(upstream.requests(), before + 1);
            true
        }
        401 => {
            assert_eq!(upstream.requests(), before, "refused but forwarded");
            assert_eq!(json(resp).await["error"], "authentication_required");
            false
        }
        other => panic!("protected request answered {other}"),
    }
}

/// The value part of a `name=value` cookie pair.
fn value(pair: &str) -> &str {
    pair.split_once('=').expect("name=value").1
}

// ---------------------------------------------------------------------------------------------
// Session fixation

#[tokio::test]
async fn rejects_session_fixation_by_renewing_the_id_at_login() {
    let (_upstream, gw) = open_gateway().await;
    create_user(&gw, "alice", "password123", &[]).await;
    let first = login(&gw, "alice", "password123").await;
    assert!(is_logged_in(&gw, &first).await);

    // Logging in again while carrying a live session: a new id, and the old one ends.
    let second = login_alice_carrying(&gw, &first).await;
    assert_ne!(value(&first), value(&second));
    assert!(
        !is_logged_in(&gw, &first).await,
        "the old id outlived the login"
    );
    assert!(is_logged_in(&gw, &second).await);
}

#[tokio::test]
async fn rejects_session_fixation_with_attacker_chosen_id() {
    let (_upstream, gw) = open_gateway().await;
    create_user(&gw, "alice", "password123", &[]).await;
    // Well-formed (43 base64url characters, 32 bytes) but never issued by the gateway.
    let planted = format!("stepgate_session={}", "Q".repeat(42) + "A");
    assert!(!is_logged_in(&gw, &planted).await);

    let issued = login_alice_carrying(&gw, &planted).await;
    assert_ne!(value(&issued), value(&planted));
    assert!(
        !is_logged_in(&gw, &planted).await,
        "the planted id was adopted"
    );
    assert!(is_logged_in(&gw, &issued).await);
}

// ---------------------------------------------------------------------------------------------
// Logout and replay

#[tokio::test]
async fn rejects_cookie_replay_after_logout() {
    let (upstream, gw) = protected_gateway().await;
    create_user(&gw, "alice", "password123", &[]).await;
    let cookie = login(&gw, "alice", "password123").await;
    let other = login(&gw, "alice", "password123").await;
    assert!(reaches_app(&gw, &upstream, &cookie).await);

    let resp = post_json(&gw, "/logout", Some(&cookie)).await;
    assert_eq!(resp.status(), 200);
    // The browser is told to drop the cookie.
    let cleared = all_set_cookies(resp.headers());
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("stepgate_session=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    assert_eq!(json(resp).await["status"], "logged_out");

    // Replaying the old cookie: not logged in, as a browser and as an API client.
    let resp = get(&gw, "/app/page", Some(&cookie), Client::Browser).await;
    assert_eq!(resp.status(), 302);
    assert!(
        location(&resp)
            .expect("Location")
            .starts_with("/.stepgate/login?rd=")
    );
    assert!(!reaches_app(&gw, &upstream, &cookie).await);
    // Only that session ended: the user's other session lives on.
    assert!(reaches_app(&gw, &upstream, &other).await);
}

#[tokio::test]
async fn html_logout_redirects_to_the_logout_page() {
    let (_upstream, gw) = open_gateway().await;
    create_user(&gw, "alice", "password123", &[]).await;
    let cookie = login(&gw, "alice", "password123").await;
    let resp = post_portal(&gw, "/logout", BROWSER_ACCEPT, Some(&cookie)).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp).as_deref(), Some("/.stepgate/logout"));
    assert!(!is_logged_in(&gw, &cookie).await);
}

#[tokio::test]
async fn logout_ends_every_session_that_came_with_it() {
    let (upstream, gw) = protected_gateway().await;
    create_user(&gw, "alice", "password123", &[]).await;
    create_user(&gw, "mallory", "password456", &[]).await;
    // A session of another account planted beside alice's makes the request nobody's; a
    // second session of alice's own (another cookie domain) is sent along too.
    let alice = login(&gw, "alice", "password123").await;
    let planted = login(&gw, "mallory", "password456").await;
    let resp = post_json(&gw, "/logout", Some(&format!("{planted}; {alice}"))).await;
    assert_eq!(resp.status(), 200);
    assert!(!reaches_app(&gw, &upstream, &alice).await);
    assert!(!reaches_app(&gw, &upstream, &planted).await);
    // Both accounts' logouts are in the audit trail, though the request was nobody's.
    let trail = gw.app().store.recent_audit(20).expect("audit");
    for name in ["alice", "mallory"] {
        assert!(
            trail
                .iter()
                .any(|e| e.kind == stepgate::auth::audit::AuditKind::Logout
                    && e.username.as_deref() == Some(name)),
            "{name}: {trail:#?}"
        );
    }

    let first = login(&gw, "alice", "password123").await;
    let second = login(&gw, "alice", "password123").await;
    let untouched = login(&gw, "alice", "password123").await;
    let resp = post_json(&gw, "/logout", Some(&format!("{first}; {second}"))).await;
    assert_eq!(resp.status(), 200);
    assert!(!reaches_app(&gw, &upstream, &first).await);
    assert!(!reaches_app(&gw, &upstream, &second).await);
    assert!(reaches_app(&gw, &upstream, &untouched).await);
}

#[tokio::test]
async fn logout_without_session_is_harmless() {
    let (_upstream, gw) = open_gateway().await;
    assert_eq!(logout(&gw, "stepgate_session=garbage").await, 200);
    let resp = post_json(&gw, "/logout", None).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn sessions_survive_restart_and_logouts_stay_final() {
    let upstream = EchoUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");

    let gw = protected_gateway_on(&upstream, &store).await;
    create_user(&gw, "alice", "password123", &[]).await;
    let logged_out = login(&gw, "alice", "password123").await;
    let live = login(&gw, "alice", "password123").await;
    assert_eq!(logout(&gw, &logged_out).await, 200);
    assert!(
        tokio::time::timeout(Duration::from_secs(30), gw.shutdown())
            .await
            .expect("shutdown timed out"),
        "shutdown did not drain"
    );

    let gw = protected_gateway_on(&upstream, &store).await;
    assert!(
        !reaches_app(&gw, &upstream, &logged_out).await,
        "a logged-out cookie came back to life after a restart"
    );
    assert!(
        reaches_app(&gw, &upstream, &live).await,
        "a live session did not survive the restart"
    );
}

// ---------------------------------------------------------------------------------------------
// Expiry, with the clock under the test's control

async fn clocked_gateway(upstream: &EchoUpstream, clock: stepgate::clock::SharedClock) -> Gateway {
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml(PROTECTED)
        .clock(clock)
        .start()
        .await;
    create_user(&gw, "alice", "password123", &[]).await;
    gw
}

#[tokio::test]
async fn session_ends_after_an_hour_of_inactivity() {
    let upstream = EchoUpstream::start().await;
    let (clock, shared) = manual_clock();
    let gw = clocked_gateway(&upstream, shared).await;
    let cookie = login(&gw, "alice", "password123").await;

    clock.advance(HOUR - MINUTE);
    assert!(reaches_app(&gw, &upstream, &cookie).await, "59 min idle");
    clock.advance(HOUR);
    assert!(!reaches_app(&gw, &upstream, &cookie).await, "60 min idle");
    // Gone for good, not just asleep.
    clock.set(START);
    assert!(!reaches_app(&gw, &upstream, &cookie).await);
}

#[tokio::test]
async fn activity_keeps_a_session_alive() {
    let upstream = EchoUpstream::start().await;
    let (clock, shared) = manual_clock();
    let gw = clocked_gateway(&upstream, shared).await;
    let cookie = login(&gw, "alice", "password123").await;
    // Five requests 50 minutes apart: over four hours in all, never an hour idle.
    for i in 0..5 {
        clock.advance(50 * MINUTE);
        assert!(reaches_app(&gw, &upstream, &cookie).await, "request {i}");
    }
}

#[tokio::test]
async fn session_ends_at_the_absolute_limit_even_when_active() {
    let upstream = EchoUpstream::start().await;
    let (clock, shared) = manual_clock();
    let gw = clocked_gateway(&upstream, shared).await;
    let cookie = login(&gw, "alice", "password123").await;
    // Active every 50 minutes up to 11 h 40 min.
    for i in 0..14 {
        clock.advance(50 * MINUTE);
        assert!(reaches_app(&gw, &upstream, &cookie).await, "request {i}");
    }
    clock.advance(19 * MINUTE);
    assert!(reaches_app(&gw, &upstream, &cookie).await, "11 h 59 min");
    clock.advance(MINUTE);
    assert!(!reaches_app(&gw, &upstream, &cookie).await, "12 h");
}

#[tokio::test]
async fn remember_me_lasts_thirty_days_without_inactivity_limit() {
    let upstream = EchoUpstream::start().await;
    let (clock, shared) = manual_clock();
    let gw = clocked_gateway(&upstream, shared).await;
    let remembered = login_remembered(&gw, "alice", "password123").await;
    let normal = login(&gw, "alice", "password123").await;

    clock.advance(10 * DAY);
    assert!(
        !reaches_app(&gw, &upstream, &normal).await,
        "normal session, 10 days idle"
    );
    assert!(
        reaches_app(&gw, &upstream, &remembered).await,
        "10 days idle"
    );
    clock.set(START.plus(30 * DAY - MINUTE));
    assert!(
        reaches_app(&gw, &upstream, &remembered).await,
        "20 days idle, 29 d 23 h 59 min"
    );
    clock.advance(MINUTE);
    assert!(!reaches_app(&gw, &upstream, &remembered).await, "30 days");
}

#[tokio::test]
async fn shorter_configured_lifetimes_apply() {
    let upstream = EchoUpstream::start().await;
    let (clock, shared) = manual_clock();
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml(PROTECTED)
        .extra_toml("[session]\nabsolute = \"30m\"\ninactivity = \"5m\"\n")
        .clock(shared)
        .start()
        .await;
    create_user(&gw, "alice", "password123", &[]).await;

    let idle = login(&gw, "alice", "password123").await;
    clock.advance(4 * MINUTE);
    assert!(reaches_app(&gw, &upstream, &idle).await);
    clock.advance(5 * MINUTE);
    assert!(!reaches_app(&gw, &upstream, &idle).await, "5 min idle");

    let busy = login(&gw, "alice", "password123").await;
    for _ in 0..7 {
        clock.advance(4 * MINUTE);
        assert!(reaches_app(&gw, &upstream, &busy).await);
    }
    clock.advance(2 * MINUTE);
    assert!(!reaches_app(&gw, &upstream, &busy).await, "30 min absolute");
}

// ---------------------------------------------------------------------------------------------
// Malformed, tampered, expired and unknown cookies

/// `GET path` with `cookie` as the whole `Cookie` header, and `Accept` when given.
async fn get_with_cookie(
    gw: &Gateway,
    path: &str,
    accept: Option<&str>,
    cookie: &HeaderValue,
) -> reqwest::Response {
    let mut builder = http_client().get(gw.url_for(path));
    if let Some(accept) = accept {
        builder = builder.header("accept", accept);
    }
    send(builder.header(COOKIE, cookie.clone())).await
}

/// `cookie` (a whole `Cookie` header value) must be "not logged in" everywhere: a browser is sent
/// to the login page, an API client gets 401, the session API says 401. Never 2xx, never 500.
async fn assert_not_logged_in(gw: &Gateway, upstream: &EchoUpstream, cookie: HeaderValue) {
    let before = upstream.requests();
    let browser = get_with_cookie(gw, "/app", Some(BROWSER_ACCEPT), &cookie).await;
    assert_eq!(browser.status(), 302, "browser with {cookie:?}");
    let api = get_with_cookie(gw, "/app", Some("application/json"), &cookie).await;
    assert_eq!(api.status(), 401, "API client with {cookie:?}");
    let session_api = format!("{PREFIX}/api/session");
    let session = get_with_cookie(gw, &session_api, None, &cookie).await;
    assert_eq!(session.status(), 401, "session API with {cookie:?}");
    assert_eq!(upstream.requests(), before, "forwarded with {cookie:?}");
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The same 32 bytes with a non-zero unused bit in the last character: a lenient decoder would
/// read it as the genuine id.
fn with_trailing_bits(id: &str) -> String {
    let last = id.as_bytes()[42];
    let index = BASE64URL
        .iter()
        .position(|c| *c == last)
        .expect("base64url");
    assert_eq!(
        index % 4,
        0,
        "43rd character carries 4 data bits and 2 zero bits"
    );
    format!("{}{}", &id[..42], BASE64URL[index + 1] as char)
}

fn flip_one_char(id: &str) -> String {
    let mut chars: Vec<char> = id.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test]
async fn malformed_and_tampered_cookies_are_not_logged_in() {
    let (upstream, gw) = protected_gateway().await;
    create_user(&gw, "alice", "password123", &[]).await;
    let valid = login(&gw, "alice", "password123").await;
    let id = value(&valid).to_owned();
    assert_eq!(id.len(), 43);

    let cases: Vec<String> = vec![
        "stepgate_session=garbage".into(),
        "stepgate_session=".into(),
        "stepgate_session".into(),
        "stepgate_session=\"\"".into(),
        format!("stepgate_session={}", "A".repeat(5000)),
        // Wrong length: 42 and 44 characters, 16 bytes, padded.
        format!("stepgate_session={}", &id[..42]),
        format!("stepgate_session={id}A"),
        "stepgate_session=AAAAAAAAAAAAAAAAAAAAAA".into(),
        format!("stepgate_session={id}="),
        // Standard base64 alphabet instead of base64url, and non-canonical trailing bits.
        format!("stepgate_session=+/{}", &id[2..]),
        format!("stepgate_session={}", with_trailing_bits(&id)),
        // A valid id with one character flipped.
        format!("stepgate_session={}", flip_one_char(&id)),
        // The id under another cookie name, or with the name in another case.
        format!("session={id}"),
        format!("STEPGATE_SESSION={id}"),
        format!("__Host-stepgate_session={id}"),
        // Several bad cookies at once.
        "stepgate_session=garbage; stepgate_session=more-garbage".into(),
        format!(
            "stepgate_session={}; stepgate_session=x",
            flip_one_char(&id)
        ),
        ";;;===;".into(),
    ];
    for case in cases {
        let header = HeaderValue::from_str(&case).expect("header value");
        assert_not_logged_in(&gw, &upstream, header).await;
    }
    // Bytes that are not text.
    let header = HeaderValue::from_bytes(b"stepgate_session=\xff\xfe\x80").expect("obs-text");
    assert_not_logged_in(&gw, &upstream, header).await;

    // The genuine cookie still works after all that.
    assert!(is_logged_in(&gw, &valid).await);
}

/// A browser sends a cookie's UTF-8 value as raw bytes, in the same `Cookie` header as the
/// session's. That neighbour neither hides the session from the gateway nor lets its id through
/// to the application, on a protected path or a public one.
#[tokio::test]
async fn a_neighbour_cookie_that_is_not_text_neither_hides_nor_leaks_the_session() {
    for (gateway, expected_user) in [
        (protected_gateway().await, Some("alice")),
        (open_gateway().await, None),
    ] {
        let (upstream, gw) = gateway;
        create_user(&gw, "alice", "password123", &[]).await;
        let valid = login(&gw, "alice", "password123").await;
        let mut raw = b"pref=\xc3\xa9; ".to_vec();
        raw.extend_from_slice(valid.as_bytes());
        let header = HeaderValue::from_bytes(&raw).expect("obs-text");
        let resp = get_with_cookie(&gw, "/app", Some("application/json"), &header).await;
        assert_eq!(resp.status(), 200);
        let seen = upstream.last_request().expect("forwarded");
        let cookies = seen.header_all("cookie").join("; ");
        assert!(
            !cookies.contains("stepgate_session"),
            "session id forwarded: {cookies}"
        );
        assert!(
            cookies.contains("pref="),
            "the other cookie is kept: {cookies}"
        );
        if let Some(user) = expected_user {
            assert_eq!(seen.header("remote-user"), Some(user));
        }
    }
}

#[tokio::test]
async fn duplicated_cookies_with_one_valid_id_log_in() {
    // A browser may hold a stale cookie next to the current one (other path or domain): the
    // gateway accepts any live id among the values sent.
    let (_upstream, gw) = open_gateway().await;
    create_user(&gw, "alice", "password123", &[]).await;
    let valid = login(&gw, "alice", "password123").await;
    let both = format!("stepgate_session=stale; {valid}");
    assert!(is_logged_in(&gw, &both).await);
}

/// A browser sends a few session cookies at most: a request with more than eight is nobody's,
/// without a lookup for each (an unknown id may cost a store read). Eight are still read.
#[tokio::test]
async fn more_than_eight_session_cookies_are_nobodys() {
    let (upstream, gw) = protected_gateway().await;
    create_user(&gw, "alice", "password123", &[]).await;
    let alice = login(&gw, "alice", "password123").await;
    let stale = |n: usize| -> String {
        (0..n)
            .map(|i| format!("stepgate_session={}", format!("{i:02}").repeat(21) + "A"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let eight = format!("{}; {alice}", stale(7));
    assert!(reaches_app(&gw, &upstream, &eight).await);
    let nine = format!("{}; {alice}", stale(8));
    assert_not_logged_in(
        &gw,
        &upstream,
        HeaderValue::from_str(&nine).expect("header"),
    )
    .await;
    let nine_first = format!("{alice}; {}", stale(8));
    assert_not_logged_in(
        &gw,
        &upstream,
        HeaderValue::from_str(&nine_first).expect("header"),
    )
    .await;
}

/// A cookie planted by a sibling application on the cookie domain (its longer path puts it
/// first) must not make a user act as the planter: live sessions of two accounts in one request
/// make it nobody's. Two live sessions of the same account are that account's.
#[tokio::test]
async fn live_sessions_of_two_accounts_in_one_request_are_nobodys() {
    let (upstream, gw) = protected_gateway().await;
    create_user(&gw, "alice", "password123", &[]).await;
    create_user(&gw, "mallory", "password123", &[]).await;
    let alice = login(&gw, "alice", "password123").await;
    let alice_again = login(&gw, "alice", "password123").await;
    let mallory = login(&gw, "mallory", "password123").await;
    for both in [
        format!("{mallory}; {alice}"),
        format!("{alice}; {mallory}"),
        format!("{mallory}; stepgate_session=stale; {alice}"),
    ] {
        assert_not_logged_in(
            &gw,
            &upstream,
            HeaderValue::from_str(&both).expect("header"),
        )
        .await;
    }
    assert!(reaches_app(&gw, &upstream, &format!("{alice}; {alice_again}")).await);
    let seen = upstream.last_request().expect("forwarded");
    assert_eq!(seen.header("remote-user"), Some("alice"));
    // Each alone is still its owner's.
    assert!(is_logged_in(&gw, &alice).await);
    assert!(is_logged_in(&gw, &mallory).await);
}

#[tokio::test]
async fn expired_cookie_is_not_logged_in() {
    let upstream = EchoUpstream::start().await;
    let (clock, shared) = manual_clock();
    let gw = clocked_gateway(&upstream, shared).await;
    let cookie = login(&gw, "alice", "password123").await;
    clock.advance(2 * HOUR);
    let header = HeaderValue::from_str(&cookie).expect("header");
    assert_not_logged_in(&gw, &upstream, header).await;
}

#[tokio::test]
async fn unknown_well_formed_cookie_is_not_logged_in() {
    let (upstream, gw) = protected_gateway().await;
    let cookie = format!("stepgate_session={}", "w".repeat(42) + "A");
    let header = HeaderValue::from_str(&cookie).expect("header");
    assert_not_logged_in(&gw, &upstream, header).await;
}

// ---------------------------------------------------------------------------------------------
// The session API

#[tokio::test]
async fn session_api_is_401_without_a_session() {
    let (_upstream, gw) = open_gateway().await;
    let (status, body) = session_info(&gw, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["authenticated"], false);
    assert!(body.get("user").is_none(), "{body}");
}

#[tokio::test]
async fn session_api_describes_the_session() {
    let upstream = EchoUpstream::start().await;
    let (clock, shared) = manual_clock();
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .clock(shared)
        .start()
        .await;
    create_user_full(
        &gw,
        "alice",
        "password123",
        &["admins", "users"],
        Some("Alice Liddell"),
        Some("alice@example.com"),
    )
    .await;
    let cookie = login(&gw, "alice", "password123").await;

    let (status, body) = session_info(&gw, Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(body["authenticated"], true);
    assert_eq!(
        body["user"],
        serde_json::json!({
            "username": "alice",
            "display_name": "Alice Liddell",
            "email": "alice@example.com",
            "groups": ["admins", "users"],
        })
    );
    assert_eq!(body["auth_level"], "one_factor");
    // A normal session: the inactivity limit comes first (START is 2026-01-05T00:00:00Z).
    assert_eq!(body["expires_at"], "2026-01-05T01:00:00Z");

    // Activity moves the end forward.
    clock.advance(30 * MINUTE);
    let (_, body) = session_info(&gw, Some(&cookie)).await;
    assert_eq!(body["expires_at"], "2026-01-05T01:30:00Z");
    // ... but never past the absolute limit.
    for _ in 0..22 {
        clock.advance(30 * MINUTE);
        assert_eq!(session_info(&gw, Some(&cookie)).await.0, 200);
    }
    let (status, body) = session_info(&gw, Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_at"], "2026-01-05T12:00:00Z");

    // A remember-me session ends at its absolute limit only.
    let remembered = login_remembered(&gw, "alice", "password123").await;
    let (_, body) = session_info(&gw, Some(&remembered)).await;
    assert_eq!(body["auth_level"], "one_factor");
    assert_eq!(body["expires_at"], "2026-02-04T11:30:00Z");
}

#[tokio::test]
async fn session_api_omits_nothing_for_a_user_without_email() {
    let (_upstream, gw) = open_gateway().await;
    create_user(&gw, "bob", "password123", &[]).await;
    let cookie = login(&gw, "bob", "password123").await;
    let (status, body) = session_info(&gw, Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["display_name"], "bob");
    assert_eq!(body["user"]["email"], serde_json::Value::Null);
    assert_eq!(body["user"]["groups"], serde_json::json!([]));
    let expires = body["expires_at"].as_str().expect("expires_at string");
    assert!(
        expires.len() == 20 && expires.ends_with('Z') && expires.as_bytes()[10] == b'T',
        "not RFC 3339 UTC: {expires}"
    );
}

// ---------------------------------------------------------------------------------------------
// Account changes end sessions at once

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_at_once() {
    let (upstream, gw) = protected_gateway().await;
    create_user(&gw, "alice", "password123", &[]).await;
    create_user(&gw, "bob", "password123", &[]).await;
    let alice = login(&gw, "alice", "password123").await;
    let alice_remembered = login_remembered(&gw, "alice", "password123").await;
    let bob = login(&gw, "bob", "password123").await;
    assert!(reaches_app(&gw, &upstream, &alice).await);

    gw.app()
        .users
        .set_disabled(&username("alice"), true)
        .expect("disable");
    assert!(!reaches_app(&gw, &upstream, &alice).await);
    assert!(!reaches_app(&gw, &upstream, &alice_remembered).await);
    assert!(
        reaches_app(&gw, &upstream, &bob).await,
        "another user was affected"
    );

    // Enabling the account again does not bring old sessions back.
    gw.app()
        .users
        .set_disabled(&username("alice"), false)
        .expect("enable");
    assert!(!reaches_app(&gw, &upstream, &alice).await);
}

#[tokio::test]
async fn deleting_a_user_ends_their_sessions_at_once() {
    let (upstream, gw) = protected_gateway().await;
    create_user(&gw, "alice", "password123", &[]).await;
    let cookie = login(&gw, "alice", "password123").await;
    assert!(reaches_app(&gw, &upstream, &cookie).await);

    gw.app().users.delete(&username("alice")).expect("delete");
    assert!(!reaches_app(&gw, &upstream, &cookie).await);

    // A new account under the same name does not inherit the old sessions.
    create_user(&gw, "alice", "other-password", &[]).await;
    assert!(!reaches_app(&gw, &upstream, &cookie).await);
}

#[tokio::test]
async fn password_change_ends_sessions_at_once() {
    let (upstream, gw) = protected_gateway().await;
    create_user(&gw, "alice", "password123", &[]).await;
    let cookie = login(&gw, "alice", "password123").await;
    let hash = gw
        .app()
        .hasher
        .hash(stepgate::auth::password::Password::new(
            "new-password-456".into(),
        ))
        .await
        .expect("hash");
    gw.app()
        .users
        .set_password(&username("alice"), hash)
        .expect("set password");
    assert!(!reaches_app(&gw, &upstream, &cookie).await);
    let resp = post_login(
        &gw,
        &[("username", "alice"), ("password", "password123")],
        Client::Api,
        &[],
    )
    .await;
    assert_eq!(resp.status(), 401, "the old password still works");
    assert!(set_session_cookie(resp.headers()).is_none());
    login(&gw, "alice", "new-password-456").await;
}

#[tokio::test]
async fn signing_out_other_sessions_keeps_this_one_and_other_users() {
    let (upstream, gw) = protected_gateway().await;
    create_user(&gw, "alice", "password123", &[]).await;
    create_user(&gw, "bob", "password123", &[]).await;
    let this = login(&gw, "alice", "password123").await;
    let others = [
        login(&gw, "alice", "password123").await,
        login(&gw, "alice", "password123").await,
    ];
    let bob = login(&gw, "bob", "password123").await;

    let resp = post_json(&gw, "/settings/sessions/revoke-others", Some(&this)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["revoked"], 2);

    assert!(
        reaches_app(&gw, &upstream, &this).await,
        "this browser stays"
    );
    for other in &others {
        assert!(
            !reaches_app(&gw, &upstream, other).await,
            "another session lives on"
        );
    }
    assert!(
        reaches_app(&gw, &upstream, &bob).await,
        "another user was affected"
    );

    // Nothing is left to sign out; without a session the request is refused.
    let resp = post_json(&gw, "/settings/sessions/revoke-others", Some(&this)).await;
    assert_eq!(json(resp).await["revoked"], 0);
    let resp = post_json(&gw, "/settings/sessions/revoke-others", None).await;
    assert_eq!(resp.status(), 401);
}

/// The session key named by a `stepgate_session=...` cookie pair.
fn session_key(cookie: &str) -> stepgate::auth::session::SessionKey {
    let value = cookie.split_once('=').expect("name=value").1;
    stepgate::auth::session::SessionId::parse(value)
        .expect("a session id")
        .key()
}

#[tokio::test]
async fn a_session_whose_account_vanished_or_was_disabled_behind_the_gateways_back_ends() {
    // Not possible through the gateway, its control socket or the command line (they all end
    // the sessions with the account): the store is changed directly while the gateway is down.
    let upstream = EchoUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store_path = dir.path().join("store");
    let gw = protected_gateway_on(&upstream, &store_path).await;
    create_user(&gw, "alice", "password123", &[]).await;
    create_user(&gw, "bob", "password123", &[]).await;
    let alice = login(&gw, "alice", "password123").await;
    let bob = login(&gw, "bob", "password123").await;
    assert!(gw.shutdown().await, "drained");

    {
        let store = stepgate::store::Store::open(&store_path).expect("store");
        assert!(store.delete_user(&username("alice")).expect("delete"));
        store
            .modify_user(&username("bob"), |bob| bob.disabled = true)
            .expect("disable");
        store.flush().expect("flush");
    }

    let gw = protected_gateway_on(&upstream, &store_path).await;
    for (who, cookie) in [("alice", &alice), ("bob", &bob)] {
        assert!(
            gw.app()
                .store
                .get_session(&session_key(cookie))
                .expect("read")
                .is_some(),
            "{who}'s session is still stored before its next request"
        );
        assert!(
            !reaches_app(&gw, &upstream, cookie).await,
            "{who} let through"
        );
        assert!(
            gw.app()
                .store
                .get_session(&session_key(cookie))
                .expect("read")
                .is_none(),
            "{who}'s session outlived the account"
        );
    }
}
