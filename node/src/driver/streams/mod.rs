//! The cores' long-lived streams: the libp2p behaviour that accepts and opens them, one
//! writer task per peer and channel, one reader task per inbound stream.
//!
//! - `behaviour.rs`, `handler.rs`, `upgrade.rs`: peerlab's own `NetworkBehaviour` and
//!   `ConnectionHandler` for the channels' protocols, with a bounded queue of inbound
//!   streams ([`INBOUND_QUEUE`]) that refuses and counts rather than drops silently;
//! - `writer.rs`, `reader.rs`: the tasks that own one stream each;
//! - `delay.rs`: the optional stage in front of each writer that delays outgoing frames
//!   ([`Delay`], off by default);
//! - this file: [`Streams`], the driver's book of those tasks.
//!
//! The tasks are the only part of the driver that runs concurrently with the event loop;
//! they touch no protocol state and talk to the loop through channels. Per peer and channel
//! one writer task owns the outbound stream: it takes frames from the driver, coalesces what
//! is waiting into one write of at most [`WRITE_COALESCE_BYTES`] and lets the transport's
//! flow control push back. What waits in front of a writer is bounded
//! ([`MAX_QUEUED_BYTES`], [`MAX_QUEUED_FRAMES`]; overflow is dropped and counted, as
//! delivery is best-effort). One reader task per inbound stream hands frames to the driver
//! through a bounded channel ([`STREAM_EVENT_CAPACITY`]): when the driver falls behind,
//! readers wait, stop reading, and the sender's writes stall in turn. A reader gives a
//! frame that has begun [`FRAME_READ_DEADLINE`] to arrive whole.

mod behaviour;
mod delay;
mod handler;
mod reader;
mod upgrade;
mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::metrics as m;
use crate::wire::Channel;

pub(crate) use behaviour::{Behaviour, Event};
pub(crate) use delay::{Delay, MAX_DELAY};

/// Most bytes of encoded frames waiting to one peer on one channel (for the connection, or
/// in front of a stream writer); further sends are dropped (delivery is best-effort) so a
/// slow or dead peer cannot grow memory without bound. 16 MiB is many times a swarm
/// pipeline (128 blocks of 16 KiB, `crate::peer::LAN_PIPELINE_DEPTH`).
pub(crate) const MAX_QUEUED_BYTES: usize = 16 << 20;

/// Most frames waiting to one peer on one channel (bounds the queue of small messages the
/// byte limit would let grow long).
pub(crate) const MAX_QUEUED_FRAMES: usize = 4096;

/// Most bytes a stream writer puts into one write: frames waiting together leave in one
/// transport write (fewer Yamux frames, QUIC packets built from a full buffer), while a
/// single write stays small enough not to hold a large copy per peer.
pub(crate) const WRITE_COALESCE_BYTES: usize = 256 * 1024;

/// Capacity of the channel from stream reader tasks to the driver, in frames. Readers wait
/// when it is full, which stops them reading and lets flow control slow the senders; 128
/// frames is one LAN swarm pipeline of 16 KiB blocks (2 MiB), so the driver has work
/// queued while a batch is handled, and at most 128 MiB if every frame is at the 1 MiB
/// transfer limit.
pub(crate) const STREAM_EVENT_CAPACITY: usize = 128;

/// Most inbound streams one peer may hold open per channel. An honest peer uses one
/// (two briefly, when it replaced an idle writer or holds two connections); more are dropped
/// so that a peer cannot make the node run unbounded reader tasks.
pub(crate) const MAX_INBOUND_STREAMS_PER_PEER: usize = 4;

/// How long a frame may take to arrive once its first byte has: a 1 MiB frame (the
/// transfer limit) at 35 KiB/s, far below any link a node runs on, so only a peer that
/// starts a frame and stops sending hits it. Between frames a stream may stay idle.
pub(crate) const FRAME_READ_DEADLINE: Duration = Duration::from_secs(30);

/// A stream writer with nothing to send for this long closes its stream, so a connection
/// without traffic can reach libp2p's idle timeout; the next frame opens a new stream.
/// [`stream_idle`] picks it from the connection idle timeout, between these bounds.
pub(crate) const STREAM_IDLE: Duration = Duration::from_secs(30);

/// The longest a stream writer idles: longer than the periods at which a node's protocols
/// use a connection at rest (flooding keepalives every 30 s, DHT maintenance at 32 s,
/// gossip's push-pulls at 30–150 s), so that periodic traffic does not pay for a stream's
/// close and reopening every time — on loopback ten small packets, which made half of a
/// 100-node testnet's bytes at rest when streams idled for 30 s
/// (docs/experiments/compare.md).
pub(crate) const STREAM_IDLE_MAX: Duration = Duration::from_secs(120);

/// How long a stream writer idles before it closes its stream, for connections that close
/// after `idle_timeout` without streams: half of it (so a connection nobody uses closes
/// within one and a half idle timeouts, and in-process testnets, at 60 s, keep their
/// connections as short-lived as they need), between [`STREAM_IDLE`] and
/// [`STREAM_IDLE_MAX`].
pub(crate) fn stream_idle(idle_timeout: Duration) -> Duration {
    (idle_timeout / 2).clamp(STREAM_IDLE, STREAM_IDLE_MAX)
}

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
    /// A frame began but did not arrive whole within [`FRAME_READ_DEADLINE`]; the reader
    /// stopped.
    Stalled { peer: libp2p::PeerId, ch: Channel },
    /// An inbound stream ended (closed by the peer, reset, or after an oversized or stalled
    /// frame).
    ReaderClosed { peer: libp2p::PeerId, ch: Channel },
    /// A writer task ended: idle, its stream failed, or the stream could not be opened.
    WriterClosed {
        peer: libp2p::PeerId,
        ch: Channel,
        id: u64,
        error: Option<String>,
    },
}

/// The stream tasks of every peer, as the driver sees them.
pub(super) struct Streams {
    /// Writer tasks per peer and channel.
    writers: BTreeMap<(libp2p::PeerId, Channel), Writer>,
    next_writer: u64,
    /// Reader tasks running per peer and channel.
    readers: BTreeMap<(libp2p::PeerId, Channel), usize>,
    /// Where stream tasks report (cloned into each).
    events: mpsc::Sender<StreamEvent>,
    /// Delay of outgoing frames, and the seed each writer's delay stage draws from.
    delay: Option<(Delay, u64)>,
    /// How long a writer idles before it closes its stream ([`stream_idle`]).
    idle: Duration,
}

impl Streams {
    /// No tasks yet; they will report to `events`, and writers close their streams after
    /// `idle` without a frame.
    pub(super) fn new(
        events: mpsc::Sender<StreamEvent>,
        delay: Option<(Delay, u64)>,
        idle: Duration,
    ) -> Streams {
        Streams {
            writers: BTreeMap::new(),
            next_writer: 0,
            readers: BTreeMap::new(),
            events,
            delay,
            idle,
        }
    }

    /// Hands a frame to the peer's stream writer on `ch`, starting one if there is none
    /// (or the last one stopped taking frames; `net` opens its stream). Dropped (and
    /// counted) if too much already waits there; returns whether the writer took it.
    pub(super) fn send(
        &mut self,
        net: &mut Behaviour,
        peer: libp2p::PeerId,
        ch: Channel,
        frame: Vec<u8>,
    ) -> bool {
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
                _ => self.spawn_writer(net, peer, ch),
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

    /// Whether frames wait in front of a writer to `peer` (a transfer or a burst in
    /// flight).
    pub(super) fn busy(&self, peer: &libp2p::PeerId) -> bool {
        Channel::ALL.into_iter().any(|ch| {
            self.writers
                .get(&(*peer, ch))
                .is_some_and(|w| w.load.frames.load(Ordering::Relaxed) > 0)
        })
    }

    fn spawn_writer(&mut self, net: &mut Behaviour, peer: libp2p::PeerId, ch: Channel) -> &Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let load = Arc::new(Load::default());
        let id = self.next_writer;
        self.next_writer += 1;
        let rx = match self.delay {
            Some((delay, seed)) => {
                let (stage_tx, stage_rx) = mpsc::unbounded_channel();
                let rng = peerlab_overlay::Rng::seed(seed ^ id);
                tokio::spawn(delay::delay_stage(rx, stage_tx, delay, rng));
                stage_rx
            }
            None => rx,
        };
        tokio::spawn(writer::write_stream(
            net.open(peer, ch),
            (peer, ch, id),
            self.idle,
            rx,
            load.clone(),
            self.events.clone(),
        ));
        self.writers.insert((peer, ch), Writer { id, tx, load });
        &self.writers[&(peer, ch)]
    }

    /// Starts a reader task on an inbound stream, unless `peer` already holds
    /// [`MAX_INBOUND_STREAMS_PER_PEER`] on `ch`; then the stream is dropped and `false`
    /// returned.
    pub(super) fn accept(
        &mut self,
        ch: Channel,
        peer: libp2p::PeerId,
        stream: libp2p::Stream,
    ) -> bool {
        let n = self.readers.entry((peer, ch)).or_default();
        if *n >= MAX_INBOUND_STREAMS_PER_PEER {
            tracing::debug!(%peer, channel = ch.name(), "too many inbound streams; dropped");
            return false;
        }
        *n += 1;
        tokio::spawn(reader::read_stream(
            peer,
            ch,
            stream,
            FRAME_READ_DEADLINE,
            self.events.clone(),
        ));
        true
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
