//! The dashboard's data (`palisade_dashboard::DashboardData`) from the audit service: the index
//! for events and top denied principals, the alert manager for alerts, the graph, the live
//! broadcast, and what the server registered (certificates, policies).

use std::time::SystemTime;

use palisade_dashboard::{CertInfo, DashboardData, DataError, EventQuery, Graph, LiveItem, PolicyInfo};
use palisade_monitor::{AckError, ManagedAlert};
use serde_json::Value;

use crate::{index, lock, now_ms, AuditService};

pub(crate) struct Data(pub(crate) AuditService);

fn alert_json(m: &ManagedAlert) -> Value {
    let mut v = serde_json::to_value(&m.alert).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        let (by, at) = match &m.ack {
            Some(a) => (Value::from(a.by.clone()), Value::from(humantime::format_rfc3339_millis(a.at).to_string())),
            None => (Value::Null, Value::Null),
        };
        o.insert("acked_by".into(), by);
        o.insert("acked_at".into(), at);
    }
    v
}

#[async_trait::async_trait]
impl DashboardData for Data {
    async fn graph(&self) -> Graph {
        lock(&self.0.inner.graph).view()
    }

    async fn events(&self, q: EventQuery) -> Vec<Value> {
        let q = index::Query {
            since_ms: q.since_ms.and_then(|s| i64::try_from(s).ok()),
            principal: q.principal,
            decision: q.decision,
            source: q.source,
            route: None,
            client_ip: None,
            limit: u32::try_from(q.limit).unwrap_or(1000).clamp(1, 1000),
        };
        match self.0.query(&q).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "dashboard: event query failed");
                Vec::new()
            }
        }
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<LiveItem> {
        self.0.inner.live.subscribe()
    }

    async fn alerts(&self) -> Vec<Value> {
        let d = lock(&self.0.inner.detect);
        let manager = &d.1;
        // Open alerts first, newest first; then acknowledged ones, most recent first.
        let mut out: Vec<Value> = manager.open().into_iter().rev().map(alert_json).collect();
        out.extend(manager.acked().into_iter().rev().take(200).map(alert_json));
        out
    }

    async fn ack(&self, id: &str, by: &str) -> Result<bool, DataError> {
        let r = lock(&self.0.inner.detect).1.ack(id, by, SystemTime::now());
        match r {
            Ok(()) => {
                tracing::info!(alert = %id, by = %by, "alert acknowledged");
                self.0.save_alerts().await;
                Ok(true)
            }
            Err(AckError::NotFound) => Ok(false),
            Err(AckError::AlreadyAcked) => Ok(true),
        }
    }

    async fn certs(&self) -> Vec<CertInfo> {
        let source = lock(&self.0.inner.certs).clone();
        match source {
            Some(s) => s.certs().await,
            None => Vec::new(),
        }
    }

    async fn policies(&self) -> Vec<PolicyInfo> {
        lock(&self.0.inner.policies).clone()
    }

    async fn top_denied(&self, limit: usize) -> Vec<(String, u64)> {
        let since = now_ms() - 24 * 3600 * 1000;
        let limit = u32::try_from(limit).unwrap_or(100).clamp(1, 100);
        index::top_denied(&self.0.inner.pool, since, limit).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "dashboard: top-denied query failed");
            Vec::new()
        })
    }
}
