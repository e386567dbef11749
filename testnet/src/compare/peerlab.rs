//! An N-node peerlab testnet of node processes with Serf's timers (see [`super::timings`]).
//!
//! Nodes listen on `BASE+i` (QUIC and TCP) with their API on `BASE+N+i`, and log their
//! membership changes ([`peerlab_node::MEMBERS_LOG_TARGET`] at `info`, everything else at
//! `warn`) into `node.log` in their data dirs. The lines carry the node's own time; the
//! member named in them is the core peer id in hex, mapped back to the node's index
//! through the testnet's description.

#![allow(clippy::disallowed_methods)] // a driver: wall-clock time is its job

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use peerlab_node::config::Transport;

use super::timeline::{self, Observation, Seen};
use super::{Cluster, EVENT_DEADLINE};
use crate::process::{
    Mode, NodeProgram, Testnet, TestnetError, Timings, UpOptions, core_peer_id, par_map,
};

/// The nodes' log filter: membership changes and warnings.
fn log_filter() -> String {
    format!(
        "warn,{}=info,peerlab::dials=debug",
        peerlab_node::MEMBERS_LOG_TARGET
    )
}

/// The part of a log file read so far.
#[derive(Default)]
struct LogTail {
    offset: u64,
    partial: String,
}

impl LogTail {
    /// Lines appended since the last call (a line still being written waits).
    fn read_new(&mut self, path: &std::path::Path) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let Ok(k) = f.read_to_end(&mut buf) else {
            return Vec::new();
        };
        self.offset += k as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let Some(end) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let done = std::mem::replace(&mut self.partial, rest);
        done.lines().map(str::to_string).collect()
    }
}

/// An N-node peerlab testnet (stopped on drop).
pub struct PeerlabCluster {
    exe: PathBuf,
    n: usize,
    base: u16,
    dir: PathBuf,
    timings: Timings,
    net: Option<Testnet>,
    tails: Vec<LogTail>,
    /// (observer, time, what, member's core peer id in hex).
    raw: Vec<(usize, f64, Seen, String)>,
    index_of: BTreeMap<String, usize>,
}

impl PeerlabCluster {
    /// A testnet of `n` nodes running `exe` on ports from `base`, in `dir` (not started).
    pub fn new(
        exe: PathBuf,
        n: usize,
        base: u16,
        dir: PathBuf,
        timings: Timings,
    ) -> PeerlabCluster {
        PeerlabCluster {
            timings,
            exe,
            n,
            base,
            dir,
            net: None,
            tails: (0..n).map(|_| LogTail::default()).collect(),
            raw: Vec::new(),
            index_of: BTreeMap::new(),
        }
    }
}

impl Cluster for PeerlabCluster {
    fn name(&self) -> &'static str {
        "peerlab"
    }

    fn start(&mut self, progress: bool) -> Result<(), TestnetError> {
        let mut program = NodeProgram::peerlab(&self.exe);
        program.env.push(("RUST_LOG".into(), log_filter()));
        program.env.push(("NO_COLOR".into(), "1".into()));
        let net = Testnet::start(
            UpOptions {
                nodes: self.n,
                dir: self.dir.clone(),
                transport: Transport::Quic,
                vnodes: 4,
                mode: Mode::Processes,
                base_port: Some(self.base),
                program: Some(program),
                seed: 1,
                timings: self.timings,
                hosts: None,
            },
            progress,
        )?;
        self.index_of = (0..net.len())
            .filter_map(|i| Some((core_peer_id(&net.node(i).peer_id)?.to_string(), i)))
            .collect();
        self.net = Some(net);
        Ok(())
    }

    fn observations(&mut self) -> Vec<Observation> {
        let Some(net) = self.net.as_ref() else {
            return Vec::new();
        };
        for i in 0..self.n {
            let path = net.node(i).data_dir.join("node.log");
            for line in self.tails[i].read_new(&path) {
                if let Some((at, seen, peer)) = timeline::parse_member_line(&line) {
                    self.raw.push((i, at, seen, peer));
                }
            }
        }
        self.raw
            .iter()
            .filter_map(|(observer, at, seen, peer)| {
                Some(Observation {
                    at: *at,
                    observer: *observer,
                    subject: *self.index_of.get(peer)?,
                    seen: *seen,
                })
            })
            .collect()
    }

    fn pids(&self) -> Vec<u32> {
        let Some(net) = self.net.as_ref() else {
            return Vec::new();
        };
        net.alive()
            .into_iter()
            .filter_map(|i| net.node(i).pid)
            .collect()
    }

    fn event(&mut self, origin: usize) -> Result<Vec<f64>, TestnetError> {
        let net = self
            .net
            .as_ref()
            .ok_or_else(|| TestnetError::Failed("the testnet is not running".into()))?;
        let r = crate::measure::gossip_arrivals(
            net,
            origin,
            "peerlab-compare",
            "one user event",
            EVENT_DEADLINE,
        )?;
        Ok(r.arrivals)
    }

    fn kill(&mut self, i: usize) {
        if let Some(net) = self.net.as_mut() {
            net.kill(i);
        }
    }

    fn stop(&mut self) {
        if let Some(mut net) = self.net.take() {
            net.down();
        }
    }

    fn wire_ports(&self) -> Vec<(u16, u16)> {
        // The nodes' QUIC and TCP ports, and their probe datagrams' (see
        // `process::node_config`); not the API's, which the controller polls.
        let n = self.n as u16;
        vec![
            (self.base, self.base + n - 1),
            (self.base + 2 * n, self.base + 3 * n - 1),
        ]
    }

    fn wait_settled(&mut self, within: Duration, progress: bool) -> Result<(), String> {
        let Some(net) = self.net.as_ref() else {
            return Err("not started".into());
        };
        net.wait_converged(within, progress)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn payload_bytes_out(&self) -> BTreeMap<String, u64> {
        let Some(net) = self.net.as_ref() else {
            return BTreeMap::new();
        };
        let texts = par_map(&net.alive(), |&i| {
            net.client(i).metrics().unwrap_or_default()
        });
        let mut sum = BTreeMap::new();
        for t in &texts {
            for (k, v) in bytes_out_by_protocol(t) {
                *sum.entry(k).or_insert(0) += v;
            }
        }
        sum
    }
}

/// `peerlab_bytes_out_total{protocol="P"} V` lines of a `/metrics` text, as (P, V).
fn bytes_out_by_protocol(metrics: &str) -> Vec<(String, u64)> {
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("peerlab_bytes_out_total{protocol=\"")?;
            let (proto, rest) = rest.split_once("\"}")?;
            let v: f64 = rest.trim().parse().ok()?;
            Some((proto.to_string(), v as u64))
        })
        .collect()
}

impl Drop for PeerlabCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_bytes_out_are_read_per_protocol() {
        let text = "# TYPE peerlab_bytes_out_total counter\n\
                    peerlab_bytes_out_total{protocol=\"dht\"} 10365\n\
                    peerlab_bytes_in_total{protocol=\"dht\"} 999\n\
                    peerlab_bytes_out_total{protocol=\"gossip\"} 132.0\n";
        assert_eq!(
            bytes_out_by_protocol(text),
            vec![("dht".to_string(), 10365), ("gossip".to_string(), 132)]
        );
    }

    #[test]
    fn log_tail_returns_whole_new_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.log");
        let mut t = LogTail::default();
        assert!(t.read_new(&p).is_empty());
        std::fs::write(&p, "one\ntw").unwrap();
        assert_eq!(t.read_new(&p), vec!["one".to_string()]);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"o\nthree\n").unwrap();
        assert_eq!(t.read_new(&p), vec!["two".to_string(), "three".to_string()]);
        assert!(t.read_new(&p).is_empty());
    }
}
