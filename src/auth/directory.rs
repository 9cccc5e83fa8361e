//! The user directory: reads users through an in-memory view (no disk read per request in steady
//! state) and performs every change to an account, so that the view, the sessions and the audit
//! trail always follow. The CLI (directly or through the running gateway) uses the same methods.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use crate::auth::audit::{self, AuditEvent, AuditKind};
use crate::auth::factors::codes::{self, Channel, withdrawn};
use crate::auth::factors::{
    FactorError, FactorSummary, MfaSettings, TwoFactorState, summary_from_store,
};
use crate::auth::password::PasswordHash;
use crate::auth::session::{AuthLevel, Session, SessionId, SessionKey, SessionManager};
use crate::auth::user::{User, Username};
use crate::clock::SharedClock;
use crate::store::{Store, StoreError};

/// Fields of a new account (the password is hashed by the caller).
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: Username,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub password_hash: PasswordHash,
}

/// What an administrator changes of an account (`stepgate user edit`); `None` leaves a field
/// as it is. The fields are checked by the caller (as for [`NewUser`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountEdit {
    /// `Some(None)`: the display name becomes the username again.
    pub display_name: Option<Option<String>>,
    /// `Some(None)`: the account has no address any more.
    pub email: Option<Option<String>>,
    /// `Some(vec![])`: no groups.
    pub groups: Option<Vec<String>>,
}

impl AccountEdit {
    pub fn is_empty(&self) -> bool {
        self.display_name.is_none() && self.email.is_none() && self.groups.is_none()
    }
}

/// What became of a password change asked for from one of the account's own sessions.
#[derive(Debug)]
pub enum PasswordChange {
    /// Changed; the session that asked moved to this fresh id.
    Changed(SessionId, Session),
    /// Changed, but the session that asked had ended meanwhile.
    ChangedSessionEnded,
    /// Not changed: the account got another password, or was disabled, meanwhile.
    Refused,
}

pub struct UserDirectory {
    store: Arc<Store>,
    sessions: Arc<SessionManager>,
    clock: SharedClock,
    mfa: MfaSettings,
    cache: RwLock<UserCache>,
}

/// Known accounts (and known absences). `generation` moves on every change, so a read that raced
/// with a change never puts a stale account back into the view.
#[derive(Default)]
struct UserCache {
    generation: u64,
    map: HashMap<Username, Option<Arc<User>>>,
}

/// Most accounts a gateway protects fit many times over; past this the view is simply reset.
const CACHE_CAPACITY: usize = 100_000;

impl UserDirectory {
    pub fn new(
        store: Arc<Store>,
        sessions: Arc<SessionManager>,
        clock: SharedClock,
        mfa: MfaSettings,
    ) -> Self {
        UserDirectory {
            store,
            sessions,
            clock,
            mfa,
            cache: RwLock::new(UserCache::default()),
        }
    }

    /// The account, from memory when seen before.
    pub fn get(&self, username: &Username) -> Result<Option<Arc<User>>, StoreError> {
        let generation = match self.cache.read() {
            Ok(cache) => match cache.map.get(username) {
                Some(hit) => return Ok(hit.clone()),
                None => cache.generation,
            },
            Err(_) => u64::MAX,
        };
        let user = self.store.get_user(username)?.map(Arc::new);
        if let Ok(mut cache) = self.cache.write()
            && cache.generation == generation
        {
            if cache.map.len() >= CACHE_CAPACITY {
                cache.map.clear();
            }
            cache.map.insert(username.clone(), user.clone());
        }
        Ok(user)
    }

    fn forget(&self, username: &Username) {
        match self.cache.write() {
            Ok(mut cache) => {
                cache.generation += 1;
                cache.map.remove(username);
            }
            Err(poisoned) => {
                let mut cache = poisoned.into_inner();
                cache.generation += 1;
                cache.map.clear();
                self.cache.clear_poison();
            }
        }
    }

    /// Every account, and the names of the records that cannot be read (see
    /// [`Store::list_users`]).
    pub fn list(&self) -> Result<crate::store::Scan<User>, StoreError> {
        self.store.list_users()
    }

    fn audit(&self, kind: AuditKind, username: &Username, by: Option<IpAddr>) {
        let mut event = AuditEvent::new(self.clock.now(), kind).with_username(username.as_str());
        if let Some(ip) = by {
            event = event.with_client_ip(ip);
        }
        audit::record(&self.store, event);
    }

    /// Adds an account. Whatever an earlier account of the same name left behind (its deletion
    /// interrupted by a crash or a store error) is cleared first: a new account never inherits
    /// sessions, second factors or outstanding codes.
    pub fn create(&self, new: NewUser) -> Result<User, StoreError> {
        if self.store.get_user(&new.username)?.is_none() {
            self.clear_leftovers(&new.username)?;
        }
        let user = User {
            display_name: new
                .display_name
                .unwrap_or_else(|| new.username.as_str().to_string()),
            username: new.username,
            email: new.email,
            groups: new.groups,
            disabled: false,
            password_hash: new.password_hash,
            created_at: self.clock.now(),
        };
        // Forgotten by the view whatever happens: a write can land before its flush fails, and
        // the view may hold "no such account" from a look before.
        let created = self
            .store
            .create_user(&user)
            .and_then(|()| self.store.flush());
        self.forget(&user.username);
        created?;
        self.audit(AuditKind::UserCreated, &user.username, None);
        Ok(user)
    }

    /// Changes one thing of the account, atomically (see [`Store::modify_user`]): a change made
    /// at the same moment, from the settings page or another administrator, is never undone.
    /// The view forgets the account even when the store answers an error: the change may have
    /// been written before its flush failed.
    fn modify(&self, username: &Username, change: impl Fn(&mut User)) -> Result<User, StoreError> {
        let user = self.store.modify_user(username, change);
        self.forget(username);
        user
    }

    /// Replaces the password and ends every session of the account.
    /// The sessions end even when the store answers an error for the new password (it may be
    /// written all the same).
    pub fn set_password(&self, username: &Username, hash: PasswordHash) -> Result<(), StoreError> {
        let changed = self.modify(username, |u| u.password_hash = hash.clone());
        let ended = self.sessions.revoke_user(username);
        changed?;
        ended?;
        self.audit(AuditKind::PasswordChanged, username, None);
        Ok(())
    }

    /// Replaces the password from one of the account's own sessions (the settings page), if the
    /// account still has the password `checked` (the one the user just proved) and is enabled:
    /// a password set by an administrator (or a disabling) while the user's request was on its
    /// way is never undone. Then every other session ends, and `keep` moves to a fresh id with
    /// its level and its end unchanged (a password change proves no second factor, nor extends a
    /// session). If `keep` ended meanwhile (a logout, an administrator's reset), the password is
    /// changed all the same, and no session of the account is left.
    pub fn change_password(
        &self,
        username: &Username,
        checked: &PasswordHash,
        hash: PasswordHash,
        keep: &SessionKey,
    ) -> Result<PasswordChange, StoreError> {
        // The account first: a login whose password check passed before this sees the change
        // once its session exists, and ends it (see `open_session`).
        let changed = self.store.modify_user_if(username, |u| {
            let unchanged = !u.disabled && u.password_hash == *checked;
            if unchanged {
                u.password_hash = hash.clone();
            }
            unchanged
        })?;
        self.forget(username);
        if changed.is_none() {
            return Ok(PasswordChange::Refused);
        }
        self.sessions.revoke_user_except(username, keep)?;
        let kept = self.sessions.rotate(keep)?;
        self.audit(AuditKind::PasswordChanged, username, None);
        Ok(match kept {
            Some((id, session)) => PasswordChange::Changed(id, session),
            None => PasswordChange::ChangedSessionEnded,
        })
    }

    /// Replaces the stored hash `old` of `username` by `new`, a hash of the same password with
    /// the configured parameters (after a login proved it), unless the account changed
    /// meanwhile. Returns the account as it is now stored, or `None` if it changed (then
    /// nothing is written). Sessions are untouched: the password is the same.
    pub fn upgrade_password_hash(
        &self,
        username: &Username,
        old: &PasswordHash,
        new: PasswordHash,
    ) -> Result<Option<User>, StoreError> {
        let upgraded = self.store.modify_user_if(username, |u| {
            let unchanged = u.password_hash == *old;
            if unchanged {
                u.password_hash = new.clone();
            }
            unchanged
        })?;
        self.forget(username);
        Ok(upgraded)
    }

    /// Opens a session for `checked`, the account as it was when its password was verified,
    /// unless the account changed meanwhile: then `None`, and no session is left behind.
    ///
    /// A password check takes a while (argon2, and the wait for a free hashing thread); a
    /// password change, a disabling or a deletion may end every session of the account in
    /// between. The account is read again *after* the session exists: a change that came
    /// before that reading is seen here, and one that comes after it ends this session with the
    /// others (a change updates the account, then ends its sessions; a deletion is ordered the
    /// same way). Likewise a session opened with the password alone (`OneFactor`) is ended if
    /// the account has a second factor by then: one turned on meanwhile, whose change ended
    /// the account's other sessions before this one existed.
    pub fn open_session(
        &self,
        checked: &User,
        level: AuthLevel,
        remember_me: bool,
    ) -> Result<Option<(SessionId, Session)>, StoreError> {
        let (id, session) = self
            .sessions
            .create(&checked.username, level, remember_me)?;
        let admitted = match self.store.get_user(&checked.username)? {
            Some(now) if !now.disabled && now.password_hash == checked.password_hash => {
                // A session opened with the password alone while two-step verification was
                // being turned on would outlive the end of the others (see
                // [`UserDirectory::end_other_sessions_if_two_factor_on`]): ended too.
                level != AuthLevel::OneFactor || self.owes_no_second_factor(&now)?
            }
            _ => false,
        };
        if admitted {
            return Ok(Some((id, session)));
        }
        self.sessions.revoke(&id.key())?;
        Ok(None)
    }

    /// No second factor is usable at login for `user`.
    fn owes_no_second_factor(&self, user: &User) -> Result<bool, StoreError> {
        match self.two_factor(user) {
            Ok(summary) => Ok(summary.state == TwoFactorState::NotEnabled),
            Err(FactorError::Store(e)) => Err(e),
            Err(other) => Err(StoreError::corrupt("factors", other.to_string())),
        }
    }

    /// After a change to the second factors of `username` made from its session `keep`: if
    /// two-step verification was off before it (`before`) and is on now, every other session
    /// of the account ends, as with a password change ([`SessionManager::revoke_user_except`];
    /// `keep` goes on as it is). Users turn it on when they fear their password is known: a
    /// session opened with that password alone, perhaps by whoever knows it, must not outlive
    /// the change. A factor added beside another ends nothing: a login since two-step
    /// verification was on proved a factor or still owes one. Returns how many sessions ended.
    pub fn end_other_sessions_if_two_factor_on(
        &self,
        username: &Username,
        before: TwoFactorState,
        keep: &SessionKey,
    ) -> Result<usize, FactorError> {
        if before != TwoFactorState::NotEnabled {
            return Ok(0);
        }
        let Some(user) = self.store.get_user(username)? else {
            // Deleted meanwhile: its sessions ended with it.
            return Ok(0);
        };
        if self.two_factor(&user)?.state == TwoFactorState::NotEnabled {
            return Ok(0);
        }
        Ok(self.sessions.revoke_user_except(username, keep)?)
    }

    /// Changes the display name, e-mail address or groups of an account, atomically (a change
    /// made meanwhile elsewhere is kept), and returns the account as stored. Sessions go on: the
    /// next request of each sees the new values (identity headers, group rules); the account's
    /// open tunnels (WebSockets), judged and given identity headers when they opened, are
    /// closed. E-mailed codes are bound to the address (a code sent to the old one no longer
    /// matches); one still outstanding is withdrawn too, with its cooldown.
    pub fn edit(&self, username: &Username, edit: &AccountEdit) -> Result<User, StoreError> {
        // The version the written one replaced (the change may be tried more than once).
        let replaced = std::sync::Mutex::new(None);
        let user = self.modify(username, |u| {
            *replaced.lock().unwrap_or_else(|e| e.into_inner()) = Some(u.clone());
            if let Some(name) = &edit.display_name {
                u.display_name = name
                    .clone()
                    .unwrap_or_else(|| u.username.as_str().to_string());
            }
            if let Some(email) = &edit.email {
                u.email = email.clone();
            }
            if let Some(groups) = &edit.groups {
                u.groups = groups.clone();
            }
        });
        let before = replaced.into_inner().unwrap_or_else(|e| e.into_inner());
        let user = match user {
            Ok(user) => user,
            // The store may have written the new address before its error (a failed flush),
            // and a retry would find it already there: whether it turned two-step
            // verification on cannot be told, so the sessions end, as the edit would have
            // ended them if it did.
            Err(e) => {
                if edit.email.is_some() && before.is_some() {
                    let _ = self.sessions.revoke_user(username);
                }
                return Err(e);
            }
        };
        let event = AuditEvent::new(self.clock.now(), AuditKind::UserUpdated)
            .with_username(username.as_str())
            .with_detail(edit_detail(before.as_ref(), &user));
        audit::record(&self.store, event);
        self.sessions.end_tunnels_of_user(username);
        if edit.email.is_some() {
            // With `mfa.email_default`, an address turns two-step verification on: the
            // account's password-only sessions end, as when its owner turns it on. Judged on
            // the account as this edit found it (a retry after an error would find the new
            // address already there), before anything else can fail; when the factors cannot
            // be read, the sessions end all the same.
            let turned_on = before.as_ref().is_some_and(|before| {
                match (
                    self.owes_no_second_factor(before),
                    self.owes_no_second_factor(&user),
                ) {
                    (Ok(was_off), Ok(is_off)) => was_off && !is_off,
                    _ => true,
                }
            });
            let ended = if turned_on {
                self.sessions.revoke_user(username).map(|_| ())
            } else {
                Ok(())
            };
            let withdrawn = self.withdraw_email_code(username);
            ended?;
            withdrawn?;
        }
        Ok(user)
    }

    /// Disabling ends the account's sessions at once.
    /// Disabling ends them even when the store answers an error for the change (it may be
    /// written all the same).
    pub fn set_disabled(&self, username: &Username, disabled: bool) -> Result<(), StoreError> {
        let changed = self.modify(username, |u| u.disabled = disabled);
        if disabled {
            let ended = self.sessions.revoke_user(username);
            changed?;
            ended?;
            self.audit(AuditKind::UserDisabled, username, None);
        } else {
            changed?;
            self.audit(AuditKind::UserEnabled, username, None);
        }
        Ok(())
    }

    /// The account's second factors (state and methods), for administrators.
    pub fn two_factor(&self, user: &User) -> Result<FactorSummary, FactorError> {
        summary_from_store(&self.store, user, &self.mfa, self.clock.now())
    }

    /// Administrator reset: deletes every second factor of the account (secret, backup codes,
    /// phone, email setting) and the codes still outstanding, and ends the account's sessions:
    /// those the lost factor opened (on a lost phone, say) must not outlive it, even when
    /// deleting the factors fails (a store error): the sessions end first, and again
    /// after the factors, for a login that proved the lost factor meanwhile.
    pub fn reset_two_factor(&self, username: &Username) -> Result<(), StoreError> {
        if self.store.get_user(username)?.is_none() {
            return Err(StoreError::NoSuchUser(username.clone()));
        }
        self.sessions.revoke_user(username)?;
        let deleted = self
            .store
            .delete_factors(username)
            .and_then(|_| self.withdraw_codes(username));
        self.sessions.revoke_user(username)?;
        deleted?;
        self.store.flush()?;
        let event = AuditEvent::new(self.clock.now(), AuditKind::TwoFactorDisabled)
            .with_username(username.as_str())
            .with_detail("reset by an administrator");
        audit::record(&self.store, event);
        Ok(())
    }

    /// Deleting ends the account's sessions at once. The account goes first and its sessions
    /// after, so a login finishing meanwhile is refused or ended (see
    /// [`UserDirectory::open_session`]). The in-memory view forgets the account at once, so
    /// that even if clearing what it leaves behind fails, no request is let through on it (and
    /// [`UserDirectory::create`] clears it before the name is used again).
    ///
    /// Deleting a name with no account still clears what one of that name left behind: a
    /// deletion retried after an error (the account gone, its sessions not yet) finishes.
    pub fn delete(&self, username: &Username) -> Result<(), StoreError> {
        let existed = self.store.delete_user(username);
        self.forget(username);
        let existed = existed?;
        self.clear_leftovers(username)?;
        if !existed {
            return Err(StoreError::NoSuchUser(username.clone()));
        }
        self.audit(AuditKind::UserDeleted, username, None);
        Ok(())
    }

    /// Ends the sessions of `username` and deletes its second factors and outstanding codes.
    fn clear_leftovers(&self, username: &Username) -> Result<(), StoreError> {
        self.sessions.revoke_user(username)?;
        self.store.delete_factors(username)?;
        self.withdraw_codes(username)?;
        self.store.flush()
    }

    /// Withdraws the account's outstanding emailed code, with its cooldown (see [`withdrawn`]).
    /// Code records this version cannot read are deleted: no login can use them, and they
    /// must not stop the edit.
    fn withdraw_email_code(&self, username: &Username) -> Result<(), StoreError> {
        if codes::channels_to_clear(&self.store, username)?.contains(&Channel::Email) {
            self.store
                .update_code_state(username, Channel::Email, |state| {
                    Ok::<_, StoreError>((withdrawn(state), ()))
                })?;
        }
        Ok(())
    }

    /// Withdraws the emailed or texted codes of `username` that are still outstanding (and
    /// deletes the code records this version cannot read: [`codes::channels_to_clear`]).
    fn withdraw_codes(&self, username: &Username) -> Result<(), StoreError> {
        for channel in codes::channels_to_clear(&self.store, username)? {
            self.store
                .update_code_state(username, channel, |mut state| {
                    state.current = None;
                    Ok::<_, StoreError>((state, ()))
                })?;
        }
        Ok(())
    }
}

/// What an edit changed, for the audit trail: the fields, and the groups' old and new values
/// (an address is personal data, and is not repeated there).
fn edit_detail(before: Option<&User>, after: &User) -> String {
    let Some(before) = before else {
        return "edited".to_string();
    };
    let mut changed = Vec::new();
    if before.display_name != after.display_name {
        changed.push("display name".to_string());
    }
    if before.email != after.email {
        changed.push("email".to_string());
    }
    if before.groups != after.groups {
        let list = |g: &[String]| {
            if g.is_empty() {
                "-".to_string()
            } else {
                g.join(",")
            }
        };
        changed.push(format!(
            "groups {} -> {}",
            list(&before.groups),
            list(&after.groups)
        ));
    }
    if changed.is_empty() {
        "nothing changed".to_string()
    } else {
        format!("changed: {}", changed.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::session::SessionSettings;
    use crate::clock::{ManualClock, Timestamp};

    fn directory() -> (tempfile::TempDir, Arc<Store>, UserDirectory) {
        directory_with(MfaSettings::default())
    }

    fn directory_with(mfa: MfaSettings) -> (tempfile::TempDir, Arc<Store>, UserDirectory) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let clock: SharedClock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
        let sessions = Arc::new(SessionManager::new(
            store.clone(),
            clock.clone(),
            SessionSettings::default(),
        ));
        let users = UserDirectory::new(store.clone(), sessions, clock, mfa);
        (dir, store, users)
    }

    /// The password hash as stored (not through the directory's view).
    fn stored_hash(store: &Store, username: &Username) -> PasswordHash {
        store
            .get_user(username)
            .unwrap()
            .expect("the account")
            .password_hash
    }

    fn alice(users: &UserDirectory) -> User {
        users
            .create(NewUser {
                username: Username::parse("alice").unwrap(),
                display_name: None,
                email: None,
                groups: Vec::new(),
                password_hash: PasswordHash::new_unchecked("$argon2id$old".into()),
            })
            .unwrap()
    }

    #[test]
    fn a_new_account_inherits_nothing_from_an_interrupted_deletion() {
        let (_dir, store, users) = directory();
        let old = alice(&users);
        let (id, _) = users
            .open_session(&old, AuthLevel::OneFactor, false)
            .unwrap()
            .expect("opened");
        store
            .update_factors(&old.username, |mut f| {
                f.email_verification = Some(true);
                Ok::<_, StoreError>((f, ()))
            })
            .unwrap();
        // The process stopped right after the account record went.
        assert!(store.delete_user(&old.username).unwrap());

        let new = alice(&users);
        assert!(store.sessions_of_user(&new.username).unwrap().is_empty());
        assert!(users.sessions.lookup(&id.cookie_value()).unwrap().is_none());
        assert!(store.get_factors(&new.username).unwrap().is_empty());
    }

    #[test]
    fn a_password_change_keeps_only_its_own_session_and_never_revives_an_ended_one() {
        let (_dir, store, users) = directory();
        let alice = alice(&users);
        let open = || {
            let now = users.get(&alice.username).unwrap().expect("the account");
            users
                .open_session(&now, AuthLevel::TwoFactor, false)
                .unwrap()
                .expect("opened")
        };
        let (_, mine) = open();
        let (other_id, _) = open();
        let new_hash = || PasswordHash::new_unchecked("$argon2id$new".into());
        let PasswordChange::Changed(kept_id, kept) = users
            .change_password(&alice.username, &alice.password_hash, new_hash(), &mine.key)
            .unwrap()
        else {
            panic!("this session stays");
        };
        assert_ne!(kept.key, mine.key, "a fresh id");
        assert_eq!(
            (kept.created_at, kept.expires_at, kept.auth_level),
            (mine.created_at, mine.expires_at, AuthLevel::TwoFactor)
        );
        assert!(
            users
                .sessions
                .lookup(&other_id.cookie_value())
                .unwrap()
                .is_none()
        );
        assert_eq!(store.sessions_of_user(&alice.username).unwrap().len(), 1);

        // This browser's session ended while the new password was being hashed.
        let (_, other) = open();
        assert!(users.sessions.revoke(&kept.key).unwrap());
        let kept = users
            .change_password(&alice.username, &new_hash(), new_hash(), &kept.key)
            .unwrap();
        assert!(matches!(kept, PasswordChange::ChangedSessionEnded));
        assert!(
            users
                .sessions
                .lookup(&kept_id.cookie_value())
                .unwrap()
                .is_none()
        );
        assert!(store.sessions_of_user(&alice.username).unwrap().is_empty());
        assert!(users.sessions.update(&other.key, |_| {}).unwrap().is_none());
    }

    #[test]
    fn a_password_change_never_undoes_one_made_meanwhile() {
        let (_dir, store, users) = directory();
        let alice = alice(&users);
        let (_, mine) = users
            .open_session(&alice, AuthLevel::TwoFactor, false)
            .unwrap()
            .expect("opened");
        // The user proved `alice.password_hash`'s password; an administrator sets another one
        // before the user's change lands.
        let by_admin = PasswordHash::new_unchecked("$argon2id$admin".into());
        users
            .set_password(&alice.username, by_admin.clone())
            .unwrap();
        let mine_again = users
            .open_session(
                &users.get(&alice.username).unwrap().unwrap(),
                AuthLevel::TwoFactor,
                false,
            )
            .unwrap()
            .expect("opened")
            .1;
        let refused = users
            .change_password(
                &alice.username,
                &alice.password_hash,
                PasswordHash::new_unchecked("$argon2id$user".into()),
                &mine_again.key,
            )
            .unwrap();
        assert!(matches!(refused, PasswordChange::Refused), "{refused:?}");
        assert_eq!(stored_hash(&store, &alice.username), by_admin);
        assert_eq!(
            users.get(&alice.username).unwrap().unwrap().password_hash,
            by_admin
        );
        assert!(users.sessions.update(&mine.key, |_| {}).unwrap().is_none());

        // Nor a disabling.
        users.set_disabled(&alice.username, true).unwrap();
        let refused = users
            .change_password(
                &alice.username,
                &by_admin,
                PasswordHash::new_unchecked("$argon2id$user".into()),
                &mine_again.key,
            )
            .unwrap();
        assert!(matches!(refused, PasswordChange::Refused), "{refused:?}");
        assert_eq!(stored_hash(&store, &alice.username), by_admin);
    }

    #[test]
    fn a_rehash_replaces_only_the_hash_it_was_made_for() {
        let (_dir, store, users) = directory();
        let alice = alice(&users);
        let (id, _) = users
            .open_session(&alice, AuthLevel::OneFactor, false)
            .unwrap()
            .expect("opened");
        let rehashed = PasswordHash::new_unchecked("$argon2id$rehashed".into());
        let now = users
            .upgrade_password_hash(&alice.username, &alice.password_hash, rehashed.clone())
            .unwrap()
            .expect("upgraded");
        assert_eq!(now.password_hash, rehashed);
        assert_eq!(
            users.get(&alice.username).unwrap().unwrap().password_hash,
            rehashed
        );
        assert!(users.sessions.lookup(&id.cookie_value()).unwrap().is_some());
        // The password changed meanwhile: a rehash of the old one is not stored.
        let stale = users
            .upgrade_password_hash(
                &alice.username,
                &alice.password_hash,
                PasswordHash::new_unchecked("$argon2id$stale".into()),
            )
            .unwrap();
        assert!(stale.is_none());
        assert_eq!(stored_hash(&store, &alice.username), rehashed);
    }

    /// An outstanding code on `channel` for `username`, as a send leaves it.
    fn issue_code(store: &Store, username: &Username, channel: Channel) {
        use crate::auth::factors::state::{CodeHash, IssuedCode};
        store
            .update_code_state(username, channel, |mut state| {
                let issued_at = Timestamp(1_700_000_000_000);
                state.current = Some(IssuedCode {
                    hash: CodeHash([7; 32]),
                    issued_at,
                    expires_at: Timestamp(1_700_000_600_000),
                    failed_attempts: 0,
                });
                state.sends.push(issued_at);
                Ok::<_, StoreError>((state, ()))
            })
            .unwrap();
    }

    fn outstanding(store: &Store, username: &Username, channel: Channel) -> bool {
        store
            .get_code_state(username, channel)
            .unwrap()
            .current
            .is_some()
    }

    #[test]
    fn an_edit_changes_only_what_it_names_and_keeps_sessions_and_factors() {
        let (_dir, store, users) = directory();
        let alice = users
            .create(NewUser {
                username: Username::parse("alice").unwrap(),
                display_name: Some("Alice".into()),
                email: Some("alice@old.example".into()),
                groups: vec!["dev".into()],
                password_hash: PasswordHash::new_unchecked("$argon2id$old".into()),
            })
            .unwrap();
        let (id, session) = users
            .open_session(&alice, AuthLevel::TwoFactor, false)
            .unwrap()
            .expect("opened");
        // A tunnel open on the session.
        let tunnel = users.sessions.watch_end(&session);
        store
            .update_factors(&alice.username, |mut f| {
                f.email_verification = Some(true);
                Ok::<_, StoreError>((f, ()))
            })
            .unwrap();
        let seen = users.get(&alice.username).unwrap().expect("in the view");
        issue_code(&store, &alice.username, Channel::Email);
        issue_code(&store, &alice.username, Channel::Sms);

        // Groups only: the address stays, and so does the code sent to it.
        let edited = users
            .edit(
                &alice.username,
                &AccountEdit {
                    groups: Some(vec!["ops".into(), "admins".into()]),
                    ..AccountEdit::default()
                },
            )
            .unwrap();
        assert_eq!(edited.groups, ["ops", "admins"]);
        assert_eq!(edited.display_name, "Alice");
        assert_eq!(edited.email.as_deref(), Some("alice@old.example"));
        assert_eq!(edited.password_hash, alice.password_hash);
        assert!(outstanding(&store, &alice.username, Channel::Email));
        // The view follows at once (a new version of the account).
        let now = users.get(&alice.username).unwrap().expect("in the view");
        assert!(!Arc::ptr_eq(&seen, &now));
        assert_eq!(now.groups, ["ops", "admins"]);
        // The tunnel was judged with the old groups: closed. The session goes on.
        assert!(tunnel.has_ended());
        assert!(users.sessions.lookup(&id.cookie_value()).unwrap().is_some());

        // A new address: the code sent to the old one is withdrawn, the texted one is not.
        let edited = users
            .edit(
                &alice.username,
                &AccountEdit {
                    email: Some(Some("alice@new.example".into())),
                    display_name: Some(None),
                    ..AccountEdit::default()
                },
            )
            .unwrap();
        assert_eq!(edited.email.as_deref(), Some("alice@new.example"));
        assert_eq!(
            edited.display_name, "alice",
            "an empty name shows the username"
        );
        assert_eq!(edited.groups, ["ops", "admins"]);
        assert!(!outstanding(&store, &alice.username, Channel::Email));
        assert!(outstanding(&store, &alice.username, Channel::Sms));
        // The withdrawn code's send is gone too: no cooldown before a code to the new address.
        assert!(
            store
                .get_code_state(&alice.username, Channel::Email)
                .unwrap()
                .sends
                .is_empty()
        );

        // The session and the factors stayed; each edit was audited.
        assert!(users.sessions.lookup(&id.cookie_value()).unwrap().is_some());
        assert_eq!(
            store
                .get_factors(&alice.username)
                .unwrap()
                .email_verification,
            Some(true)
        );
        let updates: Vec<String> = store
            .recent_audit(10)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == AuditKind::UserUpdated)
            .filter_map(|e| e.detail)
            .collect();
        assert_eq!(updates.len(), 2, "{updates:?}");
        assert!(
            updates.contains(&"changed: groups dev -> ops,admins".to_string()),
            "{updates:?}"
        );
        assert!(
            updates.contains(&"changed: display name; email".to_string()),
            "{updates:?}"
        );

        // No address at all.
        let edited = users
            .edit(
                &alice.username,
                &AccountEdit {
                    email: Some(None),
                    ..AccountEdit::default()
                },
            )
            .unwrap();
        assert_eq!(edited.email, None);
    }

    /// A tunnel judged with the account as it was before an edit, and opened after the edit
    /// closed the account's tunnels, is closed at once.
    #[test]
    fn a_tunnel_judged_before_an_edit_does_not_outlive_it() {
        let (_dir, _store, users) = directory();
        let alice = alice(&users);
        let (_, session) = users
            .open_session(&alice, AuthLevel::TwoFactor, false)
            .unwrap()
            .expect("opened");
        let judged = users.get(&alice.username).unwrap().expect("in the view");
        let owner = crate::proxy::TunnelOwner {
            sessions: &users.sessions,
            session: &session,
            users: &users,
            user: &judged,
        };
        assert!(
            !owner.watch().has_ended(),
            "nothing changed: the tunnel stays"
        );
        users
            .edit(
                &alice.username,
                &AccountEdit {
                    groups: Some(vec!["admins".into()]),
                    ..AccountEdit::default()
                },
            )
            .unwrap();
        assert!(owner.watch().has_ended());
        let now = users.get(&alice.username).unwrap().expect("in the view");
        let owner = crate::proxy::TunnelOwner {
            user: &now,
            ..owner
        };
        assert!(!owner.watch().has_ended());
    }

    #[test]
    fn editing_an_unknown_account_changes_nothing() {
        let (_dir, store, users) = directory();
        let bob = Username::parse("bob").unwrap();
        let edit = AccountEdit {
            groups: Some(vec!["admins".into()]),
            ..AccountEdit::default()
        };
        assert!(matches!(
            users.edit(&bob, &edit),
            Err(StoreError::NoSuchUser(_))
        ));
        assert!(store.get_user(&bob).unwrap().is_none());
        assert!(users.get(&bob).unwrap().is_none());
    }

    #[test]
    fn a_reset_deletes_unreadable_code_records_and_ends_the_sessions() {
        let (_dir, store, users) = directory();
        let alice = alice(&users);
        let (id, _) = users
            .open_session(&alice, AuthLevel::TwoFactor, false)
            .unwrap()
            .expect("opened");
        // A code record under a channel this version does not know, and a damaged one: no
        // login can use them, and they must not stop the reset.
        store.put_raw_code_for_test(b"alice\0pigeon", b"{}");
        store.put_raw_code_for_test(b"alice\0email", b"{\"V1\":");
        users.reset_two_factor(&alice.username).unwrap();
        let left = store.code_channels_of_user(&alice.username).unwrap();
        assert!(left.readable.is_empty() && left.unreadable.is_empty());
        assert!(users.sessions.lookup(&id.cookie_value()).unwrap().is_none());
        assert!(store.sessions_of_user(&alice.username).unwrap().is_empty());
    }

    #[test]
    fn creating_an_existing_account_leaves_its_sessions_alone() {
        let (_dir, store, users) = directory();
        let existing = alice(&users);
        users
            .open_session(&existing, AuthLevel::OneFactor, false)
            .unwrap()
            .expect("opened");
        let again = users.create(NewUser {
            username: existing.username.clone(),
            display_name: None,
            email: None,
            groups: Vec::new(),
            password_hash: PasswordHash::new_unchecked("$argon2id$other".into()),
        });
        assert!(matches!(again, Err(StoreError::UserExists(_))));
        assert_eq!(store.sessions_of_user(&existing.username).unwrap().len(), 1);
    }

    /// An account with an address (for e-mailed codes) and no second factor yet.
    fn with_address(users: &UserDirectory, name: &str) -> User {
        users
            .create(NewUser {
                username: Username::parse(name).unwrap(),
                display_name: None,
                email: Some(format!("{name}@example.test")),
                groups: Vec::new(),
                password_hash: PasswordHash::new_unchecked("$argon2id$old".into()),
            })
            .unwrap()
    }

    fn turn_on_email_codes(store: &Store, username: &Username) {
        store
            .update_factors(username, |mut f| {
                f.email_verification = Some(true);
                Ok::<_, StoreError>((f, ()))
            })
            .unwrap();
    }

    #[test]
    fn two_factor_turned_on_ends_every_other_session_of_the_account_only() {
        let (_dir, store, users) = directory();
        let (alice, bob) = (with_address(&users, "alice"), with_address(&users, "bob"));
        let open = |user: &User| {
            users
                .open_session(user, AuthLevel::OneFactor, true)
                .unwrap()
                .expect("opened")
                .1
        };
        let (mine, stolen, bobs) = (open(&alice), open(&alice), open(&bob));
        let sessions_of = |u: &User| store.sessions_of_user(&u.username).unwrap().len();
        let end = |before| {
            users
                .end_other_sessions_if_two_factor_on(&alice.username, before, &mine.key)
                .unwrap()
        };
        // Still off: nothing ends.
        assert_eq!(end(TwoFactorState::NotEnabled), 0);
        turn_on_email_codes(&store, &alice.username);
        // Already on before the change: nothing ends.
        assert_eq!(end(TwoFactorState::Enabled), 0);
        assert_eq!(sessions_of(&alice), 2);
        // Turned on by the change: every other session of alice ends.
        assert_eq!(end(TwoFactorState::NotEnabled), 1);
        let live = |s: &Session| users.store.get_session(&s.key).unwrap().is_some();
        assert!(live(&mine));
        assert!(!live(&stolen));
        assert!(live(&bobs));
    }

    /// Under `mfa.email_default`, alice without an address and with a password-only session.
    fn alice_password_only_under_email_default()
    -> (tempfile::TempDir, Arc<Store>, UserDirectory, User) {
        let (dir, store, users) = directory_with(MfaSettings {
            email_default: true,
            ..MfaSettings::default()
        });
        let alice = alice(&users);
        users
            .open_session(&alice, AuthLevel::OneFactor, true)
            .unwrap()
            .expect("opened");
        (dir, store, users, alice)
    }

    /// The edit that gives alice an address.
    fn an_address() -> AccountEdit {
        AccountEdit {
            email: Some(Some("alice@example.test".into())),
            ..AccountEdit::default()
        }
    }

    #[test]
    fn an_address_that_turns_on_emailed_codes_ends_the_password_only_sessions() {
        let (_dir, store, users, alice) = alice_password_only_under_email_default();
        // A new display name changes nothing about second factors.
        let rename = AccountEdit {
            display_name: Some(Some("Alice L.".into())),
            ..AccountEdit::default()
        };
        users.edit(&alice.username, &rename).unwrap();
        assert_eq!(store.sessions_of_user(&alice.username).unwrap().len(), 1);
        // An address: emailed codes are on by default, so two-step verification is.
        users.edit(&alice.username, &an_address()).unwrap();
        assert!(store.sessions_of_user(&alice.username).unwrap().is_empty());
    }

    /// A damaged emailed-code record neither stops an edit that gives an address nor saves the
    /// password-only sessions it must end.
    #[test]
    fn an_address_edit_ends_the_sessions_despite_an_unreadable_code_record() {
        let (_dir, store, users, alice) = alice_password_only_under_email_default();
        store.put_raw_code_for_test(b"alice\0email", b"{\"V1\":");
        users.edit(&alice.username, &an_address()).unwrap();
        assert!(store.sessions_of_user(&alice.username).unwrap().is_empty());
        let left = store.code_channels_of_user(&alice.username).unwrap();
        assert!(left.unreadable.is_empty(), "the damaged record is gone");
    }

    /// A deletion whose account is already gone (an earlier try stopped by a store error) still
    /// ends the sessions and deletes the factors of that name.
    #[test]
    fn deleting_again_finishes_an_interrupted_deletion() {
        let (_dir, store, users) = directory();
        let alice = alice(&users);
        let (id, _) = users
            .open_session(&alice, AuthLevel::OneFactor, false)
            .unwrap()
            .expect("opened");
        store.delete_user(&alice.username).unwrap();
        assert!(matches!(
            users.delete(&alice.username),
            Err(StoreError::NoSuchUser(_))
        ));
        assert!(users.sessions.lookup(&id.cookie_value()).unwrap().is_none());
        assert!(store.sessions_of_user(&alice.username).unwrap().is_empty());
    }

    #[test]
    fn a_password_only_login_racing_with_two_factor_turned_on_opens_no_session() {
        let (_dir, store, users) = directory();
        // The password was verified while alice had no second factor; then she turned one on.
        let checked = with_address(&users, "alice");
        turn_on_email_codes(&store, &checked.username);
        let opened = users
            .open_session(&checked, AuthLevel::OneFactor, true)
            .unwrap();
        assert!(opened.is_none());
        assert!(
            store
                .sessions_of_user(&checked.username)
                .unwrap()
                .is_empty()
        );
        // A login that owes the factor opens its session.
        assert!(
            users
                .open_session(&checked, AuthLevel::AwaitSecondFactor, true)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_login_that_checked_the_old_account_opens_no_session() {
        let changes: [fn(&UserDirectory, &Username); 3] = [
            |u, n| {
                u.set_password(n, PasswordHash::new_unchecked("$argon2id$new".into()))
                    .unwrap()
            },
            |u, n| u.set_disabled(n, true).unwrap(),
            |u, n| u.delete(n).unwrap(),
        ];
        for change in changes {
            let (_dir, store, users) = directory();
            let checked = alice(&users);
            // The password was verified against `checked`; then the account changed.
            change(&users, &checked.username);
            let opened = users
                .open_session(&checked, AuthLevel::OneFactor, false)
                .unwrap();
            assert!(opened.is_none());
            assert!(
                store
                    .sessions_of_user(&checked.username)
                    .unwrap()
                    .is_empty()
            );
        }
        // Unchanged: the session opens.
        let (_dir, store, users) = directory();
        let checked = alice(&users);
        let (_, session) = users
            .open_session(&checked, AuthLevel::OneFactor, false)
            .unwrap()
            .expect("opened");
        assert_eq!(session.username, checked.username);
        assert_eq!(store.sessions_of_user(&checked.username).unwrap().len(), 1);
    }
}
