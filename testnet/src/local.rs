//! Local testnets: many real `peerlab` nodes on 127.0.0.1.
//!
//! A [`Testnet`] starts `N` nodes — one OS process each (the `peerlab node` command, or any
//! [`NodeProgram`]), or all inside this process with `--in-process` — each with its own data
//! dir under the testnet dir, OS-assigned (or configured) ports on 127.0.0.1 only, and a
//! `config.toml` that the node reads at start. Node 0 starts the overlay; [`SEEDS`] seed
//! nodes join through it, and every other node joins through two seeds.
//!
//! The testnet is *converged* when every live node's ring view is the ideal ring — each
//! virtual node's first successor and predecessor are its neighbours among the vnode ids
//! `SHA-1(peer id ‖ i)` of all live peers — and every node's gossip membership lists every
//! other live node as alive. [`Testnet::health`] checks both through the control API.
//!
//! `testnet.json` in the testnet dir records every node's peer id, addresses, API token and
//! pid; it is rewritten after each change, so `testnet down` can stop every node the testnet
//! started even after the controlling process died. Children run in their own process group
//! (a Ctrl-C in the terminal that ran `testnet up` does not reach them); before signalling a
//! pid, `down` checks `/proc/<pid>/cmdline` still names the node's data dir, so a reused pid
//! is never killed. Stopping is SIGTERM (the node leaves the ring gracefully), then SIGKILL
//! after [`STOP_DEADLINE`].

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use peerlab_node::client::Client;
use peerlab_node::config::{Config, Transport};
use peerlab_node::{NodeHandle, NodeOptions};
use peerlab_overlay::Id;
use serde::{Deserialize, Serialize};

/// Largest testnet: beyond this the machine, not the overlay, is what gets measured.
pub const MAX_NODES: usize = 2000;
/// Seed nodes (node 0 and the first nodes that joined through it) others bootstrap from.
pub const SEEDS: usize = 3;
/// Name of the testnet description file in the testnet dir.
pub const MANIFEST: &str = "testnet.json";
/// How long a node may take to stop after SIGTERM before it gets SIGKILL.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// How long a started node may take to write its API address.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// File descriptors one in-process node needs (its QUIC UDP socket, TCP and API listeners,
/// a few API connections, its store file; the runtime is shared), with margin: a node
/// process of a 300-node testnet, runtime and log files included, held 16.
pub const FDS_PER_IN_PROCESS_NODE: u64 = 16;
/// File descriptors one node process needs beyond one per TCP connection.
pub const FDS_PER_PROCESS: u64 = 128;
/// Threads polling node APIs at once in health checks and measurements.
pub const POLL_THREADS: usize = 16;
/// Processes spawned before the controller waits for the batch's API addresses (bounds the
/// join storm on the seeds and the start-up CPU burst).
pub const SPAWN_BATCH: usize = 25;
/// Pause between two convergence checks, per node checked.
pub const CHECK_PERIOD_PER_NODE: Duration = Duration::from_millis(20);
/// How long a freshly started node may have no connection before it is restarted.
pub const ISOLATION_WAIT: Duration = Duration::from_secs(15);
/// Restarts of isolated nodes per start-up batch.
pub const ISOLATION_RETRIES: usize = 2;
/// Environment variable holding a child node's data dir for [`run_child_from_env`].
pub const CHILD_ENV: &str = "PEERLAB_TESTNET_CHILD_DIR";
/// Environment variable asking a child to exit when its parent process goes away.
pub const CHILD_WATCH_PARENT_ENV: &str = "PEERLAB_TESTNET_WATCH_PARENT";

/// Why a testnet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The machine cannot host the testnet as asked (ports, file descriptors, programs).
    #[error("{0}")]
    Resources(String),
    /// A file could not be read or written.
    #[error("{path}: {msg}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        msg: String,
    },
    /// A node failed to start.
    #[error("node {index} did not start: {msg}")]
    Start {
        /// The node's index.
        index: usize,
        /// Why (with the tail of its log).
        msg: String,
    },
    /// No testnet is described in the dir.
    #[error("no testnet in {0} (start one with `peerlab testnet up --dir {0}`)")]
    NoTestnet(String),
    /// The testnet did not reach the expected state in time.
    #[error("timed out after {secs:.0} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// Seconds waited.
        secs: f64,
    },
    /// A step of an experiment or the demo failed.
    #[error("{0}")]
    Failed(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TestnetError + '_ {
    move |e| TestnetError::Io {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

/// How a node process is started. In `args` and `env` values, `{data_dir}` is replaced by
/// the node's data dir; the node reads everything else from `<data_dir>/config.toml`.
#[derive(Clone, Debug)]
pub struct NodeProgram {
    /// The executable.
    pub exe: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl NodeProgram {
    /// `<exe> node --data-dir {data_dir} --threads 1`: the `peerlab` binary, each node on a
    /// single-threaded runtime (hundreds of processes share a few cores: a multi-threaded
    /// runtime per process only adds work stealing, parking and context switches — a
    /// profile of an idle 300-process testnet spent ~12 % in task switching and wakeups).
    pub fn peerlab(exe: impl Into<PathBuf>) -> NodeProgram {
        NodeProgram {
            exe: exe.into(),
            args: vec![
                "node".into(),
                "--data-dir".into(),
                "{data_dir}".into(),
                "--threads".into(),
                "1".into(),
            ],
            env: Vec::new(),
        }
    }

    /// The running executable as `peerlab` (what the CLI uses).
    pub fn current_peerlab() -> Result<NodeProgram, TestnetError> {
        let exe = std::env::current_exe().map_err(|e| {
            TestnetError::Resources(format!("cannot find the running executable: {e}"))
        })?;
        Ok(NodeProgram::peerlab(exe))
    }

    /// A libtest test binary re-run with only `test_name`, which must call
    /// [`run_child_from_env`]. Children exit when the test process goes away.
    pub fn test_harness(test_name: &str) -> Result<NodeProgram, TestnetError> {
        let exe = std::env::current_exe().map_err(|e| {
            TestnetError::Resources(format!("cannot find the test executable: {e}"))
        })?;
        Ok(NodeProgram {
            exe,
            args: vec![
                test_name.into(),
                "--exact".into(),
                "--nocapture".into(),
                "--test-threads=1".into(),
                // A second filter that matches no test: it puts the data dir in the
                // cmdline, which `down` checks before signalling.
                "{data_dir}".into(),
            ],
            env: vec![
                (CHILD_ENV.into(), "{data_dir}".into()),
                (CHILD_WATCH_PARENT_ENV.into(), "1".into()),
            ],
        })
    }
}

/// Where a testnet's nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One OS process per node.
    Processes,
    /// Every node inside the controlling process.
    InProcess,
}

/// What [`Testnet::start`] needs.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// Nodes to start.
    pub nodes: usize,
    /// The testnet dir (node data dirs and `testnet.json` go there).
    pub dir: PathBuf,
    /// Transport.
    pub transport: Transport,
    /// Virtual nodes per peer.
    pub vnodes: u16,
    /// Processes or in-process.
    pub mode: Mode,
    /// First port of a configured range (node `i`: QUIC and TCP on `base + i`, API on
    /// `base + N + i`); `None` lets the OS assign every port.
    pub base_port: Option<u16>,
    /// How node processes are started (ignored in-process).
    pub program: Option<NodeProgram>,
    /// Seed of the nodes' protocol randomness (node `i` gets `seed + i`).
    pub seed: u64,
    /// Protocol timings every node runs with.
    pub timings: Timings,
}

/// Nodes in a testnet for which one maintenance period of [`BASE_MAINTENANCE_MS`] is kept;
/// beyond it the period grows in proportion to `N`. The machine's cores are fixed, and
/// DHT maintenance costs every node about 20 messages per vnode and period, so a constant
/// period would make the testnet-wide message rate (and CPU load) grow with `N`: 100
/// processes at 1 s saturate two cores. Scaling keeps the total rate near that of 40
/// nodes at 1 s, at the price of slower repair — the Chord paper itself uses 30 s.
pub const NODES_PER_BASE_PERIOD: usize = 40;
/// The LAN profile's DHT maintenance period, ms.
pub const BASE_MAINTENANCE_MS: u64 = 1000;

/// Connection idle timeout of a testnet's nodes, seconds. Even with gossip partners from a
/// partial view a node of a 300-node testnet keeps ~220 peers busy (4 vnodes' fingers in
/// both directions, successors, gossip partners both ways, SWIM probes, flooding links);
/// two minutes instead of ten changed neither that count nor the start-up time, and only
/// adds re-handshakes for the peers a node talks to now and then.
pub const TESTNET_IDLE_TIMEOUT_SECS: u64 = 600;

/// Connection idle timeout of in-process nodes, seconds. All nodes share one address
/// space, and every connection costs both of its ends there (~55 KiB together: quinn's
/// connection and transmit buffer, libp2p's connection task, channels). With
/// [`TESTNET_IDLE_TIMEOUT_SECS`] a 1000-node in-process testnet kept every peer a node had
/// ever looked up through (iterative lookups, probes, member syncs): ~180 connections per
/// node after 5 minutes, 11.8 GiB resident and growing by ~2 GiB a minute before it had
/// converged. A minute (plus the streams' own idle time) keeps the peers a node works with
/// and closes the ones it met once.
pub const IN_PROCESS_IDLE_TIMEOUT_SECS: u64 = 60;

/// A testnet's gossip partial view (see `peerlab_gossip::Config::partner_view`): with
/// partners drawn from all members, every node of a testnet connects to every other — at
/// 300 processes ~45 000 QUIC connections and their handshakes, which cost more of the
/// machine during start-up than the protocols themselves. 16 is about 3·ln N at N = 300:
/// a random graph of that out-degree is connected with overwhelming probability and has
/// diameter ~2–3, so rumors spread nearly as fast as with uniform partners (the
/// simulator's prediction in `testnet converge` uses the same view).
pub const TESTNET_GOSSIP_VIEW: usize = 16;

/// Connections a testnet node may hold beyond one per other node (dials racing, clients).
pub const TESTNET_SPARE_CONNECTIONS: u32 = 64;

/// Protocol timings of a testnet's nodes (recorded in `testnet.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    /// DHT maintenance period and SWIM probe period, ms; `None`: chosen from `N` (see
    /// [`Timings::maintenance_for`]).
    pub maintenance_ms: Option<u64>,
    /// Gossip round period, ms.
    pub gossip_interval_ms: u64,
    /// Gossip fan-out.
    pub gossip_fanout: usize,
    /// Gossip partial view (0: partners from all members).
    pub gossip_view: usize,
}

impl Default for Timings {
    /// The LAN profile: gossip every 200 ms to 3 peers; maintenance chosen from `N`.
    fn default() -> Self {
        Timings {
            maintenance_ms: None,
            gossip_interval_ms: 200,
            gossip_fanout: 3,
            gossip_view: TESTNET_GOSSIP_VIEW,
        }
    }
}

impl Timings {
    /// Sets these timings, and the testnet's connection limits, in node `cfg` of an
    /// `n`-node testnet (shared by `testnet up` and `peerlab sim startup`).
    pub fn apply(&self, cfg: &mut Config, n: usize) {
        cfg.maintenance_ms = Some(self.maintenance_for(n));
        // The failure detector's period scales like maintenance: under a load of hundreds
        // of runnable processes, a 500 ms probe timeout mostly measures the scheduler.
        cfg.probe_ms = Some(self.maintenance_for(n));
        cfg.gossip_interval_ms = Some(self.gossip_interval_ms);
        cfg.gossip_fanout = Some(self.gossip_fanout);
        cfg.gossip_view = Some(self.gossip_view);
        cfg.idle_timeout_secs = TESTNET_IDLE_TIMEOUT_SECS;
        cfg.max_connections = cfg
            .max_connections
            .max(n as u32 + TESTNET_SPARE_CONNECTIONS);
    }

    /// The maintenance period for `n` nodes: [`BASE_MAINTENANCE_MS`] up to
    /// [`NODES_PER_BASE_PERIOD`] nodes, then in proportion to `n`.
    pub fn maintenance_for(&self, n: usize) -> u64 {
        self.maintenance_ms.unwrap_or_else(|| {
            (BASE_MAINTENANCE_MS * n as u64 / NODES_PER_BASE_PERIOD as u64).max(BASE_MAINTENANCE_MS)
        })
    }
}

/// One node as `testnet.json` records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Index in the testnet.
    pub index: usize,
    /// Data dir.
    pub data_dir: PathBuf,
    /// libp2p peer id (empty until the node started).
    pub peer_id: String,
    /// Control API address.
    pub api: String,
    /// Control API token.
    pub token: String,
    /// Listen multiaddrs.
    pub listen_addrs: Vec<String>,
    /// OS process id (the controller's own for in-process nodes).
    pub pid: Option<u32>,
    /// Whether the node should be running.
    pub alive: bool,
    /// Whether it is a seed that others bootstrap from.
    pub seed: bool,
}

/// `testnet.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Processes or in-process.
    pub mode: Mode,
    /// The process that started the testnet.
    pub controller_pid: u32,
    /// `quic` or `tcp`.
    pub transport: Transport,
    /// Virtual nodes per peer.
    pub vnodes: u16,
    /// Protocol timings (`maintenance_ms` resolved for this `N`).
    #[serde(default)]
    pub timings: Timings,
    /// The nodes.
    pub nodes: Vec<NodeRecord>,
}

impl Manifest {
    /// Reads `testnet.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Manifest, TestnetError> {
        let path = dir.join(MANIFEST);
        let text = fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                TestnetError::NoTestnet(dir.display().to_string())
            } else {
                io_err(&path)(e)
            }
        })?;
        serde_json::from_str(&text).map_err(|e| TestnetError::Io {
            path: path.display().to_string(),
            msg: format!("not a testnet description: {e}"),
        })
    }

    /// Writes `testnet.json` into `dir` atomically (write, then rename).
    pub fn save(&self, dir: &Path) -> Result<(), TestnetError> {
        let path = dir.join(MANIFEST);
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| TestnetError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        fs::write(&tmp, text).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))
    }
}

/// What a health check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Health {
    /// Nodes that should be running.
    pub expected: usize,
    /// Nodes whose API answered.
    pub reachable: usize,
    /// Nodes whose ring view is the ideal ring of the live peers.
    pub ring_correct: usize,
    /// Nodes whose membership lists every other live node as alive.
    pub membership_complete: usize,
    /// Sum of resident memory of the node processes (or of this process in-process), KiB.
    pub rss_kib: u64,
}

impl Health {
    /// Ring correct and membership complete everywhere.
    pub fn converged(&self) -> bool {
        self.expected > 0
            && self.reachable == self.expected
            && self.ring_correct == self.expected
            && self.membership_complete == self.expected
    }
}

/// A running local testnet.
pub struct Testnet {
    dir: PathBuf,
    manifest: Manifest,
    program: Option<NodeProgram>,
    base_port: Option<u16>,
    seed: u64,
    children: Vec<Option<Child>>,
    handles: Vec<Option<NodeHandle>>,
    rt: Option<tokio::runtime::Runtime>,
    stopped: bool,
    /// Started by this value (dropping it stops the nodes) rather than attached to.
    owned: bool,
}

/// The soft and hard limits on open files of this process.
pub fn fd_limits() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line["Max open files".len()..].split_whitespace();
    let parse = |s: Option<&str>| match s {
        Some("unlimited") => Some(u64::MAX),
        Some(v) => v.parse().ok(),
        None => None,
    };
    Some((parse(it.next())?, parse(it.next())?))
}

/// Checks up front that the machine can host `opts`: node count, file descriptors, the
/// `kill` program, and free ports when a range is configured.
pub fn preflight(opts: &UpOptions) -> Result<(), TestnetError> {
    if opts.nodes == 0 || opts.nodes > MAX_NODES {
        return Err(TestnetError::Invalid(format!(
            "--nodes must be in 1..={MAX_NODES}"
        )));
    }
    if opts.vnodes == 0 || opts.vnodes > 64 {
        return Err(TestnetError::Invalid("--vnodes must be in 1..=64".into()));
    }
    if let Some((soft, hard)) = fd_limits() {
        let n = opts.nodes as u64;
        let need = match opts.mode {
            // QUIC connections share their node's UDP socket; over TCP each connection is
            // a descriptor, and a node may hold one to every other node.
            Mode::InProcess => match opts.transport {
                Transport::Quic => n * FDS_PER_IN_PROCESS_NODE + 256,
                Transport::Tcp => n * (FDS_PER_IN_PROCESS_NODE + n) + 256,
            },
            // Each node process may hold a TCP connection to every other node.
            Mode::Processes => n + FDS_PER_PROCESS,
        };
        if soft < need {
            return Err(TestnetError::Resources(format!(
                "the open-file limit (ulimit -n) is {soft}, but {} {} nodes need about {need}: \
                 raise it with `ulimit -n {}` (hard limit {hard}) or start fewer nodes",
                opts.nodes,
                if opts.mode == Mode::InProcess {
                    "in-process"
                } else {
                    ""
                },
                need.min(hard)
            )));
        }
    }
    if opts.mode == Mode::Processes {
        if opts.program.is_none() {
            return Err(TestnetError::Invalid(
                "a process testnet needs a node program".into(),
            ));
        }
        let ok = Command::new("kill")
            .arg("-l")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(TestnetError::Resources(
                "the `kill` program is needed to stop node processes (install procps)".into(),
            ));
        }
    }
    if let Some(base) = opts.base_port {
        let last = base as usize + 2 * opts.nodes;
        if base < 1024 || last > u16::MAX as usize {
            return Err(TestnetError::Invalid(format!(
                "--base-port {base}: ports {base}..{last} must lie in 1024..=65535"
            )));
        }
        for i in 0..opts.nodes {
            let p = base + i as u16;
            let api = base + (opts.nodes + i) as u16;
            let busy = std::net::UdpSocket::bind(("127.0.0.1", p)).is_err()
                || std::net::TcpListener::bind(("127.0.0.1", p)).is_err()
                || std::net::TcpListener::bind(("127.0.0.1", api)).is_err();
            if busy {
                return Err(TestnetError::Resources(format!(
                    "port {p} or {api} on 127.0.0.1 is in use: choose another --base-port, \
                     or omit it to let the OS assign ports"
                )));
            }
        }
    }
    Ok(())
}

/// Whether process `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Whether `/proc/<pid>/cmdline` contains `needle`.
pub fn cmdline_contains(pid: u32, needle: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            let s = String::from_utf8_lossy(&b).replace('\0', " ");
            s.contains(needle)
        })
        .unwrap_or(false)
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn send_signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    for chunk in pids.chunks(500) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .args(chunk.iter().map(|p| p.to_string()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn log_tail(dir: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(dir.join("node.log")) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// The vnode ids of a peer, as the ring places them.
pub fn vnode_ids(peer_id: &str, vnodes: u16) -> Vec<Id> {
    let Ok(p) = peer_id.parse::<peerlab_node::libp2p::PeerId>() else {
        return Vec::new();
    };
    let Some(o) = peerlab_node::driver::from_libp2p(&p) else {
        return Vec::new();
    };
    (0..vnodes).map(|i| Id::vnode(&o, i)).collect()
}

/// The nodes node `i` of an `n`-node testnet bootstraps through: node 0 starts the
/// overlay; the other seeds join through the first live seed; everyone else through two
/// live seeds (a dead first seed does not stop a join). `alive(s)` tells whether seed `s`
/// is running.
pub fn bootstrap_through(i: usize, n: usize, alive: impl Fn(usize) -> bool) -> Vec<usize> {
    let live_seeds: Vec<usize> = (0..SEEDS.min(n)).filter(|&s| s != i && alive(s)).collect();
    if i == 0 && live_seeds.is_empty() {
        Vec::new()
    } else if i < SEEDS {
        live_seeds.into_iter().take(1).collect()
    } else {
        let k = live_seeds.len().max(1);
        (0..2.min(live_seeds.len()))
            .map(|j| live_seeds[(i + j) % k])
            .collect()
    }
}

/// The ideal ring of a set of peers: vnode id (hex) → peer id, in ring order.
#[derive(Clone, Debug, Default)]
pub struct IdealRing {
    ids: Vec<(String, String)>,
}

impl IdealRing {
    /// The ring of `peers` with `vnodes` virtual nodes each.
    pub fn new<'a>(peers: impl IntoIterator<Item = &'a str>, vnodes: u16) -> IdealRing {
        let mut ids: Vec<(String, String)> = peers
            .into_iter()
            .flat_map(|p| {
                vnode_ids(p, vnodes)
                    .into_iter()
                    .map(move |id| (id.to_hex(), p.to_string()))
            })
            .collect();
        ids.sort();
        ids.dedup();
        IdealRing { ids }
    }

    /// Ring positions.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.ids.binary_search_by(|(x, _)| x.as_str().cmp(id)).ok()
    }

    /// The (vnode, peer) owning `key`: the first vnode at or after `SHA-1(key)`.
    pub fn owner(&self, key: &str) -> Option<&(String, String)> {
        let k = Id::hash(key.as_bytes()).to_hex();
        let i = self.ids.partition_point(|(x, _)| *x < k);
        self.ids.get(i).or_else(|| self.ids.first())
    }

    /// The peers holding `key` with `replicas` replicas: the owner's peer, then the next
    /// distinct peers along the ring (the DHT's replica set).
    pub fn replica_peers(&self, key: &str, replicas: usize) -> Vec<String> {
        let n = self.ids.len();
        let k = Id::hash(key.as_bytes()).to_hex();
        let start = self.ids.partition_point(|(x, _)| *x < k);
        let mut out: Vec<String> = Vec::new();
        for j in 0..n {
            if out.len() >= replicas {
                break;
            }
            let peer = &self.ids[(start + j) % n].1;
            if !out.contains(peer) {
                out.push(peer.clone());
            }
        }
        out
    }

    /// Whether a node's ring view has every vnode joined with its ideal successor and
    /// predecessor.
    pub fn view_is_ideal(&self, view: &peerlab_node::api::RingView) -> bool {
        let n = self.ids.len();
        if !view.joined || view.vnodes.is_empty() || n == 0 {
            return false;
        }
        view.vnodes.iter().all(|v| {
            let Some(i) = self.position(&v.id) else {
                return false;
            };
            let succ = &self.ids[(i + 1) % n].0;
            let pred = &self.ids[(i + n - 1) % n].0;
            v.joined
                && v.successors.first().map(|s| &s.id) == Some(succ)
                && v.predecessor.as_ref().map(|p| &p.id) == Some(pred)
        })
    }
}

/// Runs `f` over `items` on up to [`POLL_THREADS`] threads, keeping the order.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.is_empty() {
        return Vec::new();
    }
    let per = items.len().div_ceil(POLL_THREADS);
    std::thread::scope(|s| {
        let hs: Vec<_> = items
            .chunks(per)
            .map(|c| {
                let f = &f;
                s.spawn(move || c.iter().map(f).collect::<Vec<R>>())
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

impl Testnet {
    /// Starts every node (without waiting for convergence; see [`Testnet::wait_converged`]).
    pub fn start(opts: UpOptions, progress: bool) -> Result<Testnet, TestnetError> {
        preflight(&opts)?;
        fs::create_dir_all(&opts.dir).map_err(io_err(&opts.dir))?;
        let dir = fs::canonicalize(&opts.dir).map_err(io_err(&opts.dir))?;
        if let Ok(m) = Manifest::load(&dir)
            && m.nodes.iter().any(|n| {
                n.alive
                    && n.pid.is_some_and(|p| {
                        pid_alive(p) && cmdline_contains(p, &n.data_dir.display().to_string())
                    })
            })
        {
            return Err(TestnetError::Invalid(format!(
                "a testnet is already running in {} (stop it with `peerlab testnet down --dir {}`)",
                dir.display(),
                dir.display()
            )));
        }
        let rt = match opts.mode {
            Mode::InProcess => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| TestnetError::Resources(format!("tokio runtime: {e}")))?,
            ),
            Mode::Processes => None,
        };
        let nodes = (0..opts.nodes)
            .map(|i| NodeRecord {
                index: i,
                data_dir: dir.join(format!("node-{i:04}")),
                peer_id: String::new(),
                api: String::new(),
                token: String::new(),
                listen_addrs: Vec::new(),
                pid: None,
                alive: false,
                seed: i < SEEDS,
            })
            .collect();
        let mut net = Testnet {
            dir,
            manifest: Manifest {
                mode: opts.mode,
                controller_pid: std::process::id(),
                transport: opts.transport,
                vnodes: opts.vnodes,
                timings: Timings {
                    maintenance_ms: Some(opts.timings.maintenance_for(opts.nodes)),
                    ..opts.timings
                },
                nodes,
            },
            program: opts.program.clone(),
            base_port: opts.base_port,
            seed: opts.seed,
            children: (0..opts.nodes).map(|_| None).collect(),
            handles: (0..opts.nodes).map(|_| None).collect(),
            rt,
            stopped: false,
            owned: true,
        };
        let bar = progress_bar(progress, opts.nodes as u64, "starting nodes");
        let result = net.start_all(&bar);
        bar.finish_and_clear();
        if let Err(e) = result {
            net.down();
            return Err(e);
        }
        Ok(net)
    }

    fn start_all(&mut self, bar: &indicatif::ProgressBar) -> Result<(), TestnetError> {
        let n = self.manifest.nodes.len();
        // Node 0 first, then the other seeds through it, then everyone else in batches.
        self.spawn(0)?;
        self.await_ready(&[0])?;
        bar.inc(1);
        let seeds: Vec<usize> = (1..SEEDS.min(n)).collect();
        for &i in &seeds {
            self.spawn(i)?;
        }
        self.await_ready(&seeds)?;
        bar.inc(seeds.len() as u64);
        let rest: Vec<usize> = (SEEDS.min(n)..n).collect();
        for batch in rest.chunks(SPAWN_BATCH) {
            for &i in batch {
                self.spawn(i)?;
            }
            self.await_ready(batch)?;
            self.respawn_isolated(batch)?;
            bar.inc(batch.len() as u64);
        }
        self.save()
    }

    /// Restarts nodes of `batch` that have no connection [`ISOLATION_WAIT`] after start:
    /// the node driver does not re-dial its bootstrap peers once a first connection was
    /// made and dropped (seen under heavy load), so such a node would never join.
    fn respawn_isolated(&mut self, batch: &[usize]) -> Result<(), TestnetError> {
        for _attempt in 0..ISOLATION_RETRIES {
            let deadline = Instant::now() + ISOLATION_WAIT;
            let mut isolated: Vec<usize> = batch.to_vec();
            while !isolated.is_empty() && Instant::now() < deadline {
                isolated = par_map(&isolated, |&i| {
                    let ok = self.client(i).status().is_ok_and(|s| s.connected_peers > 0);
                    (!ok).then_some(i)
                })
                .into_iter()
                .flatten()
                .collect();
                if !isolated.is_empty() {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            if isolated.is_empty() {
                return Ok(());
            }
            tracing::warn!(?isolated, "nodes without any connection; restarting them");
            for &i in &isolated {
                self.kill(i);
                self.spawn(i)?;
            }
            self.await_ready(&isolated)?;
        }
        Ok(())
    }

    /// The config a node starts with.
    fn node_config(&self, i: usize) -> Config {
        let n = self.manifest.nodes.len();
        let mut cfg = Config::local(self.manifest.transport);
        cfg.vnodes = self.manifest.vnodes;
        cfg.seed = Some(self.seed.wrapping_add(i as u64));
        self.manifest.timings.apply(&mut cfg, n);
        if self.manifest.mode == Mode::InProcess {
            cfg.idle_timeout_secs = IN_PROCESS_IDLE_TIMEOUT_SECS;
        }
        if let Some(base) = self.base_port {
            let p = base as usize + i;
            cfg.listen = match self.manifest.transport {
                Transport::Quic => vec![
                    format!("/ip4/127.0.0.1/udp/{p}/quic-v1"),
                    format!("/ip4/127.0.0.1/tcp/{p}"),
                ],
                Transport::Tcp => vec![format!("/ip4/127.0.0.1/tcp/{p}")],
            };
            cfg.api = format!("127.0.0.1:{}", base as usize + n + i);
        }
        let through = bootstrap_through(i, n, |s| self.manifest.nodes[s].alive);
        cfg.bootstrap = through
            .into_iter()
            .filter_map(|s| self.bootstrap_addr(s))
            .collect();
        cfg
    }

    fn bootstrap_addr(&self, i: usize) -> Option<String> {
        let want = match self.manifest.transport {
            Transport::Quic => "/quic-v1/",
            Transport::Tcp => "/tcp/",
        };
        self.manifest.nodes[i]
            .listen_addrs
            .iter()
            .find(|a| a.contains(want))
            .cloned()
    }

    /// Starts node `i` (fresh or from its data dir) without waiting for it.
    fn spawn(&mut self, i: usize) -> Result<(), TestnetError> {
        let cfg = self.node_config(i);
        let rec = &self.manifest.nodes[i];
        let data_dir = rec.data_dir.clone();
        fs::create_dir_all(&data_dir).map_err(io_err(&data_dir))?;
        for stale in ["api.addr", "listen.addrs"] {
            let _ = fs::remove_file(data_dir.join(stale));
        }
        match self.manifest.mode {
            Mode::InProcess => {
                let rt = self.rt.as_ref().ok_or_else(|| TestnetError::Start {
                    index: i,
                    msg: "no runtime".into(),
                })?;
                let h = rt
                    .block_on(peerlab_node::spawn(NodeOptions::new(&data_dir, cfg)))
                    .map_err(|e| TestnetError::Start {
                        index: i,
                        msg: e.to_string(),
                    })?;
                let rec = &mut self.manifest.nodes[i];
                rec.peer_id = h.peer_id().to_string();
                rec.api = h.api_addr().to_string();
                rec.token = h.token().to_string();
                rec.listen_addrs = h.listen_addrs().iter().map(|a| a.to_string()).collect();
                rec.pid = Some(std::process::id());
                rec.alive = true;
                self.handles[i] = Some(h);
            }
            Mode::Processes => {
                let text = toml::to_string(&cfg).map_err(|e| TestnetError::Start {
                    index: i,
                    msg: e.to_string(),
                })?;
                let cfg_path = data_dir.join("config.toml");
                fs::write(&cfg_path, text).map_err(io_err(&cfg_path))?;
                let prog = self.program.as_ref().ok_or_else(|| TestnetError::Start {
                    index: i,
                    msg: "no node program".into(),
                })?;
                let d = data_dir.display().to_string();
                let subst = |s: &String| s.replace("{data_dir}", &d);
                let log_path = data_dir.join("node.log");
                let log = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .map_err(io_err(&log_path))?;
                let log2 = log.try_clone().map_err(io_err(&log_path))?;
                let mut cmd = Command::new(&prog.exe);
                cmd.args(prog.args.iter().map(subst))
                    .envs(prog.env.iter().map(|(k, v)| (k.clone(), subst(v))))
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(log2);
                if std::env::var_os("RUST_LOG").is_none() {
                    cmd.env("RUST_LOG", "warn");
                }
                {
                    use std::os::unix::process::CommandExt as _;
                    // Own process group: a terminal's Ctrl-C for the controller does not
                    // reach the nodes; `down` stops them.
                    cmd.process_group(0);
                }
                let child = cmd.spawn().map_err(|e| TestnetError::Start {
                    index: i,
                    msg: format!("cannot run {}: {e}", prog.exe.display()),
                })?;
                let rec = &mut self.manifest.nodes[i];
                rec.pid = Some(child.id());
                rec.alive = true;
                self.children[i] = Some(child);
            }
        }
        self.save()
    }

    /// Waits until every node in `idx` wrote its API address (processes) and reads it.
    fn await_ready(&mut self, idx: &[usize]) -> Result<(), TestnetError> {
        if self.manifest.mode == Mode::InProcess {
            return Ok(());
        }
        let deadline = Instant::now() + START_DEADLINE;
        let mut pending: Vec<usize> = idx.to_vec();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for &i in &pending {
                let dir = self.manifest.nodes[i].data_dir.clone();
                if let Some(Some(c)) = self.children.get_mut(i)
                    && let Ok(Some(st)) = c.try_wait()
                {
                    return Err(TestnetError::Start {
                        index: i,
                        msg: format!("exited with {st}: {}", log_tail(&dir)),
                    });
                }
                let api = fs::read_to_string(dir.join("api.addr")).ok();
                let token = fs::read_to_string(dir.join("api.token")).ok();
                let listen = fs::read_to_string(dir.join("listen.addrs")).ok();
                match (api, token, listen) {
                    (Some(a), Some(t), Some(l)) if !a.trim().is_empty() => {
                        let rec = &mut self.manifest.nodes[i];
                        rec.api = a.trim().to_string();
                        rec.token = t.trim().to_string();
                        rec.listen_addrs = l.lines().map(|s| s.trim().to_string()).collect();
                        rec.peer_id = rec
                            .listen_addrs
                            .first()
                            .and_then(|a| a.rsplit_once("/p2p/"))
                            .map(|(_, p)| p.to_string())
                            .unwrap_or_default();
                    }
                    _ => still.push(i),
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let i = pending[0];
                return Err(TestnetError::Start {
                    index: i,
                    msg: format!(
                        "no API address after {:?}: {}",
                        START_DEADLINE,
                        log_tail(&self.manifest.nodes[i].data_dir)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.save()
    }

    /// Attaches to the testnet described in `dir` (started by another process).
    pub fn attach(dir: &Path, program: Option<NodeProgram>) -> Result<Testnet, TestnetError> {
        let dir = fs::canonicalize(dir)
            .map_err(|_| TestnetError::NoTestnet(dir.display().to_string()))?;
        let manifest = Manifest::load(&dir)?;
        let n = manifest.nodes.len();
        Ok(Testnet {
            dir,
            manifest,
            program,
            base_port: None,
            seed: 1,
            children: (0..n).map(|_| None).collect(),
            handles: (0..n).map(|_| None).collect(),
            rt: None,
            stopped: false,
            owned: false,
        })
    }

    /// Writes `testnet.json`.
    pub fn save(&self) -> Result<(), TestnetError> {
        self.manifest.save(&self.dir)
    }

    /// The testnet dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The description (`testnet.json`).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Node count (live or not).
    pub fn len(&self) -> usize {
        self.manifest.nodes.len()
    }

    /// Whether the testnet has no nodes.
    pub fn is_empty(&self) -> bool {
        self.manifest.nodes.is_empty()
    }

    /// Indices of the nodes that should be running.
    pub fn alive(&self) -> Vec<usize> {
        self.manifest
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.index)
            .collect()
    }

    /// Node `i`'s record.
    pub fn node(&self, i: usize) -> &NodeRecord {
        &self.manifest.nodes[i]
    }

    /// A blocking API client of node `i`.
    pub fn client(&self, i: usize) -> Client {
        let n = &self.manifest.nodes[i];
        Client::new(&n.api, &n.token)
    }

    /// The ideal ring of the live nodes.
    pub fn ideal_ring(&self) -> IdealRing {
        IdealRing::new(
            self.manifest
                .nodes
                .iter()
                .filter(|n| n.alive && !n.peer_id.is_empty())
                .map(|n| n.peer_id.as_str()),
            self.manifest.vnodes,
        )
    }

    /// Checks ring and membership on every live node.
    pub fn health(&self) -> Health {
        let alive = self.alive();
        let ring = self.ideal_ring();
        let want_members = alive.len().saturating_sub(1);
        let checks = par_map(&alive, |&i| {
            let c = self.client(i);
            let st = c.status().ok();
            let ring_ok = c.ring().map(|v| ring.view_is_ideal(&v)).unwrap_or(false);
            (
                st.is_some(),
                ring_ok,
                st.is_some_and(|s| s.members_alive == want_members),
            )
        });
        let rss_kib = match self.manifest.mode {
            // The nodes live in the controller, which `testnet status` (another process)
            // is not.
            Mode::InProcess => rss_kib(self.manifest.controller_pid),
            Mode::Processes => alive
                .iter()
                .filter_map(|&i| self.manifest.nodes[i].pid)
                .map(rss_kib)
                .sum(),
        };
        Health {
            expected: alive.len(),
            reachable: checks.iter().filter(|c| c.0).count(),
            ring_correct: checks.iter().filter(|c| c.1).count(),
            membership_complete: checks.iter().filter(|c| c.2).count(),
            rss_kib,
        }
    }

    /// Waits until the ring is correct and membership complete on every live node.
    ///
    /// Checks are spaced by [`CHECK_PERIOD_PER_NODE`] per node (at least 250 ms) so that the
    /// controller's own API traffic does not starve the nodes it waits for on a small
    /// machine.
    pub fn wait_converged(&self, within: Duration, progress: bool) -> Result<Health, TestnetError> {
        let start = Instant::now();
        let n = self.alive().len() as u64;
        let pause = (CHECK_PERIOD_PER_NODE * n as u32).max(Duration::from_millis(250));
        let bar = progress_bar(progress, n, "converging");
        loop {
            let h = self.health();
            bar.set_position(h.ring_correct.min(h.membership_complete) as u64);
            bar.set_message(format!(
                "ring correct {}/{n}, membership complete {}/{n}",
                h.ring_correct, h.membership_complete
            ));
            if h.converged() {
                bar.finish_and_clear();
                return Ok(h);
            }
            if start.elapsed() > within {
                bar.finish_and_clear();
                return Err(TestnetError::Timeout {
                    what: format!(
                        "convergence (ring correct on {}/{n}, membership complete on {}/{n}, API up on {}/{n})",
                        h.ring_correct, h.membership_complete, h.reachable
                    ),
                    secs: within.as_secs_f64(),
                });
            }
            std::thread::sleep(pause);
        }
    }

    /// Kills node `i` abruptly (SIGKILL; in-process: the tasks are aborted).
    pub fn kill(&mut self, i: usize) {
        self.manifest.nodes[i].alive = false;
        match self.manifest.mode {
            Mode::InProcess => {
                if let (Some(h), Some(rt)) = (self.handles[i].take(), self.rt.as_ref()) {
                    rt.block_on(h.kill());
                }
            }
            Mode::Processes => {
                if let Some(mut c) = self.children[i].take() {
                    let _ = c.kill();
                    let _ = c.wait();
                } else if let Some(pid) = self.manifest.nodes[i].pid
                    && cmdline_contains(pid, &self.manifest.nodes[i].data_dir.display().to_string())
                {
                    send_signal(&[pid], "KILL");
                }
            }
        }
        let _ = self.save();
    }

    /// Stops node `i` gracefully (SIGTERM: it leaves the ring and hands its records off),
    /// with SIGKILL after [`STOP_DEADLINE`].
    pub fn stop(&mut self, i: usize) {
        self.manifest.nodes[i].alive = false;
        match self.manifest.mode {
            Mode::InProcess => {
                if let (Some(h), Some(rt)) = (self.handles[i].take(), self.rt.as_ref()) {
                    rt.block_on(async {
                        let _ = tokio::time::timeout(STOP_DEADLINE, h.shutdown()).await;
                    });
                }
            }
            Mode::Processes => self.stop_processes(&[i]),
        }
        let _ = self.save();
    }

    /// Restarts node `i` from its data dir (same identity and records) and waits for its API.
    pub fn restart(&mut self, i: usize) -> Result<(), TestnetError> {
        if self.manifest.nodes[i].alive {
            return Ok(());
        }
        self.spawn(i)?;
        self.await_ready(&[i])
    }

    fn stop_processes(&mut self, idx: &[usize]) {
        let mut targets: Vec<(usize, u32)> = Vec::new();
        for &i in idx {
            let rec = &self.manifest.nodes[i];
            let Some(pid) = rec.pid else { continue };
            let own = self.children[i].is_some();
            if own || (pid_alive(pid) && cmdline_contains(pid, &rec.data_dir.display().to_string()))
            {
                targets.push((i, pid));
            }
        }
        let pids: Vec<u32> = targets.iter().map(|t| t.1).collect();
        send_signal(&pids, "TERM");
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            let mut left = 0;
            for &(i, pid) in &targets {
                if let Some(c) = self.children[i].as_mut() {
                    if let Ok(Some(_)) = c.try_wait() {
                        self.children[i] = None;
                    } else {
                        left += 1;
                    }
                } else if pid_alive(pid) {
                    left += 1;
                }
            }
            if left == 0 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for &(i, pid) in &targets {
            if let Some(mut c) = self.children[i].take() {
                let _ = c.kill();
                let _ = c.wait();
            } else if pid_alive(pid)
                && cmdline_contains(pid, &self.manifest.nodes[i].data_dir.display().to_string())
            {
                send_signal(&[pid], "KILL");
            }
        }
    }

    /// Stops every node this testnet started (SIGTERM, then SIGKILL after
    /// [`STOP_DEADLINE`]) and marks them stopped in `testnet.json`. Returns how many nodes
    /// were still running.
    pub fn down(&mut self) -> usize {
        let running = self.alive().len();
        match self.manifest.mode {
            Mode::InProcess => {
                if let Some(rt) = self.rt.as_ref() {
                    let hs: Vec<NodeHandle> =
                        self.handles.iter_mut().filter_map(Option::take).collect();
                    rt.block_on(async {
                        let all = async {
                            let tasks: Vec<_> =
                                hs.into_iter().map(|h| tokio::spawn(h.shutdown())).collect();
                            for t in tasks {
                                let _ = t.await;
                            }
                        };
                        let _ = tokio::time::timeout(STOP_DEADLINE, all).await;
                    });
                } else {
                    // Another process hosts the nodes: ask it to stop.
                    let pid = self.manifest.controller_pid;
                    if pid != std::process::id()
                        && pid_alive(pid)
                        && cmdline_contains(pid, "testnet")
                    {
                        send_signal(&[pid], "TERM");
                        let deadline = Instant::now() + STOP_DEADLINE * 2;
                        while pid_alive(pid) && Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        if pid_alive(pid) && cmdline_contains(pid, "testnet") {
                            send_signal(&[pid], "KILL");
                        }
                    }
                }
            }
            Mode::Processes => {
                let all: Vec<usize> = (0..self.manifest.nodes.len()).collect();
                self.stop_processes(&all);
            }
        }
        for n in &mut self.manifest.nodes {
            n.alive = false;
        }
        self.stopped = true;
        let _ = self.save();
        running
    }

    /// Pids recorded for nodes that are still running (after [`Testnet::down`]: none).
    pub fn leftover_pids(&self) -> Vec<u32> {
        if self.manifest.mode == Mode::InProcess {
            return Vec::new();
        }
        self.manifest
            .nodes
            .iter()
            .filter_map(|n| {
                let pid = n.pid?;
                (pid_alive(pid) && cmdline_contains(pid, &n.data_dir.display().to_string()))
                    .then_some(pid)
            })
            .collect()
    }

    /// Blocks until SIGINT or SIGTERM (used by an in-process `testnet up`, whose nodes live
    /// in this process).
    pub fn wait_for_signal(&self) {
        let wait = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async {
                    match term.as_mut() {
                        Some(t) => { t.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
        };
        match self.rt.as_ref() {
            Some(rt) => rt.block_on(wait),
            None => {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(wait);
                }
            }
        }
    }

    /// Keeps the nodes running when this value is dropped (`testnet up` hands them over to
    /// `testnet.json`).
    pub fn detach(mut self) {
        self.stopped = true;
        for c in &mut self.children {
            // Dropping a Child neither kills nor waits; the nodes live on.
            c.take();
        }
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        if self.owned && !self.stopped {
            self.down();
        } else {
            // Reap restarted children that were stopped; leave running ones running.
            for c in self.children.iter_mut().flatten() {
                let _ = c.try_wait();
            }
        }
    }
}

/// A progress bar on stderr (hidden when `show` is false or stderr is not a terminal).
pub fn progress_bar(show: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(what.to_string());
    bar
}

/// Runs a node from the data dir named by [`CHILD_ENV`] until SIGTERM/SIGINT (then leaves
/// gracefully), or until the parent process goes away when [`CHILD_WATCH_PARENT_ENV`] is
/// set. Returns false at once when the variable is not set. Test binaries call this from a
/// test named in [`NodeProgram::test_harness`].
pub fn run_child_from_env() -> bool {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return false;
    };
    let dir = PathBuf::from(dir);
    let watch = std::env::var_os(CHILD_WATCH_PARENT_ENV).is_some();
    let parent = std::os::unix::process::parent_id();
    let cfg = match Config::load(&dir.join("config.toml")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("child node: {e}");
            std::process::exit(2);
        }
    };
    // One thread runs the node: hundreds of node processes share a few cores, and a
    // separate worker thread would add a cross-thread wake-up to every packet.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("child node: {e}");
            std::process::exit(2);
        }
    };
    rt.block_on(async move {
        let node = match peerlab_node::spawn(NodeOptions::new(&dir, cfg)).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("child node: {e}");
                std::process::exit(2);
            }
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let orphaned = async {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if watch && std::os::unix::process::parent_id() != parent {
                    return;
                }
            }
        };
        tokio::select! {
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = orphaned => {
                node.kill().await;
                std::process::exit(0);
            }
        }
        node.shutdown().await;
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_goes_through_live_earlier_seeds() {
        let all = |_| true;
        assert_eq!(bootstrap_through(0, 10, |_| false), Vec::<usize>::new());
        assert_eq!(bootstrap_through(1, 10, |s| s < 1), vec![0]);
        assert_eq!(bootstrap_through(2, 10, |s| s < 2), vec![0]);
        // Everyone else: two distinct seeds, spread by index.
        for i in SEEDS..10 {
            let t = bootstrap_through(i, 10, all);
            assert_eq!(t.len(), 2, "node {i}: {t:?}");
            assert_ne!(t[0], t[1]);
            assert!(t.iter().all(|&s| s < SEEDS));
        }
        // A dead first seed does not stop a join.
        assert_eq!(bootstrap_through(7, 10, |s| s != 0).len(), 2);
        assert!(!bootstrap_through(7, 10, |s| s != 0).contains(&0));
    }

    #[test]
    fn replica_peers_are_the_owner_then_distinct_successor_peers() {
        let peers: Vec<String> = (0..5)
            .map(|_| {
                peerlab_node::libp2p::identity::Keypair::generate_ed25519()
                    .public()
                    .to_peer_id()
                    .to_string()
            })
            .collect();
        let ring = IdealRing::new(peers.iter().map(String::as_str), 4);
        assert_eq!(ring.len(), 20);
        for k in 0..50 {
            let key = format!("k{k}");
            let r = ring.replica_peers(&key, 3);
            assert_eq!(r.len(), 3);
            assert_eq!(&r[0], &ring.owner(&key).unwrap().1, "owner first");
            assert!(r[0] != r[1] && r[1] != r[2] && r[0] != r[2]);
        }
        assert_eq!(
            ring.replica_peers("x", 9).len(),
            5,
            "no more than the peers"
        );
    }
}
