//! The learning loop's arithmetic: what the recorded evidence says about each AI output,
//! calibration, confidence-threshold tuning and policy backtests. Pure: the store gathers the
//! rows, the server and CLI present the results.

use crate::policy::{Outcome, Policy, PolicyInput, Rule, SubjectKind};
use crate::stats::{proportion, wilson, Proportion};
use serde::Serialize;
use std::collections::BTreeMap;

/// z for a two-sided 95% interval (the tuner uses its lower bound).
const Z95: f64 = 1.959_963_984_540_054;

/// Fewest graded items above a threshold before the tuner trusts it, whatever the interval
/// says: a lower bound from a handful of items is arithmetic, not evidence.
pub const MIN_EVIDENCE: u64 = 30;

/// Known-bad items a backtest lists by id (all are counted).
pub const MAX_LISTED: usize = 100;

/// What humans said about one AI output, as recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    /// The outcome of the review that gated it (`approved`, `rejected`, `expired...`), if any.
    pub review_outcome: Option<String>,
    /// A reviewer changed it (edited arguments or text) before it went out.
    pub edited: bool,
    /// A QA grade: `Some(true)` correct, `Some(false)` incorrect.
    pub qa_grade: Option<bool>,
    /// An end user flagged it.
    pub flagged: bool,
    /// The flag's review graded the AI correct after all (the complaint was unfounded).
    pub flag_cleared: bool,
}

/// Whether the AI's output was right: `Some(false)` when any human found fault (a rejection,
/// an edit, an incorrect grade, an upheld flag: the strongest evidence wins), `Some(true)` when
/// a human approved it unchanged or graded it correct, `None` when no human looked.
pub fn label(s: &Signals) -> Option<bool> {
    let rejected = s.review_outcome.as_deref() == Some("rejected");
    if s.edited || rejected || s.qa_grade == Some(false) || (s.flagged && !s.flag_cleared) {
        return Some(false);
    }
    if s.review_outcome.as_deref() == Some("approved") || s.qa_grade == Some(true) || s.flag_cleared
    {
        return Some(true);
    }
    None
}

/// One AI output with its confidence and label: the unit of tuning and calibration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub confidence: Option<f64>,
    pub label: Option<bool>,
}

/// Accuracy of graded items whose confidence falls in `[low, high)` (the last band includes 1).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CalibrationBand {
    pub low: f64,
    pub high: f64,
    /// Graded items in the band.
    pub count: u64,
    /// Mean stated confidence of those items: a calibrated AI's accuracy is close to it.
    pub mean_confidence: Option<f64>,
    pub accuracy: Proportion,
}

/// Ten bands of width 0.1 over the graded items that carry a confidence.
pub fn calibration(points: &[Point]) -> Vec<CalibrationBand> {
    let mut sums = [(0u64, 0u64, 0.0f64); 10];
    for p in points {
        let (Some(c), Some(good)) = (p.confidence, p.label) else {
            continue;
        };
        if !(0.0..=1.0).contains(&c) {
            continue;
        }
        let band = ((c * 10.0).floor() as usize).min(9);
        sums[band].0 += 1;
        sums[band].1 += u64::from(good);
        sums[band].2 += c;
    }
    sums.iter()
        .enumerate()
        .map(|(i, &(n, good, total))| CalibrationBand {
            low: i as f64 / 10.0,
            high: (i + 1) as f64 / 10.0,
            count: n,
            mean_confidence: (n > 0).then(|| total / n as f64),
            accuracy: proportion(good, n),
        })
        .collect()
}

/// What `tune` found.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TuneResult {
    /// The lowest threshold whose auto-handled share keeps the lower 95% bound of accuracy at
    /// or above the target.
    Recommended(Recommendation),
    /// No threshold is supported by the evidence; nothing is recommended.
    InsufficientEvidence {
        target_accuracy: f64,
        /// Items in scope, and of them graded with a confidence.
        items: u64,
        graded: u64,
        /// Graded items needed above a threshold even if every one were correct.
        needed: u64,
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Recommendation {
    pub target_accuracy: f64,
    pub threshold: f64,
    /// Share of all items in scope (graded or not) at or above the threshold: what would run
    /// without a human.
    pub automation_rate: f64,
    /// Graded items at or above the threshold, and their accuracy with its Wilson interval.
    pub accuracy: Proportion,
    /// Items in scope, and of them graded with a confidence.
    pub items: u64,
    pub graded: u64,
}

/// Graded items needed, all correct, for the Wilson lower bound to reach `target`.
pub fn evidence_needed(target: f64) -> u64 {
    let mut n = MIN_EVIDENCE;
    while n < 1_000_000 && wilson(n, n, Z95).0 < target {
        n += 1;
    }
    n
}

/// Recommends the lowest confidence threshold `t` such that the graded items with confidence
/// ≥ `t` have a 95% Wilson lower bound of accuracy ≥ `target` (and are at least
/// [`MIN_EVIDENCE`]). Lower thresholds automate more, so the lowest qualifying one is best;
/// accuracy need not fall monotonically with the threshold, so every candidate is checked.
pub fn tune(points: &[Point], target: f64) -> TuneResult {
    let items = points.len() as u64;
    let mut graded: Vec<(f64, bool)> = points
        .iter()
        .filter_map(|p| Some((p.confidence.filter(|c| c.is_finite())?, p.label?)))
        .collect();
    graded.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut all: Vec<f64> = points
        .iter()
        .filter_map(|p| p.confidence.filter(|c| c.is_finite()))
        .collect();
    all.sort_by(|a, b| a.total_cmp(b));

    let mut best: Option<(f64, u64, u64)> = None;
    let (mut n, mut good) = (0u64, 0u64);
    let mut i = 0;
    while i < graded.len() {
        let t = graded[i].0;
        // Take every item at exactly this confidence: a threshold admits all of them.
        while i < graded.len() && graded[i].0 == t {
            n += 1;
            good += u64::from(graded[i].1);
            i += 1;
        }
        if n >= MIN_EVIDENCE && wilson(good, n, Z95).0 >= target {
            best = Some((t, n, good));
        }
    }
    let graded_count = graded.len() as u64;
    match best {
        Some((threshold, n, good)) => {
            let above = all.len() - all.partition_point(|c| *c < threshold);
            TuneResult::Recommended(Recommendation {
                target_accuracy: target,
                threshold,
                automation_rate: if items == 0 {
                    0.0
                } else {
                    above as f64 / items as f64
                },
                accuracy: proportion(good, n),
                items,
                graded: graded_count,
            })
        }
        None => {
            let needed = evidence_needed(target);
            let reason = if graded_count < needed {
                format!(
                    "too little evidence: {graded_count} graded items with a confidence; at least \
                     {needed} are needed above a threshold to show {target} accuracy at 95% \
                     confidence"
                )
            } else {
                format!(
                    "no confidence threshold keeps the lower 95% bound of accuracy at {target}: \
                     the AI's graded work is not accurate enough at any confidence"
                )
            };
            TuneResult::InsufficientEvidence {
                target_accuracy: target,
                items,
                graded: graded_count,
                needed,
                reason,
            }
        }
    }
}

/// The longest look-back window of stats, tuning and backtests.
pub const MAX_WINDOW: std::time::Duration = std::time::Duration::from_secs(400 * 24 * 3600);

/// A look-back window written as a duration (`1h`, `24h`, `30d`): more than zero, at most
/// [`MAX_WINDOW`]. One rule for the API and the CLI.
pub fn parse_window(raw: &str) -> Option<std::time::Duration> {
    humantime::parse_duration(raw.trim())
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX_WINDOW)
}

/// One recorded item replayed through policies.
#[derive(Debug, Clone)]
pub struct ReplayItem {
    /// The action's or message's id.
    pub id: String,
    pub kind: SubjectKind,
    pub agent: String,
    pub action_name: String,
    pub arguments: serde_json::Value,
    pub message_text: String,
    pub confidence: Option<f64>,
    pub context: serde_json::Value,
    pub conversation_state: String,
    pub conversation_turns: i64,
    pub label: Option<bool>,
}

impl ReplayItem {
    pub fn input(&self) -> PolicyInput<'_> {
        PolicyInput {
            kind: self.kind,
            action_name: &self.action_name,
            arguments: &self.arguments,
            message_text: &self.message_text,
            confidence: self.confidence,
            context: &self.context,
            agent: &self.agent,
            conversation_state: &self.conversation_state,
            conversation_turns: self.conversation_turns,
        }
    }
}

/// Outcome counts of one rule (or of "no rule" under the key `(no rule matched)`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct OutcomeCounts {
    pub approve: u64,
    pub review: u64,
    pub escalate: u64,
    pub block: u64,
}

impl OutcomeCounts {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Approve => self.approve += 1,
            Outcome::Review => self.review += 1,
            Outcome::Escalate => self.escalate += 1,
            Outcome::Block => self.block += 1,
        }
    }
}

/// What one policy does with the replayed items.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PolicyReplay {
    pub by_rule: BTreeMap<String, OutcomeCounts>,
    pub totals: OutcomeCounts,
    /// Share of items approved or delivered with no human before it.
    pub automation_rate: Option<f64>,
    /// Items a human would see, per queue (review and escalate outcomes).
    pub review_load: BTreeMap<String, u64>,
    /// Items humans rejected, edited, graded incorrect or flagged that this policy lets
    /// through unreviewed.
    pub known_bad_let_through: u64,
}

/// A known-bad item the candidate would let through, with the rule that would let it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KnownBad {
    pub id: String,
    pub kind: &'static str,
    pub agent: String,
    pub name: String,
    pub confidence: Option<f64>,
    pub rule: Option<String>,
    /// Whether the current policy let it through too.
    pub current_lets_through: bool,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BacktestReport {
    pub items: u64,
    pub graded: u64,
    pub current: PolicyReplay,
    pub candidate: PolicyReplay,
    /// Items whose outcome differs between the policies.
    pub changed: u64,
    /// Known-bad items the candidate lets through unreviewed (first [`MAX_LISTED`]).
    pub known_bad: Vec<KnownBad>,
}

const NO_RULE: &str = "(no rule matched)";

/// Replays items through the current and a candidate policy, one at a time, so a replay of
/// millions of items holds only the counts.
pub struct Backtest {
    current: Policy,
    candidate: Policy,
    report: BacktestReport,
}

fn record(replay: &mut PolicyReplay, rule: &Option<String>, outcome: Outcome, queue: &str) {
    let key = rule.as_deref().unwrap_or(NO_RULE).to_string();
    replay.by_rule.entry(key).or_default().add(outcome);
    replay.totals.add(outcome);
    if matches!(outcome, Outcome::Review | Outcome::Escalate) {
        *replay.review_load.entry(queue.to_string()).or_default() += 1;
    }
}

impl Backtest {
    pub fn new(current: Policy, candidate: Policy) -> Backtest {
        Backtest {
            current,
            candidate,
            report: BacktestReport::default(),
        }
    }

    pub fn add(&mut self, item: &ReplayItem) {
        let input = item.input();
        let now = self.current.evaluate(&input);
        let then = self.candidate.evaluate(&input);
        let r = &mut self.report;
        r.items += 1;
        r.graded += u64::from(item.label.is_some());
        record(&mut r.current, &now.rule, now.outcome, &now.queue);
        record(&mut r.candidate, &then.rule, then.outcome, &then.queue);
        if now.outcome != then.outcome {
            r.changed += 1;
        }
        if item.label == Some(false) {
            let current_lets = now.outcome == Outcome::Approve;
            if current_lets {
                r.current.known_bad_let_through += 1;
            }
            if then.outcome == Outcome::Approve {
                r.candidate.known_bad_let_through += 1;
                if r.known_bad.len() < MAX_LISTED {
                    r.known_bad.push(KnownBad {
                        id: item.id.clone(),
                        kind: match item.kind {
                            SubjectKind::Action => "action",
                            SubjectKind::Message => "message",
                        },
                        agent: item.agent.clone(),
                        name: item.action_name.clone(),
                        confidence: item.confidence,
                        rule: then.rule.clone(),
                        current_lets_through: current_lets,
                    });
                }
            }
        }
    }

    pub fn finish(mut self) -> BacktestReport {
        for side in [&mut self.report.current, &mut self.report.candidate] {
            side.automation_rate = (self.report.items > 0)
                .then(|| side.totals.approve as f64 / self.report.items as f64);
        }
        self.report
    }
}

/// The standing rule an "approve and don't ask again" proposes: this agent's action of this
/// name, at or above (the approved item's confidence rounded down to 0.05), runs unreviewed.
/// Without a confidence the rule has no floor; the admin sees that in its backtest.
pub fn standing_rule(agent: &str, action: &str, confidence: Option<f64>) -> (String, String) {
    let floor = confidence
        .filter(|c| c.is_finite())
        .map(|c| ((c.clamp(0.0, 1.0) * 20.0).floor() / 20.0 * 100.0).round() / 100.0);
    let name = match floor {
        Some(f) => format!("{agent} may {action} unreviewed at confidence >= {f}"),
        None => format!("{agent} may {action} unreviewed"),
    };
    let when = format!(
        "agent == {} && action.name == {}",
        cel_string(agent),
        cel_string(action)
    );
    let mut toml = String::from("[[rule]]\n");
    toml.push_str(&format!("name = {}\n", toml_string(&name)));
    toml.push_str("applies_to = \"action\"\n");
    toml.push_str(&format!("when = {}\n", toml_string(&when)));
    if let Some(f) = floor {
        toml.push_str(&format!("threshold = {f:?}\n"));
    }
    toml.push_str("then = \"approve\"\n\n");
    (name, toml)
}

/// A CEL string literal (double-quoted, escaped).
fn cel_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A TOML basic string (JSON string escapes are valid TOML basic-string escapes).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `policy_text` with `rule_toml` inserted before its `index`-th `[[rule]]` header (0-based),
/// or appended when `index` is `None` or past the end. Inserting just before the rule that sent
/// an item to review keeps every rule above it (blocks, stricter reviews) in force.
pub fn insert_rule(policy_text: &str, index: Option<usize>, rule_toml: &str) -> String {
    let mut offset = 0;
    let mut seen = 0;
    for line in policy_text.split_inclusive('\n') {
        if line.trim() == "[[rule]]" {
            if Some(seen) == index {
                let mut out = String::with_capacity(policy_text.len() + rule_toml.len());
                out.push_str(&policy_text[..offset]);
                out.push_str(rule_toml);
                out.push_str(&policy_text[offset..]);
                return out;
            }
            seen += 1;
        }
        offset += line.len();
    }
    let mut out = policy_text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(rule_toml);
    out
}

/// The position of the rule named `name` in `policy`.
pub fn rule_index(policy: &Policy, name: &str) -> Option<usize> {
    policy.rules().iter().position(|r: &Rule| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(c: f64, good: bool) -> Point {
        Point {
            confidence: Some(c),
            label: Some(good),
        }
    }

    #[test]
    fn labels_follow_the_strongest_evidence() {
        let approved = Signals {
            review_outcome: Some("approved".into()),
            ..Signals::default()
        };
        assert_eq!(label(&approved), Some(true));
        assert_eq!(
            label(&Signals {
                edited: true,
                ..approved.clone()
            }),
            Some(false)
        );
        assert_eq!(
            label(&Signals {
                flagged: true,
                ..approved.clone()
            }),
            Some(false)
        );
        assert_eq!(
            label(&Signals {
                flagged: true,
                flag_cleared: true,
                ..approved.clone()
            }),
            Some(true)
        );
        assert_eq!(
            label(&Signals {
                qa_grade: Some(false),
                ..approved
            }),
            Some(false)
        );
        assert_eq!(label(&Signals::default()), None);
        assert_eq!(
            label(&Signals {
                review_outcome: Some("expired:rejected".into()),
                ..Signals::default()
            }),
            None
        );
    }

    #[test]
    fn calibration_bands() {
        let points = [
            pt(0.95, true),
            pt(0.91, false),
            pt(0.15, false),
            pt(1.0, true),
        ];
        let bands = calibration(&points);
        assert_eq!(bands.len(), 10);
        assert_eq!(bands[9].count, 3);
        assert_eq!(bands[9].accuracy.successes, 2);
        assert_eq!(bands[1].count, 1);
        assert_eq!(bands[1].accuracy.rate, Some(0.0));
        assert_eq!(bands[5].count, 0);
        assert_eq!(bands[5].mean_confidence, None);
    }

    /// Constructed so the answer is known: 200 items at 0.9..0.92 all correct (Wilson lower
    /// bound 0.9812), 200 at 0.5..0.7 of which the most confident is wrong (so admitting any of
    /// them drops the bound to 0.9724, under 0.98). The threshold is the lowest confidence of
    /// the top band, and automation is half the items.
    #[test]
    fn tune_finds_the_known_threshold() {
        let mut points = Vec::new();
        for i in 0..200 {
            points.push(pt(0.9 + (i as f64) * 0.0001, true));
        }
        for i in 0..200 {
            points.push(pt(0.5 + (i as f64) * 0.001, i % 10 < 7));
        }
        let TuneResult::Recommended(r) = tune(&points, 0.98) else {
            panic!("expected a recommendation");
        };
        assert!((r.threshold - 0.9).abs() < 1e-9, "{}", r.threshold);
        assert!((r.automation_rate - 0.5).abs() < 1e-9);
        assert_eq!(r.accuracy.trials, 200);
        assert!(r.accuracy.low.unwrap_or(0.0) >= 0.98);
        // A lower target admits some of the 70% band, so a lower threshold.
        let TuneResult::Recommended(lower) = tune(&points, 0.9) else {
            panic!("expected a recommendation");
        };
        assert!(lower.threshold < 0.9 && lower.automation_rate > 0.5);
    }

    #[test]
    fn tune_refuses_on_thin_evidence() {
        let points: Vec<Point> = (0..20).map(|i| pt(0.9 + i as f64 / 1000.0, true)).collect();
        match tune(&points, 0.98) {
            TuneResult::InsufficientEvidence { needed, graded, .. } => {
                assert_eq!(graded, 20);
                assert!(needed > 150, "{needed}");
            }
            other => panic!("expected insufficient evidence, got {other:?}"),
        }
        // Plenty of evidence, but never accurate enough.
        let bad: Vec<Point> = (0..1000)
            .map(|i| pt(i as f64 / 1000.0, i % 2 == 0))
            .collect();
        assert!(matches!(
            tune(&bad, 0.95),
            TuneResult::InsufficientEvidence { .. }
        ));
    }

    #[test]
    fn tune_handles_missing_and_odd_confidences() {
        let mut points: Vec<Point> = (0..300).map(|_| pt(0.99, true)).collect();
        points.push(Point {
            confidence: None,
            label: Some(false),
        });
        points.push(Point {
            confidence: Some(f64::NAN),
            label: Some(false),
        });
        points.push(Point {
            confidence: Some(0.2),
            label: None,
        });
        let TuneResult::Recommended(r) = tune(&points, 0.98) else {
            panic!("expected a recommendation");
        };
        assert_eq!(r.threshold, 0.99);
        assert_eq!(r.items, 303);
        assert!((r.automation_rate - 300.0 / 303.0).abs() < 1e-9);
    }

    fn item(id: &str, name: &str, amount: i64, confidence: f64, label: Option<bool>) -> ReplayItem {
        ReplayItem {
            id: id.into(),
            kind: SubjectKind::Action,
            agent: "bot".into(),
            action_name: name.into(),
            arguments: serde_json::json!({ "amount": amount }),
            message_text: String::new(),
            confidence: Some(confidence),
            context: serde_json::json!({}),
            conversation_state: "ai".into(),
            conversation_turns: 0,
            label,
        }
    }

    #[test]
    fn backtest_counts_on_a_fixture_history() {
        let current = Policy::parse(
            r#"
[[rule]]
name = "everything reviewed"
when = "true"
then = "review"
"#,
        )
        .expect("policy");
        let candidate = Policy::parse(
            r#"
[[rule]]
name = "big refunds"
applies_to = "action"
when = 'action.name == "refund" && action.arguments.amount > 100'
then = "review"
queue = "finance"

[[rule]]
name = "small stuff runs"
applies_to = "action"
when = "true"
then = "approve"
threshold = 0.8
"#,
        )
        .expect("policy");
        let history = [
            item("a", "refund", 500, 0.99, Some(true)),
            item("b", "refund", 50, 0.95, Some(false)),
            item("c", "refund", 20, 0.50, Some(false)),
            item("d", "lookup", 0, 0.90, None),
            item("e", "lookup", 0, 0.85, Some(true)),
        ];
        let mut bt = Backtest::new(current, candidate);
        for i in &history {
            bt.add(i);
        }
        let r = bt.finish();
        assert_eq!(r.items, 5);
        assert_eq!(r.graded, 4);
        assert_eq!(r.current.totals.review, 5);
        assert_eq!(r.current.automation_rate, Some(0.0));
        assert_eq!(r.candidate.by_rule["big refunds"].review, 1);
        assert_eq!(r.candidate.by_rule["small stuff runs"].approve, 3);
        assert_eq!(r.candidate.by_rule[NO_RULE].review, 1);
        assert_eq!(r.candidate.review_load["finance"], 1);
        assert_eq!(r.candidate.review_load["default"], 1);
        assert_eq!(r.candidate.automation_rate, Some(0.6));
        assert_eq!(r.changed, 3);
        assert_eq!(r.candidate.known_bad_let_through, 1);
        assert_eq!(r.known_bad.len(), 1);
        assert_eq!(r.known_bad[0].id, "b");
        assert!(!r.known_bad[0].current_lets_through);
    }

    #[test]
    fn standing_rule_parses_and_matches_only_its_cases() {
        let (name, toml) = standing_rule("support \"bot\"", "lookup_order", Some(0.876));
        assert!(name.contains(">= 0.85"), "{name}");
        let base = "# my policy\n[[rule]]\nname = \"refunds\"\napplies_to = \"action\"\nwhen = 'action.name == \"refund\"'\nthen = \"review\"\n\n[[rule]]\nname = \"rest\"\nwhen = \"true\"\nthen = \"review\"\n";
        let text = insert_rule(base, Some(1), &toml);
        let policy = Policy::parse(&text).expect("the new policy parses");
        assert_eq!(rule_index(&policy, &name), Some(1));
        assert!(text.starts_with("# my policy\n[[rule]]\nname = \"refunds\""));
        let mut it = item("x", "lookup_order", 0, 0.9, None);
        it.agent = "support \"bot\"".into();
        assert_eq!(policy.evaluate(&it.input()).outcome, Outcome::Approve);
        it.confidence = Some(0.8);
        assert_eq!(policy.evaluate(&it.input()).outcome, Outcome::Review);
        it.confidence = Some(0.9);
        it.agent = "other".into();
        assert_eq!(policy.evaluate(&it.input()).outcome, Outcome::Review);
        // Appended when there is no rule to go before.
        let appended = insert_rule(base, None, &toml);
        let policy = Policy::parse(&appended).expect("parses");
        assert_eq!(rule_index(&policy, &name), Some(2));
    }

    #[test]
    fn evidence_needed_grows_with_the_target() {
        assert!(evidence_needed(0.9) < evidence_needed(0.98));
        let n = evidence_needed(0.98);
        assert!(wilson(n, n, Z95).0 >= 0.98 && wilson(n - 1, n - 1, Z95).0 < 0.98);
    }
}
