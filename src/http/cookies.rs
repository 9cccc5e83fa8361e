//! The session cookie: its name, reading it from requests and writing it on responses.
//!
//! Over HTTPS without a cookie domain the name carries the `__Host-` prefix, which browsers only
//! accept with `Secure`, `Path=/` and no `Domain`: a sibling subdomain cannot plant it.

use std::borrow::Cow;

use cookie::{Cookie, SameSite};
use http::HeaderMap;
use http::header::COOKIE;

use crate::auth::session::SessionConfig;

/// The cookie name used on a connection (`tls`: the request came over HTTPS).
pub fn session_cookie_name(config: &SessionConfig, tls: bool) -> Cow<'_, str> {
    if tls && config.domains.is_empty() && !config.cookie_name.starts_with("__Host-") {
        Cow::Owned(format!("__Host-{}", config.cookie_name))
    } else {
        Cow::Borrowed(&config.cookie_name)
    }
}

/// The session cookie's name over plain HTTP and over HTTPS, worked out once at startup: the
/// request path asks for them on every request.
#[derive(Debug, Clone)]
pub struct SessionCookieNames {
    plain: String,
    tls: String,
    /// The name without and with the `__Host-` prefix, whichever the configuration uses: the
    /// spellings the proxy examples remove before the application.
    spellings: [String; 2],
}

impl SessionCookieNames {
    pub fn new(config: &SessionConfig) -> Self {
        let base = config
            .cookie_name
            .strip_prefix("__Host-")
            .unwrap_or(&config.cookie_name);
        SessionCookieNames {
            plain: session_cookie_name(config, false).into_owned(),
            tls: session_cookie_name(config, true).into_owned(),
            spellings: [base.to_string(), format!("__Host-{base}")],
        }
    }

    /// How many cookies of the request have the session cookie's name, with or without the
    /// `__Host-` prefix, whatever the connection: what a proxy's removal of the cookie counts.
    pub fn count_in(&self, headers: &HeaderMap) -> usize {
        self.spellings
            .iter()
            .map(|name| values(headers, name).count())
            .sum()
    }

    /// See [`session_cookie_name`].
    pub fn get(&self, tls: bool) -> &str {
        if tls { &self.tls } else { &self.plain }
    }

    /// Both names (the same twice when they do not differ).
    pub fn both(&self) -> [&str; 2] {
        [&self.plain, &self.tls]
    }
}

/// The most session cookies one request is read with (see [`crate::http::identify`]); a
/// logout ends at most this many.
pub const MAX_SESSION_COOKIES: usize = 8;

/// Every value of the cookie `name` in the request (a client may send several), surrounding
/// quotes removed. Values are not interpreted here: each reader checks its own (a session id
/// has one exact shape, a language one of a fixed list). This runs on every request, so it only
/// splits the `name=value` pairs of RFC 6265's cookie header, without building cookies.
///
/// Works on the header's bytes: a neighbour that is not text (a UTF-8 value sent raw) does not
/// hide the cookies beside it; a value of `name` that is not UTF-8 is left out.
pub fn read<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    values(headers, name).collect()
}

/// [`read`] as an iterator, for the request path: nothing is allocated.
pub fn values<'h>(headers: &'h HeaderMap, name: &str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(COOKIE)
        .into_iter()
        .flat_map(|header| pairs(header.as_bytes()))
        .filter_map(move |pair| {
            let eq = memchr::memchr(b'=', pair)?;
            if pair[..eq].trim_ascii() != name.as_bytes() {
                return None;
            }
            let value = std::str::from_utf8(pair[eq + 1..].trim_ascii()).ok()?;
            Some(value.trim_matches('"'))
        })
}

/// The `;`-separated pairs of one `Cookie` header, as they are (not trimmed).
pub fn pairs(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(header);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b';', current) {
            Some(at) => {
                rest = Some(&current[at + 1..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// `Set-Cookie` value for a new session, set in answer to a request for `host` (which picks the
/// cookie domain, see [`SessionConfig::domain_for`]). `max_age`: `None` for a browser-session
/// cookie.
pub fn issue(
    config: &SessionConfig,
    tls: bool,
    host: Option<&str>,
    value: String,
    max_age: Option<std::time::Duration>,
) -> String {
    let mut c = Cookie::build((session_cookie_name(config, tls), value))
        .path("/")
        .http_only(true)
        .secure(tls)
        .same_site(SameSite::Lax);
    if let Some(domain) = host.and_then(|h| config.domain_for(h)) {
        c = c.domain(domain.domain.clone());
    }
    if let Some(age) = max_age {
        let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        c = c.max_age(cookie::time::Duration::seconds(secs));
    }
    c.build().to_string()
}

/// `Set-Cookie` value that deletes the session cookie set for `host`.
pub fn clear(config: &SessionConfig, tls: bool, host: Option<&str>) -> String {
    let mut c = Cookie::build((session_cookie_name(config, tls), ""))
        .path("/")
        .http_only(true)
        .secure(tls)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::ZERO);
    if let Some(domain) = host.and_then(|h| config.domain_for(h)) {
        c = c.domain(domain.domain.clone());
    }
    c.build().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn host_prefix_over_https_without_domain() {
        let mut c = SessionConfig::default();
        assert_eq!(session_cookie_name(&c, true), "__Host-stepgate_session");
        assert_eq!(session_cookie_name(&c, false), "stepgate_session");
        c.domains = vec![crate::auth::session::CookieDomain {
            domain: "example.com".into(),
            portal_url: None,
        }];
        assert_eq!(session_cookie_name(&c, true), "stepgate_session");

        let names = SessionCookieNames::new(&SessionConfig::default());
        assert_eq!(names.get(true), "__Host-stepgate_session");
        assert_eq!(names.get(false), "stepgate_session");
        assert_eq!(
            names.both(),
            ["stepgate_session", "__Host-stepgate_session"]
        );
    }

    #[test]
    fn issued_cookie_attributes() {
        let c = SessionConfig::default();
        let v = issue(&c, true, Some("auth.example.com"), "abc".into(), None);
        assert!(v.starts_with("__Host-stepgate_session=abc"), "{v}");
        for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
            assert!(v.contains(attr), "{v} lacks {attr}");
        }
        assert!(!v.contains("Domain"));
        let v = issue(
            &c,
            false,
            None,
            "abc".into(),
            Some(std::time::Duration::from_secs(60)),
        );
        assert!(!v.contains("Secure"));
        assert!(v.contains("Max-Age=60"));
    }

    #[test]
    fn a_neighbour_that_is_not_text_does_not_hide_the_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"pref=\xc3\xa9; stepgate_session=abc; x=\xff").unwrap(),
        );
        assert_eq!(read(&h, "stepgate_session"), ["abc"]);
        // A value of the cookie itself that is not UTF-8 is left out.
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"stepgate_session=\xff").unwrap(),
        );
        assert_eq!(read(&h, "stepgate_session"), ["abc"]);
    }

    #[test]
    fn reads_all_values_of_the_named_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; stepgate_session=x; b=2"),
        );
        h.append(COOKIE, HeaderValue::from_static("stepgate_session=y"));
        h.append(
            COOKIE,
            HeaderValue::from_static(
                " stepgate_session = \"z\" ;stepgate_session;x_stepgate_session=w",
            ),
        );
        assert_eq!(read(&h, "stepgate_session"), vec!["x", "y", "z"]);
        assert!(read(&h, "other").is_empty());
        // A value that is not text (obs-text bytes) is skipped, not guessed at.
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"stepgate_session=\xff").unwrap(),
        );
        assert_eq!(read(&h, "stepgate_session"), vec!["x", "y", "z"]);
    }
}
