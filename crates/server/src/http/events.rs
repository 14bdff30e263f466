//! Server-Sent Events: the workspace stream and one conversation's stream.
//!
//! Each frame is one audit event (`id:` its seq, `event:` its type, `data:` the event as JSON).
//! A client that reconnects with `Last-Event-ID` gets what it missed from the audit log, then the
//! live feed, with no gap and no duplicate: the stream subscribes to live events *before* reading
//! the log, and drops any live event whose seq it has already sent. A slow client only slows its
//! own stream: it falls behind the bounded live channel and catches up from the log instead, so
//! memory stays bounded whatever it does.

use super::parse_id;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{AnyRole, Auth};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use loopgate_domain::audit::Event;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use utoipa::IntoParams;

/// Frames buffered per client before it counts as slow.
const CLIENT_BUFFER: usize = 64;
/// Audit-log page size when catching up.
const PAGE: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
pub struct StreamQuery {
    /// Resume after this seq (what `Last-Event-ID` does, for clients that cannot set headers).
    pub after: Option<String>,
}

fn resume_point(headers: &HeaderMap, query: Option<&str>) -> ApiResult<Option<i64>> {
    let q: StreamQuery = super::parse_query(query)?;
    let parse = |v: &str, field: &str| {
        v.trim()
            .parse::<i64>()
            .ok()
            .filter(|s| *s >= 0)
            .ok_or_else(|| {
                ApiError::bad_request(field, "must be an event seq, a whole number >= 0")
            })
    };
    if let Some(h) = headers.get("last-event-id") {
        let v = h
            .to_str()
            .map_err(|_| ApiError::bad_request("Last-Event-ID", "must be an event seq"))?;
        return parse(v, "Last-Event-ID").map(Some);
    }
    q.after.as_deref().map(|a| parse(a, "after")).transpose()
}

pub(crate) type Filter = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

#[utoipa::path(
    get, path = "/v1/events", tag = "events", params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this seq")),
    responses((status = 200, description = "An endless text/event-stream of the workspace's events", content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn workspace_stream(
    State(state): State<AppState>,
    caller: Auth<AnyRole>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let after = resume_point(&headers, query.as_deref())?;
    // Reviewers and admins see the whole workspace. An agent sees the events that name it
    // (`data.agent`): its actions and its conversations, not other agents' customers nor the
    // reviewers' internal work.
    let filter: Filter = if caller.role.can_review() {
        Arc::new(|_| true)
    } else {
        let me = caller.name.clone();
        Arc::new(move |e: &Event| e.data.get("agent").and_then(|a| a.as_str()) == Some(me.as_str()))
    };
    let permit = state.limits.streams.acquire(&caller.holder())?;
    Ok(stream(state, caller.workspace.clone(), after, filter, permit).await?)
}

#[utoipa::path(
    get, path = "/v1/conversations/{id}/events", tag = "events",
    params(("id" = String, Path, description = "The conversation's id"), StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this seq")),
    responses((status = 200, description = "An endless text/event-stream of this conversation's events", content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn conversation_stream(
    State(state): State<AppState>,
    caller: Auth<AnyRole>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let id = parse_id(&id, "id")?;
    let after = resume_point(&headers, query.as_deref())?;
    super::conversations::visible(&state, &caller, id).await?;
    let id = id.to_string();
    let subject = format!("conversation:{id}");
    let filter: Filter = Arc::new(move |e: &Event| {
        e.subject == subject
            || e.data.get("conversation_id").and_then(|v| v.as_str()) == Some(id.as_str())
    });
    let permit = state.limits.streams.acquire(&caller.holder())?;
    Ok(stream(state, caller.workspace.clone(), after, filter, permit).await?)
}

fn frame(e: &Event) -> SseEvent {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".to_owned());
    SseEvent::default()
        .id(e.seq.to_string())
        .event(e.event_type.clone())
        .data(data)
}

pub(crate) async fn stream(
    state: AppState,
    workspace: String,
    after: Option<i64>,
    filter: Filter,
    permit: crate::limits::Permit,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, loopgate_store::StoreError> {
    let (tx, rx) = mpsc::channel::<SseEvent>(CLIENT_BUFFER);
    // Subscribe before reading the log, so nothing committed in between is missed.
    let live = state.store.subscribe();
    // The seq of the newest event already handled (sent or filtered out). A new stream starts at
    // the head of the log, read *before* the response goes out: whatever a client does once it
    // has the response is committed after this point, so the stream shows it. (Read later, in
    // the feed, an event committed between the response and that read would be taken for one
    // already handled.) Even the stream's first lag is repaired from the log.
    let start = match after {
        Some(a) => a,
        None => state.store.audit_head(&workspace).await?,
    };
    let keepalive = state.config.sse_keepalive;
    tokio::spawn(feed(state, workspace, start, filter, live, tx));
    // The permit lives as long as the response body: hyper drops it when the client leaves.
    let frames = ReceiverStream::new(rx).map(move |frame| {
        let _open = &permit;
        Ok(frame)
    });
    Ok(Sse::new(frames).keep_alive(KeepAlive::new().interval(keepalive)))
}

/// Why a feed ended early: the client left, or the log could not be read.
struct Stop;

/// Send the log's events after `last` (all of them, page by page); returns the new `last`.
async fn catch_up(
    state: &AppState,
    workspace: &str,
    mut last: i64,
    filter: &Filter,
    tx: &mpsc::Sender<SseEvent>,
) -> Result<i64, Stop> {
    loop {
        let page = match state.store.audit_events(workspace, last, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "an event stream cannot read the audit log; closing it");
                return Err(Stop);
            }
        };
        let full = page.len() as i64 == PAGE;
        for e in &page {
            if filter(e) && tx.send(frame(e)).await.is_err() {
                return Err(Stop);
            }
            last = e.seq;
        }
        if !full {
            return Ok(last);
        }
    }
}

async fn feed(
    state: AppState,
    workspace: String,
    start: i64,
    filter: Filter,
    mut live: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<SseEvent>,
) {
    let mut stopping = state.stopping.clone();
    let mut last = match catch_up(&state, &workspace, start, &filter, &tx).await {
        Ok(l) => Some(l),
        Err(Stop) => return,
    };
    loop {
        let received = tokio::select! {
            r = live.recv() => r,
            _ = tx.closed() => return,
            _ = stopping.changed() => return,
        };
        match received {
            Ok(e) => {
                if e.workspace != workspace {
                    continue;
                }
                if let Some(l) = last {
                    if e.seq <= l {
                        continue; // already sent from the log
                    }
                    if e.seq > l + 1 {
                        // A gap: fill it from the log (which includes this event).
                        match catch_up(&state, &workspace, l, &filter, &tx).await {
                            Ok(new_last) => last = Some(new_last),
                            Err(Stop) => return,
                        }
                        continue;
                    }
                }
                if filter(&e) && tx.send(frame(&e)).await.is_err() {
                    return;
                }
                last = Some(e.seq);
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // This client fell behind the live channel: continue from the log instead.
                if let Some(l) = last {
                    match catch_up(&state, &workspace, l, &filter, &tx).await {
                        Ok(new_last) => last = Some(new_last),
                        Err(Stop) => return,
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
