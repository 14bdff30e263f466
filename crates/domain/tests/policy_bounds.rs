//! Hostile policies and hostile items: every rule's work is bounded by the item's size before it
//! runs, so a rule that would take too long is refused (the item goes to review naming the rule)
//! while ordinary loops over large lists still run, and expressions too deep or too costly for
//! any item are rejected when the policy is parsed.

use loopgate_domain::policy::{Outcome, Policy, PolicyInput, SubjectKind, MAX_EXPRESSION_DEPTH};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn policy(when: &str) -> Policy {
    let text = format!(
        "[[rule]]\nname = \"hostile\"\napplies_to = \"action\"\nwhen = {}\nthen = \"approve\"\n",
        toml_string(when)
    );
    match Policy::parse(&text) {
        Ok(p) => p,
        Err(errors) => panic!("policy should parse: {errors:?}"),
    }
}

fn parse_errors(when: &str) -> Vec<String> {
    let text = format!(
        "[[rule]]\nname = \"hostile\"\nwhen = {}\nthen = \"approve\"\n",
        toml_string(when)
    );
    match Policy::parse(&text) {
        Ok(_) => panic!("`{when}` should be rejected"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn action(arguments: &Value) -> PolicyInput<'_> {
    PolicyInput {
        kind: SubjectKind::Action,
        action_name: "bulk_update",
        arguments,
        message_text: "",
        confidence: Some(0.9),
        context: &Value::Null,
        agent: "fuzzer",
        conversation_state: "",
        conversation_turns: 0,
    }
}

/// `{"items": [{"id": i, "price": 5}, ...]}`
fn items(count: usize) -> Value {
    let items: Vec<Value> = (0..count).map(|i| json!({"id": i, "price": 5})).collect();
    json!({ "items": items })
}

/// Runs the policy and returns its routing and how long it took.
fn timed(policy: &Policy, arguments: &Value) -> (loopgate_domain::policy::Routing, Duration) {
    let started = Instant::now();
    let routing = policy.evaluate(&action(arguments));
    (routing, started.elapsed())
}

#[test]
fn a_quadratic_rule_over_30000_items_is_refused_quickly() {
    let policy = policy("action.arguments.items.all(x, action.arguments.items.all(y, x == y))");
    let (routing, took) = timed(&policy, &items(30_000));
    assert_eq!(routing.outcome, Outcome::Review);
    assert_eq!(routing.rule.as_deref(), Some("hostile"));
    assert!(
        routing
            .reason
            .contains("rule \"hostile\" was not evaluated"),
        "{}",
        routing.reason
    );
    assert!(routing.reason.contains("fail safe"), "{}", routing.reason);
    // Refused before running: the time is building the item, not 900 million comparisons.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn the_same_quadratic_rule_still_runs_on_a_small_item() {
    let policy = policy("action.arguments.items.all(x, action.arguments.items.exists(y, x == y))");
    let (routing, _) = timed(&policy, &items(20));
    assert_eq!(routing.outcome, Outcome::Approve, "{}", routing.reason);
}

#[test]
fn a_linear_loop_over_a_large_list_still_runs() {
    let policy = policy("action.arguments.items.all(x, x.price < 100 && x.id >= 0)");
    let (routing, _) = timed(&policy, &items(30_000));
    assert_eq!(routing.outcome, Outcome::Approve, "{}", routing.reason);

    // Comparing each element with one field of the item is linear too.
    let policy = policy_with("action.arguments.items.all(x, x.price <= action.arguments.limit)");
    let mut arguments = items(30_000);
    arguments["limit"] = json!(10);
    let (routing, _) = timed(&policy, &arguments);
    assert_eq!(routing.outcome, Outcome::Approve, "{}", routing.reason);

    // Nested loops whose inner range is the outer element visit each value once.
    let policy = policy_with("action.arguments.orders.all(o, o.lines.all(l, l.qty > 0))");
    let orders: Vec<Value> = (0..3_000)
        .map(|_| json!({"lines": [{"qty": 1}, {"qty": 2}, {"qty": 3}]}))
        .collect();
    let (routing, _) = timed(&policy, &json!({ "orders": orders }));
    assert_eq!(routing.outcome, Outcome::Approve, "{}", routing.reason);
}

fn policy_with(when: &str) -> Policy {
    policy(when)
}

#[test]
fn a_search_of_a_large_string_on_every_turn_is_refused() {
    // `big.contains(x)` reads all of `big` for each element: quadratic in the item.
    let policy =
        policy("action.arguments.items.all(x, action.arguments.big.contains(string(x.id)))");
    let mut arguments = items(20_000);
    arguments["big"] = json!("a".repeat(200_000));
    let (routing, took) = timed(&policy, &arguments);
    assert_eq!(routing.outcome, Outcome::Review);
    assert!(
        routing.reason.contains("not evaluated"),
        "{}",
        routing.reason
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn a_string_blown_up_by_replace_is_refused() {
    // `s.replace('', s)` is |s|² characters: 10 GB for a 100 kB string.
    let policy = policy("size(action.arguments.s.replace('', action.arguments.s)) > 0");
    let arguments = json!({ "s": "x".repeat(100_000) });
    let (routing, took) = timed(&policy, &arguments);
    assert_eq!(routing.outcome, Outcome::Review);
    assert!(
        routing.reason.contains("not evaluated"),
        "{}",
        routing.reason
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // On a small string it is harmless and runs.
    let (routing, _) = timed(&policy, &json!({ "s": "abc" }));
    assert_eq!(routing.outcome, Outcome::Approve, "{}", routing.reason);
}

#[test]
fn a_refused_rule_never_lets_a_later_rule_approve() {
    let text = r#"
[[rule]]
name = "quadratic"
applies_to = "action"
when = "action.arguments.items.exists(x, action.arguments.items.exists(y, x.id == y.id + 100000))"
then = "block"

[[rule]]
name = "everything else"
when = "true"
then = "approve"
"#;
    let policy = Policy::parse(text).expect("parses");
    let (routing, _) = timed(&policy, &items(30_000));
    assert_eq!(routing.outcome, Outcome::Review);
    assert_eq!(routing.rule.as_deref(), Some("quadratic"));
}

#[test]
fn deep_nesting_is_rejected_at_parse_time() {
    let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
    let errors = parse_errors(&deep);
    assert!(errors[0].contains("nests brackets deeper"), "{errors:?}");

    // Within the bracket limit, but a tree deeper than the evaluator's stack allows.
    let chain = (0..MAX_EXPRESSION_DEPTH + 8)
        .map(|_| "[")
        .collect::<String>()
        + "1"
        + &"]".repeat(MAX_EXPRESSION_DEPTH + 8);
    let errors = parse_errors(&chain);
    assert!(errors[0].contains("nested too deeply"), "{errors:?}");
    // Positioned: line 3 is the `when`.
    assert!(errors[0].starts_with("3:"), "{errors:?}");
}

#[test]
fn rules_too_costly_for_any_item_are_rejected_at_parse_time() {
    // Each replace multiplies the length by 31: 31^12 characters from a literal.
    let lit = "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'";
    let mut expr = lit.to_string();
    for _ in 0..12 {
        expr = format!("{expr}.replace('', {lit})");
    }
    let errors = parse_errors(&format!("size({expr}) > 0"));
    assert!(errors[0].contains("too much work"), "{errors:?}");
    assert!(errors[0].starts_with("3:8:"), "{errors:?}");

    // Four nested loops over the item: N^4 is too much even for a small item.
    let errors = parse_errors(
        "context.all(a, context.all(b, context.all(c, context.all(d, a == b && c == d))))",
    );
    assert!(errors[0].contains("too much work"), "{errors:?}");
}

#[test]
fn comprehensions_building_huge_lists_are_bounded() {
    // map over map: N² elements, then compared.
    let policy = policy("action.arguments.items.map(x, action.arguments.items).map(y, y) == []");
    let (routing, took) = timed(&policy, &items(30_000));
    assert_eq!(routing.outcome, Outcome::Review);
    assert!(
        routing.reason.contains("not evaluated"),
        "{}",
        routing.reason
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn many_costly_rules_share_one_budget_per_item() {
    // Each rule alone is under the per-rule limit on this item; together they are not.
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\napplies_to = \"action\"\n\
             when = \"action.arguments.items.exists(x, action.arguments.items.exists(y, x.id == y.id + {}))\"\n\
             then = \"block\"\n\n",
            1_000_000 + i
        ));
    }
    text.push_str("[[rule]]\nname = \"rest\"\nwhen = \"true\"\nthen = \"approve\"\n");
    let policy = Policy::parse(&text).expect("parses");
    let arguments = items(100);
    let bounds = policy.work_bounds(&action(&arguments));
    assert!(
        bounds[0].1 <= loopgate_domain::policy::MAX_RULE_WORK,
        "{bounds:?}"
    );
    let (routing, _) = timed(&policy, &arguments);
    assert_eq!(routing.outcome, Outcome::Review, "{}", routing.reason);
    assert!(
        routing.reason.contains("with the rules before it"),
        "{}",
        routing.reason
    );
}
