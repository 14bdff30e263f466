//! Oversight statistics on SQLite: counts in SQL, arithmetic in `loopgate_domain::stats`.

use super::db::Conn;
use super::store::ms_to_time;
use crate::records::*;
use crate::Result;
use loopgate_domain::stats::{percentile, proportion};

fn count(n: Option<i64>) -> u64 {
    u64::try_from(n.unwrap_or(0)).unwrap_or(0)
}

pub(crate) async fn stats(
    c: &mut Conn,
    ws: &str,
    since: i64,
    now: i64,
    buckets: i64,
) -> Result<StatsRecord> {
    let (actions, auto_actions): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(*), SUM(CASE WHEN status = 'approved' AND review_id IS NULL THEN 1 ELSE 0 END)
         FROM actions WHERE workspace = $1 AND created_at >= $2",
    )
    .bind(ws)
    .bind(since)
    .fetch_one(&mut *c)
    .await?;
    let (messages, auto_messages): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(*), SUM(CASE WHEN status = 'delivered' AND review_id IS NULL THEN 1 ELSE 0 END)
         FROM messages WHERE workspace = $1 AND role = 'ai' AND created_at >= $2",
    )
    .bind(ws)
    .bind(since)
    .fetch_one(&mut *c)
    .await?;
    let (escalated,): (Option<i64>,) = sqlx::query_as(
        "SELECT COUNT(DISTINCT subject) FROM events
         WHERE workspace = $1 AND type = 'conversation.escalated' AND at_ms >= $2",
    )
    .bind(ws)
    .bind(since)
    .fetch_one(&mut *c)
    .await?;
    let (conversations,): (Option<i64>,) = sqlx::query_as(
        "SELECT COUNT(*) FROM conversations WHERE workspace = $1 AND updated_at >= $2",
    )
    .bind(ws)
    .bind(since)
    .fetch_one(&mut *c)
    .await?;
    let (decided, overridden): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(*), SUM(CASE WHEN r.outcome = 'rejected' OR EXISTS
                (SELECT 1 FROM decisions d WHERE d.review_id = r.id AND d.verdict = 'edit') THEN 1 ELSE 0 END)
         FROM reviews r WHERE r.workspace = $1 AND r.status = 'decided'
           AND r.kind IN ('approval', 'draft', 'escalation') AND r.decided_at >= $2",
    )
    .bind(ws)
    .bind(since)
    .fetch_one(&mut *c)
    .await?;
    let (graded, correct): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(*), SUM(CASE WHEN outcome = 'graded:correct' THEN 1 ELSE 0 END)
         FROM reviews WHERE workspace = $1 AND kind = 'qa' AND status = 'decided' AND decided_at >= $2",
    )
    .bind(ws)
    .bind(since)
    .fetch_one(&mut *c)
    .await?;
    let queues: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT queue, COUNT(*), SUM(CASE WHEN due_at IS NOT NULL AND due_at < $2 THEN 1 ELSE 0 END)
         FROM reviews WHERE workspace = $1 AND status IN ('pending', 'claimed')
         GROUP BY queue ORDER BY queue",
    )
    .bind(ws)
    .bind(now)
    .fetch_all(&mut *c)
    .await?;
    let latencies: Vec<(i64,)> = sqlx::query_as(
        "SELECT decided_at - created_at FROM reviews
         WHERE workspace = $1 AND status = 'decided' AND decided_at >= $2
         ORDER BY decided_at DESC LIMIT 100000",
    )
    .bind(ws)
    .bind(since)
    .fetch_all(&mut *c)
    .await?;
    let mut seconds: Vec<f64> = latencies.iter().map(|(ms,)| *ms as f64 / 1000.0).collect();

    let buckets = buckets.clamp(1, 500);
    let width = ((now - since) / buckets).max(1);
    let mut series: Vec<StatsBucket> = (0..buckets)
        .map(|i| StatsBucket {
            start: ms_to_time(since + i * width),
            submitted: 0,
            automated: 0,
            decided: 0,
            overridden: 0,
        })
        .collect();
    let submitted: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT b, COUNT(*), SUM(auto) FROM (
            SELECT (created_at - $2) / $3 AS b,
                   CASE WHEN status = 'approved' AND review_id IS NULL THEN 1 ELSE 0 END AS auto
            FROM actions WHERE workspace = $1 AND created_at >= $2
            UNION ALL
            SELECT (created_at - $2) / $3,
                   CASE WHEN status = 'delivered' AND review_id IS NULL THEN 1 ELSE 0 END
            FROM messages WHERE workspace = $1 AND role = 'ai' AND created_at >= $2
         ) AS submitted GROUP BY b",
    )
    .bind(ws)
    .bind(since)
    .bind(width)
    .fetch_all(&mut *c)
    .await?;
    for (b, n, auto) in submitted {
        if let Some(bucket) = usize::try_from(b).ok().and_then(|b| series.get_mut(b)) {
            bucket.submitted = n;
            bucket.automated = auto;
        }
    }
    let decisions: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT (r.decided_at - $2) / $3 AS b, COUNT(*),
                SUM(CASE WHEN r.outcome = 'rejected' OR EXISTS
                    (SELECT 1 FROM decisions d WHERE d.review_id = r.id AND d.verdict = 'edit') THEN 1 ELSE 0 END)
         FROM reviews r WHERE r.workspace = $1 AND r.status = 'decided'
           AND r.kind IN ('approval', 'draft', 'escalation') AND r.decided_at >= $2
         GROUP BY b",
    )
    .bind(ws)
    .bind(since)
    .bind(width)
    .fetch_all(&mut *c)
    .await?;
    for (b, n, over) in decisions {
        if let Some(bucket) = usize::try_from(b).ok().and_then(|b| series.get_mut(b)) {
            bucket.decided = n;
            bucket.overridden = over;
        }
    }

    let open_reviews = queues.iter().map(|q| q.1).sum();
    let sla_breaches = queues.iter().map(|q| q.2).sum();
    Ok(StatsRecord {
        since: ms_to_time(since),
        until: ms_to_time(now),
        automation_rate: proportion(
            count(auto_actions) + count(auto_messages),
            count(actions) + count(messages),
        ),
        escalation_rate: proportion(
            count(escalated).min(count(conversations)),
            count(conversations),
        ),
        override_rate: proportion(count(overridden), count(decided)),
        qa_accuracy: proportion(count(correct), count(graded)),
        queues: queues
            .into_iter()
            .map(|(queue, open, overdue)| QueueStats {
                queue,
                open,
                overdue,
            })
            .collect(),
        open_reviews,
        sla_breaches,
        time_to_decision_p50_s: percentile(&mut seconds, 0.5),
        time_to_decision_p95_s: percentile(&mut seconds, 0.95),
        series,
    })
}
