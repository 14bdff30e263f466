//! The retention commands: `loopgate prune`, `loopgate backup` and `loopgate retention`. They
//! open the database beside a running server (if any) and go through the store like it does.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use loopgate_domain::retention::RetentionDays;
use loopgate_domain::types::Name;
use loopgate_store::{Store, StoreError, StoreOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct PruneArgs {
    /// Only this workspace (default: every workspace, each with its own retention period).
    #[arg(long)]
    workspace: Option<String>,
    /// Count what would be removed, and remove nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
pub struct BackupArgs {
    /// The new file to write (never overwritten). SQLite only; for PostgreSQL use pg_dump.
    path: PathBuf,
}

#[derive(Args)]
pub struct RetentionArgs {
    #[command(subcommand)]
    command: RetentionCommand,
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Print each workspace's retention period.
    Show {
        #[arg(long)]
        workspace: Option<String>,
    },
    /// Set a workspace's retention period in days (at least 183, six months: EU AI Act art. 26(6)).
    Set {
        days: i64,
        #[arg(long, default_value = "default")]
        workspace: String,
    },
}

/// The workspaces a command applies to: the one named (which must exist), or all.
async fn workspaces(store: &dyn Store, only: Option<String>) -> anyhow::Result<Vec<String>> {
    let known = store.workspaces().await?;
    match only {
        Some(w) => {
            let w = Name::parse(&w).map_err(|e| anyhow::anyhow!("--workspace: {e}"))?;
            if !known.iter().any(|k| k == w.as_str()) {
                bail!("there is no workspace {:?}", w.as_str());
            }
            Ok(vec![w.as_str().to_owned()])
        }
        None => Ok(known),
    }
}

pub async fn prune(url: &str, options: &StoreOptions, args: PruneArgs) -> anyhow::Result<ExitCode> {
    let store = crate::cli::open_existing(url, options).await?;
    for ws in workspaces(store.as_ref(), args.workspace).await? {
        let report = store
            .prune(&ws, args.dry_run)
            .await
            .with_context(|| format!("workspace {ws:?}"))?;
        let counts = report
            .removed
            .kinds()
            .iter()
            .map(|(kind, n)| format!("{kind}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "{ws}: {} {counts} (final before {}, retention {} days)",
            if report.dry_run {
                "would remove"
            } else {
                "removed"
            },
            report.cutoff.format("%Y-%m-%dT%H:%M:%SZ"),
            report.days
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn backup(url: &str, args: BackupArgs) -> anyhow::Result<ExitCode> {
    match loopgate_store::backup::backup(url, &args.path).await {
        Ok(bytes) => {
            println!(
                "backed up {} to {} ({bytes} bytes)",
                loopgate_store::redact_url(url),
                args.path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        // The message alone: it says what to do (use pg_dump, pick another path).
        Err(StoreError::Invalid { message, .. }) => bail!("{message}"),
        Err(e) => Err(e.into()),
    }
}

pub async fn retention(
    url: &str,
    options: &StoreOptions,
    args: RetentionArgs,
) -> anyhow::Result<ExitCode> {
    let store = crate::cli::open_existing(url, options).await?;
    match args.command {
        RetentionCommand::Show { workspace } => {
            for ws in workspaces(store.as_ref(), workspace).await? {
                let r = store.retention(&ws).await?;
                println!("{}: {} days", r.workspace, r.days);
            }
        }
        RetentionCommand::Set { days, workspace } => {
            let days = RetentionDays::parse(days).map_err(|e| anyhow::anyhow!("days: {e}"))?;
            let ws = workspaces(store.as_ref(), Some(workspace)).await?;
            for ws in ws {
                let r = store.set_retention(&ws, days, "system:cli").await?;
                println!("{}: {} days", r.workspace, r.days);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
