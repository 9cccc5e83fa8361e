//! `stepgate demo`: the gateway in front of a built-in demo console, with no config file.
//! Everything it stores lives in one data directory, named on start.

pub mod console;

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::Figment;
use figment::providers::{Format, Toml};

use crate::app::App;
use crate::auth::directory::NewUser;
use crate::auth::password::Password;
use crate::auth::user::Username;
use crate::clock::SystemClock;
use crate::config::{self, Config};

#[derive(clap::Args, Debug, Clone)]
pub struct DemoOptions {
    /// Address the gateway listens on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory for the demo's data (store, outbox). Created if missing.
    #[arg(long, default_value = "stepgate-demo-data")]
    pub data_dir: PathBuf,
}

/// The configuration the demo runs with: the same validation as a real config file.
pub fn demo_config(
    listen: SocketAddr,
    console: SocketAddr,
    data_dir: &Path,
) -> Result<Config, config::ConfigErrors> {
    let toml = format!(
        r#"
[server]
listen = "{listen}"

[portal]
title = "Stepgate demo"

# A demo on one machine needs few connections, and fits the usual open-file limit (1024).
[limits]
max_connections = 256

[storage]
path = {store:?}

[[upstreams]]
url = "http://{console}"

[access]
default_policy = "one_factor"

[[access.rules]]
path = "^/public(/|$)"
policy = "bypass"

# The console's settings page is sensitive: a second factor checked in the last 5 minutes.
[[access.rules]]
path = "^/settings(/|$)"
policy = "one_factor"
step_up = "5m"
step_up_fallback = "password"

[email]
transport = "file"
dir = {outbox:?}
from = "Stepgate demo <stepgate-demo@localhost>"

[mfa]
issuer = "Stepgate demo"
# Every account with an email address gets login codes by email until it sets up an app.
email_default = true
"#,
        store = data_dir.join("store").display().to_string(),
        outbox = outbox_dir(data_dir).display().to_string(),
    );
    // No `STEPGATE_*` overrides: in a shell or container set up for a real gateway they would
    // point the demo (and its demo account with a published password) at the real store and
    // address. The demo has its own flags (`--listen`, `--data-dir`).
    config::from_figment(&Figment::from(Toml::string(&toml)))
}

/// The demo account, created on first start.
pub const DEMO_USER: &str = "demo";
pub const DEMO_PASSWORD: &str = "demo-password";

async fn ensure_demo_user(app: &App) -> io::Result<()> {
    let username = Username::parse(DEMO_USER).map_err(io::Error::other)?;
    if app
        .users
        .get(&username)
        .map_err(io::Error::other)?
        .is_some()
    {
        return Ok(());
    }
    let hash = app
        .hasher
        .hash(Password::new(DEMO_PASSWORD.to_string()))
        .await
        .map_err(io::Error::other)?;
    app.users
        .create(NewUser {
            username,
            display_name: Some("Demo User".into()),
            email: Some("demo@example.com".into()),
            groups: vec!["users".into(), "admins".into()],
            password_hash: hash,
        })
        .map_err(io::Error::other)?;
    Ok(())
}

/// A warning when the demo listens beyond this machine: its account's password is public.
fn exposure_warning(listen: SocketAddr) -> Option<String> {
    (!listen.ip().is_loopback()).then(|| {
        format!(
            "Warning: the demo listens on {listen}, beyond this machine, and its account \
             ({DEMO_USER:?}, in group \"admins\") has a published password: anyone who can \
             reach it can sign in. Use --listen 127.0.0.1:PORT unless that is what you want."
        )
    })
}

/// Where the demo's emails (login codes, notices) are written, one `.eml` file each.
pub fn outbox_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("outbox")
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(opts: DemoOptions) -> io::Result<()> {
    // Only its owner may read it: the outbox holds login codes, the store session ids. (A
    // directory that is there already is used as it is.)
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&opts.data_dir)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", opts.data_dir.display()),
            )
        })?;
    let data_dir = std::fs::canonicalize(&opts.data_dir)?;
    let console_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let console_addr = console_listener.local_addr()?;
    let (stop_console, console_stopped) = tokio::sync::oneshot::channel::<()>();
    let console = tokio::spawn(console::serve_console(console_listener, async move {
        let _ = console_stopped.await;
    }));

    let config = demo_config(opts.listen, console_addr, &data_dir).map_err(io::Error::other)?;
    crate::logging::init(&config.log);
    let app = App::new(config, Arc::new(SystemClock)).map_err(io::Error::other)?;
    ensure_demo_user(&app).await?;
    let signal = crate::server::shutdown_signal()?;
    let running = crate::server::start(app).await?;
    let url = match running.http_addr {
        Some(addr) => format!("http://{addr}/"),
        None => return Err(io::Error::other("the demo needs an HTTP listener")),
    };
    println!("Stepgate demo running at {url}");
    println!("  demo console (behind the gateway): {console_addr}");
    println!("  data directory: {}", data_dir.display());
    println!(
        "Open {url} in a browser and sign in as {DEMO_USER:?} with password {DEMO_PASSWORD:?}."
    );
    println!(
        "The console then shows the identity headers the gateway sends; /public needs no login."
    );
    if let Some(warning) = exposure_warning(opts.listen) {
        eprintln!("{warning}");
    }
    println!("Press Ctrl-C to stop.");

    signal.await;
    running.shutdown().await?;
    let _ = stop_console.send(());
    let _ = console.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_when_the_demo_listens_beyond_this_machine() {
        for quiet in ["127.0.0.1:8080", "[::1]:8080"] {
            assert_eq!(exposure_warning(quiet.parse().unwrap()), None, "{quiet}");
        }
        for loud in ["0.0.0.0:8080", "[::]:8080", "192.0.2.7:8080"] {
            let warning = exposure_warning(loud.parse().unwrap()).expect(loud);
            assert!(
                warning.contains(loud) && warning.contains("anyone"),
                "{warning}"
            );
        }
    }
}
