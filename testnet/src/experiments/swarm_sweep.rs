//! `peerlab sim swarm --sweep`: the swarm experiment over a grid of settings, so a figure
//! measured at one setting can be checked at others.
//!
//! The grid crosses swarm size N ∈ {100, 300, 1000}, file size ∈ {32, 100, 256} MiB, peer
//! links (upload / download) ∈ {2 / 8, 8 / 32, 20 / 100} Mbit/s and one-way latency ∈
//! {20, 50, 150} ms; every other flag of `sim swarm` (seeders, chunk size, arrival, picker,
//! …) applies to every point. Each point runs `--seeds K` seeds (`--seed`, `--seed` + 1, …)
//! and reports Kumar & Ross's efficiency as min / median / mean over them.
//!
//! A run's cost grows with N × file size (every block is one simulated message), so the
//! default grid keeps every link speed and latency but only the (N, file) pairs with
//! N × file ≤ [`PRUNE_PEER_MIB`]: all files at N = 100, 32 and 100 MiB at N = 300, 32 MiB at
//! N = 1000.
//! `--sweep-full` runs all 81 points.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::ExperimentError;
use super::swarm::{Params, run};

/// Swarm sizes of the grid.
pub const SWEEP_PEERS: [usize; 3] = [100, 300, 1000];
/// File sizes of the grid, MiB.
pub const SWEEP_FILE_MIB: [u64; 3] = [32, 100, 256];
/// Peer links of the grid, (upload, download) in Mbit/s.
pub const SWEEP_LINKS: [(f64, f64); 3] = [(2.0, 8.0), (8.0, 32.0), (20.0, 100.0)];
/// One-way latencies of the grid, ms.
pub const SWEEP_LATENCY_MS: [u64; 3] = [20, 50, 150];
/// The default grid keeps the (N, file) pairs with N × file MiB at most this. A run costs
/// about 3 ms of CPU per MiB × peer on a loaded 2-core machine (N = 100 at 32 MiB: 10 s),
/// so the default grid is ~2.5 h of CPU for 3 seeds, and the pairs it leaves out (N = 300
/// at 256 MiB, N = 1000 at 100 and 256 MiB) would add ~11 h.
pub const PRUNE_PEER_MIB: u64 = 32_000;
/// Most seeds per point (each point's cost is multiplied by it).
pub const MAX_SEEDS: u64 = 100;
/// Most worker threads.
pub const MAX_JOBS: usize = 64;

/// One grid point's figures over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    /// Downloading peers N.
    pub peers: usize,
    /// File size, MiB.
    pub file_mib: u64,
    /// Peer upload, Mbit/s.
    pub upload_mbps: f64,
    /// Peer download, Mbit/s.
    pub download_mbps: f64,
    /// One-way latency, ms.
    pub latency_ms: u64,
    /// Kumar & Ross's lower bound, seconds.
    pub lower_bound_secs: f64,
    /// Efficiency per seed, in seed order.
    pub efficiency: Vec<f64>,
    /// Smallest efficiency over the seeds.
    pub efficiency_min: f64,
    /// Median efficiency over the seeds.
    pub efficiency_median: f64,
    /// Mean efficiency over the seeds.
    pub efficiency_mean: f64,
    /// Mean over seeds of the slowest honest peer's completion time, seconds.
    pub completion_secs_max_mean: f64,
    /// Mean over seeds of the seeders' upload, in file copies.
    pub seeder_upload_copies_mean: f64,
    /// Wall-clock seconds of the point's runs (not a function of the seed).
    pub wall_seconds: f64,
}

/// What a sweep measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepReport {
    /// The seeds every point ran.
    pub seeds: Vec<u64>,
    /// Whether the (N, file) pairs over [`PRUNE_PEER_MIB`] were left out.
    pub pruned: bool,
    /// One row per grid point, in grid order.
    pub rows: Vec<SweepRow>,
}

/// The grid points as `sim swarm` parameters, in order N, file, links, latency: `base`'s
/// other flags, the pruned grid unless `base.sweep_full`, and only the sizes, file sizes
/// and latencies listed in `base.sweep_peers`, `sweep_file_mib` and `sweep_latency_ms`
/// when those are not empty.
pub fn grid(base: &Params) -> Vec<Params> {
    let keep = |list: &[u64], x: u64| list.is_empty() || list.contains(&x);
    let peers_list: Vec<u64> = base.sweep_peers.iter().map(|&n| n as u64).collect();
    let mut points = Vec::new();
    for peers in SWEEP_PEERS {
        for file_mib in SWEEP_FILE_MIB {
            if !keep(&peers_list, peers as u64) || !keep(&base.sweep_file_mib, file_mib) {
                continue;
            }
            if !base.sweep_full && peers as u64 * file_mib > PRUNE_PEER_MIB {
                continue;
            }
            for (upload_mbps, download_mbps) in SWEEP_LINKS {
                for latency_ms in SWEEP_LATENCY_MS {
                    if !keep(&base.sweep_latency_ms, latency_ms) {
                        continue;
                    }
                    points.push(Params {
                        peers,
                        file_mib,
                        upload_mbps,
                        download_mbps,
                        latency_ms,
                        sweep: false,
                        ..base.clone()
                    });
                }
            }
        }
    }
    points
}

/// Runs every point of `points` for `seeds` seeds from each point's `seed`, on `jobs`
/// threads (every run is deterministic, so the figures do not depend on `jobs`).
pub fn run_sweep(
    points: &[Params],
    seeds: u64,
    jobs: usize,
    pruned: bool,
) -> Result<SweepReport, ExperimentError> {
    if seeds == 0 || seeds > MAX_SEEDS {
        return Err(ExperimentError::InvalidArgument(format!(
            "--seeds must be in 1..={MAX_SEEDS}"
        )));
    }
    if jobs == 0 || jobs > MAX_JOBS {
        return Err(ExperimentError::InvalidArgument(format!(
            "--jobs must be in 1..={MAX_JOBS}"
        )));
    }
    let runs: Vec<(usize, Params)> = points
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            (0..seeds).map(move |k| {
                (
                    i,
                    Params {
                        seed: p.seed + k,
                        ..p.clone()
                    },
                )
            })
        })
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<super::swarm::Report, ExperimentError>>>> =
        Mutex::new((0..runs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(runs.len().max(1)) {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, p)) = runs.get(k) else { break };
                    let r = run(p);
                    if let Ok(mut v) = results.lock() {
                        v[k] = Some(r);
                    }
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| ExperimentError::Failed("a sweep worker panicked".into()))?;
    let mut rows = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let mut reports = Vec::new();
        for (k, (j, _)) in runs.iter().enumerate() {
            if *j != i {
                continue;
            }
            match &results[k] {
                Some(Ok(r)) => reports.push(r.clone()),
                Some(Err(e)) => return Err(ExperimentError::Failed(e.to_string())),
                None => return Err(ExperimentError::Failed("a sweep run did not finish".into())),
            }
        }
        let effs: Vec<f64> = reports.iter().map(|r| r.efficiency).collect();
        let mut sorted = effs.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len().max(1) as f64;
        let median = if sorted.is_empty() {
            f64::NAN
        } else if sorted.len() % 2 == 1 {
            sorted[sorted.len() / 2]
        } else {
            (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
        };
        rows.push(SweepRow {
            peers: p.peers,
            file_mib: p.file_mib,
            upload_mbps: p.upload_mbps,
            download_mbps: p.download_mbps,
            latency_ms: p.latency_ms,
            lower_bound_secs: reports.first().map_or(f64::NAN, |r| r.lower_bound_secs),
            efficiency_min: sorted.first().copied().unwrap_or(f64::NAN),
            efficiency_median: median,
            efficiency_mean: effs.iter().sum::<f64>() / n,
            efficiency: effs,
            completion_secs_max_mean: reports.iter().map(|r| r.completion_secs_max).sum::<f64>()
                / n,
            seeder_upload_copies_mean: reports.iter().map(|r| r.seeder_upload_copies).sum::<f64>()
                / n,
            wall_seconds: reports.iter().map(|r| r.wall_seconds).sum(),
        });
    }
    let seed0 = points.first().map_or(1, |p| p.seed);
    Ok(SweepReport {
        seeds: (seed0..seed0 + seeds).collect(),
        pruned,
        rows,
    })
}

impl SweepReport {
    /// The efficiency table, one line per point.
    pub fn render_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "swarm sweep: seeds {:?}{}",
            self.seeds,
            if self.pruned {
                format!(" (pruned: N x file <= {PRUNE_PEER_MIB} MiB)")
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "     N  file MiB  up/down Mbit/s  lat ms  bound s   eff min  median    mean  max done s  seeder copies  wall s"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:>6} {:>9} {:>15} {:>7} {:>8.1} {:>9.3} {:>7.3} {:>7.3} {:>11.1} {:>14.2} {:>7.0}",
                r.peers,
                r.file_mib,
                format!("{}/{}", r.upload_mbps, r.download_mbps),
                r.latency_ms,
                r.lower_bound_secs,
                r.efficiency_min,
                r.efficiency_median,
                r.efficiency_mean,
                r.completion_secs_max_mean,
                r.seeder_upload_copies_mean,
                r.wall_seconds
            );
        }
        s
    }
}
