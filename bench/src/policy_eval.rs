//! The policy-evaluation micro-benchmark's material: a realistic 20-rule policy whose last rule is
//! the one that matches (the worst case for first-match-wins), and the input it is evaluated on.
//! Shared by `benches/policy.rs` (criterion) and the `policy` scenario (direct timing).

use std::time::Instant;

use loopgate_domain::policy::{Policy, PolicyInput, SubjectKind};

/// 19 rules that do not match the benchmark input, then a catch-all.
pub fn twenty_rules() -> String {
    let mut text = String::new();
    let conditions = [
        r#"action.name == "issue_refund" && action.arguments.amount > 500"#,
        r#"action.name == "delete_account""#,
        r#"action.name == "wire_transfer" && context.tier != "gold""#,
        r#"confidence >= 0.0 && confidence < 0.3"#,
        r#"agent == "experimental-bot""#,
        r#"action.name.startsWith("admin_")"#,
        r#"context.channel == "phone" && confidence < 0.8"#,
        r#"action.name == "send_email" && action.arguments.to.endsWith("@competitor.com")"#,
        r#"conversation.state == "human""#,
        r#"action.name == "change_plan" && context.tier == "free""#,
        r#"action.name == "issue_refund" && confidence < 0.9"#,
        r#""legal" in context.tags"#,
        r#"action.name == "export_data""#,
        r#"context.tier == "enterprise" && action.name != "send_email""#,
        r#"action.name == "close_ticket" && confidence < 0.5"#,
        r#"conversation.turns > 40"#,
        r#"action.name == "send_email" && action.arguments.amount > 1000.0"#,
        r#"agent == "legacy-bot" && confidence < 0.95"#,
        r#"action.name.contains("password")"#,
    ];
    for (i, when) in conditions.iter().enumerate() {
        text.push_str(&format!(
            "[[rule]]\nname = \"rule {i}\"\nwhen = '{when}'\nthen = \"review\"\nqueue = \"q{i}\"\n\n"
        ));
    }
    text.push_str(
        "[[rule]]\nname = \"everything else runs\"\nwhen = \"true\"\nthen = \"approve\"\n",
    );
    text
}

pub fn compiled() -> Policy {
    match Policy::parse(&twenty_rules()) {
        Ok(p) => p,
        Err(errors) => panic!("the benchmark policy does not compile: {errors:?}"),
    }
}

/// The benchmark's input: the body the load scenarios submit.
pub struct Input {
    arguments: serde_json::Value,
    context: serde_json::Value,
}

impl Input {
    pub fn new() -> Input {
        let body = crate::baselines::action_body("send_email", 1234);
        Input {
            arguments: body["arguments"].clone(),
            context: body["context"].clone(),
        }
    }

    pub fn get(&self) -> PolicyInput<'_> {
        PolicyInput {
            kind: SubjectKind::Action,
            action_name: "send_email",
            arguments: &self.arguments,
            message_text: "",
            confidence: Some(0.93),
            context: &self.context,
            agent: "support-bot",
            conversation_state: "",
            conversation_turns: 0,
        }
    }
}

impl Default for Input {
    fn default() -> Self {
        Input::new()
    }
}

/// Times `n` evaluations one by one; returns the median and p99 in microseconds.
pub fn measure(n: usize) -> (f64, f64) {
    let policy = compiled();
    let input = Input::new();
    let routing = policy.evaluate(&input.get());
    assert_eq!(routing.rule.as_deref(), Some("everything else runs"));
    let mut samples: Vec<f64> = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        std::hint::black_box(policy.evaluate(std::hint::black_box(&input.get())));
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    (samples[n / 2], samples[(n * 99) / 100])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_rules_compile_and_the_last_one_decides() {
        let policy = compiled();
        assert_eq!(policy.rules().len(), 20);
        let input = Input::new();
        let routing = policy.evaluate(&input.get());
        assert_eq!(routing.rule.as_deref(), Some("everything else runs"));
    }
}
