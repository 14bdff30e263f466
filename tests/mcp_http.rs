//! MCP over streamable HTTP at `/mcp`, as an MCP client sees it: the real server on a random
//! port, rmcp's own streamable HTTP client (initialize, tools/list, tools/call that waits while a
//! reviewer decides over the HTTP API), and raw HTTP for what must be refused or cancelled.

#[path = "api/helpers.rs"]
mod helpers;

use helpers::{test_config, TestApp};
use loopgate_domain::auth::Role;
use loopgate_server::Config;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const POLICY: &str = r#"
[[rule]]
name = "refunds need review"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "review"
queue = "finance"

[[rule]]
name = "everything else runs"
when = "true"
then = "approve"
"#;

type McpClient = RunningService<RoleClient, ()>;

/// An MCP session with the server's `/mcp`, authenticated with `token`.
async fn connect(app: &TestApp, token: &str) -> McpClient {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.base))
        .auth_header(token);
    tokio::time::timeout(
        Duration::from_secs(20),
        ().serve(StreamableHttpClientTransport::from_config(config)),
    )
    .await
    .expect("the MCP handshake timed out")
    .expect("the MCP handshake")
}

fn call(name: &str, arguments: Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments else {
        panic!("tool arguments must be an object");
    };
    CallToolRequestParams::new(name.to_owned()).with_arguments(arguments)
}

/// A tool call's structured result, checking it is not an error.
fn structured(result: &CallToolResult) -> Value {
    assert_ne!(result.is_error, Some(true), "{result:?}");
    result
        .structured_content
        .clone()
        .unwrap_or_else(|| panic!("no structured content: {result:?}"))
}

/// The first pending review in `queue`, as the reviewer `token` sees it (waits for it to appear).
async fn pending_review(app: &TestApp, token: &str, queue: &str) -> Value {
    for _ in 0..400 {
        let (status, body) = app
            .send(app.get(&format!("/v1/reviews?status=pending&queue={queue}"), token))
            .await;
        assert!(status.is_success(), "{body}");
        if let Some(r) = body["reviews"].as_array().and_then(|r| r.first()) {
            return r.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no pending review appeared in queue {queue}");
}

/// A raw MCP POST, as any streamable HTTP client sends it.
fn raw_post(app: &TestApp, token: Option<&str>, message: Value) -> reqwest::RequestBuilder {
    let req = app
        .client
        .post(format!("{}/mcp", app.base))
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .json(&message);
    match token {
        Some(token) => req.bearer_auth(token),
        None => req,
    }
}

fn refund_call(amount: i64) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "request_approval", "arguments": {"name": "issue_refund", "arguments": {"amount": amount}}}
    })
}

#[tokio::test]
async fn request_approval_over_http_waits_for_a_reviewer_and_returns_the_edited_arguments() {
    let app = TestApp::spawn().await;
    app.put_policy(POLICY).await;
    let mcp = connect(&app, &app.agent).await;

    let info = mcp.peer_info().expect("the server's initialize result");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("loopgate")
    );
    assert!(info.capabilities.tools.is_some(), "{info:?}");
    assert!(info
        .instructions
        .as_deref()
        .is_some_and(|i| i.contains("request_approval")));

    let tools = mcp.list_all_tools().await.expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "ask_human",
            "check_status",
            "escalate_conversation",
            "request_approval"
        ]
    );

    // The call blocks until a human decides; meanwhile a reviewer edits it over the HTTP API.
    let waiting = mcp.call_tool(call(
        "request_approval",
        json!({
            "name": "issue_refund",
            "arguments": {"amount": 300, "order": "A-1001"},
            "confidence": 0.9,
            "context": {"tier": "gold"}
        }),
    ));
    let reviewer = async {
        let review = pending_review(&app, &app.ann, "finance").await;
        let action = app.action(review["action_id"].as_str().unwrap()).await;
        assert_eq!(action["status"], "pending");
        // Filed as the agent whose token opened the MCP session.
        assert_eq!(action["agent"], "bot");
        assert_eq!(action["context"]["tier"], "gold");
        let (status, body) = app
            .decide(
                &app.ann,
                review["id"].as_str().unwrap(),
                json!({"verdict": "edit", "arguments": {"amount": 150, "order": "A-1001"}, "comment": "half now"}),
            )
            .await;
        assert!(status.is_success(), "{body}");
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(waiting, reviewer)
    })
    .await
    .expect("the tool call never returned");
    let outcome = structured(&result.expect("tools/call request_approval"));
    assert_eq!(outcome["status"], "approved", "{outcome}");
    assert_eq!(outcome["approved"], true);
    assert_eq!(outcome["edited"], true);
    assert_eq!(
        outcome["arguments"],
        json!({"amount": 150, "order": "A-1001"})
    );
    assert_eq!(outcome["verdict"], "edit");
    assert_eq!(outcome["comment"], "half now");
    assert_eq!(outcome["reviewers"], json!(["ann"]));

    // check_status, in the same session, sees the same decision.
    let id = outcome["action_id"].as_str().unwrap();
    let checked = mcp
        .call_tool(call("check_status", json!({"action_id": id})))
        .await
        .expect("tools/call check_status");
    let checked = structured(&checked);
    assert_eq!(checked["status"], "approved");
    assert_eq!(checked["arguments"]["amount"], 150);

    mcp.cancel().await.expect("close the MCP client");
}

#[tokio::test]
async fn each_call_acts_as_the_agent_whose_token_carries_it() {
    let app = TestApp::spawn().await;
    app.put_policy(POLICY).await;
    let other = app.key("acme", "acme-bot", Role::Agent).await;
    let acme_admin = app.key("acme", "acme-root", Role::Admin).await;
    let (status, body) = app
        .send(
            app.request(reqwest::Method::PUT, "/v1/policy", &acme_admin)
                .body(POLICY),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (ours, theirs) = (connect(&app, &app.agent).await, connect(&app, &other).await);

    let mine = structured(
        &ours
            .call_tool(call(
                "request_approval",
                json!({"name": "send_email", "arguments": {"to": "jo@example.com"}}),
            ))
            .await
            .unwrap(),
    );
    let acme = structured(
        &theirs
            .call_tool(call(
                "request_approval",
                json!({"name": "send_email", "arguments": {"to": "al@example.com"}}),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(mine["status"], "approved", "{mine}");
    assert_eq!(acme["status"], "approved", "{acme}");

    let a = app.action(mine["action_id"].as_str().unwrap()).await;
    assert_eq!(
        (&a["workspace"], &a["agent"]),
        (&json!("default"), &json!("bot"))
    );
    let (status, b) = app
        .send(app.get(
            &format!("/v1/actions/{}", acme["action_id"].as_str().unwrap()),
            &other,
        ))
        .await;
    assert!(status.is_success(), "{b}");
    assert_eq!(
        (&b["workspace"], &b["agent"]),
        (&json!("acme"), &json!("acme-bot"))
    );

    // Another workspace's action is not this agent's to see, through MCP either.
    let peek = ours
        .call_tool(call(
            "check_status",
            json!({"action_id": acme["action_id"]}),
        ))
        .await
        .unwrap();
    assert_eq!(peek.is_error, Some(true), "{peek:?}");
}

#[tokio::test]
async fn mcp_without_a_valid_agent_token_is_refused_before_any_tool_runs() {
    let app = TestApp::spawn().await;
    app.put_policy(POLICY).await;

    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
    });
    let revoked = app.key("default", "old-bot", Role::Agent).await;
    let (_, keys) = app.send(app.get("/v1/keys", &app.admin)).await;
    let old = keys["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["name"] == "old-bot"))
        .unwrap_or_else(|| panic!("old-bot in {keys}"));
    let (status, body) = app
        .send(app.request(
            reqwest::Method::DELETE,
            &format!("/v1/keys/{}", old["id"].as_str().unwrap()),
            &app.admin,
        ))
        .await;
    assert!(status.is_success(), "{body}");

    for (token, expected) in [
        (None, 401),
        (Some("not-a-token"), 401),
        (Some(revoked.as_str()), 401),
        (Some(app.ann.as_str()), 403),
    ] {
        for message in [initialize.clone(), refund_call(40)] {
            let (status, body) = app.send(raw_post(&app, token, message)).await;
            assert_eq!(status.as_u16(), expected, "{token:?}: {body}");
            let code = if expected == 401 {
                "unauthorized"
            } else {
                "forbidden"
            };
            assert_eq!(body["error"]["code"], code, "{body}");
        }
    }
    // No tool ran: nothing was filed.
    let (_, reviews) = app
        .send(app.get("/v1/reviews?status=pending", &app.ann))
        .await;
    assert_eq!(reviews["reviews"], json!([]), "{reviews}");

    // rmcp's own client, without a token, cannot even complete the handshake.
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.base));
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        ().serve(StreamableHttpClientTransport::from_config(config)),
    )
    .await
    .expect("the refused handshake hung");
    assert!(refused.is_err());

    // With a valid agent token the same raw call is served (as SSE) by the MCP endpoint.
    let resp = raw_post(
        &app,
        Some(&app.agent),
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert!(body.contains("request_approval"), "{body}");
}

#[tokio::test]
async fn a_dropped_connection_withdraws_the_action_and_shutdown_is_not_held_up() {
    let mut app = TestApp::spawn_with(Config {
        sse_keepalive: Duration::from_millis(200),
        ..test_config()
    })
    .await;
    app.put_policy(POLICY).await;

    // A client that goes away while waiting: its action is cancelled, so nobody decides it.
    let resp = raw_post(&app, Some(&app.agent), refund_call(99))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let review = pending_review(&app, &app.ann, "finance").await;
    drop(resp);
    app.wait_for_action(review["action_id"].as_str().unwrap(), |a| {
        a["status"] == "cancelled"
    })
    .await;

    // A call still waiting for a human does not keep the server from stopping.
    let mcp = connect(&app, &app.agent).await;
    let waiting = tokio::spawn(async move {
        mcp.call_tool(call(
            "request_approval",
            json!({"name": "issue_refund", "arguments": {"amount": 5}}),
        ))
        .await
    });
    let review = pending_review(&app, &app.ann, "finance").await;
    assert_eq!(review["status"], "pending");
    let started = Instant::now();
    app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        started.elapsed()
    );
    let ended = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the waiting call never ended");
    assert!(
        !matches!(ended, Ok(Ok(ref r)) if r.is_error != Some(true)),
        "{ended:?}"
    );
}
