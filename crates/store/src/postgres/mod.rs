//! The PostgreSQL backend, for several stateless `loopgate` nodes on one database: the shared SQL
//! store (`src/sql/`) compiled over PostgreSQL's connection types.
//!
//! Across nodes: every write transaction first takes one transaction-scoped advisory lock, so
//! writes from all nodes are serialized exactly as one SQLite writer serializes them (each node
//! still group-commits its own batch). Claims, `next`, decisions, timeouts and webhook leases are
//! therefore exactly-once across nodes, and each workspace's audit chain stays one gap-free
//! sequence. Each event also sends a `NOTIFY` in its transaction (delivered only on commit); every
//! node LISTENs and republishes other nodes' events locally, so long-polls, SSE and webhooks work
//! whichever node took the decision.

/// What differs on PostgreSQL.
pub mod db {
    use crate::{Result, StoreError, StoreOptions};
    use loopgate_domain::audit::Event;
    use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
    use sqlx::{ConnectOptions, Row};
    use std::str::FromStr;
    use std::sync::Arc;
    use tokio::sync::broadcast;

    pub type Db = sqlx::Postgres;
    pub type Conn = sqlx::PgConnection;
    pub type DbRow = sqlx::postgres::PgRow;
    pub type Pool = sqlx::PgPool;

    /// The key of the advisory lock every write transaction takes ("LGWRITE" in ASCII).
    const WRITE_LOCK: i64 = 0x004c_4757_5249_5445;
    const CHANNEL: &str = "loopgate_events";

    fn options(url: &str, opts: &StoreOptions) -> Result<PgConnectOptions> {
        let mut o = PgConnectOptions::from_str(url).map_err(|e| StoreError::Invalid {
            field: "database",
            message: e.to_string(),
        })?;
        if let Some(t) = opts.statement_timeout {
            o = o.options([("statement_timeout", format!("{}", t.as_millis()))]);
        }
        Ok(o.log_statements(tracing::log::LevelFilter::Trace))
    }

    pub async fn connect(url: &str, _create: bool, opts: &StoreOptions) -> Result<(Pool, Conn)> {
        let options = options(url, opts)?;
        let mut conn = options.connect().await.map_err(|e| {
            StoreError::Unavailable(format!("cannot connect to {}: {e}", crate::redact_url(url)))
        })?;
        // Migrations from several nodes starting at once: sqlx takes an advisory lock itself.
        sqlx::migrate!("./migrations/postgres")
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Internal(format!("migration failed: {e}")))?;
        let read = PgPoolOptions::new()
            .max_connections(opts.pool_size.max(1))
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok((read, conn))
    }

    pub async fn reconnect(url: &str, opts: &StoreOptions) -> Result<Conn> {
        Ok(options(url, opts)?.connect().await?)
    }

    pub async fn begin(conn: &mut Conn) -> Result<()> {
        sqlx::query("BEGIN").execute(&mut *conn).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Tell the other nodes, on commit, which event to fetch (payloads are capped at 8000 bytes,
    /// events are not).
    pub async fn notify(conn: &mut Conn, node: &str, event: &Event) -> Result<()> {
        let payload = format!("{node} {} {}", event.seq, event.workspace);
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Republish other nodes' events on this node's broadcast channel.
    pub async fn listen(
        url: &str,
        read: &Pool,
        events: &broadcast::Sender<Arc<Event>>,
        node: &str,
    ) -> Result<()> {
        let mut listener = PgListener::connect_with(read).await?;
        listener.listen(CHANNEL).await?;
        // A weak handle: when the store is dropped, the listener ends.
        let (read, events, node) = (read.clone(), events.downgrade(), node.to_owned());
        let _ = url;
        tokio::spawn(async move {
            loop {
                // `recv` reconnects by itself after a lost connection; notifications sent while it
                // was away are lost, which SSE streams repair from the log (they notice the gap).
                let n = match listener.recv().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        continue;
                    }
                };
                let mut parts = n.payload().splitn(3, ' ');
                let (Some(from), Some(seq), Some(ws)) = (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if from == node {
                    continue; // our own writer already published it
                }
                let Ok(seq) = seq.parse::<i64>() else {
                    continue;
                };
                let Some(events) = events.upgrade() else {
                    return;
                };
                match fetch(&read, ws, seq).await {
                    Ok(Some(e)) => {
                        let _ = events.send(Arc::new(e));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read a notified event"),
                }
            }
        });
        Ok(())
    }

    async fn fetch(read: &Pool, ws: &str, seq: i64) -> Result<Option<Event>> {
        let row = sqlx::query(
            "SELECT workspace, seq, at, actor, type, subject, data, prev_hash, hash FROM events
             WHERE workspace = $1 AND seq = $2",
        )
        .bind(ws)
        .bind(seq)
        .fetch_optional(read)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let data: String = r.try_get("data")?;
        Ok(Some(Event {
            seq: r.try_get("seq")?,
            workspace: r.try_get("workspace")?,
            at: r.try_get("at")?,
            actor: r.try_get("actor")?,
            event_type: r.try_get("type")?,
            subject: r.try_get("subject")?,
            data: serde_json::from_str(&data)?,
            prev_hash: r.try_get("prev_hash")?,
            hash: r.try_get("hash")?,
        }))
    }
}

#[path = "../sql/accounts.rs"]
mod accounts;
#[path = "../sql/conversations.rs"]
mod conversations;
#[path = "../sql/export.rs"]
mod export;
#[path = "../sql/knowledge.rs"]
mod knowledge;
#[path = "../sql/learning.rs"]
mod learning;
#[path = "../sql/retention.rs"]
mod retention;
#[path = "../sql/stats.rs"]
mod stats;
#[path = "../sql/store.rs"]
mod store;
#[path = "../sql/webhooks.rs"]
mod webhooks;
#[path = "../sql/writer.rs"]
pub mod writer;

pub use store::SqlStore as PostgresStore;
