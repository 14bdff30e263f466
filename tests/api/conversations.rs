//! Live conversations through the real API: opening, every transition of the state machine and
//! every refusal, who may post in which state, the message policy (deliver, held drafts,
//! escalation), sensitive topics, visibility between agents, end-user feedback, and the takeover
//! race.

use crate::helpers::*;
use futures::future::join_all;
use loopgate_domain::auth::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A message policy with one rule per outcome (and a sensitive-topics rule first).
pub(crate) const CONVERSATION_POLICY: &str = r#"
[[rule]]
name = "sensitive topics go to a human"
applies_to = "message"
when = 'message.text.contains("lawyer") || (has(context.tags) && "medical" in context.tags)'
then = "escalate"
queue = "sensitive"
priority = 8
timeout = "15m"

[[rule]]
name = "refund talk is checked first"
applies_to = "message"
when = 'message.text.contains("refund")'
then = "review"
queue = "drafts"
priority = 3

[[rule]]
name = "unsure answers escalate"
applies_to = "message"
when = "confidence >= 0.0 && confidence < 0.6"
then = "escalate"
queue = "tier2"
priority = 5

[[rule]]
name = "confident answers go out"
applies_to = "message"
when = "true"
then = "deliver"
"#;

/// Open a conversation as the default agent; returns its id.
pub(crate) async fn open(app: &TestApp, context: Value) -> String {
    let (s, c) = app
        .send(
            app.post("/v1/conversations", &app.agent)
                .json(&json!({ "context": context })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["state"], "ai", "{c}");
    c["id"].as_str().expect("an id").to_owned()
}

/// Post a message (`confidence` only for `ai`).
pub(crate) async fn post(
    app: &TestApp,
    token: &str,
    cid: &str,
    role: &str,
    text: &str,
    confidence: Option<f64>,
) -> (StatusCode, Value) {
    let mut body = json!({ "role": role, "text": text });
    if let Some(c) = confidence {
        body["confidence"] = json!(c);
    }
    app.send(
        app.post(&format!("/v1/conversations/{cid}/messages"), token)
            .json(&body),
    )
    .await
}

/// `POST /v1/conversations/{cid}/{verb}` with an optional body.
pub(crate) async fn change(
    app: &TestApp,
    token: &str,
    cid: &str,
    verb: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = app.post(&format!("/v1/conversations/{cid}/{verb}"), token);
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    app.send(req).await
}

/// The conversation with its transcript, as a reviewer sees it.
pub(crate) async fn conversation(app: &TestApp, cid: &str) -> Value {
    let (s, c) = app
        .send(app.get(&format!("/v1/conversations/{cid}"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    c
}

/// One message of a conversation's transcript.
pub(crate) async fn message(app: &TestApp, cid: &str, mid: &str) -> Value {
    let c = conversation(app, cid).await;
    c["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["id"] == mid)
        .unwrap_or_else(|| panic!("message {mid} is not in {c}"))
        .clone()
}

/// A review with its subject.
pub(crate) async fn review(app: &TestApp, id: &str) -> Value {
    let (s, r) = app
        .send(app.get(&format!("/v1/reviews/{id}"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    r
}

/// Every review of the workspace, any status.
pub(crate) async fn reviews(app: &TestApp) -> Vec<Value> {
    let (s, body) = app
        .send(app.get("/v1/reviews?status=all&limit=500", &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["reviews"].as_array().expect("reviews").clone()
}

/// The whole audit log of the default workspace, in order.
pub(crate) async fn audit(app: &TestApp) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let (s, page) = app
            .send(app.get(&format!("/v1/audit?after={after}&limit=1000"), &app.admin))
            .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        out.extend(page["events"].as_array().expect("events").iter().cloned());
        match page["next_after"].as_i64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

/// Does this event concern the conversation (its subject, or `data.conversation_id`)?
pub(crate) fn about(e: &Value, cid: &str) -> bool {
    e["subject"] == format!("conversation:{cid}") || e["data"]["conversation_id"] == cid
}

/// A 409 whose message names `state` as a word.
#[track_caller]
fn assert_refused(status: StatusCode, body: &Value, state: &str) {
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| w == state),
        "the refusal should name the state {state:?}: {body}"
    );
}

async fn state_of(app: &TestApp, cid: &str) -> String {
    conversation(app, cid).await["state"]
        .as_str()
        .expect("a state")
        .to_owned()
}

#[tokio::test]
async fn opening_and_reopening_by_external_id() {
    let app = TestApp::spawn().await;
    let (s, c) = app
        .send(app.post("/v1/conversations", &app.agent).json(
            &json!({"external_id": "chat-42", "context": {"tier": "gold", "tags": ["billing"]}}),
        ))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["state"], "ai");
    assert_eq!(c["external_id"], "chat-42");
    assert_eq!(c["context"]["tier"], "gold");
    let id = c["id"].as_str().unwrap().to_owned();

    // The same external id: the same conversation, 200.
    let (s, again) = app
        .send(
            app.post("/v1/conversations", &app.agent)
                .json(&json!({"external_id": "chat-42"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["id"], id.as_str());

    // Another external id, or none: new conversations.
    let (s, other) = app
        .send(
            app.post("/v1/conversations", &app.agent)
                .json(&json!({"external_id": "chat-43"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{other}");
    assert_ne!(other["id"], id.as_str());
    let (s, bare) = app.send(app.post("/v1/conversations", &app.agent)).await;
    assert_eq!(s, StatusCode::CREATED, "{bare}");
    assert_ne!(bare["id"], id.as_str());

    // Another agent's external ids are its own.
    let other_agent = app.key("default", "otherbot", Role::Agent).await;
    let (s, theirs) = app
        .send(
            app.post("/v1/conversations", &other_agent)
                .json(&json!({"external_id": "chat-42"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{theirs}");
    assert_ne!(theirs["id"], id.as_str());

    // Only agents open conversations.
    let (s, body) = app
        .send(app.post("/v1/conversations", &app.ann).json(&json!({})))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");

    // Concurrent opens of one new external id: one conversation, created once.
    let opens = (0..8).map(|_| {
        app.send(
            app.post("/v1/conversations", &app.agent)
                .json(&json!({"external_id": "chat-race"})),
        )
    });
    let results = join_all(opens).await;
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{results:?}");
    assert!(results
        .iter()
        .all(|(s, c)| s.is_success() && c["id"] == results[0].1["id"]));

    // Exactly one conversation.created event for chat-42.
    let created: Vec<_> = audit(&app)
        .await
        .into_iter()
        .filter(|e| {
            e["type"] == "conversation.created" && e["subject"] == format!("conversation:{id}")
        })
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
}

#[tokio::test]
async fn every_transition_of_the_state_machine() {
    let app = TestApp::spawn().await;
    app.put_policy(CONVERSATION_POLICY).await;
    let cid = open(&app, json!({"tags": []})).await;

    // ai --escalate (by the agent, with a reason, queue, priority and SLA)--> waiting
    let before = chrono::Utc::now();
    let (s, c) = change(
        &app,
        &app.agent,
        &cid,
        "escalate",
        Some(json!({"reason": "outside my competence", "queue": "tier2", "priority": 7, "timeout": "15m"})),
    )
    .await;
    let after = chrono::Utc::now();
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "waiting");
    assert_eq!(state_of(&app, &cid).await, "waiting");

    let (s, queue) = app
        .send(app.get("/v1/reviews?queue=tier2&kind=escalation", &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK, "{queue}");
    let queue = queue["reviews"].as_array().unwrap();
    assert_eq!(queue.len(), 1, "{queue:?}");
    let esc = &queue[0];
    assert_eq!(esc["kind"], "escalation");
    assert_eq!(esc["status"], "pending");
    assert_eq!(esc["queue"], "tier2");
    assert_eq!(esc["priority"], 7);
    assert_eq!(esc["conversation_id"], cid.as_str());
    assert!(
        esc["reason"]
            .as_str()
            .unwrap()
            .contains("outside my competence"),
        "{esc}"
    );
    let due: chrono::DateTime<chrono::Utc> = esc["due_at"]
        .as_str()
        .expect("an SLA")
        .parse()
        .expect("an RFC 3339 time");
    let sla = chrono::Duration::minutes(15);
    let slack = chrono::Duration::seconds(1);
    assert!(
        due >= before + sla - slack && due <= after + sla + slack,
        "due_at {due} is not 15 minutes after the escalation ({before}..{after})"
    );
    let esc_id = esc["id"].as_str().unwrap().to_owned();
    // The review carries the conversation for the reviewer.
    let detail = review(&app, &esc_id).await;
    assert_eq!(detail["conversation"]["id"], cid.as_str(), "{detail}");

    // waiting --takeover--> human; the escalation is answered by the takeover.
    let (s, c) = change(&app, &app.ann, &cid, "takeover", None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "human");
    assert_eq!(c["assignee"], "ann");
    let esc = review(&app, &esc_id).await;
    assert_eq!(esc["status"], "decided", "{esc}");
    assert_eq!(esc["outcome"], "taken_over", "{esc}");

    // human --handback--> ai
    let (s, c) = change(
        &app,
        &app.ann,
        &cid,
        "handback",
        Some(json!({"reason": "resolved"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "ai");
    assert!(c["assignee"].is_null(), "{c}");

    // ai --takeover (override at any time)--> human
    let (s, c) = change(&app, &app.bob, &cid, "takeover", None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "human");
    assert_eq!(c["assignee"], "bob");

    // human --close--> closed
    let (s, c) = change(&app, &app.bob, &cid, "close", None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "closed");
    assert_eq!(state_of(&app, &cid).await, "closed");

    // close from ai (by the agent) and from waiting (the escalation is cancelled).
    let from_ai = open(&app, json!({})).await;
    let (s, c) = change(&app, &app.agent, &from_ai, "close", None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "closed");

    let from_waiting = open(&app, json!({})).await;
    let (s, _) = change(&app, &app.agent, &from_waiting, "escalate", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, c) = change(&app, &app.ann, &from_waiting, "close", None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "closed");
    let esc = reviews(&app)
        .await
        .into_iter()
        .find(|r| r["conversation_id"] == from_waiting.as_str())
        .expect("the escalation review");
    assert_eq!(esc["status"], "cancelled", "{esc}");

    // The audit log tells the story of the first conversation, in order.
    let story: Vec<String> = audit(&app)
        .await
        .iter()
        .filter(|e| e["subject"] == format!("conversation:{cid}"))
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        story,
        [
            "conversation.created",
            "conversation.escalated",
            "conversation.taken_over",
            "conversation.handed_back",
            "conversation.taken_over",
            "conversation.closed"
        ]
    );
}

#[tokio::test]
async fn illegal_transitions_are_refused_naming_the_state() {
    let app = TestApp::spawn().await;
    let cid = open(&app, json!({})).await;

    // From ai: no hand-back.
    let (s, b) = change(&app, &app.ann, &cid, "handback", None).await;
    assert_refused(s, &b, "ai");
    assert_eq!(state_of(&app, &cid).await, "ai");

    // From waiting: no second escalation, no hand-back.
    let (s, _) = change(&app, &app.agent, &cid, "escalate", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = change(&app, &app.agent, &cid, "escalate", None).await;
    assert_refused(s, &b, "waiting");
    let (s, b) = change(&app, &app.ann, &cid, "handback", None).await;
    assert_refused(s, &b, "waiting");
    assert_eq!(state_of(&app, &cid).await, "waiting");
    // Refused escalations opened no second review.
    let open_escalations = reviews(&app)
        .await
        .into_iter()
        .filter(|r| r["conversation_id"] == cid.as_str() && r["kind"] == "escalation")
        .count();
    assert_eq!(open_escalations, 1);

    // From human: no second takeover, no escalation.
    let (s, _) = change(&app, &app.ann, &cid, "takeover", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = change(&app, &app.bob, &cid, "takeover", None).await;
    assert_refused(s, &b, "human");
    let (s, b) = change(&app, &app.agent, &cid, "escalate", None).await;
    assert_refused(s, &b, "human");
    let c = conversation(&app, &cid).await;
    assert_eq!(c["state"], "human");
    assert_eq!(c["assignee"], "ann", "the refused takeover changed nothing");

    // From closed: nothing at all, and nobody may post.
    let (s, _) = change(&app, &app.ann, &cid, "close", None).await;
    assert_eq!(s, StatusCode::OK);
    for (verb, token) in [
        ("escalate", &app.agent),
        ("takeover", &app.ann),
        ("handback", &app.ann),
        ("close", &app.agent),
    ] {
        let (s, b) = change(&app, token, &cid, verb, None).await;
        assert_refused(s, &b, "closed");
    }
    for (role, token) in [
        ("user", &app.agent),
        ("ai", &app.agent),
        ("human", &app.ann),
    ] {
        let (s, b) = post(&app, token, &cid, role, "hello?", None).await;
        assert_refused(s, &b, "closed");
    }
    assert_eq!(state_of(&app, &cid).await, "closed");

    // Roles: only reviewers take over and hand back.
    let cid = open(&app, json!({})).await;
    let (s, b) = change(&app, &app.agent, &cid, "takeover", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, _) = change(&app, &app.ann, &cid, "takeover", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = change(&app, &app.agent, &cid, "handback", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(state_of(&app, &cid).await, "human");
}

#[tokio::test]
async fn the_ai_is_refused_while_a_human_is_needed_but_the_user_is_heard() {
    let app = TestApp::spawn().await;
    app.put_policy(CONVERSATION_POLICY).await;
    let cid = open(&app, json!({})).await;

    let (s, m) = post(
        &app,
        &app.agent,
        &cid,
        "ai",
        "Hello, how can I help?",
        Some(0.95),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["status"], "delivered");

    // A human may not write while the AI has the conversation.
    let (s, b) = post(&app, &app.ann, &cid, "human", "Hi, Ann here", None).await;
    assert_refused(s, &b, "ai");

    // waiting: the AI is refused; the user is still heard; no human yet.
    let (s, _) = change(&app, &app.agent, &cid, "escalate", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = post(&app, &app.agent, &cid, "ai", "Let me guess...", Some(0.99)).await;
    assert_refused(s, &b, "waiting");
    let (s, m) = post(&app, &app.agent, &cid, "user", "Anyone there?", None).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["status"], "delivered");
    assert_eq!(m["role"], "user");
    let (s, b) = post(&app, &app.ann, &cid, "human", "Hi, Ann here", None).await;
    assert_refused(s, &b, "waiting");

    // human: the AI is refused; the user and the human who took over may write.
    let (s, _) = change(&app, &app.ann, &cid, "takeover", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = post(&app, &app.agent, &cid, "ai", "I am back", Some(0.99)).await;
    assert_refused(s, &b, "human");
    let (s, m) = post(&app, &app.agent, &cid, "user", "Hello?", None).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let (s, m) = post(
        &app,
        &app.ann,
        &cid,
        "human",
        "Hi, Ann here. Let me look.",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["role"], "human");
    assert_eq!(m["status"], "delivered");
    assert_eq!(m["author"], "ann");

    // A human message needs a reviewer key; user and ai messages need the agent's.
    let (s, b) = post(&app, &app.agent, &cid, "human", "I am human, honest", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, b) = post(&app, &app.ann, &cid, "ai", "AI, honest", Some(0.9)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, b) = post(&app, &app.ann, &cid, "user", "a user, honest", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");

    // After the hand-back the AI speaks again.
    let (s, _) = change(&app, &app.ann, &cid, "handback", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, m) = post(&app, &app.agent, &cid, "ai", "Anything else?", Some(0.97)).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["status"], "delivered");

    // The transcript holds exactly what was accepted, in order; nothing refused was stored.
    let c = conversation(&app, &cid).await;
    let transcript: Vec<(String, String)> = c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("ai", "Hello, how can I help?"),
        ("user", "Anyone there?"),
        ("user", "Hello?"),
        ("human", "Hi, Ann here. Let me look."),
        ("ai", "Anything else?"),
    ]
    .iter()
    .map(|(r, t)| (r.to_string(), t.to_string()))
    .collect();
    assert_eq!(transcript, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_takeovers_one_wins() {
    let app = TestApp::spawn().await;
    // Once from ai, once from waiting (where the escalation must be answered exactly once).
    for escalate_first in [false, true] {
        let cid = open(&app, json!({})).await;
        if escalate_first {
            let (s, _) = change(&app, &app.agent, &cid, "escalate", None).await;
            assert_eq!(s, StatusCode::OK);
        }
        let attempts = (0..10).map(|i| {
            let token = if i % 2 == 0 { &app.ann } else { &app.bob };
            let app = &app;
            let cid = cid.clone();
            async move {
                let (s, b) = change(app, token, &cid, "takeover", None).await;
                (s, b, if i % 2 == 0 { "ann" } else { "bob" })
            }
        });
        let results = join_all(attempts).await;
        let winners: Vec<_> = results
            .iter()
            .filter(|(s, _, _)| *s == StatusCode::OK)
            .collect();
        assert_eq!(winners.len(), 1, "exactly one takeover wins: {results:?}");
        for (s, b, _) in &results {
            if *s != StatusCode::OK {
                assert_refused(*s, b, "human");
            }
        }
        let c = conversation(&app, &cid).await;
        assert_eq!(c["state"], "human");
        assert_eq!(c["assignee"], winners[0].2, "{c}");

        let events = audit(&app).await;
        let taken: Vec<_> = events
            .iter()
            .filter(|e| {
                e["type"] == "conversation.taken_over"
                    && e["subject"] == format!("conversation:{cid}")
            })
            .collect();
        assert_eq!(taken.len(), 1, "{taken:?}");
        if escalate_first {
            let decided = events
                .iter()
                .filter(|e| e["type"] == "review.decided" && about(e, &cid))
                .count();
            assert_eq!(decided, 1, "the escalation is answered once");
        }
    }
}

#[tokio::test]
async fn confident_answers_are_delivered() {
    let app = TestApp::spawn().await;
    app.put_policy(CONVERSATION_POLICY).await;
    let cid = open(&app, json!({"tags": ["shipping"]})).await;
    let (s, m) = post(&app, &app.agent, &cid, "user", "Where is my parcel?", None).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["status"], "delivered");
    let (s, m) = post(
        &app,
        &app.agent,
        &cid,
        "ai",
        "It left the warehouse today.",
        Some(0.92),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["status"], "delivered");
    assert_eq!(m["rule"], "confident answers go out");
    assert_eq!(m["confidence"], 0.92);
    assert!(m["review_id"].is_null(), "{m}");
    assert!(m["delivered_at"].is_string(), "{m}");
    let c = conversation(&app, &cid).await;
    assert_eq!(c["state"], "ai");
    assert_eq!(c["messages"].as_array().unwrap().len(), 2);
    assert!(reviews(&app).await.is_empty());

    // No policy at all: an AI reply is held for review (fail safe).
    let app = TestApp::spawn().await;
    let cid = open(&app, json!({})).await;
    let (s, m) = post(&app, &app.agent, &cid, "ai", "Sure thing", Some(0.99)).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["status"], "held", "{m}");
}

/// Post a draft the policy holds; returns (message id, review id).
async fn held_draft(app: &TestApp, cid: &str, text: &str) -> (String, String) {
    let (s, m) = post(app, &app.agent, cid, "ai", text, Some(0.9)).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["status"], "held", "{m}");
    assert_eq!(m["rule"], "refund talk is checked first");
    assert!(m["delivered_at"].is_null(), "{m}");
    let rid = m["review_id"].as_str().expect("a review id").to_owned();
    let r = review(app, &rid).await;
    assert_eq!(r["kind"], "draft", "{r}");
    assert_eq!(r["queue"], "drafts");
    assert_eq!(r["priority"], 3);
    assert_eq!(r["status"], "pending");
    assert_eq!(r["message"]["id"], m["id"], "{r}");
    assert_eq!(r["message"]["text"], text, "{r}");
    assert_eq!(r["conversation_id"], cid);
    (m["id"].as_str().unwrap().to_owned(), rid)
}

#[tokio::test]
async fn held_drafts_approved_edited_or_rejected() {
    let app = TestApp::spawn().await;
    app.put_policy(CONVERSATION_POLICY).await;
    let cid = open(&app, json!({})).await;
    let original = "I have issued a refund of 500 EUR.";

    // Approved: the original text goes out.
    let (mid, rid) = held_draft(&app, &cid, original).await;
    let (s, d) = app
        .decide(&app.ann, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["status"], "decided");
    let m = message(&app, &cid, &mid).await;
    assert_eq!(m["status"], "delivered", "{m}");
    assert_eq!(m["text"], original);
    assert!(m["original_text"].is_null(), "{m}");
    assert!(m["delivered_at"].is_string(), "{m}");
    // Decided once only.
    let (s, d) = app
        .decide(&app.bob, &rid, json!({"verdict": "reject"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{d}");
    assert_eq!(message(&app, &cid, &mid).await["status"], "delivered");

    // Edited: the reviewer's text goes out, the draft is kept.
    let (mid, rid) = held_draft(&app, &cid, original).await;
    let (s, d) = app.decide(&app.ann, &rid, json!({"verdict": "edit"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{d}");
    assert_eq!(d["error"]["field"], "text", "{d}");
    let edited = "A refund of 50 EUR is on its way; the rest needs a manager.";
    let (s, d) = app
        .decide(&app.ann, &rid, json!({"verdict": "edit", "text": edited}))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let m = message(&app, &cid, &mid).await;
    assert_eq!(m["status"], "delivered", "{m}");
    assert_eq!(m["text"], edited);
    assert_eq!(m["original_text"], original);

    // Rejected: discarded, never shown.
    let (mid, rid) = held_draft(&app, &cid, original).await;
    let (s, d) = app
        .decide(
            &app.bob,
            &rid,
            json!({"verdict": "reject", "comment": "no"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let m = message(&app, &cid, &mid).await;
    assert_eq!(m["status"], "discarded", "{m}");
    assert!(m["delivered_at"].is_null(), "{m}");

    // The log agrees: the rejected draft was never delivered, the others once each.
    let events = audit(&app).await;
    let delivered: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "message.delivered")
        .map(|e| e["data"]["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert!(!delivered.contains(&mid.as_str()));
    // The edited delivery carries the edited text.
    assert!(events
        .iter()
        .any(|e| e["type"] == "message.delivered" && e["data"]["text"] == edited));
    // While drafts are held the conversation stays with the AI.
    assert_eq!(state_of(&app, &cid).await, "ai");
}

#[tokio::test]
async fn unsure_answers_escalate_into_the_rules_queue() {
    let app = TestApp::spawn().await;
    app.put_policy(CONVERSATION_POLICY).await;
    let cid = open(&app, json!({})).await;
    let (s, m) = post(
        &app,
        &app.agent,
        &cid,
        "ai",
        "Maybe try restarting?",
        Some(0.3),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["status"], "escalated", "{m}");
    assert_eq!(m["rule"], "unsure answers escalate");
    let rid = m["review_id"].as_str().expect("a review").to_owned();
    assert_eq!(state_of(&app, &cid).await, "waiting");

    let r = review(&app, &rid).await;
    assert_eq!(r["kind"], "escalation", "{r}");
    assert_eq!(r["queue"], "tier2");
    assert_eq!(r["priority"], 5);
    assert_eq!(r["rule"], "unsure answers escalate");
    assert_eq!(r["status"], "pending");
    assert_eq!(r["conversation"]["id"], cid.as_str(), "{r}");
    assert_eq!(r["message"]["id"], m["id"], "{r}");

    // It sits in that queue, and the AI may not follow up meanwhile.
    let (_, q) = app.send(app.get("/v1/reviews?queue=tier2", &app.bob)).await;
    assert!(q["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["id"] == rid.as_str()));
    let (s, b) = post(&app, &app.agent, &cid, "ai", "Or not.", Some(0.99)).await;
    assert_refused(s, &b, "waiting");

    // The escalation event names the rule.
    let events = audit(&app).await;
    let esc: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "conversation.escalated" && about(e, &cid))
        .collect();
    assert_eq!(esc.len(), 1);
    assert_eq!(esc[0]["data"]["rule"], "unsure answers escalate");

    // A human takes over: the unsure draft is never shown.
    let (s, _) = change(&app, &app.bob, &cid, "takeover", None).await;
    assert_eq!(s, StatusCode::OK);
    let msg = message(&app, &cid, m["id"].as_str().unwrap()).await;
    assert_ne!(msg["status"], "delivered", "{msg}");
    assert_eq!(review(&app, &rid).await["outcome"], "taken_over");
}

#[tokio::test]
async fn deciding_an_escalation_hands_the_conversation_back() {
    let app = TestApp::spawn().await;
    app.put_policy(CONVERSATION_POLICY).await;
    for (verdict, status) in [("approve", "delivered"), ("reject", "discarded")] {
        let cid = open(&app, json!({})).await;
        let (_, m) = post(&app, &app.agent, &cid, "ai", "Perhaps?", Some(0.2)).await;
        assert_eq!(m["status"], "escalated", "{m}");
        let rid = m["review_id"].as_str().unwrap();
        let (s, d) = app
            .decide(&app.ann, rid, json!({ "verdict": verdict }))
            .await;
        assert_eq!(s, StatusCode::OK, "{d}");
        let msg = message(&app, &cid, m["id"].as_str().unwrap()).await;
        assert_eq!(msg["status"], status, "{verdict}: {msg}");
        assert_eq!(state_of(&app, &cid).await, "ai", "{verdict}");
    }
}

#[tokio::test]
async fn escalation_input_is_validated() {
    let app = TestApp::spawn().await;
    let cid = open(&app, json!({})).await;
    for (body, field) in [
        (json!({"queue": "no spaces please"}), "queue"),
        (json!({"timeout": "soon"}), "timeout"),
        (json!({"timeout": "0s"}), "timeout"),
        (json!({"reason": "x".repeat(1001)}), "reason"),
        (json!({"priority": "high"}), "priority"),
    ] {
        let (s, b) = change(&app, &app.agent, &cid, "escalate", Some(body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        assert_eq!(b["error"]["field"], field, "{b}");
    }
    assert_eq!(state_of(&app, &cid).await, "ai", "nothing was escalated");
    let (s, b) = change(&app, &app.agent, "not-an-id", "escalate", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = change(
        &app,
        &app.agent,
        &uuid::Uuid::now_v7().to_string(),
        "escalate",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
}

#[tokio::test]
async fn sensitive_topics_go_to_humans() {
    let app = TestApp::spawn().await;
    app.put_policy(CONVERSATION_POLICY).await;

    // A medical conversation: even a confident answer waits for a human.
    let medical = open(&app, json!({"tags": ["medical"]})).await;
    let (s, m) = post(
        &app,
        &app.agent,
        &medical,
        "ai",
        "Take two aspirin.",
        Some(0.99),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["status"], "escalated", "{m}");
    assert_eq!(m["rule"], "sensitive topics go to a human");
    assert_eq!(state_of(&app, &medical).await, "waiting");
    let r = review(&app, m["review_id"].as_str().unwrap()).await;
    assert_eq!(r["queue"], "sensitive");
    assert_eq!(r["priority"], 8);
    assert!(
        r["due_at"].is_string(),
        "the rule's timeout sets an SLA: {r}"
    );

    // Legal talk, whatever the tags.
    let legal = open(&app, json!({"tags": ["billing"]})).await;
    let (s, m) = post(
        &app,
        &app.agent,
        &legal,
        "ai",
        "You may want to ask a lawyer about that.",
        Some(0.95),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["status"], "escalated", "{m}");
    assert_eq!(state_of(&app, &legal).await, "waiting");

    // An ordinary conversation is left to the AI.
    let plain = open(&app, json!({"tags": ["billing"]})).await;
    let (s, m) = post(
        &app,
        &app.agent,
        &plain,
        "ai",
        "Your invoice is attached.",
        Some(0.95),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["status"], "delivered", "{m}");
    assert_eq!(state_of(&app, &plain).await, "ai");

    let (_, q) = app
        .send(app.get("/v1/reviews?queue=sensitive", &app.ann))
        .await;
    assert_eq!(q["reviews"].as_array().unwrap().len(), 2, "{q}");
}

#[tokio::test]
async fn agents_see_only_their_own_conversations() {
    let app = TestApp::spawn().await;
    app.put_policy(CONVERSATION_POLICY).await;
    let cid = open(&app, json!({})).await;
    let (_, m) = post(&app, &app.agent, &cid, "ai", "Hello!", Some(0.9)).await;
    let mid = m["id"].as_str().unwrap().to_owned();

    let intruder = app.key("default", "intruder", Role::Agent).await;
    let elsewhere = app.key("acme", "acmebot", Role::Agent).await;
    for token in [&intruder, &elsewhere] {
        let (s, b) = app
            .send(app.get(&format!("/v1/conversations/{cid}"), token))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
        let (s, b) = post(&app, token, &cid, "user", "hi", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
        let (s, b) = post(&app, token, &cid, "ai", "hi", Some(0.9)).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
        for verb in ["escalate", "close"] {
            let (s, b) = change(&app, token, &cid, verb, None).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{verb}: {b}");
        }
        let (s, b) = app
            .send(
                app.post(&format!("/v1/messages/{mid}/feedback"), token)
                    .json(&json!({"rating": "down"})),
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
        let resp = app
            .get(&format!("/v1/conversations/{cid}/events"), token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    // Reviewers of another workspace do not see it either.
    let acme_reviewer = app.key("acme", "carol", Role::Reviewer).await;
    let (s, _) = app
        .send(app.get(&format!("/v1/conversations/{cid}"), &acme_reviewer))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = change(&app, &acme_reviewer, &cid, "takeover", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Nothing changed; the owner and its workspace's reviewers see it.
    let (s, c) = app
        .send(app.get(&format!("/v1/conversations/{cid}"), &app.agent))
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "ai");
    assert_eq!(c["messages"].as_array().unwrap().len(), 1);
    assert_eq!(conversation(&app, &cid).await["id"], cid.as_str());
}

#[tokio::test]
async fn feedback_on_answers() {
    let app = TestApp::spawn().await;
    app.put_policy(CONVERSATION_POLICY).await;
    let cid = open(&app, json!({})).await;
    let (_, m) = post(
        &app,
        &app.agent,
        &cid,
        "ai",
        "Have you tried turning it off?",
        Some(0.9),
    )
    .await;
    assert_eq!(m["status"], "delivered");
    let mid = m["id"].as_str().unwrap().to_owned();
    let feedback = |mid: &str, body: Value| {
        app.post(&format!("/v1/messages/{mid}/feedback"), &app.agent)
            .json(&body)
    };

    // Thumbs-down: a flag review linked to the message and its conversation.
    let (s, f) = app
        .send(feedback(
            &mid,
            json!({"rating": "down", "comment": "did not help at all"}),
        ))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    assert_eq!(f["rating"], "down");
    assert_eq!(f["message_id"], mid.as_str());
    assert_eq!(f["conversation_id"], cid.as_str());
    let rid = f["review_id"].as_str().expect("a flag review").to_owned();
    let r = review(&app, &rid).await;
    assert_eq!(r["kind"], "flag", "{r}");
    assert_eq!(r["status"], "pending");
    assert_eq!(r["message"]["id"], mid.as_str(), "{r}");
    assert_eq!(r["conversation"]["id"], cid.as_str(), "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("did not help at all"),
        "{r}"
    );
    let (_, q) = app.send(app.get("/v1/reviews?kind=flag", &app.ann)).await;
    assert_eq!(q["reviews"].as_array().unwrap().len(), 1, "{q}");

    // Thumbs-up: recorded, no review.
    let (s, f) = app.send(feedback(&mid, json!({"rating": "up"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    assert!(f["review_id"].is_null(), "{f}");
    let (_, q) = app
        .send(app.get("/v1/reviews?kind=flag&status=all", &app.ann))
        .await;
    assert_eq!(q["reviews"].as_array().unwrap().len(), 1, "{q}");

    // Bad input names the field.
    for body in [json!({"rating": "sideways"}), json!({"comment": "meh"})] {
        let (s, b) = app.send(feedback(&mid, body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        assert_eq!(b["error"]["field"], "rating", "{b}");
    }

    // Feedback is for messages the user saw: not for a held draft.
    let (_, held) = post(
        &app,
        &app.agent,
        &cid,
        "ai",
        "About your refund...",
        Some(0.9),
    )
    .await;
    assert_eq!(held["status"], "held");
    let (s, b) = app
        .send(feedback(
            held["id"].as_str().unwrap(),
            json!({"rating": "down"}),
        ))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");

    // Only the agent rates; an unknown message is a 404.
    let (s, _) = app
        .send(
            app.post(&format!("/v1/messages/{mid}/feedback"), &app.ann)
                .json(&json!({"rating": "down"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app
        .send(feedback(
            &uuid::Uuid::now_v7().to_string(),
            json!({"rating": "down"}),
        ))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let created = audit(&app)
        .await
        .into_iter()
        .filter(|e| e["type"] == "feedback.created")
        .count();
    assert_eq!(created, 2);
}

#[tokio::test]
async fn closing_cancels_open_drafts() {
    let app = TestApp::spawn().await;
    app.put_policy(CONVERSATION_POLICY).await;
    let cid = open(&app, json!({})).await;
    let (mid, rid) = held_draft(&app, &cid, "Your refund is approved.").await;

    let (s, c) = change(
        &app,
        &app.agent,
        &cid,
        "close",
        Some(json!({"reason": "user left"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "closed");

    let r = review(&app, &rid).await;
    assert_eq!(r["status"], "cancelled", "{r}");
    let m = message(&app, &cid, &mid).await;
    assert_eq!(m["status"], "discarded", "{m}");
    assert!(m["delivered_at"].is_null());
    // A cancelled draft cannot be approved afterwards.
    let (s, d) = app
        .decide(&app.ann, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{d}");
    assert_eq!(message(&app, &cid, &mid).await["status"], "discarded");
    let (_, open_reviews) = app.send(app.get("/v1/reviews", &app.ann)).await;
    assert!(open_reviews["reviews"].as_array().unwrap().is_empty());
}
