//! Loopgate's storage. The [`Store`] trait is the whole persistence interface the server uses;
//! [`sqlite::SqliteStore`] and [`postgres::PostgresStore`] implement it from one SQL code base,
//! and the same story suite runs on both.
//!
//! Every operation that changes state commits the change, its audit event(s) and its webhook
//! outbox rows in one transaction, and publishes the committed events on a broadcast channel
//! ([`Store::subscribe`]) that drives long-polls and live streams.
//!
//! Layout:
//! - [`records`]: what the store returns.
//! - `sql/` (compiled into both backends): the store's SQL, its group-committing writer.
//! - [`sqlite`]: the embedded default backend. [`postgres`]: for several nodes on one database.
//! - [`secrets`]: token and password generation and hashing.
//! - [`retention`]: retention periods and prune reports; [`backup`]: online copies of SQLite.

// The files of `src/sql/` are deliberately compiled twice, once per backend (see ARCHITECTURE.md).
#![allow(clippy::duplicate_mod)]

pub mod backup;
pub mod export;
pub mod postgres;
pub mod records;
pub mod retention;
pub mod secrets;
pub mod sqlite;

use async_trait::async_trait;
use loopgate_domain::action::PauseMode;
use loopgate_domain::audit::Event;
use loopgate_domain::auth::Role;
use loopgate_domain::policy::Routing;
use loopgate_domain::review::DecisionInput;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast;
use uuid::Uuid;

pub use records::*;
pub use retention::{PruneCounts, PruneReport, RetentionRecord};

/// Why a store operation failed, in terms the HTTP layer can map without knowing SQL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The operation is not allowed in the current state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The input is well-formed but not acceptable (HTTP 422).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The database could not be reached or is overloaded; nothing was written (HTTP 503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("storage failure: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db) if db.message().contains("database is locked") => {
                StoreError::Unavailable(e.to_string())
            }
            // PostgreSQL going away: admin shutdown or termination (57P01-03), connection
            // exceptions (class 08), too many connections (53300). Retryable, nothing written.
            sqlx::Error::Database(db)
                if db.code().is_some_and(|c| {
                    c.starts_with("57P") || c.starts_with("08") || c == "53300"
                }) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Internal(format!("stored JSON is corrupt: {e}"))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A proposed action, already routed by the policy. The store may still override the routing
/// with a pause, since pauses are read inside the same transaction.
#[derive(Debug, Clone)]
pub struct NewAction {
    pub workspace: String,
    pub agent: String,
    pub name: String,
    pub arguments: serde_json::Value,
    pub confidence: Option<f64>,
    pub context: serde_json::Value,
    pub conversation_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// Hash of the request body, to refuse an idempotency key reused for a different request.
    pub request_hash: String,
    pub routing: Routing,
    pub policy_version: i64,
}

#[derive(Debug, Clone)]
pub enum Submitted {
    Created(ActionRecord),
    /// The idempotency key was seen before: the original action, unchanged.
    Replayed(ActionRecord),
}

/// What a timer sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    pub expired: usize,
    pub escalated: usize,
    pub leases_lapsed: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ReviewFilter {
    pub status: Option<String>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub limit: i64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Events, each published once after its transaction committed.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>>;

    // Tenancy and credentials.
    async fn ensure_workspace(&self, workspace: &str) -> Result<()>;
    async fn create_key(&self, workspace: &str, name: &str, role: Role) -> Result<NewKey>;
    async fn authenticate(&self, token: &str) -> Result<Option<KeyRecord>>;
    async fn create_user(
        &self,
        workspace: &str,
        username: &str,
        role: Role,
        password_hash: &str,
    ) -> Result<UserRecord>;

    // Policy.
    async fn current_policy(&self, workspace: &str) -> Result<Option<PolicyRecord>>;
    /// Store `text` as the next version unless it equals the current one. The caller validated it.
    async fn put_policy(&self, workspace: &str, text: &str, actor: &str) -> Result<PolicyRecord>;

    // Actions.
    async fn submit_action(&self, new: NewAction) -> Result<Submitted>;
    async fn get_action(&self, workspace: &str, id: Uuid) -> Result<Option<ActionView>>;
    async fn cancel_action(&self, workspace: &str, agent: &str, id: Uuid) -> Result<ActionRecord>;

    // Reviews.
    async fn list_reviews(
        &self,
        workspace: &str,
        filter: ReviewFilter,
    ) -> Result<Vec<ReviewRecord>>;
    async fn get_review(&self, workspace: &str, id: Uuid) -> Result<Option<ReviewDetail>>;
    /// Claim the most urgent pending review (priority, then SLA due time, then age) that this
    /// reviewer has not already approved.
    async fn next_review(
        &self,
        workspace: &str,
        queue: Option<&str>,
        reviewer: &str,
        lease_ms: i64,
    ) -> Result<Option<ReviewDetail>>;
    async fn claim_review(
        &self,
        workspace: &str,
        id: Uuid,
        reviewer: &str,
        lease_ms: i64,
    ) -> Result<ReviewDetail>;
    async fn release_review(
        &self,
        workspace: &str,
        id: Uuid,
        reviewer: &str,
    ) -> Result<ReviewDetail>;
    async fn decide_review(
        &self,
        workspace: &str,
        id: Uuid,
        reviewer: &str,
        input: DecisionInput,
    ) -> Result<ReviewDetail>;

    /// Fire due timeouts and lapse expired claims, in every workspace. Each timeout fires once:
    /// the sweep changes only reviews still open, inside its transaction.
    async fn sweep_timers(&self) -> Result<Sweep>;

    // The stop button. `agent: None` is the whole workspace; `mode: None` lifts the pause.
    async fn set_pause(
        &self,
        workspace: &str,
        agent: Option<&str>,
        mode: Option<PauseMode>,
        reason: &str,
        actor: &str,
    ) -> Result<Vec<loopgate_domain::action::Pause>>;
    async fn pauses(&self, workspace: &str) -> Result<Vec<loopgate_domain::action::Pause>>;

    // Audit.
    async fn audit_events(&self, workspace: &str, after: i64, limit: i64) -> Result<Vec<Event>>;
    async fn workspaces(&self) -> Result<Vec<String>>;
    /// The seq of the workspace's newest event (0 when it has none).
    async fn audit_head(&self, workspace: &str) -> Result<i64>;
    /// Walk one workspace's chain; `Ok(count)` or the first break.
    async fn verify_audit(
        &self,
        workspace: &str,
    ) -> Result<Result<u64, loopgate_domain::audit::ChainBreak>>;

    async fn counts(&self, workspace: &str) -> Result<Counts>;

    // Conversations.
    /// Open a conversation; with an `external_id` the agent used before, the existing one
    /// (`false`: not created now).
    async fn create_conversation(
        &self,
        workspace: &str,
        agent: &str,
        external_id: Option<String>,
        context: serde_json::Value,
    ) -> Result<(ConversationRecord, bool)>;
    async fn get_conversation(&self, workspace: &str, id: Uuid)
        -> Result<Option<ConversationView>>;
    /// The conversation without its transcript (and without the list's last-message summary).
    async fn conversation(&self, workspace: &str, id: Uuid) -> Result<Option<ConversationRecord>>;
    async fn list_conversations(
        &self,
        workspace: &str,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ConversationRecord>>;
    /// Post a message. The store checks, inside the transaction, that the conversation's state
    /// allows the role; an `ai` message carries the policy's routing.
    async fn post_message(&self, new: NewMessage) -> Result<MessageRecord>;
    async fn transition_conversation(
        &self,
        change: ConversationChange,
    ) -> Result<ConversationRecord>;
    async fn add_feedback(&self, feedback: NewFeedback) -> Result<FeedbackRecord>;

    // Webhooks.
    async fn create_webhook(&self, new: NewWebhook) -> Result<WebhookRecord>;
    async fn list_webhooks(&self, workspace: &str) -> Result<Vec<WebhookRecord>>;
    async fn delete_webhook(&self, workspace: &str, id: Uuid, actor: &str) -> Result<()>;
    async fn deliveries(
        &self,
        workspace: &str,
        webhook_id: Uuid,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>>;
    /// Take up to `limit` due deliveries, pushing each one's next attempt `lease_ms` ahead so no
    /// other worker takes it meanwhile (a crash mid-send means a retry, never a loss).
    async fn take_due_deliveries(&self, limit: i64, lease_ms: i64) -> Result<Vec<DueDelivery>>;
    async fn record_delivery(&self, id: &str, outcome: DeliveryOutcome) -> Result<()>;
    /// When the next pending delivery is due (ms since the epoch), to sleep until then.
    async fn next_delivery_due(&self) -> Result<Option<i64>>;

    // Console users and sessions.
    /// A user and their argon2 password hash, to check a login.
    async fn find_user(
        &self,
        workspace: &str,
        username: &str,
    ) -> Result<Option<(UserRecord, String)>>;
    async fn list_users(&self, workspace: &str) -> Result<Vec<UserRecord>>;
    async fn create_session(&self, user: &UserRecord, ttl_ms: i64) -> Result<NewSession>;
    /// The unexpired session whose cookie is `token`.
    async fn session(&self, token: &str) -> Result<Option<SessionRecord>>;
    async fn end_session(&self, token: &str) -> Result<()>;

    // Keys, for admins.
    async fn list_keys(&self, workspace: &str) -> Result<Vec<KeyListing>>;
    async fn revoke_key(&self, workspace: &str, id: Uuid, actor: &str) -> Result<()>;

    /// Oversight statistics over `[since_ms, now)`, with `buckets` time buckets.
    async fn stats(&self, workspace: &str, since_ms: i64, buckets: i64) -> Result<StatsRecord>;

    // The learning loop.
    /// Every recorded action, then every AI message, since `since_ms`, oldest first, with
    /// what humans said about it (its label), streamed so a replay holds one at a time.
    fn evidence<'a>(
        &'a self,
        workspace: &'a str,
        filter: EvidenceFilter,
        since_ms: i64,
    ) -> futures::stream::BoxStream<'a, Result<loopgate_domain::learning::ReplayItem>>;
    /// How many items `evidence` would yield.
    async fn count_evidence(
        &self,
        workspace: &str,
        filter: &EvidenceFilter,
        since_ms: i64,
    ) -> Result<u64>;
    /// The server's current values of `threshold = "auto"` rules, by rule name.
    async fn auto_thresholds(&self, workspace: &str) -> Result<HashMap<String, f64>>;
    /// Sets one, with a `policy.threshold_changed` audit event carrying `evidence`.
    async fn set_auto_threshold(
        &self,
        workspace: &str,
        rule: &str,
        value: f64,
        evidence: serde_json::Value,
    ) -> Result<()>;
    async fn create_proposal(&self, new: NewProposal) -> Result<ProposalRecord>;
    async fn list_proposals(&self, workspace: &str) -> Result<Vec<ProposalRecord>>;
    async fn get_proposal(&self, workspace: &str, id: Uuid) -> Result<Option<ProposalRecord>>;
    /// Approve (a new policy version with the rule) or reject; 409 when already decided.
    async fn decide_proposal(
        &self,
        workspace: &str,
        id: Uuid,
        approve: bool,
        admin: &str,
    ) -> Result<ProposalRecord>;
    // Retention.
    /// The workspace's retention period (`NotFound` for an unknown workspace).
    async fn retention(&self, workspace: &str) -> Result<RetentionRecord>;
    async fn set_retention(
        &self,
        workspace: &str,
        days: loopgate_domain::retention::RetentionDays,
        actor: &str,
    ) -> Result<RetentionRecord>;
    /// Remove the workspace's decided and closed records older than its retention period, and the
    /// oldest audit events behind a checkpoint, in short transactions through the writer (safe
    /// while serving). Never touches open work. `dry_run` only counts.
    async fn prune(&self, workspace: &str, dry_run: bool) -> Result<PruneReport>;
    // The learning loop: knowledge changes (`sql/knowledge.rs`) and training exports
    // (`sql/export.rs`, streamed by [`export::training_lines`]).
    /// An agent's proposed knowledge change and its `kb_change` review, in one transaction.
    async fn propose_knowledge(&self, new: NewKnowledge) -> Result<KnowledgeRecord>;
    /// Approved knowledge changes: the newest `limit`, newest first; with `after`, those
    /// approved after that `seq`, in approval order (so a poller never skips one).
    async fn list_knowledge(
        &self,
        workspace: &str,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<KnowledgeRecord>>;
    /// One page (at most `limit` source rows) of a training export, from where `after` (the
    /// previous page's `next`) left off. Records decided or updated before `since_ms` are left out.
    async fn export_training(
        &self,
        workspace: &str,
        format: loopgate_domain::training::Format,
        since_ms: i64,
        after: Option<String>,
        limit: i64,
    ) -> Result<ExportPage>;
}

/// A knowledge change an agent proposes. Title and text were validated by
/// `loopgate_domain::knowledge`.
#[derive(Debug, Clone)]
pub struct NewKnowledge {
    pub workspace: String,
    pub agent: String,
    pub title: String,
    pub text: String,
    /// Must be one of this agent's conversations.
    pub conversation_id: Option<Uuid>,
    /// Where its review goes (`knowledge` by default).
    pub queue: String,
}

/// A message to post. `routing` is required for `ai` messages and ignored otherwise.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub workspace: String,
    pub conversation_id: Uuid,
    pub role: loopgate_domain::conversation::Role,
    pub text: String,
    pub confidence: Option<f64>,
    /// Who posted: the agent's or the human's name.
    pub author: String,
    /// Only this agent may post user/ai/system messages (the one that opened the conversation).
    pub agent: Option<String>,
    pub routing: Option<Routing>,
    pub policy_version: i64,
}

/// A requested change of a conversation's state.
#[derive(Debug, Clone)]
pub struct ConversationChange {
    pub workspace: String,
    pub id: Uuid,
    pub transition: loopgate_domain::conversation::Transition,
    /// `agent:NAME` or `reviewer:NAME`.
    pub actor: String,
    /// The human's name for takeovers.
    pub human: Option<String>,
    /// When set, only this agent may act (agents act on their own conversations only).
    pub agent: Option<String>,
    pub reason: Option<String>,
    /// For escalations: where the escalation review goes.
    pub queue: String,
    pub priority: i64,
    pub due_in_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewFeedback {
    pub workspace: String,
    pub agent: String,
    pub message_id: Uuid,
    pub rating: String,
    pub comment: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub workspace: String,
    pub url: String,
    pub secret: String,
    pub events: Vec<String>,
    pub format: String,
    pub actor: String,
}

/// A database URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Settings of the database connection.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in the read pool (the writer has its own).
    pub pool_size: u32,
    /// PostgreSQL only: abort any statement running longer than this.
    pub statement_timeout: Option<std::time::Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pool_size: 8,
            statement_timeout: Some(std::time::Duration::from_secs(30)),
        }
    }
}

/// Open the backend a database URL names, creating an SQLite file if there is none.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_with(url, true, &StoreOptions::default()).await
}

/// Open an existing database: an SQLite URL naming no file is an error, not a new database.
pub async fn open_existing(url: &str) -> Result<Arc<dyn Store>> {
    open_with(url, false, &StoreOptions::default()).await
}

/// Open with explicit connection settings.
pub async fn open_with(url: &str, create: bool, options: &StoreOptions) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::open(url, create, options).await?,
        ))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(
            postgres::PostgresStore::open(url, create, options).await?,
        ))
    } else {
        Err(StoreError::Invalid {
            field: "database",
            message: format!("{url:?} is not a database URL; use sqlite://PATH or postgres://..."),
        })
    }
}
