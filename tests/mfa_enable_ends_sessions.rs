//! Turning two-step verification on ends the account's other sessions, whichever factor turns
//! it on: a password-only session opened by whoever stole the password (remember-me, 30 days)
//! must not outlive it. The session making the change keeps working; other accounts are left
//! alone; a factor added beside another ends nothing.

mod common;

use serde_json::json;

use common::auth::{Client, is_logged_in, post_login, set_session_cookie};
use common::mfa::{PASSWORD, Rig, sms_code};

/// Every proxied path asks for a login (`one_factor`).
const ONE_FACTOR: &str = "[access]\ndefault_policy = \"one_factor\"\n";

/// A password-only login of `name` with remember-me on, as the thief of the password does it:
/// the session cookie, checked to reach a `one_factor` path.
async fn stolen_password_session(rig: &Rig, name: &str) -> String {
    let resp = post_login(
        &rig.gw,
        &[
            ("username", name),
            ("password", PASSWORD),
            ("remember_me", "on"),
        ],
        Client::Api,
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let cookie = set_session_cookie(resp.headers()).expect("a session cookie");
    assert!(reaches_the_app(rig, &cookie).await);
    cookie
}

/// Does a request with `cookie` reach the upstream on a `one_factor` path? Refused means the
/// API client's 401 (sent to the login page).
async fn reaches_the_app(rig: &Rig, cookie: &str) -> bool {
    let resp = rig.get_app("/app", Some(cookie)).await;
    match resp.status().as_u16() {
        200 => true,
        401 => {
            let body = common::auth::json(resp).await;
            assert!(body["login_url"].is_string(), "{body}");
            false
        }
        other => panic!("unexpected status {other}"),
    }
}

/// alice (with an address) and bob, each signed in with the password alone; alice twice:
/// the thief's session and her own. Returns (thief, alice, bob).
async fn alice_twice_and_bob(rig: &Rig) -> (String, String, String) {
    rig.user("alice", Some("alice@example.test"), &[]).await;
    rig.user("bob", Some("bob@example.test"), &[]).await;
    let thief = stolen_password_session(rig, "alice").await;
    let alice = rig.login_one_factor("alice").await;
    let bob = stolen_password_session(rig, "bob").await;
    (thief, alice, bob)
}

/// The thief's session is over; bob's is not.
async fn only_the_other_session_of_alice_ended(rig: &Rig, thief: &str, bob: &str) {
    assert!(
        !reaches_the_app(rig, thief).await,
        "the stolen session ends"
    );
    assert!(!is_logged_in(&rig.gw, thief).await);
    assert!(
        reaches_the_app(rig, bob).await,
        "another account's session stays"
    );
    assert!(is_logged_in(&rig.gw, bob).await);
}

#[tokio::test]
async fn enabling_totp_ends_a_stolen_password_only_session() {
    let rig = Rig::start(ONE_FACTOR).await;
    let (thief, alice, bob) = alice_twice_and_bob(&rig).await;

    let enrolled = rig.enrol_totp(&alice).await;

    only_the_other_session_of_alice_ended(&rig, &thief, &bob).await;
    // Her browser goes on, moved to a fresh id with the code it just proved.
    assert!(reaches_the_app(&rig, &enrolled.cookie).await);
    assert_eq!(
        rig.session_ok(&enrolled.cookie).await["auth_level"],
        "two_factor"
    );
    // The password alone no longer opens a session that reaches the app.
    let pending = rig.login_pending("alice").await;
    let resp = rig.get_app("/app", Some(&pending)).await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn enabling_email_codes_ends_a_stolen_password_only_session() {
    let rig = Rig::start(ONE_FACTOR).await;
    let (thief, alice, bob) = alice_twice_and_bob(&rig).await;

    rig.enable_email_codes(&alice).await;

    only_the_other_session_of_alice_ended(&rig, &thief, &bob).await;
    assert!(reaches_the_app(&rig, &alice).await, "her own session stays");
    assert!(is_logged_in(&rig.gw, &alice).await);
}

#[tokio::test]
async fn confirming_a_first_phone_ends_a_stolen_password_only_session() {
    let rig = Rig::start(ONE_FACTOR).await;
    let (thief, alice, bob) = alice_twice_and_bob(&rig).await;

    let phone = "+4915112345678";
    rig.enrolment_step(
        "/settings/phone",
        &alice,
        json!({ "phone": phone, "password": PASSWORD }),
    )
    .await;
    // A number waiting for its code is no second factor yet.
    assert!(reaches_the_app(&rig, &thief).await);
    let sms = rig.sms_after(0).await;
    let (status, _, body) = rig
        .post_json(
            "/settings/phone/confirm",
            Some(&alice),
            json!({ "code": sms_code(&sms) }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    only_the_other_session_of_alice_ended(&rig, &thief, &bob).await;
    assert!(reaches_the_app(&rig, &alice).await, "her own session stays");
}

/// Once two-step verification is on, every login proved a factor (or still owes one): a
/// factor added beside the first signs no device out.
#[tokio::test]
async fn a_factor_added_beside_another_ends_no_session() {
    let rig = Rig::start(ONE_FACTOR).await;
    let totp = rig
        .user_with_totp("alice", Some("alice@example.test"))
        .await;
    let laptop = rig.login_with_totp("alice", &totp.secret).await;
    rig.next_step();
    let phone = rig.login_with_totp("alice", &totp.secret).await;

    rig.enable_email_codes(&phone).await;

    assert!(reaches_the_app(&rig, &laptop).await);
    assert!(reaches_the_app(&rig, &phone).await);
}
