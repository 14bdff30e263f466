//! `loopgate export training`: the training export (see `loopgate_store::export`) written to
//! standard output or a file as each page arrives, so memory stays flat however large it is.

use anyhow::{bail, Context};
use futures::StreamExt;
use loopgate_domain::training::{self, Format};
use loopgate_store::Store;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Write the export; `Ok(records)`.
pub async fn training(
    store: Arc<dyn Store>,
    workspace: &str,
    format: Format,
    since: Option<&str>,
    output: Option<&Path>,
) -> anyhow::Result<u64> {
    let since_ms = match since {
        None => 0,
        Some(raw) => training::since_ms(raw, chrono::Utc::now().timestamp_millis())
            .map_err(|e| anyhow::anyhow!("--since: {e}"))?,
    };
    if !store.workspaces().await?.iter().any(|w| w == workspace) {
        bail!("there is no workspace {workspace:?}");
    }
    match output {
        None => {
            let stdout = std::io::stdout();
            write_all(store, workspace, format, since_ms, stdout).await
        }
        Some(path) => {
            // Written beside the target and renamed at the end: a failed export never leaves a
            // file that looks complete.
            let partial = partial_path(path);
            let file = std::fs::File::create(&partial)
                .with_context(|| format!("--output: cannot create {}", partial.display()))?;
            let result = write_all(
                store,
                workspace,
                format,
                since_ms,
                std::io::BufWriter::new(file),
            )
            .await;
            match result {
                Ok(n) => {
                    std::fs::rename(&partial, path).with_context(|| {
                        format!("--output: cannot rename to {}", path.display())
                    })?;
                    Ok(n)
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&partial);
                    Err(e)
                }
            }
        }
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

async fn write_all(
    store: Arc<dyn Store>,
    workspace: &str,
    format: Format,
    since_ms: i64,
    mut out: impl Write,
) -> anyhow::Result<u64> {
    let lines =
        loopgate_store::export::training_lines(store, workspace.to_owned(), format, since_ms);
    let mut lines = std::pin::pin!(lines);
    let mut records = 0u64;
    while let Some(chunk) = lines.next().await {
        let chunk = chunk.context("the export failed")?;
        records += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        out.write_all(&chunk).context("cannot write the export")?;
        // Each page goes out as it comes: a reader sees progress, and nothing piles up here.
        out.flush().context("cannot write the export")?;
    }
    Ok(records)
}
