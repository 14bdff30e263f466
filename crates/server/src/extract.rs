//! Extractors: JSON bodies and query strings that fail with our error shape, and callers whose
//! role is proven by their type (`Auth<Reviewer>` can only exist for a reviewer or an admin).

use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use loopgate_domain::auth::Role;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;

/// A JSON body. Malformed JSON is a 400; a well-formed body with a wrong or missing field is a
/// 422 naming the field by its path (`arguments`, `confidence`); an oversized body is a 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the server accepts",
        )
        .field("body")
    } else {
        ApiError::bad_request("body", e.body_text())
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request("body", "a JSON body is required"));
    }
    // Syntax first, so a truncated body is not reported as a missing field.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
        .field("body"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde names a missing field only in the message: lift it into `field`.
        let field = if path == "." || path.is_empty() {
            missing_field(&inner).unwrap_or_else(|| "body".to_owned())
        } else {
            path
        };
        let message = strip_position(&inner);
        ApiError::invalid(field, message)
    })
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// serde_json appends " at line 1 column 57"; the field path says more to a client.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The authenticated caller: a workspace, a name (the agent's or reviewer's), a role.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's id: what per-key limits count against.
    pub key_id: uuid::Uuid,
    pub workspace: String,
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// Who this caller's limits count against.
    pub fn holder(&self) -> crate::limits::Holder {
        crate::limits::Holder::Key(self.key_id)
    }
    /// How this caller appears in the audit log.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.name)
    }
}

/// A role requirement, checked once in the extractor.
pub trait Requirement {
    const WHAT: &'static str;
    fn allows(role: Role) -> bool;
}

pub struct AgentOnly;
impl Requirement for AgentOnly {
    const WHAT: &'static str = "an agent key";
    fn allows(role: Role) -> bool {
        role == Role::Agent
    }
}
pub struct Reviewer;
impl Requirement for Reviewer {
    const WHAT: &'static str = "a reviewer or admin key";
    fn allows(role: Role) -> bool {
        role.can_review()
    }
}
pub struct Admin;
impl Requirement for Admin {
    const WHAT: &'static str = "an admin key";
    fn allows(role: Role) -> bool {
        role.is_admin()
    }
}
pub struct AnyRole;
impl Requirement for AnyRole {
    const WHAT: &'static str = "an API key";
    fn allows(_: Role) -> bool {
        true
    }
}

/// Proof that the request carries a valid token of a role `R` allows.
pub struct Auth<R> {
    pub caller: Caller,
    _role: PhantomData<R>,
}

impl<R> std::ops::Deref for Auth<R> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl<R: Requirement> FromRequestParts<AppState> for Auth<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer TOKEN header"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            // The scheme name is case-insensitive (RFC 7235 section 2.1).
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be Bearer TOKEN")
            })?;
        let key = state
            .store
            .authenticate(token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
        // Every authenticated request counts, refused ones included.
        state
            .limits
            .check_rate(&crate::limits::Holder::Key(key.id))?;
        if !R::allows(key.role) {
            return Err(ApiError::forbidden(format!(
                "this needs {}; the token is a {} key",
                R::WHAT,
                key.role.as_str()
            )));
        }
        Ok(Auth {
            caller: Caller {
                key_id: key.id,
                workspace: key.workspace,
                name: key.name,
                role: key.role,
            },
            _role: PhantomData,
        })
    }
}
