//! `GET /console/events`: the signed-in user's Server-Sent Events, the same stream as the API's
//! `/v1/events` (gap-free, resumable with `Last-Event-ID`) but authenticated by the session
//! cookie. Pages use each event as a signal to re-fetch the fragment it changes.

use super::page::{PageError, PageResult};
use super::session::ConsoleUser;
use crate::http::events::Filter;
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use loopgate_domain::audit::Event;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Default, Deserialize)]
struct EventsQuery {
    /// Only this conversation's events.
    conversation: Option<String>,
}

/// Event families a reviewer's pages react to. Account and policy events stay in the audit log.
fn is_work_event(e: &Event) -> bool {
    [
        "review.",
        "action.",
        "message.",
        "conversation.",
        "feedback.",
    ]
    .iter()
    .any(|p| e.event_type.starts_with(p))
}

pub async fn stream(
    State(state): State<AppState>,
    user: ConsoleUser,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> PageResult {
    let q: EventsQuery =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    // A reconnecting EventSource sends the last seq it saw; anything unreadable starts live.
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|s| *s >= 0);
    let filter: Filter = match q.conversation.and_then(|c| uuid::Uuid::parse_str(&c).ok()) {
        Some(id) => {
            let id = id.to_string();
            let subject = format!("conversation:{id}");
            Arc::new(move |e: &Event| {
                e.subject == subject
                    || e.data.get("conversation_id").and_then(|v| v.as_str()) == Some(id.as_str())
            })
        }
        None => Arc::new(is_work_event),
    };
    let workspace = user.workspace.clone();
    let permit = state
        .limits
        .streams
        .acquire(&user.holder())
        .map_err(PageError::Limited)?;
    Ok(
        crate::http::events::stream(state, workspace, after, filter, permit)
            .await?
            .into_response(),
    )
}
