//! The agent side of Loopgate's HTTP API, typed: submit a proposed action and wait for the human
//! decision, cancel it, mirror a conversation (open, post, escalate, close) and record end users'
//! feedback. Used by `loopgate mcp`, and by anything else in Rust that acts as an agent.
//!
//! ```no_run
//! # async fn demo() -> Result<(), loopgate_client::Error> {
//! use loopgate_client::{Client, NewAction};
//! use std::time::Duration;
//!
//! let client = Client::from_env()?; // LOOPGATE_URL, LOOPGATE_TOKEN
//! let args = serde_json::json!({"order": "A-1001", "amount": 900});
//! let action = client
//!     .submit(&NewAction::new("issue_refund", args.as_object().unwrap().clone()), None)
//!     .await?;
//! let decided = client.wait(&action.id, Duration::from_secs(600)).await?;
//! if decided.status.is_approved() {
//!     // Run the refund with `decided.arguments`: a reviewer may have edited them.
//! }
//! # Ok(()) }
//! ```
//!
//! Layout: [`Client`] holds the connection and the token; the request and response types
//! ([`NewAction`], [`Action`], [`Conversation`], ...) mirror the API's JSON and ignore fields they do
//! not know, so a newer server does not break an older client; [`Error`] carries the server's
//! `{"error": {code, message, field}}` when there is one.

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// Where a Loopgate runs unless told otherwise (`loopgate serve`'s default).
pub const DEFAULT_URL: &str = "http://127.0.0.1:7800";

/// The longest long-poll the server grants; longer waits are made of slices of this.
pub const MAX_POLL: Duration = Duration::from_secs(60);

/// A JSON object: the shape of `arguments` and `context`.
pub type JsonObject = Map<String, Value>;

/// Everything that can go wrong talking to Loopgate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the request and said why (its `{"error": {...}}` body).
    #[error("{}", api_message(*status, code, message, field.as_deref()))]
    Api {
        /// The HTTP status (400, 401, 403, 404, 409, 413, 422, 429, 503...).
        status: u16,
        /// Machine-readable: `invalid_field`, `unauthorized`, `not_found`, `conflict`...
        code: String,
        message: String,
        /// The offending field, as a JSON path (`arguments.amount`), a header or a parameter.
        field: Option<String>,
    },
    /// No answer: the server is down, unreachable, or too slow.
    #[error("cannot reach Loopgate at {url}: {cause}")]
    Transport { url: String, cause: String },
    /// An answer that is not what the API documents (a proxy's error page, say).
    #[error("unexpected answer from {url}: {message}")]
    Protocol { url: String, message: String },
    /// The client itself is misconfigured: a bad URL or token.
    #[error("{0}")]
    Config(String),
}

fn api_message(status: u16, code: &str, message: &str, field: Option<&str>) -> String {
    match field {
        Some(f) => format!("{message} (field {f}; {status} {code})"),
        None => format!("{message} ({status} {code})"),
    }
}

impl Error {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's error code (`not_found`, `conflict`, ...), when it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Worth retrying after a pause: the server was unreachable, overloaded or briefly unavailable.
    /// Resubmitting an action is only safe with an `Idempotency-Key`.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Api { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }
}

/// An action's status. Everything but `pending` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionStatus {
    /// Go ahead, with the action's (possibly edited) `arguments`.
    Approved,
    /// Waiting for a human.
    Pending,
    /// A human said no.
    Rejected,
    /// The policy (or a pause) forbids it.
    Blocked,
    /// Nobody decided in time and the policy's `on_timeout` did not approve.
    Expired,
    /// The agent withdrew it.
    Cancelled,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Approved => "approved",
            ActionStatus::Pending => "pending",
            ActionStatus::Rejected => "rejected",
            ActionStatus::Blocked => "blocked",
            ActionStatus::Expired => "expired",
            ActionStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        self != ActionStatus::Pending
    }

    pub fn is_approved(self) -> bool {
        self == ActionStatus::Approved
    }
}

impl fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A proposed action (a tool call) for the policy to route: `POST /v1/actions`.
#[derive(Debug, Clone, Serialize)]
pub struct NewAction {
    pub name: String,
    pub arguments: JsonObject,
    /// The agent's confidence, 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// What the policy and the reviewer should know: customer tier, channel, topic tags...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<JsonObject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
}

impl NewAction {
    pub fn new(name: impl Into<String>, arguments: JsonObject) -> NewAction {
        NewAction {
            name: name.into(),
            arguments,
            confidence: None,
            context: None,
            conversation_id: None,
        }
    }

    pub fn confidence(mut self, confidence: f64) -> NewAction {
        self.confidence = Some(confidence);
        self
    }

    pub fn context(mut self, context: JsonObject) -> NewAction {
        self.context = Some(context);
        self
    }

    pub fn conversation(mut self, conversation_id: impl Into<String>) -> NewAction {
        self.conversation_id = Some(conversation_id.into());
        self
    }
}

/// An action as the server reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Action {
    pub id: String,
    pub status: ActionStatus,
    pub name: String,
    /// The final arguments: a reviewer's edit replaces the proposed ones.
    #[serde(default)]
    pub arguments: JsonObject,
    /// What the agent proposed.
    #[serde(default)]
    pub proposed_arguments: Option<JsonObject>,
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub context: JsonObject,
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// The policy rule that routed it (`None` when no rule matched and it went to review).
    #[serde(default)]
    pub rule: Option<String>,
    /// Why the policy routed it so.
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub review_id: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub decided_at: Option<String>,
    /// How it was decided (on `GET`; absent in the answer to a submission).
    #[serde(default)]
    pub decision: Option<Decision>,
}

impl Action {
    /// Whether a reviewer changed the arguments.
    pub fn edited(&self) -> bool {
        self.proposed_arguments
            .as_ref()
            .is_some_and(|p| *p != self.arguments)
    }
}

/// How an action's final status came about.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    /// `approve`, `reject` or `edit` for a human decision; `timeout` when the policy's
    /// `on_timeout` decided; `cancel` when the agent withdrew it.
    pub verdict: String,
    /// The reviewers who decided, in order (`system` for a timeout).
    #[serde(default)]
    pub by: Vec<String>,
    /// The last reviewer's comment.
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub decided_at: Option<String>,
}

/// A conversation between an end user and the AI.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    /// `ai`, `waiting` (escalated, for a human to take), `human` (taken over) or `closed`.
    pub state: String,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub context: JsonObject,
    /// Who took it over, while `human`.
    #[serde(default)]
    pub assignee: Option<String>,
    #[serde(default)]
    pub turns: i64,
}

/// A conversation with its transcript.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConversationView {
    #[serde(flatten)]
    pub conversation: Conversation,
    #[serde(default)]
    pub messages: Vec<Message>,
}

/// Who speaks in a conversation. Agents post `user`, `ai` and `system`; reviewers `human`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Ai,
    Human,
    System,
}

/// One message of a conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub role: Role,
    /// What the end user sees (a reviewer's rewrite, when there was one).
    pub text: String,
    /// `delivered`, `held` (a draft awaiting review), `escalated` or `discarded`.
    pub status: String,
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub original_text: Option<String>,
    #[serde(default)]
    pub review_id: Option<String>,
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// An agent's request for a human: `POST /v1/conversations/{id}/escalate`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Escalation {
    /// Shown to reviewers and kept in the audit log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The queue of the escalation review (default `default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Higher first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// The SLA, e.g. `15m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// An end user's rating of an AI answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    Up,
    /// Opens a `flag` review.
    Down,
}

/// Recorded feedback; a thumbs-down carries the `review_id` of its flag review.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Feedback {
    pub id: String,
    pub message_id: String,
    pub rating: Rating,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub review_id: Option<String>,
}

/// A client for one agent key. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// The limit on a request that is not a long-poll.
    timeout: Duration,
}

impl fmt::Debug for Client {
    // The token stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// How long a request may take beyond the long-poll it asked for.
const SLACK: Duration = Duration::from_secs(15);

/// How long a request other than a long-poll may take, unless [`Client::with_timeout`] says
/// otherwise.
const TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:7800`), with an agent token.
    pub fn new(base_url: &str, token: &str) -> Result<Client, Error> {
        let base = Url::parse(base_url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                Error::Config(format!(
                    "{base_url:?} is not an http:// or https:// URL of a Loopgate server"
                ))
            })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::Config("the API token is empty".into()));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            Error::Config("the API token has characters a header cannot carry".into())
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("loopgate-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            timeout: TIMEOUT,
        })
    }

    /// The same client with another limit on how long a request may take (default 30 s), for
    /// an agent that would rather give up early and try again. Long-polls are not affected:
    /// [`Client::poll`] and [`Client::wait`] allow each request its wait plus 15 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// A client from the environment: `LOOPGATE_URL` (default [`DEFAULT_URL`]) and
    /// `LOOPGATE_TOKEN` (required).
    pub fn from_env() -> Result<Client, Error> {
        let url = std::env::var("LOOPGATE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let token = std::env::var("LOOPGATE_TOKEN").map_err(|_| {
            Error::Config(
                "set LOOPGATE_TOKEN to an agent key's token (loopgate keys create --role agent)"
                    .into(),
            )
        })?;
        Client::new(&url, &token)
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// Submit a proposed action; the policy routes it at once (`approved`, `blocked`, or
    /// `pending` with a review). With an `idempotency_key`, a retry returns the original action
    /// instead of creating a second one.
    pub async fn submit(
        &self,
        action: &NewAction,
        idempotency_key: Option<&str>,
    ) -> Result<Action, Error> {
        let mut req = self
            .request(Method::POST, &["v1", "actions"], None)
            .json(action);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        self.send(req).await
    }

    /// The action as it stands now.
    pub async fn action(&self, id: &str) -> Result<Action, Error> {
        self.poll(id, Duration::ZERO).await
    }

    /// One long-poll: returns as soon as the action is final, or after `wait` (at most
    /// [`MAX_POLL`]) with whatever status it has then.
    pub async fn poll(&self, id: &str, wait: Duration) -> Result<Action, Error> {
        self.send(self.poll_request(id, wait)).await
    }

    /// `GET /v1/actions/{id}?wait=...`, allowed the wait plus [`SLACK`] whatever the client's
    /// own timeout.
    fn poll_request(&self, id: &str, wait: Duration) -> reqwest::RequestBuilder {
        let wait = wait.min(MAX_POLL);
        let req = self.request(Method::GET, &["v1", "actions", id], Some(wait + SLACK));
        if wait.is_zero() {
            req
        } else {
            req.query(&[("wait", format!("{:.3}", wait.as_secs_f64()))])
        }
    }

    /// Wait up to `timeout` for a final status, long-polling in slices of at most [`MAX_POLL`]
    /// and riding out brief outages. Returns the action as it stands at the end: still `pending`
    /// when nobody decided in time.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Action, Error> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(250);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.poll(id, left.min(MAX_POLL)).await {
                Ok(a) if a.status.is_final() || left.is_zero() => return Ok(a),
                Ok(_) => backoff = Duration::from_millis(250),
                Err(e) if e.is_transient() && Instant::now() + backoff < deadline => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return self.action(id).await;
            }
        }
    }

    /// Withdraw a pending action (409 once it is final).
    pub async fn cancel(&self, id: &str) -> Result<Action, Error> {
        let req = self.request(Method::POST, &["v1", "actions", id, "cancel"], None);
        self.send(req).await
    }

    /// Open a conversation. With an `external_id` (your own id for it), opening it again returns
    /// the same conversation.
    pub async fn open_conversation(
        &self,
        external_id: Option<&str>,
        context: Option<JsonObject>,
    ) -> Result<Conversation, Error> {
        let mut body = JsonObject::new();
        if let Some(e) = external_id {
            body.insert("external_id".into(), e.into());
        }
        if let Some(c) = context {
            body.insert("context".into(), Value::Object(c));
        }
        let req = self
            .request(Method::POST, &["v1", "conversations"], None)
            .json(&body);
        self.send(req).await
    }

    /// The conversation's state and transcript.
    pub async fn conversation(&self, id: &str) -> Result<ConversationView, Error> {
        let req = self.request(Method::GET, &["v1", "conversations", id], None);
        self.send(req).await
    }

    /// Post a message. An `ai` message goes through the policy and comes back `delivered`,
    /// `held` (a draft for a human to approve or rewrite) or `escalated`; while a human has the
    /// conversation the AI gets a 409.
    pub async fn post_message(
        &self,
        conversation_id: &str,
        role: Role,
        text: &str,
        confidence: Option<f64>,
    ) -> Result<Message, Error> {
        let mut body = serde_json::json!({"role": role, "text": text});
        if let Some(c) = confidence {
            body["confidence"] = c.into();
        }
        let req = self
            .request(
                Method::POST,
                &["v1", "conversations", conversation_id, "messages"],
                None,
            )
            .json(&body);
        self.send(req).await
    }

    /// Ask for a human: the conversation goes to `waiting` with an escalation review.
    pub async fn escalate(
        &self,
        conversation_id: &str,
        escalation: &Escalation,
    ) -> Result<Conversation, Error> {
        let req = self
            .request(
                Method::POST,
                &["v1", "conversations", conversation_id, "escalate"],
                None,
            )
            .json(escalation);
        self.send(req).await
    }

    /// Close the conversation; its open drafts and escalations are cancelled.
    pub async fn close_conversation(
        &self,
        conversation_id: &str,
        reason: Option<&str>,
    ) -> Result<Conversation, Error> {
        let body = match reason {
            Some(r) => serde_json::json!({ "reason": r }),
            None => serde_json::json!({}),
        };
        let req = self
            .request(
                Method::POST,
                &["v1", "conversations", conversation_id, "close"],
                None,
            )
            .json(&body);
        self.send(req).await
    }

    /// Record an end user's rating of a delivered message; `Down` opens a `flag` review.
    pub async fn feedback(
        &self,
        message_id: &str,
        rating: Rating,
        comment: Option<&str>,
    ) -> Result<Feedback, Error> {
        let mut body = serde_json::json!({ "rating": rating });
        if let Some(c) = comment {
            body["comment"] = c.into();
        }
        let req = self
            .request(
                Method::POST,
                &["v1", "messages", message_id, "feedback"],
                None,
            )
            .json(&body);
        self.send(req).await
    }

    /// The URL of `segments` under the base, each segment escaped (an id cannot climb the path).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(
        &self,
        method: Method,
        segments: &[&str],
        timeout: Option<Duration>,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(segments))
            .timeout(timeout.unwrap_or(self.timeout))
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, Error> {
        let resp = req.send().await.map_err(|e| Error::Transport {
            url: e
                .url()
                .map(|u| u.as_str().to_owned())
                .unwrap_or_else(|| self.base.to_string()),
            cause: cause_chain(&e),
        })?;
        let status = resp.status();
        let url = resp.url().to_string();
        let bytes = resp.bytes().await.map_err(|e| Error::Transport {
            url: url.clone(),
            cause: cause_chain(&e),
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
                url,
                message: format!("{status} with a body that does not parse: {e}"),
            });
        }
        Err(api_error(status, &url, &bytes))
    }
}

/// The server's error body, or as much as a foreign body allows.
fn api_error(status: StatusCode, url: &str, body: &[u8]) -> Error {
    #[derive(Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        code: String,
        message: String,
        #[serde(default)]
        field: Option<String>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => Error::Api {
            status: status.as_u16(),
            code: b.error.code,
            message: b.error.message,
            field: b.error.field,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let snippet: String = text.chars().take(200).collect();
            Error::Api {
                status: status.as_u16(),
                code: status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_lowercase()
                    .replace(' ', "_"),
                message: if snippet.trim().is_empty() {
                    format!("{status} from {url}")
                } else {
                    format!("{status} from {url}: {}", snippet.trim())
                },
                field: None,
            }
        }
    }
}

/// An error and its causes on one line (reqwest's own message hides the interesting part).
fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_error_body_is_kept() {
        let e = api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "http://x/v1/actions",
            br#"{"error":{"code":"invalid_field","message":"must be from 0 to 1","field":"confidence"}}"#,
        );
        assert_eq!(e.status(), Some(422));
        assert_eq!(e.code(), Some("invalid_field"));
        assert!(matches!(&e, Error::Api { field: Some(f), .. } if f == "confidence"));
        assert_eq!(
            e.to_string(),
            "must be from 0 to 1 (field confidence; 422 invalid_field)"
        );
        assert!(!e.is_transient());
    }

    #[test]
    fn a_foreign_error_body_still_makes_an_error() {
        let e = api_error(
            StatusCode::BAD_GATEWAY,
            "http://x/",
            b"<html>bad gateway</html>",
        );
        assert_eq!(e.code(), Some("bad_gateway"));
        assert!(e.is_transient());
    }

    #[test]
    fn ids_are_escaped_into_one_path_segment() {
        let c = Client::new("http://127.0.0.1:7800/base/", "t").unwrap();
        assert_eq!(
            c.url(&["v1", "actions", "../reviews"]).as_str(),
            "http://127.0.0.1:7800/base/v1/actions/..%2Freviews"
        );
    }

    #[test]
    fn an_action_parses_with_unknown_fields_and_reports_edits() {
        let a: Action = serde_json::from_value(serde_json::json!({
            "id": "a1", "status": "approved", "name": "refund", "workspace": "default",
            "arguments": {"amount": 450}, "proposed_arguments": {"amount": 900},
            "decision": {"verdict": "edit", "by": ["bob"], "comment": "partial"},
            "something_new": true
        }))
        .unwrap();
        assert!(a.status.is_approved() && a.edited());
        assert_eq!(a.decision.unwrap().verdict, "edit");
    }

    #[test]
    fn the_request_timeout_is_configurable_and_long_polls_keep_theirs() {
        let built = |req: reqwest::RequestBuilder| req.build().unwrap();
        let c = Client::new("http://127.0.0.1:7800", "t").unwrap();
        let post = |c: &Client| built(c.request(Method::POST, &["v1", "actions"], None));
        assert_eq!(post(&c).timeout(), Some(&TIMEOUT));

        let c = c.with_timeout(Duration::from_secs(5));
        assert_eq!(post(&c).timeout(), Some(&Duration::from_secs(5)));
        let poll = built(c.poll_request("a1", Duration::from_secs(30)));
        assert_eq!(poll.url().query(), Some("wait=30.000"));
        assert_eq!(poll.timeout(), Some(&Duration::from_secs(45)));
        // Past the longest long-poll the server grants, the wait is cut to it.
        let poll = built(c.poll_request("a1", Duration::from_secs(600)));
        assert_eq!(poll.url().query(), Some("wait=60.000"));
        // Without a wait, a look at the action: no query, and still the long-poll's slack.
        let now = built(c.poll_request("a1", Duration::ZERO));
        assert_eq!((now.url().query(), now.timeout()), (None, Some(&SLACK)));
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(matches!(
            Client::new("localhost:7800", "t"),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Client::new("http://localhost:7800", " "),
            Err(Error::Config(_))
        ));
    }
}
