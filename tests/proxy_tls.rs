//! The HTTPS listener: ALPN (HTTP/2 and HTTP/1.1) and the plain-HTTP redirect.

mod common;

use common::gateway::GatewayBuilder;
use common::{EchoUpstream, Gateway, TestCa, http_client, send_raw_path};

/// A port nothing listens on right now, for configurations where the test must know the HTTPS
/// port before the gateway starts.
fn free_port() -> u16 {
    common::ports::reserve()
}

/// A gateway with an HTTPS listener (certificate from `ca`) in front of an echo upstream.
struct Site {
    ca: TestCa,
    upstream: EchoUpstream,
    gw: Gateway,
}

impl Site {
    /// `configure` adds to the builder (extra TOML, no plain listener, ...).
    async fn start(configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder) -> Site {
        let ca = TestCa::new();
        let upstream = EchoUpstream::start().await;
        let gw = configure(Gateway::builder().upstream(&upstream.url()).tls(&ca))
            .start()
            .await;
        Site { ca, upstream, gw }
    }

    /// GET `path` on the HTTPS listener with `client` (one trusting the test CA).
    async fn get(&self, client: &reqwest::Client, path: &str) -> reqwest::Response {
        client
            .get(self.gw.https_url_for(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} over TLS: {e}"))
    }
}

#[tokio::test]
async fn https_listener_negotiates_http2_by_alpn() {
    let site = Site::start(|b| b).await;
    let resp = site.get(&site.ca.reqwest_client(), "/over-h2?x=1").await;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["path"], "/over-h2?x=1");
    let seen = site.upstream.last_request().expect("forwarded");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    // The h2 authority becomes the upstream's Host.
    assert_eq!(seen.header_all("host"), [site.gw.https_addr().to_string()]);
}

#[tokio::test]
async fn https_listener_serves_http1() {
    let site = Site::start(|b| b).await;
    let client = site
        .ca
        .reqwest_builder()
        .http1_only()
        .build()
        .expect("client");
    let resp = site.get(&client, "/over-h1").await;
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
    let seen = site.upstream.last_request().expect("forwarded");
    assert_eq!(seen.path, "/over-h1");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));

    // The certificate is also valid for the name.
    let client = site
        .ca
        .reqwest_builder()
        .resolve("localhost", site.gw.https_addr())
        .build()
        .expect("client");
    let resp = client
        .get(format!("{}/by-name", site.gw.https_url()))
        .send()
        .await
        .expect("request by name");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn https_listener_serves_the_portal_over_h2() {
    let site = Site::start(GatewayBuilder::without_http).await;
    let resp = site
        .get(&site.ca.reqwest_client(), "/.stepgate/healthz")
        .await;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(site.upstream.requests(), 0);
}

#[tokio::test]
async fn redirects_plain_http_to_https_with_308() {
    let https_port = free_port();
    let site = Site::start(|b| {
        b.extra_toml(&format!(
            "[server]\ntls_listen = \"127.0.0.1:{https_port}\"\nredirect_http_to_https = true"
        ))
    })
    .await;
    let (gw, upstream) = (&site.gw, &site.upstream);
    assert_eq!(gw.https_addr().port(), https_port);

    let resp = send_raw_path(
        gw.addr(),
        "GET",
        "/some/path?q=1&r=%2F",
        &[("Host", "app.test:8080")],
    )
    .await;
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://app.test:{https_port}/some/path?q=1&r=%2F").as_str()
    );
    // POST keeps its method and body under a 308.
    let resp = send_raw_path(gw.addr(), "POST", "/form", &[("Host", "app.test")]).await;
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://app.test:{https_port}/form").as_str()
    );
    assert_eq!(upstream.requests(), 0, "plain HTTP reached the upstream");

    // Health checks keep working over plain HTTP.
    let resp = http_client()
        .get(gw.url_for("/.stepgate/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(resp.status(), 200);

    // And the HTTPS side serves normally.
    let resp = site.get(&site.ca.reqwest_client(), "/secure").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.requests(), 1);
}

/// A gateway's own pages are served on any host over HTTPS, so plain HTTP to them is redirected
/// on any host, even with no upstream at all (a forward-auth-only gateway).
#[tokio::test]
async fn https_redirect_of_the_portal_needs_no_upstream() {
    let ca = TestCa::new();
    let gw = Gateway::builder()
        .tls(&ca)
        .extra_toml("[server]\nredirect_http_to_https = true")
        .start()
        .await;
    let port = gw.https_addr().port();
    let resp = send_raw_path(
        gw.addr(),
        "GET",
        "/.stepgate/settings",
        &[("Host", "auth.example.test")],
    )
    .await;
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://auth.example.test:{port}/.stepgate/settings").as_str()
    );
    let resp = send_raw_path(gw.addr(), "GET", "/app", &[("Host", "auth.example.test")]).await;
    assert_eq!(resp.status(), 421);
}

/// With the redirect on, HTTPS answers (the portal's and the application's) tell browsers to
/// keep to HTTPS; an application's own value is kept; plain HTTP answers never carry it, and
/// without the redirect nothing is added.
#[tokio::test]
async fn https_only_sites_send_strict_transport_security() {
    let site = Site::start(|b| b.extra_toml("[server]\nredirect_http_to_https = true")).await;
    let client = site.ca.reqwest_client();
    for path in ["/.stepgate/healthz", "/app/page", "/.stepgate/login"] {
        let resp = site.get(&client, path).await;
        assert_eq!(
            resp.headers()
                .get("strict-transport-security")
                .map(|v| v.to_str().expect("ascii")),
            Some("max-age=31536000"),
            "{path}"
        );
    }
    // The application's own policy wins.
    let resp = site
        .get(&client, "/__status?code=200&sts=max-age%3D60")
        .await;
    assert_eq!(
        resp.headers()
            .get_all("strict-transport-security")
            .iter()
            .count(),
        1
    );
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=60");
    // Plain HTTP: never.
    let resp = http_client()
        .get(site.gw.url_for("/.stepgate/healthz"))
        .send()
        .await
        .expect("healthz");
    assert!(resp.headers().get("strict-transport-security").is_none());

    let plain = Site::start(|b| b).await;
    let resp = plain.get(&plain.ca.reqwest_client(), "/app/page").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("strict-transport-security").is_none());
}

#[tokio::test]
async fn https_redirect_names_the_port_actually_bound() {
    // With `tls_listen = "127.0.0.1:0"` the system picks the HTTPS port; the redirect must point
    // at that port, not at the configured 0.
    let site = Site::start(|b| b.extra_toml("[server]\nredirect_http_to_https = true")).await;
    let resp = send_raw_path(site.gw.addr(), "GET", "/x", &[("Host", "app.test")]).await;
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://app.test:{}/x", site.gw.https_addr().port()).as_str()
    );
}

/// The redirect never carries user information or anything but a host and port, and names only
/// hosts the gateway serves.
#[tokio::test]
async fn https_redirect_names_only_plain_hosts_the_gateway_serves() {
    let ca = TestCa::new();
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream_for_host("app.test", &upstream.url())
        .tls(&ca)
        .extra_toml("[server]\nredirect_http_to_https = true")
        .start()
        .await;
    let port = gw.https_addr().port();

    let resp = send_raw_path(gw.addr(), "GET", "/x", &[("Host", "app.test")]).await;
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://app.test:{port}/x").as_str()
    );
    // A trailing dot names the same host.
    let resp = send_raw_path(gw.addr(), "GET", "/x", &[("Host", "app.test.")]).await;
    assert_eq!(resp.status(), 308);

    // A host no upstream serves: the same answer as over HTTPS, no redirect.
    let resp = send_raw_path(gw.addr(), "GET", "/x", &[("Host", "evil.test")]).await;
    assert_eq!(resp.status(), 421);
    assert!(resp.headers().get("location").is_none());

    // User information, in the Host header or in an absolute-form target, is refused.
    for host in [
        "app.test@evil.test",
        "user@app.test",
        "app.test:1@evil.test",
    ] {
        let resp = send_raw_path(gw.addr(), "GET", "/x", &[("Host", host)]).await;
        assert_eq!(resp.status(), 400, "{host}");
        assert!(resp.headers().get("location").is_none(), "{host}");
    }
    let answer = common::raw_exchange(
        gw.addr(),
        b"GET http://app.test@evil.test/x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn rejects_plain_http_client_on_tls_listener() {
    let site = Site::start(|b| b).await;
    let answer = common::raw_exchange(
        site.gw.https_addr(),
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 2"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(site.upstream.requests(), 0);
}
