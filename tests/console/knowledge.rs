//! A knowledge change in the browser: the review page shows the proposal and its source
//! conversation, and a reviewer rewrites and publishes it.

use crate::harness::Console;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn a_knowledge_change_is_rewritten_and_published() {
    let c = Console::start().await;
    let (s, conv) = c
        .api(Method::POST, "/v1/conversations", &c.agent, Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{conv}");
    let cid = conv["id"].as_str().unwrap().to_owned();
    let (s, m) = c
        .api(
            Method::POST,
            &format!("/v1/conversations/{cid}/messages"),
            &c.agent,
            Some(json!({"role": "user", "text": "How long does a refund take?"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let (s, k) = c
        .api(
            Method::POST,
            "/v1/knowledge",
            &c.agent,
            Some(json!({"title": "Refund times", "text": "Refunds take 3 days.", "conversation_id": cid})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let review = k["review_id"].as_str().unwrap().to_owned();

    c.sign_in_as("ann").await;
    c.goto(&format!("/reviews/{review}")).await;
    assert_eq!(c.text("knowledge-title").await, "Refund times");
    assert_eq!(c.text("knowledge-text").await, "Refunds take 3 days.");
    let link = c
        .testid("knowledge-conversation")
        .await
        .attr("href")
        .await
        .unwrap();
    assert_eq!(
        link.as_deref(),
        Some(format!("/conversations/{cid}").as_str())
    );
    assert!(c.text("review-title").await.contains("Refund times"));
    c.screenshot("review-knowledge").await;

    c.click("edit-open").await;
    c.fill("edit-title", "Refund timing").await;
    c.set_value("edit-text", "Refunds take 5 business days.")
        .await;
    c.screenshot("review-knowledge-edit").await;
    c.click("save-edit").await;

    let mut published = Value::Null;
    for _ in 0..100 {
        let (s, list) = c.api(Method::GET, "/v1/knowledge", &c.agent, None).await;
        assert_eq!(s, StatusCode::OK, "{list}");
        if list["changes"].as_array().is_some_and(|a| !a.is_empty()) {
            published = list["changes"][0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(published["title"], "Refund timing", "{published}");
    assert_eq!(published["text"], "Refunds take 5 business days.");
    assert_eq!(published["decided_by"], "ann");
    c.finish().await;
}
