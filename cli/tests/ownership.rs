//! Writer-owned DHT keys through the CLI, with real processes: three `peerlab node`
//! processes on 127.0.0.1, and `peerlab put/get/delete` against each of them. A key written
//! by one node can be overwritten and deleted only by that node; another node's write is
//! refused with one line naming the owner, and every node keeps reading the owner's value.

// Tests measure real deadlines with the wall clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{stderr, stdout};

/// A `peerlab node` child process, killed when dropped.
struct Node {
    child: Child,
    dir: tempfile::TempDir,
    peer_id: String,
    quic: String,
}

impl Node {
    /// Starts a node on 127.0.0.1 (QUIC), joining through `bootstrap` if given, and reads its
    /// JSON start-up line (printed once the API is up and the data dir names it).
    fn start(bootstrap: Option<&str>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerlab"));
        cmd.args(["node", "--data-dir", dir.path().to_str().unwrap()])
            .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--json"])
            .env("RUST_LOG", "warn")
            .env_remove("PEERLAB_DATA_DIR")
            .env_remove("PEERLAB_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        let mut child = cmd.spawn().expect("start peerlab node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let summary: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no JSON start-up line ({e}): {line:?}");
            }
        };
        let peer_id = summary["peer_id"].as_str().unwrap().to_string();
        let quic = summary["listen_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str())
            .find(|a| a.contains("quic-v1") && a.contains("/p2p/"))
            .expect("a QUIC listen address with /p2p/")
            .to_string();
        Node {
            child,
            dir,
            peer_id,
            quic,
        }
    }

    /// Runs `peerlab ARGS --data-dir <this node's dir>`.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_peerlab"))
            .args(args)
            .args(["--data-dir", self.dir.path().to_str().unwrap()])
            .env_remove("PEERLAB_DATA_DIR")
            .env_remove("PEERLAB_TOKEN")
            .output()
            .expect("run peerlab")
    }

    fn json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut a = args.to_vec();
        a.push("--json");
        let o = self.cli(&a);
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` until it holds or `within` passes; panics with `what` on timeout.
fn wait_for(what: &str, within: Duration, cond: impl FnMut() -> bool) {
    assert!(
        common::eventually(within, cond),
        "timed out after {within:?} waiting for: {what}"
    );
}

/// The three nodes agree on the ring: every node joined, sees both others as peers, and
/// routes `key` to the same owner (so a get anywhere reads the replicas a put wrote).
fn converged(nodes: &[&Node], key: &str) -> bool {
    let mut owners = Vec::new();
    for n in nodes {
        let Some(st) = n.json(&["status"]) else {
            return false;
        };
        if st["dht_joined"] != true || st["connected_peers"].as_u64() != Some(2) {
            return false;
        }
        let Some(ring) = n.json(&["ring"]) else {
            return false;
        };
        // Every virtual node joined, with a predecessor, and the successor lists name
        // both other peers.
        let vnodes = ring["vnodes"].as_array().cloned().unwrap_or_default();
        let settled = !vnodes.is_empty()
            && vnodes
                .iter()
                .all(|v| v["joined"] == true && !v["predecessor"].is_null());
        let others_seen = nodes.iter().filter(|o| o.peer_id != n.peer_id).all(|o| {
            vnodes.iter().any(|v| {
                v["successors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["peer_id"] == o.peer_id.as_str())
            })
        });
        if !settled || !others_seen {
            return false;
        }
        match n.json(&["lookup", key]) {
            Some(r) => owners.push(r["owner"].clone()),
            None => return false,
        }
    }
    owners.windows(2).all(|w| w[0] == w[1])
}

/// `peerlab get k` on every node prints `want`.
fn assert_reads(nodes: &[&Node], key: &str, want: &str) {
    for (name, n) in ["A", "B", "C"].iter().zip(nodes) {
        let o = n.cli(&["get", key]);
        assert!(o.status.success(), "get on {name}: {}", stderr(&o));
        assert_eq!(stdout(&o).trim(), want, "get on {name}");
    }
}

/// A write refused for ownership: non-zero exit, and exactly one stderr line naming the
/// key and its owner.
fn assert_refused(o: &Output, key: &str, owner: &str) {
    assert!(
        !o.status.success(),
        "a write of another node's key succeeded: {}",
        stdout(o)
    );
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one stderr line: {err:?}");
    assert!(
        lines[0].contains(&format!("key {key:?} belongs to {owner}")),
        "the line names the owner {owner}: {err:?}"
    );
}

#[test]
fn only_the_writer_can_overwrite_or_delete_its_key() {
    let a = Node::start(None);
    let b = Node::start(Some(&a.quic));
    let c = Node::start(Some(&a.quic));
    assert!(b.peer_id.starts_with("12D3KooW"), "{}", b.peer_id);
    let nodes = [&a, &b, &c];
    wait_for("the three nodes converge", Duration::from_secs(20), || {
        converged(&nodes, "k")
    });

    let o = b.cli(&["put", "k", "v1"]);
    assert!(o.status.success(), "put on B: {}", stderr(&o));
    assert_reads(&nodes, "k", "v1");

    // C neither overwrites nor deletes B's key, and every node still reads B's value.
    let o = c.cli(&["put", "k", "v2"]);
    assert_refused(&o, "k", &b.peer_id);
    assert_reads(&nodes, "k", "v1");
    let o = c.cli(&["delete", "k"]);
    assert_refused(&o, "k", &b.peer_id);
    assert_reads(&nodes, "k", "v1");

    // B overwrites its own key...
    let o = b.cli(&["put", "k", "v3"]);
    assert!(o.status.success(), "overwrite on B: {}", stderr(&o));
    assert_reads(&nodes, "k", "v3");

    // ...and deletes it.
    let o = b.cli(&["delete", "k"]);
    assert!(o.status.success(), "delete on B: {}", stderr(&o));
    for (name, n) in ["A", "B", "C"].iter().zip(nodes) {
        let o = n.cli(&["get", "k"]);
        assert!(
            !o.status.success(),
            "get on {name} after delete: {}",
            stdout(&o)
        );
        assert!(
            stderr(&o).contains("key \"k\" not found"),
            "get on {name} after delete: {}",
            stderr(&o)
        );
    }
}
