//! `TestApp`: the real Loopgate server on 127.0.0.1:0 over a fresh database, with typed helpers.

#![allow(dead_code)]

use loopgate_domain::auth::Role;
use loopgate_server::Config;
use loopgate_store::Store;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

static LOGGING: Once = Once::new();

fn init_logging() {
    LOGGING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("info,sqlx=warn"))
                .with_test_writer()
                .try_init();
        }
    });
}

/// A database for one test: a SQLite file in its own temporary directory, or, when
/// `LOOPGATE_TEST_DATABASE` is `postgres` (or a `postgres://` URL of the server to use), a fresh
/// PostgreSQL database that is dropped when the last handle goes. The same suite runs on both.
#[derive(Clone)]
pub struct TestDb {
    pub url: String,
    /// The SQLite file (for PostgreSQL, a path that does not exist).
    pub path: PathBuf,
    inner: Arc<DbGuard>,
}

struct DbGuard {
    _dir: tempfile::TempDir,
    /// PostgreSQL: the maintenance URL and the database to drop.
    postgres: Option<(String, String)>,
}

impl Drop for DbGuard {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.postgres.take() {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = run_sql_blocking(&admin, &sql);
        }
    }
}

/// Which backend the suite runs on: `None` for SQLite, else the PostgreSQL server URL.
pub fn postgres_server() -> Option<String> {
    match std::env::var("LOOPGATE_TEST_DATABASE").ok()?.as_str() {
        "" | "sqlite" => None,
        "postgres" => Some("postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
        url if url.starts_with("postgres") => Some(url.to_owned()),
        other => {
            panic!("LOOPGATE_TEST_DATABASE={other:?}: use sqlite, postgres or a postgres:// URL")
        }
    }
}

/// Run SQL (several statements allowed) on its own thread and runtime, so tests can call it
/// from anywhere, async or not.
fn run_sql_blocking(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            use sqlx::Connection;
            if url.starts_with("postgres") {
                let mut c = sqlx::PgConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::raw_sql(&sql)
                    .execute(&mut c)
                    .await
                    .map_err(|e| e.to_string())?;
            } else {
                let mut c = sqlx::SqliteConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::raw_sql(&sql)
                    .execute(&mut c)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    })
    .join()
    .map_err(|_| "the SQL thread panicked".to_owned())?
}

impl TestDb {
    pub fn fresh() -> TestDb {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("loopgate.db");
        match postgres_server() {
            None => TestDb {
                url: format!("sqlite://{}", path.display()),
                path,
                inner: Arc::new(DbGuard {
                    _dir: dir,
                    postgres: None,
                }),
            },
            Some(server) => {
                let name = format!("loopgate_test_{}", uuid::Uuid::new_v4().simple());
                run_sql_blocking(&server, &format!("CREATE DATABASE \"{name}\""))
                    .unwrap_or_else(|e| panic!("cannot create a test database on PostgreSQL at {server} (is it running?): {e}"));
                let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
                TestDb {
                    url: format!("{base}/{name}"),
                    path,
                    inner: Arc::new(DbGuard {
                        _dir: dir,
                        postgres: Some((server.clone(), name)),
                    }),
                }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.inner.postgres.is_some()
    }

    /// Run SQL directly against the database, as someone with database access would.
    pub fn exec(&self, sql: &str) {
        run_sql_blocking(&self.url, sql).unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"));
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub store: Arc<dyn Store>,
    pub config: Config,
    /// Tokens of the `default` workspace: an agent `bot`, reviewers `ann` and `bob`, an admin `root`.
    pub agent: String,
    pub ann: String,
    pub bob: String,
    pub admin: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// A config for tests: fast sweeps so timeouts fire promptly, and no per-key rate limit. The
/// stories drive bursts of hundreds of requests through one key, and how many of them a limit
/// would refuse depends on how fast the machine serves them: a suite that passes on a busy
/// machine would then fail on an idle one. `limits.rs` sets its own limits and tests them.
pub fn test_config() -> Config {
    Config {
        sweep_interval: Duration::from_millis(50),
        rate_limit: None,
        ..Config::default()
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(test_config()).await
    }

    pub async fn spawn_with(config: Config) -> TestApp {
        let db = TestDb::fresh();
        let store = loopgate_store::open(&db.url).await.expect("open the store");
        let agent = store
            .create_key("default", "bot", Role::Agent)
            .await
            .expect("key")
            .token;
        let ann = store
            .create_key("default", "ann", Role::Reviewer)
            .await
            .expect("key")
            .token;
        let bob = store
            .create_key("default", "bob", Role::Reviewer)
            .await
            .expect("key")
            .token;
        let admin = store
            .create_key("default", "root", Role::Admin)
            .await
            .expect("key")
            .token;
        Self::start(db, store, config, agent, ann, bob, admin).await
    }

    async fn start(
        db: TestDb,
        store: Arc<dyn Store>,
        config: Config,
        agent: String,
        ann: String,
        bob: String,
        admin: String,
    ) -> TestApp {
        init_logging();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(loopgate_server::run(
            listener,
            store.clone(),
            config.clone(),
            async {
                let _ = rx.await;
            },
        ));
        TestApp {
            addr,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            db,
            store,
            config,
            agent,
            ann,
            bob,
            admin,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Stop the server gracefully and wait until it has stopped.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }

    /// Stop, reopen the same database with a new store, and serve again on a new port: what a
    /// process restart looks like to clients. `down_for` is how long the server stays down.
    pub async fn restart(mut self, down_for: Duration) -> TestApp {
        self.stop().await;
        let (db, config) = (self.db.clone(), self.config.clone());
        let (agent, ann, bob, admin) = (
            self.agent.clone(),
            self.ann.clone(),
            self.bob.clone(),
            self.admin.clone(),
        );
        drop(self);
        tokio::time::sleep(down_for).await;
        let store = loopgate_store::open(&db.url)
            .await
            .expect("reopen the store");
        Self::start(db, store, config, agent, ann, bob, admin).await
    }

    /// A new key in any workspace.
    pub async fn key(&self, workspace: &str, name: &str, role: Role) -> String {
        self.store
            .create_key(workspace, name, role)
            .await
            .expect("create key")
            .token
    }

    pub fn request(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(token)
    }

    pub fn get(&self, path: &str, token: &str) -> RequestBuilder {
        self.request(Method::GET, path, token)
    }

    pub fn post(&self, path: &str, token: &str) -> RequestBuilder {
        self.request(Method::POST, path, token)
    }

    /// Send and decode: the status and the JSON body (`Value::Null` when empty or not JSON).
    pub async fn send(&self, req: RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("the request reaches the server");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn put_policy(&self, toml: &str) {
        let (status, body) = self
            .send(
                self.request(Method::PUT, "/v1/policy", &self.admin)
                    .body(toml.to_owned()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "policy rejected: {body}");
    }

    /// Submit an action as the default agent.
    pub async fn submit(&self, body: Value) -> (StatusCode, Value) {
        self.send(self.post("/v1/actions", &self.agent).json(&body))
            .await
    }

    pub async fn decide(&self, token: &str, review_id: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.post(&format!("/v1/reviews/{review_id}/decision"), token)
                .json(&body),
        )
        .await
    }

    pub async fn action(&self, id: &str) -> Value {
        let (status, body) = self
            .send(self.get(&format!("/v1/actions/{id}"), &self.agent))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Poll (briefly) until `check` holds for the action, or fail.
    pub async fn wait_for_action(&self, id: &str, check: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let a = self.action(id).await;
            if check(&a) {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "action {id} never reached the expected state: {}",
            self.action(id).await
        );
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A policy used by many tests.
pub const REFUND_POLICY: &str = r#"
[[rule]]
name = "large refunds need two approvers"
applies_to = "action"
when = 'action.name == "issue_refund" && action.arguments.amount > 500'
then = "review"
queue = "finance"
approvals = 2
timeout = "2h"

[[rule]]
name = "refunds need review"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "review"
queue = "finance"

[[rule]]
name = "no account deletion"
applies_to = "action"
when = 'action.name == "delete_account"'
then = "block"

[[rule]]
name = "unsure actions are reviewed"
applies_to = "action"
when = "confidence >= 0.0 && confidence < 0.5"
then = "review"
priority = 5

[[rule]]
name = "everything else runs"
when = "true"
then = "approve"
"#;
