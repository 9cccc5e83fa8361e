//! Upstreams: which application a request goes to (by Host), and a pooled client for each.

use std::io;
use std::sync::Arc;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::UpstreamConfig;
use crate::http::body::Body;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// One configured application and the connection pool that reaches it.
pub struct Upstream {
    pub config: UpstreamConfig,
    pub client: UpstreamClient,
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
    pub fn build(configs: &[UpstreamConfig]) -> Result<Self, UpstreamSetupError> {
        let mut list = Vec::with_capacity(configs.len());
        let mut default = None;
        for (index, config) in configs.iter().enumerate() {
            if config.host.is_none() && default.is_none() {
                default = Some(index);
            }
            let client = client_for(index, config)?;
            list.push(Upstream {
                config: config.clone(),
                client,
            });
        }
        Ok(Upstreams { list, default })
    }

    /// The upstream for a request's host (port ignored, case-insensitive).
    pub fn select(&self, host: Option<&str>) -> Option<&Upstream> {
        let by_host = host.and_then(|host| {
            self.list.iter().find(|u| {
                u.config
                    .host
                    .as_ref()
                    .is_some_and(|pattern| pattern.matches(host))
            })
        });
        by_host.or_else(|| self.default.and_then(|i| self.list.get(i)))
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

fn client_for(index: usize, config: &UpstreamConfig) -> Result<UpstreamClient, UpstreamSetupError> {
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
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(config.max_idle_connections)
        .build(connector);
    Ok(client)
}

impl From<UpstreamSetupError> for io::Error {
    fn from(e: UpstreamSetupError) -> Self {
        io::Error::other(e.to_string())
    }
}
