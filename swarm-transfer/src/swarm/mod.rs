//! The swarm core: one sans-IO state machine running any number of transfers.
//!
//! [`Swarm`] implements [`Protocol`]. Transfers are keyed by [`ContentId`]; a transfer is
//! either *sharing* (started by [`Command::Share`] with a complete store) or *fetching*
//! (started by [`Command::Fetch`] with a content id and some providers). A fetch first
//! asks providers for the manifest and verifies it against the content id; only then is
//! a store opened through the [`StoreFactory`] and the swarm joined.
//!
//! Per connected peer the transfer keeps BEP 3's four flags (am/peer choking, am/peer
//! interested), the peer's bitfield and its outstanding block requests. Only a chunk whose BLAKE3 hash matches the manifest is stored,
//! announced with `Have` and served. Protocol violations (a block outside the file, an
//! oversized block, a request for a chunk we never announced, a malformed bitfield, a
//! manifest that does not match its id) are typed [`ProtocolError`]s: the message is
//! dropped, nothing is stored, the peer is penalised, and [`Config::max_penalties`]
//! penalties ban it.
//!
//! Discovery is left to the application: the core emits [`Event::Discovery`] asking it
//! to announce a content id in the DHT (every [`Config::announce_interval`], with
//! [`Config::provider_ttl`]) or to look up providers, and the answer comes back as
//! [`Command::AddPeers`]. See [`Discovery`].
//!
//! # Adapting to the links
//!
//! BEP 3 fixes 4 unchoke slots, 10 s choke rounds, a 30 s optimistic unchoke, and clients
//! keep a fixed number of requests in flight; those constants suit one link speed. Here
//! each is measured from the core's own clock and the messages it sees, within named
//! floors and caps in [`Config`]:
//!
//! - **Request queue** (`estimate`): libtorrent's rate × queue time, with the queue time
//!   [`Config::request_queue_rtts`] round trips — the peer's smoothed delivery rate times
//!   the smallest round trip of a request sent while nothing else of ours was outstanding
//!   there, between [`Config::min_pipeline_depth`] and [`Config::pipeline_depth`].
//! - **Unchoke slots and choke rounds** ([`choker`](crate::choker)): after each round a
//!   slot is added while the uplink (its known rate, or the fastest round so far) had room
//!   and peers waited choked, and given up when a slot's peer took nothing (libtorrent's
//!   rate-based choker); a round lasts until each unchoked peer could have received
//!   `round_chunks` chunks, within 2–10 s, the first after 2 s; the optimistic unchoke
//!   rotates every three rounds, at most 30 s.
//! - **Super-seeding reveals** (`super_seed`): a peer that asked for every chunk shown to
//!   it is shown one more for good, so the reveals follow its request queue.
//!
//! # Layout
//!
//! One file per role or machine:
//!
//! - `mod.rs` (this file): the core — dispatch of inputs to transfers, getters, timers.
//! - `config`: [`Config`] and its bounds; `command`: [`Command`], [`CommandError`];
//!   `event`: [`Event`], [`ProtocolError`], [`TransferStats`], [`Link`].
//! - `transfer`: one transfer — candidates, connecting, handshakes, BEP 3's state
//!   messages, housekeeping, penalties and bans.
//! - `connection`: one peer connection of a transfer.
//! - `manifest_fetch`: asking providers for the manifest before a download starts.
//! - `download`: requests, received blocks, chunk verification, smart ban.
//! - `upload`: serving requests, choke rounds, the paced uplink.
//! - `estimate`: round trips and delivery rates measured per peer, and the uplink's use
//!   per choke round.
//! - `super_seed`: BEP 16 initial seeding.
//! - `slots`: who may take a connection slot and who must give it up (probation,
//!   stallers).
//!
//! # Driving it
//!
//! Commands that expect an answer carry a request id `req` and are answered by exactly one
//! [`Event::Accepted`] or [`Event::Refused`] carrying it; everything else the core reports
//! (progress, completion, bans) names the transfer by content id.

mod command;
mod config;
mod connection;
mod download;
mod estimate;
mod event;
mod manifest_fetch;
mod slots;
mod super_seed;
mod transfer;
mod upload;

use std::collections::BTreeMap;
use std::sync::Arc;

use peerlab_overlay::{ConfigError, Context, Cx, PeerId, Protocol};

pub use self::command::{Command, CommandError};
pub use self::config::{
    ANNOUNCE_RETRY, Config, MAX_ANNOUNCE_DOUBLINGS, MAX_PIPELINE_DEPTH, MAX_QUEUED_REQUESTS,
    MAX_REQUEST_QUEUE_RTTS,
};
pub use self::event::{Event, Link, ProtocolError, TransferStats};
use self::transfer::Transfer;
use self::upload::Uplink;
use crate::bitfield::Bitfield;
use crate::discovery::Discovery;
use crate::manifest::{ContentId, Manifest};
use crate::storage::{ChunkStore, StoreFactory};
use crate::wire::{Body, Message};

/// The core's timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// Housekeeping for every transfer.
    Tick,
    /// Re-run the choker of a transfer.
    Choke {
        /// The transfer.
        cid: ContentId,
        /// Transfer generation (stale timers of a cancelled transfer are ignored).
        generation: u64,
    },
    /// The manifest request `attempt` is overdue.
    ManifestTimeout {
        /// The transfer.
        cid: ContentId,
        /// Which attempt.
        attempt: u32,
    },
    /// Re-announce a content id.
    Announce {
        /// The transfer.
        cid: ContentId,
        /// Transfer generation.
        generation: u64,
    },
    /// Announce again after failed announcement number `attempt` (see
    /// [`Command::Announced`]).
    AnnounceRetry {
        /// The transfer.
        cid: ContentId,
        /// Transfer generation.
        generation: u64,
        /// Failed announcements in a row when the retry was scheduled.
        attempt: u32,
    },
    /// With [`Config::upload_rate`]: the driver's send queue has drained to the horizon;
    /// hand it the next queued block.
    Pump,
}

/// The swarm transfer core (see the module docs).
pub struct Swarm<F: StoreFactory> {
    config: Arc<Config>,
    factory: F,
    transfers: BTreeMap<ContentId, Transfer<F::Store>>,
    next_generation: u64,
    uplink: Uplink,
}

/// The context every part of the core receives.
pub(crate) type SwarmCx<'a> = Context<'a, Message, crate::swarm::Timer, Event>;

/// Sends `body` for transfer `cid` to `to`.
pub(crate) fn send(cx: &mut SwarmCx<'_>, to: PeerId, cid: ContentId, body: Body) {
    cx.send(to, Message { cid, body });
}

impl<F: StoreFactory> Swarm<F> {
    /// A core opening download stores through `factory`.
    ///
    /// # Errors
    /// The [`ConfigError`] of [`Config::validate`].
    pub fn new(config: Config, factory: F) -> Result<Swarm<F>, ConfigError> {
        config.validate()?;
        Ok(Swarm {
            config: Arc::new(config),
            factory,
            transfers: BTreeMap::new(),
            next_generation: 0,
            uplink: Uplink::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters of a transfer.
    pub fn stats(&self, cid: &ContentId) -> Option<TransferStats> {
        Some(self.transfers.get(cid)?.stats())
    }

    /// The store of a transfer whose manifest is known.
    pub fn store(&self, cid: &ContentId) -> Option<&F::Store> {
        Some(&self.transfers.get(cid)?.active.as_ref()?.local.store)
    }

    /// The manifest of a transfer, once known.
    pub fn manifest(&self, cid: &ContentId) -> Option<&Manifest> {
        Some(&self.transfers.get(cid)?.active.as_ref()?.local.manifest)
    }

    /// The chunks held for a transfer.
    pub fn have(&self, cid: &ContentId) -> Option<&Bitfield> {
        Some(
            self.transfers
                .get(cid)?
                .active
                .as_ref()?
                .local
                .picker
                .have(),
        )
    }

    /// Peers banned from a transfer.
    pub fn banned(&self, cid: &ContentId) -> Vec<PeerId> {
        self.transfers
            .get(cid)
            .map(|t| t.banned.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The state of every connection of a transfer (diagnostics: who is unchoked, who
    /// wants what, how many requests are in flight).
    pub fn links(&self, cid: &ContentId) -> Vec<Link> {
        self.transfers
            .get(cid)
            .map(|t| t.links())
            .unwrap_or_default()
    }

    /// Content ids of running transfers.
    pub fn transfers(&self) -> Vec<ContentId> {
        self.transfers.keys().copied().collect()
    }

    fn new_transfer(&mut self, cid: ContentId) -> Transfer<F::Store> {
        self.next_generation += 1;
        Transfer::new(Arc::clone(&self.config), cid, self.next_generation)
    }

    fn check_new(&self, cid: &ContentId) -> Result<(), CommandError> {
        if self.transfers.contains_key(cid) {
            Err(CommandError::Duplicate)
        } else if self.transfers.len() >= self.config.max_transfers {
            Err(CommandError::TooMany)
        } else {
            Ok(())
        }
    }
}

impl<F: StoreFactory> Protocol for Swarm<F> {
    type Message = Message;
    type Timer = Timer;
    type Command = Command<F::Store>;
    type Event = Event;

    fn handle_start(&mut self, cx: &mut Cx<'_, Self>) {
        cx.set_timer(self.config.tick, Timer::Tick);
    }

    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, cmd: Command<F::Store>) {
        self.paced(cx, |s, cx| s.command(cx, cmd));
    }

    fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Message) {
        self.paced(cx, |s, cx| s.message(cx, from, msg));
    }

    fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, timer: Timer) {
        self.paced(cx, |s, cx| s.timer(cx, timer));
    }

    fn handle_peer_down(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        self.paced(cx, |s, cx| s.peer_down(cx, peer));
    }
}

impl<F: StoreFactory> Swarm<F> {
    fn command(&mut self, cx: &mut SwarmCx<'_>, cmd: Command<F::Store>) {
        match cmd {
            Command::Share {
                req,
                manifest,
                store,
            } => {
                let cid = manifest.content_id();
                let checked = self.check_new(&cid).and_then(|()| {
                    manifest.validate()?;
                    if !store.held().is_complete() || store.held().len() != manifest.chunk_count() {
                        return Err(CommandError::IncompleteStore);
                    }
                    Ok(())
                });
                if let Err(error) = checked {
                    return cx.emit(Event::Refused { req, cid, error });
                }
                let mut t = self.new_transfer(cid);
                t.stats.completed_at = Some(cx.now());
                let super_seed = self.config.super_seed && manifest.chunk_count() > 0;
                t.activate(cx, manifest, store, super_seed);
                self.transfers.insert(cid, t);
                cx.emit(Event::Accepted { req, cid });
            }
            Command::Fetch {
                req,
                cid,
                providers,
            } => {
                if let Err(error) = self.check_new(&cid) {
                    return cx.emit(Event::Refused { req, cid, error });
                }
                let mut t = self.new_transfer(cid);
                t.add_candidates(cx, providers);
                t.last_lookup = Some(cx.now());
                t.stats.provider_lookups = 1;
                cx.emit(Event::Discovery(Discovery::FindProviders {
                    cid,
                    key: cid.dht_key(),
                }));
                t.ask_manifest(cx);
                self.transfers.insert(cid, t);
                cx.emit(Event::Accepted { req, cid });
            }
            Command::AddPeers { cid, peers } => {
                let Some(t) = self.transfers.get_mut(&cid) else {
                    return;
                };
                if !peers.is_empty() {
                    t.empty_lookups = 0;
                }
                t.add_candidates(cx, peers);
                if t.active.is_none() && t.manifest_fetch.asked.is_empty() {
                    t.ask_manifest(cx);
                }
            }
            Command::Announced { cid, stored } => {
                if let Some(t) = self.transfers.get_mut(&cid) {
                    t.on_announced(cx, stored);
                }
            }
            Command::Cancel { req, cid } => match self.transfers.remove(&cid) {
                Some(t) => {
                    t.cancel(cx);
                    cx.emit(Event::Accepted { req, cid });
                }
                None => cx.emit(Event::Refused {
                    req,
                    cid,
                    error: CommandError::Unknown,
                }),
            },
        }
    }

    fn message(&mut self, cx: &mut SwarmCx<'_>, from: PeerId, msg: Message) {
        let Message { cid, body } = msg;
        let Some(t) = self.transfers.get_mut(&cid) else {
            return; // Not our transfer: ignore (the peer may have stale information).
        };
        t.handle_message(cx, &mut self.factory, from, body, &mut self.uplink.next_seq);
    }

    fn timer(&mut self, cx: &mut SwarmCx<'_>, timer: Timer) {
        match timer {
            Timer::Pump => {
                // The next release is decided by `pump`, which runs after every input.
                if self.uplink.timer_at.is_some_and(|at| at <= cx.now()) {
                    self.uplink.timer_at = None;
                }
            }
            Timer::Tick => {
                for t in self.transfers.values_mut() {
                    t.tick(cx);
                }
                cx.set_timer(self.config.tick, Timer::Tick);
            }
            Timer::Choke { cid, generation } => {
                if let Some(t) = self.transfers.get_mut(&cid)
                    && t.generation == generation
                {
                    let next = t.rechoke(cx);
                    cx.set_timer(next, Timer::Choke { cid, generation });
                }
            }
            Timer::ManifestTimeout { cid, attempt } => {
                if let Some(t) = self.transfers.get_mut(&cid) {
                    t.on_manifest_timeout(cx, attempt);
                }
            }
            Timer::Announce { cid, generation } => {
                if let Some(t) = self.transfers.get(&cid)
                    && t.generation == generation
                {
                    t.announce(cx);
                }
            }
            Timer::AnnounceRetry {
                cid,
                generation,
                attempt,
            } => {
                if let Some(t) = self.transfers.get(&cid)
                    && t.generation == generation
                    && t.announce_failures == attempt
                {
                    t.emit_announce(cx);
                }
            }
        }
    }

    fn peer_down(&mut self, cx: &mut SwarmCx<'_>, peer: PeerId) {
        for t in self.transfers.values_mut() {
            t.peer_down(cx, peer);
        }
    }
}
