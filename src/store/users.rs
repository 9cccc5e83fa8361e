//! Accounts by canonical username. Every write is flushed before returning.
//!
//! Deleting or disabling a user here does not touch their sessions: pair it with
//! `SessionManager::revoke_user`, which also clears the in-memory session cache.

use crate::auth::user::{User, Username};
use crate::store::records::{UserRecord, decode, encode};
use crate::store::{Scan, Store, StoreError};

const WHAT: &str = "user";

impl Store {
    pub fn get_user(&self, username: &Username) -> Result<Option<User>, StoreError> {
        match self.users.get(username.as_str().as_bytes())? {
            None => Ok(None),
            Some(raw) => decode::<UserRecord>(WHAT, &raw)?.into_user().map(Some),
        }
    }

    /// Adds a new account; [`StoreError::UserExists`] if the name is taken.
    pub fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let value = encode(WHAT, &UserRecord::from_user(user))?;
        let swapped = self.users.compare_and_swap(
            user.username.as_str().as_bytes(),
            None as Option<&[u8]>,
            Some(value),
        )?;
        if swapped.is_err() {
            return Err(StoreError::UserExists(user.username.clone()));
        }
        self.flush()
    }

    /// Changes an existing account in one atomic step and returns it as written;
    /// [`StoreError::NoSuchUser`] if there is none.
    ///
    /// The change applies to the record as it is when written: two changes at once (a password
    /// change while an administrator disables the account) both land, neither is lost. `change`
    /// may run more than once, each time on the latest record.
    pub fn modify_user(
        &self,
        username: &Username,
        change: impl Fn(&mut User),
    ) -> Result<User, StoreError> {
        let changed = self.modify_user_if(username, |u| {
            change(u);
            true
        })?;
        Ok(changed.expect("the change always applies"))
    }

    /// Like [`Store::modify_user`], for a change that depends on the record: `change` returns
    /// false to leave the record as it is (judged on the latest record, as it is written), and
    /// then this returns `None`.
    pub fn modify_user_if(
        &self,
        username: &Username,
        change: impl Fn(&mut User) -> bool,
    ) -> Result<Option<User>, StoreError> {
        let key = username.as_str().as_bytes();
        loop {
            let Some(raw) = self.users.get(key)? else {
                return Err(StoreError::NoSuchUser(username.clone()));
            };
            let mut user = decode::<UserRecord>(WHAT, &raw)?.into_user()?;
            if !change(&mut user) {
                return Ok(None);
            }
            let value = encode(WHAT, &UserRecord::from_user(&user))?;
            if self
                .users
                .compare_and_swap(key, Some(raw), Some(value))?
                .is_ok()
            {
                self.flush()?;
                return Ok(Some(user));
            }
            // Changed (or deleted) meanwhile: read it again.
        }
    }

    /// Removes an account; returns whether it existed.
    pub fn delete_user(&self, username: &Username) -> Result<bool, StoreError> {
        let existed = self.users.remove(username.as_str().as_bytes())?.is_some();
        self.flush()?;
        Ok(existed)
    }

    #[cfg(test)]
    pub(crate) fn put_raw_user_for_test(&self, key: &[u8], raw: &[u8]) {
        self.users.insert(key, raw).unwrap();
    }

    /// All accounts, ordered by username, and the keys (the names) of the records this version
    /// cannot read: one damaged record does not hide every other account.
    pub fn list_users(&self) -> Result<Scan<User>, StoreError> {
        let mut scan = Scan::default();
        for entry in self.users.iter() {
            let (key, raw) = entry?;
            match decode::<UserRecord>(WHAT, &raw).and_then(UserRecord::into_user) {
                Ok(user) => scan.readable.push(user),
                Err(_) => scan.unreadable.push(key),
            }
        }
        Ok(scan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::password::PasswordHash;
    use crate::clock::Timestamp;

    fn user(name: &str) -> User {
        User {
            username: Username::parse(name).unwrap(),
            display_name: name.to_uppercase(),
            email: Some(format!("{name}@example.com")),
            groups: vec!["staff".into()],
            disabled: false,
            password_hash: PasswordHash::new_unchecked(format!("$argon2id$v=19$hash-of-{name}")),
            created_at: Timestamp(1_000),
        }
    }

    #[test]
    fn create_get_update_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut alice = user("alice");
        store.create_user(&alice).unwrap();
        assert_eq!(
            store.get_user(&alice.username).unwrap(),
            Some(alice.clone())
        );

        alice.disabled = true;
        alice.groups.push("admins".into());
        let written = store
            .modify_user(&alice.username, |u| {
                u.disabled = true;
                u.groups.push("admins".into());
            })
            .unwrap();
        assert_eq!(written, alice);
        assert_eq!(
            store.get_user(&alice.username).unwrap(),
            Some(alice.clone())
        );

        assert!(store.delete_user(&alice.username).unwrap());
        assert_eq!(store.get_user(&alice.username).unwrap(), None);
        assert!(!store.delete_user(&alice.username).unwrap());
    }

    #[test]
    fn create_refuses_to_overwrite_an_account_in_any_case_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let original = user("alice");
        store.create_user(&original).unwrap();
        let mut impostor = user("ALICE");
        impostor.password_hash = PasswordHash::new_unchecked("$argon2id$attacker".into());
        assert!(matches!(
            store.create_user(&impostor),
            Err(StoreError::UserExists(_))
        ));
        assert_eq!(
            store
                .get_user(&original.username)
                .unwrap()
                .unwrap()
                .password_hash,
            original.password_hash
        );
    }

    #[test]
    fn update_of_a_missing_user_is_an_error_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ghost = user("ghost");
        assert!(matches!(
            store.modify_user(&ghost.username, |u| u.disabled = true),
            Err(StoreError::NoSuchUser(_))
        ));
        assert_eq!(store.get_user(&ghost.username).unwrap(), None);
    }

    #[test]
    fn changes_made_at_once_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
        let alice = user("alice");
        store.create_user(&alice).unwrap();
        // Each thread adds its own group, many times over: a read-change-write that is not
        // atomic loses some of them.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (store, name) = (store.clone(), alice.username.clone());
                std::thread::spawn(move || {
                    for i in 0..50 {
                        store
                            .modify_user(&name, |u| u.groups.push(format!("g{t}-{i}")))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let groups = store.get_user(&alice.username).unwrap().unwrap().groups;
        assert_eq!(groups.len(), 1 + 4 * 50, "a change was lost");
    }

    #[test]
    fn list_is_ordered_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            for name in ["carol", "alice", "bob"] {
                store.create_user(&user(name)).unwrap();
            }
        }
        let store = Store::open(dir.path()).unwrap();
        let names: Vec<String> = store
            .list_users()
            .unwrap()
            .readable
            .into_iter()
            .map(|u| u.username.to_string())
            .collect();
        assert_eq!(names, ["alice", "bob", "carol"]);
    }

    #[test]
    fn garbled_user_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .users
            .insert(b"mallory", b"\xff\xfe".as_slice())
            .unwrap();
        let mallory = Username::parse("mallory").unwrap();
        assert!(matches!(
            store.get_user(&mallory),
            Err(StoreError::Corrupt { what: "user", .. })
        ));
        store.create_user(&user("alice")).unwrap();
        let listed = store.list_users().unwrap();
        let names: Vec<&str> = listed
            .readable
            .iter()
            .map(|u| u.username.as_str())
            .collect();
        assert_eq!(names, ["alice"], "the readable accounts are listed");
        assert_eq!(listed.unreadable, [b"mallory".as_slice()]);
    }
}
