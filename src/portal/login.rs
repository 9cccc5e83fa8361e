//! The password step of login.

use askama::Template;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::credentials::{self, Source};
use super::render::Frame;
use super::{Ctx, form, render};
use crate::auth::audit::AuditKind;
use crate::auth::factors::Method;
use crate::auth::password::Password;
use crate::auth::session::{AuthLevel, SessionId};
use crate::error::Error;
use crate::http::body::Body;
use crate::http::cookies;
use crate::http::identify::identify;
use crate::http::negotiate::Format;

#[derive(Deserialize, Default)]
struct LoginQuery {
    rd: Option<String>,
}

/// The login form. No `Debug`: it holds a password.
#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default, deserialize_with = "form::flag")]
    remember_me: bool,
    rd: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    f: &'a Frame,
    rd: &'a str,
    username: &'a str,
    error: Option<&'a str>,
}

/// Catalogue key of the one answer to a wrong username or password.
const INVALID_CREDENTIALS: &str = "login.invalid";

/// A validated return target: a same-origin path, or an https URL inside the allowed redirect
/// domains or the session cookie domains (the applications a login covers).
pub fn safe_rd(ctx: &Ctx<'_>, rd: Option<&str>) -> String {
    let own_host = ctx.host.as_deref().unwrap_or("");
    let config = &ctx.app.config;
    let mut allowed = config.access.allowed_redirect_domains.clone();
    allowed.extend(config.session.domains.iter().map(|d| d.domain.clone()));
    rd.and_then(|rd| crate::policy::safe_redirect(rd, own_host, &allowed, !ctx.conn.tls))
        .unwrap_or_else(|| "/".to_string())
}

pub fn page(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
    let query: LoginQuery = req
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let rd = safe_rd(ctx, query.rd.as_deref());
    if let Some(identity) = identify(ctx.app, req.headers(), ctx.conn.tls)? {
        return if identity.session.auth_level == AuthLevel::AwaitSecondFactor {
            second_factor_next(ctx, &rd, None)
        } else {
            authenticated(ctx, &rd)
        };
    }
    match ctx.format {
        Format::Json => Ok(render::json(
            StatusCode::OK,
            serde_json::json!({ "status": "unauthenticated", "rd": rd }),
        )),
        Format::Html => login_page(ctx, StatusCode::OK, &rd, "", None),
    }
}

fn login_page(
    ctx: &Ctx<'_>,
    status: StatusCode,
    rd: &str,
    username: &str,
    error: Option<&str>,
) -> Result<Response<Body>, Error> {
    render::page(
        status,
        &LoginPage {
            f: &ctx.frame,
            rd,
            username,
            error,
        },
    )
}

fn authenticated(ctx: &Ctx<'_>, rd: &str) -> Result<Response<Body>, Error> {
    match ctx.format {
        Format::Json => Ok(render::json(
            StatusCode::OK,
            serde_json::json!({ "status": "authenticated", "redirect": rd }),
        )),
        Format::Html => render::redirect(StatusCode::SEE_OTHER, rd),
    }
}

pub async fn submit(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let app = ctx.app;
    // Ids that arrived with the request are never reused: they are ended on success.
    let cookie_name = cookies::session_cookie_name(&app.config.session, ctx.conn.tls);
    let arrived: Vec<SessionId> = cookies::read(req.headers(), &cookie_name)
        .into_iter()
        .filter_map(SessionId::parse)
        .collect();
    let form: LoginForm = form::read(ctx, req).await?;
    let rd = safe_rd(ctx, form.rd.as_deref());
    let attempted = form.username.trim();
    let password = Password::new(form.password);
    let Some(user) = credentials::check(ctx, Source::LoginForm, attempted, password).await? else {
        return match ctx.format {
            Format::Json => Ok(render::json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({ "error": "invalid_credentials", "message": ctx.t.get(INVALID_CREDENTIALS) }),
            )),
            Format::Html => login_page(
                ctx,
                StatusCode::UNAUTHORIZED,
                &rd,
                attempted,
                Some(ctx.t.get(INVALID_CREDENTIALS)),
            ),
        };
    };

    // A user with a second factor (or who must enrol one) is not logged in yet: the session
    // only opens the verification step.
    let summary = super::verify::summary(ctx.arc, &user).await?;
    let owes_second_factor = !summary.methods.is_empty();
    let must_enrol = !owes_second_factor && app.config.mfa.is_required_for(&user);
    let level = if owes_second_factor {
        AuthLevel::AwaitSecondFactor
    } else {
        AuthLevel::OneFactor
    };
    let remember = form.remember_me;
    let app_for_task = ctx.arc.clone();
    let checked = user.clone();
    let opened = tokio::task::spawn_blocking(move || {
        for old in arrived {
            app_for_task.sessions.revoke(&old.key())?;
        }
        app_for_task.users.open_session(&checked, level, remember)
    })
    .await
    .map_err(|e| Error::Internal(format!("session task: {e}")))?
    .map_err(|e| Error::Internal(format!("session create: {e}")))?;
    // The account changed while its password was being checked (new password, disabled,
    // deleted): no session, as for a wrong password.
    let Some((id, _session)) = opened else {
        return Err(Error::WrongPassword);
    };
    credentials::audit_attempt(
        ctx,
        Source::LoginForm,
        AuditKind::LoginSucceeded,
        Some(&user.username),
    );

    let cookie = ctx.session_cookie(&id, remember);
    let mut resp = if owes_second_factor || must_enrol {
        let mut sent = None;
        if let Some(method @ (Method::Email | Method::Sms)) = summary.preferred {
            // The code is on its way when the verification page opens, which says so, or
            // says that it could not be sent (and offers to send again).
            let result = super::verify::send_code(ctx, &user, method).await;
            if let Err(e) = &result {
                tracing::info!(error = %e, "login code not sent automatically");
            }
            sent = Some(match result {
                Ok(()) => "1",
                Err(Error::CodeDelayed) => "delayed",
                Err(_) => "0",
            });
        }
        second_factor_next(ctx, &rd, sent)?
    } else {
        authenticated(ctx, &rd)?
    };
    render::set_cookie(&mut resp, &cookie)?;
    Ok(resp)
}

/// To the verification page; `sent`: how sending the code of the preferred method (email or
/// SMS) went (`1`, `0`, or `delayed` when it may still arrive; `None`: nothing was sent, the
/// user picks a method).
fn second_factor_next(
    ctx: &Ctx<'_>,
    rd: &str,
    sent: Option<&str>,
) -> Result<Response<Body>, Error> {
    let mut url = super::verify::url(ctx.prefix(), rd);
    if let Some(sent) = sent {
        url.push_str("&sent=");
        url.push_str(sent);
    }
    match ctx.format {
        Format::Json => Ok(render::json(
            StatusCode::OK,
            serde_json::json!({ "status": "second_factor_required", "verify_url": url }),
        )),
        Format::Html => render::redirect(StatusCode::SEE_OTHER, &url),
    }
}

/// Not logged in: the login page (HTML) or 401 with its URL (JSON).
pub fn redirect_to_login(ctx: &Ctx<'_>, rd: &str) -> Result<Response<Body>, Error> {
    let url = super::login_url(ctx.prefix(), rd);
    match ctx.format {
        Format::Json => Ok(render::json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "authentication_required", "login_url": url }),
        )),
        Format::Html => render::redirect(StatusCode::SEE_OTHER, &url),
    }
}
