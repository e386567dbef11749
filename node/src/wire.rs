//! How core messages travel between nodes: one libp2p protocol per core, each carried on
//! one long-lived, length-prefixed, one-way stream per peer and direction.
//!
//! Each core has its own protocol name (`/peerlab/<core>/2`), negotiated with
//! multistream-select once per stream, so a peer that speaks only some cores learns that at
//! negotiation. A message is one frame — the `overlay::codec` version byte plus CBOR. The
//! sender opens a stream (through the driver's own stream behaviour, `driver::streams`) the
//! first time it has a message for a connected peer on that protocol and keeps it: frames follow each other, each a `u32`
//! big-endian length followed by the frame ([`write_stream_frame`], [`read_stream_frame`]);
//! the receiver never writes back. Delivery stays best-effort, as the cores assume; the
//! transport's flow control (QUIC stream credit, Yamux window) is the back-pressure and the
//! driver bounds what waits in front of it.
//!
//! **Why streams for every core.** Version 1 of the small-message protocols used one
//! request-response exchange per batch of frames: a fresh substream, a multistream-select
//! negotiation, the request, an empty acknowledgement and two stream closes — about six
//! packets per message on loopback. A 100-node testnet at rest spent 1.3 of the machine's two
//! cores on 35 messages per node and second, nearly all of it in the kernel and the
//! transports' per-packet paths rather than in the cores, which kept 300-node testnets from
//! converging. The transfer core had already moved to a stream because the acknowledgement
//! round trip per batch held fetches to 0.16–0.32 of one raw stream
//! (docs/experiments/node.md). With one stream per direction, a message costs one write,
//! coalesced with whatever else waits for the same peer.
//!
//! Frames are read with a hard limit per protocol ([`Channel::max_frame`]): a length prefix
//! above it is reported as [`StreamFrame::Oversized`] without reading the frame, penalises
//! the sender and ends the stream (the reader cannot resynchronise). The body is decoded
//! only after the read finished within the limit. The buffer a frame is read into grows
//! with the bytes that actually arrive ([`FRAME_BUFFER_START`], then doubling), so a length
//! prefix costs nothing until the peer sends the bytes it announced.
//!
//! **Probe datagrams.** SWIM's probe messages may instead travel as bare UDP datagrams
//! ([`Datagram`]: a fixed header, then the same frame), at most [`MAX_DATAGRAM`] bytes; the
//! rules that make their unauthenticated sender harmless to believe are the driver's
//! (`driver::probe`).

use std::io;

use libp2p::futures::{AsyncRead, AsyncReadExt};
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
    /// Chord DHT (`/peerlab/dht/5`).
    Dht,
    /// Gossip membership and data (`/peerlab/gossip/4`).
    Gossip,
    /// Unstructured neighbour graph and flooding search (`/peerlab/flood/2`).
    Flood,
    /// Swarm file transfer (`/peerlab/swarm/2`).
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
            Channel::Dht => "/peerlab/dht/5",
            Channel::Gossip => "/peerlab/gossip/4",
            Channel::Flood => "/peerlab/flood/2",
            Channel::Swarm => "/peerlab/swarm/2",
        }
    }

    /// The position in [`Channel::ALL`] (for tables indexed by channel).
    pub const fn index(self) -> usize {
        match self {
            Channel::Dht => 0,
            Channel::Gossip => 1,
            Channel::Flood => 2,
            Channel::Swarm => 3,
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

    /// Read buffer of one inbound stream: several 16 KiB blocks per read on the transfer
    /// channel; small on the others, whose messages are a few hundred bytes and whose
    /// streams a node may hold to every member of a large testnet at once.
    pub const fn read_buffer(self) -> usize {
        match self {
            Channel::Swarm => 64 * 1024,
            _ => 4 * 1024,
        }
    }
}

/// Bytes of the length prefix in front of every frame on a stream.
pub const STREAM_LENGTH_PREFIX: usize = 4;

/// Most bytes reserved for a frame before its bytes arrive: frames up to this size (every
/// message but the largest DHT values, gossip batches and manifests; a 16 KiB block with
/// its header) are read into one buffer of their exact size, larger ones into a buffer that
/// doubles as they arrive. A peer that announces the 1 MiB limit and sends nothing costs
/// this much, not the announced length.
pub const FRAME_BUFFER_START: usize = 64 * 1024;

impl AsRef<str> for Channel {
    /// The libp2p protocol name (what multistream-select negotiates).
    fn as_ref(&self) -> &str {
        self.protocol()
    }
}

/// One frame read from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamFrame {
    /// A frame within the limit (not yet decoded).
    Data(Vec<u8>),
    /// A length prefix above the limit; the frame itself was not read and the stream
    /// cannot be read further.
    Oversized(u64),
}

/// Appends one frame with its length prefix to `buf` (the writer coalesces frames).
pub fn write_stream_frame(buf: &mut Vec<u8>, frame: &[u8]) {
    buf.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    buf.extend_from_slice(frame);
}

/// Reads the next length-prefixed frame, at most `max_frame` bytes. `Ok(None)` at a clean
/// end of stream (between frames); an end inside a frame is an `UnexpectedEof` error.
pub async fn read_stream_frame<R>(io: &mut R, max_frame: usize) -> io::Result<Option<StreamFrame>>
where
    R: AsyncRead + Unpin,
{
    let mut len = [0u8; STREAM_LENGTH_PREFIX];
    let mut got = 0;
    while got < len.len() {
        let n = io.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max_frame {
        return Ok(Some(StreamFrame::Oversized(len as u64)));
    }
    // Grown (doubling, up to `len`) only when the bytes already read fill it.
    let mut frame = vec![0u8; len.min(FRAME_BUFFER_START)];
    let mut filled = 0;
    while filled < len {
        if filled == frame.len() {
            frame.resize(len.min(2 * frame.len()), 0);
        }
        let n = io.read(&mut frame[filled..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    }
    Ok(Some(StreamFrame::Data(frame)))
}

/// Version byte of a probe datagram. Version 1 carried the sender's whole key and a nonce
/// and an echo side by side (58 header bytes, a third of a node's probe bytes); it is no
/// longer read.
pub const DATAGRAM_VERSION: u8 = 2;

/// Bytes in front of a probe datagram's message: version, sender tag (8), receiver tag
/// (8), token (8), channel (1).
pub const DATAGRAM_HEADER: usize = 1 + 8 + 8 + 8 + 1;

/// Largest probe datagram sent or accepted: 1200 bytes, what every IP path carries in one
/// packet (QUIC's own floor). A probe's message is a few tens of bytes; a bigger datagram
/// is hostile and is dropped unread.
pub const MAX_DATAGRAM: usize = 1200;

/// One of SWIM's probe messages as a bare UDP datagram (see `driver::probe`): a fixed
/// header, then the core's frame exactly as a stream would carry it.
///
/// The sender is a claim, not a proof: the receiver answers a request only at the
/// sender's own signed address and accepts an answer only if it echoes the nonce of its
/// request. Both ends are named by a tag, the first 8 bytes of their Ed25519 public keys:
/// the receiver finds the sender among the members whose signed records name a probe
/// address (a key with another member's tag would take 2^64 key generations to find), and
/// drops datagrams meant for an identity that used its port before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The first 8 bytes of the sender's public key.
    pub from_tag: [u8; 8],
    /// The first 8 bytes of the receiver's public key.
    pub to_tag: [u8; 8],
    /// A request's fresh nonce, or the nonce of the request an answer answers (the
    /// message says which it is).
    pub token: u64,
    /// The channel whose frame the body is.
    pub channel: Channel,
    /// The core's frame.
    pub body: &'a [u8],
}

/// Why a received datagram was dropped before its body was looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramError {
    /// Shorter than the header.
    Short,
    /// Longer than [`MAX_DATAGRAM`].
    Long,
    /// A version this node does not speak.
    Version,
    /// A channel byte that names no channel.
    Channel,
}

impl DatagramError {
    /// A short name for metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            DatagramError::Short => "short",
            DatagramError::Long => "long",
            DatagramError::Version => "version",
            DatagramError::Channel => "channel",
        }
    }
}

impl<'a> Datagram<'a> {
    /// Reads a datagram's header; the body is not decoded.
    pub fn parse(b: &'a [u8]) -> Result<Datagram<'a>, DatagramError> {
        if b.len() > MAX_DATAGRAM {
            return Err(DatagramError::Long);
        }
        if b.len() < DATAGRAM_HEADER {
            return Err(DatagramError::Short);
        }
        if b[0] != DATAGRAM_VERSION {
            return Err(DatagramError::Version);
        }
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(w)
        };
        let tag_at = |i: usize| {
            let mut t = [0u8; 8];
            t.copy_from_slice(&b[i..i + 8]);
            t
        };
        let channel = *Channel::ALL
            .get(usize::from(b[DATAGRAM_HEADER - 1]))
            .ok_or(DatagramError::Channel)?;
        Ok(Datagram {
            from_tag: tag_at(1),
            to_tag: tag_at(9),
            token: u64_at(17),
            channel,
            body: &b[DATAGRAM_HEADER..],
        })
    }

    /// The datagram's bytes; `None` if they would exceed [`MAX_DATAGRAM`].
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        let len = DATAGRAM_HEADER + self.body.len();
        if len > MAX_DATAGRAM {
            return None;
        }
        let mut b = Vec::with_capacity(len);
        b.push(DATAGRAM_VERSION);
        b.extend_from_slice(&self.from_tag);
        b.extend_from_slice(&self.to_tag);
        b.extend_from_slice(&self.token.to_be_bytes());
        b.push(self.channel.index() as u8);
        b.extend_from_slice(self.body);
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_index_is_the_position_in_all() {
        for (i, ch) in Channel::ALL.into_iter().enumerate() {
            assert_eq!(ch.index(), i, "{ch:?}");
        }
    }

    #[test]
    fn stream_frames_round_trip_and_oversized_lengths_are_not_read() {
        let mut buf = Vec::new();
        write_stream_frame(&mut buf, &[1, 2, 3]);
        write_stream_frame(&mut buf, &[]);
        write_stream_frame(&mut buf, &[9; 10]);
        let mut io = libp2p::futures::io::Cursor::new(buf);
        let mut read = || libp2p::futures::executor::block_on(read_stream_frame(&mut io, 8));
        assert_eq!(read().unwrap(), Some(StreamFrame::Data(vec![1, 2, 3])));
        assert_eq!(read().unwrap(), Some(StreamFrame::Data(vec![])));
        assert_eq!(read().unwrap(), Some(StreamFrame::Oversized(10)));

        let mut clean = libp2p::futures::io::Cursor::new(Vec::new());
        let r = libp2p::futures::executor::block_on(read_stream_frame(&mut clean, 8));
        assert_eq!(r.unwrap(), None);
        for cut in [vec![0u8, 0], vec![0, 0, 0, 5, 1, 2]] {
            let mut io = libp2p::futures::io::Cursor::new(cut);
            let r = libp2p::futures::executor::block_on(read_stream_frame(&mut io, 8));
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn datagrams_round_trip_and_malformed_ones_are_named() {
        let d = Datagram {
            from_tag: [3; 8],
            to_tag: [4; 8],
            token: 0x0102_0304_0506_0708,
            channel: Channel::Gossip,
            body: &[1, 2, 3],
        };
        let b = d.to_bytes().unwrap();
        assert_eq!(b.len(), DATAGRAM_HEADER + 3);
        assert_eq!(Datagram::parse(&b), Ok(d));
        assert_eq!(
            Datagram::parse(&b[..DATAGRAM_HEADER - 1]),
            Err(DatagramError::Short)
        );
        let mut v = b.clone();
        v[0] = 1;
        assert_eq!(Datagram::parse(&v), Err(DatagramError::Version));
        let mut c = b.clone();
        c[DATAGRAM_HEADER - 1] = Channel::ALL.len() as u8;
        assert_eq!(Datagram::parse(&c), Err(DatagramError::Channel));
        let body = vec![0u8; MAX_DATAGRAM - DATAGRAM_HEADER + 1];
        assert_eq!(Datagram { body: &body, ..d }.to_bytes(), None);
        let mut long = b;
        long.resize(MAX_DATAGRAM + 1, 0);
        assert_eq!(Datagram::parse(&long), Err(DatagramError::Long));
    }

    /// A reader that serves `data` in pieces of at most `piece` bytes and remembers the
    /// largest buffer it was handed (what the frame reader had allocated to read into).
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        piece: usize,
        largest: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.largest = self.largest.max(buf.len());
            let n = buf.len().min(self.piece).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn frame_buffers_grow_with_the_bytes_that_arrive() {
        let limit = TRANSFER_FRAME_LIMIT;
        // A prefix announcing the limit, then 100 bytes and the end of the stream: the
        // reader must not have set aside the announced megabyte.
        let mut data = (limit as u32).to_be_bytes().to_vec();
        data.extend_from_slice(&[7; 100]);
        let mut io = Trickle {
            data,
            at: 0,
            piece: 4096,
            largest: 0,
        };
        let r = libp2p::futures::executor::block_on(read_stream_frame(&mut io, limit));
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(
            io.largest <= FRAME_BUFFER_START,
            "read into {} bytes for 100 that arrived",
            io.largest
        );

        // A whole frame at the limit arrives intact, in pieces, through a buffer that grew
        // to fit it.
        let body: Vec<u8> = (0..limit).map(|i| (i % 251) as u8).collect();
        let mut data = Vec::new();
        write_stream_frame(&mut data, &body);
        let mut io = Trickle {
            data,
            at: 0,
            piece: 10_000,
            largest: 0,
        };
        let r = libp2p::futures::executor::block_on(read_stream_frame(&mut io, limit));
        assert_eq!(r.unwrap(), Some(StreamFrame::Data(body)));
        assert!(
            io.largest <= limit / 2,
            "the last half is read into the grown part"
        );
    }
}
