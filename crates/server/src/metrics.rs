//! Prometheus metrics. Labels are bounded: routes by their template (never the raw path),
//! workspaces and queues by name, event types from a fixed vocabulary.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use loopgate_domain::audit::Event;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    workspace: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub workspace: String,
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub workspace: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub workspace: String,
    pub queue: String,
    /// `approve`, `reject`, `edit`, `grade` (a fixed vocabulary).
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoutedLabels {
    pub workspace: String,
    /// `action` or `message`.
    pub subject: String,
    /// Where the policy sent it: `approved`, `pending`, `blocked`, `delivered`, `held`,
    /// `escalated` (a fixed vocabulary).
    pub status: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;
type QueueHistogramFamily = Family<QueueLabels, Histogram, fn() -> Histogram>;

/// Most (workspace, queue) label pairs tracked; beyond it they count under queue `_other`, so a
/// policy with thousands of queues cannot grow the metrics without bound.
const MAX_QUEUE_LABELS: usize = 1000;

fn wait_histogram() -> Histogram {
    // 1 s to about 4.5 days.
    Histogram::new(exponential_buckets(1.0, 2.0, 19))
}

pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: HistogramFamily,
    events: Family<EventLabels, Counter>,
    pub open_reviews: Family<QueueLabels, Gauge>,
    pub actions: Family<StatusLabels, Gauge>,
    decisions: Family<DecisionLabels, Counter>,
    decision_wait: QueueHistogramFamily,
    routed: Family<RoutedLabels, Counter>,
    queue_labels: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("loopgate");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_seconds: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let events = Family::<EventLabels, Counter>::default();
        let open_reviews = Family::<QueueLabels, Gauge>::default();
        let actions = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http_seconds.clone(),
        );
        registry.register("events", "Audit events appended, by type", events.clone());
        registry.register(
            "open_reviews",
            "Pending and claimed reviews, by queue",
            open_reviews.clone(),
        );
        registry.register("actions", "Actions stored, by status", actions.clone());
        let decisions = Family::<DecisionLabels, Counter>::default();
        let decision_wait: QueueHistogramFamily = Family::new_with_constructor(wait_histogram);
        let routed = Family::<RoutedLabels, Counter>::default();
        registry.register(
            "review_decisions",
            "Reviews decided, by queue and verdict",
            decisions.clone(),
        );
        registry.register(
            "review_wait_seconds",
            "Time from a review's creation to its decision, by queue",
            decision_wait.clone(),
        );
        registry.register(
            "routed",
            "Actions and AI messages by where the policy sent them (automation = approved + delivered)",
            routed.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_seconds,
            events,
            open_reviews,
            actions,
            decisions,
            decision_wait,
            routed,
            queue_labels: Default::default(),
        }
    }

    /// The queue label for `(workspace, queue)`: itself while fewer than [`MAX_QUEUE_LABELS`]
    /// pairs are tracked, `_other` after.
    fn queue_label(&self, workspace: &str, queue: &str) -> String {
        let Ok(mut seen) = self.queue_labels.lock() else {
            return "_other".into();
        };
        let key = (workspace.to_owned(), queue.to_owned());
        if seen.contains(&key) || seen.len() < MAX_QUEUE_LABELS {
            seen.insert(key);
            queue.to_owned()
        } else {
            "_other".into()
        }
    }

    pub fn observe_event(&self, e: &Event) {
        self.events
            .get_or_create(&EventLabels {
                workspace: e.workspace.clone(),
                kind: e.event_type.clone(),
            })
            .inc();
        match e.event_type.as_str() {
            "review.decided" => {
                let queue = e.data["queue"].as_str().unwrap_or("default");
                let queue = self.queue_label(&e.workspace, queue);
                let verdict = e.data["verdict"]
                    .as_str()
                    .filter(|v| matches!(*v, "approve" | "reject" | "edit"))
                    .unwrap_or("grade");
                self.decisions
                    .get_or_create(&DecisionLabels {
                        workspace: e.workspace.clone(),
                        queue: queue.clone(),
                        verdict: verdict.to_owned(),
                    })
                    .inc();
                if let Some(ms) = e.data["waited_ms"].as_i64() {
                    self.decision_wait
                        .get_or_create(&QueueLabels {
                            workspace: e.workspace.clone(),
                            queue,
                        })
                        .observe(ms as f64 / 1000.0);
                }
            }
            "action.created" | "message.created" => {
                // Only AI messages are routed by the policy.
                if e.event_type == "message.created" && e.data["role"] != "ai" {
                    return;
                }
                let status = match e.data["status"].as_str() {
                    Some(
                        s @ ("approved" | "pending" | "blocked" | "delivered" | "held"
                        | "escalated"),
                    ) => s,
                    _ => return,
                };
                let subject = if e.event_type == "action.created" {
                    "action"
                } else {
                    "message"
                };
                self.routed
                    .get_or_create(&RoutedLabels {
                        workspace: e.workspace.clone(),
                        subject: subject.to_owned(),
                        status: status.to_owned(),
                    })
                    .inc();
            }
            _ => {}
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Middleware: count and time every request by its route template.
pub async fn track(State(state): State<crate::AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let m = &state.metrics;
    m.http_seconds
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}
