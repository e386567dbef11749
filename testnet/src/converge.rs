//! `peerlab testnet converge`: how fast gossip reaches every node of a real testnet, beside
//! the simulator's prediction for the same `N`, fan-out and interval.
//!
//! `U` updates are published one after the other, each at a random live node; arrival
//! times are taken as [`measure::gossip_arrivals`] describes. Per update: rounds (interval
//! lengths) until 99 % and 100 % of the other nodes hold it. Bytes per node are the growth of
//! the nodes' `peerlab_bytes_out_total{protocol="gossip"}` counters over the run divided by
//! `N` (this includes SWIM membership traffic, which shares the channel). The simulator runs
//! the same gossip core ([`measure::simulated_arrivals`]) `U` times, and `sim gossip` gives
//! the synchronous-round model's rounds; the reference is Serf's convergence model (fan-out
//! 3, 200 ms: 99.99 % of 1000 nodes in about 2.2 s).

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::path::Path;
use std::time::Duration;

use peerlab_overlay::Rng;
use serde::Serialize;

use crate::experiments::gossip as simg;
use crate::measure::{self, ARRIVAL_DEADLINE, MAX_UPDATES, UpdateArrivals};
use crate::plot::{self, Series};
use crate::process::{Testnet, TestnetError};

/// What `testnet converge` measured.
#[derive(Clone, Debug, Serialize)]
pub struct ConvergeReport {
    /// Live nodes.
    pub nodes: usize,
    /// Updates published.
    pub updates: usize,
    /// Gossip period, ms.
    pub interval_ms: u64,
    /// Gossip fan-out.
    pub fanout: usize,
    /// Per update: seconds to 99 % of the other nodes.
    pub seconds_to_99: Vec<Option<f64>>,
    /// Per update: seconds to every other node.
    pub seconds_to_100: Vec<Option<f64>>,
    /// Mean rounds (intervals) to 99 %.
    pub rounds_to_99: Option<f64>,
    /// Mean rounds to 100 %.
    pub rounds_to_100: Option<f64>,
    /// Updates that reached every node.
    pub complete: usize,
    /// Gossip bytes sent per node during the run (membership traffic included).
    pub bytes_per_node: f64,
    /// Mean poll cycle (timing resolution), ms.
    pub poll_cycle_ms: f64,
    /// Simulator (same core, same N / fan-out / interval): mean seconds to 99 %.
    pub sim_seconds_to_99: Option<f64>,
    /// Simulator: mean seconds to 100 %.
    pub sim_seconds_to_100: Option<f64>,
    /// `sim gossip` synchronous-round model: rounds to 99 %.
    pub sim_sync_rounds_to_99: Option<f64>,
    /// `sim gossip`: rounds to 100 %.
    pub sim_sync_rounds_to_full: Option<f64>,
    /// Real ÷ simulated seconds to 99 %.
    pub ratio_99: Option<f64>,
    /// Real ÷ simulated seconds to 100 %.
    pub ratio_100: Option<f64>,
    /// Plot files written.
    pub plots: Vec<String>,
    /// Per-arrival CSV written.
    pub csv: Option<String>,
}

fn mean(v: &[Option<f64>]) -> Option<f64> {
    let xs: Vec<f64> = v.iter().flatten().copied().collect();
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Runs the measurement on `net`, writing CSV and plots into `out`. `interval_ms` and
/// `fanout` default to what the nodes run and must equal it when given.
pub fn run(
    net: &Testnet,
    updates: usize,
    interval_ms: Option<u64>,
    fanout: Option<usize>,
    seed: u64,
    out: &Path,
) -> Result<ConvergeReport, TestnetError> {
    if updates == 0 || updates > MAX_UPDATES {
        return Err(TestnetError::Invalid(format!(
            "--updates must be in 1..={MAX_UPDATES}"
        )));
    }
    let t = net.manifest().timings;
    let interval_ms = interval_ms.unwrap_or(t.gossip_interval_ms);
    let fanout = fanout.unwrap_or(t.gossip_fanout);
    if interval_ms != t.gossip_interval_ms || fanout != t.gossip_fanout {
        return Err(TestnetError::Invalid(format!(
            "this testnet's nodes gossip every {} ms to {} peers; start one with \
             `testnet up --gossip-interval-ms {interval_ms} --gossip-fanout {fanout}` to \
             measure other values",
            t.gossip_interval_ms, t.gossip_fanout
        )));
    }
    let alive = net.alive();
    let n = alive.len();
    if n < 2 {
        return Err(TestnetError::Failed(
            "converge needs at least 2 live nodes".into(),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| TestnetError::Io {
        path: out.display().to_string(),
        msg: e.to_string(),
    })?;
    let mut rng = Rng::seed(seed);
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let bytes0 = measure::gossip_bytes_out(net);
    let mut results: Vec<UpdateArrivals> = Vec::new();
    for u in 0..updates {
        let origin = alive[rng.index(n)];
        let key = format!("converge/{seed}/{run_id}/{u}");
        results.push(measure::gossip_arrivals(
            net,
            origin,
            &key,
            &format!("update {u}"),
            ARRIVAL_DEADLINE,
        )?);
    }
    let bytes1 = measure::gossip_bytes_out(net);
    let interval = Duration::from_millis(interval_ms);
    let sims: Vec<Vec<f64>> = (0..updates)
        .map(|u| measure::simulated_arrivals(n, fanout, t.gossip_view, interval, seed + u as u64))
        .collect();
    let s99: Vec<Option<f64>> = results.iter().map(|r| r.time_to(0.99)).collect();
    let s100: Vec<Option<f64>> = results.iter().map(|r| r.time_to(1.0)).collect();
    let sim99 = mean(
        &sims
            .iter()
            .map(|s| measure::time_to(s, n - 1, 0.99))
            .collect::<Vec<_>>(),
    );
    let sim100 = mean(
        &sims
            .iter()
            .map(|s| measure::time_to(s, n - 1, 1.0))
            .collect::<Vec<_>>(),
    );
    let sync = simg::run(&simg::Params {
        nodes: n.max(4),
        fanout,
        updates: 1,
        seed,
        runs: 5,
        ..simg::Params::default()
    })
    .ok();
    let secs = interval.as_secs_f64();
    let real99 = mean(&s99);
    let real100 = mean(&s100);
    // CSV: one row per arrival (real) and per simulated arrival.
    let csv_path = out.join("converge.csv");
    let mut csv = String::from("source,update,origin,seconds\n");
    for (u, r) in results.iter().enumerate() {
        for a in &r.arrivals {
            csv += &format!("testnet,{u},{},{a:.4}\n", r.origin);
        }
    }
    for (u, s) in sims.iter().enumerate() {
        for a in s {
            csv += &format!("sim,{u},,{a:.4}\n");
        }
    }
    let csv_ok = std::fs::write(&csv_path, csv).is_ok();
    let mut all_real: Vec<f64> = results
        .iter()
        .flat_map(|r| r.arrivals.iter().copied())
        .collect();
    all_real.sort_by(f64::total_cmp);
    let mut all_sim: Vec<f64> = sims.iter().flatten().copied().collect();
    all_sim.sort_by(f64::total_cmp);
    let total = (n - 1) * updates;
    let plots = plot::line_chart(
        &out.join("converge"),
        &format!("gossip arrival CDF, N = {n}, fan-out {fanout}, {interval_ms} ms"),
        "seconds after publish",
        "fraction of nodes holding the update",
        &[
            Series {
                label: format!("testnet ({updates} updates)"),
                points: plot::cdf(&all_real, total),
            },
            Series {
                label: "simulator (same core and parameters)".into(),
                points: plot::cdf(&all_sim, total),
            },
        ],
    )
    .unwrap_or_else(|e| {
        tracing::warn!(%e, "cannot draw the convergence plot");
        Vec::new()
    });
    Ok(ConvergeReport {
        nodes: n,
        updates,
        interval_ms,
        fanout,
        complete: s100.iter().filter(|x| x.is_some()).count(),
        rounds_to_99: real99.map(|x| x / secs),
        rounds_to_100: real100.map(|x| x / secs),
        seconds_to_99: s99,
        seconds_to_100: s100,
        bytes_per_node: bytes1.saturating_sub(bytes0) as f64 / n as f64,
        poll_cycle_ms: results.iter().map(|r| r.poll_cycle).sum::<f64>() / updates as f64 * 1e3,
        sim_seconds_to_99: sim99,
        sim_seconds_to_100: sim100,
        sim_sync_rounds_to_99: sync.as_ref().and_then(|r| r.rounds_to_99),
        sim_sync_rounds_to_full: sync.as_ref().and_then(|r| r.rounds_to_full),
        ratio_99: real99.zip(sim99).map(|(a, b)| a / b),
        ratio_100: real100.zip(sim100).map(|(a, b)| a / b),
        plots: plots.iter().map(|p| p.display().to_string()).collect(),
        csv: csv_ok.then(|| csv_path.display().to_string()),
    })
}

fn o(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.2}"))
}

impl ConvergeReport {
    /// A short table.
    pub fn render_table(&self) -> String {
        let mut s = String::new();
        s += &format!(
            "nodes {} · updates {} ({} reached every node) · fan-out {} · interval {} ms\n",
            self.nodes, self.updates, self.complete, self.fanout, self.interval_ms
        );
        s += &format!("{:<34} {:>10} {:>10}\n", "", "to 99 %", "to 100 %");
        s += &format!(
            "{:<34} {:>10} {:>10}\n",
            "testnet, seconds (mean)",
            o(mean(&self.seconds_to_99)),
            o(mean(&self.seconds_to_100))
        );
        s += &format!(
            "{:<34} {:>10} {:>10}\n",
            "testnet, rounds",
            o(self.rounds_to_99),
            o(self.rounds_to_100)
        );
        s += &format!(
            "{:<34} {:>10} {:>10}\n",
            "simulator (same core), seconds",
            o(self.sim_seconds_to_99),
            o(self.sim_seconds_to_100)
        );
        s += &format!(
            "{:<34} {:>10} {:>10}\n",
            "sim gossip (sync rounds), rounds",
            o(self.sim_sync_rounds_to_99),
            o(self.sim_sync_rounds_to_full)
        );
        s += &format!(
            "{:<34} {:>10} {:>10}\n",
            "ratio testnet ÷ simulator",
            o(self.ratio_99),
            o(self.ratio_100)
        );
        s += &format!(
            "gossip bytes sent per node {:.0} · poll cycle {:.0} ms\n",
            self.bytes_per_node, self.poll_cycle_ms
        );
        for p in self.plots.iter().chain(self.csv.iter()) {
            s += &format!("wrote {p}\n");
        }
        s
    }
}
