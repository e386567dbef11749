//! The cores' long-lived streams: one writer task per peer and channel, one reader task
//! per inbound stream, one acceptor task per channel.
//!
//! These tasks are the only part of the driver that runs concurrently with the event loop;
//! they touch no protocol state and talk to the loop through channels. Per peer and channel
//! one writer task owns the outbound stream: it takes frames from the driver, coalesces what
//! is waiting into one write of at most [`WRITE_COALESCE_BYTES`] and lets the transport's
//! flow control push back. What waits in front of a writer is bounded
//! ([`MAX_QUEUED_BYTES`], [`MAX_QUEUED_FRAMES`]; overflow is dropped and counted, as
//! delivery is best-effort). One reader task per inbound stream hands frames to the driver
//! through a bounded channel ([`STREAM_EVENT_CAPACITY`]): when the driver falls behind,
//! readers wait, stop reading, and the sender's writes stall in turn.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use libp2p::StreamProtocol;
use libp2p::futures::{AsyncWriteExt, StreamExt};
use tokio::sync::mpsc;

use crate::NodeError;
use crate::metrics as m;
use crate::wire::{Channel, StreamFrame, read_stream_frame, write_stream_frame};

/// Most bytes of encoded frames waiting to one peer on one channel (for the connection, or
/// in front of a stream writer); further sends are dropped (delivery is best-effort) so a
/// slow or dead peer cannot grow memory without bound. 16 MiB is many times a swarm
/// pipeline (128 blocks of 16 KiB, `crate::peer::LAN_PIPELINE_DEPTH`).
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

/// Most frames waiting to one peer on one channel (bounds the queue of small messages the
/// byte limit would let grow long).
pub const MAX_QUEUED_FRAMES: usize = 4096;

/// Most bytes a stream writer puts into one write: frames waiting together leave in one
/// transport write (fewer Yamux frames, QUIC packets built from a full buffer), while a
/// single write stays small enough not to hold a large copy per peer.
pub const WRITE_COALESCE_BYTES: usize = 256 * 1024;

/// Capacity of the channel from stream reader tasks to the driver, in frames. Readers wait
/// when it is full, which stops them reading and lets flow control slow the senders; 128
/// frames is one LAN swarm pipeline of 16 KiB blocks (2 MiB), so the driver has work
/// queued while a batch is handled, and at most 128 MiB if every frame is at the 1 MiB
/// transfer limit.
pub const STREAM_EVENT_CAPACITY: usize = 128;

/// Capacity of the channel from the stream acceptor tasks to the driver, in inbound streams:
/// a burst of new peers each opening a stream per protocol (a few hundred nodes starting
/// together) waits here rather than being dropped.
pub const INCOMING_CAPACITY: usize = 1024;

/// Most inbound streams one peer may hold open per channel. An honest peer uses one
/// (two briefly, when it replaced an idle writer or holds two connections); more are dropped
/// so that a peer cannot make the node run unbounded reader tasks.
pub const MAX_INBOUND_STREAMS_PER_PEER: usize = 4;

/// How long after a stream writer opened its stream a drop by the peer is repaired by
/// writing everything again on a new stream (see `write_stream`). An acceptor that drops an
/// inbound stream does so as it arrives, within milliseconds; five seconds leave room for a
/// loaded machine while keeping a peer that read frames and then went away out of it.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(5);

/// Most bytes a stream writer keeps for such a replay: what the first frames on a stream
/// need (control messages, a pipeline of requests), not a transfer.
pub const REPLAY_BYTES: usize = 256 * 1024;

/// Most times one stream writer opens its stream again after a drop.
pub const MAX_REOPENS: u32 = 3;

/// A stream writer with nothing to send for this long closes its stream, so a connection
/// without traffic can reach the idle timeout; the next frame opens a new stream.
pub const STREAM_IDLE: Duration = Duration::from_secs(30);

/// What waits in front of one stream writer (frames handed over, not yet written).
#[derive(Default)]
struct Load {
    bytes: AtomicUsize,
    frames: AtomicUsize,
}

/// The driver's end of one stream writer task.
struct Writer {
    /// Tells stale [`StreamEvent::WriterClosed`] reports apart from the current writer's.
    id: u64,
    /// Unbounded as a channel, bounded by `load` (checked before every send).
    tx: mpsc::UnboundedSender<Vec<u8>>,
    load: Arc<Load>,
}

/// What stream tasks report to the driver.
pub(super) enum StreamEvent {
    /// A frame within the channel's limit arrived.
    Frame {
        peer: libp2p::PeerId,
        ch: Channel,
        frame: Vec<u8>,
    },
    /// A length prefix above the channel's limit; the reader stopped.
    Oversized { peer: libp2p::PeerId, ch: Channel },
    /// An inbound stream ended (closed by the peer, reset, or after an oversized frame).
    ReaderClosed { peer: libp2p::PeerId, ch: Channel },
    /// A writer task ended: idle, its stream failed, or the stream could not be opened.
    WriterClosed {
        peer: libp2p::PeerId,
        ch: Channel,
        id: u64,
        error: Option<String>,
    },
}

/// An inbound stream handed from an acceptor task to the driver.
pub(super) type Incoming = (Channel, libp2p::PeerId, libp2p::Stream);

/// The stream tasks of every peer, as the driver sees them.
pub(super) struct Streams {
    /// Opens outbound streams (cloned into writer tasks).
    control: libp2p_stream::Control,
    /// Writer tasks per peer and channel.
    writers: BTreeMap<(libp2p::PeerId, Channel), Writer>,
    next_writer: u64,
    /// Reader tasks running per peer and channel.
    readers: BTreeMap<(libp2p::PeerId, Channel), usize>,
    /// Where stream tasks report (cloned into each).
    events: mpsc::Sender<StreamEvent>,
}

impl Streams {
    /// Starts an acceptor task per channel that hands inbound streams to `incoming`; stream
    /// tasks report to `events`.
    pub(super) fn new(
        mut control: libp2p_stream::Control,
        incoming: mpsc::Sender<Incoming>,
        events: mpsc::Sender<StreamEvent>,
    ) -> Result<Streams, NodeError> {
        for ch in Channel::ALL {
            let streams = control
                .accept(StreamProtocol::new(ch.protocol()))
                .map_err(|source| NodeError::Protocol {
                    protocol: ch.protocol(),
                    source,
                })?;
            tokio::spawn(accept_streams(ch, streams, incoming.clone()));
        }
        Ok(Streams {
            control,
            writers: BTreeMap::new(),
            next_writer: 0,
            readers: BTreeMap::new(),
            events,
        })
    }

    /// Hands a frame to the peer's stream writer on `ch`, starting one if there is none
    /// (or the last one stopped taking frames). Dropped (and counted) if too much already
    /// waits there; returns whether the writer took it.
    pub(super) fn send(&mut self, peer: libp2p::PeerId, ch: Channel, frame: Vec<u8>) -> bool {
        let len = frame.len();
        if let Some(w) = self.writers.get(&(peer, ch))
            && (w.load.frames.load(Ordering::Relaxed) >= MAX_QUEUED_FRAMES
                || w.load.bytes.load(Ordering::Relaxed) + len > MAX_QUEUED_BYTES)
        {
            metrics::counter!(m::SEND_DROPPED, "protocol" => ch.name()).increment(1);
            return false;
        }
        let mut frame = frame;
        for _ in 0..2 {
            let w = match self.writers.get(&(peer, ch)) {
                Some(w) if !w.tx.is_closed() => w,
                _ => self.spawn_writer(peer, ch),
            };
            w.load.frames.fetch_add(1, Ordering::Relaxed);
            w.load.bytes.fetch_add(len, Ordering::Relaxed);
            match w.tx.send(frame) {
                Ok(()) => return true,
                // The writer went idle between the check and the send: a fresh one takes it.
                Err(mpsc::error::SendError(f)) => {
                    frame = f;
                    self.writers.remove(&(peer, ch));
                }
            }
        }
        metrics::counter!(m::SEND_DROPPED, "protocol" => ch.name()).increment(1);
        false
    }

    fn spawn_writer(&mut self, peer: libp2p::PeerId, ch: Channel) -> &Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let load = Arc::new(Load::default());
        let id = self.next_writer;
        self.next_writer += 1;
        tokio::spawn(write_stream(
            self.control.clone(),
            peer,
            ch,
            id,
            rx,
            load.clone(),
            self.events.clone(),
        ));
        self.writers.insert((peer, ch), Writer { id, tx, load });
        &self.writers[&(peer, ch)]
    }

    /// Starts a reader task on an inbound stream, unless `peer` already holds
    /// [`MAX_INBOUND_STREAMS_PER_PEER`] on `ch` (then the stream is dropped).
    pub(super) fn accept(&mut self, ch: Channel, peer: libp2p::PeerId, stream: libp2p::Stream) {
        let n = self.readers.entry((peer, ch)).or_default();
        if *n >= MAX_INBOUND_STREAMS_PER_PEER {
            tracing::debug!(%peer, channel = ch.name(), "too many inbound streams; dropped");
            return;
        }
        *n += 1;
        tokio::spawn(read_stream(peer, ch, stream, self.events.clone()));
    }

    /// A reader task ended.
    pub(super) fn reader_closed(&mut self, peer: libp2p::PeerId, ch: Channel) {
        if let Some(n) = self.readers.get_mut(&(peer, ch)) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.readers.remove(&(peer, ch));
            }
        }
    }

    /// Writer task `id` ended (a stale report of a replaced writer changes nothing).
    pub(super) fn writer_closed(&mut self, peer: libp2p::PeerId, ch: Channel, id: u64) {
        if self.writers.get(&(peer, ch)).is_some_and(|w| w.id == id) {
            self.writers.remove(&(peer, ch));
        }
    }

    /// Ends the writers to `peer` (dropping a writer's sender ends its task).
    pub(super) fn close_writers(&mut self, peer: libp2p::PeerId) {
        self.writers.retain(|(p, _), _| *p != peer);
    }

    /// Whether any writer still has frames to write.
    pub(super) fn writing(&self) -> bool {
        self.writers
            .values()
            .any(|w| w.load.frames.load(Ordering::Relaxed) > 0)
    }
}

/// Moves the inbound streams of one channel from libp2p-stream to the driver as they come.
/// libp2p-stream hands them over through a channel with room for a single stream and drops
/// any that arrive while it is full; the driver, busy with a turn, would lose the streams
/// of a burst (twenty nodes joining through one seed at once), so this task, woken by each
/// arrival, takes them at once and waits instead in front of the driver's larger channel.
async fn accept_streams(
    ch: Channel,
    mut streams: libp2p_stream::IncomingStreams,
    to_driver: mpsc::Sender<Incoming>,
) {
    while let Some((peer, stream)) = streams.next().await {
        if to_driver.send((ch, peer, stream)).await.is_err() {
            return;
        }
    }
}

/// Owns one outbound stream: opens it, then writes the frames the driver hands over,
/// coalescing those waiting into one write, until the driver drops its sender, the stream
/// fails, or nothing was sent for [`STREAM_IDLE`].
///
/// A stream the peer drops unread is opened again and what was written on it is written
/// again: libp2p-stream hands inbound streams to the peer's acceptor through a channel with
/// room for one, shared by all its connections, and drops those that arrive while it is full
/// (a burst of new connections at start-up lost dozens of frames that way, DHT requests among
/// them, each then costing a request timeout). The writer notices the drop at once by
/// reading its stream — a peer never writes on it, so the read ends only when the peer's
/// side is gone — or when a write fails. Only a drop within [`REPLAY_WINDOW`] of opening,
/// with at most [`REPLAY_BYTES`] written, is repaired, at most [`MAX_REOPENS`] times: an
/// accepted stream is read from the start, so what a peer dropped that early it never
/// read, while a later failure (a peer gone) ends the writer as before.
async fn write_stream(
    mut control: libp2p_stream::Control,
    peer: libp2p::PeerId,
    ch: Channel,
    id: u64,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    load: Arc<Load>,
    events: mpsc::Sender<StreamEvent>,
) {
    use libp2p::futures::AsyncReadExt as _;
    let result: Result<(), String> = async {
        // Everything written on the current stream while it may still be replayed.
        let mut replay: Option<Vec<u8>> = Some(Vec::new());
        let mut reopens = 0;
        // Grows to what this peer's traffic needs (a few hundred bytes for control messages,
        // about WRITE_COALESCE_BYTES plus a frame while blocks flow).
        let mut buf = Vec::new();
        'open: loop {
            let stream = control
                .open_stream(peer, StreamProtocol::new(ch.protocol()))
                .await
                .map_err(|e| e.to_string())?;
            let replay_until = tokio::time::Instant::now() + REPLAY_WINDOW;
            let (mut rd, mut wr) = stream.split();
            // Whether the peer dropped this stream early enough, with little enough written,
            // to write it all again on a new one.
            let may_reopen = |replay: &Option<Vec<u8>>, reopens: &mut u32| {
                let ok = replay.is_some()
                    && *reopens < MAX_REOPENS
                    && tokio::time::Instant::now() < replay_until;
                if ok {
                    *reopens += 1;
                    metrics::counter!(m::STREAMS_REOPENED, "protocol" => ch.name()).increment(1);
                }
                ok
            };
            if let Some(r) = replay.as_ref().filter(|r| !r.is_empty())
                && let Err(e) = write_flush(&mut wr, r).await
            {
                if may_reopen(&replay, &mut reopens) {
                    continue 'open;
                }
                return Err(e.to_string());
            }
            let mut probe = [0u8; 1];
            loop {
                let next = tokio::select! {
                    r = tokio::time::timeout(STREAM_IDLE, rx.recv()) => r,
                    _ = rd.read(&mut probe) => {
                        // The peer's side is gone: dropped unread, or the peer went away.
                        if may_reopen(&replay, &mut reopens) {
                            continue 'open;
                        }
                        return Err("stream closed by the peer".to_string());
                    }
                };
                let first = match next {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => {
                        // Idle: refuse further frames, but write those already handed over.
                        rx.close();
                        match rx.try_recv() {
                            Ok(f) => f,
                            Err(_) => break,
                        }
                    }
                };
                buf.clear();
                let mut frames = 1;
                let mut bytes = first.len();
                write_stream_frame(&mut buf, &first);
                while buf.len() < WRITE_COALESCE_BYTES
                    && let Ok(f) = rx.try_recv()
                {
                    write_stream_frame(&mut buf, &f);
                    frames += 1;
                    bytes += f.len();
                }
                // Kept for a replay only while one could still happen.
                if tokio::time::Instant::now() >= replay_until {
                    replay = None;
                }
                if let Some(r) = replay.as_mut() {
                    if r.len() + buf.len() <= REPLAY_BYTES {
                        r.extend_from_slice(&buf);
                    } else {
                        replay = None;
                    }
                }
                let written = write_flush(&mut wr, &buf).await;
                load.frames.fetch_sub(frames, Ordering::Relaxed);
                load.bytes.fetch_sub(bytes, Ordering::Relaxed);
                if let Err(e) = written {
                    if may_reopen(&replay, &mut reopens) {
                        continue 'open;
                    }
                    return Err(e.to_string());
                }
            }
            // The driver let go, or idle: end the stream cleanly (the peer's reader sees
            // its end and stops).
            let _ = wr.close().await;
            return Ok(());
        }
    }
    .await;
    let _ = events
        .send(StreamEvent::WriterClosed {
            peer,
            ch,
            id,
            error: result.err(),
        })
        .await;
}

/// Writes `bytes` and flushes them.
async fn write_flush(
    wr: &mut (impl libp2p::futures::AsyncWrite + Unpin),
    bytes: &[u8],
) -> std::io::Result<()> {
    wr.write_all(bytes).await?;
    wr.flush().await
}

/// Reads length-prefixed frames from one inbound stream and hands them to the driver,
/// waiting while the driver's channel is full (back-pressure to the sender).
async fn read_stream(
    peer: libp2p::PeerId,
    ch: Channel,
    stream: libp2p::Stream,
    events: mpsc::Sender<StreamEvent>,
) {
    let mut io = libp2p::futures::io::BufReader::with_capacity(ch.read_buffer(), stream);
    loop {
        let ev = match read_stream_frame(&mut io, ch.max_frame()).await {
            Ok(Some(StreamFrame::Data(frame))) => StreamEvent::Frame { peer, ch, frame },
            Ok(Some(StreamFrame::Oversized(_))) => StreamEvent::Oversized { peer, ch },
            // A clean end, or the stream or connection failed: nothing to penalise.
            Ok(None) | Err(_) => break,
        };
        let stop = matches!(ev, StreamEvent::Oversized { .. });
        if events.send(ev).await.is_err() || stop {
            break;
        }
    }
    let _ = events.send(StreamEvent::ReaderClosed { peer, ch }).await;
}
