//! Group commit and the writer's batch cache: a change to pauses or webhooks binds every write
//! logged after it, even one that shares its transaction.
//!
//! The writer reads a workspace's pauses and webhooks once per batch and drops its copy when a job
//! changes them. These tests send the change in the middle of a crowd of concurrent submissions,
//! so that it lands inside a group commit beside them (which jobs share a batch is up to timing;
//! several rounds make it all but certain), and then check the order the audit log records:
//! everything logged after the change obeys it, everything before does not.

use crate::audit::all_events;
use crate::helpers::*;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

const ROUNDS: usize = 5;
const CROWD: usize = 40;

async fn crowd(app: &TestApp, round: usize) {
    let submissions = (0..CROWD).map(|i| async move {
        let (s, a) = app
            .submit(json!({"name": "send_email", "arguments": {"round": round, "n": i}}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
    });
    join_all(submissions).await;
}

fn seq_of(events: &[Value], kind: &str) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["seq"].as_i64().expect("a seq"))
        .collect()
}

#[tokio::test]
async fn a_pause_binds_every_submission_logged_after_it_in_the_same_commit_too() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    for round in 0..ROUNDS {
        let pause = async {
            tokio::task::yield_now().await;
            let (s, body) = app
                .send(
                    app.post("/v1/workspace/pause", &app.ann)
                        .json(&json!({"mode": "block", "reason": format!("round {round}")})),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{body}");
        };
        tokio::join!(crowd(&app, round), pause);
        let (s, body) = app
            .send(
                app.post("/v1/workspace/resume", &app.ann)
                    .json(&json!({"reason": "next"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }

    let events = all_events(&app).await;
    let paused = seq_of(&events, "workspace.paused");
    let resumed = seq_of(&events, "workspace.resumed");
    assert_eq!((paused.len(), resumed.len()), (ROUNDS, ROUNDS));
    let in_force = |seq: i64| {
        paused
            .iter()
            .zip(&resumed)
            .any(|(p, r)| *p < seq && seq < *r)
    };
    let mut created = 0;
    for e in events.iter().filter(|e| e["type"] == "action.created") {
        let seq = e["seq"].as_i64().expect("a seq");
        let want = if in_force(seq) { "blocked" } else { "approved" };
        assert_eq!(
            e["data"]["status"], want,
            "action.created at seq {seq}: {e}"
        );
        created += 1;
    }
    assert_eq!(created, ROUNDS * CROWD);
}

#[tokio::test]
async fn a_new_webhook_gets_every_event_logged_after_it_in_the_same_commit_too() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let mut hooks = Vec::new();
    for round in 0..ROUNDS {
        let register = async {
            tokio::task::yield_now().await;
            let (s, w) = app
                .send(app.post("/v1/webhooks", &app.admin).json(&json!({
                    // Nobody listens there: the rows stay in the outbox, which is what we count.
                    "url": "http://127.0.0.1:9/hook",
                    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3ZzBmNlM+Zw=",
                    "events": ["action.created"],
                })))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{w}");
            w["id"].as_str().expect("an id").to_owned()
        };
        let ((), hook) = tokio::join!(crowd(&app, round), register);
        hooks.push(hook);
    }

    let events = all_events(&app).await;
    let registered = seq_of(&events, "webhook.created");
    assert_eq!(registered.len(), ROUNDS);
    let created = seq_of(&events, "action.created");
    for (hook, since) in hooks.iter().zip(&registered) {
        let (s, body) = app
            .send(app.get(
                &format!("/v1/webhooks/{hook}/deliveries?limit=500"),
                &app.admin,
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let mut got: Vec<i64> = body["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .map(|d| d["event_seq"].as_i64().expect("event_seq"))
            .collect();
        got.sort_unstable();
        let want: Vec<i64> = created.iter().copied().filter(|s| s > since).collect();
        assert_eq!(got, want, "webhook {hook} registered at seq {since}");
    }
}
