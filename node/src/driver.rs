//! The tokio + libp2p driver: one task owns the libp2p [`Swarm`] and a sans-IO core.
//!
//! The loop waits on its sources — swarm events, frames from stream reader tasks, inbound
//! streams, requests from the control API (a bounded channel with oneshot replies) and the
//! earliest protocol timer — and after every input drains the core's outbox: `Send` becomes
//! a length-prefixed frame on the long-lived stream of the core's channel to that peer (see
//! [`crate::wire`]), `Timer` goes into a deadline heap, `Event` goes to the API caller
//! waiting on its request id. The tokio sleep only wakes the loop; whether a timer is due is
//! decided by comparing its deadline with the driver's own clock, as quinn's endpoint driver
//! does. No lock is taken around protocol state: only this task touches it.
//!
//! A frame that fails to decode, exceeds its channel's limit or comes from a key type the
//! cores cannot name is a strike against the sending peer; at [`STRIKE_LIMIT`] strikes the
//! peer is disconnected and refused for [`BAN_DURATION`]. Nothing a peer sends can panic
//! the task.
//!
//! **Streams.** Per peer and channel one writer task owns the outbound stream: it
//! takes frames from the driver, coalesces what is waiting into one write of at most
//! [`WRITE_COALESCE_BYTES`] and lets the transport's flow control push back. What waits in
//! front of a writer is bounded ([`MAX_QUEUED_BYTES`], [`MAX_QUEUED_FRAMES`]; overflow is
//! dropped and counted, as delivery is best-effort). One reader task per inbound stream
//! hands frames to the driver through a bounded channel ([`STREAM_EVENT_CAPACITY`]): when the
//! driver falls behind, readers wait, stop reading, and the sender's writes stall in turn.
//!
//! **Connections.** A node dials a peer on its own transport's addresses when it knows any
//! (QUIC by default), so that two nodes keep one connection rather than one per transport.
//! Connections stay open while streams are in use and for the idle timeout after; QUIC's
//! keep-alive and libp2p ping run at [`QUIC_KEEP_ALIVE`] and [`PING_INTERVAL`], slow enough
//! that a node connected to every member of a few-hundred-node testnet does not spend its
//! time on them. A peer that restarted with the same identity is recognised by the boot
//! nonce in its identify agent string ([`agent_version`]); its older connections, which
//! lead to the dead process, are closed at once instead of swallowing frames until they
//! time out.
//!
//! Metrics are recorded into this node's own Prometheus recorder (installed around each
//! input with `metrics::with_local_recorder`), so many nodes in one process keep separate
//! figures.

// The driver is the place where wall-clock time enters: it reads `std::time::Instant` to
// compute protocol time, which clippy.toml forbids in the cores.
#![allow(clippy::disallowed_methods)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use libp2p::futures::{AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol as AddrProto;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, StreamProtocol, Swarm, connection_limits, identify, noise, ping, yamux};
use metrics_exporter_prometheus::PrometheusRecorder;
use peerlab_overlay::{
    CodecError, Context, Instant, Offence, Outbox, Output, PeerId, Protocol, Rng,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::metrics as m;
use crate::wire::{Channel, StreamFrame, read_stream_frame, write_stream_frame};

/// Strike points after which a peer is disconnected and banned: one proven offence
/// (`Offence::PROVEN`, a forged signature or corrupt data) or three bad frames.
pub const STRIKE_LIMIT: u32 = Offence::PROVEN;

/// How long a banned peer is refused.
pub const BAN_DURATION: Duration = Duration::from_secs(600);

/// Most peers remembered as banned; the oldest ban is forgotten first beyond this.
pub const MAX_BANNED: usize = 1024;

/// Most peers whose addresses are remembered (identify, dials, gossip membership).
pub const MAX_ADDRESS_BOOK: usize = 4096;

/// Most addresses remembered per peer.
pub const MAX_ADDRS_PER_PEER: usize = 8;

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

/// Most stream events the driver handles in one turn before it looks at other inputs (and
/// sends the answers they produced together).
const STREAM_EVENTS_PER_TURN: usize = 64;

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

/// Interval of libp2p pings on every connection (the round-trip time `peerlab peers`
/// shows; the first ping goes out when the connection opens). libp2p's default of 15 s made
/// a node connected to 300 peers send 20 pings a second; failure detection does not depend
/// on it (gossip probes do that).
pub const PING_INTERVAL: Duration = Duration::from_secs(300);

/// Interval of identify's periodic re-identification on every connection. Addresses and
/// protocols of a node do not change while it runs; libp2p's default of 5 minutes cost a
/// fully connected 300-node testnet 300 identify exchanges a second.
pub const IDENTIFY_INTERVAL: Duration = Duration::from_secs(1800);

/// QUIC keep-alive: a connection that sent nothing for this long sends a PING frame, so
/// that idle connections live until libp2p's idle timeout closes them and a connection to
/// a vanished peer is noticed. quinn's default through libp2p (5 s) cost a fully connected
/// 300-node testnet tens of thousands of packets per second.
pub const QUIC_KEEP_ALIVE: Duration = Duration::from_secs(60);

/// QUIC idle timeout: a connection that received nothing (not even a keep-alive) for this
/// long is dead. Two and a half keep-alive periods, so one lost keep-alive does not close a
/// live connection. A peer that crashed is noticed by the gossip probes, and one that
/// restarted by its boot nonce, long before this.
pub const QUIC_IDLE_TIMEOUT: Duration = Duration::from_secs(150);

/// Streams a peer may open concurrently on one QUIC connection. A peer uses one long-lived
/// stream per channel (a few briefly, see [`MAX_INBOUND_STREAMS_PER_PEER`]) plus identify
/// and ping: well under 32. quinn reserves per-stream map slots for the whole limit when a
/// connection opens, so libp2p's default of 256 cost ~25 KiB per connection — at 1000
/// in-process nodes with ~100 connections each, gigabytes of empty stream slots.
pub const QUIC_MAX_STREAMS: u32 = 32;

/// Most pending timers; beyond this new timers are dropped with a warning (a core that
/// sets this many is broken).
pub const MAX_TIMERS: usize = 1 << 20;

/// Most API calls waiting for their reply events at once.
pub const MAX_WAITERS: usize = 4096;

/// Capacity of one waiter's event channel (search hits, fetch progress).
pub const WAITER_CAPACITY: usize = 256;

/// Capacity of the API → driver request channel.
pub const REQUEST_CAPACITY: usize = 256;

/// Messages a core may send to itself in one turn before the rest wait for the next turn.
const LOOPBACK_BATCH: usize = 10_000;

/// Period of the driver's own housekeeping (gauges, bootstrap re-dials, ban expiry).
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// What the driver needs from a core beyond [`Protocol`]: how its messages map onto
/// channels and frames, and how its events answer API calls.
pub trait NetCore:
    Protocol<Timer: Send + 'static, Command: Send + 'static, Event: Send + 'static> + Send + 'static
{
    /// The channel (libp2p protocol) a message travels on.
    fn channel(msg: &Self::Message) -> Channel;
    /// Encodes a message into the frame sent on its channel.
    fn encode(msg: &Self::Message) -> Result<Vec<u8>, CodecError>;
    /// Decodes a frame received on `channel` (its size is already checked).
    fn decode(channel: Channel, frame: &[u8]) -> Result<Self::Message, CodecError>;
    /// The request id an event answers, and whether it is the last answer to that id.
    fn reply_to(event: &Self::Event) -> Option<(u64, bool)>;
    /// The command that joins the overlay through peers reached at bootstrap addresses.
    fn bootstrap_command(_peers: Vec<PeerId>) -> Option<Self::Command> {
        None
    }
    /// The command that tells the core this node's own addresses (for membership records).
    fn address_command(_addrs: Vec<String>) -> Option<Self::Command> {
        None
    }
    /// Peer addresses an event reveals (for example a gossip member's address).
    fn addresses_of(_event: &Self::Event) -> Vec<(PeerId, String)> {
        Vec::new()
    }
    /// The command that leaves the overlay gracefully (hand-off) before shutdown.
    fn leave_command() -> Option<Self::Command> {
        None
    }
    /// Called with every event before it is dispatched (metrics, persistence).
    fn observe(&mut self, _event: &Self::Event) {}
    /// Called after every input once the outbox is drained (persistence of acknowledged
    /// writes happens here, before any reply leaves the driver).
    fn after_input(&mut self) {}
}

/// Network-level settings of the driver.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Multiaddrs to listen on.
    pub listen: Vec<Multiaddr>,
    /// Multiaddrs of peers to join through.
    pub bootstrap: Vec<Multiaddr>,
    /// Connections without active streams are closed after this long.
    pub idle_timeout: Duration,
    /// Most established connections in total.
    pub max_connections: u32,
    /// Most established connections per peer.
    pub max_connections_per_peer: u32,
    /// Dial QUIC addresses of a peer when it has any (otherwise TCP ones first).
    pub prefer_quic: bool,
    /// Seed of the core's random source (`None`: from the OS).
    pub seed: Option<u64>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_connections_per_peer: 2,
            prefer_quic: true,
            seed: None,
        }
    }
}

/// The libp2p behaviour of a node: limits, identify, ping and the generic streams that
/// carry every core's channel.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    /// Long-lived streams, one protocol per [`Channel`].
    stream: libp2p_stream::Behaviour,
}

/// Identify protocol version string nodes announce.
pub const IDENTIFY_PROTOCOL: &str = "/peerlab/id/1";

/// The identify agent string: the version and a nonce drawn at each start, by which peers
/// tell a restarted node (same identity, new process) from the one they were connected to.
pub fn agent_version(boot: u64) -> String {
    format!("peerlab/{} boot={boot:016x}", env!("CARGO_PKG_VERSION"))
}

/// The boot nonce of a peerlab agent string (`None` for other agents).
fn boot_nonce(agent: &str) -> Option<&str> {
    agent
        .strip_prefix("peerlab/")?
        .split_once(" boot=")
        .map(|(_, b)| b)
}

/// The addresses of this node's own transport among `all` when there are any (so that two
/// nodes keep one connection, not one per transport), else all of them.
fn preferred_addrs(all: Vec<Multiaddr>, prefer_quic: bool) -> Vec<Multiaddr> {
    let quic = |a: &Multiaddr| a.iter().any(|p| matches!(p, AddrProto::QuicV1));
    if all.iter().any(|a| quic(a) == prefer_quic) {
        all.into_iter().filter(|a| quic(a) == prefer_quic).collect()
    } else {
        all
    }
}

impl Behaviour {
    fn new(key: &Keypair, cfg: &NetConfig, boot: u64) -> Behaviour {
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(cfg.max_connections))
            .with_max_established_per_peer(Some(cfg.max_connections_per_peer))
            .with_max_pending_incoming(Some(cfg.max_connections / 2 + 1));
        Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(agent_version(boot))
                    .with_interval(IDENTIFY_INTERVAL),
            ),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL)),
            stream: libp2p_stream::Behaviour::new(),
        }
    }
}

/// Builds a swarm with QUIC and TCP + Noise + Yamux transports.
pub(crate) fn build_swarm(
    key: Keypair,
    cfg: &NetConfig,
    boot: u64,
) -> Result<Swarm<Behaviour>, String> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| format!("tcp transport: {e}"))?
        .with_quic_config(|mut q| {
            q.keep_alive_interval = QUIC_KEEP_ALIVE;
            q.max_idle_timeout = QUIC_IDLE_TIMEOUT.as_millis() as u32;
            q.max_concurrent_stream_limit = QUIC_MAX_STREAMS;
            q
        })
        .with_behaviour(|key| Behaviour::new(key, cfg, boot))
        .map_err(|e| format!("behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(cfg.idle_timeout))
        .build();
    Ok(swarm)
}

/// Converts a core peer id into a libp2p one.
pub fn to_libp2p(p: &PeerId) -> Option<libp2p::PeerId> {
    libp2p::PeerId::from_bytes(&p.to_libp2p_bytes()).ok()
}

/// Converts a libp2p peer id into a core one (`None` unless it names an Ed25519 key).
pub fn from_libp2p(p: &libp2p::PeerId) -> Option<PeerId> {
    PeerId::from_libp2p_bytes(&p.to_bytes())
}

/// A connected peer as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerInfo {
    /// libp2p peer id (base58).
    pub peer_id: String,
    /// Remote addresses of the open connections.
    pub addresses: Vec<String>,
    /// Last ping round-trip time in milliseconds.
    pub rtt_ms: Option<f64>,
    /// The agent version the peer announced through identify.
    pub agent: Option<String>,
    /// Strikes against the peer (bad frames).
    pub strikes: u32,
}

/// The driver's view of the network, passed to inspection closures.
#[derive(Clone, Debug, Serialize)]
pub struct NetStatus {
    /// This node's libp2p peer id.
    pub peer_id: String,
    /// The addresses this node listens on (with `/p2p/<id>`).
    pub listen_addrs: Vec<String>,
    /// Connected peers.
    pub peers: Vec<PeerInfo>,
    /// Seconds since the driver started.
    pub uptime_secs: f64,
    /// Peers currently banned.
    pub banned: usize,
    /// Bad frames received in total.
    pub bad_frames: u64,
}

type Inspect<P> = Box<dyn FnOnce(&mut P, &NetStatus) + Send>;

/// A request from the API to the driver.
pub(crate) enum Request<P: NetCore> {
    Command(P::Command),
    Call {
        id: u64,
        cmd: P::Command,
        reply: mpsc::Sender<P::Event>,
    },
    Inspect(Inspect<P>),
    Dial(Multiaddr, oneshot::Sender<Result<(), String>>),
    Shutdown(oneshot::Sender<()>),
}

/// Why a request to the driver failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    /// The driver task has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// No answer arrived in time.
    #[error("timed out waiting for the node")]
    Timeout,
    /// The request was refused.
    #[error("{0}")]
    Refused(String),
}

/// A cloneable handle for talking to the driver task.
pub struct DriverHandle<P: NetCore> {
    tx: mpsc::Sender<Request<P>>,
    next_id: Arc<AtomicU64>,
}

impl<P: NetCore> Clone for DriverHandle<P> {
    fn clone(&self) -> Self {
        DriverHandle {
            tx: self.tx.clone(),
            next_id: self.next_id.clone(),
        }
    }
}

impl<P: NetCore> DriverHandle<P> {
    /// Sends a command that expects no answer.
    pub async fn command(&self, cmd: P::Command) -> Result<(), DriverError> {
        self.tx
            .send(Request::Command(cmd))
            .await
            .map_err(|_| DriverError::Stopped)
    }

    /// Sends a command built around a fresh request id and returns the stream of events
    /// answering it (closed after the final one).
    pub async fn call(
        &self,
        make: impl FnOnce(u64) -> P::Command,
    ) -> Result<mpsc::Receiver<P::Event>, DriverError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = mpsc::channel(WAITER_CAPACITY);
        self.tx
            .send(Request::Call {
                id,
                cmd: make(id),
                reply,
            })
            .await
            .map_err(|_| DriverError::Stopped)?;
        Ok(rx)
    }

    /// Sends a command and waits (at most `timeout`) for its final answer.
    pub async fn call_once(
        &self,
        make: impl FnOnce(u64) -> P::Command,
        timeout: Duration,
    ) -> Result<P::Event, DriverError> {
        let mut rx = self.call(make).await?;
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(ev)) => Ok(ev),
            Ok(None) => Err(DriverError::Stopped),
            Err(_) => Err(DriverError::Timeout),
        }
    }

    /// Runs `f` on the core and the network view inside the driver task.
    pub async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut P, &NetStatus) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        let (tx, rx) = oneshot::channel();
        let job: Inspect<P> = Box::new(move |p, n| {
            let _ = tx.send(f(p, n));
        });
        self.tx
            .send(Request::Inspect(job))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Dials an address.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), DriverError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Dial(addr, tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await
            .map_err(|_| DriverError::Stopped)?
            .map_err(DriverError::Refused)
    }

    /// Leaves the overlay gracefully and stops the driver; returns once it stopped.
    pub async fn shutdown(&self) -> Result<(), DriverError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Shutdown(tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }
}

#[derive(Default)]
struct Connected {
    /// Open connections and their remote addresses.
    conns: Vec<(ConnectionId, Multiaddr)>,
    rtt: Option<Duration>,
    agent: Option<String>,
    /// The boot nonce of the peer's process, from identify.
    boot: Option<String>,
}

/// Frames waiting to one peer on one channel until a connection is up.
#[derive(Default)]
struct Pending {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
}

struct Waiter<E> {
    tx: mpsc::Sender<E>,
}

/// What waits in front of one stream writer (frames handed over, not yet written).
#[derive(Default)]
struct Load {
    bytes: AtomicUsize,
    frames: AtomicUsize,
}

/// Counter handles of one channel's traffic, registered once when the driver starts: a
/// `counter!` call per frame would hash the name and labels and look the counter up in the
/// registry for every 16 KiB block sent or received.
struct Traffic {
    bytes_in: metrics::Counter,
    messages_in: metrics::Counter,
    bytes_out: metrics::Counter,
    messages_out: metrics::Counter,
}

impl Traffic {
    /// Registers the counters of `ch` with the current (the node's local) recorder.
    fn register(ch: Channel) -> Traffic {
        Traffic {
            bytes_in: metrics::counter!(m::BYTES_IN, "protocol" => ch.name()),
            messages_in: metrics::counter!(m::MESSAGES_IN, "protocol" => ch.name()),
            bytes_out: metrics::counter!(m::BYTES_OUT, "protocol" => ch.name()),
            messages_out: metrics::counter!(m::MESSAGES_OUT, "protocol" => ch.name()),
        }
    }

    /// Counts one frame of `len` bytes sent.
    fn sent(&self, len: usize) {
        self.bytes_out.increment(len as u64);
        self.messages_out.increment(1);
    }
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
enum StreamEvent {
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
type Incoming = (Channel, libp2p::PeerId, libp2p::Stream);

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

/// The driver task's state.
pub(crate) struct Driver<P: NetCore> {
    swarm: Swarm<Behaviour>,
    core: P,
    rng: Rng,
    outbox: Outbox<P::Message, P::Timer, P::Event>,
    epoch: std::time::Instant,
    /// Protocol time at `epoch`: wall-clock microseconds since 1970, so that versions
    /// written with protocol time keep growing across restarts and compare across nodes.
    epoch_micros: u64,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_vals: BTreeMap<u64, P::Timer>,
    next_timer: u64,
    requests: mpsc::Receiver<Request<P>>,
    waiters: BTreeMap<u64, Waiter<P::Event>>,
    address_book: BTreeMap<libp2p::PeerId, VecDeque<Multiaddr>>,
    connected: BTreeMap<libp2p::PeerId, Connected>,
    strikes: BTreeMap<libp2p::PeerId, u32>,
    banned: BTreeMap<libp2p::PeerId, std::time::Instant>,
    /// Frames waiting per peer and channel for a connection to that peer.
    pending: BTreeMap<(libp2p::PeerId, Channel), Pending>,
    /// Opens outbound streams (cloned into writer tasks).
    control: libp2p_stream::Control,
    /// Inbound streams of every channel.
    incoming: mpsc::Receiver<Incoming>,
    /// Writer tasks per peer and channel.
    writers: BTreeMap<(libp2p::PeerId, Channel), Writer>,
    next_writer: u64,
    /// Reader tasks running per peer and channel.
    readers: BTreeMap<(libp2p::PeerId, Channel), usize>,
    stream_tx: mpsc::Sender<StreamEvent>,
    stream_rx: mpsc::Receiver<StreamEvent>,
    loopback: VecDeque<P::Message>,
    local: PeerId,
    local_libp2p: libp2p::PeerId,
    listen_addrs: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    bootstrapped: bool,
    bad_frames: u64,
    prefer_quic: bool,
    recorder: Arc<PrometheusRecorder>,
    /// Traffic counters per channel, in [`Channel::ALL`] order (registered in `run`).
    traffic: Vec<Traffic>,
}

fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, AddrProto::P2p(_)))
        .collect()
}

/// Wall-clock protocol time: microseconds since 1970 (the driver's clock base).
pub fn wall_clock() -> Instant {
    Instant(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0),
    )
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    #[allow(clippy::disallowed_types)]
    let s = std::collections::hash_map::RandomState::new();
    let mut h = s.build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

impl<P: NetCore> Driver<P> {
    /// Builds the driver, starts listening and returns it with its handle.
    pub(crate) fn new(
        key: Keypair,
        core: P,
        cfg: &NetConfig,
        recorder: Arc<PrometheusRecorder>,
    ) -> Result<(Driver<P>, DriverHandle<P>), String> {
        let local_libp2p = key.public().to_peer_id();
        let local = from_libp2p(&local_libp2p).ok_or("the node key must be Ed25519")?;
        let seed = cfg.seed.unwrap_or_else(random_seed);
        // A fresh nonce per start even with a fixed protocol seed: it names this process.
        let mut swarm = build_swarm(key, cfg, random_seed())?;
        for addr in &cfg.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        }
        let (tx, rx) = mpsc::channel(REQUEST_CAPACITY);
        let mut control = swarm.behaviour().stream.new_control();
        let (incoming_tx, incoming) = mpsc::channel(INCOMING_CAPACITY);
        for ch in Channel::ALL {
            let streams = control
                .accept(StreamProtocol::new(ch.protocol()))
                .map_err(|e| format!("{}: {e}", ch.protocol()))?;
            tokio::spawn(accept_streams(ch, streams, incoming_tx.clone()));
        }
        let (stream_tx, stream_rx) = mpsc::channel(STREAM_EVENT_CAPACITY);
        let driver = Driver {
            swarm,
            core,
            rng: Rng::seed(seed),
            outbox: Outbox::new(),
            epoch: std::time::Instant::now(),
            epoch_micros: wall_clock().0,
            timers: BinaryHeap::new(),
            timer_vals: BTreeMap::new(),
            next_timer: 0,
            requests: rx,
            waiters: BTreeMap::new(),
            address_book: BTreeMap::new(),
            connected: BTreeMap::new(),
            strikes: BTreeMap::new(),
            banned: BTreeMap::new(),
            pending: BTreeMap::new(),
            control,
            incoming,
            writers: BTreeMap::new(),
            next_writer: 0,
            readers: BTreeMap::new(),
            stream_tx,
            stream_rx,
            loopback: VecDeque::new(),
            local,
            local_libp2p,
            listen_addrs: Vec::new(),
            bootstrap: cfg.bootstrap.clone(),
            bootstrapped: cfg.bootstrap.is_empty(),
            bad_frames: 0,
            prefer_quic: cfg.prefer_quic,
            recorder,
            traffic: Vec::new(),
        };
        let handle = DriverHandle {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
        };
        Ok((driver, handle))
    }

    /// This node's libp2p peer id.
    pub(crate) fn local_libp2p(&self) -> libp2p::PeerId {
        self.local_libp2p
    }

    /// Waits until every listener reported its address (at most `timeout`); returns them.
    pub(crate) async fn wait_listening(&mut self, n: usize, timeout: Duration) -> Vec<Multiaddr> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.listen_addrs.len() < n {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(ev) => self.on_swarm_event(ev),
                Err(_) => break,
            }
        }
        self.listen_addrs.clone()
    }

    fn now(&self) -> Instant {
        Instant(self.epoch_micros + self.epoch.elapsed().as_micros() as u64)
    }

    /// Hands one input to the core and sends what it produced.
    fn with_core(&mut self, f: impl FnOnce(&mut P, &mut peerlab_overlay::Cx<'_, P>)) {
        self.feed_core(f);
        self.end_inputs();
    }

    /// Hands one input to the core; what it produces waits in the outbox until
    /// [`Self::end_inputs`]. The frames of one turn are fed this way, so that the answers
    /// to a batch of frames (a seeder's blocks for a pipeline of requests) reach the stream
    /// writers together and leave in few, large writes, rather than one write and one
    /// writer wake-up per 16 KiB block.
    fn feed_core(&mut self, f: impl FnOnce(&mut P, &mut peerlab_overlay::Cx<'_, P>)) {
        let now = self.now();
        let mut cx = Context::new(now, &mut self.rng, &mut self.outbox);
        f(&mut self.core, &mut cx);
    }

    /// Ends a run of inputs: persists, then sends everything in the outbox.
    fn end_inputs(&mut self) {
        // Persist before any reply or frame leaves (acknowledged writes are durable).
        self.core.after_input();
        self.flush();
    }

    fn flush(&mut self) {
        let outs: Vec<_> = self.outbox.drain().collect();
        for out in outs {
            match out {
                Output::Send { to, msg } => self.send(to, msg),
                Output::Timer { at, timer } => {
                    if self.timer_vals.len() >= MAX_TIMERS {
                        tracing::warn!("timer table full; dropping a timer");
                        continue;
                    }
                    let seq = self.next_timer;
                    self.next_timer += 1;
                    self.timer_vals.insert(seq, timer);
                    self.timers.push(Reverse((at, seq)));
                }
                Output::Event(ev) => self.dispatch(ev),
                Output::Offence { peer, offence } => self.penalize(peer, offence),
            }
        }
    }

    /// The addresses to dial `peer` on (see [`preferred_addrs`]).
    fn dial_addrs(&self, peer: &libp2p::PeerId) -> Vec<Multiaddr> {
        let all: Vec<Multiaddr> = self
            .address_book
            .get(peer)
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default();
        preferred_addrs(all, self.prefer_quic)
    }

    fn dispatch(&mut self, ev: P::Event) {
        for (peer, addr) in P::addresses_of(&ev) {
            if let (Some(p), Ok(a)) = (to_libp2p(&peer), addr.parse::<Multiaddr>()) {
                self.remember(p, strip_p2p(&a));
            }
        }
        self.core.observe(&ev);
        if let Some((id, last)) = P::reply_to(&ev)
            && let Some(w) = self.waiters.get(&id)
        {
            // A caller that stopped listening, or one too slow to keep up, loses events
            // rather than stalling the driver.
            let closed = w.tx.try_send(ev).is_err() && w.tx.is_closed();
            if last || closed {
                self.waiters.remove(&id);
            }
        }
    }

    fn send(&mut self, to: PeerId, msg: P::Message) {
        if to == self.local {
            self.loopback.push_back(msg);
            return;
        }
        let Some(peer) = to_libp2p(&to) else { return };
        if self.banned.contains_key(&peer) {
            return;
        }
        let ch = P::channel(&msg);
        let kind = peerlab_overlay::Message::kind(&msg);
        let frame = match P::encode(&msg) {
            Ok(f) if f.len() <= ch.max_frame() => f,
            Ok(f) => {
                tracing::warn!(
                    len = f.len(),
                    channel = ch.name(),
                    "outgoing frame too large"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(%e, "cannot encode a message");
                return;
            }
        };
        if self.connected.contains_key(&peer) {
            let len = frame.len();
            if self.stream_send(peer, ch, frame)
                && let Some(t) = self.traffic.get(ch.index())
            {
                t.sent(len);
            }
            return;
        }
        // Not connected: the frames wait here until the connection is up (then
        // `flush_pending`) or the dial fails (then they are dropped).
        let fresh = !self.pending.keys().any(|(p, _)| *p == peer);
        let q = self.pending.entry((peer, ch)).or_default();
        if q.frames.len() >= MAX_QUEUED_FRAMES || q.bytes + frame.len() > MAX_QUEUED_BYTES {
            metrics::counter!(m::SEND_DROPPED, "protocol" => ch.name()).increment(1);
            return;
        }
        if let Some(t) = self.traffic.get(ch.index()) {
            t.sent(frame.len());
        }
        q.bytes += frame.len();
        q.frames.push_back(frame);
        if fresh {
            metrics::counter!(m::DIALS, "kind" => kind).increment(1);
            let addrs = self.dial_addrs(&peer);
            match self
                .swarm
                .dial(DialOpts::peer_id(peer).addresses(addrs).build())
            {
                // Dialling, or a dial already under way: its outcome decides.
                Ok(()) | Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {}
                // No address known (or refused outright): nothing will deliver these.
                Err(e) => {
                    tracing::debug!(%peer, %e, "cannot dial");
                    self.pending.retain(|(p, _), _| *p != peer);
                    metrics::counter!(m::SEND_FAILED, "protocol" => ch.name()).increment(1);
                }
            }
        }
    }

    /// Hands a frame to the peer's stream writer on `ch`, starting one if there is none
    /// (or the last one stopped taking frames). Dropped (and counted) if too much already
    /// waits there; returns whether the writer took it.
    fn stream_send(&mut self, peer: libp2p::PeerId, ch: Channel, frame: Vec<u8>) -> bool {
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
            self.stream_tx.clone(),
        ));
        self.writers.insert((peer, ch), Writer { id, tx, load });
        &self.writers[&(peer, ch)]
    }

    /// Moves frames that waited for a connection to `peer` into its stream writers.
    fn flush_pending(&mut self, peer: libp2p::PeerId) {
        for ch in Channel::ALL {
            if let Some(q) = self.pending.remove(&(peer, ch)) {
                for f in q.frames {
                    // Already counted as sent when it was queued.
                    self.stream_send(peer, ch, f);
                }
            }
        }
    }

    fn on_stream_event(&mut self, ev: StreamEvent) {
        match ev {
            StreamEvent::Frame { peer, ch, frame } => self.on_frame(peer, ch, &frame),
            StreamEvent::Oversized { peer, ch } => {
                self.strike(peer, ch, "frame over the channel's limit")
            }
            StreamEvent::ReaderClosed { peer, ch } => {
                if let Some(n) = self.readers.get_mut(&(peer, ch)) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.readers.remove(&(peer, ch));
                    }
                }
            }
            StreamEvent::WriterClosed {
                peer,
                ch,
                id,
                error,
            } => {
                if self.writers.get(&(peer, ch)).is_some_and(|w| w.id == id) {
                    self.writers.remove(&(peer, ch));
                }
                if let Some(e) = error {
                    tracing::debug!(%peer, channel = ch.name(), %e, "stream failed");
                    metrics::counter!(m::SEND_FAILED, "protocol" => ch.name()).increment(1);
                }
            }
        }
    }

    fn on_incoming(&mut self, ch: Channel, peer: libp2p::PeerId, stream: libp2p::Stream) {
        if self.banned.contains_key(&peer) {
            return;
        }
        let n = self.readers.entry((peer, ch)).or_default();
        if *n >= MAX_INBOUND_STREAMS_PER_PEER {
            tracing::debug!(%peer, channel = ch.name(), "too many inbound streams; dropped");
            return;
        }
        *n += 1;
        tokio::spawn(read_stream(peer, ch, stream, self.stream_tx.clone()));
    }

    /// Hands one frame read from a stream to the core (its output is sent at the end of the
    /// turn, [`Self::end_inputs`]).
    fn on_frame(&mut self, peer: libp2p::PeerId, ch: Channel, frame: &[u8]) {
        if self.banned.contains_key(&peer) {
            return;
        }
        let Some(from) = from_libp2p(&peer) else {
            self.strike(peer, ch, "not an Ed25519 peer");
            return;
        };
        if let Some(t) = self.traffic.get(ch.index()) {
            t.bytes_in.increment(frame.len() as u64);
            t.messages_in.increment(1);
        }
        match P::decode(ch, frame) {
            Ok(msg) if P::channel(&msg) == ch => {
                self.feed_core(|core, cx| core.handle_message(cx, from, msg));
            }
            Ok(_) => self.strike(peer, ch, "message on the wrong channel"),
            Err(e) => self.strike(peer, ch, &e.to_string()),
        }
    }

    /// Drops addresses of `peer` that a dial just failed on, as long as others remain to
    /// try: a process restarted on new ports leaves its old ones in the book, and since
    /// only the preferred transport's addresses are dialled, a dead one of those would
    /// otherwise hide the live addresses of the other transport for ever.
    fn forget_failed<'a>(
        &mut self,
        peer: &libp2p::PeerId,
        failed: impl Iterator<Item = &'a Multiaddr>,
    ) {
        let Some(list) = self.address_book.get_mut(peer) else {
            return;
        };
        for a in failed {
            let a = strip_p2p(a);
            if list.len() > 1 {
                list.retain(|x| *x != a);
            }
        }
    }

    fn remember(&mut self, peer: libp2p::PeerId, addr: Multiaddr) {
        if peer == self.local_libp2p || addr.is_empty() {
            return;
        }
        if !self.address_book.contains_key(&peer) && self.address_book.len() >= MAX_ADDRESS_BOOK {
            // Forget a peer we are not connected to.
            let victim = self
                .address_book
                .keys()
                .find(|p| !self.connected.contains_key(p))
                .copied();
            match victim {
                Some(v) => {
                    self.address_book.remove(&v);
                }
                None => return,
            }
        }
        let list = self.address_book.entry(peer).or_default();
        if list.contains(&addr) {
            return;
        }
        if list.len() >= MAX_ADDRS_PER_PEER {
            list.pop_front();
        }
        list.push_back(addr);
    }

    fn strike(&mut self, peer: libp2p::PeerId, ch: Channel, why: &str) {
        self.bad_frames += 1;
        metrics::counter!(m::BAD_FRAMES, "protocol" => ch.name()).increment(1);
        tracing::debug!(%peer, channel = ch.name(), why, "bad frame");
        self.add_strikes(peer, Offence::Malformed.severity());
    }

    /// A core rejected `peer`'s input.
    fn penalize(&mut self, peer: PeerId, offence: Offence) {
        metrics::counter!(m::OFFENCES, "offence" => offence.name()).increment(1);
        let Some(peer) = to_libp2p(&peer) else { return };
        tracing::debug!(%peer, offence = offence.name(), "offence");
        self.add_strikes(peer, offence.severity());
    }

    fn add_strikes(&mut self, peer: libp2p::PeerId, points: u32) {
        let n = self.strikes.entry(peer).or_default();
        *n += points;
        if *n >= STRIKE_LIMIT {
            tracing::info!(%peer, "banning peer after repeated bad frames");
            metrics::counter!(m::PEERS_BANNED).increment(1);
            if self.banned.len() >= MAX_BANNED
                && let Some(oldest) = self.banned.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p)
            {
                self.banned.remove(&oldest);
            }
            self.banned
                .insert(peer, std::time::Instant::now() + BAN_DURATION);
            self.strikes.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn status(&self) -> NetStatus {
        let local = self.local_libp2p;
        NetStatus {
            peer_id: local.to_string(),
            listen_addrs: self
                .listen_addrs
                .iter()
                .map(|a| a.clone().with(AddrProto::P2p(local)).to_string())
                .collect(),
            peers: self
                .connected
                .iter()
                .map(|(p, c)| PeerInfo {
                    peer_id: p.to_string(),
                    addresses: c.conns.iter().map(|(_, a)| a.to_string()).collect(),
                    rtt_ms: c.rtt.map(|d| d.as_secs_f64() * 1e3),
                    agent: c.agent.clone(),
                    strikes: self.strikes.get(p).copied().unwrap_or(0),
                })
                .collect(),
            uptime_secs: self.epoch.elapsed().as_secs_f64(),
            banned: self.banned.len(),
            bad_frames: self.bad_frames,
        }
    }

    fn fire_due_timers(&mut self) {
        let now = self.now();
        while let Some(Reverse((at, seq))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(t) = self.timer_vals.remove(&seq) {
                self.with_core(|core, cx| core.handle_timer(cx, t));
            }
        }
    }

    fn run_loopback(&mut self) {
        let mut n = 0;
        while let Some(msg) = self.loopback.pop_front() {
            let from = self.local;
            self.with_core(|core, cx| core.handle_message(cx, from, msg));
            n += 1;
            if n >= LOOPBACK_BATCH {
                break;
            }
        }
    }

    fn housekeeping(&mut self) {
        let now = std::time::Instant::now();
        self.banned.retain(|_, until| *until > now);
        // Callers that gave up (timed out) no longer hold their receiver.
        self.waiters.retain(|_, w| !w.tx.is_closed());
        metrics::gauge!(m::CONNECTED_PEERS).set(self.connected.len() as f64);
        metrics::gauge!(m::PENDING_TIMERS).set(self.timer_vals.len() as f64);
        if !self.bootstrapped && self.connected.is_empty() {
            for addr in self.bootstrap.clone() {
                let _ = self.swarm.dial(addr);
            }
        }
    }

    fn on_request(&mut self, req: Request<P>) -> Option<oneshot::Sender<()>> {
        match req {
            Request::Command(cmd) => self.with_core(|core, cx| core.handle_command(cx, cmd)),
            Request::Call { id, cmd, reply } => {
                if self.waiters.len() >= MAX_WAITERS {
                    // Dropping `reply` tells the caller the node is overloaded.
                    return None;
                }
                self.waiters.insert(id, Waiter { tx: reply });
                self.with_core(|core, cx| core.handle_command(cx, cmd));
            }
            Request::Inspect(job) => {
                let st = self.status();
                job(&mut self.core, &st);
            }
            Request::Dial(addr, reply) => {
                let r = self.swarm.dial(addr).map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Request::Shutdown(reply) => return Some(reply),
        }
        None
    }

    /// Runs the driver until shutdown is requested or every handle is dropped.
    pub(crate) async fn run(mut self) {
        let recorder = self.recorder.clone();
        metrics::with_local_recorder(&*recorder, || {
            self.traffic = Channel::ALL.into_iter().map(Traffic::register).collect();
            self.with_core(|core, cx| core.handle_start(cx));
            for addr in self.bootstrap.clone() {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    tracing::warn!(%addr, %e, "cannot dial bootstrap address");
                }
            }
        });
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        let shutdown = loop {
            let next = self.timers.peek().map(|Reverse((at, _))| *at);
            let wake = next.map(|at| {
                tokio::time::Instant::from_std(
                    self.epoch + Duration::from_micros(at.0.saturating_sub(self.epoch_micros)),
                )
            });
            let sleep = async {
                match wake {
                    Some(w) => tokio::time::sleep_until(w).await,
                    None => std::future::pending().await,
                }
            };
            enum In<P: NetCore> {
                Swarm(Box<SwarmEvent<BehaviourEvent>>),
                Req(Option<Request<P>>),
                Stream(StreamEvent),
                Incoming(Channel, libp2p::PeerId, libp2p::Stream),
                Wake,
                Tick,
            }
            let input: In<P> = tokio::select! {
                ev = self.swarm.select_next_some() => In::Swarm(Box::new(ev)),
                Some(ev) = self.stream_rx.recv() => In::Stream(ev),
                Some((ch, peer, s)) = self.incoming.recv() => In::Incoming(ch, peer, s),
                req = self.requests.recv() => In::Req(req),
                _ = sleep => In::Wake,
                _ = tick.tick() => In::Tick,
            };
            let stop = metrics::with_local_recorder(&*recorder, || {
                let stop = match input {
                    In::Swarm(ev) => {
                        self.on_swarm_event(*ev);
                        None
                    }
                    In::Req(Some(r)) => self.on_request(r).map(Some),
                    In::Req(None) => Some(None),
                    In::Stream(ev) => {
                        // Take what else arrived too before looking at other inputs.
                        self.on_stream_event(ev);
                        for _ in 1..STREAM_EVENTS_PER_TURN {
                            match self.stream_rx.try_recv() {
                                Ok(ev) => self.on_stream_event(ev),
                                Err(_) => break,
                            }
                        }
                        // The frames' answers leave together.
                        self.end_inputs();
                        None
                    }
                    In::Incoming(ch, peer, s) => {
                        self.on_incoming(ch, peer, s);
                        None
                    }
                    In::Wake => None,
                    In::Tick => {
                        self.housekeeping();
                        None
                    }
                };
                self.fire_due_timers();
                self.run_loopback();
                stop
            });
            if let Some(s) = stop {
                break s;
            }
        };
        self.leave().await;
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    /// Graceful leave: the core hands off what it must, and the driver keeps serving until
    /// those frames are delivered (bounded by a grace period).
    async fn leave(&mut self) {
        const GRACE: Duration = Duration::from_secs(3);
        let recorder = self.recorder.clone();
        let Some(cmd) = P::leave_command() else {
            return;
        };
        metrics::with_local_recorder(&*recorder, || {
            self.with_core(|core, cx| core.handle_command(cx, cmd));
        });
        /// How often the grace loop looks at the stream writers' queues.
        const POLL: Duration = Duration::from_millis(20);
        let deadline = tokio::time::Instant::now() + GRACE;
        while self.pending.values().any(|q| !q.frames.is_empty())
            || self
                .writers
                .values()
                .any(|w| w.load.frames.load(Ordering::Relaxed) > 0)
        {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let until = deadline.min(now + POLL);
            if let Ok(ev) = tokio::time::timeout_at(until, self.swarm.select_next_some()).await {
                metrics::with_local_recorder(&*recorder, || self.on_swarm_event(ev));
            }
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
                let local = self.local_libp2p;
                let addrs = self
                    .listen_addrs
                    .iter()
                    .map(|a| a.clone().with(AddrProto::P2p(local)).to_string())
                    .collect();
                if let Some(cmd) = P::address_command(addrs) {
                    self.with_core(|core, cx| core.handle_command(cx, cmd));
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                if self.banned.contains_key(&peer_id) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let remote = endpoint.get_remote_address().clone();
                if endpoint.is_dialer() {
                    self.remember(peer_id, strip_p2p(&remote));
                }
                let c = self.connected.entry(peer_id).or_default();
                c.conns.push((connection_id, remote.clone()));
                self.flush_pending(peer_id);
                metrics::gauge!(m::CONNECTED_PEERS).set(self.connected.len() as f64);
                if endpoint.is_dialer() && !self.bootstrapped {
                    let plain = strip_p2p(&remote);
                    if self.bootstrap.iter().any(|b| strip_p2p(b) == plain)
                        && let Some(p) = from_libp2p(&peer_id)
                    {
                        self.bootstrapped = true;
                        if let Some(cmd) = P::bootstrap_command(vec![p]) {
                            self.with_core(|core, cx| core.handle_command(cx, cmd));
                        }
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.connected.remove(&peer_id);
                    if self.connected.is_empty() && !self.bootstrap.is_empty() {
                        // Isolated: nothing else will reconnect this node, so housekeeping
                        // re-dials the bootstrap addresses and the first one that answers
                        // re-bootstraps the overlay (a seed that restarted, a dropped link).
                        self.bootstrapped = false;
                    }
                    self.pending.retain(|(p, _), _| *p != peer_id);
                    // Dropping a writer's sender ends its task (its stream is gone anyway).
                    self.writers.retain(|(p, _), _| *p != peer_id);
                    metrics::gauge!(m::CONNECTED_PEERS).set(self.connected.len() as f64);
                    if let Some(p) = from_libp2p(&peer_id) {
                        self.with_core(|core, cx| core.handle_peer_down(cx, p));
                    }
                } else if let Some(c) = self.connected.get_mut(&peer_id) {
                    c.conns.retain(|(id, _)| *id != connection_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "dial failed");
                if let libp2p::swarm::DialError::Transport(failed) = &error {
                    self.forget_failed(&peer, failed.iter().map(|(a, _)| a));
                }
                if !self.connected.contains_key(&peer) {
                    // Frames that waited for this connection cannot be delivered.
                    self.pending.retain(|(p, _), _| *p != peer);
                }
                if !self.connected.contains_key(&peer)
                    && let Some(p) = from_libp2p(&peer)
                {
                    self.with_core(|core, cx| core.handle_peer_down(cx, p));
                }
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
                ..
            }) => {
                for a in info.listen_addrs {
                    if !a.iter().any(|p| {
                        matches!(p, AddrProto::Ip4(ip) if ip.is_unspecified())
                            || matches!(p, AddrProto::Ip6(ip) if ip.is_unspecified())
                    }) {
                        self.remember(peer_id, strip_p2p(&a));
                    }
                }
                self.on_agent(peer_id, connection_id, info.agent_version);
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(c) = self.connected.get_mut(&peer) {
                    c.rtt = Some(rtt);
                }
            }
            _ => {}
        }
    }

    /// Records a peer's agent string. A new boot nonce on a connection means the peer
    /// restarted with the same identity: its other connections lead to the old process,
    /// which cannot answer, so they are closed and the writers on them restarted.
    fn on_agent(&mut self, peer: libp2p::PeerId, on: ConnectionId, agent: String) {
        let Some(c) = self.connected.get_mut(&peer) else {
            return;
        };
        let boot = boot_nonce(&agent).map(str::to_owned);
        let restarted = boot.is_some() && c.boot.is_some() && c.boot != boot;
        c.boot = boot;
        c.agent = Some(agent);
        if !restarted {
            return;
        }
        let stale: Vec<ConnectionId> = c
            .conns
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != on)
            .collect();
        tracing::debug!(%peer, stale = stale.len(), "peer restarted; closing its old connections");
        metrics::counter!(m::PEER_RESTARTS).increment(1);
        for id in stale {
            self.swarm.close_connection(id);
        }
        self.writers.retain(|(p, _), _| *p != peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_nonce_is_read_back_from_the_agent_string_only() {
        let agent = agent_version(0x1234);
        assert!(agent.starts_with("peerlab/"));
        assert_eq!(boot_nonce(&agent), Some("0000000000001234"));
        assert_ne!(boot_nonce(&agent_version(1)), boot_nonce(&agent_version(2)));
        assert_eq!(boot_nonce("peerlab/0.1.0"), None);
        assert_eq!(boot_nonce("rust-libp2p/0.46 boot=1"), None);
    }

    #[test]
    fn dials_use_the_own_transport_when_the_peer_has_it() {
        let quic: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let tcp: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let both = vec![tcp.clone(), quic.clone()];
        assert_eq!(preferred_addrs(both.clone(), true), vec![quic.clone()]);
        assert_eq!(preferred_addrs(both, false), vec![tcp.clone()]);
        assert_eq!(preferred_addrs(vec![tcp.clone()], true), vec![tcp]);
        assert_eq!(preferred_addrs(vec![quic.clone()], false), vec![quic]);
    }
}
