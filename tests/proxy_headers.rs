//! Header hygiene through the running gateway: hop-by-hop fields in both directions,
//! X-Forwarded-* from untrusted and trusted peers, client-sent identity headers, and upstream
//! answers that would set or clear the gateway's cookie.

mod common;

use common::{EchoUpstream, Gateway, ReceivedRequest, http_client, raw_exchange};

/// Hop-by-hop request fields a client sends; none may reach the upstream.
const HOP_REQUEST_FIELDS: [&str; 10] = [
    "connection",
    "expect",
    "x-secret",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "x-also-listed",
];

fn assert_no_hop_fields(seen: &ReceivedRequest) {
    for name in HOP_REQUEST_FIELDS {
        assert!(
            seen.header(name).is_none(),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
}

/// An echo upstream behind a gateway with `extra_toml` added to its configuration.
async fn gateway(extra_toml: &str) -> (EchoUpstream, Gateway) {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml(extra_toml)
        .start()
        .await;
    (upstream, gw)
}

/// Writes `request` byte for byte to the gateway, asserts a 200 answer and returns what the
/// upstream received last.
async fn forwarded_raw(gw: &Gateway, upstream: &EchoUpstream, request: &str) -> ReceivedRequest {
    let answer = raw_exchange(gw.addr(), request.as_bytes()).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    upstream.last_request().expect("forwarded")
}

/// `GET path` with `headers` (added in order, so a name may repeat), asserts a 200 answer and
/// returns what the upstream received last.
async fn forwarded_get(
    gw: &Gateway,
    upstream: &EchoUpstream,
    path: &str,
    headers: &[(&str, &str)],
) -> ReceivedRequest {
    let mut builder = http_client().get(gw.url_for(path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let resp = builder.send().await.expect("request");
    assert_eq!(resp.status(), 200, "GET {path} with {headers:?}");
    upstream.last_request().expect("forwarded")
}

/// Asserts the single `X-Forwarded-For`, `-Proto` and `-Host` values the upstream received.
/// `case` names the request in the failure message.
fn assert_forwarded_as(seen: &ReceivedRequest, case: &str, for_: &str, proto: &str, host: &str) {
    assert_eq!(
        seen.header_all("x-forwarded-for"),
        [for_],
        "{case}: X-Forwarded-For"
    );
    assert_eq!(
        seen.header_all("x-forwarded-proto"),
        [proto],
        "{case}: X-Forwarded-Proto"
    );
    assert_eq!(
        seen.header_all("x-forwarded-host"),
        [host],
        "{case}: X-Forwarded-Host"
    );
}

#[tokio::test]
async fn strips_hop_by_hop_request_headers() {
    let (upstream, gw) = gateway("").await;
    let request = "GET /hop HTTP/1.1\r\n\
         Host: app.test\r\n\
         Connection: close, x-secret\r\n\
         Connection: X-Also-Listed\r\n\
         X-Secret: 1\r\n\
         X-Also-Listed: 2\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\
         TE: trailers\r\n\
         Trailer: x-t\r\n\
         Upgrade: websocket\r\n\
         Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\
         Expect: 100-continue\r\n\
         X-App: kept\r\n\
         \r\n";
    let seen = forwarded_raw(&gw, &upstream, request).await;
    assert_eq!(seen.path, "/hop");
    assert_no_hop_fields(&seen);
    assert_eq!(seen.header("x-app"), Some("kept"));
}

#[tokio::test]
async fn connection_header_cannot_remove_forwarding_headers() {
    // A client may not use `Connection` to strip what the gateway itself adds.
    let (upstream, gw) = gateway("").await;
    let request = "GET /x HTTP/1.1\r\n\
         Host: app.test\r\n\
         Connection: close, x-forwarded-for, x-forwarded-proto, x-forwarded-host, host\r\n\
         \r\n";
    let seen = forwarded_raw(&gw, &upstream, request).await;
    assert_forwarded_as(
        &seen,
        "Connection lists them",
        "127.0.0.1",
        "http",
        "app.test",
    );
    assert_eq!(seen.header_all("host"), ["app.test"]);
}

#[tokio::test]
async fn strips_hop_by_hop_response_headers() {
    let (_upstream, gw) = gateway("").await;
    let resp = http_client()
        .get(gw.url_for("/__hop"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    for name in [
        "connection",
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(h.get(name).is_none(), "{name} reached the client: {h:?}");
    }
    // The gateway frames the body itself: at most its own single `chunked`.
    let te: Vec<_> = h.get_all("transfer-encoding").iter().collect();
    assert!(te.len() <= 1, "{h:?}");
    assert_eq!(h["x-kept"], "yes");
    // The application's cookies pass; the gateway's own session cookie cannot be set by it.
    let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["app=1; Path=/"], "{h:?}");
    assert_eq!(resp.text().await.expect("body"), "hop\n");
}

#[tokio::test]
async fn rejects_spoofed_forwarded_headers_from_untrusted_peer() {
    let (upstream, gw) = gateway("").await;
    let headers = [
        ("host", "app.test"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
    ];
    let seen = forwarded_get(&gw, &upstream, "/xff", &headers).await;
    assert_forwarded_as(&seen, "untrusted peer", "127.0.0.1", "http", "app.test");
}

/// Fields an application reads as the client's address or the URL asked for reach it only
/// from a trusted proxy, in no spelling from anyone else.
#[tokio::test]
async fn client_address_and_url_claims_pass_only_from_a_trusted_proxy() {
    let claims = [
        ("forwarded", "for=10.0.0.1;proto=https"),
        ("x-real-ip", "10.0.0.1"),
        ("x_real_ip", "10.0.0.1"),
        ("x-client-ip", "10.0.0.1"),
        ("true-client-ip", "10.0.0.1"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-prefix", "/admin"),
        ("x_forwarded_for", "10.0.0.1"),
        ("X.Forwarded.Host", "evil.example"),
    ];
    let (upstream, gw) = gateway("").await;
    let seen = forwarded_get(&gw, &upstream, "/claims", &claims).await;
    for (name, _) in claims {
        assert!(
            seen.header_all(name).is_empty(),
            "{name} reached the upstream from an untrusted peer"
        );
    }
    assert_forwarded_as(
        &seen,
        "untrusted peer",
        "127.0.0.1",
        "http",
        &gw.addr().to_string(),
    );

    let (upstream, gw) = gateway("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]").await;
    let seen = forwarded_get(&gw, &upstream, "/claims", &claims).await;
    for name in ["forwarded", "x-real-ip", "x-forwarded-port"] {
        assert_eq!(
            seen.header_all(name).len(),
            1,
            "{name} from a trusted proxy"
        );
    }
}

/// Fields naming another URL or method than the request's own never reach the application,
/// not even from a trusted proxy: the rules judged the request's own target, and an application
/// routing on `X-Original-URL` would serve another.
#[tokio::test]
async fn claims_of_another_url_are_removed_even_from_a_trusted_proxy() {
    let claims = [
        ("x-original-url", "/admin"),
        ("X-Original-URI", "/admin"),
        ("x-original-method", "DELETE"),
        ("x-rewrite-url", "/admin"),
        ("x_rewrite_url", "/admin"),
        ("x-forwarded-uri", "/admin"),
        ("x-forwarded-method", "DELETE"),
    ];
    let (upstream, gw) = gateway("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]").await;
    let seen = forwarded_get(&gw, &upstream, "/public-page", &claims).await;
    for (name, _) in claims {
        assert!(
            seen.header_all(name).is_empty(),
            "{name} reached the upstream from a trusted proxy"
        );
    }
    assert_eq!(seen.path, "/public-page");
}

#[tokio::test]
async fn sets_forwarded_headers_when_client_sends_none() {
    let (upstream, gw) = gateway("").await;
    let seen = forwarded_get(&gw, &upstream, "/plain", &[]).await;
    let own = gw.addr().to_string();
    assert_forwarded_as(&seen, "no forwarding headers", "127.0.0.1", "http", &own);
}

#[tokio::test]
async fn keeps_forwarded_headers_from_trusted_proxy() {
    let (upstream, gw) = gateway("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]").await;
    let headers = [
        ("host", "internal.test"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "public.example"),
    ];
    let seen = forwarded_get(&gw, &upstream, "/xff", &headers).await;
    assert_forwarded_as(
        &seen,
        "trusted proxy",
        "203.0.113.9, 127.0.0.1",
        "https",
        "public.example",
    );
}

#[tokio::test]
async fn trusted_proxy_outside_range_is_not_believed() {
    let (upstream, gw) = gateway("[server]\ntrusted_proxies = [\"10.0.0.0/8\"]").await;
    let headers = [
        ("host", "app.test"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
    ];
    let seen = forwarded_get(&gw, &upstream, "/xff", &headers).await;
    assert_forwarded_as(
        &seen,
        "peer outside the trusted range",
        "127.0.0.1",
        "http",
        "app.test",
    );
}

#[tokio::test]
async fn strips_client_sent_identity_headers_in_every_spelling() {
    let (upstream, gw) = gateway("").await;
    // Raw bytes, so that underscore and dot spellings are sent as written.
    let request = "GET /whoami HTTP/1.1\r\n\
         Host: app.test\r\n\
         Remote-User: admin\r\n\
         REMOTE-EMAIL: admin@example.com\r\n\
         remote_name: Admin\r\n\
         Remote.Groups: admins\r\n\
         Remote-Auth-Time: 1\r\n\
         Remote~User: admin\r\n\
         Remote!Groups: admins\r\n\
         Remote-Username: kept\r\n\
         Connection: close\r\n\
         \r\n";
    let seen = forwarded_raw(&gw, &upstream, request).await;
    for name in [
        "remote-user",
        "remote-email",
        "remote_name",
        "remote.groups",
        "remote-auth-time",
        "remote~user",
        "remote!groups",
    ] {
        assert!(
            seen.header(name).is_none(),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header("remote-username"), Some("kept"));
}

/// A signed-in user's short form post may be a held form's replay, so the gateway reads its
/// body before forwarding it: the answer to such a post must lose the gateway's cookies just
/// as any other answer does.
#[tokio::test]
async fn an_upstream_cannot_set_the_gateways_cookie_in_answer_to_a_short_form_post() {
    let (_upstream, gw) = gateway("[access]\ndefault_policy = \"one_factor\"").await;
    common::auth::create_user(&gw, "alice", "password123", &["users"]).await;
    let cookie = common::auth::login(&gw, "alice", "password123").await;
    for (content_type, body) in [
        ("application/x-www-form-urlencoded", "a=1"),
        ("text/plain", "a=1"),
    ] {
        let resp = http_client()
            .post(gw.url_for("/__hop"))
            .header("cookie", &cookie)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "{content_type}");
        let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["app=1; Path=/"], "{content_type}");
    }
}

/// An upstream that answers every request with `Clear-Site-Data` fields that would clear
/// cookies, then closes: `101` to an upgrade (`Upgrade: test`), else `200`.
async fn clear_site_data_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let fields = "Clear-Site-Data: \"cache\", \"cookies\"\r\n\
                              Clear-Site-Data: \"*\"\r\n";
                let answer = if head
                    .to_ascii_lowercase()
                    .windows(14)
                    .any(|w| w == b"upgrade: test\r")
                {
                    format!(
                        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\
                         Upgrade: test\r\n{fields}\r\n"
                    )
                } else {
                    format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nok")
                };
                let _ = tcp.write_all(answer.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// A browser told `Clear-Site-Data: "cookies"` (or `"*"`) deletes every cookie of the site,
/// the gateway's session cookie included: an application cannot sign its users out of the
/// gateway that way. The other types reach the client; a switch of protocols is no exception.
#[tokio::test]
async fn an_upstream_cannot_clear_the_gateways_cookie_with_clear_site_data() {
    let upstream = clear_site_data_upstream().await;
    let gw = Gateway::builder()
        .upstream(&format!("http://{upstream}"))
        .start()
        .await;
    let all_but_cookies = "\"cache\", \"storage\", \"executionContexts\"";

    let resp = http_client()
        .get(gw.url_for("/"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let fields: Vec<_> = resp.headers().get_all("clear-site-data").iter().collect();
    assert_eq!(fields, ["\"cache\"", all_but_cookies]);

    let answer = raw_exchange(
        gw.addr(),
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n",
    )
    .await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    let fields: Vec<_> = answer
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(name, _)| name.eq_ignore_ascii_case("clear-site-data"))
        .map(|(_, value)| value)
        .collect();
    assert_eq!(fields, ["\"cache\"", all_but_cookies], "{answer}");
}
