//! `peerlab sim startup`: `testnet up` in the simulator — how long a testnet's ring and
//! membership take to converge from a cold start.
//!
//! Every node runs the full stack (`node::Peer`) with exactly the configuration
//! `testnet up` gives it ([`Timings::apply`] on the LAN node profile, the same
//! [`bootstrap_through`] seeds), and the nodes start one after another over
//! `--start-secs`, as a testnet's processes do. The run reports when every node had joined,
//! when every virtual node's successor and predecessor were the ideal ones (the
//! testnet's *ring correct*), when every node held every other as a live member, and the
//! message counts spent on the way. Because it is deterministic, a slow convergence seen
//! on a real testnet can be reproduced here, taken apart and fixed — the real machine adds
//! scheduling delays, which `--latency-ms` stands in for.
//!
//! With `--rest-secs S` the run goes on after convergence: [`REST_SETTLE`] to settle, as
//! `testnet compare serf` waits, then `S` seconds at rest, for which it reports the
//! messages and payload bytes each node sends per second, by message kind — what a
//! testnet at rest spends its bytes on, without the real machine's run-to-run spread.

use std::collections::BTreeMap;
use std::time::{Duration, Instant as WallInstant};

use clap::Args;
use peerlab_node::config::{Config, Transport};
use peerlab_node::peer::{Command, Peer};
use peerlab_overlay::{Id, Keypair, PeerId};
use peerlab_swarm::MemoryFactory;
use serde::Serialize;

use super::chord::SIM_EPOCH_US;
use super::{ExperimentError, invalid};
use crate::process::{Timings, bootstrap_through};
use peerlab_sim::{Latency, Sim, SimConfig};

/// Simulated time between two convergence checks.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Simulated time between two points of the reported series.
const SERIES_EVERY: Duration = Duration::from_secs(10);
/// Message kinds listed in the report.
const TOP_KINDS: usize = 6;
/// Simulated time between convergence and the window at rest (`--rest-secs`): the settle
/// time of `testnet compare serf`, so that both measure the same stretch of a testnet's
/// life.
pub const REST_SETTLE: Duration = Duration::from_secs(15);
/// Upper bound on `--rest-secs`.
const MAX_REST_SECS: u64 = 3600;
/// Upper bound on nodes (a testnet's own limit).
const MAX_NODES: usize = crate::process::MAX_NODES;
/// Upper bound on the simulated run, seconds: a day of virtual time is far beyond any
/// start-up worth measuring.
const MAX_TIMEOUT_SECS: u64 = 86_400;

/// Parameters of `peerlab sim startup`.
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// Nodes in the testnet.
    #[arg(long, default_value_t = 300)]
    pub nodes: usize,
    /// Virtual nodes per node.
    #[arg(long, default_value_t = 4)]
    pub vnodes: u16,
    /// Seconds over which the nodes start, evenly spaced (a real 300-process testnet
    /// starts its nodes in about 20 s).
    #[arg(long, default_value_t = 20.0)]
    pub start_secs: f64,
    /// DHT maintenance period, ms (default: chosen from N as `testnet up` does).
    #[arg(long)]
    pub maintenance_ms: Option<u64>,
    /// Gossip partial view (0: partners from all members).
    #[arg(long, default_value_t = crate::process::TESTNET_GOSSIP_VIEW)]
    pub gossip_view: usize,
    /// SWIM probe period, ms (default: the maintenance period, as `testnet up` does;
    /// `testnet compare serf` uses memberlist's 1000).
    #[arg(long)]
    pub probe_ms: Option<u64>,
    /// One-way message latency, ms (stands in for a loaded machine's scheduling delay).
    #[arg(long, default_value_t = 2)]
    pub latency_ms: u64,
    /// After convergence, settle 15 s and report S seconds at rest: messages and payload
    /// bytes per node and second, by message kind (0: stop at convergence).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub rest_secs: u64,
    /// Give up after this many simulated seconds.
    #[arg(long, default_value_t = 1200)]
    pub timeout_secs: u64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One point of the convergence series.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Simulated seconds since the first node started.
    pub secs: f64,
    /// Nodes whose DHT has joined.
    pub joined: usize,
    /// Nodes whose every vnode has its ideal successor and predecessor.
    pub ring_correct: usize,
    /// Nodes that hold every other node as a live member.
    pub members_complete: usize,
}

/// What `peerlab sim startup` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Nodes.
    pub nodes: usize,
    /// Virtual nodes per node.
    pub vnodes: u16,
    /// DHT maintenance period used, ms.
    pub maintenance_ms: u64,
    /// One-way latency, ms.
    pub latency_ms: u64,
    /// Seed.
    pub seed: u64,
    /// Seconds until every node had joined the ring.
    pub all_joined_secs: Option<f64>,
    /// Seconds until every node's ring view was the ideal ring.
    pub ring_correct_secs: Option<f64>,
    /// Seconds until every node held every other as a live member.
    pub members_complete_secs: Option<f64>,
    /// Seconds until both held (the testnet's *converged*).
    pub converged_secs: Option<f64>,
    /// Messages sent per node until convergence (or the timeout).
    pub messages_per_node: f64,
    /// The most sent message kinds, with messages per node.
    pub top_kinds: Vec<(String, f64)>,
    /// Peers each node exchanged a message with, either way, until convergence (or the
    /// timeout): the connections it would hold if none were closed. `[p50, p99, max]`
    /// over the nodes.
    pub contacts_per_node: [u64; 3],
    /// The message kinds that made those contacts, per node (the kind of the first
    /// message between two peers, as the nodes' `peerlab_dials_total{kind}` counts the
    /// message a connection was dialled for), most first.
    pub dials_per_node: Vec<(String, f64)>,
    /// Ring and membership every [`SERIES_EVERY`].
    pub series: Vec<Point>,
    /// The window at rest (`--rest-secs`), if one was run after convergence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rest: Option<Rest>,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// Simulator events processed.
    pub events: u64,
    /// Wall-clock seconds (the only key that differs between runs with the same seed).
    pub wall_seconds: f64,
}

/// What the nodes sent in the window at rest.
#[derive(Debug, Clone, Serialize)]
pub struct Rest {
    /// Length of the window, simulated seconds.
    pub secs: u64,
    /// Messages per node and second.
    pub messages_per_node_per_sec: f64,
    /// Payload bytes (frame lengths) per node and second.
    pub bytes_per_node_per_sec: f64,
    /// Per message kind, most bytes first: (kind, messages per node and second, bytes per
    /// node and second, new contacts per node in the window).
    pub kinds: Vec<(String, f64, f64, f64)>,
    /// Pairs of peers that exchanged their first message in the window, per node (each
    /// one a connection dialled at rest, as far as connections were kept).
    pub new_contacts_per_node: f64,
}

fn validate(p: &Params) -> Result<(), ExperimentError> {
    if p.nodes < 2 || p.nodes > MAX_NODES {
        return invalid(format!("--nodes must be in 2..={MAX_NODES}"));
    }
    if p.vnodes == 0 {
        return invalid("--vnodes must be at least 1");
    }
    if !(p.start_secs.is_finite() && (0.0..=3600.0).contains(&p.start_secs)) {
        return invalid("--start-secs must be in 0..=3600");
    }
    if p.timeout_secs == 0 || p.timeout_secs > MAX_TIMEOUT_SECS {
        return invalid(format!("--timeout-secs must be in 1..={MAX_TIMEOUT_SECS}"));
    }
    if p.latency_ms > 10_000 {
        return invalid("--latency-ms must be at most 10000");
    }
    if p.rest_secs > MAX_REST_SECS {
        return invalid(format!("--rest-secs must be at most {MAX_REST_SECS}"));
    }
    if p.probe_ms == Some(0) {
        return invalid("--probe-ms must be at least 1");
    }
    Ok(())
}

/// The node configuration `testnet up` would give node `i` of `p.nodes`, bootstrap aside.
fn node_config(p: &Params, timings: &Timings) -> Config {
    let mut cfg = Config::local(Transport::Quic);
    cfg.vnodes = p.vnodes;
    timings.apply(&mut cfg, p.nodes);
    cfg
}

/// Ring positions of every node, sorted: (vnode id, owner).
fn ideal_ring(sim: &Sim<Peer<MemoryFactory>>) -> Vec<(Id, PeerId)> {
    let mut ring: Vec<(Id, PeerId)> = sim
        .cores()
        .flat_map(|(p, c)| c.dht().vnode_ids().into_iter().map(move |v| (v, p)))
        .collect();
    ring.sort();
    ring
}

/// (joined, ring correct, members complete) node counts.
fn census(sim: &Sim<Peer<MemoryFactory>>, ring: &[(Id, PeerId)]) -> (usize, usize, usize) {
    let n = ring.len();
    let pos: BTreeMap<Id, usize> = ring.iter().enumerate().map(|(i, (v, _))| (*v, i)).collect();
    let peers = sim.cores().count();
    let (mut joined, mut correct, mut complete) = (0, 0, 0);
    for (_, core) in sim.cores() {
        let dht = core.dht();
        if dht.is_joined() {
            joined += 1;
        }
        let ideal = dht.vnode_ids().iter().all(|id| {
            let (Some(view), Some(&i)) = (dht.vnode(id), pos.get(id)) else {
                return false;
            };
            view.joined
                && view.succs.first().map(|s| s.id) == Some(ring[(i + 1) % n].0)
                && view.pred.map(|p| p.id) == Some(ring[(i + n - 1) % n].0)
        });
        if ideal {
            correct += 1;
        }
        let up = core
            .gossip()
            .members()
            .filter(|(_, m)| m.state.is_up())
            .count();
        if up + 1 >= peers {
            complete += 1;
        }
    }
    (joined, correct, complete)
}

/// Runs the experiment.
///
/// # Errors
/// [`ExperimentError::InvalidArgument`] for bad parameters.
pub fn run(p: &Params) -> Result<Report, ExperimentError> {
    validate(p)?;
    #[allow(clippy::disallowed_methods)] // wall time is reported, never fed to a core
    let wall = WallInstant::now();
    let timings = Timings {
        maintenance_ms: p.maintenance_ms,
        gossip_view: p.gossip_view,
        probe_ms: p.probe_ms,
        ..Timings::default()
    };
    let node_cfg = node_config(p, &timings);
    node_cfg
        .validate()
        .map_err(|e| ExperimentError::InvalidArgument(e.to_string()))?;
    let base = node_cfg.peer_config();
    let mut sim: Sim<Peer<MemoryFactory>> = Sim::new(SimConfig {
        seed: p.seed,
        latency: Latency::Fixed(Duration::from_millis(p.latency_ms)),
        ..Default::default()
    });
    sim.track_contacts();
    let ids: Vec<PeerId> = (0..p.nodes as u64).map(PeerId::synthetic).collect();
    // Member signatures verified by any simulated peer (a pure function, so shared).
    let verified = peerlab_gossip::VerifiedRecords::new(super::gossip::VERIFIED_MEMO);
    // Whole microseconds: protocol time has no finer grain, so a finer spacing would never
    // be reached.
    let spacing = Duration::from_micros((p.start_secs * 1e6 / p.nodes as f64) as u64);
    let timeout = Duration::from_secs(p.timeout_secs);
    let (mut all_joined, mut ring_at, mut members_at, mut converged) = (None, None, None, None);
    let mut series = Vec::new();
    let mut next_point = Duration::ZERO;
    let mut started = 0;
    let mut next_check = Duration::ZERO;
    loop {
        let now = Duration::from_micros(sim.now().as_micros());
        // Start every node whose time has come.
        while started < p.nodes && spacing * started as u32 <= now {
            let i = started;
            let mut cfg = base.clone();
            // Nodes start in index order: the seeds before `i` are up.
            let through = bootstrap_through(i, p.nodes, |s| s < i);
            cfg.create_ring = through.is_empty();
            let mut core = Peer::new(Keypair::synthetic(i as u64), cfg, MemoryFactory)
                .map_err(|e| ExperimentError::InvalidArgument(e.to_string()))?;
            core.dht_mut().set_clock_offset(SIM_EPOCH_US);
            core.share_verified(verified.clone());
            sim.add_node(ids[i], core);
            if !through.is_empty() {
                sim.command(
                    ids[i],
                    Command::Bootstrap(through.iter().map(|&s| ids[s]).collect()),
                );
            }
            started += 1;
        }
        if now >= next_check {
            next_check = now + CHECK_EVERY;
            let ring = ideal_ring(&sim);
            let (joined, correct, complete) = census(&sim, &ring);
            let secs = now.as_secs_f64();
            let full = started == p.nodes;
            if now >= next_point {
                next_point = now + SERIES_EVERY;
                series.push(Point {
                    secs,
                    joined,
                    ring_correct: correct,
                    members_complete: complete,
                });
            }
            if full && joined == p.nodes {
                all_joined.get_or_insert(secs);
            }
            if full && correct == p.nodes {
                ring_at.get_or_insert(secs);
            } else {
                ring_at = None;
            }
            if full && complete == p.nodes {
                members_at.get_or_insert(secs);
            } else {
                members_at = None;
            }
            if ring_at.is_some() && members_at.is_some() {
                converged = Some(secs);
                series.push(Point {
                    secs,
                    joined,
                    ring_correct: correct,
                    members_complete: complete,
                });
                break;
            }
            if now >= timeout {
                break;
            }
        }
        let next_start = if started < p.nodes {
            spacing * started as u32
        } else {
            Duration::MAX
        };
        let until = next_check.min(next_start);
        sim.run_until(peerlab_overlay::Instant::ZERO + until);
        // Nobody reads the cores' events here; dropping them keeps the buffer small.
        drop(sim.take_events());
    }
    let converged_at = sim.now();
    let mut contacts: Vec<u64> = ids
        .iter()
        .filter_map(|id| sim.node_stats(id))
        .map(|s| s.contacts)
        .collect();
    let stats = sim.stats().clone();
    let rest =
        (converged.is_some() && p.rest_secs > 0).then(|| rest_window(&mut sim, &ids, p.rest_secs));
    let stats = &stats;
    let n = p.nodes as f64;
    let mut top_kinds: Vec<(String, f64)> = stats
        .kinds
        .iter()
        .map(|(k, s)| (k.to_string(), s.sent as f64 / n))
        .collect();
    top_kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
    top_kinds.truncate(TOP_KINDS);
    let mut dials: Vec<(String, f64)> = stats
        .kinds
        .iter()
        .filter(|(_, s)| s.first_contacts > 0)
        .map(|(k, s)| (k.to_string(), s.first_contacts as f64 / n))
        .collect();
    dials.sort_by(|a, b| b.1.total_cmp(&a.1));
    contacts.sort_unstable();
    let at = |q: f64| {
        let i = ((contacts.len() as f64 * q).ceil() as usize).saturating_sub(1);
        contacts.get(i).copied().unwrap_or(0)
    };
    Ok(Report {
        nodes: p.nodes,
        vnodes: p.vnodes,
        maintenance_ms: timings.maintenance_for(p.nodes),
        latency_ms: p.latency_ms,
        seed: p.seed,
        all_joined_secs: all_joined,
        ring_correct_secs: ring_at,
        members_complete_secs: members_at,
        converged_secs: converged,
        messages_per_node: stats.total.sent as f64 / n,
        top_kinds,
        contacts_per_node: [at(0.5), at(0.99), contacts.last().copied().unwrap_or(0)],
        dials_per_node: dials,
        series,
        rest,
        sim_seconds: converged_at.as_secs_f64(),
        events: sim.events_processed(),
        wall_seconds: wall.elapsed().as_secs_f64(),
    })
}

/// Runs the settle time and the window at rest after convergence.
fn rest_window(sim: &mut Sim<Peer<MemoryFactory>>, ids: &[PeerId], secs: u64) -> Rest {
    sim.run_for(REST_SETTLE);
    drop(sim.take_events());
    let before = sim.stats().clone();
    let contacts_before: u64 = ids
        .iter()
        .filter_map(|id| sim.node_stats(id))
        .map(|s| s.contacts)
        .sum();
    // In steps, dropping the cores' events as the start-up loop does.
    let end = sim.now() + Duration::from_secs(secs);
    while sim.now() < end {
        let step = (sim.now() + CHECK_EVERY).min(end);
        sim.run_until(step);
        drop(sim.take_events());
    }
    let after = sim.stats();
    let per = (ids.len() as u64 * secs) as f64;
    let n = ids.len() as f64;
    let mut kinds: Vec<(String, f64, f64, f64)> = after
        .kinds
        .iter()
        .map(|(k, a)| {
            let b = before.kinds.get(k).copied().unwrap_or_default();
            (
                k.to_string(),
                (a.sent - b.sent) as f64 / per,
                (a.sent_bytes - b.sent_bytes) as f64 / per,
                (a.first_contacts - b.first_contacts) as f64 / n,
            )
        })
        .filter(|(_, m, _, _)| *m > 0.0)
        .collect();
    kinds.sort_by(|a, b| b.2.total_cmp(&a.2));
    let contacts_after: u64 = ids
        .iter()
        .filter_map(|id| sim.node_stats(id))
        .map(|s| s.contacts)
        .sum();
    Rest {
        secs,
        messages_per_node_per_sec: (after.total.sent - before.total.sent) as f64 / per,
        bytes_per_node_per_sec: (after.total.sent_bytes - before.total.sent_bytes) as f64 / per,
        kinds,
        // Each new pair counts once at both of its ends.
        new_contacts_per_node: (contacts_after - contacts_before) as f64 / 2.0 / n,
    }
}

impl Report {
    /// A short human-readable table.
    pub fn render_table(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("never".to_string(), |v| format!("{v:.1} s"));
        let mut t = format!(
            "simulated testnet start: {} nodes × {} vnodes, maintenance {} ms, latency {} ms, seed {}\n\
             all joined            {}\n\
             ring correct          {}\n\
             members complete      {}\n\
             converged             {}\n\
             messages per node     {:.0} ({})\n\
             contacts per node     p50 {}, p99 {}, max {} (made by {})\n",
            self.nodes,
            self.vnodes,
            self.maintenance_ms,
            self.latency_ms,
            self.seed,
            opt(self.all_joined_secs),
            opt(self.ring_correct_secs),
            opt(self.members_complete_secs),
            opt(self.converged_secs),
            self.messages_per_node,
            self.top_kinds
                .iter()
                .map(|(k, v)| format!("{k} {v:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.contacts_per_node[0],
            self.contacts_per_node[1],
            self.contacts_per_node[2],
            self.dials_per_node
                .iter()
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        if let Some(r) = &self.rest {
            t.push_str(&format!(
                "at rest ({} s, after {} s)  {:.2} messages, {:.0} B per node and second;                  new contacts {:.2} per node\n",
                r.secs,
                REST_SETTLE.as_secs(),
                r.messages_per_node_per_sec,
                r.bytes_per_node_per_sec,
                r.new_contacts_per_node,
            ));
            for (k, m, b, c) in &r.kinds {
                t.push_str(&format!(
                    "  {k:<28} {m:>7.3} msg/s {b:>8.1} B/s {c:>6.2} new contacts\n"
                ));
            }
        }
        t.push_str("  secs  joined  ring-correct  members-complete\n");
        for pt in &self.series {
            t.push_str(&format!(
                "{:>6.0}  {:>6}  {:>12}  {:>16}\n",
                pt.secs, pt.joined, pt.ring_correct, pt.members_complete
            ));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(nodes: usize, latency_ms: u64) -> Params {
        Params {
            nodes,
            vnodes: 4,
            start_secs: 5.0,
            maintenance_ms: None,
            gossip_view: crate::process::TESTNET_GOSSIP_VIEW,
            probe_ms: None,
            latency_ms,
            rest_secs: 0,
            timeout_secs: 600,
            seed: 7,
        }
    }

    #[test]
    fn bad_parameters_are_rejected() {
        for p in [
            Params {
                nodes: 1,
                ..params(2, 2)
            },
            Params {
                vnodes: 0,
                ..params(8, 2)
            },
            Params {
                start_secs: f64::NAN,
                ..params(8, 2)
            },
            Params {
                timeout_secs: 0,
                ..params(8, 2)
            },
            Params {
                rest_secs: 3601,
                ..params(8, 2)
            },
            Params {
                probe_ms: Some(0),
                ..params(8, 2)
            },
        ] {
            assert!(matches!(run(&p), Err(ExperimentError::InvalidArgument(_))));
        }
    }

    #[test]
    fn a_small_testnet_converges_and_the_run_is_deterministic() {
        let a = run(&params(24, 2)).expect("runs");
        let c = a.converged_secs.expect("24 nodes converge");
        assert!(
            c >= 5.0,
            "cannot converge before the last node started: {c}"
        );
        assert!(a.ring_correct_secs.is_some() && a.members_complete_secs.is_some());
        let b = run(&params(24, 2)).expect("runs");
        assert_eq!(a.converged_secs, b.converged_secs);
        assert_eq!(a.messages_per_node, b.messages_per_node);
        let last = a.series.last().expect("a point at convergence");
        assert_eq!((last.ring_correct, last.members_complete), (24, 24));
        assert_eq!(a.contacts_per_node, b.contacts_per_node);
    }

    #[test]
    fn the_window_at_rest_reports_what_each_node_sends_per_second() {
        let p = Params {
            probe_ms: Some(500),
            rest_secs: 30,
            ..params(24, 2)
        };
        let r = run(&p).expect("runs");
        let rest = r.rest.expect("converged, so the window at rest ran");
        assert_eq!(rest.secs, 30);
        let kinds: f64 = rest.kinds.iter().map(|(_, _, b, _)| b).sum();
        assert!(
            (kinds - rest.bytes_per_node_per_sec).abs() < 1e-6,
            "kinds {kinds} against the total {}",
            rest.bytes_per_node_per_sec
        );
        // Every node probes one member per probe period, at rest as ever.
        let pings = rest
            .kinds
            .iter()
            .find(|(k, ..)| k == "gossip_ping")
            .map_or(0.0, |(_, m, ..)| *m);
        assert!(
            (1.8..=2.2).contains(&pings),
            "{pings} probes per node and second"
        );
        // The start-up figures stop at convergence, whatever follows.
        let plain = run(&Params { rest_secs: 0, ..p }).expect("runs");
        assert_eq!(plain.contacts_per_node, r.contacts_per_node);
        assert_eq!(plain.converged_secs, r.converged_secs);
        assert!(plain.rest.is_none());
    }

    #[test]
    fn contacts_are_counted_per_pair_and_attributed_to_the_kinds_that_made_them() {
        let r = run(&params(24, 2)).expect("runs");
        let [p50, p99, max] = r.contacts_per_node;
        // Every node talks at least to its successor and predecessor, at most to all.
        assert!(
            2 <= p50 && p50 <= p99 && p99 <= max && max <= 23,
            "{p50} {p99} {max}"
        );
        // Each pair is one contact at both ends and one dial: the mean of the contacts is
        // twice the dials per node.
        let mean = 2.0 * r.dials_per_node.iter().map(|(_, v)| v).sum::<f64>();
        assert!((2.0..=max as f64).contains(&mean), "mean {mean}, max {max}");
        assert!(r.dials_per_node.iter().any(|(k, _)| k == "find_step"));
        // A smaller gossip view makes fewer gossip contacts.
        let narrow = run(&Params {
            gossip_view: 3,
            ..params(24, 2)
        })
        .expect("runs");
        let rumor = |r: &Report| {
            r.dials_per_node
                .iter()
                .find(|(k, _)| k == "gossip_rumor")
                .map_or(0.0, |(_, v)| *v)
        };
        assert!(
            rumor(&narrow) < rumor(&r),
            "{} vs {}",
            rumor(&narrow),
            rumor(&r)
        );
    }
}
