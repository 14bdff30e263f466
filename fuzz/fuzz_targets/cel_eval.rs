//! A `when` expression and an item, compiled and evaluated: whatever the expression and however
//! large the item, evaluation stays bounded. A rule the work bound lets run must finish in time
//! proportional to its bound (so the bound is a real bound), and a refused rule sends the item to
//! review.
//!
//! Input, as text so seeds are readable and libFuzzer's dictionary and comparisons work on it:
//! line 1 the `when`; line 2 `REPEAT` (how many times to repeat the item's `items` list and `big`
//! string, so a small input makes a large item); the rest, JSON: the item's arguments (an object;
//! any other value is wrapped as `{"value": ...}`), also given as its context.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loopgate_domain::policy::{Outcome, Policy, PolicyInput, SubjectKind};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Largest item the target builds, in serialized bytes (the API takes at most 1 MiB bodies).
const MAX_ITEM_BYTES: usize = 512 * 1024;

/// Slowest evaluation accepted per unit of the work bound, and a fixed allowance for a busy
/// machine. Generous on purpose: it catches a bound that is off by orders of magnitude.
const NANOS_PER_UNIT: f64 = 2_000.0;
const SLACK: Duration = Duration::from_secs(2);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let when = lines.next().unwrap_or("");
    let repeat: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(1)
        .min(100_000);
    let json = lines.next().unwrap_or("{}");
    let mut arguments = match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(other) => serde_json::json!({ "value": other }),
        Err(_) => serde_json::json!({}),
    };
    amplify(&mut arguments, repeat);

    let toml_when = toml::Value::String(when.to_owned()).to_string();
    let policy_text = format!(
        "[[rule]]\nname = \"fuzzed\"\nwhen = {toml_when}\nthen = \"approve\"\n\n\
         [[rule]]\nname = \"rest\"\nwhen = \"true\"\nthen = \"review\"\n"
    );
    let policy = match Policy::parse(&policy_text) {
        Ok(policy) => policy,
        Err(errors) => {
            // Errors in the `when` are on its line (3) or, for an unplaceable one, at its start.
            for e in &errors {
                assert!(e.line >= 1 && e.column >= 1, "{e}");
            }
            return;
        }
    };

    for kind in [SubjectKind::Action, SubjectKind::Message] {
        let input = PolicyInput {
            kind,
            action_name: "issue_refund",
            arguments: &arguments,
            message_text: when,
            confidence: Some(0.5),
            context: &arguments,
            agent: "fuzz",
            conversation_state: "ai",
            conversation_turns: 1,
        };
        let bound: f64 = policy.work_bounds(&input).iter().map(|(_, w)| w).sum();
        let started = Instant::now();
        let routing = policy.evaluate(&input);
        let took = started.elapsed();
        if routing.reason.contains("was not evaluated") {
            assert_eq!(
                routing.outcome,
                Outcome::Review,
                "a refused rule must not decide"
            );
            continue;
        }
        let allowed = SLACK + Duration::from_nanos((bound * NANOS_PER_UNIT).min(1e12) as u64);
        assert!(
            took <= allowed,
            "evaluation took {took:?}, over {allowed:?} for a work bound of {bound:.3e}: `{when}`"
        );
    }
});

/// Repeats `items` (a list) and `big` (a string) of the arguments `repeat` times, within
/// [`MAX_ITEM_BYTES`].
fn amplify(arguments: &mut Value, repeat: usize) {
    if repeat <= 1 {
        return;
    }
    let budget = MAX_ITEM_BYTES / (arguments.to_string().len() + 1).max(1);
    let times = repeat.min(budget.max(1));
    if let Some(Value::Array(items)) = arguments.get_mut("items") {
        let one = std::mem::take(items);
        for _ in 0..times {
            items.extend(one.iter().cloned());
        }
    }
    if let Some(Value::String(big)) = arguments.get_mut("big") {
        *big = big.repeat(times);
    }
}
