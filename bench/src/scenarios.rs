//! The scenarios, one per row of issue #8's table, each against a real `loopgate serve` child
//! process, and each adding its rows (figure, baseline ratio, target, pass/miss) to the report.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;

use crate::baselines::{self, action_body, NoopServer, RawSqlite};
use crate::http::{closed_loop, histogram, Call, CheckBody, Conn, LoadResult, MakeCall};
use crate::report::Row;
use crate::server::{create_database, Database, Server};

/// How big each scenario is: the full run, or the smoke run's tiny sizes.
#[derive(Clone)]
pub struct Sizes {
    pub smoke: bool,
    pub clients: usize,
    pub warmup: Duration,
    pub load: Duration,
    pub raw_single: u64,
    pub raw_batches: u64,
    pub longpolls: usize,
    pub pending: [u64; 3],
    pub next_calls: usize,
    pub reviewer_loop: Duration,
    pub subscribers: usize,
    pub fanout_rounds: usize,
    pub policy_evals: usize,
    pub scans: usize,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            smoke: false,
            clients: 16,
            warmup: Duration::from_secs(2),
            load: Duration::from_secs(10),
            raw_single: 2_000,
            raw_batches: 500,
            longpolls: 300,
            pending: [1_000, 100_000, 1_000_000],
            next_calls: 2_000,
            reviewer_loop: Duration::from_secs(5),
            subscribers: 1_000,
            fanout_rounds: 5,
            policy_evals: 200_000,
            scans: 2,
        }
    }

    pub fn smoke() -> Sizes {
        Sizes {
            smoke: true,
            clients: 4,
            warmup: Duration::from_millis(100),
            load: Duration::from_millis(500),
            raw_single: 50,
            raw_batches: 5,
            longpolls: 5,
            pending: [100, 1_000, 3_000],
            next_calls: 20,
            reviewer_loop: Duration::from_millis(300),
            subscribers: 20,
            fanout_rounds: 2,
            policy_evals: 1_000,
            scans: 1,
        }
    }
}

/// Everything the scenarios share: the binary, sizes, baselines measured so far, and the rows.
pub struct Suite {
    pub bin: PathBuf,
    pub sizes: Sizes,
    pub rows: Vec<Row>,
    noop_rate: Option<f64>,
    raw: Option<RawSqlite>,
}

fn pass(smoke: bool, ok: bool) -> Option<bool> {
    if smoke {
        None
    } else {
        Some(ok)
    }
}

fn pct(a: f64, b: f64) -> String {
    format!("{:.0}%", 100.0 * a / b)
}

/// A load run that had errors fails the smoke run outright and marks the figure in a full run.
fn errors_note(smoke: bool, what: &str, r: &LoadResult) -> Result<String> {
    if r.errors == 0 {
        return Ok(String::new());
    }
    let first = r.first_error.clone().unwrap_or_default();
    if smoke || r.ok == 0 {
        bail!("{what}: {} errors, first: {first}", r.errors);
    }
    Ok(format!(" ({} errors: {first})", r.errors))
}

fn id_of(v: &serde_json::Value, field: &str) -> Result<String> {
    v.get(field)
        .and_then(|x| x.as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no {field} in {v}"))
}

impl Suite {
    pub fn new(bin: PathBuf, sizes: Sizes) -> Suite {
        Suite {
            bin,
            sizes,
            rows: Vec::new(),
            noop_rate: None,
            raw: None,
        }
    }

    fn row(&mut self, scenario: &str, figure: String, baseline: String, target: &str, ok: bool) {
        let pass = pass(self.sizes.smoke, ok);
        println!("  {scenario}: {figure} [{baseline}]");
        self.rows.push(Row {
            scenario: scenario.into(),
            figure,
            baseline,
            target: target.into(),
            pass,
        });
    }

    /// The no-op handler's rate (measured once, on first need).
    async fn noop_rate(&mut self) -> Result<f64> {
        if let Some(r) = self.noop_rate {
            return Ok(r);
        }
        let noop = NoopServer::start().await?;
        let body = Bytes::from(action_body("send_email", 1).to_string());
        let make: MakeCall = Arc::new(move |_, _| Call {
            method: Method::POST,
            path: "/v1/actions".into(),
            token: String::new(),
            body: Some(body.clone()),
            expect: 201,
        });
        let r = closed_loop(
            noop.addr,
            self.sizes.clients,
            self.sizes.warmup,
            self.sizes.load,
            make,
            None,
        )
        .await?;
        errors_note(true, "no-op baseline", &r)?;
        println!(
            "  baseline: no-op axum handler, {} clients: {:.0}/s, p99 {:.2} ms",
            self.sizes.clients,
            r.rate(),
            r.p99_ms()
        );
        self.noop_rate = Some(r.rate());
        Ok(r.rate())
    }

    /// Raw SQLite inserts (measured once, on first need).
    fn raw(&mut self) -> Result<&RawSqlite> {
        if self.raw.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("loopgate-bench-raw")
                .tempdir()?;
            let raw =
                baselines::raw_sqlite(dir.path(), self.sizes.raw_single, self.sizes.raw_batches)?;
            println!(
                "  baseline: raw SQLite inserts: {:.0}/s with one fsync per row, {:.0}/s batched 64 per transaction",
                raw.single_per_s, raw.batched_per_s
            );
            self.raw = Some(raw);
        }
        self.raw.as_ref().ok_or_else(|| anyhow!("unreachable"))
    }

    pub async fn baselines(&mut self) -> Result<()> {
        println!("== baselines");
        let noop = self.noop_rate().await?;
        let (single, batched) = {
            let raw = self.raw()?;
            (raw.single_per_s, raw.batched_per_s)
        };
        self.rows.push(Row {
            scenario: "baseline: no-op axum handler, same JSON body".into(),
            figure: format!("{noop:.0}/s"),
            baseline: "the HTTP limit".into(),
            target: "-".into(),
            pass: None,
        });
        self.rows.push(Row {
            scenario: "baseline: raw SQLite inserts, same rows".into(),
            figure: format!("{single:.0}/s one fsync per row; {batched:.0}/s batched 64"),
            baseline: "the storage limit".into(),
            target: "-".into(),
            pass: None,
        });
        Ok(())
    }

    /// Submissions (auto-approved, then needing review) and AI messages on one fresh server, with
    /// its idle and peak memory.
    pub async fn submit(&mut self, which: &[&str]) -> Result<()> {
        let db = create_database(&self.bin).await?;
        let server = Server::start(&self.bin, &db).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (idle, _) = server.memory_mb()?;
        if which.contains(&"submit") {
            println!("== submit (auto-approved)");
            let noop = self.noop_rate().await?;
            let cpu0 = server.cpu_seconds()?;
            let r = self
                .submissions(&server, &db, "send_email", "\"approved\"")
                .await?;
            let cores = (server.cpu_seconds()? - cpu0)
                / (r.elapsed.as_secs_f64() + self.sizes.warmup.as_secs_f64());
            let (_, peak) = server.memory_mb()?;
            let note = errors_note(self.sizes.smoke, "submit", &r)?;
            let ok = r.rate() >= 20_000.0
                && r.p99_ms() <= 10.0
                && r.rate() >= 0.25 * noop
                && note.is_empty();
            self.row(
                &format!(
                    "submit, auto-approved, {} keep-alive clients",
                    self.sizes.clients
                ),
                format!(
                    "{:.0}/s, p50 {:.2} ms, p99 {:.2} ms, server used {cores:.2} cores{note}",
                    r.rate(),
                    r.p50_ms(),
                    r.p99_ms()
                ),
                format!("{} of no-op", pct(r.rate(), noop)),
                "≥ 20,000/s, p99 ≤ 10 ms, ≥ 25% of no-op",
                ok,
            );
            self.row(
                "memory: RSS idle (fresh server)",
                format!("{idle:.1} MB"),
                "-".into(),
                "≤ 50 MB",
                idle <= 50.0,
            );
            self.row(
                "memory: peak RSS under the submit scenario",
                format!("{peak:.1} MB"),
                format!("{:.1}× idle", peak / idle),
                "≤ 150 MB",
                peak <= 150.0,
            );
        }
        if which.contains(&"review") {
            println!("== submit (needs review)");
            let batched = self.raw()?.batched_per_s;
            let r = self
                .submissions(&server, &db, "wire_transfer", "\"pending\"")
                .await?;
            let note = errors_note(self.sizes.smoke, "submit review", &r)?;
            let ok = r.rate() >= 5_000.0 && r.p99_ms() <= 20.0 && note.is_empty();
            self.row(
                &format!(
                    "submit, needs review (action, review, events, outbox), {} clients",
                    self.sizes.clients
                ),
                format!(
                    "{:.0}/s, p50 {:.2} ms, p99 {:.2} ms{note}",
                    r.rate(),
                    r.p50_ms(),
                    r.p99_ms()
                ),
                format!("{:.2}× raw SQLite batched", r.rate() / batched),
                "≥ 5,000/s, p99 ≤ 20 ms",
                ok,
            );
        }
        if which.contains(&"message") {
            println!("== AI message, delivered");
            let batched = self.raw()?.batched_per_s;
            let mut conn = Conn::connect(server.addr).await?;
            let mut conversations = Vec::new();
            for i in 0..self.sizes.clients {
                let c = conn
                    .json(
                        Method::POST,
                        "/v1/conversations",
                        &db.agent,
                        Some(serde_json::json!({"external_id": format!("bench-{i}")})),
                        201,
                    )
                    .await?;
                conversations.push(id_of(&c, "id")?);
            }
            let token = db.agent.clone();
            let body = Bytes::from(
                serde_json::json!({"role": "ai", "text": "Your refund of 42.50 EUR was issued today.", "confidence": 0.95})
                    .to_string(),
            );
            let make: MakeCall = Arc::new(move |c, _| Call {
                method: Method::POST,
                path: format!("/v1/conversations/{}/messages", conversations[c]),
                token: token.clone(),
                body: Some(body.clone()),
                expect: 201,
            });
            let check: CheckBody = Arc::new(|b| contains(b, b"\"delivered\""));
            let r = closed_loop(
                server.addr,
                self.sizes.clients,
                self.sizes.warmup,
                self.sizes.load,
                make,
                Some(check),
            )
            .await?;
            let note = errors_note(self.sizes.smoke, "message", &r)?;
            let ok = r.rate() >= 10_000.0 && note.is_empty();
            self.row(
                &format!(
                    "AI message in a conversation, delivered, {} clients",
                    self.sizes.clients
                ),
                format!("{:.0}/s, p99 {:.2} ms{note}", r.rate(), r.p99_ms()),
                format!("{:.2}× raw SQLite batched", r.rate() / batched),
                "≥ 10,000/s",
                ok,
            );
        }
        if which.contains(&"longpoll") {
            println!("== decision → long-poll returns");
            self.longpoll(&server, &db).await?;
        }
        server.stop().await?;
        Ok(())
    }

    async fn submissions(
        &self,
        server: &Server,
        db: &Database,
        name: &'static str,
        expect: &'static str,
    ) -> Result<LoadResult> {
        let token = db.agent.clone();
        let make: MakeCall = Arc::new(move |c, i| Call {
            method: Method::POST,
            path: "/v1/actions".into(),
            token: token.clone(),
            body: Some(Bytes::from(
                action_body(name, (c as u64) << 32 | i).to_string(),
            )),
            expect: 201,
        });
        let check: CheckBody = Arc::new(move |b| contains(b, expect.as_bytes()));
        closed_loop(
            server.addr,
            self.sizes.clients,
            self.sizes.warmup,
            self.sizes.load,
            make,
            Some(check),
        )
        .await
    }

    /// One at a time: submit an action that needs review, start the agent's long-poll on it, then
    /// decide it; the figure is from sending the decision to the long-poll's answer.
    async fn longpoll(&mut self, server: &Server, db: &Database) -> Result<()> {
        let mut agent = Conn::connect(server.addr).await?;
        let mut reviewer = Conn::connect(server.addr).await?;
        let mut poller = Some(Conn::connect(server.addr).await?);
        let mut wake = histogram();
        let mut ack = histogram();
        for i in 0..self.sizes.longpolls + 10 {
            let action = agent
                .json(
                    Method::POST,
                    "/v1/actions",
                    &db.agent,
                    Some(action_body("wire_transfer", i as u64)),
                    201,
                )
                .await?;
            let id = id_of(&action, "id")?;
            let review = id_of(&action, "review_id")?;
            let mut conn = poller.take().ok_or_else(|| anyhow!("no poll connection"))?;
            let token = db.agent.clone();
            let poll = tokio::spawn(async move {
                let r = conn
                    .call(
                        Method::GET,
                        &format!("/v1/actions/{id}?wait=30"),
                        &token,
                        None,
                    )
                    .await;
                (Instant::now(), r, conn)
            });
            // Let the long-poll arrive and register (if it has not, it reads the final status at
            // once, and is measured the same way).
            tokio::time::sleep(Duration::from_millis(3)).await;
            let sent = Instant::now();
            reviewer
                .json(
                    Method::POST,
                    &format!("/v1/reviews/{review}/decision"),
                    &db.reviewer,
                    Some(serde_json::json!({"verdict": "approve"})),
                    200,
                )
                .await?;
            let acked = sent.elapsed();
            let (returned, r, conn) = poll.await?;
            poller = Some(conn);
            let (status, body) = r?;
            if !status.is_success() || !contains(&body, b"\"approved\"") {
                bail!(
                    "long-poll answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            if i >= 10 {
                wake.saturating_record(returned.saturating_duration_since(sent).as_micros() as u64);
                ack.saturating_record(acked.as_micros() as u64);
            }
        }
        let p99 = wake.value_at_quantile(0.99) as f64 / 1000.0;
        let ack99 = ack.value_at_quantile(0.99) as f64 / 1000.0;
        self.row(
            "decision → the agent's waiting long-poll returns",
            format!(
                "p50 {:.2} ms, p99 {p99:.2} ms ({} decisions)",
                wake.value_at_quantile(0.5) as f64 / 1000.0,
                self.sizes.longpolls
            ),
            format!("decision's own ack p99 {ack99:.2} ms"),
            "p99 ≤ 5 ms",
            p99 <= 5.0,
        );
        Ok(())
    }

    /// `next` at three queue depths (bulk-seeded), then the reviewer loop on the middle one, then
    /// stats, backtest and memory on the largest.
    pub async fn queue_depths(&mut self, which: &[&str]) -> Result<()> {
        let want_next = which.contains(&"next");
        let want_loop = which.contains(&"reviewer");
        let want_scan = which.contains(&"stats");
        let mut p99s = Vec::new();
        let pending = self.sizes.pending;
        for (k, &n) in pending.iter().enumerate() {
            let needed = want_next || (k == 1 && want_loop) || (k == 2 && want_scan);
            if !needed {
                continue;
            }
            println!("== {n} pending: seeding");
            let db = create_database(&self.bin).await?;
            let started = Instant::now();
            // `next` claims one review per call: seed the calls on top, so the queue never falls
            // below n pending while it is measured.
            let extra = if want_next {
                self.sizes.next_calls as u64 + 10
            } else {
                0
            };
            crate::seed::pending_reviews(&db.path, n + extra)?;
            println!(
                "  seeded {n} pending actions and reviews in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            let server = Server::start(&self.bin, &db).await?;
            let (rss_start, _) = server.memory_mb()?;
            if want_next {
                let mut conn = Conn::connect(server.addr).await?;
                for _ in 0..10 {
                    conn.json(Method::POST, "/v1/reviews/next", &db.reviewer, None, 200)
                        .await?;
                }
                let mut h = histogram();
                for _ in 0..self.sizes.next_calls {
                    let t = Instant::now();
                    conn.json(Method::POST, "/v1/reviews/next", &db.reviewer, None, 200)
                        .await?;
                    h.saturating_record(t.elapsed().as_micros() as u64);
                }
                let p99 = h.value_at_quantile(0.99) as f64 / 1000.0;
                p99s.push(p99);
                let single = self.raw()?.single_per_s;
                let (ratio, ok) = if k == 2 && p99s.len() == 3 {
                    let r = p99 / p99s[0];
                    (
                        format!(
                            "{r:.2}× the p99 at {}; one fsync = {:.2} ms",
                            self.sizes.pending[0],
                            1000.0 / single
                        ),
                        p99 <= 2.0 && r <= 2.0,
                    )
                } else {
                    (format!("one fsync = {:.2} ms", 1000.0 / single), p99 <= 2.0)
                };
                let target = if k == 2 {
                    "p99 ≤ 2 ms and ≤ 2× p99 at the smallest"
                } else {
                    "p99 ≤ 2 ms"
                };
                self.row(
                    &format!("`POST /v1/reviews/next`, {n} pending, one reviewer"),
                    format!(
                        "p50 {:.2} ms, p99 {p99:.2} ms",
                        h.value_at_quantile(0.5) as f64 / 1000.0
                    ),
                    ratio,
                    target,
                    ok,
                );
            }
            if k == 1 && want_loop {
                println!("== reviewer loop");
                self.reviewer_loop(&server, &db).await?;
            }
            if k == 2 && want_scan {
                println!("== stats and backtest over {n} items");
                self.scans(&server, &db, n).await?;
                let (rss_after, _) = server.memory_mb()?;
                self.row(
                    &format!("memory: RSS with {n} stored items, after the scans"),
                    format!("{rss_after:.1} MB (at start {rss_start:.1} MB)"),
                    format!("{:.2}× its start", rss_after / rss_start),
                    "≤ 50 MB, flat",
                    rss_after <= 50.0,
                );
            }
            server.stop().await?;
        }
        Ok(())
    }

    /// One reviewer: `next`, then approve it, as fast as it goes.
    async fn reviewer_loop(&mut self, server: &Server, db: &Database) -> Result<()> {
        let single = self.raw()?.single_per_s;
        let mut conn = Conn::connect(server.addr).await?;
        let started = Instant::now();
        let mut items = 0u64;
        while started.elapsed() < self.sizes.reviewer_loop {
            let review = conn
                .json(Method::POST, "/v1/reviews/next", &db.reviewer, None, 200)
                .await?;
            let id = id_of(&review, "id")?;
            conn.json(
                Method::POST,
                &format!("/v1/reviews/{id}/decision"),
                &db.reviewer,
                Some(serde_json::json!({"verdict": "approve"})),
                200,
            )
            .await?;
            items += 1;
        }
        let rate = items as f64 / started.elapsed().as_secs_f64();
        self.row(
            "a reviewer's loop, `next` then `decision`, one client",
            format!("{rate:.0} items/s"),
            format!(
                "{:.2}× raw SQLite one-fsync rows/s (an item is 2 commits)",
                rate / single
            ),
            "≥ 2,000 items/s",
            rate >= 2_000.0,
        );
        Ok(())
    }

    async fn scans(&mut self, server: &Server, db: &Database, n: u64) -> Result<()> {
        let mut conn = Conn::connect(server.addr).await?;
        let candidate = crate::server::POLICY.replace(
            "when = 'action.name == \"wire_transfer\"'",
            "when = 'action.name == \"wire_transfer\" && confidence < 0.9'",
        );
        for (what, method, path, token, body) in [
            (
                "stats (`GET /v1/stats?window=30d`)",
                Method::GET,
                "/v1/stats?window=30d",
                db.reviewer.clone(),
                None,
            ),
            (
                "backtest (`POST /v1/policy/backtest`)",
                Method::POST,
                "/v1/policy/backtest?since=30d",
                db.admin.clone(),
                Some(Bytes::from(candidate.clone())),
            ),
        ] {
            let mut worst = Duration::ZERO;
            for _ in 0..self.sizes.scans {
                let t = Instant::now();
                let (status, bytes) = conn
                    .call(method.clone(), path, &token, body.clone())
                    .await?;
                let took = t.elapsed();
                if !status.is_success() {
                    bail!("{what}: {status}: {}", String::from_utf8_lossy(&bytes));
                }
                worst = worst.max(took);
            }
            let secs = worst.as_secs_f64();
            self.row(
                &format!("{what} over {n} recorded items"),
                format!("{secs:.2} s (slowest of {})", self.sizes.scans),
                format!("{:.0} items/s", n as f64 / secs),
                "≤ 2 s",
                secs <= 2.0,
            );
        }
        Ok(())
    }

    /// One event fanned out to many SSE subscribers of `GET /v1/events`, a few times.
    pub async fn fanout(&mut self) -> Result<()> {
        println!("== SSE fan-out");
        let db = create_database(&self.bin).await?;
        let server = Server::start(&self.bin, &db).await?;
        let subs = self.sizes.subscribers;
        let rounds = self.sizes.fanout_rounds;
        let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
        let ready = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..subs {
            let mut conn = Conn::connect(server.addr).await?;
            let (sent, ready, received, token) = (
                sent.clone(),
                ready.clone(),
                received.clone(),
                db.reviewer.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut hist = histogram();
                let resp = conn.send(Method::GET, "/v1/events", &token, None).await?;
                if !resp.status().is_success() {
                    bail!("GET /v1/events: {}", resp.status());
                }
                ready.fetch_add(1, Ordering::SeqCst);
                let mut body = resp.into_body();
                let mut buf = String::new();
                let mut round = 0;
                while round < rounds {
                    let Some(frame) = body.frame().await else {
                        bail!("the stream ended")
                    };
                    let Ok(data) = frame?.into_data() else {
                        continue;
                    };
                    buf.push_str(&String::from_utf8_lossy(&data));
                    while let Some(end) = buf.find("\n\n") {
                        let frame: String = buf.drain(..end + 2).collect();
                        if frame.lines().any(|l| {
                            l.trim_end() == "event: action.created"
                                || l.trim_end() == "event:action.created"
                        }) {
                            let at = Instant::now();
                            let t0 = sent
                                .lock()
                                .map_err(|_| anyhow!("poisoned"))?
                                .get(round)
                                .copied();
                            if let Some(t0) = t0 {
                                hist.saturating_record(
                                    at.saturating_duration_since(t0).as_micros() as u64,
                                );
                            }
                            round += 1;
                            received.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                Ok::<_, anyhow::Error>(hist)
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while ready.load(Ordering::SeqCst) < subs as u64 {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {subs} SSE subscribers connected",
                    ready.load(Ordering::SeqCst)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The streams subscribe to live events in their own tasks; give them a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut agent = Conn::connect(server.addr).await?;
        let mut submit = histogram();
        for k in 0..rounds {
            sent.lock()
                .map_err(|_| anyhow!("poisoned"))?
                .push(Instant::now());
            let t = Instant::now();
            agent
                .json(
                    Method::POST,
                    "/v1/actions",
                    &db.agent,
                    Some(action_body("send_email", k as u64)),
                    201,
                )
                .await?;
            submit.saturating_record(t.elapsed().as_micros() as u64);
            let until = Instant::now() + Duration::from_secs(10);
            while received.load(Ordering::SeqCst) < (subs * (k + 1)) as u64
                && Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut hist = histogram();
        for t in tasks {
            match tokio::time::timeout(Duration::from_secs(5), t).await {
                Ok(Ok(Ok(h))) => hist.add(&h)?,
                Ok(Ok(Err(e))) => return Err(e.context("an SSE subscriber failed")),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {}
            }
        }
        let got = received.load(Ordering::SeqCst);
        let expected = (subs * rounds) as u64;
        if self.sizes.smoke && got != expected {
            bail!("SSE fan-out: {got} of {expected} frames received");
        }
        let p99 = hist.value_at_quantile(0.99) as f64 / 1000.0;
        self.row(
            &format!("one event fanned out to {subs} SSE subscribers ({rounds} events)"),
            format!(
                "{got} of {expected} received, p50 {:.1} ms, p99 {p99:.1} ms",
                hist.value_at_quantile(0.5) as f64 / 1000.0
            ),
            format!(
                "the submission's own ack p99 {:.2} ms",
                submit.value_at_quantile(0.99) as f64 / 1000.0
            ),
            "all received, p99 ≤ 100 ms",
            got == expected && p99 <= 100.0,
        );
        server.stop().await?;
        drop(db);
        Ok(())
    }

    /// Policy evaluation, 20 rules, timed directly (criterion: `cargo bench -p bench --bench policy`).
    pub fn policy(&mut self) -> Result<()> {
        println!("== policy evaluation");
        let (median, p99) = crate::policy_eval::measure(self.sizes.policy_evals);
        // A no-op request costs the machine (cores ÷ rate) of CPU time; compare one evaluation.
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        let noop = self.noop_rate.map(|r| {
            format!(
                "{:.1}% of a no-op request's CPU time",
                100.0 * median / (cores * 1e6 / r)
            )
        });
        self.row(
            "policy evaluation, 20 rules, the last one matching",
            format!(
                "median {median:.2} µs, p99 {p99:.2} µs ({} evaluations)",
                self.sizes.policy_evals
            ),
            noop.unwrap_or_else(|| "-".into()),
            "median ≤ 5 µs",
            median <= 5.0,
        );
        Ok(())
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Guards against running the suite against a missing binary with a clear message.
pub fn check_binary(bin: &std::path::Path) -> Result<()> {
    if !bin.exists() {
        return Err(anyhow!(
            "{} not found: build it first (`cargo build --release --bin loopgate`, or `cargo build --bin loopgate` for --smoke)",
            bin.display()
        ))
        .context("the suite runs the real binary");
    }
    Ok(())
}
