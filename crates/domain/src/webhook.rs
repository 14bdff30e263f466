//! Webhook delivery rules: which endpoints an event goes to, when to retry, when to give up, and
//! the Slack-compatible rendering. The HTTP sending itself lives in the server.

use crate::audit::Event;
use serde_json::{json, Value};
use std::time::Duration;

/// After this many failed attempts (about a day of backoff) a delivery is dead.
pub const MAX_ATTEMPTS: u32 = 15;
const FIRST_RETRY: Duration = Duration::from_secs(5);
const LONGEST_RETRY: Duration = Duration::from_secs(3600);

/// Does a subscription list (`"*"`, `"review.created"`, `"review.*"`) take this event type?
pub fn subscribed(patterns: &[String], event_type: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*"
            || p == event_type
            || p.strip_suffix(".*").is_some_and(|prefix| {
                event_type
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
    })
}

/// Is this a subscription pattern we understand?
pub fn valid_pattern(p: &str) -> bool {
    let body = p.strip_suffix(".*").unwrap_or(p);
    p == "*"
        || (!body.is_empty()
            && body.len() <= 64
            && body
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.'))
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// 2xx: delivered.
    Done,
    /// 410 Gone: the receiver asks us to stop; disable the endpoint.
    Disable,
    /// Try again after this long.
    RetryIn(Duration),
    /// Out of attempts.
    GiveUp,
}

/// Decide the next step after attempt number `attempt` (1-based) answered with `status` (None: no
/// answer: connection refused, timeout). `jitter` in 0..1 spreads retries so a recovering receiver
/// is not hit by every sender at once; `retry_after` honours a 429's or 503's `Retry-After`.
pub fn next_step(
    status: Option<u16>,
    retry_after: Option<Duration>,
    attempt: u32,
    jitter: f64,
) -> Next {
    match status {
        Some(s) if (200..300).contains(&s) => return Next::Done,
        Some(410) => return Next::Disable,
        _ => {}
    }
    if attempt >= MAX_ATTEMPTS {
        return Next::GiveUp;
    }
    if let (Some(429 | 503), Some(after)) = (status, retry_after) {
        return Next::RetryIn(after.min(LONGEST_RETRY));
    }
    Next::RetryIn(backoff(attempt, jitter))
}

/// Exponential backoff with "equal jitter": half the delay fixed, half random.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let full = FIRST_RETRY
        .saturating_mul(1u32 << exp)
        .min(LONGEST_RETRY)
        .as_secs_f64();
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.5
    };
    Duration::from_secs_f64(full / 2.0 + full / 2.0 * jitter)
}

/// A Slack incoming-webhook body for an event, with a link to the review when there is one.
pub fn slack_payload(e: &Event, public_url: &str) -> Value {
    let data = &e.data;
    let field = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or("");
    let mut text = match e.event_type.as_str() {
        "review.created" => format!(
            ":raising_hand: New {} review in queue *{}*: {}",
            field("kind"),
            field("queue"),
            field("reason")
        ),
        "review.decided" => format!(
            ":white_check_mark: Review decided by {}: {}",
            field("reviewer"),
            field("outcome")
        ),
        "review.expired" => ":hourglass: A review expired without a decision".to_owned(),
        "conversation.escalated" => {
            format!(":sos: A conversation needs a human: {}", field("reason"))
        }
        "feedback.created" => format!(":thumbsdown: A user rated an answer {}", field("rating")),
        other => format!("Loopgate event `{other}` on {}", e.subject),
    };
    let review = e
        .subject
        .strip_prefix("review:")
        .or_else(|| data.get("review_id").and_then(Value::as_str));
    if let Some(id) = review {
        text.push_str(&format!(
            " <{}/reviews/{id}|Open review>",
            public_url.trim_end_matches('/')
        ));
    }
    json!({ "text": text })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subscriptions() {
        assert!(subscribed(&patterns(&["*"]), "review.created"));
        assert!(subscribed(&patterns(&["review.created"]), "review.created"));
        assert!(subscribed(&patterns(&["review.*"]), "review.decided"));
        assert!(!subscribed(&patterns(&["review.*"]), "reviewx.decided"));
        assert!(!subscribed(
            &patterns(&["action.created"]),
            "review.created"
        ));
        assert!(valid_pattern("review.*") && valid_pattern("*") && valid_pattern("action.created"));
        assert!(!valid_pattern("") && !valid_pattern("Review") && !valid_pattern("a b"));
    }

    #[test]
    fn retry_schedule() {
        assert_eq!(next_step(Some(200), None, 1, 0.5), Next::Done);
        assert_eq!(next_step(Some(204), None, 9, 0.5), Next::Done);
        assert_eq!(next_step(Some(410), None, 1, 0.5), Next::Disable);
        assert_eq!(
            next_step(Some(429), Some(Duration::from_secs(7)), 1, 0.5),
            Next::RetryIn(Duration::from_secs(7))
        );
        assert_eq!(next_step(Some(500), None, MAX_ATTEMPTS, 0.5), Next::GiveUp);
        assert_eq!(next_step(None, None, MAX_ATTEMPTS, 0.5), Next::GiveUp);
        // Growing, jittered, capped.
        assert_eq!(backoff(1, 0.0), Duration::from_millis(2500));
        assert_eq!(backoff(1, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(2, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(30, 1.0), LONGEST_RETRY);
        assert!(
            matches!(next_step(Some(503), None, 3, 0.0), Next::RetryIn(d) if d == Duration::from_secs(10))
        );
    }

    #[test]
    fn slack_links_to_the_review() {
        let e = crate::audit::next_event(
            None,
            "default",
            "2026-01-01T00:00:00.000Z",
            "agent:bot",
            "review.created",
            "review:abc",
            json!({"kind": "approval", "queue": "finance", "reason": "large refund"}),
        );
        let p = slack_payload(&e, "https://loopgate.example.com/");
        let text = p["text"].as_str().unwrap();
        assert!(text.contains("finance") && text.contains("large refund"));
        assert!(text.contains("<https://loopgate.example.com/reviews/abc|Open review>"));
    }
}
