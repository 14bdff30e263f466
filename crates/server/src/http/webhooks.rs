//! Admin endpoints for webhooks: register, list, delete, and read the delivery log.

use super::{parse_id, parse_query};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Admin, ApiJson, Auth};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use loopgate_domain::webhook::valid_pattern;
use loopgate_store::{DeliveryRecord, NewWebhook, WebhookRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhookBody {
    /// Where to POST events (http or https).
    pub url: String,
    /// `whsec_` + base64 of 16 to 64 random bytes (Standard Webhooks). Omit it and one is made
    /// for you and shown once in the response.
    pub secret: Option<String>,
    /// Event types to send: exact (`review.created`), a family (`review.*`) or everything (`*`).
    pub events: Vec<String>,
    /// `standard` (default: the event JSON, signed) or `slack` (an incoming-webhook message with a
    /// link to the review).
    pub format: Option<String>,
}

/// Check a webhook registration (the API's and the console's alike) and make its secret when
/// none is given; the flag says whether it was generated (and must be shown once).
pub fn new_webhook(
    workspace: &str,
    actor: &str,
    url: &str,
    secret: Option<&str>,
    events: Vec<String>,
    format: Option<&str>,
) -> ApiResult<(NewWebhook, bool)> {
    let url = reqwest::Url::parse(url.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| ApiError::invalid("url", "must be an absolute http or https URL"))?;
    let (secret, generated) = match secret.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => {
            let bytes = s
                .strip_prefix("whsec_")
                .and_then(|raw| base64::engine::general_purpose::STANDARD.decode(raw).ok())
                .ok_or_else(|| ApiError::invalid("secret", "must be whsec_ followed by base64"))?;
            if !(16..=64).contains(&bytes.len()) {
                return Err(ApiError::invalid("secret", "must encode 16 to 64 bytes"));
            }
            (s.to_owned(), false)
        }
        None => {
            let bytes: [u8; 32] = rand::random();
            let s = format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            );
            (s, true)
        }
    };
    if events.is_empty() || events.len() > 50 {
        return Err(ApiError::invalid(
            "events",
            "list 1 to 50 event types (or \"*\")",
        ));
    }
    if let Some(bad) = events.iter().find(|e| !valid_pattern(e)) {
        return Err(ApiError::invalid(
            "events",
            format!("{bad:?} is not an event type, a family like \"review.*\", or \"*\""),
        ));
    }
    let format = format
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .unwrap_or("standard");
    if !matches!(format, "standard" | "slack") {
        return Err(ApiError::invalid("format", "must be standard or slack"));
    }
    Ok((
        NewWebhook {
            workspace: workspace.to_owned(),
            url: url.to_string(),
            secret,
            events,
            format: format.to_owned(),
            actor: actor.to_owned(),
        },
        generated,
    ))
}

#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookRecord,
    /// Only when the server generated it: store it now, it is not shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks", request_body = NewWebhookBody,
    responses((status = 201, body = CreatedWebhook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    admin: Auth<Admin>,
    ApiJson(body): ApiJson<NewWebhookBody>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    let (new, generated) = new_webhook(
        &admin.workspace,
        &admin.actor(),
        &body.url,
        body.secret.as_deref(),
        body.events,
        body.format.as_deref(),
    )?;
    let secret = new.secret.clone();
    let webhook = state.store.create_webhook(new).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            webhook,
            secret: generated.then_some(secret),
        }),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookRecord>,
}

#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, description = "Endpoints (secrets are never shown)", body = WebhookList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    admin: Auth<Admin>,
) -> ApiResult<Json<WebhookList>> {
    Ok(Json(WebhookList {
        webhooks: state.store.list_webhooks(&admin.workspace).await?,
    }))
}

#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id")),
    responses((status = 204, description = "Deleted; pending deliveries to it are dropped"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    admin: Auth<Admin>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "id")?;
    state
        .store
        .delete_webhook(&admin.workspace, id, &admin.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeliveriesQuery {
    /// 1 to 500, default 100.
    pub limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryRecord>,
}

#[utoipa::path(
    get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id"), DeliveriesQuery),
    responses((status = 200, description = "Newest first", body = DeliveryList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn deliveries(
    State(state): State<AppState>,
    admin: Auth<Admin>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<DeliveryList>> {
    let id = parse_id(&id, "id")?;
    let q: DeliveriesQuery = parse_query(query.as_deref())?;
    let limit = super::whole_number(q.limit.as_deref(), "limit", 100, 1..=500)?;
    Ok(Json(DeliveryList {
        deliveries: state.store.deliveries(&admin.workspace, id, limit).await?,
    }))
}
