//! The forward-auth endpoints asked directly, with requests shaped exactly as Traefik's
//! ForwardAuth sends them (Traefik itself cannot run here), and the adversarial cases: headers
//! from untrusted peers, malformed originals, spoofed targets, host tricks, Basic credentials.

mod common;

use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, COOKIE, LOCATION, WWW_AUTHENTICATE};
use stepgate::auth::audit::AuditKind;

use common::auth::{BROWSER_ACCEPT, PREFIX, create_user, login, raw_status, send};
use common::{EchoUpstream, Gateway, http_client, raw_exchange};

const FORWARD_AUTH: &str = "/.stepgate/authz/forward-auth";
const AUTH_REQUEST: &str = "/.stepgate/authz/auth-request";

fn access(trusted: &str) -> String {
    format!(
        r#"
[server]
trusted_proxies = [{trusted}]

[portal]
url = "https://auth.example.com"

[session]
cookie_domain = "example.com"

[regulation]
max_retries = 3

[access]
default_policy = "one_factor"

[[access.rules]]
path = "^/public(/|$)"
policy = "bypass"

[[access.rules]]
host = "app1.example.com"
path = "^/admin(/|$)"
policy = "deny"

[[access.rules]]
path = "^/api/"
policy = "one_factor"
allow_basic = true

[[access.rules]]
path = "^/secure(/|$)"
policy = "two_factor"
"#
    )
}

async fn gateway(trusted: &str) -> (EchoUpstream, Gateway) {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml(&access(trusted))
        .start()
        .await;
    create_user(&gw, "alice", "password123", &["users"]).await;
    (upstream, gw)
}

/// What Traefik sends: a GET to the address with the client's headers plus X-Forwarded-*.
fn traefik(gw: &Gateway, method: &str, host: &str, uri: &str) -> reqwest::RequestBuilder {
    http_client()
        .get(gw.url_for(FORWARD_AUTH))
        .header("X-Forwarded-Method", method)
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", host)
        .header("X-Forwarded-Uri", uri)
        .header("X-Forwarded-For", "203.0.113.9")
}

fn login_url(rd: &str) -> String {
    let rd: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    format!("https://auth.example.com{PREFIX}/login?rd={rd}")
}

#[tokio::test]
async fn traefik_browser_is_redirected_to_the_portal() {
    let (_u, gw) = gateway("\"127.0.0.1\"").await;
    let resp =
        send(traefik(&gw, "GET", "app1.example.com", "/x?y=1").header(ACCEPT, BROWSER_ACCEPT))
            .await;
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()[LOCATION],
        login_url("https://app1.example.com/x?y=1").as_str()
    );
    // A form POST is sent on with 303, so the browser fetches the portal with GET.
    let resp =
        send(traefik(&gw, "POST", "app1.example.com", "/x").header(ACCEPT, BROWSER_ACCEPT)).await;
    assert_eq!(resp.status(), 303);
}

#[tokio::test]
async fn traefik_api_clients_get_401() {
    let (_u, gw) = gateway("\"127.0.0.1\"").await;
    for headers in [
        vec![("accept", "application/json")],
        vec![
            ("accept", "text/html"),
            ("x-requested-with", "XMLHttpRequest"),
        ],
        vec![],
    ] {
        let mut b = traefik(&gw, "GET", "app1.example.com", "/x");
        for (k, v) in &headers {
            b = b.header(*k, *v);
        }
        let resp = send(b).await;
        assert_eq!(resp.status(), 401, "{headers:?}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["login_url"], login_url("https://app1.example.com/x"));
    }
}

#[tokio::test]
async fn traefik_allowed_request_carries_identity_headers() {
    let (_u, gw) = gateway("\"127.0.0.1\"").await;
    let cookie = login(&gw, "alice", "password123").await;
    let resp = send(traefik(&gw, "GET", "app2.example.com", "/x").header(COOKIE, &cookie)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["remote-user"], "alice");
    assert_eq!(resp.headers()["remote-groups"], "users");
    // Bypass: 200 and no identity, even with a session.
    let resp =
        send(traefik(&gw, "GET", "app2.example.com", "/public/a").header(COOKIE, &cookie)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("remote-user").is_none());
    // Deny.
    let resp =
        send(traefik(&gw, "GET", "app1.example.com", "/admin").header(COOKIE, &cookie)).await;
    assert_eq!(resp.status(), 403);
    // Two-factor rule, password-only session: to the verify page (401 for an API client).
    let resp =
        send(traefik(&gw, "GET", "app1.example.com", "/secure").header(COOKIE, &cookie)).await;
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    let verify = body["verify_url"].as_str().unwrap().to_owned();
    assert!(
        verify.starts_with(&format!("https://auth.example.com{PREFIX}/verify")),
        "{verify}"
    );
}

/// Copies of the session cookie planted by a site of the cookie domain, in the other spelling
/// (`__Host-`), count too: the proxy examples remove both spellings, eight copies in all, so
/// a request with more is refused whatever the rule, and the real cookie behind the planted
/// ones never reaches the application.
#[tokio::test]
async fn refuses_more_session_cookies_than_are_read_in_either_spelling() {
    let (_u, gw) = gateway("\"127.0.0.1\"").await;
    let cookie = login(&gw, "alice", "password123").await;
    let planted = ["__Host-stepgate_session=planted"; 8].join("; ");
    for path in ["/x", "/public/a"] {
        let resp = send(
            traefik(&gw, "GET", "app2.example.com", path)
                .header(COOKIE, format!("{planted}; {cookie}")),
        )
        .await;
        assert_eq!(resp.status(), 403, "{path}");
    }
    // Eight in all still pass.
    let seven = ["__Host-stepgate_session=planted"; 7].join("; ");
    let resp = send(
        traefik(&gw, "GET", "app2.example.com", "/x").header(COOKIE, format!("{seven}; {cookie}")),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

/// The proxy replaces only the exact spelling of the identity headers it copies from the
/// answer: a client's `Remote_User` or `Remote~User` would reach the application beside them,
/// so such a request is refused, on a bypass rule as on any other. The exact spelling is
/// the proxy's to replace and does not change the answer.
#[tokio::test]
async fn refuses_identity_header_look_alikes() {
    let (_u, gw) = gateway("\"127.0.0.1\"").await;
    let cookie = login(&gw, "alice", "password123").await;
    for (name, value) in [
        ("Remote_User", "admin"),
        ("remote~user", "admin"),
        ("Remote.Groups", "admins"),
        ("Remote!Email", "admin@example.com"),
        ("Remote_Auth_Time", "2099-01-01T00:00:00Z"),
    ] {
        for path in ["/public/a", "/x"] {
            let resp = send(
                traefik(&gw, "GET", "app2.example.com", path)
                    .header(COOKIE, &cookie)
                    .header(name, value),
            )
            .await;
            assert_eq!(resp.status(), 400, "{name} on {path}");
        }
    }
    let resp = send(
        traefik(&gw, "GET", "app2.example.com", "/x")
            .header(COOKIE, &cookie)
            .header("Remote-User", "admin"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["remote-user"], "alice");
}

/// The forward-auth decision covers the method a client asks the application to run instead
/// (the proxy passes the client's headers along): a `POST` overridden to `DELETE` meets a
/// rule for `DELETE`.
#[tokio::test]
async fn judges_the_method_a_client_asks_the_application_to_run() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml(&format!(
            "{}\n[[access.rules]]\npath = \"^/items\"\nmethods = [\"DELETE\"]\npolicy = \"deny\"\n",
            access("\"127.0.0.1\"")
        ))
        .start()
        .await;
    create_user(&gw, "alice", "password123", &["users"]).await;
    let cookie = login(&gw, "alice", "password123").await;
    let resp =
        send(traefik(&gw, "POST", "app2.example.com", "/items/7").header(COOKIE, &cookie)).await;
    assert_eq!(resp.status(), 200);
    let resp = send(
        traefik(&gw, "POST", "app2.example.com", "/items/7")
            .header(COOKIE, &cookie)
            .header("X-HTTP-Method-Override", "DELETE"),
    )
    .await;
    assert_eq!(resp.status(), 403);
    let resp = send(
        http_client()
            .get(gw.url_for(AUTH_REQUEST))
            .header("X-Original-URL", "https://app2.example.com/items/7")
            .header("X-Original-Method", "POST")
            .header("X-HTTP-Method", "DELETE")
            .header(COOKIE, &cookie),
    )
    .await;
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn refuses_forwarding_headers_from_untrusted_peer() {
    let (_u, gw) = gateway("\"10.0.0.1\"").await;
    let cookie = login(&gw, "alice", "password123").await;
    let resp = send(traefik(&gw, "GET", "app1.example.com", "/public/x")).await;
    assert_eq!(resp.status(), 403);
    let resp = send(traefik(&gw, "GET", "app1.example.com", "/x").header(COOKIE, &cookie)).await;
    assert_eq!(resp.status(), 403);
    let resp = send(
        http_client()
            .get(gw.url_for(AUTH_REQUEST))
            .header("X-Original-URL", "https://app1.example.com/public/x")
            .header("X-Original-Method", "GET"),
    )
    .await;
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn auth_request_challenges_with_401_and_location() {
    let (_u, gw) = gateway("\"127.0.0.1\"").await;
    let ask = |url: &str| {
        http_client()
            .get(gw.url_for(AUTH_REQUEST))
            .header("X-Original-URL", url)
            .header("X-Original-Method", "GET")
            .header(ACCEPT, BROWSER_ACCEPT)
    };
    let resp = send(ask("https://app1.example.com/x")).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()[LOCATION],
        login_url("https://app1.example.com/x").as_str()
    );
    let resp = send(ask("https://app1.example.com/public/x")).await;
    assert_eq!(resp.status(), 200);
    let cookie = login(&gw, "alice", "password123").await;
    let resp = send(ask("https://app1.example.com/secure/x").header(COOKIE, &cookie)).await;
    assert_eq!(resp.status(), 401);
    let to = resp.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(
        to.starts_with(&format!("https://auth.example.com{PREFIX}/verify?rd=")),
        "{to}"
    );
}

#[tokio::test]
async fn rejects_malformed_original_url() {
    let (_u, gw) = gateway("\"127.0.0.1\"").await;
    for url in [
        "https://app1.example.com/public/%zz",
        "https://app1.example.com/public/..%2f..%2fadmin",
        "/public/x",
        "https://user@app1.example.com/public/x",
        "javascript://app1.example.com/public",
        // A fragment would be cut off by parsing: judged as /public, forwarded whole.
        "https://app1.example.com/public#/../admin",
        "https://app1.example.com/public/x?a#b",
    ] {
        let resp = send(
            http_client()
                .get(gw.url_for(AUTH_REQUEST))
                .header("X-Original-URL", url)
                .header("X-Original-Method", "GET"),
        )
        .await;
        assert_eq!(resp.status(), 400, "{url}");
    }
    // Empty and non-UTF-8 values, written byte for byte.
    for value in [&b""[..], b"https://app1.example.com/public/\xff\xfe"] {
        let mut request = format!(
            "GET {AUTH_REQUEST} HTTP/1.1\r\nHost: {}\r\nX-Original-Method: GET\r\nConnection: close\r\nX-Original-URL: ",
            gw.addr()
        )
        .into_bytes();
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n\r\n");
        let answer = raw_exchange(gw.addr(), &request).await;
        assert_eq!(
            raw_status(&answer),
            400,
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
}

#[tokio::test]
async fn rejects_dot_segments() {
    let (_u, gw) = gateway("\"127.0.0.1\"").await;
    // `/public/%2e%2e/admin` is `/admin` to an application that resolves it, and under
    // `/public/` to a router matching the raw path: either way not what a rule could judge.
    let resp = send(
        http_client()
            .get(gw.url_for(AUTH_REQUEST))
            .header(
                "X-Original-URL",
                "https://app1.example.com/public/%2e%2e/admin",
            )
            .header("X-Original-Method", "GET"),
    )
    .await;
    assert_eq!(resp.status(), 400);
    for path in ["/public/./../admin", "/admin/../public/x"] {
        let resp = send(traefik(&gw, "GET", "app1.example.com", path)).await;
        assert_eq!(resp.status(), 400, "{path}");
    }
}

#[tokio::test]
async fn refuses_client_claims_of_another_target() {
    let (_u, gw) = gateway("\"127.0.0.1\"").await;
    let resp = send(traefik(&gw, "GET", "app1.example.com", "/public/x")).await;
    assert_eq!(resp.status(), 200);
    for (name, value) in [
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X_Original_URI", "/admin"),
        ("X-Original-Method", "DELETE"),
    ] {
        let resp =
            send(traefik(&gw, "GET", "app1.example.com", "/public/x").header(name, value)).await;
        assert_eq!(resp.status(), 403, "{name}");
    }
    let resp = send(
        traefik(&gw, "GET", "app1.example.com", "/public/x")
            .header("X-Original-URL", "https://app1.example.com/public/x"),
    )
    .await;
    assert_eq!(resp.status(), 200, "a claim that agrees");
    let resp = send(
        http_client()
            .get(gw.url_for(AUTH_REQUEST))
            .header("X-Original-URL", "https://app1.example.com/public/x")
            .header("X-Original-Method", "GET")
            .header("X-Forwarded-Uri", "/admin"),
    )
    .await;
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn rejects_missing_or_doubled_forwarded_headers() {
    let (_u, gw) = gateway("\"127.0.0.1\"").await;
    let full = [
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "app1.example.com"),
        ("X-Forwarded-Uri", "/public/x"),
    ];
    for skip in 0..full.len() {
        let mut b = http_client().get(gw.url_for(FORWARD_AUTH));
        for (i, (k, v)) in full.iter().enumerate() {
            if i != skip {
                b = b.header(*k, *v);
            }
        }
        let status = send(b).await.status();
        assert_eq!(status, 400, "without {}", full[skip].0);
    }
    // A method with a lower-case letter is refused as a proxied request's is, bypass path or not.
    for method in ["get", "Delete"] {
        let resp = send(traefik(&gw, method, "app1.example.com", "/public/x")).await;
        assert_eq!(resp.status(), 400, "{method}");
    }
    // A fragment in the reported target is refused, not cut off.
    for uri in ["/public#/../admin", "/public/x?a#b"] {
        let resp = send(traefik(&gw, "GET", "app1.example.com", uri)).await;
        assert_eq!(resp.status(), 400, "{uri}");
    }
    // A spoofed second X-Forwarded-Uri naming a bypass path is not picked: the request fails.
    let resp = send(
        traefik(&gw, "GET", "app1.example.com", "/private").header("X-Forwarded-Uri", "/public/x"),
    )
    .await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn rejects_host_case_and_trailing_dot_tricks() {
    let (_u, gw) = gateway("\"127.0.0.1\"").await;
    let cookie = login(&gw, "alice", "password123").await;
    for host in [
        "APP1.EXAMPLE.COM",
        "App1.Example.Com.",
        "app1.example.com:443",
    ] {
        let resp = send(traefik(&gw, "GET", host, "/admin").header(COOKIE, &cookie)).await;
        assert_eq!(resp.status(), 403, "{host}");
    }
    // A port that is not a number leaves no single reading of the host (proxies route
    // `app1.example.com:x` to app1; no rule for app1 would match it): refused, never judged.
    for host in [
        "app1.example.com:.example.com",
        "app1.example.com:x",
        "app1.example.com:99999",
        "app1.example.com:",
    ] {
        let resp = send(traefik(&gw, "GET", host, "/admin").header(COOKIE, &cookie)).await;
        assert_eq!(resp.status(), 400, "{host}");
        let resp = send(
            http_client()
                .get(gw.url_for(AUTH_REQUEST))
                .header("X-Original-URL", format!("https://{host}/admin"))
                .header("X-Original-Method", "GET")
                .header(COOKIE, &cookie),
        )
        .await;
        assert_eq!(resp.status(), 400, "{host}");
    }
    // Nor does a path parameter take `/admin` out of its rule.
    for uri in ["/admin;x", "/admin;x/users", "/admin%3Bx", "/;x/admin"] {
        let resp = send(traefik(&gw, "GET", "app1.example.com", uri).header(COOKIE, &cookie)).await;
        assert_eq!(resp.status(), 403, "{uri}");
    }
    // A host outside the cookie domain cannot be signed in to: refused, even on a bypass path.
    for host in ["evil.test", "example.com.evil.test", "app1.example.comx"] {
        let resp = send(traefik(&gw, "GET", host, "/public/x")).await;
        assert_eq!(resp.status(), 403, "{host}");
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn basic_credentials_on_allow_basic_rule() {
    let (_u, gw) = gateway("\"127.0.0.1\"").await;
    let resp = send(
        traefik(&gw, "GET", "app1.example.com", "/api/items")
            .header(AUTHORIZATION, basic("alice", "password123")),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["remote-user"], "alice");
    // Without credentials, API clients are asked for them.
    let resp = send(traefik(&gw, "GET", "app1.example.com", "/api/items")).await;
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=")
    );
}

#[tokio::test]
async fn rejects_basic_credentials_outside_allow_basic_rules() {
    let (_u, gw) = gateway("\"127.0.0.1\"").await;
    for path in ["/secure/x", "/other"] {
        let resp = send(
            traefik(&gw, "GET", "app1.example.com", path)
                .header(AUTHORIZATION, basic("alice", "password123")),
        )
        .await;
        assert_eq!(resp.status(), 401, "{path}");
        assert!(resp.headers().get("remote-user").is_none());
    }
}

#[tokio::test]
async fn basic_credentials_are_regulated() {
    let (_u, gw) = gateway("\"127.0.0.1\"").await;
    for _ in 0..3 {
        let resp = send(
            traefik(&gw, "GET", "app1.example.com", "/api/items")
                .header(AUTHORIZATION, basic("alice", "wrong")),
        )
        .await;
        assert_eq!(resp.status(), 401);
        assert!(resp.headers().contains_key(WWW_AUTHENTICATE));
    }
    // Banned now: even the right password is refused.
    let resp = send(
        traefik(&gw, "GET", "app1.example.com", "/api/items")
            .header(AUTHORIZATION, basic("alice", "password123")),
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("remote-user").is_none());

    // The trail says where the attempts came from.
    let trail = gw.app().store.recent_audit(50).expect("audit trail");
    let basic_events = |kind: AuditKind| {
        trail
            .iter()
            .filter(|e| e.kind == kind && e.username.as_deref() == Some("alice"))
            .inspect(|e| {
                assert_eq!(
                    e.detail.as_deref(),
                    Some("basic credentials (forward-auth)"),
                    "{e:?}"
                )
            })
            .count()
    };
    assert_eq!(basic_events(AuditKind::LoginFailed), 3, "{trail:#?}");
    assert!(basic_events(AuditKind::Banned) >= 1, "{trail:#?}");
}
