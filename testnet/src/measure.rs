//! Measurements on a running [`Testnet`]: DHT lookups and gossip
//! convergence, and the simulator's prediction for the same network.
//!
//! # Lookups
//!
//! `L` lookups of random keys, each from a random live node, through the control API. Each
//! answer's owner is compared with the ideal ring of the live peers; hops come from the
//! node's own route, latency is the API round trip seen by the client. The Chord paper's
//! path length for `N` nodes is about ½·log2 N (Stoica et al., SIGCOMM 2001, fig. 10); with
//! `V` virtual nodes per peer the ring holds `N·V` positions, so ½·log2(N·V) is shown too.
//!
//! # Gossip convergence
//!
//! Nodes report arrival times themselves: `GET /gossip/{key}` gives, per entry, the
//! wall-clock time (Unix ms) at which that version became active on the node, and for the
//! origin's own entry the time it was published. An update's arrival at a node is that
//! node's time minus the origin's; all nodes run on this machine, so they share the clock.
//! [`POLL_THREADS`] threads, each owning a share of the nodes,
//! poll until every node holds the update, pausing [`POLL_PAUSE`] between rounds so the
//! controller takes little CPU from the nodes it measures; the polls only say *whether* a
//! node has the update, not when. (A node that no longer remembers the time — over
//! [`peerlab_node::peer::MAX_ARRIVALS`] updates later — is timed by the polls instead:
//! the midpoint between the last miss and the first hit after the publish call.)
//!
//! The simulator's prediction runs the real gossip core ([`peerlab_gossip::Gossip`]) with
//! the node's LAN configuration (fan-out 3, 200 ms period, rumor mongering with feedback +
//! counter k = 3 plus push-pull anti-entropy every second) on `N` peers with an ideal
//! membership and 1 ms links, and records when each peer learned the update. The same `N`
//! also runs through `sim gossip` (Demers/Karp synchronous rounds) for its rounds-to-99 %.

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::sync::Mutex;
use std::time::{Duration, Instant};

use peerlab_gossip::{Command, Config as GossipConfig, Event, Gossip, StaticView};
use peerlab_overlay::{Instant as SimInstant, Keypair, PeerId, Rng};
use serde::Serialize;

use crate::process::{POLL_THREADS, Testnet, TestnetError, key_owner, par_map};
use peerlab_sim::{Latency, Sim, SimConfig};

/// Most lookups one `testnet lookups` run issues.
pub const MAX_LOOKUPS: usize = 100_000;
/// Most updates one `testnet converge` run publishes.
pub const MAX_UPDATES: usize = 100;
/// How long one update may take to reach every node before the run gives up on it.
pub const ARRIVAL_DEADLINE: Duration = Duration::from_secs(60);

/// Percentiles of a sample.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of `v` (empty: zeros).
    pub fn of(v: &[f64]) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let at = |q: f64| s[((q * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
        Percentiles {
            mean: s.iter().sum::<f64>() / s.len() as f64,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: s[s.len() - 1],
        }
    }
}

/// What `testnet lookups` measured.
#[derive(Clone, Debug, Serialize)]
pub struct LookupReport {
    /// Live nodes.
    pub nodes: usize,
    /// Virtual nodes per peer.
    pub vnodes: u16,
    /// Lookups issued.
    pub lookups: usize,
    /// Lookups that returned an error.
    pub failed: usize,
    /// Lookups whose owner differs from the ideal ring's.
    pub wrong_owner: usize,
    /// Hop count → lookups.
    pub hop_histogram: Vec<(u32, usize)>,
    /// Hops.
    pub hops: Percentiles,
    /// API round-trip latency, ms.
    pub latency_ms: Percentiles,
    /// ½·log2 N (Chord paper's mean path length).
    pub chord_half_log2_n: f64,
    /// ½·log2 (N·V): the same for the ring's N·V positions.
    pub chord_half_log2_nv: f64,
}

/// Issues `count` lookups of random keys from random live nodes.
pub fn lookups(net: &Testnet, count: usize, seed: u64) -> Result<LookupReport, TestnetError> {
    if count == 0 || count > MAX_LOOKUPS {
        return Err(TestnetError::Invalid(format!(
            "--count must be in 1..={MAX_LOOKUPS}"
        )));
    }
    let alive = net.alive();
    if alive.is_empty() {
        return Err(TestnetError::Failed("no live node".into()));
    }
    let ring = net.ideal_ring();
    let mut rng = Rng::seed(seed);
    let work: Vec<(usize, String)> = (0..count)
        .map(|k| (alive[rng.index(alive.len())], format!("lookup-{seed}-{k}")))
        .collect();
    let results = par_map(&work, |(i, key)| {
        let t = Instant::now();
        let r = net.client(*i).lookup(key);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        r.ok().map(|r| {
            let right = key_owner(&ring, key).is_some_and(|o| o.id.to_hex() == r.vnode);
            (r.hops, ms, right)
        })
    });
    let ok: Vec<(u32, f64, bool)> = results.iter().flatten().copied().collect();
    let mut hist = std::collections::BTreeMap::new();
    for (h, _, _) in &ok {
        *hist.entry(*h).or_insert(0usize) += 1;
    }
    let n = alive.len() as f64;
    let v = net.manifest().vnodes;
    Ok(LookupReport {
        nodes: alive.len(),
        vnodes: v,
        lookups: count,
        failed: count - ok.len(),
        wrong_owner: ok.iter().filter(|o| !o.2).count(),
        hop_histogram: hist.into_iter().collect(),
        hops: Percentiles::of(&ok.iter().map(|o| o.0 as f64).collect::<Vec<_>>()),
        latency_ms: Percentiles::of(&ok.iter().map(|o| o.1).collect::<Vec<_>>()),
        chord_half_log2_n: 0.5 * n.log2(),
        chord_half_log2_nv: 0.5 * (n * v as f64).log2(),
    })
}

impl LookupReport {
    /// A short table.
    pub fn render_table(&self) -> String {
        let mut s = String::new();
        s += &format!(
            "nodes                 {} ({} vnodes each)\n",
            self.nodes, self.vnodes
        );
        s += &format!(
            "lookups               {} (failed {}, wrong owner {})\n",
            self.lookups, self.failed, self.wrong_owner
        );
        s += &format!(
            "hops                  mean {:.2}, p50 {:.0}, p90 {:.0}, p99 {:.0}, max {:.0}\n",
            self.hops.mean, self.hops.p50, self.hops.p90, self.hops.p99, self.hops.max
        );
        s += &format!(
            "Chord ½·log2 N        {:.2} (½·log2 N·V = {:.2})\n",
            self.chord_half_log2_n, self.chord_half_log2_nv
        );
        s += &format!(
            "latency ms            mean {:.1}, p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}\n",
            self.latency_ms.mean,
            self.latency_ms.p50,
            self.latency_ms.p90,
            self.latency_ms.p99,
            self.latency_ms.max
        );
        s += "hop histogram        ";
        for (h, c) in &self.hop_histogram {
            s += &format!(" {h}:{c}");
        }
        s.push('\n');
        s
    }
}

/// When each node got one update.
#[derive(Clone, Debug, Serialize)]
pub struct UpdateArrivals {
    /// The gossip key.
    pub key: String,
    /// The publishing node.
    pub origin: usize,
    /// Seconds from the publish call to each other node's arrival, sorted; nodes the update
    /// never reached are missing.
    pub arrivals: Vec<f64>,
    /// Nodes other than the origin that were polled.
    pub targets: usize,
    /// Mean duration of one polling round over a poller's share, seconds (only the
    /// resolution of the fallback timing; node-reported times do not depend on it).
    pub poll_cycle: f64,
}

impl UpdateArrivals {
    /// Seconds until a fraction `q` of the targets had the update (`None`: never).
    pub fn time_to(&self, q: f64) -> Option<f64> {
        let need = ((q * self.targets as f64).ceil() as usize).max(1);
        self.arrivals.get(need - 1).copied()
    }
}

/// Pause between two polling rounds of one poller thread: the arrival times come from the
/// nodes' own clocks, so polling faster would only take CPU from the nodes being measured.
pub const POLL_PAUSE: Duration = Duration::from_millis(100);

/// The node-reported arrival time (Unix ms) of `value` under `key`, if the node holds it:
/// `Some(None)` when it holds it but no longer remembers when it came.
fn arrival_of(c: &peerlab_node::client::Client, key: &str, value: &str) -> Option<Option<f64>> {
    let g = c.gossip_read(key).ok()?;
    g.entries
        .iter()
        .find(|e| e.value.as_deref() == Some(value))
        .map(|e| e.arrived_unix_ms)
}

/// Publishes `value` under `key` at node `origin` and records when every other live node
/// holds it, by the nodes' own clocks.
pub fn gossip_arrivals(
    net: &Testnet,
    origin: usize,
    key: &str,
    value: &str,
    deadline: Duration,
) -> Result<UpdateArrivals, TestnetError> {
    let targets: Vec<usize> = net.alive().into_iter().filter(|&i| i != origin).collect();
    let clients: Vec<_> = targets.iter().map(|&i| net.client(i)).collect();
    let arrivals = Mutex::new(Vec::with_capacity(targets.len()));
    let cycles = Mutex::new((0.0f64, 0usize));
    let t0 = Instant::now();
    let oc = net.client(origin);
    oc.publish(key, value)
        .map_err(|e| TestnetError::Failed(format!("publish at node {origin}: {e}")))?;
    let published_ms = arrival_of(&oc, key, value).flatten();
    let per = clients.len().div_ceil(POLL_THREADS).max(1);
    std::thread::scope(|s| {
        for share in clients.chunks(per) {
            let arrivals = &arrivals;
            let cycles = &cycles;
            s.spawn(move || {
                let mut last_miss: Vec<f64> = vec![0.0; share.len()];
                let mut done = vec![false; share.len()];
                let mut cycle_sum = 0.0;
                let mut cycle_n = 0usize;
                let mut left = share.len();
                while left > 0 && t0.elapsed() < deadline {
                    let cstart = t0.elapsed().as_secs_f64();
                    for (j, c) in share.iter().enumerate() {
                        if done[j] {
                            continue;
                        }
                        let got = arrival_of(c, key, value);
                        let now = t0.elapsed().as_secs_f64();
                        match got {
                            Some(at) => {
                                done[j] = true;
                                left -= 1;
                                let secs = match (at, published_ms) {
                                    (Some(a), Some(p)) => ((a - p) / 1000.0).max(0.0),
                                    _ => (last_miss[j] + now) / 2.0,
                                };
                                if let Ok(mut a) = arrivals.lock() {
                                    a.push(secs);
                                }
                            }
                            None => last_miss[j] = now,
                        }
                    }
                    cycle_sum += t0.elapsed().as_secs_f64() - cstart;
                    cycle_n += 1;
                    if left > 0 {
                        std::thread::sleep(POLL_PAUSE);
                    }
                }
                if let Ok(mut c) = cycles.lock() {
                    c.0 += cycle_sum;
                    c.1 += cycle_n;
                }
            });
        }
    });
    let mut arrivals = arrivals.into_inner().unwrap_or_default();
    arrivals.sort_by(f64::total_cmp);
    let (cs, cn) = cycles.into_inner().unwrap_or((0.0, 0));
    Ok(UpdateArrivals {
        key: key.into(),
        origin,
        arrivals,
        targets: targets.len(),
        poll_cycle: if cn == 0 { 0.0 } else { cs / cn as f64 },
    })
}

/// The simulator's arrival times for one update among `n` peers running the node's LAN
/// gossip configuration with `fanout`, `partner_view` (0: partners from all members) and
/// `interval` (seconds after publish, sorted; the origin excluded).
pub fn simulated_arrivals(
    n: usize,
    fanout: usize,
    partner_view: usize,
    interval: Duration,
    seed: u64,
) -> Vec<f64> {
    let mut sim: Sim<Gossip> = Sim::new(SimConfig {
        seed,
        latency: Latency::Fixed(Duration::from_millis(1)),
        ..Default::default()
    });
    let keys: Vec<Keypair> = (0..n as u64).map(Keypair::synthetic).collect();
    let peers: Vec<PeerId> = keys.iter().map(Keypair::peer_id).collect();
    let view = StaticView::new(peers.clone());
    let mut cfg = GossipConfig::lan();
    cfg.fanout = fanout.min(n.saturating_sub(1)).max(1);
    cfg.period = interval;
    cfg.partner_view = if partner_view == 0 {
        0
    } else {
        partner_view.max(cfg.fanout)
    };
    for key in keys {
        let p = key.peer_id();
        if let Ok(core) = Gossip::with_static_view(key, view.clone(), cfg.clone()) {
            sim.add_node(p, core);
        }
    }
    // Let the timers settle into random phases, as on a running testnet.
    let t_pub = SimInstant(5_000_000);
    sim.run_until(t_pub);
    let _ = sim.take_events();
    let origin = peers[sim.rng().index(n)];
    sim.command(
        origin,
        Command::Publish {
            req: 1,
            key: "sim-update".into(),
            value: vec![0xAB; 16],
        },
    );
    let mut times = Vec::new();
    let end = SimInstant(t_pub.as_micros() + ARRIVAL_DEADLINE.as_micros() as u64);
    let mut now = t_pub;
    while times.len() < n - 1 && now < end {
        now = SimInstant(now.as_micros() + 100_000);
        sim.run_until(now);
        for (t, peer, ev) in sim.take_events() {
            if let Event::EntryUpdated { origin: o, .. } = ev
                && o == origin
                && peer != origin
            {
                times.push((t.as_micros() - t_pub.as_micros()) as f64 / 1e6);
            }
        }
    }
    times.sort_by(f64::total_cmp);
    times
}

/// Seconds until a fraction `q` of `targets` nodes appear in sorted `arrivals`.
pub fn time_to(arrivals: &[f64], targets: usize, q: f64) -> Option<f64> {
    let need = ((q * targets as f64).ceil() as usize).max(1);
    arrivals.get(need - 1).copied()
}

/// Sum over live nodes of the `peerlab_bytes_out_total{protocol="gossip"}` counter.
pub fn gossip_bytes_out(net: &Testnet) -> u64 {
    let alive = net.alive();
    par_map(&alive, |&i| {
        net.client(i)
            .metrics()
            .ok()
            .map(|t| {
                t.lines()
                    .filter(|l| {
                        l.starts_with("peerlab_bytes_out_total")
                            && l.contains("protocol=\"gossip\"")
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>() as u64
            })
            .unwrap_or(0)
    })
    .into_iter()
    .sum()
}
