//! The inbox (`/`): open reviews across queues, most urgent first, filterable by queue and kind.
//! Its rows are also served alone (`/console/inbox/rows`) for the live refresh.

use super::page::{self, kbd, Nav, PageError, PageResult};
use super::session::ConsoleUser;
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::HeaderValue;
use axum::response::{Html, IntoResponse};
use chrono::{DateTime, Utc};
use loopgate_domain::review::ReviewKind;
use loopgate_domain::types::Name;
use loopgate_store::{ReviewFilter, ReviewRecord};
use maud::{html, Markup};
use serde::Deserialize;

/// Rows shown at most; the queue is worked from the top.
const LIMIT: i64 = 200;
/// Rows whose action name is looked up for the subject column.
const SUBJECT_LOOKUPS: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn previews_show_scalars_and_elide_the_rest() {
        let p = preview(
            &json!({"order": "A-1", "amount": 90, "items": [1, 2], "to": {"a": 1}, "x": 1}),
        );
        assert_eq!(
            p.as_deref(),
            Some("amount: 90 · items: […] · order: A-1 · to: {…} · …")
        );
        assert_eq!(preview(&json!({})), None);
        assert_eq!(preview(&json!([1])), None);
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct InboxQuery {
    queue: Option<String>,
    kind: Option<String>,
    flash: Option<String>,
}

/// Filters as parsed; a bad value is reported and ignored, never an error page.
struct Filters {
    queue: Option<String>,
    kind: Option<ReviewKind>,
    problem: Option<String>,
}

fn filters(q: &InboxQuery) -> Filters {
    let mut problem = None;
    let queue = match q.queue.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => match Name::parse(raw) {
            Ok(n) => Some(n.as_str().to_owned()),
            Err(e) => {
                problem = Some(format!("The queue filter was ignored: {e}."));
                None
            }
        },
    };
    let kind = match q.kind.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => match ReviewKind::parse(raw) {
            Some(k) => Some(k),
            None => {
                problem = Some(
                    "The kind filter was ignored: it must be approval, draft, escalation, qa, flag or kb_change."
                        .to_owned(),
                );
                None
            }
        },
    };
    Filters {
        queue,
        kind,
        problem,
    }
}

pub fn kind_label(k: ReviewKind) -> &'static str {
    match k {
        ReviewKind::Approval => "Approval",
        ReviewKind::Draft => "Draft reply",
        ReviewKind::Escalation => "Escalation",
        ReviewKind::Qa => "QA sample",
        ReviewKind::Flag => "Flag",
        ReviewKind::KbChange => "Knowledge change",
    }
}

pub fn kind_badge(k: ReviewKind) -> Markup {
    html! { span.badge.kind data-kind=(k.as_str()) { (kind_label(k)) } }
}

const KINDS: [ReviewKind; 6] = [
    ReviewKind::Approval,
    ReviewKind::Draft,
    ReviewKind::Escalation,
    ReviewKind::Qa,
    ReviewKind::Flag,
    ReviewKind::KbChange,
];

pub struct Row {
    pub review: ReviewRecord,
    /// The action's name, for reviews of actions.
    pub action_name: Option<String>,
    /// The first few arguments, `key: value · ...`, to recognise the item at a glance.
    pub preview: Option<String>,
}

/// `order: A-1001 · amount: 900 · currency: EUR`: scalars shown, nested values elided.
fn preview(arguments: &serde_json::Value) -> Option<String> {
    let map = arguments.as_object()?;
    let parts: Vec<String> = map
        .iter()
        .take(4)
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(_) => "{…}".to_owned(),
                serde_json::Value::Array(_) => "[…]".to_owned(),
                other => other.to_string(),
            };
            format!("{k}: {v}")
        })
        .collect();
    if parts.is_empty() {
        return None;
    }
    let mut text = parts.join(" · ");
    if map.len() > 4 {
        text.push_str(" · …");
    }
    Some(text)
}

/// The open reviews matching `f`, most urgent first, with their action names.
async fn load(state: &AppState, workspace: &str, f: &Filters) -> PageResult<Vec<Row>> {
    let reviews = state
        .store
        .list_reviews(
            workspace,
            ReviewFilter {
                status: Some("open".into()),
                queue: f.queue.clone(),
                kind: f.kind.map(|k| k.as_str().to_owned()),
                limit: LIMIT,
            },
        )
        .await?;
    // The list carries no subject; one indexed read per visible action fills it in.
    let lookups = reviews.iter().take(SUBJECT_LOOKUPS).map(|r| async move {
        match r.action_id {
            Some(id) => state
                .store
                .get_action(workspace, id)
                .await
                .ok()
                .flatten()
                .map(|a| (a.action.name, preview(&a.action.arguments))),
            None => None,
        }
    });
    let mut subjects = futures::future::join_all(lookups).await.into_iter();
    Ok(reviews
        .into_iter()
        .map(|review| {
            let (action_name, preview) = match subjects.next().flatten() {
                Some((name, preview)) => (Some(name), preview),
                None => (None, None),
            };
            Row {
                action_name,
                preview,
                review,
            }
        })
        .collect())
}

pub fn holder(r: &ReviewRecord, now: DateTime<Utc>) -> Option<&str> {
    match (&r.claimed_by, r.claim_expires_at) {
        (Some(who), Some(until)) if until > now => Some(who.as_str()),
        _ => None,
    }
}

/// A review's page, keeping the inbox's filters (`scope`, a query string) for "next".
fn href(r: &ReviewRecord, scope: &str) -> String {
    if scope.is_empty() {
        format!("/reviews/{}", r.id)
    } else {
        format!("/reviews/{}?{scope}", r.id)
    }
}

fn subject(row: &Row, scope: &str) -> Markup {
    let r = &row.review;
    let title = match (&row.action_name, r.kind) {
        (Some(name), _) => name.clone(),
        (None, ReviewKind::Draft) => "Draft reply".to_owned(),
        (None, ReviewKind::Escalation) => "Conversation needs a human".to_owned(),
        (None, ReviewKind::Flag) => "Answer flagged by the user".to_owned(),
        (None, ReviewKind::Qa) => "Sampled AI reply".to_owned(),
        (None, k) => kind_label(k).to_owned(),
    };
    html! {
        a.row-link href=(href(r, scope)) data-testid="inbox-open" {
            span.subject-title { (title) }
            @if let Some(agent) = &r.agent { span.subject-agent { " · " (agent) } }
        }
        @if let Some(p) = &row.preview {
            span.subject-reason data-testid="inbox-preview" { (page::excerpt(p, 110)) }
        } @else if !r.reason.is_empty() {
            span.subject-reason { (page::excerpt(&r.reason, 110)) }
        }
    }
}

/// The table body: one row per review, or the empty state.
fn rows_markup(rows: &[Row], now: DateTime<Utc>, scope: &str) -> Markup {
    let filtered = !scope.is_empty();
    html! {
        @if rows.is_empty() {
            tr.empty-row {
                td colspan="8" data-testid="inbox-empty" {
                    div.empty-state {
                        p.empty-title { @if filtered { "Nothing matches these filters." } @else { "Inbox zero." } }
                        p.muted { "New reviews appear here as soon as an agent needs a human." }
                    }
                }
            }
        }
        @for row in rows {
            @let r = &row.review;
            @let held = holder(r, now);
            tr.inbox-row.is-claimed[held.is_some()] data-testid="inbox-row" data-review-id=(r.id)
                data-kind=(r.kind.as_str()) data-href=(href(r, scope)) {
                td { (kind_badge(r.kind)) }
                td.subject { (subject(row, scope)) }
                td { span.queue { (r.queue) } }
                td.num { (page::age(r.created_at, now)) }
                td.num { (page::sla(r.due_at, now)) }
                td { (page::confidence(r.confidence)) }
                td.rule {
                    @match &r.rule {
                        Some(rule) => span title=(r.reason) { (page::excerpt(rule, 48)) },
                        None => span.muted title=(r.reason) { "no rule matched" },
                    }
                }
                td.status {
                    @if let Some(who) = held {
                        span.claim data-testid="claimed-by" { "Claimed by " (who) }
                    } @else if r.approvals_required > 1 {
                        span.approvals { (r.approvals) " of " (r.approvals_required) " approvals" }
                    } @else if r.priority != 0 {
                        span.priority { "Priority " (r.priority) }
                    } @else {
                        span.muted { "Waiting" }
                    }
                }
            }
        }
    }
}

fn query_string(f: &Filters) -> String {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if let Some(q) = &f.queue {
        pairs.push(("queue", q));
    }
    if let Some(k) = f.kind {
        pairs.push(("kind", k.as_str()));
    }
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// `GET /`: the inbox.
pub async fn page(
    State(state): State<AppState>,
    user: ConsoleUser,
    RawQuery(query): RawQuery,
) -> PageResult {
    let q: InboxQuery =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let f = filters(&q);
    let rows = load(&state, &user.workspace, &f).await?;
    let counts = state.store.counts(&user.workspace).await?;
    let now = Utc::now();
    let filtered = f.queue.is_some() || f.kind.is_some();
    let qs = query_string(&f);
    let mut queues: Vec<(String, i64)> = counts.open_reviews.clone();
    if let Some(q) = &f.queue {
        if !queues.iter().any(|(n, _)| n == q) {
            queues.push((q.clone(), 0));
        }
    }
    queues.sort();
    let total: i64 = counts.open_reviews.iter().map(|(_, n)| n).sum();
    let body = html! {
        div.page-head {
            div {
                h1 { "Inbox" }
                p.muted data-testid="inbox-count" {
                    span #open-count { (rows.len()) } " open"
                    @if filtered { " matching · " (total) " in all queues" }
                    " · most urgent first"
                }
            }
            form.head-actions method="post" action="/reviews/next" {
                (page::csrf_field(&user))
                @if let Some(q) = &f.queue { input type="hidden" name="queue" value=(q); }
                @if let Some(k) = f.kind { input type="hidden" name="kind" value=(k.as_str()); }
                button.btn.btn-primary type="submit" data-testid="start-next" disabled[rows.is_empty()] {
                    "Start reviewing"
                }
            }
        }
        (page::flash(q.flash.as_deref()))
        (page::error_banner(f.problem.as_deref()))
        form.filters method="get" action="/" role="search" aria-label="Filter reviews" data-testid="inbox-filters" {
            div.field.field-inline {
                label for="filter-queue" { "Queue" }
                select #filter-queue name="queue" data-autosubmit data-testid="filter-queue" {
                    option value="" { "All queues" }
                    @for (name, n) in &queues {
                        option value=(name) selected[f.queue.as_deref() == Some(name.as_str())] { (name) " (" (n) ")" }
                    }
                }
            }
            div.field.field-inline {
                label for="filter-kind" { "Kind" }
                select #filter-kind name="kind" data-autosubmit data-testid="filter-kind" {
                    option value="" { "All kinds" }
                    @for k in KINDS {
                        option value=(k.as_str()) selected[f.kind == Some(k)] { (kind_label(k)) }
                    }
                }
            }
            button.btn.btn-quiet.js-hide type="submit" { "Apply" }
            @if filtered { a.btn.btn-quiet href="/" data-testid="clear-filters" { "Clear filters" } }
            p.shortcuts data-testid="shortcuts" aria-label="Keyboard shortcuts" {
                (kbd("j")) " " (kbd("k")) " move · " (kbd("Enter")) " open"
            }
        }
        div.table-wrap {
            table.data.inbox data-testid="inbox-table" {
                caption.visually-hidden { "Open reviews, most urgent first" }
                thead {
                    tr {
                        th scope="col" { "Kind" }
                        th scope="col" { "Subject" }
                        th scope="col" { "Queue" }
                        th scope="col" { "Age" }
                        th scope="col" { "SLA" }
                        th scope="col" { "Confidence" }
                        th scope="col" { "Rule" }
                        th scope="col" { "Status" }
                    }
                }
                tbody #inbox-rows data-testid="inbox-rows" data-fragment=(format!("/console/inbox/rows?{qs}")) {
                    (rows_markup(&rows, now, &qs))
                }
            }
        }
    };
    Ok(page::render(page::shell(
        "Inbox",
        "inbox",
        Some(&user),
        Nav::Inbox,
        body,
    )))
}

/// `GET /console/inbox/rows`: the rows alone, for the live refresh. The count of rows is in
/// `X-Open-Count`.
pub async fn rows(
    State(state): State<AppState>,
    user: ConsoleUser,
    RawQuery(query): RawQuery,
) -> Result<axum::response::Response, PageError> {
    let q: InboxQuery =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let f = filters(&q);
    let rows = load(&state, &user.workspace, &f).await?;
    let scope = query_string(&f);
    let mut resp = Html(rows_markup(&rows, Utc::now(), &scope).into_string()).into_response();
    resp.headers_mut()
        .insert("x-open-count", HeaderValue::from(rows.len()));
    Ok(resp)
}
