//! The alert manager: deduplication, suppression and acknowledgement. Invariants: at most one
//! open alert per key (`open_by_key`); every stored alert is in exactly one of `open_order` and
//! `acked_order`; the store holds at most `max_alerts` (acknowledged ones evicted first).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::bounded::BoundedMap;
use crate::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerConfig {
    /// After a notification for a key, no other for that key within this time (updates of an
    /// open alert, or a new alert after an acknowledgement, are recorded but not re-notified).
    #[serde(with = "crate::time::duration")]
    pub suppression: Duration,
    /// Most alerts kept (open and acknowledged); the oldest acknowledged go first.
    pub max_alerts: usize,
    /// Most event ids kept on one alert.
    pub max_event_ids: usize,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig { suppression: Duration::from_secs(3600), max_alerts: 10_000, max_event_ids: 100 }
    }
}

/// An acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    #[serde(with = "crate::time::rfc3339")]
    pub at: SystemTime,
}

/// A stored alert and whether someone acknowledged it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagedAlert {
    pub alert: Alert,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<Ack>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("no alert with this id")]
    NotFound,
    #[error("the alert is already acknowledged")]
    AlreadyAcked,
}

#[derive(Debug)]
pub struct AlertManager {
    cfg: ManagerConfig,
    alerts: HashMap<String, ManagedAlert>,
    open_by_key: HashMap<String, String>,
    open_order: VecDeque<String>,
    acked_order: VecDeque<String>,
    /// Key → last notification time.
    last_notified: BoundedMap<String, SystemTime>,
    metrics: Metrics,
}

impl AlertManager {
    pub fn new(cfg: ManagerConfig, metrics: Metrics) -> AlertManager {
        let cap = cfg.max_alerts.max(1);
        AlertManager {
            cfg,
            alerts: HashMap::new(),
            open_by_key: HashMap::new(),
            open_order: VecDeque::new(),
            acked_order: VecDeque::new(),
            last_notified: BoundedMap::new(cap),
            metrics,
        }
    }

    /// Take in a detector's alert. An open alert with the same key absorbs it (count added,
    /// `last_seen` advanced, new event ids appended up to the cap, higher severity kept);
    /// otherwise it is stored as a new open alert. Returns the alert to notify (a snapshot of the
    /// stored one), or `None` while the key's suppression window runs.
    pub fn ingest(&mut self, alert: Alert, now: SystemTime) -> Option<Alert> {
        let key = alert.key.clone();
        let stored_id = match self.open_by_key.get(&key).and_then(|id| self.alerts.get_mut(id)) {
            Some(open) => {
                let a = &mut open.alert;
                a.count = a.count.saturating_add(alert.count);
                a.last_seen = a.last_seen.max(alert.last_seen);
                a.first_seen = a.first_seen.min(alert.first_seen);
                a.severity = a.severity.max(alert.severity);
                for id in alert.event_ids {
                    if a.event_ids.len() >= self.cfg.max_event_ids {
                        break;
                    }
                    if !a.event_ids.contains(&id) {
                        a.event_ids.push(id);
                    }
                }
                a.id.clone()
            }
            None => {
                let mut alert = alert;
                alert.event_ids.truncate(self.cfg.max_event_ids);
                let id = alert.id.clone();
                self.metrics.alert_opened(alert.kind, alert.severity);
                if let Some(old) = self.alerts.remove(&id) {
                    // Same id reused (a restarted detector): forget the old one first.
                    self.forget(&old);
                }
                self.open_by_key.insert(key.clone(), id.clone());
                self.open_order.push_back(id.clone());
                self.alerts.insert(id.clone(), ManagedAlert { alert, ack: None });
                self.evict();
                id
            }
        };
        let last = self.last_notified.touch(&key, || SystemTime::UNIX_EPOCH);
        let due = *last == SystemTime::UNIX_EPOCH
            || now.duration_since(*last).is_ok_and(|since| since >= self.cfg.suppression);
        if !due {
            return None;
        }
        *last = now;
        let snapshot = self.alerts.get(&stored_id).map(|m| m.alert.clone())?;
        self.metrics.notified(snapshot.kind, snapshot.severity);
        Some(snapshot)
    }

    /// Acknowledge an open alert: it leaves the open list, and its key's next alert opens a new one.
    pub fn ack(&mut self, id: &str, by: &str, now: SystemTime) -> Result<(), AckError> {
        let m = self.alerts.get_mut(id).ok_or(AckError::NotFound)?;
        if m.ack.is_some() {
            return Err(AckError::AlreadyAcked);
        }
        m.ack = Some(Ack { by: crate::alert::clean(by, 128), at: now });
        if self.open_by_key.get(&m.alert.key).is_some_and(|open| open == id) {
            self.open_by_key.remove(&m.alert.key);
        }
        self.open_order.retain(|x| x != id);
        self.acked_order.push_back(id.to_owned());
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&ManagedAlert> {
        self.alerts.get(id)
    }

    /// Open alerts, oldest first.
    pub fn open(&self) -> Vec<&ManagedAlert> {
        self.open_order.iter().filter_map(|id| self.alerts.get(id)).collect()
    }

    /// Acknowledged alerts, in acknowledgement order.
    pub fn acked(&self) -> Vec<&ManagedAlert> {
        self.acked_order.iter().filter_map(|id| self.alerts.get(id)).collect()
    }

    /// Every stored alert (open ones first, oldest first; then acknowledged ones in
    /// acknowledgement order), for keeping them across a restart.
    pub fn snapshot(&self) -> Vec<ManagedAlert> {
        self.open().into_iter().chain(self.acked()).cloned().collect()
    }

    /// Take back a [`AlertManager::snapshot`] (into an empty manager). An open alert counts as
    /// notified at its `last_seen`, so a restart does not notify it again inside the suppression
    /// window; the first open alert of a key wins.
    pub fn restore(&mut self, alerts: Vec<ManagedAlert>) {
        for m in alerts {
            let id = m.alert.id.clone();
            if self.alerts.contains_key(&id) {
                continue;
            }
            match m.ack {
                Some(_) => self.acked_order.push_back(id.clone()),
                None => {
                    if self.open_by_key.contains_key(&m.alert.key) {
                        continue;
                    }
                    self.open_by_key.insert(m.alert.key.clone(), id.clone());
                    self.open_order.push_back(id.clone());
                    let seen = m.alert.last_seen;
                    *self.last_notified.touch(&m.alert.key, || seen) = seen;
                }
            }
            self.alerts.insert(id, m);
        }
        self.evict();
    }

    fn forget(&mut self, old: &ManagedAlert) {
        let id = &old.alert.id;
        if self.open_by_key.get(&old.alert.key).is_some_and(|open| open == id) {
            self.open_by_key.remove(&old.alert.key);
        }
        self.open_order.retain(|x| x != id);
        self.acked_order.retain(|x| x != id);
    }

    fn evict(&mut self) {
        while self.alerts.len() > self.cfg.max_alerts.max(1) {
            let Some(id) = self.acked_order.pop_front().or_else(|| self.open_order.pop_front()) else { break };
            if let Some(old) = self.alerts.remove(&id) {
                if self.open_by_key.get(&old.alert.key).is_some_and(|open| *open == id) {
                    self.open_by_key.remove(&old.alert.key);
                }
            }
        }
    }
}
