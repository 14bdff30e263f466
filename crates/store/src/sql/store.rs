//! The store, written once in SQL that SQLite and PostgreSQL both speak, and compiled once per
//! backend (see `crate::sqlite` and `crate::postgres`, whose `db` module supplies the connection
//! types, the opening, the transaction start and the cross-node notification). A read pool
//! answers queries; one [`super::writer::Writer`] per node makes every change.

use super::db::{self, Conn, DbRow, Pool};
use super::writer::{Tx, Writer};
use super::{accounts, conversations, export, knowledge, learning, stats, webhooks};
use crate::records::*;
use crate::{ConversationChange, NewFeedback, NewMessage, NewWebhook, StoreOptions};
use crate::{NewAction, NewKnowledge, Result, ReviewFilter, Store, StoreError, Submitted, Sweep};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use loopgate_domain::action::{governing_pause, ActionStatus, Pause, PauseMode};
use loopgate_domain::audit::{ChainBreak, ChainVerifier, Event};
use loopgate_domain::auth::{token_hash, Role};
use loopgate_domain::policy::{sampled, OnTimeout, Outcome};
use loopgate_domain::review::{
    decide, DecisionError, DecisionInput, Effect, Grade, PriorDecision, ReviewFacts, ReviewKind,
    ReviewStatus, Verdict,
};
use serde_json::{json, Value};
use sqlx::Row;
use std::sync::Arc;
use tokio::sync::broadcast;
use uuid::Uuid;

/// A subquery true when reviewer `$3` already approved review `r` as it now stands: an approval
/// or edit since the latest edit (see `loopgate_domain::review::decide`). Such a reviewer is not
/// offered the review again and may not claim it.
const APPROVAL_COUNTS: &str = "SELECT 1 FROM decisions d WHERE d.review_id = r.id AND d.reviewer = $3
       AND d.verdict IN ('approve', 'edit')
       AND d.created_at >= COALESCE(
           (SELECT MAX(e.created_at) FROM decisions e WHERE e.review_id = r.id AND e.verdict = 'edit'), 0)";

/// The rule name recorded when a pause, not the policy, routed an action.
pub const PAUSE_RULE: &str = "@pause";

pub struct SqlStore {
    read: Pool,
    writer: Writer,
    events: broadcast::Sender<Arc<Event>>,
}

impl SqlStore {
    /// Open and migrate the database at `url`; with `create`, an SQLite file is created if missing.
    pub async fn open(url: &str, create: bool, options: &StoreOptions) -> Result<SqlStore> {
        let (read, conn) = db::connect(url, create, options).await?;
        let (events, _) = broadcast::channel(16 * 1024);
        let node = Uuid::new_v4().simple().to_string();
        db::listen(url, &read, &events, &node).await?;
        let writer = Writer::spawn(conn, events.clone(), url.to_owned(), options.clone(), node);
        Ok(SqlStore {
            read,
            writer,
            events,
        })
    }
}

pub(crate) fn ms_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(crate) fn opt_time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(ms_to_time)
}

pub(crate) fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Internal(format!("stored id {s:?} is corrupt: {e}")))
}

pub(crate) fn opt_uuid(s: Option<String>) -> Result<Option<Uuid>> {
    s.as_deref().map(parse_uuid).transpose()
}

pub(crate) fn parse_json(s: &str) -> Result<Value> {
    Ok(serde_json::from_str(s)?)
}

pub(crate) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Internal(format!("stored {what} {value:?} is not valid"))
}

const ACTION_COLUMNS: &str =
    "id, workspace, agent, name, arguments, proposed_arguments, confidence, context, \
     conversation_id, status, rule, reason, policy_version, review_id, created_at, decided_at";

fn action_from_row(row: &DbRow) -> Result<ActionRecord> {
    let status: String = row.try_get("status")?;
    Ok(ActionRecord {
        id: parse_uuid(row.try_get("id")?)?,
        workspace: row.try_get("workspace")?,
        agent: row.try_get("agent")?,
        name: row.try_get("name")?,
        arguments: parse_json(row.try_get("arguments")?)?,
        proposed_arguments: parse_json(row.try_get("proposed_arguments")?)?,
        confidence: row.try_get("confidence")?,
        context: parse_json(row.try_get("context")?)?,
        conversation_id: row.try_get("conversation_id")?,
        status: ActionStatus::parse(&status).ok_or_else(|| corrupt("action status", &status))?,
        rule: row.try_get("rule")?,
        reason: row.try_get("reason")?,
        policy_version: row.try_get("policy_version")?,
        review_id: opt_uuid(row.try_get("review_id")?)?,
        created_at: ms_to_time(row.try_get("created_at")?),
        decided_at: opt_time(row.try_get("decided_at")?),
    })
}

const REVIEW_SELECT: &str = "SELECT r.id, r.workspace, r.kind, r.status, r.queue, r.priority, r.due_at, \
     r.on_timeout, r.approvals_required, r.approvals, r.rule, r.reason, r.policy_version, r.action_id, \
     r.claimed_by, r.claim_expires_at, r.created_at, r.decided_at, r.outcome, \
     r.conversation_id, r.message_id, \
     COALESCE(a.confidence, m.confidence) AS subject_confidence, \
     COALESCE(a.agent, c.agent, k.agent) AS subject_agent \
     FROM reviews r LEFT JOIN actions a ON a.id = r.action_id \
     LEFT JOIN messages m ON m.id = r.message_id \
     LEFT JOIN conversations c ON c.id = r.conversation_id \
     LEFT JOIN knowledge_changes k ON k.review_id = r.id";

fn review_from_row(row: &DbRow) -> Result<ReviewRecord> {
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let mut review = review_row(row, &kind, &status)?;
    // A claim whose lease ran out is over, whether or not the sweep has rewritten the row yet.
    let now = Utc::now();
    if review.status == ReviewStatus::Claimed && review.claim_expires_at.is_some_and(|t| t <= now) {
        review.status = ReviewStatus::Pending;
        review.claimed_by = None;
        review.claim_expires_at = None;
    }
    Ok(review)
}

fn review_row(row: &DbRow, kind: &str, status: &str) -> Result<ReviewRecord> {
    Ok(ReviewRecord {
        id: parse_uuid(row.try_get("id")?)?,
        workspace: row.try_get("workspace")?,
        kind: ReviewKind::parse(kind).ok_or_else(|| corrupt("review kind", kind))?,
        status: ReviewStatus::parse(status).ok_or_else(|| corrupt("review status", status))?,
        queue: row.try_get("queue")?,
        priority: row.try_get("priority")?,
        due_at: opt_time(row.try_get("due_at")?),
        on_timeout: row.try_get("on_timeout")?,
        approvals_required: row.try_get("approvals_required")?,
        approvals: row.try_get("approvals")?,
        rule: row.try_get("rule")?,
        reason: row.try_get("reason")?,
        policy_version: row.try_get("policy_version")?,
        action_id: opt_uuid(row.try_get("action_id")?)?,
        claimed_by: row.try_get("claimed_by")?,
        claim_expires_at: opt_time(row.try_get("claim_expires_at")?),
        created_at: ms_to_time(row.try_get("created_at")?),
        decided_at: opt_time(row.try_get("decided_at")?),
        outcome: row.try_get("outcome")?,
        confidence: row.try_get("subject_confidence")?,
        agent: row.try_get("subject_agent")?,
        conversation_id: opt_uuid(row.try_get("conversation_id")?)?,
        message_id: opt_uuid(row.try_get("message_id")?)?,
    })
}

fn decision_from_row(row: &DbRow) -> Result<DecisionRecord> {
    let verdict: String = row.try_get("verdict")?;
    let grade: Option<String> = row.try_get("grade")?;
    let arguments: Option<String> = row.try_get("arguments")?;
    let labels: String = row.try_get("labels")?;
    Ok(DecisionRecord {
        id: parse_uuid(row.try_get("id")?)?,
        review_id: parse_uuid(row.try_get("review_id")?)?,
        reviewer: row.try_get("reviewer")?,
        verdict: Verdict::parse(&verdict).ok_or_else(|| corrupt("verdict", &verdict))?,
        arguments: arguments.as_deref().map(parse_json).transpose()?,
        text: row.try_get("text")?,
        grade: match grade {
            Some(g) => Some(Grade::parse(&g).ok_or_else(|| corrupt("grade", &g))?),
            None => None,
        },
        score: row.try_get("score")?,
        labels: serde_json::from_str(&labels)?,
        comment: row.try_get("comment")?,
        created_at: ms_to_time(row.try_get("created_at")?),
    })
}

fn event_from_row(row: &DbRow) -> Result<Event> {
    Ok(Event {
        seq: row.try_get("seq")?,
        workspace: row.try_get("workspace")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        event_type: row.try_get("type")?,
        subject: row.try_get("subject")?,
        data: parse_json(row.try_get("data")?)?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

// ---- Queries shared by the read pool and the writer's transaction. ----

pub(crate) async fn load_action(c: &mut Conn, ws: &str, id: &str) -> Result<Option<ActionRecord>> {
    let sql = format!("SELECT {ACTION_COLUMNS} FROM actions WHERE workspace = $1 AND id = $2");
    let row = sqlx::query(&sql)
        .bind(ws)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(action_from_row).transpose()
}

pub(crate) async fn load_review(c: &mut Conn, ws: &str, id: &str) -> Result<Option<ReviewRecord>> {
    let sql = format!("{REVIEW_SELECT} WHERE r.workspace = $1 AND r.id = $2");
    let row = sqlx::query(&sql)
        .bind(ws)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(review_from_row).transpose()
}

pub(crate) async fn load_decisions(c: &mut Conn, review_id: &str) -> Result<Vec<DecisionRecord>> {
    let rows = sqlx::query(
        "SELECT id, review_id, reviewer, verdict, arguments, text, grade, score, labels, comment, created_at
         FROM decisions WHERE review_id = $1 ORDER BY created_at, id",
    )
    .bind(review_id)
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(decision_from_row).collect()
}

pub(crate) async fn load_detail(c: &mut Conn, ws: &str, id: &str) -> Result<Option<ReviewDetail>> {
    let Some(review) = load_review(c, ws, id).await? else {
        return Ok(None);
    };
    let action = match review.action_id {
        Some(aid) => load_action(c, ws, &aid.to_string()).await?,
        None => None,
    };
    let message = match review.message_id {
        Some(mid) => conversations::load_message(c, ws, &mid.to_string()).await?,
        None => None,
    };
    let conversation = match review.conversation_id {
        Some(cid) => conversations::load_view(c, ws, &cid.to_string()).await?,
        None => None,
    };
    let knowledge = match review.kind {
        ReviewKind::KbChange => knowledge::load_for_review(c, ws, id).await?,
        _ => None,
    };
    let decisions = load_decisions(c, id).await?;
    Ok(Some(ReviewDetail {
        review,
        action,
        message,
        conversation,
        knowledge,
        decisions,
    }))
}

pub(crate) async fn load_pauses(c: &mut Conn, ws: &str) -> Result<Vec<Pause>> {
    let rows = sqlx::query(
        "SELECT agent, mode, reason, set_by FROM pauses WHERE workspace = $1 ORDER BY agent",
    )
    .bind(ws)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| {
            let agent: String = r.try_get("agent")?;
            let mode: String = r.try_get("mode")?;
            Ok(Pause {
                agent: (!agent.is_empty()).then_some(agent),
                mode: PauseMode::parse(&mode).ok_or_else(|| corrupt("pause mode", &mode))?,
                reason: r.try_get("reason")?,
                set_by: r.try_get("set_by")?,
            })
        })
        .collect()
}

/// How an action got its final status, derived from its review's outcome and decisions.
fn action_decision(
    action: &ActionRecord,
    review: Option<&ReviewRecord>,
    decisions: &[DecisionRecord],
) -> Option<ActionDecision> {
    if !action.status.is_final() {
        return None;
    }
    let review = review?;
    let outcome = review.outcome.as_deref().unwrap_or("");
    if action.status == ActionStatus::Cancelled {
        return Some(ActionDecision {
            verdict: "cancel".into(),
            by: vec![action.agent.clone()],
            comment: None,
            decided_at: action.decided_at,
        });
    }
    if outcome.starts_with("expired") {
        return Some(ActionDecision {
            verdict: "timeout".into(),
            by: vec!["system".into()],
            comment: Some(format!(
                "no decision before the deadline; on_timeout = {}",
                review.on_timeout.as_deref().unwrap_or("reject")
            )),
            decided_at: action.decided_at,
        });
    }
    let last = decisions.last()?;
    let mut by: Vec<String> = Vec::new();
    for d in decisions {
        if !by.contains(&d.reviewer) {
            by.push(d.reviewer.clone());
        }
    }
    let edited = decisions.iter().any(|d| d.verdict == Verdict::Edit);
    let verdict = match action.status {
        ActionStatus::Approved if edited => "edit",
        ActionStatus::Approved => "approve",
        _ => last.verdict.as_str(),
    };
    Some(ActionDecision {
        verdict: verdict.into(),
        by,
        comment: last.comment.clone(),
        decided_at: action.decided_at,
    })
}

fn decision_error(e: DecisionError) -> StoreError {
    match e {
        DecisionError::Invalid { field, message } => StoreError::Invalid { field, message },
        other => StoreError::Conflict(other.to_string()),
    }
}

/// The review's state as a decision sees it: an expired lease counts as no claim.
pub(crate) fn review_facts(r: &ReviewRecord, now_ms: i64) -> ReviewFacts {
    let lease_active = r.status == ReviewStatus::Claimed
        && r.claim_expires_at
            .is_some_and(|t| t.timestamp_millis() > now_ms);
    ReviewFacts {
        kind: r.kind,
        status: if r.status == ReviewStatus::Claimed && !lease_active {
            ReviewStatus::Pending
        } else {
            r.status
        },
        approvals_required: u32::try_from(r.approvals_required).unwrap_or(1),
        claimed_by: if lease_active {
            r.claimed_by.clone()
        } else {
            None
        },
    }
}

pub(crate) struct NewReview<'a> {
    pub(crate) id: Uuid,
    pub(crate) workspace: &'a str,
    pub(crate) kind: ReviewKind,
    pub(crate) queue: &'a str,
    pub(crate) priority: i64,
    pub(crate) due_at: Option<i64>,
    pub(crate) on_timeout: Option<OnTimeout>,
    pub(crate) approvals_required: u32,
    pub(crate) rule: Option<&'a str>,
    pub(crate) reason: &'a str,
    pub(crate) policy_version: i64,
    pub(crate) action_id: Option<Uuid>,
    pub(crate) conversation_id: Option<Uuid>,
    pub(crate) message_id: Option<Uuid>,
}

pub(crate) async fn insert_review(tx: &mut Tx, r: NewReview<'_>, actor: &str) -> Result<()> {
    let now = tx.now_ms();
    sqlx::query(
        "INSERT INTO reviews (id, workspace, kind, status, queue, priority, due_at, due_key, on_timeout,
            approvals_required, rule, reason, policy_version, action_id, created_at, conversation_id, message_id)
         VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(r.id.to_string())
    .bind(r.workspace)
    .bind(r.kind.as_str())
    .bind(r.queue)
    .bind(r.priority)
    .bind(r.due_at)
    .bind(r.due_at.unwrap_or(i64::MAX))
    .bind(r.on_timeout.map(|o| o.as_str()))
    .bind(i64::from(r.approvals_required))
    .bind(r.rule)
    .bind(r.reason)
    .bind(r.policy_version)
    .bind(r.action_id.map(|a| a.to_string()))
    .bind(now)
    .bind(r.conversation_id.map(|c| c.to_string()))
    .bind(r.message_id.map(|m| m.to_string()))
    .execute(&mut tx.conn)
    .await?;
    let data = json!({
        "kind": r.kind.as_str(), "queue": r.queue, "priority": r.priority,
        "due_at": opt_time(r.due_at), "approvals_required": r.approvals_required,
        "rule": r.rule, "reason": r.reason, "action_id": r.action_id,
        "conversation_id": r.conversation_id, "message_id": r.message_id,
    });
    tx.event(
        r.workspace,
        actor,
        "review.created",
        &format!("review:{}", r.id),
        data,
    )
    .await
}

/// Set a pending action's final status and tell the log.
async fn finish_action(
    tx: &mut Tx,
    action: &ActionRecord,
    status: ActionStatus,
    arguments: Option<&Value>,
    actor: &str,
    verdict: &str,
) -> Result<()> {
    let now = tx.now_ms();
    let args_text = match arguments {
        Some(a) => Some(serde_json::to_string(a)?),
        None => None,
    };
    sqlx::query(
        "UPDATE actions SET status = $1, arguments = COALESCE($2, arguments), decided_at = $3
         WHERE id = $4 AND status = 'pending'",
    )
    .bind(status.as_str())
    .bind(args_text)
    .bind(now)
    .bind(action.id.to_string())
    .execute(&mut tx.conn)
    .await?;
    let data = json!({
        "status": status.as_str(), "verdict": verdict, "agent": action.agent, "name": action.name,
        "arguments": arguments.unwrap_or(&action.arguments), "edited": arguments.is_some(),
    });
    tx.event(
        &action.workspace,
        actor,
        "action.decided",
        &format!("action:{}", action.id),
        data,
    )
    .await
}

pub(crate) fn check_open(r: &ReviewRecord) -> Result<()> {
    if r.status.is_open() {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "the review is already {}",
            r.status.as_str()
        )))
    }
}

#[async_trait]
impl Store for SqlStore {
    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    async fn ensure_workspace(&self, workspace: &str) -> Result<()> {
        let ws = workspace.to_owned();
        self.writer
            .write(move |tx| {
                Box::pin(async move {
                    let now = tx.now_ms();
                    let created = sqlx::query(
                        "INSERT INTO workspaces (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    )
                    .bind(&ws)
                    .bind(now)
                    .execute(&mut tx.conn)
                    .await?
                    .rows_affected();
                    if created > 0 {
                        tx.event(&ws, "system", "workspace.created", &format!("workspace:{ws}"), json!({}))
                            .await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn create_key(&self, workspace: &str, name: &str, role: Role) -> Result<NewKey> {
        self.ensure_workspace(workspace).await?;
        let (ws, name) = (workspace.to_owned(), name.to_owned());
        self.writer
            .write(move |tx| {
                Box::pin(async move {
                    let token = crate::secrets::new_token();
                    let id = Uuid::now_v7();
                    sqlx::query(
                        "INSERT INTO api_keys (id, workspace, name, role, token_hash, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(id.to_string())
                    .bind(&ws)
                    .bind(&name)
                    .bind(role.as_str())
                    .bind(token_hash(&token))
                    .bind(tx.now_ms())
                    .execute(&mut tx.conn)
                    .await?;
                    tx.event(
                        &ws,
                        "system",
                        "key.created",
                        &format!("key:{id}"),
                        json!({"name": name, "role": role.as_str()}),
                    )
                    .await?;
                    Ok(NewKey {
                        key: KeyRecord {
                            id,
                            workspace: ws,
                            name,
                            role,
                            created_at: tx.now,
                        },
                        token,
                    })
                })
            })
            .await
    }

    async fn authenticate(&self, token: &str) -> Result<Option<KeyRecord>> {
        let row = sqlx::query(
            "SELECT id, workspace, name, role, created_at FROM api_keys
             WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash(token))
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let role: String = row.try_get("role")?;
        Ok(Some(KeyRecord {
            id: parse_uuid(row.try_get("id")?)?,
            workspace: row.try_get("workspace")?,
            name: row.try_get("name")?,
            role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
            created_at: ms_to_time(row.try_get("created_at")?),
        }))
    }

    async fn create_user(
        &self,
        workspace: &str,
        username: &str,
        role: Role,
        password_hash: &str,
    ) -> Result<UserRecord> {
        if role == Role::Agent {
            return Err(StoreError::Invalid {
                field: "role",
                message: "users are reviewers or admins; agents use API keys".into(),
            });
        }
        self.ensure_workspace(workspace).await?;
        let (ws, username, hash) = (
            workspace.to_owned(),
            username.to_owned(),
            password_hash.to_owned(),
        );
        self.writer
            .write(move |tx| {
                Box::pin(async move {
                    let id = Uuid::now_v7();
                    let inserted = sqlx::query(
                        "INSERT INTO users (id, workspace, username, role, password_hash, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (workspace, username) DO NOTHING",
                    )
                    .bind(id.to_string())
                    .bind(&ws)
                    .bind(&username)
                    .bind(role.as_str())
                    .bind(&hash)
                    .bind(tx.now_ms())
                    .execute(&mut tx.conn)
                    .await?
                    .rows_affected();
                    if inserted == 0 {
                        return Err(StoreError::Conflict(format!(
                            "user {username:?} already exists in workspace {ws:?}"
                        )));
                    }
                    tx.event(&ws, "system", "user.created", &format!("user:{id}"),
                        json!({"username": username, "role": role.as_str()}))
                        .await?;
                    Ok(UserRecord { id, workspace: ws, username, role, created_at: tx.now })
                })
            })
            .await
    }

    async fn current_policy(&self, workspace: &str) -> Result<Option<PolicyRecord>> {
        let row = sqlx::query(
            "SELECT workspace, version, text, created_at, created_by FROM policies
             WHERE workspace = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(workspace)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            Ok(PolicyRecord {
                workspace: r.try_get("workspace")?,
                version: r.try_get("version")?,
                text: r.try_get("text")?,
                created_at: ms_to_time(r.try_get("created_at")?),
                created_by: r.try_get("created_by")?,
            })
        })
        .transpose()
    }

    async fn put_policy(&self, workspace: &str, text: &str, actor: &str) -> Result<PolicyRecord> {
        let (ws, text, actor) = (workspace.to_owned(), text.to_owned(), actor.to_owned());
        self.writer
            .write(move |tx| {
                Box::pin(async move {
                    let current: Option<(i64, String, i64, String)> = sqlx::query_as(
                        "SELECT version, text, created_at, created_by FROM policies
                         WHERE workspace = $1 ORDER BY version DESC LIMIT 1",
                    )
                    .bind(&ws)
                    .fetch_optional(&mut tx.conn)
                    .await?;
                    if let Some((version, old, at, by)) = &current {
                        if *old == text {
                            return Ok(PolicyRecord {
                                workspace: ws,
                                version: *version,
                                text,
                                created_at: ms_to_time(*at),
                                created_by: by.clone(),
                            });
                        }
                    }
                    let version = current.map_or(1, |c| c.0 + 1);
                    sqlx::query(
                        "INSERT INTO policies (workspace, version, text, created_at, created_by)
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&ws)
                    .bind(version)
                    .bind(&text)
                    .bind(tx.now_ms())
                    .bind(&actor)
                    .execute(&mut tx.conn)
                    .await?;
                    tx.event(
                        &ws,
                        &actor,
                        "policy.updated",
                        &format!("policy:{version}"),
                        json!({"version": version}),
                    )
                    .await?;
                    Ok(PolicyRecord {
                        workspace: ws,
                        version,
                        text,
                        created_at: tx.now,
                        created_by: actor,
                    })
                })
            })
            .await
    }

    async fn submit_action(&self, new: NewAction) -> Result<Submitted> {
        self.writer
            .write(move |tx| Box::pin(submit_in_tx(tx, new)))
            .await
    }

    async fn get_action(&self, workspace: &str, id: Uuid) -> Result<Option<ActionView>> {
        let mut c = self.read.acquire().await?;
        let Some(action) = load_action(&mut c, workspace, &id.to_string()).await? else {
            return Ok(None);
        };
        let (review, decisions) = match action.review_id {
            Some(rid) => (
                load_review(&mut c, workspace, &rid.to_string()).await?,
                load_decisions(&mut c, &rid.to_string()).await?,
            ),
            None => (None, Vec::new()),
        };
        let decision = action_decision(&action, review.as_ref(), &decisions);
        Ok(Some(ActionView { action, decision }))
    }

    async fn cancel_action(&self, workspace: &str, agent: &str, id: Uuid) -> Result<ActionRecord> {
        let (ws, agent) = (workspace.to_owned(), agent.to_owned());
        self.writer
            .write(move |tx| {
                Box::pin(async move {
                    let action = load_action(&mut tx.conn, &ws, &id.to_string())
                        .await?
                        .filter(|a| a.agent == agent)
                        .ok_or(StoreError::NotFound("action"))?;
                    if action.status != ActionStatus::Pending {
                        return Err(StoreError::Conflict(format!(
                            "the action is already {}", action.status.as_str()
                        )));
                    }
                    let actor = format!("agent:{agent}");
                    finish_action(tx, &action, ActionStatus::Cancelled, None, &actor, "cancel").await?;
                    if let Some(rid) = action.review_id {
                        sqlx::query(
                            "UPDATE reviews SET status = 'cancelled', outcome = 'cancelled', decided_at = $1,
                                claimed_by = NULL, claim_expires_at = NULL
                             WHERE id = $2 AND status IN ('pending', 'claimed')",
                        )
                        .bind(tx.now_ms())
                        .bind(rid.to_string())
                        .execute(&mut tx.conn)
                        .await?;
                        tx.event(&ws, &actor, "review.cancelled", &format!("review:{rid}"),
                            json!({"action_id": id, "reason": "the agent cancelled the action"}))
                            .await?;
                    }
                    load_action(&mut tx.conn, &ws, &id.to_string())
                        .await?
                        .ok_or(StoreError::NotFound("action"))
                })
            })
            .await
    }

    async fn list_reviews(
        &self,
        workspace: &str,
        filter: ReviewFilter,
    ) -> Result<Vec<ReviewRecord>> {
        // Built with placeholders numbered by QueryBuilder, so only the filters in use are bound.
        let now = Utc::now().timestamp_millis();
        let mut q = sqlx::QueryBuilder::<db::Db>::new(REVIEW_SELECT);
        q.push(" WHERE r.workspace = ")
            .push_bind(workspace.to_owned());
        match filter.status.as_deref() {
            None | Some("open") => {
                q.push(" AND r.status IN ('pending', 'claimed')");
            }
            Some("all") => {}
            // Lapsed claims count as pending, as everywhere else.
            Some("pending") => {
                q.push(" AND (r.status = 'pending' OR (r.status = 'claimed' AND r.claim_expires_at <= ")
                    .push_bind(now)
                    .push("))");
            }
            Some("claimed") => {
                q.push(" AND r.status = 'claimed' AND r.claim_expires_at > ")
                    .push_bind(now);
            }
            Some(other) => {
                q.push(" AND r.status = ").push_bind(other.to_owned());
            }
        }
        if let Some(queue) = &filter.queue {
            q.push(" AND r.queue = ").push_bind(queue.clone());
        }
        if let Some(kind) = &filter.kind {
            q.push(" AND r.kind = ").push_bind(kind.clone());
        }
        q.push(" ORDER BY r.priority DESC, r.due_key, r.created_at LIMIT ")
            .push_bind(filter.limit);
        let rows = q.build().fetch_all(&self.read).await?;
        rows.iter().map(review_from_row).collect()
    }

    async fn get_review(&self, workspace: &str, id: Uuid) -> Result<Option<ReviewDetail>> {
        let mut c = self.read.acquire().await?;
        load_detail(&mut c, workspace, &id.to_string()).await
    }

    async fn next_review(
        &self,
        workspace: &str,
        queue: Option<&str>,
        reviewer: &str,
        lease_ms: i64,
    ) -> Result<Option<ReviewDetail>> {
        let (ws, queue, reviewer) = (
            workspace.to_owned(),
            queue.map(str::to_owned),
            reviewer.to_owned(),
        );
        self.writer
            .write(move |tx| {
                Box::pin(async move {
                    // Two index probes rather than one query over both statuses, so each is
                    // served in index order: the best pending review, and the best review whose
                    // claim lapsed but has not been swept yet.
                    let queue_filter = if queue.is_some() {
                        "AND queue = $2"
                    } else {
                        ""
                    };
                    let mut best: Option<(String, i64, i64, i64)> = None;
                    for status_filter in [
                        "status = 'pending' AND $4 = $4",
                        "status = 'claimed' AND claim_expires_at <= $4",
                    ] {
                        let sql = format!(
                            "SELECT id, priority, due_key, created_at FROM reviews r
                             WHERE workspace = $1 AND {status_filter} {queue_filter}
                               AND NOT EXISTS ({APPROVAL_COUNTS})
                             ORDER BY priority DESC, due_key, created_at LIMIT 1"
                        );
                        let found: Option<(String, i64, i64, i64)> = sqlx::query_as(&sql)
                            .bind(&ws)
                            .bind(queue.as_deref().unwrap_or(""))
                            .bind(&reviewer)
                            .bind(tx.now_ms())
                            .fetch_optional(&mut tx.conn)
                            .await?;
                        if let Some(f) = found {
                            let better = best
                                .as_ref()
                                .is_none_or(|b| (-f.1, f.2, f.3) < (-b.1, b.2, b.3));
                            if better {
                                best = Some(f);
                            }
                        }
                    }
                    let id = best.map(|b| (b.0,));
                    let Some((id,)) = id else { return Ok(None) };
                    claim_in_tx(tx, &ws, &id, &reviewer, lease_ms)
                        .await
                        .map(Some)
                })
            })
            .await
    }

    async fn claim_review(
        &self,
        workspace: &str,
        id: Uuid,
        reviewer: &str,
        lease_ms: i64,
    ) -> Result<ReviewDetail> {
        let (ws, reviewer) = (workspace.to_owned(), reviewer.to_owned());
        self.writer
            .write(move |tx| {
                Box::pin(async move {
                    let id = id.to_string();
                    let review = load_review(&mut tx.conn, &ws, &id)
                        .await?
                        .ok_or(StoreError::NotFound("review"))?;
                    check_open(&review)?;
                    let facts = review_facts(&review, tx.now_ms());
                    if let Some(holder) = facts.claimed_by {
                        if holder != reviewer {
                            return Err(StoreError::Conflict(format!(
                                "the review is claimed by {holder}"
                            )));
                        }
                    }
                    let approved: Option<(String,)> = sqlx::query_as(&format!(
                        "SELECT r.id FROM reviews r WHERE r.id = $1 AND $2 = $2 AND EXISTS ({APPROVAL_COUNTS})"
                    ))
                    .bind(&id)
                    .bind("")
                    .bind(&reviewer)
                    .fetch_optional(&mut tx.conn)
                    .await?;
                    if approved.is_some() {
                        return Err(StoreError::Conflict(format!(
                            "{reviewer} has already approved this review; another reviewer must approve it"
                        )));
                    }
                    claim_in_tx(tx, &ws, &id, &reviewer, lease_ms).await
                })
            })
            .await
    }

    async fn release_review(
        &self,
        workspace: &str,
        id: Uuid,
        reviewer: &str,
    ) -> Result<ReviewDetail> {
        let (ws, reviewer) = (workspace.to_owned(), reviewer.to_owned());
        self.writer
            .write(move |tx| {
                Box::pin(async move {
                    let id = id.to_string();
                    let review = load_review(&mut tx.conn, &ws, &id)
                        .await?
                        .ok_or(StoreError::NotFound("review"))?;
                    check_open(&review)?;
                    let facts = review_facts(&review, tx.now_ms());
                    match facts.claimed_by {
                        Some(holder) if holder == reviewer => {}
                        Some(holder) => {
                            return Err(StoreError::Conflict(format!(
                                "the review is claimed by {holder}"
                            )))
                        }
                        None => {
                            return Err(StoreError::Conflict("the review is not claimed".into()))
                        }
                    }
                    sqlx::query(
                        "UPDATE reviews SET status = 'pending', claimed_by = NULL, claim_expires_at = NULL
                         WHERE id = $1",
                    )
                    .bind(&id)
                    .execute(&mut tx.conn)
                    .await?;
                    tx.event(&ws, &format!("reviewer:{reviewer}"), "review.released",
                        &format!("review:{id}"), json!({"reviewer": reviewer}))
                        .await?;
                    load_detail(&mut tx.conn, &ws, &id).await?.ok_or(StoreError::NotFound("review"))
                })
            })
            .await
    }

    async fn decide_review(
        &self,
        workspace: &str,
        id: Uuid,
        reviewer: &str,
        input: DecisionInput,
    ) -> Result<ReviewDetail> {
        let (ws, reviewer) = (workspace.to_owned(), reviewer.to_owned());
        self.writer
            .write(move |tx| Box::pin(decide_in_tx(tx, ws, id.to_string(), reviewer, input)))
            .await
    }

    async fn sweep_timers(&self) -> Result<Sweep> {
        self.writer.write(|tx| Box::pin(sweep_in_tx(tx))).await
    }

    async fn set_pause(
        &self,
        workspace: &str,
        agent: Option<&str>,
        mode: Option<PauseMode>,
        reason: &str,
        actor: &str,
    ) -> Result<Vec<Pause>> {
        let (ws, agent, reason, actor) = (
            workspace.to_owned(),
            agent.unwrap_or("").to_owned(),
            reason.to_owned(),
            actor.to_owned(),
        );
        self.writer
            .write(move |tx| {
                Box::pin(async move {
                    let scope = if agent.is_empty() { "workspace" } else { "agent" };
                    let subject = if agent.is_empty() {
                        format!("workspace:{ws}")
                    } else {
                        format!("agent:{agent}")
                    };
                    tx.pauses_changed(&ws);
                    match mode {
                        Some(mode) => {
                            sqlx::query(
                                "INSERT INTO pauses (workspace, agent, mode, reason, set_by, set_at)
                                 VALUES ($1, $2, $3, $4, $5, $6)
                                 ON CONFLICT (workspace, agent) DO UPDATE SET mode = excluded.mode,
                                    reason = excluded.reason, set_by = excluded.set_by, set_at = excluded.set_at",
                            )
                            .bind(&ws)
                            .bind(&agent)
                            .bind(mode.as_str())
                            .bind(&reason)
                            .bind(&actor)
                            .bind(tx.now_ms())
                            .execute(&mut tx.conn)
                            .await?;
                            tx.event(&ws, &actor, &format!("{scope}.paused"), &subject,
                                json!({"agent": (!agent.is_empty()).then_some(&agent), "mode": mode.as_str(), "reason": reason}))
                                .await?;
                        }
                        None => {
                            let removed = sqlx::query("DELETE FROM pauses WHERE workspace = $1 AND agent = $2")
                                .bind(&ws)
                                .bind(&agent)
                                .execute(&mut tx.conn)
                                .await?
                                .rows_affected();
                            if removed > 0 {
                                tx.event(&ws, &actor, &format!("{scope}.resumed"), &subject,
                                    json!({"agent": (!agent.is_empty()).then_some(&agent), "reason": reason}))
                                    .await?;
                            }
                        }
                    }
                    load_pauses(&mut tx.conn, &ws).await
                })
            })
            .await
    }

    async fn pauses(&self, workspace: &str) -> Result<Vec<Pause>> {
        let mut c = self.read.acquire().await?;
        load_pauses(&mut c, workspace).await
    }

    async fn audit_events(&self, workspace: &str, after: i64, limit: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT workspace, seq, at, actor, type, subject, data, prev_hash, hash FROM events
             WHERE workspace = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(workspace)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn audit_head(&self, workspace: &str) -> Result<i64> {
        let head: Option<(i64,)> =
            sqlx::query_as("SELECT seq FROM audit_heads WHERE workspace = $1")
                .bind(workspace)
                .fetch_optional(&self.read)
                .await?;
        Ok(head.map_or(0, |h| h.0))
    }

    async fn workspaces(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT name FROM workspaces ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    async fn verify_audit(&self, workspace: &str) -> Result<Result<u64, ChainBreak>> {
        verify_chain(&self.read, workspace).await
    }

    async fn counts(&self, workspace: &str) -> Result<Counts> {
        let open_reviews: Vec<(String, i64)> = sqlx::query_as(
            "SELECT queue, COUNT(*) FROM reviews WHERE workspace = $1 AND status IN ('pending', 'claimed')
             GROUP BY queue ORDER BY queue",
        )
        .bind(workspace)
        .fetch_all(&self.read)
        .await?;
        let actions: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM actions WHERE workspace = $1 GROUP BY status ORDER BY status",
        )
        .bind(workspace)
        .fetch_all(&self.read)
        .await?;
        Ok(Counts {
            open_reviews,
            actions,
        })
    }

    async fn create_conversation(
        &self,
        workspace: &str,
        agent: &str,
        external_id: Option<String>,
        context: Value,
    ) -> Result<(ConversationRecord, bool)> {
        let (ws, agent) = (workspace.to_owned(), agent.to_owned());
        self.writer
            .write(move |tx| {
                Box::pin(conversations::create_in_tx(
                    tx,
                    ws,
                    agent,
                    external_id,
                    context,
                ))
            })
            .await
    }

    async fn get_conversation(
        &self,
        workspace: &str,
        id: Uuid,
    ) -> Result<Option<ConversationView>> {
        let mut c = self.read.acquire().await?;
        conversations::load_view(&mut c, workspace, &id.to_string()).await
    }

    async fn conversation(&self, workspace: &str, id: Uuid) -> Result<Option<ConversationRecord>> {
        let mut c = self.read.acquire().await?;
        conversations::load_conversation(&mut c, workspace, &id.to_string()).await
    }

    async fn list_conversations(
        &self,
        workspace: &str,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ConversationRecord>> {
        let mut c = self.read.acquire().await?;
        conversations::list(&mut c, workspace, state, limit).await
    }

    async fn post_message(&self, new: NewMessage) -> Result<MessageRecord> {
        self.writer
            .write(move |tx| Box::pin(conversations::post_in_tx(tx, new)))
            .await
    }

    async fn transition_conversation(
        &self,
        change: ConversationChange,
    ) -> Result<ConversationRecord> {
        self.writer
            .write(move |tx| Box::pin(conversations::transition_in_tx(tx, change)))
            .await
    }

    async fn add_feedback(&self, feedback: NewFeedback) -> Result<FeedbackRecord> {
        self.writer
            .write(move |tx| Box::pin(conversations::feedback_in_tx(tx, feedback)))
            .await
    }

    async fn create_webhook(&self, new: NewWebhook) -> Result<WebhookRecord> {
        self.writer
            .write(move |tx| Box::pin(webhooks::create_in_tx(tx, new)))
            .await
    }

    async fn list_webhooks(&self, workspace: &str) -> Result<Vec<WebhookRecord>> {
        let mut c = self.read.acquire().await?;
        webhooks::list(&mut c, workspace).await
    }

    async fn delete_webhook(&self, workspace: &str, id: Uuid, actor: &str) -> Result<()> {
        let (ws, actor) = (workspace.to_owned(), actor.to_owned());
        self.writer
            .write(move |tx| Box::pin(webhooks::delete_in_tx(tx, ws, id, actor)))
            .await
    }

    async fn deliveries(
        &self,
        workspace: &str,
        webhook_id: Uuid,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>> {
        let mut c = self.read.acquire().await?;
        webhooks::deliveries(&mut c, workspace, webhook_id, limit).await
    }

    async fn take_due_deliveries(&self, limit: i64, lease_ms: i64) -> Result<Vec<DueDelivery>> {
        self.writer
            .write(move |tx| Box::pin(webhooks::take_due_in_tx(tx, limit, lease_ms)))
            .await
    }

    async fn record_delivery(&self, id: &str, outcome: DeliveryOutcome) -> Result<()> {
        let id = id.to_owned();
        self.writer
            .write(move |tx| Box::pin(webhooks::record_in_tx(tx, id, outcome)))
            .await
    }

    async fn next_delivery_due(&self) -> Result<Option<i64>> {
        let mut c = self.read.acquire().await?;
        webhooks::next_due(&mut c).await
    }

    async fn find_user(
        &self,
        workspace: &str,
        username: &str,
    ) -> Result<Option<(UserRecord, String)>> {
        let mut c = self.read.acquire().await?;
        accounts::find_user(&mut c, workspace, username).await
    }

    async fn list_users(&self, workspace: &str) -> Result<Vec<UserRecord>> {
        let mut c = self.read.acquire().await?;
        accounts::list_users(&mut c, workspace).await
    }

    async fn create_session(&self, user: &UserRecord, ttl_ms: i64) -> Result<NewSession> {
        let user = user.clone();
        self.writer
            .write(move |tx| Box::pin(accounts::create_session_in_tx(tx, user, ttl_ms)))
            .await
    }

    async fn session(&self, token: &str) -> Result<Option<SessionRecord>> {
        let mut c = self.read.acquire().await?;
        accounts::session(&mut c, token, Utc::now().timestamp_millis()).await
    }

    async fn end_session(&self, token: &str) -> Result<()> {
        let token = token.to_owned();
        self.writer
            .write(move |tx| Box::pin(accounts::end_session_in_tx(tx, token)))
            .await
    }

    async fn list_keys(&self, workspace: &str) -> Result<Vec<KeyListing>> {
        let mut c = self.read.acquire().await?;
        accounts::list_keys(&mut c, workspace).await
    }

    async fn revoke_key(&self, workspace: &str, id: Uuid, actor: &str) -> Result<()> {
        let (ws, actor) = (workspace.to_owned(), actor.to_owned());
        self.writer
            .write(move |tx| Box::pin(accounts::revoke_key_in_tx(tx, ws, id, actor)))
            .await
    }

    fn evidence<'a>(
        &'a self,
        workspace: &'a str,
        filter: crate::EvidenceFilter,
        since_ms: i64,
    ) -> futures::stream::BoxStream<'a, Result<loopgate_domain::learning::ReplayItem>> {
        learning::evidence(&self.read, workspace, filter, since_ms)
    }

    async fn count_evidence(
        &self,
        workspace: &str,
        filter: &crate::EvidenceFilter,
        since_ms: i64,
    ) -> Result<u64> {
        learning::count_evidence(&self.read, workspace, filter, since_ms).await
    }

    async fn auto_thresholds(
        &self,
        workspace: &str,
    ) -> Result<std::collections::HashMap<String, f64>> {
        learning::auto_thresholds(&self.read, workspace).await
    }

    async fn set_auto_threshold(
        &self,
        workspace: &str,
        rule: &str,
        value: f64,
        evidence: Value,
    ) -> Result<()> {
        let (ws, rule) = (workspace.to_owned(), rule.to_owned());
        self.writer
            .write(move |tx| {
                Box::pin(async move {
                    learning::set_auto_threshold(tx, &ws, &rule, value, evidence).await
                })
            })
            .await
    }

    async fn create_proposal(&self, new: crate::NewProposal) -> Result<ProposalRecord> {
        self.writer
            .write(move |tx| Box::pin(learning::create_proposal(tx, new)))
            .await
    }

    async fn list_proposals(&self, workspace: &str) -> Result<Vec<ProposalRecord>> {
        learning::list_proposals(&self.read, workspace).await
    }

    async fn get_proposal(&self, workspace: &str, id: Uuid) -> Result<Option<ProposalRecord>> {
        learning::get_proposal(&self.read, workspace, id).await
    }

    async fn decide_proposal(
        &self,
        workspace: &str,
        id: Uuid,
        approve: bool,
        admin: &str,
    ) -> Result<ProposalRecord> {
        let (ws, admin) = (workspace.to_owned(), admin.to_owned());
        self.writer
            .write(move |tx| {
                Box::pin(
                    async move { learning::decide_proposal(tx, &ws, id, approve, &admin).await },
                )
            })
            .await
    }

    async fn propose_knowledge(&self, new: NewKnowledge) -> Result<KnowledgeRecord> {
        self.writer
            .write(move |tx| Box::pin(knowledge::propose_in_tx(tx, new)))
            .await
    }

    async fn list_knowledge(
        &self,
        workspace: &str,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<KnowledgeRecord>> {
        let mut c = self.read.acquire().await?;
        knowledge::list(&mut c, workspace, after, limit).await
    }

    async fn export_training(
        &self,
        workspace: &str,
        format: loopgate_domain::training::Format,
        since_ms: i64,
        after: Option<String>,
        limit: i64,
    ) -> Result<ExportPage> {
        let mut c = self.read.acquire().await?;
        export::page(&mut c, workspace, format, since_ms, after, limit).await
    }

    async fn stats(&self, workspace: &str, since_ms: i64, buckets: i64) -> Result<StatsRecord> {
        let mut record = {
            let mut c = self.read.acquire().await?;
            stats::stats(
                &mut c,
                workspace,
                since_ms,
                Utc::now().timestamp_millis(),
                buckets,
            )
            .await?
        };
        // Calibration needs each item's label, which the evidence scan derives.
        // One scan serves the workspace and every listed agent and action.
        use loopgate_domain::learning::{calibration, Point};
        use std::collections::HashMap;
        let mut points = Vec::new();
        let mut by_agent: HashMap<String, Vec<Point>> = HashMap::new();
        let mut by_action: HashMap<String, Vec<Point>> = HashMap::new();
        let mut items = self.evidence(workspace, crate::EvidenceFilter::default(), since_ms);
        while let Some(item) = items.try_next().await? {
            if item.label.is_some() {
                let point = Point {
                    confidence: item.confidence,
                    label: item.label,
                };
                points.push(point);
                by_agent.entry(item.agent).or_default().push(point);
                if item.kind == loopgate_domain::policy::SubjectKind::Action {
                    by_action.entry(item.action_name).or_default().push(point);
                }
            }
        }
        record.calibration = calibration(&points);
        for slice in &mut record.by_agent {
            slice.calibration = calibration(by_agent.get(&slice.key).map_or(&[], |p| p));
        }
        for slice in &mut record.by_action {
            slice.calibration = calibration(by_action.get(&slice.key).map_or(&[], |p| p));
        }
        Ok(record)
    }

    async fn retention(&self, workspace: &str) -> Result<crate::RetentionRecord> {
        super::retention::get(&self.read, workspace).await
    }

    async fn set_retention(
        &self,
        workspace: &str,
        days: loopgate_domain::retention::RetentionDays,
        actor: &str,
    ) -> Result<crate::RetentionRecord> {
        let (ws, actor) = (workspace.to_owned(), actor.to_owned());
        self.writer
            .write(move |tx| Box::pin(super::retention::set_in_tx(tx, ws, days, actor)))
            .await
    }

    async fn prune(&self, workspace: &str, dry_run: bool) -> Result<crate::PruneReport> {
        super::retention::prune(&self.read, &self.writer, workspace, dry_run).await
    }
}

pub(crate) async fn claim_in_tx(
    tx: &mut Tx,
    ws: &str,
    id: &str,
    reviewer: &str,
    lease_ms: i64,
) -> Result<ReviewDetail> {
    let expires = tx.now_ms() + lease_ms;
    sqlx::query("UPDATE reviews SET status = 'claimed', claimed_by = $1, claim_expires_at = $2 WHERE id = $3")
        .bind(reviewer)
        .bind(expires)
        .bind(id)
        .execute(&mut tx.conn)
        .await?;
    tx.event(
        ws,
        &format!("reviewer:{reviewer}"),
        "review.claimed",
        &format!("review:{id}"),
        json!({"reviewer": reviewer, "until": ms_to_time(expires)}),
    )
    .await?;
    load_detail(&mut tx.conn, ws, id)
        .await?
        .ok_or(StoreError::NotFound("review"))
}

async fn submit_in_tx(tx: &mut Tx, new: NewAction) -> Result<Submitted> {
    let ws = new.workspace.as_str();
    if let Some(key) = &new.idempotency_key {
        let seen: Option<(String, String)> = sqlx::query_as(
            "SELECT request_hash, action_id FROM idempotency_keys WHERE workspace = $1 AND agent = $2 AND key = $3",
        )
        .bind(ws)
        .bind(&new.agent)
        .bind(key)
        .fetch_optional(&mut tx.conn)
        .await?;
        if let Some((hash, action_id)) = seen {
            if hash != new.request_hash {
                return Err(StoreError::Invalid {
                    field: "Idempotency-Key",
                    message: "this key was already used for a different request".into(),
                });
            }
            let original = load_action(&mut tx.conn, ws, &action_id)
                .await?
                .ok_or(StoreError::NotFound("action"))?;
            return Ok(Submitted::Replayed(original));
        }
    }

    let mut routing = new.routing.clone();
    let pauses = tx.pauses(ws).await?;
    if let Some(pause) = governing_pause(&pauses, &new.agent) {
        let scope = match &pause.agent {
            Some(a) => format!("agent {a}"),
            None => "the workspace".to_owned(),
        };
        let why = format!(
            "{scope} is paused by {} ({}): {}",
            pause.set_by,
            pause.mode.as_str(),
            pause.reason
        );
        match pause.mode {
            PauseMode::Block => {
                routing.outcome = Outcome::Block;
                routing.rule = Some(PAUSE_RULE.into());
                routing.reason = why;
            }
            // An action the policy already sends to a human keeps its rule, queue and SLA.
            PauseMode::Review if !matches!(routing.outcome, Outcome::Block | Outcome::Review) => {
                routing.queue = "default".into();
                routing.approvals = 1;
                routing.timeout = None;
                routing.outcome = Outcome::Review;
                routing.rule = Some(PAUSE_RULE.into());
                routing.reason = why;
                routing.sample = 0.0;
            }
            PauseMode::Review => {}
        }
    }

    let id = Uuid::now_v7();
    let now = tx.now_ms();
    let status = match routing.outcome {
        Outcome::Approve => ActionStatus::Approved,
        Outcome::Block => ActionStatus::Blocked,
        Outcome::Review | Outcome::Escalate => ActionStatus::Pending,
    };
    let review_id = (status == ActionStatus::Pending).then(Uuid::now_v7);
    let args_text = serde_json::to_string(&new.arguments)?;
    sqlx::query(
        "INSERT INTO actions (id, workspace, agent, name, arguments, proposed_arguments, confidence, context,
            conversation_id, status, rule, reason, policy_version, review_id, created_at, decided_at)
         VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(id.to_string())
    .bind(ws)
    .bind(&new.agent)
    .bind(&new.name)
    .bind(&args_text)
    .bind(new.confidence)
    .bind(serde_json::to_string(&new.context)?)
    .bind(&new.conversation_id)
    .bind(status.as_str())
    .bind(&routing.rule)
    .bind(&routing.reason)
    .bind(new.policy_version)
    .bind(review_id.map(|r| r.to_string()))
    .bind(now)
    .bind(status.is_final().then_some(now))
    .execute(&mut tx.conn)
    .await?;
    if let Some(key) = &new.idempotency_key {
        sqlx::query(
            "INSERT INTO idempotency_keys (workspace, agent, key, request_hash, action_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(ws)
        .bind(&new.agent)
        .bind(key)
        .bind(&new.request_hash)
        .bind(id.to_string())
        .bind(now)
        .execute(&mut tx.conn)
        .await?;
    }
    let actor = format!("agent:{}", new.agent);
    tx.event(ws, &actor, "action.created", &format!("action:{id}"), json!({
        "agent": new.agent, "name": new.name, "status": status.as_str(), "confidence": new.confidence,
        "rule": routing.rule, "reason": routing.reason, "review_id": review_id,
        "policy_version": new.policy_version,
    }))
    .await?;
    if let Some(rid) = review_id {
        let due_at = routing
            .timeout
            .map(|t| now.saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX)));
        insert_review(
            tx,
            NewReview {
                id: rid,
                workspace: ws,
                kind: ReviewKind::Approval,
                queue: &routing.queue,
                priority: routing.priority,
                due_at,
                on_timeout: routing.timeout.map(|_| routing.on_timeout),
                approvals_required: routing.approvals.max(1),
                rule: routing.rule.as_deref(),
                reason: &routing.reason,
                policy_version: new.policy_version,
                action_id: Some(id),
                conversation_id: None,
                message_id: None,
            },
            &actor,
        )
        .await?;
    } else if status == ActionStatus::Approved && sampled(&id, routing.sample) {
        let reason = format!(
            "sampled for quality review ({}% of approvals under rule {})",
            routing.sample * 100.0,
            routing.rule.as_deref().unwrap_or("-")
        );
        insert_review(
            tx,
            NewReview {
                id: Uuid::now_v7(),
                workspace: ws,
                kind: ReviewKind::Qa,
                queue: &routing.queue,
                priority: routing.priority,
                due_at: None,
                on_timeout: None,
                approvals_required: 1,
                rule: routing.rule.as_deref(),
                reason: &reason,
                policy_version: new.policy_version,
                action_id: Some(id),
                conversation_id: None,
                message_id: None,
            },
            &actor,
        )
        .await?;
    }
    // The row as just written, without reading it back: one round trip less for every submission.
    let created_at = ms_to_time(now);
    Ok(Submitted::Created(ActionRecord {
        id,
        workspace: new.workspace,
        agent: new.agent,
        name: new.name,
        proposed_arguments: new.arguments.clone(),
        arguments: new.arguments,
        confidence: new.confidence,
        context: new.context,
        conversation_id: new.conversation_id,
        status,
        rule: routing.rule,
        reason: routing.reason,
        policy_version: new.policy_version,
        review_id,
        created_at,
        decided_at: status.is_final().then_some(created_at),
    }))
}

async fn decide_in_tx(
    tx: &mut Tx,
    ws: String,
    id: String,
    reviewer: String,
    input: DecisionInput,
) -> Result<ReviewDetail> {
    let review = load_review(&mut tx.conn, &ws, &id)
        .await?
        .ok_or(StoreError::NotFound("review"))?;
    let prior: Vec<PriorDecision> = load_decisions(&mut tx.conn, &id)
        .await?
        .into_iter()
        .map(|d| PriorDecision {
            reviewer: d.reviewer,
            verdict: d.verdict,
            arguments: d.arguments,
            text: d.text,
        })
        .collect();
    let now = tx.now_ms();
    let facts = review_facts(&review, now);
    let (decision, effect) = decide(&facts, &prior, &reviewer, input).map_err(decision_error)?;
    let actor = format!("reviewer:{reviewer}");
    let decision_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO decisions (id, review_id, workspace, reviewer, verdict, arguments, text, grade, score,
            labels, comment, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(decision_id.to_string())
    .bind(&id)
    .bind(&ws)
    .bind(&reviewer)
    .bind(decision.verdict.as_str())
    .bind(decision.arguments.as_ref().map(serde_json::to_string).transpose()?)
    .bind(&decision.text)
    .bind(decision.grade.map(|g| g.as_str()))
    .bind(decision.score)
    .bind(serde_json::to_string(&decision.labels)?)
    .bind(&decision.comment)
    .bind(now)
    .execute(&mut tx.conn)
    .await?;
    let action = match review.action_id {
        Some(aid) => load_action(&mut tx.conn, &ws, &aid.to_string()).await?,
        None => None,
    };
    let subject = format!("review:{id}");
    let base = json!({
        "reviewer": reviewer, "verdict": decision.verdict.as_str(), "kind": review.kind.as_str(),
        "comment": decision.comment, "grade": decision.grade.map(|g| g.as_str()),
        "action_id": review.action_id,
        "conversation_id": review.conversation_id, "message_id": review.message_id,
        // For metrics: where it waited and how long.
        "queue": review.queue,
        "waited_ms": (tx.now_ms() - review.created_at.timestamp_millis()).max(0),
    });
    match effect {
        Effect::NeedsMoreApprovals {
            approvals,
            required,
        } => {
            sqlx::query(
                "UPDATE reviews SET status = 'pending', claimed_by = NULL, claim_expires_at = NULL, approvals = $1
                 WHERE id = $2",
            )
            .bind(i64::from(approvals))
            .bind(&id)
            .execute(&mut tx.conn)
            .await?;
            let mut data = base;
            data["approvals"] = json!(approvals);
            data["approvals_required"] = json!(required);
            tx.event(&ws, &actor, "review.approval_recorded", &subject, data)
                .await?;
        }
        Effect::Approved { arguments, text } => {
            close_review(tx, &id, "approved", Some(review.approvals_required)).await?;
            knowledge::approved(
                tx,
                &review,
                arguments.as_ref(),
                text.as_deref(),
                &reviewer,
                &actor,
            )
            .await?;
            conversations::after_decision(tx, &review, true, text, &actor).await?;
            tx.event(
                &ws,
                &actor,
                "review.decided",
                &subject,
                with_outcome(base, "approved"),
            )
            .await?;
            if let Some(action) = action.filter(|a| {
                a.status == ActionStatus::Pending && review.kind == ReviewKind::Approval
            }) {
                let verdict = if arguments.is_some() {
                    "edit"
                } else {
                    "approve"
                };
                finish_action(
                    tx,
                    &action,
                    ActionStatus::Approved,
                    arguments.as_ref(),
                    &actor,
                    verdict,
                )
                .await?;
            }
        }
        Effect::Rejected => {
            close_review(tx, &id, "rejected", None).await?;
            knowledge::rejected(tx, &review, &reviewer, &actor).await?;
            conversations::after_decision(tx, &review, false, None, &actor).await?;
            tx.event(
                &ws,
                &actor,
                "review.decided",
                &subject,
                with_outcome(base, "rejected"),
            )
            .await?;
            if let Some(action) = action.filter(|a| {
                a.status == ActionStatus::Pending && review.kind == ReviewKind::Approval
            }) {
                finish_action(tx, &action, ActionStatus::Rejected, None, &actor, "reject").await?;
            }
        }
        Effect::Graded(grade) => {
            let outcome = format!("graded:{}", grade.as_str());
            close_review(tx, &id, &outcome, None).await?;
            tx.event(
                &ws,
                &actor,
                "review.decided",
                &subject,
                with_outcome(base, &outcome),
            )
            .await?;
        }
    }
    load_detail(&mut tx.conn, &ws, &id)
        .await?
        .ok_or(StoreError::NotFound("review"))
}

pub(crate) fn with_outcome(mut data: Value, outcome: &str) -> Value {
    data["outcome"] = json!(outcome);
    data
}

pub(crate) async fn close_review(
    tx: &mut Tx,
    id: &str,
    outcome: &str,
    approvals: Option<i64>,
) -> Result<()> {
    sqlx::query(
        "UPDATE reviews SET status = 'decided', outcome = $1, decided_at = $2, claimed_by = NULL,
            claim_expires_at = NULL, approvals = COALESCE($3, approvals)
         WHERE id = $4",
    )
    .bind(outcome)
    .bind(tx.now_ms())
    .bind(approvals)
    .bind(id)
    .execute(&mut tx.conn)
    .await?;
    Ok(())
}

/// How many due reviews one sweep handles; the rest wait for the next sweep, so one sweep never
/// holds the write lock for long.
const SWEEP_LIMIT: i64 = 500;

async fn sweep_in_tx(tx: &mut Tx) -> Result<Sweep> {
    let now = tx.now_ms();
    let mut sweep = Sweep::default();
    let lapsed: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "UPDATE reviews SET status = 'pending', claimed_by = NULL, claim_expires_at = NULL
         WHERE status = 'claimed' AND claim_expires_at <= $1
         RETURNING id, workspace, claimed_by",
    )
    .bind(now)
    .fetch_all(&mut tx.conn)
    .await?;
    for (id, ws, _) in &lapsed {
        tx.event(
            ws,
            "system",
            "review.released",
            &format!("review:{id}"),
            json!({"reason": "the claim's lease lapsed"}),
        )
        .await?;
    }
    sweep.leases_lapsed = lapsed.len();

    let due: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, workspace FROM reviews
         WHERE due_at IS NOT NULL AND due_at <= $1 AND status IN ('pending', 'claimed')
         ORDER BY due_at LIMIT $2",
    )
    .bind(now)
    .bind(SWEEP_LIMIT)
    .fetch_all(&mut tx.conn)
    .await?;
    for (id, ws) in due {
        let Some(review) = load_review(&mut tx.conn, &ws, &id).await? else {
            continue;
        };
        let on_timeout = match review.on_timeout.as_deref() {
            Some("approve") => OnTimeout::Approve,
            Some("escalate") => OnTimeout::Escalate,
            _ => OnTimeout::Reject,
        };
        let subject = format!("review:{id}");
        // A waiting customer is never dropped by a timer: an escalation that times out (unless
        // told to approve the held reply) moves to the front of its queue instead.
        let escalate = on_timeout == OnTimeout::Escalate
            || (review.kind == ReviewKind::Escalation && on_timeout != OnTimeout::Approve);
        if escalate {
            // Escalation keeps the review open but moves it to the front of its queue.
            sqlx::query(
                "UPDATE reviews SET priority = priority + 100, due_at = NULL, due_key = $1 WHERE id = $2",
            )
            .bind(i64::MAX)
            .bind(&id)
            .execute(&mut tx.conn)
            .await?;
            tx.event(&ws, "system", "review.escalated", &subject,
                json!({"reason": "no decision before the deadline", "priority": review.priority + 100}))
                .await?;
            sweep.escalated += 1;
            continue;
        }
        let outcome = format!("expired:{}", on_timeout.as_str());
        sqlx::query(
            "UPDATE reviews SET status = 'expired', outcome = $1, decided_at = $2, claimed_by = NULL,
                claim_expires_at = NULL WHERE id = $3",
        )
        .bind(&outcome)
        .bind(now)
        .bind(&id)
        .execute(&mut tx.conn)
        .await?;
        tx.event(
            &ws,
            "system",
            "review.expired",
            &subject,
            json!({"on_timeout": on_timeout.as_str(), "action_id": review.action_id}),
        )
        .await?;
        if review.message_id.is_some()
            && matches!(review.kind, ReviewKind::Draft | ReviewKind::Escalation)
        {
            conversations::after_decision(
                tx,
                &review,
                on_timeout == OnTimeout::Approve,
                None,
                "system",
            )
            .await?;
        }
        if let Some(aid) = review.action_id {
            if let Some(action) = load_action(&mut tx.conn, &ws, &aid.to_string()).await? {
                if action.status == ActionStatus::Pending && review.kind == ReviewKind::Approval {
                    let status = match on_timeout {
                        OnTimeout::Approve => ActionStatus::Approved,
                        _ => ActionStatus::Expired,
                    };
                    finish_action(tx, &action, status, None, "system", "timeout").await?;
                }
            }
        }
        sweep.expired += 1;
    }
    Ok(sweep)
}

/// Walk one workspace's chain through the domain's verifier; `Ok(count)` or the first break.
pub(crate) async fn verify_chain(read: &Pool, workspace: &str) -> Result<Result<u64, ChainBreak>> {
    let mut c = read.acquire().await?;
    let mut verifier = ChainVerifier::new();
    {
        let mut rows = sqlx::query(
            "SELECT workspace, seq, at, actor, type, subject, data, prev_hash, hash FROM events
             WHERE workspace = $1 ORDER BY seq",
        )
        .bind(workspace)
        .fetch(&mut *c);
        while let Some(row) = rows.try_next().await? {
            let event = match event_from_row(&row) {
                Ok(e) => e,
                Err(e) => {
                    let seq: i64 = row.try_get("seq").unwrap_or(0);
                    return Ok(Err(ChainBreak {
                        seq,
                        problem: e.to_string(),
                    }));
                }
            };
            if let Err(b) = verifier.push(&event) {
                return Ok(Err(b));
            }
        }
    }
    let head: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE workspace = $1")
            .bind(workspace)
            .fetch_optional(&mut *c)
            .await?;
    let (seq, hash) = head.unwrap_or((0, String::new()));
    Ok(verifier.finish(seq, &hash))
}
