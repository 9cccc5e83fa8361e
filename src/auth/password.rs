//! Passwords: NFKC-normalised secrets, a length policy, and argon2id hashing that runs on tokio's
//! blocking pool behind a semaphore, so logins never stall the workers that proxy traffic.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`): the parameters travel with
//! the hash, so changing the configured cost never locks anyone out.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::phc;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use super::hash_memory::MemoryPool;
use crate::config::{ConfigErrors, key_join};

/// Largest argon2 memory cost accepted, in KiB (1 GiB), from configuration or from a stored hash.
/// A stored hash asking for more is refused rather than allowed to exhaust memory.
pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// Largest argon2 iteration count accepted, from configuration or from a stored hash.
pub const MAX_ITERATIONS: u32 = 64;
/// Largest argon2 parallelism accepted, from configuration or from a stored hash.
pub const MAX_PARALLELISM: u32 = 64;
/// `password.max_length` may not be set below this: long passphrases must always fit.
pub const MIN_MAX_LENGTH: usize = 128;
/// `password.max_length` may not be set above this (characters), to bound the work per attempt.
pub const MAX_MAX_LENGTH: usize = 4096;
/// Upper bound for `password.max_concurrent_hashes`.
pub const MAX_CONCURRENT_HASHES: usize = 1024;

/// Verified against when the user is unknown or the stored hash is unusable; never accepted.
const DUMMY_PASSWORD: &str = "stepgate dummy password for unknown users";

/// Everything that can go wrong with a password or a password hash. No variant carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password is too short: at least {min} characters are required")]
    TooShort { min: usize },
    #[error("password is too long: at most {max} characters are allowed")]
    TooLong { max: usize },
    #[error("invalid password hashing parameters: {0}")]
    InvalidParams(String),
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("not a valid argon2 PHC password hash")]
    InvalidHash,
}

/// A password as typed, normalised to Unicode NFKC so that visually equivalent spellings (fullwidth
/// letters, ligatures, composed or decomposed accents) hash the same. Never truncated.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Normalises `raw` to NFKC. Any Unicode is allowed; length rules live in [`PasswordPolicy`].
    pub fn new(raw: String) -> Self {
        Password(raw.nfkc().collect())
    }

    /// Number of Unicode scalar values after normalisation (what [`PasswordPolicy`] counts).
    pub fn char_count(&self) -> usize {
        self.0.chars().count()
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A password hash as a PHC string, e.g. `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a string without checking it. [`PasswordHasher::verify`] still parses it and treats an
    /// invalid one as a wrong password.
    pub fn new_unchecked(phc: String) -> Self {
        PasswordHash(phc)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts an argon2 (`argon2id`, `argon2i`, `argon2d`) PHC string with salt and hash output whose
    /// parameters are valid for argon2 and within [`MAX_MEMORY_KIB`], [`MAX_ITERATIONS`] and
    /// [`MAX_PARALLELISM`].
    pub fn parse(phc: &str) -> Result<Self, PasswordError> {
        decode(phc)?;
        Ok(PasswordHash(phc.to_owned()))
    }

    /// True when this hash was not made as argon2id v19 with exactly `params` (or cannot be parsed),
    /// i.e. when it should be replaced after the next successful login.
    pub fn needs_rehash(&self, params: HashParams) -> bool {
        let Ok(parsed) = decode(&self.0) else {
            return true;
        };
        let Ok(stored) = Params::try_from(&parsed) else {
            return true;
        };
        parsed.algorithm.as_str() != Algorithm::Argon2id.as_str()
            || parsed.version != Some(Version::V0x13.into())
            || stored.m_cost() != params.m_kib
            || stored.t_cost() != params.t
            || stored.p_cost() != params.p
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Parses and bounds-checks a PHC string; see [`PasswordHash::parse`].
fn decode(s: &str) -> Result<phc::PasswordHash, PasswordError> {
    let parsed = phc::PasswordHash::new(s).map_err(|_| PasswordError::InvalidHash)?;
    parsed
        .algorithm
        .as_str()
        .parse::<Algorithm>()
        .map_err(|_| PasswordError::InvalidHash)?;
    if let Some(version) = parsed.version {
        Version::try_from(version).map_err(|_| PasswordError::InvalidHash)?;
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(PasswordError::InvalidHash);
    }
    let params = Params::try_from(&parsed).map_err(|_| PasswordError::InvalidHash)?;
    if params.m_cost() > MAX_MEMORY_KIB
        || params.t_cost() > MAX_ITERATIONS
        || params.p_cost() > MAX_PARALLELISM
    {
        return Err(PasswordError::InvalidHash);
    }
    Ok(parsed)
}

/// Argon2id cost parameters for new hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory cost in KiB.
    pub m_kib: u32,
    /// Iterations (time cost).
    pub t: u32,
    /// Lanes (parallelism).
    pub p: u32,
}

impl Default for HashParams {
    /// 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        HashParams {
            m_kib: 19_456,
            t: 2,
            p: 1,
        }
    }
}

impl HashParams {
    fn to_argon2(self) -> Result<Params, PasswordError> {
        if self.m_kib > MAX_MEMORY_KIB {
            return Err(PasswordError::InvalidParams(format!(
                "memory cost {} KiB exceeds {MAX_MEMORY_KIB} KiB",
                self.m_kib
            )));
        }
        if self.t > MAX_ITERATIONS {
            return Err(PasswordError::InvalidParams(format!(
                "{} iterations exceed {MAX_ITERATIONS}",
                self.t
            )));
        }
        if self.p > MAX_PARALLELISM {
            return Err(PasswordError::InvalidParams(format!(
                "parallelism {} exceeds {MAX_PARALLELISM}",
                self.p
            )));
        }
        Params::new(self.m_kib, self.t, self.p, None)
            .map_err(|e| PasswordError::InvalidParams(e.to_string()))
    }
}

/// Length rules for new passwords, counted in characters after NFKC normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub max_length: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_length: 8,
            max_length: 1024,
        }
    }
}

impl PasswordPolicy {
    /// Checks the length of a new password. A password over the limit is refused, never truncated.
    pub fn check(&self, password: &Password) -> Result<(), PasswordError> {
        let chars = password.char_count();
        if chars < self.min_length {
            return Err(PasswordError::TooShort {
                min: self.min_length,
            });
        }
        if chars > self.max_length {
            return Err(PasswordError::TooLong {
                max: self.max_length,
            });
        }
        Ok(())
    }
}

/// Hashes `password` as argon2id v19 with `params` and a fresh random salt from the operating
/// system's CSPRNG, on the calling thread. For the CLI (`stepgate hash-password`) and startup; request
/// handlers use [`PasswordHasher::hash`]. Does not apply a [`PasswordPolicy`].
pub fn hash_blocking(
    params: HashParams,
    password: &Password,
) -> Result<PasswordHash, PasswordError> {
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.to_argon2()?);
    let hash: phc::PasswordHash = argon2
        .hash_password(password.as_bytes())
        .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    Ok(PasswordHash(hash.to_string()))
}

/// Hashes like [`hash_blocking`], with working memory from `pool`.
fn hash_pooled(
    params: HashParams,
    password: &Password,
    pool: &MemoryPool,
) -> Result<PasswordHash, PasswordError> {
    let failed = |e: &dyn fmt::Display| PasswordError::Hashing(e.to_string());
    let params = params.to_argon2()?;
    let salt = argon2::password_hash::try_generate_salt().map_err(|e| failed(&e))?;
    let mut out = Zeroizing::new([0u8; Params::DEFAULT_OUTPUT_LEN]);
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    argon2
        .hash_password_into_with_memory(
            password.as_bytes(),
            &salt,
            &mut out[..],
            pool.lease(params.block_count()).blocks(),
        )
        .map_err(|e| failed(&e))?;
    let hash = phc::PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: phc::ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(phc::Salt::new(&salt).map_err(|e| failed(&e))?),
        hash: Some(phc::Output::new(&out[..]).map_err(|e| failed(&e))?),
    };
    Ok(PasswordHash(hash.to_string()))
}

/// Verifies with the algorithm, version and parameters recorded in `hash`, with working memory
/// from `pool`; the outputs are compared in constant time.
fn verify_pooled(password: &Password, hash: &phc::PasswordHash, pool: &MemoryPool) -> bool {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(hash) else {
        return false;
    };
    let Ok(algorithm) = hash.algorithm.as_str().parse::<Algorithm>() else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    let computed = Argon2::new(algorithm, version, params.clone()).hash_password_into_with_memory(
        password.as_bytes(),
        salt.as_ref(),
        &mut out[..],
        pool.lease(params.block_count()).blocks(),
    );
    computed.is_ok() && bool::from(expected.as_bytes().ct_eq(&out[..]))
}

/// The default for `password.max_concurrent_hashes`: one less than the number of CPUs (at
/// least one), so that logins never take every CPU from the traffic being proxied.
pub fn default_max_concurrent() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    cpus.saturating_sub(1).max(1)
}

/// Counters of the hashing work done through one [`PasswordHasher`] (and its clones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HasherStats {
    /// Hash or verify computations running right now.
    pub in_flight: usize,
    /// Most computations ever seen running at once; never above `max_concurrent`.
    pub peak_in_flight: usize,
    /// Computations started so far (each verify counts once, unknown users included).
    pub started: usize,
}

#[derive(Default)]
struct Counters {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    started: AtomicUsize,
}

/// Marks one computation as running for as long as it lives.
struct Running<'a>(&'a Counters);

impl<'a> Running<'a> {
    fn start(counters: &'a Counters) -> Self {
        counters.started.fetch_add(1, Ordering::SeqCst);
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.peak.fetch_max(now, Ordering::SeqCst);
        Running(counters)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Inner {
    params: HashParams,
    max_concurrent: usize,
    permits: Arc<Semaphore>,
    /// Made with `params` at construction; stands in for an unknown user's hash.
    dummy: phc::PasswordHash,
    counters: Counters,
    /// Working memory, at most one buffer per permit.
    memory: MemoryPool,
}

/// Hashes and verifies passwords on tokio's blocking pool, at most `max_concurrent` at a time.
/// Cheap to clone; clones share the limit.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.inner.params)
            .field("max_concurrent", &self.inner.max_concurrent)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Checks `params`, then computes the dummy hash for unknown users on the calling thread (one
    /// full-cost hash: call at startup, or from `spawn_blocking`).
    pub fn new(params: HashParams, max_concurrent: usize) -> Result<Self, PasswordError> {
        if max_concurrent == 0 || max_concurrent > MAX_CONCURRENT_HASHES {
            return Err(PasswordError::InvalidParams(format!(
                "max_concurrent must be between 1 and {MAX_CONCURRENT_HASHES}, got {max_concurrent}"
            )));
        }
        let memory = MemoryPool::new(params.to_argon2()?.block_count());
        let dummy = hash_pooled(params, &Password::new(DUMMY_PASSWORD.to_owned()), &memory)?;
        let dummy = decode(dummy.as_str())?;
        // Nothing is kept from startup: an idle gateway holds no hashing memory.
        memory.clear();
        Ok(PasswordHasher {
            inner: Arc::new(Inner {
                params,
                max_concurrent,
                permits: Arc::new(Semaphore::new(max_concurrent)),
                dummy,
                counters: Counters::default(),
                memory,
            }),
        })
    }

    pub fn params(&self) -> HashParams {
        self.inner.params
    }

    /// Frees the hashing memory kept for reuse if no computation started since the previous
    /// call; returns the number of buffers freed. Call it periodically (the server does).
    pub fn release_idle_memory(&self) -> usize {
        self.inner.memory.release_idle()
    }

    /// Buffers of working memory kept for the next computations.
    pub fn idle_memory_buffers(&self) -> usize {
        self.inner.memory.idle_buffers()
    }

    pub fn stats(&self) -> HasherStats {
        let c = &self.inner.counters;
        HasherStats {
            in_flight: c.in_flight.load(Ordering::SeqCst),
            peak_in_flight: c.peak.load(Ordering::SeqCst),
            started: c.started.load(Ordering::SeqCst),
        }
    }

    /// Hashes with the configured parameters and a fresh random salt. Does not apply a
    /// [`PasswordPolicy`]; check it first when the password is new.
    pub async fn hash(&self, password: Password) -> Result<PasswordHash, PasswordError> {
        let params = self.inner.params;
        self.run_limited(move |inner| hash_pooled(params, &password, &inner.memory))
            .await?
    }

    /// Verifies; when `hash` is None (unknown user) verifies against a dummy hash made with the same
    /// params at construction so an unknown user costs the same time as a wrong password. Always false
    /// then. A stored hash that does not parse is handled the same way (and logged, without its value).
    pub async fn verify(&self, password: Password, hash: Option<&PasswordHash>) -> bool {
        let target = match hash.map(|h| decode(h.as_str())) {
            None => None,
            Some(Ok(parsed)) => Some(parsed),
            Some(Err(_)) => {
                tracing::warn!(
                    "stored password hash is not a usable argon2 PHC string; login refused"
                );
                None
            }
        };
        let outcome = self
            .run_limited(move |inner| match &target {
                Some(stored) => verify_pooled(&password, stored, &inner.memory),
                None => {
                    // Spend the same work as a real check, then refuse whatever the outcome.
                    std::hint::black_box(verify_pooled(&password, &inner.dummy, &inner.memory));
                    false
                }
            })
            .await;
        match outcome {
            Ok(matches) => matches,
            Err(e) => {
                tracing::warn!(error = %e, "password verification failed; login refused");
                false
            }
        }
    }

    /// Runs `work` on the blocking pool once a permit is free. The permit moves into the blocking
    /// task, so if the caller is cancelled (client gone) the slot stays taken until the work ends:
    /// the bound holds for CPU time, not just for waiting callers.
    async fn run_limited<T, F>(&self, work: F) -> Result<T, PasswordError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> T + Send + 'static,
    {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Hashing("hashing limiter closed".to_owned()))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _running = Running::start(&inner.counters);
            work(&inner)
        })
        .await
        .map_err(|e| {
            let why = if e.is_panic() {
                "panicked"
            } else {
                "was cancelled"
            };
            PasswordError::Hashing(format!("hashing task {why}"))
        })
    }
}

/// The `[password]` configuration section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassword {
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub argon2_memory_kib: Option<u32>,
    pub argon2_iterations: Option<u32>,
    pub argon2_parallelism: Option<u32>,
    pub max_concurrent_hashes: Option<usize>,
}

/// The validated `[password]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordSettings {
    pub policy: PasswordPolicy,
    pub params: HashParams,
    pub max_concurrent_hashes: usize,
}

impl PasswordSettings {
    /// Builds the hasher these settings describe (computes the dummy hash: startup only).
    pub fn hasher(&self) -> Result<PasswordHasher, PasswordError> {
        PasswordHasher::new(self.params, self.max_concurrent_hashes)
    }
}

/// Validates the `[password]` section, recording every problem under `password.<key>`. Values that
/// are wrong are replaced by their defaults in the result, which is only meaningful when `errors`
/// stayed empty.
pub fn validate(raw: &RawPassword, errors: &mut ConfigErrors) -> PasswordSettings {
    const SECTION: &str = "password";
    let key = |name: &str| key_join(SECTION, name);
    let default_policy = PasswordPolicy::default();
    let default_params = HashParams::default();

    let mut min_length = default_policy.min_length;
    if let Some(v) = raw.min_length {
        if v < 1 {
            errors.push(key("min_length"), "must be at least 1");
        } else {
            min_length = v;
        }
    }

    let mut max_length = default_policy.max_length;
    if let Some(v) = raw.max_length {
        if v < MIN_MAX_LENGTH {
            errors.push(
                key("max_length"),
                format!("must be at least {MIN_MAX_LENGTH} so that long passphrases fit, got {v}"),
            );
        } else if v > MAX_MAX_LENGTH {
            errors.push(
                key("max_length"),
                format!("must be at most {MAX_MAX_LENGTH}, got {v}"),
            );
        } else {
            max_length = v;
        }
    }

    if min_length > max_length {
        errors.push(
            key("min_length"),
            format!("{min_length} is greater than password.max_length ({max_length})"),
        );
        min_length = default_policy.min_length;
    }

    let mut t = default_params.t;
    if let Some(v) = raw.argon2_iterations {
        if !(1..=MAX_ITERATIONS).contains(&v) {
            errors.push(
                key("argon2_iterations"),
                format!("must be between 1 and {MAX_ITERATIONS}, got {v}"),
            );
        } else {
            t = v;
        }
    }

    let mut p = default_params.p;
    if let Some(v) = raw.argon2_parallelism {
        if !(1..=MAX_PARALLELISM).contains(&v) {
            errors.push(
                key("argon2_parallelism"),
                format!("must be between 1 and {MAX_PARALLELISM}, got {v}"),
            );
        } else {
            p = v;
        }
    }

    let mut m_kib = default_params.m_kib;
    if let Some(v) = raw.argon2_memory_kib {
        // `p` is at most MAX_PARALLELISM here, so this cannot overflow.
        let least = 8 * p;
        if v < least {
            errors.push(
                key("argon2_memory_kib"),
                format!("must be at least 8 x argon2_parallelism = {least}, got {v}"),
            );
        } else if v > MAX_MEMORY_KIB {
            errors.push(
                key("argon2_memory_kib"),
                format!("must be at most {MAX_MEMORY_KIB} (1 GiB), got {v}"),
            );
        } else {
            m_kib = v;
        }
    }

    let mut max_concurrent_hashes = default_max_concurrent();
    if let Some(v) = raw.max_concurrent_hashes {
        if !(1..=MAX_CONCURRENT_HASHES).contains(&v) {
            errors.push(
                key("max_concurrent_hashes"),
                format!("must be between 1 and {MAX_CONCURRENT_HASHES}, got {v}"),
            );
        } else {
            max_concurrent_hashes = v;
        }
    }

    PasswordSettings {
        policy: PasswordPolicy {
            min_length,
            max_length,
        },
        params: HashParams { m_kib, t, p },
        max_concurrent_hashes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters for tests where the exact cost does not matter.
    const FAST: HashParams = HashParams {
        m_kib: 256,
        t: 1,
        p: 1,
    };

    fn pw(s: &str) -> Password {
        Password::new(s.to_owned())
    }

    fn fast_hasher(max_concurrent: usize) -> PasswordHasher {
        PasswordHasher::new(FAST, max_concurrent).expect("valid test params")
    }

    #[tokio::test]
    async fn hash_then_verify_roundtrip() {
        let hasher = fast_hasher(2);
        let hash = hasher.hash(pw("correct horse battery")).await.unwrap();
        assert!(
            hasher
                .verify(pw("correct horse battery"), Some(&hash))
                .await
        );
    }

    #[tokio::test]
    async fn rejects_wrong_password() {
        let hasher = fast_hasher(2);
        let hash = hasher.hash(pw("correct horse battery")).await.unwrap();
        assert!(
            !hasher
                .verify(pw("correct horse battery!"), Some(&hash))
                .await
        );
        assert!(!hasher.verify(pw(""), Some(&hash)).await);
    }

    #[tokio::test]
    async fn same_password_gets_a_fresh_salt_each_time() {
        let hasher = fast_hasher(2);
        let a = hasher.hash(pw("correct horse battery")).await.unwrap();
        let b = hasher.hash(pw("correct horse battery")).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn unknown_user_is_refused_after_the_same_work() {
        let hasher = fast_hasher(2);
        let before = hasher.stats().started;
        assert!(!hasher.verify(pw("anything at all"), None).await);
        assert_eq!(
            hasher.stats().started,
            before + 1,
            "no argon2 work was done"
        );
    }

    #[tokio::test]
    async fn rejects_dummy_password_for_unknown_user() {
        let hasher = fast_hasher(2);
        assert!(!hasher.verify(pw(DUMMY_PASSWORD), None).await);
    }

    #[tokio::test]
    async fn rejects_login_against_corrupt_stored_hash() {
        let hasher = fast_hasher(2);
        let before = hasher.stats().started;
        for stored in [
            "",
            "garbage",
            "$argon2id$v=19$m=256,t=1,p=1$",
            DUMMY_PASSWORD,
        ] {
            let hash = PasswordHash::new_unchecked(stored.to_owned());
            assert!(!hasher.verify(pw(DUMMY_PASSWORD), Some(&hash)).await);
        }
        assert_eq!(hasher.stats().started, before + 4);
    }

    #[tokio::test]
    async fn fullwidth_and_ascii_spellings_verify_the_same() {
        let hasher = fast_hasher(2);
        let hash = hasher.hash(pw("ｐａｓｓｗｏｒｄ")).await.unwrap();
        assert!(hasher.verify(pw("password"), Some(&hash)).await);
        let hash = hasher.hash(pw("password")).await.unwrap();
        assert!(hasher.verify(pw("ｐａｓｓｗｏｒｄ"), Some(&hash)).await);
        // Composed and decomposed accents are the same password too.
        let hash = hasher.hash(pw("caf\u{e9} cr\u{e8}me")).await.unwrap();
        assert!(
            hasher
                .verify(pw("cafe\u{301} cre\u{300}me"), Some(&hash))
                .await
        );
    }

    #[tokio::test]
    async fn any_unicode_is_accepted() {
        let hasher = fast_hasher(2);
        let phrase = "пароль 密码 🔐 كلمة";
        let hash = hasher.hash(pw(phrase)).await.unwrap();
        assert!(hasher.verify(pw(phrase), Some(&hash)).await);
        assert!(!hasher.verify(pw("пароль 密码 🔓 كلمة"), Some(&hash)).await);
    }

    #[tokio::test]
    async fn rejects_password_differing_only_at_char_200() {
        let hasher = fast_hasher(2);
        let long: String = "a".repeat(199) + "b" + &"c".repeat(100);
        let other: String = "a".repeat(199) + "X" + &"c".repeat(100);
        assert_eq!(long.chars().count(), 300);
        let hash = hasher.hash(pw(&long)).await.unwrap();
        assert!(hasher.verify(pw(&long), Some(&hash)).await);
        assert!(!hasher.verify(pw(&other), Some(&hash)).await);
        // A prefix (what a truncating implementation would compare) does not verify either.
        assert!(!hasher.verify(pw(&long[..128]), Some(&hash)).await);
    }

    #[test]
    fn policy_refuses_too_short_and_too_long() {
        let policy = PasswordPolicy::default();
        assert_eq!(
            policy.check(&pw("seven77")),
            Err(PasswordError::TooShort { min: 8 })
        );
        assert_eq!(policy.check(&pw("eight888")), Ok(()));
        assert_eq!(policy.check(&pw(&"x".repeat(1024))), Ok(()));
        assert_eq!(
            policy.check(&pw(&"x".repeat(1025))),
            Err(PasswordError::TooLong { max: 1024 })
        );
    }

    #[test]
    fn policy_counts_characters_after_normalisation() {
        let policy = PasswordPolicy::default();
        // Eight two-byte characters: long enough although it is 16 bytes, not because of it.
        assert_eq!(policy.check(&pw(&"é".repeat(8))), Ok(()));
        assert_eq!(
            policy.check(&pw(&"é".repeat(7))),
            Err(PasswordError::TooShort { min: 8 })
        );
        // 1024 four-byte characters fit the 1024-character limit.
        assert_eq!(policy.check(&pw(&"🔐".repeat(1024))), Ok(()));
        // The ligature "ﬁ" is two characters after NFKC.
        assert_eq!(pw("ﬁﬁﬁﬁ").char_count(), 8);
        assert_eq!(policy.check(&pw("ﬁﬁﬁﬁ")), Ok(()));
    }

    #[test]
    fn default_hash_is_argon2id_phc_with_documented_params() {
        let hash = hash_blocking(HashParams::default(), &pw("correct horse battery")).unwrap();
        assert!(
            hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "unexpected PHC prefix"
        );
        assert_eq!(PasswordHash::parse(hash.as_str()), Ok(hash.clone()));
        assert!(!hash.needs_rehash(HashParams::default()));
        assert!(hash.needs_rehash(FAST));
    }

    #[tokio::test]
    async fn verifies_hashes_made_with_other_params() {
        let old = hash_blocking(
            HashParams {
                m_kib: 128,
                t: 3,
                p: 2,
            },
            &pw("correct horse battery"),
        )
        .unwrap();
        assert!(old.as_str().starts_with("$argon2id$v=19$m=128,t=3,p=2$"));
        let hasher = PasswordHasher::new(
            HashParams {
                m_kib: 512,
                t: 2,
                p: 1,
            },
            1,
        )
        .unwrap();
        assert!(hasher.verify(pw("correct horse battery"), Some(&old)).await);
        assert!(!hasher.verify(pw("correct horse batter"), Some(&old)).await);
    }

    #[test]
    fn parse_refuses_non_argon2_and_malformed_hashes() {
        let good = hash_blocking(FAST, &pw("correct horse battery")).unwrap();
        let salt_and_hash = good
            .as_str()
            .strip_prefix("$argon2id$v=19$m=256,t=1,p=1$")
            .unwrap();
        let bad = [
            String::new(),
            "plaintext password".to_owned(),
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".to_owned(),
            format!("$pbkdf2-sha256$i=1000${salt_and_hash}"),
            format!("$scrypt$v=19$m=256,t=1,p=1${salt_and_hash}"),
            // Unknown argon2 version.
            format!("$argon2id$v=42$m=256,t=1,p=1${salt_and_hash}"),
            // Salt without the hash output.
            "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHRzYWx0".to_owned(),
            // Memory below the argon2 minimum.
            format!("$argon2id$v=19$m=4,t=1,p=1${salt_and_hash}"),
            // Unknown parameter.
            format!("$argon2id$v=19$m=256,t=1,p=1,x=3${salt_and_hash}"),
            format!("{}$extra", good.as_str()),
        ];
        for s in &bad {
            assert_eq!(
                PasswordHash::parse(s),
                Err(PasswordError::InvalidHash),
                "{s}"
            );
        }
        // Other argon2 variants are accepted: the parameters and variant live in the string.
        let argon2i = good.as_str().replacen("$argon2id$", "$argon2i$", 1);
        assert!(PasswordHash::parse(&argon2i).is_ok());
    }

    #[tokio::test]
    async fn rejects_stored_hash_with_memory_exhausting_cost() {
        let good = hash_blocking(FAST, &pw("correct horse battery")).unwrap();
        let huge = good.as_str().replacen("m=256,", "m=4000000000,", 1);
        assert_eq!(PasswordHash::parse(&huge), Err(PasswordError::InvalidHash));
        let many_passes = good.as_str().replacen("t=1,", "t=100000,", 1);
        assert_eq!(
            PasswordHash::parse(&many_passes),
            Err(PasswordError::InvalidHash)
        );
        // Verify refuses it without attempting the 4 TB computation.
        let hasher = fast_hasher(1);
        let stored = PasswordHash::new_unchecked(huge);
        assert!(
            !hasher
                .verify(pw("correct horse battery"), Some(&stored))
                .await
        );
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let password = pw("hunter2hunter2");
        assert_eq!(format!("{password:?}"), "[redacted]");
        let hash = hash_blocking(FAST, &password).unwrap();
        assert_eq!(format!("{hash:?}"), "[redacted]");
        let hasher = fast_hasher(1);
        let shown = format!("{hasher:?} {:?}", Some(&hash));
        assert!(!shown.contains("argon2id"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let err = PasswordError::Hashing("x".to_owned());
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn concurrency_limit_of_one_still_completes_many_hashes() {
        let hasher = fast_hasher(1);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(pw(&format!("password {i}"))).await })
            })
            .collect();
        let mut hashes = Vec::new();
        for task in tasks {
            hashes.push(task.await.unwrap().unwrap());
        }
        for (i, hash) in hashes.iter().enumerate() {
            assert!(
                hasher
                    .verify(pw(&format!("password {i}")), Some(hash))
                    .await
            );
        }
        let stats = hasher.stats();
        assert_eq!(stats.started, 16);
        assert_eq!(stats.peak_in_flight, 1);
        assert_eq!(stats.in_flight, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrency_never_exceeds_the_limit() {
        let hasher = fast_hasher(2);
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.verify(pw(&format!("guess {i}")), None).await })
            })
            .collect();
        for task in tasks {
            assert!(!task.await.unwrap());
        }
        let stats = hasher.stats();
        assert_eq!(stats.started, 12);
        assert!(stats.peak_in_flight <= 2, "peak {}", stats.peak_in_flight);
    }

    #[test]
    fn hasher_refuses_invalid_construction() {
        assert!(matches!(
            PasswordHasher::new(FAST, 0),
            Err(PasswordError::InvalidParams(_))
        ));
        assert!(matches!(
            PasswordHasher::new(
                HashParams {
                    m_kib: 8,
                    t: 1,
                    p: 2
                },
                1
            ),
            Err(PasswordError::InvalidParams(_))
        ));
        assert!(matches!(
            hash_blocking(
                HashParams {
                    m_kib: 256,
                    t: 0,
                    p: 1
                },
                &pw("x")
            ),
            Err(PasswordError::InvalidParams(_))
        ));
    }

    fn raw_from_toml(toml: &str) -> Result<RawPassword, String> {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(toml))
            .focus("password")
            .extract()
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn params_come_from_config() {
        let raw = raw_from_toml(
            "[password]\nmin_length = 12\nmax_length = 256\nargon2_memory_kib = 256\n\
             argon2_iterations = 1\nargon2_parallelism = 1\nmax_concurrent_hashes = 3\n",
        )
        .unwrap();
        let mut errors = ConfigErrors::default();
        let settings = validate(&raw, &mut errors);
        assert!(errors.is_empty(), "{errors}");
        assert_eq!(
            settings,
            PasswordSettings {
                policy: PasswordPolicy {
                    min_length: 12,
                    max_length: 256
                },
                params: FAST,
                max_concurrent_hashes: 3,
            }
        );
        let hasher = settings.hasher().unwrap();
        let hash = hasher.hash(pw("correct horse battery")).await.unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=256,t=1,p=1$"));
        assert_eq!(
            settings.policy.check(&pw("elevenchars")),
            Err(PasswordError::TooShort { min: 12 })
        );
    }

    #[test]
    fn empty_config_section_gives_defaults() {
        let raw = raw_from_toml("[password]\n").unwrap();
        let mut errors = ConfigErrors::default();
        let settings = validate(&raw, &mut errors);
        assert!(errors.is_empty(), "{errors}");
        assert_eq!(settings.policy, PasswordPolicy::default());
        assert_eq!(settings.params, HashParams::default());
        assert_eq!(settings.max_concurrent_hashes, default_max_concurrent());
        assert!(settings.max_concurrent_hashes >= 1);
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let err = raw_from_toml("[password]\nargon2_memory = 65536\n").unwrap_err();
        assert!(err.contains("argon2_memory"), "{err}");
    }

    #[test]
    fn config_reports_every_nonsense_value_by_key() {
        let raw = RawPassword {
            min_length: Some(0),
            max_length: Some(64),
            argon2_memory_kib: Some(15),
            argon2_iterations: Some(0),
            argon2_parallelism: Some(2),
            max_concurrent_hashes: Some(0),
        };
        let mut errors = ConfigErrors::default();
        validate(&raw, &mut errors);
        let keys: Vec<&str> = errors.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "password.min_length",
                "password.max_length",
                "password.argon2_iterations",
                "password.argon2_memory_kib",
                "password.max_concurrent_hashes",
            ]
        );
        assert!(errors.problems()[3].reason.contains("16"), "{errors}");
    }

    #[test]
    fn config_rejects_limits_out_of_range() {
        let raw = RawPassword {
            min_length: Some(300),
            max_length: Some(200),
            argon2_memory_kib: Some(MAX_MEMORY_KIB + 1),
            argon2_iterations: Some(MAX_ITERATIONS + 1),
            argon2_parallelism: Some(0),
            max_concurrent_hashes: Some(MAX_CONCURRENT_HASHES + 1),
        };
        let mut errors = ConfigErrors::default();
        validate(&raw, &mut errors);
        let keys: Vec<&str> = errors.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "password.min_length",
                "password.argon2_iterations",
                "password.argon2_parallelism",
                "password.argon2_memory_kib",
                "password.max_concurrent_hashes",
            ]
        );
        assert!(
            errors.problems()[0].reason.contains("max_length"),
            "{errors}"
        );

        let mut errors = ConfigErrors::default();
        validate(
            &RawPassword {
                max_length: Some(MAX_MAX_LENGTH + 1),
                ..RawPassword::default()
            },
            &mut errors,
        );
        assert_eq!(errors.problems()[0].key, "password.max_length");
    }
    #[tokio::test]
    async fn pooled_hashes_are_standard_argon2id_phc_strings() {
        let hasher = fast_hasher(1);
        let pooled = hasher.hash(pw("correct horse battery")).await.unwrap();
        let parsed = decode(pooled.as_str()).unwrap();
        use argon2::PasswordVerifier as _;
        let argon2 = Argon2::default();
        assert!(
            argon2
                .verify_password(b"correct horse battery", &parsed)
                .is_ok()
        );
        assert!(argon2.verify_password(b"correct horse", &parsed).is_err());
        assert!(!pooled.needs_rehash(FAST));

        // And hashes made by the argon2 crate itself (CLI, older releases) verify here.
        let plain = hash_blocking(FAST, &pw("correct horse battery")).unwrap();
        assert!(
            hasher
                .verify(pw("correct horse battery"), Some(&plain))
                .await
        );
        assert!(!hasher.verify(pw("correct horse"), Some(&plain)).await);
    }

    #[tokio::test]
    async fn hashes_with_other_algorithms_versions_and_lengths_verify() {
        let hasher = fast_hasher(1);
        for (algorithm, version, len) in [
            (Algorithm::Argon2i, Version::V0x13, 32),
            (Algorithm::Argon2d, Version::V0x10, 32),
            (Algorithm::Argon2id, Version::V0x13, 64),
        ] {
            let params = Params::new(128, 1, 1, Some(len)).unwrap();
            let hash = Argon2::new(algorithm, version, params)
                .hash_password(b"an older password")
                .unwrap()
                .to_string();
            let hash = PasswordHash::parse(&hash).unwrap();
            assert!(
                hasher.verify(pw("an older password"), Some(&hash)).await,
                "{algorithm:?} {version:?} {len}"
            );
            assert!(!hasher.verify(pw("an older passwore"), Some(&hash)).await);
        }
    }

    #[tokio::test]
    async fn hashing_memory_is_reused_then_released_when_logins_stop() {
        let hasher = fast_hasher(2);
        assert_eq!(hasher.idle_memory_buffers(), 0, "nothing kept from startup");
        let hash = hasher.hash(pw("correct horse battery")).await.unwrap();
        for _ in 0..5 {
            assert!(
                hasher
                    .verify(pw("correct horse battery"), Some(&hash))
                    .await
            );
        }
        assert_eq!(
            hasher.idle_memory_buffers(),
            1,
            "one buffer served every sequential hash"
        );
        assert_eq!(
            hasher.release_idle_memory(),
            0,
            "used since the last period"
        );
        assert_eq!(hasher.release_idle_memory(), 1, "a quiet period frees it");
        assert_eq!(hasher.idle_memory_buffers(), 0);
        assert!(
            hasher
                .verify(pw("correct horse battery"), Some(&hash))
                .await
        );
    }

    #[test]
    fn default_concurrency_leaves_a_cpu_to_the_proxy() {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let default = default_max_concurrent();
        assert!(default >= 1);
        assert_eq!(default, if cpus > 1 { cpus - 1 } else { 1 });
    }
}
