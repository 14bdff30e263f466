//! Submitting actions and the policy's immediate answer.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn the_policy_answers_at_once() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;

    let (s, a) = app.submit(json!({"name": "lookup_order", "arguments": {"order": "A1"}, "confidence": 0.9})).await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["status"], "approved");
    assert_eq!(a["rule"], "everything else runs");

    let (s, a) = app.submit(json!({"name": "delete_account", "arguments": {}})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(a["status"], "blocked");

    let (s, a) = app.submit(json!({"name": "issue_refund", "arguments": {"amount": 900}, "confidence": 0.8})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(a["status"], "pending");
    assert!(a["review_id"].is_string());
    assert_eq!(a["rule"], "large refunds need two approvers");
}
