//! Crash harness: the real `loopgate serve` on one SQLite database under mixed concurrent load
//! (idempotent action submissions, reviewers taking and deciding reviews, conversation
//! messages), killed with SIGKILL at random moments, many times. After every kill and restart it
//! checks that each write that got a 2xx is there exactly once, that no review or action was
//! decided twice, that `loopgate audit verify` passes, and that timeouts whose deadline passed
//! while the server was down fired on start. It ends with a summary table.
//!
//! `LOOPGATE_CRASH_KILLS=N` sets the number of kills (default 20; `scripts/reliability` runs 200),
//! `LOOPGATE_CRASH_SEED=S` replays a run's random choices (timing still varies),
//! `LOOPGATE_CRASH_DRAIN_WEBHOOKS=1` waits at the end for the leases of webhook deliveries that a
//! kill interrupted to lapse (60 s), so that every event must have been received. Run with
//! `cargo test --test crash -- --nocapture` to see the table.

use futures::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Auto-approves lookups, sends refunds to reviewers (two for large ones), gives two kinds of
/// refund a 1 s deadline nobody works on (so deadlines fall inside the down time of a crash), and
/// holds AI messages about refunds as drafts.
const POLICY: &str = r#"
[[rule]]
name = "quick refunds expire"
applies_to = "action"
when = 'action.name == "refund_timeout_reject"'
then = "review"
queue = "timeouts"
timeout = "1s"
on_timeout = "reject"

[[rule]]
name = "quick refunds go through when late"
applies_to = "action"
when = 'action.name == "refund_timeout_approve"'
then = "review"
queue = "timeouts"
timeout = "1s"
on_timeout = "approve"

[[rule]]
name = "large refunds need two approvers"
applies_to = "action"
when = 'action.name == "issue_refund" && action.arguments.amount > 500'
then = "review"
queue = "finance"
approvals = 2

[[rule]]
name = "refunds need review"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "review"
queue = "finance"

[[rule]]
name = "refund talk is checked first"
applies_to = "message"
when = 'message.text.contains("refund")'
then = "review"
queue = "drafts"

[[rule]]
name = "everything else runs"
when = "true"
then = "approve"
"#;

/// The policy's deadline for the `refund_timeout_*` actions.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The webhook worker's lease on a delivery it is sending (`delivery.rs`): a delivery in flight
/// when the server dies is retried once it lapses.
const WEBHOOK_LEASE: Duration = Duration::from_secs(60);

/// A Standard Webhooks secret for the harness's endpoint.
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3ZzBmNlM+Zw=";

/// Webhook deliveries received: event seq -> the `webhook-id` of each attempt.
type Received = Arc<Mutex<BTreeMap<i64, Vec<String>>>>;

/// A webhook receiver on 127.0.0.1 that outlives every server. It records each delivery, then
/// answers 200 after a short random pause, so that some deliveries are in flight (received, not
/// yet recorded as delivered) when the server is killed.
async fn start_receiver(received: Received) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the webhook receiver");
    let addr = listener.local_addr().expect("the receiver's address");
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
        let received = received.clone();
        async move {
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let seq = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|e| e["seq"].as_i64())
                .unwrap_or(-1);
            received
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(seq)
                .or_default()
                .push(id);
            let pause = rand::random::<u64>() % 30;
            tokio::time::sleep(Duration::from_millis(pause)).await;
            axum::http::StatusCode::OK
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/hook")
}

fn received_seqs(received: &Received) -> BTreeMap<i64, Vec<String>> {
    received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loopgate"));
    cmd.args(args)
        .env_remove("LOOPGATE_DATABASE_URL")
        .env_remove("LOOPGATE_LISTEN")
        .env_remove("LOOPGATE_POLICY")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// `loopgate keys create`: the token, alone on the last line of stdout.
fn create_key(url: &str, name: &str, role: &str) -> String {
    let out = command(&[
        "--database",
        url,
        "keys",
        "create",
        "--name",
        name,
        "--role",
        role,
    ])
    .output()
    .expect("run loopgate keys create");
    assert!(
        out.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("a local address").port()
}

/// The last lines of the servers' log, for failure messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// One `loopgate serve` process; SIGKILLed when dropped, so a failing run leaves none behind.
struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    /// Start on a free port and wait until `/healthz` answers. A server that exits at once is
    /// started again on another port (another process may have taken the free one).
    async fn start(url: &str, policy: &Path, log: &Path, client: &reqwest::Client) -> Serve {
        for _ in 0..3 {
            if let Some(serve) = Self::try_start(url, policy, log, client).await {
                return serve;
            }
        }
        panic!("serve exited three times:\n{}", log_tail(log));
    }

    async fn try_start(
        url: &str,
        policy: &Path,
        log: &Path,
        client: &reqwest::Client,
    ) -> Option<Serve> {
        let listen = format!("127.0.0.1:{}", free_port());
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the server log");
        let child = command(&[
            "--database",
            url,
            "serve",
            "--listen",
            &listen,
            "--policy",
            policy.to_str().expect("a UTF-8 path"),
            // The harness reads back every acknowledged write after each restart, thousands of
            // requests through a few keys: the per-key rate limit would answer 429 to the check
            // itself. The load it drives is a test, not abuse (tests/api/limits.rs covers limits).
            "--rate-limit",
            "off",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("start loopgate serve");
        let mut serve = Serve {
            child,
            base: format!("http://{listen}"),
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(_)) = serve.child.try_wait() {
                return None;
            }
            let health = client
                .get(format!("{}/healthz", serve.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(resp) = health {
                if resp.status() == StatusCode::OK {
                    return Some(serve);
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "serve did not answer /healthz on {listen} within 30 s:\n{}",
                log_tail(log)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix): no graceful shutdown, as in a crash.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The tokens the load and the checks use.
#[derive(Clone)]
struct Tokens {
    agent: String,
    ann: String,
    bob: String,
    admin: String,
}

/// An action submission that got a 2xx.
struct AckedAction {
    key: String,
    body: Value,
    id: String,
    /// It has a 1 s deadline nobody works on.
    timed: bool,
    acked_at: Instant,
    /// Seen in a final status after its deadline.
    settled: bool,
}

/// A submission sent without a 2xx answer: it may or may not be in the database, but at most once.
struct Unacked {
    key: String,
    body: Value,
}

/// A decision that got a 2xx.
struct AckedDecision {
    review: String,
    reviewer: String,
    verdict: String,
}

/// Every write the load sent, and what got a 2xx. Shared by the load tasks.
#[derive(Default)]
struct Ledger {
    actions: Vec<AckedAction>,
    unacked: Vec<Unacked>,
    decisions: Vec<AckedDecision>,
    conversations: Vec<String>,
    /// (conversation, message).
    messages: Vec<(String, String)>,
    sent: u64,
    acknowledged: u64,
    /// Answers with a status the load never expects (other than 429).
    problems: Vec<String>,
    /// Replays during the load that created or returned another action.
    duplicates: Vec<String>,
}

impl Ledger {
    /// Record the answer to a first submission of `key`: acknowledged, or not (it may or may not
    /// be in the database; a replay after the next restart finds out).
    fn record_submission(&mut self, key: String, body: Value, answer: Option<(StatusCode, Value)>) {
        let timed = body["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("refund_timeout"));
        match answer {
            Some((s, a)) if s.is_success() && a["id"].is_string() => {
                self.acknowledged += 1;
                self.actions.push(AckedAction {
                    key,
                    body,
                    id: id_of(&a, "id").unwrap_or_default(),
                    timed,
                    acked_at: Instant::now(),
                    settled: false,
                });
            }
            Some((StatusCode::TOO_MANY_REQUESTS, _)) | None => {
                self.unacked.push(Unacked { key, body })
            }
            Some((s, a)) => {
                self.problems.push(format!("submission answered {s}: {a}"));
                self.unacked.push(Unacked { key, body });
            }
        }
    }
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    // A panicking load task must not hide the ledger from the checks.
    ledger
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// POST a JSON body; `None` when no complete answer came back (the server died, or the
/// connection broke mid-answer): such a write is unacknowledged.
async fn post(
    client: &reqwest::Client,
    url: String,
    token: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Option<(StatusCode, Value)> {
    let mut req = client.post(url).bearer_auth(token);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status();
    let text = resp.text().await.ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

async fn get(client: &reqwest::Client, url: String, token: &str) -> Option<(StatusCode, Value)> {
    let resp = client.get(url).bearer_auth(token).send().await.ok()?;
    let status = resp.status();
    let text = resp.text().await.ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn id_of(v: &Value, field: &str) -> Option<String> {
    v[field].as_str().map(str::to_owned)
}

/// An agent submitting actions with fresh idempotency keys, and now and then replaying an
/// acknowledged one (which must return the same action).
async fn submitter(
    client: reqwest::Client,
    base: String,
    tokens: Tokens,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let url = format!("{base}/v1/actions");
    while !stop.load(Ordering::Relaxed) {
        let replay = if rng.gen_bool(0.1) {
            let l = lock(&ledger);
            (!l.actions.is_empty()).then(|| {
                let a = &l.actions[rng.gen_range(0..l.actions.len())];
                (a.key.clone(), a.body.clone(), a.id.clone())
            })
        } else {
            None
        };
        if let Some((key, body, id)) = replay {
            lock(&ledger).sent += 1;
            match post(&client, url.clone(), &tokens.agent, Some(&key), Some(&body)).await {
                Some((StatusCode::OK, a)) if a["id"] == id.as_str() => {}
                Some((StatusCode::TOO_MANY_REQUESTS, _)) | None => {}
                // A 201, or another id: the key made a second action.
                Some((s, a)) if s.is_success() => lock(&ledger).duplicates.push(format!(
                    "replaying key {key} of action {id} during the load: {s} {a}"
                )),
                Some((s, a)) => lock(&ledger).problems.push(format!(
                    "replaying key {key} of action {id} during the load: {s} {a}"
                )),
            }
            continue;
        }
        let n: u32 = rng.gen_range(0..100);
        let body = match n {
            0..=44 => {
                json!({"name": "lookup_order", "arguments": {"order": rng.gen_range(1..100_000)}})
            }
            45..=79 => {
                json!({"name": "issue_refund", "arguments": {"amount": rng.gen_range(1..1000)}})
            }
            80..=89 => json!({"name": "refund_timeout_reject", "arguments": {"amount": n}}),
            _ => json!({"name": "refund_timeout_approve", "arguments": {"amount": n}}),
        };
        let key = uuid::Uuid::new_v4().to_string();
        lock(&ledger).sent += 1;
        let answer = post(&client, url.clone(), &tokens.agent, Some(&key), Some(&body)).await;
        lock(&ledger).record_submission(key, body, answer);
    }
}

/// A reviewer taking the next review of a queue and deciding it.
async fn reviewer(
    client: reqwest::Client,
    base: String,
    who: &'static str,
    token: String,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let queue = if rng.gen_bool(0.6) {
            "finance"
        } else {
            "drafts"
        };
        let next = post(
            &client,
            format!("{base}/v1/reviews/next?queue={queue}"),
            &token,
            None,
            None,
        )
        .await;
        let review = match next {
            Some((StatusCode::OK, r)) => id_of(&r, "id"),
            Some((StatusCode::NO_CONTENT, _)) => {
                tokio::time::sleep(Duration::from_millis(15)).await;
                None
            }
            None => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                None
            }
            Some(_) => None,
        };
        let Some(review) = review else { continue };
        let verdict = if rng.gen_bool(0.75) {
            "approve"
        } else {
            "reject"
        };
        lock(&ledger).sent += 1;
        let answer = post(
            &client,
            format!("{base}/v1/reviews/{review}/decision"),
            &token,
            None,
            Some(&json!({"verdict": verdict})),
        )
        .await;
        let mut l = lock(&ledger);
        match answer {
            Some((StatusCode::OK, _)) => {
                l.acknowledged += 1;
                l.decisions.push(AckedDecision {
                    review,
                    reviewer: who.to_owned(),
                    verdict: verdict.to_owned(),
                });
            }
            // A claim that lapsed across a restart, taken by the other reviewer: refused, fine.
            Some((StatusCode::CONFLICT, _)) | Some((StatusCode::TOO_MANY_REQUESTS, _)) | None => {}
            Some((s, b)) => l.problems.push(format!("decision on {review}: {s} {b}")),
        }
    }
}

/// An agent holding conversations: end-user messages, confident answers (delivered), and
/// answers about refunds (held as drafts for the reviewers).
async fn talker(
    client: reqwest::Client,
    base: String,
    tokens: Tokens,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut current: Option<(String, u32)> = None;
    while !stop.load(Ordering::Relaxed) {
        lock(&ledger).sent += 1;
        match current.take() {
            Some((cid, turns)) if turns < 6 => {
                let body = match (turns % 2, rng.gen_bool(0.3)) {
                    (0, _) => json!({"role": "user", "text": format!("Where is order {turns}?")}),
                    (_, true) => {
                        json!({"role": "ai", "text": "I can refund that order.", "confidence": 0.9})
                    }
                    (_, false) => {
                        json!({"role": "ai", "text": "It ships tomorrow.", "confidence": 0.9})
                    }
                };
                let answer = post(
                    &client,
                    format!("{base}/v1/conversations/{cid}/messages"),
                    &tokens.agent,
                    None,
                    Some(&body),
                )
                .await;
                let mut l = lock(&ledger);
                match answer {
                    Some((s, m)) if s.is_success() && m["id"].is_string() => {
                        l.acknowledged += 1;
                        l.messages
                            .push((cid.clone(), id_of(&m, "id").unwrap_or_default()));
                    }
                    Some((StatusCode::TOO_MANY_REQUESTS, _)) | None => {}
                    Some((s, m)) => l.problems.push(format!("message in {cid}: {s} {m}")),
                }
                current = Some((cid, turns + 1));
            }
            _ => {
                let answer = post(
                    &client,
                    format!("{base}/v1/conversations"),
                    &tokens.agent,
                    None,
                    Some(&json!({"context": {"channel": "chat"}})),
                )
                .await;
                let mut l = lock(&ledger);
                match answer {
                    Some((s, c)) if s.is_success() && c["id"].is_string() => {
                        l.acknowledged += 1;
                        let cid = id_of(&c, "id").unwrap_or_default();
                        l.conversations.push(cid.clone());
                        current = Some((cid, 0));
                    }
                    Some((StatusCode::TOO_MANY_REQUESTS, _)) | None => {}
                    Some((s, c)) => l.problems.push(format!("opening a conversation: {s} {c}")),
                }
            }
        }
    }
}

/// What the audit log (read through `GET /v1/audit`) has said so far, read incrementally.
#[derive(Default)]
struct AuditSeen {
    last_seq: i64,
    last_hash: String,
    events: u64,
    /// How many events of each counted type name each subject.
    counts: HashMap<(String, String), u32>,
    /// Reviews closed (decided or expired), by review subject.
    closed: HashMap<String, u32>,
    /// The seqs of `action.decided` events: what the webhook subscribes to.
    decided_seqs: Vec<i64>,
}

/// The event types that must appear at most once per subject.
const ONCE_PER_SUBJECT: [&str; 4] = [
    "action.created",
    "action.decided",
    "conversation.created",
    "message.created",
];

impl AuditSeen {
    fn count(&self, kind: &str, subject: &str) -> u32 {
        self.counts
            .get(&(kind.to_owned(), subject.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    fn distinct(&self, kind: &str) -> usize {
        self.counts.keys().filter(|(k, _)| k == kind).count()
    }
}

/// What went wrong, sorted for the summary.
#[derive(Default)]
struct Findings {
    lost: Vec<String>,
    duplicated: Vec<String>,
    other: Vec<String>,
}

impl Findings {
    fn is_clean(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.other.is_empty()
    }
}

#[derive(Default)]
struct Tally {
    kills: u64,
    writes_checked: u64,
    replays: u64,
    /// Unacknowledged submissions found committed / not committed on replay.
    unacked_committed: u64,
    unacked_absent: u64,
    timeouts_fired_on_start: u64,
    timeouts_checked: u64,
}

/// The harness's state between cycles.
struct Harness {
    url: String,
    policy: PathBuf,
    log: PathBuf,
    tokens: Tokens,
    client: reqwest::Client,
    ledger: Arc<Mutex<Ledger>>,
    audit: AuditSeen,
    findings: Findings,
    tally: Tally,
    rng: StdRng,
    /// How far the incremental checks have come in each ledger list.
    checked_actions: usize,
    checked_decisions: usize,
    checked_conversations: usize,
    checked_messages: usize,
    /// The database's (round, actions, conversations, messages) counted after the last kill.
    counts_at_kill: Option<(u64, i64, i64, i64)>,
    /// What the webhook receiver got.
    received: Received,
}

impl Harness {
    /// The rows counted while the server was down against the creation events in the log.
    fn compare_counts(&mut self) {
        let Some((round, actions, conversations, messages)) = self.counts_at_kill.take() else {
            return;
        };
        let logged = (
            self.audit.distinct("action.created") as i64,
            self.audit.distinct("conversation.created") as i64,
            self.audit.distinct("message.created") as i64,
        );
        if logged != (actions, conversations, messages) {
            self.findings.other.push(format!(
                "after kill {round}: the database has (actions, conversations, messages) = \
                 {:?}, the audit log created {logged:?}",
                (actions, conversations, messages)
            ));
        }
    }

    /// Checks while the server is down: the CLI verifies the chain; SQL counts what must be
    /// unique. Returns the number of actions, conversations and messages in the database.
    async fn check_down(&mut self, round: u64) -> (i64, i64, i64) {
        let out = command(&["--database", &self.url, "audit", "verify"])
            .output()
            .expect("run loopgate audit verify");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            self.findings.other.push(format!(
                "after kill {round}: audit verify exited {}: {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // `ok N events`: the log only grows, so N is at least what was already read from it.
        let verified: u64 = stdout
            .trim()
            .strip_prefix("ok ")
            .and_then(|r| r.strip_suffix(" events"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if out.status.success() && verified < self.audit.events {
            self.findings.lost.push(format!(
                "after kill {round}: audit verify counted {verified} events, {} were read before",
                self.audit.events
            ));
        }

        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect(&self.url)
            .await
            .expect("open the database file");
        let actions = scalar(&mut db, "SELECT count(*) FROM actions").await;
        let keys = scalar(&mut db, "SELECT count(*) FROM idempotency_keys").await;
        let shared_keys = scalar(
            &mut db,
            "SELECT count(*) FROM (SELECT action_id FROM idempotency_keys \
             GROUP BY action_id HAVING count(*) > 1)",
        )
        .await;
        let over_decided = scalar(
            &mut db,
            "SELECT count(*) FROM reviews r WHERE approvals_required < \
             (SELECT count(*) FROM decisions d WHERE d.review_id = r.id)",
        )
        .await;
        let twice_decided = scalar(
            &mut db,
            "SELECT count(*) FROM (SELECT subject FROM events WHERE type = 'action.decided' \
             GROUP BY subject HAVING count(*) > 1)",
        )
        .await;
        let twice_closed = scalar(
            &mut db,
            "SELECT count(*) FROM (SELECT subject FROM events \
             WHERE type IN ('review.decided', 'review.expired') \
             GROUP BY subject HAVING count(*) > 1)",
        )
        .await;
        let conversations = scalar(&mut db, "SELECT count(*) FROM conversations").await;
        let messages = scalar(&mut db, "SELECT count(*) FROM messages").await;
        // Webhooks (subscribed to `action.decided`): one outbox row per event, written with it;
        // none given up on (the receiver always answers 200).
        let without_one_row = scalar(
            &mut db,
            "SELECT count(*) FROM events e WHERE e.type = 'action.decided' AND 1 != \
             (SELECT count(*) FROM outbox o WHERE o.event_seq = e.seq AND o.workspace = e.workspace)",
        )
        .await;
        let dead = scalar(&mut db, "SELECT count(*) FROM outbox WHERE status = 'dead'").await;
        let delivered: Vec<i64> =
            sqlx::query_scalar("SELECT event_seq FROM outbox WHERE status = 'delivered'")
                .fetch_all(&mut db)
                .await
                .expect("read the outbox");
        let _ = db.close().await;

        if without_one_row != 0 || dead != 0 {
            self.findings.lost.push(format!(
                "after kill {round}: {without_one_row} action.decided events without exactly one \
                 outbox row, {dead} deliveries given up"
            ));
        }
        // The server records a delivery only after the receiver's 2xx: each must have arrived.
        let received = received_seqs(&self.received);
        let missing: Vec<&i64> = delivered
            .iter()
            .filter(|seq| !received.contains_key(seq))
            .collect();
        if !missing.is_empty() {
            self.findings.lost.push(format!(
                "after kill {round}: webhook deliveries recorded but never received, for events {missing:?}"
            ));
        }

        // Every submission carries a key, so each action has exactly one key row.
        if keys != actions || shared_keys != 0 {
            self.findings.duplicated.push(format!(
                "after kill {round}: {actions} actions but {keys} idempotency keys \
                 ({shared_keys} actions with several keys)"
            ));
        }
        if over_decided != 0 {
            self.findings.duplicated.push(format!(
                "after kill {round}: {over_decided} reviews with more decisions than approvals required"
            ));
        }
        if twice_decided != 0 || twice_closed != 0 {
            self.findings.duplicated.push(format!(
                "after kill {round}: {twice_decided} actions decided twice, {twice_closed} reviews closed twice"
            ));
        }
        (actions, conversations, messages)
    }

    /// Read the audit log from where we stopped, after checking that the last event we saw is
    /// still there with the same hash.
    async fn read_audit(&mut self, base: &str, round: u64) {
        let seen = &mut self.audit;
        if seen.last_seq > 0 {
            let url = format!("{base}/v1/audit?after={}&limit=1", seen.last_seq - 1);
            let (s, page) = get(&self.client, url, &self.tokens.admin)
                .await
                .expect("the audit log answers");
            let e = &page["events"][0];
            if s != StatusCode::OK
                || e["seq"] != seen.last_seq
                || e["hash"] != seen.last_hash.as_str()
            {
                self.findings.lost.push(format!(
                    "after kill {round}: audit event {} changed or vanished: {s} {page}",
                    seen.last_seq
                ));
            }
        }
        loop {
            let url = format!("{base}/v1/audit?after={}&limit=1000", seen.last_seq);
            let (s, page) = get(&self.client, url, &self.tokens.admin)
                .await
                .expect("the audit log answers");
            assert_eq!(s, StatusCode::OK, "{page}");
            let events = page["events"].as_array().cloned().unwrap_or_default();
            for e in &events {
                let kind = e["type"].as_str().unwrap_or_default().to_owned();
                let subject = e["subject"].as_str().unwrap_or_default().to_owned();
                seen.events += 1;
                seen.last_seq = e["seq"].as_i64().unwrap_or(seen.last_seq);
                seen.last_hash = e["hash"].as_str().unwrap_or_default().to_owned();
                if kind == "review.decided" || kind == "review.expired" {
                    let n = seen.closed.entry(subject.clone()).or_default();
                    *n += 1;
                    if *n > 1 {
                        self.findings
                            .duplicated
                            .push(format!("{subject} closed twice (seq {})", seen.last_seq));
                    }
                }
                if kind == "action.decided" {
                    seen.decided_seqs.push(seen.last_seq);
                }
                if ONCE_PER_SUBJECT.contains(&kind.as_str()) {
                    let n = seen
                        .counts
                        .entry((kind.clone(), subject.clone()))
                        .or_default();
                    *n += 1;
                    if *n > 1 {
                        self.findings.duplicated.push(format!(
                            "{kind} twice for {subject} (seq {})",
                            seen.last_seq
                        ));
                    }
                }
            }
            if page["next_after"].is_null() {
                return;
            }
        }
    }

    /// Right after a restart: every acknowledged timed action whose deadline passed before this
    /// server started must already be settled (the sweep on start runs before it serves).
    async fn check_timeouts(&mut self, base: &str, started: Instant, killed: Instant, round: u64) {
        let due: Vec<(usize, String, bool)> = {
            let l = lock(&self.ledger);
            l.actions
                .iter()
                .enumerate()
                .filter(|(_, a)| {
                    a.timed
                        && !a.settled
                        && a.acked_at + TIMEOUT + Duration::from_millis(50) < started
                })
                .map(|(i, a)| (i, a.id.clone(), a.acked_at + TIMEOUT > killed))
                .collect()
        };
        for (i, id, while_down) in due {
            let answer = get(
                &self.client,
                format!("{base}/v1/actions/{id}"),
                &self.tokens.agent,
            )
            .await;
            let Some((StatusCode::OK, a)) = answer else {
                self.findings.lost.push(format!(
                    "after kill {round}: timed action {id} is gone: {answer:?}"
                ));
                continue;
            };
            self.tally.timeouts_checked += 1;
            let settled = matches!(a["status"].as_str(), Some("expired" | "approved"))
                && a["decision"]["verdict"] == "timeout";
            if !settled {
                self.findings.other.push(format!(
                    "after kill {round}: action {id} is past its deadline but not timed out: {a}"
                ));
            } else if while_down {
                self.tally.timeouts_fired_on_start += 1;
            }
            lock(&self.ledger).actions[i].settled = true;
        }
    }

    /// Is this acknowledged action there, once, and does its key still name it?
    async fn check_action(&self, base: &str, key: &str, body: &Value, id: &str) -> Check {
        let mut check = Check::default();
        match get(
            &self.client,
            format!("{base}/v1/actions/{id}"),
            &self.tokens.agent,
        )
        .await
        {
            Some((StatusCode::OK, a)) if a["name"] == body["name"] => {}
            other => check.lost = Some(format!("action {id}: {other:?}")),
        }
        let created = self.audit.count("action.created", &format!("action:{id}"));
        if created == 0 && check.lost.is_none() {
            check.lost = Some(format!("action {id} has no action.created event"));
        }
        match post(
            &self.client,
            format!("{base}/v1/actions"),
            &self.tokens.agent,
            Some(key),
            Some(body),
        )
        .await
        {
            Some((StatusCode::OK, a)) if a["id"] == id => {}
            Some((StatusCode::TOO_MANY_REQUESTS, _)) => {}
            // A 201, or another id: the key made a second action.
            Some((s, a)) if s.is_success() => {
                check.duplicated = Some(format!(
                    "replaying key {key} of action {id} returned {s} {a}"
                ))
            }
            other => {
                check.other = Some(format!(
                    "replaying key {key} of action {id} returned {other:?}"
                ))
            }
        }
        check
    }

    /// Check the writes acknowledged since the last check (all of them when `everything`), plus a
    /// sample of older actions; then replay every unacknowledged submission.
    async fn check_up(&mut self, base: &str, round: u64, everything: bool) {
        // Actions: new ones, and a random sample of older ones (all at the end).
        let (targets, unacked) = {
            let mut l = lock(&self.ledger);
            let from = if everything { 0 } else { self.checked_actions };
            let mut idx: Vec<usize> = (from..l.actions.len()).collect();
            for _ in 0..20.min(from) {
                idx.push(self.rng.gen_range(0..from));
            }
            self.checked_actions = l.actions.len();
            let targets: Vec<(String, Value, String)> = idx
                .into_iter()
                .map(|i| {
                    let a = &l.actions[i];
                    (a.key.clone(), a.body.clone(), a.id.clone())
                })
                .collect();
            (targets, std::mem::take(&mut l.unacked))
        };
        let this = &*self;
        let checks: Vec<Check> = stream::iter(targets)
            .map(|(key, body, id)| async move { this.check_action(base, &key, &body, &id).await })
            .buffer_unordered(8)
            .collect()
            .await;
        for c in checks {
            self.tally.writes_checked += 1;
            self.tally.replays += 1;
            if let Some(l) = c.lost {
                self.findings.lost.push(format!("after kill {round}: {l}"));
            }
            if let Some(d) = c.duplicated {
                self.findings
                    .duplicated
                    .push(format!("after kill {round}: {d}"));
            }
            if let Some(o) = c.other {
                self.findings.other.push(format!("after kill {round}: {o}"));
            }
        }

        // Unacknowledged submissions: replaying the key either finds the one action (it was
        // committed) or creates it now; never a second one.
        for u in unacked {
            self.tally.replays += 1;
            let answer = post(
                &self.client,
                format!("{base}/v1/actions"),
                &self.tokens.agent,
                Some(&u.key),
                Some(&u.body),
            )
            .await;
            let timed = u.body["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("refund_timeout"));
            match answer {
                Some((s, a))
                    if (s == StatusCode::OK || s == StatusCode::CREATED) && a["id"].is_string() =>
                {
                    let id = id_of(&a, "id").unwrap_or_default();
                    if s == StatusCode::OK {
                        self.tally.unacked_committed += 1;
                        if self.audit.count("action.created", &format!("action:{id}")) != 1 {
                            self.findings.other.push(format!(
                                "after kill {round}: key {} replays action {id}, which has no single action.created event",
                                u.key
                            ));
                        }
                    } else {
                        self.tally.unacked_absent += 1;
                    }
                    let mut l = lock(&self.ledger);
                    l.acknowledged += 1;
                    l.actions.push(AckedAction {
                        key: u.key,
                        body: u.body,
                        id,
                        timed,
                        acked_at: Instant::now(),
                        settled: false,
                    });
                }
                Some((StatusCode::TOO_MANY_REQUESTS, _)) => lock(&self.ledger).unacked.push(u),
                other => self.findings.other.push(format!(
                    "after kill {round}: replaying unacknowledged key {}: {other:?}",
                    u.key
                )),
            }
        }

        // Decisions: each acknowledged one is recorded once on its review, within the number of
        // approvals the review requires.
        let decisions: Vec<(String, String, String)> = {
            let l = lock(&self.ledger);
            let from = if everything {
                0
            } else {
                self.checked_decisions
            };
            self.checked_decisions = l.decisions.len();
            l.decisions[from..]
                .iter()
                .map(|d| (d.review.clone(), d.reviewer.clone(), d.verdict.clone()))
                .collect()
        };
        let mut by_review: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for (review, reviewer, verdict) in decisions {
            by_review
                .entry(review)
                .or_default()
                .push((reviewer, verdict));
        }
        for (review, acked) in by_review {
            let answer = get(
                &self.client,
                format!("{base}/v1/reviews/{review}"),
                &self.tokens.ann,
            )
            .await;
            let Some((StatusCode::OK, r)) = answer else {
                self.findings
                    .lost
                    .push(format!("after kill {round}: review {review}: {answer:?}"));
                continue;
            };
            let recorded = r["decisions"].as_array().cloned().unwrap_or_default();
            let required = r["approvals_required"].as_u64().unwrap_or(1) as usize;
            if recorded.len() > required {
                self.findings.duplicated.push(format!(
                    "after kill {round}: review {review} has {} decisions, {required} required",
                    recorded.len()
                ));
            }
            for (reviewer, verdict) in &acked {
                self.tally.writes_checked += 1;
                let n = recorded
                    .iter()
                    .filter(|d| {
                        d["reviewer"] == reviewer.as_str() && d["verdict"] == verdict.as_str()
                    })
                    .count();
                match n {
                    1 => {}
                    0 => self.findings.lost.push(format!(
                        "after kill {round}: {reviewer}'s {verdict} on review {review} is gone: {r}"
                    )),
                    _ => self.findings.duplicated.push(format!(
                        "after kill {round}: {reviewer}'s {verdict} on review {review} recorded {n} times"
                    )),
                }
            }
            let closes = self
                .audit
                .closed
                .get(&format!("review:{review}"))
                .copied()
                .unwrap_or(0);
            let final_verdict = acked.iter().any(|(_, v)| v == "reject") || acked.len() >= required;
            if final_verdict && (r["status"] != "decided" || closes != 1) {
                self.findings.lost.push(format!(
                    "after kill {round}: review {review} was decided ({acked:?}) but is {} with {closes} closing events",
                    r["status"]
                ));
            }
        }

        // Conversations and messages: each one there, each message once in its transcript.
        let (conversations, messages) = {
            let l = lock(&self.ledger);
            let cfrom = if everything {
                0
            } else {
                self.checked_conversations
            };
            let mfrom = if everything { 0 } else { self.checked_messages };
            self.checked_conversations = l.conversations.len();
            self.checked_messages = l.messages.len();
            (
                l.conversations[cfrom..].to_vec(),
                l.messages[mfrom..].to_vec(),
            )
        };
        let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for cid in conversations {
            wanted.entry(cid).or_default();
        }
        for (cid, mid) in messages {
            wanted.entry(cid).or_default().push(mid);
        }
        for (cid, mids) in wanted {
            self.tally.writes_checked += 1;
            let answer = get(
                &self.client,
                format!("{base}/v1/conversations/{cid}"),
                &self.tokens.ann,
            )
            .await;
            let Some((StatusCode::OK, c)) = answer else {
                self.findings.lost.push(format!(
                    "after kill {round}: conversation {cid}: {answer:?}"
                ));
                continue;
            };
            if self
                .audit
                .count("conversation.created", &format!("conversation:{cid}"))
                != 1
            {
                self.findings.other.push(format!(
                    "after kill {round}: conversation {cid} has no single conversation.created event"
                ));
            }
            let transcript = c["messages"].as_array().cloned().unwrap_or_default();
            for mid in mids {
                self.tally.writes_checked += 1;
                match transcript
                    .iter()
                    .filter(|m| m["id"] == mid.as_str())
                    .count()
                {
                    1 => {}
                    0 => self.findings.lost.push(format!(
                        "after kill {round}: message {mid} of {cid} is gone"
                    )),
                    n => self.findings.duplicated.push(format!(
                        "after kill {round}: message {mid} appears {n} times in {cid}"
                    )),
                }
            }
        }

        let (problems, duplicates) = {
            let mut l = lock(&self.ledger);
            (
                std::mem::take(&mut l.problems),
                std::mem::take(&mut l.duplicates),
            )
        };
        self.findings.other.extend(problems);
        self.findings.duplicated.extend(duplicates);
    }
}

async fn scalar(db: &mut sqlx::SqliteConnection, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// What the webhook check found at the end.
#[derive(Default)]
struct WebhookTally {
    events: usize,
    received: usize,
    redelivered: usize,
    /// Leased by a server that was then killed; retried when the lease lapses.
    waiting_for_lease: i64,
}

impl Harness {
    /// At the end, with a server up: every `action.decided` event is received (at least once,
    /// always with the same `webhook-id`), or still pending in the outbox under the lease of a
    /// server that was killed while sending it; nothing due is left untaken. With `drain`, it
    /// first waits for those leases to lapse (up to [`WEBHOOK_LEASE`] + 15 s), after which every
    /// event must have been received.
    async fn check_webhooks(&mut self, drain: bool) -> WebhookTally {
        use sqlx::Connection;
        let mut tally = WebhookTally::default();
        let patience = if drain {
            WEBHOOK_LEASE + Duration::from_secs(15)
        } else {
            Duration::from_secs(20)
        };
        let deadline = Instant::now() + patience;
        let (mut overdue, mut pending): (i64, Vec<i64>);
        loop {
            let mut db = sqlx::SqliteConnection::connect(&self.url)
                .await
                .expect("open the database file");
            let now_ms = chrono::Utc::now().timestamp_millis();
            overdue = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM outbox WHERE status = 'pending' AND next_attempt_at < ?",
            )
            .bind(now_ms - 1000)
            .fetch_one(&mut db)
            .await
            .expect("read the outbox");
            pending = sqlx::query_scalar("SELECT event_seq FROM outbox WHERE status = 'pending'")
                .fetch_all(&mut db)
                .await
                .expect("read the outbox");
            let _ = db.close().await;
            let done = if drain {
                pending.is_empty()
            } else {
                overdue == 0
            };
            if done || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if overdue != 0 {
            self.findings
                .lost
                .push(format!("{overdue} webhook deliveries due but not taken"));
        }
        if drain && !pending.is_empty() {
            self.findings.lost.push(format!(
                "webhook deliveries still pending after their lease lapsed, for events {pending:?}"
            ));
        }
        let received = received_seqs(&self.received);
        let subscribed: Vec<i64> = self.audit.decided_seqs.clone();
        tally.events = subscribed.len();
        for seq in subscribed {
            match received.get(&seq) {
                Some(ids) => {
                    tally.received += 1;
                    if ids.len() > 1 {
                        tally.redelivered += 1;
                    }
                    if ids.iter().any(|id| id != &ids[0]) {
                        self.findings.duplicated.push(format!(
                            "event {seq} was delivered under several webhook-ids: {ids:?}"
                        ));
                    }
                }
                None if pending.contains(&seq) => tally.waiting_for_lease += 1,
                None => self.findings.lost.push(format!(
                    "webhook for event {seq} neither received nor pending"
                )),
            }
        }
        tally
    }
}

/// The outcome of checking one acknowledged action.
#[derive(Default)]
struct Check {
    lost: Option<String>,
    duplicated: Option<String>,
    other: Option<String>,
}

/// Submit one action with a fresh key and record it like the load does.
async fn submit_one(h: &Harness, base: &str, name: &str) {
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({"name": name, "arguments": {"amount": 1}});
    lock(&h.ledger).sent += 1;
    let answer = post(
        &h.client,
        format!("{base}/v1/actions"),
        &h.tokens.agent,
        Some(&key),
        Some(&body),
    )
    .await;
    lock(&h.ledger).record_submission(key, body, answer);
}

/// Run the load against `base` until stopped; the tasks' handles.
fn start_load(
    h: &Harness,
    base: &str,
    seed: u64,
) -> (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..3 {
        tasks.push(tokio::spawn(submitter(
            h.client.clone(),
            base.to_owned(),
            h.tokens.clone(),
            h.ledger.clone(),
            stop.clone(),
            seed.wrapping_add(i),
        )));
    }
    for (i, (who, token)) in [("ann", h.tokens.ann.clone()), ("bob", h.tokens.bob.clone())]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(reviewer(
            h.client.clone(),
            base.to_owned(),
            who,
            token,
            h.ledger.clone(),
            stop.clone(),
            seed.wrapping_add(10 + i as u64),
        )));
    }
    for i in 0..2 {
        tasks.push(tokio::spawn(talker(
            h.client.clone(),
            base.to_owned(),
            h.tokens.clone(),
            h.ledger.clone(),
            stop.clone(),
            seed.wrapping_add(20 + i),
        )));
    }
    (stop, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_repeated_sigkill() {
    let kills = env_number("LOOPGATE_CRASH_KILLS", 20);
    let seed = env_number(
        "LOOPGATE_CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    println!("crash harness: {kills} kills, LOOPGATE_CRASH_SEED={seed}");
    let run_started = Instant::now();

    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).expect("write the policy");
    let tokens = Tokens {
        agent: create_key(&url, "bot", "agent"),
        ann: create_key(&url, "ann", "reviewer"),
        bob: create_key(&url, "bob", "reviewer"),
        admin: create_key(&url, "root", "admin"),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client");
    let mut h = Harness {
        url: url.clone(),
        log: dir.path().join("serve.log"),
        policy,
        tokens,
        client,
        ledger: Arc::default(),
        audit: AuditSeen::default(),
        findings: Findings::default(),
        tally: Tally::default(),
        rng: StdRng::seed_from_u64(seed),
        checked_actions: 0,
        checked_decisions: 0,
        checked_conversations: 0,
        checked_messages: 0,
        counts_at_kill: None,
        received: Received::default(),
    };
    let hook_url = start_receiver(h.received.clone()).await;

    let mut killed_at = Instant::now();
    let mut webhooks = WebhookTally::default();
    for round in 0..=kills {
        let started = Instant::now();
        let mut serve = Serve::start(&h.url, &h.policy, &h.log, &h.client).await;
        let base = serve.base.clone();
        if round > 0 {
            h.check_timeouts(&base, started, killed_at, round).await;
        }
        h.read_audit(&base, round).await;
        h.compare_counts();
        if round > 0 {
            h.check_up(&base, round, round == kills).await;
        }
        if round == 0 {
            let answer = post(
                &h.client,
                format!("{base}/v1/webhooks"),
                &h.tokens.admin,
                None,
                Some(&json!({"url": hook_url, "secret": WEBHOOK_SECRET, "events": ["action.decided"]})),
            )
            .await;
            assert!(
                matches!(answer, Some((StatusCode::CREATED, _))),
                "register the webhook: {answer:?}"
            );
        }
        if round == kills {
            webhooks = h
                .check_webhooks(env_number("LOOPGATE_CRASH_DRAIN_WEBHOOKS", 0) == 1)
                .await;
            serve.kill();
            break;
        }

        let (stop, tasks) = start_load(&h, &base, seed.wrapping_add(round * 100));
        let window = Duration::from_millis(h.rng.gen_range(300..1200));
        tokio::time::sleep(window).await;
        // One timed action just before the kill, whatever the load did: in the rounds with a
        // long down time below, its deadline falls while nothing runs.
        submit_one(&h, &base, "refund_timeout_reject").await;
        // Stop sending new requests and kill at once: the requests in flight meet the kill.
        stop.store(true, Ordering::Relaxed);
        serve.kill();
        killed_at = Instant::now();
        h.tally.kills += 1;
        for t in tasks {
            if let Err(e) = t.await {
                h.findings.other.push(format!("a load task panicked: {e}"));
            }
        }

        let (actions, conversations, messages) = h.check_down(round + 1).await;
        // Down for a random while; every fifth time longer than the deadline, so that every
        // timed action acknowledged in the last second falls due while nothing runs.
        let down = if round % 5 == 4 {
            TIMEOUT + Duration::from_millis(100)
        } else {
            Duration::from_millis(h.rng.gen_range(0..700))
        };
        tokio::time::sleep(down).await;
        // The counts in the database must match the audit log: compared once the next server
        // is up and its log has been read (no load runs in between).
        h.counts_at_kill = Some((round + 1, actions, conversations, messages));
        drop(serve);
    }

    let elapsed = run_started.elapsed();
    let l = lock(&h.ledger);
    let t = &h.tally;
    let f = &h.findings;
    let rows: Vec<(&str, String)> = vec![
        ("kills survived", format!("{}", t.kills)),
        ("requests sent", format!("{}", l.sent)),
        (
            "requests acknowledged (2xx writes)",
            format!("{}", l.acknowledged),
        ),
        ("  actions", format!("{}", l.actions.len())),
        ("  decisions", format!("{}", l.decisions.len())),
        ("  conversations", format!("{}", l.conversations.len())),
        ("  messages", format!("{}", l.messages.len())),
        (
            "writes checked (incl. re-checks)",
            format!("{}", t.writes_checked),
        ),
        ("idempotent replays", format!("{}", t.replays)),
        (
            "unacknowledged, found committed",
            format!("{}", t.unacked_committed),
        ),
        (
            "unacknowledged, not committed",
            format!("{}", t.unacked_absent),
        ),
        (
            "timeouts checked after restart",
            format!("{}", t.timeouts_checked),
        ),
        (
            "timeouts due while down, fired on start",
            format!("{}", t.timeouts_fired_on_start),
        ),
        ("audit events read", format!("{}", h.audit.events)),
        (
            "webhook events (action.decided)",
            format!("{}", webhooks.events),
        ),
        ("  received at least once", format!("{}", webhooks.received)),
        (
            "  received more than once (same webhook-id)",
            format!("{}", webhooks.redelivered),
        ),
        (
            "  pending under a killed server's lease",
            format!("{}", webhooks.waiting_for_lease),
        ),
        ("lost", format!("{}", f.lost.len())),
        ("duplicated", format!("{}", f.duplicated.len())),
        ("other violations", format!("{}", f.other.len())),
        ("time", format!("{:.1} s", elapsed.as_secs_f64())),
    ];
    println!("\n| crash harness (SQLite, SIGKILL) | |\n|---|---:|");
    for (k, v) in &rows {
        println!("| {k} | {v} |");
    }
    for m in f.lost.iter().chain(&f.duplicated).chain(&f.other).take(30) {
        // The first 400 characters say what and where; the rest is the body that showed it.
        let short: String = m.chars().take(400).collect();
        println!("  ! {short}");
    }
    assert!(
        f.is_clean(),
        "lost {}, duplicated {}, other {}: see the lines marked ! above (server log:\n{})",
        f.lost.len(),
        f.duplicated.len(),
        f.other.len(),
        log_tail(&h.log)
    );
    assert_eq!(t.kills, kills);
    if kills >= 5 {
        assert!(
            t.timeouts_fired_on_start > 0,
            "no timeout fell due while the server was down: the run did not test that"
        );
    }
    assert!(l.acknowledged > 0, "the load acknowledged nothing");
}
