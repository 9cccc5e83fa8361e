//! Second factors: TOTP (authenticator apps), codes sent by e-mail or SMS, and single-use backup
//! codes. This module holds the rules and the storage; the portal asks for and checks codes
//! through [`Factors`], and `notify` delivers the codes [`Factors::issue_code`] hands out.
//!
//! Security properties, each enforced here rather than by callers:
//! - TOTP secrets are stored sealed with the key file ([`SecretBox`]), bound to their owner.
//! - Backup and one-time codes are stored only as keyed hashes, compared in constant time.
//! - Every single-use thing (a TOTP time step, a backup code, a one-time code) is consumed with a
//!   compare-and-swap on the user's record and flushed before success is returned, so two
//!   concurrent uses cannot both succeed, and a crash cannot bring a used code back.
//! - Wrong guesses are bounded for one-time codes (`code_max_attempts`). TOTP and backup code
//!   guesses are not counted here: callers count failed second-factor attempts with the
//!   regulation module, as for passwords.

mod backup;
pub mod codes;
mod phone;
pub mod secret_box;
pub mod settings;
pub mod state;
pub mod totp;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::user::{User, Username};
use crate::clock::{SharedClock, Timestamp};
use crate::store::{Store, StoreError};

pub use codes::{Channel, OneTimeCode};
pub use phone::normalise_phone;
pub use secret_box::SecretBox;
pub use settings::{MfaSettings, RawMfa, TotpAlgorithm};
use state::UserFactors;

/// A kind of second factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Totp,
    Email,
    Sms,
    Backup,
}

impl Method {
    /// Every method, in the order they are offered when the user has no preference.
    pub const ALL: [Method; 4] = [Method::Totp, Method::Email, Method::Sms, Method::Backup];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Totp => "totp",
            Method::Email => "email",
            Method::Sms => "sms",
            Method::Backup => "backup",
        }
    }

    /// Inverse of [`Method::as_str`] (exact spelling).
    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a user stands with second factors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TwoFactorState {
    /// No method is usable at login.
    NotEnabled,
    Enabled,
    /// The TOTP secret is older than `totp_max_age`: still accepted, but the user should
    /// enrol a new one.
    Expired,
}

impl TwoFactorState {
    pub fn as_str(self) -> &'static str {
        match self {
            TwoFactorState::NotEnabled => "not_enabled",
            TwoFactorState::Enabled => "enabled",
            TwoFactorState::Expired => "expired",
        }
    }
}

/// What the login and settings pages need to know about a user's second factors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactorSummary {
    pub state: TwoFactorState,
    /// Methods usable at login, the preferred one first.
    pub methods: Vec<Method>,
    pub preferred: Option<Method>,
    pub backup_codes_remaining: usize,
    /// When the current TOTP secret was confirmed.
    pub enrolled_at: Option<Timestamp>,
    /// E-mail codes are switched on (by the user, or by `email_default`), whether or not the
    /// account has an address.
    pub email_verification: bool,
    pub phone: Option<String>,
    pub phone_verified: bool,
    /// A new number waiting for its code beside the verified `phone`.
    pub phone_pending: Option<String>,
    pub totp: bool,
    /// How many digits the enrolled app's codes have: those of the secret's enrolment, which
    /// a later change of `mfa.totp_digits` does not change.
    pub totp_digits: Option<u8>,
}

/// A TOTP secret to show once, for the user to add to an authenticator app. `Debug` is
/// redacted; the page shows the fields, nothing logs them.
pub struct TotpEnrolment {
    /// The secret in base32 (RFC 4648, no padding), for typing in by hand.
    pub secret_base32: String,
    /// `otpauth://totp/Issuer:user?secret=...&issuer=Issuer`.
    pub otpauth_uri: String,
    /// The URI as a QR code, a standalone SVG document.
    pub qr_svg: String,
}

impl fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpEnrolment([redacted])")
    }
}

/// Everything that can go wrong with second factors. No message contains a secret or a code.
#[derive(Debug, thiserror::Error)]
pub enum FactorError {
    #[error("the code is not valid")]
    InvalidCode,
    #[error("this code was already used")]
    Replayed,
    #[error("the code has expired")]
    Expired,
    #[error("too many wrong codes; request a new one")]
    TooManyAttempts,
    #[error("no code is outstanding; request one first")]
    NoCode,
    #[error("nothing is waiting for confirmation")]
    NoPendingEnrolment,
    #[error("this second factor is not set up")]
    NotEnrolled,
    #[error("a code was sent moments ago; try again in {} s", whole_secs(*retry_after))]
    Cooldown { retry_after: Duration },
    #[error("too many codes were sent in the last hour; try again in {} s", whole_secs(*retry_after))]
    HourlyLimit { retry_after: Duration },
    #[error("not a phone number in international form (+ and 8 to 15 digits)")]
    InvalidPhone,
    #[error("this second factor is not available for the account")]
    MethodUnavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("second-factor cryptography failed: {0}")]
    Crypto(String),
    #[error("key file {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
}

fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// What the store's key check seals (and authenticates it with): see [`Factors::check_key`].
const KEY_CHECK: &[u8] = b"stepgate: the key of the second-factor secrets";

/// Second factors of every user: the rules, over the store.
///
/// All methods are blocking (disk I/O and flushes); async callers run them off the workers.
pub struct Factors {
    store: Arc<Store>,
    clock: SharedClock,
    secret_box: SecretBox,
    settings: MfaSettings,
}

impl fmt::Debug for Factors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Factors")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Does the account have an e-mail address to send codes to?
fn has_email(user: &User) -> bool {
    user.email.as_deref().is_some_and(|e| !e.trim().is_empty())
}

/// The summary of `f` for a user who has (or has not) an e-mail address, at `now`.
fn summarize(
    f: &UserFactors,
    has_email: bool,
    settings: &MfaSettings,
    now: Timestamp,
) -> FactorSummary {
    let totp = f.totp.is_some();
    let email_verification = f.email_verification.unwrap_or(settings.email_default);
    let phone_verified = f.phone.as_ref().is_some_and(|p| p.verified);
    let available = |m: Method| match m {
        Method::Totp => totp,
        Method::Email => has_email && email_verification,
        Method::Sms => phone_verified,
        Method::Backup => totp && !f.backup_codes.is_empty(),
    };
    let preferred = f.preferred.filter(|m| available(*m)).or_else(|| {
        [Method::Totp, Method::Email, Method::Sms]
            .into_iter()
            .find(|m| available(*m))
    });
    let mut methods: Vec<Method> = preferred.into_iter().collect();
    methods.extend(
        Method::ALL
            .into_iter()
            .filter(|m| available(*m) && Some(*m) != preferred),
    );
    let state = match &f.totp {
        _ if methods.is_empty() => TwoFactorState::NotEnabled,
        Some(t) if now.since(t.created_at) > settings.totp_max_age => TwoFactorState::Expired,
        _ => TwoFactorState::Enabled,
    };
    FactorSummary {
        state,
        methods,
        preferred,
        backup_codes_remaining: if totp { f.backup_codes.len() } else { 0 },
        enrolled_at: f.totp.as_ref().map(|t| t.created_at),
        email_verification,
        phone: f.phone.as_ref().map(|p| p.number.clone()),
        phone_verified,
        phone_pending: f.pending_phone.clone(),
        totp,
        totp_digits: f.totp.as_ref().map(|t| t.params.digits),
    }
}

/// The summary of a user's factors read straight from the store (no key needed): for the
/// administration commands, which may run without the gateway.
pub fn summary_from_store(
    store: &Store,
    user: &User,
    settings: &MfaSettings,
    now: Timestamp,
) -> Result<FactorSummary, FactorError> {
    let f = store.get_factors(&user.username)?;
    Ok(summarize(&f, has_email(user), settings, now))
}

impl Factors {
    pub fn new(
        store: Arc<Store>,
        clock: SharedClock,
        secret_box: SecretBox,
        settings: MfaSettings,
    ) -> Self {
        Factors {
            store,
            clock,
            secret_box,
            settings,
        }
    }

    pub fn settings(&self) -> &MfaSettings {
        &self.settings
    }

    /// The user's second factors as the login and settings pages see them.
    pub fn summary(&self, user: &User) -> Result<FactorSummary, FactorError> {
        let f = self.store.get_factors(&user.username)?;
        Ok(summarize(
            &f,
            has_email(user),
            &self.settings,
            self.clock.now(),
        ))
    }

    /// Is a TOTP secret enrolled (confirmed)?
    pub fn has_totp(&self, username: &Username) -> Result<bool, FactorError> {
        Ok(self.store.get_factors(username)?.totp.is_some())
    }

    /// Turns e-mail codes on or off for the user. An explicit choice overrides `email_default`.
    pub fn set_email_verification(
        &self,
        username: &Username,
        enabled: bool,
    ) -> Result<(), FactorError> {
        self.store.update_factors(username, |mut f| {
            f.email_verification = Some(enabled);
            Ok::<_, FactorError>((f, ()))
        })
    }

    /// Makes `method` the one offered first at login. It must be available right now
    /// ([`FactorError::MethodUnavailable`] otherwise); backup codes are a fallback and cannot be
    /// preferred. If the method later becomes unavailable the default order applies again.
    pub fn set_preferred(&self, username: &Username, method: Method) -> Result<(), FactorError> {
        if method == Method::Backup {
            return Err(FactorError::MethodUnavailable);
        }
        let user = self
            .store
            .get_user(username)?
            .ok_or_else(|| StoreError::NoSuchUser(username.clone()))?;
        let email = has_email(&user);
        let now = self.clock.now();
        self.store.update_factors(username, |mut f| {
            let summary = summarize(&f, email, &self.settings, now);
            if !summary.methods.contains(&method) {
                return Err(FactorError::MethodUnavailable);
            }
            f.preferred = Some(method);
            Ok((f, ()))
        })
    }

    /// Removes every second factor of the user: TOTP secret, pending enrolment, backup codes,
    /// phone, e-mail choice, preference and outstanding codes. The record of recent sends is
    /// kept, so disabling and re-enabling does not lift the limits on sending codes.
    /// A code record this version cannot read is deleted: no login can use it.
    /// Under `mfa.email_default` e-mailed codes are turned off explicitly: otherwise they
    /// would be on again by default, and two-step verification not disabled at all.
    pub fn disable_all(&self, username: &Username) -> Result<(), FactorError> {
        self.store.delete_factors(username)?;
        if self.settings.email_default {
            self.set_email_verification(username, false)?;
        }
        let now = self.clock.now();
        for channel in codes::channels_to_clear(&self.store, username)? {
            self.store.update_code_state(username, channel, |mut s| {
                s.current = None;
                codes::prune_sends(&mut s, now);
                Ok::<_, FactorError>((s, ()))
            })?;
        }
        Ok(())
    }

    /// Deletes what no longer matters: expired pending TOTP enrolments, expired codes and
    /// sends older than an hour. Returns how many records changed. Run it now and then.
    ///
    /// A record that cannot be read is reported and left as it is, never deleted: deleting an
    /// account's second factors would let its password alone in. The others are pruned all the
    /// same.
    pub fn prune(&self) -> Result<usize, FactorError> {
        let now = self.clock.now();
        let mut changed = 0;
        let users = self.store.list_factor_users()?;
        for user in users.readable {
            let pruned = self.store.update_factors(&user, |mut f| {
                let before = f.pending_totp.is_some();
                f.pending_totp = f.pending_totp.filter(|p| now < p.expires_at);
                let pruned = before && f.pending_totp.is_none();
                Ok::<_, FactorError>((f, pruned))
            });
            match pruned {
                Ok(pruned) => changed += usize::from(pruned),
                Err(e) => {
                    tracing::warn!(user = %user, error = %e, "second factors unreadable; left as they are")
                }
            }
        }
        let codes = self.store.list_code_states()?;
        for (user, channel) in codes.readable {
            let pruned = self.store.update_code_state(&user, channel, |mut s| {
                let before = s.clone();
                s.current = s.current.filter(|c| now < c.expires_at);
                codes::prune_sends(&mut s, now);
                let pruned = s != before;
                Ok::<_, FactorError>((s, pruned))
            });
            match pruned {
                Ok(pruned) => changed += usize::from(pruned),
                Err(e) => {
                    tracing::warn!(user = %user, error = %e, "code record unreadable; left as it is")
                }
            }
        }
        for raw in users.unreadable.iter().chain(&codes.unreadable) {
            tracing::warn!(
                record = %crate::store::key_for_log(raw),
                "second-factor record under an unrecognised key; left as it is"
            );
        }
        Ok(changed)
    }

    /// Is the key the one this store's sealed secrets were sealed with? The store keeps a value
    /// sealed with its key ([`Store::key_check`]); a store without one (new, or from before it
    /// was kept) has it recorded now, once a stored authenticator secret, if there is any, has
    /// opened with the key. `Ok(false)`: another key.
    pub fn check_key(&self) -> Result<bool, FactorError> {
        if let Some(sealed) = self.store.key_check()? {
            return Ok(self.secret_box.open(&sealed, KEY_CHECK).is_ok());
        }
        if self.key_opens_a_stored_secret()? == Some(false) {
            return Ok(false);
        }
        self.store
            .set_key_check(&self.secret_box.seal(KEY_CHECK, KEY_CHECK)?)?;
        Ok(true)
    }

    /// Whether the key opens the first stored authenticator secret (confirmed or pending);
    /// `None` when the store holds none to try.
    fn key_opens_a_stored_secret(&self) -> Result<Option<bool>, FactorError> {
        for user in self.store.list_factor_users()?.readable {
            let Ok(f) = self.store.get_factors(&user) else {
                continue;
            };
            let sealed = f
                .totp
                .map(|t| t.secret)
                .or(f.pending_totp.map(|p| p.secret));
            if let Some(sealed) = sealed {
                let opens = self.secret_box.open(&sealed.0, &Self::totp_aad(&user));
                return Ok(Some(opens.is_ok()));
            }
        }
        Ok(None)
    }

    /// Associated data binding a sealed TOTP secret to its owner.
    fn totp_aad(username: &Username) -> Vec<u8> {
        format!("totp:{}", username.as_str()).into_bytes()
    }
}
