//! The single writer: one SQLite connection that owns every write, committing concurrent
//! operations together.
//!
//! SQLite allows one writer at a time anyway; funnelling writes through one task turns that
//! limit into an advantage. The task takes every job waiting in its channel (up to
//! [`MAX_BATCH`]), runs each inside its own SAVEPOINT within one write transaction (SQLite's
//! `BEGIN IMMEDIATE`; on PostgreSQL `BEGIN` plus the cluster-wide write lock, see `db::begin`),
//! and COMMITs once: one fsync for the whole group (group commit). A job that fails rolls back to
//! its savepoint without disturbing the others. Callers are answered only after the COMMIT
//! returned, so every acknowledged write is durable (WAL with `synchronous=FULL`), and events are
//! published only then, so nobody is told of a change that could still be rolled back.
//!
//! Every statement is a round trip to the driver's connection thread, and those round trips, not
//! SQLite's own work, are what a write costs (docs/performance.md). So the writer keeps, for the
//! length of one batch, what its jobs would otherwise read again and again: each workspace's audit
//! head (written back once, before COMMIT), its active webhooks and its pauses. A batch holds the
//! write lock from BEGIN to COMMIT (on PostgreSQL, the cluster-wide one), so nobody else can change
//! them meanwhile; a job that changes webhooks or pauses drops that workspace's entry, and a job
//! that fails gets the cache back as it was before it ran, as its savepoint gives back the rows.

use super::db::Conn;
use crate::{Result, StoreError};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use loopgate_domain::audit::{next_event, Event};
use serde_json::Value;
use sqlx::Connection;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};

/// How many jobs share one transaction at most. Large enough to amortise the fsync under load;
/// small enough that one batch's latency stays in the low milliseconds.
pub const MAX_BATCH: usize = 256;

/// The write transaction a job runs in.
pub struct Tx {
    pub conn: Conn,
    /// This node's id, so other nodes can tell our notifications from theirs.
    node: String,
    /// The job's clock reading: one `now` per job keeps its rows and events consistent.
    pub now: DateTime<Utc>,
    /// The batch's events, in order, to publish after COMMIT, each with its time in ms.
    events: Vec<(Event, i64)>,
    /// How many of `events` are already in the `events` table; the rest go in with one
    /// multi-row INSERT before COMMIT (or sooner: see [`Tx::write_events`]).
    written: usize,
    cache: BatchCache,
}

/// A workspace's active webhooks: `(id, the event patterns it subscribed to)`.
type Subscriptions = Arc<Vec<(String, Vec<String>)>>;

/// What the jobs of one batch read from the database at most once (see the module's comment).
#[derive(Clone, Default)]
struct BatchCache {
    /// Each workspace's audit head `(seq, hash)` as this batch has moved it.
    heads: HashMap<String, (i64, String)>,
    /// Workspaces whose head moved in this batch: written to `audit_heads` before COMMIT.
    moved: Vec<String>,
    /// Each workspace's active webhooks.
    webhooks: HashMap<String, Subscriptions>,
    /// Each workspace's pauses, as `load_pauses` returned them.
    pauses: HashMap<String, Arc<Vec<loopgate_domain::action::Pause>>>,
}

impl Tx {
    pub fn now_ms(&self) -> i64 {
        self.now.timestamp_millis()
    }

    /// Append one event to the workspace's hash chain, in this transaction.
    pub async fn event(
        &mut self,
        workspace: &str,
        actor: &str,
        event_type: &str,
        subject: &str,
        data: Value,
    ) -> Result<()> {
        let head = match self.cache.heads.get(workspace) {
            Some(head) => Some(head.clone()),
            None => {
                sqlx::query_as::<_, (i64, String)>(
                    "SELECT seq, hash FROM audit_heads WHERE workspace = $1",
                )
                .bind(workspace)
                .fetch_optional(&mut self.conn)
                .await?
            }
        };
        let at = self
            .now
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let e = next_event(
            head.as_ref().map(|(s, h)| (*s, h.as_str())),
            workspace,
            &at,
            actor,
            event_type,
            subject,
            data,
        );
        if !self.cache.moved.iter().any(|w| w == workspace) {
            self.cache.moved.push(workspace.to_owned());
        }
        self.cache
            .heads
            .insert(workspace.to_owned(), (e.seq, e.hash.clone()));
        self.enqueue_webhooks(&e).await?;
        super::db::notify(&mut self.conn, &self.node, &e).await?;
        let at_ms = self.now_ms();
        self.events.push((e, at_ms));
        Ok(())
    }

    /// Write the events appended so far to the `events` table. The writer does it before
    /// COMMIT; a job that reads the `events` table itself calls it first.
    pub async fn write_events(&mut self) -> Result<()> {
        // Ten parameters a row; SQLite takes at most 32,766 in one statement.
        const ROWS: usize = 500;
        while self.written < self.events.len() {
            let end = self.events.len().min(self.written + ROWS);
            let mut insert = sqlx::QueryBuilder::<super::db::Db>::new(
                "INSERT INTO events (workspace, seq, at, at_ms, actor, type, subject, data, prev_hash, hash) ",
            );
            let rows = &self.events[self.written..end];
            let data = rows
                .iter()
                .map(|(e, _)| serde_json::to_string(&e.data))
                .collect::<serde_json::Result<Vec<String>>>()?;
            insert.push_values(rows.iter().zip(data), |mut row, ((e, at_ms), data)| {
                row.push_bind(&e.workspace)
                    .push_bind(e.seq)
                    .push_bind(&e.at)
                    .push_bind(*at_ms)
                    .push_bind(&e.actor)
                    .push_bind(&e.event_type)
                    .push_bind(&e.subject)
                    .push_bind(data)
                    .push_bind(&e.prev_hash)
                    .push_bind(&e.hash);
            });
            // Its text depends on the row count: not worth a place in the statement cache.
            insert
                .build()
                .persistent(false)
                .execute(&mut self.conn)
                .await?;
            self.written = end;
        }
        Ok(())
    }

    /// Record the batch's audit heads: one row per workspace whose chain grew, before COMMIT.
    async fn write_heads(&mut self) -> Result<()> {
        for workspace in std::mem::take(&mut self.cache.moved) {
            let Some((seq, hash)) = self.cache.heads.get(&workspace) else {
                continue;
            };
            sqlx::query(
                "INSERT INTO audit_heads (workspace, seq, hash) VALUES ($1, $2, $3)
                 ON CONFLICT (workspace) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            )
            .bind(&workspace)
            .bind(seq)
            .bind(hash)
            .execute(&mut self.conn)
            .await?;
        }
        Ok(())
    }

    /// A job changed this workspace's webhooks: read them afresh for the next event.
    pub fn webhooks_changed(&mut self, workspace: &str) {
        self.cache.webhooks.remove(workspace);
    }

    /// The workspace's pauses, read once per batch.
    pub async fn pauses(
        &mut self,
        workspace: &str,
    ) -> Result<Arc<Vec<loopgate_domain::action::Pause>>> {
        if let Some(p) = self.cache.pauses.get(workspace) {
            return Ok(p.clone());
        }
        let pauses = Arc::new(super::store::load_pauses(&mut self.conn, workspace).await?);
        self.cache
            .pauses
            .insert(workspace.to_owned(), pauses.clone());
        Ok(pauses)
    }

    /// A job changed this workspace's pauses: read them afresh.
    pub fn pauses_changed(&mut self, workspace: &str) {
        self.cache.pauses.remove(workspace);
    }

    /// The transactional outbox: one row per subscribed endpoint, in this same transaction.
    async fn enqueue_webhooks(&mut self, e: &Event) -> Result<()> {
        let hooks = match self.cache.webhooks.get(&e.workspace) {
            Some(hooks) => hooks.clone(),
            None => {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT id, events FROM webhooks WHERE workspace = $1 AND status = 'active'",
                )
                .bind(&e.workspace)
                .fetch_all(&mut self.conn)
                .await?;
                let mut hooks = Vec::with_capacity(rows.len());
                for (id, events) in rows {
                    hooks.push((id, serde_json::from_str::<Vec<String>>(&events)?));
                }
                let hooks = Arc::new(hooks);
                self.cache
                    .webhooks
                    .insert(e.workspace.clone(), hooks.clone());
                hooks
            }
        };
        if hooks.is_empty() {
            return Ok(());
        }
        let payload = serde_json::to_string(e)?;
        for (hook_id, patterns) in hooks.iter() {
            if !loopgate_domain::webhook::subscribed(patterns, &e.event_type) {
                continue;
            }
            sqlx::query(
                "INSERT INTO outbox (id, workspace, webhook_id, event_seq, event_type, payload, status,
                    next_attempt_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)",
            )
            .bind(format!("msg_{}", uuid::Uuid::now_v7().simple()))
            .bind(&e.workspace)
            .bind(hook_id)
            .bind(e.seq)
            .bind(&e.event_type)
            .bind(&payload)
            .bind(self.now_ms())
            .execute(&mut self.conn)
            .await?;
        }
        Ok(())
    }
}

/// One queued write: run it inside the batch, then tell its caller how the batch ended.
trait Job: Send {
    fn run<'c>(&'c mut self, tx: &'c mut Tx) -> BoxFuture<'c, bool>;
    fn complete(self: Box<Self>, commit: Result<()>);
}

struct Op<T, F> {
    f: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Op<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut Tx) -> BoxFuture<'c, Result<T>> + Send + 'static,
{
    fn run<'c>(&'c mut self, tx: &'c mut Tx) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let Some(f) = self.f.take() else {
                return false;
            };
            let r = f(tx).await;
            let ok = r.is_ok();
            self.result = Some(r);
            ok
        })
    }

    fn complete(self: Box<Self>, commit: Result<()>) {
        let answer = match (self.result, commit) {
            // The batch failed too: a job's "internal" error was most likely the same outage.
            (Some(Err(StoreError::Internal(_))), Err(e)) => Err(e),
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(e)) => Err(e),
            (None, Ok(())) => Err(StoreError::Internal("write job did not run".into())),
        };
        // The caller may have gone away (client disconnected); the write stands regardless.
        let _ = self.reply.send(answer);
    }
}

/// The handle callers use to submit writes.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    pub fn spawn(
        conn: Conn,
        events: broadcast::Sender<Arc<Event>>,
        url: String,
        options: crate::StoreOptions,
        node: String,
    ) -> Writer {
        // Bounded: under overload callers wait here instead of memory growing without limit.
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(conn, rx, events, url, options, node));
        Writer { jobs }
    }

    /// Run `f` in the next write transaction; resolves once that transaction has committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Tx) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Op {
            f: Some(f),
            result: None,
            reply,
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped mid-write".into()))?
    }
}

async fn run(
    conn: Conn,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    events: broadcast::Sender<Arc<Event>>,
    url: String,
    options: crate::StoreOptions,
    node: String,
) {
    let mut tx = Tx {
        conn,
        node,
        now: Utc::now(),
        events: Vec::new(),
        written: 0,
        cache: BatchCache::default(),
    };
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut broken = false;
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if broken {
            // The database went away: reconnect before trying this batch. Until it is back,
            // callers get 503s (nothing acknowledged is lost: it was committed before).
            match super::db::reconnect(&url, &options).await {
                Ok(conn) => {
                    tx.conn = conn;
                    broken = false;
                    tracing::info!("the writer reconnected to the database");
                }
                Err(e) => {
                    for job in batch.drain(..) {
                        job.complete(Err(StoreError::Unavailable(e.to_string())));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let outcome = run_batch(&mut tx, &mut batch).await;
        match &outcome {
            Ok(()) => {
                for (e, _) in tx.events.drain(..) {
                    // No subscribers is fine: the events are in the audit log.
                    let _ = events.send(Arc::new(e));
                }
                tx.written = 0;
            }
            Err(e) => {
                tx.events.clear();
                tx.written = 0;
                broken = matches!(e, StoreError::Unavailable(_)) || lost_connection(&mut tx).await;
                tracing::warn!(error = %e, jobs = batch.len(), "a write batch failed");
            }
        }
        for job in batch.drain(..) {
            let commit = match &outcome {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Unavailable(e.to_string())),
            };
            job.complete(commit);
        }
    }
    let _ = tx.conn.close().await;
}

/// After a failed batch: is the connection still usable?
async fn lost_connection(tx: &mut Tx) -> bool {
    sqlx::query("SELECT 1").execute(&mut tx.conn).await.is_err()
}

async fn run_batch(tx: &mut Tx, batch: &mut [Box<dyn Job>]) -> Result<()> {
    // Nothing read in an earlier batch is trusted: another node may have written since.
    tx.cache = BatchCache::default();
    if let Err(e) = super::db::begin(&mut tx.conn).await {
        rollback(tx).await;
        return Err(e);
    }
    // One round trip between two jobs: the release of one job's savepoint and the next one's.
    let mut open = "SAVEPOINT job";
    for job in batch.iter_mut() {
        tx.now = Utc::now();
        let mark = tx.events.len();
        let before = tx.cache.clone();
        if let Err(e) = sqlx::Executor::execute(&mut tx.conn, open).await {
            rollback(tx).await;
            return Err(e.into());
        }
        open = "RELEASE job; SAVEPOINT job";
        if !job.run(tx).await {
            // Events this job wrote early (`write_events`) go with its savepoint.
            tx.events.truncate(mark);
            tx.written = tx.written.min(mark);
            tx.cache = before;
            // If SQLite already abandoned the whole transaction (I/O error, disk full), this
            // fails and the batch fails with it: no job is acknowledged.
            if let Err(e) = sqlx::query("ROLLBACK TO job").execute(&mut tx.conn).await {
                rollback(tx).await;
                return Err(e.into());
            }
        }
    }
    if let Err(e) = tx.write_events().await {
        rollback(tx).await;
        return Err(e);
    }
    if let Err(e) = tx.write_heads().await {
        rollback(tx).await;
        return Err(e);
    }
    // COMMIT releases the last savepoint with everything else.
    if let Err(e) = sqlx::query("COMMIT").execute(&mut tx.conn).await {
        rollback(tx).await;
        return Err(e.into());
    }
    Ok(())
}

async fn rollback(tx: &mut Tx) {
    if let Err(e) = sqlx::query("ROLLBACK").execute(&mut tx.conn).await {
        tracing::debug!(error = %e, "rollback after a failed batch");
    }
}
