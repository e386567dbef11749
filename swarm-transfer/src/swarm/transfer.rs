//! One transfer: its lifecycle, its connections and the peer messages that change their
//! state.
//!
//! A [`Transfer`] is created by a share or a fetch. Until its manifest is known it only
//! collects candidate peers and asks for the manifest (the `manifest_fetch` module); then
//! it becomes [`Active`]: a store is open, and every connected peer has a
//! [`Connection`]. The active state is split in two so that a handler can hold one peer's
//! connection and our own side ([`Local`]: the file, the picker, the choker) at once.
//!
//! This file holds what concerns the transfer as a whole — candidates, connecting,
//! handshakes, the BEP 3 state messages (bitfield, have, interest, choke), housekeeping,
//! penalties and bans. Receiving blocks and asking for them is in `download`, serving
//! them in `upload`, BEP 16 in `super_seed`.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use peerlab_overlay::{Instant, Offence, PeerId};

use super::config::{ANNOUNCE_RETRY, MAX_ANNOUNCE_DOUBLINGS};
use super::connection::Connection;
use super::estimate::UplinkUse;
use super::manifest_fetch::ManifestFetch;
use super::slots::MAX_REOPENS;
use super::super_seed::SuperSeed;
use super::{Config, Event, Link, ProtocolError, SwarmCx, Timer, TransferStats, send};
use crate::bitfield::Bitfield;
use crate::choker::Choker;
use crate::discovery::Discovery;
use crate::manifest::{ContentId, Manifest};
use crate::picker::Picker;
use crate::storage::{ChunkStore, StoreFactory};
use crate::wire::Body;

/// One transfer, keyed by its content id in the core.
pub(crate) struct Transfer<S> {
    pub(crate) config: Arc<Config>,
    pub(crate) cid: ContentId,
    /// Tells this transfer's timers from those of an earlier transfer of the same id.
    pub(crate) generation: u64,
    /// Set once the manifest is known.
    pub(crate) active: Option<Active<S>>,
    /// Known peers not connected, at most [`Config::max_candidates`].
    pub(crate) candidates: BTreeSet<PeerId>,
    pub(crate) banned: BTreeSet<PeerId>,
    /// Corrupt chunks attributed to each peer.
    strikes: BTreeMap<PeerId, u32>,
    /// Protocol violations of each peer.
    penalties: BTreeMap<PeerId, u32>,
    /// Asking providers for the manifest.
    pub(crate) manifest_fetch: ManifestFetch,
    pub(crate) last_lookup: Option<Instant>,
    /// Provider look-ups since one last found somebody (see [`Transfer::tick`]).
    pub(crate) empty_lookups: u32,
    /// Announcements in a row the DHT could not store (see [`Command::Announced`]).
    pub(crate) announce_failures: u32,
    pub(crate) stats: TransferStats,
}

/// A transfer once its manifest is known.
pub(crate) struct Active<S> {
    /// Our side: the file, what we hold and want, whom we upload to.
    pub(crate) local: Local<S>,
    /// The connected peers.
    pub(crate) peers: BTreeMap<PeerId, Connection>,
}

/// Our side of an active transfer.
pub(crate) struct Local<S> {
    pub(crate) cid: ContentId,
    pub(crate) manifest: Manifest,
    pub(crate) store: S,
    pub(crate) picker: Picker,
    pub(crate) choker: Choker,
    /// Chunks that failed verification with blocks from several peers: their blocks and
    /// senders, kept until the chunk passes (libtorrent's smart ban), at most
    /// [`Config::max_failed_records`].
    pub(crate) failed: BTreeMap<u32, Vec<(Bytes, PeerId)>>,
    /// While super-seeding: how often each chunk was revealed and served.
    pub(crate) super_seed: Option<SuperSeed>,
    /// How much of the uplink the current choke round used (adapts the unchoke slots).
    pub(crate) uplink_use: UplinkUse,
    /// When the current choke round began.
    pub(crate) round_started: Instant,
}

impl<S: ChunkStore> Transfer<S> {
    /// A transfer of `cid` that knows no manifest and no peer yet.
    pub(crate) fn new(config: Arc<Config>, cid: ContentId, generation: u64) -> Transfer<S> {
        Transfer {
            config,
            cid,
            generation,
            active: None,
            candidates: BTreeSet::new(),
            banned: BTreeSet::new(),
            strikes: BTreeMap::new(),
            penalties: BTreeMap::new(),
            manifest_fetch: ManifestFetch::default(),
            last_lookup: None,
            empty_lookups: 0,
            announce_failures: 0,
            stats: TransferStats::default(),
        }
    }

    /// Counters, with the live figures filled in.
    pub(crate) fn stats(&self) -> TransferStats {
        let mut s = self.stats;
        if let Some(a) = &self.active {
            s.have = a.local.picker.have().count();
            s.chunks = a.local.manifest.chunk_count();
            s.peers = a.peers.len() as u32;
        }
        s.banned = self.banned.len() as u32;
        s.providers = self.candidates.len() as u32;
        s
    }

    /// The state of every connection.
    pub(crate) fn links(&self) -> Vec<Link> {
        let Some(a) = &self.active else {
            return Vec::new();
        };
        a.peers
            .iter()
            .map(|(peer, p)| Link {
                peer: *peer,
                am_choking: p.am_choking,
                am_interested: p.am_interested,
                peer_choking: p.peer_choking,
                peer_interested: p.peer_interested,
                outstanding: p.outstanding.len(),
            })
            .collect()
    }

    /// The manifest is known and `store` opened: answers queued manifest requests,
    /// announces us as a provider, starts choking rounds and connects to candidates.
    pub(crate) fn activate(
        &mut self,
        cx: &mut SwarmCx<'_>,
        manifest: Manifest,
        store: S,
        super_seed: bool,
    ) {
        let picker = Picker::new(self.config.picker, store.held().clone());
        let super_seed = super_seed.then(|| SuperSeed::new(manifest.chunk_count()));
        let cid = self.cid;
        for w in std::mem::take(&mut self.manifest_fetch.waiters) {
            send(cx, w, cid, Body::Manifest(manifest.clone()));
        }
        self.active = Some(Active {
            local: Local {
                cid,
                manifest,
                store,
                picker,
                choker: Choker::new(),
                failed: BTreeMap::new(),
                super_seed,
                uplink_use: UplinkUse::default(),
                round_started: cx.now(),
            },
            peers: BTreeMap::new(),
        });
        self.announce(cx);
        // The first round comes early: the start-up unchokes were first come, first served.
        cx.set_timer(
            self.config.choker.round(None, 0, 0),
            Timer::Choke {
                cid,
                generation: self.generation,
            },
        );
        self.connect_candidates(cx);
    }

    /// Announces us as a provider in the DHT and schedules the next announcement.
    pub(crate) fn announce(&self, cx: &mut SwarmCx<'_>) {
        let cid = self.cid;
        self.emit_announce(cx);
        cx.set_timer(
            self.config.announce_interval,
            Timer::Announce {
                cid,
                generation: self.generation,
            },
        );
    }

    /// Asks the application's DHT to store us as a provider.
    pub(crate) fn emit_announce(&self, cx: &mut SwarmCx<'_>) {
        cx.emit(Event::Discovery(Discovery::Announce {
            cid: self.cid,
            key: self.cid.dht_key(),
            ttl: self.config.provider_ttl,
        }));
    }

    /// The DHT stored our provider record, or could not: then announce again after
    /// [`ANNOUNCE_RETRY`], twice as long after each failure in a row, at most the
    /// announcement interval.
    pub(crate) fn on_announced(&mut self, cx: &mut SwarmCx<'_>, stored: bool) {
        if stored {
            self.announce_failures = 0;
            self.stats.announcements = self.stats.announcements.saturating_add(1);
            return;
        }
        if self.active.is_none() {
            // Nothing to serve yet: the announcement made once the manifest is known counts.
            return;
        }
        self.announce_failures = self.announce_failures.saturating_add(1);
        let doublings = (self.announce_failures - 1).min(MAX_ANNOUNCE_DOUBLINGS);
        let delay = (ANNOUNCE_RETRY * (1 << doublings)).min(self.config.announce_interval);
        cx.set_timer(
            delay,
            Timer::AnnounceRetry {
                cid: self.cid,
                generation: self.generation,
                attempt: self.announce_failures,
            },
        );
    }

    /// Remembers `peers` as candidates (up to [`Config::max_candidates`]) and connects to
    /// them while slots are free.
    pub(crate) fn add_candidates(&mut self, cx: &mut SwarmCx<'_>, peers: Vec<PeerId>) {
        for p in peers {
            if self.banned.contains(&p)
                || self
                    .active
                    .as_ref()
                    .is_some_and(|a| a.peers.contains_key(&p))
            {
                continue;
            }
            if self.candidates.len() < self.config.max_candidates {
                self.candidates.insert(p);
            }
        }
        self.connect_candidates(cx);
    }

    /// Opens connections to candidates while slots are free (see `slots`: with defenses a
    /// candidate may take the slot of a newcomer past its probation).
    pub(crate) fn connect_candidates(&mut self, cx: &mut SwarmCx<'_>) {
        loop {
            let Some(a) = &self.active else { return };
            if !self.slot_free(false) {
                let viable = self
                    .candidates
                    .iter()
                    .any(|c| !self.banned.contains(c) && !a.peers.contains_key(c));
                if !(viable && self.make_room(cx, false)) {
                    break;
                }
            }
            let Some(peer) = self.candidates.pop_first() else {
                break;
            };
            if self.banned.contains(&peer) {
                continue;
            }
            let config = &*self.config;
            let Some(a) = &mut self.active else { return };
            let Entry::Vacant(slot) = a.peers.entry(peer) else {
                continue;
            };
            let chunks = a.local.manifest.chunk_count();
            let p = slot.insert(Connection::new(chunks, cx.now(), false));
            send(cx, peer, self.cid, Body::Handshake);
            a.local.send_bitfield(config, cx, peer, p);
        }
    }

    /// A peer opened the transfer with us: it is connected (if a slot is free) and gets our
    /// bitfield.
    fn on_handshake(&mut self, cx: &mut SwarmCx<'_>, from: PeerId) {
        let config = &*self.config;
        let Some(a) = &mut self.active else {
            // We cannot talk chunks yet; connect back once our manifest arrives.
            if self.candidates.len() < config.max_candidates {
                self.candidates.insert(from);
            }
            return;
        };
        // The answer to a handshake is our bitfield. A peer we already count as connected may
        // be opening again (it had not joined the transfer when our handshake came), so it
        // gets the bitfield too; bitfields never trigger replies, so this cannot loop.
        if let Some(p) = a.peers.get_mut(&from) {
            if config.defenses {
                p.reopens += 1;
                if p.reopens > MAX_REOPENS {
                    cx.penalize(from, Offence::Excess);
                    return;
                }
            }
            a.local.send_bitfield(config, cx, from, p);
            return;
        }
        let defenses = config.defenses;
        if !self.slot_free(true) && !self.make_room(cx, true) {
            // Full. Without defenses the peer finds out by its handshake timeout.
            if defenses {
                send(cx, from, self.cid, Body::Close);
            }
            return;
        }
        self.candidates.remove(&from);
        let config = &*self.config;
        let Some(a) = &mut self.active else { return };
        let chunks = a.local.manifest.chunk_count();
        let p = a
            .peers
            .entry(from)
            .or_insert_with(|| Connection::new(chunks, cx.now(), true));
        a.local.send_bitfield(config, cx, from, p);
    }

    /// One message of this transfer from `from`. A violation is penalised.
    pub(crate) fn handle_message<F: StoreFactory<Store = S>>(
        &mut self,
        cx: &mut SwarmCx<'_>,
        factory: &mut F,
        from: PeerId,
        body: Body,
        request_seq: &mut u64,
    ) {
        if self.banned.contains(&from) {
            return;
        }
        let result = match body {
            Body::ManifestRequest => {
                self.on_manifest_request(cx, from);
                Ok(())
            }
            Body::Manifest(m) => self.on_manifest(cx, factory, from, m),
            Body::Handshake => {
                self.on_handshake(cx, from);
                Ok(())
            }
            Body::Block { chunk, block, data } => self.on_block(cx, from, chunk, block, data),
            other => self.on_peer_message(cx, from, other, request_seq),
        };
        if let Err(error) = result {
            self.penalise(cx, from, error);
        }
    }

    /// A message on an established connection (everything but the manifest exchange, the
    /// handshake and blocks).
    fn on_peer_message(
        &mut self,
        cx: &mut SwarmCx<'_>,
        from: PeerId,
        body: Body,
        request_seq: &mut u64,
    ) -> Result<(), ProtocolError> {
        let config = &*self.config;
        let cid = self.cid;
        // A peer may send transfer messages before it learns that we dropped the connection
        // or before our manifest arrived (it handshook while we could not answer). These are
        // races, not attacks: the message is ignored without penalty.
        let Some(a) = &mut self.active else {
            return Ok(());
        };
        match body {
            Body::Bitfield(bits) => {
                let Some(p) = a.peers.get_mut(&from) else {
                    return Ok(());
                };
                let local = &mut a.local;
                if bits.len() != local.manifest.chunk_count() || !bits.is_well_formed() {
                    return Err(ProtocolError::Bitfield);
                }
                local.picker.remove_peer(&p.has);
                local.picker.add_peer(&bits);
                p.has = bits;
                p.got_bitfield = true;
                if local.super_seed.is_some() {
                    // A super-seeder holds every chunk: no interest to update.
                    p.revealed.retain(|&c| !p.has.get(c));
                    local.reveal(config, cx, from, p);
                    a.maybe_end_super_seed(cx);
                } else {
                    local.update_interest(config, cx, from, p);
                }
            }
            Body::Have { chunk } => {
                let Some(p) = a.peers.get_mut(&from) else {
                    return Ok(());
                };
                let local = &mut a.local;
                if chunk >= local.manifest.chunk_count() {
                    return Err(ProtocolError::Have(chunk));
                }
                if p.has.set(chunk) {
                    local.picker.add_have(chunk);
                    if !p.am_interested
                        && !local.picker.have().get(chunk)
                        && (!config.release_idle_interest || local.wants_now(config, from, p))
                    {
                        p.am_interested = true;
                        send(cx, from, cid, Body::Interested);
                        local.fill_requests(config, cx, from, p);
                    }
                    if local.super_seed.is_some() {
                        p.revealed.retain(|&c| c != chunk);
                        local.reveal(config, cx, from, p);
                        a.maybe_end_super_seed(cx);
                    }
                }
            }
            Body::Interested => {
                let unchoked = a.peers.values().filter(|p| !p.am_choking).count();
                let Some(p) = a.peers.get_mut(&from) else {
                    return Ok(());
                };
                p.peer_interested = true;
                // A free slot need not wait for the next choke round.
                if p.am_choking && unchoked < a.local.choker.slots(&config.choker) + 1 {
                    p.am_choking = false;
                    send(cx, from, cid, Body::Unchoke);
                }
            }
            Body::NotInterested => {
                let Some(p) = a.peers.get_mut(&from) else {
                    return Ok(());
                };
                p.peer_interested = false;
                if !p.am_choking {
                    // Its slot is wasted until the next round: give it to a waiting peer now.
                    p.am_choking = true;
                    send(cx, from, cid, Body::Choke);
                    p.reject_queued(cx, cid, from);
                    let mut waiting: Vec<(&PeerId, &mut Connection)> = a
                        .peers
                        .iter_mut()
                        .filter(|(_, q)| q.peer_interested && q.am_choking)
                        .collect();
                    if !waiting.is_empty() {
                        let i = cx.rng().index(waiting.len());
                        let (next, q) = &mut waiting[i];
                        q.am_choking = false;
                        send(cx, **next, cid, Body::Unchoke);
                    }
                }
            }
            Body::Choke => {
                // Requests the peer received before choking are still answered (their blocks
                // are already on the way); later ones come back as `Reject`.
                if let Some(p) = a.peers.get_mut(&from) {
                    p.peer_choking = true;
                }
            }
            Body::Unchoke => {
                let Some(p) = a.peers.get_mut(&from) else {
                    return Ok(());
                };
                p.peer_choking = false;
                // A new unchoke: chunks it refused before may be offered now.
                p.refused = Bitfield::new(a.local.manifest.chunk_count());
                a.local.fill_requests(config, cx, from, p);
            }
            Body::Reject { chunk, block } => {
                let Some(p) = a.peers.get_mut(&from) else {
                    return Ok(());
                };
                let before = p.outstanding.len();
                p.outstanding.retain(|(r, _)| *r != (chunk, block));
                if p.outstanding.len() != before {
                    if !p.peer_choking {
                        // Refused while unchoked: the peer keeps this chunk for later.
                        p.refused.set(chunk);
                    }
                    a.local.picker.request_dropped((chunk, block));
                    if config.defenses {
                        p.awaiting_since = cx.now();
                        if a.local.picker.owner(chunk) == Some(from) {
                            // It will not deliver the chunk on parole: someone else fetches
                            // it whole.
                            a.local.abandon_parole(config, cx, from, p, chunk);
                        }
                    }
                    a.reconsider_interest(config, cx, Some(chunk));
                    a.fill_all(config, cx);
                }
            }
            Body::Request { chunk, block } => {
                let Some(p) = a.peers.get_mut(&from) else {
                    // A peer that has not learnt yet that we dropped it: refused, so it asks
                    // elsewhere instead of waiting for the block.
                    if config.defenses && a.local.manifest.block_len(chunk, block).is_some() {
                        send(cx, from, cid, Body::Reject { chunk, block });
                    }
                    return Ok(());
                };
                let local = &mut a.local;
                if local.manifest.block_len(chunk, block).is_none() {
                    return Err(ProtocolError::OutOfRange { chunk, block });
                }
                if !local.picker.have().get(chunk) {
                    return Err(ProtocolError::ChunkNotHeld(chunk));
                }
                if local.super_seed.is_some() {
                    local.note_request(config, cx, from, p, chunk);
                }
                if config.upload_rate.is_some() {
                    p.queue_request(cx, cid, from, chunk, block, request_seq);
                } else {
                    local.serve_request(config, cx, &mut self.stats, from, p, chunk, block);
                }
            }
            Body::Cancel { chunk, block } => {
                let Some(p) = a.peers.get_mut(&from) else {
                    return Ok(());
                };
                // Without `upload_rate` blocks are handed to the driver as soon as they are
                // requested, so there is nothing here to withdraw (the driver may drop a
                // queued frame); with it, a request still waiting in our queue is withdrawn.
                if a.local.manifest.block_len(chunk, block).is_none() {
                    return Err(ProtocolError::OutOfRange { chunk, block });
                }
                p.queued.retain(|e| (e.0, e.1) != (chunk, block));
            }
            Body::Close => {
                if a.peers.contains_key(&from) {
                    a.disconnect(from);
                    a.reconsider_interest(config, cx, None);
                    a.fill_all(config, cx);
                }
            }
            Body::Block { .. } | Body::Handshake | Body::ManifestRequest | Body::Manifest(_) => {}
        }
        Ok(())
    }

    /// Housekeeping: drops half-open connections, re-issues timed-out requests, looks up
    /// providers when short of peers, and connects to candidates.
    pub(crate) fn tick(&mut self, cx: &mut SwarmCx<'_>) {
        let cid = self.cid;
        let now = cx.now();
        if let Some(a) = &mut self.active {
            // Half-open connections (no bitfield within the handshake timeout) are dropped.
            let timeout = self.config.handshake_timeout;
            let dead: Vec<PeerId> = a
                .peers
                .iter()
                .filter(|(_, p)| !p.got_bitfield && now.saturating_since(p.connected_at) >= timeout)
                .map(|(peer, _)| *peer)
                .collect();
            for peer in dead {
                a.disconnect(peer);
            }
        }
        if self.config.defenses {
            self.evict_stallers(cx);
        }
        let config = &*self.config;
        if let Some(a) = &mut self.active {
            for (peer, p) in a.peers.iter_mut() {
                let before = p.outstanding.len();
                let mut expired = Vec::new();
                p.outstanding.retain(|(r, at)| {
                    let old = now.saturating_since(*at) >= config.request_timeout;
                    if old {
                        expired.push(*r);
                    }
                    !old
                });
                for r in expired {
                    a.local.picker.request_dropped(r);
                    send(
                        cx,
                        *peer,
                        cid,
                        Body::Cancel {
                            chunk: r.0,
                            block: r.1,
                        },
                    );
                    if config.defenses {
                        p.withdraw(r, 2 * config.pipeline_depth);
                        if a.local.picker.owner(r.0) == Some(*peer) {
                            a.local.abandon_parole(config, cx, *peer, p, r.0);
                        }
                    }
                }
                if p.outstanding.len() != before || p.outstanding.is_empty() {
                    a.local.fill_requests(config, cx, *peer, p);
                }
            }
            // Requests expired or lost with a dropped peer are requestable again.
            a.reconsider_interest(config, cx, None);
        }
        // Provider look-ups. A running transfer with few peers looks again every
        // `lookup_interval`. One without a manifest and nobody left to ask has nothing to do
        // at all — its first look-up may simply have run before the sharers' announcements
        // were stored — so it looks again after one tick, doubling the wait up to
        // `lookup_interval` while the look-ups find nobody.
        let (wanted, interval) = match &self.active {
            Some(a) => (
                a.useful_peers(config) < config.min_peers && !a.local.picker.is_complete(),
                config.lookup_interval,
            ),
            None => (
                self.manifest_fetch.asked.is_empty(),
                config
                    .tick
                    .saturating_mul(1 << self.empty_lookups.min(16))
                    .min(config.lookup_interval),
            ),
        };
        let due = self
            .last_lookup
            .is_none_or(|l| now.saturating_since(l) >= interval);
        if wanted && due {
            self.last_lookup = Some(now);
            self.empty_lookups = self.empty_lookups.saturating_add(1);
            self.stats.provider_lookups = self.stats.provider_lookups.saturating_add(1);
            cx.emit(Event::Discovery(Discovery::FindProviders {
                cid,
                key: cid.dht_key(),
            }));
        }
        self.connect_candidates(cx);
    }

    /// The connection to `peer` is gone.
    pub(crate) fn peer_down(&mut self, cx: &mut SwarmCx<'_>, peer: PeerId) {
        self.candidates.remove(&peer);
        self.manifest_fetch.waiters.retain(|p| *p != peer);
        if let Some(a) = &mut self.active {
            a.disconnect(peer);
        }
        self.manifest_peer_down(cx, peer);
    }

    /// Stops the transfer: every peer is told we leave it (`Close`; without defenses, only
    /// the peers we still wanted something from hear that we no longer do).
    pub(crate) fn cancel(self, cx: &mut SwarmCx<'_>) {
        if let Some(a) = self.active {
            for p in a.peers.keys() {
                if self.config.defenses {
                    send(cx, *p, self.cid, Body::Close);
                } else if !a.local.picker.is_complete() {
                    send(cx, *p, self.cid, Body::NotInterested);
                }
            }
        }
    }

    /// A corrupt chunk attributed to `peer`: banned after [`Config::ban_after_corrupt`].
    pub(crate) fn strike(&mut self, cx: &mut SwarmCx<'_>, peer: PeerId) {
        let n = self.strikes.entry(peer).or_insert(0);
        *n += 1;
        if *n >= self.config.ban_after_corrupt {
            self.ban(cx, peer);
        }
    }

    /// `peer` sent data proven corrupt (a chunk it alone contributed, or a block that
    /// differs from the chunk once verified): reported as [`Offence::Corrupt`] and banned.
    pub(crate) fn convict(&mut self, cx: &mut SwarmCx<'_>, peer: PeerId) {
        if self.banned.contains(&peer) {
            return;
        }
        cx.penalize(peer, Offence::Corrupt);
        self.ban(cx, peer);
    }

    /// A protocol violation by `peer`: reported (with defenses) and banned after
    /// [`Config::max_penalties`].
    fn penalise(&mut self, cx: &mut SwarmCx<'_>, peer: PeerId, error: ProtocolError) {
        if self.config.defenses {
            cx.penalize(peer, error.offence());
        }
        cx.emit(Event::PeerPenalised {
            cid: self.cid,
            peer,
            error,
        });
        let n = self.penalties.entry(peer).or_insert(0);
        *n += 1;
        if *n >= self.config.max_penalties {
            self.ban(cx, peer);
        }
    }

    /// Bans `peer` from the transfer: disconnected, never a candidate again.
    fn ban(&mut self, cx: &mut SwarmCx<'_>, peer: PeerId) {
        if !self.banned.insert(peer) {
            return;
        }
        self.strikes.remove(&peer);
        self.penalties.remove(&peer);
        self.candidates.remove(&peer);
        if let Some(a) = &mut self.active {
            a.disconnect(peer);
        }
        cx.emit(Event::PeerBanned {
            cid: self.cid,
            peer,
        });
    }
}

impl<S: ChunkStore> Active<S> {
    /// Forgets a connected peer: its chunks no longer count and its requests go elsewhere
    /// (a chunk on parole it owned is started afresh by someone else).
    pub(crate) fn disconnect(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.remove(&peer) {
            self.local.picker.remove_peer(&p.has);
            for (r, _) in p.outstanding {
                self.local.picker.request_dropped(r);
            }
            for c in self.local.picker.owned_by(peer) {
                self.local.picker.abandon(c);
            }
        }
    }

    /// Connected peers that can help us: with defenses, those proven (see `slots`) or
    /// holding a chunk we lack (newcomers with nothing do not keep us from looking for providers); without,
    /// all of them.
    fn useful_peers(&self, config: &Config) -> usize {
        if !config.defenses {
            return self.peers.len();
        }
        self.peers
            .values()
            .filter(|p| p.proven || self.local.picker.wants_from(&p.has))
            .count()
    }
}
