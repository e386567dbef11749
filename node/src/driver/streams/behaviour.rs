//! peerlab's own stream behaviour: the node-wide half of the cores' streams.
//!
//! Every connection runs a [`Handler`] that accepts inbound streams on all channels and
//! opens the outbound ones this behaviour asks for. Inbound streams wait in one bounded
//! queue ([`INBOUND_QUEUE`]) until the driver takes them as swarm events; a stream that
//! arrives while the queue is full is refused (dropped, which resets it) and counted
//! ([`Behaviour::refused`]). Nothing else drops a stream at accept: the hand-over from a
//! connection to the behaviour is the swarm's own event channel, which waits when full.
//!
//! This replaces libp2p-stream, whose inbound streams go through a channel with room for one
//! stream shared by all connections and are dropped while it is busy (150–200 streams in a
//! 32-node start). Outbound streams are opened here too: the driver owns the swarm, so it
//! asks the behaviour directly ([`Behaviour::open`]) and the writer task awaits the answer;
//! no shared lock or control handle is needed, and the stream goes on the peer's newest
//! connection (after a restart of the peer, the one to its live process).
//!
//! The layout follows rust-libp2p's protocol crates: this file holds the per-node
//! `NetworkBehaviour`, `handler.rs` the per-connection `ConnectionHandler` and `upgrade.rs`
//! the protocol negotiation.

use std::collections::{BTreeMap, VecDeque};
use std::task::{Context, Poll, Waker};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::behaviour::ConnectionEstablished;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, Stream};
use tokio::sync::oneshot;

use super::handler::{Command, Handler, Report};
use crate::wire::Channel;

/// Most inbound streams waiting for the driver. One stream per channel on each of the
/// default 512 connections (`NetConfig::max_connections`): a burst of every peer opening
/// every channel at once fits; beyond that the driver is so far behind that refusing (and
/// counting) is better than holding more.
pub(crate) const INBOUND_QUEUE: usize = 2048;

/// Why an outbound stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// No connection to the peer (or it closed before the stream was negotiated).
    #[error("not connected")]
    NotConnected,
    /// The peer does not speak the channel's protocol.
    #[error("the peer does not support {}", .0.protocol())]
    Unsupported(Channel),
    /// The negotiation failed or timed out.
    #[error("stream negotiation: {0}")]
    Io(#[source] std::io::Error),
}

/// What the behaviour reports to the driver.
#[derive(Debug)]
pub(crate) enum Event {
    /// `peer` opened a stream on `ch`.
    Inbound {
        peer: PeerId,
        ch: Channel,
        stream: Stream,
    },
}

/// A queue that holds at most `cap` items and counts those it refused.
#[derive(Debug)]
struct Bounded<T> {
    items: VecDeque<T>,
    cap: usize,
    refused: u64,
}

impl<T> Bounded<T> {
    fn new(cap: usize) -> Bounded<T> {
        Bounded {
            items: VecDeque::new(),
            cap,
            refused: 0,
        }
    }

    /// Queues `item`; returns it back (counted as refused) when the queue is full.
    fn offer(&mut self, item: T) -> Result<(), T> {
        if self.items.len() >= self.cap {
            self.refused += 1;
            return Err(item);
        }
        self.items.push_back(item);
        Ok(())
    }

    fn take(&mut self) -> Option<T> {
        self.items.pop_front()
    }
}

/// The node-wide stream behaviour.
pub(crate) struct Behaviour {
    /// Open connections per peer, oldest first.
    connections: BTreeMap<PeerId, Vec<ConnectionId>>,
    /// Inbound streams waiting for the driver.
    inbound: Bounded<(PeerId, Channel, Stream)>,
    /// Opens to hand to connection handlers.
    commands: VecDeque<(PeerId, ConnectionId, Command)>,
    waker: Option<Waker>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            connections: BTreeMap::new(),
            inbound: Bounded::new(INBOUND_QUEUE),
            commands: VecDeque::new(),
            waker: None,
        }
    }
}

impl Behaviour {
    /// Asks for a stream to `peer` on `ch` over the peer's newest connection. The answer
    /// comes on the returned channel; without a connection it is [`OpenError::NotConnected`]
    /// (the channel closes).
    pub(crate) fn open(
        &mut self,
        peer: PeerId,
        ch: Channel,
    ) -> oneshot::Receiver<Result<Stream, OpenError>> {
        let (reply, rx) = oneshot::channel();
        if let Some(conn) = self.connections.get(&peer).and_then(|c| c.last()) {
            self.commands
                .push_back((peer, *conn, Command::Open { ch, reply }));
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
        rx
    }

    /// Inbound streams refused so far because the driver was [`INBOUND_QUEUE`] streams
    /// behind.
    pub(crate) fn refused(&self) -> u64 {
        self.inbound.refused
    }

    /// Queues an inbound stream for the driver, or refuses it (drops it, which resets it)
    /// when the queue is full.
    fn on_inbound(&mut self, peer: PeerId, ch: Channel, stream: Stream) {
        if self.inbound.offer((peer, ch, stream)).is_err() {
            tracing::debug!(%peer, channel = ch.name(), "inbound queue full; stream refused");
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new())
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            }) => self
                .connections
                .entry(peer_id)
                .or_default()
                .push(connection_id),
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                if let Some(c) = self.connections.get_mut(&peer_id) {
                    c.retain(|id| *id != connection_id);
                    if c.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        _: ConnectionId,
        report: THandlerOutEvent<Self>,
    ) {
        match report {
            Report::Inbound { ch, stream } => self.on_inbound(peer, ch, stream),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let Some((peer_id, conn, event)) = self.commands.pop_front() {
            return Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(conn),
                event,
            });
        }
        if let Some((peer, ch, stream)) = self.inbound.take() {
            return Poll::Ready(ToSwarm::GenerateEvent(Event::Inbound { peer, ch, stream }));
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inbound_queue_is_bounded_and_counts_what_it_refuses() {
        let mut q = Bounded::new(3);
        for i in 0..3 {
            assert!(q.offer(i).is_ok());
        }
        assert_eq!(q.offer(3), Err(3), "a full queue refuses");
        assert_eq!(q.offer(4), Err(4));
        assert_eq!(q.refused, 2);
        assert_eq!(q.take(), Some(0), "first in, first out");
        assert!(q.offer(5).is_ok(), "room again once the driver took one");
        assert_eq!(q.items, [1, 2, 5]);
        assert_eq!(q.refused, 2);
    }

    #[test]
    fn opens_without_a_connection_fail_at_once() {
        let mut b = Behaviour::default();
        let mut rx = b.open(PeerId::random(), Channel::Dht);
        assert!(
            matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed)),
            "the reply sender must be dropped, not kept waiting"
        );
        assert!(b.commands.is_empty());
    }

    #[test]
    fn opens_go_to_the_newest_connection() {
        let mut b = Behaviour::default();
        let peer = PeerId::random();
        let (old, new) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        b.connections.insert(peer, vec![old, new]);
        let _rx = b.open(peer, Channel::Swarm);
        assert!(matches!(b.commands.front(), Some((p, c, _)) if *p == peer && *c == new));
    }
}
