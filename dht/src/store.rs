//! The per-peer replicated store: versioned records and provider sets.
//!
//! One store per physical peer holds everything the peer's virtual nodes own or replicate.
//! A write is applied only if its version is newer than the one held (deletes are versioned
//! tombstones, so a delete is not undone by a late, older write). Provider sets merge by
//! union, each entry keeping its latest expiry. Both are bounded: values by
//! `Config::max_value_size`, the whole store by `Config::max_stored_bytes`, providers by
//! `Config::max_providers_per_key`.

use std::collections::BTreeMap;
use std::ops::Bound;

use peerlab_overlay::{Id, Instant, PeerId};

use crate::Error;
use crate::message::{ProviderEntry, Record, Version};

/// Fixed accounting cost of one record besides its value (key, version, map overhead).
pub const RECORD_OVERHEAD: u64 = 96;

/// Fixed accounting cost of one provider entry.
pub const PROVIDER_OVERHEAD: u64 = 64;

/// A stored record and when its owner last confirmed this peer as a replica of it.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) record: Record,
    pub(crate) confirmed: Instant,
}

/// What applying a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The write was newer and is now stored.
    Stored,
    /// An equal or newer version was already held; nothing changed.
    Stale,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    pub(crate) records: BTreeMap<Id, Entry>,
    pub(crate) providers: BTreeMap<Id, BTreeMap<PeerId, Instant>>,
    bytes: u64,
    max_bytes: u64,
    max_value: usize,
    max_providers: usize,
}

fn record_cost(r: &Record) -> u64 {
    RECORD_OVERHEAD + r.value_len() as u64
}

impl Store {
    /// An empty store with these bounds.
    pub fn new(max_bytes: u64, max_value: usize, max_providers: usize) -> Store {
        Store {
            records: BTreeMap::new(),
            providers: BTreeMap::new(),
            bytes: 0,
            max_bytes,
            max_value,
            max_providers,
        }
    }

    /// Bytes accounted for.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of records (tombstones included).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record under `key`.
    pub fn get(&self, key: &Id) -> Option<&Record> {
        self.records.get(key).map(|e| &e.record)
    }

    /// The version held under `key`.
    pub fn version(&self, key: &Id) -> Option<Version> {
        self.records.get(key).map(|e| e.record.version)
    }

    /// Applies `record` under `key` unless an equal or newer version is held.
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`] or [`Error::StoreFull`]; the store is unchanged then.
    pub fn apply(&mut self, key: Id, record: Record, now: Instant) -> Result<Applied, Error> {
        if record.value_len() > self.max_value {
            return Err(Error::ValueTooLarge {
                len: record.value_len(),
                max: self.max_value,
            });
        }
        let old = self.records.get(&key);
        if let Some(old) = old
            && old.record.version >= record.version
        {
            return Ok(Applied::Stale);
        }
        let old_cost = old.map_or(0, |e| record_cost(&e.record));
        let new_cost = record_cost(&record);
        let after = self.bytes - old_cost + new_cost;
        if after > self.max_bytes {
            return Err(Error::StoreFull {
                needed: new_cost,
                max: self.max_bytes,
            });
        }
        self.bytes = after;
        self.records.insert(
            key,
            Entry {
                record,
                confirmed: now,
            },
        );
        Ok(Applied::Stored)
    }

    /// Marks `key` as confirmed by its owner at `now`.
    pub(crate) fn confirm(&mut self, key: &Id, now: Instant) {
        if let Some(e) = self.records.get_mut(key) {
            e.confirmed = now;
        }
    }

    /// Removes `key`.
    pub(crate) fn remove(&mut self, key: &Id) {
        if let Some(e) = self.records.remove(key) {
            self.bytes -= record_cost(&e.record);
        }
    }

    /// Keys in the ring interval `(from, to]` (the whole ring when `from == to`), in ring
    /// order starting after `from`.
    pub fn keys_in(&self, from: &Id, to: &Id) -> Vec<Id> {
        range_keys(&self.records, from, to)
    }

    /// Adds or refreshes a provider of `key` until `expires`. When the set is full, the
    /// entry expiring soonest gives way if the new one lives longer.
    pub fn add_provider(&mut self, key: Id, provider: PeerId, expires: Instant, now: Instant) {
        let set = self.providers.entry(key).or_default();
        let before = set.len();
        set.retain(|_, e| *e > now);
        self.bytes = self
            .bytes
            .saturating_sub((before - set.len()) as u64 * PROVIDER_OVERHEAD);
        if let Some(e) = set.get_mut(&provider) {
            *e = (*e).max(expires);
            return;
        }
        if set.len() >= self.max_providers {
            let Some((&p, &soonest)) = set.iter().min_by_key(|(_, e)| **e) else {
                return;
            };
            if soonest >= expires {
                return;
            }
            set.remove(&p);
        } else if self.bytes + PROVIDER_OVERHEAD > self.max_bytes {
            return;
        } else {
            self.bytes += PROVIDER_OVERHEAD;
        }
        set.insert(provider, expires);
    }

    /// Unexpired providers of `key` with their remaining lifetime, longest-lived first.
    pub fn providers(&self, key: &Id, now: Instant) -> Vec<ProviderEntry> {
        let mut v: Vec<ProviderEntry> = self
            .providers
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(_, e)| **e > now)
            .map(|(p, e)| ProviderEntry {
                provider: *p,
                ttl_ms: (*e - now).as_millis() as u64,
            })
            .collect();
        v.sort_by(|a, b| b.ttl_ms.cmp(&a.ttl_ms).then(a.provider.cmp(&b.provider)));
        v
    }

    /// Drops expired providers and empty sets.
    pub fn expire_providers(&mut self, now: Instant) {
        let mut freed = 0u64;
        for set in self.providers.values_mut() {
            let before = set.len();
            set.retain(|_, e| *e > now);
            freed += (before - set.len()) as u64 * PROVIDER_OVERHEAD;
        }
        self.providers.retain(|_, s| !s.is_empty());
        self.bytes = self.bytes.saturating_sub(freed);
    }

    /// Keys with providers in `(from, to]`.
    pub fn provider_keys_in(&self, from: &Id, to: &Id) -> Vec<Id> {
        range_keys(&self.providers, from, to)
    }
}

fn range_keys<V>(map: &BTreeMap<Id, V>, from: &Id, to: &Id) -> Vec<Id> {
    let after = (Bound::Excluded(*from), Bound::Unbounded);
    if from < to {
        map.range((Bound::Excluded(*from), Bound::Included(*to)))
            .map(|(k, _)| *k)
            .collect()
    } else {
        // wraps (or whole ring when from == to)
        map.range(after)
            .map(|(k, _)| *k)
            .chain(map.range(..=*to).map(|(k, _)| *k))
            .filter(|k| from == to || k.in_half_open(from, to))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: u64, w: u64, v: Option<&[u8]>) -> Record {
        Record {
            version: Version {
                time: t,
                writer: PeerId::synthetic(w),
            },
            value: v.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn older_write_never_overwrites_newer() {
        let mut s = Store::new(1 << 20, 100, 8);
        let k = Id::from_u64(1);
        assert_eq!(
            s.apply(k, rec(10, 1, Some(b"new")), Instant::ZERO),
            Ok(Applied::Stored)
        );
        assert_eq!(
            s.apply(k, rec(9, 9, Some(b"old")), Instant::ZERO),
            Ok(Applied::Stale)
        );
        assert_eq!(
            s.apply(k, rec(10, 1, Some(b"new")), Instant::ZERO),
            Ok(Applied::Stale)
        );
        assert_eq!(s.get(&k).unwrap().value.as_deref(), Some(&b"new"[..]));
        // same time, higher writer id wins the tie
        let (lo, hi) = if PeerId::synthetic(1) < PeerId::synthetic(2) {
            (1, 2)
        } else {
            (2, 1)
        };
        let mut s2 = Store::new(1 << 20, 100, 8);
        s2.apply(k, rec(5, hi, Some(b"hi")), Instant::ZERO).unwrap();
        assert_eq!(
            s2.apply(k, rec(5, lo, Some(b"lo")), Instant::ZERO),
            Ok(Applied::Stale)
        );
        // tombstone newer than value wins; late older value does not resurrect
        assert_eq!(
            s.apply(k, rec(11, 1, None), Instant::ZERO),
            Ok(Applied::Stored)
        );
        assert_eq!(
            s.apply(k, rec(10, 2, Some(b"late")), Instant::ZERO),
            Ok(Applied::Stale)
        );
        assert_eq!(s.get(&k).unwrap().value, None);
    }

    #[test]
    fn bounds_are_typed_errors_and_leave_store_unchanged() {
        let mut s = Store::new(RECORD_OVERHEAD + 10, 8, 8);
        let k = Id::from_u64(1);
        assert_eq!(
            s.apply(k, rec(1, 1, Some(&[0; 9])), Instant::ZERO),
            Err(Error::ValueTooLarge { len: 9, max: 8 })
        );
        s.apply(k, rec(1, 1, Some(&[0; 8])), Instant::ZERO).unwrap();
        assert!(matches!(
            s.apply(Id::from_u64(2), rec(1, 1, Some(&[0; 8])), Instant::ZERO),
            Err(Error::StoreFull { .. })
        ));
        assert_eq!(s.len(), 1);
        assert_eq!(s.bytes(), RECORD_OVERHEAD + 8);
        // replacing a record re-accounts its size
        s.apply(k, rec(2, 1, None), Instant::ZERO).unwrap();
        assert_eq!(s.bytes(), RECORD_OVERHEAD);
        s.remove(&k);
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn ranges_wrap() {
        let mut s = Store::new(1 << 20, 100, 8);
        for v in [1, 5, 10, 50] {
            s.apply(Id::from_u64(v), rec(1, 1, Some(b"x")), Instant::ZERO)
                .unwrap();
        }
        assert_eq!(
            s.keys_in(&Id::from_u64(1), &Id::from_u64(10)),
            vec![Id::from_u64(5), Id::from_u64(10)]
        );
        assert_eq!(
            s.keys_in(&Id::from_u64(10), &Id::from_u64(1)),
            vec![Id::from_u64(50), Id::from_u64(1)]
        );
        assert_eq!(s.keys_in(&Id::from_u64(5), &Id::from_u64(5)).len(), 4);
    }

    #[test]
    fn providers_bounded_and_expiring() {
        let mut s = Store::new(1 << 20, 100, 2);
        let k = Id::from_u64(3);
        let t = |s: u64| Instant(s * 1_000_000);
        s.add_provider(k, PeerId::synthetic(1), t(10), t(0));
        s.add_provider(k, PeerId::synthetic(2), t(20), t(0));
        s.add_provider(k, PeerId::synthetic(3), t(5), t(0)); // full, shorter than all: refused
        assert_eq!(s.providers(&k, t(0)).len(), 2);
        s.add_provider(k, PeerId::synthetic(3), t(30), t(0)); // evicts the one expiring at 10
        let p = s.providers(&k, t(0));
        assert_eq!(p[0].provider, PeerId::synthetic(3));
        assert!(!p.iter().any(|e| e.provider == PeerId::synthetic(1)));
        assert_eq!(s.providers(&k, t(25)).len(), 1);
        s.expire_providers(t(31));
        assert!(s.providers.is_empty());
        assert_eq!(s.bytes(), 0);
    }
}
