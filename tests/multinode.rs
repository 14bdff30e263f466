//! Several Loopgate nodes on one PostgreSQL database (issue 6, "Done means"). Each test starts two
//! nodes in this process, A and B, each with its own store (its own writer connection, read pool
//! and LISTEN connection) and its own HTTP server on 127.0.0.1:0, over one fresh database; keys
//! made through one node's store work on both. Then it checks what must hold whichever node a
//! client talks to: long-polls and SSE streams see decisions taken on the other node, `next`
//! hands each review out once, timeouts and webhook deliveries fire once, the audit chain stays
//! one gap-free sequence, and a database outage gives clean 503s and heals by itself.
//!
//! These tests always run on PostgreSQL (whatever `LOOPGATE_TEST_DATABASE` says): the server at
//! `LOOPGATE_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/postgres`). If it cannot
//! be reached they fail, they do not skip. Run with `--nocapture` to see latencies and counts;
//! `TEST_LOG=1` shows the servers' logs.

use futures::future::join_all;
use loopgate_domain::auth::Role;
use loopgate_server::Config;
use loopgate_store::{Store, StoreOptions};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Barrier};
use tokio::task::JoinHandle;

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// No request of these tests may take longer (the longest long-poll asks for 30 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);

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

// ---- the database ----

/// The PostgreSQL server's maintenance URL (its `postgres` database).
fn postgres_server() -> String {
    std::env::var("LOOPGATE_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES.to_owned())
}

/// The URL of database `name` on the same server as `server` (keeping any `?options`).
fn database_url(server: &str, name: &str) -> String {
    let (path, query) = match server.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (server, None),
    };
    let base = match path.find("://") {
        Some(s) => match path[s + 3..].find('/') {
            Some(slash) => &path[..s + 3 + slash],
            None => path,
        },
        None => path,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

async fn connect_admin(server: &str) -> sqlx::PgConnection {
    match tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(server)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!(
            "the multi-node tests need PostgreSQL, and it is unreachable at {server}: {e} \
             (start it, or point LOOPGATE_TEST_POSTGRES at one)"
        ),
        Err(_) => panic!(
            "the multi-node tests need PostgreSQL, and {server} did not answer within 10 s \
             (start it, or point LOOPGATE_TEST_POSTGRES at one)"
        ),
    }
}

/// A fresh database `loopgate_test_<uuid>`, dropped (WITH (FORCE)) when this guard goes.
struct PgDb {
    server: String,
    name: String,
    url: String,
}

impl PgDb {
    async fn fresh() -> PgDb {
        let server = postgres_server();
        let name = format!("loopgate_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect_admin(&server).await;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {name} on {server}: {e}"));
        let _ = admin.close().await;
        let url = database_url(&server, &name);
        PgDb { server, name, url }
    }

    /// Terminate every connection to this database (as an operator or a failover would), from a
    /// separate connection to the maintenance database. Returns how many were terminated.
    async fn terminate_connections(&self) -> i64 {
        let mut admin = connect_admin(&self.server).await;
        let killed: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_all(&mut admin)
        .await
        .expect("pg_terminate_backend");
        let _ = admin.close().await;
        killed.iter().filter(|k| k.0).count() as i64
    }

    /// Rows of a query run directly on the test database.
    async fn query_strings(&self, sql: &str) -> Vec<(String, i64)> {
        let mut c = sqlx::PgConnection::connect(&self.url)
            .await
            .expect("connect to the test database");
        let rows: Vec<(String, i64)> = sqlx::query_as(sql)
            .fetch_all(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
        let _ = c.close().await;
        rows
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // On its own thread and runtime: drop runs inside the test's runtime.
        let (server, name) = (self.server.clone(), self.name.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut c = sqlx::PgConnection::connect(&server).await.ok()?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut c)
                    .await
                    .ok()?;
                Some(())
            })
        })
        .join();
        if !matches!(done, Ok(Some(()))) {
            eprintln!("warning: could not drop the test database {}", self.name);
        }
    }
}

// ---- nodes ----

/// One Loopgate node: its own store over the shared database, its own server.
struct Node {
    name: &'static str,
    base: String,
    store: Arc<dyn Store>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Node {
    async fn start(name: &'static str, url: &str) -> Node {
        // A small read pool: two nodes per test, tests in parallel, one PostgreSQL server.
        let options = StoreOptions {
            pool_size: 4,
            ..StoreOptions::default()
        };
        let store = loopgate_store::open_with(url, true, &options)
            .await
            .unwrap_or_else(|e| panic!("node {name}: cannot open the store on {url}: {e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr: SocketAddr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(loopgate_server::run(
            listener,
            store.clone(),
            // No per-key rate limit: the tests push a thousand requests through one key at
            // once, and how many a limit refused would depend on the machine's speed.
            Config {
                rate_limit: None,
                ..Config::default()
            },
            async {
                let _ = rx.await;
            },
        ));
        Node {
            name,
            base: format!("http://{addr}"),
            store,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Two nodes over one fresh database, and the `default` workspace's keys: an agent `bot`,
/// reviewers `ann` and `bob`, an admin `root` (made through node A's store).
struct Cluster {
    a: Node,
    b: Node,
    client: reqwest::Client,
    agent: String,
    ann: String,
    bob: String,
    admin: String,
    /// Last, so it is dropped after the nodes.
    db: PgDb,
}

impl Cluster {
    async fn start() -> Cluster {
        init_logging();
        let db = PgDb::fresh().await;
        // Both at once, as nodes behind a load balancer start: the migrations must not collide.
        let (a, b) = tokio::join!(Node::start("A", &db.url), Node::start("B", &db.url));
        let key = |name: &'static str, role: Role| {
            let store = a.store.clone();
            async move {
                store
                    .create_key("default", name, role)
                    .await
                    .unwrap_or_else(|e| panic!("create key {name}: {e}"))
                    .token
            }
        };
        let agent = key("bot", Role::Agent).await;
        let ann = key("ann", Role::Reviewer).await;
        let bob = key("bob", Role::Reviewer).await;
        let admin = key("root", Role::Admin).await;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("an HTTP client");
        Cluster {
            a,
            b,
            client,
            agent,
            ann,
            bob,
            admin,
            db,
        }
    }

    /// Node A for even `i`, node B for odd.
    fn node(&self, i: usize) -> &Node {
        if i.is_multiple_of(2) {
            &self.a
        } else {
            &self.b
        }
    }

    fn request(&self, node: &Node, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{}", node.base, path))
            .bearer_auth(token)
    }

    fn get(&self, node: &Node, path: &str, token: &str) -> RequestBuilder {
        self.request(node, Method::GET, path, token)
    }

    fn post(&self, node: &Node, path: &str, token: &str) -> RequestBuilder {
        self.request(node, Method::POST, path, token)
    }

    /// Send and decode: the status and the JSON body (`Value::Null` when empty or not JSON).
    async fn send(&self, req: RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("the request reaches the node");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn put_policy(&self, node: &Node, toml: &str) {
        let (s, body) = self
            .send(
                self.request(node, Method::PUT, "/v1/policy", &self.admin)
                    .body(toml.to_owned()),
            )
            .await;
        assert_eq!(
            s,
            StatusCode::OK,
            "policy rejected by node {}: {body}",
            node.name
        );
    }

    async fn submit(&self, node: &Node, body: Value) -> (StatusCode, Value) {
        self.send(self.post(node, "/v1/actions", &self.agent).json(&body))
            .await
    }

    /// Submit a refund the policy holds for review; its action and review ids.
    async fn held(&self, node: &Node, amount: i64) -> (String, String) {
        let (s, a) = self
            .submit(
                node,
                json!({"name": "issue_refund", "arguments": {"amount": amount}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "node {}: {a}", node.name);
        assert_eq!(a["status"], "pending", "{a}");
        (
            a["id"].as_str().expect("an action id").to_owned(),
            a["review_id"].as_str().expect("a review id").to_owned(),
        )
    }

    async fn decide(
        &self,
        node: &Node,
        token: &str,
        review: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        self.send(
            self.post(node, &format!("/v1/reviews/{review}/decision"), token)
                .json(&body),
        )
        .await
    }

    async fn action(&self, node: &Node, id: &str) -> (StatusCode, Value) {
        self.send(self.get(node, &format!("/v1/actions/{id}"), &self.agent))
            .await
    }

    /// The whole audit log, read through `node`.
    async fn events(&self, node: &Node) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0i64;
        loop {
            let (s, page) = self
                .send(self.get(
                    node,
                    &format!("/v1/audit?after={after}&limit=1000"),
                    &self.admin,
                ))
                .await;
            assert_eq!(s, StatusCode::OK, "{page}");
            out.extend(page["events"].as_array().expect("events").iter().cloned());
            match page["next_after"].as_i64() {
                Some(n) => after = n,
                None => return out,
            }
        }
    }

    /// The newest seq of the audit log (0 when empty).
    async fn head(&self, node: &Node) -> i64 {
        self.events(node)
            .await
            .last()
            .and_then(|e| e["seq"].as_i64())
            .unwrap_or(0)
    }

    async fn stop(&mut self) {
        tokio::join!(self.a.stop(), self.b.stop());
    }
}

fn seq(e: &Value) -> i64 {
    e["seq"].as_i64().expect("an event seq")
}

/// Assert the events are exactly seqs `from..=to`, in order: no gap, no duplicate.
fn assert_consecutive(events: &[Value], from: i64, to: i64, what: &str) {
    let got: Vec<i64> = events.iter().map(seq).collect();
    let want: Vec<i64> = (from..=to).collect();
    assert_eq!(got, want, "{what}: expected seqs {from}..={to} in order");
}

/// The audit log is one chain: seqs 1..=N, each event's `prev_hash` the previous `hash`.
fn assert_chain(events: &[Value]) {
    assert_consecutive(events, 1, events.len() as i64, "the audit log");
    for pair in events.windows(2) {
        assert_eq!(
            pair[1]["prev_hash"], pair[0]["hash"],
            "seq {} does not link to seq {}",
            pair[1]["seq"], pair[0]["seq"]
        );
    }
}

/// Poll `check` until it returns `Some`, or fail after `within` naming `what`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still not true after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Refunds wait for a human (in `finance`); everything else runs.
const REVIEW_POLICY: &str = r#"
[[rule]]
name = "refunds need review"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "review"
queue = "finance"

[[rule]]
name = "everything else runs"
when = "true"
then = "approve"
"#;

// ---- SSE ----

/// A hand-rolled Server-Sent Events reader over a `reqwest` response.
struct SseStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl SseStream {
    async fn open(node: &Node, token: &str, last_event_id: Option<i64>) -> Self {
        // No overall timeout on a stream: the reads below carry their own deadlines.
        let client = reqwest::Client::new();
        let mut req = client
            .get(format!("{}/v1/events", node.base))
            .bearer_auth(token)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.expect("the stream opens");
        assert_eq!(resp.status(), StatusCode::OK, "node {}", node.name);
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
        SseStream {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next event (keep-alives skipped), checked against its frame: `id:` is its seq and
    /// `event:` its type. `None` when nothing arrives by `deadline` or the stream ended.
    async fn next_until(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            if let Some(block) = self.split_block() {
                let (mut id, mut event, mut data) = (None, None, None::<String>);
                for line in block.lines() {
                    if line.starts_with(':') {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                    match field {
                        "id" => id = Some(value),
                        "event" => event = Some(value),
                        "data" => {
                            data = Some(match data.take() {
                                Some(d) => format!("{d}\n{value}"),
                                None => value,
                            })
                        }
                        _ => {}
                    }
                }
                let Some(data) = data else { continue };
                let e: Value = serde_json::from_str(&data).expect("data: is JSON");
                assert_eq!(id, Some(seq(&e).to_string()), "id: is the seq: {e}");
                assert_eq!(event.as_deref(), e["type"].as_str(), "event: is the type");
                return Some(e);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.extend_from_slice(&bytes),
                _ => return None,
            }
        }
    }

    fn split_block(&mut self) -> Option<String> {
        if self.buf.contains(&b'\r') {
            let text = String::from_utf8_lossy(&self.buf).replace("\r\n", "\n");
            self.buf = text.into_bytes();
        }
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let block: Vec<u8> = self.buf.drain(..end + 2).collect();
        Some(String::from_utf8(block).expect("UTF-8 frames"))
    }

    /// Events until one with seq `>= last`; fails if the stream stalls for `within`.
    async fn through(&mut self, last: i64, within: Duration, what: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        while out.last().map(seq).unwrap_or(-1) < last {
            match self.next_until(Instant::now() + within).await {
                Some(e) => out.push(e),
                None => panic!(
                    "{what}: the stream stalled before seq {last}; got {:?}",
                    out.iter().map(seq).collect::<Vec<_>>()
                ),
            }
        }
        out
    }
}

// ---- 1. long-polls ----

/// Hold an action through `waiter`, long-poll it there, decide it through `decider`: the
/// long-poll must return the final status at once. Returns how long after the decision was sent
/// the long-poll returned.
async fn long_poll_across_nodes(
    c: &Cluster,
    waiter: &Node,
    decider: &Node,
    verdict: &str,
) -> Duration {
    let (id, rid) = c.held(waiter, 100).await;
    let poll = {
        let req = c.get(waiter, &format!("/v1/actions/{id}?wait=30"), &c.agent);
        tokio::spawn(async move {
            let resp = req.send().await.expect("the long-poll reaches its node");
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body, Instant::now())
        })
    };
    // Let the long-poll register (it must still be waiting: nothing is decided yet).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the long-poll returned before any decision"
    );

    let decided_at = Instant::now();
    let (s, d) = c
        .decide(decider, &c.ann, &rid, json!({"verdict": verdict}))
        .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the decision on node {}: {d}",
        decider.name
    );
    let acked = decided_at.elapsed();

    let (status, body, returned_at) = tokio::time::timeout(Duration::from_secs(35), poll)
        .await
        .expect("the long-poll returned")
        .expect("the long-poll task");
    let latency = returned_at.saturating_duration_since(decided_at);
    println!(
        "decision on {} acknowledged after {acked:?}; the long-poll on {} returned {latency:?} \
         after the decision was sent",
        decider.name, waiter.name
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let want = if verdict == "approve" {
        "approved"
    } else {
        "rejected"
    };
    assert_eq!(
        body["status"], want,
        "the long-poll returns the final status: {body}"
    );
    assert_eq!(body["decision"]["verdict"], verdict, "{body}");
    assert!(
        latency < Duration::from_secs(1),
        "the long-poll on node {} was not woken promptly by the decision on node {}: {latency:?}",
        waiter.name,
        decider.name
    );
    latency
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_node_a_wakes_a_long_poll_on_node_b() {
    let mut c = Cluster::start().await;
    c.put_policy(&c.b, REVIEW_POLICY).await;
    let mut latencies = Vec::new();
    for verdict in ["approve", "reject", "approve"] {
        latencies.push(long_poll_across_nodes(&c, &c.b, &c.a, verdict).await);
    }
    // And the other way round.
    latencies.push(long_poll_across_nodes(&c, &c.a, &c.b, "approve").await);
    println!("cross-node long-poll wake-up latencies: {latencies:?}");
    c.stop().await;
}

// ---- 2. SSE ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_on_node_b_sees_events_written_on_node_a_and_resumes_on_a() {
    let mut c = Cluster::start().await;
    c.put_policy(&c.a, REVIEW_POLICY).await;
    let h0 = c.head(&c.a).await;

    let mut on_b = SseStream::open(&c.b, &c.ann, None).await;

    // One action on A: how long until B's stream shows it?
    let sent = Instant::now();
    let (first_action, first_review) = c.held(&c.a, 10).await;
    let first = on_b
        .next_until(Instant::now() + Duration::from_secs(5))
        .await
        .expect("node B's stream shows the action created on node A");
    println!(
        "SSE on B: first event written on A arrived after {:?}",
        sent.elapsed()
    );
    assert_eq!(seq(&first), h0 + 1, "{first}");
    assert_eq!(first["type"], "action.created", "{first}");
    assert_eq!(first["subject"], format!("action:{first_action}"));

    // More actions and decisions on A.
    let mut reviews = vec![first_review];
    for i in 1..10 {
        reviews.push(c.held(&c.a, 10 + i).await.1);
    }
    for (i, rid) in reviews.iter().take(5).enumerate() {
        let token = if i % 2 == 0 { &c.ann } else { &c.bob };
        let (s, d) = c
            .decide(&c.a, token, rid, json!({"verdict": "approve"}))
            .await;
        assert_eq!(s, StatusCode::OK, "{d}");
    }
    let h1 = c.head(&c.a).await;
    let mut seen = vec![first];
    seen.extend(
        on_b.through(h1, Duration::from_secs(5), "node B's stream")
            .await,
    );
    assert_consecutive(&seen, h0 + 1, h1, "node B's stream of node A's writes");
    let log = c.events(&c.a).await;
    for e in &seen {
        assert_eq!(
            e,
            &log[(seq(e) - 1) as usize],
            "the streamed event is the logged one"
        );
    }
    let types: BTreeSet<&str> = seen.iter().filter_map(|e| e["type"].as_str()).collect();
    for t in [
        "action.created",
        "review.created",
        "review.decided",
        "action.decided",
    ] {
        assert!(types.contains(t), "no {t} on node B's stream: {types:?}");
    }
    println!(
        "SSE on B: {} events of A, seqs {}..={h1}",
        seen.len(),
        h0 + 1
    );
    drop(on_b);

    // While nobody listens, A writes more; resuming on A with Last-Event-ID gets the rest.
    for (i, rid) in reviews.iter().enumerate().skip(5) {
        let token = if i % 2 == 0 { &c.ann } else { &c.bob };
        let (s, d) = c
            .decide(&c.a, token, rid, json!({"verdict": "reject"}))
            .await;
        assert_eq!(s, StatusCode::OK, "{d}");
    }
    let h2 = c.head(&c.a).await;
    assert!(h2 > h1);
    let mut on_a = SseStream::open(&c.a, &c.ann, Some(h1)).await;
    let resumed = on_a
        .through(h2, Duration::from_secs(5), "node A's resumed stream")
        .await;
    assert_consecutive(&resumed, h1 + 1, h2, "the resume on node A");

    // Then live, with both nodes writing at once: still in seq order with no gap.
    let writes = (0..20).map(|i| {
        let c = &c;
        async move { c.held(c.node(i), 1000 + i as i64).await }
    });
    join_all(writes).await;
    let h3 = c.head(&c.b).await;
    let live = on_a
        .through(h3, Duration::from_secs(5), "node A's live stream")
        .await;
    assert_consecutive(&live, h2 + 1, h3, "node A's stream of writes on both nodes");
    println!(
        "SSE resumed on A: {} missed events, then {} live ones from both nodes",
        resumed.len(),
        live.len()
    );
    drop(on_a);
    c.stop().await;
}

// ---- 3. next ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_next_calls_on_both_nodes_hand_out_each_review_once() {
    const REVIEWS: usize = 200;
    const CALLS: usize = 1000;
    let c = Arc::new(Cluster::start().await);
    c.put_policy(&c.a, REVIEW_POLICY).await;

    // 200 pending reviews, submitted through both nodes.
    let mut pending: BTreeSet<String> = BTreeSet::new();
    for chunk in (0..REVIEWS).collect::<Vec<_>>().chunks(20) {
        let batch = chunk.iter().map(|&i| {
            let c = c.clone();
            async move { c.held(c.node(i), i as i64).await.1 }
        });
        pending.extend(join_all(batch).await);
    }
    assert_eq!(pending.len(), REVIEWS);

    // Five reviewers; 1,000 calls released together, alternating nodes.
    let mut reviewers = vec![
        ("ann".to_owned(), c.ann.clone()),
        ("bob".to_owned(), c.bob.clone()),
    ];
    for name in ["cat", "dan", "eve"] {
        let token =
            c.b.store
                .create_key("default", name, Role::Reviewer)
                .await
                .expect("a reviewer key")
                .token;
        reviewers.push((name.to_owned(), token));
    }
    let reviewers = Arc::new(reviewers);
    let barrier = Arc::new(Barrier::new(CALLS));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CALLS)
        .map(|i| {
            let (c, barrier, reviewers) = (c.clone(), barrier.clone(), reviewers.clone());
            tokio::spawn(async move {
                let (who, token) = &reviewers[i % reviewers.len()];
                let req = c.post(c.node(i), "/v1/reviews/next", token);
                barrier.wait().await;
                let (s, r) = c.send(req).await;
                (i, who.clone(), s, r)
            })
        })
        .collect();
    let results: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("a next task"))
        .collect();
    let took = started.elapsed();

    let mut handed: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    let mut by_node = [0usize; 2];
    let mut empty = 0;
    for (i, who, s, r) in &results {
        match *s {
            StatusCode::OK => {
                let id = r["id"].as_str().expect("a review id").to_owned();
                assert_eq!(r["claimed_by"], who.as_str(), "{r}");
                assert_eq!(r["status"], "claimed", "{r}");
                handed.entry(id).or_default().push((*i, who.clone()));
                by_node[i % 2] += 1;
            }
            StatusCode::NO_CONTENT => empty += 1,
            other => panic!("call {i} ({who}) got {other}: {r}"),
        }
    }
    let ok: usize = handed.values().map(Vec::len).sum();
    println!(
        "{CALLS} concurrent next calls in {took:?}: {ok} x 200 (A {}, B {}), {empty} x 204, \
         {} distinct reviews",
        by_node[0],
        by_node[1],
        handed.len()
    );
    let twice: Vec<_> = handed.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "reviews handed out more than once: {twice:?}"
    );
    assert_eq!(ok, REVIEWS, "exactly one hand-out per pending review");
    assert_eq!(
        empty,
        CALLS - REVIEWS,
        "the rest find the queue empty (204)"
    );
    let handed_ids: BTreeSet<String> = handed.keys().cloned().collect();
    assert_eq!(
        handed_ids, pending,
        "the handed-out reviews are the pending ones"
    );

    // The log agrees: one review.claimed per review.
    let events = c.events(&c.b).await;
    let mut claimed: HashMap<&str, usize> = HashMap::new();
    for e in events.iter().filter(|e| e["type"] == "review.claimed") {
        *claimed
            .entry(e["subject"].as_str().unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(claimed.len(), REVIEWS, "review.claimed subjects");
    assert!(
        claimed.values().all(|n| *n == 1),
        "a review was claimed twice in the log"
    );
    assert_chain(&events);
}

// ---- 4. timeouts ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_fire_once_across_nodes() {
    const N: usize = 30;
    let mut c = Cluster::start().await;
    c.put_policy(
        &c.a,
        r#"
[[rule]]
name = "refunds wait a second for a human"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "review"
timeout = "1s"
on_timeout = "reject"
"#,
    )
    .await;
    let submitted = Instant::now();
    let held = join_all((0..N).map(|i| {
        let c = &c;
        async move { c.held(c.node(i), i as i64).await }
    }))
    .await;

    // Both nodes sweep every 500 ms; every action expires.
    for (i, (id, _)) in held.iter().enumerate() {
        let (c, node) = (&c, c.node(i + 1));
        eventually(
            Duration::from_secs(15),
            &format!("action {id} expires"),
            move || async move {
                let (s, a) = c.action(node, id).await;
                assert_eq!(s, StatusCode::OK, "{a}");
                (a["status"] != "pending").then_some(a)
            },
        )
        .await;
    }
    println!(
        "{N} timeouts fired within {:?} of submitting",
        submitted.elapsed()
    );
    // A few more sweeps of both nodes: nothing fires twice, however late.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    for (i, (id, _)) in held.iter().enumerate() {
        let (_, a) = c.action(c.node(i), id).await;
        assert_eq!(a["status"], "expired", "{a}");
        assert_eq!(a["decision"]["verdict"], "timeout", "{a}");
    }
    let events = c.events(&c.b).await;
    assert_chain(&events);
    let count = |kind: &str, subject: &str| {
        events
            .iter()
            .filter(|e| e["type"] == kind && e["subject"] == subject)
            .count()
    };
    for (id, rid) in &held {
        assert_eq!(
            count("review.expired", &format!("review:{rid}")),
            1,
            "review {rid} expired once"
        );
        assert_eq!(
            count("action.decided", &format!("action:{id}")),
            1,
            "action {id} decided once"
        );
    }
    let expired = events
        .iter()
        .filter(|e| e["type"] == "review.expired")
        .count();
    println!("review.expired events: {expired} for {N} reviews");
    assert_eq!(expired, N);
    c.stop().await;
}

// ---- 5. the audit chain under concurrent writers ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_chain_stays_one_verifiable_sequence_under_writers_on_both_nodes() {
    const SUBMITTERS: usize = 8;
    const PER_SUBMITTER: usize = 25;
    let c = Arc::new(Cluster::start().await);
    c.put_policy(
        &c.a,
        r#"
[[rule]]
name = "large refunds need review"
applies_to = "action"
when = 'action.name == "issue_refund" && action.arguments.amount > 100'
then = "review"

[[rule]]
name = "everything else runs"
when = "true"
then = "approve"
"#,
    )
    .await;

    let started = Instant::now();
    let submitting_done = Arc::new(AtomicBool::new(false));
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for k in 0..PER_SUBMITTER {
                    let i = t * PER_SUBMITTER + k;
                    let amount = (i * 37 % 300) as i64;
                    let (s, a) = c
                        .submit(
                            c.node(i),
                            json!({"name": "issue_refund", "arguments": {"amount": amount, "n": i}}),
                        )
                        .await;
                    assert_eq!(s, StatusCode::CREATED, "{a}");
                    statuses.push(a["status"].as_str().unwrap_or_default().to_owned());
                }
                statuses
            })
        })
        .collect();
    // Reviewers on both nodes, concurrently: `next` on one node, the decision on the other.
    let deciders: Vec<_> = (0..4)
        .map(|t| {
            let (c, done) = (c.clone(), submitting_done.clone());
            tokio::spawn(async move {
                let token = if t % 2 == 0 {
                    c.ann.clone()
                } else {
                    c.bob.clone()
                };
                let (mut decided, mut requests) = (0usize, 0usize);
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let (s, r) = c.send(c.post(c.node(t), "/v1/reviews/next", &token)).await;
                    requests += 1;
                    if s == StatusCode::NO_CONTENT {
                        if finished {
                            return (decided, requests);
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    assert_eq!(s, StatusCode::OK, "{r}");
                    let rid = r["id"].as_str().expect("a review id").to_owned();
                    let verdict = if decided % 3 == 2 {
                        "reject"
                    } else {
                        "approve"
                    };
                    let (s, d) = c
                        .decide(c.node(t + 1), &token, &rid, json!({"verdict": verdict}))
                        .await;
                    requests += 1;
                    assert_eq!(s, StatusCode::OK, "{d}");
                    decided += 1;
                }
            })
        })
        .collect();
    let mut held = 0;
    for s in join_all(submitters).await {
        held += s
            .expect("a submitter")
            .iter()
            .filter(|s| *s == "pending")
            .count();
    }
    submitting_done.store(true, Ordering::SeqCst);
    let (mut decided, mut requests) = (0, SUBMITTERS * PER_SUBMITTER);
    for d in join_all(deciders).await {
        let (n, r) = d.expect("a decider");
        decided += n;
        requests += r;
    }
    println!(
        "{requests} requests over both nodes in {:?}: {} submissions ({held} held), {decided} decisions",
        started.elapsed(),
        SUBMITTERS * PER_SUBMITTER
    );
    assert_eq!(decided, held, "every held action was decided once");

    let events = c.events(&c.a).await;
    assert_chain(&events);
    let n = events.len();
    for node in [&c.a, &c.b] {
        let (s, v) = c.send(c.get(node, "/v1/audit/verify", &c.admin)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            v["ok"], true,
            "node {}: the audit chain is broken: {v}",
            node.name
        );
        assert_eq!(v["events"], n as u64, "node {}: {v}", node.name);
    }

    let url = c.db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_loopgate"))
            .args(["--database", &url, "audit", "verify"])
            .env_remove("LOOPGATE_DATABASE_URL")
            .env_remove("RUST_LOG")
            .output()
            .expect("run loopgate audit verify")
    })
    .await
    .expect("the CLI task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("loopgate audit verify: {}", stdout.trim());
    assert!(
        out.status.success(),
        "audit verify failed: {stdout}{stderr}"
    );
    assert_eq!(stdout.trim(), format!("ok {n} events"), "{stderr}");
}

// ---- 6. webhooks ----

/// What the receiver got: `webhook-id` and the event's seq, per request.
type Hits = Arc<Mutex<Vec<(String, i64)>>>;

async fn start_receiver() -> (String, Hits, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let addr = listener.local_addr().expect("receiver address");
    let hits: Hits = Arc::new(Mutex::new(Vec::new()));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
        let hits = h.clone();
        async move {
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("<none>")
                .to_owned();
            let seq = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|e| e["seq"].as_i64())
                .unwrap_or(-1);
            hits.lock().unwrap().push((id, seq));
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    (format!("http://{addr}/hook"), hits, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_fire_once_across_nodes() {
    let mut c = Cluster::start().await;
    c.put_policy(&c.a, REVIEW_POLICY).await;
    let (url, hits, stop_receiver) = start_receiver().await;
    let (s, w) = c
        .send(c.post(&c.a, "/v1/webhooks", &c.admin).json(&json!({
            "url": url,
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3ZzBmNlM+Zw=",
            "events": ["action.*", "review.*"],
        })))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{w}");
    let hook = w["id"].as_str().expect("a webhook id").to_owned();

    // Events on both nodes: held actions, actions that run, decisions.
    let started = Instant::now();
    let held = join_all((0..20).map(|i| {
        let c = &c;
        async move { c.held(c.node(i), i as i64).await.1 }
    }))
    .await;
    join_all((0..10).map(|i| {
        let c = &c;
        async move {
            let (s, a) = c
                .submit(
                    c.node(i),
                    json!({"name": "send_email", "arguments": {"n": i}}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{a}");
            assert_eq!(a["status"], "approved", "{a}");
        }
    }))
    .await;
    join_all(held.iter().enumerate().map(|(i, rid)| {
        let c = &c;
        async move {
            let (s, d) = c
                .decide(c.node(i + 1), &c.bob, rid, json!({"verdict": "approve"}))
                .await;
            assert_eq!(s, StatusCode::OK, "{d}");
        }
    }))
    .await;

    let wanted: BTreeSet<i64> = c
        .events(&c.b)
        .await
        .iter()
        .filter(|e| {
            let t = e["type"].as_str().unwrap_or_default();
            t.starts_with("action.") || t.starts_with("review.")
        })
        .map(seq)
        .collect();
    assert!(wanted.len() >= 20 * 4 + 10, "{} events", wanted.len());
    let delivered_in = eventually(Duration::from_secs(20), "every event is delivered", || {
        let hits = hits.clone();
        let wanted = &wanted;
        async move {
            let got: BTreeSet<i64> = hits.lock().unwrap().iter().map(|h| h.1).collect();
            got.is_superset(wanted).then(|| started.elapsed())
        }
    })
    .await;
    // The horizon: a while longer, for any duplicate to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let hits = hits.lock().unwrap().clone();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    let mut by_seq: BTreeMap<i64, usize> = BTreeMap::new();
    for (id, s) in &hits {
        *by_id.entry(id.as_str()).or_default() += 1;
        *by_seq.entry(*s).or_default() += 1;
    }
    println!(
        "{} events delivered within {delivered_in:?}; {} requests, {} distinct webhook-ids",
        wanted.len(),
        hits.len(),
        by_id.len()
    );
    let dup_ids: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dup_ids.is_empty(),
        "webhook-ids delivered more than once: {dup_ids:?}"
    );
    let dup_seqs: Vec<_> = by_seq.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dup_seqs.is_empty(),
        "events delivered more than once: {dup_seqs:?}"
    );
    let got: BTreeSet<i64> = by_seq.keys().copied().collect();
    assert_eq!(got, wanted, "exactly the subscribed events are delivered");

    // The delivery log agrees: each delivered once, on the first attempt.
    let (s, body) = c
        .send(c.get(&c.b, &format!("/v1/webhooks/{hook}/deliveries"), &c.admin))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    for d in body["deliveries"].as_array().expect("deliveries") {
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
    }
    let _ = stop_receiver.send(());
    c.stop().await;
}

// ---- 7. a database outage ----

/// One request during the outage test.
#[derive(Clone, Debug)]
struct Outcome {
    /// `submit`, `read` or `probe`.
    kind: &'static str,
    node: &'static str,
    /// What a submission sent as its `arguments`.
    arguments: Value,
    status: StatusCode,
    body: Value,
    took: Duration,
}

impl Outcome {
    fn clean(&self) -> bool {
        let ok = match self.kind {
            "read" => StatusCode::OK,
            _ => StatusCode::CREATED,
        };
        self.status == ok || self.status == StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Send one request of the outage test and record how it went; a transport error or a hang
/// (over 15 s) fails the test.
async fn record(kind: &'static str, node: &Node, arguments: Value, req: RequestBuilder) -> Outcome {
    let t0 = Instant::now();
    let resp = req
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .unwrap_or_else(|e| panic!("a {kind} on node {} failed or hung: {e}", node.name));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(json!({ "raw": text }));
    Outcome {
        kind,
        node: node.name,
        arguments,
        status,
        body,
        took: t0.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_gives_clean_503s_and_recovers_on_both_nodes() {
    let c = Arc::new(Cluster::start().await);
    c.put_policy(&c.a, REVIEW_POLICY).await;
    let (s, first) = c
        .submit(&c.a, json!({"name": "send_email", "arguments": {"n": -1}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let first = first["id"].as_str().expect("an id").to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(Vec::new()));
    // Three submitters on node A and one on node B, each in a loop; a reader on each node.
    let traffic: Vec<_> = (0..6)
        .map(|t| {
            let (c, stop, outcomes) = (c.clone(), stop.clone(), outcomes.clone());
            let first = first.clone();
            tokio::spawn(async move {
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    let node = if t == 3 || t == 5 { &c.b } else { &c.a };
                    let o = if t < 4 {
                        let arguments = json!({"n": t * 1_000_000 + k});
                        let req = c
                            .post(node, "/v1/actions", &c.agent)
                            .json(&json!({"name": "send_email", "arguments": arguments.clone()}));
                        record("submit", node, arguments, req).await
                    } else {
                        let req = c.get(node, &format!("/v1/actions/{first}"), &c.agent);
                        record("read", node, Value::Null, req).await
                    };
                    k += 1;
                    let failed = o.status.is_server_error();
                    outcomes.lock().unwrap().push(o);
                    if failed {
                        // A client backing off as Retry-After asks, a little faster.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    let submitted = |o: &Mutex<Vec<Outcome>>| {
        o.lock()
            .unwrap()
            .iter()
            .filter(|x| x.status == StatusCode::CREATED)
            .count()
    };
    // Traffic is flowing before the outage.
    eventually(Duration::from_secs(10), "submissions flow", || {
        let o = outcomes.clone();
        async move { (submitted(&o) >= 40).then_some(()) }
    })
    .await;

    // The outage: every connection of both nodes is terminated, twice, 300 ms apart.
    let before = outcomes.lock().unwrap().len();
    let killed_at = Instant::now();
    let first_kill = c.db.terminate_connections().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second_kill = c.db.terminate_connections().await;
    println!("terminated {first_kill} then {second_kill} connections of the test database");
    assert!(
        first_kill >= 4,
        "both nodes' writers and listeners were connected: {first_kill}"
    );

    // Submissions succeed again on both nodes, by themselves.
    let recovered = eventually(
        Duration::from_secs(10),
        "submissions succeed again on both nodes",
        || {
            let (c, outcomes) = (c.clone(), outcomes.clone());
            async move {
                let mut ok = true;
                for node in [&c.a, &c.b] {
                    let arguments = json!({"probe": uuid::Uuid::new_v4()});
                    let req = c
                        .post(node, "/v1/actions", &c.agent)
                        .json(&json!({"name": "send_email", "arguments": arguments.clone()}));
                    let o = record("probe", node, arguments, req).await;
                    ok &= o.status == StatusCode::CREATED;
                    outcomes.lock().unwrap().push(o);
                }
                ok.then(|| killed_at.elapsed())
            }
        },
    )
    .await;
    // Keep the traffic going a little after the recovery, then stop.
    let after = outcomes.lock().unwrap().len();
    eventually(
        Duration::from_secs(10),
        "traffic continues after the recovery",
        || {
            let o = outcomes.clone();
            async move { (o.lock().unwrap().len() >= after + 60).then_some(()) }
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for t in join_all(traffic).await {
        t.expect("a traffic task");
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let mut tally: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    for o in &outcomes {
        *tally.entry((o.kind, o.status.as_u16())).or_default() += 1;
    }
    let slowest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    println!(
        "{} requests ({} from the outage on): {tally:?}; slowest {slowest:?}; both nodes \
         accepted writes again {recovered:?} after the first kill",
        outcomes.len(),
        outcomes.len() - before
    );
    let unclean: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.clean())
        .map(|o| format!("{} on node {}: {} {}", o.kind, o.node, o.status, o.body))
        .collect();
    for o in outcomes
        .iter()
        .filter(|o| o.status == StatusCode::SERVICE_UNAVAILABLE)
    {
        assert_eq!(o.body["error"]["code"], "unavailable", "{o:?}");
        assert!(o.body["error"]["message"].is_string(), "{o:?}");
    }

    // Every acknowledged action is there, read through either node; none was written twice.
    let acked: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.status == StatusCode::CREATED)
        .collect();
    let ids: HashSet<&str> = acked
        .iter()
        .map(|o| o.body["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(ids.len(), acked.len(), "two 201s carried the same id");
    for chunk in acked.chunks(32) {
        join_all(chunk.iter().enumerate().map(|(i, o)| {
            let c = &c;
            async move {
                let id = o.body["id"].as_str().unwrap_or_default();
                let (s, a) = c.action(c.node(i), id).await;
                assert_eq!(s, StatusCode::OK, "acknowledged action {id} is lost: {a}");
                assert_eq!(a["arguments"], o.arguments, "{a}");
            }
        }))
        .await;
    }
    let twice =
        c.db.query_strings(
            "SELECT arguments, count(*) FROM actions GROUP BY arguments HAVING count(*) > 1",
        )
        .await;
    assert!(twice.is_empty(), "actions written twice: {twice:?}");
    let stored =
        c.db.query_strings("SELECT 'actions', count(*) FROM actions")
            .await;
    println!(
        "{} acknowledged actions, {} stored (a 503 may still have committed)",
        acked.len() + 1,
        stored[0].1
    );
    assert!(stored[0].1 as usize > acked.len());

    // The audit chain survived the failed batches.
    let (s, v) = c.send(c.get(&c.b, "/v1/audit/verify", &c.admin)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["ok"], true,
        "the audit chain is broken after the outage: {v}"
    );
    assert_chain(&c.events(&c.a).await);

    // LISTEN came back by itself too: decisions wake long-polls across nodes again.
    long_poll_across_nodes(&c, &c.b, &c.a, "approve").await;
    long_poll_across_nodes(&c, &c.a, &c.b, "reject").await;

    // Checked last, so that everything above runs (and reports) either way.
    assert!(
        unclean.is_empty(),
        "during the outage, responses other than success or 503: {unclean:#?}"
    );
}
