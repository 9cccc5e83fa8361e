//! Forwarding a request to its upstream and streaming the answer back.

pub mod headers;
pub mod pool;
pub mod upgrade;
pub mod upstream;

use http::header::{HOST, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};

use crate::error::Error;
use crate::http::body::{self, Body};
use headers::Forwarding;
use upstream::Upstream;

/// Everything the dispatcher decided about a request that is to be forwarded.
pub struct ForwardRequest<'a> {
    /// The canonical path plus the original query, exactly what the upstream receives.
    pub path_and_query: String,
    pub forwarding: Forwarding<'a>,
    /// Folded names of headers a client may never send upstream (see `strip_protected`).
    pub protected: &'a [String],
    /// Cookies of the gateway's own (the session id), removed before forwarding.
    pub hidden_cookies: [&'a str; 2],
    /// Identity headers to add (after every client-sent spelling was removed).
    pub identity: Vec<(HeaderName, HeaderValue)>,
}

/// Sends `req` to `upstream` and returns its response, bodies streaming both ways.
pub async fn forward(
    upstream: &Upstream,
    mut req: Request<Body>,
    fwd: ForwardRequest<'_>,
) -> Result<Response<Body>, Error> {
    let upgrade_protocol = if req.version() == Version::HTTP_11 {
        headers::requested_upgrade(req.headers())
    } else {
        None
    };
    let client_upgrade = upgrade_protocol
        .as_ref()
        .map(|_| hyper::upgrade::on(&mut req));

    let (mut parts, request_body) = req.into_parts();
    let headers = &mut parts.headers;
    // Room for what is added below (X-Forwarded-*, identity, Host) at once, not grown twice.
    headers.reserve(fwd.identity.len() + 4);
    // Order matters: a header named in `Connection` is removed before ours are added, so a
    // client can never use `Connection` to remove the gateway's own identity headers.
    headers::strip_hop_by_hop(headers);
    headers::strip_protected(headers, fwd.protected);
    headers::strip_cookies(headers, &fwd.hidden_cookies);
    headers::set_forwarded(headers, &fwd.forwarding);
    for (name, value) in fwd.identity {
        headers.insert(name, value);
    }
    if let Some(protocol) = &upgrade_protocol {
        headers::restore_upgrade(headers, protocol.clone());
    }
    let config = &upstream.config;
    let upstream_authority = upstream
        .authority()
        .ok_or_else(|| Error::Internal("upstream url without authority".into()))?;
    let host_value = match (config.preserve_host, fwd.forwarding.host) {
        (true, Some(h)) => HeaderValue::from_str(h).ok(),
        _ => None,
    }
    .unwrap_or_else(|| upstream_authority.clone());
    headers.insert(HOST, host_value);
    // Origin form: the pool knows where the connection goes.
    parts.uri = Uri::try_from(fwd.path_and_query)
        .map_err(|_| Error::BadRequest("request target cannot be forwarded"))?;
    parts.version = Version::HTTP_11;
    let outgoing = Request::from_parts(parts, request_body);

    let mut resp = match tokio::time::timeout(config.timeout, upstream.pool().send(outgoing)).await
    {
        Err(_elapsed) => return Err(Error::UpstreamTimeout),
        Ok(Err(e)) => return Err(Error::UpstreamUnavailable(e.to_string())),
        Ok(Ok(resp)) => resp,
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(protocol), Some(client_upgrade)) = (upgrade_protocol, client_upgrade) else {
            return Err(Error::UpstreamBadUpgrade);
        };
        let answered = resp.headers().get(http::header::UPGRADE).cloned();
        let same = answered
            .as_ref()
            .and_then(|a| a.to_str().ok())
            .zip(protocol.to_str().ok())
            .is_some_and(|(a, p)| a.eq_ignore_ascii_case(p));
        if !same {
            return Err(Error::UpstreamBadUpgrade);
        }
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        upgrade::splice(client_upgrade, upstream_upgrade);
        let (mut parts, _) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::restore_upgrade(&mut parts.headers, protocol);
        return Ok(Response::from_parts(parts, body::empty()));
    }

    let (mut parts, incoming) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body::stream(incoming)))
}
