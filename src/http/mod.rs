//! Request dispatch: every request goes through [`handle`], which sends it to the portal (the
//! gateway's own pages under `portal.prefix`) or forwards it upstream.

pub mod basic_auth;
pub mod body;
pub mod client_ip;
pub mod cookies;
pub mod held_forms;
pub mod identify;
mod identity_headers;
pub mod negotiate;
pub mod network_shares;
mod step_up;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use http::header::{ACCEPT, ACCEPT_LANGUAGE, COOKIE, HOST, HeaderName, LOCATION};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::App;
use crate::decision::{Decision, Identity, decide};
use crate::error::{Error, error_response};
use crate::policy::RequestFacts;
use crate::proxy::headers::{Forwarding, request_host};
use crate::proxy::{self, ForwardRequest};
use body::Body;
pub(crate) use identity_headers::identity_headers;

/// What the listener knows about the connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

impl ConnInfo {
    pub fn proto(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// Entry point for every request. Never fails: errors become responses here, and only here.
///
/// The access decision and the rewriting of a forwarded request are made before this returns
/// (see [`route`]); the future holds only what remains to be awaited. It is a plain function,
/// not an `async fn`, for the same reason: hyper moves each request's future into place, copying
/// all of it, and an `async fn` keeps its arguments (the whole incoming request) for its whole
/// life.
pub fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> impl Future<Output = Response<Body>> + Send + 'static {
    let errors = ErrorContext::of(&req);
    let route = route(&app, req, conn);
    let hsts = conn.tls && app.config.server.redirect_http_to_https;
    async move {
        let outcome = match route {
            Ok(Route::Answer(resp)) => Ok(resp),
            Ok(Route::Later(pending)) => pending.await,
            Ok(Route::Upstream { index, outgoing }) => match upstream_at(&app, index) {
                Ok(upstream) => proxy::exchange(upstream, outgoing).await,
                Err(err) => Err(err),
            },
            Err(err) => Err(err),
        };
        let mut resp = outcome.unwrap_or_else(|err| errors.response(&app, &err));
        if hsts {
            strict_transport_security(&mut resp);
        }
        resp
    }
}

/// An operator who redirects plain HTTP to HTTPS has declared the site HTTPS-only: browsers are
/// told to keep to HTTPS for a year (`Strict-Transport-Security`), so that the redirect of a
/// first plain request cannot be intercepted next time. An application's own value is kept.
fn strict_transport_security(resp: &mut Response<Body>) {
    resp.headers_mut()
        .entry(http::header::STRICT_TRANSPORT_SECURITY)
        .or_insert(HeaderValue::from_static("max-age=31536000"));
}

/// What an error page needs to know about its request: whether it was a GET (or HEAD), its
/// target, and the headers that choose the page's format and language.
///
/// Only an error page needs the request's preferred format and language: keep what picks them
/// and negotiate once an error happens, not for every request. Kept as copies: a clone of the
/// request's bytes shares hyper's read buffer, and with 10,000 connections that held about
/// 7 MiB more (measured with `scripts/bench`'s idle client).
struct ErrorContext {
    is_get: bool,
    target: Option<String>,
    negotiation: Vec<(HeaderName, HeaderValue)>,
}

impl ErrorContext {
    fn of<B>(req: &Request<B>) -> ErrorContext {
        ErrorContext {
            is_get: matches!(*req.method(), http::Method::GET | http::Method::HEAD),
            target: req.uri().path_and_query().map(|t| t.as_str().to_owned()),
            negotiation: negotiation_headers(req.headers()),
        }
    }

    /// The response for `err`, in the request's format and language.
    fn response(self, app: &App, err: &Error) -> Response<Body> {
        let negotiation: HeaderMap = self.negotiation.into_iter().collect();
        let (path, query) = match self.target.as_deref() {
            Some(t) => t.split_once('?').map_or((t, None), |(p, q)| (p, Some(q))),
            None => ("/", None),
        };
        let format = negotiate::preferred(&negotiation);
        // Error pages speak the request's language; those of the portal offer the other one.
        let lang = crate::portal::i18n::negotiate(&negotiation, query);
        let portal_get = self.is_get && crate::portal::owns(&app.config.portal.prefix, path);
        let switch_query = portal_get.then(|| query.unwrap_or(""));
        let return_to = portal_get.then(|| self.target.clone()).flatten();
        let frame = crate::portal::render::Frame::new(&app.config.portal, lang, switch_query)
            .returning_to(return_to);
        error_response(err, format, &frame)
    }
}

/// The request headers that decide an error page's format and language (`Accept`, the
/// language cookie, `Accept-Language`), kept as a list: most requests never need them as a map.
fn negotiation_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut kept = Vec::new();
    // One pass over the request's headers: standard names compare without hashing.
    for (name, value) in headers {
        let wanted = if name == COOKIE {
            // A cookie header matters only when it carries the language cookie.
            value
                .to_str()
                .is_ok_and(|v| v.contains(crate::portal::i18n::LANG_COOKIE))
        } else {
            name == ACCEPT || name == ACCEPT_LANGUAGE
        };
        // A copy, not a clone (see `handle`).
        if wanted && let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            kept.push((name.clone(), value));
        }
    }
    kept
}

/// Where a request goes, decided without waiting for anything.
enum Route {
    /// Answered at once: a redirect, a challenge.
    Answer(Response<Body>),
    /// A path that waits for something other than the upstream (the portal's pages, a step-up
    /// challenge, a held form's replay). Boxed: they are rare, and their futures are large.
    Later(Pin<Box<dyn Future<Output = Result<Response<Body>, Error>> + Send>>),
    /// Forwarded to the upstream at `index` (see [`crate::proxy::upstream::Upstreams::get`]).
    Upstream {
        index: usize,
        outgoing: proxy::Outgoing,
    },
}

/// The access decision for a request, and the request rewritten for its upstream if it is to be
/// forwarded.
fn route(app: &Arc<App>, req: Request<Incoming>, conn: ConnInfo) -> Result<Route, Error> {
    check_header_size(&req, app.config.limits.max_header_bytes)?;
    if !crate::policy::rules::method_is_unambiguous(req.method()) {
        return Err(Error::BadRequest("method names must be in upper case"));
    }
    let host = host_of(&req)?;
    let config = &app.config;
    // Every decision below, and the upstream, see one canonical path; ambiguous paths stop here.
    let path = crate::policy::canonicalize(req.uri().path())
        .map_err(|e| Error::AmbiguousPath(e.to_string()))?;
    let portal = crate::portal::owns(&config.portal.prefix, &path);

    if !conn.tls && config.server.redirect_http_to_https {
        let healthz = portal && crate::portal::is_healthz(&config.portal.prefix, &path);
        if !healthz {
            return redirect_to_https(app, &req, host.as_deref(), portal).map(Route::Answer);
        }
    }
    // Behind a trusted proxy that terminated TLS, the client's connection was HTTPS.
    let conn = ConnInfo {
        tls: conn.tls
            || client_ip::forwarded_https(
                conn.peer.ip(),
                req.headers(),
                &config.server.trusted_proxies,
            ),
        ..conn
    };
    let client_ip = client_ip::client_ip(
        conn.peer.ip(),
        req.headers(),
        &config.server.trusted_proxies,
    );
    if portal {
        let app = app.clone();
        return Ok(Route::Later(Box::pin(async move {
            crate::portal::handle(&app, req, &path, conn, client_ip).await
        })));
    }

    let Some(index) = app.upstreams.select_index(host.as_deref()) else {
        // No application on this host (the portal's own site behind a forward-auth proxy,
        // say): its root leads to the portal, where a login without a return address and the
        // pages' links back to the start end up, instead of an error.
        if path == "/" && matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
            let settings = format!("{}/settings", config.portal.prefix);
            return crate::portal::render::redirect(StatusCode::SEE_OTHER, &settings)
                .map(Route::Answer);
        }
        return Err(Error::UnknownHost);
    };
    let identity = identify::identify(app, req.headers(), conn.tls)?;
    let method_overrides = config
        .access
        .policy
        .method_overrides_to_judge(req.headers());
    let facts = RequestFacts {
        host: host.as_deref().unwrap_or(""),
        path: &path,
        method: req.method(),
        method_overrides: &method_overrides,
        client_ip,
    };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let now = app.clock.now();
    let identity = match decide(&config.access.policy, &facts, identity, &config.mfa, now) {
        Decision::Bypass => None,
        Decision::Forward(identity) => Some(identity),
        Decision::Login => {
            let resp = challenge(app, req.headers(), &path_and_query);
            return Ok(Route::Answer(resp));
        }
        Decision::SecondFactor(_) => {
            let resp = second_factor_challenge(app, req.headers(), &path_and_query);
            return Ok(Route::Answer(resp));
        }
        Decision::StepUp { identity, step_up } => {
            let app = app.clone();
            let proto = conn.proto();
            return Ok(Route::Later(Box::pin(async move {
                step_up::challenge(
                    &app,
                    req,
                    &identity,
                    step_up,
                    &path_and_query,
                    proto,
                    client_ip,
                )
                .await
            })));
        }
        Decision::Deny => return Err(Error::Forbidden),
    };
    let identity = match identity {
        // Few requests can carry a held form (step-up's Continue post), and reading one takes
        // the request body: such a request is forwarded once it has been read.
        Some(id) if step_up::may_replay_held_form(&req) => {
            let app = app.clone();
            return Ok(Route::Later(Box::pin(async move {
                let host = host.as_deref();
                let req =
                    step_up::replay_held_form(&app, req, &id, host, &path_and_query, client_ip)
                        .await?;
                let upstream = upstream_at(&app, index)?;
                let fwd = forward_request(&app, conn, host, path_and_query, Some(&id), client_ip);
                proxy::exchange(upstream, proxy::outgoing(upstream, req, fwd)?).await
            })));
        }
        other => other,
    };
    let upstream = upstream_at(app, index)?;
    let fwd = forward_request(
        app,
        conn,
        host.as_deref(),
        path_and_query,
        identity.as_ref(),
        client_ip,
    );
    let outgoing = proxy::outgoing(upstream, req.map(body::stream), fwd)?;
    Ok(Route::Upstream { index, outgoing })
}

/// The request's host: its target's authority (HTTP/2, absolute form) or its one `Host` header.
///
/// Refused with 400: a host that is not a plain name or address with a numeric port
/// (`user@admin.test`, `admin.test:x`), a `Host` header that is not text, and a second `Host`
/// header. The rules, the routing, a proxy in front and the upstream could each read such a
/// request as being for another host.
fn host_of<B>(req: &Request<B>) -> Result<Option<String>, Error> {
    let mut headers = req.headers().get_all(HOST).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err(Error::BadRequest("more than one Host header"));
    }
    let header = header
        .map(|h| h.to_str())
        .transpose()
        .map_err(|_| Error::BadRequest("malformed host"))?;
    let host = req.uri().authority().map(|a| a.as_str()).or(header);
    if host.is_some_and(|h| !crate::policy::host::is_plain_authority(h)) {
        return Err(Error::BadRequest("malformed host"));
    }
    Ok(host.map(str::to_owned))
}

/// The upstream `index` names (from [`crate::proxy::upstream::Upstreams::select_index`]).
fn upstream_at(app: &App, index: usize) -> Result<&crate::proxy::upstream::Upstream, Error> {
    app.upstreams
        .get(index)
        .ok_or_else(|| Error::Internal("upstream index out of range".into()))
}

/// Everything the forwarding needs besides the request: its target, the forwarding headers'
/// facts, and the identity headers to add.
fn forward_request<'a>(
    app: &'a App,
    conn: ConnInfo,
    host: Option<&'a str>,
    path_and_query: String,
    identity: Option<&'a Identity>,
    client: IpAddr,
) -> ForwardRequest<'a> {
    let trusted = &app.config.server.trusted_proxies;
    ForwardRequest {
        path_and_query,
        forwarding: Forwarding {
            peer: client_ip::canonical(conn.peer.ip()),
            peer_trusted: client_ip::is_trusted(conn.peer.ip(), trusted),
            proto: conn.proto(),
            host,
        },
        protected: &app.protected_headers,
        hidden_cookies: app.session_cookies.both(),
        identity: identity
            .map(|id| identity_headers(&app.config.identity_headers, id))
            .unwrap_or_default(),
        session: identity.map(|id| crate::proxy::TunnelOwner {
            sessions: &app.sessions,
            session: &id.session,
            users: &app.users,
            user: &id.user,
        }),
        client,
    }
}

/// Not logged in: browsers are sent to the login page, API clients get 401 with its URL.
fn challenge(app: &App, headers: &HeaderMap, rd: &str) -> Response<Body> {
    let login = crate::portal::login_url(&app.config.portal.prefix, rd);
    if negotiate::is_browser(headers)
        && let Ok(resp) = crate::portal::render::redirect(StatusCode::FOUND, &login)
    {
        return resp;
    }
    crate::portal::render::json(
        StatusCode::UNAUTHORIZED,
        serde_json::json!({ "error": "authentication_required", "login_url": login }),
    )
}

/// A second factor is owed (after the password, or for a `two_factor` rule): browsers go to the
/// verification page, API clients get 401 with its URL.
fn second_factor_challenge(app: &App, headers: &HeaderMap, rd: &str) -> Response<Body> {
    let verify = crate::portal::verify_url(&app.config.portal.prefix, rd);
    if negotiate::is_browser(headers)
        && let Ok(resp) = crate::portal::render::redirect(StatusCode::FOUND, &verify)
    {
        return resp;
    }
    crate::portal::render::json(
        StatusCode::UNAUTHORIZED,
        serde_json::json!({ "error": "second_factor_required", "verify_url": verify }),
    )
}

/// The host a request names (HTTP/2 authority or Host), owned; empty when absent.
fn headers_host<B>(req: &Request<B>) -> String {
    request_host(req).unwrap_or("").to_string()
}

/// Request line plus header fields larger than `limit` bytes: 431.
fn check_header_size<B>(req: &Request<B>, limit: usize) -> Result<(), Error> {
    let size = uri_len(req.uri()) + header_bytes(req.headers());
    if size > limit {
        Err(Error::HeadersTooLarge)
    } else {
        Ok(())
    }
}

/// The length of the request target as written (`uri.to_string().len()`), without writing it.
fn uri_len(uri: &http::Uri) -> usize {
    let origin = match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => scheme.len() + "://".len() + authority.as_str().len(),
        (None, Some(authority)) => authority.as_str().len(),
        _ => 0,
    };
    let target = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    origin + target
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

/// The same request over HTTPS (308: the method and body are kept).
///
/// The redirect names only a host the gateway serves over HTTPS: for its own pages (`portal`),
/// any host, as over HTTPS; otherwise one an upstream is chosen for (or any host when there is a
/// default upstream), an unserved host getting the same error as over HTTPS. `host` is the
/// request's host as [`host_of`] read it: a plain name or address and port, nothing else.
fn redirect_to_https<B>(
    app: &App,
    req: &Request<B>,
    host: Option<&str>,
    portal: bool,
) -> Result<Response<Body>, Error> {
    let host = host.ok_or(Error::BadRequest("missing Host header"))?;
    let name = crate::policy::host::strip_port(host);
    if !portal && app.upstreams.select_index(Some(host)).is_none() {
        return Err(Error::UnknownHost);
    }
    let port = app
        .https_addr
        .get()
        .copied()
        .or(app.config.server.tls_listen)
        .map(|a| a.port())
        .unwrap_or(443);
    let authority = if port == 443 {
        name.to_string()
    } else {
        format!("{name}:{port}")
    };
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = format!("https://{authority}{pq}");
    let value =
        HeaderValue::from_str(&location).map_err(|_| Error::BadRequest("invalid Host header"))?;
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    resp.headers_mut().insert(LOCATION, value);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_target_is_measured_as_written() {
        for target in [
            "/",
            "/a/b?c=d&e",
            "*",
            "http://example.com/x?y",
            "https://user@example.com:8443/",
            "example.com:443",
        ] {
            let uri: http::Uri = target.parse().unwrap();
            assert_eq!(uri_len(&uri), uri.to_string().len(), "{target}");
        }
    }
}
