//! Console sessions: login and logout, the session cookie, and the extractors that prove a
//! signed-in user ([`ConsoleUser`]) and a CSRF-checked form ([`Posted`]).

use super::page::{self, is_local_path, PageError, PageResult};
use crate::extract::{Requirement, Reviewer};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use loopgate_domain::auth::Role;
use maud::html;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::marker::PhantomData;
use std::sync::OnceLock;
use std::time::Duration;

/// The session cookie: an opaque random token; the session itself lives in the store.
pub const COOKIE: &str = "loopgate_session";
/// A double-submit token for the login form, which has no session to carry one yet.
const LOGIN_COOKIE: &str = "loopgate_login";
/// How long a console session lasts: a working day, then sign in again.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// A signed-in user, as the store's session says.
#[derive(Clone)]
pub struct Session {
    pub workspace: String,
    pub username: String,
    pub role: Role,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
    /// The cookie's value, kept to end the session on logout. Never shown.
    token: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("workspace", &self.workspace)
            .field("username", &self.username)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// How this user appears in the audit log (the API's `reviewer:NAME` form).
    pub fn actor(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.username)
    }
    /// Who this session's limits count against.
    pub fn holder(&self) -> crate::limits::Holder {
        crate::limits::Holder::session(&self.token)
    }
}

/// Proof of a signed-in user whose role `R` allows (`ConsoleUser<Admin>` for admin pages).
pub struct ConsoleUser<R = Reviewer> {
    pub session: Session,
    _role: PhantomData<fn() -> R>,
}

impl<R> std::ops::Deref for ConsoleUser<R> {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Requests made by the page's script (fragments, the event stream, fetch calls) get a bare 401;
/// a person's navigation gets the login form.
fn is_background(parts: &Parts) -> bool {
    parts.uri.path().starts_with("/console/") || parts.headers.contains_key("x-csrf-token")
}

impl<R: Requirement> FromRequestParts<AppState> for ConsoleUser<R> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let not_signed_in = || {
            if is_background(parts) {
                PageError::Unauthorized
            } else {
                let next = if parts.method == Method::GET {
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_else(|| "/".to_owned())
                } else {
                    "/".to_owned()
                };
                PageError::SignIn { next }
            }
        };
        let Some(token) = cookie(&parts.headers, COOKIE) else {
            return Err(not_signed_in());
        };
        // A malformed cookie is simply not a session.
        if token.len() > 200 {
            return Err(not_signed_in());
        }
        let Some(record) = state.store.session(token).await? else {
            return Err(not_signed_in());
        };
        state
            .limits
            .check_rate(&crate::limits::Holder::session(token))
            .map_err(PageError::Limited)?;
        if !R::allows(record.role) {
            return Err(PageError::Forbidden(
                "This page is for admins. Ask an admin of your workspace if you need it.".into(),
            ));
        }
        Ok(ConsoleUser {
            session: Session {
                workspace: record.workspace,
                username: record.username,
                role: record.role,
                csrf: record.csrf_token,
                expires_at: record.expires_at,
                token: token.to_owned(),
            },
            _role: PhantomData,
        })
    }
}

/// A form posted by a signed-in user with the session's CSRF token (the `csrf` field, or the
/// `X-CSRF-Token` header of a fetch call). Without a matching token the request is refused with
/// 403 before any handler runs.
pub struct Posted<T, R = Reviewer> {
    pub user: ConsoleUser<R>,
    pub form: T,
}

impl<T: DeserializeOwned, R: Requirement> FromRequest<AppState> for Posted<T, R> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        let (mut parts, body) = req.into_parts();
        let user = ConsoleUser::<R>::from_request_parts(&mut parts, state).await?;
        let header_token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    PageError::TooLarge
                } else {
                    PageError::BadRequest("The form could not be read.".into())
                }
            })?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| PageError::BadRequest("The form could not be read.".into()))?;
        let field_token = pairs
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.clone());
        let given = header_token.or(field_token).unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), user.csrf.as_bytes()) {
            return Err(PageError::Forbidden(
                "This form's security token is missing or out of date. Reload the page and try again."
                    .into(),
            ));
        }
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| PageError::BadRequest(format!("The form could not be read: {e}.")))?;
        Ok(Posted { user, form })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A form with no fields but the CSRF token.
#[derive(Debug, Deserialize)]
pub struct Empty {}

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    flash: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    workspace: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
    csrf: Option<String>,
}

fn secure(state: &AppState) -> bool {
    state.config.public_url.starts_with("https://")
}

fn set_cookie(resp: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn cookie_attrs(state: &AppState, max_age: u64) -> String {
    let secure = if secure(state) { "; Secure" } else { "" };
    format!("; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

fn new_login_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct LoginView<'a> {
    workspace: &'a str,
    username: &'a str,
    next: Option<&'a str>,
    error: Option<&'a str>,
    notice: Option<&'static str>,
    token: &'a str,
}

fn login_view(v: LoginView<'_>) -> maud::Markup {
    let body = html! {
        section.login-card aria-labelledby="login-title" {
            h1 #login-title { "Sign in to Loopgate" }
            p.muted { "Review what your AI agents want to do, and step in when they need a human." }
            @if let Some(n) = v.notice { div.flash.flash-ok role="status" { (n) } }
            @if let Some(e) = v.error {
                div.flash.flash-error role="alert" data-testid="login-error" { (e) }
            }
            form method="post" action="/login" data-testid="login-form" {
                input type="hidden" name="csrf" value=(v.token);
                @if let Some(n) = v.next { input type="hidden" name="next" value=(n); }
                div.field {
                    label for="workspace" { "Workspace" }
                    input #workspace type="text" name="workspace" value=(v.workspace) autocomplete="organization" required maxlength="200" data-testid="login-workspace";
                }
                div.field {
                    label for="username" { "Username" }
                    input #username type="text" name="username" value=(v.username) autocomplete="username" required maxlength="200" autofocus[v.username.is_empty()] data-testid="login-username";
                }
                div.field {
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required maxlength="1024" autofocus[!v.username.is_empty()] data-testid="login-password";
                }
                button.btn.btn-primary.btn-block type="submit" data-testid="login-submit" { "Sign in" }
            }
        }
    };
    page::shell("Sign in", "login", None, page::Nav::None, body)
}

/// `GET /login`: the form, with a fresh double-submit token. Signed-in users go to the inbox.
pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> PageResult {
    let q: LoginQuery =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    if let Some(token) = cookie(&headers, COOKIE) {
        if token.len() <= 200 && state.store.session(token).await?.is_some() {
            return Ok(page::see_other("/"));
        }
    }
    let next = q.next.as_deref().filter(|n| is_local_path(n));
    // Have the decoy hash ready before the first sign-in needs it (argon2 takes a while).
    if DECOY_HASH.get().is_none() {
        tokio::task::spawn_blocking(|| {
            decoy_hash();
        });
    }
    let token = new_login_token();
    let notice = match q.flash.as_deref() {
        Some("signed-out") => Some("You are signed out."),
        _ => None,
    };
    let mut resp = page::render(login_view(LoginView {
        workspace: "default",
        username: "",
        next,
        error: None,
        notice,
        token: &token,
    }));
    set_cookie(
        &mut resp,
        format!("{LOGIN_COOKIE}={token}{}", cookie_attrs(&state, 3600)),
    );
    Ok(resp)
}

/// A hash to check passwords against when the user does not exist, so a login takes as long
/// for an unknown user as for a wrong password.
static DECOY_HASH: OnceLock<String> = OnceLock::new();

fn decoy_hash() -> &'static str {
    DECOY_HASH.get_or_init(|| {
        loopgate_store::secrets::hash_password("decoy password, never valid").unwrap_or_default()
    })
}

/// `POST /login`: check the password (argon2, off the async threads) and open a session.
/// A failure says only that the details did not match, never which part.
pub async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: LoginForm = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let next = form
        .next
        .as_deref()
        .filter(|n| is_local_path(n))
        .map(str::to_owned);
    let retry = |status: StatusCode, error: &str| {
        let token = new_login_token();
        let mut resp = page::render_status(
            status,
            login_view(LoginView {
                workspace: if form.workspace.is_empty() {
                    "default"
                } else {
                    &form.workspace
                },
                username: &form.username,
                next: next.as_deref(),
                error: Some(error),
                notice: None,
                token: &token,
            }),
        );
        set_cookie(
            &mut resp,
            format!("{LOGIN_COOKIE}={token}{}", cookie_attrs(&state, 3600)),
        );
        resp
    };
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    let given = form.csrf.as_deref().unwrap_or("");
    if !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return retry(
            StatusCode::FORBIDDEN,
            "The sign-in form expired. Please sign in again.",
        );
    }
    const MISMATCH: &str = "The workspace, username or password is not right.";
    let (workspace, username) = (form.workspace.trim(), form.username.trim());
    if workspace.is_empty()
        || username.is_empty()
        || form.password.is_empty()
        || workspace.len() > 200
        || username.len() > 200
        || form.password.len() > 1024
    {
        return retry(StatusCode::UNAUTHORIZED, MISMATCH);
    }
    let found = match state.store.find_user(workspace, username).await {
        Ok(f) => f,
        Err(e) => return PageError::from(e).into_response(),
    };
    let password = form.password.clone();
    let hash = found.as_ref().map(|(_, h)| h.clone());
    let verified = tokio::task::spawn_blocking(move || match hash {
        Some(h) => loopgate_store::secrets::verify_password(&password, &h),
        None => {
            let _ = loopgate_store::secrets::verify_password(&password, decoy_hash());
            false
        }
    })
    .await
    .unwrap_or(false);
    let user = match (found, verified) {
        (Some((user, _)), true) => user,
        _ => return retry(StatusCode::UNAUTHORIZED, MISMATCH),
    };
    let ttl_ms = SESSION_TTL.as_millis() as i64;
    let created = match state.store.create_session(&user, ttl_ms).await {
        Ok(s) => s,
        Err(e) => return PageError::from(e).into_response(),
    };
    let mut resp = page::see_other(next.as_deref().unwrap_or("/"));
    set_cookie(
        &mut resp,
        format!(
            "{COOKIE}={}{}",
            created.token,
            cookie_attrs(&state, SESSION_TTL.as_secs())
        ),
    );
    set_cookie(
        &mut resp,
        format!("{LOGIN_COOKIE}={}", cookie_attrs(&state, 0)),
    );
    resp
}

/// `POST /logout`: end the session in the store and drop the cookie.
pub async fn logout(State(state): State<AppState>, posted: Posted<Empty>) -> PageResult {
    state.store.end_session(&posted.user.session.token).await?;
    let mut resp = page::see_other("/login?flash=signed-out");
    set_cookie(&mut resp, format!("{COOKIE}={}", cookie_attrs(&state, 0)));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; loopgate_session=lg_abc; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("lg_abc"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
