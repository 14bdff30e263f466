//! The webhook worker: drains the transactional outbox, signs each delivery per the Standard
//! Webhooks spec, and records the outcome. At-least-once: a row is leased before sending and only
//! marked delivered after a 2xx, so a crash mid-send means a retry, never a loss. It runs apart
//! from request handling, so a dead endpoint never slows the API.

use crate::AppState;
use futures::StreamExt;
use loopgate_domain::audit::Event;
use loopgate_domain::webhook::{next_step, slack_payload, Next};
use loopgate_store::{DeliveryOutcome, DueDelivery};
use std::time::Duration;
use tokio::sync::watch;

/// How many deliveries are in flight at once.
const CONCURRENCY: usize = 8;
/// How long a taken delivery is reserved for this worker.
const LEASE_MS: i64 = 60_000;

pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let client = match reqwest::Client::builder()
        .timeout(state.config.webhook_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Loopgate-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are off");
            return;
        }
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let due = match state.store.take_due_deliveries(64, LEASE_MS).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhook outbox; retrying");
                Vec::new()
            }
        };
        if !due.is_empty() {
            futures::stream::iter(due)
                .for_each_concurrent(CONCURRENCY, |d| deliver(&state, &client, d))
                .await;
            continue;
        }
        // Sleep until something is committed, the next retry falls due, or a second passes.
        let wait = match state.store.next_delivery_due().await {
            Ok(Some(at)) => {
                let ms = at - chrono::Utc::now().timestamp_millis();
                Duration::from_millis(ms.clamp(0, 1000) as u64)
            }
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = state.outbox_bell.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn deliver(state: &AppState, client: &reqwest::Client, d: DueDelivery) {
    let attempt = u32::try_from(d.attempts)
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    let outcome = match send(state, client, &d).await {
        Ok((status, retry_after)) => classify(Some(status), retry_after, attempt, None),
        Err(error) => classify(None, None, attempt, Some(error)),
    };
    if let DeliveryOutcome::Retry { error, .. } | DeliveryOutcome::Dead { error, .. } = &outcome {
        tracing::info!(delivery = %d.id, webhook = %d.webhook_id, attempt, error = %error, "webhook delivery failed");
    }
    if let Err(e) = state.store.record_delivery(&d.id, outcome).await {
        // The lease lapses and the delivery is retried: at-least-once.
        tracing::warn!(delivery = %d.id, error = %e, "cannot record a webhook delivery");
    }
}

fn classify(
    status: Option<u16>,
    retry_after: Option<Duration>,
    attempt: u32,
    error: Option<String>,
) -> DeliveryOutcome {
    let error = error.unwrap_or_else(|| match status {
        Some(s) => format!("the receiver answered {s}"),
        None => "no answer".to_owned(),
    });
    match next_step(status, retry_after, attempt, rand::random::<f64>()) {
        Next::Done => DeliveryOutcome::Delivered {
            status: status.unwrap_or(200),
        },
        Next::Disable => DeliveryOutcome::Gone,
        Next::GiveUp => DeliveryOutcome::Dead { status, error },
        Next::RetryIn(after) => DeliveryOutcome::Retry {
            status,
            error,
            at_ms: chrono::Utc::now().timestamp_millis()
                + i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2),
        },
    }
}

/// One attempt: the status and any `Retry-After`, or why there was no answer.
async fn send(
    state: &AppState,
    client: &reqwest::Client,
    d: &DueDelivery,
) -> Result<(u16, Option<Duration>), String> {
    let body = if d.format == "slack" {
        let event: Event = serde_json::from_str(&d.payload).map_err(|e| e.to_string())?;
        slack_payload(&event, &state.config.public_url).to_string()
    } else {
        d.payload.clone()
    };
    let timestamp = chrono::Utc::now().timestamp();
    let signature = standardwebhooks::Webhook::new(&d.secret)
        .and_then(|w| w.sign(&d.id, timestamp, body.as_bytes()))
        .map_err(|e| format!("cannot sign: {e}"))?;
    let resp = client
        .post(&d.url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| without_url(&e))?;
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after);
    Ok((resp.status().as_u16(), retry_after))
}

/// `Retry-After` is either seconds or an HTTP date (RFC 9110 section 10.2.3).
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ms = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// reqwest's errors include the URL, which may carry credentials in its query: keep it out of logs.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}
