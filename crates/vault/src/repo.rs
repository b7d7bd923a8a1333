//! SQL for the vault tables (migration 0004), portable between SQLite and PostgreSQL: `$n`
//! placeholders, BIGINT for every number and flag. Material is stored sealed (base64) only.

use palisade_store::sqlx::{self, AnyPool, Row};

use crate::error::VaultError;

/// A `vault_keys` row.
#[derive(Debug, Clone)]
pub(crate) struct KeyRow {
    pub(crate) name: String,
    pub(crate) key_type: String,
    pub(crate) key_id: u32,
    pub(crate) exportable: bool,
    pub(crate) convergent: bool,
    pub(crate) latest_version: u32,
    pub(crate) min_decryption_version: u32,
    pub(crate) min_encryption_version: u32,
    pub(crate) disabled: bool,
    pub(crate) deletion_at: Option<i64>,
    pub(crate) deleted_at: Option<i64>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

pub(crate) struct VersionRow {
    pub(crate) version: u32,
    pub(crate) sealed: String,
    pub(crate) public_key: Option<String>,
    pub(crate) created_at: i64,
}

fn u32_of(v: i64) -> Result<u32, VaultError> {
    u32::try_from(v).map_err(|_| VaultError::Master("stored key version out of range".into()))
}

const KEY_COLS: &str = "name, key_type, key_id, exportable, convergent, latest_version, min_decryption_version, \
     min_encryption_version, disabled, deletion_at, deleted_at, created_at, updated_at";

fn key_row(r: &sqlx::any::AnyRow) -> Result<KeyRow, VaultError> {
    Ok(KeyRow {
        name: r.try_get("name")?,
        key_type: r.try_get("key_type")?,
        key_id: u32_of(r.try_get("key_id")?)?,
        exportable: r.try_get::<i64, _>("exportable")? != 0,
        convergent: r.try_get::<i64, _>("convergent")? != 0,
        latest_version: u32_of(r.try_get("latest_version")?)?,
        min_decryption_version: u32_of(r.try_get("min_decryption_version")?)?,
        min_encryption_version: u32_of(r.try_get("min_encryption_version")?)?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        deletion_at: r.try_get("deletion_at")?,
        deleted_at: r.try_get("deleted_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub(crate) async fn get_key(pool: &AnyPool, name: &str) -> Result<Option<KeyRow>, VaultError> {
    let q = format!("SELECT {KEY_COLS} FROM vault_keys WHERE name = $1");
    let row = sqlx::query(&q).bind(name).fetch_optional(pool).await?;
    row.as_ref().map(key_row).transpose()
}

pub(crate) async fn list_keys(pool: &AnyPool) -> Result<Vec<String>, VaultError> {
    let rows =
        sqlx::query("SELECT name FROM vault_keys WHERE deleted_at IS NULL ORDER BY name").fetch_all(pool).await?;
    rows.iter().map(|r| Ok(r.try_get::<String, _>("name")?)).collect()
}

pub(crate) async fn versions(pool: &AnyPool, name: &str) -> Result<Vec<VersionRow>, VaultError> {
    let rows = sqlx::query(
        "SELECT version, sealed, public_key, created_at FROM vault_key_versions WHERE name = $1 ORDER BY version",
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(VersionRow {
                version: u32_of(r.try_get("version")?)?,
                sealed: r.try_get("sealed")?,
                public_key: r.try_get("public_key")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// Insert a new key with its first version, in one transaction.
pub(crate) async fn create_key(pool: &AnyPool, k: &KeyRow, v1: &VersionRow) -> Result<(), VaultError> {
    let mut tx = pool.begin().await?;
    let q =
        format!("INSERT INTO vault_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)");
    let r = sqlx::query(&q)
        .bind(&k.name)
        .bind(&k.key_type)
        .bind(i64::from(k.key_id))
        .bind(i64::from(k.exportable))
        .bind(i64::from(k.convergent))
        .bind(i64::from(k.latest_version))
        .bind(i64::from(k.min_decryption_version))
        .bind(i64::from(k.min_encryption_version))
        .bind(i64::from(k.disabled))
        .bind(k.deletion_at)
        .bind(k.deleted_at)
        .bind(k.created_at)
        .bind(k.updated_at)
        .execute(&mut *tx)
        .await;
    if let Err(e) = r {
        return Err(if palisade_store::is_unique_violation(&e) {
            VaultError::KeyExists(k.name.clone())
        } else {
            VaultError::Db(e)
        });
    }
    insert_version(&mut tx, &k.name, v1).await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    name: &str,
    v: &VersionRow,
) -> Result<(), VaultError> {
    let r = sqlx::query(
        "INSERT INTO vault_key_versions (name, version, sealed, public_key, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(name)
    .bind(i64::from(v.version))
    .bind(&v.sealed)
    .bind(v.public_key.as_deref())
    .bind(v.created_at)
    .execute(&mut **tx)
    .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if palisade_store::is_unique_violation(&e) => Err(VaultError::Conflict(name.to_owned())),
        Err(e) => Err(e.into()),
    }
}

/// Add version `v.version` if the latest is still `v.version - 1` (two rotations racing: one wins,
/// the other gets [`VaultError::Conflict`]).
pub(crate) async fn add_version(pool: &AnyPool, name: &str, v: &VersionRow, now: i64) -> Result<(), VaultError> {
    let mut tx = pool.begin().await?;
    let prev = i64::from(v.version) - 1;
    let r = sqlx::query(
        "UPDATE vault_keys SET latest_version = $1, updated_at = $2 WHERE name = $3 AND latest_version = $4 \
         AND deleted_at IS NULL",
    )
    .bind(i64::from(v.version))
    .bind(now)
    .bind(name)
    .bind(prev)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() != 1 {
        return Err(VaultError::Conflict(name.to_owned()));
    }
    insert_version(&mut tx, name, v).await?;
    tx.commit().await?;
    Ok(())
}

/// Write the mutable settings of `new` if the row still holds those of `old` (a compare-and-swap:
/// of two concurrent changes one wins, the other gets [`VaultError::Conflict`]).
pub(crate) async fn update_settings(pool: &AnyPool, new: &KeyRow, old: &KeyRow) -> Result<(), VaultError> {
    let r = sqlx::query(
        "UPDATE vault_keys SET min_decryption_version = $1, min_encryption_version = $2, disabled = $3, \
         deletion_at = $4, updated_at = $5 WHERE name = $6 AND min_decryption_version = $7 \
         AND min_encryption_version = $8 AND disabled = $9 AND COALESCE(deletion_at, -1) = $10 \
         AND deleted_at IS NULL",
    )
    .bind(i64::from(new.min_decryption_version))
    .bind(i64::from(new.min_encryption_version))
    .bind(i64::from(new.disabled))
    .bind(new.deletion_at)
    .bind(new.updated_at)
    .bind(&new.name)
    .bind(i64::from(old.min_decryption_version))
    .bind(i64::from(old.min_encryption_version))
    .bind(i64::from(old.disabled))
    .bind(old.deletion_at.unwrap_or(-1))
    .execute(pool)
    .await?;
    if r.rows_affected() != 1 {
        return Err(VaultError::Conflict(new.name.clone()));
    }
    Ok(())
}

/// Destroy the material of a key whose deletion time has come; the row stays as a tombstone.
pub(crate) async fn purge(pool: &AnyPool, name: &str, now: i64) -> Result<(), VaultError> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM vault_key_versions WHERE name = $1").bind(name).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM vault_tokens WHERE key_name = $1").bind(name).execute(&mut *tx).await?;
    sqlx::query("UPDATE vault_keys SET deleted_at = $1, updated_at = $1 WHERE name = $2 AND deleted_at IS NULL")
        .bind(now)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Names of keys whose scheduled deletion is due.
pub(crate) async fn due_deletions(pool: &AnyPool, now: i64) -> Result<Vec<String>, VaultError> {
    let rows = sqlx::query(
        "SELECT name FROM vault_keys WHERE deleted_at IS NULL AND deletion_at IS NOT NULL AND deletion_at <= $1",
    )
    .bind(now)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| Ok(r.try_get::<String, _>("name")?)).collect()
}

pub(crate) struct TokenRow {
    pub(crate) version: u32,
    pub(crate) format: String,
    pub(crate) sealed_value: String,
}

pub(crate) async fn find_token(pool: &AnyPool, key: &str, token: &str) -> Result<Option<TokenRow>, VaultError> {
    let row = sqlx::query("SELECT version, format, sealed_value FROM vault_tokens WHERE key_name = $1 AND token = $2")
        .bind(key)
        .bind(token)
        .fetch_optional(pool)
        .await?;
    row.map(|r| {
        Ok(TokenRow {
            version: u32_of(r.try_get("version")?)?,
            format: r.try_get("format")?,
            sealed_value: r.try_get("sealed_value")?,
        })
    })
    .transpose()
}

pub(crate) async fn find_deterministic(pool: &AnyPool, key: &str, lookup: &str) -> Result<Option<String>, VaultError> {
    let row = sqlx::query("SELECT token FROM vault_tokens WHERE key_name = $1 AND det_lookup = $2")
        .bind(key)
        .bind(lookup)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.try_get::<String, _>("token")).transpose()?)
}

pub(crate) enum Insert {
    Done,
    /// The token was taken (retry with another) or, deterministic, the value already has one.
    Taken,
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_token(
    pool: &AnyPool,
    key: &str,
    token: &str,
    version: u32,
    format: &str,
    lookup: &str,
    deterministic: bool,
    sealed_value: &str,
    now: i64,
) -> Result<Insert, VaultError> {
    let r = sqlx::query(
        "INSERT INTO vault_tokens (key_name, token, version, format, lookup, det_lookup, sealed_value, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(key)
    .bind(token)
    .bind(i64::from(version))
    .bind(format)
    .bind(lookup)
    .bind(deterministic.then_some(lookup))
    .bind(sealed_value)
    .bind(now)
    .execute(pool)
    .await;
    match r {
        Ok(_) => Ok(Insert::Done),
        Err(e) if palisade_store::is_unique_violation(&e) => Ok(Insert::Taken),
        Err(e) => Err(e.into()),
    }
}
