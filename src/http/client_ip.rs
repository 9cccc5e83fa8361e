//! Who is the client? The TCP peer, unless the peer is a trusted proxy, in which case the
//! right-most X-Forwarded-For entry that is not itself a trusted proxy.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

use crate::proxy::headers::{X_FORWARDED_FOR, X_FORWARDED_PROTO};

/// Did the client reach a trusted proxy over HTTPS? `X-Forwarded-Proto: https` (the right-most
/// value, set by the nearest proxy), believed only from a trusted peer. A portal behind a
/// TLS-terminating proxy then sets `Secure` cookies and expects `https://` origins.
pub fn forwarded_https(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> bool {
    if !is_trusted(peer, trusted) {
        return false;
    }
    headers
        .get_all(&X_FORWARDED_PROTO)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = canonical(peer);
    trusted.iter().any(|net| net.contains(&peer))
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are treated as the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let chain: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().parse::<IpAddr>().map(canonical))
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    chain
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip, trusted))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn untrusted_peer_cannot_claim_another_address() {
        let peer: IpAddr = "198.51.100.7".parse().unwrap();
        let ip = client_ip(peer, &xff("10.0.0.1"), &[]);
        assert_eq!(ip, peer);
    }

    #[test]
    fn trusted_proxy_reports_rightmost_untrusted() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let ip = client_ip(peer, &xff("1.1.1.1, 203.0.113.5, 10.0.0.9"), &trusted);
        assert_eq!(ip, "203.0.113.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn garbage_forwarded_for_falls_back_to_peer() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(client_ip(peer, &xff("not-an-ip"), &trusted), peer);
    }

    #[test]
    fn forwarded_proto_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        assert!(forwarded_https("10.0.0.2".parse().unwrap(), &h, &trusted));
        assert!(!forwarded_https(
            "198.51.100.7".parse().unwrap(),
            &h,
            &trusted
        ));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https, http"));
        assert!(!forwarded_https("10.0.0.2".parse().unwrap(), &h, &trusted));
        assert!(!forwarded_https(
            "10.0.0.2".parse().unwrap(),
            &HeaderMap::new(),
            &trusted
        ));
    }

    #[test]
    fn mapped_ipv6_peer_matches_ipv4_network() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(is_trusted("::ffff:127.0.0.1".parse().unwrap(), &trusted));
    }
}
