//! Forward-auth: the same access decision as the built-in proxy, for a reverse proxy (nginx,
//! Traefik, Caddy) that forwards the traffic itself and only asks Stepgate whether it may.
//!
//! | endpoint | asked by | the original request comes from |
//! |---|---|---|
//! | `{prefix}/authz/auth-request` | nginx `auth_request` | `X-Original-URL`, `X-Original-Method` |
//! | `{prefix}/authz/forward-auth` | Traefik `ForwardAuth`, Caddy `forward_auth` | `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` |
//!
//! Answers: 200 to let the request through (with the identity headers when a user is known,
//! without them on a bypass rule); 403 when it is denied; otherwise the user must sign in or
//! prove a second factor: the auth-request endpoint answers 401 with `Location` (nginx turns it
//! into a redirect with `error_page 401 =302`), the forward-auth endpoint redirects browsers
//! (302 for GET/HEAD, 303 otherwise) and answers 401 to API clients.
//!
//! Fail closed: the forwarding headers are believed only from `server.trusted_proxies`; every
//! missing, repeated or malformed header, unparsable URL, ambiguous path, host the portal cannot
//! serve and store failure ends in 400, 401 or 403 (429 for a ban on the forward-auth endpoint),
//! never in a 2xx. The warnings a client can cause are throttled ([`Throttle`]).

use http::header::{CACHE_CONTROL, HeaderName, LOCATION, WWW_AUTHENTICATE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};

use super::credentials::{self, Source};
use super::{Ctx, render};
use crate::auth::session::{AuthLevel, Session, SessionId};
use crate::decision::{Decision, Identity, decide};
use crate::error::Error;
use crate::http::basic_auth::{self, Authorization, BasicCredentials};
use crate::http::body::{self, Body};
use crate::http::{client_ip, identify, negotiate};
use crate::logging::Throttle;
use crate::policy::{Policy, RequestFacts, UserFacts};
use crate::proxy::headers;

const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// Which proxy contract a request follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// nginx `auth_request`: `X-Original-URL` + `X-Original-Method`; challenges are 401 + Location.
    AuthRequest,
    /// Traefik / Caddy: `X-Forwarded-Method/-Proto/-Host/-Uri`; browsers are redirected.
    ForwardAuth,
}

/// The request the proxy is asking about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub method: Method,
    pub https: bool,
    /// Host and optional port, lower-case.
    pub authority: String,
    /// The canonical path, which the rules see.
    pub path: String,
    /// Path and query as the client sent them, for the return URL.
    pub raw_path_and_query: String,
}

impl Original {
    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// The absolute URL the user asked for: where to return after signing in.
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme(),
            self.authority,
            self.raw_path_and_query
        )
    }
}

/// Answers one forward-auth request.
pub async fn handle(
    ctx: &Ctx<'_>,
    headers: &HeaderMap,
    front: Front,
) -> Result<Response<Body>, Error> {
    answer(ctx, headers, front)
        .await
        .map_err(|e| fail_closed(e, front))
}

/// Only 400, 401 and 403 (and 429 on the forward-auth endpoint, which the proxy relays with its
/// `Retry-After`) leave this module as errors: nginx turns anything else into a 500, and a
/// store failure must read as "no" to every proxy.
fn fail_closed(err: Error, front: Front) -> Error {
    let status = err.status();
    let kept = matches!(
        status,
        StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) || (status == StatusCode::TOO_MANY_REQUESTS && front == Front::ForwardAuth);
    if kept {
        err
    } else {
        tracing::error!(error = %err, "forward-auth request failed; answering 403");
        Error::Forbidden
    }
}

async fn answer(ctx: &Ctx<'_>, headers: &HeaderMap, front: Front) -> Result<Response<Body>, Error> {
    let config = &ctx.app.config;
    let peer = client_ip::canonical(ctx.conn.peer.ip());
    if !client_ip::is_trusted(peer, &config.server.trusted_proxies) {
        static LOGGED: Throttle = Throttle::new();
        if let Some(held_back) = LOGGED.allow() {
            tracing::warn!(
                %peer,
                held_back,
                "forward-auth request refused: {peer} is not in server.trusted_proxies, so its \
                 forwarding headers cannot be believed. If {peer} is your reverse proxy, add it: \
                 [server] trusted_proxies = [\"{peer}\"]"
            );
        }
        return Err(Error::Forbidden);
    }
    let original = match front {
        Front::AuthRequest => from_original_url(headers)?,
        Front::ForwardAuth => from_forwarded(headers)?,
    };
    // The proxy replaces the identity headers it copies from the answer, in their exact
    // spelling only: `Remote_User` or `Remote~User` from the client would reach the
    // application as well, which may read it as REMOTE_USER.
    if let Some(name) = headers::identity_look_alike(headers, &ctx.app.protected_headers) {
        static LOGGED: Throttle = Throttle::new();
        if let Some(held_back) = LOGGED.allow() {
            tracing::warn!(
                header = %name,
                held_back,
                "forward-auth request refused: the client sent a header an application could read \
                 as an identity header"
            );
        }
        return Err(Error::BadRequest(
            "a request header is spelled like an identity header",
        ));
    }
    // 403 rather than 400: nginx passes only 401 and 403 on from `auth_request`.
    if let Some(name) = disagreeing_claim(headers, front, &original) {
        static LOGGED: Throttle = Throttle::new();
        if let Some(held_back) = LOGGED.allow() {
            tracing::warn!(
                header = %name,
                held_back,
                "forward-auth request refused: the client sent a header that names another target \
                 or method than the one the proxy reports, which an application could act on"
            );
        }
        return Err(Error::Forbidden);
    }
    // 403 as above. More session cookies than any are read with make a request nobody's; on
    // a bypass rule it would pass all the same, and the proxy examples remove only that many
    // copies of the cookie before the application: a request carrying more is refused. Counted
    // as the examples remove them: either spelling, `__Host-` or not.
    if ctx.app.session_cookies.count_in(headers) > crate::http::cookies::MAX_SESSION_COOKIES {
        return Err(Error::Forbidden);
    }
    let portal = portal_base(ctx, &original)?;
    // The proxy passes the client's own headers along with the request it asks about.
    let method_overrides = config.access.policy.method_overrides_to_judge(headers);
    let facts = RequestFacts {
        host: &original.authority,
        path: &original.path,
        method: &original.method,
        method_overrides: &method_overrides,
        client_ip: ctx.client_ip,
    };
    let policy = &config.access.policy;
    // Basic credentials are only looked at where the rule deciding for anonymous requests opts
    // in; elsewhere an `Authorization` header belongs to the application.
    let basic_possible = policy.evaluate(&facts, None).allow_basic;
    let realm = basic_possible.then(|| realm(&config.portal.title));

    if let Some(realm) = &realm {
        match basic_auth::read(headers) {
            Authorization::Absent => {}
            Authorization::Malformed => return Ok(basic_challenge(realm)),
            Authorization::Basic(creds) => {
                return basic(ctx, &facts, creds, realm).await;
            }
        }
    }

    let identity = identify::identify(ctx.app, headers, original.https)?;
    let decision = decide(policy, &facts, identity, &config.mfa, ctx.app.clock.now());
    tracing::debug!(
        decision = decision.name(),
        host = %original.authority,
        path = %original.path,
        "forward-auth decision"
    );
    let rd = original.url();
    match decision {
        Decision::Bypass => Ok(allowed(Vec::new())),
        Decision::Forward(identity) => Ok(allowed(crate::http::identity_headers(
            &config.identity_headers,
            &identity,
        ))),
        Decision::Login => {
            let url = format!("{portal}{}", super::login_url(&config.portal.prefix, &rd));
            challenge(
                front,
                headers,
                &original,
                &url,
                "authentication_required",
                realm.as_deref(),
            )
        }
        Decision::SecondFactor(_) => {
            let url = format!("{portal}{}", super::verify_url(&config.portal.prefix, &rd));
            challenge(
                front,
                headers,
                &original,
                &url,
                "second_factor_required",
                None,
            )
        }
        Decision::StepUp { step_up, .. } => {
            let mut url = format!("{portal}{}", super::verify_url(&config.portal.prefix, &rd));
            if step_up.password_fallback {
                // Offered by the verification page only to accounts without a second factor.
                url.push_str("&method=password");
            }
            challenge(front, headers, &original, &url, "step_up_required", None)
        }
        Decision::Deny => Err(Error::Forbidden),
    }
}

/// `Authorization: Basic` on a rule that may accept it: check the password (regulated like the
/// login form), then decide for that user with a password-only, unstored session. Only a
/// `one_factor` rule with `allow_basic` lets it through, and only for an account without a
/// second factor: its owner set one up, so its password alone passes nothing (as at the login
/// form, where such an account is not signed in before its second factor).
async fn basic(
    ctx: &Ctx<'_>,
    facts: &RequestFacts<'_>,
    creds: BasicCredentials,
    realm: &str,
) -> Result<Response<Body>, Error> {
    let config = &ctx.app.config;
    let Some(identity) = check_basic(ctx, creds).await? else {
        return Ok(basic_challenge(realm));
    };
    if !super::verify::summary(ctx.arc, &identity.user)
        .await?
        .methods
        .is_empty()
    {
        return Ok(basic_challenge(realm));
    }
    let user = UserFacts {
        username: identity.user.username.as_str(),
        groups: &identity.user.groups,
    };
    let verdict = config.access.policy.evaluate(facts, Some(&user));
    let rule_accepts_basic = verdict.allow_basic && verdict.policy == Policy::OneFactor;
    let now = ctx.app.clock.now();
    match decide(
        &config.access.policy,
        facts,
        Some(identity),
        &config.mfa,
        now,
    ) {
        Decision::Bypass => Ok(allowed(Vec::new())),
        Decision::Forward(identity) if rule_accepts_basic => Ok(allowed(
            crate::http::identity_headers(&config.identity_headers, &identity),
        )),
        // A password alone does not pass this rule for this user.
        Decision::Forward(_)
        | Decision::Login
        | Decision::SecondFactor(_)
        | Decision::StepUp { .. } => Ok(basic_challenge(realm)),
        Decision::Deny => Err(Error::Forbidden),
    }
}

/// The user behind Basic credentials, or `None` when they are wrong (recorded for regulation
/// and audit). A ban is an error: 429.
async fn check_basic(ctx: &Ctx<'_>, creds: BasicCredentials) -> Result<Option<Identity>, Error> {
    let attempted = creds.username.trim();
    let checked = credentials::check(ctx, Source::BasicForwardAuth, attempted, creds.password);
    let Some(user) = checked.await? else {
        return Ok(None);
    };
    let now = ctx.app.clock.now();
    let session = Session {
        key: SessionId::generate().key(),
        username: user.username.clone(),
        created_at: now,
        last_seen: now,
        expires_at: now,
        remember_me: false,
        auth_level: AuthLevel::OneFactor,
        second_factor_at: None,
        challenge_started_at: None,
        challenge_failures: 0,
        reauth_at: None,
    };
    Ok(Some(Identity { user, session }))
}

/// 200: let the request through, with these identity headers (none on a bypass rule).
fn allowed(identity: Vec<(HeaderName, HeaderValue)>) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in identity {
        h.insert(name, value);
    }
    resp
}

/// Sign in or verify at `url` (absolute, on the portal).
fn challenge(
    front: Front,
    headers: &HeaderMap,
    original: &Original,
    url: &str,
    code: &str,
    basic_realm: Option<&str>,
) -> Result<Response<Body>, Error> {
    let redirect_browser = front == Front::ForwardAuth && negotiate::is_browser(headers);
    let mut resp = if redirect_browser {
        let status = if matches!(original.method, Method::GET | Method::HEAD) {
            StatusCode::FOUND
        } else {
            StatusCode::SEE_OTHER
        };
        render::redirect(status, url)?
    } else {
        let field = if code == "authentication_required" {
            "login_url"
        } else {
            "verify_url"
        };
        let mut resp = render::json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": code, field: url }),
        );
        // nginx reads the target from `Location` (auth_request_set ... $upstream_http_location).
        if front == Front::AuthRequest {
            let location = HeaderValue::from_str(url)
                .map_err(|_| Error::Internal("portal URL is not a valid header".into()))?;
            resp.headers_mut().insert(LOCATION, location);
        }
        resp
    };
    if let Some(realm) = basic_realm
        && !redirect_browser
    {
        add_basic_challenge(&mut resp, realm);
    }
    Ok(resp)
}

/// 401 asking for Basic credentials.
fn basic_challenge(realm: &str) -> Response<Body> {
    let mut resp = render::json(
        StatusCode::UNAUTHORIZED,
        serde_json::json!({ "error": "authentication_required" }),
    );
    add_basic_challenge(&mut resp, realm);
    resp
}

fn add_basic_challenge(resp: &mut Response<Body>, realm: &str) {
    let value = format!("Basic realm=\"{realm}\", charset=\"UTF-8\"");
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
}

/// The realm shown by clients: the portal title, kept to characters that need no quoting.
fn realm(title: &str) -> String {
    let safe: String = title
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || " -_.".contains(*c))
        .collect();
    if safe.trim().is_empty() {
        "Stepgate".to_string()
    } else {
        safe.trim().to_string()
    }
}

/// Scheme and authority of the portal that serves `original`'s host, which must be able to set
/// a session cookie that host receives:
/// - inside a session cookie domain: that domain's portal (or the host itself when it has none);
/// - no cookie domain at all: `portal.url` when it is that very host, else the host itself;
/// - anything else is a host this gateway cannot sign anyone in to: 403.
fn portal_base(ctx: &Ctx<'_>, original: &Original) -> Result<String, Error> {
    let config = &ctx.app.config;
    let same_host = || format!("{}://{}", original.scheme(), original.authority);
    if let Some(domain) = config.session.domain_for(&original.authority) {
        return Ok(domain.portal_url.clone().unwrap_or_else(same_host));
    }
    if !config.session.domains.is_empty() {
        static LOGGED: Throttle = Throttle::new();
        if let Some(held_back) = LOGGED.allow() {
            tracing::warn!(
                host = %original.authority,
                held_back,
                "forward-auth request refused: the host is outside every session cookie domain \
                 (session.cookie_domain / [[session.domains]])"
            );
        }
        return Err(Error::Forbidden);
    }
    match &config.portal.url {
        None => Ok(same_host()),
        Some(url) if same_host_name(url, &original.authority) => Ok(url.clone()),
        Some(url) => {
            static LOGGED: Throttle = Throttle::new();
            if let Some(held_back) = LOGGED.allow() {
                tracing::warn!(
                    host = %original.authority,
                    portal = %url,
                    held_back,
                    "forward-auth request refused: without session.cookie_domain, a login at \
                     portal.url only covers the portal's own host; set session.cookie_domain"
                );
            }
            Err(Error::Forbidden)
        }
    }
}

fn same_host_name(url: &str, authority: &str) -> bool {
    let url_authority = url.split_once("://").map_or(url, |(_, a)| a);
    let a = crate::policy::host::strip_port(url_authority);
    let b = crate::policy::host::strip_port(authority);
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// Exactly one value of `name`, as visible ASCII. Missing, repeated or non-ASCII: 400.
fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    what: &'static str,
) -> Result<&'h str, Error> {
    let mut values = headers.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Error::BadRequest(what));
    };
    let value = value.to_str().map_err(|_| Error::BadRequest(what))?.trim();
    if value.is_empty() {
        return Err(Error::BadRequest(what));
    }
    Ok(value)
}

/// The reported method; one with a lower-case letter is refused like a proxied request's (see
/// [`crate::policy::rules::method_is_unambiguous`]).
fn method(value: &str, what: &'static str) -> Result<Method, Error> {
    Method::from_bytes(value.as_bytes())
        .ok()
        .filter(crate::policy::rules::method_is_unambiguous)
        .ok_or(Error::BadRequest(what))
}

/// A Host the proxy reports: a host name or IP literal with an optional numeric port,
/// lower-cased (see [`crate::policy::host::is_plain_authority`]). A proxy routes
/// `app.example.com:x` to `app.example.com`, which no rule for that host would match.
fn authority(value: &str, what: &'static str) -> Result<String, Error> {
    if !crate::policy::host::is_plain_authority(value) {
        return Err(Error::BadRequest(what));
    }
    Ok(value.to_ascii_lowercase())
}

/// A reported target with a `#`: no client sends a fragment, and parsing would silently cut
/// the target there (`/public#/../admin` judged as `/public`) while the proxy forwards all of
/// it to an application that may read it otherwise.
fn refuse_fragment(target: &str, what: &'static str) -> Result<(), Error> {
    if target.contains('#') {
        return Err(Error::BadRequest(what));
    }
    Ok(())
}

/// Canonical path and the raw path and query of a request target that must start with `/`.
fn target(pq: &PathAndQuery) -> Result<(String, String), Error> {
    let raw = pq.as_str();
    if !raw.starts_with('/') {
        return Err(Error::BadRequest("the original path must start with /"));
    }
    refuse_unresolved(pq.path())?;
    let path =
        crate::policy::canonicalize(pq.path()).map_err(|e| Error::AmbiguousPath(e.to_string()))?;
    Ok((path, raw.to_string()))
}

/// The proxy passes the target to the application as the client wrote it, while the rules
/// judge its canonical form: a path that only resolving makes canonical could be routed
/// otherwise by the application (`/admin/../public/x` is `/admin/*` to a router that matches
/// the raw path; `/admin/x///../..` is `/admin/` under RFC 3986's resolution, which lets `..`
/// remove an empty segment, and `/` here). Refused: dot segments, raw or percent-encoded, and
/// a leading `//`, which URL parsers read as a host. Browsers resolve dot segments before
/// sending, so no link needs them. (The built-in proxy forwards the canonical path itself.)
fn refuse_unresolved(path: &str) -> Result<(), Error> {
    if path.starts_with("//") {
        return Err(Error::AmbiguousPath(
            "the original path starts with //".into(),
        ));
    }
    // A dot segment is at most six bytes written (`%2E%2E`).
    let dot_segment = path.split('/').any(|segment| {
        segment.len() <= 6 && {
            let decoded: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
            decoded == b"." || decoded == b".."
        }
    });
    if dot_segment {
        return Err(Error::AmbiguousPath(
            "the original path has dot segments".into(),
        ));
    }
    Ok(())
}

/// Fields by which applications let a request name another target or method than its own
/// (frameworks route on `X-Original-URL` and `X-Rewrite-URL`), in the folded form of
/// [`headers::folds_to`]. The proxy passes the client's own to the application beside the
/// request: one that names another target than the one judged is refused, whatever its
/// spelling. The contract's own fields are exempt (the proxy sets them).
const TARGET_CLAIMS: [&str; 4] = [
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-forwarded-uri",
];
const METHOD_CLAIMS: [&str; 2] = ["x-original-method", "x-forwarded-method"];

/// The first field of the request, other than the contract's own, that claims another target
/// (path and query, or an absolute URL with them) or method than `original`.
fn disagreeing_claim<'h>(
    headers: &'h HeaderMap,
    front: Front,
    original: &Original,
) -> Option<&'h HeaderName> {
    let contract = match front {
        Front::AuthRequest => [X_ORIGINAL_URL, X_ORIGINAL_METHOD],
        Front::ForwardAuth => [X_FORWARDED_URI, X_FORWARDED_METHOD],
    };
    headers
        .iter()
        .find(|(name, value)| {
            if contract.contains(name) {
                return false;
            }
            let name = name.as_str();
            if TARGET_CLAIMS.iter().any(|c| headers::folds_to(name, c)) {
                !names_target(value, original)
            } else if METHOD_CLAIMS.iter().any(|c| headers::folds_to(name, c)) {
                value.as_bytes() != original.method.as_str().as_bytes()
            } else {
                false
            }
        })
        .map(|(name, _)| name)
}

/// Whether a claimed target (path and query, alone or as an absolute URL's) is the one judged:
/// the same canonical path (a proxy may report it with other escapes or merged slashes, as
/// nginx's `$uri` does), without dot segments, and the same query.
fn names_target(value: &HeaderValue, original: &Original) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    if value == original.raw_path_and_query {
        return true;
    }
    let claimed = if value.starts_with('/') {
        value.parse::<PathAndQuery>().ok()
    } else {
        value
            .parse::<Uri>()
            .ok()
            .filter(|uri| uri.scheme().is_some())
            .and_then(|uri| uri.path_and_query().cloned())
    };
    let Some(claimed) = claimed else {
        return false;
    };
    let judged_query = original
        .raw_path_and_query
        .split_once('?')
        .map(|(_, query)| query);
    // Dot segments would be read as written by an application routing on the claim.
    claimed.query() == judged_query
        && refuse_unresolved(claimed.path()).is_ok()
        && crate::policy::canonicalize(claimed.path()).is_ok_and(|path| path == original.path)
}

/// nginx: `X-Original-URL: https://app.example.com/path?q` and `X-Original-Method: GET`.
pub fn from_original_url(headers: &HeaderMap) -> Result<Original, Error> {
    const URL: &str = "missing or malformed X-Original-URL";
    let url = single(headers, &X_ORIGINAL_URL, URL)?;
    let method = method(
        single(
            headers,
            &X_ORIGINAL_METHOD,
            "missing or malformed X-Original-Method",
        )?,
        "missing or malformed X-Original-Method",
    )?;
    refuse_fragment(url, URL)?;
    let uri: Uri = url.parse().map_err(|_| Error::BadRequest(URL))?;
    let https = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => return Err(Error::BadRequest(URL)),
    };
    let authority = authority(uri.authority().ok_or(Error::BadRequest(URL))?.as_str(), URL)?;
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let (path, raw_path_and_query) = target(&pq)?;
    Ok(Original {
        method,
        https,
        authority,
        path,
        raw_path_and_query,
    })
}

/// Traefik and Caddy: `X-Forwarded-Method`, `-Proto`, `-Host` and `-Uri`.
pub fn from_forwarded(headers: &HeaderMap) -> Result<Original, Error> {
    const METHOD: &str = "missing or malformed X-Forwarded-Method";
    const PROTO: &str = "missing or malformed X-Forwarded-Proto";
    const HOST: &str = "missing or malformed X-Forwarded-Host";
    const URI: &str = "missing or malformed X-Forwarded-Uri";
    let method = method(single(headers, &X_FORWARDED_METHOD, METHOD)?, METHOD)?;
    let proto = single(headers, &X_FORWARDED_PROTO, PROTO)?;
    let https = if proto.eq_ignore_ascii_case("https") {
        true
    } else if proto.eq_ignore_ascii_case("http") {
        false
    } else {
        return Err(Error::BadRequest(PROTO));
    };
    let authority = authority(single(headers, &X_FORWARDED_HOST, HOST)?, HOST)?;
    let uri = single(headers, &X_FORWARDED_URI, URI)?;
    if !uri.starts_with('/') {
        return Err(Error::BadRequest(URI));
    }
    refuse_fragment(uri, URI)?;
    let pq: PathAndQuery = uri.parse().map_err(|_| Error::BadRequest(URI))?;
    let (path, raw_path_and_query) = target(&pq)?;
    Ok(Original {
        method,
        https,
        authority,
        path,
        raw_path_and_query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn nginx(url: &str) -> Result<Original, Error> {
        from_original_url(&headers(&[
            ("x-original-url", url),
            ("x-original-method", "GET"),
        ]))
    }

    fn forwarded(proto: &str, host: &str, uri: &str) -> Result<Original, Error> {
        from_forwarded(&headers(&[
            ("x-forwarded-method", "POST"),
            ("x-forwarded-proto", proto),
            ("x-forwarded-host", host),
            ("x-forwarded-uri", uri),
        ]))
    }

    fn status(r: Result<Original, Error>) -> u16 {
        r.map(|_| 200).unwrap_or_else(|e| e.status().as_u16())
    }

    #[test]
    fn reads_the_nginx_original_url() {
        let o = nginx("https://App.Example.com:8443/a//b?x=%2F").unwrap();
        assert_eq!(o.method, Method::GET);
        assert!(o.https);
        assert_eq!(o.authority, "app.example.com:8443");
        assert_eq!(o.path, "/a/b");
        assert_eq!(o.url(), "https://app.example.com:8443/a//b?x=%2F");
    }

    #[test]
    fn refuses_targets_that_only_resolving_makes_canonical() {
        for path in [
            "/admin/../public/x",
            "/admin/users///../..",
            "/admin/%2e%2E/public/x",
            "/admin/.%2e/public",
            "/admin/%2E./public",
            "/public/./x",
            "/public/%2e/x",
            "/public/x/..",
            "//public/x",
            "//evil.example/x",
        ] {
            let url = format!("https://app.example.com{path}?q=1");
            assert_eq!(status(nginx(&url)), 400, "{path}");
            assert_eq!(
                status(forwarded("https", "app.example.com", path)),
                400,
                "{path}"
            );
        }
        // Names that merely contain dots, and empty segments inside the path, are judged as
        // the application reads them once it collapses slashes.
        for (path, canonical) in [
            ("/public/...", "/public/..."),
            ("/public/.well-known/x", "/public/.well-known/x"),
            ("/public/a..b/%2e%2e%2e", "/public/a..b/..."),
            ("/public//x/", "/public/x/"),
        ] {
            let o = forwarded("https", "app.example.com", path).unwrap();
            assert_eq!(o.path, canonical, "{path}");
        }
    }

    fn claims(front: Front, uri: &str, extra: &[(&str, &str)]) -> Option<String> {
        let o = forwarded("https", "app.example.com", uri).unwrap();
        let h = headers(extra);
        disagreeing_claim(&h, front, &o).map(|n| n.to_string())
    }

    #[test]
    fn refuses_claims_of_another_target_or_method() {
        let uri = "/public/x?a=1";
        // Claims that agree with the target judged, or the contract's own fields.
        for agreeing in [
            ("x-original-url", "https://app.example.com/public/x?a=1"),
            ("x-original-url", "/public/x?a=1"),
            ("x-rewrite-url", "/public/x?a=1"),
            // The same target with other escapes or merged slashes (nginx's `$uri`).
            ("x-rewrite-url", "/public/%78?a=1"),
            ("x-rewrite-url", "/public//x?a=1"),
            ("x-original-method", "POST"),
            ("x-forwarded-uri", "/admin"),
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-host", "other.example.com"),
        ] {
            assert_eq!(
                claims(Front::ForwardAuth, uri, &[agreeing]),
                None,
                "{agreeing:?}"
            );
        }
        for disagreeing in [
            ("x-original-url", "/admin/users"),
            ("x-original-url", "https://app.example.com/admin"),
            ("x-original-url", "/public/x"),
            ("x-original-url", "/public/x?a=2"),
            ("x-original-url", "/public/%2e%2e/admin?a=1"),
            ("x-original-url", "/admin/../public/x?a=1"),
            ("x-original-uri", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x_rewrite_url", "/admin"),
            ("x.original.url", "/admin"),
            ("x-original-method", "DELETE"),
            ("x-original-method", "post"),
        ] {
            assert_eq!(
                claims(Front::ForwardAuth, uri, &[disagreeing]).as_deref(),
                Some(disagreeing.0),
                "{disagreeing:?}"
            );
        }
        // Under nginx's contract the roles swap.
        assert_eq!(
            claims(Front::AuthRequest, uri, &[("x-original-url", "/admin")]),
            None
        );
        assert_eq!(
            claims(Front::AuthRequest, uri, &[("x-forwarded-uri", "/admin")]).as_deref(),
            Some("x-forwarded-uri")
        );
        assert_eq!(
            claims(Front::AuthRequest, uri, &[("x-forwarded-method", "DELETE")]).as_deref(),
            Some("x-forwarded-method")
        );
        // Every value counts, not only the first.
        assert_eq!(
            claims(
                Front::ForwardAuth,
                uri,
                &[
                    ("x-rewrite-url", "/public/x?a=1"),
                    ("x-rewrite-url", "/admin")
                ]
            )
            .as_deref(),
            Some("x-rewrite-url")
        );
    }

    #[test]
    fn reads_the_forwarded_headers() {
        let o = forwarded("http", "app.example.com", "/x/%7Ey?q=1").unwrap();
        assert_eq!(o.method, Method::POST);
        assert!(!o.https);
        assert_eq!(o.path, "/x/~y");
        assert_eq!(o.url(), "http://app.example.com/x/%7Ey?q=1");
    }

    #[test]
    fn rejects_malformed_original_url() {
        for bad in [
            "",
            "/relative/only",
            "app.example.com/x",
            "ftp://app.example.com/",
            "https://user@app.example.com/",
            "https:///nohost",
            "https://app.example.com/%zz",
            "https://app.example.com/a%2Fb",
            "https://app.example.com/../admin",
            "https://app.example.com/%2e%2e/admin",
            "https://app.example.com/public/%2e%2e/admin",
        ] {
            assert_eq!(status(nginx(bad)), 400, "{bad:?}");
        }
    }

    #[test]
    fn rejects_non_utf8_original_url() {
        let mut h = headers(&[("x-original-method", "GET")]);
        h.insert(
            X_ORIGINAL_URL,
            HeaderValue::from_bytes(b"https://app.example.com/\xff").unwrap(),
        );
        assert_eq!(status(from_original_url(&h)), 400);
    }

    #[test]
    fn rejects_missing_or_repeated_headers() {
        assert_eq!(status(from_original_url(&HeaderMap::new())), 400);
        let h = headers(&[("x-original-url", "https://app.example.com/")]);
        assert_eq!(status(from_original_url(&h)), 400, "method missing");
        let h = headers(&[
            ("x-original-url", "https://app.example.com/"),
            ("x-original-url", "https://app.example.com/public"),
            ("x-original-method", "GET"),
        ]);
        assert_eq!(status(from_original_url(&h)), 400, "two URLs");
        assert_eq!(status(from_forwarded(&HeaderMap::new())), 400);
        for (proto, host, uri) in [
            ("gopher", "app.example.com", "/"),
            ("https", "", "/"),
            ("https", "user@app.example.com", "/"),
            ("https", "app.example.com", "admin"),
            ("https", "app.example.com", "/a/%2e%2e/%2e%2e/x"),
        ] {
            assert_eq!(
                status(forwarded(proto, host, uri)),
                400,
                "{proto} {host} {uri}"
            );
        }
    }

    #[test]
    fn store_failures_never_pass() {
        let e = fail_closed(Error::Internal("store".into()), Front::AuthRequest);
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let e = fail_closed(Error::Internal("store".into()), Front::ForwardAuth);
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let ban = || Error::TooManyRequests {
            retry_after: std::time::Duration::from_secs(5),
        };
        assert_eq!(
            fail_closed(ban(), Front::ForwardAuth).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            fail_closed(ban(), Front::AuthRequest).status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            fail_closed(Error::BadRequest("x"), Front::AuthRequest).status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn realm_keeps_only_plain_characters() {
        assert_eq!(realm("Stepgate"), "Stepgate");
        assert_eq!(realm("Acme \"SSO\"\r\n"), "Acme SSO");
        assert_eq!(realm("\"\""), "Stepgate");
    }
}
