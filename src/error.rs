//! The gateway's error type and the ONE place where an error becomes an HTTP response.
//!
//! Every variant maps to a non-2xx status (see [`Error::status`], an exhaustive match): an error in
//! an authentication decision can never let a request through.

use std::time::Duration;

use askama::Template;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::config::PortalConfig;
use crate::http::body::{self, Body};
use crate::http::negotiate::Format;

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
    #[error("method not allowed")]
    MethodNotAllowed,
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
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::AmbiguousPath(_) => StatusCode::BAD_REQUEST,
            Error::UnknownHost => StatusCode::MISDIRECTED_REQUEST,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Forbidden => StatusCode::FORBIDDEN,
            Error::SecondFactorRequired => StatusCode::FORBIDDEN,
            Error::CrossSite => StatusCode::FORBIDDEN,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
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
            Error::StepUpRequired { .. } => StatusCode::UNAUTHORIZED,
            Error::StepUpUnavailable => StatusCode::FORBIDDEN,
            Error::HeldFormRefused => StatusCode::FORBIDDEN,
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
            Error::MethodNotAllowed => "method_not_allowed",
            Error::PayloadTooLarge => "payload_too_large",
            Error::Forbidden => "forbidden",
            Error::SecondFactorRequired => "second_factor_required",
            Error::CrossSite => "cross_site_request",
            Error::TooManyRequests { .. } => "too_many_requests",
            Error::UpstreamUnavailable(_) => "upstream_unavailable",
            Error::UpstreamTimeout => "upstream_timeout",
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
            Error::StepUpRequired { .. } => "step_up_required",
            Error::StepUpUnavailable => "step_up_unavailable",
            Error::HeldFormRefused => "held_form_refused",
        }
    }

    /// What the user is told. Never internals, versions or upstream addresses.
    fn public_text(&self) -> (&'static str, &'static str) {
        match self {
            Error::HeadersTooLarge => (
                "Request too large",
                "The request headers are too large. Clearing this site's cookies may help.",
            ),
            Error::BadRequest(_) => ("Bad request", "The request could not be understood."),
            Error::AmbiguousPath(_) => {
                ("Bad request", "The address of this request is not allowed.")
            }
            Error::UnknownHost => (
                "Unknown site",
                "No application is configured for this address.",
            ),
            Error::NotFound => ("Not found", "There is nothing at this address."),
            Error::MethodNotAllowed => (
                "Method not allowed",
                "This address does not accept that kind of request.",
            ),
            Error::PayloadTooLarge => ("Request too large", "The submitted data is too large."),
            Error::Forbidden => (
                "Access denied",
                "You do not have permission to open this page.",
            ),
            Error::SecondFactorRequired => (
                "Second factor required",
                "This page needs a second factor, and none is set up for your account yet.",
            ),
            Error::CrossSite => (
                "Request refused",
                "This form was submitted from another site and was refused.",
            ),
            Error::TooManyRequests { .. } => (
                "Too many attempts",
                "Too many attempts were made. Please wait before trying again.",
            ),
            Error::UpstreamUnavailable(_) | Error::UpstreamBadUpgrade => (
                "Application unavailable",
                "The application behind this gateway is not responding. Please try again shortly.",
            ),
            Error::UpstreamTimeout => (
                "Application timed out",
                "The application behind this gateway took too long to answer. Please try again.",
            ),
            Error::Internal(_) => (
                "Something went wrong",
                "The request could not be completed. Please try again.",
            ),
            Error::Unauthenticated => ("Sign-in required", "Please sign in first."),
            Error::SecondFactorPending => (
                "Verification required",
                "Finish signing in with your second factor first.",
            ),
            Error::ReverifyRequired { .. } => (
                "Confirm it's you",
                "For this change, confirm it's you with your second factor first.",
            ),
            Error::WrongPassword => ("Wrong password", "The password is not right."),
            Error::WeakPassword(_) => (
                "Password not accepted",
                "The new password does not meet the password rules.",
            ),
            Error::InvalidCode => (
                "Wrong code",
                "That code is not right. Check it and try again.",
            ),
            Error::EmailCodeRequired => (
                "Email code required",
                "Enter the code we emailed you to set up two-step verification.",
            ),
            Error::StepUpRequired { .. } => (
                "Confirm it's you",
                "This action needs a recent confirmation with your second factor. Confirm it, then submit again.",
            ),
            Error::StepUpUnavailable => (
                "Second factor needed",
                "This page needs a recent confirmation with a second factor, and your account has none. Set one up in your security settings first.",
            ),
            Error::HeldFormRefused => (
                "Form expired",
                "This form can no longer be sent: it was already sent, it has expired, or it belongs to another session. Please fill it in again.",
            ),
            Error::CodeNotSent => (
                "Code not sent",
                "We could not send the code. Please try again.",
            ),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    product: &'a str,
    prefix: &'a str,
    link: Option<(&'a str, &'a str)>,
    title: &'a str,
    message: &'a str,
    retry_after_secs: Option<u64>,
}

/// Turns an error into the response the client sees: an HTML page for browsers, JSON otherwise.
pub fn error_response(err: &Error, format: Format, portal: &PortalConfig) -> Response<Body> {
    // A browser that must verify or sign in first is taken there rather than shown an error.
    if format == Format::Html {
        let location = match err {
            Error::ReverifyRequired { verify_url } => Some(verify_url.clone()),
            Error::SecondFactorPending => Some(format!("{}/verify", portal.prefix)),
            Error::Unauthenticated => Some(format!("{}/login", portal.prefix)),
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
    let (title, message) = err.public_text();
    let retry_after_secs = match err {
        Error::TooManyRequests { retry_after } => Some(retry_after.as_secs().max(1)),
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
            let settings_url = format!("{}/settings", portal.prefix);
            let link = match err {
                Error::StepUpRequired { verify_url } => {
                    Some((verify_url.as_str(), "Confirm it's you"))
                }
                Error::StepUpUnavailable => Some((settings_url.as_str(), "Security settings")),
                _ => None,
            };
            let page = ErrorPage {
                product: &portal.title,
                prefix: &portal.prefix,
                link,
                title,
                message,
                retry_after_secs,
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
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal() -> PortalConfig {
        PortalConfig {
            prefix: "/.stepgate".into(),
            title: "Stepgate".into(),
            url: None,
        }
    }

    fn every_error() -> Vec<Error> {
        vec![
            Error::HeadersTooLarge,
            Error::BadRequest("x"),
            Error::AmbiguousPath("x".into()),
            Error::UnknownHost,
            Error::NotFound,
            Error::MethodNotAllowed,
            Error::PayloadTooLarge,
            Error::Forbidden,
            Error::SecondFactorRequired,
            Error::CrossSite,
            Error::TooManyRequests {
                retry_after: Duration::from_secs(30),
            },
            Error::UpstreamUnavailable("connection refused".into()),
            Error::UpstreamTimeout,
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
        ]
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
                431, 400, 400, 421, 404, 405, 413, 403, 403, 403, 429, 502, 504, 502, 500, 401,
                401, 401, 401, 400, 401, 401, 503, 401, 403, 403
            ]
        );
    }

    #[tokio::test]
    async fn internals_never_reach_the_client() {
        let e = Error::UpstreamUnavailable("tcp connect error 10.1.2.3:8080".into());
        for format in [Format::Html, Format::Json] {
            let resp = error_response(&e, format, &portal());
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            let text = String::from_utf8_lossy(&body);
            assert!(!text.contains("10.1.2.3"), "{text}");
            assert!(!text.contains("tcp connect"), "{text}");
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
}
