//! Who is the client? The TCP peer, unless the peer is a trusted proxy, in which case the
//! right-most X-Forwarded-For entry that is not itself a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

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
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|b| *b == b',').next())
        .is_some_and(|p| p.trim_ascii().eq_ignore_ascii_case(b"https"))
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

/// The client's address when a trusted proxy vouched for a client it could not name: an
/// `X-Forwarded-For` entry that is not an address, reached while every hop to its right was a
/// trusted proxy. It is the unspecified address (`0.0.0.0`), never the proxy's own.
pub const UNKNOWN_CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// The client's address: the TCP peer, unless the peer is a trusted proxy. Then
/// `X-Forwarded-For` is read from the right (the entry the nearest proxy added) for as long
/// as the address reached is itself a trusted proxy; the first one that is not is the client.
/// Entries left of it were written by the client or by hops no one vouches for, and are never
/// read, whatever they contain. An entry that is not an address (`ip` and `ip:port` forms are
/// read), reached while still among trusted proxies, gives [`UNKNOWN_CLIENT`]. When every
/// entry is a trusted proxy, the left-most is the client.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let mut client = canonical(peer);
    let mut entries = forwarded_for_entries(headers);
    while is_trusted(client, trusted) {
        match entries.next() {
            None => break,
            Some(Some(ip)) => client = ip,
            Some(None) => return UNKNOWN_CLIENT,
        }
    }
    client
}

/// The `X-Forwarded-For` entries, right-most first (across repeated headers too); `None` for
/// an entry that is not an address.
fn forwarded_for_entries(headers: &HeaderMap) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    let values: Vec<&[u8]> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    values
        .into_iter()
        .rev()
        .flat_map(|v| v.rsplit(|b| *b == b','))
        .map(parse_entry)
}

fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

/// IPv6 clients are grouped by networks of this prefix length in [`network_of`].
const IPV6_SITE_PREFIX: u8 = 48;

/// The network a client counts in when it takes a share of something all clients share (form
/// memory, connections to an upstream): its /32 for IPv4 (IPv4-mapped IPv6 too), its /48 for
/// IPv6. A /48 is what one site is given: counting /64s would let one site take many shares.
pub fn network_of(client: IpAddr) -> IpNet {
    match client.to_canonical() {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::from(v4)),
        IpAddr::V6(v6) => IpNet::V6(
            Ipv6Net::new(v6, IPV6_SITE_PREFIX)
                .map(|n| n.trunc())
                .unwrap_or_else(|_| Ipv6Net::from(v6)),
        ),
    }
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
    fn a_proxy_naming_no_address_leaves_the_client_unknown_not_the_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        for chain in ["not-an-ip", "", "x, 10.0.0.9", "1.2.3.4, ,"] {
            assert_eq!(
                client_ip(peer, &xff(chain), &trusted),
                UNKNOWN_CLIENT,
                "{chain:?}"
            );
        }
        // No header at all: the peer is the client (a request from the proxy itself).
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
    }

    #[test]
    fn what_the_client_wrote_left_of_the_first_untrusted_entry_is_never_read() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        for chain in [
            "x, 192.0.2.1",
            ", 192.0.2.1",
            "1.2.3.4:5678, 192.0.2.1",
            "10.0.0.7, 192.0.2.1",
        ] {
            assert_eq!(client_ip(peer, &xff(chain), &trusted), client, "{chain:?}");
        }
        // Bytes that are not text, in the client's part: the same.
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff\xfe, 192.0.2.1").unwrap(),
        );
        assert_eq!(client_ip(peer, &h, &trusted), client);
    }

    #[test]
    fn repeated_headers_are_one_list_read_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("garbage"));
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_static("198.51.100.4, 10.0.0.3"),
        );
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "198.51.100.4".parse::<IpAddr>().unwrap()
        );
        // Entries with a port, as some load balancers write them.
        assert_eq!(
            client_ip(peer, &xff("[2001:db8::1]:443"), &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        // Only trusted proxies: the left-most is the client.
        assert_eq!(
            client_ip(peer, &xff("10.1.1.1, 10.0.0.3"), &trusted),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
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
