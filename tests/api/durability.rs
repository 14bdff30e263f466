//! Timeouts (the background sweep and the sweep on start) and durability across restarts.

use crate::audit::{all_events, events_of};
use crate::cli::{create_key, loopgate, Serve, Server};
use crate::helpers::*;
use loopgate_domain::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A policy whose refunds wait 1 s for a human, then `on_timeout` decides.
fn timeout_policy(on_timeout: &str) -> String {
    format!(
        r#"
[[rule]]
name = "slow refunds"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "review"
queue = "finance"
priority = 7
timeout = "1s"
on_timeout = "{on_timeout}"

[[rule]]
name = "refunds without a deadline"
applies_to = "action"
when = 'action.name == "issue_refund_later"'
then = "review"
queue = "finance"
priority = 50

[[rule]]
name = "everything else runs"
when = "true"
then = "approve"
"#
    )
}

async fn submit_refund(app: &TestApp) -> (String, String) {
    let (s, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 40}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["status"], "pending", "{a}");
    let id = a["id"].as_str().expect("an action id").to_owned();
    let review = a["review_id"].as_str().expect("a review id").to_owned();
    (id, review)
}

async fn review(app: &TestApp, id: &str) -> Value {
    let (s, r) = app
        .send(app.get(&format!("/v1/reviews/{id}"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    r
}

async fn verify_chain(app: &TestApp) -> Value {
    let (s, v) = app.send(app.get("/v1/audit/verify", &app.admin)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], true, "the audit chain is broken: {v}");
    v
}

#[tokio::test]
async fn timeout_reject_expires_the_action_and_its_review() {
    let app = TestApp::spawn().await;
    app.put_policy(&timeout_policy("reject")).await;
    let started = Instant::now();
    let (id, rid) = submit_refund(&app).await;
    let r = review(&app, &rid).await;
    assert_eq!(r["status"], "pending");
    assert_eq!(r["on_timeout"], "reject");
    assert!(r["due_at"].is_string(), "{r}");

    // A long-poll is woken by the timeout itself.
    let (s, a) = app
        .send(app.get(&format!("/v1/actions/{id}?wait=10"), &app.agent))
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the long-poll was not woken by the timeout: {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "fired early, after {:?}",
        started.elapsed()
    );
    assert_eq!(a["status"], "expired", "{a}");
    assert_eq!(a["decision"]["verdict"], "timeout", "{a}");
    assert_eq!(a["decision"]["by"], json!(["system"]), "{a}");

    let r = review(&app, &rid).await;
    assert_eq!(r["status"], "expired", "{r}");
    assert_eq!(r["outcome"], "expired:reject", "{r}");

    let events = all_events(&app).await;
    let expired = events_of(&events, "review.expired", &format!("review:{rid}"));
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0]["actor"], "system");
    let decided = events_of(&events, "action.decided", &format!("action:{id}"));
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["data"]["status"], "expired");
    assert_eq!(decided[0]["data"]["verdict"], "timeout");

    // A late decision cannot revive it.
    let (s, body) = app
        .decide(&app.ann, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(app.action(&id).await["status"], "expired");
}

#[tokio::test]
async fn timeout_approve_approves_with_verdict_timeout() {
    let app = TestApp::spawn().await;
    app.put_policy(&timeout_policy("approve")).await;
    let (id, rid) = submit_refund(&app).await;

    let a = app.wait_for_action(&id, |a| a["status"] != "pending").await;
    assert_eq!(a["status"], "approved", "{a}");
    assert_eq!(a["decision"]["verdict"], "timeout", "{a}");
    assert_eq!(a["arguments"], json!({"amount": 40}));

    let r = review(&app, &rid).await;
    assert_eq!(r["status"], "expired", "{r}");
    assert_eq!(r["outcome"], "expired:approve", "{r}");
    let events = all_events(&app).await;
    assert_eq!(
        events_of(&events, "review.expired", &format!("review:{rid}")).len(),
        1
    );
}

#[tokio::test]
async fn timeout_escalate_keeps_the_review_open_and_raises_its_priority() {
    let app = TestApp::spawn().await;
    app.put_policy(&timeout_policy("escalate")).await;
    let (id, rid) = submit_refund(&app).await;
    // A rival in the same queue, more urgent until the escalation (50 > 7).
    let (s, other) = app
        .submit(json!({"name": "issue_refund_later", "arguments": {"amount": 1}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{other}");
    assert_eq!(review(&app, &rid).await["priority"], 7);

    let mut escalated = Value::Null;
    for _ in 0..200 {
        escalated = review(&app, &rid).await;
        if escalated["priority"] != 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(escalated["priority"], 107, "{escalated}");
    assert_eq!(escalated["status"], "pending", "{escalated}");
    assert!(escalated["due_at"].is_null(), "{escalated}");

    // Several more sweeps: it escalates once, never expires, and the action still waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = review(&app, &rid).await;
    assert_eq!(r["priority"], 107, "{r}");
    assert_eq!(r["status"], "pending", "{r}");
    assert_eq!(app.action(&id).await["status"], "pending");
    let events = all_events(&app).await;
    let subject = format!("review:{rid}");
    assert_eq!(events_of(&events, "review.escalated", &subject).len(), 1);
    assert!(events_of(&events, "review.expired", &subject).is_empty());

    // It is now the most urgent review of its queue.
    let (s, next) = app
        .send(app.post("/v1/reviews/next?queue=finance", &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK, "{next}");
    assert_eq!(next["id"], rid.as_str(), "{next}");
    assert_ne!(next["id"], other["review_id"]);

    // And a human can still decide it.
    let (s, body) = app
        .decide(&app.ann, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(app.action(&id).await["status"], "approved");
}

/// One rule per `on_timeout`, each with a 1 s deadline.
const EVERY_TIMEOUT: &str = r#"
[[rule]]
name = "reject when late"
applies_to = "action"
when = 'action.name == "refund_reject"'
then = "review"
timeout = "1s"
on_timeout = "reject"

[[rule]]
name = "approve when late"
applies_to = "action"
when = 'action.name == "refund_approve"'
then = "review"
timeout = "1s"
on_timeout = "approve"

[[rule]]
name = "escalate when late"
applies_to = "action"
when = 'action.name == "refund_escalate"'
then = "review"
priority = 3
timeout = "1s"
on_timeout = "escalate"
"#;

#[tokio::test]
async fn a_timeout_due_while_the_server_was_down_fires_on_start_exactly_once() {
    let app = TestApp::spawn().await;
    app.put_policy(EVERY_TIMEOUT).await;
    let mut pending = Vec::new();
    for name in ["refund_reject", "refund_approve", "refund_escalate"] {
        let (s, a) = app.submit(json!({"name": name, "arguments": {}})).await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        assert_eq!(a["status"], "pending", "{a}");
        let id = a["id"].as_str().expect("an id").to_owned();
        let rid = a["review_id"].as_str().expect("a review").to_owned();
        pending.push((id, rid));
    }
    let [(rejected, rejected_review), (approved, approved_review), (escalated, escalated_review)] =
        &pending[..]
    else {
        unreachable!()
    };

    // Down when the deadlines pass.
    let app = app.restart(Duration::from_millis(1500)).await;
    // The first requests after the restart already see the outcome: the sweep on start ran
    // before the server accepted connections.
    let a = app.action(rejected).await;
    assert_eq!(a["status"], "expired", "{a}");
    assert_eq!(a["decision"]["verdict"], "timeout", "{a}");
    let a = app.action(approved).await;
    assert_eq!(a["status"], "approved", "{a}");
    assert_eq!(a["decision"]["verdict"], "timeout", "{a}");
    let r = review(&app, escalated_review).await;
    assert_eq!(r["priority"], 103, "{r}");
    assert_eq!(r["status"], "pending", "{r}");
    assert_eq!(app.action(escalated).await["status"], "pending");

    let count = |events: &[Value]| {
        (
            events_of(
                events,
                "review.expired",
                &format!("review:{rejected_review}"),
            )
            .len(),
            events_of(
                events,
                "review.expired",
                &format!("review:{approved_review}"),
            )
            .len(),
            events_of(
                events,
                "review.escalated",
                &format!("review:{escalated_review}"),
            )
            .len(),
            events_of(events, "action.decided", &format!("action:{rejected}")).len(),
            events_of(events, "action.decided", &format!("action:{approved}")).len(),
        )
    };
    assert_eq!(count(&all_events(&app).await), (1, 1, 1, 1, 1));

    // More background sweeps and a second restart: nothing fires again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let app = app.restart(Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(&all_events(&app).await), (1, 1, 1, 1, 1));
    assert_eq!(app.action(rejected).await["status"], "expired");
    assert_eq!(app.action(approved).await["status"], "approved");
    assert_eq!(review(&app, rejected_review).await["status"], "expired");
    assert_eq!(review(&app, escalated_review).await["priority"], 103);
    verify_chain(&app).await;
}

#[tokio::test]
async fn every_acknowledged_write_survives_a_restart() {
    let app = TestApp::spawn().await;
    // Policy versions 1 and 2.
    app.put_policy("[[rule]]\nname = \"all\"\nwhen = \"true\"\nthen = \"review\"\n")
        .await;
    app.put_policy(REFUND_POLICY).await;
    // Keys, in this workspace and another.
    let carol = app.key("default", "carol", Role::Reviewer).await;
    let other_admin = app.key("other", "boss", Role::Admin).await;

    // Actions in every immediate state, and decisions.
    let (_, approved) = app
        .submit(json!({"name": "lookup_order", "arguments": {"order": "A1"}}))
        .await;
    let (_, blocked) = app
        .submit(json!({"name": "delete_account", "arguments": {}}))
        .await;
    let (_, to_approve) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 10}}))
        .await;
    let (_, to_edit) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 20}}))
        .await;
    let (_, to_reject) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 30}}))
        .await;
    let (_, open) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 900}}))
        .await;
    let rid = |a: &Value| a["review_id"].as_str().expect("a review").to_owned();
    let (s, _) = app
        .decide(
            &app.ann,
            &rid(&to_approve),
            json!({"verdict": "approve", "comment": "fine"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .decide(
            &carol,
            &rid(&to_edit),
            json!({"verdict": "edit", "arguments": {"amount": 15}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .decide(&app.bob, &rid(&to_reject), json!({"verdict": "reject"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    // One of two approvals on the four-eyes review.
    let (s, _) = app
        .decide(&app.ann, &rid(&open), json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK);

    // A burst of concurrent submissions: group-committed, each acknowledged.
    let burst = futures::future::join_all(
        (0..40).map(|i| app.submit(json!({"name": "lookup_order", "arguments": {"order": i}}))),
    )
    .await;
    let mut burst_ids = Vec::new();
    for (s, a) in &burst {
        assert_eq!(*s, StatusCode::CREATED, "{a}");
        burst_ids.push(a["id"].as_str().expect("an id").to_owned());
    }

    let ids: Vec<String> = [
        &approved,
        &blocked,
        &to_approve,
        &to_edit,
        &to_reject,
        &open,
    ]
    .iter()
    .map(|a| a["id"].as_str().expect("an id").to_owned())
    .collect();
    let mut before = Vec::new();
    for id in &ids {
        before.push(app.action(id).await);
    }
    let events_before = all_events(&app).await;
    let open_review_before = review(&app, &rid(&open)).await;

    let app = app.restart(Duration::from_millis(0)).await;

    for (id, was) in ids.iter().zip(&before) {
        let now = app.action(id).await;
        assert_eq!(&now, was, "action {id} changed across the restart");
    }
    assert_eq!(before[0]["status"], "approved");
    assert_eq!(before[1]["status"], "blocked");
    assert_eq!(before[2]["status"], "approved");
    assert_eq!(before[2]["decision"]["verdict"], "approve");
    assert_eq!(before[2]["decision"]["comment"], "fine");
    assert_eq!(before[3]["status"], "approved");
    assert_eq!(before[3]["arguments"], json!({"amount": 15}));
    assert_eq!(before[3]["decision"]["verdict"], "edit");
    assert_eq!(before[4]["status"], "rejected");
    assert_eq!(before[5]["status"], "pending");
    for id in &burst_ids {
        assert_eq!(app.action(id).await["status"], "approved");
    }
    let open_review = review(&app, &rid(&open)).await;
    assert_eq!(open_review, open_review_before);
    assert_eq!(open_review["approvals"], 1);
    assert_eq!(open_review["decisions"].as_array().map(Vec::len), Some(1));

    // The policy, at version 2.
    let resp = app
        .request(Method::GET, "/v1/policy", &app.admin)
        .send()
        .await
        .expect("GET /v1/policy");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("loopgate-policy-version")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    assert_eq!(resp.text().await.unwrap_or_default(), REFUND_POLICY);

    // The keys.
    let (s, body) = app.send(app.get("/v1/reviews", &carol)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = app.send(app.get("/v1/audit", &other_admin)).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // The log, unchanged and intact; the second approval still completes the review.
    let events_after = all_events(&app).await;
    assert_eq!(events_after, events_before);
    let verdict = verify_chain(&app).await;
    assert_eq!(verdict["events"], events_before.len());
    let (s, body) = app
        .decide(&app.bob, &rid(&open), json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(app.action(&ids[5]).await["status"], "approved");
    verify_chain(&app).await;
}

/// A crash, not a graceful stop: `loopgate serve` killed with SIGKILL right after acknowledging
/// writes. Every acknowledged write is in the database afterwards, and the log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_kill() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    let agent = create_key(&url, "bot", "agent");
    let reviewer = create_key(&url, "ann", "reviewer");
    let admin = create_key(&url, "root", "admin");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, REFUND_POLICY).expect("write the policy");
    let mut serve = Serve::start(&url, Some(&policy)).await;
    let client = reqwest::Client::new();

    // Concurrent submissions; each acknowledged with 201.
    let submissions = futures::future::join_all((0..30).map(|i| {
        let name = if i % 3 == 0 {
            "issue_refund"
        } else {
            "lookup_order"
        };
        client
            .post(format!("{}/v1/actions", serve.base))
            .bearer_auth(&agent)
            .json(&json!({"name": name, "arguments": {"amount": i}}))
            .send()
    }))
    .await;
    let mut acknowledged = Vec::new();
    for resp in submissions {
        let resp = resp.expect("the server answers");
        assert_eq!(resp.status(), StatusCode::CREATED);
        let a: Value = resp.json().await.expect("JSON");
        acknowledged.push(a);
    }
    // A decision, acknowledged.
    let review_id = acknowledged[0]["review_id"]
        .as_str()
        .expect("a review")
        .to_owned();
    let resp = client
        .post(format!("{}/v1/reviews/{review_id}/decision", serve.base))
        .bearer_auth(&reviewer)
        .json(&json!({"verdict": "approve"}))
        .send()
        .await
        .expect("decide");
    assert_eq!(resp.status(), StatusCode::OK);

    serve.kill();

    // The CLI sees an intact log: 3 keys, 1 policy, 30 actions (+10 reviews), 1 decision (2).
    let out = loopgate(&["--database", &url, "audit", "verify"], None);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout.trim(), "ok 46 events");

    let server = Server::start(&url).await;
    for a in &acknowledged {
        let id = a["id"].as_str().expect("an id");
        let (s, stored) = server.get(&format!("/v1/actions/{id}"), &agent).await;
        assert_eq!(s, StatusCode::OK, "acknowledged action {id} lost: {stored}");
        assert_eq!(stored["arguments"], a["arguments"]);
    }
    let first = acknowledged[0]["id"].as_str().expect("an id");
    let (_, stored) = server.get(&format!("/v1/actions/{first}"), &agent).await;
    assert_eq!(stored["status"], "approved", "{stored}");
    assert_eq!(stored["decision"]["by"], json!(["ann"]), "{stored}");
    let (s, verdict) = server.get("/v1/audit/verify", &admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(verdict["ok"], true, "{verdict}");
    drop(server);

    // Killed mid-burst: whatever was acknowledged is there; the log still verifies.
    let mut serve = Serve::start(&url, None).await;
    let mut in_flight: futures::stream::FuturesUnordered<_> = (0..100)
        .map(|i| {
            client
                .post(format!("{}/v1/actions", serve.base))
                .bearer_auth(&agent)
                .json(&json!({"name": "lookup_order", "arguments": {"burst": i}}))
                .send()
        })
        .collect();
    let mut acknowledged = Vec::new();
    while let Some(resp) = futures::StreamExt::next(&mut in_flight).await {
        if let Ok(resp) = resp {
            if resp.status() == StatusCode::CREATED {
                if let Ok(a) = resp.json::<Value>().await {
                    acknowledged.push(a);
                }
            }
        }
        if acknowledged.len() == 10 {
            serve.kill();
        }
    }
    assert!(acknowledged.len() >= 10, "{}", acknowledged.len());
    let out = loopgate(&["--database", &url, "audit", "verify"], None);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let server = Server::start(&url).await;
    for a in &acknowledged {
        let id = a["id"].as_str().expect("an id");
        let (s, stored) = server.get(&format!("/v1/actions/{id}"), &agent).await;
        assert_eq!(s, StatusCode::OK, "acknowledged action {id} lost: {stored}");
    }
    // Each stored action has its event, and each event its action.
    let (_, page) = server.get("/v1/audit?after=46&limit=1000", &admin).await;
    let created = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "action.created")
        .count();
    assert!(
        created >= acknowledged.len(),
        "{created} < {}",
        acknowledged.len()
    );
    let (s, verdict) = server.get("/v1/audit/verify", &admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(verdict["ok"], true, "{verdict}");
}

/// Two servers on one database (two nodes, or an old and a new process overlapping): each
/// sweeps, and still each timeout fires exactly once.
#[tokio::test]
async fn two_servers_on_one_database_fire_each_timeout_once() {
    let app = TestApp::spawn().await;
    app.put_policy(EVERY_TIMEOUT).await;
    let second = Server::start(&app.db.url).await;
    let mut reviews = Vec::new();
    for i in 0..10 {
        let name = ["refund_reject", "refund_approve"][i % 2];
        let (s, a) = app
            .submit(json!({"name": name, "arguments": {"i": i}}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        reviews.push((
            a["id"].as_str().expect("an id").to_owned(),
            a["review_id"].as_str().expect("a review").to_owned(),
        ));
    }
    for (id, _) in &reviews {
        app.wait_for_action(id, |a| a["status"] != "pending").await;
    }
    // Several more sweeps of both.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = all_events(&app).await;
    for (id, rid) in &reviews {
        assert_eq!(
            events_of(&events, "review.expired", &format!("review:{rid}")).len(),
            1,
            "review {rid}"
        );
        assert_eq!(
            events_of(&events, "action.decided", &format!("action:{id}")).len(),
            1,
            "action {id}"
        );
    }
    let (s, verdict) = second.get("/v1/audit/verify", &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(verdict["ok"], true, "{verdict}");
}
