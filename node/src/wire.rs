//! How core messages travel between nodes: one libp2p protocol per core; small-message cores
//! use one request-response exchange per batch of frames, the transfer core one long-lived
//! length-prefixed stream per peer and direction.
//!
//! Each core has its own protocol name (`/peerlab/<core>/1`), negotiated with
//! multistream-select, so a peer that speaks only some cores learns that at negotiation. A
//! message is one frame — the `overlay::codec` version byte plus CBOR — written on a fresh
//! substream (QUIC stream or Yamux stream) that the writer then closes; the receiver answers
//! with an empty acknowledgement, which is what libp2p's request-response needs to finish
//! the exchange. Delivery stays best-effort, as the cores assume.
//!
//! **Batches.** One exchange per message made every 16 KiB swarm block cost a substream, a
//! multistream-select negotiation and an acknowledgement, and let a fast core open hundreds
//! of substreams at once (past request-response's `max_concurrent_streams`, Yamux's stream
//! limit and the request timeout), which stalled large transfers. The driver therefore keeps
//! at most a few exchanges in flight per peer and channel and packs the messages waiting
//! behind them into one request: [`BATCH_MARKER`] followed by `u32` big-endian
//! length-prefixed frames, at most the channel's frame limit in total ([`Batch`],
//! [`split_batch`]). A single waiting message is sent as a plain frame, so the marker never
//! collides with a codec frame (whose first byte is the codec version).
//!
//! **Streams (the transfer channel).** Even batched, request-response cost the swarm core an
//! acknowledgement round trip per ≤ 1 MiB batch with only two batches in flight, and each
//! batch was buffered whole before its first block reached the core: fetches ran at 0.16–0.32
//! of one raw stream. [`Channel::Swarm`] therefore uses one long-lived one-way stream per
//! peer and direction (`/peerlab/swarm/2`, opened with rust-libp2p's `libp2p-stream`): the
//! writer sends frames back to back, each a `u32` big-endian length followed by the frame
//! ([`write_stream_frame`], [`read_stream_frame`]), and never waits for an answer. The
//! transport's flow control (QUIC stream credit, Yamux window) is the back-pressure; the
//! driver bounds what waits in front of it. A length above the channel's limit is a strike
//! and ends the stream (the reader cannot resynchronise); nothing of such a frame is read.
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

/// First byte of a batch request (a codec frame starts with the codec version, 1).
pub const BATCH_MARKER: u8 = 0xB7;

/// Bytes of framing each message costs inside a batch (its `u32` length).
pub const BATCH_ENTRY_OVERHEAD: usize = 4;

/// Builds one batch request from frames, never exceeding a byte limit.
#[derive(Debug)]
pub struct Batch {
    buf: Vec<u8>,
    count: usize,
    limit: usize,
}

impl Batch {
    /// An empty batch whose encoding stays within `limit` bytes.
    pub fn new(limit: usize) -> Batch {
        Batch {
            buf: vec![BATCH_MARKER],
            count: 0,
            limit,
        }
    }

    /// Whether `frame` still fits.
    pub fn fits(&self, frame: &[u8]) -> bool {
        self.buf.len() + BATCH_ENTRY_OVERHEAD + frame.len() <= self.limit
    }

    /// Appends a frame (the caller checked [`Batch::fits`]).
    pub fn push(&mut self, frame: &[u8]) {
        self.buf
            .extend_from_slice(&(frame.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(frame);
        self.count += 1;
    }

    /// Frames in the batch.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no frame was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The request bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Why a batch request could not be split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A length prefix or frame runs past the end of the request.
    #[error("batch truncated")]
    Truncated,
    /// A batch with no frame in it.
    #[error("empty batch")]
    Empty,
}

/// The frames of one inbound request: a batch's entries, or the request itself when it
/// is a plain frame. Never panics on hostile input.
pub fn split_batch(request: &[u8]) -> Result<Vec<&[u8]>, BatchError> {
    let Some((&BATCH_MARKER, mut rest)) = request.split_first() else {
        return Ok(vec![request]);
    };
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<BATCH_ENTRY_OVERHEAD>()
            .ok_or(BatchError::Truncated)?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > tail.len() {
            return Err(BatchError::Truncated);
        }
        let (frame, tail) = tail.split_at(len);
        frames.push(frame);
        rest = tail;
    }
    if frames.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(frames)
}

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
    /// Swarm file transfer (`/peerlab/swarm/2`, a long-lived stream; see the module docs).
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
            Channel::Swarm => "/peerlab/swarm/2",
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

    /// Whether the channel travels on a long-lived length-prefixed stream (bulk transfer)
    /// rather than request-response exchanges (small, latency-insensitive messages).
    pub const fn streamed(self) -> bool {
        matches!(self, Channel::Swarm)
    }
}

/// Bytes of the length prefix in front of every frame on a stream.
pub const STREAM_LENGTH_PREFIX: usize = 4;

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
    let mut frame = vec![0u8; len];
    io.read_exact(&mut frame).await?;
    Ok(Some(StreamFrame::Data(frame)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_and_respects_its_limit() {
        let frames: Vec<Vec<u8>> = (0..5u8).map(|i| vec![1, i, i, i]).collect();
        let mut b = Batch::new(1 + 3 * (BATCH_ENTRY_OVERHEAD + 4));
        for f in &frames {
            if b.fits(f) {
                b.push(f);
            }
        }
        assert_eq!(b.len(), 3);
        let bytes = b.into_bytes();
        assert_eq!(bytes.len(), 1 + 3 * 8);
        let got = split_batch(&bytes).unwrap();
        assert_eq!(got, frames[..3].iter().map(|f| &f[..]).collect::<Vec<_>>());
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
    fn plain_frames_pass_through_and_bad_batches_are_errors() {
        assert_eq!(split_batch(&[1, 2, 3]).unwrap(), vec![&[1u8, 2, 3][..]]);
        assert_eq!(split_batch(&[BATCH_MARKER]), Err(BatchError::Empty));
        assert_eq!(
            split_batch(&[BATCH_MARKER, 0, 0, 0, 9, 1]),
            Err(BatchError::Truncated)
        );
        assert_eq!(
            split_batch(&[BATCH_MARKER, 0, 0]),
            Err(BatchError::Truncated)
        );
    }
}
