//! The uploading role: whom we serve (choking) and in which order blocks leave.
//!
//! Uploads follow the [`Choker`](crate::choker::Choker): every round the transfer
//! re-chooses the peers it unchokes, by tit-for-tat, with as many slots and rounds as long
//! as the uplink's measured use calls for (see the [`choker`](crate::choker) module).
//!
//! By default a requested block goes to the driver as soon as the request arrives. A core
//! told its uplink rate ([`Config::upload_rate`]) queues requests itself, hands the driver a
//! block only while the driver's send queue is shorter than [`Config::upload_horizon`] (a
//! [`Timer::Pump`] wakes it when it drains), and serves its unchoked peers one chunk at a
//! time: the chunk with the *turn* is sent back to back before other peers' requests, and
//! the next turn goes to the oldest waiting request, peers holding no chunk yet first.

use std::time::Duration;

use peerlab_overlay::{Instant, Message as _, Outbox, Output, PeerId};

use super::connection::Connection;
use super::transfer::{Active, Local, Transfer};
use super::{Config, Event, MAX_QUEUED_REQUESTS, Swarm, SwarmCx, Timer, TransferStats, send};
use crate::choker::Candidate;
use crate::manifest::ContentId;
use crate::storage::{ChunkStore, StoreFactory};
use crate::wire::{Body, Message};

/// With [`Config::upload_rate`]: blocks served to other peers while the peer whose chunk
/// has its turn has no request waiting, before the turn ends. One chunk's worth (16
/// blocks of 256 KiB chunks): a downloader refills its pipeline one round trip after our
/// blocks reach it, so a longer gap means it took the rest of the chunk elsewhere.
const TURN_PATIENCE_BLOCKS: u32 = 16;

/// With [`Config::upload_rate`]: the core's view of its uplink and whose chunk is being
/// served.
#[derive(Debug, Default)]
pub(crate) struct Uplink {
    /// When the driver's send queue empties, estimated from every frame we handed it.
    free_at: Instant,
    /// Arrival sequence number of the next queued request (orders requests across peers).
    pub(crate) next_seq: u64,
    /// The chunk whose turn it is: its blocks are served to this peer before any other
    /// peer's requests.
    turn: Option<Turn>,
    /// A [`Timer::Pump`] is pending for this instant.
    pub(crate) timer_at: Option<Instant>,
}

/// Orders the queued requests that may start a turn, least first: whether the peer holds
/// any chunk, how many of our peers hold the chunk (`u32::MAX` unless it is scarce), and
/// the request's arrival sequence number.
type TurnKey = (bool, u32, u64);

/// A queued request: its transfer, its peer and its index in that peer's queue.
type QueuedAt = (ContentId, PeerId, usize);

/// One peer's turn on our uplink: one chunk served to it back to back.
#[derive(Debug, Clone, Copy)]
struct Turn {
    cid: ContentId,
    peer: PeerId,
    chunk: u32,
    /// Blocks of the chunk served to the peer in this turn.
    sent: u32,
    /// Blocks served to other peers while this peer had nothing waiting.
    waited: u32,
}

impl Connection {
    /// With [`Config::upload_rate`]: a valid request waits in our queue for its turn (see
    /// [`Swarm::pump`]), unless we choke the peer or its queue is full (`Reject`).
    pub(crate) fn queue_request(
        &mut self,
        cx: &mut SwarmCx<'_>,
        cid: ContentId,
        peer: PeerId,
        chunk: u32,
        block: u32,
        request_seq: &mut u64,
    ) {
        if self.am_choking || self.queued.len() >= MAX_QUEUED_REQUESTS {
            send(cx, peer, cid, Body::Reject { chunk, block });
        } else if !self.queued.iter().any(|e| (e.0, e.1) == (chunk, block)) {
            self.queued.push_back((chunk, block, *request_seq));
            *request_seq += 1;
        }
    }
}

impl<S: ChunkStore> Local<S> {
    /// Answers a block request that passed validation: the block, or `Reject` if we choke
    /// the peer (it was sent before our `Choke` arrived) or, while super-seeding, the chunk
    /// already left us once for another peer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn serve_request(
        &mut self,
        config: &Config,
        cx: &mut SwarmCx<'_>,
        stats: &mut TransferStats,
        from: PeerId,
        p: &mut Connection,
        chunk: u32,
        block: u32,
    ) {
        let cid = self.cid;
        let Some(len) = self.manifest.block_len(chunk, block) else {
            return;
        };
        if p.am_choking {
            // Sent before our Choke arrived: refuse it so the peer asks elsewhere.
            send(cx, from, cid, Body::Reject { chunk, block });
            return;
        }
        if let Some(ss) = &self.super_seed
            && ss.unserved > 0
            && ss.first_served_to[chunk as usize].is_some_and(|o| o != from)
        {
            // Super-seeding and this chunk already left once: keep our upload for
            // chunks nobody has yet and show this peer one of those instead.
            send(cx, from, cid, Body::Reject { chunk, block });
            p.revealed.retain(|&c| c != chunk);
            self.reveal(config, cx, from, p);
            return;
        }
        match self
            .store
            .read_block(chunk, block * self.manifest.block_size(), len)
        {
            Ok(data) => {
                if let (Some(ss), 0) = (&mut self.super_seed, block) {
                    ss.served[chunk as usize] += 1;
                    if ss.first_served_to[chunk as usize].is_none() {
                        ss.first_served_to[chunk as usize] = Some(from);
                        ss.unserved -= 1;
                    }
                }
                p.up_round += len as u64;
                p.served += len as u64;
                self.uplink_use.round_bytes += len as u64;
                if p.served >= self.manifest.chunk_size() as u64 {
                    p.proven = true;
                }
                stats.uploaded += len as u64;
                send(cx, from, cid, Body::Block { chunk, block, data });
            }
            Err(e) => cx.emit(Event::StoreFailed {
                cid,
                error: e.to_string(),
            }),
        }
    }
}

impl<S: ChunkStore> Transfer<S> {
    /// A choke round: the choker adapts its slots to how much of the uplink the last round
    /// used and picks whom we unchoke from the last round's rates. Returns how long the
    /// next round lasts (see the [`choker`](crate::choker) module).
    pub(crate) fn rechoke(&mut self, cx: &mut SwarmCx<'_>) -> Duration {
        match &mut self.active {
            Some(a) => a.rechoke(&self.config, cx),
            None => self.config.choker.interval,
        }
    }
}

impl<S: ChunkStore> Active<S> {
    fn rechoke(&mut self, config: &Config, cx: &mut SwarmCx<'_>) -> Duration {
        let cid = self.local.cid;
        let now = cx.now();
        let seeding = self.local.picker.is_complete();
        let span = now.saturating_since(self.local.round_started);
        let secs = span.as_secs_f64().max(1e-3);
        let optimistic = self.local.choker.optimistic();
        let choked_demand = self
            .peers
            .values()
            .any(|p| p.peer_interested && p.am_choking);
        let idle_slot = self.peers.iter().any(|(peer, p)| {
            !p.am_choking && p.peer_interested && p.up_round == 0 && Some(*peer) != optimistic
        });
        let used = self.local.uplink_use.end_round(span, config.upload_rate);
        self.local
            .choker
            .adapt_slots(&config.choker, used, choked_demand, idle_slot);
        let candidates: Vec<Candidate> = self
            .peers
            .iter_mut()
            .map(|(peer, p)| {
                let bytes = if seeding { p.up_round } else { p.down_round };
                p.up_round = 0;
                p.down_round = 0;
                Candidate {
                    peer: *peer,
                    interested: p.peer_interested,
                    rate: (bytes as f64 / secs) as u64,
                    connected_at: p.connected_at,
                }
            })
            .collect();
        let unchoked = self
            .local
            .choker
            .rechoke(&config.choker, &candidates, now, span, cx.rng());
        for (peer, p) in self.peers.iter_mut() {
            let want_choke = !unchoked.contains(peer);
            if want_choke != p.am_choking {
                p.am_choking = want_choke;
                let body = if want_choke {
                    Body::Choke
                } else {
                    Body::Unchoke
                };
                send(cx, *peer, cid, body);
                if want_choke {
                    p.reject_queued(cx, cid, *peer);
                }
            }
        }
        self.local.round_started = now;
        let capacity = config.upload_rate.or(self.local.uplink_use.best_rate());
        config.choker.round(
            capacity,
            unchoked
                .len()
                .max(self.local.choker.slots(&config.choker) + 1),
            self.local.manifest.chunk_size(),
        )
    }
}

impl<F: StoreFactory> Swarm<F> {
    /// Runs one input. With [`Config::upload_rate`] every frame it produced is counted
    /// against the uplink, then queued blocks are handed to the driver ([`Swarm::pump`]).
    pub(crate) fn paced(
        &mut self,
        cx: &mut SwarmCx<'_>,
        f: impl FnOnce(&mut Self, &mut SwarmCx<'_>),
    ) {
        if self.config.upload_rate.is_none() {
            return f(self, cx);
        }
        let mut sub = Outbox::new();
        cx.nested(&mut sub, |c| f(self, c));
        self.forward(cx, &mut sub);
        self.pump(cx);
    }

    /// Passes outputs on to the driver, advancing the estimate of when its send queue
    /// empties by each frame's transmission time (the FIFO uplink model: a frame starts
    /// when the previous one is out).
    fn forward(&mut self, cx: &mut SwarmCx<'_>, sub: &mut Outbox<Message, Timer, Event>) {
        let rate = self.config.upload_rate.unwrap_or(u64::MAX).max(1) as u128;
        let now = cx.now();
        for out in sub.drain() {
            match out {
                Output::Send { to, msg } => {
                    let nanos = msg.wire_len() as u128 * 1_000_000_000 / rate;
                    let start = self.uplink.free_at.max(now);
                    self.uplink.free_at =
                        start + Duration::from_nanos(nanos.min(u64::MAX as u128) as u64);
                    cx.send(to, msg);
                }
                Output::Timer { at, timer } => cx.set_timer_at(at, timer),
                Output::Event(e) => cx.emit(e),
                Output::Offence { peer, offence } => cx.penalize(peer, offence),
            }
        }
    }

    /// Upload scheduling with [`Config::upload_rate`]: hands queued requests' blocks to the
    /// driver while its send queue holds less than [`Config::upload_horizon`], in the
    /// order [`Swarm::next_upload`] picks; when blocks still wait, sets a [`Timer::Pump`]
    /// for the moment the queue is down to the horizon.
    fn pump(&mut self, cx: &mut SwarmCx<'_>) {
        let horizon = self.config.upload_horizon;
        while self.uplink.free_at <= cx.now() + horizon {
            let Some((cid, peer, chunk, block)) = self.next_upload() else {
                return;
            };
            let mut sub = Outbox::new();
            if let Some(t) = self.transfers.get_mut(&cid)
                && let Some(a) = &mut t.active
                && let Some(p) = a.peers.get_mut(&peer)
            {
                let (config, stats) = (&*t.config, &mut t.stats);
                cx.nested(&mut sub, |c| {
                    a.local
                        .serve_request(config, c, stats, peer, p, chunk, block)
                });
            }
            self.forward(cx, &mut sub);
        }
        let waiting = self.transfers.values().any(|t| {
            t.active
                .as_ref()
                .is_some_and(|a| a.peers.values().any(|p| !p.queued.is_empty()))
        });
        let at = Instant(
            self.uplink
                .free_at
                .0
                .saturating_sub(horizon.as_micros().min(u64::MAX as u128) as u64),
        );
        if waiting && self.uplink.timer_at.is_none_or(|t| t > at) {
            self.uplink.timer_at = Some(at);
            cx.set_timer_at(at, Timer::Pump);
        }
    }

    /// The queued request to serve next, removed from its queue. Unchoked peers are served
    /// one chunk at a time: while the peer whose chunk has the turn has a request for it
    /// waiting, that request; otherwise a request for a chunk held by at most
    /// [`Config::scarce_holders`] of our peers (the fewest first), else the oldest
    /// waiting request of any peer; its chunk gets the turn if none is running — peers
    /// holding no chunk yet first, since a chunk they receive makes them uploaders (in a
    /// 1000-peer flash crowd 87 % of the peers hold nothing 5 s in). A turn ends when the
    /// chunk's last block is sent, when its peer asks for another chunk instead, or after
    /// [`TURN_PATIENCE_BLOCKS`] blocks went to others while it had nothing waiting.
    fn next_upload(&mut self) -> Option<(ContentId, PeerId, u32, u32)> {
        if let Some(turn) = self.uplink.turn {
            let a = self
                .transfers
                .get_mut(&turn.cid)
                .and_then(|t| t.active.as_mut());
            let blocks = a
                .as_ref()
                .map_or(0, |a| a.local.manifest.block_count(turn.chunk));
            match a.and_then(|a| a.peers.get_mut(&turn.peer)) {
                Some(p) if !p.am_choking => {
                    if let Some(i) = p.queued.iter().position(|e| e.0 == turn.chunk) {
                        let (chunk, block, _) = p.queued.remove(i)?;
                        let sent = turn.sent + 1;
                        self.uplink.turn = (sent < blocks).then_some(Turn {
                            sent,
                            waited: 0,
                            ..turn
                        });
                        return Some((turn.cid, turn.peer, chunk, block));
                    }
                    if !p.queued.is_empty() {
                        self.uplink.turn = None; // it moved on to another chunk
                    }
                }
                _ => self.uplink.turn = None,
            }
        }
        // The key orders candidates: peers holding nothing first, then scarce chunks
        // (fewest holders first), then the oldest request.
        let mut best: Option<(TurnKey, QueuedAt)> = None;
        for (cid, t) in &self.transfers {
            let Some(a) = &t.active else { continue };
            let scarce = t.config.scarce_holders;
            for (peer, p) in &a.peers {
                let holds_some = p.has.count() > 0;
                let mut previous = None;
                for (i, &(chunk, _, seq)) in p.queued.iter().enumerate() {
                    // A chunk's later blocks rank as its first one and arrived after it.
                    if previous.replace(chunk) == Some(chunk) {
                        continue;
                    }
                    let holders = a.local.picker.availability(chunk);
                    let rank = match scarce {
                        Some(max) if holders <= max => holders,
                        _ if i == 0 => u32::MAX,
                        // Only a peer's oldest request competes by age.
                        _ => continue,
                    };
                    let key = (holds_some, rank, seq);
                    if best.is_none_or(|b| key < b.0) {
                        best = Some((key, (*cid, *peer, i)));
                    }
                    if scarce.is_none() {
                        break;
                    }
                }
            }
        }
        let (_, (cid, peer, i)) = best?;
        let a = self.transfers.get_mut(&cid)?.active.as_mut()?;
        let (chunk, block, _) = a.peers.get_mut(&peer)?.queued.remove(i)?;
        match &mut self.uplink.turn {
            Some(turn) => {
                turn.waited += 1;
                if turn.waited >= TURN_PATIENCE_BLOCKS {
                    self.uplink.turn = None;
                }
            }
            None => {
                self.uplink.turn = (a.local.manifest.block_count(chunk) > 1).then_some(Turn {
                    cid,
                    peer,
                    chunk,
                    sent: 1,
                    waited: 0,
                });
            }
        }
        Some((cid, peer, chunk, block))
    }
}
