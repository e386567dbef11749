//! `Peer`: the sans-IO composition of the four cores, as one peer runs them.
//!
//! A `Peer` is itself a [`Protocol`]. Its message, timer, command and event types have one
//! variant per core; each input is routed to its core, which runs with its own outbox
//! through [`Context::nested`](peerlab_overlay::Context::nested), and the outputs are
//! mapped back into the peer's. Between the cores the peer adds the glue a real node needs:
//!
//! - **bootstrap**: the peers a node was started with seed gossip (`Join{seeds}`), the DHT
//!   (`Join{bootstrap}`) and the flooding neighbour set; a node started without any creates
//!   a new ring at start.
//! - **membership feeds the other overlays**: every gossip `MemberUp` becomes a flooding
//!   host candidate (shuffled; connected with a hello while below the minimum degree), and while the DHT is not joined (its bootstrap failed, or it
//!   started alone before others appeared) the peer retries the join through live members
//!   every [`REJOIN_PERIOD`]. Members up, back, down and gone are the DHT's member hints
//!   (`Dht::member_up` / `member_down`: its lookups start at the member just before the
//!   key). Members' addresses reach the driver through events.
//! - **swarm discovery through the DHT**: the swarm core's `Discovery::Announce` becomes a
//!   DHT `AddProvider`, `Discovery::FindProviders` a `GetProviders` whose answer goes back to
//!   the swarm as `AddPeers` (the table in `peerlab_swarm::discovery`). Sharing a file also
//!   puts its name and content id into the flooding index, so a keyword search finds it.
//!
//! The peer issues its own DHT requests with ids that have [`INTERNAL_REQUEST`] set, so
//! they never collide with the caller's ids, and consumes their replies itself.
//!
//! The same type runs under the libp2p driver (the `driver` module, with a file-backed chunk
//! store) and in the simulator (with `peerlab_swarm::MemoryFactory`).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use peerlab_dht::{self as dht, Dht};
use peerlab_gossip::{self as gossip, Gossip};
use peerlab_overlay::flood::{self, Flood};
use peerlab_overlay::{
    CodecError, Context, Cx, Id, Instant, Keypair, Outbox, Output, PeerId, Protocol, codec,
};
use peerlab_swarm::{self as swarm, ContentId, Discovery, StoreFactory, Swarm};
use serde::{Deserialize, Serialize};

use crate::driver::{NetCore, ProbeRole};
use crate::metrics as m;
use crate::wire::Channel;

/// Request ids the peer issues itself (to its cores) have this bit set, so they never
/// collide with the ids the API hands out.
pub const INTERNAL_REQUEST: u64 = 1 << 63;

/// How often a peer whose DHT is not joined retries through live gossip members.
pub const REJOIN_PERIOD: Duration = Duration::from_secs(2);

/// Most internal DHT requests in flight; beyond this the oldest is forgotten (its reply
/// is then ignored). Discovery retries on its own schedule, so nothing is lost for good.
pub const MAX_INTERNAL: usize = 4096;

/// Most API lookups whose start time is remembered for the latency histogram.
pub const MAX_TIMED: usize = 4096;

/// A message between peers: one variant per core.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Message {
    /// Chord DHT.
    Dht(dht::Message),
    /// Gossip membership and data.
    Gossip(gossip::Message),
    /// Unstructured overlay and flooding search.
    Flood(flood::Message),
    /// Swarm transfer.
    Swarm(swarm::Message),
}

impl peerlab_overlay::Message for Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::Dht(m) => m.kind(),
            Message::Gossip(m) => m.kind(),
            Message::Flood(m) => m.kind(),
            Message::Swarm(m) => m.kind(),
        }
    }

    /// The inner message's frame: that is what travels on the core's channel.
    fn wire_len(&self) -> usize {
        match self {
            Message::Dht(m) => m.wire_len(),
            Message::Gossip(m) => m.wire_len(),
            Message::Flood(m) => m.wire_len(),
            Message::Swarm(m) => m.wire_len(),
        }
    }
}

/// A timer of one of the cores, or the peer's own.
#[derive(Clone, Debug)]
pub enum Timer {
    /// DHT timer.
    Dht(dht::Timer),
    /// Gossip timer.
    Gossip(gossip::Timer),
    /// Flooding core timer.
    Flood(flood::Timer),
    /// Swarm timer.
    Swarm(swarm::Timer),
    /// Retry the DHT join through gossip members if still not joined.
    Rejoin,
}

/// A local command.
pub enum Command<S> {
    /// Join the overlay through these peers (the driver sends this once a bootstrap
    /// address answered).
    Bootstrap(Vec<PeerId>),
    /// This node's own listen addresses (for membership records; effective before start).
    Addresses(Vec<String>),
    /// A DHT command (its request id must not have [`INTERNAL_REQUEST`] set).
    Dht(dht::Command),
    /// A gossip command.
    Gossip(gossip::Command),
    /// A flooding command.
    Flood(flood::Command),
    /// Share a complete file: serve it in the swarm, announce it in the DHT, and index
    /// `"<name> <content id>"` for flooding search. Answered by the swarm's
    /// `Accepted` or `Refused` carrying `req`.
    Share {
        /// Request id (must not have [`INTERNAL_REQUEST`] set).
        req: u64,
        /// Its manifest.
        manifest: swarm::Manifest,
        /// A store holding every chunk.
        store: S,
    },
    /// Fetch a file by content id (providers found through the DHT, plus `providers`).
    /// Answered by the swarm's `Accepted` or `Refused` carrying `req`.
    Fetch {
        /// Request id (must not have [`INTERNAL_REQUEST`] set).
        req: u64,
        /// The content id.
        cid: ContentId,
        /// Peers known to have it.
        providers: Vec<PeerId>,
    },
    /// Stop a share or fetch and forget it (a fetch's partial file stays and resumes if
    /// fetched again). Answered by the swarm's `Accepted` or `Refused` carrying `req`.
    Cancel {
        /// Request id (must not have [`INTERNAL_REQUEST`] set).
        req: u64,
        /// The transfer.
        cid: ContentId,
    },
    /// Leave every overlay gracefully (DHT hand-off, gossip departure, flooding Bye).
    Leave,
}

impl<S> std::fmt::Debug for Command<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Bootstrap(p) => write!(f, "Bootstrap({} peers)", p.len()),
            Command::Addresses(a) => write!(f, "Addresses({a:?})"),
            Command::Dht(c) => write!(f, "Dht({c:?})"),
            Command::Gossip(c) => write!(f, "Gossip({c:?})"),
            Command::Flood(c) => write!(f, "Flood({c:?})"),
            Command::Share { manifest, .. } => write!(f, "Share({})", manifest.name()),
            Command::Fetch { cid, .. } => write!(f, "Fetch({})", cid.to_hex()),
            Command::Cancel { cid, .. } => write!(f, "Cancel({})", cid.to_hex()),
            Command::Leave => f.write_str("Leave"),
        }
    }
}

/// An event: one variant per core.
#[derive(Clone, Debug)]
pub enum Event {
    /// From the DHT (replies to the caller's requests only).
    Dht(dht::Event),
    /// From gossip.
    Gossip(gossip::Event),
    /// From the flooding core.
    Flood(flood::Event),
    /// From the swarm core (discovery requests are handled inside the peer).
    Swarm(swarm::Event),
}

/// Configuration of a peer's cores.
#[derive(Clone, Debug)]
pub struct Config {
    /// The DHT.
    pub dht: dht::Config,
    /// Gossip.
    pub gossip: gossip::Config,
    /// The flooding core.
    pub flood: flood::Config,
    /// The swarm core.
    pub swarm: swarm::Config,
    /// Whether this peer creates a new ring at start (no bootstrap peers expected).
    pub create_ring: bool,
}

/// Block requests kept outstanding per peer on a LAN: 128 blocks of 16 KiB (2 MiB), so
/// that a fast local link stays busy while requests and blocks cross both nodes' tasks;
/// the core's default of 8 (128 KiB) caps a local fetch at a few tens of MiB/s, and 64
/// leaves TCP on loopback short of what it carries (docs/experiments/node.md). A
/// super-seeding sharer reveals at most twice the chunks this spans (16 of 256 KiB, 64 of
/// 64 KiB).
pub const LAN_PIPELINE_DEPTH: usize = 128;

impl Config {
    /// Timings for a LAN or a local testnet: DHT maintenance every second while the ring
    /// changes, backing off to 32 s at rest ([`dht::LAN_MAX_BACKOFF`]), gossip's LAN
    /// preset, provider lookups every 5 s.
    pub fn lan() -> Config {
        let dht = dht::Config {
            stabilize_period: Duration::from_secs(1),
            fix_fingers_period: Duration::from_secs(1),
            check_predecessor_period: Duration::from_secs(2),
            repair_period: Duration::from_secs(2),
            vnodes: 4,
            max_backoff: dht::LAN_MAX_BACKOFF,
            ..dht::Config::default()
        };
        let swarm = swarm::Config {
            lookup_interval: Duration::from_secs(2),
            tick: Duration::from_secs(1),
            pipeline_depth: LAN_PIPELINE_DEPTH,
            ..swarm::Config::default()
        };
        Config {
            dht,
            gossip: gossip::Config::lan(),
            flood: flood::Config::default(),
            swarm,
            create_ring: true,
        }
    }

    /// The cores' own defaults (the papers' timings: DHT maintenance every 30 s, gossip's
    /// WAN preset).
    pub fn wan() -> Config {
        Config {
            dht: dht::Config::default(),
            gossip: gossip::Config::wan(),
            flood: flood::Config::default(),
            swarm: swarm::Config::default(),
            create_ring: true,
        }
    }
}

/// Why a peer could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A core refused its configuration.
    #[error("invalid {core} configuration: {msg}")]
    Config {
        /// Which core.
        core: &'static str,
        /// Why.
        msg: String,
    },
}

/// What an internal DHT request was for.
#[derive(Clone, Debug)]
enum Internal {
    Join,
    Announce(ContentId),
    FindProviders(ContentId),
}

/// The composition of the cores one peer runs.
pub struct Peer<F: StoreFactory> {
    id: PeerId,
    /// The node key: its id, and the signer of its gossip member record.
    key: Keypair,
    config: Config,
    dht: Dht,
    gossip: Gossip,
    flood: Flood,
    swarm: Swarm<F>,
    addresses: Vec<String>,
    started: bool,
    joining: bool,
    /// Membership changed since the member gauges were last set (they are set at the next
    /// [`REJOIN_PERIOD`] tick: counting the table on every change cost O(N) per event, and
    /// a node sees O(N) events while a group of N forms).
    gauges_stale: bool,
    next_internal: u64,
    internal: BTreeMap<u64, Internal>,
    timed: BTreeMap<u64, Instant>,
    chunks_seen: BTreeMap<ContentId, u32>,
    arrivals: BTreeMap<(PeerId, String), Instant>,
    arrival_order: VecDeque<((PeerId, String), Instant)>,
    /// The peers this node was bootstrapped with (at most [`MAX_BOOTSTRAP_PEERS`]): the
    /// rejoin timer goes back to them while gossip knows no member.
    bootstrap: Vec<PeerId>,
    /// Verified member records shared with the other peers of this process (simulations).
    verified: Option<gossip::VerifiedRecords>,
}

/// Live members handed to the DHT at every [`REJOIN_PERIOD`] as peers to rejoin through.
pub const DHT_FALLBACK_PEERS: usize = 8;

/// Most bootstrap peers remembered for rejoining.
pub const MAX_BOOTSTRAP_PEERS: usize = 16;

/// Gossip entries whose arrival time a peer remembers: enough for a convergence run's
/// updates with room for the application's own keys; older ones are forgotten first.
pub const MAX_ARRIVALS: usize = 4096;

/// Runs `f` on a sub-core with its own outbox, forwards its sends and timers through the
/// peer's context (wrapped by `msg` and `timer`) and returns its events.
fn nested<M, T, E, Q: Protocol>(
    cx: &mut Context<'_, M, T, E>,
    core: &mut Q,
    f: impl FnOnce(&mut Q, &mut Cx<'_, Q>),
    msg: fn(Q::Message) -> M,
    timer: fn(Q::Timer) -> T,
) -> Vec<Q::Event> {
    let mut sub = Outbox::new();
    cx.nested(&mut sub, |c| f(core, c));
    let mut events = Vec::new();
    for out in sub.drain() {
        match out {
            Output::Send { to, msg: m } => cx.send(to, msg(m)),
            Output::Timer { at, timer: t } => cx.set_timer_at(at, timer(t)),
            Output::Event(e) => events.push(e),
            Output::Offence { peer, offence } => cx.penalize(peer, offence),
        }
    }
    events
}

fn config_err(core: &'static str) -> impl FnOnce(String) -> Error {
    move |msg| Error::Config { core, msg }
}

impl<F: StoreFactory> Peer<F> {
    /// A peer with node key `key` (its id is the key's) and `config`, opening download
    /// stores through `factory`. The key signs what only this peer may say: its DHT
    /// records and its member record.
    pub fn new(key: Keypair, config: Config, factory: F) -> Result<Peer<F>, Error> {
        let id = key.peer_id();
        let dht = Dht::new(config.dht.clone(), key.clone())
            .map_err(|e| config_err("dht")(e.to_string()))?;
        let gossip = Gossip::new(key.clone(), Vec::new(), config.gossip.clone())
            .map_err(|e| config_err("gossip")(e.to_string()))?;
        let flood =
            Flood::new(id, config.flood.clone()).map_err(|e| config_err("flood")(e.to_string()))?;
        let swarm = Swarm::new(config.swarm.clone(), factory)
            .map_err(|e| config_err("swarm")(e.to_string()))?;
        Ok(Peer {
            id,
            key,
            config,
            dht,
            gossip,
            flood,
            swarm,
            addresses: Vec::new(),
            started: false,
            joining: false,
            gauges_stale: false,
            next_internal: 0,
            internal: BTreeMap::new(),
            timed: BTreeMap::new(),
            chunks_seen: BTreeMap::new(),
            arrivals: BTreeMap::new(),
            arrival_order: VecDeque::new(),
            bootstrap: Vec::new(),
            verified: None,
        })
    }

    /// Shares a memo of verified gossip member records with the other peers of this
    /// process that hold it ([`gossip::Gossip::share_verified`]): a simulation of many peers
    /// then verifies each record once. Changes no result.
    pub fn share_verified(&mut self, memo: gossip::VerifiedRecords) {
        self.gossip.share_verified(memo.clone());
        self.verified = Some(memo);
    }

    /// This peer's id.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The DHT core.
    pub fn dht(&self) -> &Dht {
        &self.dht
    }

    /// When the newest version of gossip entry `key` of `origin` became active here (for
    /// this peer's own entries: when it was published). Protocol time: in the real node,
    /// microseconds since the Unix epoch, so nodes on one machine can be compared. The
    /// last [`MAX_ARRIVALS`] updates are remembered.
    pub fn gossip_arrival(&self, origin: &PeerId, key: &str) -> Option<Instant> {
        self.arrivals.get(&(*origin, key.to_string())).copied()
    }

    fn record_arrival(&mut self, origin: PeerId, key: String, at: Instant) {
        let k = (origin, key);
        self.arrivals.insert(k.clone(), at);
        self.arrival_order.push_back((k, at));
        while self.arrival_order.len() > MAX_ARRIVALS {
            if let Some((old, t)) = self.arrival_order.pop_front()
                && self.arrivals.get(&old) == Some(&t)
            {
                self.arrivals.remove(&old);
            }
        }
    }

    /// The DHT core, mutably (to restore persisted records before start).
    pub fn dht_mut(&mut self) -> &mut Dht {
        &mut self.dht
    }

    /// The gossip core.
    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    /// The flooding core (neighbours, index, counters).
    pub fn flood(&self) -> &Flood {
        &self.flood
    }

    /// The swarm core.
    pub fn swarm(&self) -> &Swarm<F> {
        &self.swarm
    }

    /// The peers this peer's protocols rely on, ascending, without itself: every virtual
    /// node's predecessor, first successors and fingers, the gossip partners (the partial
    /// view, or every member without one) and the flooding neighbours. A driver keeps its
    /// connections to them open and may close any other once idle.
    ///
    /// Of the successor list, the first `R` (the replica count) are talked to all the time
    /// (stabilize asks the first, replica repair the first `R - 1`); the rest are backups,
    /// copied from the successor's list and contacted only once those before them failed —
    /// 20 of them per virtual node would make a ring of 1000 keep ~30 connections for
    /// peers it does not talk to.
    pub fn needed_peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = Vec::new();
        let first = self.dht.config().replicas.max(1);
        for id in self.dht.vnode_ids() {
            if let Some(v) = self.dht.vnode(&id) {
                let succs = v.succs.iter().take(first);
                let fingers = v.fingers.iter().flatten();
                peers.extend(v.pred.iter().chain(succs).chain(fingers).map(|n| n.peer));
            }
        }
        peers.extend(self.gossip.partners());
        peers.extend(self.flood.neighbours().peers());
        peers.sort();
        peers.dedup();
        let me = self.id();
        peers.retain(|p| *p != me);
        peers
    }

    /// This node's announced addresses.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The name under which a shared file is indexed for flooding search.
    pub fn search_name(manifest: &swarm::Manifest) -> String {
        let cid = manifest.content_id().to_hex();
        let mut name: String = manifest.name().to_string();
        // Keep the name within the index's limit while the content id stays whole.
        let room = peerlab_overlay::flood::MAX_NAME_LEN.saturating_sub(cid.len() + 1);
        while name.len() > room {
            name.pop();
        }
        format!("{name} {cid}")
    }

    fn internal_id(&mut self, what: Internal) -> u64 {
        self.next_internal += 1;
        let id = INTERNAL_REQUEST | self.next_internal;
        if self.internal.len() >= MAX_INTERNAL
            && let Some(oldest) = self.internal.keys().next().copied()
        {
            self.internal.remove(&oldest);
        }
        self.internal.insert(id, what);
        id
    }

    fn dht_do(&mut self, cx: &mut Cx<'_, Self>, f: impl FnOnce(&mut Dht, &mut Cx<'_, Dht>)) {
        for e in nested(cx, &mut self.dht, f, Message::Dht, Timer::Dht) {
            self.on_dht_event(cx, e);
        }
    }

    fn gossip_do(
        &mut self,
        cx: &mut Cx<'_, Self>,
        f: impl FnOnce(&mut Gossip, &mut Cx<'_, Gossip>),
    ) {
        let events = nested(cx, &mut self.gossip, f, Message::Gossip, Timer::Gossip);
        let mut up: Vec<PeerId> = events
            .iter()
            .filter_map(|e| match e {
                gossip::Event::MemberUp { peer, .. } if *peer != self.id => Some(*peer),
                _ => None,
            })
            .collect();
        for e in events {
            self.on_gossip_event(cx, e);
        }
        if !up.is_empty() {
            // New members become flooding host candidates in random order: a joining node
            // learns the whole member list at once, in id order, and linking to its head
            // would make every node pick the same few neighbours (which then refuse).
            cx.rng().shuffle(&mut up);
            // Gossip partners go last, so they are tried first (the host cache hands out
            // its newest): rumors already keep connections to them, so a hello to one
            // costs no handshake, where one to a random member opens a connection (~20 KB
            // of QUIC handshake on loopback) that only flooding then uses. The partial
            // view is a uniform sample of the members, so the flooding graph stays random.
            let mut partners: Vec<PeerId> = self
                .gossip
                .partners()
                .iter()
                .copied()
                .filter(|p| *p != self.id)
                .collect();
            cx.rng().shuffle(&mut partners);
            up.extend(partners);
            self.flood_do(cx, |f, cx| {
                f.handle_command(cx, flood::Command::AddHosts(up))
            });
        }
    }

    fn flood_do(&mut self, cx: &mut Cx<'_, Self>, f: impl FnOnce(&mut Flood, &mut Cx<'_, Flood>)) {
        for e in nested(cx, &mut self.flood, f, Message::Flood, Timer::Flood) {
            if matches!(e, flood::Event::SearchHit { .. }) {
                metrics::counter!(m::FLOOD_HITS).increment(1);
            }
            cx.emit(Event::Flood(e));
        }
    }

    fn swarm_do(
        &mut self,
        cx: &mut Cx<'_, Self>,
        f: impl FnOnce(&mut Swarm<F>, &mut Cx<'_, Swarm<F>>),
    ) {
        for e in nested(cx, &mut self.swarm, f, Message::Swarm, Timer::Swarm) {
            self.on_swarm_event(cx, e);
        }
    }

    fn join_dht(&mut self, cx: &mut Cx<'_, Self>, bootstrap: Vec<PeerId>) {
        if self.dht.is_joined() || self.dht.has_left() || self.joining {
            return;
        }
        self.joining = true;
        let req = self.internal_id(Internal::Join);
        self.dht_do(cx, |d, cx| {
            d.handle_command(cx, dht::Command::Join { req, bootstrap })
        });
    }

    /// Up to `n` alive members chosen at random.
    fn random_alive_members(&self, cx: &mut Cx<'_, Self>, n: usize) -> Vec<PeerId> {
        let all: Vec<PeerId> = self
            .gossip
            .members()
            .filter(|(p, mb)| **p != self.id && mb.state == gossip::MemberState::Alive)
            .map(|(p, _)| *p)
            .collect();
        cx.rng()
            .sample_indices(all.len(), n.min(all.len()))
            .into_iter()
            .map(|i| all[i])
            .collect()
    }

    fn on_dht_event(&mut self, cx: &mut Cx<'_, Self>, e: dht::Event) {
        let dht::Event::Reply { req, result } = &e;
        if let Some(started) = self.timed.remove(req) {
            metrics::histogram!(m::LOOKUP_LATENCY)
                .record(cx.now().saturating_since(started).as_secs_f64());
        }
        match result {
            Ok(dht::Reply::Lookup(r))
            | Ok(dht::Reply::Stored { route: r, .. })
            | Ok(dht::Reply::Value { route: r, .. })
            | Ok(dht::Reply::ProviderAdded { route: r })
            | Ok(dht::Reply::Providers { route: r, .. }) => {
                metrics::counter!(m::LOOKUPS, "result" => "ok").increment(1);
                metrics::histogram!(m::LOOKUP_HOPS).record(r.hops as f64);
            }
            Err(dht::Error::LookupFailed { .. }) => {
                metrics::counter!(m::LOOKUPS, "result" => "failed").increment(1);
            }
            _ => {}
        }
        if req & INTERNAL_REQUEST == 0 {
            cx.emit(Event::Dht(e));
            return;
        }
        let Some(what) = self.internal.remove(req) else {
            return;
        };
        match (what, result) {
            (Internal::Join, _) => self.joining = false,
            (Internal::FindProviders(cid), Ok(dht::Reply::Providers { providers, .. })) => {
                let peers: Vec<PeerId> = providers
                    .iter()
                    .map(|p| p.provider)
                    .filter(|p| *p != self.id)
                    .collect();
                if !peers.is_empty() {
                    self.swarm_do(cx, |s, cx| {
                        s.handle_command(cx, swarm::Command::AddPeers { cid, peers })
                    });
                }
            }
            (Internal::Announce(cid), result) => {
                // A failed announcement is retried by the swarm core, not in 15 minutes.
                let stored = result.is_ok();
                self.swarm_do(cx, |s, cx| {
                    s.handle_command(cx, swarm::Command::Announced { cid, stored })
                });
            }
            _ => {}
        }
    }

    fn on_gossip_event(&mut self, cx: &mut Cx<'_, Self>, e: gossip::Event) {
        match &e {
            gossip::Event::MemberUp { peer, .. } => {
                let peer = *peer;
                self.dht.member_up(peer);
                if peer != self.id {
                    self.join_dht(cx, vec![peer]);
                }
                self.gauges_stale = true;
            }
            gossip::Event::MemberBack { peer } => {
                // Back from the dead: maybe from a ring of its own side of a partition.
                let peer = *peer;
                self.dht.member_up(peer);
                self.dht_do(cx, |d, cx| {
                    d.handle_command(cx, dht::Command::CheckRing { peers: vec![peer] })
                });
            }
            gossip::Event::MemberDown { peer } | gossip::Event::MemberLeft { peer } => {
                let peer = *peer;
                self.dht.member_down(peer);
                self.dht_do(cx, |d, cx| d.handle_peer_down(cx, peer));
                self.flood_do(cx, |f, cx| f.handle_peer_down(cx, peer));
                self.gauges_stale = true;
            }
            gossip::Event::MemberSuspect { .. } | gossip::Event::MemberAlive { .. } => {
                self.gauges_stale = true;
            }
            gossip::Event::EntryUpdated { origin, key, .. } => {
                metrics::counter!(m::GOSSIP_UPDATES).increment(1);
                self.record_arrival(*origin, key.clone(), cx.now());
            }
            _ => {}
        }
        cx.emit(Event::Gossip(e));
    }

    fn member_gauges(&self) {
        let mut counts = [0usize; 4];
        for (_, mb) in self.gossip.members() {
            let i = match mb.state {
                gossip::MemberState::Alive => 0,
                gossip::MemberState::Suspect => 1,
                gossip::MemberState::Dead => 2,
                gossip::MemberState::Left => 3,
            };
            counts[i] += 1;
        }
        for (i, state) in ["alive", "suspect", "dead", "left"].iter().enumerate() {
            metrics::gauge!(m::MEMBERS, "state" => *state).set(counts[i] as f64);
        }
    }

    fn on_swarm_event(&mut self, cx: &mut Cx<'_, Self>, e: swarm::Event) {
        match e {
            swarm::Event::Discovery(Discovery::Announce { cid, key, ttl }) => {
                let req = self.internal_id(Internal::Announce(cid));
                self.dht_do(cx, |d, cx| {
                    d.handle_command(cx, dht::Command::AddProvider { req, key, ttl })
                });
            }
            swarm::Event::Discovery(Discovery::FindProviders { cid, key }) => {
                let req = self.internal_id(Internal::FindProviders(cid));
                self.dht_do(cx, |d, cx| {
                    d.handle_command(cx, dht::Command::GetProviders { req, key })
                });
            }
            other => {
                match &other {
                    swarm::Event::Progress { cid, have, .. } => self.count_chunks(*cid, *have),
                    swarm::Event::Completed { cid, .. } => {
                        let have = self.swarm.stats(cid).map_or(0, |s| s.have);
                        self.count_chunks(*cid, have);
                    }
                    swarm::Event::ChunkRejected { .. } => {
                        metrics::counter!(m::CHUNKS_REJECTED).increment(1);
                    }
                    _ => {}
                }
                cx.emit(Event::Swarm(other));
            }
        }
    }

    fn count_chunks(&mut self, cid: ContentId, have: u32) {
        let seen = self.chunks_seen.entry(cid).or_default();
        if have > *seen {
            metrics::counter!(m::CHUNKS_VERIFIED).increment(u64::from(have - *seen));
            *seen = have;
        }
    }
}

impl<F: StoreFactory> Protocol for Peer<F> {
    type Message = Message;
    type Timer = Timer;
    type Command = Command<F::Store>;
    type Event = Event;

    fn handle_start(&mut self, cx: &mut Cx<'_, Self>) {
        self.started = true;
        if !self.addresses.is_empty() {
            // Gossip records this node's addresses at construction; rebuild it now that the
            // driver knows them (nothing has run yet, so nothing is lost).
            if let Ok(mut g) = Gossip::new(
                self.key.clone(),
                self.addresses.clone(),
                self.config.gossip.clone(),
            ) {
                if let Some(memo) = &self.verified {
                    g.share_verified(memo.clone());
                }
                self.gossip = g;
            }
        }
        self.dht_do(cx, |d, cx| d.handle_start(cx));
        self.gossip_do(cx, |g, cx| g.handle_start(cx));
        self.flood_do(cx, |f, cx| f.handle_start(cx));
        self.swarm_do(cx, |s, cx| s.handle_start(cx));
        if self.config.create_ring {
            self.join_dht(cx, Vec::new());
        }
        cx.set_timer(REJOIN_PERIOD, Timer::Rejoin);
    }

    fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Message) {
        match msg {
            Message::Dht(m) => self.dht_do(cx, |d, cx| d.handle_message(cx, from, m)),
            Message::Gossip(m) => {
                metrics::counter!(m::GOSSIP_MESSAGES, "kind" => peerlab_overlay::Message::kind(&m))
                    .increment(1);
                self.gossip_do(cx, |g, cx| g.handle_message(cx, from, m))
            }
            Message::Flood(m) => self.flood_do(cx, |f, cx| f.handle_message(cx, from, m)),
            Message::Swarm(m) => self.swarm_do(cx, |s, cx| s.handle_message(cx, from, m)),
        }
    }

    fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, timer: Timer) {
        match timer {
            Timer::Dht(t) => self.dht_do(cx, |d, cx| d.handle_timer(cx, t)),
            Timer::Gossip(t) => self.gossip_do(cx, |g, cx| g.handle_timer(cx, t)),
            Timer::Flood(t) => self.flood_do(cx, |f, cx| f.handle_timer(cx, t)),
            Timer::Swarm(t) => self.swarm_do(cx, |s, cx| s.handle_timer(cx, t)),
            Timer::Rejoin => {
                if std::mem::take(&mut self.gauges_stale) {
                    self.member_gauges();
                }
                metrics::gauge!(m::LOCAL_HEALTH).set(f64::from(self.gossip.local_health()));
                let c = self.dht.counters();
                metrics::counter!(m::DHT_TIMEOUTS).absolute(c.timeouts);
                metrics::counter!(m::DHT_EVICTIONS).absolute(c.evictions);
                metrics::counter!(m::DHT_LATE_REPLIES).absolute(c.late_replies);
                if self.dht.has_left() {
                    return;
                }
                // A gossip join whose messages were all lost gave up; with no member known
                // there is nobody else to ask than the bootstrap peers.
                if self.gossip.up_count() == 0
                    && !self.gossip.is_joining()
                    && !self.bootstrap.is_empty()
                {
                    let seeds = self.bootstrap.clone();
                    self.gossip_do(cx, |g, cx| {
                        g.handle_command(cx, gossip::Command::Join { seeds })
                    });
                }
                if self.dht.is_joined() {
                    // Membership tells the DHT whom to ask should a virtual node's rejoin
                    // through its own routing state find nobody but this node.
                    let peers = self.random_alive_members(cx, DHT_FALLBACK_PEERS);
                    self.dht_do(cx, |d, cx| {
                        d.handle_command(cx, dht::Command::SetFallbackPeers { peers })
                    });
                }
                if !self.dht.is_joined() {
                    // Random members: the same few (say the lowest ids) asked by everyone
                    // would keep every joiner out while those few are out of the ring.
                    let mut seeds = self.random_alive_members(cx, 3);
                    if seeds.is_empty() {
                        seeds = self.bootstrap.clone();
                    }
                    if !seeds.is_empty() {
                        self.join_dht(cx, seeds);
                    }
                }
                cx.set_timer(REJOIN_PERIOD, Timer::Rejoin);
            }
        }
    }

    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, cmd: Command<F::Store>) {
        match cmd {
            Command::Bootstrap(peers) => {
                let peers: Vec<PeerId> = peers.into_iter().filter(|p| *p != self.id).collect();
                if peers.is_empty() {
                    return;
                }
                self.bootstrap = peers.iter().copied().take(MAX_BOOTSTRAP_PEERS).collect();
                let seeds = peers.clone();
                self.gossip_do(cx, |g, cx| {
                    g.handle_command(cx, gossip::Command::Join { seeds })
                });
                let nb = peers.clone();
                self.flood_do(cx, |f, cx| {
                    f.handle_command(cx, flood::Command::AddNeighbours(nb))
                });
                self.join_dht(cx, peers);
            }
            Command::Addresses(a) => {
                if !self.started {
                    self.addresses = a;
                }
            }
            Command::Dht(c) => {
                let req = match &c {
                    dht::Command::Lookup { req, .. }
                    | dht::Command::Put { req, .. }
                    | dht::Command::Get { req, .. }
                    | dht::Command::Delete { req, .. }
                    | dht::Command::GetProviders { req, .. }
                    | dht::Command::AddProvider { req, .. } => Some(*req),
                    _ => None,
                };
                if let Some(req) = req
                    && self.timed.len() < MAX_TIMED
                {
                    self.timed.insert(req, cx.now());
                }
                self.dht_do(cx, |d, cx| d.handle_command(cx, c));
            }
            Command::Gossip(c) => {
                if let gossip::Command::Publish { key, .. } | gossip::Command::Delete { key, .. } =
                    &c
                {
                    self.record_arrival(self.id, key.clone(), cx.now());
                }
                self.gossip_do(cx, |g, cx| g.handle_command(cx, c))
            }
            Command::Flood(c) => {
                if matches!(c, flood::Command::Search { .. }) {
                    metrics::counter!(m::FLOOD_QUERIES).increment(1);
                }
                self.flood_do(cx, |f, cx| f.handle_command(cx, c));
            }
            Command::Share {
                req,
                manifest,
                store,
            } => {
                let name = Self::search_name(&manifest);
                self.swarm_do(cx, |s, cx| {
                    s.handle_command(
                        cx,
                        swarm::Command::Share {
                            req,
                            manifest,
                            store,
                        },
                    )
                });
                self.flood_do(cx, |f, cx| {
                    f.handle_command(cx, flood::Command::Share { name })
                });
            }
            Command::Fetch {
                req,
                cid,
                providers,
            } => {
                self.swarm_do(cx, |s, cx| {
                    s.handle_command(
                        cx,
                        swarm::Command::Fetch {
                            req,
                            cid,
                            providers,
                        },
                    )
                });
            }
            Command::Cancel { req, cid } => {
                self.swarm_do(cx, |s, cx| {
                    s.handle_command(cx, swarm::Command::Cancel { req, cid })
                });
            }
            Command::Leave => {
                let req = self.internal_id(Internal::Join);
                self.dht_do(cx, |d, cx| {
                    d.handle_command(cx, dht::Command::Leave { req })
                });
                self.gossip_do(cx, |g, cx| g.handle_command(cx, gossip::Command::Leave));
                self.flood_do(cx, |f, cx| f.handle_command(cx, flood::Command::Leave));
            }
        }
    }

    fn handle_peer_down(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        self.dht_do(cx, |d, cx| d.handle_peer_down(cx, peer));
        self.gossip_do(cx, |g, cx| g.handle_peer_down(cx, peer));
        self.flood_do(cx, |f, cx| f.handle_peer_down(cx, peer));
        self.swarm_do(cx, |s, cx| s.handle_peer_down(cx, peer));
    }
}

/// The wire mapping shared by every `Peer` and the node wrapper around it.
pub(crate) mod net {
    use super::*;

    pub(crate) fn channel(msg: &Message) -> Channel {
        match msg {
            Message::Dht(_) => Channel::Dht,
            Message::Gossip(_) => Channel::Gossip,
            Message::Flood(_) => Channel::Flood,
            Message::Swarm(_) => Channel::Swarm,
        }
    }

    pub(crate) fn encode(msg: &Message) -> Result<Vec<u8>, CodecError> {
        let max = channel(msg).max_frame();
        match msg {
            Message::Dht(m) => codec::encode_with_limit(m, max),
            Message::Gossip(m) => codec::encode_with_limit(m, max),
            Message::Flood(m) => codec::encode_with_limit(m, max),
            Message::Swarm(m) => codec::encode_with_limit(m, max),
        }
    }

    pub(crate) fn decode(ch: Channel, frame: &[u8]) -> Result<Message, CodecError> {
        let max = ch.max_frame();
        Ok(match ch {
            Channel::Dht => Message::Dht(codec::decode_with_limit(frame, max)?),
            Channel::Gossip => Message::Gossip(codec::decode_with_limit(frame, max)?),
            Channel::Flood => Message::Flood(codec::decode_with_limit(frame, max)?),
            Channel::Swarm => Message::Swarm(codec::decode_with_limit(frame, max)?),
        })
    }

    pub(crate) fn reply_to(event: &Event) -> Option<(u64, bool)> {
        match event {
            Event::Dht(dht::Event::Reply { req, .. }) => Some((*req, true)),
            Event::Gossip(gossip::Event::Published { req, .. })
            | Event::Gossip(gossip::Event::CommandFailed { req, .. }) => Some((*req, true)),
            Event::Flood(flood::Event::SearchHit { req, .. }) => Some((*req, false)),
            Event::Flood(flood::Event::SearchDone { req, .. })
            | Event::Flood(flood::Event::SearchRejected { req, .. }) => Some((*req, true)),
            Event::Swarm(swarm::Event::Accepted { req, .. })
            | Event::Swarm(swarm::Event::Refused { req, .. }) => Some((*req, true)),
            _ => None,
        }
    }

    /// SWIM's probe messages may travel as datagrams (`driver::probe`).
    pub(crate) fn probe_role(msg: &Message) -> Option<ProbeRole> {
        match msg {
            Message::Gossip(
                gossip::Message::Ping { seq, .. } | gossip::Message::PingReq { seq, .. },
            ) => Some(ProbeRole::Request(*seq)),
            Message::Gossip(
                gossip::Message::Ack { seq, .. }
                | gossip::Message::IndirectAck { seq, .. }
                | gossip::Message::Nack { seq },
            ) => Some(ProbeRole::Answer(*seq)),
            _ => None,
        }
    }

    pub(crate) fn addresses_of(event: &Event) -> Vec<(PeerId, String)> {
        match event {
            Event::Gossip(
                gossip::Event::MemberUp { peer, addrs }
                | gossip::Event::MemberAddrs { peer, addrs },
            ) => addrs.iter().map(|a| (*peer, a.clone())).collect(),
            _ => Vec::new(),
        }
    }
}

impl<F: StoreFactory + Send + 'static> NetCore for Peer<F>
where
    F::Store: Send + 'static,
{
    fn channel(msg: &Message) -> Channel {
        net::channel(msg)
    }
    fn encode(msg: &Message) -> Result<Vec<u8>, CodecError> {
        net::encode(msg)
    }
    fn decode(channel: Channel, frame: &[u8]) -> Result<Message, CodecError> {
        net::decode(channel, frame)
    }
    fn reply_to(event: &Event) -> Option<(u64, bool)> {
        net::reply_to(event)
    }
    fn bootstrap_command(peers: Vec<PeerId>) -> Option<Self::Command> {
        Some(Command::Bootstrap(peers))
    }
    fn address_command(addrs: Vec<String>) -> Option<Self::Command> {
        Some(Command::Addresses(addrs))
    }
    fn probe_role(msg: &Message) -> Option<ProbeRole> {
        net::probe_role(msg)
    }
    fn addresses_of(event: &Event) -> Vec<(PeerId, String)> {
        net::addresses_of(event)
    }
    fn leave_command() -> Option<Self::Command> {
        Some(Command::Leave)
    }
    fn needed_peers(&self) -> Vec<PeerId> {
        Peer::needed_peers(self)
    }
}

/// The ring id a user key is placed at.
pub fn key_id(key: &[u8]) -> Id {
    Id::hash(key)
}

/// How long a flooding search may take at most before the API stops waiting.
pub const SEARCH_WAIT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    //! A `Peer` runs without any driver, on the shared test harness
    //! ([`peerlab_sim::testing::Net`]: zero latency, timers in deadline order), the same
    //! way the simulator runs it.

    use peerlab_sim::testing::Net;
    use peerlab_swarm::MemoryFactory;

    use super::*;

    type P = Peer<MemoryFactory>;

    /// A peer with the LAN configuration; `create_ring` for the first one.
    fn peer(key: Keypair, create_ring: bool) -> P {
        let mut cfg = Config::lan();
        cfg.create_ring = create_ring;
        Peer::new(key, cfg, MemoryFactory).unwrap()
    }

    #[test]
    fn peers_form_a_ring_and_store_without_a_driver() {
        let keys: Vec<Keypair> = (1..=4).map(Keypair::synthetic).collect();
        let ids: Vec<PeerId> = keys.iter().map(Keypair::peer_id).collect();
        let mut net = Net::new(7);
        for (i, id) in ids.iter().enumerate() {
            net.add(*id, peer(keys[i].clone(), i == 0));
            if i > 0 {
                net.command(*id, Command::Bootstrap(vec![ids[0]]));
            }
        }
        net.advance_to(Instant(20_000_000));
        for id in &ids {
            assert!(net.node(id).dht().is_joined(), "{id:?} joined");
            assert_eq!(net.node(id).gossip().up_count(), 3, "{id:?} sees 3 members");
        }
        net.command(
            ids[1],
            Command::Dht(dht::Command::Put {
                req: 1,
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ttl: None,
            }),
        );
        net.advance_to(Instant(21_000_000));
        net.command(
            ids[3],
            Command::Dht(dht::Command::Get {
                req: 2,
                key: b"k".to_vec(),
            }),
        );
        net.advance_to(Instant(22_000_000));
        let got = net.events().iter().find_map(|(_, at, e)| match e {
            Event::Dht(dht::Event::Reply {
                req: 2,
                result: Ok(dht::Reply::Value { value, .. }),
            }) if *at == ids[3] => Some(value.clone()),
            _ => None,
        });
        assert_eq!(got, Some(Some(b"v".to_vec())));
    }

    #[test]
    fn needed_peers_are_the_ring_neighbours_fingers_partners_and_flooding_neighbours() {
        let keys: Vec<Keypair> = (1..=24).map(Keypair::synthetic).collect();
        let ids: Vec<PeerId> = keys.iter().map(Keypair::peer_id).collect();
        let mut net = Net::new(11);
        for (i, id) in ids.iter().enumerate() {
            let mut cfg = Config::lan();
            cfg.create_ring = i == 0;
            cfg.dht.vnodes = 1;
            cfg.gossip.partner_view = 4;
            net.add(*id, Peer::new(keys[i].clone(), cfg, MemoryFactory).unwrap());
            if i > 0 {
                net.command(*id, Command::Bootstrap(vec![ids[0]]));
            }
        }
        net.advance_to(Instant(30_000_000));
        let p = net.node(&ids[5]);
        let needed = p.needed_peers();
        let vnode = p.dht().vnode(&p.dht().vnode_ids()[0]).unwrap();
        assert!(vnode.succs.len() > 3, "a successor list with backups");
        let mut want: Vec<PeerId> = vnode.pred.iter().map(|n| n.peer).collect();
        want.extend(vnode.succs.iter().take(3).map(|n| n.peer));
        want.extend(vnode.fingers.iter().flatten().map(|n| n.peer));
        want.extend(p.gossip().partners());
        want.extend(p.flood().neighbours().peers());
        want.sort();
        want.dedup();
        want.retain(|q| *q != ids[5]);
        assert_eq!(needed, want);
        assert!(!needed.contains(&ids[5]), "never itself");
        assert!(
            needed.len() < ids.len() - 1,
            "backup successors alone do not make a peer needed: {} of {}",
            needed.len(),
            ids.len() - 1
        );
    }

    /// Whether every peer's virtual nodes have their ideal successor and predecessor in the
    /// ring of all `ids`' virtual nodes: one ring, not two.
    fn one_ring(net: &Net<P>, ids: &[PeerId]) -> bool {
        let nodes = ids
            .iter()
            .flat_map(|p| {
                net.node(p)
                    .dht()
                    .vnode_ids()
                    .into_iter()
                    .map(|id| dht::NodeRef { id, peer: *p })
            })
            .collect();
        let ring = dht::IdealRing::new(nodes);
        ids.iter().all(|p| {
            let d = net.node(p).dht();
            d.is_joined()
                && d.vnode_ids().iter().all(|id| {
                    let want = ring.view(ring.successor_index(id), 1);
                    let got = d.vnode(id).unwrap();
                    got.pred == Some(want.pred) && got.succs.first() == want.succs.first()
                })
        })
    }

    #[test]
    fn two_sides_of_a_healed_partition_become_one_ring_and_one_group() {
        let keys: Vec<Keypair> = (1..=8).map(Keypair::synthetic).collect();
        let ids: Vec<PeerId> = keys.iter().map(Keypair::peer_id).collect();
        let mut net = Net::new(11);
        for (i, id) in ids.iter().enumerate() {
            net.add(*id, peer(keys[i].clone(), i == 0));
            if i > 0 {
                net.command(*id, Command::Bootstrap(vec![ids[0]]));
            }
        }
        net.run_for(Duration::from_secs(30));
        assert!(one_ring(&net, &ids), "one ring before the partition");
        // Cut in two for two minutes, longer than a departed member's tombstone lasts: each
        // side declares the other dead and closes a ring of its own.
        for id in &ids[4..] {
            net.set_partition(*id, 1);
        }
        net.run_for(Duration::from_secs(120));
        for side in [&ids[..4], &ids[4..]] {
            for id in side {
                assert_eq!(net.node(id).gossip().up_count(), 3, "{id:?} sees its side");
            }
            assert!(one_ring(&net, side), "each side closed a ring of its own");
        }
        net.heal_partitions();
        // Membership meets again through its syncs with members held dead, and the peers
        // it reports back make the DHT look its place up in the other ring. Across seeds
        // 1–12 both were whole 2–18.5 s after the heal; a deadline of three times the slowest.
        let deadline = net.now() + Duration::from_secs(60);
        while !(one_ring(&net, &ids) && ids.iter().all(|id| net.node(id).gossip().up_count() == 7))
        {
            assert!(
                net.now() < deadline,
                "the two sides did not merge by the deadline"
            );
            net.run_for(Duration::from_millis(500));
        }
    }

    #[test]
    fn a_node_whose_joins_were_all_lost_rejoins_through_its_bootstrap_peers() {
        let (seed_key, late_key) = (Keypair::synthetic(1), Keypair::synthetic(2));
        let (seed, late) = (seed_key.peer_id(), late_key.peer_id());
        let mut net = Net::new(3);
        // Everything the newcomer sends in its first 30 s is lost (its streams to the seed
        // were dropped, say): gossip gives its join up after a few attempts.
        net.mute(late, Instant(30_000_000));
        net.add(seed, peer(seed_key, true));
        net.add(late, peer(late_key, false));
        net.command(late, Command::Bootstrap(vec![seed]));
        net.advance_to(Instant(29_000_000));
        assert!(
            net.events()
                .iter()
                .any(|(_, at, e)| *at == late
                    && matches!(e, Event::Gossip(gossip::Event::JoinFailed))),
            "the muted join failed"
        );
        assert_eq!(net.node(&late).gossip().up_count(), 0);
        net.advance_to(Instant(60_000_000));
        for id in [seed, late] {
            assert_eq!(
                net.node(&id).gossip().up_count(),
                1,
                "{id:?} sees the other"
            );
            assert!(net.node(&id).dht().is_joined(), "{id:?} joined the ring");
        }
    }
}
