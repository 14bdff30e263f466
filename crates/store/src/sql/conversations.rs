//! Conversations, messages and feedback on SQLite: the state machine of
//! `loopgate_domain::conversation` applied inside the writer's transaction.

use super::db::Conn;
use super::db::DbRow;
use super::store::{
    corrupt, insert_review, ms_to_time, opt_time, opt_uuid, parse_json, parse_uuid, NewReview,
};
use super::writer::Tx;
use crate::records::*;
use crate::{ConversationChange, NewFeedback, NewMessage, Result, StoreError};
use loopgate_domain::conversation::{
    may_post, transition, ConversationState, MessageStatus, Role, Transition,
};
use loopgate_domain::policy::{sampled, OnTimeout, Outcome};
use loopgate_domain::review::ReviewKind;
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

/// For lists: each conversation with its newest message and its newest AI reply's confidence
/// (each one index probe: `messages_by_conversation`, `messages_by_conversation_role`).
const CONVERSATION_SELECT: &str = "SELECT c.id, c.workspace, c.agent, c.external_id, c.context, c.state, \
     c.assignee, c.turns, c.created_at, c.updated_at, \
     (SELECT m.text FROM messages m WHERE m.conversation_id = c.id ORDER BY m.created_at DESC LIMIT 1) AS last_message, \
     (SELECT m.confidence FROM messages m WHERE m.conversation_id = c.id AND m.role = 'ai' ORDER BY m.created_at DESC LIMIT 1) AS last_ai_confidence \
     FROM conversations c";

/// One conversation, for the write path and access checks: no summary subqueries.
const CONVERSATION_ONLY: &str =
    "SELECT c.id, c.workspace, c.agent, c.external_id, c.context, c.state, \
     c.assignee, c.turns, c.created_at, c.updated_at, \
     CAST(NULL AS TEXT) AS last_message, CAST(NULL AS DOUBLE PRECISION) AS last_ai_confidence \
     FROM conversations c";

fn conversation_from_row(row: &DbRow) -> Result<ConversationRecord> {
    let state: String = row.try_get("state")?;
    Ok(ConversationRecord {
        id: parse_uuid(row.try_get("id")?)?,
        workspace: row.try_get("workspace")?,
        agent: row.try_get("agent")?,
        external_id: row.try_get("external_id")?,
        context: parse_json(row.try_get("context")?)?,
        state: ConversationState::parse(&state)
            .ok_or_else(|| corrupt("conversation state", &state))?,
        assignee: row.try_get("assignee")?,
        turns: row.try_get("turns")?,
        created_at: ms_to_time(row.try_get("created_at")?),
        updated_at: ms_to_time(row.try_get("updated_at")?),
        last_message: row.try_get("last_message")?,
        last_ai_confidence: row.try_get("last_ai_confidence")?,
    })
}

const MESSAGE_COLUMNS: &str =
    "id, conversation_id, role, text, original_text, confidence, status, author, \
     rule, reason, policy_version, review_id, created_at, delivered_at";

fn message_from_row(row: &DbRow) -> Result<MessageRecord> {
    let role: String = row.try_get("role")?;
    let status: String = row.try_get("status")?;
    Ok(MessageRecord {
        id: parse_uuid(row.try_get("id")?)?,
        conversation_id: parse_uuid(row.try_get("conversation_id")?)?,
        role: Role::parse(&role).ok_or_else(|| corrupt("message role", &role))?,
        text: row.try_get("text")?,
        original_text: row.try_get("original_text")?,
        confidence: row.try_get("confidence")?,
        status: MessageStatus::parse(&status).ok_or_else(|| corrupt("message status", &status))?,
        author: row.try_get("author")?,
        rule: row.try_get("rule")?,
        reason: row.try_get("reason")?,
        policy_version: row.try_get("policy_version")?,
        review_id: opt_uuid(row.try_get("review_id")?)?,
        created_at: ms_to_time(row.try_get("created_at")?),
        delivered_at: opt_time(row.try_get("delivered_at")?),
    })
}

pub(crate) async fn load_conversation(
    c: &mut Conn,
    ws: &str,
    id: &str,
) -> Result<Option<ConversationRecord>> {
    let sql = format!("{CONVERSATION_ONLY} WHERE c.workspace = $1 AND c.id = $2");
    let row = sqlx::query(&sql)
        .bind(ws)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(conversation_from_row).transpose()
}

pub(crate) async fn load_message(
    c: &mut Conn,
    ws: &str,
    id: &str,
) -> Result<Option<MessageRecord>> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE workspace = $1 AND id = $2");
    let row = sqlx::query(&sql)
        .bind(ws)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(message_from_row).transpose()
}

pub(crate) async fn load_view(
    c: &mut Conn,
    ws: &str,
    id: &str,
) -> Result<Option<ConversationView>> {
    let Some(conversation) = load_conversation(c, ws, id).await? else {
        return Ok(None);
    };
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 ORDER BY created_at, id"
    );
    let rows = sqlx::query(&sql).bind(id).fetch_all(&mut *c).await?;
    let messages = rows
        .iter()
        .map(message_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(ConversationView {
        conversation,
        messages,
    }))
}

pub(crate) async fn list(
    c: &mut Conn,
    ws: &str,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<ConversationRecord>> {
    let sql = format!(
        "{CONVERSATION_SELECT} WHERE c.workspace = $1 {} ORDER BY c.updated_at DESC LIMIT $3",
        match state {
            Some("open") => "AND c.state != 'closed' AND $2 = $2",
            Some(_) => "AND c.state = $2",
            None => "AND $2 = $2",
        }
    );
    let rows = sqlx::query(&sql)
        .bind(ws)
        .bind(state.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(conversation_from_row).collect()
}

fn conflict(e: loopgate_domain::conversation::Refused) -> StoreError {
    StoreError::Conflict(e.to_string())
}

pub(crate) async fn create_in_tx(
    tx: &mut Tx,
    ws: String,
    agent: String,
    external_id: Option<String>,
    context: serde_json::Value,
) -> Result<(ConversationRecord, bool)> {
    if let Some(ext) = &external_id {
        let existing: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM conversations WHERE workspace = $1 AND agent = $2 AND external_id = $3",
        )
        .bind(&ws)
        .bind(&agent)
        .bind(ext)
        .fetch_optional(&mut tx.conn)
        .await?;
        if let Some((id,)) = existing {
            let c = load_conversation(&mut tx.conn, &ws, &id)
                .await?
                .ok_or(StoreError::NotFound("conversation"))?;
            return Ok((c, false));
        }
    }
    let id = Uuid::now_v7();
    let now = tx.now_ms();
    sqlx::query(
        "INSERT INTO conversations (id, workspace, agent, external_id, context, state, turns, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'ai', 0, $6, $6)",
    )
    .bind(id.to_string())
    .bind(&ws)
    .bind(&agent)
    .bind(&external_id)
    .bind(serde_json::to_string(&context)?)
    .bind(now)
    .execute(&mut tx.conn)
    .await?;
    tx.event(
        &ws,
        &format!("agent:{agent}"),
        "conversation.created",
        &format!("conversation:{id}"),
        json!({"conversation_id": id, "agent": agent, "external_id": external_id}),
    )
    .await?;
    let c = load_conversation(&mut tx.conn, &ws, &id.to_string())
        .await?
        .ok_or(StoreError::NotFound("conversation"))?;
    Ok((c, true))
}

pub(crate) async fn post_in_tx(tx: &mut Tx, new: NewMessage) -> Result<MessageRecord> {
    let cid = new.conversation_id.to_string();
    let conv = load_conversation(&mut tx.conn, &new.workspace, &cid)
        .await?
        .filter(|c| new.agent.as_ref().is_none_or(|a| *a == c.agent))
        .ok_or(StoreError::NotFound("conversation"))?;
    may_post(conv.state, new.role).map_err(conflict)?;
    let id = Uuid::now_v7();
    let now = tx.now_ms();
    let routing = if new.role == Role::Ai {
        new.routing.clone()
    } else {
        None
    };
    let status = match routing.as_ref().map(|r| r.outcome) {
        None | Some(Outcome::Approve) => MessageStatus::Delivered,
        Some(Outcome::Review | Outcome::Block) => MessageStatus::Held,
        Some(Outcome::Escalate) => MessageStatus::Escalated,
    };
    let review_id = (status != MessageStatus::Delivered).then(Uuid::now_v7);
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, workspace, role, text, confidence, status, author, rule,
            reason, policy_version, review_id, created_at, delivered_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(id.to_string())
    .bind(&cid)
    .bind(&new.workspace)
    .bind(new.role.as_str())
    .bind(&new.text)
    .bind(new.confidence)
    .bind(status.as_str())
    .bind(&new.author)
    .bind(routing.as_ref().and_then(|r| r.rule.clone()))
    .bind(routing.as_ref().map(|r| r.reason.clone()))
    .bind(routing.as_ref().map(|_| new.policy_version))
    .bind(review_id.map(|r| r.to_string()))
    .bind(now)
    .bind((status == MessageStatus::Delivered).then_some(now))
    .execute(&mut tx.conn)
    .await?;
    sqlx::query("UPDATE conversations SET turns = turns + 1, updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&cid)
        .execute(&mut tx.conn)
        .await?;
    let actor = match new.role {
        Role::Human => format!("reviewer:{}", new.author),
        _ => format!("agent:{}", conv.agent),
    };
    tx.event(
        &new.workspace,
        &actor,
        "message.created",
        &format!("message:{id}"),
        json!({
            "conversation_id": cid, "agent": conv.agent, "message_id": id, "role": new.role.as_str(), "text": new.text,
            "confidence": new.confidence, "status": status.as_str(), "review_id": review_id,
            "rule": routing.as_ref().and_then(|r| r.rule.clone()),
            "reason": routing.as_ref().map(|r| r.reason.clone()),
        }),
    )
    .await?;
    if let Some(r) = &routing {
        let due_at = r
            .timeout
            .map(|t| now.saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX)));
        match (status, review_id) {
            (MessageStatus::Held | MessageStatus::Escalated, Some(rid)) => {
                let kind = if status == MessageStatus::Escalated {
                    set_state(
                        tx,
                        &new.workspace,
                        &conv,
                        ConversationState::Waiting,
                        None,
                        &actor,
                        Transition::Escalate,
                        json!({"reason": r.reason, "rule": r.rule, "message_id": id, "review_id": rid}),
                    )
                    .await?;
                    ReviewKind::Escalation
                } else {
                    ReviewKind::Draft
                };
                insert_review(
                    tx,
                    NewReview {
                        id: rid,
                        workspace: &new.workspace,
                        kind,
                        queue: &r.queue,
                        priority: r.priority,
                        due_at,
                        on_timeout: r.timeout.map(|_| r.on_timeout),
                        approvals_required: r.approvals.max(1),
                        rule: r.rule.as_deref(),
                        reason: &r.reason,
                        policy_version: new.policy_version,
                        action_id: None,
                        conversation_id: Some(new.conversation_id),
                        message_id: Some(id),
                    },
                    &actor,
                )
                .await?;
            }
            (MessageStatus::Delivered, _) if sampled(&id, r.sample) => {
                let reason = format!(
                    "sampled for quality review ({}% of delivered answers under rule {})",
                    r.sample * 100.0,
                    r.rule.as_deref().unwrap_or("-")
                );
                insert_review(
                    tx,
                    NewReview {
                        id: Uuid::now_v7(),
                        workspace: &new.workspace,
                        kind: ReviewKind::Qa,
                        queue: &r.queue,
                        priority: r.priority,
                        due_at: None,
                        on_timeout: None,
                        approvals_required: 1,
                        rule: r.rule.as_deref(),
                        reason: &reason,
                        policy_version: new.policy_version,
                        action_id: None,
                        conversation_id: Some(new.conversation_id),
                        message_id: Some(id),
                    },
                    &actor,
                )
                .await?;
            }
            _ => {}
        }
    }
    load_message(&mut tx.conn, &new.workspace, &id.to_string())
        .await?
        .ok_or(StoreError::NotFound("message"))
}

/// Write a conversation's new state and its event.
#[allow(clippy::too_many_arguments)]
async fn set_state(
    tx: &mut Tx,
    ws: &str,
    conv: &ConversationRecord,
    to: ConversationState,
    assignee: Option<&str>,
    actor: &str,
    t: Transition,
    mut data: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "UPDATE conversations SET state = $1, assignee = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(to.as_str())
    .bind(assignee)
    .bind(tx.now_ms())
    .bind(conv.id.to_string())
    .execute(&mut tx.conn)
    .await?;
    data["conversation_id"] = json!(conv.id);
    // Agents' event streams carry the events that name them (see http/events.rs).
    data["agent"] = json!(conv.agent);
    data["from"] = json!(conv.state.as_str());
    data["to"] = json!(to.as_str());
    tx.event(
        ws,
        actor,
        t.event_type(),
        &format!("conversation:{}", conv.id),
        data,
    )
    .await
}

/// Show a held message to the end user, with a reviewer's rewrite if there was one.
async fn deliver(
    tx: &mut Tx,
    ws: &str,
    agent: &str,
    msg: &MessageRecord,
    text: Option<String>,
    actor: &str,
) -> Result<()> {
    let now = tx.now_ms();
    let edited = text.as_ref().is_some_and(|t| *t != msg.text);
    sqlx::query(
        "UPDATE messages SET status = 'delivered', delivered_at = $1,
            original_text = CASE WHEN $2 THEN text ELSE original_text END,
            text = CASE WHEN $2 THEN $3 ELSE text END
         WHERE id = $4",
    )
    .bind(now)
    .bind(edited)
    .bind(text.as_deref().unwrap_or(""))
    .bind(msg.id.to_string())
    .execute(&mut tx.conn)
    .await?;
    tx.event(
        ws,
        actor,
        "message.delivered",
        &format!("message:{}", msg.id),
        json!({
            "conversation_id": msg.conversation_id, "agent": agent, "message_id": msg.id, "edited": edited,
            "text": if edited { text.as_deref().unwrap_or("") } else { msg.text.as_str() },
        }),
    )
    .await
}

async fn discard(
    tx: &mut Tx,
    ws: &str,
    agent: &str,
    msg: &MessageRecord,
    actor: &str,
    why: &str,
) -> Result<()> {
    sqlx::query("UPDATE messages SET status = 'discarded' WHERE id = $1")
        .bind(msg.id.to_string())
        .execute(&mut tx.conn)
        .await?;
    tx.event(
        ws,
        actor,
        "message.discarded",
        &format!("message:{}", msg.id),
        json!({"conversation_id": msg.conversation_id, "agent": agent, "message_id": msg.id, "reason": why}),
    )
    .await
}

/// What a final decision on a draft or escalation does to its message and conversation:
/// approve delivers the draft (a rewrite if edited), reject discards it; an escalation decided
/// returns the conversation to the AI (a human who wants it takes it over instead).
pub(crate) async fn after_decision(
    tx: &mut Tx,
    review: &ReviewRecord,
    approved: bool,
    text: Option<String>,
    actor: &str,
) -> Result<()> {
    if !matches!(review.kind, ReviewKind::Draft | ReviewKind::Escalation) {
        return Ok(());
    }
    let ws = review.workspace.clone();
    let agent = review.agent.clone().unwrap_or_default();
    if let Some(mid) = review.message_id {
        if let Some(msg) = load_message(&mut tx.conn, &ws, &mid.to_string()).await? {
            if matches!(msg.status, MessageStatus::Held | MessageStatus::Escalated) {
                if approved {
                    deliver(tx, &ws, &agent, &msg, text, actor).await?;
                } else {
                    discard(tx, &ws, &agent, &msg, actor, "rejected by a reviewer").await?;
                }
            }
        }
    }
    if review.kind == ReviewKind::Escalation {
        if let Some(cid) = review.conversation_id {
            if let Some(conv) = load_conversation(&mut tx.conn, &ws, &cid.to_string()).await? {
                if conv.state == ConversationState::Waiting {
                    set_state(
                        tx,
                        &ws,
                        &conv,
                        ConversationState::Ai,
                        None,
                        actor,
                        Transition::Handback,
                        json!({"reason": "the escalation was resolved", "review_id": review.id}),
                    )
                    .await?;
                }
            }
        }
    }
    Ok(())
}

/// Close the conversation's open reviews of `kinds` and settle their held messages.
async fn settle_open_reviews(
    tx: &mut Tx,
    ws: &str,
    conv: &ConversationRecord,
    kinds: &[ReviewKind],
    status: &str,
    outcome: &str,
    actor: &str,
) -> Result<()> {
    let open: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, kind, message_id FROM reviews
         WHERE conversation_id = $1 AND status IN ('pending', 'claimed')",
    )
    .bind(conv.id.to_string())
    .fetch_all(&mut tx.conn)
    .await?;
    for (rid, kind, mid) in open {
        if !kinds.iter().any(|k| k.as_str() == kind) {
            continue;
        }
        sqlx::query(
            "UPDATE reviews SET status = $1, outcome = $2, decided_at = $3, claimed_by = NULL,
                claim_expires_at = NULL WHERE id = $4",
        )
        .bind(status)
        .bind(outcome)
        .bind(tx.now_ms())
        .bind(&rid)
        .execute(&mut tx.conn)
        .await?;
        let event = if status == "cancelled" {
            "review.cancelled"
        } else {
            "review.decided"
        };
        tx.event(
            ws,
            actor,
            event,
            &format!("review:{rid}"),
            json!({"conversation_id": conv.id, "kind": kind, "outcome": outcome}),
        )
        .await?;
        if let Some(mid) = mid {
            if let Some(msg) = load_message(&mut tx.conn, ws, &mid).await? {
                if matches!(msg.status, MessageStatus::Held | MessageStatus::Escalated) {
                    discard(tx, ws, &conv.agent, &msg, actor, outcome).await?;
                }
            }
        }
    }
    Ok(())
}

pub(crate) async fn transition_in_tx(
    tx: &mut Tx,
    change: ConversationChange,
) -> Result<ConversationRecord> {
    let ws = change.workspace.clone();
    let cid = change.id.to_string();
    let conv = load_conversation(&mut tx.conn, &ws, &cid)
        .await?
        .filter(|c| change.agent.as_ref().is_none_or(|a| *a == c.agent))
        .ok_or(StoreError::NotFound("conversation"))?;
    let to = transition(conv.state, change.transition).map_err(conflict)?;
    let actor = change.actor.as_str();
    let reason = change.reason.clone();
    match change.transition {
        Transition::Escalate => {
            let rid = Uuid::now_v7();
            let why = reason
                .clone()
                .unwrap_or_else(|| "the agent escalated".into());
            set_state(
                tx,
                &ws,
                &conv,
                to,
                None,
                actor,
                Transition::Escalate,
                json!({"reason": why, "review_id": rid}),
            )
            .await?;
            let due_at = change.due_in_ms.map(|d| tx.now_ms().saturating_add(d));
            insert_review(
                tx,
                NewReview {
                    id: rid,
                    workspace: &ws,
                    kind: ReviewKind::Escalation,
                    queue: &change.queue,
                    priority: change.priority,
                    due_at,
                    on_timeout: due_at.map(|_| OnTimeout::Escalate),
                    approvals_required: 1,
                    rule: None,
                    reason: &why,
                    policy_version: 0,
                    action_id: None,
                    conversation_id: Some(change.id),
                    message_id: None,
                },
                actor,
            )
            .await?;
        }
        Transition::Takeover => {
            // The human now has the conversation: the escalation is answered by the takeover.
            settle_open_reviews(
                tx,
                &ws,
                &conv,
                &[ReviewKind::Escalation],
                "decided",
                "taken_over",
                actor,
            )
            .await?;
            set_state(
                tx,
                &ws,
                &conv,
                to,
                change.human.as_deref(),
                actor,
                Transition::Takeover,
                json!({"human": change.human, "reason": reason}),
            )
            .await?;
        }
        Transition::Handback => {
            set_state(
                tx,
                &ws,
                &conv,
                to,
                None,
                actor,
                Transition::Handback,
                json!({"reason": reason}),
            )
            .await?;
        }
        Transition::Close => {
            settle_open_reviews(
                tx,
                &ws,
                &conv,
                &[ReviewKind::Escalation, ReviewKind::Draft],
                "cancelled",
                "conversation closed",
                actor,
            )
            .await?;
            set_state(
                tx,
                &ws,
                &conv,
                to,
                None,
                actor,
                Transition::Close,
                json!({"reason": reason}),
            )
            .await?;
        }
    }
    load_conversation(&mut tx.conn, &ws, &cid)
        .await?
        .ok_or(StoreError::NotFound("conversation"))
}

pub(crate) async fn feedback_in_tx(tx: &mut Tx, f: NewFeedback) -> Result<FeedbackRecord> {
    let msg = load_message(&mut tx.conn, &f.workspace, &f.message_id.to_string())
        .await?
        .ok_or(StoreError::NotFound("message"))?;
    let conv = load_conversation(&mut tx.conn, &f.workspace, &msg.conversation_id.to_string())
        .await?
        .filter(|c| c.agent == f.agent)
        .ok_or(StoreError::NotFound("message"))?;
    if msg.status != MessageStatus::Delivered {
        return Err(StoreError::Conflict(format!(
            "the message is {}; feedback is for messages the user saw",
            msg.status.as_str()
        )));
    }
    let id = Uuid::now_v7();
    let review_id = (f.rating == "down").then(Uuid::now_v7);
    let actor = format!("agent:{}", f.agent);
    sqlx::query(
        "INSERT INTO feedback (id, workspace, message_id, conversation_id, rating, comment, review_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id.to_string())
    .bind(&f.workspace)
    .bind(msg.id.to_string())
    .bind(conv.id.to_string())
    .bind(&f.rating)
    .bind(&f.comment)
    .bind(review_id.map(|r| r.to_string()))
    .bind(tx.now_ms())
    .execute(&mut tx.conn)
    .await?;
    tx.event(
        &f.workspace,
        &actor,
        "feedback.created",
        &format!("feedback:{id}"),
        json!({
            "conversation_id": conv.id, "agent": f.agent, "message_id": msg.id, "rating": f.rating,
            "comment": f.comment, "review_id": review_id,
        }),
    )
    .await?;
    if let Some(rid) = review_id {
        let reason = match &f.comment {
            Some(c) if !c.is_empty() => format!("the user flagged this answer: {c}"),
            _ => "the user flagged this answer".to_owned(),
        };
        insert_review(
            tx,
            NewReview {
                id: rid,
                workspace: &f.workspace,
                kind: ReviewKind::Flag,
                queue: "feedback",
                priority: 0,
                due_at: None,
                on_timeout: None,
                approvals_required: 1,
                rule: None,
                reason: &reason,
                policy_version: msg.policy_version.unwrap_or(0),
                action_id: None,
                conversation_id: Some(conv.id),
                message_id: Some(msg.id),
            },
            &actor,
        )
        .await?;
    }
    Ok(FeedbackRecord {
        id,
        message_id: msg.id,
        conversation_id: conv.id,
        rating: f.rating,
        comment: f.comment,
        review_id,
        created_at: tx.now,
    })
}
