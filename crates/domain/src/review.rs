//! Reviews, the one unit of human work, and the rules for deciding them: leases, four-eyes
//! approval, edits, grades. [`decide`] is the whole decision state machine, free of I/O, so the
//! store only has to load the facts and persist the outcome inside one transaction.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewKind {
    Approval,
    Draft,
    Escalation,
    Qa,
    Flag,
    KbChange,
}

impl ReviewKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewKind::Approval => "approval",
            ReviewKind::Draft => "draft",
            ReviewKind::Escalation => "escalation",
            ReviewKind::Qa => "qa",
            ReviewKind::Flag => "flag",
            ReviewKind::KbChange => "kb_change",
        }
    }
    pub fn parse(s: &str) -> Option<ReviewKind> {
        Some(match s {
            "approval" => ReviewKind::Approval,
            "draft" => ReviewKind::Draft,
            "escalation" => ReviewKind::Escalation,
            "qa" => ReviewKind::Qa,
            "flag" => ReviewKind::Flag,
            "kb_change" => ReviewKind::KbChange,
            _ => return None,
        })
    }
    /// Grading kinds judge work already done; the others gate work not yet done.
    pub fn is_grading(self) -> bool {
        matches!(self, ReviewKind::Qa | ReviewKind::Flag)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewStatus {
    Pending,
    Claimed,
    Decided,
    Expired,
    Cancelled,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Pending => "pending",
            ReviewStatus::Claimed => "claimed",
            ReviewStatus::Decided => "decided",
            ReviewStatus::Expired => "expired",
            ReviewStatus::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<ReviewStatus> {
        Some(match s {
            "pending" => ReviewStatus::Pending,
            "claimed" => ReviewStatus::Claimed,
            "decided" => ReviewStatus::Decided,
            "expired" => ReviewStatus::Expired,
            "cancelled" => ReviewStatus::Cancelled,
            _ => return None,
        })
    }
    pub fn is_open(self) -> bool {
        matches!(self, ReviewStatus::Pending | ReviewStatus::Claimed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Reject,
    Edit,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
            Verdict::Edit => "edit",
        }
    }
    pub fn parse(s: &str) -> Option<Verdict> {
        match s {
            "approve" => Some(Verdict::Approve),
            "reject" => Some(Verdict::Reject),
            "edit" => Some(Verdict::Edit),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    Correct,
    Incorrect,
}

impl Grade {
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::Correct => "correct",
            Grade::Incorrect => "incorrect",
        }
    }
    pub fn parse(s: &str) -> Option<Grade> {
        match s {
            "correct" => Some(Grade::Correct),
            "incorrect" => Some(Grade::Incorrect),
            _ => None,
        }
    }
}

/// A reviewer's decision as submitted. Which fields are required depends on the review's kind:
/// see [`decide`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DecisionInput {
    pub verdict: Option<Verdict>,
    pub arguments: Option<Value>,
    pub text: Option<String>,
    /// With `edit` on a `kb_change`: a new title (recorded as the decision's `arguments`
    /// `{"title": ...}`, so a title edit travels like any other edit).
    pub title: Option<String>,
    pub grade: Option<Grade>,
    pub score: Option<f64>,
    pub labels: Vec<String>,
    pub comment: Option<String>,
}

/// A decision already recorded on the review, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorDecision {
    pub reviewer: String,
    pub verdict: Verdict,
    pub arguments: Option<Value>,
    pub text: Option<String>,
}

/// What [`decide`] needs to know about the review at the moment of deciding.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewFacts {
    pub kind: ReviewKind,
    pub status: ReviewStatus,
    pub approvals_required: u32,
    /// Holder of an unexpired claim, if any.
    pub claimed_by: Option<String>,
}

/// The decision as it will be recorded: the verdict made explicit.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    pub arguments: Option<Value>,
    pub text: Option<String>,
    pub grade: Option<Grade>,
    pub score: Option<f64>,
    pub labels: Vec<String>,
    pub comment: Option<String>,
}

/// What a valid decision does to the review and its subject.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Approved, but more distinct approvers are needed; the review goes back to the queue.
    NeedsMoreApprovals { approvals: u32, required: u32 },
    /// Final approval. `arguments`/`text` are the edited ones when someone edited, else `None`
    /// (the original stands).
    Approved {
        arguments: Option<Value>,
        text: Option<String>,
    },
    /// Final rejection: any reject ends a review.
    Rejected,
    /// A grading review (QA sample, user flag) was graded.
    Graded(Grade),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    #[error("the review is already {0}")]
    NotOpen(&'static str),
    #[error("the review is claimed by {0}")]
    ClaimedByOther(String),
    #[error("{0} has already approved this review; another reviewer must approve it")]
    AlreadyApproved(String),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> DecisionError {
    DecisionError::Invalid {
        field,
        message: message.into(),
    }
}

/// Check a decision against the review's state and history, and say what it does.
///
/// Approvals count only distinct reviewers who approved the arguments (or text) as they now
/// stand: an edit restarts the count with the editor, since earlier approvers saw something else.
pub fn decide(
    facts: &ReviewFacts,
    prior: &[PriorDecision],
    reviewer: &str,
    mut input: DecisionInput,
) -> Result<(Decision, Effect), DecisionError> {
    if !facts.status.is_open() {
        return Err(DecisionError::NotOpen(facts.status.as_str()));
    }
    if let Some(holder) = &facts.claimed_by {
        if holder != reviewer {
            return Err(DecisionError::ClaimedByOther(holder.clone()));
        }
    }
    if let Some(score) = input.score {
        if !score.is_finite() || !(0.0..=1.0).contains(&score) {
            return Err(invalid("score", "must be a number from 0 to 1"));
        }
    }
    if input.labels.len() > 32 || input.labels.iter().any(|l| l.is_empty() || l.len() > 64) {
        return Err(invalid("labels", "at most 32 labels of 1 to 64 characters"));
    }
    if input.comment.as_ref().is_some_and(|c| c.len() > 10_000) {
        return Err(invalid("comment", "at most 10000 characters"));
    }

    if input.title.is_some()
        && !(facts.kind == ReviewKind::KbChange && input.verdict == Some(Verdict::Edit))
    {
        return Err(invalid(
            "title",
            "only an edit of a kb_change review carries a title",
        ));
    }

    if facts.kind.is_grading() {
        let grade = input.grade.ok_or_else(|| {
            invalid(
                "grade",
                "a qa or flag review needs a grade: correct or incorrect",
            )
        })?;
        let verdict = match (input.verdict, grade) {
            (Some(v), _) => v,
            (None, Grade::Correct) => Verdict::Approve,
            (None, Grade::Incorrect) => Verdict::Reject,
        };
        let decision = Decision {
            verdict,
            arguments: input.arguments,
            text: input.text,
            grade: Some(grade),
            score: input.score,
            labels: input.labels,
            comment: input.comment,
        };
        return Ok((decision, Effect::Graded(grade)));
    }

    let verdict = input
        .verdict
        .ok_or_else(|| invalid("verdict", "required: approve, reject or edit"))?;
    if input.grade.is_some() {
        return Err(invalid("grade", "only qa and flag reviews are graded"));
    }
    match verdict {
        Verdict::Edit => match facts.kind {
            ReviewKind::Approval => match &input.arguments {
                Some(Value::Object(_)) => {}
                Some(_) => return Err(invalid("arguments", "must be a JSON object")),
                None => return Err(invalid("arguments", "an edit needs the new arguments")),
            },
            ReviewKind::Draft | ReviewKind::Escalation | ReviewKind::KbChange
                if input.text.as_deref().is_none_or(|t| t.trim().is_empty()) =>
            {
                return Err(invalid("text", "an edit needs the new text"));
            }
            ReviewKind::KbChange => {
                if input.arguments.is_some() {
                    return Err(invalid(
                        "arguments",
                        "a knowledge change is edited with text and title",
                    ));
                }
                let refused = |e: crate::knowledge::Refused| invalid(e.field, e.message);
                if let Some(t) = input.text.as_deref() {
                    crate::knowledge::text(t).map_err(refused)?;
                }
                if let Some(t) = input.title.as_deref() {
                    let t = crate::knowledge::title(t).map_err(refused)?;
                    input.arguments = Some(serde_json::json!({ "title": t }));
                }
            }
            _ => {}
        },
        Verdict::Approve | Verdict::Reject => {
            if input.arguments.is_some() {
                return Err(invalid(
                    "arguments",
                    "only an edit carries arguments; use verdict \"edit\"",
                ));
            }
            if input.text.is_some() {
                return Err(invalid(
                    "text",
                    "only an edit carries text; use verdict \"edit\"",
                ));
            }
        }
    }
    let decision = Decision {
        verdict,
        arguments: input.arguments,
        text: input.text,
        grade: None,
        score: input.score,
        labels: input.labels,
        comment: input.comment,
    };
    if verdict == Verdict::Reject {
        return Ok((decision, Effect::Rejected));
    }

    // Replay history to find the current version and who approved it.
    let mut approvers: Vec<&str> = Vec::new();
    let mut edited_args: Option<&Value> = None;
    let mut edited_text: Option<&str> = None;
    for d in prior {
        match d.verdict {
            Verdict::Edit => {
                approvers.clear();
                approvers.push(&d.reviewer);
                if d.arguments.is_some() {
                    edited_args = d.arguments.as_ref();
                }
                if d.text.is_some() {
                    edited_text = d.text.as_deref();
                }
            }
            Verdict::Approve => approvers.push(&d.reviewer),
            Verdict::Reject => {}
        }
    }
    if prior.iter().any(|d| d.reviewer == reviewer) && verdict == Verdict::Approve {
        // One person, one voice: four-eyes means two different pairs of eyes.
        if approvers.contains(&reviewer) {
            return Err(DecisionError::AlreadyApproved(reviewer.to_owned()));
        }
    }
    let (final_args, final_text) = if verdict == Verdict::Edit {
        approvers.clear();
        (decision.arguments.clone(), decision.text.clone())
    } else {
        (edited_args.cloned(), edited_text.map(str::to_owned))
    };
    approvers.push(reviewer);
    let approvals = approvers.len() as u32;
    let required = facts.approvals_required.max(1);
    if approvals >= required {
        Ok((
            decision,
            Effect::Approved {
                arguments: final_args,
                text: final_text,
            },
        ))
    } else {
        Ok((
            decision,
            Effect::NeedsMoreApprovals {
                approvals,
                required,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(kind: ReviewKind, required: u32) -> ReviewFacts {
        ReviewFacts {
            kind,
            status: ReviewStatus::Pending,
            approvals_required: required,
            claimed_by: None,
        }
    }
    fn approve() -> DecisionInput {
        DecisionInput {
            verdict: Some(Verdict::Approve),
            ..Default::default()
        }
    }
    fn prior(reviewer: &str, verdict: Verdict, arguments: Option<Value>) -> PriorDecision {
        PriorDecision {
            reviewer: reviewer.into(),
            verdict,
            arguments,
            text: None,
        }
    }

    #[test]
    fn single_approval_approves() {
        let (_, effect) = decide(&facts(ReviewKind::Approval, 1), &[], "ann", approve()).unwrap();
        assert_eq!(
            effect,
            Effect::Approved {
                arguments: None,
                text: None
            }
        );
    }

    #[test]
    fn four_eyes_needs_two_distinct_reviewers() {
        let f = facts(ReviewKind::Approval, 2);
        let (_, e1) = decide(&f, &[], "ann", approve()).unwrap();
        assert_eq!(
            e1,
            Effect::NeedsMoreApprovals {
                approvals: 1,
                required: 2
            }
        );
        let history = vec![prior("ann", Verdict::Approve, None)];
        assert_eq!(
            decide(&f, &history, "ann", approve()).unwrap_err(),
            DecisionError::AlreadyApproved("ann".into())
        );
        let (_, e2) = decide(&f, &history, "bob", approve()).unwrap();
        assert!(matches!(e2, Effect::Approved { .. }));
    }

    #[test]
    fn any_reject_ends_it() {
        let f = facts(ReviewKind::Approval, 2);
        let history = vec![prior("ann", Verdict::Approve, None)];
        let input = DecisionInput {
            verdict: Some(Verdict::Reject),
            comment: Some("no".into()),
            ..Default::default()
        };
        assert_eq!(
            decide(&f, &history, "bob", input).unwrap().1,
            Effect::Rejected
        );
    }

    #[test]
    fn edit_restarts_the_count_and_carries_arguments() {
        let f = facts(ReviewKind::Approval, 2);
        let history = vec![prior("ann", Verdict::Approve, None)];
        let edit = DecisionInput {
            verdict: Some(Verdict::Edit),
            arguments: Some(json!({"amount": 100})),
            ..Default::default()
        };
        let (_, e) = decide(&f, &history, "bob", edit).unwrap();
        assert_eq!(
            e,
            Effect::NeedsMoreApprovals {
                approvals: 1,
                required: 2
            }
        );
        let history = vec![
            prior("ann", Verdict::Approve, None),
            prior("bob", Verdict::Edit, Some(json!({"amount": 100}))),
        ];
        // ann approved the old arguments; her approval of the edited ones counts anew.
        let (_, e) = decide(&f, &history, "ann", approve()).unwrap();
        assert_eq!(
            e,
            Effect::Approved {
                arguments: Some(json!({"amount": 100})),
                text: None
            }
        );
    }

    #[test]
    fn single_edit_approves_with_new_arguments() {
        let edit = DecisionInput {
            verdict: Some(Verdict::Edit),
            arguments: Some(json!({"to": "x"})),
            ..Default::default()
        };
        let (_, e) = decide(&facts(ReviewKind::Approval, 1), &[], "ann", edit).unwrap();
        assert_eq!(
            e,
            Effect::Approved {
                arguments: Some(json!({"to": "x"})),
                text: None
            }
        );
    }

    #[test]
    fn refusals() {
        let mut f = facts(ReviewKind::Approval, 1);
        f.claimed_by = Some("ann".into());
        assert_eq!(
            decide(&f, &[], "bob", approve()).unwrap_err(),
            DecisionError::ClaimedByOther("ann".into())
        );
        f.claimed_by = None;
        f.status = ReviewStatus::Decided;
        assert_eq!(
            decide(&f, &[], "bob", approve()).unwrap_err(),
            DecisionError::NotOpen("decided")
        );
        let f = facts(ReviewKind::Approval, 1);
        let bad_edit = DecisionInput {
            verdict: Some(Verdict::Edit),
            arguments: Some(json!([1])),
            ..Default::default()
        };
        assert!(matches!(
            decide(&f, &[], "bob", bad_edit).unwrap_err(),
            DecisionError::Invalid {
                field: "arguments",
                ..
            }
        ));
        assert!(matches!(
            decide(&f, &[], "bob", DecisionInput::default()).unwrap_err(),
            DecisionError::Invalid {
                field: "verdict",
                ..
            }
        ));
    }

    #[test]
    fn knowledge_edits_carry_text_and_maybe_a_title() {
        let f = facts(ReviewKind::KbChange, 1);
        let no_text = DecisionInput {
            verdict: Some(Verdict::Edit),
            ..Default::default()
        };
        assert!(matches!(
            decide(&f, &[], "ann", no_text).unwrap_err(),
            DecisionError::Invalid { field: "text", .. }
        ));
        let edit = DecisionInput {
            verdict: Some(Verdict::Edit),
            text: Some("Refunds take 5 days.".into()),
            title: Some(" Refund times ".into()),
            ..Default::default()
        };
        let (d, e) = decide(&f, &[], "ann", edit).unwrap();
        assert_eq!(d.arguments, Some(json!({"title": "Refund times"})));
        assert_eq!(
            e,
            Effect::Approved {
                arguments: Some(json!({"title": "Refund times"})),
                text: Some("Refunds take 5 days.".into())
            }
        );
        let titled_approval = DecisionInput {
            verdict: Some(Verdict::Approve),
            title: Some("x".into()),
            ..Default::default()
        };
        assert!(matches!(
            decide(&f, &[], "ann", titled_approval).unwrap_err(),
            DecisionError::Invalid { field: "title", .. }
        ));
        let long = DecisionInput {
            verdict: Some(Verdict::Edit),
            text: Some("x".repeat(crate::knowledge::MAX_TEXT_BYTES + 1)),
            ..Default::default()
        };
        assert!(matches!(
            decide(&f, &[], "ann", long).unwrap_err(),
            DecisionError::Invalid { field: "text", .. }
        ));
    }

    #[test]
    fn grading() {
        let f = facts(ReviewKind::Qa, 1);
        assert!(matches!(
            decide(&f, &[], "ann", approve()).unwrap_err(),
            DecisionError::Invalid { field: "grade", .. }
        ));
        let graded = DecisionInput {
            grade: Some(Grade::Incorrect),
            labels: vec!["wrong-amount".into()],
            ..Default::default()
        };
        let (d, e) = decide(&f, &[], "ann", graded).unwrap();
        assert_eq!(e, Effect::Graded(Grade::Incorrect));
        assert_eq!(d.verdict, Verdict::Reject);
    }
}
