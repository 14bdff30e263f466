//! Submitting actions and the policy's immediate answer; idempotency, long-polling, cancelling,
//! who may read an action, and QA sampling of autonomous work.

use crate::helpers::*;
use futures::future::join_all;
use loopgate_domain::auth::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A policy whose only rule approves everything, sampling `rate` of it for QA.
fn sampling_policy(rate: &str) -> String {
    format!(
        r#"
[[rule]]
name = "everything runs, sampled"
when = "true"
then = "approve"
sample = {rate}
"#
    )
}

/// All reviews of the workspace in any status (optionally of one kind).
pub(crate) async fn all_reviews(app: &TestApp, kind: Option<&str>) -> Vec<Value> {
    let path = match kind {
        Some(k) => format!("/v1/reviews?status=all&limit=500&kind={k}"),
        None => "/v1/reviews?status=all&limit=500".to_owned(),
    };
    let (s, body) = app.send(app.get(&path, &app.ann)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["reviews"].as_array().expect("a reviews array").clone()
}

/// Every audit event of the default workspace, paging through `GET /v1/audit`.
pub(crate) async fn all_events(app: &TestApp) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let (s, page) = app
            .send(app.get(&format!("/v1/audit?after={after}&limit=1000"), &app.admin))
            .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let events = page["events"].as_array().expect("an events array").clone();
        out.extend(events);
        match page["next_after"].as_i64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

/// Events of one type about one subject (`action:ID`, `review:ID`).
pub(crate) fn events_of<'a>(events: &'a [Value], kind: &str, subject: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["subject"] == subject)
        .collect()
}

fn assert_field_error(status: StatusCode, body: &Value, want: StatusCode, field: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn the_policy_answers_at_once() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;

    let (s, a) = app
        .submit(json!({"name": "lookup_order", "arguments": {"order": "A1"}, "confidence": 0.9}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["status"], "approved");
    assert_eq!(a["rule"], "everything else runs");

    let (s, a) = app
        .submit(json!({"name": "delete_account", "arguments": {}}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(a["status"], "blocked");

    let (s, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 900}, "confidence": 0.8}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(a["status"], "pending");
    assert!(a["review_id"].is_string());
    assert_eq!(a["rule"], "large refunds need two approvers");
}

#[tokio::test]
async fn submit_routes_and_answers_with_the_full_record() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;

    // Approved: final at once, no review.
    let (s, a) = app
        .submit(json!({
            "name": "lookup_order", "arguments": {"order": "A1"}, "confidence": 0.9,
            "context": {"tier": "gold"}
        }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert!(
        a["id"]
            .as_str()
            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()),
        "{a}"
    );
    assert_eq!(a["status"], "approved");
    assert_eq!(a["rule"], "everything else runs");
    assert!(
        a["reason"]
            .as_str()
            .is_some_and(|r| r.contains("everything else runs")),
        "{a}"
    );
    assert!(a["review_id"].is_null(), "{a}");
    assert_eq!(a["name"], "lookup_order");
    assert_eq!(a["agent"], "bot");
    assert_eq!(a["arguments"], json!({"order": "A1"}));
    assert_eq!(a["proposed_arguments"], json!({"order": "A1"}));
    assert_eq!(a["confidence"], 0.9);
    assert_eq!(a["context"], json!({"tier": "gold"}));
    assert_eq!(a["policy_version"], 1);
    assert!(
        a["decided_at"].is_string(),
        "an approved action is final: {a}"
    );

    // Blocked: final, no review.
    let (s, b) = app
        .submit(json!({"name": "delete_account", "arguments": {"user": 7}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["status"], "blocked");
    assert_eq!(b["rule"], "no account deletion");
    assert!(b["reason"].as_str().is_some_and(|r| !r.is_empty()), "{b}");
    assert!(b["review_id"].is_null(), "{b}");

    // Pending: a review in the rule's queue, with the rule's settings.
    let (s, p) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 100}, "confidence": 0.8}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["status"], "pending");
    assert_eq!(p["rule"], "refunds need review");
    assert!(p["decided_at"].is_null(), "{p}");
    let rid = p["review_id"].as_str().expect("a review id");
    let (s, r) = app
        .send(app.get(&format!("/v1/reviews/{rid}"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["kind"], "approval");
    assert_eq!(r["queue"], "finance");
    assert_eq!(r["approvals_required"], 1);
    assert_eq!(r["action_id"], p["id"]);

    // Low confidence falls through to the review rule with its priority.
    let (s, u) = app
        .submit(json!({"name": "send_email", "arguments": {"to": "x@y.z"}, "confidence": 0.2}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    assert_eq!(u["status"], "pending");
    assert_eq!(u["rule"], "unsure actions are reviewed");
    let rid = u["review_id"].as_str().expect("a review id");
    let (_, r) = app
        .send(app.get(&format!("/v1/reviews/{rid}"), &app.ann))
        .await;
    assert_eq!(r["priority"], 5);
    assert_eq!(r["queue"], "default");

    // GET shows the same action.
    let got = app.action(a["id"].as_str().unwrap()).await;
    assert_eq!(got["id"], a["id"]);
    assert_eq!(got["status"], "approved");
    assert_eq!(got["name"], "lookup_order");
    assert_eq!(got["arguments"], json!({"order": "A1"}));
}

#[tokio::test]
async fn without_any_policy_everything_is_pending() {
    let app = TestApp::spawn().await;
    // Version 0: no policy was ever stored.
    let resp = app.get("/v1/policy", &app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["loopgate-policy-version"], "0");

    for (name, confidence) in [("lookup_order", 0.99), ("delete_account", 0.5)] {
        let (s, a) = app
            .submit(json!({"name": name, "arguments": {}, "confidence": confidence}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        assert_eq!(a["status"], "pending", "fail safe: {a}");
        assert!(a["rule"].is_null(), "no rule decided: {a}");
        assert!(a["review_id"].is_string(), "{a}");
        assert!(a["reason"].as_str().is_some_and(|r| !r.is_empty()), "{a}");
        assert_eq!(a["policy_version"], 0);
    }
    assert_eq!(all_reviews(&app, Some("approval")).await.len(), 2);
}

#[tokio::test]
async fn a_policy_where_no_rule_matches_sends_to_review() {
    let app = TestApp::spawn().await;
    app.put_policy(
        r#"
[[rule]]
name = "lookups run"
when = 'action.name == "lookup_order"'
then = "approve"
"#,
    )
    .await;
    let (s, a) = app
        .submit(json!({"name": "wire_money", "arguments": {"amount": 1}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["status"], "pending");
    assert!(a["rule"].is_null(), "{a}");
    assert!(a["review_id"].is_string(), "{a}");
}

#[tokio::test]
async fn an_idempotent_replay_returns_the_same_action() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let body = json!({"name": "issue_refund", "arguments": {"amount": 50, "order": "A1"}});
    let submit = |b: &Value| {
        app.send(
            app.post("/v1/actions", &app.agent)
                .header("Idempotency-Key", "refund-A1")
                .json(b),
        )
    };

    let (s, first) = submit(&body).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["status"], "pending");

    let (s, again) = submit(&body).await;
    assert_eq!(s, StatusCode::OK, "a replay is a 200: {again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["review_id"], first["review_id"]);
    assert_eq!(again["status"], "pending");

    // Same meaning, different key order: still the same request.
    let reordered: Value = serde_json::from_str(
        r#"{"arguments": {"order": "A1", "amount": 50}, "name": "issue_refund"}"#,
    )
    .unwrap();
    let (s, third) = submit(&reordered).await;
    assert_eq!(s, StatusCode::OK, "{third}");
    assert_eq!(third["id"], first["id"]);

    // One action, one review.
    assert_eq!(all_reviews(&app, None).await.len(), 1);
    let events = all_events(&app).await;
    let id = first["id"].as_str().unwrap();
    assert_eq!(
        events_of(&events, "action.created", &format!("action:{id}")).len(),
        1
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "action.created")
            .count(),
        1
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "review.created")
            .count(),
        1
    );

    // After a decision, a replay returns the action as it now stands, still without a new one.
    let rid = first["review_id"].as_str().unwrap();
    let (s, _) = app
        .decide(&app.ann, rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, after) = submit(&body).await;
    assert_eq!(s, StatusCode::OK, "{after}");
    assert_eq!(after["id"], first["id"]);
    assert_eq!(after["status"], "approved");
    assert_eq!(all_reviews(&app, None).await.len(), 1);
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_request_is_refused() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let with_key = |b: Value| {
        app.send(
            app.post("/v1/actions", &app.agent)
                .header("Idempotency-Key", "k-1")
                .json(&b),
        )
    };
    let (s, first) = with_key(json!({"name": "issue_refund", "arguments": {"amount": 50}})).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");

    for other in [
        json!({"name": "issue_refund", "arguments": {"amount": 5000}}),
        json!({"name": "lookup_order", "arguments": {"amount": 50}}),
        json!({"name": "issue_refund", "arguments": {"amount": 50}, "confidence": 0.9}),
        json!({"name": "issue_refund", "arguments": {"amount": 50}, "context": {"tier": "gold"}}),
    ] {
        let (s, e) = with_key(other.clone()).await;
        assert_field_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, "Idempotency-Key");
    }
    assert_eq!(all_reviews(&app, None).await.len(), 1);
    let events = all_events(&app).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "action.created")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_refused_request_does_not_use_up_its_idempotency_key() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let with_key = |b: Value| {
        app.send(
            app.post("/v1/actions", &app.agent)
                .header("Idempotency-Key", "k-2")
                .json(&b),
        )
    };
    let (s, e) = with_key(json!({"name": "issue_refund", "arguments": [1]})).await;
    assert_field_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, "arguments");
    let (s, a) = with_key(json!({"name": "issue_refund", "arguments": {"amount": 1}})).await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let (s, b) = with_key(json!({"name": "issue_refund", "arguments": {"amount": 1}})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(a["id"], b["id"]);
}

#[tokio::test]
async fn idempotency_keys_belong_to_one_agent() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let other = app.key("default", "other-bot", Role::Agent).await;
    let body = json!({"name": "issue_refund", "arguments": {"amount": 50}});
    let submit_as = |token: &str, b: &Value| {
        app.send(
            app.post("/v1/actions", token)
                .header("Idempotency-Key", "shared")
                .json(b),
        )
    };

    let (s, mine) = submit_as(&app.agent, &body).await;
    assert_eq!(s, StatusCode::CREATED, "{mine}");
    let (s, theirs) = submit_as(&other, &body).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "another agent's key is independent: {theirs}"
    );
    assert_ne!(theirs["id"], mine["id"]);
    assert_eq!(theirs["agent"], "other-bot");

    // Each agent's replay finds its own action.
    let (s, theirs_again) = submit_as(&other, &body).await;
    assert_eq!(s, StatusCode::OK, "{theirs_again}");
    assert_eq!(theirs_again["id"], theirs["id"]);
    let (s, mine_again) = submit_as(&app.agent, &body).await;
    assert_eq!(s, StatusCode::OK, "{mine_again}");
    assert_eq!(mine_again["id"], mine["id"]);

    assert_eq!(all_reviews(&app, None).await.len(), 2);
}

#[tokio::test]
async fn long_poll_is_woken_by_the_decision_with_the_final_arguments() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let (_, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 120, "order": "A1"}}))
        .await;
    let id = a["id"].as_str().unwrap().to_owned();
    let rid = a["review_id"].as_str().unwrap().to_owned();

    let poll = app.get(&format!("/v1/actions/{id}?wait=5"), &app.agent);
    let started = Instant::now();
    let poller = tokio::spawn(async move {
        let resp = poll.send().await.expect("the long-poll reaches the server");
        let status = resp.status();
        let body: Value = resp.json().await.expect("a JSON body");
        (status, body, Instant::now())
    });

    // Let the long-poll park on the server, then decide.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poller.is_finished(),
        "the long-poll answered before any decision"
    );
    let decided_at = Instant::now();
    let (s, r) = app
        .decide(
            &app.ann,
            &rid,
            json!({"verdict": "edit", "arguments": {"amount": 80, "order": "A1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");

    let (status, body, returned_at) = tokio::time::timeout(Duration::from_secs(10), poller)
        .await
        .expect("the long-poll returns")
        .expect("the poller task");
    let after_decision = returned_at.saturating_duration_since(decided_at);
    println!(
        "long-poll returned {:?} after the decision was sent ({:?} after it began)",
        after_decision,
        returned_at - started
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved", "{body}");
    assert_eq!(body["arguments"], json!({"amount": 80, "order": "A1"}));
    assert_eq!(body["name"], "issue_refund");
    assert_eq!(body["decision"]["verdict"], "edit", "{body}");
    assert_eq!(body["decision"]["by"], json!(["ann"]), "{body}");
    assert!(
        after_decision < Duration::from_millis(500),
        "woken by the decision, not by the 5 s timeout: {after_decision:?}"
    );
}

#[tokio::test]
async fn long_poll_without_a_decision_returns_the_pending_action_after_the_wait() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let (_, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 10}}))
        .await;
    let id = a["id"].as_str().unwrap();

    let t = Instant::now();
    let (s, body) = app
        .send(app.get(&format!("/v1/actions/{id}?wait=1"), &app.agent))
        .await;
    let took = t.elapsed();
    println!("wait=1 with no decision took {took:?}");
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "pending");
    assert!(body["decision"].is_null(), "{body}");
    assert!(
        took >= Duration::from_millis(900),
        "returned too early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(3000),
        "returned too late: {took:?}"
    );

    // An action already final answers at once, whatever the wait.
    let (_, done) = app
        .submit(json!({"name": "lookup_order", "arguments": {}}))
        .await;
    let t = Instant::now();
    let (s, body) = app
        .send(app.get(
            &format!("/v1/actions/{}?wait=30", done["id"].as_str().unwrap()),
            &app.agent,
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a final action does not wait"
    );
    for ok in ["60", "0.5", "0"] {
        let path = format!("/v1/actions/{}?wait={ok}", done["id"].as_str().unwrap());
        let (s, body) = app.send(app.get(&path, &app.agent)).await;
        assert_eq!(s, StatusCode::OK, "wait={ok}: {body}");
    }
}

#[tokio::test]
async fn wait_must_be_a_number_of_seconds_up_to_60() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let (_, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 10}}))
        .await;
    let id = a["id"].as_str().unwrap();
    for bad in ["61", "abc", "-1", "NaN", "inf", ""] {
        let (s, e) = app
            .send(app.get(&format!("/v1/actions/{id}?wait={bad}"), &app.agent))
            .await;
        assert_field_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, "wait");
    }
    let (s, body) = app
        .send(app.get(&format!("/v1/actions/{id}?wait=0"), &app.agent))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "pending");
}

#[tokio::test]
async fn cancel_a_pending_action() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let (_, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 10}}))
        .await;
    let id = a["id"].as_str().unwrap();
    let rid = a["review_id"].as_str().unwrap();

    let (s, c) = app
        .send(app.post(&format!("/v1/actions/{id}/cancel"), &app.agent))
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["id"], a["id"]);

    let got = app.action(id).await;
    assert_eq!(got["status"], "cancelled");
    assert_eq!(got["decision"]["verdict"], "cancel", "{got}");

    // Its review is cancelled too, and out of the queue.
    let (s, r) = app
        .send(app.get(&format!("/v1/reviews/{rid}"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "cancelled", "{r}");
    let (s, next) = app.send(app.post("/v1/reviews/next", &app.ann)).await;
    assert_eq!(
        s,
        StatusCode::NO_CONTENT,
        "next must not hand out a cancelled review: {next}"
    );
    let (_, open) = app.send(app.get("/v1/reviews", &app.ann)).await;
    assert_eq!(open["reviews"].as_array().unwrap().len(), 0, "{open}");
    let (_, cancelled) = app
        .send(app.get("/v1/reviews?status=cancelled", &app.ann))
        .await;
    assert_eq!(cancelled["reviews"][0]["id"], rid, "{cancelled}");

    // Nobody can decide it any more, and it cannot be cancelled twice.
    let (s, e) = app
        .decide(&app.ann, rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(app.action(id).await["status"], "cancelled");
    let (s, e) = app
        .send(app.post(&format!("/v1/actions/{id}/cancel"), &app.agent))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
}

#[tokio::test]
async fn cancel_of_a_claimed_review_wakes_the_long_poll() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let (_, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 10}}))
        .await;
    let id = a["id"].as_str().unwrap().to_owned();
    let rid = a["review_id"].as_str().unwrap();
    let (s, _) = app
        .send(app.post(&format!("/v1/reviews/{rid}/claim"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK);

    let poll = app.get(&format!("/v1/actions/{id}?wait=5"), &app.agent);
    let poller = tokio::spawn(async move {
        let resp = poll.send().await.unwrap();
        (resp.status(), resp.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let (s, _) = app
        .send(app.post(&format!("/v1/actions/{id}/cancel"), &app.agent))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = poller.await.unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["status"], "cancelled", "{body}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let (_, r) = app
        .send(app.get(&format!("/v1/reviews/{rid}"), &app.ann))
        .await;
    assert_eq!(r["status"], "cancelled", "{r}");
    assert!(r["claimed_by"].is_null(), "{r}");
}

#[tokio::test]
async fn only_pending_actions_can_be_cancelled() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let (_, approved) = app
        .submit(json!({"name": "lookup_order", "arguments": {}}))
        .await;
    let (s, e) = app
        .send(app.post(
            &format!("/v1/actions/{}/cancel", approved["id"].as_str().unwrap()),
            &app.agent,
        ))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["code"], "conflict");
    assert_eq!(
        app.action(approved["id"].as_str().unwrap()).await["status"],
        "approved"
    );

    let (_, blocked) = app
        .submit(json!({"name": "delete_account", "arguments": {}}))
        .await;
    let (s, e) = app
        .send(app.post(
            &format!("/v1/actions/{}/cancel", blocked["id"].as_str().unwrap()),
            &app.agent,
        ))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");

    // Decided by a reviewer, then cancelled: too late.
    let (_, p) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 1}}))
        .await;
    let (s, _) = app
        .decide(
            &app.bob,
            p["review_id"].as_str().unwrap(),
            json!({"verdict": "reject"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = app
        .send(app.post(
            &format!("/v1/actions/{}/cancel", p["id"].as_str().unwrap()),
            &app.agent,
        ))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(
        app.action(p["id"].as_str().unwrap()).await["status"],
        "rejected"
    );

    // Unknown and malformed ids.
    let (s, _) = app
        .send(app.post(
            &format!("/v1/actions/{}/cancel", uuid::Uuid::now_v7()),
            &app.agent,
        ))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .send(app.post("/v1/actions/not-an-id/cancel", &app.agent))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn another_agent_can_neither_read_nor_cancel_but_a_reviewer_can_read() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let other = app.key("default", "other-bot", Role::Agent).await;
    let (_, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 10}, "context": {"tier": "gold"}}))
        .await;
    let id = a["id"].as_str().unwrap();

    let (s, e) = app
        .send(app.get(&format!("/v1/actions/{id}"), &other))
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "another agent must not see it: {e}"
    );
    let (s, e) = app
        .send(app.get(&format!("/v1/actions/{id}?wait=1"), &other))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, e) = app
        .send(app.post(&format!("/v1/actions/{id}/cancel"), &other))
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "another agent must not cancel it: {e}"
    );
    assert_eq!(app.action(id).await["status"], "pending");

    for token in [&app.ann, &app.admin] {
        let (s, v) = app.send(app.get(&format!("/v1/actions/{id}"), token)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["id"], a["id"]);
        assert_eq!(v["context"], json!({"tier": "gold"}));
    }

    // A reviewer cannot cancel (cancel is an agent's act).
    let (s, _) = app
        .send(app.post(&format!("/v1/actions/{id}/cancel"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Another workspace's agent does not see it either.
    let stranger = app.key("elsewhere", "bot", Role::Agent).await;
    let (s, _) = app
        .send(app.get(&format!("/v1/actions/{id}"), &stranger))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sample_one_queues_every_approval_for_qa() {
    let app = TestApp::spawn().await;
    app.put_policy(&sampling_policy("1.0")).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (s, a) = app
            .submit(json!({"name": "reply", "arguments": {"n": i}}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        assert_eq!(
            a["status"], "approved",
            "QA sampling does not hold the action: {a}"
        );
        assert!(a["review_id"].is_null(), "{a}");
        ids.push(a["id"].clone());
    }
    let qa = all_reviews(&app, Some("qa")).await;
    assert_eq!(qa.len(), 5, "{qa:?}");
    for r in &qa {
        assert_eq!(r["kind"], "qa");
        assert_eq!(r["status"], "pending");
        assert_eq!(r["rule"], "everything runs, sampled");
        assert!(ids.contains(&r["action_id"]), "{r}");
    }
    assert_eq!(all_reviews(&app, Some("approval")).await.len(), 0);
}

#[tokio::test]
async fn sample_zero_queues_nothing() {
    let app = TestApp::spawn().await;
    app.put_policy(&sampling_policy("0")).await;
    for i in 0..10 {
        let (s, a) = app
            .submit(json!({"name": "reply", "arguments": {"n": i}}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        assert_eq!(a["status"], "approved");
    }
    assert_eq!(all_reviews(&app, None).await.len(), 0);
}

#[tokio::test]
async fn sample_half_queues_about_half() {
    let app = TestApp::spawn().await;
    app.put_policy(&sampling_policy("0.5")).await;
    const N: usize = 200;
    for chunk in 0..(N / 20) {
        let results = join_all(
            (0..20)
                .map(|i| app.submit(json!({"name": "reply", "arguments": {"n": chunk * 20 + i}}))),
        )
        .await;
        for (s, a) in results {
            assert_eq!(s, StatusCode::CREATED, "{a}");
            assert_eq!(a["status"], "approved");
        }
    }
    let qa = all_reviews(&app, Some("qa")).await.len();
    println!("sample = 0.5: {qa} of {N} approvals queued for QA");
    assert!((60..=140).contains(&qa), "{qa} of {N} sampled at 0.5");
}

#[tokio::test]
async fn grading_a_qa_review() {
    let app = TestApp::spawn().await;
    app.put_policy(&sampling_policy("1")).await;
    let (_, a) = app
        .submit(json!({"name": "reply", "arguments": {"text": "hi"}}))
        .await;
    let qa = all_reviews(&app, Some("qa")).await;
    assert_eq!(qa.len(), 1);
    let rid = qa[0]["id"].as_str().unwrap();

    // A qa review is graded, not approved.
    let (s, e) = app
        .decide(&app.ann, rid, json!({"verdict": "approve"}))
        .await;
    assert_field_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, "grade");
    let (s, e) = app.decide(&app.ann, rid, json!({})).await;
    assert_field_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, "grade");
    let (s, e) = app.decide(&app.ann, rid, json!({"grade": "meh"})).await;
    assert_field_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, "grade");

    let (s, r) = app
        .decide(
            &app.ann,
            rid,
            json!({"grade": "correct", "comment": "fine", "labels": ["tone"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "decided");
    assert_eq!(r["outcome"], "graded:correct");
    assert_eq!(r["decisions"][0]["grade"], "correct");
    assert_eq!(r["decisions"][0]["reviewer"], "ann");

    // Grading is exactly once, and does not change the already-approved action.
    let (s, _) = app
        .decide(&app.bob, rid, json!({"grade": "incorrect"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(
        app.action(a["id"].as_str().unwrap()).await["status"],
        "approved"
    );
    assert_eq!(all_reviews(&app, Some("qa")).await[0]["status"], "decided");
}
