//! How core messages travel between nodes: one libp2p protocol per core, each carried on
//! one long-lived, length-prefixed, one-way stream per peer and direction.
//!
//! Each core has its own protocol name (`/peerlab/<core>/2`), negotiated with
//! multistream-select once per stream, so a peer that speaks only some cores learns that at
//! negotiation. A message is one frame — the `overlay::codec` version byte plus CBOR. The
//! sender opens a stream (rust-libp2p's `libp2p-stream`) the first time it has a message for
//! a connected peer on that protocol and keeps it: frames follow each other, each a `u32`
//! big-endian length followed by the frame ([`write_stream_frame`], [`FrameReader`]);
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
//! only after the read finished within the limit.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
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
    /// Chord DHT (`/peerlab/dht/4`).
    Dht,
    /// Gossip membership and data (`/peerlab/gossip/2`).
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
            Channel::Dht => "/peerlab/dht/4",
            Channel::Gossip => "/peerlab/gossip/2",
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

    /// Whether the stream writer encodes this channel's messages (straight into its
    /// coalescing buffer) rather than the driver: the transfer channel's blocks are then
    /// copied once on their way out instead of twice, and the encoding leaves the driver
    /// task. The other channels' messages are small and encoded by the driver, which then
    /// needs no separate length computation for them.
    pub const fn encoded_by_writer(self) -> bool {
        matches!(self, Channel::Swarm)
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

/// One frame read from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamFrame {
    /// A frame within the limit (not yet decoded): a view of the reader's buffer.
    Data(Bytes),
    /// A length prefix above the limit; the frame itself was not read and the stream
    /// cannot be read further.
    Oversized(u64),
}

/// Appends one frame with its length prefix to `buf` (the writer coalesces frames).
pub fn write_stream_frame(buf: &mut Vec<u8>, frame: &[u8]) {
    buf.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    buf.extend_from_slice(frame);
}

/// Reads length-prefixed frames from one stream into a shared buffer and hands each frame
/// out as a [`Bytes`] view of that buffer.
///
/// The transport copies what arrived straight into the buffer; a frame is then split off
/// without another copy, and the swarm decoder keeps a block's payload as a view of the
/// frame ([`peerlab_swarm::wire::decode_shared`]), so the 16 KiB of a block are copied
/// once between the transport and the chunk store. (Reading through a `BufReader` into a
/// fresh zeroed `Vec` per frame, then decoding the payload into a new allocation, copied
/// them three times.)
///
/// Bounds: the buffer holds at most the frame being read plus one read of `read_size`
/// bytes — at most `max_frame + read_size` (plus the 4-byte prefix). A frame handed out
/// keeps the buffer it lives in alive until it is dropped; once every frame of a buffer is
/// gone, the buffer is reused.
pub struct FrameReader<R> {
    io: R,
    /// Initialised bytes; `buf[..filled]` arrived and was not yet handed out.
    buf: BytesMut,
    filled: usize,
    read_size: usize,
    max_frame: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader of frames of at most `max_frame` bytes, reading `read_size` bytes at a time.
    pub fn new(io: R, read_size: usize, max_frame: usize) -> FrameReader<R> {
        FrameReader {
            io,
            buf: BytesMut::new(),
            filled: 0,
            read_size: read_size.max(STREAM_LENGTH_PREFIX),
            max_frame,
        }
    }

    /// Reads the next frame. `Ok(None)` at a clean end of stream (between frames); an end
    /// inside a frame is an `UnexpectedEof` error. After [`StreamFrame::Oversized`] the
    /// stream cannot be read further.
    pub async fn next_frame(&mut self) -> io::Result<Option<StreamFrame>> {
        loop {
            // Bytes still missing before the next frame can be handed out.
            let missing = if self.filled < STREAM_LENGTH_PREFIX {
                STREAM_LENGTH_PREFIX - self.filled
            } else {
                let mut len = [0u8; STREAM_LENGTH_PREFIX];
                len.copy_from_slice(&self.buf[..STREAM_LENGTH_PREFIX]);
                let len = u32::from_be_bytes(len) as usize;
                if len > self.max_frame {
                    return Ok(Some(StreamFrame::Oversized(len as u64)));
                }
                let end = STREAM_LENGTH_PREFIX + len;
                if self.filled >= end {
                    let mut frame = self.buf.split_to(end);
                    self.filled -= end;
                    frame.advance(STREAM_LENGTH_PREFIX);
                    return Ok(Some(StreamFrame::Data(frame.freeze())));
                }
                end - self.filled
            };
            if self.buf.len() - self.filled < missing {
                // Room for the rest of this frame, and at least one read's worth. Only the
                // bytes that arrived move (when the old buffer is still shared by frames
                // handed out, `BytesMut` allocates a new one; otherwise it reuses it).
                self.buf.truncate(self.filled);
                self.buf
                    .resize(self.filled + missing.max(self.read_size), 0);
            }
            let n = self.io.read(&mut self.buf[self.filled..]).await?;
            if n == 0 {
                return if self.filled == 0 {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            self.filled += n;
        }
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

    /// Hands out what it holds at most `step` bytes per read, so frames straddle reads.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    fn reader(data: Vec<u8>, step: usize, read_size: usize) -> FrameReader<Trickle> {
        FrameReader::new(Trickle { data, pos: 0, step }, read_size, 8)
    }

    fn next(r: &mut FrameReader<Trickle>) -> io::Result<Option<StreamFrame>> {
        libp2p::futures::executor::block_on(r.next_frame())
    }

    #[test]
    fn stream_frames_round_trip_and_oversized_lengths_are_not_read() {
        let mut buf = Vec::new();
        write_stream_frame(&mut buf, &[1, 2, 3]);
        write_stream_frame(&mut buf, &[]);
        write_stream_frame(&mut buf, &[7; 8]);
        write_stream_frame(&mut buf, &[4, 5]);
        write_stream_frame(&mut buf, &[9; 10]);
        // Whole reads, byte by byte, and reads that end inside prefixes and frames; read
        // buffers smaller and larger than a frame.
        for (step, read_size) in [(1, 1), (3, 4), (5, 7), (64, 16), (64, 64)] {
            let mut r = reader(buf.clone(), step, read_size);
            let mut held = Vec::new();
            for want in [&[1u8, 2, 3][..], &[], &[7; 8], &[4, 5]] {
                let Some(StreamFrame::Data(f)) = next(&mut r).unwrap() else {
                    panic!("step {step}: a frame")
                };
                assert_eq!(&f[..], want, "step {step}, read size {read_size}");
                // Frames handed out stay valid while the reader goes on.
                held.push(f);
            }
            assert_eq!(next(&mut r).unwrap(), Some(StreamFrame::Oversized(10)));
            assert_eq!(&held[0][..], &[1, 2, 3]);
            assert_eq!(&held[2][..], &[7; 8]);
            assert!(r.buf.len() <= 8 + 4 + read_size.max(4), "bounded buffer");
        }

        assert_eq!(next(&mut reader(Vec::new(), 4, 4)).unwrap(), None);
        for cut in [vec![0u8, 0], vec![0, 0, 0, 5, 1, 2]] {
            let r = next(&mut reader(cut, 1, 4));
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}
