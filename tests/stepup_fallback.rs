//! `step_up_fallback = "password"`: a user who has no second factor satisfies a step-up rule by
//! entering the password again. Wrong passwords count like wrong codes; the right one satisfies
//! the window and never makes the session a two-factor one.

mod common;

use serde_json::{Value, json};

use common::answers::{assert_redirect, assert_step_up_required};
use common::auth::{Client, get, json as json_body};
use common::mfa::{PASSWORD, Rig, body_text};
use common::stepup::{WINDOW, browser_post, browser_verify, echo_json, new_cookie};
use common::stepup_users::{alice_past_the_window, password_only_login};

const FALLBACK: &str = r#"
[access]
default_policy = "one_factor"

[[access.rules]]
path = "^/settings(/|$)"
policy = "one_factor"
step_up = "5m"
step_up_fallback = "password"

[regulation]
max_retries = 100
"#;

const REAUTH_URL: &str = "/.stepgate/verify?rd=%2Fsettings&method=password";

/// `POST {prefix}/verify` as an API client with `password` in place of a code and `/settings`
/// as rd: the status, the new session cookie (if any) and the JSON body.
async fn api_verify_password(
    rig: &Rig,
    cookie: &str,
    password: &str,
) -> (u16, Option<String>, Value) {
    rig.post_json(
        "/verify",
        Some(cookie),
        json!({ "method": "password", "code": password, "rd": "/settings" }),
    )
    .await
}

#[tokio::test]
async fn password_fallback_satisfies_the_window_without_raising_the_auth_level() {
    let rig = Rig::start(FALLBACK).await;
    let cookie = password_only_login(&rig, "bob").await;

    // The login's password does not count as a step-up: the rule asks for it again.
    let resp = get(&rig.gw, "/settings", Some(&cookie), Client::Api).await;
    let body = assert_step_up_required(resp, "API client after a password login").await;
    assert_eq!(body["verify_url"], REAUTH_URL, "{body}");
    let resp = get(&rig.gw, "/settings", Some(&cookie), Client::Browser).await;
    assert_redirect(&resp, 302, REAUTH_URL, "browser after a password login");
    assert_eq!(rig.upstream.requests(), 0);

    // The verification page asks for the password.
    let resp = get(&rig.gw, REAUTH_URL, Some(&cookie), Client::Browser).await;
    assert_eq!(resp.status(), 200);
    let page = body_text(resp).await;
    assert!(page.contains("enter your password again"), "{page}");
    assert!(
        page.contains("name=\"method\" value=\"password\""),
        "{page}"
    );
    let resp = get(&rig.gw, REAUTH_URL, Some(&cookie), Client::Api).await;
    let body = json_body(resp).await;
    assert_eq!(body["status"], "password_required", "{body}");
    assert_eq!(body["methods"], json!(["password"]), "{body}");

    // A wrong password is refused and lets nothing through.
    let resp = browser_verify(
        &rig.gw,
        &cookie,
        "password",
        "not-the-password",
        "/settings",
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert!(body_text(resp).await.contains("The password is not right."));
    assert_eq!(rig.get_app("/settings", Some(&cookie)).await.status(), 401);

    // The right one: a new session id, back to rd.
    let reauth_at = rig.now();
    let resp = browser_verify(&rig.gw, &cookie, "password", PASSWORD, "/settings").await;
    assert_redirect(&resp, 303, "/settings", "the right password");
    let fresh = new_cookie(&resp);
    assert_ne!(fresh, cookie);
    let echo = echo_json(get(&rig.gw, "/settings", Some(&fresh), Client::Api).await).await;
    assert_eq!(echo["path"], "/settings");

    // Still a one-factor session: no second factor time, no two_factor rules, no header.
    let info = rig.session_ok(&fresh).await;
    assert_eq!(info["auth_level"], "one_factor", "{info}");
    assert_eq!(info["second_factor_at"], serde_json::Value::Null, "{info}");
    let seen = rig.upstream.last_request().expect("forwarded");
    assert!(
        seen.header("remote-auth-time").is_none(),
        "{:?}",
        seen.headers
    );

    // The password's window ends like a second factor's.
    rig.clock.set(reauth_at.plus(WINDOW));
    let resp = get(&rig.gw, "/settings", Some(&fresh), Client::Api).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(json_body(resp).await["verify_url"], REAUTH_URL);
}

#[tokio::test]
async fn password_fallback_does_not_pass_a_two_factor_rule() {
    let config = format!(
        "{FALLBACK}\n[[access.rules]]\npath = \"^/secure(/|$)\"\npolicy = \"two_factor\"\n"
    );
    let rig = Rig::start(&config).await;
    let cookie = password_only_login(&rig, "bob").await;
    let resp = browser_verify(&rig.gw, &cookie, "password", PASSWORD, "/settings").await;
    assert_eq!(resp.status(), 303);
    let fresh = new_cookie(&resp);
    assert_eq!(rig.get_app("/settings", Some(&fresh)).await.status(), 200);
    let resp = rig.get_app("/secure", Some(&fresh)).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(json_body(resp).await["error"], "second_factor_required");
}

#[tokio::test]
async fn wrong_fallback_passwords_count_and_end_the_session() {
    let rig = Rig::start(FALLBACK).await;
    let cookie = password_only_login(&rig, "bob").await;

    // Four wrong passwords: still alive, still refused.
    for attempt in 1..=4 {
        let (status, _, body) = api_verify_password(&rig, &cookie, "wrong-password").await;
        assert_eq!(status, 401, "attempt {attempt}: {body}");
        assert_eq!(
            body["status"], "password_required",
            "attempt {attempt}: {body}"
        );
    }
    assert_eq!(rig.session_ok(&cookie).await["authenticated"], true);
    // The fifth ends the session, as five wrong codes would.
    let (status, _, body) = api_verify_password(&rig, &cookie, "wrong-password").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "too_many_attempts", "{body}");
    let (status, _) = rig.session(&cookie).await;
    assert_eq!(status, 401, "the session is over");
    // The right password on the dead session changes nothing.
    let (status, _, _) = api_verify_password(&rig, &cookie, PASSWORD).await;
    assert_eq!(status, 401);
    assert_eq!(rig.upstream.requests(), 0);
}

#[tokio::test]
async fn wrong_fallback_passwords_count_towards_the_account_ban() {
    let config = FALLBACK.replace("max_retries = 100", "max_retries = 3");
    let rig = Rig::start(&config).await;
    let cookie = password_only_login(&rig, "bob").await;
    for _ in 0..3 {
        let resp =
            browser_verify(&rig.gw, &cookie, "password", "wrong-password", "/settings").await;
        assert_eq!(resp.status(), 401);
    }
    // The account is banned now: even the right password is not checked.
    let resp = browser_verify(&rig.gw, &cookie, "password", PASSWORD, "/settings").await;
    assert_eq!(resp.status(), 429);
    assert_eq!(rig.get_app("/settings", Some(&cookie)).await.status(), 401);
    let (status, _, _) = rig.password_login("bob", PASSWORD, &[]).await;
    assert_eq!(status, 429, "the password login is banned as well");
}

#[tokio::test]
async fn password_fallback_is_not_accepted_from_a_user_with_a_second_factor() {
    let (rig, alice) = alice_past_the_window(FALLBACK).await;

    // Step-up asks for the factor, not the password.
    let resp = get(&rig.gw, "/settings", Some(&alice.cookie), Client::Api).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        json_body(resp).await["verify_url"],
        "/.stepgate/verify?rd=%2Fsettings"
    );
    // Asking for the password page anyway shows the factor's page.
    let resp = get(&rig.gw, REAUTH_URL, Some(&alice.cookie), Client::Api).await;
    let body = json_body(resp).await;
    assert_eq!(body["status"], "second_factor_required", "{body}");
    assert_eq!(body["methods"], json!(["totp", "backup"]), "{body}");

    // The right password is refused and satisfies nothing.
    let resp = browser_verify(&rig.gw, &alice.cookie, "password", PASSWORD, "/settings").await;
    assert_eq!(resp.status(), 400);
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "no new session for a refused fallback"
    );
    let resp = browser_post(&rig.gw, "/settings", Some(&alice.cookie), b"name=x").await;
    assert_eq!(resp.status(), 303, "still held for verification");
    assert_eq!(
        rig.get_app("/settings", Some(&alice.cookie)).await.status(),
        401
    );
    assert_eq!(rig.upstream.requests(), 0);
}
