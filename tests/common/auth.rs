//! Helpers for tests of login, sessions and access rules through a running [`Gateway`]:
//! accounts created straight through the user directory, logins over HTTP, and requests that
//! carry a session cookie as a browser or as an API client would.
//!
//! ```ignore
//! let gw = Gateway::builder().upstream(&upstream.url()).start().await;
//! create_user(&gw, "alice", "password123", &["admins"]).await;
//! let cookie = login(&gw, "alice", "password123").await;   // "stepgate_session=..."
//! let resp = get(&gw, "/app", Some(&cookie), Client::Api).await;
//! ```

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, COOKIE, HeaderMap, SET_COOKIE};

use stepgate::auth::directory::NewUser;
use stepgate::auth::password::Password;
use stepgate::auth::user::{User, Username};
use stepgate::clock::{ManualClock, SharedClock, Timestamp};

use super::gateway::Gateway;
use super::http_client;

/// The portal prefix every test gateway uses.
pub const PREFIX: &str = "/.stepgate";

/// An `Accept` header a browser sends when navigating.
pub const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// Safety net for one HTTP exchange in these helpers; a passing test never waits for it.
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(30);

/// Monday 2026-01-05 00:00:00 UTC: where the manual clocks of these tests start.
pub const START: Timestamp = Timestamp(1_767_571_200_000);

/// A manual clock at [`START`], and the same clock as the gateway wants it.
pub fn manual_clock() -> (ManualClock, SharedClock) {
    let clock = ManualClock::new(START);
    let shared: SharedClock = Arc::new(clock.clone());
    (clock, shared)
}

/// Who is asking: a browser navigating (`Accept: text/html...`) or an API client (JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Browser,
    Api,
}

impl Client {
    pub fn accept(self) -> &'static str {
        match self {
            Client::Browser => BROWSER_ACCEPT,
            Client::Api => "application/json",
        }
    }
}

pub fn username(name: &str) -> Username {
    Username::parse(name).expect("valid username")
}

/// Creates an account through the gateway's user directory (display name = username, no email).
pub async fn create_user(gw: &Gateway, name: &str, password: &str, groups: &[&str]) -> User {
    create_user_full(gw, name, password, groups, None, None).await
}

/// Creates an account with a display name and an email address.
pub async fn create_user_full(
    gw: &Gateway,
    name: &str,
    password: &str,
    groups: &[&str],
    display_name: Option<&str>,
    email: Option<&str>,
) -> User {
    let hash = gw
        .app()
        .hasher
        .hash(Password::new(password.to_owned()))
        .await
        .expect("hash password");
    gw.app()
        .users
        .create(NewUser {
            username: username(name),
            display_name: display_name.map(str::to_owned),
            email: email.map(str::to_owned),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            password_hash: hash,
        })
        .expect("create user")
}

/// Runs one reqwest exchange under [`EXCHANGE_DEADLINE`].
pub async fn send(builder: reqwest::RequestBuilder) -> reqwest::Response {
    tokio::time::timeout(EXCHANGE_DEADLINE, builder.send())
        .await
        .expect("request timed out")
        .expect("request failed")
}

/// The body of a response as text, bounded in time.
pub async fn text(resp: reqwest::Response) -> String {
    tokio::time::timeout(EXCHANGE_DEADLINE, resp.text())
        .await
        .expect("body timed out")
        .expect("body")
}

/// The body of a response as JSON, bounded in time.
pub async fn json(resp: reqwest::Response) -> serde_json::Value {
    let body = text(resp).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// `POST {prefix}/login` as an urlencoded form on the plain listener, with extra headers.
/// `fields` are sent as given (username, password, remember_me, rd).
pub async fn post_login(
    gw: &Gateway,
    fields: &[(&str, &str)],
    client: Client,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    post_login_to(
        &http_client(),
        &gw.url_for(&format!("{PREFIX}/login")),
        fields,
        client,
        headers,
    )
    .await
}

/// `POST` a login form to `url` with `http` (plain or TLS client).
pub async fn post_login_to(
    http: &reqwest::Client,
    url: &str,
    fields: &[(&str, &str)],
    client: Client,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut builder = http.post(url).header(ACCEPT, client.accept()).form(fields);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(builder).await
}

/// The `name=value` pair of the session cookie set by `headers` (`Set-Cookie`), if any cookie
/// with a non-empty value is set.
pub fn set_session_cookie(headers: &HeaderMap) -> Option<String> {
    all_set_cookies(headers)
        .into_iter()
        .filter_map(|sc| sc.split(';').next().map(|p| p.trim().to_owned()))
        .find(|pair| {
            pair.split_once('=').is_some_and(|(name, value)| {
                name.ends_with("stepgate_session") && !value.is_empty()
            })
        })
}

/// Every `Set-Cookie` value in `headers`.
pub fn all_set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ASCII Set-Cookie").to_owned())
        .collect()
}

/// Logs in over the plain listener (form, API client) and returns the session cookie as
/// `name=value`, ready for a `Cookie` header. Panics unless the login succeeds.
pub async fn login(gw: &Gateway, name: &str, password: &str) -> String {
    login_with(gw, &[("username", name), ("password", password)], &[]).await
}

/// Like [`login`], with the form fields and extra request headers given.
pub async fn login_with(gw: &Gateway, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> String {
    let resp = post_login(gw, fields, Client::Api, headers).await;
    let status = resp.status();
    let cookie = set_session_cookie(resp.headers());
    let body = text(resp).await;
    assert_eq!(status, 200, "login failed: {body}");
    cookie.unwrap_or_else(|| panic!("login set no session cookie: {body}"))
}

/// `GET path` on the plain listener, with the session cookie (`name=value`) if given.
pub async fn get(
    gw: &Gateway,
    path: &str,
    cookie: Option<&str>,
    client: Client,
) -> reqwest::Response {
    get_with(gw, path, cookie, client, &[]).await
}

/// Like [`get`], with extra request headers (e.g. `Host`).
pub async fn get_with(
    gw: &Gateway,
    path: &str,
    cookie: Option<&str>,
    client: Client,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut builder = http_client()
        .get(gw.url_for(path))
        .header(ACCEPT, client.accept());
    if let Some(cookie) = cookie {
        builder = builder.header(COOKIE, cookie);
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(builder).await
}

/// `GET {prefix}/api/session` with the cookie: the status and the JSON body.
pub async fn session_info(gw: &Gateway, cookie: Option<&str>) -> (u16, serde_json::Value) {
    let resp = get(gw, &format!("{PREFIX}/api/session"), cookie, Client::Api).await;
    let status = resp.status().as_u16();
    (status, json(resp).await)
}

/// Is the session behind `cookie` alive? Asks `{prefix}/api/session` (200 vs 401); any other
/// answer fails the test.
pub async fn is_logged_in(gw: &Gateway, cookie: &str) -> bool {
    let (status, body) = session_info(gw, Some(cookie)).await;
    match status {
        200 => {
            assert_eq!(body["authenticated"], true, "{body}");
            true
        }
        401 => {
            assert_eq!(body["authenticated"], false, "{body}");
            false
        }
        other => panic!("unexpected status {other} from api/session: {body}"),
    }
}

/// `POST {prefix}/logout` with the cookie, as an API client; returns the status.
pub async fn logout(gw: &Gateway, cookie: &str) -> u16 {
    let builder = http_client()
        .post(gw.url_for(&format!("{PREFIX}/logout")))
        .header(ACCEPT, "application/json")
        .header(COOKIE, cookie);
    send(builder).await.status().as_u16()
}

/// The `Location` header of a response.
pub fn location(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .map(|v| v.to_str().expect("ASCII Location").to_owned())
}

/// The status code at the start of a raw HTTP/1.1 answer (`HTTP/1.1 403 Forbidden` -> 403).
pub fn raw_status(answer: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}
