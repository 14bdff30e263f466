//! Bad requests: each refused with the right status and the JSON error shape, naming the field,
//! and none leaving a partial record behind.

use crate::audit::all_events;
use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The status, and the error body `{"error": {"code", "message", "field"?}}` with the expected
/// code and field (when given).
pub(crate) fn assert_error(
    status: StatusCode,
    body: &Value,
    expected: StatusCode,
    code: Option<&str>,
    field: Option<&str>,
) {
    assert_eq!(status, expected, "{body}");
    let error = &body["error"];
    assert!(
        error["code"].as_str().is_some_and(|c| !c.is_empty()),
        "no error.code in {body}"
    );
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no error.message in {body}"
    );
    if let Some(code) = code {
        assert_eq!(error["code"], code, "{body}");
    }
    if let Some(field) = field {
        assert_eq!(error["field"], field, "{body}");
    }
}

async fn post_raw(app: &TestApp, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    app.send(
        app.post("/v1/actions", &app.agent)
            .header("content-type", "application/json")
            .body(body),
    )
    .await
}

async fn nothing_was_created(app: &TestApp) {
    let events = all_events(app).await;
    let created: Vec<&Value> = events
        .iter()
        .filter(|e| {
            let t = e["type"].as_str().unwrap_or("");
            t.starts_with("action.") || t.starts_with("review.")
        })
        .collect();
    assert!(created.is_empty(), "partial records: {created:#?}");
    let (s, list) = app.send(app.get("/v1/reviews?status=all", &app.ann)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["reviews"], json!([]));
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    for raw in [
        r#"{"name": "x", "arguments": {}"#,
        r#"{"name": "x", "arguments": {},}"#,
        "name=x",
        r#"{"name": 'x'}"#,
        "\u{feff}{}",
    ] {
        let (s, body) = post_raw(&app, raw.to_owned()).await;
        assert_error(
            s,
            &body,
            StatusCode::BAD_REQUEST,
            Some("invalid_json"),
            None,
        );
    }
    // Not UTF-8 at all.
    let (s, body) = post_raw(&app, vec![b'{', 0xff, 0xfe, b'}']).await;
    assert_error(
        s,
        &body,
        StatusCode::BAD_REQUEST,
        Some("invalid_json"),
        None,
    );
    // No body.
    let (s, body) = post_raw(&app, "").await;
    assert_error(s, &body, StatusCode::BAD_REQUEST, None, None);
    nothing_was_created(&app).await;
}

#[tokio::test]
async fn wrong_types_and_values_name_the_field() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let cases = [
        (json!({"name": "x", "arguments": [1]}), "arguments"),
        (json!({"name": "x", "arguments": "{}"}), "arguments"),
        (json!({"name": "x", "arguments": null}), "arguments"),
        (json!({"name": 5, "arguments": {}}), "name"),
        (json!({"name": "", "arguments": {}}), "name"),
        (json!({"name": "rm -rf /", "arguments": {}}), "name"),
        (json!({"name": "x".repeat(129), "arguments": {}}), "name"),
        (
            json!({"name": "x", "arguments": {}, "confidence": "high"}),
            "confidence",
        ),
        (
            json!({"name": "x", "arguments": {}, "confidence": 1.5}),
            "confidence",
        ),
        (
            json!({"name": "x", "arguments": {}, "confidence": -0.1}),
            "confidence",
        ),
        (
            json!({"name": "x", "arguments": {}, "context": [1]}),
            "context",
        ),
        (
            json!({"name": "x", "arguments": {}, "conversation_id": 7}),
            "conversation_id",
        ),
        (json!({"arguments": {}}), "name"),
        (json!({"name": "x"}), "arguments"),
    ];
    for (body, field) in cases {
        let (s, resp) = app.submit(body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {resp}");
        assert_error(
            s,
            &resp,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some(field),
        );
    }
    nothing_was_created(&app).await;

    // The edges of the range are fine.
    for c in [0.0, 1.0] {
        let (s, a) = app
            .submit(json!({"name": "x", "arguments": {}, "confidence": c}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        assert_eq!(a["confidence"], c);
    }
}

#[tokio::test]
async fn unknown_fields_are_refused() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let (s, body) = app
        .submit(json!({"name": "x", "arguments": {}, "confidance": 0.9}))
        .await;
    assert_error(s, &body, StatusCode::UNPROCESSABLE_ENTITY, None, None);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("confidance"),
        "{body}"
    );
    // On a decision too.
    let (_, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 1}}))
        .await;
    let rid = a["review_id"].as_str().expect("a review").to_owned();
    let (s, body) = app
        .decide(
            &app.ann,
            &rid,
            json!({"verdict": "approve", "approved": true}),
        )
        .await;
    assert_error(s, &body, StatusCode::UNPROCESSABLE_ENTITY, None, None);
    let (s, body) = app
        .decide(&app.ann, &rid, json!({"verdict": "maybe"}))
        .await;
    assert_error(
        s,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        None,
        Some("verdict"),
    );
    // The review is still open and undecided.
    let (s, r) = app
        .send(app.get(&format!("/v1/reviews/{rid}"), &app.ann))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["status"], "pending", "{r}");
    assert_eq!(r["decisions"], json!([]));
}

/// POST an action body of about `size` bytes with `Transfer-Encoding: chunked` (no
/// Content-Length), over a raw connection; the status and the JSON body of the answer.
async fn chunked_post(app: &TestApp, size: usize) -> (StatusCode, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/actions HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.addr, app.agent
    );
    conn.write_all(head.as_bytes())
        .await
        .expect("send the head");
    let mut chunks = vec![b"{\"name\":\"x\",\"arguments\":{\"b\":\"".to_vec()];
    let mut sent = chunks[0].len();
    while sent < size {
        chunks.push(vec![b'a'; 64 * 1024]);
        sent += 64 * 1024;
    }
    chunks.push(b"\"}}".to_vec());
    for chunk in chunks {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend(chunk);
        framed.extend(b"\r\n");
        // The server may answer and stop reading before the end: that is its right.
        if conn.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // One chunk is enough for an error body: skip its size line.
        body.split_once("\r\n").map_or("", |(_, rest)| rest)
    } else {
        body
    };
    let json_end = body.rfind('}').map_or(0, |i| i + 1);
    (
        status,
        serde_json::from_str(&body[..json_end]).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_a_413() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let big = json!({"name": "x", "arguments": {"blob": "a".repeat(1024 * 1024 + 10)}});
    let (s, body) = app.submit(big).await;
    assert_error(
        s,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        Some("payload_too_large"),
        None,
    );
    // Without a Content-Length (chunked), too.
    let (s, body) = chunked_post(&app, 20 * 64 * 1024).await;
    assert_error(
        s,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        Some("payload_too_large"),
        None,
    );
    // Just under the limit is accepted.
    let ok = json!({"name": "x", "arguments": {"blob": "a".repeat(1024 * 1024 - 100)}});
    let (s, body) = app.submit(ok).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let events = all_events(&app).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "action.created")
            .count(),
        1
    );
}

#[tokio::test]
async fn every_error_has_the_json_shape_and_nothing_is_half_written() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let bad_requests = [
        app.post("/v1/actions", &app.agent).body("{"),
        app.post("/v1/actions", &app.agent)
            .json(&json!({"name": "x", "arguments": [1]})),
        app.post("/v1/actions", &app.agent)
            .json(&json!({"name": "x", "arguments": {}, "confidence": 2})),
        app.post("/v1/actions", &app.agent)
            .header("Idempotency-Key", "")
            .json(&json!({"name": "x", "arguments": {}})),
        app.post("/v1/actions", "wrong-token")
            .json(&json!({"name": "x", "arguments": {}})),
        app.post("/v1/actions", &app.ann)
            .json(&json!({"name": "x", "arguments": {}})),
        app.get("/v1/actions/not-a-uuid", &app.agent),
        app.get(
            "/v1/actions/0190d5c6-4b4e-7a6a-9d3e-3c7c2f6b1a00",
            &app.agent,
        ),
        app.get(
            "/v1/actions/0190d5c6-4b4e-7a6a-9d3e-3c7c2f6b1a00?wait=600",
            &app.agent,
        ),
        app.post("/v1/reviews/not-a-uuid/decision", &app.ann)
            .json(&json!({"verdict": "approve"})),
        app.get("/v1/reviews?status=weird", &app.ann),
        app.get("/v1/no-such-endpoint", &app.ann),
        app.request(reqwest::Method::DELETE, "/v1/actions", &app.agent),
    ];
    for req in bad_requests {
        let resp = req.send().await.expect("a response");
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_client_error(), "{status}: {body}");
        assert!(
            ct.starts_with("application/json"),
            "{status}: content-type {ct}"
        );
        assert_error(status, &body, status, None, None);
    }
    nothing_was_created(&app).await;
}
