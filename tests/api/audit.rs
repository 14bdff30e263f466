//! The audit log: one event per state change, a gap-free hash chain, paging, and tamper
//! detection by `loopgate audit verify` on the database file itself.

use crate::cli::{loopgate, Server};
use crate::helpers::*;
use loopgate_domain::audit::{Event, GENESIS_HASH};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// Every event of the default workspace, read page by page through `GET /v1/audit`.
pub(crate) async fn all_events(app: &TestApp) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let (s, page) = app
            .send(app.get(&format!("/v1/audit?after={after}&limit=1000"), &app.admin))
            .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let events = page["events"].as_array().expect("events").clone();
        let done = page["next_after"].is_null();
        if let Some(last) = events.last() {
            after = last["seq"].as_i64().expect("a seq");
        }
        out.extend(events);
        if done {
            return out;
        }
    }
}

/// The events of one type about one subject.
pub(crate) fn events_of<'e>(events: &'e [Value], kind: &str, subject: &str) -> Vec<&'e Value> {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["subject"] == subject)
        .collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// JSON with object keys sorted and no white space, written here independently of the server.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        scalar => scalar.to_string(),
    }
}

/// The contract's `hash = SHA-256(prev_hash ‖ canonical JSON of the rest)`, computed with the
/// system's `sha256sum`, not with the server's code.
fn contract_hash(e: &Value) -> String {
    let rest = json!({
        "seq": e["seq"], "workspace": e["workspace"], "at": e["at"], "actor": e["actor"],
        "type": e["type"], "subject": e["subject"], "data": e["data"],
    });
    let input = format!(
        "{}{}",
        e["prev_hash"].as_str().unwrap_or(""),
        canonical(&rest)
    );
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(input.as_bytes())
            .expect("write to sha256sum");
    }
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned()
}

fn of_type<'e>(events: &'e [Value], kind: &str) -> &'e Value {
    events
        .iter()
        .find(|e| e["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {events:#?}"))
}

/// Seq 1..N without gaps, each `prev_hash` the previous `hash`, each `hash` matching the content.
fn assert_chain(events: &[Value]) {
    let mut prev = GENESIS_HASH.to_owned();
    for (i, raw) in events.iter().enumerate() {
        let e: Event = serde_json::from_value(raw.clone()).expect("an event");
        assert_eq!(e.seq, i as i64 + 1, "a gap or reordering at {raw}");
        assert_eq!(e.workspace, "default");
        assert_eq!(
            e.prev_hash, prev,
            "event {} does not link to its predecessor",
            e.seq
        );
        assert_eq!(e.hash.len(), 64, "{raw}");
        assert_eq!(
            e.expected_hash(),
            e.hash,
            "event {}'s hash does not cover it",
            e.seq
        );
        assert!(!e.at.is_empty() && !e.actor.is_empty(), "{raw}");
        prev = e.hash.clone();
    }
}

#[tokio::test]
async fn every_state_change_appends_one_chained_event() {
    let app = TestApp::spawn().await;
    // The harness created four keys.
    let mut seen = all_events(&app).await;
    assert_eq!(types(&seen), vec!["key.created"; 4]);
    assert_chain(&seen);

    // Each step, and the events it must append: exactly those (in any order within the step).
    let mut expect_new = |events: Vec<Value>, expected: &[&str]| {
        let new: Vec<Value> = events[seen.len()..].to_vec();
        let mut got = types(&new);
        got.sort();
        let mut want: Vec<String> = expected.iter().map(|t| t.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{new:#?}");
        assert_eq!(&events[..seen.len()], &seen[..], "earlier events changed");
        assert_chain(&events);
        seen = events;
        new
    };

    app.put_policy(REFUND_POLICY).await;
    let new = expect_new(all_events(&app).await, &["policy.updated"]);
    assert_eq!(new[0]["actor"], "admin:root");
    assert_eq!(new[0]["data"]["version"], 1);

    // Unchanged policy text: no new version, no event.
    app.put_policy(REFUND_POLICY).await;
    expect_new(all_events(&app).await, &[]);

    let (_, a) = app
        .submit(json!({"name": "lookup_order", "arguments": {"order": "A1"}}))
        .await;
    let new = expect_new(all_events(&app).await, &["action.created"]);
    assert_eq!(
        new[0]["subject"],
        format!("action:{}", a["id"].as_str().unwrap_or(""))
    );
    assert_eq!(new[0]["actor"], "agent:bot");
    assert_eq!(new[0]["data"]["status"], "approved");

    let (_, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 20}}))
        .await;
    let rid = a["review_id"].as_str().expect("a review").to_owned();
    expect_new(
        all_events(&app).await,
        &["action.created", "review.created"],
    );

    let (s, _) = app
        .send(app.post(&format!("/v1/reviews/{rid}/claim"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK);
    expect_new(all_events(&app).await, &["review.claimed"]);

    // A refused decision (someone else holds the claim) changes nothing, and logs nothing.
    let (s, _) = app
        .decide(&app.bob, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    expect_new(all_events(&app).await, &[]);

    let (s, _) = app
        .decide(
            &app.ann,
            &rid,
            json!({"verdict": "reject", "comment": "no"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let new = expect_new(
        all_events(&app).await,
        &["review.decided", "action.decided"],
    );
    assert_eq!(of_type(&new, "review.decided")["actor"], "reviewer:ann");
    assert_eq!(
        of_type(&new, "action.decided")["data"]["status"],
        "rejected"
    );

    let (s, _) = app
        .decide(&app.ann, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    expect_new(all_events(&app).await, &[]);

    let (_, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 21}}))
        .await;
    expect_new(
        all_events(&app).await,
        &["action.created", "review.created"],
    );
    let (s, _) = app
        .send(app.post(
            &format!("/v1/actions/{}/cancel", a["id"].as_str().unwrap_or("")),
            &app.agent,
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    let new = expect_new(
        all_events(&app).await,
        &["review.cancelled", "action.decided"],
    );
    assert_eq!(
        of_type(&new, "action.decided")["data"]["status"],
        "cancelled"
    );

    // Reads append nothing.
    let (s, _) = app.send(app.get("/v1/reviews?status=all", &app.ann)).await;
    assert_eq!(s, StatusCode::OK);
    let _ = app.action(a["id"].as_str().unwrap_or("")).await;
    expect_new(all_events(&app).await, &[]);

    let (s, body) = app.send(app.get("/v1/audit/verify", &app.admin)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["events"], seen.len());

    // The hashes follow the documented formula.
    for e in &seen {
        assert_eq!(e["hash"], contract_hash(e), "seq {}", e["seq"]);
    }
}

#[tokio::test]
async fn audit_pages_with_after_and_limit() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    for i in 0..6 {
        let (s, _) = app
            .submit(json!({"name": "lookup_order", "arguments": {"order": i}}))
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let all = all_events(&app).await;
    assert_eq!(all.len(), 4 + 1 + 6);
    assert_chain(&all);

    // Default: from the start.
    let (s, page) = app.send(app.get("/v1/audit", &app.admin)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["events"], Value::Array(all.clone()));
    assert!(page["next_after"].is_null(), "{page}");

    let mut paged = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let (s, page) = app
            .send(app.get(&format!("/v1/audit?after={after}&limit=4"), &app.admin))
            .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let events = page["events"].as_array().expect("events").clone();
        assert!(events.len() <= 4);
        pages += 1;
        paged.extend(events.clone());
        match page["next_after"].as_i64() {
            Some(n) => {
                assert_eq!(Some(n), events.last().and_then(|e| e["seq"].as_i64()));
                after = n;
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(paged, all);
    assert_eq!(pages, 3, "11 events in pages of 4");

    let (s, page) = app.send(app.get("/v1/audit?after=9", &app.admin)).await;
    assert_eq!(s, StatusCode::OK);
    let seqs: Vec<i64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .collect();
    assert_eq!(seqs, vec![10, 11]);
    let (s, page) = app.send(app.get("/v1/audit?after=11", &app.admin)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["events"], json!([]));

    for (query, field) in [
        ("after=-1", "after"),
        ("after=x", "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
    ] {
        let (s, body) = app
            .send(app.get(&format!("/v1/audit?{query}"), &app.admin))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
}

/// Run SQL against the database directly, as an attacker with database access would.
fn sql(db: &TestDb, statements: &str) {
    db.exec(statements);
}

/// A stopped app whose log holds a few events of several kinds: its database, the number of
/// events, and its admin token.
async fn stopped_app_with_history() -> (TestDb, usize, String) {
    let mut app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let (_, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 20}}))
        .await;
    let rid = a["review_id"].as_str().expect("a review").to_owned();
    let (s, _) = app
        .decide(&app.ann, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .submit(json!({"name": "lookup_order", "arguments": {}}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // 4 keys, the policy, action + review, decision + action decided, an approved action.
    let n = all_events(&app).await.len();
    assert_eq!(n, 10);
    let (db, admin) = (app.db.clone(), app.admin.clone());
    app.stop().await;
    drop(app);
    // Let the pools close their connections.
    tokio::time::sleep(Duration::from_millis(50)).await;
    (db, n, admin)
}

/// `loopgate audit verify` on the database: (exit code, stdout).
fn verify(db: &TestDb) -> (i32, String) {
    let out = loopgate(&["--database", &db.url, "audit", "verify"], None);
    (out.code, out.stdout)
}

#[tokio::test]
async fn verify_accepts_an_intact_log() {
    let (db, n, _) = stopped_app_with_history().await;
    let (code, stdout) = verify(&db);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(stdout.trim(), format!("ok {n} events"));
    let out = loopgate(
        &[
            "--database",
            &db.url,
            "audit",
            "verify",
            "--workspace",
            "default",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), format!("ok {n} events"));
}

#[tokio::test]
async fn verify_names_an_edited_event() {
    let (db, _, _) = stopped_app_with_history().await;
    sql(
        &db,
        r#"UPDATE events SET data = '{"version":99}' WHERE workspace = 'default' AND seq = 5;"#,
    );
    let (code, stdout) = verify(&db);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("seq 5"), "{stdout}");
    assert!(!stdout.contains("seq 6"), "{stdout}");

    // Another field: the actor of seq 7.
    let (db, _, _) = stopped_app_with_history().await;
    sql(
        &db,
        "UPDATE events SET actor = 'reviewer:mallory' WHERE workspace = 'default' AND seq = 7;",
    );
    let (code, stdout) = verify(&db);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("seq 7"), "{stdout}");
}

#[tokio::test]
async fn verify_names_a_deleted_middle_event() {
    let (db, _, _) = stopped_app_with_history().await;
    sql(
        &db,
        "DELETE FROM events WHERE workspace = 'default' AND seq = 6;",
    );
    let (code, stdout) = verify(&db);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("seq 6"), "{stdout}");
}

#[tokio::test]
async fn verify_notices_two_events_swapped() {
    let (db, _, _) = stopped_app_with_history().await;
    sql(
        &db,
        "UPDATE events SET seq = -1 WHERE workspace = 'default' AND seq = 6;
         UPDATE events SET seq = 6 WHERE workspace = 'default' AND seq = 7;
         UPDATE events SET seq = 7 WHERE workspace = 'default' AND seq = -1;",
    );
    let (code, stdout) = verify(&db);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("seq 6"), "{stdout}");
}

#[tokio::test]
async fn verify_notices_the_last_event_deleted() {
    let (db, n, _) = stopped_app_with_history().await;
    sql(
        &db,
        &format!("DELETE FROM events WHERE workspace = 'default' AND seq = {n};"),
    );
    let (code, stdout) = verify(&db);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains(&format!("seq {n}")), "{stdout}");
    assert!(!stdout.starts_with("ok"), "{stdout}");
}

#[tokio::test]
async fn the_api_verify_reports_tampering_too() {
    let (db, _, admin) = stopped_app_with_history().await;
    sql(
        &db,
        r#"UPDATE events SET data = '{"x":1}' WHERE workspace = 'default' AND seq = 3;"#,
    );
    let server = Server::start(&db.url).await;
    let (s, body) = server.get("/v1/audit/verify", &admin).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(body["bad_seq"], 3, "{body}");
    assert!(body["problem"].is_string(), "{body}");
}

#[tokio::test]
async fn verify_notices_the_whole_log_deleted_or_the_head_moved() {
    let (db, _, _) = stopped_app_with_history().await;
    sql(&db, "DELETE FROM events WHERE workspace = 'default';");
    let (code, stdout) = verify(&db);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("seq 1"), "{stdout}");

    // The recorded head moved back, the events untouched: caught too.
    let (db, n, _) = stopped_app_with_history().await;
    sql(
        &db,
        &format!(
            "UPDATE audit_heads SET seq = {} WHERE workspace = 'default';",
            n - 1
        ),
    );
    let (code, stdout) = verify(&db);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains(&format!("seq {n}")), "{stdout}");
}

#[tokio::test]
async fn verify_checks_every_workspace_and_names_the_broken_one() {
    let mut app = TestApp::spawn().await;
    let other_admin = app
        .key("other", "boss", loopgate_domain::auth::Role::Admin)
        .await;
    let (s, _) = app
        .send(
            app.request(reqwest::Method::PUT, "/v1/policy", &other_admin)
                .body(REFUND_POLICY),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let db = app.db.clone();
    app.stop().await;
    drop(app);
    let (code, stdout) = verify(&db);
    assert_eq!(code, 0, "{stdout}");
    // default: 4 keys; other: workspace.created, key.created, policy.updated.
    assert_eq!(stdout.trim(), "ok 7 events");

    sql(
        &db,
        "UPDATE events SET data = '{\"version\":2}' WHERE workspace = 'other' AND type = 'policy.updated';",
    );
    let (code, stdout) = verify(&db);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("seq 3") && stdout.contains("other"),
        "{stdout}"
    );
    // The intact workspace alone still verifies.
    let out = loopgate(
        &[
            "--database",
            &db.url,
            "audit",
            "verify",
            "--workspace",
            "default",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.stdout.trim(), "ok 4 events");
}
