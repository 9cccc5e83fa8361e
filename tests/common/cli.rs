//! Running the `stepgate` binary against a throwaway configuration: a temp directory holds the
//! config file and the store, password hashing is cheap, and the gateway (when a test starts
//! one in-process) listens on an ephemeral loopback port.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use stepgate::app::App;
use stepgate::clock::SystemClock;
use stepgate::config::Config;
use stepgate::server::RunningGateway;

/// Cheap argon2 parameters so each CLI run hashes in milliseconds.
pub const FAST_PASSWORD: &str = r#"
[password]
min_length = 10
argon2_memory_kib = 256
argon2_iterations = 1
argon2_parallelism = 1
max_concurrent_hashes = 2
"#;

/// A temp directory with `stepgate.toml` and the store under `store/`.
pub struct CliEnv {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub storage: PathBuf,
}

/// What one run of the binary produced.
#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Panics with everything printed unless the command exited 0.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        self
    }
}

impl CliEnv {
    /// A configuration with [`FAST_PASSWORD`] and `extra` appended (e.g. `[access]` rules).
    pub fn new(extra: &str) -> CliEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = dir.path().join("store");
        let upstream = super::refused_addr();
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {storage:?}\n\n[[upstreams]]\nurl = \"http://{upstream}\"\n{FAST_PASSWORD}\n{extra}\n",
            storage = storage.display().to_string(),
        );
        let config_path = dir.path().join("stepgate.toml");
        std::fs::write(&config_path, toml).expect("write config");
        CliEnv {
            dir,
            config_path,
            storage,
        }
    }

    pub fn config(&self) -> Config {
        stepgate::config::load(&self.config_path).expect("valid test config")
    }

    pub fn socket_path(&self) -> PathBuf {
        stepgate::admin::socket::socket_path(&self.storage)
    }

    /// Runs `stepgate ARGS --config <this config>`, feeding `stdin` when given.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        let mut full: Vec<&str> = args.to_vec();
        let config = self.config_path.to_str().expect("utf-8 temp path");
        full.extend(["--config", config]);
        run_in(self.dir.path(), &full, stdin)
    }

    /// Starts the gateway in this process on the same configuration.
    pub async fn start_gateway(&self) -> RunningGateway {
        let app = App::new(self.config(), Arc::new(SystemClock)).expect("app");
        stepgate::server::start(app).await.expect("gateway starts")
    }
}

/// Runs the binary in `cwd` with exactly `args`, no `STEPGATE_*` variables from the test's own
/// environment, and `stdin` (or an empty standard input).
pub fn run_in(cwd: &Path, args: &[&str], stdin: Option<&str>) -> CliOutput {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stepgate"));
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STEPGATE_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd.spawn().expect("spawn stepgate");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("wait for stepgate");
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`CliEnv::run`] from async tests, off the runtime's worker threads.
pub async fn run_async(env: &CliEnv, args: &[&str], stdin: Option<&str>) -> CliOutput {
    let cwd = env.dir.path().to_path_buf();
    let config = env
        .config_path
        .to_str()
        .expect("utf-8 temp path")
        .to_string();
    let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    full.extend(["--config".to_string(), config]);
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = full.iter().map(String::as_str).collect();
        run_in(&cwd, &args, stdin.as_deref())
    })
    .await
    .expect("cli task")
}
