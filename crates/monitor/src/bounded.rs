//! A map with a fixed key capacity that evicts the least recently touched key, so per-key state
//! stays bounded whatever the input. Invariant: `order` and `map` hold exactly the same keys.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

#[derive(Debug)]
pub(crate) struct BoundedMap<K, V> {
    map: HashMap<K, (u64, V)>,
    /// Touch sequence number → key; the first entry is the least recently touched.
    order: BTreeMap<u64, K>,
    next: u64,
    cap: usize,
}

impl<K: Clone + Eq + Hash, V> BoundedMap<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        BoundedMap { map: HashMap::new(), order: BTreeMap::new(), next: 0, cap: cap.max(1) }
    }

    /// The value for `key`, created with `make` when absent (evicting the least recently touched
    /// key when full); marks the key as most recently touched.
    pub(crate) fn touch(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        let seq = self.next;
        self.next = self.next.wrapping_add(1);
        if !self.map.contains_key(key) {
            while self.map.len() >= self.cap {
                let Some((_, evicted)) = self.order.pop_first() else { break };
                self.map.remove(&evicted);
            }
        }
        let slot = self.map.entry(key.clone()).or_insert_with(|| (seq, make()));
        if slot.0 != seq {
            self.order.remove(&slot.0);
            slot.0 = seq;
        }
        self.order.insert(seq, key.clone());
        &mut slot.1
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_touched_key() {
        let mut m = BoundedMap::new(2);
        *m.touch(&"a", || 0) += 1;
        *m.touch(&"b", || 0) += 1;
        *m.touch(&"a", || 0) += 1; // a is now newer than b
        *m.touch(&"c", || 0) += 1; // evicts b
        assert_eq!(m.len(), 2);
        assert!(m.contains(&"a") && m.contains(&"c") && !m.contains(&"b"));
        assert_eq!(*m.touch(&"a", || 0), 2);
        assert_eq!(*m.touch(&"b", || 0), 0);
    }
}
