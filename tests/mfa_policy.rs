//! When a second factor is demanded and what happens to a login that owes one: `two_factor`
//! rules, `mfa.required` and `mfa.required_groups`, the pending challenge's limits (wrong
//! codes, time) and the account's brute-force regulation across challenges.

mod common;

use serde_json::json;

use common::auth::{Client, get, json as json_body, location};
use common::mfa::{MINUTE, PASSWORD, Rig, SECOND, wrong_code};

const SECURE_RULE: &str = r#"
[access]
default_policy = "one_factor"

[[access.rules]]
path = "^/secure"
policy = "two_factor"
"#;

#[tokio::test]
async fn two_factor_rule_sends_a_password_only_session_to_verify() {
    let rig = Rig::start(SECURE_RULE).await;
    rig.user("alice", Some("alice@example.test"), &[]).await;
    // Logged in with the password, then e-mail codes turned on: a one_factor session with a
    // factor available.
    let cookie = rig.login_one_factor("alice").await;
    rig.enable_email_codes(&cookie).await;
    assert_eq!(rig.session_ok(&cookie).await["auth_level"], "one_factor");

    assert_eq!(rig.get_app("/member", Some(&cookie)).await.status(), 200);
    let resp = rig.get_app("/secure/x", Some(&cookie)).await;
    assert_eq!(resp.status(), 401);
    let body = json_body(resp).await;
    assert_eq!(body["error"], "second_factor_required");
    assert_eq!(body["verify_url"], "/.stepgate/verify?rd=%2Fsecure%2Fx");
    let resp = get(&rig.gw, "/secure/x", Some(&cookie), Client::Browser).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(
        location(&resp).as_deref(),
        Some("/.stepgate/verify?rd=%2Fsecure%2Fx")
    );
    let forwarded_before = rig.upstream.received().len();

    // The verify page offers e-mail; the code goes out and upgrades the session.
    let resp = get(
        &rig.gw,
        "/.stepgate/verify?rd=%2Fsecure%2Fx",
        Some(&cookie),
        Client::Api,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body = json_body(resp).await;
    assert_eq!(body["methods"], json!(["email"]));
    let n = rig.smtp.messages().len();
    let (status, _, body) = rig.send_code(&cookie, "email").await;
    assert_eq!(status, 200, "{body}");
    let code = rig.code_mail_after(n).await.code();
    let cookie = rig.verify_ok(&cookie, "email", &code).await;
    let resp = rig.get_app("/secure/x", Some(&cookie)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(rig.upstream.received().len(), forwarded_before + 1);
}

#[tokio::test]
async fn two_factor_rule_sends_a_user_without_factor_to_enrolment() {
    let rig = Rig::start(SECURE_RULE).await;
    rig.user("bob", None, &[]).await;
    let cookie = rig.login_one_factor("bob").await;

    let resp = get(&rig.gw, "/secure", Some(&cookie), Client::Browser).await;
    assert_eq!(resp.status(), 302);
    let verify = location(&resp).expect("Location");
    assert_eq!(verify, "/.stepgate/verify?rd=%2Fsecure");
    let resp = get(&rig.gw, &verify, Some(&cookie), Client::Browser).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        location(&resp).as_deref(),
        Some("/.stepgate/settings?rd=%2Fsecure")
    );
    // The settings page says why the user is there.
    let page = common::auth::text(
        get(
            &rig.gw,
            "/.stepgate/settings?rd=%2Fsecure",
            Some(&cookie),
            Client::Browser,
        )
        .await,
    )
    .await;
    assert!(
        page.contains("The page you asked for needs two-step verification."),
        "{page}"
    );
    assert!(page.contains("a new code every 30 seconds"), "{page}");
    let resp = get(&rig.gw, &verify, Some(&cookie), Client::Api).await;
    assert_eq!(resp.status(), 403);
    let body = json_body(resp).await;
    assert_eq!(body["error"], "enrolment_required");
    assert_eq!(body["settings_url"], "/.stepgate/settings?rd=%2Fsecure");

    // Enrolling proves the factor at once: the rule lets the new session through.
    let totp = rig.enrol_totp(&cookie).await;
    assert_eq!(rig.get_app("/secure", Some(&cookie)).await.status(), 401);
    let resp = rig.get_app("/secure", Some(&totp.cookie)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(rig.upstream.received().len(), 1);
}

/// Without `mfa.required`, a first second factor still needs the code emailed to the account's
/// address: a stolen password alone cannot set up an app or a phone and pass a `two_factor`
/// rule. A browser asking for the code lands back on the settings page, where the code is
/// typed, keeping where it was going.
#[tokio::test]
async fn two_factor_rule_first_enrolment_needs_an_emailed_code_when_the_user_has_an_email() {
    let rig = Rig::start(SECURE_RULE).await;
    rig.user("bob", Some("bob@example.test"), &[]).await;
    let cookie = rig.login_one_factor("bob").await;
    for (path, body) in [
        ("/settings/totp/begin", json!({ "password": PASSWORD })),
        (
            "/settings/phone",
            json!({ "phone": "+33612345678", "password": PASSWORD }),
        ),
    ] {
        let (status, _, answer) = rig.post_json(path, Some(&cookie), body).await;
        assert_eq!(status, 401, "{path}: {answer}");
        assert_eq!(answer["error"], "email_code_required", "{path}");
        assert!(answer.get("secret").is_none(), "{path}");
    }
    assert_eq!(
        rig.sms.received().len(),
        0,
        "no text went to the thief's phone"
    );
    assert_eq!(rig.get_app("/secure", Some(&cookie)).await.status(), 401);

    let n = rig.smtp.messages().len();
    let resp = common::auth::send(
        common::http_client()
            .post(rig.gw.url_for("/.stepgate/verify/send"))
            .header("accept", common::auth::BROWSER_ACCEPT)
            .header("cookie", &cookie)
            .form(&[("method", "email"), ("rd", "/secure")]),
    )
    .await;
    assert_eq!(resp.status(), 303);
    let back = location(&resp).expect("Location");
    assert_eq!(back, "/.stepgate/settings?notice=email_sent&rd=%2Fsecure");
    let page = common::auth::text(get(&rig.gw, &back, Some(&cookie), Client::Browser).await).await;
    assert!(
        page.contains("We sent a code to your email address."),
        "{page}"
    );
    assert!(page.contains("name=\"email_code\""), "{page}");
    assert!(page.contains("value=\"/secure\""), "{page}");
    let code = rig.code_mail_after(n).await.code();

    let (status, _, begin) = rig
        .post_json(
            "/settings/totp/begin",
            Some(&cookie),
            json!({ "password": PASSWORD, "email_code": code }),
        )
        .await;
    assert_eq!(status, 200, "{begin}");
    let secret = begin["secret"].as_str().expect("secret");
    let (status, new_cookie, confirm) = rig
        .post_json(
            "/settings/totp/confirm",
            Some(&cookie),
            json!({ "code": rig.totp_now(secret) }),
        )
        .await;
    assert_eq!(status, 200, "{confirm}");
    let new_cookie = new_cookie.expect("rotated session");
    assert_eq!(
        rig.get_app("/secure", Some(&new_cookie)).await.status(),
        200
    );
}

#[tokio::test]
async fn mfa_required_sends_a_user_without_factor_to_enrolment_after_the_password() {
    let rig =
        Rig::start("[access]\ndefault_policy = \"one_factor\"\n[mfa]\nrequired = true\n").await;
    rig.user("carol", None, &[]).await;

    let (status, cookie, body) = rig.password_login("carol", PASSWORD, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "second_factor_required");
    let cookie = cookie.expect("cookie");
    // No protected page before enrolment.
    let resp = rig.get_app("/anything", Some(&cookie)).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(json_body(resp).await["error"], "second_factor_required");
    let resp = get(&rig.gw, "/anything", Some(&cookie), Client::Browser).await;
    assert_eq!(resp.status(), 302);
    let resp = get(
        &rig.gw,
        &location(&resp).expect("Location"),
        Some(&cookie),
        Client::Browser,
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        location(&resp).as_deref(),
        Some("/.stepgate/settings?rd=%2Fanything")
    );
    assert_eq!(rig.upstream.requests(), 0);

    // No e-mail address: the password is enough to enrol.
    let totp = rig.enrol_totp(&cookie).await;
    assert_eq!(
        rig.get_app("/anything", Some(&totp.cookie)).await.status(),
        200
    );

    // Next time: password then the code.
    rig.next_step();
    let pending = rig.login_pending("carol").await;
    assert_eq!(rig.get_app("/anything", Some(&pending)).await.status(), 401);
    let cookie = rig
        .verify_ok(&pending, "totp", &rig.totp_now(&totp.secret))
        .await;
    assert_eq!(rig.get_app("/anything", Some(&cookie)).await.status(), 200);
}

#[tokio::test]
async fn mfa_required_groups_apply_only_to_their_members() {
    let rig = Rig::start(
        "[access]\ndefault_policy = \"one_factor\"\n[mfa]\nrequired_groups = [\"admins\"]\n",
    )
    .await;
    rig.user("root", None, &["admins"]).await;
    rig.user("dave", None, &["staff"]).await;

    let dave = rig.login_one_factor("dave").await;
    assert_eq!(rig.get_app("/x", Some(&dave)).await.status(), 200);

    let (status, root, body) = rig.password_login("root", PASSWORD, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "second_factor_required", "{body}");
    let root = root.expect("cookie");
    assert_eq!(rig.get_app("/x", Some(&root)).await.status(), 401);
}

#[tokio::test]
async fn mfa_required_first_enrolment_needs_an_emailed_code_when_the_user_has_an_email() {
    let rig = Rig::start("[mfa]\nrequired = true\n[regulation]\nmax_retries = 100\n").await;
    rig.user("erin", Some("erin@example.test"), &[]).await;
    let (status, cookie, body) = rig.password_login("erin", PASSWORD, &[]).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("second_factor_required"))
    );
    let cookie = cookie.expect("cookie");

    // A stolen password alone cannot enrol a device.
    let (status, _, body) = rig
        .post_json(
            "/settings/totp/begin",
            Some(&cookie),
            json!({ "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "email_code_required");
    assert!(body.get("secret").is_none());
    let (status, _, body) = rig
        .post_json(
            "/settings/totp/begin",
            Some(&cookie),
            json!({ "password": PASSWORD, "email_code": "000000" }),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.get("secret").is_none());

    // The settings page's "Email me a code" button.
    let n = rig.smtp.messages().len();
    let (status, _, body) = rig.send_code(&cookie, "email").await;
    assert_eq!(
        status, 200,
        "asking for the enrolment code by e-mail: {body}"
    );
    let code = rig.code_mail_after(n).await.code();
    let (status, _, body) = rig
        .post_json(
            "/settings/totp/begin",
            Some(&cookie),
            json!({ "password": PASSWORD, "email_code": code }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["secret"].is_string());
}

/// Guessing the emailed code counts in the account's regulation like a wrong password: whoever
/// holds only the password is banned after `max_retries` wrong codes, the right code and the
/// right password included from then on.
#[tokio::test]
async fn wrong_enrolment_codes_count_toward_a_ban() {
    let rig = Rig::start("[mfa]\nrequired = true\n[regulation]\nmax_retries = 3\n").await;
    rig.user("erin", Some("erin@example.test"), &[]).await;
    let (_, cookie, _) = rig.password_login("erin", PASSWORD, &[]).await;
    let cookie = cookie.expect("cookie");
    let n = rig.smtp.messages().len();
    let (status, _, body) = rig.send_code(&cookie, "email").await;
    assert_eq!(status, 200, "{body}");
    let code = rig.code_mail_after(n).await.code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for attempt in 0..3 {
        let (status, _, body) = rig
            .post_json(
                "/settings/totp/begin",
                Some(&cookie),
                json!({ "password": PASSWORD, "email_code": wrong }),
            )
            .await;
        assert_eq!(status, 401, "attempt {attempt}: {body}");
        assert_eq!(body["error"], "email_code_required");
    }
    let (status, _, body) = rig
        .post_json(
            "/settings/totp/begin",
            Some(&cookie),
            json!({ "password": PASSWORD, "email_code": code }),
        )
        .await;
    assert_eq!(status, 429, "banned after three wrong codes: {body}");
    assert!(body.get("secret").is_none());
}

/// The phone is a second factor too: under `mfa.required`, a stolen password alone must not
/// make the attacker's phone the account's first one.
#[tokio::test]
async fn mfa_required_first_phone_needs_an_emailed_code_too() {
    let rig = Rig::start("[mfa]\nrequired = true\n[regulation]\nmax_retries = 100\n").await;
    rig.user("erin", Some("erin@example.test"), &[]).await;
    let (status, cookie, body) = rig.password_login("erin", PASSWORD, &[]).await;
    assert_eq!(status, 200, "{body}");
    let cookie = cookie.expect("cookie");

    // The settings page's phone form asks for both, like the authenticator's.
    let page = get(
        &rig.gw,
        "/.stepgate/settings",
        Some(&cookie),
        Client::Browser,
    )
    .await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("page");
    for field in [
        r#"id="phone-password" name="password""#,
        r#"id="phone-email-code" name="email_code""#,
        r#"id="totp-password" name="password""#,
        r#"id="totp-email-code" name="email_code""#,
    ] {
        assert!(html.contains(field), "settings page without {field}");
    }

    let attempts = [
        json!({ "phone": "+33612345678", "password": PASSWORD }),
        json!({ "phone": "+33612345678", "password": PASSWORD, "email_code": "000000" }),
    ];
    for attempt in attempts {
        let (status, _, body) = rig
            .post_json("/settings/phone", Some(&cookie), attempt)
            .await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "email_code_required", "{body}");
    }
    assert!(rig.sms.received().is_empty(), "no code went to the phone");

    // With the code sent to the account's own address, the phone can be added.
    let n = rig.smtp.messages().len();
    let (status, _, body) = rig.send_code(&cookie, "email").await;
    assert_eq!(status, 200, "{body}");
    let code = rig.code_mail_after(n).await.code();
    let (status, _, body) = rig
        .post_json(
            "/settings/phone",
            Some(&cookie),
            json!({ "phone": "+33612345678", "password": PASSWORD, "email_code": code }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(rig.sms_after(0).await.json()["to"], "+33612345678");
}

#[tokio::test]
async fn pending_challenge_dies_after_five_wrong_codes() {
    let rig = Rig::start("[regulation]\nmax_retries = 100\n").await;
    let totp = rig.user_with_totp("alice", None).await;
    let pending = rig.login_pending("alice").await;
    let wrong = wrong_code(&rig.totp_now(&totp.secret));
    for _ in 0..4 {
        rig.verify_refused(&pending, "totp", &wrong).await;
    }
    let (status, cookie, body) = rig.verify(&pending, "totp", &wrong).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "too_many_attempts");
    assert_eq!(body["login_url"], "/.stepgate/login?rd=%2F");
    assert!(cookie.is_none());
    // The session is gone: even the right code does not bring it back.
    let (status, cookie, body) = rig
        .verify(&pending, "totp", &rig.totp_now(&totp.secret))
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(cookie.is_none());
    assert_eq!(
        rig.session(&pending).await.1["error"],
        "authentication_required"
    );

    // A new password login starts a new challenge.
    let pending = rig.login_pending("alice").await;
    rig.verify_ok(&pending, "totp", &rig.totp_now(&totp.secret))
        .await;
}

#[tokio::test]
async fn pending_challenge_dies_after_five_minutes() {
    let rig = Rig::start("").await;
    let totp = rig.user_with_totp("alice", None).await;

    let pending = rig.login_pending("alice").await;
    rig.advance(5 * MINUTE - SECOND);
    rig.verify_ok(&pending, "totp", &rig.totp_now(&totp.secret))
        .await;

    rig.next_step();
    let pending = rig.login_pending("alice").await;
    rig.advance(5 * MINUTE);
    let (status, cookie, body) = rig
        .verify(&pending, "totp", &rig.totp_now(&totp.secret))
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "challenge_expired");
    assert!(cookie.is_none());
    assert_eq!(
        rig.session(&pending).await.1["error"],
        "authentication_required"
    );
}

/// Wrong codes after the right password, until a ban: the owner is told by email that
/// someone who knows the password is guessing the second factor.
#[tokio::test]
async fn a_ban_for_wrong_codes_after_the_right_password_tells_the_owner() {
    let rig = Rig::start("[regulation]\nmax_retries = 3\n").await;
    let totp = rig
        .user_with_totp("alice", Some("alice@example.test"))
        .await;
    let mails = rig.smtp.messages().len();
    let pending = rig.login_pending("alice").await;
    let wrong = wrong_code(&rig.totp_now(&totp.secret));
    for _ in 0..3 {
        rig.verify(&pending, "totp", &wrong).await;
    }
    let mail = rig
        .mail_with_subject_after(mails, "sign-in stopped at the second step")
        .await;
    assert_eq!(mail.envelope_to, ["alice@example.test"]);
}

#[tokio::test]
async fn rejects_second_factor_brute_force_across_repeated_password_logins() {
    // Three failures in the window ban the account (the default).
    let rig = Rig::start("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n").await;
    let totp = rig.user_with_totp("alice", None).await;
    let attacker = [("x-forwarded-for", "203.0.113.7")];
    let wrong = wrong_code(&rig.totp_now(&totp.secret));

    let pending = rig.login_pending_with("alice", &attacker).await;
    for _ in 0..2 {
        let resp = rig
            .post_with(
                "/verify",
                Some(&pending),
                json!({ "method": "totp", "code": wrong }),
                &attacker,
            )
            .await;
        assert_eq!(resp.status(), 401);
    }
    // Typing the password again opens a new challenge but does not forget those failures.
    let pending = rig.login_pending_with("alice", &attacker).await;
    let resp = rig
        .post_with(
            "/verify",
            Some(&pending),
            json!({ "method": "totp", "code": wrong }),
            &attacker,
        )
        .await;
    assert_eq!(resp.status(), 401);

    // Banned: the right code is not even checked.
    let resp = rig
        .post_with(
            "/verify",
            Some(&pending),
            json!({ "method": "totp", "code": rig.totp_now(&totp.secret) }),
            &attacker,
        )
        .await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    assert_eq!(json_body(resp).await["error"], "too_many_requests");
    // The account is banned, from any address.
    let (status, cookie, _) = rig
        .password_login("alice", PASSWORD, &[("x-forwarded-for", "198.51.100.9")])
        .await;
    assert_eq!(status, 429);
    assert!(cookie.is_none());
}

#[tokio::test]
async fn rejects_open_redirect_after_the_second_factor() {
    let rig = Rig::start("").await;
    let totp = rig.user_with_totp("alice", None).await;
    for (i, evil) in [
        "https://evil.example/steal",
        "//evil.example/steal",
        "/\\evil.example",
        "javascript:alert(1)",
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            rig.next_step();
        }
        let pending = rig.login_pending("alice").await;
        let code = rig.totp_now(&totp.secret);
        let resp = common::auth::send(
            common::http_client()
                .post(rig.gw.url_for("/.stepgate/verify"))
                .header("accept", common::auth::BROWSER_ACCEPT)
                .header("cookie", &pending)
                .form(&[("method", "totp"), ("code", &code), ("rd", evil)]),
        )
        .await;
        assert_eq!(resp.status(), 303, "{evil}");
        assert_eq!(location(&resp).as_deref(), Some("/"), "{evil}");
    }
}

/// Basic credentials on a `one_factor` rule with `allow_basic` are for accounts without a
/// second factor: the password of an account whose owner set one up passes nothing alone.
#[tokio::test]
async fn basic_credentials_pass_nothing_for_an_account_with_a_second_factor() {
    const BASIC_RULE: &str = r#"
[server]
trusted_proxies = ["127.0.0.1"]

[access]
default_policy = "two_factor"

[[access.rules]]
path = "^/api/"
policy = "one_factor"
allow_basic = true
"#;
    use base64::Engine as _;
    let rig = Rig::start(BASIC_RULE).await;
    rig.user("robot", None, &[]).await;
    rig.user_with_totp("alice", None).await;
    let ask = |name: &'static str| {
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{name}:{PASSWORD}"));
        common::http_client()
            .get(rig.gw.url_for("/.stepgate/authz/forward-auth"))
            .header("X-Forwarded-Method", "GET")
            .header("X-Forwarded-Proto", "http")
            .header("X-Forwarded-Host", "app.test")
            .header("X-Forwarded-Uri", "/api/items")
            .header("Authorization", format!("Basic {credentials}"))
            .header("Accept", "application/json")
            .send()
    };
    let resp = ask("robot").await.expect("forward-auth");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["remote-user"], "robot");
    let resp = ask("alice").await.expect("forward-auth");
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("remote-user").is_none());
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("Basic realm=")
    );
}
