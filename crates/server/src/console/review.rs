//! One review (`/reviews/{id}`): everything needed to decide it on one screen. Opening it claims
//! it; a claim held by someone else is shown, and the decision controls say who may decide.
//! Deciding moves on to the next review, so a reviewer can work a queue from the keyboard.
//! "Approve and don't ask again" (approvals of actions) stays on the decided review instead, to
//! show the standing rule it proposed to the admins and what its backtest found.

use super::conversations::{transcript, TranscriptOptions};
use super::inbox::{holder, kind_badge, kind_label};
use super::page::{self, kbd, Nav, PageError, PageResult};
use super::session::{ConsoleUser, Posted, Session};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use loopgate_domain::learning::standing_rule;
use loopgate_domain::review::{DecisionInput, Grade, ReviewKind, ReviewStatus, Verdict};
use loopgate_domain::types::Name;
use loopgate_store::{ProposalRecord, ReviewDetail, ReviewFilter, StoreError};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

fn lease_ms(state: &AppState) -> i64 {
    i64::try_from(state.config.claim_lease.as_millis()).unwrap_or(i64::MAX)
}

fn parse_id(raw: &str, what: &'static str) -> PageResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| PageError::NotFound(what))
}

/// The part of the inbox a reviewer is working through (its queue and kind filters), carried
/// from the inbox through each review so "next" stays within it.
#[derive(Debug, Clone, Default)]
struct Scope {
    queue: Option<String>,
    kind: Option<ReviewKind>,
}

impl Scope {
    /// From raw form or query values; invalid values are dropped, not errors.
    fn parse(queue: Option<&str>, kind: Option<&str>) -> Scope {
        Scope {
            queue: queue
                .map(str::trim)
                .filter(|q| !q.is_empty())
                .and_then(|q| Name::parse(q).ok())
                .map(|n| n.as_str().to_owned()),
            kind: kind.map(str::trim).and_then(ReviewKind::parse),
        }
    }

    /// `queue=...&kind=...`, empty when unscoped.
    fn query(&self) -> String {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if let Some(q) = &self.queue {
            pairs.push(("queue", q));
        }
        if let Some(k) = self.kind {
            pairs.push(("kind", k.as_str()));
        }
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    fn hidden_fields(&self) -> Markup {
        html! {
            @if let Some(q) = &self.queue { input type="hidden" name="queue" value=(q); }
            @if let Some(k) = self.kind { input type="hidden" name="kind" value=(k.as_str()); }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ReviewQuery {
    flash: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
    /// The standing rule this review's "don't ask again" just proposed.
    proposal: Option<String>,
}

/// What the reviewer typed, to fill the forms again when a decision is refused.
#[derive(Debug, Default)]
struct Echo {
    panel: Option<&'static str>,
    arguments: Option<String>,
    text: Option<String>,
    title: Option<String>,
    comment: Option<String>,
    labels: Option<String>,
}

struct View {
    flash: Option<String>,
    /// The proposal this review's approval made, to show the reviewer.
    proposal: Option<ProposalRecord>,
    error: Option<String>,
    /// Why this reviewer could not claim it (someone else holds it).
    conflict: Option<String>,
    scope: Scope,
    echo: Echo,
    status: StatusCode,
}

/// Read the review and claim it if it is open. A claim refused because someone else holds it is
/// not an error: the page shows the review and who has it.
async fn open_and_claim(
    state: &AppState,
    user: &Session,
    id: Uuid,
) -> PageResult<(ReviewDetail, Option<String>)> {
    let detail = state
        .store
        .get_review(&user.workspace, id)
        .await?
        .ok_or(PageError::NotFound("review"))?;
    if !detail.review.status.is_open() {
        return Ok((detail, None));
    }
    match state
        .store
        .claim_review(&user.workspace, id, &user.username, lease_ms(state))
        .await
    {
        Ok(d) => Ok((d, None)),
        Err(StoreError::Conflict(m)) => Ok((detail, Some(m))),
        Err(e) => Err(e.into()),
    }
}

/// `GET /reviews/{id}`.
pub async fn page(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> PageResult {
    let q: ReviewQuery =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let id = parse_id(&id, "review")?;
    let (detail, conflict) = open_and_claim(&state, &user, id).await?;
    // Only a proposal made from this review is shown here.
    let proposal = match q.proposal.as_deref().map(Uuid::parse_str) {
        Some(Ok(pid)) => state
            .store
            .get_proposal(&user.workspace, pid)
            .await?
            .filter(|p| p.review_id == id),
        _ => None,
    };
    Ok(render(
        &user,
        &detail,
        View {
            flash: q.flash,
            proposal,
            error: None,
            conflict,
            scope: Scope::parse(q.queue.as_deref(), q.kind.as_deref()),
            echo: Echo::default(),
            status: StatusCode::OK,
        },
    ))
}

fn subject_title(d: &ReviewDetail) -> String {
    match (&d.action, d.review.kind) {
        (Some(a), _) => a.name.clone(),
        (None, ReviewKind::Draft) => "AI reply held for review".to_owned(),
        (None, ReviewKind::Escalation) => "A conversation needs a human".to_owned(),
        (None, ReviewKind::Flag) => "An answer the user flagged".to_owned(),
        (None, ReviewKind::Qa) => "A sampled AI reply".to_owned(),
        (None, ReviewKind::KbChange) => match &d.knowledge {
            Some(k) => k.proposed_title.clone(),
            None => "A suggested knowledge change".to_owned(),
        },
        (None, ReviewKind::Approval) => "An action".to_owned(),
    }
}

fn status_text(d: &ReviewDetail) -> String {
    match (&d.review.status, &d.review.outcome) {
        (ReviewStatus::Pending | ReviewStatus::Claimed, _) => "open".to_owned(),
        (s, Some(o)) => format!("{} · {}", s.as_str(), o),
        (s, None) => s.as_str().to_owned(),
    }
}

/// Whether this reviewer already approved the review as it now stands (four-eyes: someone
/// else must give the next approval).
fn already_approved(d: &ReviewDetail, me: &str) -> bool {
    let mut approvers: Vec<&str> = Vec::new();
    for dec in &d.decisions {
        match dec.verdict {
            Verdict::Edit => {
                approvers.clear();
                approvers.push(&dec.reviewer);
            }
            Verdict::Approve => approvers.push(&dec.reviewer),
            Verdict::Reject => {}
        }
    }
    approvers.contains(&me)
}

fn render(user: &Session, d: &ReviewDetail, v: View) -> Response {
    let r = &d.review;
    let now = Utc::now();
    let title = subject_title(d);
    let held_by = holder(r, now);
    let mine = held_by == Some(user.username.as_str());
    let open = r.status.is_open();
    let blocked_by = held_by.filter(|h| *h != user.username);
    let can_decide = open && blocked_by.is_none();
    let back = match v.scope.query() {
        q if q.is_empty() => "/".to_owned(),
        q => format!("/?{q}"),
    };
    let context = d
        .action
        .as_ref()
        .map(|a| &a.context)
        .or(d.conversation.as_ref().map(|c| &c.conversation.context))
        .filter(|c| c.as_object().is_some_and(|o| !o.is_empty()));
    let body = html! {
        div.page-head.review-head {
            div {
                a.back-link href=(back) data-testid="back" { "← Inbox " (kbd("Esc")) }
                h1 data-testid="review-title" {
                    span.kind-prefix { (kind_label(r.kind)) ": " }
                    (title)
                }
                div.tags {
                    (kind_badge(r.kind))
                    span.badge.neutral { "queue " (r.queue) }
                    span.badge.status data-status=(r.status.as_str()) data-testid="review-status" { (status_text(d)) }
                    @if r.priority != 0 { span.badge.neutral { "priority " (r.priority) } }
                }
            }
            @if mine && open {
                form.head-actions method="post" action=(format!("/reviews/{}/release", r.id)) #release-form {
                    (page::csrf_field(user))
                    (v.scope.hidden_fields())
                    button.btn.btn-quiet type="submit" data-testid="release" { "Put back in queue" }
                }
            }
        }
        (page::flash(v.flash.as_deref()))
        (page::error_banner(v.error.as_deref()))
        @if let Some(p) = &v.proposal { (proposal_made(user, p, &v.scope)) }
        @if let Some(who) = blocked_by {
            div.flash.flash-warn role="alert" data-testid="claim-conflict" {
                strong { (who) " is working on this review." }
                " You can read it, but only " (who) " can decide it until they release it or their claim lapses"
                @if let Some(until) = r.claim_expires_at { " (at " (until.format("%H:%M UTC").to_string()) ")" }
                "."
            }
        } @else if let Some(c) = &v.conflict {
            div.flash.flash-warn role="alert" data-testid="claim-conflict" { (c) }
        }
        div.review-layout {
            div.review-main {
                (subject(d))
                (decision_panel(user, d, &v, can_decide, blocked_by))
                @if let Some(conv) = &d.conversation {
                    section.card aria-labelledby="transcript-title" {
                        div.card-head {
                            h2 #transcript-title { "Conversation" }
                            a.btn.btn-quiet href=(format!("/conversations/{}", conv.conversation.id)) data-testid="open-conversation" { "Open live view" }
                        }
                        (transcript(conv, &TranscriptOptions { actions_for: None, highlight: r.message_id }))
                    }
                }
            }
            aside.review-meta aria-label="Review details" {
                section.card {
                    h2 { "Why it is here" }
                    dl.meta-list {
                        dt { "Confidence" } dd data-testid="review-confidence" { (page::confidence(r.confidence)) }
                        dt { "Rule" } dd data-testid="review-rule" {
                            @match &r.rule { Some(rule) => code { (rule) }, None => span.muted { "no rule matched" } }
                        }
                        dt { "Reason" } dd data-testid="review-reason" { @if r.reason.is_empty() { span.muted { "—" } } @else { (r.reason) } }
                        @if let Some(agent) = &r.agent { dt { "Agent" } dd { (agent) } }
                        dt { "SLA" } dd {
                            (page::sla(r.due_at, now))
                            @if let (Some(_), Some(on)) = (r.due_at, &r.on_timeout) { span.muted { " · then " (on) } }
                        }
                        dt { "Opened" } dd { (page::age(r.created_at, now)) }
                        @if r.approvals_required > 1 {
                            dt { "Approvals" } dd data-testid="approvals" { (r.approvals) " of " (r.approvals_required) " (four eyes)" }
                        }
                        dt { "Claim" } dd data-testid="claim-state" {
                            @match held_by {
                                Some(h) if h == user.username => { "You" @if let Some(u) = r.claim_expires_at { ", until " (u.format("%H:%M UTC").to_string()) } }
                                Some(h) => { (h) }
                                None => span.muted { "nobody" },
                            }
                        }
                        dt { "Policy" } dd { "version " (r.policy_version) }
                    }
                }
                @if !d.decisions.is_empty() {
                    section.card data-testid="prior-decisions" {
                        h2 { "Decisions so far" }
                        ol.decision-list {
                            @for dec in &d.decisions {
                                li data-testid="prior-decision" {
                                    div {
                                        strong { (dec.reviewer) }
                                        " " span.badge.verdict data-verdict=(dec.verdict.as_str()) { (dec.verdict.as_str()) }
                                        @if let Some(g) = dec.grade { " " span.badge.neutral { (g.as_str()) } }
                                        " " span.muted { (page::age(dec.created_at, now)) }
                                    }
                                    @if let Some(c) = &dec.comment { p.decision-comment { (c) } }
                                    @if !dec.labels.is_empty() {
                                        p.labels { @for l in &dec.labels { span.badge.neutral { (l) } " " } }
                                    }
                                    @if let Some(a) = &dec.arguments {
                                        details { summary { "Edited arguments" } pre.json { (page::pretty_json(a)) } }
                                    }
                                    @if let Some(t) = &dec.text {
                                        details { summary { "Rewritten text" } p.pre { (t) } }
                                    }
                                }
                            }
                        }
                    }
                }
                @if let Some(ctx) = context {
                    section.card {
                        h2 { "Context" }
                        pre.json data-testid="review-context" { (page::pretty_json(ctx)) }
                    }
                }
            }
        }
    };
    page::render_status(
        v.status,
        page::shell(&title, "review", Some(user), Nav::Inbox, body),
    )
}

/// The thing under review: the action with its arguments, or the message.
fn subject(d: &ReviewDetail) -> Markup {
    let r = &d.review;
    html! {
        @if let Some(a) = &d.action {
            section.card aria-labelledby="subject-title" {
                div.card-head {
                    h2 #subject-title {
                        @if r.kind == ReviewKind::Qa { "Action that ran" } @else { "Proposed action" }
                    }
                    span.muted { "by " (a.agent) " · " (page::age(a.created_at, Utc::now())) }
                }
                p.action-name { code data-testid="action-name" { (a.name) } }
                @if a.arguments != a.proposed_arguments {
                    h3 { "Arguments, as edited" }
                    pre.json data-testid="review-arguments" { (page::pretty_json(&a.arguments)) }
                    details { summary { "As the agent proposed them" } pre.json { (page::pretty_json(&a.proposed_arguments)) } }
                } @else {
                    h3.visually-hidden { "Arguments" }
                    pre.json data-testid="review-arguments" { (page::pretty_json(&a.arguments)) }
                }
            }
        } @else if let Some(m) = &d.message {
            section.card aria-labelledby="subject-title" {
                div.card-head {
                    h2 #subject-title {
                        @match r.kind {
                            ReviewKind::Draft => "Draft reply, held before the user sees it",
                            ReviewKind::Escalation => "The AI's held reply",
                            ReviewKind::Flag => "The answer the user flagged",
                            _ => "The AI's reply",
                        }
                    }
                    (page::confidence(m.confidence))
                }
                blockquote.draft-text data-testid="draft-text" { (m.text) }
                @if let Some(orig) = &m.original_text {
                    details { summary { "The AI's original draft" } p.pre { (orig) } }
                }
            }
        } @else if let Some(k) = &d.knowledge {
            section.card aria-labelledby="subject-title" data-testid="knowledge-change" {
                div.card-head {
                    h2 #subject-title { "Proposed knowledge change" }
                    span.muted { "by " (k.agent) " · " (page::age(k.created_at, Utc::now())) }
                }
                h3 data-testid="knowledge-title" { (k.proposed_title) }
                blockquote.draft-text data-testid="knowledge-text" { (k.proposed_text) }
                @if k.status == "approved" && (k.title != k.proposed_title || k.text != k.proposed_text) {
                    h3 { "As published, after the reviewer's edit" }
                    p data-testid="knowledge-published-title" { strong { (k.title) } }
                    blockquote.draft-text data-testid="knowledge-published-text" { (k.text) }
                }
                @if let Some(cid) = k.conversation_id {
                    p { "Suggested during "
                        a href=(format!("/conversations/{cid}")) data-testid="knowledge-conversation" { "this conversation" } "." }
                }
            }
        } @else if r.kind == ReviewKind::Escalation {
            section.card {
                h2 { "A conversation is waiting for a human" }
                p { "The AI handed this conversation over. Take it over to answer the customer yourself, or resolve it to give it back to the AI." }
            }
        }
    }
}

fn decision_panel(
    user: &Session,
    d: &ReviewDetail,
    v: &View,
    can_decide: bool,
    blocked_by: Option<&str>,
) -> Markup {
    let r = &d.review;
    let action = format!("/reviews/{}/decision", r.id);
    let hidden = html! {
        (page::csrf_field(user))
        (v.scope.hidden_fields())
    };
    let has_message = d.message.is_some();
    let (approve_label, reject_label, edit_label) = match r.kind {
        ReviewKind::Draft => ("Send the draft", "Discard…", Some("Rewrite…")),
        ReviewKind::Escalation if has_message => (
            "Send the reply, hand back",
            "Discard the reply…",
            Some("Rewrite and send…"),
        ),
        ReviewKind::Escalation => ("Resolve, hand back to the AI", "Reject…", None),
        ReviewKind::KbChange => ("Publish", "Reject…", Some("Edit…")),
        ReviewKind::Approval if d.action.is_some() => {
            ("Approve", "Reject…", Some("Edit arguments…"))
        }
        _ => ("Approve", "Reject…", None),
    };
    let edits_arguments = r.kind == ReviewKind::Approval && d.action.is_some();
    // The rule "approve and don't ask again" would propose (approvals of actions only).
    let standing = d
        .action
        .as_ref()
        .filter(|_| r.kind == ReviewKind::Approval)
        .map(|a| standing_rule(&a.agent, &a.name, a.confidence).0);
    let me_approved = already_approved(d, &user.username);
    let grading = r.kind.is_grading();
    html! {
        section.card.decision-panel aria-labelledby="decide-title" data-testid="decision-panel"
            data-can-decide=(if can_decide { "true" } else { "false" }) {
            h2 #decide-title { @if grading { "Grade it" } @else { "Decide" } }
            @if !r.status.is_open() {
                p data-testid="review-closed" {
                    "This review is " strong { (status_text(d)) } "."
                    @if let Some(at) = r.decided_at { " Decided " (page::age(at, Utc::now())) "." }
                }
            } @else if let Some(who) = blocked_by {
                p.muted { "Only " (who) " can decide while they hold the claim." }
            } @else if grading {
                form.stack #grade-form method="post" action=(action) data-testid="grade-form" {
                    (hidden)
                    fieldset.grade-choice {
                        legend { "Was the AI right?" }
                        label.choice {
                            input type="radio" name="grade" value="correct" required data-testid="grade-correct";
                            span { "Correct " (kbd("a")) }
                        }
                        label.choice {
                            input type="radio" name="grade" value="incorrect" data-testid="grade-incorrect";
                            span { "Incorrect " (kbd("r")) }
                        }
                    }
                    div.field {
                        label for="grade-labels" { "Labels " span.muted { "(optional, comma-separated)" } }
                        input #grade-labels type="text" name="labels" maxlength="2000" placeholder="tone, wrong-policy" value=[v.echo.labels.as_deref()] data-testid="grade-labels";
                    }
                    div.field {
                        label for="grade-comment" { "Comment " span.muted { "(optional)" } }
                        textarea #grade-comment name="comment" rows="3" maxlength="10000" data-testid="grade-comment" { (v.echo.comment.as_deref().unwrap_or("")) }
                    }
                    div.decision-actions {
                        button.btn.btn-primary type="submit" data-testid="grade-submit" { "Save grade" }
                    }
                }
            } @else {
                @if me_approved {
                    p.flash.flash-info data-testid="already-approved" {
                        "You approved this already. It needs another reviewer's approval (four eyes)."
                    }
                }
                div.decision-actions {
                    form #approve-form method="post" action=(action) {
                        (hidden)
                        input type="hidden" name="verdict" value="approve";
                        button.btn.btn-approve type="submit" data-testid="approve" disabled[!can_decide || me_approved] {
                            (approve_label) " " (kbd("a"))
                        }
                        @if let Some(rule) = &standing {
                            " "
                            button.btn type="submit" name="dont_ask_again" value="true" data-testid="approve-dont-ask-again"
                                disabled[!can_decide || me_approved] aria-describedby="dont-ask-hint"
                                title=(format!("Also propose to the admins: “{rule}”")) {
                                "Approve and don't ask again"
                            }
                        }
                    }
                    details.decision-more #reject-panel data-testid="reject-panel" open[v.echo.panel == Some("reject")] {
                        summary.btn.btn-reject data-testid="reject-open" { (reject_label) " " (kbd("r")) }
                        form.stack method="post" action=(action) #reject-form {
                            (hidden)
                            input type="hidden" name="verdict" value="reject";
                            div.field {
                                label for="reject-reason" { "Why? " span.muted { "(the agent and the audit log see this)" } }
                                textarea #reject-reason name="comment" rows="3" required maxlength="10000" data-testid="reject-reason" {
                                    (v.echo.comment.as_deref().filter(|_| v.echo.panel == Some("reject")).unwrap_or(""))
                                }
                            }
                            button.btn.btn-reject type="submit" data-testid="reject-submit" { "Reject" }
                        }
                    }
                    @if let Some(rule) = &standing {
                        p.hint.dont-ask-hint #dont-ask-hint {
                            "“Don't ask again” proposes a standing rule to the admins: " em { (rule) } ". Nothing changes until an admin approves it."
                        }
                    }
                    @if let Some(label) = edit_label {
                        details.decision-more #edit-panel data-testid="edit-panel" open[v.echo.panel == Some("edit")] {
                            summary.btn data-testid="edit-open" { (label) " " (kbd("e")) }
                            @if edits_arguments {
                                @let current = d.action.as_ref().map(|a| page::pretty_json(&a.arguments)).unwrap_or_default();
                                @let text = v.echo.arguments.clone().unwrap_or(current);
                                form.stack method="post" action=(action) #edit-form data-json-editor {
                                    (hidden)
                                    input type="hidden" name="verdict" value="edit";
                                    div.field {
                                        label for="edit-arguments" { "Arguments " span.muted { "(a JSON object; saving approves with these)" } }
                                        textarea.code #edit-arguments name="arguments" rows=(text.lines().count().clamp(4, 24) + 1)
                                            spellcheck="false" autocomplete="off" aria-describedby="json-status" data-testid="edit-arguments" { (text) }
                                        p.json-status #json-status role="status" data-testid="json-status" { "A JSON object." }
                                    }
                                    div.field {
                                        label for="edit-comment" { "Comment " span.muted { "(optional)" } }
                                        input #edit-comment type="text" name="comment" maxlength="10000" data-testid="edit-comment";
                                    }
                                    button.btn.btn-primary type="submit" data-testid="save-edit" { "Save and approve" }
                                }
                            } @else if let Some(k) = &d.knowledge {
                                @let title = v.echo.title.clone().unwrap_or(k.proposed_title.clone());
                                @let text = v.echo.text.clone().unwrap_or(k.proposed_text.clone());
                                form.stack method="post" action=(action) #edit-form {
                                    (hidden)
                                    input type="hidden" name="verdict" value="edit";
                                    div.field {
                                        label for="edit-title" { "Title" }
                                        input #edit-title type="text" name="title" required maxlength="200" value=(title) data-testid="edit-title";
                                    }
                                    div.field {
                                        label for="edit-text" { "The knowledge the agents will get" }
                                        textarea #edit-text name="text" rows="10" required maxlength="102400" data-testid="edit-text" { (text) }
                                    }
                                    button.btn.btn-primary type="submit" data-testid="save-edit" { "Publish this instead" }
                                }
                            } @else {
                                @let current = d.message.as_ref().map(|m| m.text.clone()).unwrap_or_default();
                                @let text = v.echo.text.clone().unwrap_or(current);
                                form.stack method="post" action=(action) #edit-form {
                                    (hidden)
                                    input type="hidden" name="verdict" value="edit";
                                    div.field {
                                        label for="edit-text" { "The reply the user will see" }
                                        textarea #edit-text name="text" rows="6" required maxlength="20000" data-testid="edit-text" { (text) }
                                    }
                                    button.btn.btn-primary type="submit" data-testid="save-edit" { "Send this instead" }
                                }
                            }
                        }
                    }
                    @if r.kind == ReviewKind::Escalation {
                        @if let Some(cid) = r.conversation_id {
                            form method="post" action=(format!("/conversations/{cid}/takeover")) {
                                (page::csrf_field(user))
                                button.btn type="submit" data-testid="review-takeover" { "Take over the conversation" }
                            }
                        }
                    }
                }
            }
            p.shortcuts data-testid="shortcuts" aria-label="Keyboard shortcuts" {
                @if !can_decide {
                    (kbd("Esc")) " back"
                } @else if grading {
                    (kbd("a")) " correct · " (kbd("r")) " incorrect · " (kbd("Esc")) " back"
                } @else {
                    (kbd("a")) " approve · " (kbd("r")) " reject · "
                    @if edit_label.is_some() { (kbd("e")) " edit · " }
                    (kbd("Esc")) " back"
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DecisionForm {
    verdict: Option<String>,
    arguments: Option<String>,
    text: Option<String>,
    /// A knowledge change's new title.
    title: Option<String>,
    grade: Option<String>,
    labels: Option<String>,
    score: Option<String>,
    comment: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
    /// `conversation` to return to the conversation (drafts decided inline); else the next review.
    then: Option<String>,
    /// "Approve and don't ask again": propose a standing rule once the approval is complete.
    dont_ask_again: Option<String>,
}

impl DecisionForm {
    fn dont_ask_again(&self) -> bool {
        matches!(
            self.dont_ask_again.as_deref().map(str::trim),
            Some("true" | "on" | "1")
        )
    }
}

/// Why "don't ask again" cannot go with this decision (the API's rules, in words).
fn dont_ask_again_refusal(f: &DecisionForm, d: &ReviewDetail) -> Option<&'static str> {
    if !f.dont_ask_again() {
        return None;
    }
    if f.verdict.as_deref().map(str::trim) != Some("approve") {
        return Some(
            "Only an approval can stand for cases like this: “don't ask again” goes with Approve.",
        );
    }
    if d.review.kind != ReviewKind::Approval || d.action.is_none() {
        return Some("Only an approval of an agent's action can stand for cases like this.");
    }
    None
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The form as a decision, or what is wrong with it (in words for the page).
fn decision_input(f: &DecisionForm, kind: ReviewKind) -> Result<DecisionInput, String> {
    let verdict = match f
        .verdict
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        None => None,
        Some(v) => Some(Verdict::parse(v).ok_or("The verdict must be approve, reject or edit.")?),
    };
    let grade = match f.grade.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => None,
        Some(g) => Some(Grade::parse(g).ok_or("The grade must be correct or incorrect.")?),
    };
    if kind.is_grading() && grade.is_none() {
        return Err("Choose a grade: correct or incorrect.".into());
    }
    let mut arguments = None;
    let mut text = None;
    let mut title = None;
    if verdict == Some(Verdict::Edit) && kind == ReviewKind::KbChange {
        title = non_empty(f.title.clone());
        text = non_empty(f.text.clone());
        if text.is_none() {
            return Err("The new text is empty.".into());
        }
        // The domain checks the limits again; here they become words on the page.
        if let Some(Err(e)) = title.as_deref().map(loopgate_domain::knowledge::title) {
            return Err(format!("The title {}.", e.message));
        }
        if let Some(Err(e)) = text.as_deref().map(loopgate_domain::knowledge::text) {
            return Err(format!("The text is too long: {}.", e.message));
        }
    } else if verdict == Some(Verdict::Edit) {
        if kind == ReviewKind::Approval {
            let raw = f.arguments.as_deref().unwrap_or("").trim();
            if raw.is_empty() {
                return Err("The arguments are empty: an edit needs a JSON object.".into());
            }
            let value: serde_json::Value = serde_json::from_str(raw)
                .map_err(|e| format!("The arguments are not valid JSON: {e}."))?;
            if !value.is_object() {
                return Err("The arguments must be a JSON object ({ ... }).".into());
            }
            arguments = Some(value);
        } else {
            text = non_empty(f.text.clone());
            if text.is_none() {
                return Err("The new text is empty.".into());
            }
            if text.as_ref().is_some_and(|t| t.chars().count() > 20_000) {
                return Err("The new text is longer than 20000 characters.".into());
            }
        }
    }
    let comment = non_empty(f.comment.clone());
    if verdict == Some(Verdict::Reject) && comment.is_none() {
        return Err(
            "Say why you reject it: the reason goes to the agent and the audit log.".into(),
        );
    }
    let labels: Vec<String> = f
        .labels
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let score = match f.score.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && (0.0..=1.0).contains(s))
                .ok_or("The score must be a number from 0 to 1.")?,
        ),
    };
    Ok(DecisionInput {
        verdict,
        arguments,
        text,
        title,
        grade,
        score,
        labels,
        comment,
    })
}

fn echo(f: &DecisionForm) -> Echo {
    Echo {
        panel: match f.verdict.as_deref() {
            Some("reject") => Some("reject"),
            Some("edit") => Some("edit"),
            _ => None,
        },
        arguments: f.arguments.clone(),
        text: f.text.clone(),
        title: f.title.clone(),
        comment: f.comment.clone(),
        labels: f.labels.clone(),
    }
}

/// `POST /reviews/{id}/decision`: record the decision, then open the next review (or go back to
/// the conversation it came from). A refused decision shows the review again with the reason
/// and what the reviewer typed.
pub async fn decide(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, form }: Posted<DecisionForm>,
) -> PageResult {
    let id = parse_id(&id, "review")?;
    let scope = Scope::parse(form.queue.as_deref(), form.kind.as_deref());
    let current = state
        .store
        .get_review(&user.workspace, id)
        .await?
        .ok_or(PageError::NotFound("review"))?;
    let refuse = |status: StatusCode, message: String, detail: &ReviewDetail| {
        render(
            &user,
            detail,
            View {
                flash: None,
                proposal: None,
                error: Some(message),
                conflict: None,
                scope: scope.clone(),
                echo: echo(&form),
                status,
            },
        )
    };
    if let Some(m) = dont_ask_again_refusal(&form, &current) {
        return Ok(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            m.to_owned(),
            &current,
        ));
    }
    let input = match decision_input(&form, current.review.kind) {
        Ok(i) => i,
        Err(m) => return Ok(refuse(StatusCode::UNPROCESSABLE_ENTITY, m, &current)),
    };
    let verdict = input.verdict;
    let graded = input.grade.is_some();
    let decided = match state
        .store
        .decide_review(&user.workspace, id, &user.username, input)
        .await
    {
        Ok(d) => d,
        Err(StoreError::Conflict(m)) => {
            let fresh = state
                .store
                .get_review(&user.workspace, id)
                .await?
                .unwrap_or(current);
            return Ok(refuse(
                StatusCode::CONFLICT,
                format!("Not recorded: {m}."),
                &fresh,
            ));
        }
        Err(StoreError::Invalid { field, message }) => {
            return Ok(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Not recorded: {field}: {message}."),
                &current,
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let flash = match verdict {
        _ if graded => "graded",
        Some(Verdict::Reject) => "rejected",
        Some(Verdict::Edit) if decided.review.status.is_open() => "approved-partial",
        Some(Verdict::Edit) => "edited",
        _ if decided.review.status.is_open() => "approved-partial",
        _ => "approved",
    };
    if form.dont_ask_again() {
        return Ok(page::see_other(
            &dont_ask_again(&state, &user, &decided, &scope).await,
        ));
    }
    if form.then.as_deref() == Some("conversation") {
        if let Some(cid) = decided.review.conversation_id {
            return Ok(page::see_other(&format!(
                "/conversations/{cid}?flash={flash}"
            )));
        }
    }
    Ok(page::see_other(
        &next_location(&state, &user, &scope, flash).await?,
    ))
}

/// After an approval with "don't ask again": propose the standing rule through the same code
/// path as the API, then stay on the decided review to show it. The decision is committed
/// whatever happens here, so a failed proposal is a notice, not an error page.
async fn dont_ask_again(
    state: &AppState,
    user: &Session,
    decided: &ReviewDetail,
    scope: &Scope,
) -> String {
    let id = decided.review.id;
    let q = match scope.query() {
        q if q.is_empty() => q,
        q => format!("&{q}"),
    };
    if decided.review.outcome.as_deref() != Some("approved") {
        // Four eyes: only the approval that completes it proposes.
        return format!("/reviews/{id}?flash=approved-partial-no-proposal{q}");
    }
    match crate::learning::propose_standing_rule(
        state.store.as_ref(),
        &user.workspace,
        decided,
        &user.username,
    )
    .await
    {
        Ok(p) => format!("/reviews/{id}?flash=approved&proposal={}{q}", p.id),
        Err(e) => {
            tracing::warn!(error = %e, review = %id, "console: could not propose a standing rule");
            format!("/reviews/{id}?flash=approved-no-proposal{q}")
        }
    }
}

/// A number from a proposal's backtest summary.
fn backtest_count(p: &ProposalRecord, key: &str) -> u64 {
    p.backtest[key].as_u64().unwrap_or(0)
}

/// What "don't ask again" proposed, for the reviewer who asked: the rule and its backtest.
fn proposal_made(user: &Session, p: &ProposalRecord, scope: &Scope) -> Markup {
    let items = backtest_count(p, "items");
    let through = backtest_count(p, "let_through");
    let bad = backtest_count(p, "known_bad_let_through");
    let days = backtest_count(p, "window_days");
    html! {
        section.card.proposal-made role="status" data-testid="proposal-made" data-proposal-id=(p.id) {
            h2 { "Standing rule proposed to the admins" }
            p { strong data-testid="proposal-rule-name" { (p.rule_name) } }
            p data-testid="proposal-backtest" {
                "Replayed over " (p.agent) "'s " code { (p.action) } " actions of the last " (days) " days: "
                strong { (items) } " items; the rule would let " strong { (through) } " of them through without a human"
                @if bad == 0 {
                    ", none of which a human had rejected or edited."
                } @else {
                    ", " strong.known-bad-count { (bad) } " of which a human had rejected, edited or found wrong."
                }
            }
            p.muted { "Nothing changes until an admin approves it (status: " span data-testid="proposal-status" { (p.status) } ")." }
            form.form-actions method="post" action="/reviews/next" {
                (page::csrf_field(user))
                (scope.hidden_fields())
                button.btn.btn-primary type="submit" data-testid="proposal-next" { "Next review →" }
            }
        }
    }
}

/// The most urgent open review in `scope` this reviewer can take now, claimed when the store
/// picks it (`next_review`), or to be claimed on opening (a kind filter, which `next_review`
/// cannot apply: the first pending review of that kind the reviewer has not approved yet).
async fn next_in_scope(
    state: &AppState,
    user: &Session,
    scope: &Scope,
) -> PageResult<Option<Uuid>> {
    let Some(kind) = scope.kind else {
        return Ok(state
            .store
            .next_review(
                &user.workspace,
                scope.queue.as_deref(),
                &user.username,
                lease_ms(state),
            )
            .await?
            .map(|d| d.review.id));
    };
    let candidates = state
        .store
        .list_reviews(
            &user.workspace,
            ReviewFilter {
                status: Some("pending".into()),
                queue: scope.queue.clone(),
                kind: Some(kind.as_str().to_owned()),
                limit: 50,
            },
        )
        .await?;
    for r in candidates {
        if r.approvals == 0 {
            return Ok(Some(r.id));
        }
        // Four eyes: skip the ones this reviewer already approved.
        if let Some(d) = state.store.get_review(&user.workspace, r.id).await? {
            if !already_approved(&d, &user.username) {
                return Ok(Some(r.id));
            }
        }
    }
    Ok(None)
}

/// Where to go after a decision: the next review in the same scope, or the inbox.
async fn next_location(
    state: &AppState,
    user: &Session,
    scope: &Scope,
    flash: &str,
) -> PageResult<String> {
    let q = match scope.query() {
        q if q.is_empty() => q,
        q => format!("&{q}"),
    };
    Ok(match next_in_scope(state, user, scope).await? {
        Some(id) => format!("/reviews/{id}?flash={flash}{q}"),
        None => format!("/?flash={flash}{q}"),
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct NextForm {
    queue: Option<String>,
    kind: Option<String>,
}

/// `POST /reviews/next`: take the most urgent review of the inbox's current filters and open it.
pub async fn next(
    State(state): State<AppState>,
    Posted { user, form }: Posted<NextForm>,
) -> PageResult {
    let scope = Scope::parse(form.queue.as_deref(), form.kind.as_deref());
    let q = scope.query();
    Ok(page::see_other(
        &match next_in_scope(&state, &user, &scope).await? {
            Some(id) => format!("/reviews/{id}?{q}"),
            None => format!("/?flash=queue-empty&{q}"),
        },
    ))
}

/// `POST /reviews/{id}/release`: give the claim back and return to the inbox. Releasing a
/// review one does not hold (it lapsed, or was decided) is not an error here.
pub async fn release(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, form }: Posted<NextForm>,
) -> PageResult {
    let id = parse_id(&id, "review")?;
    let q = match Scope::parse(form.queue.as_deref(), form.kind.as_deref()).query() {
        q if q.is_empty() => q,
        q => format!("&{q}"),
    };
    match state
        .store
        .release_review(&user.workspace, id, &user.username)
        .await
    {
        Ok(_) => Ok(page::see_other(&format!("/?flash=released{q}"))),
        Err(StoreError::Conflict(_)) => Ok(page::see_other(&format!("/?{q}"))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(verdict: &str) -> DecisionForm {
        DecisionForm {
            verdict: Some(verdict.into()),
            ..Default::default()
        }
    }

    #[test]
    fn edits_need_a_json_object() {
        let mut f = form("edit");
        f.arguments = Some("{\"amount\": 5".into());
        let e = decision_input(&f, ReviewKind::Approval).unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        f.arguments = Some("[1]".into());
        assert!(decision_input(&f, ReviewKind::Approval).is_err());
        f.arguments = Some("{\"amount\": 5}".into());
        let ok = decision_input(&f, ReviewKind::Approval).unwrap();
        assert_eq!(ok.arguments, Some(serde_json::json!({"amount": 5})));
    }

    #[test]
    fn rejections_need_a_reason_and_grades_a_grade() {
        assert!(decision_input(&form("reject"), ReviewKind::Approval).is_err());
        let mut f = form("reject");
        f.comment = Some("wrong customer".into());
        assert!(decision_input(&f, ReviewKind::Approval).is_ok());
        assert!(decision_input(&DecisionForm::default(), ReviewKind::Qa).is_err());
        let g = DecisionForm {
            grade: Some("correct".into()),
            labels: Some(" tone, , policy ".into()),
            ..Default::default()
        };
        let i = decision_input(&g, ReviewKind::Qa).unwrap();
        assert_eq!(i.labels, vec!["tone", "policy"]);
    }

    #[test]
    fn dont_ask_again_is_a_checkbox_or_a_button_value() {
        let mut f = form("approve");
        assert!(!f.dont_ask_again());
        for v in ["true", "on", "1"] {
            f.dont_ask_again = Some(v.into());
            assert!(f.dont_ask_again(), "{v}");
        }
        f.dont_ask_again = Some("false".into());
        assert!(!f.dont_ask_again());
    }

    #[test]
    fn bad_values_are_words_not_panics() {
        let f = DecisionForm {
            verdict: Some("maybe".into()),
            ..Default::default()
        };
        assert!(decision_input(&f, ReviewKind::Approval).is_err());
        let f = DecisionForm {
            grade: Some("correct".into()),
            score: Some("NaN".into()),
            ..Default::default()
        };
        assert!(decision_input(&f, ReviewKind::Flag).is_err());
    }
}
