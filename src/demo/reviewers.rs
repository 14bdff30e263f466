//! The demo's simulated reviewers: reviewer keys working the queues over HTTP, as a person at the
//! console would (`POST /v1/reviews/next?queue=`, then `/decision`), so the learning loop has
//! evidence to learn from. What they decide follows a hidden ground truth in which the AI's
//! confidence is informative but imperfect: confident work is mostly right, unsure work often
//! wrong. They leave the newest reviews of every queue, and all escalated chats, to the human.

use super::{answers_on, money, until_stopped, RequestFailed};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::watch;

/// The simulated reviewers' API keys. Two, so four-eyes reviews (two distinct approvers) can
/// complete without a human.
pub(super) const NAMES: [&str; 2] = ["sim-reviewer", "sim-reviewer-2"];

/// The queues they work, with how often each is looked at and, where a queue mixes kinds, the
/// kind they take there. `specialists` and `compliance` (escalated chats: a person answers the
/// customer) are left to the human entirely, and so are the escalations in `support` (customers
/// who asked for a person); its held drafts rank above them, so `next` hands out drafts first.
pub(super) const QUEUES: [(&str, u32, Option<&str>); 8] = [
    ("triage", 3, None),
    ("finance", 2, None),
    ("accounts", 2, None),
    ("comms", 1, None),
    ("support", 3, Some("draft")),
    ("qa", 2, None),
    ("default", 1, None),
    ("feedback", 1, None),
];

/// Pending reviews of each queue the simulated reviewers never touch: they work a queue only
/// while it holds more than this many, taking the most urgent, so the newest stay for the human.
pub(super) const LEFT_FOR_HUMANS: usize = 3;

/// How long a simulated reviewer takes over one review, reading and deciding.
fn think_time(rng: &mut impl Rng) -> Duration {
    Duration::from_secs_f64(rng.gen_range(1.5..5.0))
}

/// How likely the AI's work at this confidence is right. Informative and imperfect, like a real
/// model's: up to 0.8 it is right a little more often than it says (0.3 → 0.4, 0.6 → 0.7,
/// 0.8 → 0.9), and when it is sure, at 0.9 and above, it is seldom wrong (0.995 → 0.999), with a
/// straight line between. With no confidence given, a coin weighted towards right.
pub(crate) fn chance_right(confidence: Option<f64>) -> f64 {
    let Some(c) = confidence
        .filter(|c| c.is_finite())
        .map(|c| c.clamp(0.0, 1.0))
    else {
        return 0.6;
    };
    if c >= 0.9 {
        0.995 + (c - 0.9) * 0.04
    } else if c > 0.8 {
        0.9 + (c - 0.8) * 0.95
    } else {
        c + 0.1
    }
}

/// The ground truth about one item (an action or an AI message, by its id): whether the AI got
/// it right. A hash of the id stands in for the facts a real reviewer would check, so every
/// simulated reviewer, and the same one twice, judges an item alike.
pub(crate) fn is_right(subject_id: &str, confidence: Option<f64>) -> bool {
    uniform(subject_id) < chance_right(confidence)
}

/// A number in [0, 1) fixed by `key` (FNV-1a, then SplitMix64's finaliser to spread the bits).
fn uniform(key: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A review as the API returns it, with what a reviewer decides on.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Review {
    pub id: String,
    /// `approval`, `draft`, `escalation`, `qa`, `flag`, `kb_change`.
    pub kind: String,
    pub status: String,
    pub queue: String,
    #[serde(default)]
    pub approvals: i64,
    #[serde(default)]
    pub approvals_required: i64,
    #[serde(default)]
    pub action: Option<ReviewedAction>,
    #[serde(default)]
    pub message: Option<ReviewedMessage>,
    #[serde(default)]
    pub conversation: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct ReviewedAction {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
    #[serde(default)]
    pub confidence: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct ReviewedMessage {
    pub id: String,
    pub text: String,
    #[serde(default)]
    pub confidence: Option<f64>,
}

/// `POST /v1/reviews/{id}/decision`'s body.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(super) struct Decision {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grade: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl Decision {
    /// "approved lookup_order", "graded a chat answer incorrect" ... for the log.
    pub fn describe(&self, what: &str) -> String {
        match (self.verdict, self.grade) {
            (_, Some(grade)) => format!("graded {what} {grade}"),
            (Some("edit"), _) => format!("edited {what}"),
            (Some("approve"), _) => format!("approved {what}"),
            (Some("reject"), _) => format!("rejected {what}"),
            (other, _) => format!("{} {what}", other.unwrap_or("decided")),
        }
    }
}

/// What the subject of a review is: the item the ground truth is about, and a few words on it.
fn subject(review: &Review) -> Option<(&str, Option<f64>, String)> {
    if let Some(a) = &review.action {
        return Some((&a.id, a.confidence, a.name.clone()));
    }
    review
        .message
        .as_ref()
        .map(|m| (m.id.as_str(), m.confidence, "a chat answer".to_owned()))
}

/// What a reviewer who knows whether the AI was right (`right`) decides on `review`, or `None`
/// for reviews they leave to the human (escalations, knowledge changes).
pub(super) fn decide(review: &Review, right: bool, rng: &mut impl Rng) -> Option<Decision> {
    match review.kind.as_str() {
        "approval" => {
            let action = review.action.as_ref()?;
            Some(if right {
                Decision {
                    verdict: Some("approve"),
                    comment: rng
                        .gen_bool(0.3)
                        .then(|| pick(rng, &APPROVE_COMMENTS).to_owned()),
                    ..Decision::default()
                }
            } else {
                match corrected(&action.name, &action.arguments, rng) {
                    Some((arguments, comment)) if rng.gen_bool(0.4) => Decision {
                        verdict: Some("edit"),
                        arguments: Some(arguments),
                        comment: Some(comment.to_owned()),
                        ..Decision::default()
                    },
                    _ => Decision {
                        verdict: Some("reject"),
                        comment: Some(rejection(&action.name, rng).to_owned()),
                        ..Decision::default()
                    },
                }
            })
        }
        // A held answer is approved as it is, or rewritten: the customer is waiting for one.
        "draft" => {
            let message = review.message.as_ref()?;
            Some(if right {
                Decision {
                    verdict: Some("approve"),
                    ..Decision::default()
                }
            } else {
                Decision {
                    verdict: Some("edit"),
                    text: Some(rewrite(&message.text, review.conversation.as_ref(), rng)),
                    comment: Some("the draft missed the customer's question".to_owned()),
                    ..Decision::default()
                }
            })
        }
        // QA samples, and a user's flag: `correct` clears the AI (the complaint was unfounded).
        "qa" | "flag" => {
            subject(review)?;
            Some(Decision {
                grade: Some(if right { "correct" } else { "incorrect" }),
                labels: if right {
                    Vec::new()
                } else {
                    vec![pick(rng, &FAULT_LABELS)]
                },
                comment: (!right).then(|| "not what the customer needed".to_owned()),
                ..Decision::default()
            })
        }
        _ => None,
    }
}

fn pick<'a>(rng: &mut impl Rng, from: &[&'a str]) -> &'a str {
    from.choose(rng).copied().unwrap_or("checked")
}

const APPROVE_COMMENTS: [&str; 4] = [
    "checked against the order",
    "customer history looks fine",
    "matches the customer's request",
    "verified",
];

const FAULT_LABELS: [&str; 3] = ["wrong-topic", "inaccurate", "incomplete"];

/// Why a reviewer refuses an action the AI got wrong.
fn rejection(action: &str, rng: &mut impl Rng) -> &'static str {
    let reasons: &[&'static str] = match action {
        "issue_refund" => &[
            "the order was already refunded",
            "not eligible: outside the refund window",
            "the merchant reversed the charge already",
        ],
        "change_address" => &[
            "the request did not pass the security questions",
            "the new address does not match the customer's documents",
        ],
        "close_account" => &[
            "the customer has a pending dispute; close after it is settled",
            "the balance must be paid out before closing",
        ],
        "send_email" => &[
            "wrong recipient",
            "the email promises something we cannot do",
        ],
        "lookup_order" => &[
            "that order belongs to another customer",
            "the customer asked about something else",
        ],
        _ => &["not what the customer asked for"],
    };
    reasons.choose(rng).copied().unwrap_or("not right")
}

/// The arguments a reviewer would put right, for the actions where fixing beats refusing.
fn corrected(action: &str, arguments: &Value, rng: &mut impl Rng) -> Option<(Value, &'static str)> {
    let mut fixed = arguments.as_object()?.clone();
    let comment = match action {
        "issue_refund" => {
            let amount = fixed.get("amount")?.as_f64()?;
            let partial = money((amount * rng.gen_range(0.3..0.8)).max(1.0));
            fixed.insert("amount".into(), json!(partial));
            "only part of the order was affected: partial refund"
        }
        "change_address" => {
            let address = fixed.get_mut("new_address")?.as_object_mut()?;
            let postcode = address.get("postcode")?.as_str()?;
            let area: String = postcode
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            let postcode = format!(
                "{area}{} {}{}{}",
                rng.gen_range(1..20),
                rng.gen_range(1..10),
                char::from(rng.gen_range(b'A'..=b'Z')),
                char::from(rng.gen_range(b'A'..=b'Z'))
            );
            address.insert("postcode".into(), json!(postcode));
            "postcode corrected from the customer's proof of address"
        }
        "send_email" => {
            let body = fixed.get("body")?.as_str()?.to_owned();
            fixed.insert(
                "body".into(),
                json!(format!(
                    "{body}\n\nP.S. Your case reference is in the app under Help > Messages."
                )),
            );
            "added the case reference the customer asked for"
        }
        "lookup_order" => {
            fixed.insert(
                "order_id".into(),
                json!(format!("ord_{}", rng.gen_range(100_000..1_000_000))),
            );
            "the customer meant their latest order"
        }
        _ => return None,
    };
    Some((Value::Object(fixed), comment))
}

/// A better answer than `draft` on the conversation's topic (its first tag).
fn rewrite(draft: &str, conversation: Option<&Value>, rng: &mut impl Rng) -> String {
    let topic = conversation
        .and_then(|c| c["context"]["tags"][0].as_str())
        .unwrap_or("general");
    let better: Vec<&str> = answers_on(topic)
        .iter()
        .copied()
        .filter(|a| *a != draft)
        .collect();
    match better.choose(rng) {
        Some(a) => format!("Sorry for the wait. {a}"),
        None => "Sorry for the wait. I've checked your account, and a colleague will follow this up with you in the app today.".to_owned(),
    }
}

/// A reviewer's request that failed: the HTTP status when the server answered.
#[derive(Debug)]
pub(super) struct ApiFailed {
    pub status: Option<StatusCode>,
    pub message: String,
}

impl ApiFailed {
    /// 409: someone else holds the review, or it is decided already.
    pub fn is_conflict(&self) -> bool {
        self.status == Some(StatusCode::CONFLICT)
    }
}

impl std::fmt::Display for ApiFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ApiFailed> for RequestFailed {
    fn from(e: ApiFailed) -> RequestFailed {
        RequestFailed(e.message)
    }
}

/// A reviewer's side of the API, over HTTP with the reviewer's own token.
#[derive(Clone)]
pub(super) struct ReviewerApi {
    pub name: &'static str,
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ReviewerApi {
    pub fn new(name: &'static str, base: &str, token: String) -> anyhow::Result<ReviewerApi> {
        let http = reqwest::Client::builder()
            .timeout(super::REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(ReviewerApi {
            name,
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn send(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), ApiFailed> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| ApiFailed {
                status: None,
                message: format!("{what}: {e}"),
            })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| ApiFailed {
            status: Some(status),
            message: format!("{what}: {e}"),
        })?;
        if status.is_success() {
            Ok((status, body.to_vec()))
        } else {
            Err(ApiFailed {
                status: Some(status),
                message: format!(
                    "{what}: {status}: {}",
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(300)
                        .collect::<String>()
                ),
            })
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ApiFailed> {
        serde_json::from_slice(body).map_err(|e| ApiFailed {
            status: None,
            message: format!("{what}: the answer does not parse: {e}"),
        })
    }

    /// How many reviews of `queue` (of `kind`, if given) are pending, counting up to `limit`.
    pub async fn pending(
        &self,
        queue: &str,
        kind: Option<&str>,
        limit: usize,
    ) -> Result<usize, ApiFailed> {
        #[derive(Deserialize)]
        struct List {
            reviews: Vec<Value>,
        }
        let what = format!("GET /v1/reviews?queue={queue}");
        let url = format!("{}/v1/reviews", self.base);
        let mut req = self.http.get(url).query(&[
            ("status", "pending"),
            ("queue", queue),
            ("limit", &limit.to_string()),
        ]);
        if let Some(kind) = kind {
            req = req.query(&[("kind", kind)]);
        }
        let (_, body) = self.send(&what, req).await?;
        Ok(Self::parse::<List>(&what, &body)?.reviews.len())
    }

    /// Claims the most urgent pending review of `queue`, if any.
    pub async fn next(&self, queue: &str) -> Result<Option<Review>, ApiFailed> {
        let what = format!("POST /v1/reviews/next?queue={queue}");
        let url = format!("{}/v1/reviews/next", self.base);
        let (status, body) = self
            .send(&what, self.http.post(url).query(&[("queue", queue)]))
            .await?;
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Self::parse(&what, &body).map(Some)
    }

    /// Claims one review by id.
    pub async fn claim(&self, id: &str) -> Result<Review, ApiFailed> {
        let what = format!("POST /v1/reviews/{id}/claim");
        let url = format!("{}/v1/reviews/{id}/claim", self.base);
        let (_, body) = self.send(&what, self.http.post(url)).await?;
        Self::parse(&what, &body)
    }

    /// Puts a claimed review back in its queue.
    pub async fn release(&self, id: &str) -> Result<(), ApiFailed> {
        let what = format!("POST /v1/reviews/{id}/release");
        let url = format!("{}/v1/reviews/{id}/release", self.base);
        self.send(&what, self.http.post(url)).await.map(|_| ())
    }

    /// Records a decision; the review as it now stands.
    pub async fn decide(&self, id: &str, decision: &Decision) -> Result<Review, ApiFailed> {
        let what = format!("POST /v1/reviews/{id}/decision");
        let url = format!("{}/v1/reviews/{id}/decision", self.base);
        let (_, body) = self.send(&what, self.http.post(url).json(decision)).await?;
        Self::parse(&what, &body)
    }

    /// Decides a claimed review as the ground truth says, after `pause` (reading it): the
    /// review as it then stands. `None` when it is not this reviewer's kind of work (it is
    /// released again). `log`: say what was decided (the history's decisions are only counted).
    pub async fn work(
        &self,
        review: &Review,
        rng: &mut StdRng,
        pause: Duration,
        log: bool,
    ) -> Result<Option<Review>, ApiFailed> {
        let right = subject(review).is_some_and(|(id, confidence, _)| is_right(id, confidence));
        let Some(decision) = decide(review, right, rng) else {
            self.release(&review.id).await?;
            return Ok(None);
        };
        tokio::time::sleep(pause).await;
        let after = self.decide(&review.id, &decision).await?;
        if !log {
            return Ok(Some(after));
        }
        let (_, confidence, what) = subject(review).unwrap_or(("", None, review.kind.clone()));
        let confidence = confidence.map_or_else(|| "none".to_owned(), |c| format!("{c:.2}"));
        let four_eyes = if after.status != "decided" && after.approvals < after.approvals_required {
            format!(
                " ({} of {} approvals)",
                after.approvals, after.approvals_required
            )
        } else {
            String::new()
        };
        tracing::info!(
            review = %review.id,
            "{} {} (confidence {confidence}), {} review in {}{four_eyes}",
            self.name,
            decision.describe(&what),
            review.kind,
            review.queue,
        );
        Ok(Some(after))
    }
}

/// A simulated reviewer at work until told to stop: picks a queue (weighted), and when it holds
/// more than [`LEFT_FOR_HUMANS`] pending reviews takes the most urgent and decides it at a
/// human pace. Failures are logged and waited out.
pub(super) async fn run(api: ReviewerApi, mut stop: watch::Receiver<bool>) {
    let mut rng = StdRng::from_entropy();
    let mut failures: u32 = 0;
    let mut pause = Duration::from_secs_f64(rng.gen_range(1.0..3.0));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = until_stopped(&mut stop) => return,
        }
        let worked = tokio::select! {
            r = work_one(&api, &mut rng) => r,
            _ = until_stopped(&mut stop) => return,
        };
        pause = match worked {
            Ok(true) => {
                failures = 0;
                Duration::from_millis(rng.gen_range(200..800))
            }
            // Nothing above the humans' share in that queue: glance at another soon.
            Ok(false) => Duration::from_millis(rng.gen_range(500..1500)),
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!("{}: {e}", api.name);
                Duration::from_secs(u64::from(failures.min(5)) * 6)
            }
        };
    }
}

/// One look at one queue; whether a review was decided.
async fn work_one(api: &ReviewerApi, rng: &mut StdRng) -> Result<bool, ApiFailed> {
    let (queue, _, kind) = QUEUES
        .choose_weighted(rng, |q| q.1)
        .copied()
        .unwrap_or(QUEUES[0]);
    if api.pending(queue, kind, LEFT_FOR_HUMANS + 1).await? <= LEFT_FOR_HUMANS {
        return Ok(false);
    }
    let Some(review) = api.next(queue).await? else {
        return Ok(false);
    };
    let pause = think_time(rng);
    match api.work(&review, rng, pause, true).await {
        Ok(after) => Ok(after.is_some()),
        // While it was being read, the agent cancelled it or its timeout decided it.
        Err(e) if e.is_conflict() => {
            tracing::info!(review = %review.id, "{}: the review closed before the decision: {e}", api.name);
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(kind: &str, action: Option<(&str, Value)>, message: Option<&str>) -> Review {
        Review {
            id: "r1".into(),
            kind: kind.into(),
            status: "claimed".into(),
            queue: "triage".into(),
            approvals: 0,
            approvals_required: 1,
            action: action.map(|(name, arguments)| ReviewedAction {
                id: "a1".into(),
                name: name.into(),
                arguments,
                confidence: Some(0.7),
            }),
            message: message.map(|text| ReviewedMessage {
                id: "m1".into(),
                text: text.into(),
                confidence: Some(0.5),
            }),
            conversation: Some(json!({"context": {"tags": ["cards"]}})),
        }
    }

    #[test]
    fn confidence_is_informative_but_imperfect() {
        let near = |c: f64, p: f64| (chance_right(Some(c)) - p).abs() < 1e-9;
        assert!(near(1.0, 0.999) && near(0.9, 0.995) && near(0.85, 0.9475));
        assert!(near(0.8, 0.9) && near(0.3, 0.4) && near(0.0, 0.1));
        assert!(chance_right(Some(0.8999)) < chance_right(Some(0.9)));
        assert!(near(2.0, 0.999));
        assert!(chance_right(Some(f64::NAN)) == chance_right(None));
        // The ground truth is fixed per item and follows the chance.
        assert_eq!(is_right("x", Some(0.5)), is_right("x", Some(0.5)));
        let share = |c: f64| {
            (0..4000)
                .filter(|i| is_right(&format!("id-{i}"), Some(c)))
                .count() as f64
                / 4000.0
        };
        assert!((share(0.9) - chance_right(Some(0.9))).abs() < 0.02);
        assert!((share(0.3) - chance_right(Some(0.3))).abs() < 0.03);
    }

    #[test]
    fn decisions_fit_each_kind_of_review() {
        let mut rng = StdRng::seed_from_u64(3);
        let refund = review(
            "approval",
            Some(("issue_refund", json!({"amount": 120.0, "currency": "GBP"}))),
            None,
        );
        let d = decide(&refund, true, &mut rng).expect("decided");
        assert_eq!(d.verdict, Some("approve"));
        let (mut edits, mut rejects) = (0, 0);
        for _ in 0..200 {
            let d = decide(&refund, false, &mut rng).expect("decided");
            match d.verdict {
                Some("edit") => {
                    let amount = d.arguments.as_ref().and_then(|a| a["amount"].as_f64());
                    assert!(amount.is_some_and(|a| a < 120.0), "{d:?}");
                    edits += 1;
                }
                Some("reject") => {
                    assert!(d.comment.is_some() && d.arguments.is_none());
                    rejects += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(edits > 40 && rejects > 40, "{edits} {rejects}");
        // An action with nothing to fix is refused.
        let closure = review("approval", Some(("close_account", json!({}))), None);
        for _ in 0..20 {
            assert_eq!(
                decide(&closure, false, &mut rng).and_then(|d| d.verdict),
                Some("reject")
            );
        }

        let draft = review(
            "draft",
            None,
            Some("Cash withdrawals are free up to 200 GBP."),
        );
        assert_eq!(
            decide(&draft, true, &mut rng).and_then(|d| d.verdict),
            Some("approve")
        );
        let d = decide(&draft, false, &mut rng).expect("decided");
        assert_eq!(d.verdict, Some("edit"));
        let text = d.text.unwrap_or_default();
        assert!(
            answers_on("cards").iter().any(|a| text.ends_with(a)),
            "{text}"
        );

        let qa = review("qa", None, Some("Some answer."));
        let d = decide(&qa, false, &mut rng).expect("graded");
        assert_eq!((d.verdict, d.grade), (None, Some("incorrect")));
        assert_eq!(d.labels.len(), 1);
        let flag = review("flag", None, Some("Some answer."));
        assert_eq!(
            decide(&flag, true, &mut rng).and_then(|d| d.grade),
            Some("correct")
        );
        assert!(decide(&review("escalation", None, Some("x")), true, &mut rng).is_none());

        let body = serde_json::to_value(Decision {
            verdict: Some("approve"),
            ..Decision::default()
        })
        .unwrap_or_default();
        assert_eq!(body, json!({"verdict": "approve"}));
    }

    #[test]
    fn reviews_parse_as_the_api_returns_them() {
        let body = json!({
            "id": "0190", "workspace": "demo", "kind": "approval", "status": "claimed",
            "queue": "finance", "priority": 5, "approvals_required": 2, "approvals": 1,
            "action": {"id": "a", "name": "issue_refund", "arguments": {"amount": 700},
                       "confidence": 0.93, "agent": "support-bot"},
            "message": null, "conversation": null, "decisions": [], "proposal": null
        });
        let r: Review = serde_json::from_value(body).expect("parses");
        assert_eq!((r.approvals, r.approvals_required), (1, 2));
        assert_eq!(r.action.map(|a| a.confidence), Some(Some(0.93)));
    }
}
