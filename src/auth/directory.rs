//! The user directory: reads users through an in-memory view (no disk read per request in steady
//! state) and performs every change to an account, so that the view, the sessions and the audit
//! trail always follow. The CLI (directly or through the running gateway) uses the same methods.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use crate::auth::audit::{self, AuditEvent, AuditKind};
use crate::auth::factors::{FactorError, FactorSummary, MfaSettings, summary_from_store};
use crate::auth::password::PasswordHash;
use crate::auth::session::SessionManager;
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

    pub fn list(&self) -> Result<Vec<User>, StoreError> {
        self.store.list_users()
    }

    fn audit(&self, kind: AuditKind, username: &Username, by: Option<IpAddr>) {
        let mut event = AuditEvent::new(self.clock.now(), kind).with_username(username.as_str());
        if let Some(ip) = by {
            event = event.with_client_ip(ip);
        }
        audit::record(&self.store, event);
    }

    pub fn create(&self, new: NewUser) -> Result<User, StoreError> {
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
        self.store.create_user(&user)?;
        self.store.flush()?;
        self.forget(&user.username);
        self.audit(AuditKind::UserCreated, &user.username, None);
        Ok(user)
    }

    fn modify(
        &self,
        username: &Username,
        change: impl FnOnce(&mut User),
    ) -> Result<User, StoreError> {
        let mut user = self
            .store
            .get_user(username)?
            .ok_or_else(|| StoreError::NoSuchUser(username.clone()))?;
        change(&mut user);
        self.store.update_user(&user)?;
        self.store.flush()?;
        self.forget(username);
        Ok(user)
    }

    /// Replaces the password and ends every session of the account.
    pub fn set_password(&self, username: &Username, hash: PasswordHash) -> Result<(), StoreError> {
        self.modify(username, |u| u.password_hash = hash)?;
        self.sessions.revoke_user(username)?;
        self.audit(AuditKind::PasswordChanged, username, None);
        Ok(())
    }

    /// Disabling ends the account's sessions at once.
    pub fn set_disabled(&self, username: &Username, disabled: bool) -> Result<(), StoreError> {
        self.modify(username, |u| u.disabled = disabled)?;
        if disabled {
            self.sessions.revoke_user(username)?;
            self.audit(AuditKind::UserDisabled, username, None);
        } else {
            self.audit(AuditKind::UserEnabled, username, None);
        }
        Ok(())
    }

    /// The account's second factors (state and methods), for administrators.
    pub fn two_factor(&self, user: &User) -> Result<FactorSummary, FactorError> {
        summary_from_store(&self.store, user, &self.mfa, self.clock.now())
    }

    /// Administrator reset: deletes every second factor of the account (secret, backup codes,
    /// phone, email setting), as when the user turns two-step verification off.
    pub fn reset_two_factor(&self, username: &Username) -> Result<(), StoreError> {
        if self.store.get_user(username)?.is_none() {
            return Err(StoreError::NoSuchUser(username.clone()));
        }
        self.store.delete_factors(username)?;
        self.store.flush()?;
        let event = AuditEvent::new(self.clock.now(), AuditKind::TwoFactorDisabled)
            .with_username(username.as_str())
            .with_detail("reset by an administrator");
        audit::record(&self.store, event);
        Ok(())
    }

    /// Deleting ends the account's sessions at once.
    pub fn delete(&self, username: &Username) -> Result<(), StoreError> {
        self.sessions.revoke_user(username)?;
        if !self.store.delete_user(username)? {
            return Err(StoreError::NoSuchUser(username.clone()));
        }
        // A later account with the same name must not inherit these second factors.
        self.store.delete_factors(username)?;
        self.store.flush()?;
        self.forget(username);
        self.audit(AuditKind::UserDeleted, username, None);
        Ok(())
    }
}
