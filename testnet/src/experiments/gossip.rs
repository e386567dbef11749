//! `peerlab sim gossip` and `peerlab sim membership`: epidemic spreading and SWIM failure
//! detection, measured on the real `peerlab-gossip` core.
//!
//! # `sim gossip`
//!
//! `N` nodes share an ideal membership (`gossip::StaticView`: every node knows every other,
//! no probing), so per-node state does not grow with `N`. The run follows the synchronous
//! round model of Demers et al. and Karp et al.: every node ticks at the same multiples of
//! the period ([`PERIOD`], one *round*), links have a fixed latency ([`LINK_LATENCY`], much
//! smaller than the period), and what a node learns in a round becomes active at its next
//! tick (`Activation::CycleEnd`). Anti-entropy runs every `--anti-entropy-every` rounds.
//! `U` updates are published at once, each by its own random node, half a round before the
//! first tick; a node that activates an update at tick `r` learned it in round `r − 1`,
//! so the origin's first push is round 1.
//!
//! With `--churn-rate C`, `⌊C·N⌋` random nodes (never an origin) crash at uniformly random
//! times during the first `⌈log2 N + ln N⌉` rounds, while the update spreads; residue and
//! times count only the nodes alive at the end.
//!
//! The run stops when no rumor is hot anywhere and (except in rumor mode) every live node
//! holds every update, or after `--max-rounds`.
//!
//! Figures: `residue` = fraction of (live node, update) pairs never reached; `traffic_per_node`
//! = messages that carry update data (rumor pushes, anti-entropy answers and deltas) per
//! node — Demers' `m`; `messages_per_node` counts every message (digests, feedback replies
//! too); `t_ave` = mean round in which a non-origin node learned an update; `t_last` = mean
//! over updates of the round in which the last node learned it; `rounds_to_99` and
//! `rounds_to_full` = first round after which 99 % (all) of the pairs are covered.
//! `--runs R` repeats with seeds `S, S+1, …` and reports means (and the median and maximum
//! of `rounds_to_full`).
//!
//! # `sim membership`
//!
//! `N − 1` nodes start with SWIM membership of each other (`Gossip::with_members`, LAN
//! defaults, random timer phases), one more node joins through a random seed after
//! [`JOIN_AT`], and `K` random nodes crash at once at [`CRASH_AT`]. `join_rounds_full` is the
//! rounds until every member has reported the joiner up; a crash's detection time is the
//! rounds until every live member has reported it down. Every `MemberDown` about a node that
//! is alive is a false positive.

use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::time::{Duration, Instant as WallInstant};

use clap::{Args, ValueEnum};
use peerlab_gossip::{self as gossip, Command, Config, Event, Gossip, MemberUpdate, StaticView};
use peerlab_overlay::{Instant, Keypair, PeerId};
use serde::Serialize;

use super::{ExperimentError, invalid};
use peerlab_sim::{Latency, Sim, SimConfig};

/// One round: the gossip period.
pub const PERIOD: Duration = Duration::from_millis(200);
/// One-way latency of every link: a twentieth of a round, so an exchange of three messages
/// completes well inside its round.
pub const LINK_LATENCY: Duration = Duration::from_millis(10);
/// Largest `sim gossip` network (memory: about 1.5 KiB per node).
pub const MAX_NODES: usize = 1_000_000;
/// Largest `sim membership` group (every node holds the full member table: `O(N²)` memory).
pub const MAX_MEMBERSHIP_NODES: usize = 5_000;
/// Most repetitions of one configuration.
pub const MAX_RUNS: u64 = 1000;
/// When the joiner of `sim membership` joins.
pub const JOIN_AT: Duration = Duration::from_secs(5);
/// When the `K` nodes of `sim membership` crash.
pub const CRASH_AT: Duration = Duration::from_secs(30);
/// Member records the simulated group's shared memo of verified signatures holds (about
/// 200 bytes each): every member's record and every refutation of a run of
/// [`MAX_MEMBERSHIP_NODES`] fit many times over.
pub const VERIFIED_MEMO: usize = 1 << 16;
/// How long `sim membership` waits for every crash to be detected everywhere.
pub const DETECTION_DEADLINE: Duration = Duration::from_secs(120);
/// Virtual time `sim membership` runs after the last detection, looking for false positives.
pub const QUIET_TAIL: Duration = Duration::from_secs(30);

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeArg {
    /// Rumor mongering only.
    Rumor,
    /// Anti-entropy only.
    AntiEntropy,
    /// Both.
    Combined,
}

/// `--exchange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExchangeArg {
    /// The initiator's versions flow to the partner.
    Push,
    /// The partner's versions flow to the initiator.
    Pull,
    /// Both.
    PushPull,
}

/// `--variant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VariantArg {
    /// Lose interest after k consecutive contacts that knew the rumor.
    FeedbackCounter,
    /// Lose interest with probability 1/k per contact that knew the rumor.
    FeedbackCoin,
    /// Lose interest after k rounds of pushing.
    BlindCounter,
    /// Lose interest with probability 1/k after each round of pushing.
    BlindCoin,
}

/// Flags of `peerlab sim gossip`.
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// Number of nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Spreading mechanism.
    #[arg(long, value_enum, default_value_t = ModeArg::Combined)]
    pub mode: ModeArg,
    /// Anti-entropy direction (anti-entropy and combined modes).
    #[arg(long, value_enum, default_value_t = ExchangeArg::PushPull)]
    pub exchange: ExchangeArg,
    /// How an infective node loses interest in a rumor (rumor and combined modes).
    #[arg(long, value_enum, default_value_t = VariantArg::FeedbackCounter)]
    pub variant: VariantArg,
    /// The variant's k: counter limit, or 1/k coin probability.
    #[arg(long, default_value_t = 3)]
    pub k: u32,
    /// Members each rumor push goes to per round.
    #[arg(long, default_value_t = 3)]
    pub fanout: usize,
    /// Updates published at once, each by its own random node.
    #[arg(long, default_value_t = 1)]
    pub updates: usize,
    /// Probability that any one message is lost.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Fraction of nodes that crash while the update spreads.
    #[arg(long, default_value_t = 0.0)]
    pub churn_rate: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Repetitions with seeds S, S+1, …; figures are means.
    #[arg(long, default_value_t = 1)]
    pub runs: u64,
    /// Rounds between two anti-entropy exchanges of a node.
    #[arg(long, default_value_t = 1)]
    pub anti_entropy_every: u32,
    /// Give up after this many rounds.
    #[arg(long, default_value_t = 500)]
    pub max_rounds: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            nodes: 1000,
            mode: ModeArg::Combined,
            exchange: ExchangeArg::PushPull,
            variant: VariantArg::FeedbackCounter,
            k: 3,
            fanout: 3,
            updates: 1,
            loss: 0.0,
            churn_rate: 0.0,
            seed: 1,
            runs: 1,
            anti_entropy_every: 1,
            max_rounds: 500,
        }
    }
}

/// What `sim gossip` measured (means over runs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Nodes.
    pub nodes: usize,
    /// Mode.
    pub mode: ModeArg,
    /// Anti-entropy direction.
    pub exchange: ExchangeArg,
    /// Rumor variant.
    pub variant: VariantArg,
    /// The variant's k.
    pub k: u32,
    /// Rumor fan-out.
    pub fanout: usize,
    /// Updates per run.
    pub updates: usize,
    /// Message loss probability.
    pub loss: f64,
    /// Fraction of nodes crashed during the spread.
    pub churn_rate: f64,
    /// First seed.
    pub seed: u64,
    /// Runs averaged.
    pub runs: u64,
    /// Fraction of (live node, update) pairs never reached (mean over runs).
    pub residue: f64,
    /// Largest residue of any run.
    pub residue_max: f64,
    /// Runs in which every live node got every update.
    pub runs_complete: u64,
    /// Messages carrying update data per node (Demers' m).
    pub traffic_per_node: f64,
    /// All messages per node.
    pub messages_per_node: f64,
    /// Rounds until 99 % of the pairs were covered (mean over runs that got there).
    pub rounds_to_99: Option<f64>,
    /// Rounds until every pair was covered (mean over complete runs).
    pub rounds_to_full: Option<f64>,
    /// Median of `rounds_to_full` over complete runs.
    pub rounds_to_full_median: Option<f64>,
    /// Largest `rounds_to_full` of a complete run.
    pub rounds_to_full_max: Option<u32>,
    /// Mean round in which a node learned an update.
    pub t_ave: f64,
    /// Mean (over updates) round in which the last node learned it.
    pub t_last: f64,
    /// Bytes sent per node.
    pub bytes_per_node: f64,
    /// Rounds simulated (mean).
    pub rounds: f64,
    /// Input refused by the cores (should be 0 in a benign run).
    pub rejected: u64,
    /// Simulator events processed (all runs).
    pub events: u64,
    /// Wall-clock seconds (the only non-deterministic figure).
    pub wall_seconds: f64,
}

struct RunResult {
    residue: f64,
    traffic: f64,
    messages: f64,
    bytes: f64,
    to_99: Option<u32>,
    to_full: Option<u32>,
    t_ave: f64,
    t_last: f64,
    rounds: u32,
    rejected: u64,
    events: u64,
}

/// Message kinds that carry update data.
const DATA_KINDS: [&str; 3] = ["gossip_rumor", "gossip_syn_ack", "gossip_delta"];

fn validate(p: &Params) -> Result<(), ExperimentError> {
    if p.nodes < 2 || p.nodes > MAX_NODES {
        return invalid(format!("--nodes must be in 2..={MAX_NODES}"));
    }
    if p.k == 0 || p.k > 1000 {
        return invalid("--k must be in 1..=1000");
    }
    if p.fanout == 0 || p.fanout >= p.nodes {
        return invalid("--fanout must be in 1..nodes");
    }
    if p.updates == 0 || p.updates > p.nodes / 2 || p.updates > 1000 {
        return invalid("--updates must be in 1..=min(nodes/2, 1000)");
    }
    if !(0.0..1.0).contains(&p.loss) {
        return invalid("--loss must be in [0, 1)");
    }
    if !(0.0..=0.5).contains(&p.churn_rate) {
        return invalid("--churn-rate must be in [0, 0.5]");
    }
    if p.runs == 0 || p.runs > MAX_RUNS {
        return invalid(format!("--runs must be in 1..={MAX_RUNS}"));
    }
    if p.anti_entropy_every == 0 || p.max_rounds == 0 || p.max_rounds > 100_000 {
        return invalid("--anti-entropy-every must be ≥ 1 and --max-rounds in 1..=100000");
    }
    Ok(())
}

/// The core configuration a `sim gossip` run uses.
pub fn core_config(p: &Params) -> Config {
    let mode = match p.mode {
        ModeArg::Rumor => gossip::Mode::Rumor,
        ModeArg::AntiEntropy => gossip::Mode::AntiEntropy,
        ModeArg::Combined => gossip::Mode::Combined,
    };
    let mut c = Config::synchronous_rounds(mode);
    c.period = PERIOD;
    c.anti_entropy_period = PERIOD * p.anti_entropy_every;
    c.exchange = match p.exchange {
        ExchangeArg::Push => gossip::Exchange::Push,
        ExchangeArg::Pull => gossip::Exchange::Pull,
        ExchangeArg::PushPull => gossip::Exchange::PushPull,
    };
    c.variant = match p.variant {
        VariantArg::FeedbackCounter => gossip::Variant::FeedbackCounter,
        VariantArg::FeedbackCoin => gossip::Variant::FeedbackCoin,
        VariantArg::BlindCounter => gossip::Variant::BlindCounter,
        VariantArg::BlindCoin => gossip::Variant::BlindCoin,
    };
    c.k = NonZeroU32::new(p.k).unwrap_or(NonZeroU32::MIN);
    c.fanout = p.fanout;
    // The safety cap on a rumor's age must not cut the slowest variants short.
    c.max_rumor_rounds = p.max_rounds;
    c
}

/// Runs `sim gossip`.
pub fn run(p: &Params) -> Result<Report, ExperimentError> {
    validate(p)?;
    #[allow(clippy::disallowed_methods)] // wall time is reported, never fed to a core
    let wall = WallInstant::now();
    let results: Vec<RunResult> = (0..p.runs).map(|i| run_once(p, p.seed + i)).collect();
    let n = results.len() as f64;
    let mean = |f: &dyn Fn(&RunResult) -> f64| results.iter().map(f).sum::<f64>() / n;
    let mean_opt = |v: Vec<u32>| {
        (!v.is_empty()).then(|| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64)
    };
    let mut full: Vec<u32> = results.iter().filter_map(|r| r.to_full).collect();
    full.sort_unstable();
    let median = (!full.is_empty()).then(|| {
        let m = full.len() / 2;
        if full.len() % 2 == 1 {
            full[m] as f64
        } else {
            (full[m - 1] + full[m]) as f64 / 2.0
        }
    });
    Ok(Report {
        nodes: p.nodes,
        mode: p.mode,
        exchange: p.exchange,
        variant: p.variant,
        k: p.k,
        fanout: p.fanout,
        updates: p.updates,
        loss: p.loss,
        churn_rate: p.churn_rate,
        seed: p.seed,
        runs: p.runs,
        residue: mean(&|r| r.residue),
        residue_max: results.iter().map(|r| r.residue).fold(0.0, f64::max),
        runs_complete: results.iter().filter(|r| r.residue == 0.0).count() as u64,
        traffic_per_node: mean(&|r| r.traffic),
        messages_per_node: mean(&|r| r.messages),
        rounds_to_99: mean_opt(results.iter().filter_map(|r| r.to_99).collect()),
        rounds_to_full: mean_opt(full.clone()),
        rounds_to_full_median: median,
        rounds_to_full_max: full.last().copied(),
        t_ave: mean(&|r| r.t_ave),
        t_last: mean(&|r| r.t_last),
        bytes_per_node: mean(&|r| r.bytes),
        rounds: mean(&|r| r.rounds as f64),
        rejected: results.iter().map(|r| r.rejected).sum(),
        events: results.iter().map(|r| r.events).sum(),
        wall_seconds: wall.elapsed().as_secs_f64(),
    })
}

fn run_once(p: &Params, seed: u64) -> RunResult {
    let n = p.nodes;
    let mut sim: Sim<Gossip> = Sim::new(SimConfig {
        seed,
        latency: Latency::Fixed(LINK_LATENCY),
        loss: p.loss,
        ..Default::default()
    });
    let keys: Vec<Keypair> = (0..n as u64).map(Keypair::synthetic).collect();
    let peers: Vec<PeerId> = keys.iter().map(Keypair::peer_id).collect();
    let view = StaticView::new(peers.clone());
    let config = core_config(p);
    for key in keys {
        let peer = key.peer_id();
        let core = Gossip::with_static_view(key, view.clone(), config.clone())
            .expect("experiment config is valid");
        sim.add_node(peer, core);
    }
    // Origins, and the nodes that will crash (never an origin).
    let crashes = (p.churn_rate * n as f64).floor() as usize;
    let chosen = sim.rng().sample_indices(n, p.updates + crashes);
    let origins: Vec<PeerId> = chosen[..p.updates].iter().map(|&i| peers[i]).collect();
    let victims: Vec<PeerId> = chosen[p.updates..].iter().map(|&i| peers[i]).collect();
    let period_us = PERIOD.as_micros() as u64;
    let t_pub = Instant(period_us / 2);
    let window = ((n as f64).log2() + (n as f64).ln()).ceil() as u64;
    for v in victims {
        let at = Instant(period_us + sim.rng().below(window * period_us));
        sim.schedule(at, move |s| {
            s.crash(v);
        });
    }
    sim.run_until(t_pub);
    let key = |i: usize| format!("update-{i}");
    for (i, o) in origins.iter().enumerate() {
        sim.command(
            *o,
            Command::Publish {
                req: i as u64,
                key: key(i),
                value: vec![0xAB; 16],
            },
        );
    }
    // Per (update, round): nodes that learned it. Updates are told apart by origin.
    let origin_index = |o: &PeerId| origins.iter().position(|x| x == o);
    let mut learned: Vec<Vec<(PeerId, u32)>> = vec![Vec::new(); p.updates];
    let round_of = |t: Instant| -> u32 {
        // Activation at tick r (time r·P) means "learned in round r − 1".
        let d = t
            .as_micros()
            .saturating_sub(t_pub.as_micros() + period_us / 2);
        d.div_ceil(period_us) as u32
    };
    let mut to_99 = None;
    let mut to_full = None;
    let mut round = 0u32;
    let total_pairs = |sim: &Sim<Gossip>| sim.len() * p.updates;
    loop {
        round += 1;
        // Run through tick `round + 1`, where round `round`'s learning becomes active, and
        // half a round more, so that the pushes of that tick have arrived (as pending).
        sim.run_until(Instant((round as u64 + 1) * period_us + period_us / 2));
        for (t, peer, ev) in sim.take_events() {
            if let Event::EntryUpdated { origin, .. } = ev
                && let Some(i) = origin_index(&origin)
                && peer != origin
            {
                learned[i].push((peer, round_of(t)));
            }
        }
        let covered: usize = sim
            .cores()
            .map(|(_, g)| {
                origins
                    .iter()
                    .enumerate()
                    .filter(|(i, o)| g.entry(o, &key(*i)).is_some())
                    .count()
            })
            .sum();
        let pairs = total_pairs(&sim);
        if to_99.is_none() && covered * 100 >= pairs * 99 {
            to_99 = Some(round);
        }
        if to_full.is_none() && covered == pairs {
            to_full = Some(round);
        }
        let hot = sim
            .cores()
            .any(|(_, g)| g.hot_data_rumors() > 0 || g.pending() > 0);
        let done = match p.mode {
            ModeArg::Rumor => !hot,
            _ => !hot && covered == pairs,
        };
        if done || round >= p.max_rounds {
            break;
        }
    }
    // Figures over the nodes alive at the end.
    let alive: std::collections::BTreeSet<PeerId> = sim.peers().collect();
    let pairs = total_pairs(&sim);
    let mut covered = 0usize;
    let (mut t_sum, mut t_n, mut t_last_sum) = (0u64, 0u64, 0.0);
    for (i, l) in learned.iter().enumerate() {
        let live: Vec<u32> = l
            .iter()
            .filter(|(p, _)| alive.contains(p))
            .map(|(_, r)| *r)
            .collect();
        covered += live.len() + usize::from(alive.contains(&origins[i]));
        t_sum += live.iter().map(|&r| r as u64).sum::<u64>();
        t_n += live.len() as u64;
        t_last_sum += live.iter().copied().max().unwrap_or(0) as f64;
    }
    let stats = sim.stats();
    let traffic: u64 = DATA_KINDS
        .iter()
        .filter_map(|k| stats.kinds.get(k))
        .map(|k| k.sent)
        .sum();
    let nf = n as f64;
    RunResult {
        residue: 1.0 - covered as f64 / pairs.max(1) as f64,
        traffic: traffic as f64 / nf,
        messages: stats.total.sent as f64 / nf,
        bytes: stats.total.sent_bytes as f64 / nf,
        to_99,
        to_full,
        t_ave: if t_n == 0 {
            0.0
        } else {
            t_sum as f64 / t_n as f64
        },
        t_last: t_last_sum / p.updates as f64,
        rounds: round,
        rejected: sim.cores().map(|(_, g)| g.rejected().total()).sum(),
        events: sim.events_processed(),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.2}"))
}

impl Report {
    /// A short human-readable table.
    pub fn render_table(&self) -> String {
        let mut s = String::new();
        let rows: Vec<(&str, String)> = vec![
            ("nodes", self.nodes.to_string()),
            (
                "mode",
                format!("{:?} (exchange {:?})", self.mode, self.exchange),
            ),
            (
                "variant",
                format!(
                    "{:?}, k = {}, fan-out {}",
                    self.variant, self.k, self.fanout
                ),
            ),
            (
                "updates / runs",
                format!("{} / {} (seed {})", self.updates, self.runs, self.seed),
            ),
            (
                "loss / churn",
                format!("{} / {}", self.loss, self.churn_rate),
            ),
            (
                "residue",
                format!(
                    "{:.4} (max {:.4}, complete runs {})",
                    self.residue, self.residue_max, self.runs_complete
                ),
            ),
            (
                "traffic / node",
                format!(
                    "{:.2} (all messages {:.2})",
                    self.traffic_per_node, self.messages_per_node
                ),
            ),
            ("rounds to 99 %", opt(self.rounds_to_99)),
            (
                "rounds to full",
                format!(
                    "{} (median {}, max {})",
                    opt(self.rounds_to_full),
                    opt(self.rounds_to_full_median),
                    self.rounds_to_full_max
                        .map_or("-".into(), |m| m.to_string())
                ),
            ),
            (
                "t_ave / t_last",
                format!("{:.2} / {:.2}", self.t_ave, self.t_last),
            ),
            ("bytes / node", format!("{:.0}", self.bytes_per_node)),
            ("events", self.events.to_string()),
            ("wall seconds", format!("{:.2}", self.wall_seconds)),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "{k:<16} {v}");
        }
        s
    }
}

// ---------------------------------------------------------------------------------------
// sim membership
// ---------------------------------------------------------------------------------------

/// Flags of `peerlab sim membership`.
#[derive(Debug, Clone, Args)]
pub struct MembershipParams {
    /// Number of nodes (including the one that joins).
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Nodes that crash at once.
    #[arg(long, default_value_t = 1)]
    pub crash: usize,
    /// Probability that any one message is lost.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Repetitions with seeds S, S+1, …; detection figures pool all crashes.
    #[arg(long, default_value_t = 1)]
    pub runs: u64,
}

impl Default for MembershipParams {
    fn default() -> Self {
        MembershipParams {
            nodes: 1000,
            crash: 1,
            loss: 0.0,
            seed: 1,
            runs: 1,
        }
    }
}

/// What `sim membership` measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MembershipReport {
    /// Nodes.
    pub nodes: usize,
    /// Crashes per run.
    pub crash: usize,
    /// Message loss probability.
    pub loss: f64,
    /// First seed.
    pub seed: u64,
    /// Runs.
    pub runs: u64,
    /// Median rounds from a crash until every live member reported it down.
    pub detection_rounds_p50: Option<f64>,
    /// Largest such time.
    pub detection_rounds_max: Option<f64>,
    /// The documented bound `(m + 1)·T + S + R` in rounds (crate docs of `peerlab-gossip`).
    pub detection_bound_rounds: f64,
    /// Crashes not detected by every live member before the deadline.
    pub undetected: usize,
    /// `MemberDown` events about nodes that were alive.
    pub false_positives: u64,
    /// `MemberSuspect` events about nodes that were alive (refuted suspicions).
    pub false_suspicions: u64,
    /// Rounds until every member reported the joiner up (mean over runs; `null` if never).
    pub join_rounds_full: Option<f64>,
    /// Largest such time over runs.
    pub join_rounds_max: Option<f64>,
    /// Messages per node per second of virtual time.
    pub messages_per_node_per_second: f64,
    /// Bytes per node per second of virtual time.
    pub bytes_per_node_per_second: f64,
    /// Simulator events processed (all runs).
    pub events: u64,
    /// Wall-clock seconds (the only non-deterministic figure).
    pub wall_seconds: f64,
}

/// The detection bound of the crate docs, in rounds: `(m + 1)·T + S + R` with `m = 7`
/// unprobed periods (probability e⁻⁷ ≈ 10⁻³) and `R = log_(F+1) N + ln N / F + 5` rounds
/// for the `dead` rumor.
pub fn detection_bound_rounds(n: usize, config: &Config) -> f64 {
    let m = 7.0;
    let round = config.period.as_secs_f64();
    let t = config.probe_period.as_secs_f64() / round;
    let s = config.suspicion_timeout.as_secs_f64() / round;
    let f = config.fanout as f64;
    let nf = n as f64;
    let spread = (nf.ln() / (f + 1.0).ln() + nf.ln() / f + 5.0).ceil();
    (m + 1.0) * t + s + spread
}

struct MembershipRun {
    detections: Vec<Option<f64>>,
    false_positives: u64,
    false_suspicions: u64,
    join_rounds: Option<f64>,
    messages: u64,
    bytes: u64,
    seconds: f64,
    events: u64,
}

/// Runs `sim membership`.
pub fn run_membership(p: &MembershipParams) -> Result<MembershipReport, ExperimentError> {
    if p.nodes < 4 || p.nodes > MAX_MEMBERSHIP_NODES {
        return invalid(format!("--nodes must be in 4..={MAX_MEMBERSHIP_NODES}"));
    }
    if p.crash == 0 || p.crash > p.nodes / 4 {
        return invalid("--crash must be in 1..=nodes/4");
    }
    if !(0.0..0.5).contains(&p.loss) {
        return invalid("--loss must be in [0, 0.5)");
    }
    if p.runs == 0 || p.runs > MAX_RUNS {
        return invalid(format!("--runs must be in 1..={MAX_RUNS}"));
    }
    #[allow(clippy::disallowed_methods)] // wall time is reported, never fed to a core
    let wall = WallInstant::now();
    let runs: Vec<MembershipRun> = (0..p.runs)
        .map(|i| membership_once(p, p.seed + i))
        .collect();
    let mut det: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.detections.iter().flatten().copied())
        .collect();
    det.sort_by(f64::total_cmp);
    let undetected = runs
        .iter()
        .flat_map(|r| &r.detections)
        .filter(|d| d.is_none())
        .count();
    let joins: Vec<f64> = runs.iter().filter_map(|r| r.join_rounds).collect();
    let secs: f64 = runs.iter().map(|r| r.seconds).sum::<f64>() * p.nodes as f64;
    Ok(MembershipReport {
        nodes: p.nodes,
        crash: p.crash,
        loss: p.loss,
        seed: p.seed,
        runs: p.runs,
        detection_rounds_p50: (!det.is_empty()).then(|| det[det.len() / 2]),
        detection_rounds_max: det.last().copied(),
        detection_bound_rounds: detection_bound_rounds(p.nodes, &Config::lan()),
        undetected,
        false_positives: runs.iter().map(|r| r.false_positives).sum(),
        false_suspicions: runs.iter().map(|r| r.false_suspicions).sum(),
        join_rounds_full: (joins.len() == runs.len())
            .then(|| joins.iter().sum::<f64>() / joins.len() as f64),
        join_rounds_max: joins.iter().copied().reduce(f64::max),
        messages_per_node_per_second: runs.iter().map(|r| r.messages).sum::<u64>() as f64 / secs,
        bytes_per_node_per_second: runs.iter().map(|r| r.bytes).sum::<u64>() as f64 / secs,
        events: runs.iter().map(|r| r.events).sum(),
        wall_seconds: wall.elapsed().as_secs_f64(),
    })
}

fn membership_once(p: &MembershipParams, seed: u64) -> MembershipRun {
    let config = Config::lan();
    let round = config.period.as_secs_f64();
    let mut sim: Sim<Gossip> = Sim::new(SimConfig {
        seed,
        latency: Latency::Fixed(LINK_LATENCY),
        loss: p.loss,
        ..Default::default()
    });
    let mut keys: Vec<Keypair> = (0..p.nodes as u64).map(Keypair::synthetic).collect();
    let peers: Vec<PeerId> = keys.iter().map(Keypair::peer_id).collect();
    let addr = |i: usize| vec![format!("/sim/{i}")];
    let joiner_key = keys.pop().expect("nodes ≥ 4");
    let (joiner, founders) = peers.split_last().expect("nodes ≥ 4");
    // Verification is a pure function: the simulated nodes share what they verified.
    let verified = gossip::VerifiedRecords::new(VERIFIED_MEMO);
    // Each founder's own signed record, as every other founder starts out holding it.
    let records: Vec<MemberUpdate> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| MemberUpdate::alive(k, 0, addr(i)))
        .collect();
    for (i, key) in keys.into_iter().enumerate() {
        let peer = key.peer_id();
        let others = records.iter().filter(|r| r.peer != peer).cloned();
        let mut core = Gossip::with_members(key, addr(i), config.clone(), others)
            .expect("LAN config is valid");
        core.share_verified(verified.clone());
        sim.add_node(peer, core);
    }
    let joiner = *joiner;
    let seed_peer = founders[sim.rng().index(founders.len())];
    let mut victims: Vec<PeerId> = Vec::new();
    for i in sim.rng().sample_indices(founders.len(), p.crash) {
        victims.push(founders[i]);
    }
    let t_join = Instant::ZERO + JOIN_AT;
    let t_crash = Instant::ZERO + CRASH_AT;
    let jaddr = addr(p.nodes - 1);
    let jconfig = config.clone();
    sim.schedule(t_join, move |s| {
        let mut core = Gossip::new(joiner_key, jaddr, jconfig).expect("LAN config is valid");
        core.share_verified(verified);
        s.add_node(joiner, core);
        s.command(
            joiner,
            Command::Join {
                seeds: vec![seed_peer],
            },
        );
    });
    let vs = victims.clone();
    sim.schedule(t_crash, move |s| {
        for v in vs {
            s.crash(v);
        }
    });
    // Track who has reported what.
    let n_live_after = p.nodes - p.crash;
    let mut join_seen: std::collections::BTreeSet<PeerId> = Default::default();
    let mut join_done: Option<Instant> = None;
    let mut down_seen: Vec<std::collections::BTreeSet<PeerId>> =
        vec![Default::default(); victims.len()];
    let mut down_done: Vec<Option<Instant>> = vec![None; victims.len()];
    let (mut fp, mut fs) = (0u64, 0u64);
    let deadline = t_crash + DETECTION_DEADLINE;
    let mut end = deadline;
    let mut t = Instant::ZERO;
    while t < end {
        t = t + Duration::from_secs(1);
        sim.run_until(t);
        for (at, observer, ev) in sim.take_events() {
            let crashed = |x: &PeerId| victims.contains(x) && at >= t_crash;
            match ev {
                Event::MemberUp { peer, .. } if peer == joiner => {
                    join_seen.insert(observer);
                }
                Event::Joined { .. } if observer == joiner => {
                    join_seen.insert(observer);
                }
                Event::MemberDown { peer } => match victims.iter().position(|v| *v == peer) {
                    Some(i) if crashed(&peer) => {
                        down_seen[i].insert(observer);
                        // Observers are live nodes: every node but the K victims.
                        if down_done[i].is_none() && down_seen[i].len() >= n_live_after {
                            down_done[i] = Some(at);
                        }
                    }
                    _ => fp += 1,
                },
                Event::MemberSuspect { peer } if !crashed(&peer) => fs += 1,
                _ => {}
            }
            // Every node (the joiner's own `Joined` included), minus crashed ones.
            let members_now = if at >= t_crash { n_live_after } else { p.nodes };
            if join_done.is_none()
                && join_seen.iter().filter(|o| !crashed(o)).count() >= members_now
            {
                join_done = Some(at);
            }
        }
        if down_done.iter().all(Option::is_some) && end == deadline {
            end = t + QUIET_TAIL;
        }
    }
    let detections = victims
        .iter()
        .enumerate()
        .map(|(i, _)| down_done[i].map(|d| (d - t_crash).as_secs_f64() / round))
        .collect();
    let stats = sim.stats();
    MembershipRun {
        detections,
        false_positives: fp,
        false_suspicions: fs,
        join_rounds: join_done.map(|d| (d - t_join).as_secs_f64() / round),
        messages: stats.total.sent,
        bytes: stats.total.sent_bytes,
        seconds: sim.now().as_secs_f64(),
        events: sim.events_processed(),
    }
}

impl MembershipReport {
    /// A short human-readable table.
    pub fn render_table(&self) -> String {
        let mut s = String::new();
        let rows: Vec<(&str, String)> = vec![
            ("nodes", self.nodes.to_string()),
            (
                "crashes / runs",
                format!("{} / {} (seed {})", self.crash, self.runs, self.seed),
            ),
            ("loss", self.loss.to_string()),
            ("detection p50", opt(self.detection_rounds_p50)),
            (
                "detection max",
                format!(
                    "{} (bound {:.0}, undetected {})",
                    opt(self.detection_rounds_max),
                    self.detection_bound_rounds,
                    self.undetected
                ),
            ),
            (
                "false positives",
                format!(
                    "{} (refuted suspicions {})",
                    self.false_positives, self.false_suspicions
                ),
            ),
            (
                "join rounds",
                format!(
                    "{} (max {})",
                    opt(self.join_rounds_full),
                    opt(self.join_rounds_max)
                ),
            ),
            (
                "msgs/node/s",
                format!(
                    "{:.2} ({:.0} bytes)",
                    self.messages_per_node_per_second, self.bytes_per_node_per_second
                ),
            ),
            ("events", self.events.to_string()),
            ("wall seconds", format!("{:.2}", self.wall_seconds)),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "{k:<16} {v}");
        }
        s
    }
}
