//! The phone number for SMS codes: entered, then confirmed with a code sent to it.

use crate::auth::factors::codes::Channel;
use crate::auth::factors::state::Phone;
use crate::auth::factors::{FactorError, Factors};
use crate::auth::user::Username;

/// E.164 form of `input`: `+` then 8 to 15 digits, the first not `0` (no country code starts
/// with 0). Spaces and dashes are ignored; anything else is refused.
pub fn normalise_phone(input: &str) -> Result<String, FactorError> {
    let compact: String = input
        .trim()
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .collect();
    let digits = compact.strip_prefix('+').ok_or(FactorError::InvalidPhone)?;
    if !(8..=15).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return Err(FactorError::InvalidPhone);
    }
    Ok(compact)
}

impl Factors {
    /// Stores `number` (normalised, returned) for confirmation. With no verified phone it is
    /// the user's phone, unverified, and SMS codes are unavailable until
    /// [`Factors::confirm_phone`] succeeds. Beside a verified phone it waits as
    /// `pending_phone`, and the verified one keeps receiving codes until then: a mistyped
    /// number or a failed send never takes SMS codes (perhaps the only second factor) away.
    pub fn set_phone(&self, username: &Username, number: &str) -> Result<String, FactorError> {
        let number = normalise_phone(number)?;
        self.store.update_factors(username, |mut f| {
            match &f.phone {
                Some(p) if p.verified && p.number == number => f.pending_phone = None,
                Some(p) if p.verified => f.pending_phone = Some(number.clone()),
                _ => {
                    f.phone = Some(Phone {
                        number: number.clone(),
                        verified: false,
                    });
                    f.pending_phone = None;
                }
            }
            Ok::<_, FactorError>((f, ()))
        })?;
        Ok(number)
    }

    /// Checks a [`Channel::PhoneConfirm`] code and makes the number it was sent to the user's
    /// verified phone (a waiting number replaces the verified one only now).
    pub fn confirm_phone(&self, username: &Username, code: &str) -> Result<(), FactorError> {
        let f = self.store.get_factors(username)?;
        let number = f
            .pending_phone
            .or(f.phone.map(|p| p.number))
            .ok_or(FactorError::NoPendingEnrolment)?;
        self.verify_code_for(username, Channel::PhoneConfirm, &number, code)?;
        self.store.update_factors(username, |mut f| {
            if f.pending_phone.as_ref() == Some(&number) {
                f.pending_phone = None;
                f.phone = Some(Phone {
                    number: number.clone(),
                    verified: true,
                });
                return Ok((f, ()));
            }
            match f.phone.as_mut() {
                // Changed meanwhile: the code proved a number that is no longer set.
                Some(p) if p.number == number && f.pending_phone.is_none() => p.verified = true,
                _ => return Err(FactorError::InvalidCode),
            }
            Ok((f, ()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_e164_with_spaces_and_dashes() {
        assert_eq!(
            normalise_phone("+49 151 1234-5678").unwrap(),
            "+4915112345678"
        );
        assert_eq!(normalise_phone(" +12025550123 ").unwrap(), "+12025550123");
        assert_eq!(normalise_phone("+12345678").unwrap(), "+12345678");
        assert_eq!(
            normalise_phone("+123456789012345").unwrap(),
            "+123456789012345"
        );
    }

    #[test]
    fn rejects_other_shapes() {
        for bad in [
            "",
            "+",
            "015112345678",
            "+1234567",
            "+1234567890123456",
            "+0151123456789",
            "+49(151)12345678",
            "+49.151.12345678",
            "++4915112345678",
            "+49151123456７8",
        ] {
            assert!(
                matches!(normalise_phone(bad), Err(FactorError::InvalidPhone)),
                "{bad:?}"
            );
        }
    }
}
