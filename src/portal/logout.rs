//! Ending a session: a confirmation page (GET) and the action (POST).

use askama::Template;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::render::Frame;
use super::{Ctx, render};
use crate::auth::audit::{self, AuditEvent, AuditKind};
use crate::auth::session::{SessionId, SessionKey};
use crate::error::Error;
use crate::http::body::Body;
use crate::http::cookies;
use crate::http::identify::identify;
use crate::http::negotiate::Format;

#[derive(Template)]
#[template(path = "logout.html")]
struct LogoutPage<'a> {
    f: &'a Frame,
    signed_in: bool,
    username: &'a str,
}

pub fn page(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
    let identity = identify(ctx.app, req.headers(), ctx.conn.tls)?;
    match ctx.format {
        Format::Json => Ok(render::json(
            StatusCode::OK,
            serde_json::json!({ "authenticated": identity.is_some() }),
        )),
        Format::Html => render::page(
            StatusCode::OK,
            &LogoutPage {
                f: &ctx.frame,
                signed_in: identity.is_some(),
                username: identity
                    .as_ref()
                    .map(|i| i.user.username.as_str())
                    .unwrap_or(""),
            },
        ),
    }
}

/// Ends every session whose id came with the request, not only the one it is identified by:
/// a session of another account planted beside the user's (which makes the request nobody's),
/// or a second one of the same account under another cookie domain, would otherwise outlive a
/// logout that said it succeeded.
pub async fn submit(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
    let app = ctx.app;
    let identity = identify(app, req.headers(), ctx.conn.tls)?;
    let keys: Vec<SessionKey> = cookies::read(req.headers(), app.session_cookies.get(ctx.conn.tls))
        .into_iter()
        .filter_map(SessionId::parse)
        .map(|id| id.key())
        .collect();
    for key in &keys {
        app.held_forms.forget(key);
    }
    if !keys.is_empty() {
        let sessions = app.sessions.clone();
        tokio::task::spawn_blocking(move || {
            keys.iter().try_for_each(|k| sessions.revoke(k).map(drop))
        })
        .await
        .map_err(|e| Error::Internal(format!("session task: {e}")))?
        .map_err(|e| Error::Internal(format!("session revoke: {e}")))?;
    }
    if let Some(identity) = identity {
        let event = AuditEvent::new(app.clock.now(), AuditKind::Logout)
            .with_username(identity.user.username.as_str())
            .with_client_ip(ctx.client_ip);
        audit::record(&app.store, event);
    }
    let mut resp = match ctx.format {
        Format::Json => render::json(
            StatusCode::OK,
            serde_json::json!({ "status": "logged_out" }),
        ),
        Format::Html => {
            render::redirect(StatusCode::SEE_OTHER, &format!("{}/logout", ctx.prefix()))?
        }
    };
    render::set_cookie(
        &mut resp,
        &cookies::clear(&app.config.session, ctx.conn.tls, ctx.host.as_deref()),
    )?;
    Ok(resp)
}
