//! Protocol negotiation of the cores' streams: multistream-select offers the channels'
//! protocol names ([`Channel::protocol`]) and hands over the raw stream with the channel
//! that was agreed on. Nothing is exchanged beyond the negotiation; framing starts on the
//! stream itself ([`crate::wire`]).

use std::convert::Infallible;
use std::future::{Ready, ready};

use libp2p::Stream;
use libp2p::core::{InboundUpgrade, OutboundUpgrade, UpgradeInfo};

use crate::wire::Channel;

/// The channels offered (inbound: all of them) or asked for (outbound: one).
#[derive(Clone, Debug)]
pub(crate) struct Upgrade(pub(super) Vec<Channel>);

impl UpgradeInfo for Upgrade {
    type Info = Channel;
    type InfoIter = std::vec::IntoIter<Channel>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone().into_iter()
    }
}

impl InboundUpgrade<Stream> for Upgrade {
    type Output = (Stream, Channel);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, stream: Stream, ch: Channel) -> Self::Future {
        ready(Ok((stream, ch)))
    }
}

impl OutboundUpgrade<Stream> for Upgrade {
    type Output = (Stream, Channel);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, stream: Stream, ch: Channel) -> Self::Future {
        ready(Ok((stream, ch)))
    }
}
