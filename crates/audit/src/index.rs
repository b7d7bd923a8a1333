//! The query index of the audit log in the store (table `audit_events`, migration 0003). Every
//! query is portable SQL (`$n` placeholders) for SQLite and PostgreSQL. The index follows the
//! log: a row exists only for a record already appended, and the index is caught up from the log
//! at start, so the log is the source of truth.

use palisade_core::audit::AuditRecord;
use palisade_store::sqlx::{self, AnyPool, Row};
use palisade_store::Backend;
use serde_json::Value;

pub(crate) type DbResult<T> = Result<T, sqlx::Error>;

/// Ids (of `ids`) already stored.
pub(crate) async fn existing(pool: &AnyPool, backend: Backend, ids: &[&str]) -> DbResult<Vec<String>> {
    let mut found = Vec::new();
    if backend == Backend::Sqlite {
        // One statement with one parameter (a JSON array of the ids), whatever the batch size.
        let ids = serde_json::to_string(ids).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let rows = sqlx::query("SELECT id FROM audit_events WHERE id IN (SELECT value FROM json_each($1))")
            .bind(ids)
            .fetch_all(pool)
            .await?;
        for row in rows {
            found.push(row.try_get("id")?);
        }
        return Ok(found);
    }
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

/// The columns of one row, in the order of [`COLUMNS`].
type IndexRow<'a> = (
    &'a str,
    i64,
    i64,
    &'a str,
    Option<&'a str>,
    &'a str,
    String,
    String,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    i32,
    &'a str,
);

const COLUMNS: &str =
    "id, seq, time_ms, source, service, principal, decision, stage, route, method, path, client_ip, status, body";

fn index_row<'a>(seq: u64, r: &'a AuditRecord, body: &'a str) -> IndexRow<'a> {
    let e = &r.event;
    (
        r.id.as_str(),
        i64::try_from(seq).unwrap_or(i64::MAX),
        time_ms(&e.time),
        e.source.as_ref(),
        e.service.as_deref(),
        e.principal.as_str(),
        enum_name(&e.decision),
        enum_name(&e.stage),
        e.route.as_str(),
        e.method.as_str(),
        e.path.as_str(),
        e.client_ip.as_str(),
        i32::from(e.status),
        body,
    )
}

/// Index records `(seq, record, its JSON)` in one transaction.
pub(crate) async fn insert(pool: &AnyPool, backend: Backend, rows: &[(u64, &AuditRecord, &str)]) -> DbResult<()> {
    if backend == Backend::Sqlite {
        return insert_sqlite(pool, rows).await;
    }
    // sqlx looks up every parameter's name (a linear scan in SQLite, kept the same here): a
    // statement with n parameters costs O(n²), so the rows per statement stay few.
    const PER_STATEMENT: usize = 8;
    const COLS: usize = 14;
    let mut tx = pool.begin().await?;
    for chunk in rows.chunks(PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|r| {
                let marks: Vec<String> = (1..=COLS).map(|c| format!("${}", r * COLS + c)).collect();
                format!("({})", marks.join(", "))
            })
            .collect();
        let sql =
            format!("INSERT INTO audit_events ({COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING", values.join(", "));
        let mut q = sqlx::query(&sql);
        for (seq, r, body) in chunk {
            let row = index_row(*seq, r, body);
            q = q
                .bind(row.0)
                .bind(row.1)
                .bind(row.2)
                .bind(row.3)
                .bind(row.4)
                .bind(row.5)
                .bind(row.6)
                .bind(row.7)
                .bind(row.8)
                .bind(row.9)
                .bind(row.10)
                .bind(row.11)
                .bind(row.12)
                .bind(row.13);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// SQLite: the whole batch in one statement with two parameters: a JSON array of rows (each an
/// array of the columns in [`COLUMNS`] order, the body replaced by its byte offset and length)
/// unpacked by json1, and the bodies one after another as a blob. Per statement, sqlx costs a
/// round trip to its worker thread and a scan per parameter; here both are paid once per batch,
/// and the bodies (most of the bytes) are neither escaped nor parsed as JSON. JSON strings come
/// back as the same text, integers as integers, null as NULL, and a body slice cast to TEXT is
/// its UTF-8 text, so the rows are those of the multi-row INSERT. (`WHERE true` lets the parser
/// take `ON CONFLICT` as the upsert clause.)
async fn insert_sqlite(pool: &AnyPool, rows: &[(u64, &AuditRecord, &str)]) -> DbResult<()> {
    // Each row is taken out of the array once, as JSONB: `->>` then reads it without parsing (a
    // `value` named 15 times is rendered as text 15 times).
    const SQL: &str = "WITH r(v) AS MATERIALIZED (SELECT jsonb(value) FROM json_each($1)) \
        INSERT INTO audit_events (id, seq, time_ms, source, service, principal, decision, stage, route, method, \
        path, client_ip, status, body) SELECT v ->> 0, v ->> 1, v ->> 2, v ->> 3, v ->> 4, v ->> 5, v ->> 6, \
        v ->> 7, v ->> 8, v ->> 9, v ->> 10, v ->> 11, v ->> 12, CAST(substr($2, v ->> 13, v ->> 14) AS TEXT) \
        FROM r WHERE true ON CONFLICT (id) DO NOTHING";
    // An ingest batch (at most MAX_BATCH_RECORDS) is one statement; catching up from a long log
    // goes in one transaction of statements of this many rows, far below SQLite's 1 GB value limit.
    const PER_STATEMENT: usize = 10_000;
    if rows.len() <= PER_STATEMENT {
        let (json, bodies) = sqlite_params(rows)?;
        sqlx::query(SQL).bind(json).bind(bodies).execute(pool).await?;
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for chunk in rows.chunks(PER_STATEMENT) {
        let (json, bodies) = sqlite_params(chunk)?;
        sqlx::query(SQL).bind(json).bind(bodies).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// The two parameters of [`insert_sqlite`]'s statement: the rows as JSON, the bodies as a blob.
fn sqlite_params(rows: &[(u64, &AuditRecord, &str)]) -> DbResult<(String, Vec<u8>)> {
    let mut bodies: Vec<u8> = Vec::with_capacity(rows.iter().map(|(_, _, b)| b.len()).sum());
    let mut batch = Vec::with_capacity(rows.len());
    for (seq, r, body) in rows {
        let c = index_row(*seq, r, body);
        // substr() on a blob counts bytes from 1.
        let at = bodies.len() + 1;
        bodies.extend_from_slice(body.as_bytes());
        batch.push((c.0, c.1, c.2, c.3, c.4, c.5, c.6, c.7, c.8, c.9, c.10, c.11, c.12, at, body.len()));
    }
    let json = serde_json::to_string(&batch).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    Ok((json, bodies))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use palisade_core::audit::{AuditEvent, Decision, Stage};
    use palisade_store::Store;

    fn record(i: u16, service: Option<&str>) -> AuditRecord {
        AuditRecord {
            id: format!("gw-{i}"),
            event: AuditEvent {
                time: "2026-11-26T03:00:00.250Z".into(),
                source: "sidecar".into(),
                service: service.map(str::to_owned),
                request_id: "r".into(),
                decision: if i.is_multiple_of(2) { Decision::Deny } else { Decision::Allow },
                stage: Stage::RateLimit,
                reason: "quote \" backslash \\ é \u{1}".into(),
                principal: "User::\"alice\"".into(),
                client_id: None,
                auth_method: None,
                route: "orders".into(),
                method: "POST".into(),
                path: "/o/é?x=\"1\"".into(),
                client_ip: "10.0.0.1".into(),
                policy_ids: vec![],
                status: 429 + i,
                latency_ms: 1.25,
                waf: Vec::new(),
            },
        }
    }

    /// Every column with its SQLite storage class, in id order.
    async fn dump(pool: &AnyPool) -> Vec<Vec<String>> {
        let cols: Vec<&str> = COLUMNS.split(", ").collect();
        let sel: Vec<String> = cols.iter().map(|c| format!("quote({c}) AS {c}, typeof({c}) AS t_{c}")).collect();
        let sql = format!("SELECT {} FROM audit_events ORDER BY id", sel.join(", "));
        let rows = sqlx::query(&sql).fetch_all(pool).await.unwrap();
        rows.iter()
            .map(|r| {
                cols.iter()
                    .flat_map(|c| [r.try_get::<String, _>(*c).unwrap(), r.try_get(format!("t_{c}").as_str()).unwrap()])
                    .collect()
            })
            .collect()
    }

    /// The JSON-array insert on SQLite stores exactly what the multi-row INSERT (the PostgreSQL
    /// path, portable SQL) stores: same values, same storage classes; conflicts are skipped.
    #[tokio::test]
    async fn json_insert_equals_multi_row_insert() {
        let records: Vec<AuditRecord> = (0..20).map(|i| record(i, i.is_multiple_of(3).then_some("billing"))).collect();
        let bodies: Vec<String> = records.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
        let rows: Vec<(u64, &AuditRecord, &str)> =
            records.iter().zip(&bodies).enumerate().map(|(i, (r, b))| (i as u64 + 7, r, b.as_str())).collect();
        let mut dumps = Vec::new();
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&palisade_store::sqlite_url(dir.path())).await.unwrap();
            insert(store.pool(), backend, &rows[..12]).await.unwrap();
            // Overlapping rows: the first twelve are kept as they are.
            insert(store.pool(), backend, &rows[5..]).await.unwrap();
            let ids: Vec<&str> = vec!["gw-3", "nope", "gw-19"];
            let mut found = existing(store.pool(), backend, &ids).await.unwrap();
            found.sort();
            assert_eq!(found, ["gw-19", "gw-3"]);
            dumps.push(dump(store.pool()).await);
        }
        assert_eq!(dumps[0].len(), 20);
        assert_eq!(dumps[0], dumps[1]);
        let first = &dumps[0][0];
        assert_eq!(first[..8], ["'gw-0'", "text", "7", "integer", "1795662000250", "integer", "'sidecar'", "text"]);
        assert_eq!(first[8..10], ["'billing'", "text"]);
        assert_eq!(dumps[0][1][8..10], ["NULL", "null"]);
        assert_eq!(first[12..16], ["'deny'", "text", "'rate_limit'", "text"]);
        assert_eq!(first[24..26], ["429", "integer"]);
        assert_eq!(first[26], format!("'{}'", bodies[0].replace('\'', "''")));
    }

    /// More rows than one statement takes (catching up from a long log): all are stored.
    #[tokio::test]
    async fn sqlite_insert_of_many_rows_spans_statements() {
        let r = record(1, None);
        let ids: Vec<String> = (0..10_005).map(|i| format!("id-{i}")).collect();
        let records: Vec<AuditRecord> =
            ids.iter().map(|id| AuditRecord { id: id.clone(), event: r.event.clone() }).collect();
        let body = serde_json::to_string(&r).unwrap();
        let rows: Vec<(u64, &AuditRecord, &str)> =
            records.iter().enumerate().map(|(i, r)| (i as u64 + 1, r, body.as_str())).collect();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&palisade_store::sqlite_url(dir.path())).await.unwrap();
        insert(store.pool(), Backend::Sqlite, &rows).await.unwrap();
        let row = sqlx::query("SELECT COUNT(*) AS n, MAX(seq) AS m, MIN(body = $1) AS same FROM audit_events")
            .bind(body.as_str())
            .fetch_one(store.pool())
            .await
            .unwrap();
        let got: (i64, i64, i64) = (row.try_get("n").unwrap(), row.try_get("m").unwrap(), row.try_get("same").unwrap());
        assert_eq!(got, (10_005, 10_005, 1));
    }
}
