//! A testnet on emulated hosts, end to end: 12 node processes on 3 network namespaces, a
//! partition between host 1 and hosts 2–3 with writes on both sides, the heal, and `down`
//! removing every namespace, link and nftables table.
//!
//! Needs root and `ip`, `nft`, `tc`; without them the test prints why and passes without
//! running. A guard runs `down` when the test ends, also when it fails half-way, so no
//! namespace outlives it. Node processes are this test binary re-run with only
//! [`testnet_child`] selected, and exit when the test process goes away.

#![allow(clippy::disallowed_methods)] // deadlines are wall-clock time

use std::path::PathBuf;
use std::time::Duration;

use peerlab_node::config::Transport;
use peerlab_testnet::cmd::DirArg;
use peerlab_testnet::process::{
    Hosts, HostsOptions, LinkFaults, Mode, NodeProgram, PROGRAMS, Testnet, Timings, UpOptions,
    find_program, is_root, run_child_from_env,
};
use peerlab_testnet::split;

const NODES: usize = 12;
const HOSTS: usize = 3;

/// The node process entry point (a no-op in a normal test run).
#[test]
fn testnet_child() {
    run_child_from_env();
}

/// Runs `down` on the testnet in its dir when dropped, whatever state the test left.
struct DownGuard(PathBuf);

impl Drop for DownGuard {
    fn drop(&mut self) {
        match Testnet::attach(&self.0, None) {
            Ok(mut net) => {
                net.down();
                if !net.leftover_hosts().is_empty() {
                    eprintln!("left after down: {:?}", net.leftover_hosts());
                }
            }
            Err(_) => {
                if let Ok(Some(h)) = Hosts::load(&self.0) {
                    let left = h.destroy(&self.0);
                    if !left.is_empty() {
                        eprintln!("left after down: {left:?}");
                    }
                }
            }
        }
    }
}

fn missing_privileges() -> Option<String> {
    if !is_root() {
        return Some("not root: network namespaces need root".into());
    }
    PROGRAMS
        .iter()
        .find(|(p, _)| find_program(p).is_none())
        .map(|(p, pkg)| format!("`{p}` not found: install {pkg}"))
}

#[test]
fn partition_between_hosts_heals_with_no_key_lost() {
    if let Some(why) = missing_privileges() {
        eprintln!("skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tn");
    let guard = DownGuard(dir.clone());
    let opts = UpOptions {
        nodes: NODES,
        dir: dir.clone(),
        transport: Transport::Quic,
        vnodes: 2,
        mode: Mode::Processes,
        base_port: None,
        program: Some(NodeProgram::test_harness("testnet_child").unwrap()),
        seed: 11,
        timings: Timings::default(),
        hosts: Some(HostsOptions {
            count: HOSTS,
            link: LinkFaults::default(),
        }),
    };
    let mut net = Testnet::start(opts, false).expect("testnet starts on emulated hosts");
    let hosts = net.hosts().cloned().expect("the testnet records its hosts");
    assert_eq!(hosts.count, HOSTS);

    // Every node listens on its own host's address, not on 127.0.0.1.
    for i in 0..NODES {
        let rec = net.node(i);
        let want = format!("/ip4/{}/", hosts.addr(hosts.host_of(i)));
        assert_eq!(rec.host, Some(hosts.host_of(i)));
        assert!(
            rec.listen_addrs.iter().all(|a| a.starts_with(&want)),
            "node {i} listens on {:?}, not on {want}",
            rec.listen_addrs
        );
        assert!(
            rec.api
                .starts_with(&hosts.addr(hosts.host_of(i)).to_string())
        );
    }
    // 12 nodes at the LAN profile's 1 s maintenance converge in well under a minute.
    net.wait_converged(Duration::from_secs(90), false)
        .expect("converges across hosts");

    // Host 1 against hosts 2–3 for 30 s: SWIM declares the other side dead within ~8
    // probe periods of 1 s, so the sides must have split within the first half.
    let p = split::Params {
        dir: DirArg { dir: dir.clone() },
        groups: "1/2-3".into(),
        seconds: 30,
        keys: 20,
        conflicts: 5,
        heal_timeout: 120,
        seed: 3,
    };
    let r = split::run(&mut net, &p, false).expect("split runs");
    eprintln!("{}", r.render_table());
    assert_eq!(r.side_nodes, vec![4, 8]);
    assert!(
        r.sides_split_seconds.is_some(),
        "the partition cut the sides' membership apart: {r:?}"
    );
    assert!(
        r.before.acked == r.before.written && r.during.iter().all(|k| k.acked > 0),
        "writes succeed on both sides of the partition: {r:?}"
    );
    assert!(
        r.whole_seconds.is_some(),
        "whole again after the heal: {r:?}"
    );
    assert_eq!(r.lost(), 0, "no acknowledged key lost: {r:?}");
    assert_eq!(
        r.conflicts_reconciled, r.conflicts.acked,
        "every key written on both sides reads the same everywhere: {r:?}"
    );

    // Down removes every node, namespace, link and table.
    net.down();
    assert!(net.leftover_pids().is_empty());
    assert_eq!(net.leftover_hosts(), &[] as &[String]);
    assert!(hosts.leftovers().is_empty(), "{:?}", hosts.leftovers());
    assert!(!dir.join(peerlab_testnet::process::HOSTS_FILE).exists());
    drop(guard);
}
