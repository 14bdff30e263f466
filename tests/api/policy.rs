//! The policy over HTTP: versions, validation with line and column, and its immediate effect.

use crate::audit::all_events;
use crate::bad_input::assert_error;
use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const APPROVE_ALL: &str =
    "[[rule]]\nname = \"run everything\"\nwhen = \"true\"\nthen = \"approve\"\n";
const REVIEW_ALL: &str =
    "[[rule]]\nname = \"check everything\"\nwhen = \"true\"\nthen = \"review\"\nqueue = \"ops\"\n";

async fn put(app: &TestApp, text: &str) -> (StatusCode, Value) {
    app.send(
        app.request(Method::PUT, "/v1/policy", &app.admin)
            .body(text.to_owned()),
    )
    .await
}

/// The policy in force: (version header, text).
async fn current(app: &TestApp) -> (String, String) {
    let resp = app
        .get("/v1/policy", &app.admin)
        .send()
        .await
        .expect("GET /v1/policy");
    assert_eq!(resp.status(), StatusCode::OK);
    let version = resp
        .headers()
        .get("loopgate-policy-version")
        .and_then(|v| v.to_str().ok())
        .expect("a loopgate-policy-version header")
        .to_owned();
    (version, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn put_policy_versions_each_new_text() {
    let app = TestApp::spawn().await;
    assert_eq!(current(&app).await, ("0".to_owned(), String::new()));

    let (s, body) = put(&app, REFUND_POLICY).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 1, "{body}");
    assert_eq!(body["rules"], 5, "{body}");
    assert_eq!(
        current(&app).await,
        ("1".to_owned(), REFUND_POLICY.to_owned())
    );

    let (s, body) = put(&app, APPROVE_ALL).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2, "{body}");
    assert_eq!(body["rules"], 1);
    assert_eq!(
        current(&app).await,
        ("2".to_owned(), APPROVE_ALL.to_owned())
    );

    // The same text again: the same version.
    let (s, body) = put(&app, APPROVE_ALL).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2, "{body}");
    assert_eq!(current(&app).await.0, "2");

    // An older text is a new version: versions only go up.
    let (s, body) = put(&app, REFUND_POLICY).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 3, "{body}");
    assert_eq!(
        current(&app).await,
        ("3".to_owned(), REFUND_POLICY.to_owned())
    );

    let events = all_events(&app).await;
    let updates: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "policy.updated")
        .collect();
    assert_eq!(updates.len(), 3, "{updates:#?}");
    assert_eq!(updates[2]["data"]["version"], 3);
    assert_eq!(updates[2]["actor"], "admin:root");
}

/// Rule text after a `[[rule]]` header and `name = "r"`: the body starts on line 3.
fn rule(body: &str) -> String {
    format!("[[rule]]\nname = \"r\"\n{body}")
}

#[tokio::test]
async fn invalid_policies_are_422_with_line_and_column() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let cases: Vec<(&str, String, (u64, u64), &str)> = vec![
        (
            "toml",
            rule("when = \"true\"\nthen = = \"review\"\n"),
            (4, 8),
            "invalid TOML",
        ),
        (
            "cel",
            rule("when = \"a == 'x' &&& b\"\nthen = \"review\"\n"),
            (3, 20),
            "invalid `when`",
        ),
        (
            "unknown key",
            rule("when = \"true\"\nthen = \"review\"\ncolour = \"red\"\n"),
            (5, 1),
            "unknown key `colour`",
        ),
        (
            "bad then",
            rule("when = \"true\"\nthen = \"maybe\"\n"),
            (4, 8),
            "invalid then",
        ),
        (
            "sample",
            rule("when = \"true\"\nthen = \"approve\"\nsample = 1.5\n"),
            (5, 10),
            "`sample` must be between 0 and 1, not 1.5",
        ),
        (
            "on_timeout",
            rule("when = \"true\"\nthen = \"review\"\ntimeout = \"1h\"\non_timeout = \"ignore\"\n"),
            (6, 14),
            "invalid on_timeout",
        ),
    ];
    for (what, text, (line, column), message) in cases {
        let (s, body) = put(&app, &text).await;
        assert_error(
            s,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("invalid_policy"),
            None,
        );
        let errors = body["error"]["details"]["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no details.errors in {body}"));
        assert_eq!(errors.len(), 1, "{what}: {body}");
        assert_eq!(errors[0]["line"], line, "{what}: {body}");
        assert_eq!(errors[0]["column"], column, "{what}: {body}");
        assert!(
            errors[0]["message"]
                .as_str()
                .unwrap_or("")
                .contains(message),
            "{what}: {body}"
        );
    }

    // Several problems: each reported, in file order, each with line and column.
    let many = "[[rule]]\nname = \"one\"\nwhen = \"action.name ==\"\nthen = \"review\"\n\n\
                [[rule]]\nname = \"two\"\nwhen = \"true\"\nthen = \"approve\"\nsample = 2\n\n\
                [[rule]]\nname = \"three\"\nwhen = \"(((a)\"\nthen = \"nope\"\n";
    let (s, body) = put(&app, many).await;
    assert_error(
        s,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("invalid_policy"),
        None,
    );
    let positions: Vec<(u64, u64)> = body["error"]["details"]["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
            (
                e["line"].as_u64().unwrap_or(0),
                e["column"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        positions,
        vec![(3, 23), (10, 10), (14, 14), (15, 8)],
        "{body}"
    );

    // Not UTF-8.
    let (s, body) = app
        .send(
            app.request(Method::PUT, "/v1/policy", &app.admin)
                .body(vec![0xff, 0xfe, b'x']),
        )
        .await;
    assert_error(s, &body, StatusCode::BAD_REQUEST, None, None);

    // None of them replaced the policy in force.
    assert_eq!(
        current(&app).await,
        ("1".to_owned(), REFUND_POLICY.to_owned())
    );
    let events = all_events(&app).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "policy.updated")
            .count(),
        1
    );
    let (s, a) = app
        .submit(json!({"name": "delete_account", "arguments": {}}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(a["status"], "blocked");
}

#[tokio::test]
async fn a_new_policy_governs_the_next_submission_and_is_recorded() {
    let app = TestApp::spawn().await;
    // No policy yet: everything goes to review (fail safe), under version 0.
    let (s, first) = app
        .submit(json!({"name": "send_email", "arguments": {}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["status"], "pending", "{first}");
    assert!(first["rule"].is_null(), "{first}");
    assert_eq!(first["policy_version"], 0);
    assert!(
        first["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no rule matched"),
        "{first}"
    );

    app.put_policy(APPROVE_ALL).await;
    let (_, second) = app
        .submit(json!({"name": "send_email", "arguments": {}}))
        .await;
    assert_eq!(second["status"], "approved", "{second}");
    assert_eq!(second["rule"], "run everything");
    assert_eq!(second["policy_version"], 1);

    app.put_policy(REVIEW_ALL).await;
    let (_, third) = app
        .submit(json!({"name": "send_email", "arguments": {}}))
        .await;
    assert_eq!(third["status"], "pending", "{third}");
    assert_eq!(third["rule"], "check everything");
    assert_eq!(third["policy_version"], 2);
    let rid = third["review_id"].as_str().expect("a review");
    let (s, r) = app
        .send(app.get(&format!("/v1/reviews/{rid}"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["policy_version"], 2, "{r}");
    assert_eq!(r["queue"], "ops", "{r}");
    assert_eq!(r["rule"], "check everything");

    // Earlier actions keep the version that routed them.
    for (a, version) in [(&first, 0), (&second, 1), (&third, 2)] {
        let stored = app.action(a["id"].as_str().unwrap_or("")).await;
        assert_eq!(stored["policy_version"], version, "{stored}");
    }

    // Back to approving: at once.
    app.put_policy(APPROVE_ALL).await;
    let (_, fourth) = app
        .submit(json!({"name": "send_email", "arguments": {}}))
        .await;
    assert_eq!(fourth["status"], "approved", "{fourth}");
    assert_eq!(fourth["policy_version"], 3);
    // The audit trail names the version too.
    let events = all_events(&app).await;
    let created = events
        .iter()
        .find(|e| {
            e["type"] == "action.created"
                && e["subject"] == format!("action:{}", fourth["id"].as_str().unwrap_or(""))
        })
        .expect("an action.created event");
    assert_eq!(created["data"]["policy_version"], 3);
    assert_eq!(created["data"]["rule"], "run everything");
}

#[tokio::test]
async fn an_oversized_policy_is_a_413_and_changes_nothing() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let huge = format!("{REFUND_POLICY}\n# {}\n", "x".repeat(2 * 1024 * 1024));
    let (s, body) = put(&app, &huge).await;
    assert_error(
        s,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        Some("payload_too_large"),
        None,
    );
    assert_eq!(
        current(&app).await,
        ("1".to_owned(), REFUND_POLICY.to_owned())
    );
}
