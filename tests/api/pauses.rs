//! The stop button: pausing one agent or the whole workspace, and resuming.

use crate::audit::all_events;
use crate::bad_input::assert_error;
use crate::helpers::*;
use loopgate_domain::auth::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

async fn submit_as(app: &TestApp, token: &str, name: &str) -> Value {
    let (s, a) = app
        .send(
            app.post("/v1/actions", token)
                .json(&json!({"name": name, "arguments": {"n": 1}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    a
}

async fn pause(app: &TestApp, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    app.send(app.post(path, token).json(&body)).await
}

async fn pauses(app: &TestApp) -> Value {
    let (s, body) = app.send(app.get("/v1/pauses", &app.ann)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["pauses"].clone()
}

fn last_event<'e>(events: &'e [Value], kind: &str) -> &'e Value {
    events
        .iter()
        .rev()
        .find(|e| e["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {events:#?}"))
}

#[tokio::test]
async fn pausing_an_agent_in_review_mode_holds_its_actions_for_a_human() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let bot2 = app.key("default", "bot2", Role::Agent).await;
    assert_eq!(
        submit_as(&app, &app.agent, "send_email").await["status"],
        "approved"
    );

    let (s, body) = pause(
        &app,
        "/v1/agents/bot/pause",
        &app.ann,
        json!({"mode": "review", "reason": "refund spree under investigation"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body["pauses"],
        json!([{"agent": "bot", "mode": "review", "reason": "refund spree under investigation", "set_by": "reviewer:ann"}])
    );
    assert_eq!(pauses(&app).await, body["pauses"]);

    // What the policy would approve now waits for a human.
    let a = submit_as(&app, &app.agent, "send_email").await;
    assert_eq!(a["status"], "pending", "{a}");
    assert_eq!(a["rule"], "@pause", "{a}");
    let reason = a["reason"].as_str().unwrap_or("");
    assert!(reason.contains("paused"), "{reason}");
    assert!(
        reason.contains("refund spree under investigation"),
        "{reason}"
    );
    let rid = a["review_id"].as_str().expect("a review").to_owned();
    let (s, r) = app
        .send(app.get(&format!("/v1/reviews/{rid}"), &app.bob))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["rule"], "@pause");
    assert_eq!(r["status"], "pending");

    // What the policy blocks stays blocked; what it reviews is still reviewed.
    let blocked = submit_as(&app, &app.agent, "delete_account").await;
    assert_eq!(blocked["status"], "blocked", "{blocked}");
    let refund = submit_as(&app, &app.agent, "issue_refund").await;
    assert_eq!(refund["status"], "pending", "{refund}");

    // Other agents are unaffected.
    let other = submit_as(&app, &bot2, "send_email").await;
    assert_eq!(other["status"], "approved", "{other}");
    assert_eq!(other["rule"], "everything else runs");

    // A human approves the held action.
    let (s, body) = app
        .decide(&app.bob, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        app.action(a["id"].as_str().unwrap_or("")).await["status"],
        "approved"
    );

    // Resume: back to the policy.
    let (s, body) = app
        .send(
            app.post("/v1/agents/bot/resume", &app.bob)
                .json(&json!({"reason": "all clear"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["pauses"], json!([]));
    assert_eq!(pauses(&app).await, json!([]));
    let a = submit_as(&app, &app.agent, "send_email").await;
    assert_eq!(a["status"], "approved", "{a}");
    assert_eq!(a["rule"], "everything else runs");

    let events = all_events(&app).await;
    let paused = last_event(&events, "agent.paused");
    assert_eq!(paused["actor"], "reviewer:ann");
    assert_eq!(paused["subject"], "agent:bot");
    assert_eq!(paused["data"]["reason"], "refund spree under investigation");
    assert_eq!(paused["data"]["mode"], "review");
    let resumed = last_event(&events, "agent.resumed");
    assert_eq!(resumed["actor"], "reviewer:bob");
    assert_eq!(resumed["subject"], "agent:bot");
    assert_eq!(resumed["data"]["reason"], "all clear");
}

#[tokio::test]
async fn block_mode_refuses_every_new_action() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let bot2 = app.key("default", "bot2", Role::Agent).await;
    let (s, body) = pause(
        &app,
        "/v1/agents/bot/pause",
        &app.admin,
        json!({"mode": "block", "reason": "runaway loop"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    for name in ["send_email", "issue_refund"] {
        let a = submit_as(&app, &app.agent, name).await;
        assert_eq!(a["status"], "blocked", "{a}");
        assert_eq!(a["rule"], "@pause", "{a}");
        assert!(a["review_id"].is_null(), "{a}");
        assert!(
            a["reason"].as_str().unwrap_or("").contains("runaway loop"),
            "{a}"
        );
    }
    assert_eq!(
        submit_as(&app, &bot2, "send_email").await["status"],
        "approved"
    );
    // An agent of the same name in another workspace is another agent.
    let namesake = app.key("other", "bot", Role::Agent).await;
    let a = submit_as(&app, &namesake, "send_email").await;
    assert_ne!(a["status"], "blocked", "{a}");
    assert!(a["rule"].is_null(), "no policy there, so no rule: {a}");
    let (s, list) = app.send(app.get("/v1/reviews", &app.ann)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        list["reviews"],
        json!([]),
        "a blocked action opens no review"
    );

    // Block beats review: a review-mode workspace pause does not soften it.
    let (s, _) = pause(
        &app,
        "/v1/workspace/pause",
        &app.ann,
        json!({"mode": "review", "reason": "audit"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        submit_as(&app, &app.agent, "send_email").await["status"],
        "blocked"
    );
    assert_eq!(
        submit_as(&app, &bot2, "send_email").await["status"],
        "pending"
    );

    let events = all_events(&app).await;
    let paused = last_event(&events, "agent.paused");
    assert_eq!(paused["actor"], "admin:root");
    assert_eq!(paused["data"]["mode"], "block");
}

#[tokio::test]
async fn a_workspace_pause_covers_every_agent_until_resumed() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let bot2 = app.key("default", "bot2", Role::Agent).await;
    let outsider = app.key("other", "bot", Role::Agent).await;

    let (s, body) = pause(
        &app,
        "/v1/workspace/pause",
        &app.ann,
        json!({"mode": "review", "reason": "incident 42"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["pauses"][0]["agent"], Value::Null, "{body}");
    assert_eq!(body["pauses"][0]["mode"], "review");

    for token in [&app.agent, &bot2] {
        let a = submit_as(&app, token, "send_email").await;
        assert_eq!(a["status"], "pending", "{a}");
        assert_eq!(a["rule"], "@pause");
        let reason = a["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("workspace") && reason.contains("incident 42"),
            "{reason}"
        );
    }
    // Another workspace is not paused (it has no policy: fail safe review, but not by @pause).
    let a = submit_as(&app, &outsider, "send_email").await;
    assert_ne!(a["rule"], "@pause", "{a}");

    // Block mode for the whole workspace.
    let (s, _) = pause(
        &app,
        "/v1/workspace/pause",
        &app.ann,
        json!({"mode": "block", "reason": "incident 42, escalated"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(pauses(&app).await.as_array().map(Vec::len), Some(1));
    assert_eq!(
        submit_as(&app, &bot2, "send_email").await["status"],
        "blocked"
    );

    let (s, body) = app.send(app.post("/v1/workspace/resume", &app.ann)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["pauses"], json!([]));
    for token in [&app.agent, &bot2] {
        assert_eq!(
            submit_as(&app, token, "send_email").await["status"],
            "approved"
        );
    }

    let events = all_events(&app).await;
    let paused = last_event(&events, "workspace.paused");
    assert_eq!(paused["actor"], "reviewer:ann");
    assert_eq!(paused["subject"], "workspace:default");
    assert_eq!(paused["data"]["reason"], "incident 42, escalated");
    let resumed = last_event(&events, "workspace.resumed");
    assert_eq!(resumed["actor"], "reviewer:ann");
    // A second resume changes nothing and logs nothing.
    let n = events.len();
    let (s, _) = app.send(app.post("/v1/workspace/resume", &app.ann)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(all_events(&app).await.len(), n);
}

#[tokio::test]
async fn a_pause_survives_a_restart() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let (s, _) = pause(
        &app,
        "/v1/agents/bot/pause",
        &app.ann,
        json!({"mode": "block", "reason": "overnight"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let app = app.restart(Duration::from_millis(0)).await;
    assert_eq!(pauses(&app).await[0]["reason"], "overnight");
    let a = submit_as(&app, &app.agent, "send_email").await;
    assert_eq!(a["status"], "blocked", "{a}");
}

#[tokio::test]
async fn pausing_needs_a_reason_and_a_reviewer() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    for path in ["/v1/agents/bot/pause", "/v1/workspace/pause"] {
        let (s, body) = pause(&app, path, &app.ann, json!({"mode": "review"})).await;
        assert_error(
            s,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some("reason"),
        );
        let (s, body) = pause(
            &app,
            path,
            &app.ann,
            json!({"mode": "review", "reason": "   "}),
        )
        .await;
        assert_error(
            s,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some("reason"),
        );
        let long = "x".repeat(1001);
        let (s, body) = pause(
            &app,
            path,
            &app.ann,
            json!({"mode": "review", "reason": long}),
        )
        .await;
        assert_error(
            s,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some("reason"),
        );
        let (s, body) = pause(
            &app,
            path,
            &app.ann,
            json!({"mode": "sleep", "reason": "x"}),
        )
        .await;
        assert_error(
            s,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some("mode"),
        );
        let (s, body) = pause(
            &app,
            path,
            &app.agent,
            json!({"mode": "review", "reason": "x"}),
        )
        .await;
        assert_error(s, &body, StatusCode::FORBIDDEN, Some("forbidden"), None);
        let (s, body) = app
            .send(
                app.client
                    .post(format!("{}{path}", app.base))
                    .json(&json!({"mode": "review", "reason": "x"})),
            )
            .await;
        assert_error(
            s,
            &body,
            StatusCode::UNAUTHORIZED,
            Some("unauthorized"),
            None,
        );
    }
    for path in ["/v1/agents/bot/resume", "/v1/workspace/resume"] {
        let (s, body) = app.send(app.post(path, &app.agent)).await;
        assert_error(s, &body, StatusCode::FORBIDDEN, Some("forbidden"), None);
    }
    let (s, body) = pause(
        &app,
        "/v1/agents/no%20spaces/pause",
        &app.ann,
        json!({"mode": "review", "reason": "x"}),
    )
    .await;
    assert_error(
        s,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        None,
        Some("name"),
    );
    let (s, body) = app.send(app.get("/v1/pauses", &app.agent)).await;
    assert_error(s, &body, StatusCode::FORBIDDEN, Some("forbidden"), None);

    // Nothing was paused, nothing was logged.
    assert_eq!(pauses(&app).await, json!([]));
    let events = all_events(&app).await;
    assert!(
        events
            .iter()
            .all(|e| !e["type"].as_str().unwrap_or("").ends_with(".paused")),
        "{events:#?}"
    );
    assert_eq!(
        submit_as(&app, &app.agent, "send_email").await["status"],
        "approved"
    );
}
