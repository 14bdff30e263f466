//! Admin endpoints: the policy (read, validate and version) and the audit log.

use super::parse_query;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{body_error, Admin, Auth};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use loopgate_domain::audit::Event;
use loopgate_domain::policy::Policy;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

#[utoipa::path(
    get, path = "/v1/policy", tag = "policy",
    responses(
        (status = 200, description = "The policy in force, as TOML; its version in the `Loopgate-Policy-Version` header (0: none yet, everything goes to review)", content_type = "application/toml", body = String),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_policy(State(state): State<AppState>, admin: Auth<Admin>) -> ApiResult<Response> {
    let current = state.store.current_policy(&admin.workspace).await?;
    let (version, text) = current.map_or((0, String::new()), |p| (p.version, p.text));
    let mut resp = text.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/toml; charset=utf-8"),
    );
    headers.insert("loopgate-policy-version", HeaderValue::from(version));
    Ok(resp)
}

/// A policy file from a request body: 400 unless UTF-8, 422 with every error's line and column
/// (in `details.errors`) unless it compiles.
pub(crate) fn parse_policy(body: &[u8]) -> Result<(&str, Policy), ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("body", "the policy must be UTF-8 text"))?;
    let policy = Policy::parse(text).map_err(|errors| {
        let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
        let mut err = ApiError::invalid("policy", first);
        err.code = "invalid_policy";
        err.details = Some(json!({
            "errors": errors.iter().map(|e| json!({"line": e.line, "column": e.column, "message": e.message})).collect::<Vec<_>>()
        }));
        err
    })?;
    Ok((text, policy))
}

#[derive(Serialize, ToSchema)]
pub struct PolicySaved {
    pub version: i64,
    pub rules: usize,
}

#[utoipa::path(
    put, path = "/v1/policy", tag = "policy",
    request_body(content((String = "application/toml"), (String = "text/plain")), description = "The policy file (TOML; any content type is read as UTF-8 text)"),
    responses(
        (status = 200, description = "Validated and in force (a new version unless unchanged)", body = PolicySaved),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "Invalid; `details.errors` lists each problem with line and column", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn put_policy(
    State(state): State<AppState>,
    admin: Auth<Admin>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<PolicySaved>> {
    let body = body.map_err(body_error)?;
    let (text, policy) = parse_policy(&body)?;
    let saved = state
        .store
        .put_policy(&admin.workspace, text, &admin.actor())
        .await?;
    state.policies.invalidate(&admin.workspace);
    Ok(Json(PolicySaved {
        version: saved.version,
        rules: policy.rules().len(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Events with a seq greater than this (default 0: from the start).
    pub after: Option<String>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Event>,
    /// Pass as `after` for the next page; `null` at the end of the log.
    pub next_after: Option<i64>,
}

#[utoipa::path(
    get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "Events in seq order", body = AuditPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn audit(
    State(state): State<AppState>,
    admin: Auth<Admin>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<AuditPage>> {
    let q: AuditQuery = parse_query(query.as_deref())?;
    let after = match q.after.as_deref() {
        None => 0,
        Some(a) => a
            .parse::<i64>()
            .ok()
            .filter(|a| *a >= 0)
            .ok_or_else(|| ApiError::invalid("after", "must be a seq, a whole number >= 0"))?,
    };
    let limit = super::whole_number(q.limit.as_deref(), "limit", 100, 1..=1000)?;
    let events = state
        .store
        .audit_events(&admin.workspace, after, limit)
        .await?;
    let next_after = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage { events, next_after }))
}

#[derive(Serialize, ToSchema)]
pub struct AuditVerdict {
    pub ok: bool,
    pub events: u64,
    /// The first seq where the chain breaks.
    pub bad_seq: Option<i64>,
    pub problem: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "Whether the workspace's hash chain is intact", body = AuditVerdict),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn audit_verify(
    State(state): State<AppState>,
    admin: Auth<Admin>,
) -> ApiResult<Response> {
    let verdict = match state.store.verify_audit(&admin.workspace).await? {
        Ok(n) => AuditVerdict {
            ok: true,
            events: n,
            bad_seq: None,
            problem: None,
        },
        Err(b) => AuditVerdict {
            ok: false,
            events: 0,
            bad_seq: Some(b.seq),
            problem: Some(b.problem),
        },
    };
    Ok((StatusCode::OK, Json(verdict)).into_response())
}
