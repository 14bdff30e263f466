//! Secrets stay secret: the real binary, logging at `trace`, is given every kind of secret (API
//! tokens, console passwords and sessions, webhook secrets, the database password), used as a
//! client would use them; none may appear in its output, and no read endpoint may return one
//! after its creation.

use crate::helpers::TestDb;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The server process; its stdout and stderr, line by line, in `output`.
struct Server {
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(database: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_loopgate"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("LOOPGATE_DATABASE_URL", database)
            .env("RUST_LOG", "trace")
            .env_remove("LOOPGATE_RATE_LIMIT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run loopgate serve");
        let output = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [stdout, stderr] {
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut o = output.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            }));
        }
        Server {
            child,
            output,
            readers,
        }
    }

    /// The URL from the "listening on" line.
    async fn address(&self) -> String {
        let start = Instant::now();
        loop {
            {
                let out = self.output.lock().unwrap();
                if let Some(i) = out.find("listening on http://") {
                    let rest = &out[i + "listening on ".len()..];
                    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
                    // Log lines may carry colour codes; an address does not contain ESC.
                    return rest[..end].split('\u{1b}').next().unwrap().to_owned();
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the server did not start:\n{}",
                self.output.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop it (SIGTERM, then wait) and return all it printed.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let out = self.output.lock().unwrap().clone();
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// A database URL carrying a password (PostgreSQL's trust authentication ignores it), or the
/// SQLite file's URL, which has none.
fn url_with_password(db: &TestDb, password: &str) -> String {
    if db.is_postgres() {
        db.url.replacen(
            "postgres://postgres@",
            &format!("postgres://postgres:{password}@"),
            1,
        )
    } else {
        db.url.clone()
    }
}

fn create_admin_key(database: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_loopgate"))
        .args(["keys", "create", "--name", "root", "--role", "admin"])
        .env("LOOPGATE_DATABASE_URL", database)
        .output()
        .expect("run loopgate keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().last().expect("the token").trim().to_owned()
}

#[tokio::test]
async fn no_secret_reaches_the_log_or_a_later_response() {
    let db = TestDb::fresh();
    let db_password = "Db-Pa55word-never-logged";
    let database = url_with_password(&db, db_password);
    if db.is_postgres() {
        assert!(database.contains(db_password), "{database}");
    }
    let admin = create_admin_key(&database);
    let server = Server::start(&database);
    let base = server.address().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let call = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let resp = req.send().await.expect("the server answers");
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            (status, text)
        }
    };
    use reqwest::Method as M;
    let mut secrets: Vec<(&str, String)> = vec![("the admin token", admin.clone())];
    if db.is_postgres() {
        secrets.push(("the database password", db_password.to_owned()));
    }

    // Keys.
    let token_of = |role: &str| {
        let call = &call;
        let admin = admin.clone();
        let role = role.to_owned();
        async move {
            let (status, text) = call(
                M::POST,
                "/v1/keys",
                &admin,
                Some(json!({"name": format!("{role}1"), "role": role})),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            v["token"].as_str().unwrap().to_owned()
        }
    };
    let agent = token_of("agent").await;
    let reviewer = token_of("reviewer").await;
    secrets.push(("an agent token", agent.clone()));
    secrets.push(("a reviewer token", reviewer.clone()));

    // A console user, who then signs in (and once fails to).
    let password = "Console-Pa55word-never-logged";
    let (status, text) = call(
        M::POST,
        "/v1/users",
        &admin,
        Some(json!({"username": "rita", "role": "reviewer", "password": password})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    secrets.push(("a console password", password.to_owned()));
    let wrong = "Wrong-Pa55word-never-logged";
    secrets.push(("a mistyped password", wrong.to_owned()));
    let login = |pw: &'static str| {
        http.post(format!("{base}/login"))
            .header("cookie", "loopgate_login=csrf-for-login")
            .form(&[
                ("workspace", "default"),
                ("username", "rita"),
                ("password", pw),
                ("csrf", "csrf-for-login"),
            ])
            .send()
    };
    let resp = login(wrong).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = login(password).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("loopgate_session="))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    secrets.push(("a console session", session.clone()));
    let page = http
        .get(format!("{base}/"))
        .header("cookie", format!("loopgate_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(!page.text().await.unwrap().contains(&session));

    // Webhooks: one with our secret, one with a secret the server makes (shown once).
    let given = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=";
    let (status, text) = call(
        M::POST,
        "/v1/webhooks",
        &admin,
        Some(json!({"url": "http://127.0.0.1:9/hook", "secret": given, "events": ["*"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    assert!(
        !text.contains(given),
        "a given secret is not echoed: {text}"
    );
    secrets.push(("a webhook secret", given.to_owned()));
    let (status, text) = call(
        M::POST,
        "/v1/webhooks",
        &admin,
        Some(json!({"url": "http://127.0.0.1:9/other", "events": ["*"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let generated = v["secret"]
        .as_str()
        .expect("a generated secret, shown once");
    secrets.push(("a generated webhook secret", generated.to_owned()));

    // The tokens at work: an action, its review and decision (events go out to the webhooks),
    // an event stream, and a wrong token.
    let (status, text) = call(
        M::POST,
        "/v1/actions",
        &agent,
        Some(json!({"name": "issue_refund", "arguments": {"amount": 10}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let action: Value = serde_json::from_str(&text).unwrap();
    let review = action["review_id"].as_str().expect("pending").to_owned();
    let (status, text) = call(
        M::POST,
        &format!("/v1/reviews/{review}/decision"),
        &reviewer,
        Some(json!({"verdict": "approve"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let id = action["id"].as_str().unwrap();
    let (status, _) = call(M::GET, &format!("/v1/actions/{id}?wait=1"), &agent, None).await;
    assert_eq!(status, StatusCode::OK);
    let stream = http
        .get(format!("{base}/v1/events?after=0"))
        .bearer_auth(&reviewer)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    drop(stream);
    let bad = "lg_not-a-real-token-but-secret-looking";
    secrets.push(("a wrong token", bad.to_owned()));
    let (status, _) = call(M::GET, "/v1/reviews", bad, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Reads after creation return no secret.
    for path in [
        "/v1/keys",
        "/v1/users",
        "/v1/webhooks",
        "/v1/audit?limit=1000",
        "/v1/reviews",
        "/v1/pauses",
        "/v1/policy",
    ] {
        let (status, text) = call(M::GET, path, &admin, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {text}");
        for (what, secret) in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "GET {path} returns {what}: {text}"
            );
        }
    }
    let (_, webhooks) = call(M::GET, "/v1/webhooks", &admin, None).await;
    assert!(!webhooks.contains("whsec_"), "{webhooks}");
    // Give the webhook worker a moment to try (and log) its deliveries.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let output = server.stop();
    assert!(
        output.contains("TRACE") || output.contains("DEBUG"),
        "the server did not log at trace level:\n{output}"
    );
    for (what, secret) in &secrets {
        if let Some(i) = output.find(secret.as_str()) {
            let line_start = output[..i].rfind('\n').map_or(0, |n| n + 1);
            let line_end = output[i..].find('\n').map_or(output.len(), |n| i + n);
            panic!(
                "{what} appears in the server's output:\n{}",
                &output[line_start..line_end]
            );
        }
    }
    println!(
        "secrets: {} secrets checked against {} lines of trace output",
        secrets.len(),
        output.lines().count()
    );
}
