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

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: HistogramFamily,
    events: Family<EventLabels, Counter>,
    pub open_reviews: Family<QueueLabels, Gauge>,
    pub actions: Family<StatusLabels, Gauge>,
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
        Metrics {
            registry,
            http_requests,
            http_seconds,
            events,
            open_reviews,
            actions,
        }
    }

    pub fn observe_event(&self, e: &Event) {
        self.events
            .get_or_create(&EventLabels {
                workspace: e.workspace.clone(),
                kind: e.event_type.clone(),
            })
            .inc();
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
