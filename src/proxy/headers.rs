//! Header hygiene between client and upstream, in both directions.
//!
//! RFC 9110 §7.6.1: "Intermediaries MUST parse a received Connection header field before a message
//! is forwarded and, for each connection-option in this field, remove any header or trailer field(s)
//! from the message with the same name as the connection-option, and then remove the Connection
//! header field itself". The fixed list of hop-by-hop fields below is removed as well, since
//! senders do not always list them.

use std::cell::RefCell;
use std::net::IpAddr;

use http::HeaderMap;
use http::header::Entry;
use http::header::{
    CONNECTION, EXPECT, HOST, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};

const HOP_BY_HOP_COUNT: usize = 11;

/// Fields that only mean something on one connection and are never forwarded. A `static`, not
/// a `const`: a constant array would be built and dropped again at every use.
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    // HTTP/2's cleartext upgrade (RFC 7540 §3.2.1): connection-specific, and never forwarded
    // (see `requested_upgrade`).
    HeaderName::from_static("http2-settings"),
    // The gateway answers a client's `Expect: 100-continue` itself (when it reads the body);
    // an upstream asked too would answer 100 before reading it, which the pool must take for an
    // early answer (`pool`), and the connection would not be reused.
    EXPECT,
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Is `name` one of the fixed hop-by-hop fields (any case)?
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.as_str().eq_ignore_ascii_case(name))
}

/// Where `name` is in [`HOP_BY_HOP`]. Names are lower case; a match on the text compares a few
/// lengths and bytes where comparing with each name in turn took most of the stripping's time.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    let index = match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        "http2-settings" => 9,
        "expect" => 10,
        _ => return None,
    };
    Some(index)
}

/// Removes every field named in `Connection`, then the fixed hop-by-hop fields.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry at most `Connection: keep-alive`: find what is there in one pass
    // (standard names compare as small integers) instead of hashing every name to remove it.
    let mut present = [false; HOP_BY_HOP_COUNT];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    if present[0] {
        let listed: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // Fixed hop-by-hop fields are removed below anyway.
            .filter(|token| !is_hop_by_hop(token))
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
        headers.remove(name);
    }
}

/// The protocol a client asks to switch to (`Upgrade: websocket` with `Connection: upgrade`).
///
/// Never HTTP/2 in cleartext (`h2c`, alone or in a list): after the switch, every request on the
/// connection would go to the upstream without passing the access rules, its identity headers
/// unchecked. Such a request is forwarded as an ordinary HTTP/1.1 request, its `Upgrade` and
/// `HTTP2-Settings` removed with the other hop-by-hop fields.
pub fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    let protocol = headers.get(UPGRADE)?;
    let names_h2c = protocol
        .as_bytes()
        .split(|b| *b == b',')
        .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"h2c"));
    (!names_h2c).then(|| protocol.clone())
}

/// After stripping, puts back the two fields an upgrade needs to be forwarded.
pub fn restore_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

/// What the gateway knows about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The TCP peer.
    pub peer: IpAddr,
    /// The peer is inside `server.trusted_proxies`: its X-Forwarded-* values are kept.
    pub peer_trusted: bool,
    /// `"https"` or `"http"`, as the gateway received the request.
    pub proto: &'static str,
    /// The host the client asked for (Host header or HTTP/2 authority).
    pub host: Option<&'a str>,
}

/// Fields that tell an application who the client is or which URL it asked for, in the
/// folded form of [`strip_protected`].
///
/// The first [`URL_CLAIMS`] name another URL or method than the request's own: frameworks route
/// on `X-Original-URL` and `X-Rewrite-URL`, so an application could serve another path than
/// the one the access rules judged. They are removed from every request, a trusted proxy's
/// included. The others only a trusted proxy may send: from anyone else they are removed
/// (X-Forwarded-For, -Proto and -Host are then set by the gateway), in every spelling an
/// application might read as one of them (`X_Real_IP` reaches PHP as `HTTP_X_REAL_IP`).
const VOUCHED_BY_PROXIES: [&str; 16] = [
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-rewrite-url",
    "x-forwarded-uri",
    "x-forwarded-method",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
];

/// How many of [`VOUCHED_BY_PROXIES`], from the first, claim another URL or method.
const URL_CLAIMS: usize = 6;

/// Sets X-Forwarded-For, -Proto and -Host. Client-sent values survive only from a trusted
/// peer; from any other, every field of [`VOUCHED_BY_PROXIES`] is removed first, and the
/// claims of another URL from every peer.
pub fn set_forwarded(headers: &mut HeaderMap, fwd: &Forwarding<'_>) {
    if fwd.peer_trusted {
        strip_protected(headers, &VOUCHED_BY_PROXIES[..URL_CLAIMS]);
    } else {
        strip_protected(headers, &VOUCHED_BY_PROXIES);
    }
    let mut chain = String::new();
    if fwd.peer_trusted {
        let prior = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty());
        for value in prior {
            chain.push_str(value);
            chain.push_str(", ");
        }
    }
    let peer = peer_entry(fwd.peer);
    // `insert` replaces every client-sent value.
    if chain.is_empty() {
        headers.insert(X_FORWARDED_FOR, peer);
    } else {
        chain.push_str(peer.to_str().unwrap_or_default());
        match HeaderValue::try_from(chain) {
            Ok(v) => headers.insert(X_FORWARDED_FOR, v),
            Err(_) => headers.remove(&X_FORWARDED_FOR),
        };
    }

    let keep_proto = fwd.peer_trusted && headers.contains_key(&X_FORWARDED_PROTO);
    if !keep_proto {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(fwd.proto));
    }
    let keep_host = fwd.peer_trusted && headers.contains_key(&X_FORWARDED_HOST);
    if !keep_host {
        headers.remove(&X_FORWARDED_HOST);
        if let Some(v) = fwd.host.and_then(|h| HeaderValue::from_str(h).ok()) {
            headers.insert(X_FORWARDED_HOST, v);
        }
    }
}

thread_local! {
    /// The address last written as an X-Forwarded-For entry on this thread, and its value. A
    /// worker's requests mostly come from a few peers (a load balancer, a browser's keep-alive
    /// connections): the address is printed again only when the peer changes.
    static LAST_PEER: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
}

/// `peer` as an X-Forwarded-For entry.
fn peer_entry(peer: IpAddr) -> HeaderValue {
    LAST_PEER.with_borrow_mut(|last| match last {
        Some((ip, value)) if *ip == peer => value.clone(),
        _ => {
            // An address prints as digits, hex letters, dots and colons: always a valid value.
            let value = HeaderValue::try_from(peer.to_string())
                .unwrap_or(HeaderValue::from_static("unknown"));
            *last = Some((peer, value.clone()));
            value
        }
    })
}

/// The host a request is for: the HTTP/2 authority or the Host header.
pub fn request_host<B>(req: &http::Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()))
}

/// Normalises one byte of a header name for spoofing checks: lower case, and every byte that
/// is not a letter or a digit read as `-`. Servers that hand headers to applications as
/// variables (CGI and its kin) turn `_`, `.`, `~` and the rest into the same `_`.
fn fold_byte(b: u8) -> u8 {
    if b.is_ascii_alphanumeric() {
        b.to_ascii_lowercase()
    } else {
        b'-'
    }
}

/// Normalises a header name for spoofing checks (see [`fold_byte`]).
fn folded(name: &str) -> String {
    name.bytes().map(|b| char::from(fold_byte(b))).collect()
}

/// Whether `name` folds to `folded_name` (already folded), without allocating.
pub fn folds_to(name: &str, folded_name: &str) -> bool {
    name.len() == folded_name.len()
        && name
            .bytes()
            .zip(folded_name.bytes())
            .all(|(a, b)| fold_byte(a) == b)
}

/// Removes every client-sent field that could be read as one of `protected` (identity headers),
/// in any case and with any other punctuation (`_`, `.`, `~`, ...) in place of `-`. Runs on every request, bypass routes included.
pub fn strip_protected<S: AsRef<str>>(headers: &mut HeaderMap, protected_folded: &[S]) {
    let is_protected = |k: &HeaderName| {
        protected_folded
            .iter()
            .any(|p| folds_to(k.as_str(), p.as_ref()))
    };
    // The common case: no client sent anything of the kind, nothing to collect.
    if !headers.keys().any(is_protected) {
        return;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_protected(k))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Removes the gateway's own cookies (the session id) from every `Cookie` header, so the
/// application never sees a user's session id. Other cookies pass unchanged. Works on the
/// header's bytes: a neighbour that is not text (a UTF-8 value sent raw) never shields the
/// session cookie beside it.
pub fn strip_cookies(headers: &mut HeaderMap, names: &[&str]) {
    let is_ours = |pair: &[u8]| {
        let name = pair.split(|b| *b == b'=').next().unwrap_or(pair);
        names.iter().any(|n| name.trim_ascii() == n.as_bytes())
    };
    let Entry::Occupied(cookies) = headers.entry(http::header::COOKIE) else {
        return;
    };
    let mut kept = Vec::new();
    for value in cookies.remove_entry_mult().1 {
        let pairs: Vec<&[u8]> = value
            .as_bytes()
            .split(|b| *b == b';')
            .map(<[u8]>::trim_ascii)
            .filter(|pair| !pair.is_empty())
            .collect();
        if !pairs.iter().any(|pair| is_ours(pair)) {
            kept.push(value);
            continue;
        }
        let others: Vec<&[u8]> = pairs.into_iter().filter(|pair| !is_ours(pair)).collect();
        if !others.is_empty()
            && let Ok(v) = HeaderValue::from_bytes(&others.join(&b"; "[..]))
        {
            kept.push(v);
        }
    }
    for value in kept {
        headers.append(http::header::COOKIE, value);
    }
}

/// A field the client sent that an application could read as one of `protected` (folded, as
/// for [`strip_protected`]) although it is spelled with other punctuation than `-`
/// (`Remote_User`, `Remote~User`). Behind a forward-auth proxy such a field would reach the
/// application beside the identity the proxy copies from the gateway's answer, which replaces
/// only the exact spelling.
pub fn identity_look_alike<'h, S: AsRef<str>>(
    headers: &'h HeaderMap,
    protected_folded: &[S],
) -> Option<&'h HeaderName> {
    headers.keys().find(|k| {
        let name = k.as_str();
        name.bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || b == b'-'))
            && protected_folded.iter().any(|p| folds_to(name, p.as_ref()))
    })
}

/// Removes from an upstream's response every `Set-Cookie` that would set one of the gateway's
/// own cookies (`names`): an application must not be able to plant a session id in its users'
/// browsers (session fixation), nor clear their session.
pub fn strip_set_cookies(headers: &mut HeaderMap, names: &[&str]) {
    let Entry::Occupied(cookies) = headers.entry(http::header::SET_COOKIE) else {
        return;
    };
    let is_ours = |value: &HeaderValue| {
        let name = name_sent_back(value.as_bytes());
        names.iter().any(|n| name == n.as_bytes())
    };
    if !cookies.iter().any(is_ours) {
        return;
    }
    let kept: Vec<HeaderValue> = cookies
        .remove_entry_mult()
        .1
        .filter(|v| !is_ours(v))
        .collect();
    for value in kept {
        headers.append(http::header::SET_COOKIE, value);
    }
}

/// The name a browser will send back for the cookie a `Set-Cookie` value sets (RFC 6265bis
/// §5.6). A cookie with an empty name is sent back as its value alone: `=stepgate_session=x`
/// returns as `stepgate_session=x`, and a pair without `=` is such a cookie too.
fn name_sent_back(set_cookie: &[u8]) -> &[u8] {
    let pair = set_cookie.split(|b| *b == b';').next().unwrap_or_default();
    let (name, value) = match pair.iter().position(|b| *b == b'=') {
        Some(i) => (pair[..i].trim_ascii(), &pair[i + 1..]),
        None => (&[][..], pair),
    };
    if !name.is_empty() {
        return name;
    }
    let value = value.trim_ascii();
    value
        .split(|b| *b == b'=')
        .next()
        .unwrap_or(value)
        .trim_ascii()
}

/// Folds configured identity header names once, for [`strip_protected`].
pub fn fold_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    names.into_iter().map(folded).collect()
}

/// A response field that makes browsers delete stored data for the site (W3C Clear Site Data).
pub const CLEAR_SITE_DATA: HeaderName = HeaderName::from_static("clear-site-data");

/// The types `"*"` stands for in `Clear-Site-Data` (the four the Clear Site Data spec defines),
/// but `"cookies"`. Browsers that know `"clientHints"` clear it with `"cache"` too.
const ALL_BUT_COOKIES: [&[u8]; 3] = [b"cache", b"storage", b"executionContexts"];

/// Rewrites every `Clear-Site-Data` field of an upstream's response so that it no longer clears
/// cookies: a browser would delete the gateway's session cookie with the application's, and an
/// application must not be able to clear it. `"cookies"` is removed, `"*"` becomes the other
/// types it stands for, other types (unknown ones too) pass as sent, and a field left with none
/// is removed. A field that is not a comma-separated list of quoted strings is removed whole:
/// a browser might read it some other way.
pub fn strip_cookie_clearing(headers: &mut HeaderMap) {
    // Every response passes here and hardly any has the field: comparing the few names a
    // response has costs less than hashing this one to look it up.
    if !headers.keys().any(|name| *name == CLEAR_SITE_DATA) {
        return;
    }
    let Entry::Occupied(fields) = headers.entry(CLEAR_SITE_DATA) else {
        return;
    };
    let kept: Vec<HeaderValue> = fields
        .remove_entry_mult()
        .1
        .filter_map(without_cookie_clearing)
        .collect();
    for value in kept {
        headers.append(CLEAR_SITE_DATA, value);
    }
}

/// What a `Clear-Site-Data` type asks for, as far as cookies go. Browsers compare types
/// exactly; case and surrounding spaces are ignored here, so that no spelling one of them
/// might accept gets through (a spelling they ignore loses nothing by being removed).
enum ClearType {
    Cookies,
    /// `"*"`: every type, cookies included.
    All,
    Other,
}

impl ClearType {
    fn of(text: &[u8]) -> ClearType {
        let text = text.trim_ascii();
        if text.eq_ignore_ascii_case(b"cookies") {
            ClearType::Cookies
        } else if text == b"*" {
            ClearType::All
        } else {
            ClearType::Other
        }
    }
}

/// `field` without the types that clear cookies (unchanged when it has none); `None` when no
/// type is left, or when it is not a list of quoted strings.
fn without_cookie_clearing(field: HeaderValue) -> Option<HeaderValue> {
    let types = quoted_strings(field.as_bytes())?;
    if types.is_empty() {
        return None;
    }
    if types
        .iter()
        .all(|t| matches!(ClearType::of(&t.text), ClearType::Other))
    {
        return Some(field);
    }
    // Each type once, as sent; the ones `"*"` stands for quoted plainly.
    let mut kept: Vec<Quoted<'_>> = Vec::new();
    for t in types {
        let instead = match ClearType::of(&t.text) {
            ClearType::Cookies => Vec::new(),
            ClearType::All => ALL_BUT_COOKIES.into_iter().map(Quoted::plain).collect(),
            ClearType::Other => vec![t],
        };
        for quoted in instead {
            if !kept.iter().any(|k| k.text == quoted.text) {
                kept.push(quoted);
            }
        }
    }
    if kept.is_empty() {
        return None;
    }
    let raw: Vec<&[u8]> = kept.iter().map(|k| &*k.raw).collect();
    HeaderValue::from_bytes(&raw.join(&b", "[..])).ok()
}

/// A quoted string of a list: as sent, quotes included, and the text it quotes.
struct Quoted<'a> {
    raw: std::borrow::Cow<'a, [u8]>,
    text: Vec<u8>,
}

impl Quoted<'_> {
    /// `text` (no `"` or `\` in it) between quotes.
    fn plain(text: &[u8]) -> Quoted<'static> {
        Quoted {
            raw: [&b"\""[..], text, b"\""].concat().into(),
            text: text.to_vec(),
        }
    }
}

/// `value` as a comma-separated list of quoted strings (RFC 9110 §5.6.1 and §5.6.4, empty
/// elements allowed), or `None` if it is anything else.
fn quoted_strings(value: &[u8]) -> Option<Vec<Quoted<'_>>> {
    let mut list = Vec::new();
    let mut rest = value;
    loop {
        rest = skip_ows(rest);
        match rest.first() {
            None => return Some(list),
            Some(b',') => {
                rest = &rest[1..];
                continue;
            }
            Some(b'"') => {}
            Some(_) => return None,
        }
        let (quoted, after) = quoted_string(rest)?;
        list.push(quoted);
        rest = skip_ows(after);
        match rest.first() {
            None => return Some(list),
            Some(b',') => rest = &rest[1..],
            Some(_) => return None,
        }
    }
}

/// The quoted string `s` starts with (its first byte is `"`), and what follows it.
fn quoted_string(s: &[u8]) -> Option<(Quoted<'_>, &[u8])> {
    // qdtext and the byte after `\` in a quoted-pair: HTAB, SP, VCHAR, obs-text.
    let allowed = |b: u8| b == b'\t' || (b >= 0x20 && b != 0x7f);
    let mut text = Vec::new();
    let mut i = 1;
    loop {
        match *s.get(i)? {
            b'"' => {
                let quoted = Quoted {
                    raw: s[..=i].into(),
                    text,
                };
                return Some((quoted, &s[i + 1..]));
            }
            b'\\' => {
                let escaped = *s.get(i + 1).filter(|b| allowed(**b))?;
                text.push(escaped);
                i += 2;
            }
            b if allowed(b) => {
                text.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
}

fn skip_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !matches!(b, b' ' | b'\t'));
    &s[start.unwrap_or(s.len())..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn removes_fixed_hop_by_hop_fields() {
        let mut h = map(&[
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic eA=="),
            ("proxy-authenticate", "Basic"),
            ("x-app", "kept"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn removes_fields_named_in_connection() {
        let mut h = map(&[
            ("connection", "close, X-Secret"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-app", "kept"),
        ]);
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key("connection"));
        assert!(!h.contains_key("x-secret"));
        assert!(!h.contains_key("x-other"));
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn only_hop_by_hop_fields_go_and_keep_alive_answers_lose_both() {
        let mut h = map(&[("x-app", "kept"), ("cookie", "a=b")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "nothing to remove");
        let mut h = map(&[
            ("connection", "keep-alive, close"),
            ("keep-alive", "timeout=5"),
            ("close", "x"),
            ("content-length", "5"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["content-length"], "5");
    }

    #[test]
    fn garbage_in_connection_is_ignored_not_fatal() {
        let mut h = map(&[("connection", "close, , bad name!, x-a"), ("x-a", "1")]);
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn detects_upgrade_requests_only_with_connection_upgrade() {
        let h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(requested_upgrade(&h).unwrap(), "websocket");
        let h = map(&[("upgrade", "websocket")]);
        assert!(requested_upgrade(&h).is_none());
        for h2c in ["h2c", "H2C", "websocket, h2c"] {
            let h = map(&[("connection", "Upgrade"), ("upgrade", h2c)]);
            assert!(requested_upgrade(&h).is_none(), "{h2c}");
        }
    }

    fn fwd(trusted: bool) -> Forwarding<'static> {
        Forwarding {
            peer: "192.0.2.10".parse().unwrap(),
            peer_trusted: trusted,
            proto: "https",
            host: Some("console.example.com"),
        }
    }

    #[test]
    fn the_forwarded_for_entry_follows_the_peer_from_request_to_request() {
        // One thread, peers alternating and repeating: never the previous peer's entry.
        let peers = [
            "192.0.2.1",
            "192.0.2.1",
            "2001:db8::7",
            "192.0.2.1",
            "198.51.100.20",
            "198.51.100.20",
        ];
        for peer in peers {
            let mut h = HeaderMap::new();
            let fwd = Forwarding {
                peer: peer.parse().unwrap(),
                ..fwd(false)
            };
            set_forwarded(&mut h, &fwd);
            assert_eq!(h["x-forwarded-for"], peer);
        }
    }

    #[test]
    fn replaces_client_forwarded_headers_from_untrusted_peer() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil.example"),
        ]);
        set_forwarded(&mut h, &fwd(false));
        assert_eq!(h["x-forwarded-for"], "192.0.2.10");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "console.example.com");
    }

    #[test]
    fn appends_to_forwarded_chain_from_trusted_peer() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "public.example"),
        ]);
        set_forwarded(&mut h, &fwd(true));
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 192.0.2.10");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "public.example");
    }

    #[test]
    fn session_cookie_never_reaches_the_upstream() {
        let mut h = map(&[
            ("cookie", "app=1; stepgate_session=secret; theme=dark"),
            ("cookie", "__Host-stepgate_session=secret2"),
        ]);
        strip_cookies(&mut h, &["stepgate_session", "__Host-stepgate_session"]);
        let all: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(all, vec!["app=1; theme=dark"]);
    }

    #[test]
    fn every_hop_by_hop_name_is_found_at_its_place() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        for other in [
            "host",
            "cookie",
            "connections",
            "tes",
            "upgrade-insecure-requests",
        ] {
            assert_eq!(hop_by_hop_index(&HeaderName::from_static(other)), None);
        }
    }

    #[test]
    fn cookies_of_the_application_alone_pass_as_sent() {
        let sent = ["app=1;theme=dark; ;", "b=2"];
        let mut h = map(&[("cookie", sent[0]), ("cookie", sent[1])]);
        strip_cookies(&mut h, &["stepgate_session"]);
        let all: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(all, sent);
    }

    #[test]
    fn a_cookie_header_of_the_session_alone_is_removed() {
        let mut h = map(&[("cookie", " stepgate_session=secret ; ")]);
        strip_cookies(&mut h, &["stepgate_session"]);
        assert!(!h.contains_key("cookie"), "{h:?}");
        // Other headers of the request are left alone.
        let mut h = map(&[("cookie", "stepgate_session=s"), ("accept", "*/*")]);
        strip_cookies(&mut h, &["stepgate_session"]);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn a_cookie_value_that_is_not_text_is_kept_beside_the_stripped_one() {
        let mut h = HeaderMap::new();
        h.append(
            "cookie",
            HeaderValue::from_static("stepgate_session=s; a=1"),
        );
        h.append("cookie", HeaderValue::from_bytes(b"b=\xff").unwrap());
        strip_cookies(&mut h, &["stepgate_session"]);
        let all: Vec<_> = h.get_all("cookie").iter().map(|v| v.as_bytes()).collect();
        assert_eq!(all, vec![&b"a=1"[..], &b"b=\xff"[..]]);
    }

    #[test]
    fn a_neighbour_that_is_not_text_does_not_shield_the_session_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            "cookie",
            HeaderValue::from_bytes(b"stepgate_session=s; pref=\xc3\xa9; a=1").unwrap(),
        );
        strip_cookies(&mut h, &["stepgate_session"]);
        let all: Vec<_> = h.get_all("cookie").iter().map(|v| v.as_bytes()).collect();
        assert_eq!(all, vec![&b"pref=\xc3\xa9; a=1"[..]]);
    }

    #[test]
    fn an_upstream_cannot_set_the_gateways_cookies() {
        let mut h = map(&[
            (
                "set-cookie",
                "__Host-stepgate_session=planted; Path=/; Secure",
            ),
            ("set-cookie", "app=1; Path=/"),
            ("set-cookie", " stepgate_session=; Max-Age=0"),
            ("set-cookie", "stepgate_session_extra=2"),
            // Nameless cookies, which browsers send back as `stepgate_session=planted`.
            ("set-cookie", "=stepgate_session=planted; Path=/"),
            ("set-cookie", " = stepgate_session=planted"),
            ("set-cookie", "stepgate_session"),
            ("set-cookie", "=other=1"),
        ]);
        strip_set_cookies(&mut h, &["stepgate_session", "__Host-stepgate_session"]);
        let kept: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(
            kept,
            ["app=1; Path=/", "stepgate_session_extra=2", "=other=1"]
        );
    }

    /// The `Clear-Site-Data` fields left after [`strip_cookie_clearing`] of `fields`.
    fn clear_site_data(fields: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut h = HeaderMap::new();
        for field in fields {
            h.append(CLEAR_SITE_DATA, HeaderValue::from_bytes(field).unwrap());
        }
        h.insert("x-app", HeaderValue::from_static("kept"));
        strip_cookie_clearing(&mut h);
        assert_eq!(h["x-app"], "kept");
        h.get_all(CLEAR_SITE_DATA)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect()
    }

    fn fields(values: &[&str]) -> Vec<Vec<u8>> {
        values.iter().map(|v| v.as_bytes().to_vec()).collect()
    }

    #[test]
    fn an_upstream_cannot_clear_the_gateways_cookie_with_clear_site_data() {
        assert_eq!(
            clear_site_data(&[br#""cache", "cookies""#]),
            fields(&[r#""cache""#])
        );
        assert_eq!(
            clear_site_data(&[br#""cookies""#]),
            fields(&[]),
            "nothing left: removed"
        );
    }

    #[test]
    fn the_clear_site_data_wildcard_becomes_every_type_but_cookies() {
        assert_eq!(
            clear_site_data(&[br#""*""#]),
            fields(&[r#""cache", "storage", "executionContexts""#])
        );
        // Each type once.
        assert_eq!(
            clear_site_data(&[br#""storage", "*", "cache", "cookies""#]),
            fields(&[r#""storage", "cache", "executionContexts""#])
        );
    }

    #[test]
    fn clear_site_data_that_clears_no_cookies_passes_as_sent() {
        for value in [
            r#""cache",  "storage""#,
            r#""executionContexts""#,
            r#""clientHints", "storage:bucket", "prefetchCache""#,
            r#""cache", "cache""#,
        ] {
            assert_eq!(
                clear_site_data(&[value.as_bytes()]),
                fields(&[value]),
                "{value}"
            );
        }
    }

    #[test]
    fn unknown_clear_site_data_types_are_kept_beside_removed_cookies() {
        assert_eq!(
            clear_site_data(&[br#""clientHints", "cookies", "prefetchCache", "future""#]),
            fields(&[r#""clientHints", "prefetchCache", "future""#])
        );
        // Bytes that are not ASCII are allowed in a quoted string, and kept.
        assert_eq!(
            clear_site_data(&[b"\"caf\xe9\", \"cookies\""]),
            vec![b"\"caf\xe9\"".to_vec()]
        );
    }

    #[test]
    fn clear_site_data_cookies_are_removed_in_any_spelling() {
        let all_but_cookies = r#""cache", "storage", "executionContexts""#;
        for (value, left) in [
            (r#""Cookies""#, r#""cache""#),
            (r#""COOKIES""#, r#""cache""#),
            (r#"" cookies ""#, r#""cache""#),
            (r#""cook\ies""#, r#""cache""#),
            (r#""\c\o\o\k\i\e\s""#, r#""cache""#),
            (r#"" * ""#, all_but_cookies),
            (r#""\*""#, all_but_cookies),
        ] {
            let field = format!(r#""cache", {value}"#);
            assert_eq!(
                clear_site_data(&[field.as_bytes()]),
                fields(&[left]),
                "{value}"
            );
        }
    }

    /// A field a browser might split otherwise than as a list of quoted strings is dropped
    /// whole: the gateway cannot tell what it would clear.
    #[test]
    fn clear_site_data_that_is_not_a_list_of_quoted_strings_is_removed() {
        for value in [
            "cookies",
            "cache",
            r#""cookies"#,
            r#""cache" "cookies""#,
            r#""cache";"cookies""#,
            r#""cache", cookies"#,
            r#"'cookies'"#,
            r#""cache"x"#,
            r#""cache\"#,
            "",
            " , ",
        ] {
            assert_eq!(clear_site_data(&[value.as_bytes()]), fields(&[]), "{value}");
        }
    }

    #[test]
    fn clear_site_data_lists_are_read_as_rfc_9110_lists() {
        // Empty elements are allowed; a comma inside quotes separates nothing.
        assert_eq!(
            clear_site_data(&[br#", "cache" ,, "cookies","#]),
            fields(&[r#""cache""#])
        );
        assert_eq!(
            clear_site_data(&[br#""x,", "cookies""#]),
            fields(&[r#""x,""#])
        );
        let quoted_list = r#""a, \"cookies\", b""#;
        assert_eq!(
            clear_site_data(&[quoted_list.as_bytes()]),
            fields(&[quoted_list]),
            "one type, whose text holds a comma and quotes"
        );
    }

    #[test]
    fn every_clear_site_data_field_is_rewritten() {
        assert_eq!(
            clear_site_data(&[
                br#""cookies""#,
                br#""cache", "*""#,
                b"cookies",
                br#""storage""#,
            ]),
            fields(&[r#""cache", "storage", "executionContexts""#, r#""storage""#])
        );
    }

    #[test]
    fn finds_identity_look_alikes_but_not_the_exact_spelling() {
        let protected = fold_names(["Remote-User", "Remote-Groups"]);
        let exact = map(&[
            ("remote-user", "a"),
            ("Remote-Groups", "b"),
            ("x_other", "c"),
        ]);
        assert_eq!(identity_look_alike(&exact, &protected), None);
        for spelling in ["remote_user", "Remote~Groups", "remote.user", "remote!user"] {
            let h = map(&[("remote-user", "a"), (spelling, "admin")]);
            let found = identity_look_alike(&h, &protected).map(HeaderName::as_str);
            assert_eq!(found, Some(spelling.to_ascii_lowercase().as_str()));
        }
    }

    #[test]
    fn strips_identity_header_in_every_spelling() {
        let protected = fold_names(["Remote-User", "Remote-Groups"]);
        let mut h = map(&[
            ("remote-user", "a"),
            ("REMOTE-USER", "b"),
            ("remote_user", "c"),
            ("remote.user", "d"),
            ("Remote_Groups", "admins"),
            // Servers that turn every other character into `_` (lighttpd's CGI, FastCGI and
            // SCGI) read these as REMOTE_USER and REMOTE_GROUPS too.
            ("remote~user", "e"),
            ("remote!user", "f"),
            ("remote+groups", "g"),
            ("remote|user", "h"),
            ("remote-username", "kept"),
            ("remoteuser", "kept"),
        ]);
        strip_protected(&mut h, &protected);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("remote-username"));
        assert!(h.contains_key("remoteuser"));
    }
}
