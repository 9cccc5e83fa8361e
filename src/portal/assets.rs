//! Static assets embedded in the binary (never from a CDN).

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};

use crate::error::Error;
use crate::http::body::{self, Body};

const STYLESHEET: &str = include_str!("../../static/stepgate.css");

pub fn serve(name: &str) -> Result<Response<Body>, Error> {
    let (content_type, content) = match name {
        "stepgate.css" => ("text/css; charset=utf-8", STYLESHEET),
        _ => return Err(Error::NotFound),
    };
    let mut resp = Response::new(body::full(content));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    super::render::security_headers(h);
    Ok(resp)
}
