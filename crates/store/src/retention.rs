//! Retention and prune, as the store reports them: a workspace's retention period and what a
//! prune removed. The SQL that prunes is `sql/retention.rs`; the rules (bounds of the period,
//! where the audit chain may be cut, the checkpoint) are `loopgate_domain::retention` and
//! `loopgate_domain::audit`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// A workspace's retention period: decided and closed records older than this are pruned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RetentionRecord {
    pub workspace: String,
    /// Days records are kept after they became final (at least 183; 400 unless set).
    #[schema(example = 400)]
    pub days: i64,
}

/// How many records of each kind a prune removed (or, for a dry run, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneCounts {
    pub actions: u64,
    pub reviews: u64,
    pub decisions: u64,
    pub idempotency_keys: u64,
    pub conversations: u64,
    pub messages: u64,
    pub feedback: u64,
    /// Webhook outbox rows (the delivery log), delivered or dead.
    pub deliveries: u64,
    pub sessions: u64,
    pub events: u64,
}

impl PruneCounts {
    /// Each kind with its count, in a fixed order for printing.
    pub fn kinds(&self) -> [(&'static str, u64); 10] {
        [
            ("actions", self.actions),
            ("reviews", self.reviews),
            ("decisions", self.decisions),
            ("idempotency_keys", self.idempotency_keys),
            ("conversations", self.conversations),
            ("messages", self.messages),
            ("feedback", self.feedback),
            ("deliveries", self.deliveries),
            ("sessions", self.sessions),
            ("events", self.events),
        ]
    }

    pub fn total(&self) -> u64 {
        self.kinds().iter().map(|(_, n)| n).sum()
    }
}

impl std::ops::AddAssign for PruneCounts {
    fn add_assign(&mut self, o: PruneCounts) {
        self.actions += o.actions;
        self.reviews += o.reviews;
        self.decisions += o.decisions;
        self.idempotency_keys += o.idempotency_keys;
        self.conversations += o.conversations;
        self.messages += o.messages;
        self.feedback += o.feedback;
        self.deliveries += o.deliveries;
        self.sessions += o.sessions;
        self.events += o.events;
    }
}

/// What one prune of one workspace did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub workspace: String,
    pub days: i64,
    /// Records that became final before this instant were removed.
    pub cutoff: DateTime<Utc>,
    pub dry_run: bool,
    pub removed: PruneCounts,
}
