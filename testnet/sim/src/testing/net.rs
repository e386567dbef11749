//! [`Net`]: a handful of cores, a message queue and a timer table in virtual time.

use std::collections::BTreeMap;
use std::time::Duration;

use peerlab_overlay::{
    CodecError, Context, Cx, Instant, Message, Offence, Outbox, Output, PeerId, Protocol, Rng,
    codec,
};

use crate::NetStats;

/// Default bound on the events [`Net`] processes at one instant, and in one
/// [`drive`](Net::drive). Protocol tests need a few thousand; a hundred thousand events
/// without time moving on, or without the network going quiet, is a livelock (two cores
/// answering each other at zero latency forever, a timer re-armed for `now`).
pub const DEFAULT_STEP_LIMIT: u64 = 100_000;

/// One message a core handed to the network, as [`Net`] logs it (see
/// [`Net::with_send_log`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Sent<M> {
    /// When it was sent.
    pub at: Instant,
    /// The sender.
    pub from: PeerId,
    /// The destination (not necessarily a node of the net).
    pub to: PeerId,
    /// The message, as the receiver gets it (after the codec round trip, if on).
    pub msg: M,
}

/// What a queued entry does when its time comes.
enum Entry<P: Protocol> {
    /// Hands `msg`, sent at `at`, to `to`'s core.
    Deliver {
        at: Instant,
        from: PeerId,
        to: PeerId,
        msg: P::Message,
    },
    /// Tells `node` that `peer` is unreachable.
    PeerDown { node: PeerId, peer: PeerId },
    /// Fires one of `node`'s timers.
    Timer { node: PeerId, timer: P::Timer },
}

/// At one instant, network input goes before timers: a zero-latency network drains before
/// the clock's next deadline is served, as a real network's queued packets are read before
/// a timer that falls due at the same moment.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Lane {
    Network,
    Timer,
}

/// Why a node's traffic is lost, and until when.
#[derive(Clone, Copy, Default)]
struct Fault {
    /// Messages the node sends are lost while `now` is before this.
    muted_until: Option<Instant>,
    /// Messages to the node are lost while `now` is before this.
    deaf_until: Option<Instant>,
}

struct Node<P> {
    core: P,
    rng: Rng,
}

/// A test's verdict on each message in flight (see [`Net::set_filter`]).
type Filter<M> = Box<dyn FnMut(&Sent<M>) -> bool>;

/// A test's adversary watching the wire (see [`Net::set_tap`]).
type Tap<M> = Box<dyn FnMut(&Sent<M>) -> Vec<(PeerId, PeerId, M)>>;

/// A deterministic in-memory network of sans-IO cores for protocol tests.
///
/// Cores are keyed by [`PeerId`] and iterated in key order. Everything waits in one queue
/// ordered by (time, lane, sequence number): messages in flight (delivered after the
/// configured latency, zero by default) and the cores' timers. Time never passes on its
/// own: each [`step`](Net::step) jumps the clock to the next entry, so a test of a 30 s
/// protocol period costs the events it causes and nothing more.
///
/// - **Input:** [`add`](Net::add) starts a core; [`command`](Net::command),
///   [`deliver`](Net::deliver), [`deliver_frame`](Net::deliver_frame),
///   [`peer_down`](Net::peer_down) and [`with`](Net::with) hand it input at once and
///   queue what it produced.
/// - **Running:** [`step`](Net::step) processes one entry; [`run_for`](Net::run_for) and
///   [`advance_to`](Net::advance_to) everything up to a time; [`run_until`](Net::run_until)
///   until a condition holds or a deadline passes; [`drive`](Net::drive) until no message is
///   in flight. Each panics, naming the seed, when [`DEFAULT_STEP_LIMIT`] (or
///   [`with_step_limit`](Net::with_step_limit)) events pass at one instant, or in one
///   `drive`: a test that never settles fails instead of hanging.
/// - **Failures:** [`crash`](Net::crash) removes a core with its timers and its messages in
///   flight; [`mute`](Net::mute), [`deafen`](Net::deafen) and [`isolate`](Net::isolate)
///   lose a node's outgoing, incoming or all messages until a time;
///   [`slow_down`](Net::slow_down) delays every message to or from a node (an overloaded
///   host);
///   [`set_partition`](Net::set_partition) cuts the net into groups;
///   [`set_filter`](Net::set_filter) loses the messages a test picks. A lost message is
///   judged when it would be delivered, so a cut also loses what was in flight.
///   [`take_in_flight`](Net::take_in_flight) empties the wire at once.
/// - **Adversaries:** [`set_tap`](Net::set_tap) shows every message to the test just
///   before it is delivered, and delivers what the test answers first: an attacker that
///   reacts to what it sees on the wire.
/// - **Observation:** [`events`](Net::events) and [`offences`](Net::offences) capture every
///   `Output::Event` and `Output::Offence` with time and peer; [`sent`](Net::sent) logs
///   every message when [`with_send_log`](Net::with_send_log) is on; [`stats`](Net::stats)
///   counts messages and bytes per kind.
///
/// With the codec on (the default), every message is encoded with
/// [`peerlab_overlay::codec`] when sent and decoded again, so the receiver gets exactly
/// what the wire would give it; a message the codec refuses panics the test, since a real
/// node could not send it. Messages to a peer that is not in the net are logged, counted as
/// dropped and, with [`with_unreachable_notice`](Net::with_unreachable_notice), answered by
/// a peer-down notice: such peers can be played by the test itself through
/// [`deliver`](Net::deliver).
pub struct Net<P: Protocol> {
    seed: u64,
    now: Instant,
    rng: Rng,
    nodes: BTreeMap<PeerId, Node<P>>,
    queue: BTreeMap<(Instant, Lane, u64), Entry<P>>,
    seq: u64,
    in_flight: usize,
    latency: Duration,
    codec: bool,
    unreachable_notice: Option<Duration>,
    step_limit: u64,
    /// Events processed at `instant` so far (the livelock bound).
    instant: Instant,
    at_instant: u64,
    faults: BTreeMap<PeerId, Fault>,
    /// Delay added to every message to or from a peer (see [`Net::slow_down`]).
    slow: BTreeMap<PeerId, Duration>,
    partitions: BTreeMap<PeerId, u32>,
    filter: Option<Filter<P::Message>>,
    tap: Option<Tap<P::Message>>,
    events: Vec<(Instant, PeerId, P::Event)>,
    offences: Vec<(Instant, PeerId, PeerId, Offence)>,
    log: Option<Vec<Sent<P::Message>>>,
    stats: NetStats,
    processed: u64,
}

impl<P: Protocol> Net<P> {
    /// An empty net at time zero. `seed` seeds every core's random source (see
    /// [`add`](Net::add)) and is named in every panic, so a failure can be replayed.
    pub fn new(seed: u64) -> Self {
        Net {
            seed,
            now: Instant::ZERO,
            rng: Rng::seed(seed),
            nodes: BTreeMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            in_flight: 0,
            latency: Duration::ZERO,
            codec: true,
            unreachable_notice: None,
            step_limit: DEFAULT_STEP_LIMIT,
            instant: Instant::ZERO,
            at_instant: 0,
            faults: BTreeMap::new(),
            slow: BTreeMap::new(),
            partitions: BTreeMap::new(),
            filter: None,
            tap: None,
            events: Vec::new(),
            offences: Vec::new(),
            log: None,
            stats: NetStats::default(),
            processed: 0,
        }
    }

    /// Every message takes `latency` to arrive (default zero: delivered at the instant it
    /// was sent, before any timer due then, in FIFO order).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Hands messages to the receiver as they were sent, without the codec round trip (for
    /// messages that deliberately cannot be encoded, or for speed).
    pub fn without_codec(mut self) -> Self {
        self.codec = false;
        self
    }

    /// Keeps every sent message in [`sent`](Net::sent).
    pub fn with_send_log(mut self) -> Self {
        self.log = Some(Vec::new());
        self
    }

    /// A sender to a peer that is not in the net hears `handle_peer_down` after `delay` (a
    /// refused connection); by default such messages vanish silently.
    pub fn with_unreachable_notice(mut self, delay: Duration) -> Self {
        self.unreachable_notice = Some(delay);
        self
    }

    /// Sets the livelock bound (see [`DEFAULT_STEP_LIMIT`]).
    pub fn with_step_limit(mut self, limit: u64) -> Self {
        self.step_limit = limit.max(1);
        self
    }

    // ---- the nodes -------------------------------------------------------------------

    /// Adds a core and starts it (`handle_start`) now, with a random source forked from the
    /// net's seed (so a node's randomness depends on the seed and the order of `add`s).
    ///
    /// # Panics
    ///
    /// If a node with this peer id is already in the net.
    pub fn add(&mut self, peer: PeerId, core: P) {
        let rng = self.rng.fork();
        self.add_with_rng(peer, core, rng);
    }

    /// Adds a core with the given random source and starts it now.
    ///
    /// # Panics
    ///
    /// If a node with this peer id is already in the net.
    pub fn add_with_rng(&mut self, peer: PeerId, core: P, rng: Rng) {
        assert!(
            !self.nodes.contains_key(&peer),
            "{peer:?} is already in the net (seed {})",
            self.seed
        );
        self.nodes.insert(peer, Node { core, rng });
        self.with(peer, |core, cx| core.handle_start(cx));
    }

    /// Removes a node at once and returns its core. Its timers never fire, and its messages
    /// in flight, to it and from it, are lost (its connections die with it). A core added
    /// later under the same peer id starts afresh.
    pub fn crash(&mut self, peer: PeerId) -> Option<P> {
        let node = self.nodes.remove(&peer)?;
        self.queue.retain(|_, e| match e {
            Entry::Deliver { from, to, .. } => *from != peer && *to != peer,
            Entry::PeerDown { node, .. } | Entry::Timer { node, .. } => *node != peer,
        });
        self.in_flight = self
            .queue
            .keys()
            .filter(|(_, lane, _)| *lane == Lane::Network)
            .count();
        Some(node.core)
    }

    /// Whether `peer` is a node of the net.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.nodes.contains_key(peer)
    }

    /// A node's core, if it is in the net.
    pub fn get(&self, peer: &PeerId) -> Option<&P> {
        self.nodes.get(peer).map(|n| &n.core)
    }

    /// A node's core.
    ///
    /// # Panics
    ///
    /// If `peer` is not in the net.
    pub fn node(&self, peer: &PeerId) -> &P {
        match self.nodes.get(peer) {
            Some(n) => &n.core,
            None => panic!("{peer:?} is not in the net (seed {})", self.seed),
        }
    }

    /// A node's core, mutably, for set-up and inspection. Input that produces output goes
    /// through [`with`](Net::with), so that the output is not lost.
    ///
    /// # Panics
    ///
    /// If `peer` is not in the net.
    pub fn node_mut(&mut self, peer: &PeerId) -> &mut P {
        let seed = self.seed;
        match self.nodes.get_mut(peer) {
            Some(n) => &mut n.core,
            None => panic!("{peer:?} is not in the net (seed {seed})"),
        }
    }

    /// The nodes' peer ids, in order.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.nodes.keys().copied()
    }

    /// The nodes and their cores, in peer id order.
    pub fn cores(&self) -> impl Iterator<Item = (PeerId, &P)> + '_ {
        self.nodes.iter().map(|(p, n)| (*p, &n.core))
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the net has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    // ---- input -----------------------------------------------------------------------

    /// Calls `f` with `peer`'s core and a context at the current time, then queues what the
    /// core produced. This is how a test calls a core's own methods that take a context, and
    /// what every other input method uses.
    ///
    /// # Panics
    ///
    /// If `peer` is not in the net.
    pub fn with<R>(&mut self, peer: PeerId, f: impl FnOnce(&mut P, &mut Cx<'_, P>) -> R) -> R {
        let seed = self.seed;
        let Some(node) = self.nodes.get_mut(&peer) else {
            panic!("{peer:?} is not in the net (seed {seed})");
        };
        let mut out = Outbox::new();
        let r = f(
            &mut node.core,
            &mut Context::new(self.now, &mut node.rng, &mut out),
        );
        for o in out.drain() {
            match o {
                Output::Send { to, msg } => self.send(peer, to, msg),
                Output::Timer { at, timer } => self.push(
                    at.max(self.now),
                    Lane::Timer,
                    Entry::Timer { node: peer, timer },
                ),
                Output::Event(e) => self.events.push((self.now, peer, e)),
                Output::Offence {
                    peer: offender,
                    offence,
                } => {
                    self.stats.offences += 1;
                    self.offences.push((self.now, peer, offender, offence));
                }
            }
        }
        r
    }

    /// Hands a command to `peer`'s core now.
    pub fn command(&mut self, peer: PeerId, cmd: P::Command) {
        self.with(peer, |core, cx| core.handle_command(cx, cmd));
    }

    /// Hands `msg` to `to`'s core now, as if `from` (a node or a peer the test plays) had
    /// sent it: through the codec if it is on, but not subject to latency or faults.
    pub fn deliver(&mut self, from: PeerId, to: PeerId, msg: P::Message) {
        let msg = self.round_trip(from, msg);
        self.stats.on_send(msg.kind(), msg.wire_len());
        self.stats.on_deliver(msg.kind(), msg.wire_len());
        self.with(to, |core, cx| core.handle_message(cx, from, msg));
    }

    /// Decodes `frame` as a real node would (version byte, size limit, CBOR) and, if it
    /// decodes, hands the message to `to`'s core now as coming from `from`. A frame that
    /// does not decode never reaches the core: the error is returned (the node driver
    /// charges such a frame to its sender as `Offence::Malformed`).
    pub fn deliver_frame(
        &mut self,
        from: PeerId,
        to: PeerId,
        frame: &[u8],
    ) -> Result<(), CodecError> {
        let msg: P::Message = codec::decode(frame)?;
        self.stats.on_deliver(msg.kind(), frame.len());
        self.with(to, |core, cx| core.handle_message(cx, from, msg));
        Ok(())
    }

    /// Tells `node` now that `peer` is unreachable (`handle_peer_down`).
    pub fn peer_down(&mut self, node: PeerId, peer: PeerId) {
        self.with(node, |core, cx| core.handle_peer_down(cx, peer));
    }

    // ---- faults ----------------------------------------------------------------------

    /// Messages `peer` sends are lost until `until` (`Instant(u64::MAX)`: for good).
    pub fn mute(&mut self, peer: PeerId, until: Instant) {
        self.faults.entry(peer).or_default().muted_until = Some(until);
    }

    /// Messages to `peer` are lost until `until`.
    pub fn deafen(&mut self, peer: PeerId, until: Instant) {
        self.faults.entry(peer).or_default().deaf_until = Some(until);
    }

    /// Every message to or from `peer` is lost until `until`.
    pub fn isolate(&mut self, peer: PeerId, until: Instant) {
        self.mute(peer, until);
        self.deafen(peer, until);
    }

    /// Ends every mute, deafness and isolation at once.
    pub fn restore(&mut self, peer: PeerId) {
        self.faults.remove(&peer);
    }

    /// Every message `peer` sends or is sent takes `extra` longer to arrive, on top of the
    /// latency (twice `extra` between two slowed peers): a live peer that answers late, as
    /// an overloaded host does. Applies to messages sent from now on; `Duration::ZERO` ends
    /// it.
    pub fn slow_down(&mut self, peer: PeerId, extra: Duration) {
        if extra.is_zero() {
            self.slow.remove(&peer);
        } else {
            self.slow.insert(peer, extra);
        }
    }

    /// Puts `peer` into partition `group`: messages between different groups are lost.
    /// Every peer, node of the net or not, starts in group 0.
    pub fn set_partition(&mut self, peer: PeerId, group: u32) {
        if group == 0 {
            self.partitions.remove(&peer);
        } else {
            self.partitions.insert(peer, group);
        }
    }

    /// Puts every peer back into group 0.
    pub fn heal_partitions(&mut self) {
        self.partitions.clear();
    }

    /// Loses every message for which `keep` returns `false`, judged when the message would
    /// be delivered (like the faults): a link that loses what a test picks, by sender,
    /// receiver or content. Replaces any earlier filter.
    pub fn set_filter(&mut self, keep: impl FnMut(&Sent<P::Message>) -> bool + 'static) {
        self.filter = Some(Box::new(keep));
    }

    /// Removes the filter: no message is lost to it any more.
    pub fn clear_filter(&mut self) {
        self.filter = None;
    }

    /// Shows every message to `tap` just before it is delivered; the messages `tap` returns,
    /// as (from, to, message), are handed to their receivers first, at once, as
    /// [`deliver`](Net::deliver) would (those to a peer that is not a node are lost). This
    /// plays an adversary that reacts to what it sees on the wire, such as a peer racing
    /// an honest answer with a forged one. Replaces any earlier tap.
    pub fn set_tap(
        &mut self,
        tap: impl FnMut(&Sent<P::Message>) -> Vec<(PeerId, PeerId, P::Message)> + 'static,
    ) {
        self.tap = Some(Box::new(tap));
    }

    /// Removes the tap.
    pub fn clear_tap(&mut self) {
        self.tap = None;
    }

    /// Takes every message in flight off the wire, in the order they would have arrived:
    /// they are never delivered, and the test may look at them or play them itself.
    /// Timers and peer-down notices stay queued.
    pub fn take_in_flight(&mut self) -> Vec<Sent<P::Message>> {
        let keys: Vec<_> = self
            .queue
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Deliver { .. }))
            .map(|(k, _)| *k)
            .collect();
        let mut taken = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(Entry::Deliver { at, from, to, msg }) = self.queue.remove(&k) {
                self.in_flight -= 1;
                taken.push(Sent { at, from, to, msg });
            }
        }
        taken
    }

    // ---- running ---------------------------------------------------------------------

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The seed the net was made with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Time of the next queued message or timer, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _, _)| *at)
    }

    /// Messages (and peer-down notices) in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The timer table: every pending timer with its deadline and node, in firing order.
    pub fn timers(&self) -> impl Iterator<Item = (Instant, PeerId, &P::Timer)> + '_ {
        self.queue.iter().filter_map(|((at, _, _), e)| match e {
            Entry::Timer { node, timer } => Some((*at, *node, timer)),
            _ => None,
        })
    }

    /// Events processed since the net was made.
    pub fn events_processed(&self) -> u64 {
        self.processed
    }

    /// Processes the next message or timer, moving the clock to its time. Returns `false`
    /// if nothing was queued.
    ///
    /// # Panics
    ///
    /// When more than the step limit of events have been processed at one instant.
    pub fn step(&mut self) -> bool {
        let Some(((at, lane, _), entry)) = self.queue.pop_first() else {
            return false;
        };
        if lane == Lane::Network {
            self.in_flight -= 1;
        }
        self.now = self.now.max(at);
        if self.now == self.instant {
            self.at_instant += 1;
            assert!(
                self.at_instant <= self.step_limit,
                "livelock: {} events at {:.6} s without time moving on (seed {})",
                self.at_instant,
                self.now.as_secs_f64(),
                self.seed
            );
        } else {
            self.instant = self.now;
            self.at_instant = 1;
        }
        self.processed += 1;
        match entry {
            Entry::Deliver {
                at: sent,
                from,
                to,
                msg,
            } => {
                let kind = msg.kind();
                let msg = Sent {
                    at: sent,
                    from,
                    to,
                    msg,
                };
                if !self.nodes.contains_key(&to) || self.lost(&from, &to) || !self.kept(&msg) {
                    self.stats.on_drop(kind);
                } else {
                    self.tapped(&msg);
                    self.stats.on_deliver(kind, msg.msg.wire_len());
                    self.with(to, |core, cx| core.handle_message(cx, from, msg.msg));
                }
            }
            Entry::PeerDown { node, peer } => {
                if self.nodes.contains_key(&node) {
                    self.peer_down(node, peer);
                }
            }
            Entry::Timer { node, timer } => {
                if self.nodes.contains_key(&node) {
                    self.with(node, |core, cx| core.handle_timer(cx, timer));
                }
            }
        }
        true
    }

    /// Processes everything due up to and including `t`, then sets the clock to `t` (if it
    /// is later than now).
    pub fn advance_to(&mut self, t: Instant) {
        while self.next_deadline().is_some_and(|at| at <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.advance_to(self.now + d);
    }

    /// Runs until `done(self)` holds (checked before every event) or the next event lies
    /// beyond `deadline`; then the clock stands at the moment the condition was met, or at
    /// `deadline`. Returns whether the condition was met.
    #[must_use = "a condition that was never met should fail the test"]
    pub fn run_until(&mut self, deadline: Instant, mut done: impl FnMut(&Self) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if self.next_deadline().is_none_or(|at| at > deadline) {
                self.now = self.now.max(deadline);
                return done(self);
            }
            self.step();
        }
    }

    /// Runs until no message is in flight (timers that fall due meanwhile fire; the ones
    /// after that stay queued), so a test can look at a settled exchange.
    ///
    /// # Panics
    ///
    /// When the network does not go quiet within the step limit: a test that never settles
    /// fails here, naming the seed.
    pub fn drive(&mut self) {
        let mut steps = 0u64;
        while self.in_flight > 0 {
            assert!(
                steps < self.step_limit,
                "livelock: messages still in flight after {steps} events, at {:.6} s (seed {})",
                self.now.as_secs_f64(),
                self.seed
            );
            self.step();
            steps += 1;
        }
    }

    // ---- observation -----------------------------------------------------------------

    /// Every event the cores emitted so far: (time, emitting peer, event).
    pub fn events(&self) -> &[(Instant, PeerId, P::Event)] {
        &self.events
    }

    /// Takes the events emitted since the last call.
    pub fn take_events(&mut self) -> Vec<(Instant, PeerId, P::Event)> {
        std::mem::take(&mut self.events)
    }

    /// Every offence the cores reported so far: (time, reporter, offender, offence).
    pub fn offences(&self) -> &[(Instant, PeerId, PeerId, Offence)] {
        &self.offences
    }

    /// Takes the offences reported since the last call.
    pub fn take_offences(&mut self) -> Vec<(Instant, PeerId, PeerId, Offence)> {
        std::mem::take(&mut self.offences)
    }

    /// Every message sent so far, if [`with_send_log`](Net::with_send_log) is on (empty
    /// otherwise).
    pub fn sent(&self) -> &[Sent<P::Message>] {
        self.log.as_deref().unwrap_or_default()
    }

    /// Takes the send log (empty if the log is off).
    pub fn take_sent(&mut self) -> Vec<Sent<P::Message>> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Traffic counters per message kind (sent, delivered, dropped, bytes by
    /// [`Message::wire_len`]) and the number of offences reported.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    // ---- internals -------------------------------------------------------------------

    fn push(&mut self, at: Instant, lane: Lane, entry: Entry<P>) {
        self.seq += 1;
        if lane == Lane::Network {
            self.in_flight += 1;
        }
        self.queue.insert((at, lane, self.seq), entry);
    }

    fn send(&mut self, from: PeerId, to: PeerId, msg: P::Message) {
        let msg = self.round_trip(from, msg);
        let kind = msg.kind();
        self.stats.on_send(kind, msg.wire_len());
        if let Some(log) = self.log.as_mut() {
            log.push(Sent {
                at: self.now,
                from,
                to,
                msg: msg.clone(),
            });
        }
        if !self.nodes.contains_key(&to) {
            self.stats.on_drop(kind);
            if let Some(delay) = self.unreachable_notice {
                self.push(
                    self.now + delay,
                    Lane::Network,
                    Entry::PeerDown {
                        node: from,
                        peer: to,
                    },
                );
            }
            return;
        }
        let slow = |p: &PeerId| self.slow.get(p).copied().unwrap_or_default();
        let delay = self.latency + slow(&from) + slow(&to);
        self.push(
            self.now + delay,
            Lane::Network,
            Entry::Deliver {
                at: self.now,
                from,
                to,
                msg,
            },
        );
    }

    /// The message as the receiver would decode it from the wire.
    fn round_trip(&self, from: PeerId, msg: P::Message) -> P::Message {
        if !self.codec {
            return msg;
        }
        let decoded = codec::encode(&msg).and_then(|frame| codec::decode::<P::Message>(&frame));
        match decoded {
            Ok(m) => m,
            Err(e) => panic!(
                "{from:?} sent a {} message the codec refuses: {e} (seed {})",
                msg.kind(),
                self.seed
            ),
        }
    }

    /// Whether the filter, if any, lets `msg` through.
    fn kept(&mut self, msg: &Sent<P::Message>) -> bool {
        self.filter.as_mut().is_none_or(|keep| keep(msg))
    }

    /// Shows `msg` to the tap, if any, and delivers what it answers.
    fn tapped(&mut self, msg: &Sent<P::Message>) {
        let Some(mut tap) = self.tap.take() else {
            return;
        };
        for (from, to, m) in tap(msg) {
            if self.nodes.contains_key(&to) {
                self.deliver(from, to, m);
            } else {
                self.stats.on_drop(m.kind());
            }
        }
        self.tap = Some(tap);
    }

    /// Whether a message `from → to` is lost now to a mute, deafness or partition.
    fn lost(&self, from: &PeerId, to: &PeerId) -> bool {
        let now = self.now;
        let before = |t: Option<Instant>| t.is_some_and(|t| now < t);
        let group = |p: &PeerId| self.partitions.get(p).copied().unwrap_or(0);
        self.faults.get(from).is_some_and(|f| before(f.muted_until))
            || self.faults.get(to).is_some_and(|f| before(f.deaf_until))
            || group(from) != group(to)
    }
}
