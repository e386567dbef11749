//! The versioned data store.
//!
//! Each origin numbers its writes 1, 2, 3, … (a write is a publish or a delete). A node
//! keeps, per origin, the newest version of each key and a *watermark*: the highest version
//! `w` such that it holds everything of that origin up to `w` (versions overwritten by a
//! newer write of the same key need not be held). Watermarks are what Scuttlebutt digests
//! list (`anti_entropy.rs` builds digests and deltas from this store).
//!
//! Rumors may deliver versions out of order; they are stored at once but move the
//! watermark only when they are contiguous with it, so anti-entropy still fills any gap.
//!
//! The store's bytes are bounded by the data budget and shared fairly between origins
//! (see `budget.rs`): when an entry does not fit, the origin holding the most bytes gives
//! up its newest entries — its watermark falls below the first one given up, so the
//! watermark still means "everything up to here is held" — unless the entry's own origin
//! would then hold the most, in which case the entry is refused.

use std::collections::{BTreeMap, BTreeSet};

use peerlab_overlay::PeerId;

use crate::budget::{ORIGIN_OVERHEAD, entry_cost};
use crate::config::{Config, MAX_VERSION};
use crate::message::{Entry, MAX_ITEMS, OriginDelta};

/// The newest known version of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    /// The origin's version of this write.
    pub version: u64,
    /// The value; `None` for a deleted key (a tombstone).
    pub value: Option<Vec<u8>>,
}

/// One origin's data.
#[derive(Clone, Debug, Default)]
pub(crate) struct OriginState {
    /// Everything up to this version is held.
    pub(crate) watermark: u64,
    /// Newest version per key.
    pub(crate) entries: BTreeMap<String, StoredEntry>,
    /// Index: version → key, for the entries above.
    pub(crate) by_version: BTreeMap<u64, String>,
    /// Bytes this origin's data costs (`budget.rs`).
    bytes: usize,
}

impl OriginState {
    fn advance(&mut self) {
        while self.by_version.contains_key(&(self.watermark + 1)) {
            self.watermark += 1;
        }
    }
}

/// Why an incoming entry or delta row was refused. Nothing is stored when it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The origin is not a known member.
    #[error("unknown origin")]
    UnknownOrigin,
    /// Version 0, above [`MAX_VERSION`], or too far above what is known.
    #[error("absurd version")]
    AbsurdVersion,
    /// A version of this node's own data beyond what it wrote: forged, or remembered from
    /// a previous life of this node.
    #[error("version of this node's data it never wrote")]
    NotWritten,
    /// Key or value longer than the configured limit.
    #[error("oversized key or value")]
    Oversized,
    /// A delta row whose range or entries are inconsistent.
    #[error("malformed delta")]
    Malformed,
    /// The origin or entry cap is reached, or the data budget is full and the entry's
    /// origin holds the most data.
    #[error("capacity reached")]
    OverCapacity,
}

/// Outcome of applying one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The entry was new and is now stored.
    New,
    /// The same or a newer version was already held; nothing changed.
    Known,
}

/// The store.
#[derive(Clone, Debug, Default)]
pub(crate) struct Store {
    pub(crate) origins: BTreeMap<PeerId, OriginState>,
    /// Bytes all origins' data costs.
    bytes: usize,
    /// `(bytes, origin)` for every origin: who holds the most.
    by_size: BTreeSet<(usize, PeerId)>,
}

impl Store {
    pub(crate) fn watermark(&self, origin: &PeerId) -> u64 {
        self.origins.get(origin).map_or(0, |o| o.watermark)
    }

    pub(crate) fn get(&self, origin: &PeerId, key: &str) -> Option<&StoredEntry> {
        self.origins.get(origin)?.entries.get(key)
    }

    /// Whether `version` of `key` (or a newer one) is held.
    pub(crate) fn knows(&self, origin: &PeerId, key: &str, version: u64) -> bool {
        self.get(origin, key).is_some_and(|e| e.version >= version)
    }

    /// Checks an incoming version against what is known of `origin`.
    pub(crate) fn check_version(
        &self,
        me: &PeerId,
        origin: &PeerId,
        version: u64,
        config: &Config,
    ) -> Result<(), Rejection> {
        if version == 0 || version > MAX_VERSION {
            return Err(Rejection::AbsurdVersion);
        }
        let w = self.watermark(origin);
        if origin == me && version > w {
            // Only this node writes its own data; a higher version is forged (or remembered
            // from before this node restarted).
            return Err(Rejection::NotWritten);
        }
        if version - 1 > w.saturating_add(config.max_version_jump) {
            return Err(Rejection::AbsurdVersion);
        }
        Ok(())
    }

    pub(crate) fn check_entry(
        &self,
        me: &PeerId,
        e: &Entry,
        config: &Config,
    ) -> Result<(), Rejection> {
        if e.key.len() > config.max_key_len
            || e.value
                .as_ref()
                .is_some_and(|v| v.len() > config.max_value_len)
        {
            return Err(Rejection::Oversized);
        }
        self.check_version(me, &e.origin, e.version, config)
    }

    /// Bytes all stored data costs.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Stores `key@version` of `origin` unless the same or a newer version is held, within
    /// `budget` bytes of data; `me`'s data is never evicted to make room. The caller has
    /// validated the entry.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply(
        &mut self,
        origin: PeerId,
        key: &str,
        version: u64,
        value: Option<Vec<u8>>,
        config: &Config,
        me: &PeerId,
        budget: usize,
    ) -> Result<Applied, Rejection> {
        let replaced = match self.origins.get(&origin) {
            None => {
                if self.origins.len() >= config.max_origins {
                    return Err(Rejection::OverCapacity);
                }
                None
            }
            Some(o) => {
                if version <= o.watermark && !o.entries.contains_key(key) {
                    // Below the watermark and absent: it was superseded or is a stale replay
                    // of a key we hold newer; either way nothing to learn.
                    return Ok(Applied::Known);
                }
                match o.entries.get(key) {
                    Some(cur) if cur.version >= version => return Ok(Applied::Known),
                    Some(cur) => Some((cur.version, entry_cost(key, cur.value.as_deref()))),
                    None => {
                        if o.entries.len() >= config.max_entries_per_origin {
                            return Err(Rejection::OverCapacity);
                        }
                        None
                    }
                }
            }
        };
        let new_origin = !self.origins.contains_key(&origin);
        let cost = entry_cost(key, value.as_deref()) + if new_origin { ORIGIN_OVERHEAD } else { 0 };
        let freed = replaced.map_or(0, |(_, c)| c);
        self.make_room(&origin, cost.saturating_sub(freed), budget, me)?;
        let before = self.size(&origin);
        let o = self.origins.entry(origin).or_default();
        if let Some((old, _)) = replaced {
            o.by_version.remove(&old);
        }
        o.entries
            .insert(key.to_string(), StoredEntry { version, value });
        o.by_version.insert(version, key.to_string());
        o.advance();
        self.resize(&origin, before, before + cost - freed);
        Ok(Applied::New)
    }

    fn size(&self, origin: &PeerId) -> usize {
        self.origins.get(origin).map_or(0, |o| o.bytes)
    }

    /// Sets `origin`'s size from `before` to `after` bytes in the totals and the index.
    fn resize(&mut self, origin: &PeerId, before: usize, after: usize) {
        if before > 0 {
            self.by_size.remove(&(before, *origin));
        }
        if after > 0 {
            self.by_size.insert((after, *origin));
        }
        self.bytes = self.bytes - before + after;
        if let Some(o) = self.origins.get_mut(origin) {
            o.bytes = after;
        }
    }

    /// Evicts until `need` more bytes for `origin` fit `budget`: from the origin holding the
    /// most (never `me`, never `origin` itself), while it holds more than `origin` would.
    fn make_room(
        &mut self,
        origin: &PeerId,
        need: usize,
        budget: usize,
        me: &PeerId,
    ) -> Result<(), Rejection> {
        while self.bytes + need > budget {
            let wanted = self.size(origin) + need;
            let victim = self
                .by_size
                .iter()
                .rev()
                .find(|(_, p)| p != me && p != origin)
                .copied();
            match victim {
                Some((size, victim)) if size > wanted => self.evict_newest(&victim),
                _ => return Err(Rejection::OverCapacity),
            }
        }
        Ok(())
    }

    /// Drops `origin`'s newest entry (or the origin itself when it holds none), lowering its
    /// watermark below the dropped version.
    fn evict_newest(&mut self, origin: &PeerId) {
        let before = self.size(origin);
        let Some(o) = self.origins.get_mut(origin) else {
            return;
        };
        let Some((version, key)) = o.by_version.pop_last() else {
            self.origins.remove(origin);
            self.resize(origin, before, 0);
            return;
        };
        let cost = o
            .entries
            .remove(&key)
            .map_or(0, |e| entry_cost(&key, e.value.as_deref()));
        o.watermark = o.watermark.min(version - 1);
        self.resize(origin, before, before - cost);
    }

    /// After a delta row `(from, to]` was applied: the holder is now complete up to `to`
    /// if the row started at or below its watermark.
    pub(crate) fn cover(&mut self, origin: &PeerId, from: u64, to: u64) {
        if let Some(o) = self.origins.get_mut(origin)
            && from <= o.watermark
            && to > o.watermark
        {
            o.watermark = to;
            o.advance();
        }
    }

    /// Validates a delta row as a whole (entries are checked one by one when applied).
    pub(crate) fn check_delta(
        &self,
        me: &PeerId,
        d: &OriginDelta,
        config: &Config,
    ) -> Result<(), Rejection> {
        if d.from >= d.to || d.entries.len() > MAX_ITEMS {
            return Err(Rejection::Malformed);
        }
        self.check_version(me, &d.origin, d.to, config)?;
        let mut last = d.from;
        for (_, v, _) in &d.entries {
            if *v <= last || *v > d.to {
                return Err(Rejection::Malformed);
            }
            last = *v;
        }
        Ok(())
    }
}
