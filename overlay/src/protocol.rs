//! The sans-IO protocol contract every peerlab core follows.
//!
//! A core is a deterministic state machine. It is driven through five inputs — start, a
//! message from a peer, a fired timer, a local command, a peer that went away — and each
//! input comes with a [`Context`]: the current protocol time, the seeded [`Rng`], and an
//! [`Outbox`] the driver owns. The core answers by pushing [`Output`]s into the outbox:
//! messages to send, timers to set, and events (observations and command replies).
//! After every input the driver drains the outbox and acts on it. Nothing else crosses the
//! boundary: no sockets, no clock, no global randomness, no threads.
//!
//! Timers are data. A core names its timers with its own `Timer` type and never cancels
//! one; a timer that is no longer wanted is recognised as stale when it fires (carry a
//! generation number or a request id in it), as in foca. The driver compares deadlines with
//! its own clock, so the simulator can jump virtual time straight to the next deadline.
//!
//! Commands that expect an answer carry a caller-chosen request id (`req`); the answer comes
//! back as an event carrying that id.
//!
//! Every byte from a peer may be hostile. A core that rejects a peer's input says so with
//! [`Context::penalize`]: the driver turns those reports into strikes and bans, so a rule
//! enforced in a core also costs the peer that broke it.
//!
//! Two drivers exist: the discrete-event simulator in `peerlab-testnet` and the tokio +
//! libp2p driver in `peerlab-node`. Because both call the same methods in the same way, the
//! lab measures the code users run.

use std::fmt;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use crate::{Instant, PeerId, Rng, codec};

/// A protocol message: serialisable with the wire codec and named for counters.
pub trait Message: Serialize + DeserializeOwned + Clone + fmt::Debug + Send + 'static {
    /// A short stable name of this message's type (e.g. `"query_hit"`), used for
    /// per-type message and byte counters.
    fn kind(&self) -> &'static str;

    /// Bytes this message occupies on the wire. Defaults to its exact frame length.
    fn wire_len(&self) -> usize {
        codec::encoded_len(self)
    }
}

/// One output of a core.
#[derive(Debug, Clone, PartialEq)]
pub enum Output<M, T, E> {
    /// Send `msg` to peer `to`. Delivery is best-effort: a message can be lost, and the
    /// core must not assume otherwise.
    Send {
        /// Destination peer.
        to: PeerId,
        /// The message.
        msg: M,
    },
    /// Call `handle_timer(timer)` once protocol time reaches `at`.
    Timer {
        /// Deadline.
        at: Instant,
        /// The core's timer value, returned verbatim.
        timer: T,
    },
    /// An event for the application (an observation or a command's reply).
    Event(E),
    /// `peer` sent something this core rejected (see [`Offence`]); the driver charges it to
    /// the peer's record (strikes, bans) and counts it.
    Offence {
        /// The peer the offending input came from (the authenticated sender, never a peer
        /// the input merely names).
        peer: PeerId,
        /// What it did.
        offence: Offence,
    },
}

/// Input from a peer that a core rejected, reported so the driver can hold the sender to
/// account. Cores report only what they can attribute: the authenticated sender of the
/// message that broke a rule. Some offences can come from an honest peer whose view is
/// stale (a write sent to a former replica, a reply that arrived after its timeout), so
/// drivers weigh them: [`Offence::severity`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Offence {
    /// A message that breaks the protocol's own rules: a list over its bound, a field out
    /// of range, a reply that does not fit the request. No honest peer sends one.
    Malformed,
    /// A signature that does not verify, or a claim about another peer that the sender
    /// cannot make (a provider entry or member address in someone else's name).
    Forged,
    /// Data that failed verification (a chunk whose hash does not match its manifest),
    /// attributed to the peer that sent it.
    Corrupt,
    /// A write the rules refuse: a record owned by another writer, a version too far in
    /// the future, storage outside the receiver's range, a quota exceeded. An honest peer
    /// with a stale view can send one now and then.
    Refused,
    /// Something nobody asked this peer for (a block not requested from it, a reply to no
    /// request). Honest peers send these only after a timeout raced the answer.
    Unsolicited,
    /// A peer that took a slot or requests and delivered nothing within its deadline.
    Stalled,
    /// More of something than the protocol allows per peer (a rate, a number of
    /// concurrent requests).
    Excess,
}

impl Offence {
    /// Strike points this offence is worth, on a scale where an honest peer that is merely
    /// out of date earns 1 and proven malice earns [`Offence::PROVEN`], which is meant to be
    /// a driver's ban threshold: one forgery is enough, three malformed messages are.
    pub fn severity(self) -> u32 {
        match self {
            Offence::Forged | Offence::Corrupt => Offence::PROVEN,
            Offence::Malformed => 4,
            Offence::Excess | Offence::Stalled => 2,
            Offence::Refused | Offence::Unsolicited => 1,
        }
    }

    /// The severity of an offence that proves malice (a forged signature, corrupt data).
    pub const PROVEN: u32 = 12;

    /// A short stable name for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Offence::Malformed => "malformed",
            Offence::Forged => "forged",
            Offence::Corrupt => "corrupt",
            Offence::Refused => "refused",
            Offence::Unsolicited => "unsolicited",
            Offence::Stalled => "stalled",
            Offence::Excess => "excess",
        }
    }
}

/// The buffer a driver owns and a core fills with outputs.
#[derive(Debug)]
pub struct Outbox<M, T, E> {
    items: Vec<Output<M, T, E>>,
}

impl<M, T, E> Default for Outbox<M, T, E> {
    fn default() -> Self {
        Outbox { items: Vec::new() }
    }
}

impl<M, T, E> Outbox<M, T, E> {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes every pending output, in the order the core produced them.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Output<M, T, E>> {
        self.items.drain(..)
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number of pending outputs.
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

/// What a core sees of the world while it handles one input.
pub struct Context<'a, M, T, E> {
    now: Instant,
    rng: &'a mut Rng,
    out: &'a mut Outbox<M, T, E>,
}

/// The [`Context`] type for protocol `P`.
pub type Cx<'a, P> =
    Context<'a, <P as Protocol>::Message, <P as Protocol>::Timer, <P as Protocol>::Event>;

impl<'a, M, T, E> Context<'a, M, T, E> {
    /// A context for one input at time `now`.
    pub fn new(now: Instant, rng: &'a mut Rng, out: &'a mut Outbox<M, T, E>) -> Self {
        Context { now, rng, out }
    }

    /// Current protocol time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The seeded random source.
    pub fn rng(&mut self) -> &mut Rng {
        self.rng
    }

    /// Queues `msg` for `to`.
    pub fn send(&mut self, to: PeerId, msg: M) {
        self.out.items.push(Output::Send { to, msg });
    }

    /// Asks for `handle_timer(timer)` after `after` has elapsed.
    pub fn set_timer(&mut self, after: Duration, timer: T) {
        let at = self.now + after;
        self.out.items.push(Output::Timer { at, timer });
    }

    /// Asks for `handle_timer(timer)` at `at`.
    pub fn set_timer_at(&mut self, at: Instant, timer: T) {
        self.out.items.push(Output::Timer { at, timer });
    }

    /// Emits an event to the application.
    pub fn emit(&mut self, event: E) {
        self.out.items.push(Output::Event(event));
    }

    /// Reports that `peer` sent input this core rejected (see [`Offence`]).
    pub fn penalize(&mut self, peer: PeerId, offence: Offence) {
        self.out.items.push(Output::Offence { peer, offence });
    }

    /// Runs a sub-protocol with its own outbox and returns what it produced; a composite
    /// core (such as `node::Peer`) maps those outputs into its own.
    pub fn nested<M2, T2, E2>(
        &mut self,
        sub: &mut Outbox<M2, T2, E2>,
        f: impl FnOnce(&mut Context<'_, M2, T2, E2>),
    ) {
        let mut cx = Context {
            now: self.now,
            rng: &mut *self.rng,
            out: sub,
        };
        f(&mut cx);
    }
}

/// A sans-IO protocol core.
///
/// Input methods are `handle_*`; a driver calls exactly one at a time, then drains the
/// outbox. Cores must be deterministic functions of their inputs, the context's time and
/// its random source.
pub trait Protocol {
    /// Messages exchanged between peers running this core.
    type Message: Message;
    /// The core's timer values.
    type Timer: Clone + fmt::Debug;
    /// Local commands (from the application, CLI or experiment).
    type Command;
    /// Events for the application.
    type Event;

    /// Called once when the driver starts the core (set initial timers here).
    fn handle_start(&mut self, cx: &mut Cx<'_, Self>);

    /// A message arrived from `from`.
    fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Self::Message);

    /// A timer set earlier has fired.
    fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, timer: Self::Timer);

    /// A local command.
    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, cmd: Self::Command);

    /// The driver learned that `peer` is unreachable (connection closed or refused).
    /// A hint only: cores keep their own timeouts.
    fn handle_peer_down(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId);
}
