//! `peerlab sim flood`: Gnutella-style search over an unstructured overlay.
//!
//! The experiment builds the overlay graph directly — a random near-regular graph of the
//! given degree (configuration model) or a power-law graph grown by preferential attachment
//! (Barabási–Albert, `m = max(1, ⌊D/2⌋)` links per new node, so the mean degree is about
//! `D`) — and hands each node its neighbours with `flood::Command::AddNeighbours`, so even
//! 100 000 nodes start at once. Each query looks for its own item, shared by `R` nodes chosen
//! uniformly at random, from a random node that does not hold it; queries start every
//! [`QUERY_GAP`] of virtual time and run concurrently. Every link has a fixed one-way latency
//! of [`LINK_LATENCY`].
//!
//! Figures, per query: success (at least one hit), messages of the search kinds
//! (`flood::SEARCH_KINDS`: Query, QueryHit and the random walk's messages), duplicates (a
//! Query arriving at a node that already saw its GUID, or a walker revisiting a node),
//! distinct responders, and hops to the first responder. Lv et al. (ICS 2002) compare the
//! same strategies on the same kinds of graphs.

use std::fmt::Write as _;
use std::time::{Duration, Instant as WallInstant};

use clap::{Args, ValueEnum};
use peerlab_overlay::flood::{
    self, Command, Event, Flood, MAX_TTL, MAX_WALK_STEPS, MAX_WALKERS, Strategy,
};
use peerlab_overlay::{Instant, PeerId, Rng};
use serde::Serialize;

use super::{ExperimentError, invalid};
use peerlab_sim::{Latency, Sim, SimConfig};

/// One-way latency of every overlay link.
pub const LINK_LATENCY: Duration = Duration::from_millis(50);
/// Virtual time between the starts of two queries.
pub const QUERY_GAP: Duration = Duration::from_millis(10);
/// Virtual time before the first query (nodes start and settle).
pub const WARMUP: Duration = Duration::from_secs(1);
/// Largest network the experiment accepts (memory: about 2 KiB per node).
pub const MAX_NODES: usize = 1_000_000;
/// Most queries in one run.
pub const MAX_QUERIES: usize = 1_000_000;

/// Search strategy of every query in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// One flood with the given TTL.
    Flood,
    /// Floods with TTL 1, 2, 4, … up to the given TTL until a hit.
    ExpandingRing,
    /// K random walkers with periodic check-back (Lv et al. 2002).
    RandomWalk,
}

/// Shape of the overlay graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Topology {
    /// Random near-regular graph: every node has about `degree` neighbours.
    Random,
    /// Power-law graph by preferential attachment, mean degree about `degree`.
    PowerLaw,
}

/// Flags of `peerlab sim flood`.
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// Number of nodes in the overlay.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Neighbours per node (mean degree for power-law).
    #[arg(long, default_value_t = 4)]
    pub degree: usize,
    /// TTL of each query (the last ring's TTL for expanding-ring), 1..=10.
    #[arg(long, default_value_t = 7)]
    pub ttl: u32,
    /// Number of queries; each looks for its own item.
    #[arg(long, default_value_t = 100)]
    pub queries: usize,
    /// Number of random nodes that store each queried item.
    #[arg(long, default_value_t = 10)]
    pub replicas: usize,
    /// Search strategy.
    #[arg(long, value_enum, default_value_t = StrategyArg::Flood)]
    pub strategy: StrategyArg,
    /// Random walkers per query (random-walk only).
    #[arg(long, default_value_t = 16)]
    pub walkers: u32,
    /// Step budget of each walker (random-walk only); walkers check back every 4 steps.
    #[arg(long, default_value_t = 1024)]
    pub walk_steps: u32,
    /// Overlay graph shape.
    #[arg(long, value_enum, default_value_t = Topology::Random)]
    pub topology: Topology,
    /// Seed of every random choice (graph, items, queries, network).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            nodes: 1000,
            degree: 4,
            ttl: 7,
            queries: 100,
            replicas: 10,
            strategy: StrategyArg::Flood,
            walkers: 16,
            walk_steps: 1024,
            topology: Topology::Random,
            seed: 1,
        }
    }
}

/// What a run measured. Every field but `wall_seconds` is a function of the parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Nodes in the overlay.
    pub nodes: usize,
    /// Requested degree.
    pub degree: usize,
    /// Query TTL.
    pub ttl: u32,
    /// Strategy name.
    pub strategy: &'static str,
    /// Topology name.
    pub topology: &'static str,
    /// Walkers per query (meaningful for random-walk).
    pub walkers: u32,
    /// Walker step budget (meaningful for random-walk).
    pub walk_steps: u32,
    /// Replicas per item.
    pub replicas: usize,
    /// Queries run.
    pub queries: usize,
    /// Seed.
    pub seed: u64,
    /// Mean degree of the graph built.
    pub mean_degree: f64,
    /// Largest degree of the graph built.
    pub max_degree: usize,
    /// Fraction of queries with at least one hit.
    pub success_rate: f64,
    /// Search messages sent (all `flood::SEARCH_KINDS`) per query.
    pub mean_messages_per_query: f64,
    /// Duplicate Query arrivals (or walker revisits) per query.
    pub mean_duplicate_messages_per_query: f64,
    /// Distinct responders per query.
    pub mean_hits_per_query: f64,
    /// Mean hops (walk steps) to the first responder over successful queries; `null` if none.
    pub mean_first_hit_hops: Option<f64>,
    /// Overlay maintenance messages (ping, pong, bye) sent in the whole run.
    pub overlay_messages: u64,
    /// Virtual time the run took.
    pub virtual_seconds: f64,
    /// Simulator events processed.
    pub events: u64,
    /// Wall-clock seconds (the only non-deterministic figure).
    pub wall_seconds: f64,
}

impl Report {
    /// A short human-readable table.
    pub fn render_table(&self) -> String {
        let mut s = String::new();
        let hops = self
            .mean_first_hit_hops
            .map_or_else(|| "-".to_string(), |h| format!("{h:.2}"));
        let strategy = match self.strategy {
            "random-walk" => format!(
                "random-walk ({} walkers, {} steps)",
                self.walkers, self.walk_steps
            ),
            s => s.to_string(),
        };
        let rows: [(&str, String); 14] = [
            ("nodes", self.nodes.to_string()),
            (
                "topology",
                format!(
                    "{} (degree {}, mean {:.2}, max {})",
                    self.topology, self.degree, self.mean_degree, self.max_degree
                ),
            ),
            ("strategy", strategy),
            ("ttl", self.ttl.to_string()),
            ("queries", self.queries.to_string()),
            ("replicas", self.replicas.to_string()),
            ("success rate", format!("{:.3}", self.success_rate)),
            (
                "messages / query",
                format!("{:.1}", self.mean_messages_per_query),
            ),
            (
                "duplicates / query",
                format!("{:.1}", self.mean_duplicate_messages_per_query),
            ),
            ("hits / query", format!("{:.2}", self.mean_hits_per_query)),
            ("first-hit hops", hops),
            ("overlay messages", self.overlay_messages.to_string()),
            (
                "events",
                format!("{} ({:.1} s virtual)", self.events, self.virtual_seconds),
            ),
            ("wall time", format!("{:.2} s", self.wall_seconds)),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "{k:<20} {v}");
        }
        s
    }
}

/// Checks the parameters; the message names the offending flag.
pub fn validate(p: &Params) -> Result<(), ExperimentError> {
    if p.nodes < 2 {
        return invalid(format!("--nodes must be at least 2, got {}", p.nodes));
    }
    if p.nodes > MAX_NODES {
        return invalid(format!(
            "--nodes must be at most {MAX_NODES}, got {}",
            p.nodes
        ));
    }
    if p.degree == 0 {
        return invalid("--degree must be at least 1");
    }
    if p.degree >= p.nodes {
        return invalid(format!(
            "--degree ({}) must be less than --nodes ({})",
            p.degree, p.nodes
        ));
    }
    if p.degree > flood::MAX_DEGREE / 2 {
        return invalid(format!(
            "--degree must be at most {}, got {}",
            flood::MAX_DEGREE / 2,
            p.degree
        ));
    }
    if p.ttl == 0 || p.ttl > u32::from(MAX_TTL) {
        return invalid(format!("--ttl must be in 1..={MAX_TTL}, got {}", p.ttl));
    }
    if p.queries == 0 || p.queries > MAX_QUERIES {
        return invalid(format!(
            "--queries must be in 1..={MAX_QUERIES}, got {}",
            p.queries
        ));
    }
    if p.replicas == 0 {
        return invalid("--replicas must be at least 1");
    }
    if p.replicas >= p.nodes {
        return invalid(format!(
            "--replicas ({}) must be less than --nodes ({}): the searching node never holds the item",
            p.replicas, p.nodes
        ));
    }
    if p.strategy == StrategyArg::RandomWalk {
        if p.walkers == 0 || p.walkers > u32::from(MAX_WALKERS) {
            return invalid(format!(
                "--walkers must be in 1..={MAX_WALKERS} with random-walk, got {}",
                p.walkers
            ));
        }
        if p.walk_steps == 0 || p.walk_steps > u32::from(MAX_WALK_STEPS) {
            return invalid(format!(
                "--walk-steps must be in 1..={MAX_WALK_STEPS}, got {}",
                p.walk_steps
            ));
        }
    }
    Ok(())
}

/// An undirected simple graph as adjacency lists.
type Graph = Vec<Vec<u32>>;

/// Random near-regular graph (configuration model): every node gets `d` stubs, stubs are
/// paired at random, self-loops and repeated edges are dropped (a few nodes end slightly
/// below `d`).
fn random_graph(n: usize, d: usize, rng: &mut Rng) -> Graph {
    let mut stubs: Vec<u32> = (0..n as u32)
        .flat_map(|v| std::iter::repeat_n(v, d))
        .collect();
    rng.shuffle(&mut stubs);
    let mut g: Graph = vec![Vec::with_capacity(d); n];
    for pair in stubs.chunks_exact(2) {
        let (a, b) = (pair[0], pair[1]);
        if a != b && !g[a as usize].contains(&b) {
            g[a as usize].push(b);
            g[b as usize].push(a);
        }
    }
    g
}

/// Power-law graph by preferential attachment: a clique of `m + 1` nodes, then each new node
/// links to `m` distinct nodes chosen with probability proportional to their degree.
fn power_law_graph(n: usize, d: usize, rng: &mut Rng) -> Graph {
    let m = (d / 2).max(1);
    let mut g: Graph = vec![Vec::new(); n];
    // Every edge end once: sampling an entry picks a node proportionally to its degree.
    let mut ends: Vec<u32> = Vec::with_capacity(2 * m * n);
    let seed = (m + 1).min(n);
    for a in 0..seed as u32 {
        for b in 0..a {
            g[a as usize].push(b);
            g[b as usize].push(a);
            ends.extend([a, b]);
        }
    }
    for v in seed as u32..n as u32 {
        let mut chosen: Vec<u32> = Vec::with_capacity(m);
        let mut tries = 0;
        while chosen.len() < m.min(v as usize) {
            tries += 1;
            let t = if tries < 32 * m {
                ends[rng.index(ends.len())]
            } else {
                rng.below(u64::from(v)) as u32
            };
            if !chosen.contains(&t) {
                chosen.push(t);
            }
        }
        for t in chosen {
            g[v as usize].push(t);
            g[t as usize].push(v);
            ends.extend([v, t]);
        }
    }
    g
}

/// Runs the experiment.
pub fn run(p: &Params) -> Result<Report, ExperimentError> {
    validate(p)?;
    #[allow(clippy::disallowed_methods)] // wall time is reported, never fed to a core
    let wall = WallInstant::now();
    let mut sim: Sim<Flood> = Sim::new(SimConfig {
        seed: p.seed,
        latency: Latency::Fixed(LINK_LATENCY),
        ..SimConfig::default()
    });

    let graph = match p.topology {
        Topology::Random => random_graph(p.nodes, p.degree, sim.rng()),
        Topology::PowerLaw => power_law_graph(p.nodes, p.degree, sim.rng()),
    };
    let max_degree = graph.iter().map(Vec::len).max().unwrap_or(0);
    let mean_degree = graph.iter().map(Vec::len).sum::<usize>() as f64 / p.nodes as f64;

    let walk_steps = p.walk_steps.clamp(1, u32::from(MAX_WALK_STEPS)) as u16;
    // The graph is the experiment's subject: nodes keep it (min degree 1 means no discovery
    // traffic unless a node is isolated) and accept every edge handed to them.
    let config = flood::Config {
        min_degree: 1,
        max_degree: max_degree.clamp(p.degree * 2, flood::MAX_DEGREE),
        max_searches: 1024,
        max_walk_steps: walk_steps,
        ..flood::Config::default()
    };
    let peers: Vec<PeerId> = (0..p.nodes as u64).map(PeerId::synthetic).collect();
    for &peer in &peers {
        let core = Flood::new(peer, config.clone())
            .map_err(|e| ExperimentError::InvalidArgument(e.to_string()))?;
        sim.add_node(peer, core);
    }
    for (v, adj) in graph.iter().enumerate() {
        let ns = adj.iter().map(|&u| peers[u as usize]).collect();
        sim.command(peers[v], Command::AddNeighbours(ns));
    }

    let strategy = match p.strategy {
        StrategyArg::Flood => Strategy::Flood,
        StrategyArg::ExpandingRing => Strategy::ExpandingRing,
        StrategyArg::RandomWalk => Strategy::RandomWalk {
            walkers: p.walkers.clamp(1, u32::from(MAX_WALKERS)) as u16,
            steps: walk_steps,
        },
    };
    let ttl = p.ttl as u8;
    for q in 0..p.queries {
        let item = format!("item{q}");
        let holders = sim.rng().sample_indices(p.nodes, p.replicas);
        for &h in &holders {
            sim.command(peers[h], Command::Share { name: item.clone() });
        }
        let origin = loop {
            let o = sim.rng().index(p.nodes);
            if !holders.contains(&o) {
                break peers[o];
            }
        };
        let at = Instant::ZERO + WARMUP + QUERY_GAP * q as u32;
        sim.schedule(at, move |sim| {
            sim.command(
                origin,
                Command::Search {
                    req: q as u64,
                    terms: item,
                    strategy,
                    ttl: Some(ttl),
                    want_hits: 1,
                },
            );
        });
    }

    // The longest a search can take, plus slack for in-flight answers.
    let longest = match strategy {
        Strategy::RandomWalk { steps, .. } => config.hop_wait * 2 * u32::from(steps),
        _ => config.hop_wait * 2 * u32::from(ttl) * 2,
    };
    let last_start = Instant::ZERO + WARMUP + QUERY_GAP * p.queries as u32;
    let limit = last_start + longest + Duration::from_secs(10);

    let mut done = 0usize;
    let (mut successes, mut hits, mut hop_sum) = (0u64, 0u64, 0u64);
    while done < p.queries && sim.now() < limit {
        sim.run_for(Duration::from_millis(100));
        for (_, _, ev) in sim.take_events() {
            match ev {
                Event::SearchDone {
                    hits: h,
                    first_hit_hops,
                    ..
                } => {
                    done += 1;
                    hits += u64::from(h);
                    if let Some(f) = first_hit_hops {
                        successes += 1;
                        hop_sum += u64::from(f);
                    }
                }
                Event::SearchRejected { req, error } => {
                    return Err(ExperimentError::Failed(format!(
                        "query {req} rejected: {error}"
                    )));
                }
                Event::SearchHit { .. } | Event::ShareRejected { .. } => {}
            }
        }
    }
    if done < p.queries {
        return Err(ExperimentError::Failed(format!(
            "only {done} of {} queries finished by {:.1} s virtual",
            p.queries,
            sim.now().as_secs_f64()
        )));
    }

    let kinds = &sim.stats().kinds;
    let sent = |k: &str| kinds.get(k).map_or(0, |s| s.sent);
    let search_messages: u64 = flood::SEARCH_KINDS.iter().map(|k| sent(k)).sum();
    let overlay_messages = sent("ping") + sent("pong") + sent("bye");
    let duplicates: u64 = sim
        .cores()
        .map(|(_, c)| c.counters().duplicate_queries + c.counters().walk_revisits)
        .sum();
    let q = p.queries as f64;
    Ok(Report {
        nodes: p.nodes,
        degree: p.degree,
        ttl: p.ttl,
        strategy: match p.strategy {
            StrategyArg::Flood => "flood",
            StrategyArg::ExpandingRing => "expanding-ring",
            StrategyArg::RandomWalk => "random-walk",
        },
        topology: match p.topology {
            Topology::Random => "random",
            Topology::PowerLaw => "power-law",
        },
        walkers: p.walkers,
        walk_steps: p.walk_steps,
        replicas: p.replicas,
        queries: p.queries,
        seed: p.seed,
        mean_degree,
        max_degree,
        success_rate: successes as f64 / q,
        mean_messages_per_query: search_messages as f64 / q,
        mean_duplicate_messages_per_query: duplicates as f64 / q,
        mean_hits_per_query: hits as f64 / q,
        mean_first_hit_hops: (successes > 0).then(|| hop_sum as f64 / successes as f64),
        overlay_messages,
        virtual_seconds: sim.now().as_secs_f64(),
        events: sim.events_processed(),
        wall_seconds: wall.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_graph_is_simple_and_near_regular() {
        let g = random_graph(1000, 4, &mut Rng::seed(1));
        for (v, adj) in g.iter().enumerate() {
            assert!(adj.len() <= 4);
            assert!(!adj.contains(&(v as u32)));
            for &u in adj {
                assert!(g[u as usize].contains(&(v as u32)), "symmetric");
            }
        }
        let edges: usize = g.iter().map(Vec::len).sum();
        assert!(edges >= 4 * 1000 - 40, "few edges lost: {edges}");
    }

    #[test]
    fn power_law_graph_has_hubs() {
        let g = power_law_graph(5000, 4, &mut Rng::seed(1));
        let mean = g.iter().map(Vec::len).sum::<usize>() as f64 / 5000.0;
        let max = g.iter().map(Vec::len).max().unwrap();
        assert!((3.5..=4.1).contains(&mean), "{mean}");
        assert!(max > 40, "preferential attachment grows hubs: {max}");
        assert!(g.iter().all(|a| a.len() >= 2));
    }

    #[test]
    fn bad_arguments_are_refused() {
        let ok = Params::default();
        let cases = [
            Params {
                nodes: 0,
                ..ok.clone()
            },
            Params {
                degree: 0,
                ..ok.clone()
            },
            Params {
                nodes: 4,
                degree: 4,
                ..ok.clone()
            },
            Params {
                ttl: 0,
                ..ok.clone()
            },
            Params {
                ttl: 11,
                ..ok.clone()
            },
            Params {
                queries: 0,
                ..ok.clone()
            },
            Params {
                replicas: 0,
                ..ok.clone()
            },
            Params {
                replicas: 1000,
                ..ok.clone()
            },
            Params {
                strategy: StrategyArg::RandomWalk,
                walkers: 0,
                ..ok.clone()
            },
            Params {
                strategy: StrategyArg::RandomWalk,
                walk_steps: 0,
                ..ok.clone()
            },
        ];
        for c in cases {
            match run(&c) {
                Err(ExperimentError::InvalidArgument(msg)) => {
                    assert!(msg.starts_with("--"), "{msg}");
                    assert!(!msg.contains('\n'));
                }
                other => panic!("{c:?} gave {other:?}"),
            }
        }
        // Walkers are only checked for random-walk.
        assert!(validate(&Params { walkers: 0, ..ok }).is_ok());
    }
}
