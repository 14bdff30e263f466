//! The browser harness: the real Loopgate server on `127.0.0.1:0` over a fresh SQLite file, a
//! `chromedriver` started on a free port for each test (in its own process group, killed with
//! the Chromium it launched when the test ends), and a headless Chromium driven over WebDriver
//! with `fantoccini`.
//!
//! Tests that share the machine's two cores take turns: [`Console::start`] holds a lock for the
//! whole test, so one Chromium runs at a time.

#![allow(dead_code)]

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use loopgate_domain::auth::Role;
use loopgate_server::Config;
use loopgate_store::Store;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Mutex, MutexGuard};

/// One Chromium at a time.
static TURN: Mutex<()> = Mutex::const_new(());

/// The password of every console user the tests create.
pub const PASSWORD: &str = "correct horse battery";

const CHROME_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1440,900",
    "--force-device-scale-factor=1",
    "--hide-scrollbars",
];

/// How long a test waits for something to appear in the browser.
const PATIENCE: Duration = Duration::from_secs(10);

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A `chromedriver` process (and the browsers it launches), killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    async fn start() -> Driver {
        let program = find_program("chromedriver").unwrap_or_else(|| {
            panic!(
                "chromedriver is not installed, so the console's browser tests cannot run. \
                 Install Chromium and its driver: `apt-get install -y chromium chromium-driver` \
                 (.ci/run does this)."
            )
        });
        // A free port: bind, read it, release it for chromedriver.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = Command::new(&program);
        cmd.arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null());
        // Its own process group, so Chromium dies with it.
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let driver = Driver { child, port };
        let status = format!("http://127.0.0.1:{port}/status");
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(&status).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "chromedriver did not answer on port {port} within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Kill the whole group we created (chromedriver and its Chromium), by its id.
        #[cfg(unix)]
        {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium_binary() -> String {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(p) = find_program(name) {
            return p.display().to_string();
        }
    }
    panic!(
        "Chromium is not installed, so the console's browser tests cannot run. Install it: \
         `apt-get install -y chromium chromium-driver` (.ci/run does this)."
    );
}

/// A test's world: the server, its store, and a browser.
pub struct Console {
    pub base: String,
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    pub http: reqwest::Client,
    /// The `default` workspace's agent key (agent `bot`).
    pub agent: String,
    /// An admin key, for API calls the tests make.
    pub admin_key: String,
    pub browser: Client,
    shutdown: Option<oneshot::Sender<()>>,
    started: Instant,
    _profile: tempfile::TempDir,
    _db: tempfile::TempDir,
    _driver: Driver,
    _turn: MutexGuard<'static, ()>,
}

/// Argon2 in a debug build is slow: hash the tests' one password once per process.
async fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    if let Some(h) = HASH.get() {
        return h.clone();
    }
    let h = tokio::task::spawn_blocking(|| {
        loopgate_store::secrets::hash_password(PASSWORD).expect("hash")
    })
    .await
    .expect("hashing task");
    HASH.get_or_init(|| h).clone()
}

impl Console {
    /// A fresh server with users `ann` and `bob` (reviewers) and `root` (admin) in `default`,
    /// and a browser at the login page's door.
    pub async fn start() -> Console {
        let turn = TURN.lock().await;
        let started = Instant::now();
        let db = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", db.path().join("loopgate.db").display());
        let store = loopgate_store::open(&url).await.expect("open the store");
        let agent = store
            .create_key("default", "bot", Role::Agent)
            .await
            .expect("agent key")
            .token;
        let admin_key = store
            .create_key("default", "ops", Role::Admin)
            .await
            .expect("admin key")
            .token;
        let hash = password_hash().await;
        for (name, role) in [
            ("ann", Role::Reviewer),
            ("bob", Role::Reviewer),
            ("root", Role::Admin),
        ] {
            store
                .create_user("default", name, role, &hash)
                .await
                .expect("create user");
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let config = Config {
            sweep_interval: Duration::from_millis(100),
            sse_keepalive: Duration::from_secs(5),
            ..Config::default()
        };
        tokio::spawn(loopgate_server::run(
            listener,
            store.clone(),
            config,
            async {
                let _ = rx.await;
            },
        ));

        let ready = started.elapsed();
        let driver = Driver::start().await;
        let profile = tempfile::tempdir().expect("a browser profile directory");
        let mut args: Vec<String> = CHROME_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium_binary(), "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let browser = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a WebDriver session with headless Chromium");
        println!(
            "server ready after {ready:?}, browser after {:?}",
            started.elapsed()
        );
        Console {
            base: format!("http://{addr}"),
            addr,
            store,
            http: reqwest::Client::new(),
            agent,
            admin_key,
            browser,
            shutdown: Some(tx),
            started,
            _profile: profile,
            _db: db,
            _driver: driver,
            _turn: turn,
        }
    }

    /// Close the browser session and stop the server.
    pub async fn finish(mut self) {
        println!("the test took {:?}", self.started.elapsed());
        let _ = self.browser.clone().close().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn goto(&self, path: &str) {
        self.browser
            .goto(&self.url(path))
            .await
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
    }

    pub async fn path(&self) -> String {
        let url = self.browser.current_url().await.expect("current url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The element with `data-testid`, waiting for it to appear.
    pub async fn testid(&self, id: &str) -> Element {
        self.css(&format!("[data-testid=\"{id}\"]")).await
    }

    pub async fn css(&self, selector: &str) -> Element {
        match self
            .browser
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(selector))
            .await
        {
            Ok(el) => el,
            Err(e) => {
                let name = format!(
                    "failed-{}",
                    selector.replace(|c: char| !c.is_alphanumeric(), "-")
                );
                self.screenshot(&name).await;
                panic!("no element {selector} on {}: {e}", self.here().await)
            }
        }
    }

    pub async fn all(&self, selector: &str) -> Vec<Element> {
        self.browser
            .find_all(Locator::Css(selector))
            .await
            .expect("find_all")
    }

    async fn here(&self) -> String {
        self.browser
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// The rendered text of the element with `data-testid`, read in the page so a live refresh
    /// between finding and reading cannot make it stale.
    pub async fn text(&self, id: &str) -> String {
        self.text_of(&format!("[data-testid=\"{id}\"]")).await
    }

    pub async fn text_of(&self, selector: &str) -> String {
        self.css(selector).await;
        let v = self
            .browser
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
                vec![json!(selector)],
            )
            .await
            .expect("read text");
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Run `script` (a JS expression) in the page until it is truthy.
    pub async fn wait_js(&self, what: &str, script: &str) {
        let started = Instant::now();
        loop {
            let v = self
                .browser
                .execute(&format!("return !!({script});"), vec![])
                .await
                .unwrap_or(Value::Bool(false));
            if v == Value::Bool(true) {
                return;
            }
            if started.elapsed() > PATIENCE {
                self.screenshot(&format!("failed-{}", what.replace(' ', "-")))
                    .await;
                panic!("waited {PATIENCE:?} for {what} on {}", self.here().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn js(&self, script: &str) -> Value {
        self.browser
            .execute(script, vec![])
            .await
            .expect("execute script")
    }

    /// Wait until the browser is at `path` (with any query string).
    pub async fn wait_path(&self, path: &str) {
        let started = Instant::now();
        loop {
            let p = self.path().await;
            if p == path || p.starts_with(&format!("{path}?")) {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "waited for {path}, still at {p}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Press one key on whatever has focus (a page-level shortcut when nothing does).
    pub async fn press(&self, key: char) {
        let actions = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.browser
            .perform_actions(actions)
            .await
            .expect("press a key");
    }

    /// Replace an input's or textarea's value, as typing would (fires `input`).
    pub async fn fill(&self, id: &str, value: &str) {
        let el = self.testid(id).await;
        el.clear().await.expect("clear");
        el.send_keys(value).await.expect("type");
    }

    /// Set a textarea's value at once (faster than typing a long text) and fire `input`.
    pub async fn set_value(&self, id: &str, value: &str) {
        self.testid(id).await;
        self.browser
            .execute(
                "const el = document.querySelector(`[data-testid=\"${arguments[0]}\"]`); \
                 el.value = arguments[1]; el.dispatchEvent(new Event('input', {bubbles: true}));",
                vec![json!(id), json!(value)],
            )
            .await
            .expect("set a value");
    }

    /// Click the element with `data-testid` (found again if a live refresh replaced it).
    pub async fn click(&self, id: &str) {
        self.click_css(&format!("[data-testid=\"{id}\"]")).await;
    }

    pub async fn click_css(&self, selector: &str) {
        let mut tries = 0;
        loop {
            match self.css(selector).await.click().await {
                Ok(()) => return,
                Err(e) if tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = e;
                }
                Err(e) => panic!("click {selector}: {e}"),
            }
        }
    }

    /// Sign in without the login form (argon2 is slow in a debug build): open a session in the
    /// store and hand its cookie to the browser, as the login form would.
    pub async fn sign_in_as(&self, username: &str) {
        let (user, _) = self
            .store
            .find_user("default", username)
            .await
            .expect("find user")
            .expect("the user exists");
        let session = self
            .store
            .create_session(&user, 12 * 3600 * 1000)
            .await
            .expect("a session");
        self.goto("/login").await;
        let mut cookie = fantoccini::cookies::Cookie::parse(format!(
            "loopgate_session={}; Path=/; HttpOnly; SameSite=Lax",
            session.token
        ))
        .expect("a cookie");
        cookie.set_domain(self.addr.ip().to_string());
        self.browser
            .add_cookie(cookie)
            .await
            .expect("set the cookie");
        self.goto("/").await;
        self.wait_path("/").await;
    }

    /// Sign in through the login form.
    pub async fn login(&self, username: &str, password: &str) {
        self.goto("/login").await;
        self.fill("login-workspace", "default").await;
        self.fill("login-username", username).await;
        self.fill("login-password", password).await;
        self.click("login-submit").await;
    }

    /// Save a PNG of the page under `target/screenshots/`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        let png = self.browser.screenshot().await.expect("screenshot");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    // ----------------------------------------------------------------------- API, as an agent

    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the API answers");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn put_policy(&self, toml: &str) {
        let resp = self
            .http
            .put(self.url("/v1/policy"))
            .bearer_auth(&self.admin_key)
            .body(toml.to_owned())
            .send()
            .await
            .expect("PUT /v1/policy");
        assert_eq!(resp.status(), StatusCode::OK, "policy refused");
    }

    /// Submit an action as the agent; returns its id and review id.
    pub async fn submit(&self, body: Value) -> (String, String) {
        let (s, v) = self
            .api(
                reqwest::Method::POST,
                "/v1/actions",
                &self.agent,
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (
            v["id"].as_str().expect("id").to_owned(),
            v["review_id"].as_str().unwrap_or_default().to_owned(),
        )
    }

    pub async fn action(&self, id: &str) -> Value {
        let (s, v) = self
            .api(
                reqwest::Method::GET,
                &format!("/v1/actions/{id}"),
                &self.agent,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The policy the tests run under.
pub const POLICY: &str = r#"
[[rule]]
name = "large refunds need two approvers"
applies_to = "action"
when = 'action.name == "issue_refund" && action.arguments.amount > 500'
then = "review"
queue = "finance"
priority = 5
approvals = 2
timeout = "2h"

[[rule]]
name = "refunds need review"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "review"
queue = "finance"
timeout = "30m"

[[rule]]
name = "unsure actions are reviewed"
applies_to = "action"
when = "confidence >= 0.0 && confidence < 0.6"
then = "review"
queue = "default"
timeout = "4h"

[[rule]]
name = "refund talk is checked first"
applies_to = "message"
when = 'message.text.contains("refund")'
then = "review"
queue = "drafts"

[[rule]]
name = "unsure answers escalate"
applies_to = "message"
when = "confidence >= 0.0 && confidence < 0.5"
then = "escalate"
queue = "tier2"
priority = 3

[[rule]]
name = "everything else runs"
when = "true"
then = "approve"
sample = 0.0
"#;
