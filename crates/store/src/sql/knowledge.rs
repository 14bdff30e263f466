//! Knowledge changes in SQL: an agent's proposal and its `kb_change` review in one transaction,
//! what a final decision on that review does (publish, with a reviewer's edit, or reject), and
//! the list agents poll.

use super::conversations::load_conversation;
use super::db::{Conn, DbRow};
use super::store::{insert_review, ms_to_time, opt_time, opt_uuid, parse_uuid, NewReview};
use super::writer::Tx;
use crate::records::{KnowledgeRecord, ReviewRecord};
use crate::{NewKnowledge, Result, StoreError};
use loopgate_domain::review::ReviewKind;
use serde_json::{json, Value};
use sqlx::Row;
use uuid::Uuid;

const COLUMNS: &str = "id, agent, title, text, proposed_title, proposed_text, conversation_id, \
     review_id, status, seq, decided_by, created_at, decided_at";

fn from_row(row: &DbRow) -> Result<KnowledgeRecord> {
    let title: String = row.try_get("title")?;
    let text: String = row.try_get("text")?;
    let proposed_title: String = row.try_get("proposed_title")?;
    let proposed_text: String = row.try_get("proposed_text")?;
    Ok(KnowledgeRecord {
        id: parse_uuid(row.try_get("id")?)?,
        agent: row.try_get("agent")?,
        edited: title != proposed_title || text != proposed_text,
        title,
        text,
        proposed_title,
        proposed_text,
        conversation_id: opt_uuid(row.try_get("conversation_id")?)?,
        review_id: parse_uuid(row.try_get("review_id")?)?,
        status: row.try_get("status")?,
        seq: row.try_get("seq")?,
        decided_by: row.try_get("decided_by")?,
        created_at: ms_to_time(row.try_get("created_at")?),
        decided_at: opt_time(row.try_get("decided_at")?),
    })
}

async fn load(c: &mut Conn, ws: &str, id: &str) -> Result<Option<KnowledgeRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM knowledge_changes WHERE workspace = $1 AND id = $2");
    let row = sqlx::query(&sql)
        .bind(ws)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The change a `kb_change` review decides.
pub(crate) async fn load_for_review(
    c: &mut Conn,
    ws: &str,
    review_id: &str,
) -> Result<Option<KnowledgeRecord>> {
    let sql =
        format!("SELECT {COLUMNS} FROM knowledge_changes WHERE workspace = $1 AND review_id = $2");
    let row = sqlx::query(&sql)
        .bind(ws)
        .bind(review_id)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub(crate) async fn propose_in_tx(tx: &mut Tx, new: NewKnowledge) -> Result<KnowledgeRecord> {
    if let Some(cid) = new.conversation_id {
        load_conversation(&mut tx.conn, &new.workspace, &cid.to_string())
            .await?
            .filter(|c| c.agent == new.agent)
            .ok_or_else(|| StoreError::Invalid {
                field: "conversation_id",
                message: "no conversation of this agent has this id".into(),
            })?;
    }
    let id = Uuid::now_v7();
    let review_id = Uuid::now_v7();
    let actor = format!("agent:{}", new.agent);
    sqlx::query(
        "INSERT INTO knowledge_changes (id, workspace, agent, title, text, proposed_title, proposed_text,
            conversation_id, review_id, status, created_at)
         VALUES ($1, $2, $3, $4, $5, $4, $5, $6, $7, 'pending', $8)",
    )
    .bind(id.to_string())
    .bind(&new.workspace)
    .bind(&new.agent)
    .bind(&new.title)
    .bind(&new.text)
    .bind(new.conversation_id.map(|c| c.to_string()))
    .bind(review_id.to_string())
    .bind(tx.now_ms())
    .execute(&mut tx.conn)
    .await?;
    tx.event(
        &new.workspace,
        &actor,
        "knowledge.proposed",
        &format!("knowledge:{id}"),
        json!({
            "knowledge_id": id, "agent": new.agent, "title": new.title, "review_id": review_id,
            "conversation_id": new.conversation_id,
        }),
    )
    .await?;
    insert_review(
        tx,
        NewReview {
            id: review_id,
            workspace: &new.workspace,
            kind: ReviewKind::KbChange,
            queue: &new.queue,
            priority: 0,
            due_at: None,
            on_timeout: None,
            approvals_required: 1,
            rule: None,
            reason: "the agent proposed a change to its knowledge base",
            policy_version: 0,
            action_id: None,
            conversation_id: new.conversation_id,
            message_id: None,
        },
        &actor,
    )
    .await?;
    load(&mut tx.conn, &new.workspace, &id.to_string())
        .await?
        .ok_or(StoreError::NotFound("knowledge change"))
}

/// A final approval publishes the change (with the reviewer's title and text, when they edited
/// it) as the workspace's next `seq`, and tells the log, SSE and webhooks (`knowledge.approved`).
pub(crate) async fn approved(
    tx: &mut Tx,
    review: &ReviewRecord,
    arguments: Option<&Value>,
    text: Option<&str>,
    reviewer: &str,
    actor: &str,
) -> Result<()> {
    if review.kind != ReviewKind::KbChange {
        return Ok(());
    }
    let ws = review.workspace.as_str();
    let Some(change) = load_for_review(&mut tx.conn, ws, &review.id.to_string()).await? else {
        return Ok(());
    };
    if change.status != "pending" {
        return Ok(());
    }
    let title = arguments
        .and_then(|a| a.get("title"))
        .and_then(Value::as_str)
        .unwrap_or(&change.title)
        .to_owned();
    let text = text.unwrap_or(&change.text).to_owned();
    // Writes are serialized (one writer; on PostgreSQL the write lock), so MAX + 1 cannot race.
    let (seq,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM knowledge_changes WHERE workspace = $1",
    )
    .bind(ws)
    .fetch_one(&mut tx.conn)
    .await?;
    sqlx::query(
        "UPDATE knowledge_changes SET status = 'approved', title = $1, text = $2, seq = $3,
            decided_by = $4, decided_at = $5
         WHERE id = $6",
    )
    .bind(&title)
    .bind(&text)
    .bind(seq)
    .bind(reviewer)
    .bind(tx.now_ms())
    .bind(change.id.to_string())
    .execute(&mut tx.conn)
    .await?;
    let edited = title != change.proposed_title || text != change.proposed_text;
    tx.event(
        ws,
        actor,
        "knowledge.approved",
        &format!("knowledge:{}", change.id),
        json!({
            "knowledge_id": change.id, "agent": change.agent, "seq": seq, "title": title,
            "text": text, "edited": edited, "review_id": review.id,
            "conversation_id": change.conversation_id, "reviewer": reviewer,
        }),
    )
    .await
}

/// A rejection closes the change; it never reaches the agents.
pub(crate) async fn rejected(
    tx: &mut Tx,
    review: &ReviewRecord,
    reviewer: &str,
    actor: &str,
) -> Result<()> {
    if review.kind != ReviewKind::KbChange {
        return Ok(());
    }
    let ws = review.workspace.as_str();
    let Some(change) = load_for_review(&mut tx.conn, ws, &review.id.to_string()).await? else {
        return Ok(());
    };
    if change.status != "pending" {
        return Ok(());
    }
    sqlx::query(
        "UPDATE knowledge_changes SET status = 'rejected', decided_by = $1, decided_at = $2
         WHERE id = $3",
    )
    .bind(reviewer)
    .bind(tx.now_ms())
    .bind(change.id.to_string())
    .execute(&mut tx.conn)
    .await?;
    tx.event(
        ws,
        actor,
        "knowledge.rejected",
        &format!("knowledge:{}", change.id),
        json!({
            "knowledge_id": change.id, "agent": change.agent, "title": change.title,
            "review_id": review.id, "reviewer": reviewer,
        }),
    )
    .await
}

pub(crate) async fn list(
    c: &mut Conn,
    ws: &str,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<KnowledgeRecord>> {
    let rows = match after {
        None => {
            let sql = format!(
                "SELECT {COLUMNS} FROM knowledge_changes WHERE workspace = $1 AND seq IS NOT NULL
                 ORDER BY seq DESC LIMIT $2"
            );
            sqlx::query(&sql)
                .bind(ws)
                .bind(limit)
                .fetch_all(&mut *c)
                .await?
        }
        Some(after) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM knowledge_changes WHERE workspace = $1 AND seq > $2
                 ORDER BY seq LIMIT $3"
            );
            sqlx::query(&sql)
                .bind(ws)
                .bind(after)
                .bind(limit)
                .fetch_all(&mut *c)
                .await?
        }
    };
    rows.iter().map(from_row).collect()
}
