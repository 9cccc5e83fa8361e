//! On-disk record formats. Each record is an enum of versions; only the newest is written, every
//! version ever shipped stays readable. Domain types never touch serde directly.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::auth::audit::{AuditEvent, AuditKind};
use crate::auth::password::PasswordHash;
use crate::auth::regulation::FailureState;
use crate::auth::session::{AuthLevel, Session, SessionKey};
use crate::auth::user::{User, Username};
use crate::clock::Timestamp;
use crate::store::StoreError;

/// Encodes a record. Serialising these plain structs cannot fail in practice; should it ever,
/// the caller gets a store error rather than a panic.
pub(crate) fn encode<T: Serialize>(what: &'static str, record: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record)
        .map_err(|e| StoreError::corrupt(what, format!("cannot encode: {:?}", e.classify())))
}

/// Decodes a record. The error names where the problem is, never what the bytes contain.
pub(crate) fn decode<'a, T: Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::corrupt(
            what,
            format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })
}

fn username(what: &'static str, raw: &str) -> Result<Username, StoreError> {
    let name = Username::parse(raw).map_err(|_| StoreError::corrupt(what, "invalid username"))?;
    if name.as_str() != raw {
        return Err(StoreError::corrupt(
            what,
            "username is not in canonical form",
        ));
    }
    Ok(name)
}

// ---------------------------------------------------------------------------------------------
// Users

#[derive(Serialize, Deserialize)]
pub(crate) enum UserRecord {
    V1(UserRecordV1),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserRecordV1 {
    username: String,
    display_name: String,
    email: Option<String>,
    groups: Vec<String>,
    disabled: bool,
    /// PHC string (`$argon2id$v=19$...`).
    password_hash: String,
    created_at_ms: i64,
}

impl UserRecord {
    pub(crate) fn from_user(user: &User) -> Self {
        UserRecord::V1(UserRecordV1 {
            username: user.username.as_str().to_string(),
            display_name: user.display_name.clone(),
            email: user.email.clone(),
            groups: user.groups.clone(),
            disabled: user.disabled,
            password_hash: user.password_hash.as_str().to_string(),
            created_at_ms: user.created_at.as_millis(),
        })
    }

    pub(crate) fn into_user(self) -> Result<User, StoreError> {
        match self {
            UserRecord::V1(r) => Ok(User {
                username: username("user", &r.username)?,
                display_name: r.display_name,
                email: r.email,
                groups: r.groups,
                disabled: r.disabled,
                password_hash: PasswordHash::new_unchecked(r.password_hash),
                created_at: Timestamp::from_millis(r.created_at_ms),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions

#[derive(Serialize, Deserialize)]
pub(crate) enum SessionRecord {
    V1(SessionRecordV1),
}

/// Variant names are the on-disk spelling.
#[allow(clippy::enum_variant_names)]
#[derive(Serialize, Deserialize, Clone, Copy)]
pub(crate) enum AuthLevelV1 {
    AwaitSecondFactor,
    OneFactor,
    TwoFactor,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionRecordV1 {
    username: String,
    created_at_ms: i64,
    last_seen_ms: i64,
    expires_at_ms: i64,
    remember_me: bool,
    auth_level: AuthLevelV1,
    second_factor_at_ms: Option<i64>,
    #[serde(default)]
    challenge_started_at_ms: Option<i64>,
    #[serde(default)]
    challenge_failures: u32,
}

impl SessionRecord {
    pub(crate) fn from_session(s: &Session) -> Self {
        SessionRecord::V1(SessionRecordV1 {
            username: s.username.as_str().to_string(),
            created_at_ms: s.created_at.as_millis(),
            last_seen_ms: s.last_seen.as_millis(),
            expires_at_ms: s.expires_at.as_millis(),
            remember_me: s.remember_me,
            auth_level: match s.auth_level {
                AuthLevel::AwaitSecondFactor => AuthLevelV1::AwaitSecondFactor,
                AuthLevel::OneFactor => AuthLevelV1::OneFactor,
                AuthLevel::TwoFactor => AuthLevelV1::TwoFactor,
            },
            second_factor_at_ms: s.second_factor_at.map(Timestamp::as_millis),
            challenge_started_at_ms: s.challenge_started_at.map(Timestamp::as_millis),
            challenge_failures: s.challenge_failures,
        })
    }

    /// The owner, without converting the whole record (used to keep the user index in step).
    pub(crate) fn username(&self) -> &str {
        match self {
            SessionRecord::V1(r) => &r.username,
        }
    }

    pub(crate) fn into_session(self, key: SessionKey) -> Result<Session, StoreError> {
        match self {
            SessionRecord::V1(r) => Ok(Session {
                key,
                username: username("session", &r.username)?,
                created_at: Timestamp::from_millis(r.created_at_ms),
                last_seen: Timestamp::from_millis(r.last_seen_ms),
                expires_at: Timestamp::from_millis(r.expires_at_ms),
                remember_me: r.remember_me,
                auth_level: match r.auth_level {
                    AuthLevelV1::AwaitSecondFactor => AuthLevel::AwaitSecondFactor,
                    AuthLevelV1::OneFactor => AuthLevel::OneFactor,
                    AuthLevelV1::TwoFactor => AuthLevel::TwoFactor,
                },
                second_factor_at: r.second_factor_at_ms.map(Timestamp::from_millis),
                challenge_started_at: r.challenge_started_at_ms.map(Timestamp::from_millis),
                challenge_failures: r.challenge_failures,
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bans and failure counters

#[derive(Serialize, Deserialize)]
pub(crate) enum BanRecord {
    V1(BanRecordV1),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BanRecordV1 {
    /// Times of recent failures, oldest first.
    failures_ms: Vec<i64>,
    banned_until_ms: Option<i64>,
}

impl BanRecord {
    pub(crate) fn from_state(s: &FailureState) -> Self {
        BanRecord::V1(BanRecordV1 {
            failures_ms: s.failures.iter().map(|t| t.as_millis()).collect(),
            banned_until_ms: s.banned_until.map(Timestamp::as_millis),
        })
    }

    pub(crate) fn into_state(self) -> FailureState {
        match self {
            BanRecord::V1(r) => FailureState {
                failures: r
                    .failures_ms
                    .into_iter()
                    .map(Timestamp::from_millis)
                    .collect(),
                banned_until: r.banned_until_ms.map(Timestamp::from_millis),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Audit

#[derive(Serialize, Deserialize)]
pub(crate) enum AuditRecord {
    V1(AuditRecordV1),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditRecordV1 {
    at_ms: i64,
    /// [`AuditKind::as_str`], e.g. `login_failed`.
    kind: String,
    username: Option<String>,
    client_ip: Option<IpAddr>,
    detail: Option<String>,
}

impl AuditRecord {
    pub(crate) fn from_event(e: &AuditEvent) -> Self {
        AuditRecord::V1(AuditRecordV1 {
            at_ms: e.at.as_millis(),
            kind: e.kind.as_str().to_string(),
            username: e.username.clone(),
            client_ip: e.client_ip,
            detail: e.detail.clone(),
        })
    }

    pub(crate) fn into_event(self) -> Result<AuditEvent, StoreError> {
        match self {
            AuditRecord::V1(r) => Ok(AuditEvent {
                at: Timestamp::from_millis(r.at_ms),
                kind: AuditKind::from_name(&r.kind)
                    .ok_or_else(|| StoreError::corrupt("audit", "unknown event kind"))?,
                username: r.username,
                client_ip: r.client_ip,
                detail: r.detail,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_record_round_trips_and_is_versioned() {
        let user = User {
            username: Username::parse("alice").unwrap(),
            display_name: "Alice".into(),
            email: Some("alice@example.com".into()),
            groups: vec!["admins".into()],
            disabled: true,
            password_hash: PasswordHash::new_unchecked("$argon2id$v=19$x".into()),
            created_at: Timestamp(42),
        };
        let bytes = encode("user", &UserRecord::from_user(&user)).unwrap();
        assert!(
            bytes.starts_with(br#"{"V1":"#),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        let back = decode::<UserRecord>("user", &bytes)
            .unwrap()
            .into_user()
            .unwrap();
        assert_eq!(back, user);
    }

    #[test]
    fn garbled_records_are_errors_that_do_not_echo_content() {
        let garbled = br#"{"V1":{"username":"alice","password_hash":"$argon2id$SECRET"#;
        let err = match decode::<UserRecord>("user", garbled) {
            Err(e) => e,
            Ok(_) => panic!("garbled record decoded"),
        };
        assert!(matches!(err, StoreError::Corrupt { what: "user", .. }));
        assert!(!err.to_string().contains("SECRET"), "{err}");
        assert!(!format!("{err:?}").contains("SECRET"), "{err:?}");

        let unknown_version = br#"{"V9":{}}"#;
        assert!(decode::<UserRecord>("user", unknown_version).is_err());
        let extra_field = br#"{"V1":{"failures_ms":[],"banned_until_ms":null,"x":1}}"#;
        assert!(decode::<BanRecord>("ban", extra_field).is_err());
    }

    #[test]
    fn non_canonical_username_on_disk_is_corrupt() {
        let bytes = br#"{"V1":{"username":"Alice","display_name":"","email":null,"groups":[],"disabled":false,"password_hash":"","created_at_ms":0}}"#;
        let rec = decode::<UserRecord>("user", bytes).unwrap();
        assert!(matches!(rec.into_user(), Err(StoreError::Corrupt { .. })));
    }
}
