//! Step-up tests through a running gateway: a [`Rig`] whose `/settings` needs a second factor
//! verified in the last five minutes, users who log in with TOTP at a known instant, browser
//! form posts, browser verification (which answers with the Continue page when a form is held)
//! and the Continue post itself.
//!
//! ```ignore
//! let rig = Rig::start(SETTINGS_STEP_UP).await;
//! let alice = fresh_totp_user(&rig, "alice").await;   // verified at rig.now()
//! rig.advance(6 * MINUTE);                              // the window has passed
//! let resp = browser_post(&rig.gw, "/settings", Some(&alice.cookie), b"a=1").await; // held
//! let page = browser_verify_totp(&rig, &alice.cookie, &alice.secret, "/settings").await;
//! let form = continue_form(&body_text(page).await);
//! let resp = post_marker(&rig.gw, &form, &new_cookie).await;   // the upstream gets "a=1"
//! ```

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, COOKIE};

use stepgate::clock::Timestamp;

use super::auth::{BROWSER_ACCEPT, PREFIX, send, set_session_cookie, text};
use super::mfa::Rig;
use super::{Gateway, http_client};

/// `/settings` (and below) needs a second factor proven in the last 5 minutes; everything
/// else needs a login; `/public` needs nothing.
pub const SETTINGS_STEP_UP: &str = r#"
[access]
default_policy = "one_factor"

[[access.rules]]
path = "^/public(/|$)"
policy = "bypass"

[[access.rules]]
path = "^/settings(/|$)"
policy = "one_factor"
step_up = "5m"
"#;

/// The step-up window of [`SETTINGS_STEP_UP`].
pub const WINDOW: Duration = Duration::from_secs(5 * 60);

/// `application/x-www-form-urlencoded`, as browsers send it.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// A form body with UTF-8 (percent-encoded and raw), `+` for a space, `%20`, an encoded `+`
/// and an encoded `&`: any decoding or re-encoding on the way changes its bytes.
pub const TRICKY_FORM: &[u8] = "display_name=J%C3%BCrgen+M%C3%BCller&note=a%20b+c%2Bd\
&raw=\u{00e9}t\u{00e9}+\u{1f511}&amp=x%26y%3Dz&empty=&dup=1&dup=2"
    .as_bytes();

/// A user with TOTP who has just completed a login with a code.
pub struct FreshUser {
    /// Base32 TOTP secret.
    pub secret: String,
    /// The two_factor session cookie (`name=value`).
    pub cookie: String,
    /// When the second factor was verified (the rig's clock at that moment).
    pub verified_at: Timestamp,
}

/// Creates `name`, enrols TOTP, then logs in again with the password and a TOTP code. The
/// clock is one TOTP step past that code when this returns, so the next code is fresh.
pub async fn fresh_totp_user(rig: &Rig, name: &str) -> FreshUser {
    let enrolled = rig.user_with_totp(name, None).await;
    let (cookie, verified_at) = totp_login(rig, name, &enrolled.secret).await;
    FreshUser {
        secret: enrolled.secret,
        cookie,
        verified_at,
    }
}

/// Password + TOTP login of an enrolled user: the new session cookie and the verification
/// time. Moves the clock one TOTP step on afterwards.
pub async fn totp_login(rig: &Rig, name: &str, secret: &str) -> (String, Timestamp) {
    let pending = rig.login_pending(name).await;
    let verified_at = rig.now();
    let cookie = rig.verify_ok(&pending, "totp", &rig.totp_now(secret)).await;
    rig.next_step();
    (cookie, verified_at)
}

/// A step-up verification with the current TOTP code as an API client (JSON); returns the
/// rotated cookie. Moves the clock one TOTP step on afterwards.
pub async fn api_verify_totp(rig: &Rig, cookie: &str, secret: &str) -> String {
    let code = rig.totp_now(secret);
    let cookie = rig.verify_ok(cookie, "totp", &code).await;
    rig.next_step();
    cookie
}

/// A browser submitting an urlencoded form: `POST path` with `body` exactly as given.
pub async fn browser_post(
    gw: &Gateway,
    path: &str,
    cookie: Option<&str>,
    body: &[u8],
) -> reqwest::Response {
    post_raw(gw, path, cookie, BROWSER_ACCEPT, FORM, body, &[]).await
}

/// `POST path` with the given `Accept`, `Content-Type`, body and extra headers.
pub async fn post_raw(
    gw: &Gateway,
    path: &str,
    cookie: Option<&str>,
    accept: &str,
    content_type: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut builder = http_client()
        .post(gw.url_for(path))
        .header(ACCEPT, accept)
        .header(CONTENT_TYPE, content_type)
        .body(body.to_vec());
    if let Some(cookie) = cookie {
        builder = builder.header(COOKIE, cookie);
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(builder).await
}

/// The browser's verification form (`POST {prefix}/verify`, urlencoded, `Accept: text/html`)
/// with the current TOTP code. Moves the clock one TOTP step on afterwards.
pub async fn browser_verify_totp(
    rig: &Rig,
    cookie: &str,
    secret: &str,
    rd: &str,
) -> reqwest::Response {
    let code = rig.totp_now(secret);
    let resp = browser_verify(&rig.gw, cookie, "totp", &code, rd).await;
    rig.next_step();
    resp
}

/// `POST {prefix}/verify` as a browser form with `method`, `code` and `rd`.
pub async fn browser_verify(
    gw: &Gateway,
    cookie: &str,
    method: &str,
    code: &str,
    rd: &str,
) -> reqwest::Response {
    let builder = http_client()
        .post(gw.url_for(&format!("{PREFIX}/verify")))
        .header(ACCEPT, BROWSER_ACCEPT)
        .header(COOKIE, cookie)
        .form(&[("method", method), ("code", code), ("rd", rd)]);
    send(builder).await
}

/// The new session cookie a response sets; panics if it sets none.
pub fn new_cookie(resp: &reqwest::Response) -> String {
    set_session_cookie(resp.headers()).expect("a session cookie is set")
}

/// What a Continue page posts: its form's `action` and the held form's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContinueForm {
    pub action: String,
    pub id: String,
}

/// Reads the Continue page: the form's action and the `__stepgate_held` id (32 hex digits).
/// Panics, showing the page, if it is not one.
pub fn continue_form(html: &str) -> ContinueForm {
    let form = regex::Regex::new(
        r#"(?s)<form method="post" action="([^"]*)">\s*<input type="hidden" name="__stepgate_held" value="([0-9a-f]{32})">"#,
    )
    .expect("regex");
    let captures = form
        .captures(html)
        .unwrap_or_else(|| panic!("not a Continue page:\n{html}"));
    ContinueForm {
        action: captures[1].to_owned(),
        id: captures[2].to_owned(),
    }
}

/// The Continue button: `POST action` with `__stepgate_held=<id>`, as the browser sends it.
pub async fn post_marker(gw: &Gateway, form: &ContinueForm, cookie: &str) -> reqwest::Response {
    post_marker_to(gw, &form.action, &form.id, cookie).await
}

/// A Continue post of `id` to any `path`.
pub async fn post_marker_to(gw: &Gateway, path: &str, id: &str, cookie: &str) -> reqwest::Response {
    let body = format!("__stepgate_held={id}");
    browser_post(gw, path, Some(cookie), body.as_bytes()).await
}

/// The body of a response as JSON (the echo upstream's answer).
pub async fn echo_json(resp: reqwest::Response) -> serde_json::Value {
    let status = resp.status();
    let body = text(resp).await;
    assert_eq!(status, 200, "not forwarded: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not the echo's JSON ({e}): {body}"))
}

/// Six minutes: past a five-minute window whatever else happened in between.
pub const SIX_MINUTES: Duration = Duration::from_secs(6 * 60);
