//! Logs through tracing: human-readable by default, JSON on request. Secrets never reach a log
//! line: request logging records method, path and status only, never cookies or credentials.

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

/// Installs the global subscriber. `RUST_LOG` overrides the configured level when set.
pub fn init(config: &LogConfig) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(config))
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.finish().with(secrets_held()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(secrets_held())
            .try_init(),
    };
    // A subscriber may already be installed (tests, demo restarts): keep it.
    let _ = result;
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

#[cfg(test)]
mod tests {
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
