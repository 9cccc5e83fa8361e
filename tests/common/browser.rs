//! `Browser`: a real headless Chromium driven over WebDriver (chromedriver + fantoccini), for
//! end-to-end tests of the portal as a person uses it: real typing, real form posts, real
//! cookies and the page's own script.
//!
//! ```ignore
//! let mut browser = Browser::start("password_login").await;
//! browser.goto(&rig.gw.url_for("/")).await;
//! browser.wait_for_path("/.stepgate/login").await;
//! browser.screenshot("login").await;                 // target/browser-screenshots/password_login/01-login.png
//! browser.fill("#username", "alice").await;
//! browser.click("button[type=submit]").await;
//! browser.wait_for_text("remote-user").await;
//! browser.close().await;
//! ```
//!
//! Chromium and chromedriver come from Debian (`apt-get install chromium chromium-driver`, as
//! `.ci/run` does). If either is missing the test fails, saying so: it never skips. Each
//! `Browser` has its own chromedriver on an ephemeral loopback port, its own Chromium and a
//! fresh profile directory; all of it is killed and removed when the handle is dropped (also
//! when the test panics). Every wait polls against [`DEADLINE`]; nothing sleeps for a fixed time.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver (package `chromium-driver`), the same version as [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The longest any wait (a page, an element, a text, chromedriver starting) may take before
/// the test fails. A passing test never waits for it: every wait ends as soon as its condition
/// holds.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(20);

/// The desktop window, and the phone-width one of [`Browser::screenshot_phone`].
pub const DESKTOP: (u32, u32) = (1280, 900);
pub const PHONE: (u32, u32) = (360, 800);

/// A running Chromium under its own chromedriver; see the module documentation.
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    driver_log: PathBuf,
    shots: PathBuf,
    shot_no: usize,
    // Last: removed after the processes using it are gone.
    profile: TempDir,
}

/// `target/browser-screenshots/<test>` (under `CARGO_TARGET_DIR` when set).
pub fn screenshot_dir(test: &str) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => manifest.join(dir),
        None => manifest.join("target"),
    };
    target.join("browser-screenshots").join(test)
}

fn require(path: &str, what: &str) {
    assert!(
        Path::new(path).exists(),
        "{what} is not installed at {path}: the browser tests need Debian's chromium and \
         chromium-driver (`apt-get install chromium chromium-driver`; .ci/run installs them)"
    );
}

fn capabilities(profile: &Path) -> serde_json::Map<String, Value> {
    let args = [
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--no-default-browser-check".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-features=Translate,OptimizationHints,MediaRouter".to_owned(),
        // Pages follow Accept-Language: make it English whatever the machine's locale.
        "--lang=en-US".to_owned(),
        format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
        format!("--user-data-dir={}", profile.display()),
    ];
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": args,
            "prefs": { "intl.accept_languages": "en-US,en" },
        },
        // Bound what a single command may take inside the browser.
        "timeouts": { "pageLoad": 30_000, "script": 30_000, "implicit": 0 },
    });
    match caps {
        Value::Object(map) => map,
        _ => unreachable!("an object"),
    }
}

/// Runs `fut` (one WebDriver command) within [`DEADLINE`], panicking with `what` on an error
/// or a timeout.
async fn bounded<T, E: std::fmt::Debug>(what: &str, fut: impl Future<Output = Result<T, E>>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => panic!("{what}: {e:?}"),
        Err(_) => panic!("{what}: no answer from the browser within {DEADLINE:?}"),
    }
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium. `test` names the screenshot folder
    /// (emptied now).
    pub async fn start(test: &str) -> Browser {
        require(CHROMIUM, "Chromium");
        require(CHROMEDRIVER, "chromedriver");
        let shots = screenshot_dir(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("create the screenshot folder");
        let profile = tempfile::tempdir().expect("profile dir");
        let driver_log = profile.path().join("chromedriver.log");

        // The port was free a moment ago; if someone took it since, chromedriver exits and a
        // new port is tried.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let port = super::ports::reserve();
            let mut driver = spawn_driver(port, &driver_log);
            match wait_listening(&mut driver, port).await {
                Ok(()) => {
                    let url = format!("http://127.0.0.1:{port}");
                    let user_data = profile.path().join("chromium");
                    let connect = async {
                        ClientBuilder::new(HttpConnector::new())
                            .capabilities(capabilities(&user_data))
                            .connect(&url)
                            .await
                    };
                    let client = match tokio::time::timeout(DEADLINE, connect).await {
                        Ok(Ok(client)) => client,
                        other => {
                            kill_group(&mut driver);
                            panic!(
                                "Chromium did not start under chromedriver: {:?}\n{}",
                                other.map(|r| r.err()),
                                read_log(&driver_log)
                            );
                        }
                    };
                    return Browser {
                        client: Some(client),
                        driver,
                        driver_log,
                        shots,
                        shot_no: 0,
                        profile,
                    };
                }
                Err(why) => {
                    kill_group(&mut driver);
                    failures.push(format!("port {port}: {why}\n{}", read_log(&driver_log)));
                }
            }
        }
        panic!("chromedriver did not start:\n{}", failures.join("\n"));
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("browser is open")
    }

    /// Where this test's screenshots go.
    pub fn screenshot_dir(&self) -> &Path {
        &self.shots
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        bounded(&format!("open {url}"), self.client().goto(url)).await;
    }

    /// The current URL.
    pub async fn url(&self) -> url::Url {
        bounded("current URL", self.client().current_url()).await
    }

    /// The current URL's path and query (`/a?b=c`).
    pub async fn path_and_query(&self) -> String {
        let url = self.url().await;
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Polls `probe` until it gives `Some`, or fails the test after [`DEADLINE`] with
    /// `what` and the page it was on.
    async fn poll<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            if start.elapsed() > DEADLINE {
                let url = self.client().current_url().await.ok();
                let text = self.try_text().await.unwrap_or_default();
                panic!(
                    "waited {DEADLINE:?} for {what}; the browser is at {:?} showing:\n{text}",
                    url.map(|u| u.to_string())
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for an element matching `css` and returns it.
    pub async fn wait_for(&self, css: &str) -> Element {
        self.poll(&format!("an element {css}"), || async {
            self.client().find(Locator::Css(css)).await.ok()
        })
        .await
    }

    /// Whether an element matching `css` is on the page now.
    pub async fn has(&self, css: &str) -> bool {
        let found = bounded(
            &format!("find {css}"),
            self.client().find_all(Locator::Css(css)),
        )
        .await;
        !found.is_empty()
    }

    /// Waits until the URL satisfies `wanted` (described by `what`) and returns it.
    pub async fn wait_for_url(&self, what: &str, wanted: impl Fn(&url::Url) -> bool) -> url::Url {
        self.poll(&format!("the URL to be {what}"), || async {
            let url = self.client().current_url().await.ok()?;
            wanted(&url).then_some(url)
        })
        .await
    }

    /// Waits until the URL's path is `path` (any query).
    pub async fn wait_for_path(&self, path: &str) -> url::Url {
        self.wait_for_url(path, |u| u.path() == path).await
    }

    /// Waits until the URL's path and query are exactly `path_and_query`.
    pub async fn wait_for_path_and_query(&self, path_and_query: &str) {
        self.wait_for_url(path_and_query, |u| {
            let pq = match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_owned(),
            };
            pq == path_and_query
        })
        .await;
    }

    /// Waits until the page's visible text contains `text`; returns the whole visible text.
    pub async fn wait_for_text(&self, text: &str) -> String {
        self.poll(&format!("the text {text:?}"), || async {
            let shown = self.try_text().await?;
            shown.contains(text).then_some(shown)
        })
        .await
    }

    async fn try_text(&self) -> Option<String> {
        let body = self.client().find(Locator::Css("body")).await.ok()?;
        body.text().await.ok()
    }

    /// The page's visible text (`innerText` of the body).
    pub async fn text(&self) -> String {
        let body = self.wait_for("body").await;
        bounded("body text", body.text()).await
    }

    /// The visible text of the first element matching `css`.
    pub async fn text_of(&self, css: &str) -> String {
        let element = self.wait_for(css).await;
        bounded(&format!("text of {css}"), element.text()).await
    }

    /// The visible texts of every element matching `css`.
    pub async fn texts_of(&self, css: &str) -> Vec<String> {
        let elements = bounded(
            &format!("find {css}"),
            self.client().find_all(Locator::Css(css)),
        )
        .await;
        let mut texts = Vec::new();
        for element in elements {
            texts.push(bounded(&format!("text of {css}"), element.text()).await);
        }
        texts
    }

    /// Attribute `name` of the first element matching `css`.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.wait_for(css).await;
        bounded(&format!("attribute {name} of {css}"), element.attr(name)).await
    }

    /// The page's HTML as the browser has it now.
    pub async fn source(&self) -> String {
        bounded("page source", self.client().source()).await
    }

    /// The document title.
    pub async fn title(&self) -> String {
        bounded("title", self.client().title()).await
    }

    /// Waits until the document has loaded, with its deferred script run (so code inputs
    /// submit themselves once six digits are typed).
    pub async fn wait_loaded(&self) {
        self.poll("the page to finish loading", || async {
            let state = self
                .client()
                .execute("return document.readyState;", vec![])
                .await
                .ok()?;
            (state == "complete").then_some(())
        })
        .await;
    }

    /// Clears the input matching `css` and types `text` into it, key by key, once the page
    /// has loaded.
    pub async fn fill(&self, css: &str, text: &str) {
        self.wait_loaded().await;
        let input = self.wait_for(css).await;
        bounded(&format!("clear {css}"), input.clear()).await;
        bounded(&format!("type into {css}"), input.send_keys(text)).await;
    }

    /// Clicks the element matching `css` (a button submits its form; a link is followed).
    pub async fn click(&self, css: &str) {
        let element = self.wait_for(css).await;
        bounded(&format!("click {css}"), element.click()).await;
    }

    /// Clicks the link whose visible text is exactly `text`.
    pub async fn click_link(&self, text: &str) {
        let link = self
            .poll(&format!("a link {text:?}"), || async {
                self.client().find(Locator::LinkText(text)).await.ok()
            })
            .await;
        bounded(&format!("click link {text:?}"), link.click()).await;
    }

    /// Saves a PNG of the viewport as `<nn>-<name>.png` in [`Self::screenshot_dir`].
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        let png = bounded(&format!("screenshot {name}"), self.client().screenshot()).await;
        self.shot_no += 1;
        let path = self.shots.join(format!("{:02}-{name}.png", self.shot_no));
        assert!(
            png.starts_with(b"\x89PNG"),
            "screenshot {name} is not a PNG"
        );
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Like [`Self::screenshot`] with the window at phone width ([`PHONE`]), then back to
    /// [`DESKTOP`]. Fails if the page is wider than the phone's screen (sideways scrolling).
    pub async fn screenshot_phone(&mut self, name: &str) -> PathBuf {
        self.resize(PHONE).await;
        let width = self
            .execute("return document.documentElement.scrollWidth;")
            .await;
        assert!(
            width.as_u64().is_some_and(|w| w <= u64::from(PHONE.0)),
            "{name}: the page is {width} px wide on a {} px screen",
            PHONE.0
        );
        let path = self.screenshot(name).await;
        self.resize(DESKTOP).await;
        path
    }

    /// Sets the window size and waits until the page has laid itself out at that width.
    pub async fn resize(&self, (width, height): (u32, u32)) {
        bounded(
            "resize window",
            self.client().set_window_size(width, height),
        )
        .await;
        self.poll(&format!("a viewport {width} px wide"), || async {
            let w = self
                .client()
                .execute("return window.innerWidth;", vec![])
                .await
                .ok()?;
            (w.as_u64() == Some(u64::from(width))).then_some(())
        })
        .await;
    }

    /// Every cookie the browser holds for the current page, with its attributes.
    pub async fn cookies(&self) -> Vec<cookie::Cookie<'static>> {
        bounded("cookies", self.client().get_all_cookies()).await
    }

    /// Runs `script` in the page and returns its result.
    pub async fn execute(&self, script: &str) -> Value {
        bounded("script", self.client().execute(script, vec![])).await
    }

    /// Ends the WebDriver session (Chromium quits), then stops chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(DEADLINE, client.close()).await;
        }
        // Drop kills whatever is left.
    }

    /// chromedriver's output so far (for diagnosing a failed start).
    pub fn driver_log(&self) -> String {
        read_log(&self.driver_log)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Without a runtime the client cannot end its session; killing the process group
        // ends chromedriver and Chromium either way.
        drop(self.client.take());
        kill_group(&mut self.driver);
    }
}

/// chromedriver in a process group of its own, so that it and the Chromium it starts can be
/// killed together.
fn spawn_driver(port: u16, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("chromedriver log");
    let err = out.try_clone().expect("chromedriver log");
    Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {CHROMEDRIVER}: {e}"))
}

/// Waits until chromedriver accepts connections on `port`, or says why not.
async fn wait_listening(driver: &mut Child, port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    loop {
        if let Some(status) = driver.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("chromedriver exited: {status}"));
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if start.elapsed() > DEADLINE {
            return Err(format!("not listening after {DEADLINE:?}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Kills chromedriver's process group (chromedriver and every Chromium process), reaps
/// chromedriver and waits (bounded) until no process of the group is left.
fn kill_group(driver: &mut Child) {
    let group = format!("-{}", driver.id());
    let signal = |sig: &str| {
        Command::new("kill")
            .args([sig, "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    signal("-KILL");
    let _ = driver.kill();
    let _ = driver.wait();
    let start = Instant::now();
    while signal("-0") && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(POLL);
    }
}

fn read_log(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    format!("chromedriver said:\n{log}")
}
