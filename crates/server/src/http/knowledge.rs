//! Knowledge changes: an agent proposes (`POST /v1/knowledge`, which opens a `kb_change` review),
//! reviewers decide through `/v1/reviews/{id}/decision`, and agents poll the approved ones
//! (`GET /v1/knowledge?after=SEQ`) or hear `knowledge.approved` on SSE and webhooks.

use super::parse_query;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{AgentOnly, AnyRole, ApiJson, Auth};
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use loopgate_domain::knowledge;
use loopgate_domain::types::Name;
use loopgate_store::{KnowledgeRecord, NewKnowledge};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A proposed change to the agent's knowledge base.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposeBody {
    /// 1 to 200 characters.
    pub title: String,
    /// The knowledge itself, at most 100 KB.
    pub text: String,
    /// The conversation that prompted it (one of this agent's).
    pub conversation_id: Option<uuid::Uuid>,
    /// The review queue (default `knowledge`).
    pub queue: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/knowledge", tag = "knowledge",
    request_body = ProposeBody,
    responses(
        (status = 201, description = "Proposed; `review_id` is the `kb_change` review that decides it", body = KnowledgeRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn propose(
    State(state): State<AppState>,
    agent: Auth<AgentOnly>,
    ApiJson(body): ApiJson<ProposeBody>,
) -> ApiResult<(StatusCode, Json<KnowledgeRecord>)> {
    let refused = |e: knowledge::Refused| ApiError::invalid(e.field, e.message);
    let title = knowledge::title(&body.title).map_err(refused)?;
    let text = knowledge::text(&body.text).map_err(refused)?;
    let queue = match body.queue.as_deref() {
        None => "knowledge".to_owned(),
        Some(q) => Name::parse(q)
            .map(|n| n.as_str().to_owned())
            .map_err(|e| ApiError::invalid("queue", e.to_string()))?,
    };
    let record = state
        .store
        .propose_knowledge(NewKnowledge {
            workspace: agent.workspace.clone(),
            agent: agent.name.clone(),
            title,
            text,
            conversation_id: body.conversation_id,
            queue,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(record)))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only changes approved after this `seq`, oldest first (poll with the last `cursor`).
    /// Without it: the newest approved changes, newest first.
    pub after: Option<String>,
    /// At most this many (1 to 500, default 100).
    pub limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KnowledgeList {
    pub changes: Vec<KnowledgeRecord>,
    /// The highest `seq` seen so far: pass it as `after` to get only what is approved later.
    pub cursor: i64,
}

#[utoipa::path(
    get, path = "/v1/knowledge", tag = "knowledge", params(ListQuery),
    responses((status = 200, description = "The workspace's approved knowledge changes (rejected and pending ones never appear)", body = KnowledgeList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Auth<AnyRole>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<KnowledgeList>> {
    let q: ListQuery = parse_query(query.as_deref())?;
    let after = match q.after.as_deref() {
        None => None,
        Some(_) => Some(super::whole_number(
            q.after.as_deref(),
            "after",
            0,
            0..=i64::MAX,
        )?),
    };
    let limit = super::whole_number(q.limit.as_deref(), "limit", 100, 1..=500)?;
    let changes = state
        .store
        .list_knowledge(&caller.workspace, after, limit)
        .await?;
    let cursor = changes
        .iter()
        .filter_map(|c| c.seq)
        .max()
        .unwrap_or(after.unwrap_or(0))
        .max(after.unwrap_or(0));
    Ok(Json(KnowledgeList { changes, cursor }))
}
