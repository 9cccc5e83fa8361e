//! Forwarding a request to its upstream and streaming the answer back.

pub mod headers;
pub mod pool;
pub mod upgrade;
pub mod upstream;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HOST, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::upgrade::OnUpgrade;

use crate::auth::directory::UserDirectory;
use crate::auth::session::{Session, SessionManager};
use crate::auth::session_ends::SessionEndWatch;
use crate::auth::user::User;
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
    /// The session the request was let through on, if any: a switch of protocols (WebSocket)
    /// lives no longer than that session.
    pub session: Option<TunnelOwner<'a>>,
    /// The client (after trusted proxies), whose network's share of the upstream's
    /// connections the request takes.
    pub client: IpAddr,
}

/// Who a tunnel (WebSocket) is opened for, and what it was judged with.
#[derive(Clone, Copy)]
pub struct TunnelOwner<'a> {
    pub sessions: &'a SessionManager,
    pub session: &'a Session,
    pub users: &'a UserDirectory,
    /// The account as the request was judged (the version in the user view then).
    pub user: &'a Arc<User>,
}

impl TunnelOwner<'_> {
    /// A watch that ends the tunnel with its session, or when the account changes. An edit
    /// that landed since the request was judged (groups, identity headers) ends it at once:
    /// the edit closes the tunnels open when it is made, and this one was not open yet.
    pub(crate) fn watch(&self) -> SessionEndWatch {
        let watch = self.sessions.watch_end(self.session);
        let unchanged = matches!(
            self.users.get(&self.user.username),
            Ok(Some(now)) if Arc::ptr_eq(&now, self.user)
        );
        if !unchanged {
            watch.end();
        }
        watch
    }
}

/// Sends the outgoing request to `upstream` and returns its response, bodies streaming both ways.
///
/// A plain function returning a future, not an `async fn`: the request goes into the upstream
/// exchange before anything is awaited, so the future holds it once (an `async fn` keeps a copy
/// of each argument for its whole life). hyper moves each request's future into place, copying
/// all of it, and this future is part of that.
pub fn exchange(
    upstream: &Upstream,
    outgoing: Outgoing,
) -> Exchange<'_, impl Future<Output = Sent>> {
    let Outgoing {
        request,
        upgrade,
        client,
    } = outgoing;
    let sent = upstream.pool().send(request, client);
    Exchange {
        sent: tokio::time::timeout(upstream.config.timeout, sent),
        upgrade: Some(upgrade),
        upstream,
    }
}

/// What waiting for the upstream's answer ends with.
type Sent =
    Result<Result<Response<pool::PooledBody>, pool::PoolError>, tokio::time::error::Elapsed>;

pin_project_lite::pin_project! {
    /// The wait for the upstream's answer (see [`exchange`]). A future of its own rather than an
    /// async block or `map`: both would copy the wait's state once more (an async block holds a
    /// captured future twice, `map` moves itself out when it completes).
    pub struct Exchange<'a, F> {
        #[pin]
        sent: F,
        // The client's side of a requested upgrade; taken when the answer arrives.
        upgrade: Option<Option<Upgrade>>,
        upstream: &'a Upstream,
    }
}

impl<F: Future<Output = Sent>> Future for Exchange<'_, F> {
    type Output = Result<Response<Body>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let sent = std::task::ready!(this.sent.poll(cx));
        let Some(upgrade) = this.upgrade.take() else {
            return Poll::Ready(Err(Error::Internal(
                "upstream exchange polled again".into(),
            )));
        };
        Poll::Ready(match sent {
            Err(_elapsed) => Err(Error::UpstreamTimeout),
            Ok(Err(pool::PoolError::Busy | pool::PoolError::ClientBusy)) => {
                Err(Error::UpstreamBusy)
            }
            Ok(Err(e)) => Err(Error::UpstreamUnavailable(e.to_string())),
            Ok(Ok(resp)) => answer(resp, upgrade, this.upstream.gateway_cookies()),
        })
    }
}

/// The upstream's response as the client receives it: hop-by-hop headers and any `Set-Cookie`
/// for the gateway's own cookies removed, `Clear-Site-Data` made unable to clear cookies, and a
/// switch of protocols (WebSocket) carrying the [`upgrade::Tunnel`] that the client's
/// connection splices, if the client asked for it. Every upstream answer passes here, whichever
/// way its request went (a held form's replay too).
fn answer(
    mut resp: Response<pool::PooledBody>,
    upgrade: Option<Upgrade>,
    gateway_cookies: [&str; 2],
) -> Result<Response<Body>, Error> {
    headers::strip_set_cookies(resp.headers_mut(), &gateway_cookies);
    headers::strip_cookie_clearing(resp.headers_mut());
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(Upgrade {
            protocol,
            client: client_upgrade,
            session_end,
        }) = upgrade
        else {
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
        let (mut parts, _) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::restore_upgrade(&mut parts.headers, protocol);
        // The client's connection runs the splice once it has written this answer.
        parts.extensions.insert(upgrade::Tunnel::new(
            client_upgrade,
            upstream_upgrade,
            session_end,
        ));
        return Ok(Response::from_parts(parts, body::empty()));
    }

    let (mut parts, incoming) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body::stream(incoming)))
}

/// The request as the upstream receives it, and the client's side of a requested upgrade.
pub struct Outgoing {
    request: Request<Body>,
    upgrade: Option<Upgrade>,
    client: IpAddr,
}

/// A switch of protocols the client asked for.
struct Upgrade {
    /// The protocol asked for (`Upgrade`).
    protocol: HeaderValue,
    /// The client connection's side of the switch.
    client: OnUpgrade,
    /// The end of the session the request was let through on, which ends the tunnel too.
    session_end: Option<SessionEndWatch>,
}

/// Rewrites the client's request for the upstream: hop-by-hop, protected and gateway headers
/// removed, forwarding and identity headers set, `Host` and the origin-form target chosen.
pub fn outgoing(
    upstream: &Upstream,
    mut req: Request<Body>,
    fwd: ForwardRequest<'_>,
) -> Result<Outgoing, Error> {
    let upgrade = if req.version() == Version::HTTP_11 {
        headers::requested_upgrade(req.headers()).map(|protocol| Upgrade {
            protocol,
            client: hyper::upgrade::on(&mut req),
            session_end: fwd.session.map(|owner| owner.watch()),
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
    if let Some(upgrade) = &upgrade {
        headers::restore_upgrade(headers, upgrade.protocol.clone());
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
        client: fwd.client,
    })
}
