//! Webhook endpoints and the outbox's delivery bookkeeping on SQLite.

use super::db::Conn;
use super::db::DbRow;
use super::store::{ms_to_time, opt_time, parse_uuid};
use super::writer::Tx;
use crate::records::*;
use crate::{NewWebhook, Result, StoreError};
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

const WEBHOOK_COLUMNS: &str =
    "id, url, events, format, status, disabled_reason, created_at, created_by";

fn webhook_from_row(row: &DbRow) -> Result<WebhookRecord> {
    let events: String = row.try_get("events")?;
    Ok(WebhookRecord {
        id: parse_uuid(row.try_get("id")?)?,
        url: row.try_get("url")?,
        events: serde_json::from_str(&events)?,
        format: row.try_get("format")?,
        status: row.try_get("status")?,
        disabled_reason: row.try_get("disabled_reason")?,
        created_at: ms_to_time(row.try_get("created_at")?),
        created_by: row.try_get("created_by")?,
    })
}

pub(crate) async fn create_in_tx(tx: &mut Tx, new: NewWebhook) -> Result<WebhookRecord> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhooks (id, workspace, url, secret, events, format, status, created_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8)",
    )
    .bind(id.to_string())
    .bind(&new.workspace)
    .bind(&new.url)
    .bind(&new.secret)
    .bind(serde_json::to_string(&new.events)?)
    .bind(&new.format)
    .bind(tx.now_ms())
    .bind(&new.actor)
    .execute(&mut tx.conn)
    .await?;
    tx.webhooks_changed(&new.workspace);
    // The secret never goes into the log.
    tx.event(
        &new.workspace,
        &new.actor,
        "webhook.created",
        &format!("webhook:{id}"),
        json!({"url": new.url, "events": new.events, "format": new.format}),
    )
    .await?;
    Ok(WebhookRecord {
        id,
        url: new.url,
        events: new.events,
        format: new.format,
        status: "active".into(),
        disabled_reason: None,
        created_at: tx.now,
        created_by: new.actor,
    })
}

pub(crate) async fn list(c: &mut Conn, ws: &str) -> Result<Vec<WebhookRecord>> {
    let sql = format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE workspace = $1 AND status != 'deleted' ORDER BY created_at"
    );
    let rows = sqlx::query(&sql).bind(ws).fetch_all(&mut *c).await?;
    rows.iter().map(webhook_from_row).collect()
}

pub(crate) async fn delete_in_tx(tx: &mut Tx, ws: String, id: Uuid, actor: String) -> Result<()> {
    let changed = sqlx::query(
        "UPDATE webhooks SET status = 'deleted' WHERE workspace = $1 AND id = $2 AND status != 'deleted'",
    )
    .bind(&ws)
    .bind(id.to_string())
    .execute(&mut tx.conn)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(StoreError::NotFound("webhook"));
    }
    tx.webhooks_changed(&ws);
    // Nothing more goes to a deleted endpoint; its log stays.
    sqlx::query(
        "UPDATE outbox SET status = 'dead', last_error = 'endpoint deleted' WHERE webhook_id = $1 AND status = 'pending'",
    )
    .bind(id.to_string())
    .execute(&mut tx.conn)
    .await?;
    tx.event(
        &ws,
        &actor,
        "webhook.deleted",
        &format!("webhook:{id}"),
        json!({}),
    )
    .await
}

pub(crate) async fn deliveries(
    c: &mut Conn,
    ws: &str,
    webhook_id: Uuid,
    limit: i64,
) -> Result<Vec<DeliveryRecord>> {
    let exists: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM webhooks WHERE workspace = $1 AND id = $2 AND status != 'deleted'",
    )
    .bind(ws)
    .bind(webhook_id.to_string())
    .fetch_optional(&mut *c)
    .await?;
    if exists.is_none() {
        return Err(StoreError::NotFound("webhook"));
    }
    let rows = sqlx::query(
        "SELECT id, webhook_id, event_seq, event_type, status, attempts, next_attempt_at, last_status,
            last_error, created_at, delivered_at
         FROM outbox WHERE webhook_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(webhook_id.to_string())
    .bind(limit)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| {
            let status: String = r.try_get("status")?;
            Ok(DeliveryRecord {
                id: r.try_get("id")?,
                webhook_id: parse_uuid(r.try_get("webhook_id")?)?,
                event_seq: r.try_get("event_seq")?,
                event_type: r.try_get("event_type")?,
                next_attempt_at: if status == "pending" {
                    opt_time(r.try_get("next_attempt_at")?)
                } else {
                    None
                },
                status,
                attempts: r.try_get("attempts")?,
                last_status: r.try_get("last_status")?,
                last_error: r.try_get("last_error")?,
                created_at: ms_to_time(r.try_get("created_at")?),
                delivered_at: opt_time(r.try_get("delivered_at")?),
            })
        })
        .collect()
}

pub(crate) async fn take_due_in_tx(
    tx: &mut Tx,
    limit: i64,
    lease_ms: i64,
) -> Result<Vec<DueDelivery>> {
    let now = tx.now_ms();
    let rows = sqlx::query(
        "SELECT o.id, o.workspace, o.webhook_id, o.payload, o.attempts, w.url, w.secret, w.format
         FROM outbox o JOIN webhooks w ON w.id = o.webhook_id
         WHERE o.status = 'pending' AND o.next_attempt_at <= $1 AND w.status = 'active'
         ORDER BY o.next_attempt_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut tx.conn)
    .await?;
    let mut due = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get("id")?;
        sqlx::query("UPDATE outbox SET next_attempt_at = $1 WHERE id = $2")
            .bind(now.saturating_add(lease_ms))
            .bind(&id)
            .execute(&mut tx.conn)
            .await?;
        due.push(DueDelivery {
            id,
            workspace: r.try_get("workspace")?,
            webhook_id: parse_uuid(r.try_get("webhook_id")?)?,
            url: r.try_get("url")?,
            secret: r.try_get("secret")?,
            format: r.try_get("format")?,
            payload: r.try_get("payload")?,
            attempts: r.try_get("attempts")?,
        });
    }
    Ok(due)
}

pub(crate) async fn record_in_tx(tx: &mut Tx, id: String, outcome: DeliveryOutcome) -> Result<()> {
    let now = tx.now_ms();
    match outcome {
        DeliveryOutcome::Delivered { status } => {
            sqlx::query(
                "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, last_status = $1,
                    last_error = NULL, delivered_at = $2 WHERE id = $3 AND status = 'pending'",
            )
            .bind(i64::from(status))
            .bind(now)
            .bind(&id)
            .execute(&mut tx.conn)
            .await?;
        }
        DeliveryOutcome::Retry {
            status,
            error,
            at_ms,
        } => {
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_status = $1, last_error = $2,
                    next_attempt_at = $3 WHERE id = $4 AND status = 'pending'",
            )
            .bind(status.map(i64::from))
            .bind(&error)
            .bind(at_ms)
            .bind(&id)
            .execute(&mut tx.conn)
            .await?;
        }
        DeliveryOutcome::Dead { status, error } => {
            sqlx::query(
                "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_status = $1,
                    last_error = $2 WHERE id = $3 AND status = 'pending'",
            )
            .bind(status.map(i64::from))
            .bind(&error)
            .bind(&id)
            .execute(&mut tx.conn)
            .await?;
        }
        DeliveryOutcome::Gone => {
            let row: Option<(String, String)> =
                sqlx::query_as("SELECT workspace, webhook_id FROM outbox WHERE id = $1")
                    .bind(&id)
                    .fetch_optional(&mut tx.conn)
                    .await?;
            let Some((ws, hook)) = row else {
                return Ok(());
            };
            sqlx::query(
                "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_status = 410,
                    last_error = 'the receiver answered 410 Gone' WHERE webhook_id = $1 AND status = 'pending'",
            )
            .bind(&hook)
            .execute(&mut tx.conn)
            .await?;
            let disabled = sqlx::query(
                "UPDATE webhooks SET status = 'disabled', disabled_reason = 'the receiver answered 410 Gone'
                 WHERE id = $1 AND status = 'active'",
            )
            .bind(&hook)
            .execute(&mut tx.conn)
            .await?
            .rows_affected();
            tx.webhooks_changed(&ws);
            if disabled > 0 {
                tx.event(
                    &ws,
                    "system",
                    "webhook.disabled",
                    &format!("webhook:{hook}"),
                    json!({"reason": "the receiver answered 410 Gone"}),
                )
                .await?;
            }
        }
    }
    Ok(())
}

pub(crate) async fn next_due(c: &mut Conn) -> Result<Option<i64>> {
    let row: Option<(Option<i64>,)> =
        sqlx::query_as("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'")
            .fetch_optional(&mut *c)
            .await?;
    Ok(row.and_then(|r| r.0))
}
