//! `loopgate demo` end to end: the real binary on a free port over a fresh database must print an
//! admin token, answer `/healthz`, and within seconds show its simulated agents' traffic in the
//! audit log, at least one review waiting for a human, and the chat bot's conversations.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the demo gets to produce its traffic. The agents start within a second; the rest is
/// headroom for a loaded machine building other things at the same time.
const TRAFFIC_DEADLINE: Duration = Duration::from_secs(30);

/// Kills the child however the test ends, so a failed assertion never leaves a demo running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything the child printed so far (stdout and stderr), for failure messages.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    fn push(&self, line: String) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(line);
        }
    }

    fn contains(&self, needle: &str) -> bool {
        self.0
            .lock()
            .is_ok_and(|lines| lines.iter().any(|l| l.contains(needle)))
    }

    fn tail(&self) -> String {
        let lines = self.0.lock().map(|l| l.clone()).unwrap_or_default();
        let start = lines.len().saturating_sub(40);
        lines[start..].join("\n")
    }
}

/// Read `from` line by line until it closes, keeping every line and passing each to `tx`.
/// Draining to the end matters: a child writing to a full pipe would stall.
fn drain(from: impl Read + Send + 'static, output: Output, tx: Option<mpsc::Sender<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            output.push(line.clone());
            if let Some(tx) = &tx {
                let _ = tx.send(line);
            }
        }
    });
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

/// Strips ANSI colour codes, in case the log lines on stdout are coloured.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The token on the banner line `  NAME  ROLE  lg_...`.
fn token_for(line: &str, name: &str) -> Option<String> {
    let line = plain(line);
    let mut words = line.split_whitespace();
    if words.next() != Some(name) {
        return None;
    }
    words.find(|w| w.starts_with("lg_")).map(str::to_owned)
}

async fn get_json(http: &reqwest::Client, url: &str, token: Option<&str>) -> Option<Value> {
    let mut req = http.get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

#[tokio::test]
async fn the_demo_serves_and_its_agents_fill_the_queues() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database = format!("sqlite://{}", dir.path().join("demo.db").display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_loopgate"))
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            &database,
        ])
        .env("RUST_LOG", "info,sqlx=warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loopgate demo");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let child = KillOnDrop(child);
    let output = Output::default();
    let (tx, rx) = mpsc::channel();
    drain(stdout, output.clone(), Some(tx));
    drain(stderr, output.clone(), None);

    // The banner: wait for the admin and alice tokens.
    let started = Instant::now();
    let (mut admin, mut alice) = (None, None);
    while admin.is_none() || alice.is_none() {
        let left = Duration::from_secs(60).saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                admin = admin.or_else(|| token_for(&line, "admin"));
                alice = alice.or_else(|| token_for(&line, "alice"));
            }
            Err(_) => panic!(
                "no tokens in the banner within 60 s; output:\n{}",
                output.tail()
            ),
        }
    }
    let (admin, alice) = (admin.unwrap_or_default(), alice.unwrap_or_default());
    // The reader thread keeps draining stdout; its sends now fail, quietly.
    drop(rx);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let deadline = Instant::now() + TRAFFIC_DEADLINE;
    let (mut healthy, mut created, mut pending) = (false, 0usize, 0usize);
    let (mut conversations, mut messages) = (0usize, 0usize);
    loop {
        if !healthy {
            healthy = get_json(&http, &format!("{base}/healthz"), None)
                .await
                .is_some_and(|v| v["status"] == "ok");
        }
        if let Some(page) =
            get_json(&http, &format!("{base}/v1/audit?limit=1000"), Some(&admin)).await
        {
            let count = |kind: &str| {
                page["events"].as_array().map_or(0, |events| {
                    events.iter().filter(|e| e["type"] == kind).count()
                })
            };
            created = count("action.created");
            messages = count("message.created");
        }
        if let Some(list) = get_json(
            &http,
            &format!("{base}/v1/reviews?status=pending"),
            Some(&alice),
        )
        .await
        {
            pending = list["reviews"].as_array().map_or(0, Vec::len);
        }
        if let Some(list) = get_json(&http, &format!("{base}/v1/conversations"), Some(&alice)).await
        {
            conversations = list["conversations"].as_array().map_or(0, Vec::len);
        }
        if healthy && created >= 5 && pending >= 1 && conversations >= 1 && messages >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {TRAFFIC_DEADLINE:?}: healthy {healthy}, {created} action.created events, {pending} pending reviews, \
             {conversations} conversations, {messages} message.created events; output:\n{}",
            output.tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The agents log what they did, in words.
    for needle in ["proposed", "chat-bot opened a chat"] {
        assert!(
            output.contains(needle),
            "no {needle:?} logged:\n{}",
            output.tail()
        );
    }
    drop(child);
}
