//! The learning loop over HTTP and the CLI: tuning from graded evidence, policy backtests,
//! "approve and don't ask again" proposals, `threshold = "auto"` rules, and per-slice stats.

use crate::cli::loopgate;
use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const ALL_REVIEWED: &str = r#"
[[rule]]
name = "everything reviewed"
when = "true"
then = "review"
"#;

/// Submits `name` with `confidence` as `token`'s agent and decides its review with `verdict`
/// (`approve`, `reject` or `edit`); returns the action's id.
async fn judged(app: &TestApp, token: &str, name: &str, confidence: f64, verdict: &str) -> String {
    let (status, body) = app
        .send(app.post("/v1/actions", token).json(&json!({
            "name": name, "arguments": {"order": 1}, "confidence": confidence,
        })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let review = body["review_id"].as_str().expect("a review").to_owned();
    let decision = match verdict {
        "edit" => json!({"verdict": "edit", "arguments": {"order": 2}}),
        v => json!({"verdict": v}),
    };
    let (status, body) = app.decide(&app.ann, &review, decision).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["action"]["id"].as_str().unwrap_or_default().to_owned()
}

/// 200 approved items at confidence 0.90..0.92 (a 95% Wilson lower bound of 0.9812) and
/// `bad` rejected or edited ones at 0.50..0.70: at a 0.98 target, any of those drags the bound
/// under 0.98, so the threshold is exactly 0.9.
async fn history(app: &TestApp, bad: usize) {
    for i in 0..200 {
        judged(
            app,
            &app.agent,
            "lookup_order",
            0.9 + i as f64 * 0.0001,
            "approve",
        )
        .await;
    }
    for i in 0..bad {
        let verdict = if i % 2 == 0 { "reject" } else { "edit" };
        judged(
            app,
            &app.agent,
            "issue_refund",
            0.5 + i as f64 * 0.01,
            verdict,
        )
        .await;
    }
}

#[tokio::test]
async fn tune_recommends_the_lowest_threshold_the_evidence_supports() {
    let app = TestApp::spawn().await;
    app.put_policy(ALL_REVIEWED).await;
    history(&app, 20).await;

    let (status, body) = app
        .send(app.get("/v1/tune?target_accuracy=0.98", &app.ann))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = &body["result"];
    assert_eq!(r["status"], "recommended", "{body}");
    assert_eq!(r["threshold"], 0.9, "{body}");
    assert_eq!(r["items"], 220);
    assert_eq!(r["graded"], 220);
    assert_eq!(r["accuracy"]["trials"], 200);
    let automation = r["automation_rate"].as_f64().unwrap_or_default();
    assert!((automation - 200.0 / 220.0).abs() < 1e-9, "{body}");

    // Narrowed to the action that was always wrong: nothing can be recommended.
    let (status, body) = app
        .send(app.get(
            "/v1/tune?target_accuracy=0.98&action=issue_refund&since=7d",
            &app.admin,
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["status"], "insufficient_evidence", "{body}");
    assert_eq!(body["result"]["items"], 20);
    assert!(body["result"]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("too little evidence"));

    // A target the evidence cannot show: it says so and how much is needed.
    let (_, body) = app
        .send(app.get("/v1/tune?target_accuracy=0.999", &app.ann))
        .await;
    assert_eq!(body["result"]["status"], "insufficient_evidence", "{body}");
    assert!(
        body["result"]["needed"].as_u64().unwrap_or(0) > 1000,
        "{body}"
    );

    // Another agent's scope has no evidence at all.
    let (_, body) = app
        .send(app.get("/v1/tune?target_accuracy=0.9&agent=nobody", &app.ann))
        .await;
    assert_eq!(body["result"]["items"], 0, "{body}");

    for (query, field) in [
        ("", "target_accuracy"),
        ("target_accuracy=1.5", "target_accuracy"),
        ("target_accuracy=lots", "target_accuracy"),
        ("target_accuracy=0.9&since=forever", "since"),
        ("target_accuracy=0.9&agent=", "agent"),
    ] {
        let (status, body) = app
            .send(app.get(&format!("/v1/tune?{query}"), &app.ann))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let (status, _) = app
        .send(app.get("/v1/tune?target_accuracy=0.9", &app.agent))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_backtest_compares_a_candidate_with_the_policy_in_force() {
    let app = TestApp::spawn().await;
    app.put_policy(ALL_REVIEWED).await;
    history(&app, 10).await;

    let careless = r#"
[[rule]]
name = "anything above a half runs"
applies_to = "action"
when = "true"
then = "approve"
threshold = 0.5
"#;
    let (status, body) = app
        .send(
            app.post("/v1/policy/backtest?since=30d", &app.admin)
                .body(careless),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = &body["report"];
    assert_eq!(body["current_version"], 1);
    assert_eq!(r["items"], 210);
    assert_eq!(r["current"]["automation_rate"], 0.0);
    assert_eq!(r["current"]["review_load"]["default"], 210);
    assert_eq!(
        r["current"]["by_rule"]["everything reviewed"]["review"],
        210
    );
    assert_eq!(r["candidate"]["automation_rate"], 1.0);
    assert_eq!(
        r["candidate"]["by_rule"]["anything above a half runs"]["approve"],
        210
    );
    // Every rejected or edited item would have gone out unreviewed; each is listed.
    assert_eq!(r["candidate"]["known_bad_let_through"], 10, "{body}");
    assert_eq!(r["known_bad"].as_array().map(Vec::len), Some(10));
    assert_eq!(r["known_bad"][0]["name"], "issue_refund");
    assert_eq!(r["changed"], 210);

    let careful = r#"
[[rule]]
name = "confident lookups run"
applies_to = "action"
when = 'action.name == "lookup_order"'
then = "approve"
threshold = 0.9

[[rule]]
name = "refunds to finance"
when = "true"
then = "review"
queue = "finance"
"#;
    let (status, body) = app
        .send(app.post("/v1/policy/backtest", &app.admin).body(careful))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = &body["report"];
    assert_eq!(r["candidate"]["known_bad_let_through"], 0, "{body}");
    assert_eq!(r["candidate"]["review_load"]["finance"], 10);
    assert_eq!(r["candidate"]["totals"]["approve"], 200);

    // Scoped to one action.
    let (_, body) = app
        .send(
            app.post("/v1/policy/backtest?action=issue_refund", &app.admin)
                .body(careless),
        )
        .await;
    assert_eq!(body["report"]["items"], 10, "{body}");

    // Nothing changed: the policy in force is still version 1.
    let resp = app
        .get("/v1/policy", &app.admin)
        .send()
        .await
        .expect("reaches the server");
    assert_eq!(resp.headers()["loopgate-policy-version"], "1");

    let (status, body) = app
        .send(
            app.post("/v1/policy/backtest", &app.admin)
                .body("[[rule]]\nname = \"x\"\nwhen = \"true\"\nthen = \"sometimes\"\n"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_policy");
    assert_eq!(body["error"]["details"]["errors"][0]["line"], 4);
    let (status, body) = app
        .send(
            app.post("/v1/policy/backtest?since=0s", &app.admin)
                .body(careless),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "since");
    for token in [&app.agent, &app.ann] {
        let (status, _) = app
            .send(app.post("/v1/policy/backtest", token).body(careless))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}

const LOOKUPS_REVIEWED: &str = r#"
[[rule]]
name = "no refunds above 500"
applies_to = "action"
when = 'action.name == "lookup_order" && has(action.arguments.refund) && action.arguments.refund > 500'
then = "block"

[[rule]]
name = "lookups reviewed"
applies_to = "action"
when = 'action.name == "lookup_order"'
then = "review"

[[rule]]
name = "the rest reviewed"
when = "true"
then = "review"
"#;

#[tokio::test]
async fn dont_ask_again_proposes_a_standing_rule_that_only_an_admin_puts_in_force() {
    let app = TestApp::spawn().await;
    app.put_policy(LOOKUPS_REVIEWED).await;
    let other = app
        .key("default", "other-bot", loopgate_domain::auth::Role::Agent)
        .await;
    for c in [0.90, 0.92, 0.95] {
        judged(&app, &app.agent, "lookup_order", c, "approve").await;
    }
    judged(&app, &app.agent, "lookup_order", 0.96, "reject").await;
    judged(&app, &app.agent, "lookup_order", 0.50, "reject").await;
    // Other agents' and other actions' history cannot be changed by the rule: not replayed.
    judged(&app, &other, "lookup_order", 0.99, "reject").await;
    judged(&app, &app.agent, "cancel_order", 0.99, "reject").await;

    // Only an approval can stand.
    let (_, body) = app
        .submit(json!({"name": "lookup_order", "arguments": {}, "confidence": 0.87}))
        .await;
    let review = body["review_id"].as_str().expect("review").to_owned();
    let (status, body) = app
        .decide(
            &app.ann,
            &review,
            json!({"verdict": "reject", "dont_ask_again": true}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "dont_ask_again");

    let (status, body) = app
        .decide(
            &app.ann,
            &review,
            json!({"verdict": "approve", "dont_ask_again": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "decided");
    let proposal = &body["proposal"];
    assert_eq!(proposal["status"], "pending", "{body}");
    assert_eq!(proposal["agent"], "bot");
    assert_eq!(proposal["action"], "lookup_order");
    assert_eq!(proposal["before_rule"], "lookups reviewed");
    let name = proposal["rule_name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(name.contains(">= 0.85"), "{name}");
    // The backtest: this agent's lookups only (six, with the one just approved); the rule
    // lets five through, one of which a human had rejected.
    let bt = &proposal["backtest"];
    assert_eq!(bt["items"], 6, "{bt}");
    assert_eq!(bt["let_through"], 5, "{bt}");
    assert_eq!(bt["known_bad_let_through"], 1, "{bt}");
    let id = proposal["id"].as_str().expect("id").to_owned();

    // Nothing changed yet.
    let (_, body) = app
        .submit(json!({"name": "lookup_order", "arguments": {}, "confidence": 0.9}))
        .await;
    assert_eq!(body["status"], "pending");

    let (status, list) = app.send(app.get("/v1/policy/proposals", &app.admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list[0]["id"], id.as_str());
    let (status, _) = app.send(app.get("/v1/policy/proposals", &app.ann)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .send(app.post(&format!("/v1/policy/proposals/{id}/approve"), &app.ann))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, body) = app
        .send(app.post(&format!("/v1/policy/proposals/{id}/approve"), &app.admin))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved");
    assert_eq!(body["policy_version"], 2);
    let (status, body) = app
        .send(app.post(&format!("/v1/policy/proposals/{id}/approve"), &app.admin))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // In force: confident lookups run, unsure ones and blocked ones do not.
    let (_, body) = app
        .submit(json!({"name": "lookup_order", "arguments": {}, "confidence": 0.9}))
        .await;
    assert_eq!(body["status"], "approved", "{body}");
    assert_eq!(body["rule"], name.as_str());
    let (_, body) = app
        .submit(json!({"name": "lookup_order", "arguments": {}, "confidence": 0.8}))
        .await;
    assert_eq!(body["status"], "pending", "{body}");
    let (_, body) = app
        .submit(json!({"name": "lookup_order", "arguments": {"refund": 900}, "confidence": 0.99}))
        .await;
    assert_eq!(body["status"], "blocked", "{body}");
    let (_, body) = app
        .send(
            app.post("/v1/actions", &other)
                .json(&json!({"name": "lookup_order", "arguments": {}, "confidence": 0.99})),
        )
        .await;
    assert_eq!(body["status"], "pending", "{body}");

    // The audit log tells the story.
    let (_, page) = app.send(app.get("/v1/audit?limit=1000", &app.admin)).await;
    let types: Vec<&str> = page["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default();
    for t in ["policy.proposal_created", "policy.proposal_decided"] {
        assert!(types.contains(&t), "{t} in {types:?}");
    }
    let (status, body) = app
        .send(app.get(
            &format!("/v1/policy/proposals/{}", uuid::Uuid::now_v7()),
            &app.admin,
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn a_rejected_proposal_changes_nothing() {
    let app = TestApp::spawn().await;
    app.put_policy(LOOKUPS_REVIEWED).await;
    let (_, body) = app
        .submit(json!({"name": "lookup_order", "arguments": {}, "confidence": 0.95}))
        .await;
    let review = body["review_id"].as_str().expect("review").to_owned();
    let (_, body) = app
        .decide(
            &app.ann,
            &review,
            json!({"verdict": "approve", "dont_ask_again": true}),
        )
        .await;
    let id = body["proposal"]["id"]
        .as_str()
        .expect("a proposal")
        .to_owned();
    let (status, body) = app
        .send(app.post(&format!("/v1/policy/proposals/{id}/reject"), &app.admin))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "rejected");
    assert_eq!(body["policy_version"], Value::Null);
    let (_, body) = app
        .submit(json!({"name": "lookup_order", "arguments": {}, "confidence": 0.99}))
        .await;
    assert_eq!(body["status"], "pending");
}

const AUTO: &str = r#"
[[rule]]
name = "confident refunds run"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "approve"
threshold = "auto"
target_accuracy = 0.95
min = 0.7
max = 0.99

[[rule]]
name = "the rest reviewed"
when = "true"
then = "review"
"#;

#[tokio::test]
async fn an_auto_threshold_follows_the_evidence_within_its_bounds() {
    let app = TestApp::spawn().await;
    app.put_policy(AUTO).await;
    let (status, body) = app.send(app.get("/v1/policy/thresholds", &app.admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body[0]["value"], 0.99, "starts at max: {body}");

    // Below the cautious start, refunds go to humans, who approve them all.
    for i in 0..80 {
        judged(
            &app,
            &app.agent,
            "issue_refund",
            0.8 + i as f64 * 0.001,
            "approve",
        )
        .await;
    }
    let (status, body) = app
        .send(app.post("/v1/policy/thresholds/recompute", &app.admin))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body[0]["changed"], true, "{body}");
    assert_eq!(body[0]["value"], 0.8, "{body}");
    assert_eq!(body[0]["tune"]["status"], "recommended");

    // In force at once, and recorded with its evidence.
    let (_, body) = app
        .submit(json!({"name": "issue_refund", "arguments": {}, "confidence": 0.85}))
        .await;
    assert_eq!(body["status"], "approved", "{body}");
    let (_, body) = app
        .submit(json!({"name": "issue_refund", "arguments": {}, "confidence": 0.75}))
        .await;
    assert_eq!(body["status"], "pending", "{body}");
    let (_, page) = app.send(app.get("/v1/audit?limit=1000", &app.admin)).await;
    let change = page["events"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["type"] == "policy.threshold_changed"))
        .cloned()
        .expect("a threshold change event");
    assert_eq!(change["data"]["from"], Value::Null);
    assert_eq!(change["data"]["to"], 0.8);
    assert_eq!(change["data"]["evidence"]["tune"]["accuracy"]["trials"], 80);

    // Nothing new: a second run changes nothing and records nothing.
    let (_, body) = app
        .send(app.post("/v1/policy/thresholds/recompute", &app.admin))
        .await;
    assert_eq!(body[0]["changed"], false, "{body}");

    // Bad news raises it again: rejections low down pull the lowest supported floor up.
    for i in 0..5 {
        judged(
            &app,
            &app.agent,
            "issue_refund",
            0.70 + i as f64 * 0.001,
            "reject",
        )
        .await;
    }
    let (_, body) = app
        .send(app.post("/v1/policy/thresholds/recompute", &app.admin))
        .await;
    let value = body[0]["value"].as_f64().unwrap_or_default();
    assert!((0.8..=0.99).contains(&value), "{body}");
    let (status, _) = app
        .send(app.post("/v1/policy/thresholds/recompute", &app.ann))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn stats_slice_by_agent_action_and_queue_with_calibration() {
    let app = TestApp::spawn().await;
    app.put_policy(
        r#"
[[rule]]
name = "refunds to finance"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "review"
queue = "finance"

[[rule]]
name = "the rest reviewed"
when = "true"
then = "review"
"#,
    )
    .await;
    for c in [0.95, 0.91, 0.93] {
        judged(&app, &app.agent, "lookup_order", c, "approve").await;
    }
    judged(&app, &app.agent, "issue_refund", 0.55, "reject").await;
    judged(&app, &app.agent, "issue_refund", 0.52, "edit").await;

    let (status, s) = app.send(app.get("/v1/stats?window=1h", &app.ann)).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    let bot = &s["by_agent"][0];
    assert_eq!(bot["key"], "bot");
    assert_eq!(bot["items"], 5);
    assert_eq!(bot["override_rate"]["successes"], 2);
    assert_eq!(bot["override_rate"]["trials"], 5);
    let actions: Vec<&str> = s["by_action"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["key"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(actions, ["lookup_order", "issue_refund"]);
    assert_eq!(s["by_action"][1]["override_rate"]["rate"], 1.0);
    let finance = s["queues"]
        .as_array()
        .and_then(|q| q.iter().find(|q| q["queue"] == "finance"))
        .cloned()
        .expect("the finance queue");
    assert_eq!(finance["override_rate"]["trials"], 2);
    assert!(finance["time_to_decision_p95_s"].is_number(), "{finance}");
    let bands = s["calibration"].as_array().cloned().unwrap_or_default();
    assert_eq!(bands.len(), 10);
    assert_eq!(bands[9]["count"], 3);
    assert_eq!(bands[9]["accuracy"]["rate"], 1.0);
    assert_eq!(bands[5]["count"], 2);
    assert_eq!(bands[5]["accuracy"]["rate"], 0.0);
    // The same per slice.
    assert_eq!(bot["calibration"][9]["count"], 3, "{bot}");
    assert_eq!(bot["calibration"][5]["count"], 2, "{bot}");
    assert_eq!(s["by_action"][1]["calibration"][5]["count"], 2, "{s}");
    assert_eq!(s["by_action"][1]["calibration"][9]["count"], 0, "{s}");
}

#[tokio::test]
async fn the_cli_tunes_and_backtests_against_the_database() {
    let app = TestApp::spawn().await;
    app.put_policy(ALL_REVIEWED).await;
    history(&app, 6).await;
    let db = app.db.url.clone();

    let out = loopgate(
        &["tune", "--target-accuracy", "0.98", "--database", &db],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("recommended threshold: confidence >= 0.9"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("206 items"), "{}", out.stdout);
    let out = loopgate(
        &[
            "tune",
            "--target-accuracy",
            "0.98",
            "--action",
            "issue_refund",
            "--json",
            "--database",
            &db,
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(v["status"], "insufficient_evidence");

    let dir = tempfile::tempdir().expect("tempdir");
    let candidate = dir.path().join("candidate.toml");
    std::fs::write(
        &candidate,
        "[[rule]]\nname = \"all run\"\nwhen = \"true\"\nthen = \"approve\"\n",
    )
    .expect("write");
    let file = candidate.to_string_lossy().to_string();
    let out = loopgate(&["policy", "backtest", &file, "--database", &db], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("206 items, 206 graded"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("known-bad items (rejected, edited, graded incorrect, flagged) the candidate lets through unreviewed: 6"),
        "{}",
        out.stdout
    );
    let out = loopgate(
        &[
            "policy",
            "backtest",
            &file,
            "--json",
            "--since",
            "1h",
            "--database",
            &db,
        ],
        None,
    );
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(v["candidate"]["automation_rate"], 1.0);

    // One line and a non-zero exit for each mistake.
    for args in [
        vec!["tune", "--target-accuracy", "2", "--database", &db],
        vec![
            "tune",
            "--target-accuracy",
            "0.9",
            "--since",
            "soon",
            "--database",
            &db,
        ],
        vec![
            "tune",
            "--target-accuracy",
            "0.9",
            "--workspace",
            "nope",
            "--database",
            &db,
        ],
        vec![
            "policy",
            "backtest",
            "/no/such/file.toml",
            "--database",
            &db,
        ],
    ] {
        let out = loopgate(&args, None);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stdout);
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            out.stderr
        );
    }
    let missing = dir.path().join("missing.db");
    let out = loopgate(
        &[
            "tune",
            "--target-accuracy",
            "0.9",
            "--database",
            &format!("sqlite://{}", missing.display()),
        ],
        None,
    );
    assert_eq!(out.code, 1);
    assert!(!missing.exists(), "a read-only command creates no database");
}

#[tokio::test]
async fn metrics_count_routing_and_decisions_per_workspace_and_queue() {
    let app = TestApp::spawn().await;
    app.put_policy(
        r#"
[[rule]]
name = "lookups run"
applies_to = "action"
when = 'action.name == "lookup_order"'
then = "approve"

[[rule]]
name = "refunds to finance"
when = "true"
then = "review"
queue = "finance"
"#,
    )
    .await;
    let (_, body) = app
        .submit(json!({"name": "lookup_order", "arguments": {}}))
        .await;
    assert_eq!(body["status"], "approved");
    judged(&app, &app.agent, "issue_refund", 0.7, "reject").await;

    let expected = [
        r#"loopgate_routed_total{workspace="default",subject="action",status="approved"} 1"#,
        r#"loopgate_routed_total{workspace="default",subject="action",status="pending"} 1"#,
        r#"loopgate_review_decisions_total{workspace="default",queue="finance",verdict="reject"} 1"#,
        r#"loopgate_review_wait_seconds_count{workspace="default",queue="finance"} 1"#,
    ];
    // Counted from committed events by the dispatcher, a moment after the answers.
    let mut text = String::new();
    for _ in 0..100 {
        text = app
            .client
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .expect("reaches the server")
            .text()
            .await
            .unwrap_or_default();
        if expected.iter().all(|line| text.contains(line)) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("missing metrics in:\n{text}");
}

/// AI messages are evidence too: a delivered answer the end user flagged counts as wrong.
#[tokio::test]
async fn flagged_answers_are_evidence_in_stats_and_tuning() {
    let app = TestApp::spawn().await;
    app.put_policy("[[rule]]\nname = \"answers go out\"\nwhen = \"true\"\nthen = \"deliver\"\n")
        .await;
    let (status, c) = app
        .send(app.post("/v1/conversations", &app.agent).json(&json!({})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let cid = c["id"].as_str().expect("id").to_owned();
    let (status, m) = app
        .send(
            app.post(&format!("/v1/conversations/{cid}/messages"), &app.agent)
                .json(&json!({"role": "ai", "text": "Your card ships today.", "confidence": 0.95})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    assert_eq!(m["status"], "delivered");
    let mid = m["id"].as_str().expect("id").to_owned();
    let (status, f) = app
        .send(
            app.post(&format!("/v1/messages/{mid}/feedback"), &app.agent)
                .json(&json!({"rating": "down", "comment": "it did not"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{f}");

    let (status, s) = app.send(app.get("/v1/stats?window=1h", &app.ann)).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["calibration"][9]["count"], 1, "{s}");
    assert_eq!(s["calibration"][9]["accuracy"]["rate"], 0.0, "{s}");
    assert_eq!(s["by_agent"][0]["items"], 1, "{s}");
    let (status, t) = app
        .send(app.get("/v1/tune?target_accuracy=0.9", &app.ann))
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["result"]["items"], 1, "{t}");
    assert_eq!(t["result"]["graded"], 1, "{t}");
}
