//! On-disk record formats. Each record is an enum of versions; only the newest is written, every
//! version ever shipped stays readable. Domain types never touch serde directly.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::auth::audit::{AuditEvent, AuditKind};
use crate::auth::factors::Method;
use crate::auth::factors::settings::TotpAlgorithm;
use crate::auth::factors::state::{
    CodeHash, CodeState, IssuedCode, PendingTotp, Phone, Sealed, TotpFactor, TotpParams,
    UserFactors,
};
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
    #[serde(default)]
    reauth_at_ms: Option<i64>,
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
            reauth_at_ms: s.reauth_at.map(Timestamp::as_millis),
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
                reauth_at: r.reauth_at_ms.map(Timestamp::from_millis),
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

// ---------------------------------------------------------------------------------------------
// Second factors

fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn b64_decode(what: &'static str, text: &str) -> Result<Vec<u8>, StoreError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| StoreError::corrupt(what, "invalid base64"))
}

fn code_hash(what: &'static str, text: &str) -> Result<CodeHash, StoreError> {
    let bytes: [u8; 32] = b64_decode(what, text)?
        .try_into()
        .map_err(|_| StoreError::corrupt(what, "code hash of the wrong length"))?;
    Ok(CodeHash(bytes))
}

#[derive(Serialize, Deserialize)]
pub(crate) enum FactorRecord {
    V1(FactorRecordV1),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FactorRecordV1 {
    totp: Option<TotpRecordV1>,
    pending_totp: Option<PendingTotpRecordV1>,
    /// Base64 keyed hashes of the unused backup codes.
    backup_codes: Vec<String>,
    email_verification: Option<bool>,
    phone: Option<PhoneRecordV1>,
    /// Absent in records written before numbers could wait beside a verified one.
    #[serde(default)]
    pending_phone: Option<String>,
    /// [`Method::as_str`].
    preferred: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TotpParamsV1 {
    /// `SHA1`, `SHA256` or `SHA512`.
    algorithm: String,
    digits: u8,
    period_secs: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TotpRecordV1 {
    /// Base64 of the sealed secret (nonce, ciphertext, tag).
    secret_sealed: String,
    params: TotpParamsV1,
    created_at_ms: i64,
    last_used_step: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PendingTotpRecordV1 {
    secret_sealed: String,
    params: TotpParamsV1,
    expires_at_ms: i64,
    /// Absent in records written before attempts were counted: none then.
    #[serde(default)]
    attempts: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PhoneRecordV1 {
    number: String,
    verified: bool,
}

impl TotpParamsV1 {
    fn from_params(p: &TotpParams) -> Self {
        TotpParamsV1 {
            algorithm: p.algorithm.as_str().to_string(),
            digits: p.digits,
            period_secs: p.period,
        }
    }

    fn into_params(self, what: &'static str) -> Result<TotpParams, StoreError> {
        let algorithm = TotpAlgorithm::parse(&self.algorithm)
            .ok_or_else(|| StoreError::corrupt(what, "unknown TOTP algorithm"))?;
        if !(6..=8).contains(&self.digits) || self.period_secs == 0 {
            return Err(StoreError::corrupt(what, "TOTP parameters out of range"));
        }
        Ok(TotpParams {
            algorithm,
            digits: self.digits,
            period: self.period_secs,
        })
    }
}

impl FactorRecord {
    pub(crate) fn from_factors(f: &UserFactors) -> Self {
        FactorRecord::V1(FactorRecordV1 {
            totp: f.totp.as_ref().map(|t| TotpRecordV1 {
                secret_sealed: b64_encode(&t.secret.0),
                params: TotpParamsV1::from_params(&t.params),
                created_at_ms: t.created_at.as_millis(),
                last_used_step: t.last_used_step,
            }),
            pending_totp: f.pending_totp.as_ref().map(|p| PendingTotpRecordV1 {
                secret_sealed: b64_encode(&p.secret.0),
                params: TotpParamsV1::from_params(&p.params),
                expires_at_ms: p.expires_at.as_millis(),
                attempts: p.attempts,
            }),
            backup_codes: f.backup_codes.iter().map(|h| b64_encode(&h.0)).collect(),
            email_verification: f.email_verification,
            phone: f.phone.as_ref().map(|p| PhoneRecordV1 {
                number: p.number.clone(),
                verified: p.verified,
            }),
            pending_phone: f.pending_phone.clone(),
            preferred: f.preferred.map(|m| m.as_str().to_string()),
        })
    }

    pub(crate) fn into_factors(self) -> Result<UserFactors, StoreError> {
        const WHAT: &str = "second factor";
        match self {
            FactorRecord::V1(r) => Ok(UserFactors {
                totp: r
                    .totp
                    .map(|t| -> Result<TotpFactor, StoreError> {
                        Ok(TotpFactor {
                            secret: Sealed(b64_decode(WHAT, &t.secret_sealed)?),
                            params: t.params.into_params(WHAT)?,
                            created_at: Timestamp::from_millis(t.created_at_ms),
                            last_used_step: t.last_used_step,
                        })
                    })
                    .transpose()?,
                pending_totp: r
                    .pending_totp
                    .map(|p| -> Result<PendingTotp, StoreError> {
                        Ok(PendingTotp {
                            secret: Sealed(b64_decode(WHAT, &p.secret_sealed)?),
                            params: p.params.into_params(WHAT)?,
                            expires_at: Timestamp::from_millis(p.expires_at_ms),
                            attempts: p.attempts,
                        })
                    })
                    .transpose()?,
                backup_codes: r
                    .backup_codes
                    .iter()
                    .map(|h| code_hash(WHAT, h))
                    .collect::<Result<_, _>>()?,
                email_verification: r.email_verification,
                phone: r.phone.map(|p| Phone {
                    number: p.number,
                    verified: p.verified,
                }),
                pending_phone: r.pending_phone,
                preferred: r
                    .preferred
                    .map(|m| {
                        Method::parse(&m)
                            .ok_or_else(|| StoreError::corrupt(WHAT, "unknown preferred method"))
                    })
                    .transpose()?,
            }),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) enum CodeRecord {
    V1(CodeRecordV1),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CodeRecordV1 {
    current: Option<IssuedCodeRecordV1>,
    sends_ms: Vec<i64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssuedCodeRecordV1 {
    /// Base64 keyed hash of the code.
    hash: String,
    issued_at_ms: i64,
    expires_at_ms: i64,
    failed_attempts: u32,
}

impl CodeRecord {
    pub(crate) fn from_state(s: &CodeState) -> Self {
        CodeRecord::V1(CodeRecordV1 {
            current: s.current.as_ref().map(|c| IssuedCodeRecordV1 {
                hash: b64_encode(&c.hash.0),
                issued_at_ms: c.issued_at.as_millis(),
                expires_at_ms: c.expires_at.as_millis(),
                failed_attempts: c.failed_attempts,
            }),
            sends_ms: s.sends.iter().map(|t| t.as_millis()).collect(),
        })
    }

    pub(crate) fn into_state(self) -> Result<CodeState, StoreError> {
        match self {
            CodeRecord::V1(r) => Ok(CodeState {
                current: r
                    .current
                    .map(|c| -> Result<IssuedCode, StoreError> {
                        Ok(IssuedCode {
                            hash: code_hash("one-time code", &c.hash)?,
                            issued_at: Timestamp::from_millis(c.issued_at_ms),
                            expires_at: Timestamp::from_millis(c.expires_at_ms),
                            failed_attempts: c.failed_attempts,
                        })
                    })
                    .transpose()?,
                sends: r.sends_ms.into_iter().map(Timestamp::from_millis).collect(),
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

    #[test]
    fn factor_record_round_trips_and_is_versioned() {
        let factors = UserFactors {
            totp: Some(TotpFactor {
                secret: Sealed(vec![1, 2, 3]),
                params: TotpParams {
                    algorithm: TotpAlgorithm::Sha256,
                    digits: 8,
                    period: 60,
                },
                created_at: Timestamp(5),
                last_used_step: Some(77),
            }),
            pending_totp: Some(PendingTotp {
                secret: Sealed(vec![4, 5]),
                params: TotpParams {
                    algorithm: TotpAlgorithm::Sha1,
                    digits: 6,
                    period: 30,
                },
                expires_at: Timestamp(9),
                attempts: 2,
            }),
            backup_codes: vec![CodeHash([3; 32]), CodeHash([4; 32])],
            email_verification: Some(false),
            phone: Some(Phone {
                number: "+4915112345678".into(),
                verified: true,
            }),
            pending_phone: Some("+33612345678".into()),
            preferred: Some(Method::Sms),
        };
        let bytes = encode("f", &FactorRecord::from_factors(&factors)).unwrap();
        assert!(bytes.starts_with(br#"{"V1":"#));
        let back = decode::<FactorRecord>("f", &bytes)
            .unwrap()
            .into_factors()
            .unwrap();
        assert_eq!(back, factors);

        let state = CodeState {
            current: Some(IssuedCode {
                hash: CodeHash([9; 32]),
                issued_at: Timestamp(1),
                expires_at: Timestamp(2),
                failed_attempts: 3,
            }),
            sends: vec![Timestamp(1), Timestamp(4)],
        };
        let bytes = encode("c", &CodeRecord::from_state(&state)).unwrap();
        let back = decode::<CodeRecord>("c", &bytes)
            .unwrap()
            .into_state()
            .unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn factor_record_with_bad_values_is_corrupt() {
        let bad_method = br#"{"V1":{"totp":null,"pending_totp":null,"backup_codes":[],"email_verification":null,"phone":null,"preferred":"carrier_pigeon"}}"#;
        let rec = decode::<FactorRecord>("f", bad_method).unwrap();
        assert!(matches!(
            rec.into_factors(),
            Err(StoreError::Corrupt { .. })
        ));
        let bad_hash = br#"{"V1":{"totp":null,"pending_totp":null,"backup_codes":["AAAA"],"email_verification":null,"phone":null,"preferred":null}}"#;
        let rec = decode::<FactorRecord>("f", bad_hash).unwrap();
        assert!(matches!(
            rec.into_factors(),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
