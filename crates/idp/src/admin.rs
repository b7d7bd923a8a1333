//! The admin REST API (`/admin/...`), guarded by the admin credential
//! (`Authorization: Bearer <token>`), and its OpenAPI description at `/openapi.json`.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use http::request::Parts;
use http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::OAuthError;
use crate::model::ClientSpec;
use crate::ops::{self, NewUser, OpsError};
use crate::secrets::{ct_eq, sha256_hex};
use crate::Idp;

pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router() -> Router<Arc<Idp>> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/admin/clients", get(list_clients).post(add_client))
        .route("/admin/clients/{id}", get(get_client).delete(remove_client))
        .route("/admin/clients/{id}/secret", post(rotate_secret))
        .route("/admin/users", get(list_users).post(add_user))
        .route("/admin/users/{username}", get(get_user).delete(remove_user))
        .route("/admin/users/{username}/password", put(set_password))
        .route("/admin/users/{username}/roles", put(set_roles))
        .route("/admin/keys", get(keys))
        .route("/admin/keys/rotate", post(rotate_keys))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Proof that the request carries the admin credential.
pub struct Admin;

impl FromRequestParts<Arc<Idp>> for Admin {
    type Rejection = OAuthError;

    async fn from_request_parts(parts: &mut Parts, idp: &Arc<Idp>) -> Result<Self, Self::Rejection> {
        let Some(expected) = &idp.cfg.admin_token_sha256 else {
            return Err(OAuthError::unauthorized("the admin API is disabled"));
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        match presented {
            Some(t) if ct_eq(sha256_hex(t).as_bytes(), expected.as_bytes()) => Ok(Admin),
            Some(_) => Err(OAuthError::unauthorized("the admin credential is not valid")),
            None => Err(OAuthError::unauthorized("the admin credential is required")),
        }
    }
}

impl From<OpsError> for OAuthError {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::Invalid(m) => OAuthError::invalid_request(m),
            OpsError::NotFound(m) => OAuthError::not_found(m),
            OpsError::Conflict(m) => OAuthError::conflict(m),
            OpsError::Db(e) => OAuthError::server_error(e),
            OpsError::Internal(m) => OAuthError::server_error(m),
        }
    }
}

type ApiResult = Result<Response, OAuthError>;

fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, OAuthError> {
    serde_json::from_slice(bytes).map_err(|e| OAuthError::invalid_request(format!("request body: {e}")))
}

async fn list_clients(_: Admin, State(idp): State<Arc<Idp>>) -> ApiResult {
    let clients: Vec<ClientSpec> = idp.repo.clients().await?.into_iter().map(|c| c.spec).collect();
    Ok(Json(clients).into_response())
}

async fn add_client(_: Admin, State(idp): State<Arc<Idp>>, bytes: Bytes) -> ApiResult {
    let spec: ClientSpec = body(&bytes)?;
    let secret = ops::add_client(&idp.repo, &spec).await?;
    let mut v = json!({ "client": spec });
    if let Some(s) = secret {
        v["client_secret"] = json!(s);
    }
    tracing::info!(client_id = %spec.client_id, "client registered (admin API)");
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn get_client(_: Admin, State(idp): State<Arc<Idp>>, Path(id): Path<String>) -> ApiResult {
    match idp.repo.client(&id).await? {
        Some(c) => Ok(Json(c.spec).into_response()),
        None => Err(OAuthError::not_found(format!("no client {id:?}"))),
    }
}

async fn remove_client(_: Admin, State(idp): State<Arc<Idp>>, Path(id): Path<String>) -> ApiResult {
    ops::remove_client(&idp.repo, &id).await?;
    idp.secret_cache.forget(&id);
    idp.clients.forget(&id);
    tracing::info!(client_id = %id, "client removed (admin API)");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn rotate_secret(_: Admin, State(idp): State<Arc<Idp>>, Path(id): Path<String>) -> ApiResult {
    let secret = ops::rotate_client_secret(&idp.repo, &id).await?;
    idp.secret_cache.forget(&id);
    idp.clients.forget(&id);
    tracing::info!(client_id = %id, "client secret rotated (admin API)");
    Ok(Json(json!({ "client_id": id, "client_secret": secret })).into_response())
}

async fn list_users(_: Admin, State(idp): State<Arc<Idp>>) -> ApiResult {
    Ok(Json(idp.repo.users().await?).into_response())
}

async fn add_user(_: Admin, State(idp): State<Arc<Idp>>, bytes: Bytes) -> ApiResult {
    let new: NewUser = body(&bytes)?;
    let user = ops::add_user(&idp.repo, new).await?;
    tracing::info!(username = %user.username, "user added (admin API)");
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

async fn get_user(_: Admin, State(idp): State<Arc<Idp>>, Path(username): Path<String>) -> ApiResult {
    match idp.repo.user(&username).await? {
        Some(u) => Ok(Json(u).into_response()),
        None => Err(OAuthError::not_found(format!("no user {username:?}"))),
    }
}

async fn remove_user(_: Admin, State(idp): State<Arc<Idp>>, Path(username): Path<String>) -> ApiResult {
    ops::remove_user(&idp.repo, &username).await?;
    tracing::info!(username = %username, "user removed (admin API)");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
}

async fn set_password(_: Admin, State(idp): State<Arc<Idp>>, Path(username): Path<String>, bytes: Bytes) -> ApiResult {
    let b: PasswordBody = body(&bytes)?;
    ops::set_password(&idp.repo, &username, b.password).await?;
    tracing::info!(username = %username, "password changed (admin API)");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesBody {
    roles: Vec<String>,
}

async fn set_roles(_: Admin, State(idp): State<Arc<Idp>>, Path(username): Path<String>, bytes: Bytes) -> ApiResult {
    let b: RolesBody = body(&bytes)?;
    let user = ops::set_roles(&idp.repo, &username, b.roles).await?;
    Ok(Json(user).into_response())
}

async fn keys(_: Admin, State(idp): State<Arc<Idp>>) -> ApiResult {
    let now = u64::try_from(palisade_store::now()).unwrap_or(0);
    let ks = idp.keys.keyset();
    let keys: Vec<Value> = ks
        .1
        .published(now)
        .map(|k| json!({ "kid": k.kid, "alg": k.alg.name(), "activate_at": k.activate_at, "retire_at": k.retire_at }))
        .collect();
    let signing = ks.1.signing_key(now).map(|k| k.kid.clone());
    Ok(Json(json!({ "signing_kid": signing, "keys": keys })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    activate_after_seconds: Option<u64>,
    #[serde(default)]
    alg: Option<palisade_crypto::Alg>,
}

async fn rotate_keys(_: Admin, State(idp): State<Arc<Idp>>, bytes: Bytes) -> ApiResult {
    let b: RotateBody = if bytes.is_empty() { RotateBody::default() } else { body(&bytes)? };
    let activate_after = b.activate_after_seconds.unwrap_or(crate::keys::DEFAULT_ACTIVATE_AFTER);
    let alg = b.alg.unwrap_or(idp.cfg.key_alg);
    let (kid, activate_at) =
        idp.keys.rotate(alg, activate_after, idp.cfg.max_token_lifetime()).await.map_err(OAuthError::server_error)?;
    tracing::info!(kid = %kid, activate_at, "signing key rotated (admin API)");
    Ok(Json(json!({ "kid": kid, "alg": alg.name(), "activate_at": activate_at })).into_response())
}
