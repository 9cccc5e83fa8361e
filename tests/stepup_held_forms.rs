//! Held browser forms: a form POST that needs step-up is kept for the session, the user
//! verifies, and the Continue page's post delivers the original body, byte for byte, exactly
//! once, only from that session, only to the original URL and only within the window.

mod common;

use reqwest::StatusCode;

use common::answers::assert_redirect;
use common::auth::{BROWSER_ACCEPT, Client, get, set_session_cookie};
use common::mfa::{Rig, body_text};
use common::sha256_hex;
use common::stepup::{
    ContinueForm, FORM, SETTINGS_STEP_UP, SIX_MINUTES, TRICKY_FORM, WINDOW, browser_post,
    browser_verify_totp, continue_form, echo_json, post_marker, post_marker_to, post_raw,
    totp_login,
};
use common::stepup_users::{alice_past_the_window, user_past_the_window};

const ACTION: &str = "/settings/profile?tab=identity";
const VERIFY: &str = "/.stepgate/verify?rd=%2Fsettings%2Fprofile%3Ftab%3Didentity";

/// What a browser gets back from its verification form: the status, the session cookie set
/// (if any) and the page.
struct Verified {
    status: StatusCode,
    cookie: Option<String>,
    page: String,
}

impl Verified {
    /// The rotated session cookie; panics if none was set.
    fn new_cookie(&self) -> String {
        self.cookie.clone().expect("a session cookie is set")
    }

    /// The Continue page's form; panics, showing the page, if the answer is not one.
    fn continue_form(&self) -> ContinueForm {
        continue_form(&self.page)
    }

    /// The Continue page's form if the answer is one, i.e. a form was held.
    fn held_form(&self) -> Option<ContinueForm> {
        self.page
            .contains("__stepgate_held")
            .then(|| continue_form(&self.page))
    }
}

/// The browser's verification with the current TOTP code of `secret` and [`ACTION`] as rd.
/// Moves the clock one TOTP step on afterwards.
async fn verify_as_browser(rig: &Rig, cookie: &str, secret: &str) -> Verified {
    let resp = browser_verify_totp(rig, cookie, secret, ACTION).await;
    let status = resp.status();
    let cookie = set_session_cookie(resp.headers());
    let page = body_text(resp).await;
    Verified {
        status,
        cookie,
        page,
    }
}

/// A browser posting `body` as `content_type` to [`ACTION`] with the session `cookie` and
/// extra headers.
async fn post_to_action(
    rig: &Rig,
    cookie: &str,
    content_type: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> reqwest::Response {
    post_raw(
        &rig.gw,
        ACTION,
        Some(cookie),
        BROWSER_ACCEPT,
        content_type,
        body,
        headers,
    )
    .await
}

/// The Continue post of `form` from `cookie` is forwarded, and the upstream receives `body`
/// byte for byte.
async fn assert_delivers(rig: &Rig, form: &ContinueForm, cookie: &str, body: &[u8]) {
    let echo = echo_json(post_marker(&rig.gw, form, cookie).await).await;
    assert_eq!(echo["body_sha256"], sha256_hex(body), "{echo}");
}

/// `name` (TOTP) whose window has passed posts `body` to [`ACTION`] as a browser, verifies,
/// and reads the Continue page. Returns it, the rotated cookie and the user's TOTP secret;
/// nothing is forwarded yet.
async fn hold_and_verify(rig: &Rig, name: &str, body: &[u8]) -> (ContinueForm, String, String) {
    let user = user_past_the_window(rig, name).await;
    let forwarded = rig.upstream.requests();
    let resp = browser_post(&rig.gw, ACTION, Some(&user.cookie), body).await;
    assert_redirect(&resp, 303, VERIFY, "the form is held");
    let verified = verify_as_browser(rig, &user.cookie, &user.secret).await;
    assert_eq!(verified.status, 200, "the Continue page");
    let cookie = verified.new_cookie();
    assert_ne!(cookie, user.cookie, "the session id is rotated");
    let form = verified.continue_form();
    assert_eq!(rig.upstream.requests(), forwarded, "held, not forwarded");
    (form, cookie, user.secret)
}

#[tokio::test]
async fn held_form_is_delivered_once_with_its_body_intact() {
    let rig = Rig::start(SETTINGS_STEP_UP).await;
    let (form, cookie, _) = hold_and_verify(&rig, "alice", TRICKY_FORM).await;
    assert_eq!(form.action, ACTION, "Continue posts to the original URL");
    let forwarded = rig.upstream.requests();

    let echo = echo_json(post_marker(&rig.gw, &form, &cookie).await).await;
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], ACTION);
    assert_eq!(echo["body_len"], TRICKY_FORM.len());
    assert_eq!(
        echo["body_sha256"],
        sha256_hex(TRICKY_FORM),
        "the original bytes, not the marker nor a re-encoding"
    );
    assert_eq!(rig.upstream.requests(), forwarded + 1);
    let seen = rig.upstream.last_request().expect("forwarded");
    assert_eq!(seen.header("content-type"), Some(FORM));
    let length = TRICKY_FORM.len().to_string();
    assert_eq!(seen.header("content-length"), Some(length.as_str()));
    assert_eq!(seen.header("remote-user"), Some("alice"));

    // Single use: the same Continue post again is refused and forwards nothing.
    let resp = post_marker(&rig.gw, &form, &cookie).await;
    assert_eq!(resp.status(), 403);
    let page = body_text(resp).await;
    assert!(page.contains("can no longer be sent"), "{page}");
    assert_eq!(
        rig.upstream.requests(),
        forwarded + 1,
        "upstream count +1 only"
    );
}

#[tokio::test]
async fn held_form_keeps_its_content_type_parameters() {
    let (rig, alice) = alice_past_the_window(SETTINGS_STEP_UP).await;
    let content_type = "application/x-www-form-urlencoded; charset=UTF-8";
    let body = b"a=%E2%82%AC";
    let resp = post_to_action(&rig, &alice.cookie, content_type, body, &[]).await;
    assert_eq!(resp.status(), 303);
    let verified = verify_as_browser(&rig, &alice.cookie, &alice.secret).await;
    let cookie = verified.new_cookie();
    let form = verified.continue_form();
    assert_delivers(&rig, &form, &cookie, body).await;
    let seen = rig.upstream.last_request().expect("forwarded");
    assert_eq!(seen.header("content-type"), Some(content_type));
}

#[tokio::test]
async fn rejects_held_form_replay_after_the_window() {
    let rig = Rig::start(SETTINGS_STEP_UP).await;
    let (form, cookie, _) = hold_and_verify(&rig, "alice", TRICKY_FORM).await;
    let verified_at = rig.now().minus(common::mfa::STEP);
    rig.clock.set(verified_at.plus(WINDOW));
    let forwarded = rig.upstream.requests();

    // The window is over: the Continue post itself needs a new verification, and the
    // original body is not sent.
    let resp = post_marker(&rig.gw, &form, &cookie).await;
    assert_redirect(&resp, 303, VERIFY, "Continue after the window");
    assert_eq!(rig.upstream.requests(), forwarded);
}

#[tokio::test]
async fn continue_post_after_the_window_is_not_held_in_turn_and_never_forwarded() {
    // After the window the user clicks Continue: the gateway asks for a new verification.
    // That Continue post is the gateway's own marker, not a form of the user's: it must not be
    // held like one, or the next Continue page forwards `__stepgate_held=<old id>` upstream as
    // if the user had submitted it. The expired form itself stays gone.
    let rig = Rig::start(SETTINGS_STEP_UP).await;
    let (form, cookie, secret) = hold_and_verify(&rig, "alice", TRICKY_FORM).await;
    rig.advance(SIX_MINUTES);
    let resp = post_marker(&rig.gw, &form, &cookie).await;
    assert_eq!(resp.status(), 303);
    let forwarded = rig.upstream.requests();

    let verified = verify_as_browser(&rig, &cookie, &secret).await;
    let cookie = verified.new_cookie();
    if let Some(again) = verified.held_form() {
        // Show what the upstream would receive, for the report.
        let resp = post_marker(&rig.gw, &again, &cookie).await;
        let answer = body_text(resp).await;
        panic!("the expired Continue post was held; its Continue page forwarded: {answer}");
    }
    assert_eq!(verified.status, 303, "no Continue page: {}", verified.page);
    assert_eq!(rig.upstream.requests(), forwarded);
}

#[tokio::test]
async fn rejects_held_form_replay_from_another_session_of_the_same_user() {
    let rig = Rig::start(SETTINGS_STEP_UP).await;
    let (form, cookie, secret) = hold_and_verify(&rig, "alice", TRICKY_FORM).await;
    // Another login of the same user, freshly verified, so its step-up window is open.
    let (other, _) = totp_login(&rig, "alice", &secret).await;
    assert_eq!(rig.get_app("/settings", Some(&other)).await.status(), 200);
    let forwarded = rig.upstream.requests();

    let resp = post_marker(&rig.gw, &form, &other).await;
    assert_eq!(resp.status(), 403);
    let resp = post_marker(&rig.gw, &form, &other).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(rig.upstream.requests(), forwarded, "nothing forwarded");

    // The refusal did not spend the form: its own session still sends it.
    assert_delivers(&rig, &form, &cookie, TRICKY_FORM).await;
    assert_eq!(rig.upstream.requests(), forwarded + 1);
}

#[tokio::test]
async fn rejects_held_form_replay_from_the_session_id_before_rotation() {
    let (rig, alice) = alice_past_the_window(SETTINGS_STEP_UP).await;
    let resp = browser_post(&rig.gw, ACTION, Some(&alice.cookie), TRICKY_FORM).await;
    assert_eq!(resp.status(), 303);
    let verified = verify_as_browser(&rig, &alice.cookie, &alice.secret).await;
    let form = verified.continue_form();
    let forwarded = rig.upstream.requests();
    // The old id is no session any more: a browser is sent to log in, nothing is forwarded.
    let resp = post_marker(&rig.gw, &form, &alice.cookie).await;
    assert_ne!(resp.status(), 200);
    assert_eq!(rig.upstream.requests(), forwarded);
}

#[tokio::test]
async fn rejects_held_form_replay_to_another_url() {
    let rig = Rig::start(SETTINGS_STEP_UP).await;
    let (form, cookie, _) = hold_and_verify(&rig, "alice", TRICKY_FORM).await;
    let forwarded = rig.upstream.requests();
    for path in [
        "/settings/delete-account",
        "/settings/profile?tab=other",
        "/settings/profile",
        "/dashboard",
    ] {
        let resp = post_marker_to(&rig.gw, path, &form.id, &cookie).await;
        assert_eq!(resp.status(), 403, "{path}");
    }
    assert_eq!(rig.upstream.requests(), forwarded);
    // Still usable where it belongs.
    assert_delivers(&rig, &form, &cookie, TRICKY_FORM).await;
}

#[tokio::test]
async fn rejects_a_guessed_held_form_id() {
    let rig = Rig::start(SETTINGS_STEP_UP).await;
    let (form, cookie, _) = hold_and_verify(&rig, "alice", TRICKY_FORM).await;
    let forwarded = rig.upstream.requests();
    let mut guessed = form.id.clone().into_bytes();
    guessed[0] = if guessed[0] == b'0' { b'1' } else { b'0' };
    let guessed = String::from_utf8(guessed).expect("hex");
    let resp = post_marker_to(&rig.gw, ACTION, &guessed, &cookie).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(rig.upstream.requests(), forwarded);
    // A wrong guess does not destroy the real one.
    assert_delivers(&rig, &form, &cookie, TRICKY_FORM).await;
}

#[tokio::test]
async fn verifying_without_a_held_form_shows_no_continue_page() {
    let (rig, alice) = alice_past_the_window(SETTINGS_STEP_UP).await;
    let resp = get(&rig.gw, ACTION, Some(&alice.cookie), Client::Browser).await;
    assert_eq!(resp.status(), 302);
    let resp = browser_verify_totp(&rig, &alice.cookie, &alice.secret, ACTION).await;
    assert_redirect(&resp, 303, ACTION, "verification with nothing held");
}

#[tokio::test]
async fn a_newer_held_form_replaces_the_older_one() {
    let (rig, alice) = alice_past_the_window(SETTINGS_STEP_UP).await;
    let first = b"version=1";
    let second = b"version=2";
    for body in [first.as_slice(), second.as_slice()] {
        let resp = browser_post(&rig.gw, ACTION, Some(&alice.cookie), body).await;
        assert_eq!(resp.status(), 303);
    }
    let verified = verify_as_browser(&rig, &alice.cookie, &alice.secret).await;
    let cookie = verified.new_cookie();
    let form = verified.continue_form();
    assert_delivers(&rig, &form, &cookie, second).await;
    assert_eq!(rig.upstream.requests(), 1);
}

#[tokio::test]
async fn cross_origin_form_post_is_not_held_for_replay() {
    // A page on another origin (a sibling subdomain is same-site, so the Lax session cookie
    // comes along) submits a form to the step-up path. Holding it would let the Continue page,
    // served from the app's own origin, turn that cross-origin post into a same-origin one
    // once the user verifies: the app's own Origin/SameSite defences no longer see it.
    let (rig, alice) = alice_past_the_window(SETTINGS_STEP_UP).await;
    let forged = b"new_email=attacker%40evil.example";
    let cross_origin = [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "same-site"),
    ];
    let resp = post_to_action(&rig, &alice.cookie, FORM, forged, &cross_origin).await;
    assert_ne!(resp.status(), 200);
    let verified = verify_as_browser(&rig, &alice.cookie, &alice.secret).await;
    let cookie = verified.new_cookie();
    if let Some(form) = verified.held_form() {
        let echo = echo_json(post_marker(&rig.gw, &form, &cookie).await).await;
        panic!(
            "a cross-origin form was held, and its Continue post delivered it (sha256 {} = forged body: {}): {echo}",
            echo["body_sha256"],
            echo["body_sha256"] == sha256_hex(forged)
        );
    }
    assert_eq!(verified.status, 303, "no Continue page: {}", verified.page);
    assert_eq!(rig.upstream.requests(), 0);
}
