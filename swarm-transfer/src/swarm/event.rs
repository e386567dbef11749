//! What the core reports: events for the application, the protocol violations it
//! penalises, and the counters and connection snapshots it exposes.

use peerlab_overlay::{Instant, Offence, PeerId};

use super::CommandError;
use crate::discovery::Discovery;
use crate::manifest::{ContentId, ManifestError};

/// Events for the application.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The command `req` was carried out: the share serves, the fetch runs, the cancelled
    /// transfer is gone.
    Accepted {
        /// The command's request id.
        req: u64,
        /// The transfer.
        cid: ContentId,
    },
    /// The command `req` was refused; nothing changed.
    Refused {
        /// The command's request id.
        req: u64,
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
    /// Progress (every [`Config::progress_every`](crate::Config::progress_every) chunks).
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
    /// The application should talk to the DHT (see [`Discovery`]).
    Discovery(Discovery),
}

/// A protocol violation by a peer. The offending message was dropped and nothing was
/// stored; the peer was penalised (and, with [`Config::defenses`](crate::Config::defenses),
/// reported as [`ProtocolError::offence`]).
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

impl ProtocolError {
    /// How the violation is reported to the driver: a manifest that does not hash to the
    /// content id it was sent for is data that failed verification (`Corrupt`); everything
    /// else breaks the protocol's own rules (`Malformed`), which no honest peer does.
    pub fn offence(&self) -> Offence {
        match self {
            ProtocolError::Manifest(ManifestError::CidMismatch { .. }) => Offence::Corrupt,
            _ => Offence::Malformed,
        }
    }
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
    /// Payload bytes received but not used (duplicates, answers to withdrawn requests).
    pub wasted: u64,
    /// Blocks dropped because they were not outstanding at their sender (never asked of
    /// it, or sent by a peer not connected to the transfer).
    pub unsolicited: u64,
    /// Peers dropped from the transfer without a ban: stallers, and newcomers that made
    /// room for others.
    pub evicted: u32,
    /// Chunks that failed verification.
    pub corrupt_chunks: u32,
    /// Peers banned.
    pub banned: u32,
    /// Connected peers.
    pub peers: u32,
    /// Peers known to have the file (providers found, peers that connected), connected
    /// or not.
    pub providers: u32,
    /// Provider look-ups asked of the DHT so far.
    pub provider_lookups: u32,
    /// Announcements of this node as a provider that the DHT stored.
    pub announcements: u32,
    /// Manifest requests sent so far (0 once the manifest is known from the start).
    pub manifest_requests: u32,
    /// When the transfer completed.
    pub completed_at: Option<Instant>,
}

/// One connection of a transfer as seen by [`Swarm::links`](crate::Swarm::links): BEP 3's
/// four flags and the requests we have in flight to the peer.
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
