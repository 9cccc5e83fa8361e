//! Real nginx and Caddy in front of a test gateway, started from the shipped example
//! configurations (`config/nginx/nginx.conf`, `config/caddy/Caddyfile`) with only their ports
//! and file paths replaced. Both listen on 127.0.0.1 ephemeral ports with a throwaway
//! certificate for `example.com` and `*.example.com`, and are killed when dropped.
//!
//! ```ignore
//! let ports = ProxyPorts::pick();
//! let gw = Gateway::builder()...extra_toml(&format!("[portal]\nurl = \"{}\"", ports.portal_url()))...;
//! let nginx = Proxy::nginx(&ports, gw.addr(), upstream.addr()).await;
//! let resp = nginx.client().get(nginx.url("app1.example.com", "/")).send().await?;
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_rustls::TlsConnector;

pub const NGINX: &str = "/usr/sbin/nginx";
pub const CADDY: &str = "/usr/bin/caddy";

/// The host names the example configurations serve.
pub const PORTAL_HOST: &str = "auth.example.com";
pub const APP1_HOST: &str = "app1.example.com";
pub const APP2_HOST: &str = "app2.example.com";

/// Safety net while a proxy starts; a healthy one is up in well under a second.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// The ports a proxy will listen on, chosen before the gateway starts (its `portal.url` names
/// the HTTPS port).
#[derive(Debug, Clone, Copy)]
pub struct ProxyPorts {
    pub https: u16,
    pub http: u16,
    pub admin: u16,
}

impl ProxyPorts {
    pub fn pick() -> ProxyPorts {
        ProxyPorts {
            https: super::ports::reserve(),
            http: super::ports::reserve(),
            admin: super::ports::reserve(),
        }
    }

    /// `https://auth.example.com:PORT`: the gateway's `portal.url`.
    pub fn portal_url(&self) -> String {
        format!("https://{PORTAL_HOST}:{}", self.https)
    }
}

/// A running proxy; killed on drop.
pub struct Proxy {
    child: Child,
    dir: TempDir,
    pub ports: ProxyPorts,
    pub name: &'static str,
    /// The proxy's throwaway certificate, which [`Proxy::raw_https`] trusts.
    certificate: CertificateDer<'static>,
}

/// Replaces `from` in `text`, panicking when the example no longer contains it (so a changed
/// example fails loudly instead of silently testing something else).
fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the example configuration no longer contains {from:?}"
    );
    text.replace(from, to)
}

fn repo_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A self-signed certificate for `example.com` and `*.example.com` in `dir`; returns the
/// certificate's and the key's paths, and the certificate itself.
fn write_certificate(dir: &Path) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec![
        "example.com".to_owned(),
        "*.example.com".to_owned(),
    ])
    .expect("self-signed certificate");
    let cert_path = dir.join("fullchain.pem");
    let key_path = dir.join("privkey.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write certificate");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    (cert_path, key_path, cert.cert.der().clone())
}

fn proxy_dir() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    // nginx workers may run as another user than the master (when tests run as root).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod proxy dir");
    }
    dir
}

impl Proxy {
    /// nginx with `config/nginx/nginx.conf`, asking `stepgate` and forwarding to `app`.
    pub async fn nginx(ports: &ProxyPorts, stepgate: SocketAddr, app: SocketAddr) -> Proxy {
        let dir = proxy_dir();
        let d = dir.path();
        let (cert, key, certificate) = write_certificate(d);
        let mut conf = repo_file("config/nginx/nginx.conf");
        for (from, to) in [
            (
                "pid /run/nginx.pid;",
                format!("pid {}/nginx.pid;", d.display()),
            ),
            (
                "/var/log/nginx/error.log",
                format!("{}/error.log", d.display()),
            ),
            (
                "/var/log/nginx/access.log",
                format!("{}/access.log", d.display()),
            ),
            (
                "/etc/ssl/example.com/fullchain.pem",
                cert.display().to_string(),
            ),
            (
                "/etc/ssl/example.com/privkey.pem",
                key.display().to_string(),
            ),
            ("server 127.0.0.1:9091;", format!("server {stepgate};")),
            ("server 127.0.0.1:3000;", format!("server {app};")),
            (
                "listen 443 ssl;",
                format!("listen 127.0.0.1:{} ssl;", ports.https),
            ),
            ("listen 80;", format!("listen 127.0.0.1:{};", ports.http)),
        ] {
            conf = replace(&conf, from, &to);
        }
        let conf_path = d.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let mut command = Command::new(NGINX);
        command
            .arg("-p")
            .arg(format!("{}/", d.display()))
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .arg("-g")
            .arg("daemon off;");
        Proxy::spawn("nginx", command, dir, *ports, certificate).await
    }

    /// Caddy with `config/caddy/Caddyfile`, asking `stepgate` and forwarding to `app`.
    pub async fn caddy(ports: &ProxyPorts, stepgate: SocketAddr, app: SocketAddr) -> Proxy {
        let dir = proxy_dir();
        let d = dir.path();
        let (cert, key, certificate) = write_certificate(d);
        let mut conf = repo_file("config/caddy/Caddyfile");
        for (from, to) in [
            (
                "admin localhost:2019",
                format!("admin 127.0.0.1:{}", ports.admin),
            ),
            ("http_port 80", format!("http_port {}", ports.http)),
            ("https_port 443", format!("https_port {}", ports.https)),
            (
                "/etc/ssl/example.com/fullchain.pem",
                cert.display().to_string(),
            ),
            (
                "/etc/ssl/example.com/privkey.pem",
                key.display().to_string(),
            ),
            ("127.0.0.1:9091", stepgate.to_string()),
            ("127.0.0.1:3000", app.to_string()),
        ] {
            conf = replace(&conf, from, &to);
        }
        let conf_path = d.join("Caddyfile");
        std::fs::write(&conf_path, conf).expect("write Caddyfile");
        let mut command = Command::new(CADDY);
        command
            .arg("run")
            .arg("--config")
            .arg(&conf_path)
            .arg("--adapter")
            .arg("caddyfile")
            .env("HOME", d)
            .env("XDG_DATA_HOME", d.join("data"))
            .env("XDG_CONFIG_HOME", d.join("config"));
        Proxy::spawn("caddy", command, dir, *ports, certificate).await
    }

    async fn spawn(
        name: &'static str,
        mut command: Command,
        dir: TempDir,
        ports: ProxyPorts,
        certificate: CertificateDer<'static>,
    ) -> Proxy {
        let log = std::fs::File::create(dir.path().join(format!("{name}.out"))).expect("log file");
        let log2 = log.try_clone().expect("log file");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut proxy = Proxy {
            child,
            dir,
            ports,
            name,
            certificate,
        };
        proxy.wait_ready().await;
        proxy
    }

    async fn wait_ready(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.ports.https));
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.output());
            }
            // Listening is not enough: Caddy accepts connections before its certificates are
            // ready. Ready means a whole HTTPS exchange (any status).
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let probe = self.client().get(self.url(PORTAL_HOST, "/")).send();
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
                    return;
                }
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{} did not start listening:\n{}", self.name, self.output());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the proxy wrote (its stdout/stderr and, for nginx, the error log).
    pub fn output(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "{}{}",
            read(&format!("{}.out", self.name)),
            read("error.log")
        )
    }

    /// `https://HOST:PORT{path}` on the proxy.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.ports.https)
    }

    /// A client that resolves the example host names to the proxy, accepts its throwaway
    /// certificate, follows no redirects and keeps no cookies.
    pub fn client(&self) -> reqwest::Client {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.ports.https));
        super::client_builder()
            .danger_accept_invalid_certs(true)
            .resolve(PORTAL_HOST, addr)
            .resolve(APP1_HOST, addr)
            .resolve(APP2_HOST, addr)
            .resolve("evil.test", addr)
            .build()
            .expect("reqwest client")
    }
}

impl Proxy {
    /// Writes `request` byte for byte over HTTPS (SNI `server_name`) and returns every byte
    /// the proxy sends until it closes the connection: for requests no HTTP client sends,
    /// such as an absolute target beside another `Host`. Include `Connection: close`.
    pub async fn raw_https(&self, server_name: &str, request: &[u8]) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.certificate.clone())
            .expect("trust the proxy's certificate");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(config));
        let exchange = async {
            let tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], self.ports.https)))
                .await
                .expect("connect");
            let name = ServerName::try_from(server_name.to_owned()).expect("server name");
            let mut tls = connector.connect(name, tcp).await.expect("tls handshake");
            tls.write_all(request).await.expect("write request");
            let mut answer = Vec::new();
            // A close without TLS's close_notify still leaves what was read in `answer`.
            let _ = tls.read_to_end(&mut answer).await;
            answer
        };
        tokio::time::timeout(START_DEADLINE, exchange)
            .await
            .expect("raw HTTPS exchange timed out")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // nginx's workers outlive a killed master: ask the master to stop them (SIGTERM, a
        // fast shutdown) and kill it only if it is still there after that. Caddy is one
        // process.
        if let Some(pid) = self.child.id().filter(|_| self.name == "nginx") {
            let stopped = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .is_ok_and(|s| s.success());
            if stopped {
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while std::time::Instant::now() < deadline {
                    if let Ok(Some(_)) = self.child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let _ = self.child.start_kill();
    }
}
