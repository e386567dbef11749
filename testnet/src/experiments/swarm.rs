//! `peerlab sim swarm`: a BitTorrent-style swarm distributing one file.
//!
//! `S` seeders share one file of `F` MiB; `N` downloading peers arrive either all at once
//! (a flash crowd: each starts within the first second) or as a Poisson process. Each
//! peer gets a tracker-like list of [`Params::neighbours`] random peers already present
//! (the seeders included), fetches the manifest from one of them, verifies it against
//! the content id and joins the swarm; it stays as a seeder once complete. Every node
//! runs the real `peerlab_swarm::Swarm` core with in-memory stores: seeders' stores slice
//! one shared buffer and honest peers store (and forward) the very `Bytes` they
//! received, so 1000 peers × 100 MiB needs one copy of the file. Every chunk every peer
//! receives is hashed with BLAKE3, as on a real node.
//!
//! `B` of the `N` peers are corrupt: they download honestly but every block they serve has
//! one byte flipped (each corrupt block is a fresh allocation).
//!
//! Links have a fixed one-way latency; each node has an upload and a download FIFO queue
//! (`sim.set_bandwidth`), and a message costs its real frame length.
//!
//! The figures are set against Kumar & Ross (2006): with seeder upload `u_s`, peer uploads
//! `u_i` and the slowest download `d_min`, no scheme can deliver `F` bytes to `N` peers
//! faster than `max{F/u_s, F/d_min, N·F/(u_s+Σu_i)}`, and a client–server scheme needs
//! `max{N·F/u_s, F/d_min}`. `efficiency` is the bound over the slowest honest peer's
//! completion time. With `--picker both` the same swarm runs twice, rarest first and
//! random piece selection, and both runs are reported side by side with their chunk
//! diversity (Legout et al., IMC 2006): every 5 s a [`DiversitySample`] records the
//! copies of the rarest chunks, the spread of copies per chunk and how often one random
//! peer holds something another lacks.

use std::fmt::Write as _;
use std::time::{Duration, Instant as WallInstant};

use clap::{Args, ValueEnum};
use peerlab_overlay::{Instant, PeerId, Rng};
use peerlab_swarm::blake3;
use peerlab_swarm::bytes::Bytes;
use peerlab_swarm::{
    Bitfield, ChunkStore, Command, Config, Event, Manifest, MemoryStore, StoreError, StoreFactory,
    Strategy, Swarm,
};
use serde::Serialize;

use super::{ExperimentError, invalid};
use peerlab_sim::{Latency, Sim, SimConfig};

/// Largest swarm accepted (memory: a few hundred KiB per peer at 100 MiB).
pub const MAX_PEERS: usize = 20_000;
/// Largest file accepted, in MiB (the original is held in memory once).
pub const MAX_FILE_MIB: u64 = 4096;
/// Largest `--pipeline-depth` accepted (1024 blocks = 16 MiB in flight per peer).
pub const MAX_PIPELINE_DEPTH: usize = 1024;
/// `--fixed-rules` request queue with `--fifo-upload`: the core's fixed depth before it
/// adapted (enough for 10 Mbit/s over a 100 ms round trip).
pub const FIFO_PIPELINE_DEPTH: usize = 8;
/// `--fixed-rules` request queue with paced uplinks (the default; not with
/// `--fifo-upload`, which uses [`FIFO_PIPELINE_DEPTH`]). A paced uploader serves a chunk's turn back to
/// back, so a downloader's refills (one round trip after the first blocks reach it) must
/// arrive before the turn's queued requests run out; 8 blocks (131 ms at 8 Mbit/s) barely
/// cover the ~120 ms request round trip, while deeper queues lock more blocks on one
/// uploader and raise duplicate traffic. With FIFO uplinks deeper queues lengthen the
/// interleaved queue instead, so 12 is for paced uplinks only (the sweep is in
/// docs/experiments/swarm.md).
pub const PACED_PIPELINE_DEPTH: usize = 12;
/// How often chunk diversity is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Ordered peer pairs drawn per sample for [`DiversitySample::interest`] (bounds the cost
/// of a sample at any swarm size).
pub const INTEREST_PAIRS: usize = 2000;

/// Chunk diversity among the downloading peers at one sample time (Legout et al., IMC
/// 2006, §4: rarest first shows up in how the *rarest* chunks are replicated and in
/// whether peers stay interested in each other).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiversitySample {
    /// Virtual time of the sample, seconds.
    pub secs: f64,
    /// Fraction of the file the downloading peers present hold on average.
    pub done: f64,
    /// Copies among downloading peers of the least replicated chunk (0 while some chunk
    /// is still only at the seeders).
    pub min_copies: u32,
    /// Mean copies per chunk.
    pub mean_copies: f64,
    /// Mean copies of the rarest 10 % of chunks over the mean copies per chunk: 1 when
    /// every chunk is equally replicated, small when some chunks lag behind.
    pub rarest_decile_ratio: f64,
    /// Coefficient of variation (standard deviation / mean) of the copies per chunk.
    pub copies_cv: f64,
    /// Fraction of random ordered pairs (x, y) of downloading peers in which y holds a
    /// chunk x lacks, i.e. x would be interested in y (Legout's peer interest).
    pub interest: f64,
}

/// Snapshots of the connection flags per [`SAMPLE_EVERY`] window for
/// [`PickerRun::uplink_states`].
pub const UPLINK_SNAPSHOTS: u32 = 5;

/// What the downloading peers' uplinks were doing in one window: each downloading peer
/// falls in exactly one of the first four classes (fractions of the downloading peers
/// present, averaged over the window's snapshots).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UplinkState {
    /// End of the window, seconds.
    pub secs: f64,
    /// Holds no chunk yet: nothing to upload.
    pub empty: f64,
    /// Holds chunks but no neighbour is interested in them.
    pub no_demand: f64,
    /// Some neighbour is interested, but no peer it unchokes has a request in flight to
    /// it: the uplink is idle although there is demand.
    pub idle_with_demand: f64,
    /// Some unchoked peer has a request in flight to it.
    pub busy: f64,
    /// Mean over uploading peers (demand or busy) of unchoked interested peers that have
    /// no request in flight to it: slots held by peers that take nothing.
    pub idle_slots: f64,
    /// Mean over the same peers of interested peers it keeps choked.
    pub choked_demand: f64,
}

#[derive(Default)]
struct UplinkWindow {
    snapshots: u32,
    sum: UplinkState,
}

impl UplinkWindow {
    fn finish(self, now: Instant) -> UplinkState {
        let n = self.snapshots.max(1) as f64;
        UplinkState {
            secs: now.as_secs_f64(),
            empty: self.sum.empty / n,
            no_demand: self.sum.no_demand / n,
            idle_with_demand: self.sum.idle_with_demand / n,
            busy: self.sum.busy / n,
            idle_slots: self.sum.idle_slots / n,
            choked_demand: self.sum.choked_demand / n,
        }
    }
}

/// Classifies every downloading peer's uplink at this instant (see [`UplinkState`]).
fn uplink_snapshot(
    sim: &Sim<Node>,
    cid: &peerlab_swarm::ContentId,
    leechers: &[PeerId],
    w: &mut UplinkWindow,
) {
    // Requests in flight from downloader d to uploader u.
    let mut in_flight: std::collections::BTreeMap<(PeerId, PeerId), usize> = Default::default();
    let mut present = Vec::new();
    for q in leechers {
        let Some(n) = sim.node(q) else { continue };
        let Some(have) = n.have(cid) else { continue };
        let links = n.links(cid);
        for l in &links {
            if l.outstanding > 0 {
                in_flight.insert((*q, l.peer), l.outstanding);
            }
        }
        present.push((*q, have.count(), links));
    }
    if present.is_empty() {
        return;
    }
    let total = present.len() as f64;
    let (mut empty, mut no_demand, mut idle, mut busy) = (0.0, 0.0, 0.0, 0.0);
    let (mut uploaders, mut idle_slots, mut choked_demand) = (0.0, 0.0, 0.0);
    for (q, have, links) in &present {
        if *have == 0 {
            empty += 1.0;
            continue;
        }
        let demand = links.iter().filter(|l| l.peer_interested).count();
        if demand == 0 {
            no_demand += 1.0;
            continue;
        }
        uploaders += 1.0;
        let mut active = 0;
        for l in links.iter().filter(|l| l.peer_interested) {
            if l.am_choking {
                choked_demand += 1.0;
            } else if in_flight.contains_key(&(l.peer, *q)) {
                active += 1;
            } else {
                idle_slots += 1.0;
            }
        }
        if active > 0 {
            busy += 1.0;
        } else {
            idle += 1.0;
        }
    }
    w.snapshots += 1;
    w.sum.empty += empty / total;
    w.sum.no_demand += no_demand / total;
    w.sum.idle_with_demand += idle / total;
    w.sum.busy += busy / total;
    if uploaders > 0.0 {
        w.sum.idle_slots += idle_slots / uploaders;
        w.sum.choked_demand += choked_demand / uploaders;
    }
}

/// The initial seeding phase as Legout et al. (IMC 2006, §4.2.1) measure it: while some
/// chunk is held only by the seeders, the swarm depends on them, and the piece picker
/// decides whether the seeders' upload goes into chunks nobody has (rarest first) or into
/// copies of chunks already out (random). Downloading peers only; 1 s resolution.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InitialSeeding {
    /// First second at which every chunk is held by at least one downloading peer (the
    /// seeders have served one full copy); `None` if never.
    pub first_copy_secs: Option<f64>,
    /// Seeders' upload until then, in file copies: 1.0 if every chunk left a seeder once
    /// before any left twice.
    pub seeder_copies_at_first_copy: Option<f64>,
    /// Seeders' upload over the same time in file copies if it had run at full rate
    /// (the time a perfect seeder needs is F/u_s).
    pub seeder_capacity_copies_at_first_copy: Option<f64>,
    /// Time-average over the phase of the fraction of chunks held by no downloading peer.
    pub seeder_only_mean: f64,
    /// Time-average over the phase of Legout's peer interest on real connections: the
    /// fraction of connected (downloader, downloader) pairs (x, y) in which y holds a
    /// chunk x lacks.
    pub interest_mean: f64,
    /// Every 5 s until the phase ends, and at its end: `[secs, chunks held only by the seeders (fraction),
    /// copies of the rarest chunk among downloading peers, connected-pair interest]`.
    pub series: Vec<[f64; 4]>,
}

/// Copies per chunk among the downloading peers present, and the fraction of connected
/// (x, y) downloader pairs in which y holds a chunk x lacks.
fn chunk_copies(
    sim: &Sim<Node>,
    cid: &peerlab_swarm::ContentId,
    leechers: &[PeerId],
    chunks: u32,
) -> (Vec<u32>, f64) {
    let mut copies = vec![0u32; chunks as usize];
    let mut fields: std::collections::BTreeMap<PeerId, &Bitfield> = Default::default();
    for q in leechers {
        if let Some(h) = sim.node(q).and_then(|n| n.have(cid)) {
            fields.insert(*q, h);
            for c in h.ones() {
                copies[c as usize] += 1;
            }
        }
    }
    let (mut pairs, mut interested) = (0u64, 0u64);
    for (q, mine) in &fields {
        let Some(n) = sim.node(q) else { continue };
        for l in n.links(cid) {
            if let Some(theirs) = fields.get(&l.peer) {
                pairs += 1;
                if theirs.has_any_missing_from(mine) {
                    interested += 1;
                }
            }
        }
    }
    let interest = if pairs > 0 {
        interested as f64 / pairs as f64
    } else {
        0.0
    };
    (copies, interest)
}

/// How peers arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Everyone within the first second.
    Flash,
    /// A Poisson process with rate `--arrival-rate` peers per second.
    Poisson,
}

/// Which piece picker(s) to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PickerArg {
    /// Rarest first (BitTorrent).
    Rarest,
    /// Random piece selection.
    Random,
    /// Both, side by side on the same swarm and seed (the report's top-level figures are
    /// rarest first's).
    Both,
}

/// Flags of `peerlab sim swarm`.
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// Downloading peers N.
    #[arg(long, default_value_t = 100)]
    pub peers: usize,
    /// Seeders S (they hold the file from the start).
    #[arg(long, default_value_t = 1)]
    pub seeders: usize,
    /// File size in MiB.
    #[arg(long, default_value_t = 100)]
    pub file_mib: u64,
    /// Chunk size in KiB (a power of two, 1..=16384). Default: what `peerlab share` picks
    /// for the file's size (`peerlab_swarm::auto_chunk_size`: 64 KiB up to 64 MiB, 128 KiB
    /// up to 128 MiB, then 256 KiB), or 256 KiB with `--fixed-rules`.
    #[arg(long)]
    pub chunk_kib: Option<u32>,
    /// Upload bandwidth of every downloading peer, Mbit/s.
    #[arg(long, default_value_t = 8.0)]
    pub upload_mbps: f64,
    /// Download bandwidth of every node, Mbit/s.
    #[arg(long, default_value_t = 32.0)]
    pub download_mbps: f64,
    /// Upload bandwidth of each seeder, Mbit/s (default: the peers' upload).
    #[arg(long)]
    pub seeder_upload_mbps: Option<f64>,
    /// How peers arrive.
    #[arg(long, value_enum, default_value_t = Arrival::Flash)]
    pub arrival: Arrival,
    /// Poisson arrival rate in peers per second.
    #[arg(long, default_value_t = 1.0)]
    pub arrival_rate: f64,
    /// Corrupt peers among the N (they serve blocks with a flipped byte).
    #[arg(long, default_value_t = 0)]
    pub bad_peers: usize,
    /// Piece selection: rarest, random, or both side by side.
    #[arg(long, value_enum, default_value_t = PickerArg::Rarest)]
    pub picker: PickerArg,
    /// Peers each newcomer is told about (like a tracker response).
    #[arg(long, default_value_t = 20)]
    pub neighbours: usize,
    /// One-way link latency in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub latency_ms: u64,
    /// Give up after this much virtual time, in seconds (default: 20 × the lower bound + 600).
    #[arg(long)]
    pub max_secs: Option<u64>,
    /// Turn off initial super-seeding (BEP 16) on the seeders.
    #[arg(long)]
    pub no_super_seed: bool,
    /// A fixed number of outstanding block requests per peer (the core's
    /// `Config::min_pipeline_depth` and `Config::pipeline_depth` both set to it). Default:
    /// the core's adaptive queue (rate × round trip between 8 and 128 blocks); with
    /// `--fixed-rules` 12 (`PACED_PIPELINE_DEPTH`), or 8 with `--fifo-upload`.
    #[arg(long)]
    pub pipeline_depth: Option<usize>,
    /// BEP 3's constants instead of the adaptive rules: 4 regular unchoke slots, 10 s choke
    /// rounds (the first after 10 s), an optimistic unchoke every 30 s and a fixed request
    /// queue (`--pipeline-depth`), so super-seeding reveals follow that fixed queue.
    #[arg(long)]
    pub fixed_rules: bool,
    /// Most regular unchoke slots (the core's `choker::Config::max_slots`; its floor is
    /// BEP 3's 4). Default: the core's 16.
    #[arg(long)]
    pub max_slots: Option<usize>,
    /// Shortest choke round in ms (the core's `choker::Config::min_interval`). Default:
    /// the core's 2 s.
    #[arg(long)]
    pub min_round_ms: Option<u64>,
    /// Chunks each unchoked peer could receive per choke round (the core's
    /// `choker::Config::round_chunks`). Default: the core's 8.
    #[arg(long)]
    pub round_chunks: Option<u32>,
    /// Round trips of data in a request queue (the core's `Config::request_queue_rtts`).
    /// Default: the core's 1.
    #[arg(long)]
    pub queue_rtts: Option<u32>,
    /// BEP 3's interest, "the peer has a chunk we lack", instead of the core's default
    /// "the peer has a block we can request now" (`Config::release_idle_interest`);
    /// implied by `--fixed-rules`.
    #[arg(long)]
    pub lack_interest: bool,
    /// Serve the requests queued at an uplink oldest first, instead of the core's default
    /// of chunks held by at most 4 of the uploader's peers first
    /// (`Config::scarce_holders`); implied by `--fixed-rules`.
    #[arg(long)]
    pub oldest_first: bool,
    /// Hand each requested block to the simulated uplink as its request arrives, so the
    /// uplink's FIFO queue interleaves all unchoked peers' blocks. By default every core is
    /// told its uplink rate (`Config::upload_rate`) and serves unchoked peers one chunk at
    /// a time.
    #[arg(long)]
    pub fifo_upload: bool,
    /// Seed of every random choice (file, arrivals, neighbours, network, cores).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run the grid of `swarm_sweep` (N, file size, links, latency) instead of one swarm;
    /// the other flags apply to every point.
    #[arg(long)]
    pub sweep: bool,
    /// With `--sweep`: every grid point, including the large (N, file) pairs the default
    /// grid leaves out.
    #[arg(long)]
    pub sweep_full: bool,
    /// With `--sweep`: only these swarm sizes (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub sweep_peers: Vec<usize>,
    /// With `--sweep`: only these file sizes in MiB (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub sweep_file_mib: Vec<u64>,
    /// With `--sweep`: only these one-way latencies in ms (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub sweep_latency_ms: Vec<u64>,
    /// With `--sweep`: seeds per point (`--seed`, `--seed` + 1, …).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// With `--sweep`: simulations run at once on this many threads.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
}

impl Params {
    /// The chunk size in KiB: `--chunk-kib`, else 256 with `--fixed-rules`, else what
    /// `peerlab share` picks for this file size.
    pub fn chunk_kib(&self) -> u32 {
        self.chunk_kib.unwrap_or_else(|| {
            if self.fixed_rules {
                peerlab_swarm::DEFAULT_CHUNK_SIZE / 1024
            } else {
                peerlab_swarm::auto_chunk_size(self.file_mib.saturating_mul(1 << 20)) / 1024
            }
        })
    }
}

impl Default for Params {
    fn default() -> Self {
        Params {
            peers: 100,
            seeders: 1,
            file_mib: 100,
            chunk_kib: None,
            upload_mbps: 8.0,
            download_mbps: 32.0,
            seeder_upload_mbps: None,
            arrival: Arrival::Flash,
            arrival_rate: 1.0,
            bad_peers: 0,
            picker: PickerArg::Rarest,
            neighbours: 20,
            latency_ms: 50,
            max_secs: None,
            no_super_seed: false,
            pipeline_depth: None,
            lack_interest: false,
            oldest_first: false,
            fifo_upload: false,
            seed: 1,
            fixed_rules: false,
            max_slots: None,
            min_round_ms: None,
            round_chunks: None,
            queue_rtts: None,
            sweep: false,
            sweep_full: false,
            sweep_peers: Vec::new(),
            sweep_file_mib: Vec::new(),
            sweep_latency_ms: Vec::new(),
            seeds: 3,
            jobs: 1,
        }
    }
}

/// One picker's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PickerRun {
    /// `rarest` or `random`.
    pub picker: &'static str,
    /// Mean completion time of honest peers (from their arrival), seconds.
    pub completion_secs_mean: f64,
    /// Slowest honest peer's completion time, seconds.
    pub completion_secs_max: f64,
    /// `lower_bound_secs / completion_secs_max`.
    pub efficiency: f64,
    /// Mean over samples of (copies of the rarest chunk / mean copies per chunk) among
    /// downloading peers, over the chunks at least one of them holds (chunks still only at
    /// the seeder are counted in `chunks_missing_from_peers`), sampled every 5 s while the
    /// swarm is 10–90 % done; 1 = every chunk equally replicated.
    pub chunk_diversity: f64,
    /// Mean over the same samples of the fraction of chunks held by no downloading peer.
    pub chunks_missing_from_peers: f64,
    /// Mean of [`DiversitySample::rarest_decile_ratio`] over the samples taken while the
    /// swarm is 10–90 % done.
    pub rarest_decile_ratio: f64,
    /// Mean of [`DiversitySample::copies_cv`] over the same samples.
    pub copies_cv: f64,
    /// Mean of [`DiversitySample::interest`] over the same samples.
    pub interest: f64,
    /// Every 5 s sample while the swarm is 1–99 % done.
    pub diversity_series: Vec<DiversitySample>,
    /// Bytes the seeders uploaded, in copies of the file.
    pub seeder_upload_copies: f64,
    /// First 5 s sample (seconds) at which every chunk was held by some downloading peer,
    /// i.e. when the seeders had pushed the whole file out once.
    pub all_chunks_at_peers_secs: Option<f64>,
    /// The initial seeding phase (Legout et al., IMC 2006, §4.2.1: until the seeders have
    /// pushed one full copy into the swarm), sampled every second.
    pub initial_seeding: InitialSeeding,
    /// Downloading peers' upload utilisation per 5 s window (bytes sent on the wire by
    /// all downloading peers / their total upload capacity), from the start to the end of
    /// the run: where peers' uplinks sit idle.
    pub peer_upload_utilisation: Vec<f64>,
    /// Why downloading peers' uplinks are busy or idle, per 5 s window (means of
    /// [`UPLINK_SNAPSHOTS`] snapshots of every core's connection flags).
    pub uplink_states: Vec<UplinkState>,
    /// Honest peers that completed.
    pub honest_peers_completed: usize,
    /// Simulator events processed.
    pub events: u64,
}

/// What a run measured. Every field but `wall_seconds` is a function of the parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Downloading peers N.
    pub peers: usize,
    /// Seeders.
    pub seeders: usize,
    /// File size, MiB.
    pub file_mib: u64,
    /// Chunk size, KiB.
    pub chunk_kib: u32,
    /// Peer upload, Mbit/s.
    pub upload_mbps: f64,
    /// Download, Mbit/s.
    pub download_mbps: f64,
    /// Seeder upload, Mbit/s.
    pub seeder_upload_mbps: f64,
    /// Arrival process.
    pub arrival: Arrival,
    /// Corrupt peers.
    pub bad_peers: usize,
    /// Seed.
    pub seed: u64,
    /// Mean completion time of honest peers (from arrival), seconds.
    pub completion_secs_mean: f64,
    /// Slowest honest peer's completion time, seconds.
    pub completion_secs_max: f64,
    /// Kumar & Ross: `max{F/u_s, F/d_min, N·F/(u_s+Σu_i)}`, seconds.
    pub lower_bound_secs: f64,
    /// `lower_bound_secs / completion_secs_max`.
    pub efficiency: f64,
    /// Client–server time `max{N·F/u_s, F/d_min}`, seconds.
    pub client_server_secs: f64,
    /// Bytes the seeders uploaded, in copies of the file.
    pub seeder_upload_copies: f64,
    /// Chunks honest peers received complete but rejected (hash mismatch).
    pub corrupt_chunks_rejected: u64,
    /// Honest peers that completed.
    pub honest_peers_completed: usize,
    /// Honest peers in the swarm (N − B).
    pub honest_peers: usize,
    /// Honest peers whose stored file has the original's BLAKE3 hash.
    pub honest_files_verified: usize,
    /// Corrupt peers banned by at least one honest peer.
    pub bad_peers_banned: usize,
    /// Honest peers banned by anyone (a corrupt chunk served onward would show here).
    pub honest_peers_banned: usize,
    /// Chunk diversity (see [`PickerRun::chunk_diversity`]).
    pub chunk_diversity: f64,
    /// Payload bytes received but discarded (duplicates, unrequested), in file copies.
    pub wasted_copies: f64,
    /// Simulator events processed.
    pub events: u64,
    /// Virtual seconds simulated.
    pub virtual_seconds: f64,
    /// Every picker run (two with `--picker both`).
    pub pickers: Vec<PickerRun>,
    /// Wall-clock seconds (the only non-deterministic figure).
    pub wall_seconds: f64,
}

/// An in-memory store that can serve corrupt blocks (the corrupt peers' store).
#[derive(Debug)]
pub struct SimStore {
    inner: MemoryStore,
    corrupt: bool,
}

impl SimStore {
    /// An honest store holding all of `data`, the file of `manifest` (a seeder's).
    pub fn full(manifest: &Manifest, data: Bytes) -> SimStore {
        SimStore {
            inner: MemoryStore::full(manifest, data),
            corrupt: false,
        }
    }

    /// The honest in-memory store underneath.
    pub fn memory(&self) -> &MemoryStore {
        &self.inner
    }
}

impl ChunkStore for SimStore {
    fn held(&self) -> &Bitfield {
        self.inner.held()
    }
    fn read_block(&mut self, chunk: u32, offset: u32, len: u32) -> Result<Bytes, StoreError> {
        let b = self.inner.read_block(chunk, offset, len)?;
        if !self.corrupt || b.is_empty() {
            return Ok(b);
        }
        let mut v = b.to_vec();
        let i = v.len() / 2;
        v[i] ^= 0x5a;
        Ok(Bytes::from(v))
    }
    fn write_chunk(&mut self, chunk: u32, blocks: &[Bytes]) -> Result<(), StoreError> {
        self.inner.write_chunk(chunk, blocks)
    }
    fn finish(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Opens [`SimStore`]s; `corrupt` marks a corrupt peer.
#[derive(Debug, Clone, Copy)]
pub struct SimFactory {
    /// Whether stores opened serve corrupt blocks.
    pub corrupt: bool,
}

impl StoreFactory for SimFactory {
    type Store = SimStore;
    fn open(&mut self, manifest: &Manifest) -> Result<SimStore, StoreError> {
        Ok(SimStore {
            inner: MemoryStore::empty(manifest),
            corrupt: self.corrupt,
        })
    }
}

/// The core every simulated node runs.
pub type Node = Swarm<SimFactory>;

fn mbps(x: f64) -> u64 {
    (x * 125_000.0).round() as u64
}

fn validate(p: &Params) -> Result<(), ExperimentError> {
    if p.peers == 0 || p.peers > MAX_PEERS {
        return invalid(format!("--peers must be in 1..={MAX_PEERS}"));
    }
    if p.seeders == 0 || p.seeders > 1000 {
        return invalid("--seeders must be in 1..=1000");
    }
    if p.file_mib == 0 || p.file_mib > MAX_FILE_MIB {
        return invalid(format!("--file-mib must be in 1..={MAX_FILE_MIB}"));
    }
    let chunk_kib = p.chunk_kib();
    if !chunk_kib.is_power_of_two() || chunk_kib > 16 * 1024 {
        return invalid("--chunk-kib must be a power of two up to 16384");
    }
    let chunks = p.file_mib * 1024 / chunk_kib as u64;
    if chunks > peerlab_swarm::MAX_CHUNKS as u64 {
        return invalid(format!(
            "{chunks} chunks exceed the manifest limit of {}; use larger chunks",
            peerlab_swarm::MAX_CHUNKS
        ));
    }
    let bw_ok = |x: f64| x.is_finite() && (0.01..=100_000.0).contains(&x);
    if !bw_ok(p.upload_mbps) || !bw_ok(p.download_mbps) || !p.seeder_upload_mbps.is_none_or(bw_ok) {
        return invalid("bandwidths must be between 0.01 and 100000 Mbit/s");
    }
    if p.bad_peers >= p.peers {
        return invalid("--bad-peers must be smaller than --peers");
    }
    if !(p.arrival_rate.is_finite() && p.arrival_rate > 0.0) {
        return invalid("--arrival-rate must be positive");
    }
    if p.pipeline_depth
        .is_some_and(|d| !(1..=MAX_PIPELINE_DEPTH).contains(&d))
    {
        return invalid(format!(
            "--pipeline-depth must be in 1..={MAX_PIPELINE_DEPTH}"
        ));
    }
    if p.neighbours == 0 {
        return invalid("--neighbours must be at least 1");
    }
    Ok(())
}

/// Runs the experiment.
pub fn run(p: &Params) -> Result<Report, ExperimentError> {
    validate(p)?;
    #[allow(clippy::disallowed_methods)] // wall time is reported, never fed to a core
    let wall = WallInstant::now();
    let mut rng = Rng::seed(p.seed);
    let size = (p.file_mib * 1024 * 1024) as usize;
    let mut buf = vec![0u8; size];
    rng.fill(&mut buf);
    let data = Bytes::from(buf);
    let manifest = Manifest::from_bytes("file.bin", &data, p.chunk_kib() * 1024)
        .map_err(|e| ExperimentError::InvalidArgument(e.to_string()))?;
    let original = blake3::hash(&data);

    let strategies: &[Strategy] = match p.picker {
        PickerArg::Rarest => &[Strategy::RarestFirst],
        PickerArg::Random => &[Strategy::Random],
        PickerArg::Both => &[Strategy::RarestFirst, Strategy::Random],
    };
    let mut runs = Vec::new();
    for &s in strategies {
        runs.push(run_one(p, &manifest, &data, original, s)?);
    }
    let first = runs.remove(0);
    let mut pickers = vec![first.summary.clone()];
    pickers.extend(runs.iter().map(|r| r.summary.clone()));
    let mut report = first.report;
    report.pickers = pickers;
    report.events = report.pickers.iter().map(|r| r.events).sum();
    report.wall_seconds = wall.elapsed().as_secs_f64();
    Ok(report)
}

struct OneRun {
    report: Report,
    summary: PickerRun,
}

fn bounds(p: &Params) -> (f64, f64, f64, f64) {
    let f = (p.file_mib * 1024 * 1024) as f64;
    let u = mbps(p.upload_mbps) as f64;
    let d = mbps(p.download_mbps) as f64;
    let us = mbps(p.seeder_upload_mbps.unwrap_or(p.upload_mbps)) as f64 * p.seeders as f64;
    let n = p.peers as f64;
    let lower = (f / us).max(f / d).max(n * f / (us + n * u));
    let client_server = (n * f / us).max(f / d);
    (f, lower, client_server, us)
}

/// One simulated peer's core.
fn core(config: Config, corrupt: bool) -> Result<Node, ExperimentError> {
    Swarm::new(config, SimFactory { corrupt })
        .map_err(|e| ExperimentError::InvalidArgument(e.to_string()))
}

fn run_one(
    p: &Params,
    manifest: &Manifest,
    data: &Bytes,
    original: blake3::Hash,
    strategy: Strategy,
) -> Result<OneRun, ExperimentError> {
    let (f, lower, client_server, _) = bounds(p);
    let up = mbps(p.upload_mbps);
    let down = mbps(p.download_mbps);
    let seed_up = mbps(p.seeder_upload_mbps.unwrap_or(p.upload_mbps));
    let mut sim: Sim<Node> = Sim::new(SimConfig {
        seed: p.seed,
        latency: Latency::Fixed(Duration::from_millis(p.latency_ms)),
        upload_bps: Some(up),
        download_bps: Some(down),
        ..Default::default()
    });
    let mut config = Config::default();
    config.picker.strategy = strategy;
    config.super_seed = !p.no_super_seed;
    let fixed_depth = p
        .pipeline_depth
        .or(p.fixed_rules.then_some(if p.fifo_upload {
            FIFO_PIPELINE_DEPTH
        } else {
            PACED_PIPELINE_DEPTH
        }));
    if let Some(d) = fixed_depth {
        config.pipeline_depth = d;
        config.min_pipeline_depth = d;
    }
    if let Some(n) = p.max_slots {
        config.choker.max_slots = n;
    }
    if let Some(ms) = p.min_round_ms {
        config.choker.min_interval = Duration::from_millis(ms);
    }
    if let Some(n) = p.round_chunks {
        config.choker.round_chunks = n;
    }
    if let Some(n) = p.queue_rtts {
        config.request_queue_rtts = n;
    }
    if p.fixed_rules {
        let c = &mut config.choker;
        c.max_slots = c.slots;
        c.min_interval = c.interval;
    }
    config.release_idle_interest = !(p.lack_interest || p.fixed_rules);
    if p.oldest_first || p.fixed_rules {
        config.scarce_holders = None;
    }
    // Progress events are not needed here; completion events are.
    config.progress_every = 0;
    let cid = manifest.content_id();

    let seeders: Vec<PeerId> = (0..p.seeders as u64).map(PeerId::synthetic).collect();
    for &s in &seeders {
        let mut cfg = config.clone();
        cfg.upload_rate = (!p.fifo_upload).then_some(seed_up);
        sim.add_node(s, core(cfg, false)?);
        sim.set_bandwidth(s, Some(seed_up), Some(down));
        let store = SimStore::full(manifest, data.clone());
        sim.command(
            s,
            Command::Share {
                req: 0,
                manifest: manifest.clone(),
                store,
            },
        );
    }
    let leechers: Vec<PeerId> = (0..p.peers as u64)
        .map(|i| PeerId::synthetic(1_000_000 + i))
        .collect();
    let bad_idx = sim.rng().sample_indices(p.peers, p.bad_peers);
    let mut is_bad = vec![false; p.peers];
    for i in bad_idx {
        is_bad[i] = true;
    }
    // Arrival times.
    let mut arrivals = Vec::with_capacity(p.peers);
    let mut t = 0.0f64;
    for _ in 0..p.peers {
        let at = match p.arrival {
            Arrival::Flash => sim.rng().unit_f64(),
            Arrival::Poisson => {
                t += sim.rng().exp(1.0 / p.arrival_rate);
                t
            }
        };
        arrivals.push(Instant((at * 1e6) as u64));
    }
    let mut order: Vec<usize> = (0..p.peers).collect();
    order.sort_by_key(|&i| (arrivals[i], i));
    // Each newcomer's tracker list: random peers already present (flash: anyone).
    let mut present: Vec<PeerId> = seeders.clone();
    for (k, &i) in order.iter().enumerate() {
        let me = leechers[i];
        let pool: Vec<PeerId> = match p.arrival {
            Arrival::Flash => seeders
                .iter()
                .chain(leechers.iter())
                .copied()
                .filter(|q| *q != me)
                .collect(),
            Arrival::Poisson => present.clone(),
        };
        let picks = sim
            .rng()
            .sample_indices(pool.len(), p.neighbours.min(pool.len()));
        let mut providers: Vec<PeerId> = picks.into_iter().map(|j| pool[j]).collect();
        // Like a tracker that always lists at least one seeder for the first arrivals.
        if k == 0 && !providers.contains(&seeders[0]) {
            providers.push(seeders[0]);
        }
        present.push(me);
        let corrupt = is_bad[i];
        let mut cfg = config.clone();
        cfg.upload_rate = (!p.fifo_upload).then_some(up);
        let node = core(cfg, corrupt)?;
        sim.schedule(arrivals[i], move |sim| {
            sim.add_node(me, node);
            sim.command(
                me,
                Command::Fetch {
                    req: 0,
                    cid,
                    providers,
                },
            );
        });
    }

    let honest: Vec<usize> = (0..p.peers).filter(|&i| !is_bad[i]).collect();
    let index_of: std::collections::BTreeMap<PeerId, usize> =
        leechers.iter().enumerate().map(|(i, q)| (*q, i)).collect();
    let mut completed_at: Vec<Option<Instant>> = vec![None; p.peers];
    let mut honest_done = 0usize;
    let mut banned_by_honest: std::collections::BTreeSet<PeerId> = Default::default();
    let deadline = Instant(
        (p.max_secs.map_or(lower * 20.0 + 600.0, |s| s as f64) * 1e6) as u64
            + arrivals.iter().map(|a| a.0).max().unwrap_or(0),
    );
    let mut diversity = Vec::new();
    let mut missing = Vec::new();
    let mut decile = Vec::new();
    let mut cvs = Vec::new();
    let mut interests = Vec::new();
    let mut series = Vec::new();
    // The metric's own random stream: sampling never perturbs the simulation.
    let mut pair_rng = Rng::seed(p.seed ^ 0x6469_7665_7273_6974);
    let mut all_at_peers: Option<f64> = None;
    let mut initial = InitialSeeding::default();
    let (mut only_sum, mut interest_sum, mut phase_samples) = (0.0f64, 0.0f64, 0u32);
    let mut utilisation = Vec::new();
    let mut uplinks = Vec::new();
    let mut last_sent = 0u64;
    let chunks = manifest.chunk_count();
    while honest_done < honest.len() && sim.now() < deadline {
        let next = sim.now() + SAMPLE_EVERY;
        let mut window = UplinkWindow::default();
        for k in 1..=UPLINK_SNAPSHOTS {
            sim.run_until(sim.now() + SAMPLE_EVERY / UPLINK_SNAPSHOTS);
            if k == UPLINK_SNAPSHOTS {
                sim.run_until(next);
            }
            uplink_snapshot(&sim, &cid, &leechers, &mut window);
            if initial.first_copy_secs.is_none() {
                let (copies, interest) = chunk_copies(&sim, &cid, &leechers, chunks);
                let only = copies.iter().filter(|&&c| c == 0).count() as f64 / chunks.max(1) as f64;
                let rarest = copies.iter().copied().min().unwrap_or(0);
                only_sum += only;
                interest_sum += interest;
                phase_samples += 1;
                // Every 5 s, and once more when the phase ends (it can end inside the
                // first interval).
                if k == UPLINK_SNAPSHOTS || only == 0.0 {
                    initial
                        .series
                        .push([sim.now().as_secs_f64(), only, rarest as f64, interest]);
                }
                if only == 0.0 {
                    let secs = sim.now().as_secs_f64();
                    let up: u64 = seeders
                        .iter()
                        .filter_map(|s| sim.node(s)?.stats(&cid))
                        .map(|s| s.uploaded)
                        .sum();
                    initial.first_copy_secs = Some(secs);
                    initial.seeder_copies_at_first_copy = Some(up as f64 / f);
                    initial.seeder_capacity_copies_at_first_copy =
                        Some(seed_up as f64 * p.seeders as f64 * secs / f);
                }
            }
        }
        uplinks.push(window.finish(sim.now()));
        for (at, who, ev) in sim.take_events() {
            match ev {
                Event::Completed { cid: c, .. } if c == cid => {
                    if let Some(&i) = index_of.get(&who)
                        && completed_at[i].is_none()
                    {
                        completed_at[i] = Some(at);
                        if !is_bad[i] {
                            honest_done += 1;
                        }
                    }
                }
                Event::PeerBanned { peer, .. } => {
                    let banner_honest = index_of.get(&who).is_none_or(|&i| !is_bad[i]);
                    if banner_honest {
                        banned_by_honest.insert(peer);
                    }
                }
                _ => {}
            }
        }
        let sent: u64 = leechers
            .iter()
            .filter_map(|q| sim.node_stats(q))
            .map(|s| s.sent_bytes)
            .sum();
        let capacity = up as f64 * p.peers as f64 * SAMPLE_EVERY.as_secs_f64();
        utilisation.push((sent - last_sent) as f64 / capacity);
        last_sent = sent;
        // Chunk diversity among downloading peers present.
        let mut copies = vec![0u32; chunks as usize];
        let mut held_total = 0u64;
        let mut present_n = 0u64;
        let mut fields: Vec<&Bitfield> = Vec::new();
        for q in &leechers {
            if let Some(h) = sim.node(q).and_then(|n| n.have(&cid)) {
                present_n += 1;
                fields.push(h);
                for c in h.ones() {
                    copies[c as usize] += 1;
                    held_total += 1;
                }
            }
        }
        if present_n > 1 && chunks > 0 {
            let done = held_total as f64 / (present_n as f64 * chunks as f64);
            if (0.01..=0.99).contains(&done) {
                let s = diversity_sample(sim.now(), done, &copies, &fields, &mut pair_rng);
                if (0.1..=0.9).contains(&done) {
                    decile.push(s.rarest_decile_ratio);
                    cvs.push(s.copies_cv);
                    interests.push(s.interest);
                }
                series.push(s);
            }
        }
        if all_at_peers.is_none() && copies.iter().all(|&c| c > 0) {
            all_at_peers = Some(sim.now().0 as f64 / 1e6);
        }
        if present_n > 0 && chunks > 0 {
            let done = held_total as f64 / (present_n as f64 * chunks as f64);
            let present_chunks = copies.iter().filter(|&&c| c > 0).count();
            if (0.1..=0.9).contains(&done) && present_chunks > 0 {
                let mean = held_total as f64 / present_chunks as f64;
                let min = copies.iter().copied().filter(|&c| c > 0).min().unwrap_or(0) as f64;
                diversity.push(min / mean);
                missing.push(copies.iter().filter(|&&c| c == 0).count() as f64 / chunks as f64);
            }
        }
    }

    let times: Vec<f64> = honest
        .iter()
        .filter_map(|&i| completed_at[i].map(|c| c.saturating_since(arrivals[i]).as_secs_f64()))
        .collect();
    let mean = if times.is_empty() {
        f64::NAN
    } else {
        times.iter().sum::<f64>() / times.len() as f64
    };
    let max = if honest_done == honest.len() {
        times.iter().copied().fold(0.0, f64::max)
    } else {
        f64::INFINITY
    };
    let seeder_up: u64 = seeders
        .iter()
        .filter_map(|s| sim.node(s)?.stats(&cid))
        .map(|s| s.uploaded)
        .sum();
    let mut corrupt = 0u64;
    let mut verified = 0usize;
    let mut wasted = 0u64;
    for &i in &honest {
        if let Some(n) = sim.node(&leechers[i]) {
            if let Some(s) = n.stats(&cid) {
                corrupt += s.corrupt_chunks as u64;
                wasted += s.wasted;
            }
            if n.store(&cid).and_then(|s| s.memory().file_hash()) == Some(original) {
                verified += 1;
            }
        }
    }
    let bad_banned = banned_by_honest
        .iter()
        .filter(|q| index_of.get(q).is_some_and(|&i| is_bad[i]))
        .count();
    let honest_banned = banned_by_honest.len() - bad_banned;
    let avg = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let efficiency = if max.is_finite() && max > 0.0 {
        lower / max
    } else {
        0.0
    };
    let picker = match strategy {
        Strategy::RarestFirst => "rarest",
        Strategy::Random => "random",
    };
    let summary = PickerRun {
        picker,
        completion_secs_mean: mean,
        completion_secs_max: max,
        efficiency,
        chunk_diversity: avg(&diversity),
        chunks_missing_from_peers: avg(&missing),
        rarest_decile_ratio: avg(&decile),
        copies_cv: avg(&cvs),
        interest: avg(&interests),
        diversity_series: series,
        seeder_upload_copies: seeder_up as f64 / f,
        all_chunks_at_peers_secs: all_at_peers,
        initial_seeding: InitialSeeding {
            seeder_only_mean: only_sum / phase_samples.max(1) as f64,
            interest_mean: interest_sum / phase_samples.max(1) as f64,
            ..initial
        },
        peer_upload_utilisation: utilisation,
        uplink_states: uplinks,
        honest_peers_completed: honest_done,
        events: sim.events_processed(),
    };
    let report = Report {
        peers: p.peers,
        seeders: p.seeders,
        file_mib: p.file_mib,
        chunk_kib: p.chunk_kib(),
        upload_mbps: p.upload_mbps,
        download_mbps: p.download_mbps,
        seeder_upload_mbps: p.seeder_upload_mbps.unwrap_or(p.upload_mbps),
        arrival: p.arrival,
        bad_peers: p.bad_peers,
        seed: p.seed,
        completion_secs_mean: mean,
        completion_secs_max: max,
        lower_bound_secs: lower,
        efficiency,
        client_server_secs: client_server,
        seeder_upload_copies: seeder_up as f64 / f,
        corrupt_chunks_rejected: corrupt,
        honest_peers_completed: honest_done,
        honest_peers: honest.len(),
        honest_files_verified: verified,
        bad_peers_banned: bad_banned,
        honest_peers_banned: honest_banned,
        chunk_diversity: avg(&diversity),
        wasted_copies: wasted as f64 / f,
        events: sim.events_processed(),
        virtual_seconds: sim.now().as_secs_f64(),
        pickers: Vec::new(),
        wall_seconds: 0.0,
    };
    Ok(OneRun { report, summary })
}

/// One [`DiversitySample`] from the copies per chunk and the peers' bitfields.
fn diversity_sample(
    now: Instant,
    done: f64,
    copies: &[u32],
    fields: &[&Bitfield],
    rng: &mut Rng,
) -> DiversitySample {
    let n = copies.len().max(1) as f64;
    let mean = copies.iter().map(|&c| c as f64).sum::<f64>() / n;
    let var = copies
        .iter()
        .map(|&c| (c as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let mut sorted = copies.to_vec();
    sorted.sort_unstable();
    let k = sorted.len().div_ceil(10).max(1);
    let decile_mean = sorted.iter().take(k).map(|&c| c as f64).sum::<f64>() / k as f64;
    let ratio = |x: f64| if mean > 0.0 { x / mean } else { 0.0 };
    let mut interested = 0usize;
    for _ in 0..INTEREST_PAIRS {
        let x = rng.index(fields.len());
        let mut y = rng.index(fields.len() - 1);
        if y >= x {
            y += 1;
        }
        if fields[y].has_any_missing_from(fields[x]) {
            interested += 1;
        }
    }
    DiversitySample {
        secs: now.as_secs_f64(),
        done,
        min_copies: sorted.first().copied().unwrap_or(0),
        mean_copies: mean,
        rarest_decile_ratio: ratio(decile_mean),
        copies_cv: ratio(var.sqrt()),
        interest: interested as f64 / INTEREST_PAIRS as f64,
    }
}

impl Report {
    /// A short human-readable table.
    pub fn render_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "swarm: N={} S={} file={} MiB chunk={} KiB up={} Mbit/s (seeder {}) down={} Mbit/s arrival={:?} bad={} seed={}",
            self.peers,
            self.seeders,
            self.file_mib,
            self.chunk_kib,
            self.upload_mbps,
            self.seeder_upload_mbps,
            self.download_mbps,
            self.arrival,
            self.bad_peers,
            self.seed
        );
        let rows = [
            (
                "completion mean / max (s)",
                format!(
                    "{:.1} / {:.1}",
                    self.completion_secs_mean, self.completion_secs_max
                ),
            ),
            (
                "Kumar-Ross lower bound (s)",
                format!("{:.1}", self.lower_bound_secs),
            ),
            ("efficiency", format!("{:.3}", self.efficiency)),
            (
                "client-server time (s)",
                format!("{:.1}", self.client_server_secs),
            ),
            (
                "seeder upload (copies)",
                format!("{:.2}", self.seeder_upload_copies),
            ),
            (
                "wasted download (copies)",
                format!("{:.3}", self.wasted_copies),
            ),
            (
                "honest completed / verified / total",
                format!(
                    "{} / {} / {}",
                    self.honest_peers_completed, self.honest_files_verified, self.honest_peers
                ),
            ),
            (
                "corrupt chunks rejected",
                self.corrupt_chunks_rejected.to_string(),
            ),
            (
                "bad peers banned / honest banned",
                format!("{} / {}", self.bad_peers_banned, self.honest_peers_banned),
            ),
            (
                "chunk diversity (min/mean copies)",
                format!("{:.3}", self.chunk_diversity),
            ),
            (
                "events / virtual s / wall s",
                format!(
                    "{} / {:.0} / {:.1}",
                    self.events, self.virtual_seconds, self.wall_seconds
                ),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<36} {v}");
        }
        if self.pickers.len() > 1 {
            let _ = writeln!(
                s,
                "  picker   mean(s)   max(s)  efficiency  diversity  missing  rarest-10%  cv     interest  seeder-copies"
            );
            for r in &self.pickers {
                let _ = writeln!(
                    s,
                    "  {:<7} {:>8.1} {:>8.1} {:>11.3} {:>10.3} {:>8.3} {:>11.3} {:>6.3} {:>9.3} {:>14.2}",
                    r.picker,
                    r.completion_secs_mean,
                    r.completion_secs_max,
                    r.efficiency,
                    r.chunk_diversity,
                    r.chunks_missing_from_peers,
                    r.rarest_decile_ratio,
                    r.copies_cv,
                    r.interest,
                    r.seeder_upload_copies
                );
            }
        }
        let _ = writeln!(
            s,
            "  initial seeding: picker  first-copy(s)  seeder-copies-then  seeder-only(mean)  interest(mean)"
        );
        for r in &self.pickers {
            let i = &r.initial_seeding;
            let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2}"));
            let _ = writeln!(
                s,
                "                   {:<7} {:>13} {:>19} {:>18.3} {:>15.3}",
                r.picker,
                opt(i.first_copy_secs),
                opt(i.seeder_copies_at_first_copy),
                i.seeder_only_mean,
                i.interest_mean
            );
        }
        s
    }
}
