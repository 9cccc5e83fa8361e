//! Email delivery against a real SMTP server in the test process: plaintext loopback, STARTTLS
//! and implicit TLS with a test CA, AUTH, refusals, the connection check and the file transport.

mod common;

/// How long the codes of these tests are said to last (`mfa.code_ttl`'s default).
const CODE_TTL: std::time::Duration = std::time::Duration::from_secs(600);

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use figment::Figment;
use figment::providers::{Format, Toml};
use mail_parser::MessageParser;

use common::{SmtpServer, TestCa, refused_addr, toml_string};
use stepgate::clock::{ManualClock, Timestamp};
use stepgate::config::ConfigErrors;
use stepgate::notify::{
    EmailConfig, Lang, Notice, Notifier, NotifyError, RawEmail, validate_email,
};

const CODE: &str = "482913";
const FROM: &str = "Stepgate <noreply@example.com>";
/// 2026-05-04T10:20:30Z
const NOW_MS: i64 = 1_777_890_030_000;

fn email_config(toml: &str) -> EmailConfig {
    #[derive(serde::Deserialize)]
    struct Doc {
        email: RawEmail,
    }
    let doc: Doc = Figment::from(Toml::string(toml))
        .extract()
        .expect("[email] section");
    let mut errors = ConfigErrors::default();
    let config = validate_email(&doc.email, &mut errors);
    assert!(errors.is_empty(), "{errors}");
    config.expect("valid [email]")
}

fn smtp_toml(url: &str, extra: &str) -> String {
    format!(
        "[email]\nurl = {}\nfrom = {}\ntimeout = \"10s\"\n{extra}",
        toml_string(url),
        toml_string(FROM)
    )
}

fn notifier(toml: &str) -> Notifier {
    Notifier::new(Some(&email_config(toml)), None, "Acme Portal")
        .expect("notifier")
        .with_clock(Arc::new(ManualClock::new(Timestamp(NOW_MS))))
}

fn plaintext(server: &SmtpServer) -> Notifier {
    notifier(&smtp_toml(
        &format!("smtp://127.0.0.1:{}?tls=none", server.port()),
        "",
    ))
}

fn ca_file(ca: &TestCa) -> String {
    format!(
        "ca_file = {}",
        toml_string(&ca.ca_path().display().to_string())
    )
}

#[tokio::test]
async fn code_mail_over_plaintext_loopback_smtp() {
    let server = SmtpServer::start().await;
    let notifier = plaintext(&server);
    assert!(notifier.email_enabled());
    notifier
        .send_email_code("ada@example.com", "Ada Lovelace", Lang::En, CODE, CODE_TTL)
        .await
        .expect("sent");

    let mail = server.wait_for_message(1).await.remove(0);
    assert_eq!(mail.from, "noreply@example.com");
    assert_eq!(mail.to, ["ada@example.com"]);
    assert!(!mail.tls);
    assert_eq!(mail.authenticated_as, None);

    let raw = mail.data_str();
    assert!(raw.contains("multipart/alternative"), "{raw}");
    let parsed = MessageParser::default()
        .parse(&mail.data)
        .expect("parseable message");
    assert_eq!(parsed.subject(), Some("Your Acme Portal verification code"));
    let to = parsed.to().and_then(|a| a.first()).expect("To");
    assert_eq!(to.name(), Some("Ada Lovelace"));
    assert_eq!(to.address(), Some("ada@example.com"));
    assert_eq!(
        parsed
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("noreply@example.com")
    );
    assert_eq!(parsed.date().map(|d| d.to_timestamp()), Some(NOW_MS / 1000));

    assert_eq!(parsed.text_body_count(), 1);
    assert_eq!(parsed.html_body_count(), 1);
    let text = parsed.body_text(0).expect("text part");
    let html = parsed.body_html(0).expect("html part");
    assert!(text.contains(CODE), "{text}");
    assert!(text.contains("valid for 10 minutes"), "{text}");
    assert!(
        text.contains("If you did not try to sign in, change your password"),
        "{text}"
    );
    assert!(!text.contains("<p>"), "{text}");
    assert!(html.contains(CODE), "{html}");
    assert!(html.contains("<p>Hello Ada Lovelace,</p>"), "{html}");
}

#[tokio::test]
async fn code_mail_in_french() {
    let server = SmtpServer::start().await;
    plaintext(&server)
        .send_email_code(
            "zoe@example.fr",
            "Zoé",
            Lang::from_tag("fr-CA"),
            CODE,
            CODE_TTL,
        )
        .await
        .expect("sent");
    let mail = server.wait_for_message(1).await.remove(0);
    let parsed = MessageParser::default()
        .parse(&mail.data)
        .expect("parseable");
    assert_eq!(
        parsed.subject(),
        Some("Votre code de vérification Acme Portal")
    );
    let text = parsed.body_text(0).expect("text part");
    assert!(text.contains("Bonjour Zoé,"), "{text}");
    assert!(text.contains(CODE), "{text}");
    assert!(text.contains("valable 10 minutes"), "{text}");
    assert!(text.contains("changez votre mot de passe"), "{text}");
    let html = parsed.body_html(0).expect("html part");
    assert!(html.contains("lang=\"fr\""), "{html}");
    assert!(html.contains(CODE), "{html}");
}

#[tokio::test]
async fn notice_mail_is_sent() {
    let server = SmtpServer::start().await;
    plaintext(&server)
        .send_notice(
            "ada@example.com",
            "Ada",
            Lang::En,
            Notice::BackupCodeUsed { remaining: 2 },
        )
        .await
        .expect("sent");
    let mail = server.wait_for_message(1).await.remove(0);
    let parsed = MessageParser::default()
        .parse(&mail.data)
        .expect("parseable");
    assert_eq!(
        parsed.subject(),
        Some("Acme Portal: a backup code was used")
    );
    let text = parsed.body_text(0).expect("text part");
    assert!(text.contains("Backup codes left: 2."), "{text}");
    assert!(
        parsed
            .body_html(0)
            .expect("html")
            .contains("Backup codes left: 2.")
    );
}

#[tokio::test]
async fn code_mail_over_starttls_with_the_configured_ca() {
    let ca = TestCa::new();
    let server = SmtpServer::start_starttls(&ca).await;
    let notifier = notifier(&smtp_toml(
        &format!("smtp://127.0.0.1:{}", server.port()),
        &ca_file(&ca),
    ));
    notifier
        .send_email_code("ada@example.com", "Ada", Lang::En, CODE, CODE_TTL)
        .await
        .expect("sent");
    let mail = server.wait_for_message(1).await.remove(0);
    assert!(mail.tls, "the message must travel after STARTTLS");
    assert!(mail.data_str().contains("multipart/alternative"));
}

#[tokio::test]
async fn code_mail_over_implicit_tls() {
    let ca = TestCa::new();
    let server = SmtpServer::builder().implicit_tls(&ca).start().await;
    let notifier = notifier(&smtp_toml(
        &format!("smtps://127.0.0.1:{}", server.port()),
        &ca_file(&ca),
    ));
    notifier
        .send_email_code("ada@example.com", "Ada", Lang::En, CODE, CODE_TTL)
        .await
        .expect("sent");
    let mail = server.wait_for_message(1).await.remove(0);
    assert!(mail.tls);
}

#[tokio::test]
async fn refuses_to_send_when_the_server_offers_no_starttls() {
    // A server (or an attacker in the path) that does not offer STARTTLS must not receive the
    // code in plaintext.
    let server = SmtpServer::start().await;
    let notifier = notifier(&smtp_toml(
        &format!("smtp://127.0.0.1:{}", server.port()),
        "",
    ));
    let err = notifier
        .send_email_code("ada@example.com", "Ada", Lang::En, CODE, CODE_TTL)
        .await
        .expect_err("plaintext refused");
    assert!(matches!(err, NotifyError::Send(_)), "{err:?}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn rejects_smtp_server_with_untrusted_certificate() {
    let ca = TestCa::new();
    let server = SmtpServer::start_starttls(&ca).await;
    // No ca_file: the test CA is not among the trusted roots.
    let notifier = notifier(&smtp_toml(
        &format!("smtp://127.0.0.1:{}", server.port()),
        "",
    ));
    let err = notifier
        .send_email_code("ada@example.com", "Ada", Lang::En, CODE, CODE_TTL)
        .await
        .expect_err("untrusted certificate");
    assert!(matches!(err, NotifyError::Send(_)), "{err:?}");
    assert!(server.messages().is_empty());
    assert!(notifier.check_smtp().await.is_err());
}

#[tokio::test]
async fn rejects_smtp_certificate_for_another_name() {
    let ca = TestCa::new();
    let server = SmtpServer::builder().implicit_tls(&ca).start().await;
    // The certificate names localhost, 127.0.0.1 and ::1, not 127.0.0.2 (still loopback here).
    let notifier = notifier(&smtp_toml(
        &format!("smtps://127.0.0.2:{}", server.port()),
        &ca_file(&ca),
    ));
    let result = notifier
        .send_email_code("ada@example.com", "Ada", Lang::En, CODE, CODE_TTL)
        .await;
    assert!(result.is_err(), "{result:?}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn auth_credentials_are_used() {
    let ca = TestCa::new();
    let server = SmtpServer::builder()
        .starttls(&ca)
        .auth("stepgate", "s3cret")
        .start()
        .await;
    let notifier = notifier(&smtp_toml(
        &format!("smtp://127.0.0.1:{}", server.port()),
        &format!(
            "{}\nusername = \"stepgate\"\npassword = \"s3cret\"",
            ca_file(&ca)
        ),
    ));
    notifier.check_smtp().await.expect("check with AUTH");
    notifier
        .send_email_code("ada@example.com", "Ada", Lang::En, CODE, CODE_TTL)
        .await
        .expect("sent");
    let mail = server.wait_for_message(1).await.remove(0);
    assert_eq!(mail.authenticated_as.as_deref(), Some("stepgate"));
    assert!(
        server
            .auth_attempts()
            .iter()
            .all(|a| a.accepted && a.username == "stepgate")
    );
}

#[tokio::test]
async fn server_requiring_auth_refuses_a_mailer_without_credentials() {
    let ca = TestCa::new();
    let server = SmtpServer::builder()
        .starttls(&ca)
        .auth("stepgate", "s3cret")
        .start()
        .await;
    let notifier = notifier(&smtp_toml(
        &format!("smtp://127.0.0.1:{}", server.port()),
        &ca_file(&ca),
    ));
    let result = notifier
        .send_email_code("ada@example.com", "Ada", Lang::En, CODE, CODE_TTL)
        .await;
    assert!(matches!(result, Err(NotifyError::Send(_))), "{result:?}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn server_refusing_recipients_is_an_error() {
    let server = SmtpServer::builder().refuse_recipients().start().await;
    let result = plaintext(&server)
        .send_email_code("ada@example.com", "Ada", Lang::En, CODE, CODE_TTL)
        .await;
    match result {
        Err(NotifyError::Send(reason)) => assert!(reason.contains("550"), "{reason}"),
        other => panic!("expected a send error, got {other:?}"),
    }
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn server_refusing_data_is_an_error() {
    let server = SmtpServer::builder().refuse_data().start().await;
    let result = plaintext(&server)
        .send_notice("ada@example.com", "Ada", Lang::En, Notice::PasswordChanged)
        .await;
    match result {
        Err(NotifyError::Send(reason)) => assert!(reason.contains("554"), "{reason}"),
        other => panic!("expected a send error, got {other:?}"),
    }
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn check_smtp_against_a_live_server_and_a_refused_port() {
    let server = SmtpServer::start().await;
    plaintext(&server).check_smtp().await.expect("server is up");
    assert!(server.connections() >= 1);
    assert!(server.messages().is_empty());

    let down = notifier(&smtp_toml(
        &format!("smtp://127.0.0.1:{}?tls=none", refused_addr().port()),
        "",
    ));
    let err = down.check_smtp().await.expect_err("nothing listens");
    assert!(matches!(err, NotifyError::Send(_)), "{err:?}");
    let err = down
        .send_email_code("ada@example.com", "Ada", Lang::En, CODE, CODE_TTL)
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, NotifyError::Send(_)), "{err:?}");
}

#[tokio::test]
async fn invalid_recipient_is_refused_before_connecting() {
    let server = SmtpServer::start().await;
    let notifier = plaintext(&server);
    for to in [
        "not-an-address",
        "",
        "ada@example.com\r\nRCPT TO:<x@evil.example>",
    ] {
        let result = notifier
            .send_email_code(to, "Ada", Lang::En, CODE, CODE_TTL)
            .await;
        assert_eq!(result, Err(NotifyError::InvalidAddress), "{to:?}");
    }
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn rejects_header_injection_through_display_name() {
    let server = SmtpServer::start().await;
    plaintext(&server)
        .send_email_code(
            "ada@example.com",
            "Eve\r\nBcc: mallory@evil.example\r\nX-Injected: 1",
            Lang::En,
            CODE,
            CODE_TTL,
        )
        .await
        .expect("sent");
    let mail = server.wait_for_message(1).await.remove(0);
    assert_eq!(mail.to, ["ada@example.com"]);
    let raw = mail.data_str();
    let headers = raw.split("\r\n\r\n").next().unwrap_or_default();
    assert!(headers.contains("\r\nSubject: "), "{raw}");
    for line in headers.lines() {
        assert!(!line.starts_with("Bcc:"), "{raw}");
        assert!(!line.starts_with("X-Injected:"), "{raw}");
    }
    let parsed = MessageParser::default()
        .parse(&mail.data)
        .expect("parseable");
    assert!(parsed.bcc().is_none());
    assert_eq!(
        parsed
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("ada@example.com")
    );
}

#[tokio::test]
async fn file_transport_writes_a_parseable_eml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = dir.path().join("outbox");
    let notifier = notifier(&format!(
        "[email]\ntransport = \"file\"\ndir = {}\nfrom = {}",
        toml_string(&outbox.display().to_string()),
        toml_string(FROM)
    ));
    assert!(outbox.is_dir(), "the directory is created up front");
    notifier.check_smtp().await.expect("directory exists");
    notifier
        .send_email_code("ada@example.com", "Ada", Lang::Fr, CODE, CODE_TTL)
        .await
        .expect("written");

    let files: Vec<_> = std::fs::read_dir(&outbox)
        .expect("read outbox")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("eml"));
    let raw = std::fs::read(&files[0]).expect("read eml");
    let parsed = MessageParser::default().parse(&raw).expect("parseable eml");
    assert_eq!(
        parsed.subject(),
        Some("Votre code de vérification Acme Portal")
    );
    assert!(parsed.body_text(0).expect("text").contains(CODE));
    assert!(parsed.body_html(0).expect("html").contains(CODE));
    let date = parsed.date().expect("Date").to_timestamp();
    let expected = SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS as u64);
    assert_eq!(
        date,
        expected
            .duration_since(UNIX_EPOCH)
            .expect("after epoch")
            .as_secs() as i64
    );
}
