//! A small least-recently-used map for kms v1's decrypted DEKs (`cachesize` entries).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// LRU map with O(1) amortized get/insert: a generation counter per entry and a queue of
/// (key, generation) touches; stale queue entries are skipped on eviction and compacted.
pub(crate) struct Lru<K, V> {
    capacity: usize,
    tick: u64,
    map: HashMap<K, (V, u64)>,
    order: VecDeque<(K, u64)>,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (value, generation) = self.map.get_mut(key)?;
        *generation = tick;
        let value = value.clone();
        self.order.push_back((key.clone(), tick));
        self.compact();
        Some(value)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        self.tick += 1;
        self.map.insert(key.clone(), (value, self.tick));
        self.order.push_back((key, self.tick));
        while self.map.len() > self.capacity {
            let Some((old, generation)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(_, g)| *g == generation) {
                self.map.remove(&old);
            }
        }
        self.compact();
    }

    /// Drops queue entries that no longer describe an entry's latest touch.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.capacity + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|(_, current)| current == g));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn evicts_least_recently_used() {
        let mut lru = Lru::new(2);
        lru.insert(1, "a");
        lru.insert(2, "b");
        assert_eq!(lru.get(&1), Some("a"));
        lru.insert(3, "c");
        assert_eq!(lru.get(&2), None);
        assert_eq!(lru.get(&1), Some("a"));
        assert_eq!(lru.get(&3), Some("c"));
        for _ in 0..100 {
            lru.get(&1);
        }
        assert_eq!(lru.len(), 2);
        assert!(lru.order.len() <= 2 * 2 + 17);
    }
}
