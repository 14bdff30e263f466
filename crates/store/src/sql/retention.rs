//! Retention periods and prune, in SQL both backends speak.
//!
//! A prune removes, per workspace, what became final before the cut-off (now minus the
//! retention period): final actions with their reviews, decisions and idempotency keys; closed
//! conversations with their messages, feedback, reviews and decisions; other final reviews;
//! delivered and dead webhook outbox rows; expired console sessions; and the oldest audit events.
//! Open work (a pending or claimed review, an open conversation, an action awaiting a decision)
//! stays whatever its age, and so does anything an open review or conversation still points at.
//!
//! Every step is a short transaction through the writer, [`BATCH`] records or [`EVENT_CHUNK`]
//! events at a time, so a prune never holds SQLite's write lock for long and runs safely beside a
//! server on the same database. Each chunk of events goes with an `audit.pruned` checkpoint in the
//! same transaction, so the chain verifies after every commit, even if a prune stops half-way.

use super::db::Pool;
use super::store::ms_to_time;
use super::writer::{Tx, Writer};
use crate::retention::{PruneCounts, PruneReport, RetentionRecord};
use crate::{Result, StoreError};
use chrono::Utc;
use loopgate_domain::audit::{Checkpoint, PRUNED_EVENT};
use loopgate_domain::retention::{prunable_prefix, RetentionDays};
use serde_json::{json, Value};
use std::time::Duration;

/// Records (actions, conversations, reviews, outbox rows, sessions) removed per transaction.
const BATCH: i64 = 500;
/// Events removed per transaction, each chunk with its own checkpoint.
const EVENT_CHUNK: i64 = 5000;
/// A pause between transactions, so a server writing to the same SQLite file gets the lock.
const BREATHER: Duration = Duration::from_millis(20);
/// Who prunes, in the audit log.
const ACTOR: &str = "system:prune";

const FINAL_ACTIONS: &str = "SELECT a.id FROM actions a
    WHERE a.workspace = $1 AND a.created_at < $2
      AND a.status IN ('approved', 'rejected', 'blocked', 'expired', 'cancelled')
      AND COALESCE(a.decided_at, a.created_at) < $2
      AND NOT EXISTS (SELECT 1 FROM reviews r
                      WHERE r.action_id = a.id AND r.status IN ('pending', 'claimed'))
      AND NOT EXISTS (SELECT 1 FROM conversations c
                      WHERE c.id = a.conversation_id AND c.state <> 'closed')";

const CLOSED_CONVERSATIONS: &str = "SELECT c.id FROM conversations c
    WHERE c.workspace = $1 AND c.state = 'closed' AND c.updated_at < $2
      AND NOT EXISTS (SELECT 1 FROM reviews r
                      WHERE r.conversation_id = c.id AND r.status IN ('pending', 'claimed'))";

/// Final reviews that belong to neither an action nor a conversation (those go with their subject).
const LONE_FINAL_REVIEWS: &str = "SELECT r.id FROM reviews r
    WHERE r.workspace = $1 AND r.created_at < $2
      AND r.status IN ('decided', 'expired', 'cancelled')
      AND r.action_id IS NULL AND r.conversation_id IS NULL
      AND COALESCE(r.decided_at, r.created_at) < $2";

const SETTLED_DELIVERIES: &str = "SELECT o.id FROM outbox o
    WHERE o.workspace = $1 AND o.created_at < $2 AND o.status IN ('delivered', 'dead')
      AND COALESCE(o.delivered_at, o.created_at) < $2";

/// `$2` here is now, not the cut-off: an expired session is of no use to anyone.
const EXPIRED_SESSIONS: &str =
    "SELECT s.token_hash FROM sessions s WHERE s.workspace = $1 AND s.expires_at < $2";

pub(crate) async fn get(read: &Pool, workspace: &str) -> Result<RetentionRecord> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT retention_days FROM workspaces WHERE name = $1")
            .bind(workspace)
            .fetch_optional(read)
            .await?;
    let (days,) = row.ok_or(StoreError::NotFound("workspace"))?;
    Ok(RetentionRecord {
        workspace: workspace.to_owned(),
        days,
    })
}

pub(crate) async fn set_in_tx(
    tx: &mut Tx,
    workspace: String,
    days: RetentionDays,
    actor: String,
) -> Result<RetentionRecord> {
    let previous: Option<(i64,)> =
        sqlx::query_as("SELECT retention_days FROM workspaces WHERE name = $1")
            .bind(&workspace)
            .fetch_optional(&mut tx.conn)
            .await?;
    let (previous,) = previous.ok_or(StoreError::NotFound("workspace"))?;
    if previous != days.days() {
        sqlx::query("UPDATE workspaces SET retention_days = $1 WHERE name = $2")
            .bind(days.days())
            .bind(&workspace)
            .execute(&mut tx.conn)
            .await?;
        tx.event(
            &workspace,
            &actor,
            "retention.updated",
            &format!("workspace:{workspace}"),
            json!({"days": days.days(), "previous_days": previous}),
        )
        .await?;
    }
    Ok(RetentionRecord {
        workspace,
        days: days.days(),
    })
}

pub(crate) async fn prune(
    read: &Pool,
    writer: &Writer,
    workspace: &str,
    dry_run: bool,
) -> Result<PruneReport> {
    let setting = get(read, workspace).await?;
    let days = RetentionDays::parse(setting.days).map_err(|e| {
        StoreError::Internal(format!("stored retention of {workspace:?} is invalid: {e}"))
    })?;
    let now_ms = Utc::now().timestamp_millis();
    let cutoff = days.cutoff_ms(now_ms);
    let removed = if dry_run {
        count(read, workspace, cutoff, now_ms).await?
    } else {
        remove(read, writer, workspace, cutoff, now_ms, days).await?
    };
    Ok(PruneReport {
        workspace: workspace.to_owned(),
        days: days.days(),
        cutoff: ms_to_time(cutoff),
        dry_run,
        removed,
    })
}

/// What a prune would remove now.
async fn count(read: &Pool, ws: &str, cutoff: i64, now_ms: i64) -> Result<PruneCounts> {
    let n = |sql: String, bound: i64| async move {
        let (n,): (i64,) = sqlx::query_as(&sql)
            .bind(ws)
            .bind(bound)
            .fetch_one(read)
            .await?;
        Ok::<u64, StoreError>(n.max(0) as u64)
    };
    let mut c = PruneCounts {
        actions: n(format!("SELECT COUNT(*) FROM ({FINAL_ACTIONS}) s"), cutoff).await?,
        idempotency_keys: n(
            format!("SELECT COUNT(*) FROM idempotency_keys WHERE action_id IN ({FINAL_ACTIONS})"),
            cutoff,
        )
        .await?,
        conversations: n(
            format!("SELECT COUNT(*) FROM ({CLOSED_CONVERSATIONS}) s"),
            cutoff,
        )
        .await?,
        messages: n(
            format!(
                "SELECT COUNT(*) FROM messages WHERE conversation_id IN ({CLOSED_CONVERSATIONS})"
            ),
            cutoff,
        )
        .await?,
        feedback: n(
            format!(
                "SELECT COUNT(*) FROM feedback WHERE conversation_id IN ({CLOSED_CONVERSATIONS})"
            ),
            cutoff,
        )
        .await?,
        deliveries: n(
            format!("SELECT COUNT(*) FROM ({SETTLED_DELIVERIES}) s"),
            cutoff,
        )
        .await?,
        sessions: n(
            format!("SELECT COUNT(*) FROM ({EXPIRED_SESSIONS}) s"),
            now_ms,
        )
        .await?,
        ..PruneCounts::default()
    };
    let reviews_of = format!(
        "SELECT id FROM reviews WHERE action_id IN ({FINAL_ACTIONS})
         UNION ALL SELECT id FROM reviews WHERE conversation_id IN ({CLOSED_CONVERSATIONS})
         UNION ALL {LONE_FINAL_REVIEWS}"
    );
    c.reviews = n(format!("SELECT COUNT(*) FROM ({reviews_of}) s"), cutoff).await?;
    c.decisions = n(
        format!("SELECT COUNT(*) FROM decisions WHERE review_id IN ({reviews_of})"),
        cutoff,
    )
    .await?;
    // Events: the prefix of the chain before the first event within retention.
    let (first, keep_from, head): (Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT MIN(seq) FROM events WHERE workspace = $1),
                (SELECT MIN(seq) FROM events WHERE workspace = $1 AND at_ms >= $2),
                (SELECT MAX(seq) FROM events WHERE workspace = $1)",
    )
    .bind(ws)
    .bind(cutoff)
    .fetch_one(read)
    .await?;
    if let (Some(first), Some(head)) = (first, head) {
        let end = keep_from.unwrap_or(head + 1);
        c.events = (end - first).max(0) as u64;
    }
    Ok(c)
}

async fn remove(
    read: &Pool,
    writer: &Writer,
    ws: &str,
    cutoff: i64,
    now_ms: i64,
    days: RetentionDays,
) -> Result<PruneCounts> {
    // A chain that does not verify is evidence: prune nothing (records are evidence too), and
    // never launder tampering behind a checkpoint.
    let events_due = oldest_event_is_past(read, ws, cutoff).await?;
    if events_due {
        if let Err(b) = super::store::verify_chain(read, ws).await? {
            return Err(StoreError::Conflict(format!(
                "the audit log of workspace {ws:?} does not verify ({b}); nothing was pruned"
            )));
        }
    }
    let mut removed = PruneCounts::default();
    for kind in [
        Kind::Actions,
        Kind::Conversations,
        Kind::LoneReviews,
        Kind::Deliveries,
        Kind::Sessions,
    ] {
        loop {
            let w = ws.to_owned();
            let bound = if kind == Kind::Sessions {
                now_ms
            } else {
                cutoff
            };
            let (units, counts) = writer
                .write(move |tx| Box::pin(remove_batch(tx, kind, w, bound)))
                .await?;
            removed += counts;
            if units < BATCH as u64 {
                break;
            }
            tokio::time::sleep(BREATHER).await;
        }
    }

    let mut others = serde_json::to_value(removed)?;
    if let Value::Object(map) = &mut others {
        map.remove("events");
    }
    let summary = json!({
        "older_than": ms_to_time(cutoff).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "retention_days": days.days(),
        "removed": others,
    });
    let events = if events_due {
        remove_events(writer, ws, cutoff, summary.clone()).await?
    } else {
        0
    };
    removed.events = events;
    // Records removed without any event: still say so in the log (expired sessions alone are
    // housekeeping, not records anyone audits).
    let audited = PruneCounts {
        sessions: 0,
        ..removed
    };
    if events == 0 && audited.total() > 0 {
        let w = ws.to_owned();
        writer
            .write(move |tx| {
                Box::pin(async move {
                    tx.event(
                        &w,
                        ACTOR,
                        "retention.pruned",
                        &format!("workspace:{w}"),
                        summary,
                    )
                    .await
                })
            })
            .await?;
    }
    Ok(removed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Actions,
    Conversations,
    LoneReviews,
    Deliveries,
    Sessions,
}

/// `$1, $2, ...` for `n` values.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Run `sql` (with an `({ids})` list) for `ids`; the rows it removed.
async fn delete_for(tx: &mut Tx, sql: &str, ids: &[String]) -> Result<u64> {
    let sql = sql.replace("{ids}", &placeholders(ids.len()));
    let mut q = sqlx::query(&sql);
    for id in ids {
        q = q.bind(id);
    }
    Ok(q.execute(&mut tx.conn).await?.rows_affected())
}

/// One transaction's worth of one kind: (units selected, rows removed by kind).
async fn remove_batch(
    tx: &mut Tx,
    kind: Kind,
    ws: String,
    bound: i64,
) -> Result<(u64, PruneCounts)> {
    let select = match kind {
        Kind::Actions => FINAL_ACTIONS,
        Kind::Conversations => CLOSED_CONVERSATIONS,
        Kind::LoneReviews => LONE_FINAL_REVIEWS,
        Kind::Deliveries => SETTLED_DELIVERIES,
        Kind::Sessions => EXPIRED_SESSIONS,
    };
    let ids: Vec<(String,)> = sqlx::query_as(&format!("{select} LIMIT $3"))
        .bind(&ws)
        .bind(bound)
        .bind(BATCH)
        .fetch_all(&mut tx.conn)
        .await?;
    let ids: Vec<String> = ids.into_iter().map(|r| r.0).collect();
    let mut c = PruneCounts::default();
    if ids.is_empty() {
        return Ok((0, c));
    }
    // Children first: decisions and feedback reference their parents by foreign key.
    match kind {
        Kind::Actions => {
            c.decisions = delete_for(
                tx,
                "DELETE FROM decisions WHERE review_id IN
                   (SELECT id FROM reviews WHERE action_id IN ({ids}))",
                &ids,
            )
            .await?;
            c.reviews =
                delete_for(tx, "DELETE FROM reviews WHERE action_id IN ({ids})", &ids).await?;
            c.idempotency_keys = delete_for(
                tx,
                "DELETE FROM idempotency_keys WHERE action_id IN ({ids})",
                &ids,
            )
            .await?;
            c.actions = delete_for(tx, "DELETE FROM actions WHERE id IN ({ids})", &ids).await?;
        }
        Kind::Conversations => {
            c.feedback = delete_for(
                tx,
                "DELETE FROM feedback WHERE conversation_id IN ({ids})",
                &ids,
            )
            .await?;
            c.decisions = delete_for(
                tx,
                "DELETE FROM decisions WHERE review_id IN
                   (SELECT id FROM reviews WHERE conversation_id IN ({ids}))",
                &ids,
            )
            .await?;
            c.reviews = delete_for(
                tx,
                "DELETE FROM reviews WHERE conversation_id IN ({ids})",
                &ids,
            )
            .await?;
            c.messages = delete_for(
                tx,
                "DELETE FROM messages WHERE conversation_id IN ({ids})",
                &ids,
            )
            .await?;
            c.conversations =
                delete_for(tx, "DELETE FROM conversations WHERE id IN ({ids})", &ids).await?;
        }
        Kind::LoneReviews => {
            c.decisions =
                delete_for(tx, "DELETE FROM decisions WHERE review_id IN ({ids})", &ids).await?;
            c.reviews = delete_for(tx, "DELETE FROM reviews WHERE id IN ({ids})", &ids).await?;
        }
        Kind::Deliveries => {
            c.deliveries = delete_for(tx, "DELETE FROM outbox WHERE id IN ({ids})", &ids).await?;
        }
        Kind::Sessions => {
            c.sessions =
                delete_for(tx, "DELETE FROM sessions WHERE token_hash IN ({ids})", &ids).await?;
        }
    }
    Ok((ids.len() as u64, c))
}

/// Is the chain's first event past retention?
async fn oldest_event_is_past(read: &Pool, ws: &str, cutoff: i64) -> Result<bool> {
    let oldest: Option<(i64,)> =
        sqlx::query_as("SELECT at_ms FROM events WHERE workspace = $1 ORDER BY seq LIMIT 1")
            .bind(ws)
            .fetch_optional(read)
            .await?;
    Ok(oldest.is_some_and(|(at_ms,)| at_ms < cutoff))
}

/// Remove the chain's prefix that is past retention, a chunk per transaction, each behind its own
/// checkpoint. The caller verified the chain first.
async fn remove_events(writer: &Writer, ws: &str, cutoff: i64, summary: Value) -> Result<u64> {
    let mut total = 0;
    let mut extra = summary;
    loop {
        let w = ws.to_owned();
        let data = extra.clone();
        let n = writer
            .write(move |tx| Box::pin(remove_event_chunk(tx, w, cutoff, data)))
            .await?;
        total += n;
        if n < EVENT_CHUNK as u64 {
            return Ok(total);
        }
        // Only the first checkpoint of a run carries the run's summary.
        extra = json!({});
        tokio::time::sleep(BREATHER).await;
    }
}

async fn remove_event_chunk(tx: &mut Tx, ws: String, cutoff: i64, extra: Value) -> Result<u64> {
    // This job reads the `events` table: the batch's events so far must be in it.
    tx.write_events().await?;
    let rows: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT seq, at_ms, hash FROM events WHERE workspace = $1 ORDER BY seq LIMIT $2",
    )
    .bind(&ws)
    .bind(EVENT_CHUNK)
    .fetch_all(&mut tx.conn)
    .await?;
    // Only a gap-free run may go behind one checkpoint; a gap is someone else's deletion.
    let contiguous = rows
        .iter()
        .zip(rows.iter().skip(1))
        .take_while(|(a, b)| b.0 == a.0 + 1)
        .count()
        + usize::from(!rows.is_empty());
    let times: Vec<(i64, i64)> = rows[..contiguous].iter().map(|r| (r.0, r.1)).collect();
    let n = prunable_prefix(&times, cutoff);
    if n == 0 {
        return Ok(0);
    }
    let (last_seq, _, last_hash) = &rows[n - 1];
    let checkpoint = Checkpoint {
        last_pruned_seq: *last_seq,
        last_pruned_hash: last_hash.clone(),
        pruned: n as u64,
    };
    // The checkpoint first, then the deletion, in one transaction: no commit ever leaves the
    // chain starting at a seq no checkpoint names.
    tx.event(
        &ws,
        ACTOR,
        PRUNED_EVENT,
        &format!("workspace:{ws}"),
        checkpoint.to_data(extra),
    )
    .await?;
    sqlx::query("DELETE FROM events WHERE workspace = $1 AND seq <= $2")
        .bind(&ws)
        .bind(*last_seq)
        .execute(&mut tx.conn)
        .await?;
    Ok(n as u64)
}
