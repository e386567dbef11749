//! `Peer`: the sans-IO composition of the cores, as one peer runs them.
//!
//! A `Peer` is itself a [`Protocol`]. Its message, timer, command and event types have one
//! variant per core; each input is routed to its core, which runs with its own outbox
//! through [`Context::nested`](peerlab_overlay::Context::nested), and the outputs are mapped
//! back into the peer's. Between the cores the peer adds the glue a real node needs:
//!
//! - **bootstrap**: the peers a node was started with seed its flooding neighbour set.
//!
//! The same type runs under the libp2p driver ([`crate::driver`]) and in the simulator.

use std::time::Duration;

use peerlab_overlay::flood::{self, Flood};
use peerlab_overlay::{CodecError, Cx, Outbox, Output, PeerId, Protocol, codec};
use serde::{Deserialize, Serialize};

use crate::driver::NetCore;
use crate::wire::Channel;

/// Request ids the peer issues itself (to its cores) have this bit set, so they never
/// collide with the ids the API hands out.
pub const INTERNAL_REQUEST: u64 = 1 << 63;

/// A message between peers: one variant per core.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Message {
    /// Unstructured overlay and flooding search.
    Flood(flood::Msg),
}

impl peerlab_overlay::Message for Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::Flood(m) => m.kind(),
        }
    }

    /// The inner message's frame: that is what travels on the core's channel.
    fn wire_len(&self) -> usize {
        match self {
            Message::Flood(m) => m.wire_len(),
        }
    }
}

/// A timer of one of the cores.
#[derive(Clone, Debug)]
pub enum Timer {
    /// Flooding core timer.
    Flood(flood::Timer),
}

/// A local command.
#[derive(Clone, Debug)]
pub enum Command {
    /// Join the overlay through these peers (the driver sends this once a bootstrap
    /// address answered).
    Bootstrap(Vec<PeerId>),
    /// This node's own listen addresses (for membership records).
    Addresses(Vec<String>),
    /// A command for the flooding core.
    Flood(flood::Command),
    /// Leave every overlay gracefully.
    Leave,
}

/// An event: one variant per core.
#[derive(Clone, Debug)]
pub enum Event {
    /// From the flooding core.
    Flood(flood::Event),
}

/// Configuration of a peer's cores.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The flooding core.
    pub flood: flood::Config,
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

/// The composition of the cores one peer runs.
pub struct Peer {
    id: PeerId,
    flood: Flood,
    addresses: Vec<String>,
    next_internal: u64,
}

/// Runs `f` on a sub-core with its own outbox, forwards its sends and timers through the
/// peer's context (wrapped by `msg` and `timer`) and returns its events.
fn nested<Q: Protocol>(
    cx: &mut Cx<'_, Peer>,
    core: &mut Q,
    f: impl FnOnce(&mut Q, &mut Cx<'_, Q>),
    msg: fn(Q::Message) -> Message,
    timer: fn(Q::Timer) -> Timer,
) -> Vec<Q::Event> {
    let mut sub = Outbox::new();
    cx.nested(&mut sub, |c| f(core, c));
    let mut events = Vec::new();
    for out in sub.drain() {
        match out {
            Output::Send { to, msg: m } => cx.send(to, msg(m)),
            Output::Timer { at, timer: t } => cx.set_timer_at(at, timer(t)),
            Output::Event(e) => events.push(e),
        }
    }
    events
}

impl Peer {
    /// A peer named `id` with `config`.
    pub fn new(id: PeerId, config: Config) -> Result<Peer, Error> {
        let flood = Flood::new(id, config.flood).map_err(|e| Error::Config {
            core: "flood",
            msg: e.to_string(),
        })?;
        Ok(Peer {
            id,
            flood,
            addresses: Vec::new(),
            next_internal: 0,
        })
    }

    /// This peer's id.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The flooding core (neighbours, index, counters).
    pub fn flood(&self) -> &Flood {
        &self.flood
    }

    /// This node's announced addresses.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// A fresh internal request id.
    #[allow(dead_code)]
    fn internal_id(&mut self) -> u64 {
        self.next_internal += 1;
        INTERNAL_REQUEST | self.next_internal
    }

    fn flood_do(&mut self, cx: &mut Cx<'_, Self>, f: impl FnOnce(&mut Flood, &mut Cx<'_, Flood>)) {
        let events = nested(cx, &mut self.flood, f, Message::Flood, Timer::Flood);
        for e in events {
            self.on_flood_event(cx, e);
        }
    }

    fn on_flood_event(&mut self, cx: &mut Cx<'_, Self>, e: flood::Event) {
        match &e {
            flood::Event::SearchHit { .. } => metrics::counter!(crate::metrics::FLOOD_HITS).increment(1),
            _ => {}
        }
        cx.emit(Event::Flood(e));
    }
}

impl Protocol for Peer {
    type Message = Message;
    type Timer = Timer;
    type Command = Command;
    type Event = Event;

    fn handle_start(&mut self, cx: &mut Cx<'_, Self>) {
        self.flood_do(cx, |c, cx| c.handle_start(cx));
    }

    fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Message) {
        match msg {
            Message::Flood(m) => self.flood_do(cx, |c, cx| c.handle_message(cx, from, m)),
        }
    }

    fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, timer: Timer) {
        match timer {
            Timer::Flood(t) => self.flood_do(cx, |c, cx| c.handle_timer(cx, t)),
        }
    }

    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, cmd: Command) {
        match cmd {
            Command::Bootstrap(peers) => {
                let peers: Vec<PeerId> = peers.into_iter().filter(|p| *p != self.id).collect();
                self.flood_do(cx, |c, cx| {
                    c.handle_command(cx, flood::Command::AddNeighbours(peers))
                });
            }
            Command::Addresses(a) => self.addresses = a,
            Command::Flood(c) => {
                if matches!(c, flood::Command::Search { .. }) {
                    metrics::counter!(crate::metrics::FLOOD_QUERIES).increment(1);
                }
                self.flood_do(cx, |f, cx| f.handle_command(cx, c));
            }
            Command::Leave => {
                self.flood_do(cx, |c, cx| c.handle_command(cx, flood::Command::Leave));
            }
        }
    }

    fn handle_peer_down(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        self.flood_do(cx, |c, cx| c.handle_peer_down(cx, peer));
    }
}

impl NetCore for Peer {
    fn channel(msg: &Message) -> Channel {
        match msg {
            Message::Flood(_) => Channel::Flood,
        }
    }

    fn encode(msg: &Message) -> Result<Vec<u8>, CodecError> {
        match msg {
            Message::Flood(m) => codec::encode_with_limit(m, Channel::Flood.max_frame()),
        }
    }

    fn decode(channel: Channel, frame: &[u8]) -> Result<Message, CodecError> {
        let max = channel.max_frame();
        match channel {
            Channel::Flood => Ok(Message::Flood(codec::decode_with_limit(frame, max)?)),
            other => Err(CodecError::Decode(format!(
                "this node does not speak {}",
                other.protocol()
            ))),
        }
    }

    fn reply_to(event: &Event) -> Option<(u64, bool)> {
        match event {
            Event::Flood(flood::Event::SearchHit { request, .. }) => Some((*request, false)),
            Event::Flood(flood::Event::SearchDone { request, .. })
            | Event::Flood(flood::Event::SearchRejected { request, .. }) => Some((*request, true)),
            Event::Flood(flood::Event::ShareRejected { .. }) => None,
        }
    }

    fn bootstrap_command(peers: Vec<PeerId>) -> Option<Command> {
        Some(Command::Bootstrap(peers))
    }

    fn address_command(addrs: Vec<String>) -> Option<Command> {
        Some(Command::Addresses(addrs))
    }

    fn leave_command() -> Option<Command> {
        Some(Command::Leave)
    }
}

/// How long a flooding search may take at most before the API stops waiting.
pub const SEARCH_WAIT: Duration = Duration::from_secs(10);
