//! The query index of the audit log in the store (table `audit_events`, migration 0003). Every
//! query is portable SQL (`$n` placeholders) for SQLite and PostgreSQL. The index follows the
//! log: a row exists only for a record already appended, and the index is caught up from the log
//! at start, so the log is the source of truth.

use palisade_core::audit::AuditRecord;
use palisade_store::sqlx::{self, AnyPool, Row};
use serde_json::Value;

pub(crate) type DbResult<T> = Result<T, sqlx::Error>;

/// Ids (of `ids`) already stored.
pub(crate) async fn existing(pool: &AnyPool, ids: &[&str]) -> DbResult<Vec<String>> {
    let mut found = Vec::new();
    for chunk in ids.chunks(50) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let q = format!("SELECT id FROM audit_events WHERE id IN ({})", marks.join(", "));
        let mut query = sqlx::query(&q);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(pool).await? {
            found.push(row.try_get("id")?);
        }
    }
    Ok(found)
}

/// Index records `(seq, record, its JSON)` in one transaction, many rows per statement (one
/// statement per row costs more than the rows themselves on SQLite).
pub(crate) async fn insert(pool: &AnyPool, rows: &[(u64, &AuditRecord, &str)]) -> DbResult<()> {
    const COLS: usize = 14;
    // sqlx-sqlite looks up every parameter's name, a linear scan in SQLite: a statement with n
    // parameters costs O(n²), so the rows per statement stay few (measured: 50 rows spent 37 % of
    // ingest CPU in sqlite3_bind_parameter_name).
    const PER_STATEMENT: usize = 8;
    let mut tx = pool.begin().await?;
    for chunk in rows.chunks(PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|r| {
                let marks: Vec<String> = (1..=COLS).map(|c| format!("${}", r * COLS + c)).collect();
                format!("({})", marks.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO audit_events (id, seq, time_ms, source, service, principal, decision, stage, route, \
             method, path, client_ip, status, body) VALUES {} ON CONFLICT (id) DO NOTHING",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for (seq, r, body) in chunk {
            let e = &r.event;
            q = q
                .bind(r.id.as_str())
                .bind(i64::try_from(*seq).unwrap_or(i64::MAX))
                .bind(time_ms(&e.time))
                .bind(e.source.as_ref())
                .bind(e.service.as_deref())
                .bind(e.principal.as_str())
                .bind(enum_name(&e.decision))
                .bind(enum_name(&e.stage))
                .bind(e.route.as_str())
                .bind(e.method.as_str())
                .bind(e.path.as_str())
                .bind(e.client_ip.as_str())
                .bind(i32::from(e.status))
                .bind(*body);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// The highest indexed seq (0 when empty).
pub(crate) async fn max_seq(pool: &AnyPool) -> DbResult<u64> {
    let row = sqlx::query("SELECT MAX(seq) AS m FROM audit_events").fetch_one(pool).await?;
    let m: Option<i64> = row.try_get("m")?;
    Ok(m.and_then(|m| u64::try_from(m).ok()).unwrap_or(0))
}

/// Drop index rows of records that retention deleted from the log.
pub(crate) async fn forget_before(pool: &AnyPool, first_seq: u64) -> DbResult<u64> {
    let r = sqlx::query("DELETE FROM audit_events WHERE seq < $1")
        .bind(i64::try_from(first_seq).unwrap_or(i64::MAX))
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}

/// A search: every filter that is set must match; newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub since_ms: Option<i64>,
    /// `alice` matches `User::"alice"`, `Client::"alice"` and `Service::"alice"`; a full
    /// principal (`User::"alice"`) matches itself.
    pub principal: Option<String>,
    pub decision: Option<String>,
    pub source: Option<String>,
    pub route: Option<String>,
    pub client_ip: Option<String>,
    pub limit: u32,
}

pub(crate) async fn query(pool: &AnyPool, q: &Query) -> DbResult<Vec<Value>> {
    // $1 is the time bound; every other value is bound in order after it.
    let mut clauses = vec!["time_ms >= $1".to_owned()];
    let mut binds: Vec<String> = Vec::new();
    let mark = |v: String, binds: &mut Vec<String>| {
        binds.push(v);
        format!("${}", binds.len() + 1)
    };
    if let Some(p) = &q.principal {
        if p.contains("::") || p == "Anonymous" {
            let m = mark(p.clone(), &mut binds);
            clauses.push(format!("principal = {m}"));
        } else {
            let alts: Vec<String> = ["User", "Client", "Service"]
                .iter()
                .map(|k| format!("principal = {}", mark(format!("{k}::\"{p}\""), &mut binds)))
                .collect();
            clauses.push(format!("({})", alts.join(" OR ")));
        }
    }
    for (col, v) in [("decision", &q.decision), ("source", &q.source), ("route", &q.route), ("client_ip", &q.client_ip)]
    {
        if let Some(v) = v {
            let m = mark(v.clone(), &mut binds);
            clauses.push(format!("{col} = {m}"));
        }
    }
    let sql = format!(
        "SELECT body FROM audit_events WHERE {} ORDER BY time_ms DESC, seq DESC LIMIT {}",
        clauses.join(" AND "),
        q.limit.clamp(1, 10_000)
    );
    let mut query = sqlx::query(&sql).bind(q.since_ms.unwrap_or(0));
    for b in &binds {
        query = query.bind(b.as_str());
    }
    let mut out = Vec::new();
    for row in query.fetch_all(pool).await? {
        let body: String = row.try_get("body")?;
        if let Ok(v) = serde_json::from_str(&body) {
            out.push(v);
        }
    }
    Ok(out)
}

/// Principals denied most often since `since_ms`.
pub(crate) async fn top_denied(pool: &AnyPool, since_ms: i64, limit: u32) -> DbResult<Vec<(String, u64)>> {
    let rows = sqlx::query(
        "SELECT principal, COUNT(*) AS n FROM audit_events WHERE decision = 'deny' AND time_ms >= $1 \
         GROUP BY principal ORDER BY n DESC, principal LIMIT $2",
    )
    .bind(since_ms)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| Ok((r.try_get("principal")?, u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0)))).collect()
}

/// Traffic per (source, service, principal, decision) since `since_ms`, for the service graph.
pub(crate) async fn edges(
    pool: &AnyPool,
    since_ms: i64,
) -> DbResult<Vec<(String, Option<String>, String, String, u64)>> {
    let rows = sqlx::query(
        "SELECT source, service, principal, decision, COUNT(*) AS n FROM audit_events WHERE time_ms >= $1 \
         GROUP BY source, service, principal, decision",
    )
    .bind(since_ms)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("source")?,
                r.try_get("service")?,
                r.try_get("principal")?,
                r.try_get("decision")?,
                u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0),
            ))
        })
        .collect()
}

/// Detector state kept across restarts.
pub(crate) async fn load_state(pool: &AnyPool, name: &str) -> DbResult<Option<String>> {
    let row = sqlx::query("SELECT body FROM monitor_state WHERE name = $1").bind(name).fetch_optional(pool).await?;
    row.map(|r| r.try_get("body")).transpose()
}

pub(crate) async fn save_state(pool: &AnyPool, name: &str, body: &str) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO monitor_state (name, body, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(body)
    .bind(palisade_store::now())
    .execute(pool)
    .await?;
    Ok(())
}

/// Store `body` under `name` unless a value is there already.
pub(crate) async fn insert_state_if_absent(pool: &AnyPool, name: &str, body: &str) -> DbResult<()> {
    sqlx::query("INSERT INTO monitor_state (name, body, updated_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(body)
        .bind(palisade_store::now())
        .execute(pool)
        .await?;
    Ok(())
}

/// Unix milliseconds of an RFC 3339 time (0 when unparsable: such an event still is stored).
pub(crate) fn time_ms(t: &str) -> i64 {
    humantime::parse_rfc3339_weak(t)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The serde name of a unit enum variant (`deny`, `rate_limit`).
pub(crate) fn enum_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}
