//! The gateway's error type and the ONE place where an error becomes an HTTP response.
//!
//! Every variant maps to a non-2xx status (see [`Error::status`], an exhaustive match): an error in
//! an authentication decision can never let a request through.

use std::time::Duration;

use askama::Template;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::http::body::{self, Body};
use crate::http::negotiate::Format;
use crate::portal::i18n::Tr;
use crate::portal::render::Frame;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("request header fields too large")]
    HeadersTooLarge,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("ambiguous request path: {0}")]
    AmbiguousPath(String),
    #[error("no application is configured for this host")]
    UnknownHost,
    #[error("not found")]
    NotFound,
    /// `allow`: the methods the resource answers, sent as `Allow` (RFC 9110).
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("forbidden")]
    Forbidden,
    #[error("a second factor is required")]
    SecondFactorRequired,
    #[error("cross-site request refused")]
    CrossSite,
    #[error("too many attempts")]
    TooManyRequests { retry_after: Duration },
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("every connection allowed to the upstream is busy")]
    UpstreamBusy,
    #[error("upstream answered an upgrade with the wrong protocol")]
    UpstreamBadUpgrade,
    #[error("internal error: {0}")]
    Internal(String),
    #[error("not logged in")]
    Unauthenticated,
    #[error("the second factor of this login is still owed")]
    SecondFactorPending,
    #[error("a recent second factor is required")]
    ReverifyRequired { verify_url: String },
    #[error("wrong password")]
    WrongPassword,
    #[error("the new password is not acceptable: {0}")]
    WeakPassword(String),
    #[error("invalid code")]
    InvalidCode,
    #[error("a valid emailed code is required")]
    EmailCodeRequired,
    #[error("the code could not be sent")]
    CodeNotSent,
    #[error("a fresh second factor is required")]
    StepUpRequired { verify_url: String },
    #[error("step-up needs a second factor the user does not have")]
    StepUpUnavailable,
    #[error("the held form cannot be sent again")]
    HeldFormRefused,
    #[error("no set-up is waiting for confirmation")]
    NothingToConfirm,
    /// Sending the code failed in a way that may have come after it went out (a timeout, a
    /// provider's server error): it may still arrive, and it counts as sent.
    #[error("the code may not have been sent")]
    CodeDelayed,
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::AmbiguousPath(_) => StatusCode::BAD_REQUEST,
            Error::UnknownHost => StatusCode::MISDIRECTED_REQUEST,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Forbidden => StatusCode::FORBIDDEN,
            Error::SecondFactorRequired => StatusCode::FORBIDDEN,
            Error::CrossSite => StatusCode::FORBIDDEN,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Error::UpstreamBusy => StatusCode::SERVICE_UNAVAILABLE,
            Error::UpstreamBadUpgrade => StatusCode::BAD_GATEWAY,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::SecondFactorPending => StatusCode::UNAUTHORIZED,
            Error::ReverifyRequired { .. } => StatusCode::UNAUTHORIZED,
            Error::WrongPassword => StatusCode::UNAUTHORIZED,
            Error::WeakPassword(_) => StatusCode::BAD_REQUEST,
            Error::InvalidCode => StatusCode::UNAUTHORIZED,
            Error::EmailCodeRequired => StatusCode::UNAUTHORIZED,
            Error::CodeNotSent => StatusCode::SERVICE_UNAVAILABLE,
            Error::CodeDelayed => StatusCode::SERVICE_UNAVAILABLE,
            Error::StepUpRequired { .. } => StatusCode::UNAUTHORIZED,
            Error::StepUpUnavailable => StatusCode::FORBIDDEN,
            Error::HeldFormRefused => StatusCode::FORBIDDEN,
            Error::NothingToConfirm => StatusCode::CONFLICT,
        }
    }

    /// Stable machine-readable code for JSON answers.
    pub fn code(&self) -> &'static str {
        match self {
            Error::HeadersTooLarge => "headers_too_large",
            Error::BadRequest(_) => "bad_request",
            Error::AmbiguousPath(_) => "invalid_path",
            Error::UnknownHost => "unknown_host",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::PayloadTooLarge => "payload_too_large",
            Error::Forbidden => "forbidden",
            Error::SecondFactorRequired => "second_factor_required",
            Error::CrossSite => "cross_site_request",
            Error::TooManyRequests { .. } => "too_many_requests",
            Error::UpstreamUnavailable(_) => "upstream_unavailable",
            Error::UpstreamTimeout => "upstream_timeout",
            Error::UpstreamBusy => "upstream_busy",
            Error::UpstreamBadUpgrade => "upstream_bad_upgrade",
            Error::Internal(_) => "internal_error",
            Error::Unauthenticated => "authentication_required",
            Error::SecondFactorPending => "second_factor_required",
            Error::ReverifyRequired { .. } => "reverify_required",
            Error::WrongPassword => "invalid_credentials",
            Error::WeakPassword(_) => "weak_password",
            Error::InvalidCode => "invalid_code",
            Error::EmailCodeRequired => "email_code_required",
            Error::CodeNotSent => "code_not_sent",
            Error::CodeDelayed => "code_delayed",
            Error::StepUpRequired { .. } => "step_up_required",
            Error::StepUpUnavailable => "step_up_unavailable",
            Error::HeldFormRefused => "held_form_refused",
            Error::NothingToConfirm => "nothing_to_confirm",
        }
    }

    /// Catalogue keys of what the user is told: a title and a sentence. Never internals,
    /// versions or upstream addresses.
    fn public_text(&self) -> (&'static str, &'static str) {
        match self {
            Error::HeadersTooLarge => ("error.headers_too_large_title", "error.headers_too_large"),
            Error::BadRequest(_) => ("error.bad_request_title", "error.bad_request"),
            Error::AmbiguousPath(_) => ("error.bad_request_title", "error.invalid_path"),
            Error::UnknownHost => ("error.unknown_host_title", "error.unknown_host"),
            Error::NotFound => ("error.not_found_title", "error.not_found"),
            Error::MethodNotAllowed { .. } => {
                ("error.method_not_allowed_title", "error.method_not_allowed")
            }
            Error::PayloadTooLarge => ("error.headers_too_large_title", "error.payload_too_large"),
            Error::Forbidden => ("error.forbidden_title", "error.forbidden"),
            Error::SecondFactorRequired => (
                "error.second_factor_required_title",
                "error.second_factor_required",
            ),
            Error::CrossSite => ("error.cross_site_title", "error.cross_site"),
            Error::TooManyRequests { .. } => ("error.too_many_title", "error.too_many"),
            Error::UpstreamUnavailable(_) | Error::UpstreamBadUpgrade => (
                "error.upstream_unavailable_title",
                "error.upstream_unavailable",
            ),
            Error::UpstreamTimeout => ("error.upstream_timeout_title", "error.upstream_timeout"),
            Error::UpstreamBusy => ("error.upstream_busy_title", "error.upstream_busy"),
            Error::Internal(_) => ("error.internal_title", "error.internal"),
            Error::Unauthenticated => ("error.unauthenticated_title", "error.unauthenticated"),
            Error::SecondFactorPending => ("error.pending_title", "error.pending"),
            Error::ReverifyRequired { .. } => ("verify.step_up_heading", "error.reverify"),
            Error::WrongPassword => ("error.wrong_password_title", "error.wrong_password"),
            Error::WeakPassword(_) => ("error.weak_password_title", "error.weak_password"),
            Error::InvalidCode => ("error.invalid_code_title", "error.invalid_code"),
            Error::EmailCodeRequired => (
                "error.email_code_required_title",
                "error.email_code_required",
            ),
            Error::StepUpRequired { .. } => ("verify.step_up_heading", "error.step_up"),
            Error::StepUpUnavailable => (
                "error.step_up_unavailable_title",
                "error.step_up_unavailable",
            ),
            Error::HeldFormRefused => ("error.held_form_title", "error.held_form"),
            Error::CodeNotSent => ("error.code_not_sent_title", "error.code_not_sent"),
            Error::CodeDelayed => ("error.code_not_sent_title", "error.code_delayed"),
            Error::NothingToConfirm => {
                ("error.nothing_to_confirm_title", "error.nothing_to_confirm")
            }
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    f: &'a Frame,
    status: u16,
    link: Option<(&'a str, &'a str)>,
    title: &'a str,
    message: &'a str,
    /// "Try again in ..." for a 429.
    retry: Option<String>,
    /// The application is down or slow: offer to reload.
    upstream: bool,
}

/// "Try again in N seconds", or in minutes from two minutes on.
fn retry_text(t: Tr, secs: u64) -> String {
    if secs >= 120 {
        t.fill("error.retry_minutes", "minutes", secs.div_ceil(60))
    } else if secs <= 1 {
        t.get("error.retry_one_second").to_string()
    } else {
        t.fill("error.retry_seconds", "seconds", secs)
    }
}

/// Turns an error into the response the client sees: an HTML page for browsers, JSON otherwise.
pub fn error_response(err: &Error, format: Format, frame: &Frame) -> Response<Body> {
    let t = frame.t;
    // A browser that must verify or sign in first is taken there rather than shown an error.
    if format == Format::Html {
        // Back to the portal page asked for afterwards, unless it is one of the sign-in pages.
        let prefix = frame.prefix.as_str();
        let back = frame.return_to.as_deref().filter(|page| {
            let sub = page.strip_prefix(prefix).unwrap_or("");
            !["/login", "/verify", "/logout"]
                .iter()
                .any(|own| sub == *own || sub.starts_with(&format!("{own}?")))
        });
        let location = match (err, back) {
            (Error::ReverifyRequired { verify_url }, _) => Some(verify_url.clone()),
            (Error::SecondFactorPending, Some(page)) => {
                Some(crate::portal::verify_url(prefix, page))
            }
            (Error::SecondFactorPending, None) => Some(format!("{prefix}/verify")),
            (Error::Unauthenticated, Some(page)) => Some(crate::portal::login_url(prefix, page)),
            (Error::Unauthenticated, None) => Some(format!("{prefix}/login")),
            _ => None,
        };
        if let Some(location) = location
            && let Ok(resp) = crate::portal::render::redirect(StatusCode::SEE_OTHER, &location)
        {
            return resp;
        }
    }
    let status = err.status();
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), error = %err, "request failed");
    } else {
        tracing::debug!(status = status.as_u16(), error = %err, "request refused");
    }
    let (title_key, message_key) = err.public_text();
    let (title, message) = (t.get(title_key), t.get(message_key));
    let retry_after_secs = match err {
        Error::TooManyRequests { retry_after } => Some(retry_after.as_secs().max(1)),
        // Connections to the upstream free up within moments.
        Error::UpstreamBusy => Some(1),
        _ => None,
    };
    let (content_type, bytes) = match format {
        Format::Json => {
            let mut v = serde_json::json!({ "error": err.code(), "message": message });
            if let Some(secs) = retry_after_secs {
                v["retry_after"] = secs.into();
            }
            if let Error::ReverifyRequired { verify_url } | Error::StepUpRequired { verify_url } =
                err
            {
                v["verify_url"] = verify_url.as_str().into();
            }
            ("application/json", v.to_string())
        }
        Format::Html => {
            let settings_url = format!("{}/settings", frame.prefix);
            let link = match err {
                Error::StepUpRequired { verify_url } => {
                    Some((verify_url.as_str(), t.get("error.verify_link")))
                }
                Error::StepUpUnavailable
                | Error::SecondFactorRequired
                | Error::NothingToConfirm => {
                    Some((settings_url.as_str(), t.get("error.settings_link")))
                }
                _ => None,
            };
            let page = ErrorPage {
                f: frame,
                status: status.as_u16(),
                link,
                title,
                message,
                // The page of a busy application offers to reload instead.
                retry: match err {
                    Error::TooManyRequests { .. } => retry_after_secs.map(|s| retry_text(t, s)),
                    _ => None,
                },
                upstream: matches!(
                    err,
                    Error::UpstreamUnavailable(_)
                        | Error::UpstreamTimeout
                        | Error::UpstreamBusy
                        | Error::UpstreamBadUpgrade
                ),
            };
            let html = page
                .render()
                .unwrap_or_else(|_| format!("<!doctype html><title>{}</title>", status.as_u16()));
            ("text/html; charset=utf-8", html)
        }
    };
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = status;
    crate::portal::render::security_headers(resp.headers_mut());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = retry_after_secs {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Error::MethodNotAllowed { allow } = err {
        h.insert(ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::PortalConfig;
    use crate::notify::Lang;
    use crate::portal::i18n::{self, LANGS};

    fn portal() -> Frame {
        frame(Lang::En)
    }

    fn frame(lang: Lang) -> Frame {
        let portal = PortalConfig::default();
        Frame::new(&portal, lang, Some(""))
    }

    async fn body_text(resp: Response<Body>) -> String {
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    #[test]
    fn every_error_text_is_in_every_catalogue() {
        for e in every_error() {
            let (title, message) = e.public_text();
            for lang in LANGS {
                assert!(
                    i18n::has_key(lang, title),
                    "{e:?}: {title} ({})",
                    lang.tag()
                );
                assert!(
                    i18n::has_key(lang, message),
                    "{e:?}: {message} ({})",
                    lang.tag()
                );
            }
        }
    }

    #[tokio::test]
    async fn error_pages_speak_french() {
        let e = Error::UpstreamTimeout;
        let resp = error_response(&e, Format::Html, &frame(Lang::Fr));
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        let text = body_text(resp).await;
        assert!(text.contains("<html lang=\"fr\""), "{text}");
        assert!(text.contains("Délai dépassé"), "{text}");
        let resp = error_response(&e, Format::Json, &frame(Lang::Fr));
        assert!(
            body_text(resp)
                .await
                .contains("\"error\":\"upstream_timeout\"")
        );
    }

    #[tokio::test]
    async fn too_many_requests_page_shows_the_wait() {
        let e = Error::TooManyRequests {
            retry_after: Duration::from_secs(42),
        };
        let text = body_text(error_response(&e, Format::Html, &portal())).await;
        assert!(text.contains("Try again in 42 seconds."), "{text}");
        let e = Error::TooManyRequests {
            retry_after: Duration::from_secs(600),
        };
        let text = body_text(error_response(&e, Format::Html, &frame(Lang::Fr))).await;
        assert!(text.contains("Réessayez dans 10 minutes."), "{text}");
        let e = Error::TooManyRequests {
            retry_after: Duration::from_secs(1),
        };
        let text = body_text(error_response(&e, Format::Html, &portal())).await;
        assert!(text.contains("Try again in 1 second."), "{text}");
        let text = body_text(error_response(&e, Format::Html, &frame(Lang::Fr))).await;
        assert!(text.contains("Réessayez dans 1 seconde."), "{text}");
    }

    fn every_error() -> Vec<Error> {
        vec![
            Error::HeadersTooLarge,
            Error::BadRequest("x"),
            Error::AmbiguousPath("x".into()),
            Error::UnknownHost,
            Error::NotFound,
            Error::MethodNotAllowed { allow: "GET, HEAD" },
            Error::PayloadTooLarge,
            Error::Forbidden,
            Error::SecondFactorRequired,
            Error::CrossSite,
            Error::TooManyRequests {
                retry_after: Duration::from_secs(30),
            },
            Error::UpstreamUnavailable("connection refused".into()),
            Error::UpstreamTimeout,
            Error::UpstreamBusy,
            Error::UpstreamBadUpgrade,
            Error::Internal("db".into()),
            Error::Unauthenticated,
            Error::SecondFactorPending,
            Error::ReverifyRequired {
                verify_url: "/v".into(),
            },
            Error::WrongPassword,
            Error::WeakPassword("short".into()),
            Error::InvalidCode,
            Error::EmailCodeRequired,
            Error::CodeNotSent,
            Error::StepUpRequired {
                verify_url: "/v".into(),
            },
            Error::StepUpUnavailable,
            Error::HeldFormRefused,
            Error::NothingToConfirm,
            Error::CodeDelayed,
        ]
    }

    /// Compiles only while it names every variant: a new variant must be numbered here, and
    /// [`every_error_lists_each_variant_once`] then fails until [`every_error`] has it too.
    fn variant_number(e: &Error) -> usize {
        match e {
            Error::HeadersTooLarge => 0,
            Error::BadRequest(_) => 1,
            Error::AmbiguousPath(_) => 2,
            Error::UnknownHost => 3,
            Error::NotFound => 4,
            Error::MethodNotAllowed { .. } => 5,
            Error::PayloadTooLarge => 6,
            Error::Forbidden => 7,
            Error::SecondFactorRequired => 8,
            Error::CrossSite => 9,
            Error::TooManyRequests { .. } => 10,
            Error::UpstreamUnavailable(_) => 11,
            Error::UpstreamTimeout => 12,
            Error::UpstreamBusy => 13,
            Error::UpstreamBadUpgrade => 14,
            Error::Internal(_) => 15,
            Error::Unauthenticated => 16,
            Error::SecondFactorPending => 17,
            Error::ReverifyRequired { .. } => 18,
            Error::WrongPassword => 19,
            Error::WeakPassword(_) => 20,
            Error::InvalidCode => 21,
            Error::EmailCodeRequired => 22,
            Error::CodeNotSent => 23,
            Error::StepUpRequired { .. } => 24,
            Error::StepUpUnavailable => 25,
            Error::HeldFormRefused => 26,
            Error::NothingToConfirm => 27,
            Error::CodeDelayed => 28,
        }
    }

    #[test]
    fn every_error_lists_each_variant_once() {
        let numbers: Vec<usize> = every_error().iter().map(variant_number).collect();
        assert_eq!(numbers, (0..=28).collect::<Vec<_>>());
    }

    #[test]
    fn no_error_is_ever_a_success() {
        for e in every_error() {
            let s = e.status();
            assert!(s.is_client_error() || s.is_server_error(), "{e:?} -> {s}");
        }
    }

    #[test]
    fn statuses_are_pinned() {
        let got: Vec<u16> = every_error().iter().map(|e| e.status().as_u16()).collect();
        assert_eq!(
            got,
            vec![
                431, 400, 400, 421, 404, 405, 413, 403, 403, 403, 429, 502, 504, 503, 502, 500,
                401, 401, 401, 401, 400, 401, 401, 503, 401, 403, 403, 409, 503
            ]
        );
    }

    #[tokio::test]
    async fn internals_never_reach_the_client() {
        let e = Error::UpstreamUnavailable("tcp connect error 10.1.2.3:8080".into());
        for format in [Format::Html, Format::Json] {
            let resp = error_response(&e, format, &portal());
            let text = body_text(resp).await;
            assert!(!text.contains("10.1.2.3"), "{text}");
            assert!(!text.contains("tcp connect"), "{text}");
        }
    }

    #[test]
    fn allow_is_sent_on_405() {
        let e = Error::MethodNotAllowed {
            allow: "GET, HEAD, POST",
        };
        for format in [Format::Html, Format::Json] {
            let resp = error_response(&e, format, &portal());
            assert_eq!(resp.status(), 405);
            assert_eq!(resp.headers()[ALLOW], "GET, HEAD, POST");
        }
    }

    #[test]
    fn retry_after_is_sent_on_429() {
        let e = Error::TooManyRequests {
            retry_after: Duration::from_secs(42),
        };
        let resp = error_response(&e, Format::Json, &portal());
        assert_eq!(resp.headers()[RETRY_AFTER], "42");
    }

    #[tokio::test]
    async fn a_busy_upstream_is_a_503_to_retry_in_a_second() {
        let resp = error_response(&Error::UpstreamBusy, Format::Json, &portal());
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[RETRY_AFTER], "1");
        let text = body_text(resp).await;
        assert!(text.contains("\"error\":\"upstream_busy\""), "{text}");
        assert!(text.contains("\"retry_after\":1"), "{text}");
        let text = body_text(error_response(
            &Error::UpstreamBusy,
            Format::Html,
            &frame(Lang::Fr),
        ))
        .await;
        assert!(text.contains("Application surchargée"), "{text}");
        assert!(
            !text.contains("Réessayez dans 1"),
            "no countdown on the page: {text}"
        );
    }

    fn location(err: &Error, frame: &Frame) -> Option<String> {
        let resp = error_response(err, Format::Html, frame);
        resp.headers()
            .get(http::header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn browsers_come_back_to_the_portal_page_they_asked_for() {
        let settings = portal().returning_to(Some("/.stepgate/settings?tab=2".into()));
        assert_eq!(
            location(&Error::Unauthenticated, &settings).as_deref(),
            Some("/.stepgate/login?rd=%2F.stepgate%2Fsettings%3Ftab%3D2")
        );
        let verify = location(&Error::SecondFactorPending, &settings).unwrap();
        assert!(
            verify.starts_with("/.stepgate/verify?rd=%2F.stepgate%2Fsettings"),
            "{verify}"
        );
        // Never back to a sign-in page itself, and nothing to come back to without a page.
        for own in [
            "/.stepgate/login?rd=%2F",
            "/.stepgate/logout",
            "/.stepgate/verify",
        ] {
            let frame = portal().returning_to(Some(own.into()));
            assert_eq!(
                location(&Error::Unauthenticated, &frame).as_deref(),
                Some("/.stepgate/login"),
                "{own}"
            );
        }
        assert_eq!(
            location(&Error::Unauthenticated, &portal()).as_deref(),
            Some("/.stepgate/login")
        );
        assert_eq!(location(&Error::Forbidden, &settings), None);
    }
}
