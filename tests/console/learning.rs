//! The learning loop in the console: calibration, per-slice tables and the tuner on `/stats`;
//! "approve and don't ask again" on a review; an admin putting the proposed rule in force.

use crate::harness::Console;
use loopgate_domain::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Submits `name` at `confidence` as the agent and decides its review through the API as
/// `reviewer` (`approve`, `reject` or `edit`).
async fn judged(c: &Console, reviewer: &str, name: &str, confidence: f64, verdict: &str) {
    let (_, review) = c
        .submit(json!({"name": name, "arguments": {"order": 1}, "confidence": confidence}))
        .await;
    assert!(
        !review.is_empty(),
        "{name} at {confidence} was not reviewed"
    );
    let decision = match verdict {
        "edit" => json!({"verdict": "edit", "arguments": {"order": 2}}),
        "reject" => json!({"verdict": "reject", "comment": "wrong"}),
        v => json!({"verdict": v}),
    };
    let (s, v) = c
        .api(
            Method::POST,
            &format!("/v1/reviews/{review}/decision"),
            reviewer,
            Some(decision),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn reviewer_key(c: &Console) -> String {
    c.store
        .create_key("default", "carol", Role::Reviewer)
        .await
        .expect("a reviewer key")
        .token
}

#[tokio::test]
async fn stats_show_calibration_slices_and_the_tuner_recommends_a_threshold() {
    let c = Console::start().await;
    c.put_policy(
        r#"
[[rule]]
name = "refunds to finance"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "review"
queue = "finance"

[[rule]]
name = "the rest reviewed"
when = "true"
then = "review"
"#,
    )
    .await;
    let reviewer = reviewer_key(&c).await;
    // 40 approved lookups at 0.90..0.94 (a 95% Wilson lower bound of 0.912) and 4 refunds at
    // 0.5x that humans rejected or edited: at a 0.9 target the threshold is exactly 0.9.
    for i in 0..40 {
        judged(
            &c,
            &reviewer,
            "lookup_order",
            0.9 + i as f64 * 0.001,
            "approve",
        )
        .await;
    }
    for i in 0..4 {
        let verdict = if i % 2 == 0 { "reject" } else { "edit" };
        judged(
            &c,
            &reviewer,
            "issue_refund",
            0.5 + i as f64 * 0.01,
            verdict,
        )
        .await;
    }

    c.sign_in_as("ann").await;
    c.goto("/stats?window=1h").await;
    // Two bands hold graded items: 0.9–1.0 (all right) and 0.5–0.6 (all wrong).
    c.css("[data-testid=\"chart-calibration\"] svg line.diagonal")
        .await;
    let bars = c
        .all("[data-testid=\"chart-calibration\"] svg rect.bar-calibration")
        .await;
    assert_eq!(bars.len(), 2);
    assert_eq!(c.all("[data-testid=\"calibration-row\"]").await.len(), 10);
    let band = c
        .js("return document.querySelector('[data-testid=\"chart-calibration\"] g.band[data-count=\"40\"]') !== null;")
        .await;
    assert_eq!(band, Value::Bool(true));

    let agents = c.text("stats-agents").await;
    assert!(agents.contains("bot") && agents.contains("44"), "{agents}");
    let actions = c.text("stats-actions").await;
    assert!(
        actions.contains("lookup_order") && actions.contains("issue_refund"),
        "{actions}"
    );
    let refunds = c
        .text_of("[data-testid=\"stats-actions\"] tr[data-key=\"issue_refund\"]")
        .await;
    assert!(
        refunds.contains("100.0%") && refunds.contains("4/4"),
        "{refunds}"
    );
    let finance = c
        .text_of("[data-testid=\"stats-queues\"] tr[data-queue=\"finance\"]")
        .await;
    assert!(finance.contains("100.0%"), "{finance}");
    c.js("document.querySelector('[data-testid=\"chart-calibration\"]').scrollIntoView(); return null;")
        .await;
    c.screenshot("stats-learning").await;

    // The tuner runs only when asked.
    assert!(c.all("[data-testid=\"tune-result\"]").await.is_empty());
    c.fill("tune-target", "0.9").await;
    c.click("tune-submit").await;
    c.testid("tune-result").await;
    assert_eq!(c.text("tune-threshold").await, "0.9");
    let automation = c.text("tune-automation").await;
    assert!(
        automation.contains("90.9%") && automation.contains("44 items"),
        "{automation}"
    );
    assert!(c.text("tune-accuracy").await.contains("40 of 40"));
    assert!(c
        .text("tune-evidence")
        .await
        .contains("44 items, 44 graded"));
    // The window and the form's values survive the round trip.
    assert!(c.path().await.contains("window=1h"));
    c.screenshot("stats-tune").await;

    // Narrowed to the action that was always wrong: no recommendation, and why.
    c.fill("tune-action", "issue_refund").await;
    c.click("tune-submit").await;
    c.css("[data-testid=\"tune-result\"][data-status=\"insufficient_evidence\"]")
        .await;
    assert!(c.text("tune-reason").await.contains("too little evidence"));

    // A bad target is a message on the page, not a crash.
    c.fill("tune-target", "2").await;
    c.click("tune-submit").await;
    assert!(c.text("form-error").await.contains("target accuracy"));
    c.finish().await;
}

const POLICY_WITH_LOOKUPS: &str = r#"
[[rule]]
name = "confident refunds run"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "approve"
threshold = "auto"
target_accuracy = 0.95
min = 0.7
max = 0.99

[[rule]]
name = "lookups reviewed"
applies_to = "action"
when = 'action.name == "lookup_order"'
then = "review"

[[rule]]
name = "the rest reviewed"
when = "true"
then = "review"
"#;

#[tokio::test]
async fn dont_ask_again_proposes_a_rule_that_an_admin_puts_in_force() {
    let c = Console::start().await;
    c.put_policy(POLICY_WITH_LOOKUPS).await;
    let reviewer = reviewer_key(&c).await;
    for confidence in [0.90, 0.92, 0.95] {
        judged(&c, &reviewer, "lookup_order", confidence, "approve").await;
    }
    judged(&c, &reviewer, "lookup_order", 0.96, "reject").await;
    let (_, review) = c
        .submit(json!({"name": "lookup_order", "arguments": {"order": 7}, "confidence": 0.87}))
        .await;

    // The reviewer approves and asks not to be asked again.
    c.sign_in_as("ann").await;
    c.goto(&format!("/reviews/{review}")).await;
    let button = c.text("approve-dont-ask-again").await;
    assert!(button.contains("don't ask again"), "{button}");
    c.screenshot("review-approval").await;
    c.click("approve-dont-ask-again").await;
    c.testid("proposal-made").await;
    assert!(c.text("flash").await.contains("Approved"));
    let name = c.text("proposal-rule-name").await;
    assert!(
        name.contains("bot may lookup_order unreviewed at confidence >= 0.85"),
        "{name}"
    );
    // Five lookups of this agent (the one just approved too); the rule lets all five through,
    // one of which a human had rejected.
    let backtest = c.text("proposal-backtest").await;
    assert!(
        backtest.contains("5 items") && backtest.contains("let 5 of them through"),
        "{backtest}"
    );
    assert!(backtest.contains("1 of which"), "{backtest}");
    assert_eq!(c.text("proposal-status").await, "pending");
    c.screenshot("review-dont-ask-again").await;
    // The decision itself is recorded.
    let (_, r) = c
        .api(
            Method::GET,
            &format!("/v1/reviews/{review}"),
            &c.admin_key,
            None,
        )
        .await;
    assert_eq!(r["outcome"], "approved", "{r}");
    // Nothing changed yet.
    let (_, still_reviewed) = c
        .submit(json!({"name": "lookup_order", "arguments": {}, "confidence": 0.9}))
        .await;
    assert!(
        !still_reviewed.is_empty(),
        "nothing is in force before an admin decides"
    );

    // An admin sees it waiting, with its place in the policy and the known-bad item.
    c.sign_in_as("root").await;
    c.click("nav-admin").await;
    c.wait_path("/admin/policy").await;
    assert!(c.text("pending-proposals").await.contains('1'));
    let auto = c.text("auto-threshold").await;
    assert!(
        auto.contains("0.99") && auto.contains("target 0.95"),
        "{auto}"
    );
    c.click("recompute-thresholds").await;
    assert!(c.text("flash").await.contains("recomputed"));

    c.click("admin-tab-proposals").await;
    c.wait_path("/admin/proposals").await;
    assert_eq!(c.text("pending-count").await, "1");
    assert_eq!(c.text("proposal-name").await, name);
    assert!(c.text("proposal-place").await.contains("lookups reviewed"));
    assert!(c.text("proposal-toml").await.contains("threshold = 0.85"));
    assert_eq!(c.text("proposal-known-bad").await, "1");
    assert_eq!(c.all("[data-testid=\"known-bad-row\"]").await.len(), 1);
    let id = c
        .testid("proposal")
        .await
        .attr("data-proposal-id")
        .await
        .expect("attr")
        .expect("the proposal's id");
    c.screenshot("admin-proposals").await;
    c.click("proposal-approve").await;
    assert!(c.text("flash").await.contains("Rule approved"));
    assert_eq!(c.text("pending-count").await, "0");
    let decided = c.text("decided-proposals").await;
    assert!(
        decided.contains("approved") && decided.contains('2'),
        "{decided}"
    );

    // The policy has a new version with the rule, just before the one it bypasses, in force.
    let resp = c
        .http
        .get(c.url("/v1/policy"))
        .bearer_auth(&c.admin_key)
        .send()
        .await
        .expect("GET /v1/policy");
    assert_eq!(resp.headers()["loopgate-policy-version"], "2");
    let text = resp.text().await.unwrap_or_default();
    let (rule_at, bypassed_at) = (
        text.find(&name).expect("the rule is in the policy"),
        text.find("name = \"lookups reviewed\"")
            .expect("still there"),
    );
    assert!(rule_at < bypassed_at, "{text}");
    let (_, routed) = c
        .api(
            Method::POST,
            "/v1/actions",
            &c.agent,
            Some(json!({"name": "lookup_order", "arguments": {}, "confidence": 0.9})),
        )
        .await;
    assert_eq!(routed["status"], "approved", "{routed}");
    assert_eq!(routed["rule"], name.as_str(), "{routed}");

    // Deciding it again is refused with a clear message (409), whatever the path.
    let answer = c
        .js(&format!(
            "return (async () => {{ \
             const r = await fetch('/admin/proposals/{id}/reject', {{method: 'POST', \
             headers: {{'X-CSRF-Token': document.querySelector('meta[name=\"csrf-token\"]').content}}}}); \
             return [r.status, await r.text()]; }})();"
        ))
        .await;
    assert_eq!(answer[0], 409, "{answer}");
    assert!(
        answer[1]
            .as_str()
            .unwrap_or("")
            .contains("already approved"),
        "{answer}"
    );
    c.finish().await;
}
