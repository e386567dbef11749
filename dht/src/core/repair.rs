//! Replication, repair and hand-off of records.
//!
//! The owner of a key stores a write and pushes it to its replica set: the first `R − 1`
//! successors that belong to peers other than the owner and each other. Every repair period
//! the owner sends each replica a digest (`Offer`) of its range; the replica asks (`Want`)
//! for what it lacks or holds older, which the owner pushes (`Store`). The offer is also the
//! replica's liveness check, usually faster than stabilization. A peer holding records no
//! owner confirmed for [`ORPHAN_PERIODS`] repair periods looks their owner up and hands
//! them back (`Handoff`); the owner answers whether the sender is still a replica.

use peerlab_overlay::{Cx, Id, Instant, Offence, PeerId};

use super::admission::{Intake, worse};
use super::pending::Pending;
use super::routing::Purpose;
use super::{Dht, MAX_INTERNAL_LOOKUPS};
use crate::message::{
    MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, MAX_PROVIDERS_PER_MESSAGE, Message, NodeRef, ProviderEntry,
    Record, Reject, Version,
};
use crate::store::{Applied, RECORD_OVERHEAD};

/// Hand-back lookups in flight at once (each moves up to one batch of orphaned records).
const MAX_HANDBACKS: usize = 4;

/// Repair periods a record may go unconfirmed by its owner before it counts as orphaned
/// and is handed back.
const ORPHAN_PERIODS: u32 = 3;

impl Dht {
    /// Pushes records to `to` in bounded batches.
    pub(super) fn push_records(&mut self, cx: &mut Cx<'_, Self>, to: PeerId, keys: &[Id]) {
        if to == self.me {
            return;
        }
        let now_ms = self.clock.wall_ms(cx.now());
        let mut batch: Vec<(Id, Record)> = Vec::new();
        let mut bytes = 0usize;
        for k in keys {
            let Some(r) = self.store.live(k, now_ms) else {
                continue;
            };
            let size = batch_size(r);
            if batch.len() >= MAX_BATCH_ENTRIES || bytes + size > MAX_BATCH_BYTES {
                cx.send(
                    to,
                    Message::Store {
                        records: std::mem::take(&mut batch),
                        providers: Vec::new(),
                    },
                );
                bytes = 0;
            }
            bytes += size;
            batch.push((*k, r.clone()));
        }
        if !batch.is_empty() {
            cx.send(
                to,
                Message::Store {
                    records: batch,
                    providers: Vec::new(),
                },
            );
        }
    }

    pub(super) fn provider_batch(
        &self,
        keys: &[Id],
        now: Instant,
    ) -> Vec<(Id, Vec<ProviderEntry>)> {
        let now_ms = self.clock.wall_ms(now);
        keys.iter()
            .map(|k| {
                let mut p = self.store.providers(k, now_ms);
                p.truncate(MAX_PROVIDERS_PER_MESSAGE);
                (*k, p)
            })
            .filter(|(_, p)| !p.is_empty())
            .collect()
    }

    pub(super) fn push_providers(
        &mut self,
        cx: &mut Cx<'_, Self>,
        to: PeerId,
        keys: &[Id],
        now: Instant,
    ) {
        if to == self.me {
            return;
        }
        for chunk in keys.chunks(MAX_BATCH_ENTRIES / 8) {
            let providers = self.provider_batch(chunk, now);
            if !providers.is_empty() {
                cx.send(
                    to,
                    Message::Store {
                        records: Vec::new(),
                        providers,
                    },
                );
            }
        }
    }

    /// The keys of the range `(from, to]` for which this replica holds a live provider entry
    /// that an owner's complete offer (`offered`) lacks: the owner lost them (a restart
    /// empties its provider sets, which live in memory only, and a quick restart changes
    /// no ring pointer, so nothing else would hand them back). An offer carrying
    /// [`MAX_BATCH_ENTRIES`] sets may have been cut short and is not compared. At most
    /// [`MAX_BATCH_ENTRIES`] keys.
    pub(super) fn providers_missing_from(
        &self,
        from: &Id,
        to: &Id,
        offered: &[(Id, Vec<ProviderEntry>)],
        now: Instant,
    ) -> Vec<Id> {
        if offered.len() >= MAX_BATCH_ENTRIES {
            return Vec::new();
        }
        let now_ms = self.clock.wall_ms(now);
        let offered: std::collections::BTreeMap<&Id, &Vec<ProviderEntry>> =
            offered.iter().map(|(k, l)| (k, l)).collect();
        self.store
            .provider_keys_in(from, to)
            .into_iter()
            .filter(|k| {
                let theirs = offered.get(k);
                self.store.providers(k, now_ms).iter().any(|e| {
                    theirs.is_none_or(|l| {
                        l.len() < MAX_PROVIDERS_PER_MESSAGE
                            && !l.iter().any(|t| t.provider == e.provider)
                    })
                })
            })
            .take(MAX_BATCH_ENTRIES)
            .collect()
    }

    /// Takes the provider entries of a batch from `from` (each signed by its provider);
    /// returns the worst offence among those refused.
    pub(super) fn merge_providers(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        providers: Vec<(Id, Vec<ProviderEntry>)>,
    ) -> Option<Offence> {
        let now = cx.now();
        let mut offence = None;
        for (k, list) in providers.into_iter().take(MAX_BATCH_ENTRIES) {
            if list.len() > MAX_PROVIDERS_PER_MESSAGE {
                offence = worse(offence, Some(Offence::Malformed));
            }
            for e in list.into_iter().take(MAX_PROVIDERS_PER_MESSAGE) {
                if let Err(reason) = self.admit_provider(cx, k, e, None) {
                    offence = worse(offence, self.charge(from, reason, true, now));
                }
            }
        }
        offence
    }

    pub(super) fn is_primary(&self, key: &Id) -> bool {
        self.vnodes
            .iter()
            .any(|v| v.joined && v.pred.is_some_and(|p| key.in_half_open(&p.id, &v.id)))
    }

    pub(super) fn repair(&mut self, cx: &mut Cx<'_, Self>) {
        let now = cx.now();
        let now_ms = self.clock.wall_ms(now);
        self.store.expire_providers(now_ms);
        self.store.expire_records(now_ms);
        let owned: Vec<(Id, Id, Vec<NodeRef>)> = self
            .vnodes
            .iter()
            .filter(|v| v.joined)
            .filter_map(|v| v.pred.map(|p| (p.id, v.id, self.replicas_of(v))))
            .collect();
        for (from, to, replicas) in owned {
            self.offer_range(cx, from, to, &replicas);
        }
        // Hand back records nobody has confirmed for a while.
        let stale = now
            .as_micros()
            .saturating_sub(self.cfg.repair_period.as_micros() as u64 * ORPHAN_PERIODS as u64);
        if self.handbacks < MAX_HANDBACKS && self.lookups.len() < MAX_INTERNAL_LOOKUPS {
            let orphans: Vec<Id> = self
                .store
                .records
                .iter()
                .filter(|(_, e)| e.confirmed.as_micros() < stale)
                .map(|(k, _)| *k)
                .filter(|k| !self.is_primary(k))
                .take(MAX_HANDBACKS - self.handbacks)
                .collect();
            for k in orphans {
                self.handbacks += 1;
                // Avoid handing the same record back again before the answer arrives.
                self.store.confirm(&k, now);
                self.start_lookup(cx, k, Purpose::Handback);
            }
        }
    }

    /// Offers the digest of the range `(from, to]` this peer owns to each of `replicas`
    /// (in [`MAX_BATCH_ENTRIES`] chunks; the first offer carries the range's provider sets
    /// and goes out even when empty, since it is also the replica's liveness check).
    pub(super) fn offer_range(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: Id,
        to: Id,
        replicas: &[NodeRef],
    ) {
        let now = cx.now();
        let keys = self.store.keys_in(&from, &to);
        for k in &keys {
            self.store.confirm(k, now);
        }
        let pkeys = self.store.provider_keys_in(&from, &to);
        let providers = self.provider_batch(&pkeys[..pkeys.len().min(MAX_BATCH_ENTRIES)], now);
        let chunks: Vec<&[Id]> = if keys.is_empty() {
            vec![&[][..]]
        } else {
            keys.chunks(MAX_BATCH_ENTRIES).collect()
        };
        for r in replicas {
            for (n, chunk) in chunks.iter().enumerate() {
                let digest: Vec<(Id, Version, Version)> = chunk
                    .iter()
                    .filter_map(|k| self.store.get(k).map(|r| (*k, r.version, r.since)))
                    .collect();
                let p = if n == 0 {
                    providers.clone()
                } else {
                    Vec::new()
                };
                let req = self.fresh();
                let msg = Message::Offer {
                    req,
                    from,
                    to,
                    digest,
                    providers: p,
                };
                self.request(cx, r.peer, req, msg, Pending::Offer);
            }
        }
    }

    pub(super) fn hand_back(&mut self, cx: &mut Cx<'_, Self>, pred: NodeRef, owner: NodeRef) {
        if owner.peer == self.me {
            return;
        }
        let now_ms = self.clock.wall_ms(cx.now());
        let mut keys = self.store.keys_in(&pred.id, &owner.id);
        keys.truncate(MAX_BATCH_ENTRIES);
        let mut records = Vec::with_capacity(keys.len());
        let mut bytes = 0;
        for k in &keys {
            if let Some(r) = self.store.live(k, now_ms) {
                let size = batch_size(r);
                if bytes + size > MAX_BATCH_BYTES {
                    break;
                }
                bytes += size;
                records.push((*k, r.clone()));
            }
        }
        let keys: Vec<Id> = records.iter().map(|(k, _)| *k).collect();
        let req = self.fresh();
        let msg = Message::Handoff {
            req,
            vnode: owner.id,
            records,
        };
        self.request(cx, owner.peer, req, msg, Pending::Handoff { keys });
    }

    /// Takes the records of a batch (a `Store`, `Handoff` or repair push) from `from`;
    /// returns the worst offence among those refused.
    pub(super) fn apply_batch(
        &mut self,
        from: PeerId,
        records: Vec<(Id, Record)>,
        now: Instant,
    ) -> Option<Offence> {
        let mut offence = None;
        for (k, r) in records {
            let writer = r.writer();
            match self.admit_record(k, r, now, Intake::Relay { from }) {
                Ok(Applied::Stored) => {}
                Ok(Applied::Stale) => self.store.confirm(&k, now),
                // A writer over its quota here is the writer's doing, not the relay's: an
                // honest owner replicating a greedy writer's records must not be charged.
                Err(Reject::QuotaExceeded) if writer != from => {}
                Err(reason) => {
                    match reason {
                        Reject::ValueTooLarge => self.counters.oversized_value += 1,
                        Reject::StoreFull => self.counters.store_full += 1,
                        _ => {}
                    }
                    offence = worse(offence, self.charge(from, reason, true, now));
                }
            }
        }
        offence
    }
}

/// What a record counts for against [`MAX_BATCH_BYTES`]: its value and the fixed size of
/// its key, versions, expiry and signature.
fn batch_size(r: &Record) -> usize {
    r.value_len() + RECORD_OVERHEAD as usize
}
