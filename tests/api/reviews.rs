//! The reviewer's side: listing and opening reviews, taking the next one, claims (leases),
//! decisions, four-eyes approval and edits.

use crate::helpers::*;
use loopgate_server::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// Rules with distinct queues, priorities, SLAs and approval counts, one per action name.
const REVIEWS_POLICY: &str = r#"
[[rule]]
name = "urgent things first"
applies_to = "action"
when = 'action.name == "urgent"'
then = "review"
priority = 10

[[rule]]
name = "short sla"
applies_to = "action"
when = 'action.name == "short_sla"'
then = "review"
timeout = "30m"

[[rule]]
name = "long sla"
applies_to = "action"
when = 'action.name == "long_sla"'
then = "review"
timeout = "2h"

[[rule]]
name = "refunds"
applies_to = "action"
when = 'action.name == "refund"'
then = "review"
queue = "finance"

[[rule]]
name = "four eyes"
applies_to = "action"
when = 'action.name == "big_refund"'
then = "review"
queue = "finance"
approvals = 2

[[rule]]
name = "plain review"
applies_to = "action"
when = 'action.name == "plain"'
then = "review"

[[rule]]
name = "the rest runs, all sampled"
when = "true"
then = "approve"
sample = 1.0
"#;

async fn app_with_policy() -> TestApp {
    let app = TestApp::spawn().await;
    app.put_policy(REVIEWS_POLICY).await;
    app
}

/// Submit an action the policy holds; its (action id, review id).
async fn held(app: &TestApp, name: &str, arguments: Value) -> (String, String) {
    let (s, a) = app
        .submit(json!({"name": name, "arguments": arguments}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["status"], "pending", "{a}");
    (
        a["id"].as_str().unwrap().to_owned(),
        a["review_id"].as_str().expect("a review id").to_owned(),
    )
}

async fn list(app: &TestApp, query: &str) -> Vec<Value> {
    let (s, body) = app
        .send(app.get(&format!("/v1/reviews{query}"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK, "{query}: {body}");
    body["reviews"].as_array().expect("a reviews array").clone()
}

async fn review(app: &TestApp, id: &str) -> Value {
    let (s, body) = app
        .send(app.get(&format!("/v1/reviews/{id}"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

async fn next(app: &TestApp, token: &str, query: &str) -> (StatusCode, Value) {
    app.send(app.post(&format!("/v1/reviews/next{query}"), token))
        .await
}

async fn claim(app: &TestApp, token: &str, id: &str) -> (StatusCode, Value) {
    app.send(app.post(&format!("/v1/reviews/{id}/claim"), token))
        .await
}

async fn release(app: &TestApp, token: &str, id: &str) -> (StatusCode, Value) {
    app.send(app.post(&format!("/v1/reviews/{id}/release"), token))
        .await
}

fn assert_field_error(status: StatusCode, body: &Value, want: StatusCode, field: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
}

fn ids(reviews: &[Value]) -> Vec<&str> {
    reviews.iter().map(|r| r["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn list_filters_by_status_queue_and_kind() {
    let app = app_with_policy().await;
    let (_, f1) = held(&app, "refund", json!({"amount": 1})).await;
    let (_, f2) = held(&app, "refund", json!({"amount": 2})).await;
    let (_, d1) = held(&app, "plain", json!({})).await;
    let (s, auto) = app.submit(json!({"name": "lookup", "arguments": {}})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(auto["status"], "approved");

    let open = list(&app, "").await;
    assert_eq!(open.len(), 4, "three approvals and one qa sample: {open:?}");
    assert!(open.iter().all(|r| r["status"] == "pending"));

    let finance = list(&app, "?queue=finance").await;
    let mut got = ids(&finance);
    got.sort();
    let mut want = vec![f1.as_str(), f2.as_str()];
    want.sort();
    assert_eq!(got, want);
    assert!(finance.iter().all(|r| r["queue"] == "finance"));

    let qa = list(&app, "?kind=qa").await;
    assert_eq!(qa.len(), 1);
    assert_eq!(qa[0]["action_id"], auto["id"]);
    assert_eq!(list(&app, "?kind=approval").await.len(), 3);
    assert_eq!(
        ids(&list(&app, "?queue=default&kind=approval").await),
        vec![d1.as_str()]
    );
    assert_eq!(list(&app, "?queue=default&kind=qa").await.len(), 1);
    assert_eq!(list(&app, "?queue=nowhere").await.len(), 0);
    assert_eq!(list(&app, "?kind=escalation").await.len(), 0);

    // Move some through their states.
    let (s, _) = app
        .decide(&app.ann, &f1, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = claim(&app, &app.bob, &d1).await;
    assert_eq!(s, StatusCode::OK);

    assert_eq!(ids(&list(&app, "?status=decided").await), vec![f1.as_str()]);
    assert_eq!(ids(&list(&app, "?status=claimed").await), vec![d1.as_str()]);
    assert_eq!(list(&app, "?status=pending").await.len(), 2);
    assert_eq!(list(&app, "?status=open").await.len(), 3);
    assert_eq!(list(&app, "").await.len(), 3, "the default is open reviews");
    assert_eq!(list(&app, "?status=all").await.len(), 4);
    assert_eq!(
        ids(&list(&app, "?status=all&queue=finance&kind=approval&limit=1").await).len(),
        1
    );
    assert_eq!(
        ids(&list(&app, "?status=decided&queue=finance").await),
        vec![f1.as_str()]
    );
    assert_eq!(list(&app, "?status=decided&queue=default").await.len(), 0);
    assert_eq!(list(&app, "?status=expired").await.len(), 0);

    // Bad values name their parameter.
    for (query, field) in [
        ("?status=bogus", "status"),
        ("?status=", "status"),
        ("?kind=bogus", "kind"),
        ("?kind=QA", "kind"),
        ("?queue=bad%20queue", "queue"),
        ("?queue=", "queue"),
        ("?limit=0", "limit"),
        ("?limit=many", "limit"),
    ] {
        let (s, e) = app
            .send(app.get(&format!("/v1/reviews{query}"), &app.ann))
            .await;
        assert_field_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, field);
    }

    // Agents do not read the queue.
    let (s, _) = app.send(app.get("/v1/reviews", &app.agent)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_review_shows_its_action_and_why_it_was_held() {
    let app = app_with_policy().await;
    let (s, a) = app
        .submit(json!({
            "name": "refund", "arguments": {"amount": 42, "order": "A7"}, "confidence": 0.7,
            "context": {"tier": "gold", "channel": "chat"}
        }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let rid = a["review_id"].as_str().unwrap();

    let r = review(&app, rid).await;
    assert_eq!(r["id"], rid);
    assert_eq!(r["kind"], "approval");
    assert_eq!(r["status"], "pending");
    assert_eq!(r["queue"], "finance");
    assert_eq!(r["rule"], "refunds");
    assert!(
        r["reason"].as_str().is_some_and(|s| s.contains("refunds")),
        "{r}"
    );
    assert_eq!(r["approvals_required"], 1);
    assert_eq!(r["approvals"], 0);
    assert_eq!(r["policy_version"], 1);
    assert_eq!(r["action_id"], a["id"]);
    assert_eq!(r["action"]["id"], a["id"]);
    assert_eq!(r["action"]["name"], "refund");
    assert_eq!(
        r["action"]["arguments"],
        json!({"amount": 42, "order": "A7"})
    );
    assert_eq!(r["action"]["confidence"], 0.7);
    assert_eq!(
        r["action"]["context"],
        json!({"tier": "gold", "channel": "chat"})
    );
    assert_eq!(r["action"]["agent"], "bot");
    assert_eq!(r["decisions"], json!([]));

    // After a decision, the decision is part of it.
    let (s, _) = app
        .decide(
            &app.bob,
            rid,
            json!({"verdict": "reject", "comment": "wrong order"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let r = review(&app, rid).await;
    assert_eq!(r["status"], "decided");
    assert_eq!(r["outcome"], "rejected");
    assert_eq!(r["decisions"].as_array().unwrap().len(), 1);
    assert_eq!(r["decisions"][0]["reviewer"], "bob");
    assert_eq!(r["decisions"][0]["verdict"], "reject");
    assert_eq!(r["decisions"][0]["comment"], "wrong order");
    assert_eq!(r["action"]["status"], "rejected");

    let (s, e) = app
        .send(app.get(&format!("/v1/reviews/{}", uuid::Uuid::now_v7()), &app.ann))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    assert_eq!(e["error"]["code"], "not_found");
    let (s, e) = app.send(app.get("/v1/reviews/not-a-uuid", &app.ann)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    // The same goes for the review's verbs.
    for verb in ["claim", "release", "decision"] {
        let (s, e) = app
            .send(
                app.post(
                    &format!("/v1/reviews/{}/{verb}", uuid::Uuid::now_v7()),
                    &app.ann,
                )
                .json(&json!({"verdict": "approve"})),
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{verb}: {e}");
        let (s, e) = app
            .send(
                app.post(&format!("/v1/reviews/12345/{verb}"), &app.ann)
                    .json(&json!({"verdict": "approve"})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{verb}: {e}");
    }
}

#[tokio::test]
async fn next_takes_priority_then_due_time_then_age() {
    let app = app_with_policy().await;
    // Submitted oldest first; a few ms apart so ages differ.
    let mut submitted = Vec::new();
    for name in ["plain", "long_sla", "plain", "short_sla", "urgent"] {
        let (_, rid) = held(&app, name, json!({"seq": submitted.len()})).await;
        submitted.push(rid);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let [plain_old, long_sla, plain_new, short_sla, urgent] =
        <[String; 5]>::try_from(submitted).unwrap();
    let want = [urgent, short_sla, long_sla, plain_old, plain_new];

    let mut got = Vec::new();
    loop {
        let (s, r) = next(&app, &app.ann, "").await;
        if s == StatusCode::NO_CONTENT {
            break;
        }
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["status"], "claimed", "{r}");
        assert_eq!(r["claimed_by"], "ann", "{r}");
        assert!(r["claim_expires_at"].is_string(), "{r}");
        assert!(
            r["action"]["arguments"].is_object(),
            "next hands out the whole review: {r}"
        );
        got.push(r["id"].as_str().unwrap().to_owned());
        assert!(
            got.len() <= want.len(),
            "next handed out more than there is: {got:?}"
        );
    }
    assert_eq!(
        got, want,
        "order: urgent, short SLA, long SLA, then oldest first"
    );
    // Everything is claimed by ann now; bob gets nothing.
    let (s, _) = next(&app, &app.bob, "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn next_filters_by_queue_and_is_204_when_empty() {
    let app = app_with_policy().await;
    let (s, body) = next(&app, &app.ann, "").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(body, Value::Null, "a 204 has no body");

    let (_, plain) = held(&app, "plain", json!({})).await;
    let (_, refund) = held(&app, "refund", json!({"amount": 3})).await;

    let (s, r) = next(&app, &app.ann, "?queue=finance").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["id"], refund.as_str());
    assert_eq!(r["queue"], "finance");
    let (s, _) = next(&app, &app.ann, "?queue=finance").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "the finance queue is empty now");
    let (s, _) = next(&app, &app.ann, "?queue=nowhere").await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let (s, r) = next(&app, &app.bob, "?queue=default").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["id"], plain.as_str());
    assert_eq!(r["claimed_by"], "bob");
    let (s, _) = next(&app, &app.bob, "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let (s, e) = next(&app, &app.ann, "?queue=no%20spaces").await;
    assert_field_error(s, &e, StatusCode::UNPROCESSABLE_ENTITY, "queue");
    let (s, _) = next(&app, &app.agent, "").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn claims_are_exclusive_and_only_the_holder_releases() {
    let app = app_with_policy().await;
    let (_, rid) = held(&app, "plain", json!({})).await;

    let (s, r) = claim(&app, &app.ann, &rid).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "claimed");
    assert_eq!(r["claimed_by"], "ann");

    let (s, e) = claim(&app, &app.bob, &rid).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["code"], "conflict");
    // Claiming again renews one's own claim.
    let (s, r) = claim(&app, &app.ann, &rid).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["claimed_by"], "ann");

    let (s, e) = release(&app, &app.bob, &rid).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(review(&app, &rid).await["claimed_by"], "ann");

    let (s, r) = release(&app, &app.ann, &rid).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "pending");
    assert!(r["claimed_by"].is_null(), "{r}");
    let r = review(&app, &rid).await;
    assert_eq!(r["status"], "pending");
    assert!(r["claimed_by"].is_null(), "{r}");
    assert!(r["claim_expires_at"].is_null(), "{r}");

    // Releasing what nobody holds is a conflict too; now bob can claim.
    let (s, _) = release(&app, &app.ann, &rid).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, r) = claim(&app, &app.bob, &rid).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["claimed_by"], "bob");

    // A decided review can be neither claimed nor released.
    let (s, _) = app
        .decide(&app.bob, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = claim(&app, &app.ann, &rid).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = release(&app, &app.bob, &rid).await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn decisions_respect_claims_and_are_exactly_once() {
    let app = app_with_policy().await;
    let (aid, rid) = held(&app, "plain", json!({"x": 1})).await;

    let (s, _) = claim(&app, &app.ann, &rid).await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = app
        .decide(&app.bob, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "bob decided on ann's claim: {e}");
    assert_eq!(app.action(&aid).await["status"], "pending");
    let (s, e) = app
        .decide(&app.bob, &rid, json!({"verdict": "reject"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");

    let (s, r) = app
        .decide(&app.ann, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "decided");
    assert_eq!(r["outcome"], "approved");
    let a = app.action(&aid).await;
    assert_eq!(a["status"], "approved");
    assert_eq!(a["decision"]["verdict"], "approve");
    assert_eq!(a["decision"]["by"], json!(["ann"]));

    for (token, verdict) in [
        (&app.ann, "approve"),
        (&app.ann, "reject"),
        (&app.bob, "reject"),
    ] {
        let (s, e) = app.decide(token, &rid, json!({"verdict": verdict})).await;
        assert_eq!(
            s,
            StatusCode::CONFLICT,
            "a decided review took another decision: {e}"
        );
    }
    assert_eq!(app.action(&aid).await["status"], "approved");
    assert_eq!(
        review(&app, &rid).await["decisions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_decision_on_an_unclaimed_review_claims_it_implicitly() {
    let app = app_with_policy().await;
    let (aid, rid) = held(&app, "plain", json!({})).await;
    assert_eq!(review(&app, &rid).await["status"], "pending");
    let (s, r) = app
        .decide(
            &app.bob,
            &rid,
            json!({"verdict": "reject", "comment": "no"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["outcome"], "rejected");
    let a = app.action(&aid).await;
    assert_eq!(a["status"], "rejected");
    assert_eq!(a["decision"]["verdict"], "reject");
    assert_eq!(a["decision"]["comment"], "no");

    // Also after a release.
    let (aid, rid) = held(&app, "plain", json!({})).await;
    assert_eq!(claim(&app, &app.ann, &rid).await.0, StatusCode::OK);
    assert_eq!(release(&app, &app.ann, &rid).await.0, StatusCode::OK);
    let (s, _) = app
        .decide(&app.bob, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(app.action(&aid).await["status"], "approved");
}

#[tokio::test]
async fn four_eyes_needs_two_different_reviewers() {
    let app = app_with_policy().await;
    let (aid, rid) = held(&app, "big_refund", json!({"amount": 900})).await;
    assert_eq!(review(&app, &rid).await["approvals_required"], 2);

    let (s, r) = app
        .decide(&app.ann, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "pending", "one approval of two: {r}");
    assert_eq!(r["approvals"], 1);
    assert!(
        r["claimed_by"].is_null(),
        "back in the queue for the second pair of eyes: {r}"
    );
    assert_eq!(app.action(&aid).await["status"], "pending");

    let (s, e) = app
        .decide(&app.ann, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "ann approved twice: {e}");
    assert_eq!(review(&app, &rid).await["approvals"], 1);

    // next skips it for ann, hands it to bob.
    let (s, _) = next(&app, &app.ann, "").await;
    assert_eq!(
        s,
        StatusCode::NO_CONTENT,
        "ann must not be handed a review she already approved"
    );
    let (s, r) = next(&app, &app.bob, "").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["id"], rid.as_str());
    assert_eq!(r["approvals"], 1);

    let (s, r) = app
        .decide(&app.bob, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "decided");
    assert_eq!(r["outcome"], "approved");
    assert_eq!(r["approvals"], 2);
    let a = app.action(&aid).await;
    assert_eq!(a["status"], "approved");
    assert_eq!(a["decision"]["verdict"], "approve");
    assert_eq!(a["decision"]["by"], json!(["ann", "bob"]));

    // One review.decided event, after the second approval.
    let events = crate::actions::all_events(&app).await;
    assert_eq!(
        crate::actions::events_of(&events, "review.decided", &format!("review:{rid}")).len(),
        1
    );
    assert_eq!(
        crate::actions::events_of(&events, "action.decided", &format!("action:{aid}")).len(),
        1
    );
}

#[tokio::test]
async fn any_reject_ends_a_review() {
    let app = app_with_policy().await;
    // A reject after one approval of two.
    let (aid, rid) = held(&app, "big_refund", json!({"amount": 900})).await;
    assert_eq!(
        app.decide(&app.ann, &rid, json!({"verdict": "approve"}))
            .await
            .0,
        StatusCode::OK
    );
    let (s, r) = app
        .decide(&app.bob, &rid, json!({"verdict": "reject"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "decided");
    assert_eq!(r["outcome"], "rejected");
    assert_eq!(app.action(&aid).await["status"], "rejected");
    let (s, _) = app
        .decide(&app.admin, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // A first reject ends a four-eyes review at once.
    let (aid, rid) = held(&app, "big_refund", json!({"amount": 901})).await;
    let (s, r) = app
        .decide(&app.ann, &rid, json!({"verdict": "reject"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "decided");
    assert_eq!(app.action(&aid).await["status"], "rejected");

    // The approver may change their mind and reject.
    let (aid, rid) = held(&app, "big_refund", json!({"amount": 902})).await;
    assert_eq!(
        app.decide(&app.ann, &rid, json!({"verdict": "approve"}))
            .await
            .0,
        StatusCode::OK
    );
    let (s, r) = app
        .decide(&app.ann, &rid, json!({"verdict": "reject"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(app.action(&aid).await["status"], "rejected");
}

#[tokio::test]
async fn an_edit_approves_with_the_new_arguments() {
    let app = app_with_policy().await;
    let (aid, rid) = held(&app, "refund", json!({"amount": 500, "order": "A1"})).await;
    let (s, r) = app
        .decide(
            &app.ann,
            &rid,
            json!({"verdict": "edit", "arguments": {"amount": 250, "order": "A1"}, "comment": "half"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "decided");
    assert_eq!(r["outcome"], "approved");
    assert_eq!(r["decisions"][0]["verdict"], "edit");
    assert_eq!(
        r["decisions"][0]["arguments"],
        json!({"amount": 250, "order": "A1"})
    );
    assert_eq!(
        r["action"]["arguments"],
        json!({"amount": 250, "order": "A1"})
    );
    assert_eq!(
        r["action"]["proposed_arguments"],
        json!({"amount": 500, "order": "A1"})
    );

    let a = app.action(&aid).await;
    assert_eq!(a["status"], "approved");
    assert_eq!(a["arguments"], json!({"amount": 250, "order": "A1"}));
    assert_eq!(
        a["proposed_arguments"],
        json!({"amount": 500, "order": "A1"})
    );
    assert_eq!(a["decision"]["verdict"], "edit");
    assert_eq!(a["decision"]["comment"], "half");
}

#[tokio::test]
async fn an_edit_on_a_four_eyes_review_needs_a_second_approval_of_the_edit() {
    let app = app_with_policy().await;
    let (aid, rid) = held(&app, "big_refund", json!({"amount": 900})).await;
    let (s, r) = app
        .decide(
            &app.ann,
            &rid,
            json!({"verdict": "edit", "arguments": {"amount": 700}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "pending", "{r}");
    assert_eq!(r["approvals"], 1);
    assert_eq!(app.action(&aid).await["arguments"], json!({"amount": 900}));
    let (s, _) = app
        .decide(&app.ann, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "the editor counts as the first approver"
    );
    let (s, r) = app
        .decide(&app.bob, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let a = app.action(&aid).await;
    assert_eq!(a["status"], "approved");
    assert_eq!(a["arguments"], json!({"amount": 700}));
    assert_eq!(a["proposed_arguments"], json!({"amount": 900}));
}

#[tokio::test]
async fn malformed_decisions_name_the_field() {
    let app = app_with_policy().await;
    let (aid, rid) = held(&app, "refund", json!({"amount": 5})).await;
    for (body, field) in [
        (json!({"verdict": "edit"}), "arguments"),
        (json!({"verdict": "edit", "arguments": [1, 2]}), "arguments"),
        (
            json!({"verdict": "edit", "arguments": "amount=1"}),
            "arguments",
        ),
        (json!({"verdict": "edit", "arguments": null}), "arguments"),
        (
            json!({"verdict": "approve", "arguments": {"amount": 1}}),
            "arguments",
        ),
        (json!({"verdict": "maybe"}), "verdict"),
        (json!({"verdict": 1}), "verdict"),
        (json!({}), "verdict"),
        (json!({"verdict": "approve", "grade": "correct"}), "grade"),
    ] {
        let (s, e) = app.decide(&app.ann, &rid, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
    }
    // Nothing was recorded, and the review is still open for anyone.
    let r = review(&app, &rid).await;
    assert_eq!(r["decisions"], json!([]));
    assert_eq!(app.action(&aid).await["status"], "pending");
    let (s, _) = app
        .decide(&app.bob, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn claims_are_leases_that_lapse() {
    let app = TestApp::spawn_with(Config {
        claim_lease: Duration::from_millis(1500),
        ..test_config()
    })
    .await;
    app.put_policy(REVIEWS_POLICY).await;
    let (_, rid) = held(&app, "plain", json!({})).await;

    // Taken with next by ann: bob can neither claim it nor get it from next.
    let (s, r) = next(&app, &app.ann, "").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["id"], rid.as_str());
    assert_eq!(claim(&app, &app.bob, &rid).await.0, StatusCode::CONFLICT);
    assert_eq!(next(&app, &app.bob, "").await.0, StatusCode::NO_CONTENT);

    // After the lease, next hands it out again.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let (s, r) = next(&app, &app.bob, "").await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the lapsed claim is back in the queue: {r}"
    );
    assert_eq!(r["id"], rid.as_str());
    assert_eq!(r["claimed_by"], "bob");
    // bob holds it now: ann's old claim is gone.
    let (s, _) = app
        .decide(&app.ann, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // After bob's lease lapses too, ann can claim it directly and decide it.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let (s, r) = claim(&app, &app.ann, &rid).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["claimed_by"], "ann");
    let (s, r) = app
        .decide(&app.ann, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["outcome"], "approved");
}

#[tokio::test]
async fn a_lapsed_claim_lets_another_reviewer_decide() {
    let app = TestApp::spawn_with(Config {
        claim_lease: Duration::from_millis(1500),
        ..test_config()
    })
    .await;
    app.put_policy(REVIEWS_POLICY).await;
    let (aid, rid) = held(&app, "plain", json!({})).await;
    assert_eq!(claim(&app, &app.ann, &rid).await.0, StatusCode::OK);
    assert_eq!(
        app.decide(&app.bob, &rid, json!({"verdict": "reject"}))
            .await
            .0,
        StatusCode::CONFLICT
    );
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let r = review(&app, &rid).await;
    assert_ne!(r["claimed_by"], "ann", "the lease lapsed: {r}");
    let (s, r) = app
        .decide(&app.bob, &rid, json!({"verdict": "reject"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(app.action(&aid).await["status"], "rejected");
    // ann's lapsed claim is gone: she cannot release it.
    assert_eq!(release(&app, &app.ann, &rid).await.0, StatusCode::CONFLICT);
}

/// A lapsed lease frees the review at once for `next`, as it does for `claim` and decisions; the
/// periodic sweep that tidies lapsed claims up is housekeeping, not what makes a lease end.
#[tokio::test]
async fn next_hands_out_a_lapsed_claim_without_waiting_for_the_sweep() {
    let app = TestApp::spawn_with(Config {
        claim_lease: Duration::from_millis(1500),
        // The sweep runs once at start, then not again during this test.
        sweep_interval: Duration::from_secs(60),
        ..test_config()
    })
    .await;
    app.put_policy(REVIEWS_POLICY).await;
    let (_, rid) = held(&app, "plain", json!({})).await;
    let (s, r) = next(&app, &app.ann, "").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    tokio::time::sleep(Duration::from_millis(1800)).await;

    // claim already treats the lease as over ...
    let (s, r) = claim(&app, &app.bob, &rid).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (s, _) = release(&app, &app.bob, &rid).await;
    assert_eq!(s, StatusCode::OK);
    // ... and so does next, for a claim that lapsed without anyone touching it.
    let (s, r) = next(&app, &app.ann, "").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let (s, r) = next(&app, &app.bob, "").await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the lease lapsed, so next must hand the review out: {r}"
    );
    assert_eq!(r["id"], rid.as_str());
    assert_eq!(r["claimed_by"], "bob");
}

#[tokio::test]
async fn reviewers_of_another_workspace_see_nothing() {
    let app = app_with_policy().await;
    let (aid, rid) = held(&app, "plain", json!({})).await;
    let stranger = app
        .key("elsewhere", "eve", loopgate_domain::auth::Role::Reviewer)
        .await;

    let (s, body) = app.send(app.get("/v1/reviews?status=all", &stranger)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["reviews"], json!([]));
    let (s, _) = app
        .send(app.get(&format!("/v1/reviews/{rid}"), &stranger))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = next(&app, &stranger, "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(claim(&app, &stranger, &rid).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        release(&app, &stranger, &rid).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _) = app
        .decide(&stranger, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .send(app.get(&format!("/v1/actions/{aid}"), &stranger))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    assert_eq!(review(&app, &rid).await["status"], "pending");
    assert_eq!(app.action(&aid).await["status"], "pending");
}

/// An edit restarts the four-eyes count with the editor: earlier approvers saw other arguments,
/// so their approvals no longer count and they may (and must be able to) approve the edit.
#[tokio::test]
async fn after_an_edit_an_earlier_approver_is_offered_the_review_again() {
    let app = app_with_policy().await;
    let (aid, rid) = held(&app, "big_refund", json!({"amount": 900})).await;
    let (s, r) = app
        .decide(&app.ann, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["approvals"], 1);
    let (s, r) = app
        .decide(
            &app.bob,
            &rid,
            json!({"verdict": "edit", "arguments": {"amount": 600}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        r["status"], "pending",
        "the edit needs a second approval: {r}"
    );
    assert_eq!(r["approvals"], 1, "only bob's edit counts now: {r}");

    // bob edited, so next does not offer it to him; ann has not approved the edited version.
    let (s, _) = next(&app, &app.bob, "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, r) = next(&app, &app.ann, "").await;
    assert_eq!(
        s,
        StatusCode::OK,
        "ann's approval was of the old arguments; next must offer her the edited version: {r}"
    );
    assert_eq!(r["id"], rid.as_str());
    let (s, r) = app
        .decide(&app.ann, &rid, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["outcome"], "approved");
    let a = app.action(&aid).await;
    assert_eq!(a["status"], "approved");
    assert_eq!(a["arguments"], json!({"amount": 600}));
    assert_eq!(a["proposed_arguments"], json!({"amount": 900}));
}
