//! Reviewer endpoints: list, open, take the next, claim, release and decide reviews.

use super::{parse_id, parse_query};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, Auth, Reviewer};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use loopgate_domain::review::{DecisionInput, Grade, ReviewKind, ReviewStatus, Verdict};
use loopgate_domain::types::Name;
use loopgate_store::{ProposalRecord, ReviewDetail, ReviewFilter, ReviewRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// `open` (pending or claimed; the default), `all`, or one status:
    /// `pending`, `claimed`, `decided`, `expired`, `cancelled`.
    pub status: Option<String>,
    pub queue: Option<String>,
    /// `approval`, `draft`, `escalation`, `qa`, `flag`, `kb_change`.
    pub kind: Option<String>,
    /// At most this many (1 to 500, default 100).
    pub limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ReviewList {
    pub reviews: Vec<ReviewRecord>,
}

fn queue_param(q: Option<&str>) -> ApiResult<Option<String>> {
    q.map(|q| {
        Name::parse(q)
            .map(|n| n.as_str().to_owned())
            .map_err(|e| ApiError::invalid("queue", e.to_string()))
    })
    .transpose()
}

#[utoipa::path(
    get, path = "/v1/reviews", tag = "reviews", params(ListQuery),
    responses((status = 200, body = ReviewList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    reviewer: Auth<Reviewer>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<ReviewList>> {
    let q: ListQuery = parse_query(query.as_deref())?;
    if let Some(s) = q.status.as_deref() {
        if !matches!(s, "open" | "all") && ReviewStatus::parse(s).is_none() {
            return Err(ApiError::invalid(
                "status",
                "must be open, all, pending, claimed, decided, expired or cancelled",
            ));
        }
    }
    if let Some(k) = q.kind.as_deref() {
        if ReviewKind::parse(k).is_none() {
            return Err(ApiError::invalid(
                "kind",
                "must be approval, draft, escalation, qa, flag or kb_change",
            ));
        }
    }
    let limit = super::whole_number(q.limit.as_deref(), "limit", 100, 1..=500)?;
    let filter = ReviewFilter {
        status: q.status,
        queue: queue_param(q.queue.as_deref())?,
        kind: q.kind,
        limit,
    };
    let reviews = state
        .store
        .list_reviews(&reviewer.workspace, filter)
        .await?;
    Ok(Json(ReviewList { reviews }))
}

#[utoipa::path(
    get, path = "/v1/reviews/{id}", tag = "reviews",
    params(("id" = String, Path, description = "The review's id")),
    responses((status = 200, description = "The review with its subject and decisions", body = ReviewDetail),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_review(
    State(state): State<AppState>,
    reviewer: Auth<Reviewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<ReviewDetail>> {
    let id = parse_id(&id, "id")?;
    state
        .store
        .get_review(&reviewer.workspace, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("review"))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct NextQuery {
    /// Take from this queue only.
    pub queue: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/reviews/next", tag = "reviews", params(NextQuery),
    responses(
        (status = 200, description = "The most urgent pending review, now claimed by the caller", body = ReviewDetail),
        (status = 204, description = "Nothing pending"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn next(
    State(state): State<AppState>,
    reviewer: Auth<Reviewer>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let q: NextQuery = parse_query(query.as_deref())?;
    let queue = queue_param(q.queue.as_deref())?;
    let lease = lease_ms(&state);
    match state
        .store
        .next_review(&reviewer.workspace, queue.as_deref(), &reviewer.name, lease)
        .await?
    {
        Some(detail) => Ok(Json(detail).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

fn lease_ms(state: &AppState) -> i64 {
    i64::try_from(state.config.claim_lease.as_millis()).unwrap_or(i64::MAX)
}

#[utoipa::path(
    post, path = "/v1/reviews/{id}/claim", tag = "reviews",
    params(("id" = String, Path, description = "The review's id")),
    responses((status = 200, description = "Claimed (or the caller's claim renewed)", body = ReviewDetail),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Someone else holds the claim, or the review is closed", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn claim(
    State(state): State<AppState>,
    reviewer: Auth<Reviewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<ReviewDetail>> {
    let id = parse_id(&id, "id")?;
    let lease = lease_ms(&state);
    Ok(Json(
        state
            .store
            .claim_review(&reviewer.workspace, id, &reviewer.name, lease)
            .await?,
    ))
}

#[utoipa::path(
    post, path = "/v1/reviews/{id}/release", tag = "reviews",
    params(("id" = String, Path, description = "The review's id")),
    responses((status = 200, description = "Back in the queue", body = ReviewDetail),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The caller does not hold the claim", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn release(
    State(state): State<AppState>,
    reviewer: Auth<Reviewer>,
    Path(id): Path<String>,
) -> ApiResult<Json<ReviewDetail>> {
    let id = parse_id(&id, "id")?;
    Ok(Json(
        state
            .store
            .release_review(&reviewer.workspace, id, &reviewer.name)
            .await?,
    ))
}

/// A reviewer's decision. `approval` reviews take a `verdict` (`edit` with new `arguments`);
/// `qa` and `flag` reviews take a `grade`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    #[schema(value_type = Option<String>, example = "approve")]
    pub verdict: Option<Verdict>,
    /// With `edit` on an approval: the arguments to run with instead.
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<serde_json::Value>,
    /// With `edit` on a draft or escalation: the text to deliver instead; on a `kb_change`: the
    /// knowledge text to publish instead.
    pub text: Option<String>,
    /// With `edit` on a `kb_change`: a new title (optional).
    pub title: Option<String>,
    #[schema(value_type = Option<String>, example = "correct")]
    pub grade: Option<Grade>,
    pub score: Option<f64>,
    #[serde(default)]
    pub labels: Vec<String>,
    pub comment: Option<String>,
    /// With `approve` on an action's approval: "approve and don't ask again for cases like
    /// this". Proposes a standing rule (this agent's action of this name, at about this
    /// confidence, runs unreviewed) to the admins, with its backtest; nothing changes until an
    /// admin approves it. Only a decision that completes the approval proposes.
    #[serde(default)]
    pub dont_ask_again: bool,
}

/// A decision's answer: the review as it now stands, and the standing-rule proposal it made.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionResponse {
    #[serde(flatten)]
    pub review: ReviewDetail,
    /// With `dont_ask_again`, once the approval is complete.
    pub proposal: Option<ProposalRecord>,
}

#[utoipa::path(
    post, path = "/v1/reviews/{id}/decision", tag = "reviews",
    params(("id" = String, Path, description = "The review's id")),
    request_body = DecisionBody,
    responses((status = 200, description = "Recorded; the review as it now stands", body = DecisionResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Already decided, claimed by someone else, or already approved by the caller", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn decide(
    State(state): State<AppState>,
    reviewer: Auth<Reviewer>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> ApiResult<Json<DecisionResponse>> {
    let id = parse_id(&id, "id")?;
    if body.dont_ask_again && body.verdict != Some(Verdict::Approve) {
        return Err(ApiError::invalid(
            "dont_ask_again",
            "only an approval can stand for cases like this",
        ));
    }
    if body.dont_ask_again {
        let review = state
            .store
            .get_review(&reviewer.workspace, id)
            .await?
            .ok_or_else(|| ApiError::not_found("review"))?;
        if review.review.kind != ReviewKind::Approval {
            return Err(ApiError::invalid(
                "dont_ask_again",
                "only an approval of an agent's action can stand for cases like this",
            ));
        }
    }
    let input = DecisionInput {
        verdict: body.verdict,
        arguments: body.arguments,
        text: body.text,
        title: body.title,
        grade: body.grade,
        score: body.score,
        labels: body.labels,
        comment: body.comment,
    };
    let review = state
        .store
        .decide_review(&reviewer.workspace, id, &reviewer.name, input)
        .await?;
    // The decision is committed whatever happens next: a failed proposal is logged, not an
    // error for a reviewer whose approval counted.
    let proposal = if body.dont_ask_again && review.review.outcome.as_deref() == Some("approved") {
        match crate::learning::propose_standing_rule(
            state.store.as_ref(),
            &reviewer.workspace,
            &review,
            &reviewer.name,
        )
        .await
        {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, review = %id, "could not propose a standing rule");
                None
            }
        }
    } else {
        None
    };
    Ok(Json(DecisionResponse { review, proposal }))
}
