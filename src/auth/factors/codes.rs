//! One-time codes sent by e-mail or SMS: 6 random digits, valid for `code_ttl`, only the newest
//! per channel, at most `code_max_attempts` wrong tries, single use, resend cooldown and an
//! hourly send limit. Stored as a keyed hash bound to the user, the channel and (for SMS) the
//! phone number it was sent to, so a code sent to an old number never confirms a new one.

use std::fmt;
use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::auth::factors::state::{CodeHash, CodeState, IssuedCode, UserFactors};
use crate::auth::factors::{FactorError, Factors};
use crate::auth::user::Username;
use crate::clock::Timestamp;
use crate::store::{Store, StoreError};

const HOUR: Duration = Duration::from_secs(3600);
/// Digits in a code.
pub const CODE_DIGITS: usize = 6;

/// Where a code is sent and what it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Login (or settings re-verification) by e-mail.
    Email,
    /// Login by SMS to the verified phone.
    Sms,
    /// Proof of owning a newly entered phone number.
    PhoneConfirm,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::PhoneConfirm => "phone_confirm",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        [Channel::Email, Channel::Sms, Channel::PhoneConfirm]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// A code to deliver. Treat it as a secret: `Debug` is redacted and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimeCode(String);

impl OneTimeCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OneTimeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Drops sends that left the rolling hour.
pub(super) fn prune_sends(s: &mut CodeState, now: Timestamp) {
    let window_start = now.minus(HOUR);
    s.sends.retain(|t| *t > window_start);
}

/// What a phone code on `channel` is bound to besides the user: the phone number.
fn phone_destination(f: &UserFactors, channel: Channel) -> Result<String, FactorError> {
    match channel {
        Channel::Email => Err(FactorError::MethodUnavailable),
        Channel::Sms => match &f.phone {
            Some(p) if p.verified => Ok(p.number.clone()),
            _ => Err(FactorError::MethodUnavailable),
        },
        // The number waiting beside a verified one, else the phone set.
        Channel::PhoneConfirm => match (&f.pending_phone, &f.phone) {
            (Some(pending), _) => Ok(pending.clone()),
            (None, Some(p)) => Ok(p.number.clone()),
            (None, None) => Err(FactorError::NoPendingEnrolment),
        },
    }
}

/// `s` without its newest code, and without that code's send: the code is void, and the
/// cooldown it started is lifted.
pub(crate) fn withdrawn(mut s: CodeState) -> CodeState {
    if let Some(current) = s.current.take()
        && let Some(pos) = s.sends.iter().rposition(|t| *t == current.issued_at)
    {
        s.sends.remove(pos);
    }
    s
}

impl Factors {
    /// What a code on `channel` is bound to besides the user: the account's e-mail address as
    /// stored, or the phone number. A code sent to an address or a number the account no
    /// longer has proves nothing, and no longer matches.
    fn destination(&self, username: &Username, channel: Channel) -> Result<String, FactorError> {
        match channel {
            Channel::Email => self
                .store
                .get_user(username)?
                .and_then(|u| u.email)
                .ok_or(FactorError::MethodUnavailable),
            Channel::Sms | Channel::PhoneConfirm => {
                phone_destination(&self.store.get_factors(username)?, channel)
            }
        }
    }

    fn code_hash(
        &self,
        username: &Username,
        channel: Channel,
        destination: &str,
        code: &str,
    ) -> Result<CodeHash, FactorError> {
        self.secret_box
            .keyed_hash(&[
                b"one-time code",
                channel.as_str().as_bytes(),
                username.as_str().as_bytes(),
                destination.as_bytes(),
                code.as_bytes(),
            ])
            .map(CodeHash)
    }

    /// A new code for `channel`, replacing any earlier one. Refused with
    /// [`FactorError::Cooldown`] within `code_cooldown` of the last send, and with
    /// [`FactorError::HourlyLimit`] after `code_max_per_hour` sends in the last hour. SMS needs
    /// a verified phone ([`FactorError::MethodUnavailable`]); phone confirmation needs a phone
    /// set with [`Factors::set_phone`] ([`FactorError::NoPendingEnrolment`]); e-mail, an
    /// address on the account ([`FactorError::MethodUnavailable`]). The code is bound to that
    /// address or number: [`Factors::issue_code_to`] says which, and a code checked after the
    /// account's address or number changed does not match.
    #[cfg(test)]
    pub(crate) fn issue_code(
        &self,
        username: &Username,
        channel: Channel,
    ) -> Result<OneTimeCode, FactorError> {
        self.issue_code_to(username, channel).map(|(code, _)| code)
    }

    /// Issues a code as [`Factors::issue_code`] does, and returns it with the address or number
    /// it is bound to: the one to send it to, and no other (an address read earlier may have
    /// changed since).
    pub fn issue_code_to(
        &self,
        username: &Username,
        channel: Channel,
    ) -> Result<(OneTimeCode, String), FactorError> {
        let now = self.clock.now();
        let dest = self.destination(username, channel)?;
        let code = OneTimeCode(format!(
            "{:0width$}",
            rand::random_range(0..10u32.pow(CODE_DIGITS as u32)),
            width = CODE_DIGITS
        ));
        let issued = IssuedCode {
            hash: self.code_hash(username, channel, &dest, code.as_str())?,
            issued_at: now,
            expires_at: now.plus(self.settings.code_ttl),
            failed_attempts: 0,
        };
        let max_per_hour = self.settings.code_max_per_hour as usize;
        let cooldown = self.settings.code_cooldown;
        self.store.update_code_state(username, channel, |mut s| {
            prune_sends(&mut s, now);
            let cooldown_left = s
                .sends
                .last()
                .map(|last| last.plus(cooldown).since(now))
                .filter(|left| !left.is_zero());
            if s.sends.len() >= max_per_hour {
                // The send that has to leave the window before another is allowed.
                let oldest = s.sends[s.sends.len() - max_per_hour];
                let hourly_left = oldest.plus(HOUR).since(now);
                return Err(FactorError::HourlyLimit {
                    retry_after: hourly_left.max(cooldown_left.unwrap_or_default()),
                });
            }
            if let Some(retry_after) = cooldown_left {
                return Err(FactorError::Cooldown { retry_after });
            }
            s.sends.push(now);
            s.current = Some(issued.clone());
            Ok((s, ()))
        })?;
        Ok((code, dest))
    }

    /// Checks a code sent on `channel`. Right: the code is used up (atomically; flushed).
    /// Wrong: [`FactorError::InvalidCode`], and the `code_max_attempts`-th wrong try voids
    /// the code ([`FactorError::TooManyAttempts`], then [`FactorError::NoCode`]). Past its
    /// lifetime: [`FactorError::Expired`].
    pub fn verify_code(
        &self,
        username: &Username,
        channel: Channel,
        code: &str,
    ) -> Result<(), FactorError> {
        let dest = self.destination(username, channel)?;
        self.verify_code_for(username, channel, &dest, code)
    }

    /// Takes back the newest code of `channel` and its send, when it could not be delivered:
    /// the user may ask again at once, and the undelivered code is void.
    pub fn withdraw_code(&self, username: &Username, channel: Channel) -> Result<(), FactorError> {
        self.store.update_code_state(username, channel, |s| {
            Ok::<_, FactorError>((withdrawn(s), ()))
        })
    }

    /// The confirmed phone number SMS codes go to, if any. (Senders use the number
    /// [`Factors::issue_code_to`] returns.)
    #[cfg(test)]
    pub(crate) fn verified_phone(
        &self,
        username: &Username,
    ) -> Result<Option<String>, FactorError> {
        let f = self.store.get_factors(username)?;
        Ok(f.phone.filter(|p| p.verified).map(|p| p.number))
    }

    pub(super) fn verify_code_for(
        &self,
        username: &Username,
        channel: Channel,
        destination: &str,
        code: &str,
    ) -> Result<(), FactorError> {
        let now = self.clock.now();
        let typed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        let hash = self.code_hash(username, channel, destination, &typed)?;
        let max_attempts = self.settings.code_max_attempts;
        self.store.update_code_state(username, channel, |mut s| {
            let Some(current) = s.current.as_mut() else {
                return Err(FactorError::NoCode);
            };
            if now >= current.expires_at {
                return Err(FactorError::Expired);
            }
            if bool::from(current.hash.0.ct_eq(&hash.0)) {
                s.current = None;
                return Ok((s, Ok(())));
            }
            current.failed_attempts = current.failed_attempts.saturating_add(1);
            if current.failed_attempts >= max_attempts {
                s.current = None;
                Ok((s, Err(FactorError::TooManyAttempts)))
            } else {
                Ok((s, Err(FactorError::InvalidCode)))
            }
        })?
    }
}

/// The channels on which `username` has a code record, for wiping them. A record this version
/// cannot read (an unknown channel, a damaged record) is deleted on the way: no login can use
/// it, and leaving it would make every reset or disabling of the account's factors fail.
pub(crate) fn channels_to_clear(
    store: &Store,
    username: &Username,
) -> Result<Vec<Channel>, StoreError> {
    let codes = store.code_channels_of_user(username)?;
    for key in &codes.unreadable {
        tracing::warn!(
            user = %username,
            record = %crate::store::key_for_log(key),
            "unreadable code record deleted"
        );
        store.remove_code_record(key)?;
    }
    Ok(codes.readable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        for c in [Channel::Email, Channel::Sms, Channel::PhoneConfirm] {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert_eq!(Channel::parse("Email"), None);
    }

    #[test]
    fn withdrawn_code_is_void_and_lifts_the_cooldown() {
        let fx = super::super::tests::fixture();
        let alice = fx.alice.username.clone();
        let code = fx.factors.issue_code(&alice, Channel::Email).unwrap();
        assert!(matches!(
            fx.factors.issue_code(&alice, Channel::Email),
            Err(FactorError::Cooldown { .. })
        ));
        fx.factors.withdraw_code(&alice, Channel::Email).unwrap();
        assert!(matches!(
            fx.factors
                .verify_code(&alice, Channel::Email, code.as_str()),
            Err(FactorError::NoCode)
        ));
        assert!(fx.factors.issue_code(&alice, Channel::Email).is_ok());
    }

    #[test]
    fn code_debug_is_redacted() {
        let c = OneTimeCode("123456".into());
        assert_eq!(format!("{c:?}"), "[redacted]");
        assert_eq!(c.as_str(), "123456");
    }
}
