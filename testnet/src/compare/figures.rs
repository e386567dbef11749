//! The figures measured for each system, their ratios, the targets, and the side-by-side
//! table.

use serde::Serialize;

/// What one system did in one run. `None`: not measured (the phase did not finish in time,
/// or the machine could not count it — see `notes`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Start of the first agent until every node lists all N alive, seconds.
    pub join_secs: Option<f64>,
    /// A user event / `publish` at one node until 99 % of the others have it, seconds (the
    /// receivers' own timestamps).
    pub event_99_secs: Option<f64>,
    /// The same until all others have it, seconds.
    pub event_100_secs: Option<f64>,
    /// SIGKILL of the victims until every live node marks one failed/dead, mean over the
    /// victims, seconds.
    pub detect_mean_secs: Option<f64>,
    /// The same, the slowest victim, seconds.
    pub detect_max_secs: Option<f64>,
    /// Live nodes declared failed/dead by some node during the run.
    pub false_positives: usize,
    /// IP bytes sent on the loopback wire per node and second, at rest.
    pub bytes_per_node_per_sec: Option<f64>,
    /// Resident memory per node process at rest, MiB.
    pub rss_mib_per_node: f64,
    /// CPU per node at rest, in cores (CPU seconds per second).
    pub cpu_per_node: f64,
    /// What the system's own metrics say it sent at rest, per protocol, bytes per node and
    /// second (message payloads, without transport headers; empty for Serf).
    pub payload_bytes_per_node_per_sec: std::collections::BTreeMap<String, f64>,
    /// What limited the run (phases that timed out, counters that could not be read).
    pub notes: Vec<String>,
}

/// peerlab's figure divided by Serf's, per figure (`None` when either is missing or
/// Serf's is zero).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Ratios {
    /// `join_secs`.
    pub join_secs: Option<f64>,
    /// `event_99_secs`.
    pub event_99_secs: Option<f64>,
    /// `event_100_secs`.
    pub event_100_secs: Option<f64>,
    /// `detect_mean_secs`.
    pub detect_mean_secs: Option<f64>,
    /// `detect_max_secs`.
    pub detect_max_secs: Option<f64>,
    /// `bytes_per_node_per_sec`.
    pub bytes_per_node_per_sec: Option<f64>,
    /// `rss_mib_per_node`.
    pub rss_mib_per_node: Option<f64>,
    /// `cpu_per_node`.
    pub cpu_per_node: Option<f64>,
}

fn ratio(p: Option<f64>, s: Option<f64>) -> Option<f64> {
    match (p, s) {
        (Some(p), Some(s)) if s > 0.0 && p.is_finite() && s.is_finite() => Some(p / s),
        _ => None,
    }
}

impl Ratios {
    /// peerlab / Serf for every figure.
    pub fn of(peerlab: &Figures, serf: &Figures) -> Ratios {
        Ratios {
            join_secs: ratio(peerlab.join_secs, serf.join_secs),
            event_99_secs: ratio(peerlab.event_99_secs, serf.event_99_secs),
            event_100_secs: ratio(peerlab.event_100_secs, serf.event_100_secs),
            detect_mean_secs: ratio(peerlab.detect_mean_secs, serf.detect_mean_secs),
            detect_max_secs: ratio(peerlab.detect_max_secs, serf.detect_max_secs),
            bytes_per_node_per_sec: ratio(
                peerlab.bytes_per_node_per_sec,
                serf.bytes_per_node_per_sec,
            ),
            rss_mib_per_node: ratio(Some(peerlab.rss_mib_per_node), Some(serf.rss_mib_per_node)),
            cpu_per_node: ratio(Some(peerlab.cpu_per_node), Some(serf.cpu_per_node)),
        }
    }
}

/// Most peerlab may take to join, as a multiple of Serf's join time.
pub const JOIN_TARGET_RATIO: f64 = 2.0;
/// Most bytes a peerlab node may send at rest, as a multiple of a Serf agent's.
pub const BYTES_TARGET_RATIO: f64 = 1.5;

/// Whether peerlab met each target (`None`: a figure is missing).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Targets {
    /// `event_100_secs` ≤ Serf's.
    pub event_100_secs: Option<bool>,
    /// `detect_mean_secs` ≤ Serf's.
    pub detect_mean_secs: Option<bool>,
    /// No live node declared dead.
    pub false_positives: bool,
    /// `bytes_per_node_per_sec` ≤ [`BYTES_TARGET_RATIO`] × Serf's.
    pub bytes_per_node_per_sec: Option<bool>,
    /// `join_secs` ≤ [`JOIN_TARGET_RATIO`] × Serf's.
    pub join_secs: Option<bool>,
}

impl Targets {
    /// The targets judged from the ratios.
    pub fn of(peerlab: &Figures, r: &Ratios) -> Targets {
        Targets {
            event_100_secs: r.event_100_secs.map(|x| x <= 1.0),
            detect_mean_secs: r.detect_mean_secs.map(|x| x <= 1.0),
            false_positives: peerlab.false_positives == 0,
            bytes_per_node_per_sec: r.bytes_per_node_per_sec.map(|x| x <= BYTES_TARGET_RATIO),
            join_secs: r.join_secs.map(|x| x <= JOIN_TARGET_RATIO),
        }
    }

    /// Whether every target was met.
    pub fn all_met(&self) -> bool {
        self.false_positives
            && [
                self.event_100_secs,
                self.detect_mean_secs,
                self.bytes_per_node_per_sec,
                self.join_secs,
            ]
            .iter()
            .all(|t| *t == Some(true))
    }
}

/// `peerlab testnet compare serf`'s result.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Nodes of each system.
    pub nodes: usize,
    /// Serf's figures.
    pub serf: Figures,
    /// peerlab's figures.
    pub peerlab: Figures,
    /// peerlab / Serf.
    pub ratios: Ratios,
    /// peerlab's targets.
    pub targets: Targets,
    /// How the run was set up (versions, timers, windows).
    pub setup: Setup,
}

/// How a run was set up.
#[derive(Clone, Debug, Serialize)]
pub struct Setup {
    /// `serf version`'s first line.
    pub serf_version: String,
    /// Nodes killed for the detection figures.
    pub killed: usize,
    /// Length of the at-rest window, seconds.
    pub rest_secs: u64,
    /// peerlab's gossip partial view (memberlist picks gossip targets among all members).
    pub peerlab_gossip_view: usize,
    /// peerlab's DHT maintenance period at rest, ms (Serf has no DHT).
    pub peerlab_maintenance_ms: u64,
    /// `uptime`'s load averages before the run.
    pub load_before: String,
    /// The same after the run.
    pub load_after: String,
}

impl Report {
    /// Builds the report: ratios and targets from the two systems' figures.
    pub fn new(nodes: usize, serf: Figures, peerlab: Figures, setup: Setup) -> Report {
        let ratios = Ratios::of(&peerlab, &serf);
        let targets = Targets::of(&peerlab, &ratios);
        Report {
            nodes,
            serf,
            peerlab,
            ratios,
            targets,
            setup,
        }
    }

    /// The side-by-side table.
    pub fn render_table(&self) -> String {
        let f = |v: Option<f64>, prec: usize| match v {
            Some(x) => format!("{x:.prec$}"),
            None => "-".to_string(),
        };
        let ok = |t: Option<bool>| match t {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "-",
        };
        let (s, p, r, t) = (&self.serf, &self.peerlab, &self.ratios, &self.targets);
        let mut out = format!(
            "{} nodes on 127.0.0.1, gossip 200 ms, fan-out 3, probe 1 s; {} killed; {} s at rest\n\
             {:<24} {:>10} {:>10} {:>13}  {}\n",
            self.nodes,
            self.setup.killed,
            self.setup.rest_secs,
            "figure",
            "serf",
            "peerlab",
            "peerlab/serf",
            "target"
        );
        let mut row = |name: &str, a: String, b: String, ratio: Option<f64>, target: &str| {
            out += &format!("{name:<24} {a:>10} {b:>10} {:>13}  {target}\n", f(ratio, 2));
        };
        row(
            "join_secs",
            f(s.join_secs, 2),
            f(p.join_secs, 2),
            r.join_secs,
            &format!("≤ {JOIN_TARGET_RATIO}× serf: {}", ok(t.join_secs)),
        );
        row(
            "event_99_secs",
            f(s.event_99_secs, 3),
            f(p.event_99_secs, 3),
            r.event_99_secs,
            "",
        );
        row(
            "event_100_secs",
            f(s.event_100_secs, 3),
            f(p.event_100_secs, 3),
            r.event_100_secs,
            &format!("≤ serf: {}", ok(t.event_100_secs)),
        );
        row(
            "detect_mean_secs",
            f(s.detect_mean_secs, 2),
            f(p.detect_mean_secs, 2),
            r.detect_mean_secs,
            &format!("≤ serf: {}", ok(t.detect_mean_secs)),
        );
        row(
            "detect_max_secs",
            f(s.detect_max_secs, 2),
            f(p.detect_max_secs, 2),
            r.detect_max_secs,
            "",
        );
        row(
            "false_positives",
            s.false_positives.to_string(),
            p.false_positives.to_string(),
            None,
            &format!("0: {}", if t.false_positives { "met" } else { "MISSED" }),
        );
        row(
            "bytes_per_node_per_sec",
            f(s.bytes_per_node_per_sec, 0),
            f(p.bytes_per_node_per_sec, 0),
            r.bytes_per_node_per_sec,
            &format!(
                "≤ {BYTES_TARGET_RATIO}× serf: {}",
                ok(t.bytes_per_node_per_sec)
            ),
        );
        row(
            "rss_mib_per_node",
            f(Some(s.rss_mib_per_node), 1),
            f(Some(p.rss_mib_per_node), 1),
            r.rss_mib_per_node,
            "",
        );
        row(
            "cpu_per_node",
            f(Some(s.cpu_per_node), 4),
            f(Some(p.cpu_per_node), 4),
            r.cpu_per_node,
            "",
        );
        for (who, fig) in [("serf", s), ("peerlab", p)] {
            if !fig.payload_bytes_per_node_per_sec.is_empty() {
                let parts: Vec<String> = fig
                    .payload_bytes_per_node_per_sec
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.0}"))
                    .collect();
                out += &format!(
                    "{who} payload bytes per node per second at rest, by protocol: {}\n",
                    parts.join(", ")
                );
            }
            for n in &fig.notes {
                out += &format!("note ({who}): {n}\n");
            }
        }
        out += &format!(
            "{}; load before {}, after {}\n",
            self.setup.serf_version, self.setup.load_before, self.setup.load_after
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(join: f64, ev: f64, det: f64, bytes: f64) -> Figures {
        Figures {
            join_secs: Some(join),
            event_99_secs: Some(ev * 0.8),
            event_100_secs: Some(ev),
            detect_mean_secs: Some(det),
            detect_max_secs: Some(det + 1.0),
            false_positives: 0,
            bytes_per_node_per_sec: Some(bytes),
            rss_mib_per_node: 20.0,
            cpu_per_node: 0.01,
            payload_bytes_per_node_per_sec: Default::default(),
            notes: Vec::new(),
        }
    }

    fn setup() -> Setup {
        Setup {
            serf_version: "Serf v0.9.4".into(),
            killed: 5,
            rest_secs: 60,
            peerlab_gossip_view: 16,
            peerlab_maintenance_ms: 2500,
            load_before: "1.0".into(),
            load_after: "1.2".into(),
        }
    }

    #[test]
    fn ratios_are_peerlab_over_serf_and_judge_the_targets() {
        let serf = figures(10.0, 1.0, 8.0, 400.0);
        let peerlab = figures(19.0, 0.8, 6.0, 640.0);
        let r = Report::new(100, serf, peerlab, setup());
        assert_eq!(r.ratios.join_secs, Some(1.9));
        assert_eq!(r.ratios.event_100_secs, Some(0.8));
        assert_eq!(r.ratios.detect_mean_secs, Some(0.75));
        assert_eq!(r.ratios.bytes_per_node_per_sec, Some(1.6));
        assert_eq!(r.ratios.rss_mib_per_node, Some(1.0));
        assert_eq!(r.targets.join_secs, Some(true));
        assert_eq!(r.targets.event_100_secs, Some(true));
        assert_eq!(r.targets.detect_mean_secs, Some(true));
        // 1.6× Serf's bytes is over the 1.5× target.
        assert_eq!(r.targets.bytes_per_node_per_sec, Some(false));
        assert!(!r.targets.all_met());
        let text = r.render_table();
        assert!(text.contains("bytes_per_node_per_sec"), "{text}");
        assert!(text.contains("MISSED"), "{text}");
        let js = serde_json::to_value(&r).unwrap();
        assert_eq!(js["nodes"], 100);
        assert_eq!(js["serf"]["join_secs"], 10.0);
        assert_eq!(js["peerlab"]["bytes_per_node_per_sec"], 640.0);
        assert_eq!(js["ratios"]["detect_mean_secs"], 0.75);
    }

    #[test]
    fn missing_or_zero_figures_give_no_ratio_and_no_verdict() {
        let mut serf = figures(10.0, 1.0, 8.0, 0.0);
        serf.detect_mean_secs = None;
        let mut peerlab = figures(25.0, 1.2, 6.0, 640.0);
        peerlab.false_positives = 2;
        let r = Report::new(300, serf, peerlab, setup());
        assert_eq!(r.ratios.bytes_per_node_per_sec, None);
        assert_eq!(r.ratios.detect_mean_secs, None);
        assert_eq!(r.targets.bytes_per_node_per_sec, None);
        assert_eq!(r.targets.detect_mean_secs, None);
        assert_eq!(r.targets.join_secs, Some(false));
        assert_eq!(r.targets.event_100_secs, Some(false));
        assert!(!r.targets.false_positives);
        assert!(r.render_table().contains(" - "));
    }
}
