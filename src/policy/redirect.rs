//! Validation of the `rd` (return-to) target a user is sent to after logging in.
//!
//! Only two shapes are accepted, everything else is refused and the caller falls back to `/`:
//! - a same-origin path: `/dashboard?tab=2`;
//! - an absolute `https://` URL on the gateway's own host or on one of the allowed redirect
//!   domains (or a dot-boundary subdomain of one), without userinfo. `http://` is accepted the
//!   same way only when the caller says the gateway itself is served over plain http.
//!
//! The checks are deliberately stricter than URL syntax: a browser forgives tabs, newlines,
//! backslashes and missing slashes, and each of those forgivenesses has been used to turn a
//! "local" target into a foreign one.

use percent_encoding::percent_decode_str;
use url::{Host, Url};

use super::host::strip_port;

/// Returns the redirect target when it is safe, `None` otherwise (the caller then uses `/`).
///
/// - `own_host`: the host the gateway is being reached on (a Host header value; any port is
///   ignored).
/// - `allowed_domains`: `access.allowed_redirect_domains` (lower-case ASCII/punycode names, as
///   produced by config validation); `example.com` allows `example.com` and `*.example.com`.
/// - `allow_http`: `true` only when the gateway itself is served over plain http; then
///   `http://` targets are accepted under the same host rules as `https://` ones.
///
/// A same-origin path is returned exactly as given; an absolute URL is returned in the `url`
/// crate's serialisation (punycode host, normalised path), which is the form that was checked.
pub fn safe_redirect(
    rd: &str,
    own_host: &str,
    allowed_domains: &[String],
    allow_http: bool,
) -> Option<String> {
    if rd.starts_with('/') {
        return safe_local_path(rd).then(|| rd.to_string());
    }
    safe_absolute_url(rd, own_host, allowed_domains, allow_http)
}

/// A same-origin path, checked as given and again after one percent-decoding.
fn safe_local_path(rd: &str) -> bool {
    if !local_path_shape_ok(rd) {
        return false;
    }
    match percent_decode_str(rd).decode_utf8() {
        Ok(decoded) => local_path_shape_ok(&decoded),
        Err(_) => false,
    }
}

fn local_path_shape_ok(s: &str) -> bool {
    let b = s.as_bytes();
    if b.first() != Some(&b'/') || matches!(b.get(1), Some(b'/') | Some(b'\\')) {
        return false;
    }
    if s.chars().any(forbidden_char) {
        return false;
    }
    // Within the path part, no `//` and no dot segments: a browser normalising
    // `/..//evil.com` ends up with a path beginning `//`, which any later relative redirect
    // would read as another host.
    let path_end = s.find(['?', '#']).unwrap_or(s.len());
    let path = &s[..path_end];
    !path.contains("//") && path.split('/').all(|seg| seg != "." && seg != "..")
}

fn forbidden_char(c: char) -> bool {
    c == '\\' || c.is_control() || c.is_whitespace()
}

fn safe_absolute_url(
    rd: &str,
    own_host: &str,
    allowed_domains: &[String],
    allow_http: bool,
) -> Option<String> {
    // The literal prefix is required: `https:evil.com` and `https:/evil.com` are parsed
    // differently by different parsers.
    let https = starts_with_ignore_ascii_case(rd, "https://");
    let http = allow_http && starts_with_ignore_ascii_case(rd, "http://");
    if !(https || http) || rd.chars().any(forbidden_char) {
        return None;
    }
    // Any `@` in the authority is refused, even an empty userinfo that the parser would drop.
    let after_scheme = &rd[rd.find("://")? + 3..];
    let authority_end = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    if after_scheme[..authority_end].contains('@') {
        return None;
    }
    let url = Url::parse(rd).ok()?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ => return None,
    }
    if !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    let host = url.host()?;
    host_allowed(&host, own_host, allowed_domains).then(|| url.to_string())
}

fn host_allowed(host: &Host<&str>, own_host: &str, allowed_domains: &[String]) -> bool {
    let own = without_trailing_dot(strip_port(own_host.trim()));
    match host {
        Host::Domain(name) => {
            let name = without_trailing_dot(name);
            name.eq_ignore_ascii_case(own)
                || allowed_domains
                    .iter()
                    .any(|d| is_same_or_subdomain(name, without_trailing_dot(d)))
        }
        // IP literals are only accepted as the gateway's own address.
        Host::Ipv4(ip) => ip.to_string() == own,
        Host::Ipv6(ip) => {
            let inner = own
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .unwrap_or(own);
            inner.parse::<std::net::Ipv6Addr>().ok() == Some(*ip)
        }
    }
}

/// `name` equals `domain` or ends with `.domain` (ASCII case-insensitive).
fn is_same_or_subdomain(name: &str, domain: &str) -> bool {
    if domain.is_empty() {
        return false;
    }
    if name.eq_ignore_ascii_case(domain) {
        return true;
    }
    name.len() > domain.len() + 1
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
        && name.as_bytes()[name.len() - domain.len()..].eq_ignore_ascii_case(domain.as_bytes())
}

fn without_trailing_dot(s: &str) -> &str {
    s.strip_suffix('.').unwrap_or(s)
}

fn starts_with_ignore_ascii_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "auth.example.com";

    fn domains() -> Vec<String> {
        vec!["example.com".to_string()]
    }

    fn check(rd: &str) -> Option<String> {
        safe_redirect(rd, OWN, &domains(), false)
    }

    fn refused(rd: &str) {
        assert_eq!(check(rd), None, "{rd:?} must be refused");
    }

    #[test]
    fn accepts_same_origin_paths_as_given() {
        for rd in [
            "/",
            "/dashboard",
            "/a/b/",
            "/search?q=x&page=2",
            "/a#frag",
            "/a?next=//x",
        ] {
            assert_eq!(check(rd).as_deref(), Some(rd));
        }
    }

    #[test]
    fn rejects_protocol_relative_redirect() {
        refused("//evil.com");
        refused("//evil.com/path");
        refused("///evil.com");
    }

    #[test]
    fn rejects_backslash_redirect_tricks() {
        refused("/\\evil.com");
        refused("\\/evil.com");
        refused("\\\\evil.com");
        refused("/a\\b");
        refused("https://evil.com\\@auth.example.com");
        refused("https://auth.example.com\\@evil.com");
    }

    #[test]
    fn rejects_encoded_slash_and_backslash_redirects() {
        refused("/%2F%2Fevil.com");
        refused("/%2f/evil.com");
        refused("/%5Cevil.com");
        refused("/%5cevil.com");
        refused("/a%5Cb");
    }

    #[test]
    fn rejects_whitespace_and_control_characters() {
        for rd in [
            "/\t/evil.com",
            "/\n/evil.com",
            "/%09/evil.com",
            "/%0A/evil.com",
            "/%0d%0aSet-Cookie:%20x=1",
            "/a b",
            "/a%20b",
            "/a\u{a0}b",
            "https://auth.exa\tmple.com/",
            "https://auth.example.com/\n",
            " https://auth.example.com/",
            "/%00",
        ] {
            refused(rd);
        }
    }

    #[test]
    fn rejects_dot_segments_that_normalise_to_protocol_relative() {
        refused("/..//evil.com");
        refused("/.//evil.com");
        refused("/%2e%2e//evil.com");
        refused("/a/../b");
        refused("/a//b");
    }

    #[test]
    fn rejects_invalid_utf8_after_decoding() {
        refused("/%C0%AE%C0%AE");
        refused("/%FF");
    }

    #[test]
    fn rejects_missing_slash_scheme_tricks() {
        refused("https:evil.com");
        refused("https:/evil.com");
        refused("https:auth.example.com");
        refused("evil.com");
        refused("");
    }

    #[test]
    fn rejects_dangerous_schemes() {
        refused("javascript:alert(1)");
        refused("JavaScript://auth.example.com/%0aalert(1)");
        refused("data:text/html,<script>alert(1)</script>");
        refused("http://auth.example.com/");
        refused("ftp://auth.example.com/");
        refused("vbscript:msgbox(1)");
    }

    #[test]
    fn accepts_own_host_and_allowed_subdomains_over_https() {
        assert_eq!(
            check("https://auth.example.com/x?y=1").as_deref(),
            Some("https://auth.example.com/x?y=1")
        );
        assert_eq!(
            check("HTTPS://Auth.Example.COM:8443/x").as_deref(),
            Some("https://auth.example.com:8443/x")
        );
        assert!(check("https://example.com/").is_some());
        assert!(check("https://app.example.com/").is_some());
        assert!(check("https://a.b.example.com/deep").is_some());
        assert!(check("https://example.com./").is_some());
    }

    #[test]
    fn own_host_is_accepted_without_any_allowed_domain_and_port_is_ignored() {
        assert!(
            safe_redirect(
                "https://login.corp.net/a",
                "login.corp.net:8443",
                &[],
                false
            )
            .is_some()
        );
        assert!(
            safe_redirect("https://LOGIN.corp.net:9/a", "login.corp.net", &[], false).is_some()
        );
        assert!(safe_redirect("https://other.corp.net/a", "login.corp.net", &[], false).is_none());
    }

    #[test]
    fn rejects_lookalike_domains() {
        refused("https://evilexample.com/");
        refused("https://example.com.evil.net/");
        refused("https://auth.example.com.evil.net/");
        refused("https://evil.net/auth.example.com");
        refused("https://evil.net/?auth.example.com");
        refused("https://evil.net#auth.example.com");
        refused("https://xexample.com/");
    }

    #[test]
    fn rejects_userinfo_redirect() {
        refused("https://example.com@evil.net/");
        refused("https://auth.example.com@evil.net/");
        refused("https://user:pw@app.example.com/");
        refused("https://user@app.example.com/");
        refused("https://:@app.example.com/");
        refused("https://@app.example.com/");
        refused("https://evil.net%40auth.example.com/");
    }

    #[test]
    fn rejects_unicode_dot_lookalikes() {
        // U+3002 IDEOGRAPHIC FULL STOP and U+FF0E are mapped to `.` by IDNA processing.
        refused("https://evil\u{3002}com/");
        refused("https://example\u{3002}com\u{3002}evil\u{3002}net/");
        refused("https://evil\u{ff0e}net/");
        // The same mapping yields an allowed host, returned in its normalised spelling.
        assert_eq!(
            check("https://app\u{3002}example\u{3002}com/").as_deref(),
            Some("https://app.example.com/")
        );
    }

    #[test]
    fn rejects_idn_homograph_domains() {
        // Cyrillic `а` (U+0430) instead of Latin `a`.
        refused("https://\u{0430}pp.ex\u{0430}mple.com/");
        refused("https://ex\u{0430}mple.com/");
        refused("https://app.ex\u{0430}mple.com/");
    }

    #[test]
    fn ip_hosts_only_match_the_own_address() {
        assert!(
            safe_redirect("https://192.0.2.1/x", "192.0.2.1:8443", &domains(), false).is_some()
        );
        assert!(safe_redirect("https://[::1]:8443/x", "[::1]:8443", &domains(), false).is_some());
        assert!(safe_redirect("https://192.0.2.2/x", "192.0.2.1", &domains(), false).is_none());
        // Decimal and hex spellings are normalised by the URL parser before comparison.
        assert!(safe_redirect("https://3221225986/x", "192.0.2.1", &[], false).is_none());
        assert!(safe_redirect("https://3221225985/x", "192.0.2.1", &[], false).is_some());
        let numeric = vec!["0.2.1".to_string()];
        assert!(safe_redirect("https://192.0.2.1/x", "auth", &numeric, false).is_none());
    }

    #[test]
    fn http_targets_need_allow_http() {
        assert!(safe_redirect("http://auth.example.com/x", OWN, &domains(), false).is_none());
        assert_eq!(
            safe_redirect("http://auth.example.com/x", OWN, &domains(), true).as_deref(),
            Some("http://auth.example.com/x")
        );
        assert!(safe_redirect("http://app.example.com/", OWN, &domains(), true).is_some());
        assert!(safe_redirect("http://evil.net/", OWN, &domains(), true).is_none());
        assert!(safe_redirect("http:evil.net", OWN, &domains(), true).is_none());
        assert!(safe_redirect("https://auth.example.com/", OWN, &domains(), true).is_some());
    }
}
