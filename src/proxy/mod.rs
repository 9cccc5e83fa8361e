//! Forwarding a request to its upstream and streaming the answer back.

pub mod headers;
pub mod pool;
pub mod upgrade;
pub mod upstream;

use http::header::{HOST, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::upgrade::OnUpgrade;

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
///
/// The request is rewritten before anything is awaited: the future that waits for the upstream
/// holds only the outgoing request and what an upgrade needs, not the incoming request and its
/// intermediate parts (hyper moves this future with every request, so its size is copied).
pub async fn forward(
    upstream: &Upstream,
    req: Request<Body>,
    fwd: ForwardRequest<'_>,
) -> Result<Response<Body>, Error> {
    let Outgoing { request, upgrade } = outgoing(upstream, req, fwd)?;
    let sent = tokio::time::timeout(upstream.config.timeout, upstream.pool().send(request));
    let mut resp = match sent.await {
        Err(_elapsed) => return Err(Error::UpstreamTimeout),
        Ok(Err(e)) => return Err(Error::UpstreamUnavailable(e.to_string())),
        Ok(Ok(resp)) => resp,
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some((protocol, client_upgrade)) = upgrade else {
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

/// The request as the upstream receives it, and the client's side of a requested upgrade.
struct Outgoing {
    request: Request<Body>,
    /// The protocol the client asked to switch to (`Upgrade`), and its connection's upgrade.
    upgrade: Option<(HeaderValue, OnUpgrade)>,
}

/// Rewrites the client's request for the upstream: hop-by-hop, protected and gateway headers
/// removed, forwarding and identity headers set, `Host` and the origin-form target chosen.
fn outgoing(
    upstream: &Upstream,
    mut req: Request<Body>,
    fwd: ForwardRequest<'_>,
) -> Result<Outgoing, Error> {
    let upgrade = if req.version() == Version::HTTP_11 {
        headers::requested_upgrade(req.headers()).map(|protocol| {
            let client = hyper::upgrade::on(&mut req);
            (protocol, client)
        })
    } else {
        None
    };

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
    if let Some((protocol, _)) = &upgrade {
        headers::restore_upgrade(headers, protocol.clone());
    }
    let upstream_authority = upstream
        .authority()
        .ok_or_else(|| Error::Internal("upstream url without authority".into()))?;
    let host_value = match (upstream.config.preserve_host, fwd.forwarding.host) {
        (true, Some(h)) => HeaderValue::from_str(h).ok(),
        _ => None,
    }
    .unwrap_or_else(|| upstream_authority.clone());
    headers.insert(HOST, host_value);
    // Origin form: the pool knows where the connection goes.
    parts.uri = Uri::try_from(fwd.path_and_query)
        .map_err(|_| Error::BadRequest("request target cannot be forwarded"))?;
    parts.version = Version::HTTP_11;
    Ok(Outgoing {
        request: Request::from_parts(parts, request_body),
        upgrade,
    })
}
