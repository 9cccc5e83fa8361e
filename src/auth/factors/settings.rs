//! `[mfa]`: second-factor settings as written ([`RawMfa`]) and as validated ([`MfaSettings`]).

use std::time::Duration;

use serde::Deserialize;

use crate::auth::user::User;
use crate::config::{ConfigErrors, parse_duration};

/// HMAC function behind TOTP codes. SHA1 is what every authenticator app supports; some apps
/// accept SHA256/SHA512 in the enrolment URI and silently compute SHA1 anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotpAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl TotpAlgorithm {
    /// The spelling used in configuration, records and otpauth URIs.
    pub fn as_str(self) -> &'static str {
        match self {
            TotpAlgorithm::Sha1 => "SHA1",
            TotpAlgorithm::Sha256 => "SHA256",
            TotpAlgorithm::Sha512 => "SHA512",
        }
    }

    /// Inverse of [`TotpAlgorithm::as_str`] (exact spelling).
    pub fn parse(s: &str) -> Option<TotpAlgorithm> {
        match s {
            "SHA1" => Some(TotpAlgorithm::Sha1),
            "SHA256" => Some(TotpAlgorithm::Sha256),
            "SHA512" => Some(TotpAlgorithm::Sha512),
            _ => None,
        }
    }
}

/// Validated `[mfa]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MfaSettings {
    /// Shown by authenticator apps next to the account name.
    pub issuer: String,
    pub totp_digits: u8,
    /// Whole seconds.
    pub totp_period: Duration,
    /// Time steps accepted on each side of the current one.
    pub totp_skew: u8,
    pub totp_algorithm: TotpAlgorithm,
    /// A TOTP secret older than this puts the account in the `expired` state (still usable).
    pub totp_max_age: Duration,
    /// Backup codes generated per set.
    pub backup_codes: usize,
    /// Every account must use a second factor.
    pub required: bool,
    /// Members of any of these groups must use a second factor.
    pub required_groups: Vec<String>,
    /// E-mail codes are on for users with an address unless they turn them off.
    pub email_default: bool,
    /// How long a fresh second-factor check allows changing second-factor settings.
    pub settings_reverify: Duration,
    /// Lifetime of an e-mailed or texted code.
    pub code_ttl: Duration,
    /// Wrong tries that void an e-mailed or texted code.
    pub code_max_attempts: u32,
    /// Minimum time between two sends on one channel.
    pub code_cooldown: Duration,
    /// Sends per channel per rolling hour.
    pub code_max_per_hour: u32,
}

impl Default for MfaSettings {
    fn default() -> Self {
        MfaSettings {
            issuer: "Stepgate".into(),
            totp_digits: 6,
            totp_period: Duration::from_secs(30),
            totp_skew: 1,
            totp_algorithm: TotpAlgorithm::Sha1,
            totp_max_age: Duration::from_secs(180 * 24 * 3600),
            backup_codes: 6,
            required: false,
            required_groups: Vec::new(),
            email_default: false,
            settings_reverify: Duration::from_secs(5 * 60),
            code_ttl: Duration::from_secs(10 * 60),
            code_max_attempts: 5,
            code_cooldown: Duration::from_secs(60),
            code_max_per_hour: 5,
        }
    }
}

impl MfaSettings {
    /// Must `user` pass a second factor to log in (`required`, or member of a required group)?
    pub fn is_required_for(&self, user: &User) -> bool {
        self.required
            || user
                .groups
                .iter()
                .any(|g| self.required_groups.iter().any(|r| r == g))
    }
}

/// `[mfa]` as written in the configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMfa {
    pub issuer: Option<String>,
    pub totp_digits: Option<u8>,
    pub totp_period: Option<String>,
    pub totp_skew: Option<u8>,
    pub totp_algorithm: Option<String>,
    pub totp_max_age: Option<String>,
    pub backup_codes: Option<usize>,
    pub required: Option<bool>,
    pub required_groups: Option<Vec<String>>,
    pub email_default: Option<bool>,
    pub settings_reverify: Option<String>,
    pub code_ttl: Option<String>,
    pub code_max_attempts: Option<u32>,
    pub code_cooldown: Option<String>,
    pub code_max_per_hour: Option<u32>,
}

const ISSUER_MAX_LEN: usize = 64;
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Checks `[mfa]`, recording every problem under its key (`mfa.totp_digits: ...`); defaults
/// stand in for wrong values.
pub fn validate(raw: &RawMfa, errors: &mut ConfigErrors) -> MfaSettings {
    let d = MfaSettings::default();

    let issuer = match &raw.issuer {
        None => d.issuer.clone(),
        Some(s) => {
            let s = s.trim();
            if s.is_empty() {
                errors.push("mfa.issuer", "must not be empty");
                d.issuer.clone()
            } else if s.contains(':') {
                errors.push(
                    "mfa.issuer",
                    "must not contain ':' (it separates issuer and account in authenticator apps)",
                );
                d.issuer.clone()
            } else if s.chars().any(char::is_control) {
                errors.push("mfa.issuer", "must not contain control characters");
                d.issuer.clone()
            } else if s.chars().count() > ISSUER_MAX_LEN {
                errors.push(
                    "mfa.issuer",
                    format!("must be at most {ISSUER_MAX_LEN} characters long"),
                );
                d.issuer.clone()
            } else {
                s.to_string()
            }
        }
    };

    let totp_digits = in_range(
        raw.totp_digits,
        6..=8,
        "mfa.totp_digits",
        d.totp_digits,
        errors,
    );
    let totp_skew = in_range(raw.totp_skew, 0..=3, "mfa.totp_skew", d.totp_skew, errors);
    let backup_codes = in_range(
        raw.backup_codes,
        1..=20,
        "mfa.backup_codes",
        d.backup_codes,
        errors,
    );
    let code_max_attempts = in_range(
        raw.code_max_attempts,
        1..=20,
        "mfa.code_max_attempts",
        d.code_max_attempts,
        errors,
    );
    let code_max_per_hour = in_range(
        raw.code_max_per_hour,
        1..=100,
        "mfa.code_max_per_hour",
        d.code_max_per_hour,
        errors,
    );

    let totp_algorithm = match &raw.totp_algorithm {
        None => d.totp_algorithm,
        Some(s) => match TotpAlgorithm::parse(s.trim()) {
            Some(a) => a,
            None => {
                errors.push(
                    "mfa.totp_algorithm",
                    format!("unknown algorithm {s:?}; use \"SHA1\", \"SHA256\" or \"SHA512\""),
                );
                d.totp_algorithm
            }
        },
    };

    let totp_period = match duration_in(
        &raw.totp_period,
        "mfa.totp_period",
        Duration::from_secs(10)..=Duration::from_secs(300),
        d.totp_period,
        errors,
    ) {
        p if p.subsec_nanos() != 0 => {
            errors.push("mfa.totp_period", "must be a whole number of seconds");
            d.totp_period
        }
        p => p,
    };
    let totp_max_age = duration_in(
        &raw.totp_max_age,
        "mfa.totp_max_age",
        DAY..=Duration::from_secs(100 * 365 * 24 * 3600),
        d.totp_max_age,
        errors,
    );
    let settings_reverify = duration_in(
        &raw.settings_reverify,
        "mfa.settings_reverify",
        Duration::from_secs(1)..=DAY,
        d.settings_reverify,
        errors,
    );
    let code_ttl = duration_in(
        &raw.code_ttl,
        "mfa.code_ttl",
        Duration::from_secs(30)..=DAY,
        d.code_ttl,
        errors,
    );
    let code_cooldown = duration_in(
        &raw.code_cooldown,
        "mfa.code_cooldown",
        Duration::ZERO..=Duration::from_secs(3600),
        d.code_cooldown,
        errors,
    );

    let required_groups = match &raw.required_groups {
        None => Vec::new(),
        Some(groups) => {
            let mut out: Vec<String> = Vec::new();
            for (i, g) in groups.iter().enumerate() {
                let key = format!("mfa.required_groups[{i}]");
                let g = g.trim();
                if g.is_empty() {
                    errors.push(key, "must not be empty");
                } else if let Some(reason) = crate::auth::user::group_name_problem(g) {
                    // It would never match: the requirement would be silently off.
                    errors.push(key, format!("group {g:?} can never match: {reason}"));
                } else if out.iter().any(|o| o == g) {
                    errors.push(key, format!("group {g:?} is listed twice"));
                } else {
                    out.push(g.to_string());
                }
            }
            out
        }
    };

    MfaSettings {
        issuer,
        totp_digits,
        totp_period,
        totp_skew,
        totp_algorithm,
        totp_max_age,
        backup_codes,
        required: raw.required.unwrap_or(d.required),
        required_groups,
        email_default: raw.email_default.unwrap_or(d.email_default),
        settings_reverify,
        code_ttl,
        code_max_attempts,
        code_cooldown,
        code_max_per_hour,
    }
}

fn in_range<T: PartialOrd + Copy + std::fmt::Display>(
    value: Option<T>,
    range: std::ops::RangeInclusive<T>,
    key: &str,
    default: T,
    errors: &mut ConfigErrors,
) -> T {
    match value {
        None => default,
        Some(v) if range.contains(&v) => v,
        Some(_) => {
            errors.push(
                key,
                format!("must be between {} and {}", range.start(), range.end()),
            );
            default
        }
    }
}

fn duration_in(
    value: &Option<String>,
    key: &str,
    range: std::ops::RangeInclusive<Duration>,
    default: Duration,
    errors: &mut ConfigErrors,
) -> Duration {
    let Some(v) = value else {
        return default;
    };
    match parse_duration(v, key, errors) {
        None => default,
        Some(d) if range.contains(&d) => d,
        Some(_) => {
            errors.push(
                key,
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(*range.start()),
                    humantime::format_duration(*range.end())
                ),
            );
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(errs: &ConfigErrors) -> Vec<&str> {
        errs.problems().iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn defaults_match_the_documentation() {
        let mut errs = ConfigErrors::default();
        let s = validate(&RawMfa::default(), &mut errs);
        assert!(errs.is_empty(), "{errs}");
        assert_eq!(s, MfaSettings::default());
        assert_eq!(s.issuer, "Stepgate");
        assert_eq!(s.totp_digits, 6);
        assert_eq!(s.totp_period, Duration::from_secs(30));
        assert_eq!(s.totp_skew, 1);
        assert_eq!(s.totp_algorithm, TotpAlgorithm::Sha1);
        assert_eq!(s.totp_max_age, 180 * DAY);
        assert_eq!(s.backup_codes, 6);
        assert!(!s.required && !s.email_default);
        assert!(s.required_groups.is_empty());
        assert_eq!(s.settings_reverify, Duration::from_secs(300));
        assert_eq!(s.code_ttl, Duration::from_secs(600));
        assert_eq!(s.code_max_attempts, 5);
        assert_eq!(s.code_cooldown, Duration::from_secs(60));
        assert_eq!(s.code_max_per_hour, 5);
    }

    #[test]
    fn accepts_valid_values() {
        let raw = RawMfa {
            issuer: Some("Example Corp".into()),
            totp_digits: Some(8),
            totp_period: Some("60s".into()),
            totp_skew: Some(0),
            totp_algorithm: Some("SHA512".into()),
            totp_max_age: Some("365d".into()),
            backup_codes: Some(10),
            required: Some(true),
            required_groups: Some(vec!["admins".into()]),
            email_default: Some(true),
            settings_reverify: Some("10m".into()),
            code_ttl: Some("5m".into()),
            code_max_attempts: Some(3),
            code_cooldown: Some("0s".into()),
            code_max_per_hour: Some(10),
        };
        let mut errs = ConfigErrors::default();
        let s = validate(&raw, &mut errs);
        assert!(errs.is_empty(), "{errs}");
        assert_eq!(s.issuer, "Example Corp");
        assert_eq!(s.totp_digits, 8);
        assert_eq!(s.totp_period, Duration::from_secs(60));
        assert_eq!(s.totp_skew, 0);
        assert_eq!(s.totp_algorithm, TotpAlgorithm::Sha512);
        assert_eq!(s.totp_max_age, 365 * DAY);
        assert_eq!(s.backup_codes, 10);
        assert!(s.required && s.email_default);
        assert_eq!(s.required_groups, ["admins"]);
        assert_eq!(s.code_cooldown, Duration::ZERO);
        assert_eq!(s.code_max_per_hour, 10);
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let raw = RawMfa {
            issuer: Some("Evil:Corp".into()),
            totp_digits: Some(9),
            totp_period: Some("1500ms".into()),
            totp_skew: Some(4),
            totp_algorithm: Some("MD5".into()),
            totp_max_age: Some("1h".into()),
            backup_codes: Some(0),
            required: None,
            required_groups: Some(vec![
                "ops".into(),
                " ".into(),
                "ops".into(),
                "admins,ops".into(),
                "ad mins".into(),
            ]),
            email_default: None,
            settings_reverify: Some("later".into()),
            code_ttl: Some("1s".into()),
            code_max_attempts: Some(0),
            code_cooldown: Some("2h".into()),
            code_max_per_hour: Some(1000),
        };
        let mut errs = ConfigErrors::default();
        let s = validate(&raw, &mut errs);
        let mut got = keys(&errs);
        got.sort();
        let mut want = vec![
            "mfa.issuer",
            "mfa.totp_digits",
            "mfa.totp_period",
            "mfa.totp_skew",
            "mfa.totp_algorithm",
            "mfa.totp_max_age",
            "mfa.backup_codes",
            "mfa.required_groups[1]",
            "mfa.required_groups[2]",
            "mfa.required_groups[3]",
            "mfa.required_groups[4]",
            "mfa.settings_reverify",
            "mfa.code_ttl",
            "mfa.code_max_attempts",
            "mfa.code_cooldown",
            "mfa.code_max_per_hour",
        ];
        want.sort();
        assert_eq!(got, want, "{errs}");
        // Defaults stand in for the wrong values.
        assert_eq!(s.totp_digits, 6);
        assert_eq!(s.issuer, "Stepgate");
        assert_eq!(s.required_groups, ["ops"]);
        let text = errs.to_string();
        assert!(
            text.contains("mfa.totp_digits: must be between 6 and 8"),
            "{text}"
        );
        assert!(
            text.contains("mfa.totp_algorithm: unknown algorithm \"MD5\""),
            "{text}"
        );
    }

    #[test]
    fn period_must_be_whole_seconds() {
        let raw = RawMfa {
            totp_period: Some("30s 500ms".into()),
            ..RawMfa::default()
        };
        let mut errs = ConfigErrors::default();
        assert_eq!(
            validate(&raw, &mut errs).totp_period,
            Duration::from_secs(30)
        );
        assert_eq!(keys(&errs), ["mfa.totp_period"]);
    }

    #[test]
    fn rejects_unknown_keys() {
        let parsed: Result<RawMfa, _> = serde_json::from_str(r#"{"totp_digits": 6, "digits": 6}"#);
        assert!(parsed.is_err());
    }

    #[test]
    fn required_for_members_of_required_groups() {
        use crate::auth::password::PasswordHash;
        use crate::auth::user::Username;
        use crate::clock::Timestamp;
        let mut user = User {
            username: Username::parse("alice").unwrap(),
            display_name: "Alice".into(),
            email: None,
            groups: vec!["staff".into()],
            disabled: false,
            password_hash: PasswordHash::new_unchecked("x".into()),
            created_at: Timestamp(0),
        };
        let mut s = MfaSettings {
            required_groups: vec!["admins".into()],
            ..MfaSettings::default()
        };
        assert!(!s.is_required_for(&user));
        user.groups.push("admins".into());
        assert!(s.is_required_for(&user));
        user.groups.clear();
        s.required = true;
        assert!(s.is_required_for(&user));
    }
}
