//! Live conversations: open, post messages (AI replies go through the policy), escalate, take
//! over, hand back, close; and end users' feedback on answers.

use super::{parse_id, parse_query};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{AgentOnly, AnyRole, ApiJson, Auth, Caller, Reviewer};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use loopgate_domain::auth::Role as KeyRole;
use loopgate_domain::conversation::{Role, Transition};
use loopgate_domain::policy::{PolicyInput, SubjectKind};
use loopgate_domain::types::{Confidence, JsonObject, Name};
use loopgate_store::{
    ConversationChange, ConversationRecord, ConversationView, FeedbackRecord, MessageRecord,
    NewFeedback, NewMessage,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    /// Your own id for the conversation; opening it again returns the same conversation.
    pub external_id: Option<String>,
    /// Customer tier, channel, topic tags...: what the policy and reviewers should know.
    #[schema(value_type = Option<Object>)]
    pub context: Option<JsonObject>,
}

#[utoipa::path(
    post, path = "/v1/conversations", tag = "conversations", request_body = NewConversation,
    responses(
        (status = 201, description = "Opened", body = ConversationRecord),
        (status = 200, description = "Already open under this external_id", body = ConversationRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    agent: Auth<AgentOnly>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ConversationRecord>)> {
    let req: NewConversation = if body.iter().all(u8::is_ascii_whitespace) {
        NewConversation::default()
    } else {
        crate::extract::parse_json(&body)?
    };
    if let Some(ext) = &req.external_id {
        if ext.is_empty() || ext.len() > 128 {
            return Err(ApiError::invalid(
                "external_id",
                "must be 1 to 128 characters",
            ));
        }
    }
    let (conversation, created) = state
        .store
        .create_conversation(
            &agent.workspace,
            &agent.name,
            req.external_id,
            req.context.unwrap_or_default().into_value(),
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(conversation)))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// `open` (not closed), or one state: `ai`, `waiting`, `human`, `closed`. Default: all.
    pub state: Option<String>,
    /// 1 to 500, default 100.
    pub limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationList {
    pub conversations: Vec<ConversationRecord>,
}

#[utoipa::path(
    get, path = "/v1/conversations", tag = "conversations", params(ListQuery),
    responses((status = 200, description = "Most recently active first", body = ConversationList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    reviewer: Auth<Reviewer>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<ConversationList>> {
    let q: ListQuery = parse_query(query.as_deref())?;
    if let Some(s) = q.state.as_deref() {
        if !matches!(s, "open" | "ai" | "waiting" | "human" | "closed") {
            return Err(ApiError::invalid(
                "state",
                "must be open, ai, waiting, human or closed",
            ));
        }
    }
    let limit = super::whole_number(q.limit.as_deref(), "limit", 100, 1..=500)?;
    let conversations = state
        .store
        .list_conversations(&reviewer.workspace, q.state.as_deref(), limit)
        .await?;
    Ok(Json(ConversationList { conversations }))
}

/// May this caller see this conversation? Reviewers any in their workspace, agents their own.
fn may_see(caller: &Caller, c: &ConversationRecord) -> bool {
    caller.role.can_review() || c.agent == caller.name
}

/// A conversation the caller may see (without its transcript), or 404.
pub async fn visible(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<ConversationRecord> {
    state
        .store
        .conversation(&caller.workspace, id)
        .await?
        .filter(|c| may_see(caller, c))
        .ok_or_else(|| ApiError::not_found("conversation"))
}

#[utoipa::path(
    get, path = "/v1/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, description = "The conversation's id")),
    responses((status = 200, description = "State and messages (held drafts included, with their status)", body = ConversationView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_conversation(
    State(state): State<AppState>,
    caller: Auth<AnyRole>,
    Path(id): Path<String>,
) -> ApiResult<Json<ConversationView>> {
    let id = parse_id(&id, "id")?;
    state
        .store
        .get_conversation(&caller.workspace, id)
        .await?
        .filter(|c| may_see(&caller, &c.conversation))
        .map(Json)
        .ok_or_else(|| ApiError::not_found("conversation"))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// `user` and `ai` (and `system`) come from the agent; `human` from a reviewer who took over.
    #[schema(value_type = String, example = "ai")]
    pub role: Role,
    pub text: String,
    /// The AI's confidence in an `ai` message, 0 to 1.
    #[schema(value_type = Option<f64>, minimum = 0.0, maximum = 1.0)]
    pub confidence: Option<Confidence>,
}

/// Longest message accepted, in characters.
const MAX_TEXT: usize = 20_000;

#[utoipa::path(
    post, path = "/v1/conversations/{id}/messages", tag = "conversations",
    params(("id" = String, Path, description = "The conversation's id")),
    request_body = PostMessage,
    responses(
        (status = 201, description = "Posted: `status` is delivered, held (a draft awaiting review) or escalated", body = MessageRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The conversation's state does not allow this role to post (e.g. the AI while a human has it)", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn post_message(
    State(state): State<AppState>,
    caller: Auth<AnyRole>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PostMessage>,
) -> ApiResult<(StatusCode, Json<MessageRecord>)> {
    let id = parse_id(&id, "id")?;
    match (req.role, caller.role) {
        (Role::Human, r) if r.can_review() => {}
        (Role::Human, _) => {
            return Err(ApiError::forbidden(
                "human messages come from a reviewer or admin key",
            ))
        }
        (_, KeyRole::Agent) => {}
        (_, _) => {
            return Err(ApiError::forbidden(
                "user, ai and system messages come from the conversation's agent key",
            ))
        }
    }
    let text = req.text.trim();
    if text.is_empty() || req.text.chars().count() > MAX_TEXT {
        return Err(ApiError::invalid(
            "text",
            format!("must be 1 to {MAX_TEXT} characters"),
        ));
    }
    if req.confidence.is_some() && req.role != Role::Ai {
        return Err(ApiError::invalid(
            "confidence",
            "only ai messages carry a confidence",
        ));
    }
    let conversation = visible(&state, &caller, id).await?;
    let confidence = req.confidence.map(f64::from);
    let (routing, policy_version) = if req.role == Role::Ai {
        let active = state.policies.active(&caller.workspace).await?;
        let routing = active.policy.evaluate(&PolicyInput {
            kind: SubjectKind::Message,
            action_name: "",
            arguments: &serde_json::Value::Object(Default::default()),
            message_text: &req.text,
            confidence,
            context: &conversation.context,
            agent: &conversation.agent,
            conversation_state: conversation.state.as_str(),
            conversation_turns: conversation.turns,
        });
        (Some(routing), active.version)
    } else {
        (None, 0)
    };
    let message = state
        .store
        .post_message(NewMessage {
            workspace: caller.workspace.clone(),
            conversation_id: id,
            role: req.role,
            text: req.text,
            confidence,
            author: caller.name.clone(),
            agent: (caller.role == KeyRole::Agent).then(|| caller.name.clone()),
            routing,
            policy_version,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(message)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionBody {
    /// Why: shown to reviewers and kept in the audit log.
    pub reason: Option<String>,
    /// Escalations only: the queue for the escalation review (default `default`).
    pub queue: Option<String>,
    /// Escalations only: its priority (higher first).
    pub priority: Option<i64>,
    /// Escalations only: the SLA, e.g. `15m`; past it the review moves to the front of its queue.
    pub timeout: Option<String>,
}

fn transition_body(body: &[u8]) -> ApiResult<TransitionBody> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(TransitionBody::default());
    }
    crate::extract::parse_json(body)
}

async fn change(
    state: &AppState,
    caller: &Caller,
    id: &str,
    transition: Transition,
    body: &[u8],
) -> ApiResult<Json<ConversationRecord>> {
    let id = parse_id(id, "id")?;
    let b = transition_body(body)?;
    if b.reason.as_ref().is_some_and(|r| r.len() > 1000) {
        return Err(ApiError::invalid("reason", "at most 1000 characters"));
    }
    let queue = match b.queue.as_deref() {
        None => "default".to_owned(),
        Some(q) => Name::parse(q)
            .map_err(|e| ApiError::invalid("queue", e.to_string()))?
            .as_str()
            .to_owned(),
    };
    let due_in_ms = b
        .timeout
        .as_deref()
        .map(|t| {
            humantime::parse_duration(t)
                .ok()
                .filter(|d| !d.is_zero() && d.as_secs() <= 366 * 24 * 3600)
                .map(|d| d.as_millis() as i64)
                .ok_or_else(|| ApiError::invalid("timeout", "a duration such as 15m or 2h"))
        })
        .transpose()?;
    let record = state
        .store
        .transition_conversation(ConversationChange {
            workspace: caller.workspace.clone(),
            id,
            transition,
            actor: caller.actor(),
            human: caller.role.can_review().then(|| caller.name.clone()),
            agent: (caller.role == KeyRole::Agent).then(|| caller.name.clone()),
            reason: b.reason,
            queue,
            priority: b.priority.unwrap_or(0),
            due_in_ms,
        })
        .await?;
    Ok(Json(record))
}

#[utoipa::path(
    post, path = "/v1/conversations/{id}/escalate", tag = "conversations",
    params(("id" = String, Path, description = "The conversation's id")),
    request_body = Option<TransitionBody>,
    responses((status = 200, description = "Now `waiting`, with an escalation review in the queue", body = ConversationRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn escalate(
    State(state): State<AppState>,
    caller: Auth<AnyRole>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ConversationRecord>> {
    change(&state, &caller, &id, Transition::Escalate, &body).await
}

#[utoipa::path(
    post, path = "/v1/conversations/{id}/takeover", tag = "conversations",
    params(("id" = String, Path, description = "The conversation's id")),
    request_body = Option<TransitionBody>,
    responses((status = 200, description = "Now `human`: the AI's messages are refused until hand-back", body = ConversationRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn takeover(
    State(state): State<AppState>,
    reviewer: Auth<Reviewer>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ConversationRecord>> {
    change(&state, &reviewer, &id, Transition::Takeover, &body).await
}

#[utoipa::path(
    post, path = "/v1/conversations/{id}/handback", tag = "conversations",
    params(("id" = String, Path, description = "The conversation's id")),
    request_body = Option<TransitionBody>,
    responses((status = 200, description = "Back to `ai`", body = ConversationRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn handback(
    State(state): State<AppState>,
    reviewer: Auth<Reviewer>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ConversationRecord>> {
    change(&state, &reviewer, &id, Transition::Handback, &body).await
}

#[utoipa::path(
    post, path = "/v1/conversations/{id}/close", tag = "conversations",
    params(("id" = String, Path, description = "The conversation's id")),
    request_body = Option<TransitionBody>,
    responses((status = 200, description = "Closed; its open drafts and escalations are cancelled", body = ConversationRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn close(
    State(state): State<AppState>,
    caller: Auth<AnyRole>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ConversationRecord>> {
    change(&state, &caller, &id, Transition::Close, &body).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    /// `up` or `down`; `down` opens a `flag` review.
    pub rating: Rating,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    Up,
    Down,
}

#[utoipa::path(
    post, path = "/v1/messages/{id}/feedback", tag = "conversations",
    params(("id" = String, Path, description = "The message's id")),
    request_body = FeedbackBody,
    responses((status = 201, description = "Recorded; a thumbs-down carries the `review_id` of its flag review", body = FeedbackRecord),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The message was never shown to the user", body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn feedback(
    State(state): State<AppState>,
    agent: Auth<AgentOnly>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<FeedbackBody>,
) -> ApiResult<(StatusCode, Json<FeedbackRecord>)> {
    let id = parse_id(&id, "id")?;
    if body
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > 5000)
    {
        return Err(ApiError::invalid("comment", "at most 5000 characters"));
    }
    let record = state
        .store
        .add_feedback(NewFeedback {
            workspace: agent.workspace.clone(),
            agent: agent.name.clone(),
            message_id: id,
            rating: match body.rating {
                Rating::Up => "up".into(),
                Rating::Down => "down".into(),
            },
            comment: body.comment,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(record)))
}
