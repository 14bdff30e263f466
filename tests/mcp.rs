//! `loopgate mcp` as an MCP client sees it: the real binary on stdio, speaking JSON-RPC to this
//! test (initialize, tools/list, tools/call), against a real Loopgate server on a random port,
//! with a reviewer deciding over the HTTP API while the tool call waits.

#[path = "api/helpers.rs"]
mod helpers;

use helpers::TestApp;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const POLICY: &str = r#"
[[rule]]
name = "questions go to a human"
applies_to = "action"
when = 'action.name == "ask_human"'
then = "review"
queue = "questions"

[[rule]]
name = "refunds need review"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "review"
queue = "finance"

[[rule]]
name = "no account deletion"
applies_to = "action"
when = 'action.name == "delete_account"'
then = "block"

[[rule]]
name = "everything else runs"
when = "true"
then = "approve"
"#;

/// The MCP server under test, and the JSON-RPC plumbing of a minimal client.
struct Mcp {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: i64,
}

impl Mcp {
    fn spawn(url: &str, token: &str) -> Mcp {
        let mut child = Command::new(env!("CARGO_BIN_EXE_loopgate"))
            .args(["mcp", "--url", url])
            .env("LOOPGATE_TOKEN", token)
            .env_remove("LOOPGATE_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn loopgate mcp");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Mcp {
            _child: child,
            stdin,
            stdout,
            next_id: 1,
        }
    }

    async fn send(&mut self, message: Value) {
        let mut line = serde_json::to_string(&message).unwrap();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Send a request; returns its id.
    async fn request(&mut self, method: &str, params: Value) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        id
    }

    /// Read messages until the response to `id` (notifications, e.g. progress, are skipped).
    async fn response(&mut self, id: i64, within: Duration) -> Value {
        let read = async {
            loop {
                let line = self
                    .stdout
                    .next_line()
                    .await
                    .expect("read stdout")
                    .expect("the MCP server closed its stdout");
                let msg: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON-RPC on stdout ({e}): {line}"));
                assert_eq!(msg["jsonrpc"], "2.0", "{msg}");
                if msg["id"] == json!(id) {
                    return msg;
                }
            }
        };
        tokio::time::timeout(within, read)
            .await
            .unwrap_or_else(|_| panic!("no response to request {id} within {within:?}"))
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.request(method, params).await;
        let resp = self.response(id, Duration::from_secs(20)).await;
        assert!(resp.get("error").is_none(), "{method} failed: {resp}");
        resp["result"].clone()
    }

    async fn handshake(&mut self) -> Value {
        let init = self
            .call(
                "initialize",
                json!({
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "loopgate-test", "version": "0.0.0"}
                }),
            )
            .await;
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        init
    }
}

/// The first pending review, as the reviewer `token` sees the queue (waits for it to appear).
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

#[tokio::test]
async fn request_approval_waits_for_a_reviewer_and_returns_the_edited_arguments() {
    let app = TestApp::spawn().await;
    app.put_policy(POLICY).await;
    let mut mcp = Mcp::spawn(&app.base, &app.agent);

    let init = mcp.handshake().await;
    assert_eq!(init["serverInfo"]["name"], "loopgate", "{init}");
    assert!(init["capabilities"]["tools"].is_object(), "{init}");
    assert!(init["instructions"]
        .as_str()
        .is_some_and(|i| i.contains("request_approval")));

    let tools = mcp.call("tools/list", json!({})).await;
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for expected in [
        "request_approval",
        "ask_human",
        "escalate_conversation",
        "check_status",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let schema = &tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "request_approval")
        .unwrap()["inputSchema"];
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        required.contains(&"name") && required.contains(&"arguments"),
        "{schema}"
    );
    assert!(schema["properties"]["confidence"].is_object(), "{schema}");

    // The call blocks until a human decides.
    let call = mcp
        .request(
            "tools/call",
            json!({
                "name": "request_approval",
                "arguments": {
                    "name": "issue_refund",
                    "arguments": {"amount": 300, "order": "A-1001"},
                    "confidence": 0.9,
                    "context": {"tier": "gold"}
                },
                "_meta": {"progressToken": "refund-1"}
            }),
        )
        .await;
    let review = pending_review(&app, &app.ann, "finance").await;
    let action = app.action(review["action_id"].as_str().unwrap()).await;
    assert_eq!(action["status"], "pending");
    assert_eq!(action["context"]["tier"], "gold");
    assert_eq!(action["confidence"], 0.9);
    let (status, body) = app
        .decide(
            &app.ann,
            review["id"].as_str().unwrap(),
            json!({"verdict": "edit", "arguments": {"amount": 150, "order": "A-1001"}, "comment": "half now"}),
        )
        .await;
    assert!(status.is_success(), "{body}");

    let resp = mcp.response(call, Duration::from_secs(20)).await;
    let result = &resp["result"];
    assert_eq!(result["isError"], false, "{resp}");
    let outcome = &result["structuredContent"];
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
    assert_eq!(outcome["rule"], "refunds need review");
    // The same, as text, for clients that only read `content`.
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text["arguments"]["amount"], 150);

    // check_status answers at once with the same decision.
    let id = outcome["action_id"].as_str().unwrap().to_owned();
    let checked = mcp
        .call(
            "tools/call",
            json!({"name": "check_status", "arguments": {"action_id": id}}),
        )
        .await;
    assert_eq!(checked["structuredContent"]["status"], "approved");
    assert_eq!(checked["structuredContent"]["arguments"]["amount"], 150);
}

#[tokio::test]
async fn rejections_blocks_questions_escalations_and_cancellations() {
    let app = TestApp::spawn().await;
    app.put_policy(POLICY).await;
    let mut mcp = Mcp::spawn(&app.base, &app.agent);
    mcp.handshake().await;

    // Blocked by policy: answered at once, not an error, and clearly not approved.
    let blocked = mcp
        .call(
            "tools/call",
            json!({"name": "request_approval", "arguments": {"name": "delete_account", "arguments": {"user": 7}}}),
        )
        .await;
    assert_eq!(
        blocked["structuredContent"]["status"], "blocked",
        "{blocked}"
    );
    assert_eq!(blocked["structuredContent"]["approved"], false);

    // A rejection carries the reviewer's comment.
    let call = mcp
        .request(
            "tools/call",
            json!({"name": "request_approval", "arguments": {"name": "issue_refund", "arguments": {"amount": 20}}}),
        )
        .await;
    let review = pending_review(&app, &app.bob, "finance").await;
    app.decide(
        &app.bob,
        review["id"].as_str().unwrap(),
        json!({"verdict": "reject", "comment": "already refunded"}),
    )
    .await;
    let rejected = mcp.response(call, Duration::from_secs(20)).await["result"].clone();
    assert_eq!(
        rejected["structuredContent"]["status"], "rejected",
        "{rejected}"
    );
    assert_eq!(rejected["structuredContent"]["comment"], "already refunded");

    // ask_human: the reviewer answers by editing in an `answer`.
    let call = mcp
        .request(
            "tools/call",
            json!({"name": "ask_human", "arguments": {"question": "Which warehouse ships order A-7?"}}),
        )
        .await;
    let review = pending_review(&app, &app.ann, "questions").await;
    let question = app.action(review["action_id"].as_str().unwrap()).await;
    assert_eq!(question["name"], "ask_human");
    assert_eq!(
        question["arguments"]["question"],
        "Which warehouse ships order A-7?"
    );
    app.decide(
        &app.ann,
        review["id"].as_str().unwrap(),
        json!({"verdict": "edit", "arguments": {"question": "Which warehouse ships order A-7?", "answer": "Leeds"}}),
    )
    .await;
    let answer = mcp.response(call, Duration::from_secs(20)).await["result"].clone();
    assert_eq!(answer["structuredContent"]["answered"], true, "{answer}");
    assert_eq!(answer["structuredContent"]["answer"], "Leeds");
    assert_eq!(answer["structuredContent"]["answered_by"], json!(["ann"]));

    // escalate_conversation hands a conversation to the humans.
    let (_, conv) = app
        .send(app.post("/v1/conversations", &app.agent).json(&json!({})))
        .await;
    let escalated = mcp
        .call(
            "tools/call",
            json!({"name": "escalate_conversation", "arguments": {"conversation_id": conv["id"], "reason": "wants a person"}}),
        )
        .await;
    assert_eq!(
        escalated["structuredContent"]["state"], "waiting",
        "{escalated}"
    );
    let (_, after) = app
        .send(app.get(
            &format!("/v1/conversations/{}", conv["id"].as_str().unwrap()),
            &app.agent,
        ))
        .await;
    assert_eq!(after["state"], "waiting");

    // A server error reaches the model as a tool error, with the server's message.
    let missing = mcp
        .call(
            "tools/call",
            json!({"name": "check_status", "arguments": {"action_id": "not-an-id"}}),
        )
        .await;
    assert_eq!(missing["isError"], true, "{missing}");
    assert!(missing["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("not a valid id"));

    // A cancelled tool call withdraws its pending action.
    let call = mcp
        .request(
            "tools/call",
            json!({"name": "request_approval", "arguments": {"name": "issue_refund", "arguments": {"amount": 99}}}),
        )
        .await;
    let review = pending_review(&app, &app.ann, "finance").await;
    let action_id = review["action_id"].as_str().unwrap().to_owned();
    mcp.send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": call, "reason": "user stopped"}}))
        .await;
    app.wait_for_action(&action_id, |a| a["status"] == "cancelled")
        .await;
}

#[tokio::test]
async fn a_missing_token_is_one_line_and_a_failure() {
    let out = Command::new(env!("CARGO_BIN_EXE_loopgate"))
        .args(["mcp", "--url", "http://127.0.0.1:9"])
        .env_remove("LOOPGATE_TOKEN")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("LOOPGATE_TOKEN"), "{stderr}");
    assert!(out.stdout.is_empty());
}
