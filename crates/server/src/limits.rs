//! Abuse limits: a token-bucket rate per API key and console session, caps on the long-polls and
//! event streams one key may hold open, the overall request timeout, and the JSON 413 for
//! oversized bodies. Everything here answers with the API's error shape, never plain text.
//!
//! Limits are per *key* (checked after the token is authenticated), so the limiter's memory is
//! bounded by the number of real keys and sessions, not by what strangers send; unauthenticated
//! requests cost one hash lookup and get a 401.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Who a limit is counted against: an API key (by its id) or a console session (by the SHA-256
/// of its cookie, so the cookie itself is never kept here).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holder {
    Key(Uuid),
    Session(String),
}

impl Holder {
    pub fn session(cookie: &str) -> Holder {
        Holder::Session(loopgate_domain::audit::sha256_hex(cookie.as_bytes()))
    }
}

/// A sustained rate (`count` requests per `per`) and the burst a bucket holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: NonZeroU32,
    pub per: Duration,
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// Generous enough for the demo and busy agents, low enough to stop a runaway loop.
    pub const DEFAULT: RateLimit = RateLimit {
        count: NonZeroU32::new(500).expect("nonzero"),
        per: Duration::from_secs(1),
        burst: NonZeroU32::new(1000).expect("nonzero"),
    };

    /// Parse `off`, `N/UNIT` or `N/UNIT,burst=M` (UNIT: `s`, `m`, `h`, also spelled out), e.g.
    /// `500/s,burst=1000`. Without a burst, a bucket holds twice the rate's count. `Ok(None)`
    /// means "no limit".
    pub fn parse(text: &str) -> Result<Option<RateLimit>, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (rate, burst) = match text.split_once(',') {
            None => (text, None),
            Some((rate, rest)) => {
                let value = rest
                    .trim()
                    .strip_prefix("burst=")
                    .ok_or_else(|| format!("{rest:?}: expected burst=N after the comma"))?;
                (rate, Some(value.trim()))
            }
        };
        let (count, unit) = rate
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: expected N/s, N/m, N/h or off"))?;
        let count = positive(count, "the rate")?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("{other:?}: the unit must be s, m or h")),
        };
        let burst = match burst {
            Some(b) => positive(b, "the burst")?,
            None => count.saturating_mul(NonZeroU32::MIN.saturating_add(1)),
        };
        Ok(Some(RateLimit { count, per, burst }))
    }

    fn quota(&self) -> Quota {
        // One request's worth of the bucket refills every `per / count`; never a zero period.
        let period = (self.per / self.count.get()).max(Duration::from_nanos(1));
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(self.count))
            .allow_burst(self.burst)
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit},burst={}", self.count, self.burst)
    }
}

fn positive(text: &str, what: &str) -> Result<NonZeroU32, String> {
    text.trim().parse::<NonZeroU32>().map_err(|_| {
        format!(
            "{text:?}: {what} must be a whole number from 1 to {}",
            u32::MAX
        )
    })
}

/// The limits of one server: the per-holder buckets and the open-connection gauges.
pub struct Limits {
    rate: Option<DefaultKeyedRateLimiter<Holder>>,
    pub long_polls: Arc<Gauge>,
    pub streams: Arc<Gauge>,
}

/// Forget idle buckets once this many holders have one (a full bucket is the same as none).
const PRUNE_ABOVE: usize = 4096;

impl Limits {
    pub fn new(config: &crate::Config) -> Limits {
        Limits {
            rate: config.rate_limit.map(|r| RateLimiter::keyed(r.quota())),
            long_polls: Arc::new(Gauge::new("long-polls", config.max_long_polls)),
            streams: Arc::new(Gauge::new("event streams", config.max_streams)),
        }
    }

    /// Take one request from `holder`'s bucket, or a 429 saying when to come back.
    pub fn check_rate(&self, holder: &Holder) -> Result<(), ApiError> {
        let Some(limiter) = &self.rate else {
            return Ok(());
        };
        if limiter.len() > PRUNE_ABOVE {
            limiter.retain_recent();
        }
        limiter.check_key(holder).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            rate_limited(
                "too many requests for this key; slow down and retry after the given seconds",
                wait,
            )
        })
    }
}

/// A 429 with `Retry-After` in whole seconds, rounded up and at least 1.
pub fn rate_limited(message: &str, wait: Duration) -> ApiError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).retry_after(secs.max(1))
}

/// How many connections of one kind each holder has open, capped at `max`.
pub struct Gauge {
    what: &'static str,
    max: usize,
    open: Mutex<HashMap<Holder, usize>>,
}

impl Gauge {
    pub fn new(what: &'static str, max: usize) -> Gauge {
        Gauge {
            what,
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A permit for one more open connection, released when dropped (the handler or stream that
    /// holds it ends, including when the client goes away); a 429 at the cap.
    pub fn acquire(self: &Arc<Self>, holder: &Holder) -> Result<Permit, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(holder.clone()).or_insert(0);
        if *count >= self.max {
            return Err(rate_limited(
                &format!(
                    "this key already has {} {} open, the most allowed; close one first",
                    self.max, self.what
                ),
                Duration::from_secs(1),
            ));
        }
        *count += 1;
        Ok(Permit {
            gauge: self.clone(),
            holder: holder.clone(),
        })
    }

    /// How many `holder` has open now.
    pub fn open(&self, holder: &Holder) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(holder).copied().unwrap_or(0)
    }
}

/// One open long-poll or stream; dropping it frees the slot.
pub struct Permit {
    gauge: Arc<Gauge>,
    holder: Holder,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.gauge.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.holder) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.holder);
            }
        }
    }
}

/// The overall deadline of a request, up to its response head. Streams are not cut: an SSE
/// response's head is sent at once and its body is not timed. A long-poll (`wait=`) may wait its
/// full 60 s on top; `/mcp` (whose tool calls wait for humans) manages its own time.
pub async fn request_timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.config.request_timeout;
    if limit.is_zero() || req.uri().path().starts_with("/mcp") {
        return next.run(req).await;
    }
    let long_poll = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("wait=")));
    let extra = if long_poll {
        Duration::from_secs_f64(crate::http::actions::MAX_WAIT_SECS)
    } else {
        Duration::ZERO
    };
    match tokio::time::timeout(limit + extra, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than the server allows ({} s)",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

/// The API answers in its JSON error shape even where axum's own extractors reject a request
/// with plain text (a `Bytes` body over the size limit is a text 413): such a 4xx on `/v1/` is
/// rewritten to `{"error": {"code", "message"}}` with the same status.
pub async fn json_rejections(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/v1/");
    let resp = next.run(req).await;
    let plain_text = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !api || !resp.status().is_client_error() || !plain_text {
        return resp;
    }
    let status = resp.status();
    let text = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "payload_too_large",
            "the request body is larger than the server accepts",
        )
        .field("body"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(status, "unsupported_media_type", text).field("Content-Type")
        }
        _ => ApiError::new(status, "bad_request", text),
    };
    error.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn parses_rates_units_and_bursts() {
        let r = RateLimit::parse("200/s").unwrap().unwrap();
        assert_eq!(
            r,
            RateLimit {
                count: nz(200),
                per: Duration::from_secs(1),
                burst: nz(400)
            }
        );
        let r = RateLimit::parse(" 500/s,burst=1000 ").unwrap().unwrap();
        assert_eq!((r.count, r.burst), (nz(500), nz(1000)));
        assert_eq!(
            RateLimit::parse("60/min").unwrap().unwrap().per,
            Duration::from_secs(60)
        );
        assert_eq!(
            RateLimit::parse("10/h, burst=1").unwrap().unwrap(),
            RateLimit {
                count: nz(10),
                per: Duration::from_secs(3600),
                burst: nz(1)
            }
        );
        assert_eq!(RateLimit::parse("off").unwrap(), None);
        assert_eq!(RateLimit::parse("OFF").unwrap(), None);
    }

    #[test]
    fn round_trips_through_display() {
        for text in ["500/s,burst=1000", "3/m,burst=3", "10/h,burst=20"] {
            let r = RateLimit::parse(text).unwrap().unwrap();
            assert_eq!(r.to_string(), text);
        }
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in [
            "",
            "200",
            "0/s",
            "-1/s",
            "x/s",
            "200/d",
            "200/s,",
            "200/s,burst=0",
            "200/s,b=3",
            "1.5/s",
            "99999999999/s",
        ] {
            assert!(RateLimit::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_huge_burst_does_not_overflow() {
        let r = RateLimit::parse("4294967295/s").unwrap().unwrap();
        assert_eq!(r.burst.get(), u32::MAX);
        let _ = r.quota();
    }

    #[test]
    fn buckets_are_per_holder_and_say_when_to_retry() {
        let config = crate::Config {
            rate_limit: RateLimit::parse("1/m,burst=2").unwrap(),
            ..crate::Config::default()
        };
        let limits = Limits::new(&config);
        let (a, b) = (Holder::Key(Uuid::new_v4()), Holder::session("cookie"));
        assert!(limits.check_rate(&a).is_ok());
        assert!(limits.check_rate(&a).is_ok());
        let e = limits.check_rate(&a).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.code, "rate_limited");
        let retry = e.retry_after.unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        // Another holder has its own bucket.
        assert!(limits.check_rate(&b).is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let s = |d| rate_limited("x", d).retry_after.unwrap();
        assert_eq!(s(Duration::ZERO), 1);
        assert_eq!(s(Duration::from_millis(1)), 1);
        assert_eq!(s(Duration::from_millis(1001)), 2);
        assert_eq!(s(Duration::from_secs(3)), 3);
    }

    #[test]
    fn permits_count_up_to_the_cap_and_free_on_drop() {
        let gauge = Arc::new(Gauge::new("streams", 2));
        let k = Holder::Key(Uuid::new_v4());
        let p1 = gauge.acquire(&k).unwrap();
        let p2 = gauge.acquire(&k).unwrap();
        let e = gauge.acquire(&k).err().unwrap();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after, Some(1));
        assert!(gauge.acquire(&Holder::session("other")).is_ok());
        drop(p1);
        assert_eq!(gauge.open(&k), 1);
        let _p3 = gauge.acquire(&k).unwrap();
        drop(p2);
        assert_eq!(gauge.open(&k), 1);
    }
}
