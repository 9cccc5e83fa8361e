//! Access rules applied by the running gateway: hosts, paths, methods, networks, subjects and
//! policies, the challenge for anonymous clients, first-match order, and path tricks that try
//! to slip past a rule.

mod common;

use reqwest::Method;

use common::answers::assert_redirect;
use common::auth::{
    BROWSER_ACCEPT, Client, create_user, get, get_with, json, location, login, raw_status, send,
};
use common::{EchoUpstream, Gateway, http_client, raw_exchange};

/// Every request needs a login.
const LOGIN_REQUIRED: &str = "[access]\ndefault_policy = \"one_factor\"\n";

/// The password of every account these tests create.
const PASSWORD: &str = "password123";

/// Extra request headers as `(name, value)` pairs.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// A gateway with access rules in front of an echo upstream that counts what reaches it.
struct Site {
    upstream: EchoUpstream,
    gw: Gateway,
}

impl Site {
    /// A gateway in front of a fresh echo upstream, with `access` (TOML) merged over its
    /// configuration.
    async fn start(access: &str) -> Site {
        let upstream = EchoUpstream::start().await;
        let gw = Gateway::builder()
            .upstream(&upstream.url())
            .extra_toml(access)
            .start()
            .await;
        Site { upstream, gw }
    }

    /// Creates `name` (no groups, password [`PASSWORD`]) and logs in: the session cookie.
    async fn logged_in_user(&self, name: &str) -> String {
        create_user(&self.gw, name, PASSWORD, &[]).await;
        login(&self.gw, name, PASSWORD).await
    }

    /// Status of `GET path` as an API client, with `cookie` and extra headers, and whether the
    /// request reached the upstream (which must be the case exactly when the status is 200).
    async fn status_of(&self, path: &str, cookie: Option<&str>, headers: Headers<'_>) -> u16 {
        let before = self.upstream.requests();
        let resp = get_with(&self.gw, path, cookie, Client::Api, headers).await;
        let status = resp.status().as_u16();
        let forwarded = self.upstream.requests() - before;
        assert_eq!(
            forwarded,
            usize::from(status == 200),
            "{path}: status {status} but forwarded {forwarded} time(s)"
        );
        status
    }

    /// For each `(path, cookie, expected status)` in order: [`Site::status_of`] without extra
    /// headers. A failure names the case.
    async fn assert_statuses(&self, cases: &[(&str, Option<&str>, u16)]) {
        for (i, &(path, cookie, expected)) in cases.iter().enumerate() {
            let status = self.status_of(path, cookie, &[]).await;
            assert_eq!(
                status, expected,
                "case {i}: GET {path} with cookie {cookie:?}"
            );
        }
    }

    /// For each `(path, extra headers, expected status)` in order: [`Site::status_of`] without
    /// a cookie. A failure names the case.
    async fn assert_statuses_with_headers(&self, cases: &[(&str, Headers<'_>, u16)]) {
        for (i, &(path, headers, expected)) in cases.iter().enumerate() {
            let status = self.status_of(path, None, headers).await;
            assert_eq!(
                status, expected,
                "case {i}: GET {path} with headers {headers:?}"
            );
        }
    }

    /// `method path` on the plain listener with exactly `headers` (no `Accept` or cookie
    /// unless given).
    async fn request(&self, method: Method, path: &str, headers: Headers<'_>) -> reqwest::Response {
        let mut builder = http_client().request(method, self.gw.url_for(path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        send(builder).await
    }

    /// Sends `GET raw_path HTTP/1.1` (`Host: app.test`, `Connection: close`) byte for byte and
    /// returns the whole raw answer.
    async fn raw_get(&self, raw_path: &str) -> Vec<u8> {
        let request =
            format!("GET {raw_path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        raw_exchange(self.gw.addr(), request.as_bytes()).await
    }

    /// Sends `GET raw_path` byte for byte; the path must not reach the upstream and the answer
    /// must be 403 (the rule matched) or 400 (the path was refused).
    async fn assert_blocked(&self, raw_path: &str) {
        let before = self.upstream.requests();
        let answer = self.raw_get(raw_path).await;
        let status = raw_status(&answer);
        assert!(
            status == 403 || status == 400,
            "{raw_path}: {}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(
            self.upstream.requests(),
            before,
            "{raw_path} reached the upstream"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The challenge

#[tokio::test]
async fn anonymous_browser_is_sent_to_login_with_the_original_target() {
    let site = Site::start(LOGIN_REQUIRED).await;
    let resp = get(&site.gw, "/docs/a%20b?x=1&y=2", None, Client::Browser).await;
    assert_redirect(
        &resp,
        302,
        "/.stepgate/login?rd=%2Fdocs%2Fa%2520b%3Fx%3D1%26y%3D2",
        "anonymous browser",
    );
    assert_eq!(site.upstream.requests(), 0);
}

#[tokio::test]
async fn anonymous_api_client_gets_401_with_login_url() {
    let site = Site::start(LOGIN_REQUIRED).await;
    for accept in ["application/json", "*/*", "application/json, */*;q=0.1"] {
        let resp = site
            .request(Method::GET, "/api/items?page=2", &[("accept", accept)])
            .await;
        assert_eq!(resp.status(), 401, "Accept: {accept}");
        let body = json(resp).await;
        assert_eq!(body["error"], "authentication_required");
        assert_eq!(
            body["login_url"],
            "/.stepgate/login?rd=%2Fapi%2Fitems%3Fpage%3D2"
        );
    }
    // No Accept at all: an API client too.
    let resp = site.request(Method::GET, "/x", &[]).await;
    assert_eq!(resp.status(), 401, "no Accept");
    // An XHR from a page is not a navigation: 401, not a redirect it cannot follow.
    let xhr = [
        ("accept", BROWSER_ACCEPT),
        ("x-requested-with", "XMLHttpRequest"),
    ];
    let resp = site.request(Method::GET, "/x", &xhr).await;
    assert_eq!(resp.status(), 401, "XHR");
    assert_eq!(site.upstream.requests(), 0);
}

#[tokio::test]
async fn client_preferring_json_gets_401_not_a_redirect() {
    // The answer format follows the client's preference everywhere else (errors, portal):
    // a client that prefers JSON over HTML must get the JSON challenge too. A `fetch()` that
    // follows a 302 silently ends up with the login page's HTML and a 200.
    let site = Site::start(LOGIN_REQUIRED).await;
    let accept = [("accept", "application/json, text/html;q=0.5")];
    let resp = site.request(Method::GET, "/api/items", &accept).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(json(resp).await["error"], "authentication_required");
}

#[tokio::test]
async fn login_through_challenge_then_reach_the_target() {
    let site = Site::start(LOGIN_REQUIRED).await;
    let target = "/reports?year=2025";
    create_user(&site.gw, "alice", PASSWORD, &[]).await;
    let resp = get(&site.gw, target, None, Client::Browser).await;
    let login_url = location(&resp).expect("Location");
    let rd = url::Url::parse(&site.gw.url_for(&login_url))
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned())
        .expect("rd");
    let resp = common::auth::post_login(
        &site.gw,
        &[("username", "alice"), ("password", PASSWORD), ("rd", &rd)],
        Client::Browser,
        &[],
    )
    .await;
    assert_redirect(&resp, 303, target, "login form with rd");
    let cookie = common::auth::set_session_cookie(resp.headers()).expect("cookie");
    let resp = get(&site.gw, target, Some(&cookie), Client::Browser).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        site.upstream.last_request().expect("forwarded").path,
        target
    );
}

// ---------------------------------------------------------------------------------------------
// Criteria

#[tokio::test]
async fn host_rules_match_exact_and_wildcard_names() {
    let site = Site::start(
        r#"
[access]
default_policy = "deny"

[[access.rules]]
host = "public.test"
policy = "bypass"

[[access.rules]]
host = "*.example.com"
policy = "one_factor"
"#,
    )
    .await;
    let cookie = site.logged_in_user("alice").await;
    let alice = Some(cookie.as_str());
    let cases = [
        // Exact: case-insensitive, port and trailing dot ignored.
        ("public.test", None, 200),
        ("PUBLIC.Test:8080", None, 200),
        ("public.test.", None, 200),
        ("notpublic.test", None, 403),
        ("public.test.evil", None, 403),
        // Wildcard: subdomains only, and only on a label boundary.
        ("app.example.com", None, 401),
        ("app.example.com", alice, 200),
        ("a.b.example.com", alice, 200),
        ("example.com", alice, 403),
        ("evilexample.com", alice, 403),
        ("app.example.com.evil.net", alice, 403),
        // Default deny, logged in or not.
        ("other.test", None, 403),
        ("other.test", alice, 403),
    ];
    for (host, cookie, expected) in cases {
        let status = site.status_of("/", cookie, &[("host", host)]).await;
        assert_eq!(status, expected, "Host: {host}, cookie {cookie:?}");
    }
}

#[tokio::test]
async fn path_rules_match_the_canonical_path_without_query() {
    let site = Site::start(
        r#"
[access]
default_policy = "deny"

[[access.rules]]
path = ["^/public/", "^/favicon\\.ico$"]
policy = "bypass"

[[access.rules]]
path = "^/app(/|$)"
policy = "one_factor"
"#,
    )
    .await;
    let cookie = site.logged_in_user("alice").await;
    let alice = Some(cookie.as_str());
    site.assert_statuses(&[
        ("/public/logo.png", None, 200),
        ("/favicon.ico", None, 200),
        ("/favicon.ico.bak", None, 403),
        ("/public", None, 403),
        // The query is not part of what path rules see.
        ("/secret?x=/public/", None, 403),
        ("/app", None, 401),
        ("/app/x", alice, 200),
        ("/application", alice, 403),
        ("/", alice, 403),
    ])
    .await;
}

/// The application decodes the escapes the canonical path keeps (`%3A` is `:` to it): a rule
/// written with the character judges the escaped spelling too, through the whole gateway.
#[tokio::test]
async fn path_rules_judge_escaped_characters_as_the_application_reads_them() {
    let site = Site::start(
        r#"
[access]
default_policy = "bypass"

[[access.rules]]
path = "^/wiki/Special:"
policy = "deny"

[[access.rules]]
path = "^/caf\u00e9/"
policy = "deny"
"#,
    )
    .await;
    for blocked in [
        "/wiki/Special:UserRights",
        "/wiki/Special%3AUserRights",
        "/wiki/Special%3aUserRights",
        "/wiki/special%3AUserRights",
        "/caf%C3%A9/menu",
        "/caf%c3%a9/menu",
    ] {
        site.assert_blocked(blocked).await;
    }
    site.assert_statuses(&[("/wiki/Main", None, 200), ("/wiki/100%25", None, 200)])
        .await;
}

/// `/admin;x` is `/admin` to a servlet container: a rule for `/admin` judges it, while the
/// upstream still receives the path as sent (`;jsessionid=` links keep working).
#[tokio::test]
async fn path_rules_read_segments_without_their_parameters() {
    let site = Site::start(
        r#"
[access]
default_policy = "deny"

[[access.rules]]
path = "^/admin(/|$)"
policy = "two_factor"

[[access.rules]]
path = "^/public(/|$)"
policy = "bypass"
"#,
    )
    .await;
    site.assert_statuses(&[
        ("/admin", None, 401),
        ("/admin;x", None, 401),
        ("/admin;x/users", None, 401),
        ("/admin%3Bx/users", None, 401),
        ("/;x/admin", None, 401),
        ("/public;jsessionid=0123/page", None, 200),
        ("/public/page;jsessionid=0123", None, 200),
        // Parameters never make a path one of the rules' either.
        ("/public.evil;/x", None, 403),
    ])
    .await;
    assert_eq!(
        site.upstream.last_request().map(|r| r.path),
        Some("/public/page;jsessionid=0123".to_owned())
    );
}

#[tokio::test]
async fn method_rules_match_only_listed_methods() {
    let site = Site::start(
        r#"
[access]
default_policy = "deny"

[[access.rules]]
path = "^/read"
methods = ["GET", "HEAD"]
policy = "bypass"
"#,
    )
    .await;
    for (method, expected) in [
        ("GET", 200),
        ("HEAD", 200),
        ("POST", 403),
        ("PUT", 403),
        ("DELETE", 403),
        // A method with a lower-case letter is refused before any rule is consulted: an
        // application may run `get` or `delete` as `GET` or `DELETE`.
        ("get", 400),
        ("delete", 400),
        ("Post", 400),
    ] {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let accept = [("accept", "application/json")];
        let resp = site.request(method.clone(), "/read/item", &accept).await;
        assert_eq!(resp.status().as_u16(), expected, "{method}");
    }
}

/// A request is judged for every method an application may run for it: `GET` for a `HEAD`
/// (applications answer it with their `GET` handler), and the method a client asks for with
/// `X-HTTP-Method-Override` and its kin (Express, ASP.NET and Symfony run a `POST` as that
/// method). The stricter answer wins.
#[tokio::test]
async fn method_rules_cover_head_and_method_overrides() {
    let site = Site::start(
        r#"
[access]
default_policy = "bypass"

[[access.rules]]
path = "^/items"
methods = ["DELETE"]
policy = "deny"

[[access.rules]]
path = "^/export"
methods = ["GET"]
policy = "deny"

[[access.rules]]
path = "^/ping"
methods = ["HEAD"]
policy = "bypass"

[[access.rules]]
path = "^/ping"
policy = "deny"
"#,
    )
    .await;
    let accept = ("accept", "application/json");
    for (method, extra, path, expected) in [
        ("POST", None, "/items/7", 200),
        (
            "POST",
            Some(("X-HTTP-Method-Override", "DELETE")),
            "/items/7",
            403,
        ),
        (
            "POST",
            Some(("X-HTTP-Method-Override", "delete")),
            "/items/7",
            403,
        ),
        ("POST", Some(("X-HTTP-Method", "DELETE")), "/items/7", 403),
        (
            "POST",
            Some(("X-Method-Override", " DELETE ")),
            "/items/7",
            403,
        ),
        // Express reads the value up to its first comma; CGI servers hand `_` spellings on.
        (
            "POST",
            Some(("X-HTTP-Method-Override", "DELETE, x")),
            "/items/7",
            403,
        ),
        (
            "POST",
            Some(("X_HTTP_Method_Override", "DELETE")),
            "/items/7",
            403,
        ),
        (
            "POST",
            Some(("X-HTTP-Method-Override", "PATCH")),
            "/items/7",
            200,
        ),
        ("HEAD", None, "/export/all", 403),
        ("GET", None, "/export/all", 403),
        ("POST", None, "/export/all", 200),
        // A bypass for HEAD alone no longer lets it through where GET is denied.
        ("HEAD", None, "/ping", 403),
    ] {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let headers: Vec<(&str, &str)> = std::iter::once(accept).chain(extra).collect();
        let before = site.upstream.requests();
        let resp = site.request(method.clone(), path, &headers).await;
        assert_eq!(
            resp.status().as_u16(),
            expected,
            "{method} {path} {extra:?}"
        );
        let reached = site.upstream.requests() > before;
        assert_eq!(reached, expected == 200, "{method} {path} {extra:?}");
    }
}

#[tokio::test]
async fn network_rules_match_the_client_address() {
    let site = Site::start(
        r#"
[access]
default_policy = "deny"

[[access.rules]]
path = "^/office"
networks = ["10.0.0.0/8", "192.168.0.0/16"]
policy = "bypass"

[[access.rules]]
path = "^/local"
networks = "127.0.0.0/8"
policy = "bypass"
"#,
    )
    .await;
    site.assert_statuses_with_headers(&[
        ("/local", &[], 200),
        ("/office", &[], 403),
        // An untrusted peer cannot claim another address.
        ("/office", &[("x-forwarded-for", "10.1.2.3")], 403),
    ])
    .await;
}

/// A gateway behind a trusted proxy on 127.0.0.1 that lets `network` through and denies the rest.
async fn behind_trusted_proxy(network: &str) -> Site {
    Site::start(&format!(
        r#"
[server]
trusted_proxies = ["127.0.0.1/32"]

[access]
default_policy = "deny"

[[access.rules]]
networks = "{network}"
policy = "bypass"
"#
    ))
    .await
}

#[tokio::test]
async fn network_rules_use_forwarded_address_from_trusted_proxy() {
    let site = behind_trusted_proxy("10.0.0.0/8").await;
    site.assert_statuses_with_headers(&[
        ("/", &[("x-forwarded-for", "10.1.2.3")], 200),
        ("/", &[("x-forwarded-for", "192.0.2.1")], 403),
        // The peer itself (127.0.0.1) is not in the network.
        ("/", &[], 403),
    ])
    .await;
}

/// What a client writes left of the address its proxy added is never read, even when it is
/// not an address: it cannot make the gateway take the proxy's own address for the client's.
#[tokio::test]
async fn a_client_cannot_borrow_its_trusted_proxy_address() {
    let site = behind_trusted_proxy("127.0.0.0/8").await;
    site.assert_statuses_with_headers(&[
        // The proxy's own requests (no header) are its own.
        ("/", &[], 200),
        ("/", &[("x-forwarded-for", "x, 192.0.2.1")], 403),
        ("/", &[("x-forwarded-for", ", 192.0.2.1")], 403),
        ("/", &[("x-forwarded-for", "1.2.3.4:5678, 192.0.2.1")], 403),
        // A trusted proxy that names no address: the client is unknown, not the proxy.
        ("/", &[("x-forwarded-for", "not-an-address")], 403),
    ])
    .await;
}

#[tokio::test]
async fn subject_rules_match_users_and_groups() {
    let site = Site::start(
        r#"
[access]
default_policy = "one_factor"

[[access.rules]]
path = "^/admin"
subjects = "group:admins"
policy = "one_factor"

[[access.rules]]
path = "^/admin"
policy = "deny"

[[access.rules]]
path = "^/bob"
subjects = ["user:Bob", "group:auditors"]
policy = "one_factor"

[[access.rules]]
path = "^/bob"
policy = "deny"
"#,
    )
    .await;
    create_user(&site.gw, "alice", PASSWORD, &["admins"]).await;
    create_user(&site.gw, "bob", PASSWORD, &["users"]).await;
    create_user(&site.gw, "carol", PASSWORD, &["auditors", "Admins"]).await;
    let alice = login(&site.gw, "alice", PASSWORD).await;
    let bob = login(&site.gw, "bob", PASSWORD).await;
    let carol = login(&site.gw, "carol", PASSWORD).await;
    let (alice, bob, carol) = (
        Some(alice.as_str()),
        Some(bob.as_str()),
        Some(carol.as_str()),
    );
    site.assert_statuses(&[
        ("/admin", alice, 200),
        // Logged in but not allowed: 403.
        ("/admin", bob, 403),
        // Group names are compared exactly: "Admins" is not "admins".
        ("/admin", carol, 403),
        // Anonymous on a rule about subjects: asked to log in, not denied outright.
        ("/admin", None, 401),
        // User names are compared case-insensitively.
        ("/bob", bob, 200),
        ("/bob", carol, 200),
        ("/bob", alice, 403),
        // Everyone logged in may see the rest.
        ("/home", bob, 200),
    ])
    .await;

    let resp = get(&site.gw, "/admin", None, Client::Browser).await;
    assert_redirect(
        &resp,
        302,
        "/.stepgate/login?rd=%2Fadmin",
        "anonymous browser",
    );
}

#[tokio::test]
async fn policies_bypass_one_factor_two_factor_and_deny() {
    let site = Site::start(
        r#"
[access]
default_policy = "deny"

[[access.rules]]
path = "^/open"
policy = "bypass"

[[access.rules]]
path = "^/member"
policy = "one_factor"

[[access.rules]]
path = "^/secure"
policy = "two_factor"

[[access.rules]]
path = "^/closed"
policy = "deny"
"#,
    )
    .await;
    let cookie = site.logged_in_user("alice").await;
    let alice = Some(cookie.as_str());
    site.assert_statuses(&[
        ("/open", None, 200),
        ("/open", alice, 200),
        ("/member", None, 401),
        ("/member", alice, 200),
        ("/secure", None, 401),
        ("/closed", None, 403),
        ("/closed", alice, 403),
        ("/elsewhere", alice, 403),
    ])
    .await;

    // Logged in with a password only: a second factor is required first. API clients are told
    // where to verify; browsers are sent there (and on to enrolment when they have none).
    let resp = get(&site.gw, "/secure", Some(&cookie), Client::Api).await;
    assert_eq!(resp.status(), 401);
    let body = json(resp).await;
    assert_eq!(body["error"], "second_factor_required");
    assert_eq!(body["verify_url"], "/.stepgate/verify?rd=%2Fsecure");
    let resp = get(&site.gw, "/secure", Some(&cookie), Client::Browser).await;
    assert_redirect(
        &resp,
        302,
        "/.stepgate/verify?rd=%2Fsecure",
        "one-factor browser",
    );
    // A denied anonymous browser is not sent to log in: nobody may pass.
    let resp = get(&site.gw, "/closed", None, Client::Browser).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        site.upstream
            .received()
            .iter()
            .filter(|r| r.path.starts_with("/secure"))
            .count(),
        0
    );
}

#[tokio::test]
async fn first_matching_rule_wins() {
    let site = Site::start(
        r#"
[access]
default_policy = "bypass"

[[access.rules]]
path = "^/shared/open"
policy = "bypass"

[[access.rules]]
path = "^/shared"
policy = "deny"

[[access.rules]]
path = "^/order"
policy = "deny"

[[access.rules]]
path = "^/order"
policy = "bypass"
"#,
    )
    .await;
    site.assert_statuses(&[
        ("/shared/open/x", None, 200),
        ("/shared/other", None, 403),
        ("/order", None, 403),
        ("/unlisted", None, 200),
    ])
    .await;
}

#[tokio::test]
async fn rules_combine_criteria_with_and() {
    let site = Site::start(
        r#"
[access]
default_policy = "deny"

[[access.rules]]
host = "app.test"
path = "^/api/"
methods = "GET"
networks = "127.0.0.1"
policy = "bypass"
"#,
    )
    .await;
    let host: Headers = &[("host", "app.test")];
    let other: Headers = &[("host", "other.test")];
    site.assert_statuses_with_headers(&[
        ("/api/x", host, 200),
        ("/api/x", other, 403),
        ("/web/x", host, 403),
    ])
    .await;
    let post = [("host", "app.test"), ("accept", "application/json")];
    let resp = site.request(Method::POST, "/api/x", &post).await;
    assert_eq!(resp.status(), 403, "POST");
}

// ---------------------------------------------------------------------------------------------
// Path tricks against `path = "^/admin"`, policy deny, everything else bypass

const ADMIN_DENIED: &str = r#"
[access]
default_policy = "bypass"

[[access.rules]]
path = "^/admin"
policy = "deny"
"#;

/// Starts a gateway with `access` and checks [`Site::assert_blocked`] for each raw path in
/// order.
async fn assert_rule_blocks(access: &str, raw_paths: &[&str]) {
    let site = Site::start(access).await;
    for path in raw_paths {
        site.assert_blocked(path).await;
    }
}

#[tokio::test]
async fn admin_rule_blocks_the_plain_path() {
    let site = Site::start(ADMIN_DENIED).await;
    for path in ["/admin", "/admin/", "/admin/users?id=1", "/administrator"] {
        site.assert_blocked(path).await;
    }
    // Sanity: other paths pass.
    assert_eq!(raw_status(&site.raw_get("/public").await), 200);
}

#[tokio::test]
async fn rejects_percent_encoded_letter_bypass() {
    assert_rule_blocks(
        ADMIN_DENIED,
        &[
            "/%61dmin",
            "/%61%64%6d%69%6e",
            "/%41dmin/../admin",
            "/adm%69n/x",
        ],
    )
    .await;
}

#[tokio::test]
async fn rejects_double_slash_bypass() {
    assert_rule_blocks(ADMIN_DENIED, &["//admin", "///admin", "//admin//users"]).await;
}

#[tokio::test]
async fn rejects_dot_segment_bypass() {
    assert_rule_blocks(
        ADMIN_DENIED,
        &[
            "/./admin",
            "/x/../admin",
            "/x/y/../../admin",
            "/public/../admin",
            "/../admin",
        ],
    )
    .await;
}

#[tokio::test]
async fn rejects_encoded_dot_segment_bypass() {
    assert_rule_blocks(
        ADMIN_DENIED,
        &[
            "/%2e/admin",
            "/%2e%2e/admin",
            "/x/%2e%2e/admin",
            "/x/%2E%2E/admin",
            "/x/.%2e/admin",
            "/x/..;/admin",
            "/.;/admin",
        ],
    )
    .await;
}

#[tokio::test]
async fn rejects_encoded_slash_bypass() {
    assert_rule_blocks(
        ADMIN_DENIED,
        &[
            "/admin%2f..",
            "/admin%2F..",
            "/%2fadmin",
            "/x%2f..%2fadmin",
            "/x/..%2fadmin",
        ],
    )
    .await;
}

#[tokio::test]
async fn rejects_backslash_bypass() {
    assert_rule_blocks(
        ADMIN_DENIED,
        &["/x/..%5cadmin", "/%5cadmin", "/x\\..\\admin"],
    )
    .await;
}

#[tokio::test]
async fn rejects_control_character_bypass() {
    assert_rule_blocks(ADMIN_DENIED, &["/%00/admin", "/x%00/../admin", "/%0aadmin"]).await;
}

/// Letter case never loosens a rule: an application may or may not tell `/ADMIN` from
/// `/admin`, so `/ADMIN` meets the rule written for `/admin`, and a bypass written for
/// `/public/` lets only that spelling through.
#[tokio::test]
async fn case_variants_meet_the_rule_written_in_lower_case() {
    assert_rule_blocks(
        ADMIN_DENIED,
        &["/ADMIN", "/Admin/x", "/aDmIn", "/%41DMIN/users"],
    )
    .await;
    let site = Site::start(
        "[access]\ndefault_policy = \"deny\"\n\n[[access.rules]]\npath = \"^/public/\"\npolicy = \"bypass\"\n",
    )
    .await;
    assert_eq!(raw_status(&site.raw_get("/public/x").await), 200);
    assert_eq!(
        site.upstream.last_request().expect("forwarded").path,
        "/public/x"
    );
    for path in ["/PUBLIC/x", "/Public/x"] {
        site.assert_blocked(path).await;
    }
}

#[tokio::test]
async fn case_insensitive_rule_blocks_case_variants() {
    assert_rule_blocks(
        "[access]\ndefault_policy = \"bypass\"\n\n[[access.rules]]\npath = \"(?i)^/admin\"\npolicy = \"deny\"\n",
        &["/ADMIN", "/Admin/x", "/%41DMIN", "//aDmIn"],
    )
    .await;
}
