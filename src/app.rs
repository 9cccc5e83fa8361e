//! The shared state every request handler reads: validated config, upstream clients, the store
//! and what is built on it (sessions, users, regulation), the password hasher and the clock.

use std::sync::Arc;

use crate::auth::directory::UserDirectory;
use crate::auth::factors::{FactorError, Factors, SecretBox};
use crate::auth::password::{PasswordError, PasswordHasher};
use crate::auth::regulation::Regulator;
use crate::auth::session::SessionManager;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::notify::{Notifier, NotifyError};
use crate::proxy::upstream::{UpstreamSetupError, Upstreams};
use crate::store::{Store, StoreError};

pub struct App {
    pub config: Arc<Config>,
    pub upstreams: Upstreams,
    pub clock: SharedClock,
    /// Folded names of every identity header, stripped from all client requests.
    pub protected_headers: Vec<String>,
    pub store: Arc<Store>,
    pub sessions: Arc<SessionManager>,
    pub users: UserDirectory,
    pub regulator: Arc<Regulator>,
    pub hasher: PasswordHasher,
    pub factors: Arc<Factors>,
    pub notifier: Notifier,
    /// Browser forms waiting for a step-up verification.
    pub held_forms: crate::http::held_forms::HeldForms,
    /// The HTTPS listener's address once bound (the configured port may be 0).
    pub https_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// Open and parked client connections.
    pub connection_stats: crate::server::ConnectionStats,
    /// The session cookie's names (plain HTTP, HTTPS).
    pub session_cookies: crate::http::cookies::SessionCookieNames,
}

impl App {
    /// Opens the store and builds everything a running gateway needs.
    pub fn new(config: Config, clock: SharedClock) -> Result<Arc<App>, AppError> {
        let upstreams = Upstreams::build(&config.upstreams, config.server.workers)?;
        let protected_headers = config.identity_headers.protected();
        let session_cookies = crate::http::cookies::SessionCookieNames::new(&config.session);
        let store = Arc::new(open_store(&config)?);
        let sessions = Arc::new(SessionManager::new(
            store.clone(),
            clock.clone(),
            config.session.settings,
        ));
        let users = UserDirectory::new(
            store.clone(),
            sessions.clone(),
            clock.clone(),
            config.mfa.clone(),
        );
        let regulator = Arc::new(Regulator::new(
            store.clone(),
            clock.clone(),
            config.regulation,
        ));
        let hasher = config.password.hasher()?;
        let secret_box = SecretBox::load_or_create(&config.storage.key_file)?;
        let factors = Arc::new(Factors::new(
            store.clone(),
            clock.clone(),
            secret_box,
            config.mfa.clone(),
        ));
        let notifier = Notifier::new(
            config.email.as_ref(),
            config.sms.as_ref(),
            &config.portal.title,
        )?
        .with_clock(clock.clone());
        Ok(Arc::new(App {
            config: Arc::new(config),
            upstreams,
            clock,
            protected_headers,
            store,
            sessions,
            users,
            regulator,
            hasher,
            factors,
            notifier,
            held_forms: Default::default(),
            https_addr: std::sync::OnceLock::new(),
            connection_stats: crate::server::ConnectionStats::default(),
            session_cookies,
        }))
    }

    /// Makes everything durable; called once the last request has drained.
    pub fn flush(&self) -> Result<(), AppError> {
        self.store.flush()?;
        Ok(())
    }
}

/// Opens (creating if needed) the store named by `storage.path`.
pub fn open_store(config: &Config) -> Result<Store, AppError> {
    let path = &config.storage.path;
    std::fs::create_dir_all(path).map_err(|e| AppError::StorageDir {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Store::open(path)?)
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Upstream(#[from] UpstreamSetupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("storage.path: cannot create {path}: {reason}")]
    StorageDir { path: String, reason: String },
    #[error("password hashing: {0}")]
    Password(#[from] PasswordError),
    #[error("storage.key_file: {0}")]
    Factors(#[from] FactorError),
    #[error("email or SMS setup: {0}")]
    Notify(#[from] NotifyError),
}
