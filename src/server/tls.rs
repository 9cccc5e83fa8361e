//! HTTPS listener configuration: a PEM certificate chain and key, ALPN h2 and http/1.1.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("server.tls_cert: cannot read a PEM certificate chain from {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("server.tls_key: cannot read a PEM private key from {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("server.tls_key: the key does not fit the certificate: {0}")]
    Mismatch(String),
}

pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsSetupError> {
    let chain = load_chain(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsSetupError::Key {
        path: files.key.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Mismatch(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsSetupError::Mismatch(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let err = |reason: String| TlsSetupError::Cert {
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if chain.is_empty() {
        return Err(err("no certificate found".into()));
    }
    Ok(chain)
}
