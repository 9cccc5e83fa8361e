//! What a failed send logs: the reason, never the code nor the SMTP password. Alone in its
//! test binary because it installs the process-wide `tracing` subscriber.

mod common;

/// How long the codes of these tests are said to last (`mfa.code_ttl`'s default).
const CODE_TTL: std::time::Duration = std::time::Duration::from_secs(600);

use std::io::Write;
use std::sync::{Arc, Mutex};

use figment::Figment;
use figment::providers::{Format, Toml};

use common::{SmtpServer, TestCa, toml_string};
use stepgate::config::ConfigErrors;
use stepgate::notify::{Lang, Notifier, NotifyError, RawEmail, validate_email};

const CODE: &str = "482913";

fn notifier(toml: &str) -> Notifier {
    #[derive(serde::Deserialize)]
    struct Doc {
        email: RawEmail,
    }
    let doc: Doc = Figment::from(Toml::string(toml))
        .extract()
        .expect("[email] section");
    let mut errors = ConfigErrors::default();
    let config = validate_email(&doc.email, &mut errors).expect("valid [email]");
    assert!(errors.is_empty(), "{errors}");
    Notifier::new(Some(&config), None, "Acme").expect("notifier")
}

/// Collects what the `tracing` subscriber writes, to check what a failure logs.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = self.0.lock() {
            logs.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn wrong_password_fails_and_logs_neither_password_nor_code() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    // The gateway's own subscriber, at the most verbose level: the mail library writes every
    // SMTP command (the password in `AUTH PLAIN`) and message (the code) at `debug` and
    // `trace`. Global, and alone in its test binary: a thread-scoped subscriber can miss
    // events whose callsite another test's thread registered first.
    let config = stepgate::config::LogConfig {
        format: stepgate::config::LogFormat::Text,
        // Everything but the test's own SMTP server (`mailin`), which logs what it receives.
        level: "trace,mailin=off".into(),
    };
    assert!(
        stepgate::logging::init_with_writer(&config, move || writer.clone()),
        "the only subscriber"
    );
    tracing::trace!("trace lines are written");

    let ca = TestCa::new();
    let server = SmtpServer::builder()
        .starttls(&ca)
        .auth("stepgate", "s3cret")
        .start()
        .await;
    let notifier = notifier(&format!(
        "[email]\nurl = \"smtp://127.0.0.1:{}\"\nfrom = \"noreply@example.com\"\n\
         ca_file = {}\nusername = \"stepgate\"\npassword = \"wrong-pass\"",
        server.port(),
        toml_string(&ca.ca_path().display().to_string())
    ));
    let err = notifier
        .send_email_code("ada@example.com", "Ada", Lang::En, CODE, CODE_TTL)
        .await
        .expect_err("bad credentials");
    assert!(matches!(err, NotifyError::Send(_)), "{err:?}");
    assert!(server.messages().is_empty());
    assert_eq!(
        server.auth_attempts(),
        [common::AuthAttempt {
            username: "stepgate".into(),
            accepted: false
        }]
    );
    let logged = logs.text();
    assert!(logged.contains("trace lines are written"), "{logged}");
    assert!(logged.contains("sign-in code email not sent"), "{logged}");
    assert!(!logged.contains("wrong-pass"), "{logged}");
    // `AUTH PLAIN` carries the password in base64 ("\0stepgate\0wrong-pass"), and lettre's
    // debug output carries that line.
    assert!(!logged.contains("AHN0ZXBnYXRlAHdyb25nLXBhc3M"), "{logged}");
    assert!(!logged.contains("AUTH"), "{logged}");
    assert!(!logged.contains(CODE), "{logged}");
    assert!(!err.to_string().contains("wrong-pass"));
    assert!(!format!("{notifier:?}").contains("wrong-pass"));
}
