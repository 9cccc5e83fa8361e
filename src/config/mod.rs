//! Configuration: figment reads TOML plus `STEPGATE_SECTION__KEY` environment overrides into raw
//! serde types ([`raw`]), which [`validate`] turns into a [`Config`], reporting every problem with
//! its key path.

mod problem;
pub mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use http::Uri;
use ipnet::IpNet;

pub use problem::{ConfigErrors, ConfigProblem, key_join, parse_duration};
pub use validate::{parse_portal_url, validate};

use crate::policy::host::HostPattern;

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: Limits,
    pub upstreams: Vec<UpstreamConfig>,
    pub portal: PortalConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    pub identity_headers: IdentityHeaders,
    pub access: crate::policy::AccessConfig,
    pub password: crate::auth::password::PasswordSettings,
    pub session: crate::auth::session::SessionConfig,
    pub regulation: crate::auth::regulation::RegulationSettings,
    pub mfa: crate::auth::factors::MfaSettings,
    /// `None`: no `[email]` section, no email codes or notices.
    pub email: Option<crate::notify::EmailConfig>,
    pub sms: Option<crate::notify::SmsConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Option<SocketAddr>,
    pub tls_listen: Option<SocketAddr>,
    pub tls: Option<TlsFiles>,
    pub redirect_http_to_https: bool,
    pub trusted_proxies: Vec<IpNet>,
    /// Threads serving connections; each runs its own event loop and upstream pools, and a
    /// connection stays on the thread that received it.
    pub workers: usize,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// An HTTP/1.1 keep-alive connection quiet for this long gives back its buffers and keeps
    /// only its socket until the next request (or `idle_timeout`).
    pub idle_release_after: Duration,
    /// An upgraded connection (WebSocket) that moves no byte in either direction for this long
    /// is closed. Unset: `idle_timeout`.
    pub tunnel_idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    /// Connections one client network (an IPv4 address, an IPv6 /48) may hold open at once;
    /// trusted proxies are exempt. Unset: [`Limits::default_per_client`].
    pub max_connections_per_client: usize,
    /// Memory for the form bodies being read at once, all clients together (portal forms,
    /// forms held for step-up): a form that would go over it is refused with 429.
    pub max_form_memory_bytes: usize,
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            idle_release_after: Duration::from_secs(2),
            tunnel_idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            max_connections_per_client: Limits::default_per_client(10_000),
            max_form_memory_bytes: 64 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// A client network may hold an eighth of `max_connections` open unless configured: eight
    /// networks are needed to fill the gateway, while an office behind one NAT address (a
    /// browser opens up to six connections to each host it uses) still has room for hundreds
    /// of users. At least 64 (all of them when there are fewer).
    pub fn default_per_client(max_connections: usize) -> usize {
        (max_connections / 8).max(64).min(max_connections)
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `None`: the default upstream, used when no host pattern matches.
    pub host: Option<HostPattern>,
    /// Scheme and authority only (`http://127.0.0.1:3000`).
    pub url: Uri,
    pub ca_file: Option<PathBuf>,
    pub native_roots: bool,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub preserve_host: bool,
    /// Idle keep-alive connections kept open to this upstream; more are closed once idle.
    pub max_idle_connections: usize,
    /// Connections open to this upstream at once (idle, in use or closing), shared evenly
    /// among the worker threads; a request that finds them all busy waits up to
    /// `connect_timeout` for one, then gets 503.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// Path prefix reserved for the gateway's own pages, e.g. `/.stepgate` (no trailing slash).
    pub prefix: String,
    pub title: String,
    /// Where users sign in when the portal has its own host (`https://auth.example.com`): scheme
    /// and authority only. `None`: the portal is reached on each application's own host.
    pub url: Option<String>,
    pub logo: Option<Logo>,
    /// `#rrggbb`, lower case.
    pub accent: Option<String>,
}

impl Default for PortalConfig {
    /// What an empty `[portal]` section gives: the default prefix and title, no branding.
    fn default() -> Self {
        PortalConfig {
            prefix: validate::DEFAULT_PREFIX.to_string(),
            title: validate::DEFAULT_TITLE.to_string(),
            url: None,
            logo: None,
            accent: None,
        }
    }
}

/// The operator's logo, read into memory at startup and served by the portal.
#[derive(Clone)]
pub struct Logo {
    pub bytes: std::sync::Arc<[u8]>,
    pub content_type: &'static str,
    /// A short hash of the bytes, for a URL that can be cached forever.
    pub version: String,
}

impl Logo {
    pub fn new(bytes: Vec<u8>, content_type: &'static str) -> Logo {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&bytes);
        let version = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Logo {
            bytes: bytes.into(),
            content_type,
            version,
        }
    }
}

impl std::fmt::Debug for Logo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logo")
            .field("content_type", &self.content_type)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    /// Default: the store path with `.key` appended (`data` -> `data.key`).
    pub key_file: PathBuf,
    /// How many audit events the store keeps; housekeeping removes the oldest beyond it.
    pub audit_max_events: usize,
}

impl StorageConfig {
    /// Default of `storage.audit_max_events`: a few megabytes of events.
    pub const DEFAULT_AUDIT_MAX_EVENTS: usize = 100_000;
    /// Fewer would lose the trail of a single busy hour.
    pub const MIN_AUDIT_MAX_EVENTS: usize = 1_000;
}

/// Names of the headers that carry the authenticated identity to the upstream.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub user: http::HeaderName,
    pub email: http::HeaderName,
    pub name: http::HeaderName,
    pub groups: http::HeaderName,
}

impl IdentityHeaders {
    /// Every header name a client must never be able to send upstream: the configured names,
    /// the default names (in case the upstream reads them anyway) and `Remote-Auth-Time`.
    pub fn protected(&self) -> Vec<String> {
        let mut names: Vec<&str> = vec![
            self.user.as_str(),
            self.email.as_str(),
            self.name.as_str(),
            self.groups.as_str(),
        ];
        names.extend(DEFAULT_IDENTITY_HEADERS);
        names.push("Remote-Auth-Time");
        let mut folded = crate::proxy::headers::fold_names(names);
        folded.sort();
        folded.dedup();
        folded
    }
}

/// Default identity header names (header names are case-insensitive; HTTP/2 sends them lower-case).
pub const DEFAULT_IDENTITY_HEADERS: [&str; 4] = [
    "remote-user",
    "remote-email",
    "remote-name",
    "remote-groups",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// Where the configuration comes from: the TOML file, then `STEPGATE_SECTION__KEY` variables.
pub fn figment(path: &Path) -> Figment {
    Figment::new()
        .merge(Toml::file_exact(path))
        .merge(env_provider())
}

/// `STEPGATE_SERVER__LISTEN=...` overrides `server.listen`. `STEPGATE_CONFIG` names the file and is
/// not a key.
pub fn env_provider() -> Env {
    Env::prefixed("STEPGATE_").split("__").ignore(&["config"])
}

/// Reads and validates the configuration file at `path` (with environment overrides).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    if !path.exists() {
        let mut errors = ConfigErrors::default();
        errors.push(
            "config",
            format!("cannot read {}: no such file", path.display()),
        );
        return Err(errors);
    }
    from_figment(&figment(path))
}

/// Extracts and validates a configuration from any figment (tests build them from strings).
pub fn from_figment(figment: &Figment) -> Result<Config, ConfigErrors> {
    let raw: raw::RawConfig = figment.extract().map_err(figment_errors)?;
    validate(&raw)
}

/// Turns figment's (possibly chained) errors into key-path problems.
fn figment_errors(err: figment::Error) -> ConfigErrors {
    let mut errors = ConfigErrors::default();
    for e in err {
        let mut key = key_path(&e.path);
        let reason = match &e.kind {
            figment::error::Kind::UnknownField(field, expected) => {
                if e.path.last() != Some(field) {
                    key = key_join(&key, field);
                }
                if expected.is_empty() {
                    "unknown key".to_string()
                } else {
                    format!("unknown key (expected one of: {})", expected.join(", "))
                }
            }
            figment::error::Kind::MissingField(field) => {
                if e.path.last().map(String::as_str) != Some(field.as_ref()) {
                    key = key_join(&key, field);
                }
                "missing required key".to_string()
            }
            // Never the value itself: it may be a secret (an SMTP password made of digits
            // reads as a number), and these messages go to the journal.
            figment::error::Kind::InvalidType(actual, expected)
            | figment::error::Kind::InvalidValue(actual, expected) => {
                format!(
                    "expected {expected}, found {} (value not shown)",
                    kind_of(actual)
                )
            }
            // A syntax error quotes the file's line, which may hold a password: only where
            // it is and what is wrong are kept.
            figment::error::Kind::Message(message) => without_quoted_source(message),
            other => other.to_string(),
        };
        let origin = e
            .metadata
            .as_ref()
            .and_then(|m| m.source.as_ref())
            .map(|s| format!(" (in {s})"))
            .unwrap_or_default();
        errors.push(
            if key.is_empty() { "config".into() } else { key },
            format!("{reason}{origin}"),
        );
    }
    errors
}

/// A parser's message without the lines that quote the source (`9 | password = "..."` and
/// the `|` and `^` lines around it), joined into one line.
fn without_quoted_source(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| {
            let after_number = line.trim_start_matches(|c: char| c.is_ascii_digit());
            !line.is_empty() && !after_number.trim_start().starts_with('|')
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// What sort of value figment found, without the value.
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a number",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit | Actual::Option => "nothing",
        Actual::Seq => "a list",
        Actual::Map | Actual::NewtypeStruct => "a table",
        Actual::Enum
        | Actual::UnitVariant
        | Actual::NewtypeVariant
        | Actual::TupleVariant
        | Actual::StructVariant
        | Actual::Other(_) => "another kind of value",
    }
}

/// `["upstreams", "1", "url"]` -> `upstreams[1].url`.
fn key_path(parts: &[String]) -> String {
    let mut out = String::new();
    for part in parts {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(part);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests;
