//! Sessions by [`SessionKey`], with the `sessions_by_user` index kept in the same transaction.
//!
//! These writes are not flushed here; see the module documentation of [`crate::store`].

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use crate::auth::session::{Session, SessionKey};
use crate::auth::user::Username;
use crate::store::records::{SessionRecord, decode, encode};
use crate::store::{Scan, Store, StoreError};

const WHAT: &str = "session";

/// `username \0 key`: usernames never contain `\0`, so a prefix scan on `username \0` finds
/// exactly that user's sessions.
fn index_key(username: &str, key: &SessionKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(username.len() + 1 + 32);
    k.extend_from_slice(username.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn user_prefix(username: &Username) -> Vec<u8> {
    let mut p = username.as_str().as_bytes().to_vec();
    p.push(0);
    p
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Removes a session and its index entry inside a transaction; returns whether it existed.
fn tx_delete(
    sessions: &TransactionalTree,
    index: &TransactionalTree,
    key: &SessionKey,
) -> TxResult<bool> {
    let Some(old) = sessions.remove(key.as_bytes().as_slice())? else {
        return Ok(false);
    };
    // If the old record is unreadable its index entry cannot be found; a stale index entry is
    // harmless (it points at nothing) and is dropped by the next revoke of that user.
    if let Ok(record) = decode::<SessionRecord>(WHAT, &old) {
        index.remove(index_key(record.username(), key))?;
    }
    Ok(true)
}

fn tx_put(
    sessions: &TransactionalTree,
    index: &TransactionalTree,
    session: &Session,
    value: &[u8],
) -> TxResult<()> {
    let key = &session.key;
    if let Some(old) = sessions.insert(key.as_bytes().as_slice(), value)?
        && let Ok(record) = decode::<SessionRecord>(WHAT, &old)
        && record.username() != session.username.as_str()
    {
        index.remove(index_key(record.username(), key))?;
    }
    index.insert(index_key(session.username.as_str(), key), &[] as &[u8])?;
    Ok(())
}

impl Store {
    /// Inserts or replaces a session.
    pub fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        let value = encode(WHAT, &SessionRecord::from_session(session))?;
        (&self.sessions, &self.sessions_by_user)
            .transaction(|(sessions, index)| tx_put(sessions, index, session, &value))?;
        Ok(())
    }

    /// The session stored under `key`, if any (expiry is the caller's business).
    pub fn get_session(&self, key: &SessionKey) -> Result<Option<Session>, StoreError> {
        match self.sessions.get(key.as_bytes())? {
            None => Ok(None),
            Some(raw) => decode::<SessionRecord>(WHAT, &raw)?
                .into_session(*key)
                .map(Some),
        }
    }

    /// Deletes a session; returns whether it existed.
    pub fn delete_session(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let existed = (&self.sessions, &self.sessions_by_user)
            .transaction(|(sessions, index)| tx_delete(sessions, index, key))?;
        Ok(existed)
    }

    /// Atomically deletes `old` and stores `new` (a session moving to a fresh id): there is no
    /// moment, even across a crash, where both ids are valid or neither is.
    pub fn replace_session(&self, old: &SessionKey, new: &Session) -> Result<bool, StoreError> {
        let value = encode(WHAT, &SessionRecord::from_session(new))?;
        let existed =
            (&self.sessions, &self.sessions_by_user).transaction(|(sessions, index)| {
                let existed = tx_delete(sessions, index, old)?;
                tx_put(sessions, index, new, &value)?;
                Ok(existed)
            })?;
        Ok(existed)
    }

    /// The index entries of `username`'s sessions: (index key, session key).
    fn index_of_user(
        &self,
        username: &Username,
    ) -> Result<Vec<(sled::IVec, SessionKey)>, StoreError> {
        let prefix = user_prefix(username);
        let mut keys = Vec::new();
        for entry in self.sessions_by_user.scan_prefix(&prefix) {
            let (index_key, _) = entry?;
            let bytes: [u8; 32] = index_key[prefix.len()..]
                .try_into()
                .map_err(|_| StoreError::corrupt("session index", "key of the wrong length"))?;
            keys.push((index_key, SessionKey::from_bytes(bytes)));
        }
        Ok(keys)
    }

    /// Every stored session of `username`, found through the `sessions_by_user` index: the
    /// cost follows the user's sessions, not the store's. An unreadable record is an error.
    pub fn sessions_of_user(&self, username: &Username) -> Result<Vec<Session>, StoreError> {
        let mut out = Vec::new();
        for (_, key) in self.index_of_user(username)? {
            // An index entry whose session is gone (removed between the two reads) is skipped.
            if let Some(session) = self.get_session(&key)? {
                out.push(session);
            }
        }
        Ok(out)
    }

    /// Deletes every session of `username` using the `sessions_by_user` index; returns how
    /// many sessions were deleted.
    pub fn delete_sessions_of_user(&self, username: &Username) -> Result<usize, StoreError> {
        Ok(self.delete_sessions_of_user_except(username, None)?.len())
    }

    /// Like [`Store::delete_sessions_of_user`], sparing `keep`; returns the keys deleted.
    pub fn delete_sessions_of_user_except(
        &self,
        username: &Username,
        keep: Option<&SessionKey>,
    ) -> Result<Vec<SessionKey>, StoreError> {
        let mut keys = self.index_of_user(username)?;
        keys.retain(|(_, key)| Some(key) != keep);
        let deleted =
            (&self.sessions, &self.sessions_by_user).transaction(|(sessions, index)| {
                let mut deleted = Vec::new();
                for (index_key, key) in &keys {
                    if sessions.remove(key.as_bytes().as_slice())?.is_some() {
                        deleted.push(*key);
                    }
                    index.remove(index_key.clone())?;
                }
                Ok(deleted)
            })?;
        Ok(deleted)
    }

    /// Every stored session (for purging expired ones), and the keys of records that cannot be
    /// read.
    pub fn list_sessions(&self) -> Result<Scan<Session>, StoreError> {
        let mut scan = Scan::default();
        for entry in self.sessions.iter() {
            let (k, v) = entry?;
            let read = <[u8; 32]>::try_from(k.as_ref()).ok().and_then(|bytes| {
                decode::<SessionRecord>(WHAT, &v)
                    .and_then(|r| r.into_session(SessionKey::from_bytes(bytes)))
                    .ok()
            });
            match read {
                Some(session) => scan.readable.push(session),
                None => scan.unreadable.push(k),
            }
        }
        Ok(scan)
    }

    /// Removes the session record stored under `raw_key`, readable or not (housekeeping of
    /// damaged records). Returns whether there was one.
    pub fn delete_raw_session(&self, raw_key: &[u8]) -> Result<bool, StoreError> {
        match <[u8; 32]>::try_from(raw_key) {
            Ok(bytes) => self.delete_session(&SessionKey::from_bytes(bytes)),
            Err(_) => Ok(self.sessions.remove(raw_key)?.is_some()),
        }
    }
}

#[cfg(test)]
impl Store {
    pub(crate) fn put_session_raw_for_test(&self, key: &SessionKey, raw: &[u8]) {
        self.sessions.insert(key.as_bytes(), raw).unwrap();
    }

    pub(crate) fn sessions_raw_insert_for_test(&self, key: &[u8], raw: &[u8]) {
        self.sessions.insert(key, raw).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::session::{AuthLevel, SessionId};
    use crate::clock::Timestamp;

    fn session(user: &str) -> Session {
        Session {
            key: SessionId::generate().key(),
            username: Username::parse(user).unwrap(),
            created_at: Timestamp(1),
            last_seen: Timestamp(2),
            expires_at: Timestamp(3),
            remember_me: false,
            auth_level: AuthLevel::OneFactor,
            second_factor_at: None,
            challenge_started_at: Some(Timestamp(1)),
            challenge_failures: 2,
            reauth_at: Some(Timestamp(3)),
        }
    }

    #[test]
    fn put_get_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = session("alice");
        store.put_session(&s).unwrap();
        assert_eq!(store.get_session(&s.key).unwrap(), Some(s.clone()));
        assert!(store.delete_session(&s.key).unwrap());
        assert_eq!(store.get_session(&s.key).unwrap(), None);
        assert!(!store.delete_session(&s.key).unwrap());
        assert_eq!(store.sessions_by_user.len(), 0);
    }

    #[test]
    fn deleting_a_users_sessions_leaves_other_users_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a1 = session("alice");
        let a2 = session("alice");
        // A name that is a prefix of another must not be caught by the prefix scan.
        let al = session("al");
        let b = session("alice.b");
        for s in [&a1, &a2, &al, &b] {
            store.put_session(s).unwrap();
        }
        let alice = Username::parse("alice").unwrap();
        assert_eq!(store.delete_sessions_of_user(&alice).unwrap(), 2);
        assert_eq!(store.get_session(&a1.key).unwrap(), None);
        assert_eq!(store.get_session(&a2.key).unwrap(), None);
        assert!(store.get_session(&al.key).unwrap().is_some());
        assert!(store.get_session(&b.key).unwrap().is_some());
        assert_eq!(store.delete_sessions_of_user(&alice).unwrap(), 0);
    }

    #[test]
    fn a_users_sessions_are_found_through_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut alice: Vec<Session> = (0..3).map(|_| session("alice")).collect();
        for s in &alice {
            store.put_session(s).unwrap();
        }
        store.put_session(&session("bob")).unwrap();
        store.put_session(&session("alicea")).unwrap();
        let mut found = store
            .sessions_of_user(&Username::parse("alice").unwrap())
            .unwrap();
        found.sort_by_key(|s| s.key);
        alice.sort_by_key(|s| s.key);
        assert_eq!(
            found.iter().map(|s| s.key).collect::<Vec<_>>(),
            alice.iter().map(|s| s.key).collect::<Vec<_>>()
        );
        store.delete_session(&alice[0].key).unwrap();
        assert_eq!(
            store
                .sessions_of_user(&Username::parse("alice").unwrap())
                .unwrap()
                .len(),
            2
        );
        assert!(
            store
                .sessions_of_user(&Username::parse("carol").unwrap())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn replace_moves_a_session_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = session("alice");
        store.put_session(&old).unwrap();
        let mut new = old.clone();
        new.key = SessionId::generate().key();
        assert!(store.replace_session(&old.key, &new).unwrap());
        assert_eq!(store.get_session(&old.key).unwrap(), None);
        assert_eq!(store.get_session(&new.key).unwrap(), Some(new.clone()));
        // The index follows: revoking alice finds the new key, not the old one.
        let alice = Username::parse("alice").unwrap();
        assert_eq!(store.delete_sessions_of_user(&alice).unwrap(), 1);
    }

    #[test]
    fn garbled_session_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = session("alice");
        store
            .sessions
            .insert(s.key.as_bytes(), b"{\"V1\":{".as_slice())
            .unwrap();
        assert!(matches!(
            store.get_session(&s.key),
            Err(StoreError::Corrupt { .. })
        ));
        let scan = store.list_sessions().unwrap();
        assert!(scan.readable.is_empty());
        assert_eq!(scan.unreadable, [s.key.as_bytes().as_slice()]);
        // It can still be deleted.
        assert!(store.delete_session(&s.key).unwrap());
    }
}
