//! The `loopgate` binary, run for real: `policy check`, `keys create`, `users create`,
//! `audit verify`, bad database URLs, and `serve`.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a run of the binary produced.
pub(crate) struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loopgate"));
    cmd.args(args)
        .env_remove("LOOPGATE_DATABASE_URL")
        .env_remove("LOOPGATE_LISTEN")
        .env_remove("LOOPGATE_POLICY")
        .env_remove("RUST_LOG");
    cmd
}

/// Run `loopgate ARGS`, feeding `stdin` when given (otherwise stdin is empty).
pub(crate) fn loopgate(args: &[&str], stdin: Option<&str>) -> Out {
    let mut child = command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the loopgate binary");
    {
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(input) = stdin {
            // The command may exit before reading (a usage error): a broken pipe is fine.
            let _ = pipe.write_all(input.as_bytes());
        }
    }
    let out = child.wait_with_output().expect("the binary finishes");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The same, off the async runtime's threads.
async fn loopgate_async(args: Vec<String>, stdin: Option<String>) -> Out {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        loopgate(&args, stdin.as_deref())
    })
    .await
    .expect("the blocking task")
}

/// A one-line error message on stderr: exactly one non-empty line.
fn assert_one_line(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected a one-line message, got {stderr:?}"
    );
}

/// A temporary directory with a database URL inside it.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }
    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("x.db").display())
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write a file");
        path
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The real server, in process, over an existing database (as `serve` would run it).
pub(crate) struct Server {
    pub base: String,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Server {
    pub(crate) async fn start(url: &str) -> Server {
        let store = loopgate_store::open(url).await.expect("open the store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(loopgate_server::run(
            listener,
            store,
            test_config(),
            async {
                let _ = rx.await;
            },
        ));
        Server {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            shutdown: Some(tx),
        }
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the request reaches the server");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, token, None).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

// ---- policy check ----

#[test]
fn policy_check_accepts_a_valid_file_with_a_summary() {
    let dir = Scratch::new();
    let file = dir.file("policy.toml", REFUND_POLICY);
    let out = loopgate(&["policy", "check", s(&file)], None);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let first = out.stdout.lines().next().unwrap_or("");
    assert_eq!(first, format!("{}: ok, 5 rules", file.display()));
    assert!(
        out.stdout.contains("large refunds need two approvers"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}

/// Rule text after a `[[rule]]` header and `name = "r"`: the body starts on line 3.
fn rule(body: &str) -> String {
    format!("[[rule]]\nname = \"r\"\n{body}")
}

#[test]
fn policy_check_points_at_each_problem_with_file_line_column() {
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "toml",
            rule("when = \"true\"\nthen = = \"review\"\n"),
            "4:8",
            "invalid TOML",
        ),
        (
            "unterminated string",
            rule("when = \"true\"\nthen = \"review\n"),
            "4:15",
            "invalid TOML",
        ),
        (
            "cel",
            rule("when = \"a == 'x' &&& b\"\nthen = \"review\"\n"),
            "3:20",
            "invalid `when`",
        ),
        (
            "unknown key",
            rule("when = \"true\"\nthen = \"review\"\ncolour = \"red\"\n"),
            "5:1",
            "unknown key `colour`",
        ),
        (
            "bad then",
            rule("when = \"true\"\nthen = \"maybe\"\n"),
            "4:8",
            "invalid then \"maybe\"",
        ),
        (
            "block on both",
            rule("when = \"true\"\nthen = \"block\"\n"),
            "4:8",
            "applies_to = \"action\"",
        ),
        (
            "sample",
            rule("when = \"true\"\nthen = \"approve\"\nsample = 1.5\n"),
            "5:10",
            "`sample` must be between 0 and 1, not 1.5",
        ),
    ];
    let dir = Scratch::new();
    for (what, text, at, message) in cases {
        let file = dir.file("bad.toml", &text);
        let out = loopgate(&["policy", "check", s(&file)], None);
        assert_eq!(out.code, 1, "{what}: {}{}", out.stdout, out.stderr);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: {}", out.stdout);
        let prefix = format!("{}:{at}: ", file.display());
        assert!(
            lines[0].starts_with(&prefix),
            "{what}: expected {prefix:?}, got {:?}",
            lines[0]
        );
        assert!(lines[0].contains(message), "{what}: {}", lines[0]);
    }
}

#[test]
fn policy_check_lists_every_problem_in_file_order() {
    let text = r#"[[rule]]
name = "one"
when = "action.name =="
then = "review"

[[rule]]
name = "two"
when = "true"
then = "approve"
sample = 2

[[rule]]
name = "three"
when = "(((a)"
then = "nope"
"#;
    let dir = Scratch::new();
    let file = dir.file("many.toml", text);
    let out = loopgate(&["policy", "check", s(&file)], None);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let name = file.display().to_string();
    let positions: Vec<String> = out
        .stdout
        .lines()
        .map(|l| {
            // Exactly FILE:LINE:COL: message.
            let rest = l
                .strip_prefix(&format!("{name}:"))
                .expect("starts with FILE:");
            let mut parts = rest.splitn(3, ':');
            let line = parts.next().unwrap_or("");
            let col = parts.next().unwrap_or("");
            let msg = parts.next().unwrap_or("");
            assert!(
                line.parse::<usize>().is_ok() && col.parse::<usize>().is_ok(),
                "{l}"
            );
            assert!(msg.starts_with(' ') && msg.len() > 1, "{l}");
            format!("{line}:{col}")
        })
        .collect();
    assert_eq!(
        positions,
        vec!["3:23", "10:10", "14:14", "15:8"],
        "{}",
        out.stdout
    );
}

#[test]
fn policy_check_of_a_missing_file_is_one_line_on_stderr() {
    let dir = Scratch::new();
    let missing = dir.dir.path().join("nope.toml");
    let out = loopgate(&["policy", "check", s(&missing)], None);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_one_line(&out.stderr);
    assert!(out.stderr.contains("nope.toml"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

// ---- keys, users, audit, database URLs ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_prints_a_working_token_on_the_last_line() {
    let dir = Scratch::new();
    let url = dir.url();
    let create = |name: &str, role: &str, ws: Option<&str>| {
        let mut args = vec![
            "--database",
            &url,
            "keys",
            "create",
            "--name",
            name,
            "--role",
            role,
        ];
        if let Some(ws) = ws {
            args.extend(["--workspace", ws]);
        }
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        loopgate_async(args, None)
    };
    let token = |out: &Out| -> String {
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        let last = out.stdout.lines().last().unwrap_or("").to_owned();
        assert!(
            !last.is_empty() && !last.contains(' '),
            "not a token alone: {:?}",
            out.stdout
        );
        last
    };
    let agent = token(&create("x", "agent", None).await);
    let reviewer = token(&create("rita", "reviewer", None).await);
    let admin = token(&create("ada", "admin", None).await);
    assert_ne!(agent, reviewer);

    let server = Server::start(&url).await;
    let (st, a) = server
        .send(
            Method::POST,
            "/v1/actions",
            &agent,
            Some(json!({"name": "lookup_order", "arguments": {}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    assert_eq!(a["agent"], "x", "{a}");
    // No policy: fail safe, a review for the reviewer key to see.
    assert_eq!(a["status"], "pending", "{a}");
    let (st, list) = server.get("/v1/reviews", &reviewer).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(list["reviews"].as_array().map(Vec::len), Some(1), "{list}");
    // The roles are the ones asked for.
    let (st, _) = server.get("/v1/reviews", &agent).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = server.get("/v1/audit", &reviewer).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = server.get("/v1/audit", &admin).await;
    assert_eq!(st, StatusCode::OK);

    // A key created while the server runs works at once; `--workspace` puts it elsewhere.
    let late = token(&create("late", "reviewer", Some("other")).await);
    let (st, list) = server.get("/v1/reviews", &late).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(
        list["reviews"],
        json!([]),
        "another workspace sees nothing: {list}"
    );
    drop(server);

    // Bad role or name: non-zero, no key.
    let out = create("y", "superuser", None).await;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.trim().is_empty(), "{}", out.stdout);
    let out = create("has space", "agent", None).await;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert_one_line(&out.stderr);
    let out = create("ok-name", "agent", Some("bad workspace")).await;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert_one_line(&out.stderr);
}

#[test]
fn users_create_reads_the_password_from_stdin() {
    let dir = Scratch::new();
    let url = dir.url();
    let args = [
        "--database",
        &url,
        "users",
        "create",
        "--username",
        "u",
        "--role",
        "reviewer",
        "--password-stdin",
    ];
    let out = loopgate(&args, Some("correct horse battery staple\n"));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        !out.stdout.contains("correct horse"),
        "the password is echoed"
    );

    // The same user again: refused, in one line.
    let out = loopgate(&args, Some("another long password\n"));
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert_one_line(&out.stderr);
    assert!(out.stderr.contains("exists"), "{}", out.stderr);

    // Too short.
    let mut short = args;
    short[5] = "v";
    let out = loopgate(&short, Some("short\n"));
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert_one_line(&out.stderr);

    // No --password-stdin: refused, nothing created.
    let out = loopgate(&args[..8], Some("correct horse battery staple\n"));
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert_one_line(&out.stderr);

    // Agents are not users.
    let mut agent = args;
    agent[5] = "w";
    agent[7] = "agent";
    let out = loopgate(&agent, Some("correct horse battery staple\n"));
    assert_ne!(out.code, 0, "{}", out.stdout);

    // One user.created event, and the chain is intact.
    let out = loopgate(&["--database", &url, "audit", "verify"], None);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.stdout.trim(), "ok 1 events");
}

#[test]
fn audit_verify_on_a_fresh_database() {
    let dir = Scratch::new();
    let url = dir.url();
    // No database at that path: an error, not an empty database and a false all-clear.
    let out = loopgate(&["--database", &url, "audit", "verify"], None);
    assert_ne!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot open the database"),
        "{}",
        out.stderr
    );
    let out = loopgate(
        &[
            "--database",
            &url,
            "keys",
            "create",
            "--name",
            "a",
            "--role",
            "agent",
        ],
        None,
    );
    assert_eq!(out.code, 0);
    let out = loopgate(&["--database", &url, "audit", "verify"], None);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.stdout.trim(), "ok 1 events");
    // A workspace that does not exist is named, not verified as empty.
    let out = loopgate(
        &["--database", &url, "audit", "verify", "--workspace", "nope"],
        None,
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("no workspace \"nope\""),
        "{}",
        out.stderr
    );
}

#[test]
fn a_bad_database_url_is_one_line() {
    for url in [
        "nonsense://",
        "postgres://localhost/loopgate",
        "sqlite:///nonexistent-dir/x/y.db",
    ] {
        let out = loopgate(
            &[
                "--database",
                url,
                "keys",
                "create",
                "--name",
                "x",
                "--role",
                "agent",
            ],
            None,
        );
        assert_ne!(out.code, 0, "{url}: {}", out.stdout);
        assert_one_line(&out.stderr);
        assert!(out.stdout.trim().is_empty(), "{url}: {}", out.stdout);
    }
}

// ---- serve ----

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("addr").port()
}

/// A `loopgate serve` process; killed (SIGKILL) when dropped, so a failing test leaves no
/// server behind.
pub(crate) struct Serve {
    pub child: std::process::Child,
    pub base: String,
}

impl Serve {
    /// Start `loopgate serve` on a free port over `url`, and wait until `/healthz` answers.
    pub(crate) async fn start(url: &str, policy: Option<&Path>) -> Serve {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--database", url, "serve", "--listen", &listen];
        if let Some(p) = policy {
            args.extend(["--policy", s(p)]);
        }
        let child = command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start loopgate serve");
        let mut serve = Serve {
            child,
            base: format!("http://{listen}"),
        };
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = serve.child.try_wait() {
                panic!("serve exited early with {status}");
            }
            if let Ok(resp) = client.get(format!("{}/healthz", serve.base)).send().await {
                assert_eq!(resp.status(), StatusCode::OK);
                let body: Value = resp.json().await.expect("JSON");
                assert_eq!(body, json!({"status": "ok"}));
                return serve;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no answer on {listen} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no graceful shutdown, as in a crash.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("kill serve");
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `loopgate keys create` on `url`: the token.
pub(crate) fn create_key(url: &str, name: &str, role: &str) -> String {
    let out = loopgate(
        &[
            "--database",
            url,
            "keys",
            "create",
            "--name",
            name,
            "--role",
            role,
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    out.stdout.lines().last().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_bad_policy_with_file_line_column() {
    let dir = Scratch::new();
    let file = dir.file(
        "bad.toml",
        &rule("when = \"true\"\nthen = \"approve\"\nsample = 1.5\n"),
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let url = dir.url();
    let args: Vec<String> = [
        "--database",
        &url,
        "serve",
        "--listen",
        &listen,
        "--policy",
        s(&file),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let run = loopgate_async(args, None);
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("serve with a bad policy exits instead of serving");
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    let expected = format!("{}:5:10: ", file.display());
    assert!(all.lines().any(|l| l.starts_with(&expected)), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_healthz_and_puts_its_policy_in_force() {
    let dir = Scratch::new();
    let url = dir.url();
    let admin = create_key(&url, "root", "admin");
    let file = dir.file("policy.toml", REFUND_POLICY);
    let mut serve = Serve::start(&url, Some(&file)).await;

    let resp = reqwest::Client::new()
        .get(format!("{}/v1/policy", serve.base))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("GET /v1/policy");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("loopgate-policy-version")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(resp.text().await.unwrap_or_default(), REFUND_POLICY);
    serve.kill();

    // Started again with the same file: the same version. With a changed file: the next.
    let version = |serve: Serve| {
        let admin = admin.clone();
        async move {
            let resp = reqwest::Client::new()
                .get(format!("{}/v1/policy", serve.base))
                .bearer_auth(&admin)
                .send()
                .await
                .expect("GET /v1/policy");
            let v = resp
                .headers()
                .get("loopgate-policy-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            (v, resp.text().await.unwrap_or_default())
        }
    };
    let serve = Serve::start(&url, Some(&file)).await;
    assert_eq!(
        version(serve).await,
        ("1".to_owned(), REFUND_POLICY.to_owned())
    );
    let changed = format!("{REFUND_POLICY}\n# tightened\n");
    let file = dir.file("policy.toml", &changed);
    let serve = Serve::start(&url, Some(&file)).await;
    assert_eq!(version(serve).await, ("2".to_owned(), changed));
    // Without --policy the stored one stays in force.
    let serve = Serve::start(&url, None).await;
    assert_eq!(version(serve).await.0, "2");
}
