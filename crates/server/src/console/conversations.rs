//! Live conversations: the list (`/conversations`) and one conversation (`/conversations/{id}`)
//! with its transcript, held drafts inline, and the takeover controls. Both refresh from the
//! session's event stream through fragments (`/console/conversations/...`).

use super::page::{self, Nav, PageError, PageResult};
use super::session::{ConsoleUser, Empty, Posted, Session};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use loopgate_domain::conversation::{ConversationState, MessageStatus, Role, Transition};
use loopgate_store::{
    ConversationChange, ConversationRecord, ConversationView, NewMessage, StoreError,
};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

/// Longest human message, as the API allows.
const MAX_TEXT: usize = 20_000;

pub struct TranscriptOptions<'a> {
    /// Show release / rewrite / discard controls on held drafts, for this user.
    pub actions_for: Option<&'a Session>,
    /// A message to mark (the one under review).
    pub highlight: Option<Uuid>,
}

fn state_label(s: ConversationState) -> &'static str {
    match s {
        ConversationState::Ai => "AI answering",
        ConversationState::Waiting => "Waiting for a human",
        ConversationState::Human => "Human answering",
        ConversationState::Closed => "Closed",
    }
}

fn state_badge(s: ConversationState) -> Markup {
    html! { span.badge.state data-state=(s.as_str()) data-testid="conversation-state" { (state_label(s)) } }
}

fn title(c: &ConversationRecord) -> String {
    match &c.external_id {
        Some(e) => e.clone(),
        None => format!("#{}", &c.id.simple().to_string()[..8]),
    }
}

/// The messages of a conversation, oldest first.
pub fn transcript(view: &ConversationView, opts: &TranscriptOptions<'_>) -> Markup {
    let now = Utc::now();
    html! {
        ol.transcript data-testid="transcript" data-state=(view.conversation.state.as_str()) {
            @if view.messages.is_empty() {
                li.transcript-empty.muted { "No messages yet." }
            }
            @for m in &view.messages {
                @let held = matches!(m.status, MessageStatus::Held | MessageStatus::Escalated);
                li.msg.is-highlight[opts.highlight == Some(m.id)].is-held[held]
                    data-role=(m.role.as_str()) data-status=(m.status.as_str())
                    data-testid="message" data-message-id=(m.id) {
                    div.msg-meta {
                        span.msg-author {
                            @match m.role {
                                Role::User => "Customer",
                                Role::Ai => "AI",
                                Role::Human => { (m.author) " (human)" },
                                Role::System => "System",
                            }
                        }
                        " · " (page::age(m.created_at, now))
                        @if m.role == Role::Ai { " · " (page::confidence(m.confidence)) }
                        @if m.status != MessageStatus::Delivered {
                            " " span.badge.msg-status data-status=(m.status.as_str()) {
                                @match m.status {
                                    MessageStatus::Held => "held for review",
                                    MessageStatus::Escalated => "held: escalated",
                                    MessageStatus::Discarded => "discarded, never shown",
                                    MessageStatus::Delivered => "delivered",
                                }
                            }
                        }
                        @if m.original_text.is_some() { " " span.badge.neutral { "rewritten by a human" } }
                    }
                    div.msg-text { (m.text) }
                    @if held {
                        @if let (Some(user), Some(rid)) = (opts.actions_for, m.review_id) {
                            (draft_actions(user, rid, &m.text))
                        }
                    }
                }
            }
        }
    }
}

/// Release, rewrite or discard a held draft, through its draft review.
fn draft_actions(user: &Session, review_id: Uuid, text: &str) -> Markup {
    let action = format!("/reviews/{review_id}/decision");
    html! {
        div.draft-actions data-testid="held-draft" {
            form method="post" action=(action) {
                (page::csrf_field(user))
                input type="hidden" name="verdict" value="approve";
                input type="hidden" name="then" value="conversation";
                button.btn.btn-approve.btn-small type="submit" data-testid="draft-release" { "Release" }
            }
            details.inline-details {
                summary.btn.btn-small data-testid="draft-rewrite-open" { "Rewrite…" }
                form.stack method="post" action=(action) {
                    (page::csrf_field(user))
                    input type="hidden" name="verdict" value="edit";
                    input type="hidden" name="then" value="conversation";
                    label for=(format!("rewrite-{review_id}")) { "The reply the customer will see" }
                    textarea id=(format!("rewrite-{review_id}")) name="text" rows="4" required maxlength="20000" data-testid="draft-rewrite-text" { (text) }
                    button.btn.btn-primary.btn-small type="submit" data-testid="draft-rewrite-send" { "Send rewrite" }
                }
            }
            form method="post" action=(action) {
                (page::csrf_field(user))
                input type="hidden" name="verdict" value="reject";
                input type="hidden" name="then" value="conversation";
                input type="hidden" name="comment" value="discarded from the conversation view";
                button.btn.btn-quiet.btn-small type="submit" data-testid="draft-discard" { "Discard" }
            }
            a.btn.btn-quiet.btn-small href=(format!("/reviews/{review_id}")) { "Open review" }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
}

/// `open` (the default), `all`, or one state.
fn state_filter(q: &ListQuery) -> (String, Option<&'static str>) {
    match q.state.as_deref().map(str::trim) {
        Some("all") => ("all".into(), None),
        Some("ai") => ("ai".into(), Some("ai")),
        Some("waiting") => ("waiting".into(), Some("waiting")),
        Some("human") => ("human".into(), Some("human")),
        Some("closed") => ("closed".into(), Some("closed")),
        _ => ("open".into(), Some("open")),
    }
}

fn list_rows(list: &[ConversationRecord]) -> Markup {
    let now = Utc::now();
    html! {
        @if list.is_empty() {
            tr.empty-row { td colspan="6" data-testid="conversations-empty" {
                div.empty-state {
                    p.empty-title { "No conversations here." }
                    p.muted { "They appear as soon as an agent opens one." }
                }
            } }
        }
        @for c in list {
            tr data-testid="conversation-row" data-conversation-id=(c.id) data-state=(c.state.as_str())
                data-href=(format!("/conversations/{}", c.id)) {
                td { (state_badge(c.state)) }
                td.subject {
                    a.row-link href=(format!("/conversations/{}", c.id)) {
                        span.subject-title { (title(c)) }
                        span.subject-agent { " · " (c.agent) }
                    }
                    @if let Some(a) = &c.assignee { span.subject-reason { "with " (a) } }
                }
                td.last-message {
                    @match &c.last_message {
                        Some(m) => span { (page::excerpt(m, 120)) },
                        None => span.muted { "—" },
                    }
                }
                td { (page::confidence(c.last_ai_confidence)) }
                td.num { (c.turns) }
                td.num { (page::age(c.updated_at, now)) }
            }
        }
    }
}

async fn load_list(
    state: &AppState,
    user: &Session,
    filter: Option<&str>,
) -> PageResult<Vec<ConversationRecord>> {
    Ok(state
        .store
        .list_conversations(&user.workspace, filter, 100)
        .await?)
}

/// `GET /conversations`.
pub async fn list(
    State(state): State<AppState>,
    user: ConsoleUser,
    RawQuery(query): RawQuery,
) -> PageResult {
    let q: ListQuery =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let (selected, filter) = state_filter(&q);
    let list = load_list(&state, &user, filter).await?;
    let options = [
        ("open", "Open"),
        ("all", "All"),
        ("ai", "AI answering"),
        ("waiting", "Waiting for a human"),
        ("human", "Human answering"),
        ("closed", "Closed"),
    ];
    let body = html! {
        div.page-head {
            div {
                h1 { "Conversations" }
                p.muted { "Most recently active first · updates live" }
            }
        }
        form.filters method="get" action="/conversations" role="search" aria-label="Filter conversations" {
            div.field.field-inline {
                label for="filter-state" { "Show" }
                select #filter-state name="state" data-autosubmit data-testid="filter-state" {
                    @for (value, label) in options {
                        option value=(value) selected[selected == value] { (label) }
                    }
                }
            }
            button.btn.btn-quiet.js-hide type="submit" { "Apply" }
            p.shortcuts aria-label="Keyboard shortcuts" { (page::kbd("j")) " " (page::kbd("k")) " move · " (page::kbd("Enter")) " open" }
        }
        div.table-wrap {
            table.data.conversations data-testid="conversations-table" {
                caption.visually-hidden { "Conversations, most recently active first" }
                thead { tr {
                    th scope="col" { "State" }
                    th scope="col" { "Conversation" }
                    th scope="col" { "Last message" }
                    th scope="col" { "AI confidence" }
                    th scope="col" { "Turns" }
                    th scope="col" { "Active" }
                } }
                tbody #conversation-rows data-testid="conversation-rows"
                    data-fragment=(format!("/console/conversations/rows?state={selected}")) {
                    (list_rows(&list))
                }
            }
        }
    };
    Ok(page::render(page::shell(
        "Conversations",
        "conversations",
        Some(&user),
        Nav::Conversations,
        body,
    )))
}

/// `GET /console/conversations/rows`: the list's rows, for the live refresh.
pub async fn rows(
    State(state): State<AppState>,
    user: ConsoleUser,
    RawQuery(query): RawQuery,
) -> PageResult {
    let q: ListQuery =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let (_, filter) = state_filter(&q);
    let list = load_list(&state, &user, filter).await?;
    Ok(Html(list_rows(&list).into_string()).into_response())
}

fn parse_id(raw: &str) -> PageResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| PageError::NotFound("conversation"))
}

async fn load(state: &AppState, user: &Session, id: Uuid) -> PageResult<ConversationView> {
    state
        .store
        .get_conversation(&user.workspace, id)
        .await?
        .ok_or(PageError::NotFound("conversation"))
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    flash: Option<String>,
}

/// `GET /conversations/{id}`.
pub async fn page(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> PageResult {
    let q: PageQuery =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let id = parse_id(&id)?;
    let view = load(&state, &user, id).await?;
    Ok(render(
        &user,
        &view,
        q.flash.as_deref(),
        None,
        StatusCode::OK,
    ))
}

fn render(
    user: &Session,
    view: &ConversationView,
    flash: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let c = &view.conversation;
    let now = Utc::now();
    let base = format!("/conversations/{}", c.id);
    let body = html! {
        div.page-head {
            div {
                a.back-link href="/conversations" data-testid="back" { "← Conversations" }
                h1 data-testid="conversation-title" { "Conversation " (title(c)) }
                div.tags {
                    (state_badge(c.state))
                    span.badge.neutral { "agent " (c.agent) }
                    @if let Some(a) = &c.assignee { span.badge.neutral data-testid="assignee" { "with " (a) } }
                }
            }
            div.head-actions {
                @if matches!(c.state, ConversationState::Ai | ConversationState::Waiting) {
                    form method="post" action=(format!("{base}/takeover")) {
                        (page::csrf_field(user))
                        button.btn.btn-primary type="submit" data-testid="takeover" { "Take over" }
                    }
                }
                @if c.state == ConversationState::Human {
                    form method="post" action=(format!("{base}/handback")) {
                        (page::csrf_field(user))
                        button.btn type="submit" data-testid="handback" { "Hand back to the AI" }
                    }
                }
                @if c.state != ConversationState::Closed {
                    form method="post" action=(format!("{base}/close")) data-confirm="Close this conversation? Open drafts and escalations are cancelled." {
                        (page::csrf_field(user))
                        button.btn.btn-quiet type="submit" data-testid="close" { "Close" }
                    }
                }
            }
        }
        (page::flash(flash))
        (page::error_banner(error))
        div.review-layout {
            div.review-main {
                section.card.transcript-card aria-labelledby="transcript-title" {
                    div.card-head {
                        h2 #transcript-title { "Transcript" }
                        span.muted.live-dot data-testid="live-indicator" { "Live" }
                    }
                    div #transcript data-conversation=(c.id) data-state=(c.state.as_str())
                        data-fragment=(format!("/console/conversations/{}/transcript", c.id)) {
                        (transcript(view, &TranscriptOptions { actions_for: Some(user), highlight: None }))
                    }
                }
                @match c.state {
                    ConversationState::Human => {
                        section.card aria-labelledby="composer-title" {
                            form.stack #composer method="post" action=(format!("{base}/messages")) data-testid="composer" {
                                (page::csrf_field(user))
                                label #composer-title for="composer-text" { "Reply to the customer as " strong { (user.username) } }
                                textarea #composer-text name="text" rows="3" required maxlength="20000" data-testid="composer-text" {}
                                div.composer-foot {
                                    span.muted { (page::kbd("Ctrl")) " + " (page::kbd("Enter")) " to send" }
                                    button.btn.btn-primary type="submit" data-testid="composer-send" { "Send" }
                                }
                                p.composer-error.flash.flash-error role="alert" hidden data-testid="composer-error" {}
                            }
                        }
                    }
                    ConversationState::Waiting => {
                        p.callout { "The customer is waiting for a human. Take over to answer." }
                    }
                    ConversationState::Ai => {
                        p.callout { "The AI is answering. Take over at any time to reply yourself; the AI's messages are refused until you hand back." }
                    }
                    ConversationState::Closed => {
                        p.callout { "This conversation is closed." }
                    }
                }
            }
            aside.review-meta aria-label="Conversation details" {
                section.card {
                    h2 { "Details" }
                    dl.meta-list {
                        dt { "State" } dd { (state_label(c.state)) }
                        dt { "Agent" } dd { (c.agent) }
                        @if let Some(e) = &c.external_id { dt { "External id" } dd { code { (e) } } }
                        dt { "Turns" } dd { (c.turns) }
                        dt { "Opened" } dd { (page::age(c.created_at, now)) }
                        dt { "Last activity" } dd { (page::age(c.updated_at, now)) }
                    }
                }
                @if c.context.as_object().is_some_and(|o| !o.is_empty()) {
                    section.card {
                        h2 { "Context" }
                        pre.json { (page::pretty_json(&c.context)) }
                    }
                }
            }
        }
    };
    page::render_status(
        status,
        page::shell(
            &format!("Conversation {}", title(c)),
            "conversation",
            Some(user),
            Nav::Conversations,
            body,
        ),
    )
}

/// `GET /console/conversations/{id}/transcript`: the transcript alone, its state in
/// `X-Conversation-State`.
pub async fn transcript_live(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let id = parse_id(&id)?;
    let view = load(&state, &user, id).await?;
    let markup = transcript(
        &view,
        &TranscriptOptions {
            actions_for: Some(&user),
            highlight: None,
        },
    );
    let mut resp = Html(markup.into_string()).into_response();
    resp.headers_mut().insert(
        "x-conversation-state",
        HeaderValue::from_static(view.conversation.state.as_str()),
    );
    Ok(resp)
}

#[derive(Debug, Default, Deserialize)]
pub struct ReplyForm {
    #[serde(default)]
    text: String,
}

/// `POST /conversations/{id}/messages`: a human's reply. Called by the page's script with
/// `X-CSRF-Token` (answered with a status and a plain-text reason), or as a plain form.
pub async fn reply(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Posted { user, form }: Posted<ReplyForm>,
) -> PageResult {
    let fetch = headers.contains_key("x-csrf-token");
    let id = parse_id(&id)?;
    let text = form.text.trim();
    let problem = if text.is_empty() {
        Some((
            StatusCode::UNPROCESSABLE_ENTITY,
            "Write a message first.".to_owned(),
        ))
    } else if text.chars().count() > MAX_TEXT {
        Some((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("A message is at most {MAX_TEXT} characters."),
        ))
    } else {
        match state
            .store
            .post_message(NewMessage {
                workspace: user.workspace.clone(),
                conversation_id: id,
                role: Role::Human,
                text: text.to_owned(),
                confidence: None,
                author: user.username.clone(),
                agent: None,
                routing: None,
                policy_version: 0,
            })
            .await
        {
            Ok(_) => None,
            Err(StoreError::Conflict(m)) => Some((
                StatusCode::CONFLICT,
                format!("Not sent: {m}. Take the conversation over first."),
            )),
            Err(StoreError::Invalid { field, message }) => Some((
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Not sent: {field}: {message}."),
            )),
            Err(e) => return Err(e.into()),
        }
    };
    match (problem, fetch) {
        (None, true) => Ok(StatusCode::CREATED.into_response()),
        (None, false) => Ok(page::see_other(&format!("/conversations/{id}?flash=sent"))),
        (Some((status, m)), true) => Ok((status, m).into_response()),
        (Some((status, m)), false) => {
            let view = load(&state, &user, id).await?;
            Ok(render(&user, &view, None, Some(&m), status))
        }
    }
}

async fn change(
    state: &AppState,
    user: &Session,
    id: &str,
    transition: Transition,
    flash: &str,
) -> PageResult {
    let id = parse_id(id)?;
    let result = state
        .store
        .transition_conversation(ConversationChange {
            workspace: user.workspace.clone(),
            id,
            transition,
            actor: user.actor(),
            human: Some(user.username.clone()),
            agent: None,
            reason: None,
            queue: "default".into(),
            priority: 0,
            due_in_ms: None,
        })
        .await;
    match result {
        Ok(_) => Ok(page::see_other(&format!(
            "/conversations/{id}?flash={flash}"
        ))),
        Err(StoreError::Conflict(m)) => {
            let view = load(state, user, id).await?;
            Ok(render(
                user,
                &view,
                None,
                Some(&format!("That did not work: {m}.")),
                StatusCode::CONFLICT,
            ))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn takeover(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, .. }: Posted<Empty>,
) -> PageResult {
    change(&state, &user, &id, Transition::Takeover, "taken-over").await
}

pub async fn handback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, .. }: Posted<Empty>,
) -> PageResult {
    change(&state, &user, &id, Transition::Handback, "handed-back").await
}

pub async fn close(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, .. }: Posted<Empty>,
) -> PageResult {
    change(&state, &user, &id, Transition::Close, "closed").await
}
