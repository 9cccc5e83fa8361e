//! Which upstream a request reaches (by Host), what never reaches any upstream (the portal
//! prefix, ambiguous paths), and the canonical path the upstream receives.

mod common;

use common::{EchoUpstream, Gateway, http_client, raw_exchange, send_raw_path};

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        )
    })
}

#[tokio::test]
async fn routes_by_exact_host_wildcard_and_default() {
    let exact = EchoUpstream::start().await;
    let wildcard = EchoUpstream::start().await;
    let default = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream_for_host("a.test", &exact.url())
        .upstream_for_host("*.example.com", &wildcard.url())
        .upstream(&default.url())
        .start()
        .await;

    // (Host sent, upstream expected to answer, path used to recognise the request)
    let cases = [
        ("a.test", &exact, "/exact"),
        ("A.TEST", &exact, "/exact-upper-case"),
        ("a.test:8080", &exact, "/exact-with-port"),
        // A trailing dot names the same host, for routing as for the access rules.
        ("a.test.", &exact, "/exact-trailing-dot"),
        ("a.test.:8080", &exact, "/exact-trailing-dot-port"),
        ("app.example.com.", &wildcard, "/wildcard-trailing-dot"),
        ("app.example.com", &wildcard, "/wildcard"),
        (
            "x.y.EXAMPLE.com:443",
            &wildcard,
            "/wildcard-deep-upper-port",
        ),
        // The wildcard needs a label before the domain: the bare domain is not covered.
        ("example.com", &default, "/bare-domain"),
        ("a.test.evil.net", &default, "/suffix-trick"),
        ("other.test", &default, "/unknown"),
    ];
    for (host, upstream, path) in cases {
        let before = [exact.requests(), wildcard.requests(), default.requests()];
        let resp = send_raw_path(gw.addr(), "GET", path, &[("Host", host)]).await;
        assert_eq!(resp.status(), 200, "Host {host}");
        let seen = upstream
            .last_request()
            .unwrap_or_else(|| panic!("Host {host}: expected upstream saw nothing"));
        assert_eq!(seen.path, path, "Host {host} went to the wrong upstream");
        let after = [exact.requests(), wildcard.requests(), default.requests()];
        let total_before: usize = before.iter().sum();
        let total_after: usize = after.iter().sum();
        assert_eq!(
            total_after,
            total_before + 1,
            "Host {host}: exactly one upstream request"
        );
        // The client's Host is preserved by default.
        assert_eq!(seen.header_all("host"), [host]);
    }
    assert_eq!(exact.requests(), 5);
    assert_eq!(wildcard.requests(), 3);
    assert_eq!(default.requests(), 3);
}

/// A rule that lets one host through must never let a request reach another upstream: the
/// rules and the routing read the same host, trailing dot and port included.
#[tokio::test]
async fn a_host_rule_covers_only_the_upstream_of_that_host() {
    let public = EchoUpstream::start().await;
    let protected = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream_for_host("public.test", &public.url())
        .upstream(&protected.url())
        .extra_toml(
            r#"
[access]
default_policy = "one_factor"

[[access.rules]]
host = "public.test"
policy = "bypass"
"#,
        )
        .start()
        .await;
    for host in ["public.test", "public.test.", "PUBLIC.test.:80"] {
        let resp = send_raw_path(gw.addr(), "GET", "/open", &[("Host", host)]).await;
        assert_eq!(resp.status(), 200, "Host {host}");
        assert_eq!(public.last_request().map(|r| r.path), Some("/open".into()));
    }
    // Any other reading of the host is the protected application's, and needs a login.
    for host in ["public.test..", "other.test", "public.test.evil"] {
        let resp = send_raw_path(gw.addr(), "GET", "/secret", &[("Host", host)]).await;
        assert_ne!(resp.status(), 200, "Host {host}");
        assert!(resp.status().is_client_error() || resp.status().is_redirection());
    }
    assert_eq!(public.requests(), 3);
    assert_eq!(protected.requests(), 0);
}

/// A host with user information (`user@admin.test`) or a port that is not a number
/// (`admin.test:x`) has no single reading: it must not read as another host for the rules than
/// for the upstream (or a proxy in front), so it is refused, in the Host header and in an
/// absolute-form target alike.
#[tokio::test]
async fn a_malformed_host_is_refused() {
    let admin = EchoUpstream::start().await;
    let other = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream_for_host("admin.test", &admin.url())
        .upstream(&other.url())
        .extra_toml(
            r#"
[access]
default_policy = "bypass"

[[access.rules]]
host = "admin.test"
policy = "deny"
"#,
        )
        .start()
        .await;
    for host in [
        "user@admin.test",
        "admin.test@other.test",
        "@admin.test",
        "admin.test:x",
        "admin.test:.other.test",
        "admin.test:65536",
        "admin..test",
    ] {
        let resp = send_raw_path(gw.addr(), "GET", "/x", &[("Host", host)]).await;
        assert_eq!(resp.status(), 400, "Host {host}");
    }
    let answer = raw_exchange(
        gw.addr(),
        b"GET http://user@admin.test/x HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A Host that is not text, or a second Host header: which host is meant is unclear.
    for request in [
        &b"GET /x HTTP/1.1\r\nHost: admin.test\xff\r\nConnection: close\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nHost: ex\xc3\xa4mple.test\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: other.test\r\nHost: admin.test\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw_exchange(gw.addr(), request).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert_eq!(admin.requests() + other.requests(), 0);
    // The rule and the routing still work for the plain host.
    let resp = send_raw_path(gw.addr(), "GET", "/x", &[("Host", "admin.test")]).await;
    assert_eq!(resp.status(), 403);
    let resp = send_raw_path(gw.addr(), "GET", "/x", &[("Host", "other.test")]).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn first_matching_host_wins_in_configuration_order() {
    let first = EchoUpstream::start().await;
    let second = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream_for_host("*.example.com", &first.url())
        .upstream_for_host("app.example.com", &second.url())
        .start()
        .await;
    let resp = send_raw_path(gw.addr(), "GET", "/x", &[("Host", "app.example.com")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(first.requests(), 1);
    assert_eq!(second.requests(), 0);
}

#[tokio::test]
async fn unknown_host_without_default_is_misdirected_and_not_forwarded() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream_for_host("a.test", &upstream.url())
        .start()
        .await;
    for host in ["b.test", "a.test.b.test", "xa.test"] {
        let resp = send_raw_path(
            gw.addr(),
            "GET",
            "/x",
            &[("Host", host), ("Accept", "application/json")],
        )
        .await;
        assert_eq!(resp.status(), 421, "Host {host}");
        assert_eq!(json(resp.body())["error"], "unknown_host");
    }
    assert_eq!(upstream.requests(), 0);
    // The configured host still works.
    let resp = send_raw_path(gw.addr(), "GET", "/x", &[("Host", "a.test")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn without_upstreams_only_the_portal_and_forward_auth_answer() {
    let gw = Gateway::builder()
        .extra_toml("[server]\ntrusted_proxies = [\"127.0.0.1\"]\n")
        .start()
        .await;
    for (method, path) in [("GET", "/app/x?y=1"), ("POST", "/form"), ("POST", "/")] {
        let resp = send_raw_path(
            gw.addr(),
            method,
            path,
            &[("Host", "app.test"), ("Accept", "application/json")],
        )
        .await;
        assert_eq!(resp.status(), 421, "{method} {path}");
        assert_eq!(json(resp.body())["error"], "unknown_host");
    }
    // The root leads to the portal: a login without a return address, and the pages' links
    // back to the start, end there rather than at an error.
    for method in ["GET", "HEAD"] {
        let resp = send_raw_path(gw.addr(), method, "/", &[("Host", "auth.example.test")]).await;
        assert_eq!(resp.status(), 303, "{method}");
        assert_eq!(resp.headers()["location"], "/.stepgate/settings");
    }
    let health = send_raw_path(
        gw.addr(),
        "GET",
        "/.stepgate/healthz",
        &[("Host", "app.test")],
    )
    .await;
    assert_eq!(health.status(), 200);
    // The forward-auth endpoint decides as usual (the test gateway's default policy is bypass).
    let authz = send_raw_path(
        gw.addr(),
        "GET",
        "/.stepgate/authz/auth-request",
        &[
            ("Host", "auth.test"),
            ("X-Original-URL", "http://app.test/private"),
            ("X-Original-Method", "GET"),
        ],
    )
    .await;
    assert_eq!(authz.status(), 200);
}

#[tokio::test]
async fn preserve_host_false_sends_the_upstreams_own_authority() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .upstream_extra("preserve_host = false")
        .start()
        .await;
    let resp = send_raw_path(gw.addr(), "GET", "/x", &[("Host", "public.test")]).await;
    assert_eq!(resp.status(), 200);
    let seen = upstream.last_request().expect("forwarded");
    assert_eq!(seen.header_all("host"), [upstream.addr().to_string()]);
    assert_eq!(seen.header("x-forwarded-host"), Some("public.test"));
}

#[tokio::test]
async fn portal_healthz_answers_json_without_reaching_upstream() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    let resp = http_client()
        .get(gw.url_for("/.stepgate/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn portal_prefix_is_never_forwarded() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    for path in [
        "/.stepgate",
        "/.stepgate/",
        "/.stepgate/anything",
        "/.stepgate/nothing-here?rd=/x",
        "/.stepgate/healthz/extra",
    ] {
        let resp = send_raw_path(gw.addr(), "GET", path, &[("Accept", "application/json")]).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(json(resp.body())["error"], "not_found", "{path}");
    }
    // A known path asked with another method: 405 with the methods it answers (RFC 9110).
    for (method, path, allow) in [
        ("POST", "/.stepgate/healthz", "GET, HEAD"),
        ("PUT", "/.stepgate/login", "GET, HEAD, POST"),
        ("GET", "/.stepgate/settings/totp/begin", "POST"),
    ] {
        let resp = send_raw_path(gw.addr(), method, path, &[]).await;
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
    }
    assert_eq!(upstream.requests(), 0, "a portal path reached the upstream");

    // Only whole segments belong to the portal.
    let resp = send_raw_path(gw.addr(), "GET", "/.stepgateway/x", &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn rejects_portal_prefix_bypass_through_path_tricks() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    // Each of these is canonically /.stepgate/healthz: the portal answers, the upstream never hears.
    for path in [
        "/x/../.stepgate/healthz",
        "/x/./../.stepgate/./healthz",
        "//.stepgate//healthz",
        "/%2estepgate/healthz",
        "/%2Estepgate/%68ealthz",
    ] {
        let resp = send_raw_path(gw.addr(), "GET", path, &[]).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(json(resp.body())["status"], "ok", "{path}");
    }
    for path in ["/x/../.stepgate/secret", "/%2estepgate/secret"] {
        let resp = send_raw_path(gw.addr(), "GET", path, &[]).await;
        assert_eq!(resp.status(), 404, "{path}");
    }
    assert_eq!(upstream.requests(), 0, "a portal path reached the upstream");
}

#[tokio::test]
async fn rejects_ambiguous_paths_before_the_upstream() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    let paths = [
        "/%2e%2e/etc/passwd",
        "/%2E%2E/etc/passwd",
        "/a%2fb",
        "/a%2Fb",
        "/a%5cb",
        "/a\\b",
        "/%00",
        "/..%2f",
        "/%c3%28",
        "/../x",
        "/a/../../x",
        "/a/..;/x",
        "/%zz",
    ];
    for path in paths {
        // Written byte for byte: no client library gets to normalise the path first.
        let request = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(gw.addr(), request.as_bytes()).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 400"),
            "{path}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert_eq!(
        upstream.requests(),
        0,
        "an ambiguous path reached the upstream: {:?}",
        upstream.received()
    );
}

#[tokio::test]
async fn rejects_ambiguous_paths_with_json_reason() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    let resp = send_raw_path(
        gw.addr(),
        "GET",
        "/%2e%2e/etc/passwd",
        &[("Accept", "application/json")],
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(json(resp.body())["error"], "invalid_path");
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn upstream_receives_the_canonical_path() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    let cases = [
        ("/%61dmin", "/admin"),
        ("//a///b", "/a/b"),
        ("/a/./b/../c", "/a/c"),
        ("/%7euser/%41", "/~user/A"),
        // The query is forwarded untouched.
        ("/%61dmin?x=%2F&y=..", "/admin?x=%2F&y=.."),
        // Reserved escapes stay encoded, hex upper-cased.
        ("/a%3bb", "/a%3Bb"),
        ("/trailing/", "/trailing/"),
    ];
    for (sent, expected) in cases {
        let resp = send_raw_path(gw.addr(), "GET", sent, &[]).await;
        assert_eq!(resp.status(), 200, "{sent}");
        let seen = upstream.last_request().expect("forwarded");
        assert_eq!(seen.path, expected, "{sent}");
    }
}
