//! The portal in a real browser: headless Chromium under chromedriver, driven through
//! fantoccini, in front of a gateway on a manual clock with an echo upstream and an in-process
//! SMTP server. Every test types into the real forms, follows the real redirects, lets the
//! page's own script submit code fields, and asserts on what the page shows, the URL and what
//! the upstream received. Screenshots of every page visited land in
//! `target/browser-screenshots/<test>/` (under `CARGO_TARGET_DIR` when set).
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them these tests fail (they never
//! skip).

mod common;

use common::browser::Browser;
use common::mfa::{PASSWORD, Rig, totp_code, totp_code_of};
use common::stepup::SIX_MINUTES;

/// Everything needs a login; `/admin` also needs a second factor verified in the last five
/// minutes.
const ACCESS: &str = r#"
[access]
default_policy = "one_factor"

[[access.rules]]
path = "^/admin(/|$)"
policy = "one_factor"
step_up = "5m"
"#;

const LOGIN_BUTTON: &str = "form[action='/.stepgate/login'] button[type=submit]";
const VERIFY_BUTTON: &str = "form[action='/.stepgate/verify'] button[type=submit]";

/// On the login page: types the username and the password and presses "Sign in".
async fn sign_in(b: &Browser, name: &str) {
    b.wait_for_path("/.stepgate/login").await;
    b.fill("#username", name).await;
    b.fill("#password", PASSWORD).await;
    b.click(LOGIN_BUTTON).await;
}

/// Waits for the upstream's echo of `path_and_query` and checks that the gateway told it who
/// is signed in (and kept the session cookie to itself). Returns the page's text.
async fn expect_app(b: &Browser, path_and_query: &str, user: &str) -> String {
    b.wait_for_path_and_query(path_and_query).await;
    let text = b.wait_for_text("\"remote-user\"").await;
    assert!(
        text.contains(&format!(r#"["remote-user","{user}"]"#)),
        "{text}"
    );
    assert!(
        text.contains(&format!(r#""path":"{path_and_query}""#)),
        "{text}"
    );
    assert!(
        !text.contains("stepgate_session"),
        "the session cookie reached the upstream: {text}"
    );
    text
}

/// The requests the app received so far, as paths, leaving out the browser's own
/// `/favicon.ico` fetches (which it makes by itself, in the background, on the application's
/// own pages; portal pages link their own icon).
fn app_requests(rig: &Rig) -> Vec<String> {
    rig.upstream
        .received()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p != "/favicon.ico")
        .collect()
}

/// Signs out through the logout page: its confirmation, the button, the signed-out page.
async fn sign_out(b: &mut Browser, rig: &Rig, user: &str) {
    b.goto(&rig.gw.url_for("/.stepgate/logout")).await;
    confirm_sign_out(b, user).await;
}

/// On the logout page: checks who is signed in, presses "Sign out" and checks that the
/// browser no longer holds a session cookie.
async fn confirm_sign_out(b: &mut Browser, user: &str) {
    b.wait_for_path("/.stepgate/logout").await;
    let text = b.wait_for_text("Sign out?").await;
    assert!(
        text.contains(&format!("You are signed in as {user}.")),
        "{text}"
    );
    b.screenshot("logout").await;
    b.click("form[action='/.stepgate/logout'] button[type=submit]")
        .await;
    b.wait_for_text("You are signed out").await;
    b.screenshot("signed-out").await;
    let cookies = b.cookies().await;
    assert!(
        cookies.iter().all(|c| c.name() != "stepgate_session"),
        "the session cookie outlived the logout: {cookies:?}"
    );
}

/// On the verification page: switches to backup codes with the method switcher.
async fn switch_to_backup_code(b: &Browser) {
    b.wait_for_path("/.stepgate/verify").await;
    b.click_link("Use a backup code").await;
    b.wait_for_url("the backup-code verification", |u| {
        u.path() == "/.stepgate/verify" && u.query().is_some_and(|q| q.contains("method=backup"))
    })
    .await;
    b.wait_for_text("One of your backup codes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_through_the_form_reaches_the_app() {
    let rig = Rig::start(ACCESS).await;
    rig.user("alice", None, &[]).await;
    let mut b = Browser::start("password_login").await;

    // The app sends a browser without a session to the login page, remembering where it went.
    b.goto(&rig.gw.url_for("/reports?year=2026")).await;
    b.wait_for_path_and_query("/.stepgate/login?rd=%2Freports%3Fyear%3D2026")
        .await;
    let text = b.text().await;
    assert!(text.contains("Sign in to Stepgate"), "{text}");
    assert!(text.contains("Keep me signed in on this device"), "{text}");
    assert_eq!(b.title().await, "Sign in · Stepgate");
    b.screenshot("login").await;
    b.screenshot_phone("login-phone").await;

    // A wrong password: the page says so and keeps the username.
    b.fill("#username", "alice").await;
    b.fill("#password", "not-the-password").await;
    b.click(LOGIN_BUTTON).await;
    let text = b.wait_for_text("Incorrect username or password.").await;
    assert!(!text.contains("remote-user"), "{text}");
    assert_eq!(b.attr("#username", "value").await.as_deref(), Some("alice"));
    b.screenshot("login-wrong-password").await;
    assert_eq!(
        app_requests(&rig),
        Vec::<String>::new(),
        "nothing reached the app yet"
    );

    b.fill("#password", PASSWORD).await;
    b.click(LOGIN_BUTTON).await;
    expect_app(&b, "/reports?year=2026", "alice").await;
    b.screenshot("app").await;

    // Plain HTTP: the session cookie is HttpOnly and SameSite=Lax, not Secure (no __Host-).
    let cookies = b.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c.name() == "stepgate_session")
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"));
    assert_eq!(session.http_only(), Some(true), "{session}");
    assert_eq!(session.secure(), Some(false), "{session}");
    assert_eq!(
        session.same_site(),
        Some(cookie::SameSite::Lax),
        "{session}"
    );
    assert_eq!(session.path(), Some("/"), "{session}");
    let script_sees = b.execute("return document.cookie;").await;
    assert!(
        !script_sees
            .as_str()
            .unwrap_or_default()
            .contains("stepgate_session"),
        "page scripts can read the session cookie: {script_sees}"
    );

    // The session cookie carries on to the next page.
    b.goto(&rig.gw.url_for("/reports/2")).await;
    expect_app(&b, "/reports/2", "alice").await;
    b.close().await;
}

/// With `mfa.totp_digits = 8` the page asks for 8 digits and the field waits for all 8 before
/// it submits itself (it once sent the first 6, a wrong code each time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eight_digit_app_code_is_typed_whole_before_it_submits() {
    let rig = Rig::start(&format!("{ACCESS}\n[mfa]\ntotp_digits = 8\n")).await;
    rig.user("carol", None, &[]).await;
    let cookie = rig.login_one_factor("carol").await;
    let (status, _, begin) = rig
        .post_json(
            "/settings/totp/begin",
            Some(&cookie),
            serde_json::json!({ "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 200, "{begin}");
    let secret = begin["secret"].as_str().expect("secret").to_owned();
    let code = totp_code_of(&secret, rig.now(), 8);
    let (status, _, body) = rig
        .post_json(
            "/settings/totp/confirm",
            Some(&cookie),
            serde_json::json!({ "code": code }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    rig.next_step();

    let b = Browser::start("totp_eight_digits").await;
    b.goto(&rig.gw.url_for("/")).await;
    sign_in(&b, "carol").await;
    b.wait_for_path_and_query("/.stepgate/verify?rd=%2F").await;
    let text = b.wait_for_text("Two-step verification").await;
    assert!(
        text.contains("8-digit code from your authenticator app"),
        "{text}"
    );
    b.fill("#code", &totp_code_of(&secret, rig.now(), 8)).await;
    expect_app(&b, "/", "carol").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_enrolment_from_settings_then_login_with_the_app_code() {
    let rig = Rig::start(ACCESS).await;
    rig.user("bob", None, &[]).await;
    let mut b = Browser::start("totp_enrolment").await;

    b.goto(&rig.gw.url_for("/")).await;
    sign_in(&b, "bob").await;
    expect_app(&b, "/", "bob").await;
    b.goto(&rig.gw.url_for("/.stepgate/settings")).await;
    let text = b.wait_for_text("Security settings").await;
    assert!(text.contains("Signed in as bob."), "{text}");
    assert!(text.contains("Not enabled"), "{text}");
    b.screenshot("settings").await;

    // Set up the authenticator app: password, then the page with the QR code and the key.
    b.fill("#totp-password", PASSWORD).await;
    b.click("form[action='/.stepgate/settings/totp/begin'] button[type=submit]")
        .await;
    b.wait_for_path("/.stepgate/settings/totp/begin").await;
    let text = b.wait_for_text("Set up your authenticator app").await;
    assert!(
        text.contains("Can't scan? Enter this key by hand:"),
        "{text}"
    );
    let qr_drawn = b
        .execute(
            "const img = document.querySelector('img.qr'); \
             return img.complete && img.naturalWidth > 0;",
        )
        .await;
    assert_eq!(qr_drawn, true, "the QR code image is drawn");
    let shown = b.text_of("#totp-secret").await;
    let secret: String = shown.split_whitespace().collect();
    assert!(secret.len() >= 16, "{shown:?}");
    assert!(shown.contains(' '), "the key is shown in groups: {shown:?}");
    assert_eq!(
        b.attr("#totp-secret", "data-copy-text").await.as_deref(),
        Some(secret.as_str()),
        "the copy button copies the key without spaces"
    );
    let otpauth = b
        .attr("a[href^='otpauth://totp/']", "href")
        .await
        .expect("otpauth link");
    assert!(otpauth.contains(&format!("secret={secret}")), "{otpauth}");
    b.screenshot("totp-enrolment").await;

    // Typing the app's code submits the form by itself; the backup codes are shown once.
    b.fill("#code", &totp_code(&secret, rig.now())).await;
    b.wait_for_path("/.stepgate/settings/totp/confirm").await;
    let text = b.wait_for_text("Your backup codes").await;
    assert!(text.contains("Two-step verification is on."), "{text}");
    assert!(text.contains("They are shown only now."), "{text}");
    let codes = b.texts_of("#backup-codes li code").await;
    assert_eq!(codes.len(), 6, "mfa.backup_codes defaults to 6: {codes:?}");
    let mut unique = codes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), codes.len(), "codes repeat: {codes:?}");
    let download = b.wait_for("a[download]").await;
    assert_eq!(
        download.attr("download").await.expect("attr").as_deref(),
        Some("Stepgate-backup-codes.txt")
    );
    let href = download.attr("href").await.expect("attr").expect("href");
    assert!(href.starts_with("data:text/plain"), "{href}");
    for code in &codes {
        assert!(href.contains(code.as_str()), "{code} not in {href}");
    }
    assert!(
        b.text().await.contains("Download as a text file"),
        "download link text"
    );
    b.screenshot("backup-codes").await;

    // Continue: back to the settings, now with the app and the backup codes.
    b.click_link("Continue").await;
    b.wait_for_path("/.stepgate/settings").await;
    let text = b.wait_for_text("Unused backup codes left").await;
    assert!(text.contains("Enabled"), "{text}");
    assert!(
        text.contains(&format!("Unused backup codes left: {}.", codes.len())),
        "{text}"
    );
    b.screenshot("settings-enabled").await;

    // Sign out through the link on the settings page and the logout page's button.
    b.click_link("Sign out").await;
    confirm_sign_out(&mut b, "bob").await;

    // Signing in again now needs the app's code (the next one: the enrolment code is spent).
    rig.next_step();
    let forwarded = app_requests(&rig);
    b.goto(&rig.gw.url_for("/")).await;
    sign_in(&b, "bob").await;
    b.wait_for_path_and_query("/.stepgate/verify?rd=%2F").await;
    let text = b.wait_for_text("Two-step verification").await;
    assert!(
        text.contains("6-digit code from your authenticator app"),
        "{text}"
    );
    assert!(text.contains("Use a backup code"), "{text}");
    assert_eq!(
        app_requests(&rig),
        forwarded,
        "nothing forwarded before the code"
    );
    b.screenshot("verify").await;
    b.fill("#code", &totp_code(&secret, rig.now())).await;
    expect_app(&b, "/", "bob").await;
    b.screenshot("app").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_code_login_and_the_same_code_is_refused_the_second_time() {
    let rig = Rig::start(ACCESS).await;
    let enrolled = rig.user_with_totp("carol", None).await;
    let codes = &enrolled.backup_codes;
    let mut b = Browser::start("backup_code").await;

    b.goto(&rig.gw.url_for("/docs")).await;
    b.wait_for_path("/.stepgate/login").await;
    b.screenshot("login").await;
    sign_in(&b, "carol").await;
    b.wait_for_path("/.stepgate/verify").await;
    b.wait_for_text("6-digit code from your authenticator app")
        .await;
    b.screenshot("verify").await;
    switch_to_backup_code(&b).await;
    let text = b.text().await;
    assert!(text.contains("Use your authenticator app"), "{text}");
    b.screenshot("verify-backup").await;
    b.fill("#code", &codes[0]).await;
    b.click(VERIFY_BUTTON).await;
    expect_app(&b, "/docs", "carol").await;
    b.screenshot("app").await;

    sign_out(&mut b, &rig, "carol").await;

    // The same code again: refused, still on the verification page, nothing forwarded.
    let forwarded = app_requests(&rig);
    b.goto(&rig.gw.url_for("/docs")).await;
    sign_in(&b, "carol").await;
    switch_to_backup_code(&b).await;
    b.fill("#code", &codes[0]).await;
    b.click(VERIFY_BUTTON).await;
    let text = b
        .wait_for_text("That code is not right. Check it and try again.")
        .await;
    assert_eq!(b.url().await.path(), "/.stepgate/verify");
    assert!(text.contains("One of your backup codes"), "{text}");
    assert!(!text.contains("remote-user"), "{text}");
    assert_eq!(app_requests(&rig), forwarded, "nothing forwarded");
    b.screenshot("backup-code-refused").await;

    // Another, unused code works.
    b.fill("#code", &codes[1]).await;
    b.click(VERIFY_BUTTON).await;
    expect_app(&b, "/docs", "carol").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_asks_again_after_the_window_and_returns_to_the_page() {
    let rig = Rig::start(ACCESS).await;
    let enrolled = rig.user_with_totp("dave", None).await;
    let mut b = Browser::start("step_up").await;

    // A login with the app's code counts as a recent second factor.
    b.goto(&rig.gw.url_for("/admin/users?page=2")).await;
    b.wait_for_path("/.stepgate/login").await;
    b.screenshot("login").await;
    sign_in(&b, "dave").await;
    b.wait_for_path("/.stepgate/verify").await;
    let text = b.wait_for_text("Two-step verification").await;
    assert!(text.contains("Not you?"), "{text}");
    b.screenshot("verify").await;
    b.fill("#code", &rig.totp_now(&enrolled.secret)).await;
    expect_app(&b, "/admin/users?page=2", "dave").await;
    b.screenshot("app").await;
    rig.next_step();

    // Six minutes later: the rest of the app is open, /admin asks again.
    rig.advance(SIX_MINUTES);
    b.goto(&rig.gw.url_for("/reports")).await;
    expect_app(&b, "/reports", "dave").await;
    b.screenshot("app-other-path").await;
    let forwarded = app_requests(&rig);
    b.goto(&rig.gw.url_for("/admin/users?page=2")).await;
    b.wait_for_path_and_query("/.stepgate/verify?rd=%2Fadmin%2Fusers%3Fpage%3D2")
        .await;
    let text = b.wait_for_text("Confirm it's you").await;
    assert!(
        text.contains("Opening /admin/users?page=2 needs a recent second-factor check."),
        "{text}"
    );
    assert!(
        text.contains("6-digit code from your authenticator app"),
        "{text}"
    );
    assert!(
        !text.contains("Not you?"),
        "no sign-out offer on step-up: {text}"
    );
    assert_eq!(b.title().await, "Confirm it's you · Stepgate");
    assert_eq!(app_requests(&rig), forwarded, "nothing forwarded");
    b.screenshot("step-up").await;

    b.fill("#code", &rig.totp_now(&enrolled.secret)).await;
    expect_app(&b, "/admin/users?page=2", "dave").await;
    b.screenshot("app-after-step-up").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn french_is_chosen_on_the_login_page_and_remembered() {
    let rig = Rig::start(ACCESS).await;
    let enrolled = rig.user_with_totp("eve", None).await;
    let mut b = Browser::start("french").await;

    b.goto(&rig.gw.url_for("/")).await;
    b.wait_for_path_and_query("/.stepgate/login?rd=%2F").await;
    assert!(b.text().await.contains("Sign in to Stepgate"));
    b.screenshot("login-en").await;
    b.click("nav.languages a[hreflang='fr']").await;
    b.wait_for_path_and_query("/.stepgate/login?rd=%2F&lang=fr")
        .await;
    let text = b.wait_for_text("Connexion à Stepgate").await;
    assert!(text.contains("Nom d'utilisateur"), "{text}");
    assert!(text.contains("Mot de passe"), "{text}");
    assert!(text.contains("Rester connecté sur cet appareil"), "{text}");
    assert_eq!(b.attr("html", "lang").await.as_deref(), Some("fr"));
    assert_eq!(
        b.text_of("nav.languages [aria-current='true']").await,
        "Français"
    );
    b.screenshot("login-fr").await;

    // The verification page, reached without ?lang, is in French too.
    b.fill("#username", "eve").await;
    b.fill("#password", PASSWORD).await;
    b.click(LOGIN_BUTTON).await;
    b.wait_for_path_and_query("/.stepgate/verify?rd=%2F").await;
    let text = b.wait_for_text("Validation en deux étapes").await;
    assert!(
        text.contains("Code à 6 chiffres de votre application d'authentification"),
        "{text}"
    );
    assert!(text.contains("Utiliser un code de secours"), "{text}");
    assert!(text.contains("Vérifier"), "{text}");
    assert_eq!(b.attr("html", "lang").await.as_deref(), Some("fr"));
    b.screenshot("verify-fr").await;

    b.fill("#code", &rig.totp_now(&enrolled.secret)).await;
    expect_app(&b, "/", "eve").await;
    b.screenshot("app").await;

    // Still French on the next portal page, and English again once chosen.
    b.goto(&rig.gw.url_for("/.stepgate/settings")).await;
    let text = b.wait_for_text("Paramètres de sécurité").await;
    assert!(text.contains("Connecté en tant que eve."), "{text}");
    b.screenshot("settings-fr").await;
    b.click("nav.languages a[hreflang='en']").await;
    b.wait_for_path_and_query("/.stepgate/settings?lang=en")
        .await;
    b.wait_for_text("Security settings").await;
    assert_eq!(b.attr("html", "lang").await.as_deref(), Some("en"));
    b.screenshot("settings-en").await;
    b.goto(&rig.gw.url_for("/.stepgate/logout")).await;
    b.wait_for_text("Sign out?").await;
    b.screenshot("logout-en").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_code_login_with_the_code_from_the_mail() {
    let rig = Rig::start(ACCESS).await;
    rig.user_with_email_codes("frank").await;
    let before = rig.smtp.messages().len();
    let mut b = Browser::start("email_code").await;

    b.goto(&rig.gw.url_for("/inbox?folder=new")).await;
    b.wait_for_path("/.stepgate/login").await;
    b.screenshot("login").await;
    sign_in(&b, "frank").await;
    // The code is on its way when the verification page opens, and the page says so.
    b.wait_for_path_and_query("/.stepgate/verify?rd=%2Finbox%3Ffolder%3Dnew&sent=1")
        .await;
    let text = b.wait_for_text("Code from the email we sent you").await;
    assert!(text.contains("Two-step verification"), "{text}");
    assert!(text.contains("We sent you a code."), "{text}");
    let mail = rig.code_mail_after(before).await;
    assert_eq!(mail.envelope_to, ["frank@example.test"]);
    let code = mail.code();
    b.screenshot("verify-email").await;

    b.fill("#code", &code).await;
    expect_app(&b, "/inbox?folder=new", "frank").await;
    b.screenshot("app").await;
    b.close().await;
}
