//! The second-factor step: after the password, before a `two_factor` rule, and to re-verify
//! before changing security settings. One page, one endpoint, whatever the reason.

use std::sync::Arc;

use askama::Template;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::render::Frame;
use super::{Ctx, form, render};
use crate::app::App;
use crate::auth::audit::{self, AuditEvent, AuditKind};
use crate::auth::factors::{Channel, FactorError, FactorSummary, Method};
use crate::auth::regulation::Attempt;
use crate::auth::session::AuthLevel;
use crate::auth::user::{User, Username};
use crate::decision::Identity;
use crate::error::Error;
use crate::http::body::Body;
use crate::http::cookies;
use crate::http::identify::identify;
use crate::http::negotiate::Format;
use crate::notify::{Notice, NotifyError};

/// Wrong codes a challenge survives; the next one ends the session.
pub const MAX_CHALLENGE_FAILURES: u32 = 5;
/// A second factor owed after the password must be given within this time.
pub const CHALLENGE_TTL: std::time::Duration = std::time::Duration::from_secs(5 * 60);

#[derive(Deserialize, Default)]
struct VerifyQuery {
    rd: Option<String>,
    method: Option<String>,
    /// Set by the login when it sent the preferred method's code itself: `1` sent, `0` not,
    /// `delayed` when it may still arrive.
    sent: Option<String>,
}

/// No `Debug`: it holds a code.
#[derive(Deserialize)]
struct VerifyForm {
    #[serde(default)]
    method: String,
    #[serde(default)]
    code: String,
    rd: Option<String>,
}

#[derive(Deserialize)]
struct SendForm {
    #[serde(default)]
    method: String,
    rd: Option<String>,
}

/// Step-up fallback for accounts without a second factor (rules with
/// `step_up_fallback = "password"`): the password, entered again.
const PASSWORD: &str = "password";

#[derive(Template)]
#[template(path = "reauth.html")]
struct ReauthPage<'a> {
    f: &'a Frame,
    rd: &'a str,
    username: &'a str,
    error: Option<&'a str>,
}

fn reauth_page(
    ctx: &Ctx<'_>,
    identity: &Identity,
    rd: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response<Body>, Error> {
    match ctx.format {
        Format::Json => Ok(render::json(
            status,
            serde_json::json!({ "status": "password_required", "methods": [PASSWORD], "rd": rd }),
        )),
        Format::Html => render::page(
            status,
            &ReauthPage {
                f: &ctx.frame,
                rd,
                username: identity.user.username.as_str(),
                error,
            },
        ),
    }
}

/// The password again, for a step-up rule with a password fallback, by a user who has no
/// second factor. Records `reauth_at`; never raises the session to two factors. `attempt` is
/// this password's admission by the regulator, held until its failure is recorded.
async fn reauth_submit(
    ctx: &Ctx<'_>,
    identity: &Identity,
    summary: &FactorSummary,
    password: String,
    rd: &str,
    attempt: Attempt,
) -> Result<Response<Body>, Error> {
    if !summary.methods.is_empty() || identity.session.auth_level < AuthLevel::OneFactor {
        return Err(Error::BadRequest("confirm with your second factor"));
    }
    let ok = ctx
        .app
        .hasher
        .verify(
            crate::auth::password::Password::new(password),
            Some(&identity.user.password_hash),
        )
        .await;
    if !ok {
        if count_failure(ctx, identity, "password", attempt).await? {
            return ended_for_failures(ctx, rd);
        }
        return reauth_page(
            ctx,
            identity,
            rd,
            StatusCode::UNAUTHORIZED,
            Some(ctx.t.get("reauth.wrong")),
        );
    }
    let key = identity.session.key;
    let now = ctx.app.clock.now();
    let (id, session) = blocking(ctx.arc, move |app| {
        app.sessions.rotate_with(&key, |s| {
            s.reauth_at = Some(now);
            s.challenge_failures = 0;
        })
    })
    .await?
    .map_err(|e| Error::Internal(format!("session: {e}")))?
    .ok_or(Error::Unauthenticated)?;
    let held = ctx.app.held_forms.verified(&key, session.key, now);
    finish(ctx, &identity.session, id, held, rd)
}

/// Counts a wrong code or password against the challenge and the account's regulation, then
/// ends `attempt` (not before: until then it keeps other attempts on the same account, network
/// and session waiting). Returns whether the session has now been ended for too many failures.
///
/// Fails closed: if the failure cannot be recorded for regulation the answer is an error, not
/// the usual refusal, so a broken store never lets guesses go uncounted unnoticed.
async fn count_failure(
    ctx: &Ctx<'_>,
    identity: &Identity,
    what: &str,
    attempt: Attempt,
) -> Result<bool, Error> {
    let username = identity.user.username.clone();
    let ip = ctx.client_ip;
    let key = identity.session.key;
    let (regulation, session) = blocking(ctx.arc, move |app| {
        let regulation = app.regulator.record_failure(username.as_str(), ip);
        let session = app.sessions.update(&key, |s| s.challenge_failures += 1);
        drop(attempt);
        (regulation, session)
    })
    .await?;
    audit::record(
        &ctx.app.store,
        AuditEvent::new(ctx.app.clock.now(), AuditKind::SecondFactorFailed)
            .with_username(identity.user.username.as_str())
            .with_client_ip(ctx.client_ip)
            .with_detail(what),
    );
    let banned = regulation.map_err(|e| Error::Internal(format!("regulation: {e}")))?;
    // The password of this sign-in was right: when this wrong code bans the account (not
    // only the network it came from), its owner hears that someone who knows the password is
    // guessing the second factor (once, when the ban starts).
    if banned.is_some() && identity.session.auth_level == AuthLevel::AwaitSecondFactor {
        let name = identity.user.username.clone();
        let account = blocking(ctx.arc, move |app| {
            app.regulator.account_banned(name.as_str())
        })
        .await?
        .unwrap_or(false);
        if account {
            super::settings::notify(ctx, &identity.user, Notice::SecondFactorFailures).await;
        }
    }
    let session = session.map_err(|e| Error::Internal(format!("session: {e}")))?;
    let exhausted = session.is_none_or(|s| s.challenge_failures >= MAX_CHALLENGE_FAILURES);
    if exhausted {
        let key = identity.session.key;
        blocking(ctx.arc, move |app| app.sessions.revoke(&key))
            .await?
            .map_err(|e| Error::Internal(format!("session revoke: {e}")))?;
    }
    Ok(exhausted)
}

/// The answer once a challenge has ended the session: sign in again.
fn ended_for_failures(ctx: &Ctx<'_>, rd: &str) -> Result<Response<Body>, Error> {
    let mut resp = match ctx.format {
        Format::Json => render::json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "too_many_attempts", "login_url": super::login_url(ctx.prefix(), rd) }),
        ),
        Format::Html => super::login::redirect_to_login(ctx, rd)?,
    };
    render::set_cookie(
        &mut resp,
        &cookies::clear(&ctx.app.config.session, ctx.conn.tls, ctx.host.as_deref()),
    )?;
    Ok(resp)
}

/// After a successful verification: the new cookie, then the held form's Continue page, or
/// the return target.
fn finish(
    ctx: &Ctx<'_>,
    before: &crate::auth::session::Session,
    id: crate::auth::session::SessionId,
    held: Option<crate::http::held_forms::HeldForm>,
    rd: &str,
) -> Result<Response<Body>, Error> {
    let cookie = ctx.session_cookie(&id, before.remember_me);
    let mut resp = match (ctx.format, held) {
        (Format::Html, Some(form)) => render::page(
            StatusCode::OK,
            &ContinuePage {
                f: &ctx.frame,
                action: &form.path_and_query,
                id: &form.id,
            },
        )?,
        (Format::Json, _) => render::json(
            StatusCode::OK,
            serde_json::json!({ "status": "authenticated", "redirect": rd }),
        ),
        (Format::Html, None) => render::redirect(StatusCode::SEE_OTHER, rd)?,
    };
    render::set_cookie(&mut resp, &cookie)?;
    Ok(resp)
}

#[derive(Template)]
#[template(path = "continue.html")]
struct ContinuePage<'a> {
    f: &'a Frame,
    action: &'a str,
    id: &'a str,
}

#[derive(Template)]
#[template(path = "verify.html")]
struct VerifyPage<'a> {
    f: &'a Frame,
    rd: &'a str,
    rd_encoded: &'a str,
    method: &'a str,
    prompt: String,
    /// Digits of the code asked for: the field submits itself once that many are typed.
    code_digits: usize,
    others: Vec<(&'static str, &'static str)>,
    step_up: bool,
    reason: &'a str,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

/// Catalogue key of the link that switches to `m`.
fn method_label(m: Method) -> &'static str {
    match m {
        Method::Totp => "method.totp_switch",
        Method::Email => "method.email_switch",
        Method::Sms => "method.sms_switch",
        Method::Backup => "method.backup_switch",
    }
}

/// Catalogue key of the label of the code field for `m`.
fn prompt(m: Method) -> &'static str {
    match m {
        Method::Totp => "method.totp_prompt",
        Method::Email => "method.email_prompt",
        Method::Sms => "method.sms_prompt",
        Method::Backup => "method.backup_prompt",
    }
}

/// How many digits the code of `m` has (for the authenticator app, those it was enrolled with:
/// the page's field submits itself at that many); a backup code is not only digits and its
/// field never submits itself.
fn code_digits(ctx: &Ctx<'_>, summary: &FactorSummary, m: Method) -> usize {
    match m {
        Method::Totp => usize::from(
            summary
                .totp_digits
                .unwrap_or(ctx.app.config.mfa.totp_digits),
        ),
        Method::Email | Method::Sms => crate::auth::factors::codes::CODE_DIGITS,
        Method::Backup => 0,
    }
}

/// Runs blocking store work off the async workers.
pub async fn blocking<T: Send + 'static>(
    app: &Arc<App>,
    work: impl FnOnce(&App) -> T + Send + 'static,
) -> Result<T, Error> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || work(&app))
        .await
        .map_err(|e| Error::Internal(format!("blocking task: {e}")))
}

pub async fn summary(app: &Arc<App>, user: &Arc<User>) -> Result<FactorSummary, Error> {
    let user = user.clone();
    blocking(app, move |app| app.factors.summary(&user))
        .await?
        .map_err(factor_error)
}

/// Factor errors that are not about the code a user typed.
pub fn factor_error(e: FactorError) -> Error {
    match e {
        FactorError::Cooldown { retry_after } | FactorError::HourlyLimit { retry_after } => {
            Error::TooManyRequests { retry_after }
        }
        FactorError::MethodUnavailable | FactorError::NotEnrolled => {
            Error::BadRequest("this verification method is not available")
        }
        // A confirmation sent twice (the code field submits itself, then Enter), or after the
        // set-up expired or an administrator reset it.
        FactorError::NoPendingEnrolment => Error::NothingToConfirm,
        other => Error::Internal(format!("second factor: {other}")),
    }
}

fn identity_for_verify(
    ctx: &Ctx<'_>,
    req_headers: &http::HeaderMap,
) -> Result<Option<Identity>, Error> {
    identify(ctx.app, req_headers, ctx.conn.tls)
}

/// Has a pending challenge run out of time?
fn challenge_expired(ctx: &Ctx<'_>, identity: &Identity) -> bool {
    identity.session.auth_level == AuthLevel::AwaitSecondFactor
        && identity
            .session
            .challenge_started_at
            .is_some_and(|t| ctx.app.clock.now().since(t) >= CHALLENGE_TTL)
}

fn chosen_method(summary: &FactorSummary, asked: Option<&str>) -> Option<Method> {
    asked
        .and_then(Method::parse)
        .filter(|m| summary.methods.contains(m))
        .or(summary.preferred)
        .or_else(|| summary.methods.first().copied())
}

/// After a code could not be sent: a message that may have gone out all the same (a timeout)
/// keeps its code and counts as sent, otherwise a slow provider would let anyone holding the
/// password send the user messages without limit. A refused one is withdrawn, so that the
/// user may ask again at once. Returns the error to answer with.
pub(super) async fn not_sent(
    ctx: &Ctx<'_>,
    username: &Username,
    channel: Channel,
    err: &NotifyError,
) -> Error {
    if err.may_have_been_delivered() {
        return Error::CodeDelayed;
    }
    let username = username.clone();
    let _ = blocking(ctx.arc, move |app| {
        app.factors.withdraw_code(&username, channel)
    })
    .await;
    Error::CodeNotSent
}

/// Sends an email or SMS login code to the user. An undeliverable code is withdrawn, so the
/// user can ask again at once (see [`not_sent`]).
pub async fn send_code(ctx: &Ctx<'_>, user: &Arc<User>, method: Method) -> Result<(), Error> {
    let channel = match method {
        Method::Email => Channel::Email,
        Method::Sms => Channel::Sms,
        _ => return Err(Error::BadRequest("only email and SMS codes are sent")),
    };
    let username = user.username.clone();
    // Sent where the code is bound, which may differ from the address `user` was read with.
    let (code, to) = blocking(ctx.arc, move |app| {
        app.factors.issue_code_to(&username, channel)
    })
    .await?
    .map_err(factor_error)?;
    let lang = ctx.lang;
    let sent = match method {
        Method::Email => {
            ctx.app
                .notifier
                .send_email_code(
                    &to,
                    &user.display_name,
                    lang,
                    code.as_str(),
                    ctx.app.factors.settings().code_ttl,
                )
                .await
        }
        _ => {
            ctx.app
                .notifier
                .send_sms_code(&to, lang, code.as_str())
                .await
        }
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, method = method.as_str(), "could not send a login code");
        return Err(not_sent(ctx, &user.username, channel, &e).await);
    }
    Ok(())
}

fn verify_url(prefix: &str, rd: &str, method: Option<Method>) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    match method {
        Some(m) => format!("{prefix}/verify?method={}&rd={encoded}", m.as_str()),
        None => format!("{prefix}/verify?rd={encoded}"),
    }
}

pub async fn page(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
    let query: VerifyQuery = req
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let rd = super::login::safe_rd(ctx, query.rd.as_deref());
    let Some(identity) = identity_for_verify(ctx, req.headers())? else {
        return super::login::redirect_to_login(ctx, &rd);
    };
    if challenge_expired(ctx, &identity) {
        return expired_challenge(ctx, &identity, &rd).await;
    }
    let summary = summary(ctx.arc, &identity.user).await?;
    if summary.methods.is_empty() && query.method.as_deref() == Some(PASSWORD) {
        return reauth_page(ctx, &identity, &rd, StatusCode::OK, None);
    }
    let Some(method) = chosen_method(&summary, query.method.as_deref()) else {
        // No factor yet: enrol first (a `two_factor` rule or `mfa.required` sent the user here).
        return super::settings::redirect_to_enrolment(ctx, &rd);
    };
    match ctx.format {
        Format::Json => Ok(render::json(
            StatusCode::OK,
            serde_json::json!({
                "status": "second_factor_required",
                "methods": summary.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "preferred": summary.preferred.map(Method::as_str),
                "rd": rd,
            }),
        )),
        Format::Html => {
            // What the login's own sending of the code came to, for the method it was sent by.
            let sent = query.sent.as_deref().filter(|_| {
                matches!(method, Method::Email | Method::Sms) && summary.preferred == Some(method)
            });
            let notice = match sent {
                Some("1") => Some(sent_notice(ctx)),
                Some("delayed") => Some(ctx.t.get("error.code_delayed").to_string()),
                _ => None,
            };
            let error = (sent == Some("0")).then(|| ctx.t.get("error.code_not_sent"));
            verify_page(
                ctx,
                &identity,
                &summary,
                method,
                &rd,
                StatusCode::OK,
                notice.as_deref(),
                error,
            )
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn verify_page(
    ctx: &Ctx<'_>,
    identity: &Identity,
    summary: &FactorSummary,
    method: Method,
    rd: &str,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
) -> Result<Response<Body>, Error> {
    let rd_encoded: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let others = summary
        .methods
        .iter()
        .copied()
        .filter(|m| *m != method)
        .map(|m| (m.as_str(), ctx.t.get(method_label(m))))
        .collect();
    let step_up = identity.session.auth_level != AuthLevel::AwaitSecondFactor;
    render::page(
        status,
        &VerifyPage {
            f: &ctx.frame,
            rd,
            rd_encoded: &rd_encoded,
            method: method.as_str(),
            prompt: ctx
                .t
                .fill(prompt(method), "digits", code_digits(ctx, summary, method)),
            code_digits: code_digits(ctx, summary, method),
            others,
            step_up,
            reason: &ctx.t.fill("verify.reason", "page", page_for_display(rd)),
            notice,
            error,
        },
    )
}

/// The page a step-up is for, as the reason line names it: its non-ASCII characters (and
/// spaces) percent-encoded as in a URL. The return target comes from the query string, so
/// anyone can write it: characters that merely look like spaces (`U+2800`) would otherwise let
/// a link put a sentence of its choosing on the gateway's own page.
fn page_for_display(rd: &str) -> String {
    const SHOWN_ENCODED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b' ');
    percent_encoding::utf8_percent_encode(rd, SHOWN_ENCODED).to_string()
}

async fn expired_challenge(
    ctx: &Ctx<'_>,
    identity: &Identity,
    rd: &str,
) -> Result<Response<Body>, Error> {
    let key = identity.session.key;
    blocking(ctx.arc, move |app| app.sessions.revoke(&key))
        .await?
        .map_err(|e| Error::Internal(format!("session revoke: {e}")))?;
    match ctx.format {
        Format::Json => Ok(render::json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "challenge_expired", "login_url": super::login_url(ctx.prefix(), rd) }),
        )),
        Format::Html => super::login::redirect_to_login(ctx, rd),
    }
}

pub async fn send(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let Some(identity) = identity_for_verify(ctx, req.headers())? else {
        return Err(Error::Unauthenticated);
    };
    let form: SendForm = form::read(ctx, req).await?;
    let rd = super::login::safe_rd(ctx, form.rd.as_deref());
    if challenge_expired(ctx, &identity) {
        return expired_challenge(ctx, &identity, &rd).await;
    }
    let method = Method::parse(&form.method).ok_or(Error::BadRequest("unknown method"))?;
    let summary = summary(ctx.arc, &identity.user).await?;
    // A first second factor needs an emailed code (see `settings::needs_email_code`), whether
    // or not email is one of the account's methods. That code is typed on the settings page,
    // so a browser goes back there.
    let enrolment_code = !summary.methods.contains(&method)
        && method == Method::Email
        && super::settings::needs_email_code(ctx, &identity.user, &summary);
    if !summary.methods.contains(&method) && !enrolment_code {
        return Err(Error::BadRequest(
            "this verification method is not available",
        ));
    }
    send_code(ctx, &identity.user, method).await?;
    if enrolment_code && ctx.format == Format::Html {
        return render::redirect(
            StatusCode::SEE_OTHER,
            &super::settings::url_with_notice(ctx.prefix(), "email_sent", &rd),
        );
    }
    match ctx.format {
        Format::Json => Ok(render::json(
            StatusCode::OK,
            serde_json::json!({ "status": "sent" }),
        )),
        Format::Html => verify_page(
            ctx,
            &identity,
            &summary,
            method,
            &rd,
            StatusCode::OK,
            Some(&sent_notice(ctx)),
            None,
        ),
    }
}

/// "We sent you a code. It is valid for ..." with `mfa.code_ttl` in words.
fn sent_notice(ctx: &Ctx<'_>) -> String {
    let ttl = ctx.app.factors.settings().code_ttl;
    ctx.t.fill(
        "verify.sent",
        "duration",
        crate::notify::messages::duration_words(ctx.lang, ttl),
    )
}

pub async fn submit(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let Some(identity) = identity_for_verify(ctx, req.headers())? else {
        return Err(Error::Unauthenticated);
    };
    let form: VerifyForm = form::read(ctx, req).await?;
    let rd = super::login::safe_rd(ctx, form.rd.as_deref());
    if challenge_expired(ctx, &identity) {
        return expired_challenge(ctx, &identity, &rd).await;
    }
    let username = identity.user.username.clone();
    // Admitted by the regulator before anything is verified, and one at a time per session:
    // codes sent at once cannot all be judged before the first failure is counted.
    let key = identity.session.key;
    let attempt = ctx
        .app
        .regulator
        .begin_challenge(username.as_str(), ctx.client_ip, key)
        .await
        .map_err(|banned| Error::TooManyRequests {
            retry_after: banned.retry_after,
        })?;
    // The session as it is now: an attempt that ended while this one waited may have ended it
    // (too many failures, or success and a new id) or added to its failures.
    let current = blocking(ctx.arc, move |app| app.store.get_session(&key))
        .await?
        .map_err(|e| Error::Internal(format!("session: {e}")))?;
    match current {
        None => return Err(Error::Unauthenticated),
        Some(session) if session.challenge_failures >= MAX_CHALLENGE_FAILURES => {
            blocking(ctx.arc, move |app| app.sessions.revoke(&key))
                .await?
                .map_err(|e| Error::Internal(format!("session revoke: {e}")))?;
            return ended_for_failures(ctx, &rd);
        }
        Some(_) => {}
    }
    let summary = summary(ctx.arc, &identity.user).await?;
    if form.method == PASSWORD {
        return reauth_submit(ctx, &identity, &summary, form.code, &rd, attempt).await;
    }
    let method = Method::parse(&form.method).ok_or(Error::BadRequest("unknown method"))?;
    if !summary.methods.contains(&method) {
        return Err(Error::BadRequest(
            "this verification method is not available",
        ));
    }
    let code = form.code;
    let name = username.clone();
    let outcome = blocking(ctx.arc, move |app| match method {
        Method::Totp => app.factors.verify_totp(&name, &code).map(|()| None),
        Method::Backup => app.factors.verify_backup(&name, &code).map(Some),
        Method::Email => app
            .factors
            .verify_code(&name, Channel::Email, &code)
            .map(|()| None),
        Method::Sms => app
            .factors
            .verify_code(&name, Channel::Sms, &code)
            .map(|()| None),
    })
    .await?;
    match outcome {
        Ok(backup_remaining) => succeed(ctx, &identity, method, backup_remaining, &rd).await,
        Err(
            e @ (FactorError::InvalidCode
            | FactorError::Replayed
            | FactorError::Expired
            | FactorError::TooManyAttempts
            | FactorError::NoCode),
        ) => fail(ctx, &identity, &summary, method, &rd, e, attempt).await,
        Err(other) => Err(factor_error(other)),
    }
}

async fn succeed(
    ctx: &Ctx<'_>,
    identity: &Identity,
    method: Method,
    backup_remaining: Option<usize>,
    rd: &str,
) -> Result<Response<Body>, Error> {
    let key = identity.session.key;
    let now = ctx.app.clock.now();
    let (id, session) = blocking(ctx.arc, move |app| {
        app.sessions.complete_second_factor(&key, now)
    })
    .await?
    .map_err(|e| Error::Internal(format!("session: {e}")))?
    .ok_or(Error::Unauthenticated)?;
    // A form held for step-up follows the session to its new id.
    let held = ctx.app.held_forms.verified(&key, session.key, now);
    let user = &identity.user;
    audit::record(
        &ctx.app.store,
        AuditEvent::new(now, AuditKind::SecondFactorSucceeded)
            .with_username(user.username.as_str())
            .with_client_ip(ctx.client_ip)
            .with_detail(method.as_str()),
    );
    if let Some(remaining) = backup_remaining {
        audit::record(
            &ctx.app.store,
            AuditEvent::new(now, AuditKind::BackupCodeUsed)
                .with_username(user.username.as_str())
                .with_client_ip(ctx.client_ip)
                .with_detail(format!("{remaining} remaining")),
        );
        super::settings::notify(ctx, user, Notice::BackupCodeUsed { remaining }).await;
    }
    finish(ctx, &identity.session, id, held, rd)
}

#[allow(clippy::too_many_arguments)]
async fn fail(
    ctx: &Ctx<'_>,
    identity: &Identity,
    summary: &FactorSummary,
    method: Method,
    rd: &str,
    error: FactorError,
    attempt: Attempt,
) -> Result<Response<Body>, Error> {
    if count_failure(ctx, identity, method.as_str(), attempt).await? {
        return ended_for_failures(ctx, rd);
    }
    let message = ctx.t.get(match error {
        FactorError::Replayed => "verify.replayed",
        FactorError::Expired => "verify.expired",
        FactorError::TooManyAttempts | FactorError::NoCode => "verify.unusable",
        _ => "verify.invalid",
    });
    match ctx.format {
        Format::Json => Ok(render::json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "invalid_code", "message": message }),
        )),
        Format::Html => verify_page(
            ctx,
            identity,
            summary,
            method,
            rd,
            StatusCode::UNAUTHORIZED,
            None,
            Some(message),
        ),
    }
}

pub fn url(prefix: &str, rd: &str) -> String {
    verify_url(prefix, rd, None)
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_page_a_step_up_is_for_is_shown_with_non_ascii_encoded() {
        assert_eq!(page_for_display("/admin/users?id=7"), "/admin/users?id=7");
        assert_eq!(
            page_for_display("/\u{2800}Your\u{2800}account is locked"),
            "/%E2%A0%80Your%E2%A0%80account%20is%20locked"
        );
        assert_eq!(page_for_display("/caf\u{e9}"), "/caf%C3%A9");
    }
    use super::*;
    use crate::portal::i18n::{LANGS, has_key};

    #[test]
    fn every_method_has_its_texts_in_every_catalogue() {
        for m in Method::ALL {
            for key in [method_label(m), prompt(m)] {
                for lang in LANGS {
                    assert!(has_key(lang, key), "{m}: {key} ({})", lang.tag());
                }
            }
        }
    }
}
