//! The simulator's event loop and network model ([`Sim`]).

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::Duration;

use peerlab_overlay::{Context, Instant, Message, Offence, Outbox, Output, PeerId, Protocol, Rng};

use crate::{NetStats, NodeStats, SimConfig};

/// An action an experiment schedules at a virtual time.
type Action<P> = Box<dyn FnOnce(&mut Sim<P>)>;

/// What can happen at an instant.
enum Ev<P: Protocol> {
    /// A message reaches the receiver's downlink queue (only used when it is bandwidth-limited).
    Arrive {
        to: usize,
        from: PeerId,
        msg: P::Message,
        bytes: usize,
    },
    /// A message is handed to the receiving core.
    Deliver {
        to: usize,
        from: PeerId,
        msg: P::Message,
        bytes: usize,
    },
    /// A core's timer fires.
    Timer { node: usize, timer: P::Timer },
    /// A core learns that a peer is unreachable.
    PeerDown { node: usize, peer: PeerId },
    /// An experiment's action runs.
    Action(Action<P>),
}

struct Queued<P: Protocol> {
    at: Instant,
    seq: u64,
    ev: Ev<P>,
}

impl<P: Protocol> PartialEq for Queued<P> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<P: Protocol> Eq for Queued<P> {}
impl<P: Protocol> PartialOrd for Queued<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<P: Protocol> Ord for Queued<P> {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Node<P> {
    peer: PeerId,
    core: P,
    rng: Rng,
    up_bps: Option<u64>,
    down_bps: Option<u64>,
    upload_free: Instant,
    download_free: Instant,
    partition: u32,
    stats: NodeStats,
}

/// A [`Sim`] drives any number of cores that follow the sans-IO contract
/// ([`peerlab_overlay::Protocol`]) with virtual time and seeded randomness. Events — message
/// deliveries, timers, peer-down notices and scheduled experiment actions — sit in one
/// priority queue ordered by (time, sequence number), so ties break in insertion order and a
/// seed replays a run byte for byte.
///
/// # Network model
///
/// - **Latency** per link, constant for the run, drawn from [`Latency`](crate::Latency) by hashing the pair
///   of peers with the seed (so a link is FIFO and needs no stored state).
/// - **Bandwidth**: each node has an upload and a download FIFO queue. A message of `B`
///   bytes (its real frame length, [`Message::wire_len`]) occupies the sender's uplink for
///   `B / upload_bps`, travels for the link latency, then occupies the receiver's downlink
///   for `B / download_bps`.
/// - **Loss**: each message is lost independently with probability `loss`.
/// - **Partitions**: nodes in different partition groups cannot reach each other.
/// - **Crashes**: [`Sim::crash`] removes a node without a word; messages in flight to it
///   are dropped and, if `unreachable_notice` is set, senders learn of it as a peer-down.
///
/// Churn schedules live in [`churn`](crate::churn).
pub struct Sim<P: Protocol> {
    config: SimConfig,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Queued<P>>,
    /// Slots are never reused, so a queued event naming a slot can tell a crashed node
    /// (its slot is `None`) from a later node that reuses the same peer id.
    slots: Vec<Option<Node<P>>>,
    /// Live peer → slot. Lookup only, never iterated, so its order cannot leak into results.
    #[allow(clippy::disallowed_types)]
    index: std::collections::HashMap<PeerId, usize, KeyPrefixHash>,
    alive: usize,
    net_rng: Rng,
    exp_rng: Rng,
    link_salt: u64,
    outbox: Outbox<P::Message, P::Timer, P::Event>,
    scratch: Vec<Output<P::Message, P::Timer, P::Event>>,
    events: Vec<(Instant, PeerId, P::Event)>,
    offences: Vec<(Instant, PeerId, PeerId, Offence)>,
    stats: NetStats,
    processed: u64,
    /// Pairs of peers that have exchanged a message (smaller id first), once
    /// [`Sim::track_contacts`] turned counting on.
    contacts: Option<BTreeSet<(PeerId, PeerId)>>,
}

impl<P: Protocol> Sim<P> {
    /// A simulator with no nodes, at time zero.
    pub fn new(config: SimConfig) -> Self {
        let mut master = Rng::seed(config.seed);
        let net_rng = master.fork();
        let exp_rng = master.fork();
        let link_salt = master.next_u64();
        Sim {
            config,
            now: Instant::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            index: Default::default(),
            alive: 0,
            net_rng,
            exp_rng,
            link_salt,
            outbox: Outbox::new(),
            scratch: Vec::new(),
            events: Vec::new(),
            offences: Vec::new(),
            stats: NetStats::default(),
            processed: 0,
            contacts: None,
        }
    }

    /// Counts, from now on, the pairs of peers that exchange messages: per node in
    /// [`NodeStats::contacts`](crate::NodeStats) and per message kind that made the first
    /// contact in `KindStats::first_contacts`. A node holds a transport connection per such
    /// pair until it closes idle ones, so this is the connection count of a run without
    /// idle timeouts. Off by default: it keeps one entry per pair.
    pub fn track_contacts(&mut self) {
        self.contacts.get_or_insert_with(BTreeSet::new);
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The experiment's own random stream (independent of the network's and the cores').
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.exp_rng
    }

    /// The configuration in force.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Adds a node and starts it (`handle_start`) at the current time. Returns `false`, and
    /// drops `core`, if a live node already has this peer id.
    pub fn add_node(&mut self, peer: PeerId, core: P) -> bool {
        if self.index.contains_key(&peer) {
            return false;
        }
        let rng = Rng::seed(self.net_rng.next_u64());
        let slot = self.slots.len();
        self.slots.push(Some(Node {
            peer,
            core,
            rng,
            up_bps: self.config.upload_bps,
            down_bps: self.config.download_bps,
            upload_free: self.now,
            download_free: self.now,
            partition: 0,
            stats: NodeStats::default(),
        }));
        self.index.insert(peer, slot);
        self.alive += 1;
        self.with_core(slot, |core, cx| core.handle_start(cx));
        true
    }

    /// Removes a node at once, without any goodbye, and returns its core.
    pub fn crash(&mut self, peer: PeerId) -> Option<P> {
        let slot = self.index.remove(&peer)?;
        self.alive -= 1;
        self.slots[slot].take().map(|n| n.core)
    }

    /// Hands a command to a live node's core now. Returns `false` if the peer is not alive.
    pub fn command(&mut self, peer: PeerId, cmd: P::Command) -> bool {
        match self.index.get(&peer) {
            Some(&slot) => {
                self.with_core(slot, |core, cx| core.handle_command(cx, cmd));
                true
            }
            None => false,
        }
    }

    /// Runs `action` when virtual time reaches `at` (at once, in order, if `at` is past).
    pub fn schedule(&mut self, at: Instant, action: impl FnOnce(&mut Sim<P>) + 'static) {
        let at = at.max(self.now);
        self.push(at, Ev::Action(Box::new(action)));
    }

    /// Whether `peer` is alive.
    pub fn is_alive(&self, peer: &PeerId) -> bool {
        self.index.contains_key(peer)
    }

    /// Number of live nodes.
    pub fn len(&self) -> usize {
        self.alive
    }

    /// Whether no node is alive.
    pub fn is_empty(&self) -> bool {
        self.alive == 0
    }

    /// A live node's core.
    pub fn node(&self, peer: &PeerId) -> Option<&P> {
        let slot = *self.index.get(peer)?;
        self.slots[slot].as_ref().map(|n| &n.core)
    }

    /// A live node's core, mutably (for test set-up; protocol input should go through
    /// [`Sim::command`] so that outputs are processed).
    pub fn node_mut(&mut self, peer: &PeerId) -> Option<&mut P> {
        let slot = *self.index.get(peer)?;
        self.slots[slot].as_mut().map(|n| &mut n.core)
    }

    /// Live peers in the order they were added.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.slots.iter().flatten().map(|n| n.peer)
    }

    /// Live peers and their cores, in the order they were added.
    pub fn cores(&self) -> impl Iterator<Item = (PeerId, &P)> + '_ {
        self.slots.iter().flatten().map(|n| (n.peer, &n.core))
    }

    /// Takes the events cores emitted since the last call, in emission order.
    pub fn take_events(&mut self) -> Vec<(Instant, PeerId, P::Event)> {
        std::mem::take(&mut self.events)
    }

    /// Takes the offences cores reported since the last call: `(time, reporter, offender,
    /// offence)`, in report order.
    pub fn take_offences(&mut self) -> Vec<(Instant, PeerId, PeerId, Offence)> {
        std::mem::take(&mut self.offences)
    }

    /// Sets a node's upload and download bandwidth in bytes per second (`None`: unlimited).
    pub fn set_bandwidth(&mut self, peer: PeerId, up_bps: Option<u64>, down_bps: Option<u64>) {
        if let Some(n) = self.live_mut(&peer) {
            n.up_bps = up_bps.filter(|&b| b > 0);
            n.down_bps = down_bps.filter(|&b| b > 0);
        }
    }

    /// Sets the message-loss probability for messages sent from now on.
    pub fn set_loss(&mut self, p: f64) {
        self.config.loss = p.clamp(0.0, 1.0);
    }

    /// Puts `peer` into partition `group`; only nodes in the same group can communicate.
    /// Every node starts in group 0.
    pub fn set_partition(&mut self, peer: PeerId, group: u32) {
        if let Some(n) = self.live_mut(&peer) {
            n.partition = group;
        }
    }

    /// Puts every node back into group 0.
    pub fn heal_partitions(&mut self) {
        for n in self.slots.iter_mut().flatten() {
            n.partition = 0;
        }
    }

    /// Network-wide traffic counters.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// One live node's traffic counters.
    pub fn node_stats(&self, peer: &PeerId) -> Option<NodeStats> {
        let slot = *self.index.get(peer)?;
        self.slots[slot].as_ref().map(|n| n.stats)
    }

    /// Number of events processed so far.
    pub fn events_processed(&self) -> u64 {
        self.processed
    }

    /// Number of events waiting in the queue.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Time of the next queued event, if any.
    pub fn next_event_at(&self) -> Option<Instant> {
        self.queue.peek().map(|q| q.at)
    }

    /// Processes every event up to and including `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Instant) {
        while self.queue.peek().is_some_and(|q| q.at <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs until the queue is empty or the next event is after `limit`. Returns whether
    /// the queue emptied (cores with periodic timers never go idle).
    pub fn run_until_idle(&mut self, limit: Instant) -> bool {
        while self.queue.peek().is_some_and(|q| q.at <= limit) {
            self.step();
        }
        self.queue.is_empty()
    }

    /// Runs until `done(self)` holds, checking after every event, or until time passes
    /// `deadline`. Returns whether the condition was met.
    pub fn run_until_cond(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&Self) -> bool,
    ) -> bool {
        loop {
            if done(self) {
                return true;
            }
            match self.queue.peek() {
                Some(q) if q.at <= deadline => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(deadline);
                    return done(self);
                }
            }
        }
    }

    /// Processes the next event. Returns `false` if the queue was empty.
    pub fn step(&mut self) -> bool {
        let Some(Queued { at, ev, .. }) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(at);
        self.processed += 1;
        match ev {
            Ev::Arrive {
                to,
                from,
                msg,
                bytes,
            } => {
                let Some(n) = self.slots[to].as_mut() else {
                    self.stats.on_drop(msg.kind());
                    return true;
                };
                let start = n.download_free.max(self.now);
                let done = start + transmit_time(bytes, n.down_bps);
                n.download_free = done;
                self.push(
                    done,
                    Ev::Deliver {
                        to,
                        from,
                        msg,
                        bytes,
                    },
                );
            }
            Ev::Deliver {
                to,
                from,
                msg,
                bytes,
            } => match self.slots[to].as_mut() {
                Some(n) => {
                    n.stats.received += 1;
                    n.stats.received_bytes += bytes as u64;
                    self.stats.on_deliver(msg.kind(), bytes);
                    self.with_core(to, |core, cx| core.handle_message(cx, from, msg));
                }
                None => self.stats.on_drop(msg.kind()),
            },
            Ev::Timer { node, timer } => {
                if self.slots[node].is_some() {
                    self.with_core(node, |core, cx| core.handle_timer(cx, timer));
                }
            }
            Ev::PeerDown { node, peer } => {
                if self.slots[node].is_some() {
                    self.with_core(node, |core, cx| core.handle_peer_down(cx, peer));
                }
            }
            Ev::Action(action) => action(self),
        }
        true
    }

    fn push(&mut self, at: Instant, ev: Ev<P>) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn live_mut(&mut self, peer: &PeerId) -> Option<&mut Node<P>> {
        let slot = *self.index.get(peer)?;
        self.slots[slot].as_mut()
    }

    /// Calls one input method of the core in `slot` and processes what it produced.
    fn with_core(
        &mut self,
        slot: usize,
        f: impl FnOnce(&mut P, &mut Context<'_, P::Message, P::Timer, P::Event>),
    ) {
        let Some(node) = self.slots[slot].as_mut() else {
            return;
        };
        {
            let mut cx = Context::new(self.now, &mut node.rng, &mut self.outbox);
            f(&mut node.core, &mut cx);
        }
        if self.outbox.is_empty() {
            return;
        }
        let mut outputs = std::mem::take(&mut self.scratch);
        outputs.extend(self.outbox.drain());
        for out in outputs.drain(..) {
            match out {
                Output::Send { to, msg } => self.send(slot, to, msg),
                Output::Timer { at, timer } => {
                    self.push(at.max(self.now), Ev::Timer { node: slot, timer })
                }
                Output::Offence {
                    peer: offender,
                    offence,
                } => {
                    self.stats.offences += 1;
                    if self.offences.len() < self.config.event_buffer_limit {
                        let peer = self.slots[slot].as_ref().map(|n| n.peer).expect("live");
                        self.offences.push((self.now, peer, offender, offence));
                    }
                }
                Output::Event(e) => {
                    if self.events.len() < self.config.event_buffer_limit {
                        let peer = self.slots[slot].as_ref().map(|n| n.peer).expect("live");
                        self.events.push((self.now, peer, e));
                    } else {
                        self.stats.events_overflowed += 1;
                    }
                }
            }
        }
        self.scratch = outputs;
    }

    fn send(&mut self, from_slot: usize, to: PeerId, msg: P::Message) {
        let bytes = msg.wire_len();
        let kind = msg.kind();
        let now = self.now;
        let Some(sender) = self.slots[from_slot].as_mut() else {
            return;
        };
        let from = sender.peer;
        let from_partition = sender.partition;
        sender.stats.sent += 1;
        sender.stats.sent_bytes += bytes as u64;
        let start = sender.upload_free.max(now);
        let departed = start + transmit_time(bytes, sender.up_bps);
        sender.upload_free = departed;
        self.stats.on_send(kind, bytes);

        let dest = self.index.get(&to).copied();
        let Some(to_slot) = dest else {
            self.stats.on_drop(kind);
            if let Some(delay) = self.config.unreachable_notice {
                self.push(
                    now + delay,
                    Ev::PeerDown {
                        node: from_slot,
                        peer: to,
                    },
                );
            }
            return;
        };
        let receiver = self.slots[to_slot]
            .as_ref()
            .expect("indexed slots are live");
        if receiver.partition != from_partition
            || (self.config.loss > 0.0 && self.net_rng.chance(self.config.loss))
        {
            self.stats.on_drop(kind);
            return;
        }
        let limited_download = receiver.down_bps.is_some();
        if let Some(pairs) = &mut self.contacts
            && pairs.insert((from.min(to), from.max(to)))
        {
            self.stats.on_first_contact(kind);
            for slot in [from_slot, to_slot] {
                if let Some(n) = self.slots[slot].as_mut() {
                    n.stats.contacts += 1;
                }
            }
        }
        let arrive = departed + self.link_latency(&from, &to);
        if limited_download {
            self.push(
                arrive,
                Ev::Arrive {
                    to: to_slot,
                    from,
                    msg,
                    bytes,
                },
            );
        } else {
            self.push(
                arrive,
                Ev::Deliver {
                    to: to_slot,
                    from,
                    msg,
                    bytes,
                },
            );
        }
    }

    /// The fixed latency of the link `a → b`, a pure function of the seed and the pair.
    fn link_latency(&self, a: &PeerId, b: &PeerId) -> Duration {
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        // Two mixing rounds over 8 bytes of each key: keys are uniformly random (or, for
        // synthetic ids, distinct in their first 8 bytes), so this separates every pair.
        let word =
            |p: &PeerId| u64::from_le_bytes(p.public_key()[..8].try_into().expect("8 bytes"));
        let h = splitmix64(splitmix64(self.link_salt ^ word(x)) ^ word(y).rotate_left(17));
        let u = (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        self.config.latency.sample(u)
    }
}

/// Hashes a peer id by its first 8 key bytes. Ed25519 public keys (and synthetic ids, whose
/// first 8 bytes are a distinct counter mixed below) are already spread out, so SipHash's
/// cost buys nothing on the simulator's hottest lookup. Peer ids here come from the
/// experiment, never from an adversary.
#[derive(Clone, Copy, Default)]
struct KeyPrefixHash;

impl std::hash::BuildHasher for KeyPrefixHash {
    type Hasher = KeyPrefixHasher;
    fn build_hasher(&self) -> KeyPrefixHasher {
        KeyPrefixHasher(0)
    }
}

struct KeyPrefixHasher(u64);

impl std::hash::Hasher for KeyPrefixHasher {
    fn finish(&self) -> u64 {
        splitmix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(word);
    }
    fn write_usize(&mut self, _len: usize) {
        // The array length prefix is the same for every key.
    }
}

/// Time to push `bytes` through a link of `bps` bytes per second (zero when unlimited).
fn transmit_time(bytes: usize, bps: Option<u64>) -> Duration {
    match bps {
        Some(bps) => Duration::from_nanos(((bytes as u128 * 1_000_000_000) / bps as u128) as u64),
        None => Duration::ZERO,
    }
}

/// SplitMix64's finaliser: a fast, well-mixed 64-bit hash step.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
