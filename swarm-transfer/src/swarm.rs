//! The swarm core: one sans-IO state machine running any number of transfers.
//!
//! [`Swarm`] implements [`Protocol`]. Transfers are keyed by [`ContentId`]; a transfer is
//! either *sharing* (started by [`Command::Share`] with a complete store) or *fetching*
//! (started by [`Command::Fetch`] with a content id and some providers). A fetch first
//! asks one provider at a time for the manifest and verifies it against the content id;
//! only then is a store opened through the [`StoreFactory`] and the swarm joined.
//!
//! Per connected peer the transfer keeps BEP 3's four flags (am/peer choking, am/peer
//! interested), the peer's bitfield and up to [`Config::pipeline_depth`] outstanding
//! block requests. Blocks are buffered by the [`Picker`] until their chunk is complete;
//! the chunk is then hashed with BLAKE3 and only a matching chunk is written to the
//! store, announced with `Have` and served. A chunk that fails is dropped and fetched
//! again. Its blocks are kept (a bounded number of such records) until the chunk passes;
//! then every peer whose block differs from the verified data provably sent corrupt
//! data and gets a strike (libtorrent's "smart ban"); a sole contributor gets the strike
//! at once. [`Config::ban_after_corrupt`] strikes ban the peer from the transfer.
//! Protocol violations (a block outside the file, an oversized block, a request for a
//! chunk we never announced, a malformed bitfield, a manifest that does not match its id)
//! are typed [`ProtocolError`]s: the message is dropped, nothing is stored, the peer
//! is penalised, and [`Config::max_penalties`] penalties ban it.
//!
//! Uploads follow the [`Choker`] (tit-for-tat); downloads follow the [`Picker`].
//!
//! Upload scheduling: by default a requested block goes to the driver as soon as the
//! request arrives. A core told its uplink rate ([`Config::upload_rate`]) queues requests
//! itself, hands the driver a block only while the driver's send queue is shorter than
//! [`Config::upload_horizon`] (a [`Timer::Pump`] wakes it when it drains), and serves its
//! unchoked peers one chunk at a time: the chunk with the *turn* is sent back to back
//! before other peers' requests, and the next turn goes to the oldest waiting request,
//! peers holding no chunk yet first.
//!
//! Discovery is left to the application: the core emits [`Event::Discovery`] asking it
//! to announce a content id in the DHT (every [`Config::announce_interval`], with
//! [`Config::provider_ttl`]) or to look up providers, and the answer comes back as
//! [`Command::AddPeers`]. See [`crate::discovery`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use peerlab_overlay::{Context, Cx, Instant, Message as _, Outbox, Output, PeerId, Protocol};

use crate::bitfield::Bitfield;
use crate::choker::{self, Candidate, Choker};
use crate::discovery::Discovery;
use crate::manifest::{BLOCK_SIZE, ContentId, Manifest, ManifestError};
use crate::picker::{self, BlockOutcome, BlockRef, Picker};
use crate::storage::{ChunkStore, StoreError, StoreFactory};
use crate::wire::{Body, Message};

/// Swarm parameters. Defaults follow BEP 3 and libtorrent where they have one.
#[derive(Debug, Clone)]
pub struct Config {
    /// Outstanding block requests per peer. Default 8: with 16 KiB blocks that is 128 KiB
    /// in flight, enough to fill a 10 Mbit/s link over a 100 ms round trip.
    pub pipeline_depth: usize,
    /// Piece-picking rules.
    pub picker: picker::Config,
    /// Choking rules.
    pub choker: choker::Config,
    /// Most connected peers per transfer (libtorrent's default connection limit is 50–80).
    /// Default 80.
    pub max_peers: usize,
    /// Most known-but-unconnected candidate peers kept per transfer. Default 200.
    pub max_candidates: usize,
    /// Most transfers one core runs at once. Default 64.
    pub max_transfers: usize,
    /// A request unanswered for this long is dropped and re-issued elsewhere. Default 60 s.
    pub request_timeout: Duration,
    /// A connection whose bitfield has not arrived after this long is dropped. Default 30 s.
    pub handshake_timeout: Duration,
    /// How long a manifest request may take before the next provider is asked. Default 2 s:
    /// a manifest is one small frame (32 B per chunk), and a peer asked while it is itself
    /// still waiting for the manifest queues the request, so in a flash crowd peers that ask
    /// each other in a cycle wait out this timeout — at 10 s it left every peer's uplink idle
    /// for the first 10 s of a 100-peer flash crowd.
    pub manifest_timeout: Duration,
    /// Providers asked for the manifest at once; the first valid answer wins and later
    /// ones are ignored. Default 3: in a flash crowd most providers are themselves still
    /// waiting for the manifest, and asking one at a time left peers idle for several
    /// timeouts before the first chunk could be requested. A manifest is small (32 B per
    /// chunk), so the extra answers cost little.
    pub manifest_fanout: usize,
    /// Most manifest requests queued while our own manifest is still coming. Default 64.
    pub max_manifest_waiters: usize,
    /// Corrupt chunks attributed to a peer before it is banned. Default 2.
    pub ban_after_corrupt: u32,
    /// Protocol violations tolerated before a peer is banned. Default 3.
    pub max_penalties: u32,
    /// Most failed-chunk records kept for smart banning per transfer. Default 16 (each
    /// holds one chunk's blocks).
    pub max_failed_records: usize,
    /// How often a provider re-announces a content id in the DHT. Default 15 min.
    pub announce_interval: Duration,
    /// Lifetime of a provider record in the DHT. Default 1 h (four announce intervals,
    /// so a record survives a few missed re-announcements).
    pub provider_ttl: Duration,
    /// Ask for more providers when a fetch has fewer connected peers than this. Default 10.
    pub min_peers: usize,
    /// Least time between two provider lookups for one transfer that runs. A transfer
    /// without a manifest and nobody to ask looks again after one `tick`, doubling the wait
    /// up to this while look-ups find nobody. Default 60 s.
    pub lookup_interval: Duration,
    /// Housekeeping period (request timeouts, peer top-up). Default 5 s.
    pub tick: Duration,
    /// Initial seeding (BEP 16 "super-seeding"): a transfer started by
    /// [`Command::Share`] advertises an empty bitfield and reveals chunks to each peer a
    /// few at a time with `Have`, always the chunk least available and least revealed, and
    /// reveals more to a peer only when it announces one it was shown. While some chunk
    /// has never been sent, a request for a chunk already sent to another peer is refused
    /// (`Reject`) and a fresh chunk revealed instead. Each chunk leaves the seeder once
    /// before any leaves twice, so the seeder's upload is not spent on duplicates. Ends when
    /// every chunk is held by a neighbour; the seeder then sends its full bitfield.
    /// Default true.
    pub super_seed: bool,
    /// Chunks revealed to one peer at a time while super-seeding, at least. Default 2. The
    /// seeder reveals more when a downloader's request pipeline (taken to be ours,
    /// [`Config::pipeline_depth`]) spans more chunks: see [`reveal_target`].
    pub super_seed_reveals: usize,
    /// Emit [`Event::Progress`] every this many verified chunks (0: never). Default 16.
    pub progress_every: u32,
    /// Interest means "something to request now" (default false: BEP 3's "the peer has
    /// a chunk we lack"). A peer that unchokes us
    /// but has only chunks whose blocks are all requested from others gets
    /// `NotInterested` at once, so it hands the unchoke slot to a waiting peer (its
    /// `NotInterested` handler) instead of leaving it idle until its next 10 s round; we
    /// declare interest again when it announces a chunk we can ask for, when one of our
    /// requests elsewhere is dropped, or at the next tick. Interest is likewise declared
    /// only for peers with a block we could request. Measured in a 300-peer flash crowd
    /// (`docs/experiments/swarm.md`): 1.3–2.6 of the 5 slots of an uploading peer were held
    /// by such peers during the first 25 s. With false, interest is BEP 3's "the peer has a
    /// chunk we lack". Off by default because it did not pay: efficiency of the 100-peer
    /// flash crowd 0.858 / 0.864 / 0.849 (seeds 1–3) with it against 0.855 / 0.860 / 0.868
    /// without, 300 peers 0.841 against 0.843, 1000 peers 0.820 against 0.815 — within
    /// seed noise, and below the 0.85 target for one seed.
    pub release_idle_interest: bool,
    /// The uplink's rate in bytes per second, if the core is told it (a configured upload
    /// limit, or the simulator's link). `None` (default): each requested block is handed to
    /// the driver as soon as its request arrives, so the driver's FIFO send queue decides
    /// the order and a chunk leaves interleaved with every other unchoked peer's blocks.
    /// `Some(rate)`: requests wait in the core (at most [`MAX_QUEUED_REQUESTS`] per peer)
    /// and a block is handed over only while the driver's queue — estimated from the length
    /// of every frame the core sent, at this rate — holds less than
    /// [`Config::upload_horizon`]. The core then serves unchoked peers one chunk at a time
    /// (see [`Swarm`]'s upload scheduling): a 256 KiB chunk reaches its downloader in
    /// 0.26 s at 8 Mbit/s instead of ~1.3 s interleaved with four others, so in a flash
    /// crowd new chunks spread in shorter hops (Mundinger–Weber's optimal schedule sends
    /// whole chunks one after another). Queued requests of a peer we choke are answered
    /// with `Reject`, and a `Cancel` withdraws a queued request.
    pub upload_rate: Option<u64>,
    /// With [`Config::upload_rate`]: how much data, in time at that rate, the driver's send
    /// queue may hold before the core keeps further blocks back. Default 30 ms (about two
    /// 16 KiB blocks at 8 Mbit/s): enough that the uplink never idles between two releases,
    /// short enough that the core, not the driver's FIFO, decides the order.
    pub upload_horizon: Duration,
}

/// Most block requests one peer may have waiting in our upload queue when
/// [`Config::upload_rate`] is set; further requests are answered with `Reject`. Our own
/// downloaders keep [`Config::pipeline_depth`] (8) in flight; libtorrent allows 500. 256
/// bounds the queue at 4 MiB of requested data per peer.
pub const MAX_QUEUED_REQUESTS: usize = 256;

/// With [`Config::upload_rate`]: blocks served to other peers while the peer whose chunk
/// has its turn has no request waiting, before the turn ends. One chunk's worth (16
/// blocks of 256 KiB chunks): a downloader refills its pipeline one round trip after our
/// blocks reach it, so a longer gap means it took the rest of the chunk elsewhere.
const TURN_PATIENCE_BLOCKS: u32 = 16;

impl Default for Config {
    fn default() -> Self {
        Config {
            pipeline_depth: 8,
            picker: picker::Config::default(),
            choker: choker::Config::default(),
            max_peers: 80,
            max_candidates: 200,
            max_transfers: 64,
            request_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(30),
            manifest_timeout: Duration::from_secs(2),
            manifest_fanout: 3,
            max_manifest_waiters: 64,
            ban_after_corrupt: 2,
            max_penalties: 3,
            max_failed_records: 16,
            announce_interval: Duration::from_secs(15 * 60),
            provider_ttl: Duration::from_secs(60 * 60),
            min_peers: 10,
            lookup_interval: Duration::from_secs(60),
            tick: Duration::from_secs(5),
            super_seed: true,
            super_seed_reveals: 2,
            progress_every: 16,
            release_idle_interest: false,
            upload_rate: None,
            upload_horizon: Duration::from_millis(30),
        }
    }
}

/// A protocol violation by a peer. The offending message was dropped and nothing was
/// stored; the peer was penalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The manifest does not hash to the content id (or is inconsistent).
    #[error("bad manifest: {0}")]
    Manifest(#[from] ManifestError),
    /// A block or request names a chunk/block outside the file.
    #[error("block {block} of chunk {chunk} is outside the file")]
    OutOfRange {
        /// Chunk index.
        chunk: u32,
        /// Block index.
        block: u32,
    },
    /// A block's data does not have the block's length.
    #[error("block {block} of chunk {chunk} has {got} bytes, expected {expected}")]
    BlockLength {
        /// Chunk index.
        chunk: u32,
        /// Block index.
        block: u32,
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        expected: u32,
    },
    /// A message larger than its type allows.
    #[error("oversized {kind}: {len} bytes, limit {max}")]
    Oversized {
        /// Message type.
        kind: &'static str,
        /// Size received.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A request for a chunk we never announced.
    #[error("request for chunk {0}, which is not held")]
    ChunkNotHeld(u32),
    /// A bitfield of the wrong length or with spare bits set.
    #[error("malformed bitfield")]
    Bitfield,
    /// A `Have` for a chunk outside the file.
    #[error("have for chunk {0}, outside the file")]
    Have(u32),
}

/// Local commands.
pub enum Command<S> {
    /// Serve a complete file.
    Share {
        /// Its manifest.
        manifest: Manifest,
        /// A store holding every chunk.
        store: S,
    },
    /// Download a file by content id.
    Fetch {
        /// The content id.
        cid: ContentId,
        /// Peers believed to have it (from the DHT, a tracker, or the user).
        providers: Vec<PeerId>,
    },
    /// More candidate peers for a transfer (e.g. a DHT `GetProviders` answer).
    AddPeers {
        /// The transfer.
        cid: ContentId,
        /// The peers.
        peers: Vec<PeerId>,
    },
    /// Stop a transfer and forget it (the store is dropped, so a file store can resume).
    Cancel {
        /// The transfer.
        cid: ContentId,
    },
}

impl<S> std::fmt::Debug for Command<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Share { manifest, .. } => write!(f, "Share({manifest:?})"),
            Command::Fetch { cid, providers } => {
                write!(f, "Fetch({cid:?}, {} providers)", providers.len())
            }
            Command::AddPeers { cid, peers } => write!(f, "AddPeers({cid:?}, {})", peers.len()),
            Command::Cancel { cid } => write!(f, "Cancel({cid:?})"),
        }
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The transfer already runs.
    #[error("transfer already running")]
    Duplicate,
    /// [`Config::max_transfers`] transfers already run.
    #[error("too many transfers")]
    TooMany,
    /// The manifest is inconsistent.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The store does not hold every chunk of a shared file.
    #[error("store for a shared file is incomplete")]
    IncompleteStore,
    /// No such transfer.
    #[error("unknown transfer")]
    Unknown,
}

/// Events for the application.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A command was refused.
    Refused {
        /// The transfer.
        cid: ContentId,
        /// Why.
        error: CommandError,
    },
    /// The manifest arrived and matched the content id; the download starts.
    ManifestVerified {
        /// The transfer.
        cid: ContentId,
        /// Who sent it.
        from: PeerId,
        /// File size.
        size: u64,
        /// Chunks.
        chunks: u32,
    },
    /// Progress (every [`Config::progress_every`] chunks).
    Progress {
        /// The transfer.
        cid: ContentId,
        /// Chunks held.
        have: u32,
        /// Chunks in the file.
        total: u32,
    },
    /// Every chunk is verified and stored; the transfer now seeds.
    Completed {
        /// The transfer.
        cid: ContentId,
        /// Payload bytes received (including discarded duplicates and corrupt data).
        downloaded: u64,
        /// Payload bytes sent.
        uploaded: u64,
    },
    /// A complete chunk did not match its hash and was discarded.
    ChunkRejected {
        /// The transfer.
        cid: ContentId,
        /// Chunk index.
        chunk: u32,
        /// Peers that contributed blocks.
        from: Vec<PeerId>,
    },
    /// A peer broke the protocol; the message was dropped.
    PeerPenalised {
        /// The transfer.
        cid: ContentId,
        /// The peer.
        peer: PeerId,
        /// What it did.
        error: ProtocolError,
    },
    /// A peer is banned from the transfer (corrupt data or repeated violations).
    PeerBanned {
        /// The transfer.
        cid: ContentId,
        /// The peer.
        peer: PeerId,
    },
    /// The store failed; the transfer stopped.
    StoreFailed {
        /// The transfer.
        cid: ContentId,
        /// The error, as text.
        error: String,
    },
    /// The application should talk to the DHT (see [`crate::discovery`]).
    Discovery(Discovery),
}

/// The core's timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// Housekeeping for every transfer.
    Tick,
    /// Re-run the choker of a transfer.
    Choke {
        /// The transfer.
        cid: ContentId,
        /// Transfer generation (stale timers of a cancelled transfer are ignored).
        generation: u64,
    },
    /// The manifest request `attempt` is overdue.
    ManifestTimeout {
        /// The transfer.
        cid: ContentId,
        /// Which attempt.
        attempt: u32,
    },
    /// Re-announce a content id.
    Announce {
        /// The transfer.
        cid: ContentId,
        /// Transfer generation.
        generation: u64,
    },
    /// With [`Config::upload_rate`]: the driver's send queue has drained to the horizon;
    /// hand it the next queued block.
    Pump,
}

/// Counters of one transfer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Chunks held.
    pub have: u32,
    /// Chunks in the file (0 before the manifest is known).
    pub chunks: u32,
    /// Payload bytes received.
    pub downloaded: u64,
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Payload bytes received but not used (duplicates, unrequested).
    pub wasted: u64,
    /// Chunks that failed verification.
    pub corrupt_chunks: u32,
    /// Peers banned.
    pub banned: u32,
    /// Connected peers.
    pub peers: u32,
    /// When the transfer completed.
    pub completed_at: Option<Instant>,
}

/// One connection of a transfer as seen by [`Swarm::links`]: BEP 3's four flags and the
/// requests we have in flight to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The peer.
    pub peer: PeerId,
    /// We choke it (it may not download from us).
    pub am_choking: bool,
    /// We want something it has.
    pub am_interested: bool,
    /// It chokes us.
    pub peer_choking: bool,
    /// It wants something we have.
    pub peer_interested: bool,
    /// Our block requests to it not yet answered.
    pub outstanding: usize,
}

#[derive(Debug)]
struct PeerState {
    has: Bitfield,
    am_choking: bool,
    am_interested: bool,
    peer_choking: bool,
    peer_interested: bool,
    outstanding: Vec<(BlockRef, Instant)>,
    /// Whether the peer's bitfield arrived (a connection without one is half-open).
    got_bitfield: bool,
    /// Chunks revealed to this peer while super-seeding and not yet announced by it.
    revealed: Vec<u32>,
    /// Chunks this peer refused (`Reject` while it unchoked us: a super-seeder keeping a
    /// chunk it already sent elsewhere for later). Not asked from it again until it
    /// unchokes us anew; one bit per chunk, so bounded by the file.
    refused: Bitfield,
    /// With [`Config::upload_rate`]: its block requests not yet handed to the driver, as
    /// (chunk, block, arrival sequence number), oldest first; at most
    /// [`MAX_QUEUED_REQUESTS`].
    queued: VecDeque<(u32, u32, u64)>,
    down_round: u64,
    up_round: u64,
    connected_at: Instant,
}

impl PeerState {
    fn new(chunks: u32, now: Instant) -> PeerState {
        PeerState {
            has: Bitfield::new(chunks),
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            outstanding: Vec::new(),
            got_bitfield: false,
            revealed: Vec::new(),
            refused: Bitfield::new(chunks),
            queued: VecDeque::new(),
            down_round: 0,
            up_round: 0,
            connected_at: now,
        }
    }
}

/// A transfer once its manifest is known.
struct Active<S> {
    manifest: Manifest,
    store: S,
    picker: Picker,
    peers: BTreeMap<PeerId, PeerState>,
    choker: Choker,
    failed: BTreeMap<u32, Vec<(Bytes, PeerId)>>,
    /// While super-seeding: how often each chunk was revealed and how often we started
    /// serving it (its first block), per chunk.
    super_seed: Option<SuperSeed>,
}

/// Super-seeding bookkeeping, one entry per chunk.
struct SuperSeed {
    /// Times the chunk was revealed with `Have`.
    revealed: Vec<u32>,
    /// Times we served its first block: a chunk revealed to a peer that never asks for it
    /// (e.g. one we keep choked) has not cost any upload and is revealed again before a
    /// chunk already on the wire.
    served: Vec<u32>,
    /// The peer we first served each chunk to.
    first_served_to: Vec<Option<PeerId>>,
    /// Chunks never served yet. While some are left, a request for a chunk already sent to
    /// another peer is refused (`Reject`) and a fresh chunk revealed instead, so the
    /// seeder's upload carries each chunk once before any chunk twice (BEP 16's aim; a
    /// chunk revealed to a peer we kept choked is later revealed to a second peer too,
    /// and without this both would download it from us).
    unserved: u32,
}

struct Transfer<S> {
    cid: ContentId,
    generation: u64,
    active: Option<Active<S>>,
    candidates: BTreeSet<PeerId>,
    banned: BTreeSet<PeerId>,
    strikes: BTreeMap<PeerId, u32>,
    penalties: BTreeMap<PeerId, u32>,
    manifest_attempt: u32,
    /// Providers asked for the manifest in the current attempt and not yet answered.
    manifest_asked: Vec<PeerId>,
    manifest_tried: BTreeSet<PeerId>,
    manifest_waiters: Vec<PeerId>,
    last_lookup: Option<Instant>,
    /// Provider look-ups since one last found somebody (see [`tick`]).
    empty_lookups: u32,
    stats: TransferStats,
}

/// The swarm transfer core (see the module docs).
pub struct Swarm<F: StoreFactory> {
    config: Config,
    factory: F,
    transfers: BTreeMap<ContentId, Transfer<F::Store>>,
    next_generation: u64,
    uplink: Uplink,
}

/// With [`Config::upload_rate`]: the core's view of its uplink and whose chunk is being
/// served.
#[derive(Debug, Default)]
struct Uplink {
    /// When the driver's send queue empties, estimated from every frame we handed it.
    free_at: Instant,
    /// Arrival sequence number of the next queued request (orders requests across peers).
    next_seq: u64,
    /// The chunk whose turn it is: its blocks are served to this peer before any other
    /// peer's requests.
    turn: Option<Turn>,
    /// A [`Timer::Pump`] is pending for this instant.
    timer_at: Option<Instant>,
}

/// One peer's turn on our uplink: one chunk served to it back to back.
#[derive(Debug, Clone, Copy)]
struct Turn {
    cid: ContentId,
    peer: PeerId,
    chunk: u32,
    /// Blocks of the chunk served to the peer in this turn.
    sent: u32,
    /// Blocks served to other peers while this peer had nothing waiting.
    waited: u32,
}

impl<F: StoreFactory> Swarm<F> {
    /// A core opening download stores through `factory`.
    pub fn new(config: Config, factory: F) -> Swarm<F> {
        Swarm {
            config,
            factory,
            transfers: BTreeMap::new(),
            next_generation: 0,
            uplink: Uplink::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters of a transfer.
    pub fn stats(&self, cid: &ContentId) -> Option<TransferStats> {
        let t = self.transfers.get(cid)?;
        let mut s = t.stats;
        if let Some(a) = &t.active {
            s.have = a.picker.have().count();
            s.chunks = a.manifest.chunk_count();
            s.peers = a.peers.len() as u32;
        }
        s.banned = t.banned.len() as u32;
        Some(s)
    }

    /// The store of a transfer whose manifest is known.
    pub fn store(&self, cid: &ContentId) -> Option<&F::Store> {
        Some(&self.transfers.get(cid)?.active.as_ref()?.store)
    }

    /// The manifest of a transfer, once known.
    pub fn manifest(&self, cid: &ContentId) -> Option<&Manifest> {
        Some(&self.transfers.get(cid)?.active.as_ref()?.manifest)
    }

    /// The chunks held for a transfer.
    pub fn have(&self, cid: &ContentId) -> Option<&Bitfield> {
        Some(self.transfers.get(cid)?.active.as_ref()?.picker.have())
    }

    /// Peers banned from a transfer.
    pub fn banned(&self, cid: &ContentId) -> Vec<PeerId> {
        self.transfers
            .get(cid)
            .map(|t| t.banned.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The state of every connection of a transfer (diagnostics: who is unchoked, who
    /// wants what, how many requests are in flight).
    pub fn links(&self, cid: &ContentId) -> Vec<Link> {
        let Some(a) = self.transfers.get(cid).and_then(|t| t.active.as_ref()) else {
            return Vec::new();
        };
        a.peers
            .iter()
            .map(|(peer, p)| Link {
                peer: *peer,
                am_choking: p.am_choking,
                am_interested: p.am_interested,
                peer_choking: p.peer_choking,
                peer_interested: p.peer_interested,
                outstanding: p.outstanding.len(),
            })
            .collect()
    }

    /// Content ids of running transfers.
    pub fn transfers(&self) -> Vec<ContentId> {
        self.transfers.keys().copied().collect()
    }

    fn new_transfer(&mut self, cid: ContentId) -> Transfer<F::Store> {
        self.next_generation += 1;
        Transfer {
            cid,
            generation: self.next_generation,
            active: None,
            candidates: BTreeSet::new(),
            banned: BTreeSet::new(),
            strikes: BTreeMap::new(),
            penalties: BTreeMap::new(),
            manifest_attempt: 0,
            manifest_asked: Vec::new(),
            manifest_tried: BTreeSet::new(),
            manifest_waiters: Vec::new(),
            last_lookup: None,
            empty_lookups: 0,
            stats: TransferStats::default(),
        }
    }
}

/// The context every helper of the core receives.
type SwarmCx<'a> = Context<'a, Message, Timer, Event>;

fn send(cx: &mut SwarmCx<'_>, to: PeerId, cid: ContentId, body: Body) {
    cx.send(to, Message { cid, body });
}

impl<F: StoreFactory> Protocol for Swarm<F> {
    type Message = Message;
    type Timer = Timer;
    type Command = Command<F::Store>;
    type Event = Event;

    fn handle_start(&mut self, cx: &mut Cx<'_, Self>) {
        cx.set_timer(self.config.tick, Timer::Tick);
    }

    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, cmd: Command<F::Store>) {
        self.paced(cx, |s, cx| s.command(cx, cmd));
    }

    fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Message) {
        self.paced(cx, |s, cx| s.message(cx, from, msg));
    }

    fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, timer: Timer) {
        self.paced(cx, |s, cx| s.timer(cx, timer));
    }

    fn handle_peer_down(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        self.paced(cx, |s, cx| s.peer_down(cx, peer));
    }
}

impl<F: StoreFactory> Swarm<F> {
    fn command(&mut self, cx: &mut SwarmCx<'_>, cmd: Command<F::Store>) {
        match cmd {
            Command::Share { manifest, store } => {
                let cid = manifest.content_id();
                if let Err(e) = self.check_new(&cid) {
                    return cx.emit(Event::Refused { cid, error: e });
                }
                if let Err(e) = manifest.validate() {
                    return cx.emit(Event::Refused {
                        cid,
                        error: e.into(),
                    });
                }
                if !store.held().is_complete() || store.held().len() != manifest.chunk_count() {
                    return cx.emit(Event::Refused {
                        cid,
                        error: CommandError::IncompleteStore,
                    });
                }
                let mut t = self.new_transfer(cid);
                t.stats.completed_at = Some(cx.now());
                let super_seed = self.config.super_seed && manifest.chunk_count() > 0;
                activate(&self.config, &mut t, cx, manifest, store, super_seed);
                self.transfers.insert(cid, t);
            }
            Command::Fetch { cid, providers } => {
                if let Err(e) = self.check_new(&cid) {
                    return cx.emit(Event::Refused { cid, error: e });
                }
                let mut t = self.new_transfer(cid);
                add_candidates(&self.config, &mut t, cx, providers);
                t.last_lookup = Some(cx.now());
                cx.emit(Event::Discovery(Discovery::FindProviders {
                    cid,
                    key: cid.dht_key(),
                }));
                ask_manifest(&self.config, &mut t, cx);
                self.transfers.insert(cid, t);
            }
            Command::AddPeers { cid, peers } => {
                let Some(t) = self.transfers.get_mut(&cid) else {
                    return cx.emit(Event::Refused {
                        cid,
                        error: CommandError::Unknown,
                    });
                };
                if !peers.is_empty() {
                    t.empty_lookups = 0;
                }
                add_candidates(&self.config, t, cx, peers);
                if t.active.is_none() && t.manifest_asked.is_empty() {
                    ask_manifest(&self.config, t, cx);
                }
            }
            Command::Cancel { cid } => {
                if let Some(t) = self.transfers.remove(&cid)
                    && let Some(a) = t.active
                {
                    for p in a.peers.keys() {
                        if !a.picker.is_complete() {
                            send(cx, *p, cid, Body::NotInterested);
                        }
                    }
                }
            }
        }
    }

    fn message(&mut self, cx: &mut SwarmCx<'_>, from: PeerId, msg: Message) {
        let Message { cid, body } = msg;
        let config = &self.config;
        let factory = &mut self.factory;
        let Some(t) = self.transfers.get_mut(&cid) else {
            return; // Not our transfer: ignore (the peer may have stale information).
        };
        if t.banned.contains(&from) {
            return;
        }
        let result = match body {
            Body::ManifestRequest => {
                if let Some(a) = &t.active {
                    send(cx, from, cid, Body::Manifest(a.manifest.clone()));
                } else if t.manifest_waiters.len() < config.max_manifest_waiters
                    && !t.manifest_waiters.contains(&from)
                {
                    t.manifest_waiters.push(from);
                }
                Ok(())
            }
            Body::Manifest(m) => on_manifest(config, factory, t, cx, from, m),
            Body::Handshake => {
                on_handshake(config, t, cx, from);
                Ok(())
            }
            other => on_peer_message(config, t, cx, from, other, &mut self.uplink.next_seq),
        };
        if let Err(error) = result {
            penalise(config, t, cx, from, error);
        }
    }

    fn timer(&mut self, cx: &mut SwarmCx<'_>, timer: Timer) {
        match timer {
            Timer::Pump => {
                // The next release is decided by `pump`, which runs after every input.
                if self.uplink.timer_at.is_some_and(|at| at <= cx.now()) {
                    self.uplink.timer_at = None;
                }
            }
            Timer::Tick => {
                let config = &self.config;
                for t in self.transfers.values_mut() {
                    tick(config, t, cx);
                }
                cx.set_timer(self.config.tick, Timer::Tick);
            }
            Timer::Choke { cid, generation } => {
                if let Some(t) = self.transfers.get_mut(&cid)
                    && t.generation == generation
                {
                    rechoke(&self.config, t, cx);
                    cx.set_timer(
                        self.config.choker.interval,
                        Timer::Choke { cid, generation },
                    );
                }
            }
            Timer::ManifestTimeout { cid, attempt } => {
                if let Some(t) = self.transfers.get_mut(&cid)
                    && t.active.is_none()
                    && t.manifest_attempt == attempt
                {
                    t.manifest_asked.clear();
                    ask_manifest(&self.config, t, cx);
                }
            }
            Timer::Announce { cid, generation } => {
                if let Some(t) = self.transfers.get(&cid)
                    && t.generation == generation
                {
                    announce(&self.config, cid, generation, cx);
                }
            }
        }
    }

    fn peer_down(&mut self, cx: &mut SwarmCx<'_>, peer: PeerId) {
        let config = &self.config;
        for t in self.transfers.values_mut() {
            t.candidates.remove(&peer);
            t.manifest_waiters.retain(|p| *p != peer);
            disconnect(t, peer);
            if t.active.is_none() && t.manifest_asked.contains(&peer) {
                t.manifest_asked.retain(|p| *p != peer);
                if t.manifest_asked.is_empty() {
                    ask_manifest(config, t, cx);
                }
            }
        }
    }
}

impl<F: StoreFactory> Swarm<F> {
    /// Runs one input. With [`Config::upload_rate`] every frame it produced is counted
    /// against the uplink, then queued blocks are handed to the driver ([`Swarm::pump`]).
    fn paced(&mut self, cx: &mut SwarmCx<'_>, f: impl FnOnce(&mut Self, &mut SwarmCx<'_>)) {
        if self.config.upload_rate.is_none() {
            return f(self, cx);
        }
        let mut sub = Outbox::new();
        cx.nested(&mut sub, |c| f(self, c));
        self.forward(cx, &mut sub);
        self.pump(cx);
    }

    /// Passes outputs on to the driver, advancing the estimate of when its send queue
    /// empties by each frame's transmission time (the FIFO uplink model: a frame starts
    /// when the previous one is out).
    fn forward(&mut self, cx: &mut SwarmCx<'_>, sub: &mut Outbox<Message, Timer, Event>) {
        let rate = self.config.upload_rate.unwrap_or(u64::MAX).max(1) as u128;
        let now = cx.now();
        for out in sub.drain() {
            match out {
                Output::Send { to, msg } => {
                    let nanos = msg.wire_len() as u128 * 1_000_000_000 / rate;
                    let start = self.uplink.free_at.max(now);
                    self.uplink.free_at =
                        start + Duration::from_nanos(nanos.min(u64::MAX as u128) as u64);
                    cx.send(to, msg);
                }
                Output::Timer { at, timer } => cx.set_timer_at(at, timer),
                Output::Event(e) => cx.emit(e),
                Output::Offence { peer, offence } => cx.penalize(peer, offence),
            }
        }
    }

    /// Upload scheduling with [`Config::upload_rate`]: hands queued requests' blocks to the
    /// driver while its send queue holds less than [`Config::upload_horizon`], in the
    /// order [`Swarm::next_upload`] picks; when blocks still wait, sets a [`Timer::Pump`]
    /// for the moment the queue is down to the horizon.
    fn pump(&mut self, cx: &mut SwarmCx<'_>) {
        let horizon = self.config.upload_horizon;
        while self.uplink.free_at <= cx.now() + horizon {
            let Some((cid, peer, chunk, block)) = self.next_upload() else {
                return;
            };
            let mut sub = Outbox::new();
            if let Some(t) = self.transfers.get_mut(&cid) {
                let config = &self.config;
                cx.nested(&mut sub, |c| {
                    serve_request(config, t, c, peer, chunk, block)
                });
            }
            self.forward(cx, &mut sub);
        }
        let waiting = self.transfers.values().any(|t| {
            t.active
                .as_ref()
                .is_some_and(|a| a.peers.values().any(|p| !p.queued.is_empty()))
        });
        let at = Instant(
            self.uplink
                .free_at
                .0
                .saturating_sub(horizon.as_micros().min(u64::MAX as u128) as u64),
        );
        if waiting && self.uplink.timer_at.is_none_or(|t| t > at) {
            self.uplink.timer_at = Some(at);
            cx.set_timer_at(at, Timer::Pump);
        }
    }

    /// The queued request to serve next, removed from its queue. Unchoked peers are served
    /// one chunk at a time: while the peer whose chunk has the turn has a request for it
    /// waiting, that request; otherwise the oldest waiting request of any peer, whose
    /// chunk gets the turn if none is running — peers holding no chunk yet first, since
    /// a chunk they receive makes them uploaders (in a 1000-peer flash crowd 87 % of the
    /// peers hold nothing 5 s in). A turn ends when the chunk's last block is
    /// sent, when its peer asks for another chunk instead, or after
    /// [`TURN_PATIENCE_BLOCKS`] blocks went to others while it had nothing waiting.
    fn next_upload(&mut self) -> Option<(ContentId, PeerId, u32, u32)> {
        if let Some(turn) = self.uplink.turn {
            let a = self
                .transfers
                .get_mut(&turn.cid)
                .and_then(|t| t.active.as_mut());
            let blocks = a.as_ref().map_or(0, |a| a.manifest.block_count(turn.chunk));
            match a.and_then(|a| a.peers.get_mut(&turn.peer)) {
                Some(p) if !p.am_choking => {
                    if let Some(i) = p.queued.iter().position(|e| e.0 == turn.chunk) {
                        let (chunk, block, _) = p.queued.remove(i)?;
                        let sent = turn.sent + 1;
                        self.uplink.turn = (sent < blocks).then_some(Turn {
                            sent,
                            waited: 0,
                            ..turn
                        });
                        return Some((turn.cid, turn.peer, chunk, block));
                    }
                    if !p.queued.is_empty() {
                        self.uplink.turn = None; // it moved on to another chunk
                    }
                }
                _ => self.uplink.turn = None,
            }
        }
        let mut oldest: Option<((bool, u64), ContentId, PeerId)> = None;
        for (cid, t) in &self.transfers {
            let Some(a) = &t.active else { continue };
            for (peer, p) in &a.peers {
                if let Some(&(_, _, seq)) = p.queued.front() {
                    let key = (p.has.count() > 0, seq);
                    if oldest.is_none_or(|o| key < o.0) {
                        oldest = Some((key, *cid, *peer));
                    }
                }
            }
        }
        let (_, cid, peer) = oldest?;
        let a = self.transfers.get_mut(&cid)?.active.as_mut()?;
        let (chunk, block, _) = a.peers.get_mut(&peer)?.queued.pop_front()?;
        match &mut self.uplink.turn {
            Some(turn) => {
                turn.waited += 1;
                if turn.waited >= TURN_PATIENCE_BLOCKS {
                    self.uplink.turn = None;
                }
            }
            None => {
                self.uplink.turn = (a.manifest.block_count(chunk) > 1).then_some(Turn {
                    cid,
                    peer,
                    chunk,
                    sent: 1,
                    waited: 0,
                });
            }
        }
        Some((cid, peer, chunk, block))
    }

    fn check_new(&self, cid: &ContentId) -> Result<(), CommandError> {
        if self.transfers.contains_key(cid) {
            Err(CommandError::Duplicate)
        } else if self.transfers.len() >= self.config.max_transfers {
            Err(CommandError::TooMany)
        } else {
            Ok(())
        }
    }
}

fn announce(config: &Config, cid: ContentId, generation: u64, cx: &mut SwarmCx<'_>) {
    cx.emit(Event::Discovery(Discovery::Announce {
        cid,
        key: cid.dht_key(),
        ttl: config.provider_ttl,
    }));
    cx.set_timer(
        config.announce_interval,
        Timer::Announce { cid, generation },
    );
}

fn add_candidates<S: ChunkStore>(
    config: &Config,
    t: &mut Transfer<S>,
    cx: &mut SwarmCx<'_>,
    peers: Vec<PeerId>,
) {
    for p in peers {
        if t.banned.contains(&p) || t.active.as_ref().is_some_and(|a| a.peers.contains_key(&p)) {
            continue;
        }
        if t.candidates.len() < config.max_candidates {
            t.candidates.insert(p);
        }
    }
    connect_candidates(config, t, cx);
}

/// Opens connections to candidates while below the peer limit.
fn connect_candidates<S: ChunkStore>(config: &Config, t: &mut Transfer<S>, cx: &mut SwarmCx<'_>) {
    let Some(a) = &mut t.active else { return };
    while a.peers.len() < config.max_peers {
        let Some(p) = t.candidates.pop_first() else {
            break;
        };
        if a.peers.contains_key(&p) || t.banned.contains(&p) {
            continue;
        }
        a.peers
            .insert(p, PeerState::new(a.manifest.chunk_count(), cx.now()));
        send(cx, p, t.cid, Body::Handshake);
        send_bitfield(config, a, cx, t.cid, p);
    }
}

/// Sends our bitfield — an empty one plus a few revealed chunks while super-seeding.
fn send_bitfield<S: ChunkStore>(
    config: &Config,
    a: &mut Active<S>,
    cx: &mut SwarmCx<'_>,
    cid: ContentId,
    peer: PeerId,
) {
    if a.super_seed.is_some() {
        send(
            cx,
            peer,
            cid,
            Body::Bitfield(Bitfield::new(a.manifest.chunk_count())),
        );
        reveal(config, a, cx, cid, peer);
    } else {
        send(cx, peer, cid, Body::Bitfield(a.picker.have().clone()));
    }
}

/// Super-seeding: tops up the chunks revealed to `peer`, least available and least
/// revealed first (ties at random).
fn reveal<S: ChunkStore>(
    config: &Config,
    a: &mut Active<S>,
    cx: &mut SwarmCx<'_>,
    cid: ContentId,
    peer: PeerId,
) {
    let Some(ss) = &mut a.super_seed else {
        return;
    };
    let Some(p) = a.peers.get_mut(&peer) else {
        return;
    };
    let target = reveal_target(config, &a.manifest);
    while p.revealed.len() < target {
        let mut best: Option<u32> = None;
        let mut best_key = u64::MAX;
        let mut ties = 0u64;
        for c in 0..a.manifest.chunk_count() {
            if p.has.get(c) || p.revealed.contains(&c) {
                continue;
            }
            // Least copies out (held by neighbours or already sent by us) first, then least
            // revealed: a chunk revealed but never requested is still fresh, one already
            // being uploaded would be sent twice.
            let out = a.picker.availability(c) as u64 + ss.served[c as usize] as u64;
            let key = (out << 32) | ss.revealed[c as usize] as u64;
            if key < best_key {
                (best, best_key, ties) = (Some(c), key, 1);
            } else if key == best_key {
                ties += 1;
                if cx.rng().below(ties) == 0 {
                    best = Some(c);
                }
            }
        }
        let Some(c) = best else { break };
        ss.revealed[c as usize] += 1;
        p.revealed.push(c);
        send(cx, peer, cid, Body::Have { chunk: c });
    }
}

/// Chunks a super-seeder keeps revealed to one peer: [`Config::super_seed_reveals`], or
/// twice as many as a downloader's request pipeline spans, whichever is more. Fewer cap
/// what the peer can have outstanding below its pipeline, and each chunk then waits out a
/// reveal round trip (`Have` up, `Have` down, through both nodes) before its blocks can be
/// asked for; twice the span keeps a pipeline's worth of blocks revealed and unrequested
/// while that round trip runs. With the node's 64-block LAN pipeline over 16-block chunks,
/// 2 reveals held a single downloader to 32 blocks in flight: 8 (this rule) raised a
/// 256 MiB fetch over TCP from ≈ 330 to ≈ 440 MiB/s, the same as no super-seeding at all,
/// where 5 (one pipeline's span plus one) gave ≈ 380 (the node's pipeline has since become
/// 128 blocks, hence 16 reveals). The pipeline is taken to be ours
/// ([`Config::pipeline_depth`]); the simulator's (8 or 12 blocks over 16-block chunks)
/// gives the default 2.
fn reveal_target(config: &Config, m: &Manifest) -> usize {
    let blocks_per_chunk = (m.chunk_size() / m.block_size().max(1)).max(1) as usize;
    config
        .super_seed_reveals
        .max(2 * config.pipeline_depth.div_ceil(blocks_per_chunk))
}

/// Ends super-seeding once every chunk is held by some neighbour: the full bitfield goes
/// to everyone.
fn maybe_end_super_seed<S: ChunkStore>(a: &mut Active<S>, cx: &mut SwarmCx<'_>, cid: ContentId) {
    if a.super_seed.is_none() {
        return;
    }
    if (0..a.manifest.chunk_count()).all(|c| a.picker.availability(c) > 0) {
        a.super_seed = None;
        for (peer, p) in a.peers.iter_mut() {
            p.revealed.clear();
            send(cx, *peer, cid, Body::Bitfield(a.picker.have().clone()));
        }
    }
}

fn ask_manifest<S>(config: &Config, t: &mut Transfer<S>, cx: &mut SwarmCx<'_>) {
    let untried: Vec<PeerId> = t
        .candidates
        .iter()
        .filter(|p| !t.manifest_tried.contains(p))
        .copied()
        .collect();
    let pool = if untried.is_empty() {
        // Everyone was tried once; start over (they may have the manifest by now).
        t.manifest_tried.clear();
        t.candidates.iter().copied().collect()
    } else {
        untried
    };
    let n = config.manifest_fanout.max(1).min(pool.len());
    let picks: Vec<PeerId> = cx
        .rng()
        .sample_indices(pool.len(), n)
        .into_iter()
        .map(|i| pool[i])
        .collect();
    t.manifest_attempt += 1;
    t.manifest_asked = picks.clone();
    for &p in &picks {
        t.manifest_tried.insert(p);
        send(cx, p, t.cid, Body::ManifestRequest);
    }
    if !picks.is_empty() {
        cx.set_timer(
            config.manifest_timeout,
            Timer::ManifestTimeout {
                cid: t.cid,
                attempt: t.manifest_attempt,
            },
        );
    }
}

fn activate<S: ChunkStore>(
    config: &Config,
    t: &mut Transfer<S>,
    cx: &mut SwarmCx<'_>,
    manifest: Manifest,
    store: S,
    super_seed: bool,
) {
    let picker = Picker::new(config.picker, store.held().clone());
    let super_seed = super_seed.then(|| SuperSeed {
        revealed: vec![0; manifest.chunk_count() as usize],
        served: vec![0; manifest.chunk_count() as usize],
        first_served_to: vec![None; manifest.chunk_count() as usize],
        unserved: manifest.chunk_count(),
    });
    let cid = t.cid;
    for w in std::mem::take(&mut t.manifest_waiters) {
        send(cx, w, cid, Body::Manifest(manifest.clone()));
    }
    t.active = Some(Active {
        manifest,
        store,
        picker,
        peers: BTreeMap::new(),
        choker: Choker::new(),
        failed: BTreeMap::new(),
        super_seed,
    });
    announce(config, cid, t.generation, cx);
    cx.set_timer(
        config.choker.interval,
        Timer::Choke {
            cid,
            generation: t.generation,
        },
    );
    connect_candidates(config, t, cx);
}

fn on_manifest<F: StoreFactory>(
    config: &Config,
    factory: &mut F,
    t: &mut Transfer<F::Store>,
    cx: &mut SwarmCx<'_>,
    from: PeerId,
    m: Manifest,
) -> Result<(), ProtocolError> {
    if t.active.is_some() {
        return Ok(()); // A late answer to an earlier attempt.
    }
    if let Err(e) = m.verify(&t.cid) {
        if t.manifest_asked.contains(&from) {
            t.manifest_asked.retain(|p| *p != from);
            if t.manifest_asked.is_empty() {
                ask_manifest(config, t, cx);
            }
        }
        return Err(e.into());
    }
    let store = match factory.open(&m) {
        Ok(s) => s,
        Err(e) => {
            cx.emit(Event::StoreFailed {
                cid: t.cid,
                error: e.to_string(),
            });
            return Ok(());
        }
    };
    cx.emit(Event::ManifestVerified {
        cid: t.cid,
        from,
        size: m.size(),
        chunks: m.chunk_count(),
    });
    t.candidates.insert(from);
    let complete = store.held().is_complete();
    activate(config, t, cx, m, store, false);
    if complete {
        finish(t, cx);
    }
    Ok(())
}

fn on_handshake<S: ChunkStore>(
    config: &Config,
    t: &mut Transfer<S>,
    cx: &mut SwarmCx<'_>,
    from: PeerId,
) {
    let Some(a) = &mut t.active else {
        // We cannot talk chunks yet; connect back once our manifest arrives.
        if t.candidates.len() < config.max_candidates {
            t.candidates.insert(from);
        }
        return;
    };
    if !a.peers.contains_key(&from) {
        if a.peers.len() >= config.max_peers {
            return; // Full: the peer drops us after its handshake timeout.
        }
        t.candidates.remove(&from);
        a.peers
            .insert(from, PeerState::new(a.manifest.chunk_count(), cx.now()));
    }
    // The answer to a handshake is our bitfield. A peer we already count as connected may
    // be opening again (it had not joined the transfer when our handshake came), so it
    // gets the bitfield too; bitfields never trigger replies, so this cannot loop.
    send_bitfield(config, a, cx, t.cid, from);
}

fn on_peer_message<S: ChunkStore>(
    config: &Config,
    t: &mut Transfer<S>,
    cx: &mut SwarmCx<'_>,
    from: PeerId,
    body: Body,
    request_seq: &mut u64,
) -> Result<(), ProtocolError> {
    let cid = t.cid;
    // A peer may send transfer messages before it learns that we dropped the connection
    // or before our manifest arrived (it handshook while we could not answer). These are
    // races, not attacks: the message is ignored without penalty.
    let Some(a) = &mut t.active else {
        return Ok(());
    };
    if !a.peers.contains_key(&from) {
        return Ok(());
    }
    match body {
        Body::Bitfield(bits) => {
            if bits.len() != a.manifest.chunk_count() || !bits.is_well_formed() {
                return Err(ProtocolError::Bitfield);
            }
            let p = a.peers.get_mut(&from).unwrap_or_else(|| unreachable!());
            a.picker.remove_peer(&p.has);
            a.picker.add_peer(&bits);
            p.has = bits;
            p.got_bitfield = true;
            if a.super_seed.is_some() {
                let p = a.peers.get_mut(&from).unwrap_or_else(|| unreachable!());
                let has = p.has.clone();
                p.revealed.retain(|&c| !has.get(c));
                reveal(config, a, cx, cid, from);
                maybe_end_super_seed(a, cx, cid);
            }
            update_interest(config, a, cx, cid, from);
        }
        Body::Have { chunk } => {
            if chunk >= a.manifest.chunk_count() {
                return Err(ProtocolError::Have(chunk));
            }
            let p = a.peers.get_mut(&from).unwrap_or_else(|| unreachable!());
            if p.has.set(chunk) {
                a.picker.add_have(chunk);
                if !p.am_interested && !a.picker.have().get(chunk) {
                    let p = &a.peers[&from];
                    if !config.release_idle_interest || wants_now(config, a, p) {
                        let p = a.peers.get_mut(&from).unwrap_or_else(|| unreachable!());
                        p.am_interested = true;
                        send(cx, from, cid, Body::Interested);
                        fill_requests(config, a, cx, cid, from);
                    }
                }
                if a.super_seed.is_some() {
                    let p = a.peers.get_mut(&from).unwrap_or_else(|| unreachable!());
                    p.revealed.retain(|&c| c != chunk);
                    reveal(config, a, cx, cid, from);
                    maybe_end_super_seed(a, cx, cid);
                }
            }
        }
        Body::Interested => {
            let unchoked = a.peers.values().filter(|p| !p.am_choking).count();
            let p = a.peers.get_mut(&from).unwrap_or_else(|| unreachable!());
            p.peer_interested = true;
            // A free slot need not wait for the next choke round.
            if p.am_choking && unchoked < config.choker.slots + 1 {
                p.am_choking = false;
                send(cx, from, cid, Body::Unchoke);
            }
        }
        Body::NotInterested => {
            let p = a.peers.get_mut(&from).unwrap_or_else(|| unreachable!());
            p.peer_interested = false;
            if !p.am_choking {
                // Its slot is wasted until the next round: give it to a waiting peer now.
                p.am_choking = true;
                send(cx, from, cid, Body::Choke);
                reject_queued(p, cx, cid, from);
                let waiting: Vec<PeerId> = a
                    .peers
                    .iter()
                    .filter(|(_, q)| q.peer_interested && q.am_choking)
                    .map(|(id, _)| *id)
                    .collect();
                if let Some(&next) = cx.rng().choose(&waiting) {
                    let q = a.peers.get_mut(&next).unwrap_or_else(|| unreachable!());
                    q.am_choking = false;
                    send(cx, next, cid, Body::Unchoke);
                }
            }
        }
        Body::Choke => {
            // Requests the peer received before choking are still answered (their blocks
            // are already on the way); later ones come back as `Reject`.
            let p = a.peers.get_mut(&from).unwrap_or_else(|| unreachable!());
            p.peer_choking = true;
        }
        Body::Reject { chunk, block } => {
            let p = a.peers.get_mut(&from).unwrap_or_else(|| unreachable!());
            let before = p.outstanding.len();
            p.outstanding.retain(|(r, _)| *r != (chunk, block));
            if p.outstanding.len() != before {
                if !p.peer_choking {
                    // Refused while unchoked: the peer keeps this chunk for later.
                    p.refused.set(chunk);
                }
                a.picker.request_dropped((chunk, block));
                reconsider_interest(config, a, cx, cid, Some(chunk));
                let peers: Vec<PeerId> = a.peers.keys().copied().collect();
                for q in peers {
                    fill_requests(config, a, cx, cid, q);
                }
            }
        }
        Body::Unchoke => {
            let p = a.peers.get_mut(&from).unwrap_or_else(|| unreachable!());
            p.peer_choking = false;
            // A new unchoke: chunks it refused before may be offered now.
            p.refused = Bitfield::new(a.manifest.chunk_count());
            fill_requests(config, a, cx, cid, from);
        }
        Body::Request { chunk, block } => {
            if a.manifest.block_len(chunk, block).is_none() {
                return Err(ProtocolError::OutOfRange { chunk, block });
            }
            if !a.picker.have().get(chunk) {
                return Err(ProtocolError::ChunkNotHeld(chunk));
            }
            if config.upload_rate.is_some() {
                // Paced uplink: the request waits for its turn (see `Swarm::pump`).
                let p = a.peers.get_mut(&from).unwrap_or_else(|| unreachable!());
                if p.am_choking || p.queued.len() >= MAX_QUEUED_REQUESTS {
                    send(cx, from, cid, Body::Reject { chunk, block });
                } else if !p.queued.iter().any(|e| (e.0, e.1) == (chunk, block)) {
                    p.queued.push_back((chunk, block, *request_seq));
                    *request_seq += 1;
                }
                return Ok(());
            }
            serve_request(config, t, cx, from, chunk, block);
        }
        Body::Cancel { chunk, block } => {
            // Without `upload_rate` blocks are handed to the driver as soon as they are
            // requested, so there is nothing here to withdraw (the driver may drop a queued
            // frame); with it, a request still waiting in our queue is withdrawn.
            if a.manifest.block_len(chunk, block).is_none() {
                return Err(ProtocolError::OutOfRange { chunk, block });
            }
            let p = a.peers.get_mut(&from).unwrap_or_else(|| unreachable!());
            p.queued.retain(|e| (e.0, e.1) != (chunk, block));
        }
        Body::Block { chunk, block, data } => {
            return on_block(config, t, cx, from, chunk, block, data);
        }
        Body::Handshake | Body::ManifestRequest | Body::Manifest(_) => {}
    }
    Ok(())
}

/// Answers a block request that passed validation: the block, or `Reject` if we choke the
/// peer (it was sent before our `Choke` arrived) or, while super-seeding, the chunk
/// already left us once for another peer.
fn serve_request<S: ChunkStore>(
    config: &Config,
    t: &mut Transfer<S>,
    cx: &mut SwarmCx<'_>,
    from: PeerId,
    chunk: u32,
    block: u32,
) {
    let cid = t.cid;
    let Some(a) = &mut t.active else { return };
    let Some(len) = a.manifest.block_len(chunk, block) else {
        return;
    };
    let Some(p) = a.peers.get_mut(&from) else {
        return;
    };
    if p.am_choking {
        // Sent before our Choke arrived: refuse it so the peer asks elsewhere.
        send(cx, from, cid, Body::Reject { chunk, block });
        return;
    }
    if let Some(ss) = &a.super_seed
        && ss.unserved > 0
        && ss.first_served_to[chunk as usize].is_some_and(|o| o != from)
    {
        // Super-seeding and this chunk already left once: keep our upload for
        // chunks nobody has yet and show this peer one of those instead.
        send(cx, from, cid, Body::Reject { chunk, block });
        p.revealed.retain(|&c| c != chunk);
        reveal(config, a, cx, cid, from);
        return;
    }
    match a
        .store
        .read_block(chunk, block * a.manifest.block_size(), len)
    {
        Ok(data) => {
            if let (Some(ss), 0) = (&mut a.super_seed, block) {
                ss.served[chunk as usize] += 1;
                if ss.first_served_to[chunk as usize].is_none() {
                    ss.first_served_to[chunk as usize] = Some(from);
                    ss.unserved -= 1;
                }
            }
            p.up_round += len as u64;
            t.stats.uploaded += len as u64;
            send(cx, from, cid, Body::Block { chunk, block, data });
        }
        Err(e) => cx.emit(Event::StoreFailed {
            cid,
            error: e.to_string(),
        }),
    }
}

/// Answers the requests a peer we now choke still has waiting in our upload queue with
/// `Reject` (they will not be served), so it asks elsewhere at once.
fn reject_queued(p: &mut PeerState, cx: &mut SwarmCx<'_>, cid: ContentId, peer: PeerId) {
    for (chunk, block, _) in p.queued.drain(..) {
        send(cx, peer, cid, Body::Reject { chunk, block });
    }
}

fn on_block<S: ChunkStore>(
    config: &Config,
    t: &mut Transfer<S>,
    cx: &mut SwarmCx<'_>,
    from: PeerId,
    chunk: u32,
    block: u32,
    data: Bytes,
) -> Result<(), ProtocolError> {
    let cid = t.cid;
    let Some(a) = &mut t.active else {
        return Ok(());
    };
    if data.len() > BLOCK_SIZE as usize {
        return Err(ProtocolError::Oversized {
            kind: "swarm_block",
            len: data.len(),
            max: BLOCK_SIZE as usize,
        });
    }
    let Some(expected) = a.manifest.block_len(chunk, block) else {
        return Err(ProtocolError::OutOfRange { chunk, block });
    };
    if data.len() != expected as usize {
        return Err(ProtocolError::BlockLength {
            chunk,
            block,
            got: data.len(),
            expected,
        });
    }
    let r = (chunk, block);
    let mut retry = None;
    t.stats.downloaded += expected as u64;
    if let Some(p) = a.peers.get_mut(&from) {
        p.down_round += expected as u64;
        p.outstanding.retain(|(o, _)| *o != r);
    }
    match a.picker.block_received(r, data, from) {
        BlockOutcome::Stored => {}
        BlockOutcome::Duplicate | BlockOutcome::Unwanted => t.stats.wasted += expected as u64,
        BlockOutcome::Complete(blocks) => {
            let datas: Vec<Bytes> = blocks.iter().map(|(d, _)| d.clone()).collect();
            // The store verifies the chunk against the manifest before it holds it (the one
            // BLAKE3 pass per chunk; see `ChunkStore::write_chunk`).
            let verified = match a.store.write_chunk(chunk, &datas) {
                Ok(()) => true,
                Err(StoreError::HashMismatch(_)) => false,
                Err(e) => {
                    cx.emit(Event::StoreFailed {
                        cid,
                        error: e.to_string(),
                    });
                    return Ok(());
                }
            };
            if verified {
                a.picker.mark_have(chunk);
                if let Some(bad) = a.failed.remove(&chunk) {
                    // Smart ban: blocks that differ from the verified chunk were corrupt.
                    let mut guilty = BTreeSet::new();
                    for ((bad_data, sender), good) in bad.iter().zip(&datas) {
                        if bad_data != good {
                            guilty.insert(*sender);
                        }
                    }
                    for g in guilty {
                        strike(config, t, cx, g);
                    }
                }
                on_chunk_verified(config, t, cx, chunk);
            } else {
                t.stats.corrupt_chunks += 1;
                let senders: BTreeSet<PeerId> = blocks.iter().map(|(_, p)| *p).collect();
                cx.emit(Event::ChunkRejected {
                    cid,
                    chunk,
                    from: senders.iter().copied().collect(),
                });
                if senders.len() == 1 {
                    for s in senders {
                        strike(config, t, cx, s);
                    }
                } else if let Some(a) = &mut t.active {
                    if a.failed.len() >= config.max_failed_records {
                        a.failed.pop_first();
                    }
                    a.failed.insert(chunk, blocks);
                }
                // The chunk is wanted again, from whoever holds it — after the cancels
                // below, which are for this round's requests: asked first, the new round's
                // requests for block `r` would be cancelled with them and their picker slot
                // left "requested" from no one, the chunk never asked for again.
                retry = Some(chunk);
            }
        }
    }
    // Endgame: cancel the same block elsewhere.
    if let Some(a) = &mut t.active {
        let others: Vec<PeerId> = a
            .peers
            .iter_mut()
            .filter(|(p, _)| **p != from)
            .filter_map(|(p, s)| {
                let before = s.outstanding.len();
                s.outstanding.retain(|(o, _)| *o != r);
                (s.outstanding.len() != before).then_some(*p)
            })
            .collect();
        for p in others {
            send(cx, p, cid, Body::Cancel { chunk, block });
            fill_requests(config, a, cx, cid, p);
        }
        if a.peers.contains_key(&from) {
            fill_requests(config, a, cx, cid, from);
        }
        if let Some(c) = retry {
            reconsider_interest(config, a, cx, cid, Some(c));
        }
    }
    Ok(())
}

fn on_chunk_verified<S: ChunkStore>(
    config: &Config,
    t: &mut Transfer<S>,
    cx: &mut SwarmCx<'_>,
    chunk: u32,
) {
    let cid = t.cid;
    let Some(a) = &mut t.active else { return };
    let have = a.picker.have().count();
    let total = a.manifest.chunk_count();
    let peers: Vec<PeerId> = a.peers.keys().copied().collect();
    for p in peers {
        send(cx, p, cid, Body::Have { chunk });
        let s = a.peers.get_mut(&p).unwrap_or_else(|| unreachable!());
        if s.am_interested && s.has.get(chunk) && !a.picker.wants_from(&s.has) {
            s.am_interested = false;
            send(cx, p, cid, Body::NotInterested);
        }
    }
    if config.progress_every > 0 && (have % config.progress_every == 0 || have == total) {
        cx.emit(Event::Progress { cid, have, total });
    }
    if a.picker.is_complete() {
        finish(t, cx);
    }
}

fn finish<S: ChunkStore>(t: &mut Transfer<S>, cx: &mut SwarmCx<'_>) {
    let cid = t.cid;
    let Some(a) = &mut t.active else { return };
    if let Err(e) = a.store.finish() {
        cx.emit(Event::StoreFailed {
            cid,
            error: e.to_string(),
        });
        return;
    }
    // Nothing is wanted any more: stray endgame requests are simply forgotten.
    for p in a.peers.values_mut() {
        p.outstanding.clear();
    }
    t.stats.completed_at = Some(cx.now());
    cx.emit(Event::Completed {
        cid,
        downloaded: t.stats.downloaded,
        uploaded: t.stats.uploaded,
    });
}

fn update_interest<S: ChunkStore>(
    config: &Config,
    a: &mut Active<S>,
    cx: &mut SwarmCx<'_>,
    cid: ContentId,
    peer: PeerId,
) {
    let wants = wants_now(config, a, &a.peers[&peer]);
    let p = a.peers.get_mut(&peer).unwrap_or_else(|| unreachable!());
    if wants && !p.am_interested {
        p.am_interested = true;
        send(cx, peer, cid, Body::Interested);
        fill_requests(config, a, cx, cid, peer);
    } else if !wants && p.am_interested {
        p.am_interested = false;
        send(cx, peer, cid, Body::NotInterested);
    }
}

fn fill_requests<S: ChunkStore>(
    config: &Config,
    a: &mut Active<S>,
    cx: &mut SwarmCx<'_>,
    cid: ContentId,
    peer: PeerId,
) {
    let now = cx.now();
    let Some(p) = a.peers.get_mut(&peer) else {
        return;
    };
    if p.peer_choking || !p.am_interested {
        return;
    }
    // What we may ask this peer for: what it has, minus what it refused.
    let offer = if p.refused.count() == 0 {
        None
    } else {
        let mut bits = p.has.clone();
        for c in p.refused.ones() {
            bits.clear(c);
        }
        Some(bits)
    };
    let offer = offer.as_ref().unwrap_or(&p.has);
    // Kept in step with `p.outstanding` below: one copy per fill, not one per pick.
    let mut outstanding: Vec<BlockRef> = p.outstanding.iter().map(|(r, _)| *r).collect();
    while p.outstanding.len() < config.pipeline_depth {
        let Some(r) = a.picker.pick(&a.manifest, offer, &outstanding, cx.rng()) else {
            break;
        };
        p.outstanding.push((r, now));
        outstanding.push(r);
        send(
            cx,
            peer,
            cid,
            Body::Request {
                chunk: r.0,
                block: r.1,
            },
        );
    }
    if config.release_idle_interest && p.outstanding.is_empty() {
        // Unchoked, yet everything it has that we lack is requested elsewhere: free its
        // slot for a peer that can use it (see `Config::release_idle_interest`).
        p.am_interested = false;
        send(cx, peer, cid, Body::NotInterested);
    }
}

/// Whether we want something from `p` now: with [`Config::release_idle_interest`] a
/// block we could request ([`Picker::can_pick`] over what it offers), else any chunk we
/// lack.
fn wants_now<S>(config: &Config, a: &Active<S>, p: &PeerState) -> bool {
    if !config.release_idle_interest {
        return a.picker.wants_from(&p.has);
    }
    if p.refused.count() == 0 {
        return a.picker.can_pick(&p.has);
    }
    let mut offer = p.has.clone();
    for c in p.refused.ones() {
        offer.clear(c);
    }
    a.picker.can_pick(&offer)
}

/// Declares interest again in peers we went quiet on that now have a block we could
/// request (only peers holding `chunk`, if given): called when requests are dropped or a
/// chunk fails verification, so its blocks are requestable again.
fn reconsider_interest<S: ChunkStore>(
    config: &Config,
    a: &mut Active<S>,
    cx: &mut SwarmCx<'_>,
    cid: ContentId,
    chunk: Option<u32>,
) {
    if !config.release_idle_interest || a.picker.is_complete() {
        return;
    }
    let peers: Vec<PeerId> = a
        .peers
        .iter()
        .filter(|(_, p)| !p.am_interested && p.got_bitfield)
        .filter(|(_, p)| chunk.is_none_or(|c| p.has.get(c)))
        .filter(|(_, p)| wants_now(config, a, p))
        .map(|(id, _)| *id)
        .collect();
    for q in peers {
        let p = a.peers.get_mut(&q).unwrap_or_else(|| unreachable!());
        p.am_interested = true;
        send(cx, q, cid, Body::Interested);
        fill_requests(config, a, cx, cid, q);
    }
}

fn strike<S: ChunkStore>(config: &Config, t: &mut Transfer<S>, cx: &mut SwarmCx<'_>, peer: PeerId) {
    let n = t.strikes.entry(peer).or_insert(0);
    *n += 1;
    if *n >= config.ban_after_corrupt {
        ban(t, cx, peer);
    }
}

fn penalise<S: ChunkStore>(
    config: &Config,
    t: &mut Transfer<S>,
    cx: &mut SwarmCx<'_>,
    peer: PeerId,
    error: ProtocolError,
) {
    cx.emit(Event::PeerPenalised {
        cid: t.cid,
        peer,
        error,
    });
    let n = t.penalties.entry(peer).or_insert(0);
    *n += 1;
    if *n >= config.max_penalties {
        ban(t, cx, peer);
    }
}

fn ban<S: ChunkStore>(t: &mut Transfer<S>, cx: &mut SwarmCx<'_>, peer: PeerId) {
    if !t.banned.insert(peer) {
        return;
    }
    t.strikes.remove(&peer);
    t.penalties.remove(&peer);
    t.candidates.remove(&peer);
    disconnect(t, peer);
    cx.emit(Event::PeerBanned { cid: t.cid, peer });
}

/// Forgets a connected peer: its chunks no longer count and its requests go elsewhere.
fn disconnect<S: ChunkStore>(t: &mut Transfer<S>, peer: PeerId) {
    if let Some(a) = &mut t.active
        && let Some(p) = a.peers.remove(&peer)
    {
        a.picker.remove_peer(&p.has);
        for (r, _) in p.outstanding {
            a.picker.request_dropped(r);
        }
    }
}

fn rechoke<S: ChunkStore>(config: &Config, t: &mut Transfer<S>, cx: &mut SwarmCx<'_>) {
    let cid = t.cid;
    let Some(a) = &mut t.active else { return };
    let seeding = a.picker.is_complete();
    let secs = config.choker.interval.as_secs_f64().max(1e-3);
    let candidates: Vec<Candidate> = a
        .peers
        .iter_mut()
        .map(|(peer, p)| {
            let bytes = if seeding { p.up_round } else { p.down_round };
            p.up_round = 0;
            p.down_round = 0;
            Candidate {
                peer: *peer,
                interested: p.peer_interested,
                rate: (bytes as f64 / secs) as u64,
                connected_at: p.connected_at,
            }
        })
        .collect();
    let now = cx.now();
    let unchoked = a.choker.rechoke(&config.choker, &candidates, now, cx.rng());
    for (peer, p) in a.peers.iter_mut() {
        let want_choke = !unchoked.contains(peer);
        if want_choke != p.am_choking {
            p.am_choking = want_choke;
            send(
                cx,
                *peer,
                cid,
                if want_choke {
                    Body::Choke
                } else {
                    Body::Unchoke
                },
            );
            if want_choke {
                reject_queued(p, cx, cid, *peer);
            }
        }
    }
}

fn tick<S: ChunkStore>(config: &Config, t: &mut Transfer<S>, cx: &mut SwarmCx<'_>) {
    let cid = t.cid;
    let now = cx.now();
    if let Some(a) = &mut t.active {
        // Half-open connections (no bitfield within the handshake timeout) are dropped.
        let dead: Vec<PeerId> = a
            .peers
            .iter()
            .filter(|(_, p)| {
                !p.got_bitfield && now.saturating_since(p.connected_at) >= config.handshake_timeout
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in dead {
            disconnect(t, peer);
        }
    }
    if let Some(a) = &mut t.active {
        let peers: Vec<PeerId> = a.peers.keys().copied().collect();
        for peer in peers {
            let p = a.peers.get_mut(&peer).unwrap_or_else(|| unreachable!());
            let before = p.outstanding.len();
            let mut expired = Vec::new();
            p.outstanding.retain(|(r, at)| {
                let old = now.saturating_since(*at) >= config.request_timeout;
                if old {
                    expired.push(*r);
                }
                !old
            });
            for r in expired {
                a.picker.request_dropped(r);
                send(
                    cx,
                    peer,
                    cid,
                    Body::Cancel {
                        chunk: r.0,
                        block: r.1,
                    },
                );
            }
            if p.outstanding.len() != before || p.outstanding.is_empty() {
                fill_requests(config, a, cx, cid, peer);
            }
        }
        // Requests expired or lost with a dropped peer are requestable again.
        reconsider_interest(config, a, cx, cid, None);
    }
    // Provider look-ups. A running transfer with few peers looks again every
    // `lookup_interval`. One without a manifest and nobody left to ask has nothing to do
    // at all — its first look-up may simply have run before the sharers' announcements
    // were stored — so it looks again after one tick, doubling the wait up to
    // `lookup_interval` while the look-ups find nobody.
    let (wanted, interval) = match &t.active {
        Some(a) => (
            a.peers.len() < config.min_peers && !a.picker.is_complete(),
            config.lookup_interval,
        ),
        None => (
            t.manifest_asked.is_empty(),
            config
                .tick
                .saturating_mul(1 << t.empty_lookups.min(16))
                .min(config.lookup_interval),
        ),
    };
    let due = t
        .last_lookup
        .is_none_or(|l| now.saturating_since(l) >= interval);
    if wanted && due {
        t.last_lookup = Some(now);
        t.empty_lookups = t.empty_lookups.saturating_add(1);
        cx.emit(Event::Discovery(Discovery::FindProviders {
            cid,
            key: cid.dht_key(),
        }));
    }
    connect_candidates(config, t, cx);
}

#[cfg(test)]
mod tests {
    use peerlab_overlay::{Outbox, Output, Rng};

    use super::*;
    use crate::storage::MemoryFactory;

    type Core = Swarm<MemoryFactory>;

    /// Drives one fetching core by hand and records what it sends to whom.
    struct Harness {
        core: Core,
        rng: Rng,
        now: Instant,
        sent: Vec<(PeerId, Body)>,
        cid: ContentId,
    }

    impl Harness {
        fn deliver(&mut self, from: PeerId, body: Body) {
            let mut out = Outbox::new();
            let msg = Message {
                cid: self.cid,
                body,
            };
            self.core.handle_message(
                &mut Context::new(self.now, &mut self.rng, &mut out),
                from,
                msg,
            );
            self.collect(out);
        }

        fn collect(&mut self, mut out: Outbox<Message, Timer, Event>) {
            for o in out.drain() {
                if let Output::Send { to, msg } = o {
                    self.sent.push((to, msg.body));
                }
            }
        }

        fn count(&self, to: PeerId, kind: &str) -> usize {
            self.sent
                .iter()
                .filter(|(t, b)| *t == to && b.kind() == kind)
                .count()
        }
    }

    /// A fetcher of a two-chunk file (eight 16 KiB blocks per chunk, one pipeline's worth)
    /// connected to two peers that hold chunk 0 only, interested in both, both still
    /// choking it. Chunk 1 is nowhere, so endgame never starts.
    fn fetcher(config: Config) -> (Harness, PeerId, PeerId) {
        assert_eq!(config.pipeline_depth, 8);
        let data = Bytes::from(vec![3u8; 16 * BLOCK_SIZE as usize]);
        let m = Manifest::from_bytes("f", &data, 8 * BLOCK_SIZE).unwrap();
        let (u1, u2) = (PeerId::synthetic(1), PeerId::synthetic(2));
        let mut h = Harness {
            core: Swarm::new(config, MemoryFactory),
            rng: Rng::seed(7),
            now: Instant(1_000_000),
            sent: Vec::new(),
            cid: m.content_id(),
        };
        let mut out = Outbox::new();
        let mut cx = Context::new(h.now, &mut h.rng, &mut out);
        h.core.handle_start(&mut cx);
        h.core.handle_command(
            &mut cx,
            Command::Fetch {
                cid: h.cid,
                providers: vec![u1, u2],
            },
        );
        h.collect(out);
        h.deliver(u1, Body::Manifest(m.clone()));
        let mut full = Bitfield::new(2);
        full.set(0);
        for u in [u1, u2] {
            h.deliver(u, Body::Bitfield(full.clone()));
            assert_eq!(h.count(u, "swarm_interested"), 1);
        }
        (h, u1, u2)
    }

    fn request_now() -> Config {
        Config {
            release_idle_interest: true,
            ..Config::default()
        }
    }

    #[test]
    fn unchoked_by_a_peer_with_nothing_requestable_we_release_its_slot() {
        let (mut h, u1, u2) = fetcher(request_now());
        // `u1` unchokes first and is asked for all eight blocks of chunk 0.
        h.deliver(u1, Body::Unchoke);
        assert_eq!(h.count(u1, "swarm_request"), 8);
        // `u2` unchokes too: everything it has is already requested from `u1`, so its
        // slot would sit idle; we say NotInterested so it can unchoke someone else.
        h.deliver(u2, Body::Unchoke);
        assert_eq!(h.count(u2, "swarm_request"), 0);
        assert_eq!(h.count(u2, "swarm_not_interested"), 1);
        // `u1` refuses one block: it is requestable again, and `u2` is asked for it.
        h.deliver(u1, Body::Reject { chunk: 0, block: 7 });
        assert_eq!(h.count(u2, "swarm_interested"), 2);
        assert_eq!(h.count(u2, "swarm_request"), 1);
    }

    #[test]
    fn with_bep3_interest_the_idle_slot_is_kept() {
        let config = Config {
            release_idle_interest: false,
            ..Config::default()
        };
        let (mut h, u1, u2) = fetcher(config);
        h.deliver(u1, Body::Unchoke);
        h.deliver(u2, Body::Unchoke);
        assert_eq!(h.count(u2, "swarm_request"), 0);
        assert_eq!(h.count(u2, "swarm_not_interested"), 0);
    }

    #[test]
    fn interest_is_not_declared_for_chunks_already_fully_requested() {
        let (mut h, u1, _) = fetcher(request_now());
        h.deliver(u1, Body::Unchoke);
        assert_eq!(h.count(u1, "swarm_request"), 8);
        // A third peer announces the chunk: nothing in it can be requested now.
        let u3 = PeerId::synthetic(3);
        h.deliver(u3, Body::Handshake);
        h.deliver(u3, Body::Bitfield(Bitfield::new(2)));
        h.deliver(u3, Body::Have { chunk: 0 });
        assert_eq!(h.count(u3, "swarm_interested"), 0);
    }
}
