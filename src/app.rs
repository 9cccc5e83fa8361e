//! The shared state every request handler reads: validated config, upstream clients, the store
//! and what is built on it (sessions, users, regulation), the password hasher and the clock.

use std::path::Path;
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
    /// Room for the form bodies being read (`limits.max_form_memory_bytes`).
    pub form_memory: crate::http::body::FormMemory,
}

impl App {
    /// Opens the store and builds everything a running gateway needs.
    pub fn new(config: Config, clock: SharedClock) -> Result<Arc<App>, AppError> {
        let session_cookies = crate::http::cookies::SessionCookieNames::new(&config.session);
        let upstreams =
            Upstreams::build(&config.upstreams, config.server.workers, &session_cookies)?;
        let protected_headers = config.identity_headers.protected();
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
        let key_file = &config.storage.key_file;
        if store.holds_second_factors() && key_file_is_missing(key_file) {
            // A new key would leave every stored authenticator secret and backup code
            // unreadable: the users who have them could no longer sign in.
            return Err(AppError::Factors(FactorError::KeyFile {
                path: key_file.clone(),
                reason: "missing, while the store holds second factors sealed with it; restore \
                         it from a backup (starting with a new key would lock out every user \
                         with an authenticator app or backup codes)"
                    .into(),
            }));
        }
        let secret_box = SecretBox::load_or_create(key_file)?;
        let factors = Arc::new(Factors::new(
            store.clone(),
            clock.clone(),
            secret_box,
            config.mfa.clone(),
        ));
        // Another key file (another gateway's, a wrong backup) would refuse every
        // authenticator app and backup code, each refusal counting toward a ban.
        if !factors.check_key()? {
            return Err(AppError::Factors(FactorError::KeyFile {
                path: key_file.clone(),
                reason: "is not the key this store's second-factor secrets were sealed with; \
                         restore the right key file (with this one, every authenticator app and \
                         backup code would be refused)"
                    .into(),
            }));
        }
        let notifier = Notifier::new(
            config.email.as_ref(),
            config.sms.as_ref(),
            &config.portal.title,
        )?
        .with_clock(clock.clone());
        // The largest form any reader takes: a network's share holds at least one.
        let one_form =
            crate::portal::form::MAX_FORM_BYTES.max(crate::http::held_forms::MAX_FORM_BYTES);
        let form_memory =
            crate::http::body::FormMemory::new(config.limits.max_form_memory_bytes, one_form);
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
            form_memory,
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
    create_private_dir(path).map_err(|e| AppError::StorageDir {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Store::open(path)?)
}

/// Creates `path` (and its missing parents) readable by its owner only, as the store holds
/// password hashes, addresses and phone numbers; an existing directory open to others is
/// used as it is, with a warning.
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "the store directory is open to other users; restrict it (chmod 700)"
            );
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(path)
}

/// Whether nothing at all is at `path` (an unreadable file is not missing).
fn key_file_is_missing(path: &Path) -> bool {
    matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_store_directory_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("a").join("store");
        create_private_dir(&store).unwrap();
        for path in [&store, &dir.path().join("a")] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", path.display());
        }
        // An existing directory is used as it is.
        create_private_dir(&store).unwrap();
    }

    /// Another key file than the one the store was first used with is refused at start-up;
    /// the right one starts.
    #[tokio::test]
    async fn a_key_file_from_elsewhere_is_refused() {
        use figment::providers::{Format, Toml};
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("secret.key");
        let toml = format!(
            "[storage]\npath = {:?}\nkey_file = {:?}\n[[upstreams]]\nurl = \"http://127.0.0.1:3000\"\n",
            dir.path().join("data").display().to_string(),
            key.display().to_string()
        );
        let config =
            || crate::config::from_figment(&figment::Figment::from(Toml::string(&toml))).unwrap();
        let clock: SharedClock = Arc::new(crate::clock::SystemClock);
        drop(App::new(config(), clock.clone()).expect("first start"));
        let right = std::fs::read(&key).unwrap();
        drop(App::new(config(), clock.clone()).expect("the same key"));

        std::fs::remove_file(&key).unwrap();
        drop(SecretBox::load_or_create(&key).expect("another key"));
        let Err(e) = App::new(config(), clock.clone()) else {
            panic!("another key was accepted");
        };
        assert!(e.to_string().contains("is not the key"), "{e}");

        let restore_the_right_key = || {
            std::fs::remove_file(&key).unwrap();
            std::fs::write(&key, &right).unwrap();
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
        };
        restore_the_right_key();
        let app = App::new(config(), clock.clone()).expect("the right key again");

        // A store from before the check was kept, holding a secret sealed with the right key:
        // a wrong key is refused there too, and nothing is recorded with it.
        let alice = app
            .users
            .create(crate::auth::directory::NewUser {
                username: crate::auth::user::Username::parse("alice").unwrap(),
                display_name: None,
                email: None,
                groups: Vec::new(),
                password_hash: crate::auth::password::PasswordHash::new_unchecked(
                    "$argon2id$x".into(),
                ),
            })
            .unwrap();
        app.factors.begin_totp(&alice).unwrap();
        app.store.forget_key_check_for_test();
        drop(app);
        std::fs::remove_file(&key).unwrap();
        drop(SecretBox::load_or_create(&key).expect("another key"));
        assert!(
            App::new(config(), clock.clone()).is_err(),
            "a wrong key on upgrade"
        );
        restore_the_right_key();
        drop(App::new(config(), clock).expect("the right key, recorded now"));
    }
}
