//! A bounded, expiring cache of message identifiers already seen.
//!
//! Gnutella servents keep a routing table of recent message GUIDs: it drops duplicates of a
//! flooded message (a (type, GUID) seen before) and remembers which connection each one came
//! from, so that answers travel back along the reverse path. The table must neither grow
//! without bound (a flood of fresh GUIDs would exhaust memory) nor forget an entry while
//! answers may still arrive. [`SeenCache`] keeps at most `capacity` entries, each for `ttl`;
//! when full it forgets the oldest entry first. All entries live equally long, so insertion
//! order is expiry order and one FIFO queue serves both rules.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::Instant;

/// A bounded map from message keys to routing data whose entries expire.
#[derive(Debug, Clone)]
pub(crate) struct SeenCache<K, V> {
    capacity: usize,
    ttl: Duration,
    map: BTreeMap<K, (Instant, V)>,
    /// (expiry, key) in insertion order; may hold stale pairs for keys re-inserted later,
    /// recognised because their expiry differs from the map's.
    order: VecDeque<(Instant, K)>,
}

impl<K: Ord + Copy, V> SeenCache<K, V> {
    /// An empty cache of at most `capacity` entries (at least one), each kept for `ttl`.
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        SeenCache {
            capacity: capacity.max(1),
            ttl,
            map: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Number of live (possibly expired but not yet purged) entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache holds nothing.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Records `key` at `now` unless it is already present and unexpired. Returns `true` if
    /// the key was new (the message is not a duplicate). May evict the oldest entry.
    pub(crate) fn insert(&mut self, now: Instant, key: K, value: V) -> bool {
        self.purge(now);
        if self.map.contains_key(&key) {
            return false;
        }
        while self.map.len() >= self.capacity {
            let Some((exp, old)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(e, _)| *e == exp) {
                self.map.remove(&old);
            }
        }
        let expires = now + self.ttl;
        self.map.insert(key, (expires, value));
        self.order.push_back((expires, key));
        true
    }

    /// Whether `key` is present and unexpired at `now`.
    #[cfg(test)]
    pub(crate) fn contains(&self, now: Instant, key: &K) -> bool {
        self.get(now, key).is_some()
    }

    /// The value of an unexpired entry.
    pub(crate) fn get(&self, now: Instant, key: &K) -> Option<&V> {
        match self.map.get(key) {
            Some((exp, v)) if *exp > now => Some(v),
            _ => None,
        }
    }

    /// The value of an unexpired entry, mutably.
    pub(crate) fn get_mut(&mut self, now: Instant, key: &K) -> Option<&mut V> {
        match self.map.get_mut(key) {
            Some((exp, v)) if *exp > now => Some(v),
            _ => None,
        }
    }

    /// Forgets every entry that has expired by `now`.
    pub(crate) fn purge(&mut self, now: Instant) {
        while let Some(&(exp, key)) = self.order.front() {
            if exp > now {
                break;
            }
            self.order.pop_front();
            if self.map.get(&key).is_some_and(|(e, _)| *e == exp) {
                self.map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn duplicates_are_reported() {
        let mut c = SeenCache::new(10, S);
        assert!(c.insert(Instant::ZERO, 1u32, 'a'));
        assert!(!c.insert(Instant::ZERO, 1u32, 'b'));
        assert_eq!(c.get(Instant::ZERO, &1), Some(&'a'), "first route wins");
    }

    #[test]
    fn bounded_oldest_first() {
        let mut c = SeenCache::new(3, S * 100);
        for k in 0..5u32 {
            assert!(c.insert(Instant(k as u64), k, ()));
        }
        assert_eq!(c.len(), 3);
        assert!(!c.contains(Instant(10), &0));
        assert!(!c.contains(Instant(10), &1));
        assert!(c.contains(Instant(10), &4));
        assert!(c.insert(Instant(10), 0, ()), "evicted key is new again");
    }

    #[test]
    fn entries_expire() {
        let mut c = SeenCache::new(10, S);
        c.insert(Instant::ZERO, 7u32, ());
        assert!(c.contains(Instant::ZERO + S / 2, &7));
        assert!(!c.contains(Instant::ZERO + S, &7));
        assert!(
            c.insert(Instant::ZERO + S, 7, ()),
            "expired key is new again"
        );
        // The stale queue pair of the first insert must not evict the fresh entry.
        c.purge(Instant::ZERO + S + S / 2);
        assert!(c.contains(Instant::ZERO + S + S / 2, &7));
        c.purge(Instant::ZERO + S * 3);
        assert!(c.is_empty());
    }
}
