//! `peerlab sim peer`: the full stack — gossip membership, Chord lookups and replicated
//! storage — as one real node runs it (`node::Peer`), on many simulated peers under churn.
//!
//! The run has four phases, all in virtual time:
//!
//! 1. **Bootstrap**: peer 0 creates the ring; the others start one every
//!    `JOIN_SPACING` and bootstrap through a random peer already up. From then on, what a
//!    peer knows of the others comes from gossip membership, which also drives its DHT join.
//! 2. **Load**: `--keys` key/value pairs are put from random joined peers; only the puts that
//!    were acknowledged count as stored.
//! 3. **Churn and workload** for `--duration-secs`: joins and departures each a Poisson
//!    process at `--churn-rate` per second (a departure is a crash with probability
//!    `--crash-fraction`, a graceful leave otherwise), while random joined peers issue
//!    `--ops-per-sec` operations, alternating a lookup of a random ring id (checked against
//!    the ideal owner among the joined peers at that instant) and a get of a stored key
//!    (checked against the stored value).
//! 4. **Audit**: after a settling period every stored key is read from a random peer (one
//!    retry for a failed lookup); a key that no read returns is lost. Each live peer's member
//!    table is compared with the live set.
//!
//! Crashed peers are silent: messages to them vanish, and a sender learns of the failure only
//! after [`UNREACHABLE_NOTICE`] (a refused connection) or through its own timeouts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant as WallInstant};

use clap::Args;
use peerlab_dht as dht;
use peerlab_gossip as gossip;
use peerlab_node::peer::{self, Command, Event, Peer};
use peerlab_overlay::{Id, Instant, Keypair, PeerId};
use peerlab_swarm::MemoryFactory;
use serde::Serialize;

use super::chord::SIM_EPOCH_US;
use super::{ExperimentError, invalid};
use peerlab_sim::{Latency, Sim, SimConfig, churn};

/// Time between two bootstrap-phase joins: fast enough for hundreds of peers in a minute,
/// slow enough that each joiner finds a settled successor.
const JOIN_SPACING: Duration = Duration::from_millis(250);
/// After a crash, a new connection attempt is refused within this delay (a closed port on
/// a live host answers at once; this adds the dial's round trip and timer slack).
pub const UNREACHABLE_NOTICE: Duration = Duration::from_millis(500);
/// Simulation step between two scans of events and join state.
const STEP: Duration = Duration::from_millis(250);
/// Time allowed for the load phase's puts and the audit's reads.
const SETTLE: Duration = Duration::from_secs(20);
/// A gracefully leaving peer's process lingers this long after `Leave` before it exits.
const LEAVE_LINGER: Duration = Duration::from_secs(3);
/// Upper bound on peers, to keep memory and run time predictable.
const MAX_NODES: usize = 5_000;

/// Parameters of `peerlab sim peer`.
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// Peers at the start.
    #[arg(long, default_value_t = 64)]
    pub nodes: usize,
    /// Virtual nodes per peer.
    #[arg(long, default_value_t = 4)]
    pub vnodes: u16,
    /// Replicas per key (successors on distinct peers).
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Key/value pairs stored before churn starts.
    #[arg(long, default_value_t = 200)]
    pub keys: usize,
    /// Operations per second during churn (alternating lookups and gets).
    #[arg(long, default_value_t = 2.0)]
    pub ops_per_sec: f64,
    /// Joins per second and departures per second, each a Poisson process.
    #[arg(long, default_value_t = 0.05)]
    pub churn_rate: f64,
    /// Fraction of departures that are crashes (the rest leave gracefully).
    #[arg(long, default_value_t = 0.5)]
    pub crash_fraction: f64,
    /// Length of the churn phase in seconds.
    #[arg(long, default_value_t = 300)]
    pub duration_secs: u64,
    /// One-way link latency in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
    /// Message loss probability.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What `peerlab sim peer` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Peers at the start.
    pub nodes: usize,
    /// Virtual nodes per peer.
    pub vnodes: u16,
    /// Replicas per key.
    pub replicas: usize,
    /// Churn rate (joins/s and departures/s each).
    pub churn_rate: f64,
    /// Seed.
    pub seed: u64,
    /// Peers joined during churn.
    pub churn_joins: u64,
    /// Peers crashed during churn.
    pub churn_crashes: u64,
    /// Peers that left gracefully during churn.
    pub churn_leaves: u64,
    /// Seconds from start to the last bootstrap peer having joined the ring.
    pub bootstrap_secs: Option<f64>,
    /// Median seconds from a churn joiner's start to its DHT join.
    pub join_secs_p50: Option<f64>,
    /// Slowest churn join in seconds.
    pub join_secs_max: Option<f64>,
    /// Keys whose put was acknowledged.
    pub keys: usize,
    /// Lookups issued during churn.
    pub lookups: u64,
    /// Lookups that failed or never answered.
    pub failed_lookups: u64,
    /// Lookups answered with an owner other than the ideal one among joined peers.
    pub wrong_owner_lookups: u64,
    /// Mean hops of answered lookups.
    pub mean_hops: f64,
    /// Gets issued during churn.
    pub gets: u64,
    /// Gets that failed, never answered, or returned no value.
    pub failed_gets: u64,
    /// Stored keys no audit read could return.
    pub keys_lost: usize,
    /// Median seconds from a crash to the first live peer declaring it down.
    pub detection_secs_p50: Option<f64>,
    /// Slowest such first detection.
    pub detection_secs_max: Option<f64>,
    /// Mean over live peers of (live peers they hold up) / (live peers − 1), at the end.
    pub membership_completeness: f64,
    /// Dead peers still held up by some live peer at the end, summed over live peers.
    pub stale_members: u64,
    /// Live peers at the end.
    pub final_nodes: usize,
    /// Messages sent per peer per second (mean over the run).
    pub messages_per_node_per_sec: f64,
    /// Bytes sent per peer per second (mean over the run).
    pub bytes_per_node_per_sec: f64,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// Simulator events processed.
    pub events: u64,
    /// Wall-clock seconds (the only key that differs between runs with the same seed).
    pub wall_seconds: f64,
}

/// What a request id stands for.
enum Pending {
    Put { key: usize },
    Lookup { ideal: Option<Id> },
    Get { key: usize },
    Audit { key: usize, attempt: u8 },
}

type P = Peer<MemoryFactory>;

struct Run {
    sim: Sim<P>,
    cfg: peer::Config,
    next_req: u64,
    pending: BTreeMap<u64, Pending>,
    next_ordinal: u64,
    started: BTreeMap<PeerId, Instant>,
    joined: BTreeSet<PeerId>,
    crashed_at: BTreeMap<PeerId, Instant>,
    detected: BTreeMap<PeerId, Instant>,
    /// Member signatures verified by any simulated peer (a pure function, so shared).
    verified: gossip::VerifiedRecords,
}

impl Run {
    fn spawn(&mut self, bootstrap: Option<PeerId>) -> PeerId {
        let key = Keypair::synthetic(self.next_ordinal);
        let id = key.peer_id();
        self.next_ordinal += 1;
        let mut cfg = self.cfg.clone();
        cfg.create_ring = bootstrap.is_none();
        let mut core =
            Peer::new(key, cfg, MemoryFactory).expect("configuration validated up front");
        core.dht_mut().set_clock_offset(SIM_EPOCH_US);
        core.share_verified(self.verified.clone());
        self.sim.add_node(id, core);
        if let Some(b) = bootstrap {
            self.sim.command(id, Command::Bootstrap(vec![b]));
        }
        self.started.insert(id, self.sim.now());
        id
    }

    /// A random live peer whose DHT has joined.
    fn random_joined(&mut self) -> Option<PeerId> {
        let live: Vec<PeerId> = self
            .joined
            .iter()
            .copied()
            .filter(|p| self.sim.is_alive(p))
            .collect();
        let i = self.sim.rng().index(live.len().max(1));
        live.get(i).copied()
    }

    fn request(&mut self, from: PeerId, pending: Pending, cmd: dht::Command) {
        self.pending.insert(request_id(&cmd), pending);
        self.sim.command(from, Command::Dht(cmd));
    }

    fn req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    /// The ideal owner vnode of `id` among live joined peers.
    fn ideal_owner(&self, id: &Id) -> Option<Id> {
        let mut best: Option<(Id, Id)> = None; // (distance from id, vnode)
        for p in &self.joined {
            let Some(core) = self.sim.node(p) else {
                continue;
            };
            for v in core.dht().vnode_ids() {
                let d = id.distance_to(&v);
                if best.is_none_or(|(bd, _)| d < bd) {
                    best = Some((d, v));
                }
            }
        }
        best.map(|(_, v)| v)
    }

    /// Advances the simulation one step and records joins and detections.
    fn step(&mut self, tally: &mut Tally) {
        let t = self.sim.now() + STEP;
        self.sim.run_until(t);
        for p in self.sim.peers().collect::<Vec<_>>() {
            if !self.joined.contains(&p) && self.sim.node(&p).is_some_and(|c| c.dht().is_joined()) {
                self.joined.insert(p);
                if let Some(&s) = self.started.get(&p) {
                    tally.join_done(p, (self.sim.now() - s).as_secs_f64());
                }
            }
        }
        for (at, _who, ev) in self.sim.take_events() {
            match ev {
                Event::Gossip(gossip::Event::MemberDown { peer })
                    if self.crashed_at.contains_key(&peer) =>
                {
                    self.detected.entry(peer).or_insert(at);
                }
                Event::Dht(dht::Event::Reply { req, result }) => {
                    if let Some(p) = self.pending.remove(&req) {
                        tally.reply(p, result);
                    }
                }
                _ => {}
            }
        }
    }
}

fn request_id(cmd: &dht::Command) -> u64 {
    match cmd {
        dht::Command::Join { req, .. }
        | dht::Command::Leave { req }
        | dht::Command::Lookup { req, .. }
        | dht::Command::Put { req, .. }
        | dht::Command::Get { req, .. }
        | dht::Command::Delete { req, .. }
        | dht::Command::AddProvider { req, .. }
        | dht::Command::GetProviders { req, .. } => *req,
        // Carries no request id and gets no answer.
        dht::Command::SetFallbackPeers { .. } | dht::Command::CheckRing { .. } => 0,
    }
}

#[derive(Default)]
struct Tally {
    stored: BTreeSet<usize>,
    lookups: u64,
    failed_lookups: u64,
    wrong_owner: u64,
    hops: Vec<u32>,
    gets: u64,
    failed_gets: u64,
    audit_found: BTreeSet<usize>,
    audit_retry: Vec<usize>,
    churn_joiners: BTreeSet<PeerId>,
    join_secs: Vec<f64>,
}

impl Tally {
    fn join_done(&mut self, p: PeerId, secs: f64) {
        if self.churn_joiners.contains(&p) {
            self.join_secs.push(secs);
        }
    }

    fn reply(&mut self, p: Pending, result: Result<dht::Reply, dht::Error>) {
        match (p, result) {
            (Pending::Put { key }, Ok(dht::Reply::Stored { .. })) => {
                self.stored.insert(key);
            }
            (Pending::Put { .. }, _) => {}
            (Pending::Lookup { ideal }, Ok(dht::Reply::Lookup(route))) => {
                self.hops.push(route.hops);
                if ideal.is_some_and(|v| v != route.vnode) {
                    self.wrong_owner += 1;
                }
            }
            (Pending::Lookup { .. }, _) => self.failed_lookups += 1,
            (Pending::Get { key }, Ok(dht::Reply::Value { value: Some(v), .. })) => {
                if v != value_of(key) {
                    self.failed_gets += 1;
                }
            }
            (Pending::Get { .. }, _) => self.failed_gets += 1,
            (Pending::Audit { key, .. }, Ok(dht::Reply::Value { value: Some(v), .. }))
                if v == value_of(key) =>
            {
                self.audit_found.insert(key);
            }
            (Pending::Audit { key, attempt }, _) => {
                if attempt == 0 {
                    self.audit_retry.push(key);
                }
            }
        }
    }
}

fn key_of(i: usize) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

fn value_of(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

fn percentile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    Some(v[i])
}

fn validate(p: &Params) -> Result<(), ExperimentError> {
    if p.nodes < 2 || p.nodes > MAX_NODES {
        return invalid(format!("--nodes must be between 2 and {MAX_NODES}"));
    }
    if p.vnodes == 0 || p.vnodes > 64 {
        return invalid("--vnodes must be between 1 and 64");
    }
    if p.replicas == 0 || p.replicas > p.nodes {
        return invalid("--replicas must be between 1 and --nodes");
    }
    if !(0.0..=1.0).contains(&p.crash_fraction) || !(0.0..1.0).contains(&p.loss) {
        return invalid("--crash-fraction must be in [0, 1] and --loss in [0, 1)");
    }
    if !(0.0..=10.0).contains(&p.churn_rate) || !(0.0..=1000.0).contains(&p.ops_per_sec) {
        return invalid("--churn-rate must be in [0, 10] and --ops-per-sec in [0, 1000]");
    }
    if p.duration_secs > 86_400 {
        return invalid("--duration-secs must be at most 86400");
    }
    Ok(())
}

/// Runs the experiment.
pub fn run(p: &Params) -> Result<Report, ExperimentError> {
    validate(p)?;
    #[allow(clippy::disallowed_methods)] // wall time is reported, never fed to a core
    let wall = WallInstant::now();
    let mut cfg = peer::Config::lan();
    cfg.dht.vnodes = p.vnodes;
    cfg.dht.replicas = p.replicas;
    // Validate the combined configuration once, so spawning cannot fail later.
    Peer::new(Keypair::synthetic(u64::MAX), cfg.clone(), MemoryFactory)
        .map_err(|e| ExperimentError::InvalidArgument(e.to_string()))?;
    let sim = Sim::new(SimConfig {
        seed: p.seed,
        latency: Latency::Fixed(Duration::from_millis(p.latency_ms)),
        loss: p.loss,
        unreachable_notice: Some(UNREACHABLE_NOTICE),
        ..Default::default()
    });
    let mut run = Run {
        sim,
        cfg,
        next_req: 0,
        pending: BTreeMap::new(),
        next_ordinal: 0,
        started: BTreeMap::new(),
        joined: BTreeSet::new(),
        crashed_at: BTreeMap::new(),
        detected: BTreeMap::new(),
        verified: gossip::VerifiedRecords::new(super::gossip::VERIFIED_MEMO),
    };
    let mut tally = Tally::default();

    // 1. Bootstrap.
    let first = run.spawn(None);
    let mut up = vec![first];
    for _ in 1..p.nodes {
        let t = run.sim.now() + JOIN_SPACING;
        while run.sim.now() < t {
            run.step(&mut tally);
        }
        let b = up[run.sim.rng().index(up.len())];
        up.push(run.spawn(Some(b)));
    }
    let deadline = run.sim.now() + Duration::from_secs(120);
    while run.joined.len() < p.nodes && run.sim.now() < deadline {
        run.step(&mut tally);
    }
    let bootstrap_secs = (run.joined.len() == p.nodes).then(|| run.sim.now().as_secs_f64());
    // Let stabilization and membership settle before loading data.
    let settle = run.sim.now() + SETTLE;
    while run.sim.now() < settle {
        run.step(&mut tally);
    }

    // 2. Load.
    for key in 0..p.keys {
        if let Some(from) = run.random_joined() {
            let req = run.req();
            run.request(
                from,
                Pending::Put { key },
                dht::Command::Put {
                    req,
                    key: key_of(key),
                    value: value_of(key),
                    ttl: None,
                },
            );
        }
    }
    let settle = run.sim.now() + SETTLE;
    while run.sim.now() < settle {
        run.step(&mut tally);
    }
    let stored: Vec<usize> = tally.stored.iter().copied().collect();

    // 3. Churn and workload.
    let start = run.sim.now();
    let end = start + Duration::from_secs(p.duration_secs);
    let mut schedule = churn::poisson(
        run.sim.rng(),
        start,
        Duration::from_secs(p.duration_secs),
        p.churn_rate,
        p.churn_rate,
        p.crash_fraction,
        0,
    )
    .into_iter()
    .peekable();
    let op_gap = if p.ops_per_sec > 0.0 {
        Duration::from_secs_f64(1.0 / p.ops_per_sec)
    } else {
        Duration::MAX
    };
    let mut next_op = start;
    let mut op_count = 0u64;
    let mut leaving: Vec<(Instant, PeerId)> = Vec::new();
    let (mut joins, mut crashes, mut leaves) = (0u64, 0u64, 0u64);
    while run.sim.now() < end {
        let now = run.sim.now();
        while schedule.peek().is_some_and(|e| e.at <= now) {
            let e = schedule.next().expect("peeked");
            match e.action {
                churn::ChurnAction::Join { .. } => {
                    if let Some(b) = run.random_joined() {
                        let id = run.spawn(Some(b));
                        tally.churn_joiners.insert(id);
                        joins += 1;
                    }
                }
                churn::ChurnAction::Crash { .. } | churn::ChurnAction::Leave { .. } => {
                    let live: Vec<PeerId> = run.sim.peers().collect();
                    if live.len() <= p.replicas.max(2) {
                        continue;
                    }
                    let victim = live[run.sim.rng().index(live.len())];
                    if matches!(e.action, churn::ChurnAction::Crash { .. }) {
                        run.sim.crash(victim);
                        run.crashed_at.insert(victim, now);
                        crashes += 1;
                    } else {
                        run.sim.command(victim, Command::Leave);
                        leaving.push((now + LEAVE_LINGER, victim));
                        leaves += 1;
                    }
                    run.joined.remove(&victim);
                }
            }
        }
        leaving.retain(|&(at, v)| {
            if at <= now {
                run.sim.crash(v);
                false
            } else {
                true
            }
        });
        while next_op <= now && !stored.is_empty() {
            next_op = next_op + op_gap;
            let Some(from) = run.random_joined() else {
                break;
            };
            let req = run.req();
            if op_count.is_multiple_of(2) {
                let mut b = [0u8; 20];
                run.sim.rng().fill(&mut b);
                let id = Id(b);
                let ideal = run.ideal_owner(&id);
                tally.lookups += 1;
                run.request(
                    from,
                    Pending::Lookup { ideal },
                    dht::Command::Lookup { req, key: id },
                );
            } else {
                let key = stored[run.sim.rng().index(stored.len())];
                tally.gets += 1;
                run.request(
                    from,
                    Pending::Get { key },
                    dht::Command::Get {
                        req,
                        key: key_of(key),
                    },
                );
            }
            op_count += 1;
        }
        run.step(&mut tally);
    }
    for (_, v) in leaving.drain(..) {
        run.sim.crash(v);
    }
    let settle = run.sim.now() + SETTLE;
    while run.sim.now() < settle {
        run.step(&mut tally);
    }
    // Requests of the churn phase that never answered count as failures.
    for pending in std::mem::take(&mut run.pending).into_values() {
        match pending {
            Pending::Lookup { .. } => tally.failed_lookups += 1,
            Pending::Get { .. } => tally.failed_gets += 1,
            Pending::Put { .. } | Pending::Audit { .. } => {}
        }
    }

    // 4. Audit.
    for attempt in 0..2u8 {
        let keys: Vec<usize> = if attempt == 0 {
            stored.clone()
        } else {
            std::mem::take(&mut tally.audit_retry)
        };
        for key in keys {
            if let Some(from) = run.random_joined() {
                let req = run.req();
                run.request(
                    from,
                    Pending::Audit { key, attempt },
                    dht::Command::Get {
                        req,
                        key: key_of(key),
                    },
                );
            }
        }
        let settle = run.sim.now() + SETTLE;
        while run.sim.now() < settle {
            run.step(&mut tally);
        }
        for pending in std::mem::take(&mut run.pending).into_values() {
            if let Pending::Audit { key, attempt: 0 } = pending {
                tally.audit_retry.push(key);
            }
        }
    }
    let keys_lost = stored
        .iter()
        .filter(|k| !tally.audit_found.contains(k))
        .count();

    // Membership at the end.
    let live: BTreeSet<PeerId> = run.sim.peers().collect();
    let mut completeness = 0.0;
    let mut stale = 0u64;
    for (me, core) in run.sim.cores() {
        let up: BTreeSet<PeerId> = core
            .gossip()
            .members()
            .filter(|(_, m)| m.state.is_up())
            .map(|(p, _)| *p)
            .collect();
        let known_live = up.iter().filter(|p| live.contains(p) && **p != me).count();
        completeness += known_live as f64 / (live.len() - 1).max(1) as f64;
        stale += up.iter().filter(|p| !live.contains(p)).count() as u64;
    }
    completeness /= live.len().max(1) as f64;
    let mut detection: Vec<f64> = run
        .crashed_at
        .iter()
        .filter_map(|(p, at)| run.detected.get(p).map(|d| (*d - *at).as_secs_f64()))
        .collect();
    let mut join_secs = std::mem::take(&mut tally.join_secs);
    let total = run.sim.stats().total;
    let sim_seconds = run.sim.now().as_secs_f64();
    let mean_nodes = (p.nodes as f64 + live.len() as f64) / 2.0;
    Ok(Report {
        nodes: p.nodes,
        vnodes: p.vnodes,
        replicas: p.replicas,
        churn_rate: p.churn_rate,
        seed: p.seed,
        churn_joins: joins,
        churn_crashes: crashes,
        churn_leaves: leaves,
        bootstrap_secs,
        join_secs_p50: percentile(&mut join_secs, 0.5),
        join_secs_max: percentile(&mut join_secs, 1.0),
        keys: stored.len(),
        lookups: tally.lookups,
        failed_lookups: tally.failed_lookups,
        wrong_owner_lookups: tally.wrong_owner,
        mean_hops: if tally.hops.is_empty() {
            0.0
        } else {
            tally.hops.iter().map(|&h| h as f64).sum::<f64>() / tally.hops.len() as f64
        },
        gets: tally.gets,
        failed_gets: tally.failed_gets,
        keys_lost,
        detection_secs_p50: percentile(&mut detection, 0.5),
        detection_secs_max: percentile(&mut detection, 1.0),
        membership_completeness: completeness,
        stale_members: stale,
        final_nodes: live.len(),
        messages_per_node_per_sec: total.sent as f64 / mean_nodes / sim_seconds.max(1e-9),
        bytes_per_node_per_sec: total.sent_bytes as f64 / mean_nodes / sim_seconds.max(1e-9),
        sim_seconds,
        events: run.sim.events_processed(),
        wall_seconds: wall.elapsed().as_secs_f64(),
    })
}

impl Report {
    /// A short human-readable table.
    pub fn render_table(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        format!(
            "full-stack peers: {} (vnodes {}, R = {}), churn {}/s joins and departures, seed {}\n\
             churn                 {} joins, {} crashes, {} graceful leaves; {} live at the end\n\
             bootstrap             all joined after {} s; churn joins p50 {} s, max {} s\n\
             lookups               {} issued, {} failed, {} wrong owner, mean hops {:.2}\n\
             gets                  {} issued, {} failed\n\
             storage               {} keys stored, {} lost\n\
             failure detection     first detection p50 {} s, max {} s\n\
             membership            completeness {:.4}, stale entries {}\n\
             traffic               {:.1} msgs/peer/s, {:.0} B/peer/s\n\
             run                   {:.0} virtual s, {} events, {:.1} wall s\n",
            self.nodes,
            self.vnodes,
            self.replicas,
            self.churn_rate,
            self.seed,
            self.churn_joins,
            self.churn_crashes,
            self.churn_leaves,
            self.final_nodes,
            opt(self.bootstrap_secs),
            opt(self.join_secs_p50),
            opt(self.join_secs_max),
            self.lookups,
            self.failed_lookups,
            self.wrong_owner_lookups,
            self.mean_hops,
            self.gets,
            self.failed_gets,
            self.keys,
            self.keys_lost,
            opt(self.detection_secs_p50),
            opt(self.detection_secs_max),
            self.membership_completeness,
            self.stale_members,
            self.messages_per_node_per_sec,
            self.bytes_per_node_per_sec,
            self.sim_seconds,
            self.events,
            self.wall_seconds,
        )
    }
}
