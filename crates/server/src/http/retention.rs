//! The workspace's retention period (EU AI Act art. 26(6)): how long decided and closed records
//! are kept before `loopgate prune` (or the server's hourly prune) removes them. Admins only.

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Admin, ApiJson, Auth};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use loopgate_domain::retention::RetentionDays;
use loopgate_store::RetentionRecord;
use serde::Deserialize;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionBody {
    /// Days to keep records after they became final: 183 (six months) to 36500.
    #[schema(example = 400)]
    pub days: i64,
}

#[utoipa::path(
    get, path = "/v1/workspace/retention", tag = "retention",
    responses(
        (status = 200, description = "The caller's workspace's retention period", body = RetentionRecord),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_retention(
    State(state): State<AppState>,
    admin: Auth<Admin>,
) -> ApiResult<Json<RetentionRecord>> {
    Ok(Json(state.store.retention(&admin.workspace).await?))
}

#[utoipa::path(
    put, path = "/v1/workspace/retention", tag = "retention", request_body = RetentionBody,
    responses(
        (status = 200, description = "In force; the change is in the audit log (`retention.updated`)", body = RetentionRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, description = "`days` is not a whole number from 183 to 36500", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn put_retention(
    State(state): State<AppState>,
    admin: Auth<Admin>,
    ApiJson(body): ApiJson<RetentionBody>,
) -> ApiResult<Json<RetentionRecord>> {
    let days = RetentionDays::parse(body.days).map_err(|e| ApiError::invalid("days", e.0))?;
    let saved = state
        .store
        .set_retention(&admin.workspace, days, &admin.actor())
        .await?;
    Ok(Json(saved))
}
