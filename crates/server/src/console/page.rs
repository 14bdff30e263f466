//! The page shell (landmarks, navigation, the signed-in user), console errors as pages, and the
//! small formatting helpers every page shares.

use super::assets;
use super::session::Session;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use loopgate_store::StoreError;
use maud::{html, Markup, DOCTYPE};

/// Which top-level section a page belongs to, to mark it in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Inbox,
    Conversations,
    Stats,
    Admin,
    None,
}

/// A whole page: `page` names it for the script (`body[data-page]`).
pub fn shell(
    title: &str,
    page: &str,
    user: Option<&Session>,
    active: Nav,
    content: Markup,
) -> Markup {
    let link = |href: &'static str, label: &'static str, nav: Nav, testid: &'static str| {
        html! {
            li { a href=(href) data-testid=(testid) aria-current=[(active == nav).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Loopgate" }
                link rel="icon" href=(FAVICON);
                link rel="stylesheet" href=(assets::url("console.css"));
                @if let Some(u) = user {
                    meta name="csrf-token" content=(u.csrf);
                }
                script src=(assets::url("console.js")) defer {}
            }
            body data-page=(page) {
                a.skip-link href="#main" { "Skip to content" }
                header.topbar {
                    a.brand href="/" aria-label="Loopgate, inbox" {
                        (logo())
                        span { "Loopgate" }
                    }
                    @if let Some(u) = user {
                        nav aria-label="Main" {
                            ul {
                                (link("/", "Inbox", Nav::Inbox, "nav-inbox"))
                                (link("/conversations", "Conversations", Nav::Conversations, "nav-conversations"))
                                (link("/stats", "Stats", Nav::Stats, "nav-stats"))
                                @if u.role.is_admin() {
                                    (link("/admin/policy", "Admin", Nav::Admin, "nav-admin"))
                                }
                            }
                        }
                        div.account {
                            span.who data-testid="current-user" title=(format!("Signed in until {}", u.expires_at.format("%Y-%m-%d %H:%M UTC"))) {
                                span.user-name { (u.username) }
                                span.user-meta { (u.role.as_str()) " · " (u.workspace) }
                            }
                            form method="post" action="/logout" {
                                (csrf_field(u))
                                button.btn.btn-quiet type="submit" data-testid="logout" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    (content)
                }
                div #live-status .visually-hidden role="status" aria-live="polite" data-testid="live-status" {}
            }
        }
    }
}

/// The hidden CSRF field every form of a signed-in page carries.
pub fn csrf_field(u: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(u.csrf); }
}

const FAVICON: &str = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'%3E%3Crect width='32' height='32' rx='8' fill='%233b5bdb'/%3E%3Cpath d='M9 16a7 7 0 1 1 7 7' stroke='white' stroke-width='3' fill='none' stroke-linecap='round'/%3E%3Ccircle cx='16' cy='23' r='2.2' fill='white'/%3E%3C/svg%3E";

fn logo() -> Markup {
    html! {
        svg.logo viewBox="0 0 32 32" width="24" height="24" aria-hidden="true" focusable="false" {
            rect width="32" height="32" rx="8" fill="currentColor" {}
            path d="M9 16a7 7 0 1 1 7 7" stroke="white" stroke-width="3" fill="none" stroke-linecap="round" {}
            circle cx="16" cy="23" r="2.2" fill="white" {}
        }
    }
}

pub fn render(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

pub fn render_status(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A 303 to `to`, the answer to a form that did its work.
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// A short notice after a redirect, chosen from a fixed list so no text is reflected from the URL.
pub fn flash_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "approved" => "Approved.",
        "approved-partial" => "Approved. It needs another reviewer's approval too.",
        "approved-partial-no-proposal" => {
            "Approved. It needs another reviewer's approval too; only the approval that completes \
             it can propose a standing rule."
        }
        "approved-no-proposal" => {
            "Approved, but the standing rule could not be proposed; the server log says why."
        }
        "proposal-approved" => "Rule approved: the policy has a new version with it, in force now.",
        "proposal-rejected" => "Proposal rejected. The policy is unchanged.",
        "thresholds-recomputed" => "Automatic thresholds recomputed from the evidence.",
        "rejected" => "Rejected.",
        "edited" => "Edited and approved.",
        "graded" => "Grade saved.",
        "released" => "Released back to the queue.",
        "taken-over" => "You have the conversation. The AI is paused until you hand it back.",
        "handed-back" => "Handed back to the AI.",
        "closed" => "Conversation closed.",
        "sent" => "Message sent.",
        "policy-saved" => "Policy saved.",
        "key-revoked" => "Key revoked. Its token stopped working.",
        "user-created" => "User created.",
        "webhook-deleted" => "Webhook deleted.",
        "webhook-created" => "Webhook added.",
        "signed-in" => "Signed in.",
        "queue-empty" => "Nothing is waiting. Well done.",
        _ => return None,
    })
}

pub fn flash(code: Option<&str>) -> Markup {
    match code.and_then(flash_text) {
        Some(text) => html! { div.flash.flash-ok role="status" data-testid="flash" { (text) } },
        None => html! {},
    }
}

pub fn error_banner(message: Option<&str>) -> Markup {
    match message {
        Some(m) => html! { div.flash.flash-error role="alert" data-testid="form-error" { (m) } },
        None => html! {},
    }
}

/// Why a console request failed, shown as a page (or a bare status for background requests).
#[derive(Debug)]
pub enum PageError {
    /// Not signed in (or the session expired) on a page: go to the login form, then come back.
    SignIn {
        next: String,
    },
    /// Not signed in on a background request (fragment, SSE, fetch).
    Unauthorized,
    Forbidden(String),
    NotFound(&'static str),
    BadRequest(String),
    TooLarge,
    Unavailable,
    Internal(String),
    /// Over a per-session limit ([`crate::limits`]): the API's 429 with `Retry-After`.
    Limited(crate::error::ApiError),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => PageError::NotFound(what),
            StoreError::Conflict(m) => PageError::BadRequest(m),
            StoreError::Invalid { field, message } => {
                PageError::BadRequest(format!("{field}: {message}"))
            }
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "console: the database is unavailable");
                PageError::Unavailable
            }
            StoreError::Internal(m) => PageError::Internal(m),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            PageError::SignIn { next } => {
                let to = if next == "/" || !is_local_path(&next) {
                    "/login".to_owned()
                } else {
                    format!("/login?next={}", urlencode(&next))
                };
                return see_other(&to);
            }
            PageError::Unauthorized => {
                let mut resp = (StatusCode::UNAUTHORIZED, "sign in first").into_response();
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                return resp;
            }
            PageError::Limited(e) => return e.into_response(),
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            PageError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "Not found",
                format!("There is no such {what} in your workspace."),
            ),
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "That did not work", m),
            PageError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                "The form is larger than the server accepts.".to_owned(),
            ),
            PageError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "The database is busy or unavailable; nothing was changed. Try again in a moment."
                    .to_owned(),
            ),
            PageError::Internal(m) => {
                tracing::error!(error = %m, "console request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The server could not do that; the details are in its log.".to_owned(),
                )
            }
        };
        let body = html! {
            section.error-page data-testid="error-page" {
                p.error-code { (status.as_u16()) }
                h1 { (title) }
                p data-testid="error-message" { (message) }
                p { a.btn href="/" { "Back to the inbox" } }
            }
        };
        render_status(status, shell(title, "error", None, Nav::None, body))
    }
}

pub type PageResult<T = Response> = Result<T, PageError>;

/// A path on this server (`/x`), never a scheme-relative or absolute URL: safe to redirect to.
pub fn is_local_path(p: &str) -> bool {
    p.starts_with('/') && !p.starts_with("//") && !p.starts_with("/\\") && !p.contains(['\r', '\n'])
}

pub fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// "3m", "2h 5m", "4d 3h": a compact duration for tables.
pub fn compact_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => {
            let m = (s % 3600) / 60;
            if m == 0 {
                format!("{}h", s / 3600)
            } else {
                format!("{}h {}m", s / 3600, m)
            }
        }
        _ => {
            let h = (s % 86_400) / 3600;
            if h == 0 {
                format!("{}d", s / 86_400)
            } else {
                format!("{}d {}h", s / 86_400, h)
            }
        }
    }
}

/// An age ("5m ago"), kept current by the script.
pub fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    let secs = (now - at).num_seconds();
    html! {
        time datetime=(at.to_rfc3339()) data-since=(at.to_rfc3339()) title=(at.format("%Y-%m-%d %H:%M:%S UTC").to_string()) {
            (compact_duration(secs)) " ago"
        }
    }
}

/// An SLA countdown ("12m left" / "5m overdue"), kept ticking by the script.
pub fn sla(due: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Markup {
    match due {
        None => html! { span.muted { "—" } },
        Some(due) => {
            let left = (due - now).num_seconds();
            html! {
                time.sla.sla-over[left < 0].sla-soon[(0..900).contains(&left)]
                    datetime=(due.to_rfc3339()) data-due=(due.to_rfc3339()) data-testid="sla"
                    title=(format!("Due {}", due.format("%Y-%m-%d %H:%M UTC"))) {
                    @if left < 0 { (compact_duration(-left)) " overdue" } @else { (compact_duration(left)) " left" }
                }
            }
        }
    }
}

/// A confidence as a small bar and a percentage; "—" when the agent gave none.
pub fn confidence(c: Option<f64>) -> Markup {
    match c {
        None => html! { span.muted title="No confidence given" { "—" } },
        Some(c) => {
            let pct = (c.clamp(0.0, 1.0) * 100.0).round();
            let level = if c < 0.5 {
                "low"
            } else if c < 0.8 {
                "mid"
            } else {
                "high"
            };
            html! {
                span.confidence data-level=(level) data-testid="confidence" {
                    svg.confidence-bar viewBox="0 0 40 6" width="40" height="6" aria-hidden="true" focusable="false" {
                        rect.track x="0" y="0" width="40" height="6" rx="3" {}
                        rect.fill x="0" y="0" width=(format!("{:.1}", pct * 0.4)) height="6" rx="3" {}
                    }
                    span { (pct) "%" }
                }
            }
        }
    }
}

pub fn datetime(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC").to_string()) } }
}

pub fn percent(rate: Option<f64>) -> String {
    match rate {
        Some(r) => format!("{:.1}%", r * 100.0),
        None => "—".to_owned(),
    }
}

/// Pretty JSON for display; never fails (the value came from JSON).
pub fn pretty_json(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// `text` cut to `max` characters with an ellipsis.
pub fn excerpt(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut s: String = one_line.chars().take(max).collect();
        s.push('…');
        s
    }
}

/// A keyboard key as shown in hints.
pub fn kbd(key: &str) -> Markup {
    html! { kbd { (key) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_only() {
        assert!(is_local_path("/reviews/1"));
        assert!(!is_local_path("//evil.example"));
        assert!(!is_local_path("/\\evil.example"));
        assert!(!is_local_path("https://evil.example"));
    }

    #[test]
    fn durations_are_compact() {
        assert_eq!(compact_duration(42), "42s");
        assert_eq!(compact_duration(600), "10m");
        assert_eq!(compact_duration(3600 * 2 + 300), "2h 5m");
        assert_eq!(compact_duration(86_400 * 3), "3d");
    }

    #[test]
    fn urlencode_encodes() {
        assert_eq!(urlencode("/reviews/a?b=c"), "%2Freviews%2Fa%3Fb%3Dc");
    }
}
