//! TOTP (RFC 6238): enrolment, confirmation and verification with replay protection.
//!
//! Code generation is totp-rs' (`Totp::generate`); this module adds what the crate leaves to
//! its caller: choosing the accepted window, refusing a time step that was already used (per
//! user, atomically, on disk before success), and sealing the secret at rest.

use std::time::Duration;

use qrcode::QrCode;
use qrcode::render::svg;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Totp};
use zeroize::Zeroizing;

use crate::auth::factors::settings::TotpAlgorithm;
use crate::auth::factors::state::{PendingTotp, Sealed, TotpFactor, TotpParams};
use crate::auth::factors::{FactorError, Factors, TotpEnrolment};
use crate::auth::user::{User, Username};
use crate::clock::Timestamp;

/// Bytes of a new secret: 160 bits, as RFC 4226 section 4 recommends.
pub const SECRET_BYTES: usize = 20;

/// How long a shown secret waits for its first code.
pub const ENROLMENT_TTL: Duration = Duration::from_secs(15 * 60);

fn algorithm(a: TotpAlgorithm) -> Algorithm {
    match a {
        TotpAlgorithm::Sha1 => Algorithm::SHA1,
        TotpAlgorithm::Sha256 => Algorithm::SHA256,
        TotpAlgorithm::Sha512 => Algorithm::SHA512,
    }
}

/// A totp-rs generator for `secret` with `params`; `label` (issuer, account) is needed only
/// for the otpauth URI.
pub fn generator(
    secret: &[u8],
    params: TotpParams,
    label: Option<(&str, &str)>,
) -> Result<Totp, FactorError> {
    let mut builder = Builder::new()
        .with_algorithm(algorithm(params.algorithm))
        .with_digits(params.digits)
        .with_step_duration(params.period)
        .with_secret(secret.to_vec());
    if let Some((issuer, account)) = label {
        builder = builder.with_issuer(Some(issuer)).with_account_name(account);
    }
    builder
        .build()
        .map_err(|e| FactorError::Crypto(format!("invalid TOTP parameters: {e}")))
}

/// The code as typed, without the spaces apps and people put in the middle.
fn normalise(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Every time step in `now_step - skew ..= now_step + skew` whose code equals `code`, in
/// ascending order. Each comparison is constant-time and every step is compared.
pub fn matching_steps(totp: &Totp, code: &str, now_secs: u64, skew: u8) -> Vec<u64> {
    let code = normalise(code);
    if code.len() != usize::from(totp.digits()) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Vec::new();
    }
    let period = totp.step();
    let now_step = now_secs / period;
    let skew = u64::from(skew);
    (now_step.saturating_sub(skew)..=now_step.saturating_add(skew))
        .filter(|step| {
            let expected = totp.generate(step.saturating_mul(period)).to_string();
            bool::from(expected.as_bytes().ct_eq(code.as_bytes()))
        })
        .collect()
}

/// Seconds since the epoch, or `None` before it (no code is valid then).
fn unix_secs(t: Timestamp) -> Option<u64> {
    u64::try_from(t.as_secs()).ok()
}

/// An SVG QR code of `data`.
fn qr_svg(data: &str) -> Result<String, FactorError> {
    let code = QrCode::new(data.as_bytes())
        .map_err(|e| FactorError::Crypto(format!("cannot draw the QR code: {e}")))?;
    Ok(code
        .render::<svg::Color>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build())
}

impl Factors {
    fn current_params(&self) -> TotpParams {
        TotpParams {
            algorithm: self.settings.totp_algorithm,
            digits: self.settings.totp_digits,
            period: self.settings.totp_period.as_secs().max(1),
        }
    }

    /// Starts TOTP enrolment: a new random secret is stored (sealed) as pending, replacing any
    /// earlier pending one, for [`ENROLMENT_TTL`]. Show the result once; it is not kept in the
    /// clear anywhere.
    pub fn begin_totp(&self, user: &User) -> Result<TotpEnrolment, FactorError> {
        let now = self.clock.now();
        let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
        rand::fill(&mut secret[..]);
        let params = self.current_params();
        let enrolment = self.enrolment(user, &secret[..], params)?;
        let sealed = Sealed(
            self.secret_box
                .seal(&secret[..], &Self::totp_aad(&user.username))?,
        );
        let pending = PendingTotp {
            secret: sealed,
            params,
            expires_at: now.plus(ENROLMENT_TTL),
            attempts: 0,
        };
        self.store.update_factors(&user.username, |mut f| {
            f.pending_totp = Some(pending.clone());
            Ok::<_, FactorError>((f, ()))
        })?;
        Ok(enrolment)
    }

    /// What the user is shown to add `secret` to an app: the secret in base32, the otpauth URI
    /// and its QR code.
    fn enrolment(
        &self,
        user: &User,
        secret: &[u8],
        params: TotpParams,
    ) -> Result<TotpEnrolment, FactorError> {
        let totp = generator(
            secret,
            params,
            Some((&self.settings.issuer, user.username.as_str())),
        )?;
        let otpauth_uri = totp
            .to_url()
            .map_err(|e| FactorError::Crypto(format!("cannot build the otpauth URI: {e}")))?;
        Ok(TotpEnrolment {
            secret_base32: totp.secret().to_base32(),
            qr_svg: qr_svg(&otpauth_uri)?,
            otpauth_uri,
        })
    }

    /// The digits of the set-up still waiting for its code (not expired, confirmations left),
    /// or `None` if there is none (start again with [`Self::begin_totp`]).
    pub fn pending_totp_digits(&self, user: &User) -> Result<Option<u8>, FactorError> {
        let factors = self.store.get_factors(&user.username)?;
        Ok(factors
            .pending_totp
            .filter(|p| {
                self.clock.now() < p.expires_at && p.attempts < self.settings.code_max_attempts
            })
            .map(|p| p.params.digits))
    }

    /// Confirms the pending secret with a code from the app: TOTP becomes active (created now,
    /// replacing any earlier secret), the code's time step counts as used, a new set of backup
    /// codes replaces any old one and is returned, the only time it is seen in the clear.
    /// Activating TOTP also resets the preferred method, so TOTP becomes the default.
    ///
    /// A pending secret takes at most `code_max_attempts` confirmations, then is void
    /// ([`FactorError::NoPendingEnrolment`]: the set-up starts again). Each confirmation is
    /// counted before its code is judged, so guesses sent at once cannot all get past the
    /// limit: without it, three valid codes in a million could be guessed against the secret
    /// while the owner enrols, by anyone holding a session of the account.
    pub fn confirm_totp(&self, user: &User, code: &str) -> Result<Vec<String>, FactorError> {
        let now = self.clock.now();
        let username = &user.username;
        let max_attempts = self.settings.code_max_attempts;
        let pending = self
            .store
            .update_factors(username, |mut f| {
                let Some(pending) = f.pending_totp.as_mut() else {
                    return Ok((f, None));
                };
                if pending.attempts >= max_attempts {
                    f.pending_totp = None;
                    return Ok((f, None));
                }
                pending.attempts += 1;
                let counted = pending.clone();
                Ok::<_, FactorError>((f, Some(counted)))
            })?
            .ok_or(FactorError::NoPendingEnrolment)?;
        if now >= pending.expires_at {
            return Err(FactorError::Expired);
        }
        let step = self.matching_step(username, &pending.secret, pending.params, code, now)?;
        let (plain_codes, hashes) = self.new_backup_set(username)?;
        self.store.update_factors(username, |mut f| {
            // A concurrent begin_totp replaced the secret this code was checked against.
            if f.pending_totp.as_ref().map(|p| &p.secret) != Some(&pending.secret) {
                return Err(FactorError::NoPendingEnrolment);
            }
            f.pending_totp = None;
            f.totp = Some(TotpFactor {
                secret: pending.secret.clone(),
                params: pending.params,
                created_at: now,
                last_used_step: Some(step),
            });
            f.backup_codes = hashes.clone();
            f.preferred = None;
            Ok((f, ()))
        })?;
        Ok(plain_codes)
    }

    /// Checks a code from the user's authenticator app. Codes of the current step and `skew`
    /// steps either side are accepted, each step at most once per user: a step at or before
    /// the last accepted one is [`FactorError::Replayed`]. The used step is on disk before
    /// `Ok` is returned.
    pub fn verify_totp(&self, username: &Username, code: &str) -> Result<(), FactorError> {
        let now = self.clock.now();
        let totp = self
            .store
            .get_factors(username)?
            .totp
            .ok_or(FactorError::NotEnrolled)?;
        let steps = self.matching_steps_of(username, &totp.secret, totp.params, code, now)?;
        if steps.is_empty() {
            return Err(FactorError::InvalidCode);
        }
        self.store.update_factors(username, |mut f| {
            let Some(t) = f.totp.as_mut() else {
                return Err(FactorError::NotEnrolled);
            };
            if t.secret != totp.secret {
                // Re-enrolled meanwhile: the code was for a secret that is gone.
                return Err(FactorError::InvalidCode);
            }
            let step = steps
                .iter()
                .copied()
                .find(|s| t.last_used_step.is_none_or(|last| *s > last))
                .ok_or(FactorError::Replayed)?;
            t.last_used_step = Some(step);
            Ok((f, ()))
        })
    }

    fn matching_steps_of(
        &self,
        username: &Username,
        sealed: &Sealed,
        params: TotpParams,
        code: &str,
        now: Timestamp,
    ) -> Result<Vec<u64>, FactorError> {
        let secret = self.secret_box.open(&sealed.0, &Self::totp_aad(username))?;
        let totp = generator(&secret, params, None)?;
        Ok(match unix_secs(now) {
            Some(secs) => matching_steps(&totp, code, secs, self.settings.totp_skew),
            None => Vec::new(),
        })
    }

    fn matching_step(
        &self,
        username: &Username,
        sealed: &Sealed,
        params: TotpParams,
        code: &str,
        now: Timestamp,
    ) -> Result<u64, FactorError> {
        self.matching_steps_of(username, sealed, params, code, now)?
            .last()
            .copied()
            .ok_or(FactorError::InvalidCode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_totp(seed: &[u8], algorithm: TotpAlgorithm, digits: u8, period: u64) -> Totp {
        generator(
            seed,
            TotpParams {
                algorithm,
                digits,
                period,
            },
            None,
        )
        .unwrap()
    }

    /// RFC 6238 Appendix B: seeds are the ASCII digits repeated to 20, 32 and 64 bytes.
    #[test]
    fn rfc6238_appendix_b_vectors() {
        let sha1 = b"12345678901234567890".as_slice();
        let sha256 = b"12345678901234567890123456789012".as_slice();
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234".as_slice();
        let table: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        let g1 = rfc_totp(sha1, TotpAlgorithm::Sha1, 8, 30);
        let g256 = rfc_totp(sha256, TotpAlgorithm::Sha256, 8, 30);
        let g512 = rfc_totp(sha512, TotpAlgorithm::Sha512, 8, 30);
        for (t, c1, c256, c512) in table {
            assert_eq!(g1.generate(t).to_string(), c1, "SHA1 at {t}");
            assert_eq!(g256.generate(t).to_string(), c256, "SHA256 at {t}");
            assert_eq!(g512.generate(t).to_string(), c512, "SHA512 at {t}");
            // The verification path accepts exactly the step of that time (no skew).
            assert_eq!(matching_steps(&g1, c1, t, 0), [t / 30], "SHA1 check at {t}");
            assert_eq!(matching_steps(&g256, c256, t, 0), [t / 30]);
            assert_eq!(matching_steps(&g512, c512, t, 0), [t / 30]);
        }
    }

    /// RFC 4226 Appendix D (HOTP, secret "12345678901234567890", counters 0 to 9).
    ///
    /// TOTP is HOTP with counter = floor(time / period), so a generator with a period of one
    /// second evaluated at time `c` is HOTP with counter `c`: the same code path TOTP
    /// verification uses, with no second HOTP implementation to trust.
    #[test]
    fn rfc4226_appendix_d_vectors() {
        let hotp = rfc_totp(b"12345678901234567890", TotpAlgorithm::Sha1, 6, 1);
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        // The intermediate HMAC-SHA1 values of the same appendix (Table 1).
        let hmacs = [
            "cc93cf18508d94934c64b65d8ba7667fb7cde4b0",
            "75a48a19d4cbe100644e8ac1397eea747a2d33ab",
            "0bacb7fa082fef30782211938bc1c5e70416ff44",
            "66c28227d03a2d5529262ff016a1e6ef76557ece",
            "a904c900a64b35909874b33e61c5938a8e15ed1c",
            "a37e783d7b7233c083d4f62926c7a25f238d0316",
            "bc9cd28561042c83f219324d3c607256c03272ae",
            "a4fb960c0bc06e1eabb804e5b397cdc4b45596fa",
            "1b3c89f65e6c9e883012052823443f048b4332db",
            "1637409809a679dc698207310c8c7fc07290d9e5",
        ];
        for (counter, mac) in hmacs.iter().enumerate() {
            assert_eq!(hex(hotp.sign(counter as u64).as_ref()), *mac, "{counter}");
        }
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(
                hotp.generate(counter as u64).to_string(),
                *code,
                "{counter}"
            );
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn window_spans_skew_steps_each_side() {
        let g = rfc_totp(b"12345678901234567890", TotpAlgorithm::Sha1, 6, 30);
        let now = 1_700_000_000u64;
        let step = now / 30;
        for offset in [-2i64, -1, 0, 1, 2] {
            let s = step.checked_add_signed(offset).unwrap();
            let code = g.generate(s * 30).to_string();
            let with_skew_1 = matching_steps(&g, &code, now, 1);
            if offset.abs() <= 1 {
                assert_eq!(with_skew_1, [s], "offset {offset}");
            } else {
                assert!(with_skew_1.is_empty(), "offset {offset}");
            }
            assert_eq!(matching_steps(&g, &code, now, 2), [s]);
        }
    }

    #[test]
    fn accepts_spaces_but_not_other_shapes() {
        let g = rfc_totp(b"12345678901234567890", TotpAlgorithm::Sha1, 6, 30);
        let code = g.generate(1_700_000_000).to_string();
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(matching_steps(&g, &spaced, 1_700_000_000, 0).len(), 1);
        for bad in [
            format!("+{}", &code[1..]),
            format!("{code}0"),
            code[..5].to_string(),
            String::new(),
            format!("{}\u{0663}", &code[..5]),
        ] {
            assert!(
                matching_steps(&g, &bad, 1_700_000_000, 0).is_empty(),
                "{bad:?}"
            );
        }
    }
}
