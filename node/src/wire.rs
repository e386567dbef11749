//! How core messages travel between nodes: one libp2p protocol per core, one frame per
//! request-response exchange.
//!
//! Each core has its own protocol name (`/peerlab/<core>/1`), negotiated with
//! multistream-select, so a peer that speaks only some cores learns that at negotiation. A
//! message is one frame — the `overlay::codec` version byte plus CBOR — written on a fresh
//! substream (QUIC stream or Yamux stream) that the writer then closes; the receiver answers
//! with an empty acknowledgement, which is what libp2p's request-response needs to finish
//! the exchange. Delivery stays best-effort, as the cores assume.
//!
//! Frames are read with a hard limit per protocol ([`Channel::max_frame`]): at most
//! `limit + 1` bytes are read, so an oversized frame costs the node at most that; it is
//! reported as [`Frame::Oversized`] (not as a read error, which libp2p's request-response
//! would swallow without telling the behaviour) and penalises the sender. The body is
//! decoded only after the read finished within the limit.

use std::io;

use libp2p::StreamProtocol;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use serde::{Deserialize, Serialize};

/// Frame limit of the small-message protocols (DHT, gossip, flooding): 256 KiB. The largest
/// such messages are gossip anti-entropy batches (a 64 KiB budget) and DHT values; anything
/// bigger is hostile or a bug.
pub const SMALL_FRAME_LIMIT: usize = 256 * 1024;

/// Frame limit of the transfer protocol: [`peerlab_overlay::codec::DEFAULT_MAX_FRAME`]
/// (1 MiB), room for a manifest of a very large file; blocks are 16 KiB.
pub const TRANSFER_FRAME_LIMIT: usize = peerlab_overlay::codec::DEFAULT_MAX_FRAME;

/// The per-core channels a node speaks, each its own libp2p protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Chord DHT (`/peerlab/dht/1`).
    Dht,
    /// Gossip membership and data (`/peerlab/gossip/1`).
    Gossip,
    /// Unstructured neighbour graph and flooding search (`/peerlab/flood/1`).
    Flood,
    /// Swarm file transfer (`/peerlab/swarm/1`).
    Swarm,
}

impl Channel {
    /// Every channel, in a fixed order.
    pub const ALL: [Channel; 4] = [
        Channel::Dht,
        Channel::Gossip,
        Channel::Flood,
        Channel::Swarm,
    ];

    /// The libp2p protocol name.
    pub const fn protocol(self) -> &'static str {
        match self {
            Channel::Dht => "/peerlab/dht/1",
            Channel::Gossip => "/peerlab/gossip/1",
            Channel::Flood => "/peerlab/flood/1",
            Channel::Swarm => "/peerlab/swarm/1",
        }
    }

    /// A short name for metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Channel::Dht => "dht",
            Channel::Gossip => "gossip",
            Channel::Flood => "flood",
            Channel::Swarm => "swarm",
        }
    }

    /// The largest frame accepted on this channel.
    pub const fn max_frame(self) -> usize {
        match self {
            Channel::Swarm => TRANSFER_FRAME_LIMIT,
            _ => SMALL_FRAME_LIMIT,
        }
    }
}

/// One inbound or outbound request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A frame within the limit (not yet decoded).
    Data(Vec<u8>),
    /// A frame longer than the channel's limit; only `limit + 1` bytes were read.
    Oversized,
}

/// The request-response codec: requests are raw frames (decoded later by the driver, which
/// knows the core's message type), responses are empty acknowledgements.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    /// Largest request accepted.
    pub max_frame: usize,
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(self.max_frame as u64 + 1)
            .read_to_end(&mut buf)
            .await?;
        if buf.len() > self.max_frame {
            return Ok(Frame::Oversized);
        }
        Ok(Frame::Data(buf))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(1).read_to_end(&mut buf).await?;
        Ok(())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        if let Frame::Data(bytes) = req {
            io.write_all(&bytes).await?;
        }
        io.close().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.close().await
    }
}
