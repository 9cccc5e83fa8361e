//! Raw configuration -> [`Config`], collecting every problem with its key path.

use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

use super::raw::{
    RawConfig, RawIdentityHeaders, RawLimits, RawLog, RawPortal, RawServer, RawUpstream,
};
use super::{
    Config, ConfigErrors, DEFAULT_IDENTITY_HEADERS, IdentityHeaders, Limits, LogConfig, LogFormat,
    PortalConfig, ServerConfig, StorageConfig, TlsFiles, UpstreamConfig, parse_duration,
};
use crate::policy::host::HostPattern;

pub const DEFAULT_PREFIX: &str = "/.stepgate";
/// The product title shown on the portal's pages unless `portal.title` says otherwise.
pub const DEFAULT_TITLE: &str = "Stepgate";
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Longest `storage.path`, as written (see the control socket's path in `validate`).
const MAX_STORAGE_PATH_BYTES: usize = 107 - "/.control-0123456789abcdef/s".len();

/// Validates a raw configuration, returning every problem found.
pub fn validate(raw: &RawConfig) -> Result<Config, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let server = server(&raw.server, &mut errors);
    let limits = limits(&raw.limits, &mut errors);
    let upstreams = upstreams(&raw.upstreams, &mut errors);
    let portal = portal(&raw.portal, &mut errors);
    let store_path = raw
        .storage
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from("data"));
    let key_file = raw.storage.key_file.clone().unwrap_or_else(|| {
        let mut name = store_path.clone().into_os_string();
        name.push(".key");
        PathBuf::from(name)
    });
    // The control socket is bound inside the store, at a path no longer than a Unix socket
    // address allows (107 bytes): the staging name `/.control-<16 hex digits>/s` takes 28.
    if store_path.as_os_str().len() > MAX_STORAGE_PATH_BYTES {
        errors.push(
            "storage.path",
            format!(
                "at most {MAX_STORAGE_PATH_BYTES} bytes: the control socket inside it must fit a \
                 Unix socket address (use a shorter path, or a relative one)"
            ),
        );
    }
    if resolved(&key_file).starts_with(resolved(&store_path)) {
        errors.push(
            "storage.key_file",
            "must be outside storage.path, so that a copy of the store reveals no secret",
        );
    }
    let audit_max_events = match raw.storage.audit_max_events {
        None => StorageConfig::DEFAULT_AUDIT_MAX_EVENTS,
        Some(n) => match usize::try_from(n) {
            Ok(n) if n >= StorageConfig::MIN_AUDIT_MAX_EVENTS => n,
            _ => {
                errors.push(
                    "storage.audit_max_events",
                    format!(
                        "must be a whole number from {} up",
                        StorageConfig::MIN_AUDIT_MAX_EVENTS
                    ),
                );
                StorageConfig::DEFAULT_AUDIT_MAX_EVENTS
            }
        },
    };
    let storage = StorageConfig {
        path: store_path,
        key_file,
        audit_max_events,
    };
    let log = log(&raw.log, &mut errors);
    let identity_headers = identity_headers(&raw.identity_headers, &mut errors);
    let access = crate::policy::validate(&raw.access, &mut errors);
    let password = crate::auth::password::validate(&raw.password, &mut errors);
    let mut session = crate::auth::session::validate(&raw.session, &mut errors);
    portal_and_cookie_domains(&portal, &mut session, &mut errors);
    let regulation = crate::auth::regulation::validate(&raw.regulation, &mut errors);
    let mfa = crate::auth::factors::settings::validate(&raw.mfa, &mut errors);
    let email = raw
        .email
        .as_ref()
        .and_then(|r| crate::notify::validate_email(r, &mut errors));
    let sms = raw
        .sms
        .as_ref()
        .and_then(|r| crate::notify::validate_sms(r, &mut errors));
    // Codes by email for every account with an address, and no way to send them: every such
    // user would be asked for a code that never comes.
    if mfa.email_default && raw.email.is_none() {
        errors.push(
            "mfa.email_default",
            "needs an [email] section to send the codes with",
        );
    }
    errors.finish(Config {
        server,
        limits,
        upstreams,
        portal,
        storage,
        log,
        identity_headers,
        access,
        password,
        session,
        regulation,
        mfa,
        email,
        sms,
    })
}

fn socket_addr(value: &str, key: &str, errors: &mut ConfigErrors) -> Option<SocketAddr> {
    match value.trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(
                key,
                format!(
                    "{value:?} is not an address and port such as \"0.0.0.0:8080\" or \"[::]:8443\""
                ),
            );
            None
        }
    }
}

/// A CIDR (`10.0.0.0/8`) or a single address (`192.0.2.7`, `::1`).
pub fn parse_network(value: &str) -> Result<IpNet, String> {
    let v = value.trim();
    if let Ok(net) = v.parse::<IpNet>() {
        return Ok(ipv4_if_mapped(net.trunc()));
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok(ipv4_if_mapped(IpNet::from(ip)));
    }
    Err(format!(
        "{value:?} is not a network (CIDR such as \"10.0.0.0/8\") or an IP address"
    ))
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it stands for:
/// client addresses are compared as IPv4 (see [`crate::http::client_ip::canonical`]), and no
/// IPv6 network would ever contain one.
fn ipv4_if_mapped(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// A trusted network wider than any proxy fleet: an IPv4 network shorter than /8, or an IPv6
/// one shorter than /32 outside the private range (`fc00::/7`, whose /8 is as private as
/// `10.0.0.0/8`).
fn is_too_broad_to_trust(net: &IpNet) -> bool {
    match net {
        IpNet::V4(v4) => v4.prefix_len() < 8,
        IpNet::V6(v6) => {
            let private = v6.prefix_len() >= 7 && v6.network().octets()[0] & 0xfe == 0xfc;
            v6.prefix_len() < 32 && !private
        }
    }
}

fn server(raw: &RawServer, errors: &mut ConfigErrors) -> ServerConfig {
    let listen = match (&raw.listen, &raw.tls_listen) {
        (Some(l), _) => socket_addr(l, "server.listen", errors),
        (None, None) => DEFAULT_LISTEN.parse().ok(),
        (None, Some(_)) => None,
    };
    let tls_listen = raw
        .tls_listen
        .as_deref()
        .and_then(|l| socket_addr(l, "server.tls_listen", errors));
    let tls = match (&raw.tls_cert, &raw.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
        (Some(_), None) => {
            errors.push("server.tls_key", "required when server.tls_cert is set");
            None
        }
        (None, Some(_)) => {
            errors.push("server.tls_cert", "required when server.tls_key is set");
            None
        }
    };
    if raw.tls_listen.is_some() && tls.is_none() && raw.tls_cert.is_none() && raw.tls_key.is_none()
    {
        errors.push(
            "server.tls_listen",
            "needs server.tls_cert and server.tls_key (PEM files)",
        );
    }
    if raw.tls_listen.is_none() && (raw.tls_cert.is_some() || raw.tls_key.is_some()) {
        errors.push(
            "server.tls_listen",
            "required when a certificate is configured (e.g. \"0.0.0.0:8443\")",
        );
    }
    if raw.redirect_http_to_https && raw.tls_listen.is_none() {
        errors.push(
            "server.redirect_http_to_https",
            "needs server.tls_listen to redirect to",
        );
    }
    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.trusted_proxies.iter().enumerate() {
        match parse_network(p) {
            Ok(net) if is_too_broad_to_trust(&net) => errors.push(
                format!("server.trusted_proxies[{i}]"),
                format!(
                    "{net} spans a large part of the Internet: any client in it could name its \
                     own address in X-Forwarded-For, set the forwarding headers an application \
                     reads and ask the forward-auth endpoints; list your proxies' addresses or \
                     networks (at most a /8 for IPv4, a /32 for IPv6)"
                ),
            ),
            Ok(net) => trusted_proxies.push(net),
            Err(reason) => errors.push(format!("server.trusted_proxies[{i}]"), reason),
        }
    }
    let workers = match raw.workers {
        None => default_workers(),
        Some(n) if (1..=MAX_WORKERS).contains(&n) => n as usize,
        Some(_) => {
            errors.push(
                "server.workers",
                format!("must be between 1 and {MAX_WORKERS}"),
            );
            default_workers()
        }
    };
    ServerConfig {
        listen,
        tls_listen,
        tls,
        redirect_http_to_https: raw.redirect_http_to_https,
        trusted_proxies,
        workers,
    }
}

/// Upper bound for `server.workers`: more event loops than this only adds threads.
const MAX_WORKERS: u64 = 1024;

/// One worker per CPU the process may use.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn duration_or(
    value: &Option<String>,
    key: &str,
    default: Duration,
    errors: &mut ConfigErrors,
) -> Duration {
    match value {
        None => default,
        Some(v) => match parse_duration(v, key, errors) {
            Some(d) if d.is_zero() => {
                errors.push(key, "must be longer than zero");
                default
            }
            Some(d) => d,
            None => default,
        },
    }
}

fn limits(raw: &RawLimits, errors: &mut ConfigErrors) -> Limits {
    let d = Limits::default();
    let max_header_bytes = match raw.max_header_bytes {
        None => d.max_header_bytes,
        Some(n) if (1024..=1024 * 1024).contains(&n) => n as usize,
        Some(_) => {
            errors.push(
                "limits.max_header_bytes",
                "must be between 1024 and 1048576",
            );
            d.max_header_bytes
        }
    };
    let max_connections = match raw.max_connections {
        None => d.max_connections,
        Some(n) if (1..=10_000_000).contains(&n) => n as usize,
        Some(_) => {
            errors.push("limits.max_connections", "must be between 1 and 10000000");
            d.max_connections
        }
    };
    let max_connections_per_client = match raw.max_connections_per_client {
        None => Limits::default_per_client(max_connections),
        Some(n) if (1..=max_connections as u64).contains(&n) => n as usize,
        Some(_) => {
            errors.push(
                "limits.max_connections_per_client",
                format!("must be between 1 and limits.max_connections ({max_connections})"),
            );
            Limits::default_per_client(max_connections)
        }
    };
    let max_form_memory_bytes = match raw.max_form_memory_bytes {
        None => d.max_form_memory_bytes,
        // At least one form of the largest size, at most 4 GiB.
        Some(n) if (64 * 1024..=4 << 30).contains(&n) => n as usize,
        Some(_) => {
            errors.push(
                "limits.max_form_memory_bytes",
                "must be between 65536 and 4294967296",
            );
            d.max_form_memory_bytes
        }
    };
    let idle_timeout = duration_or(
        &raw.idle_timeout,
        "limits.idle_timeout",
        d.idle_timeout,
        errors,
    );
    Limits {
        tls_handshake_timeout: duration_or(
            &raw.tls_handshake_timeout,
            "limits.tls_handshake_timeout",
            d.tls_handshake_timeout,
            errors,
        ),
        header_read_timeout: duration_or(
            &raw.header_read_timeout,
            "limits.header_read_timeout",
            d.header_read_timeout,
            errors,
        ),
        idle_timeout,
        idle_release_after: duration_or(
            &raw.idle_release_after,
            "limits.idle_release_after",
            d.idle_release_after,
            errors,
        ),
        // A WebSocket is often quiet for longer than a keep-alive connection should wait for
        // its next request, hence a setting of its own; unset, it follows `idle_timeout`.
        tunnel_idle_timeout: duration_or(
            &raw.tunnel_idle_timeout,
            "limits.tunnel_idle_timeout",
            idle_timeout,
            errors,
        ),
        max_header_bytes,
        max_connections,
        max_connections_per_client,
        max_form_memory_bytes,
        shutdown_timeout: duration_or(
            &raw.shutdown_timeout,
            "limits.shutdown_timeout",
            d.shutdown_timeout,
            errors,
        ),
    }
}

/// Idle connections kept per upstream unless configured: enough for steady load, while a burst
/// of thousands of concurrent requests does not leave thousands of idle connections behind.
const DEFAULT_MAX_IDLE_UPSTREAM_CONNECTIONS: usize = 128;
const DEFAULT_MAX_UPSTREAM_CONNECTIONS: usize = 1024;

fn upstreams(raw: &[RawUpstream], errors: &mut ConfigErrors) -> Vec<UpstreamConfig> {
    // No upstream at all is a gateway that only answers forward-auth requests (behind nginx,
    // Traefik or Caddy) and serves its portal; anything else gets 421.
    let mut out = Vec::new();
    let mut default_seen: Option<usize> = None;
    let mut hosts_seen: Vec<(usize, HostPattern)> = Vec::new();
    for (i, u) in raw.iter().enumerate() {
        let key = |k: &str| format!("upstreams[{i}].{k}");
        let host = match &u.host {
            None => {
                if let Some(first) = default_seen {
                    errors.push(
                        key("host"),
                        format!("upstreams[{first}] is already the default upstream (no host); give this one a host"),
                    );
                }
                default_seen = Some(i);
                None
            }
            Some(h) => match HostPattern::parse(h) {
                Ok(p) => {
                    // The first upstream whose pattern matches is chosen: a second one for the
                    // same host would never receive anything.
                    if let Some((first, _)) = hosts_seen.iter().find(|(_, seen)| *seen == p) {
                        errors.push(
                            key("host"),
                            format!("upstreams[{first}] already serves {p}"),
                        );
                    }
                    hosts_seen.push((i, p.clone()));
                    Some(p)
                }
                Err(reason) => {
                    errors.push(key("host"), reason);
                    None
                }
            },
        };
        let url = match &u.url {
            None => {
                errors.push(key("url"), "missing required key");
                None
            }
            Some(s) => upstream_url(s, &key("url"), errors),
        };
        let timeout = duration_or(&u.timeout, &key("timeout"), Duration::from_secs(60), errors);
        let connect_timeout = duration_or(
            &u.connect_timeout,
            &key("connect_timeout"),
            Duration::from_secs(5),
            errors,
        );
        if let Some(ca) = u.ca_file.as_ref().filter(|ca| !ca.is_file()) {
            errors.push(
                key("ca_file"),
                format!("{} is not a readable file", ca.display()),
            );
        }
        let max_idle_connections = match u.max_idle_connections {
            None => DEFAULT_MAX_IDLE_UPSTREAM_CONNECTIONS,
            Some(n) if n <= 100_000 => n as usize,
            Some(_) => {
                errors.push(key("max_idle_connections"), "must be at most 100000");
                DEFAULT_MAX_IDLE_UPSTREAM_CONNECTIONS
            }
        };
        let max_connections = match u.max_connections {
            None => DEFAULT_MAX_UPSTREAM_CONNECTIONS,
            Some(n) if (1..=1_000_000).contains(&n) => n as usize,
            Some(_) => {
                errors.push(key("max_connections"), "must be between 1 and 1000000");
                DEFAULT_MAX_UPSTREAM_CONNECTIONS
            }
        };
        if let Some(url) = url {
            out.push(UpstreamConfig {
                host,
                url,
                ca_file: u.ca_file.clone(),
                native_roots: u.native_roots,
                timeout,
                connect_timeout,
                preserve_host: u.preserve_host.unwrap_or(true),
                max_idle_connections,
                max_connections,
            });
        }
    }
    out
}

fn upstream_url(s: &str, key: &str, errors: &mut ConfigErrors) -> Option<Uri> {
    let uri: Uri = match s.trim().parse() {
        Ok(u) => u,
        Err(e) => {
            errors.push(key, format!("not a URL ({e}; value not shown)"));
            return None;
        }
    };
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            errors.push(key, "scheme must be http or https");
            return None;
        }
    }
    if uri.authority().is_none() {
        errors.push(key, "needs a host, as in \"http://127.0.0.1:3000\"");
        return None;
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        errors.push(key, "must not contain user information");
        return None;
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        errors.push(
            key,
            "must be scheme and host only (no path or query): requests keep their own path",
        );
        return None;
    }
    Some(uri)
}

fn portal(raw: &RawPortal, errors: &mut ConfigErrors) -> PortalConfig {
    let prefix = raw.prefix.as_deref().unwrap_or(DEFAULT_PREFIX);
    let valid = prefix.len() > 1
        && prefix.starts_with('/')
        && !prefix.ends_with('/')
        && prefix[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        });
    if !valid {
        errors.push(
            "portal.prefix",
            format!("{prefix:?} must be an absolute path such as \"/.stepgate\", without a trailing slash, of letters, digits and -._~"),
        );
    }
    let url = raw.url.as_deref().and_then(|u| match parse_portal_url(u) {
        Ok(url) => Some(url),
        Err(reason) => {
            errors.push("portal.url", reason);
            None
        }
    });
    PortalConfig {
        url,
        prefix: if valid {
            prefix.to_string()
        } else {
            DEFAULT_PREFIX.to_string()
        },
        title: raw
            .title
            .clone()
            .unwrap_or_else(|| DEFAULT_TITLE.to_string()),
        logo: raw.logo.as_deref().and_then(|path| logo(path, errors)),
        accent: raw
            .accent
            .as_deref()
            .and_then(|value| accent(value, errors)),
    }
}

/// `portal.url` as written -> `scheme://authority` (lower-case, no trailing slash). Only http and
/// https, a host, no user information, no path, query or fragment: the portal keeps its paths
/// under `portal.prefix`.
pub fn parse_portal_url(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s.trim()).map_err(|e| format!("not a URL ({e}; value not shown)"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the scheme must be https (or http)".to_string());
    }
    let Some(host) = url.host_str() else {
        return Err("needs a host, as in \"https://auth.example.com\"".to_string());
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user information (value not shown)".to_string());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(
            "must be scheme and host only (no path or query): the portal's pages live under portal.prefix"
                .to_string(),
        );
    }
    Ok(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

/// `portal.url` is the portal of `session.cookie_domain`; with `[[session.domains]]` it serves
/// the entries without their own `portal_url` that contain it. A portal outside every cookie
/// domain could never set a cookie the applications receive.
fn portal_and_cookie_domains(
    portal: &PortalConfig,
    session: &mut crate::auth::session::SessionConfig,
    errors: &mut ConfigErrors,
) {
    let Some(url) = &portal.url else { return };
    if session.domains.is_empty() {
        return;
    }
    let mut inside_any = false;
    for d in &mut session.domains {
        if crate::auth::session::url_host_inside(url, &d.domain) {
            inside_any = true;
            if d.portal_url.is_none() {
                d.portal_url = Some(url.clone());
            }
        }
    }
    if !inside_any {
        let names: Vec<&str> = session.domains.iter().map(|d| d.domain.as_str()).collect();
        errors.push(
            "portal.url",
            format!(
                "{url} is outside the session cookie domain(s) {}: the cookie it sets at login would not reach the applications",
                names.join(", ")
            ),
        );
    }
}

/// Largest logo file accepted: it is kept in memory and sent with every page view.
pub const MAX_LOGO_BYTES: u64 = 512 * 1024;

fn logo(path: &std::path::Path, errors: &mut ConfigErrors) -> Option<super::Logo> {
    const KEY: &str = "portal.logo";
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let content_type = match ext.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("svg") => "image/svg+xml",
        Some("ico") => "image/x-icon",
        _ => {
            errors.push(
                KEY,
                format!(
                    "{}: the file name must end in .png, .jpg, .jpeg, .gif, .webp, .svg or .ico",
                    path.display()
                ),
            );
            return None;
        }
    };
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_LOGO_BYTES => {
            errors.push(
                KEY,
                format!("{} is larger than {MAX_LOGO_BYTES} bytes", path.display()),
            );
            return None;
        }
        _ => {}
    }
    match std::fs::read(path) {
        Ok(bytes) if bytes.is_empty() => {
            errors.push(KEY, format!("{} is empty", path.display()));
            None
        }
        Ok(bytes) => Some(super::Logo::new(bytes, content_type)),
        Err(e) => {
            errors.push(KEY, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// `#rgb` or `#rrggbb` -> `#rrggbb` in lower case. Nothing else reaches the generated CSS.
fn accent(value: &str, errors: &mut ConfigErrors) -> Option<String> {
    let hex = value.strip_prefix('#').unwrap_or("");
    let valid = matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        errors.push(
            "portal.accent",
            format!("{value:?} must be a colour written #rgb or #rrggbb"),
        );
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(if hex.len() == 3 {
        hex.chars()
            .flat_map(|c| [c, c])
            .fold(String::from("#"), |mut s, c| {
                s.push(c);
                s
            })
    } else {
        format!("#{hex}")
    })
}

/// Where `path` leads, for telling whether one path is inside another: absolute, with the
/// symbolic links and `..` of the part that exists resolved by the system, and `.` and `..` of
/// the part that does not yet exist resolved by name (`./data/k`, `x/../data/k` and a link to
/// `data` all lead into `data`).
fn resolved(path: &Path) -> PathBuf {
    let absolute = match std::env::current_dir() {
        Ok(dir) => dir.join(path),
        Err(_) => path.to_path_buf(),
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    let base = loop {
        if let Ok(real) = existing.canonicalize() {
            break real;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => break PathBuf::new(),
        }
    };
    let mut out = base;
    for part in rest.into_iter().rev() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn log(raw: &RawLog, errors: &mut ConfigErrors) -> LogConfig {
    let format = match raw.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            errors.push(
                "log.format",
                format!("{other:?} is not \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    let level = raw.level.clone().unwrap_or_else(|| "info".to_string());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        errors.push(
            "log.level",
            format!("{level:?} is not a log filter such as \"info\" or \"stepgate=debug\""),
        );
    }
    LogConfig { format, level }
}

fn identity_headers(raw: &RawIdentityHeaders, errors: &mut ConfigErrors) -> IdentityHeaders {
    let [user, email, name, groups] = DEFAULT_IDENTITY_HEADERS;
    let mut one = |value: &Option<String>, key: &str, default: &'static str| {
        let value = value.as_deref().unwrap_or(default);
        let reserved = crate::proxy::headers::is_hop_by_hop(value)
            || [
                "host",
                "cookie",
                "authorization",
                "content-length",
                "content-type",
            ]
            .iter()
            .any(|r| value.eq_ignore_ascii_case(r));
        match http::HeaderName::from_bytes(value.as_bytes()) {
            Ok(h) if !reserved => h,
            Ok(_) => {
                errors.push(
                    format!("identity_headers.{key}"),
                    format!("{value:?} is a reserved header name"),
                );
                http::HeaderName::from_static(default)
            }
            Err(_) => {
                errors.push(
                    format!("identity_headers.{key}"),
                    format!("{value:?} is not a valid header name"),
                );
                http::HeaderName::from_static(default)
            }
        }
    };
    let headers = IdentityHeaders {
        user: one(&raw.user, "user", user),
        email: one(&raw.email, "email", email),
        name: one(&raw.name, "name", name),
        groups: one(&raw.groups, "groups", groups),
    };
    let all = [
        &headers.user,
        &headers.email,
        &headers.name,
        &headers.groups,
    ];
    for (i, a) in all.iter().enumerate() {
        if all[..i].contains(a) {
            errors.push(
                "identity_headers",
                format!("{a} is used for two identity fields"),
            );
        }
    }
    headers
}
