//! TOTP through the running gateway: enrolment from the settings page, login with the
//! authenticator code, replay and concurrency, the session rotation, the `expired` state and
//! what `api/session` reports. Codes are computed with totp-rs at the manual clock's time.

mod common;

use std::time::Duration;

use serde_json::json;

use common::auth::{BROWSER_ACCEPT, Client, get, location, logout, post_login, set_session_cookie};
use common::mfa::{MINUTE, PASSWORD, Rig, SECOND, STEP, totp_code, wrong_code};

const NO_BAN: &str = "[regulation]\nmax_retries = 100\n";

#[tokio::test]
async fn totp_enrolment_needs_the_password_and_gives_secret_uri_and_qr() {
    let rig = Rig::start("[mfa]\nissuer = \"Acme Portal\"\n").await;
    rig.user("alice", Some("alice@example.test"), &[]).await;
    let cookie = rig.login_one_factor("alice").await;

    // No password, or the wrong one: nothing is shown.
    let (status, _, body) = rig
        .post_json("/settings/totp/begin", Some(&cookie), json!({}))
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.get("secret").is_none(), "{body}");
    let (status, _, body) = rig
        .post_json(
            "/settings/totp/begin",
            Some(&cookie),
            json!({ "password": "Wrong-Guess-5512" }),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_credentials");
    assert!(body.get("secret").is_none(), "{body}");
    // Without a session: no enrolment at all.
    let (status, _, _) = rig
        .post_json(
            "/settings/totp/begin",
            None,
            json!({ "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 401);

    let begin = rig
        .enrolment_step(
            "/settings/totp/begin",
            &cookie,
            json!({ "password": PASSWORD }),
        )
        .await;
    let secret = begin["secret"].as_str().expect("secret");
    let bytes = totp_rs::Secret::try_from_base32(secret).expect("base32");
    assert_eq!(bytes.as_bytes().len(), 20, "a 160-bit secret");
    let qr = begin["qr_svg"].as_str().expect("qr_svg");
    assert!(qr.contains("<svg"), "{qr}");
    assert!(qr.trim_end().ends_with("</svg>"), "a whole SVG document");

    let uri = url::Url::parse(begin["otpauth_uri"].as_str().expect("uri")).expect("a URL");
    assert_eq!(uri.scheme(), "otpauth");
    assert_eq!(uri.host_str(), Some("totp"));
    let label = percent_encoding::percent_decode_str(uri.path())
        .decode_utf8()
        .expect("utf-8")
        .into_owned();
    assert_eq!(label, "/Acme Portal:alice");
    let query: std::collections::HashMap<String, String> = uri.query_pairs().into_owned().collect();
    assert_eq!(query.get("secret").map(String::as_str), Some(secret));
    assert_eq!(query.get("issuer").map(String::as_str), Some("Acme Portal"));

    // Two different enrolments never share a secret.
    let (_, _, again) = rig
        .post_json(
            "/settings/totp/begin",
            Some(&cookie),
            json!({ "password": PASSWORD }),
        )
        .await;
    assert_ne!(again["secret"], begin["secret"]);
}

#[tokio::test]
async fn totp_is_not_active_until_a_valid_code_and_that_code_is_then_used() {
    let rig = Rig::start(NO_BAN).await;
    rig.user("alice", Some("alice@example.test"), &[]).await;
    let cookie = rig.login_one_factor("alice").await;
    let begin = rig
        .enrolment_step(
            "/settings/totp/begin",
            &cookie,
            json!({ "password": PASSWORD }),
        )
        .await;
    let secret = begin["secret"].as_str().expect("secret").to_owned();

    // Shown but not confirmed: nothing changed.
    let info = rig.session_ok(&cookie).await;
    assert_eq!(info["two_factor"]["state"], "not_enabled", "{info}");
    assert_eq!(info["auth_level"], "one_factor");
    let other = rig.login_one_factor("alice").await;
    logout(&rig.gw, &other).await;

    // A wrong code does not confirm it.
    let code = rig.totp_now(&secret);
    let (status, cookie_set, body) = rig
        .post_json(
            "/settings/totp/confirm",
            Some(&cookie),
            json!({ "code": wrong_code(&code) }),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_code");
    assert!(cookie_set.is_none());
    assert_eq!(
        rig.session_ok(&cookie).await["two_factor"]["state"],
        "not_enabled"
    );

    // The right one does: backup codes, a notice, a rotated two_factor session.
    let mails_before = rig.smtp.messages().len();
    let (status, new_cookie, body) = rig
        .post_json(
            "/settings/totp/confirm",
            Some(&cookie),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let codes = body["backup_codes"].as_array().expect("backup_codes");
    assert_eq!(codes.len(), 6, "mfa.backup_codes defaults to 6");
    let new_cookie = new_cookie.expect("a new session id");
    assert_ne!(new_cookie, cookie);
    let info = rig.session_ok(&new_cookie).await;
    assert_eq!(info["auth_level"], "two_factor", "{info}");
    assert_eq!(info["two_factor"]["state"], "enabled");
    let (status, _) = rig.session(&cookie).await;
    assert_eq!(status, 401, "the pre-enrolment session id is dead");
    let notice = rig
        .mail_with_subject_after(mails_before, "two-step verification enabled")
        .await;
    assert_eq!(notice.envelope_to, ["alice@example.test"]);

    // The confirmation code counts as used: it cannot log in within its step.
    let pending = rig.login_pending("alice").await;
    let body = rig.verify_refused(&pending, "totp", &code).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("already used"),
        "{body}"
    );
    rig.next_step();
    rig.verify_ok(&pending, "totp", &rig.totp_now(&secret))
        .await;
}

/// A confirmation sent again once the set-up is finished (a double submission: the code field
/// submits itself, then Enter) is a clear 409 that points to the settings, never a 500.
#[tokio::test]
async fn a_confirmation_sent_again_is_a_clear_conflict() {
    let rig = Rig::start(NO_BAN).await;
    rig.user("alice", None, &[]).await;
    let cookie = rig.login_one_factor("alice").await;
    let enrolled = rig.enrol_totp(&cookie).await;
    rig.next_step();
    let code = rig.totp_now(&enrolled.secret);

    let (status, cookie_set, body) = rig
        .post_json(
            "/settings/totp/confirm",
            Some(&enrolled.cookie),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "nothing_to_confirm", "{body}");
    assert!(cookie_set.is_none());

    // A browser gets a page that says so, in its language, with the way to the settings.
    let resp = common::http_client()
        .post(rig.gw.url_for("/.stepgate/settings/totp/confirm"))
        .header("accept", BROWSER_ACCEPT)
        .header("accept-language", "fr")
        .header("cookie", &enrolled.cookie)
        .form(&[("code", code.as_str())])
        .send()
        .await
        .expect("confirm");
    assert_eq!(resp.status(), 409);
    let page = resp.text().await.expect("page");
    assert!(page.contains("Rien à confirmer"), "{page}");
    assert!(page.contains("/.stepgate/settings"), "{page}");
    // Nothing changed: the app is still the one enrolled.
    let info = rig.session_ok(&enrolled.cookie).await;
    assert_eq!(info["two_factor"]["state"], "enabled", "{info}");
}

#[tokio::test]
async fn login_with_totp_rotates_the_session_and_reaches_the_app() {
    let rig = Rig::start("[access]\ndefault_policy = \"one_factor\"\n").await;
    let totp = rig.user_with_totp("alice", None).await;

    // The password alone opens nothing but the verification step.
    let pending = rig.login_pending("alice").await;
    let resp = rig.get_app("/app", Some(&pending)).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        common::auth::json(resp).await["error"],
        "second_factor_required"
    );
    let (status, body) = rig.session(&pending).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "second_factor_required");
    // Settings are out of reach too.
    let (status, _, _) = rig
        .post_json(
            "/settings/totp/begin",
            Some(&pending),
            json!({ "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(rig.upstream.requests(), 0);

    let cookie = rig
        .verify_ok(&pending, "totp", &rig.totp_now(&totp.secret))
        .await;
    // The id that waited for the second factor is void; the new one is fully logged in.
    let (status, _) = rig.session(&pending).await;
    assert_eq!(status, 401, "the pre-verification id must not stay valid");
    let resp = rig.get_app("/app", Some(&pending)).await;
    assert_eq!(resp.status(), 401);
    let info = rig.session_ok(&cookie).await;
    assert_eq!(info["auth_level"], "two_factor");
    assert_eq!(info["second_factor_at"], rig.now().to_rfc3339());
    let resp = rig.get_app("/app", Some(&cookie)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        rig.upstream
            .last_request()
            .expect("forwarded")
            .header("remote-user"),
        Some("alice")
    );
}

#[tokio::test]
async fn browser_login_goes_through_the_verify_page_back_to_the_target() {
    let rig = Rig::start("[access]\ndefault_policy = \"one_factor\"\n").await;
    let totp = rig.user_with_totp("alice", None).await;

    let resp = post_login(
        &rig.gw,
        &[
            ("username", "alice"),
            ("password", PASSWORD),
            ("rd", "/reports?y=1"),
        ],
        Client::Browser,
        &[],
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        location(&resp).as_deref(),
        Some("/.stepgate/verify?rd=%2Freports%3Fy%3D1")
    );
    let pending = set_session_cookie(resp.headers()).expect("cookie");

    let resp = get(
        &rig.gw,
        "/.stepgate/verify?rd=%2Freports%3Fy%3D1",
        Some(&pending),
        Client::Browser,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let page = common::mfa::body_text(resp).await;
    assert!(page.contains("authenticator app"), "{page}");
    assert!(page.contains("name=\"code\""), "{page}");
    // A backup code is always offered when TOTP is on.
    assert!(page.contains("Use a backup code"), "{page}");

    let code = rig.totp_now(&totp.secret);
    let resp = common::auth::send(
        common::http_client()
            .post(rig.gw.url_for("/.stepgate/verify"))
            .header("accept", common::auth::BROWSER_ACCEPT)
            .header("cookie", &pending)
            .form(&[("method", "totp"), ("code", &code), ("rd", "/reports?y=1")]),
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp).as_deref(), Some("/reports?y=1"));
    let cookie = set_session_cookie(resp.headers()).expect("rotated cookie");
    assert_ne!(cookie, pending);
    let resp = get(&rig.gw, "/reports?y=1", Some(&cookie), Client::Browser).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn rejects_replayed_totp_step() {
    let rig = Rig::start(NO_BAN).await;
    let totp = rig.user_with_totp("alice", None).await;
    let code = rig.totp_now(&totp.secret);

    let first = rig.login_pending("alice").await;
    rig.verify_ok(&first, "totp", &code).await;

    // The same code, from another login within the same step (or the next: skew) is refused.
    let second = rig.login_pending("alice").await;
    rig.verify_refused(&second, "totp", &code).await;
    rig.advance(STEP);
    rig.verify_refused(&second, "totp", &code).await;
    // An older step than the one used is refused too.
    let before = totp_code(&totp.secret, rig.now().minus(STEP * 2));
    rig.verify_refused(&second, "totp", &before).await;
    // The current step's code is fresh.
    rig.verify_ok(&second, "totp", &rig.totp_now(&totp.secret))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejects_concurrent_double_use_of_one_totp_code() {
    let rig = Rig::start(NO_BAN).await;
    let totp = rig.user_with_totp("alice", None).await;
    for round in 0..5 {
        let code = rig.totp_now(&totp.secret);
        let a = rig.login_pending("alice").await;
        let b = rig.login_pending("alice").await;
        let (ra, rb) = tokio::join!(rig.verify(&a, "totp", &code), rig.verify(&b, "totp", &code));
        let statuses = [ra.0, rb.0];
        let successes = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(
            successes, 1,
            "round {round}: exactly one use must succeed: {ra:?} {rb:?}"
        );
        assert!(statuses.contains(&401), "round {round}: {ra:?} {rb:?}");
        // Past the skew window of this step before the next round.
        rig.advance(STEP * 3);
    }
}

#[tokio::test]
async fn codes_from_neighbouring_steps_are_accepted_but_not_further() {
    let rig = Rig::start(NO_BAN).await;
    let totp = rig.user_with_totp("alice", None).await;
    let pending = rig.login_pending("alice").await;
    let now = rig.now();
    rig.verify_refused(
        &pending,
        "totp",
        &totp_code(&totp.secret, now.plus(STEP * 2)),
    )
    .await;
    rig.verify_refused(
        &pending,
        "totp",
        &totp_code(&totp.secret, now.minus(STEP * 2)),
    )
    .await;
    rig.verify_ok(&pending, "totp", &totp_code(&totp.secret, now.plus(STEP)))
        .await;
}

#[tokio::test]
async fn state_becomes_expired_after_totp_max_age_and_the_factor_still_works() {
    let rig = Rig::start("").await;
    let enrolled_at = rig.now();
    let totp = rig.user_with_totp("alice", None).await;
    let info = rig.session_ok(&totp.cookie).await;
    assert_eq!(info["two_factor"]["state"], "enabled");
    assert_eq!(info["two_factor"]["enrolled_at"], enrolled_at.to_rfc3339());

    // Just before 180 days (the default): still enabled.
    rig.clock
        .set(enrolled_at.plus(Duration::from_secs(180 * 24 * 3600) - MINUTE));
    let pending = rig.login_pending("alice").await;
    let cookie = rig
        .verify_ok(&pending, "totp", &rig.totp_now(&totp.secret))
        .await;
    assert_eq!(
        rig.session_ok(&cookie).await["two_factor"]["state"],
        "enabled"
    );

    // Past it: expired, and the authenticator still logs in.
    rig.clock
        .set(enrolled_at.plus(Duration::from_secs(180 * 24 * 3600) + MINUTE));
    let cookie = rig.login_with_totp("alice", &totp.secret).await;
    let info = rig.session_ok(&cookie).await;
    assert_eq!(info["two_factor"]["state"], "expired", "{info}");
    assert_eq!(info["auth_level"], "two_factor");
    let resp = get(&rig.gw, "/.stepgate/settings", Some(&cookie), Client::Api).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        common::auth::json(resp).await["two_factor"]["state"],
        "expired"
    );
}

#[tokio::test]
async fn expiry_follows_configured_totp_max_age() {
    let rig = Rig::start("[mfa]\ntotp_max_age = \"2d\"\n").await;
    let totp = rig.user_with_totp("alice", None).await;
    rig.advance(Duration::from_secs(2 * 24 * 3600) + SECOND);
    let cookie = rig.login_with_totp("alice", &totp.secret).await;
    assert_eq!(
        rig.session_ok(&cookie).await["two_factor"]["state"],
        "expired"
    );
}

#[tokio::test]
async fn api_session_reports_every_second_factor_field() {
    let rig = Rig::start("").await;
    rig.user("alice", Some("alice@example.test"), &[]).await;
    let cookie = rig.login_one_factor("alice").await;
    let info = rig.session_ok(&cookie).await;
    assert_eq!(info["auth_level"], "one_factor");
    assert_eq!(info["second_factor_at"], serde_json::Value::Null);
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

    let enrolled_at = rig.now();
    let totp = rig.enrol_totp(&cookie).await;
    rig.advance(MINUTE);
    let pending = rig.login_pending("alice").await;
    let verified_at = rig.now();
    let cookie = rig
        .verify_ok(&pending, "totp", &rig.totp_now(&totp.secret))
        .await;
    let info = rig.session_ok(&cookie).await;
    assert_eq!(info["auth_level"], "two_factor");
    assert_eq!(info["second_factor_at"], verified_at.to_rfc3339());
    assert_eq!(
        info["two_factor"],
        json!({
            "state": "enabled",
            "methods": ["totp", "backup"],
            "preferred": "totp",
            "backup_codes_remaining": 6,
            "enrolled_at": enrolled_at.to_rfc3339(),
        })
    );
}

/// Every byte of every file under `dir`, file by file.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn rejects_reading_totp_secret_or_backup_codes_from_a_copy_of_the_store() {
    let rig = Rig::start("").await;
    let totp = rig.user_with_totp("alice", None).await;
    // Make sure everything is on disk.
    rig.gw.app().store.flush().expect("flush");
    let secret = totp_rs::Secret::try_from_base32(&totp.secret).expect("base32");
    let files = files_under(rig.gw.storage_path());
    assert!(!files.is_empty());
    for (path, bytes) in &files {
        assert!(
            !contains(bytes, secret.as_bytes()),
            "{} holds the raw TOTP secret",
            path.display()
        );
        assert!(
            !contains(bytes, totp.secret.as_bytes()),
            "{} holds the base32 TOTP secret",
            path.display()
        );
        for code in &totp.backup_codes {
            let bare = code.replace('-', "");
            assert!(
                !contains(bytes, code.as_bytes()) && !contains(bytes, bare.as_bytes()),
                "{} holds a backup code",
                path.display()
            );
        }
    }
    // The key that seals the secret lives outside the store directory, private to its owner.
    let key_file = &rig.gw.app().config.storage.key_file;
    assert!(!key_file.starts_with(rig.gw.storage_path()));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(key_file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// The session's `Set-Cookie` value in `headers`, attributes included.
fn session_set_cookie(headers: &reqwest::header::HeaderMap) -> String {
    common::auth::all_set_cookies(headers)
        .into_iter()
        .find(|c| c.starts_with("stepgate_session=") && !c.starts_with("stepgate_session=;"))
        .unwrap_or_else(|| panic!("no session cookie in {headers:?}"))
}

#[tokio::test]
async fn the_rotated_session_cookie_keeps_remember_me() {
    let rig = Rig::start(NO_BAN).await;
    let totp = rig.user_with_totp("alice", None).await;
    for remember in [true, false] {
        let mut form = vec![("username", "alice"), ("password", PASSWORD)];
        if remember {
            form.push(("remember_me", "on"));
        }
        let resp = post_login(&rig.gw, &form, Client::Api, &[]).await;
        assert_eq!(resp.status(), 200);
        let pending = set_session_cookie(resp.headers()).expect("pending session");
        rig.next_step();
        let code = rig.totp_now(&totp.secret);
        let resp = rig
            .post(
                "/verify",
                Some(&pending),
                json!({ "method": "totp", "code": code }),
            )
            .await;
        assert_eq!(resp.status(), 200, "remember_me={remember}");
        let rotated = session_set_cookie(resp.headers());
        assert_eq!(
            rotated.contains("Max-Age=2592000"),
            remember,
            "remember_me={remember}: {rotated}"
        );
    }
}

/// Second factors are sealed with the key file: a store that holds some never starts with a
/// new key in place of a lost one (every user with an app or backup codes would be locked out).
#[tokio::test]
async fn a_lost_key_file_stops_the_start_when_second_factors_are_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("store");
    let key_file = dir.path().join("store.key");
    let gw = common::Gateway::builder()
        .storage_dir(&storage)
        .start()
        .await;
    assert!(key_file.exists(), "the first start creates the key");
    let alice = stepgate::auth::user::Username::parse("alice").expect("name");
    gw.app()
        .factors
        .set_email_verification(&alice, true)
        .expect("store a second-factor setting");
    assert!(gw.shutdown().await);

    std::fs::remove_file(&key_file).expect("lose the key");
    let err = common::Gateway::builder()
        .storage_dir(&storage)
        .try_start()
        .await
        .err()
        .expect("refused to start");
    assert!(err.contains("storage.key_file"), "{err}");
    assert!(err.contains("restore"), "{err}");
    assert!(!key_file.exists(), "no new key was made");
}

/// A secret keeps the digits it was enrolled with, whatever `mfa.totp_digits` says later: the
/// verification page asks for, and its field waits for, as many digits as the app shows (with
/// the configuration's count it submitted too early, a wrong code each time, until a ban).
#[tokio::test]
async fn the_verify_page_asks_for_the_digits_the_app_was_enrolled_with() {
    let rig = Rig::start("").await;
    let totp = rig.user_with_totp("carol", None).await;
    // As if enrolled while `mfa.totp_digits` was 8; the configuration now says 6.
    rig.gw
        .app()
        .store
        .update_factors(&common::auth::username("carol"), |mut f| {
            f.totp.as_mut().expect("enrolled").params.digits = 8;
            Ok::<_, stepgate::store::StoreError>((f, ()))
        })
        .expect("store");
    let pending = rig.login_pending("carol").await;
    let page = common::auth::text(
        get(
            &rig.gw,
            "/.stepgate/verify?rd=%2F",
            Some(&pending),
            Client::Browser,
        )
        .await,
    )
    .await;
    assert!(
        page.contains("8-digit code from your authenticator app"),
        "{page}"
    );
    assert!(page.contains(r#"data-autosubmit="8""#), "{page}");
    let code = common::mfa::totp_code_of(&totp.secret, rig.now(), 8);
    rig.verify_ok(&pending, "totp", &code).await;
}

/// A wrong first code from a browser asks for another code, with the error: the app already
/// set up keeps working, and the right code then finishes. The secret is not shown again: the
/// pending set-up is the account's, and another session of it (opened with a stolen password,
/// say) must not read it by sending a wrong code.
#[tokio::test]
async fn a_wrong_first_code_asks_again_without_showing_the_secret() {
    let rig = Rig::start(NO_BAN).await;
    rig.user("dora", None, &[]).await;
    let cookie = rig.login_one_factor("dora").await;
    let post = |path: &'static str, form: Vec<(&'static str, String)>| {
        common::auth::send(
            common::http_client()
                .post(rig.gw.url_for(&format!("/.stepgate{path}")))
                .header("accept", BROWSER_ACCEPT)
                .header("cookie", &cookie)
                .form(&form),
        )
    };
    let page = common::auth::text(
        post(
            "/settings/totp/begin",
            vec![("password", PASSWORD.to_string()), ("rd", "/".into())],
        )
        .await,
    )
    .await;
    let secret = page
        .split("data-copy-text=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the secret on the page")
        .to_owned();

    let wrong = wrong_code(&rig.totp_now(&secret));
    let resp = post("/settings/totp/confirm", vec![("code", wrong)]).await;
    assert_eq!(resp.status(), 401);
    let again = common::auth::text(resp).await;
    assert!(again.contains("That code is not right."), "{again}");
    // The field is marked wrong and tied to the message, for screen readers.
    assert!(
        again.contains(r#"aria-invalid="true" aria-describedby="form-error""#),
        "{again}"
    );
    assert!(again.contains(r#"id="form-error""#), "{again}");
    assert!(
        again.contains("Type a new code from the app you just set up."),
        "{again}"
    );
    assert!(
        !again.contains(&secret),
        "the secret is not shown again: {again}"
    );
    assert!(!again.contains("otpauth://"), "{again}");
    assert!(again.contains("/settings/totp/confirm"), "{again}");

    let resp = post(
        "/settings/totp/confirm",
        vec![("code", rig.totp_now(&secret))],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let done = common::auth::text(resp).await;
    assert!(done.contains("backup"), "{done}");
}
