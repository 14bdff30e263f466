//! `GET /v1/stats`: how much the AI does alone, how often humans override it, how accurate its
//! sampled work is, and how the queues keep up.

use super::parse_query;
use crate::error::{ApiError, ApiResult, ErrorBody};
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
    let window = match q.window.as_deref() {
        None => std::time::Duration::from_secs(24 * 3600),
        Some(w) => humantime::parse_duration(w)
            .ok()
            .filter(|d| !d.is_zero() && d.as_secs() <= 400 * 24 * 3600)
            .ok_or_else(|| {
                ApiError::invalid("window", "a duration such as 1h, 24h or 30d, at most 400d")
            })?,
    };
    let buckets = super::whole_number(q.buckets.as_deref(), "buckets", 24, 1..=500)?;
    let since = chrono::Utc::now().timestamp_millis() - window.as_millis() as i64;
    Ok(Json(
        state
            .store
            .stats(&reviewer.workspace, since, buckets)
            .await?,
    ))
}
