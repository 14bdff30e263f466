//! Authentication, roles, and workspace isolation.

use crate::bad_input::assert_error;
use crate::helpers::*;
use loopgate_domain::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// One request of every kind, with a body where it needs one.
fn endpoints(review: &str, action: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::POST,
            "/v1/actions".into(),
            Some(json!({"name": "x", "arguments": {}})),
        ),
        (Method::GET, format!("/v1/actions/{action}"), None),
        (Method::POST, format!("/v1/actions/{action}/cancel"), None),
        (Method::GET, "/v1/reviews".into(), None),
        (Method::GET, format!("/v1/reviews/{review}"), None),
        (Method::POST, "/v1/reviews/next".into(), None),
        (Method::POST, format!("/v1/reviews/{review}/claim"), None),
        (Method::POST, format!("/v1/reviews/{review}/release"), None),
        (
            Method::POST,
            format!("/v1/reviews/{review}/decision"),
            Some(json!({"verdict": "approve"})),
        ),
        (
            Method::POST,
            "/v1/agents/bot/pause".into(),
            Some(json!({"mode": "block", "reason": "x"})),
        ),
        (Method::POST, "/v1/agents/bot/resume".into(), None),
        (
            Method::POST,
            "/v1/workspace/pause".into(),
            Some(json!({"mode": "block", "reason": "x"})),
        ),
        (Method::POST, "/v1/workspace/resume".into(), None),
        (Method::GET, "/v1/pauses".into(), None),
        (Method::GET, "/v1/policy".into(), None),
        (Method::PUT, "/v1/policy".into(), None),
        (Method::GET, "/v1/audit".into(), None),
        (Method::GET, "/v1/audit/verify".into(), None),
    ]
}

/// A pending action and its review, for paths that need real ids.
async fn pending(app: &TestApp) -> (String, String) {
    app.put_policy(REFUND_POLICY).await;
    let (s, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 50}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    (
        a["id"].as_str().expect("id").to_owned(),
        a["review_id"].as_str().expect("review").to_owned(),
    )
}

fn with_body(
    req: reqwest::RequestBuilder,
    method: &Method,
    body: Option<Value>,
) -> reqwest::RequestBuilder {
    match body {
        Some(b) => req.json(&b),
        None if *method == Method::PUT => req.body(REFUND_POLICY),
        None => req,
    }
}

#[tokio::test]
async fn no_token_or_a_wrong_token_is_401() {
    let app = TestApp::spawn().await;
    let (action, review) = pending(&app).await;
    for (method, path, body) in endpoints(&review, &action) {
        let req = app
            .client
            .request(method.clone(), format!("{}{path}", app.base));
        let (s, resp) = app.send(with_body(req, &method, body.clone())).await;
        assert_error(
            s,
            &resp,
            StatusCode::UNAUTHORIZED,
            Some("unauthorized"),
            Some("Authorization"),
        );

        let req = app.request(method.clone(), &path, "lg_not_a_real_token");
        let (s, resp) = app.send(with_body(req, &method, body.clone())).await;
        assert_error(
            s,
            &resp,
            StatusCode::UNAUTHORIZED,
            Some("unauthorized"),
            Some("Authorization"),
        );

        for header in [
            "Basic YWRtaW46YWRtaW4=",
            "Bearer",
            "Bearer ",
            app.admin.as_str(),
        ] {
            let req = app
                .client
                .request(method.clone(), format!("{}{path}", app.base))
                .header("Authorization", header);
            let (s, resp) = app.send(with_body(req, &method, body.clone())).await;
            assert_error(
                s,
                &resp,
                StatusCode::UNAUTHORIZED,
                Some("unauthorized"),
                Some("Authorization"),
            );
        }
    }
    // Nothing happened on the way.
    assert_eq!(app.action(&action).await["status"], "pending");
    let (s, list) = app.send(app.get("/v1/pauses", &app.ann)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["pauses"], json!([]));
    // Health needs no token.
    let resp = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn each_role_reaches_only_its_endpoints() {
    let app = TestApp::spawn().await;
    let (action, review) = pending(&app).await;
    let reviewer_paths = [
        "/v1/reviews",
        "/v1/reviews/",
        "/v1/reviews/next",
        "/v1/agents/",
        "/v1/workspace/",
        "/v1/pauses",
    ];
    let admin_paths = ["/v1/policy", "/v1/audit"];
    for (method, path, body) in endpoints(&review, &action) {
        let is_admin = admin_paths.iter().any(|p| path.starts_with(p));
        let is_reviewer = reviewer_paths.iter().any(|p| path.starts_with(p));
        let is_agent = path.starts_with("/v1/actions") && path != format!("/v1/actions/{action}");
        // The agent: forbidden from reviewer and admin endpoints.
        if is_admin || is_reviewer {
            let req = app.request(method.clone(), &path, &app.agent);
            let (s, resp) = app.send(with_body(req, &method, body.clone())).await;
            assert_error(s, &resp, StatusCode::FORBIDDEN, Some("forbidden"), None);
        }
        // A reviewer: forbidden from admin endpoints and from acting as an agent.
        if is_admin || is_agent {
            let req = app.request(method.clone(), &path, &app.ann);
            let (s, resp) = app.send(with_body(req, &method, body.clone())).await;
            assert_error(s, &resp, StatusCode::FORBIDDEN, Some("forbidden"), None);
        }
    }
    // The refusals changed nothing: still pending, no pause, policy version 1.
    assert_eq!(app.action(&action).await["status"], "pending");
    let (s, r) = app
        .send(app.get(&format!("/v1/reviews/{review}"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["status"], "pending");
    assert_eq!(r["decisions"], json!([]));
    let (s, list) = app.send(app.get("/v1/pauses", &app.ann)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["pauses"], json!([]));

    // And the roles do reach their own.
    let (s, _) = app.send(app.get("/v1/policy", &app.admin)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.send(app.get("/v1/audit", &app.admin)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.send(app.get("/v1/reviews", &app.admin)).await;
    assert_eq!(s, StatusCode::OK, "an admin may review");
    let (s, body) = app
        .decide(&app.ann, &review, json!({"verdict": "approve"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn an_agent_sees_only_its_own_actions() {
    let app = TestApp::spawn().await;
    let (action, _) = pending(&app).await;
    let bot2 = app.key("default", "bot2", Role::Agent).await;
    let (s, body) = app
        .send(app.get(&format!("/v1/actions/{action}"), &bot2))
        .await;
    assert_error(s, &body, StatusCode::NOT_FOUND, Some("not_found"), None);
    let (s, body) = app
        .send(app.post(&format!("/v1/actions/{action}/cancel"), &bot2))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(app.action(&action).await["status"], "pending");
    // A reviewer of the workspace sees it.
    let (s, body) = app
        .send(app.get(&format!("/v1/actions/{action}"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn workspaces_are_isolated() {
    let app = TestApp::spawn().await;
    let (action, review) = pending(&app).await;
    let o_agent = app.key("other", "bot", Role::Agent).await;
    let o_reviewer = app.key("other", "ann", Role::Reviewer).await;
    let o_admin = app.key("other", "root", Role::Admin).await;

    // The other workspace sees nothing of default's.
    let (s, list) = app
        .send(app.get("/v1/reviews?status=all", &o_reviewer))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["reviews"], json!([]), "{list}");
    let (s, body) = app
        .send(app.get(&format!("/v1/reviews/{review}"), &o_reviewer))
        .await;
    assert_error(s, &body, StatusCode::NOT_FOUND, Some("not_found"), None);
    for verb in ["claim", "release"] {
        let (s, body) = app
            .send(app.post(&format!("/v1/reviews/{review}/{verb}"), &o_reviewer))
            .await;
        assert_error(s, &body, StatusCode::NOT_FOUND, Some("not_found"), None);
    }
    let (s, body) = app
        .decide(&o_reviewer, &review, json!({"verdict": "approve"}))
        .await;
    assert_error(s, &body, StatusCode::NOT_FOUND, Some("not_found"), None);
    let (s, body) = app
        .decide(&o_admin, &review, json!({"verdict": "reject"}))
        .await;
    assert_error(s, &body, StatusCode::NOT_FOUND, Some("not_found"), None);
    let resp = app
        .post("/v1/reviews/next", &o_reviewer)
        .send()
        .await
        .expect("next");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for token in [&o_agent, &o_reviewer, &o_admin] {
        let (s, body) = app
            .send(app.get(&format!("/v1/actions/{action}"), token))
            .await;
        assert_error(s, &body, StatusCode::NOT_FOUND, Some("not_found"), None);
    }
    let (s, body) = app
        .send(app.post(&format!("/v1/actions/{action}/cancel"), &o_agent))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");

    // Its own log, policy and pauses.
    let (s, page) = app.send(app.get("/v1/audit", &o_admin)).await;
    assert_eq!(s, StatusCode::OK);
    let events = page["events"].as_array().expect("events");
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e["workspace"] == "other"), "{page}");
    assert!(
        events.iter().all(|e| e["type"] != "action.created"),
        "{page}"
    );
    let resp = app
        .get("/v1/policy", &o_admin)
        .send()
        .await
        .expect("policy");
    assert_eq!(
        resp.headers()
            .get("loopgate-policy-version")
            .and_then(|v| v.to_str().ok()),
        Some("0")
    );
    let (s, _) = app
        .send(
            app.post("/v1/workspace/pause", &o_reviewer)
                .json(&json!({"mode": "block", "reason": "theirs"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, list) = app.send(app.get("/v1/pauses", &app.ann)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        list["pauses"],
        json!([]),
        "another workspace's pause leaks: {list}"
    );
    let (s, a) = app
        .submit(json!({"name": "send_email", "arguments": {}}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(a["status"], "approved", "{a}");

    // The other workspace's own work stays there too: default's `next` never returns it.
    let (s, _) = app
        .send(app.post("/v1/workspace/resume", &o_reviewer))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, theirs) = app
        .send(
            app.post("/v1/actions", &o_agent)
                .json(&json!({"name": "issue_refund", "arguments": {}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{theirs}");
    let their_review = theirs["review_id"]
        .as_str()
        .expect("fail-safe review")
        .to_owned();
    let (s, next) = app.send(app.post("/v1/reviews/next", &app.bob)).await;
    assert_eq!(s, StatusCode::OK, "{next}");
    assert_eq!(next["id"], review.as_str());
    assert_eq!(next["workspace"], "default");
    let resp = app
        .post("/v1/reviews/next", &app.ann)
        .send()
        .await
        .expect("next");
    assert_eq!(
        resp.status(),
        StatusCode::NO_CONTENT,
        "default has one review, now claimed"
    );
    let (s, next) = app.send(app.post("/v1/reviews/next", &o_reviewer)).await;
    assert_eq!(s, StatusCode::OK, "{next}");
    assert_eq!(next["id"], their_review.as_str());
    assert_eq!(next["workspace"], "other");
    let (s, body) = app
        .decide(&app.bob, &their_review, json!({"verdict": "approve"}))
        .await;
    assert_error(s, &body, StatusCode::NOT_FOUND, Some("not_found"), None);
    let (s, list) = app.send(app.get("/v1/reviews?status=all", &app.ann)).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&Value> = list["reviews"]
        .as_array()
        .expect("reviews")
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, vec![&json!(review)], "{list}");
}

/// RFC 7235 §2.1 and RFC 6750: the scheme name `Bearer` is case-insensitive.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = TestApp::spawn().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let req = app
            .client
            .get(format!("{}/v1/reviews", app.base))
            .header("Authorization", format!("{scheme} {}", app.ann));
        let (s, body) = app.send(req).await;
        assert_eq!(s, StatusCode::OK, "{scheme}: {body}");
    }
}
