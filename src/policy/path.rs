//! Canonical request paths.
//!
//! Access rules match the canonical path and the upstream receives exactly that same string, so a
//! path can never mean one thing to the rules and another thing to the application behind the
//! gateway. Anything ambiguous (encoded slashes, backslashes, control bytes, invalid UTF-8, dot
//! segments that climb above the root) is refused; the gateway answers 400 and forwards nothing.
//!
//! The steps, in order:
//! 1. percent-decode once, and only the octets that are unreserved characters (RFC 3986 §2.3:
//!    ALPHA, DIGIT, `-`, `.`, `_`, `~`); every other `%XX` stays encoded with upper-case hex;
//! 2. refuse the forbidden bytes, raw or encoded;
//! 3. collapse repeated slashes and remove dot segments (RFC 3986 §5.2.4), refusing any `..` that
//!    would climb above the root; a trailing slash is kept.

use std::borrow::Cow;
use std::fmt;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hexadecimal digits.
    BadPercentEncoding,
    /// `%2F`: an encoded slash would split segments differently here and upstream.
    EncodedSlash,
    /// `%5C`: an encoded backslash, which some servers treat as a separator.
    EncodedBackslash,
    /// A raw `\`, which some servers treat as a separator.
    Backslash,
    /// A control byte (0x00-0x1F, 0x7F), raw or percent-encoded.
    ControlCharacter,
    /// A raw character that cannot appear in a path: space, `?` or `#`.
    ForbiddenCharacter,
    /// The fully decoded path is not valid UTF-8 (overlong or truncated sequences included).
    InvalidUtf8,
    /// A `..` segment that would climb above the root.
    ClimbsAboveRoot,
    /// A dot segment carrying parameters (`..;x`, `.;x`, `..%3Bx`), which some servers resolve
    /// as `..` once the parameters are stripped.
    DotSegmentWithParameters,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = match self {
            PathError::NotAbsolute => "path does not start with a slash",
            PathError::BadPercentEncoding => "malformed percent-encoding",
            PathError::EncodedSlash => "encoded slash in path",
            PathError::EncodedBackslash => "encoded backslash in path",
            PathError::Backslash => "backslash in path",
            PathError::ControlCharacter => "control character in path",
            PathError::ForbiddenCharacter => "forbidden character in path",
            PathError::InvalidUtf8 => "path is not valid UTF-8",
            PathError::ClimbsAboveRoot => "path climbs above the root",
            PathError::DotSegmentWithParameters => "dot segment with parameters in path",
        };
        f.write_str(reason)
    }
}

impl std::error::Error for PathError {}

/// Returns the canonical form of `raw`, the path of a request target as it arrived (no query
/// string). The result is both what access rules match and what the upstream receives.
pub fn canonicalize(raw: &str) -> Result<String, PathError> {
    if is_plain(raw) {
        return Ok(raw.to_owned());
    }
    canonicalize_in_full(raw)
}

/// A path of letters, digits, `-`, `_`, `~` and single slashes, starting with one, is already
/// canonical: nothing to decode, no dot segment, no repeated slash. Most paths are; this one
/// pass spares them the two copies and the segment list of [`canonicalize_in_full`].
fn is_plain(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes.first() == Some(&b'/')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'~'))
        && !bytes.windows(2).any(|pair| pair == b"//")
}

/// [`canonicalize`] for any path: escapes decoded where that is safe, dot segments resolved,
/// repeated slashes collapsed, anything ambiguous refused.
fn canonicalize_in_full(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }

    // `once`: unreserved octets decoded, every other escape kept (hex upper-cased).
    // `full`: every escape decoded, only to check that the path is valid UTF-8.
    let mut once = Vec::with_capacity(bytes.len());
    let mut full = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (hi, lo) = match (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) {
                    (Some(hi), Some(lo)) => (hi, lo),
                    _ => return Err(PathError::BadPercentEncoding),
                };
                let v = (hi << 4) | lo;
                match v {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::EncodedBackslash),
                    v if is_control(v) => return Err(PathError::ControlCharacter),
                    _ => {}
                }
                full.push(v);
                if is_unreserved(v) {
                    once.push(v);
                } else {
                    once.extend_from_slice(&[b'%', HEX_UPPER[hi as usize], HEX_UPPER[lo as usize]]);
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b' ' | b'?' | b'#' => return Err(PathError::ForbiddenCharacter),
            b if is_control(b) => return Err(PathError::ControlCharacter),
            _ => {
                full.push(b);
                once.push(b);
                i += 1;
            }
        }
    }
    if std::str::from_utf8(&full).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    // Only whole UTF-8 sequences of `raw` and ASCII were copied into `once`, so this cannot fail;
    // it is still mapped to an error rather than unwrapped.
    let once = String::from_utf8(once).map_err(|_| PathError::InvalidUtf8)?;
    remove_dot_segments(&once)
}

/// Collapses repeated slashes and resolves `.` and `..` (RFC 3986 §5.2.4) in a path that starts
/// with `/` and whose unreserved characters are already decoded.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut kept: Vec<&str> = Vec::new();
    // Whether the result ends with a slash: true after an empty segment (`/a/`) or a dot segment
    // (`/a/.`, `/a/b/..`), as in RFC 3986.
    let mut trailing_slash = false;
    for segment in path[1..].split('/') {
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                if kept.pop().is_none() {
                    return Err(PathError::ClimbsAboveRoot);
                }
                trailing_slash = true;
            }
            s => {
                // `;` raw or as `%3B` (hex is upper-cased by now): some servers decode first.
                let params_at = [s.find(';'), s.find("%3B")]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(s.len());
                let before_params = &s[..params_at];
                if before_params == "." || before_params == ".." {
                    return Err(PathError::DotSegmentWithParameters);
                }
                kept.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// A canonical path as the access rules read it: each segment without its parameters (from
/// the first `;`, raw or as `%3B`), and the segments left empty by that dropped
/// (`/admin;x/users` -> `/admin/users`, `/;x/admin` -> `/admin`). Servlet containers and the
/// frameworks on them drop a segment's parameters before routing, so `/admin;x` is `/admin`
/// to them: a rule written for `/admin` must judge it. The upstream still receives the
/// canonical path unchanged (`;jsessionid=...` included). Borrows when there is nothing to drop.
pub fn without_parameters(path: &str) -> Cow<'_, str> {
    if !path.contains(';') && !path.contains("%3B") && !path.contains("%3b") {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let end = [segment.find(';'), segment.find("%3B"), segment.find("%3b")]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(segment.len());
        let name = &segment[..end];
        // An empty segment stays only at the end, as the trailing slash.
        if !name.is_empty() || segments.peek().is_none() {
            out.push('/');
            out.push_str(name);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Cow::Owned(out)
}

/// A canonical path as the application behind the gateway reads it: every escape the
/// canonical form keeps (`%3A`, `%C3%A9`) decoded, once, as frameworks decode a path before
/// routing (`/wiki/Special%3AX` is `/wiki/Special:X` to them). `None` when that reading is the
/// path itself. The escapes that would change the segments (`%2F`, `%5C`) never reach here:
/// [`canonicalize`] refuses them. Bytes that are not UTF-8 read as U+FFFD.
pub fn decoded(path: &str) -> Option<String> {
    if !path.contains('%') {
        return None;
    }
    let text = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    (text != path).then(|| text.into_owned())
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_reads_every_escape_once() {
        assert_eq!(decoded("/a/b"), None);
        assert_eq!(
            decoded("/wiki/Special%3AX").as_deref(),
            Some("/wiki/Special:X")
        );
        assert_eq!(decoded("/caf%C3%A9").as_deref(), Some("/caf\u{e9}"));
        assert_eq!(decoded("/100%2525").as_deref(), Some("/100%25"));
        // Not UTF-8 once decoded: replacement characters, never an error.
        assert_eq!(decoded("/%FF").as_deref(), Some("/\u{fffd}"));
    }

    /// Every path of up to six bytes over the plain alphabet (and a dot, which is not in it):
    /// where the shortcut applies, it gives what the full canonicalisation gives.
    #[test]
    fn the_plain_path_shortcut_agrees_with_the_full_canonicalisation() {
        const ALPHABET: &[u8] = b"/aZ0-_~.";
        let mut paths: Vec<Vec<u8>> = vec![b"/".to_vec()];
        let mut shortcuts = 0;
        let mut longer = Vec::new();
        for _ in 0..5 {
            for path in &paths {
                for &b in ALPHABET {
                    let mut next = path.clone();
                    next.push(b);
                    longer.push(next);
                }
            }
            paths.append(&mut longer);
        }
        paths.sort();
        paths.dedup();
        for path in &paths {
            let path = std::str::from_utf8(path).unwrap();
            if is_plain(path) {
                shortcuts += 1;
                assert_eq!(canonicalize_in_full(path).as_deref(), Ok(path), "{path:?}");
            } else if path.contains('.') {
                // Not plain: the full way decides (and resolves, or refuses, the dot).
                assert_eq!(canonicalize(path), canonicalize_in_full(path), "{path:?}");
            }
        }
        assert!(
            shortcuts > 10_000,
            "{shortcuts} plain paths of {}",
            paths.len()
        );
        for not_plain in ["//a", "/a//", "/a/./b", "/a%41", "/a;b", "/a b", "a/b", ""] {
            assert!(!is_plain(not_plain), "{not_plain:?}");
        }
    }

    fn ok(raw: &str) -> String {
        match canonicalize(raw) {
            Ok(p) => p,
            Err(e) => panic!("{raw:?} was refused: {e}"),
        }
    }

    fn err(raw: &str) -> PathError {
        match canonicalize(raw) {
            Ok(p) => panic!("{raw:?} was accepted as {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn plain_paths_are_unchanged() {
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/admin"), "/admin");
        assert_eq!(ok("/admin/"), "/admin/");
        assert_eq!(ok("/a/b/c.html"), "/a/b/c.html");
        assert_eq!(ok("/api/v1/users/42"), "/api/v1/users/42");
    }

    #[test]
    fn decodes_unreserved_once() {
        assert_eq!(ok("/%61dmin"), "/admin");
        assert_eq!(ok("/%41%42%43-%30%39"), "/ABC-09");
        assert_eq!(ok("/%2D%2E%5F%7E"), "/-._~");
    }

    #[test]
    fn keeps_reserved_escapes_encoded_with_upper_case_hex() {
        assert_eq!(ok("/a%3fb"), "/a%3Fb");
        assert_eq!(ok("/a%20b"), "/a%20b");
        assert_eq!(ok("/a%3Bb"), "/a%3Bb");
        assert_eq!(ok("/%25"), "/%25");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
    }

    #[test]
    fn rejects_double_encoding_tricks() {
        // `%25` is `%`: decoding happens once, so the result still reads `%252e`, never `.`.
        assert_eq!(ok("/%252e%252e/admin"), "/%252e%252e/admin");
        assert_eq!(
            ok("/a/%252e%252e/%252e%252e/admin"),
            "/a/%252e%252e/%252e%252e/admin"
        );
        assert_eq!(ok("/%252f"), "/%252f");
        assert_eq!(ok("/%25%32%65"), "/%252e");
    }

    #[test]
    fn rejects_dot_segment_bypass() {
        // The rules see where the request really goes, not the spelling.
        assert_eq!(ok("/public/../admin"), "/admin");
        assert_eq!(ok("/public/./../admin/"), "/admin/");
        assert_eq!(ok("/public/%2e%2e/admin"), "/admin");
        assert_eq!(ok("/public/%2E%2E/admin"), "/admin");
        assert_eq!(ok("/public/.%2e/admin"), "/admin");
        assert_eq!(ok("/public/%2e./admin"), "/admin");
        assert_eq!(ok("/./admin"), "/admin");
        assert_eq!(ok("/%2e/admin"), "/admin");
    }

    #[test]
    fn dot_segments_at_the_end_leave_a_trailing_slash() {
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/b/."), "/a/b/");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/."), "/");
    }

    #[test]
    fn dots_inside_names_are_not_dot_segments() {
        assert_eq!(ok("/a/...//b"), "/a/.../b");
        assert_eq!(ok("/.well-known/x"), "/.well-known/x");
        assert_eq!(ok("/a/..b/c"), "/a/..b/c");
        assert_eq!(ok("/a/b../c"), "/a/b../c");
    }

    #[test]
    fn rejects_climbing_above_root() {
        assert_eq!(err("/.."), PathError::ClimbsAboveRoot);
        assert_eq!(err("/../x"), PathError::ClimbsAboveRoot);
        assert_eq!(err("/a/../../x"), PathError::ClimbsAboveRoot);
        assert_eq!(err("/%2e%2e/x"), PathError::ClimbsAboveRoot);
        assert_eq!(err("/a/%2E%2E/.%2e/etc/passwd"), PathError::ClimbsAboveRoot);
    }

    #[test]
    fn collapses_repeated_slashes() {
        assert_eq!(ok("//admin"), "/admin");
        assert_eq!(ok("/a//b///c"), "/a/b/c");
        assert_eq!(ok("/a//"), "/a/");
        assert_eq!(ok("//"), "/");
        // Collapsing happens before `..` is resolved, as an upstream that merges slashes sees it.
        assert_eq!(ok("/a//../x"), "/x");
    }

    #[test]
    fn rejects_encoded_slash_bypass() {
        assert_eq!(err("/public%2F..%2Fadmin"), PathError::EncodedSlash);
        assert_eq!(err("/admin%2f"), PathError::EncodedSlash);
        assert_eq!(err("/%2F%2Fevil"), PathError::EncodedSlash);
    }

    #[test]
    fn rejects_backslash_bypass() {
        assert_eq!(err("/public\\..\\admin"), PathError::Backslash);
        assert_eq!(err("/public%5C..%5Cadmin"), PathError::EncodedBackslash);
        assert_eq!(err("/public%5c..%5cadmin"), PathError::EncodedBackslash);
    }

    #[test]
    fn rejects_null_byte_truncation() {
        assert_eq!(err("/admin%00.png"), PathError::ControlCharacter);
        assert_eq!(err("/admin\0.png"), PathError::ControlCharacter);
    }

    #[test]
    fn rejects_control_characters_raw_or_encoded() {
        for raw in [
            "/a\tb",
            "/a\nb",
            "/a\rb",
            "/a\x7fb",
            "/a%09b",
            "/a%0Ab",
            "/a%0d%0aSet-Cookie:x",
            "/a%1Fb",
            "/a%7Fb",
            "/a%7fb",
        ] {
            assert_eq!(err(raw), PathError::ControlCharacter, "{raw:?}");
        }
    }

    #[test]
    fn rejects_overlong_utf8_dot_encoding() {
        // `%C0%AE` is an overlong `.`; decoders that accept it turn `%C0%AE%C0%AE` into `..`.
        assert_eq!(err("/%C0%AE%C0%AE/admin"), PathError::InvalidUtf8);
        assert_eq!(err("/%c0%af"), PathError::InvalidUtf8);
        assert_eq!(err("/%e0%80%af"), PathError::InvalidUtf8);
    }

    #[test]
    fn rejects_invalid_utf8_percent_sequences() {
        assert_eq!(err("/%C3%28"), PathError::InvalidUtf8);
        assert_eq!(err("/%C3"), PathError::InvalidUtf8);
        assert_eq!(err("/%FF"), PathError::InvalidUtf8);
        assert_eq!(err("/%ED%A0%80"), PathError::InvalidUtf8); // a surrogate
        // Valid multi-byte sequences are fine and stay encoded.
        assert_eq!(ok("/%E2%82%AC"), "/%E2%82%AC");
    }

    #[test]
    fn raw_utf8_is_kept() {
        assert_eq!(ok("/café/ü"), "/café/ü");
        assert_eq!(ok("/日本/../x"), "/x");
    }

    #[test]
    fn rejects_malformed_percent_encoding() {
        for raw in [
            "/%",
            "/%4",
            "/a%zz",
            "/%G1",
            "/%u002e%u002e/admin",
            "/%%32%65",
            "/%é",
        ] {
            assert_eq!(err(raw), PathError::BadPercentEncoding, "{raw:?}");
        }
    }

    #[test]
    fn rejects_paths_not_starting_with_a_slash() {
        assert_eq!(err(""), PathError::NotAbsolute);
        assert_eq!(err("admin"), PathError::NotAbsolute);
        assert_eq!(err("*"), PathError::NotAbsolute);
        assert_eq!(err("http://evil/"), PathError::NotAbsolute);
        assert_eq!(err("%2Fadmin"), PathError::NotAbsolute);
    }

    #[test]
    fn rejects_query_or_fragment_smuggled_into_the_path() {
        assert_eq!(err("/admin?x=1"), PathError::ForbiddenCharacter);
        assert_eq!(err("/admin#x"), PathError::ForbiddenCharacter);
        assert_eq!(err("/a b"), PathError::ForbiddenCharacter);
    }

    #[test]
    fn path_parameters_are_kept_as_is() {
        assert_eq!(ok("/a;jsessionid=1/b"), "/a;jsessionid=1/b");
        assert_eq!(ok("/admin;x"), "/admin;x");
        assert_eq!(ok("/a/b;v=1/../c"), "/a/c");
    }

    #[test]
    fn rules_read_each_segment_without_its_parameters() {
        let cases = [
            ("/admin", "/admin"),
            ("/admin;x", "/admin"),
            ("/admin;x/users", "/admin/users"),
            ("/admin%3Bx/users", "/admin/users"),
            ("/a;jsessionid=1/b;v=2/", "/a/b/"),
            ("/;x/admin", "/admin"),
            ("/admin/;x", "/admin/"),
            ("/;x", "/"),
            ("/", "/"),
        ];
        for (path, read) in cases {
            assert_eq!(without_parameters(path), read, "{path}");
        }
        assert!(matches!(
            without_parameters("/plain/path"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn rejects_dot_segment_with_parameters_bypass() {
        // Some application servers strip `;...` and then resolve `..`.
        assert_eq!(
            err("/public/..;/admin"),
            PathError::DotSegmentWithParameters
        );
        assert_eq!(
            err("/public/..;x=1/admin"),
            PathError::DotSegmentWithParameters
        );
        assert_eq!(
            err("/public/%2e%2e;/admin"),
            PathError::DotSegmentWithParameters
        );
        assert_eq!(err("/public/.;/admin"), PathError::DotSegmentWithParameters);
        assert_eq!(
            err("/public/..%3B/admin"),
            PathError::DotSegmentWithParameters
        );
        assert_eq!(
            err("/public/%2e%2e%3bx/admin"),
            PathError::DotSegmentWithParameters
        );
        // Names that merely start with dots are fine.
        assert_eq!(ok("/a/...;x/b"), "/a/...;x/b");
    }

    #[test]
    fn canonical_paths_are_fixed_points() {
        for raw in [
            "/%61dmin/./x/../y//z/",
            "/%252e%252e/a%3fb",
            "/a;b/c%20d/%7e",
            "/café/%E2%82%AC",
        ] {
            let once = ok(raw);
            assert_eq!(ok(&once), once, "{raw:?}");
        }
    }

    #[test]
    fn errors_read_as_short_english_reasons() {
        assert_eq!(PathError::EncodedSlash.to_string(), "encoded slash in path");
        assert_eq!(
            PathError::ClimbsAboveRoot.to_string(),
            "path climbs above the root"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(PathError::InvalidUtf8);
        assert_eq!(boxed.to_string(), "path is not valid UTF-8");
    }
}
