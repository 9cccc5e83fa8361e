//! The step-up window on a fixed clock: satisfied until its last millisecond, expired at its
//! exact end, `access.default_step_up` for rules without their own window, the windows
//! reported by `{prefix}/api/session`, and `Remote-Auth-Time` on forwarded requests.

mod common;

use std::time::Duration;

use serde_json::json;

use common::ReceivedRequest;
use common::answers::assert_step_up_required;
use common::auth::{Client, get, get_with};
use common::mfa::{MINUTE, Rig};
use common::stepup::{SETTINGS_STEP_UP, WINDOW, api_verify_totp, fresh_totp_user};
use common::stepup_users::password_only_login;

const MILLI: Duration = Duration::from_millis(1);

/// For each `(path, expected status)` in order: `GET path` as an API client with `cookie`.
async fn assert_statuses(rig: &Rig, cookie: Option<&str>, cases: &[(&str, u16)]) {
    for &(path, expected) in cases {
        let status = rig.get_app(path, cookie).await.status();
        assert_eq!(status, expected, "GET {path}");
    }
}

/// The headers the upstream received that read `Remote-Auth-Time` once case is ignored and
/// `_` and `.` are taken for `-`.
fn auth_time_headers(seen: &ReceivedRequest) -> Vec<(&str, &str)> {
    seen.headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().replace(['_', '.'], "-") == "remote-auth-time")
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

#[tokio::test]
async fn window_is_satisfied_until_its_last_millisecond_and_expires_at_its_end() {
    let rig = Rig::start(SETTINGS_STEP_UP).await;
    let alice = fresh_totp_user(&rig, "alice").await;

    rig.clock.set(alice.verified_at.plus(WINDOW - MILLI));
    let resp = rig.get_app("/settings", Some(&alice.cookie)).await;
    assert_eq!(resp.status(), 200, "one millisecond before the end");
    let forwarded = rig.upstream.requests();

    rig.clock.set(alice.verified_at.plus(WINDOW));
    let resp = rig.get_app("/settings", Some(&alice.cookie)).await;
    assert_step_up_required(resp, "at the end of the window").await;
    assert_eq!(rig.upstream.requests(), forwarded, "never sent upstream");

    // The rest of the app stays one login away, and the session is still alive.
    let resp = rig.get_app("/dashboard", Some(&alice.cookie)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(rig.upstream.requests(), forwarded + 1);
}

#[tokio::test]
async fn each_verification_starts_a_new_window() {
    let rig = Rig::start(SETTINGS_STEP_UP).await;
    let alice = fresh_totp_user(&rig, "alice").await;
    rig.clock.set(alice.verified_at.plus(WINDOW));
    assert_eq!(
        rig.get_app("/settings", Some(&alice.cookie)).await.status(),
        401
    );

    let again_at = rig.now();
    let cookie = api_verify_totp(&rig, &alice.cookie, &alice.secret).await;
    rig.clock.set(again_at.plus(WINDOW - MILLI));
    assert_eq!(rig.get_app("/settings", Some(&cookie)).await.status(), 200);
    rig.clock.set(again_at.plus(WINDOW));
    assert_eq!(rig.get_app("/settings", Some(&cookie)).await.status(), 401);
}

#[tokio::test]
async fn a_clock_set_back_does_not_extend_the_window() {
    let rig = Rig::start(SETTINGS_STEP_UP).await;
    let alice = fresh_totp_user(&rig, "alice").await;
    // Time before the verification: the window is not "negative and therefore fresh".
    rig.clock.set(alice.verified_at.minus(MINUTE));
    let resp = rig.get_app("/settings", Some(&alice.cookie)).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(rig.upstream.requests(), 0);
}

const DEFAULT_STEP_UP: &str = r#"
[access]
default_policy = "one_factor"
default_step_up = "10m"

[[access.rules]]
path = "^/public(/|$)"
policy = "bypass"

[[access.rules]]
path = "^/quick(/|$)"
policy = "one_factor"
step_up = "1m"

[[access.rules]]
path = "^/team(/|$)"
policy = "one_factor"
"#;

#[tokio::test]
async fn default_step_up_applies_to_rules_without_their_own_window() {
    let rig = Rig::start(DEFAULT_STEP_UP).await;
    let alice = fresh_totp_user(&rig, "alice").await;
    let at = alice.verified_at;
    let cookie = Some(alice.cookie.as_str());

    // Two minutes on: the rule with its own 1m window wants a new check; the others (a rule
    // without a window, and no rule at all) use the 10m default.
    rig.clock.set(at.plus(2 * MINUTE));
    assert_statuses(
        &rig,
        cookie,
        &[("/quick", 401), ("/team", 200), ("/other", 200)],
    )
    .await;

    rig.clock.set(at.plus(10 * MINUTE - MILLI));
    assert_statuses(&rig, cookie, &[("/team", 200)]).await;
    rig.clock.set(at.plus(10 * MINUTE));
    let forwarded = rig.upstream.requests();
    for path in ["/team", "/other", "/quick"] {
        let resp = rig.get_app(path, cookie).await;
        assert_step_up_required(resp, path).await;
    }
    assert_eq!(rig.upstream.requests(), forwarded);
    // A bypass rule authenticates nobody, so there is nothing to step up.
    assert_statuses(&rig, cookie, &[("/public", 200)]).await;
    assert_statuses(&rig, None, &[("/public", 200)]).await;
}

const TWO_WINDOWS: &str = r#"
[access]
default_policy = "one_factor"

[[access.rules]]
path = "^/settings(/|$)"
policy = "one_factor"
step_up = "5m"

[[access.rules]]
path = "^/billing(/|$)"
policy = "one_factor"
step_up = "15m"

[[access.rules]]
path = "^/keys(/|$)"
policy = "two_factor"
step_up = "5m"
"#;

#[tokio::test]
async fn api_session_reports_each_window_and_until_when_it_is_satisfied() {
    let rig = Rig::start(TWO_WINDOWS).await;
    let alice = fresh_totp_user(&rig, "alice").await;
    // The manual clock starts at 2026-01-05T00:00:00Z; enrolment took one TOTP step.
    assert_eq!(alice.verified_at.to_rfc3339(), "2026-01-05T00:00:30Z");

    let info = rig.session_ok(&alice.cookie).await;
    assert_eq!(info["second_factor_at"], "2026-01-05T00:00:30Z", "{info}");
    assert_eq!(
        info["step_up"],
        json!([
            {"window": "5m", "window_seconds": 300, "satisfied_until": "2026-01-05T00:05:30Z"},
            {"window": "15m", "window_seconds": 900, "satisfied_until": "2026-01-05T00:15:30Z"},
        ]),
        "one entry per distinct window, shortest first: {info}"
    );

    rig.clock.set(alice.verified_at.plus(WINDOW));
    let info = rig.session_ok(&alice.cookie).await;
    assert_eq!(
        info["step_up"],
        json!([
            {"window": "5m", "window_seconds": 300, "satisfied_until": null},
            {"window": "15m", "window_seconds": 900, "satisfied_until": "2026-01-05T00:15:30Z"},
        ]),
        "{info}"
    );
    // What the API says is what the gateway does.
    let cookie = Some(alice.cookie.as_str());
    assert_statuses(&rig, cookie, &[("/settings", 401), ("/billing", 200)]).await;
}

#[tokio::test]
async fn api_session_of_a_user_never_verified_reports_no_window_satisfied() {
    let rig = Rig::start(TWO_WINDOWS).await;
    let cookie = password_only_login(&rig, "bob").await;
    let info = rig.session_ok(&cookie).await;
    assert_eq!(info["second_factor_at"], serde_json::Value::Null, "{info}");
    let entries = info["step_up"].as_array().expect("step_up array");
    assert_eq!(entries.len(), 2, "{info}");
    for entry in entries {
        assert_eq!(entry["satisfied_until"], serde_json::Value::Null, "{info}");
    }
}

#[tokio::test]
async fn api_session_has_an_empty_step_up_list_without_step_up_rules() {
    let rig = Rig::start("[access]\ndefault_policy = \"one_factor\"\n").await;
    let alice = fresh_totp_user(&rig, "alice").await;
    let info = rig.session_ok(&alice.cookie).await;
    assert_eq!(info["step_up"], json!([]), "{info}");
    assert_eq!(info["second_factor_at"], "2026-01-05T00:00:30Z", "{info}");
}

/// Client-sent spellings of `Remote-Auth-Time` the gateway must drop.
const FORGED_AUTH_TIME: [(&str, &str); 4] = [
    ("Remote-Auth-Time", "2099-01-01T00:00:00Z"),
    ("remote_auth_time", "2099-01-02T00:00:00Z"),
    ("REMOTE.AUTH.TIME", "2099-01-03T00:00:00Z"),
    ("Remote-auth_Time", "2099-01-04T00:00:00Z"),
];

#[tokio::test]
async fn remote_auth_time_is_the_verification_time_and_never_the_clients() {
    let rig = Rig::start(SETTINGS_STEP_UP).await;
    let alice = fresh_totp_user(&rig, "alice").await;
    rig.advance(2 * MINUTE);

    for path in ["/settings", "/dashboard"] {
        let resp = get_with(
            &rig.gw,
            path,
            Some(&alice.cookie),
            Client::Api,
            &FORGED_AUTH_TIME,
        )
        .await;
        assert_eq!(resp.status(), 200, "{path}");
        let seen = rig.upstream.last_request().expect("forwarded");
        assert_eq!(
            auth_time_headers(&seen),
            vec![("remote-auth-time", "2026-01-05T00:00:30Z")],
            "{path}: exactly the gateway's own header"
        );
    }

    // A new verification moves it.
    rig.advance(4 * MINUTE);
    let again_at = rig.now();
    let cookie = api_verify_totp(&rig, &alice.cookie, &alice.secret).await;
    assert_eq!(
        get(&rig.gw, "/settings", Some(&cookie), Client::Api)
            .await
            .status(),
        200
    );
    let seen = rig.upstream.last_request().expect("forwarded");
    assert_eq!(
        seen.header_all("remote-auth-time"),
        vec![again_at.to_rfc3339().as_str()]
    );
    assert_eq!(again_at.to_rfc3339(), "2026-01-05T00:07:00Z");
}

#[tokio::test]
async fn forged_remote_auth_time_never_reaches_the_upstream_without_a_second_factor() {
    let rig = Rig::start(SETTINGS_STEP_UP).await;
    let cookie = password_only_login(&rig, "bob").await;
    // A password-only session (no second factor ever) and an anonymous request on a bypass
    // route: the gateway has no time to send, and must not pass the client's along.
    let cases = [("/dashboard", Some(cookie.as_str())), ("/public/x", None)];
    for (path, cookie) in cases {
        let resp = get_with(&rig.gw, path, cookie, Client::Api, &FORGED_AUTH_TIME).await;
        assert_eq!(resp.status(), 200, "{path}");
        let seen = rig.upstream.last_request().expect("forwarded");
        let forged = auth_time_headers(&seen);
        assert!(forged.is_empty(), "{path}: {forged:?}");
    }
}
