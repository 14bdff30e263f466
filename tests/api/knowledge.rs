//! Knowledge changes through the real API: an agent proposes, a reviewer approves, edits or
//! rejects the `kb_change` review, approved changes (only those) are listed for agents with a
//! polling cursor and announced as `knowledge.approved` in the log, on webhooks and on SSE; and
//! the console's review page shows the proposal.

use crate::actions::all_events;
use crate::conversations::{open, post};
use crate::helpers::*;
use axum::http::HeaderMap;
use loopgate_domain::auth::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3ZzBmNlM+Zw=";

async fn propose(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.send(app.post("/v1/knowledge", &app.agent).json(&body))
        .await
}

async fn list(app: &TestApp, token: &str, query: &str) -> Value {
    let (s, body) = app
        .send(app.get(&format!("/v1/knowledge{query}"), token))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

fn titles(list: &Value) -> Vec<String> {
    list["changes"]
        .as_array()
        .expect("a changes array")
        .iter()
        .map(|c| c["title"].as_str().expect("a title").to_owned())
        .collect()
}

/// A local receiver of webhook bodies.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = bodies.clone();
    let app = axum::Router::new().fallback(move |_h: HeaderMap, body: String| {
        let seen = seen.clone();
        async move {
            if let Ok(v) = serde_json::from_str::<Value>(&body) {
                seen.lock().unwrap().push(v);
            }
            "ok"
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), bodies)
}

#[tokio::test]
async fn proposals_are_validated() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"title": "  ", "text": "x"}), "title"),
        (json!({"title": "t".repeat(201), "text": "x"}), "title"),
        (json!({"title": "ok", "text": ""}), "text"),
        (
            json!({"title": "ok", "text": "x".repeat(100 * 1024 + 1)}),
            "text",
        ),
        (json!({"text": "x"}), "title"),
        (
            json!({"title": "ok", "text": "x", "conversation_id": uuid::Uuid::now_v7()}),
            "conversation_id",
        ),
        (
            json!({"title": "ok", "text": "x", "conversation_id": "nope"}),
            "conversation_id",
        ),
        (
            json!({"title": "ok", "text": "x", "queue": "no spaces"}),
            "queue",
        ),
    ];
    for (body, field) in cases {
        let (s, e) = propose(&app, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(e["error"]["field"], field, "{e}");
    }
    // Exactly at the limits is fine; reviewers and admins cannot propose.
    let (s, k) = propose(
        &app,
        json!({"title": "é".repeat(200), "text": "x".repeat(100 * 1024)}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let (s, _) = app
        .send(
            app.post("/v1/knowledge", &app.ann)
                .json(&json!({"title": "t", "text": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Another agent's conversation is not a source this agent may cite.
    let other = app.key("default", "other-bot", Role::Agent).await;
    let (s, c) = app
        .send(app.post("/v1/conversations", &other).json(&json!({})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let (s, e) = propose(
        &app,
        json!({"title": "t", "text": "x", "conversation_id": c["id"]}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // Nothing is listed before a human approved it.
    assert!(titles(&list(&app, &app.agent, "").await).is_empty());

    // Documented like every other route.
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = &doc["paths"];
    assert!(paths["/v1/knowledge"]["post"].is_object(), "{paths}");
    assert!(paths["/v1/knowledge"]["get"].is_object(), "{paths}");
    assert!(
        paths["/v1/exports/training"]["get"]["responses"]["200"]["content"]["application/x-ndjson"]
            .is_object(),
        "{}",
        paths["/v1/exports/training"]
    );
}

#[tokio::test]
async fn approved_edited_and_rejected_changes() {
    let app = TestApp::spawn().await;
    let (hook_url, hook_bodies) = receiver().await;
    let (s, hook) = app
        .send(app.post("/v1/webhooks", &app.admin).json(&json!({
            "url": hook_url, "secret": SECRET, "events": ["knowledge.*"],
        })))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");

    let cid = open(&app, json!({})).await;
    let (s, _) = post(
        &app,
        &app.agent,
        &cid,
        "user",
        "How long do refunds take?",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, a) = propose(
        &app,
        json!({"title": "Refund times", "text": "Refunds take 3 days.", "conversation_id": cid}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["status"], "pending");
    assert_eq!(a["agent"], "bot");
    let review_a = a["review_id"].as_str().unwrap().to_owned();

    // The review: a kb_change in the `knowledge` queue, carrying the proposal and its conversation.
    let (s, r) = app
        .send(app.get(&format!("/v1/reviews/{review_a}"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["kind"], "kb_change");
    assert_eq!(r["queue"], "knowledge");
    assert_eq!(r["agent"], "bot");
    assert_eq!(r["knowledge"]["title"], "Refund times");
    assert_eq!(r["knowledge"]["proposed_text"], "Refunds take 3 days.");
    assert_eq!(r["conversation"]["id"], cid.as_str());

    // An edit needs text; a title alone is refused, and a title on an approval too.
    let (s, e) = app
        .decide(
            &app.ann,
            &review_a,
            json!({"verdict": "edit", "title": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["field"], "text");
    let (s, e) = app
        .decide(
            &app.ann,
            &review_a,
            json!({"verdict": "approve", "title": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["field"], "title");

    // Edited: the reviewer's title and text are published; the proposal is kept beside them.
    let (s, d) = app
        .decide(
            &app.ann,
            &review_a,
            json!({"verdict": "edit", "title": "Refund timing", "text": "Refunds take 5 business days."}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["outcome"], "approved");
    let listed = list(&app, &app.agent, "").await;
    assert_eq!(titles(&listed), ["Refund timing"]);
    let first = &listed["changes"][0];
    assert_eq!(first["text"], "Refunds take 5 business days.");
    assert_eq!(first["proposed_text"], "Refunds take 3 days.");
    assert_eq!(first["edited"], true);
    assert_eq!(first["status"], "approved");
    assert_eq!(first["decided_by"], "ann");
    assert_eq!(first["seq"], 1);
    let cursor = listed["cursor"].as_i64().unwrap();
    assert_eq!(cursor, 1);

    // Approved as proposed, and one rejected.
    let (_, b) = propose(&app, json!({"title": "Opening hours", "text": "9 to 5."})).await;
    let (_, c) = propose(
        &app,
        json!({"title": "Wrong fact", "text": "We sell cars."}),
    )
    .await;
    let (s, _) = app
        .decide(
            &app.bob,
            b["review_id"].as_str().unwrap(),
            json!({"verdict": "approve"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .decide(
            &app.bob,
            c["review_id"].as_str().unwrap(),
            json!({"verdict": "reject", "comment": "not true"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // Newest first for everyone who may read; the rejected one never appears.
    assert_eq!(
        titles(&list(&app, &app.agent, "").await),
        ["Opening hours", "Refund timing"]
    );
    assert_eq!(
        titles(&list(&app, &app.ann, "").await),
        ["Opening hours", "Refund timing"]
    );
    // Polling: only what was approved after the cursor.
    let newer = list(&app, &app.agent, &format!("?after={cursor}")).await;
    assert_eq!(titles(&newer), ["Opening hours"]);
    assert_eq!(newer["cursor"], 2);
    let none = list(&app, &app.agent, "?after=2").await;
    assert!(titles(&none).is_empty());
    assert_eq!(none["cursor"], 2);
    let (s, e) = app
        .send(app.get("/v1/knowledge?after=-1", &app.agent))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["field"], "after");

    // The log has each outcome, with the published text on approval.
    let events = all_events(&app).await;
    let approved: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "knowledge.approved")
        .collect();
    assert_eq!(approved.len(), 2, "{approved:?}");
    assert_eq!(approved[0]["data"]["title"], "Refund timing");
    assert_eq!(approved[0]["data"]["text"], "Refunds take 5 business days.");
    assert_eq!(approved[0]["data"]["edited"], true);
    assert_eq!(approved[0]["data"]["agent"], "bot");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "knowledge.rejected")
            .count(),
        1
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "knowledge.proposed")
            .count(),
        3
    );

    // The outbox delivers them to the subscribed webhook.
    let mut got = Vec::new();
    for _ in 0..200 {
        got = hook_bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "knowledge.approved")
            .cloned()
            .collect::<Vec<_>>();
        if got.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut titles: Vec<&str> = got
        .iter()
        .map(|b| b["data"]["title"].as_str().unwrap())
        .collect();
    titles.sort();
    titles.dedup();
    assert_eq!(titles, ["Opening hours", "Refund timing"], "{got:?}");

    // Deciding twice is refused as for any review.
    let (s, _) = app
        .decide(&app.bob, &review_a, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_agent_hears_its_approval_on_sse() {
    let app = TestApp::spawn().await;
    let (_, k) = propose(&app, json!({"title": "Returns", "text": "30 days."})).await;
    let mut resp = app
        .get("/v1/events", &app.agent)
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(resp.status(), StatusCode::OK);
    let (s, _) = app
        .decide(
            &app.ann,
            k["review_id"].as_str().unwrap(),
            json!({"verdict": "approve"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("event: knowledge.approved") {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("knowledge.approved within 10 s")
            .expect("the stream stays up")
            .expect("the stream does not end");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("30 days."), "{seen}");
}

#[tokio::test]
async fn the_console_shows_a_knowledge_change() {
    let app = TestApp::spawn().await;
    let cid = open(&app, json!({})).await;
    let (_, k) = propose(
        &app,
        json!({"title": "Shipping <fast>", "text": "We ship in 2 days.", "conversation_id": cid}),
    )
    .await;
    let review_id = k["review_id"].as_str().unwrap().to_owned();
    let hash = loopgate_store::secrets::hash_password("correct horse battery").unwrap();
    let user = app
        .store
        .create_user("default", "carol", Role::Reviewer, &hash)
        .await
        .unwrap();
    let session = app.store.create_session(&user, 3_600_000).await.unwrap();
    let resp = app
        .client
        .get(format!("{}/reviews/{review_id}", app.base))
        .header("cookie", format!("loopgate_session={}", session.token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    for needle in [
        "data-testid=\"knowledge-change\"",
        "Shipping &lt;fast&gt;",
        "We ship in 2 days.",
        &format!("href=\"/conversations/{cid}\""),
        "data-testid=\"edit-title\"",
        "name=\"title\"",
        "data-testid=\"edit-text\"",
        "Publish",
    ] {
        assert!(html.contains(needle), "the page lacks {needle:?}");
    }
}
