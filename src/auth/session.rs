//! Server-side sessions: the cookie carries only a random [`SessionId`]; everything else lives in
//! the store under the id's SHA-256 ([`SessionKey`]), with a bounded in-memory view in front so
//! the steady state never reads the disk.
//!
//! Expiry rules (all checked against the injected clock):
//! - every session has an absolute end, `expires_at`, fixed at creation: `absolute` (12 h by
//!   default) for a normal session, `remember_me` (30 days) for a remember-me session; if the
//!   configured limit is later lowered, the lower limit applies to existing sessions too;
//! - a normal session also ends after `inactivity` (1 h) without a request;
//! - a remember-me session is *not* subject to the inactivity timeout: that is the point of
//!   ticking "remember me"; it still ends at its absolute limit.
//!
//! One [`SessionManager`] owns the sessions of a store: revocation is only guaranteed to reach
//! the cache of the manager that performs it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::session_ends::{SessionEndWatch, SessionEnds};
use crate::auth::user::Username;
use crate::clock::{SharedClock, Timestamp};
use crate::config::{ConfigErrors, parse_duration};
use crate::store::{Store, StoreError};

/// Bytes of randomness in a session id.
const ID_BYTES: usize = 32;
/// Length of the base64url (no padding) rendering of [`ID_BYTES`].
const ID_CHARS: usize = 43;

/// The secret session id carried by the cookie: 32 bytes from the thread-local CSPRNG (seeded
/// from the operating system), rendered as base64url without padding. `Debug` is redacted and
/// equality is constant-time.
#[derive(Clone)]
pub struct SessionId([u8; ID_BYTES]);

impl PartialEq for SessionId {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SessionId {}

impl SessionId {
    /// A fresh random id.
    pub fn generate() -> SessionId {
        let mut bytes = [0u8; ID_BYTES];
        rand::fill(&mut bytes[..]);
        SessionId(bytes)
    }

    /// Accepts exactly the shape [`SessionId::cookie_value`] produces: 43 characters of the
    /// base64url alphabet that decode to 32 bytes (canonically). Anything else is `None`.
    pub fn parse(value: &str) -> Option<SessionId> {
        if value.len() != ID_CHARS {
            return None;
        }
        // Decoded in place: this runs for every request with a session cookie. 43 characters
        // may hold 33 bytes by length alone; a canonical id fills exactly 32.
        let mut bytes = [0u8; ID_BYTES + 1];
        let len = URL_SAFE_NO_PAD.decode_slice(value, &mut bytes).ok()?;
        let bytes: [u8; ID_BYTES] = bytes.get(..len)?.try_into().ok()?;
        Some(SessionId(bytes))
    }

    /// The value to put in the cookie. Treat it as a secret.
    pub fn cookie_value(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The key the session is stored under.
    pub fn key(&self) -> SessionKey {
        SessionKey(Sha256::digest(self.0).into())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// SHA-256 of a session id: names a session without being able to present it. Safe to log.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionKey([u8; 32]);

/// Eight bytes of the digest are its hash: they are as uniform as any hasher's output (the
/// first byte picks the view's shard, so these are later ones).
impl Hash for SessionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&self.0[8..16]);
        state.write_u64(u64::from_le_bytes(eight));
    }
}

/// The session view's hasher: a key's hash as it comes (see `Hash for SessionKey`). SipHash
/// over a key cost more than the rest of a cached lookup; it guards against keys aimed at one
/// bucket, and none can be here: a key is the SHA-256 of an id, and only sessions the gateway
/// created (random ids) enter the view.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `SessionKey`; anything else still hashes consistently.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

impl SessionKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SessionKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short hex prefix, enough to correlate log lines.
    pub fn short(&self) -> String {
        self.0[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({}..)", self.short())
    }
}

/// How strongly the session's user has proven who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuthLevel {
    /// The password was right, but the user has a second factor that is still to be proven:
    /// such a session passes no rule; it only lets the user reach the verification page.
    AwaitSecondFactor,
    OneFactor,
    TwoFactor,
}

impl AuthLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthLevel::AwaitSecondFactor => "await_second_factor",
            AuthLevel::OneFactor => "one_factor",
            AuthLevel::TwoFactor => "two_factor",
        }
    }
}

/// A session as stored on the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub key: SessionKey,
    pub username: Username,
    pub created_at: Timestamp,
    pub last_seen: Timestamp,
    /// Absolute end of the session, fixed at creation.
    pub expires_at: Timestamp,
    pub remember_me: bool,
    pub auth_level: AuthLevel,
    pub second_factor_at: Option<Timestamp>,
    /// When the current second-factor challenge began (password step, or a later request for
    /// a second factor), and how many wrong codes it has seen.
    pub challenge_started_at: Option<Timestamp>,
    pub challenge_failures: u32,
    /// When the password was last re-entered for step-up (rules with a password fallback, for
    /// users who have no second factor).
    pub reauth_at: Option<Timestamp>,
}

impl Session {
    /// Has the session ended at `now` under `settings` (absolute or inactivity limit)?
    pub fn is_expired(&self, now: Timestamp, settings: &SessionSettings) -> bool {
        let limit = if self.remember_me {
            settings.remember_me
        } else {
            settings.absolute
        };
        let end = self.expires_at.min(self.created_at.plus(limit));
        if now >= end {
            return true;
        }
        !self.remember_me && now >= self.last_seen.plus(settings.inactivity)
    }
}

/// Session lifetimes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionSettings {
    /// Lifetime of a normal session.
    pub absolute: Duration,
    /// A normal session ends after this long without a request.
    pub inactivity: Duration,
    /// Lifetime of a remember-me session (no inactivity timeout).
    pub remember_me: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            absolute: Duration::from_secs(12 * 3600),
            inactivity: Duration::from_secs(3600),
            remember_me: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl SessionSettings {
    /// How stale the stored `last_seen` may get before a lookup writes it back: a tenth of the
    /// inactivity timeout, at most 60 s. After a restart a session can therefore look idle for
    /// up to that much longer than it was, which only ever ends it early, never late.
    pub fn last_seen_write_interval(&self) -> Duration {
        (self.inactivity / 10).min(Duration::from_secs(60))
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

pub const DEFAULT_COOKIE_NAME: &str = "stepgate_session";

/// `[session]` as written in the configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSessionConfig {
    pub absolute: Option<String>,
    pub inactivity: Option<String>,
    pub remember_me: Option<String>,
    pub cookie_name: Option<String>,
    /// One domain whose subdomains share the session (its portal is `portal.url`).
    pub cookie_domain: Option<String>,
    /// Several domains, each with its own portal: `[[session.domains]]`.
    #[serde(default)]
    pub domains: Vec<RawCookieDomain>,
}

/// One `[[session.domains]]` entry as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCookieDomain {
    pub domain: Option<String>,
    pub portal_url: Option<String>,
}

/// A domain whose subdomains share the session cookie, and the portal that serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieDomain {
    /// Lower-cased, without a leading dot.
    pub domain: String,
    /// Scheme and authority of the portal for this domain (`https://auth.example.com`), inside
    /// the domain. `None`: the portal is reached on the application's own host.
    pub portal_url: Option<String>,
}

impl CookieDomain {
    /// Is `host` (port allowed, any case) this domain or one of its subdomains?
    pub fn covers(&self, host: &str) -> bool {
        domain_covers(&self.domain, host)
    }
}

/// `host` (port and trailing dot ignored, any case) is `domain` or ends with `.domain`.
pub fn domain_covers(domain: &str, host: &str) -> bool {
    let host = crate::policy::host::strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    host.eq_ignore_ascii_case(domain)
        || (host.len() > domain.len() + 1
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            && host.as_bytes()[host.len() - domain.len()..].eq_ignore_ascii_case(domain.as_bytes()))
}

/// Validated `[session]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    pub settings: SessionSettings,
    pub cookie_name: String,
    /// Domains whose subdomains share the session. Empty: host-only cookies. From
    /// `session.cookie_domain` (one entry, portal `portal.url`) or `[[session.domains]]`.
    pub domains: Vec<CookieDomain>,
}

impl SessionConfig {
    /// The configured domain covering `host` (the most specific one), if any. A cookie set on a
    /// request for `host` carries this domain; `None`: a host-only cookie.
    pub fn domain_for(&self, host: &str) -> Option<&CookieDomain> {
        self.domains
            .iter()
            .filter(|d| d.covers(host))
            .max_by_key(|d| d.domain.len())
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            settings: SessionSettings::default(),
            cookie_name: DEFAULT_COOKIE_NAME.to_string(),
            domains: Vec::new(),
        }
    }
}

/// Checks `[session]`, recording every problem under its key (`session.absolute`, ...). Where a
/// value is wrong the default stands in, so the caller can keep validating other sections.
pub fn validate(raw: &RawSessionConfig, errors: &mut ConfigErrors) -> SessionConfig {
    let defaults = SessionSettings::default();
    let mut duration = |value: &Option<String>, key: &str, default: Duration| match value {
        None => default,
        Some(v) => match parse_duration(v, key, errors) {
            Some(d) if d < Duration::from_secs(1) => {
                errors.push(key, "must be at least 1s");
                default
            }
            Some(d) => d,
            None => default,
        },
    };
    let settings = SessionSettings {
        absolute: duration(&raw.absolute, "session.absolute", defaults.absolute),
        inactivity: duration(&raw.inactivity, "session.inactivity", defaults.inactivity),
        remember_me: duration(
            &raw.remember_me,
            "session.remember_me",
            defaults.remember_me,
        ),
    };
    if raw.inactivity.is_some() && settings.inactivity > settings.absolute {
        errors.push(
            "session.inactivity",
            "must not be longer than session.absolute",
        );
    }

    let cookie_name = match &raw.cookie_name {
        None => DEFAULT_COOKIE_NAME.to_string(),
        Some(name) => {
            if let Err(reason) = check_cookie_name(name) {
                errors.push("session.cookie_name", reason);
            }
            name.clone()
        }
    };

    let mut domains = Vec::new();
    if let Some(domain) = &raw.cookie_domain {
        match check_cookie_domain(domain) {
            Ok(d) => domains.push(CookieDomain {
                domain: d,
                // Filled from `portal.url` by the configuration's validation.
                portal_url: None,
            }),
            Err(reason) => errors.push("session.cookie_domain", reason),
        }
        if !raw.domains.is_empty() {
            errors.push(
                "session.domains",
                "use either session.cookie_domain or [[session.domains]], not both",
            );
        }
    }
    for (i, entry) in raw.domains.iter().enumerate() {
        let key = format!("session.domains[{i}]");
        let Some(domain) = &entry.domain else {
            errors.push(format!("{key}.domain"), "missing required key");
            continue;
        };
        let domain = match check_cookie_domain(domain) {
            Ok(d) => d,
            Err(reason) => {
                errors.push(format!("{key}.domain"), reason);
                continue;
            }
        };
        if domains.iter().any(|d: &CookieDomain| d.domain == domain) {
            errors.push(
                format!("{key}.domain"),
                format!("{domain:?} is listed twice"),
            );
            continue;
        }
        let portal_url = match &entry.portal_url {
            None => None,
            Some(url) => match crate::config::parse_portal_url(url) {
                Ok(url) if url_host_inside(&url, &domain) => Some(url),
                Ok(url) => {
                    errors.push(
                        format!("{key}.portal_url"),
                        format!(
                            "{url} is not inside {domain}: the cookie it sets at login would not reach {domain}"
                        ),
                    );
                    None
                }
                Err(reason) => {
                    errors.push(format!("{key}.portal_url"), reason);
                    None
                }
            },
        };
        domains.push(CookieDomain { domain, portal_url });
    }
    if cookie_name.starts_with("__Host-") && !domains.is_empty() {
        let key = if raw.cookie_domain.is_some() {
            "session.cookie_domain"
        } else {
            "session.domains"
        };
        errors.push(
            key,
            "a cookie named __Host-... must not set a domain; remove the cookie domain or rename the cookie",
        );
    }

    SessionConfig {
        settings,
        cookie_name,
        domains,
    }
}

/// Is the host of `url` (an `http(s)://authority` from [`crate::config::parse_portal_url`])
/// inside `domain`?
pub fn url_host_inside(url: &str, domain: &str) -> bool {
    let authority = url.split_once("://").map(|(_, a)| a).unwrap_or(url);
    domain_covers(domain, authority)
}

/// A cookie name is an RFC 9110 token.
fn check_cookie_name(name: &str) -> Result<(), String> {
    const TCHAR_SPECIALS: &[u8] = b"!#$%&'*+-.^_`|~";
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || TCHAR_SPECIALS.contains(&b))
    {
        return Err(format!(
            "{name:?} is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~ only)"
        ));
    }
    Ok(())
}

/// A registrable-looking DNS name: labels of letters, digits and hyphens; no port, no IP
/// literal brackets, no wildcard. A leading dot is accepted and dropped (it is ignored by
/// browsers anyway).
fn check_cookie_domain(domain: &str) -> Result<String, String> {
    let d = domain.trim().to_ascii_lowercase();
    let d = d.strip_prefix('.').unwrap_or(&d);
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if d.is_empty() || d.len() > 253 || !d.split('.').all(valid_label) {
        return Err(format!("{domain:?} is not a valid domain name"));
    }
    Ok(d.to_string())
}

// ---------------------------------------------------------------------------------------------
// The manager

/// Sessions kept in memory at most, by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;

struct CachedSession {
    session: Session,
    /// The `last_seen` value currently on disk.
    stored_last_seen: Timestamp,
}

struct SessionCache {
    capacity: usize,
    map: HashMap<SessionKey, CachedSession, BuildHasherDefault<KeyHasher>>,
}

impl SessionCache {
    /// Inserts, first making room if needed: expired entries go, then the least recently seen
    /// eighth. Evicting is always safe (the store has every session), it only costs a disk read
    /// on the next lookup.
    fn insert(&mut self, entry: CachedSession, now: Timestamp, settings: &SessionSettings) {
        if self.map.len() >= self.capacity && !self.map.contains_key(&entry.session.key) {
            self.map.retain(|_, c| !c.session.is_expired(now, settings));
            if self.map.len() >= self.capacity {
                let mut by_age: Vec<(Timestamp, SessionKey)> = self
                    .map
                    .values()
                    .map(|c| (c.session.last_seen, c.session.key))
                    .collect();
                by_age.sort_unstable();
                let drop = (self.capacity / 8).max(1);
                for (_, key) in by_age.into_iter().take(drop) {
                    self.map.remove(&key);
                }
            }
        }
        self.map.insert(entry.session.key, entry);
    }
}

/// Creates, finds, refreshes and revokes sessions.
pub struct SessionManager {
    store: Arc<Store>,
    clock: SharedClock,
    settings: SessionSettings,
    /// The in-memory view, in shards chosen by the session key so that lookups on different
    /// workers rarely wait for each other. Every read or write of a session goes through its
    /// shard's lock, store access included, so a revocation and a concurrent lookup cannot
    /// interleave and resurrect a session in the cache; what spans sessions (rotation, ending
    /// a user's sessions) holds every shard it touches, taken in index order. Flushes happen
    /// after the locks are released.
    shards: Box<[Mutex<SessionCache>]>,
    /// What outlives a request (a WebSocket tunnel) watches its session's end here.
    ends: Arc<SessionEnds>,
}

/// Shards of the session cache (fewer when the capacity is smaller).
const CACHE_SHARDS: usize = 16;

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    pub fn new(store: Arc<Store>, clock: SharedClock, settings: SessionSettings) -> Self {
        Self::with_cache_capacity(store, clock, settings, DEFAULT_CACHE_CAPACITY)
    }

    pub fn with_cache_capacity(
        store: Arc<Store>,
        clock: SharedClock,
        settings: SessionSettings,
        capacity: usize,
    ) -> Self {
        let capacity = capacity.max(1);
        let count = CACHE_SHARDS.min(capacity);
        let shards = (0..count)
            .map(|_| {
                Mutex::new(SessionCache {
                    capacity: capacity.div_ceil(count),
                    map: HashMap::default(),
                })
            })
            .collect();
        SessionManager {
            store,
            clock,
            settings,
            shards,
            ends: Arc::default(),
        }
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// The shard holding `key` (keys are SHA-256 digests: their first byte is uniform).
    fn shard_index(&self, key: &SessionKey) -> usize {
        usize::from(key.as_bytes()[0]) % self.shards.len()
    }

    fn lock(&self, key: &SessionKey) -> MutexGuard<'_, SessionCache> {
        self.lock_shard(self.shard_index(key))
    }

    fn lock_shard(&self, index: usize) -> MutexGuard<'_, SessionCache> {
        let shard = &self.shards[index];
        match shard.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                // A panic while holding the lock may have left the shard half-updated. The
                // store is the truth, so start the shard afresh.
                let mut guard = poisoned.into_inner();
                guard.map.clear();
                shard.clear_poison();
                guard
            }
        }
    }

    /// Starts a new session with a fresh id. It is on disk before this returns.
    pub fn create(
        &self,
        username: &Username,
        level: AuthLevel,
        remember_me: bool,
    ) -> Result<(SessionId, Session), StoreError> {
        let now = self.clock.now();
        let id = SessionId::generate();
        let lifetime = if remember_me {
            self.settings.remember_me
        } else {
            self.settings.absolute
        };
        let session = Session {
            key: id.key(),
            username: username.clone(),
            created_at: now,
            last_seen: now,
            expires_at: now.plus(lifetime),
            remember_me,
            auth_level: level,
            second_factor_at: (level == AuthLevel::TwoFactor).then_some(now),
            challenge_started_at: (level == AuthLevel::AwaitSecondFactor).then_some(now),
            challenge_failures: 0,
            reauth_at: None,
        };
        {
            let mut cache = self.lock(&session.key);
            self.store.put_session(&session)?;
            cache.insert(
                CachedSession {
                    session: session.clone(),
                    stored_last_seen: now,
                },
                now,
                &self.settings,
            );
        }
        self.store.flush()?;
        Ok((id, session))
    }

    /// The live session named by a cookie value, with `last_seen` refreshed.
    ///
    /// A malformed value, an unknown session and an expired one all give `Ok(None)`; expired
    /// sessions are deleted on the way. Cached sessions are answered from memory; `last_seen`
    /// goes to disk only when the stored value is older than
    /// [`SessionSettings::last_seen_write_interval`].
    pub fn lookup(&self, cookie_value: &str) -> Result<Option<Session>, StoreError> {
        let Some(id) = SessionId::parse(cookie_value) else {
            return Ok(None);
        };
        let key = id.key();
        let now = self.clock.now();
        let mut cache = self.lock(&key);
        let Some(entry) = self.load(&mut cache, &key, now)? else {
            return Ok(None);
        };
        if now > entry.session.last_seen {
            entry.session.last_seen = now;
        }
        if now.since(entry.stored_last_seen) >= self.settings.last_seen_write_interval() {
            self.store.put_session(&entry.session)?;
            entry.stored_last_seen = entry.session.last_seen;
        }
        Ok(Some(entry.session.clone()))
    }

    /// Finds a live session in the cache, or reads it from the store into the cache. Expired
    /// sessions are removed from both and reported as absent. Called with the key's shard held.
    fn load<'c>(
        &self,
        cache: &'c mut SessionCache,
        key: &SessionKey,
        now: Timestamp,
    ) -> Result<Option<&'c mut CachedSession>, StoreError> {
        if !cache.map.contains_key(key) {
            let Some(session) = self.store.get_session(key)? else {
                return Ok(None);
            };
            let stored_last_seen = session.last_seen;
            cache.insert(
                CachedSession {
                    session,
                    stored_last_seen,
                },
                now,
                &self.settings,
            );
        }
        // One more lookup decides and answers (it used to take two).
        match cache.map.entry(*key) {
            Entry::Occupied(cached) if cached.get().session.is_expired(now, &self.settings) => {
                cached.remove();
                self.ends.session_ended(key);
                self.store.delete_session(key)?;
                Ok(None)
            }
            Entry::Occupied(cached) => Ok(Some(cached.into_mut())),
            Entry::Vacant(_) => Ok(None),
        }
    }

    /// Ends one session at once (logout), durably: the store is flushed before returning.
    /// Returns whether it existed.
    pub fn revoke(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let existed = self.revoke_unflushed(key)?;
        self.store.flush()?;
        Ok(existed)
    }

    /// Ends one session at once without waiting for the disk, for callers on a worker thread
    /// (the identity check's safety net): no lookup finds the session once this returns, and
    /// the deletion reaches disk with the store's periodic flush. Returns whether it existed.
    pub fn revoke_unflushed(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let mut cache = self.lock(key);
        let cached = cache.map.remove(key).is_some();
        self.ends.session_ended(key);
        Ok(self.store.delete_session(key)? || cached)
    }

    /// Ends every session of `username` but `keep`, atomically against a session moving to a
    /// fresh id (all shards stay locked, as in [`SessionManager::revoke_user`]): a password
    /// changed from the settings page. Returns how many sessions were ended.
    pub fn revoke_user_except(
        &self,
        username: &Username,
        keep: &SessionKey,
    ) -> Result<usize, StoreError> {
        let count = {
            let mut shards: Vec<_> = (0..self.shards.len()).map(|i| self.lock_shard(i)).collect();
            for cache in &mut shards {
                cache
                    .map
                    .retain(|key, c| &c.session.username != username || key == keep);
            }
            let deleted = self
                .store
                .delete_sessions_of_user_except(username, Some(keep))?;
            for key in &deleted {
                self.ends.session_ended(key);
            }
            deleted.len()
        };
        self.store.flush()?;
        Ok(count)
    }

    /// Ends every session of `username` at once (password change, account disabled or
    /// deleted). Returns how many sessions were ended.
    pub fn revoke_user(&self, username: &Username) -> Result<usize, StoreError> {
        let count = {
            let mut shards: Vec<_> = (0..self.shards.len()).map(|i| self.lock_shard(i)).collect();
            for cache in &mut shards {
                cache.map.retain(|_, c| &c.session.username != username);
            }
            self.ends.user_ended(username);
            self.store.delete_sessions_of_user(username)?
        };
        self.store.flush()?;
        Ok(count)
    }

    /// Closes the open tunnels of `username`'s sessions, and leaves the sessions alone (the
    /// account changed: a tunnel was judged, and given its identity headers, when it opened).
    pub fn end_tunnels_of_user(&self, username: &Username) {
        self.ends.user_ended(username);
    }

    /// Moves a live session to a fresh id (after a password change, for instance), keeping
    /// its data. The old id stops working in the same atomic store write. `None` if the old
    /// session is unknown or expired.
    pub fn rotate(&self, old: &SessionKey) -> Result<Option<(SessionId, Session)>, StoreError> {
        self.rotate_with(old, |_| {})
    }

    /// Moves a live session to a fresh id and applies `change` to the moved copy only: a
    /// privilege gained (a second factor, a password re-entered) is never held by the old id,
    /// which whoever planted it may know, not even for a moment. `None` if the old session is
    /// unknown or expired.
    pub fn rotate_with(
        &self,
        old: &SessionKey,
        change: impl FnOnce(&mut Session),
    ) -> Result<Option<(SessionId, Session)>, StoreError> {
        let now = self.clock.now();
        let id = SessionId::generate();
        let new_key = id.key();
        let session = {
            // Both shards stay locked from the read to the insert: a concurrent revocation of
            // the user cannot slip between and leave the new id cached.
            let (from, to) = (self.shard_index(old), self.shard_index(&new_key));
            let (mut first, mut second) = if from <= to {
                let a = self.lock_shard(from);
                (a, (from != to).then(|| self.lock_shard(to)))
            } else {
                let b = self.lock_shard(to);
                (self.lock_shard(from), Some(b))
            };
            let Some(entry) = self.load(&mut first, old, now)? else {
                return Ok(None);
            };
            let mut session = entry.session.clone();
            change(&mut session);
            session.key = new_key;
            session.last_seen = now.max(session.last_seen);
            self.store.replace_session(old, &session)?;
            first.map.remove(old);
            self.ends.session_moved(old, &new_key);
            let cache = second.as_deref_mut().unwrap_or(&mut first);
            cache.insert(
                CachedSession {
                    session: session.clone(),
                    stored_last_seen: session.last_seen,
                },
                now,
                &self.settings,
            );
            session
        };
        self.store.flush()?;
        Ok(Some((id, session)))
    }

    /// Changes a live session in place (cache and store). `None` if the session is unknown or
    /// expired. The change is on disk before this returns.
    pub fn update(
        &self,
        key: &SessionKey,
        change: impl FnOnce(&mut Session),
    ) -> Result<Option<Session>, StoreError> {
        let now = self.clock.now();
        let session = {
            let mut cache = self.lock(key);
            let Some(entry) = self.load(&mut cache, key, now)? else {
                return Ok(None);
            };
            let mut updated = entry.session.clone();
            change(&mut updated);
            updated.key = *key;
            self.store.put_session(&updated)?;
            entry.session = updated.clone();
            entry.stored_last_seen = updated.last_seen;
            updated
        };
        self.store.flush()?;
        Ok(Some(session))
    }

    /// Raises a live session to [`AuthLevel::TwoFactor`] in place, recording when the second
    /// factor was proven. `None` if the session is unknown or expired. A session raised for a
    /// user's request moves to a fresh id instead ([`Self::complete_second_factor`]).
    pub fn set_second_factor(
        &self,
        key: &SessionKey,
        at: Timestamp,
    ) -> Result<Option<Session>, StoreError> {
        self.update(key, |s| raise_to_second_factor(s, at))
    }

    /// Second factor proven: the session moves to a fresh id, and only the fresh id is raised
    /// (the old one never is, see [`Self::rotate_with`]).
    pub fn complete_second_factor(
        &self,
        key: &SessionKey,
        at: Timestamp,
    ) -> Result<Option<(SessionId, Session)>, StoreError> {
        self.rotate_with(key, |s| raise_to_second_factor(s, at))
    }

    /// Deletes every expired session from the store (and cache); returns how many. Sessions
    /// that are only ever abandoned are otherwise never looked up again, so run this now and
    /// then (e.g. hourly).
    ///
    /// A record that cannot be read is deleted too, with a warning: no request can be let
    /// through on it (its lookup fails closed), and it would otherwise stay for ever.
    pub fn purge_expired(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let scan = self.store.list_sessions()?;
        let mut purged = 0;
        for raw in scan.unreadable {
            tracing::warn!(
                record = %crate::store::key_for_log(&raw),
                "unreadable session record removed"
            );
            if let Ok(bytes) = <[u8; 32]>::try_from(raw.as_ref()) {
                let key = SessionKey::from_bytes(bytes);
                self.lock(&key).map.remove(&key);
                self.ends.session_ended(&key);
            }
            if self.store.delete_raw_session(&raw)? {
                purged += 1;
            }
        }
        let candidates: Vec<SessionKey> = scan
            .readable
            .into_iter()
            .filter(|s| s.is_expired(now, &self.settings))
            .map(|s| s.key)
            .collect();
        for key in candidates {
            let mut cache = self.lock(&key);
            // The cached copy may have a fresher last_seen than the disk.
            if let Some(c) = cache.map.get(&key) {
                if !c.session.is_expired(now, &self.settings) {
                    continue;
                }
                cache.map.remove(&key);
            }
            self.ends.session_ended(&key);
            if self.store.delete_session(&key)? {
                purged += 1;
            }
        }
        self.store.flush()?;
        Ok(purged)
    }

    /// A watch fired when `session` ends (see [`crate::auth::session_ends`]). Already fired if
    /// the session has ended since it was looked up, or cannot be read: what depends on it
    /// fails closed.
    pub fn watch_end(&self, session: &Session) -> SessionEndWatch {
        let watch = self.ends.watch(session.key, &session.username);
        let now = self.clock.now();
        let mut cache = self.lock(&session.key);
        if !matches!(self.load(&mut cache, &session.key, now), Ok(Some(_))) {
            watch.end();
        }
        watch
    }

    /// The watches on sessions' ends held right now.
    pub fn end_watches(&self) -> usize {
        self.ends.open_count()
    }

    /// Number of sessions currently held in memory (for metrics and tests).
    pub fn cached_len(&self) -> usize {
        (0..self.shards.len())
            .map(|i| self.lock_shard(i).map.len())
            .sum()
    }
}

/// What a proven second factor changes in a session.
fn raise_to_second_factor(session: &mut Session, at: Timestamp) {
    session.auth_level = AuthLevel::TwoFactor;
    session.second_factor_at = Some(at);
    session.challenge_started_at = None;
    session.challenge_failures = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const MIN: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    struct Fixture {
        dir: tempfile::TempDir,
        store: Arc<Store>,
        clock: ManualClock,
        mgr: SessionManager,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let clock = ManualClock::new(Timestamp(1_700_000_000_000));
        let mgr = SessionManager::new(
            store.clone(),
            Arc::new(clock.clone()),
            SessionSettings::default(),
        );
        Fixture {
            dir,
            store,
            clock,
            mgr,
        }
    }

    fn alice() -> Username {
        Username::parse("alice").unwrap()
    }

    // --- ids -----------------------------------------------------------------------------

    #[test]
    fn ids_are_fresh_and_round_trip() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        let v = a.cookie_value();
        assert_eq!(v.len(), ID_CHARS);
        assert_eq!(SessionId::parse(&v), Some(a.clone()));
        assert_eq!(SessionId::parse(&v).unwrap().key(), a.key());
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn rejects_malformed_cookie_values() {
        let good = SessionId::generate().cookie_value();
        let mut cases = vec![
            String::new(),
            good[..ID_CHARS - 1].to_string(),
            format!("{good}A"),
            format!("{good}="),
            good.replace(['-', '_'], "+"),
            format!(" {}", &good[1..]),
            format!("{}%", &good[1..]),
            // 43 characters but the last one carries non-zero padding bits.
            format!("{}B", &"A".repeat(ID_CHARS - 1)),
        ];
        // Standard (non-url) alphabet.
        cases.push(format!("{}+", &"A".repeat(ID_CHARS - 1)));
        cases.push(format!("{}/", &"A".repeat(ID_CHARS - 1)));
        for c in cases {
            if c == good {
                continue;
            }
            assert_eq!(SessionId::parse(&c), None, "{c:?}");
        }
    }

    #[test]
    fn session_id_debug_is_redacted() {
        let id = SessionId::generate();
        let shown = format!("{id:?}");
        assert_eq!(shown, "[redacted]");
        let (id, session) = fixture()
            .mgr
            .create(&alice(), AuthLevel::OneFactor, false)
            .unwrap();
        assert!(!format!("{session:?}").contains(&id.cookie_value()));
    }

    #[test]
    fn store_never_sees_the_session_id() {
        let f = fixture();
        let (id, _) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        f.store.flush().unwrap();
        let value = id.cookie_value();
        for entry in walk(f.dir.path()) {
            let bytes = std::fs::read(&entry).unwrap();
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "session id found in {entry:?}"
            );
        }
        assert!(f.store.get_session(&id.key()).unwrap().is_some());
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    // --- lifecycle ------------------------------------------------------------------------

    #[test]
    fn create_then_lookup() {
        let f = fixture();
        let (id, created) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        assert_eq!(created.expires_at, f.clock.now().plus(12 * HOUR));
        assert_eq!(created.second_factor_at, None);
        let found = f.mgr.lookup(&id.cookie_value()).unwrap().unwrap();
        assert_eq!(found.username, alice());
        assert_eq!(found.key, id.key());
        assert_eq!(
            f.mgr.lookup(&SessionId::generate().cookie_value()).unwrap(),
            None
        );
        assert_eq!(f.mgr.lookup("not a session").unwrap(), None);
    }

    #[test]
    fn two_factor_creation_records_the_time() {
        let f = fixture();
        let (_, s) = f.mgr.create(&alice(), AuthLevel::TwoFactor, false).unwrap();
        assert_eq!(s.second_factor_at, Some(f.clock.now()));
    }

    #[test]
    fn expires_after_inactivity() {
        let f = fixture();
        let (id, _) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        f.clock.advance(59 * MIN);
        assert!(f.mgr.lookup(&id.cookie_value()).unwrap().is_some());
        // The lookup above refreshed last_seen: another 59 minutes is fine...
        f.clock.advance(59 * MIN);
        assert!(f.mgr.lookup(&id.cookie_value()).unwrap().is_some());
        // ...a full hour of silence is not.
        f.clock.advance(HOUR);
        assert_eq!(f.mgr.lookup(&id.cookie_value()).unwrap(), None);
        assert_eq!(
            f.store.get_session(&id.key()).unwrap(),
            None,
            "expired session deleted"
        );
    }

    #[test]
    fn expires_at_absolute_limit_despite_activity() {
        let f = fixture();
        let (id, _) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        for _ in 0..23 {
            f.clock.advance(30 * MIN);
            assert!(f.mgr.lookup(&id.cookie_value()).unwrap().is_some());
        }
        f.clock.advance(30 * MIN);
        assert_eq!(f.mgr.lookup(&id.cookie_value()).unwrap(), None);
    }

    #[test]
    fn remember_me_ignores_inactivity_but_not_its_absolute_limit() {
        let f = fixture();
        let (id, s) = f.mgr.create(&alice(), AuthLevel::OneFactor, true).unwrap();
        assert_eq!(s.expires_at, f.clock.now().plus(30 * 24 * HOUR));
        f.clock.advance(10 * 24 * HOUR);
        assert!(f.mgr.lookup(&id.cookie_value()).unwrap().is_some());
        f.clock.advance(20 * 24 * HOUR);
        assert_eq!(f.mgr.lookup(&id.cookie_value()).unwrap(), None);
    }

    #[test]
    fn lowering_the_configured_lifetime_applies_to_existing_sessions() {
        let f = fixture();
        let (id, _) = f.mgr.create(&alice(), AuthLevel::OneFactor, true).unwrap();
        let shorter = SessionSettings {
            remember_me: 24 * HOUR,
            ..SessionSettings::default()
        };
        let mgr = SessionManager::new(f.store.clone(), Arc::new(f.clock.clone()), shorter);
        f.clock.advance(25 * HOUR);
        assert_eq!(mgr.lookup(&id.cookie_value()).unwrap(), None);
    }

    #[test]
    fn a_session_revoked_without_a_flush_is_gone_at_once() {
        let f = fixture();
        let (id, s) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        assert!(
            f.mgr.lookup(&id.cookie_value()).unwrap().is_some(),
            "cached"
        );
        assert!(f.mgr.revoke_unflushed(&s.key).unwrap());
        assert_eq!(f.mgr.lookup(&id.cookie_value()).unwrap(), None);
        assert_eq!(
            f.store.get_session(&s.key).unwrap(),
            None,
            "gone from the store"
        );
        assert!(!f.mgr.revoke_unflushed(&s.key).unwrap(), "already gone");
    }

    #[test]
    fn revoked_session_is_not_served_from_cache() {
        let f = fixture();
        let (id, s) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        assert!(f.mgr.lookup(&id.cookie_value()).unwrap().is_some());
        assert!(f.mgr.revoke(&s.key).unwrap());
        assert_eq!(f.mgr.lookup(&id.cookie_value()).unwrap(), None);
        assert_eq!(f.store.get_session(&s.key).unwrap(), None);
        assert!(!f.mgr.revoke(&s.key).unwrap());
    }

    #[test]
    fn rejects_revoked_session_under_concurrent_lookups() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let f = fixture();
        let mgr = Arc::new(f.mgr);
        let (id, s) = mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        let cookie = id.cookie_value();
        let revoked = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (mgr, cookie, revoked) = (mgr.clone(), cookie.clone(), revoked.clone());
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        let was_revoked = revoked.load(Ordering::SeqCst);
                        let found = mgr.lookup(&cookie).unwrap();
                        if was_revoked {
                            assert_eq!(found, None, "revoked session served");
                        }
                    }
                })
            })
            .collect();
        std::thread::yield_now();
        assert!(mgr.revoke(&s.key).unwrap());
        revoked.store(true, Ordering::SeqCst);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(mgr.lookup(&cookie).unwrap(), None);
    }

    #[test]
    fn revoke_user_ends_every_session_of_that_user_only() {
        let f = fixture();
        let bob = Username::parse("bob").unwrap();
        let (a1, _) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        let (a2, _) = f.mgr.create(&alice(), AuthLevel::TwoFactor, true).unwrap();
        let (b1, _) = f.mgr.create(&bob, AuthLevel::OneFactor, false).unwrap();
        assert!(f.mgr.lookup(&a1.cookie_value()).unwrap().is_some());
        assert_eq!(f.mgr.revoke_user(&alice()).unwrap(), 2);
        assert_eq!(f.mgr.lookup(&a1.cookie_value()).unwrap(), None);
        assert_eq!(f.mgr.lookup(&a2.cookie_value()).unwrap(), None);
        assert!(f.mgr.lookup(&b1.cookie_value()).unwrap().is_some());
    }

    #[test]
    fn revoke_user_except_spares_one_session_and_its_tunnels() {
        let f = fixture();
        let bob = Username::parse("bob").unwrap();
        let (a1, kept) = f.mgr.create(&alice(), AuthLevel::TwoFactor, false).unwrap();
        let (a2, other) = f.mgr.create(&alice(), AuthLevel::TwoFactor, false).unwrap();
        let (b1, _) = f.mgr.create(&bob, AuthLevel::OneFactor, false).unwrap();
        let kept_watch = f.mgr.watch_end(&kept);
        let other_watch = f.mgr.watch_end(&other);
        assert_eq!(f.mgr.revoke_user_except(&alice(), &kept.key).unwrap(), 1);
        assert!(f.mgr.lookup(&a1.cookie_value()).unwrap().is_some());
        assert_eq!(f.mgr.lookup(&a2.cookie_value()).unwrap(), None);
        assert!(f.mgr.lookup(&b1.cookie_value()).unwrap().is_some());
        assert!(other_watch.has_ended());
        assert!(!kept_watch.has_ended());
    }

    #[test]
    fn a_watch_taken_on_a_session_already_ended_has_fired() {
        let f = fixture();
        let (_, live) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        let (_, gone) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        // Looked up, then revoked before the watch is taken.
        assert!(f.mgr.revoke(&gone.key).unwrap());
        assert!(f.mgr.watch_end(&gone).has_ended());
        assert!(!f.mgr.watch_end(&live).has_ended());
    }

    #[test]
    fn an_expiry_found_at_a_lookup_fires_the_sessions_watches() {
        let f = fixture();
        let (id, session) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        let watch = f.mgr.watch_end(&session);
        f.clock.advance(Duration::from_secs(2 * 3600));
        assert!(!watch.has_ended(), "nothing has looked at the session yet");
        assert_eq!(f.mgr.lookup(&id.cookie_value()).unwrap(), None);
        assert!(watch.has_ended());
    }

    #[test]
    fn revocation_is_on_disk_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(Timestamp(1_700_000_000_000));
        let cookie;
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let mgr = SessionManager::new(store, Arc::new(clock.clone()), Default::default());
            let (id, s) = mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
            cookie = id.cookie_value();
            mgr.revoke(&s.key).unwrap();
        }
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mgr = SessionManager::new(store, Arc::new(clock), Default::default());
        assert_eq!(mgr.lookup(&cookie).unwrap(), None);
    }

    #[test]
    fn sessions_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(Timestamp(1_700_000_000_000));
        let cookie;
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let mgr = SessionManager::new(store, Arc::new(clock.clone()), Default::default());
            cookie = mgr
                .create(&alice(), AuthLevel::TwoFactor, false)
                .unwrap()
                .0
                .cookie_value();
        }
        clock.advance(10 * MIN);
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mgr = SessionManager::new(store, Arc::new(clock), Default::default());
        let s = mgr.lookup(&cookie).unwrap().unwrap();
        assert_eq!(s.auth_level, AuthLevel::TwoFactor);
        assert_eq!(s.username, alice());
    }

    #[test]
    fn lookups_write_last_seen_only_now_and_then() {
        let f = fixture();
        let (id, s) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        let created = s.last_seen;
        // Write interval with defaults: min(1h / 10, 60 s) = 60 s.
        assert_eq!(f.mgr.settings().last_seen_write_interval(), MIN);
        f.clock.advance(Duration::from_secs(30));
        let seen = f.mgr.lookup(&id.cookie_value()).unwrap().unwrap();
        assert_eq!(seen.last_seen, f.clock.now(), "memory is always fresh");
        assert_eq!(
            f.store.get_session(&s.key).unwrap().unwrap().last_seen,
            created,
            "disk not written yet"
        );
        f.clock.advance(Duration::from_secs(30));
        f.mgr.lookup(&id.cookie_value()).unwrap().unwrap();
        assert_eq!(
            f.store.get_session(&s.key).unwrap().unwrap().last_seen,
            f.clock.now(),
            "written once the stored value is a minute old"
        );
    }

    #[test]
    fn cached_lookups_do_not_read_the_store() {
        let f = fixture();
        let (id, s) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        // Corrupt the stored record behind the manager's back: a cached lookup must not notice.
        f.store.put_session_raw_for_test(&s.key, b"garbage");
        assert!(f.mgr.lookup(&id.cookie_value()).unwrap().is_some());
        // A manager with a cold cache does read it, and fails closed.
        let cold = SessionManager::new(
            f.store.clone(),
            Arc::new(f.clock.clone()),
            SessionSettings::default(),
        );
        assert!(cold.lookup(&id.cookie_value()).is_err());
    }

    #[test]
    fn cache_stays_bounded_and_evicted_sessions_still_work() {
        let f = fixture();
        let mgr = SessionManager::with_cache_capacity(
            f.store.clone(),
            Arc::new(f.clock.clone()),
            SessionSettings::default(),
            8,
        );
        let ids: Vec<SessionId> = (0..50)
            .map(|_| {
                f.clock.advance(Duration::from_millis(10));
                mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap().0
            })
            .collect();
        assert!(mgr.cached_len() <= 8, "{}", mgr.cached_len());
        for id in &ids {
            assert!(mgr.lookup(&id.cookie_value()).unwrap().is_some());
            assert!(mgr.cached_len() <= 8);
        }
    }

    #[test]
    fn sessions_spread_over_shards_and_cross_shard_changes_hold() {
        let f = fixture();
        let created: Vec<(SessionId, Session)> = (0..64)
            .map(|_| f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap())
            .collect();
        let used: std::collections::HashSet<usize> = created
            .iter()
            .map(|(_, s)| f.mgr.shard_index(&s.key))
            .collect();
        assert!(used.len() > 1, "64 sessions all in one shard");
        assert_eq!(f.mgr.cached_len(), 64);

        // Rotation moves sessions between shards: the old id is gone everywhere, the new works.
        let mut rotated = Vec::new();
        for (old_id, old) in &created[..32] {
            let (new_id, _) = f.mgr.rotate(&old.key).unwrap().unwrap();
            assert!(f.mgr.lookup(&old_id.cookie_value()).unwrap().is_none());
            assert!(f.mgr.lookup(&new_id.cookie_value()).unwrap().is_some());
            rotated.push(new_id);
        }
        assert_eq!(f.mgr.cached_len(), 64);

        // Ending the user's sessions clears every shard.
        assert_eq!(f.mgr.revoke_user(&alice()).unwrap(), 64);
        assert_eq!(f.mgr.cached_len(), 0);
        for id in rotated.iter().chain(created[32..].iter().map(|(id, _)| id)) {
            assert!(f.mgr.lookup(&id.cookie_value()).unwrap().is_none());
        }
    }

    #[test]
    fn rotations_and_revocations_running_together_leave_nothing_cached() {
        let f = fixture();
        let mgr = Arc::new(SessionManager::new(
            f.store.clone(),
            Arc::new(f.clock.clone()),
            SessionSettings::default(),
        ));
        let keys: Vec<SessionKey> = (0..200)
            .map(|_| {
                mgr.create(&alice(), AuthLevel::OneFactor, false)
                    .unwrap()
                    .1
                    .key
            })
            .collect();
        let rotating = {
            let mgr = mgr.clone();
            std::thread::spawn(move || {
                keys.iter()
                    .filter_map(|k| mgr.rotate(k).unwrap())
                    .map(|(id, _)| id)
                    .collect::<Vec<_>>()
            })
        };
        let revoked = mgr.revoke_user(&alice()).unwrap();
        let new_ids = rotating.join().unwrap();
        // Whatever the interleaving, a session rotated before the revocation was ended by it,
        // and one rotated after it found nothing to rotate.
        assert!(revoked >= 1);
        for id in &new_ids {
            assert!(
                mgr.lookup(&id.cookie_value()).unwrap().is_none(),
                "a session rotated around a revocation survived it"
            );
        }
        assert_eq!(mgr.cached_len(), 0);
    }

    #[test]
    fn rotate_invalidates_the_old_id_and_keeps_the_data() {
        let f = fixture();
        let (old_id, old) = f.mgr.create(&alice(), AuthLevel::OneFactor, true).unwrap();
        f.clock.advance(MIN);
        let (new_id, new) = f.mgr.rotate(&old.key).unwrap().unwrap();
        assert_ne!(new_id, old_id);
        assert_ne!(new.key, old.key);
        assert_eq!(new.username, old.username);
        assert_eq!(new.created_at, old.created_at);
        assert_eq!(new.expires_at, old.expires_at);
        assert_eq!(new.remember_me, old.remember_me);
        assert_eq!(f.mgr.lookup(&old_id.cookie_value()).unwrap(), None);
        assert_eq!(f.store.get_session(&old.key).unwrap(), None);
        assert!(f.mgr.lookup(&new_id.cookie_value()).unwrap().is_some());
        // Rotating a dead session gives nothing.
        assert!(f.mgr.rotate(&old.key).unwrap().is_none());
    }

    #[test]
    fn rejects_session_fixation_after_second_factor() {
        // After a second factor the session moves to a fresh id. An id planted before login
        // (and known to an attacker) must not carry the raised level.
        let f = fixture();
        let (planted, s) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        let (fresh, raised) = f
            .mgr
            .complete_second_factor(&s.key, f.clock.now())
            .unwrap()
            .unwrap();
        assert_eq!(raised.auth_level, AuthLevel::TwoFactor);
        assert_eq!(f.mgr.lookup(&planted.cookie_value()).unwrap(), None);
        assert_eq!(f.store.get_session(&s.key).unwrap(), None);
        let s = f.mgr.lookup(&fresh.cookie_value()).unwrap().unwrap();
        assert_eq!(s.auth_level, AuthLevel::TwoFactor);
        assert_eq!(s.second_factor_at, Some(f.clock.now()));
    }

    #[test]
    fn a_planted_id_is_never_raised_while_the_second_factor_completes() {
        // Another thread looks the old id up all along: it must find the session as it was
        // (one factor) or find nothing, never the raised level, even for a moment.
        let f = fixture();
        let mgr = Arc::new(SessionManager::new(
            f.store.clone(),
            Arc::new(f.clock.clone()),
            SessionSettings::default(),
        ));
        for _ in 0..40 {
            let (planted, s) = mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
            let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let watcher = {
                let (mgr, started, done) = (mgr.clone(), started.clone(), done.clone());
                let cookie = planted.cookie_value();
                std::thread::spawn(move || {
                    let mut raised_seen = 0;
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        let level = mgr.lookup(&cookie).unwrap().map(|s| s.auth_level);
                        raised_seen += usize::from(level == Some(AuthLevel::TwoFactor));
                        started.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    raised_seen
                })
            };
            while !started.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::yield_now();
            }
            mgr.complete_second_factor(&s.key, f.clock.now())
                .unwrap()
                .unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(watcher.join().unwrap(), 0, "the planted id was seen raised");
        }
    }

    #[test]
    fn set_second_factor_is_persisted() {
        let f = fixture();
        let (id, s) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        let at = f.clock.now();
        f.mgr.set_second_factor(&s.key, at).unwrap().unwrap();
        let cold = SessionManager::new(
            f.store.clone(),
            Arc::new(f.clock.clone()),
            SessionSettings::default(),
        );
        let s = cold.lookup(&id.cookie_value()).unwrap().unwrap();
        assert_eq!(s.auth_level, AuthLevel::TwoFactor);
        assert_eq!(s.second_factor_at, Some(at));
        assert!(
            f.mgr
                .set_second_factor(&SessionId::generate().key(), at)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn set_second_factor_refuses_an_expired_session() {
        let f = fixture();
        let (_, s) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        f.clock.advance(2 * HOUR);
        assert!(
            f.mgr
                .set_second_factor(&s.key, f.clock.now())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn purge_removes_unreadable_records_and_still_purges_the_others() {
        let f = fixture();
        let (live_id, live) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        let (_, old) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        let (id, damaged) = f.mgr.create(&alice(), AuthLevel::OneFactor, true).unwrap();
        f.store.put_session_raw_for_test(&damaged.key, b"{\"V1\":{");
        f.store
            .put_session_raw_for_test(&SessionKey::from_bytes([7; 32]), b"garbage");
        f.store
            .sessions_raw_insert_for_test(b"short key", b"garbage");
        // `old` idles past the hour; `live` is used meanwhile.
        f.clock.advance(Duration::from_secs(30 * 60));
        assert!(f.mgr.lookup(&live_id.cookie_value()).unwrap().is_some());
        f.clock.advance(Duration::from_secs(40 * 60));
        assert_eq!(f.mgr.purge_expired().unwrap(), 4);
        let left: Vec<SessionKey> = f
            .store
            .list_sessions()
            .unwrap()
            .readable
            .into_iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(left, [live.key]);
        assert!(f.store.list_sessions().unwrap().unreadable.is_empty());
        assert!(f.store.get_session(&old.key).unwrap().is_none());
        assert!(f.mgr.lookup(&id.cookie_value()).unwrap().is_none());
    }

    #[test]
    fn purge_removes_only_expired_sessions() {
        let f = fixture();
        let (_, short) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        let (_, long) = f.mgr.create(&alice(), AuthLevel::OneFactor, true).unwrap();
        let (active, _) = f.mgr.create(&alice(), AuthLevel::OneFactor, false).unwrap();
        f.clock.advance(50 * MIN);
        // Only in memory: the stored last_seen is stale, the cached one is not.
        f.mgr.lookup(&active.cookie_value()).unwrap().unwrap();
        f.clock.advance(20 * MIN);
        assert_eq!(f.mgr.purge_expired().unwrap(), 1);
        assert_eq!(f.store.get_session(&short.key).unwrap(), None);
        assert!(f.store.get_session(&long.key).unwrap().is_some());
        assert!(f.mgr.lookup(&active.cookie_value()).unwrap().is_some());
    }

    // --- configuration --------------------------------------------------------------------

    #[test]
    fn config_defaults() {
        let mut errs = ConfigErrors::default();
        let cfg = validate(&RawSessionConfig::default(), &mut errs);
        assert!(errs.is_empty());
        assert_eq!(cfg, SessionConfig::default());
        assert_eq!(cfg.cookie_name, "stepgate_session");
        assert_eq!(cfg.settings.absolute, 12 * HOUR);
        assert_eq!(cfg.settings.inactivity, HOUR);
        assert_eq!(cfg.settings.remember_me, 30 * 24 * HOUR);
    }

    #[test]
    fn config_values_are_read() {
        let mut errs = ConfigErrors::default();
        let raw = RawSessionConfig {
            absolute: Some("8h".into()),
            inactivity: Some("15m".into()),
            remember_me: Some("7d".into()),
            cookie_name: Some("sg".into()),
            cookie_domain: Some(".Example.COM".into()),
            domains: Vec::new(),
        };
        let cfg = validate(&raw, &mut errs);
        assert!(errs.is_empty(), "{errs}");
        assert_eq!(cfg.settings.absolute, 8 * HOUR);
        assert_eq!(cfg.settings.inactivity, 15 * MIN);
        assert_eq!(cfg.settings.remember_me, 7 * 24 * HOUR);
        assert_eq!(cfg.cookie_name, "sg");
        assert_eq!(
            cfg.domains,
            vec![CookieDomain {
                domain: "example.com".into(),
                portal_url: None
            }]
        );
    }

    #[test]
    fn config_reports_every_problem_with_its_key() {
        let mut errs = ConfigErrors::default();
        let raw = RawSessionConfig {
            absolute: Some("forever".into()),
            inactivity: Some("0s".into()),
            remember_me: Some("1 fortnight".into()),
            cookie_name: Some("bad name;".into()),
            cookie_domain: Some("exa mple.com".into()),
            domains: Vec::new(),
        };
        validate(&raw, &mut errs);
        let keys: Vec<&str> = errs.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "session.absolute",
                "session.inactivity",
                "session.remember_me",
                "session.cookie_name",
                "session.cookie_domain"
            ],
            "{errs}"
        );
    }

    #[test]
    fn config_rejects_inactivity_longer_than_absolute_and_host_prefix_with_domain() {
        let mut errs = ConfigErrors::default();
        let raw = RawSessionConfig {
            absolute: Some("1h".into()),
            inactivity: Some("2h".into()),
            cookie_name: Some("__Host-sg".into()),
            cookie_domain: Some("example.com".into()),
            ..Default::default()
        };
        validate(&raw, &mut errs);
        let keys: Vec<&str> = errs.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["session.inactivity", "session.cookie_domain"]);
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let parsed: Result<RawSessionConfig, _> =
            serde_json::from_str(r#"{"absolute": "1h", "cookie_secure": true}"#);
        assert!(parsed.is_err());
    }
}
