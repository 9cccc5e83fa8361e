//! Upstreams: which application a request goes to (by Host), and the connection pools that
//! reach each one.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::pool::{ConnectionPool, PoolLimits};
use crate::config::UpstreamConfig;
use crate::http::cookies::SessionCookieNames;

/// An idle upstream connection is closed after this long unused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One configured application and the connection pools that reach it: one per worker thread
/// (`server::workers`), so a request and its upstream connection share an event loop, and one
/// for every other thread.
pub struct Upstream {
    pub config: UpstreamConfig,
    /// The url's authority as a Host value, written once (None: the url has none).
    authority: Option<HeaderValue>,
    /// The gateway's own cookies, which no answer of this upstream may set.
    gateway_cookies: SessionCookieNames,
    pools: Box<[ConnectionPool]>,
}

impl Upstream {
    /// The pool of the calling thread's worker.
    pub fn pool(&self) -> &ConnectionPool {
        let others = self.pools.len() - 1;
        let index = crate::server::workers::current().map_or(others, |i| i.min(others));
        &self.pools[index]
    }

    /// The Host value that names this upstream (its url's authority).
    pub fn authority(&self) -> Option<&HeaderValue> {
        self.authority.as_ref()
    }

    /// The cookies this upstream's answers may never set (see `headers::strip_set_cookies`).
    pub fn gateway_cookies(&self) -> [&str; 2] {
        self.gateway_cookies.both()
    }

    /// Idle connections held across every worker's pool.
    pub fn idle_connections(&self) -> usize {
        self.pools.iter().map(ConnectionPool::idle_count).sum()
    }

    /// Requests waiting for a connection across every worker's pool.
    pub fn waiting_requests(&self) -> usize {
        self.pools.iter().map(ConnectionPool::waiting_count).sum()
    }

    /// Connections open across every worker's pool (idle, in use or closing).
    pub fn open_connections(&self) -> usize {
        self.pools.iter().map(ConnectionPool::open_count).sum()
    }
}

/// All upstreams, in configuration order; the first host match wins, then the default.
pub struct Upstreams {
    list: Vec<Upstream>,
    default: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("upstreams[{index}].ca_file: {reason}")]
    CaFile { index: usize, reason: String },
    #[error("upstreams[{index}]: cannot load the system's root certificates: {reason}")]
    NativeRoots { index: usize, reason: String },
}

impl Upstreams {
    /// Builds every upstream's pools: one for each of `workers` worker threads, one for the rest,
    /// each with an even share of the upstream's `max_connections` (rounded up).
    /// `gateway_cookies` are removed from every answer's `Set-Cookie`.
    pub fn build(
        configs: &[UpstreamConfig],
        workers: usize,
        gateway_cookies: &SessionCookieNames,
    ) -> Result<Self, UpstreamSetupError> {
        let mut list = Vec::with_capacity(configs.len());
        let mut default = None;
        for (index, config) in configs.iter().enumerate() {
            if config.host.is_none() && default.is_none() {
                default = Some(index);
            }
            let connector = connector_for(index, config)?;
            let target = target_of(config);
            let limits = PoolLimits {
                max_idle: config.max_idle_connections,
                idle_timeout: IDLE_TIMEOUT,
                max_open: config.max_connections.div_ceil(workers.max(1)),
                queue_timeout: config.connect_timeout,
                abandon_after: config.timeout,
            };
            let pools = (0..=workers)
                .map(|_| ConnectionPool::new(connector.clone(), target.clone(), limits))
                .collect();
            let authority = config
                .url
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
            list.push(Upstream {
                config: config.clone(),
                authority,
                gateway_cookies: gateway_cookies.clone(),
                pools,
            });
        }
        Ok(Upstreams { list, default })
    }

    /// Closes idle upstream connections unused for longer than the idle timeout; returns how
    /// many were closed.
    pub fn close_expired(&self) -> usize {
        self.list
            .iter()
            .flat_map(|u| u.pools.iter())
            .map(ConnectionPool::close_expired)
            .sum()
    }

    /// The upstream for a request's host (port ignored, case-insensitive).
    pub fn select(&self, host: Option<&str>) -> Option<&Upstream> {
        self.select_index(host).and_then(|i| self.get(i))
    }

    /// Like [`Upstreams::select`], as an index for [`Upstreams::get`]: what a request's future
    /// keeps when it must not borrow the upstream before it runs.
    pub fn select_index(&self, host: Option<&str>) -> Option<usize> {
        let by_host = host.and_then(|host| {
            self.list.iter().position(|u| {
                u.config
                    .host
                    .as_ref()
                    .is_some_and(|pattern| pattern.matches(host))
            })
        });
        by_host.or(self.default)
    }

    /// The upstream at `index` (from [`Upstreams::select_index`]).
    pub fn get(&self, index: usize) -> Option<&Upstream> {
        self.list.get(index)
    }
}

fn root_store(index: usize, config: &UpstreamConfig) -> Result<RootCertStore, UpstreamSetupError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if config.native_roots {
        let loaded = rustls_native_certs::load_native_certs();
        if loaded.certs.is_empty() {
            let reason = loaded
                .errors
                .first()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "none found".to_string());
            return Err(UpstreamSetupError::NativeRoots { index, reason });
        }
        for cert in loaded.certs {
            // A system store may hold certificates rustls cannot use; skipping them is what
            // every TLS client does.
            let _ = roots.add(cert);
        }
    }
    if let Some(path) = &config.ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| UpstreamSetupError::CaFile {
                index,
                reason: format!("{}: {e}", path.display()),
            })?;
        if certs.is_empty() {
            return Err(UpstreamSetupError::CaFile {
                index,
                reason: format!("{}: no PEM certificate found", path.display()),
            });
        }
        for cert in certs {
            roots.add(cert).map_err(|e| UpstreamSetupError::CaFile {
                index,
                reason: format!("{}: {e}", path.display()),
            })?;
        }
    }
    Ok(roots)
}

/// `scheme://authority/` of the upstream: where its connections go.
fn target_of(config: &UpstreamConfig) -> Uri {
    let mut parts = config.url.clone().into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    Uri::from_parts(parts).unwrap_or_else(|_| config.url.clone())
}

fn connector_for(
    index: usize,
    config: &UpstreamConfig,
) -> Result<HttpsConnector<HttpConnector>, UpstreamSetupError> {
    let roots = root_store(index, config)?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| UpstreamSetupError::CaFile {
        index,
        reason: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.connect_timeout));
    // Upstream traffic is HTTP/1.1: it carries upgrades (WebSocket) and is what legacy consoles speak.
    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

impl From<UpstreamSetupError> for io::Error {
    fn from(e: UpstreamSetupError) -> Self {
        io::Error::other(e.to_string())
    }
}
