//! The gateway's own endpoints under `portal.prefix` (default `/.stepgate`). Nothing under the
//! prefix is ever forwarded upstream.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::app::App;
use crate::error::Error;
use crate::http::ConnInfo;
use crate::http::body::{self, Body};

/// Is `path` the prefix itself or below it?
pub fn owns(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

pub fn is_healthz(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix) == Some("/healthz")
}

pub async fn handle(
    app: &App,
    req: Request<Incoming>,
    path: &str,
    _conn: ConnInfo,
) -> Result<Response<Body>, Error> {
    let prefix = &app.config.portal.prefix;
    let sub = path.strip_prefix(prefix.as_str()).unwrap_or("");
    match (req.method(), sub) {
        (&Method::GET | &Method::HEAD, "/healthz") => Ok(healthz()),
        (_, "/healthz") => Err(Error::MethodNotAllowed),
        _ => Err(Error::NotFound),
    }
}

fn healthz() -> Response<Body> {
    let mut resp = Response::new(body::full(r#"{"status":"ok"}"#));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
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
}
