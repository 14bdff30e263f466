//! Admin endpoints for API keys and console users.

use super::parse_id;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Admin, ApiJson, Auth};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use loopgate_domain::auth::Role;
use loopgate_domain::types::Name;
use loopgate_store::{KeyListing, KeyRecord, UserRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    /// For agent keys, the agent's name as policies and reviewers see it.
    pub name: String,
    #[schema(value_type = String, example = "agent")]
    pub role: Role,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyRecord,
    /// Shown once: store it now.
    pub token: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyListing>,
}

#[utoipa::path(
    post, path = "/v1/keys", tag = "admin", request_body = NewKeyBody,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn create_key(
    State(state): State<AppState>,
    admin: Auth<Admin>,
    ApiJson(body): ApiJson<NewKeyBody>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let name = Name::parse(&body.name).map_err(|e| ApiError::invalid("name", e.to_string()))?;
    let created = state
        .store
        .create_key(&admin.workspace, name.as_str(), body.role)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: created.key,
            token: created.token,
        }),
    ))
}

#[utoipa::path(
    get, path = "/v1/keys", tag = "admin",
    responses((status = 200, description = "Keys of the workspace (never their tokens)", body = KeyList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    admin: Auth<Admin>,
) -> ApiResult<Json<KeyList>> {
    Ok(Json(KeyList {
        keys: state.store.list_keys(&admin.workspace).await?,
    }))
}

#[utoipa::path(
    delete, path = "/v1/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked: the token stops working at once"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    admin: Auth<Admin>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "id")?;
    state
        .store
        .revoke_key(&admin.workspace, id, &admin.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    pub username: String,
    /// `reviewer` or `admin`.
    #[schema(value_type = String, example = "reviewer")]
    pub role: Role,
    /// At least 8 characters; stored as an argon2id hash.
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserRecord>,
}

#[utoipa::path(
    post, path = "/v1/users", tag = "admin", request_body = NewUserBody,
    responses((status = 201, body = UserRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, description = "The username is taken", body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn create_user(
    State(state): State<AppState>,
    admin: Auth<Admin>,
    ApiJson(body): ApiJson<NewUserBody>,
) -> ApiResult<(StatusCode, Json<UserRecord>)> {
    let username =
        Name::parse(&body.username).map_err(|e| ApiError::invalid("username", e.to_string()))?;
    if body.role == Role::Agent {
        return Err(ApiError::invalid(
            "role",
            "users are reviewers or admins; agents use keys",
        ));
    }
    if !loopgate_domain::auth::password_acceptable(&body.password) {
        return Err(ApiError::invalid(
            "password",
            "must be 8 to 1024 characters",
        ));
    }
    let password = body.password;
    let hash =
        tokio::task::spawn_blocking(move || loopgate_store::secrets::hash_password(&password))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(ApiError::internal)?;
    let user = state
        .store
        .create_user(&admin.workspace, username.as_str(), body.role, &hash)
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[utoipa::path(
    get, path = "/v1/users", tag = "admin",
    responses((status = 200, body = UserList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_users(
    State(state): State<AppState>,
    admin: Auth<Admin>,
) -> ApiResult<Json<UserList>> {
    Ok(Json(UserList {
        users: state.store.list_users(&admin.workspace).await?,
    }))
}
