//! The user's own second-factor settings through the running gateway: backup codes, preferred
//! method, `mfa.email_default`, disabling 2FA, re-verification before changes, the password
//! change, and the administrator's `stepgate user reset-2fa`.

mod common;

use serde_json::json;

use common::auth::{is_logged_in, username};
use common::cli::run_async;
use common::mfa::{MINUTE, PASSWORD, Rig, SECOND};
use stepgate::auth::audit::AuditKind;

const NO_BAN: &str = "[regulation]\nmax_retries = 100\n";

/// `POST /settings/backup-codes/regenerate` (JSON) with `cookie`: the status and the body.
async fn regenerate_backup_codes(rig: &Rig, cookie: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = rig
        .post_json(
            "/settings/backup-codes/regenerate",
            Some(cookie),
            json!({ "password": PASSWORD }),
        )
        .await;
    (status, body)
}

/// New backup codes are a new way in: without the password, or with a wrong one, none are
/// made and the old set still works.
#[tokio::test]
async fn new_backup_codes_need_the_password() {
    let rig = Rig::start(NO_BAN).await;
    let totp = rig.user_with_totp("alice", None).await;
    for body in [json!({}), json!({ "password": "not-the-password" })] {
        let (status, _, answer) = rig
            .post_json(
                "/settings/backup-codes/regenerate",
                Some(&totp.cookie),
                body.clone(),
            )
            .await;
        assert!(
            matches!(status, 400 | 401 | 403),
            "{body}: {status} {answer}"
        );
        assert!(answer.get("backup_codes").is_none(), "{answer}");
    }
    let pending = rig.login_pending("alice").await;
    let cookie = rig
        .verify_ok(&pending, "backup", &totp.backup_codes[0])
        .await;
    assert_eq!(
        rig.session_ok(&cookie).await["two_factor"]["backup_codes_remaining"],
        5
    );
}

#[tokio::test]
async fn backup_code_logs_in_once_and_is_counted_audited_and_notified() {
    let rig = Rig::start(NO_BAN).await;
    let totp = rig
        .user_with_totp("alice", Some("alice@example.test"))
        .await;
    assert_eq!(totp.backup_codes.len(), 6);
    let distinct: std::collections::HashSet<&String> = totp.backup_codes.iter().collect();
    assert_eq!(distinct.len(), 6);
    for code in &totp.backup_codes {
        // At least 10 symbols of a 32-letter alphabet: 50 bits each.
        let bare: String = code.chars().filter(|c| *c != '-').collect();
        assert!(bare.len() >= 10, "{code}");
        assert!(bare.chars().all(|c| c.is_ascii_alphanumeric()), "{code}");
    }

    let mails = rig.smtp.messages().len();
    let pending = rig.login_pending("alice").await;
    let cookie = rig
        .verify_ok(&pending, "backup", &totp.backup_codes[0])
        .await;
    let info = rig.session_ok(&cookie).await;
    assert_eq!(info["auth_level"], "two_factor");
    assert_eq!(info["two_factor"]["backup_codes_remaining"], 5);

    let events = rig.gw.app().store.recent_audit(50).expect("audit");
    let used = events
        .iter()
        .find(|e| e.kind == AuditKind::BackupCodeUsed)
        .expect("backup code use audited");
    assert_eq!(used.username.as_deref(), Some("alice"));
    assert!(
        events.iter().all(|e| !e
            .detail
            .as_deref()
            .unwrap_or("")
            .contains(&totp.backup_codes[0])),
        "no code in the audit trail"
    );
    let notice = rig
        .mail_with_subject_after(mails, "a backup code was used")
        .await;
    assert_eq!(notice.envelope_to, ["alice@example.test"]);
    assert!(
        notice.text.contains("Backup codes left: 5."),
        "{}",
        notice.text
    );

    // Single use.
    let pending = rig.login_pending("alice").await;
    rig.verify_refused(&pending, "backup", &totp.backup_codes[0])
        .await;
    let cookie = rig
        .verify_ok(&pending, "backup", &totp.backup_codes[1])
        .await;
    assert_eq!(
        rig.session_ok(&cookie).await["two_factor"]["backup_codes_remaining"],
        4
    );
}

#[tokio::test]
async fn regenerated_backup_codes_void_the_old_set() {
    let rig = Rig::start(NO_BAN).await;
    let totp = rig.user_with_totp("alice", None).await;
    let (status, body) = regenerate_backup_codes(&rig, &totp.cookie).await;
    assert_eq!(status, 200, "{body}");
    let fresh: Vec<String> = body["backup_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    assert_eq!(fresh.len(), 6);
    assert!(fresh.iter().all(|c| !totp.backup_codes.contains(c)));

    let pending = rig.login_pending("alice").await;
    rig.verify_refused(&pending, "backup", &totp.backup_codes[2])
        .await;
    let cookie = rig.verify_ok(&pending, "backup", &fresh[2]).await;
    assert_eq!(
        rig.session_ok(&cookie).await["two_factor"]["backup_codes_remaining"],
        5
    );
}

/// A user hears of every change to two-step verification, not only of it being turned on or
/// off: new backup codes, a new authenticator app (which replaces every backup code too).
#[tokio::test]
async fn changes_to_second_factors_send_a_notice() {
    let rig = Rig::start(NO_BAN).await;
    let mails = rig.smtp.messages().len();
    let totp = rig
        .user_with_totp("alice", Some("alice@example.test"))
        .await;
    let enabled = rig
        .mail_with_subject_after(mails, "two-step verification enabled")
        .await;
    assert_eq!(enabled.envelope_to, ["alice@example.test"]);

    let mails = rig.smtp.messages().len();
    let (status, body) = regenerate_backup_codes(&rig, &totp.cookie).await;
    assert_eq!(status, 200, "{body}");
    let changed = rig
        .mail_with_subject_after(mails, "two-step verification changed")
        .await;
    assert!(
        changed.text.contains("new backup codes"),
        "{}",
        changed.text
    );

    let mails = rig.smtp.messages().len();
    let replaced = rig.enrol_totp(&totp.cookie).await;
    rig.mail_with_subject_after(mails, "two-step verification changed")
        .await;
    assert_ne!(replaced.secret, totp.secret);
    assert!(
        rig.mails()[mails..]
            .iter()
            .all(|m| !m.subject.contains("enabled")),
        "a replacement is not announced as a first enrolment"
    );
}

#[tokio::test]
async fn preferred_method_decides_what_login_sends() {
    let rig = Rig::start("").await;
    rig.user("alice", Some("alice@example.test"), &[]).await;
    let cookie = rig.login_one_factor("alice").await;
    rig.enable_email_codes(&cookie).await;
    // TOTP on top of e-mail codes (a fresh second factor: the e-mail code just now).
    rig.advance(MINUTE);
    let cookie = rig.login_with_email_code("alice").await;
    let totp = rig.enrol_totp(&cookie).await;
    rig.next_step();

    // With TOTP on, e-mail is no longer the default: no mail at login.
    let mails = rig.smtp.messages().len();
    let pending = rig.login_pending("alice").await;
    assert_eq!(rig.smtp.messages().len(), mails, "no code mailed at login");
    let cookie = rig
        .verify_ok(&pending, "totp", &rig.totp_now(&totp.secret))
        .await;
    let info = rig.session_ok(&cookie).await;
    assert_eq!(info["two_factor"]["preferred"], "totp");
    assert_eq!(
        info["two_factor"]["methods"],
        json!(["totp", "email", "backup"])
    );

    // Backup codes are a fallback, never the preference; unknown methods are refused.
    for method in ["backup", "sms", "carrier-pigeon"] {
        let (status, _, body) = rig
            .post_json(
                "/settings/preferred-method",
                Some(&cookie),
                json!({ "method": method }),
            )
            .await;
        assert_eq!(status, 400, "{method}: {body}");
    }
    let (status, _, body) = rig
        .post_json(
            "/settings/preferred-method",
            Some(&cookie),
            json!({ "method": "email" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let info = rig.session_ok(&cookie).await;
    assert_eq!(info["two_factor"]["preferred"], "email");
    assert_eq!(
        info["two_factor"]["methods"],
        json!(["email", "totp", "backup"])
    );

    // Now login mails a code at once, and TOTP is still accepted.
    rig.advance(MINUTE);
    let mails = rig.smtp.messages().len();
    let pending = rig.login_pending("alice").await;
    let code = rig.code_mail_after(mails).await.code();
    rig.verify_ok(&pending, "email", &code).await;
    rig.advance(MINUTE);
    let pending = rig.login_pending("alice").await;
    rig.verify_ok(&pending, "totp", &rig.totp_now(&totp.secret))
        .await;
}

/// Email codes cannot be switched on where the gateway sends no email: the next login would ask
/// for a code that never comes.
#[tokio::test]
async fn email_codes_cannot_be_turned_on_without_email() {
    let upstream = common::EchoUpstream::start().await;
    let gw = common::Gateway::builder()
        .upstream(&upstream.url())
        .start()
        .await;
    common::auth::create_user_full(
        &gw,
        "alice",
        PASSWORD,
        &[],
        None,
        Some("alice@example.test"),
    )
    .await;
    let cookie = common::auth::login(&gw, "alice", PASSWORD).await;
    let resp = common::http_client()
        .post(gw.url_for("/.stepgate/settings/email-verification"))
        .header("accept", "application/json")
        .header("cookie", &cookie)
        .json(&json!({ "enabled": true }))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 400);
    let (_, info) = common::auth::session_info(&gw, Some(&cookie)).await;
    assert_eq!(info["two_factor"]["state"], "not_enabled", "{info}");
}

#[tokio::test]
async fn email_default_turns_email_codes_on_for_users_with_an_address() {
    let rig = Rig::start("[mfa]\nemail_default = true\n").await;
    rig.user("alice", Some("alice@example.test"), &[]).await;
    rig.user("nomail", None, &[]).await;

    // No address: nothing to send to, password only.
    rig.login_one_factor("nomail").await;

    let cookie = rig.login_with_email_code("alice").await;
    let info = rig.session_ok(&cookie).await;
    assert_eq!(info["two_factor"]["state"], "enabled");
    assert_eq!(info["two_factor"]["methods"], json!(["email"]));

    // The user may turn it off (with the second factor just given). It is the account's only
    // second factor: turning it off turns two-step verification off, which asks for the
    // password as disabling it does, and says so by email.
    let (status, _, body) = rig
        .post_json(
            "/settings/email-verification",
            Some(&cookie),
            json!({ "enabled": false }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = rig
        .post_json(
            "/settings/email-verification",
            Some(&cookie),
            json!({ "enabled": false, "password": "Wrong-Guess-5512" }),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        rig.session_ok(&cookie).await["two_factor"]["methods"],
        json!(["email"])
    );
    let page = common::http_client()
        .get(rig.gw.url_for("/.stepgate/settings"))
        .header("accept", "text/html")
        .header("cookie", &cookie)
        .send()
        .await
        .expect("settings page")
        .text()
        .await
        .expect("page");
    assert!(
        page.contains(r#"id="email-off-password" name="password""#),
        "the page asks for the password beside the switch"
    );
    let mails = rig.smtp.messages().len();
    let (status, _, body) = rig
        .post_json(
            "/settings/email-verification",
            Some(&cookie),
            json!({ "enabled": false, "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    rig.mail_with_subject_after(mails, "two-step verification disabled")
        .await;
    let mails = rig.smtp.messages().len();
    rig.login_one_factor("alice").await;
    assert_eq!(rig.smtp.messages().len(), mails);
}

#[tokio::test]
async fn settings_changes_need_a_second_factor_from_the_last_five_minutes() {
    let rig = Rig::start("").await;
    let totp = rig
        .user_with_totp("alice", Some("alice@example.test"))
        .await;
    let cookie = rig.login_with_totp("alice", &totp.secret).await;

    // Within the window: allowed.
    rig.advance(5 * MINUTE - SECOND);
    let (status, body) = regenerate_backup_codes(&rig, &cookie).await;
    assert_eq!(status, 200, "{body}");

    // Past it: every change asks for a second factor first.
    rig.advance(SECOND);
    let changes = [
        (
            "/settings/backup-codes/regenerate",
            json!({ "password": PASSWORD }),
        ),
        ("/settings/totp/begin", json!({ "password": PASSWORD })),
        ("/settings/email-verification", json!({ "enabled": true })),
        (
            "/settings/phone",
            json!({ "phone": "+33612345678", "password": PASSWORD }),
        ),
        ("/settings/2fa/disable", json!({ "password": PASSWORD })),
        (
            "/settings/password",
            json!({ "current_password": PASSWORD, "new_password": "Another-Horse-9922" }),
        ),
    ];
    for (path, body) in &changes {
        let (status, _, answer) = rig.post_json(path, Some(&cookie), body.clone()).await;
        assert_eq!(status, 401, "{path}: {answer}");
        assert_eq!(answer["error"], "reverify_required", "{path}");
        assert_eq!(
            answer["verify_url"], "/.stepgate/verify?rd=%2F.stepgate%2Fsettings",
            "{path}"
        );
    }
    assert!(rig.sms.received().is_empty(), "no phone code was sent");

    // Re-verifying opens the window again.
    rig.next_step();
    let cookie = rig
        .verify_ok(&cookie, "totp", &rig.totp_now(&totp.secret))
        .await;
    let (status, body) = regenerate_backup_codes(&rig, &cookie).await;
    assert_eq!(status, 200, "{body}");
}

/// Under `mfa.email_default`, disabling two-step verification turns e-mailed codes off too:
/// otherwise they would be on again by default, and nothing would be disabled.
#[tokio::test]
async fn disabling_two_factor_under_email_default_turns_email_codes_off() {
    let rig = Rig::start(&format!("[mfa]\nemail_default = true\n{NO_BAN}")).await;
    rig.user("alice", Some("alice@example.test"), &[]).await;
    let cookie = rig.login_with_email_code("alice").await;
    let (status, _, body) = rig
        .post_json(
            "/settings/2fa/disable",
            Some(&cookie),
            json!({ "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let info = rig.session_ok(&cookie).await;
    assert_eq!(info["two_factor"]["state"], "not_enabled", "{info}");
    assert_eq!(info["two_factor"]["methods"], json!([]), "{info}");
    rig.login_one_factor("alice").await;
}

#[tokio::test]
async fn disabling_two_factor_needs_password_and_recent_factor_and_deletes_everything() {
    let rig = Rig::start(NO_BAN).await;
    let totp = rig
        .user_with_totp("alice", Some("alice@example.test"))
        .await;
    // More factor data: a confirmed phone and e-mail codes (fresh factor from enrolment).
    rig.add_phone(&totp.cookie, "+33612345678").await;
    rig.enable_email_codes(&totp.cookie).await;
    let cookie = totp.cookie.clone();
    let info = rig.session_ok(&cookie).await;
    assert_eq!(
        info["two_factor"]["methods"],
        json!(["totp", "email", "sms", "backup"])
    );

    // Stale second factor: refused whatever the password.
    rig.advance(6 * MINUTE);
    let (status, _, body) = rig
        .post_json(
            "/settings/2fa/disable",
            Some(&cookie),
            json!({ "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "reverify_required");
    let cookie = rig
        .verify_ok(&cookie, "totp", &rig.totp_now(&totp.secret))
        .await;
    // Another session, opened with the app (a phone that may be lost).
    rig.next_step();
    let other = rig.login_with_totp("alice", &totp.secret).await;
    assert!(is_logged_in(&rig.gw, &other).await);
    // Wrong password: refused.
    let (status, _, body) = rig
        .post_json(
            "/settings/2fa/disable",
            Some(&cookie),
            json!({ "password": "Wrong-Guess-5512" }),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_credentials");
    assert_eq!(
        rig.session_ok(&cookie).await["two_factor"]["state"],
        "enabled"
    );

    let mails = rig.smtp.messages().len();
    let (status, _, body) = rig
        .post_json(
            "/settings/2fa/disable",
            Some(&cookie),
            json!({ "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let factors = rig
        .gw
        .app()
        .store
        .get_factors(&username("alice"))
        .expect("factors");
    assert!(factors.totp.is_none());
    assert!(factors.pending_totp.is_none());
    assert!(factors.backup_codes.is_empty());
    assert!(factors.phone.is_none());
    assert!(factors.is_empty(), "every factor record is gone");
    let info = rig.session_ok(&cookie).await;
    assert_eq!(
        info["two_factor"],
        json!({
            "state": "not_enabled",
            "methods": [],
            "preferred": null,
            "backup_codes_remaining": 0,
            "enrolled_at": null,
        })
    );
    rig.mail_with_subject_after(mails, "two-step verification disabled")
        .await;
    assert!(
        rig.gw
            .app()
            .store
            .recent_audit(50)
            .expect("audit")
            .iter()
            .any(|e| e.kind == AuditKind::TwoFactorDisabled)
    );
    // The session opened with a deleted factor ends; this one keeps only its password, as
    // the account now has no second factor.
    assert!(!is_logged_in(&rig.gw, &other).await);
    assert_eq!(info["auth_level"], "one_factor", "{info}");

    // Password only from now on; the old backup codes are worthless.
    rig.login_one_factor("alice").await;
    let fresh = rig.login_one_factor("alice").await;
    let enrolled = rig.enrol_totp(&fresh).await;
    assert_ne!(enrolled.secret, totp.secret);
    rig.next_step();
    let pending = rig.login_pending("alice").await;
    rig.verify_refused(&pending, "backup", &totp.backup_codes[0])
        .await;
}

#[tokio::test]
async fn password_change_sends_a_notice_and_ends_other_sessions() {
    let rig = Rig::start("").await;
    let totp = rig
        .user_with_totp("alice", Some("alice@example.test"))
        .await;
    let other = rig.login_with_totp("alice", &totp.secret).await;
    rig.next_step();
    let cookie = rig.login_with_totp("alice", &totp.secret).await;

    // Wrong current password.
    let (status, _, body) = rig
        .post_json(
            "/settings/password",
            Some(&cookie),
            json!({ "current_password": "Wrong-Guess-5512", "new_password": "Another-Horse-9922" }),
        )
        .await;
    assert_eq!(status, 401, "{body}");

    let mails = rig.smtp.messages().len();
    let (status, new_cookie, body) = rig
        .post_json(
            "/settings/password",
            Some(&cookie),
            json!({ "current_password": PASSWORD, "new_password": "Another-Horse-9922" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let new_cookie = new_cookie.expect("this browser keeps a session");
    assert!(is_logged_in(&rig.gw, &new_cookie).await);
    assert_eq!(
        rig.session_ok(&new_cookie).await["auth_level"],
        "two_factor"
    );
    assert!(!is_logged_in(&rig.gw, &other).await, "other sessions end");
    assert!(!is_logged_in(&rig.gw, &cookie).await, "the old id ends too");
    let notice = rig.mail_with_subject_after(mails, "password changed").await;
    assert_eq!(notice.envelope_to, ["alice@example.test"]);

    let (status, _, _) = rig.password_login("alice", PASSWORD, &[]).await;
    assert_eq!(status, 401, "the old password no longer works");
    let (status, _, body) = rig.password_login("alice", "Another-Horse-9922", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "second_factor_required");
}

/// alice (with an authenticator app) signs in and, four minutes later, changes her password;
/// returns the cookie of the session her browser keeps.
async fn password_changed_four_minutes_in(rig: &Rig) -> String {
    let totp = rig.user_with_totp("alice", None).await;
    let cookie = rig.login_with_totp("alice", &totp.secret).await;
    rig.advance(4 * MINUTE);
    let (status, new_cookie, body) = rig
        .post_json(
            "/settings/password",
            Some(&cookie),
            json!({ "current_password": PASSWORD, "new_password": "Another-Horse-9922" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    new_cookie.expect("this browser keeps a session")
}

/// A password change moves this browser's session to a fresh id without extending it: the
/// session still ends when it would have ended without the change.
#[tokio::test]
async fn a_password_change_keeps_the_sessions_end() {
    let rig = Rig::start("[session]\nabsolute = \"10m\"\ninactivity = \"10m\"\n").await;
    let new_cookie = password_changed_four_minutes_in(&rig).await;
    assert_eq!(
        rig.session_ok(&new_cookie).await["auth_level"],
        "two_factor"
    );
    rig.advance(5 * MINUTE);
    assert!(is_logged_in(&rig.gw, &new_cookie).await, "9 minutes in");
    rig.advance(2 * MINUTE);
    assert!(
        !is_logged_in(&rig.gw, &new_cookie).await,
        "ten minutes after the login, the session has ended"
    );
}

/// A rig whose configuration is also written to a file, for the CLI (which talks to the
/// running gateway over its control socket).
async fn rig_with_cli() -> (Rig, common::cli::CliEnv) {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("store");
    let smtp = common::SmtpServer::start().await;
    let sms = common::SmsSink::start().await;
    let upstream = common::EchoUpstream::start().await;
    let (clock, shared) = common::auth::manual_clock();
    let notify = common::mfa::notify_toml(&smtp, &sms);
    let builder = common::Gateway::builder()
        .upstream(&upstream.url())
        .storage_dir(&storage)
        .clock(shared)
        .extra_toml(&notify);
    let config_path = dir.path().join("stepgate.toml");
    std::fs::write(
        &config_path,
        format!("{}\n{notify}", builder.base_toml(&storage)),
    )
    .expect("write config");
    let gw = builder.start().await;
    let rig = Rig {
        gw,
        clock,
        smtp,
        sms,
        upstream,
    };
    let env = common::cli::CliEnv {
        dir,
        config_path,
        storage,
    };
    (rig, env)
}

#[tokio::test]
async fn password_change_does_not_refresh_the_reverify_window() {
    let rig = Rig::start("").await;
    // The password change itself is within the window of the login's second factor...
    let cookie = password_changed_four_minutes_in(&rig).await;
    // ...but proves no new one: five minutes after the code, changes need another.
    rig.advance(MINUTE);
    let (status, body) = regenerate_backup_codes(&rig, &cookie).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "reverify_required");
}

#[tokio::test]
async fn admin_reset_2fa_from_the_cli_deletes_the_users_factors() {
    let (rig, env) = rig_with_cli().await;
    let alice = rig
        .user_with_totp("alice", Some("alice@example.test"))
        .await;
    let bob = rig.user_with_totp("bob", None).await;
    // The CLI reaches the running gateway with this configuration.
    run_async(&env, &["user", "show", "alice"], None).await.ok();

    let mails = rig.smtp.messages().len();
    let out = run_async(&env, &["user", "reset-2fa", "alice"], None).await;
    assert_eq!(out.code, 0, "{out:#?}");
    // Its owner hears of it: a reset someone talked a helpdesk into does not go unnoticed.
    let mail = rig
        .mail_with_subject_after(mails, "two-step verification disabled")
        .await;
    assert_eq!(mail.envelope_to, ["alice@example.test"]);
    // The sessions the lost factor opened end with it; bob's go on.
    assert_eq!(rig.session(&alice.cookie).await.0, 401);
    assert_eq!(rig.session(&bob.cookie).await.0, 200);
    let factors = rig
        .gw
        .app()
        .store
        .get_factors(&username("alice"))
        .expect("factors");
    assert!(factors.is_empty(), "alice's factors are deleted");
    // Password only for alice; bob keeps his factor.
    let cookie = rig.login_one_factor("alice").await;
    assert_eq!(
        rig.session_ok(&cookie).await["two_factor"]["state"],
        "not_enabled"
    );
    rig.login_pending("bob").await;
    assert!(
        rig.gw
            .app()
            .store
            .recent_audit(50)
            .expect("audit")
            .iter()
            .any(|e| e.kind == AuditKind::TwoFactorDisabled
                && e.username.as_deref() == Some("alice")),
        "the reset is audited"
    );

    // An unknown user is an error.
    let out = run_async(&env, &["user", "reset-2fa", "nobody"], None).await;
    assert_ne!(out.code, 0, "{out:#?}");
}

#[tokio::test]
async fn cli_user_show_reports_the_second_factor_state_and_methods() {
    let (rig, env) = rig_with_cli().await;
    rig.user("carol", None, &[]).await;
    let out = run_async(&env, &["user", "show", "carol"], None).await.ok();
    assert!(out.stdout.contains("not_enabled"), "{}", out.stdout);

    let cookie = rig.login_one_factor("carol").await;
    rig.enrol_totp(&cookie).await;
    let out = run_async(&env, &["user", "show", "carol"], None).await.ok();
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("totp"))
        .unwrap_or_else(|| panic!("no methods shown: {}", out.stdout));
    assert!(line.contains("backup"), "{line}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().any(|w| w == "enabled")),
        "{}",
        out.stdout
    );
}
