//! Identity headers through the running gateway: what the upstream learns about a logged-in
//! user, and that a client can neither forge nor remove those headers.

mod common;

use common::auth::{Client, create_user, create_user_full, get, login, raw_status};
use common::{EchoUpstream, Gateway, ReceivedRequest, raw_exchange};

/// `/open` needs no login; everything else needs a password login.
const ACCESS: &str = r#"
[access]
default_policy = "one_factor"

[[access.rules]]
path = "^/open"
policy = "bypass"
"#;

async fn gateway(upstream: &EchoUpstream, extra: &str) -> Gateway {
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml(ACCESS)
        .extra_toml(extra)
        .start()
        .await;
    create_user_full(
        &gw,
        "alice",
        "password123",
        &["admins", "users"],
        Some("Alice Liddell"),
        Some("alice@example.com"),
    )
    .await;
    gw
}

/// Spoofed identity headers in several spellings, as raw header lines.
const SPOOFED: &str = "Remote-User: admin\r\n\
     remote_user: admin\r\n\
     REMOTE-USER: admin\r\n\
     Remote.User: admin\r\n\
     rEmOtE-uSeR: admin\r\n\
     remote-groups: admins,root\r\n\
     Remote_Groups: root\r\n\
     Remote-Email: admin@evil.example\r\n\
     remote.email: admin@evil.example\r\n\
     REMOTE_NAME: Administrator\r\n\
     Remote-Name: Administrator\r\n\
     Remote-Auth-Time: 1\r\n";

/// `GET path` (`Host: app.test`, `Connection: close`) with `extra` raw header lines (each
/// ending in CRLF) written byte for byte: every byte of the answer.
async fn raw_get(gw: &Gateway, path: &str, extra: &str) -> Vec<u8> {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{extra}Connection: close\r\n\r\n");
    raw_exchange(gw.addr(), request.as_bytes()).await
}

/// Sends `GET path` with `extra` raw header lines (each ending in CRLF) and returns what the
/// upstream received; the answer must be 200.
async fn forwarded(
    gw: &Gateway,
    upstream: &EchoUpstream,
    path: &str,
    extra: &str,
) -> ReceivedRequest {
    let before = upstream.requests();
    let answer = raw_get(gw, path, extra).await;
    assert_eq!(
        raw_status(&answer),
        200,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(upstream.requests(), before + 1);
    upstream.last_request().expect("forwarded")
}

/// Names of the headers the upstream received that fold (case, `_`, `.`) to `name`.
fn spellings_of(seen: &ReceivedRequest, name: &str) -> Vec<(String, String)> {
    let fold = |n: &str| n.to_ascii_lowercase().replace(['_', '.'], "-");
    seen.headers
        .iter()
        .filter(|(n, _)| fold(n) == name)
        .cloned()
        .collect()
}

/// Asserts that `name` reached the upstream exactly once, in that spelling, with `value`.
fn assert_only_spelling(seen: &ReceivedRequest, name: &str, value: &str) {
    assert_eq!(
        spellings_of(seen, name),
        [(name.to_owned(), value.to_owned())],
        "{name}"
    );
}

/// Asserts that none of `names`, in any spelling, reached the upstream.
fn assert_none_reached(seen: &ReceivedRequest, names: &[&str]) {
    for name in names {
        assert!(
            spellings_of(seen, name).is_empty(),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
}

/// Asserts alice's identity headers under the default names, each sent once.
fn assert_alice_identity(seen: &ReceivedRequest) {
    assert_eq!(seen.header_all("remote-user"), ["alice"]);
    assert_eq!(seen.header_all("remote-email"), ["alice@example.com"]);
    assert_eq!(seen.header_all("remote-name"), ["Alice Liddell"]);
    assert_eq!(seen.header_all("remote-groups"), ["admins,users"]);
}

#[tokio::test]
async fn upstream_receives_identity_headers_of_the_logged_in_user() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    let cookie = login(&gw, "Alice", "password123").await;
    let resp = get(&gw, "/app", Some(&cookie), Client::Api).await;
    assert_eq!(resp.status(), 200);
    let seen = upstream.last_request().expect("forwarded");
    assert_alice_identity(&seen);
}

#[tokio::test]
async fn user_without_email_or_groups_gets_no_forged_values() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    create_user(&gw, "bob", "password123", &[]).await;
    let cookie = login(&gw, "bob", "password123").await;
    let seen = forwarded(
        &gw,
        &upstream,
        "/app",
        &format!("Cookie: {cookie}\r\n{SPOOFED}"),
    )
    .await;
    assert_eq!(seen.header_all("remote-user"), ["bob"]);
    assert_eq!(seen.header_all("remote-name"), ["bob"]);
    // No email: no header at all, certainly not the client's.
    assert_none_reached(&seen, &["remote-email"]);
    // No groups: an empty value, not the client's.
    assert_only_spelling(&seen, "remote-groups", "");
}

#[tokio::test]
async fn strips_spoofed_identity_headers_on_protected_route() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    let cookie = login(&gw, "alice", "password123").await;
    let seen = forwarded(
        &gw,
        &upstream,
        "/app",
        &format!("{SPOOFED}Cookie: {cookie}\r\n"),
    )
    .await;
    // Exactly the gateway's own values, once each, in the canonical spelling.
    assert_only_spelling(&seen, "remote-user", "alice");
    assert_only_spelling(&seen, "remote-groups", "admins,users");
    assert_only_spelling(&seen, "remote-email", "alice@example.com");
    assert_only_spelling(&seen, "remote-name", "Alice Liddell");
    assert_none_reached(&seen, &["remote-auth-time"]);
}

#[tokio::test]
async fn strips_spoofed_identity_headers_on_bypass_route() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    let seen = forwarded(&gw, &upstream, "/open/page", SPOOFED).await;
    assert_none_reached(
        &seen,
        &[
            "remote-user",
            "remote-groups",
            "remote-email",
            "remote-name",
            "remote-auth-time",
        ],
    );
}

#[tokio::test]
async fn bypass_route_carries_no_identity_even_when_logged_in() {
    // Bypass means "forwarded as anonymous": the upstream must not rely on identity there.
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    let cookie = login(&gw, "alice", "password123").await;
    let seen = forwarded(
        &gw,
        &upstream,
        "/open/page",
        &format!("Cookie: {cookie}\r\n{SPOOFED}"),
    )
    .await;
    assert_none_reached(&seen, &["remote-user", "remote-groups"]);
}

#[tokio::test]
async fn strips_spoofed_identity_headers_for_anonymous_requests_that_are_refused() {
    // Refused requests never reach the upstream at all, spoofed headers or not.
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    let answer = raw_get(&gw, "/app", SPOOFED).await;
    assert_eq!(
        raw_status(&answer),
        401,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn connection_header_cannot_remove_gateway_identity_headers() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(&upstream, "").await;
    let cookie = login(&gw, "alice", "password123").await;
    let seen = forwarded(
        &gw,
        &upstream,
        "/app",
        &format!(
            "Cookie: {cookie}\r\n\
             Connection: Remote-User, remote-groups\r\n\
             Connection: REMOTE-EMAIL, Remote-Name, cookie\r\n"
        ),
    )
    .await;
    assert_alice_identity(&seen);
}

#[tokio::test]
async fn custom_identity_header_names_are_sent_and_protected() {
    let upstream = EchoUpstream::start().await;
    let gw = gateway(
        &upstream,
        "[identity_headers]\nuser = \"X-Auth-User\"\ngroups = \"X-Auth-Groups\"\n",
    )
    .await;
    let cookie = login(&gw, "alice", "password123").await;
    let seen = forwarded(
        &gw,
        &upstream,
        "/app",
        &format!(
            "Cookie: {cookie}\r\n\
             X-Auth-User: admin\r\n\
             x_auth_user: admin\r\n\
             X.Auth.Groups: root\r\n\
             {SPOOFED}"
        ),
    )
    .await;
    assert_only_spelling(&seen, "x-auth-user", "alice");
    assert_only_spelling(&seen, "x-auth-groups", "admins,users");
    // The default names are not sent any more, and still stripped when a client sends them.
    assert_none_reached(&seen, &["remote-user", "remote-groups"]);
    // Names left at their default keep working.
    assert_eq!(seen.header_all("remote-email"), ["alice@example.com"]);

    // On a bypass route the custom names are stripped too.
    let seen = forwarded(
        &gw,
        &upstream,
        "/open",
        "X-Auth-User: admin\r\nx_auth_groups: root\r\n",
    )
    .await;
    assert_none_reached(&seen, &["x-auth-user", "x-auth-groups"]);
}
