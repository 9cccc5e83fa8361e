//! Rendering portal answers: HTML pages (askama, auto-escaped) or JSON, always with the
//! gateway's security headers. Every page is drawn inside the same [`Frame`]: language,
//! product title, logo, stylesheets and the language switcher.

use askama::Template;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::assets;
use super::i18n::{self, Tr};
use crate::config::PortalConfig;
use crate::error::Error;
use crate::http::body::{self, Body};
use crate::notify::Lang;

/// A link to the same page in another language.
#[derive(Debug, Clone)]
pub struct LangLink {
    pub tag: &'static str,
    pub name: &'static str,
    /// A query-only reference (`?lang=fr&rd=...`): it stays on the current path.
    pub href: String,
    pub current: bool,
}

/// What the page layout (`base.html`) needs, the same for every page of a request.
#[derive(Debug, Clone)]
pub struct Frame {
    pub t: Tr,
    pub product: String,
    pub prefix: String,
    pub stylesheet: String,
    pub script: String,
    pub icon: String,
    pub theme: Option<String>,
    pub logo: Option<String>,
    /// Empty when the page answers a POST (following a link would not repeat it).
    pub languages: Vec<LangLink>,
    /// The portal page a browser asked for (GET), to come back to after signing in or
    /// verifying when that page needs it first.
    pub return_to: Option<String>,
}

impl Frame {
    /// `query`: the request's query when it was a GET or HEAD (the switcher keeps its other
    /// parameters), `None` otherwise (no switcher).
    pub fn new(portal: &PortalConfig, lang: Lang, query: Option<&str>) -> Frame {
        let languages = match query {
            Some(query) => i18n::LANGS
                .into_iter()
                .map(|l| LangLink {
                    tag: l.tag(),
                    name: Tr::new(l).get("lang.name"),
                    href: switch_href(query, l),
                    current: l == lang,
                })
                .collect(),
            None => Vec::new(),
        };
        Frame {
            t: Tr::new(lang),
            product: portal.title.clone(),
            prefix: portal.prefix.clone(),
            stylesheet: assets::stylesheet_url(&portal.prefix),
            script: assets::script_url(&portal.prefix),
            icon: assets::icon_url(&portal.prefix),
            theme: assets::theme_url(portal),
            logo: assets::logo_url(portal),
            languages,
            return_to: None,
        }
    }

    /// See [`Frame::return_to`].
    pub fn returning_to(mut self, path_and_query: Option<String>) -> Frame {
        self.return_to = path_and_query;
        self
    }
}

/// `?<query without lang>&lang=<tag>`.
fn switch_href(query: &str, lang: Lang) -> String {
    let mut out = url::form_urlencoded::Serializer::for_suffix(String::from("?"), 1);
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k != "lang" {
            out.append_pair(&k, &v);
        }
    }
    out.append_pair("lang", lang.tag());
    out.finish()
}

/// The portal's content security policy. Forms post to the portal itself, and the redirect
/// after a login or a check may lead to an application on another allowed host (`rd`), which
/// browsers check against `form-action` too.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self' https:; frame-ancestors 'none'; base-uri 'none'";

/// [`CSP`] for pages served over plain HTTP, where the return address of a form may be an
/// `http://` application on another allowed host.
const CSP_PLAIN_HTTP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                              img-src 'self' data:; form-action 'self' https: http:; \
                              frame-ancestors 'none'; base-uri 'none'";

/// Sent on every portal answer: no framing, no inline script, no referrer, no sniffing.
pub fn security_headers(h: &mut HeaderMap) {
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// Over plain HTTP, lets the answer's forms lead to `http://` return addresses as well (see
/// [`CSP_PLAIN_HTTP`]); an answer without the portal's policy is left as it is.
pub fn allow_plain_http_forms(h: &mut HeaderMap) {
    if h.get(CONTENT_SECURITY_POLICY).is_some_and(|v| v == CSP) {
        h.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP_PLAIN_HTTP),
        );
    }
}

/// An HTML page. Portal pages are never cached: they show per-user state.
pub fn page(status: StatusCode, template: &impl Template) -> Result<Response<Body>, Error> {
    let html = template
        .render()
        .map_err(|e| Error::Internal(format!("template: {e}")))?;
    let mut resp = Response::new(body::full(html));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    security_headers(h);
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

pub fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(body::full(value.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    security_headers(h);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A redirect (302, 303) to a location the caller has validated.
pub fn redirect(status: StatusCode, location: &str) -> Result<Response<Body>, Error> {
    let value = HeaderValue::from_str(location)
        .map_err(|_| Error::Internal("redirect target is not a valid header".into()))?;
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    security_headers(h);
    h.insert(LOCATION, value);
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Adds a `Set-Cookie` to a response.
pub fn set_cookie(resp: &mut Response<Body>, cookie: &str) -> Result<(), Error> {
    let value = HeaderValue::from_str(cookie)
        .map_err(|_| Error::Internal("cookie is not a valid header".into()))?;
    resp.headers_mut().append(SET_COOKIE, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal() -> PortalConfig {
        PortalConfig::default()
    }

    #[test]
    fn language_links_keep_the_query_and_stay_on_the_page() {
        let f = Frame::new(&portal(), Lang::En, Some("rd=%2Fapp%3Fx%3D1&lang=en"));
        let fr = f.languages.iter().find(|l| l.tag == "fr").unwrap();
        assert_eq!(fr.href, "?rd=%2Fapp%3Fx%3D1&lang=fr");
        assert!(!fr.current);
        assert!(f.languages.iter().any(|l| l.tag == "en" && l.current));
    }

    #[test]
    fn answers_to_a_post_have_no_language_links() {
        assert!(Frame::new(&portal(), Lang::Fr, None).languages.is_empty());
    }

    #[test]
    fn asset_links_are_hashed() {
        let f = Frame::new(&portal(), Lang::En, Some(""));
        assert!(f.stylesheet.starts_with("/.stepgate/static/stepgate."));
        assert_ne!(f.stylesheet, "/.stepgate/static/stepgate.css");
        assert!(f.theme.is_none() && f.logo.is_none());
    }
}
