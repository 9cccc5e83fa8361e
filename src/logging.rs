//! Logs through tracing: human-readable by default, JSON on request. Secrets never reach a log
//! line: request logging records method, path and status only, never cookies or credentials.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterFn, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Libraries whose debug and trace output carries secrets, held at `info` whatever the level
/// asked for: lettre writes every SMTP command (`AUTH PLAIN` with the base64 of the SMTP
/// password) and every message (with its sign-in code) at `debug`.
const CHATTY_WITH_SECRETS: [&str; 1] = ["lettre"];

/// Installs the global subscriber, writing to stderr. `RUST_LOG` overrides the configured
/// level when set.
pub fn init(config: &LogConfig) {
    // A subscriber may already be installed (tests, demo restarts): keep it.
    let _ = init_with_writer(config, std::io::stderr);
}

/// [`init`] with another writer (tests read what would be logged). Returns whether this call
/// installed the subscriber (`false`: one was installed before).
pub fn init_with_writer<W>(config: &LogConfig, writer: W) -> bool
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(config))
        .with_ansi(false)
        .with_writer(writer);
    let result = match config.format {
        LogFormat::Text => builder.finish().with(secrets_held()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(secrets_held())
            .try_init(),
    };
    result.is_ok()
}

/// What is logged: `RUST_LOG` if set, else the configured level.
fn filter(config: &LogConfig) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Drops the debug and trace events of [`CHATTY_WITH_SECRETS`], whatever the filter in front
/// of it lets through: a layer of its own, so that no directive, however specific
/// (`lettre::transport::smtp=trace`), can turn them back on.
fn secrets_held() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    filter_fn(|meta| !(*meta.level() > Level::INFO && is_chatty(meta.target())))
}

/// Is `target` one of [`CHATTY_WITH_SECRETS`] or inside it?
fn is_chatty(target: &str) -> bool {
    CHATTY_WITH_SECRETS.iter().any(|chatty| {
        target
            .strip_prefix(chatty)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Holds back a warning any client can cause (a refused forward-auth question, say), so that
/// a flood of such requests cannot flood the log: at most one line per [`Throttle::INTERVAL`]
/// per call site, which reports how many were held back since the line before.
///
/// ```ignore
/// static REFUSED: Throttle = Throttle::new();
/// if let Some(held_back) = REFUSED.allow() {
///     tracing::warn!(held_back, "refused");
/// }
/// ```
pub struct Throttle {
    /// Milliseconds since [`process_start`] before which nothing more is logged.
    next_at_ms: AtomicU64,
    held_back: AtomicU64,
}

impl Throttle {
    pub const INTERVAL: Duration = Duration::from_secs(10);

    pub const fn new() -> Throttle {
        Throttle {
            next_at_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last line)` when a line may be logged now, else `None` (and
    /// this one is counted as held back).
    pub fn allow(&self) -> Option<u64> {
        let now = u64::try_from(process_start().elapsed().as_millis()).unwrap_or(u64::MAX);
        self.allow_at(now)
    }

    fn allow_at(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_at_ms.load(Ordering::Relaxed);
        let interval = Self::INTERVAL.as_millis() as u64;
        if now_ms >= next
            && self
                .next_at_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(interval),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::new()
    }
}

/// The instant throttles count from (the first time one asks).
fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_throttle_lets_one_line_through_per_interval_and_counts_the_rest() {
        let t = super::Throttle::new();
        let interval = super::Throttle::INTERVAL.as_millis() as u64;
        assert_eq!(t.allow_at(5), Some(0));
        for ms in [5, 6, 5 + interval - 1] {
            assert_eq!(t.allow_at(ms), None, "{ms}");
        }
        assert_eq!(t.allow_at(5 + interval), Some(3));
        assert_eq!(t.allow_at(5 + interval + 1), None);
        assert_eq!(t.allow_at(5 + 3 * interval), Some(1));
        assert_eq!(t.allow_at(5 + 3 * interval), None);
    }
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn smtp_commands_stay_out_of_debug_logs() {
        for level in [
            "debug",
            "trace",
            "debug,lettre=trace",
            "info,lettre::transport::smtp=debug",
            "info,lettre::transport::smtp::client=trace",
        ] {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new(level))
                .with_writer(move || writer.clone())
                .finish()
                .with(secrets_held());
            tracing::subscriber::with_default(subscriber, || {
                tracing::debug!(target: "lettre::transport::smtp", "Wrote: AUTH PLAIN c2VjcmV0");
                tracing::info!(target: "lettre::transport::smtp", "connection closed");
                tracing::debug!(target: "lettre::transport::smtp::client", "Wrote: AUTH PLAIN");
                tracing::debug!(target: "stepgate::notify", "still logged");
                tracing::debug!(target: "lettres_of_credit", "not lettre's");
            });
            let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            assert!(!logged.contains("AUTH PLAIN"), "{level}: {logged}");
            assert!(logged.contains("connection closed"), "{level}: {logged}");
            if level.starts_with("debug") || level.starts_with("trace") {
                assert!(logged.contains("still logged"), "{level}: {logged}");
                assert!(logged.contains("not lettre's"), "{level}: {logged}");
            }
        }
    }
}
