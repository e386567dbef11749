//! The `peerlab testnet …` commands: flags (clap) and what each prints.

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use peerlab_node::config::Transport;
use serde_json::json;

use crate::process::{
    Faults, HOSTS_FILE, Hosts, HostsOptions, LinkFaults, MANIFEST, Mode, NodeProgram,
    RemoteOptions, TESTNET_GOSSIP_VIEW, Testnet, TestnetError, Timings, UpOptions, parse_groups,
    parse_hosts, pid_alive, read_credentials, sweep_idle,
};
use crate::{process_churn, split};

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
    /// First port of a fixed range (node i: QUIC/TCP on BASE+i, API on BASE+N+i, probe
    /// datagrams on UDP BASE+2N+i) [default: OS-assigned ports].
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
    /// Spread the nodes over H emulated hosts: one network namespace each with its own
    /// address on a bridge (a free 10.77.X.0/24); node i runs on host i mod H + 1. Needs
    /// root, `ip`, `nft` and `tc`.
    #[arg(long, value_name = "H")]
    pub hosts: Option<usize>,
    /// Drop this percentage of the frames every host sends to other hosts (nftables
    /// `numgen random`; needs --hosts) [default: 0].
    #[arg(long, value_name = "PERCENT", requires = "hosts")]
    pub loss: Option<f64>,
    /// Limit every host's link to this many Mbit/s each way (`tc tbf`; needs --hosts)
    /// [default: unlimited].
    #[arg(long, value_name = "MBIT", requires = "hosts")]
    pub rate: Option<f64>,
    /// One-way delay every node adds to each frame it sends to a peer, ms (latency
    /// injected by the node; uniform in delay-ms ± delay-jitter-ms).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub delay_ms: u64,
    /// Spread of the injected delay, ms (at most --delay-ms).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub delay_jitter_ms: u64,
}

/// `peerlab testnet down`.
#[derive(Debug, Clone, Args)]
pub struct DownArgs {
    /// The testnet dir.
    #[command(flatten)]
    pub dir: DirArg,
    /// Also remove the emulated hosts of every other testnet on this machine whose
    /// namespaces hold no process (left behind by a testnet whose dir is gone).
    #[arg(long)]
    pub sweep: bool,
}

/// `peerlab testnet attach`.
#[derive(Debug, Clone, Args)]
pub struct AttachArgs {
    /// The testnet dir to write (testnet.json, mode 0600: it holds the tokens).
    #[command(flatten)]
    pub dir: DirArg,
    /// The nodes' credentials: one JSON line per node as `peerlab credentials` prints it
    /// ('-': standard input). The first --seeds lines are the nodes others bootstrap from.
    #[arg(long, value_name = "FILE")]
    pub credentials: PathBuf,
    /// Nodes at the head of the list that churn never crashes (the bootstrap nodes).
    #[arg(long, default_value_t = 1)]
    pub seeds: usize,
    /// The nodes' transport (what their --listen addresses use).
    #[arg(long, value_enum, default_value_t = TransportArg::Quic)]
    pub transport: TransportArg,
    /// Gossip round period the nodes run, in ms (`converge` compares with the simulator
    /// at it).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub gossip_interval_ms: u64,
    /// Gossip fan-out the nodes run.
    #[arg(long, value_name = "F", default_value_t = 3)]
    pub gossip_fanout: usize,
}

/// `peerlab testnet partition`.
#[derive(Debug, Clone, Args)]
pub struct PartitionArgs {
    /// The testnet dir.
    #[command(flatten)]
    pub dir: DirArg,
    /// Groups of hosts that cannot reach each other, separated by '/': `1-3/4-6`, `1,2/3`.
    /// Hosts in no group keep reaching everyone.
    #[arg(long)]
    pub groups: String,
}

/// `peerlab testnet impair`.
#[derive(Debug, Clone, Args)]
pub struct ImpairArgs {
    /// The testnet dir.
    #[command(flatten)]
    pub dir: DirArg,
    /// The hosts to change, e.g. `1-3,5` [default: all].
    #[arg(long, value_name = "LIST")]
    pub on: Option<String>,
    /// Percentage of the frames these hosts send to other hosts that is dropped (0: none).
    #[arg(long, value_name = "PERCENT")]
    pub loss: Option<f64>,
    /// Bandwidth of these hosts' links each way, Mbit/s (0: unlimited).
    #[arg(long, value_name = "MBIT")]
    pub rate: Option<f64>,
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
    /// Start N nodes on 127.0.0.1 (or on H emulated hosts) and wait until the ring and
    /// membership converge.
    #[command(
        after_help = "Example:\n  peerlab testnet up --nodes 64 --dir /tmp/tn\n  \
        peerlab testnet up --nodes 1000 --in-process --dir /tmp/big\n  \
        sudo peerlab testnet up --nodes 60 --hosts 6 --delay-ms 10 --dir /tmp/hosts"
    )]
    Up(UpArgs),
    /// Record nodes running on other hosts (a cluster's pods) as a testnet, from the
    /// credentials each printed with `peerlab credentials`; `status`, `lookups`,
    /// `converge` and `churn` then measure them over their TLS control APIs.
    #[command(after_help = "Example:\n  \
        for i in 0 1 2; do kubectl exec peerlab-$i -- peerlab credentials --address peerlab-$i.peerlab:7000; done > creds.jsonl\n  \
        peerlab testnet attach --credentials creds.jsonl --dir /tmp/cluster\n  \
        peerlab testnet lookups --dir /tmp/cluster")]
    Attach(AttachArgs),
    /// Summarise the health of a running testnet.
    #[command(after_help = "Example:\n  peerlab testnet status --dir /tmp/tn")]
    Status(DirArg),
    /// Stop every node of the testnet and remove its emulated hosts (also after the
    /// controlling process died).
    #[command(after_help = "Example:\n  peerlab testnet down --dir /tmp/tn")]
    Down(DownArgs),
    /// Cut the emulated hosts into groups that cannot reach each other (silent drops).
    #[command(after_help = "Example:\n  peerlab testnet partition --groups 1-3/4-6 --dir /tmp/tn")]
    Partition(PartitionArgs),
    /// Remove the partition between the emulated hosts.
    #[command(after_help = "Example:\n  peerlab testnet heal --dir /tmp/tn")]
    Heal(DirArg),
    /// Set packet loss and bandwidth of emulated hosts' links.
    #[command(
        after_help = "Example:\n  peerlab testnet impair --on 2,5 --loss 5 --rate 10 --dir /tmp/tn"
    )]
    Impair(ImpairArgs),
    /// Partition the hosts, write keys on both sides, heal: time until the ring and
    /// membership are whole again, keys lost, conflicting writes reconciled.
    #[command(
        after_help = "Example:\n  peerlab testnet split --groups 1-3/4-6 --seconds 60 --dir /tmp/tn"
    )]
    Split(split::Params),
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
            TestnetCommand::Attach(a) => attach(a),
            TestnetCommand::Status(d) => status(&d.dir),
            TestnetCommand::Down(a) => down(a),
            TestnetCommand::Partition(a) => {
                let mut net = Testnet::attach(&a.dir.dir, None)?;
                let count = hosts_of(&net)?.count;
                let groups = parse_groups(&a.groups, count)?;
                let mut f = hosts_of(&net)?.faults.clone();
                f.partition = groups.clone();
                net.set_faults(f)?;
                Ok(Output {
                    text: format!("partitioned the hosts into {}\n", render_groups(&groups)),
                    json: json!({"partition": groups}),
                })
            }
            TestnetCommand::Heal(d) => {
                let mut net = Testnet::attach(&d.dir, None)?;
                let mut f = hosts_of(&net)?.faults.clone();
                f.partition.clear();
                net.set_faults(f)?;
                Ok(Output {
                    text: "healed: every host reaches every other\n".into(),
                    json: json!({"partition": []}),
                })
            }
            TestnetCommand::Impair(a) => impair(a),
            TestnetCommand::Split(p) => {
                let mut net = Testnet::attach(&p.dir.dir, None)?;
                let r = split::run(&mut net, p, progress)?;
                Ok(Output {
                    text: r.render_table(),
                    json: to_json(&r),
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
                if net.manifest().mode == Mode::Remote && a.params.crash_fraction < 1.0 {
                    return Err(TestnetError::Invalid(
                        "nodes on other hosts can only be crashed (POST /crash), not signalled to leave: use --crash-fraction 1".into(),
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
            Mode::InProcess | Mode::Remote => None,
        },
        seed: a.seed,
        timings: Timings {
            maintenance_ms: a.maintenance_ms,
            gossip_interval_ms: a.gossip_interval_ms,
            gossip_fanout: a.gossip_fanout,
            gossip_view: a.gossip_view,
            probe_ms: None,
            delay_ms: a.delay_ms,
            delay_jitter_ms: a.delay_jitter_ms,
        },
        hosts: a.hosts.map(|count| HostsOptions {
            count,
            link: LinkFaults {
                loss: a.loss.map(|p| p / 100.0),
                rate_mbit: a.rate,
            },
        }),
    };
    let t = std::time::Instant::now();
    let net = Testnet::start(opts, progress)?;
    let started = t.elapsed().as_secs_f64();
    let h = net.wait_converged(Duration::from_secs(a.timeout), progress)?;
    let secs = t.elapsed().as_secs_f64();
    let text = format!(
        "{} nodes up and converged in {secs:.1} s (all started after {started:.1} s; {} ring \
         positions; total RSS {:.0} MiB, PSS {:.0} MiB; connected peers per node p50 {}, \
         p99 {}, max {})\n\
         testnet description: {}\n",
        h.expected,
        net.ideal_ring().len(),
        h.rss_kib as f64 / 1024.0,
        h.pss_kib as f64 / 1024.0,
        h.peers_p50,
        h.peers_p99,
        h.peers_max,
        net.dir().join(MANIFEST).display()
    );
    let js = json!({"nodes": h.expected, "seconds": secs, "started_seconds": started, "rss_kib": h.rss_kib,
        "pss_kib": h.pss_kib, "peers_p50": h.peers_p50, "peers_p99": h.peers_p99,
        "peers_max": h.peers_max, "dir": net.dir(), "mode": mode});
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

fn attach(a: &AttachArgs) -> Result<Output, TestnetError> {
    let creds = read_credentials(&a.credentials)?;
    if a.seeds == 0 || a.seeds > creds.len() {
        return Err(TestnetError::Invalid(format!(
            "--seeds must be in 1..={} (the nodes listed)",
            creds.len()
        )));
    }
    let opts = RemoteOptions {
        seeds: a.seeds,
        transport: match a.transport {
            TransportArg::Quic => Transport::Quic,
            TransportArg::Tcp => Transport::Tcp,
        },
        timings: Timings {
            gossip_interval_ms: a.gossip_interval_ms,
            gossip_fanout: a.gossip_fanout,
            ..Timings::default()
        },
    };
    let net = Testnet::attach_remote(&a.dir.dir, creds, opts)?;
    let text = format!(
        "attached {} nodes on other hosts ({} vnodes each; every API answered over TLS with its pinned certificate)\n\
         testnet description: {}\n",
        net.len(),
        net.manifest().vnodes,
        net.dir().join(MANIFEST).display()
    );
    Ok(Output {
        text,
        json: json!({"nodes": net.len(), "vnodes": net.manifest().vnodes, "dir": net.dir(), "mode": Mode::Remote}),
    })
}

fn hosts_of(net: &Testnet) -> Result<&Hosts, TestnetError> {
    net.hosts().ok_or_else(|| {
        TestnetError::Invalid(format!(
            "the testnet in {} runs on 127.0.0.1: faults between hosts need `testnet up --hosts H`",
            net.dir().display()
        ))
    })
}

/// `1-3 / 4-6` style text of partition groups.
pub fn render_groups(groups: &[Vec<usize>]) -> String {
    groups
        .iter()
        .map(|g| g.iter().map(usize::to_string).collect::<Vec<_>>().join(","))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn down(a: &DownArgs) -> Result<Output, TestnetError> {
    let swept = if a.sweep { sweep_idle()? } else { Vec::new() };
    let mut net = match Testnet::attach(&a.dir.dir, None) {
        Ok(net) => net,
        Err(TestnetError::NoTestnet(d)) => {
            // `up` may have died after building the hosts and before any node started.
            if let Some(h) = Hosts::load(&a.dir.dir)? {
                let left = h.destroy(&a.dir.dir);
                if !left.is_empty() {
                    return Err(TestnetError::Failed(format!(
                        "left after down: {}",
                        left.join(", ")
                    )));
                }
                return Ok(Output {
                    text: format!("removed the emulated hosts of {d} (no node had started)\n"),
                    json: json!({"stopped": 0, "dir": d, "hosts_removed": h.count}),
                });
            }
            if a.sweep {
                return Ok(Output {
                    text: format!("swept emulated hosts of subnets {swept:?}\n"),
                    json: json!({"stopped": 0, "swept": swept}),
                });
            }
            return Err(TestnetError::NoTestnet(d));
        }
        Err(e) => return Err(e),
    };
    if net.manifest().mode == Mode::Remote {
        let n = net.len();
        let file = net.dir().join(MANIFEST);
        std::fs::remove_file(&file).map_err(|e| TestnetError::Io {
            path: file.display().to_string(),
            msg: e.to_string(),
        })?;
        return Ok(Output {
            text: format!(
                "forgot {n} nodes on other hosts ({} removed); they keep running: their orchestrator stops them\n",
                file.display()
            ),
            json: json!({"stopped": 0, "forgotten": n, "dir": net.dir()}),
        });
    }
    let hosts = net.hosts().map(|h| h.count);
    let n = net.down();
    let left = net.leftover_pids();
    if !left.is_empty() {
        return Err(TestnetError::Failed(format!(
            "processes still running after down: {left:?}"
        )));
    }
    if !net.leftover_hosts().is_empty() {
        return Err(TestnetError::Failed(format!(
            "left after down: {} (see {HOSTS_FILE}; `peerlab testnet down --sweep` retries)",
            net.leftover_hosts().join(", ")
        )));
    }
    let mut text = format!("stopped {n} nodes in {}\n", net.dir().display());
    if let Some(h) = hosts {
        text.push_str(&format!(
            "removed {h} emulated hosts (namespaces, links, nftables table)\n"
        ));
    }
    Ok(Output {
        text,
        json: json!({"stopped": n, "dir": net.dir(), "hosts_removed": hosts, "swept": swept}),
    })
}

fn impair(a: &ImpairArgs) -> Result<Output, TestnetError> {
    let mut net = Testnet::attach(&a.dir.dir, None)?;
    let h = hosts_of(&net)?;
    let on = match &a.on {
        Some(l) => parse_hosts(l, h.count)?,
        None => (1..=h.count).collect(),
    };
    if a.loss.is_none() && a.rate.is_none() {
        return Err(TestnetError::Invalid(
            "name --loss PERCENT, --rate MBIT or both".into(),
        ));
    }
    let mut f: Faults = h.faults.clone();
    f.links.resize(h.count, LinkFaults::default());
    for &host in &on {
        let l = &mut f.links[host - 1];
        if let Some(p) = a.loss {
            l.loss = (p != 0.0).then_some(p / 100.0);
        }
        if let Some(r) = a.rate {
            l.rate_mbit = (r != 0.0).then_some(r);
        }
    }
    net.set_faults(f.clone())?;
    let text = on
        .iter()
        .map(|&h| {
            let l = f.links[h - 1];
            format!(
                "host {h}: loss {}, rate {}\n",
                l.loss
                    .map_or("none".into(), |p| format!("{:.2} %", p * 100.0)),
                l.rate_mbit
                    .map_or("unlimited".into(), |r| format!("{r} Mbit/s"))
            )
        })
        .collect();
    Ok(Output {
        text,
        json: json!({"hosts": on, "links": f.links}),
    })
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
    let (running_text, memory_text) = if m.mode == Mode::Remote {
        (
            "- (on other hosts)".to_string(),
            "- (on other hosts)".to_string(),
        )
    } else {
        (
            running.to_string(),
            format!(
                "{:.0} MiB (PSS {:.0} MiB)",
                h.rss_kib as f64 / 1024.0,
                h.pss_kib as f64 / 1024.0
            ),
        )
    };
    let text = format!(
        "testnet {} ({:?}, {:?}, {} vnodes each)\n\
         nodes recorded      {}\n\
         should be running   {}\n\
         processes alive     {running_text}\n\
         API reachable       {}\n\
         ring correct        {}\n\
         membership complete {}\n\
         total RSS           {memory_text}\n\
         peers per node      p50 {}, p99 {}, max {}\n\
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
        h.peers_p50,
        h.peers_p99,
        h.peers_max,
        if h.converged() { "yes" } else { "no" }
    );
    let mut text = text;
    if let Some(hosts) = net.hosts() {
        text.push_str(&format!(
            "emulated hosts      {} on 10.77.{}.0/24 (bridge {})\n\
             partition           {}\n",
            hosts.count,
            hosts.net,
            hosts.bridge(),
            if hosts.faults.partition.is_empty() {
                "none".into()
            } else {
                render_groups(&hosts.faults.partition)
            }
        ));
    }
    Ok(Output {
        text,
        json: json!({"dir": net.dir(), "nodes": m.nodes.len(), "expected": alive.len(),
            "processes_alive": (m.mode != Mode::Remote).then_some(running), "health": h, "converged": h.converged(),
            "hosts": net.hosts()}),
    })
}
