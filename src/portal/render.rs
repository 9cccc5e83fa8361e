//! Rendering portal answers: HTML pages (askama, auto-escaped) or JSON, always with the
//! gateway's security headers.

use askama::Template;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::error::Error;
use crate::http::body::{self, Body};

/// Sent on every portal answer: no framing, no inline script, no referrer, no sniffing.
pub fn security_headers(h: &mut HeaderMap) {
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self' https:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// An HTML page. Portal pages are never cached: they show per-user state.
pub fn page(status: StatusCode, template: &impl Template) -> Result<Response<Body>, Error> {
    let html = template
        .render()
        .map_err(|e| Error::Internal(format!("template: {e}")))?;
    let mut resp = Response::new(body::full(html));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    security_headers(h);
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

pub fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(body::full(value.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    security_headers(h);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A redirect (302, 303) to a location the caller has validated.
pub fn redirect(status: StatusCode, location: &str) -> Result<Response<Body>, Error> {
    let value = HeaderValue::from_str(location)
        .map_err(|_| Error::Internal("redirect target is not a valid header".into()))?;
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    security_headers(h);
    h.insert(LOCATION, value);
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Adds a `Set-Cookie` to a response.
pub fn set_cookie(resp: &mut Response<Body>, cookie: &str) -> Result<(), Error> {
    let value = HeaderValue::from_str(cookie)
        .map_err(|_| Error::Internal("cookie is not a valid header".into()))?;
    resp.headers_mut().append(SET_COOKIE, value);
    Ok(())
}
