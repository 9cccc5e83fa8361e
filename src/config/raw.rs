//! The configuration as written: serde types that mirror the TOML file. Unknown keys are errors.
//! Values that need checking (addresses, URLs, durations) are kept as strings here and validated
//! in [`super::validate`], so that every problem can be reported at once.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub limits: RawLimits,
    pub upstreams: Vec<RawUpstream>,
    pub portal: RawPortal,
    pub storage: RawStorage,
    pub log: RawLog,
    pub identity_headers: RawIdentityHeaders,
    pub access: crate::policy::RawAccess,
    pub password: crate::auth::password::RawPassword,
    pub session: crate::auth::session::RawSessionConfig,
    pub regulation: crate::auth::regulation::RawRegulation,
    pub mfa: crate::auth::factors::RawMfa,
    pub email: Option<crate::notify::RawEmail>,
    pub sms: Option<crate::notify::RawSms>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Plain HTTP listener, e.g. `"0.0.0.0:8080"`.
    pub listen: Option<String>,
    /// HTTPS listener, e.g. `"0.0.0.0:8443"`; needs `tls_cert` and `tls_key`.
    pub tls_listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub redirect_http_to_https: bool,
    /// Peers (CIDR or single address) whose X-Forwarded-* headers are believed.
    pub trusted_proxies: Vec<String>,
    /// Threads serving connections, each with its own event loop (default: one per CPU).
    pub workers: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub tls_handshake_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub idle_release_after: Option<String>,
    pub tunnel_idle_timeout: Option<String>,
    pub max_header_bytes: Option<u64>,
    pub max_connections: Option<u64>,
    pub max_connections_per_client: Option<u64>,
    pub max_form_memory_bytes: Option<u64>,
    pub shutdown_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    /// `console.example.com` or `*.example.com`; absent: the default upstream.
    pub host: Option<String>,
    pub url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub native_roots: bool,
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub preserve_host: Option<bool>,
    pub max_idle_connections: Option<u64>,
    pub max_connections: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPortal {
    pub prefix: Option<String>,
    pub title: Option<String>,
    /// `https://auth.example.com`: the portal's own address, for forward-auth redirects.
    pub url: Option<String>,
    /// An image file shown above every page (PNG, JPEG, GIF, WebP, SVG or ICO), read at startup.
    pub logo: Option<PathBuf>,
    /// Accent colour of buttons and links, `#rgb` or `#rrggbb`.
    pub accent: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStorage {
    pub path: Option<PathBuf>,
    /// Key that encrypts second-factor secrets; kept outside the store directory.
    pub key_file: Option<PathBuf>,
    /// How many audit events the store keeps (the oldest go first).
    pub audit_max_events: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `"text"` (default) or `"json"`.
    pub format: Option<String>,
    /// A tracing filter such as `"info"` or `"stepgate=debug,info"`.
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIdentityHeaders {
    pub user: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Option<String>,
}
