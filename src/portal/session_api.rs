//! `GET {prefix}/api/session`: the current session as JSON.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Ctx, render};
use crate::auth::session::AuthLevel;
use crate::error::Error;
use crate::http::body::Body;
use crate::http::identify::identify;

pub async fn get(ctx: &Ctx<'_>, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
    let Some(identity) = identify(ctx.app, req.headers(), ctx.conn.tls)? else {
        return Ok(render::json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "authenticated": false, "error": "authentication_required" }),
        ));
    };
    if identity.session.auth_level == AuthLevel::AwaitSecondFactor {
        return Ok(render::json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({
                "authenticated": false,
                "error": "second_factor_required",
                "verify_url": format!("{}/verify", ctx.prefix()),
            }),
        ));
    }
    let settings = &ctx.app.config.session.settings;
    let session = &identity.session;
    let mut expires_at = session.expires_at;
    if !session.remember_me {
        expires_at = expires_at.min(session.last_seen.plus(settings.inactivity));
    }
    let now = ctx.app.clock.now();
    let step_up: Vec<serde_json::Value> = ctx
        .app
        .config
        .access
        .policy
        .step_up_windows()
        .into_iter()
        .map(|window| {
            serde_json::json!({
                "window": humantime::format_duration(window).to_string(),
                "window_seconds": window.as_secs(),
                "satisfied_until": crate::auth::step_up::satisfied_until(session, window, now)
                    .map(|t| t.to_rfc3339()),
            })
        })
        .collect();
    let user = &identity.user;
    let summary = super::verify::summary(ctx.arc, user).await?;
    let mut two_factor = super::settings::two_factor_json(&summary);
    two_factor["methods"] = serde_json::json!(
        summary
            .methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
    );
    Ok(render::json(
        StatusCode::OK,
        serde_json::json!({
            "authenticated": true,
            "user": {
                "username": user.username.as_str(),
                "display_name": user.display_name,
                "email": user.email,
                "groups": user.groups,
            },
            "auth_level": session.auth_level.as_str(),
            "expires_at": expires_at.to_rfc3339(),
            "second_factor_at": session.second_factor_at.map(|t| t.to_rfc3339()),
            "two_factor": two_factor,
            "step_up": step_up,
        }),
    ))
}
