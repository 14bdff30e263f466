//! Health and metrics, for load balancers and Prometheus.

use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[utoipa::path(
    get, path = "/metrics", tag = "system",
    responses((status = 200, description = "OpenMetrics text format (Prometheus scrapes it)", content_type = "application/openmetrics-text", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    // Gauges are read from the database at scrape time, so every node reports the same truth.
    if let Ok(workspaces) = state.store.workspaces().await {
        for ws in workspaces {
            if let Ok(counts) = state.store.counts(&ws).await {
                for (queue, n) in counts.open_reviews {
                    state
                        .metrics
                        .open_reviews
                        .get_or_create(&crate::metrics::QueueLabels {
                            workspace: ws.clone(),
                            queue,
                        })
                        .set(n);
                }
                for (status, n) in counts.actions {
                    state
                        .metrics
                        .actions
                        .get_or_create(&crate::metrics::StatusLabels {
                            workspace: ws.clone(),
                            status,
                        })
                        .set(n);
                }
            }
        }
    }
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
