//! `[email]` and `[sms]`: raw serde sections and their validation.
//!
//! ```toml
//! [email]
//! transport = "smtp"                       # "smtp" (default) or "file"
//! url = "smtps://mail.example.com:465"     # smtps: implicit TLS (default port 465)
//!                                          # smtp: STARTTLS, required (default port 587)
//!                                          # smtp://127.0.0.1:25?tls=none: plaintext, loopback only
//! username = "stepgate"                    # optional SMTP AUTH, with password or password_file
//! password = "..."
//! from = "Stepgate <noreply@example.com>"  # required
//! ca_file = "/etc/ssl/smtp-ca.pem"         # optional extra root for the SMTP server's certificate
//! timeout = "10s"                          # the whole exchange with the server
//! # transport = "file": dir = "outbox"     # each message is written there as NAME.eml
//!
//! [sms]
//! webhook_url = "https://sms.example.com/send"   # http only to 127.0.0.1, ::1 or localhost
//! bearer_token = "..."                           # optional (or bearer_token_file)
//! template = "{code} is your {product} verification code"   # optional; must contain {code}
//! timeout = "10s"
//! ```
//!
//! A section that is absent disables that channel: wire them as `Option<RawEmail>` /
//! `Option<RawSms>` and call [`validate_email`] / [`validate_sms`] only when present.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use serde::Deserialize;

use super::messages::{SMS_PLACEHOLDERS, placeholders};
use crate::config::{ConfigErrors, key_join, parse_duration};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const SMTPS_PORT: u16 = 465;
const SUBMISSION_PORT: u16 = 587;

/// A secret string from the configuration (SMTP password, webhook token). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `[email]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEmail {
    /// `"smtp"` (default) or `"file"`.
    pub transport: Option<String>,
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub from: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Option<String>,
    pub dir: Option<PathBuf>,
}

/// `[sms]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSms {
    pub webhook_url: Option<String>,
    pub bearer_token: Option<Secret>,
    pub bearer_token_file: Option<PathBuf>,
    pub template: Option<String>,
    pub timeout: Option<String>,
}

/// Validated `[email]`.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub transport: EmailTransport,
    pub from: Mailbox,
    /// Deadline for one whole exchange with the SMTP server.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailTransport {
    Smtp(SmtpConfig),
    /// Each message is written to `dir` as an `.eml` file (for tests and demos).
    File {
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// Host name or IP address (IPv6 without brackets); also the name the certificate must match.
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub credentials: Option<SmtpCredentials>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtps://`: TLS from the first byte.
    ImplicitTls,
    /// `smtp://`: the server must accept STARTTLS before anything else is sent.
    StartTls,
    /// `smtp://...?tls=none`: plaintext, accepted only for a loopback host.
    Plaintext,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpCredentials {
    pub username: String,
    pub password: Secret,
}

/// Validated `[sms]`.
#[derive(Debug, Clone)]
pub struct SmsConfig {
    pub webhook_url: http::Uri,
    pub bearer_token: Option<Secret>,
    /// `None`: the built-in text in the recipient's language.
    pub template: Option<String>,
    pub timeout: Duration,
}

/// Checks `[email]`, recording every problem under `email.KEY`. `None` when anything is wrong.
pub fn validate_email(raw: &RawEmail, errors: &mut ConfigErrors) -> Option<EmailConfig> {
    let before = errors.problems().len();
    let timeout = timeout(raw.timeout.as_deref(), "email.timeout", errors);
    let from = match raw.from.as_deref() {
        None => {
            errors.push("email.from", "missing required key");
            None
        }
        Some(from) => {
            match from.trim().parse::<Mailbox>() {
                Ok(mailbox) => Some(mailbox),
                Err(e) => {
                    errors.push(
                    "email.from",
                    format!("{from:?} is not a mailbox such as \"Stepgate <noreply@example.com>\" ({e})"),
                );
                    None
                }
            }
        }
    };
    let transport = match raw.transport.as_deref().unwrap_or("smtp") {
        "smtp" => smtp(raw, errors).map(EmailTransport::Smtp),
        "file" => file(raw, errors),
        other => {
            errors.push(
                "email.transport",
                format!("{other:?} is not a transport: use \"smtp\" or \"file\""),
            );
            None
        }
    };
    if errors.problems().len() != before {
        return None;
    }
    Some(EmailConfig {
        transport: transport?,
        from: from?,
        timeout,
    })
}

fn file(raw: &RawEmail, errors: &mut ConfigErrors) -> Option<EmailTransport> {
    let smtp_only = [
        ("url", raw.url.is_some()),
        ("username", raw.username.is_some()),
        ("password", raw.password.is_some()),
        ("password_file", raw.password_file.is_some()),
        ("ca_file", raw.ca_file.is_some()),
    ];
    for (key, set) in smtp_only {
        if set {
            errors.push(
                key_join("email", key),
                "only used with transport = \"smtp\"",
            );
        }
    }
    match &raw.dir {
        Some(dir) if !dir.as_os_str().is_empty() => Some(EmailTransport::File { dir: dir.clone() }),
        _ => {
            errors.push("email.dir", "required when transport = \"file\"");
            None
        }
    }
}

fn smtp(raw: &RawEmail, errors: &mut ConfigErrors) -> Option<SmtpConfig> {
    if raw.dir.is_some() {
        errors.push("email.dir", "only used with transport = \"file\"");
    }
    let credentials = credentials(raw, errors);
    let Some(url) = raw.url.as_deref() else {
        errors.push("email.url", "required when transport = \"smtp\"");
        return None;
    };
    let (host, port, security) = smtp_url(url, errors)?;
    Some(SmtpConfig {
        host,
        port,
        security,
        credentials: credentials?,
        ca_file: raw.ca_file.clone(),
    })
}

/// `Some(None)`: no AUTH; `None`: a problem was recorded.
fn credentials(raw: &RawEmail, errors: &mut ConfigErrors) -> Option<Option<SmtpCredentials>> {
    let password = match (&raw.password, &raw.password_file) {
        (Some(_), Some(_)) => {
            errors.push(
                "email.password_file",
                "set either email.password or email.password_file, not both",
            );
            return None;
        }
        (Some(p), None) if p.expose().is_empty() => {
            errors.push("email.password", "must not be empty");
            return None;
        }
        (Some(p), None) => Some(p.clone()),
        (None, Some(path)) => Some(read_secret(path, "email.password_file", errors)?),
        (None, None) => None,
    };
    match (&raw.username, password) {
        (None, None) => Some(None),
        (Some(username), Some(password)) if !username.is_empty() => Some(Some(SmtpCredentials {
            username: username.clone(),
            password,
        })),
        (Some(_), Some(_)) => {
            errors.push("email.username", "must not be empty");
            None
        }
        (Some(_), None) => {
            errors.push(
                "email.password",
                "required when email.username is set (or use email.password_file)",
            );
            None
        }
        (None, Some(_)) => {
            errors.push("email.username", "required when a password is set");
            None
        }
    }
}

/// Reads a secret from a file, without its trailing line break.
fn read_secret(path: &Path, key: &str, errors: &mut ConfigErrors) -> Option<Secret> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let value = text.trim_end_matches(['\r', '\n']);
            if value.is_empty() {
                errors.push(key, format!("{} is empty", path.display()));
                None
            } else {
                Some(Secret::new(value))
            }
        }
        Err(e) => {
            errors.push(key, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// `smtps://host[:port]`, `smtp://host[:port][?tls=required]`, `smtp://loopback[:port]?tls=none`.
fn smtp_url(value: &str, errors: &mut ConfigErrors) -> Option<(String, u16, SmtpSecurity)> {
    const KEY: &str = "email.url";
    let url = match url::Url::parse(value.trim()) {
        Ok(url) => url,
        Err(e) => {
            errors.push(KEY, format!("not a URL ({e}; value not shown)"));
            return None;
        }
    };
    let implicit_tls = match url.scheme() {
        "smtps" => true,
        "smtp" => false,
        other => {
            errors.push(
                KEY,
                format!("scheme {other:?} is not supported: use smtps:// (implicit TLS) or smtp:// (STARTTLS)"),
            );
            return None;
        }
    };
    let Some(host) = url_host(&url) else {
        errors.push(KEY, "has no host");
        return None;
    };
    if !url.username().is_empty() || url.password().is_some() {
        errors.push(
            KEY,
            "must not contain credentials: use email.username and email.password",
        );
        return None;
    }
    if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
        errors.push(KEY, "must not have a path or a fragment");
        return None;
    }
    let mut tls: Option<String> = None;
    for (name, v) in url.query_pairs() {
        if name == "tls" && tls.is_none() {
            tls = Some(v.into_owned());
        } else {
            errors.push(
                KEY,
                format!("unsupported query parameter {name:?} (only tls=required or tls=none)"),
            );
            return None;
        }
    }
    let security = match (implicit_tls, tls.as_deref()) {
        (true, None) => SmtpSecurity::ImplicitTls,
        (true, Some(_)) => {
            errors.push(KEY, "smtps:// is always TLS: remove the tls parameter");
            return None;
        }
        (false, None | Some("required")) => SmtpSecurity::StartTls,
        (false, Some("none")) if is_loopback(&host) => SmtpSecurity::Plaintext,
        (false, Some("none")) => {
            errors.push(
                KEY,
                format!(
                    "plaintext SMTP (tls=none) is allowed only to 127.0.0.1, ::1 or localhost, not {host:?}: \
                     use smtps:// or STARTTLS"
                ),
            );
            return None;
        }
        (false, Some(other)) => {
            errors.push(
                KEY,
                format!(
                    "tls={other:?} is not supported: use tls=required (the default) or tls=none"
                ),
            );
            return None;
        }
    };
    let default_port = if implicit_tls {
        SMTPS_PORT
    } else {
        SUBMISSION_PORT
    };
    Some((host, url.port().unwrap_or(default_port), security))
}

/// The URL's host, IPv6 without brackets, lower-cased.
fn url_host(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// 127.0.0.0/8, ::1 or `localhost`: traffic that never leaves the machine.
pub(crate) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn timeout(value: Option<&str>, key: &str, errors: &mut ConfigErrors) -> Duration {
    match value {
        None => DEFAULT_TIMEOUT,
        Some(v) => match parse_duration(v, key, errors) {
            Some(d) if d < Duration::from_secs(1) => {
                errors.push(key, "must be at least 1s");
                DEFAULT_TIMEOUT
            }
            Some(d) => d,
            None => DEFAULT_TIMEOUT,
        },
    }
}

/// Checks `[sms]`, recording every problem under `sms.KEY`. `None` when anything is wrong.
pub fn validate_sms(raw: &RawSms, errors: &mut ConfigErrors) -> Option<SmsConfig> {
    let before = errors.problems().len();
    let timeout = timeout(raw.timeout.as_deref(), "sms.timeout", errors);
    let webhook_url = match raw.webhook_url.as_deref() {
        None => {
            errors.push("sms.webhook_url", "missing required key");
            None
        }
        Some(url) => webhook_url(url, errors),
    };
    let bearer_token = match (&raw.bearer_token, &raw.bearer_token_file) {
        (Some(_), Some(_)) => {
            errors.push(
                "sms.bearer_token_file",
                "set either sms.bearer_token or sms.bearer_token_file, not both",
            );
            None
        }
        (Some(token), None) => Some(token.clone()),
        (None, Some(path)) => read_secret(path, "sms.bearer_token_file", errors),
        (None, None) => None,
    };
    if let Some(token) = &bearer_token {
        let usable =
            !token.expose().is_empty() && token.expose().bytes().all(|b| b.is_ascii_graphic());
        if !usable {
            errors.push(
                if raw.bearer_token.is_some() {
                    "sms.bearer_token"
                } else {
                    "sms.bearer_token_file"
                },
                "must be non-empty printable ASCII without spaces",
            );
        }
    }
    if let Some(template) = &raw.template {
        if !template.contains("{code}") {
            errors.push("sms.template", "must contain {code}");
        }
        for name in placeholders(template) {
            if !SMS_PLACEHOLDERS.contains(&name) {
                errors.push(
                    "sms.template",
                    format!("unknown placeholder {{{name}}} (use {{code}} and {{product}})"),
                );
            }
        }
    }
    if errors.problems().len() != before {
        return None;
    }
    Some(SmsConfig {
        webhook_url: webhook_url?,
        bearer_token,
        template: raw.template.clone(),
        timeout,
    })
}

fn webhook_url(value: &str, errors: &mut ConfigErrors) -> Option<http::Uri> {
    const KEY: &str = "sms.webhook_url";
    let url = match url::Url::parse(value.trim()) {
        Ok(url) => url,
        Err(e) => {
            errors.push(KEY, format!("not a URL ({e}; value not shown)"));
            return None;
        }
    };
    let host = url_host(&url);
    match (url.scheme(), host.as_deref()) {
        ("https", Some(_)) => {}
        ("http", Some(host)) if is_loopback(host) => {}
        ("http", Some(host)) => {
            errors.push(
                KEY,
                format!(
                    "plain http is allowed only to 127.0.0.1, ::1 or localhost, not {host:?}: use https"
                ),
            );
            return None;
        }
        ("http" | "https", None) => {
            errors.push(KEY, "has no host");
            return None;
        }
        (other, _) => {
            errors.push(KEY, format!("scheme {other:?} is not supported: use https"));
            return None;
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        errors.push(KEY, "must not contain credentials: use sms.bearer_token");
        return None;
    }
    if url.fragment().is_some() {
        errors.push(KEY, "must not have a fragment");
        return None;
    }
    match url.as_str().parse::<http::Uri>() {
        Ok(uri) => Some(uri),
        Err(e) => {
            errors.push(KEY, format!("not a usable URL ({e}; value not shown)"));
            None
        }
    }
}

#[cfg(test)]
mod tests;
