//! The reviewer web console: server-rendered pages over the same [`Store`](loopgate_store::Store)
//! as the API, for the people who work the queues all day.
//!
//! ## Why it is built this way
//!
//! - **Server-rendered HTML with `maud`.** Templates are Rust expressions, checked by the compiler
//!   with the rest of the crate: a renamed record field breaks the build, not a page at run time,
//!   and there are no template files to ship or find. Every page works as plain HTML forms.
//! - **Small hand-written JavaScript, no framework, no build step.** `static/console.js` adds the
//!   live parts (SSE), keyboard shortcuts, countdowns and the JSON editor's validation. Live
//!   updates use SSE as an *invalidation signal*: on an event the page re-fetches a fragment the
//!   server renders with the same functions as the full page, so there is one renderer, not two.
//! - **Assets embedded with `include_str!`** and served from `/static/...` with a content hash in
//!   the URL and a year-long immutable cache: one binary, no CDN, works offline.
//! - **Cookie sessions, not API keys, in the browser**: `loopgate_session` (HttpOnly,
//!   SameSite=Lax, Secure behind https) names a server-side session with an expiry. Every POST
//!   carries the session's CSRF token (a hidden `csrf` field, or `X-CSRF-Token` on fetch calls);
//!   [`session::Posted`] cannot be built without it, so no handler can forget the check.
//! - **Authorization in the types**, as in the API: [`session::ConsoleUser`] proves a signed-in
//!   reviewer, `ConsoleUser<Admin>` an admin. Every store call takes the session's workspace.
//!
//! Layout: [`session`] (login, cookies, CSRF, extractors), [`page`] (the shell, error pages,
//! formatting), [`inbox`], [`review`], [`conversations`], [`stats`], [`admin`], [`proposals`]
//! (standing rules proposed by "approve and don't ask again"), [`events`] (the session's SSE
//! stream), [`assets`] (CSS and JS).
//!
//! **Architecture Invariant:** the console reaches data only through the `Store` trait, with the
//! workspace taken from the session, never from the request.

mod admin;
mod assets;
mod conversations;
mod events;
mod inbox;
mod page;
mod proposals;
mod review;
mod session;
mod stats;

use crate::AppState;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

/// The console's routes, mounted at `/` beside the API.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(inbox::page))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/console/events", get(events::stream))
        .route("/console/inbox/rows", get(inbox::rows))
        .route("/reviews/next", post(review::next))
        .route("/reviews/{id}", get(review::page))
        .route("/reviews/{id}/decision", post(review::decide))
        .route("/reviews/{id}/release", post(review::release))
        .route("/conversations", get(conversations::list))
        .route("/console/conversations/rows", get(conversations::rows))
        .route("/conversations/{id}", get(conversations::page))
        .route(
            "/console/conversations/{id}/transcript",
            get(conversations::transcript_live),
        )
        .route("/conversations/{id}/messages", post(conversations::reply))
        .route(
            "/conversations/{id}/takeover",
            post(conversations::takeover),
        )
        .route(
            "/conversations/{id}/handback",
            post(conversations::handback),
        )
        .route("/conversations/{id}/close", post(conversations::close))
        .route("/stats", get(stats::page))
        .route("/admin", get(admin::index))
        .route(
            "/admin/policy",
            get(admin::policy_page).post(admin::save_policy),
        )
        .route(
            "/admin/policy/thresholds/recompute",
            post(admin::recompute_thresholds),
        )
        .route("/admin/proposals", get(proposals::page))
        .route("/admin/proposals/{id}/approve", post(proposals::approve))
        .route("/admin/proposals/{id}/reject", post(proposals::reject))
        .route("/admin/keys", get(admin::keys_page).post(admin::create_key))
        .route("/admin/keys/{id}/revoke", post(admin::revoke_key))
        .route(
            "/admin/users",
            get(admin::users_page).post(admin::create_user),
        )
        .route(
            "/admin/webhooks",
            get(admin::webhooks_page).post(admin::create_webhook),
        )
        .route("/admin/webhooks/{id}/delete", post(admin::delete_webhook))
        .route("/admin/audit", get(admin::audit_page))
        .route("/static/{file}", get(assets::serve))
        .layer(axum::middleware::map_response(security_headers))
}

/// Headers every console response carries. The content security policy allows only this
/// server's own scripts and styles (no inline script, no inline style), so injected markup
/// cannot run code even if escaping ever failed.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Pages carry CSRF tokens and one-time secrets: never stored by caches.
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}
