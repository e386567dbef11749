//! The tokio + libp2p driver: one task owns the libp2p [`Swarm`] and a sans-IO core.
//!
//! The loop waits on its sources — swarm events, frames from stream reader tasks, inbound
//! streams, requests from the control API (a bounded channel with oneshot replies) and the
//! earliest protocol timer — and after every input drains the core's outbox: `Send` becomes
//! a length-prefixed frame on the long-lived stream of the core's channel to that peer (see
//! [`crate::wire`]), `Timer` goes into a deadline heap, `Event` goes to the API caller
//! waiting on its request id. The tokio sleep only wakes the loop; whether a timer is due is
//! decided by comparing its deadline with the driver's own clock, as quinn's endpoint driver
//! does. No lock is taken around protocol state: only this task touches it.
//!
//! # Layout
//!
//! - this module: the event loop (`Driver`, crate-internal) and the [`NetCore`] contract
//!   a core fulfils to be driven;
//! - `transport`: transports, behaviours and connection settings ([`NetConfig`]);
//! - `streams`: the cores' long-lived streams — the stream behaviour that accepts and opens
//!   them, and the writer and reader tasks, the only part that runs beside the loop,
//!   talking to it through channels;
//! - `gate`: the cap on connections per IP address ([`MAX_CONNECTIONS_PER_IP`]);
//! - `rate`: per-peer token buckets per channel ([`rate_of`]);
//! - `limits`: leaking strike points and time-limited bans ([`STRIKE_LIMIT`],
//!   [`STRIKE_LEAK`], [`BAN_DURATION`]);
//! - `commit`: group commit of the cores' store writes off the loop, and the durable
//!   acknowledgments held until their commit reports ([`commit::MAX_HELD_RUNS`],
//!   [`commit::MAX_GROUP_BYTES`]);
//! - `keep`: the connection manager — which connections stay open (`keep::OUTBOUND_IDLE`,
//!   `keep::INBOUND_IDLE`, `keep::EVICT_QUIET`, the bound `NetConfig::max_peers`);
//! - `address_book`: where to dial the peers the cores name, confirmed or claimed;
//! - `rejoin`: how a node that is alone finds the overlay again ([`REJOIN_MAX_DELAY`],
//!   [`MAX_KNOWN_PEERS`]);
//! - `probe`: SWIM's probes as bare UDP datagrams beside the streams, with the rules
//!   that make an unauthenticated datagram harmless to believe;
//! - `handle`: [`DriverHandle`], how the API talks to the loop.
//!
//! **Hostile peers.** Every frame is checked in order: a banned sender's is dropped; one
//! over its sender's rate is dropped (and charged as `Offence::Excess`, at most once per
//! [`EXCESS_REPORT_INTERVAL`]); one that fails to decode, exceeds its channel's limit,
//! stalls half-way or comes from a key type the cores cannot name is charged too; what a
//! core rejects it reports as an `Output::Offence`, charged to the sender. Charges are strike
//! points that leak away; at [`STRIKE_LIMIT`] the peer is disconnected and refused for
//! [`BAN_DURATION`]. Nothing a peer sends can panic the task.
//!
//! **Connections.** The connection manager (`keep`) keeps the connections to the peers the
//! core needs and closes the others once their exchange is over, so that a node's
//! connections stay near what its protocols need rather than growing towards a full mesh. A peer that restarted with the same identity is recognised by the boot nonce in
//! its identify agent string ([`agent_version`]); its older connections, which lead to the
//! dead process, are closed at once instead of swallowing frames until they time out.
//!
//! Metrics are recorded into this node's own Prometheus recorder (installed around each
//! input with `metrics::with_local_recorder`), so many nodes in one process keep separate
//! figures.

// The driver is the place where wall-clock time enters: it reads `std::time::Instant` to
// compute protocol time, which clippy.toml forbids in the cores.
#![allow(clippy::disallowed_methods)]

mod address_book;
mod commit;
mod gate;
mod handle;
mod keep;
mod limits;
mod probe;
mod rate;
mod rejoin;
mod streams;
mod transport;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol as AddrProto;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, Swarm, identify, ping};
use metrics_exporter_prometheus::PrometheusRecorder;
use peerlab_overlay::{
    CodecError, Context, Instant, Offence, Outbox, Output, PeerId, Protocol, Rng,
};
use tokio::sync::{mpsc, oneshot};

use crate::NodeError;
use crate::metrics as m;
use crate::store::Change;
use crate::wire::{self, Channel};

pub(crate) use gate::MAX_CONNECTIONS_PER_IP;
pub(crate) use handle::Request;
pub(crate) use handle::{DriverError, DriverHandle, MAX_WAITERS, NetStatus, PeerInfo};
pub(crate) use keep::DEFAULT_MAX_PEERS;
pub(crate) use probe::ProbeRole;
pub(crate) use rejoin::{KNOWN_ADDRS_PER_PEER, MAX_KNOWN_PEERS, REJOIN_DIALS_PER_ROUND};
pub(crate) use streams::{
    Delay, MAX_DELAY, MAX_QUEUED_BYTES, MAX_QUEUED_FRAMES, STREAM_EVENT_CAPACITY,
};
pub(crate) use transport::{NetConfig, from_libp2p, to_libp2p};

use address_book::{AddressBook, Source};
use limits::Strikes;
use probe::Probes;
use rate::{RateLimits, Verdict};
use streams::{StreamEvent, Streams};
use transport::{Behaviour, BehaviourEvent, boot_nonce, build_swarm, preferred_addrs, strip_p2p};

/// Most stream events the driver handles in one turn before it looks at other inputs (and
/// sends the answers they produced together).
const STREAM_EVENTS_PER_TURN: usize = 64;

/// Most pending timers; beyond this new timers are dropped with a warning (a core that
/// sets this many is broken).
pub(crate) const MAX_TIMERS: usize = 1 << 20;

/// Messages a core may send to itself in one turn before the rest wait for the next turn.
const LOOPBACK_BATCH: usize = 10_000;

/// Period of the driver's own housekeeping (gauges, rejoin rounds, ban expiry).
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// How often the last-known peers are written to the data dir when they changed (a restart
/// loses at most this much of the node's view; the file is small but written with fsync).
const KNOWN_PEERS_SAVE: Duration = Duration::from_secs(10);

/// What the driver needs from a core beyond [`Protocol`]: how its messages map onto
/// channels and frames, and how its events answer API calls.
pub trait NetCore:
    Protocol<Timer: Send + 'static, Command: Send + 'static, Event: Send + 'static> + Send + 'static
{
    /// The channel (libp2p protocol) a message travels on.
    fn channel(msg: &Self::Message) -> Channel;
    /// Encodes a message into the frame sent on its channel.
    fn encode(msg: &Self::Message) -> Result<Vec<u8>, CodecError>;
    /// Decodes a frame received on `channel` (its size is already checked).
    fn decode(channel: Channel, frame: &[u8]) -> Result<Self::Message, CodecError>;
    /// The request id an event answers, and whether it is the last answer to that id.
    fn reply_to(event: &Self::Event) -> Option<(u64, bool)>;
    /// The command that joins the overlay through peers reached at bootstrap addresses.
    fn bootstrap_command(_peers: Vec<PeerId>) -> Option<Self::Command> {
        None
    }
    /// The command that tells the core this node's own addresses (for membership records).
    fn address_command(_addrs: Vec<String>) -> Option<Self::Command> {
        None
    }
    /// Whether the core sees no other live member (a ring of its own, an empty
    /// membership): the driver then keeps looking for peers (see `rejoin`).
    fn isolated(&self) -> bool {
        false
    }
    /// The peers the core relies on and whose connections the driver keeps open (see
    /// `keep`); any other connection is closed once it has been idle for a while.
    fn needed_peers(&self) -> Vec<PeerId> {
        Vec::new()
    }
    /// Whether a message may travel as a bare datagram, and as what (see `probe`): `None`
    /// for every message that needs a stream.
    fn probe_role(_msg: &Self::Message) -> Option<ProbeRole> {
        None
    }
    /// Peer addresses an event reveals (for example a gossip member's address).
    fn addresses_of(_event: &Self::Event) -> Vec<(PeerId, String)> {
        Vec::new()
    }
    /// The command that leaves the overlay gracefully (hand-off) before shutdown.
    fn leave_command() -> Option<Self::Command> {
        None
    }
    /// Called with every event before it is dispatched (metrics, persistence).
    fn observe(&mut self, _event: &Self::Event) {}
    /// How the core's store writes are committed; called once, when the driver starts. The
    /// driver runs it off the loop (tokio's blocking pool), one group of runs at a time
    /// (see `commit`). `None`: the core keeps nothing.
    fn committer(&self) -> Option<Committer> {
        None
    }
    /// The store changes the last run of inputs made (taken after every run; they join
    /// the next commit group). The run's durable acknowledgments — messages for which
    /// [`NetCore::is_durable_ack`] and events for which [`NetCore::is_durable_event`]
    /// holds — leave only once that group (and every earlier one) is committed.
    fn take_writes(&mut self) -> Vec<Change> {
        Vec::new()
    }
    /// A group commit of `changes` failed: they are not on disk (the next run's writes
    /// must include them again).
    fn commit_failed(&mut self, _changes: &[Change]) {}
    /// A held event whose writes could not be made durable (`why`): a write's
    /// acknowledgment becomes an error. (Held messages are dropped instead, so their
    /// writers time out and retry.)
    fn not_durable(event: Self::Event, _why: &str) -> Self::Event {
        event
    }
    /// Whether a message acknowledges that this node keeps a write (held until the run's
    /// writes are committed, dropped if the commit fails).
    fn is_durable_ack(_msg: &Self::Message) -> bool {
        false
    }
    /// Whether an event acknowledges a write (held until the run's writes are committed,
    /// passed through [`NetCore::not_durable`] if the commit fails).
    fn is_durable_event(_event: &Self::Event) -> bool {
        false
    }
}

/// Commits a group of store changes in one transaction (runs on the blocking pool).
pub(crate) type Committer = Arc<dyn Fn(&[Change]) -> Result<(), String> + Send + Sync>;

/// A group commit running on the blocking pool: its number and the task that returns its
/// changes with the outcome.
type Committing = (
    u64,
    tokio::task::JoinHandle<(Vec<Change>, Result<(), String>)>,
);

/// What the outbox holds; durable acknowledgments wait in the commit pipeline as these.
type Out<P> = Output<<P as Protocol>::Message, <P as Protocol>::Timer, <P as Protocol>::Event>;

#[derive(Default)]
struct Connected {
    /// Open connections and their remote addresses.
    conns: Vec<(ConnectionId, Multiaddr)>,
    /// Whether this node dialled one of them (otherwise the peer did: see `keep`).
    dialled: bool,
    rtt: Option<Duration>,
    agent: Option<String>,
    /// The boot nonce of the peer's process, from identify.
    boot: Option<String>,
}

/// Frames waiting to one peer on one channel until a connection is up.
#[derive(Default)]
struct Pending {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
}

struct Waiter<E> {
    tx: mpsc::Sender<E>,
}

/// Counter handles of one channel's traffic, registered once when the driver starts: a
/// `counter!` call per frame would hash the name and labels and look the counter up in the
/// registry for every 16 KiB block sent or received.
struct Traffic {
    bytes_in: metrics::Counter,
    messages_in: metrics::Counter,
    bytes_out: metrics::Counter,
    messages_out: metrics::Counter,
}

impl Traffic {
    /// Registers the counters of `ch` with the current (the node's local) recorder.
    fn register(ch: Channel) -> Traffic {
        Traffic {
            bytes_in: metrics::counter!(m::BYTES_IN, "protocol" => ch.name()),
            messages_in: metrics::counter!(m::MESSAGES_IN, "protocol" => ch.name()),
            bytes_out: metrics::counter!(m::BYTES_OUT, "protocol" => ch.name()),
            messages_out: metrics::counter!(m::MESSAGES_OUT, "protocol" => ch.name()),
        }
    }

    /// Counts one frame of `len` bytes sent.
    fn sent(&self, len: usize) {
        self.bytes_out.increment(len as u64);
        self.messages_out.increment(1);
    }
}

/// The driver task's state.
pub(crate) struct Driver<P: NetCore> {
    swarm: Swarm<Behaviour>,
    core: P,
    rng: Rng,
    outbox: Outbox<P::Message, P::Timer, P::Event>,
    /// Group commit of the core's writes, and the acknowledgments waiting for it.
    commits: commit::Pipeline<Out<P>>,
    committer: Option<Committer>,
    committing: Option<Committing>,
    epoch: std::time::Instant,
    /// Protocol time at `epoch`: wall-clock microseconds since 1970, so that versions
    /// written with protocol time keep growing across restarts and compare across nodes.
    epoch_micros: u64,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_vals: BTreeMap<u64, P::Timer>,
    next_timer: u64,
    requests: mpsc::Receiver<Request<P>>,
    waiters: BTreeMap<u64, Waiter<P::Event>>,
    address_book: AddressBook,
    connected: BTreeMap<libp2p::PeerId, Connected>,
    strikes: Strikes,
    rates: RateLimits,
    /// The probe datagram path, and the rate buckets of what arrives on it (apart from the
    /// streams', so that forged datagrams cannot spend a peer's stream budget).
    probes: Probes,
    datagram_rates: RateLimits,
    /// The claimed sender of the datagram being handled: what the core holds against it is
    /// not charged (the claim is unproven).
    unproven: Option<PeerId>,
    /// When each connected peer last sent or was sent a frame (for `keep`).
    activity: keep::Activity<libp2p::PeerId>,
    /// Peers whose connections the manager closed and whose close is not yet reported:
    /// their close is no hint to the core that they are down.
    trimmed: std::collections::BTreeSet<libp2p::PeerId>,
    /// The connection manager's bound (`NetConfig::max_peers`; 0: off).
    max_peers: usize,
    /// Frames waiting per peer and channel for a connection to that peer.
    pending: BTreeMap<(libp2p::PeerId, Channel), Pending>,
    /// The stream writer and reader tasks.
    streams: Streams,
    stream_rx: mpsc::Receiver<StreamEvent>,
    loopback: VecDeque<P::Message>,
    local: PeerId,
    local_libp2p: libp2p::PeerId,
    listen_addrs: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    /// Backoff of the rejoin rounds while the node is alone.
    rejoin: rejoin::Backoff,
    /// The last-known peers' addresses (each ending in `/p2p/<id>`), newest first.
    known: Vec<Multiaddr>,
    /// Where `known` is kept across restarts, and what was written there last.
    known_file: Option<std::path::PathBuf>,
    known_saved: Vec<Multiaddr>,
    known_saved_at: std::time::Instant,
    /// Jitter of the rejoin backoff (apart from the core's random source).
    jitter: Rng,
    bad_frames: u64,
    prefer_quic: bool,
    recorder: Arc<PrometheusRecorder>,
    /// Traffic counters per channel, in [`Channel::ALL`] order (registered in `run`).
    traffic: Vec<Traffic>,
}

/// Wall-clock protocol time: microseconds since 1970 (the driver's clock base).
pub(crate) fn wall_clock() -> Instant {
    Instant(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0),
    )
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    #[allow(clippy::disallowed_types)]
    let s = std::collections::hash_map::RandomState::new();
    let mut h = s.build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

impl<P: NetCore> Driver<P> {
    /// Builds the driver, starts listening and returns it with its handle.
    pub(crate) fn new(
        key: Keypair,
        core: P,
        cfg: &NetConfig,
        recorder: Arc<PrometheusRecorder>,
    ) -> Result<(Driver<P>, DriverHandle<P>), NodeError> {
        let local_libp2p = key.public().to_peer_id();
        let local = from_libp2p(&local_libp2p).ok_or(NodeError::NotEd25519)?;
        let seed = cfg.seed.unwrap_or_else(random_seed);
        // A fresh nonce per start even with a fixed protocol seed: it names this process.
        let mut swarm = build_swarm(key, cfg, random_seed())?;
        for addr in &cfg.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|source| NodeError::Listen {
                    addr: addr.clone(),
                    source,
                })?;
        }
        let known = cfg
            .known_peers_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| rejoin::parse_known(&t))
            .unwrap_or_default();
        let (handle, requests) = DriverHandle::channel();
        let (stream_tx, stream_rx) = mpsc::channel(STREAM_EVENT_CAPACITY);
        let streams = Streams::new(
            stream_tx,
            cfg.delay.map(|d| (d, seed)),
            streams::stream_idle(cfg.idle_timeout),
        );
        let committer = core.committer();
        let probes = match cfg.probe_socket() {
            Some(at) => Probes::bind(local, at)
                .map_err(|source| NodeError::ProbeSocket { addr: at, source })?,
            None => Probes::off(local),
        };
        let driver = Driver {
            swarm,
            core,
            rng: Rng::seed(seed),
            outbox: Outbox::new(),
            commits: commit::Pipeline::default(),
            committer,
            committing: None,
            epoch: std::time::Instant::now(),
            epoch_micros: wall_clock().0,
            timers: BinaryHeap::new(),
            timer_vals: BTreeMap::new(),
            next_timer: 0,
            requests,
            waiters: BTreeMap::new(),
            address_book: AddressBook::default(),
            connected: BTreeMap::new(),
            strikes: Strikes::default(),
            rates: RateLimits::default(),
            probes,
            datagram_rates: RateLimits::default(),
            unproven: None,
            activity: keep::Activity::default(),
            trimmed: std::collections::BTreeSet::new(),
            max_peers: cfg.max_peers as usize,
            pending: BTreeMap::new(),
            streams,
            stream_rx,
            loopback: VecDeque::new(),
            local,
            local_libp2p,
            listen_addrs: Vec::new(),
            bootstrap: cfg.bootstrap.clone(),
            rejoin: rejoin::Backoff::default(),
            known_saved: known.clone(),
            known,
            known_file: cfg.known_peers_file.clone(),
            known_saved_at: std::time::Instant::now(),
            jitter: Rng::seed(random_seed()),
            bad_frames: 0,
            prefer_quic: cfg.prefer_quic,
            recorder,
            traffic: Vec::new(),
        };
        Ok((driver, handle))
    }

    /// This node's libp2p peer id.
    pub(crate) fn local_libp2p(&self) -> libp2p::PeerId {
        self.local_libp2p
    }

    /// Waits until every listener reported its address (at most `timeout`); returns them.
    pub(crate) async fn wait_listening(&mut self, n: usize, timeout: Duration) -> Vec<Multiaddr> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.listen_addrs.len() < n {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(ev) => self.on_swarm_event(ev),
                Err(_) => break,
            }
        }
        self.listen_addrs.clone()
    }

    fn now(&self) -> Instant {
        Instant(self.epoch_micros + self.epoch.elapsed().as_micros() as u64)
    }

    /// Hands one input to the core and sends what it produced.
    fn with_core(&mut self, f: impl FnOnce(&mut P, &mut peerlab_overlay::Cx<'_, P>)) {
        self.feed_core(f);
        self.end_inputs();
    }

    /// Hands one input to the core; what it produces waits in the outbox until
    /// [`Self::end_inputs`]. The frames of one turn are fed this way, so that the answers
    /// to a batch of frames (a seeder's blocks for a pipeline of requests) reach the stream
    /// writers together and leave in few, large writes, rather than one write and one
    /// writer wake-up per 16 KiB block.
    fn feed_core(&mut self, f: impl FnOnce(&mut P, &mut peerlab_overlay::Cx<'_, P>)) {
        let now = self.now();
        let mut cx = Context::new(now, &mut self.rng, &mut self.outbox);
        f(&mut self.core, &mut cx);
    }

    /// Ends a run of inputs: its writes join the commit pipeline, its durable
    /// acknowledgments wait there for their commit, and everything else leaves now.
    fn end_inputs(&mut self) {
        let changes = self.core.take_writes();
        let mut acks = Vec::new();
        let outs: Vec<_> = self.outbox.drain().collect();
        for out in outs {
            match out {
                Output::Send { ref msg, .. } if P::is_durable_ack(msg) => acks.push(out),
                Output::Event(ref ev) if P::is_durable_event(ev) => acks.push(out),
                out => self.emit(out),
            }
        }
        let step = self.commits.run(changes, acks);
        self.on_commit_step(step);
    }

    /// Sends what a step of the commit pipeline released, fails what it failed, and starts
    /// the group it started.
    fn on_commit_step(&mut self, step: commit::Step<Out<P>>) {
        for out in step.released {
            self.emit(out);
        }
        if let Some((why, failed)) = step.failed {
            metrics::counter!(m::PERSIST_FAILED).increment(1);
            for out in failed {
                // Held frames are dropped: their writers time out and retry.
                if let Output::Event(ev) = out {
                    self.dispatch(P::not_durable(ev, &why));
                }
            }
        }
        let Some(group) = step.start else { return };
        let Some(commit) = self.committer.clone() else {
            // A core without a store keeps nothing: its writes are as durable as they get.
            let step = self.commits.completed(group.id, Ok(()));
            return self.on_commit_step(step);
        };
        let changes = group.changes;
        let task = tokio::task::spawn_blocking(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit(&changes)))
                .unwrap_or_else(|_| Err("the storage task panicked".into()));
            (changes, r)
        });
        self.committing = Some((group.id, task));
    }

    /// The group commit `id` finished (or its task was lost).
    fn on_committed(
        &mut self,
        id: u64,
        done: Result<(Vec<Change>, Result<(), String>), tokio::task::JoinError>,
    ) {
        let result = match done {
            Ok((changes, r)) => {
                if r.is_err() {
                    self.core.commit_failed(&changes);
                }
                r
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = &result {
            tracing::error!(%why, "a store commit failed; its writes are not acknowledged");
        }
        let step = self.commits.completed(id, result);
        self.on_commit_step(step);
    }

    /// Waits for every queued commit (at shutdown: what was written is kept).
    async fn drain_commits(&mut self) {
        let recorder = self.recorder.clone();
        while let Some((id, task)) = self.committing.take() {
            let done = task.await;
            metrics::with_local_recorder(&*recorder, || self.on_committed(id, done));
        }
    }

    /// Hands one output of the core to where it goes.
    fn emit(&mut self, out: Out<P>) {
        match out {
            Output::Send { to, msg } => self.send(to, msg),
            Output::Timer { at, timer } => {
                if self.timer_vals.len() >= MAX_TIMERS {
                    tracing::warn!("timer table full; dropping a timer");
                    return;
                }
                let seq = self.next_timer;
                self.next_timer += 1;
                self.timer_vals.insert(seq, timer);
                self.timers.push(Reverse((at, seq)));
            }
            Output::Event(ev) => self.dispatch(ev),
            Output::Offence { peer, offence } => self.penalize(peer, offence),
        }
    }

    /// The addresses to dial `peer` on (see [`preferred_addrs`]).
    fn dial_addrs(&self, peer: &libp2p::PeerId) -> Vec<Multiaddr> {
        preferred_addrs(self.address_book.addrs(peer), self.prefer_quic)
    }

    fn dispatch(&mut self, ev: P::Event) {
        // An event lists all of a member's addresses: its probe addresses replace what was
        // known, the others go to the address book.
        let mut probe_addrs: BTreeMap<PeerId, Vec<std::net::SocketAddr>> = BTreeMap::new();
        for (peer, addr) in P::addresses_of(&ev) {
            let probes = probe_addrs.entry(peer).or_default();
            if let (Some(p), Ok(a)) = (to_libp2p(&peer), addr.parse::<Multiaddr>()) {
                match probe::probe_addr(&a) {
                    Some(sa) => probes.push(sa),
                    None => self.remember(p, strip_p2p(&a), Source::Claimed),
                }
            }
        }
        for (peer, addrs) in probe_addrs {
            if peer != self.local {
                self.probes.learn(peer, addrs);
            }
        }
        self.core.observe(&ev);
        if let Some((id, last)) = P::reply_to(&ev)
            && let Some(w) = self.waiters.get(&id)
        {
            // A caller that stopped listening, or one too slow to keep up, loses events
            // rather than stalling the driver.
            let closed = w.tx.try_send(ev).is_err() && w.tx.is_closed();
            if last || closed {
                self.waiters.remove(&id);
            }
        }
    }

    fn send(&mut self, to: PeerId, msg: P::Message) {
        if to == self.local {
            self.loopback.push_back(msg);
            return;
        }
        let Some(peer) = to_libp2p(&to) else { return };
        if self.strikes.is_banned(&peer, std::time::Instant::now()) {
            return;
        }
        let ch = P::channel(&msg);
        let kind = peerlab_overlay::Message::kind(&msg);
        let role = P::probe_role(&msg);
        let frame = match P::encode(&msg) {
            Ok(f) if f.len() <= ch.max_frame() => f,
            Ok(f) => {
                tracing::warn!(
                    len = f.len(),
                    channel = ch.name(),
                    "outgoing frame too large"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(%e, "cannot encode a message");
                return;
            }
        };
        if let Some(role) = role
            && let Some(datagrams) = self.probes.outgoing(to, role, ch, &frame)
        {
            for (dest, bytes) in datagrams {
                let outcome = if self.probes.send_to(dest, &bytes) {
                    if let Some(t) = self.traffic.get(ch.index()) {
                        t.sent(bytes.len());
                    }
                    "sent"
                } else {
                    "send_failed"
                };
                metrics::counter!(m::PROBE_DATAGRAMS, "outcome" => outcome).increment(1);
            }
            return;
        }
        if self.connected.contains_key(&peer) {
            if self.max_peers > 0 {
                self.activity.touch(peer, std::time::Instant::now());
            }
            let len = frame.len();
            if self
                .streams
                .send(&mut self.swarm.behaviour_mut().streams, peer, ch, frame)
                && let Some(t) = self.traffic.get(ch.index())
            {
                t.sent(len);
            }
            return;
        }
        // Not connected: the frames wait here until the connection is up (then
        // `flush_pending`) or the dial fails (then they are dropped).
        let fresh = !self.pending.keys().any(|(p, _)| *p == peer);
        let q = self.pending.entry((peer, ch)).or_default();
        if q.frames.len() >= MAX_QUEUED_FRAMES || q.bytes + frame.len() > MAX_QUEUED_BYTES {
            metrics::counter!(m::SEND_DROPPED, "protocol" => ch.name()).increment(1);
            return;
        }
        if let Some(t) = self.traffic.get(ch.index()) {
            t.sent(frame.len());
        }
        q.bytes += frame.len();
        q.frames.push_back(frame);
        if fresh {
            metrics::counter!(m::DIALS, "kind" => kind).increment(1);
            tracing::debug!(target: "peerlab::dials", %peer, kind, "dial");
            let addrs = self.dial_addrs(&peer);
            match self
                .swarm
                .dial(DialOpts::peer_id(peer).addresses(addrs).build())
            {
                // Dialling, or a dial already under way: its outcome decides.
                Ok(()) | Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {}
                // No address known (or refused outright): nothing will deliver these.
                Err(e) => {
                    tracing::debug!(%peer, %e, "cannot dial");
                    self.pending.retain(|(p, _), _| *p != peer);
                    metrics::counter!(m::SEND_FAILED, "protocol" => ch.name()).increment(1);
                }
            }
        }
    }

    /// Moves frames that waited for a connection to `peer` into its stream writers.
    fn flush_pending(&mut self, peer: libp2p::PeerId) {
        for ch in Channel::ALL {
            if let Some(q) = self.pending.remove(&(peer, ch)) {
                for f in q.frames {
                    // Already counted as sent when it was queued.
                    self.streams
                        .send(&mut self.swarm.behaviour_mut().streams, peer, ch, f);
                }
            }
        }
    }

    fn on_stream_event(&mut self, ev: StreamEvent) {
        match ev {
            StreamEvent::Frame { peer, ch, frame } => self.on_frame(peer, ch, &frame),
            StreamEvent::Oversized { peer, ch } => {
                self.strike(peer, ch, "frame over the channel's limit")
            }
            StreamEvent::Stalled { peer, ch } => {
                tracing::debug!(%peer, channel = ch.name(), "frame stalled; stream dropped");
                self.charge(peer, Offence::Stalled);
            }
            StreamEvent::ReaderClosed { peer, ch } => self.streams.reader_closed(peer, ch),
            StreamEvent::WriterClosed {
                peer,
                ch,
                id,
                error,
            } => {
                self.streams.writer_closed(peer, ch, id);
                if let Some(e) = error {
                    tracing::debug!(%peer, channel = ch.name(), %e, "stream failed");
                    metrics::counter!(m::SEND_FAILED, "protocol" => ch.name()).increment(1);
                }
            }
        }
    }

    fn on_incoming(&mut self, ch: Channel, peer: libp2p::PeerId, stream: libp2p::Stream) {
        if self.strikes.is_banned(&peer, std::time::Instant::now()) {
            return;
        }
        if !self.streams.accept(ch, peer, stream) {
            metrics::counter!(m::STREAMS_REFUSED, "reason" => "per_peer").increment(1);
        }
    }

    /// Hands one frame read from a stream to the core (its output is sent at the end of the
    /// turn, [`Self::end_inputs`]).
    fn on_frame(&mut self, peer: libp2p::PeerId, ch: Channel, frame: &[u8]) {
        let now = std::time::Instant::now();
        if self.strikes.is_banned(&peer, now) {
            return;
        }
        match self.rates.admit(peer, ch, frame.len(), now) {
            Verdict::Admit => {}
            Verdict::Drop { charge } => {
                metrics::counter!(m::RATE_LIMITED, "protocol" => ch.name()).increment(1);
                if charge {
                    tracing::debug!(%peer, channel = ch.name(), "over the rate; frames dropped");
                    self.charge(peer, Offence::Excess);
                }
                return;
            }
        }
        let Some(from) = from_libp2p(&peer) else {
            self.strike(peer, ch, "not an Ed25519 peer");
            return;
        };
        if let Some(t) = self.traffic.get(ch.index()) {
            t.bytes_in.increment(frame.len() as u64);
            t.messages_in.increment(1);
        }
        if self.max_peers > 0 {
            self.activity.touch(peer, now);
        }
        match P::decode(ch, frame) {
            Ok(msg) if P::channel(&msg) == ch => {
                self.feed_core(|core, cx| core.handle_message(cx, from, msg));
            }
            Ok(_) => self.strike(peer, ch, "message on the wrong channel"),
            Err(e) => self.strike(peer, ch, &e.to_string()),
        }
    }

    /// Hands one probe datagram to the core, if it passes the rules of `probe`; what the
    /// core holds against its claimed sender is not charged.
    fn on_datagram(&mut self, bytes: &[u8], src: std::net::SocketAddr) {
        let refused = |why: &'static str| {
            metrics::counter!(m::PROBE_DATAGRAMS, "outcome" => why).increment(1);
        };
        let d = match wire::Datagram::parse(bytes) {
            Ok(d) => d,
            Err(e) => return refused(e.name()),
        };
        if !self.probes.is_for_me(&d) {
            return refused("not_for_me");
        }
        let Some(from) = self.probes.peer_of(&d.from_tag) else {
            return refused("unknown_peer");
        };
        let Some(peer) = to_libp2p(&from) else {
            return refused("unknown_peer");
        };
        if from == self.local {
            return refused("unknown_peer");
        }
        let now = std::time::Instant::now();
        if self.strikes.is_banned(&peer, now) {
            return refused("banned");
        }
        if let Verdict::Drop { .. } = self.datagram_rates.admit(peer, d.channel, bytes.len(), now) {
            return refused("rate");
        }
        let msg = match P::decode(d.channel, d.body) {
            Ok(msg) if P::channel(&msg) == d.channel => msg,
            _ => return refused("malformed"),
        };
        let Some(role) = P::probe_role(&msg) else {
            return refused("not_a_probe");
        };
        if let Err(why) = self.probes.admit(from, role, &d, src) {
            return refused(why.name());
        }
        metrics::counter!(m::PROBE_DATAGRAMS, "outcome" => "received").increment(1);
        if let Some(t) = self.traffic.get(d.channel.index()) {
            t.bytes_in.increment(bytes.len() as u64);
            t.messages_in.increment(1);
        }
        self.unproven = Some(from);
        self.with_core(|core, cx| core.handle_message(cx, from, msg));
        self.unproven = None;
    }

    fn remember(&mut self, peer: libp2p::PeerId, addr: Multiaddr, source: Source) {
        if peer == self.local_libp2p {
            return;
        }
        let connected = &self.connected;
        self.address_book
            .remember(peer, addr, source, |p| connected.contains_key(p));
    }

    fn strike(&mut self, peer: libp2p::PeerId, ch: Channel, why: &str) {
        self.bad_frames += 1;
        metrics::counter!(m::BAD_FRAMES, "protocol" => ch.name()).increment(1);
        tracing::debug!(%peer, channel = ch.name(), why, "bad frame");
        self.add_strikes(peer, Offence::Malformed.severity());
    }

    /// A core rejected `peer`'s input.
    fn penalize(&mut self, peer: PeerId, offence: Offence) {
        if self.unproven == Some(peer) {
            metrics::counter!(m::OFFENCES_UNPROVEN, "offence" => offence.name()).increment(1);
            return;
        }
        let Some(peer) = to_libp2p(&peer) else {
            metrics::counter!(m::OFFENCES, "offence" => offence.name()).increment(1);
            return;
        };
        self.charge(peer, offence);
    }

    /// Counts `offence` and charges its strike points to `peer`.
    fn charge(&mut self, peer: libp2p::PeerId, offence: Offence) {
        metrics::counter!(m::OFFENCES, "offence" => offence.name()).increment(1);
        tracing::debug!(%peer, offence = offence.name(), "offence");
        self.add_strikes(peer, offence.severity());
    }

    fn add_strikes(&mut self, peer: libp2p::PeerId, points: u32) {
        if self.strikes.add(peer, points, std::time::Instant::now()) {
            tracing::info!(%peer, "banning peer after repeated bad frames");
            metrics::counter!(m::PEERS_BANNED).increment(1);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn status(&self) -> NetStatus {
        let local = self.local_libp2p;
        let now = std::time::Instant::now();
        NetStatus {
            peer_id: local.to_string(),
            listen_addrs: self
                .listen_addrs
                .iter()
                .map(|a| a.clone().with(AddrProto::P2p(local)).to_string())
                .collect(),
            probe_addr: self
                .probes
                .local_addr()
                .map(|sa| probe::probe_multiaddr(sa).to_string()),
            peers: self
                .connected
                .iter()
                .map(|(p, c)| PeerInfo {
                    peer_id: p.to_string(),
                    addresses: c.conns.iter().map(|(_, a)| a.to_string()).collect(),
                    rtt_ms: c.rtt.map(|d| d.as_secs_f64() * 1e3),
                    agent: c.agent.clone(),
                    strikes: self.strikes.of(p, now),
                })
                .collect(),
            uptime_secs: self.epoch.elapsed().as_secs_f64(),
            banned: self.strikes.banned(),
            bad_frames: self.bad_frames,
        }
    }

    fn fire_due_timers(&mut self) {
        let now = self.now();
        while let Some(Reverse((at, seq))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(t) = self.timer_vals.remove(&seq) {
                self.with_core(|core, cx| core.handle_timer(cx, t));
            }
        }
    }

    fn run_loopback(&mut self) {
        let mut n = 0;
        while let Some(msg) = self.loopback.pop_front() {
            let from = self.local;
            self.with_core(|core, cx| core.handle_message(cx, from, msg));
            n += 1;
            if n >= LOOPBACK_BATCH {
                break;
            }
        }
    }

    fn housekeeping(&mut self) {
        let now = std::time::Instant::now();
        self.strikes.expire(now);
        // Callers that gave up (timed out) no longer hold their receiver.
        self.waiters.retain(|_, w| !w.tx.is_closed());
        let connected = &self.connected;
        self.activity.retain(|p| connected.contains_key(p));
        self.trim(now);
        metrics::gauge!(m::CONNECTED_PEERS).set(self.connected.len() as f64);
        metrics::gauge!(m::CONNECTIONS).set(self.connections() as f64);
        metrics::gauge!(m::PENDING_TIMERS).set(self.timer_vals.len() as f64);
        metrics::counter!(m::STREAMS_REFUSED, "reason" => "queue")
            .absolute(self.swarm.behaviour().streams.refused());
        metrics::counter!(m::CONNECTIONS_DENIED, "reason" => "per_ip")
            .absolute(self.swarm.behaviour().gate.denied());
        let connected = &self.connected;
        self.rates.retain(|p| connected.contains_key(p));
        self.heal();
        if now.duration_since(self.known_saved_at) >= KNOWN_PEERS_SAVE {
            self.save_known_peers();
        }
    }

    /// Established connections, both directions.
    fn connections(&self) -> usize {
        self.connected.values().map(|c| c.conns.len()).sum()
    }

    /// Closes the connections the manager no longer keeps (see `keep`); nothing with the
    /// manager off (`max_peers` 0).
    fn trim(&mut self, now: std::time::Instant) {
        if self.max_peers == 0 {
            return;
        }
        let needed: std::collections::BTreeSet<libp2p::PeerId> = self
            .core
            .needed_peers()
            .iter()
            .filter_map(to_libp2p)
            .collect();
        metrics::gauge!(m::NEEDED_PEERS).set(needed.len() as f64);
        let peers: Vec<keep::Candidate<libp2p::PeerId>> = self
            .connected
            .iter()
            .map(|(p, c)| keep::Candidate {
                peer: *p,
                dialled: c.dialled,
                needed: needed.contains(p) || self.streams.busy(p) || self.trimmed.contains(p),
                last: self.activity.last(p).unwrap_or(now),
            })
            .collect();
        for peer in keep::to_close(&peers, self.max_peers, now) {
            tracing::trace!(%peer, "closing an idle connection the node does not need");
            metrics::counter!(m::CONNECTIONS_TRIMMED).increment(1);
            self.trimmed.insert(peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Whether the node is alone: no connection, or no other live member in its cores.
    fn alone(&self) -> bool {
        self.connected.is_empty() || self.core.isolated()
    }

    /// Runs a rejoin round if the node is alone and the backoff allows (see `rejoin`):
    /// dials the bootstrap addresses and some last-known peers, and bootstraps the core
    /// through those already connected.
    fn heal(&mut self) {
        if !self.alone() {
            if self.rejoin.active() {
                tracing::info!("no longer alone; rejoin rounds stop");
            }
            self.rejoin.reset();
            return;
        }
        if self.bootstrap.is_empty() && self.known.is_empty() {
            return;
        }
        let jitter = self.jitter.unit_f64();
        if !self.rejoin.due(std::time::Instant::now(), jitter) {
            return;
        }
        metrics::counter!(m::REJOIN_ROUNDS).increment(1);
        let mut through = Vec::new();
        for addr in self.bootstrap.clone() {
            match rejoin::peer_of(&addr) {
                Some(p) if self.connected.contains_key(&p) => through.push(p),
                _ => {
                    if let Err(e) = self.swarm.dial(addr.clone()) {
                        tracing::debug!(%addr, %e, "cannot dial bootstrap address");
                    }
                }
            }
        }
        let mut peers: Vec<libp2p::PeerId> = Vec::new();
        for a in &self.known {
            if let Some(p) = rejoin::peer_of(a)
                && !peers.contains(&p)
                && p != self.local_libp2p
            {
                peers.push(p);
            }
        }
        let picked = self
            .jitter
            .sample_indices(peers.len(), REJOIN_DIALS_PER_ROUND.min(peers.len()));
        for i in picked {
            let p = peers[i];
            if self.connected.contains_key(&p) {
                through.push(p);
                continue;
            }
            let addrs: Vec<Multiaddr> = self
                .known
                .iter()
                .filter(|a| rejoin::peer_of(a) == Some(p))
                .map(strip_p2p)
                .collect();
            let _ = self
                .swarm
                .dial(DialOpts::peer_id(p).addresses(addrs).build());
        }
        tracing::debug!(
            connected = self.connected.len(),
            through = through.len(),
            "alone: rejoin round"
        );
        self.bootstrap_through(through);
    }

    /// Hands the core a bootstrap command through `peers` (connected peers).
    fn bootstrap_through(&mut self, peers: Vec<libp2p::PeerId>) {
        let peers: Vec<PeerId> = peers.iter().filter_map(from_libp2p).collect();
        if peers.is_empty() {
            return;
        }
        if let Some(cmd) = P::bootstrap_command(peers) {
            self.with_core(|core, cx| core.handle_command(cx, cmd));
        }
    }

    /// Whether `peer`, reached at `remote`, is one the rejoin rounds look for: a bootstrap
    /// address or a last-known peer.
    fn is_rejoin_target(&self, peer: &libp2p::PeerId, remote: &Multiaddr) -> bool {
        let plain = strip_p2p(remote);
        self.bootstrap
            .iter()
            .any(|b| rejoin::peer_of(b).map_or(strip_p2p(b) == plain, |p| p == *peer))
            || self.known.iter().any(|a| rejoin::peer_of(a) == Some(*peer))
    }

    /// Refreshes the last-known peers from the connected ones and writes them to the data
    /// dir if they changed (in the blocking pool: the write syncs). A node that is alone
    /// keeps the list it had: those are the peers to look for.
    fn save_known_peers(&mut self) {
        self.known_saved_at = std::time::Instant::now();
        if self.connected.is_empty() {
            return;
        }
        let mut fresh: Vec<Multiaddr> = Vec::new();
        let mut n = 0;
        for p in self.connected.keys() {
            if n >= MAX_KNOWN_PEERS {
                break;
            }
            let addrs = self.dial_addrs(p);
            if addrs.is_empty() {
                continue;
            }
            n += 1;
            fresh.extend(
                addrs
                    .into_iter()
                    .take(KNOWN_ADDRS_PER_PEER)
                    .map(|a| a.with(AddrProto::P2p(*p))),
            );
        }
        // Peers known before and not connected now fill the rest (they may come back).
        for a in &self.known {
            let Some(p) = rejoin::peer_of(a) else {
                continue;
            };
            if self.connected.contains_key(&p) || fresh.contains(a) {
                continue;
            }
            if !fresh.iter().any(|f| rejoin::peer_of(f) == Some(p)) {
                if n >= MAX_KNOWN_PEERS {
                    continue;
                }
                n += 1;
            }
            fresh.push(a.clone());
        }
        self.known = fresh;
        if self.known == self.known_saved {
            return;
        }
        self.known_saved = self.known.clone();
        let Some(file) = self.known_file.clone() else {
            return;
        };
        let text = self
            .known
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        tokio::task::spawn_blocking(move || {
            if let Err(e) = crate::datadir::write_private(&file, text.as_bytes()) {
                tracing::warn!(%e, "cannot save the last-known peers");
            }
        });
    }

    fn on_request(&mut self, req: Request<P>) -> Option<oneshot::Sender<()>> {
        match req {
            Request::Command(cmd) => self.with_core(|core, cx| core.handle_command(cx, cmd)),
            Request::Call { id, cmd, reply } => {
                if self.waiters.len() >= MAX_WAITERS {
                    // Dropping `reply` tells the caller the node is overloaded.
                    return None;
                }
                self.waiters.insert(id, Waiter { tx: reply });
                self.with_core(|core, cx| core.handle_command(cx, cmd));
            }
            Request::Inspect(job) => {
                let st = self.status();
                job(&mut self.core, &st);
            }
            Request::Dial(addr, reply) => {
                let r = self.swarm.dial(addr).map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Request::Shutdown(reply) => return Some(reply),
        }
        None
    }

    /// Runs the driver until shutdown is requested or every handle is dropped.
    pub(crate) async fn run(mut self) {
        let recorder = self.recorder.clone();
        metrics::with_local_recorder(&*recorder, || {
            self.traffic = Channel::ALL.into_iter().map(Traffic::register).collect();
            // Shown from the start, so that "none refused" reads as 0 rather than absent.
            for reason in ["queue", "per_peer"] {
                metrics::counter!(m::STREAMS_REFUSED, "reason" => reason).absolute(0);
            }
            metrics::counter!(m::CONNECTIONS_DENIED, "reason" => "per_ip").absolute(0);
            for ch in Channel::ALL {
                metrics::counter!(m::RATE_LIMITED, "protocol" => ch.name()).absolute(0);
            }
            self.with_core(|core, cx| core.handle_start(cx));
            // The first rejoin round: dial the bootstrap addresses and last-known peers.
            self.heal();
        });
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        let mut datagram = [0u8; wire::MAX_DATAGRAM + 1];
        let shutdown = loop {
            // Back-pressure: with the commit pipeline full, no input is taken until the
            // commit in flight reports.
            if self.commits.is_full()
                && let Some((id, task)) = self.committing.take()
            {
                let done = task.await;
                metrics::with_local_recorder(&*recorder, || self.on_committed(id, done));
                continue;
            }
            let next = self.timers.peek().map(|Reverse((at, _))| *at);
            let wake = next.map(|at| {
                tokio::time::Instant::from_std(
                    self.epoch + Duration::from_micros(at.0.saturating_sub(self.epoch_micros)),
                )
            });
            let sleep = async {
                match wake {
                    Some(w) => tokio::time::sleep_until(w).await,
                    None => std::future::pending().await,
                }
            };
            let committing = &mut self.committing;
            let committed = async {
                match committing {
                    Some((id, task)) => (*id, task.await),
                    None => std::future::pending().await,
                }
            };
            enum In<P: NetCore> {
                Swarm(Box<SwarmEvent<BehaviourEvent>>),
                Req(Option<Request<P>>),
                Stream(StreamEvent),
                Committed(
                    u64,
                    Result<(Vec<Change>, Result<(), String>), tokio::task::JoinError>,
                ),
                Datagram(std::io::Result<(usize, std::net::SocketAddr)>),
                Wake,
                Tick,
            }
            let input: In<P> = tokio::select! {
                (id, done) = committed => In::Committed(id, done),
                ev = self.swarm.select_next_some() => In::Swarm(Box::new(ev)),
                Some(ev) = self.stream_rx.recv() => In::Stream(ev),
                req = self.requests.recv() => In::Req(req),
                r = self.probes.recv(&mut datagram) => In::Datagram(r),
                _ = sleep => In::Wake,
                _ = tick.tick() => In::Tick,
            };
            let stop = metrics::with_local_recorder(&*recorder, || {
                let stop = match input {
                    In::Swarm(ev) => {
                        self.on_swarm_event(*ev);
                        None
                    }
                    In::Req(Some(r)) => self.on_request(r).map(Some),
                    In::Req(None) => Some(None),
                    In::Stream(ev) => {
                        // Take what else arrived too before looking at other inputs.
                        self.on_stream_event(ev);
                        for _ in 1..STREAM_EVENTS_PER_TURN {
                            match self.stream_rx.try_recv() {
                                Ok(ev) => self.on_stream_event(ev),
                                Err(_) => break,
                            }
                        }
                        // The frames' answers leave together.
                        self.end_inputs();
                        None
                    }
                    In::Committed(id, done) => {
                        self.committing = None;
                        self.on_committed(id, done);
                        None
                    }
                    In::Datagram(Err(e)) => {
                        tracing::debug!(%e, "probe socket receive failed");
                        metrics::counter!(m::PROBE_DATAGRAMS, "outcome" => "receive_failed")
                            .increment(1);
                        None
                    }
                    In::Datagram(Ok((n, src))) => {
                        self.on_datagram(&datagram[..n], src);
                        for _ in 1..probe::DATAGRAMS_PER_TURN {
                            match self.probes.try_recv(&mut datagram) {
                                Some((n, src)) => self.on_datagram(&datagram[..n], src),
                                None => break,
                            }
                        }
                        None
                    }
                    In::Wake => None,
                    In::Tick => {
                        self.housekeeping();
                        None
                    }
                };
                self.fire_due_timers();
                self.run_loopback();
                stop
            });
            if let Some(s) = stop {
                break s;
            }
        };
        self.leave().await;
        self.drain_commits().await;
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    /// Graceful leave: the core hands off what it must, and the driver keeps serving until
    /// those frames are delivered (bounded by a grace period).
    async fn leave(&mut self) {
        const GRACE: Duration = Duration::from_secs(3);
        let recorder = self.recorder.clone();
        let Some(cmd) = P::leave_command() else {
            return;
        };
        metrics::with_local_recorder(&*recorder, || {
            self.with_core(|core, cx| core.handle_command(cx, cmd));
        });
        /// How often the grace loop looks at the stream writers' queues.
        const POLL: Duration = Duration::from_millis(20);
        let deadline = tokio::time::Instant::now() + GRACE;
        while self.pending.values().any(|q| !q.frames.is_empty()) || self.streams.writing() {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let until = deadline.min(now + POLL);
            if let Ok(ev) = tokio::time::timeout_at(until, self.swarm.select_next_some()).await {
                metrics::with_local_recorder(&*recorder, || self.on_swarm_event(ev));
            }
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
                // The probe addresses go second: gossip keeps the first `max_addrs` of a
                // record, and the first is what `peerlab members` shows. No `/p2p/<id>`:
                // the record names its peer already, and every copy of it, sent a dozen
                // times by every member while a group forms, would carry the id once per
                // address (52 bytes each).
                let mut own = self.listen_addrs.clone();
                let probes = self.probes.advertised(&self.listen_addrs);
                own.splice(1.min(own.len())..1.min(own.len()), probes);
                let addrs = own.into_iter().map(|a| a.to_string()).collect();
                if let Some(cmd) = P::address_command(addrs) {
                    self.with_core(|core, cx| core.handle_command(cx, cmd));
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                if self.strikes.is_banned(&peer_id, std::time::Instant::now()) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let remote = endpoint.get_remote_address().clone();
                if endpoint.is_dialer() {
                    self.remember(peer_id, strip_p2p(&remote), Source::Confirmed);
                }
                let c = self.connected.entry(peer_id).or_default();
                c.conns.push((connection_id, remote.clone()));
                c.dialled |= endpoint.is_dialer();
                self.activity.touch(peer_id, std::time::Instant::now());
                self.trimmed.remove(&peer_id);
                self.flush_pending(peer_id);
                metrics::gauge!(m::CONNECTED_PEERS).set(self.connected.len() as f64);
                // While alone, a connection to a peer the rejoin rounds look for (either
                // direction: it may have found us first) bootstraps the core through it.
                if self.rejoin.active() && self.is_rejoin_target(&peer_id, &remote) {
                    self.bootstrap_through(vec![peer_id]);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.connected.remove(&peer_id);
                    self.pending.retain(|(p, _), _| *p != peer_id);
                    // Dropping a writer's sender ends its task (its stream is gone anyway).
                    self.streams.close_writers(peer_id);
                    metrics::gauge!(m::CONNECTED_PEERS).set(self.connected.len() as f64);
                    // A connection the manager closed says nothing about the peer.
                    let trimmed = self.trimmed.remove(&peer_id);
                    if !trimmed && let Some(p) = from_libp2p(&peer_id) {
                        self.with_core(|core, cx| core.handle_peer_down(cx, p));
                    }
                } else if let Some(c) = self.connected.get_mut(&peer_id) {
                    c.conns.retain(|(id, _)| *id != connection_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "dial failed");
                if let libp2p::swarm::DialError::Transport(failed) = &error {
                    self.address_book
                        .forget_failed(&peer, failed.iter().map(|(a, _)| a));
                }
                if !self.connected.contains_key(&peer) {
                    // Frames that waited for this connection cannot be delivered.
                    self.pending.retain(|(p, _), _| *p != peer);
                }
                if !self.connected.contains_key(&peer)
                    && let Some(p) = from_libp2p(&peer)
                {
                    self.with_core(|core, cx| core.handle_peer_down(cx, p));
                }
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
                ..
            }) => {
                for a in info.listen_addrs {
                    if !a.iter().any(|p| {
                        matches!(p, AddrProto::Ip4(ip) if ip.is_unspecified())
                            || matches!(p, AddrProto::Ip6(ip) if ip.is_unspecified())
                    }) {
                        self.remember(peer_id, strip_p2p(&a), Source::Confirmed);
                    }
                }
                self.on_agent(peer_id, connection_id, info.agent_version);
            }
            BehaviourEvent::Streams(streams::Event::Inbound { peer, ch, stream }) => {
                self.on_incoming(ch, peer, stream)
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(c) = self.connected.get_mut(&peer) {
                    c.rtt = Some(rtt);
                }
            }
            _ => {}
        }
    }

    /// Records a peer's agent string. A new boot nonce on a connection means the peer
    /// restarted with the same identity: its other connections lead to the old process,
    /// which cannot answer, so they are closed and the writers on them restarted.
    fn on_agent(&mut self, peer: libp2p::PeerId, on: ConnectionId, agent: String) {
        let Some(c) = self.connected.get_mut(&peer) else {
            return;
        };
        let boot = boot_nonce(&agent).map(str::to_owned);
        let restarted = boot.is_some() && c.boot.is_some() && c.boot != boot;
        c.boot = boot;
        c.agent = Some(agent);
        if !restarted {
            return;
        }
        let stale: Vec<ConnectionId> = c
            .conns
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != on)
            .collect();
        tracing::debug!(%peer, stale = stale.len(), "peer restarted; closing its old connections");
        metrics::counter!(m::PEER_RESTARTS).increment(1);
        for id in stale {
            self.swarm.close_connection(id);
        }
        self.streams.close_writers(peer);
    }
}
