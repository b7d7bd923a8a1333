//! Administration: the operations behind `palisade idp client|user ...` and the admin REST API.
//! Validation happens here, once, before anything is written.

use serde::Deserialize;

use crate::model::{valid_role, valid_username, ClientSpec, Profile, User};
use crate::repo::Repo;
use crate::secrets::{hash_secret, random_token};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

pub type OpsResult<T> = Result<T, OpsError>;

async fn hash(secret: String) -> OpsResult<String> {
    tokio::task::spawn_blocking(move || hash_secret(&secret))
        .await
        .map_err(|e| OpsError::Internal(e.to_string()))?
        .map_err(OpsError::Internal)
}

/// Register a client. Returns its secret (shown once) for secret-based clients.
pub async fn add_client(repo: &Repo, spec: &ClientSpec) -> OpsResult<Option<String>> {
    spec.validate().map_err(OpsError::Invalid)?;
    let secret = spec.token_endpoint_auth_method.uses_secret().then(|| random_token(32));
    let hashed = match &secret {
        Some(s) => Some(hash(s.clone()).await?),
        None => None,
    };
    if !repo.insert_client(spec, hashed.as_deref(), palisade_store::now()).await? {
        return Err(OpsError::Conflict(format!("client {:?} already exists", spec.client_id)));
    }
    Ok(secret)
}

/// A new secret for a secret-based client; the old one stops working at once.
pub async fn rotate_client_secret(repo: &Repo, client_id: &str) -> OpsResult<String> {
    let client = repo.client(client_id).await?.ok_or_else(|| OpsError::NotFound(format!("no client {client_id:?}")))?;
    if !client.spec.token_endpoint_auth_method.uses_secret() {
        return Err(OpsError::Invalid(format!(
            "client {client_id:?} authenticates with {}, not a secret",
            client.spec.token_endpoint_auth_method.name()
        )));
    }
    let secret = random_token(32);
    repo.set_client_secret(client_id, &hash(secret.clone()).await?, palisade_store::now()).await?;
    Ok(secret)
}

pub async fn remove_client(repo: &Repo, client_id: &str) -> OpsResult<()> {
    if repo.delete_client(client_id).await? {
        Ok(())
    } else {
        Err(OpsError::NotFound(format!("no client {client_id:?}")))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

fn check_password(p: &str) -> OpsResult<()> {
    if p.chars().count() < 8 || p.len() > 1024 {
        return Err(OpsError::Invalid("password: must be 8 to 1024 characters".into()));
    }
    Ok(())
}

fn check_roles(roles: &[String]) -> OpsResult<()> {
    match roles.iter().find(|r| !valid_role(r)) {
        Some(r) => Err(OpsError::Invalid(format!("roles: {r:?} is not a valid role (A-Z a-z 0-9 - . _ :)"))),
        None => Ok(()),
    }
}

pub async fn add_user(repo: &Repo, new: NewUser) -> OpsResult<User> {
    if !valid_username(&new.username) {
        return Err(OpsError::Invalid("username: 1-128 characters of A-Z a-z 0-9 - . _ @ +".into()));
    }
    check_password(&new.password)?;
    check_roles(&new.roles)?;
    let user = User {
        username: new.username.clone(),
        subject: random_token(16),
        password_hash: hash(new.password).await?,
        roles: new.roles,
        profile: Profile { name: new.name, email: new.email },
    };
    if !repo.insert_user(&user, palisade_store::now()).await? {
        return Err(OpsError::Conflict(format!("user {:?} already exists", user.username)));
    }
    Ok(user)
}

pub async fn set_password(repo: &Repo, username: &str, password: String) -> OpsResult<()> {
    check_password(&password)?;
    if repo.user(username).await?.is_none() {
        return Err(OpsError::NotFound(format!("no user {username:?}")));
    }
    repo.set_password(username, &hash(password).await?, palisade_store::now()).await?;
    Ok(())
}

pub async fn set_roles(repo: &Repo, username: &str, roles: Vec<String>) -> OpsResult<User> {
    check_roles(&roles)?;
    if !repo.set_roles(username, &roles, palisade_store::now()).await? {
        return Err(OpsError::NotFound(format!("no user {username:?}")));
    }
    repo.user(username).await?.ok_or_else(|| OpsError::NotFound(format!("no user {username:?}")))
}

pub async fn remove_user(repo: &Repo, username: &str) -> OpsResult<()> {
    if repo.delete_user(username).await? {
        Ok(())
    } else {
        Err(OpsError::NotFound(format!("no user {username:?}")))
    }
}
