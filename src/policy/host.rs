//! Host patterns shared by upstream routing and access rules: an exact name or `*.domain`,
//! compared case-insensitively, ignoring any port.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// `console.example.com`
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (not `example.com` itself).
    Wildcard(String),
}

impl HostPattern {
    /// Parses `console.example.com` or `*.example.com`. Returns a reason on failure.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        if let Some(rest) = s.strip_prefix("*.") {
            check_name(rest)?;
            Ok(HostPattern::Wildcard(rest.to_string()))
        } else {
            check_name(&s)?;
            Ok(HostPattern::Exact(s))
        }
    }

    /// Does `host` (a Host header value or URI authority host, port and one trailing dot
    /// allowed) match? Upstream routing and access rules both decide through here, so a
    /// request is never routed by one reading of its host and judged by another.
    pub fn matches(&self, host: &str) -> bool {
        let host = host_name(host);
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Wildcard(domain) => {
                host.len() > domain.len() + 1
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
                    && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(n) => f.write_str(n),
            HostPattern::Wildcard(d) => write!(f, "*.{d}"),
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("host name is empty".into());
    }
    if name.contains('*') {
        return Err(
            "a wildcard is only allowed as the first label, as in \"*.example.com\"".into(),
        );
    }
    let ok = name.chars().all(|c| {
        c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':' || c == '[' || c == ']'
    });
    if !ok {
        return Err(format!("{name:?} is not a valid host name"));
    }
    Ok(())
}

/// Is `host` a plain authority: a host name (letters, digits, `-`, `_`, dots, one trailing dot
/// allowed), an IPv4 address or a bracketed IPv6 address, with an optional numeric port up to
/// 65535? Anything else (`user@host`, `host:x`, `host:.example.com`, spaces, slashes, empty
/// labels) has no single reading: proxies, applications and the rules could each take another
/// name from it, so the gateway refuses it before any of them looks.
pub fn is_plain_authority(host: &str) -> bool {
    let bytes = host.as_bytes();
    if bytes.first() == Some(&b'[') {
        return is_bracketed_ipv6_authority(host);
    }
    // One pass over the name, on every request: labels of letters, digits, `-` and `_`.
    let mut label = 0usize;
    let mut end = bytes.len();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b':' => {
                end = i;
                break;
            }
            b'.' if label == 0 => return false,
            b'.' => label = 0,
            b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' => {
                label += 1;
                if label > 63 {
                    return false;
                }
            }
            _ => return false,
        }
    }
    let name = &bytes[..end];
    // Empty, or over 253 bytes without its one allowed trailing dot.
    let name_len = name.len() - usize::from(name.last() == Some(&b'.'));
    if name_len == 0 || name_len > 253 {
        return false;
    }
    end == bytes.len() || is_port(&bytes[end + 1..])
}

/// `[v6 address]` with an optional `:port`.
fn is_bracketed_ipv6_authority(host: &str) -> bool {
    let Some((literal, rest)) = host[1..].split_once(']') else {
        return false;
    };
    literal.parse::<std::net::Ipv6Addr>().is_ok()
        && (rest.is_empty()
            || rest
                .strip_prefix(':')
                .is_some_and(|p| is_port(p.as_bytes())))
}

/// One to five digits, at most 65535.
fn is_port(digits: &[u8]) -> bool {
    !digits.is_empty()
        && digits.len() <= 5
        && digits.iter().all(u8::is_ascii_digit)
        && digits
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
            <= 65_535
}

/// The name a Host header or authority designates: without its port and without one trailing
/// dot (`example.com.:8443` -> `example.com`), since DNS reads `example.com.` and
/// `example.com` as the same name.
pub fn host_name(host: &str) -> &str {
    let name = strip_port(host);
    name.strip_suffix('.').unwrap_or(name)
}

/// `example.com:8443` -> `example.com`; `[::1]:80` -> `[::1]`; names without a port unchanged.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_authorities_are_a_name_or_address_and_a_numeric_port() {
        for good in [
            "example.com",
            "Example.COM.",
            "app_1.internal",
            "console.example.com:8443",
            "example.com.:443",
            "localhost",
            "192.0.2.7",
            "192.0.2.7:80",
            "[::1]",
            "[2001:db8::1]:8443",
            "a:65535",
        ] {
            assert!(is_plain_authority(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "console.example.com:.example.com",
            "console.example.com:x",
            "console.example.com:",
            "a:65536",
            "a:123456",
            "a:1:2",
            "user@example.com",
            "example.com@evil.test",
            "exa mple.com",
            "example.com/x",
            "example..com",
            ".example.com",
            "example.com..",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[not-an-address]",
            "[::1]:99999",
            "ex%61mple.com",
            "exämple.com",
        ] {
            assert!(!is_plain_authority(bad), "{bad:?}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(!is_plain_authority(&long_label));
    }

    #[test]
    fn exact_is_case_insensitive_and_ignores_port() {
        let p = HostPattern::parse("Console.Example.com").unwrap();
        assert!(p.matches("console.example.COM"));
        assert!(p.matches("console.example.com:8443"));
        assert!(!p.matches("console.example.com.evil.net"));
        assert!(!p.matches("xconsole.example.com"));
    }

    #[test]
    fn one_trailing_dot_names_the_same_host() {
        let exact = HostPattern::parse("console.example.com").unwrap();
        let wildcard = HostPattern::parse("*.example.com").unwrap();
        for host in ["console.example.com.", "console.example.com.:8443"] {
            assert!(exact.matches(host), "{host}");
            assert!(wildcard.matches(host), "{host}");
        }
        // Two dots name nothing: neither routing nor the rules may read it as the host.
        assert!(!exact.matches("console.example.com.."));
        assert!(!wildcard.matches("console.example.com.."));
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("example.com.:80"), "example.com");
    }

    #[test]
    fn wildcard_needs_a_label_before_the_domain() {
        let p = HostPattern::parse("*.example.com").unwrap();
        assert!(p.matches("app.example.com"));
        assert!(p.matches("a.b.Example.com:80"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
        assert!(!p.matches(".example.com"));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(HostPattern::parse("").is_err());
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("ex ample.com").is_err());
    }

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("a.b"), "a.b");
    }
}
