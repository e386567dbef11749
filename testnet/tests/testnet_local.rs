//! A local testnet of real node processes, end to end: up → lookups → converge → churn →
//! down, and `down` from a second controller after the first one let go of its children.
//!
//! Node processes are this test binary re-run with only [`testnet_child`] selected (see
//! `NodeProgram::test_harness`): it runs a real node from the data dir the testnet gives it,
//! exactly as `peerlab node --data-dir D` does, and exits when its parent goes away, so even
//! a killed test run leaves no node behind. Every wait has a deadline.

#![allow(clippy::disallowed_methods)] // deadlines are wall-clock time

use std::time::Duration;

use peerlab_node::config::Transport;
use peerlab_testnet::process::{
    MANIFEST, Manifest, Mode, NodeProgram, Testnet, Timings, UpOptions, pid_alive,
    run_child_from_env,
};
use peerlab_testnet::{converge, measure, process_churn};

const NODES: usize = 6;

/// The node process entry point (a no-op in a normal test run).
#[test]
fn testnet_child() {
    run_child_from_env();
}

#[test]
fn up_lookups_converge_churn_down() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tn");
    let opts = UpOptions {
        nodes: NODES,
        dir: dir.clone(),
        transport: Transport::Quic,
        vnodes: 2,
        mode: Mode::Processes,
        base_port: None,
        program: Some(NodeProgram::test_harness("testnet_child").unwrap()),
        seed: 7,
        // A non-default gossip period: the nodes must run it and converge must follow it.
        timings: Timings {
            gossip_interval_ms: 150,
            ..Timings::default()
        },
        hosts: None,
    };
    let mut net = Testnet::start(opts, false).expect("testnet starts");

    // testnet.json names every node with a live pid.
    let m = Manifest::load(&dir).unwrap();
    assert_eq!(m.nodes.len(), NODES);
    assert!(
        m.nodes
            .iter()
            .all(|n| n.alive && n.pid.is_some_and(pid_alive) && !n.peer_id.is_empty())
    );

    // Up: ring = ideal ring, membership complete.
    let h = net
        .wait_converged(Duration::from_secs(120), false)
        .expect("converges");
    assert!(h.converged());
    assert!(h.rss_kib > 0, "resident memory is reported");

    // Lookups agree with the ideal ring.
    let l = measure::lookups(&net, 60, 3).unwrap();
    assert_eq!((l.failed, l.wrong_owner), (0, 0), "{l:?}");
    assert!(l.hops.max <= 6.0, "{l:?}");

    // Gossip reaches every node; the simulator runs beside it.
    let out = tmp.path().join("results");
    let c = converge::run(&net, 1, None, None, 1, &out).unwrap();
    assert_eq!(c.complete, 1, "{c:?}");
    assert_eq!(
        (c.interval_ms, c.fanout),
        (150, 3),
        "the testnet's own timings"
    );
    assert!(
        c.sim_seconds_to_100.is_some() && c.ratio_100.is_some(),
        "{c:?}"
    );
    assert!(out.join("converge.csv").exists());
    // Bad parameters are refused, not ignored.
    assert!(converge::run(&net, 1, Some(500), None, 1, &out).is_err());

    // Churn: crashes and restarts under load; nothing acknowledged is lost.
    let params = process_churn::Params {
        rate: 0.25,
        duration: 30,
        min_downtime: 12,
        crash_fraction: 1.0,
        ops_rate: 10.0,
        keys: 20,
        settle: 60,
        seed: 5,
    };
    let r = process_churn::run(&mut net, &params, &out, false).unwrap();
    assert!(r.lookups > 0 && r.gets > 0 && r.updates > 0, "{r:?}");
    assert_eq!(
        r.reads_right + r.reads_stale + r.reads_missing + r.reads_failed,
        r.gets,
        "every get is classified once: {r:?}"
    );
    assert!(r.crashes > 0 && r.restarts > 0, "churn happened: {r:?}");
    assert_eq!(r.keys, 20);
    assert_eq!(r.lost_keys, 0, "{r:?}");
    assert!(r.settled, "ring re-converged after churn: {r:?}");
    assert!(out.join("churn.csv").exists());

    // A second controller (as after the first one died) stops everything.
    let pids: Vec<u32> = net
        .manifest()
        .nodes
        .iter()
        .filter(|n| n.alive)
        .filter_map(|n| n.pid)
        .collect();
    assert!(!pids.is_empty());
    net.detach();
    assert!(
        pids.iter().all(|&p| pid_alive(p)),
        "detach leaves the nodes running"
    );
    let mut other = Testnet::attach(&dir, None).unwrap();
    assert!(other.health().reachable > 0);
    other.down();
    assert!(other.leftover_pids().is_empty());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pids.iter().any(|&p| pid_alive(p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "node processes left behind"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = Manifest::load(&dir).unwrap();
    assert!(m.nodes.iter().all(|n| !n.alive));
    assert!(dir.join(MANIFEST).exists());
}

#[test]
fn preflight_refuses_what_the_machine_cannot_host() {
    let tmp = tempfile::tempdir().unwrap();
    let base = UpOptions {
        nodes: 0,
        dir: tmp.path().to_path_buf(),
        transport: Transport::Quic,
        vnodes: 4,
        mode: Mode::InProcess,
        base_port: None,
        program: None,
        seed: 1,
        timings: Timings::default(),
        hosts: None,
    };
    assert!(
        peerlab_testnet::process::preflight(&base).is_err(),
        "zero nodes"
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let opts = UpOptions {
        nodes: 1,
        base_port: Some(port),
        ..base.clone()
    };
    let e = peerlab_testnet::process::preflight(&opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("in use"), "{e}");
    let opts = UpOptions {
        nodes: 1,
        mode: Mode::Processes,
        ..base
    };
    assert!(
        peerlab_testnet::process::preflight(&opts).is_err(),
        "processes need a program"
    );
}
