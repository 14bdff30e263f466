//! What the store hands back. These are also the JSON shapes of the API's responses (hence
//! `Serialize` and `ToSchema`): one definition, so the API and the OpenAPI document cannot drift
//! from what is stored.

use chrono::{DateTime, Utc};
use loopgate_domain::action::ActionStatus;
use loopgate_domain::auth::Role;
use loopgate_domain::review::{Grade, ReviewKind, ReviewStatus, Verdict};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyRecord {
    pub id: Uuid,
    pub workspace: String,
    /// For agent keys, the agent's name.
    pub name: String,
    #[schema(value_type = String, example = "agent")]
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// A key just created: the only time its token is visible.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key: KeyRecord,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserRecord {
    pub id: Uuid,
    pub workspace: String,
    pub username: String,
    #[schema(value_type = String, example = "reviewer")]
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyRecord {
    pub workspace: String,
    pub version: i64,
    pub text: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionRecord {
    pub id: Uuid,
    pub workspace: String,
    pub agent: String,
    pub name: String,
    /// The final arguments: a reviewer's edit replaces the proposed ones.
    #[schema(value_type = Object)]
    pub arguments: Value,
    #[schema(value_type = Object)]
    pub proposed_arguments: Value,
    pub confidence: Option<f64>,
    #[schema(value_type = Object)]
    pub context: Value,
    pub conversation_id: Option<String>,
    #[schema(value_type = String, example = "pending")]
    pub status: ActionStatus,
    /// The policy rule that routed it (`null` when none matched).
    pub rule: Option<String>,
    pub reason: String,
    pub policy_version: i64,
    pub review_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DecisionRecord {
    pub id: Uuid,
    pub review_id: Uuid,
    pub reviewer: String,
    #[schema(value_type = String, example = "approve")]
    pub verdict: Verdict,
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<Value>,
    pub text: Option<String>,
    #[schema(value_type = Option<String>)]
    pub grade: Option<Grade>,
    pub score: Option<f64>,
    pub labels: Vec<String>,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// How an action's final status came about, for the agent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionDecision {
    /// `approve`, `reject` or `edit` for a human decision; `timeout` when `on_timeout` decided;
    /// `cancel` when the agent cancelled.
    pub verdict: String,
    /// Reviewers who decided, in order (`system` for a timeout).
    pub by: Vec<String>,
    pub comment: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionView {
    #[serde(flatten)]
    pub action: ActionRecord,
    pub decision: Option<ActionDecision>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewRecord {
    pub id: Uuid,
    pub workspace: String,
    #[schema(value_type = String, example = "approval")]
    pub kind: ReviewKind,
    #[schema(value_type = String, example = "pending")]
    pub status: ReviewStatus,
    pub queue: String,
    pub priority: i64,
    pub due_at: Option<DateTime<Utc>>,
    pub on_timeout: Option<String>,
    pub approvals_required: i64,
    /// Distinct approvals recorded so far (four-eyes reviews wait for `approvals_required`).
    pub approvals: i64,
    pub rule: Option<String>,
    pub reason: String,
    pub policy_version: i64,
    pub action_id: Option<Uuid>,
    pub claimed_by: Option<String>,
    pub claim_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    /// `approved`, `rejected`, `graded:correct`, `expired:approve` ... once final.
    pub outcome: Option<String>,
    /// The subject's confidence and agent, denormalised for queue views.
    pub confidence: Option<f64>,
    pub agent: Option<String>,
}

/// A review with everything a reviewer needs to decide it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewDetail {
    #[serde(flatten)]
    pub review: ReviewRecord,
    pub action: Option<ActionRecord>,
    pub decisions: Vec<DecisionRecord>,
}

/// Gauges for `/metrics`.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Counts {
    /// Open reviews per queue.
    pub open_reviews: Vec<(String, i64)>,
    /// Actions per status.
    pub actions: Vec<(String, i64)>,
}
