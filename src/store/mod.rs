//! Persistent state in one embedded sled database, behind narrow typed methods.
//!
//! Layout (one sled tree each):
//! - `meta`: the schema version (`schema_version`, big-endian u32).
//! - `users`: canonical username -> [`records::UserRecord`].
//! - `sessions`: SHA-256 of the session id (32 bytes) -> [`records::SessionRecord`]. The store
//!   never sees a session id itself.
//! - `sessions_by_user`: index `username \0 session-key` -> empty, kept in the same transaction
//!   as `sessions`, so revoking every session of a user does not scan all sessions.
//! - `bans`: regulation subject (`user:alice`, `net:192.0.2.7/32`) -> [`records::BanRecord`].
//! - `audit`: monotonic id (big-endian u64) -> [`records::AuditRecord`].
//! - `factors`: canonical username -> [`records::FactorRecord`] (TOTP secret sealed with the
//!   key file, pending enrolment, backup code hashes, phone, preferences).
//! - `factor_codes`: `username \0 channel` -> [`records::CodeRecord`] (keyed hash of the newest
//!   e-mailed/texted code, recent sends).
//!
//! Values are versioned JSON records (`{"V1": {...}}`), never the domain types themselves, so
//! the domain can change without silently reinterpreting old data. A record that does not
//! decode is reported as [`StoreError::Corrupt`], never a panic, and the error never echoes the
//! stored bytes (a garbled user record may hold a password hash).
//!
//! Durability: writes that matter for security (users, bans, second factors) are flushed before
//! the method returns. Session writes are *not* flushed by the store itself: the session manager applies
//! them under its cache lock and calls [`Store::flush`] after releasing it, so lookups are not
//! held up by disk syncs. Audit appends and `last_seen` refreshes ride on sled's periodic flush.
//!
//! Every method is a blocking call (disk I/O); async callers with strict latency needs can wrap
//! them in `spawn_blocking`.

mod audit;
mod bans;
mod factors;
mod records;
mod sessions;
mod users;

use std::fmt;
use std::path::{Path, PathBuf};

use sled::transaction::TransactionError;

use crate::auth::user::Username;

/// The on-disk schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

const SCHEMA_KEY: &[u8] = b"schema_version";
const KEY_CHECK_KEY: &[u8] = b"key_check";

/// Everything that can go wrong talking to the store.
/// How long [`Store::open`] waits for another handle to release the store's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How often it tries again meanwhile.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// Whether sled refused to open because another handle holds the store's lock (sled 0.34
/// reports it only as an I/O error with this text).
pub fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("could not acquire lock"))
}

/// What a scan of a whole tree found: the records it could read, and the keys of those it could
/// not (damaged, or written by another version), which housekeeping reports and removes
/// instead of stopping at the first one.
#[derive(Debug)]
pub struct Scan<T> {
    pub readable: Vec<T>,
    pub unreadable: Vec<sled::IVec>,
}

impl<T> Default for Scan<T> {
    fn default() -> Self {
        Scan {
            readable: Vec::new(),
            unreadable: Vec::new(),
        }
    }
}

/// Does a store live at `path`? sled keeps a `conf` and a `db` file in its directory; an empty or
/// unrelated directory is not a store.
pub fn exists_at(path: &std::path::Path) -> bool {
    path.join("conf").is_file() && path.join("db").is_file()
}

/// A key as a log can show it: hexadecimal, at most its first 8 bytes (a session key is a
/// digest, a ban subject a name or network; neither is a secret).
pub fn key_for_log(key: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for b in key.iter().take(8) {
        let _ = write!(out, "{b:02x}");
    }
    if key.len() > 8 {
        out.push_str("...");
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(
        "the store at {} was written by a newer Stepgate (schema {found}, this build supports {supported}); upgrade Stepgate",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("store I/O failed: {0}")]
    Io(#[from] sled::Error),
    #[error("unreadable {what} record in the store: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error("user {0} already exists")]
    UserExists(Username),
    #[error("no user named {0}")]
    NoSuchUser(Username),
}

impl StoreError {
    pub(crate) fn corrupt(what: &'static str, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            what,
            reason: reason.into(),
        }
    }
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Io(e),
        }
    }
}

/// The open database. Share it as `Arc<Store>`; sled handles concurrent access.
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    users: sled::Tree,
    sessions: sled::Tree,
    sessions_by_user: sled::Tree,
    bans: sled::Tree,
    audit: sled::Tree,
    factors: sled::Tree,
    factor_codes: sled::Tree,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the database directory at `path`.
    ///
    /// A new database gets the current schema version written; one written by a newer build is
    /// refused with [`StoreError::NewerSchema`] rather than read with the wrong meaning.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        // sled releases its file lock from a background thread some time after the last handle
        // is dropped (up to its flush interval): a store closed and reopened in one process
        // (tests, the CLI after a stopped gateway) waits for that instead of failing at once.
        let give_up = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new().path(path).open() {
                Ok(db) => break db,
                Err(e) if is_lock_held(&e) && std::time::Instant::now() < give_up => {
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(source) => {
                    return Err(StoreError::Open {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
        };
        Self::from_db(db, path.to_path_buf())
    }

    fn from_db(db: sled::Db, path: PathBuf) -> Result<Store, StoreError> {
        let meta = db.open_tree("meta")?;
        match meta.get(SCHEMA_KEY)? {
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            Some(raw) => {
                let bytes: [u8; 4] = raw.as_ref().try_into().map_err(|_| {
                    StoreError::corrupt("schema version", "not a 4-byte big-endian integer")
                })?;
                let found = u32::from_be_bytes(bytes);
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        path,
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                // found < SCHEMA_VERSION would run migrations here; version 1 is the first.
            }
        }
        Ok(Store {
            users: db.open_tree("users")?,
            sessions: db.open_tree("sessions")?,
            sessions_by_user: db.open_tree("sessions_by_user")?,
            bans: db.open_tree("bans")?,
            audit: db.open_tree("audit")?,
            factors: db.open_tree("factors")?,
            factor_codes: db.open_tree("factor_codes")?,
            db,
            path,
        })
    }

    /// The directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let meta = self.db.open_tree("meta")?;
        let raw = meta
            .get(SCHEMA_KEY)?
            .ok_or_else(|| StoreError::corrupt("schema version", "missing"))?;
        let bytes: [u8; 4] = raw
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::corrupt("schema version", "not a 4-byte integer"))?;
        Ok(u32::from_be_bytes(bytes))
    }

    /// A value sealed with the key of the second-factor secrets, kept to tell at start-up
    /// whether the key file is the one this store's secrets were sealed with (`None`: none
    /// recorded yet).
    pub fn key_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let meta = self.db.open_tree("meta")?;
        Ok(meta.get(KEY_CHECK_KEY)?.map(|raw| raw.to_vec()))
    }

    /// Forgets the key check, as in a store from before it was kept.
    #[cfg(test)]
    pub(crate) fn forget_key_check_for_test(&self) {
        self.db
            .open_tree("meta")
            .unwrap()
            .remove(KEY_CHECK_KEY)
            .unwrap();
    }

    /// Records the value [`Store::key_check`] returns.
    pub fn set_key_check(&self, sealed: &[u8]) -> Result<(), StoreError> {
        let meta = self.db.open_tree("meta")?;
        meta.insert(KEY_CHECK_KEY, sealed)?;
        self.flush()
    }

    /// Writes everything buffered to disk. Called on shutdown and after security-relevant writes.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_store_records_the_current_schema() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        drop(store);
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn refuses_a_store_written_by_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let meta = db.open_tree("meta").unwrap();
            meta.insert(SCHEMA_KEY, &3u32.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        match &err {
            StoreError::NewerSchema {
                found, supported, ..
            } => {
                assert_eq!(*found, 3);
                assert_eq!(*supported, SCHEMA_VERSION);
            }
            other => panic!("unexpected error {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("written by a newer Stepgate (schema 3, this build supports 1)"),
            "{msg}"
        );
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.ends_with("upgrade Stepgate"), "{msg}");
    }

    #[test]
    fn garbled_schema_version_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let meta = db.open_tree("meta").unwrap();
            meta.insert(SCHEMA_KEY, b"x".as_slice()).unwrap();
            db.flush().unwrap();
        }
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_store_can_be_reopened_as_soon_as_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("round {round}: {e}"));
            // A write leaves sled's background flusher with work, and a handle, after the drop.
            store.db.insert(b"reopen-test", &[round][..]).unwrap();
            drop(store);
        }
    }

    #[test]
    fn opening_waits_for_another_handle_to_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let path = dir.path().to_path_buf();
        let start = std::sync::Arc::new(std::sync::Barrier::new(2));
        let opener = {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                Store::open(&path)
            })
        };
        // The first handle goes away while the second open is under way.
        start.wait();
        drop(first);
        let second = opener.join().unwrap();
        assert!(second.is_ok(), "{:?}", second.err());
    }

    #[test]
    fn a_locked_store_reports_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        // sled takes an exclusive file lock; a second open in the same process fails.
        match Store::open(dir.path()) {
            Err(StoreError::Open { path, .. }) => assert_eq!(path, dir.path()),
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(_) => panic!("second open of a locked store succeeded"),
        }
    }
}
