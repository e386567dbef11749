//! The `peerlab testnet …` commands: flags (clap) and what each prints.

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use peerlab_node::config::Transport;
use serde_json::json;

use crate::process::{
    MANIFEST, Mode, NodeProgram, TESTNET_GOSSIP_VIEW, Testnet, TestnetError, Timings, UpOptions,
    pid_alive,
};
use crate::process_churn;

/// Default testnet dir.
pub const DEFAULT_DIR: &str = "peerlab-testnet";

/// `--transport`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TransportArg {
    /// QUIC, with TCP beside it.
    Quic,
    /// TCP + Noise + Yamux only.
    Tcp,
}

/// The testnet dir flag shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct DirArg {
    /// The testnet dir (node data dirs and testnet.json).
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
}

/// `peerlab testnet up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Nodes to start.
    #[arg(long, default_value_t = 16)]
    pub nodes: usize,
    /// The testnet dir.
    #[command(flatten)]
    pub dir: DirArg,
    /// Transport.
    #[arg(long, value_enum, default_value_t = TransportArg::Quic)]
    pub transport: TransportArg,
    /// Virtual nodes per peer on the Chord ring.
    #[arg(long, default_value_t = 4)]
    pub vnodes: u16,
    /// Run every node inside this process (for larger N); the command then stays in the
    /// foreground until Ctrl-C or `testnet down`.
    #[arg(long)]
    pub in_process: bool,
    /// First port of a fixed range (node i: QUIC/TCP on BASE+i, API on BASE+N+i)
    /// [default: OS-assigned ports].
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Seconds to wait for the ring and membership to converge.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Seed of the nodes' protocol randomness.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// DHT maintenance period of a ring at rest and SWIM probe period, in ms (stabilize,
    /// fix fingers, probe; twice it for check-predecessor and repair; while the ring
    /// changes, DHT maintenance runs every 1000 ms) [default: 1000 up to 40 nodes, then
    /// 25 ms per node, so that hundreds of processes at rest do not saturate the machine].
    #[arg(long, value_name = "MS")]
    pub maintenance_ms: Option<u64>,
    /// Gossip round period of every node, in ms.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub gossip_interval_ms: u64,
    /// Gossip fan-out of every node.
    #[arg(long, value_name = "F", default_value_t = 3)]
    pub gossip_fanout: usize,
    /// Gossip partial view of every node: partners come from a random sample of K
    /// members (0 = all members, a full mesh of connections).
    #[arg(long, value_name = "K", default_value_t = TESTNET_GOSSIP_VIEW)]
    pub gossip_view: usize,
}

/// `peerlab testnet lookups`.
#[derive(Debug, Clone, Args)]
pub struct LookupsArgs {
    /// The testnet dir.
    #[command(flatten)]
    pub dir: DirArg,
    /// Lookups to issue.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Seed of the keys and the nodes asked.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `peerlab testnet converge`.
#[derive(Debug, Clone, Args)]
pub struct ConvergeArgs {
    /// The testnet dir.
    #[command(flatten)]
    pub dir: DirArg,
    /// Updates to publish, one after the other, each at a random node.
    #[arg(long, default_value_t = 5)]
    pub updates: usize,
    /// Gossip interval in ms; must be what the nodes run, which `testnet up
    /// --gossip-interval-ms` chose [default: the testnet's]. The simulator uses the same.
    #[arg(long, value_name = "MS")]
    pub interval: Option<u64>,
    /// Gossip fan-out; must be what the nodes run (`testnet up --gossip-fanout`)
    /// [default: the testnet's]. The simulator uses the same.
    #[arg(long, value_name = "F")]
    pub fanout: Option<usize>,
    /// Seed of the origins and of the simulator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the CSV and plots go [default: <dir>/results].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `peerlab testnet churn`.
#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    /// The testnet dir.
    #[command(flatten)]
    pub dir: DirArg,
    /// What churn to run.
    #[command(flatten)]
    pub params: process_churn::Params,
    /// Where the CSV and plots go [default: <dir>/results].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The `peerlab testnet` subcommands.
#[derive(Debug, Subcommand)]
pub enum TestnetCommand {
    /// Start N nodes on 127.0.0.1 and wait until the ring and membership converge.
    #[command(
        after_help = "Example:\n  peerlab testnet up --nodes 64 --dir /tmp/tn\n  \
        peerlab testnet up --nodes 1000 --in-process --dir /tmp/big"
    )]
    Up(UpArgs),
    /// Summarise the health of a running testnet.
    #[command(after_help = "Example:\n  peerlab testnet status --dir /tmp/tn")]
    Status(DirArg),
    /// Stop every node of the testnet (also after the controlling process died).
    #[command(after_help = "Example:\n  peerlab testnet down --dir /tmp/tn")]
    Down(DirArg),
    /// DHT lookups of random keys: hop distribution and latency against ½·log2 N.
    #[command(after_help = "Example:\n  peerlab testnet lookups --count 2000 --dir /tmp/tn")]
    Lookups(LookupsArgs),
    /// Gossip convergence: arrival CDF, rounds to 99 %/100 %, beside the simulator.
    #[command(after_help = "Example:\n  peerlab testnet converge --updates 10 --dir /tmp/tn")]
    Converge(ConvergeArgs),
    /// Poisson churn (SIGKILL and restarts) under a steady lookup/get workload.
    #[command(
        after_help = "Example:\n  peerlab testnet churn --rate 0.1 --duration 600 --dir /tmp/tn"
    )]
    Churn(ChurnArgs),
    /// Side by side with the systems users would pick instead (Serf).
    #[command(subcommand)]
    Compare(crate::compare::CompareCommand),
}

/// What a command printed: a human text and a JSON value.
#[derive(Debug)]
pub struct Output {
    /// Human text.
    pub text: String,
    /// JSON.
    pub json: serde_json::Value,
}

fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

impl TestnetCommand {
    /// Runs the command. `progress` shows progress bars on stderr.
    pub fn run(&self, progress: bool) -> Result<Output, TestnetError> {
        match self {
            TestnetCommand::Up(a) => up(a, progress),
            TestnetCommand::Status(d) => status(&d.dir),
            TestnetCommand::Down(d) => {
                let mut net = Testnet::attach(&d.dir, None)?;
                let n = net.down();
                let left = net.leftover_pids();
                if !left.is_empty() {
                    return Err(TestnetError::Failed(format!(
                        "processes still running after down: {left:?}"
                    )));
                }
                Ok(Output {
                    text: format!("stopped {n} nodes in {}\n", net.dir().display()),
                    json: json!({"stopped": n, "dir": net.dir()}),
                })
            }
            TestnetCommand::Lookups(a) => {
                let net = Testnet::attach(&a.dir.dir, None)?;
                let r = crate::measure::lookups(&net, a.count, a.seed)?;
                Ok(Output {
                    text: r.render_table(),
                    json: to_json(&r),
                })
            }
            TestnetCommand::Converge(a) => {
                let net = Testnet::attach(&a.dir.dir, None)?;
                let out = a.out.clone().unwrap_or_else(|| net.dir().join("results"));
                let r = crate::converge::run(&net, a.updates, a.interval, a.fanout, a.seed, &out)?;
                Ok(Output {
                    text: r.render_table(),
                    json: to_json(&r),
                })
            }
            TestnetCommand::Churn(a) => {
                let mut net = Testnet::attach(&a.dir.dir, Some(NodeProgram::current_peerlab()?))?;
                if net.manifest().mode == Mode::InProcess {
                    return Err(TestnetError::Invalid(
                        "churn kills and restarts node processes: start the testnet without --in-process".into(),
                    ));
                }
                let out = a.out.clone().unwrap_or_else(|| net.dir().join("results"));
                let r = process_churn::run(&mut net, &a.params, &out, progress)?;
                Ok(Output {
                    text: r.render_table(),
                    json: to_json(&r),
                })
            }
            TestnetCommand::Compare(crate::compare::CompareCommand::Serf(a)) => {
                let exe = NodeProgram::current_peerlab()?.exe;
                let path = std::env::var_os("PATH");
                let r = crate::compare::run_serf(a, exe, path.as_deref(), progress)?;
                Ok(Output {
                    text: r.render_table(),
                    json: to_json(&r),
                })
            }
        }
    }
}

fn up(a: &UpArgs, progress: bool) -> Result<Output, TestnetError> {
    let mode = if a.in_process {
        Mode::InProcess
    } else {
        Mode::Processes
    };
    let opts = UpOptions {
        nodes: a.nodes,
        dir: a.dir.dir.clone(),
        transport: match a.transport {
            TransportArg::Quic => Transport::Quic,
            TransportArg::Tcp => Transport::Tcp,
        },
        vnodes: a.vnodes,
        mode,
        base_port: a.base_port,
        program: match mode {
            Mode::Processes => Some(NodeProgram::current_peerlab()?),
            Mode::InProcess => None,
        },
        seed: a.seed,
        timings: Timings {
            maintenance_ms: a.maintenance_ms,
            gossip_interval_ms: a.gossip_interval_ms,
            gossip_fanout: a.gossip_fanout,
            gossip_view: a.gossip_view,
            probe_ms: None,
        },
    };
    let t = std::time::Instant::now();
    let net = Testnet::start(opts, progress)?;
    let started = t.elapsed().as_secs_f64();
    let h = net.wait_converged(Duration::from_secs(a.timeout), progress)?;
    let secs = t.elapsed().as_secs_f64();
    let text = format!(
        "{} nodes up and converged in {secs:.1} s (all started after {started:.1} s; {} ring \
         positions; total RSS {:.0} MiB)\n\
         testnet description: {}\n",
        h.expected,
        net.ideal_ring().len(),
        h.rss_kib as f64 / 1024.0,
        net.dir().join(MANIFEST).display()
    );
    let js = json!({"nodes": h.expected, "seconds": secs, "started_seconds": started, "rss_kib": h.rss_kib,
        "dir": net.dir(), "mode": mode});
    if mode == Mode::InProcess {
        // The nodes live in this process: serve until Ctrl-C / SIGTERM, then stop them.
        eprint!("{text}");
        eprintln!(
            "serving in the foreground; Ctrl-C or `peerlab testnet down --dir {}` stops it",
            net.dir().display()
        );
        net.wait_for_signal();
        let mut net = net;
        net.down();
    } else {
        net.detach();
    }
    Ok(Output { text, json: js })
}

fn status(dir: &std::path::Path) -> Result<Output, TestnetError> {
    let net = Testnet::attach(dir, None)?;
    let m = net.manifest();
    let alive = net.alive();
    let running = m
        .nodes
        .iter()
        .filter(|n| n.alive && n.pid.is_some_and(pid_alive))
        .count();
    let h = net.health();
    let text = format!(
        "testnet {} ({:?}, {:?}, {} vnodes each)\n\
         nodes recorded      {}\n\
         should be running   {}\n\
         processes alive     {running}\n\
         API reachable       {}\n\
         ring correct        {}\n\
         membership complete {}\n\
         total RSS           {:.0} MiB\n\
         converged           {}\n",
        net.dir().display(),
        m.mode,
        m.transport,
        m.vnodes,
        m.nodes.len(),
        alive.len(),
        h.reachable,
        h.ring_correct,
        h.membership_complete,
        h.rss_kib as f64 / 1024.0,
        if h.converged() { "yes" } else { "no" }
    );
    Ok(Output {
        text,
        json: json!({"dir": net.dir(), "nodes": m.nodes.len(), "expected": alive.len(),
            "processes_alive": running, "health": h, "converged": h.converged()}),
    })
}
