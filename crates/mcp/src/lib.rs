//! Loopgate's Model Context Protocol tools, so an MCP client (Claude Desktop, an IDE agent) can
//! put a human in its loop with no code. [`Gate`] is the MCP server; its tools call the agent API
//! through [`loopgate_client`], acting as one agent:
//! - over stdio (`loopgate mcp`), the agent whose key the process was given ([`Gate::new`]);
//! - over streamable HTTP ([`streamable_http`], mounted by the Loopgate server at `/mcp`), the
//!   agent whose bearer token is on the HTTP request carrying each call ([`Gate::per_request`]).
//!
//! Tools:
//! - `request_approval`: submit a proposed action, wait for the decision (long-polls in slices of
//!   60 s up to the overall timeout), return the status and the final, possibly edited, arguments.
//! - `ask_human`: a question for a human, as an action named `ask_human` with `{question}`; the
//!   reviewer answers by deciding it with `edit` and an `answer` argument (or approving with a
//!   comment). It uses the review queue, its SLAs, four-eyes and audit like any other gate.
//! - `escalate_conversation`: hand a Loopgate conversation to a human.
//! - `check_status`: an action's status, without waiting (or waiting up to 60 s).
//!
//! Waiting is cooperative: while a tool waits it sends MCP progress notifications when the client
//! asked for them (so clients that reset their request timeout on progress keep waiting), and a
//! cancelled tool call cancels its pending action, so no reviewer decides what nobody waits for.

use loopgate_client::{Action, ActionStatus, Client, Escalation, JsonObject, NewAction};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{Implementation, ProgressNotificationParam, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool, tool_handler, tool_router, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The action name `ask_human` questions are filed under; a policy rule should send it to review.
pub const ASK_HUMAN: &str = "ask_human";

/// How long `request_approval` and `ask_human` wait for a human unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// How often a waiting tool tells the client it is still alive.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// How the streamable HTTP endpoint is served.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Where the tools reach the agent API: the Loopgate server itself, at its own address.
    pub base_url: String,
    /// How long `request_approval` and `ask_human` wait unless the call says otherwise.
    pub timeout: Duration,
    /// Largest request body accepted (413 beyond).
    pub body_limit: usize,
    /// How often an SSE response that is still waiting sends a keep-alive comment.
    pub sse_keepalive: Duration,
}

/// The streamable HTTP endpoint: a tower `Service` to mount in an HTTP server.
pub type StreamableHttp = StreamableHttpService<Gate, NeverSessionManager>;

/// MCP over streamable HTTP, to mount in an HTTP server (Loopgate's is at `/mcp`). Each call acts
/// as the agent whose token is in its request's `Authorization: Bearer` header, so the caller
/// must have authenticated the request before it gets here.
///
/// It is stateless (no `Mcp-Session-Id`): every POST is served on its own, so any node of a
/// cluster can take any request and a restart loses nothing. A tool call's answer (and its
/// progress notifications) stream back on the POST's own SSE response; when the client drops that
/// connection the call is cancelled, and with it the action it was waiting on. The `Host` header is
/// not checked, since every request carries a secret token that a DNS-rebinding page cannot know.
///
/// When `shutdown` resolves, open responses end, so a graceful shutdown is not held up by tool
/// calls waiting for humans. Call it inside a Tokio runtime: it spawns the task that watches
/// `shutdown`.
pub fn streamable_http(
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> StreamableHttp {
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_sse_keep_alive(Some(settings.sse_keepalive))
        .with_max_request_body_bytes(settings.body_limit)
        .with_cancellation_token(stop)
        .disable_allowed_hosts();
    // One tool router (its schemas are built once), cloned for each request.
    let gate = Gate::per_request(settings.base_url, settings.timeout);
    StreamableHttpService::new(
        move || Ok(gate.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// Whom the tools act as.
#[derive(Clone)]
enum Agent {
    /// One agent for the whole session (stdio).
    Fixed(Client),
    /// The agent whose bearer token is on the HTTP request carrying the call.
    PerRequest { base_url: Arc<str> },
}

/// The MCP server: the agent API behind four tools.
#[derive(Clone)]
pub struct Gate {
    agent: Agent,
    /// How long `request_approval` and `ask_human` wait unless the call says otherwise.
    timeout: Duration,
    tool_router: ToolRouter<Gate>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RequestApproval {
    /// The action's name as your Loopgate policy knows it, e.g. `issue_refund` or `send_email`.
    pub name: String,
    /// The arguments you intend to run it with (a JSON object). A reviewer may edit them.
    pub arguments: JsonObject,
    /// How sure you are that this is the right action, from 0 to 1.
    #[serde(default)]
    pub confidence: Option<f64>,
    /// What the policy and the reviewer should know: customer tier, channel, topic tags...
    #[serde(default)]
    pub context: Option<JsonObject>,
    /// The Loopgate conversation this action belongs to, if any.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Stop waiting after this many seconds (default: this MCP server's timeout, 1 hour unless
    /// configured otherwise).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// The decision on an action.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Outcome {
    pub action_id: String,
    /// `approved`, `rejected`, `blocked`, `expired`, `cancelled`, or `pending` when the wait ran
    /// out before anyone decided.
    pub status: String,
    /// True only when approved: then run the action with `arguments`.
    pub approved: bool,
    /// The arguments to run with: the reviewer's edit when there was one.
    pub arguments: JsonObject,
    /// True when a reviewer changed the arguments.
    pub edited: bool,
    /// `approve`, `reject`, `edit`, `timeout` or `cancel`; absent when the policy decided alone.
    pub verdict: Option<String>,
    /// The reviewer's comment.
    pub comment: Option<String>,
    /// Who decided.
    pub reviewers: Vec<String>,
    /// The policy rule that routed the action.
    pub rule: Option<String>,
    /// Why the policy routed it so.
    pub reason: String,
    /// What to do now, in one sentence.
    pub next: String,
}

impl Outcome {
    fn of(a: &Action) -> Outcome {
        let decision = a.decision.as_ref();
        let comment = decision.and_then(|d| d.comment.clone());
        let reviewers = decision.map(|d| d.by.clone()).unwrap_or_default();
        let by = if reviewers.is_empty() {
            "the policy".to_owned()
        } else {
            reviewers.join(" and ")
        };
        let why = comment
            .as_deref()
            .map(|c| format!(" Comment: {c}"))
            .unwrap_or_default();
        let next = match a.status {
            ActionStatus::Approved if a.edited() => format!(
                "Approved by {by} with edited arguments: run {} with exactly the returned arguments.{why}",
                a.name
            ),
            ActionStatus::Approved => {
                format!("Approved by {by}: run {} with the returned arguments.{why}", a.name)
            }
            ActionStatus::Pending => format!(
                "No decision yet: do not run {} now. Call check_status with action_id {} later.",
                a.name, a.id
            ),
            ActionStatus::Rejected => format!("Rejected by {by}: do not run {}.{why}", a.name),
            ActionStatus::Blocked => format!(
                "Blocked by policy ({}): do not run {}.",
                a.reason, a.name
            ),
            ActionStatus::Expired => format!(
                "Nobody decided before the deadline: do not run {}.",
                a.name
            ),
            ActionStatus::Cancelled => format!("Cancelled: do not run {}.", a.name),
        };
        Outcome {
            action_id: a.id.clone(),
            status: a.status.as_str().to_owned(),
            approved: a.status.is_approved(),
            arguments: a.arguments.clone(),
            edited: a.edited(),
            verdict: decision.map(|d| d.verdict.clone()),
            comment,
            reviewers,
            rule: a.rule.clone(),
            reason: a.reason.clone(),
            next,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AskHuman {
    /// The question, complete enough for a person who has not seen your conversation.
    pub question: String,
    /// Anything that helps them answer (and that the policy may route on).
    #[serde(default)]
    pub context: Option<JsonObject>,
    /// The Loopgate conversation this is about, if any.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Stop waiting after this many seconds (default: this MCP server's timeout, 1 hour unless
    /// configured otherwise).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// A human's answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Answer {
    pub action_id: String,
    /// `approved` when answered, `rejected` when the human declined, `pending` when the wait ran out.
    pub status: String,
    /// True when a human answered.
    pub answered: bool,
    /// The answer: the `answer` the reviewer filled in, or else their comment.
    pub answer: Option<String>,
    /// Who answered.
    pub answered_by: Vec<String>,
    /// The reviewer's comment (why they declined, when they did).
    pub comment: Option<String>,
    /// What to do now, in one sentence.
    pub next: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct EscalateConversation {
    /// The Loopgate conversation's id.
    pub conversation_id: String,
    /// Why a human is needed: shown to reviewers and kept in the audit log.
    pub reason: String,
    /// The reviewers' queue (default `default`).
    #[serde(default)]
    pub queue: Option<String>,
    /// Higher is more urgent.
    #[serde(default)]
    pub priority: Option<i64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Escalated {
    pub conversation_id: String,
    /// `waiting` until a human takes the conversation over.
    pub state: String,
    pub next: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CheckStatus {
    /// The `action_id` that request_approval or ask_human returned.
    pub action_id: String,
    /// Wait up to this many seconds (at most 60) for a decision; default 0, answer at once.
    #[serde(default)]
    pub wait_seconds: Option<u64>,
}

#[tool_router]
impl Gate {
    /// Tools acting as the agent `client` holds the key of (stdio: one agent per process).
    pub fn new(client: Client, timeout: Duration) -> Gate {
        Gate {
            agent: Agent::Fixed(client),
            timeout,
            tool_router: Self::tool_router(),
        }
    }

    /// Tools acting, call by call, as the agent whose token is in the `Authorization: Bearer`
    /// header of the HTTP request that carried the call, against the server at `base_url`.
    pub fn per_request(base_url: impl Into<String>, timeout: Duration) -> Gate {
        Gate {
            agent: Agent::PerRequest {
                base_url: base_url.into().into(),
            },
            timeout,
            tool_router: Self::tool_router(),
        }
    }

    /// Ask a human reviewer for approval before doing something consequential (a refund, an email,
    /// a deletion, a payment). Waits for the decision and returns it.
    #[tool(
        description = "Ask Loopgate (a human reviewer, per policy) to approve an action BEFORE you perform it. Waits for the decision. Perform the action only if `approved` is true, and then with the returned `arguments`, which a reviewer may have edited."
    )]
    async fn request_approval(
        &self,
        Parameters(p): Parameters<RequestApproval>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<Outcome>, String> {
        let mut action = NewAction::new(p.name, p.arguments);
        action.confidence = p.confidence;
        action.context = p.context;
        action.conversation_id = p.conversation_id;
        let timeout = p
            .timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(self.timeout);
        let decided = self.submit_and_wait(&action, timeout, &ctx).await?;
        Ok(Json(Outcome::of(&decided)))
    }

    #[tool(
        description = "Ask a human a question and wait for the answer (for when you lack information or authority). The question goes to the Loopgate review queue as an action named `ask_human`; a reviewer answers it."
    )]
    async fn ask_human(
        &self,
        Parameters(p): Parameters<AskHuman>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<Answer>, String> {
        let question = p.question.trim();
        if question.is_empty() {
            return Err("the question is empty".into());
        }
        let mut args = JsonObject::new();
        args.insert("question".into(), question.into());
        let mut action = NewAction::new(ASK_HUMAN, args);
        action.context = p.context;
        action.conversation_id = p.conversation_id;
        let timeout = p
            .timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(self.timeout);
        let decided = self.submit_and_wait(&action, timeout, &ctx).await?;
        answer_of(&decided).map(Json)
    }

    #[tool(
        description = "Hand a Loopgate conversation to a human: it goes to `waiting`, a reviewer is asked to take it over, and the AI may not post to the end user until it is handed back."
    )]
    async fn escalate_conversation(
        &self,
        Parameters(p): Parameters<EscalateConversation>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<Escalated>, String> {
        let escalation = Escalation {
            reason: Some(p.reason),
            queue: p.queue,
            priority: p.priority,
            timeout: None,
        };
        let c = self
            .client(&ctx)?
            .escalate(&p.conversation_id, &escalation)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Json(Escalated {
            next: format!(
                "The conversation is {}: a human will take it over; do not reply to the end user until it is handed back.",
                c.state
            ),
            conversation_id: c.id,
            state: c.state,
        }))
    }

    #[tool(
        description = "The status of an action submitted with request_approval or ask_human (approved, pending, rejected, blocked, expired, cancelled), with its final arguments."
    )]
    async fn check_status(
        &self,
        Parameters(p): Parameters<CheckStatus>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<Outcome>, String> {
        let wait = Duration::from_secs(p.wait_seconds.unwrap_or(0).min(60));
        let a = self
            .client(&ctx)?
            .poll(&p.action_id, wait)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Json(Outcome::of(&a)))
    }
}

impl Gate {
    /// The agent API client this call acts through.
    fn client(&self, ctx: &RequestContext<RoleServer>) -> Result<Client, String> {
        match &self.agent {
            Agent::Fixed(client) => Ok(client.clone()),
            Agent::PerRequest { base_url } => {
                let token = ctx
                    .extensions
                    .get::<http::request::Parts>()
                    .and_then(|parts| bearer_token(&parts.headers))
                    .ok_or("this call came without an Authorization: Bearer header")?;
                Client::new(base_url, token).map_err(|e| e.to_string())
            }
        }
    }

    /// Submit (retrying brief outages under one idempotency key, so a retry cannot file it twice),
    /// then wait for a final status up to `timeout`.
    async fn submit_and_wait(
        &self,
        action: &NewAction,
        timeout: Duration,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Action, String> {
        let client = self.client(ctx)?;
        let key = format!("mcp-{}", uuid::Uuid::new_v4());
        let mut attempt = 0;
        let submitted = loop {
            match client.submit(action, Some(&key)).await {
                Ok(a) => break a,
                Err(e) if e.is_transient() && attempt < 3 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                }
                Err(e) => return Err(format!("could not submit the action to Loopgate: {e}")),
            }
        };
        if submitted.status.is_final() {
            return Ok(submitted);
        }
        self.wait(&client, &submitted, timeout, ctx).await
    }

    /// Wait for `action` to be decided, sending progress notifications while waiting. When the
    /// client cancels the call, the pending action is cancelled too.
    async fn wait(
        &self,
        client: &Client,
        action: &Action,
        timeout: Duration,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Action, String> {
        let progress = ctx.meta.get_progress_token();
        let started = Instant::now();
        let wait = client.wait(&action.id, timeout);
        tokio::pin!(wait);
        let mut tick = tokio::time::interval_at(started + PROGRESS_EVERY, PROGRESS_EVERY);
        loop {
            tokio::select! {
                decided = &mut wait => {
                    return decided.map_err(|e| format!("lost track of action {}: {e}", action.id));
                }
                _ = ctx.ct.cancelled() => {
                    if let Err(e) = client.cancel(&action.id).await {
                        tracing::warn!(action = %action.id, error = %e, "cannot cancel the abandoned action");
                    }
                    return Err(format!("cancelled; action {} withdrawn", action.id));
                }
                _ = tick.tick() => {
                    if let Some(token) = &progress {
                        let waited = started.elapsed().as_secs_f64().round();
                        let note = ProgressNotificationParam::new(token.clone(), waited)
                            .with_total(timeout.as_secs_f64())
                            .with_message(format!("waiting for a human decision on {} ({waited} s)", action.name));
                        if let Err(e) = ctx.peer.notify_progress(note).await {
                            tracing::debug!(error = %e, "cannot send a progress notification");
                        }
                    }
                }
            }
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme is case-insensitive).
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let (scheme, token) = headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The answer to an `ask_human` action: the reviewer's `answer` argument, or their comment.
fn answer_of(a: &Action) -> Result<Answer, String> {
    let decision = a.decision.as_ref();
    let answered_by = decision.map(|d| d.by.clone()).unwrap_or_default();
    if a.status.is_approved() && decision.is_none() {
        return Err(format!(
            "the policy approved `{ASK_HUMAN}` without a human (rule {:?}); add a rule such as \
             when = 'action.name == \"{ASK_HUMAN}\"', then = \"review\" before it",
            a.rule.as_deref().unwrap_or("none")
        ));
    }
    let comment = decision.and_then(|d| d.comment.clone());
    let answer = if a.status.is_approved() {
        a.arguments
            .get("answer")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .filter(|s| !s.trim().is_empty())
            .or_else(|| comment.clone())
    } else {
        None
    };
    let answered = answer.is_some();
    let next = match (a.status, &answer) {
        (ActionStatus::Approved, Some(_)) => "A human answered: use the answer.".to_owned(),
        (ActionStatus::Approved, None) => {
            "The human acknowledged the question without an answer.".to_owned()
        }
        (ActionStatus::Pending, _) => format!(
            "No answer yet. Call check_status with action_id {} later; the answer is in `arguments.answer` or `comment`.",
            a.id
        ),
        (status, _) => format!("The question was {status}: proceed without an answer."),
    };
    Ok(Answer {
        action_id: a.id.clone(),
        status: a.status.as_str().to_owned(),
        answered,
        answer,
        answered_by,
        comment,
        next,
    })
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Gate {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("loopgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Loopgate puts a human in your loop. Before any consequential action (refunds, \
                 emails, deletions, payments, account changes), call request_approval and act only \
                 if it comes back approved, with the returned arguments. Use ask_human when you \
                 need information or authority you lack.",
            )
    }
}
