//! Accounts: the canonical [`Username`] and the [`User`] record as the rest of Stepgate sees it.

use std::fmt;

use crate::auth::password::PasswordHash;
use crate::clock::Timestamp;

/// Longest accepted username, in characters (all ASCII, so also in bytes).
pub const USERNAME_MAX_LEN: usize = 64;

/// Longest group name, in bytes.
pub const MAX_GROUP_BYTES: usize = 128;

/// Why `name` (trimmed, not empty) can be no account's group, or `None` if it can be one:
/// group names are printable ASCII without spaces or commas (commas separate them in
/// `Remote-Groups`), at most [`MAX_GROUP_BYTES`]. A rule or setting naming a group no account
/// can have would silently never apply.
pub fn group_name_problem(name: &str) -> Option<String> {
    if !name.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        Some("a group name is printable ASCII without spaces or commas".to_string())
    } else if name.len() > MAX_GROUP_BYTES {
        Some(format!(
            "a group name has at most {MAX_GROUP_BYTES} characters"
        ))
    } else {
        None
    }
}

/// A canonical account name.
///
/// Canonical form: surrounding whitespace trimmed, ASCII lower-cased, so `Alice`, ` alice ` and
/// `ALICE` are one account. After that the name must be 1 to 64 characters of `[a-z0-9._@-]`,
/// starting with a letter or digit.
///
/// Choices made here:
/// - Only ASCII is accepted, and the check happens *before* lower-casing: Unicode case mapping
///   turns some non-ASCII letters into ASCII ones (the Kelvin sign `U+212A` lower-cases to `k`),
///   which would let a look-alike spelling reach an existing account or collide at creation.
/// - `@` and `.` are allowed so e-mail addresses can serve as usernames.
/// - The first character must be a letter or digit, so a name can never be read as a
///   command-line flag (`-x`) or a relative path (`.`, `..`).
/// - The character set contains nothing that needs escaping in an HTTP header value, a cookie,
///   a log line or a store key (the store uses `\0` as a separator after the name).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Username(String);

impl Username {
    /// Canonicalises and checks `input`; the error is a reason a person can act on.
    pub fn parse(input: &str) -> Result<Username, String> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err("a username must not be empty".into());
        }
        if !trimmed.is_ascii() {
            return Err("a username may contain only ASCII letters, digits and . _ @ -".into());
        }
        if trimmed.len() > USERNAME_MAX_LEN {
            return Err(format!(
                "a username must be at most {USERNAME_MAX_LEN} characters long"
            ));
        }
        let canonical = trimmed.to_ascii_lowercase();
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@-".contains(&b);
        if !canonical.bytes().all(allowed) {
            return Err("a username may contain only ASCII letters, digits and . _ @ -".into());
        }
        let first = canonical.as_bytes()[0];
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err("a username must start with a letter or a digit".into());
        }
        Ok(Username(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({:?})", self.0)
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// An account. `Debug` is safe to log: the password hash prints as `[redacted]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub username: Username,
    pub display_name: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    /// A disabled account cannot log in and its sessions are revoked when it is disabled.
    pub disabled: bool,
    pub password_hash: PasswordHash,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_whitespace_name_one_account() {
        let a = Username::parse("Alice").unwrap();
        let b = Username::parse("  alice\t").unwrap();
        let c = Username::parse("ALICE").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.as_str(), "alice");
    }

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in [
            "a",
            "bob.smith",
            "bob_smith",
            "bob-smith",
            "bob@example.com",
            "0day",
        ] {
            assert_eq!(Username::parse(ok).unwrap().as_str(), ok, "{ok}");
        }
        let longest = "a".repeat(USERNAME_MAX_LEN);
        assert!(Username::parse(&longest).is_ok());
    }

    #[test]
    fn rejects_empty_and_too_long() {
        assert!(Username::parse("").is_err());
        assert!(Username::parse("   ").is_err());
        assert!(Username::parse(&"a".repeat(USERNAME_MAX_LEN + 1)).is_err());
    }

    #[test]
    fn rejects_kelvin_sign_homoglyph() {
        // U+212A lower-cases to an ASCII `k`; it must not reach the account `kelvin`.
        assert!(Username::parse("\u{212A}elvin").is_err());
        assert!(Username::parse("\u{0130}stanbul").is_err());
        assert!(Username::parse("jos\u{e9}").is_err());
    }

    #[test]
    fn rejects_header_and_key_injection_characters() {
        for bad in [
            "alice\r\nremote-user: admin",
            "alice\0bob",
            "alice,admin",
            "alice bob",
            "alice/..",
            "alice:x",
            "alice;x",
            "alice\"",
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_flag_and_dot_lookalikes() {
        for bad in ["-rf", ".", "..", "_x", "@x"] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_debug_does_not_show_the_hash() {
        let user = User {
            username: Username::parse("alice").unwrap(),
            display_name: "Alice".into(),
            email: None,
            groups: vec![],
            disabled: false,
            password_hash: PasswordHash::new_unchecked("$argon2id$v=19$secretstuff".into()),
            created_at: Timestamp(0),
        };
        let shown = format!("{user:?}");
        assert!(!shown.contains("secretstuff"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }
}
