//! What is stored about a user's second factors, as the rest of the module sees it. The store
//! converts these to and from versioned records; none of them holds a secret in the clear.

use std::fmt;

use crate::auth::factors::Method;
use crate::auth::factors::settings::TotpAlgorithm;
use crate::clock::Timestamp;

/// Bytes produced by [`super::SecretBox::seal`]. Opaque; `Debug` is redacted anyway.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(pub Vec<u8>);

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A keyed hash ([`super::SecretBox::keyed_hash`]) of a code. Not reversible without the key
/// file, but still kept out of logs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CodeHash(pub [u8; 32]);

impl fmt::Debug for CodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The TOTP parameters a secret was enrolled with. Kept with the secret so that changing the
/// configuration later does not break authenticator apps already set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TotpParams {
    pub algorithm: TotpAlgorithm,
    pub digits: u8,
    /// Seconds per time step (at least 1).
    pub period: u64,
}

/// An active TOTP factor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TotpFactor {
    pub secret: Sealed,
    pub params: TotpParams,
    pub created_at: Timestamp,
    /// The newest time step accepted so far; no step at or before it is accepted again.
    pub last_used_step: Option<u64>,
}

/// A TOTP secret shown to the user and not confirmed yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingTotp {
    pub secret: Sealed,
    pub params: TotpParams,
    pub expires_at: Timestamp,
    /// Confirmations tried against this secret, right or wrong (see
    /// [`super::Factors::confirm_totp`]).
    pub attempts: u32,
}

/// A phone number in E.164 form and whether a code sent to it came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phone {
    pub number: String,
    pub verified: bool,
}

/// Everything stored about one user's second factors. The default value means "nothing" and
/// is not stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserFactors {
    pub totp: Option<TotpFactor>,
    pub pending_totp: Option<PendingTotp>,
    /// Hashes of the unused backup codes.
    pub backup_codes: Vec<CodeHash>,
    /// `None`: the user never chose, `email_default` applies.
    pub email_verification: Option<bool>,
    pub phone: Option<Phone>,
    /// A new number waiting for its confirmation code while the verified `phone` stays in use:
    /// a mistyped number or a failed send never takes SMS codes away.
    pub pending_phone: Option<String>,
    pub preferred: Option<Method>,
}

impl UserFactors {
    pub fn is_empty(&self) -> bool {
        *self == UserFactors::default()
    }
}

/// A code sent by e-mail or SMS, waiting to be typed back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCode {
    pub hash: CodeHash,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub failed_attempts: u32,
}

/// One user's state on one code channel: the newest code, if still valid, and recent sends
/// (for the cooldown and the hourly limit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodeState {
    pub current: Option<IssuedCode>,
    /// Times of sends within the last hour, oldest first.
    pub sends: Vec<Timestamp>,
}

impl CodeState {
    pub fn is_empty(&self) -> bool {
        *self == CodeState::default()
    }
}
