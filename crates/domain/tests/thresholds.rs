//! Confidence thresholds on rules: fixed floors and progressive autonomy (`threshold = "auto"`).

use loopgate_domain::policy::{Outcome, Policy, PolicyInput, SubjectKind, Threshold};
use serde_json::json;
use std::collections::HashMap;

fn input<'a>(
    args: &'a serde_json::Value,
    ctx: &'a serde_json::Value,
    c: Option<f64>,
) -> PolicyInput<'a> {
    PolicyInput {
        kind: SubjectKind::Action,
        action_name: "lookup_order",
        arguments: args,
        message_text: "",
        confidence: c,
        context: ctx,
        agent: "bot",
        conversation_state: "ai",
        conversation_turns: 0,
    }
}

const AUTO: &str = r#"
[[rule]]
name = "confident lookups run"
applies_to = "action"
when = 'action.name == "lookup_order"'
then = "approve"
threshold = "auto"
target_accuracy = 0.98
min = 0.6
max = 0.95
"#;

#[test]
fn a_fixed_threshold_is_a_confidence_floor() {
    let p = Policy::parse(
        "[[rule]]\nname = \"r\"\nwhen = \"true\"\nthen = \"approve\"\nthreshold = 0.8\n",
    )
    .expect("parses");
    let (a, c) = (json!({}), json!({}));
    assert_eq!(
        p.evaluate(&input(&a, &c, Some(0.8))).outcome,
        Outcome::Approve
    );
    assert_eq!(
        p.evaluate(&input(&a, &c, Some(0.79))).outcome,
        Outcome::Review
    );
    // No confidence is -1: below every floor.
    assert_eq!(p.evaluate(&input(&a, &c, None)).outcome, Outcome::Review);
}

#[test]
fn an_auto_threshold_starts_cautious_and_follows_the_server_within_bounds() {
    let p = Policy::parse(AUTO).expect("parses");
    assert!(p.has_auto_thresholds());
    assert!(matches!(
        p.rules()[0].threshold,
        Some(Threshold::Auto { current, .. }) if current == 0.95
    ));
    let (a, c) = (json!({}), json!({}));
    assert_eq!(
        p.evaluate(&input(&a, &c, Some(0.9))).outcome,
        Outcome::Review
    );
    let tuned = p.with_auto_thresholds(&HashMap::from([("confident lookups run".into(), 0.85)]));
    assert_eq!(
        tuned.evaluate(&input(&a, &c, Some(0.9))).outcome,
        Outcome::Approve
    );
    assert_eq!(
        tuned.evaluate(&input(&a, &c, Some(0.8))).outcome,
        Outcome::Review
    );
    // The server's value is clamped to min..=max.
    let low = p.with_auto_thresholds(&HashMap::from([("confident lookups run".into(), 0.1)]));
    assert_eq!(low.rules()[0].threshold.map(|t| t.value()), Some(0.6));
    // The condition alone, ignoring the floor, finds the rule's evidence.
    assert!(p.condition_holds(&p.rules()[0], &input(&a, &c, Some(0.1))));
}

#[test]
fn threshold_errors_name_their_key() {
    let cases = [
        ("threshold = 1.5", "`threshold` must be between 0 and 1"),
        (
            "threshold = \"sometimes\"",
            "invalid threshold \"sometimes\"",
        ),
        ("threshold = \"auto\"", "no `target_accuracy`"),
        (
            "threshold = \"auto\"\ntarget_accuracy = 1.0",
            "`target_accuracy` must be at least 0.5",
        ),
        (
            "threshold = \"auto\"\ntarget_accuracy = 0.9\nmin = 0.9\nmax = 0.5",
            "`min` (0.9) must not be above `max` (0.5)",
        ),
        ("min = 0.5", "`min` belongs to threshold = \"auto\""),
        (
            "threshold = 0.5\nmax = 0.9",
            "`max` belongs to threshold = \"auto\"",
        ),
    ];
    for (keys, expected) in cases {
        let text = format!("[[rule]]\nname = \"r\"\nwhen = \"true\"\nthen = \"approve\"\n{keys}\n");
        let errors = Policy::parse(&text).expect_err(keys);
        assert!(
            errors
                .iter()
                .any(|e| e.message.contains(expected) && e.line >= 5),
            "{keys}: {errors:?}"
        );
    }
}
