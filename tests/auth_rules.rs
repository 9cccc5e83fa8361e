//! Access rules applied by the running gateway: hosts, paths, methods, networks, subjects and
//! policies, the challenge for anonymous clients, first-match order, and path tricks that try
//! to slip past a rule.

mod common;

use common::auth::{Client, create_user, get, get_with, json, location, login, raw_status, send};
use common::{EchoUpstream, Gateway, http_client, raw_exchange};

async fn gateway(upstream: &EchoUpstream, access: &str) -> Gateway {
    Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml(access)
        .start()
        .await
}

/// Status of `GET path` as `client`, with `cookie` and extra headers, and whether the request
/// reached the upstream (which must be the case exactly when the status is 200).
async fn status_of(
    gw: &Gateway,
    upstream: &EchoUpstream,
    path: &str,
    cookie: Option<&str>,
    client: Client,
    headers: &[(&str, &str)],
) -> u16 {
    let before = upstream.requests();
    let resp = get_with(gw, path, cookie, client, headers).await;
    let status = resp.status().as_u16();
    let forwarded = upstream.requests() - before;
    assert_eq!(
        forwarded,
        usize::from(status == 200),
        "{path}: status {status} but forwarded {forwarded} time(s)"
    );
    status
}

// ---------------------------------------------------------------------------------------------
// The challenge

#[tokio::test]
async fn anonymous_browser_is_sent_to_login_with_the_original_target() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "[access]\ndefault_policy = \"one_factor\"\n").await;
    let resp = get(&gw, "/docs/a%20b?x=1&y=2", None, Client::Browser).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(
        location(&resp).as_deref(),
        Some("/.stepgate/login?rd=%2Fdocs%2Fa%2520b%3Fx%3D1%26y%3D2")
    );
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn anonymous_api_client_gets_401_with_login_url() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "[access]\ndefault_policy = \"one_factor\"\n").await;
    for accept in ["application/json", "*/*", "application/json, */*;q=0.1"] {
        let resp = send(
            http_client()
                .get(gw.url_for("/api/items?page=2"))
                .header("accept", accept),
        )
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
    let resp = send(http_client().get(gw.url_for("/x"))).await;
    assert_eq!(resp.status(), 401);
    // An XHR from a page is not a navigation: 401, not a redirect it cannot follow.
    let resp = send(
        http_client()
            .get(gw.url_for("/x"))
            .header("accept", common::auth::BROWSER_ACCEPT)
            .header("x-requested-with", "XMLHttpRequest"),
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn client_preferring_json_gets_401_not_a_redirect() {
    // The answer format follows the client's preference everywhere else (errors, portal):
    // a client that prefers JSON over HTML must get the JSON challenge too. A `fetch()` that
    // follows a 302 silently ends up with the login page's HTML and a 200.
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "[access]\ndefault_policy = \"one_factor\"\n").await;
    let resp = send(
        http_client()
            .get(gw.url_for("/api/items"))
            .header("accept", "application/json, text/html;q=0.5"),
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(json(resp).await["error"], "authentication_required");
}

#[tokio::test]
async fn login_through_challenge_then_reach_the_target() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "[access]\ndefault_policy = \"one_factor\"\n").await;
    create_user(&gw, "alice", "password123", &[]).await;
    let resp = get(&gw, "/reports?year=2025", None, Client::Browser).await;
    let login_url = location(&resp).expect("Location");
    let rd = url::Url::parse(&gw.url_for(&login_url))
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned())
        .expect("rd");
    let resp = common::auth::post_login(
        &gw,
        &[
            ("username", "alice"),
            ("password", "password123"),
            ("rd", &rd),
        ],
        Client::Browser,
        &[],
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp).as_deref(), Some("/reports?year=2025"));
    let cookie = common::auth::set_session_cookie(resp.headers()).expect("cookie");
    let resp = get(&gw, "/reports?year=2025", Some(&cookie), Client::Browser).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        upstream.last_request().expect("forwarded").path,
        "/reports?year=2025"
    );
}

// ---------------------------------------------------------------------------------------------
// Criteria

#[tokio::test]
async fn host_rules_match_exact_and_wildcard_names() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(
        &upstream,
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
    create_user(&gw, "alice", "password123", &[]).await;
    let cookie = login(&gw, "alice", "password123").await;
    let s = |host: &'static str, cookie: Option<&str>| {
        let cookie = cookie.map(str::to_owned);
        let gw = &gw;
        let upstream = &upstream;
        async move {
            status_of(
                gw,
                upstream,
                "/",
                cookie.as_deref(),
                Client::Api,
                &[("host", host)],
            )
            .await
        }
    };
    // Exact: case-insensitive, port and trailing dot ignored.
    assert_eq!(s("public.test", None).await, 200);
    assert_eq!(s("PUBLIC.Test:8080", None).await, 200);
    assert_eq!(s("public.test.", None).await, 200);
    assert_eq!(s("notpublic.test", None).await, 403);
    assert_eq!(s("public.test.evil", None).await, 403);
    // Wildcard: subdomains only, and only on a label boundary.
    assert_eq!(s("app.example.com", None).await, 401);
    assert_eq!(s("app.example.com", Some(&cookie)).await, 200);
    assert_eq!(s("a.b.example.com", Some(&cookie)).await, 200);
    assert_eq!(s("example.com", Some(&cookie)).await, 403);
    assert_eq!(s("evilexample.com", Some(&cookie)).await, 403);
    assert_eq!(s("app.example.com.evil.net", Some(&cookie)).await, 403);
    // Default deny, logged in or not.
    assert_eq!(s("other.test", None).await, 403);
    assert_eq!(s("other.test", Some(&cookie)).await, 403);
}

#[tokio::test]
async fn path_rules_match_the_canonical_path_without_query() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(
        &upstream,
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
    create_user(&gw, "alice", "password123", &[]).await;
    let cookie = login(&gw, "alice", "password123").await;
    let s = |path: &'static str, cookie: Option<&str>| {
        let cookie = cookie.map(str::to_owned);
        let gw = &gw;
        let upstream = &upstream;
        async move { status_of(gw, upstream, path, cookie.as_deref(), Client::Api, &[]).await }
    };
    assert_eq!(s("/public/logo.png", None).await, 200);
    assert_eq!(s("/favicon.ico", None).await, 200);
    assert_eq!(s("/favicon.ico.bak", None).await, 403);
    assert_eq!(s("/public", None).await, 403);
    // The query is not part of what path rules see.
    assert_eq!(s("/secret?x=/public/", None).await, 403);
    assert_eq!(s("/app", None).await, 401);
    assert_eq!(s("/app/x", Some(&cookie)).await, 200);
    assert_eq!(s("/application", Some(&cookie)).await, 403);
    assert_eq!(s("/", Some(&cookie)).await, 403);
}

#[tokio::test]
async fn method_rules_match_only_listed_methods() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(
        &upstream,
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
    let url = gw.url_for("/read/item");
    for (method, expected) in [
        ("GET", 200),
        ("HEAD", 200),
        ("POST", 403),
        ("PUT", 403),
        ("DELETE", 403),
        ("get", 403),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = send(
            http_client()
                .request(method.clone(), &url)
                .header("accept", "application/json"),
        )
        .await;
        assert_eq!(resp.status().as_u16(), expected, "{method}");
    }
}

#[tokio::test]
async fn network_rules_match_the_client_address() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(
        &upstream,
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
    assert_eq!(
        status_of(&gw, &upstream, "/local", None, Client::Api, &[]).await,
        200
    );
    assert_eq!(
        status_of(&gw, &upstream, "/office", None, Client::Api, &[]).await,
        403
    );
    // An untrusted peer cannot claim another address.
    assert_eq!(
        status_of(
            &gw,
            &upstream,
            "/office",
            None,
            Client::Api,
            &[("x-forwarded-for", "10.1.2.3")]
        )
        .await,
        403
    );
}

#[tokio::test]
async fn network_rules_use_forwarded_address_from_trusted_proxy() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(
        &upstream,
        r#"
[server]
trusted_proxies = ["127.0.0.1/32"]

[access]
default_policy = "deny"

[[access.rules]]
networks = "10.0.0.0/8"
policy = "bypass"
"#,
    )
    .await;
    let xff = |ip: &'static str| [("x-forwarded-for", ip)];
    assert_eq!(
        status_of(&gw, &upstream, "/", None, Client::Api, &xff("10.1.2.3")).await,
        200
    );
    assert_eq!(
        status_of(&gw, &upstream, "/", None, Client::Api, &xff("192.0.2.1")).await,
        403
    );
    // The peer itself (127.0.0.1) is not in the network.
    assert_eq!(
        status_of(&gw, &upstream, "/", None, Client::Api, &[]).await,
        403
    );
}

#[tokio::test]
async fn subject_rules_match_users_and_groups() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(
        &upstream,
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
    create_user(&gw, "alice", "password123", &["admins"]).await;
    create_user(&gw, "bob", "password123", &["users"]).await;
    create_user(&gw, "carol", "password123", &["auditors", "Admins"]).await;
    let alice = login(&gw, "alice", "password123").await;
    let bob = login(&gw, "bob", "password123").await;
    let carol = login(&gw, "carol", "password123").await;
    let s = |path: &'static str, cookie: Option<&str>| {
        let cookie = cookie.map(str::to_owned);
        let gw = &gw;
        let upstream = &upstream;
        async move { status_of(gw, upstream, path, cookie.as_deref(), Client::Api, &[]).await }
    };
    assert_eq!(s("/admin", Some(&alice)).await, 200);
    // Logged in but not allowed: 403.
    assert_eq!(s("/admin", Some(&bob)).await, 403);
    // Group names are compared exactly: "Admins" is not "admins".
    assert_eq!(s("/admin", Some(&carol)).await, 403);
    // Anonymous on a rule about subjects: asked to log in, not denied outright.
    assert_eq!(s("/admin", None).await, 401);
    // User names are compared case-insensitively.
    assert_eq!(s("/bob", Some(&bob)).await, 200);
    assert_eq!(s("/bob", Some(&carol)).await, 200);
    assert_eq!(s("/bob", Some(&alice)).await, 403);
    // Everyone logged in may see the rest.
    assert_eq!(s("/home", Some(&bob)).await, 200);

    let resp = get(&gw, "/admin", None, Client::Browser).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(
        location(&resp).as_deref(),
        Some("/.stepgate/login?rd=%2Fadmin")
    );
}

#[tokio::test]
async fn policies_bypass_one_factor_two_factor_and_deny() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(
        &upstream,
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
    create_user(&gw, "alice", "password123", &[]).await;
    let cookie = login(&gw, "alice", "password123").await;
    let s = |path: &'static str, cookie: Option<&str>| {
        let cookie = cookie.map(str::to_owned);
        let gw = &gw;
        let upstream = &upstream;
        async move { status_of(gw, upstream, path, cookie.as_deref(), Client::Api, &[]).await }
    };
    assert_eq!(s("/open", None).await, 200);
    assert_eq!(s("/open", Some(&cookie)).await, 200);
    assert_eq!(s("/member", None).await, 401);
    assert_eq!(s("/member", Some(&cookie)).await, 200);
    assert_eq!(s("/secure", None).await, 401);
    assert_eq!(s("/closed", None).await, 403);
    assert_eq!(s("/closed", Some(&cookie)).await, 403);
    assert_eq!(s("/elsewhere", Some(&cookie)).await, 403);

    // Logged in with a password only: a second factor is required first. API clients are told
    // where to verify; browsers are sent there (and on to enrolment when they have none).
    let resp = get(&gw, "/secure", Some(&cookie), Client::Api).await;
    assert_eq!(resp.status(), 401);
    let body = json(resp).await;
    assert_eq!(body["error"], "second_factor_required");
    assert_eq!(body["verify_url"], "/.stepgate/verify?rd=%2Fsecure");
    let resp = get(&gw, "/secure", Some(&cookie), Client::Browser).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(
        location(&resp).as_deref(),
        Some("/.stepgate/verify?rd=%2Fsecure")
    );
    // A denied anonymous browser is not sent to log in: nobody may pass.
    let resp = get(&gw, "/closed", None, Client::Browser).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        upstream
            .received()
            .iter()
            .filter(|r| r.path.starts_with("/secure"))
            .count(),
        0
    );
}

#[tokio::test]
async fn first_matching_rule_wins() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(
        &upstream,
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
    let s = |path: &'static str| {
        let gw = &gw;
        let upstream = &upstream;
        async move { status_of(gw, upstream, path, None, Client::Api, &[]).await }
    };
    assert_eq!(s("/shared/open/x").await, 200);
    assert_eq!(s("/shared/other").await, 403);
    assert_eq!(s("/order").await, 403);
    assert_eq!(s("/unlisted").await, 200);
}

#[tokio::test]
async fn rules_combine_criteria_with_and() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(
        &upstream,
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
    let host = [("host", "app.test")];
    let other = [("host", "other.test")];
    assert_eq!(
        status_of(&gw, &upstream, "/api/x", None, Client::Api, &host).await,
        200
    );
    assert_eq!(
        status_of(&gw, &upstream, "/api/x", None, Client::Api, &other).await,
        403
    );
    assert_eq!(
        status_of(&gw, &upstream, "/web/x", None, Client::Api, &host).await,
        403
    );
    let resp = send(
        http_client()
            .post(gw.url_for("/api/x"))
            .header("host", "app.test")
            .header("accept", "application/json"),
    )
    .await;
    assert_eq!(resp.status(), 403);
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

/// Sends `GET raw_path` byte for byte and returns the status; the path must not reach the
/// upstream and the answer must be 403 (the rule matched) or 400 (the path was refused).
async fn assert_blocked(gw: &Gateway, upstream: &EchoUpstream, raw_path: &str) {
    let before = upstream.requests();
    let request = format!("GET {raw_path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    let answer = raw_exchange(gw.addr(), request.as_bytes()).await;
    let status = raw_status(&answer);
    assert!(
        status == 403 || status == 400,
        "{raw_path}: {}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        upstream.requests(),
        before,
        "{raw_path} reached the upstream"
    );
}

async fn admin_gateway() -> (EchoUpstream, Gateway) {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, ADMIN_DENIED).await;
    (upstream, gw)
}

#[tokio::test]
async fn admin_rule_blocks_the_plain_path() {
    let (upstream, gw) = admin_gateway().await;
    for path in ["/admin", "/admin/", "/admin/users?id=1", "/administrator"] {
        assert_blocked(&gw, &upstream, path).await;
    }
    // Sanity: other paths pass.
    let answer = raw_exchange(
        gw.addr(),
        b"GET /public HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 200);
}

#[tokio::test]
async fn rejects_percent_encoded_letter_bypass() {
    let (upstream, gw) = admin_gateway().await;
    for path in [
        "/%61dmin",
        "/%61%64%6d%69%6e",
        "/%41dmin/../admin",
        "/adm%69n/x",
    ] {
        assert_blocked(&gw, &upstream, path).await;
    }
}

#[tokio::test]
async fn rejects_double_slash_bypass() {
    let (upstream, gw) = admin_gateway().await;
    for path in ["//admin", "///admin", "//admin//users"] {
        assert_blocked(&gw, &upstream, path).await;
    }
}

#[tokio::test]
async fn rejects_dot_segment_bypass() {
    let (upstream, gw) = admin_gateway().await;
    for path in [
        "/./admin",
        "/x/../admin",
        "/x/y/../../admin",
        "/public/../admin",
        "/../admin",
    ] {
        assert_blocked(&gw, &upstream, path).await;
    }
}

#[tokio::test]
async fn rejects_encoded_dot_segment_bypass() {
    let (upstream, gw) = admin_gateway().await;
    for path in [
        "/%2e/admin",
        "/%2e%2e/admin",
        "/x/%2e%2e/admin",
        "/x/%2E%2E/admin",
        "/x/.%2e/admin",
        "/x/..;/admin",
        "/.;/admin",
    ] {
        assert_blocked(&gw, &upstream, path).await;
    }
}

#[tokio::test]
async fn rejects_encoded_slash_bypass() {
    let (upstream, gw) = admin_gateway().await;
    for path in [
        "/admin%2f..",
        "/admin%2F..",
        "/%2fadmin",
        "/x%2f..%2fadmin",
        "/x/..%2fadmin",
    ] {
        assert_blocked(&gw, &upstream, path).await;
    }
}

#[tokio::test]
async fn rejects_backslash_bypass() {
    let (upstream, gw) = admin_gateway().await;
    for path in ["/x/..%5cadmin", "/%5cadmin", "/x\\..\\admin"] {
        assert_blocked(&gw, &upstream, path).await;
    }
}

#[tokio::test]
async fn rejects_control_character_bypass() {
    let (upstream, gw) = admin_gateway().await;
    for path in ["/%00/admin", "/x%00/../admin", "/%0aadmin"] {
        assert_blocked(&gw, &upstream, path).await;
    }
}

#[tokio::test]
async fn case_variant_is_not_matched_and_reaches_the_upstream_unchanged() {
    // Path regexes are case-sensitive: `/ADMIN` does not match `^/admin`. The upstream receives
    // exactly `/ADMIN`, so an application that treats paths case-insensitively needs a rule
    // written for that, e.g. `(?i)^/admin`.
    let (upstream, gw) = admin_gateway().await;
    let answer = raw_exchange(
        gw.addr(),
        b"GET /ADMIN HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 200);
    assert_eq!(upstream.last_request().expect("forwarded").path, "/ADMIN");
}

#[tokio::test]
async fn case_insensitive_rule_blocks_case_variants() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(
        &upstream,
        "[access]\ndefault_policy = \"bypass\"\n\n[[access.rules]]\npath = \"(?i)^/admin\"\npolicy = \"deny\"\n",
    )
    .await;
    for path in ["/ADMIN", "/Admin/x", "/%41DMIN", "//aDmIn"] {
        assert_blocked(&gw, &upstream, path).await;
    }
}
