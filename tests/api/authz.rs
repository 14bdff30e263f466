//! The authorization matrix: every endpoint × every role (no token, agent, reviewer, admin) ×
//! workspace (the resource's own, and another tenant's keys reaching for it), each cell's status
//! asserted. The table is data: one [`Row`] per method and path, and a check that every operation
//! in `GET /openapi.json` has a row, so an endpoint added without one fails here.
//!
//! To add an endpoint: add a `row(...)` to [`table`] with its method and OpenAPI path, which
//! fixture fills the path's `{id}`/`{name}` ([`Res`]), a body if it takes one, and the statuses
//! for `[none, agent, reviewer, admin]` with the resource's own workspace (`own`) and with keys
//! of another workspace (`other`: 404 where the resource is named in the path, so ids do not
//! leak; the role checks come first and may answer 401/403). Mark it `.fresh()` when a call
//! changes the resource (each cell then gets its own), `.stream()` for SSE.

use crate::helpers::{TestApp, REFUND_POLICY};
use loopgate_domain::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};

/// What fills the path's placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Res {
    Nothing,
    Action,
    Review,
    Conversation,
    Message,
    Webhook,
    Key,
    /// An agent's name (`bot` exists in both workspaces: names are per workspace).
    Agent,
    /// A standing rule proposed by "approve and don't ask again".
    Proposal,
}

struct Row {
    method: &'static str,
    path: &'static str,
    res: Res,
    body: Option<&'static str>,
    /// `[none, agent, reviewer, admin]` in the resource's workspace and from another one.
    own: [u16; 4],
    other: [u16; 4],
    fresh: bool,
    stream: bool,
}

fn row(
    method: &'static str,
    path: &'static str,
    res: Res,
    body: Option<&'static str>,
    own: [u16; 4],
    other: [u16; 4],
) -> Row {
    Row {
        method,
        path,
        res,
        body,
        own,
        other,
        fresh: false,
        stream: false,
    }
}

impl Row {
    fn fresh(mut self) -> Row {
        self.fresh = true;
        self
    }
    fn stream(mut self) -> Row {
        self.stream = true;
        self
    }
}

const ROLES: [&str; 4] = ["none", "agent", "reviewer", "admin"];

/// Every endpoint. Pauses come last: pausing the agent would change what later fixtures do.
fn table() -> Vec<Row> {
    use Res::*;
    let open = [200, 200, 200, 200];
    let agent_only = [401, 200, 403, 403];
    let reviewers = [401, 403, 200, 200];
    let admins = [401, 403, 403, 200];
    let anyone = [401, 200, 200, 200];
    vec![
        row("GET", "/healthz", Nothing, None, open, open),
        row("GET", "/metrics", Nothing, None, open, open),
        // Actions.
        row(
            "POST",
            "/v1/actions",
            Nothing,
            Some(r#"{"name": "lookup_order", "arguments": {}}"#),
            [401, 201, 403, 403],
            [401, 201, 403, 403],
        ),
        row(
            "GET",
            "/v1/actions/{id}",
            Action,
            None,
            anyone,
            [401, 404, 404, 404],
        ),
        row(
            "POST",
            "/v1/actions/{id}/cancel",
            Action,
            None,
            agent_only,
            [401, 404, 403, 403],
        )
        .fresh(),
        // Reviews.
        row("GET", "/v1/reviews", Nothing, None, reviewers, reviewers),
        row(
            "GET",
            "/v1/reviews/{id}",
            Review,
            None,
            reviewers,
            [401, 403, 404, 404],
        ),
        // The other workspace has nothing pending: 204, never one of ours.
        row(
            "POST",
            "/v1/reviews/next",
            Nothing,
            None,
            reviewers,
            [401, 403, 204, 204],
        )
        .fresh(),
        row(
            "POST",
            "/v1/reviews/{id}/claim",
            Review,
            None,
            reviewers,
            [401, 403, 404, 404],
        )
        .fresh(),
        // Not claimed by anyone: past authorization, refused by the review's state.
        row(
            "POST",
            "/v1/reviews/{id}/release",
            Review,
            None,
            [401, 403, 409, 409],
            [401, 403, 404, 404],
        )
        .fresh(),
        row(
            "POST",
            "/v1/reviews/{id}/decision",
            Review,
            Some(r#"{"verdict": "approve"}"#),
            reviewers,
            [401, 403, 404, 404],
        )
        .fresh(),
        // Policy and audit.
        row("GET", "/v1/policy", Nothing, None, admins, admins),
        row(
            "PUT",
            "/v1/policy",
            Nothing,
            Some(REFUND_POLICY),
            admins,
            admins,
        ),
        row("GET", "/v1/audit", Nothing, None, admins, admins),
        row("GET", "/v1/audit/verify", Nothing, None, admins, admins),
        row("GET", "/v1/stats", Nothing, None, reviewers, reviewers),
        // Conversations.
        row(
            "POST",
            "/v1/conversations",
            Nothing,
            Some("{}"),
            [401, 201, 403, 403],
            [401, 201, 403, 403],
        ),
        row(
            "GET",
            "/v1/conversations",
            Nothing,
            None,
            reviewers,
            reviewers,
        ),
        row(
            "GET",
            "/v1/conversations/{id}",
            Conversation,
            None,
            anyone,
            [401, 404, 404, 404],
        ),
        // `user` messages come from the agent; a reviewer may only post `human` ones.
        row(
            "POST",
            "/v1/conversations/{id}/messages",
            Conversation,
            Some(r#"{"role": "user", "text": "hello"}"#),
            [401, 201, 403, 403],
            [401, 404, 403, 403],
        ),
        row(
            "POST",
            "/v1/conversations/{id}/escalate",
            Conversation,
            None,
            anyone,
            [401, 404, 404, 404],
        )
        .fresh(),
        row(
            "POST",
            "/v1/conversations/{id}/takeover",
            Conversation,
            None,
            reviewers,
            [401, 403, 404, 404],
        )
        .fresh(),
        // The AI has it: nothing to hand back.
        row(
            "POST",
            "/v1/conversations/{id}/handback",
            Conversation,
            None,
            [401, 403, 409, 409],
            [401, 403, 404, 404],
        ),
        row(
            "POST",
            "/v1/conversations/{id}/close",
            Conversation,
            None,
            anyone,
            [401, 404, 404, 404],
        )
        .fresh(),
        row(
            "POST",
            "/v1/messages/{id}/feedback",
            Message,
            Some(r#"{"rating": "up"}"#),
            [401, 201, 403, 403],
            [401, 404, 403, 403],
        )
        .fresh(),
        // Events.
        row("GET", "/v1/events", Nothing, None, anyone, anyone).stream(),
        row(
            "GET",
            "/v1/conversations/{id}/events",
            Conversation,
            None,
            anyone,
            [401, 404, 404, 404],
        )
        .stream(),
        // Webhooks.
        row(
            "POST",
            "/v1/webhooks",
            Nothing,
            Some(r#"{"url": "http://127.0.0.1:9/hook", "events": ["pause.*"]}"#),
            [401, 403, 403, 201],
            [401, 403, 403, 201],
        ),
        row("GET", "/v1/webhooks", Nothing, None, admins, admins),
        row(
            "DELETE",
            "/v1/webhooks/{id}",
            Webhook,
            None,
            [401, 403, 403, 204],
            [401, 403, 403, 404],
        )
        .fresh(),
        row(
            "GET",
            "/v1/webhooks/{id}/deliveries",
            Webhook,
            None,
            admins,
            [401, 403, 403, 404],
        ),
        // Keys and users.
        row(
            "POST",
            "/v1/keys",
            Nothing,
            Some(r#"{"name": "k{unique}", "role": "agent"}"#),
            [401, 403, 403, 201],
            [401, 403, 403, 201],
        ),
        row("GET", "/v1/keys", Nothing, None, admins, admins),
        row(
            "DELETE",
            "/v1/keys/{id}",
            Key,
            None,
            [401, 403, 403, 204],
            [401, 403, 403, 404],
        )
        .fresh(),
        row(
            "POST",
            "/v1/users",
            Nothing,
            Some(r#"{"username": "u{unique}", "role": "reviewer", "password": "long enough"}"#),
            [401, 403, 403, 201],
            [401, 403, 403, 201],
        ),
        row("GET", "/v1/users", Nothing, None, admins, admins),
        // MCP (not in the OpenAPI document): agents only, before any tool runs.
        row(
            "POST",
            "/mcp",
            Nothing,
            Some(r#"{"jsonrpc": "2.0", "id": 1, "method": "ping"}"#),
            [401, 200, 403, 403],
            [401, 200, 403, 403],
        ),
        // Pauses: names are per workspace, so "another tenant's" agent is its own `bot`.
        row(
            "POST",
            "/v1/agents/{name}/pause",
            Agent,
            Some(r#"{"reason": "authz"}"#),
            reviewers,
            reviewers,
        ),
        row(
            "POST",
            "/v1/agents/{name}/resume",
            Agent,
            None,
            reviewers,
            reviewers,
        ),
        row(
            "POST",
            "/v1/workspace/pause",
            Nothing,
            Some(r#"{"reason": "authz"}"#),
            reviewers,
            reviewers,
        ),
        row(
            "POST",
            "/v1/workspace/resume",
            Nothing,
            None,
            reviewers,
            reviewers,
        ),
        row("GET", "/v1/pauses", Nothing, None, reviewers, reviewers),
        // The learning loop. Without `target_accuracy` the tuner answers 422, after the role
        // check.
        row(
            "GET",
            "/v1/tune",
            Nothing,
            None,
            [401, 403, 422, 422],
            [401, 403, 422, 422],
        ),
        row(
            "POST",
            "/v1/policy/backtest",
            Nothing,
            Some("[[rule]]\nname = \"all reviewed\"\nwhen = \"true\"\nthen = \"review\"\n"),
            admins,
            admins,
        ),
        row("GET", "/v1/policy/proposals", Nothing, None, admins, admins),
        row(
            "GET",
            "/v1/policy/proposals/{id}",
            Proposal,
            None,
            admins,
            [401, 403, 403, 404],
        ),
        row(
            "POST",
            "/v1/policy/proposals/{id}/approve",
            Proposal,
            None,
            admins,
            [401, 403, 403, 404],
        )
        .fresh(),
        row(
            "POST",
            "/v1/policy/proposals/{id}/reject",
            Proposal,
            None,
            admins,
            [401, 403, 403, 404],
        )
        .fresh(),
        row(
            "GET",
            "/v1/policy/thresholds",
            Nothing,
            None,
            admins,
            admins,
        ),
        row(
            "POST",
            "/v1/policy/thresholds/recompute",
            Nothing,
            None,
            admins,
            admins,
        ),
        // Retention.
        row(
            "GET",
            "/v1/workspace/retention",
            Nothing,
            None,
            admins,
            admins,
        ),
        row(
            "PUT",
            "/v1/workspace/retention",
            Nothing,
            Some(r#"{"days": 400}"#),
            admins,
            admins,
        ),
        // Training data and knowledge changes.
        row(
            "GET",
            "/v1/exports/training",
            Nothing,
            None,
            [401, 403, 403, 422],
            [401, 403, 403, 422],
        ),
        row(
            "POST",
            "/v1/knowledge",
            Nothing,
            Some(r#"{"title": "Opening hours {unique}", "text": "We open at nine."}"#),
            [401, 201, 403, 403],
            [401, 201, 403, 403],
        ),
        row("GET", "/v1/knowledge", Nothing, None, anyone, anyone),
    ]
}

/// Resources of the first workspace, made by its own keys.
struct Fixture {
    ids: HashMap<Res, String>,
}

async fn fixture(app: &TestApp) -> Fixture {
    let mut ids = HashMap::new();
    let (status, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 100}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    assert_eq!(a["status"], "pending", "{a}");
    ids.insert(Res::Action, str_of(&a["id"]));
    ids.insert(Res::Review, str_of(&a["review_id"]));
    let (status, c) = app
        .send(app.post("/v1/conversations", &app.agent).json(&json!({})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let conversation = str_of(&c["id"]);
    let (status, m) = app
        .send(
            app.post(
                &format!("/v1/conversations/{conversation}/messages"),
                &app.agent,
            )
            .json(&json!({"role": "ai", "text": "Hello!", "confidence": 0.9})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    assert_eq!(m["status"], "delivered", "{m}");
    ids.insert(Res::Conversation, conversation);
    ids.insert(Res::Message, str_of(&m["id"]));
    let (status, w) = app
        .send(
            app.post("/v1/webhooks", &app.admin)
                .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["pause.*"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    ids.insert(Res::Webhook, str_of(&w["id"]));
    let (status, k) = app
        .send(
            app.post("/v1/keys", &app.admin)
                .json(&json!({"name": "spare", "role": "agent"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{k}");
    ids.insert(Res::Key, str_of(&k["id"]));
    ids.insert(Res::Agent, "bot".to_owned());
    // Its own agent each time: an approved proposal lets that agent's refunds through.
    let proposer = app
        .key(
            "default",
            &format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            Role::Agent,
        )
        .await;
    let (status, a) =
        app.send(app.post("/v1/actions", &proposer).json(
            &json!({"name": "issue_refund", "arguments": {"amount": 50}, "confidence": 0.9}),
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    let (status, d) = app
        .decide(
            &app.ann,
            &str_of(&a["review_id"]),
            json!({"verdict": "approve", "dont_ask_again": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    ids.insert(Res::Proposal, str_of(&d["proposal"]["id"]));
    Fixture { ids }
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_owned()
}

fn fill(path: &str, res: Res, fixture: &Fixture) -> String {
    match res {
        Res::Nothing => path.to_owned(),
        res => {
            let value = &fixture.ids[&res];
            path.replace("{id}", value).replace("{name}", value)
        }
    }
}

#[tokio::test]
async fn every_endpoint_by_every_role_in_both_workspaces() {
    let app = TestApp::spawn().await;
    let rows = table();

    // Every operation the API documents has a row.
    let (status, doc) = app
        .send(app.client.get(format!("{}/openapi.json", app.base)))
        .await;
    assert_eq!(status, StatusCode::OK);
    let in_table: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    let mut missing = Vec::new();
    let mut documented = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("operations").keys() {
            let method = method.to_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                continue;
            }
            documented += 1;
            if !in_table.contains(&(method.clone(), path.clone())) {
                missing.push(format!("{method} {path}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "endpoints without a row in tests/api/authz.rs `table()`: {missing:?}"
    );

    // Workspace A is the app's `default`; workspace B has keys of every role, one of them an
    // agent with the same name, so a lookup by name instead of by workspace would show.
    app.put_policy(REFUND_POLICY).await;
    let own_tokens = [
        None,
        Some(app.agent.clone()),
        Some(app.ann.clone()),
        Some(app.admin.clone()),
    ];
    let other_admin = app.key("other", "boss", Role::Admin).await;
    let other_tokens = [
        None,
        Some(app.key("other", "bot", Role::Agent).await),
        Some(app.key("other", "rita", Role::Reviewer).await),
        Some(other_admin.clone()),
    ];
    let (status, body) = app
        .send(
            app.request(Method::PUT, "/v1/policy", &other_admin)
                .body(REFUND_POLICY),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let shared = fixture(&app).await;
    // Every id of workspace A: none may appear in an answer to workspace B.
    let mut a_ids: Vec<String> = shared
        .ids
        .iter()
        .filter(|(r, _)| **r != Res::Agent)
        .map(|(_, v)| v.clone())
        .collect();
    let mut failures = Vec::new();
    let mut cells = 0;
    for row in &rows {
        for (workspace, tokens, expected) in [
            ("own", &own_tokens, row.own),
            ("other", &other_tokens, row.other),
        ] {
            for (i, token) in tokens.iter().enumerate() {
                let fresh;
                let fix = if row.fresh {
                    fresh = fixture(&app).await;
                    a_ids.extend(
                        fresh
                            .ids
                            .iter()
                            .filter(|(r, _)| **r != Res::Agent)
                            .map(|(_, v)| v.clone()),
                    );
                    &fresh
                } else {
                    &shared
                };
                let path = fill(row.path, row.res, fix);
                let method = Method::from_bytes(row.method.as_bytes()).expect("a method");
                let mut req = app.client.request(method, format!("{}{path}", app.base));
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                if let Some(body) = row.body {
                    let unique = uuid::Uuid::new_v4().simple().to_string();
                    if body.starts_with('{') {
                        req = req
                            .header("content-type", "application/json")
                            .header("accept", "application/json, text/event-stream");
                    }
                    req = req.body(body.replace("{unique}", &unique[..12]));
                }
                let resp = req.send().await.expect("the server answers");
                let status = resp.status().as_u16();
                // Streams never end: their status and headers are the answer.
                let text = if row.stream && status == 200 {
                    String::new()
                } else {
                    resp.text().await.unwrap_or_default()
                };
                cells += 1;
                let cell = format!(
                    "{} {} as {} ({workspace} workspace)",
                    row.method, row.path, ROLES[i]
                );
                if status != expected[i] {
                    failures.push(format!(
                        "{cell}: got {status}, expected {}: {}",
                        expected[i],
                        text.chars().take(200).collect::<String>()
                    ));
                    continue;
                }
                if status == 404 && row.path.starts_with("/v1/") {
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if v["error"]["code"] != "not_found" {
                        failures.push(format!("{cell}: a 404 not in our error shape: {text}"));
                    }
                }
                if workspace == "other" && (200..300).contains(&status) {
                    if let Some(leak) = a_ids.iter().find(|id| text.contains(id.as_str())) {
                        failures.push(format!(
                            "{cell}: the answer names {leak} of the other workspace: {text}"
                        ));
                    }
                }
            }
        }
    }
    println!(
        "authz: {} rows ({documented} documented operations + /mcp) x 4 roles x 2 workspaces = {cells} cells checked, {} failed",
        rows.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Agents share a workspace but not their work: another agent's key reaches none of `bot`'s
/// actions, conversations or messages, and gets the same 404 as for an id that does not exist.
#[tokio::test]
async fn another_agent_of_the_workspace_cannot_reach_this_agents_work() {
    let app = TestApp::spawn().await;
    app.put_policy(REFUND_POLICY).await;
    let peer = app.key("default", "eve", Role::Agent).await;
    let mut cells = 0;
    let mut failures = Vec::new();
    for (method, path, res, body) in [
        ("GET", "/v1/actions/{id}", Res::Action, None),
        ("GET", "/v1/actions/{id}?wait=0.1", Res::Action, None),
        ("POST", "/v1/actions/{id}/cancel", Res::Action, None),
        ("GET", "/v1/conversations/{id}", Res::Conversation, None),
        (
            "GET",
            "/v1/conversations/{id}/events",
            Res::Conversation,
            None,
        ),
        (
            "POST",
            "/v1/conversations/{id}/messages",
            Res::Conversation,
            Some(r#"{"role": "ai", "text": "mine now"}"#),
        ),
        (
            "POST",
            "/v1/conversations/{id}/escalate",
            Res::Conversation,
            None,
        ),
        (
            "POST",
            "/v1/conversations/{id}/close",
            Res::Conversation,
            None,
        ),
        (
            "POST",
            "/v1/messages/{id}/feedback",
            Res::Message,
            Some(r#"{"rating": "down"}"#),
        ),
    ] {
        let fix = fixture(&app).await;
        let url = format!("{}{}", app.base, fill(path, res, &fix));
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let mut req = app.client.request(method.clone(), &url).bearer_auth(&peer);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("the server answers");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        cells += 1;
        if status != StatusCode::NOT_FOUND || !text.contains("\"not_found\"") {
            failures.push(format!("{method} {path} as another agent: {status} {text}"));
        }
        // The owner's work is untouched.
        let (status, action) = app
            .send(app.get(&fill("/v1/actions/{id}", Res::Action, &fix), &app.agent))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, conv) = app
            .send(app.get(
                &fill("/v1/conversations/{id}", Res::Conversation, &fix),
                &app.agent,
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
        if action["status"] != "pending" || conv["state"] != "ai" {
            failures.push(format!(
                "{method} {path} changed the owner's work: {action} {conv}"
            ));
        }
    }
    println!(
        "authz: {cells} cross-agent cells checked, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
