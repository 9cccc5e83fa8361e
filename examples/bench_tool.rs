//! Helpers for `scripts/bench` (not part of the gateway):
//!
//! - `seed --config FILE --user NAME`: with the gateway stopped, creates the user (password read
//!   from standard input) if it does not exist, and a remember-me session at the two-factor level;
//!   prints the session cookie value on standard output.
//! - `logins --url URL --user NAME --rate N --seconds S`: posts N logins per second (password
//!   from standard input) for S seconds and prints a summary (count, statuses, p50/p99).
//! - `idle --addr HOST:PORT --path PATH --count N --hold S`: opens N keep-alive connections, sends
//!   one request on each, prints `ready N` once every response has arrived, then holds the
//!   connections open and idle for S seconds.
//! - `hashes --config FILE --rate N --seconds S`: verifies a password N times per second for S
//!   seconds, as a login does (argon2id, the configured parameters): a login's CPU spent outside
//!   the gateway, the reference for scenario 7. Prints count and p50/p99.
//!
//! Run it through the script; `cargo run --release --example bench_tool -- help` prints usage.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::sync::{Mutex, Semaphore};

use stepgate::auth::directory::{NewUser, UserDirectory};
use stepgate::auth::password::{Password, PasswordHasher, hash_blocking};
use stepgate::auth::session::{AuthLevel, SessionManager};
use stepgate::auth::user::Username;
use stepgate::clock::{SharedClock, SystemClock};

const USAGE: &str = "usage:
  bench_tool seed --config FILE --user NAME            (password on stdin)
  bench_tool logins --url URL --user NAME --rate N --seconds S   (password on stdin)
  bench_tool idle --addr HOST:PORT --path PATH --count N --hold S
  bench_tool hashes --config FILE --rate N --seconds S";

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("seed") => seed(&Flags::parse(&args[1..])),
        Some("logins") => runtime().and_then(|rt| rt.block_on(logins(Flags::parse(&args[1..])))),
        Some("idle") => runtime().and_then(|rt| rt.block_on(idle(Flags::parse(&args[1..])))),
        Some("hashes") => runtime().and_then(|rt| rt.block_on(hashes(Flags::parse(&args[1..])))),
        _ => Err(USAGE.into()),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_tool: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `--name value` pairs.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(args: &[String]) -> Flags {
        let pairs = args
            .chunks(2)
            .filter_map(|c| match c {
                [k, v] => Some((k.trim_start_matches("--").to_string(), v.clone())),
                _ => None,
            })
            .collect();
        Flags(pairs)
    }

    fn get(&self, name: &str) -> Result<&str, Failure> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("missing --{name}\n{USAGE}").into())
    }

    fn num<T: std::str::FromStr>(&self, name: &str) -> Result<T, Failure> {
        self.get(name)?
            .parse()
            .map_err(|_| format!("--{name}: not a number").into())
    }
}

fn read_password() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Creates the bench user (if needed) and a two-factor session; prints the cookie value.
fn seed(flags: &Flags) -> Result<(), Failure> {
    let config =
        stepgate::config::load(&PathBuf::from(flags.get("config")?)).map_err(|e| e.to_string())?;
    let username = Username::parse(flags.get("user")?)?;
    let password = Password::new(read_password()?);
    let clock: SharedClock = Arc::new(SystemClock);
    let store = Arc::new(stepgate::app::open_store(&config)?);
    let sessions = Arc::new(SessionManager::new(
        store.clone(),
        clock.clone(),
        config.session.settings,
    ));
    let users = UserDirectory::new(store.clone(), sessions.clone(), clock, config.mfa.clone());
    if users.get(&username)?.is_none() {
        users.create(NewUser {
            username: username.clone(),
            display_name: Some("Bench User".into()),
            email: Some("bench@example.com".into()),
            groups: vec!["admins".into(), "dev".into()],
            password_hash: hash_blocking(config.password.params, &password)?,
        })?;
    }
    let (id, _) = sessions.create(&username, AuthLevel::TwoFactor, true)?;
    store.flush()?;
    println!("{}", id.cookie_value());
    Ok(())
}

/// Posts `rate` logins per second for `seconds` seconds, each on its own task, and prints what
/// came back.
async fn logins(flags: Flags) -> Result<(), Failure> {
    let url = format!(
        "{}/.stepgate/login",
        flags.get("url")?.trim_end_matches('/')
    );
    let user = flags.get("user")?.to_string();
    let rate: u32 = flags.num("rate")?;
    let seconds: u64 = flags.num("seconds")?;
    let password = read_password()?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let results: Arc<Mutex<Vec<(u16, Duration)>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    while Instant::now() < deadline {
        tick.tick().await;
        let (client, url, results) = (client.clone(), url.clone(), results.clone());
        let form = [("username", user.clone()), ("password", password.clone())];
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let status = match client
                .post(&url)
                .header("accept", "application/json")
                .form(&form)
                .send()
                .await
            {
                Ok(resp) => resp.status().as_u16(),
                Err(_) => 0,
            };
            results.lock().await.push((status, start.elapsed()));
        }));
    }
    for task in tasks {
        task.await?;
    }
    let results = results.lock().await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let mut times: Vec<Duration> = results.iter().map(|(_, t)| *t).collect();
    times.sort_unstable();
    let pct = |p| percentile_ms(&times, p);
    println!(
        "logins sent={} ok={} rate={:.1}/s p50={:.1}ms p99={:.1}ms",
        results.len(),
        ok,
        results.len() as f64 / seconds.max(1) as f64,
        pct(0.50),
        pct(0.99)
    );
    if ok != results.len() {
        return Err(format!("{} login(s) did not answer 200", results.len() - ok).into());
    }
    Ok(())
}

/// Verifies a password `rate` times per second for `seconds` seconds, the way the gateway
/// checks a login (argon2id with the configured parameters, working memory reused, one
/// verification at a time on a blocking thread). Each one is due at its tick: one that starts
/// late is counted from its tick, like a queued login. Prints how long they took.
async fn hashes(flags: Flags) -> Result<(), Failure> {
    let config =
        stepgate::config::load(&PathBuf::from(flags.get("config")?)).map_err(|e| e.to_string())?;
    let rate: u32 = flags.num("rate")?;
    let seconds: u32 = flags.num("seconds")?;
    if rate == 0 {
        return Err("--rate: must be at least 1".into());
    }
    let password = "bench-password-verified-outside-the-gateway";
    let params = config.password.params;
    let (hasher, hash) = tokio::task::spawn_blocking(move || {
        let hash = hash_blocking(params, &Password::new(password.into()))?;
        Ok::<_, Failure>((PasswordHasher::new(params, 1)?, hash))
    })
    .await??;
    let interval = Duration::from_secs(1) / rate;
    let start = tokio::time::Instant::now();
    let mut times = Vec::new();
    for n in 0..seconds.saturating_mul(rate) {
        let due = start + interval * n;
        tokio::time::sleep_until(due).await;
        if !hasher
            .verify(Password::new(password.into()), Some(&hash))
            .await
        {
            return Err("the password did not verify".into());
        }
        times.push(due.elapsed());
    }
    times.sort_unstable();
    let pct = |p| percentile_ms(&times, p);
    println!(
        "hashes done={} rate={:.1}/s p50={:.1}ms p99={:.1}ms",
        times.len(),
        times.len() as f64 / start.elapsed().as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}

/// The `p` quantile (0 to 1) of sorted durations, in milliseconds (0 when there are none).
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Opens `count` keep-alive connections, one request each, then holds them idle.
async fn idle(flags: Flags) -> Result<(), Failure> {
    let addr: SocketAddr = flags.get("addr")?.parse()?;
    let path = flags.get("path")?.to_string();
    let count: usize = flags.num("count")?;
    let hold: u64 = flags.num("hold")?;
    // Open at most this many at once: the listener's accept backlog is finite.
    let opening = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let (opening, path) = (opening.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let permit = opening.acquire_owned().await?;
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let driver = tokio::spawn(conn);
            let req = http::Request::get(&path)
                .header("host", addr.to_string())
                .body(Empty::<Bytes>::new())?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            drop(permit);
            if !status.is_success() {
                return Err(format!("status {status}").into());
            }
            Ok::<_, Failure>((sender, driver))
        }));
    }
    let mut held = Vec::with_capacity(count);
    for task in tasks {
        held.push(task.await??);
    }
    println!("ready {}", held.len());
    std::io::stdout().flush()?;
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let open = held.iter().filter(|(_, d)| !d.is_finished()).count();
    println!("still open after {hold}s: {open}");
    Ok(())
}
