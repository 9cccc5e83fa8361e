//! The demo's built-in "legacy console": a tiny web app that the demo puts behind the gateway.
//!
//! It trusts whatever identity headers it receives (that is the gateway's job) and shows them,
//! so a visitor can see what the gateway forwarded:
//!
//! - `GET /` home: the identity headers received, in a table (HTML-escaped by askama);
//! - `GET /public`: a page anyone may see;
//! - `GET /settings`: a "sensitive settings" form; `POST /settings` echoes "Saved" and the value;
//! - `GET /api/whoami`: the identity headers as JSON.
//!
//! Run it with [`serve_console`]; it never listens on anything but the listener it is given.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use askama::Template;
use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// Headers shown on the home page and in `/api/whoami`, in display order.
pub const SHOWN_HEADERS: [&str; 8] = [
    "Remote-User",
    "Remote-Email",
    "Remote-Name",
    "Remote-Groups",
    "Remote-Auth-Time",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
];

/// Largest `POST /settings` body accepted.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// A client must send its request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown is signalled, open connections get this long to finish.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serve the demo console on `listener` until `shutdown` completes.
///
/// The returned future runs the server: await it, or `tokio::spawn` it and keep the
/// `JoinHandle`. When `shutdown` resolves, the listener is closed, open connections are
/// asked to finish (HTTP/1 keep-alive ends, HTTP/2 sends GOAWAY) and the future resolves once
/// they have, or after a drain deadline of a few seconds. Accept errors are logged, not fatal.
pub async fn serve_console<F>(listener: TcpListener, shutdown: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service_fn(handle));
                    let conn = graceful.watch(conn.into_owned());
                    tokio::spawn(async move {
                        if let Err(error) = conn.await {
                            tracing::debug!(%error, "demo console: connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "demo console: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = &mut shutdown => break,
        }
    }

    drop(listener);
    if tokio::time::timeout(DRAIN_DEADLINE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("demo console: connections still open after the drain deadline");
    }
}

/// One row of the identity table: a header name and what was received for it.
struct HeaderRow {
    name: &'static str,
    /// All received values joined with ", " (a repeated header shows every copy), or `None`.
    value: Option<String>,
}

#[derive(Template)]
#[template(path = "console_home.html")]
struct HomePage {
    user: Option<String>,
    rows: Vec<HeaderRow>,
}

#[derive(Template)]
#[template(path = "console_public.html")]
struct PublicPage;

#[derive(Template)]
#[template(path = "console_settings.html")]
struct SettingsPage {
    saved: Option<String>,
}

#[derive(Template)]
#[template(path = "console_not_found.html")]
struct NotFoundPage {
    path: String,
}

/// Where a request goes, decided from method and path alone.
enum Route {
    Home,
    Public,
    ShowSettings,
    SaveSettings,
    WhoAmI,
    MethodNotAllowed(&'static str),
    NotFound,
}

fn route(method: &Method, path: &str) -> Route {
    let is_read = *method == Method::GET || *method == Method::HEAD;
    match path {
        "/" | "/public" | "/api/whoami" if !is_read => Route::MethodNotAllowed("GET, HEAD"),
        "/" => Route::Home,
        "/public" => Route::Public,
        "/api/whoami" => Route::WhoAmI,
        "/settings" if is_read => Route::ShowSettings,
        "/settings" if *method == Method::POST => Route::SaveSettings,
        "/settings" => Route::MethodNotAllowed("GET, HEAD, POST"),
        _ => Route::NotFound,
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match route(req.method(), req.uri().path()) {
        Route::Home => {
            let rows = identity_rows(req.headers());
            let user = header_value(req.headers(), "Remote-User");
            render(StatusCode::OK, &HomePage { user, rows })
        }
        Route::Public => render(StatusCode::OK, &PublicPage),
        Route::ShowSettings => render(StatusCode::OK, &SettingsPage { saved: None }),
        Route::SaveSettings => save_settings(req).await,
        Route::WhoAmI => whoami(req.headers()),
        Route::MethodNotAllowed(allow) => {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            response
        }
        Route::NotFound => {
            let path = req.uri().path().to_owned();
            render(StatusCode::NOT_FOUND, &NotFoundPage { path })
        }
    };
    Ok(response)
}

async fn save_settings(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let is_form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected an application/x-www-form-urlencoded form\n",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "form too large\n"),
    };
    let value = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "value")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    render(StatusCode::OK, &SettingsPage { saved: Some(value) })
}

fn whoami(headers: &HeaderMap) -> Response<Full<Bytes>> {
    let mut object = serde_json::Map::new();
    for name in SHOWN_HEADERS {
        let value = header_value(headers, name).map_or(serde_json::Value::Null, Into::into);
        object.insert(name.to_owned(), value);
    }
    let groups: Vec<serde_json::Value> = header_value(headers, "Remote-Groups")
        .map(|groups| {
            groups
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(|g| g.to_owned().into())
                .collect()
        })
        .unwrap_or_default();
    object.insert("groups".to_owned(), groups.into());
    let body = serde_json::Value::Object(object).to_string();
    respond(StatusCode::OK, "application/json", body)
}

fn identity_rows(headers: &HeaderMap) -> Vec<HeaderRow> {
    SHOWN_HEADERS
        .iter()
        .map(|&name| HeaderRow {
            name,
            value: header_value(headers, name),
        })
        .collect()
}

/// Every value received for `name`, joined with ", "; bytes that are not UTF-8 become U+FFFD.
fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    if values.is_empty() {
        None
    } else {
        Some(values.join(", "))
    }
}

fn render(status: StatusCode, page: &impl Template) -> Response<Full<Bytes>> {
    match page.render() {
        Ok(html) => respond(status, "text/html; charset=utf-8", html),
        Err(error) => {
            tracing::error!(%error, "demo console: template failed to render");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", text.to_owned())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    struct Console {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<()>,
    }

    impl Console {
        async fn start() -> Console {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local addr");
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve_console(listener, async move {
                let _ = stopped.await;
            }));
            Console {
                addr,
                stop: Some(stop),
                task,
            }
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{}", self.addr, path)
        }
    }

    impl Drop for Console {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    #[tokio::test]
    async fn home_shows_identity_headers() {
        let console = Console::start().await;
        let resp = client()
            .get(console.url("/"))
            .header("Remote-User", "alice")
            .header("Remote-Email", "alice@example.test")
            .header("Remote-Groups", "admins,dev")
            .header("X-Forwarded-Proto", "https")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()[CONTENT_TYPE.as_str()],
            "text/html; charset=utf-8"
        );
        let html = resp.text().await.expect("body");
        assert!(
            html.contains("Signed in as <strong>alice</strong>"),
            "{html}"
        );
        assert!(html.contains("<code>alice@example.test</code>"), "{html}");
        assert!(html.contains("<code>admins,dev</code>"), "{html}");
        assert!(html.contains("<code>https</code>"), "{html}");
        for name in SHOWN_HEADERS {
            assert!(html.contains(name), "row for {name} missing");
        }
        assert!(html.contains("href=\"/public\""));
        assert!(html.contains("href=\"/settings\""));
        assert!(html.contains("href=\"/.stepgate/logout\""));
        assert!(html.contains("href=\"/.stepgate/settings\""));
    }

    #[tokio::test]
    async fn home_without_identity_says_so() {
        let console = Console::start().await;
        let html = client()
            .get(console.url("/"))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        assert!(html.contains("No Remote-User header was received"));
        assert!(!html.contains("Signed in as"));
        assert_eq!(
            html.matches("class=\"absent\"").count(),
            SHOWN_HEADERS.len()
        );
    }

    #[tokio::test]
    async fn escapes_script_injected_through_identity_headers() {
        let console = Console::start().await;
        let evil = "<script>alert(1)</script>";
        let html = client()
            .get(console.url("/"))
            .header("Remote-User", evil)
            .header("Remote-Name", "\"><img src=x onerror=alert(1)>")
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"));
    }

    #[tokio::test]
    async fn public_page_is_served() {
        let console = Console::start().await;
        let resp = client()
            .get(console.url("/public"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        let html = resp.text().await.expect("body");
        assert!(html.contains("Anyone can see this page"));
    }

    #[tokio::test]
    async fn settings_form_and_save_echoes_value_escaped() {
        let console = Console::start().await;
        let html = client()
            .get(console.url("/settings"))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        assert!(html.contains("Sensitive settings"));
        assert!(html.contains("<form method=\"post\" action=\"/settings\">"));
        assert!(!html.contains("Saved:"));

        let resp = client()
            .post(console.url("/settings"))
            .header(CONTENT_TYPE.as_str(), "application/x-www-form-urlencoded")
            .body("value=blue+%3Cb%3Esky%3C%2Fb%3E")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        let html = resp.text().await.expect("body");
        assert!(html.contains("Saved: <code>blue "), "{html}");
        assert!(html.contains("sky"), "{html}");
        assert!(!html.contains("<b>sky"), "{html}");
    }

    #[tokio::test]
    async fn settings_rejects_non_form_and_oversized_bodies() {
        let console = Console::start().await;
        let resp = client()
            .post(console.url("/settings"))
            .header(CONTENT_TYPE.as_str(), "application/json")
            .body("{\"value\":1}")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 415);

        let resp = client()
            .post(console.url("/settings"))
            .header(CONTENT_TYPE.as_str(), "application/x-www-form-urlencoded")
            .body(format!("value={}", "a".repeat(MAX_FORM_BYTES + 1)))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 413);
    }

    #[tokio::test]
    async fn whoami_returns_identity_json() {
        let console = Console::start().await;
        let resp = client()
            .get(console.url("/api/whoami"))
            .header("Remote-User", "bob")
            .header("Remote-Groups", "ops, admins")
            .header("Remote-Auth-Time", "2026-01-01T00:00:00Z")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[CONTENT_TYPE.as_str()], "application/json");
        let json: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(json["Remote-User"], "bob");
        assert_eq!(json["Remote-Email"], serde_json::Value::Null);
        assert_eq!(json["Remote-Auth-Time"], "2026-01-01T00:00:00Z");
        assert_eq!(json["groups"], serde_json::json!(["ops", "admins"]));
    }

    #[tokio::test]
    async fn unknown_path_is_404_and_wrong_method_is_405() {
        let console = Console::start().await;
        let resp = client()
            .get(console.url("/nope?<x>"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 404);

        let resp = client()
            .delete(console.url("/settings"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["allow"], "GET, HEAD, POST");

        let resp = client()
            .post(console.url("/api/whoami"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 405);
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let mut console = Console::start().await;
        let resp = client()
            .get(console.url("/public"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        drop(resp);
        if let Some(stop) = console.stop.take() {
            stop.send(()).expect("server still running");
        }
        (&mut console.task).await.expect("server task ends cleanly");
        let refused = client().get(console.url("/public")).send().await;
        assert!(refused.is_err(), "listener should be closed after shutdown");
    }
}
