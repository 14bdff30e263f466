//! Oversight statistics on SQLite: counts in SQL, arithmetic in `loopgate_domain::stats`.

use super::db::Conn;
use super::store::ms_to_time;
use crate::records::*;
use crate::Result;
use loopgate_domain::stats::{percentile, proportion};
use std::collections::BTreeMap;

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
    let latencies: Vec<(i64, String)> = sqlx::query_as(
        "SELECT decided_at - created_at, queue FROM reviews
         WHERE workspace = $1 AND status = 'decided' AND decided_at >= $2
         ORDER BY decided_at DESC LIMIT 100000",
    )
    .bind(ws)
    .bind(since)
    .fetch_all(&mut *c)
    .await?;
    let mut seconds: Vec<f64> = latencies
        .iter()
        .map(|(ms, _)| *ms as f64 / 1000.0)
        .collect();
    let mut seconds_by_queue: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (ms, queue) in latencies {
        seconds_by_queue
            .entry(queue)
            .or_default()
            .push(ms as f64 / 1000.0);
    }
    let slices = slices(c, ws, since).await?;

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
    // Every queue with open reviews or with decisions in the window.
    let mut by_queue: BTreeMap<String, QueueStats> = BTreeMap::new();
    let empty_queue = |queue: &str| QueueStats {
        queue: queue.to_owned(),
        open: 0,
        overdue: 0,
        override_rate: proportion(0, 0),
        qa_accuracy: proportion(0, 0),
        time_to_decision_p50_s: None,
        time_to_decision_p95_s: None,
    };
    for (queue, open, overdue) in queues {
        let q = by_queue
            .entry(queue.clone())
            .or_insert_with(|| empty_queue(&queue));
        q.open = open;
        q.overdue = overdue;
    }
    for (queue, counts) in &slices.queue {
        let q = by_queue
            .entry(queue.clone())
            .or_insert_with(|| empty_queue(queue));
        q.override_rate = proportion(counts.overridden, counts.decided);
        q.qa_accuracy = proportion(counts.correct, counts.graded);
    }
    for (queue, mut secs) in seconds_by_queue {
        let q = by_queue
            .entry(queue.clone())
            .or_insert_with(|| empty_queue(&queue));
        q.time_to_decision_p50_s = percentile(&mut secs, 0.5);
        q.time_to_decision_p95_s = percentile(&mut secs, 0.95);
    }
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
        queues: by_queue.into_values().collect(),
        open_reviews,
        sla_breaches,
        time_to_decision_p50_s: percentile(&mut seconds, 0.5),
        time_to_decision_p95_s: percentile(&mut seconds, 0.95),
        series,
        by_agent: slices.agent_stats(),
        by_action: slices.action_stats(),
        calibration: Vec::new(),
    })
}

/// (agent, action name, queue, `qa` or `gate`, reviews, correct or overridden).
type JudgedRow = (
    Option<String>,
    Option<String>,
    String,
    String,
    i64,
    Option<i64>,
);

/// Counts of one slice (an agent, an action name or a queue).
#[derive(Default)]
struct SliceCounts {
    items: u64,
    automated: u64,
    decided: u64,
    overridden: u64,
    graded: u64,
    correct: u64,
    conversations: u64,
    escalated: u64,
}

#[derive(Default)]
struct Slices {
    agent: BTreeMap<String, SliceCounts>,
    action: BTreeMap<String, SliceCounts>,
    queue: BTreeMap<String, SliceCounts>,
}

/// The busiest this many slices of each kind are listed.
const MAX_SLICES: usize = 100;

fn listed(map: &BTreeMap<String, SliceCounts>, escalation: bool) -> Vec<SliceStats> {
    let mut out: Vec<SliceStats> = map
        .iter()
        .map(|(key, c)| SliceStats {
            key: key.clone(),
            items: i64::try_from(c.items).unwrap_or(i64::MAX),
            automation_rate: proportion(c.automated, c.items),
            escalation_rate: escalation
                .then(|| proportion(c.escalated.min(c.conversations), c.conversations)),
            override_rate: proportion(c.overridden, c.decided),
            qa_accuracy: proportion(c.correct, c.graded),
            // Filled from the evidence scan (`SqlStore::stats`), which labels each item.
            calibration: Vec::new(),
        })
        .collect();
    out.sort_by(|a, b| b.items.cmp(&a.items).then_with(|| a.key.cmp(&b.key)));
    out.truncate(MAX_SLICES);
    out
}

impl Slices {
    fn agent_stats(&self) -> Vec<SliceStats> {
        listed(&self.agent, true)
    }
    fn action_stats(&self) -> Vec<SliceStats> {
        listed(&self.action, false)
    }
}

/// Per agent, action name and queue: items and automation, human overrides, QA grades,
/// escalations. Grouped in SQL; at most a few rows per (agent, action, queue).
async fn slices(c: &mut Conn, ws: &str, since: i64) -> Result<Slices> {
    let mut s = Slices::default();
    let submitted: Vec<(String, Option<String>, i64, Option<i64>)> = sqlx::query_as(
        "SELECT agent, name, COUNT(*),
                SUM(CASE WHEN status = 'approved' AND review_id IS NULL THEN 1 ELSE 0 END)
         FROM actions WHERE workspace = $1 AND created_at >= $2 GROUP BY agent, name
         UNION ALL
         SELECT c.agent, NULL, COUNT(*),
                SUM(CASE WHEN m.status = 'delivered' AND m.review_id IS NULL THEN 1 ELSE 0 END)
         FROM messages m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.workspace = $1 AND m.role = 'ai' AND m.created_at >= $2 GROUP BY c.agent",
    )
    .bind(ws)
    .bind(since)
    .fetch_all(&mut *c)
    .await?;
    for (agent, action, n, auto) in submitted {
        let (n, auto) = (count(Some(n)), count(auto));
        let a = s.agent.entry(agent).or_default();
        a.items += n;
        a.automated += auto;
        if let Some(action) = action {
            let x = s.action.entry(action).or_default();
            x.items += n;
            x.automated += auto;
        }
    }
    let judged: Vec<JudgedRow> = sqlx::query_as(
        "SELECT COALESCE(a.agent, cv.agent), a.name, r.queue,
                    CASE WHEN r.kind = 'qa' THEN 'qa' ELSE 'gate' END AS k, COUNT(*),
                    SUM(CASE WHEN r.kind = 'qa' THEN
                            CASE WHEN r.outcome = 'graded:correct' THEN 1 ELSE 0 END
                        WHEN r.outcome = 'rejected' OR EXISTS (SELECT 1 FROM decisions d
                            WHERE d.review_id = r.id AND d.verdict = 'edit') THEN 1 ELSE 0 END)
             FROM reviews r LEFT JOIN actions a ON a.id = r.action_id
                 LEFT JOIN conversations cv ON cv.id = r.conversation_id
             WHERE r.workspace = $1 AND r.status = 'decided' AND r.decided_at >= $2
               AND r.kind IN ('approval', 'draft', 'escalation', 'qa')
             GROUP BY 1, 2, 3, 4",
    )
    .bind(ws)
    .bind(since)
    .fetch_all(&mut *c)
    .await?;
    for (agent, action, queue, kind, n, hits) in judged {
        let (n, hits) = (count(Some(n)), count(hits));
        let mut slots: Vec<&mut SliceCounts> = vec![s.queue.entry(queue).or_default()];
        if let Some(agent) = agent {
            slots.push(s.agent.entry(agent).or_default());
        }
        if let Some(action) = action {
            slots.push(s.action.entry(action).or_default());
        }
        for slot in slots {
            if kind == "qa" {
                slot.graded += n;
                slot.correct += hits;
            } else {
                slot.decided += n;
                slot.overridden += hits;
            }
        }
    }
    let escalations: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT c.agent, COUNT(*), SUM(CASE WHEN EXISTS (SELECT 1 FROM reviews r
                WHERE r.conversation_id = c.id AND r.kind = 'escalation' AND r.created_at >= $2)
             THEN 1 ELSE 0 END)
         FROM conversations c WHERE c.workspace = $1 AND c.updated_at >= $2 GROUP BY c.agent",
    )
    .bind(ws)
    .bind(since)
    .fetch_all(&mut *c)
    .await?;
    for (agent, n, escalated) in escalations {
        let a = s.agent.entry(agent).or_default();
        a.conversations += count(Some(n));
        a.escalated += count(escalated);
    }
    Ok(s)
}
