//! `/admin/proposals` (admins only): the standing rules reviewers proposed with "approve and
//! don't ask again", each with its TOML, where it would go in the policy, its backtest and the
//! known-bad items it would let through; approving one adds it to the policy as a new version
//! (the store's `decide_proposal`, as `POST /v1/policy/proposals/{id}/approve` does).

use super::admin::admin_page;
use super::page::{self, PageError, PageResult};
use super::session::{ConsoleUser, Empty, Posted, Session};
use crate::extract::Admin;
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use chrono::Utc;
use loopgate_store::{ProposalRecord, StoreError};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// Decided proposals shown under the pending ones.
const RECENT_DECIDED: usize = 20;

#[derive(Debug, Default, Deserialize)]
pub struct ProposalsQuery {
    flash: Option<String>,
}

/// `GET /admin/proposals`.
pub async fn page(
    State(state): State<AppState>,
    user: ConsoleUser<Admin>,
    RawQuery(query): RawQuery,
) -> PageResult {
    let q: ProposalsQuery =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    render(&state, &user, q.flash.as_deref(), None, StatusCode::OK).await
}

async fn render(
    state: &AppState,
    user: &Session,
    flash: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> PageResult {
    let all = state.store.list_proposals(&user.workspace).await?;
    let version = state
        .store
        .current_policy(&user.workspace)
        .await?
        .map(|p| p.version)
        .unwrap_or(0);
    let (pending, decided): (Vec<&ProposalRecord>, Vec<&ProposalRecord>) =
        all.iter().partition(|p| p.status == "pending");
    let content = html! {
        section aria-labelledby="pending-title" {
            h2 #pending-title {
                "Waiting for a decision "
                span.badge.neutral data-testid="pending-count" { (pending.len()) }
            }
            @if pending.is_empty() {
                p.muted.card data-testid="no-pending" { "No proposals are waiting. Reviewers propose standing rules with “Approve and don't ask again”." }
            }
            @for p in &pending { (pending_card(user, p, version)) }
        }
        @if !decided.is_empty() {
            section.card aria-labelledby="decided-title" {
                h2 #decided-title { "Recently decided" }
                div.table-scroll {
                    table.data.compact data-testid="decided-proposals" {
                        thead { tr {
                            th scope="col" { "Rule" } th scope="col" { "Decision" } th scope="col" { "By" }
                            th scope="col" { "When" } th scope="col" { "Policy version" }
                        } }
                        tbody {
                            @for p in decided.iter().take(RECENT_DECIDED) {
                                tr data-testid="decided-proposal" data-proposal-id=(p.id) {
                                    th scope="row" { (p.rule_name) }
                                    td { span.badge.status data-status=(p.status) { (p.status) } }
                                    td { (p.decided_by.as_deref().unwrap_or("—")) }
                                    td { @if let Some(at) = p.decided_at { (page::age(at, Utc::now())) } }
                                    td.num { @match p.policy_version { Some(v) => (v), None => span.muted { "—" } } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(admin_page(
        user,
        "proposals",
        "Proposed rules",
        status,
        flash,
        error,
        content,
    ))
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// One pending proposal: what the rule says, where it goes, what its backtest found.
fn pending_card(user: &Session, p: &ProposalRecord, version: i64) -> Markup {
    let bt = &p.backtest;
    let known_bad: &[Value] = bt["report"]["known_bad"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let bad = count(bt, "known_bad_let_through");
    html! {
        article.card.proposal data-testid="proposal" data-proposal-id=(p.id) {
            div.card-head {
                h3 data-testid="proposal-name" { (p.rule_name) }
                span.muted {
                    "by " (p.proposed_by) ", " (page::age(p.created_at, Utc::now()))
                    " · " a href=(format!("/reviews/{}", p.review_id)) { "the approved review" }
                }
            }
            p data-testid="proposal-place" {
                @match &p.before_rule {
                    Some(rule) => { "Goes just before the rule " code { (rule) } " (the one that sent the approved item to review), so every rule above it stays in force." }
                    None => { "Goes at the end of the policy." }
                }
                " Proposed against version " (p.base_version) "."
                @if p.base_version != version {
                    " " strong { "The policy is at version " (version) " now; the rule goes into that version." }
                }
            }
            pre.rule-toml data-testid="proposal-toml" { (p.rule_toml) }
            h4 { "Backtest over " (p.agent) "'s " code { (p.action) } " actions, last " (count(bt, "window_days")) " days" }
            ul.backtest-summary data-testid="proposal-backtest" {
                li { strong { (count(bt, "items")) } " items (" (count(bt, "graded")) " judged by a human)" }
                li { strong { (count(bt, "let_through")) } " would run without a human" }
                li { strong { (count(bt, "newly_let_through")) } " more than today" }
                li.known-bad-count[bad > 0] { strong data-testid="proposal-known-bad" { (bad) } " of them a human had rejected, edited or found wrong" }
            }
            @if !known_bad.is_empty() {
                details open[known_bad.len() <= 10] {
                    summary { "Known-bad items it would let through" }
                    div.table-scroll {
                        table.data.compact data-testid="known-bad" {
                            thead { tr {
                                th scope="col" { "Item" } th scope="col" { "Agent" } th scope="col" { "Action" }
                                th scope="col" { "Confidence" } th scope="col" { "Through today?" }
                            } }
                            tbody {
                                @for k in known_bad {
                                    tr data-testid="known-bad-row" {
                                        td { code title=(k["id"].as_str().unwrap_or("")) { (k["kind"].as_str().unwrap_or("")) " " (page::excerpt(k["id"].as_str().unwrap_or(""), 13)) } }
                                        td { (k["agent"].as_str().unwrap_or("")) }
                                        td { code { (k["name"].as_str().unwrap_or("")) } }
                                        td.num { (page::confidence(k["confidence"].as_f64())) }
                                        td { @if k["current_lets_through"].as_bool() == Some(true) { "yes" } @else { "no" } }
                                    }
                                }
                            }
                        }
                    }
                    @if (known_bad.len() as u64) < bad {
                        p.muted { "The first " (known_bad.len()) " of " (bad) "." }
                    }
                }
            }
            div.form-actions {
                form method="post" action=(format!("/admin/proposals/{}/approve", p.id)) {
                    (page::csrf_field(user))
                    button.btn.btn-approve type="submit" data-testid="proposal-approve" { "Approve: add it to the policy" }
                }
                form method="post" action=(format!("/admin/proposals/{}/reject", p.id)) {
                    (page::csrf_field(user))
                    button.btn.btn-reject type="submit" data-testid="proposal-reject" { "Reject" }
                }
            }
        }
    }
}

async fn decide(state: &AppState, user: &Session, id: &str, approve: bool) -> PageResult {
    let id = Uuid::parse_str(id).map_err(|_| PageError::NotFound("proposal"))?;
    match state
        .store
        .decide_proposal(&user.workspace, id, approve, &user.actor())
        .await
    {
        Ok(_) => {
            state.policies.invalidate(&user.workspace);
            let flash = if approve {
                "proposal-approved"
            } else {
                "proposal-rejected"
            };
            Ok(page::see_other(&format!("/admin/proposals?flash={flash}")))
        }
        Err(StoreError::Conflict(m)) => {
            render(
                state,
                user,
                None,
                Some(&format!("Nothing changed: {m}.")),
                StatusCode::CONFLICT,
            )
            .await
        }
        Err(StoreError::Invalid { message, .. }) => {
            render(
                state,
                user,
                None,
                Some(&format!("Not approved: {message}.")),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /admin/proposals/{id}/approve`.
pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, .. }: Posted<Empty, Admin>,
) -> PageResult {
    decide(&state, &user, &id, true).await
}

/// `POST /admin/proposals/{id}/reject`.
pub async fn reject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, .. }: Posted<Empty, Admin>,
) -> PageResult {
    decide(&state, &user, &id, false).await
}
