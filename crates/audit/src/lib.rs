//! Palisade's server-side audit pipeline, run inside `palisade server`:
//! - **ingest**: `POST /audit/v1/events` takes batches of [`AuditRecord`]s as NDJSON from the
//!   shippers (gateway, sidecars; the idp and CA record directly). A batch is checked whole
//!   before anything is kept; ids already stored are counted as duplicates, so a re-sent batch
//!   is harmless.
//! - **log**: new records are appended to the tamper-evident log (`palisade-auditlog`: SHA-256
//!   chain, Ed25519 checkpoints under a key sealed by the master key), then indexed in the store
//!   for queries (`GET /audit/v1/events`, `palisade audit query`).
//! - **detection**: every new record goes through the detectors; alerts are deduplicated,
//!   suppressed, sent to webhooks, counted in metrics and pushed to the dashboard's live stream.
//!
//! Not for: verifying a log (`palisade_auditlog::verify`), or serving the UI (`palisade-dashboard`
//! renders what [`AuditService`] provides through `DashboardData`).
//!
//! Invariant: the log is written before the index, and ingest is serialized (one batch at a
//! time), so the index never names a record the log lacks, and at start the index is caught up
//! from the log; a record is thus in the log exactly once.

mod config;
mod dashboard;
mod graph;
mod index;
mod key;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::extract::{Query as AxQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use palisade_auditlog::{AuditLog, LogConfig, Retention};
use palisade_core::audit::{AuditEvent, AuditRecord, AuditSink};
use palisade_crypto::MasterKey;
use palisade_dashboard::{CertInfo, LiveItem, PolicyInfo};
use palisade_monitor::{Alert, AlertManager, Detectors, Metrics, Notifier};
use palisade_store::sqlx::AnyPool;
use palisade_store::{Backend, Store};
use serde_json::{json, Value};

pub use config::{FsyncName, LogSection, MonitorFile};
pub use index::Query;
pub use key::log_public_key;

/// Search the index of a store directly (the `palisade audit query` command; no server needed).
pub async fn query_store(store: &Store, q: &Query) -> Result<Vec<Value>, AuditError> {
    Ok(index::query(store.pool(), q).await?)
}

/// Largest ingest request body.
pub const MAX_BATCH_BYTES: usize = 8 << 20;
/// Most records in one ingest request.
pub const MAX_BATCH_RECORDS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log: {0}")]
    Log(#[from] palisade_auditlog::AuditLogError),
    #[error("audit index: {0}")]
    Db(#[from] palisade_store::sqlx::Error),
    #[error("audit log key: {0}")]
    Key(String),
    #[error("monitor configuration: {0}")]
    Config(String),
}

/// Where the certificates the dashboard lists (and the expiry detector watches) come from.
#[async_trait::async_trait]
pub trait CertSource: Send + Sync + 'static {
    async fn certs(&self) -> Vec<CertInfo>;
}

/// The settings of [`AuditService::open`].
pub struct AuditServiceConfig {
    /// The log's directory (`<data>/audit/log`).
    pub dir: PathBuf,
    pub file: MonitorFile,
    /// SHA-256 of each bearer token accepted at ingest and at the query API.
    pub token_sha256: Vec<[u8; 32]>,
}

pub struct AuditService {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    backend: Backend,
    dir: PathBuf,
    log: Arc<Mutex<Option<AuditLog>>>,
    /// Serializes ingest: dedup, log append and index insert of one batch at a time.
    gate: tokio::sync::Mutex<()>,
    detect: Mutex<(Detectors, AlertManager)>,
    notifier: Notifier,
    metrics: Metrics,
    live: tokio::sync::broadcast::Sender<LiveItem>,
    tokens: Vec<[u8; 32]>,
    retention: Retention,
    certs: Mutex<Option<Arc<dyn CertSource>>>,
    policies: Mutex<Vec<PolicyInfo>>,
    graph: Mutex<graph::Graph>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AuditService {
    /// Open (or create) the log, catch the index up with it and start the webhook sender. Must run
    /// inside a tokio runtime.
    pub async fn open(store: &Store, master: &MasterKey, cfg: AuditServiceConfig) -> Result<AuditService, AuditError> {
        let pool = store.pool().clone();
        let seed = key::log_seed(&pool, master).await?;
        let f = &cfg.file;
        let log_cfg = LogConfig {
            dir: cfg.dir.clone(),
            checkpoint_every: f.audit_log.checkpoint_every,
            segment_max_bytes: f.audit_log.segment_max_bytes,
            fsync: f.audit_log.fsync.into(),
        };
        let dir = cfg.dir.clone();
        let (log, report) = tokio::task::spawn_blocking(move || AuditLog::open(log_cfg, &seed))
            .await
            .map_err(|e| AuditError::Config(format!("opening the audit log: {e}")))??;
        if let Some(t) = &report.torn {
            tracing::warn!(segment = %t.segment, line = t.line, bytes = t.bytes_cut, "audit log: a torn last record (crash during a write) was cut off");
        }
        let metrics = Metrics::default();
        let mut detectors = Detectors::new(f.detectors.clone()).map_err(|e| AuditError::Config(e.to_string()))?;
        if let Some(b) = index::load_state(&pool, BASELINE_STATE).await? {
            match serde_json::from_str(&b) {
                Ok(b) => detectors.import_baseline(b),
                Err(e) => {
                    tracing::warn!(error = %e, "monitor: stored service-edge baseline unreadable; learning again")
                }
            }
        }
        let mut manager = AlertManager::new(f.alerts.clone(), metrics.clone());
        if let Some(a) = index::load_state(&pool, ALERTS_STATE).await? {
            match serde_json::from_str(&a) {
                Ok(alerts) => manager.restore(alerts),
                Err(e) => tracing::warn!(error = %e, "monitor: stored alerts unreadable; starting without them"),
            }
        }
        let notifier =
            Notifier::spawn(f.webhooks.clone(), metrics.clone()).map_err(|e| AuditError::Config(e.to_string()))?;
        let (live, _) = tokio::sync::broadcast::channel(1024);
        let inner = Arc::new(Inner {
            pool,
            backend: store.backend(),
            dir,
            log: Arc::new(Mutex::new(Some(log))),
            gate: tokio::sync::Mutex::new(()),
            detect: Mutex::new((detectors, manager)),
            notifier,
            metrics,
            live,
            tokens: cfg.token_sha256,
            retention: Retention { max_age: f.audit_log.max_age, max_bytes: f.audit_log.max_bytes },
            certs: Mutex::new(None),
            policies: Mutex::new(Vec::new()),
            graph: Mutex::new(graph::Graph::default()),
        });
        let svc = AuditService { inner };
        svc.catch_up().await?;
        svc.rebuild_graph().await?;
        Ok(svc)
    }

    /// Index the records the log has and the index lacks (a crash between the two writes).
    async fn catch_up(&self) -> Result<(), AuditError> {
        let from = index::max_seq(&self.inner.pool).await? + 1;
        let dir = self.inner.dir.clone();
        let records = tokio::task::spawn_blocking(move || -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
            Ok(palisade_auditlog::read_from(&dir, from)?.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .map_err(|e| AuditError::Config(format!("reading the audit log: {e}")))??;
        if records.is_empty() {
            return Ok(());
        }
        let parsed: Vec<(u64, AuditRecord, String)> = records
            .into_iter()
            .filter_map(|(seq, bytes)| {
                let text = String::from_utf8(bytes).ok()?;
                let rec: AuditRecord = serde_json::from_str(&text).ok()?;
                Some((seq, rec, text))
            })
            .collect();
        let rows: Vec<(u64, &AuditRecord, &str)> = parsed.iter().map(|(s, r, t)| (*s, r, t.as_str())).collect();
        index::insert(&self.inner.pool, self.inner.backend, &rows).await?;
        tracing::info!(records = rows.len(), "audit index caught up with the log");
        Ok(())
    }

    async fn rebuild_graph(&self) -> Result<(), AuditError> {
        let since = now_ms() - GRAPH_WINDOW_MS;
        let rows = index::edges(&self.inner.pool, since).await?;
        lock(&self.inner.graph).load(rows);
        Ok(())
    }

    /// Records taken in, stored and analysed; `Ok((accepted, duplicates))`.
    pub async fn ingest(&self, records: Vec<AuditRecord>) -> Result<(usize, usize), AuditError> {
        let inner = &self.inner;
        let _gate = inner.gate.lock().await;
        let total = records.len();
        let known: std::collections::HashSet<String> = {
            let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
            index::existing(&inner.pool, inner.backend, &ids).await?.into_iter().collect()
        };
        let mut seen = std::collections::HashSet::new();
        let fresh: Vec<(AuditRecord, String)> = records
            .into_iter()
            .filter(|r| !known.contains(&r.id) && seen.insert(r.id.clone()))
            .map(|r| serde_json::to_string(&r).map(|s| (r, s)))
            .collect::<Result<_, _>>()
            .map_err(|e| AuditError::Config(format!("serializing a record: {e}")))?;
        let duplicates = total - fresh.len();
        if fresh.is_empty() {
            return Ok((0, duplicates));
        }
        // The batch goes to the blocking append and comes back, so no record is copied.
        let log = inner.log.clone();
        let (fresh, seqs) = tokio::task::spawn_blocking(move || {
            let mut guard = lock(&log);
            let log = guard.as_mut().ok_or_else(|| AuditError::Config("the audit log is closed".into()))?;
            let refs: Vec<&[u8]> = fresh.iter().map(|(_, s)| s.as_bytes()).collect();
            let seqs = log.append_batch(&refs)?;
            Ok::<_, AuditError>((fresh, seqs))
        })
        .await
        .map_err(|e| AuditError::Config(format!("appending to the audit log: {e}")))??;
        let rows: Vec<(u64, &AuditRecord, &str)> =
            seqs.zip(fresh.iter()).map(|(seq, (r, s))| (seq, r, s.as_str())).collect();
        index::insert(&inner.pool, inner.backend, &rows).await?;
        drop(_gate);
        self.analyse(&fresh);
        Ok((fresh.len(), duplicates))
    }

    /// Detectors, alerts, the graph and the live stream, for records just stored.
    fn analyse(&self, fresh: &[(AuditRecord, String)]) {
        let inner = &self.inner;
        let now = SystemTime::now();
        let mut notify: Vec<Alert> = Vec::new();
        {
            let mut d = lock(&inner.detect);
            let (detectors, manager) = &mut *d;
            for (r, _) in fresh {
                for alert in detectors.observe(r, now) {
                    if let Some(n) = manager.ingest(alert, now) {
                        notify.push(n);
                    }
                }
            }
        }
        {
            let mut g = lock(&inner.graph);
            for (r, _) in fresh {
                g.add(&r.event);
            }
        }
        // Only parsed again for the live stream when a dashboard is watching.
        if inner.live.receiver_count() > 0 {
            for (_, body) in fresh {
                if let Ok(v) = serde_json::from_str(body) {
                    let _ = inner.live.send(LiveItem::Event(v));
                }
            }
        }
        for alert in notify {
            tracing::warn!(kind = ?alert.kind, severity = ?alert.severity, key = %alert.key, "{}", alert.summary);
            if let Ok(v) = serde_json::to_value(&alert) {
                let _ = inner.live.send(LiveItem::Alert(v));
            }
            inner.notifier.notify(alert);
        }
    }

    pub async fn query(&self, q: &Query) -> Result<Vec<Value>, AuditError> {
        Ok(index::query(&self.inner.pool, q).await?)
    }

    /// The monitoring metrics (alerts, notifications, webhook deliveries).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.metrics.register(registry);
    }

    /// The certificates to list and to watch for expiry.
    pub fn set_cert_source(&self, source: Arc<dyn CertSource>) {
        *lock(&self.inner.certs) = Some(source);
    }

    /// The policies the dashboard lists.
    pub fn set_policies(&self, policies: Vec<PolicyInfo>) {
        *lock(&self.inner.policies) = policies;
    }

    /// A sink for events made inside this process (the idp, the CA, an in-process gateway):
    /// they get ids and go through [`AuditService::ingest`] from a background task.
    pub fn local_sink(&self, instance: &str) -> Arc<dyn AuditSink> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<AuditEvent>(65_536);
        let svc = AuditService { inner: self.inner.clone() };
        let prefix = format!("{instance}-{}", random_hex(8));
        tokio::spawn(async move {
            let mut seq = 0u64;
            let mut batch = Vec::new();
            while let Some(e) = rx.recv().await {
                batch.push(e);
                while batch.len() < 500 {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                let records = batch
                    .drain(..)
                    .map(|event| {
                        seq += 1;
                        AuditRecord { id: format!("{prefix}-{seq}"), event }
                    })
                    .collect();
                if let Err(e) = svc.ingest(records).await {
                    tracing::error!(error = %e, "audit: events from this process were not stored");
                }
            }
        });
        Arc::new(LocalSink { tx, dropped: std::sync::atomic::AtomicU64::new(0) })
    }

    /// Start the periodic work: retention, certificate-expiry checks, saving the learned
    /// service-edge baseline. Abort the handles to stop.
    pub fn spawn_background(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let svc = AuditService { inner: self.inner.clone() };
        vec![tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                svc.housekeeping().await;
            }
        })]
    }

    /// One round of the periodic work.
    async fn housekeeping(&self) {
        let inner = &self.inner;
        let source = lock(&inner.certs).clone();
        if let Some(source) = source {
            let now = SystemTime::now();
            let mut alerts = Vec::new();
            for c in source.certs().await {
                let not_after = now + Duration::from_secs(u64::try_from(c.seconds_left.max(0)).unwrap_or(0));
                let mut d = lock(&inner.detect);
                let (detectors, manager) = &mut *d;
                if let Some(a) = detectors.observe_expiry(&c.name, not_after, now) {
                    if let Some(n) = manager.ingest(a, now) {
                        alerts.push(n);
                    }
                }
            }
            for alert in alerts {
                if let Ok(v) = serde_json::to_value(&alert) {
                    let _ = inner.live.send(LiveItem::Alert(v));
                }
                inner.notifier.notify(alert);
            }
        }
        let baseline = serde_json::to_string(&lock(&inner.detect).0.baseline()).ok();
        if let Some(b) = baseline {
            if let Err(e) = index::save_state(&inner.pool, BASELINE_STATE, &b).await {
                tracing::warn!(error = %e, "monitor: saving the service-edge baseline failed");
            }
        }
        self.save_alerts().await;
        if inner.retention.max_age.is_some() || inner.retention.max_bytes.is_some() {
            let log = inner.log.clone();
            let retention = inner.retention;
            let r =
                tokio::task::spawn_blocking(move || lock(&log).as_mut().map(|l| l.apply_retention(retention))).await;
            match r {
                Ok(Some(Ok(report))) if !report.deleted.is_empty() => {
                    tracing::info!(
                        segments = report.deleted.len(),
                        first_seq = report.first_seq,
                        "audit log retention"
                    );
                    if let Err(e) = index::forget_before(&inner.pool, report.first_seq).await {
                        tracing::warn!(error = %e, "audit index retention failed");
                    }
                }
                Ok(Some(Err(e))) => tracing::error!(error = %e, "audit log retention failed"),
                _ => {}
            }
        }
    }

    /// Keep the alerts (open and acknowledged) in the store.
    pub(crate) async fn save_alerts(&self) {
        let snapshot = serde_json::to_string(&lock(&self.inner.detect).1.snapshot()).ok();
        if let Some(a) = snapshot {
            if let Err(e) = index::save_state(&self.inner.pool, ALERTS_STATE, &a).await {
                tracing::warn!(error = %e, "monitor: saving the alerts failed");
            }
        }
    }

    /// Write a final checkpoint and stop taking records.
    pub async fn close(&self) {
        self.save_alerts().await;
        let _gate = self.inner.gate.lock().await;
        let log = self.inner.log.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(l) = lock(&log).take() {
                if let Err(e) = l.close() {
                    tracing::error!(error = %e, "closing the audit log");
                }
            }
        })
        .await;
    }

    /// `POST /audit/v1/events` (ingest) and `GET /audit/v1/events` (query), bearer tokens.
    pub fn router(&self) -> Router {
        let svc = Arc::new(AuditService { inner: self.inner.clone() });
        Router::new()
            .route("/audit/v1/events", post(ingest_handler).get(query_handler))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BATCH_BYTES))
            .with_state(svc)
    }

    /// The data behind the `/ui` dashboard.
    pub fn dashboard_data(&self) -> Arc<dyn palisade_dashboard::DashboardData> {
        Arc::new(dashboard::Data(AuditService { inner: self.inner.clone() }))
    }
}

const BASELINE_STATE: &str = "lateral_baseline";
/// Open and acknowledged alerts, kept across restarts.
const ALERTS_STATE: &str = "alerts";
/// The service graph shows the last 24 hours.
const GRAPH_WINDOW_MS: i64 = 24 * 3600 * 1000;

struct LocalSink {
    tx: tokio::sync::mpsc::Sender<AuditEvent>,
    dropped: std::sync::atomic::AtomicU64,
}

impl AuditSink for LocalSink {
    fn try_record(&self, event: AuditEvent) -> bool {
        self.tx.try_send(event).is_ok()
    }

    fn record(&self, event: AuditEvent) {
        if self.tx.try_send(event).is_err() {
            let n = self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n + 1, "audit: the in-process queue is full; events dropped");
            }
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn error(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    (status, Json(json!({ "error": error, "error_description": description.into() }))).into_response()
}

fn authorized(svc: &AuditService, headers: &HeaderMap) -> bool {
    let Some(token) =
        headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes());
    // Every accepted token is compared in full (constant time per comparison).
    svc.inner.tokens.iter().fold(false, |ok, t| ok | bool::from(subtle::ConstantTimeEq::ct_eq(&t[..], digest.as_ref())))
}

fn unauthorized() -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "invalid_token", "a valid bearer token is required");
    r.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    r
}

/// Parse a whole NDJSON batch: every line must be a record, or nothing is taken.
pub fn parse_batch(body: &[u8]) -> Result<Vec<AuditRecord>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: AuditRecord = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if r.id.is_empty() || r.id.len() > 128 {
            return Err(format!("line {}: id must be 1 to 128 characters", i + 1));
        }
        out.push(r);
        if out.len() > MAX_BATCH_RECORDS {
            return Err(format!("more than {MAX_BATCH_RECORDS} records in one batch"));
        }
    }
    Ok(out)
}

async fn ingest_handler(State(svc): State<Arc<AuditService>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&svc, &headers) {
        return unauthorized();
    }
    let records = match parse_batch(&body) {
        Ok(r) => r,
        Err(m) => return error(StatusCode::BAD_REQUEST, "invalid_request", m),
    };
    match svc.ingest(records).await {
        Ok((accepted, duplicates)) => Json(json!({ "accepted": accepted, "duplicates": duplicates })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "audit ingest failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "the audit log could not store the batch")
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryParams {
    since: Option<String>,
    principal: Option<String>,
    decision: Option<String>,
    source: Option<String>,
    route: Option<String>,
    client_ip: Option<String>,
    limit: Option<u32>,
}

/// `since`: a duration back from now (`1h`) or an RFC 3339 time.
pub fn parse_since(s: &str) -> Result<i64, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2));
    }
    match humantime::parse_rfc3339_weak(s) {
        Ok(_) => Ok(index::time_ms(s)),
        Err(_) => Err(format!("since: {s:?} is neither a duration (1h, 30m) nor an RFC 3339 time")),
    }
}

async fn query_handler(
    State(svc): State<Arc<AuditService>>,
    headers: HeaderMap,
    params: Result<AxQuery<QueryParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !authorized(&svc, &headers) {
        return unauthorized();
    }
    let AxQuery(p) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()),
    };
    let since_ms = match p.since.as_deref().map(parse_since).transpose() {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, "invalid_request", m),
    };
    if let Some(d) = &p.decision {
        if d != "allow" && d != "deny" {
            return error(StatusCode::BAD_REQUEST, "invalid_request", "decision: allow or deny");
        }
    }
    let q = Query {
        since_ms,
        principal: p.principal,
        decision: p.decision,
        source: p.source,
        route: p.route,
        client_ip: p.client_ip,
        limit: p.limit.unwrap_or(100).clamp(1, 10_000),
    };
    match svc.query(&q).await {
        Ok(events) => Json(json!({ "events": events })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "audit query failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "the audit index could not be read")
        }
    }
}
