//! Arbitrary bytes as a policy file, through `Policy::parse` as `PUT /v1/policy` and
//! `loopgate policy check` use it: never a panic, never a hang, every error at a real position
//! (1-based line and column inside the text, or just past its end), and a policy that parses
//! evaluates without trouble.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loopgate_domain::policy::{Policy, PolicyInput, SubjectKind};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(text) {
        Ok(policy) => {
            let arguments = serde_json::json!({"amount": 650, "items": [1, 2, 3], "to": "a@b.c"});
            let context = serde_json::json!({"tier": "gold"});
            for kind in [SubjectKind::Action, SubjectKind::Message] {
                let routing = policy.evaluate(&PolicyInput {
                    kind,
                    action_name: "issue_refund",
                    arguments: &arguments,
                    message_text: "hello",
                    confidence: Some(0.5),
                    context: &context,
                    agent: "fuzz",
                    conversation_state: "ai",
                    conversation_turns: 3,
                });
                assert!(!routing.reason.is_empty());
            }
        }
        Err(errors) => {
            assert!(
                !errors.is_empty(),
                "a rejected policy names at least one problem"
            );
            let lines = text.split('\n').collect::<Vec<_>>();
            for e in &errors {
                assert!(!e.message.is_empty());
                assert!(
                    e.line >= 1 && e.line <= lines.len(),
                    "line {} outside the text: {e}",
                    e.line
                );
                let width = lines[e.line - 1].chars().count();
                assert!(
                    e.column >= 1 && e.column <= width + 1,
                    "column {} outside line {} ({width} chars): {e}",
                    e.column,
                    e.line
                );
            }
        }
    }
});
