//! Local testnets: many real `peerlab` nodes on 127.0.0.1, or on emulated hosts (network
//! namespaces joined by a bridge, see `hosts`).
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
//! # Layout
//!
//! - `mod.rs`: [`Testnet`] itself — start, attach, the nodes' records — and its errors.
//! - `control.rs`: starting, stopping and killing node processes (or in-process nodes);
//!   [`NodeProgram`], how a node process is run; [`run_child_from_env`], the child side.
//! - `node_config.rs`: what every node runs with ([`Timings`], connection limits, ports)
//!   and whom it bootstraps through ([`bootstrap_through`]).
//! - `testnet_file.rs`: `testnet.json` ([`Manifest`], [`NodeRecord`]), which lets another
//!   process find and stop every node the testnet started.
//! - `health.rs`: [`Health`], the convergence check and the wait for it.
//! - `ring.rs`: the ideal ring of the live nodes ([`peerlab_dht::IdealRing`]), the one
//!   oracle lookups, replica sets and ring views are judged against.
//! - `hosts/`: emulated hosts ([`Hosts`]): namespaces, the bridge, and the faults between
//!   hosts (partitions, loss, bandwidth) as nftables rules and token buckets.
//! - `remote.rs`: nodes on other hosts ([`Mode::Remote`], `testnet attach`): credentials
//!   checked over TLS, crash through the API, restarts by their orchestrator.
//! - `probes.rs`: what the OS says — open-file limits, pids, resident memory — and the
//!   [`preflight`] check that the machine can host the testnet.

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;

use peerlab_node::NodeHandle;
use peerlab_node::client::Client;
use peerlab_node::config::Transport;

mod control;
mod health;
mod hosts;
mod node_config;
mod probes;
mod remote;
mod ring;
mod testnet_file;

pub use control::{
    CHILD_ENV, CHILD_WATCH_PARENT_ENV, NodeProgram, REMOTE_RETURN_DEADLINE, SPAWN_BATCH,
    START_DEADLINE, STOP_DEADLINE, run_child_from_env,
};
pub use health::{CHECK_PERIOD_PER_NODE, Health};
pub use hosts::{
    Faults, HOST_IFACE, HOST_OFFSET, HOSTS_FILE, Hosts, HostsOptions, LOSS_RESOLUTION, LinkFaults,
    MAX_HOSTS, MAX_RATE_MBIT, MIN_RATE_MBIT, Names, PROGRAMS, SUBNET_PREFIX, TBF_LATENCY_MS,
    find_program, hosts_preflight, is_root, nft_script, parse_groups, parse_hosts, sweep_idle,
    tbf_args, validate_link,
};
pub use node_config::{
    BASE_MAINTENANCE_MS, IN_PROCESS_IDLE_TIMEOUT_SECS, NODES_PER_BASE_PERIOD, TESTNET_GOSSIP_VIEW,
    TESTNET_IDLE_TIMEOUT_SECS, TESTNET_SPARE_CONNECTIONS, Timings, bootstrap_through,
};
pub use probes::{
    FDS_PER_IN_PROCESS_NODE, FDS_PER_PROCESS, cmdline_contains, fd_limits, pid_alive, preflight,
    pss_kib, rss_kib,
};
pub use remote::{
    Credentials, MAX_CREDENTIALS_LINE, MAX_REMOTE_NODES, RemoteOptions, parse_credentials,
    read_credentials,
};
pub use ring::{core_peer_id, ideal_ring, key_owner, view_is_ideal};
pub use testnet_file::{MANIFEST, Manifest, Mode, NodeRecord};

/// Largest testnet: beyond this the machine, not the overlay, is what gets measured.
pub const MAX_NODES: usize = 2000;
/// Seed nodes (node 0 and the first nodes that joined through it) others bootstrap from.
pub const SEEDS: usize = 3;
/// Threads polling node APIs at once in health checks and measurements.
pub const POLL_THREADS: usize = 16;

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

/// Writes `value` as pretty JSON to `dir/name` atomically (a temporary file, then a rename).
fn save_json(dir: &Path, name: &str, value: &impl serde::Serialize) -> Result<(), TestnetError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let text = serde_json::to_string_pretty(value).map_err(|e| TestnetError::Io {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    // Private: `testnet.json` holds every node's API token.
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io_err(&path))
}

/// Polls `f` every 100 ms until it yields a value, or fails with a timeout naming `what`
/// once `within` has passed.
pub(crate) fn wait_until<T>(
    what: &str,
    within: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, TestnetError> {
    let t = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if t.elapsed() > within {
            return Err(TestnetError::Timeout {
                what: what.into(),
                secs: within.as_secs_f64(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Creates `dir` (mode 0700: it will hold API tokens) if it does not exist.
fn private_dir(dir: &Path) -> Result<(), TestnetError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TestnetError + '_ {
    move |e| TestnetError::Io {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
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
    /// Emulated hosts to spread the nodes over (processes only); `None`: every node on
    /// 127.0.0.1.
    pub hosts: Option<HostsOptions>,
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
    /// The emulated hosts (`hosts.json`), until `down` removed them.
    hosts: Option<Hosts>,
    /// What `down` could not remove of the emulated hosts.
    hosts_left: Vec<String>,
    stopped: bool,
    /// Started by this value (dropping it stops the nodes) rather than attached to.
    owned: bool,
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
        if opts.mode == Mode::Remote {
            return Err(TestnetError::Invalid(
                "nodes on other hosts are started by their orchestrator; `testnet attach` records them".into(),
            ));
        }
        if opts.hosts.is_some() && opts.mode == Mode::InProcess {
            return Err(TestnetError::Invalid(
                "--hosts runs every node as a process inside its host's namespace: leave out --in-process".into(),
            ));
        }
        if let Some(h) = &opts.hosts
            && h.count > opts.nodes
        {
            return Err(TestnetError::Invalid(format!(
                "--hosts {} is more than --nodes {}: a host without a node measures nothing",
                h.count, opts.nodes
            )));
        }
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
        // What a dead testnet in this dir left of its hosts goes before new ones come.
        if let Some(old) = Hosts::load(&dir)? {
            let left = old.destroy(&dir);
            if !left.is_empty() {
                return Err(TestnetError::Failed(format!(
                    "emulated hosts of an earlier testnet in {} could not be removed: {}",
                    dir.display(),
                    left.join(", ")
                )));
            }
        }
        let hosts = match &opts.hosts {
            Some(h) => Some(Hosts::create(&dir, h.count, h.link)?),
            None => None,
        };
        let rt = match opts.mode {
            Mode::InProcess => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| TestnetError::Resources(format!("tokio runtime: {e}")))?,
            ),
            Mode::Processes | Mode::Remote => None,
        };
        let nodes = (0..opts.nodes)
            .map(|i| NodeRecord {
                index: i,
                data_dir: dir.join(format!("node-{i:04}")),
                peer_id: String::new(),
                api: String::new(),
                token: String::new(),
                api_cert: None,
                listen_addrs: Vec::new(),
                pid: None,
                alive: false,
                seed: i < SEEDS,
                host: hosts.as_ref().map(|h| h.host_of(i)),
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
            hosts,
            hosts_left: Vec::new(),
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

    /// Attaches to the testnet described in `dir` (started by another process).
    pub fn attach(dir: &Path, program: Option<NodeProgram>) -> Result<Testnet, TestnetError> {
        let dir = fs::canonicalize(dir)
            .map_err(|_| TestnetError::NoTestnet(dir.display().to_string()))?;
        let manifest = Manifest::load(&dir)?;
        let hosts = Hosts::load(&dir)?;
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
            hosts,
            hosts_left: Vec::new(),
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

    /// The emulated hosts, if the nodes run on some.
    pub fn hosts(&self) -> Option<&Hosts> {
        self.hosts.as_ref()
    }

    /// Replaces the faults between the emulated hosts (applied at once, recorded in
    /// `hosts.json`).
    pub fn set_faults(&mut self, faults: Faults) -> Result<(), TestnetError> {
        let dir = self.dir.clone();
        let h = self.hosts.as_mut().ok_or_else(|| {
            TestnetError::Invalid(format!(
                "the testnet in {} runs on 127.0.0.1: faults between hosts need `testnet up --hosts H`",
                dir.display()
            ))
        })?;
        h.set_faults(&dir, faults)
    }

    /// What `down` could not remove of the emulated hosts (empty: everything went).
    pub fn leftover_hosts(&self) -> &[String] {
        &self.hosts_left
    }

    /// A blocking API client of node `i`.
    pub fn client(&self, i: usize) -> Client {
        let n = &self.manifest.nodes[i];
        match &n.api_cert {
            Some(pem) => Client::pinned(&n.api, &n.token, pem),
            None => Client::new(&n.api, &n.token),
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
