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

use std::collections::BTreeMap;

use peerlab_overlay::PeerId;

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
    /// Version 0, above [`MAX_VERSION`], too far above what is known, or a version of this
    /// node's own data that it never wrote.
    #[error("absurd version")]
    AbsurdVersion,
    /// Key or value longer than the configured limit.
    #[error("oversized key or value")]
    Oversized,
    /// A delta row whose range or entries are inconsistent.
    #[error("malformed delta")]
    Malformed,
    /// The origin or entry cap is reached.
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
            // Only this node writes its own data; a higher version is forged.
            return Err(Rejection::AbsurdVersion);
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

    /// Stores `key@version` of `origin` unless the same or a newer version is held.
    /// The caller has validated the entry.
    pub(crate) fn apply(
        &mut self,
        origin: PeerId,
        key: &str,
        version: u64,
        value: Option<Vec<u8>>,
        config: &Config,
    ) -> Result<Applied, Rejection> {
        if !self.origins.contains_key(&origin) && self.origins.len() >= config.max_origins {
            return Err(Rejection::OverCapacity);
        }
        let o = self.origins.entry(origin).or_default();
        if version <= o.watermark && !o.entries.contains_key(key) {
            // Below the watermark and absent: it was superseded or is a stale replay of a
            // key we hold newer; either way nothing to learn.
            return Ok(Applied::Known);
        }
        match o.entries.get(key) {
            Some(cur) if cur.version >= version => return Ok(Applied::Known),
            Some(cur) => {
                let old = cur.version;
                o.by_version.remove(&old);
            }
            None => {
                if o.entries.len() >= config.max_entries_per_origin {
                    return Err(Rejection::OverCapacity);
                }
            }
        }
        o.entries
            .insert(key.to_string(), StoredEntry { version, value });
        o.by_version.insert(version, key.to_string());
        o.advance();
        Ok(Applied::New)
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
