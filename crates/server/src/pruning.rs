//! The scheduled prune: every [`crate::Config::prune_interval`] the server removes, in each
//! workspace, what is past its retention period (as `loopgate prune` does by hand). Each step is
//! a short transaction through the store's writer, so requests keep flowing meanwhile.

use crate::AppState;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The first prune runs this long after start (or after one interval, if that is shorter), so a
/// server that restarts more often than the interval still prunes, but not in the rush of start.
const FIRST_DELAY: Duration = Duration::from_secs(300);

/// Start the schedule, unless the config turns it off.
pub fn spawn(state: AppState, stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    let interval = state.config.prune_interval?;
    Some(tokio::spawn(run(state, stop, interval)))
}

async fn run(state: AppState, mut stop: watch::Receiver<bool>, interval: Duration) {
    let mut wait = FIRST_DELAY.min(interval);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = interval;
        prune_all(&state).await;
    }
}

/// One pass over every workspace; a failure is logged and the next pass tries again.
pub async fn prune_all(state: &AppState) {
    let workspaces = match state.store.workspaces().await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "scheduled prune: cannot list workspaces");
            return;
        }
    };
    for ws in workspaces {
        if *state.stopping.borrow() {
            return;
        }
        match state.store.prune(&ws, false).await {
            Ok(report) if report.removed.total() > 0 => {
                let r = report.removed;
                tracing::info!(
                    workspace = %ws, days = report.days, cutoff = %report.cutoff,
                    actions = r.actions, reviews = r.reviews, decisions = r.decisions,
                    conversations = r.conversations, messages = r.messages, feedback = r.feedback,
                    deliveries = r.deliveries, sessions = r.sessions, events = r.events,
                    "pruned records past retention"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(workspace = %ws, error = %e, "scheduled prune failed"),
        }
    }
}
