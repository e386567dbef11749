//! `testnet.json`: the testnet file in the testnet dir.
//!
//! It records every node's index, data dir, peer id, addresses, API token and pid, whether
//! it should be running, and the timings all nodes run with. The controller rewrites it
//! after each change (atomically: write, then rename), so that `testnet status`, `testnet
//! down` and the experiments, run by other processes, find every node the testnet started —
//! also after the controlling process died.

use std::fs;
use std::path::{Path, PathBuf};

use peerlab_node::config::Transport;
use serde::{Deserialize, Serialize};

use super::{TestnetError, Timings, io_err, save_json};

/// Name of the testnet description file in the testnet dir.
pub const MANIFEST: &str = "testnet.json";

/// Where a testnet's nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One OS process per node.
    Processes,
    /// Every node inside the controlling process.
    InProcess,
    /// Nodes this controller did not start, on other hosts (a cluster's pods), reached
    /// through their TLS control APIs (`testnet attach`). Their orchestrator restarts them.
    Remote,
}

/// One node as `testnet.json` records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Index in the testnet.
    pub index: usize,
    /// Data dir.
    pub data_dir: PathBuf,
    /// libp2p peer id (empty until the node started).
    pub peer_id: String,
    /// Control API address.
    pub api: String,
    /// Control API token.
    pub token: String,
    /// The control API's TLS certificate (PEM) when it serves TLS (a node whose API other
    /// hosts reach); `None`: plain HTTP on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_cert: Option<String>,
    /// Listen multiaddrs.
    pub listen_addrs: Vec<String>,
    /// OS process id (the controller's own for in-process nodes).
    pub pid: Option<u32>,
    /// Whether the node should be running.
    pub alive: bool,
    /// Whether it is a seed that others bootstrap from.
    pub seed: bool,
    /// The emulated host it runs on (1-based); `None`: 127.0.0.1.
    #[serde(default)]
    pub host: Option<usize>,
}

/// `testnet.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Processes or in-process.
    pub mode: Mode,
    /// The process that started the testnet.
    pub controller_pid: u32,
    /// `quic` or `tcp`.
    pub transport: Transport,
    /// Virtual nodes per peer.
    pub vnodes: u16,
    /// Protocol timings (`maintenance_ms` resolved for this `N`).
    #[serde(default)]
    pub timings: Timings,
    /// The nodes.
    pub nodes: Vec<NodeRecord>,
}

impl Manifest {
    /// Reads `testnet.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Manifest, TestnetError> {
        let path = dir.join(MANIFEST);
        let text = fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                TestnetError::NoTestnet(dir.display().to_string())
            } else {
                io_err(&path)(e)
            }
        })?;
        serde_json::from_str(&text).map_err(|e| TestnetError::Io {
            path: path.display().to_string(),
            msg: format!("not a testnet description: {e}"),
        })
    }

    /// Writes `testnet.json` into `dir` atomically (write, then rename).
    pub fn save(&self, dir: &Path) -> Result<(), TestnetError> {
        save_json(dir, MANIFEST, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_testnet_file_without_hosts_reads_as_nodes_on_loopback() {
        let old = r#"{"index":3,"data_dir":"/tmp/tn/node-0003","peer_id":"","api":"127.0.0.1:1",
            "token":"t","listen_addrs":[],"pid":null,"alive":false,"seed":false}"#;
        let rec: NodeRecord = serde_json::from_str(old).unwrap();
        assert_eq!(rec.host, None);
        let on_host = NodeRecord {
            host: Some(2),
            ..rec
        };
        let back: NodeRecord =
            serde_json::from_str(&serde_json::to_string(&on_host).unwrap()).unwrap();
        assert_eq!(back.host, Some(2));
    }
}
