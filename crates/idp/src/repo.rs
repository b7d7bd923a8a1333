//! Every query of the identity provider. Portable SQL (`$n` placeholders, no backend-specific
//! functions), so the same text runs on SQLite and PostgreSQL.

use serde::{de::DeserializeOwned, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::model::{Client, ClientSpec, User};

pub type DbResult<T> = Result<T, sqlx::Error>;

fn json<T: Serialize>(v: &T) -> DbResult<String> {
    serde_json::to_string(v).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

fn parse<T: DeserializeOwned>(s: &str) -> DbResult<T> {
    serde_json::from_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

#[derive(Clone)]
pub struct Repo {
    pool: AnyPool,
}

/// What happened when a single-use value (code, refresh token) was presented.
#[derive(Debug)]
pub enum Take<T> {
    /// First use: now marked used.
    Fresh(T),
    /// Already used before: a replay.
    Replayed(T),
    Missing,
}

#[derive(Debug, Clone)]
pub struct Stored {
    pub grant_id: String,
    pub client_id: String,
    pub data: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct AuthRequestRow {
    pub csrf_hash: String,
    pub params: String,
    pub subject: Option<String>,
    pub auth_time: Option<i64>,
    pub expires_at: i64,
}

impl Repo {
    pub fn new(pool: AnyPool) -> Repo {
        Repo { pool }
    }

    // ---- clients

    fn client_row(row: &AnyRow) -> DbResult<Client> {
        Ok(Client { spec: parse(&row.try_get::<String, _>("config")?)?, secret_hash: row.try_get("secret_hash")? })
    }

    pub async fn client(&self, id: &str) -> DbResult<Option<Client>> {
        let row = sqlx::query("SELECT config, secret_hash FROM idp_clients WHERE client_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::client_row).transpose()
    }

    pub async fn clients(&self) -> DbResult<Vec<Client>> {
        let rows =
            sqlx::query("SELECT config, secret_hash FROM idp_clients ORDER BY client_id").fetch_all(&self.pool).await?;
        rows.iter().map(Self::client_row).collect()
    }

    /// Insert; `Ok(false)` when the id is taken.
    pub async fn insert_client(&self, spec: &ClientSpec, secret_hash: Option<&str>, now: i64) -> DbResult<bool> {
        let r = sqlx::query(
            "INSERT INTO idp_clients (client_id, secret_hash, config, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&spec.client_id)
        .bind(secret_hash)
        .bind(json(spec)?)
        .bind(now)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if palisade_store::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn set_client_secret(&self, id: &str, secret_hash: &str, now: i64) -> DbResult<bool> {
        let r = sqlx::query("UPDATE idp_clients SET secret_hash = $1, updated_at = $2 WHERE client_id = $3")
            .bind(secret_hash)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn delete_client(&self, id: &str) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("DELETE FROM idp_clients WHERE client_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM idp_refresh_tokens WHERE client_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM idp_consents WHERE client_id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    // ---- users

    fn user_row(row: &AnyRow) -> DbResult<User> {
        Ok(User {
            username: row.try_get("username")?,
            subject: row.try_get("subject")?,
            password_hash: row.try_get("password_hash")?,
            roles: parse(&row.try_get::<String, _>("roles")?)?,
            profile: parse(&row.try_get::<String, _>("profile")?)?,
        })
    }

    const USER_COLS: &'static str = "username, subject, password_hash, roles, profile";

    pub async fn user(&self, username: &str) -> DbResult<Option<User>> {
        let q = format!("SELECT {} FROM idp_users WHERE username = $1", Self::USER_COLS);
        let row = sqlx::query(&q).bind(username).fetch_optional(&self.pool).await?;
        row.as_ref().map(Self::user_row).transpose()
    }

    pub async fn user_by_subject(&self, subject: &str) -> DbResult<Option<User>> {
        let q = format!("SELECT {} FROM idp_users WHERE subject = $1", Self::USER_COLS);
        let row = sqlx::query(&q).bind(subject).fetch_optional(&self.pool).await?;
        row.as_ref().map(Self::user_row).transpose()
    }

    pub async fn users(&self) -> DbResult<Vec<User>> {
        let q = format!("SELECT {} FROM idp_users ORDER BY username", Self::USER_COLS);
        let rows = sqlx::query(&q).fetch_all(&self.pool).await?;
        rows.iter().map(Self::user_row).collect()
    }

    pub async fn insert_user(&self, user: &User, now: i64) -> DbResult<bool> {
        let r = sqlx::query(
            "INSERT INTO idp_users (username, subject, password_hash, roles, profile, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&user.username)
        .bind(&user.subject)
        .bind(&user.password_hash)
        .bind(json(&user.roles)?)
        .bind(json(&user.profile)?)
        .bind(now)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if palisade_store::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn set_password(&self, username: &str, hash: &str, now: i64) -> DbResult<bool> {
        let r = sqlx::query("UPDATE idp_users SET password_hash = $1, updated_at = $2 WHERE username = $3")
            .bind(hash)
            .bind(now)
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn set_roles(&self, username: &str, roles: &[String], now: i64) -> DbResult<bool> {
        let r = sqlx::query("UPDATE idp_users SET roles = $1, updated_at = $2 WHERE username = $3")
            .bind(json(&roles)?)
            .bind(now)
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Delete a user with their sessions, consents and refresh tokens.
    pub async fn delete_user(&self, username: &str) -> DbResult<bool> {
        let Some(user) = self.user(username).await? else { return Ok(false) };
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM idp_users WHERE username = $1").bind(username).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM idp_sessions WHERE subject = $1").bind(&user.subject).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM idp_consents WHERE subject = $1").bind(&user.subject).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    // ---- keysets

    pub async fn keyset(&self, name: &str) -> DbResult<Option<(String, i64)>> {
        let row = sqlx::query("SELECT sealed, updated_at FROM keysets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("sealed")?, r.try_get("updated_at")?))).transpose()
    }

    /// Insert the first keyset; `Ok(false)` if another process was first.
    pub async fn insert_keyset(&self, name: &str, sealed: &str, now: i64) -> DbResult<bool> {
        let r = sqlx::query("INSERT INTO keysets (name, sealed, updated_at) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(sealed)
            .bind(now)
            .execute(&self.pool)
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if palisade_store::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Compare-and-swap on the previous sealed text, so two concurrent rotations cannot lose one.
    pub async fn replace_keyset(&self, name: &str, previous: &str, sealed: &str, now: i64) -> DbResult<bool> {
        let r = sqlx::query("UPDATE keysets SET sealed = $1, updated_at = $2 WHERE name = $3 AND sealed = $4")
            .bind(sealed)
            .bind(now)
            .bind(name)
            .bind(previous)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    // ---- browser sessions

    pub async fn insert_session(&self, id_hash: &str, subject: &str, auth_time: i64, expires_at: i64) -> DbResult<()> {
        sqlx::query("INSERT INTO idp_sessions (id_hash, subject, auth_time, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(id_hash)
            .bind(subject)
            .bind(auth_time)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// `(subject, auth_time)` of a live session.
    pub async fn session(&self, id_hash: &str, now: i64) -> DbResult<Option<(String, i64)>> {
        let row = sqlx::query("SELECT subject, auth_time FROM idp_sessions WHERE id_hash = $1 AND expires_at > $2")
            .bind(id_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("subject")?, r.try_get("auth_time")?))).transpose()
    }

    pub async fn delete_session(&self, id_hash: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM idp_sessions WHERE id_hash = $1").bind(id_hash).execute(&self.pool).await?;
        Ok(())
    }

    // ---- pending authorization requests

    pub async fn insert_auth_request(&self, id: &str, csrf_hash: &str, params: &str, expires_at: i64) -> DbResult<()> {
        sqlx::query("INSERT INTO idp_auth_requests (id, csrf_hash, params, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(csrf_hash)
            .bind(params)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn auth_request(&self, id: &str, now: i64) -> DbResult<Option<AuthRequestRow>> {
        let row = sqlx::query(
            "SELECT csrf_hash, params, subject, auth_time, expires_at FROM idp_auth_requests WHERE id = $1 AND expires_at > $2",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(AuthRequestRow {
                csrf_hash: r.try_get("csrf_hash")?,
                params: r.try_get("params")?,
                subject: r.try_get("subject")?,
                auth_time: r.try_get("auth_time")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    pub async fn set_auth_request_subject(&self, id: &str, subject: &str, auth_time: i64) -> DbResult<()> {
        sqlx::query("UPDATE idp_auth_requests SET subject = $1, auth_time = $2 WHERE id = $3")
            .bind(subject)
            .bind(auth_time)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Delete; `false` if it was already gone (a double submit).
    pub async fn delete_auth_request(&self, id: &str) -> DbResult<bool> {
        let r = sqlx::query("DELETE FROM idp_auth_requests WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(r.rows_affected() == 1)
    }

    // ---- consents

    pub async fn consent(&self, subject: &str, client_id: &str) -> DbResult<Option<String>> {
        let row = sqlx::query("SELECT scope FROM idp_consents WHERE subject = $1 AND client_id = $2")
            .bind(subject)
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("scope")).transpose()
    }

    pub async fn save_consent(&self, subject: &str, client_id: &str, scope: &str, now: i64) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO idp_consents (subject, client_id, scope, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (subject, client_id) DO UPDATE SET scope = excluded.scope, created_at = excluded.created_at",
        )
        .bind(subject)
        .bind(client_id)
        .bind(scope)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- authorization codes and refresh tokens (single use)

    pub async fn insert_code(&self, hash: &str, grant_id: &str, client_id: &str, data: &str, exp: i64) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO idp_codes (code_hash, grant_id, client_id, data, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash)
        .bind(grant_id)
        .bind(client_id)
        .bind(data)
        .bind(exp)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn take(&self, table: &str, key: &str, hash: &str, now: i64) -> DbResult<Take<Stored>> {
        let row = sqlx::query(&format!("SELECT grant_id, client_id, data, expires_at FROM {table} WHERE {key} = $1"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(Take::Missing) };
        let stored = Stored {
            grant_id: row.try_get("grant_id")?,
            client_id: row.try_get("client_id")?,
            data: row.try_get("data")?,
            expires_at: row.try_get("expires_at")?,
        };
        // The conditional update is the single-use guarantee: of two concurrent presentations
        // exactly one changes the row.
        let r = sqlx::query(&format!("UPDATE {table} SET used_at = $1 WHERE {key} = $2 AND used_at IS NULL"))
            .bind(now)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(if r.rows_affected() == 1 { Take::Fresh(stored) } else { Take::Replayed(stored) })
    }

    pub async fn take_code(&self, hash: &str, now: i64) -> DbResult<Take<Stored>> {
        self.take("idp_codes", "code_hash", hash, now).await
    }

    pub async fn take_refresh(&self, hash: &str, now: i64) -> DbResult<Take<Stored>> {
        self.take("idp_refresh_tokens", "token_hash", hash, now).await
    }

    /// A refresh token without using it (introspection, revocation).
    pub async fn peek_refresh(&self, hash: &str) -> DbResult<Option<(Stored, Option<i64>)>> {
        let row = sqlx::query(
            "SELECT grant_id, client_id, data, expires_at, used_at FROM idp_refresh_tokens WHERE token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok((
                Stored {
                    grant_id: row.try_get("grant_id")?,
                    client_id: row.try_get("client_id")?,
                    data: row.try_get("data")?,
                    expires_at: row.try_get("expires_at")?,
                },
                row.try_get("used_at")?,
            ))
        })
        .transpose()
    }

    pub async fn insert_refresh(&self, hash: &str, s: &Stored, now: i64) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO idp_refresh_tokens (token_hash, grant_id, client_id, data, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hash)
        .bind(&s.grant_id)
        .bind(&s.client_id)
        .bind(&s.data)
        .bind(now)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- revocation

    /// Revoke a grant: every refresh token of the family is spent and every access token that
    /// carries the grant id fails introspection until `until`.
    pub async fn revoke_grant(&self, grant_id: &str, now: i64, until: i64) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE idp_refresh_tokens SET used_at = $1 WHERE grant_id = $2 AND used_at IS NULL")
            .bind(now)
            .bind(grant_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE idp_codes SET used_at = $1 WHERE grant_id = $2 AND used_at IS NULL")
            .bind(now)
            .bind(grant_id)
            .execute(&mut *tx)
            .await?;
        Self::insert_revocation(&mut tx, grant_id, "grant", until).await?;
        tx.commit().await
    }

    async fn insert_revocation(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: &str,
        kind: &str,
        until: i64,
    ) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO idp_revocations (id, kind, created_at, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, created_at = excluded.created_at",
        )
        .bind(id)
        .bind(kind)
        .bind(palisade_store::now())
        .bind(until)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn revoke_jti(&self, jti: &str, until: i64) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        Self::insert_revocation(&mut tx, jti, "jti", until).await?;
        tx.commit().await
    }

    /// Revocations recorded at or after `since` that have not expired at `now`: `(id, expires_at)`.
    pub async fn revocations_since(&self, since: i64, now: i64) -> DbResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT id, expires_at FROM idp_revocations WHERE created_at >= $1 AND expires_at > $2")
            .bind(since)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("expires_at")?))).collect()
    }

    /// Record a client-assertion jti; `Ok(false)` if it was seen before (a replay).
    pub async fn record_assertion(&self, client_id: &str, jti: &str, expires_at: i64) -> DbResult<bool> {
        let r = sqlx::query("INSERT INTO idp_assertion_jtis (client_id, jti, expires_at) VALUES ($1, $2, $3)")
            .bind(client_id)
            .bind(jti)
            .bind(expires_at)
            .execute(&self.pool)
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if palisade_store::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Delete what has expired; returns the number of rows removed.
    pub async fn purge_expired(&self, now: i64) -> DbResult<u64> {
        let mut n = 0;
        for table in [
            "idp_sessions",
            "idp_auth_requests",
            "idp_codes",
            "idp_refresh_tokens",
            "idp_revocations",
            "idp_assertion_jtis",
        ] {
            let r = sqlx::query(&format!("DELETE FROM {table} WHERE expires_at <= $1"))
                .bind(now)
                .execute(&self.pool)
                .await?;
            n += r.rows_affected();
        }
        Ok(n)
    }
}
