//! Every query of the CA. Portable SQL (`$n` placeholders, no backend-specific functions), so
//! the same text runs on SQLite and PostgreSQL. State changes are conditional updates, so two
//! server replicas doing the same lazy transition agree.

use palisade_store::sqlx::{self, any::AnyRow, AnyPool, Row};

pub(crate) type DbResult<T> = Result<T, sqlx::Error>;

/// A CA as stored.
#[derive(Debug, Clone)]
pub(crate) struct AuthorityRow {
    pub id: String,
    pub trust_domain: String,
    pub state: String,
    pub cert_pem: String,
    pub sealed_key: String,
    pub not_after: i64,
    pub created_at: i64,
    pub activates_at: i64,
    pub retired_at: Option<i64>,
}

const AUTH_COLS: &str =
    "id, trust_domain, state, cert_pem, sealed_key, not_after, created_at, activates_at, retired_at";

fn authority(row: &AnyRow) -> DbResult<AuthorityRow> {
    Ok(AuthorityRow {
        id: row.try_get("id")?,
        trust_domain: row.try_get("trust_domain")?,
        state: row.try_get("state")?,
        cert_pem: row.try_get("cert_pem")?,
        sealed_key: row.try_get("sealed_key")?,
        not_after: row.try_get("not_after")?,
        created_at: row.try_get("created_at")?,
        activates_at: row.try_get("activates_at")?,
        retired_at: row.try_get("retired_at")?,
    })
}

#[derive(Clone)]
pub(crate) struct Repo {
    pool: AnyPool,
}

impl Repo {
    pub fn new(pool: AnyPool) -> Repo {
        Repo { pool }
    }

    /// All CAs, oldest first (ties: the one activating first).
    pub async fn authorities(&self) -> DbResult<Vec<AuthorityRow>> {
        let q = format!("SELECT {AUTH_COLS} FROM ca_authorities ORDER BY created_at, activates_at, id");
        let rows = sqlx::query(&q).fetch_all(&self.pool).await?;
        let mut rows: Vec<AuthorityRow> = rows.iter().map(authority).collect::<DbResult<_>>()?;
        // Two CAs made in the same second (e.g. first start, then an import activating at
        // once): the one that has been superseded is the older.
        let rank = |state: &str| match state {
            "retired" => 0,
            "active" => 1,
            _ => 2,
        };
        rows.sort_by(|a, b| {
            (a.created_at, rank(&a.state), a.activates_at).cmp(&(b.created_at, rank(&b.state), b.activates_at))
        });
        Ok(rows)
    }

    pub async fn insert_authority(&self, a: &AuthorityRow) -> DbResult<()> {
        let q = format!("INSERT INTO ca_authorities ({AUTH_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
        sqlx::query(&q)
            .bind(&a.id)
            .bind(&a.trust_domain)
            .bind(&a.state)
            .bind(&a.cert_pem)
            .bind(&a.sealed_key)
            .bind(a.not_after)
            .bind(a.created_at)
            .bind(a.activates_at)
            .bind(a.retired_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Make `id` (a due pending CA) the signer: every other active or pending-and-due CA is
    /// retired. One transaction; idempotent, so concurrent replicas converge.
    pub async fn promote(&self, id: &str, now: i64) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE ca_authorities SET state = 'retired', retired_at = $1 \
             WHERE id <> $2 AND (state = 'active' OR (state = 'pending' AND activates_at <= $1))",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE ca_authorities SET state = 'active' WHERE id = $1 AND state = 'pending'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Retire every active CA (used when an expired active CA is replaced).
    pub async fn retire_active(&self, now: i64) -> DbResult<()> {
        sqlx::query("UPDATE ca_authorities SET state = 'retired', retired_at = $1 WHERE state = 'active'")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Latest `not_after` of the SVIDs each CA signed, by CA id.
    pub async fn last_svid_expiry(&self) -> DbResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT ca_id, MAX(not_after) AS last FROM ca_svids GROUP BY ca_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("ca_id")?, r.try_get("last")?))).collect()
    }

    /// `(ca_id, total, valid at now)` SVID counts.
    pub async fn svid_counts(&self, now: i64) -> DbResult<Vec<(String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT ca_id, COUNT(*) AS total, SUM(CASE WHEN not_after > $1 THEN 1 ELSE 0 END) AS valid \
             FROM ca_svids GROUP BY ca_id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            // COUNT and SUM over integer literals are BIGINT on both backends.
            .map(|r| Ok((r.try_get("ca_id")?, r.try_get("total")?, r.try_get("valid")?)))
            .collect()
    }

    pub async fn insert_svid(
        &self,
        serial: &str,
        spiffe_id: &str,
        ca_id: &str,
        issued_at: i64,
        not_after: i64,
    ) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO ca_svids (serial, spiffe_id, ca_id, issued_at, not_after) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(serial)
        .bind(spiffe_id)
        .bind(ca_id)
        .bind(issued_at)
        .bind(not_after)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn insert_join_token(&self, hash: &str, spiffe_id: &str, now: i64, expires_at: i64) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO ca_join_tokens (token_hash, spiffe_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash)
        .bind(spiffe_id)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Mark an unused, unexpired token used and return its SPIFFE ID. The conditional update is
    /// the atomic step: of two concurrent uses exactly one changes the row.
    pub async fn consume_join_token(&self, hash: &str, now: i64) -> DbResult<Option<String>> {
        let r = sqlx::query(
            "UPDATE ca_join_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(hash)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT spiffe_id FROM ca_join_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("spiffe_id")).transpose()
    }

    /// Drop join tokens that expired before `before`.
    pub async fn purge_join_tokens(&self, before: i64) -> DbResult<u64> {
        let r =
            sqlx::query("DELETE FROM ca_join_tokens WHERE expires_at < $1").bind(before).execute(&self.pool).await?;
        Ok(r.rows_affected())
    }
}
