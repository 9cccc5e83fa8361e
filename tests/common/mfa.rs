//! Second-factor tests through a running gateway: a [`Rig`] bundles the gateway (on a
//! [`ManualClock`]), a real SMTP server and an SMS webhook sink it sends codes to, and an echo
//! upstream. Helpers log in, verify, enrol TOTP (codes computed with totp-rs at the clock's
//! time) and read the codes out of the mails and text messages that arrived.
//!
//! ```ignore
//! let rig = Rig::start("").await;
//! rig.user("alice", Some("alice@example.test"), &[]).await;
//! let cookie = rig.login_one_factor("alice").await;
//! let totp = rig.enrol_totp(&cookie).await;     // totp.cookie is now a two_factor session
//! rig.next_step();                                // the enrolment code's step is used
//! let pending = rig.login_pending("alice").await;
//! let cookie = rig.verify_ok(&pending, "totp", &rig.totp_now(&totp.secret)).await;
//! ```

use std::time::Duration;

use mail_parser::MessageParser;
use reqwest::header::{ACCEPT, COOKIE};
use serde_json::{Value, json};
use totp_rs::{Builder, Secret};

use stepgate::auth::user::User;
use stepgate::clock::{Clock, ManualClock, Timestamp};

use super::auth::{
    Client, PREFIX, create_user_full, json as json_body, manual_clock, post_login, send,
    session_info, set_session_cookie, text,
};
use super::{EchoUpstream, Gateway, SmsRequest, SmsSink, SmtpServer, http_client};

/// The password of every account the rig creates.
pub const PASSWORD: &str = "Correct-Horse-7781";
/// One TOTP time step (the default period).
pub const STEP: Duration = Duration::from_secs(30);
pub const SECOND: Duration = Duration::from_secs(1);
pub const MINUTE: Duration = Duration::from_secs(60);

/// Everything a second-factor test talks to.
pub struct Rig {
    pub gw: Gateway,
    pub clock: ManualClock,
    pub smtp: SmtpServer,
    pub sms: SmsSink,
    pub upstream: EchoUpstream,
}

/// `[email]` and `[sms]` sections pointing at `smtp` and `sms`.
pub fn notify_toml(smtp: &SmtpServer, sms: &SmsSink) -> String {
    format!(
        "[email]\ntransport = \"smtp\"\nurl = \"smtp://127.0.0.1:{}?tls=none\"\n\
         from = \"Stepgate <noreply@example.test>\"\ntimeout = \"10s\"\n\n\
         [sms]\nwebhook_url = \"{}\"\ntimeout = \"10s\"\n",
        smtp.port(),
        sms.url()
    )
}

impl Rig {
    /// A rig whose gateway also merges `extra` (TOML) over its configuration.
    pub async fn start(extra: &str) -> Rig {
        Self::start_with(SmtpServer::start().await, SmsSink::start().await, extra).await
    }

    /// A rig around the given SMTP server and SMS sink (e.g. ones that refuse).
    pub async fn start_with(smtp: SmtpServer, sms: SmsSink, extra: &str) -> Rig {
        let upstream = EchoUpstream::start().await;
        let (clock, shared) = manual_clock();
        let gw = Gateway::builder()
            .upstream(&upstream.url())
            .clock(shared)
            .extra_toml(&notify_toml(&smtp, &sms))
            .extra_toml(extra)
            .start()
            .await;
        Rig {
            gw,
            clock,
            smtp,
            sms,
            upstream,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// Moves the clock one TOTP step on, so the next code is a fresh one.
    pub fn next_step(&self) {
        self.clock.advance(STEP);
    }

    /// Creates an account with [`PASSWORD`], display name "Name of NAME".
    pub async fn user(&self, name: &str, email: Option<&str>, groups: &[&str]) -> User {
        let display = format!("Name of {name}");
        create_user_full(&self.gw, name, PASSWORD, groups, Some(&display), email).await
    }

    /// The TOTP code for `secret` (base32) at the clock's current time.
    pub fn totp_now(&self, secret: &str) -> String {
        totp_code(secret, self.now())
    }

    // -----------------------------------------------------------------------------------------
    // Login and verification

    /// `POST /login` (JSON client) with the password; returns the status, the session cookie
    /// set (if any) and the body.
    pub async fn password_login(
        &self,
        name: &str,
        password: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Option<String>, Value) {
        let resp = post_login(
            &self.gw,
            &[("username", name), ("password", password)],
            Client::Api,
            headers,
        )
        .await;
        let status = resp.status().as_u16();
        let cookie = set_session_cookie(resp.headers());
        (status, cookie, json_body(resp).await)
    }

    /// Logs in a user who owes a second factor: asserts the answer says so and returns the
    /// cookie of the pending session.
    pub async fn login_pending(&self, name: &str) -> String {
        self.login_pending_with(name, &[]).await
    }

    pub async fn login_pending_with(&self, name: &str, headers: &[(&str, &str)]) -> String {
        let (status, cookie, body) = self.password_login(name, PASSWORD, headers).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "second_factor_required", "{body}");
        cookie.unwrap_or_else(|| panic!("no session cookie: {body}"))
    }

    /// Logs in a user who owes no second factor: asserts the login is complete.
    pub async fn login_one_factor(&self, name: &str) -> String {
        let (status, cookie, body) = self.password_login(name, PASSWORD, &[]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "authenticated", "{body}");
        cookie.unwrap_or_else(|| panic!("no session cookie: {body}"))
    }

    /// `POST path` with a JSON body, as an API client, with the cookie if given.
    pub async fn post(&self, path: &str, cookie: Option<&str>, body: Value) -> reqwest::Response {
        self.post_with(path, cookie, body, &[]).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        cookie: Option<&str>,
        body: Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut builder = http_client()
            .post(self.gw.url_for(&format!("{PREFIX}{path}")))
            .header(ACCEPT, "application/json")
            .json(&body);
        if let Some(cookie) = cookie {
            builder = builder.header(COOKIE, cookie);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        send(builder).await
    }

    /// `POST path` and the answer's status, new session cookie (if any) and JSON body.
    pub async fn post_json(
        &self,
        path: &str,
        cookie: Option<&str>,
        body: Value,
    ) -> (u16, Option<String>, Value) {
        let resp = self.post(path, cookie, body).await;
        let status = resp.status().as_u16();
        let cookie = set_session_cookie(resp.headers());
        (status, cookie, json_body(resp).await)
    }

    /// `POST /verify {method, code}`: status, new cookie, body.
    pub async fn verify(
        &self,
        cookie: &str,
        method: &str,
        code: &str,
    ) -> (u16, Option<String>, Value) {
        self.post_json(
            "/verify",
            Some(cookie),
            json!({ "method": method, "code": code }),
        )
        .await
    }

    /// A verification that must succeed: returns the new (rotated) session cookie.
    pub async fn verify_ok(&self, cookie: &str, method: &str, code: &str) -> String {
        let (status, new_cookie, body) = self.verify(cookie, method, code).await;
        assert_eq!(status, 200, "{method} {code}: {body}");
        assert_eq!(body["status"], "authenticated", "{body}");
        let new_cookie = new_cookie.unwrap_or_else(|| panic!("no rotated cookie: {body}"));
        assert_ne!(new_cookie, cookie, "the session id must change");
        new_cookie
    }

    /// A verification that must be refused as a wrong code (the challenge lives on).
    pub async fn verify_refused(&self, cookie: &str, method: &str, code: &str) -> Value {
        let (status, new_cookie, body) = self.verify(cookie, method, code).await;
        assert_eq!(status, 401, "{method} {code}: {body}");
        assert_eq!(body["error"], "invalid_code", "{body}");
        assert!(new_cookie.is_none(), "a refused code set a session: {body}");
        body
    }

    /// `POST /verify/send {method}`: status, `Retry-After` header (if any), body.
    pub async fn send_code(&self, cookie: &str, method: &str) -> (u16, Option<String>, Value) {
        let resp = self
            .post("/verify/send", Some(cookie), json!({ "method": method }))
            .await;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ASCII Retry-After").to_owned());
        (status, retry_after, json_body(resp).await)
    }

    /// `GET /api/session`: status and body.
    pub async fn session(&self, cookie: &str) -> (u16, Value) {
        session_info(&self.gw, Some(cookie)).await
    }

    /// `GET /api/session` of a live session: its body.
    pub async fn session_ok(&self, cookie: &str) -> Value {
        let (status, body) = self.session(cookie).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `GET path` (not under the prefix) through the gateway as an API client.
    pub async fn get_app(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        super::auth::get(&self.gw, path, cookie, Client::Api).await
    }

    // -----------------------------------------------------------------------------------------
    // Enrolment

    /// Enrols TOTP for the session's user at the clock's time (password re-entry, then a code
    /// from the new secret). Returns the secret, the backup codes and the new session cookie.
    pub async fn enrol_totp(&self, cookie: &str) -> Enrolled {
        let begin = self
            .enrolment_step(
                "/settings/totp/begin",
                cookie,
                json!({ "password": PASSWORD }),
            )
            .await;
        let secret = begin["secret"].as_str().expect("secret").to_owned();
        let code = self.totp_now(&secret);
        let (status, new_cookie, confirm) = self
            .post_json(
                "/settings/totp/confirm",
                Some(cookie),
                json!({ "code": code }),
            )
            .await;
        assert_eq!(status, 200, "{confirm}");
        let backup_codes = confirm["backup_codes"]
            .as_array()
            .expect("backup_codes")
            .iter()
            .map(|c| c.as_str().expect("a backup code").to_owned())
            .collect();
        Enrolled {
            secret,
            backup_codes,
            cookie: new_cookie.expect("confirming rotates the session"),
        }
    }

    /// Posts `body` to an enrolment `path` (`/settings/totp/begin`, `/settings/phone`) and
    /// expects 200. A first factor for an account with an address asks for an emailed code:
    /// then the code is asked for, read from the mail and sent along, as the settings page's
    /// "Email me a code" button and code field do. Returns the answer's body.
    pub async fn enrolment_step(&self, path: &str, cookie: &str, mut body: Value) -> Value {
        let (status, _, answer) = self.post_json(path, Some(cookie), body.clone()).await;
        if status == 200 {
            return answer;
        }
        assert_eq!(
            (status, &answer["error"]),
            (401, &json!("email_code_required")),
            "{path}: {answer}"
        );
        let n = self.smtp.messages().len();
        let (status, _, sent) = self.send_code(cookie, "email").await;
        assert_eq!(status, 200, "asking for the enrolment code: {sent}");
        body["email_code"] = json!(self.code_mail_after(n).await.code());
        let (status, _, answer) = self.post_json(path, Some(cookie), body).await;
        assert_eq!(status, 200, "{path} with the emailed code: {answer}");
        answer
    }

    /// Creates `name` (with `email`), logs in with the password and enrols TOTP. Returns the
    /// enrolment; the clock is one step past the enrolment code.
    pub async fn user_with_totp(&self, name: &str, email: Option<&str>) -> Enrolled {
        self.user(name, email, &[]).await;
        let cookie = self.login_one_factor(name).await;
        let enrolled = self.enrol_totp(&cookie).await;
        self.next_step();
        enrolled
    }

    /// Turns e-mail codes on for the session's user (no 2FA yet, so no re-verification).
    pub async fn enable_email_codes(&self, cookie: &str) {
        let (status, _, body) = self
            .post_json(
                "/settings/email-verification",
                Some(cookie),
                json!({ "enabled": true }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Creates `name` with an e-mail address and e-mail codes on. Returns nothing: the next
    /// password login owes an e-mailed code.
    pub async fn user_with_email_codes(&self, name: &str) {
        let email = format!("{name}@example.test");
        self.user(name, Some(&email), &[]).await;
        let cookie = self.login_one_factor(name).await;
        self.enable_email_codes(&cookie).await;
    }

    /// Logs `name` (e-mail codes on) in completely: password, the mailed code, verification.
    /// Returns the two_factor session cookie. Sends one code, so a cooldown starts now.
    pub async fn login_with_email_code(&self, name: &str) -> String {
        let before = self.smtp.messages().len();
        let pending = self.login_pending(name).await;
        let code = self.code_mail_after(before).await.code();
        self.verify_ok(&pending, "email", &code).await
    }

    /// Logs `name` (TOTP enrolled with `secret`) in completely: password, then the current
    /// code. Returns the two_factor session cookie.
    pub async fn login_with_totp(&self, name: &str, secret: &str) -> String {
        let pending = self.login_pending(name).await;
        self.verify_ok(&pending, "totp", &self.totp_now(secret))
            .await
    }

    /// Adds and confirms `phone` for the session's user (no 2FA yet).
    pub async fn add_phone(&self, cookie: &str, phone: &str) {
        let before = self.sms.received().len();
        self.enrolment_step(
            "/settings/phone",
            cookie,
            json!({ "phone": phone, "password": PASSWORD }),
        )
        .await;
        let sms = self.sms_after(before).await;
        assert_eq!(sms.json()["to"], phone);
        let (status, _, body) = self
            .post_json(
                "/settings/phone/confirm",
                Some(cookie),
                json!({ "code": sms_code(&sms) }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    // -----------------------------------------------------------------------------------------
    // Mail and text messages

    /// Every message the SMTP server accepted, parsed.
    pub fn mails(&self) -> Vec<Mail> {
        self.smtp.messages().iter().map(Mail::parse).collect()
    }

    /// The message number `n` (0-based) once it arrived.
    pub async fn mail_at(&self, n: usize) -> Mail {
        Mail::parse(&self.smtp.wait_for_message(n + 1).await[n])
    }

    /// The first code mail among the messages after the first `n`, waiting for it.
    pub async fn code_mail_after(&self, n: usize) -> Mail {
        let mut i = n;
        loop {
            let mail = self.mail_at(i).await;
            if mail.is_code_mail() {
                return mail;
            }
            i += 1;
        }
    }

    /// The first notice whose subject contains `subject` among the messages after the first
    /// `n`, waiting for it.
    pub async fn mail_with_subject_after(&self, n: usize, subject: &str) -> Mail {
        let mut i = n;
        loop {
            let mail = self.mail_at(i).await;
            if mail.subject.contains(subject) {
                return mail;
            }
            i += 1;
        }
    }

    /// Text message number `n` (0-based) once it arrived.
    pub async fn sms_after(&self, n: usize) -> SmsRequest {
        self.sms.wait_for_requests(n + 1).await.remove(n)
    }
}

/// A TOTP enrolment as the user sees it.
pub struct Enrolled {
    /// Base32.
    pub secret: String,
    pub backup_codes: Vec<String>,
    /// The session after confirmation (two_factor).
    pub cookie: String,
}

/// The TOTP code of `secret` (base32, default parameters) at `at`.
pub fn totp_code(secret: &str, at: Timestamp) -> String {
    totp_code_of(secret, at, 6)
}

/// The `digits`-digit TOTP code for `secret` (base32) at `at` (`mfa.totp_digits`).
pub fn totp_code_of(secret: &str, at: Timestamp, digits: u8) -> String {
    let secret = Secret::try_from_base32(secret).expect("base32 secret");
    let totp = Builder::new()
        .with_secret(secret)
        .with_digits(digits)
        .build()
        .expect("valid TOTP parameters");
    totp.generate(u64::try_from(at.as_secs()).expect("time after 1970"))
        .to_string()
}

/// A code different from `code` with the same number of digits.
pub fn wrong_code(code: &str) -> String {
    code.chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from_digit((d + 1) % 10, 10).expect("digit"),
            None => c,
        })
        .collect()
}

/// The first run of exactly six digits in `s`.
pub fn six_digits(s: &str) -> Option<String> {
    regex::Regex::new(r"(?:^|\D)(\d{6})(?:\D|$)")
        .expect("regex")
        .captures(s)
        .map(|c| c[1].to_owned())
}

/// The code in a text message the webhook received.
pub fn sms_code(sms: &SmsRequest) -> String {
    let body = sms.json();
    let message = body["message"].as_str().expect("message").to_owned();
    six_digits(&message).unwrap_or_else(|| panic!("no code in {message:?}"))
}

/// One accepted message, parsed.
#[derive(Debug, Clone)]
pub struct Mail {
    pub envelope_to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub text_parts: usize,
    pub html_parts: usize,
}

impl Mail {
    pub fn parse(received: &super::ReceivedMail) -> Mail {
        let parsed = MessageParser::default()
            .parse(&received.data)
            .expect("a parseable message");
        Mail {
            envelope_to: received.to.clone(),
            subject: parsed.subject().unwrap_or_default().to_owned(),
            text: parsed
                .body_text(0)
                .map(|t| t.into_owned())
                .unwrap_or_default(),
            html: parsed
                .body_html(0)
                .map(|t| t.into_owned())
                .unwrap_or_default(),
            text_parts: parsed.text_body_count(),
            html_parts: parsed.html_body_count(),
        }
    }

    pub fn is_code_mail(&self) -> bool {
        self.subject.contains("verification code") || self.subject.contains("code de vérification")
    }

    /// The code in a code mail's text part.
    pub fn code(&self) -> String {
        assert!(self.is_code_mail(), "not a code mail: {}", self.subject);
        six_digits(&self.text).unwrap_or_else(|| panic!("no code in {:?}", self.text))
    }
}

/// Reads the body of a response as text (for HTML pages).
pub async fn body_text(resp: reqwest::Response) -> String {
    text(resp).await
}
