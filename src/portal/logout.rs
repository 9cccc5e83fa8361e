//! Ending a session: a confirmation page (GET) and the action (POST).

use askama::Template;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::render::Frame;
use super::{Ctx, render};
use crate::auth::audit::{self, AuditEvent, AuditKind};
use crate::auth::session::{SessionId, SessionManager};
use crate::auth::user::Username;
use crate::error::Error;
use crate::http::body::Body;
use crate::http::cookies;
use crate::http::identify::identify;
use crate::http::negotiate::Format;
use crate::store::{Store, StoreError};

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

/// At most this many session ids of one logout request are ended: a browser sends one, or two
/// with a cookie domain (or one planted); the rest of a longer list is ignored.
const MAX_LOGOUT_SESSIONS: usize = cookies::MAX_SESSION_COOKIES;

/// Ends every session whose id came with the request, not only the one it is identified by:
/// a session of another account planted beside the user's (which makes the request nobody's),
/// or a second one of the same account under another cookie domain, would otherwise outlive a
/// logout that said it succeeded. One logout is audited per account whose session ended.
pub async fn submit(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
    let app = ctx.app;
    let mut ids: Vec<SessionId> = Vec::new();
    for value in cookies::read(req.headers(), app.session_cookies.get(ctx.conn.tls)) {
        if ids.len() == MAX_LOGOUT_SESSIONS {
            break;
        }
        if let Some(id) = SessionId::parse(value)
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    for id in &ids {
        app.held_forms.forget(&id.key());
    }
    let ended = if ids.is_empty() {
        Vec::new()
    } else {
        let (sessions, store) = (app.sessions.clone(), app.store.clone());
        tokio::task::spawn_blocking(move || end_sessions(&sessions, &store, &ids))
            .await
            .map_err(|e| Error::Internal(format!("session task: {e}")))?
            .map_err(|e| Error::Internal(format!("session revoke: {e}")))?
    };
    for username in ended {
        let event = AuditEvent::new(app.clock.now(), AuditKind::Logout)
            .with_username(username.as_str())
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

/// Ends the sessions `ids`, each even if ending another failed, and flushes the store once.
/// Returns the accounts whose live sessions ended.
fn end_sessions(
    sessions: &SessionManager,
    store: &Store,
    ids: &[SessionId],
) -> Result<Vec<Username>, StoreError> {
    let mut ended: Vec<Username> = Vec::new();
    let mut failed = None;
    for id in ids {
        if let Ok(Some(session)) = sessions.lookup(&id.cookie_value())
            && !ended.contains(&session.username)
        {
            ended.push(session.username);
        }
        if let Err(e) = sessions.revoke_unflushed(&id.key()) {
            failed.get_or_insert(e);
        }
    }
    let flushed = store.flush();
    match failed {
        Some(e) => Err(e),
        None => flushed.map(|()| ended),
    }
}
