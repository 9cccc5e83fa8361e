//! Reading a portal request body: urlencoded forms and JSON, bounded in size.

use http::header::CONTENT_TYPE;
use http::{HeaderMap, Request};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use super::Ctx;
use crate::error::Error;

/// Largest portal form or JSON body accepted.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Form,
    Json,
}

fn kind(headers: &HeaderMap) -> Result<Kind, Error> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .ok_or(Error::BadRequest("missing or invalid Content-Type"))?;
    match (ct.type_(), ct.subtype()) {
        (mime::APPLICATION, mime::WWW_FORM_URLENCODED) => Ok(Kind::Form),
        (mime::APPLICATION, mime::JSON) => Ok(Kind::Json),
        _ => Err(Error::BadRequest(
            "expected application/x-www-form-urlencoded or application/json",
        )),
    }
}

/// Reads and decodes the body as `T`, from a form or from JSON with the same field names. The
/// body must arrive within `limits.header_read_timeout`, as the request's head must: a client
/// that announces a body and never sends it does not hold its connection for ever.
pub async fn read<T: DeserializeOwned>(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<T, Error> {
    let kind = kind(req.headers())?;
    let within = ctx.app.config.limits.header_read_timeout;
    let bytes = crate::http::body::read_limited(
        req.into_body(),
        MAX_FORM_BYTES,
        within,
        &ctx.app.form_memory,
        ctx.client_ip,
    )
    .await?;
    match kind {
        Kind::Form => serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| Error::BadRequest("the form could not be decoded")),
        Kind::Json => {
            serde_json::from_slice(&bytes).map_err(|_| Error::BadRequest("invalid JSON body"))
        }
    }
}

/// Accepts `true`/`false` (JSON) and the strings a checkbox or a client may send.
pub fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    Ok(match Option::<Flag>::deserialize(d)? {
        None => false,
        Some(Flag::Bool(b)) => b,
        Some(Flag::Text(s)) => matches!(s.as_str(), "true" | "on" | "1" | "yes"),
    })
}

use serde::Deserialize;
