//! Retention through the real parts: the admin API for the period, `loopgate prune` (the real
//! binary, beside a running server) on a database whose old records were backdated with SQL,
//! the audit chain verifying after a prune and still naming tampering, the server's scheduled
//! prune, and `loopgate backup` of a SQLite database while a server writes to it.

use crate::cli::{create_key, loopgate, Server};
use crate::conversations::{change, post};
use crate::helpers::*;
use loopgate_domain::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// 500 days in milliseconds: older than the default 400-day retention.
const OLD: i64 = 500 * 24 * 60 * 60 * 1000;

const POLICY: &str = r#"
[[rule]]
name = "refunds need review"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "review"

[[rule]]
name = "audits are sampled"
applies_to = "action"
when = 'action.name == "audit_me"'
then = "approve"
sample = 1.0

[[rule]]
name = "everything else runs"
when = "true"
then = "approve"
"#;

async fn get_retention(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.send(app.get("/v1/workspace/retention", token)).await
}

async fn put_retention(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    app.send(
        app.request(Method::PUT, "/v1/workspace/retention", token)
            .json(&body),
    )
    .await
}

#[tokio::test]
async fn retention_is_400_days_until_an_admin_sets_it() {
    let app = TestApp::spawn().await;
    let (s, r) = get_retention(&app, &app.admin).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r, json!({"workspace": "default", "days": 400}));

    let (s, r) = put_retention(&app, &app.admin, json!({"days": 183})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["days"], 183);
    let (_, r) = get_retention(&app, &app.admin).await;
    assert_eq!(r["days"], 183);

    // The change is in the audit log, with who made it.
    let (s, page) = app.send(app.get("/v1/audit?limit=1000", &app.admin)).await;
    assert_eq!(s, StatusCode::OK);
    let events = page["events"].as_array().expect("events");
    let changed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "retention.updated")
        .collect();
    assert_eq!(changed.len(), 1, "{page}");
    assert_eq!(changed[0]["actor"], "admin:root");
    assert_eq!(
        changed[0]["data"],
        json!({"days": 183, "previous_days": 400})
    );

    // Another workspace keeps its own period.
    let other = app.key("other", "boss", Role::Admin).await;
    let (_, r) = get_retention(&app, &other).await;
    assert_eq!(r, json!({"workspace": "other", "days": 400}));

    // Documented like every other route.
    let (s, doc) = app.send(app.get("/openapi.json", "")).await;
    assert_eq!(s, StatusCode::OK);
    let path = &doc["paths"]["/v1/workspace/retention"];
    assert!(path["get"].is_object() && path["put"].is_object(), "{path}");
}

#[tokio::test]
async fn only_admins_see_or_set_retention() {
    let app = TestApp::spawn().await;
    for token in [&app.agent, &app.ann] {
        let (s, e) = get_retention(&app, token).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
        let (s, e) = put_retention(&app, token, json!({"days": 365})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    }
    let (s, _) = get_retention(&app, "not-a-token").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = put_retention(&app, "not-a-token", json!({"days": 365})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, r) = get_retention(&app, &app.admin).await;
    assert_eq!(r["days"], 400, "nothing changed: {r}");
}

#[tokio::test]
async fn retention_under_six_months_is_refused_naming_days() {
    let app = TestApp::spawn().await;
    let (s, e) = put_retention(&app, &app.admin, json!({"days": 182})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["field"], "days", "{e}");
    let message = e["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("183") && message.contains("26(6)"), "{e}");

    for (body, field) in [
        (json!({"days": 0}), "days"),
        (json!({"days": -400}), "days"),
        (json!({"days": 36501}), "days"),
        (json!({"days": "400"}), "days"),
        (json!({"days": 400.5}), "days"),
        (json!({}), "days"),
        (json!({"days": 400, "months": 2}), "months"),
    ] {
        let (s, e) = put_retention(&app, &app.admin, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
    }
    let (s, e) = app
        .send(
            app.request(Method::PUT, "/v1/workspace/retention", &app.admin)
                .header("content-type", "application/json")
                .body("{\"days\": 4"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (_, r) = get_retention(&app, &app.admin).await;
    assert_eq!(r["days"], 400, "nothing changed: {r}");
}

/// Submit an action; (id, review id).
async fn submit(app: &TestApp, body: Value, key: Option<&str>) -> (String, Option<String>) {
    let mut req = app.post("/v1/actions", &app.agent).json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let (s, a) = app.send(req).await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    (
        a["id"].as_str().expect("an id").to_owned(),
        a["review_id"].as_str().map(str::to_owned),
    )
}

/// Open a conversation with a user message and an AI reply; (id, the reply's id).
async fn chat(app: &TestApp) -> (String, String) {
    let (s, c) = app
        .send(app.post("/v1/conversations", &app.agent).json(&json!({})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let cid = c["id"].as_str().expect("an id").to_owned();
    let (s, m) = post(app, &app.agent, &cid, "user", "where is my parcel?", None).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let (s, m) = post(app, &app.agent, &cid, "ai", "on its way", Some(0.9)).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["status"], "delivered", "{m}");
    (cid, m["id"].as_str().expect("an id").to_owned())
}

/// Move every record written so far `OLD` into the past, as if it were 500 days old.
fn backdate_everything(db: &TestDb) {
    db.exec(&format!(
        "UPDATE actions SET created_at = created_at - {OLD}, decided_at = decided_at - {OLD};
         UPDATE reviews SET created_at = created_at - {OLD}, decided_at = decided_at - {OLD};
         UPDATE decisions SET created_at = created_at - {OLD};
         UPDATE idempotency_keys SET created_at = created_at - {OLD};
         UPDATE conversations SET created_at = created_at - {OLD}, updated_at = updated_at - {OLD};
         UPDATE messages SET created_at = created_at - {OLD}, delivered_at = delivered_at - {OLD};
         UPDATE feedback SET created_at = created_at - {OLD};
         UPDATE outbox SET created_at = created_at - {OLD}, next_attempt_at = next_attempt_at - {OLD},
             delivered_at = delivered_at - {OLD};
         UPDATE events SET at_ms = at_ms - {OLD};"
    ));
}

/// `loopgate prune` output for one workspace, as kind → count.
fn counts(line: &str) -> BTreeMap<String, u64> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

async fn prune_cli(db: &TestDb, extra: &[&str]) -> crate::cli::Out {
    let mut args: Vec<String> = vec!["--database".into(), db.url.clone(), "prune".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        loopgate(&args, None)
    })
    .await
    .expect("the blocking task")
}

async fn verify_cli(db: &TestDb) -> crate::cli::Out {
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || loopgate(&["--database", &url, "audit", "verify"], None))
        .await
        .expect("the blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_old_final_records_keeps_open_work_and_the_chain_verifies() {
    let app = TestApp::spawn().await;
    app.put_policy(POLICY).await;

    // ---- 500 days ago ----
    let hook = {
        let (s, w) = app
            .send(app.post("/v1/webhooks", &app.admin).json(&json!({
                "url": "http://127.0.0.1:9/hook",
                "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3ZzBmNlM+Zw=",
                "events": ["conversation.closed"],
            })))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{w}");
        w["id"].as_str().expect("an id").to_owned()
    };
    let (ran, _) = submit(
        &app,
        json!({"name": "lookup_order", "arguments": {}}),
        Some("k-1"),
    )
    .await;
    let (approved, approved_review) = submit(
        &app,
        json!({"name": "issue_refund", "arguments": {"amount": 20}}),
        None,
    )
    .await;
    let approved_review = approved_review.expect("a review");
    let (s, d) = app
        .decide(&app.ann, &approved_review, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let (waiting, waiting_review) = submit(
        &app,
        json!({"name": "issue_refund", "arguments": {"amount": 30}}),
        None,
    )
    .await;
    let waiting_review = waiting_review.expect("a review");
    // Approved, but its QA sample is still to be graded: open work.
    let (sampled, _) = submit(&app, json!({"name": "audit_me", "arguments": {}}), None).await;
    let (s, qa) = app.send(app.get("/v1/reviews?kind=qa", &app.ann)).await;
    assert_eq!(s, StatusCode::OK, "{qa}");
    assert_eq!(qa["reviews"][0]["action_id"], sampled.as_str(), "{qa}");
    let qa_review = qa["reviews"][0]["id"]
        .as_str()
        .expect("a QA review")
        .to_owned();
    let (closed, reply) = chat(&app).await;
    let (s, f) = app
        .send(
            app.post(&format!("/v1/messages/{reply}/feedback"), &app.agent)
                .json(&json!({"rating": "up"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    let (s, c) = change(&app, &app.agent, &closed, "close", None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let (open, _) = chat(&app).await;
    // Final, but part of a conversation still going on: it stays with it.
    let (in_open, _) = submit(
        &app,
        json!({"name": "lookup_order", "arguments": {}, "conversation_id": open}),
        None,
    )
    .await;
    // Deleting the endpoint settles its pending delivery as dead.
    let (s, _) = app
        .send(app.request(Method::DELETE, &format!("/v1/webhooks/{hook}"), &app.admin))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let user = app
        .store
        .create_user("default", "carol", Role::Reviewer, "not-a-real-hash")
        .await
        .expect("a user");
    let expired = app
        .store
        .create_session(&user, 60_000)
        .await
        .expect("a session");
    let live = app
        .store
        .create_session(&user, 60_000)
        .await
        .expect("a session");
    app.db.exec(&format!(
        "UPDATE sessions SET expires_at = 1 WHERE token_hash = '{}';",
        loopgate_domain::auth::token_hash(&expired.token)
    ));
    let transcript = |cid: String| {
        let app = &app;
        async move {
            app.store
                .get_conversation("default", cid.parse().expect("a uuid"))
                .await
                .expect("read")
        }
    };
    let closed_messages = transcript(closed.clone())
        .await
        .expect("the conversation")
        .messages
        .len() as u64;
    let old_head = app.store.audit_head("default").await.expect("head");
    backdate_everything(&app.db);

    // ---- today ----
    let (fresh, _) = submit(&app, json!({"name": "lookup_order", "arguments": {}}), None).await;
    let (fresh_closed, _) = chat(&app).await;
    let (s, _) = change(&app, &app.agent, &fresh_closed, "close", None).await;
    assert_eq!(s, StatusCode::OK);

    // A dry run counts and removes nothing.
    let out = prune_cli(&app.db, &["--dry-run"]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with("default: would remove "),
        "{}",
        out.stdout
    );
    let would = counts(&out.stdout);
    assert!(app
        .store
        .get_action("default", ran.parse().unwrap())
        .await
        .unwrap()
        .is_some());

    // The real thing, beside the running server.
    let head_before = app.store.audit_head("default").await.expect("head");
    let out = prune_cli(&app.db, &[]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with("default: removed "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("retention 400 days"), "{}", out.stdout);
    let removed = counts(&out.stdout);
    let expected: BTreeMap<String, u64> = [
        ("actions", 2),
        ("reviews", 1),
        ("decisions", 1),
        ("idempotency_keys", 1),
        ("conversations", 1),
        ("messages", closed_messages),
        ("feedback", 1),
        ("deliveries", 1),
        ("sessions", 1),
        ("events", old_head as u64),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(removed, expected, "{}", out.stdout);
    assert_eq!(would, expected, "the dry run said the same: {}", out.stdout);

    // Gone: the final old records. Kept: open work whatever its age, and everything recent.
    let action = |id: &str| {
        let (app, id) = (&app, id.parse().expect("a uuid"));
        async move { app.store.get_action("default", id).await.expect("read") }
    };
    let review = |id: &str| {
        let (app, id) = (&app, id.parse().expect("a uuid"));
        async move { app.store.get_review("default", id).await.expect("read") }
    };
    assert!(action(&ran).await.is_none());
    assert!(action(&approved).await.is_none());
    assert!(review(&approved_review).await.is_none());
    assert!(transcript(closed.clone()).await.is_none());
    let w = action(&waiting).await.expect("the pending action stays");
    assert_eq!(w.action.status.as_str(), "pending");
    let r = review(&waiting_review).await.expect("its review stays");
    assert_eq!(r.review.status.as_str(), "pending");
    assert!(
        action(&sampled).await.is_some(),
        "an action with an open QA review stays"
    );
    assert!(review(&qa_review).await.is_some());
    let o = transcript(open.clone())
        .await
        .expect("the open conversation stays");
    assert_eq!(o.messages.len(), 2);
    assert!(action(&fresh).await.is_some());
    assert!(action(&in_open).await.is_some());
    assert!(transcript(fresh_closed.clone()).await.is_some());
    assert!(app
        .store
        .session(&live.token)
        .await
        .expect("read")
        .is_some());
    assert!(app
        .store
        .session(&expired.token)
        .await
        .expect("read")
        .is_none());
    // The replay of a pruned idempotency key is a new action now, not an error.
    let (again, _) = submit(
        &app,
        json!({"name": "lookup_order", "arguments": {}}),
        Some("k-1"),
    )
    .await;
    assert_ne!(again, ran);

    // The log starts after the pruned events, with a checkpoint that names the last of them.
    let (s, page) = app.send(app.get("/v1/audit?limit=1000", &app.admin)).await;
    assert_eq!(s, StatusCode::OK);
    let events = page["events"].as_array().expect("events");
    assert_eq!(events[0]["seq"], old_head + 1, "{page}");
    let checkpoint = events
        .iter()
        .find(|e| e["type"] == "audit.pruned")
        .expect("a checkpoint");
    assert_eq!(checkpoint["seq"], head_before + 1, "{checkpoint}");
    assert_eq!(checkpoint["actor"], "system:prune");
    assert_eq!(
        checkpoint["data"]["last_pruned_seq"], old_head,
        "{checkpoint}"
    );
    assert_eq!(checkpoint["data"]["pruned"], old_head, "{checkpoint}");
    assert_eq!(checkpoint["data"]["removed"]["actions"], 2, "{checkpoint}");
    assert_eq!(checkpoint["data"]["retention_days"], 400, "{checkpoint}");

    // Verifies, through the CLI and the API.
    let out = verify_cli(&app.db).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let remaining = events.len();
    assert_eq!(out.stdout.trim(), format!("ok {remaining} events"));
    let (_, v) = app.send(app.get("/v1/audit/verify", &app.admin)).await;
    assert_eq!(v["ok"], true, "{v}");

    // Again: nothing more to remove, and no new checkpoint.
    let out = prune_cli(&app.db, &["--workspace", "default"]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        counts(&out.stdout).values().all(|n| *n == 0),
        "{}",
        out.stdout
    );
    let head_after = app.store.audit_head("default").await.expect("head");
    let (_, page) = app
        .send(app.get(&format!("/v1/audit?after={}", head_after - 1), &app.admin))
        .await;
    assert_ne!(page["events"][0]["type"], "audit.pruned", "{page}");
}

/// A stopped app whose events up to its head are 500 days old and then pruned: its database and
/// the seq of the first event that remains.
async fn pruned_database() -> (TestDb, i64) {
    let mut app = TestApp::spawn().await;
    app.put_policy(POLICY).await;
    for _ in 0..3 {
        submit(&app, json!({"name": "lookup_order", "arguments": {}}), None).await;
    }
    let old_head = app.store.audit_head("default").await.expect("head");
    backdate_everything(&app.db);
    submit(&app, json!({"name": "lookup_order", "arguments": {}}), None).await;
    let report = app.store.prune("default", false).await.expect("prune");
    assert_eq!(report.removed.events, old_head as u64);
    assert_eq!(report.removed.actions, 3);
    let db = app.db.clone();
    app.stop().await;
    drop(app);
    tokio::time::sleep(Duration::from_millis(50)).await;
    (db, old_head + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_after_a_prune_is_still_named() {
    let (db, first) = pruned_database().await;
    let out = verify_cli(&db).await;
    assert_eq!(out.code, 0, "{}", out.stdout);

    // The first remaining event deleted: the chain starts where no checkpoint says it may.
    db.exec(&format!(
        "DELETE FROM events WHERE workspace = 'default' AND seq = {first};"
    ));
    let out = verify_cli(&db).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.starts_with(&format!("bad seq {first} ")),
        "{}",
        out.stdout
    );

    // An edited event after the prune.
    let (db, first) = pruned_database().await;
    let edited = first + 1;
    db.exec(&format!(
        "UPDATE events SET actor = 'agent:mallory' WHERE workspace = 'default' AND seq = {edited};"
    ));
    let out = verify_cli(&db).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.starts_with(&format!("bad seq {edited} ")),
        "{}",
        out.stdout
    );

    // The checkpoint itself removed: the start is unexplained again.
    let (db, _) = pruned_database().await;
    db.exec("DELETE FROM events WHERE workspace = 'default' AND type = 'audit.pruned';");
    let out = verify_cli(&db).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.starts_with("bad seq "), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_refuses_a_chain_that_does_not_verify() {
    let mut app = TestApp::spawn().await;
    let (ran, _) = submit(&app, json!({"name": "lookup_order", "arguments": {}}), None).await;
    backdate_everything(&app.db);
    app.db
        .exec("UPDATE events SET actor = 'agent:mallory' WHERE workspace = 'default' AND seq = 2;");
    let out = prune_cli(&app.db, &[]).await;
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains("does not verify") && line.contains("seq 2"),
        "{line}"
    );
    // Nothing was removed: the evidence stays.
    assert!(app
        .store
        .get_action("default", ran.parse().unwrap())
        .await
        .unwrap()
        .is_some());
    app.stop().await;
    let out = verify_cli(&app.db).await;
    assert_eq!(out.code, 1);
    assert!(out.stdout.starts_with("bad seq 2 "), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_honours_each_workspaces_own_period() {
    let app = TestApp::spawn().await;
    app.put_policy(POLICY).await;
    let other_agent = app.key("other", "bot2", Role::Agent).await;
    let other_admin = app.key("other", "boss", Role::Admin).await;
    let (s, _) = app
        .send(
            app.request(Method::PUT, "/v1/policy", &other_admin)
                .body(POLICY),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (ran, _) = submit(&app, json!({"name": "lookup_order", "arguments": {}}), None).await;
    let (s, a) = app
        .send(
            app.post("/v1/actions", &other_agent)
                .json(&json!({"name": "lookup_order", "arguments": {}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let other_action = a["id"].as_str().expect("an id").to_owned();
    // 300 days old: past a 200-day period, within the default 400.
    let days300 = 300 * 24 * 60 * 60 * 1000_i64;
    app.db.exec(&format!(
        "UPDATE actions SET created_at = created_at - {days300}, decided_at = decided_at - {days300};
         UPDATE events SET at_ms = at_ms - {days300};"
    ));
    let out = prune_cli(&app.db, &[]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        counts(&out.stdout).values().all(|n| *n == 0),
        "{}",
        out.stdout
    );

    // The CLI shows and sets the period, refusing less than six months.
    let url = app.db.url.clone();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            loopgate(&args, None)
        })
    };
    let args = |rest: &[&str]| {
        let mut v = vec!["--database".to_owned(), url.clone(), "retention".to_owned()];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let out = run(args(&["set", "90", "--workspace", "other"]))
        .await
        .unwrap();
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("days") && out.stderr.contains("183"),
        "{}",
        out.stderr
    );
    let out = run(args(&["set", "200", "--workspace", "other"]))
        .await
        .unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run(args(&["show"])).await.unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "default: 400 days\nother: 200 days\n");

    let out = prune_cli(&app.db, &["--workspace", "other"]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with("other: removed actions=1 "),
        "{}",
        out.stdout
    );
    assert!(app
        .store
        .get_action("other", other_action.parse().unwrap())
        .await
        .unwrap()
        .is_none());
    assert!(app
        .store
        .get_action("default", ran.parse().unwrap())
        .await
        .unwrap()
        .is_some());
    let out = prune_cli(&app.db, &["--workspace", "nope"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
    let out = verify_cli(&app.db).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_prunes_on_its_own_schedule() {
    let app = TestApp::spawn_with(loopgate_server::Config {
        prune_interval: Some(Duration::from_millis(200)),
        ..test_config()
    })
    .await;
    app.put_policy(POLICY).await;
    let (ran, _) = submit(&app, json!({"name": "lookup_order", "arguments": {}}), None).await;
    backdate_everything(&app.db);
    let id = ran.parse().unwrap();
    for _ in 0..100 {
        if app.store.get_action("default", id).await.unwrap().is_none() {
            let (_, v) = app.send(app.get("/v1/audit/verify", &app.admin)).await;
            assert_eq!(v["ok"], true, "{v}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the scheduled prune never removed the old action");
}

// ---- backup ----

#[test]
fn backup_of_postgres_points_at_pg_dump() {
    let out = loopgate(
        &[
            "--database",
            "postgres://postgres@127.0.0.1:5432/loopgate",
            "backup",
            "/tmp/never-written.db",
        ],
        None,
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("pg_dump"), "{line}");
    assert!(!std::path::Path::new("/tmp/never-written.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_busy_server_restores_and_verifies() {
    // Backups are of SQLite files, whichever backend the rest of the suite runs on.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("live.db").display());
    let agent = create_key(&url, "bot", "agent");
    let server = Arc::new(Server::start(&url).await);

    // Writers keep submitting while the backup runs; each id is recorded once acknowledged.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..2 {
        let (server, acked, stop, agent) =
            (server.clone(), acked.clone(), stop.clone(), agent.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            // Bounded in time, whatever happens to the test.
            let started = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                let (s, a) = server
                    .send(
                        Method::POST,
                        "/v1/actions",
                        &agent,
                        Some(json!({"name": "lookup_order", "arguments": {"n": n}})),
                    )
                    .await;
                assert_eq!(s, StatusCode::CREATED, "{a}");
                acked
                    .lock()
                    .expect("lock")
                    .push(a["id"].as_str().expect("an id").to_owned());
                n += 1;
            }
        }));
    }
    while acked.lock().expect("lock").len() < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before: Vec<String> = acked.lock().expect("lock").clone();
    let copy = dir.path().join("copy.db");
    let args = [
        "--database".to_owned(),
        url.clone(),
        "backup".to_owned(),
        copy.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        loopgate(&args, None)
    })
    .await
    .expect("the blocking task");
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("backed up "), "{}", out.stdout);
    // The writers went on through the backup and after it: the copy was taken mid-stream.
    let after = acked.lock().expect("lock").len();
    let waited = std::time::Instant::now();
    while acked.lock().expect("lock").len() < after + 20 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the server stopped acknowledging writes after the backup"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("a writer");
    }

    // The copy verifies and holds every write acknowledged before the backup began.
    let copy_url = format!("sqlite://{}", copy.display());
    let out = loopgate(&["--database", &copy_url, "audit", "verify"], None);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.starts_with("ok "), "{}", out.stdout);
    let restored = loopgate_store::open_existing(&copy_url)
        .await
        .expect("open the copy");
    for id in &before {
        let found = restored
            .get_action("default", id.parse().expect("a uuid"))
            .await
            .expect("read the copy");
        assert!(
            found.is_some(),
            "action {id} was acknowledged before the backup"
        );
    }

    // Never over an existing file: one line, exit 1, the file untouched.
    let size = std::fs::metadata(&copy).expect("the copy").len();
    let out = loopgate(
        &["--database", &url, "backup", &copy.display().to_string()],
        None,
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(std::fs::metadata(&copy).expect("the copy").len(), size);
    // No partial files left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("the directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("partial")), "{names:?}");
}
