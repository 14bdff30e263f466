//! `GET /v1/stats`: how much the AI does alone, how often humans override it, how accurate its
//! sampled work is, and how the queues keep up.

use super::parse_query;
use crate::error::{ApiResult, ErrorBody};
use std::time::Duration;

const DAY: Duration = Duration::from_secs(24 * 3600);
use crate::extract::{Auth, Reviewer};
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::Json;
use loopgate_store::StatsRecord;
use serde::Deserialize;
use utoipa::IntoParams;

#[derive(Debug, Deserialize, IntoParams)]
pub struct StatsQuery {
    /// How far back, e.g. `1h`, `24h` (default), `30d`; at most 400 days.
    pub window: Option<String>,
    /// Time buckets in `series`, 1 to 500 (default 24).
    pub buckets: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/stats", tag = "stats", params(StatsQuery),
    responses((status = 200, body = StatsRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn stats(
    State(state): State<AppState>,
    reviewer: Auth<Reviewer>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<StatsRecord>> {
    let q: StatsQuery = parse_query(query.as_deref())?;
    let since = super::since_ms(q.window.as_deref(), "window", DAY)?;
    let buckets = super::whole_number(q.buckets.as_deref(), "buckets", 24, 1..=500)?;
    Ok(Json(
        state
            .store
            .stats(&reviewer.workspace, since, buckets)
            .await?,
    ))
}
