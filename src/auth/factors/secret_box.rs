//! Second-factor secrets at rest: XChaCha20-Poly1305 with a 256-bit key kept in its own file
//! (`storage.key_file`), outside the store directory, so a copy of the store alone reveals no
//! TOTP secret and lets nobody check a guessed one-time or backup code offline.
//!
//! The file holds 32 random bytes. Two keys are derived from it with HMAC-SHA256 used as a PRF
//! under fixed labels: one for sealing (AEAD) and one for keyed hashes of codes
//! ([`SecretBox::keyed_hash`]), so no key serves two primitives.
//!
//! A sealed value is `nonce (24 random bytes) || ciphertext || tag`. The associated data binds
//! it to its owner and purpose (`totp:alice`): a sealed secret copied into another user's record
//! does not open.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::auth::factors::FactorError;

/// Bytes in the key file.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

const SEAL_LABEL: &[u8] = b"stepgate secret-box v1: seal";
const MAC_LABEL: &[u8] = b"stepgate secret-box v1: keyed hash";

/// What [`SecretBox::check_key_file`] found at the key file's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFileState {
    /// No file yet: `serve` creates one.
    Missing,
    /// A usable key that only its owner can read.
    Private,
    /// A usable key that group or others may read or write too (`mode`: its permission bits).
    OpenToOthers { mode: u32 },
}

/// The warning for a key file that group or others may read or write.
pub const LOOSE_KEY_FILE: &str = "the key file for second-factor secrets is open to group or others (read or write); chmod 600 it";

/// The permission bits of a file that group or others may read or write, if it is one.
fn loose_mode(meta: &std::fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        (mode & 0o066 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Encrypts and authenticates secrets at rest; computes keyed hashes of codes.
/// `Debug` never shows a key.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    mac_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox([redacted])")
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], FactorError> {
    // HMAC accepts keys of any length; the error branch exists only in the type.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .map_err(|_| FactorError::Crypto("cannot key HMAC-SHA256".into()))?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().into())
}

impl SecretBox {
    /// A box over `key` (the content of a key file).
    pub fn from_key(key: &[u8; KEY_LEN]) -> Result<SecretBox, FactorError> {
        let seal_key = Zeroizing::new(hmac_sha256(key, &[SEAL_LABEL])?);
        let mac_key = Zeroizing::new(hmac_sha256(key, &[MAC_LABEL])?);
        Ok(SecretBox {
            cipher: XChaCha20Poly1305::new(&Key::from(*seal_key)),
            mac_key,
        })
    }

    /// Reads the key at `path`, or creates it (32 bytes from the operating system's CSPRNG,
    /// file mode 0600, never overwriting) when there is none. A file of the wrong length is
    /// refused; a file open to group or others is used with a warning.
    pub fn load_or_create(path: &Path) -> Result<SecretBox, FactorError> {
        let key_error = |reason: String| FactorError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        match Self::read_key(path) {
            Ok((key, _)) => return Self::from_key(&key),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(key_error(e.to_string())),
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::fill(&mut key[..]);
        match Self::create_key_file(path, &key) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "created a new key for second-factor secrets");
                Self::from_key(&key)
            }
            // Another process created it meanwhile: use theirs.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let (key, _) = Self::read_key(path).map_err(|e| key_error(e.to_string()))?;
                Self::from_key(&key)
            }
            Err(e) => Err(key_error(format!("cannot create the key file: {e}"))),
        }
    }

    /// Checks the key at `path` as [`SecretBox::load_or_create`] would read it, creating
    /// nothing; an error when `serve` would refuse it.
    pub fn check_key_file(path: &Path) -> Result<KeyFileState, FactorError> {
        match Self::read_key(path) {
            Ok((_, Some(mode))) => Ok(KeyFileState::OpenToOthers { mode }),
            Ok((_, None)) => Ok(KeyFileState::Private),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(KeyFileState::Missing),
            Err(e) => Err(FactorError::KeyFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }

    /// The key at `path`, and the file's permission bits if group or others may read or write
    /// it (warned about here).
    fn read_key(path: &Path) -> std::io::Result<(Zeroizing<[u8; KEY_LEN]>, Option<u32>)> {
        let mut file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        let loose = loose_mode(&meta);
        if let Some(mode) = loose {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "{LOOSE_KEY_FILE}"
            );
        }
        let mut buf = Zeroizing::new(Vec::with_capacity(KEY_LEN + 1));
        // Read one byte more than needed so an overlong file is noticed.
        (&mut file).take(KEY_LEN as u64 + 1).read_to_end(&mut buf)?;
        if buf.len() != KEY_LEN {
            return Err(std::io::Error::other(format!(
                "the key file must hold exactly {KEY_LEN} bytes, found {}{}",
                if buf.len() > KEY_LEN {
                    "more than "
                } else {
                    ""
                },
                buf.len().min(KEY_LEN)
            )));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&buf);
        Ok((key, loose))
    }

    fn create_key_file(path: &Path, key: &[u8; KEY_LEN]) -> std::io::Result<()> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path)?;
        file.write_all(key)?;
        file.sync_all()?;
        Ok(())
    }

    /// Encrypts `plaintext` bound to `aad`; the result starts with its random nonce.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, FactorError> {
        let mut nonce_bytes = [0u8; NONCE_LEN];
        rand::fill(&mut nonce_bytes[..]);
        let nonce = XNonce::from(nonce_bytes);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| FactorError::Crypto("cannot seal a secret".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts what [`SecretBox::seal`] produced with the same `aad`. A wrong key, a wrong
    /// `aad` or any altered byte is an error.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, FactorError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(FactorError::Crypto("sealed secret is too short".into()));
        }
        let (nonce_bytes, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce_bytes)
            .map_err(|_| FactorError::Crypto("sealed secret is too short".into()))?;
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                FactorError::Crypto(
                    "cannot open a sealed secret (wrong key file, or the record was altered)"
                        .into(),
                )
            })
    }

    /// HMAC-SHA256 under the derived hashing key over `parts`, each length-prefixed so that
    /// no two different part lists hash the same input.
    pub fn keyed_hash(&self, parts: &[&[u8]]) -> Result<[u8; 32], FactorError> {
        let mut framed: Vec<Vec<u8>> = Vec::with_capacity(parts.len());
        for part in parts {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            let mut f = Vec::with_capacity(4 + part.len());
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(part);
            framed.push(f);
        }
        let refs: Vec<&[u8]> = framed.iter().map(Vec::as_slice).collect();
        hmac_sha256(&self.mac_key[..], &refs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip() {
        let b = SecretBox::from_key(&[7u8; KEY_LEN]).unwrap();
        let sealed = b.seal(b"top secret", b"totp:alice").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 10 + TAG_LEN);
        assert_eq!(&b.open(&sealed, b"totp:alice").unwrap()[..], b"top secret");
        // Fresh nonce every time.
        assert_ne!(sealed, b.seal(b"top secret", b"totp:alice").unwrap());
    }

    #[test]
    fn rejects_a_secret_swapped_between_users() {
        let b = SecretBox::from_key(&[7u8; KEY_LEN]).unwrap();
        let sealed = b.seal(b"alice's secret", b"totp:alice").unwrap();
        assert!(matches!(
            b.open(&sealed, b"totp:mallory"),
            Err(FactorError::Crypto(_))
        ));
    }

    #[test]
    fn rejects_tampered_or_truncated_ciphertext() {
        let b = SecretBox::from_key(&[7u8; KEY_LEN]).unwrap();
        let sealed = b.seal(b"secret", b"aad").unwrap();
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(b.open(&t, b"aad").is_err(), "byte {i}");
        }
        assert!(b.open(&sealed[..NONCE_LEN + TAG_LEN - 1], b"aad").is_err());
        assert!(b.open(&[], b"aad").is_err());
    }

    #[test]
    fn another_key_cannot_open() {
        let a = SecretBox::from_key(&[1u8; KEY_LEN]).unwrap();
        let b = SecretBox::from_key(&[2u8; KEY_LEN]).unwrap();
        let sealed = a.seal(b"secret", b"aad").unwrap();
        assert!(b.open(&sealed, b"aad").is_err());
        assert_ne!(
            a.keyed_hash(&[b"x"]).unwrap(),
            b.keyed_hash(&[b"x"]).unwrap()
        );
    }

    #[test]
    fn keyed_hash_frames_its_parts() {
        let b = SecretBox::from_key(&[1u8; KEY_LEN]).unwrap();
        let h = |parts: &[&[u8]]| b.keyed_hash(parts).unwrap();
        assert_eq!(h(&[b"ab", b"c"]), h(&[b"ab", b"c"]));
        assert_ne!(h(&[b"ab", b"c"]), h(&[b"a", b"bc"]));
        assert_ne!(h(&[b"abc"]), h(&[b"ab", b"c"]));
    }

    #[test]
    fn creates_a_private_key_file_once_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.key");
        let first = SecretBox::load_or_create(&path).unwrap();
        let key = std::fs::read(&path).unwrap();
        assert_eq!(key.len(), KEY_LEN);
        assert_ne!(key, [0u8; KEY_LEN]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{mode:o}");
        }
        let sealed = first.seal(b"secret", b"aad").unwrap();
        let second = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), key, "key file rewritten");
        assert_eq!(&second.open(&sealed, b"aad").unwrap()[..], b"secret");
    }

    #[test]
    fn checking_a_key_file_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        assert_eq!(
            SecretBox::check_key_file(&path).unwrap(),
            KeyFileState::Missing
        );
        assert!(!path.exists());
        SecretBox::load_or_create(&path).unwrap();
        assert_eq!(
            SecretBox::check_key_file(&path).unwrap(),
            KeyFileState::Private
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            assert_eq!(
                SecretBox::check_key_file(&path).unwrap(),
                KeyFileState::OpenToOthers { mode: 0o640 }
            );
        }
        std::fs::write(&path, [1u8; 16]).unwrap();
        assert!(SecretBox::check_key_file(&path).is_err());
    }

    #[test]
    fn refuses_a_key_file_of_the_wrong_length() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 16, 31, 33, 64] {
            let path = dir.path().join(format!("k{len}"));
            std::fs::write(&path, vec![1u8; len]).unwrap();
            match SecretBox::load_or_create(&path) {
                Err(FactorError::KeyFile { path: p, reason }) => {
                    assert_eq!(p, path);
                    assert!(reason.contains("exactly 32 bytes"), "{reason}");
                }
                other => panic!("{len}: unexpected {other:?}"),
            }
            // Never replaced by a fresh key.
            assert_eq!(std::fs::read(&path).unwrap().len(), len);
        }
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let b = SecretBox::from_key(&[0xabu8; KEY_LEN]).unwrap();
        let shown = format!("{b:?}");
        assert_eq!(shown, "SecretBox([redacted])");
    }
}
