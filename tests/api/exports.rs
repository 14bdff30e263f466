//! Training exports through the real API and the real binary: what each format includes and
//! leaves out (on SQLite and PostgreSQL), and 100 000 records streamed in bounded memory.

use crate::conversations::{change, open, post};
use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const EXPORT_POLICY: &str = r#"
[[rule]]
name = "drafts are checked"
applies_to = "message"
when = 'message.text.startsWith("draft:")'
then = "review"
queue = "drafts"

[[rule]]
name = "sampled answers"
applies_to = "message"
when = 'message.text.startsWith("sample:")'
then = "deliver"
sample = 1.0

[[rule]]
name = "emails run, all sampled"
applies_to = "action"
when = 'action.name == "send_email"'
then = "approve"
sample = 1.0

[[rule]]
name = "refunds are checked"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "review"
queue = "finance"

[[rule]]
name = "the rest goes out"
when = "true"
then = "approve"
"#;

/// `GET /v1/exports/training?QUERY` as the admin: the JSON lines.
async fn export(app: &TestApp, query: &str) -> Vec<Value> {
    let resp = app
        .get(&format!("/v1/exports/training?{query}"), &app.admin)
        .send()
        .await
        .expect("the export answers");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let body = resp.text().await.expect("a complete body");
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

async fn ai(app: &TestApp, cid: &str, text: &str) -> Value {
    let (s, m) = post(app, &app.agent, cid, "ai", text, Some(0.9)).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    m
}

async fn user(app: &TestApp, cid: &str, text: &str) {
    let (s, m) = post(app, &app.agent, cid, "user", text, None).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
}

async fn decide_ok(app: &TestApp, review: &Value, body: Value) {
    let id = review.as_str().expect("a review id");
    let (s, d) = app.decide(&app.ann, id, body).await;
    assert_eq!(s, StatusCode::OK, "{d}");
}

/// The QA review of a message or action (the policy samples every `sample:` answer and every
/// email).
async fn qa_review(app: &TestApp, subject_id: &Value) -> Value {
    let (s, body) = app
        .send(app.get("/v1/reviews?kind=qa&status=all&limit=500", &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["message_id"] == *subject_id || r["action_id"] == *subject_id)
        .map(|r| r["id"].clone())
        .unwrap_or_else(|| panic!("no QA review of {subject_id}"))
}

async fn flag(app: &TestApp, message_id: &Value) -> Value {
    let mid = message_id.as_str().unwrap();
    let (s, f) = app
        .send(
            app.post(&format!("/v1/messages/{mid}/feedback"), &app.agent)
                .json(&json!({"rating": "down", "comment": "wrong"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    f["review_id"].clone()
}

fn contents(example: &Value) -> Vec<String> {
    example["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}: {}",
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap()
            )
        })
        .collect()
}

/// Every format's shape and its inclusion rules, on one workspace's worth of human oversight.
#[tokio::test]
async fn formats_include_what_humans_vouched_for() {
    let app = TestApp::spawn().await;
    app.put_policy(EXPORT_POLICY).await;

    // A: an edited draft, an unvetted answer, a QA-approved one, a QA-corrected one, then more.
    let a = open(&app, json!({})).await;
    user(&app, &a, "hi").await;
    let draft = ai(&app, &a, "draft: hello").await;
    decide_ok(
        &app,
        &draft["review_id"],
        json!({"verdict": "edit", "text": "Hello! How can I help?"}),
    )
    .await;
    user(&app, &a, "refund please").await;
    ai(&app, &a, "plain answer").await;
    user(&app, &a, "ok").await;
    let good = ai(&app, &a, "sample: good answer").await;
    decide_ok(
        &app,
        &qa_review(&app, &good["id"]).await,
        json!({"grade": "correct"}),
    )
    .await;
    user(&app, &a, "and?").await;
    let wrong = ai(&app, &a, "sample: wrong answer").await;
    decide_ok(
        &app,
        &qa_review(&app, &wrong["id"]).await,
        json!({"grade": "incorrect", "text": "Correct answer."}),
    )
    .await;
    user(&app, &a, "hmm").await;

    // B: nothing a human vouched for.
    let b = open(&app, json!({})).await;
    user(&app, &b, "question").await;
    ai(&app, &b, "unvetted reply").await;

    // C: a rejected draft, then a human answer after a takeover.
    let c = open(&app, json!({})).await;
    user(&app, &c, "x").await;
    let rude = ai(&app, &c, "draft: rude reply").await;
    decide_ok(
        &app,
        &rude["review_id"],
        json!({"verdict": "reject", "comment": "rude"}),
    )
    .await;
    let (s, t) = change(&app, &app.ann, &c, "takeover", None).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let (s, h) = post(&app, &app.ann, &c, "human", "A human answer.", None).await;
    assert_eq!(s, StatusCode::CREATED, "{h}");

    // D: an approved draft, then an answer the user flagged, not yet judged.
    let d = open(&app, json!({})).await;
    user(&app, &d, "y").await;
    let approved = ai(&app, &d, "draft: approved answer").await;
    decide_ok(&app, &approved["review_id"], json!({"verdict": "approve"})).await;
    user(&app, &d, "z").await;
    let flagged = ai(&app, &d, "flag me").await;
    flag(&app, &flagged["id"]).await;

    // E: a flagged answer a reviewer corrected.
    let e = open(&app, json!({})).await;
    user(&app, &e, "w").await;
    let bad = ai(&app, &e, "flag me too").await;
    let flag_review = flag(&app, &bad["id"]).await;
    decide_ok(
        &app,
        &flag_review,
        json!({"grade": "incorrect", "text": "Fixed answer.", "comment": "wrong fact"}),
    )
    .await;

    // Actions: one edited, one rejected. A knowledge change, edited.
    let (s, edited) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 10}, "context": {"tier": "gold"}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{edited}");
    decide_ok(
        &app,
        &edited["review_id"],
        json!({"verdict": "edit", "arguments": {"amount": 5}}),
    )
    .await;
    let (_, refused) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 99}}))
        .await;
    decide_ok(
        &app,
        &refused["review_id"],
        json!({"verdict": "reject", "comment": "too much"}),
    )
    .await;
    // An email that ran, sampled, and graded wrong with the arguments it should have had.
    let (s, email) = app
        .submit(json!({"name": "send_email", "arguments": {"to": "wrong@example.com"}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{email}");
    assert_eq!(email["status"], "approved", "{email}");
    decide_ok(
        &app,
        &qa_review(&app, &email["id"]).await,
        json!({"grade": "incorrect", "arguments": {"to": "right@example.com"}}),
    )
    .await;
    let (s, k) = app
        .send(
            app.post("/v1/knowledge", &app.agent)
                .json(&json!({"title": "T", "text": "AI fact"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    decide_ok(
        &app,
        &k["review_id"],
        json!({"verdict": "edit", "text": "Human fact"}),
    )
    .await;

    // openai: A, C, D, E (not B); each ends on a vouched answer.
    let openai = export(&app, "format=openai").await;
    let all: Vec<Vec<String>> = openai.iter().map(contents).collect();
    assert_eq!(openai.len(), 4, "{all:#?}");
    assert_eq!(
        all[0],
        [
            "user: hi",
            "assistant: Hello! How can I help?",
            "user: refund please",
            "assistant: plain answer",
            "user: ok",
            "assistant: sample: good answer",
            "user: and?",
            "assistant: Correct answer.",
        ]
    );
    // The unvetted answer is context only.
    assert_eq!(openai[0]["messages"][3]["weight"], 0);
    assert!(openai[0]["messages"][1].get("weight").is_none());
    assert_eq!(all[1], ["user: x", "assistant: A human answer."]);
    assert_eq!(all[2], ["user: y", "assistant: draft: approved answer"]);
    assert_eq!(all[3], ["user: w", "assistant: Fixed answer."]);
    let text = serde_json::to_string(&openai).unwrap();
    for never in [
        "draft: hello",
        "rude reply",
        "flag me",
        "unvetted reply",
        "wrong answer",
    ] {
        assert!(!text.contains(never), "{never:?} leaked into {text}");
    }

    // dpo: the edited draft, the two corrected answers, the edited action, the corrected email.
    let dpo = export(&app, "format=dpo").await;
    assert_eq!(dpo.len(), 5, "{dpo:#?}");
    let pairs: Vec<(String, String)> = dpo
        .iter()
        .map(|p| {
            assert_eq!(p["preferred_output"][0]["role"], "assistant");
            assert_eq!(p["non_preferred_output"][0]["role"], "assistant");
            (
                p["preferred_output"][0]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                p["non_preferred_output"][0]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    let pair = |human: &str| {
        let i = pairs
            .iter()
            .position(|(h, _)| h == human)
            .unwrap_or_else(|| panic!("no pair preferring {human:?} in {pairs:?}"));
        (&dpo[i], pairs[i].1.clone())
    };
    let (p, ai_text) = pair("Hello! How can I help?");
    assert_eq!(ai_text, "draft: hello");
    assert_eq!(contents(&p["input"]), ["user: hi"]);
    let (p, ai_text) = pair("Correct answer.");
    assert_eq!(ai_text, "sample: wrong answer");
    assert_eq!(contents(&p["input"]).last().unwrap(), "user: and?");
    assert_eq!(contents(&p["input"]).len(), 7);
    let (_, ai_text) = pair(r#"{"to":"right@example.com"}"#);
    assert_eq!(ai_text, r#"{"to":"wrong@example.com"}"#);
    let (_, ai_text) = pair("Fixed answer.");
    assert_eq!(ai_text, "flag me too");
    let (p, ai_text) = pair(r#"{"amount":5}"#);
    assert_eq!(ai_text, r#"{"amount":10}"#);
    let request: Value =
        serde_json::from_str(p["input"]["messages"][0]["content"].as_str().unwrap()).unwrap();
    assert_eq!(
        request,
        json!({"action": "issue_refund", "context": {"tier": "gold"}})
    );

    // corrections: every override, rejections included.
    let corrections = export(&app, "format=corrections").await;
    assert_eq!(corrections.len(), 8, "{corrections:#?}");
    let find = |kind: &str, verdict: &str| {
        corrections
            .iter()
            .find(|c| c["kind"] == kind && c["verdict"] == verdict)
            .unwrap_or_else(|| panic!("no {kind} {verdict} in {corrections:#?}"))
    };
    let c1 = find("draft", "edit");
    assert_eq!(c1["ai_output"], "draft: hello");
    assert_eq!(c1["human_output"], "Hello! How can I help?");
    assert_eq!(c1["conversation_id"], a.as_str());
    assert_eq!(c1["agent"], "bot");
    assert_eq!(c1["reviewer"], "ann");
    assert_eq!(
        c1["context"]["messages"],
        json!([{"role": "user", "content": "hi"}])
    );
    assert!(c1["decided_at"].as_str().unwrap().ends_with('Z'));
    assert!(c1.get("action_id").is_none());
    let c2 = find("draft", "reject");
    assert_eq!(c2["ai_output"], "draft: rude reply");
    assert_eq!(c2["human_output"], Value::Null);
    assert_eq!(c2["comment"], "rude");
    let c3 = find("flag", "reject");
    assert_eq!(c3["grade"], "incorrect");
    assert_eq!(c3["human_output"], "Fixed answer.");
    let qa: Vec<&Value> = corrections.iter().filter(|c| c["kind"] == "qa").collect();
    assert_eq!(qa.len(), 2, "{qa:#?}");
    let qa_answer = qa
        .iter()
        .find(|c| c.get("conversation_id").is_some())
        .unwrap();
    assert_eq!(qa_answer["human_output"], "Correct answer.");
    let qa_email = qa.iter().find(|c| c.get("action_id").is_some()).unwrap();
    assert_eq!(qa_email["action_id"], email["id"]);
    assert_eq!(qa_email["ai_output"], json!({"to": "wrong@example.com"}));
    assert_eq!(qa_email["human_output"], json!({"to": "right@example.com"}));
    assert_eq!(qa_email["context"]["action"], "send_email");
    let c5 = find("approval", "edit");
    assert_eq!(c5["ai_output"], json!({"amount": 10}));
    assert_eq!(c5["human_output"], json!({"amount": 5}));
    assert_eq!(c5["action_id"], edited["id"]);
    assert_eq!(c5["context"]["action"], "issue_refund");
    assert_eq!(c5["context"]["context"], json!({"tier": "gold"}));
    assert!(c5.get("conversation_id").is_none());
    assert_eq!(find("approval", "reject")["comment"], "too much");
    let c7 = find("kb_change", "edit");
    assert_eq!(c7["ai_output"], "AI fact");
    assert_eq!(c7["human_output"], "Human fact");
    assert_eq!(c7["context"]["title"], "T");

    // `since` in the future leaves everything out; a window in the past keeps it all.
    assert!(
        export(&app, "format=corrections&since=2999-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    assert_eq!(export(&app, "format=openai&since=1h").await.len(), 4);

    // Refusals: admins only, and each bad parameter named.
    let (s, _) = app
        .send(app.get("/v1/exports/training?format=openai", &app.ann))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for (query, field) in [
        ("", "format"),
        ("format=csv", "format"),
        ("format=dpo&since=soon", "since"),
    ] {
        let (s, e) = app
            .send(app.get(&format!("/v1/exports/training?{query}"), &app.admin))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {e}");
        assert_eq!(e["error"]["field"], field, "{e}");
    }

    // The CLI writes the same lines.
    let out = Command::new(env!("CARGO_BIN_EXE_loopgate"))
        .args([
            "export",
            "training",
            "--format",
            "dpo",
            "--database",
            &app.db.url,
        ])
        .env_remove("LOOPGATE_DATABASE_URL")
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, dpo);
    let out = Command::new(env!("CARGO_BIN_EXE_loopgate"))
        .args([
            "export",
            "training",
            "--format",
            "dpo",
            "--workspace",
            "nope",
            "--database",
            &app.db.url,
        ])
        .output()
        .expect("the binary runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nope"), "{err}");
}

const RECORDS: usize = 100_000;

/// 100 000 action edits, written straight into the database in one transaction.
fn seed(db: &TestDb) {
    // 400 bytes of note per proposal: the export is ~80 MB, far more than the memory bound below.
    let note = "n".repeat(400);
    let (n, id, from) = if db.is_postgres() {
        (
            "i",
            "lpad(i::text, 8, '0')",
            format!("FROM generate_series(1, {RECORDS}) AS i"),
        )
    } else {
        (
            "i",
            "printf('%08d', i)",
            format!(
                "FROM (WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {RECORDS}) SELECT i FROM s)"
            ),
        )
    };
    let _ = n;
    db.exec(&format!(
        "BEGIN;
         INSERT INTO actions (id, workspace, agent, name, arguments, proposed_arguments, confidence, context,
             status, reason, policy_version, review_id, created_at, decided_at)
           SELECT 'a-' || {id}, 'default', 'bot', 'issue_refund', '{{\"amount\":5}}',
             '{{\"amount\":10,\"note\":\"{note}\"}}', 0.5, '{{\"tier\":\"gold\"}}', 'approved', 'seeded', 1,
             'r-' || {id}, 1700000000000, 1700000000000 {from};
         INSERT INTO reviews (id, workspace, kind, status, queue, priority, due_key, approvals_required,
             approvals, reason, policy_version, action_id, created_at, decided_at, outcome)
           SELECT 'r-' || {id}, 'default', 'approval', 'decided', 'finance', 0, 9223372036854775807, 1, 1,
             'seeded', 1, 'a-' || {id}, 1700000000000, 1700000000000, 'approved' {from};
         INSERT INTO decisions (id, review_id, workspace, reviewer, verdict, arguments, labels, created_at)
           SELECT 'd-' || {id}, 'r-' || {id}, 'default', 'ann', 'edit', '{{\"amount\":5}}', '[]',
             1700000000000 {from};
         COMMIT;"
    ));
}

/// The peak resident memory (VmHWM) of a running process, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// 100k records: streamed over HTTP (chunked, counted as they arrive), and by the CLI in a
/// child process whose peak memory stays bounded while ~80 MB pass through it.
#[tokio::test]
async fn a_large_export_streams_in_bounded_memory() {
    let app = TestApp::spawn().await;
    seed(&app.db);

    // Over HTTP: a chunked stream (no Content-Length: nothing was rendered up front).
    let mut resp = app
        .get("/v1/exports/training?format=corrections", &app.admin)
        .send()
        .await
        .expect("the export answers");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get("content-length").is_none(),
        "{:?}",
        resp.headers()
    );
    let (mut lines, mut chunks, mut bytes) = (0usize, 0usize, 0usize);
    let mut first: Option<Vec<u8>> = None;
    while let Some(chunk) = resp.chunk().await.expect("the stream completes") {
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        bytes += chunk.len();
        chunks += 1;
        if first.is_none() {
            first = Some(chunk.to_vec());
        }
    }
    assert_eq!(lines, RECORDS);
    assert!(chunks > 100, "{chunks} chunks: the body came in one piece");
    let first = first.unwrap();
    let line = first.split(|b| *b == b'\n').next().unwrap();
    let record: Value = serde_json::from_slice(line).unwrap();
    assert_eq!(record["kind"], "approval");
    assert_eq!(record["human_output"], json!({"amount": 5}));

    // The CLI, as a child process: sample its peak RSS while it streams.
    let mut child = Command::new(env!("CARGO_BIN_EXE_loopgate"))
        .args([
            "export",
            "training",
            "--format",
            "corrections",
            "--database",
            &app.db.url,
        ])
        .env_remove("LOOPGATE_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    // Read on a thread; sample the child's VmHWM every 4 MB read. The child is still running at
    // each sample: it cannot finish before we have read all but the pipe's last 64 KB.
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(1 << 16, stdout);
        let (mut lines, mut bytes, mut next_sample) = (0usize, 0usize, 0usize);
        let mut samples: Vec<u64> = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(n) => {
                    lines += 1;
                    bytes += n;
                }
                Err(e) => panic!("reading the export: {e}"),
            }
            if bytes >= next_sample {
                samples.extend(peak_kib(pid));
                next_sample += 4 << 20;
            }
        }
        (lines, bytes, samples)
    });
    let (cli_lines, cli_bytes, samples) = reader.join().expect("the reader thread");
    let status = child.wait().expect("the child ends");
    assert!(status.success());
    assert_eq!(cli_lines, RECORDS);
    assert_eq!(cli_bytes, bytes, "the CLI and HTTP exports differ");
    assert!(samples.len() >= 10, "only {} samples", samples.len());
    let first_mib = samples[0] / 1024;
    let peak_mib = samples.iter().max().unwrap() / 1024;
    let out_mib = (cli_bytes / (1 << 20)) as u64;
    eprintln!("CLI export: {out_mib} MiB out; peak RSS {first_mib} MiB at the first line, {peak_mib} MiB at most");
    assert!(out_mib >= 60, "the export is too small to prove anything");
    // Holding the export before writing it would take more than the whole output ...
    assert!(
        peak_mib < out_mib,
        "the CLI's peak RSS {peak_mib} MiB is not below the {out_mib} MiB it wrote"
    );
    // ... and holding what was written would make memory grow with it (allocator and page
    // cache warm-up account for a few MiB).
    assert!(
        peak_mib - first_mib < 24,
        "the CLI's RSS grew from {first_mib} to {peak_mib} MiB during the export"
    );
}
