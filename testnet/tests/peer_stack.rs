//! The full stack (`node::Peer`: gossip membership + Chord + storage) under churn in the
//! simulator: nothing stored is lost, lookups answer, membership converges, and a seed
//! replays the run exactly.

use peerlab_testnet::experiments::peer::{Params, Report, run};

fn params(seed: u64) -> Params {
    Params {
        nodes: 24,
        vnodes: 4,
        replicas: 3,
        keys: 60,
        ops_per_sec: 2.0,
        churn_rate: 0.05,
        crash_fraction: 0.5,
        duration_secs: 120,
        latency_ms: 20,
        loss: 0.0,
        seed,
    }
}

fn without_wall_time(r: &Report) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap();
    v.as_object_mut().unwrap().remove("wall_seconds");
    v
}

#[test]
fn churn_loses_no_key_and_membership_converges() {
    for seed in [1, 2] {
        let r = run(&params(seed)).unwrap();
        assert!(
            r.bootstrap_secs.is_some(),
            "seed {seed}: every bootstrap peer joined: {r:?}"
        );
        assert_eq!(r.keys, 60, "seed {seed}: every put acknowledged: {r:?}");
        assert!(
            r.churn_crashes + r.churn_leaves > 0,
            "seed {seed}: churn happened: {r:?}"
        );
        assert_eq!(r.keys_lost, 0, "seed {seed}: {r:?}");
        assert!(
            r.lookups > 100 && r.gets > 100,
            "seed {seed}: workload ran: {r:?}"
        );
        assert!(
            r.failed_lookups * 100 <= r.lookups,
            "seed {seed}: ≤ 1 % failed lookups: {r:?}"
        );
        assert!(
            r.failed_gets * 100 <= r.gets,
            "seed {seed}: ≤ 1 % failed gets: {r:?}"
        );
        assert!(r.membership_completeness > 0.99, "seed {seed}: {r:?}");
        assert_eq!(
            r.stale_members, 0,
            "seed {seed}: dead peers forgotten: {r:?}"
        );
        if r.churn_crashes > 0 {
            assert!(
                r.detection_secs_max.is_some(),
                "seed {seed}: crashes detected: {r:?}"
            );
        }
    }
}

#[test]
fn same_seed_same_report() {
    let a = run(&params(3)).unwrap();
    let b = run(&params(3)).unwrap();
    assert_eq!(without_wall_time(&a), without_wall_time(&b));
    let c = run(&params(4)).unwrap();
    assert_ne!(without_wall_time(&a), without_wall_time(&c));
}

#[test]
fn bad_arguments_are_refused() {
    let mut p = params(1);
    p.nodes = 1;
    assert!(run(&p).is_err());
    let mut p = params(1);
    p.replicas = 0;
    assert!(run(&p).is_err());
    let mut p = params(1);
    p.crash_fraction = 1.5;
    assert!(run(&p).is_err());
}
