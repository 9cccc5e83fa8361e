//! Logs through tracing: human-readable by default, JSON on request. Secrets never reach a log
//! line: request logging records method, path and status only, never cookies or credentials.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

use crate::config::{LogConfig, LogFormat};

/// Libraries whose debug and trace output carries secrets, held at `info` whatever the level
/// asked for: lettre writes every SMTP command (`AUTH PLAIN` with the base64 of the SMTP
/// password) and every message (with its sign-in code) at `debug`.
const CHATTY_WITH_SECRETS: [&str; 1] = ["lettre=info"];

/// Installs the global subscriber. `RUST_LOG` overrides the configured level when set.
pub fn init(config: &LogConfig) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(config))
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A subscriber may already be installed (tests, demo restarts): keep it.
    let _ = result;
}

/// What is logged: `RUST_LOG` if set, else the configured level, with the libraries of
/// [`CHATTY_WITH_SECRETS`] held at `info` in either case.
fn filter(config: &LogConfig) -> EnvFilter {
    let asked = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    with_secrets_held(asked)
}

/// `filter` with the libraries of [`CHATTY_WITH_SECRETS`] held at `info`.
fn with_secrets_held(mut filter: EnvFilter) -> EnvFilter {
    for directive in CHATTY_WITH_SECRETS {
        // Constant and valid: a parse failure would be a bug caught by the test below.
        if let Ok(directive) = directive.parse::<Directive>() {
            filter = filter.add_directive(directive);
        }
    }
    filter
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
        for level in ["debug", "trace", "debug,lettre=trace"] {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(with_secrets_held(EnvFilter::new(level)))
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::debug!(target: "lettre::transport::smtp", "Wrote: AUTH PLAIN c2VjcmV0");
                tracing::info!(target: "lettre::transport::smtp", "connection closed");
                tracing::debug!(target: "stepgate::notify", "still logged");
            });
            let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            assert!(!logged.contains("AUTH PLAIN"), "{level}: {logged}");
            assert!(logged.contains("connection closed"), "{level}: {logged}");
            assert!(logged.contains("still logged"), "{level}: {logged}");
        }
    }
}
