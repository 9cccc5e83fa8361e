//! Tests of the integration-test kit itself (tests/common), run against the kit.

mod common;

use common::{
    EchoUpstream, TestCa, download_pattern_sha256, http_client, pattern_byte, pattern_chunks,
    raw_exchange, refused_addr, send_raw_path, sha256_hex,
};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn header_values<'a>(json: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    json["headers"]
        .as_array()
        .expect("headers array")
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().expect("header value string"))
        .collect()
}

#[tokio::test]
async fn echo_describes_the_request_as_json() {
    let upstream = EchoUpstream::start().await;
    let resp = http_client()
        .post(upstream.url_for("/some/path?x=1&y=%2F"))
        .header("x-first", "a")
        .header("x-repeated", "one")
        .header("x-repeated", "two")
        .body("hello")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo-path"], "/some/path?x=1&y=%2F");
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/some/path?x=1&y=%2F");
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(json["body_len"], 5);
    assert_eq!(json["body_sha256"], sha256_hex(b"hello"));
    assert_eq!(header_values(&json, "x-first"), ["a"]);
    assert_eq!(header_values(&json, "x-repeated"), ["one", "two"]);
    assert_eq!(
        header_values(&json, "host"),
        [upstream.addr().to_string().as_str()]
    );
    assert_eq!(upstream.requests(), 1);
    let seen = upstream.last_request().expect("recorded");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/some/path?x=1&y=%2F");
    assert_eq!(seen.header_all("X-Repeated"), ["one", "two"]);
}

#[tokio::test]
async fn echo_keeps_the_raw_path_undecoded() {
    let upstream = EchoUpstream::start().await;
    // Path tricks must reach upstream exactly as sent, so proxy tests can see what was forwarded.
    let resp = send_raw_path(upstream.addr(), "GET", "/a/%2e%2e/b%2Fc//d/../e?q=%2e", &[]).await;
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = serde_json::from_slice(resp.body()).expect("json");
    assert_eq!(json["path"], "/a/%2e%2e/b%2Fc//d/../e?q=%2e");
    assert_eq!(
        upstream.last_request().expect("seen").path,
        "/a/%2e%2e/b%2Fc//d/../e?q=%2e"
    );
}

#[tokio::test]
async fn send_raw_path_sets_host_unless_given() {
    let upstream = EchoUpstream::start().await;
    send_raw_path(upstream.addr(), "GET", "/x", &[]).await;
    let seen = upstream.last_request().expect("seen");
    assert_eq!(seen.header_all("host"), [upstream.addr().to_string()]);
    send_raw_path(
        upstream.addr(),
        "DELETE",
        "/y",
        &[("Host", "app.example.test"), ("x-a", "1")],
    )
    .await;
    let seen = upstream.last_request().expect("seen");
    assert_eq!(seen.method, "DELETE");
    assert_eq!(seen.header_all("host"), ["app.example.test"]);
    assert_eq!(seen.header("x-a"), Some("1"));
}

#[tokio::test]
async fn raw_exchange_sends_bytes_verbatim() {
    let upstream = EchoUpstream::start().await;
    let answer = raw_exchange(
        upstream.addr(),
        b"GET /raw/%2e%2e/x HTTP/1.1\r\nHost: h\r\nX-Dup: 1\r\nx-dup: 2\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let seen = upstream.last_request().expect("seen");
    assert_eq!(seen.path, "/raw/%2e%2e/x");
    assert_eq!(seen.header_all("x-dup"), ["1", "2"]);

    let answer = raw_exchange(upstream.addr(), b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn requests_counts_every_request() {
    let upstream = EchoUpstream::start().await;
    assert_eq!(upstream.requests(), 0);
    let client = http_client();
    for path in ["/a", "/b", "/__status?code=404"] {
        client
            .get(upstream.url_for(path))
            .send()
            .await
            .expect("request");
    }
    assert_eq!(upstream.requests(), 3);
    let paths: Vec<String> = upstream.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/a", "/b", "/__status?code=404"]);
}

#[test]
fn download_pattern_is_the_documented_sequence() {
    let bytes: Vec<u8> = pattern_chunks(300_000).flat_map(|c| c.to_vec()).collect();
    assert_eq!(bytes.len(), 300_000);
    assert!(
        bytes
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern_byte(i as u64))
    );
    assert_eq!(pattern_byte(250), 250);
    assert_eq!(pattern_byte(251), 0);
    assert_eq!(download_pattern_sha256(300_000), sha256_hex(&bytes));
    assert_ne!(
        download_pattern_sha256(300_000),
        download_pattern_sha256(300_001)
    );
    assert_eq!(download_pattern_sha256(0), sha256_hex(b""));
}

#[tokio::test]
async fn download_streams_the_pattern() {
    let upstream = EchoUpstream::start().await;
    let n: u64 = 5 * 1024 * 1024 + 17;
    for (query, expect_length) in [("", true), ("&chunked=1", false)] {
        let resp = http_client()
            .get(upstream.url_for(&format!("/__download?bytes={n}{query}")))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.content_length().is_some(), expect_length);
        let mut stream = resp.bytes_stream();
        let mut hasher = sha2_hasher();
        let mut len = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("chunk");
            len += chunk.len() as u64;
            sha2::Digest::update(&mut hasher, &chunk);
        }
        assert_eq!(len, n);
        assert_eq!(
            hex(&sha2::Digest::finalize(hasher)),
            download_pattern_sha256(n)
        );
    }
}

fn sha2_hasher() -> sha2::Sha256 {
    <sha2::Sha256 as sha2::Digest>::new()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn download_rejects_missing_size() {
    let upstream = EchoUpstream::start().await;
    let resp = http_client()
        .get(upstream.url_for("/__download"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn upload_of_64_mib_is_hashed_while_streaming() {
    let upstream = EchoUpstream::start().await;
    let n: u64 = 64 * 1024 * 1024;
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        pattern_chunks(n).map(Ok::<_, std::io::Error>),
    ));
    let resp = http_client()
        .put(upstream.url_for("/upload"))
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["body_len"], n);
    assert_eq!(json["body_sha256"], download_pattern_sha256(n));
    assert_eq!(header_values(&json, "transfer-encoding"), ["chunked"]);
}

#[tokio::test]
async fn hold_waits_for_release() {
    let upstream = EchoUpstream::start().await;
    assert_eq!(upstream.held(), 0);
    let client = http_client();
    let url = upstream.url_for("/__hold?n=1");
    let pending = tokio::spawn(async move { client.get(url).send().await });

    upstream.wait_held().await;
    assert_eq!(upstream.held(), 1);
    assert!(
        !pending.is_finished(),
        "held request answered before release"
    );

    upstream.release_held();
    let resp = pending.await.expect("join").expect("response");
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["path"], "/__hold?n=1");
    assert_eq!(upstream.held(), 0);
}

#[tokio::test]
async fn release_frees_only_requests_already_held() {
    let upstream = EchoUpstream::start().await;
    let client = http_client();

    let first = tokio::spawn(client.get(upstream.url_for("/__hold?n=1")).send());
    let second = tokio::spawn(client.get(upstream.url_for("/__hold?n=2")).send());
    upstream.wait_held_count(2).await;
    upstream.release_held();
    assert_eq!(first.await.expect("join").expect("first").status(), 200);
    assert_eq!(second.await.expect("join").expect("second").status(), 200);

    let third = tokio::spawn(client.get(upstream.url_for("/__hold?n=3")).send());
    upstream.wait_held().await;
    assert!(
        !third.is_finished(),
        "an earlier release must not free a later hold"
    );
    upstream.release_held();
    assert_eq!(third.await.expect("join").expect("third").status(), 200);
}

#[tokio::test]
async fn dropped_client_leaves_the_hold() {
    let upstream = EchoUpstream::start().await;
    let client = http_client();
    let pending = tokio::spawn(client.get(upstream.url_for("/__hold")).send());
    upstream.wait_held().await;
    pending.abort();
    let _ = pending.await;
    // The server notices the closed connection asynchronously: wait on the count, not a timer.
    // The timeout only turns a hang into a failure; a passing run never waits for it.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        upstream.wait_none_held(),
    )
    .await
    .expect("the hold of a vanished client must end");
    assert_eq!(upstream.held(), 0);
}

#[tokio::test]
async fn dropping_the_upstream_cuts_held_requests_and_closes_the_port() {
    let upstream = EchoUpstream::start().await;
    let url = upstream.url_for("/__hold");
    let pending = tokio::spawn(http_client().get(url.clone()).send());
    upstream.wait_held().await;
    drop(upstream);
    assert!(
        pending.await.expect("join").is_err(),
        "held request must fail when the upstream stops"
    );
    assert!(http_client().get(url).send().await.is_err());
}

#[tokio::test]
async fn hop_sends_hop_by_hop_headers() {
    let upstream = EchoUpstream::start().await;
    let resp = http_client()
        .get(upstream.url_for("/__hop"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["connection"], "close, x-hop-secret");
    assert_eq!(h["x-hop-secret"], "1");
    assert_eq!(h["keep-alive"], "timeout=5");
    assert_eq!(h["proxy-connection"], "keep-alive");
    assert_eq!(h["transfer-encoding"], "chunked");
    assert_eq!(h["upgrade"], "foo");
    assert_eq!(h["x-kept"], "yes");
    assert_eq!(resp.text().await.expect("body"), "hop\n");
}

#[tokio::test]
async fn status_path_answers_the_requested_status() {
    let upstream = EchoUpstream::start().await;
    let resp = http_client()
        .get(upstream.url_for("/__status?code=302&location=%2Felsewhere"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "/elsewhere");
    let resp = http_client()
        .get(upstream.url_for("/__status?code=503"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn websocket_echoes_text_and_binary() {
    let upstream = EchoUpstream::start().await;
    let url = format!("ws://{}/__ws", upstream.addr());
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello")).await.expect("send text");
    assert_eq!(
        ws.next().await.expect("frame").expect("ok"),
        Message::text("hello")
    );
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send binary");
    assert_eq!(
        ws.next().await.expect("frame").expect("ok"),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).await.expect("close");
    while let Some(Ok(message)) = ws.next().await {
        assert!(message.is_close(), "unexpected {message:?}");
    }
    assert_eq!(upstream.requests(), 1);
    let seen = upstream.last_request().expect("recorded");
    assert_eq!(seen.header("upgrade"), Some("websocket"));
}

#[tokio::test]
async fn websocket_path_rejects_plain_requests() {
    let upstream = EchoUpstream::start().await;
    let resp = http_client()
        .get(upstream.url_for("/__ws"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn tls_upstream_speaks_h2_and_http1_with_the_test_ca() {
    let ca = TestCa::new();
    let upstream = EchoUpstream::start_tls(&ca).await;
    assert!(upstream.url().starts_with("https://127.0.0.1:"));

    let resp = ca
        .reqwest_client()
        .get(upstream.url_for("/tls?h2"))
        .send()
        .await
        .expect("h2 request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["version"], "HTTP/2.0");
    assert_eq!(json["path"], "/tls?h2");

    let resp = ca
        .reqwest_builder()
        .http1_only()
        .build()
        .expect("client")
        .get(upstream.url_for("/tls?h1"))
        .send()
        .await
        .expect("http/1.1 request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["version"], "HTTP/1.1");

    // The leaf is valid for the name too, not only the IP.
    let by_name = format!("https://localhost:{}/name", upstream.addr().port());
    let resp = ca
        .reqwest_builder()
        .resolve("localhost", upstream.addr())
        .build()
        .expect("client")
        .get(by_name)
        .send()
        .await
        .expect("request by name");
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.requests(), 3);
}

#[tokio::test]
async fn tls_upstream_is_rejected_without_the_ca() {
    let ca = TestCa::new();
    let upstream = EchoUpstream::start_tls(&ca).await;
    let err = http_client()
        .get(upstream.url_for("/"))
        .send()
        .await
        .expect_err("an unknown CA must fail the handshake");
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(upstream.requests(), 0);

    let other_ca = TestCa::new();
    assert!(
        other_ca
            .reqwest_client()
            .get(upstream.url_for("/"))
            .send()
            .await
            .is_err()
    );
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn tls_upstream_h2_download_and_websocket() {
    let ca = TestCa::new();
    let upstream = EchoUpstream::start_tls(&ca).await;
    let n: u64 = 1024 * 1024 + 3;
    let resp = ca
        .reqwest_client()
        .get(upstream.url_for(&format!("/__download?bytes={n}")))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let body = resp.bytes().await.expect("body");
    assert_eq!(sha256_hex(&body), download_pattern_sha256(n));

    let tls = ca.tls_connect(upstream.addr(), "localhost").await;
    let url = format!("wss://localhost:{}/__ws", upstream.addr().port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("wss handshake");
    ws.send(Message::text("over tls")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("frame").expect("ok"),
        Message::text("over tls")
    );
}

#[test]
fn ca_files_are_written() {
    let ca = TestCa::new();
    let ca_pem = std::fs::read_to_string(ca.ca_path()).expect("ca.pem");
    let chain = std::fs::read_to_string(ca.cert_path()).expect("cert.pem");
    let key = std::fs::read_to_string(ca.key_path()).expect("key.pem");
    assert_eq!(ca_pem, ca.ca_pem());
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(chain.ends_with(&ca_pem), "chain is leaf then CA");
    assert!(key.contains("BEGIN PRIVATE KEY"));
    let dir = ca.dir().to_path_buf();
    drop(ca);
    assert!(!dir.exists(), "tempdir removed on drop");
}

#[tokio::test]
async fn refused_addr_refuses() {
    let addr = refused_addr();
    assert!(addr.ip().is_loopback());
    let err = tokio::net::TcpStream::connect(addr)
        .await
        .expect_err("nothing listens there");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn http_client_does_not_follow_redirects() {
    let upstream = EchoUpstream::start().await;
    let resp = http_client()
        .get(upstream.url_for("/__status?code=302&location=%2Fnext"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 302);
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn plain_upstream_accepts_h2_prior_knowledge() {
    let upstream = EchoUpstream::start().await;
    let resp = common::client_builder()
        .http2_prior_knowledge()
        .build()
        .expect("client")
        .get(upstream.url_for("/h2c"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["version"], "HTTP/2.0");
    assert_eq!(json["path"], "/h2c");
}

#[tokio::test]
async fn hop_over_h2_sends_only_fields_h2_allows() {
    let ca = TestCa::new();
    let upstream = EchoUpstream::start_tls(&ca).await;
    let resp = ca
        .reqwest_client()
        .get(upstream.url_for("/__hop"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-kept"], "yes");
    assert_eq!(resp.headers()["x-hop-secret"], "1");
    assert!(resp.headers().get("connection").is_none());
    assert_eq!(resp.text().await.expect("body"), "hop\n");
}

#[test]
fn reserved_ports_are_distinct_free_and_outside_the_ephemeral_range() {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .map(|text| {
            let v: Vec<u16> = text
                .split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect();
            (v[0], v[1])
        })
        .unwrap_or((32_768, 60_999));
    let ports: Vec<u16> = (0..64).map(|_| common::ports::reserve()).collect();
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        ports.len(),
        "a port was handed out twice: {ports:?}"
    );
    for port in ports {
        assert!(!(low..=high).contains(&port), "{port} is in {low}..={high}");
        assert!(port >= 10_000, "{port}");
    }
}

#[test]
fn the_port_window_avoids_any_ephemeral_range() {
    use common::ports::window_outside;
    // Linux's default: below it.
    assert_eq!(window_outside((32_768, 60_999)), Some(24_768));
    // A range that starts low: above it.
    assert_eq!(window_outside((15_000, 50_000)), Some(50_001));
    // Nearly every port is ephemeral: none.
    assert_eq!(window_outside((1_024, 65_535)), None);
}
