//! Static assets, embedded in the binary (never from a CDN), plus the operator's branding.
//!
//! Pages link to content-hashed names (`stepgate.<hash>.css`), served with an immutable
//! one-year cache: a new build changes the name. The plain names (`stepgate.css`) stay for
//! compatibility with a short cache. `theme.css` is generated from `portal.accent`, and `logo`
//! is the operator's `portal.logo` file, read at startup.

use std::sync::LazyLock;

use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use http::{HeaderValue, Response};
use sha2::Digest;

use crate::config::PortalConfig;
use crate::error::Error;
use crate::http::body::{self, Body};

const STYLESHEET: &str = include_str!("../../static/stepgate.css");
const SCRIPT: &str = include_str!("../../static/stepgate.js");
const ICON: &str = include_str!("../../static/favicon.svg");

/// An SVG opened on its own runs nothing and loads nothing.
const SVG_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const SHORT: &str = "public, max-age=3600";

/// The first 12 hex digits of the SHA-256 of `bytes`.
fn short_hash(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

static STYLESHEET_HASH: LazyLock<String> = LazyLock::new(|| short_hash(STYLESHEET.as_bytes()));
static SCRIPT_HASH: LazyLock<String> = LazyLock::new(|| short_hash(SCRIPT.as_bytes()));
static ICON_HASH: LazyLock<String> = LazyLock::new(|| short_hash(ICON.as_bytes()));

pub fn stylesheet_url(prefix: &str) -> String {
    format!("{prefix}/static/stepgate.{}.css", *STYLESHEET_HASH)
}

pub fn script_url(prefix: &str) -> String {
    format!("{prefix}/static/stepgate.{}.js", *SCRIPT_HASH)
}

/// The page icon: served by the gateway, so that a browser never asks the application for
/// `/favicon.ico` on the portal's behalf.
pub fn icon_url(prefix: &str) -> String {
    format!("{prefix}/static/favicon.{}.svg", *ICON_HASH)
}

/// `{prefix}/static/theme.<hash>.css` when an accent colour is configured.
pub fn theme_url(portal: &PortalConfig) -> Option<String> {
    let css = theme_css(portal.accent.as_deref()?);
    Some(format!(
        "{}/static/theme.{}.css",
        portal.prefix,
        short_hash(css.as_bytes())
    ))
}

/// `{prefix}/static/logo.<hash>` when a logo is configured.
pub fn logo_url(portal: &PortalConfig) -> Option<String> {
    let logo = portal.logo.as_ref()?;
    Some(format!("{}/static/logo.{}", portal.prefix, logo.version))
}

/// The text colour readable on `accent` (`#rrggbb`, validated by the config): black on light
/// colours, white on dark ones (WCAG relative luminance).
fn text_on(accent: &str) -> &'static str {
    let channel = |i: usize| {
        let v = accent
            .get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .map_or(0.0, |v| f64::from(v) / 255.0);
        if v <= 0.039_28 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    let luminance = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
    // Contrast with black beats contrast with white above ~0.179.
    if luminance > 0.179 {
        "#000000"
    } else {
        "#ffffff"
    }
}

/// The generated stylesheet for an accent colour (already validated as `#rrggbb`).
pub fn theme_css(accent: &str) -> String {
    let text = text_on(accent);
    format!(
        ":root {{ --accent: {accent}; --accent-text: {text}; }}\n\
         @media (prefers-color-scheme: dark) {{ :root {{ --accent: {accent}; --accent-text: {text}; }} }}\n"
    )
}

/// Splits `stem.<hash>.ext` into `(stem.ext, hash)`; a plain name has no hash.
fn split_hash(name: &str) -> (String, Option<&str>) {
    let mut parts = name.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(stem), Some(hash), Some(ext), None) => (format!("{stem}.{ext}"), Some(hash)),
        (Some(stem), Some(hash), None, None) if stem == "logo" => (stem.to_string(), Some(hash)),
        _ => (name.to_string(), None),
    }
}

fn respond(
    content_type: &'static str,
    bytes: impl Into<bytes::Bytes>,
    cache: &'static str,
) -> Response<Body> {
    let mut resp = Response::new(body::full(bytes.into()));
    let h = resp.headers_mut();
    super::render::security_headers(h);
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

/// `GET {prefix}/static/<name>`. A hashed name must carry the current hash: an old one is a
/// 404, never another version cached for a year.
pub fn serve(name: &str, portal: &PortalConfig) -> Result<Response<Body>, Error> {
    let (plain, hash) = split_hash(name);
    let cache = if hash.is_some() { IMMUTABLE } else { SHORT };
    let current = |expected: &str| hash.is_none_or(|h| h == expected);
    match plain.as_str() {
        "stepgate.css" if current(&STYLESHEET_HASH) => {
            Ok(respond("text/css; charset=utf-8", STYLESHEET, cache))
        }
        "stepgate.js" if current(&SCRIPT_HASH) => {
            Ok(respond("text/javascript; charset=utf-8", SCRIPT, cache))
        }
        "favicon.svg" if current(&ICON_HASH) => {
            let mut resp = respond("image/svg+xml", ICON, cache);
            resp.headers_mut()
                .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(SVG_CSP));
            Ok(resp)
        }
        "theme.css" => {
            let accent = portal.accent.as_deref().ok_or(Error::NotFound)?;
            let css = theme_css(accent);
            if !current(&short_hash(css.as_bytes())) {
                return Err(Error::NotFound);
            }
            Ok(respond("text/css; charset=utf-8", css, cache))
        }
        "logo" => {
            let logo = portal.logo.as_ref().ok_or(Error::NotFound)?;
            if !current(&logo.version) {
                return Err(Error::NotFound);
            }
            let mut resp = respond(
                logo.content_type,
                bytes::Bytes::from(logo.bytes.to_vec()),
                cache,
            );
            // An SVG logo opened on its own runs nothing and loads nothing.
            resp.headers_mut()
                .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(SVG_CSP));
            Ok(resp)
        }
        _ => Err(Error::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Logo;

    fn portal() -> PortalConfig {
        PortalConfig::default()
    }

    fn name_of(url: &str) -> &str {
        url.rsplit('/').next().unwrap()
    }

    #[test]
    fn hashed_assets_are_cached_forever() {
        for url in [
            stylesheet_url("/.stepgate"),
            script_url("/.stepgate"),
            icon_url("/.stepgate"),
        ] {
            let resp = serve(name_of(&url), &portal()).unwrap();
            assert_eq!(resp.headers()[CACHE_CONTROL], IMMUTABLE, "{url}");
        }
        let icon = serve(name_of(&icon_url("/.stepgate")), &portal()).unwrap();
        assert_eq!(icon.headers()[CONTENT_TYPE], "image/svg+xml");
        assert_eq!(icon.headers()[CONTENT_SECURITY_POLICY], SVG_CSP);
    }

    #[test]
    fn plain_names_stay_with_a_short_cache() {
        let resp = serve("stepgate.css", &portal()).unwrap();
        assert_eq!(resp.headers()[CACHE_CONTROL], SHORT);
        assert_eq!(resp.headers()[CONTENT_TYPE], "text/css; charset=utf-8");
        let resp = serve("stepgate.js", &portal()).unwrap();
        assert_eq!(
            resp.headers()[CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
    }

    #[test]
    fn a_stale_hash_is_not_served() {
        assert!(matches!(
            serve("stepgate.000000000000.css", &portal()),
            Err(Error::NotFound)
        ));
        assert!(matches!(
            serve("../Cargo.toml", &portal()),
            Err(Error::NotFound)
        ));
    }

    #[test]
    fn the_hash_follows_the_content() {
        assert_eq!(STYLESHEET_HASH.len(), 12);
        assert_ne!(*STYLESHEET_HASH, *SCRIPT_HASH);
        assert_eq!(short_hash(b"a"), short_hash(b"a"));
        assert_ne!(short_hash(b"a"), short_hash(b"b"));
    }

    #[test]
    fn theme_exists_only_with_an_accent() {
        assert!(theme_url(&portal()).is_none());
        assert!(matches!(
            serve("theme.css", &portal()),
            Err(Error::NotFound)
        ));
        let mut p = portal();
        p.accent = Some("#ffcc00".into());
        let url = theme_url(&p).unwrap();
        let resp = serve(name_of(&url), &p).unwrap();
        assert_eq!(resp.headers()[CACHE_CONTROL], IMMUTABLE);
    }

    #[test]
    fn accent_text_stays_readable() {
        assert_eq!(text_on("#ffcc00"), "#000000");
        assert_eq!(text_on("#1a237e"), "#ffffff");
        assert!(theme_css("#2857d6").contains("--accent: #2857d6;"));
    }

    #[test]
    fn svg_logo_cannot_run_script() {
        let mut p = portal();
        p.logo = Some(Logo::new(b"<svg/>".to_vec(), "image/svg+xml"));
        let url = logo_url(&p).unwrap();
        let resp = serve(name_of(&url), &p).unwrap();
        assert_eq!(resp.headers()[CONTENT_TYPE], "image/svg+xml");
        let csp = resp.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("sandbox") && csp.starts_with("default-src 'none'"));
        assert!(serve("logo", &p).is_ok());
        assert!(matches!(serve("logo", &portal()), Err(Error::NotFound)));
    }
}
