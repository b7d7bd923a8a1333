//! Sliding-window count detectors: brute force, WAF bursts (event counts per key) and credential
//! stuffing (distinct principals per IP). Each key keeps at most `threshold` timestamps (the
//! newest), enough to know whether the window holds `threshold` events, so memory per key is
//! bounded. An alert fires when a key crosses its threshold; while the key stays at or above it,
//! each further matching event yields a continuation alert (count 1, that event's id) with the
//! same key, for the alert manager to merge. The key re-arms once its window falls below.

use std::collections::{HashSet, VecDeque};

use super::Draft;
use crate::bounded::BoundedMap;

#[derive(Debug, Default)]
pub(crate) struct Hits {
    /// (time ms, event id), oldest first, all within the window after `push`.
    hits: VecDeque<(u64, String)>,
    firing: bool,
}

/// What one event did to a key's window.
pub(crate) enum Step {
    Quiet,
    /// Crossed the threshold: the event ids in the window (capped), the window's first time, its size.
    Crossed {
        ids: Vec<String>,
        first: u64,
        count: u64,
    },
    Continued,
}

impl Hits {
    fn push(&mut self, t: u64, id: &str, window: u64, threshold: usize, max_ids: usize) -> Step {
        self.hits.push_back((t, id.to_owned()));
        while self.hits.front().is_some_and(|(old, _)| t.saturating_sub(*old) >= window) {
            self.hits.pop_front();
        }
        while self.hits.len() > threshold {
            self.hits.pop_front();
        }
        if self.hits.len() < threshold {
            self.firing = false;
            return Step::Quiet;
        }
        if self.firing {
            return Step::Continued;
        }
        self.firing = true;
        let first = self.hits.front().map_or(t, |(f, _)| *f);
        let ids = self.hits.iter().take(max_ids).map(|(_, id)| id.clone()).collect();
        Step::Crossed { ids, first, count: self.hits.len() as u64 }
    }
}

/// Counts per key in a sliding window, with key eviction.
#[derive(Debug)]
pub(crate) struct Counter {
    keys: BoundedMap<String, Hits>,
    window: u64,
    threshold: usize,
}

impl Counter {
    pub(crate) fn new(max_keys: usize, window: u64, threshold: usize) -> Self {
        Counter { keys: BoundedMap::new(max_keys), window, threshold }
    }

    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn hit(&mut self, key: &str, t: u64, id: &str, max_ids: usize) -> Step {
        let (window, threshold) = (self.window, self.threshold);
        self.keys.touch(&key.to_owned(), Hits::default).push(t, id, window, threshold, max_ids)
    }
}

/// Turn a window step into a draft alert (or none).
pub(crate) fn draft(step: Step, t: u64, id: &str, make: impl FnOnce(u64) -> Draft) -> Option<Draft> {
    match step {
        Step::Quiet => None,
        Step::Crossed { ids, first, count } => {
            let mut d = make(count);
            d.event_ids = ids;
            d.first = first;
            d.last = t;
            d.count = count;
            Some(d)
        }
        Step::Continued => {
            let mut d = make(1);
            d.event_ids = vec![id.to_owned()];
            d.first = t;
            d.last = t;
            d.count = 1;
            Some(d)
        }
    }
}

/// Failed logins per IP: (time, principal, event id), newest last, at most `MAX_PER_IP`.
#[derive(Debug, Default)]
pub(crate) struct Logins {
    tries: VecDeque<(u64, String, String)>,
    firing: bool,
}

/// Entries kept per IP: the distinct count needs at most `threshold` distinct principals, but
/// repeats of one principal share the deque, so keep some headroom.
const MAX_PER_IP: usize = 256;

#[derive(Debug)]
pub(crate) struct Stuffing {
    ips: BoundedMap<String, Logins>,
    window: u64,
    threshold: usize,
}

impl Stuffing {
    pub(crate) fn new(max_keys: usize, window: u64, threshold: usize) -> Self {
        Stuffing { ips: BoundedMap::new(max_keys), window, threshold }
    }

    pub(crate) fn hit(&mut self, ip: &str, principal: &str, t: u64, id: &str, max_ids: usize) -> Step {
        let (window, threshold) = (self.window, self.threshold);
        let l = self.ips.touch(&ip.to_owned(), Logins::default);
        l.tries.push_back((t, principal.to_owned(), id.to_owned()));
        while l.tries.front().is_some_and(|(old, _, _)| t.saturating_sub(*old) >= window) {
            l.tries.pop_front();
        }
        while l.tries.len() > MAX_PER_IP {
            l.tries.pop_front();
        }
        let distinct: HashSet<&str> = l.tries.iter().map(|(_, p, _)| p.as_str()).collect();
        if distinct.len() < threshold {
            l.firing = false;
            return Step::Quiet;
        }
        if l.firing {
            return Step::Continued;
        }
        l.firing = true;
        let first = l.tries.front().map_or(t, |(f, _, _)| *f);
        let ids = l.tries.iter().take(max_ids).map(|(_, _, id)| id.clone()).collect();
        Step::Crossed { ids, first, count: distinct.len() as u64 }
    }
}
