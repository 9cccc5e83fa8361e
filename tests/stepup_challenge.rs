//! How a request that needs step-up is answered: a browser GET/HEAD goes to the verification
//! page and comes back to where it was going with a new session id; every other request gets
//! 401 (JSON for API clients, an HTML page for browsers) and never reaches the upstream; a user
//! without any second factor is refused (403) or, under `mfa.required`, sent to enrolment.

mod common;

use reqwest::header::{ACCEPT, COOKIE};

use common::answers::assert_redirect;
use common::auth::{BROWSER_ACCEPT, Client, get, is_logged_in, json as json_body, send};
use common::http_client;
use common::mfa::{Rig, body_text};
use common::stepup::{
    FORM, SETTINGS_STEP_UP, browser_post, browser_verify_totp, echo_json, new_cookie, post_raw,
};
use common::stepup_users::{alice_past_the_window, password_only_login};

#[tokio::test]
async fn browser_get_goes_to_verify_and_returns_to_rd_with_a_new_session_id() {
    let (rig, alice) = alice_past_the_window(SETTINGS_STEP_UP).await;
    let forwarded = rig.upstream.requests();

    let path = "/settings/profile?tab=2&lang=en";
    let verify = "/.stepgate/verify?rd=%2Fsettings%2Fprofile%3Ftab%3D2%26lang%3Den";
    let resp = get(&rig.gw, path, Some(&alice.cookie), Client::Browser).await;
    assert_redirect(&resp, 302, verify, "GET");
    let resp = send(
        http_client()
            .head(rig.gw.url_for(path))
            .header(ACCEPT, BROWSER_ACCEPT)
            .header(COOKIE, &alice.cookie),
    )
    .await;
    assert_redirect(&resp, 302, verify, "HEAD is treated like GET");
    assert_eq!(rig.upstream.requests(), forwarded, "nothing forwarded yet");

    // The same verification page as at login, saying why it asks again.
    let resp = get(&rig.gw, verify, Some(&alice.cookie), Client::Browser).await;
    assert_eq!(resp.status(), 200);
    let page = body_text(resp).await;
    assert!(
        page.contains("needs a recent second-factor check"),
        "{page}"
    );
    assert!(page.contains("name=\"code\""), "{page}");

    let resp = browser_verify_totp(&rig, &alice.cookie, &alice.secret, path).await;
    assert_redirect(&resp, 303, path, "back to rd");
    let cookie = new_cookie(&resp);
    assert_ne!(cookie, alice.cookie, "the session id is rotated");
    assert!(
        !is_logged_in(&rig.gw, &alice.cookie).await,
        "the old id is gone"
    );

    let resp = get(&rig.gw, path, Some(&cookie), Client::Browser).await;
    let echo = echo_json(resp).await;
    assert_eq!(echo["path"], path);
    assert_eq!(rig.upstream.requests(), forwarded + 1);
}

/// One non-browser request to a step-up path.
struct ApiCase {
    method: &'static str,
    /// Empty: no `Accept` header.
    accept: &'static str,
    /// Empty: no `Content-Type` header.
    content_type: &'static str,
    body: &'static [u8],
    requested_with: bool,
}

impl ApiCase {
    fn new(
        method: &'static str,
        accept: &'static str,
        content_type: &'static str,
        body: &'static [u8],
    ) -> Self {
        ApiCase {
            method,
            accept,
            content_type,
            body,
            requested_with: false,
        }
    }
}

#[tokio::test]
async fn api_requests_needing_step_up_get_401_json_and_never_reach_the_upstream() {
    let (rig, alice) = alice_past_the_window(SETTINGS_STEP_UP).await;
    let forwarded = rig.upstream.requests();
    let received = rig.upstream.received().len();

    let cases = [
        // An API client's GET is not redirected.
        ApiCase::new("GET", "application/json", "", b""),
        ApiCase::new(
            "POST",
            "application/json",
            "application/json",
            b"{\"name\":\"x\"}",
        ),
        ApiCase::new("DELETE", "application/json", "", b""),
        // A script posting a form (Accept */*): not a browser navigation, nothing is held.
        ApiCase {
            requested_with: true,
            ..ApiCase::new("POST", "*/*", FORM, b"name=x")
        },
        // No Accept at all (curl).
        ApiCase::new("PUT", "", FORM, b"name=x"),
    ];
    for case in cases {
        let ApiCase {
            method,
            accept,
            content_type,
            body,
            requested_with,
        } = case;
        let mut builder = http_client()
            .request(
                method.parse().expect("method"),
                rig.gw.url_for("/settings?x=1"),
            )
            .header(COOKIE, &alice.cookie)
            .body(body.to_vec());
        if !accept.is_empty() {
            builder = builder.header(ACCEPT, accept);
        }
        if !content_type.is_empty() {
            builder = builder.header("content-type", content_type);
        }
        if requested_with {
            builder = builder.header("x-requested-with", "XMLHttpRequest");
        }
        let resp = send(builder).await;
        assert_eq!(resp.status(), 401, "{method} {accept}");
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        let body = json_body(resp).await;
        assert_eq!(body["error"], "step_up_required", "{method}: {body}");
        assert_eq!(
            body["verify_url"], "/.stepgate/verify?rd=%2Fsettings%3Fx%3D1",
            "{method}: {body}"
        );
    }
    assert_eq!(rig.upstream.requests(), forwarded);
    assert_eq!(rig.upstream.received().len(), received);
}

#[tokio::test]
async fn browser_requests_that_cannot_be_held_get_a_401_page_and_never_reach_the_upstream() {
    let (rig, alice) = alice_past_the_window(SETTINGS_STEP_UP).await;
    let forwarded = rig.upstream.requests();

    let too_big = vec![b'a'; 64 * 1024 + 1];
    let cases: [(&str, &[u8]); 3] = [
        ("application/json", b"{\"name\":\"x\"}"),
        ("multipart/form-data; boundary=x", b"--x--\r\n"),
        (FORM, &too_big),
    ];
    for (content_type, body) in cases {
        let resp = post_raw(
            &rig.gw,
            "/settings",
            Some(&alice.cookie),
            BROWSER_ACCEPT,
            content_type,
            body,
            &[],
        )
        .await;
        assert_eq!(resp.status(), 401, "{content_type}");
        let page = body_text(resp).await;
        assert!(page.contains("Confirm it"), "{content_type}: {page}");
        assert!(
            page.contains("/.stepgate/verify?rd=%2Fsettings"),
            "the page links to the verification: {page}"
        );
    }
    // A form sent with another method than POST is not held either.
    let resp = send(
        http_client()
            .put(rig.gw.url_for("/settings"))
            .header(ACCEPT, BROWSER_ACCEPT)
            .header("content-type", FORM)
            .header(COOKIE, &alice.cookie)
            .body("name=x"),
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(rig.upstream.requests(), forwarded);

    // None of them was held: verifying now just returns to rd.
    let resp = browser_verify_totp(&rig, &alice.cookie, &alice.secret, "/settings").await;
    assert_redirect(&resp, 303, "/settings", "verification with nothing held");
}

#[tokio::test]
async fn user_without_second_factor_is_refused_with_403_when_the_rule_has_no_fallback() {
    let rig = Rig::start(SETTINGS_STEP_UP).await;
    let cookie = password_only_login(&rig, "bob").await;

    let resp = get(&rig.gw, "/settings", Some(&cookie), Client::Api).await;
    assert_eq!(resp.status(), 403);
    let body = json_body(resp).await;
    assert_eq!(body["error"], "step_up_unavailable", "{body}");

    let resp = get(&rig.gw, "/settings", Some(&cookie), Client::Browser).await;
    assert_eq!(resp.status(), 403);
    let page = body_text(resp).await;
    assert!(
        page.contains("your account has none"),
        "explains why: {page}"
    );
    assert!(
        page.contains("href=\"/.stepgate/settings\""),
        "links to the security settings: {page}"
    );
    let resp = browser_post(&rig.gw, "/settings", Some(&cookie), b"name=x").await;
    assert_eq!(resp.status(), 403);
    assert_eq!(rig.upstream.requests(), 0);

    // The rest of the app is one login away.
    assert_eq!(rig.get_app("/dashboard", Some(&cookie)).await.status(), 200);
    assert_eq!(rig.upstream.requests(), 1);
}

#[tokio::test]
async fn mfa_required_user_without_second_factor_is_sent_to_enrolment() {
    let config = format!("{SETTINGS_STEP_UP}\n[mfa]\nrequired = true\n");
    let rig = Rig::start(&config).await;
    rig.user("carol", None, &[]).await;
    let cookie = rig.login_pending("carol").await;

    let verify = "/.stepgate/verify?rd=%2Fsettings";
    let resp = get(&rig.gw, "/settings", Some(&cookie), Client::Browser).await;
    assert_redirect(&resp, 302, verify, "the step-up path");
    let resp = get(&rig.gw, verify, Some(&cookie), Client::Browser).await;
    assert_redirect(
        &resp,
        303,
        "/.stepgate/settings?rd=%2Fsettings",
        "enrolment, then back to the page",
    );
    let resp = get(&rig.gw, "/settings", Some(&cookie), Client::Api).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(rig.upstream.requests(), 0);

    // Enrolling proves the factor: the step-up window starts with it.
    let totp = rig.enrol_totp(&cookie).await;
    let resp = get(&rig.gw, "/settings", Some(&totp.cookie), Client::Api).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(rig.upstream.requests(), 1);
}
