//! The baselines every figure is divided by, measured in the same run on the same machine: an axum
//! handler that parses the same JSON body and answers (the HTTP limit of the box), and raw SQLite
//! inserts of the same rows with one fsync per row and 64 rows per transaction (the storage limit).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::routing::post;
use axum::{Json, Router};
use tokio::process::{Child, Command};

/// The body every action submission sends (the no-op handler parses the same one).
pub fn action_body(name: &str, n: u64) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "arguments": {"to": "customer@example.com", "subject": format!("Order A-{n}"), "amount": 42.5},
        "confidence": 0.93,
        "context": {"tier": "gold", "channel": "chat", "tags": ["billing", "refund"]},
    })
}

/// `bench noop-server --listen ADDR`: the no-op handler, run in its own process (like Loopgate) so
/// it gets the same cores and the load generator the same share.
pub async fn run_noop_server(listen: SocketAddr) -> Result<()> {
    async fn handler(
        Json(body): Json<serde_json::Value>,
    ) -> (axum::http::StatusCode, Json<serde_json::Value>) {
        let name = body.get("name").cloned().unwrap_or_default();
        (
            axum::http::StatusCode::CREATED,
            Json(
                serde_json::json!({"id": "00000000-0000-7000-8000-000000000000", "status": "approved", "name": name}),
            ),
        )
    }
    let app = Router::new()
        .route("/v1/actions", post(handler))
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// The no-op server as a child process of this binary.
pub struct NoopServer {
    pub addr: SocketAddr,
    _child: Child,
}

impl NoopServer {
    pub async fn start() -> Result<NoopServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = Command::new(std::env::current_exe()?)
            .args(["noop-server", "--listen", &addr.to_string()])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the no-op server")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while crate::http::Conn::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                bail!("the no-op server did not start");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(NoopServer {
            addr,
            _child: child,
        })
    }
}

/// Raw SQLite inserts of action-shaped rows, in rows per second.
pub struct RawSqlite {
    pub single_per_s: f64,
    pub batched_per_s: f64,
}

/// Inserts `single` rows with one transaction (one fsync) each, then `batches` × 64 rows, into a
/// table shaped like `actions`, with the server's settings (WAL, synchronous=FULL).
pub fn raw_sqlite(dir: &Path, single: u64, batches: u64) -> Result<RawSqlite> {
    let path = dir.join("raw.db");
    let conn = rusqlite::Connection::open(&path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE actions (
            id TEXT PRIMARY KEY, workspace TEXT NOT NULL, agent TEXT NOT NULL, name TEXT NOT NULL,
            arguments TEXT NOT NULL, proposed_arguments TEXT NOT NULL, confidence REAL,
            context TEXT NOT NULL, conversation_id TEXT, status TEXT NOT NULL, rule TEXT,
            reason TEXT NOT NULL, policy_version INTEGER NOT NULL, review_id TEXT,
            created_at INTEGER NOT NULL, decided_at INTEGER);
         CREATE INDEX actions_by_workspace ON actions (workspace, created_at);",
    )?;
    let body = action_body("send_email", 1);
    let arguments = body["arguments"].to_string();
    let context = body["context"].to_string();
    let insert = |conn: &rusqlite::Connection| -> Result<()> {
        conn.prepare_cached(
            "INSERT INTO actions (id, workspace, agent, name, arguments, proposed_arguments,
                confidence, context, status, rule, reason, policy_version, created_at)
             VALUES (?1, 'default', 'bench-agent', 'send_email', ?2, ?2, 0.93, ?3, 'approved',
                'everything else runs', 'matched rule everything else runs', 1, ?4)",
        )?
        .execute(rusqlite::params![
            uuid::Uuid::now_v7().to_string(),
            arguments,
            context,
            chrono::Utc::now().timestamp_millis()
        ])?;
        Ok(())
    };
    let started = Instant::now();
    for _ in 0..single {
        // Autocommit: one transaction, one fsync of the WAL, per row.
        insert(&conn)?;
    }
    let single_per_s = single as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..batches {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for _ in 0..64 {
            insert(&conn)?;
        }
        conn.execute_batch("COMMIT")?;
    }
    let batched_per_s = (batches * 64) as f64 / started.elapsed().as_secs_f64();
    Ok(RawSqlite {
        single_per_s,
        batched_per_s,
    })
}
