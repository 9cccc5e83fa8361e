//! Outgoing notifications: sign-in codes by email and SMS, and notices about account changes.
//!
//! [`Notifier`] is built once from the validated `[email]` / `[sms]` sections ([`config`]) and
//! cloned wherever it is needed. Texts live in [`messages`], one catalogue per [`Lang`]; the
//! transports are in [`mail`] (SMTP or a directory of `.eml` files) and [`sms`] (a JSON webhook).
//! Codes and credentials never reach a log line or a `Debug` output.

pub mod config;
pub mod mail;
pub mod messages;
pub mod sms;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use config::{
    EmailConfig, EmailTransport, RawEmail, RawSms, Secret, SmsConfig, SmtpConfig, SmtpCredentials,
    SmtpSecurity, validate_email, validate_sms,
};

use crate::clock::{SharedClock, SystemClock};
use mail::MailSender;
use sms::SmsSender;

/// The language a message is written in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    #[default]
    En,
    Fr,
}

impl Lang {
    /// From a language tag such as `"fr"`, `"fr-CA"` or `"FR_fr"`; anything unknown is English.
    pub fn from_tag(tag: &str) -> Lang {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or_default();
        if primary.eq_ignore_ascii_case("fr") {
            Lang::Fr
        } else {
            Lang::En
        }
    }

    /// The BCP 47 tag: `"en"`, `"fr"`.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fr => "fr",
        }
    }
}

/// Something that happened to an account, which its owner is told about by email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    TwoFactorEnabled,
    TwoFactorDisabled,
    BackupCodeUsed {
        remaining: usize,
    },
    PasswordChanged,
    /// Two-step verification stays on, with other methods or codes than before.
    FactorsChanged,
    /// A sign-in with the right password was banned for wrong second-factor codes: whoever
    /// made it knows the password.
    SecondFactorFailures,
}

/// Why a notification could not be sent. No variant ever carries a code or a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("this channel is not configured")]
    NotConfigured,
    #[error("invalid recipient address")]
    InvalidAddress,
    #[error("notification setup failed: {0}")]
    Setup(String),
    #[error("rendering the message failed: {0}")]
    Render(String),
    #[error("sending failed: {0}")]
    Send(String),
    #[error("the SMS webhook answered with status {status}")]
    Webhook { status: u16 },
    #[error("no answer within the configured timeout")]
    Timeout,
    #[error("the connection failed after the message was handed over: {0}")]
    Interrupted(String),
}

impl NotifyError {
    /// Might the message have reached its recipient all the same? A timeout, a connection lost
    /// after the request was written, or a server error (5xx: a proxy in front of the provider,
    /// or the provider failing after it sent) may all come after the message went out. A
    /// refusal (4xx, an SMTP rejection) or a failure to connect happened before anything was
    /// sent.
    pub fn may_have_been_delivered(&self) -> bool {
        match self {
            NotifyError::Timeout | NotifyError::Interrupted(_) => true,
            NotifyError::Webhook { status } => *status >= 500,
            _ => false,
        }
    }
}

/// Sends codes and notices. Cheap to clone: the transports are shared.
#[derive(Clone)]
pub struct Notifier {
    mail: Option<Arc<MailSender>>,
    sms: Option<Arc<SmsSender>>,
    product: Arc<str>,
    clock: SharedClock,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("email", &self.mail.is_some())
            .field("sms", &self.sms.is_some())
            .field("product", &self.product)
            .finish()
    }
}

impl Notifier {
    /// Builds the transports. `product` is the portal title shown in every message. Call it
    /// inside a Tokio runtime (the SMTP connection pool runs a task there); the file transport's
    /// directory is created here.
    pub fn new(
        email: Option<&EmailConfig>,
        sms: Option<&SmsConfig>,
        product: &str,
    ) -> Result<Self, NotifyError> {
        Ok(Notifier {
            mail: email.map(MailSender::new).transpose()?.map(Arc::new),
            sms: sms.map(SmsSender::new).transpose()?.map(Arc::new),
            product: Arc::from(product),
            clock: Arc::new(SystemClock),
        })
    }

    /// Uses `clock` for the `Date` of emails (tests pin it).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    pub fn email_enabled(&self) -> bool {
        self.mail.is_some()
    }

    pub fn sms_enabled(&self) -> bool {
        self.sms.is_some()
    }

    /// Emails a sign-in code, valid for `valid_for` (`mfa.code_ttl`), to `to`.
    pub async fn send_email_code(
        &self,
        to: &str,
        display_name: &str,
        lang: Lang,
        code: &str,
        valid_for: std::time::Duration,
    ) -> Result<(), NotifyError> {
        let result = async {
            let mail = self.mail.as_ref().ok_or(NotifyError::NotConfigured)?;
            let rendered = messages::code_email(lang, &self.product, display_name, code, valid_for)
                .map_err(|e| NotifyError::Render(e.to_string()))?;
            mail.send(to, display_name, &rendered, self.date()).await
        }
        .await;
        log_failure("sign-in code email", &result);
        result
    }

    /// Texts a sign-in code to `to_phone` (E.164, e.g. `+33612345678`; spaces, dots, dashes and
    /// parentheses are ignored).
    pub async fn send_sms_code(
        &self,
        to_phone: &str,
        lang: Lang,
        code: &str,
    ) -> Result<(), NotifyError> {
        let result = async {
            let sms = self.sms.as_ref().ok_or(NotifyError::NotConfigured)?;
            sms.send_code(to_phone, lang, &self.product, code).await
        }
        .await;
        log_failure("sign-in code SMS", &result);
        result
    }

    /// Emails a notice about a change to the account.
    pub async fn send_notice(
        &self,
        to: &str,
        display_name: &str,
        lang: Lang,
        notice: Notice,
    ) -> Result<(), NotifyError> {
        let result = async {
            let mail = self.mail.as_ref().ok_or(NotifyError::NotConfigured)?;
            let rendered = messages::notice_email(lang, &self.product, display_name, notice)
                .map_err(|e| NotifyError::Render(e.to_string()))?;
            mail.send(to, display_name, &rendered, self.date()).await
        }
        .await;
        log_failure("notice email", &result);
        result
    }

    /// Checks that the SMTP server is reachable: connection, TLS, EHLO and AUTH if configured.
    /// With the file transport, checks that the directory exists.
    pub async fn check_smtp(&self) -> Result<(), NotifyError> {
        let mail = self.mail.as_ref().ok_or(NotifyError::NotConfigured)?;
        let result = mail.check().await;
        log_failure("SMTP check", &result);
        result
    }

    fn date(&self) -> SystemTime {
        let ms = u64::try_from(self.clock.now().as_millis()).unwrap_or(0);
        UNIX_EPOCH + Duration::from_millis(ms)
    }
}

/// Failures are logged with their reason; the message itself (and its code) never is.
fn log_failure(what: &str, result: &Result<(), NotifyError>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "{what} not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lang_from_tag() {
        assert_eq!(Lang::from_tag("fr"), Lang::Fr);
        assert_eq!(Lang::from_tag("fr-CA"), Lang::Fr);
        assert_eq!(Lang::from_tag(" FR_be "), Lang::Fr);
        assert_eq!(Lang::from_tag("en-GB"), Lang::En);
        assert_eq!(Lang::from_tag("de"), Lang::En);
        assert_eq!(Lang::from_tag(""), Lang::En);
        assert_eq!(Lang::from_tag("french"), Lang::En);
        assert_eq!(Lang::default(), Lang::En);
        assert_eq!(Lang::Fr.tag(), "fr");
    }

    #[test]
    fn smtp_transport_outside_a_runtime_is_an_error_not_a_panic() {
        let config = EmailConfig {
            transport: EmailTransport::Smtp(SmtpConfig {
                host: "127.0.0.1".into(),
                port: 25,
                security: SmtpSecurity::Plaintext,
                credentials: None,
                ca_file: None,
            }),
            from: "noreply@example.com".parse().expect("mailbox"),
            timeout: Duration::from_secs(10),
        };
        let result = Notifier::new(Some(&config), None, "Acme");
        assert!(matches!(result, Err(NotifyError::Setup(_))), "{result:?}");
    }

    #[tokio::test]
    async fn missing_ca_file_is_a_setup_error() {
        let config = EmailConfig {
            transport: EmailTransport::Smtp(SmtpConfig {
                host: "mail.example.com".into(),
                port: 465,
                security: SmtpSecurity::ImplicitTls,
                credentials: None,
                ca_file: Some("/nonexistent/smtp-ca.pem".into()),
            }),
            from: "noreply@example.com".parse().expect("mailbox"),
            timeout: Duration::from_secs(10),
        };
        match Notifier::new(Some(&config), None, "Acme") {
            Err(NotifyError::Setup(reason)) => {
                assert!(reason.starts_with("email.ca_file: "), "{reason}")
            }
            other => panic!("expected a setup error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unconfigured_channels_refuse() {
        let notifier = Notifier::new(None, None, "Acme").expect("notifier");
        assert!(!notifier.email_enabled());
        assert!(!notifier.sms_enabled());
        assert_eq!(
            notifier
                .send_email_code(
                    "a@example.com",
                    "A",
                    Lang::En,
                    "1",
                    std::time::Duration::from_secs(600),
                )
                .await,
            Err(NotifyError::NotConfigured)
        );
        assert_eq!(
            notifier.send_sms_code("+33612345678", Lang::En, "1").await,
            Err(NotifyError::NotConfigured)
        );
        assert_eq!(
            notifier
                .send_notice("a@example.com", "A", Lang::En, Notice::PasswordChanged)
                .await,
            Err(NotifyError::NotConfigured)
        );
        assert_eq!(notifier.check_smtp().await, Err(NotifyError::NotConfigured));
    }
}
