//! `stepgate check-config` and `stepgate serve` on good and bad configuration files: every
//! problem is reported with its key path, and a bad file never gets a listener.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{refused_addr, stepgate_command};

const DEADLINE: Duration = Duration::from_secs(60);

/// Two upstreams, the second with an unsupported scheme.
const BAD_SCHEME: &str = r#"
[server]
listen = "127.0.0.1:0"

[[upstreams]]
url = "http://127.0.0.1:3000"

[[upstreams]]
host = "b.test"
url = "ftp://127.0.0.1:21"
"#;

fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("stepgate.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

async fn run(args: &[&str]) -> Output {
    let mut command = stepgate_command();
    command.args(args);
    tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("stepgate did not exit")
        .expect("run stepgate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), BAD_SCHEME);
    let out = run(&["check-config", "--config", path.to_str().expect("utf-8")]).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "exit {:?}", out.status);
    assert!(
        stderr.contains("upstreams[1].url: scheme must be http or https"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_config_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        dir.path(),
        r#"
[server]
listen = "nowhere"
trusted_proxies = ["10.0.0.0/8", "not-a-network"]

[limits]
idle_timeout = "soon"

[[upstreams]]
url = "http://127.0.0.1:3000/with/path"
"#,
    );
    let out = run(&["check-config", "--config", path.to_str().expect("utf-8")]).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    for key in [
        "server.listen:",
        "server.trusted_proxies[1]:",
        "limits.idle_timeout:",
        "upstreams[0].url:",
    ] {
        assert!(stderr.contains(key), "{key} missing from:\n{stderr}");
    }
}

#[tokio::test]
async fn check_config_rejects_unknown_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        dir.path(),
        "[server]\nlisen = \"127.0.0.1:0\"\n\n[[upstreams]]\nurl = \"http://127.0.0.1:3000\"\n",
    );
    let out = run(&["check-config", "--config", path.to_str().expect("utf-8")]).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("server.lisen: unknown key"), "{stderr}");
}

#[tokio::test]
async fn check_config_accepts_the_example_configuration() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/stepgate.example.toml");
    let out = run(&["check-config", "--config", example.to_str().expect("utf-8")]).await;
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("configuration is valid"),
        "{}",
        text(&out.stdout)
    );
}

/// `check-config` reads the certificate and key as `serve` would: files that are there but
/// hold no usable PEM, or a key that does not fit the certificate, fail the check.
#[tokio::test]
async fn check_config_loads_the_tls_certificate_and_key() {
    let ca = common::TestCa::new();
    let other = common::TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let config = |cert: &Path, key: &Path| {
        format!(
            "[server]\ntls_listen = \"127.0.0.1:8443\"\ntls_cert = {}\ntls_key = {}\n",
            common::toml_string(&cert.display().to_string()),
            common::toml_string(&key.display().to_string()),
        )
    };
    let check = |toml: String| {
        let path = write_config(dir.path(), &toml);
        async move { run(&["check-config", "--config", path.to_str().expect("utf-8")]).await }
    };
    let out = check(config(&ca.cert_path(), &ca.key_path())).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (cert, key, says) in [
        (garbage.clone(), ca.key_path(), "server.tls_cert"),
        (ca.cert_path(), garbage.clone(), "server.tls_key"),
        (ca.cert_path(), other.key_path(), "server.tls_key"),
    ] {
        let out = check(config(&cert, &key)).await;
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}

/// `check-config` reads the upstreams' and the mail server's CA files as `serve` does: a file
/// that is there but holds no certificate fails the check, not the next start.
#[tokio::test]
async fn check_config_reads_the_ca_files() {
    let ca = common::TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let upstream = |ca_file: &Path| {
        format!(
            "[[upstreams]]\nurl = \"https://127.0.0.1:3443\"\nca_file = {}\n",
            common::toml_string(&ca_file.display().to_string())
        )
    };
    let email = |ca_file: &Path| {
        format!(
            "[[upstreams]]\nurl = \"http://127.0.0.1:3000\"\n[email]\nurl = \"smtps://mail.example.test\"\n\
             from = \"noreply@example.test\"\nca_file = {}\n",
            common::toml_string(&ca_file.display().to_string())
        )
    };
    for (toml, says) in [
        (upstream(&garbage), "upstreams[0].ca_file"),
        (email(&garbage), "email"),
    ] {
        let path = write_config(dir.path(), &toml);
        let out = run(&["check-config", "--config", path.to_str().expect("utf-8")]).await;
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{toml}: {stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(stderr.contains("1 problem(s) found"), "{stderr}");
    }
    for toml in [upstream(&ca.ca_path()), email(&ca.ca_path())] {
        let path = write_config(dir.path(), &toml);
        let out = run(&["check-config", "--config", path.to_str().expect("utf-8")]).await;
        assert!(out.status.success(), "{toml}: {}", text(&out.stderr));
    }
}

/// `check-config` reads the key of second-factor secrets as `serve` would, creating nothing:
/// a key file of the wrong size fails the check, a missing one is fine (`serve` creates it),
/// one that others can read passes with a warning.
#[tokio::test]
async fn check_config_checks_the_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("secret.key");
    let toml = format!(
        "[storage]\npath = {}\nkey_file = {}\n",
        common::toml_string(&dir.path().join("store").display().to_string()),
        common::toml_string(&key.display().to_string()),
    );
    let path = write_config(dir.path(), &toml);
    let args = ["check-config", "--config", path.to_str().expect("utf-8")];
    let out = run(&args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!key.exists(), "check-config created the key file");
    // A usable key that others can read passes, with a warning naming the file.
    std::fs::write(&key, [7u8; 32]).expect("write");
    for (mode, warned) in [(0o644, true), (0o600, false)] {
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod");
        let out = run(&args).await;
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(stderr.contains("chmod 600"), warned, "{mode:o}: {stderr}");
        assert_eq!(stderr.contains(&*key.to_string_lossy()), warned, "{stderr}");
    }
    std::fs::write(&key, [7u8; 16]).expect("write");
    let out = run(&args).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("32 bytes"), "{stderr}");
    assert!(stderr.contains("1 problem(s) found"), "{stderr}");
}

#[tokio::test]
async fn check_config_fails_on_a_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("absent.toml");
    let out = run(&["check-config", "--config", missing.to_str().expect("utf-8")]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("config:"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn serve_refuses_to_start_on_a_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A concrete port, so the test can check that nothing ever listened on it.
    let addr = refused_addr();
    let toml = BAD_SCHEME.replace("127.0.0.1:0", &addr.to_string());
    let path = write_config(dir.path(), &toml);
    let out = run(&["serve", "--config", path.to_str().expect("utf-8")]).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "exit {:?}", out.status);
    assert!(
        stderr.contains("upstreams[1].url: scheme must be http or https"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "something listens on {addr}"
    );
}

fn smtp_config(port: u16) -> String {
    format!(
        r#"
[[upstreams]]
url = "http://127.0.0.1:3000"

[email]
transport = "smtp"
url = "smtp://127.0.0.1:{port}?tls=none"
from = "Stepgate <noreply@example.test>"
"#
    )
}

#[tokio::test]
async fn check_config_smtp_connects_to_the_mail_server() {
    let smtp = common::SmtpServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), &smtp_config(smtp.port()));
    let out = run(&["check-config", "--smtp", "--config", path.to_str().unwrap()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("the mail server accepted the connection"),
        "{stdout}"
    );
    assert!(
        smtp.connections() >= 1,
        "no connection reached the SMTP server"
    );
}

#[tokio::test]
async fn check_config_smtp_fails_when_the_server_is_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), &smtp_config(refused_addr().port()));
    let out = run(&["check-config", "--smtp", "--config", path.to_str().unwrap()]).await;
    assert!(!out.status.success());
    // Without --smtp the same file is valid: only the connection failed.
    let out = run(&["check-config", "--config", path.to_str().unwrap()]).await;
    assert!(out.status.success());
}
