//! Brute-force regulation: too many failed logins for one account, or from one network, inside
//! `find_time` ban that account or network for `ban_time`.
//!
//! Counting is shared by every request (it lives in the store, not in a session), is persisted
//! and flushed, and so survives restarts. Two subjects are counted for each failure:
//! - the account, by canonical username, whether or not it exists (so probing does not reveal
//!   which names exist, and a guessing attack on a name about to be created still counts).
//!   A name that is not a valid username cannot be an account and is counted by network only;
//! - the client network: the address itself for IPv4 (IPv4-mapped IPv6 addresses count as
//!   IPv4), the enclosing /64 for IPv6, since a single IPv6 client usually controls a whole /64
//!   and could otherwise rotate addresses freely.
//!
//! A ban refuses every attempt, even with the right password. A successful login does not clear
//! counters (otherwise one valid account would let an attacker reset the counter of the network
//! they guess from).
//!
//! # Attempts in flight
//!
//! A password or code is judged some time after the ban check (argon2 waits for a free worker
//! first), and its failure is counted only after that. Checking the stored state alone would let
//! a burst of simultaneous guesses all pass the check before the first of them is counted. So
//! callers take an [`Attempt`] with [`Regulator::begin`] (or [`Regulator::begin_challenge`])
//! before they verify anything, [`Regulator::record_failure`] while they still hold it after a
//! wrong guess, and drop it only then. The regulator keeps, in memory, the attempts in flight
//! for each subject, and admits a new one only while
//!
//! ```text
//! failures inside the window + attempts in flight < max_retries
//! ```
//!
//! holds for every subject of the attempt; so even if every attempt in flight fails, the last
//! of them triggers the ban and none runs after it. An attempt that would break this waits
//! (it is not refused: many honest users behind one office address may sign in at once) until
//! an attempt of that subject ends, then is judged again: refused if a ban has started meanwhile,
//! admitted if the attempt that ended succeeded. A subject with no attempt in flight never makes
//! anyone wait (stored failures alone reach `max_retries` only with a ban in force, or when
//! `max_retries` was lowered since they were counted; then the next failure bans).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::auth::session::SessionKey;
use crate::auth::user::Username;
use crate::clock::{SharedClock, Timestamp};
use crate::config::{ConfigErrors, parse_duration};
use crate::store::{Store, StoreError};

/// IPv6 clients are counted per network of this prefix length.
pub const IPV6_PREFIX_LEN: u8 = 64;

/// What failures are counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    User(Username),
    Network(IpNet),
}

impl Subject {
    /// The network `ip` is counted in: `/32` for IPv4 (and IPv4-mapped IPv6), `/64` for IPv6.
    pub fn for_ip(ip: IpAddr) -> Subject {
        let net = match ip.to_canonical() {
            IpAddr::V4(v4) => IpNet::V4(Ipv4Net::from(v4)),
            IpAddr::V6(v6) => IpNet::V6(
                Ipv6Net::new(v6, IPV6_PREFIX_LEN)
                    .map(|n| n.trunc())
                    .unwrap_or_else(|_| Ipv6Net::from(v6)),
            ),
        };
        Subject::Network(net)
    }

    /// The subject for an attempted username, if it is a valid one.
    pub fn for_username(attempted: &str) -> Option<Subject> {
        Username::parse(attempted).ok().map(Subject::User)
    }

    /// Key in the store: `user:alice`, `net:192.0.2.7/32`, `net:2001:db8::/64`.
    pub fn storage_key(&self) -> String {
        match self {
            Subject::User(u) => format!("user:{u}"),
            Subject::Network(n) => format!("net:{n}"),
        }
    }

    /// Inverse of [`Subject::storage_key`].
    pub fn from_storage_key(key: &str) -> Option<Subject> {
        if let Some(name) = key.strip_prefix("user:") {
            let u = Username::parse(name).ok()?;
            (u.as_str() == name).then_some(Subject::User(u))
        } else if let Some(net) = key.strip_prefix("net:") {
            net.parse().ok().map(Subject::Network)
        } else {
            None
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User(u) => write!(f, "account {u}"),
            Subject::Network(n) => write!(f, "network {n}"),
        }
    }
}

/// Recent failures of one subject and its ban, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailureState {
    /// Times of failures not yet out of the window, oldest first.
    pub failures: Vec<Timestamp>,
    pub banned_until: Option<Timestamp>,
}

impl FailureState {
    /// Time left on the ban at `now`, if banned.
    pub fn ban_remaining(&self, now: Timestamp) -> Option<Duration> {
        match self.banned_until {
            Some(until) if now < until => Some(until.since(now)),
            _ => None,
        }
    }

    /// Nothing left worth keeping at `now`: no ban in force and no failure inside the window.
    pub fn is_stale(&self, now: Timestamp, settings: &RegulationSettings) -> bool {
        let window_start = now.minus(settings.find_time);
        self.ban_remaining(now).is_none() && self.failures.iter().all(|t| *t <= window_start)
    }

    /// This state after one more failure at `now`.
    fn with_failure(mut self, now: Timestamp, settings: &RegulationSettings) -> FailureState {
        if self.ban_remaining(now).is_some() {
            // Already banned: the ban is not extended (callers check before verifying).
            return self;
        }
        self.banned_until = None;
        let window_start = now.minus(settings.find_time);
        self.failures.retain(|t| *t > window_start);
        self.failures.push(now);
        if self.failures.len() >= settings.max_retries as usize {
            self.failures.clear();
            self.banned_until = Some(now.plus(settings.ban_time));
        }
        self
    }
}

/// A refusal: the account or the network is banned for `retry_after` more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Banned {
    pub retry_after: Duration,
}

impl fmt::Display for Banned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        write!(f, "too many failed attempts; try again in {secs} s")
    }
}

impl std::error::Error for Banned {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegulationSettings {
    /// Failures inside `find_time` that trigger a ban.
    pub max_retries: u32,
    pub find_time: Duration,
    pub ban_time: Duration,
}

impl Default for RegulationSettings {
    fn default() -> Self {
        RegulationSettings {
            max_retries: 3,
            find_time: Duration::from_secs(120),
            ban_time: Duration::from_secs(300),
        }
    }
}

/// Largest accepted `max_retries` (each counted failure is kept until it leaves the window).
pub const MAX_RETRIES_LIMIT: u32 = 1000;

/// `[regulation]` as written in the configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegulation {
    pub max_retries: Option<u32>,
    pub find_time: Option<String>,
    pub ban_time: Option<String>,
}

/// Checks `[regulation]`, recording every problem under its key; defaults stand in for wrong
/// values.
pub fn validate(raw: &RawRegulation, errors: &mut ConfigErrors) -> RegulationSettings {
    let defaults = RegulationSettings::default();
    let max_retries = match raw.max_retries {
        None => defaults.max_retries,
        Some(n) if (1..=MAX_RETRIES_LIMIT).contains(&n) => n,
        Some(_) => {
            errors.push(
                "regulation.max_retries",
                format!("must be between 1 and {MAX_RETRIES_LIMIT}"),
            );
            defaults.max_retries
        }
    };
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
    RegulationSettings {
        max_retries,
        find_time: duration(&raw.find_time, "regulation.find_time", defaults.find_time),
        ban_time: duration(&raw.ban_time, "regulation.ban_time", defaults.ban_time),
    }
}

/// Counts failures and answers whether an attempt may proceed.
pub struct Regulator {
    store: Arc<Store>,
    clock: SharedClock,
    settings: RegulationSettings,
    in_flight: Arc<InFlight>,
    /// The bans whose first refusal was reported.
    refusals_reported: Mutex<ReportedBans>,
}

/// The bans whose first refusal was reported: subject and the end of its ban.
#[derive(Default)]
struct ReportedBans {
    bans: HashMap<Subject, Timestamp>,
    /// Ended bans are swept out when the table reaches this size.
    sweep_at: usize,
}

/// What attempts in flight are counted against.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Slot {
    /// An account or a network: `max_retries` minus its recent failures at a time.
    Subject(Subject),
    /// The second-factor challenge of one session: one code at a time, so the session's own
    /// count of wrong codes is up to date before the next one is judged.
    Challenge(SessionKey),
}

/// Attempts in flight per slot. A slot is present only while an attempt holds it.
#[derive(Default)]
struct InFlight {
    slots: Mutex<HashMap<Slot, Running>>,
}

struct Running {
    attempts: u32,
    /// Woken each time one of these attempts ends.
    ended: Arc<Notify>,
}

impl InFlight {
    /// The table, even if a thread panicked while holding it: every change to it is a single
    /// counter step, so it is never left half-changed.
    fn lock(&self) -> MutexGuard<'_, HashMap<Slot, Running>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One attempt admitted by [`Regulator::begin`]: while it lives it counts against its account,
/// its network and, for a second factor, its session's challenge. Drop it once the attempt's
/// failure has been recorded (or the attempt has succeeded), not before: dropping it lets
/// waiting attempts of the same subjects be judged again.
#[must_use = "the attempt counts as in flight only while this is held"]
pub struct Attempt {
    in_flight: Arc<InFlight>,
    slots: Vec<Slot>,
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt").finish_non_exhaustive()
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let mut table = self.in_flight.lock();
        for slot in &self.slots {
            if let Some(running) = table.get_mut(slot) {
                running.attempts = running.attempts.saturating_sub(1);
                running.ended.notify_waiters();
                if running.attempts == 0 {
                    table.remove(slot);
                }
            }
        }
    }
}

/// What [`Regulator::admit`] decided.
enum Admission {
    Admitted,
    /// Wait for an attempt holding this slot to end, then ask again.
    Wait(Arc<Notify>),
}

impl fmt::Debug for Regulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Regulator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Regulator {
    pub fn new(store: Arc<Store>, clock: SharedClock, settings: RegulationSettings) -> Self {
        Regulator {
            store,
            clock,
            settings,
            in_flight: Arc::default(),
            refusals_reported: Mutex::default(),
        }
    }

    /// Whether an attempt of `username` (as typed) from `ip` that [`Regulator::begin`] has just
    /// refused is the first refusal of a ban in force: each ban's refusals are audited and
    /// logged once, so that a banned client repeating its request (which costs it no password
    /// work) cannot grow the audit trail and the logs without end. True when the store cannot
    /// tell (the refusal is then reported).
    pub fn first_refusal(&self, username: &str, ip: IpAddr) -> bool {
        let now = self.clock.now();
        // The store is read before the table is locked: other refusals do not wait for it.
        let mut first = false;
        let mut bans = Vec::with_capacity(2);
        for subject in Self::subjects(username, ip) {
            match self.store.get_failures(&subject) {
                Ok(state) => {
                    if let Some(until) = state.banned_until.filter(|until| *until > now) {
                        bans.push((subject, until));
                    }
                }
                Err(_) => first = true,
            }
        }
        let mut reported = self
            .refusals_reported
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Only bans in force are worth remembering. The table is swept when it has doubled
        // since the last sweep, so that many bans in force do not make every refusal scan it.
        if reported.bans.len() >= reported.sweep_at {
            reported.bans.retain(|_, until| *until > now);
            reported.sweep_at = (2 * reported.bans.len()).max(1024);
        }
        for (subject, until) in bans {
            first |= reported.bans.insert(subject, until) != Some(until);
        }
        first
    }

    pub fn settings(&self) -> &RegulationSettings {
        &self.settings
    }

    fn subjects(username: &str, ip: IpAddr) -> Vec<Subject> {
        let mut subjects = Vec::with_capacity(2);
        subjects.extend(Subject::for_username(username));
        subjects.push(Subject::for_ip(ip));
        subjects
    }

    /// Admits a password attempt for `username` (as typed; canonicalised here) from `ip`, or
    /// refuses it while the account or the network is banned. Waits while the attempts in
    /// flight could, all failing, reach `max_retries` for either (see the module
    /// documentation). Hold the returned [`Attempt`] until the failure is recorded.
    ///
    /// Fails closed: if the store cannot be read the attempt is refused as if banned for
    /// `ban_time`, and the error is logged.
    pub async fn begin(&self, username: impl AsRef<str>, ip: IpAddr) -> Result<Attempt, Banned> {
        self.begin_slots(username.as_ref(), ip, None).await
    }

    /// Like [`Regulator::begin`], for a second factor (or the password again) proven inside
    /// the session `challenge`: besides the account and the network, only one attempt of that
    /// session is in flight at a time. Read the session's count of wrong codes again once
    /// admitted: an attempt that ended meanwhile may have changed it or ended the session.
    pub async fn begin_challenge(
        &self,
        username: impl AsRef<str>,
        ip: IpAddr,
        challenge: SessionKey,
    ) -> Result<Attempt, Banned> {
        self.begin_slots(username.as_ref(), ip, Some(challenge))
            .await
    }

    async fn begin_slots(
        &self,
        username: &str,
        ip: IpAddr,
        challenge: Option<SessionKey>,
    ) -> Result<Attempt, Banned> {
        let slots: Vec<Slot> = Self::subjects(username, ip)
            .into_iter()
            .map(Slot::Subject)
            .chain(challenge.map(Slot::Challenge))
            .collect();
        loop {
            let ended = {
                let mut table = self.in_flight.lock();
                let ended = match self.admit(&table, &slots)? {
                    Admission::Admitted => {
                        for slot in &slots {
                            table
                                .entry(slot.clone())
                                .or_insert_with(|| Running {
                                    attempts: 0,
                                    ended: Arc::new(Notify::new()),
                                })
                                .attempts += 1;
                        }
                        return Ok(Attempt {
                            in_flight: self.in_flight.clone(),
                            slots,
                        });
                    }
                    Admission::Wait(ended) => ended,
                };
                // Registered while the table is still locked: an attempt ends only under that
                // lock, and `notify_waiters` wakes every `Notified` enabled before it, so the
                // end this waits for cannot slip in between unnoticed.
                let mut notified = Box::pin(ended.notified_owned());
                notified.as_mut().enable();
                notified
            };
            ended.await;
        }
    }

    /// Judges an attempt on `slots` against the stored state and `table` (the attempts in
    /// flight; the caller holds its lock). Bans come first: a banned subject refuses even when
    /// another would only make the attempt wait.
    fn admit(&self, table: &HashMap<Slot, Running>, slots: &[Slot]) -> Result<Admission, Banned> {
        let now = self.clock.now();
        let window_start = now.minus(self.settings.find_time);
        let mut longest: Option<Duration> = None;
        let mut wait: Option<Arc<Notify>> = None;
        for slot in slots {
            let running = table.get(slot);
            let in_flight = running.map_or(0, |r| r.attempts);
            let full = match slot {
                Slot::Subject(subject) => match self.store.get_failures(subject) {
                    Ok(state) => {
                        if let Some(left) = state.ban_remaining(now) {
                            longest = Some(longest.map_or(left, |l| l.max(left)));
                        }
                        let recent = state.failures.iter().filter(|t| **t > window_start).count();
                        let recent = u32::try_from(recent).unwrap_or(u32::MAX);
                        recent.saturating_add(in_flight) >= self.settings.max_retries
                    }
                    Err(e) => {
                        tracing::error!(error = %e, subject = %subject, "cannot read regulation state; refusing the attempt");
                        longest = Some(self.settings.ban_time);
                        true
                    }
                },
                Slot::Challenge(_) => in_flight >= 1,
            };
            if let Some(running) = running.filter(|_| full) {
                wait.get_or_insert_with(|| running.ended.clone());
            }
        }
        match (longest, wait) {
            (Some(retry_after), _) => Err(Banned { retry_after }),
            (None, Some(ended)) => Ok(Admission::Wait(ended)),
            (None, None) => Ok(Admission::Admitted),
        }
    }

    /// Whether `username` from `ip` is banned right now, ignoring the attempts in flight: the
    /// ban part of [`Regulator::begin`], which every attempt goes through. Fails closed like it.
    #[cfg(test)]
    pub fn check(&self, username: impl AsRef<str>, ip: IpAddr) -> Result<(), Banned> {
        let slots: Vec<Slot> = Self::subjects(username.as_ref(), ip)
            .into_iter()
            .map(Slot::Subject)
            .collect();
        // With nothing in flight nobody waits: the answer is a ban or an admission.
        self.admit(&HashMap::new(), &slots).map(|_| ())
    }

    /// Counts a failed login for `username` (as typed) from `ip`. Returns the ban in force
    /// afterwards, if any (this failure may have triggered it). Flushed before returning.
    pub fn record_failure(
        &self,
        username: impl AsRef<str>,
        ip: IpAddr,
    ) -> Result<Option<Banned>, StoreError> {
        let now = self.clock.now();
        let mut longest: Option<Duration> = None;
        for subject in Self::subjects(username.as_ref(), ip) {
            let state = self
                .store
                .update_failures(&subject, |s| s.with_failure(now, &self.settings))?;
            if let Some(left) = state.ban_remaining(now) {
                longest = Some(longest.map_or(left, |l| l.max(left)));
            }
        }
        Ok(longest.map(|retry_after| Banned { retry_after }))
    }

    /// Is the account `username` itself banned right now (not only the network it is used
    /// from)?
    pub fn account_banned(&self, username: &str) -> Result<bool, StoreError> {
        let Some(subject) = Subject::for_username(username) else {
            return Ok(false);
        };
        let now = self.clock.now();
        Ok(self
            .store
            .get_failures(&subject)?
            .ban_remaining(now)
            .is_some())
    }

    /// Lifts a ban and forgets the failures of `subject` (administrator action).
    pub fn unban(&self, subject: &Subject) -> Result<bool, StoreError> {
        self.store.delete_failures(subject)
    }

    /// Subjects banned right now, with the time left.
    pub fn active_bans(&self) -> Result<Vec<(Subject, Duration)>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .store
            .list_failures()?
            .readable
            .into_iter()
            .filter_map(|(s, st)| st.ban_remaining(now).map(|left| (s, left)))
            .collect())
    }

    /// Deletes counters that no longer matter (no ban in force, no failure in the window);
    /// returns how many. Attempted usernames that never existed would otherwise accumulate, so
    /// run this now and then.
    ///
    /// A record that cannot be read is deleted too, with a warning: its ban would otherwise
    /// refuse its account or network for good (every attempt finds it unreadable and fails
    /// closed), and when it ends cannot be known. Its failures are counted again from zero.
    pub fn prune(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let mut pruned = 0;
        let scan = self.store.list_failures()?;
        for raw in scan.unreadable {
            tracing::warn!(
                record = %crate::store::key_for_log(&raw),
                "unreadable failure record removed"
            );
            if self.store.delete_raw_failures(&raw)? {
                pruned += 1;
            }
        }
        for (subject, state) in scan.readable {
            if state.is_stale(now, &self.settings)
                && self
                    .store
                    .delete_failures_if(&subject, |s| s.is_stale(now, &self.settings))?
            {
                pruned += 1;
            }
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const MIN: Duration = Duration::from_secs(60);

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<Store>,
        clock: ManualClock,
        reg: Regulator,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let clock = ManualClock::new(Timestamp(1_700_000_000_000));
        let reg = Regulator::new(
            store.clone(),
            Arc::new(clock.clone()),
            RegulationSettings::default(),
        );
        Fixture {
            _dir: dir,
            store,
            clock,
            reg,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bans_after_max_retries() {
        let f = fixture();
        let a = ip("192.0.2.1");
        assert_eq!(f.reg.record_failure("alice", a).unwrap(), None);
        assert_eq!(f.reg.record_failure("alice", a).unwrap(), None);
        assert!(f.reg.check("alice", a).is_ok());
        let banned = f.reg.record_failure("alice", a).unwrap();
        assert_eq!(
            banned,
            Some(Banned {
                retry_after: 5 * MIN
            })
        );
        assert_eq!(
            f.reg.check("alice", a),
            Err(Banned {
                retry_after: 5 * MIN
            })
        );
    }

    #[test]
    fn only_the_first_refusal_of_each_ban_is_reported() {
        let f = fixture();
        let a = ip("192.0.2.1");
        assert!(
            !f.reg.first_refusal("alice", a),
            "no ban, nothing to report"
        );
        for _ in 0..3 {
            f.reg.record_failure("alice", a).unwrap();
        }
        assert!(f.reg.first_refusal("alice", a));
        for _ in 0..20 {
            assert!(!f.reg.first_refusal("alice", a));
        }
        // Another account from the banned network: that network's ban was reported already.
        assert!(!f.reg.first_refusal("bob", a));
        // The next ban is reported again.
        f.clock.advance(5 * MIN);
        for _ in 0..3 {
            f.reg.record_failure("alice", a).unwrap();
        }
        assert!(f.reg.first_refusal("alice", a));
        assert!(!f.reg.first_refusal("alice", a));
        // A store that cannot be read: reported (the refusal itself fails closed).
        f.store
            .put_raw_failures_for_test(&Subject::for_ip(ip("192.0.2.9")), b"garbage");
        assert!(f.reg.first_refusal("carol", ip("192.0.2.9")));
    }

    #[test]
    fn ban_expires_after_ban_time() {
        let f = fixture();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            f.reg.record_failure("alice", a).unwrap();
        }
        f.clock.advance(4 * MIN);
        assert_eq!(f.reg.check("alice", a), Err(Banned { retry_after: MIN }));
        f.clock.advance(MIN - Duration::from_millis(1));
        assert!(f.reg.check("alice", a).is_err());
        f.clock.advance(Duration::from_millis(1));
        assert_eq!(f.reg.check("alice", a), Ok(()));
        // After the ban the count starts from zero.
        assert_eq!(f.reg.record_failure("alice", a).unwrap(), None);
    }

    #[test]
    fn window_slides_with_find_time() {
        let f = fixture();
        let a = ip("192.0.2.1");
        f.reg.record_failure("alice", a).unwrap();
        f.clock.advance(MIN);
        f.reg.record_failure("alice", a).unwrap();
        // The first failure leaves the 2-minute window just before the third arrives.
        f.clock.advance(MIN + Duration::from_millis(1));
        assert_eq!(f.reg.record_failure("alice", a).unwrap(), None);
        assert!(f.reg.check("alice", a).is_ok());
        // The second and third are still inside: one more bans.
        assert!(f.reg.record_failure("alice", a).unwrap().is_some());
    }

    #[test]
    fn rotating_ips_against_one_account_still_ban_the_account() {
        let f = fixture();
        f.reg.record_failure("alice", ip("192.0.2.1")).unwrap();
        f.reg.record_failure("Alice", ip("198.51.100.2")).unwrap();
        let banned = f.reg.record_failure(" ALICE ", ip("203.0.113.3")).unwrap();
        assert!(banned.is_some());
        // Refused from a brand-new address, even before any password is checked.
        assert!(f.reg.check("alice", ip("192.0.2.200")).is_err());
        // Another account from that new address is fine.
        assert!(f.reg.check("bob", ip("192.0.2.200")).is_ok());
    }

    #[test]
    fn one_ip_against_many_accounts_bans_the_ip() {
        let f = fixture();
        let a = ip("192.0.2.9");
        f.reg.record_failure("alice", a).unwrap();
        f.reg.record_failure("bob", a).unwrap();
        assert!(f.reg.record_failure("carol", a).unwrap().is_some());
        assert!(f.reg.check("dave", a).is_err());
        assert!(f.reg.check("dave", ip("192.0.2.10")).is_ok());
    }

    #[test]
    fn rotating_addresses_inside_one_ipv6_64_ban_the_network() {
        let f = fixture();
        f.reg.record_failure("a1", ip("2001:db8:1:2::1")).unwrap();
        f.reg
            .record_failure("a2", ip("2001:db8:1:2::ffff"))
            .unwrap();
        f.reg
            .record_failure("a3", ip("2001:db8:1:2:abcd::9"))
            .unwrap();
        assert!(f.reg.check("a4", ip("2001:db8:1:2:1:2:3:4")).is_err());
        assert!(f.reg.check("a4", ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_the_ipv4_address() {
        let f = fixture();
        f.reg.record_failure("a1", ip("192.0.2.5")).unwrap();
        f.reg.record_failure("a2", ip("::ffff:192.0.2.5")).unwrap();
        f.reg.record_failure("a3", ip("192.0.2.5")).unwrap();
        assert!(f.reg.check("a4", ip("::ffff:192.0.2.5")).is_err());
    }

    #[test]
    fn unknown_and_invalid_usernames_are_counted() {
        let f = fixture();
        let a = ip("192.0.2.1");
        // A name no account has (yet) is counted by its canonical form.
        for addr in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
            f.reg.record_failure("Nobody", ip(addr)).unwrap();
        }
        assert!(f.reg.check("nobody", a).is_err());
        // An invalid name is still counted against the network.
        for _ in 0..3 {
            f.reg.record_failure("not a name!", a).unwrap();
        }
        assert!(f.reg.check("someone", a).is_err());
    }

    #[test]
    fn bans_survive_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(Timestamp(1_700_000_000_000));
        let a = ip("192.0.2.1");
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let reg = Regulator::new(store, Arc::new(clock.clone()), Default::default());
            for _ in 0..3 {
                reg.record_failure("alice", a).unwrap();
            }
        }
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let reg = Regulator::new(store, Arc::new(clock.clone()), Default::default());
        assert!(reg.check("alice", ip("198.51.100.1")).is_err());
        assert!(reg.check("bob", a).is_err());
    }

    #[test]
    fn failure_counts_survive_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(Timestamp(1_700_000_000_000));
        let a = ip("192.0.2.1");
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let reg = Regulator::new(store, Arc::new(clock.clone()), Default::default());
            reg.record_failure("alice", a).unwrap();
            reg.record_failure("alice", a).unwrap();
        }
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let reg = Regulator::new(store, Arc::new(clock.clone()), Default::default());
        assert!(reg.record_failure("alice", a).unwrap().is_some());
    }

    #[test]
    fn banned_check_fails_closed_on_unreadable_state() {
        let f = fixture();
        let subject = Subject::for_ip(ip("192.0.2.1"));
        f.store.put_raw_failures_for_test(&subject, b"garbage");
        assert_eq!(
            f.reg.check("alice", ip("192.0.2.1")),
            Err(Banned {
                retry_after: 5 * MIN
            })
        );
        assert!(f.reg.record_failure("alice", ip("192.0.2.1")).is_err());
    }

    #[test]
    fn housekeeping_removes_an_unreadable_record_and_its_endless_ban() {
        let f = fixture();
        let subject = Subject::for_ip(ip("192.0.2.1"));
        f.store.put_raw_failures_for_test(&subject, b"garbage");
        // Another subject with a live ban stays.
        for _ in 0..3 {
            f.reg.record_failure("bob", ip("198.51.100.7")).unwrap();
        }
        assert!(f.reg.check("alice", ip("192.0.2.1")).is_err());
        assert_eq!(f.reg.prune().unwrap(), 1);
        assert_eq!(f.reg.check("alice", ip("192.0.2.1")), Ok(()));
        assert!(
            f.reg.check("bob", ip("203.0.113.1")).is_err(),
            "bob's ban stays"
        );
    }

    /// The next poll of `attempt`, which must not wait (a future that waits is `None`).
    fn poll_now(
        attempt: std::pin::Pin<&mut impl std::future::Future<Output = Result<Attempt, Banned>>>,
    ) -> Option<Result<Attempt, Banned>> {
        use futures_util::FutureExt;
        attempt.now_or_never()
    }

    #[tokio::test]
    async fn honest_attempt_behind_a_busy_address_waits_then_proceeds() {
        let f = fixture();
        let office = ip("192.0.2.1");
        let first = f.reg.begin("alice", office).await.unwrap();
        let _second = f.reg.begin("bob", office).await.unwrap();
        let _third = f.reg.begin("carol", office).await.unwrap();
        // Three attempts in flight could, all failing, ban the address: a fourth waits...
        let mut fourth = std::pin::pin!(f.reg.begin("dave", office));
        assert!(poll_now(fourth.as_mut()).is_none());
        // ...and is admitted, not refused, once one of them ends without a failure.
        drop(first);
        let admitted = poll_now(fourth.as_mut()).expect("admitted once an attempt ended");
        assert!(admitted.is_ok());
    }

    #[tokio::test]
    async fn simultaneous_guesses_stop_at_the_ban() {
        let f = fixture();
        let a = ip("192.0.2.1");
        f.reg.record_failure("alice", a).unwrap();
        // One failure counted: only two more guesses may be in flight.
        let guesses = [
            f.reg.begin("alice", a).await.unwrap(),
            f.reg.begin("alice", a).await.unwrap(),
        ];
        let mut third = std::pin::pin!(f.reg.begin("alice", a));
        assert!(poll_now(third.as_mut()).is_none());
        // The account from elsewhere waits too; another account from elsewhere does not.
        let mut elsewhere = std::pin::pin!(f.reg.begin("alice", ip("198.51.100.1")));
        assert!(poll_now(elsewhere.as_mut()).is_none());
        assert!(f.reg.begin("bob", ip("198.51.100.1")).await.is_ok());
        // Both guesses fail: the second failure bans, and the waiting attempts are refused.
        for guess in guesses {
            f.reg.record_failure("alice", a).unwrap();
            drop(guess);
        }
        let banned = Banned {
            retry_after: 5 * MIN,
        };
        assert!(matches!(poll_now(third.as_mut()), Some(Err(b)) if b == banned));
        assert!(matches!(poll_now(elsewhere.as_mut()), Some(Err(b)) if b == banned));
    }

    #[tokio::test]
    async fn stored_failures_and_attempts_in_flight_share_one_budget() {
        let f = fixture();
        let a = ip("192.0.2.1");
        f.reg.record_failure("alice", a).unwrap();
        f.reg.record_failure("alice", a).unwrap();
        let only = f.reg.begin("alice", a).await.unwrap();
        let mut next = std::pin::pin!(f.reg.begin("alice", a));
        assert!(poll_now(next.as_mut()).is_none());
        drop(only);
        // Still two failures in the window and nothing in flight: admitted.
        assert!(poll_now(next.as_mut()).expect("admitted").is_ok());
    }

    #[tokio::test]
    async fn one_code_at_a_time_per_challenge() {
        let f = fixture();
        let a = ip("192.0.2.1");
        let session = SessionKey::from_bytes([7; 32]);
        let first = f.reg.begin_challenge("alice", a, session).await.unwrap();
        let mut second = std::pin::pin!(f.reg.begin_challenge("alice", a, session));
        assert!(poll_now(second.as_mut()).is_none());
        // Another session of the account is judged only by the account's budget.
        let other = SessionKey::from_bytes([8; 32]);
        assert!(f.reg.begin_challenge("alice", a, other).await.is_ok());
        drop(first);
        assert!(poll_now(second.as_mut()).expect("admitted").is_ok());
    }

    #[tokio::test]
    async fn begin_fails_closed_on_unreadable_state() {
        let f = fixture();
        let subject = Subject::for_ip(ip("192.0.2.1"));
        f.store.put_raw_failures_for_test(&subject, b"garbage");
        let refused = f.reg.begin("alice", ip("192.0.2.1")).await;
        assert!(matches!(refused, Err(b) if b.retry_after == 5 * MIN));
    }

    #[test]
    fn unban_and_prune() {
        let f = fixture();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            f.reg.record_failure("alice", a).unwrap();
        }
        f.reg.record_failure("bob", ip("198.51.100.7")).unwrap();
        let bans = f.reg.active_bans().unwrap();
        assert_eq!(bans.len(), 2, "{bans:?}");
        assert!(f.reg.unban(&Subject::for_ip(a)).unwrap());
        assert!(f.reg.check("carol", a).is_ok());
        assert!(f.reg.check("alice", a).is_err());
        // Nothing is stale yet.
        assert_eq!(f.reg.prune().unwrap(), 0);
        f.clock.advance(5 * MIN);
        // alice's ban is over and bob's failures left the window.
        assert_eq!(f.reg.prune().unwrap(), 3);
        assert!(f.store.list_failures().unwrap().readable.is_empty());
    }

    #[test]
    fn storage_keys_round_trip() {
        for s in [
            Subject::User(Username::parse("alice").unwrap()),
            Subject::for_ip(ip("192.0.2.1")),
            Subject::for_ip(ip("2001:db8::1")),
        ] {
            assert_eq!(Subject::from_storage_key(&s.storage_key()), Some(s.clone()));
        }
        assert_eq!(
            Subject::for_ip(ip("2001:db8::1")).storage_key(),
            "net:2001:db8::/64"
        );
        assert_eq!(Subject::from_storage_key("user:Alice"), None);
        assert_eq!(Subject::from_storage_key("other:x"), None);
    }

    #[test]
    fn config_defaults_and_problems() {
        let mut errs = ConfigErrors::default();
        assert_eq!(
            validate(&RawRegulation::default(), &mut errs),
            RegulationSettings::default()
        );
        assert!(errs.is_empty());

        let raw = RawRegulation {
            max_retries: Some(0),
            find_time: Some("soon".into()),
            ban_time: Some("10m".into()),
        };
        let s = validate(&raw, &mut errs);
        assert_eq!(s.ban_time, 10 * MIN);
        let keys: Vec<&str> = errs.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["regulation.max_retries", "regulation.find_time"]);
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let parsed: Result<RawRegulation, _> =
            serde_json::from_str(r#"{"max_retries": 5, "bantime": "1m"}"#);
        assert!(parsed.is_err());
    }
}
