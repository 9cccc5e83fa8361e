//! Step-up on proxied requests: a logged-in user whose rule wants a fresher second factor is
//! sent to verify (browser GET/HEAD), has a browser form held until verified, or gets 401 with
//! the verification URL (other methods, API clients). Never forwarded until satisfied.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::{self, Body, read_limited};
use super::held_forms::{self, MAX_FORM_BYTES};
use super::negotiate;
use crate::app::App;
use crate::auth::factors::FactorSummary;
use crate::decision::Identity;
use crate::error::Error;
use crate::policy::rules::StepUp;

fn verify_url(app: &App, rd: &str, password: bool) -> String {
    let url = crate::portal::verify_url(&app.config.portal.prefix, rd);
    if password {
        format!("{url}&method=password")
    } else {
        url
    }
}

async fn summary(app: &Arc<App>, identity: &Identity) -> Result<FactorSummary, Error> {
    let app = app.clone();
    let user = identity.user.clone();
    tokio::task::spawn_blocking(move || app.factors.summary(&user))
        .await
        .map_err(|e| Error::Internal(format!("blocking task: {e}")))?
        .map_err(|e| Error::Internal(format!("second factors: {e}")))
}

fn is_urlencoded(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| m.type_() == mime::APPLICATION && m.subtype() == mime::WWW_FORM_URLENCODED)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

pub async fn challenge(
    app: &Arc<App>,
    req: Request<Incoming>,
    identity: &Identity,
    step_up: StepUp,
    rd: &str,
    proto: &str,
    client: IpAddr,
) -> Result<Response<Body>, Error> {
    let summary = summary(app, identity).await?;
    let headers = req.headers();
    let browser = negotiate::is_browser(headers);
    let no_factor = summary.methods.is_empty();
    if no_factor && app.config.mfa.is_required_for(&identity.user) {
        // Enrolment first; the settings page sends the user back to `rd` afterwards.
        let encoded: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        let url = format!("{}/settings?rd={encoded}", app.config.portal.prefix);
        return if browser && matches!(*req.method(), Method::GET | Method::HEAD) {
            crate::portal::render::redirect(StatusCode::FOUND, &url)
        } else {
            Ok(crate::portal::render::json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({ "error": "enrolment_required", "settings_url": url }),
            ))
        };
    }
    if no_factor && !step_up.password_fallback {
        return Err(Error::StepUpUnavailable);
    }
    let verify = verify_url(app, rd, no_factor);
    let method = req.method().clone();
    if browser && matches!(method, Method::GET | Method::HEAD) {
        return crate::portal::render::redirect(StatusCode::FOUND, &verify);
    }
    let small_enough = declared_length(headers).is_none_or(|n| n <= MAX_FORM_BYTES as u64);
    if browser && method == Method::POST && is_urlencoded(headers) && small_enough {
        let content_type = headers
            .get(CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static(
                "application/x-www-form-urlencoded",
            ));
        let host = super::headers_host(&req);
        // Only the application's own forms are held: a form posted from another origin (a
        // sibling subdomain shares the Lax cookie) would otherwise be re-sent as same-origin.
        let same_origin =
            crate::portal::origin::check_same_origin(req.headers(), proto, Some(&host)).is_ok();
        let within = app.config.limits.header_read_timeout;
        let memory = &app.form_memory;
        let body = read_limited(req.into_body(), MAX_FORM_BYTES, within, memory, client).await?;
        // A Continue post that arrives after its window is not a form to hold in turn.
        if !same_origin || held_forms::marker_id(&body).is_some() {
            return crate::portal::render::redirect(StatusCode::SEE_OTHER, &verify);
        }
        app.held_forms.hold(
            identity.session.key,
            &identity.user.username,
            method,
            host,
            rd.to_string(),
            content_type,
            body,
            step_up.window,
            app.clock.now(),
        );
        return crate::portal::render::redirect(StatusCode::SEE_OTHER, &verify);
    }
    Err(Error::StepUpRequired { verify_url: verify })
}

/// Largest body that can be a Continue post (`__stepgate_held=` and a 32-hex id).
const MARKER_BYTES: u64 = 64;

/// Whether `req` may be a Continue post (see [`held_forms`]): a short urlencoded POST. Any
/// other request is forwarded as it came, without reading its body.
pub fn may_replay_held_form(req: &Request<Incoming>) -> bool {
    req.method() == Method::POST
        && is_urlencoded(req.headers())
        && declared_length(req.headers()).is_some_and(|n| n <= MARKER_BYTES)
}

/// A Continue post (see [`held_forms`]) becomes the held form, byte for byte; any other
/// request passes unchanged, its body still streaming.
pub async fn replay_held_form(
    app: &Arc<App>,
    req: Request<Incoming>,
    identity: &Identity,
    host: Option<&str>,
    path_and_query: &str,
    client: IpAddr,
) -> Result<Request<Body>, Error> {
    if !may_replay_held_form(&req) {
        return Ok(req.map(body::stream));
    }
    let (mut parts, incoming) = req.into_parts();
    let within = app.config.limits.header_read_timeout;
    let memory = &app.form_memory;
    let bytes = read_limited(incoming, MARKER_BYTES as usize, within, memory, client).await?;
    let Some(id) = held_forms::marker_id(&bytes) else {
        return Ok(Request::from_parts(parts, body::full(bytes)));
    };
    let form = app
        .held_forms
        .take(
            &identity.session.key,
            id,
            &parts.method,
            host.unwrap_or(""),
            path_and_query,
            app.clock.now(),
        )
        .map_err(|refused| {
            tracing::info!(?refused, "held form replay refused");
            Error::HeldFormRefused
        })?;
    parts
        .headers
        .insert(CONTENT_TYPE, form.content_type.clone());
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(form.body.len()));
    Ok(Request::from_parts(parts, body::full(form.body)))
}
