//! Backup codes: single-use fallbacks for a lost authenticator.
//!
//! A code is 10 characters of Crockford's base32 alphabet (digits and lower-case letters
//! without `i`, `l`, `o`, `u`): 50 bits, shown as `xxxxx-xxxxx`. Input is forgiving: case,
//! spaces and dashes are ignored, and the look-alikes `o`, `i`, `l` read as `0`, `1`, `1`.
//! Only keyed hashes (bound to the user) are stored.

use subtle::ConstantTimeEq;

use crate::auth::factors::state::CodeHash;
use crate::auth::factors::{FactorError, Factors};
use crate::auth::user::Username;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Characters per code.
pub const CODE_LEN: usize = 10;

/// A fresh random code, grouped for reading: `xxxxx-xxxxx`.
fn generate() -> String {
    let mut out = String::with_capacity(CODE_LEN + 1);
    for i in 0..CODE_LEN {
        if i == CODE_LEN / 2 {
            out.push('-');
        }
        out.push(char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]));
    }
    out
}

/// The canonical form of a typed code, or `None` if it cannot be one.
fn normalise(input: &str) -> Option<String> {
    let mut out = String::with_capacity(CODE_LEN);
    for c in input.chars() {
        if c.is_whitespace() || c == '-' {
            continue;
        }
        if !c.is_ascii() {
            return None;
        }
        let c = match c.to_ascii_lowercase() {
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        };
        if !ALPHABET.contains(&(c as u8)) {
            return None;
        }
        out.push(c);
    }
    (out.len() == CODE_LEN).then_some(out)
}

impl Factors {
    fn backup_hash(&self, username: &Username, normalised: &str) -> Result<CodeHash, FactorError> {
        self.secret_box
            .keyed_hash(&[
                b"backup code",
                username.as_str().as_bytes(),
                normalised.as_bytes(),
            ])
            .map(CodeHash)
    }

    /// A new set of `backup_codes` codes and their hashes.
    pub(super) fn new_backup_set(
        &self,
        username: &Username,
    ) -> Result<(Vec<String>, Vec<CodeHash>), FactorError> {
        let mut codes = Vec::with_capacity(self.settings.backup_codes);
        let mut hashes: Vec<CodeHash> = Vec::with_capacity(self.settings.backup_codes);
        while codes.len() < self.settings.backup_codes {
            let code = generate();
            let hash = self.backup_hash(username, &code.replace('-', ""))?;
            // Two equal codes in one set would make one use void both; 2^-50, but cheap.
            if !hashes.contains(&hash) {
                codes.push(code);
                hashes.push(hash);
            }
        }
        Ok((codes, hashes))
    }

    /// Uses a backup code: it is removed atomically (of two concurrent uses exactly one
    /// succeeds) and the removal is on disk before the number of codes left is returned.
    /// Backup codes work only while TOTP is enrolled.
    pub fn verify_backup(&self, username: &Username, code: &str) -> Result<usize, FactorError> {
        let Some(normalised) = normalise(code) else {
            return Err(FactorError::InvalidCode);
        };
        let hash = self.backup_hash(username, &normalised)?;
        self.store.update_factors(username, |mut f| {
            if f.totp.is_none() {
                return Err(FactorError::NotEnrolled);
            }
            // Compare against every stored hash, without stopping at a match.
            let mut found = None;
            for (i, stored) in f.backup_codes.iter().enumerate() {
                if bool::from(stored.0.ct_eq(&hash.0)) {
                    found = Some(i);
                }
            }
            let i = found.ok_or(FactorError::InvalidCode)?;
            f.backup_codes.remove(i);
            let left = f.backup_codes.len();
            Ok((f, left))
        })
    }

    /// Replaces the user's backup codes with a new set (the old ones stop working) and returns
    /// it, the only time it is seen in the clear. Needs TOTP enrolled.
    pub fn regenerate_backup(&self, username: &Username) -> Result<Vec<String>, FactorError> {
        let (codes, hashes) = self.new_backup_set(username)?;
        self.store.update_factors(username, |mut f| {
            if f.totp.is_none() {
                return Err(FactorError::NotEnrolled);
            }
            f.backup_codes = hashes.clone();
            Ok((f, ()))
        })?;
        Ok(codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_have_the_documented_shape() {
        for _ in 0..100 {
            let c = generate();
            assert_eq!(c.len(), CODE_LEN + 1);
            assert_eq!(&c[5..6], "-");
            assert!(
                c.replace('-', "").bytes().all(|b| ALPHABET.contains(&b)),
                "{c}"
            );
            assert_eq!(normalise(&c).unwrap(), c.replace('-', ""));
        }
        // 32 symbols: 5 bits per character, 50 bits per code.
        assert_eq!(ALPHABET.len(), 32);
        let mut sorted = ALPHABET.to_vec();
        sorted.dedup();
        assert_eq!(sorted.len(), 32);
    }

    #[test]
    fn input_normalisation() {
        assert_eq!(normalise("ABCDE-FGHJK").unwrap(), "abcdefghjk");
        assert_eq!(normalise(" abc de fgh jk ").unwrap(), "abcdefghjk");
        assert_eq!(normalise("o0iL1-22222").unwrap(), "0011122222");
        assert_eq!(normalise("abcde-fghj"), None);
        assert_eq!(normalise("abcde-fghjkm"), None);
        assert_eq!(normalise("abcde-fghju"), None);
        assert_eq!(normalise("abcde-fghj\u{212A}"), None);
        assert_eq!(normalise(""), None);
    }
}
