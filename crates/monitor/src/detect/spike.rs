//! Deny and 5xx spikes per source. The window is cut into `SLOTS` slots so memory per source is
//! fixed however fast events come; the window sum covers the current slot and the `SLOTS - 1`
//! before it. A condition (count >= floor and count / total >= ratio) fires once when it becomes
//! true and re-arms when it becomes false: a level alert, not one per event.

use std::collections::VecDeque;

use crate::bounded::BoundedMap;

const SLOTS: u64 = 10;

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    idx: u64,
    total: u64,
    hits: u64,
}

#[derive(Debug, Default)]
struct Source {
    slots: VecDeque<Slot>,
    /// (time, id) of matching events in the window, oldest first, at most `max_ids`.
    ids: VecDeque<(u64, String)>,
    firing: bool,
}

pub(crate) struct Fired {
    pub(crate) ids: Vec<String>,
    pub(crate) first: u64,
    pub(crate) hits: u64,
    pub(crate) total: u64,
}

#[derive(Debug)]
pub(crate) struct Spike {
    sources: BoundedMap<String, Source>,
    window: u64,
    slot: u64,
    floor: u64,
    ratio: f64,
}

impl Spike {
    pub(crate) fn new(max_keys: usize, window: u64, floor: u64, ratio: f64) -> Self {
        let slot = (window / SLOTS).max(1);
        Spike { sources: BoundedMap::new(max_keys), window, slot, floor, ratio }
    }

    pub(crate) fn observe(&mut self, source: &str, hit: bool, t: u64, id: &str, max_ids: usize) -> Option<Fired> {
        let (slot_ms, window, floor, ratio) = (self.slot, self.window, self.floor, self.ratio);
        let s = self.sources.touch(&source.to_owned(), Source::default);
        let idx = t / slot_ms;
        match s.slots.back_mut() {
            Some(last) if last.idx == idx => {}
            _ => s.slots.push_back(Slot { idx, total: 0, hits: 0 }),
        }
        while s.slots.front().is_some_and(|f| f.idx.saturating_add(SLOTS) <= idx) {
            s.slots.pop_front();
        }
        if let Some(last) = s.slots.back_mut() {
            last.total = last.total.saturating_add(1);
            if hit {
                last.hits = last.hits.saturating_add(1);
            }
        }
        while s.ids.front().is_some_and(|(old, _)| t.saturating_sub(*old) >= window) {
            s.ids.pop_front();
        }
        if hit && s.ids.len() < max_ids {
            s.ids.push_back((t, id.to_owned()));
        }
        let total: u64 = s.slots.iter().map(|x| x.total).sum();
        let hits: u64 = s.slots.iter().map(|x| x.hits).sum();
        let on = hits >= floor && (hits as f64) >= ratio * (total as f64);
        if !on {
            s.firing = false;
            return None;
        }
        if s.firing {
            return None;
        }
        s.firing = true;
        let first = s.ids.front().map_or(t, |(f, _)| *f);
        Some(Fired { ids: s.ids.iter().map(|(_, id)| id.clone()).collect(), first, hits, total })
    }
}
