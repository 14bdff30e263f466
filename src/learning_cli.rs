//! `loopgate tune` and `loopgate policy backtest`: the learning loop from the command line,
//! through the same functions as the API (`loopgate_server::learning`), printed for people
//! (or as JSON with `--json`).

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use loopgate_domain::learning::{BacktestReport, OutcomeCounts, PolicyReplay, TuneResult};
use loopgate_domain::policy::Policy;
use loopgate_domain::stats::Proportion;
use loopgate_server::learning::{self, Scope};
use loopgate_store::Store;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// `--since 30d` as the start of the window, in Unix ms.
pub fn since_ms(since: &str) -> anyhow::Result<i64> {
    let window = loopgate_domain::learning::parse_window(since).with_context(|| {
        format!("--since: {since:?} is not a duration such as 7d or 30d (at most 400d)")
    })?;
    Ok(chrono::Utc::now().timestamp_millis() - i64::try_from(window.as_millis()).unwrap_or(0))
}

async fn check_workspace(store: &dyn Store, workspace: &str) -> anyhow::Result<()> {
    if !store.workspaces().await?.iter().any(|w| w == workspace) {
        bail!("there is no workspace {workspace:?}");
    }
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn interval(p: &Proportion) -> String {
    match (p.rate, p.low, p.high) {
        (Some(r), Some(lo), Some(hi)) => format!(
            "{} (95% interval {}–{}, n={})",
            pct(r),
            pct(lo),
            pct(hi),
            p.trials
        ),
        _ => "no evidence".into(),
    }
}

pub async fn tune(
    store: &dyn Store,
    workspace: &str,
    scope: Scope,
    target: f64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if !(0.5..1.0).contains(&target) {
        bail!("--target-accuracy must be at least 0.5 and below 1, e.g. 0.98");
    }
    check_workspace(store, workspace).await?;
    let result = learning::tune(store, workspace, &scope, target).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(ExitCode::SUCCESS);
    }
    let of = |v: &Option<String>| v.clone().unwrap_or_else(|| "all".into());
    println!(
        "tune for target accuracy {target} (agent {}, action {}, workspace {workspace})",
        of(&scope.agent),
        of(&scope.action)
    );
    match result {
        TuneResult::Recommended(r) => {
            println!("evidence: {} items, {} graded", r.items, r.graded);
            println!("recommended threshold: confidence >= {}", r.threshold);
            println!(
                "  automation rate at that threshold: {}",
                pct(r.automation_rate)
            );
            println!(
                "  accuracy of the graded items at or above it: {}",
                interval(&r.accuracy)
            );
        }
        TuneResult::InsufficientEvidence {
            items,
            graded,
            reason,
            ..
        } => {
            println!("evidence: {items} items, {graded} graded");
            println!("no recommendation: {reason}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn counts(c: &OutcomeCounts) -> String {
    let mut parts = Vec::new();
    for (n, what) in [
        (c.approve, "approve"),
        (c.review, "review"),
        (c.escalate, "escalate"),
        (c.block, "block"),
    ] {
        if n > 0 {
            parts.push(format!("{what} {n}"));
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn rules(title: &str, side: &PolicyReplay) {
    println!("outcomes per rule, {title}:");
    for (rule, c) in &side.by_rule {
        println!("  {rule:<40} {}", counts(c));
    }
}

fn print_report(report: &BacktestReport, file: &Path, version: i64, since: &str) {
    println!(
        "backtest of {} against the policy in force (version {version}), last {since}: {} items, {} graded",
        file.display(),
        report.items,
        report.graded
    );
    let (a, b) = (&report.current, &report.candidate);
    let rate = |r: Option<f64>| r.map(pct).unwrap_or_else(|| "-".into());
    println!("{:<32} {:>12} {:>12}", "", "current", "candidate");
    println!(
        "{:<32} {:>12} {:>12}",
        "predicted automation rate",
        rate(a.automation_rate),
        rate(b.automation_rate)
    );
    for (what, x, y) in [
        ("approve / deliver", a.totals.approve, b.totals.approve),
        ("review", a.totals.review, b.totals.review),
        ("escalate", a.totals.escalate, b.totals.escalate),
        ("block", a.totals.block, b.totals.block),
        (
            "known-bad let through",
            a.known_bad_let_through,
            b.known_bad_let_through,
        ),
    ] {
        println!("{what:<32} {x:>12} {y:>12}");
    }
    println!("review load per queue:");
    let queues: std::collections::BTreeSet<&String> =
        a.review_load.keys().chain(b.review_load.keys()).collect();
    for q in queues {
        println!(
            "  {:<30} {:>12} {:>12}",
            q,
            a.review_load.get(q).copied().unwrap_or(0),
            b.review_load.get(q).copied().unwrap_or(0)
        );
    }
    rules("current", a);
    rules("candidate", b);
    println!("items whose outcome changes: {}", report.changed);
    if report.known_bad.is_empty() {
        println!("known-bad items the candidate lets through unreviewed: none");
    } else {
        println!(
            "known-bad items (rejected, edited, graded incorrect, flagged) the candidate lets through unreviewed: {}",
            b.known_bad_let_through
        );
        for k in &report.known_bad {
            println!(
                "  {} {} {} {} confidence {} by rule {:?}{}",
                k.kind,
                k.id,
                k.agent,
                k.name,
                k.confidence
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                k.rule.as_deref().unwrap_or("(none)"),
                if k.current_lets_through {
                    " (the current policy lets it through too)"
                } else {
                    ""
                }
            );
        }
    }
}

pub struct BacktestArgs<'a> {
    pub file: &'a Path,
    pub workspace: &'a str,
    pub since: &'a str,
    pub agent: Option<String>,
    pub action: Option<String>,
    pub json: bool,
}

pub async fn backtest(store: &dyn Store, args: BacktestArgs<'_>) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(args.file)
        .with_context(|| format!("{}: cannot read", args.file.display()))?;
    let candidate = match Policy::parse(&text) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                eprintln!("{}:{e}", args.file.display());
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let scope = Scope {
        agent: args.agent,
        action: args.action,
        since_ms: since_ms(args.since)?,
    };
    check_workspace(store, args.workspace).await?;
    let (version, current) = learning::current_policy(store, args.workspace).await?;
    let candidate = candidate.with_auto_thresholds(&store.auto_thresholds(args.workspace).await?);
    let total = learning::scope_size(store, args.workspace, &scope).await?;
    // On stderr, and only on a terminal: stdout stays the report.
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("replaying {bar:40} {pos}/{len} items, {per_sec}, {eta} left")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let report = {
        let bar = bar.clone();
        learning::backtest(
            store,
            args.workspace,
            current,
            candidate,
            &scope,
            &mut move |n| bar.set_position(n),
        )
        .await?
    };
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, args.file, version, args.since);
    }
    Ok(ExitCode::SUCCESS)
}
