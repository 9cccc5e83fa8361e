//! Login through the running gateway: form and JSON submissions, the session cookie's
//! attributes, generic failures, the `rd` return target and cross-site refusal.

mod common;

use common::auth::{
    Client, PREFIX, all_set_cookies, create_user, json, location, login, post_login, post_login_to,
    send, session_info, set_session_cookie, text, username,
};
use common::{EchoUpstream, Gateway, TestCa, http_client};
use reqwest::header::{ACCEPT, COOKIE};

/// Generous regulation, so tests that fail on purpose several times are not banned.
const LENIENT: &str = "[regulation]\nmax_retries = 100\n";

async fn gateway(upstream: &EchoUpstream, extra: &str) -> Gateway {
    Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml(LENIENT)
        .extra_toml(extra)
        .start()
        .await
}

fn cookie_attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

/// Asserts that the `Set-Cookie` value `set_cookie` carries every attribute in `wanted`.
fn assert_cookie_has(set_cookie: &str, wanted: &[&str]) {
    let attrs = cookie_attributes(set_cookie);
    for wanted in wanted {
        assert!(
            attrs.iter().any(|a| a == wanted),
            "{set_cookie} lacks {wanted}"
        );
    }
}

/// A gateway with HTTPS (certificate from `ca`) and `extra` configuration, alice created.
async fn tls_gateway(ca: &TestCa, upstream: &EchoUpstream, extra: &str) -> Gateway {
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .tls(ca)
        .extra_toml(extra)
        .start()
        .await;
    create_user(&gw, "alice", "password123", &[]).await;
    gw
}

/// `POST {prefix}/login` with a username and password only, as an API client.
async fn api_login_attempt(gw: &Gateway, name: &str, password: &str) -> reqwest::Response {
    post_login(
        gw,
        &[("username", name), ("password", password)],
        Client::Api,
        &[],
    )
    .await
}

/// alice's API login with `remember_me` set to `flag`.
async fn login_remember_me(gw: &Gateway, flag: &str) -> reqwest::Response {
    post_login(
        gw,
        &[
            ("username", "alice"),
            ("password", "password123"),
            ("remember_me", flag),
        ],
        Client::Api,
        &[],
    )
    .await
}

/// `GET {prefix}/api/session` over HTTPS with the `Cookie` header `cookie`: the response.
async fn https_session(client: &reqwest::Client, gw: &Gateway, cookie: &str) -> reqwest::Response {
    let session_url = gw.https_url_for(&format!("{PREFIX}/api/session"));
    send(client.get(&session_url).header(COOKIE, cookie)).await
}

/// `POST {prefix}/logout` with alice's session cookie and one extra header, as an API client.
async fn post_logout_with(
    gw: &Gateway,
    cookie: &str,
    name: &str,
    value: &str,
) -> reqwest::Response {
    send(
        http_client()
            .post(gw.url_for(&format!("{PREFIX}/logout")))
            .header(ACCEPT, "application/json")
            .header(COOKIE, cookie)
            .header(name, value),
    )
    .await
}

fn the_session_set_cookie(headers: &reqwest::header::HeaderMap) -> String {
    let all = all_set_cookies(headers);
    assert_eq!(all.len(), 1, "expected one Set-Cookie: {all:?}");
    all.into_iter().next().expect("one Set-Cookie")
}

#[tokio::test]
async fn form_login_redirects_to_rd_with_a_session_cookie() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    create_user(&gw, "alice", "password123", &["admins"]).await;

    let resp = post_login(
        &gw,
        &[
            ("username", "alice"),
            ("password", "password123"),
            ("rd", "/dashboard?tab=2"),
        ],
        Client::Browser,
        &[],
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp).as_deref(), Some("/dashboard?tab=2"));
    let set_cookie = the_session_set_cookie(resp.headers());
    assert!(set_cookie.starts_with("stepgate_session="), "{set_cookie}");
    assert_cookie_has(&set_cookie, &["httponly", "samesite=lax", "path=/"]);
    let attrs = cookie_attributes(&set_cookie);
    // Plain HTTP: no Secure (the browser would drop it), and a browser-session cookie.
    assert!(!attrs.iter().any(|a| a == "secure"), "{set_cookie}");
    assert!(
        !attrs.iter().any(|a| a.starts_with("max-age")),
        "{set_cookie}"
    );
    assert!(
        !attrs.iter().any(|a| a.starts_with("expires")),
        "{set_cookie}"
    );

    let cookie = set_session_cookie(resp.headers()).expect("session cookie");
    let (status, body) = session_info(&gw, Some(&cookie)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["username"], "alice");
}

#[tokio::test]
async fn json_login_answers_authenticated_with_redirect() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    create_user(&gw, "alice", "password123", &[]).await;

    let resp = send(
        http_client()
            .post(gw.url_for(&format!("{PREFIX}/login")))
            .header(ACCEPT, "application/json")
            .json(&serde_json::json!({
                "username": "alice",
                "password": "password123",
                "rd": "/reports?year=2025",
            })),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let cookie = set_session_cookie(resp.headers()).expect("session cookie");
    let body = json(resp).await;
    assert_eq!(
        body,
        serde_json::json!({"status": "authenticated", "redirect": "/reports?year=2025"})
    );
    assert_eq!(session_info(&gw, Some(&cookie)).await.0, 200);
}

#[tokio::test]
async fn json_login_without_rd_redirects_to_root() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    create_user(&gw, "alice", "password123", &[]).await;
    let resp = api_login_attempt(&gw, "alice", "password123").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["redirect"], "/");
}

#[tokio::test]
async fn remember_me_sets_max_age_of_thirty_days() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    create_user(&gw, "alice", "password123", &[]).await;
    for flag in ["on", "true", "1"] {
        let resp = login_remember_me(&gw, flag).await;
        assert_eq!(resp.status(), 200, "remember_me={flag}");
        let set_cookie = the_session_set_cookie(resp.headers());
        let attrs = cookie_attributes(&set_cookie);
        assert!(
            attrs.iter().any(|a| a == "max-age=2592000"),
            "remember_me={flag}: {set_cookie}"
        );
    }
    // Explicitly off: a browser-session cookie.
    let resp = login_remember_me(&gw, "false").await;
    let set_cookie = the_session_set_cookie(resp.headers());
    assert!(
        !set_cookie.to_ascii_lowercase().contains("max-age"),
        "{set_cookie}"
    );
}

#[tokio::test]
async fn tls_login_sets_secure_host_prefixed_cookie() {
    let ca = TestCa::new();
    let upstream = EchoUpstream::start().await;
    let gw = tls_gateway(&ca, &upstream, "").await;
    let client = ca.reqwest_client();

    let resp = post_login_to(
        &client,
        &gw.https_url_for(&format!("{PREFIX}/login")),
        &[
            ("username", "alice"),
            ("password", "password123"),
            ("remember_me", "on"),
        ],
        Client::Browser,
        &[],
    )
    .await;
    assert_eq!(resp.status(), 303);
    let set_cookie = the_session_set_cookie(resp.headers());
    assert!(
        set_cookie.starts_with("__Host-stepgate_session="),
        "{set_cookie}"
    );
    assert_cookie_has(
        &set_cookie,
        &[
            "httponly",
            "samesite=lax",
            "path=/",
            "secure",
            "max-age=2592000",
        ],
    );
    let attrs = cookie_attributes(&set_cookie);
    // `__Host-` cookies must not name a domain.
    assert!(
        !attrs.iter().any(|a| a.starts_with("domain")),
        "{set_cookie}"
    );

    let pair = set_session_cookie(resp.headers()).expect("session cookie");
    let resp = https_session(&client, &gw, &pair).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["user"]["username"], "alice");
}

#[tokio::test]
async fn rejects_cookie_without_host_prefix_over_https() {
    // Over HTTPS only the `__Host-` cookie counts: a sibling subdomain can plant a plain
    // `stepgate_session` cookie for our host, but never a `__Host-` one.
    let ca = TestCa::new();
    let upstream = EchoUpstream::start().await;
    let gw = tls_gateway(&ca, &upstream, "").await;
    let client = ca.reqwest_client();
    let resp = post_login_to(
        &client,
        &gw.https_url_for(&format!("{PREFIX}/login")),
        &[("username", "alice"), ("password", "password123")],
        Client::Api,
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let pair = set_session_cookie(resp.headers()).expect("session cookie");
    let value = pair.split_once('=').expect("name=value").1;
    let resp = https_session(&client, &gw, &format!("stepgate_session={value}")).await;
    assert_eq!(resp.status(), 401);
}

/// A failed login: 401, the generic message, no cookie.
async fn assert_invalid_credentials(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 401);
    assert!(set_session_cookie(resp.headers()).is_none());
    text(resp).await
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    create_user(&gw, "alice", "password123", &[]).await;

    let wrong = [("username", "alice"), ("password", "wrong-password")];
    let unknown = [("username", "mallory"), ("password", "password123")];

    let a = assert_invalid_credentials(post_login(&gw, &wrong, Client::Api, &[]).await).await;
    let b = assert_invalid_credentials(post_login(&gw, &unknown, Client::Api, &[]).await).await;
    let a: serde_json::Value = serde_json::from_str(&a).expect("json");
    let b: serde_json::Value = serde_json::from_str(&b).expect("json");
    assert_eq!(a["error"], "invalid_credentials");
    assert_eq!(a, b, "the answers must not tell which part was wrong");

    let a = assert_invalid_credentials(post_login(&gw, &wrong, Client::Browser, &[]).await).await;
    let b = assert_invalid_credentials(post_login(&gw, &unknown, Client::Browser, &[]).await).await;
    for page in [&a, &b] {
        assert!(page.contains("Incorrect username or password."), "{page}");
    }
    // The pages differ only by the username echoed back into the form.
    assert_eq!(a.replace("alice", "USER"), b.replace("mallory", "USER"));
}

#[tokio::test]
async fn empty_and_invalid_usernames_get_the_generic_answer() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    for name in ["", "   ", "-rf", "al ice", "\u{212A}elvin"] {
        let resp = api_login_attempt(&gw, name, "password123").await;
        let body = assert_invalid_credentials(resp).await;
        assert!(body.contains("invalid_credentials"), "{name:?}: {body}");
    }
}

#[tokio::test]
async fn username_is_case_and_whitespace_insensitive() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    create_user(&gw, "alice", "password123", &[]).await;
    for typed in ["Alice", "ALICE", "  alice "] {
        let cookie = login(&gw, typed, "password123").await;
        let (status, body) = session_info(&gw, Some(&cookie)).await;
        assert_eq!(status, 200);
        assert_eq!(body["user"]["username"], "alice", "typed {typed:?}");
    }
}

#[tokio::test]
async fn password_is_case_sensitive() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    create_user(&gw, "alice", "password123", &[]).await;
    let resp = api_login_attempt(&gw, "alice", "PASSWORD123").await;
    assert_invalid_credentials(resp).await;
}

#[tokio::test]
async fn disabled_user_cannot_log_in() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    create_user(&gw, "alice", "password123", &[]).await;
    gw.app()
        .users
        .set_disabled(&username("alice"), true)
        .expect("disable");
    let resp = api_login_attempt(&gw, "alice", "password123").await;
    let body = assert_invalid_credentials(resp).await;
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["error"], "invalid_credentials");

    // Enabled again, the same password works.
    gw.app()
        .users
        .set_disabled(&username("alice"), false)
        .expect("enable");
    login(&gw, "alice", "password123").await;
}

#[tokio::test]
async fn unknown_user_costs_a_password_verification() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    create_user(&gw, "alice", "password123", &[]).await;
    let hasher = &gw.app().hasher;

    let before = hasher.stats().started;
    let resp = api_login_attempt(&gw, "nobody", "password123").await;
    assert_invalid_credentials(resp).await;
    assert_eq!(
        hasher.stats().started,
        before + 1,
        "unknown user: no argon2 run"
    );

    let before = hasher.stats().started;
    let resp = api_login_attempt(&gw, "alice", "wrong").await;
    assert_invalid_credentials(resp).await;
    assert_eq!(
        hasher.stats().started,
        before + 1,
        "wrong password: one argon2 run"
    );
}

// ---------------------------------------------------------------------------------------------
// The `rd` return target

const ALLOWED_DOMAINS: &str = "[access]\nallowed_redirect_domains = [\"example.com\"]\n";

/// Logs alice in as a browser with `rd` and returns where the gateway sends her.
async fn redirect_after_login(http: &reqwest::Client, url: &str, rd: &str) -> String {
    let resp = post_login_to(
        http,
        url,
        &[
            ("username", "alice"),
            ("password", "password123"),
            ("rd", rd),
        ],
        Client::Browser,
        &[],
    )
    .await;
    assert_eq!(resp.status(), 303, "rd {rd:?}");
    location(&resp).expect("Location")
}

#[tokio::test]
async fn rejects_open_redirect_targets() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, ALLOWED_DOMAINS).await;
    create_user(&gw, "alice", "password123", &[]).await;
    let own = gw.addr().to_string();
    let url = gw.url_for(&format!("{PREFIX}/login"));
    let http = http_client();
    let refused = [
        "//evil.com".to_owned(),
        "//evil.com/path".to_owned(),
        "/\\evil.com".to_owned(),
        "/%2F%2Fevil.com".to_owned(),
        "/%5Cevil.com".to_owned(),
        "/..//evil.com".to_owned(),
        "https://evil.com".to_owned(),
        "https://evil.com/".to_owned(),
        "http://evil.com/".to_owned(),
        "https:evil.com".to_owned(),
        "https:/evil.com".to_owned(),
        "https://app.example.com.evil.net".to_owned(),
        "https://example.com@evil.net/".to_owned(),
        "https://notexample.com/".to_owned(),
        "javascript:alert(1)".to_owned(),
        "JavaScript:alert(1)".to_owned(),
        "data:text/html,<script>alert(1)</script>".to_owned(),
        "\t//evil.com".to_owned(),
        " /x".to_owned(),
        format!("https://user@{own}/"),
        format!("https://user:pass@{own}/"),
        format!("https://@{own}/"),
    ];
    for rd in &refused {
        assert_eq!(
            redirect_after_login(&http, &url, rd).await,
            "/",
            "rd {rd:?} was accepted"
        );
    }
}

#[tokio::test]
async fn accepts_local_and_allowed_domain_targets_on_plain_http() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, ALLOWED_DOMAINS).await;
    create_user(&gw, "alice", "password123", &[]).await;
    let url = gw.url_for(&format!("{PREFIX}/login"));
    let http = http_client();
    let own = gw.addr().to_string();
    let own_url = format!("http://{own}/back");
    let accepted = [
        ("/path?x=1", "/path?x=1".to_owned()),
        ("/a/b/c#frag", "/a/b/c#frag".to_owned()),
        (
            "https://sub.example.com/x",
            "https://sub.example.com/x".to_owned(),
        ),
        ("https://example.com/", "https://example.com/".to_owned()),
        (
            "https://SUB.Example.COM/x",
            "https://sub.example.com/x".to_owned(),
        ),
        // The gateway itself is served over plain http, so http targets are accepted too.
        (
            "http://sub.example.com/x",
            "http://sub.example.com/x".to_owned(),
        ),
        (own_url.as_str(), own_url.clone()),
    ];
    for (rd, expected) in &accepted {
        assert_eq!(
            &redirect_after_login(&http, &url, rd).await,
            expected,
            "rd {rd:?}"
        );
    }
}

#[tokio::test]
async fn tls_gateway_refuses_http_targets_and_accepts_https_ones() {
    let ca = TestCa::new();
    let upstream = EchoUpstream::start().await;
    let gw = tls_gateway(&ca, &upstream, ALLOWED_DOMAINS).await;
    let http = ca.reqwest_client();
    let url = gw.https_url_for(&format!("{PREFIX}/login"));
    assert_eq!(
        redirect_after_login(&http, &url, "https://sub.example.com/x").await,
        "https://sub.example.com/x"
    );
    assert_eq!(
        redirect_after_login(&http, &url, "/path?x=1").await,
        "/path?x=1"
    );
    // A downgrade to plain http is refused once the gateway itself is on https.
    assert_eq!(
        redirect_after_login(&http, &url, "http://sub.example.com/x").await,
        "/"
    );
    assert_eq!(
        redirect_after_login(&http, &url, "https://evil.com/").await,
        "/"
    );
}

#[tokio::test]
async fn login_page_reports_the_sanitised_rd() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    let resp = send(
        http_client()
            .get(gw.url_for(&format!("{PREFIX}/login?rd=%2F%2Fevil.com")))
            .header(ACCEPT, "application/json"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        json(resp).await,
        serde_json::json!({"status": "unauthenticated", "rd": "/"})
    );
    let resp = send(
        http_client()
            .get(gw.url_for(&format!("{PREFIX}/login?rd=javascript:alert(1)")))
            .header(ACCEPT, common::auth::BROWSER_ACCEPT),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let page = text(resp).await;
    assert!(!page.contains("javascript:"), "{page}");
}

// ---------------------------------------------------------------------------------------------
// Cross-site requests

#[tokio::test]
async fn rejects_cross_site_login_post() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    create_user(&gw, "alice", "password123", &[]).await;
    let fields = [("username", "alice"), ("password", "password123")];
    // Right host, wrong scheme: another origin.
    let wrong_scheme = gw.http_url().replace("http://", "https://");
    let refused: [&[(&str, &str)]; 5] = [
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "CROSS-SITE")],
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[("origin", &wrong_scheme)],
    ];
    for headers in refused {
        let before = gw.app().hasher.stats().started;
        let resp = post_login(&gw, &fields, Client::Api, headers).await;
        assert_eq!(resp.status(), 403, "{headers:?}");
        assert!(set_session_cookie(resp.headers()).is_none(), "{headers:?}");
        assert_eq!(
            json(resp).await["error"],
            "cross_site_request",
            "{headers:?}"
        );
        // Refused before the password was even looked at.
        assert_eq!(gw.app().hasher.stats().started, before, "{headers:?}");
    }
}

#[tokio::test]
async fn accepts_same_origin_login_post() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    create_user(&gw, "alice", "password123", &[]).await;
    let fields = [("username", "alice"), ("password", "password123")];
    let own_origin = gw.http_url();
    let accepted: [&[(&str, &str)]; 3] = [
        &[("origin", &own_origin)],
        &[("origin", &own_origin), ("sec-fetch-site", "same-origin")],
        &[("sec-fetch-site", "same-origin")],
    ];
    for headers in accepted {
        let resp = post_login(&gw, &fields, Client::Api, headers).await;
        assert_eq!(resp.status(), 200, "{headers:?}");
        assert!(set_session_cookie(resp.headers()).is_some(), "{headers:?}");
    }
}

#[tokio::test]
async fn rejects_cross_site_logout_post() {
    // A foreign page must not be able to log the user out (or do anything else) by POSTing.
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    create_user(&gw, "alice", "password123", &[]).await;
    let cookie = login(&gw, "alice", "password123").await;
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
    ] {
        let resp = post_logout_with(&gw, &cookie, name, value).await;
        assert_eq!(resp.status(), 403, "{name}: {value}");
        assert!(
            all_set_cookies(resp.headers()).is_empty(),
            "a refused logout must not touch the cookie"
        );
        assert_eq!(session_info(&gw, Some(&cookie)).await.0, 200, "{name}");
    }
    // Same origin: the logout goes through.
    let resp = post_logout_with(&gw, &cookie, "origin", &gw.http_url()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(session_info(&gw, Some(&cookie)).await.0, 401);
}

/// The gateway trusts loopback as a proxy, so that each test client can speak for a client
/// address of its own (`X-Forwarded-For`), and gives form bodies `budget` bytes in all.
async fn gateway_with_form_budget(upstream: &EchoUpstream, budget: usize) -> Gateway {
    let extra = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[limits]\nmax_form_memory_bytes = {budget}\n"
    );
    gateway(upstream, &extra).await
}

/// A sign-in form from `client` that declares `length` bytes and never finishes arriving.
async fn slow_login_form(gw: &Gateway, client: &str, length: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let head = format!(
        "POST {PREFIX}/login HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\n\
         X-Forwarded-For: {client}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\n\
         username=al"
    );
    let mut tcp = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    tcp.write_all(head.as_bytes()).await.expect("write");
    tcp
}

/// Waits until the form memory left is `bytes`.
async fn form_memory_left(gw: &Gateway, bytes: usize) {
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while gw.app().form_memory.available() != bytes {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let left = gw.app().form_memory.available();
        panic!("form memory left stayed at {left}, not {bytes}")
    });
}

async fn login_from(gw: &Gateway, client: &str) -> reqwest::Response {
    post_login(
        gw,
        &[("username", "alice"), ("password", "wrong")],
        Client::Api,
        &[("x-forwarded-for", client)],
    )
    .await
}

/// Form bodies being read share `limits.max_form_memory_bytes`, all clients together: with
/// room for two (64 KiB each), two sign-in forms that never finish arriving leave a third
/// refused at once with 429, and the room comes back when one of them goes.
#[tokio::test]
async fn slow_forms_share_one_memory_budget() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = EchoUpstream::start().await;
    let gw = gateway_with_form_budget(&upstream, 131072).await;
    let mut slow = vec![
        slow_login_form(&gw, "192.0.2.1", 65536).await,
        slow_login_form(&gw, "192.0.2.2", 65536).await,
    ];
    form_memory_left(&gw, 0).await;

    let resp = login_from(&gw, "192.0.2.3").await;
    assert_eq!(resp.status(), 429);

    // One slow client goes: its room is given back.
    let mut gone = slow.pop().expect("a slow client");
    gone.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        gone.read_to_end(&mut rest),
    )
    .await;
    drop(gone);
    form_memory_left(&gw, 65536).await;
    let resp = login_from(&gw, "192.0.2.3").await;
    assert_eq!(resp.status(), 401);
}

/// One client network holds at most a sixty-fourth of the form memory (here: one form): its slow forms get its
/// own sign-ins refused, not everyone's. A form reserves what it declares.
#[tokio::test]
async fn slow_forms_of_one_network_leave_room_for_the_others() {
    let upstream = EchoUpstream::start().await;
    let budget = 16 * 65536;
    let gw = gateway_with_form_budget(&upstream, budget).await;
    let _small = slow_login_form(&gw, "192.0.2.1", 1000).await;
    form_memory_left(&gw, budget - 1024).await;
    let _large = slow_login_form(&gw, "192.0.2.1", 63 * 1024).await;
    form_memory_left(&gw, budget - 65536).await;

    let resp = login_from(&gw, "192.0.2.1").await;
    assert_eq!(resp.status(), 429, "the network's share is taken");
    let resp = login_from(&gw, "192.0.2.2").await;
    assert_eq!(resp.status(), 401, "another network signs in");
    // IPv6 clients count by /48.
    let _site = slow_login_form(&gw, "2001:db8:1:2::1", 65536).await;
    form_memory_left(&gw, budget - 2 * 65536).await;
    assert_eq!(login_from(&gw, "2001:db8:1:ffff::9").await.status(), 429);
    assert_eq!(login_from(&gw, "2001:db8:2::1").await.status(), 401);
}

/// A form above 64 KiB is refused with 413: at once, before its body is read, when its
/// `Content-Length` says so, and when it gets there when it declares no length.
#[tokio::test]
async fn oversized_forms_get_413() {
    use tokio::io::AsyncReadExt;
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    let mut declared = slow_login_form(&gw, "192.0.2.1", 65 * 1024 + 1).await;
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        declared.read(&mut answer),
    )
    .await
    .expect("answered without the body")
    .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    let chunks = (0..17).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 4096]));
    let resp = reqwest::Client::new()
        .post(gw.url_for(&format!("{PREFIX}/login")))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 413);
}

/// A stored hash made with other argon2 parameters than the configured ones (the operator
/// changed them, or imported hashes) is replaced by one with the configured parameters at the
/// next successful login; a wrong password replaces nothing, and the account's sessions stay.
#[tokio::test]
async fn a_login_rehashes_a_password_hashed_with_other_parameters() {
    use stepgate::auth::password::{HashParams, Password, PasswordHasher};
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    create_user(&gw, "alice", "password123", &[]).await;
    let configured = gw.app().hasher.params();
    let other = HashParams {
        m_kib: configured.m_kib * 2,
        ..configured
    };
    let old = PasswordHasher::new(other, 1)
        .expect("hasher")
        .hash(Password::new("password123".into()))
        .await
        .expect("hash");
    gw.app()
        .users
        .set_password(&username("alice"), old.clone())
        .expect("set password");
    let stored = || {
        gw.app()
            .store
            .get_user(&username("alice"))
            .expect("read")
            .expect("alice")
            .password_hash
    };
    assert!(stored().needs_rehash(configured));

    assert_eq!(api_login_attempt(&gw, "alice", "wrong").await.status(), 401);
    assert_eq!(stored(), old, "a wrong password rehashes nothing");

    let first = login(&gw, "alice", "password123").await;
    let now = stored();
    assert_ne!(now, old);
    assert!(!now.needs_rehash(configured));
    // The session opened by that login lives, and the password still works.
    assert_eq!(session_info(&gw, Some(&first)).await.0, 200);
    let second = login(&gw, "alice", "password123").await;
    assert_eq!(session_info(&gw, Some(&second)).await.0, 200);
    assert_eq!(stored(), now, "a hash with the configured parameters stays");
}
