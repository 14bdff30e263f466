//! The compiled policy of each workspace. Compiling CEL is far dearer than evaluating it, so each
//! version is compiled once and shared; a `policy.updated` or `policy.threshold_changed` event
//! drops the cached entry.

use loopgate_domain::policy::Policy;
use loopgate_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Clone)]
pub struct ActivePolicy {
    /// 0 when the workspace has never had a policy (everything goes to review).
    pub version: i64,
    pub policy: Arc<Policy>,
}

pub struct PolicyCache {
    store: Arc<dyn Store>,
    by_workspace: RwLock<HashMap<String, ActivePolicy>>,
}

impl PolicyCache {
    pub fn new(store: Arc<dyn Store>) -> Self {
        PolicyCache {
            store,
            by_workspace: RwLock::new(HashMap::new()),
        }
    }

    pub async fn active(&self, workspace: &str) -> Result<ActivePolicy, StoreError> {
        if let Some(p) = self.read_cached(workspace) {
            return Ok(p);
        }
        let (version, policy) =
            crate::learning::current_policy(self.store.as_ref(), workspace).await?;
        let active = ActivePolicy {
            version,
            policy: Arc::new(policy),
        };
        if let Ok(mut map) = self.by_workspace.write() {
            map.insert(workspace.to_owned(), active.clone());
        }
        Ok(active)
    }

    fn read_cached(&self, workspace: &str) -> Option<ActivePolicy> {
        self.by_workspace.read().ok()?.get(workspace).cloned()
    }

    pub fn invalidate(&self, workspace: &str) {
        if let Ok(mut map) = self.by_workspace.write() {
            map.remove(workspace);
        }
    }
}
