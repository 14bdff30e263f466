//! Admin pages (`/admin/*`, admins only): the policy editor (with the `threshold = "auto"`
//! rules' current values), API keys, users, webhooks and the audit log with its verification
//! state; the proposed standing rules are in [`super::proposals`]. Each handler takes `ConsoleUser<Admin>` (or
//! `Posted<_, Admin>`), so a reviewer cannot reach one.

use super::page::{self, Nav, PageError, PageResult};
use super::session::{ConsoleUser, Posted, Session};
use crate::extract::Admin;
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use loopgate_domain::auth::Role;
use loopgate_domain::policy::{Policy, PolicyError, Threshold};
use loopgate_domain::types::Name;
use loopgate_store::{NewWebhook, PolicyRecord, StoreError};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

const TABS: [(&str, &str, &str); 6] = [
    ("policy", "Policy", "/admin/policy"),
    ("proposals", "Proposed rules", "/admin/proposals"),
    ("keys", "API keys", "/admin/keys"),
    ("users", "Users", "/admin/users"),
    ("webhooks", "Webhooks", "/admin/webhooks"),
    ("audit", "Audit log", "/admin/audit"),
];

pub(super) fn admin_page(
    user: &Session,
    tab: &str,
    title: &str,
    status: StatusCode,
    flash: Option<&str>,
    error: Option<&str>,
    content: Markup,
) -> Response {
    let body = html! {
        div.page-head {
            div {
                h1 { (title) }
                p.muted { "Workspace " strong { (user.workspace) } }
            }
        }
        nav.tabs aria-label="Admin sections" {
            ul {
                @for (id, label, href) in TABS {
                    li { a href=(href) data-testid=(format!("admin-tab-{id}")) aria-current=[(id == tab).then_some("page")] { (label) } }
                }
            }
        }
        (page::flash(flash))
        (page::error_banner(error))
        (content)
    };
    page::render_status(
        status,
        page::shell(title, &format!("admin-{tab}"), Some(user), Nav::Admin, body),
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct FlashQuery {
    flash: Option<String>,
}

fn flash_query(query: Option<&str>) -> Option<String> {
    serde_urlencoded::from_str::<FlashQuery>(query.unwrap_or(""))
        .ok()
        .and_then(|q| q.flash)
}

/// `GET /admin`.
pub async fn index(_user: ConsoleUser<Admin>) -> Response {
    page::see_other("/admin/policy")
}

// ---------------------------------------------------------------------------------------------
// Policy

/// Largest policy text accepted from the editor.
const MAX_POLICY: usize = 256 * 1024;

enum PolicyOutcome {
    Nothing,
    Errors(Vec<PolicyError>),
    Valid(usize),
    Saved(i64, usize),
}

const STARTER_POLICY: &str = r#"# The first rule whose `when` holds decides. Nothing matching goes to review.

[[rule]]
name = "refunds need review"
applies_to = "action"
when = 'action.name == "issue_refund"'
then = "review"
queue = "finance"

[[rule]]
name = "everything else runs"
when = "true"
then = "approve"
"#;

/// What the policy page shows beside the editor: the policy in force with the server's current
/// values of its `"auto"` thresholds, and how many proposed rules wait for an admin.
struct InForce {
    policy: Option<Policy>,
    pending_proposals: usize,
}

async fn in_force(state: &AppState, user: &Session) -> PageResult<InForce> {
    // A stored policy that no longer parses (edited in the database by hand) must not lock the
    // admin out of the editor that fixes it: the list beside it is simply left empty.
    let (version, policy) =
        match crate::learning::current_policy(state.store.as_ref(), &user.workspace).await {
            Ok(found) => found,
            Err(StoreError::Internal(m)) => {
                tracing::warn!(error = %m, "console: the policy in force does not parse");
                (0, Policy::empty())
            }
            Err(e) => return Err(e.into()),
        };
    let pending_proposals = state
        .store
        .list_proposals(&user.workspace)
        .await?
        .iter()
        .filter(|p| p.status == "pending")
        .count();
    Ok(InForce {
        policy: (version > 0).then_some(policy),
        pending_proposals,
    })
}

fn threshold_text(t: &Threshold) -> Markup {
    match *t {
        Threshold::Fixed(v) => html! { " · confidence ≥ " (v) },
        Threshold::Auto {
            target_accuracy,
            min,
            max,
            current,
        } => html! {
            " · "
            span.auto-threshold data-testid="auto-threshold" {
                "auto: confidence ≥ " strong { (current) }
                " (target " (target_accuracy) ", within " (min) "–" (max) ")"
            }
        },
    }
}

fn render_policy(
    user: &Session,
    text: &str,
    current: Option<&PolicyRecord>,
    in_force: &InForce,
    outcome: PolicyOutcome,
    flash: Option<&str>,
    status: StatusCode,
) -> Response {
    let rules = in_force.policy.as_ref();
    let has_auto = rules.is_some_and(|p| p.has_auto_thresholds());
    let content = html! {
        @if in_force.pending_proposals > 0 {
            div.flash.flash-info role="status" data-testid="pending-proposals" {
                strong { (in_force.pending_proposals) }
                @if in_force.pending_proposals == 1 { " standing rule proposed by reviewers is" } @else { " standing rules proposed by reviewers are" }
                " waiting for a decision. "
                a href="/admin/proposals" { "Review the proposals" }
            }
        }
        @match &outcome {
            PolicyOutcome::Errors(errors) => {
                div.flash.flash-error role="alert" data-testid="policy-errors" {
                    p { strong { "Not saved. " } (errors.len()) @if errors.len() == 1 { " problem" } @else { " problems" } " to fix:" }
                    ol.policy-errors {
                        @for e in errors {
                            li data-testid="policy-error" {
                                a href="#policy-text" data-goto-line=(e.line) data-goto-column=(e.column) {
                                    "Line " (e.line) ", column " (e.column)
                                }
                                span.error-position.visually-hidden { " (" (e.line) ":" (e.column) ")" }
                                ": " (e.message)
                            }
                        }
                    }
                }
            }
            PolicyOutcome::Valid(n) => {
                div.flash.flash-ok role="status" data-testid="policy-valid" { "Valid: " (n) " rules. Not saved yet." }
            }
            PolicyOutcome::Saved(v, n) => {
                div.flash.flash-ok role="status" data-testid="policy-saved" { "Saved as version " (v) " with " (n) " rules. It is in force now." }
            }
            PolicyOutcome::Nothing => {}
        }
        div.admin-grid {
            section.card aria-labelledby="policy-editor-title" {
                div.card-head {
                    h2 #policy-editor-title { "Policy file" }
                    span.muted data-testid="policy-version" {
                        @match current {
                            Some(c) => { "In force: version " (c.version) " by " (c.created_by) ", " (page::age(c.created_at, Utc::now())) }
                            None => "No policy yet: everything goes to review.",
                        }
                    }
                }
                form.stack method="post" action="/admin/policy" data-testid="policy-form" {
                    (page::csrf_field(user))
                    label for="policy-text" { "TOML, checked before it is saved" }
                    textarea.code.policy-text #policy-text name="text" rows="26" spellcheck="false" autocomplete="off"
                        data-testid="policy-text" { (text) }
                    div.form-actions {
                        button.btn type="submit" name="intent" value="validate" data-testid="policy-validate" { "Check" }
                        button.btn.btn-primary type="submit" name="intent" value="save" data-testid="policy-save" { "Save as a new version" }
                    }
                }
            }
            aside {
                section.card {
                    h2 { "Rules in force" }
                    @match rules {
                        Some(p) if !p.rules().is_empty() => {
                            ol.rule-list data-testid="policy-rules" {
                                @for r in p.rules() {
                                    li {
                                        strong { (r.name) }
                                        div.muted {
                                            (r.applies_to.as_str()) " → " (r.then.as_str())
                                            " · queue " (r.queue)
                                            @if r.approvals > 1 { " · " (r.approvals) " approvals" }
                                            @if r.sample > 0.0 { " · sample " (format!("{:.0}%", r.sample * 100.0)) }
                                            @if let Some(t) = &r.threshold { (threshold_text(t)) }
                                        }
                                    }
                                }
                            }
                        }
                        _ => p.muted { "None." },
                    }
                    @if has_auto {
                        form.stack method="post" action="/admin/policy/thresholds/recompute" {
                            (page::csrf_field(user))
                            p.hint { "The server retunes " code { "threshold = \"auto\"" } " rules from the evidence on a schedule." }
                            button.btn.btn-small type="submit" data-testid="recompute-thresholds" { "Recompute now" }
                        }
                    }
                }
                section.card {
                    h2 { "Writing rules" }
                    p.muted { "Each " code { "when" } " is a CEL expression over:" }
                    ul.plain-list {
                        li { code { "action.name" } ", " code { "action.arguments" } }
                        li { code { "message.text" } }
                        li { code { "confidence" } " (−1 when absent)" }
                        li { code { "context" } ", " code { "agent" } }
                        li { code { "conversation.state" } ", " code { "conversation.turns" } }
                    }
                    p.muted { code { "then" } ": approve, review or block (actions); deliver, review or escalate (messages)." }
                }
            }
        }
    };
    admin_page(user, "policy", "Policy", status, flash, None, content)
}

/// `GET /admin/policy`.
pub async fn policy_page(
    State(state): State<AppState>,
    user: ConsoleUser<Admin>,
    RawQuery(query): RawQuery,
) -> PageResult {
    let current = state.store.current_policy(&user.workspace).await?;
    let text = current
        .as_ref()
        .map(|c| c.text.clone())
        .unwrap_or_else(|| STARTER_POLICY.to_owned());
    let flash = flash_query(query.as_deref());
    let in_force = in_force(&state, &user).await?;
    Ok(render_policy(
        &user,
        &text,
        current.as_ref(),
        &in_force,
        PolicyOutcome::Nothing,
        flash.as_deref(),
        StatusCode::OK,
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    text: String,
    intent: Option<String>,
}

/// `POST /admin/policy`: check (and, unless only checking, save as a new version).
pub async fn save_policy(
    State(state): State<AppState>,
    Posted { user, form }: Posted<PolicyForm, Admin>,
) -> PageResult {
    let current = state.store.current_policy(&user.workspace).await?;
    let before = in_force(&state, &user).await?;
    // Browsers send CRLF line ends from a textarea; the file is stored with LF.
    let text = form.text.replace("\r\n", "\n");
    if text.len() > MAX_POLICY {
        let outcome = PolicyOutcome::Errors(vec![PolicyError {
            line: 1,
            column: 1,
            message: format!("the policy is larger than {} KiB", MAX_POLICY / 1024),
        }]);
        return Ok(render_policy(
            &user,
            &text,
            current.as_ref(),
            &before,
            outcome,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
    }
    let policy = match Policy::parse(&text) {
        Ok(p) => p,
        Err(errors) => {
            return Ok(render_policy(
                &user,
                &text,
                current.as_ref(),
                &before,
                PolicyOutcome::Errors(errors),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            ))
        }
    };
    let rules = policy.rules().len();
    if form.intent.as_deref() == Some("validate") {
        return Ok(render_policy(
            &user,
            &text,
            current.as_ref(),
            &before,
            PolicyOutcome::Valid(rules),
            None,
            StatusCode::OK,
        ));
    }
    let saved = state
        .store
        .put_policy(&user.workspace, &text, &user.actor())
        .await?;
    state.policies.invalidate(&user.workspace);
    let after = in_force(&state, &user).await?;
    Ok(render_policy(
        &user,
        &saved.text,
        Some(&saved),
        &after,
        PolicyOutcome::Saved(saved.version, rules),
        None,
        StatusCode::OK,
    ))
}

/// `POST /admin/policy/thresholds/recompute`: retune the `"auto"` thresholds from the evidence
/// now, as the server's schedule does (each change is an audit event with its evidence).
pub async fn recompute_thresholds(
    State(state): State<AppState>,
    Posted { user, .. }: Posted<super::session::Empty, Admin>,
) -> PageResult {
    crate::learning::recompute_thresholds(state.store.as_ref(), &user.workspace).await?;
    state.policies.invalidate(&user.workspace);
    Ok(page::see_other("/admin/policy?flash=thresholds-recomputed"))
}

// ---------------------------------------------------------------------------------------------
// API keys

const ROLES: [(&str, &str); 3] = [
    ("agent", "Agent"),
    ("reviewer", "Reviewer"),
    ("admin", "Admin"),
];

async fn render_keys(
    state: &AppState,
    user: &Session,
    created: Option<(String, String)>,
    error: Option<&str>,
    flash: Option<&str>,
    status: StatusCode,
) -> PageResult {
    let keys = state.store.list_keys(&user.workspace).await?;
    let now = Utc::now();
    let content = html! {
        @if let Some((name, token)) = &created {
            div.card.secret-box role="status" data-testid="new-token-box" {
                h2 { "Key “" (name) "” created" }
                p { "Copy the token now. It is shown only this once; Loopgate keeps only its hash." }
                div.copy-row {
                    input.code #new-token type="text" readonly value=(token) aria-label="The new token" data-testid="new-token";
                    button.btn type="button" data-copy="#new-token" { "Copy" }
                }
            }
        }
        div.admin-grid {
            section.card aria-labelledby="keys-title" {
                h2 #keys-title { "Keys" }
                @if keys.is_empty() {
                    p.muted { "No keys yet." }
                } @else {
                    table.data.compact data-testid="keys-table" {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Created" } th scope="col" { "State" } th { span.visually-hidden { "Actions" } } } }
                        tbody {
                            @for k in &keys {
                                tr data-testid="key-row" data-key-name=(k.key.name) {
                                    td { strong { (k.key.name) } }
                                    td { span.badge.neutral { (k.key.role.as_str()) } }
                                    td { (page::age(k.key.created_at, now)) }
                                    td {
                                        @match k.revoked_at {
                                            Some(at) => span.badge.status data-status="revoked" { "revoked " (page::age(at, now)) },
                                            None => span.badge.status data-status="active" { "active" },
                                        }
                                    }
                                    td.actions {
                                        @if k.revoked_at.is_none() {
                                            form method="post" action=(format!("/admin/keys/{}/revoke", k.key.id))
                                                data-confirm=(format!("Revoke the key “{}”? Anything using it stops working at once.", k.key.name)) {
                                                (page::csrf_field(user))
                                                button.btn.btn-small.btn-danger type="submit" data-testid="revoke-key" { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section.card aria-labelledby="new-key-title" {
                h2 #new-key-title { "New key" }
                form.stack method="post" action="/admin/keys" data-testid="key-form" {
                    (page::csrf_field(user))
                    div.field {
                        label for="key-name" { "Name " span.muted { "(an agent key's name is the agent's name)" } }
                        input #key-name type="text" name="name" required maxlength="200" data-testid="key-name";
                    }
                    div.field {
                        label for="key-role" { "Role" }
                        select #key-role name="role" aria-describedby="key-role-hint" data-testid="key-role" {
                            @for (value, label) in ROLES { option value=(value) { (label) } }
                        }
                        p.hint #key-role-hint { "Agents submit actions and messages; reviewers decide through the API; admins may do everything." }
                    }
                    button.btn.btn-primary type="submit" data-testid="key-create" { "Create key" }
                }
            }
        }
    };
    Ok(admin_page(
        user, "keys", "API keys", status, flash, error, content,
    ))
}

/// `GET /admin/keys`.
pub async fn keys_page(
    State(state): State<AppState>,
    user: ConsoleUser<Admin>,
    RawQuery(query): RawQuery,
) -> PageResult {
    let flash = flash_query(query.as_deref());
    render_keys(&state, &user, None, None, flash.as_deref(), StatusCode::OK).await
}

#[derive(Debug, Default, Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
}

/// `POST /admin/keys`: create a key and show its token once.
pub async fn create_key(
    State(state): State<AppState>,
    Posted { user, form }: Posted<KeyForm, Admin>,
) -> PageResult {
    let name = match Name::parse(form.name.trim()) {
        Ok(n) => n,
        Err(e) => {
            let m = format!("The name is not usable: {e}.");
            return render_keys(
                &state,
                &user,
                None,
                Some(&m),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let Some(role) = Role::parse(form.role.trim()) else {
        return render_keys(
            &state,
            &user,
            None,
            Some("Choose a role: agent, reviewer or admin."),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    match state
        .store
        .create_key(&user.workspace, name.as_str(), role)
        .await
    {
        Ok(created) => {
            render_keys(
                &state,
                &user,
                Some((created.key.name, created.token)),
                None,
                None,
                StatusCode::CREATED,
            )
            .await
        }
        Err(StoreError::Conflict(m)) | Err(StoreError::Invalid { message: m, .. }) => {
            render_keys(&state, &user, None, Some(&m), None, StatusCode::CONFLICT).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /admin/keys/{id}/revoke`.
pub async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, .. }: Posted<super::session::Empty, Admin>,
) -> PageResult {
    let id = Uuid::parse_str(&id).map_err(|_| PageError::NotFound("key"))?;
    state
        .store
        .revoke_key(&user.workspace, id, &user.actor())
        .await?;
    Ok(page::see_other("/admin/keys?flash=key-revoked"))
}

// ---------------------------------------------------------------------------------------------
// Users

async fn render_users(
    state: &AppState,
    user: &Session,
    echo: Option<&UserForm>,
    error: Option<&str>,
    flash: Option<&str>,
    status: StatusCode,
) -> PageResult {
    let users = state.store.list_users(&user.workspace).await?;
    let now = Utc::now();
    let content = html! {
        div.admin-grid {
            section.card aria-labelledby="users-title" {
                h2 #users-title { "Console users" }
                table.data.compact data-testid="users-table" {
                    thead { tr { th scope="col" { "Username" } th scope="col" { "Role" } th scope="col" { "Created" } } }
                    tbody {
                        @for u in &users {
                            tr data-testid="user-row" {
                                td { strong { (u.username) } @if u.username == user.username { " " span.muted { "(you)" } } }
                                td { span.badge.neutral { (u.role.as_str()) } }
                                td { (page::age(u.created_at, now)) }
                            }
                        }
                    }
                }
            }
            section.card aria-labelledby="new-user-title" {
                h2 #new-user-title { "New user" }
                form.stack method="post" action="/admin/users" data-testid="user-form" {
                    (page::csrf_field(user))
                    div.field {
                        label for="user-name" { "Username" }
                        input #user-name type="text" name="username" required maxlength="200" autocomplete="off"
                            value=[echo.map(|e| e.username.as_str())] data-testid="user-name";
                    }
                    div.field {
                        label for="user-role" { "Role" }
                        select #user-role name="role" data-testid="user-role" {
                            option value="reviewer" { "Reviewer" }
                            option value="admin" selected[echo.is_some_and(|e| e.role == "admin")] { "Admin" }
                        }
                    }
                    div.field {
                        label for="user-password" { "Password " span.muted { "(8 characters or more)" } }
                        input #user-password type="password" name="password" required minlength="8" maxlength="1024" autocomplete="new-password" data-testid="user-password";
                    }
                    button.btn.btn-primary type="submit" data-testid="user-create" { "Create user" }
                }
            }
        }
    };
    Ok(admin_page(
        user, "users", "Users", status, flash, error, content,
    ))
}

/// `GET /admin/users`.
pub async fn users_page(
    State(state): State<AppState>,
    user: ConsoleUser<Admin>,
    RawQuery(query): RawQuery,
) -> PageResult {
    let flash = flash_query(query.as_deref());
    render_users(&state, &user, None, None, flash.as_deref(), StatusCode::OK).await
}

#[derive(Debug, Default, Deserialize)]
pub struct UserForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

/// `POST /admin/users`.
pub async fn create_user(
    State(state): State<AppState>,
    Posted { user, form }: Posted<UserForm, Admin>,
) -> PageResult {
    let problem = match add_user(&state, &user, &form).await? {
        None => return Ok(page::see_other("/admin/users?flash=user-created")),
        Some(m) => m,
    };
    render_users(
        &state,
        &user,
        Some(&form),
        Some(&problem),
        None,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

/// Create the user; `Some(reason)` when the form cannot be accepted.
async fn add_user(state: &AppState, user: &Session, form: &UserForm) -> PageResult<Option<String>> {
    let username = match Name::parse(form.username.trim()) {
        Ok(n) => n,
        Err(e) => return Ok(Some(format!("The username is not usable: {e}."))),
    };
    let role = match Role::parse(form.role.trim()) {
        Some(r @ (Role::Reviewer | Role::Admin)) => r,
        _ => return Ok(Some("Choose a role: reviewer or admin.".into())),
    };
    if !loopgate_domain::auth::password_acceptable(&form.password) {
        return Ok(Some("The password must be 8 to 1024 characters.".into()));
    }
    let password = form.password.clone();
    let hash =
        tokio::task::spawn_blocking(move || loopgate_store::secrets::hash_password(&password))
            .await
            .map_err(|e| PageError::Internal(e.to_string()))?
            .map_err(PageError::Internal)?;
    match state
        .store
        .create_user(&user.workspace, username.as_str(), role, &hash)
        .await
    {
        Ok(_) => Ok(None),
        Err(StoreError::Conflict(_)) => Ok(Some(format!("The username “{username}” is taken."))),
        Err(StoreError::Invalid { message, .. }) => Ok(Some(message)),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Webhooks

async fn render_webhooks(
    state: &AppState,
    user: &Session,
    created_secret: Option<String>,
    error: Option<&str>,
    flash: Option<&str>,
    status: StatusCode,
) -> PageResult {
    let hooks = state.store.list_webhooks(&user.workspace).await?;
    let deliveries = futures::future::join_all(
        hooks
            .iter()
            .map(|h| state.store.deliveries(&user.workspace, h.id, 5)),
    )
    .await;
    let now = Utc::now();
    let content = html! {
        @if let Some(secret) = &created_secret {
            div.card.secret-box role="status" data-testid="new-secret-box" {
                h2 { "Webhook created" }
                p { "Its signing secret, shown only this once. Verify the " code { "webhook-signature" } " header with it." }
                div.copy-row {
                    input.code #new-secret type="text" readonly value=(secret) aria-label="The signing secret" data-testid="new-secret";
                    button.btn type="button" data-copy="#new-secret" { "Copy" }
                }
            }
        }
        div.admin-grid {
            section.card aria-labelledby="hooks-title" {
                h2 #hooks-title { "Endpoints" }
                @if hooks.is_empty() { p.muted { "No webhooks yet." } }
                @for (h, ds) in hooks.iter().zip(deliveries.iter()) {
                    article.webhook data-testid="webhook" {
                        div.webhook-head {
                            div {
                                code.webhook-url { (h.url) }
                                div.muted {
                                    (h.format) " · " (h.events.join(", "))
                                    " · " span.badge.status data-status=(h.status) { (h.status) }
                                    @if let Some(r) = &h.disabled_reason { " · " (r) }
                                }
                            }
                            form method="post" action=(format!("/admin/webhooks/{}/delete", h.id))
                                data-confirm="Delete this webhook? Pending deliveries to it are dropped." {
                                (page::csrf_field(user))
                                button.btn.btn-small.btn-danger type="submit" data-testid="delete-webhook" { "Delete" }
                            }
                        }
                        @match ds {
                            Ok(ds) if !ds.is_empty() => {
                                table.data.compact.deliveries {
                                    caption.visually-hidden { "Recent deliveries" }
                                    thead { tr { th scope="col" { "Event" } th scope="col" { "State" } th scope="col" { "Attempts" } th scope="col" { "Last answer" } th scope="col" { "When" } } }
                                    tbody {
                                        @for d in ds {
                                            tr {
                                                td { code { (d.event_type) } " #" (d.event_seq) }
                                                td { span.badge.status data-status=(d.status) { (d.status) } }
                                                td.num { (d.attempts) }
                                                td {
                                                    @if let Some(s) = d.last_status { (s) " " }
                                                    @if let Some(e) = &d.last_error { span.muted { (page::excerpt(e, 60)) } }
                                                }
                                                td { (page::age(d.created_at, now)) }
                                            }
                                        }
                                    }
                                }
                            }
                            Ok(_) => p.muted { "No deliveries yet." },
                            Err(_) => p.muted { "The delivery log could not be read." },
                        }
                    }
                }
            }
            section.card aria-labelledby="new-hook-title" {
                h2 #new-hook-title { "New webhook" }
                form.stack method="post" action="/admin/webhooks" data-testid="webhook-form" {
                    (page::csrf_field(user))
                    div.field {
                        label for="hook-url" { "URL" }
                        input #hook-url type="url" name="url" required maxlength="2000" placeholder="https://example.com/hooks/loopgate" data-testid="webhook-url";
                    }
                    div.field {
                        label for="hook-events" { "Events " span.muted { "(comma-separated: review.created, review.*, or *)" } }
                        input #hook-events type="text" name="events" value="*" required maxlength="2000" data-testid="webhook-events";
                    }
                    div.field {
                        label for="hook-format" { "Format" }
                        select #hook-format name="format" {
                            option value="standard" { "Standard Webhooks (signed JSON)" }
                            option value="slack" { "Slack incoming webhook" }
                        }
                    }
                    div.field {
                        label for="hook-secret" { "Secret " span.muted { "(optional: whsec_…; one is made if empty)" } }
                        input #hook-secret type="text" name="secret" maxlength="200" autocomplete="off";
                    }
                    button.btn.btn-primary type="submit" data-testid="webhook-create" { "Add webhook" }
                }
            }
        }
    };
    Ok(admin_page(
        user, "webhooks", "Webhooks", status, flash, error, content,
    ))
}

/// `GET /admin/webhooks`.
pub async fn webhooks_page(
    State(state): State<AppState>,
    user: ConsoleUser<Admin>,
    RawQuery(query): RawQuery,
) -> PageResult {
    let flash = flash_query(query.as_deref());
    render_webhooks(&state, &user, None, None, flash.as_deref(), StatusCode::OK).await
}

#[derive(Debug, Default, Deserialize)]
pub struct WebhookForm {
    #[serde(default)]
    url: String,
    #[serde(default)]
    events: String,
    format: Option<String>,
    secret: Option<String>,
}

/// The form as a new webhook, checked with the same rules as `POST /v1/webhooks`; the secret
/// says whether it was generated (and must be shown once).
fn new_webhook(form: &WebhookForm, user: &Session) -> Result<(NewWebhook, bool), String> {
    let events: Vec<String> = form
        .events
        .split(',')
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    crate::http::webhooks::new_webhook(
        &user.workspace,
        &user.actor(),
        &form.url,
        form.secret.as_deref(),
        events,
        form.format.as_deref(),
    )
    .map_err(|e| match e.field {
        Some(field) => format!("{field}: {}", e.message),
        None => e.message,
    })
}

/// `POST /admin/webhooks`.
pub async fn create_webhook(
    State(state): State<AppState>,
    Posted { user, form }: Posted<WebhookForm, Admin>,
) -> PageResult {
    let (new, generated) = match new_webhook(&form, &user) {
        Ok(n) => n,
        Err(m) => {
            return render_webhooks(
                &state,
                &user,
                None,
                Some(&m),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    };
    let secret = new.secret.clone();
    match state.store.create_webhook(new).await {
        Ok(_) => {
            render_webhooks(
                &state,
                &user,
                generated.then_some(secret),
                None,
                (!generated).then_some("webhook-created"),
                StatusCode::CREATED,
            )
            .await
        }
        Err(StoreError::Invalid { message, .. }) | Err(StoreError::Conflict(message)) => {
            render_webhooks(
                &state,
                &user,
                None,
                Some(&message),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /admin/webhooks/{id}/delete`.
pub async fn delete_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, .. }: Posted<super::session::Empty, Admin>,
) -> PageResult {
    let id = Uuid::parse_str(&id).map_err(|_| PageError::NotFound("webhook"))?;
    state
        .store
        .delete_webhook(&user.workspace, id, &user.actor())
        .await?;
    Ok(page::see_other("/admin/webhooks?flash=webhook-deleted"))
}

// ---------------------------------------------------------------------------------------------
// Audit log

const AUDIT_PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    after: Option<String>,
}

/// `GET /admin/audit`: the newest events (or the page after `after`) and whether the chain holds.
pub async fn audit_page(
    State(state): State<AppState>,
    user: ConsoleUser<Admin>,
    RawQuery(query): RawQuery,
) -> PageResult {
    let q: AuditQuery =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let verdict = state.store.verify_audit(&user.workspace).await?;
    let head = match &verdict {
        Ok(n) => i64::try_from(*n).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    let requested = q
        .after
        .as_deref()
        .and_then(|a| a.trim().parse::<i64>().ok());
    let after = requested
        .filter(|a| *a >= 0)
        .unwrap_or((head - AUDIT_PAGE).max(0));
    let events = state
        .store
        .audit_events(&user.workspace, after, AUDIT_PAGE)
        .await?;
    let content = html! {
        @match &verdict {
            Ok(n) => {
                div.card.verify.verify-ok data-testid="audit-verify" data-ok="true" {
                    h2 { "Chain intact" }
                    p { "All " (n) " events verify: each one's hash covers the one before it, up to the recorded head." }
                }
            }
            Err(b) => {
                div.card.verify.verify-bad role="alert" data-testid="audit-verify" data-ok="false" {
                    h2 { "Chain broken at event " (b.seq) }
                    p { (b.problem) }
                    p.muted { "The log was changed outside Loopgate. Events from this seq on cannot be trusted." }
                }
            }
        }
        section.card aria-labelledby="events-title" {
            div.card-head {
                h2 #events-title { "Events " (after + 1) "–" (after + events.len() as i64) }
                div.pager {
                    @if after > 0 {
                        a.btn.btn-small href=(format!("/admin/audit?after={}", (after - AUDIT_PAGE).max(0))) { "← Older" }
                    }
                    @if events.len() as i64 == AUDIT_PAGE {
                        a.btn.btn-small href=(format!("/admin/audit?after={}", after + AUDIT_PAGE)) { "Newer →" }
                    }
                }
            }
            @if events.is_empty() {
                p.muted { "No events here." }
            } @else {
                table.data.compact.audit data-testid="audit-table" {
                    thead { tr {
                        th scope="col" { "Seq" } th scope="col" { "When" } th scope="col" { "Actor" }
                        th scope="col" { "Event" } th scope="col" { "Subject" } th scope="col" { "Data" } th scope="col" { "Hash" }
                    } }
                    tbody {
                        @for e in events.iter().rev() {
                            @let data = e.data.to_string();
                            tr data-testid="audit-row" {
                                td.num { (e.seq) }
                                td.nowrap title=(e.at) { (e.at.get(..19).unwrap_or(&e.at).replace('T', " ")) }
                                td { (e.actor) }
                                td { code { (e.event_type) } }
                                td.subject-cell title=(e.subject) { (page::excerpt(&e.subject, 28)) }
                                td.data-cell title=(data) { (page::excerpt(&data, 70)) }
                                td { code.hash title=(e.hash) { (e.hash.get(..10).unwrap_or(&e.hash)) "…" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(admin_page(
        &user,
        "audit",
        "Audit log",
        StatusCode::OK,
        None,
        None,
        content,
    ))
}
