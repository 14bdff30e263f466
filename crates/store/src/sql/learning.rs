//! The learning loop's storage: the evidence scan (every recorded action and AI message with
//! what humans said about it), tuned thresholds, and proposed standing rules.

use super::db::{DbRow, Pool};
use super::store::{corrupt, ms_to_time};
use super::writer::Tx;
use crate::records::*;
use crate::{Result, StoreError};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use loopgate_domain::learning::{insert_rule, label, rule_index, ReplayItem, Signals};
use loopgate_domain::policy::{Policy, SubjectKind};
use serde_json::{json, Value};
use sqlx::Row;
use std::collections::HashMap;
use uuid::Uuid;

/// Actions with their gate's outcome, whether a reviewer edited them, and their QA grade.
/// `$3`/`$4` narrow to an agent / action name when not NULL.
const ACTION_EVIDENCE: &str = "SELECT a.id, a.agent, a.name, a.proposed_arguments, a.confidence, a.context,
        r.outcome AS review_outcome,
        (SELECT COUNT(*) FROM decisions d WHERE d.review_id = a.review_id AND d.verdict = 'edit') AS edits,
        (SELECT q.outcome FROM reviews q WHERE q.action_id = a.id AND q.kind = 'qa'
            AND q.status = 'decided' ORDER BY q.decided_at DESC LIMIT 1) AS qa
    FROM actions a LEFT JOIN reviews r ON r.id = a.review_id
    WHERE a.workspace = $1 AND a.created_at >= $2
      AND ($3 IS NULL OR a.agent = $3) AND ($4 IS NULL OR a.name = $4)
    ORDER BY a.created_at";

/// AI messages with their draft/escalation review's outcome, whether a human rewrote them, their
/// QA grade, and end-user flags with the flag review's verdict. None when `$4` (an action name)
/// is set: messages are not actions.
const MESSAGE_EVIDENCE: &str =
    "SELECT m.id, c.agent, COALESCE(m.original_text, m.text) AS text, m.confidence,
        c.context, c.state, c.turns, r.outcome AS review_outcome,
        CAST(CASE WHEN m.original_text IS NOT NULL THEN 1 ELSE 0 END AS BIGINT) AS edits,
        (SELECT q.outcome FROM reviews q WHERE q.message_id = m.id AND q.kind = 'qa'
            AND q.status = 'decided' ORDER BY q.decided_at DESC LIMIT 1) AS qa,
        (SELECT COUNT(*) FROM feedback f WHERE f.message_id = m.id AND f.rating = 'down') AS flags,
        (SELECT q.outcome FROM reviews q WHERE q.message_id = m.id AND q.kind = 'flag'
            AND q.status = 'decided' ORDER BY q.decided_at DESC LIMIT 1) AS flag_outcome
    FROM messages m JOIN conversations c ON c.id = m.conversation_id
        LEFT JOIN reviews r ON r.id = m.review_id
    WHERE m.workspace = $1 AND m.role = 'ai' AND m.created_at >= $2
      AND ($3 IS NULL OR c.agent = $3) AND $4 IS NULL
    ORDER BY m.created_at";

fn grade(outcome: Option<String>) -> Option<bool> {
    match outcome.as_deref() {
        Some("graded:correct") => Some(true),
        Some("graded:incorrect") => Some(false),
        _ => None,
    }
}

fn json_column(row: &DbRow, column: &str) -> Result<Value> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|_| corrupt(column, &text))
}

fn action_item(row: &DbRow) -> Result<ReplayItem> {
    let edits: i64 = row.try_get("edits")?;
    let signals = Signals {
        review_outcome: row.try_get("review_outcome")?,
        edited: edits > 0,
        qa_grade: grade(row.try_get("qa")?),
        flagged: false,
        flag_cleared: false,
    };
    Ok(ReplayItem {
        id: row.try_get("id")?,
        kind: SubjectKind::Action,
        agent: row.try_get("agent")?,
        action_name: row.try_get("name")?,
        arguments: json_column(row, "proposed_arguments")?,
        message_text: String::new(),
        confidence: row.try_get("confidence")?,
        context: json_column(row, "context")?,
        // What a conversation looked like when the action came is not recorded; actions are
        // rarely judged by it.
        conversation_state: "ai".into(),
        conversation_turns: 0,
        label: label(&signals),
    })
}

fn message_item(row: &DbRow) -> Result<ReplayItem> {
    let edits: i64 = row.try_get("edits")?;
    let flags: i64 = row.try_get("flags")?;
    let flag_outcome = grade(row.try_get("flag_outcome")?);
    let signals = Signals {
        review_outcome: row.try_get("review_outcome")?,
        edited: edits > 0,
        qa_grade: grade(row.try_get("qa")?),
        flagged: flags > 0,
        flag_cleared: flag_outcome == Some(true),
    };
    Ok(ReplayItem {
        id: row.try_get("id")?,
        kind: SubjectKind::Message,
        agent: row.try_get("agent")?,
        action_name: String::new(),
        arguments: json!({}),
        message_text: row.try_get("text")?,
        confidence: row.try_get("confidence")?,
        context: json_column(row, "context")?,
        // The conversation as it is now: its state when the message came is not recorded.
        conversation_state: row.try_get("state")?,
        conversation_turns: row.try_get("turns")?,
        label: label(&signals),
    })
}

/// Every recorded action, then every AI message, since `since_ms`, oldest first, streamed from
/// the database: a replay of millions of items holds one row at a time.
pub(crate) fn evidence<'a>(
    pool: &'a Pool,
    ws: &'a str,
    filter: EvidenceFilter,
    since_ms: i64,
) -> BoxStream<'a, Result<ReplayItem>> {
    let actions = sqlx::query(ACTION_EVIDENCE)
        .bind(ws)
        .bind(since_ms)
        .bind(filter.agent.clone())
        .bind(filter.action.clone())
        .fetch(pool)
        .map_err(StoreError::from)
        .and_then(|row| async move { action_item(&row) });
    let messages = sqlx::query(MESSAGE_EVIDENCE)
        .bind(ws)
        .bind(since_ms)
        .bind(filter.agent)
        .bind(filter.action)
        .fetch(pool)
        .map_err(StoreError::from)
        .and_then(|row| async move { message_item(&row) });
    actions.chain(messages).boxed()
}

/// How many items [`evidence`] would yield (for a progress bar's total).
pub(crate) async fn count_evidence(
    pool: &Pool,
    ws: &str,
    filter: &EvidenceFilter,
    since_ms: i64,
) -> Result<u64> {
    let (actions,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM actions a WHERE a.workspace = $1 AND a.created_at >= $2
           AND ($3 IS NULL OR a.agent = $3) AND ($4 IS NULL OR a.name = $4)",
    )
    .bind(ws)
    .bind(since_ms)
    .bind(filter.agent.clone())
    .bind(filter.action.clone())
    .fetch_one(pool)
    .await?;
    let (messages,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.workspace = $1 AND m.role = 'ai' AND m.created_at >= $2
           AND ($3 IS NULL OR c.agent = $3) AND $4 IS NULL",
    )
    .bind(ws)
    .bind(since_ms)
    .bind(filter.agent.clone())
    .bind(filter.action.clone())
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(actions + messages).unwrap_or(0))
}

pub(crate) async fn auto_thresholds(pool: &Pool, ws: &str) -> Result<HashMap<String, f64>> {
    let rows: Vec<(String, f64)> =
        sqlx::query_as("SELECT rule, value FROM auto_thresholds WHERE workspace = $1")
            .bind(ws)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Records a tuned threshold and the audit event that says why (`evidence`).
pub(crate) async fn set_auto_threshold(
    tx: &mut Tx,
    ws: &str,
    rule: &str,
    value: f64,
    evidence: Value,
) -> Result<()> {
    let previous: Option<(f64,)> =
        sqlx::query_as("SELECT value FROM auto_thresholds WHERE workspace = $1 AND rule = $2")
            .bind(ws)
            .bind(rule)
            .fetch_optional(&mut tx.conn)
            .await?;
    sqlx::query(
        "INSERT INTO auto_thresholds (workspace, rule, value, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (workspace, rule) DO UPDATE SET value = $3, updated_at = $4",
    )
    .bind(ws)
    .bind(rule)
    .bind(value)
    .bind(tx.now_ms())
    .execute(&mut tx.conn)
    .await?;
    tx.event(
        ws,
        "system:autonomy",
        "policy.threshold_changed",
        &format!("rule:{rule}"),
        json!({
            "rule": rule, "from": previous.map(|p| p.0), "to": value, "evidence": evidence,
        }),
    )
    .await
}

const PROPOSAL_COLUMNS: &str = "id, status, rule_name, rule_toml, agent, action, before_rule, \
     base_version, review_id, action_id, proposed_by, backtest, created_at, decided_by, \
     decided_at, policy_version";

fn uuid_column(row: &DbRow, column: &str) -> Result<Uuid> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|_| corrupt(column, &text))
}

fn proposal_from_row(row: &DbRow) -> Result<ProposalRecord> {
    Ok(ProposalRecord {
        id: uuid_column(row, "id")?,
        status: row.try_get("status")?,
        rule_name: row.try_get("rule_name")?,
        rule_toml: row.try_get("rule_toml")?,
        agent: row.try_get("agent")?,
        action: row.try_get("action")?,
        before_rule: row.try_get("before_rule")?,
        base_version: row.try_get("base_version")?,
        review_id: uuid_column(row, "review_id")?,
        action_id: uuid_column(row, "action_id")?,
        proposed_by: row.try_get("proposed_by")?,
        backtest: json_column(row, "backtest")?,
        created_at: ms_to_time(row.try_get("created_at")?),
        decided_by: row.try_get("decided_by")?,
        decided_at: row.try_get::<Option<i64>, _>("decided_at")?.map(ms_to_time),
        policy_version: row.try_get("policy_version")?,
    })
}

pub(crate) async fn list_proposals(pool: &Pool, ws: &str) -> Result<Vec<ProposalRecord>> {
    let sql = format!(
        "SELECT {PROPOSAL_COLUMNS} FROM policy_proposals WHERE workspace = $1
         ORDER BY CASE WHEN status = 'pending' THEN 0 ELSE 1 END, created_at DESC LIMIT 500"
    );
    let rows = sqlx::query(&sql).bind(ws).fetch_all(pool).await?;
    rows.iter().map(proposal_from_row).collect()
}

async fn load_proposal(tx: &mut Tx, ws: &str, id: &str) -> Result<Option<ProposalRecord>> {
    let sql =
        format!("SELECT {PROPOSAL_COLUMNS} FROM policy_proposals WHERE workspace = $1 AND id = $2");
    let row = sqlx::query(&sql)
        .bind(ws)
        .bind(id)
        .fetch_optional(&mut tx.conn)
        .await?;
    row.as_ref().map(proposal_from_row).transpose()
}

pub(crate) async fn get_proposal(
    pool: &Pool,
    ws: &str,
    id: Uuid,
) -> Result<Option<ProposalRecord>> {
    let sql =
        format!("SELECT {PROPOSAL_COLUMNS} FROM policy_proposals WHERE workspace = $1 AND id = $2");
    let row = sqlx::query(&sql)
        .bind(ws)
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(proposal_from_row).transpose()
}

pub(crate) async fn create_proposal(tx: &mut Tx, new: NewProposal) -> Result<ProposalRecord> {
    let id = Uuid::now_v7();
    let ws = new.workspace.clone();
    sqlx::query(
        "INSERT INTO policy_proposals (id, workspace, status, rule_name, rule_toml, agent, action,
             before_rule, base_version, review_id, action_id, proposed_by, backtest, created_at)
         VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(id.to_string())
    .bind(&ws)
    .bind(&new.rule_name)
    .bind(&new.rule_toml)
    .bind(&new.agent)
    .bind(&new.action)
    .bind(&new.before_rule)
    .bind(new.base_version)
    .bind(new.review_id.to_string())
    .bind(new.action_id.to_string())
    .bind(&new.proposed_by)
    .bind(new.backtest.to_string())
    .bind(tx.now_ms())
    .execute(&mut tx.conn)
    .await?;
    tx.event(
        &ws,
        &new.proposed_by,
        "policy.proposal_created",
        &format!("proposal:{id}"),
        json!({
            "rule_name": new.rule_name, "agent": new.agent, "action": new.action,
            "review_id": new.review_id, "action_id": new.action_id,
            "base_version": new.base_version, "backtest": new.backtest,
        }),
    )
    .await?;
    load_proposal(tx, &ws, &id.to_string())
        .await?
        .ok_or(StoreError::NotFound("proposal"))
}

/// An admin's answer. Approval adds the rule to the policy *as it is now* (just before the rule
/// it was proposed to go before, if that rule still exists) as a new version, in the same
/// transaction as the proposal's new status: a proposal is applied once or not at all.
pub(crate) async fn decide_proposal(
    tx: &mut Tx,
    ws: &str,
    id: Uuid,
    approve: bool,
    admin: &str,
) -> Result<ProposalRecord> {
    let id = id.to_string();
    let proposal = load_proposal(tx, ws, &id)
        .await?
        .ok_or(StoreError::NotFound("proposal"))?;
    if proposal.status != "pending" {
        return Err(StoreError::Conflict(format!(
            "this proposal is already {}",
            proposal.status
        )));
    }
    let mut version: Option<i64> = None;
    if approve {
        let current: Option<(i64, String)> = sqlx::query_as(
            "SELECT version, text FROM policies WHERE workspace = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(ws)
        .fetch_optional(&mut tx.conn)
        .await?;
        let (base, text) = current.unwrap_or((0, String::new()));
        let index = match (&proposal.before_rule, Policy::parse(&text)) {
            (Some(before), Ok(policy)) => rule_index(&policy, before),
            _ => None,
        };
        let new_text = insert_rule(&text, index, &proposal.rule_toml);
        if let Err(errors) = Policy::parse(&new_text) {
            return Err(StoreError::Invalid {
                field: "rule_toml",
                message: format!(
                    "the policy with this rule does not compile: {}",
                    errors.first().map(|e| e.to_string()).unwrap_or_default()
                ),
            });
        }
        let next = base + 1;
        sqlx::query(
            "INSERT INTO policies (workspace, version, text, created_at, created_by)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(ws)
        .bind(next)
        .bind(&new_text)
        .bind(tx.now_ms())
        .bind(admin)
        .execute(&mut tx.conn)
        .await?;
        tx.event(
            ws,
            admin,
            "policy.updated",
            &format!("policy:{next}"),
            json!({"version": next, "proposal_id": id}),
        )
        .await?;
        version = Some(next);
    }
    let status = if approve { "approved" } else { "rejected" };
    sqlx::query(
        "UPDATE policy_proposals SET status = $1, decided_by = $2, decided_at = $3,
             policy_version = $4
         WHERE workspace = $5 AND id = $6 AND status = 'pending'",
    )
    .bind(status)
    .bind(admin)
    .bind(tx.now_ms())
    .bind(version)
    .bind(ws)
    .bind(&id)
    .execute(&mut tx.conn)
    .await?;
    tx.event(
        ws,
        admin,
        "policy.proposal_decided",
        &format!("proposal:{id}"),
        json!({"status": status, "rule_name": proposal.rule_name, "policy_version": version}),
    )
    .await?;
    load_proposal(tx, ws, &id)
        .await?
        .ok_or(StoreError::NotFound("proposal"))
}
