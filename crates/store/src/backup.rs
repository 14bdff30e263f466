//! Online backups. SQLite: `VACUUM INTO`, which copies the database as of one read transaction
//! (a consistent snapshot that includes every write committed before it began), while the server
//! keeps writing (WAL lets readers and the writer run side by side). PostgreSQL has its own tool,
//! `pg_dump`; see docs/retention-and-backups.md.

use crate::{Result, StoreError};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// What a PostgreSQL user is told instead of a backup.
pub const PG_DUMP_HINT: &str = "loopgate backup copies SQLite databases; back up PostgreSQL with \
     pg_dump --format=custom --file=loopgate.dump \"$LOOPGATE_DATABASE_URL\" and restore into an \
     empty database with pg_restore --no-owner --dbname=URL loopgate.dump \
     (see docs/retention-and-backups.md)";

/// Copy the SQLite database at `url` to a new file `dest`; never overwrites an existing file.
/// The copy is written beside `dest` under a temporary name, synced, and then linked into place,
/// so `dest` appears whole or not at all.
pub async fn backup(url: &str, dest: &Path) -> Result<u64> {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        return Err(StoreError::Invalid {
            field: "database",
            message: PG_DUMP_HINT.to_owned(),
        });
    }
    if !url.starts_with("sqlite:") {
        return Err(StoreError::Invalid {
            field: "database",
            message: format!("{url:?} is not a database URL; use sqlite://PATH or postgres://..."),
        });
    }
    if dest.exists() {
        return Err(StoreError::Invalid {
            field: "path",
            message: format!(
                "{} already exists; a backup never overwrites",
                dest.display()
            ),
        });
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(StoreError::Invalid {
            field: "path",
            message: format!("{} is not a directory", dir.display()),
        });
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "loopgate-backup".to_owned());
    let partial = dir.join(format!(".{name}.partial-{}", uuid::Uuid::new_v4().simple()));

    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Invalid {
            field: "database",
            message: e.to_string(),
        })?
        // A backup of nothing is a mistake: never create the source.
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(10))
        .log_statements(tracing::log::LevelFilter::Trace);
    let mut conn = options
        .connect()
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot open {url}: {e}")))?;
    let copied = sqlx::query("VACUUM INTO $1")
        .bind(partial.to_string_lossy().into_owned())
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(StoreError::Internal(format!("the copy failed: {e}")));
    }
    let placed = (|| -> std::io::Result<u64> {
        // VACUUM INTO does not sync its output; the copy must be on disk before it is named.
        let file = std::fs::File::open(&partial)?;
        file.sync_all()?;
        let size = file.metadata()?.len();
        // A hard link fails if `dest` appeared meanwhile: no overwrite, even in a race.
        std::fs::hard_link(&partial, dest)?;
        std::fs::remove_file(&partial)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(size)
    })();
    match placed {
        Ok(size) => Ok(size),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Err(StoreError::Invalid {
                    field: "path",
                    message: format!(
                        "{} already exists; a backup never overwrites",
                        dest.display()
                    ),
                })
            } else {
                Err(StoreError::Internal(format!(
                    "cannot write {}: {e}",
                    dest.display()
                )))
            }
        }
    }
}
