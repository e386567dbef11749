//! `peerlab sim chord`: path length, load balance, simultaneous failures and churn of the
//! Chord DHT (`peerlab_dht`), measured in the simulator against a ground-truth ring.
//!
//! # Timeline of a run
//!
//! 1. **Set-up.** `--init ideal` builds the converged ring directly (successor lists and
//!    fingers computed from the sorted virtual nodes, [`peerlab_dht::IdealRing`]) and places
//!    every key on its `R` replicas. `--init join` starts one peer, lets the others join
//!    through the real protocol (one every 200 ms through a random joined peer), waits until
//!    the ring equals the ideal one, and stores the keys with real `Put` commands.
//! 2. **Disruption** (`--duration-secs D`, only with `--fail-fraction` or `--churn-rate`): a
//!    fraction `P` of the peers crashes at its start; joins and crashes each arrive as a
//!    Poisson process of rate `C` per second during it. With churn, lookups run during this
//!    phase.
//! 3. **Measurement** (`D` seconds, without churn): the `L` lookups, evenly spread, each
//!    from a random joined peer for a random stored key (random ids when `--keys 0`).
//!
//! Under churn, each lookup is accompanied by a **get** of a random stored key from a random
//! joined peer and (with `--init join`, whose keys are written by peers) an **update**: the
//! writer of a random key, if still alive, writes it again. A get is **right** when it
//! returns the newest version acknowledged to its writer by the time the answer arrives (or
//! a newer one), **stale** when it returns an older version, **missing** when it finds no
//! value, and **failed** when the DHT answers with an error or not at all.
//!
//! A lookup **fails** when the DHT answers with an error (after its retries); it has the
//! **wrong owner** when the answer differs from the successor of the key among the virtual
//! nodes of live peers that have finished joining, judged when the answer arrives. A key is
//! **lost** when no live peer stores it at the end. Hops are `FindStep` requests to other
//! peers (own virtual nodes are free).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;

use peerlab_dht::{
    Command, Config, Dht, Event, IdealRing, MAX_RECORD_TTL, NodeRef, Record, Reply, Version,
};
use peerlab_overlay::{Id, Instant, Keypair, PeerId, Rng};

use super::{ExperimentError, invalid};
use peerlab_sim::{Latency, Sim, SimConfig};

/// How the ring is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// Build the converged ring directly (fast; for large N).
    Ideal,
    /// Run the real join protocol and wait for convergence.
    Join,
}

/// Parameters of `peerlab sim chord`.
#[derive(Clone, Debug, Args)]
pub struct Params {
    /// Number of peers.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Virtual nodes per peer.
    #[arg(long, default_value_t = 8)]
    pub vnodes: u16,
    /// Keys stored before measuring.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Lookups issued during the measurement (or churn) phase.
    #[arg(long, default_value_t = 1000)]
    pub lookups: usize,
    /// Replicas per key (owner included).
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Fraction of peers that crash at once at the start of the disruption phase.
    #[arg(long, default_value_t = 0.0)]
    pub fail_fraction: f64,
    /// Joins and crashes per second, each a Poisson process, during the disruption phase.
    #[arg(long, default_value_t = 0.0)]
    pub churn_rate: f64,
    /// Mean stabilize (and fix-fingers, check-predecessor) period in seconds; periods are
    /// uniform in [0.5, 1.5] times this. Replica repair runs at a third of it.
    #[arg(long, default_value_t = 30.0)]
    pub stabilize_secs: f64,
    /// Length of the disruption phase and of the measurement phase, in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub duration_secs: f64,
    /// How the ring is built.
    #[arg(long, value_enum, default_value_t = Init::Ideal)]
    pub init: Init,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            nodes: 1000,
            vnodes: 8,
            keys: 10_000,
            lookups: 1000,
            replicas: 3,
            fail_fraction: 0.0,
            churn_rate: 0.0,
            stabilize_secs: 30.0,
            duration_secs: 120.0,
            init: Init::Ideal,
            seed: 1,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Peers at the start.
    pub nodes: usize,
    /// Puts that failed during `--init join` set-up.
    pub puts_failed: u64,
    /// Virtual nodes per peer.
    pub vnodes: u16,
    /// How the ring was built.
    pub init: Init,
    /// Seed.
    pub seed: u64,
    /// Lookups issued.
    pub lookups: u64,
    /// Lookups answered successfully.
    pub answered: u64,
    /// Mean hops of answered lookups (`FindStep` requests to other peers).
    pub mean_hops: f64,
    /// Median hops.
    pub p50_hops: f64,
    /// 99th percentile of hops.
    pub p99_hops: f64,
    /// ½·log2 N for comparison with the paper.
    pub half_log2_n: f64,
    /// Lookups that returned an error.
    pub failed_lookups: u64,
    /// Lookups answered with an owner other than the ground truth.
    pub wrong_owner_lookups: u64,
    /// Keys stored.
    pub keys: usize,
    /// Mean keys owned per live peer at the end (ground truth ownership).
    pub keys_per_peer_mean: f64,
    /// 1st percentile of keys owned per peer.
    pub keys_per_peer_p1: f64,
    /// 99th percentile of keys owned per peer.
    pub keys_per_peer_p99: f64,
    /// Keys no live peer holds at the end.
    pub keys_lost: u64,
    /// Gets under churn that returned the newest acknowledged version (or a newer one).
    pub reads_right: u64,
    /// Gets under churn that returned an older version.
    pub reads_stale: u64,
    /// Gets under churn that found no value.
    pub reads_missing: u64,
    /// Gets under churn that failed (an error, or no answer).
    pub reads_failed: u64,
    /// Updates (writes of a key by its writer) issued under churn.
    pub updates: u64,
    /// Updates that failed.
    pub updates_failed: u64,
    /// Peers crashed at once.
    pub crashed_at_once: usize,
    /// Peers that joined during churn.
    pub churn_joins: u64,
    /// Peers that crashed during churn.
    pub churn_crashes: u64,
    /// Live peers at the end.
    pub final_nodes: usize,
    /// The last ring check of `--init join` (differences from the ideal ring).
    pub ring_check: Option<RingCheck>,
    /// Virtual time until the joined ring equalled the ideal one (`--init join`), seconds.
    pub converge_secs: Option<f64>,
    /// Messages sent per live peer per simulated second.
    pub messages_per_node_per_sec: f64,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// Simulator events processed.
    pub events: u64,
    /// Wall-clock seconds of the run.
    pub wall_seconds: f64,
}

impl Report {
    /// A short human-readable table.
    pub fn render_table(&self) -> String {
        let mut s = String::new();
        let mut row = |k: &str, v: String| s.push_str(&format!("{k:<28} {v}\n"));
        row(
            "nodes / vnodes / init",
            format!("{} / {} / {:?}", self.nodes, self.vnodes, self.init),
        );
        row(
            "lookups (answered)",
            format!("{} ({})", self.lookups, self.answered),
        );
        row(
            "hops mean / p50 / p99",
            format!(
                "{:.3} / {} / {}   (½·log2 N = {:.3})",
                self.mean_hops, self.p50_hops, self.p99_hops, self.half_log2_n
            ),
        );
        row(
            "failed / wrong owner",
            format!("{} / {}", self.failed_lookups, self.wrong_owner_lookups),
        );
        let m = self.keys_per_peer_mean.max(f64::MIN_POSITIVE);
        row(
            "keys per peer mean/p1/p99",
            format!(
                "{:.1} / {} ({:.2}×) / {} ({:.2}×)",
                self.keys_per_peer_mean,
                self.keys_per_peer_p1,
                self.keys_per_peer_p1 / m,
                self.keys_per_peer_p99,
                self.keys_per_peer_p99 / m
            ),
        );
        row("keys / lost", format!("{} / {}", self.keys, self.keys_lost));
        let reads = self.reads_right + self.reads_stale + self.reads_missing + self.reads_failed;
        if reads > 0 {
            row(
                "reads right/stale/missing/failed",
                format!(
                    "{} / {} / {} / {}",
                    self.reads_right, self.reads_stale, self.reads_missing, self.reads_failed
                ),
            );
            row(
                "updates (failed)",
                format!("{} ({})", self.updates, self.updates_failed),
            );
        }
        if self.crashed_at_once > 0 {
            row("crashed at once", self.crashed_at_once.to_string());
        }
        if self.churn_joins + self.churn_crashes > 0 {
            row(
                "churn joins / crashes",
                format!("{} / {}", self.churn_joins, self.churn_crashes),
            );
        }
        if let Some(c) = self.converge_secs {
            row("converged after", format!("{c:.1} s"));
        }
        row(
            "messages/node/s",
            format!("{:.3}", self.messages_per_node_per_sec),
        );
        row(
            "sim s / events / wall s",
            format!(
                "{:.0} / {} / {:.1}",
                self.sim_seconds, self.events, self.wall_seconds
            ),
        );
        s
    }
}

/// The DHT configuration an experiment uses for `nodes` peers.
pub fn dht_config(nodes: usize, vnodes: u16, replicas: usize, stabilize: Duration) -> Config {
    Config {
        vnodes,
        replicas,
        stabilize_period: stabilize,
        fix_fingers_period: stabilize,
        check_predecessor_period: stabilize,
        repair_period: stabilize / 3,
        lookup_retries: 8,
        // Experiments issue many lookups from few peers; the simulator bounds memory anyway.
        max_concurrent_lookups: 4096,
        max_stored_bytes: 1 << 30,
        ..Config::for_network(nodes)
    }
}

/// Differences between a live ring and the ideal ring over the same joined virtual nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RingCheck {
    /// Joined virtual nodes compared.
    pub vnodes: usize,
    /// Peers not (fully) joined.
    pub unjoined_peers: usize,
    /// Virtual nodes whose first successor is wrong.
    pub wrong_successor: usize,
    /// Virtual nodes whose predecessor is wrong.
    pub wrong_predecessor: usize,
    /// Virtual nodes whose successor list differs.
    pub wrong_successor_list: usize,
    /// Fingers (over all virtual nodes) that differ.
    pub wrong_fingers: usize,
}

impl RingCheck {
    /// Whether the ring equals the ideal one in every pointer checked.
    pub fn is_ideal(&self) -> bool {
        self.unjoined_peers == 0
            && self.wrong_successor == 0
            && self.wrong_predecessor == 0
            && self.wrong_successor_list == 0
            && self.wrong_fingers == 0
    }
}

/// The ideal ring over the virtual nodes of live, joined peers.
pub fn live_ring(sim: &Sim<Dht>) -> IdealRing {
    let nodes = sim
        .cores()
        .filter(|(_, d)| d.is_joined())
        .flat_map(|(p, d)| {
            d.vnode_ids()
                .into_iter()
                .map(move |id| NodeRef { id, peer: p })
        })
        .collect();
    IdealRing::new(nodes)
}

/// Compares every joined peer's pointers with the ideal ring; `fingers` also compares all
/// 160 fingers of every virtual node (slower).
pub fn check_ring(sim: &Sim<Dht>, fingers: bool) -> RingCheck {
    let ring = live_ring(sim);
    let mut c = RingCheck::default();
    for (_, d) in sim.cores() {
        if !d.is_joined() {
            c.unjoined_peers += 1;
            continue;
        }
        let r = d.config().successors;
        for id in d.vnode_ids() {
            let Some(v) = d.vnode(&id) else { continue };
            let i = ring.successor_index(&id);
            let ideal = ring.view(i, r);
            c.vnodes += 1;
            if v.succs.first() != ideal.succs.first() {
                c.wrong_successor += 1;
            }
            if v.pred != Some(ideal.pred) {
                c.wrong_predecessor += 1;
            }
            if v.succs != ideal.succs {
                c.wrong_successor_list += 1;
            }
            if fingers {
                for (f, got) in v.fingers.iter().enumerate() {
                    if *got != Some(ring.finger(i, f)) {
                        c.wrong_fingers += 1;
                    }
                }
            }
        }
    }
    c
}

/// The key bytes of key number `i`.
pub fn key_bytes(i: usize) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Tracker {
    issued: BTreeMap<u64, Id>,
    hops: Vec<f64>,
    failed: u64,
    wrong: u64,
    /// Live joined virtual nodes: the ground truth for owners.
    truth: BTreeMap<Id, PeerId>,
    joined_pending: BTreeSet<u64>,
    puts_ok: u64,
    puts_failed: u64,
    /// Per key: the newest version acknowledged to its writer.
    latest: Vec<Option<Version>>,
    /// Per key: the peer that wrote it (`--init join`), which alone may update it.
    writer: Vec<Option<PeerId>>,
    /// Gets in flight: request → key index.
    gets: BTreeMap<u64, usize>,
    /// Updates in flight: request → key index.
    updates: BTreeMap<u64, usize>,
    reads: Reads,
    updates_issued: u64,
    updates_failed: u64,
}

/// How the gets under churn were answered.
#[derive(Clone, Copy, Debug, Default)]
struct Reads {
    right: u64,
    stale: u64,
    missing: u64,
    failed: u64,
}

impl Tracker {
    fn owner(&self, key: &Id) -> Option<(Id, PeerId)> {
        self.truth
            .range(*key..)
            .next()
            .or_else(|| self.truth.iter().next())
            .map(|(i, p)| (*i, *p))
    }

    fn add_peer(&mut self, d: &Dht, p: PeerId) {
        for id in d.vnode_ids() {
            self.truth.insert(id, p);
        }
    }

    fn remove_peer(&mut self, p: &PeerId) {
        self.truth.retain(|_, q| q != p);
    }

    /// Records an acknowledged write of key `k`.
    fn acked(&mut self, k: usize, result: &Result<Reply, peerlab_dht::Error>) -> bool {
        let Ok(Reply::Stored { version, .. }) = result else {
            return false;
        };
        if let Some(l) = self.latest.get_mut(k)
            && l.is_none_or(|old| old < *version)
        {
            *l = Some(*version);
        }
        true
    }

    fn drain(&mut self, sim: &mut Sim<Dht>) {
        for (_, peer, ev) in sim.take_events() {
            let Event::Reply { req, result } = ev;
            if let Some(k) = self.gets.remove(&req) {
                let latest = self.latest.get(k).copied().flatten();
                match result {
                    Ok(Reply::Value {
                        value: Some(_),
                        version: Some(v),
                        ..
                    }) => {
                        if latest.is_none_or(|l| v >= l) {
                            self.reads.right += 1;
                        } else {
                            self.reads.stale += 1;
                        }
                    }
                    Ok(_) => self.reads.missing += 1,
                    Err(_) => self.reads.failed += 1,
                }
                continue;
            }
            if let Some(k) = self.updates.remove(&req) {
                if !self.acked(k, &result) {
                    self.updates_failed += 1;
                }
                continue;
            }
            if (PUT_REQ..PUT_REQ + self.latest.len() as u64).contains(&req) {
                let k = (req - PUT_REQ) as usize;
                if self.acked(k, &result) {
                    self.puts_ok += 1;
                    if let Some(w) = self.writer.get_mut(k) {
                        *w = Some(peer);
                    }
                } else {
                    self.puts_failed += 1;
                }
                continue;
            }
            if self.joined_pending.remove(&req) {
                if result.is_ok()
                    && let Some(d) = sim.node(&peer)
                {
                    let ids = d.vnode_ids();
                    for id in ids {
                        self.truth.insert(id, peer);
                    }
                }
                continue;
            }
            if let Some(key) = self.issued.remove(&req) {
                match result {
                    Ok(Reply::Lookup(route)) => {
                        self.hops.push(route.hops as f64);
                        if self.owner(&key).map(|o| o.0) != Some(route.vnode) {
                            self.wrong += 1;
                        }
                    }
                    _ => self.failed += 1,
                }
                continue;
            }
        }
    }
}

/// The Unix time (µs) simulated time 0 stands for, every node's wall-clock offset: records
/// carry wall-clock versions and expiries, so a simulated node reads 2025-01-01 00:00 UTC
/// at the start of a run.
pub const SIM_EPOCH_US: i64 = 1_735_689_600_000_000;

/// Writers of the keys an `--init ideal` run places: the workload's records are signed by
/// real keys, spread over several writers so no one writer meets a peer's per-writer quota
/// (`dht::Config::max_writer_records`) however many keys a peer holds.
const WORKLOAD_WRITERS: u64 = 64;

/// The key pair of workload writer `i` (numbered from the top, apart from the peers').
fn writer_key(i: u64) -> Keypair {
    Keypair::synthetic(u64::MAX - i)
}

/// Request ids: lookups, joins and puts use disjoint ranges so replies are told apart.
const JOIN_REQ: u64 = 1 << 60;
const PUT_REQ: u64 = 1 << 61;
const GET_REQ: u64 = 1 << 62;
const UPDATE_REQ: u64 = (1 << 62) + (1 << 61);

/// Lookups between refreshes of the joined-peer list in the measurement phase. No peer joins
/// or crashes then, so the list only changes if an `--init join` peer finishes joining late;
/// refreshing it this often keeps lookup issue O(N / 256) instead of O(N).
const JOINED_REFRESH: usize = 256;

/// The peers that have joined the ring, in the simulator's order.
fn joined_peers(sim: &Sim<Dht>) -> Vec<PeerId> {
    sim.cores()
        .filter(|(_, d)| d.is_joined())
        .map(|(p, _)| p)
        .collect()
}

/// Runs the experiment.
///
/// # Errors
/// [`ExperimentError::InvalidArgument`] for out-of-range parameters.
pub fn run(p: &Params) -> Result<Report, ExperimentError> {
    #[allow(clippy::disallowed_methods)]
    let wall = std::time::Instant::now();
    if p.nodes == 0 || p.nodes > 1_000_000 {
        return invalid("--nodes must be in 1..=1000000");
    }
    if p.vnodes == 0 || p.vnodes > 64 {
        return invalid("--vnodes must be in 1..=64");
    }
    if p.replicas == 0 || p.replicas > 16 {
        return invalid("--replicas must be in 1..=16");
    }
    if !(0.0..1.0).contains(&p.fail_fraction) {
        return invalid("--fail-fraction must be in [0, 1)");
    }
    if !(0.0..=100.0).contains(&p.churn_rate) {
        return invalid("--churn-rate must be in [0, 100]");
    }
    if !(p.stabilize_secs >= 0.01 && p.stabilize_secs <= 3600.0) {
        return invalid("--stabilize-secs must be in [0.01, 3600]");
    }
    if !(p.duration_secs > 0.0 && p.duration_secs <= 1e6) {
        return invalid("--duration-secs must be in (0, 1e6]");
    }
    if p.keys > 10_000_000 || p.lookups > 10_000_000 {
        return invalid("--keys and --lookups must be at most 10^7");
    }
    let stabilize = Duration::from_secs_f64(p.stabilize_secs);
    let cfg = dht_config(p.nodes, p.vnodes, p.replicas, stabilize);
    cfg.validate()
        .map_err(|e| ExperimentError::InvalidArgument(e.to_string()))?;
    let mut sim: Sim<Dht> = Sim::new(SimConfig {
        seed: p.seed,
        latency: Latency::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(90),
        },
        ..SimConfig::default()
    });
    let mut t = Tracker {
        issued: BTreeMap::new(),
        hops: Vec::new(),
        failed: 0,
        wrong: 0,
        truth: BTreeMap::new(),
        joined_pending: BTreeSet::new(),
        puts_ok: 0,
        puts_failed: 0,
        latest: vec![None; p.keys],
        writer: vec![None; p.keys],
        gets: BTreeMap::new(),
        updates: BTreeMap::new(),
        reads: Reads::default(),
        updates_issued: 0,
        updates_failed: 0,
    };
    let keys: Vec<Keypair> = (0..p.nodes as u64).map(Keypair::synthetic).collect();
    let peers: Vec<PeerId> = keys.iter().map(Keypair::peer_id).collect();
    let mut converge_secs = None;
    let mut ring_check = None;
    match p.init {
        Init::Ideal => {
            let nodes: Vec<NodeRef> = peers
                .iter()
                .flat_map(|&peer| {
                    (0..p.vnodes).map(move |i| NodeRef {
                        id: Id::vnode(&peer, i),
                        peer,
                    })
                })
                .collect();
            let ring = IdealRing::new(nodes);
            let mut cores: BTreeMap<PeerId, Dht> = BTreeMap::new();
            for (i, &peer) in peers.iter().enumerate() {
                let mut d = Dht::from_ideal(cfg.clone(), keys[i].clone(), &ring)
                    .map_err(|e| ExperimentError::Failed(e.to_string()))?;
                d.set_clock_offset(SIM_EPOCH_US);
                cores.insert(peer, d);
            }
            let writers: Vec<Keypair> = (0..WORKLOAD_WRITERS).map(writer_key).collect();
            let epoch_ms = (SIM_EPOCH_US / 1000) as u64;
            for k in 0..p.keys {
                let key = Id::hash(&key_bytes(k));
                let w = &writers[k % writers.len()];
                let version = Version {
                    wall_ms: epoch_ms,
                    logical: 0,
                    writer: w.peer_id(),
                };
                let expires_ms = epoch_ms + MAX_RECORD_TTL.as_millis() as u64;
                let value = Some(k.to_be_bytes().to_vec());
                let rec = Record::sign(&key, value, version, version, expires_ms, w);
                t.latest[k] = Some(version);
                for peer in ring.replica_peers(&key, p.replicas) {
                    if let Some(d) = cores.get_mut(&peer) {
                        let _ = d.insert_record(key, rec.clone(), Instant::ZERO);
                    }
                }
            }
            for &peer in &peers {
                if let Some(d) = cores.remove(&peer) {
                    t.add_peer(&d, peer);
                    sim.add_node(peer, d);
                }
            }
        }
        Init::Join => {
            let mut rng = Rng::seed(p.seed ^ 0x6a6f696e);
            for (i, &peer) in peers.iter().enumerate() {
                let mut d = Dht::new(cfg.clone(), keys[i].clone())
                    .map_err(|e| ExperimentError::Failed(e.to_string()))?;
                d.set_clock_offset(SIM_EPOCH_US);
                let at = Instant::ZERO + Duration::from_millis(200 * i as u64);
                sim.run_until(at);
                t.drain(&mut sim);
                sim.add_node(peer, d);
                let joined: Vec<PeerId> = t
                    .truth
                    .values()
                    .copied()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let bootstrap = rng.choose(&joined).map(|b| vec![*b]).unwrap_or_default();
                let req = JOIN_REQ + i as u64;
                t.joined_pending.insert(req);
                sim.command(peer, Command::Join { req, bootstrap });
                t.drain(&mut sim);
            }
            // Wait for the ring to equal the ideal one (checked every stabilize period).
            let limit = sim.now() + stabilize * 200;
            loop {
                sim.run_for(stabilize);
                t.drain(&mut sim);
                let c = check_ring(&sim, true);
                let ideal = c.is_ideal();
                ring_check = Some(c);
                if ideal {
                    converge_secs = Some(sim.now().as_secs_f64());
                    break;
                }
                if sim.now() >= limit {
                    break;
                }
            }
            // Store the keys through real puts, 200 per second from random peers.
            for k in 0..p.keys {
                let from = peers[rng.index(peers.len())];
                let cmd = Command::Put {
                    req: PUT_REQ + k as u64,
                    key: key_bytes(k),
                    value: k.to_be_bytes().to_vec(),
                    ttl: Some(MAX_RECORD_TTL),
                };
                let at = sim.now() + Duration::from_millis(5);
                sim.run_until(at);
                sim.command(from, cmd);
                if k % 1000 == 999 {
                    t.drain(&mut sim);
                }
            }
            sim.run_for(Duration::from_secs(10));
            t.drain(&mut sim);
        }
    }

    let duration = Duration::from_secs_f64(p.duration_secs);
    let mut rng = Rng::seed(p.seed ^ 0x63686f7264);
    let key_ids: Vec<Id> = (0..p.keys).map(|k| Id::hash(&key_bytes(k))).collect();
    let mut next_req = 1u64;
    // The asking peer is drawn from the joined peers. Collecting them is O(N), so callers pass
    // a list they refresh only when it can have changed (every lookup under churn, every
    // `JOINED_REFRESH` lookups otherwise): recollecting it per lookup made N = 10^5 with 10^5
    // lookups cost 10^10 core visits.
    let mut lookup_at = |sim: &mut Sim<Dht>, t: &mut Tracker, rng: &mut Rng, joined: &[PeerId]| {
        let Some(&from) = rng.choose(joined) else {
            return;
        };
        let key = if key_ids.is_empty() {
            let mut b = [0u8; 20];
            rng.fill(&mut b);
            Id(b)
        } else {
            key_ids[rng.index(key_ids.len())]
        };
        let req = next_req;
        next_req += 1;
        t.issued.insert(req, key);
        sim.command(from, Command::Lookup { req, key });
    };

    // Gets and updates under churn draw from their own generator, so the churn and lookup
    // schedule is the same as without them.
    let mut read_rng = Rng::seed(p.seed ^ 0x72656164);
    let mut next_read = 0u64;
    let mut read_and_update =
        |sim: &mut Sim<Dht>, t: &mut Tracker, rng: &mut Rng, joined: &[PeerId]| {
            if p.keys == 0 {
                return;
            }
            let Some(&from) = rng.choose(joined) else {
                return;
            };
            let k = rng.index(p.keys);
            next_read += 1;
            t.gets.insert(GET_REQ + next_read, k);
            sim.command(
                from,
                Command::Get {
                    req: GET_REQ + next_read,
                    key: key_bytes(k),
                },
            );
            let k = rng.index(p.keys);
            let Some(w) = t.writer[k] else { return };
            if !sim.node(&w).is_some_and(Dht::is_joined) {
                return;
            }
            let mut value = k.to_be_bytes().to_vec();
            value.extend_from_slice(&next_read.to_be_bytes());
            t.updates.insert(UPDATE_REQ + next_read, k);
            t.updates_issued += 1;
            sim.command(
                w,
                Command::Put {
                    req: UPDATE_REQ + next_read,
                    key: key_bytes(k),
                    value,
                    ttl: Some(MAX_RECORD_TTL),
                },
            );
        };

    // Disruption.
    let mut crashed_at_once = 0;
    let (mut churn_joins, mut churn_crashes) = (0u64, 0u64);
    let churn = p.churn_rate > 0.0;
    if p.fail_fraction > 0.0 || churn {
        let start = sim.now();
        if p.fail_fraction > 0.0 {
            let alive: Vec<PeerId> = sim.peers().collect();
            let n = (p.fail_fraction * alive.len() as f64).round() as usize;
            for i in rng.sample_indices(alive.len(), n) {
                sim.crash(alive[i]);
                t.remove_peer(&alive[i]);
            }
            crashed_at_once = n;
        }
        // Merge lookup times and churn events into one time-ordered script.
        let mut script: Vec<(Instant, u8)> = Vec::new();
        if churn {
            for (rate, kind) in [(p.churn_rate, 1u8), (p.churn_rate, 2u8)] {
                let mut at = start;
                loop {
                    at = at + Duration::from_secs_f64(rng.exp(1.0 / rate));
                    if at >= start + duration {
                        break;
                    }
                    script.push((at, kind));
                }
            }
            if p.lookups > 0 {
                let gap = duration.as_secs_f64() / p.lookups as f64;
                for i in 0..p.lookups {
                    script.push((start + Duration::from_secs_f64(gap * (i as f64 + 0.5)), 0));
                }
            }
        }
        script.sort();
        let mut next_ordinal = p.nodes as u64;
        for (at, kind) in script {
            sim.run_until(at);
            t.drain(&mut sim);
            match kind {
                0 => {
                    let joined = joined_peers(&sim);
                    lookup_at(&mut sim, &mut t, &mut rng, &joined);
                    read_and_update(&mut sim, &mut t, &mut read_rng, &joined);
                }
                1 => {
                    let key = Keypair::synthetic(next_ordinal);
                    let peer = key.peer_id();
                    next_ordinal += 1;
                    let joined: Vec<PeerId> = t
                        .truth
                        .values()
                        .copied()
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    let bootstrap = rng.choose(&joined).map(|b| vec![*b]).unwrap_or_default();
                    let mut d = Dht::new(cfg.clone(), key)
                        .map_err(|e| ExperimentError::Failed(e.to_string()))?;
                    d.set_clock_offset(SIM_EPOCH_US);
                    sim.add_node(peer, d);
                    let req = JOIN_REQ + next_ordinal;
                    t.joined_pending.insert(req);
                    sim.command(peer, Command::Join { req, bootstrap });
                    churn_joins += 1;
                }
                _ => {
                    let alive: Vec<PeerId> = sim.peers().collect();
                    if alive.len() > 1 {
                        let victim = alive[rng.index(alive.len())];
                        sim.crash(victim);
                        t.remove_peer(&victim);
                        churn_crashes += 1;
                    }
                }
            }
        }
        sim.run_until(start + duration);
        t.drain(&mut sim);
    }

    // Measurement (without churn).
    if !churn && p.lookups > 0 {
        let start = sim.now();
        let gap = duration.as_secs_f64() / p.lookups as f64;
        let mut joined = Vec::new();
        for i in 0..p.lookups {
            let at = start + Duration::from_secs_f64(gap * i as f64);
            sim.run_until(at);
            if i % JOINED_REFRESH == 0 {
                t.drain(&mut sim);
                joined = joined_peers(&sim);
            }
            lookup_at(&mut sim, &mut t, &mut rng, &joined);
        }
        sim.run_until(start + duration);
    }
    // Let the last lookups finish (their retries are bounded).
    sim.run_for(Duration::from_secs(30));
    t.drain(&mut sim);
    // Lookups and gets still unanswered count as failed.
    t.failed += t.issued.len() as u64;
    t.reads.failed += t.gets.len() as u64;
    t.updates_failed += t.updates.len() as u64;

    // Keys: ownership by ground truth, loss by what live peers hold.
    let mut per_peer: BTreeMap<PeerId, f64> = sim.peers().map(|p| (p, 0.0)).collect();
    for key in &key_ids {
        if let Some((_, owner)) = t.owner(key)
            && let Some(c) = per_peer.get_mut(&owner)
        {
            *c += 1.0;
        }
    }
    let mut loads: Vec<f64> = per_peer.values().copied().collect();
    loads.sort_by(f64::total_cmp);
    let mut held: BTreeSet<Id> = BTreeSet::new();
    for (_, d) in sim.cores() {
        for k in d.store().keys_in(&Id::ZERO, &Id::ZERO) {
            if d.store().get(&k).is_some_and(|r| r.value.is_some()) {
                held.insert(k);
            }
        }
    }
    let keys_lost = key_ids.iter().filter(|k| !held.contains(k)).count() as u64;

    let mut hops = t.hops.clone();
    hops.sort_by(f64::total_cmp);
    let mean_hops = if hops.is_empty() {
        0.0
    } else {
        hops.iter().sum::<f64>() / hops.len() as f64
    };
    let sim_seconds = sim.now().as_secs_f64();
    let final_nodes = sim.len();
    let avg_nodes = ((p.nodes + final_nodes) as f64 / 2.0).max(1.0);
    let issued_total = next_req - 1;
    Ok(Report {
        nodes: p.nodes,
        puts_failed: t.puts_failed,
        vnodes: p.vnodes,
        init: p.init,
        seed: p.seed,
        lookups: issued_total,
        answered: hops.len() as u64,
        mean_hops,
        p50_hops: percentile(&hops, 0.5),
        p99_hops: percentile(&hops, 0.99),
        half_log2_n: 0.5 * (p.nodes as f64).log2(),
        failed_lookups: t.failed,
        wrong_owner_lookups: t.wrong,
        keys: p.keys,
        keys_per_peer_mean: if loads.is_empty() {
            0.0
        } else {
            loads.iter().sum::<f64>() / loads.len() as f64
        },
        keys_per_peer_p1: percentile(&loads, 0.01),
        keys_per_peer_p99: percentile(&loads, 0.99),
        keys_lost,
        reads_right: t.reads.right,
        reads_stale: t.reads.stale,
        reads_missing: t.reads.missing,
        reads_failed: t.reads.failed,
        updates: t.updates_issued,
        updates_failed: t.updates_failed,
        crashed_at_once,
        churn_joins,
        churn_crashes,
        final_nodes,
        converge_secs,
        ring_check,
        messages_per_node_per_sec: sim.stats().total.sent as f64
            / avg_nodes
            / sim_seconds.max(1e-9),
        sim_seconds,
        events: sim.events_processed(),
        wall_seconds: wall.elapsed().as_secs_f64(),
    })
}
