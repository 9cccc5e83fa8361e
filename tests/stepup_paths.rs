//! Path tricks never skip step-up: rules see the canonical path, so every spelling of
//! `/settings` is challenged (or refused as ambiguous), and nothing reaches the upstream.
//!
//! Case is the one thing canonicalisation keeps: `/Settings` reaches the upstream as sent. The
//! rules read paths both as written and in any case and the stricter answer wins, so the rule
//! for `^/settings` covers `/Settings` too (as a rule written `(?i)^/settings` does).

mod common;

use bytes::Bytes;
use serde_json::Value;

use common::auth::{BROWSER_ACCEPT, raw_status};
use common::mfa::Rig;
use common::stepup::SETTINGS_STEP_UP;
use common::stepup_users::alice_past_the_window;
use common::{raw_exchange, send_raw_path};

/// What an API client accepts.
const JSON: &str = "application/json";

/// `method path` with the path sent as is (see [`send_raw_path`]), with the session `cookie`
/// and `accept`.
async fn send_as(
    rig: &Rig,
    method: &str,
    path: &str,
    cookie: &str,
    accept: &str,
) -> http::Response<Bytes> {
    send_raw_path(
        rig.gw.addr(),
        method,
        path,
        &[("cookie", cookie), ("accept", accept)],
    )
    .await
}

/// Asserts that a raw answer is a 401 whose JSON body says `"error": "step_up_required"`, and
/// returns the body. `case` names the request in the failure message.
fn assert_raw_step_up_required(resp: &http::Response<Bytes>, case: &str) -> Value {
    let body = String::from_utf8_lossy(resp.body()).into_owned();
    assert_eq!(resp.status(), 401, "{case}: {body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["error"], "step_up_required", "{case}: {body}");
    body
}

/// Spellings of `/settings` (or of a path below it) that canonicalise to it: each is answered
/// with step-up (401) and the canonical path as `rd`.
const SETTINGS_SPELLINGS: [&str; 12] = [
    "/settings",
    "/public/../settings",
    "/public/../settings/",
    "//settings",
    "/./settings",
    "/%73ettings",
    "/%73%65%74%74%69%6E%67%73",
    "/settings/./x",
    "/settings/x/..",
    "/public/%2e%2e/settings",
    "/public/%2E%2E/settings",
    "///settings//x",
];

#[tokio::test]
async fn rejects_path_normalisation_tricks_that_would_skip_step_up() {
    let (rig, alice) = alice_past_the_window(SETTINGS_STEP_UP).await;
    // The control: a path the rule does not cover is forwarded.
    let resp = send_as(&rig, "GET", "/public/x", &alice.cookie, JSON).await;
    assert_eq!(resp.status(), 200);
    let forwarded = rig.upstream.requests();

    for path in SETTINGS_SPELLINGS {
        for method in ["GET", "POST", "DELETE"] {
            let resp = send_as(&rig, method, path, &alice.cookie, JSON).await;
            let body = assert_raw_step_up_required(&resp, &format!("{method} {path}"));
            let verify = body["verify_url"].as_str().expect("verify_url");
            assert!(
                verify.starts_with("/.stepgate/verify?rd=%2Fsettings"),
                "rd is the canonical path: {method} {path}: {verify}"
            );
        }
        // A browser is sent to verify with the canonical path as rd.
        let resp = send_as(&rig, "GET", path, &alice.cookie, BROWSER_ACCEPT).await;
        assert_eq!(resp.status(), 302, "browser {path}");
        let verify = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            verify.starts_with("/.stepgate/verify?rd=%2Fsettings"),
            "browser {path}: {verify}"
        );
    }
    assert_eq!(
        rig.upstream.requests(),
        forwarded,
        "no spelling of /settings reached the upstream"
    );
}

#[tokio::test]
async fn rejects_encoded_slash_and_backslash_spellings_of_the_step_up_path() {
    let (rig, alice) = alice_past_the_window(SETTINGS_STEP_UP).await;
    let forwarded = rig.upstream.requests();
    for path in [
        "/public%2F..%2Fsettings",
        "/public/..%2Fsettings",
        "/public/..%5Csettings",
        "/public\\..\\settings",
        "/settings%00",
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
            rig.gw.addr(),
            alice.cookie
        );
        let answer = raw_exchange(rig.gw.addr(), request.as_bytes()).await;
        let status = raw_status(&answer);
        // Ambiguous paths are refused before any rule is applied.
        assert_eq!(status, 400, "{path}: {}", String::from_utf8_lossy(&answer));
    }
    assert_eq!(rig.upstream.requests(), forwarded);
}

/// Letter case never loosens a rule: an application may route `/Settings` to its settings
/// page, so the rule written for `^/settings` asks for the step-up there too.
#[tokio::test]
async fn a_different_case_of_a_step_up_path_meets_the_step_up() {
    let (rig, alice) = alice_past_the_window(SETTINGS_STEP_UP).await;
    let forwarded = rig.upstream.requests();
    for path in ["/settings", "/Settings", "/SETTINGS/x"] {
        let resp = send_as(&rig, "GET", path, &alice.cookie, JSON).await;
        assert_eq!(resp.status(), 401, "{path}");
    }
    assert_eq!(rig.upstream.requests(), forwarded);
    let resp = send_as(&rig, "GET", "/other", &alice.cookie, JSON).await;
    assert_eq!(resp.status(), 200, "the session itself is good");
}

#[tokio::test]
async fn case_insensitive_rule_catches_every_case_of_the_path() {
    let config = SETTINGS_STEP_UP.replace("^/settings(/|$)", "(?i)^/settings(/|$)");
    assert!(config.contains("(?i)"));
    let (rig, alice) = alice_past_the_window(&config).await;
    let forwarded = rig.upstream.requests();
    for path in [
        "/settings",
        "/Settings",
        "/SETTINGS/x",
        "/public/../SeTTings",
        "/%53ettings",
    ] {
        let resp = send_as(&rig, "GET", path, &alice.cookie, JSON).await;
        assert_raw_step_up_required(&resp, path);
    }
    assert_eq!(rig.upstream.requests(), forwarded);
    // And the window, once satisfied, opens every spelling.
    let cookie = common::stepup::api_verify_totp(&rig, &alice.cookie, &alice.secret).await;
    let resp = rig.get_app("/Settings", Some(&cookie)).await;
    assert_eq!(resp.status(), 200);
}
