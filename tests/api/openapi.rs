//! The OpenAPI document is complete enough for API fuzzing (scripts/schemathesis) to mean
//! something: every status a route can answer is documented, with the content type it is sent
//! with. Regressions for what schemathesis found are here too.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

async fn document(app: &TestApp) -> Value {
    let (status, doc) = app
        .send(app.client.get(format!("{}/openapi.json", app.base)))
        .await;
    assert_eq!(status, StatusCode::OK);
    doc
}

/// (method, path, operation) for every operation of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((method.to_owned(), path.clone(), op.clone()));
            }
        }
    }
    out
}

fn documents(op: &Value, status: &str) -> bool {
    op["responses"].get(status).is_some()
}

#[tokio::test]
async fn every_operation_documents_the_errors_its_extractors_give() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let ops = operations(&doc);
    assert!(ops.len() >= 40, "{} operations", ops.len());
    for (method, path, op) in &ops {
        let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
        if secured {
            for status in ["401", "429", "503"] {
                assert!(documents(op, status), "{method} {path} lacks {status}");
            }
        }
        if op.get("requestBody").is_some() {
            for status in ["400", "413", "422"] {
                assert!(documents(op, status), "{method} {path} lacks {status}");
            }
        }
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        if params
            .iter()
            .any(|p| p["in"] == "path" || p["in"] == "query")
        {
            assert!(documents(op, "400"), "{method} {path} lacks 400");
        }
        if path.contains("{id}") {
            assert!(documents(op, "404"), "{method} {path} lacks 404");
        }
    }
}

#[tokio::test]
async fn a_malformed_id_on_cancel_is_a_documented_400() {
    // Found by schemathesis: 400 was answered but not documented.
    let app = TestApp::spawn().await;
    let (status, body) = app
        .send(app.post("/v1/actions/%F2%B8%B9%81/cancel", &app.agent))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let doc = document(&app).await;
    assert!(documents(
        &doc["paths"]["/v1/actions/{id}/cancel"]["post"],
        "400"
    ));
}

#[tokio::test]
async fn an_unknown_field_on_close_is_a_documented_422() {
    // Found by schemathesis: 422 was answered but not documented.
    let app = TestApp::spawn().await;
    let (status, conversation) = app
        .send(app.post("/v1/conversations", &app.agent).json(&json!({})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{conversation}");
    let id = conversation["id"].as_str().expect("id");
    let (status, body) = app
        .send(
            app.post(&format!("/v1/conversations/{id}/close"), &app.agent)
                .json(&json!({"reason": null, "x-unknown": 42})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let doc = document(&app).await;
    assert!(documents(
        &doc["paths"]["/v1/conversations/{id}/close"]["post"],
        "422"
    ));
}

#[tokio::test]
async fn the_policy_can_be_put_as_plain_text_as_documented() {
    // Found by schemathesis: application/toml alone left no body a client library can send.
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let content = &doc["paths"]["/v1/policy"]["put"]["requestBody"]["content"];
    assert!(content.get("text/plain").is_some(), "{content}");
    assert!(content.get("application/toml").is_some(), "{content}");
    let (status, body) = app
        .send(
            app.request(Method::PUT, "/v1/policy", &app.admin)
                .header("content-type", "text/plain")
                .body("[[rule]]\nname = \"all\"\nwhen = \"true\"\nthen = \"review\"\n"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn metrics_are_sent_with_the_documented_content_type() {
    // Found by schemathesis: the document said text/plain.
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let documented = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
        .as_object()
        .expect("content")
        .keys()
        .next()
        .cloned()
        .expect("a content type");
    let resp = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics");
    let sent = resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        sent.starts_with(&documented),
        "sent {sent}, documented {documented}"
    );
}
