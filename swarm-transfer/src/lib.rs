//! BitTorrent-style swarm file transfer: chunked, BLAKE3-verified, rarest first, with
//! tit-for-tat choking and resumable storage.
//!
//! A file is described by a [`Manifest`] (name, size, chunk size, BLAKE3 hash per chunk)
//! and named by its [`ContentId`], the BLAKE3 hash of the manifest's canonical encoding.
//! Peers that share a content id form a swarm: they exchange bitfields and `Have`s,
//! request 16 KiB blocks from peers that unchoke them, verify each complete chunk
//! against its hash before storing or serving it, and upload by tit-for-tat. The design
//! follows BEP 3 (the BitTorrent protocol) and Cohen, "Incentives Build Robustness in
//! BitTorrent" (2003); Legout et al., "Rarest First and Choke Algorithms Are Enough"
//! (IMC 2006) motivate keeping exactly these two algorithms; Kumar & Ross, "Peer-assisted
//! file distribution: the minimum distribution time" (2006) give the bound the
//! simulator experiment compares against.
//!
//! # Hostile peers
//!
//! Anyone who can reach a node can join a swarm, so no peer is trusted with more than it
//! can prove ([`Config::defenses`], on by default). A block is accepted only from the peer
//! it was requested from, so every chunk knows who contributed each of its blocks. A chunk
//! that fails verification convicts its sender when it came from one peer; one that mixed
//! several peers is fetched again whole from one peer (libtorrent's "parole"), so the next
//! failure, or the comparison once it passes (libtorrent's "smart ban"), names the liar
//! and only the liar. Peers that take requests and answer none are evicted; newcomers that
//! opened the transfer with us hold a bounded share of the connection slots and give way
//! to newer ones before any peer that delivered. Every rejected input is reported to the
//! driver as an [`Offence`](peerlab_overlay::Offence) of its sender, which turns them into
//! strikes and bans.
//!
//! # Layout
//!
//! - `manifest`: [`Manifest`]s, [`ContentId`]s, chunk/block geometry and verification.
//! - `bitfield`: [`Bitfield`], chunk sets as sent on the wire.
//! - `wire`: the peer [`Message`]s and their frame limits.
//! - [`picker`]: random first, strict priority, rarest first, endgame.
//! - [`choker`]: tit-for-tat with four slots every 10 s and an optimistic unchoke every 30 s.
//! - `swarm`: the sans-IO core ([`Swarm`], a [`peerlab_overlay::Protocol`]) running many
//!   transfers keyed by content id; its own docs map its files (transfer, connection,
//!   manifest fetch, download, upload, super-seeding).
//! - `storage`: the [`ChunkStore`] trait, the in-memory store the simulator uses and the
//!   resumable file store the node uses — the only module doing I/O.
//! - `discovery`: the DHT interface ([`Discovery`]: provider announcements and lookups).
//!
//! The picker and the choker are public modules because their `Config`s are part of
//! [`Config`]; everything else is re-exported here.

mod bitfield;
pub mod choker;
mod discovery;
mod manifest;
pub mod picker;
mod storage;
mod swarm;
mod wire;

pub use bitfield::Bitfield;
pub use discovery::{Discovery, dht_key};
pub use manifest::{
    AUTO_MIN_CHUNK_SIZE, AUTO_TARGET_CHUNKS, BLOCK_SIZE, ContentId, DEFAULT_CHUNK_SIZE, HASH_LEN,
    MAX_CHUNK_SIZE, MAX_CHUNKS, MAX_NAME_LEN, MIN_CHUNK_SIZE, Manifest, ManifestBuilder,
    ManifestError, auto_chunk_size,
};
pub use picker::Strategy;
pub use storage::{
    ChunkStore, FLUSH_BYTES, FLUSH_INTERVAL, FileFactory, FileStore, FlushPolicy, MemoryFactory,
    MemoryStore, READ_CACHE_BYTES, StoreError, StoreFactory, manifest_from_file,
};
pub use swarm::{
    ANNOUNCE_RETRY, Command, CommandError, Config, Event, Link, MAX_ANNOUNCE_DOUBLINGS,
    MAX_PIPELINE_DEPTH, MAX_QUEUED_REQUESTS, MAX_REQUEST_QUEUE_RTTS, ProtocolError, Swarm, Timer,
    TransferStats,
};
pub use wire::{
    Body, FrameError, MAX_BLOCK_FRAME, MAX_SMALL_FRAME, Message, PROTOCOL_NAME, decode_frame,
    encode_frame,
};

/// Re-exported so users build blocks and hashes with the same versions as this crate.
pub use blake3;
/// Re-exported so users build blocks and hashes with the same versions as this crate.
pub use bytes;
