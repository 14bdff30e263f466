//! Console users, their sessions, and API key administration on SQLite.

use super::db::Conn;
use super::db::DbRow;
use super::store::{corrupt, ms_to_time, opt_time, parse_uuid};
use super::writer::Tx;
use crate::records::*;
use crate::{Result, StoreError};
use loopgate_domain::auth::{token_hash, Role};
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

fn role_of(row: &DbRow) -> Result<Role> {
    let role: String = row.try_get("role")?;
    Role::parse(&role).ok_or_else(|| corrupt("role", &role))
}

fn user_from_row(row: &DbRow) -> Result<UserRecord> {
    Ok(UserRecord {
        id: parse_uuid(row.try_get("id")?)?,
        workspace: row.try_get("workspace")?,
        username: row.try_get("username")?,
        role: role_of(row)?,
        created_at: ms_to_time(row.try_get("created_at")?),
    })
}

pub(crate) async fn find_user(
    c: &mut Conn,
    ws: &str,
    username: &str,
) -> Result<Option<(UserRecord, String)>> {
    let row = sqlx::query(
        "SELECT id, workspace, username, role, created_at, password_hash FROM users
         WHERE workspace = $1 AND username = $2",
    )
    .bind(ws)
    .bind(username)
    .fetch_optional(&mut *c)
    .await?;
    row.map(|r| Ok((user_from_row(&r)?, r.try_get("password_hash")?)))
        .transpose()
}

pub(crate) async fn list_users(c: &mut Conn, ws: &str) -> Result<Vec<UserRecord>> {
    let rows = sqlx::query(
        "SELECT id, workspace, username, role, created_at FROM users WHERE workspace = $1 ORDER BY username",
    )
    .bind(ws)
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(user_from_row).collect()
}

pub(crate) async fn create_session_in_tx(
    tx: &mut Tx,
    user: UserRecord,
    ttl_ms: i64,
) -> Result<NewSession> {
    let token = crate::secrets::new_token();
    let csrf = crate::secrets::new_token();
    let expires = tx.now_ms().saturating_add(ttl_ms);
    // Expired sessions are removed here rather than by a timer: logins are rare and cheap.
    sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(tx.now_ms())
        .execute(&mut tx.conn)
        .await?;
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, workspace, username, role, csrf_token, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(token_hash(&token))
    .bind(user.id.to_string())
    .bind(&user.workspace)
    .bind(&user.username)
    .bind(user.role.as_str())
    .bind(&csrf)
    .bind(tx.now_ms())
    .bind(expires)
    .execute(&mut tx.conn)
    .await?;
    tx.event(
        &user.workspace,
        &format!("{}:{}", user.role.as_str(), user.username),
        "session.started",
        &format!("user:{}", user.id),
        json!({"username": user.username}),
    )
    .await?;
    Ok(NewSession {
        token,
        session: SessionRecord {
            workspace: user.workspace,
            username: user.username,
            role: user.role,
            csrf_token: csrf,
            expires_at: ms_to_time(expires),
        },
    })
}

pub(crate) async fn session(
    c: &mut Conn,
    token: &str,
    now_ms: i64,
) -> Result<Option<SessionRecord>> {
    let row = sqlx::query(
        "SELECT workspace, username, role, csrf_token, expires_at FROM sessions
         WHERE token_hash = $1 AND expires_at > $2",
    )
    .bind(token_hash(token))
    .bind(now_ms)
    .fetch_optional(&mut *c)
    .await?;
    row.map(|r| {
        Ok(SessionRecord {
            workspace: r.try_get("workspace")?,
            username: r.try_get("username")?,
            role: role_of(&r)?,
            csrf_token: r.try_get("csrf_token")?,
            expires_at: ms_to_time(r.try_get("expires_at")?),
        })
    })
    .transpose()
}

pub(crate) async fn end_session_in_tx(tx: &mut Tx, token: String) -> Result<()> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(token_hash(&token))
        .execute(&mut tx.conn)
        .await?;
    Ok(())
}

pub(crate) async fn list_keys(c: &mut Conn, ws: &str) -> Result<Vec<KeyListing>> {
    let rows = sqlx::query(
        "SELECT id, workspace, name, role, created_at, revoked_at FROM api_keys
         WHERE workspace = $1 ORDER BY created_at",
    )
    .bind(ws)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(KeyListing {
                key: KeyRecord {
                    id: parse_uuid(r.try_get("id")?)?,
                    workspace: r.try_get("workspace")?,
                    name: r.try_get("name")?,
                    role: role_of(r)?,
                    created_at: ms_to_time(r.try_get("created_at")?),
                },
                revoked_at: opt_time(r.try_get("revoked_at")?),
            })
        })
        .collect()
}

pub(crate) async fn revoke_key_in_tx(
    tx: &mut Tx,
    ws: String,
    id: Uuid,
    actor: String,
) -> Result<()> {
    let changed = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1 WHERE workspace = $2 AND id = $3 AND revoked_at IS NULL",
    )
    .bind(tx.now_ms())
    .bind(&ws)
    .bind(id.to_string())
    .execute(&mut tx.conn)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(StoreError::NotFound("key"));
    }
    tx.event(&ws, &actor, "key.revoked", &format!("key:{id}"), json!({}))
        .await
}
