//! The swarm core's parameters and their bounds.

use std::time::Duration;

use peerlab_overlay::ConfigError;

use crate::{choker, picker};

/// Swarm parameters. Defaults follow BEP 3 and libtorrent where they have one.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most outstanding block requests per peer: the cap of the adaptive request queue
    /// (see the `estimate` module; libtorrent's `max_out_request_queue`). Default 128: 2 MiB
    /// in flight, twice the bandwidth-delay product of 80 Mbit/s over a 100 ms round trip,
    /// while bounding the per-peer request list every received block is looked up in. At
    /// most [`MAX_PIPELINE_DEPTH`].
    pub pipeline_depth: usize,
    /// Fewest outstanding block requests per peer, and the depth used before a peer's rate
    /// and round trip are measured: the floor of the adaptive queue. Default 12 (192 KiB,
    /// three quarters of a 256 KiB chunk): a paced uploader serves one chunk per turn, back
    /// to back, and a queue this deep keeps the turn fed while the refills of its first
    /// blocks travel (in `peerlab sim swarm` floors of 8 and 24 lost 1–5 % efficiency
    /// against 12 at 8 Mbit/s and 50 ms, where rate × round trip is under 8 blocks). At
    /// least 1. Equal to [`Config::pipeline_depth`], the queue is fixed at that depth.
    pub min_pipeline_depth: usize,
    /// The request queue holds this many round trips' worth of the peer's delivery rate
    /// (libtorrent's `request_queue_time`, in round trips rather than seconds so the queue
    /// is bandwidth × delay at any link): depth = ⌈rtts × rate × min round trip / block⌉,
    /// clamped to [`Config::min_pipeline_depth`]..=[`Config::pipeline_depth`].
    /// Default 1: the link stays busy while the refills travel, and a queue limited by its
    /// own depth still grows each window (by the blocks that arrived within it) until the
    /// link limits it. A paced uploader serves one chunk per turn, so a deeper queue only
    /// leaves requests waiting at one uploader that another could serve: in `peerlab sim
    /// swarm` 2 round trips cost 1–3 % efficiency at 8 Mbit/s, 50 ms. In 1..=16.
    pub request_queue_rtts: u32,
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
    /// Without [`Config::defenses`]: corrupt chunks attributed to a peer before it is
    /// banned. Default 2. With them, one chunk proven corrupt bans its sender at once.
    pub ban_after_corrupt: u32,
    /// Protocol violations tolerated before a peer is banned. Default 3.
    pub max_penalties: u32,
    /// Most failed-chunk records kept for smart banning per transfer. Default 16 (each
    /// holds one chunk's blocks).
    pub max_failed_records: usize,
    /// How often a provider re-announces a content id in the DHT. Default 15 min.
    pub announce_interval: Duration,
    /// Lifetime of a provider record in the DHT. Default 1 h (four announce intervals,
    /// so a record survives a few missed re-announcements). At least
    /// [`Config::announce_interval`].
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
    /// [`Command::Share`](crate::Command::Share) advertises an empty bitfield and reveals
    /// chunks to each peer a few at a time with `Have`, always the chunk least available
    /// and least revealed, and reveals more to a peer only when it announces one it was
    /// shown. While some chunk has never been sent, a request for a chunk already sent to
    /// another peer is refused (`Reject`) and a fresh chunk revealed instead. Each chunk
    /// leaves the seeder once before any leaves twice, so the seeder's upload is not spent
    /// on duplicates. Ends when every chunk is held by a neighbour; the seeder then sends
    /// its full bitfield. Default true.
    pub super_seed: bool,
    /// Chunks revealed to one peer at a time while super-seeding, at least. Default 2. The
    /// seeder reveals more when the downloader's request queue spans more chunks: with
    /// [`Config::upload_rate`] measured from the requests it keeps waiting at us, without
    /// it taken to be our own cap [`Config::pipeline_depth`] (see the `super_seed` module).
    pub super_seed_reveals: usize,
    /// Emit [`Event::Progress`](crate::Event::Progress) every this many verified chunks
    /// (0: never). Default 16.
    pub progress_every: u32,
    /// Interest means "something to request now" (default true; false is BEP 3's "the
    /// peer has a chunk we lack"). A peer that unchokes us but has only chunks whose
    /// blocks are all requested from others gets `NotInterested` at once, so it hands the
    /// unchoke slot to a waiting peer (its `NotInterested` handler) instead of leaving it
    /// idle until its next choke round; we declare interest again when it announces a
    /// chunk we can ask for, when one of our requests elsewhere is dropped, or at the next
    /// tick. Interest is likewise declared only for peers with a block we could request.
    /// In the simulated flash crowd (`docs/experiments/swarm.md`) with 256 KiB chunks
    /// this moved the finish by about seed noise; with the smaller chunks of smaller files
    /// ([`auto_chunk_size`](crate::auto_chunk_size)), where a neighbour holding only
    /// chunks we already fetch is common early on, it gains 0.015–0.05 of the bound.
    pub release_idle_interest: bool,
    /// The uplink's rate in bytes per second, if the core is told it (a configured upload
    /// limit, or the simulator's link). `None` (default): each requested block is handed to
    /// the driver as soon as its request arrives, so the driver's FIFO send queue decides
    /// the order and a chunk leaves interleaved with every other unchoked peer's blocks.
    /// `Some(rate)`: requests wait in the core (at most [`MAX_QUEUED_REQUESTS`] per peer)
    /// and a block is handed over only while the driver's queue — estimated from the length
    /// of every frame the core sent, at this rate — holds less than
    /// [`Config::upload_horizon`]. The core then serves unchoked peers one chunk at a time
    /// (see [`Swarm`](crate::Swarm)'s upload scheduling): a 256 KiB chunk reaches its
    /// downloader in 0.26 s at 8 Mbit/s instead of ~1.3 s interleaved with four others, so
    /// in a flash crowd new chunks spread in shorter hops (Mundinger–Weber's optimal
    /// schedule sends whole chunks one after another). Queued requests of a peer we choke
    /// are answered with `Reject`, and a `Cancel` withdraws a queued request. Non-zero.
    pub upload_rate: Option<u64>,
    /// With [`Config::upload_rate`]: how much data, in time at that rate, the driver's send
    /// queue may hold before the core keeps further blocks back. Default 30 ms (about two
    /// 16 KiB blocks at 8 Mbit/s): enough that the uplink never idles between two releases,
    /// short enough that the core, not the driver's FIFO, decides the order.
    pub upload_horizon: Duration,
    /// With [`Config::upload_rate`]: a turn on our uplink goes first to a queued request for
    /// a chunk that at most this many of our connected peers hold (the fewest first), and
    /// only then to the oldest request. Default `Some(4)`; `None`: oldest first. The chunks
    /// released last in a flash crowd sit at one or two peers, and every hop they wait
    /// behind a round trip of older requests for chunks that many neighbours could serve;
    /// serving them first shortens each hop. In `peerlab sim swarm` (seeds 1–3) it gained
    /// 0.010–0.026 of the bound at N = 100 and 0.032 at N = 300 (8 / 32 Mbit/s, 50 ms), with
    /// 3 to 6 holders alike; with no threshold (every request by its chunk's holders) it fell
    /// below oldest first (0.804 against 0.830 at N = 100, 8 / 32 Mbit/s, 50 ms).
    pub scarce_holders: Option<u32>,
    /// The rules that keep hostile peers from hurting a transfer (default true; see the
    /// `slots` module and the crate docs): a block is accepted only from a peer it is
    /// outstanding at, a chunk that fails verification with blocks from several peers is
    /// fetched again whole from one (parole) and the peer proven to have lied is banned at
    /// once, a peer that leaves our requests unanswered is evicted, newcomers hold a bounded
    /// share of the slots, and every rejected input is reported as an
    /// [`Offence`](peerlab_overlay::Offence). False: the behaviour without them, for
    /// `peerlab sim attack --no-defenses` to show what they buy.
    pub defenses: bool,
}

/// Most block requests one peer may have waiting in our upload queue when
/// [`Config::upload_rate`] is set; further requests are answered with `Reject`. Our own
/// downloaders keep at most [`Config::pipeline_depth`] (128) in flight; libtorrent allows
/// 500. 256 bounds the queue at 4 MiB of requested data per peer.
pub const MAX_QUEUED_REQUESTS: usize = 256;

/// Largest [`Config::request_queue_rtts`]: a queue of 16 round trips of data already
/// locks blocks at one peer for seconds on any link.
pub const MAX_REQUEST_QUEUE_RTTS: u32 = 16;

/// First retry of an announcement the DHT could not store (see
/// [`Command::Announced`](crate::Command::Announced)): long enough for a node that is still
/// joining the ring to get in, short against the 15 minutes between periodic announcements.
pub const ANNOUNCE_RETRY: Duration = Duration::from_secs(2);

/// Doublings of [`ANNOUNCE_RETRY`] after failures in a row: 2 s up to 1024 s, capped by
/// [`Config::announce_interval`] anyway.
pub const MAX_ANNOUNCE_DOUBLINGS: u32 = 9;

/// Largest [`Config::pipeline_depth`]: 1024 blocks of 16 KiB are 16 MiB in flight per peer,
/// far beyond what any link's bandwidth-delay product needs, and it bounds the per-peer
/// request list every received block is looked up in.
pub const MAX_PIPELINE_DEPTH: usize = 1024;

impl Default for Config {
    fn default() -> Self {
        Config {
            pipeline_depth: 128,
            min_pipeline_depth: 12,
            request_queue_rtts: 1,
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
            release_idle_interest: true,
            upload_rate: None,
            upload_horizon: Duration::from_millis(30),
            scarce_holders: Some(4),
            defenses: true,
        }
    }
}

impl Config {
    /// Checks every field against its documented bound. [`Swarm::new`](crate::Swarm::new)
    /// calls it, so a core never runs with a configuration it cannot honour.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.pipeline_depth == 0 || self.pipeline_depth > MAX_PIPELINE_DEPTH {
            return ConfigError::err(
                "pipeline_depth",
                format!("must be in 1..={MAX_PIPELINE_DEPTH}"),
            );
        }
        if self.min_pipeline_depth == 0 || self.min_pipeline_depth > self.pipeline_depth {
            return ConfigError::err("min_pipeline_depth", "must be in 1..=pipeline_depth");
        }
        if self.request_queue_rtts == 0 || self.request_queue_rtts > MAX_REQUEST_QUEUE_RTTS {
            return ConfigError::err(
                "request_queue_rtts",
                format!("must be in 1..={MAX_REQUEST_QUEUE_RTTS}"),
            );
        }
        if self.picker.endgame_copies == 0 {
            return ConfigError::err("picker.endgame_copies", "must be at least 1");
        }
        if self.choker.slots == 0 {
            return ConfigError::err("choker.slots", "must be at least 1");
        }
        if self.choker.max_slots < self.choker.slots {
            return ConfigError::err("choker.max_slots", "must be at least choker.slots");
        }
        if self.choker.interval.is_zero() {
            return ConfigError::err("choker.interval", "must be non-zero");
        }
        if self.choker.min_interval.is_zero() || self.choker.min_interval > self.choker.interval {
            return ConfigError::err("choker.min_interval", "must be in (0, choker.interval]");
        }
        if self.choker.round_chunks == 0 {
            return ConfigError::err("choker.round_chunks", "must be at least 1");
        }
        if self.choker.optimistic_interval.is_zero() {
            return ConfigError::err("choker.optimistic_interval", "must be non-zero");
        }
        for (field, n) in [
            ("max_peers", self.max_peers),
            ("max_candidates", self.max_candidates),
            ("max_transfers", self.max_transfers),
            ("manifest_fanout", self.manifest_fanout),
        ] {
            if n == 0 {
                return ConfigError::err(field, "must be at least 1");
            }
        }
        if self.ban_after_corrupt == 0 {
            return ConfigError::err("ban_after_corrupt", "must be at least 1");
        }
        if self.max_penalties == 0 {
            return ConfigError::err("max_penalties", "must be at least 1");
        }
        for (field, d) in [
            ("request_timeout", self.request_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("manifest_timeout", self.manifest_timeout),
            ("announce_interval", self.announce_interval),
            ("lookup_interval", self.lookup_interval),
            ("tick", self.tick),
        ] {
            if d.is_zero() {
                return ConfigError::err(field, "must be non-zero");
            }
        }
        if self.provider_ttl < self.announce_interval {
            return ConfigError::err(
                "provider_ttl",
                "must be at least announce_interval (records would lapse between announcements)",
            );
        }
        if self.super_seed && self.super_seed_reveals == 0 {
            return ConfigError::err("super_seed_reveals", "must be at least 1");
        }
        if self.upload_rate == Some(0) {
            return ConfigError::err("upload_rate", "must be non-zero");
        }
        if self.upload_rate.is_some() && self.upload_horizon.is_zero() {
            return ConfigError::err("upload_horizon", "must be non-zero with an upload_rate");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_bound_is_enforced() {
        assert_eq!(Config::default().validate(), Ok(()));
        type Spoil = fn(&mut Config);
        let bad: [(&str, Spoil); 15] = [
            ("pipeline_depth", |c| c.pipeline_depth = 0),
            ("min_pipeline_depth", |c| c.min_pipeline_depth = 0),
            ("min_pipeline_depth", |c| {
                c.min_pipeline_depth = c.pipeline_depth + 1
            }),
            ("request_queue_rtts", |c| c.request_queue_rtts = 0),
            ("request_queue_rtts", |c| {
                c.request_queue_rtts = MAX_REQUEST_QUEUE_RTTS + 1
            }),
            ("choker.max_slots", |c| {
                c.choker.max_slots = c.choker.slots - 1
            }),
            ("choker.min_interval", |c| {
                c.choker.min_interval = c.choker.interval * 2
            }),
            ("choker.round_chunks", |c| c.choker.round_chunks = 0),
            ("pipeline_depth", |c| {
                c.pipeline_depth = MAX_PIPELINE_DEPTH + 1
            }),
            ("max_peers", |c| c.max_peers = 0),
            ("tick", |c| c.tick = Duration::ZERO),
            ("provider_ttl", |c| c.provider_ttl = c.announce_interval / 2),
            ("upload_rate", |c| c.upload_rate = Some(0)),
            ("picker.endgame_copies", |c| c.picker.endgame_copies = 0),
            ("choker.slots", |c| c.choker.slots = 0),
        ];
        for (field, spoil) in bad {
            let mut c = Config::default();
            spoil(&mut c);
            assert_eq!(c.validate().map_err(|e| e.field), Err(field));
        }
    }
}
