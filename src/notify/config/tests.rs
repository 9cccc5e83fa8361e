use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    email: Option<RawEmail>,
    sms: Option<RawSms>,
}

fn doc(toml: &str) -> Doc {
    Figment::from(Toml::string(toml))
        .extract()
        .expect("TOML matches the raw types")
}

fn email(toml: &str) -> Result<EmailConfig, ConfigErrors> {
    let raw = doc(toml).email.expect("[email] section");
    let mut errors = ConfigErrors::default();
    let config = validate_email(&raw, &mut errors);
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => {
            assert!(!errors.is_empty(), "None without a problem");
            Err(errors)
        }
    }
}

fn sms(toml: &str) -> Result<SmsConfig, ConfigErrors> {
    let raw = doc(toml).sms.expect("[sms] section");
    let mut errors = ConfigErrors::default();
    let config = validate_sms(&raw, &mut errors);
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => {
            assert!(!errors.is_empty(), "None without a problem");
            Err(errors)
        }
    }
}

fn problems(errors: &ConfigErrors) -> Vec<String> {
    errors.problems().iter().map(|p| p.to_string()).collect()
}

fn smtp_of(config: &EmailConfig) -> &SmtpConfig {
    match &config.transport {
        EmailTransport::Smtp(smtp) => smtp,
        other => panic!("expected SMTP, got {other:?}"),
    }
}

const FROM: &str = r#"from = "Stepgate <noreply@example.com>""#;

#[test]
fn absent_sections_mean_no_channel() {
    let d = doc("");
    assert!(d.email.is_none());
    assert!(d.sms.is_none());
}

#[test]
fn smtps_url_means_implicit_tls_on_465() {
    let config = email(&format!(
        "[email]\nurl = \"smtps://Mail.Example.com\"\n{FROM}\ntimeout = \"5s\""
    ))
    .expect("valid");
    let smtp = smtp_of(&config);
    assert_eq!(smtp.host, "mail.example.com");
    assert_eq!(smtp.port, 465);
    assert_eq!(smtp.security, SmtpSecurity::ImplicitTls);
    assert_eq!(smtp.credentials, None);
    assert_eq!(config.timeout, Duration::from_secs(5));
    assert_eq!(config.from.email.to_string(), "noreply@example.com");
    assert_eq!(config.from.name.as_deref(), Some("Stepgate"));
}

#[test]
fn smtp_url_means_required_starttls_on_587() {
    for url in [
        "smtp://mail.example.com",
        "smtp://mail.example.com?tls=required",
    ] {
        let config = email(&format!("[email]\nurl = \"{url}\"\n{FROM}")).expect("valid");
        let smtp = smtp_of(&config);
        assert_eq!(smtp.port, 587, "{url}");
        assert_eq!(smtp.security, SmtpSecurity::StartTls, "{url}");
        assert_eq!(config.timeout, Duration::from_secs(10));
    }
    let config = email(&format!("[email]\nurl = \"smtp://[::1]:2525\"\n{FROM}")).expect("valid");
    assert_eq!(smtp_of(&config).host, "::1");
    assert_eq!(smtp_of(&config).port, 2525);
}

#[test]
fn plaintext_smtp_is_allowed_to_loopback_only() {
    for host in ["127.0.0.1", "localhost", "[::1]", "127.0.0.5"] {
        let config = email(&format!(
            "[email]\nurl = \"smtp://{host}:25?tls=none\"\n{FROM}"
        ))
        .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(smtp_of(&config).security, SmtpSecurity::Plaintext);
    }
}

#[test]
fn rejects_plaintext_smtp_to_a_remote_host() {
    for host in [
        "mail.example.com",
        "10.0.0.1",
        "localhost.example.com",
        "[::2]",
    ] {
        let errors = email(&format!(
            "[email]\nurl = \"smtp://{host}:25?tls=none\"\n{FROM}"
        ))
        .expect_err(host);
        assert_eq!(errors.problems().len(), 1, "{errors}");
        assert_eq!(errors.problems()[0].key, "email.url");
        assert!(
            errors.problems()[0].reason.contains("plaintext"),
            "{errors}"
        );
    }
}

#[test]
fn rejects_bad_smtp_urls_with_their_key() {
    let cases = [
        (
            "http://mail.example.com",
            "scheme \"http\" is not supported",
        ),
        ("mail.example.com:25", "is not supported"),
        ("not a url", "not a URL"),
        (
            "smtps://user:secret@mail.example.com",
            "must not contain credentials",
        ),
        (
            "smtps://mail.example.com?tls=none",
            "smtps:// is always TLS",
        ),
        (
            "smtp://mail.example.com?tls=opportunistic",
            "tls=\"opportunistic\"",
        ),
        (
            "smtp://mail.example.com?foo=bar",
            "unsupported query parameter",
        ),
        ("smtp://mail.example.com/path", "must not have a path"),
    ];
    for (url, reason) in cases {
        let errors = email(&format!("[email]\nurl = \"{url}\"\n{FROM}")).expect_err(url);
        let all = problems(&errors);
        assert_eq!(errors.problems()[0].key, "email.url", "{url}: {all:?}");
        assert!(
            errors.problems()[0].reason.contains(reason),
            "{url}: {all:?}"
        );
        assert!(!errors.to_string().contains("secret"), "{url}: {all:?}");
    }
}

#[test]
fn from_is_required_and_parsed() {
    let errors = email("[email]\nurl = \"smtps://mail.example.com\"").expect_err("no from");
    assert_eq!(problems(&errors), ["email.from: missing required key"]);
    let errors = email("[email]\nurl = \"smtps://mail.example.com\"\nfrom = \"not a mailbox\"")
        .expect_err("bad from");
    assert_eq!(errors.problems()[0].key, "email.from");
    let errors = email("[email]\ntransport = \"file\"\ndir = \"outbox\"").expect_err("no from");
    assert_eq!(problems(&errors), ["email.from: missing required key"]);
}

#[test]
fn credentials_need_username_and_one_password() {
    let config = email(&format!(
        "[email]\nurl = \"smtps://mail.example.com\"\n{FROM}\nusername = \"stepgate\"\npassword = \"hunter2\""
    ))
    .expect("valid");
    let creds = smtp_of(&config).credentials.clone().expect("credentials");
    assert_eq!(creds.username, "stepgate");
    assert_eq!(creds.password.expose(), "hunter2");

    let errors = email(&format!(
        "[email]\nurl = \"smtps://mail.example.com\"\n{FROM}\nusername = \"stepgate\""
    ))
    .expect_err("no password");
    assert_eq!(errors.problems()[0].key, "email.password");

    let errors = email(&format!(
        "[email]\nurl = \"smtps://mail.example.com\"\n{FROM}\npassword = \"hunter2\""
    ))
    .expect_err("no username");
    assert_eq!(errors.problems()[0].key, "email.username");

    let errors = email(&format!(
        "[email]\nurl = \"smtps://mail.example.com\"\n{FROM}\nusername = \"u\"\npassword = \"p\"\npassword_file = \"/nonexistent\""
    ))
    .expect_err("both");
    assert_eq!(errors.problems()[0].key, "email.password_file");
}

#[test]
fn an_empty_password_is_refused() {
    let errors = email(&format!(
        "[email]\nurl = \"smtps://mail.example.com\"\n{FROM}\nusername = \"u\"\npassword = \"\""
    ))
    .expect_err("empty password");
    assert_eq!(errors.problems()[0].key, "email.password");
    assert!(errors.to_string().contains("must not be empty"), "{errors}");
}

#[test]
fn password_file_is_read_without_its_line_break() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("smtp-password");
    std::fs::write(&path, "s3cret\n").expect("write");
    let config = email(&format!(
        "[email]\nurl = \"smtps://mail.example.com\"\n{FROM}\nusername = \"u\"\npassword_file = {:?}",
        path.display().to_string()
    ))
    .expect("valid");
    let creds = smtp_of(&config).credentials.clone().expect("credentials");
    assert_eq!(creds.password.expose(), "s3cret");

    let missing = dir.path().join("missing");
    let errors = email(&format!(
        "[email]\nurl = \"smtps://mail.example.com\"\n{FROM}\nusername = \"u\"\npassword_file = {:?}",
        missing.display().to_string()
    ))
    .expect_err("missing file");
    assert_eq!(errors.problems()[0].key, "email.password_file");
    assert!(errors.problems()[0].reason.starts_with("cannot read"));
}

#[test]
fn smtp_password_never_shows_in_debug() {
    let config = email(&format!(
        "[email]\nurl = \"smtps://mail.example.com\"\n{FROM}\nusername = \"u\"\npassword = \"hunter2\""
    ))
    .expect("valid");
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
    let raw = doc("[email]\npassword = \"hunter2\"")
        .email
        .expect("section");
    assert!(!format!("{raw:?}").contains("hunter2"));
}

#[test]
fn file_transport_needs_dir_and_refuses_smtp_keys() {
    let config = email(&format!(
        "[email]\ntransport = \"file\"\ndir = \"outbox\"\n{FROM}"
    ))
    .expect("valid");
    assert_eq!(
        config.transport,
        EmailTransport::File {
            dir: PathBuf::from("outbox")
        }
    );
    let errors = email(&format!(
        "[email]\ntransport = \"file\"\n{FROM}\nurl = \"smtps://mail.example.com\"\nca_file = \"ca.pem\""
    ))
    .expect_err("no dir");
    let keys: Vec<&str> = errors.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["email.url", "email.ca_file", "email.dir"]);
}

#[test]
fn the_file_transport_creates_its_directory_for_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("mail").join("outbox");
    let config = email(&format!(
        "[email]\ntransport = \"file\"\ndir = {:?}\n{FROM}",
        dir.display().to_string()
    ))
    .expect("valid");
    crate::notify::mail::MailSender::new(&config).expect("sender");
    for d in [tmp.path().join("mail"), dir] {
        let mode = std::fs::metadata(&d).expect("created").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{}: mode {mode:o}", d.display());
    }
}

#[test]
fn every_email_problem_is_reported_at_once() {
    let errors = email(
        "[email]\ntransport = \"smtp\"\nurl = \"ftp://x\"\nfrom = \"nope\"\ntimeout = \"0s\"\ndir = \"d\"",
    )
    .expect_err("invalid");
    let keys: Vec<&str> = errors.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["email.timeout", "email.from", "email.dir", "email.url"]
    );
    let errors = email(&format!("[email]\ntransport = \"carrier-pigeon\"\n{FROM}")).expect_err("t");
    assert_eq!(errors.problems()[0].key, "email.transport");
}

#[test]
fn unknown_email_keys_are_refused() {
    let err = Figment::from(Toml::string("[email]\nhost = \"mail.example.com\""))
        .extract::<Doc>()
        .expect_err("unknown key");
    assert!(err.to_string().contains("host"), "{err}");
}

#[test]
fn sms_config_is_read() {
    let config = sms(
        "[sms]\nwebhook_url = \"https://sms.example.com/send\"\nbearer_token = \"tok-123\"\ntemplate = \"{product}: {code}\"\ntimeout = \"3s\"",
    )
    .expect("valid");
    assert_eq!(
        config.webhook_url.to_string(),
        "https://sms.example.com/send"
    );
    assert_eq!(
        config.bearer_token.as_ref().map(Secret::expose),
        Some("tok-123")
    );
    assert_eq!(config.template.as_deref(), Some("{product}: {code}"));
    assert_eq!(config.timeout, Duration::from_secs(3));
    assert!(!format!("{config:?}").contains("tok-123"));
}

#[test]
fn sms_template_must_contain_code() {
    let errors = sms(
        "[sms]\nwebhook_url = \"https://sms.example.com/send\"\ntemplate = \"Your {product} code\"",
    )
    .expect_err("no code");
    assert_eq!(problems(&errors), ["sms.template: must contain {code}"]);
    let errors = sms(
        "[sms]\nwebhook_url = \"https://sms.example.com/send\"\ntemplate = \"{code} for {user}\"",
    )
    .expect_err("unknown placeholder");
    assert_eq!(errors.problems()[0].key, "sms.template");
    assert!(errors.problems()[0].reason.contains("{user}"));
}

#[test]
fn rejects_bad_webhook_urls_with_their_key() {
    let cases = [
        ("ftp://sms.example.com/send", "scheme"),
        ("http://sms.example.com/send", "plain http"),
        ("https://user:pw@sms.example.com/send", "credentials"),
        ("nope", "not a URL"),
    ];
    for (url, reason) in cases {
        let errors = sms(&format!("[sms]\nwebhook_url = \"{url}\"")).expect_err(url);
        assert_eq!(errors.problems()[0].key, "sms.webhook_url", "{url}");
        assert!(
            errors.problems()[0].reason.contains(reason),
            "{url}: {errors}"
        );
    }
    sms("[sms]\nwebhook_url = \"http://127.0.0.1:9000/send\"").expect("loopback http");
    // A URL that does not parse is never repeated: its query may hold a key.
    for url in [
        "https://sms.example.com:84x3/send?api_key=SECRET",
        "https://user:SECRET@sms.example.com/send",
    ] {
        let errors = sms(&format!("[sms]\nwebhook_url = \"{url}\"")).expect_err(url);
        assert!(!errors.to_string().contains("SECRET"), "{errors}");
    }
    let errors = sms("[sms]\ntemplate = \"{code}\"").expect_err("missing url");
    assert_eq!(problems(&errors), ["sms.webhook_url: missing required key"]);
}

#[test]
fn rejects_bearer_token_with_line_break() {
    let errors = sms(
        "[sms]\nwebhook_url = \"https://sms.example.com/send\"\nbearer_token = \"abc\\r\\nX-Injected: 1\"",
    )
    .expect_err("bad token");
    assert_eq!(errors.problems()[0].key, "sms.bearer_token");
    assert!(!errors.to_string().contains("abc"));
}
