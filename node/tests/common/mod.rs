//! Helpers for tests that run real nodes on 127.0.0.1.

// Tests measure real deadlines with the wall clock.
#![allow(dead_code, unreachable_pub, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use peerlab_node::config::{Config, Transport};
use peerlab_node::{NodeHandle, NodeOptions};

/// A testnet of real nodes in one tokio runtime; the test thread uses blocking clients.
pub struct Net {
    pub rt: tokio::runtime::Runtime,
    pub nodes: Vec<Option<NodeHandle>>,
    pub dirs: Vec<tempfile::TempDir>,
    pub transport: Transport,
}

impl Net {
    pub fn new(transport: Transport) -> Net {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Net {
            rt,
            nodes: Vec::new(),
            dirs: Vec::new(),
            transport,
        }
    }

    pub fn config(&self, seed: u64) -> Config {
        Config {
            seed: Some(seed),
            ..Config::local(self.transport)
        }
    }

    /// Starts a node; the first one starts the overlay, later ones bootstrap from node 0.
    pub fn start(&mut self) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let i = self.nodes.len();
        let mut cfg = self.config(i as u64 + 1);
        if let Some(Some(first)) = self.nodes.first() {
            cfg.bootstrap = vec![self.bootstrap_addr(first)];
        }
        let node = self
            .rt
            .block_on(peerlab_node::spawn(NodeOptions::new(dir.path(), cfg)))
            .expect("node starts");
        self.nodes.push(Some(node));
        self.dirs.push(dir);
        i
    }

    /// Restarts node `i` from its data dir (after `stop`).
    pub fn restart(&mut self, i: usize, bootstrap_from: usize) {
        let mut cfg = self.config(100 + i as u64);
        cfg.bootstrap = vec![self.bootstrap_addr(self.node(bootstrap_from))];
        let node = self
            .rt
            .block_on(peerlab_node::spawn(NodeOptions::new(
                self.dirs[i].path(),
                cfg,
            )))
            .expect("node restarts");
        self.nodes[i] = Some(node);
    }

    pub fn bootstrap_addr(&self, n: &NodeHandle) -> String {
        let want = match self.transport {
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
        };
        n.listen_addrs()
            .iter()
            .map(|a| a.to_string())
            .find(|a| a.contains(want))
            .expect("a listen address of the transport")
    }

    pub fn node(&self, i: usize) -> &NodeHandle {
        self.nodes[i].as_ref().expect("node running")
    }

    pub fn alive(&self) -> impl Iterator<Item = (usize, &NodeHandle)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// Stops node `i` abruptly ([`NodeHandle::abort`]): no leave, but not a crash either
    /// (its tasks' drops still close the database cleanly).
    pub fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            self.rt.block_on(n.abort());
        }
    }

    pub fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            self.rt.block_on(n.shutdown());
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// Polls `cond` until it holds or `within` passes; panics with `what` on timeout.
pub fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sum of the samples of counter `name` in Prometheus text `metrics` whose labels
/// contain `label` (`""` for all of them); 0 when there is none.
pub fn counter(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = series.strip_prefix(name)?;
            let matches = (labels.is_empty() || labels.starts_with('{')) && labels.contains(label);
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}
