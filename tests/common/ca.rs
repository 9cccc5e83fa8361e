//! A throwaway certificate authority for TLS tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A CA and one leaf certificate for `localhost`, `127.0.0.1` and `::1`, written to a
/// temporary directory as `ca.pem`, `cert.pem` (leaf then CA) and `key.pem` (PKCS#8).
/// The directory is removed when the `TestCa` is dropped.
pub struct TestCa {
    dir: TempDir,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Stepgate test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().expect("generate leaf key");
        let mut leaf_params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])
        .expect("leaf params");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.is_ca = IsCa::ExplicitNoCa;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("sign leaf");

        let dir = tempfile::tempdir().expect("tempdir");
        let ca_pem = ca_cert.pem();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).expect("write ca.pem");
        std::fs::write(
            dir.path().join("cert.pem"),
            format!("{}{}", leaf_cert.pem(), ca_pem),
        )
        .expect("write cert.pem");
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem())
            .expect("write key.pem");

        TestCa {
            dir,
            ca_der: ca_cert.der().clone(),
            chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
            ca_pem,
            key_pkcs8: leaf_key.serialize_der(),
        }
    }

    /// The temporary directory holding the three PEM files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (PEM): what a client must trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The leaf certificate chain (PEM, leaf first): what a server presents.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The leaf private key (PKCS#8 PEM).
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn cert_chain_der(&self) -> Vec<CertificateDer<'static>> {
        self.chain.clone()
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }

    /// A rustls server config presenting the leaf, offering ALPN `h2` then `http/1.1`.
    pub fn server_config(&self) -> rustls::ServerConfig {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(self.cert_chain_der(), self.key_der())
        .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    /// A rustls client config that trusts only this CA, offering the given ALPN protocols
    /// (pass `&[b"http/1.1"]` for a WebSocket connection).
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add CA root");
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// Open a TLS connection to `addr`, verifying the certificate for `server_name`
    /// (`"localhost"` or an IP literal such as `"127.0.0.1"`). ALPN offers only `http/1.1`,
    /// which is what `tokio_tungstenite::client_async` needs for `wss://`.
    pub async fn tls_connect(&self, addr: SocketAddr, server_name: &str) -> TlsStream<TcpStream> {
        let connector = TlsConnector::from(Arc::new(self.client_config(&[b"http/1.1"])));
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let name = ServerName::try_from(server_name.to_owned()).expect("server name");
        connector.connect(name, tcp).await.expect("tls handshake")
    }

    /// A reqwest builder like [`super::client_builder`] that trusts only this CA.
    pub fn reqwest_builder(&self) -> reqwest::ClientBuilder {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA pem");
        super::client_builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
    }

    /// A reqwest client (no redirects, no proxy) that trusts only this CA; ALPN picks h2
    /// when the server offers it.
    pub fn reqwest_client(&self) -> reqwest::Client {
        self.reqwest_builder().build().expect("reqwest client")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}
