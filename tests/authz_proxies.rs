//! Forward-auth through real nginx (`auth_request`) and Caddy (`forward_auth`), each started
//! from the shipped example configuration with only ports and paths replaced, in front of a
//! test gateway and an echo upstream. Every scenario runs against both proxies.

mod common;

use reqwest::header::{ACCEPT, COOKIE, ORIGIN};

use common::auth::{BROWSER_ACCEPT, PREFIX, create_user_full, location, send, set_session_cookie};
use common::proxies::{APP1_HOST, APP2_HOST, PORTAL_HOST, Proxy, ProxyPorts};
use common::{EchoUpstream, Gateway, ReceivedRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nginx,
    Caddy,
}

const ACCESS: &str = r#"
[server]
trusted_proxies = ["127.0.0.1"]

[session]
cookie_domain = "example.com"

[access]
default_policy = "one_factor"

[[access.rules]]
path = "^/public(/|$)"
policy = "bypass"

[[access.rules]]
path = "^/forbidden(/|$)"
policy = "deny"

[[access.rules]]
path = "^/secure(/|$)"
policy = "two_factor"

[[access.rules]]
host = "app1.example.com"
path = "^/app1-secure(/|$)"
policy = "two_factor"
"#;

struct Setup {
    upstream: EchoUpstream,
    gw: Gateway,
    proxy: Proxy,
    http: reqwest::Client,
}

impl Setup {
    async fn start(kind: Kind) -> Setup {
        let upstream = EchoUpstream::start().await;
        let ports = ProxyPorts::pick();
        // Like the shipped configurations: no [[upstreams]], the proxy forwards by itself.
        let gw = Gateway::builder()
            .extra_toml(ACCESS)
            .extra_toml(&format!("[portal]\nurl = \"{}\"\n", ports.portal_url()))
            .start()
            .await;
        create_user_full(
            &gw,
            "alice",
            "password123",
            &["users", "staff"],
            Some("Alice Liddell"),
            Some("alice@example.com"),
        )
        .await;
        let proxy = match kind {
            Kind::Nginx => Proxy::nginx(&ports, gw.addr(), upstream.addr()).await,
            Kind::Caddy => Proxy::caddy(&ports, gw.addr(), upstream.addr()).await,
        };
        let http = proxy.client();
        Setup {
            upstream,
            gw,
            proxy,
            http,
        }
    }

    fn url(&self, host: &str, path: &str) -> String {
        self.proxy.url(host, path)
    }

    fn login_location(&self, host: &str, path: &str) -> String {
        let rd = self.url(host, path);
        let rd: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        format!("{}{PREFIX}/login?rd={rd}", self.url(PORTAL_HOST, ""))
    }

    /// `GET` through the proxy as a browser, with the cookie and extra headers.
    async fn browse(
        &self,
        host: &str,
        path: &str,
        cookie: Option<&str>,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut b = self
            .http
            .get(self.url(host, path))
            .header(ACCEPT, BROWSER_ACCEPT);
        if let Some(c) = cookie {
            b = b.header(COOKIE, c);
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        send(b).await
    }

    /// Signs in on the portal through the proxy (as a browser form post would, with its
    /// Origin) and returns the session cookie; checks it covers the whole cookie domain.
    async fn login(&self, rd: &str) -> String {
        let portal = self.url(PORTAL_HOST, "");
        let resp = send(
            self.http
                .post(format!("{portal}{PREFIX}/login"))
                .header(ACCEPT, "application/json")
                .header(ORIGIN, &portal)
                .form(&[
                    ("username", "alice"),
                    ("password", "password123"),
                    ("rd", rd),
                ]),
        )
        .await;
        assert_eq!(resp.status(), 200, "{}", self.proxy.output());
        let set_cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(set_cookie.contains("Domain=example.com"), "{set_cookie}");
        assert!(set_cookie.contains("Secure"), "{set_cookie}");
        let cookie = set_session_cookie(resp.headers()).expect("session cookie");
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(
            body["redirect"], rd,
            "the return URL inside the cookie domain is kept"
        );
        cookie
    }

    /// The request the echo upstream saw last, after a request that must have reached it.
    fn seen(&self, before: usize) -> ReceivedRequest {
        assert_eq!(
            self.upstream.requests(),
            before + 1,
            "the upstream was not reached"
        );
        self.upstream.last_request().expect("a request")
    }
}

/// A second factor "proven" far in the future: what a client would send to pass an
/// application's own freshness check.
const FORGED_AUTH_TIME: &str = "2099-01-01T00:00:00Z";

const FORGED: &[(&str, &str)] = &[
    ("Remote-User", "admin"),
    ("Remote-Groups", "admins,root"),
    ("Remote-Name", "Administrator"),
    ("Remote-Email", "admin@evil.test"),
    ("Remote-Auth-Time", FORGED_AUTH_TIME),
    ("Remote_User", "admin"),
    ("remote_groups", "root"),
];

fn assert_no_forged(seen: &ReceivedRequest) {
    for (name, value) in &seen.headers {
        let folded = name.replace('_', "-");
        if folded.starts_with("remote-") {
            let value = value.to_ascii_lowercase();
            assert!(
                !value.contains("admin") && !value.contains("root") && !value.contains("evil"),
                "forged {name}: {value} reached the upstream"
            );
        }
    }
}

async fn login_and_identity(kind: Kind) {
    let s = Setup::start(kind).await;
    let before = s.upstream.requests();
    let resp = s.browse(APP1_HOST, "/private/page?x=1", None, &[]).await;
    assert_eq!(resp.status(), 302, "{}", s.proxy.output());
    assert_eq!(
        location(&resp).as_deref(),
        Some(s.login_location(APP1_HOST, "/private/page?x=1").as_str())
    );
    assert_eq!(
        s.upstream.requests(),
        before,
        "nothing reached the upstream"
    );

    let cookie = s.login(&s.url(APP1_HOST, "/private/page?x=1")).await;
    for host in [APP1_HOST, APP2_HOST] {
        let before = s.upstream.requests();
        let resp = s.browse(host, "/private/page", Some(&cookie), FORGED).await;
        assert_eq!(resp.status(), 200, "{host}");
        let seen = s.seen(before);
        // Each exactly once: a forged copy beside the gateway's would show here.
        assert_eq!(seen.header_all("remote-user"), ["alice"]);
        assert_eq!(seen.header_all("remote-groups"), ["users,staff"]);
        assert_eq!(seen.header_all("remote-name"), ["Alice Liddell"]);
        assert_eq!(seen.header_all("remote-email"), ["alice@example.com"]);
        // A password-only session proved no second factor: no auth time, not the client's.
        assert_eq!(seen.header_all("remote-auth-time"), Vec::<String>::new());
        assert_no_forged(&seen);
    }

    // Once a second factor is proven, the application gets Stepgate's time of it, once.
    let value = cookie.split_once('=').expect("name=value").1;
    let key = stepgate::auth::session::SessionId::parse(value)
        .expect("session id")
        .key();
    let at = s.gw.app().clock.now();
    s.gw.app()
        .sessions
        .set_second_factor(&key, at)
        .expect("store")
        .expect("live session");
    let before = s.upstream.requests();
    let resp = s
        .browse(APP1_HOST, "/private/page", Some(&cookie), FORGED)
        .await;
    assert_eq!(resp.status(), 200);
    let seen = s.seen(before);
    assert_eq!(
        seen.header_all("remote-auth-time"),
        [at.to_rfc3339()],
        "the client's {FORGED_AUTH_TIME} must not pass"
    );
}

/// The application gets the client's other cookies, never Stepgate's session cookie: with it,
/// an application (or its request log) could act as the user on every site of the cookie
/// domain.
async fn session_cookie_never_reaches_the_application(kind: Kind) {
    let s = Setup::start(kind).await;
    let cookie = s.login(&s.url(APP1_HOST, "/")).await;
    let value = cookie.split_once('=').expect("name=value").1;
    for (sent, expected) in [
        (
            format!("theme=dark; {cookie}; lang=fr"),
            vec!["theme=dark; lang=fr"],
        ),
        (format!("{cookie}; lang=fr"), vec!["lang=fr"]),
        (format!("theme=dark; {cookie}"), vec!["theme=dark"]),
        (format!("theme=dark;{cookie};{cookie}"), vec!["theme=dark"]),
        (cookie.clone(), vec![]),
        // Copies planted beside the real one (by a site of the cookie domain), up to the
        // eight Stepgate reads: every one is removed.
        (
            format!("{}; lang=fr", [cookie.as_str(); 8].join("; ")),
            vec!["lang=fr"],
        ),
        // Only that name: a cookie whose name merely ends with it passes.
        (
            format!("xstepgate_session=1; {cookie}"),
            vec!["xstepgate_session=1"],
        ),
    ] {
        let before = s.upstream.requests();
        let resp = s.browse(APP1_HOST, "/private/page", Some(&sent), &[]).await;
        assert_eq!(resp.status(), 200, "{sent}: {}", s.proxy.output());
        let seen = s.seen(before);
        assert_eq!(seen.header("remote-user"), Some("alice"), "{sent}");
        let cookies = seen.header_all("cookie");
        assert!(
            cookies.iter().all(|c| !c.contains(value)),
            "the session id reached the application: {cookies:?}"
        );
        assert_eq!(cookies, expected, "sent {sent}");
    }
    // More copies than Stepgate reads: refused, whatever the rule (here a bypass).
    let nine = [cookie.as_str(); 9].join("; ");
    let before = s.upstream.requests();
    let resp = s.browse(APP1_HOST, "/public/info", Some(&nine), &[]).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        s.upstream.requests(),
        before,
        "nothing reached the application"
    );
}

async fn forged_headers_on_bypass(kind: Kind) {
    let s = Setup::start(kind).await;
    let before = s.upstream.requests();
    let resp = s.browse(APP1_HOST, "/public/info", None, FORGED).await;
    assert_eq!(resp.status(), 200);
    let seen = s.seen(before);
    assert_no_forged(&seen);
    for name in [
        "remote-user",
        "remote-groups",
        "remote-name",
        "remote-email",
        "remote-auth-time",
    ] {
        assert_eq!(seen.header_all(name), Vec::<&str>::new(), "{name}");
    }
}

async fn deny(kind: Kind) {
    let s = Setup::start(kind).await;
    let cookie = s.login(&s.url(APP1_HOST, "/")).await;
    let before = s.upstream.requests();
    for cookie in [None, Some(cookie.as_str())] {
        let resp = s.browse(APP1_HOST, "/forbidden/x", cookie, &[]).await;
        assert_eq!(resp.status(), 403);
    }
    assert_eq!(s.upstream.requests(), before);
}

async fn two_factor_rule_sends_to_verify(kind: Kind) {
    let s = Setup::start(kind).await;
    let cookie = s.login(&s.url(APP1_HOST, "/")).await;
    let before = s.upstream.requests();
    let resp = s
        .browse(APP1_HOST, "/secure/vault", Some(&cookie), &[])
        .await;
    assert_eq!(resp.status(), 302);
    let to = location(&resp).expect("Location");
    assert!(
        to.starts_with(&format!("{}{PREFIX}/verify", s.url(PORTAL_HOST, ""))),
        "{to}"
    );
    assert!(to.contains("secure%2Fvault"), "{to}");
    assert_eq!(s.upstream.requests(), before);
}

async fn logout_ends_access(kind: Kind) {
    let s = Setup::start(kind).await;
    let cookie = s.login(&s.url(APP1_HOST, "/")).await;
    let resp = s.browse(APP2_HOST, "/private", Some(&cookie), &[]).await;
    assert_eq!(resp.status(), 200);
    let portal = s.url(PORTAL_HOST, "");
    let resp = send(
        s.http
            .post(format!("{portal}{PREFIX}/logout"))
            .header(ACCEPT, "application/json")
            .header(ORIGIN, &portal)
            .header(COOKIE, &cookie),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let cleared = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(cleared.contains("Domain=example.com"), "{cleared}");
    let before = s.upstream.requests();
    let resp = s.browse(APP2_HOST, "/private", Some(&cookie), &[]).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(
        location(&resp).as_deref(),
        Some(s.login_location(APP2_HOST, "/private").as_str())
    );
    assert_eq!(s.upstream.requests(), before);
}

/// A client naming a bypass path in the headers the proxy sets for Stepgate gets nowhere: the
/// proxy replaces the fields of its contract with the real request, and Stepgate refuses the
/// others when they name another target (nginx passes the client's `X-Forwarded-Uri` on;
/// Caddy's configuration removes the client's first).
async fn spoofed_target_headers(kind: Kind) {
    let s = Setup::start(kind).await;
    let public = s.url(APP1_HOST, "/public/x");
    let spoof = [
        ("X-Original-URL", public.as_str()),
        ("X-Original-Method", "GET"),
        ("X-Forwarded-Uri", "/public/x"),
        ("X-Forwarded-Host", APP1_HOST),
        ("X-Forwarded-Method", "GET"),
    ];
    let before = s.upstream.requests();
    let resp = s.browse(APP1_HOST, "/private", None, &spoof).await;
    match kind {
        Kind::Nginx => assert_eq!(resp.status(), 403),
        Kind::Caddy => {
            assert_eq!(resp.status(), 302);
            assert_eq!(
                location(&resp).as_deref(),
                Some(s.login_location(APP1_HOST, "/private").as_str())
            );
        }
    }
    let resp = s.browse(APP1_HOST, "/forbidden/x", None, &spoof).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(s.upstream.requests(), before);
}

/// The headers by which frameworks route to another URL than the request's never reach the
/// application from a client: the example configurations remove them (nginx replaces
/// `X-Original-URL` only in its question to Stepgate, which therefore never sees the client's),
/// and Stepgate refuses the ones it sees that name another target or method.
async fn url_claims_never_reach_the_application(kind: Kind) {
    let s = Setup::start(kind).await;
    let admin = s.url(APP1_HOST, "/forbidden/x");
    let removed: Vec<(&str, &str)> = match kind {
        Kind::Nginx => vec![
            ("X-Original-URL", admin.as_str()),
            ("X-Original-Method", "DELETE"),
            ("X-Forwarded-Host", "evil.example.com"),
        ],
        Kind::Caddy => vec![
            ("X-Original-URL", admin.as_str()),
            ("X-Original-URI", "/forbidden/x"),
            ("X-Rewrite-URL", "/forbidden/x"),
            ("X-Original-Method", "DELETE"),
            ("X-Forwarded-Uri", "/forbidden/x"),
            ("X-Forwarded-Method", "DELETE"),
            ("X-Forwarded-Host", "evil.example.com"),
        ],
    };
    let before = s.upstream.requests();
    let resp = s.browse(APP1_HOST, "/public/info", None, &removed).await;
    assert_eq!(resp.status(), 200, "{}", s.proxy.output());
    let seen = s.seen(before);
    for (name, _) in &removed {
        if *name == "X-Forwarded-Host" {
            let host = seen.header("x-forwarded-host").unwrap_or_default();
            assert!(host.starts_with(APP1_HOST), "X-Forwarded-Host: {host}");
        } else {
            assert_eq!(seen.header_all(name), Vec::<String>::new(), "{name}");
        }
    }
    if kind == Kind::Nginx {
        for claim in [
            ("X-Rewrite-URL", "/forbidden/x"),
            ("X-Original-URI", "/forbidden/x"),
            ("X-Forwarded-Uri", "/forbidden/x"),
            ("X-Forwarded-Method", "DELETE"),
        ] {
            let before = s.upstream.requests();
            let resp = s.browse(APP1_HOST, "/public/info", None, &[claim]).await;
            assert_eq!(resp.status(), 403, "{claim:?}");
            assert_eq!(s.upstream.requests(), before, "{claim:?}");
        }
        // One that agrees with the request passes (nginx snippets often set X-Forwarded-Uri).
        let before = s.upstream.requests();
        let resp = s
            .browse(
                APP1_HOST,
                "/public/info",
                None,
                &[("X-Forwarded-Uri", "/public/info")],
            )
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(s.seen(before).header("x-forwarded-uri"), None);
    }
}

/// Dot segments reach the application as the client wrote them, so Stepgate refuses them
/// rather than judging the resolved path (`/forbidden/../public/x` would be judged as
/// `/public/x`, a bypass, while a router matching the raw path serves `/forbidden/*`).
async fn dot_segments_are_refused(kind: Kind) {
    let s = Setup::start(kind).await;
    let port = s.proxy.ports.https;
    // Written byte for byte: an HTTP client would resolve the dot segments itself.
    for path in [
        "/forbidden/../public/x",
        "/forbidden/%2e%2e/public/x",
        "/forbidden/x///../../public/x",
    ] {
        let before = s.upstream.requests();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {APP1_HOST}:{port}\r\nAccept: {BROWSER_ACCEPT}\r\n\
             Connection: close\r\n\r\n"
        );
        let answer = s.proxy.raw_https(APP1_HOST, request.as_bytes()).await;
        let answer = String::from_utf8_lossy(&answer);
        let status = answer.split(' ').nth(1).unwrap_or_default();
        // nginx answers 500 when `auth_request` gets a 400; Caddy passes the 400 on.
        let expected = match kind {
            Kind::Nginx => "500",
            Kind::Caddy => "400",
        };
        assert_eq!(status, expected, "{path}: {answer}\n{}", s.proxy.output());
        assert_eq!(
            s.upstream.requests(),
            before,
            "{path} reached the application"
        );
    }
    // Without the dot segments the same bypass path is served.
    let before = s.upstream.requests();
    let resp = s.browse(APP1_HOST, "/public/x", None, &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(s.upstream.requests(), before + 1);
}

/// A form POST keeps working: the subrequest is a body-less GET carrying the original method.
async fn post_is_checked_and_forwarded(kind: Kind) {
    let s = Setup::start(kind).await;
    let resp = send(
        s.http
            .post(s.url(APP1_HOST, "/private/form"))
            .header(ACCEPT, "application/json")
            .body("a=1"),
    )
    .await;
    let status = resp.status().as_u16();
    match kind {
        // nginx turns every 401 into a redirect (error_page 401 =302).
        Kind::Nginx => assert_eq!(status, 302),
        Kind::Caddy => assert_eq!(status, 401),
    }
    let cookie = s.login(&s.url(APP1_HOST, "/")).await;
    let before = s.upstream.requests();
    let resp = send(
        s.http
            .post(s.url(APP1_HOST, "/private/form"))
            .header(COOKIE, &cookie)
            .body("a=1"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let seen = s.seen(before);
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.header("remote-user"), Some("alice"));
}

/// An absolute request target names the site the proxy serves, whatever the `Host` header
/// says (nginx chooses the server block, and sets `$host`, from the target): the request must
/// be judged for that site. A password-only session is enough for `/app1-secure` on app2 but
/// not on app1, where the rule asks for a second factor.
async fn absolute_target_is_judged_for_the_site_served(kind: Kind) {
    let s = Setup::start(kind).await;
    let cookie = s.login(&s.url(APP1_HOST, "/")).await;
    let before = s.upstream.requests();
    let resp = s
        .browse(APP2_HOST, "/app1-secure/x", Some(&cookie), &[])
        .await;
    assert_eq!(resp.status(), 200, "the rule is app1's alone");
    let seen = s.seen(before);
    assert_eq!(
        seen.header("host"),
        Some(format!("{APP2_HOST}:{}", s.proxy.ports.https).as_str())
    );

    let before = s.upstream.requests();
    let port = s.proxy.ports.https;
    let request = format!(
        "GET https://{APP1_HOST}:{port}/app1-secure/x HTTP/1.1\r\n\
         Host: {APP2_HOST}:{port}\r\n\
         Cookie: {cookie}\r\n\
         Accept: {BROWSER_ACCEPT}\r\n\
         Connection: close\r\n\r\n"
    );
    let answer = s.proxy.raw_https(APP1_HOST, request.as_bytes()).await;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split(' ').nth(1).unwrap_or_default();
    assert!(
        !status.starts_with('2'),
        "judged for the Host header's site: {answer}\n{}",
        s.proxy.output()
    );
    assert_eq!(
        s.upstream.requests(),
        before,
        "the application was reached: {answer}"
    );
}

/// The forward-auth endpoints are for the proxy alone: through the portal's site, where the
/// client would write `X-Original-URL` and the other headers itself, they are not found.
async fn portal_site_does_not_expose_the_forward_auth_endpoints(kind: Kind) {
    let s = Setup::start(kind).await;
    let portal = s.url(PORTAL_HOST, "");
    for endpoint in ["auth-request", "forward-auth"] {
        let resp = send(
            s.http
                .get(format!("{portal}{PREFIX}/authz/{endpoint}"))
                .header("X-Original-URL", s.url(APP1_HOST, "/private"))
                .header("X-Original-Method", "GET")
                .header("X-Forwarded-Method", "GET")
                .header("X-Forwarded-Proto", "https")
                .header("X-Forwarded-Host", APP1_HOST)
                .header("X-Forwarded-Uri", "/private"),
        )
        .await;
        assert_eq!(resp.status(), 404, "{endpoint}");
    }
    let resp = send(
        s.http
            .get(format!("{portal}{PREFIX}/login"))
            .header(ACCEPT, BROWSER_ACCEPT),
    )
    .await;
    assert_eq!(resp.status(), 200, "the portal itself is served");
}

macro_rules! both_proxies {
    ($($scenario:ident),* $(,)?) => {
        mod nginx {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Kind::Nginx).await;
                }
            )*
        }
        mod caddy {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Kind::Caddy).await;
                }
            )*
        }
    };
}

both_proxies!(
    login_and_identity,
    session_cookie_never_reaches_the_application,
    forged_headers_on_bypass,
    deny,
    two_factor_rule_sends_to_verify,
    logout_ends_access,
    spoofed_target_headers,
    url_claims_never_reach_the_application,
    dot_segments_are_refused,
    post_is_checked_and_forwarded,
    absolute_target_is_judged_for_the_site_served,
    portal_site_does_not_expose_the_forward_auth_endpoints,
);

/// Caddy redirects browsers itself (302) and answers API clients 401 with the login URL.
#[tokio::test]
async fn caddy_answers_api_clients_with_401() {
    let s = Setup::start(Kind::Caddy).await;
    let resp = send(
        s.http
            .get(s.url(APP1_HOST, "/private"))
            .header(ACCEPT, "application/json"),
    )
    .await;
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["login_url"], s.login_location(APP1_HOST, "/private"));
}
