//! `Authorization: Basic` credentials (RFC 7617), as API clients send them to the forward-auth
//! endpoints on rules that opt in (`allow_basic = true`).
//!
//! Parsing only: checking the password, regulation and the rule live with the endpoint.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::auth::password::Password;

/// A username and password taken from an `Authorization: Basic` header. No `Debug` of the
/// password: it prints `[redacted]`.
pub struct BasicCredentials {
    pub username: String,
    pub password: Password,
}

impl fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// What the `Authorization` header holds.
#[derive(Debug)]
pub enum Authorization {
    /// No `Authorization` header, or another scheme (`Bearer ...`): not ours to judge.
    Absent,
    /// A well-formed `Basic` header.
    Basic(BasicCredentials),
    /// A `Basic` header that cannot be read (bad base64, no colon, not UTF-8, several headers).
    Malformed,
}

/// Reads the `Authorization` header. Several `Authorization` headers are malformed when any
/// of them is `Basic`: which one a later hop would read is anyone's guess.
pub fn read(headers: &HeaderMap) -> Authorization {
    let values: Vec<_> = headers.get_all(AUTHORIZATION).iter().collect();
    let basic: Vec<_> = values
        .iter()
        .filter(|v| scheme_is_basic(v.as_bytes()))
        .collect();
    match (values.len(), basic.as_slice()) {
        (_, []) => Authorization::Absent,
        (1, [value]) => {
            parse(value.as_bytes()).map_or(Authorization::Malformed, Authorization::Basic)
        }
        _ => Authorization::Malformed,
    }
}

fn scheme_is_basic(value: &[u8]) -> bool {
    value.len() >= 6 && value[..5].eq_ignore_ascii_case(b"basic") && value[5] == b' '
}

fn parse(value: &[u8]) -> Option<BasicCredentials> {
    let encoded = std::str::from_utf8(&value[6..]).ok()?.trim();
    let decoded = STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (username, password) = text.split_once(':')?;
    if username.is_empty() || username.chars().any(char::is_control) {
        return None;
    }
    Some(BasicCredentials {
        username: username.to_string(),
        password: Password::new(password.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_pass))
    }

    #[test]
    fn reads_username_and_password_with_colons() {
        let Authorization::Basic(c) = read(&headers(&[&basic("alice:pa:ss word")])) else {
            panic!("not read");
        };
        assert_eq!(c.username, "alice");
        assert!(
            !format!("{c:?}").contains("pa:ss"),
            "the password is redacted"
        );
        let Authorization::Basic(c) = read(&headers(&[&basic("bob:").replace("Basic", "bAsIc")]))
        else {
            panic!("scheme is case-insensitive");
        };
        assert_eq!(c.username, "bob");
    }

    #[test]
    fn other_schemes_are_not_basic() {
        assert!(matches!(read(&HeaderMap::new()), Authorization::Absent));
        assert!(matches!(
            read(&headers(&["Bearer abc.def"])),
            Authorization::Absent
        ));
        assert!(matches!(
            read(&headers(&["Basicx YWxpY2U6cA=="])),
            Authorization::Absent
        ));
    }

    #[test]
    fn rejects_malformed_basic_credentials() {
        for v in [
            "Basic !!!".to_string(),
            "Basic ".to_string(),
            basic("no-colon"),
            basic(":password-without-user"),
            basic("ali\u{7}ce:x"),
            format!("Basic {}", STANDARD.encode([0xff, b':', b'x'])),
        ] {
            assert!(
                matches!(read(&headers(&[&v])), Authorization::Malformed),
                "{v}"
            );
        }
    }

    #[test]
    fn rejects_duplicate_authorization_smuggling() {
        let h = headers(&[&basic("alice:x"), &basic("admin:y")]);
        assert!(matches!(read(&h), Authorization::Malformed));
        let h = headers(&["Bearer t", &basic("admin:y")]);
        assert!(matches!(read(&h), Authorization::Malformed));
    }
}
