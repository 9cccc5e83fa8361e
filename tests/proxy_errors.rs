//! Failures the gateway answers itself: unreachable or slow upstreams, oversized headers.

mod common;

use std::time::Duration;

use common::{EchoUpstream, Gateway, http_client, raw_exchange, refused_addr, send_raw_path};

/// Bounds every wait in this file; a passing run never comes near it.
const DEADLINE: Duration = Duration::from_secs(20);

/// A gateway whose upstream refuses connections, and that upstream's address.
async fn gateway_with_refused_upstream() -> (Gateway, std::net::SocketAddr) {
    let dead = refused_addr();
    let gw = Gateway::builder()
        .upstream(&format!("http://{dead}"))
        .upstream_extra("connect_timeout = \"2s\"")
        .start()
        .await;
    (gw, dead)
}

#[tokio::test]
async fn refused_upstream_answers_502_json_without_internals() {
    let (gw, dead) = gateway_with_refused_upstream().await;
    let resp = tokio::time::timeout(
        DEADLINE,
        http_client()
            .get(gw.url_for("/app"))
            .header("accept", "application/json")
            .send(),
    )
    .await
    .expect("a refused upstream must be answered promptly")
    .expect("response");
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = resp.text().await.expect("body");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(json["error"], "upstream_unavailable");
    assert_leaks_nothing(&text, dead.port());
}

#[tokio::test]
async fn refused_upstream_answers_502_html_for_browsers() {
    let (gw, dead) = gateway_with_refused_upstream().await;
    let resp = tokio::time::timeout(
        DEADLINE,
        http_client()
            .get(gw.url_for("/app"))
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
            .send(),
    )
    .await
    .expect("a refused upstream must be answered promptly")
    .expect("response");
    assert_eq!(resp.status(), 502);
    let content_type = resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let text = resp.text().await.expect("body");
    assert!(
        text.contains("<html") || text.contains("<!doctype"),
        "{text}"
    );
    assert!(text.contains("Application unavailable"), "{text}");
    assert_leaks_nothing(&text, dead.port());
}

/// The error page of a proxied path speaks the language the request asks for, by each of the
/// three ways it can ask: `?lang=`, the language cookie, `Accept-Language`.
#[tokio::test]
async fn proxied_error_pages_speak_the_language_asked_for() {
    let (gw, dead) = gateway_with_refused_upstream().await;
    let browser = "text/html,application/xhtml+xml,*/*;q=0.8";
    let cases = [
        ("query", "/app?lang=fr", None),
        (
            "cookie",
            "/app",
            Some(("cookie", "app_session=abc; stepgate_lang=fr")),
        ),
        (
            "accept-language",
            "/app",
            Some(("accept-language", "fr-FR,fr;q=0.9,en;q=0.5")),
        ),
        ("none", "/app", None),
    ];
    for (case, path, header) in cases {
        let mut request = http_client()
            .get(gw.url_for(path))
            .header("accept", browser);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let resp = tokio::time::timeout(DEADLINE, request.send())
            .await
            .expect("a refused upstream must be answered promptly")
            .expect("response");
        assert_eq!(resp.status(), 502, "{case}");
        let text = resp.text().await.expect("body");
        let (expected, other) = if case == "none" {
            ("Application unavailable", "Application indisponible")
        } else {
            ("Application indisponible", "Application unavailable")
        };
        assert!(text.contains(expected), "{case}: {text}");
        assert!(!text.contains(other), "{case}: {text}");
        assert_leaks_nothing(&text, dead.port());
    }
}

/// The body names neither the upstream nor the software behind it.
fn assert_leaks_nothing(body: &str, upstream_port: u16) {
    let lower = body.to_ascii_lowercase();
    for needle in [
        "127.0.0.1".to_owned(),
        upstream_port.to_string(),
        "refused".to_owned(),
        "hyper".to_owned(),
        "tcp".to_owned(),
        "os error".to_owned(),
        env!("CARGO_PKG_VERSION").to_owned(),
    ] {
        assert!(!lower.contains(&needle), "body leaks {needle:?}: {body}");
    }
}

#[tokio::test]
async fn slow_upstream_answers_504_and_the_upstream_request_is_abandoned() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .upstream_extra("timeout = \"300ms\"")
        .start()
        .await;
    let resp = tokio::time::timeout(
        DEADLINE,
        http_client()
            .get(gw.url_for("/__hold"))
            .header("accept", "application/json")
            .send(),
    )
    .await
    .expect("the upstream timeout must answer the client")
    .expect("response");
    assert_eq!(resp.status(), 504);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["error"], "upstream_timeout");
    assert_eq!(upstream.requests(), 1, "the request did reach the upstream");
    // The gateway gave up on the upstream request: the hold ends without a release.
    tokio::time::timeout(DEADLINE, upstream.wait_none_held())
        .await
        .expect("the gateway must drop the timed-out upstream request");
}

#[tokio::test]
async fn upstream_error_statuses_pass_through() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    for code in [404u16, 500, 503] {
        let resp = http_client()
            .get(gw.url_for(&format!("/__status?code={code}")))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), code);
        assert_eq!(
            resp.text().await.expect("body"),
            format!("status {code}\n"),
            "the upstream's own body is forwarded"
        );
    }
}

fn big_header() -> String {
    "a".repeat(6 * 1024)
}

#[tokio::test]
async fn rejects_oversized_headers_on_proxied_path() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml("[limits]\nmax_header_bytes = 4096")
        .start()
        .await;
    let big = big_header();
    let resp = send_raw_path(
        gw.addr(),
        "GET",
        "/app",
        &[("x-big", big.as_str()), ("accept", "application/json")],
    )
    .await;
    assert_eq!(resp.status(), 431);
    let json: serde_json::Value = serde_json::from_slice(resp.body()).expect("json");
    assert_eq!(json["error"], "headers_too_large");
    assert_eq!(
        upstream.requests(),
        0,
        "the oversized request was forwarded"
    );

    // Just under the limit passes.
    let fits = "a".repeat(3 * 1024);
    let resp = send_raw_path(gw.addr(), "GET", "/app", &[("x-big", fits.as_str())]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn rejects_oversized_headers_on_portal() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml("[limits]\nmax_header_bytes = 4096")
        .start()
        .await;
    let big = big_header();
    let resp = send_raw_path(
        gw.addr(),
        "GET",
        "/.stepgate/healthz",
        &[("cookie", big.as_str())],
    )
    .await;
    assert_eq!(resp.status(), 431);
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn rejects_oversized_request_line() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml("[limits]\nmax_header_bytes = 4096")
        .start()
        .await;
    let path = format!("/app?q={}", big_header());
    let resp = send_raw_path(gw.addr(), "GET", &path, &[]).await;
    assert_eq!(resp.status(), 431);
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn rejects_headers_larger_than_the_read_buffer() {
    // Far above the limit: refused while the head is read, before any handler runs.
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml("[limits]\nmax_header_bytes = 4096")
        .start()
        .await;
    let request = format!(
        "GET /app HTTP/1.1\r\nHost: app.test\r\nX-Huge: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = raw_exchange(gw.addr(), request.as_bytes()).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer[..answer.len().min(300)])
    );
    assert_eq!(upstream.requests(), 0);
}

/// A gateway with one worker that may open two connections to its upstream, and waits up to
/// `queue` for one when both are busy. Loopback is a trusted proxy: the requests that wait
/// name another client (`X-Forwarded-For`) than the two that hold the connections, whose
/// network's share they fill.
async fn gateway_with_two_upstream_connections(upstream: &EchoUpstream, queue: &str) -> Gateway {
    Gateway::builder()
        .upstream(&upstream.url())
        .upstream_extra(&format!(
            "max_connections = 2\nconnect_timeout = \"{queue}\""
        ))
        .extra_toml("[server]\nworkers = 1\ntrusted_proxies = [\"127.0.0.1/32\"]")
        .start()
        .await
}

/// Two requests that the upstream holds, filling both connections; they end with
/// [`EchoUpstream::release_held`].
async fn hold_both_connections(
    gw: &Gateway,
    upstream: &EchoUpstream,
) -> Vec<tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>> {
    let held = (0..2)
        .map(|_| tokio::spawn(http_client().get(gw.url_for("/__hold")).send()))
        .collect();
    tokio::time::timeout(DEADLINE, upstream.wait_held_count(2))
        .await
        .expect("both held requests reach the upstream");
    held
}

/// A request to `gw`'s `/app` from client 192.0.2.2.
fn app_request_from_another_client(gw: &Gateway) -> reqwest::RequestBuilder {
    http_client()
        .get(gw.url_for("/app"))
        .header("accept", "application/json")
        .header("x-forwarded-for", "192.0.2.2")
}

/// Waits until a request waits for an upstream connection in `gw`.
async fn a_request_waits(gw: &Gateway) {
    let pools = gw
        .app()
        .upstreams
        .select(None)
        .expect("the default upstream");
    tokio::time::timeout(DEADLINE, async {
        while pools.waiting_requests() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the request waits in the gateway");
    assert_eq!(pools.open_connections(), 2);
}

/// Requests beyond the upstream's connection bound do not open connections of their own: one
/// that finds none free in time gets 503 with `Retry-After`, and the upstream never sees a third
/// connection.
#[tokio::test]
async fn requests_beyond_the_upstream_connection_bound_get_503() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway_with_two_upstream_connections(&upstream, "300ms").await;
    let held = hold_both_connections(&gw, &upstream).await;

    let waiting = tokio::spawn(app_request_from_another_client(&gw).send());
    a_request_waits(&gw).await;
    let resp = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("a busy upstream must be answered promptly")
        .expect("task")
        .expect("response");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["error"], "upstream_busy");
    assert_eq!(upstream.connections(), 2, "no third connection was opened");
    assert_eq!(upstream.requests(), 2);

    upstream.release_held();
    for request in held {
        let resp = request.await.expect("task").expect("response");
        assert_eq!(resp.status(), 200);
    }
    let resp = http_client()
        .get(gw.url_for("/app"))
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 200, "room again once the held answers ended");
    assert_eq!(
        upstream.connections(),
        2,
        "served on a connection given back"
    );
}

/// A request that finds every connection busy waits for one to come back rather than failing.
#[tokio::test]
async fn a_request_beyond_the_bound_is_served_when_a_connection_comes_back() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway_with_two_upstream_connections(&upstream, "20s").await;
    let held = hold_both_connections(&gw, &upstream).await;
    let waiting = tokio::spawn(app_request_from_another_client(&gw).send());
    a_request_waits(&gw).await;
    upstream.release_held();
    let resp = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("the waiting request is served")
        .expect("task")
        .expect("response");
    assert_eq!(resp.status(), 200);
    for request in held {
        assert_eq!(
            request.await.expect("task").expect("response").status(),
            200
        );
    }
    assert_eq!(upstream.connections(), 2, "never a third connection");
}

/// Once half of the upstream connections are open (32 of one worker's 64 here), a client
/// network with more than an eighth of them (16) in flight gets no other: its next request gets
/// 503 at once while another client is served, and it is served again once its answers end.
/// Loopback is a trusted proxy, so `X-Forwarded-For` names the client.
#[tokio::test]
async fn one_client_network_cannot_hold_every_upstream_connection() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .upstream_extra("max_connections = 64")
        .extra_toml("[server]\nworkers = 1\ntrusted_proxies = [\"127.0.0.1/32\"]")
        .start()
        .await;
    let from = |client: &str, path: &str| {
        http_client()
            .get(gw.url_for(path))
            .header("accept", "application/json")
            .header("x-forwarded-for", client)
            .send()
    };
    let held: Vec<_> = (0..32)
        .map(|_| tokio::spawn(from("192.0.2.1", "/__hold")))
        .collect();
    tokio::time::timeout(DEADLINE, upstream.wait_held_count(32))
        .await
        .expect("the held requests reach the upstream");

    let resp = tokio::time::timeout(DEADLINE, from("192.0.2.1", "/app"))
        .await
        .expect("answered at once")
        .expect("response");
    assert_eq!(resp.status(), 503);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["error"], "upstream_busy");
    let resp = from("192.0.2.2", "/app").await.expect("response");
    assert_eq!(resp.status(), 200, "another client is served");

    upstream.release_held();
    for request in held {
        assert_eq!(
            request.await.expect("task").expect("response").status(),
            200
        );
    }
    let resp = from("192.0.2.1", "/app").await.expect("response");
    assert_eq!(resp.status(), 200, "its share is free again");
}
