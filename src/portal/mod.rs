//! The gateway's own endpoints under `portal.prefix` (default `/.stepgate`). Nothing under the
//! prefix is ever forwarded upstream.
//!
//! | endpoint | what it does |
//! |---|---|
//! | `GET  /healthz` | liveness, 200 |
//! | `GET  /login?rd=` | the sign-in page (JSON: whether a login is needed) |
//! | `POST /login` | username + password (form or JSON) -> new session, 303 to `rd` |
//! | `GET  /logout` | confirmation page; `POST /logout` ends the session |
//! | `GET  /api/session` | the current session as JSON, 401 when not logged in |
//! | `GET/POST /verify`, `POST /verify/send` | the second-factor step (and re-verification) |
//! | `GET  /settings`, `POST /settings/...` | the user's own second factors and password |
//! | `GET  /static/*` | embedded stylesheet and scripts |
//! | `GET  /authz/auth-request` | forward-auth for nginx `auth_request` (see [`authz`]) |
//! | `GET  /authz/forward-auth` | forward-auth for Traefik and Caddy (see [`authz`]) |
//! | `POST /settings/sessions/revoke-others` | signs out the user's other sessions |
//! | `GET  /static/*` | embedded stylesheet and script (content-hashed), theme, logo |
//!
//! Pages speak the request's language ([`i18n`]); `?lang=` also sets the language cookie.

mod assets;
pub mod authz;
mod credentials;
pub mod form;
pub mod i18n;
mod login;
mod logout;
pub(crate) mod origin;
pub mod render;
mod session_api;
mod sessions;
mod settings;
mod verify;

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::app::App;
use crate::auth::session::SessionId;
use crate::error::Error;
use crate::http::ConnInfo;
use crate::http::body::{self, Body};
use crate::http::negotiate::{self, Format};
use crate::notify::Lang;
use crate::proxy::headers::request_host;
use i18n::Tr;

/// Is `path` the prefix itself or below it?
pub fn owns(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

pub fn is_healthz(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix) == Some("/healthz")
}

/// What every portal handler needs to know about the request.
pub struct Ctx<'a> {
    pub app: &'a App,
    /// The same app, for work handed to the blocking pool.
    pub arc: &'a Arc<App>,
    /// The language of pages and of messages sent on the user's behalf (email, SMS).
    pub lang: Lang,
    /// Its texts.
    pub t: Tr,
    /// The page layout every HTML answer is drawn in.
    pub frame: render::Frame,
    pub conn: ConnInfo,
    pub client_ip: IpAddr,
    pub format: Format,
    /// The Host the client asked for.
    pub host: Option<String>,
}

impl Ctx<'_> {
    pub fn prefix(&self) -> &str {
        &self.app.config.portal.prefix
    }

    pub fn product(&self) -> &str {
        &self.app.config.portal.title
    }

    /// The `Set-Cookie` value that hands session `id` to this client: for the browser session,
    /// or for `session.remember_me` when the user asked to be remembered.
    pub fn session_cookie(&self, id: &SessionId, remember: bool) -> String {
        let settings = &self.app.config.session;
        let max_age = remember.then_some(settings.settings.remember_me);
        crate::http::cookies::issue(
            settings,
            self.conn.tls,
            self.host.as_deref(),
            id.cookie_value(),
            max_age,
        )
    }
}

pub async fn handle(
    app: &Arc<App>,
    req: Request<Incoming>,
    path: &str,
    conn: ConnInfo,
    client_ip: IpAddr,
) -> Result<Response<Body>, Error> {
    let prefix = app.config.portal.prefix.as_str();
    let sub = path.strip_prefix(prefix).unwrap_or("").to_string();
    let query = req.uri().query();
    let lang = i18n::negotiate(req.headers(), query);
    let chosen = i18n::from_query(query);
    let is_get = matches!(*req.method(), Method::GET | Method::HEAD);
    let frame = render::Frame::new(
        &app.config.portal,
        lang,
        is_get.then(|| query.unwrap_or("")),
    );
    let ctx = Ctx {
        app,
        arc: app,
        lang,
        t: Tr::new(lang),
        frame,
        conn,
        client_ip,
        format: negotiate::preferred(req.headers()),
        host: request_host(&req).map(str::to_owned),
    };
    let method = req.method().clone();
    if method == Method::POST {
        origin::check_same_origin(req.headers(), conn.proto(), ctx.host.as_deref())?;
    }
    let mut resp = route(&ctx, req, method, &sub).await?;
    if !conn.tls {
        render::allow_plain_http_forms(resp.headers_mut());
    }
    // A language picked with `?lang=` is remembered.
    if let Some(lang) = chosen {
        render::set_cookie(&mut resp, &i18n::lang_cookie(lang, conn.tls))?;
    }
    Ok(resp)
}

async fn route(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
    method: Method,
    sub: &str,
) -> Result<Response<Body>, Error> {
    match (method, sub) {
        (Method::GET | Method::HEAD, "/healthz") => Ok(healthz()),
        (Method::GET | Method::HEAD, "/login") => login::page(ctx, &req),
        (Method::POST, "/login") => login::submit(ctx, req).await,
        (Method::GET | Method::HEAD, "/logout") => logout::page(ctx, &req),
        (Method::POST, "/logout") => logout::submit(ctx, &req).await,
        (Method::GET | Method::HEAD, "/api/session") => session_api::get(ctx, &req).await,
        (Method::GET | Method::HEAD, "/verify") => verify::page(ctx, &req).await,
        (Method::POST, "/verify") => verify::submit(ctx, req).await,
        (Method::POST, "/verify/send") => verify::send(ctx, req).await,
        (Method::GET | Method::HEAD, "/settings") => settings::page(ctx, &req).await,
        (Method::POST, "/settings/totp/begin") => settings::totp_begin(ctx, req).await,
        (Method::POST, "/settings/totp/confirm") => settings::totp_confirm(ctx, req).await,
        (Method::POST, "/settings/backup-codes/regenerate") => {
            settings::regenerate_backup(ctx, req).await
        }
        (Method::POST, "/settings/email-verification") => {
            settings::email_verification(ctx, req).await
        }
        (Method::POST, "/settings/phone") => settings::phone(ctx, req).await,
        (Method::POST, "/settings/phone/confirm") => settings::phone_confirm(ctx, req).await,
        (Method::POST, "/settings/preferred-method") => settings::preferred_method(ctx, req).await,
        (Method::POST, "/settings/2fa/disable") => settings::disable(ctx, req).await,
        (Method::POST, "/settings/password") => settings::change_password(ctx, req).await,
        (Method::POST, "/settings/sessions/revoke-others") => {
            sessions::revoke_others(ctx, req).await
        }
        (Method::GET | Method::HEAD, s) if s.starts_with("/static/") => {
            assets::serve(&s[8..], &ctx.app.config.portal)
        }
        (Method::GET | Method::HEAD, "/authz/auth-request") => {
            authz::handle(ctx, req.headers(), authz::Front::AuthRequest).await
        }
        (Method::GET | Method::HEAD, "/authz/forward-auth") => {
            authz::handle(ctx, req.headers(), authz::Front::ForwardAuth).await
        }
        (_, "/login" | "/logout" | "/verify") => Err(Error::MethodNotAllowed {
            allow: "GET, HEAD, POST",
        }),
        (
            _,
            "/healthz"
            | "/api/session"
            | "/settings"
            | "/authz/auth-request"
            | "/authz/forward-auth",
        ) => Err(Error::MethodNotAllowed { allow: "GET, HEAD" }),
        (_, s) if is_post_only(s) => Err(Error::MethodNotAllowed { allow: "POST" }),
        _ => Err(Error::NotFound),
    }
}

/// The portal's paths that answer only `POST` (forms and their JSON twins).
fn is_post_only(sub: &str) -> bool {
    matches!(
        sub,
        "/verify/send"
            | "/settings/totp/begin"
            | "/settings/totp/confirm"
            | "/settings/backup-codes/regenerate"
            | "/settings/email-verification"
            | "/settings/phone"
            | "/settings/phone/confirm"
            | "/settings/preferred-method"
            | "/settings/2fa/disable"
            | "/settings/password"
            | "/settings/sessions/revoke-others"
    )
}

fn healthz() -> Response<Body> {
    let mut resp = Response::new(body::full(r#"{"status":"ok"}"#));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `{prefix}/login?rd=<target>`: where a challenged browser is sent.
pub fn login_url(prefix: &str, rd: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    format!("{prefix}/login?rd={encoded}")
}

/// `{prefix}/verify?rd=<target>`: where a session owing a second factor is sent.
pub fn verify_url(prefix: &str, rd: &str) -> String {
    verify::url(prefix, rd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ownership_respects_segment_boundaries() {
        assert!(owns("/.stepgate", "/.stepgate"));
        assert!(owns("/.stepgate", "/.stepgate/login"));
        assert!(!owns("/.stepgate", "/.stepgateway"));
        assert!(!owns("/.stepgate", "/app/.stepgate/login"));
    }

    #[test]
    fn login_url_encodes_the_return_target() {
        assert_eq!(
            login_url("/.stepgate", "/a b?x=1&y=2"),
            "/.stepgate/login?rd=%2Fa+b%3Fx%3D1%26y%3D2"
        );
    }
}
