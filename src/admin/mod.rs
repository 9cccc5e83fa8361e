//! Administration from the command line: user accounts and policy checks.
//!
//! sled lets one process open a database, so while `stepgate serve` runs, the CLI talks to it over
//! a Unix socket in the data directory ([`socket`], [`protocol`]); otherwise it opens the store
//! itself ([`offline_directory`]). Either way the same [`protocol::execute`] performs the change
//! through [`UserDirectory`], so sessions end and changes are audited alike.

pub mod client;
pub mod policy_check;
pub mod protocol;
pub mod socket;

use std::sync::Arc;

use crate::app::{AppError, open_store};
use crate::auth::directory::UserDirectory;
use crate::auth::session::SessionManager;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::store::Store;

/// The user directory over a store opened by this process (no gateway running).
pub struct OfflineDirectory {
    store: Arc<Store>,
    pub sessions: Arc<SessionManager>,
    pub users: UserDirectory,
}

/// Opens the store of `config` and builds the session manager and user directory on it, without
/// the rest of an [`crate::app::App`] (no upstream clients, no hasher).
pub fn offline_directory(config: &Config) -> Result<OfflineDirectory, AppError> {
    let store = Arc::new(open_store(config)?);
    let clock: SharedClock = Arc::new(SystemClock);
    let sessions = Arc::new(SessionManager::new(
        store.clone(),
        clock.clone(),
        config.session.settings,
    ));
    let users = UserDirectory::new(store.clone(), sessions.clone(), clock, config.mfa.clone());
    Ok(OfflineDirectory {
        store,
        sessions,
        users,
    })
}

impl OfflineDirectory {
    /// Flushes everything to disk and releases the store.
    pub fn close(self) -> Result<(), AppError> {
        self.store.flush()?;
        Ok(())
    }
}
