//! The SQLite backend, the embedded default: the shared SQL store (`src/sql/`) compiled over
//! SQLite's connection types, with WAL, `synchronous=FULL` and one writer.

/// What differs on SQLite: connection types, how to open, how a write transaction starts.
pub mod db {
    use crate::{Result, StoreError, StoreOptions};
    use loopgate_domain::audit::Event;
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::broadcast;

    pub type Db = sqlx::Sqlite;
    pub type Conn = sqlx::SqliteConnection;
    pub type DbRow = sqlx::sqlite::SqliteRow;
    pub type Pool = sqlx::SqlitePool;

    fn options(url: &str, create: bool) -> Result<SqliteConnectOptions> {
        Ok(SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid {
                field: "database",
                message: e.to_string(),
            })?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: the WAL is synced at every COMMIT, so an acknowledged write survives a
            // power cut, not just a process crash. Group commit pays for it.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .log_statements(tracing::log::LevelFilter::Trace))
    }

    /// Open and migrate: a read pool, and the writer's own connection.
    pub async fn connect(url: &str, create: bool, opts: &StoreOptions) -> Result<(Pool, Conn)> {
        let options = options(url, create)?;
        let mut conn = options
            .connect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {url}: {e}")))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Internal(format!("migration failed: {e}")))?;
        let read = SqlitePoolOptions::new()
            .max_connections(opts.pool_size.max(1))
            .connect_with(options)
            .await?;
        Ok((read, conn))
    }

    /// A fresh writer connection after the old one failed.
    pub async fn reconnect(url: &str, _opts: &StoreOptions) -> Result<Conn> {
        Ok(options(url, false)?.connect().await?)
    }

    /// IMMEDIATE takes SQLite's write lock at once, so a batch never fails half-way for want of it.
    pub async fn begin(conn: &mut Conn) -> Result<()> {
        sqlx::query("BEGIN IMMEDIATE").execute(conn).await?;
        Ok(())
    }

    /// One process owns an SQLite database's writes, so there is no other node to tell.
    pub async fn notify(_conn: &mut Conn, _node: &str, _event: &Event) -> Result<()> {
        Ok(())
    }

    pub async fn listen(
        _url: &str,
        _read: &Pool,
        _events: &broadcast::Sender<Arc<Event>>,
        _node: &str,
    ) -> Result<()> {
        Ok(())
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

pub use store::{SqlStore as SqliteStore, PAUSE_RULE};
