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
    pub conversation_id: Option<Uuid>,
    pub message_id: Option<Uuid>,
}

/// A review with everything a reviewer needs to decide it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewDetail {
    #[serde(flatten)]
    pub review: ReviewRecord,
    pub action: Option<ActionRecord>,
    /// For drafts, flags and QA of messages: the message under review.
    pub message: Option<MessageRecord>,
    /// For conversation reviews: the conversation and its transcript.
    pub conversation: Option<ConversationView>,
    /// For `kb_change` reviews: the proposed knowledge change.
    pub knowledge: Option<KnowledgeRecord>,
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

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationRecord {
    pub id: Uuid,
    pub workspace: String,
    pub agent: String,
    pub external_id: Option<String>,
    #[schema(value_type = Object)]
    pub context: Value,
    /// `ai`, `waiting`, `human` or `closed`.
    #[schema(value_type = String, example = "ai")]
    pub state: loopgate_domain::conversation::ConversationState,
    /// Who took it over, while `human`.
    pub assignee: Option<String>,
    pub turns: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// For lists: the newest message and the newest AI message's confidence.
    pub last_message: Option<String>,
    pub last_ai_confidence: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageRecord {
    pub id: Uuid,
    pub conversation_id: Uuid,
    #[schema(value_type = String, example = "ai")]
    pub role: loopgate_domain::conversation::Role,
    /// What the end user sees (a reviewer's rewrite, when there was one).
    pub text: String,
    /// The AI's draft, when a reviewer rewrote it.
    pub original_text: Option<String>,
    pub confidence: Option<f64>,
    /// `delivered`, `held` (awaiting review), `escalated` (held; a human has the conversation),
    /// or `discarded` (never shown).
    #[schema(value_type = String, example = "delivered")]
    pub status: loopgate_domain::conversation::MessageStatus,
    pub author: String,
    pub rule: Option<String>,
    pub reason: Option<String>,
    pub policy_version: Option<i64>,
    pub review_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A conversation with its transcript.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationView {
    #[serde(flatten)]
    pub conversation: ConversationRecord,
    pub messages: Vec<MessageRecord>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeedbackRecord {
    pub id: Uuid,
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub rating: String,
    pub comment: Option<String>,
    /// The `flag` review a thumbs-down opened.
    pub review_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookRecord {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    /// `standard` (Standard Webhooks JSON) or `slack` (incoming-webhook text).
    pub format: String,
    /// `active`, or `disabled` (the receiver answered 410 Gone).
    pub status: String,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// One event's delivery to one endpoint: the outbox row, which is also the delivery log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryRecord {
    /// Also the `webhook-id` header, the same on every retry.
    pub id: String,
    pub webhook_id: Uuid,
    pub event_seq: i64,
    pub event_type: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A delivery taken by the worker, with what it needs to send it.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: String,
    pub workspace: String,
    pub webhook_id: Uuid,
    pub url: String,
    pub secret: String,
    pub format: String,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// How an attempt ended, as the worker tells the store.
#[derive(Debug, Clone)]
pub enum DeliveryOutcome {
    Delivered {
        status: u16,
    },
    /// Retry at this time (ms since the epoch).
    Retry {
        status: Option<u16>,
        error: String,
        at_ms: i64,
    },
    /// The receiver answered 410: disable the endpoint.
    Gone,
    Dead {
        status: Option<u16>,
        error: String,
    },
}

/// A console session, found by its cookie.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub workspace: String,
    pub username: String,
    pub role: Role,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// A session just opened: its cookie value is shown only now.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: String,
    pub session: SessionRecord,
}

/// An API key as admins list it: never its token.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyListing {
    #[serde(flatten)]
    pub key: KeyRecord,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueStats {
    pub queue: String,
    /// Pending or claimed.
    pub open: i64,
    /// Open past their SLA due time.
    pub overdue: i64,
    /// Human decisions on AI work in the queue (approval, draft, escalation) in the window, and
    /// the share that rejected or edited it.
    #[schema(value_type = Object)]
    pub override_rate: loopgate_domain::stats::Proportion,
    /// QA samples in the queue graded correct.
    #[schema(value_type = Object)]
    pub qa_accuracy: loopgate_domain::stats::Proportion,
    /// Seconds from creation to decision of the queue's reviews decided in the window.
    pub time_to_decision_p50_s: Option<f64>,
    pub time_to_decision_p95_s: Option<f64>,
}

/// The figures of one agent or one action name over the window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SliceStats {
    /// The agent's or the action's name.
    pub key: String,
    /// Actions (and, for agents, AI messages) submitted.
    pub items: i64,
    #[schema(value_type = Object)]
    pub automation_rate: loopgate_domain::stats::Proportion,
    /// Conversations escalated of those active (agents only; none for actions).
    #[schema(value_type = Option<Object>)]
    pub escalation_rate: Option<loopgate_domain::stats::Proportion>,
    #[schema(value_type = Object)]
    pub override_rate: loopgate_domain::stats::Proportion,
    #[schema(value_type = Object)]
    pub qa_accuracy: loopgate_domain::stats::Proportion,
    /// Accuracy per stated-confidence band over this slice's graded items.
    #[schema(value_type = Vec<Object>)]
    pub calibration: Vec<loopgate_domain::learning::CalibrationBand>,
}

/// One time bucket of the stats series.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatsBucket {
    pub start: DateTime<Utc>,
    /// Actions and AI messages submitted.
    pub submitted: i64,
    /// Of those, how many reached the world with no human touch.
    pub automated: i64,
    /// Reviews decided (approval, draft, escalation).
    pub decided: i64,
    /// Of those, rejected or edited by the human.
    pub overridden: i64,
}

/// Oversight statistics of a workspace over a window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatsRecord {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Share of actions and AI messages that reached the world with no human touch.
    #[schema(value_type = Object)]
    pub automation_rate: loopgate_domain::stats::Proportion,
    /// Share of conversations active in the window that were escalated to a human.
    #[schema(value_type = Object)]
    pub escalation_rate: loopgate_domain::stats::Proportion,
    /// Share of human decisions on AI work that rejected or edited it.
    #[schema(value_type = Object)]
    pub override_rate: loopgate_domain::stats::Proportion,
    /// Share of QA samples graded correct, with its 95% Wilson interval.
    #[schema(value_type = Object)]
    pub qa_accuracy: loopgate_domain::stats::Proportion,
    pub queues: Vec<QueueStats>,
    pub open_reviews: i64,
    pub sla_breaches: i64,
    /// Seconds from a review's creation to its decision.
    pub time_to_decision_p50_s: Option<f64>,
    pub time_to_decision_p95_s: Option<f64>,
    pub series: Vec<StatsBucket>,
    /// Per agent and per action name (at most 100 each, the busiest first).
    pub by_agent: Vec<SliceStats>,
    pub by_action: Vec<SliceStats>,
    /// Accuracy per stated-confidence band over the window's graded items (approvals,
    /// rejections, edits, QA grades, flags): a calibrated AI's accuracy tracks its confidence.
    #[schema(value_type = Vec<Object>)]
    pub calibration: Vec<loopgate_domain::learning::CalibrationBand>,
}

/// A standing rule proposed by "approve and don't ask again", awaiting an admin.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProposalRecord {
    pub id: Uuid,
    /// `pending`, `approved` (the policy got a new version) or `rejected`.
    pub status: String,
    pub rule_name: String,
    /// The rule as it would be added to the policy file.
    pub rule_toml: String,
    pub agent: String,
    pub action: String,
    /// The rule it goes just before (the one that sent the approved item to review); none
    /// appends it.
    pub before_rule: Option<String>,
    /// The policy version it was proposed against.
    pub base_version: i64,
    pub review_id: Uuid,
    pub action_id: Uuid,
    pub proposed_by: String,
    /// The backtest of the policy with the rule against the policy without it, over this
    /// agent's recorded actions of this name.
    #[schema(value_type = Object)]
    pub backtest: Value,
    pub created_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// The policy version the approval created.
    pub policy_version: Option<i64>,
}

/// A proposal to store.
#[derive(Debug, Clone)]
pub struct NewProposal {
    pub workspace: String,
    pub rule_name: String,
    pub rule_toml: String,
    pub agent: String,
    pub action: String,
    pub before_rule: Option<String>,
    pub base_version: i64,
    pub review_id: Uuid,
    pub action_id: Uuid,
    pub proposed_by: String,
    pub backtest: Value,
}

/// Which recorded items a learning query looks at.
#[derive(Debug, Clone, Default)]
pub struct EvidenceFilter {
    pub agent: Option<String>,
    /// Only actions of this name (messages are left out).
    pub action: Option<String>,
}

/// A knowledge change an agent proposed. `title` and `text` are what agents get: the proposal,
/// or a reviewer's edit of it once approved.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KnowledgeRecord {
    pub id: Uuid,
    /// The agent that proposed it.
    pub agent: String,
    pub title: String,
    pub text: String,
    /// As the agent proposed them.
    pub proposed_title: String,
    pub proposed_text: String,
    /// The conversation it was suggested in, if any.
    pub conversation_id: Option<Uuid>,
    /// The `kb_change` review that decides it.
    pub review_id: Uuid,
    /// `pending`, `approved` or `rejected`.
    pub status: String,
    /// The approval order in the workspace: the `after` cursor of `GET /v1/knowledge`.
    pub seq: Option<i64>,
    /// Whether a reviewer changed the title or text before approving.
    pub edited: bool,
    pub decided_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

/// One page of a training-data export: JSON records, and where the next page starts (`None`
/// when this was the last).
#[derive(Debug, Clone, Default)]
pub struct ExportPage {
    pub records: Vec<Value>,
    pub next: Option<String>,
}
