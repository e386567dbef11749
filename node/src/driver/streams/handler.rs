//! The per-connection half of the stream behaviour: it accepts inbound streams on every
//! channel and opens the outbound streams the behaviour asks for.
//!
//! An inbound stream is handed to the behaviour as soon as it is negotiated; the handler
//! keeps none (the swarm's per-connection event channel, which waits rather than drops,
//! carries it). An outbound open carries its reply channel through the negotiation as the
//! substream's open info, so several opens on one connection proceed at once and each
//! answer finds its caller.

use std::collections::VecDeque;
use std::io;
use std::task::{Context, Poll};

use libp2p::Stream;
use libp2p::swarm::handler::{
    ConnectionEvent, ConnectionHandler, ConnectionHandlerEvent, DialUpgradeError,
    FullyNegotiatedInbound, FullyNegotiatedOutbound, StreamUpgradeError, SubstreamProtocol,
};
use tokio::sync::oneshot;

use super::behaviour::OpenError;
use super::upgrade::Upgrade;
use crate::wire::Channel;

/// Where the stream of an outbound open goes.
pub(crate) type OpenReply = oneshot::Sender<Result<Stream, OpenError>>;

/// What the behaviour asks of a connection.
#[derive(Debug)]
pub(crate) enum Command {
    /// Open a stream on `ch` and send it (or why not) to `reply`.
    Open { ch: Channel, reply: OpenReply },
}

/// What a connection tells the behaviour.
#[derive(Debug)]
pub(crate) enum Report {
    /// The peer opened a stream on `ch`.
    Inbound { ch: Channel, stream: Stream },
}

/// The stream handler of one connection.
pub(crate) struct Handler {
    /// Opens asked for and not yet requested from the connection.
    opens: VecDeque<(Channel, OpenReply)>,
    /// Inbound streams not yet handed to the behaviour.
    inbound: VecDeque<(Channel, Stream)>,
}

impl Handler {
    pub(super) fn new() -> Handler {
        Handler {
            opens: VecDeque::new(),
            inbound: VecDeque::new(),
        }
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Command;
    type ToBehaviour = Report;
    type InboundProtocol = Upgrade;
    type OutboundProtocol = Upgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = (Channel, OpenReply);

    fn listen_protocol(&self) -> SubstreamProtocol<Upgrade, ()> {
        SubstreamProtocol::new(Upgrade(Channel::ALL.to_vec()), ())
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Upgrade, (Channel, OpenReply), Report>> {
        if let Some((ch, stream)) = self.inbound.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(Report::Inbound {
                ch,
                stream,
            }));
        }
        if let Some((ch, reply)) = self.opens.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(Upgrade(vec![ch]), (ch, reply)),
            });
        }
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, cmd: Command) {
        match cmd {
            Command::Open { ch, reply } => self.opens.push_back((ch, reply)),
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Upgrade, Upgrade, (), (Channel, OpenReply)>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, ch),
                ..
            }) => self.inbound.push_back((ch, stream)),
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (stream, _),
                info: (_, reply),
            }) => {
                let _ = reply.send(Ok(stream));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError {
                info: (ch, reply),
                error,
            }) => {
                let e = match error {
                    StreamUpgradeError::Timeout => {
                        OpenError::Io(io::Error::from(io::ErrorKind::TimedOut))
                    }
                    StreamUpgradeError::NegotiationFailed => OpenError::Unsupported(ch),
                    StreamUpgradeError::Io(e) => OpenError::Io(e),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                let _ = reply.send(Err(e));
            }
            _ => {}
        }
    }
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("opens", &self.opens.len())
            .field("inbound", &self.inbound.len())
            .finish()
    }
}
