//! The per-peer replicated store: signed records and provider sets.
//!
//! One store per physical peer holds everything the peer's virtual nodes own or replicate.
//! Checking a record's signature and whether this peer should hold it is the core's job
//! before a record gets here; the store applies the rules that depend on what it holds:
//!
//! - **order**: a write of the held record's writer replaces it only if it is newer
//!   ([`Record::beats`]). Deletes are tombstones, so a delete is not undone by a late,
//!   older write;
//! - **ownership**: a record held and unexpired is replaced by another writer's only when
//!   the caller says the write may contest it (a copy relayed by a holder closer to the
//!   key than this peer: the owner settles conflicting claims, see `core::admission`) *and*
//!   the held claim is still contestable ([`CLAIM_WINDOW`]); otherwise the write is refused
//!   with [`Error::NotOwner`]. Expired records count as absent, so anyone may claim the key
//!   again, and are swept;
//! - **quotas**: each writer may hold at most [`Limits::writer_bytes`] and
//!   [`Limits::writer_records`] here, so one writer cannot fill the store for everyone;
//! - **fair shares** of a full store: identities are free, so a crowd of writers within
//!   their quotas can still fill it. A write that does not fit is then admitted if its
//!   writer, with it, holds at most its *fair share* — the budget divided by the writers
//!   present, in bytes and in records ([`record_capacity`]) — by evicting records of the
//!   writer holding the most, as long as that writer is over its fair share, and its oldest
//!   record first (max-min fair sharing, as in fair queueing: Demers, Keshav and Shenker,
//!   SIGCOMM 1989). A writer at or below its fair share is never evicted, and a writer
//!   with little here always gets in; a crowd ends with an equal share each. Each eviction
//!   lowers what the writers over their share hold beyond it, so evictions cannot go back
//!   and forth: a record evicted from a writer over its share comes back (repair, read
//!   repair) only once that writer is within its share with it;
//! - **bounds**: values by [`Limits::max_value`], the whole store by [`Limits::max_bytes`],
//!   providers per key by [`Limits::max_providers`].
//!
//! Provider sets hold signed entries, one per provider. A full set makes room by dropping
//! expired entries, then one chosen at random among the least recently announced quarter,
//! never by comparing lifetimes (a long-lived entry must not push out honest ones). An
//! entry relayed by another holder (repair, replication) only takes a free slot or the
//! place of another relayed entry: signed entries of made-up identities pushed in bulk
//! never push out providers that announced themselves here.
//!
//! Every write and removal of a record marks its key *changed* until the holder of the
//! store takes the set ([`Store::take_changed`]): a node that keeps the store on disk
//! writes just those keys rather than comparing every record after every input. The set is
//! bounded by [`MAX_TRACKED_CHANGES`]; past it the store only remembers that everything
//! may have changed ([`Changed::All`]).
//!
//! With defenses off ([`Limits::defenses`] false, for the lab's attack baseline) the store
//! behaves as it did before records were signed: last writer wins by version, no quotas,
//! a full provider set gives way only to an entry that outlives its soonest-expiring one.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::ops::Bound;

use peerlab_overlay::{Id, Instant, PeerId};

use crate::Error;
use crate::record::{CLAIM_WINDOW, ProviderEntry, Record, Version};

/// Fixed accounting cost of one record besides its value: key, two versions, expiry,
/// signature and map overhead.
pub const RECORD_OVERHEAD: u64 = 256;

/// Fixed accounting cost of one provider entry (peer id, expiry, signature, map overhead).
pub const PROVIDER_OVERHEAD: u64 = 160;

/// The most records a store of `max_bytes` can hold: every record costs at least
/// [`RECORD_OVERHEAD`]. A writer's fair share in records is this divided by the writers
/// present, so records with empty values (which cost little in bytes) are shared out too.
pub fn record_capacity(max_bytes: u64) -> u64 {
    max_bytes / RECORD_OVERHEAD
}

/// A stored record and when its owner last confirmed this peer as a replica of it.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) record: Record,
    pub(crate) confirmed: Instant,
}

/// A provider entry and when it was last announced here.
#[derive(Clone, Copy, Debug)]
struct Provided {
    entry: ProviderEntry,
    announced: Instant,
    /// Announced here by its provider itself (an `AddProvider` from it), not relayed by
    /// another holder: a relayed entry never pushes one of these out.
    direct: bool,
}

/// What applying a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The write won and is now stored.
    Stored,
    /// The record held wins over (or equals) the write; nothing changed.
    Stale,
}

/// The store's bounds and rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Storage budget in bytes (values plus [`RECORD_OVERHEAD`] per record and
    /// [`PROVIDER_OVERHEAD`] per provider entry).
    pub max_bytes: u64,
    /// Largest value.
    pub max_value: usize,
    /// Providers kept per key.
    pub max_providers: usize,
    /// Bytes of records one writer may hold here.
    pub writer_bytes: u64,
    /// Records one writer may hold here.
    pub writer_records: u64,
    /// Whether ownership and quotas apply (see the module docs).
    pub defenses: bool,
}

/// Records and bytes one writer holds, and which (oldest first: the order a full store
/// evicts them in).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Usage {
    records: u64,
    bytes: u64,
    held: BTreeSet<(Version, Id)>,
}

impl Usage {
    /// Whether this exceeds a fair share of `bytes` and `records` in either dimension.
    fn over(&self, bytes: u64, records: u64) -> bool {
        self.bytes > bytes || self.records > records
    }
}

/// Most changed keys remembered between two [`Store::take_changed`]; past it the store
/// reports [`Changed::All`] (a holder that never takes the set, such as the simulator,
/// costs at most this much memory).
pub const MAX_TRACKED_CHANGES: usize = 4096;

/// What changed since the last [`Store::take_changed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    /// These keys were written or removed (possibly back and forth).
    Keys(BTreeSet<Id>),
    /// More than [`MAX_TRACKED_CHANGES`] keys: compare everything.
    All,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    pub(crate) records: BTreeMap<Id, Entry>,
    changed: BTreeSet<Id>,
    changed_overflow: bool,
    providers: BTreeMap<Id, BTreeMap<PeerId, Provided>>,
    writers: BTreeMap<PeerId, Usage>,
    bytes: u64,
    limits: Limits,
    evicted: u64,
}

fn record_cost(r: &Record) -> u64 {
    RECORD_OVERHEAD + r.value_len() as u64
}

impl Store {
    /// An empty store with these limits.
    pub fn new(limits: Limits) -> Store {
        Store {
            records: BTreeMap::new(),
            changed: BTreeSet::new(),
            changed_overflow: false,
            providers: BTreeMap::new(),
            writers: BTreeMap::new(),
            bytes: 0,
            limits,
            evicted: 0,
        }
    }

    /// Records evicted so far to make room for writers within their fair share.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Bytes accounted for.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of records (tombstones and not yet swept expired records included).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record under `key`, expired or not.
    pub fn get(&self, key: &Id) -> Option<&Record> {
        self.records.get(key).map(|e| &e.record)
    }

    /// The record under `key` unless it has expired at wall time `now_ms`.
    pub fn live(&self, key: &Id, now_ms: u64) -> Option<&Record> {
        self.get(key).filter(|r| !r.is_expired(now_ms))
    }

    /// The version held under `key`.
    pub fn version(&self, key: &Id) -> Option<Version> {
        self.records.get(key).map(|e| e.record.version)
    }

    /// Records and bytes `writer` holds here.
    pub fn usage(&self, writer: &PeerId) -> (u64, u64) {
        self.writers
            .get(writer)
            .map_or((0, 0), |u| (u.records, u.bytes))
    }

    /// Applies `record` under `key` at protocol time `now` and wall time `now_ms`, unless
    /// the record held wins (module docs). `may_contest`: whether another writer's record
    /// may replace a held claim that is still contestable. The record's signature and own
    /// rules are the caller's to check.
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`], [`Error::NotOwner`], [`Error::QuotaExceeded`] or
    /// [`Error::StoreFull`]; the store is unchanged then.
    pub fn apply(
        &mut self,
        key: Id,
        record: Record,
        now: Instant,
        now_ms: u64,
        may_contest: bool,
    ) -> Result<Applied, Error> {
        if record.value_len() > self.limits.max_value {
            return Err(Error::ValueTooLarge {
                len: record.value_len(),
                max: self.limits.max_value,
            });
        }
        let defenses = self.limits.defenses;
        let old = self.records.get(&key).map(|e| &e.record);
        if let Some(held) = old.filter(|h| !h.is_expired(now_ms)) {
            if !defenses {
                if held.version >= record.version {
                    return Ok(Applied::Stale);
                }
            } else if held.writer() == record.writer() {
                if !record.beats(held) {
                    return Ok(Applied::Stale);
                }
            } else {
                let contestable = held
                    .since
                    .wall_ms
                    .saturating_add(CLAIM_WINDOW.as_millis() as u64)
                    > now_ms;
                if !(may_contest && contestable) {
                    return Err(Error::NotOwner {
                        owner: held.writer(),
                    });
                }
            }
        }
        let old = old.map(|o| (o.writer(), record_cost(o), o.version));
        let new_cost = record_cost(&record);
        let writer = record.writer();
        let (records_after, bytes_after) = {
            let (r, b) = self.usage(&writer);
            match old {
                Some((w, c, _)) if w == writer => (r, b - c + new_cost),
                _ => (r + 1, b + new_cost),
            }
        };
        if defenses
            && (records_after > self.limits.writer_records
                || bytes_after > self.limits.writer_bytes)
        {
            return Err(Error::QuotaExceeded { writer });
        }
        let old_cost = old.map_or(0, |(_, c, _)| c);
        let after = self.bytes - old_cost + new_cost;
        if after > self.limits.max_bytes {
            let full = Error::StoreFull {
                needed: new_cost,
                max: self.limits.max_bytes,
            };
            if !defenses {
                return Err(full);
            }
            let room = self.make_room(
                &key,
                &writer,
                after - self.limits.max_bytes,
                (records_after, bytes_after),
            );
            for k in room.ok_or(full)? {
                self.remove(&k);
                self.evicted += 1;
            }
        }
        if let Some((w, c, v)) = old {
            self.charge_down(&w, c, v, key);
            self.bytes -= c;
        }
        self.bytes += new_cost;
        let u = self.writers.entry(writer).or_default();
        u.records += 1;
        u.bytes += new_cost;
        u.held.insert((record.version, key));
        self.records.insert(
            key,
            Entry {
                record,
                confirmed: now,
            },
        );
        self.mark_changed(key);
        Ok(Applied::Stored)
    }

    /// A writer's fair share of this store, in bytes and records: the budget divided by
    /// the writers present, `writer` counted (module docs).
    fn fair_share(&self, writer: &PeerId) -> (u64, u64) {
        let present = self.writers.len() as u64 + u64::from(!self.writers.contains_key(writer));
        (
            self.limits.max_bytes / present,
            record_capacity(self.limits.max_bytes) / present,
        )
    }

    /// The records to evict so that `needed` more bytes fit for `writer`, who would then
    /// hold `after` (records, bytes); `None` if the write must be refused: the writer
    /// would hold more than its fair share, or evicting from writers over their share does
    /// not free enough. Victims: the writer holding the most bytes (then records; then the
    /// larger peer id, for a deterministic choice) among those over their share, its
    /// oldest record first, never the record under `key` itself. Each eviction frees at
    /// least [`RECORD_OVERHEAD`], so one write evicts at most `needed / RECORD_OVERHEAD + 1`
    /// records.
    fn make_room(
        &self,
        key: &Id,
        writer: &PeerId,
        needed: u64,
        after: (u64, u64),
    ) -> Option<Vec<Id>> {
        let (fair_bytes, fair_records) = self.fair_share(writer);
        let (records, bytes) = after;
        if bytes > fair_bytes || records > fair_records {
            return None;
        }
        let mut over: BinaryHeap<(u64, u64, PeerId)> = self
            .writers
            .iter()
            .filter(|(w, u)| *w != writer && u.over(fair_bytes, fair_records))
            .map(|(w, u)| (u.bytes, u.records, *w))
            .collect();
        let mut taken: BTreeMap<PeerId, usize> = BTreeMap::new();
        let mut evict = Vec::new();
        let mut freed = 0;
        while freed < needed {
            let (bytes, records, w) = over.pop()?;
            let skip = taken.entry(w).or_default();
            let Some(&(_, k)) = self.writers[&w]
                .held
                .iter()
                .filter(|(_, k)| k != key)
                .nth(*skip)
            else {
                continue;
            };
            *skip += 1;
            let cost = self
                .records
                .get(&k)
                .map_or(RECORD_OVERHEAD, |e| record_cost(&e.record));
            evict.push(k);
            freed += cost;
            let (bytes, records) = (bytes.saturating_sub(cost), records.saturating_sub(1));
            if bytes > fair_bytes || records > fair_records {
                over.push((bytes, records, w));
            }
        }
        Some(evict)
    }

    /// Whether a record of `writer` for a key not held here would be refused whatever its
    /// size: the writer's quota is used up, or the store is full and the writer holds its
    /// fair share already. A replica does not ask for such records in repair (each would be
    /// checked and refused at every repair round).
    pub fn refuses(&self, writer: &PeerId) -> bool {
        if !self.limits.defenses {
            return false;
        }
        let (records, bytes) = self.usage(writer);
        let (records, bytes) = (records + 1, bytes + RECORD_OVERHEAD);
        if records > self.limits.writer_records || bytes > self.limits.writer_bytes {
            return true;
        }
        let (fair_bytes, fair_records) = self.fair_share(writer);
        self.bytes + RECORD_OVERHEAD > self.limits.max_bytes
            && (bytes > fair_bytes || records > fair_records)
    }

    fn charge_down(&mut self, writer: &PeerId, cost: u64, version: Version, key: Id) {
        if let Some(u) = self.writers.get_mut(writer) {
            u.records -= 1;
            u.bytes -= cost;
            u.held.remove(&(version, key));
            if u.records == 0 {
                self.writers.remove(writer);
            }
        }
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
            let c = record_cost(&e.record);
            self.bytes -= c;
            self.charge_down(&e.record.writer(), c, e.record.version, *key);
            self.mark_changed(*key);
        }
    }

    fn mark_changed(&mut self, key: Id) {
        if self.changed_overflow {
            return;
        }
        self.changed.insert(key);
        if self.changed.len() > MAX_TRACKED_CHANGES {
            self.changed.clear();
            self.changed_overflow = true;
        }
    }

    /// The keys written or removed since the last call (see the module docs).
    pub fn take_changed(&mut self) -> Changed {
        if std::mem::take(&mut self.changed_overflow) {
            return Changed::All;
        }
        Changed::Keys(std::mem::take(&mut self.changed))
    }

    /// Drops records expired at wall time `now_ms`; returns how many.
    pub fn expire_records(&mut self, now_ms: u64) -> usize {
        let dead: Vec<Id> = self
            .records
            .iter()
            .filter(|(_, e)| e.record.is_expired(now_ms))
            .map(|(k, _)| *k)
            .collect();
        for k in &dead {
            self.remove(k);
        }
        dead.len()
    }

    /// Keys in the ring interval `(from, to]` (the whole ring when `from == to`), in ring
    /// order starting after `from`.
    pub fn keys_in(&self, from: &Id, to: &Id) -> Vec<Id> {
        range_keys(&self.records, from, to)
    }

    /// Adds or refreshes `entry` as a provider of `key` at protocol time `now` and wall
    /// time `now_ms`; `pick` is a random number for choosing whom a full set drops. The
    /// entry's signature is the caller's to check. Returns whether the entry is held now.
    pub fn add_provider(
        &mut self,
        key: Id,
        entry: ProviderEntry,
        now: Instant,
        now_ms: u64,
        pick: u64,
        direct: bool,
    ) -> bool {
        if entry.expires_ms <= now_ms {
            return false;
        }
        let set = self.providers.entry(key).or_default();
        let before = set.len();
        set.retain(|_, p| p.entry.expires_ms > now_ms);
        let freed = (before - set.len()) as u64 * PROVIDER_OVERHEAD;
        self.bytes = self.bytes.saturating_sub(freed);
        if let Some(p) = set.get_mut(&entry.provider) {
            // A re-announcement: the provider's newest entry, announced now.
            if entry.expires_ms >= p.entry.expires_ms {
                p.entry = entry;
            }
            p.announced = now;
            p.direct |= direct;
            return true;
        }
        if set.len() >= self.limits.max_providers {
            let victim = if self.limits.defenses {
                // Random among the least recently announced quarter: an announcer cannot
                // choose whom it pushes out, and entries kept fresh by their providers are
                // the last to go.
                // A relayed entry may only replace another relayed one: signed entries of
                // made-up identities pushed in `Store`s must not evict the providers that
                // announce themselves here.
                let mut by_age: Vec<(Instant, PeerId)> = set
                    .iter()
                    .filter(|(_, p)| direct || !p.direct)
                    .map(|(k, p)| (p.announced, *k))
                    .collect();
                if by_age.is_empty() {
                    return false;
                }
                by_age.sort_unstable();
                let oldest = (by_age.len() / 4).max(1);
                by_age[(pick % oldest as u64) as usize].1
            } else {
                let Some((&p, soonest)) = set.iter().min_by_key(|(_, p)| p.entry.expires_ms) else {
                    return false;
                };
                if soonest.entry.expires_ms >= entry.expires_ms {
                    return false;
                }
                p
            };
            set.remove(&victim);
        } else if self.bytes + PROVIDER_OVERHEAD > self.limits.max_bytes {
            return false;
        } else {
            self.bytes += PROVIDER_OVERHEAD;
        }
        set.insert(
            entry.provider,
            Provided {
                entry,
                announced: now,
                direct,
            },
        );
        true
    }

    /// Unexpired providers of `key` at wall time `now_ms`, longest-lived first.
    pub fn providers(&self, key: &Id, now_ms: u64) -> Vec<ProviderEntry> {
        let mut v: Vec<ProviderEntry> = self
            .providers
            .get(key)
            .into_iter()
            .flat_map(|s| s.values())
            .filter(|p| p.entry.expires_ms > now_ms)
            .map(|p| p.entry)
            .collect();
        v.sort_by(|a, b| {
            b.expires_ms
                .cmp(&a.expires_ms)
                .then(a.provider.cmp(&b.provider))
        });
        v
    }

    /// Drops expired providers and empty sets.
    pub fn expire_providers(&mut self, now_ms: u64) {
        let mut freed = 0u64;
        for set in self.providers.values_mut() {
            let before = set.len();
            set.retain(|_, p| p.entry.expires_ms > now_ms);
            freed += (before - set.len()) as u64 * PROVIDER_OVERHEAD;
        }
        self.providers.retain(|_, s| !s.is_empty());
        self.bytes = self.bytes.saturating_sub(freed);
    }

    /// Keys with providers in `(from, to]`.
    pub fn provider_keys_in(&self, from: &Id, to: &Id) -> Vec<Id> {
        range_keys(&self.providers, from, to)
    }

    /// Whether any record or provider set lies in `(from, to]` (the whole ring when
    /// `from == to`), without listing them.
    pub fn holds_any_in(&self, from: &Id, to: &Id) -> bool {
        range_iter(&self.records, from, to).next().is_some()
            || range_iter(&self.providers, from, to).next().is_some()
    }
}

fn range_keys<V>(map: &BTreeMap<Id, V>, from: &Id, to: &Id) -> Vec<Id> {
    range_iter(map, from, to).collect()
}

/// The keys of `map` in the ring interval `(from, to]` (the whole ring when `from == to`),
/// in ring order starting after `from`, without collecting them.
fn range_iter<'a, V>(
    map: &'a BTreeMap<Id, V>,
    from: &'a Id,
    to: &'a Id,
) -> Box<dyn Iterator<Item = Id> + 'a> {
    if from < to {
        Box::new(
            map.range((Bound::Excluded(*from), Bound::Included(*to)))
                .map(|(k, _)| *k),
        )
    } else {
        // wraps (or whole ring when from == to)
        Box::new(
            map.range((Bound::Excluded(*from), Bound::Unbounded))
                .map(|(k, _)| *k)
                .chain(map.range(..=*to).map(|(k, _)| *k))
                .filter(move |k| from == to || k.in_half_open(from, to)),
        )
    }
}

#[cfg(test)]
mod tests {
    use peerlab_overlay::Keypair;

    use super::*;

    const DAY_MS: u64 = 24 * 3600 * 1000;

    fn limits(max_bytes: u64, max_value: usize, max_providers: usize) -> Limits {
        Limits {
            max_bytes,
            max_value,
            max_providers,
            writer_bytes: u64::MAX,
            writer_records: u64::MAX,
            defenses: true,
        }
    }

    /// A record of writer `w` written at `t` ms, claiming the key since `since` ms.
    fn rec(key: Id, t: u64, since: u64, w: u64, v: Option<&[u8]>) -> Record {
        let k = Keypair::synthetic(w);
        let at = |ms| Version {
            wall_ms: ms,
            logical: 0,
            writer: k.peer_id(),
        };
        Record::sign(
            &key,
            v.map(<[u8]>::to_vec),
            at(t),
            at(since),
            t + DAY_MS,
            &k,
        )
    }

    /// A write that may not contest another writer's claim (a put, or a relay from a peer
    /// that does not hold the key ahead of this one).
    fn apply(s: &mut Store, key: Id, r: Record, now_ms: u64) -> Result<Applied, Error> {
        s.apply(key, r, Instant::ZERO, now_ms, false)
    }

    /// A relay from the key's owner, which may contest a young claim.
    fn from_owner(s: &mut Store, key: Id, r: Record, now_ms: u64) -> Result<Applied, Error> {
        s.apply(key, r, Instant::ZERO, now_ms, true)
    }

    #[test]
    fn changes_are_tracked_per_key_and_bounded() {
        let mut s = Store::new(limits(1 << 30, 100, 8));
        let (a, b) = (Id::from_u64(1), Id::from_u64(2));
        assert_eq!(s.take_changed(), Changed::Keys(BTreeSet::new()));
        apply(&mut s, a, rec(a, 10, 1, 1, Some(b"x")), 10).unwrap();
        apply(&mut s, b, rec(b, 10, 1, 1, Some(b"y")), 10).unwrap();
        assert_eq!(s.take_changed(), Changed::Keys([a, b].into()));
        // A stale write changes nothing.
        assert_eq!(
            apply(&mut s, a, rec(a, 9, 1, 1, Some(b"z")), 10),
            Ok(Applied::Stale)
        );
        assert_eq!(s.take_changed(), Changed::Keys(BTreeSet::new()));
        s.remove(&b);
        assert_eq!(s.take_changed(), Changed::Keys([b].into()));
        for i in 0..=MAX_TRACKED_CHANGES as u64 {
            let k = Id::from_u64(1000 + i);
            apply(&mut s, k, rec(k, 10, 1, 1, Some(b"v")), 10).unwrap();
        }
        assert_eq!(s.take_changed(), Changed::All, "past the bound: everything");
        assert_eq!(s.take_changed(), Changed::Keys(BTreeSet::new()));
    }

    #[test]
    fn older_write_never_overwrites_newer() {
        let mut s = Store::new(limits(1 << 20, 100, 8));
        let k = Id::from_u64(1);
        let w = |t, v: Option<&[u8]>| rec(k, t, 1, 1, v);
        assert_eq!(
            apply(&mut s, k, w(10, Some(b"new")), 10),
            Ok(Applied::Stored)
        );
        assert_eq!(apply(&mut s, k, w(9, Some(b"old")), 10), Ok(Applied::Stale));
        assert_eq!(
            apply(&mut s, k, w(10, Some(b"new")), 10),
            Ok(Applied::Stale)
        );
        assert_eq!(s.get(&k).unwrap().value.as_deref(), Some(&b"new"[..]));
        // a tombstone newer than the value wins; a late older value does not resurrect
        assert_eq!(apply(&mut s, k, w(11, None), 11), Ok(Applied::Stored));
        assert_eq!(
            apply(&mut s, k, w(10, Some(b"late")), 11),
            Ok(Applied::Stale)
        );
        assert_eq!(s.get(&k).unwrap().value, None);
    }

    #[test]
    fn another_writer_is_refused_until_the_record_expires() {
        let mut s = Store::new(limits(1 << 20, 100, 8));
        let k = Id::from_u64(1);
        let now = 10 * DAY_MS;
        let first = rec(k, now, now, 1, Some(b"first"));
        apply(&mut s, k, first.clone(), now).unwrap();
        let owner = first.writer();
        // A newer write, a delete, by someone else: refused, whatever its version.
        for v in [Some(&b"second"[..]), None] {
            assert_eq!(
                apply(&mut s, k, rec(k, now + 5, now + 5, 2, v), now + 5),
                Err(Error::NotOwner { owner })
            );
        }
        // Back-dating the claim past a final one does not help either.
        let late = now + CLAIM_WINDOW.as_millis() as u64;
        assert_eq!(
            apply(&mut s, k, rec(k, late, 1, 2, Some(b"x")), late),
            Err(Error::NotOwner { owner })
        );
        assert_eq!(s.get(&k).unwrap().value.as_deref(), Some(&b"first"[..]));
        // The owner overwrites and deletes.
        assert_eq!(
            apply(&mut s, k, rec(k, now + 6, now, 1, Some(b"mine")), now + 6),
            Ok(Applied::Stored)
        );
        assert_eq!(
            apply(&mut s, k, rec(k, now + 7, now, 1, None), now + 7),
            Ok(Applied::Stored)
        );
        // Once the owner's record expired, the key is free.
        let after = now + 7 + DAY_MS;
        assert_eq!(
            apply(&mut s, k, rec(k, after, after, 2, Some(b"claimed")), after),
            Ok(Applied::Stored)
        );
        assert_eq!(s.get(&k).unwrap().writer(), PeerId::synthetic(2));
        assert_eq!(s.usage(&PeerId::synthetic(1)), (0, 0));
    }

    #[test]
    fn another_writers_claim_replaces_a_young_one_only_when_the_caller_allows() {
        let k = Id::from_u64(1);
        let now = 10 * DAY_MS;
        let a = rec(k, now, now, 1, Some(b"a"));
        // Older or younger, another writer's claim is refused unless the caller allows a
        // contest (the owner relaying its record); the claim's own date decides nothing.
        for since in [now - 100, now + 100] {
            let mut s = Store::new(limits(1 << 20, 100, 8));
            apply(&mut s, k, a.clone(), now).unwrap();
            let b = rec(k, since, since, 2, Some(b"b"));
            assert_eq!(
                apply(&mut s, k, b.clone(), now + 300),
                Err(Error::NotOwner { owner: a.writer() })
            );
            assert_eq!(
                from_owner(&mut s, k, b.clone(), now + 300),
                Ok(Applied::Stored)
            );
            assert_eq!(s.get(&k), Some(&b));
            assert_eq!(s.usage(&a.writer()), (0, 0));
        }
        // Once a claim is older than the window, not even the owner's relay replaces it.
        let mut s = Store::new(limits(1 << 20, 100, 8));
        apply(&mut s, k, a.clone(), now).unwrap();
        let late = now + CLAIM_WINDOW.as_millis() as u64;
        let b = rec(k, late, late, 2, Some(b"b"));
        assert_eq!(
            from_owner(&mut s, k, b, late),
            Err(Error::NotOwner { owner: a.writer() })
        );
    }

    #[test]
    fn one_writer_cannot_fill_the_store() {
        let mut l = limits(100 * (RECORD_OVERHEAD + 8), 8, 8);
        l.writer_records = 10;
        l.writer_bytes = 20 * (RECORD_OVERHEAD + 8);
        let mut s = Store::new(l);
        let hostile = PeerId::synthetic(9);
        for i in 0..10 {
            let k = Id::from_u64(i);
            apply(&mut s, k, rec(k, 5, 5, 9, Some(&[0; 8])), 5).unwrap();
        }
        let k = Id::from_u64(10);
        assert_eq!(
            apply(&mut s, k, rec(k, 5, 5, 9, Some(&[0; 8])), 5),
            Err(Error::QuotaExceeded { writer: hostile })
        );
        // Overwriting its own records stays within its share.
        let k0 = Id::from_u64(0);
        assert_eq!(
            apply(&mut s, k0, rec(k0, 6, 5, 9, Some(&[1; 8])), 6),
            Ok(Applied::Stored)
        );
        // An honest writer still has room.
        assert_eq!(
            apply(&mut s, k, rec(k, 5, 5, 1, Some(&[0; 8])), 5),
            Ok(Applied::Stored)
        );
        assert_eq!(s.usage(&hostile), (10, 10 * (RECORD_OVERHEAD + 8)));
        // By bytes too.
        let mut l = limits(1 << 20, 8, 8);
        l.writer_bytes = 2 * (RECORD_OVERHEAD + 8);
        let mut s = Store::new(l);
        for i in 0..2 {
            let k = Id::from_u64(i);
            apply(&mut s, k, rec(k, 5, 5, 9, Some(&[0; 8])), 5).unwrap();
        }
        let k = Id::from_u64(2);
        assert!(matches!(
            apply(&mut s, k, rec(k, 5, 5, 9, Some(&[0; 8])), 5),
            Err(Error::QuotaExceeded { .. })
        ));
    }

    /// A record of writer `w` with a value of `len` bytes, written at `t` ms.
    fn sized(key: Id, t: u64, w: u64, len: usize) -> Record {
        rec(key, t, t, w, Some(&vec![0; len]))
    }

    /// Keys held by writer `w`.
    fn held_by(s: &Store, w: u64) -> Vec<Id> {
        let p = PeerId::synthetic(w);
        s.records
            .iter()
            .filter(|(_, e)| e.record.writer() == p)
            .map(|(k, _)| *k)
            .collect()
    }

    #[test]
    fn a_full_store_admits_a_small_newcomer_by_evicting_from_the_largest_writer() {
        // 50 writers fill the store: 49 with two records each, writer 100 with three.
        let cost = RECORD_OVERHEAD + 64;
        let mut s = Store::new(limits(101 * cost, 64, 8));
        let mut t = 10;
        for w in 1..=49u64 {
            for j in 0..2 {
                let k = Id::from_u64(w * 1000 + j);
                apply(&mut s, k, sized(k, t, w, 64), t).unwrap();
                t += 1;
            }
        }
        let big: Vec<Id> = (0..3).map(|j| Id::from_u64(100_000 + j)).collect();
        // Written newest-first by key, so "oldest" and "lowest key" differ.
        for (j, k) in big.iter().enumerate().rev() {
            apply(&mut s, *k, sized(*k, 100 + j as u64, 100, 64), 200).unwrap();
        }
        assert_eq!(s.bytes(), 101 * cost, "full");
        s.take_changed();
        // Without the rule the newcomer is refused.
        let newcomer = Id::from_u64(7);
        assert_eq!(
            apply(&mut s, newcomer, sized(newcomer, 300, 200, 16), 300),
            Ok(Applied::Stored)
        );
        // One record went, the oldest of the writer holding the most.
        assert_eq!(s.evicted(), 1);
        assert_eq!(held_by(&s, 100), vec![big[1], big[2]]);
        assert!(s.get(&big[0]).is_none());
        for w in 1..=49 {
            assert_eq!(s.usage(&PeerId::synthetic(w)), (2, 2 * cost), "writer {w}");
        }
        assert!(s.bytes() <= 101 * cost);
        // The eviction is a change (a node keeping the store on disk drops the record).
        assert_eq!(s.take_changed(), Changed::Keys([big[0], newcomer].into()));
        // The evicted record offered again (repair, read repair) is refused: its writer
        // would be over its share with it. Nothing else is evicted for it.
        let back = sized(big[0], 100, 100, 64);
        assert!(matches!(
            apply(&mut s, big[0], back, 300),
            Err(Error::StoreFull { .. })
        ));
        assert_eq!(s.evicted(), 1);
    }

    #[test]
    fn writers_within_their_fair_share_are_never_evicted() {
        let cost = RECORD_OVERHEAD + 64;
        let mut s = Store::new(limits(10 * cost, 64, 8));
        // A small writer first (the oldest record in the store), then a heavy one.
        let a = Id::from_u64(1);
        apply(&mut s, a, sized(a, 1, 1, 64), 1).unwrap();
        for j in 0..9 {
            let k = Id::from_u64(100 + j);
            apply(&mut s, k, sized(k, 10 + j, 2, 64), 20).unwrap();
        }
        // Newcomers of one record each: every one gets in until each writer holds its
        // fair share (ten writers, one record each), always at the heavy writer's cost.
        for n in 0..8u64 {
            let k = Id::from_u64(1000 + n);
            assert_eq!(
                apply(&mut s, k, sized(k, 30, 10 + n, 64), 30),
                Ok(Applied::Stored),
                "newcomer {n}"
            );
            assert_eq!(s.usage(&PeerId::synthetic(1)), (1, cost), "newcomer {n}");
        }
        assert_eq!(s.usage(&PeerId::synthetic(2)), (1, cost));
        // Every writer at its share: the eleventh is refused, and nobody is evicted.
        let k = Id::from_u64(2000);
        assert!(matches!(
            apply(&mut s, k, sized(k, 30, 50, 64), 30),
            Err(Error::StoreFull { .. })
        ));
        assert_eq!(s.evicted(), 8);
        assert!(s.get(&a).is_some());
        // A writer at its share writing more is refused too, rather than evicting others.
        let k = Id::from_u64(2001);
        assert!(matches!(
            apply(&mut s, k, sized(k, 30, 1, 0), 30),
            Err(Error::StoreFull { .. })
        ));
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn empty_valued_records_count_against_a_writers_share() {
        // Room for 40 bare records. Writer 1: four records with 512-byte values; writer 2:
        // 28 records with empty values, fewer value bytes but far more records and bytes.
        let mut s = Store::new(limits(40 * RECORD_OVERHEAD, 512, 8));
        for j in 0..4 {
            let k = Id::from_u64(j);
            apply(&mut s, k, sized(k, 1 + j, 1, 512), 10).unwrap();
        }
        for j in 0..28 {
            let k = Id::from_u64(100 + j);
            apply(&mut s, k, sized(k, 10 + j, 2, 0), 40).unwrap();
        }
        assert_eq!(s.bytes(), 40 * RECORD_OVERHEAD);
        // A newcomer's empty record gets in at writer 2's cost (the one holding the most),
        // never writer 1's, whose larger values are within its share.
        for n in 0..6u64 {
            let k = Id::from_u64(1000 + n);
            assert_eq!(
                apply(&mut s, k, sized(k, 50 + n, 3, 0), 60),
                Ok(Applied::Stored)
            );
        }
        assert_eq!(s.usage(&PeerId::synthetic(1)).0, 4);
        assert_eq!(s.usage(&PeerId::synthetic(2)).0, 22);
        // The newcomer's share is 40 / 3 records: past it, refused.
        let mut refused = 0;
        for n in 6..20u64 {
            let k = Id::from_u64(1000 + n);
            if apply(&mut s, k, sized(k, 50 + n, 3, 0), 70).is_err() {
                refused += 1;
            }
        }
        assert_eq!(s.usage(&PeerId::synthetic(3)).0, 40 / 3);
        assert_eq!(refused, 20 - 40 / 3);
        assert_eq!(s.usage(&PeerId::synthetic(1)).0, 4);
    }

    /// Ten writers, one after the other, each try to write 30 empty records into a store
    /// with room for 100: what each ends with, and the keys held.
    fn crowd() -> (Vec<u64>, Vec<Id>) {
        let mut s = Store::new(limits(100 * RECORD_OVERHEAD, 8, 8));
        for w in 0..10u64 {
            for j in 0..30 {
                let k = Id::hash(&(w * 100 + j).to_be_bytes());
                let _ = apply(&mut s, k, sized(k, 1000 * w + j, w, 0), 20_000);
            }
        }
        let shares = (0..10).map(|w| s.usage(&PeerId::synthetic(w)).0).collect();
        (shares, s.records.keys().copied().collect())
    }

    #[test]
    fn a_crowd_of_writers_ends_with_equal_shares_deterministically() {
        let (shares, keys) = crowd();
        assert_eq!(shares, vec![10; 10]);
        // The same writes evict the same records.
        assert_eq!(crowd(), (shares, keys));
    }

    #[test]
    fn without_defenses_the_last_writer_wins() {
        let mut l = limits(1 << 20, 100, 8);
        l.defenses = false;
        l.writer_records = 1;
        let mut s = Store::new(l);
        let k = Id::from_u64(1);
        apply(&mut s, k, rec(k, 10, 10, 1, Some(b"a")), 10).unwrap();
        assert_eq!(
            apply(&mut s, k, rec(k, 11, 11, 2, None), 11),
            Ok(Applied::Stored)
        );
        let k2 = Id::from_u64(2);
        assert_eq!(
            apply(&mut s, k2, rec(k2, 11, 11, 2, None), 11),
            Ok(Applied::Stored),
            "no quota"
        );
    }

    #[test]
    fn bounds_are_typed_errors_and_leave_store_unchanged() {
        let mut s = Store::new(limits(RECORD_OVERHEAD + 10, 8, 8));
        let k = Id::from_u64(1);
        assert_eq!(
            apply(&mut s, k, rec(k, 1, 1, 1, Some(&[0; 9])), 1),
            Err(Error::ValueTooLarge { len: 9, max: 8 })
        );
        apply(&mut s, k, rec(k, 1, 1, 1, Some(&[0; 8])), 1).unwrap();
        let k2 = Id::from_u64(2);
        assert!(matches!(
            apply(&mut s, k2, rec(k2, 1, 1, 1, Some(&[0; 8])), 1),
            Err(Error::StoreFull { .. })
        ));
        assert_eq!(s.len(), 1);
        assert_eq!(s.bytes(), RECORD_OVERHEAD + 8);
        // replacing a record re-accounts its size
        apply(&mut s, k, rec(k, 2, 1, 1, None), 2).unwrap();
        assert_eq!(s.bytes(), RECORD_OVERHEAD);
        s.remove(&k);
        assert_eq!(s.bytes(), 0);
        assert_eq!(s.usage(&PeerId::synthetic(1)), (0, 0));
    }

    #[test]
    fn expired_records_are_swept() {
        let mut s = Store::new(limits(1 << 20, 100, 8));
        let (k1, k2) = (Id::from_u64(1), Id::from_u64(2));
        apply(&mut s, k1, rec(k1, 1, 1, 1, Some(b"x")), 1).unwrap();
        apply(&mut s, k2, rec(k2, 5, 5, 1, Some(b"y")), 5).unwrap();
        assert!(s.live(&k1, DAY_MS + 1).is_none() && s.get(&k1).is_some());
        assert_eq!(s.expire_records(DAY_MS + 1), 1);
        assert!(s.get(&k1).is_none() && s.get(&k2).is_some());
        assert_eq!(s.usage(&PeerId::synthetic(1)), (1, RECORD_OVERHEAD + 1));
    }

    #[test]
    fn ranges_wrap() {
        let mut s = Store::new(limits(1 << 20, 100, 8));
        for v in [1, 5, 10, 50] {
            let k = Id::from_u64(v);
            apply(&mut s, k, rec(k, 1, 1, 1, Some(b"x")), 1).unwrap();
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
        let any = |a, b| s.holds_any_in(&Id::from_u64(a), &Id::from_u64(b));
        assert!(
            any(1, 5) && any(60, 1) && any(7, 7),
            "an end, a wrap, the whole ring"
        );
        assert!(!any(1, 4) && !any(10, 49) && !any(50, 0), "empty intervals");
    }

    fn entry(key: &Id, p: u64, expires_ms: u64) -> ProviderEntry {
        ProviderEntry::sign(key, expires_ms, &Keypair::synthetic(p))
    }

    fn at(s: u64) -> Instant {
        Instant(s * 1_000_000)
    }

    #[test]
    fn providers_expire_and_refresh() {
        let mut s = Store::new(limits(1 << 20, 100, 4));
        let k = Id::from_u64(3);
        assert!(s.add_provider(k, entry(&k, 1, 10_000), at(0), 0, 0, true));
        assert!(s.add_provider(k, entry(&k, 2, 20_000), at(0), 0, 0, true));
        assert!(
            !s.add_provider(k, entry(&k, 3, 5), at(0), 10, 0, true),
            "expired"
        );
        let p = s.providers(&k, 0);
        assert_eq!(p[0].provider, PeerId::synthetic(2), "longest-lived first");
        assert!(s.add_provider(k, entry(&k, 1, 30_000), at(1), 1_000, 0, true));
        assert_eq!(s.providers(&k, 25_000).len(), 1);
        s.expire_providers(31_000);
        assert!(s.providers.is_empty());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn a_full_provider_set_drops_expired_then_the_least_recently_announced() {
        let k = Id::from_u64(3);
        let mut s = Store::new(limits(1 << 20, 100, 8));
        // Eight honest providers announced at t = 0..8 s; the first two expire at 10 s.
        for p in 0..8 {
            let exp = if p < 2 { 10_000 } else { 3_600_000 };
            s.add_provider(k, entry(&k, p, exp), at(p), p * 1000, 0, true);
        }
        // Provider 2 re-announces: it is no longer among the oldest.
        s.add_provider(k, entry(&k, 2, 3_600_000), at(9), 9_000, 0, true);
        // After 10 s a newcomer takes an expired slot: nobody live is dropped.
        s.add_provider(k, entry(&k, 100, 3_600_000), at(11), 11_000, 7, true);
        let held: Vec<PeerId> = s.providers(&k, 11_000).iter().map(|e| e.provider).collect();
        assert_eq!(held.len(), 7);
        assert!((2..8).all(|p| held.contains(&PeerId::synthetic(p))));
        s.add_provider(k, entry(&k, 101, 3_600_000), at(12), 12_000, 0, true);
        // Full: a long-lived newcomer pushes out one of the oldest quarter (providers 3 and
        // 4, announced at 3 s and 4 s), never the re-announced provider 2 nor a young one.
        for pick in 0..4u64 {
            let mut t = Store::new(limits(1 << 20, 100, 8));
            for (e, a) in s.providers[&k].values().map(|p| (p.entry, p.announced)) {
                t.add_provider(k, e, a, 12_000, 0, true);
            }
            let long = entry(&k, 200, 7_200_000);
            assert!(t.add_provider(k, long, at(13), 13_000, pick, true));
            let after: Vec<PeerId> = t.providers(&k, 13_000).iter().map(|e| e.provider).collect();
            assert_eq!(after.len(), 8);
            let gone: Vec<u64> = [2, 3, 4, 5, 6, 7, 100, 101]
                .into_iter()
                .filter(|p| !after.contains(&PeerId::synthetic(*p)))
                .collect();
            let expect = if pick % 2 == 0 { 3 } else { 4 };
            assert_eq!(gone, vec![expect], "pick {pick}");
        }
    }

    #[test]
    fn relayed_provider_entries_never_push_out_announced_ones() {
        let k = Id::from_u64(4);
        let mut s = Store::new(limits(1 << 20, 100, 8));
        // Four providers announced themselves, four entries came relayed: full.
        for p in 0..8 {
            assert!(s.add_provider(k, entry(&k, p, 3_600_000), at(p), p * 1000, 0, p < 4));
        }
        // A flood of relayed entries (made-up identities, validly signed) takes only the
        // relayed slots, whatever the pick; the announced providers stay.
        for (i, p) in (100..140).enumerate() {
            let t = 10_000 + i as u64;
            s.add_provider(k, entry(&k, p, 3_600_000), at(t), t, i as u64, false);
        }
        let held: Vec<PeerId> = s.providers(&k, 20_000).iter().map(|e| e.provider).collect();
        assert_eq!(held.len(), 8);
        assert!((0..4).all(|p| held.contains(&PeerId::synthetic(p))));
        // A set full of announced providers refuses relayed newcomers outright; an
        // announced newcomer still makes room.
        let mut s = Store::new(limits(1 << 20, 100, 2));
        for p in 0..2 {
            s.add_provider(k, entry(&k, p, 3_600_000), at(p), p * 1000, 0, true);
        }
        assert!(!s.add_provider(k, entry(&k, 9, 3_600_000), at(5), 5_000, 0, false));
        assert!(s.add_provider(k, entry(&k, 9, 3_600_000), at(5), 5_000, 0, true));
    }

    #[test]
    fn without_defenses_a_full_provider_set_favours_longer_lifetimes() {
        let k = Id::from_u64(3);
        let mut l = limits(1 << 20, 100, 2);
        l.defenses = false;
        let mut s = Store::new(l);
        s.add_provider(k, entry(&k, 1, 10_000), at(0), 0, 0, true);
        s.add_provider(k, entry(&k, 2, 20_000), at(0), 0, 0, true);
        assert!(!s.add_provider(k, entry(&k, 3, 5_000), at(0), 0, 0, true));
        assert!(s.add_provider(k, entry(&k, 3, 30_000), at(0), 0, 0, true));
        let held: Vec<PeerId> = s.providers(&k, 0).iter().map(|e| e.provider).collect();
        assert!(!held.contains(&PeerId::synthetic(1)));
    }
}
