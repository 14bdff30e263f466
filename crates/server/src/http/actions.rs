//! Agent endpoints for actions: submit a proposed action, wait for its decision, cancel it.

use super::{parse_id, parse_query};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{body_error, parse_json, AgentOnly, AnyRole, Auth};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use loopgate_domain::audit::{canonical_json, sha256_hex};
use loopgate_domain::policy::{PolicyInput, SubjectKind};
use loopgate_domain::types::{ActionName, Confidence, JsonObject};
use loopgate_store::{ActionRecord, ActionView, NewAction, Submitted};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// A proposed action (a tool call) for the policy to route.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitAction {
    /// The tool or action name, e.g. `issue_refund`.
    #[schema(value_type = String, example = "issue_refund")]
    pub name: ActionName,
    /// The tool call's arguments (a JSON object).
    #[schema(value_type = Object)]
    pub arguments: JsonObject,
    /// The agent's confidence, 0 to 1.
    #[schema(value_type = Option<f64>, minimum = 0.0, maximum = 1.0)]
    pub confidence: Option<Confidence>,
    /// Anything the policy or a reviewer should know: customer tier, channel, topic tags.
    #[schema(value_type = Option<Object>)]
    pub context: Option<JsonObject>,
    pub conversation_id: Option<String>,
}

/// Largest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

#[utoipa::path(
    post, path = "/v1/actions", tag = "actions",
    request_body = SubmitAction,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays with the same key return the original action")),
    responses(
        (status = 201, description = "Routed: approved, blocked, or pending with a review_id", body = ActionRecord),
        (status = 200, description = "A replay of an earlier request with the same Idempotency-Key", body = ActionRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn submit(
    State(state): State<AppState>,
    agent: Auth<AgentOnly>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<ActionRecord>)> {
    let body = body.map_err(body_error)?;
    let req: SubmitAction = parse_json(&body)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Idempotency-Key",
                        format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
                    )
                })?;
            Some(key.to_owned())
        }
    };
    if let Some(c) = &req.conversation_id {
        if c.is_empty() || c.len() > 128 {
            return Err(ApiError::invalid(
                "conversation_id",
                "must be 1 to 128 characters",
            ));
        }
    }
    let arguments = req.arguments.into_value();
    let context = req.context.unwrap_or_default().into_value();
    let confidence = req.confidence.map(f64::from);
    // The request's identity for idempotency: its meaning, not its bytes or key order.
    let request_hash = sha256_hex(
        canonical_json(&json!({
            "name": req.name.as_str(), "arguments": arguments, "confidence": confidence,
            "context": context, "conversation_id": req.conversation_id,
        }))
        .as_bytes(),
    );
    let active = state.policies.active(&agent.workspace).await?;
    let routing = active.policy.evaluate(&PolicyInput {
        kind: SubjectKind::Action,
        action_name: req.name.as_str(),
        arguments: &arguments,
        message_text: "",
        confidence,
        context: &context,
        agent: &agent.name,
        conversation_state: "",
        conversation_turns: 0,
    });
    let submitted = state
        .store
        .submit_action(NewAction {
            workspace: agent.workspace.clone(),
            agent: agent.name.clone(),
            name: req.name.as_str().to_owned(),
            arguments,
            confidence,
            context,
            conversation_id: req.conversation_id,
            idempotency_key,
            request_hash,
            routing,
            policy_version: active.version,
        })
        .await?;
    Ok(match submitted {
        Submitted::Created(a) => (StatusCode::CREATED, Json(a)),
        Submitted::Replayed(a) => (StatusCode::OK, Json(a)),
    })
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct WaitQuery {
    /// Long-poll: wait up to this many seconds (at most 60) for a final status.
    pub wait: Option<String>,
}

/// The longest long-poll; past it, proxies and clients tend to give up on their own.
pub const MAX_WAIT_SECS: f64 = 60.0;

#[utoipa::path(
    get, path = "/v1/actions/{id}", tag = "actions",
    params(("id" = String, Path, description = "The action's id"), WaitQuery),
    responses(
        (status = 200, description = "The action; with `wait`, once final or when the wait ran out", body = ActionView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_action(
    State(state): State<AppState>,
    caller: Auth<AnyRole>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<ActionView>> {
    let id = parse_id(&id, "id")?;
    let q: WaitQuery = parse_query(query.as_deref())?;
    let wait = match q.wait.as_deref() {
        None => 0.0,
        Some(w) => w
            .parse::<f64>()
            .ok()
            .filter(|w| w.is_finite() && (0.0..=MAX_WAIT_SECS).contains(w))
            .ok_or_else(|| ApiError::invalid("wait", "must be a number of seconds from 0 to 60"))?,
    };
    let load = || async {
        let view = state
            .store
            .get_action(&caller.workspace, id)
            .await?
            // Agents see their own actions only; reviewers and admins the whole workspace's.
            .filter(|v| caller.role.can_review() || v.action.agent == caller.name)
            .ok_or_else(|| ApiError::not_found("action"))?;
        Ok::<_, ApiError>(view)
    };
    // Register before reading, so a decision landing between the read and the wait still wakes us.
    let waiter = state.waiters.register(id);
    let notified = waiter.notify.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let view = load().await?;
    if view.action.status.is_final() || wait == 0.0 {
        return Ok(Json(view));
    }
    // Held while waiting; dropped when this handler ends, the client's leaving included.
    let _permit = state.limits.long_polls.acquire(&caller.holder())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(wait);
    let mut stopping = state.stopping.clone();
    loop {
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => return load().await.map(Json),
            _ = stopping.changed() => return load().await.map(Json),
        }
        notified.set(waiter.notify.notified());
        notified.as_mut().enable();
        let view = load().await?;
        if view.action.status.is_final() {
            return Ok(Json(view));
        }
    }
}

#[utoipa::path(
    post, path = "/v1/actions/{id}/cancel", tag = "actions",
    params(("id" = String, Path, description = "The action's id")),
    responses(
        (status = 200, description = "Cancelled", body = ActionRecord),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The action is no longer pending", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    agent: Auth<AgentOnly>,
    Path(id): Path<String>,
) -> ApiResult<Json<ActionRecord>> {
    let id = parse_id(&id, "id")?;
    Ok(Json(
        state
            .store
            .cancel_action(&agent.workspace, &agent.name, id)
            .await?,
    ))
}
