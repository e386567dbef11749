//! `peerlab testnet compare serf`: peerlab's membership and gossip beside HashiCorp Serf's on
//! the same machine, as ratios.
//!
//! Serf (memberlist underneath: SWIM with the Lifeguard extensions, Dadgar et al., DSN 2018)
//! is what people deploy for cluster membership and event spread. Its LAN profile gossips
//! every 200 ms to 3 nodes and probes one node a second; peerlab's nodes run with the same
//! three timers (`Timings { gossip_interval_ms: 200, gossip_fanout: 3, probe_ms: 1000 }`).
//!
//! # The run
//!
//! Each system goes through the same phases, one system after the other ([`Cluster`] is
//! what differs between them):
//!
//! 1. **join**: node 0 starts, then the other seeds through it, then everyone else in
//!    batches of [`crate::process::SPAWN_BATCH`] through two seeds (the testnet's own start procedure, which
//!    the Serf agents follow with `-join`). `join_secs` runs from the first start until every
//!    node has logged every other node up.
//! 2. **settle** (peerlab: until every ring view is ideal, at most [`RING_DEADLINE`]) and
//!    for [`SETTLE`] more, then **rest** for `--rest-secs`: bytes on the loopback wire
//!    (nftables counters on each system's ports, see [`host`]), CPU time and resident memory
//!    of every node process.
//! 3. **event**: one user event (`serf event`) / one `publish` at a non-seed node; the
//!    arrival at each other node is that node's own time (Serf: its log line, stamped as it
//!    is written; peerlab: the arrival time the node reports through its API) minus the
//!    origin's.
//! 4. **kill**: SIGKILL of [`KILLED`] non-seed nodes; a victim's detection time is from the
//!    kill until the last live node logged it failed / dead.
//!
//! `false_positives` counts live nodes that some node logged failed / dead at any time of
//! the run. Whatever a run started is stopped when it ends, fails or is interrupted
//! (SIGINT / SIGTERM end the waits early).
//!
//! # Layout
//!
//! - `figures.rs`: [`Figures`], [`Ratios`], [`Targets`], the [`Report`] and its table.
//! - `timeline.rs`: log lines as timed [`timeline::Observation`]s and the figures computed
//!   from them.
//! - `host.rs`: programs on the `PATH`, Ctrl-C, CPU time, nftables byte counters.
//! - `serf.rs`: Serf agents ([`serf::SerfCluster`]).
//! - `peerlab.rs`: a peerlab testnet of node processes ([`peerlab::PeerlabCluster`]).

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use crate::measure::time_to;
use crate::process::{TestnetError, Timings};

mod figures;
pub mod host;
mod peerlab;
mod serf;
pub mod timeline;

pub use figures::{BYTES_TARGET_RATIO, Figures, JOIN_TARGET_RATIO, Ratios, Report, Setup, Targets};
pub use peerlab::PeerlabCluster;
pub use serf::{SERF_INSTALL_HINT, SerfCluster, locate_serf};

use timeline::Observation;

/// Nodes killed for the detection figures.
pub const KILLED: usize = 5;
/// Fewest nodes a comparison runs with: the killed nodes, the seeds and the event's origin,
/// with live nodes left to observe them.
pub const MIN_NODES: usize = 12;
/// Most nodes a comparison runs with (the machine, not the protocols, is measured beyond).
pub const MAX_NODES: usize = 500;
/// Pause between the end of the join and the start of the window at rest: joins leave
/// rumors in flight and peerlab's DHT maintenance at its fast rate for a few periods.
pub const SETTLE: Duration = Duration::from_secs(15);
/// Longest wait, after the join, for a system's own structures beyond membership to be
/// complete before the window at rest (peerlab: every node's ring view ideal). A ring
/// still settling sends its fast-rate maintenance, which is not traffic at rest.
pub const RING_DEADLINE: Duration = Duration::from_secs(180);
/// How often the waits read the nodes' logs.
pub const POLL: Duration = Duration::from_millis(250);
/// How long a user event / publish may take to reach every node.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(60);
/// How long the failures of the killed nodes may take to reach every live node (Lifeguard
/// may stretch memberlist's suspicion timeout to 6 × 4 · log10 N probe periods: 48 s at
/// N = 100, 60 s at 300).
pub const DETECT_DEADLINE: Duration = Duration::from_secs(120);

/// The gossip and probe timers both systems run with; peerlab's DHT maintenance at rest
/// (Serf has no DHT) is `maintenance_ms`, or the testnet's period for N when `None`.
pub fn timings(maintenance_ms: Option<u64>) -> Timings {
    Timings {
        maintenance_ms,
        gossip_interval_ms: 200,
        gossip_fanout: 3,
        probe_ms: Some(1000),
        ..Timings::default()
    }
}

/// `peerlab testnet compare serf`.
#[derive(Debug, Clone, Args)]
pub struct SerfArgs {
    /// Nodes of each system.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// The `serf` executable [default: `serf` on the PATH].
    #[arg(long, value_name = "PATH")]
    pub serf: Option<PathBuf>,
    /// Where the node data dirs and logs go [default: a new dir in the temp dir, removed
    /// after the run].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// First port: Serf agents bind BASE+i (RPC on BASE+N+i), peerlab nodes listen on
    /// BASE+2N+i (API on BASE+3N+i).
    #[arg(long, default_value_t = 24000)]
    pub base_port: u16,
    /// Length of the window at rest, seconds.
    #[arg(long, default_value_t = 30)]
    pub rest_secs: u64,
    /// Seconds the join may take, per system.
    #[arg(long, default_value_t = 300)]
    pub join_timeout: u64,
    /// peerlab's DHT maintenance period at rest, ms (Serf has no DHT) [default: the
    /// testnet's, 1000 up to 40 nodes, then 25 ms per node].
    #[arg(long, value_name = "MS")]
    pub maintenance_ms: Option<u64>,
    /// Run only Serf's side (`--only serf`) or only peerlab's (`--only peerlab`).
    #[arg(long, value_parser = ["serf", "peerlab"])]
    pub only: Option<String>,
}

/// The `peerlab testnet compare` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum CompareCommand {
    /// peerlab's membership and gossip beside HashiCorp Serf's (`serf` on the PATH).
    #[command(
        after_help = "Example:\n  peerlab testnet compare serf --nodes 100\n  \
        peerlab testnet compare serf --nodes 300 --json"
    )]
    Serf(SerfArgs),
}

/// What one system must do for the comparison; the phases are the same for both.
pub trait Cluster {
    /// "serf" or "peerlab".
    fn name(&self) -> &'static str;
    /// Starts every node (node 0, the seeds, then batches), without waiting for the join.
    fn start(&mut self, progress: bool) -> Result<(), TestnetError>;
    /// Every observation logged so far (all nodes, the whole run).
    fn observations(&mut self) -> Vec<Observation>;
    /// Pids of the live node processes.
    fn pids(&self) -> Vec<u32>;
    /// The user event / publish at `origin`: seconds from the origin's own time to each
    /// other live node's, sorted (nodes it never reached are missing).
    fn event(&mut self, origin: usize) -> Result<Vec<f64>, TestnetError>;
    /// SIGKILL of node `i`.
    fn kill(&mut self, i: usize);
    /// Stops every node (also done on drop).
    fn stop(&mut self);
    /// The inclusive range of the ports its nodes talk to each other on.
    fn wire_ports(&self) -> Vec<(u16, u16)>;
    /// Payload bytes sent so far by all live nodes, per protocol, from the system's own
    /// metrics (none by default).
    fn payload_bytes_out(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
    /// Waits up to `within` until what the system builds beyond membership is complete
    /// (nothing by default; peerlab's ring); `Err` says what was still incomplete.
    fn wait_settled(&mut self, within: Duration, progress: bool) -> Result<(), String> {
        let _ = (within, progress);
        Ok(())
    }
}

/// The killed nodes: [`KILLED`] indices spread over the non-seed nodes, never `origin`.
pub fn victims(n: usize, origin: usize) -> Vec<usize> {
    let first = crate::process::SEEDS;
    let pool: Vec<usize> = (first..n).filter(|&i| i != origin).collect();
    if pool.len() <= KILLED {
        return pool;
    }
    (0..KILLED)
        .map(|k| pool[(2 * k + 1) * pool.len() / (2 * KILLED)])
        .collect()
}

fn progress_note(progress: bool, msg: &str) {
    if progress {
        eprintln!("{msg}");
    }
}

/// Measures one system: join, rest, event, kill.
pub fn measure(
    c: &mut dyn Cluster,
    n: usize,
    rest: Duration,
    join_timeout: Duration,
    progress: bool,
) -> Result<Figures, TestnetError> {
    let name = c.name();
    let mut fig = Figures::default();
    let counter = match host::WireCounter::install(&c.wire_ports()) {
        Ok(w) => Some(w),
        Err(e) => {
            fig.notes
                .push(format!("bytes on the wire not counted: {e}"));
            None
        }
    };

    // Join.
    progress_note(progress, &format!("{name}: starting {n} nodes"));
    let start = host::unix_now();
    c.start(progress)?;
    let deadline = Instant::now() + join_timeout;
    let mut obs = c.observations();
    while timeline::joined_count(&obs, n) < n {
        if Instant::now() > deadline {
            fig.notes.push(format!(
                "join incomplete after {} s: {} of {n} nodes saw everyone",
                join_timeout.as_secs(),
                timeline::joined_count(&obs, n)
            ));
            break;
        }
        host::pause(POLL)?;
        obs = c.observations();
    }
    fig.join_secs = timeline::join_secs(&obs, n, start);
    progress_note(
        progress,
        &format!(
            "{name}: joined in {:?} s",
            fig.join_secs.map(|s| (s * 10.0).round() / 10.0)
        ),
    );

    // At rest, once the system's other structures are complete.
    let settling = Instant::now();
    match c.wait_settled(RING_DEADLINE, progress) {
        Ok(()) => fig.notes.push(format!(
            "settled {:.1} s after the join",
            settling.elapsed().as_secs_f64()
        )),
        Err(e) => fig
            .notes
            .push(format!("window at rest started unsettled: {e}")),
    }
    host::pause(SETTLE)?;
    progress_note(progress, &format!("{name}: {} s at rest", rest.as_secs()));
    let pids = c.pids();
    let cpu = |pids: &[u32]| pids.iter().filter_map(|&p| host::cpu_secs(p)).sum::<f64>();
    let b0 = counter.as_ref().map(host::WireCounter::bytes);
    let cpu0 = cpu(&pids);
    let p0 = c.payload_bytes_out();
    let t0 = Instant::now();
    host::pause(rest)?;
    let b1 = counter.as_ref().map(host::WireCounter::bytes);
    let cpu1 = cpu(&pids);
    let secs = t0.elapsed().as_secs_f64();
    let p1 = c.payload_bytes_out();
    let live = pids.len().max(1) as f64;
    fig.payload_bytes_per_node_per_sec = p1
        .iter()
        .map(|(k, b)| {
            let a = p0.get(k).copied().unwrap_or(0);
            (k.clone(), b.saturating_sub(a) as f64 / secs / live)
        })
        .collect();
    fig.cpu_per_node = (cpu1 - cpu0).max(0.0) / secs / live;
    fig.rss_mib_per_node = pids
        .iter()
        .map(|&p| crate::process::rss_kib(p) as f64 / 1024.0)
        .sum::<f64>()
        / live;
    match (b0, b1) {
        (Some(Ok(a)), Some(Ok(b))) => {
            fig.bytes_per_node_per_sec = Some(b.saturating_sub(a) as f64 / secs / live);
        }
        (Some(Err(e)), _) | (_, Some(Err(e))) => {
            fig.notes.push(format!("bytes on the wire not read: {e}"));
        }
        _ => {}
    }

    // Event.
    let origin = n / 2;
    progress_note(progress, &format!("{name}: event at node {origin}"));
    let arrivals = c.event(origin)?;
    let targets = n - 1;
    fig.event_99_secs = time_to(&arrivals, targets, 0.99);
    fig.event_100_secs = time_to(&arrivals, targets, 1.0);
    if arrivals.len() < targets {
        fig.notes.push(format!(
            "the event reached {} of {targets} nodes within {} s",
            arrivals.len(),
            EVENT_DEADLINE.as_secs()
        ));
    }

    // Kill.
    let victims = victims(n, origin);
    let live: Vec<usize> = (0..n).filter(|i| !victims.contains(i)).collect();
    progress_note(progress, &format!("{name}: SIGKILL of nodes {victims:?}"));
    let killed_at = host::unix_now();
    for &v in &victims {
        c.kill(v);
    }
    let deadline = Instant::now() + DETECT_DEADLINE;
    let mut det = timeline::detection(&c.observations(), &victims, &live, killed_at);
    while !det.complete() {
        if Instant::now() > deadline {
            fig.notes.push(format!(
                "failures not seen by every live node within {} s",
                DETECT_DEADLINE.as_secs()
            ));
            break;
        }
        host::pause(POLL)?;
        det = timeline::detection(&c.observations(), &victims, &live, killed_at);
    }
    fig.detect_mean_secs = det.mean();
    fig.detect_max_secs = det.max();
    let obs = c.observations();
    fig.false_positives = timeline::false_positives(&obs, &victims);
    progress_note(progress, &format!("{name}: stopping"));
    c.stop();
    Ok(fig)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A run's working dir, removed on drop when the run chose it.
struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs `peerlab testnet compare serf`. `node_exe` is the `peerlab` binary the nodes run;
/// `path_var` the `PATH` that `serf` is looked up in.
pub fn run_serf(
    a: &SerfArgs,
    node_exe: PathBuf,
    path_var: Option<&std::ffi::OsStr>,
    progress: bool,
) -> Result<Report, TestnetError> {
    // Checked before anything starts.
    let serf = locate_serf(a.serf.as_deref(), path_var)?;
    if !(MIN_NODES..=MAX_NODES).contains(&a.nodes) {
        return Err(TestnetError::Invalid(format!(
            "--nodes must be in {MIN_NODES}..={MAX_NODES}"
        )));
    }
    let n = a.nodes;
    if a.base_port as usize + 5 * n > u16::MAX as usize {
        return Err(TestnetError::Invalid(format!(
            "--base-port {} leaves no room for 5 × {n} ports",
            a.base_port
        )));
    }
    let serf_version = serf::version(&serf)?;
    let work = match &a.dir {
        Some(d) => WorkDir {
            path: d.clone(),
            remove: false,
        },
        None => WorkDir {
            path: std::env::temp_dir().join(format!("peerlab-compare-{}", std::process::id())),
            remove: true,
        },
    };
    std::fs::create_dir_all(&work.path).map_err(|e| TestnetError::Io {
        path: work.path.display().to_string(),
        msg: e.to_string(),
    })?;
    host::watch_interrupts();
    let rest = Duration::from_secs(a.rest_secs.max(1));
    let join_timeout = Duration::from_secs(a.join_timeout.max(1));
    let load_before = load();
    let only = a.only.as_deref();
    let serf_fig = if only != Some("peerlab") {
        let mut c = SerfCluster::new(serf, n, a.base_port, work.path.join("serf"))?;
        measure(&mut c, n, rest, join_timeout, progress)?
    } else {
        Figures::default()
    };
    let peerlab_fig = if only != Some("serf") {
        let base = a.base_port + 2 * n as u16;
        let mut c = PeerlabCluster::new(
            node_exe,
            n,
            base,
            work.path.join("peerlab"),
            timings(a.maintenance_ms),
        );
        measure(&mut c, n, rest, join_timeout, progress)?
    } else {
        Figures::default()
    };
    let t = timings(a.maintenance_ms);
    Ok(Report::new(
        n,
        serf_fig,
        peerlab_fig,
        Setup {
            serf_version,
            killed: KILLED,
            rest_secs: rest.as_secs(),
            peerlab_gossip_view: t.gossip_view,
            peerlab_maintenance_ms: t.maintenance_for(n),
            load_before,
            load_after: load(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn victims_are_spread_non_seeds_other_than_the_origin() {
        for n in [MIN_NODES, 20, 100, 300] {
            let origin = n / 2;
            let v = victims(n, origin);
            assert_eq!(v.len(), KILLED, "n = {n}");
            let mut d = v.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), KILLED, "distinct: {v:?}");
            assert!(
                v.iter()
                    .all(|&i| i >= crate::process::SEEDS && i < n && i != origin)
            );
        }
        assert_eq!(victims(100, 50), vec![12, 31, 52, 71, 90]);
    }

    #[test]
    fn a_missing_serf_is_a_clear_error_before_anything_starts() {
        let a = SerfArgs {
            nodes: 100,
            serf: None,
            dir: Some(PathBuf::from("/nonexistent/never-created")),
            base_port: 24000,
            rest_secs: 30,
            join_timeout: 300,
            maintenance_ms: None,
            only: None,
        };
        let empty = tempfile::tempdir().unwrap();
        let path = std::env::join_paths([empty.path()]).unwrap();
        let e = run_serf(
            &a,
            PathBuf::from("/nonexistent/peerlab"),
            Some(&path),
            false,
        )
        .expect_err("no serf on this PATH");
        let msg = e.to_string();
        assert!(msg.contains("serf"), "{msg}");
        assert!(msg.contains(SERF_INSTALL_HINT), "{msg}");
        // An explicit path that does not exist is refused the same way.
        let a = SerfArgs {
            serf: Some(PathBuf::from("/nonexistent/serf")),
            ..a
        };
        let msg = run_serf(&a, PathBuf::from("/nonexistent/peerlab"), None, false)
            .expect_err("no such file")
            .to_string();
        assert!(msg.contains("/nonexistent/serf"), "{msg}");
        assert!(!std::path::Path::new("/nonexistent/never-created").exists());
    }
}
