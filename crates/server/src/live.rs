//! Live updates: agents long-polling for a decision are woken by the committed event itself (not a
//! polling tick), and background tasks fire timeouts.

use crate::AppState;
use loopgate_domain::audit::Event;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Long-poll waiters by action id.
#[derive(Default)]
pub struct Waiters {
    by_action: Mutex<HashMap<Uuid, Arc<Notify>>>,
}

/// A registered interest in one action; dropping it unregisters when it was the last one.
pub struct Waiter<'a> {
    waiters: &'a Waiters,
    id: Uuid,
    pub notify: Arc<Notify>,
}

impl Waiters {
    pub fn register(&self, id: Uuid) -> Waiter<'_> {
        let notify = match self.by_action.lock() {
            Ok(mut map) => map.entry(id).or_default().clone(),
            Err(_) => Arc::new(Notify::new()),
        };
        Waiter {
            waiters: self,
            id,
            notify,
        }
    }

    pub fn wake(&self, id: &Uuid) {
        let notify = self.by_action.lock().ok().and_then(|m| m.get(id).cloned());
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    /// After missing events (a lagging subscription), wake everyone: each re-reads its action.
    pub fn wake_all(&self) {
        if let Ok(map) = self.by_action.lock() {
            for n in map.values() {
                n.notify_waiters();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_action.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.waiters.by_action.lock() {
            // Two strong references left: the map's and ours. Then nobody else waits.
            if map.get(&self.id).is_some_and(|n| Arc::strong_count(n) <= 2) {
                map.remove(&self.id);
            }
        }
    }
}

fn subject_id(e: &Event, prefix: &str) -> Option<Uuid> {
    e.subject
        .strip_prefix(prefix)
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// Start the background tasks; they stop when `stop` turns true.
pub fn spawn_background(state: AppState, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(dispatch_events(state.clone(), stop.clone())),
        tokio::spawn(sweep_timers(state.clone(), stop.clone())),
        tokio::spawn(crate::delivery::run(state, stop)),
    ]
}

async fn dispatch_events(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut events = state.store.subscribe();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            received = events.recv() => match received {
                Ok(e) => {
                    state.metrics.observe_event(&e);
                    state.outbox_bell.notify_one();
                    match e.event_type.as_str() {
                        "action.decided" => {
                            if let Some(id) = subject_id(&e, "action:") {
                                state.waiters.wake(&id);
                            }
                        }
                        "policy.updated" | "policy.threshold_changed" => {
                            state.policies.invalidate(&e.workspace)
                        }
                        _ => {}
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "event dispatch lagged; waking every waiter");
                    state.waiters.wake_all();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

async fn sweep_timers(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                match state.store.sweep_timers().await {
                    Ok(s) if s.expired + s.escalated + s.leases_lapsed > 0 => {
                        tracing::info!(expired = s.expired, escalated = s.escalated, leases_lapsed = s.leases_lapsed, "timers fired");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "timer sweep failed; retrying"),
                }
            }
        }
    }
}
