//! Codes sent by e-mail (to a real SMTP server in the test) and by SMS (to a webhook sink):
//! sent at login, message contents and language, lifetime, newest-only, attempt cap, resend
//! cooldown, hourly limit, and what the user sees when sending fails.

mod common;

use serde_json::json;

use common::mfa::{MINUTE, PASSWORD, Rig, SECOND, sms_code, wrong_code};
use common::{SmsSink, SmtpServer};

const NO_BAN: &str = "[regulation]\nmax_retries = 100\n";

#[tokio::test]
async fn email_code_is_sent_at_login_with_text_and_html_parts() {
    let rig = Rig::start("").await;
    rig.user_with_email_codes("alice").await;
    let before = rig.smtp.messages().len();

    let pending = rig.login_pending("alice").await;
    // Sent before the answer: already in the server.
    assert_eq!(rig.smtp.messages().len(), before + 1);
    let mail = rig.code_mail_after(before).await;
    assert_eq!(mail.envelope_to, ["alice@example.test"]);
    assert_eq!(mail.subject, "Your Stepgate verification code");
    assert_eq!((mail.text_parts, mail.html_parts), (1, 1));
    let code = mail.code();
    assert!(mail.html.contains(&code), "{}", mail.html);
    assert!(mail.text.contains("Hello Name of alice,"), "{}", mail.text);
    assert!(mail.text.contains("valid for 10 minutes"), "{}", mail.text);

    let (status, body) = rig.session(&pending).await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("second_factor_required"))
    );
    let cookie = rig.verify_ok(&pending, "email", &code).await;
    let info = rig.session_ok(&cookie).await;
    assert_eq!(info["auth_level"], "two_factor");
    assert_eq!(info["two_factor"]["methods"], json!(["email"]));

    // Single use.
    rig.advance(MINUTE);
    let again = rig.login_pending("alice").await;
    rig.verify_refused(&again, "email", &code).await;
}

/// The email and the verification page say how long a code lasts as configured
/// (`mfa.code_ttl`), not a fixed ten minutes.
#[tokio::test]
async fn the_code_lifetime_told_is_the_configured_one() {
    let rig = Rig::start("[mfa]\ncode_ttl = \"90s\"\n").await;
    rig.user_with_email_codes("alice").await;
    let before = rig.smtp.messages().len();
    let pending = rig.login_pending("alice").await;
    let mail = rig.code_mail_after(before).await;
    assert!(mail.text.contains("valid for 90 seconds"), "{}", mail.text);
    assert!(!mail.text.contains("10 minutes"), "{}", mail.text);

    // Asking for another code from the verification page, as a browser, in French.
    rig.advance(MINUTE);
    let resp = common::http_client()
        .post(rig.gw.url_for("/.stepgate/verify/send"))
        .header("accept", common::auth::BROWSER_ACCEPT)
        .header("accept-language", "fr")
        .header("cookie", &pending)
        .form(&[("method", "email")])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.expect("page");
    assert!(page.contains("Il est valable 90 secondes."), "{page}");
}

#[tokio::test]
async fn email_code_comes_in_french_for_a_french_browser() {
    let rig = Rig::start("").await;
    rig.user_with_email_codes("zoe").await;
    let before = rig.smtp.messages().len();
    let pending = rig
        .login_pending_with("zoe", &[("accept-language", "fr-FR,fr;q=0.9,en;q=0.5")])
        .await;
    let mail = rig.code_mail_after(before).await;
    assert_eq!(mail.subject, "Votre code de vérification Stepgate");
    assert!(mail.text.contains("Bonjour Name of zoe,"), "{}", mail.text);
    assert!(mail.text.contains("valable 10 minutes"), "{}", mail.text);
    assert!(mail.html.contains("lang=\"fr\""), "{}", mail.html);
    let code = mail.code();
    assert!(mail.html.contains(&code));
    rig.verify_ok(&pending, "email", &code).await;
}

#[tokio::test]
async fn sms_login_needs_a_confirmed_phone_first() {
    let rig = Rig::start(NO_BAN).await;
    rig.user("alice", None, &[]).await;
    let cookie = rig.login_one_factor("alice").await;

    // A number that is not in international form is refused.
    let (status, _, body) = rig
        .post_json(
            "/settings/phone",
            Some(&cookie),
            json!({ "phone": "0612", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(rig.sms.received().is_empty());

    // The session alone cannot add a phone: the account's password is asked again.
    let attempts = [
        json!({ "phone": "+33612345678", "password": "Wrong-Horse-0000" }),
        json!({ "phone": "+33612345678" }),
    ];
    for attempt in attempts {
        let (status, _, body) = rig
            .post_json("/settings/phone", Some(&cookie), attempt)
            .await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_credentials", "{body}");
    }
    assert!(rig.sms.received().is_empty(), "no code went to the phone");

    let (status, _, body) = rig
        .post_json(
            "/settings/phone",
            Some(&cookie),
            json!({ "phone": "+33612345678", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sms = rig.sms_after(0).await;
    assert_eq!(sms.method, "POST");
    assert_eq!(sms.path, "/send");
    let payload = sms.json();
    assert_eq!(payload["to"], "+33612345678");
    let confirm_code = sms_code(&sms);

    // Added but unconfirmed: no second factor yet.
    let one = rig.login_one_factor("alice").await;
    assert_eq!(
        rig.session_ok(&one).await["two_factor"]["state"],
        "not_enabled"
    );
    let (status, _, body) = rig
        .post_json(
            "/settings/phone/confirm",
            Some(&cookie),
            json!({ "code": wrong_code(&confirm_code) }),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_code");
    let (status, _, body) = rig
        .post_json(
            "/settings/phone/confirm",
            Some(&cookie),
            json!({ "code": confirm_code }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Confirmed: login sends a code to the phone at once.
    let pending = rig.login_pending("alice").await;
    let sms = rig.sms_after(1).await;
    assert_eq!(sms.json()["to"], "+33612345678");
    let message = sms.json()["message"].as_str().expect("message").to_owned();
    assert!(message.contains("Stepgate"), "{message}");
    let code = sms_code(&sms);
    assert_ne!(code, confirm_code);
    // The phone-confirmation code is not a login code.
    rig.verify_refused(&pending, "sms", &confirm_code).await;
    let cookie = rig.verify_ok(&pending, "sms", &code).await;
    let info = rig.session_ok(&cookie).await;
    assert_eq!(info["auth_level"], "two_factor");
    assert_eq!(info["two_factor"]["methods"], json!(["sms"]));
}

#[tokio::test]
async fn email_code_expires_after_ten_minutes() {
    let rig = Rig::start("").await;
    rig.user_with_email_codes("alice").await;
    let cookie = rig.login_with_email_code("alice").await;

    // Re-verification codes follow the same rules as login codes.
    rig.advance(MINUTE);
    let n = rig.smtp.messages().len();
    let (status, _, body) = rig.send_code(&cookie, "email").await;
    assert_eq!(status, 200, "{body}");
    let code = rig.code_mail_after(n).await.code();
    rig.advance(10 * MINUTE - SECOND);
    let cookie = rig.verify_ok(&cookie, "email", &code).await;

    rig.advance(MINUTE);
    let n = rig.smtp.messages().len();
    let (status, _, body) = rig.send_code(&cookie, "email").await;
    assert_eq!(status, 200, "{body}");
    let code = rig.code_mail_after(n).await.code();
    rig.advance(10 * MINUTE);
    let body = rig.verify_refused(&cookie, "email", &code).await;
    assert!(
        body["message"].as_str().unwrap_or("").contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn only_the_newest_email_code_is_valid() {
    let rig = Rig::start(NO_BAN).await;
    rig.user_with_email_codes("alice").await;
    let n = rig.smtp.messages().len();
    let pending = rig.login_pending("alice").await;
    let first = rig.code_mail_after(n).await.code();
    rig.advance(MINUTE);
    let n = rig.smtp.messages().len();
    let (status, _, body) = rig.send_code(&pending, "email").await;
    assert_eq!(status, 200, "{body}");
    let second = rig.code_mail_after(n).await.code();
    // Two random six-digit codes are equal once in a million runs.
    assert_ne!(first, second, "a new code was drawn");
    rig.verify_refused(&pending, "email", &first).await;
    rig.verify_ok(&pending, "email", &second).await;
}

#[tokio::test]
async fn five_wrong_tries_kill_an_email_code() {
    let rig = Rig::start(NO_BAN).await;
    rig.user_with_email_codes("alice").await;
    // Two logged-in sessions, so the code's tries can be spread over both and neither
    // session reaches its own limit of wrong codes.
    let s1 = rig.login_with_email_code("alice").await;
    rig.advance(MINUTE);
    let s2 = rig.login_with_email_code("alice").await;
    rig.advance(MINUTE);

    let n = rig.smtp.messages().len();
    let (status, _, body) = rig.send_code(&s1, "email").await;
    assert_eq!(status, 200, "{body}");
    let code = rig.code_mail_after(n).await.code();
    let wrong = wrong_code(&code);
    for _ in 0..4 {
        rig.verify_refused(&s1, "email", &wrong).await;
    }
    rig.verify_refused(&s2, "email", &wrong).await;
    // Fifth wrong try: the code is void even when typed right.
    let body = rig.verify_refused(&s2, "email", &code).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("no longer be used"),
        "{body}"
    );
    // A new code works in the same session.
    rig.advance(MINUTE);
    let n = rig.smtp.messages().len();
    let (status, _, _) = rig.send_code(&s2, "email").await;
    assert_eq!(status, 200);
    let code = rig.code_mail_after(n).await.code();
    rig.verify_ok(&s2, "email", &code).await;
}

#[tokio::test]
async fn resend_waits_for_the_sixty_second_cooldown() {
    let rig = Rig::start("").await;
    rig.user_with_email_codes("alice").await;
    let n = rig.smtp.messages().len();
    let pending = rig.login_pending("alice").await;
    rig.code_mail_after(n).await;
    let sent = rig.smtp.messages().len();

    let (status, retry_after, body) = rig.send_code(&pending, "email").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("60"));
    assert_eq!(body["error"], "too_many_requests");
    rig.advance(59 * SECOND);
    let (status, retry_after, body) = rig.send_code(&pending, "email").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["retry_after"], 1);
    assert_eq!(
        rig.smtp.messages().len(),
        sent,
        "nothing sent while cooling down"
    );

    rig.advance(SECOND);
    let (status, _, body) = rig.send_code(&pending, "email").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "sent");
    let code = rig.code_mail_after(sent).await.code();
    rig.verify_ok(&pending, "email", &code).await;
}

#[tokio::test]
async fn at_most_five_codes_are_sent_per_hour() {
    let rig = Rig::start("").await;
    rig.user_with_email_codes("alice").await;
    let start = rig.now();
    // Send 1: at login.
    let cookie = rig.login_with_email_code("alice").await;
    for i in 2..=5 {
        rig.advance(MINUTE);
        let (status, _, body) = rig.send_code(&cookie, "email").await;
        assert_eq!(status, 200, "send {i}: {body}");
    }
    let sent = rig.smtp.messages().len();
    rig.advance(MINUTE);
    // Sixth within the hour: refused until the first send leaves the hour.
    let (status, retry_after, body) = rig.send_code(&cookie, "email").await;
    assert_eq!(status, 429, "{body}");
    let expected = 3600 - rig.now().since(start).as_secs();
    assert_eq!(retry_after, Some(expected.to_string()));
    assert_eq!(rig.smtp.messages().len(), sent);

    rig.clock.set(start.plus(60 * MINUTE));
    let (status, _, body) = rig.send_code(&cookie, "email").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(rig.smtp.messages().len(), sent + 1);
}

#[tokio::test]
async fn smtp_refusal_gives_a_clear_503_and_the_user_can_retry_at_once() {
    let smtp = SmtpServer::builder().refuse_recipients().start().await;
    let rig = Rig::start_with(smtp, SmsSink::start().await, "").await;
    rig.user("alice", Some("alice@example.test"), &[]).await;
    let cookie = rig.login_one_factor("alice").await;
    rig.enable_email_codes(&cookie).await;

    // The login goes on to the verification step even though the code could not be sent.
    let pending = rig.login_pending("alice").await;
    for attempt in 0..7 {
        // Never a cooldown or hourly limit: an undelivered code is not counted.
        let (status, retry_after, body) = rig.send_code(&pending, "email").await;
        assert_eq!(status, 503, "attempt {attempt}: {body}");
        assert_eq!(retry_after, None);
        assert_eq!(body["error"], "code_not_sent");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or("")
                .contains("could not send the code"),
            "{body}"
        );
    }
    assert!(rig.smtp.messages().is_empty());
    // Nothing is lost: the pending session is still there.
    let (status, body) = rig.session(&pending).await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("second_factor_required"))
    );
}

/// A webhook that refuses the message (4xx) sent nothing: the code is void and the user may
/// ask again at once.
#[tokio::test]
async fn sms_webhook_refusal_gives_503_and_a_retry_succeeds_at_once() {
    let rig = Rig::start(NO_BAN).await;
    rig.user("alice", None, &[]).await;
    let cookie = rig.login_one_factor("alice").await;
    rig.add_phone(&cookie, "+447700900123").await;
    let received = rig.sms.received().len();

    rig.sms.set_status(422);
    let pending = rig.login_pending("alice").await;
    let failed = rig.sms_after(received).await;
    let (status, retry_after, body) = rig.send_code(&pending, "sms").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after, None);
    assert_eq!(body["error"], "code_not_sent");
    // The code the gateway failed to deliver is void.
    rig.verify_refused(&pending, "sms", &sms_code(&failed))
        .await;

    rig.sms.set_status(200);
    let n = rig.sms.received().len();
    let (status, _, body) = rig.send_code(&pending, "sms").await;
    assert_eq!(status, 200, "{body}");
    let code = sms_code(&rig.sms_after(n).await);
    rig.verify_ok(&pending, "sms", &code).await;
}

/// A webhook that fails with a server error (5xx) may have sent the message first (or a proxy
/// in front of the provider answered): the send counts, so failing answers cannot lift the
/// limits on how many messages reach a number.
#[tokio::test]
async fn a_send_answered_with_a_server_error_still_counts() {
    let rig = Rig::start(NO_BAN).await;
    rig.user("alice", None, &[]).await;
    let cookie = rig.login_one_factor("alice").await;
    rig.add_phone(&cookie, "+447700900123").await;
    let received = rig.sms.received().len();

    rig.sms.set_status(502);
    let pending = rig.login_pending("alice").await;
    let sent = rig.sms_after(received).await;
    let (status, retry_after, body) = rig.send_code(&pending, "sms").await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.is_some(), "{body}");
    assert_eq!(rig.sms.received().len(), received + 1, "no second message");
    // The message did reach the phone: its code works.
    rig.verify_ok(&pending, "sms", &sms_code(&sent)).await;
}

/// A send that timed out may have reached the phone all the same: its code stays valid and it
/// counts as sent, so asking again at once meets the cooldown (a slow provider must not lift
/// the limits on how many messages reach the user).
#[tokio::test]
async fn a_send_that_timed_out_still_counts() {
    let rig = Rig::start("[regulation]\nmax_retries = 100\n[sms]\ntimeout = \"1s\"\n").await;
    rig.user("alice", None, &[]).await;
    let cookie = rig.login_one_factor("alice").await;
    rig.add_phone(&cookie, "+447700900123").await;
    let received = rig.sms.received().len();

    rig.sms.set_hang(true);
    let pending = rig.login_pending("alice").await;
    let sent = rig.sms_after(received).await;
    let (status, retry_after, body) = rig.send_code(&pending, "sms").await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.is_some(), "{body}");
    assert_eq!(rig.sms.received().len(), received + 1, "no second message");
    rig.verify_ok(&pending, "sms", &sms_code(&sent)).await;
}

/// The same holds for the text confirming a new number: one that timed out keeps its code and
/// counts as sent, so adding the number again at once meets the cooldown.
#[tokio::test]
async fn a_phone_confirmation_that_timed_out_still_counts() {
    let rig = Rig::start("[regulation]\nmax_retries = 100\n[sms]\ntimeout = \"1s\"\n").await;
    rig.user("alice", None, &[]).await;
    let cookie = rig.login_one_factor("alice").await;
    let add = json!({ "phone": "+447700900123", "password": common::mfa::PASSWORD });

    rig.sms.set_hang(true);
    let before = rig.sms.received().len();
    let (status, _, body) = rig
        .post_json("/settings/phone", Some(&cookie), add.clone())
        .await;
    assert_eq!(status, 503, "{body}");
    // It may still arrive: the answer says so, and does not ask to try again at once.
    assert_eq!(body["error"], "code_delayed");
    let sent = rig.sms_after(before).await;

    rig.sms.set_hang(false);
    let (status, _, body) = rig.post_json("/settings/phone", Some(&cookie), add).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["retry_after"].as_u64().is_some(), "{body}");
    assert_eq!(rig.sms.received().len(), before + 1, "no second message");
    let (status, _, body) = rig
        .post_json(
            "/settings/phone/confirm",
            Some(&cookie),
            json!({ "code": sms_code(&sent) }),
        )
        .await;
    assert_eq!(
        status, 200,
        "the code that may have arrived still confirms: {body}"
    );
}

/// A new number entered beside a verified phone waits for its own code: a typo, or a code that
/// never arrives, leaves SMS codes going to the verified number. Once confirmed, the new number
/// is the phone.
#[tokio::test]
async fn a_new_phone_number_replaces_the_verified_one_only_once_confirmed() {
    let rig = Rig::start(NO_BAN).await;
    rig.user("alice", None, &[]).await;
    let cookie = rig.login_one_factor("alice").await;
    rig.add_phone(&cookie, "+447700900123").await;
    let cookie = {
        let pending = rig.login_pending("alice").await;
        let code = sms_code(&rig.sms_after(rig.sms.received().len() - 1).await);
        rig.verify_ok(&pending, "sms", &code).await
    };

    // A mistyped number: the code goes there, and nothing else changes.
    rig.advance(2 * MINUTE);
    let before = rig.sms.received().len();
    let (status, _, body) = rig
        .post_json(
            "/settings/phone",
            Some(&cookie),
            json!({ "phone": "+447700900999", "password": common::mfa::PASSWORD }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let confirm = rig.sms_after(before).await;
    assert_eq!(confirm.json()["to"], "+447700900999");
    let info = rig.session_ok(&cookie).await;
    assert_eq!(info["two_factor"]["methods"], json!(["sms"]), "{info}");

    // The next login's code still goes to the verified number.
    rig.advance(2 * MINUTE);
    let n = rig.sms.received().len();
    let pending = rig.login_pending("alice").await;
    let login_sms = rig.sms_after(n).await;
    assert_eq!(login_sms.json()["to"], "+447700900123");
    rig.verify_ok(&pending, "sms", &sms_code(&login_sms)).await;

    // Confirmed: the new number is the phone.
    let (status, _, body) = rig
        .post_json(
            "/settings/phone/confirm",
            Some(&cookie),
            json!({ "code": sms_code(&confirm) }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    rig.advance(2 * MINUTE);
    let n = rig.sms.received().len();
    rig.login_pending("alice").await;
    assert_eq!(rig.sms_after(n).await.json()["to"], "+447700900999");
}

/// The login sends the preferred method's code itself; the verification page it leads to says
/// that the code is on its way, or that it could not be sent (the page once said nothing, and
/// the user pressing "Email me a code" met the resend cooldown).
#[tokio::test]
async fn the_verify_page_says_whether_the_login_sent_the_code() {
    for sent in [true, false] {
        let smtp = if sent {
            SmtpServer::start().await
        } else {
            SmtpServer::builder().refuse_data().start().await
        };
        let rig = Rig::start_with(smtp, SmsSink::start().await, NO_BAN).await;
        rig.user_with_email_codes("alice").await;
        let resp = common::auth::post_login(
            &rig.gw,
            &[("username", "alice"), ("password", PASSWORD), ("rd", "/")],
            common::auth::Client::Browser,
            &[],
        )
        .await;
        assert_eq!(resp.status(), 303, "sent: {sent}");
        let to = common::auth::location(&resp).expect("Location");
        let flag = if sent { "1" } else { "0" };
        assert_eq!(to, format!("/.stepgate/verify?rd=%2F&sent={flag}"));
        let cookie = common::auth::set_session_cookie(resp.headers()).expect("cookie");
        let page = common::auth::text(
            common::auth::get(&rig.gw, &to, Some(&cookie), common::auth::Client::Browser).await,
        )
        .await;
        assert_eq!(page.contains("We sent you a code."), sent, "{page}");
        assert_eq!(
            page.contains("We could not send the code."),
            !sent,
            "{page}"
        );
        assert_eq!(page.contains(r#"aria-invalid="true""#), !sent, "{page}");
    }
}

/// A login whose code may still arrive (the SMS provider answered a server error, perhaps after
/// sending it) leads to a verification page that says so, rather than that it failed: asking
/// again at once would meet the cooldown.
#[tokio::test]
async fn the_verify_page_says_when_the_code_may_still_arrive() {
    let rig = Rig::start(NO_BAN).await;
    rig.user("alice", None, &[]).await;
    let cookie = rig.login_one_factor("alice").await;
    rig.add_phone(&cookie, "+447700900123").await;
    rig.sms.set_status(502);
    let resp = common::auth::post_login(
        &rig.gw,
        &[("username", "alice"), ("password", PASSWORD), ("rd", "/")],
        common::auth::Client::Browser,
        &[],
    )
    .await;
    assert_eq!(resp.status(), 303);
    let to = common::auth::location(&resp).expect("Location");
    assert_eq!(to, "/.stepgate/verify?rd=%2F&sent=delayed");
    let pending = common::auth::set_session_cookie(resp.headers()).expect("cookie");
    let page = common::auth::text(
        common::auth::get(&rig.gw, &to, Some(&pending), common::auth::Client::Browser).await,
    )
    .await;
    assert!(page.contains("It may still arrive"), "{page}");
    assert!(!page.contains("We could not send the code."), "{page}");
}
