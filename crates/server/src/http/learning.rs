//! The learning loop over HTTP: threshold tuning, policy backtests, "don't ask again"
//! proposals for admins, and the `threshold = "auto"` rules' current values.

use super::admin::parse_policy;
use super::{parse_id, parse_query, since_ms};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{body_error, Admin, Auth, Reviewer};
use crate::learning::{self, Scope, ThresholdState};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use loopgate_domain::learning::{BacktestReport, TuneResult};
use loopgate_store::ProposalRecord;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

const THIRTY_DAYS: Duration = Duration::from_secs(30 * 24 * 3600);

/// Names are short; a longer filter is a mistake, not a name.
fn name_filter(raw: Option<String>, field: &str) -> Result<Option<String>, ApiError> {
    match raw {
        Some(v) if v.is_empty() || v.len() > 200 => Err(ApiError::invalid(
            field,
            "must be 1 to 200 characters (leave it out for all)",
        )),
        other => Ok(other),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TuneQuery {
    /// The accuracy the auto-handled share must keep at the lower end of its 95% interval,
    /// e.g. `0.98`.
    pub target_accuracy: Option<String>,
    /// Only this agent's items.
    pub agent: Option<String>,
    /// Only actions of this name (AI messages are left out).
    pub action: Option<String>,
    /// How far back, e.g. `7d`, `30d` (default), at most `400d`.
    pub since: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TuneResponse {
    pub agent: Option<String>,
    pub action: Option<String>,
    pub since: chrono::DateTime<chrono::Utc>,
    /// `status` is `recommended` (with `threshold`, `automation_rate`, `accuracy`) or
    /// `insufficient_evidence` (with `reason` and `needed`).
    #[schema(value_type = Object)]
    pub result: TuneResult,
}

#[utoipa::path(
    get, path = "/v1/tune", tag = "learning", params(TuneQuery),
    description = "Recommends the lowest confidence threshold whose auto-handled share keeps the lower 95% Wilson bound of accuracy at or above the target, from graded evidence (QA grades, approvals, edits, rejections, flags), with the automation rate it would give. With too little evidence it says so and recommends nothing.",
    responses((status = 200, body = TuneResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn tune(
    State(state): State<AppState>,
    reviewer: Auth<Reviewer>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<TuneResponse>> {
    let q: TuneQuery = parse_query(query.as_deref())?;
    let target = q
        .target_accuracy
        .as_deref()
        .ok_or_else(|| ApiError::invalid("target_accuracy", "required, e.g. 0.98"))?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|t| (0.5..1.0).contains(t))
        .ok_or_else(|| {
            ApiError::invalid(
                "target_accuracy",
                "must be a number at least 0.5 and below 1",
            )
        })?;
    let scope = Scope {
        agent: name_filter(q.agent, "agent")?,
        action: name_filter(q.action, "action")?,
        since_ms: since_ms(q.since.as_deref(), "since", THIRTY_DAYS)?,
    };
    let result = learning::tune(state.store.as_ref(), &reviewer.workspace, &scope, target).await?;
    Ok(Json(TuneResponse {
        agent: scope.agent,
        action: scope.action,
        since: time_of_ms(scope.since_ms),
        result,
    }))
}

fn time_of_ms(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct BacktestQuery {
    /// How far back to replay, e.g. `7d`, `30d` (default), at most `400d`.
    pub since: Option<String>,
    /// Only this agent's items.
    pub agent: Option<String>,
    /// Only actions of this name.
    pub action: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BacktestResponse {
    /// The version of the policy in force it was compared with (0: none).
    pub current_version: i64,
    pub since: chrono::DateTime<chrono::Utc>,
    /// Outcome counts per rule, predicted automation rate and review load per queue for each
    /// policy, and the known-bad items (rejected, edited, graded incorrect, flagged) the
    /// candidate would let through unreviewed.
    #[schema(value_type = Object)]
    pub report: BacktestReport,
}

#[utoipa::path(
    post, path = "/v1/policy/backtest", tag = "learning", params(BacktestQuery),
    description = "Replays recorded actions and AI messages through a candidate policy and the one in force, side by side. Nothing changes.",
    request_body(content((String = "application/toml"), (String = "text/plain")), description = "The candidate policy file (TOML; any content type is read as UTF-8 text)"),
    responses((status = 200, body = BacktestResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, description = "The candidate does not compile (`details.errors`) or a parameter is bad", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn backtest(
    State(state): State<AppState>,
    admin: Auth<Admin>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<BacktestResponse>> {
    let q: BacktestQuery = parse_query(query.as_deref())?;
    let scope = Scope {
        agent: name_filter(q.agent, "agent")?,
        action: name_filter(q.action, "action")?,
        since_ms: since_ms(q.since.as_deref(), "since", THIRTY_DAYS)?,
    };
    let body = body.map_err(body_error)?;
    let (_, candidate) = parse_policy(&body)?;
    let store = state.store.as_ref();
    let (version, current) = learning::current_policy(store, &admin.workspace).await?;
    // Auto thresholds in the candidate start where the server has them now.
    let candidate = candidate.with_auto_thresholds(&store.auto_thresholds(&admin.workspace).await?);
    let report = learning::backtest(
        store,
        &admin.workspace,
        current,
        candidate,
        &scope,
        &mut |_| {},
    )
    .await?;
    Ok(Json(BacktestResponse {
        current_version: version,
        since: time_of_ms(scope.since_ms),
        report,
    }))
}

#[utoipa::path(
    get, path = "/v1/policy/proposals", tag = "learning",
    description = "Standing rules proposed by reviewers (\"approve and don't ask again\"), open ones first, each with its backtest.",
    responses((status = 200, body = Vec<ProposalRecord>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_proposals(
    State(state): State<AppState>,
    admin: Auth<Admin>,
) -> ApiResult<Json<Vec<ProposalRecord>>> {
    Ok(Json(state.store.list_proposals(&admin.workspace).await?))
}

#[utoipa::path(
    get, path = "/v1/policy/proposals/{id}", tag = "learning",
    params(("id" = String, Path, description = "The proposal's id")),
    responses((status = 200, body = ProposalRecord), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_proposal(
    State(state): State<AppState>,
    admin: Auth<Admin>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProposalRecord>> {
    let id = parse_id(&id, "id")?;
    state
        .store
        .get_proposal(&admin.workspace, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("proposal"))
}

async fn decide_proposal(
    state: &AppState,
    admin: &Auth<Admin>,
    id: &str,
    approve: bool,
) -> ApiResult<Json<ProposalRecord>> {
    let id = parse_id(id, "id")?;
    let record = state
        .store
        .decide_proposal(&admin.workspace, id, approve, &admin.actor())
        .await?;
    state.policies.invalidate(&admin.workspace);
    Ok(Json(record))
}

#[utoipa::path(
    post, path = "/v1/policy/proposals/{id}/approve", tag = "learning",
    description = "Adds the proposed rule to the policy in force, just before the rule that sent the approved item to review, as a new policy version.",
    params(("id" = String, Path, description = "The proposal's id")),
    responses((status = 200, body = ProposalRecord), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Already approved or rejected", body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn approve_proposal(
    State(state): State<AppState>,
    admin: Auth<Admin>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProposalRecord>> {
    decide_proposal(&state, &admin, &id, true).await
}

#[utoipa::path(
    post, path = "/v1/policy/proposals/{id}/reject", tag = "learning",
    params(("id" = String, Path, description = "The proposal's id")),
    responses((status = 200, body = ProposalRecord), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Already approved or rejected", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn reject_proposal(
    State(state): State<AppState>,
    admin: Auth<Admin>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProposalRecord>> {
    decide_proposal(&state, &admin, &id, false).await
}

/// A `threshold = "auto"` rule and the value in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct AutoThreshold {
    pub rule: String,
    pub target_accuracy: f64,
    pub min: f64,
    pub max: f64,
    pub value: f64,
}

#[utoipa::path(
    get, path = "/v1/policy/thresholds", tag = "learning",
    description = "The `threshold = \"auto\"` rules of the policy in force and their current values.",
    responses((status = 200, body = Vec<AutoThreshold>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn thresholds(
    State(state): State<AppState>,
    admin: Auth<Admin>,
) -> ApiResult<Json<Vec<AutoThreshold>>> {
    let (_, policy) = learning::current_policy(state.store.as_ref(), &admin.workspace).await?;
    Ok(Json(
        policy
            .auto_thresholds()
            .map(|(rule, target_accuracy, min, max, value)| AutoThreshold {
                rule: rule.name.clone(),
                target_accuracy,
                min,
                max,
                value,
            })
            .collect(),
    ))
}

#[utoipa::path(
    post, path = "/v1/policy/thresholds/recompute", tag = "learning",
    description = "Recomputes the `threshold = \"auto\"` rules from evidence now, as the server's schedule does; each change is an audit event with the evidence behind it.",
    responses((status = 200, body = Vec<ThresholdState>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn recompute_thresholds(
    State(state): State<AppState>,
    admin: Auth<Admin>,
) -> ApiResult<Json<Vec<ThresholdState>>> {
    let states = learning::recompute_thresholds(state.store.as_ref(), &admin.workspace).await?;
    state.policies.invalidate(&admin.workspace);
    Ok(Json(states))
}
