//! Session lookup (`SessionManager::lookup`) with 1,000 and 1,000,000 sessions in the store:
//! answered from the in-memory view ("cached") and read from the store ("uncached", a manager
//! whose view holds a single session). Run with `cargo bench --bench sessions`; building the
//! 1,000,000-session store takes a while (sessions are written straight through the store, in
//! parallel, and flushed once).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

use stepgate::auth::session::{
    AuthLevel, DEFAULT_CACHE_CAPACITY, Session, SessionId, SessionManager, SessionSettings,
};
use stepgate::auth::user::Username;
use stepgate::clock::{ManualClock, Timestamp};
use stepgate::store::Store;

const NOW: Timestamp = Timestamp(1_800_000_000_000);
/// Cookie values kept for lookups (a spread sample of the store).
const SAMPLE: usize = 10_000;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    /// Cookie values of `SAMPLE` sessions spread over the store.
    cookies: Vec<String>,
}

/// A store holding `count` live remember-me sessions of 1,000 users.
fn fixture(count: usize) -> Fixture {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let users: Vec<Username> = (0..1000)
        .map(|i| Username::parse(&format!("user{i}")).unwrap())
        .collect();
    let every = (count / SAMPLE).max(1);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_thread = count.div_ceil(threads);
    let cookies: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (store, users) = (&store, &users);
                scope.spawn(move || {
                    let mut kept = Vec::new();
                    for i in (t * per_thread)..((t + 1) * per_thread).min(count) {
                        let id = SessionId::generate();
                        let session = Session {
                            key: id.key(),
                            username: users[i % users.len()].clone(),
                            created_at: NOW,
                            last_seen: NOW,
                            expires_at: NOW.plus(Duration::from_secs(30 * 86400)),
                            remember_me: true,
                            auth_level: AuthLevel::TwoFactor,
                            second_factor_at: Some(NOW),
                            challenge_started_at: None,
                            challenge_failures: 0,
                            reauth_at: None,
                        };
                        store.put_session(&session).unwrap();
                        if i % every == 0 {
                            kept.push(id.cookie_value());
                        }
                    }
                    kept
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    store.flush().unwrap();
    eprintln!(
        "store with {count} sessions built in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Fixture {
        _dir: dir,
        store,
        cookies,
    }
}

fn manager(store: &Arc<Store>, capacity: usize) -> SessionManager {
    // A fixed clock: `last_seen` never falls behind, so no lookup writes to the store.
    SessionManager::with_cache_capacity(
        store.clone(),
        Arc::new(ManualClock::new(NOW)),
        SessionSettings::default(),
        capacity,
    )
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("session_lookup");
    group.measurement_time(Duration::from_secs(5));
    // `cargo test --benches` runs each benchmark once: a small store is enough there.
    let test_mode = std::env::args().any(|a| a == "--test");
    let counts: &[usize] = if test_mode {
        &[1_000]
    } else {
        &[1_000, 1_000_000]
    };
    for &count in counts {
        let fx = fixture(count);
        // Cached: the default view; every sampled session has been seen once.
        let cached = manager(&fx.store, DEFAULT_CACHE_CAPACITY);
        for cookie in &fx.cookies {
            assert!(cached.lookup(cookie).unwrap().is_some());
        }
        let mut i = 0;
        group.bench_function(format!("cached/{count}"), |b| {
            b.iter(|| {
                i = (i + 1) % fx.cookies.len();
                black_box(cached.lookup(black_box(&fx.cookies[i])).unwrap())
            })
        });
        // Uncached: the view holds one session, so each lookup reads and decodes the store's
        // record (sled's own page cache still applies).
        let uncached = manager(&fx.store, 1);
        let mut i = 0;
        group.bench_function(format!("uncached/{count}"), |b| {
            b.iter(|| {
                i = (i + 1) % fx.cookies.len();
                black_box(uncached.lookup(black_box(&fx.cookies[i])).unwrap())
            })
        });
        // The cookie names no session: a store read that finds nothing.
        let unknown = SessionId::generate().cookie_value();
        group.bench_function(format!("unknown/{count}"), |b| {
            b.iter(|| black_box(cached.lookup(black_box(&unknown)).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
