//! `loopgate demo` end to end: the real binary on a free port over a fresh database must print an
//! admin token, answer `/healthz`, and within seconds show its simulated agents' traffic in the
//! audit log, at least one review waiting for a human, and the chat bot's conversations. Within
//! a minute or so its history and simulated reviewers must give the learning loop evidence:
//! `tune` recommends, a backtest of `demo/candidate.toml` shows what it would let through, and
//! the stats carry calibration and per-agent slices.

use serde_json::Value;
use std::collections::HashMap;
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

/// A demo running on a free port over a fresh database, with the tokens its banner printed.
struct Demo {
    base: String,
    tokens: HashMap<String, String>,
    output: Output,
    database: String,
    // Fields drop in order: the demo is stopped before its database's directory goes.
    _child: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn token(&self, name: &str) -> &str {
        self.tokens
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// Starts `loopgate demo` as a user would and waits for the banner's tokens of `names`.
fn start_demo(names: &[&str]) -> Demo {
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

    // The banner: wait for the tokens asked for, and its last line (the stats page's address).
    let started = Instant::now();
    let mut tokens = HashMap::new();
    let mut banner_done = false;
    while !banner_done || names.iter().any(|n| !tokens.contains_key(*n)) {
        let left = Duration::from_secs(60).saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                for name in names {
                    if let Some(token) = token_for(&line, name) {
                        tokens.entry((*name).to_owned()).or_insert(token);
                    }
                }
                banner_done |= line.contains("/stats   (sign in as admin)");
            }
            Err(_) => panic!(
                "no whole banner with tokens within 60 s; output:\n{}",
                output.tail()
            ),
        }
    }
    // The reader thread keeps draining stdout; its sends now fail, quietly.
    drop(rx);
    Demo {
        base,
        tokens,
        output,
        database,
        _child: child,
        _dir: dir,
    }
}

#[tokio::test]
async fn the_demo_serves_and_its_agents_fill_the_queues() {
    let demo = start_demo(&["admin", "alice"]);
    let (base, output) = (demo.base.clone(), demo.output.clone());
    let (admin, alice) = (
        demo.token("admin").to_owned(),
        demo.token("alice").to_owned(),
    );

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
        // The live agents log what they did, in words (the history's items, recorded at the
        // same time, count above too: these lines are the live agents' own).
        let logged = ["proposed", "chat-bot opened a chat"]
            .iter()
            .all(|n| output.contains(n));
        if healthy && created >= 5 && pending >= 1 && conversations >= 1 && messages >= 1 && logged
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {TRAFFIC_DEADLINE:?}: healthy {healthy}, {created} action.created events, {pending} pending reviews, \
             {conversations} conversations, {messages} message.created events, agents' lines logged {logged}; output:\n{}",
            output.tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(demo);
}

/// How long the learning-loop test waits for each kind of evidence. The demo's history has it
/// within 20 to 40 s on an idle machine; the rest is headroom for a loaded CI runner building
/// and testing other things at the same time.
const EVIDENCE_DEADLINE: Duration = Duration::from_secs(100);

/// Polls `check` every second until it returns `Ok`, or panics at `deadline` with the last
/// `Err` (what was seen) and the demo's output.
async fn wait_for<F, Fut>(what: &str, deadline: Instant, output: &Output, mut check: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Value, String>>,
{
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not by the deadline; last seen: {last}\noutput:\n{}",
            output.tail()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn send_json(req: reqwest::RequestBuilder) -> Result<Value, String> {
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

/// The demo run as a user would: after its history and simulated reviewers have been at work,
/// `tune` recommends a threshold with real automation, a backtest of the example candidate
/// policy differs from the policy in force and shows known-bad items it would let through, and
/// the stats carry calibration bands and per-agent slices. Each kind of evidence is waited for
/// before it is asserted on; every assertion holds for any draw of the randomness, by margins
/// the demo's own unit test (`the_history_gives_the_learning_loop_evidence`) checks.
#[tokio::test]
async fn the_demo_gives_the_learning_loop_evidence() {
    let demo = start_demo(&["admin", "alice"]);
    let (base, output) = (demo.base.as_str(), &demo.output);
    let (admin, alice) = (demo.token("admin"), demo.token("alice"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client");
    let candidate_path = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/candidate.toml");
    let candidate = std::fs::read_to_string(candidate_path).expect("demo/candidate.toml");
    let deadline = Instant::now() + EVIDENCE_DEADLINE;

    // The banner says what the simulated reviewers do and how to see the learning loop.
    for needle in [
        "Simulated reviewers sim-reviewer and sim-reviewer-2",
        "loopgate tune --target-accuracy 0.95",
        "loopgate policy backtest demo/candidate.toml",
        "/stats",
    ] {
        assert!(
            output.contains(needle),
            "banner lacks {needle:?}:\n{}",
            output.tail()
        );
    }

    let tune = wait_for("tune recommends a threshold", deadline, output, || {
        let req = http
            .get(format!("{base}/v1/tune?target_accuracy=0.9"))
            .bearer_auth(alice);
        async move {
            let v = send_json(req).await?;
            let r = &v["result"];
            let t = r["threshold"].as_f64().unwrap_or(-1.0);
            let automation = r["automation_rate"].as_f64().unwrap_or(0.0);
            if r["status"] == "recommended" && t > 0.0 && t < 1.0 && automation > 0.2 {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        }
    })
    .await;
    assert!(
        tune["result"]["accuracy"]["trials"].as_u64().unwrap_or(0) >= 30,
        "{tune}"
    );
    assert!(
        tune["result"]["accuracy"]["low"].as_f64().unwrap_or(0.0) >= 0.9,
        "{tune}"
    );

    let report = wait_for(
        "the candidate's backtest lets known-bad items through",
        deadline,
        output,
        || {
            let req = http
                .post(format!("{base}/v1/policy/backtest"))
                .bearer_auth(admin)
                .header("Content-Type", "application/toml")
                .body(candidate.clone());
            async move {
                let v = send_json(req).await?;
                let r = &v["report"];
                let bad = |side: &str| r[side]["known_bad_let_through"].as_u64().unwrap_or(0);
                if r["items"].as_u64().unwrap_or(0) > 0 && bad("candidate") > bad("current") {
                    Ok(v)
                } else {
                    Err(v.to_string())
                }
            }
        },
    )
    .await;
    let r = &report["report"];
    let automation = |side: &str| r[side]["automation_rate"].as_f64().unwrap_or(-1.0);
    assert!(
        automation("candidate") > automation("current") && automation("current") >= 0.0,
        "lower thresholds automate more: {report}"
    );
    assert!(
        r["known_bad"].as_array().is_some_and(|k| !k.is_empty()),
        "{report}"
    );

    // Graded items per pool of calibration bands: (right, graded) below 0.6 and from 0.9 up.
    fn pooled(bands: &[Value], keep: impl Fn(f64) -> bool) -> (u64, u64) {
        bands
            .iter()
            .filter(|b| keep(b["low"].as_f64().unwrap_or(-1.0)))
            .fold((0, 0), |(right, n), b| {
                (
                    right + b["accuracy"]["successes"].as_u64().unwrap_or(0),
                    n + b["count"].as_u64().unwrap_or(0),
                )
            })
    }
    let stats = wait_for(
        "the stats carry calibration and per-agent slices",
        deadline,
        output,
        || {
            let req = http.get(format!("{base}/v1/stats")).bearer_auth(alice);
            async move {
                let v = send_json(req).await?;
                let bands = v["calibration"].as_array().cloned().unwrap_or_default();
                let counted = bands
                    .iter()
                    .filter(|b| b["count"].as_u64().unwrap_or(0) > 0)
                    .count();
                let (_, unsure) = pooled(&bands, |low| low < 0.55);
                let (_, sure) = pooled(&bands, |low| low > 0.85);
                let agents: Vec<&str> = v["by_agent"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|s| s["items"].as_i64().unwrap_or(0) > 0)
                            .filter_map(|s| s["key"].as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                let all = ["support-bot", "ops-bot", "chat-bot"]
                    .iter()
                    .all(|a| agents.contains(a));
                if bands.len() == 10 && counted >= 4 && unsure >= 20 && sure >= 20 && all {
                    Ok(v.clone())
                } else {
                    Err(format!(
                        "{counted} calibration bands with items ({unsure} graded below 0.6, \
                         {sure} from 0.9), agents {agents:?}"
                    ))
                }
            }
        },
    )
    .await;
    // Calibration is informative: the AI's confident work is more often right than its unsure
    // work (about 99.5% against 55%: with 20 or more items each, never the other way round).
    let bands = stats["calibration"].as_array().cloned().unwrap_or_default();
    let rate = |(right, n): (u64, u64)| right as f64 / n.max(1) as f64;
    let (unsure, sure) = (
        pooled(&bands, |low| low < 0.55),
        pooled(&bands, |low| low > 0.85),
    );
    assert!(rate(sure) > rate(unsure), "{}", stats["calibration"]);

    // The simulated reviewers work the queues themselves, through /v1/reviews/next.
    wait_for(
        "a simulated reviewer decides a queued review",
        deadline,
        output,
        || async {
            if output.contains("demo::reviewers: sim-reviewer") {
                Ok(Value::Null)
            } else {
                Err("no simulated reviewer's decision logged".to_owned())
            }
        },
    )
    .await;

    // The CLI the banner shows answers from the same database.
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_loopgate"))
            .args(args)
            .args(["--database", &demo.database, "--workspace", "demo"])
            .env("NO_COLOR", "1")
            .output()
            .expect("run loopgate");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "loopgate {args:?}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let tuned = run(&["tune", "--target-accuracy", "0.9"]);
    assert!(
        tuned.contains("recommended threshold: confidence >= "),
        "{tuned}"
    );
    let backtest = run(&["policy", "backtest", candidate_path]);
    assert!(backtest.contains("known-bad let through"), "{backtest}");
    drop(demo);
}
