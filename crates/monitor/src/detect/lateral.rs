//! Lateral movement: service-to-service edges (caller SPIFFE ID → the emitting sidecar's own
//! SPIFFE ID). Allowed edges seen during the learning period form the baseline; after it, an
//! edge outside the baseline raises one alert (remembered, bounded, so it does not repeat).
//! Denied calls never enter the baseline: a refused probe during learning stays suspicious.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::bounded::BoundedMap;
use crate::time::{from_ms, to_ms};

/// One directed edge: `from` called `to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    pub from: String,
    pub to: String,
}

/// The learned edges, to persist across restarts ([`Detectors::baseline`](crate::Detectors::baseline),
/// [`Detectors::import_baseline`](crate::Detectors::import_baseline)).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// When learning began; learning ends `learning_period` later. `None`: not started.
    #[serde(default, with = "crate::time::rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub learning_started: Option<SystemTime>,
    #[serde(default)]
    pub edges: Vec<Edge>,
}

#[derive(Debug)]
pub(crate) struct Lateral {
    edges: BTreeSet<Edge>,
    started: Option<u64>,
    learning: u64,
    max_edges: usize,
    alerted: BoundedMap<Edge, ()>,
}

/// The SPIFFE ID in a `Service::"spiffe://..."` principal.
pub(crate) fn service_id(principal: &str) -> Option<&str> {
    let id = principal.strip_prefix("Service::\"")?.strip_suffix('"')?;
    (id.starts_with("spiffe://") && !id.contains('"')).then_some(id)
}

pub(crate) enum EdgeVerdict {
    Known,
    New(Edge),
}

impl Lateral {
    pub(crate) fn new(learning: u64, max_edges: usize, max_keys: usize) -> Self {
        Lateral { edges: BTreeSet::new(), started: None, learning, max_edges, alerted: BoundedMap::new(max_keys) }
    }

    pub(crate) fn observe(&mut self, from: &str, to: &str, allowed: bool, t: u64) -> EdgeVerdict {
        let started = *self.started.get_or_insert(t);
        let edge = Edge { from: from.to_owned(), to: to.to_owned() };
        if self.edges.contains(&edge) {
            return EdgeVerdict::Known;
        }
        if t < started.saturating_add(self.learning) {
            if allowed && self.edges.len() < self.max_edges {
                self.edges.insert(edge);
            }
            return EdgeVerdict::Known;
        }
        if self.alerted.contains(&edge) {
            return EdgeVerdict::Known;
        }
        self.alerted.touch(&edge, || ());
        EdgeVerdict::New(edge)
    }

    pub(crate) fn export(&self) -> Baseline {
        Baseline { learning_started: self.started.map(from_ms), edges: self.edges.iter().cloned().collect() }
    }

    /// Replace the baseline; edges past `max_edges` are ignored.
    pub(crate) fn import(&mut self, b: Baseline) {
        self.started = b.learning_started.map(to_ms);
        self.edges = b.edges.into_iter().take(self.max_edges).collect();
    }
}
