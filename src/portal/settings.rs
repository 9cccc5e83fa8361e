//! The user's own security settings: second factors and password. Changes need a recent
//! second factor when two-step verification is on (`mfa.settings_reverify`).

use askama::Template;
use base64::Engine;
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::render::Frame;
use super::verify::{blocking, factor_error, summary};
use super::{Ctx, form, render};
use crate::auth::audit::{self, AuditEvent, AuditKind};
use crate::auth::directory::PasswordChange;
use crate::auth::factors::{
    Channel, FactorError, FactorSummary, Method, TwoFactorState, normalise_phone,
};
use crate::auth::password::Password;
use crate::auth::session::AuthLevel;
use crate::auth::user::User;
use crate::decision::Identity;
use crate::error::Error;
use crate::http::body::Body;
use crate::http::identify::identify;
use crate::http::negotiate::Format;
use crate::notify::Notice;

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage<'a> {
    f: &'a Frame,
    rd: &'a str,
    username: &'a str,
    state: &'a str,
    state_label: &'a str,
    /// `mfa.required` applies and no factor is set up yet.
    must_enrol: bool,
    /// No factor yet, and a `two_factor` rule sent the user here on the way to a page.
    enrol_for_page: bool,
    /// Seconds between two codes of an authenticator app (`mfa.totp_period`).
    totp_period: u64,
    methods: Vec<MethodRow>,
    /// Methods that can be preferred (a backup code is never asked first).
    preferable: usize,
    totp: bool,
    enrolled_at: Option<String>,
    backup_remaining: usize,
    has_email: bool,
    email_verification: bool,
    /// Email codes are the only second factor: turning them off asks for the password.
    email_only: bool,
    sms_enabled: bool,
    phone: Option<String>,
    phone_verified: bool,
    phone_pending: Option<String>,
    needs_email_code: bool,
    min_password: usize,
    sessions: Vec<super::sessions::SessionRow>,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

/// A second-factor method as the settings page lists it.
struct MethodRow {
    value: &'static str,
    label: &'static str,
    preferred: bool,
}

/// Catalogue key of the name of a method.
fn method_name(m: Method) -> &'static str {
    match m {
        Method::Totp => "method.totp",
        Method::Email => "method.email",
        Method::Sms => "method.sms",
        Method::Backup => "method.backup",
    }
}

#[derive(Template)]
#[template(path = "totp_enrol.html")]
struct TotpPage<'a> {
    f: &'a Frame,
    rd: &'a str,
    /// The new secret, shown once: `None` when the page is shown again after a wrong code
    /// (the app has it already, and no other session of the account may read it).
    shown: Option<ShownSecret<'a>>,
    /// `mfa.totp_digits`: the code field submits itself once that many are typed.
    code_digits: usize,
    error: Option<&'a str>,
}

/// What adds a new secret to an app: its QR code, the key to type, the `otpauth://` link.
struct ShownSecret<'a> {
    qr_base64: String,
    secret: &'a str,
    /// The secret in groups of four, easier to type.
    secret_grouped: String,
    otpauth_uri: &'a str,
}

#[derive(Template)]
#[template(path = "backup_codes.html")]
struct BackupCodesPage<'a> {
    f: &'a Frame,
    codes: &'a [String],
    /// The codes, one a line, for the copy button.
    codes_text: &'a str,
    download: String,
    file_name: String,
    continue_to: &'a str,
    notice: Option<&'a str>,
}

#[derive(Deserialize, Default)]
struct SettingsQuery {
    rd: Option<String>,
    notice: Option<String>,
}

/// Messages a redirect back to the settings page may show (by key, never reflected text):
/// the catalogue key of each.
fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "saved" => "settings.saved",
        "password" => "settings.password_changed",
        "disabled" => "settings.disabled",
        "phone_sent" => "settings.phone_sent",
        "phone_confirmed" => "settings.phone_confirmed",
        "email_sent" => "settings.email_sent",
        "sessions_revoked" => "settings.sessions_revoked",
        _ => return None,
    })
}

pub fn redirect_to_enrolment(ctx: &Ctx<'_>, rd: &str) -> Result<Response<Body>, Error> {
    let encoded: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let url = format!("{}/settings?rd={encoded}", ctx.prefix());
    match ctx.format {
        Format::Json => Ok(render::json(
            StatusCode::FORBIDDEN,
            serde_json::json!({ "error": "enrolment_required", "settings_url": url }),
        )),
        Format::Html => render::redirect(StatusCode::SEE_OTHER, &url),
    }
}

/// Sends a security notice by email when the user has an address and email is configured.
pub async fn notify(ctx: &Ctx<'_>, user: &User, notice: Notice) {
    let Some(to) = user.email.as_deref() else {
        return;
    };
    if !ctx.app.notifier.email_enabled() {
        return;
    }
    if let Err(e) = ctx
        .app
        .notifier
        .send_notice(to, &user.display_name, ctx.lang, notice)
        .await
    {
        tracing::warn!(error = %e, "could not send a security notice");
    }
}

/// The logged-in user of a settings request; a session still owing its second factor is not
/// enough.
fn settings_identity(ctx: &Ctx<'_>, headers: &HeaderMap) -> Result<Identity, Error> {
    match identify(ctx.app, headers, ctx.conn.tls)? {
        Some(id) if id.session.auth_level >= AuthLevel::OneFactor => Ok(id),
        Some(_) => Err(Error::SecondFactorPending),
        None => Err(Error::Unauthenticated),
    }
}

/// With two-step verification on, a change needs a second factor verified recently.
fn require_fresh_second_factor(
    ctx: &Ctx<'_>,
    identity: &Identity,
    summary: &FactorSummary,
) -> Result<(), Error> {
    if summary.state == TwoFactorState::NotEnabled {
        return Ok(());
    }
    // The same rule as step-up on proxied paths, with the `mfa.settings_reverify` window.
    let window = ctx.app.config.mfa.settings_reverify;
    if crate::auth::step_up::second_factor_fresh(&identity.session, window, ctx.app.clock.now()) {
        Ok(())
    } else {
        Err(Error::ReverifyRequired {
            verify_url: super::verify::url(ctx.prefix(), &format!("{}/settings", ctx.prefix())),
        })
    }
}

/// Checks the current password of `user`, regulated as a login is: refused with
/// [`Error::TooManyRequests`] while the account or the client's network is banned, admitted
/// only while the attempts in flight cannot exceed `max_retries` (see
/// [`crate::auth::regulation`]), and a wrong password counted towards a ban. Otherwise anyone
/// holding the session cookie could guess the password here without limit.
async fn check_password(ctx: &Ctx<'_>, user: &User, password: String) -> Result<(), Error> {
    let attempt = match ctx.app.regulator.begin(&user.username, ctx.client_ip).await {
        Ok(attempt) => attempt,
        Err(banned) => {
            if ctx
                .app
                .regulator
                .first_refusal(user.username.as_str(), ctx.client_ip)
            {
                audit_change(ctx, user, AuditKind::Banned, "password re-entry refused");
            }
            return Err(Error::TooManyRequests {
                retry_after: banned.retry_after,
            });
        }
    };
    let ok = ctx
        .app
        .hasher
        .verify(Password::new(password), Some(&user.password_hash))
        .await;
    if ok {
        return Ok(());
    }
    let name = user.username.clone();
    let ip = ctx.client_ip;
    // The attempt ends once its failure is stored, even if this request is dropped meanwhile.
    let banned = blocking(ctx.arc, move |app| {
        let banned = app.regulator.record_failure(name.as_str(), ip);
        drop(attempt);
        banned
    })
    .await?
    .map_err(|e| Error::Internal(format!("regulation: {e}")))?;
    if banned.is_some() {
        audit_change(ctx, user, AuditKind::Banned, "wrong password re-entered");
    }
    Err(Error::WrongPassword)
}

/// `{prefix}/settings?notice=<key>&rd=<target>`: the settings page showing one of its
/// notices (see [`notice_text`]), keeping where the user goes once done.
pub(super) fn url_with_notice(prefix: &str, key: &str, rd: &str) -> String {
    let rd: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    format!("{prefix}/settings?notice={key}&rd={rd}")
}

fn done(ctx: &Ctx<'_>, key: &str) -> Result<Response<Body>, Error> {
    match ctx.format {
        Format::Json => Ok(render::json(
            StatusCode::OK,
            serde_json::json!({ "status": "ok" }),
        )),
        Format::Html => render::redirect(
            StatusCode::SEE_OTHER,
            &format!("{}/settings?notice={key}", ctx.prefix()),
        ),
    }
}

fn audit_change(ctx: &Ctx<'_>, user: &User, kind: AuditKind, detail: &str) {
    audit::record(
        &ctx.app.store,
        AuditEvent::new(ctx.app.clock.now(), kind)
            .with_username(user.username.as_str())
            .with_client_ip(ctx.client_ip)
            .with_detail(detail),
    );
}

/// Catalogue key of the 2FA state badge.
fn state_label(state: TwoFactorState) -> &'static str {
    match state {
        TwoFactorState::NotEnabled => "settings.state_not_enabled",
        TwoFactorState::Enabled => "settings.state_enabled",
        TwoFactorState::Expired => "settings.state_expired",
    }
}

/// A first second factor (the account has none) is added only with a code emailed to the
/// account's address, when it has one and the gateway sends email: otherwise a stolen
/// password alone would set up an authenticator app or a phone and pass every `two_factor`
/// rule. An account without an address sets up its first factor with the password alone.
pub(super) fn needs_email_code(ctx: &Ctx<'_>, user: &User, summary: &FactorSummary) -> bool {
    summary.state == TwoFactorState::NotEnabled
        && user.email.is_some()
        && ctx.app.notifier.email_enabled()
}

/// The notice for a change that leaves two-step verification on: it was just turned on, or it
/// now works with other methods or codes than before.
fn enabled_or_changed(before: &FactorSummary) -> Notice {
    if before.state == TwoFactorState::NotEnabled {
        Notice::TwoFactorEnabled
    } else {
        Notice::FactorsChanged
    }
}

/// After a change to the second factors from this session: if it turned two-step
/// verification on (it was off `before`), every other session of the account ends (see
/// [`crate::auth::directory::UserDirectory::end_other_sessions_if_two_factor_on`]). The change
/// is made by then: a store failure here is logged, not answered with an error page that
/// would hide the new backup codes or leave the browser unaware that its factor is on.
async fn end_other_sessions_if_two_factor_on(
    ctx: &Ctx<'_>,
    identity: &Identity,
    before: &FactorSummary,
) {
    let name = identity.user.username.clone();
    let was = before.state;
    let keep = identity.session.key;
    let ended = blocking(ctx.arc, move |app| {
        app.users
            .end_other_sessions_if_two_factor_on(&name, was, &keep)
    })
    .await
    .and_then(|r| r.map_err(factor_error));
    if let Err(e) = ended {
        tracing::error!(
            user = %identity.user.username,
            error = %e,
            "two-step verification was turned on, but the account's other sessions could not be ended"
        );
    }
}

/// After two-step verification was turned off from this session: the account's other
/// sessions end (one may have been opened with a factor that is now deleted, a lost phone's),
/// and this one keeps only the password it was opened with, so that `two_factor` rules and
/// `mfa.required` judge it as what it now is: an account without a second factor.
async fn end_sessions_proven_by_deleted_factors(
    ctx: &Ctx<'_>,
    identity: &Identity,
) -> Result<(), Error> {
    let name = identity.user.username.clone();
    let keep = identity.session.key;
    blocking(ctx.arc, move |app| {
        app.sessions.revoke_user_except(&name, &keep)?;
        app.sessions.update(&keep, |s| {
            s.auth_level = AuthLevel::OneFactor;
            s.second_factor_at = None;
        })
    })
    .await?
    .map(|_| ())
    .map_err(|e| {
        Error::Internal(format!(
            "ending the sessions of a disabled second factor: {e}"
        ))
    })
}

/// How the emailed code asked for by [`check_enrolment`] turned out.
enum EmailCode {
    Right,
    Wrong { banned: bool },
    Missing,
}

/// What adding an authenticator app or a phone asks for, beyond the session: the account's
/// password, and for a first second factor the code emailed to the account's address (see
/// [`needs_email_code`]). A stolen session alone cannot add a device, nor can a stolen
/// password alone add the first one to an account with an address.
async fn check_enrolment(
    ctx: &Ctx<'_>,
    user: &User,
    summary: &FactorSummary,
    password: String,
    email_code: Option<String>,
) -> Result<(), Error> {
    check_password(ctx, user, password).await?;
    if needs_email_code(ctx, user, summary) {
        let code = email_code.unwrap_or_default();
        let name = user.username.clone();
        let ip = ctx.client_ip;
        // A wrong code counts like a wrong password (and like a wrong code at login): the
        // account's regulation bans whoever guesses, and the guess is in the audit trail. No
        // code to judge (none sent yet, or expired) is only asked for again.
        let checked = blocking(ctx.arc, move |app| {
            match app.factors.verify_code(&name, Channel::Email, &code) {
                Ok(()) => Ok(EmailCode::Right),
                Err(FactorError::InvalidCode | FactorError::TooManyAttempts) => app
                    .regulator
                    .record_failure(name.as_str(), ip)
                    .map(|banned| EmailCode::Wrong {
                        banned: banned.is_some(),
                    }),
                Err(_) => Ok(EmailCode::Missing),
            }
        })
        .await?
        .map_err(|e| Error::Internal(format!("regulation: {e}")))?;
        match checked {
            EmailCode::Right => {}
            EmailCode::Missing => return Err(Error::EmailCodeRequired),
            EmailCode::Wrong { banned } => {
                audit_change(
                    ctx,
                    user,
                    AuditKind::SecondFactorFailed,
                    "wrong emailed code for a first second factor",
                );
                if banned {
                    audit_change(ctx, user, AuditKind::Banned, "wrong emailed code");
                }
                return Err(Error::EmailCodeRequired);
            }
        }
    }
    Ok(())
}

pub async fn page(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
    let identity = settings_identity(ctx, req.headers())?;
    let query: SettingsQuery = req
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let rd = super::login::safe_rd(ctx, query.rd.as_deref());
    let summary = summary(ctx.arc, &identity.user).await?;
    let user = &identity.user;
    if ctx.format == Format::Json {
        return Ok(render::json(
            StatusCode::OK,
            serde_json::json!({ "two_factor": two_factor_json(&summary) }),
        ));
    }
    let sessions = super::sessions::list(ctx, &identity).await?;
    let page = SettingsPage {
        f: &ctx.frame,
        rd: &rd,
        username: user.username.as_str(),
        state: summary.state.as_str(),
        state_label: ctx.t.get(state_label(summary.state)),
        must_enrol: summary.methods.is_empty() && ctx.app.config.mfa.is_required_for(user),
        enrol_for_page: summary.methods.is_empty()
            && !ctx.app.config.mfa.is_required_for(user)
            && query.rd.is_some()
            && rd != "/",
        totp_period: ctx.app.factors.settings().totp_period.as_secs(),
        methods: summary
            .methods
            .iter()
            .map(|&m| MethodRow {
                value: m.as_str(),
                label: ctx.t.get(method_name(m)),
                preferred: summary.preferred == Some(m),
            })
            .collect(),
        preferable: summary
            .methods
            .iter()
            .filter(|m| **m != Method::Backup)
            .count(),
        totp: summary.totp,
        enrolled_at: summary.enrolled_at.map(super::sessions::display_time),
        backup_remaining: summary.backup_codes_remaining,
        has_email: user.email.is_some() && ctx.app.notifier.email_enabled(),
        email_verification: summary.email_verification,
        email_only: email_is_the_only_factor(&summary),
        sms_enabled: ctx.app.notifier.sms_enabled(),
        phone: summary.phone.clone(),
        phone_verified: summary.phone_verified,
        phone_pending: summary.phone_pending.clone(),
        needs_email_code: needs_email_code(ctx, user, &summary),
        min_password: ctx.app.config.password.policy.min_length,
        sessions,
        notice: query
            .notice
            .as_deref()
            .and_then(notice_text)
            .map(|key| ctx.t.get(key)),
        error: None,
    };
    render::page(StatusCode::OK, &page)
}

/// `ABCD EFGH IJKL ...`: a base32 secret in groups of four characters.
fn group_by_four(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `two_factor` object of the session API and settings JSON.
pub fn two_factor_json(summary: &FactorSummary) -> serde_json::Value {
    serde_json::json!({
        "state": summary.state.as_str(),
        "methods": summary.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "preferred": summary.preferred.map(Method::as_str),
        "backup_codes_remaining": summary.backup_codes_remaining,
        "enrolled_at": summary.enrolled_at.map(|t| t.to_rfc3339()),
    })
}

/// No `Debug`: passwords.
#[derive(Deserialize)]
struct BeginForm {
    #[serde(default)]
    password: String,
    email_code: Option<String>,
    rd: Option<String>,
}

pub async fn totp_begin(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let identity = settings_identity(ctx, req.headers())?;
    let form: BeginForm = form::read(ctx, req).await?;
    let rd = super::login::safe_rd(ctx, form.rd.as_deref());
    let user = identity.user.clone();
    let summary = summary(ctx.arc, &user).await?;
    require_fresh_second_factor(ctx, &identity, &summary)?;
    check_enrolment(ctx, &user, &summary, form.password, form.email_code).await?;
    let enrolling = user.clone();
    let enrolment = blocking(ctx.arc, move |app| app.factors.begin_totp(&enrolling))
        .await?
        .map_err(factor_error)?;
    match ctx.format {
        Format::Json => Ok(render::json(
            StatusCode::OK,
            serde_json::json!({
                "secret": enrolment.secret_base32,
                "otpauth_uri": enrolment.otpauth_uri,
                "qr_svg": enrolment.qr_svg,
            }),
        )),
        Format::Html => render::page(
            StatusCode::OK,
            &TotpPage {
                f: &ctx.frame,
                rd: &rd,
                shown: Some(ShownSecret {
                    qr_base64: base64::engine::general_purpose::STANDARD.encode(&enrolment.qr_svg),
                    secret: &enrolment.secret_base32,
                    secret_grouped: group_by_four(&enrolment.secret_base32),
                    otpauth_uri: &enrolment.otpauth_uri,
                }),
                code_digits: usize::from(ctx.app.config.mfa.totp_digits),
                error: None,
            },
        ),
    }
}

/// No `Debug`: codes.
#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    code: String,
    rd: Option<String>,
}

pub async fn totp_confirm(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let identity = settings_identity(ctx, req.headers())?;
    let form: CodeForm = form::read(ctx, req).await?;
    let rd = super::login::safe_rd(ctx, form.rd.as_deref());
    let user = identity.user.clone();
    let was = summary(ctx.arc, &user).await?;
    let confirming = user.clone();
    let code = form.code;
    let codes = match blocking(ctx.arc, move |app| {
        app.factors.confirm_totp(&confirming, &code)
    })
    .await?
    {
        Ok(codes) => codes,
        Err(FactorError::InvalidCode | FactorError::Replayed | FactorError::Expired) => {
            // A browser is asked for another code, with the error, while the set-up can
            // still be confirmed: the app it already added keeps working (going back would
            // start over with a new secret). The secret is not shown again: the pending
            // set-up is the account's, and another session of it must not read it.
            if ctx.format == Format::Html {
                let pending_for = user.clone();
                let digits = blocking(ctx.arc, move |app| {
                    app.factors.pending_totp_digits(&pending_for)
                })
                .await?
                .map_err(factor_error)?;
                if let Some(digits) = digits {
                    return render::page(
                        StatusCode::UNAUTHORIZED,
                        &TotpPage {
                            f: &ctx.frame,
                            rd: &rd,
                            shown: None,
                            code_digits: usize::from(digits),
                            error: Some(ctx.t.get("error.invalid_code")),
                        },
                    );
                }
            }
            return Err(Error::InvalidCode);
        }
        Err(e) => return Err(factor_error(e)),
    };
    audit_change(ctx, &user, AuditKind::TwoFactorEnabled, "totp");
    end_other_sessions_if_two_factor_on(ctx, &identity, &was).await;
    // A new app replaces the old one and every backup code: the user hears of either.
    notify(ctx, &user, enabled_or_changed(&was)).await;
    // Entering a valid code from the new app proves a second factor now.
    let key = identity.session.key;
    let now = ctx.app.clock.now();
    let rotated = blocking(ctx.arc, move |app| {
        app.sessions.complete_second_factor(&key, now)
    })
    .await?
    .map_err(|e| Error::Internal(format!("session: {e}")))?;
    let continue_to = if rd == "/" {
        format!("{}/settings", ctx.prefix())
    } else {
        rd.clone()
    };
    let mut resp =
        backup_codes_response(ctx, &codes, &continue_to, Some(ctx.t.get("backup.enabled")))?;
    if let Some((id, session)) = rotated {
        render::set_cookie(&mut resp, &ctx.session_cookie(&id, session.remember_me))?;
    }
    Ok(resp)
}

fn backup_codes_response(
    ctx: &Ctx<'_>,
    codes: &[String],
    continue_to: &str,
    notice: Option<&str>,
) -> Result<Response<Body>, Error> {
    match ctx.format {
        Format::Json => Ok(render::json(
            StatusCode::OK,
            serde_json::json!({ "backup_codes": codes }),
        )),
        Format::Html => {
            let text = codes.join("\n") + "\n";
            let download: String = url::form_urlencoded::byte_serialize(text.as_bytes())
                .collect::<String>()
                .replace('+', "%20");
            render::page(
                StatusCode::OK,
                &BackupCodesPage {
                    f: &ctx.frame,
                    codes,
                    codes_text: text.trim_end(),
                    download,
                    file_name: format!("{}-{}", ctx.product(), ctx.t.get("backup.file_name")),
                    continue_to,
                    notice,
                },
            )
        }
    }
}

/// No `Debug`: the password.
#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    password: String,
}

/// New backup codes are a new way in, like an authenticator app: the password is asked for
/// besides a recent second factor, so that whoever holds a session for a few minutes cannot
/// take a set away.
pub async fn regenerate_backup(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let identity = settings_identity(ctx, req.headers())?;
    let form: PasswordForm = form::read(ctx, req).await?;
    let user = identity.user.clone();
    let summary = summary(ctx.arc, &user).await?;
    if !summary.totp {
        return Err(Error::BadRequest(
            "backup codes need an authenticator app first",
        ));
    }
    require_fresh_second_factor(ctx, &identity, &summary)?;
    // A form without the field (a page from before) is asked again, not counted as a guess.
    if form.password.is_empty() {
        return Err(Error::BadRequest(
            "new backup codes need the account's password",
        ));
    }
    check_password(ctx, &user, form.password).await?;
    let name = user.username.clone();
    let codes = blocking(ctx.arc, move |app| app.factors.regenerate_backup(&name))
        .await?
        .map_err(factor_error)?;
    audit_change(
        ctx,
        &user,
        AuditKind::FactorChanged,
        "backup_codes_regenerated",
    );
    notify(ctx, &user, Notice::FactorsChanged).await;
    backup_codes_response(ctx, &codes, &format!("{}/settings", ctx.prefix()), None)
}

/// No `Debug`: the password.
#[derive(Deserialize)]
struct EnabledForm {
    #[serde(default, deserialize_with = "form::flag")]
    enabled: bool,
    /// Asked for when turning off the only second factor (see [`email_is_the_only_factor`]).
    #[serde(default)]
    password: String,
}

/// Email codes are on and no other method would be left without them (backup codes need the
/// authenticator app): turning them off turns two-factor authentication off, which asks for
/// the password and sends a notice, as disabling it on purpose does.
fn email_is_the_only_factor(summary: &FactorSummary) -> bool {
    summary.methods.contains(&Method::Email)
        && summary
            .methods
            .iter()
            .all(|m| matches!(m, Method::Email | Method::Backup))
}

pub async fn email_verification(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let identity = settings_identity(ctx, req.headers())?;
    let form: EnabledForm = form::read(ctx, req).await?;
    let user = identity.user.clone();
    if user.email.is_none() {
        return Err(Error::BadRequest("the account has no email address"));
    }
    // Codes that cannot be sent would lock the user out at the next login.
    if form.enabled && !ctx.app.notifier.email_enabled() {
        return Err(Error::BadRequest("this gateway does not send email"));
    }
    let summary = summary(ctx.arc, &user).await?;
    require_fresh_second_factor(ctx, &identity, &summary)?;
    let turns_off_2fa = !form.enabled && email_is_the_only_factor(&summary);
    if turns_off_2fa {
        // A form without the field (a page from before) is asked again, not counted as a guess.
        if form.password.is_empty() {
            return Err(Error::BadRequest(
                "turning off the only second factor needs the account's password",
            ));
        }
        check_password(ctx, &user, form.password).await?;
    }
    let name = user.username.clone();
    let enabled = form.enabled;
    blocking(ctx.arc, move |app| {
        app.factors.set_email_verification(&name, enabled)
    })
    .await?
    .map_err(factor_error)?;
    audit_change(
        ctx,
        &user,
        AuditKind::FactorChanged,
        if enabled { "email_on" } else { "email_off" },
    );
    end_other_sessions_if_two_factor_on(ctx, &identity, &summary).await;
    if enabled != summary.email_verification && !turns_off_2fa {
        notify(ctx, &user, enabled_or_changed(&summary)).await;
    }
    if turns_off_2fa {
        audit_change(
            ctx,
            &user,
            AuditKind::TwoFactorDisabled,
            "email codes, the only factor, turned off",
        );
        notify(ctx, &user, Notice::TwoFactorDisabled).await;
    }
    done(ctx, "saved")
}

#[derive(Deserialize)]
struct PhoneForm {
    #[serde(default)]
    phone: String,
    #[serde(default)]
    password: String,
    email_code: Option<String>,
}

pub async fn phone(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let identity = settings_identity(ctx, req.headers())?;
    if !ctx.app.notifier.sms_enabled() {
        return Err(Error::BadRequest("text messages are not configured"));
    }
    let form: PhoneForm = form::read(ctx, req).await?;
    let user = identity.user.clone();
    let summary = summary(ctx.arc, &user).await?;
    require_fresh_second_factor(ctx, &identity, &summary)?;
    // A number that cannot be used is refused before the password or an emailed code is spent.
    let number = normalise_phone(&form.phone)
        .map_err(|_| Error::BadRequest("not a phone number in international form"))?;
    check_enrolment(ctx, &user, &summary, form.password, form.email_code).await?;
    let name = user.username.clone();
    let (phone, code) = blocking(ctx.arc, move |app| {
        app.factors.set_phone(&name, &number)?;
        // Sent to the number the code is bound to: the one just set, unless another request
        // set another meanwhile.
        let (code, phone) = app.factors.issue_code_to(&name, Channel::PhoneConfirm)?;
        Ok::<_, FactorError>((phone, code))
    })
    .await?
    .map_err(|e| match e {
        FactorError::InvalidPhone => Error::BadRequest("not a phone number in international form"),
        other => factor_error(other),
    })?;
    if let Err(e) = ctx
        .app
        .notifier
        .send_sms_code(&phone, ctx.lang, code.as_str())
        .await
    {
        tracing::warn!(error = %e, "could not send a phone confirmation code");
        return Err(super::verify::not_sent(ctx, &user.username, Channel::PhoneConfirm, &e).await);
    }
    audit_change(ctx, &user, AuditKind::FactorChanged, "phone_added");
    done(ctx, "phone_sent")
}

pub async fn phone_confirm(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let identity = settings_identity(ctx, req.headers())?;
    let form: CodeForm = form::read(ctx, req).await?;
    let user = identity.user.clone();
    let was = summary(ctx.arc, &user).await?;
    let name = user.username.clone();
    let code = form.code;
    match blocking(ctx.arc, move |app| app.factors.confirm_phone(&name, &code)).await? {
        Ok(()) => {}
        Err(
            FactorError::InvalidCode
            | FactorError::Expired
            | FactorError::TooManyAttempts
            | FactorError::NoCode,
        ) => return Err(Error::InvalidCode),
        Err(e) => return Err(factor_error(e)),
    }
    audit_change(ctx, &user, AuditKind::FactorChanged, "phone_confirmed");
    end_other_sessions_if_two_factor_on(ctx, &identity, &was).await;
    notify(ctx, &user, enabled_or_changed(&was)).await;
    done(ctx, "phone_confirmed")
}

#[derive(Deserialize)]
struct MethodForm {
    #[serde(default)]
    method: String,
}

pub async fn preferred_method(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let identity = settings_identity(ctx, req.headers())?;
    let form: MethodForm = form::read(ctx, req).await?;
    let method = Method::parse(&form.method).ok_or(Error::BadRequest("unknown method"))?;
    let user = identity.user.clone();
    let name = user.username.clone();
    blocking(ctx.arc, move |app| app.factors.set_preferred(&name, method))
        .await?
        .map_err(factor_error)?;
    done(ctx, "saved")
}

#[derive(Deserialize)]
struct PasswordOnly {
    #[serde(default)]
    password: String,
}

pub async fn disable(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let identity = settings_identity(ctx, req.headers())?;
    let form: PasswordOnly = form::read(ctx, req).await?;
    let user = identity.user.clone();
    let summary = summary(ctx.arc, &user).await?;
    require_fresh_second_factor(ctx, &identity, &summary)?;
    check_password(ctx, &user, form.password).await?;
    let name = user.username.clone();
    blocking(ctx.arc, move |app| app.factors.disable_all(&name))
        .await?
        .map_err(factor_error)?;
    audit_change(
        ctx,
        &user,
        AuditKind::TwoFactorDisabled,
        "all factors deleted",
    );
    // The owner hears of it whatever happens next.
    notify(ctx, &user, Notice::TwoFactorDisabled).await;
    end_sessions_proven_by_deleted_factors(ctx, &identity).await?;
    done(ctx, "disabled")
}

/// No `Debug`: passwords.
#[derive(Deserialize)]
struct ChangePasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

pub async fn change_password(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let identity = settings_identity(ctx, req.headers())?;
    let form: ChangePasswordForm = form::read(ctx, req).await?;
    let user = identity.user.clone();
    let summary = summary(ctx.arc, &user).await?;
    require_fresh_second_factor(ctx, &identity, &summary)?;
    check_password(ctx, &user, form.current_password).await?;
    let new = Password::new(form.new_password);
    ctx.app
        .config
        .password
        .policy
        .check(&new)
        .map_err(|e| Error::WeakPassword(e.to_string()))?;
    let hash = ctx
        .app
        .hasher
        .hash(new)
        .await
        .map_err(|e| Error::Internal(format!("hashing: {e}")))?;
    let name = user.username.clone();
    let key = identity.session.key;
    let remember = identity.session.remember_me;
    // Every other session of the account ends; this browser's moves to a fresh id, keeping its
    // level, its last second factor and its end. If it ended while the new password was being
    // hashed (a logout, an administrator's reset), it stays ended.
    let checked = user.password_hash.clone();
    let kept = blocking(ctx.arc, move |app| {
        app.users.change_password(&name, &checked, hash, &key)
    })
    .await?
    .map_err(|e| Error::Internal(format!("password change: {e}")))?;
    let id = match kept {
        // An administrator set another password, or disabled the account, meanwhile: this
        // session has ended with that change.
        PasswordChange::Refused => return Err(Error::Unauthenticated),
        PasswordChange::ChangedSessionEnded => {
            notify(ctx, &user, Notice::PasswordChanged).await;
            return Err(Error::Unauthenticated);
        }
        PasswordChange::Changed(id, _) => id,
    };
    notify(ctx, &user, Notice::PasswordChanged).await;
    let mut resp = done(ctx, "password")?;
    render::set_cookie(&mut resp, &ctx.session_cookie(&id, remember))?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portal::i18n::{LANGS, has_key};

    #[test]
    fn every_settings_text_is_in_every_catalogue() {
        let mut keys: Vec<&str> = Method::ALL.into_iter().map(method_name).collect();
        keys.extend(
            [
                TwoFactorState::NotEnabled,
                TwoFactorState::Enabled,
                TwoFactorState::Expired,
            ]
            .map(state_label),
        );
        for notice in [
            "saved",
            "password",
            "disabled",
            "phone_sent",
            "phone_confirmed",
            "email_sent",
            "sessions_revoked",
        ] {
            keys.push(notice_text(notice).unwrap_or("missing notice"));
        }
        for key in keys {
            for lang in LANGS {
                assert!(has_key(lang, key), "{key} ({})", lang.tag());
            }
        }
    }

    #[test]
    fn unknown_notices_are_not_reflected() {
        assert_eq!(notice_text("<script>"), None);
    }

    #[test]
    fn secrets_are_grouped_for_typing() {
        assert_eq!(group_by_four("ABCDEFGHIJ"), "ABCD EFGH IJ");
    }
}
