//! `peerlab sim attack`: hostile peers against the real cores, with and without the
//! defenses, in the deterministic simulator.
//!
//! A fraction `F` of the `N` peers is hostile. Each hostile peer runs the honest core
//! underneath (it is a ring member, a group member, a swarm participant like anyone) and an
//! attack of the chosen kind on top ([`node::Attack`]), speaking the real wire messages.
//! Honest peers run the real cores with `defenses` = `!--no-defenses`. Every run is done
//! twice with the same seed and the same peers: once with the attack, and once with the
//! hostile peers behaving (the *baseline*); `honest_success_rate` and
//! `baseline_success_rate` are the shares of honest operations that succeed in each.
//!
//! | kind | core | honest operation that must succeed |
//! |---|---|---|
//! | `dht-overwrite` | `Dht` | a get of an honest key returns the honest value |
//! | `dht-fill` | `Dht` | a put made after the attack, read back by a get |
//! | `provider-flood` | `Dht` | a provider lookup returns at least one honest provider |
//! | `sybil-eclipse` | `Dht` | a get of an honest key returns the honest value |
//! | `block-inject` | `Swarm` | a download completes, byte-identical, before the deadline |
//! | `member-poison` | `Gossip` | an honest member is up at its real addresses in an honest peer's table |
//!
//! The method of each kind is in its module's docs (`dht.rs`, `swarm.rs`, `gossip.rs`) and
//! in docs/experiments/security.md, with the measured table.

mod dht;
mod gossip;
mod node;
mod swarm;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant as WallInstant;

use clap::{Args, ValueEnum};
use peerlab_overlay::{Instant, Offence, PeerId};
use serde::Serialize;

use super::{ExperimentError, Rendered, invalid, rendered};

/// Largest `--nodes`: the DHT kinds keep every peer's tables in memory, and runs at this
/// size still take minutes on a laptop.
const MAX_NODES: usize = 5_000;

/// Fewest peers a run needs: a few honest peers besides the hostile ones, seeders and
/// replica sets.
const MIN_NODES: usize = 20;

/// Fractions of hostile peers `--sweep` runs.
const SWEEP_FRACTIONS: [f64; 3] = [0.01, 0.1, 0.3];

/// Most seeds `--sweep` averages over.
const MAX_SWEEP_SEEDS: u64 = 20;

/// The attacks `peerlab sim attack` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Overwrite and delete honest DHT keys: puts and Stores signed with the attacker's key
    /// for keys others own, forged signatures in the writer's name, tombstones,
    /// far-future versions.
    DhtOverwrite,
    /// Fill honest peers' DHT stores with the attackers' records so honest writes fail.
    DhtFill,
    /// Fake provider entries (in others' names, long lifetimes) to hide content.
    ProviderFlood,
    /// Unsolicited and corrupt blocks into swarms, and slots taken by peers that never
    /// deliver.
    BlockInject,
    /// Forged member addresses and death claims in gossip.
    MemberPoison,
    /// Identities ground so that a virtual node lands just before each target key, which
    /// then answer lookups and gets for those keys wrongly.
    SybilEclipse,
}

impl Kind {
    /// Every kind, in table order.
    pub const ALL: [Kind; 6] = [
        Kind::DhtOverwrite,
        Kind::DhtFill,
        Kind::ProviderFlood,
        Kind::BlockInject,
        Kind::MemberPoison,
        Kind::SybilEclipse,
    ];

    /// The kind's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::DhtOverwrite => "dht-overwrite",
            Kind::DhtFill => "dht-fill",
            Kind::ProviderFlood => "provider-flood",
            Kind::BlockInject => "block-inject",
            Kind::MemberPoison => "member-poison",
            Kind::SybilEclipse => "sybil-eclipse",
        }
    }

    /// What an honest operation of this kind is, and when it succeeds.
    pub fn metric(self) -> &'static str {
        match self {
            Kind::DhtOverwrite | Kind::SybilEclipse => {
                "gets of honest keys returning the honest value"
            }
            Kind::DhtFill => "puts made during the attack that a later get returns",
            Kind::ProviderFlood => "provider lookups returning an honest provider",
            Kind::BlockInject => "downloads completing byte-identical before the deadline",
            Kind::MemberPoison => {
                "(honest peer, honest member) pairs: member up at its real addresses"
            }
        }
    }
}

/// Parameters of `peerlab sim attack`.
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// The attack.
    #[arg(long, value_enum, default_value_t = Kind::DhtOverwrite)]
    pub kind: Kind,
    /// Fraction of the peers that is hostile, in [0, 0.5].
    #[arg(long, default_value_t = 0.1)]
    pub fraction: f64,
    /// Peers, honest and hostile.
    #[arg(long, default_value_t = 500)]
    pub nodes: usize,
    /// Seed of every random choice (the same seed gives the same figures).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run the honest cores with `defenses` off: the behaviour without the rules against
    /// hostile peers.
    #[arg(long)]
    pub no_defenses: bool,
    /// Run every kind at F ∈ {0.01, 0.1, 0.3}, with and without defenses, over
    /// `--seeds` seeds from `--seed`, and print the table (Markdown) of mean success rates.
    #[arg(long)]
    pub sweep: bool,
    /// Seeds `--sweep` averages over.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
}

/// What one simulated run (with or without the attack) measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outcome {
    /// Honest operations issued.
    pub(crate) ops: u64,
    /// Honest operations that succeeded.
    pub(crate) ok: u64,
    /// Messages hostile peers sent.
    pub(crate) attacker_messages: u64,
    /// Messages honest peers sent.
    pub(crate) honest_messages: u64,
    /// Offences honest peers reported.
    pub(crate) offences: Offences,
    /// Kind-specific counters.
    pub(crate) detail: BTreeMap<&'static str, u64>,
    /// Virtual seconds simulated.
    pub(crate) virtual_seconds: f64,
    /// Simulator events processed.
    pub(crate) events: u64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        if self.ops == 0 {
            0.0
        } else {
            self.ok as f64 / self.ops as f64
        }
    }
}

/// Offences honest peers reported, split by whom they were against.
#[derive(Clone, Debug, Default)]
pub(crate) struct Offences {
    /// Against hostile peers.
    pub(crate) against_attackers: u64,
    /// Against honest peers (false accusations, or honest peers with stale views).
    pub(crate) against_honest: u64,
    /// Severity summed per (reporter, offender) pair, for hostile offenders.
    strikes: BTreeMap<(PeerId, PeerId), u32>,
    /// Offences against hostile peers by name.
    by_name: BTreeMap<&'static str, u64>,
}

impl Offences {
    /// Counts what the simulator collected; only honest reporters count (a hostile peer's
    /// own core reports what it rejects, too).
    pub(crate) fn absorb(
        &mut self,
        offences: Vec<(Instant, PeerId, PeerId, Offence)>,
        hostile: &BTreeSet<PeerId>,
    ) {
        for (_, reporter, offender, offence) in offences {
            if hostile.contains(&reporter) {
                continue;
            }
            if hostile.contains(&offender) {
                self.against_attackers += 1;
                *self.by_name.entry(offence.name()).or_default() += 1;
                *self.strikes.entry((reporter, offender)).or_default() += offence.severity();
            } else {
                self.against_honest += 1;
            }
        }
    }

    /// Hostile peers that at least one honest peer reported.
    fn struck(&self) -> usize {
        self.strikes
            .keys()
            .map(|(_, o)| *o)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Hostile peers whose strikes at some honest peer reached the driver's ban threshold
    /// ([`Offence::PROVEN`]; strikes are summed without decay over the run).
    fn banned(&self) -> usize {
        self.strikes
            .iter()
            .filter(|(_, s)| **s >= Offence::PROVEN)
            .map(|((_, o), _)| *o)
            .collect::<BTreeSet<_>>()
            .len()
    }
}

/// The report of `peerlab sim attack`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The attack.
    pub kind: Kind,
    /// Fraction of hostile peers asked for.
    pub fraction: f64,
    /// Peers.
    pub nodes: usize,
    /// Hostile peers.
    pub attackers: usize,
    /// Whether honest cores ran with their defenses.
    pub defenses: bool,
    /// Seed.
    pub seed: u64,
    /// What an honest operation is and when it succeeds.
    pub metric: &'static str,
    /// Honest operations issued (the same in both runs).
    pub operations: u64,
    /// Share of honest operations that succeeded under attack.
    pub honest_success_rate: f64,
    /// The same workload, same seed, with the hostile peers behaving.
    pub baseline_success_rate: f64,
    /// Messages the hostile peers sent (their honest core's traffic included).
    pub attacker_messages: u64,
    /// Messages the honest peers sent.
    pub honest_messages: u64,
    /// Messages the honest peers sent in the baseline.
    pub baseline_honest_messages: u64,
    /// Offences honest peers reported against hostile peers.
    pub offences_against_attackers: u64,
    /// Offences honest peers reported against honest peers.
    pub offences_against_honest: u64,
    /// Offences honest peers reported against honest peers in the baseline.
    pub baseline_offences_against_honest: u64,
    /// Offences against hostile peers, by name.
    pub offences_by_name: BTreeMap<&'static str, u64>,
    /// Hostile peers reported by at least one honest peer.
    pub attackers_struck: usize,
    /// Hostile peers whose strikes at some honest peer reached the ban threshold.
    pub attackers_banned: usize,
    /// Kind-specific counters of the attacked run.
    pub detail: BTreeMap<&'static str, u64>,
    /// Virtual seconds simulated (attacked run).
    pub virtual_seconds: f64,
    /// Simulator events processed (both runs).
    pub events: u64,
    /// Wall-clock seconds of both runs (the only figure that is not a function of the
    /// parameters).
    pub wall_seconds: f64,
}

/// The parameters one kind's runner gets.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Setup {
    /// Peers.
    pub(crate) nodes: usize,
    /// Hostile peers among them.
    pub(crate) attackers: usize,
    /// Seed.
    pub(crate) seed: u64,
    /// Whether honest cores apply their defenses.
    pub(crate) defenses: bool,
    /// Whether the hostile peers attack (false: the baseline).
    pub(crate) attack: bool,
}

fn validate(p: &Params) -> Result<(), ExperimentError> {
    if !(MIN_NODES..=MAX_NODES).contains(&p.nodes) {
        return invalid(format!("--nodes must be in {MIN_NODES}..={MAX_NODES}"));
    }
    if !(0.0..=0.5).contains(&p.fraction) {
        return invalid("--fraction must be in [0, 0.5]");
    }
    if p.sweep && !(1..=MAX_SWEEP_SEEDS).contains(&p.seeds) {
        return invalid(format!("--seeds must be in 1..={MAX_SWEEP_SEEDS}"));
    }
    Ok(())
}

/// Hostile peers for `fraction` of `nodes`: at least one when the fraction is positive.
fn attackers_for(nodes: usize, fraction: f64) -> usize {
    if fraction <= 0.0 {
        0
    } else {
        ((nodes as f64 * fraction).round() as usize).max(1)
    }
}

fn run_kind(kind: Kind, s: Setup) -> Result<Outcome, ExperimentError> {
    match kind {
        Kind::DhtOverwrite | Kind::DhtFill | Kind::ProviderFlood | Kind::SybilEclipse => {
            dht::run(kind, s)
        }
        Kind::BlockInject => swarm::run(s),
        Kind::MemberPoison => gossip::run(s),
    }
}

/// Runs one kind at one fraction: the attacked run and its baseline.
pub fn run(p: &Params) -> Result<Report, ExperimentError> {
    validate(p)?;
    #[allow(clippy::disallowed_methods)] // wall time is reported, never fed to a core
    let wall = WallInstant::now();
    let attackers = attackers_for(p.nodes, p.fraction);
    let setup = Setup {
        nodes: p.nodes,
        attackers,
        seed: p.seed,
        defenses: !p.no_defenses,
        attack: true,
    };
    let attacked = run_kind(p.kind, setup)?;
    let baseline = run_kind(
        p.kind,
        Setup {
            attack: false,
            ..setup
        },
    )?;
    Ok(Report {
        kind: p.kind,
        fraction: p.fraction,
        nodes: p.nodes,
        attackers,
        defenses: !p.no_defenses,
        seed: p.seed,
        metric: p.kind.metric(),
        operations: attacked.ops,
        honest_success_rate: attacked.rate(),
        baseline_success_rate: baseline.rate(),
        attacker_messages: attacked.attacker_messages,
        honest_messages: attacked.honest_messages,
        baseline_honest_messages: baseline.honest_messages,
        offences_against_attackers: attacked.offences.against_attackers,
        offences_against_honest: attacked.offences.against_honest,
        baseline_offences_against_honest: baseline.offences.against_honest,
        offences_by_name: attacked.offences.by_name.clone(),
        attackers_struck: attacked.offences.struck(),
        attackers_banned: attacked.offences.banned(),
        detail: attacked.detail,
        virtual_seconds: attacked.virtual_seconds,
        events: attacked.events + baseline.events,
        wall_seconds: wall.elapsed().as_secs_f64(),
    })
}

impl Report {
    /// The human table.
    pub fn render_table(&self) -> String {
        let mut t = format!(
            "attack {} on {} peers ({} hostile, F = {}), defenses {}, seed {}\n\
             metric                 {}\n\
             honest success rate    {:.4} ({} operations)\n\
             baseline success rate  {:.4}\n\
             messages               {} by attackers, {} by honest peers ({} in the baseline)\n\
             offences reported      {} against attackers, {} against honest peers ({} in the baseline)\n\
             attackers              {} struck, {} at the ban threshold\n",
            self.kind.name(),
            self.nodes,
            self.attackers,
            self.fraction,
            if self.defenses { "on" } else { "off" },
            self.seed,
            self.metric,
            self.honest_success_rate,
            self.operations,
            self.baseline_success_rate,
            self.attacker_messages,
            self.honest_messages,
            self.baseline_honest_messages,
            self.offences_against_attackers,
            self.offences_against_honest,
            self.baseline_offences_against_honest,
            self.attackers_struck,
            self.attackers_banned,
        );
        if !self.offences_by_name.is_empty() {
            let by: Vec<String> = self
                .offences_by_name
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            t.push_str(&format!("offences by name       {}\n", by.join(", ")));
        }
        for (k, v) in &self.detail {
            t.push_str(&format!("{k:<22} {v}\n"));
        }
        t.push_str(&format!(
            "simulated              {:.0} s, {} events, {:.1} s wall\n",
            self.virtual_seconds, self.events, self.wall_seconds
        ));
        t
    }
}

/// One cell of the sweep: means over seeds.
#[derive(Clone, Debug, Serialize)]
pub struct SweepRow {
    /// The attack.
    pub kind: Kind,
    /// Fraction of hostile peers.
    pub fraction: f64,
    /// Whether honest cores ran with their defenses.
    pub defenses: bool,
    /// Seeds averaged.
    pub seeds: u64,
    /// Mean honest success rate.
    pub honest_success_rate: f64,
    /// Mean baseline success rate.
    pub baseline_success_rate: f64,
    /// Smallest ratio of honest to baseline success over the seeds.
    pub worst_ratio: f64,
    /// Mean offences against attackers.
    pub offences_against_attackers: f64,
    /// Mean attackers at the ban threshold.
    pub attackers_banned: f64,
}

/// Runs the whole table (`--sweep`).
pub fn sweep(p: &Params) -> Result<Vec<SweepRow>, ExperimentError> {
    validate(p)?;
    let mut rows = Vec::new();
    for kind in Kind::ALL {
        for fraction in SWEEP_FRACTIONS {
            for defenses in [true, false] {
                let mut row = SweepRow {
                    kind,
                    fraction,
                    defenses,
                    seeds: p.seeds,
                    honest_success_rate: 0.0,
                    baseline_success_rate: 0.0,
                    worst_ratio: f64::INFINITY,
                    offences_against_attackers: 0.0,
                    attackers_banned: 0.0,
                };
                for seed in p.seed..p.seed + p.seeds {
                    let r = run(&Params {
                        kind,
                        fraction,
                        seed,
                        no_defenses: !defenses,
                        sweep: false,
                        ..p.clone()
                    })?;
                    let n = p.seeds as f64;
                    row.honest_success_rate += r.honest_success_rate / n;
                    row.baseline_success_rate += r.baseline_success_rate / n;
                    row.offences_against_attackers += r.offences_against_attackers as f64 / n;
                    row.attackers_banned += r.attackers_banned as f64 / n;
                    let ratio = if r.baseline_success_rate > 0.0 {
                        r.honest_success_rate / r.baseline_success_rate
                    } else {
                        0.0
                    };
                    row.worst_ratio = row.worst_ratio.min(ratio);
                    eprintln!(
                        "{} F={} defenses={} seed={}: {:.4} / {:.4} ({:.0} s)",
                        kind.name(),
                        fraction,
                        defenses,
                        seed,
                        r.honest_success_rate,
                        r.baseline_success_rate,
                        r.wall_seconds
                    );
                }
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// The sweep as a Markdown table.
pub fn render_sweep(rows: &[SweepRow]) -> String {
    let mut t = String::from(
        "| kind | F | defenses | honest success | baseline | ratio (mean) | worst ratio | offences vs attackers | attackers banned |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let ratio = if r.baseline_success_rate > 0.0 {
            r.honest_success_rate / r.baseline_success_rate
        } else {
            0.0
        };
        t.push_str(&format!(
            "| {} | {} | {} | {:.4} | {:.4} | {:.3} | {:.3} | {:.0} | {:.1} |\n",
            r.kind.name(),
            r.fraction,
            if r.defenses { "on" } else { "off" },
            r.honest_success_rate,
            r.baseline_success_rate,
            ratio,
            r.worst_ratio,
            r.offences_against_attackers,
            r.attackers_banned,
        ));
    }
    t
}

/// What `peerlab sim attack` prints: one report, or the sweep's table.
pub fn render(p: &Params) -> Result<Rendered, ExperimentError> {
    if p.sweep {
        let rows = sweep(p)?;
        let table = render_sweep(&rows);
        Ok(Rendered {
            table,
            json: serde_json::to_value(&rows).unwrap_or(serde_json::Value::Null),
        })
    } else {
        run(p).map(|r| rendered(&r, r.render_table()))
    }
}

/// Sums per-node sent-message counters over `peers`.
pub(crate) fn sent_by<'a, P: peerlab_overlay::Protocol>(
    sim: &peerlab_sim::Sim<P>,
    peers: impl Iterator<Item = &'a PeerId>,
) -> u64 {
    peers
        .filter_map(|p| sim.node_stats(p))
        .map(|s| s.sent)
        .sum()
}
