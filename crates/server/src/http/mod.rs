//! The HTTP API: `/v1` resources, health, metrics and the OpenAPI document. Each module lists its
//! routes with their `#[utoipa::path]` docs through `utoipa_axum::routes!`, so a route cannot
//! exist without its documentation and `/openapi.json` cannot drift from the code.

pub mod accounts;
pub mod actions;
pub mod admin;
pub mod conversations;
pub mod events;
pub mod exports;
pub mod knowledge;
pub mod learning;
pub mod openapi_errors;
pub mod pauses;
pub mod retention;
pub mod reviews;
pub mod stats;
pub mod system;
pub mod webhooks;

use crate::error::ApiError;
use crate::extract::{AgentOnly, Auth};
use crate::AppState;
use axum::http::StatusCode;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Loopgate",
        description = "Human-in-the-loop server for AI agents: review gates, escalations, QA sampling and a tamper-evident audit log.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(crate::error::ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;
impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The whole application, ready to serve.
pub fn router(state: AppState) -> Router {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::healthz))
        .routes(routes!(system::metrics))
        .routes(routes!(actions::submit))
        .routes(routes!(actions::get_action))
        .routes(routes!(actions::cancel))
        .routes(routes!(reviews::list))
        .routes(routes!(reviews::get_review))
        .routes(routes!(reviews::next))
        .routes(routes!(reviews::claim))
        .routes(routes!(reviews::release))
        .routes(routes!(reviews::decide))
        .routes(routes!(pauses::pause_agent))
        .routes(routes!(pauses::resume_agent))
        .routes(routes!(pauses::pause_workspace))
        .routes(routes!(pauses::resume_workspace))
        .routes(routes!(pauses::list))
        .routes(routes!(admin::get_policy, admin::put_policy))
        .routes(routes!(admin::audit))
        .routes(routes!(admin::audit_verify))
        .routes(routes!(conversations::create, conversations::list))
        .routes(routes!(conversations::get_conversation))
        .routes(routes!(conversations::post_message))
        .routes(routes!(conversations::escalate))
        .routes(routes!(conversations::takeover))
        .routes(routes!(conversations::handback))
        .routes(routes!(conversations::close))
        .routes(routes!(conversations::feedback))
        .routes(routes!(events::workspace_stream))
        .routes(routes!(events::conversation_stream))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::delete))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(stats::stats))
        .routes(routes!(learning::tune))
        .routes(routes!(learning::backtest))
        .routes(routes!(learning::list_proposals))
        .routes(routes!(learning::get_proposal))
        .routes(routes!(learning::approve_proposal))
        .routes(routes!(learning::reject_proposal))
        .routes(routes!(learning::thresholds))
        .routes(routes!(learning::recompute_thresholds))
        .routes(routes!(exports::training))
        .routes(routes!(knowledge::propose, knowledge::list))
        .routes(routes!(accounts::create_key, accounts::list_keys))
        .routes(routes!(accounts::revoke_key))
        .routes(routes!(accounts::create_user, accounts::list_users))
        .routes(routes!(retention::get_retention, retention::put_retention))
        .split_for_parts();
    let mut doc = doc;
    openapi_errors::complete(&mut doc);
    let doc = std::sync::Arc::new(doc);
    let body_limit = state.config.body_limit;
    let mcp = mcp_service(&state);
    api.merge(crate::console::router())
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route(
            "/mcp",
            axum::routing::any_service(mcp).layer(axum::middleware::from_fn_with_state(
                state.clone(),
                mcp_agent_only,
            )),
        )
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed for this endpoint",
            )
        })
        .layer(axum::middleware::from_fn(crate::limits::json_rejections))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::limits::request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::internal(
                "a request handler panicked",
            ))
        }))
        .with_state(state)
}

/// `/mcp`: the MCP tools (`loopgate-mcp`) over streamable HTTP. Each call acts as the agent whose
/// token authorized its request, through the agent API of this very server.
fn mcp_service(state: &AppState) -> loopgate_mcp::StreamableHttp {
    let config = &state.config;
    let base_url = config.self_url.as_ref().unwrap_or(&config.public_url);
    let settings = loopgate_mcp::HttpSettings {
        base_url: base_url.clone(),
        timeout: loopgate_mcp::DEFAULT_TIMEOUT,
        body_limit: config.body_limit,
        sse_keepalive: config.sse_keepalive,
    };
    let mut stopping = state.stopping.clone();
    loopgate_mcp::streamable_http(settings, async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    })
}

/// No MCP request without a valid agent token (401, or 403 for another role's), before any tool
/// runs.
async fn mcp_agent_only(
    _agent: Auth<AgentOnly>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    next.run(req).await
}

/// Ids in paths: a malformed one is a clear 400, not a 404 that hides the typo.
pub fn parse_id(raw: &str, field: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::bad_request(field, format!("{raw:?} is not a valid id")))
}

/// A whole-number query parameter within `range`, `default` when absent; a bad value is a 422
/// naming the parameter.
pub fn whole_number(
    raw: Option<&str>,
    field: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ApiError> {
    match raw {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    field,
                    format!(
                        "must be a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )
            }),
    }
}

/// Query-string values, parsed by hand so each problem names its parameter.
pub fn parse_query<T: serde::de::DeserializeOwned>(raw: Option<&str>) -> Result<T, ApiError> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::bad_request("query", format!("bad query string: {e}")))
}

/// The start (Unix ms) of a window given as a duration such as `1h`, `24h`, `30d` (at most 400
/// days) ending now; `default` when absent; a bad value is a 422 naming the parameter.
pub fn since_ms(
    raw: Option<&str>,
    field: &str,
    default: std::time::Duration,
) -> Result<i64, ApiError> {
    let window = match raw {
        None => default,
        Some(w) => loopgate_domain::learning::parse_window(w).ok_or_else(|| {
            ApiError::invalid(field, "a duration such as 1h, 24h or 30d, at most 400d")
        })?,
    };
    Ok(chrono::Utc::now().timestamp_millis() - i64::try_from(window.as_millis()).unwrap_or(0))
}
