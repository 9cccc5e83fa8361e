//! `Gateway`: a Stepgate gateway started in-process on 127.0.0.1 ephemeral ports, built from a
//! TOML configuration that tests extend section by section.
//!
//! ```ignore
//! let upstream = EchoUpstream::start().await;
//! let gw = Gateway::builder()
//!     .upstream(&upstream.url())
//!     .upstream_for_host("a.test", &other.url())
//!     .upstream_extra(r#"timeout = "300ms""#)        // applies to the upstream added last
//!     .extra_toml("[limits]\nidle_timeout = \"300ms\"") // merged over the generated config
//!     .tls(&ca)
//!     .start()
//!     .await;
//! let resp = http_client().get(gw.url_for("/x")).send().await?;
//! gw.shutdown().await;
//! ```
//!
//! `extra_toml` fragments are merged over the generated configuration, so a fragment may reopen
//! a section the builder already writes (`[server]`, `[limits]`, ...). Arrays are appended to
//! (figment's `admerge`): an `[[upstreams]]` entry in a fragment is added after the builder's.
//! The generated configuration lets every request through (`access.default_policy = "bypass"`)
//! so proxy-core tests need no login; a fragment with `[access]` puts a policy back.
//! The storage directory is a fresh temporary directory unless [`GatewayBuilder::storage_dir`]
//! names one, and it lives as long as the [`Gateway`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::Figment;
use figment::providers::{Format, Toml};
use tempfile::TempDir;

use stepgate::clock::{SharedClock, SystemClock};
use stepgate::server::RunningGateway;

use super::ca::TestCa;

/// A TOML basic string holding `s` (JSON string escapes are valid TOML escapes).
pub fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("string to JSON")
}

struct UpstreamEntry {
    host: Option<String>,
    url: String,
    extra: Vec<String>,
}

/// Collects the configuration of a gateway to start; see the module documentation.
pub struct GatewayBuilder {
    upstreams: Vec<UpstreamEntry>,
    extra: Vec<String>,
    http: bool,
    tls: Option<(PathBuf, PathBuf)>,
    storage_dir: Option<PathBuf>,
    clock: Option<SharedClock>,
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            upstreams: Vec::new(),
            extra: Vec::new(),
            http: true,
            tls: None,
            storage_dir: None,
            clock: None,
        }
    }
}

impl GatewayBuilder {
    /// The default upstream (no `host`): requests whose host matches no other entry go here.
    pub fn upstream(mut self, url: &str) -> Self {
        self.upstreams.push(UpstreamEntry {
            host: None,
            url: url.to_owned(),
            extra: Vec::new(),
        });
        self
    }

    /// An upstream chosen for `host` (`"a.test"` or `"*.example.com"`).
    pub fn upstream_for_host(mut self, host: &str, url: &str) -> Self {
        self.upstreams.push(UpstreamEntry {
            host: Some(host.to_owned()),
            url: url.to_owned(),
            extra: Vec::new(),
        });
        self
    }

    /// TOML lines (`key = value`) added to the upstream added last, e.g. `timeout = "300ms"`.
    pub fn upstream_extra(mut self, lines: &str) -> Self {
        let last = self
            .upstreams
            .last_mut()
            .expect("upstream_extra needs an upstream added before it");
        last.extra.push(lines.to_owned());
        self
    }

    /// A TOML fragment merged over the generated configuration (sections may repeat).
    pub fn extra_toml(mut self, toml: &str) -> Self {
        self.extra.push(toml.to_owned());
        self
    }

    /// Also listen for HTTPS on an ephemeral port, presenting `ca`'s leaf certificate.
    pub fn tls(mut self, ca: &TestCa) -> Self {
        self.tls = Some((ca.cert_path(), ca.key_path()));
        self
    }

    /// Listen for HTTPS only (needs [`Self::tls`]).
    pub fn without_http(mut self) -> Self {
        self.http = false;
        self
    }

    /// Keep the store in `dir` (e.g. to restart a gateway over the same data) instead of a
    /// fresh temporary directory.
    pub fn storage_dir(mut self, dir: &Path) -> Self {
        self.storage_dir = Some(dir.to_owned());
        self
    }

    /// The clock the gateway reads (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The generated configuration, without the `extra_toml` fragments, storing in `storage`.
    pub fn base_toml(&self, storage: &Path) -> String {
        let mut toml = String::from("[server]\n");
        if self.http {
            toml.push_str("listen = \"127.0.0.1:0\"\n");
        }
        if let Some((cert, key)) = &self.tls {
            toml.push_str("tls_listen = \"127.0.0.1:0\"\n");
            toml.push_str(&format!(
                "tls_cert = {}\n",
                toml_string(&cert.display().to_string())
            ));
            toml.push_str(&format!(
                "tls_key = {}\n",
                toml_string(&key.display().to_string())
            ));
        }
        toml.push_str(&format!(
            "\n[storage]\npath = {}\n",
            toml_string(&storage.display().to_string())
        ));
        // Proxy-core tests run without login; tests of the access rules override this with
        // an `[access]` fragment. Cheap argon2 parameters keep login tests fast.
        toml.push_str("\n[access]\ndefault_policy = \"bypass\"\n");
        toml.push_str("\n[password]\nargon2_memory_kib = 256\nargon2_iterations = 1\n");
        for upstream in &self.upstreams {
            toml.push_str("\n[[upstreams]]\n");
            if let Some(host) = &upstream.host {
                toml.push_str(&format!("host = {}\n", toml_string(host)));
            }
            toml.push_str(&format!("url = {}\n", toml_string(&upstream.url)));
            for line in &upstream.extra {
                toml.push_str(line);
                toml.push('\n');
            }
        }
        toml
    }

    fn figment(&self, storage: &Path) -> Figment {
        let mut figment = Figment::from(Toml::string(&self.base_toml(storage)));
        for fragment in &self.extra {
            figment = figment.admerge(Toml::string(fragment));
        }
        figment
    }

    /// Validates the configuration and starts the gateway; `Err` carries the config problems
    /// or the start error as text.
    pub async fn try_start(self) -> Result<Gateway, String> {
        let (temp, storage) = match &self.storage_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
                let storage = temp.path().join("store");
                (Some(temp), storage)
            }
        };
        let config = stepgate::config::from_figment(&self.figment(&storage))
            .map_err(|errors| errors.to_string())?;
        let clock = self.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let app = stepgate::app::App::new(config, clock).map_err(|e| e.to_string())?;
        let running = stepgate::server::start(app)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Gateway {
            http_addr: running.http_addr,
            https_addr: running.https_addr,
            running: Some(running),
            storage,
            _temp: temp,
        })
    }

    /// Like [`Self::try_start`], panicking with the problems if the gateway cannot start.
    pub async fn start(self) -> Gateway {
        match self.try_start().await {
            Ok(gateway) => gateway,
            Err(problems) => panic!("gateway did not start:\n{problems}"),
        }
    }
}

/// A running gateway. Dropping it starts a graceful shutdown in the background; call
/// [`Gateway::shutdown`] to wait for it and learn whether every connection drained.
pub struct Gateway {
    running: Option<RunningGateway>,
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    storage: PathBuf,
    _temp: Option<TempDir>,
}

impl Gateway {
    /// The plain HTTP listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.http_addr.expect("the gateway has no HTTP listener")
    }

    /// The HTTPS listener's address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr.expect("the gateway has no HTTPS listener")
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `https://localhost:PORT` (no trailing slash); the test CA's leaf is valid for that name.
    /// A client must resolve `localhost` to 127.0.0.1, or use [`Self::https_ip_url`].
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.https_addr().port())
    }

    /// `https://127.0.0.1:PORT` (no trailing slash); the test CA's leaf is valid for that IP.
    pub fn https_ip_url(&self) -> String {
        format!("https://{}", self.https_addr())
    }

    /// `http_url()` followed by `path_and_query`.
    pub fn url_for(&self, path_and_query: &str) -> String {
        format!("{}{}", self.http_url(), path_and_query)
    }

    /// `https_ip_url()` followed by `path_and_query`.
    pub fn https_url_for(&self, path_and_query: &str) -> String {
        format!("{}{}", self.https_ip_url(), path_and_query)
    }

    /// Where the gateway keeps its store.
    pub fn storage_path(&self) -> &Path {
        &self.storage
    }

    /// The application state the gateway runs with.
    pub fn app(&self) -> &Arc<stepgate::app::App> {
        self.running
            .as_ref()
            .expect("gateway is running until shut down")
            .app()
    }

    /// Graceful shutdown: stop accepting, drain in-flight requests within
    /// `limits.shutdown_timeout`. Returns whether everything drained.
    pub async fn shutdown(mut self) -> bool {
        let running = self.running.take().expect("gateway is running");
        running.shutdown().await.expect("shutdown")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(async move {
                        let _ = running.shutdown().await;
                    });
                }
                // No runtime: its tasks (listeners, connections) are already gone.
                Err(_) => drop(running),
            }
        }
    }
}

/// The built `stepgate` binary, with `STEPGATE_*` and `RUST_LOG` removed from its environment
/// so the caller's shell cannot change what a test runs; killed if the handle is dropped.
pub fn stepgate_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_stepgate"));
    for (name, _) in std::env::vars_os() {
        let is_ours = name
            .to_str()
            .is_some_and(|n| n.starts_with("STEPGATE_") || n == "RUST_LOG");
        if is_ours {
            command.env_remove(&name);
        }
    }
    command
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// Sends SIGTERM to process `pid`.
pub fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid} failed");
}

/// The lines a child process writes to one of its pipes, read as they come.
pub struct OutputLines {
    rx: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl OutputLines {
    /// Starts reading `pipe` (a `ChildStdout` or `ChildStderr`) line by line.
    pub fn new<R>(pipe: R) -> OutputLines
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        use tokio::io::AsyncBufReadExt;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        OutputLines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for the next line satisfying `wanted` and returns it; panics, showing everything
    /// read, if the pipe closes first. Bound it with a timeout.
    pub async fn wait_for(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        while let Some(line) = self.rx.recv().await {
            self.seen.push(line.clone());
            if wanted(&line) {
                return line;
            }
        }
        panic!(
            "output ended without the expected line; it was:\n{}",
            self.seen.join("\n")
        );
    }

    /// Reads until the pipe closes; returns every line read, including earlier ones.
    pub async fn all(mut self) -> Vec<String> {
        while let Some(line) = self.rx.recv().await {
            self.seen.push(line);
        }
        self.seen
    }

    /// The lines read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }
}
