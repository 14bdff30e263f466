//! The reviewer console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over WebDriver against the real server. Each test signs in through
//! the login form and works the pages with the mouse and the keyboard, while an agent uses the
//! API at the same time. Screenshots of every page land in `target/screenshots/`.
//!
//! Without Chromium or chromedriver these tests fail (they never skip): install them with
//! `apt-get install -y chromium chromium-driver`, as `.ci/run` does.

mod harness;
mod knowledge;
mod learning;

use harness::{Console, PASSWORD, POLICY};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// The open review ids on the inbox page, in display order.
async fn inbox_ids(c: &Console) -> Vec<String> {
    let v = c
        .js("return Array.from(document.querySelectorAll('[data-testid=\"inbox-row\"]')).map(r => r.dataset.reviewId);")
        .await;
    serde_json::from_value(v).unwrap_or_default()
}

#[tokio::test]
async fn sign_in_and_a_wrong_password_is_refused() {
    let c = Console::start().await;
    c.goto("/").await;
    c.wait_path("/login").await;
    c.testid("login-form").await;
    c.screenshot("login").await;

    c.login("ann", "not the password").await;
    let error = c.text("login-error").await;
    assert!(
        error.contains("workspace, username or password is not right"),
        "{error}"
    );
    // A wrong username reads exactly the same: nothing says which part was wrong.
    c.login("nobody", PASSWORD).await;
    assert_eq!(c.text("login-error").await, error);
    // The form keeps what was typed, except the password.
    let kept = c
        .testid("login-username")
        .await
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("nobody"));
    c.screenshot("login-error").await;

    c.login("ann", PASSWORD).await;
    c.wait_path("/").await;
    c.testid("inbox-table").await;
    assert!(c.text("current-user").await.contains("ann"));
    // The session cookie is out of the page's reach.
    assert_eq!(
        c.js("return document.cookie.includes('loopgate_session');")
            .await,
        Value::Bool(false)
    );

    // Signing out ends the session: the console asks to sign in again.
    c.click("logout").await;
    c.wait_path("/login").await;
    c.goto("/stats").await;
    c.wait_path("/login").await;
    assert!(
        c.path().await.contains("next=%2Fstats"),
        "{}",
        c.path().await
    );
    // ...and comes back to where it was going.
    c.fill("login-username", "ann").await;
    c.fill("login-password", PASSWORD).await;
    c.click("login-submit").await;
    c.wait_path("/stats").await;
    c.finish().await;
}

#[tokio::test]
async fn a_new_review_appears_live_and_is_approved_from_the_keyboard() {
    let c = Console::start().await;
    c.put_policy(POLICY).await;
    // Some work already waiting, as on any morning.
    c.submit(json!({"name": "issue_refund", "arguments": {"order": "A-1001", "amount": 900, "currency": "EUR"},
        "confidence": 0.82, "context": {"customer_tier": "gold", "channel": "email"}}))
        .await;
    c.submit(json!({"name": "issue_refund", "arguments": {"order": "A-1002", "amount": 35, "currency": "EUR"},
        "confidence": 0.91, "context": {"customer_tier": "standard"}}))
        .await;
    c.submit(
        json!({"name": "update_shipping_address", "arguments": {"order": "A-0998", "city": "Lyon"},
        "confidence": 0.41}),
    )
    .await;
    c.submit(
        json!({"name": "close_account", "arguments": {"customer": "C-311"}, "confidence": 0.22}),
    )
    .await;

    c.sign_in_as("ann").await;
    c.wait_js(
        "the live stream",
        "document.body.classList.contains('is-live')",
    )
    .await;
    c.wait_js(
        "four rows",
        "document.querySelectorAll('[data-testid=\"inbox-row\"]').length === 4",
    )
    .await;
    // Most urgent first: the four-eyes refund has priority 5.
    let first = c.text_of("[data-testid=\"inbox-row\"]").await;
    assert!(first.contains("issue_refund"), "{first}");
    assert!(first.contains("0 of 2 approvals"), "{first}");

    // A marker that a reload would wipe out.
    c.js("window.__sameDocument = true; return null;").await;
    let (action, review) = c
        .submit(json!({"name": "issue_refund", "arguments": {"order": "A-1009", "amount": 80, "currency": "EUR"},
            "confidence": 0.77, "context": {"customer_tier": "standard", "reason": "damaged item"}}))
        .await;
    c.wait_js(
        "the new review in the inbox",
        &format!("document.querySelector('[data-review-id=\"{review}\"]')"),
    )
    .await;
    assert_eq!(
        c.js("return window.__sameDocument === true;").await,
        Value::Bool(true),
        "the page reloaded instead of updating live"
    );
    assert_eq!(c.text("inbox-count").await.split(' ').next(), Some("5"));
    assert!(c.text("live-status").await.contains("1 new review"));
    // The arrival highlight fades after two seconds; the picture shows the calm state.
    c.js("document.querySelectorAll('.is-new').forEach(r => r.classList.remove('is-new')); return null;")
        .await;
    let shot = c.screenshot("inbox").await;
    // The README's picture is refreshed on request only: tests do not write into the source tree.
    if std::env::var_os("LOOPGATE_UPDATE_SCREENSHOTS").is_some() {
        std::fs::copy(
            &shot,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console-inbox.png"),
        )
        .expect("copy the inbox screenshot for the README");
    }
    // A small laptop screen still shows the whole table.
    c.browser.set_window_size(1024, 768).await.unwrap();
    c.screenshot("inbox-1024").await;
    c.browser.set_window_size(1440, 900).await.unwrap();

    // j moves down the list until the new review is selected; Enter opens it.
    let position = inbox_ids(&c)
        .await
        .iter()
        .position(|id| *id == review)
        .expect("the new review is listed");
    for _ in 0..=position {
        c.press('j').await;
    }
    c.wait_js(
        "the new review selected",
        &format!("document.querySelector('tr.is-selected[data-review-id=\"{review}\"]')"),
    )
    .await;
    c.press('\u{E007}').await; // Enter
    c.wait_path(&format!("/reviews/{review}")).await;
    assert!(c.text("review-title").await.contains("issue_refund"));
    assert!(c.text("review-arguments").await.contains("A-1009"));
    assert!(c.text("review-rule").await.contains("refunds need review"));
    assert!(c.text("shortcuts").await.contains("approve"));
    // Opening it claimed it.
    assert_eq!(c.text("claim-state").await.split(',').next(), Some("You"));
    c.screenshot("review").await;

    // a approves, and the console moves on to the next review.
    c.press('a').await;
    c.wait_js(
        "the next page",
        &format!("!location.pathname.endsWith('{review}')"),
    )
    .await;
    assert!(c.text("flash").await.contains("Approved"));
    let a = c.action(&action).await;
    assert_eq!(a["status"], "approved", "{a}");
    assert_eq!(a["decision"]["by"], json!(["ann"]), "{a}");
    assert!(
        c.path().await.starts_with("/reviews/"),
        "went on to the next review"
    );
    c.finish().await;
}

#[tokio::test]
async fn edited_arguments_reach_the_agents_long_poll() {
    let c = Console::start().await;
    c.put_policy(POLICY).await;
    let (action, review) = c
        .submit(json!({"name": "issue_refund", "arguments": {"order": "A-2001", "amount": 250, "currency": "EUR"},
            "confidence": 0.66, "context": {"customer_tier": "gold"}}))
        .await;
    // The agent waits for the decision, as an SDK does.
    let poll = {
        let http = c.http.clone();
        let url = c.url(&format!("/v1/actions/{action}?wait=30"));
        let token = c.agent.clone();
        tokio::spawn(async move {
            let resp = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("long-poll");
            assert_eq!(resp.status(), StatusCode::OK);
            resp.json::<Value>().await.expect("json")
        })
    };

    c.sign_in_as("ann").await;
    c.goto(&format!("/reviews/{review}")).await;
    c.testid("decision-panel").await;
    c.press('e').await;
    c.wait_js(
        "the editor open and focused",
        "document.activeElement && document.activeElement.dataset.testid === 'edit-arguments'",
    )
    .await;

    // Invalid JSON: saving is disabled and the page says why.
    c.set_value(
        "edit-arguments",
        "{\n  \"order\": \"A-2001\",\n  \"amount\": 200\n  \"currency\": \"EUR\"\n}",
    )
    .await;
    c.wait_js(
        "the JSON error",
        "document.querySelector('[data-testid=\"json-status\"]').textContent.includes('Invalid JSON')",
    )
    .await;
    let status = c.text("json-status").await;
    assert!(status.contains("line 4"), "{status}");
    assert!(!c.testid("save-edit").await.is_enabled().await.unwrap());
    c.screenshot("review-edit-invalid").await;
    // An array is JSON, but not arguments.
    c.set_value("edit-arguments", "[1, 2]").await;
    c.wait_js(
        "the object error",
        "document.querySelector('[data-testid=\"json-status\"]').textContent.includes('JSON object')",
    )
    .await;
    assert!(!c.testid("save-edit").await.is_enabled().await.unwrap());

    let edited =
        json!({"order": "A-2001", "amount": 200, "currency": "EUR", "note": "partial refund"});
    c.set_value(
        "edit-arguments",
        &serde_json::to_string_pretty(&edited).unwrap(),
    )
    .await;
    c.wait_js(
        "valid JSON",
        "document.querySelector('[data-testid=\"json-status\"]').textContent.includes('Valid')",
    )
    .await;
    assert!(c.testid("save-edit").await.is_enabled().await.unwrap());
    assert!(!poll.is_finished(), "the agent is still waiting");
    c.click("save-edit").await;

    let answer = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the long-poll answers once the edit is saved")
        .expect("the polling task");
    assert_eq!(answer["status"], "approved", "{answer}");
    assert_eq!(answer["arguments"], edited, "{answer}");
    assert_eq!(answer["decision"]["verdict"], "edit", "{answer}");
    c.wait_js("the decision recorded", "!location.pathname.startsWith('/reviews/') || document.querySelector('[data-testid=\"flash\"]')").await;
    assert!(c.text("flash").await.contains("Edited"));
    c.finish().await;
}

#[tokio::test]
async fn a_claim_held_by_someone_else_is_shown_not_lost() {
    let c = Console::start().await;
    c.put_policy(POLICY).await;
    let (_, review) = c
        .submit(json!({"name": "issue_refund", "arguments": {"order": "A-3001", "amount": 60}}))
        .await;
    // bob took it through the API a moment ago.
    let bob = c
        .store
        .create_key("default", "bob", loopgate_domain::auth::Role::Reviewer)
        .await
        .unwrap()
        .token;
    let (s, _) = c
        .api(
            Method::POST,
            &format!("/v1/reviews/{review}/claim"),
            &bob,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    c.sign_in_as("ann").await;
    assert!(c.text("claimed-by").await.contains("bob"));
    c.goto(&format!("/reviews/{review}")).await;
    let conflict = c.text("claim-conflict").await;
    assert!(
        conflict.contains("bob is working on this review"),
        "{conflict}"
    );
    assert!(c.all("[data-testid=\"approve\"]").await.is_empty());
    assert_eq!(c.text("claim-state").await, "bob");
    c.screenshot("review-claimed-by-other").await;
    // The keyboard cannot decide it either.
    c.press('a').await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, r) = c
        .api(Method::GET, &format!("/v1/reviews/{review}"), &bob, None)
        .await;
    assert_eq!(r["status"], "claimed", "{r}");
    assert_eq!(r["claimed_by"], "bob", "{r}");
    c.finish().await;
}

#[tokio::test]
async fn take_over_a_conversation_reply_and_hand_back() {
    let c = Console::start().await;
    c.put_policy(POLICY).await;
    let (s, conv) = c
        .api(
            Method::POST,
            "/v1/conversations",
            &c.agent,
            Some(json!({"external_id": "chat-4471", "context": {"customer_tier": "gold", "channel": "chat"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{conv}");
    let cid = conv["id"].as_str().unwrap().to_owned();
    let post = |role: &'static str, text: &'static str, confidence: Option<f64>| {
        let mut body = json!({"role": role, "text": text});
        if let Some(x) = confidence {
            body["confidence"] = json!(x);
        }
        let path = format!("/v1/conversations/{cid}/messages");
        let c = &c;
        async move { c.api(Method::POST, &path, &c.agent, Some(body)).await }
    };
    assert_eq!(
        post("user", "Hi, my parcel never arrived.", None).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        post(
            "ai",
            "I'm sorry to hear that. Let me check the tracking for you.",
            Some(0.93)
        )
        .await
        .0,
        StatusCode::CREATED
    );

    c.sign_in_as("ann").await;
    c.click("nav-conversations").await;
    c.wait_path("/conversations").await;
    c.wait_js(
        "the live stream",
        "document.body.classList.contains('is-live')",
    )
    .await;
    let row = format!("[data-conversation-id=\"{cid}\"]");
    assert!(c.text_of(&row).await.contains("chat-4471"));
    c.screenshot("conversations").await;
    c.click_css(&format!("{row} a")).await;
    c.wait_path(&format!("/conversations/{cid}")).await;
    c.wait_js(
        "the live stream",
        "document.body.classList.contains('is-live')",
    )
    .await;

    // The customer writes; the transcript updates without a reload.
    assert_eq!(
        post("user", "It has been two weeks now.", None).await.0,
        StatusCode::CREATED
    );
    c.wait_js(
        "the new message",
        "document.querySelectorAll('[data-testid=\"message\"]').length === 3",
    )
    .await;
    // An AI answer about refunds is held as a draft, shown inline with its controls.
    let (s, held) = post(
        "ai",
        "I can offer a refund of the shipping costs.",
        Some(0.88),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(held["status"], "held", "{held}");
    c.wait_js(
        "the held draft",
        "document.querySelector('[data-testid=\"held-draft\"]')",
    )
    .await;
    c.screenshot("conversation").await;

    // Take over: the AI is paused, the reviewer answers.
    c.click("takeover").await;
    c.wait_js(
        "the human state",
        "document.querySelector('[data-testid=\"conversation-state\"]').textContent.includes('Human')",
    )
    .await;
    assert!(c.text("flash").await.contains("You have the conversation"));
    let (s, _) = post("ai", "Anything else I can help with?", Some(0.95)).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "the AI may not post while a human has it"
    );
    c.fill(
        "composer-text",
        "I have sent a replacement by express; it arrives tomorrow.",
    )
    .await;
    c.click("composer-send").await;
    c.wait_js(
        "the human reply in the transcript",
        "Array.from(document.querySelectorAll('[data-testid=\"message\"][data-role=\"human\"]')).some(m => m.textContent.includes('replacement by express'))",
    )
    .await;
    let (_, view) = c
        .api(
            Method::GET,
            &format!("/v1/conversations/{cid}"),
            &c.agent,
            None,
        )
        .await;
    let human: Vec<&Value> = view["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "human")
        .collect();
    assert_eq!(human.len(), 1, "{view}");
    assert_eq!(human[0]["author"], "ann");
    assert_eq!(human[0]["status"], "delivered");
    c.screenshot("conversation-human").await;

    // Hand back: the AI may answer again.
    c.click("handback").await;
    c.wait_js(
        "the AI state",
        "document.querySelector('[data-testid=\"conversation-state\"]').textContent.includes('AI')",
    )
    .await;
    assert!(c.all("[data-testid=\"composer\"]").await.is_empty());
    let (s, _) = post("ai", "Is there anything else I can do?", Some(0.95)).await;
    assert_eq!(s, StatusCode::CREATED);

    // Release the held draft from the transcript.
    c.wait_js(
        "the held draft after the reload",
        "document.querySelector('[data-testid=\"draft-release\"]')",
    )
    .await;
    c.click("draft-release").await;
    c.wait_js(
        "the draft released",
        "!document.querySelector('[data-testid=\"held-draft\"]') && document.querySelector('[data-testid=\"flash\"]')",
    )
    .await;
    let (_, view) = c
        .api(
            Method::GET,
            &format!("/v1/conversations/{cid}"),
            &c.agent,
            None,
        )
        .await;
    let draft = view["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == held["id"])
        .cloned()
        .unwrap();
    assert_eq!(draft["status"], "delivered", "{draft}");
    c.finish().await;
}

#[tokio::test]
async fn qa_samples_are_graded_and_stats_show_rates_queues_and_charts() {
    let c = Console::start().await;
    // Every automatic approval is also sampled for QA.
    c.put_policy(&POLICY.replace("sample = 0.0", "sample = 1.0"))
        .await;
    let reviewer = c
        .store
        .create_key("default", "bob", loopgate_domain::auth::Role::Reviewer)
        .await
        .unwrap()
        .token;
    for i in 0..6 {
        c.submit(json!({"name": "send_email", "arguments": {"to": format!("c{i}@example.com")}, "confidence": 0.9}))
            .await;
    }
    let mut reviews = Vec::new();
    for i in 0..3 {
        let (_, r) = c
            .submit(json!({"name": "issue_refund", "arguments": {"order": format!("S-{i}"), "amount": 40}}))
            .await;
        reviews.push(r);
    }
    for (r, verdict) in reviews.iter().take(2).zip(["approve", "reject"]) {
        let (s, v) = c
            .api(
                Method::POST,
                &format!("/v1/reviews/{r}/decision"),
                &reviewer,
                Some(json!({"verdict": verdict, "comment": "checked"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    // Grade two QA samples from the keyboard: one incorrect (with labels), one correct.
    c.sign_in_as("ann").await;
    c.goto("/?kind=qa").await;
    c.wait_js(
        "six QA samples",
        "document.querySelectorAll('[data-testid=\"inbox-row\"][data-kind=\"qa\"]').length === 6",
    )
    .await;
    c.click("start-next").await;
    c.testid("grade-form").await;
    assert!(c.text("shortcuts").await.contains("incorrect"));
    assert!(c.text("action-name").await.contains("send_email"));
    c.press('r').await;
    c.wait_js(
        "incorrect chosen, comment focused",
        "document.querySelector('[data-testid=\"grade-incorrect\"]').checked && document.activeElement.dataset.testid === 'grade-comment'",
    )
    .await;
    c.fill("grade-comment", "Wrong recipient domain.").await;
    c.fill("grade-labels", "wrong-recipient, email").await;
    c.screenshot("review-qa").await;
    c.click("grade-submit").await;
    c.wait_js(
        "the next sample",
        "document.querySelector('[data-testid=\"flash\"]')",
    )
    .await;
    assert!(c.text("flash").await.contains("Grade saved"));
    c.testid("grade-form").await;
    let second = c.path().await;
    c.press('a').await;
    c.wait_js(
        "the second grade saved",
        &format!(
            "location.pathname + location.search !== '{second}' && document.querySelector('[data-testid=\"flash\"]')"
        ),
    )
    .await;
    let graded: Vec<Value> = {
        let (_, list) = c
            .api(
                Method::GET,
                "/v1/reviews?status=decided&kind=qa",
                &reviewer,
                None,
            )
            .await;
        list["reviews"].as_array().cloned().unwrap_or_default()
    };
    let mut outcomes: Vec<String> = graded
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes.len(), 2, "{graded:?}");
    assert!(
        outcomes[0].contains("correct") && outcomes[1].contains("incorrect"),
        "{outcomes:?}"
    );

    c.click("nav-stats").await;
    c.wait_path("/stats").await;
    let automation = c.text("stat-automation").await;
    assert!(automation.contains("66.7%"), "{automation}");
    assert!(automation.contains("6 of 9"), "{automation}");
    assert!(automation.contains("95% CI"), "{automation}");
    let overrides = c.text("stat-override").await;
    assert!(overrides.contains("50.0%"), "{overrides}");
    assert!(c.text("stat-queue").await.contains('5'));
    let qa = c.text("stat-qa").await;
    assert!(qa.to_lowercase().contains("qa accuracy"), "{qa}");
    assert!(qa.contains("50.0%") && qa.contains("1 of 2"), "{qa}");
    assert!(c.text("stat-latency").await.contains("p95"));
    c.css("[data-testid=\"chart-volume\"] svg rect.bar-auto")
        .await;
    c.css("[data-testid=\"chart-rates\"] svg").await;
    assert!(c.text("stats-queues").await.contains("finance"));
    c.screenshot("stats").await;
    c.finish().await;
}

/// A policy whose third line has a CEL syntax error.
const BROKEN_POLICY: &str =
    "[[rule]]\nname = \"refunds\"\nwhen = 'action.name == '\nthen = \"review\"\n";

#[tokio::test]
async fn an_admin_saves_a_policy_after_fixing_its_errors_and_manages_the_workspace() {
    let c = Console::start().await;
    c.put_policy(POLICY).await;
    c.sign_in_as("root").await;
    c.click("nav-admin").await;
    c.wait_path("/admin/policy").await;
    assert!(c.text("policy-version").await.contains("version 1"));

    // An error is listed with its line and column, and nothing is saved.
    c.set_value("policy-text", BROKEN_POLICY).await;
    c.click("policy-save").await;
    let errors = c.text("policy-errors").await;
    let expected =
        loopgate_domain::policy::Policy::parse(BROKEN_POLICY).expect_err("the policy is broken");
    let first = &expected[0];
    assert!(
        errors.contains(&format!("Line {}, column {}", first.line, first.column)),
        "{errors}"
    );
    assert_eq!(first.line, 3, "{first:?}");
    assert!(c.text("policy-version").await.contains("version 1"));
    // What was typed is still there to fix.
    let kept = c.testid("policy-text").await.prop("value").await.unwrap();
    assert_eq!(kept.as_deref(), Some(BROKEN_POLICY));
    c.screenshot("admin-policy-errors").await;

    // Fixed, it is saved as a new version and in force at once.
    let fixed = BROKEN_POLICY.replace("'action.name == '", "'action.name == \"issue_refund\"'");
    c.set_value("policy-text", &fixed).await;
    c.click("policy-save").await;
    assert!(c.text("policy-saved").await.contains("version 2"));
    let resp = c
        .http
        .get(c.url("/v1/policy"))
        .bearer_auth(&c.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["loopgate-policy-version"], "2");
    assert_eq!(resp.text().await.unwrap(), fixed);
    let (_, routed) = c
        .api(
            Method::POST,
            "/v1/actions",
            &c.agent,
            Some(json!({"name": "issue_refund", "arguments": {"amount": 1}})),
        )
        .await;
    assert_eq!(routed["rule"], "refunds", "{routed}");
    c.screenshot("admin-policy").await;

    // Keys: the token is shown once, and works.
    c.click("admin-tab-keys").await;
    c.wait_path("/admin/keys").await;
    c.fill("key-name", "support-bot").await;
    c.click("key-create").await;
    let token = c
        .testid("new-token")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(token.starts_with("lg_"), "{token}");
    let (s, _) = c
        .api(
            Method::POST,
            "/v1/actions",
            &token,
            Some(json!({"name": "send_email", "arguments": {}, "confidence": 0.9})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    c.screenshot("admin-keys").await;

    // Users.
    c.click("admin-tab-users").await;
    c.wait_path("/admin/users").await;
    c.fill("user-name", "carol").await;
    c.fill("user-password", "short").await;
    c.js("document.querySelector('[data-testid=\"user-password\"]').removeAttribute('minlength'); return null;")
        .await;
    c.click("user-create").await;
    assert!(c.text("form-error").await.contains("8 to 1024"));
    c.fill("user-password", "a long enough password").await;
    c.click("user-create").await;
    assert!(c.text("flash").await.contains("User created"));
    assert_eq!(c.all("[data-testid=\"user-row\"]").await.len(), 4);
    c.screenshot("admin-users").await;

    // Webhooks: a generated secret is shown once.
    c.click("admin-tab-webhooks").await;
    c.wait_path("/admin/webhooks").await;
    c.fill("webhook-url", "http://127.0.0.1:9/hooks/loopgate")
        .await;
    c.fill("webhook-events", "review.*, action.decided").await;
    c.click("webhook-create").await;
    let secret = c
        .testid("new-secret")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(c.all("[data-testid=\"webhook\"]").await.len(), 1);
    c.screenshot("admin-webhooks").await;

    // The audit log verifies.
    c.click("admin-tab-audit").await;
    c.wait_path("/admin/audit").await;
    let verify = c.testid("audit-verify").await;
    assert_eq!(
        verify.attr("data-ok").await.unwrap().as_deref(),
        Some("true")
    );
    assert!(!c.all("[data-testid=\"audit-row\"]").await.is_empty());
    c.screenshot("admin-audit").await;
    c.finish().await;
}

#[tokio::test]
async fn a_reviewer_cannot_open_the_admin_pages() {
    let c = Console::start().await;
    c.sign_in_as("ann").await;
    assert!(c.all("[data-testid=\"nav-admin\"]").await.is_empty());
    for page in [
        "/admin/policy",
        "/admin/keys",
        "/admin/users",
        "/admin/webhooks",
        "/admin/audit",
        "/admin/proposals",
    ] {
        c.goto(page).await;
        let message = c.text("error-message").await;
        assert!(message.contains("for admins"), "{page}: {message}");
    }
    c.screenshot("forbidden").await;
    c.finish().await;
}

#[tokio::test]
async fn posts_without_the_csrf_token_are_refused_and_sessions_expire() {
    let c = Console::start().await;
    c.put_policy(POLICY).await;
    let (action, review) = c
        .submit(json!({"name": "issue_refund", "arguments": {"order": "A-4001", "amount": 20}}))
        .await;
    c.login("ann", PASSWORD).await;
    c.wait_path("/").await;

    // The cookie as the browser holds it.
    let cookie = c
        .browser
        .get_named_cookie("loopgate_session")
        .await
        .expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Lax)");
    assert_eq!(cookie.path(), Some("/"));
    assert_ne!(cookie.secure(), Some(true), "plain http here");
    let session = format!("loopgate_session={}", cookie.value());
    let csrf = c
        .js("return document.querySelector('meta[name=\"csrf-token\"]').content;")
        .await
        .as_str()
        .unwrap()
        .to_owned();

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = |body: String, header: Option<&str>| {
        let mut req = http
            .post(c.url(&format!("/reviews/{review}/decision")))
            .header("cookie", &session)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(h) = header {
            req = req.header("x-csrf-token", h);
        }
        req.send()
    };
    let r = post("verdict=approve".into(), None).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post("verdict=approve&csrf=forged".into(), None)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post("verdict=approve".into(), Some("forged"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(c.action(&action).await["status"], "pending");
    // With the session's token it goes through.
    let r = post(format!("verdict=approve&csrf={csrf}"), None)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(c.action(&action).await["status"], "approved");

    // A CSRF failure in the browser is a clear page, not a crash.
    c.goto("/").await;
    c.js(
        "document.querySelector('form[action=\"/logout\"] input[name=\"csrf\"]').value = 'stale'; \
          document.querySelector('[data-testid=\"logout\"]').click(); return null;",
    )
    .await;
    assert!(c.text("error-message").await.contains("security token"));

    // An expired session is no session: pages send to the login form, fragments answer 401.
    let (user, _) = c
        .store
        .find_user("default", "ann")
        .await
        .unwrap()
        .expect("ann");
    let short = c.store.create_session(&user, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let expired = format!("loopgate_session={}", short.token);
    let r = http
        .get(c.url("/"))
        .header("cookie", &expired)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login");
    let r = http
        .get(c.url("/console/inbox/rows"))
        .header("cookie", &expired)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Bad input is a page with words, never a 500.
    for path in [
        "/reviews/not-an-id",
        "/conversations/12345",
        "/?kind=nonsense&queue=%20%20",
        "/stats?window=forever",
        "/admin/audit?after=-5",
    ] {
        let r = http
            .get(c.url(path))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success() || r.status().is_client_error(),
            "{path}: {}",
            r.status()
        );
    }
    let r = http
        .post(c.url(&format!("/reviews/{review}/decision")))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("verdict=edit&arguments=%7Bbroken&csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    c.finish().await;
}
