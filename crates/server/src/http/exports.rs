//! `GET /v1/exports/training`: training data from human oversight as JSONL, streamed page by page
//! (see `loopgate_store::export`): the response never holds more than one page, whatever the
//! export's size.

use super::parse_query;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Admin, Auth};
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use loopgate_domain::training::{self, Format};
use serde::Deserialize;
use utoipa::IntoParams;

#[derive(Debug, Deserialize, IntoParams)]
pub struct ExportQuery {
    /// `openai` (chat fine-tuning: conversations with human-vouched answers), `dpo` (preference
    /// pairs: the human's correction over the AI's output) or `corrections` (every human override
    /// with its context).
    pub format: Option<String>,
    /// Only what was decided (or, for `openai`, conversations active) since then: a duration back
    /// from now (`30d`, `12h`) or an RFC 3339 time. Default: everything.
    pub since: Option<String>,
}

/// The `format` parameter, required.
pub fn format_param(raw: Option<&str>) -> ApiResult<Format> {
    let raw =
        raw.ok_or_else(|| ApiError::invalid("format", "required: openai, dpo or corrections"))?;
    Format::parse(raw.trim())
        .ok_or_else(|| ApiError::invalid("format", "must be openai, dpo or corrections"))
}

#[utoipa::path(
    get, path = "/v1/exports/training", tag = "exports", params(ExportQuery),
    responses(
        (status = 200, description = "One JSON object per line (JSONL), streamed as it is read. A failure after the first line cuts the stream short (the chunked body does not end cleanly): treat an incomplete transfer as a failed export.",
            content_type = "application/x-ndjson", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn training(
    State(state): State<AppState>,
    admin: Auth<Admin>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let q: ExportQuery = parse_query(query.as_deref())?;
    let format = format_param(q.format.as_deref())?;
    let now = chrono::Utc::now().timestamp_millis();
    let since = match q.since.as_deref() {
        None => 0,
        Some(raw) => training::since_ms(raw, now).map_err(|m| ApiError::invalid("since", m))?,
    };
    let lines = loopgate_store::export::training_lines(
        state.store.clone(),
        admin.workspace.clone(),
        format,
        since,
    )
    .map(|chunk| {
        chunk.map(Bytes::from).map_err(|e| {
            tracing::error!(error = %e, "training export failed mid-stream");
            std::io::Error::other(e.to_string())
        })
    });
    let mut resp = Body::from_stream(lines).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"training-{}.jsonl\"",
        format.as_str()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
