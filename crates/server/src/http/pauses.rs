//! The stop button (EU AI Act art. 14(4)(e)): pause one agent or a whole workspace.

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, Auth, Reviewer};
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use loopgate_domain::action::{Pause, PauseMode};
use loopgate_domain::types::Name;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    /// `review`: every new action waits for a human. `block`: every new action is refused.
    #[schema(value_type = Option<String>, example = "review")]
    #[serde(default = "default_mode")]
    pub mode: PauseMode,
    /// Why: recorded in the audit log with who paused.
    pub reason: String,
}

fn default_mode() -> PauseMode {
    PauseMode::Review
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PauseList {
    /// The pauses in force in the workspace after the change (`agent: null` is the whole workspace).
    #[schema(value_type = Vec<Object>)]
    pub pauses: Vec<Pause>,
}

fn reason(r: &str) -> ApiResult<&str> {
    let r = r.trim();
    if r.is_empty() || r.len() > 1000 {
        return Err(ApiError::invalid(
            "reason",
            "say why, in 1 to 1000 characters",
        ));
    }
    Ok(r)
}

fn agent_name(raw: &str) -> ApiResult<Name> {
    Name::parse(raw).map_err(|e| ApiError::invalid("name", e.to_string()))
}

async fn change(
    state: &AppState,
    who: &Auth<Reviewer>,
    agent: Option<&str>,
    mode: Option<PauseMode>,
    why: &str,
) -> ApiResult<Json<PauseList>> {
    let pauses = state
        .store
        .set_pause(&who.workspace, agent, mode, why, &who.actor())
        .await?;
    Ok(Json(PauseList { pauses }))
}

#[utoipa::path(
    post, path = "/v1/agents/{name}/pause", tag = "pauses", request_body = PauseBody,
    params(("name" = String, Path, description = "The agent (its key's name)")),
    responses((status = 200, body = PauseList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn pause_agent(
    State(state): State<AppState>,
    who: Auth<Reviewer>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<PauseBody>,
) -> ApiResult<Json<PauseList>> {
    let agent = agent_name(&name)?;
    change(
        &state,
        &who,
        Some(agent.as_str()),
        Some(body.mode),
        reason(&body.reason)?,
    )
    .await
}

#[utoipa::path(
    post, path = "/v1/agents/{name}/resume", tag = "pauses", request_body = Option<ResumeBody>,
    params(("name" = String, Path, description = "The agent (its key's name)")),
    responses((status = 200, body = PauseList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn resume_agent(
    State(state): State<AppState>,
    who: Auth<Reviewer>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<PauseList>> {
    let agent = agent_name(&name)?;
    let why = resume_reason(&body)?;
    change(&state, &who, Some(agent.as_str()), None, &why).await
}

#[utoipa::path(
    post, path = "/v1/workspace/pause", tag = "pauses", request_body = PauseBody,
    responses((status = 200, body = PauseList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn pause_workspace(
    State(state): State<AppState>,
    who: Auth<Reviewer>,
    ApiJson(body): ApiJson<PauseBody>,
) -> ApiResult<Json<PauseList>> {
    change(&state, &who, None, Some(body.mode), reason(&body.reason)?).await
}

#[utoipa::path(
    post, path = "/v1/workspace/resume", tag = "pauses", request_body = Option<ResumeBody>,
    responses((status = 200, body = PauseList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn resume_workspace(
    State(state): State<AppState>,
    who: Auth<Reviewer>,
    body: axum::body::Bytes,
) -> ApiResult<Json<PauseList>> {
    let why = resume_reason(&body)?;
    change(&state, &who, None, None, &why).await
}

/// A resume may come with no body at all.
fn resume_reason(body: &[u8]) -> ApiResult<String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    let b: ResumeBody = crate::extract::parse_json(body)?;
    Ok(b.reason.unwrap_or_default())
}

#[utoipa::path(
    get, path = "/v1/pauses", tag = "pauses",
    responses((status = 200, body = PauseList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    who: Auth<Reviewer>,
) -> ApiResult<Json<PauseList>> {
    Ok(Json(PauseList {
        pauses: state.store.pauses(&who.workspace).await?,
    }))
}
