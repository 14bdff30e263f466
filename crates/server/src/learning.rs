//! The learning loop over a store: tuning, backtests, "approve and don't ask again" proposals,
//! and the schedule that keeps `threshold = "auto"` rules tuned. The arithmetic is
//! `loopgate_domain::learning`; this module gathers the evidence and records the results. The
//! API, the console and the CLI all call these functions, so they give the same answers.

use crate::AppState;
use futures::TryStreamExt;
use loopgate_domain::learning::{
    rule_index, standing_rule, tune as tune_points, Backtest, BacktestReport, Point, TuneResult,
};
use loopgate_domain::policy::Policy;
use loopgate_store::{
    EvidenceFilter, NewProposal, ProposalRecord, ReviewDetail, Store, StoreError,
};
use serde::Serialize;
use serde_json::json;
use std::time::Duration;
use utoipa::ToSchema;

/// The policy a workspace runs now: its latest version with the server's current values of
/// its `"auto"` thresholds. Version 0 is the empty policy (everything to review).
pub async fn current_policy(
    store: &dyn Store,
    workspace: &str,
) -> Result<(i64, Policy), StoreError> {
    let Some(record) = store.current_policy(workspace).await? else {
        return Ok((0, Policy::empty()));
    };
    let policy = Policy::parse(&record.text).map_err(|errors| {
        // Only validated text is stored, so this means the database was edited by hand.
        StoreError::Internal(format!(
            "stored policy version {} does not parse: {}",
            record.version,
            errors.first().map(|e| e.to_string()).unwrap_or_default()
        ))
    })?;
    let policy = if policy.has_auto_thresholds() {
        policy.with_auto_thresholds(&store.auto_thresholds(workspace).await?)
    } else {
        policy
    };
    Ok((record.version, policy))
}

/// Which items and how far back.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub agent: Option<String>,
    pub action: Option<String>,
    pub since_ms: i64,
}

impl Scope {
    fn filter(&self) -> EvidenceFilter {
        EvidenceFilter {
            agent: self.agent.clone(),
            action: self.action.clone(),
        }
    }
}

/// `tune` over the scope's evidence.
pub async fn tune(
    store: &dyn Store,
    workspace: &str,
    scope: &Scope,
    target_accuracy: f64,
) -> Result<TuneResult, StoreError> {
    let mut points = Vec::new();
    let mut items = store.evidence(workspace, scope.filter(), scope.since_ms);
    while let Some(item) = items.try_next().await? {
        points.push(Point {
            confidence: item.confidence,
            label: item.label,
        });
    }
    Ok(tune_points(&points, target_accuracy))
}

/// How many items a backtest over `scope` will replay (for a progress bar).
pub async fn scope_size(
    store: &dyn Store,
    workspace: &str,
    scope: &Scope,
) -> Result<u64, StoreError> {
    store
        .count_evidence(workspace, &scope.filter(), scope.since_ms)
        .await
}

/// Replays the scope's recorded items through `current` and `candidate`; `progress` is called
/// with the number replayed so far every 1,000 items and at the end.
pub async fn backtest(
    store: &dyn Store,
    workspace: &str,
    current: Policy,
    candidate: Policy,
    scope: &Scope,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<BacktestReport, StoreError> {
    let mut run = Backtest::new(current, candidate);
    let mut items = store.evidence(workspace, scope.filter(), scope.since_ms);
    let mut n = 0u64;
    while let Some(item) = items.try_next().await? {
        run.add(&item);
        n += 1;
        if n.is_multiple_of(1000) {
            progress(n);
        }
    }
    progress(n);
    Ok(run.finish())
}

/// How far back a standing rule's backtest and the autonomy schedule look.
pub const EVIDENCE_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

fn since(window: Duration) -> i64 {
    chrono::Utc::now().timestamp_millis() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

/// "Approve and don't ask again": proposes a standing rule letting this review's agent run
/// this action unreviewed at (about) this confidence, backtested over the agent's recorded
/// actions of that name (the rule cannot change any other item's route). Only approvals of
/// actions qualify. An admin decides the proposal; nothing changes until then.
pub async fn propose_standing_rule(
    store: &dyn Store,
    workspace: &str,
    detail: &ReviewDetail,
    reviewer: &str,
) -> Result<ProposalRecord, StoreError> {
    let not_applicable = |message: &str| StoreError::Invalid {
        field: "dont_ask_again",
        message: message.to_owned(),
    };
    let action = detail
        .action
        .as_ref()
        .ok_or_else(|| not_applicable("only an approval of an agent's action can stand"))?;
    if detail.review.outcome.as_deref() != Some("approved") {
        return Err(not_applicable(
            "only a review that ends approved (unedited) can become a standing rule",
        ));
    }
    let (version, policy) = current_policy(store, workspace).await?;
    let (rule_name, rule_toml) = standing_rule(&action.agent, &action.name, action.confidence);
    let before_rule = detail
        .review
        .rule
        .clone()
        .filter(|r| rule_index(&policy, r).is_some());
    let stored = store.current_policy(workspace).await?;
    let text = stored.map(|p| p.text).unwrap_or_default();
    let candidate_text = loopgate_domain::learning::insert_rule(
        &text,
        before_rule.as_deref().and_then(|r| rule_index(&policy, r)),
        &rule_toml,
    );
    let candidate = Policy::parse(&candidate_text)
        .map_err(|_| not_applicable("the rule for this case does not compile"))?;
    let candidate = candidate.with_auto_thresholds(&store.auto_thresholds(workspace).await?);
    let scope = Scope {
        agent: Some(action.agent.clone()),
        action: Some(action.name.clone()),
        since_ms: since(EVIDENCE_WINDOW),
    };
    let report = backtest(store, workspace, policy, candidate, &scope, &mut |_| {}).await?;
    let backtest = json!({
        "window_days": EVIDENCE_WINDOW.as_secs() / 86_400,
        "items": report.items,
        "graded": report.graded,
        "let_through": report.candidate.totals.approve,
        "newly_let_through": report.candidate.totals.approve.saturating_sub(report.current.totals.approve),
        "known_bad_let_through": report.candidate.known_bad_let_through,
        "report": report,
    });
    store
        .create_proposal(NewProposal {
            workspace: workspace.to_owned(),
            rule_name,
            rule_toml,
            agent: action.agent.clone(),
            action: action.name.clone(),
            before_rule,
            base_version: version,
            review_id: detail.review.id,
            action_id: action.id,
            proposed_by: format!("reviewer:{reviewer}"),
            backtest,
        })
        .await
}

/// One `"auto"` threshold as the schedule left it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ThresholdState {
    pub rule: String,
    pub target_accuracy: f64,
    pub min: f64,
    pub max: f64,
    /// The value in force after this run.
    pub value: f64,
    /// Whether this run changed it.
    pub changed: bool,
    /// What the evidence said.
    #[schema(value_type = Object)]
    pub tune: TuneResult,
}

/// Recomputes every `threshold = "auto"` rule of the workspace from the last
/// [`EVIDENCE_WINDOW`] of evidence: the items the rule's condition holds for (whatever their
/// confidence), tuned to the rule's target, clamped to its bounds. With too little evidence
/// the threshold goes back to `max`, the cautious end. A change is recorded with the evidence
/// behind it (`policy.threshold_changed`).
pub async fn recompute_thresholds(
    store: &dyn Store,
    workspace: &str,
) -> Result<Vec<ThresholdState>, StoreError> {
    let (version, policy) = current_policy(store, workspace).await?;
    let auto_rules: Vec<_> = policy
        .auto_thresholds()
        .map(|(rule, target, min, max, current)| (rule.clone(), target, min, max, current))
        .collect();
    if auto_rules.is_empty() {
        return Ok(Vec::new());
    }
    // One scan of the evidence serves every auto rule.
    let mut points: Vec<Vec<Point>> = vec![Vec::new(); auto_rules.len()];
    let mut items = store.evidence(workspace, EvidenceFilter::default(), since(EVIDENCE_WINDOW));
    while let Some(item) = items.try_next().await? {
        let input = item.input();
        for (i, (rule, ..)) in auto_rules.iter().enumerate() {
            if policy.condition_holds(rule, &input) {
                points[i].push(Point {
                    confidence: item.confidence,
                    label: item.label,
                });
            }
        }
    }
    drop(items);
    let mut states = Vec::new();
    for ((rule, target, min, max, current), points) in auto_rules.into_iter().zip(points) {
        let result = tune_points(&points, target);
        let value = match &result {
            TuneResult::Recommended(r) => r.threshold.clamp(min, max),
            TuneResult::InsufficientEvidence { .. } => max,
        };
        let changed = (value - current).abs() > 1e-9;
        if changed {
            store
                .set_auto_threshold(
                    workspace,
                    &rule.name,
                    value,
                    json!({
                        "policy_version": version, "target_accuracy": target,
                        "min": min, "max": max, "window_days": EVIDENCE_WINDOW.as_secs() / 86_400,
                        "tune": result,
                    }),
                )
                .await?;
        }
        states.push(ThresholdState {
            rule: rule.name.clone(),
            target_accuracy: target,
            min,
            max,
            value,
            changed,
            tune: result,
        });
    }
    Ok(states)
}

/// Runs [`recompute_thresholds`] for every workspace every `interval`, until the server stops.
/// On several nodes each runs it; the results agree (same evidence, same arithmetic) and an
/// unchanged value writes nothing.
pub fn spawn_autonomy(state: AppState, interval: Duration) -> tokio::task::JoinHandle<()> {
    let mut stopping = state.stopping.clone();
    tokio::spawn(async move {
        // The first run comes one interval after start, not at once: a restart storm does not
        // rescan every workspace's evidence.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopping.changed() => return,
            }
            if *stopping.borrow() {
                return;
            }
            let workspaces = match state.store.workspaces().await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "autonomy: listing workspaces failed");
                    continue;
                }
            };
            for ws in workspaces {
                match recompute_thresholds(state.store.as_ref(), &ws).await {
                    Ok(states) => {
                        for s in states.iter().filter(|s| s.changed) {
                            tracing::info!(workspace = %ws, rule = %s.rule, value = s.value,
                                "autonomy: threshold changed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(workspace = %ws, error = %e, "autonomy: recompute failed")
                    }
                }
            }
        }
    })
}
