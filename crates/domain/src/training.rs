//! Training data from human oversight: which conversation turns a human vouched for, and the
//! shapes of the three export formats (OpenAI chat fine-tuning, OpenAI DPO preference pairs, raw
//! corrections). The store loads the facts page by page; this module decides what each becomes.

use crate::conversation::Role;
use crate::review::ReviewKind;
use serde::Serialize;
use serde_json::{json, Value};

/// The export formats of `loopgate export training` and `GET /v1/exports/training`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"messages": [...]}` per conversation: OpenAI chat fine-tuning.
    OpenAi,
    /// `{"input", "preferred_output", "non_preferred_output"}` per human correction: OpenAI DPO.
    Dpo,
    /// One record per human override, with its context.
    Corrections,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "openai" => Some(Format::OpenAi),
            "dpo" => Some(Format::Dpo),
            "corrections" => Some(Format::Corrections),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Dpo => "dpo",
            Format::Corrections => "corrections",
        }
    }
}

/// The start of an export window in ms since the epoch: `raw` is a duration back from `now_ms`
/// (`30d`, `12h`) or an RFC 3339 time (`2026-11-01T00:00:00Z`).
pub fn since_ms(raw: &str, now_ms: i64) -> Result<i64, String> {
    let raw = raw.trim();
    if let Ok(d) = humantime::parse_duration(raw) {
        let back = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        return Ok(now_ms.saturating_sub(back).max(0));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(raw) {
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        return Ok(ms);
    }
    Err(format!(
        "{raw:?} is neither a duration (30d, 12h) nor an RFC 3339 time"
    ))
}

/// A review of a delivered AI message, as far as training cares.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageReview {
    pub kind: ReviewKind,
    /// `approved`, `rejected`, `graded:correct`, `graded:incorrect`, ... once final.
    pub outcome: Option<String>,
    /// The reviewer's corrected answer (a grading decision's `text`), when one was given.
    pub correction: Option<String>,
}

/// What humans said about one AI answer the end user saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Vetting {
    /// A human approved it before delivery, or graded it correct afterwards.
    Approved,
    /// A human judged it wrong and wrote what it should have said.
    Corrected(String),
    /// Flagged by the user (and not cleared) or graded incorrect with no correction.
    Disowned,
    /// Delivered on the AI's own authority; nobody looked at it.
    Unvetted,
}

/// Combine the reviews of one delivered AI message. A correction beats a disowning, which beats
/// an approval: an answer a human approved and the user then flagged is only as good as the
/// flag's outcome.
pub fn vetting(reviews: &[MessageReview]) -> Vetting {
    let mut approved = false;
    let mut disowned = false;
    for r in reviews {
        let outcome = r.outcome.as_deref().unwrap_or("");
        match r.kind {
            ReviewKind::Draft | ReviewKind::Escalation => approved |= outcome == "approved",
            ReviewKind::Qa | ReviewKind::Flag => match outcome {
                "graded:correct" => approved = true,
                "graded:incorrect" => match &r.correction {
                    Some(text) if !text.trim().is_empty() => {
                        return Vetting::Corrected(text.clone())
                    }
                    _ => disowned = true,
                },
                // A user's thumbs-down stands until a human clears it; an open QA sample says
                // nothing yet.
                _ => disowned |= r.kind == ReviewKind::Flag,
            },
            ReviewKind::Approval | ReviewKind::KbChange => {}
        }
    }
    if disowned {
        Vetting::Disowned
    } else if approved {
        Vetting::Approved
    } else {
        Vetting::Unvetted
    }
}

/// A message the end user saw, in conversation order.
#[derive(Debug, Clone, PartialEq)]
pub struct ShownMessage {
    pub role: Role,
    pub text: String,
    /// For `ai` messages; ignored for the others.
    pub vetting: Vetting,
}

/// The chat role of one of our message roles: the AI and the humans who answer in its place are
/// both the assistant.
pub fn chat_role(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Ai | Role::Human => "assistant",
        Role::System => "system",
    }
}

/// Messages as chat context (no weights): what the model is conditioned on.
pub fn chat_messages(messages: &[ShownMessage]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| json!({"role": chat_role(m.role), "content": m.text}))
        .collect()
}

/// A conversation as one OpenAI chat fine-tuning example, or `None` when no assistant turn in it
/// was human-approved or human-written.
///
/// Human answers, approved AI answers and corrections are trained on. AI answers nobody looked at
/// stay as context with `"weight": 0` (OpenAI's way to keep a turn out of the loss). The example
/// ends before an answer a human disowned, and right after a corrected one: what the user said
/// next was a reply to the bad answer, not to the correction.
pub fn openai_example(messages: &[ShownMessage]) -> Option<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(messages.len());
    let mut trained = 0usize;
    for m in messages {
        match (m.role, &m.vetting) {
            (Role::User | Role::System, _) => {
                out.push(json!({"role": chat_role(m.role), "content": m.text}))
            }
            (Role::Human, _) | (Role::Ai, Vetting::Approved) => {
                out.push(json!({"role": "assistant", "content": m.text}));
                trained += 1;
            }
            (Role::Ai, Vetting::Unvetted) => {
                out.push(json!({"role": "assistant", "content": m.text, "weight": 0}))
            }
            (Role::Ai, Vetting::Corrected(text)) => {
                out.push(json!({"role": "assistant", "content": text}));
                trained += 1;
                break;
            }
            (Role::Ai, Vetting::Disowned) => break,
        }
    }
    if trained == 0 {
        return None;
    }
    // Nothing after the last assistant turn teaches anything.
    while out.last().is_some_and(|m| m["role"] != "assistant") {
        out.pop();
    }
    Some(json!({ "messages": out }))
}

/// One OpenAI DPO preference pair: the human's version preferred over the AI's, after `input`.
/// `None` when the two are the same (an "edit" that changed nothing teaches nothing).
pub fn dpo_pair(input: Vec<Value>, human: &str, ai: &str) -> Option<Value> {
    if human == ai || human.trim().is_empty() {
        return None;
    }
    Some(json!({
        "input": {"messages": input},
        "preferred_output": [{"role": "assistant", "content": human}],
        "non_preferred_output": [{"role": "assistant", "content": ai}],
    }))
}

/// The chat input of an action's preference pair: the conversation it came from (if any), then
/// the request as a user message holding the action's name and context as JSON.
pub fn action_input(transcript: &[ShownMessage], name: &str, context: &Value) -> Vec<Value> {
    let mut input = chat_messages(transcript);
    input.push(json!({
        "role": "user",
        "content": json!({"action": name, "context": context}).to_string(),
    }));
    input
}

/// One human override of AI output, with its context: the `corrections` format.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Correction {
    /// The review's kind: `approval`, `draft`, `escalation`, `qa`, `flag` or `kb_change`.
    pub kind: &'static str,
    pub review_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    pub agent: Option<String>,
    /// What the AI produced: message text, proposed arguments (an object), or proposed knowledge.
    pub ai_output: Value,
    /// What the human made of it; `null` for a plain rejection or an uncorrected bad grade.
    pub human_output: Value,
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grade: Option<&'static str>,
    pub comment: Option<String>,
    pub reviewer: String,
    /// RFC 3339.
    pub decided_at: String,
    /// `{"messages": [...]}` before the output, plus `action` and its `context` for actions, or
    /// the proposed `title` for knowledge changes.
    pub context: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(role: Role, text: &str, vetting: Vetting) -> ShownMessage {
        ShownMessage {
            role,
            text: text.into(),
            vetting,
        }
    }
    fn review(kind: ReviewKind, outcome: Option<&str>, correction: Option<&str>) -> MessageReview {
        MessageReview {
            kind,
            outcome: outcome.map(str::to_owned),
            correction: correction.map(str::to_owned),
        }
    }

    #[test]
    fn since() {
        let day = 86_400_000;
        assert_eq!(since_ms("30d", 40 * day), Ok(10 * day));
        assert_eq!(since_ms("1970-01-02T00:00:00Z", 0), Ok(day));
        assert!(since_ms("soon", 0).is_err());
    }

    #[test]
    fn vetting_rules() {
        assert_eq!(vetting(&[]), Vetting::Unvetted);
        assert_eq!(
            vetting(&[review(ReviewKind::Draft, Some("approved"), None)]),
            Vetting::Approved
        );
        assert_eq!(
            vetting(&[review(ReviewKind::Qa, Some("graded:correct"), None)]),
            Vetting::Approved
        );
        assert_eq!(
            vetting(&[review(ReviewKind::Qa, None, None)]),
            Vetting::Unvetted
        );
        // A pending flag disowns even an approved draft.
        assert_eq!(
            vetting(&[
                review(ReviewKind::Draft, Some("approved"), None),
                review(ReviewKind::Flag, None, None)
            ]),
            Vetting::Disowned
        );
        assert_eq!(
            vetting(&[review(ReviewKind::Flag, Some("graded:incorrect"), None)]),
            Vetting::Disowned
        );
        assert_eq!(
            vetting(&[review(
                ReviewKind::Flag,
                Some("graded:incorrect"),
                Some("Better.")
            )]),
            Vetting::Corrected("Better.".into())
        );
        assert_eq!(
            vetting(&[review(ReviewKind::Flag, Some("graded:correct"), None)]),
            Vetting::Approved
        );
    }

    #[test]
    fn openai_keeps_vouched_turns_and_stops_at_disowned_ones() {
        let m = vec![
            shown(Role::System, "Be kind.", Vetting::Unvetted),
            shown(Role::User, "hi", Vetting::Unvetted),
            shown(Role::Ai, "hello (unvetted)", Vetting::Unvetted),
            shown(Role::User, "refund?", Vetting::Unvetted),
            shown(Role::Ai, "yes (approved)", Vetting::Approved),
            shown(Role::User, "thanks", Vetting::Unvetted),
            shown(Role::Ai, "bad", Vetting::Disowned),
            shown(Role::User, "what?", Vetting::Unvetted),
            shown(Role::Human, "after", Vetting::Unvetted),
        ];
        let e = openai_example(&m).unwrap();
        let msgs = e["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 5, "{e}");
        assert_eq!(msgs[0], json!({"role": "system", "content": "Be kind."}));
        assert_eq!(msgs[2]["weight"], 0);
        assert_eq!(
            msgs[4],
            json!({"role": "assistant", "content": "yes (approved)"})
        );
    }

    #[test]
    fn openai_needs_a_vouched_turn_and_ends_after_a_correction() {
        let m = vec![
            shown(Role::User, "hi", Vetting::Unvetted),
            shown(Role::Ai, "hello", Vetting::Unvetted),
        ];
        assert_eq!(openai_example(&m), None);
        let m = vec![
            shown(Role::User, "hi", Vetting::Unvetted),
            shown(Role::Ai, "wrong", Vetting::Corrected("right".into())),
            shown(Role::User, "that is wrong", Vetting::Unvetted),
        ];
        let e = openai_example(&m).unwrap();
        assert_eq!(
            e["messages"],
            json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "right"}])
        );
        let m = vec![
            shown(Role::User, "hi", Vetting::Unvetted),
            shown(Role::Human, "a human here", Vetting::Unvetted),
        ];
        assert!(openai_example(&m).is_some());
    }

    #[test]
    fn dpo_pairs_need_a_difference() {
        assert_eq!(dpo_pair(vec![], "same", "same"), None);
        let p = dpo_pair(vec![json!({"role": "user", "content": "q"})], "good", "bad").unwrap();
        assert_eq!(p["preferred_output"][0]["content"], "good");
        assert_eq!(p["non_preferred_output"][0]["content"], "bad");
        assert_eq!(p["input"]["messages"][0]["content"], "q");
        let input = action_input(&[], "refund", &json!({"tier": "gold"}));
        assert_eq!(input.len(), 1);
        let content: Value = serde_json::from_str(input[0]["content"].as_str().unwrap()).unwrap();
        assert_eq!(content["action"], "refund");
    }
}
